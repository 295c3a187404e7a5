//! The payment-channel boundary: what the glue asks of a channel client ([`ChannelCommand`] /
//! [`ChannelControl`]) and what the client reports back ([`ChannelEvent`]).
//!
//! The coordinator never talks to a channel implementation directly. An embedding (for example
//! the reference adapter over `payment_channel::Client`) drains
//! [`Coordinator::poll_channel_command`](crate::Coordinator::poll_channel_command), performs
//! each command asynchronously, and feeds what happens back through
//! [`Coordinator::handle_channel_event`](crate::Coordinator::handle_channel_event). This keeps
//! the coordinator synchronous and testable with scripted events.
//!
//! # Roles
//! Channels are two-party and unidirectional: the **payee** (uploader) proposes, the **payer**
//! (downloader) joins and deposits, and pays with cumulative vouchers. Between two parties there
//! is at most one open channel per direction, keyed by the counterparty's payment account.
//!
//! # Channel messages
//! Channel messages are opaque JSON envelopes `{recipient, sender, data}` carried inside the
//! paid-streaming `message` command. [`ChannelEvent::Outbound`] asks the glue to deliver one,
//! [`ChannelCommand::PushMessage`] hands a received one (addressed to us) to the client.

use paid_wire::choke::ChannelId;
use payment_channel::Address;

use crate::engine::HubInfo;

/// Our side of a channel: [`Role::Payee`] when we upload (and are paid), [`Role::Payer`] when we
/// download. The payment-channel crate's own type, so no conversion at the boundary.
pub use payment_channel::role::Role;

/// One thing the channel client must do, drained with
/// [`Coordinator::poll_channel_command`](crate::Coordinator::poll_channel_command).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChannelCommand {
    /// Propose a channel in which `peer` pays us (we are the payee), with `deposit` wei from the
    /// payer. Report [`ChannelEvent::Created`] with the id, then [`ChannelEvent::Ready`] once it
    /// is funded, or [`ChannelEvent::CommandFailed`].
    Create {
        /// The payer's signing address (its `pseAccount`).
        peer: Address,
        /// The payer's `outcomeAddress`, if it advertised one.
        peer_destination: Option<Address>,
        /// Wei the payer is asked to deposit.
        deposit: u128,
        /// Our price in wei per byte, advertised in the proposal.
        price: Option<u128>,
        /// The channel nonce to propose with: derived from both sides' identity challenges of
        /// the connection, so the payer can check it helped create it
        /// ([`crate::identity::channel_nonce`]); `None` (a peer without proofs): random.
        nonce: Option<u64>,
        /// The hub the payer advertised ([`crate::engine::HUB_KEY`]), unproven. A client that
        /// uses the same hub (and has an open ledger with it) may fund the channel through it;
        /// otherwise the channel is direct.
        peer_hub: Option<HubInfo>,
    },
    /// Join (countersign and fund) a channel that `peer` proposed, depositing `deposit` wei.
    Join {
        /// The proposed channel.
        channel_id: ChannelId,
        /// The payee's signing address.
        peer: Address,
        /// The deposit the proposal asks for.
        deposit: u128,
    },
    /// Send a payment of `amount` wei (the increase of the cumulative voucher).
    Pay {
        /// The channel to pay on (we are the payer).
        channel_id: ChannelId,
        /// Wei to add.
        amount: u128,
    },
    /// Close the channel cooperatively (final state signed by both, then conclude).
    Close {
        /// The channel.
        channel_id: ChannelId,
    },
    /// The counterparty stopped answering: close through the adjudicator with our best
    /// supported state (the payee's largest voucher / the payer's latest state).
    Challenge {
        /// The channel.
        channel_id: ChannelId,
    },
    /// Hand a received channel message (addressed to us, sent by `from`) to the client.
    PushMessage {
        /// The peer's payment account it arrived from.
        from: Address,
        /// The JSON envelope as received.
        json: String,
    },
    /// Forget a channel that will never be used: a proposal we made that was not funded in
    /// time (or whose creation raced another), or a proposal we declined or that expired.
    /// Nothing of ours is at stake in it; without this a peer that opens channels and vanishes
    /// would grow the client's state (and its chain watching) without bound.
    Abandon {
        /// The channel.
        channel_id: ChannelId,
    },
    /// Send again the last message of this channel (proposal, join, latest voucher, close
    /// signature): the counterparty came back after an absence (a crash, a dropped connection)
    /// and may have missed it. Duplicates are harmless to the receiver.
    Resend {
        /// The channel.
        channel_id: ChannelId,
    },
}

impl ChannelCommand {
    /// Performs the command on `client`.
    pub fn apply<C: ChannelControl + ?Sized>(self, client: &mut C) {
        match self {
            Self::Create {
                peer,
                peer_destination,
                deposit,
                price,
                nonce,
                peer_hub,
            } => client.create(CreateRequest {
                peer,
                peer_destination,
                deposit,
                price,
                nonce,
                peer_hub,
            }),
            Self::Join {
                channel_id,
                peer,
                deposit,
            } => client.join(channel_id, peer, deposit),
            Self::Pay { channel_id, amount } => client.pay(channel_id, amount),
            Self::Close { channel_id } => client.close(channel_id),
            Self::Challenge { channel_id } => client.challenge(channel_id),
            Self::PushMessage { from, json } => client.push_message(from, json),
            Self::Abandon { channel_id } => client.abandon(channel_id),
            Self::Resend { channel_id } => client.resend(channel_id),
        }
    }
}

/// The fields of [`ChannelCommand::Create`], for [`ChannelControl::create`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CreateRequest {
    /// The payer's signing address.
    pub peer: Address,
    /// The payer's `outcomeAddress`, if it advertised one.
    pub peer_destination: Option<Address>,
    /// Wei the payer is asked to deposit.
    pub deposit: u128,
    /// Our price in wei per byte.
    pub price: Option<u128>,
    /// The channel nonce to propose with (see [`ChannelCommand::Create`]).
    pub nonce: Option<u64>,
    /// The hub the payer advertised, unproven.
    pub peer_hub: Option<HubInfo>,
}

/// The client's side of [`ChannelCommand`]: one method per command. Implementations start the
/// work and return at once (spawn, or queue for an async driver).
pub trait ChannelControl {
    /// See [`ChannelCommand::Create`].
    fn create(&mut self, request: CreateRequest);
    /// See [`ChannelCommand::Join`].
    fn join(&mut self, channel_id: ChannelId, peer: Address, deposit: u128);
    /// See [`ChannelCommand::Pay`].
    fn pay(&mut self, channel_id: ChannelId, amount: u128);
    /// See [`ChannelCommand::Close`].
    fn close(&mut self, channel_id: ChannelId);
    /// See [`ChannelCommand::Challenge`].
    fn challenge(&mut self, channel_id: ChannelId);
    /// See [`ChannelCommand::PushMessage`].
    fn push_message(&mut self, from: Address, json: String);
    /// [`ChannelCommand::Abandon`]. The default does nothing (the channel is merely kept).
    fn abandon(&mut self, channel_id: ChannelId) {
        let _ = channel_id;
    }
    /// [`ChannelCommand::Resend`]. The default does nothing (the counterparty then waits for
    /// the response timeout).
    fn resend(&mut self, channel_id: ChannelId) {
        let _ = channel_id;
    }
}

/// Which command failed, for [`ChannelEvent::CommandFailed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FailedCommand {
    /// [`ChannelCommand::Create`] for this payer.
    Create {
        /// The payer.
        peer: Address,
    },
    /// [`ChannelCommand::Join`].
    Join {
        /// The channel.
        channel_id: ChannelId,
    },
    /// [`ChannelCommand::Pay`].
    Pay {
        /// The channel.
        channel_id: ChannelId,
        /// The amount that was not paid.
        amount: u128,
    },
    /// [`ChannelCommand::Close`].
    Close {
        /// The channel.
        channel_id: ChannelId,
    },
    /// [`ChannelCommand::Challenge`].
    Challenge {
        /// The channel.
        channel_id: ChannelId,
    },
    /// [`ChannelCommand::PushMessage`]: the client refused the peer's message. Report at least
    /// those with a bad signature: each is a strike against the sender's connections.
    PushMessage {
        /// The sender (an authenticated identity).
        from: Address,
        /// The refusal was for a bad signature.
        bad_signature: bool,
    },
}

/// Something the channel client reports, fed to
/// [`Coordinator::handle_channel_event`](crate::Coordinator::handle_channel_event).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChannelEvent {
    /// A [`ChannelCommand::Create`] for `peer` produced a proposal with this id (not yet funded).
    Created {
        /// The payer.
        peer: Address,
        /// The new channel.
        channel_id: ChannelId,
    },
    /// `payee` proposed a channel in which we pay, asking for `deposit` wei.
    Proposed {
        /// The proposed channel.
        channel_id: ChannelId,
        /// The proposer (payee).
        payee: Address,
        /// The deposit asked of us.
        deposit: u128,
        /// The price in wei per byte the proposal advertises, if any. It must match the terms
        /// the payee advertised in its handshake.
        price: Option<u128>,
        /// The proposal's channel nonce (`None` if the client cannot tell). A payee that proved
        /// its identity must use one derived from our connection with it
        /// ([`crate::identity::channel_nonce`]); other nonces are declined
        /// ([`DeclineReason::NotFresh`](crate::coordinator::DeclineReason::NotFresh)).
        nonce: Option<u64>,
    },
    /// The channel is funded and running (also usable to restore a channel after a restart).
    Ready {
        /// The channel.
        channel_id: ChannelId,
        /// The other party.
        counterparty: Address,
        /// Our role in it.
        role: Role,
        /// The payer's deposit.
        deposit: u128,
    },
    /// A payment was received and verified (we are the payee).
    PaymentReceived {
        /// The channel.
        channel_id: ChannelId,
        /// Increase over the previous best voucher, in wei.
        delta: u128,
        /// The new cumulative total, in wei.
        total: u128,
    },
    /// The client wants to send a channel message to `to`.
    Outbound {
        /// Recipient's payment account.
        to: Address,
        /// The JSON envelope.
        json: String,
    },
    /// The channel is finalized (cooperatively or after a challenge).
    Closed {
        /// The channel.
        channel_id: ChannelId,
        /// What the payee receives from it, in wei.
        payee_amount: u128,
    },
    /// A channel found in the durable store after a restart (report these before anything
    /// else; the adapter's `Node::restore` does).
    /// The coordinator adopts it instead of opening a second channel with the same peer:
    /// payments continue on it when the peer comes back, and it is closed (or challenged) by
    /// the usual liveness rules if the peer does not.
    Restored {
        /// The channel.
        channel_id: ChannelId,
        /// The other party.
        counterparty: Address,
        /// Our role in it.
        role: Role,
        /// The payer's deposit.
        deposit: u128,
        /// Cumulative wei paid so far (the largest voucher): a payee credits only payments
        /// above it, a payer only spends what is left of the deposit.
        paid: u128,
        /// Where the channel was when the process stopped.
        state: RestoredState,
    },
    /// A command failed.
    CommandFailed {
        /// Which.
        command: FailedCommand,
        /// Why (diagnostics).
        reason: String,
    },
}

/// Where a [`ChannelEvent::Restored`] channel was when the process stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RestoredState {
    /// Being set up (proposed, joined, funding): it must be funded within
    /// [`LivenessConfig::response_timeout`](crate::LivenessConfig::response_timeout), or it is
    /// abandoned (payee) or challenged to recover the deposit (payer).
    Funding,
    /// Funded and in use.
    Open,
    /// We asked for a cooperative close: it must be answered within the response timeout, or
    /// it is challenged.
    Closing,
}
