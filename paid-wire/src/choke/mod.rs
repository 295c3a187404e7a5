//! Sans-IO choke controller: serve a peer only what it has paid for (plus a tunable trust).
//!
//! This module performs no I/O, reads no clock and uses no randomness: time is passed in as
//! [`Instant`](std::time::Instant) and every decision is a deterministic function of the inputs.
//!
//! # Two sides
//! * [`ChokeController`] runs on the **payee** (uploader/seeder), one per peer connection. It
//!   gates the peer's block requests on credit, emits the paid-streaming `stop` / `start` /
//!   `permanent-stop` notices, and asks for a payment channel when the peer has none yet.
//! * [`PaymentPlanner`] runs on the **payer** (downloader/leecher), one per peer connection. It
//!   turns `stop` / `start` / prompt notices into payments, never paying twice for one STOP.
//!
//! One controller per peer (rather than one keyed map) because every engine already keeps
//! per-peer state, so the controller lives next to it with no hashing and no cross-peer
//! coupling; the channel is attached per peer, which makes "one channel per peer" (web3torrent
//! #2220) structural. A map keyed by the glue's own peer key is a one-liner on top.
//!
//! # Units
//! Credit is counted in **bytes**; amounts are `u128` in the smallest currency unit ("wei");
//! the price is an integer wei/byte kept in [`ChokeConfig::price_per_byte`]. A payment of
//! `amount` wei credits `floor(total_wei_received / price) − bytes_already_credited` bytes: the
//! remainder of a payment that is not a multiple of the price is carried to the next one, so no
//! wei is ever lost and rounding never favours the payer. (web3torrent compared a byte buffer with
//! a wei price, correct only at 1 wei/byte.)
//!
//! # Calling contract (payee)
//! 1. Create with [`ChokeController::new`]; call [`set_fast_negotiated`](ChokeController::set_fast_negotiated)
//!    once the BitTorrent handshake tells whether BEP 6 is on for this peer.
//! 2. Feed inputs as they happen, each with the current time:
//!    [`handle_request`](ChokeController::handle_request),
//!    [`handle_cancel`](ChokeController::handle_cancel),
//!    [`handle_channel_ready`](ChokeController::handle_channel_ready) (after [`GateAction::NeedChannel`]),
//!    [`handle_payment`](ChokeController::handle_payment) (a verified payment *delta*, in wei),
//!    [`handle_bytes_sent`](ChokeController::handle_bytes_sent) (exactly once per [`GateAction::Serve`]),
//!    [`handle_choke`](ChokeController::handle_choke) / [`handle_unchoke`](ChokeController::handle_unchoke)
//!    (the engine's BitTorrent choke, which is *not* the payment gate),
//!    [`handle_permanent_stop`](ChokeController::handle_permanent_stop), and
//!    [`handle_timeout`](ChokeController::handle_timeout) when [`next_deadline`](ChokeController::next_deadline) passes.
//! 3. After **every** input, drain [`poll_action`](ChokeController::poll_action) until `None` and
//!    perform the actions in order (order matters: a START precedes the pieces it unblocks).
//! 4. Re-arm the timer from [`next_deadline`](ChokeController::next_deadline).
//!
//! # Invariants (checked by property tests)
//! * bytes committed to the peer (served + being served) ≤ bytes paid + trust allowance, always;
//! * every request is answered at most once; with BEP 6 every request gets exactly one
//!   `Serve` or `Reject` once the queue is cleared (choke, cancel, permanent stop, overdue);
//! * `SendStop` and `SendStart` strictly alternate, starting with `SendStop`: one STOP per
//!   exhaustion, and every payment received while stopped is answered by a START *before* the
//!   queue is replayed (web3torrent #1876), followed by a new STOP if the replay exhausts the
//!   credit again;
//! * the queue never exceeds [`ChokeConfig::max_queue_len`];
//! * at most one [`GateAction::NeedChannel`] per controller (web3torrent #2220).
//!
//! Arithmetic on bytes and wei saturates (`saturating_*`), it never wraps or panics: byte counts
//! are `u64` (credit beyond `u64::MAX` bytes is clamped) and wei totals `u128`.
//!
//! # Example
//! ```
//! use std::time::Instant;
//! use paid_wire::choke::{GateAction, ChannelId, ChokeConfig, ChokeController};
//! use paid_wire::message::BlockRequest;
//!
//! let now = Instant::now();
//! // 2 wei per byte, no trust, pay-ahead prompt at 50 % of the last payment.
//! let mut seeder = ChokeController::new(ChokeConfig::with_price(2)).unwrap();
//! let req = BlockRequest { index: 0, begin: 0, length: 16384 };
//!
//! seeder.handle_request(now, req).unwrap();
//! assert_eq!(seeder.poll_action(), Some(GateAction::NeedChannel)); // glue creates the channel
//! assert_eq!(seeder.poll_action(), None); // request queued: no credit, no channel yet
//!
//! let channel_id = ChannelId([7; 32]);
//! seeder.handle_channel_ready(now, channel_id).unwrap();
//! assert_eq!(seeder.poll_action(), Some(GateAction::SendStop { channel_id }));
//!
//! seeder.handle_payment(now, channel_id, 2 * 16384).unwrap(); // 16 KiB worth of wei
//! assert_eq!(seeder.poll_action(), Some(GateAction::SendStart { channel_id }));
//! assert_eq!(seeder.poll_action(), Some(GateAction::Serve(req)));
//! seeder.handle_bytes_sent(now, req, 16384).unwrap();
//! assert_eq!(seeder.stats().bytes_sent, 16384);
//! ```

mod config;
mod controller;
mod error;
mod payer;

pub use crate::error::UsageError;
pub use config::{
    BlockedPolicy, ChokeConfig, DEFAULT_MAX_BLOCK_LEN, DEFAULT_MAX_QUEUE_LEN, PromptPolicy,
    TrustPolicy, Watermark,
};
pub use controller::{ChokeController, ChokeStats};
pub use error::{ConfigError, PeerMisbehaviour};
pub use payer::{PayReason, PayerAction, PayerConfig, PayerStats, PaymentPlanner, StopOutcome};

use crate::message::BlockRequest;

/// The payment channel id, the same type the paid-streaming `stop` notice carries.
pub use crate::pse::ChannelId;

/// What the engine/glue must do, drained from [`ChokeController::poll_action`] in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum GateAction {
    /// The peer has no payment channel: create one (payee proposes) and call
    /// [`ChokeController::handle_channel_ready`] when it is funded. Emitted at most once.
    NeedChannel,
    /// Send the block. The credit is already reserved; report the outcome with
    /// [`ChokeController::handle_bytes_sent`] (with 0 if the engine could not or chose not to send
    /// it, e.g. after a cancel — then the engine answers the peer itself, with a reject under BEP 6).
    Serve(BlockRequest),
    /// Send a BEP 6 `reject` for this request (only emitted when fast is negotiated).
    Reject(BlockRequest),
    /// Send the paid-streaming `stop` notice carrying `channel_id`: the peer is out of credit.
    SendStop {
        /// The channel the peer pays on.
        channel_id: ChannelId,
    },
    /// Send the paid-streaming `start` notice: the payment was received, the peer may request again.
    SendStart {
        /// The channel the peer pays on.
        channel_id: ChannelId,
    },
    /// Tell the payer its credit is running low so it can pay *before* it runs out (no stall per
    /// payment round trip). Emitted at most once per refill, never while a STOP is outstanding.
    ///
    /// Transport is the glue's choice: the suggested mapping is a paid-streaming notice with a
    /// command web3torrent does not know (e.g. `"prompt"`, data = the suggested amount) — a
    /// web3torrent peer acks and ignores it, so it is wire-safe; a glue that wants strict
    /// web3torrent traffic may drop it, and payments then fall back to STOP-driven.
    PromptPayment {
        /// The channel the peer pays on.
        channel_id: ChannelId,
        /// Suggested top-up in bytes.
        suggested_bytes: u64,
        /// The same in wei (`suggested_bytes × price`, saturating).
        suggested_amount: u128,
    },
    /// Send the paid-streaming `permanent-stop` notice (with the channel id if one is attached).
    SendPermanentStop {
        /// The attached channel, if any.
        channel_id: Option<ChannelId>,
    },
    /// A STOP stayed unpaid for [`ChokeConfig::payment_timeout`]; the queue has been cleared.
    /// The glue may disconnect, send a permanent stop, or keep waiting.
    PaymentOverdue {
        /// The channel the payment was expected on.
        channel_id: ChannelId,
    },
    /// The misbehaviour strike limit was reached: close the connection. Emitted once.
    Disconnect(DisconnectReason),
}

/// Why [`GateAction::Disconnect`] was emitted (the reason of the last strike).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DisconnectReason {
    /// Too many oversized or empty requests.
    InvalidRequests,
    /// Too many requests beyond the queue bound.
    QueueOverflow,
}

/// Why a request was refused (rejected under BEP 6, else dropped).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RefuseReason {
    /// Oversized or empty request (peer misbehaviour).
    Invalid,
    /// Not covered by credit under [`BlockedPolicy::RefuseImmediately`].
    Unpaid,
    /// The blocked-request queue is full.
    QueueFull,
    /// The engine chokes the peer (BitTorrent CHOKE).
    Choked,
    /// Serving was permanently stopped.
    PermanentlyStopped,
    /// Removed from the queue because the payment was overdue.
    PaymentOverdue,
    /// Cancelled by the peer while queued.
    Cancelled,
}

/// What [`ChokeController::handle_request`] did with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RequestOutcome {
    /// [`GateAction::Serve`] was queued.
    Served,
    /// Waiting in the blocked-request queue for a payment (or for the channel).
    Queued,
    /// [`GateAction::Reject`] was queued.
    Rejected(RefuseReason),
    /// Dropped silently (no BEP 6).
    Dropped(RefuseReason),
    /// Identical to a request already waiting in the queue; ignored (it will be answered once).
    Duplicate,
}

/// What [`ChokeController::handle_payment`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PaymentOutcome {
    /// Bytes credited by this payment (0 for a zero or sub-price payment; its wei are carried).
    pub credited_bytes: u64,
    /// Credit available after the payment and the replay of the queue.
    pub credit_after: u64,
}
