//! The sans-IO payment channel state machine.
//!
//! A [`Channel`] is one side (payer or payee) of one channel. It performs no I/O, reads no clock
//! and draws no randomness: time (`now`, unix seconds **of the chain**) is passed in, inputs come
//! through `handle_*`, commands are plain verbs, and everything the caller must do comes out of
//! `poll_*`. The async [`Client`](crate::client::Client) is one driver; tests drive it by hand.
//!
//! # Calling contract
//!
//! * **Inputs**: [`Channel::handle_message`] (a message from the counterparty),
//!   [`Channel::handle_chain_event`] (an adjudicator event about this channel, in chain order;
//!   replays are harmless), [`Channel::handle_timeout`] (chain time passed).
//! * **Commands**: [`Channel::join`], [`Channel::send_payment`], [`Channel::close`],
//!   [`Channel::challenge`], [`Channel::resend`].
//! * **Outputs**, after every input or command, in this order:
//!   1. [`Channel::poll_persist`] until `None`: store what it returns durably (the voucher with
//!      [`ChannelStore::put_voucher`](crate::store::ChannelStore::put_voucher), the snapshot with
//!      `put_channel`), then call [`Channel::handle_persisted`]. **No other output is released
//!      before the state that produced it is persisted**: a payer's voucher never leaves before it
//!      is stored, and a payee never sees `PaymentReceived` before the voucher is stored.
//!   2. [`Channel::poll_outbound`]: envelopes to send to the counterparty.
//!   3. [`Channel::poll_event`]: events for the application.
//!   4. [`Channel::poll_chain_action`]: transactions to send; afterwards feed the resulting chain
//!      events back with [`Channel::handle_chain_event`].
//!
//! A queued transaction is released once; if sending it fails, or the driver stops before it
//! is sent, [`Channel::chain_duty`] still names it: it derives what the channel owes the chain
//! from the persisted state alone, so a driver asks it after every watch and every restart
//! (and checks the chain before sending, since the transaction may have landed already).
//!   5. [`Channel::poll_timeout`]: when to call [`Channel::handle_timeout`] next.
//!
//! An input or command that returns `Err` leaves the channel unchanged and queues nothing
//! (only `handle_timeout` effects of the `now` passed in may have happened).
//!
//! # Protocol (Nitro v2, `PaymentApp`, participants `[payer, payee]`, one asset: native or ERC-20)
//!
//! | turn | state | outcome `{payer, payee}` | signed by |
//! |------|-------|--------------------------|-----------|
//! | 0 | prefund | `{D, 0}` | payee (in [`Propose`](crate::message::Propose)), then payer (in [`Join`](crate::message::Join)) |
//! | 1 | postfund | `{D, 0}` | payer (in [`Join`](crate::message::Join), after the deposit is on chain), then payee (in [`Postfund`](crate::message::Postfund), after it sees `holdings ≥ D`) |
//! | 2 | redemption | `{D − v, v}`, app data = voucher `v` | payee alone, only to challenge |
//! | 3 | final (`isFinal`) | `{D − a, a}` | both, in [`Close`] messages |
//!
//! The final state uses turn 3, above every state `PaymentApp` can support (0, 1, 2), so it
//! can never be confused with them; `conclude` does not consult the app, so any turn works.
//!
//! **Funding.** The payer deposits only once the prefund is signed by both (it can then always
//! recover its deposit with a prefund challenge). The payee counts the channel as running only
//! once the postfund is signed by both **and** it has seen `holdings ≥ D` on chain.
//!
//! **Payments** are cumulative vouchers. The payee keeps the largest; an equal voucher is a
//! harmless duplicate; a lower one is a replay and an error; one above the deposit is an error.
//!
//! **Close.** Either side signs the final state for the amount it knows (payer: total sent; payee:
//! total received) and sends [`Close`]. The payee countersigns any amount `≥` what it received,
//! the payer any amount `≤` what it sent. If both start a close at once with different amounts, the
//! payer's proposal wins (the payee countersigns it; the payer rejects the payee's). A payee credits
//! nothing above a final state it has signed. Whoever holds the final state signed by both asks
//! for `conclude` then `transferAllAssets(outcome, 0)` unless its share is zero (no gas for
//! nothing: the other side, which gets the money, pays for them); the
//! [`Client`](crate::client::Client) skips them when the chain shows they already happened.
//!
//! **Disputes.** [`Channel::challenge`] registers the best state we can support: the payee the
//! redemption state with its largest voucher (proof: the postfund signed by both), otherwise the
//! latest state signed by both (proof: none). It refuses when the challenge would claim nothing
//! for us (a payee without a voucher above zero, a payer that signed its whole deposit away). While a challenge is registered, payments stop.
//! When the payee sees a registered challenge whose candidate pays it less than its best voucher
//! and whose turn is below 2, it **counter-challenges** at turn 2 with that voucher (a challenge
//! in Challenge mode must raise the turn, and doing so both clears the stale challenge and puts
//! the better outcome on chain with a fresh timeout). A `checkpoint` would only clear the stale
//! challenge and leave the payee to challenge again; with a final state signed by both, either
//! side answers a challenge with `conclude` instead. After the timeout the channel is finalized
//! and either side asks for `transferAllAssets(candidate outcome, candidate state hash)`.

mod closing;
mod dispute;
mod onchain;
mod opening;
mod outputs;
mod payments;
mod snapshot;
mod states;

use std::fmt;
use std::sync::Arc;

use alloy_primitives::{Address, B256, U256};

use crate::chain::ChainEvent;
use crate::error::{Error, PeerMisbehaved, UsageError};
use crate::message::{Close, Envelope, Message, VoucherMessage};
use crate::sign::{PublicKey, Signer};
use crate::state::FixedPart;
use crate::voucher::Voucher;

pub(crate) use self::onchain::finalize_on_timeout;
pub use self::onchain::{Finalization, OnChain, RegisteredChallenge, share};
pub use self::opening::ChannelParams;
pub use self::outputs::{Event, Persist};
pub use self::payments::{MAX_PRESIGNED, PresignJob, Presigned, VerifiedVoucher};
pub use self::snapshot::ChannelSnapshot;
pub use crate::chain::ChainAction;
pub use crate::role::{PhaseKind, Role};

use self::outputs::Outbox;
use self::snapshot::{Phase, State};

/// Turn number of the prefund state.
pub const PREFUND_TURN: u64 = 0;
/// Turn number of the postfund state.
pub const POSTFUND_TURN: u64 = 1;
/// Turn number of the payee's redemption state (challenge only).
pub const REDEMPTION_TURN: u64 = 2;
/// Turn number of the final state of a cooperative close.
pub const FINAL_TURN: u64 = 3;

// This file holds the public surface; the methods of each concern live in the sibling files:
// opening and funding (`opening.rs`), payments (`payments.rs`), the cooperative close
// (`closing.rs`), challenges (`dispute.rs`), what the chain reports and what we owe it
// (`onchain.rs`), the signed states and signature checks (`states.rs`), the persisted state
// (`snapshot.rs`) and the output queues behind the persistence barrier (`outputs.rs`).

/// One side of one payment channel. See the [module docs](self) for the calling contract.
pub struct Channel {
    st: State,
    id: B256,
    me: Address,
    signer: Arc<dyn Signer>,
    /// Payee: the payer's key, recovered once from its prefund signature (fast voucher checks).
    payer_key: Option<PublicKey>,
    /// The outputs, held back until the state that produced them is persisted.
    out: Outbox,
    /// Payer: vouchers signed ahead of time for cumulative totals above `paid`, by amount. Never
    /// persisted, never sent, never counted as paid until [`Channel::send_payment`] reaches
    /// their total (see [`Channel::add_presigned`]).
    presigned: std::collections::BTreeMap<U256, Voucher>,
}

impl fmt::Debug for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Channel")
            .field("id", &self.id)
            .field("role", &self.st.head.role)
            .field("phase", &self.phase())
            .field("deposit", &self.st.deposit)
            .field("paid", &self.st.paid)
            .field("chain", &self.st.chain)
            .finish_non_exhaustive()
    }
}

impl Channel {
    fn new(signer: Arc<dyn Signer>, st: State) -> Self {
        Self {
            id: st.head.fixed.channel_id(),
            me: signer.address(),
            signer,
            st,
            payer_key: None,
            out: Outbox::default(),
            presigned: std::collections::BTreeMap::new(),
        }
    }

    // ----- accessors ----------------------------------------------------------------------

    /// The channel id.
    pub fn id(&self) -> B256 {
        self.id
    }
    /// Our role.
    pub fn role(&self) -> Role {
        self.st.head.role
    }
    /// Our address.
    pub fn me(&self) -> Address {
        self.me
    }
    /// The payer's address.
    pub fn payer(&self) -> Address {
        self.st.head.fixed.participants[0]
    }
    /// The payee's address.
    pub fn payee(&self) -> Address {
        self.st.head.fixed.participants[1]
    }
    /// The counterparty's address.
    pub fn counterparty(&self) -> Address {
        self.st.head.fixed.participants[self.st.head.role.other().index()]
    }
    /// The fixed part.
    pub fn fixed_part(&self) -> &FixedPart {
        &self.st.head.fixed
    }
    /// The deposit.
    pub fn deposit(&self) -> U256 {
        self.st.deposit
    }
    /// The asset of the deposit and the payments (`Address::ZERO`: the native coin).
    pub fn asset(&self) -> Address {
        self.st.head.asset
    }
    /// The advertised price.
    pub fn price(&self) -> Option<U256> {
        self.st.price
    }
    /// Payer: total signed away. Payee: total credited.
    pub fn paid(&self) -> U256 {
        self.st.paid
    }
    /// What the payer can still pay.
    pub fn remaining(&self) -> U256 {
        self.st.deposit.saturating_sub(self.st.paid)
    }
    /// The best voucher (payer: latest signed; payee: largest received).
    pub fn best_voucher(&self) -> Option<&Voucher> {
        self.st.best.as_ref()
    }
    /// The phase (`Finalized` once the chain says so).
    pub fn phase(&self) -> PhaseKind {
        if self.st.chain.finalized.is_some() {
            return PhaseKind::Finalized;
        }
        match self.st.phase {
            Phase::Proposed => PhaseKind::Proposed,
            Phase::Funding => PhaseKind::Funding,
            Phase::AwaitingPostfund => PhaseKind::AwaitingPostfund,
            Phase::Running => PhaseKind::Running,
            Phase::Closing { .. } => PhaseKind::Closing,
            Phase::Closed { .. } => PhaseKind::Closed,
        }
    }
    /// Whether payments can flow: running, no challenge registered, not finalized.
    pub fn is_running(&self) -> bool {
        matches!(self.st.phase, Phase::Running) && !self.is_disputed()
    }
    /// Whether a challenge is registered or the channel finalized.
    pub fn is_disputed(&self) -> bool {
        self.st.chain.challenge.is_some() || self.st.chain.finalized.is_some()
    }
    /// What we know of the chain.
    pub fn on_chain(&self) -> &OnChain {
        &self.st.chain
    }
    /// The amount of the final state we signed, if any.
    pub fn final_amount(&self) -> Option<U256> {
        match &self.st.phase {
            Phase::Closing { amount, .. } | Phase::Closed { amount, .. } => Some(*amount),
            _ => None,
        }
    }
    /// Whether the channel is settled (paid out) and can be forgotten.
    pub fn is_settled(&self) -> bool {
        self.st.chain.paid_out
    }
    /// A snapshot of the durable state.
    pub fn snapshot(&self) -> ChannelSnapshot {
        ChannelSnapshot(self.st.clone())
    }

    // ----- outputs ------------------------------------------------------------------------

    /// What must be stored before further outputs are released (see the calling contract).
    pub fn poll_persist(&self) -> Option<Persist> {
        let due = self.out.due()?;
        Some(Persist {
            generation: due.generation,
            channel_id: self.id,
            snapshot: due.snapshot.then(|| self.snapshot()),
            voucher: if due.voucher { self.st.best } else { None },
        })
    }

    /// Reports that the [`Persist`] of `generation` is durable. An older generation is ignored.
    pub fn handle_persisted(&mut self, generation: u64) {
        self.out.persisted(generation);
    }

    /// The next envelope for the counterparty.
    pub fn poll_outbound(&mut self) -> Option<Envelope> {
        self.out.pop_outbound()
    }

    /// The next application event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.out.pop_event()
    }

    /// The next transaction to send.
    pub fn poll_chain_action(&mut self) -> Option<ChainAction> {
        self.out.pop_action()
    }

    /// When [`Channel::handle_timeout`] must next be called (a registered challenge's
    /// finalization time), in chain seconds.
    pub fn poll_timeout(&self) -> Option<u64> {
        if self.st.chain.finalized.is_some() {
            return None;
        }
        self.st.chain.challenge.as_ref().map(|c| c.finalizes_at)
    }

    // ----- commands (the others are with their concern: join, send_payment, close, challenge) --

    /// Re-queues the message the counterparty needs for our phase (after a loss or a restart).
    /// Receivers treat duplicates as no-ops, so calling it too often is harmless.
    pub fn resend(&mut self) {
        let msg = match (&self.st.phase, self.st.head.role) {
            (Phase::Proposed, Role::Payee) => Some(Message::Propose(self.propose_message())),
            (Phase::AwaitingPostfund, Role::Payer) => self.join_message().map(Message::Join),
            (Phase::Running, Role::Payer) => self
                .st
                .best
                .map(|v| Message::Voucher(VoucherMessage::from_voucher(&v))),
            (Phase::Running, Role::Payee) => self.postfund_message().map(Message::Postfund),
            // Closed, whoever initiated: when both proposed the same amount at once, each takes
            // itself for the initiator, and a lost proposal leaves the other side Closing. The
            // side with nothing to claim no longer concludes for it (no gas for nothing), so the
            // signature has to travel. (Only a non-initiator answers a duplicate close, so
            // resending cannot start a ping-pong.)
            (Phase::Closing { amount, sigs }, role)
            | (Phase::Closed { amount, sigs, .. }, role) => sigs.get(role).map(|s| {
                Message::Close(Close {
                    channel_id: self.id,
                    amount: *amount,
                    signature: s,
                })
            }),
            _ => None,
        };
        if let Some(m) = msg {
            self.send(m);
        }
    }

    // ----- inputs -------------------------------------------------------------------------

    /// Handles a message from the counterparty. Duplicates are no-ops; a message that is invalid
    /// or arrives in the wrong phase returns a typed error and changes nothing.
    pub fn handle_message(&mut self, msg: &Message) -> Result<(), Error> {
        self.check_message_channel(msg)?;
        if let Some(r) = self.after_finalization(msg) {
            return r;
        }
        match msg {
            Message::Propose(p) => self.on_propose(p),
            Message::Join(j) => self.on_join(j),
            Message::Postfund(f) => self.on_postfund(f),
            Message::Voucher(v) => self.on_voucher(v),
            Message::Close(c) => self.on_close(c),
        }
    }

    /// [`Channel::handle_message`] of a voucher, its signature already checked (or not).
    fn handle_voucher_message(
        &mut self,
        v: &VoucherMessage,
        signature_verified: bool,
    ) -> Result<(), Error> {
        let msg = Message::Voucher(*v);
        self.check_message_channel(&msg)?;
        if let Some(r) = self.after_finalization(&msg) {
            return r;
        }
        self.on_voucher_checked(v, signature_verified)
    }

    fn check_message_channel(&self, msg: &Message) -> Result<(), Error> {
        if !msg.channel().matches(&self.id) {
            let got = match msg.channel() {
                crate::message::ChannelKey::Id(id) => id,
                crate::message::ChannelKey::Ref(r) => r.padded(),
            };
            return Err(PeerMisbehaved::WrongChannel {
                expected: self.id,
                got,
            }
            .into());
        }
        Ok(())
    }

    /// After finalization only the close exchange can still complete (the other side may have
    /// concluded before our countersignature arrived), and late vouchers covered by the final
    /// state are harmless duplicates: `Some` is the decision for anything else.
    fn after_finalization(&self, msg: &Message) -> Option<Result<(), Error>> {
        // Not finalized: no decision here.
        self.st.chain.finalized.as_ref()?;
        match msg {
            Message::Close(_) if self.final_amount().is_some() => None,
            Message::Voucher(v) if self.final_amount().is_some_and(|a| v.amount <= a) => {
                Some(Ok(()))
            }
            _ => Some(Err(self.unexpected(msg.kind()))),
        }
    }

    /// Handles an adjudicator event about this channel (in chain order; replays are no-ops).
    pub fn handle_chain_event(&mut self, now: u64, ev: &ChainEvent) -> Result<(), Error> {
        if ev.channel_id() != self.id {
            return Err(UsageError::WrongChannel {
                expected: self.id,
                got: ev.channel_id(),
            }
            .into());
        }
        // Events are applied in chain order before `now` is looked at: a challenge registered
        // (or cleared) before the current time must count when deciding what finalized.
        match ev {
            ChainEvent::Deposited {
                asset, holdings, ..
            } => self.on_deposited(*asset, *holdings)?,
            ChainEvent::ChallengeRegistered {
                finalizes_at,
                candidate,
                ..
            } => {
                let applied = self.on_challenge_registered(now, *finalizes_at, candidate)?;
                if !applied {
                    // A replay, or after finalization: nothing to catch up with.
                    return Ok(());
                }
            }
            ChainEvent::ChallengeCleared {
                new_turn_num_record,
                ..
            }
            | ChainEvent::Checkpointed {
                new_turn_num_record,
                ..
            } if *new_turn_num_record > self.st.chain.turn_num_record => {
                self.on_challenge_cleared(*new_turn_num_record);
            }
            ChainEvent::Concluded { finalizes_at, .. } => self.on_concluded(*finalizes_at),
            ChainEvent::AllocationUpdated {
                asset_index,
                final_holdings,
                ..
            } => self.on_allocation_updated(now, *asset_index, *final_holdings),
            // Future event kinds (the enum is non-exhaustive for other crates) carry nothing we track.
            #[allow(unreachable_patterns)]
            _ => {}
        }
        self.handle_timeout(now);
        Ok(())
    }

    /// Chain time passed: a registered challenge whose time is up finalizes the channel and asks
    /// for the payout.
    pub fn handle_timeout(&mut self, now: u64) {
        if self.st.chain.finalized.is_none()
            && let Some(fin) = self
                .st
                .chain
                .challenge
                .as_ref()
                .and_then(|c| c.finalization_by(now))
        {
            self.finalize(fin);
        }
    }

    // ----- errors -----------------------------------------------------------------------------

    fn require_role(&self, needed: Role, operation: &'static str) -> Result<(), Error> {
        if self.st.head.role == needed {
            Ok(())
        } else {
            Err(UsageError::WrongRole { operation, needed }.into())
        }
    }

    fn require_peer_role(&self, needed: Role, message: &'static str) -> Result<(), Error> {
        if self.st.head.role == needed {
            Ok(())
        } else {
            Err(PeerMisbehaved::WrongRole {
                role: self.st.head.role,
                message,
            }
            .into())
        }
    }

    fn wrong_phase(&self, operation: &'static str) -> Error {
        UsageError::WrongPhase {
            operation,
            phase: self.phase(),
        }
        .into()
    }

    fn unexpected(&self, message: &'static str) -> Error {
        PeerMisbehaved::UnexpectedInPhase {
            phase: self.phase(),
            message,
        }
        .into()
    }
}
