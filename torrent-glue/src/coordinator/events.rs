//! Application-level notifications and read-only views of the coordinator's state.

use paid_wire::choke::{ChannelId, PayReason};
use payment_channel::Address;

use crate::channel::Role;
use crate::engine::{PeerKey, TorrentKey};
use crate::error::PeerError;

/// Why a peer is served under the [`NonPayingPolicy`](crate::NonPayingPolicy).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum NonPayingReason {
    /// No BEP 10 bit in its BitTorrent handshake.
    NoExtensionProtocol,
    /// Its extended handshake does not advertise `paidStreamingExtension`.
    NotAdvertised,
    /// It advertises the extension but no valid `pseAccount`.
    NoAccount,
    /// No extended handshake within the handshake timeout.
    HandshakeTimeout,
    /// It presented our own account.
    SelfConnection,
    /// It claims a `pseAccount` but announces no identity proof (`pseAuth`): the original
    /// web3torrent, under [`LegacyPolicy::NonPaying`](crate::LegacyPolicy::NonPaying).
    Unauthenticated,
    /// Its identity proof did not verify (or never came before the handshake timeout while
    /// it announced `pseAuth`).
    AuthenticationFailed,
}

/// How a peer was classified once its extended handshake (or its absence) was known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PeerClass {
    /// Speaks the paid-streaming extension with this payment identity.
    Paying {
        /// Its `pseAccount`.
        account: Address,
    },
    /// Does not; served under the non-paying policy.
    NonPaying(NonPayingReason),
}

/// Why a channel proposal was not joined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DeclineReason {
    /// We do not buy ([`CoordinatorConfig::download`](crate::CoordinatorConfig::download) is `None`).
    NotBuying,
    /// The proposer never connected with the paid-streaming extension (or not in time).
    UnknownPeer,
    /// We already have a channel paying this peer.
    AlreadyHaveChannel,
    /// Its advertised price is above our maximum.
    PriceTooHigh,
    /// The proposal's price differs from the terms in its handshake.
    PriceMismatch,
    /// The deposit is above our per-channel maximum.
    DepositTooLarge,
    /// The deposit does not fit in what is left of the budget.
    OverBudget,
    /// We closed a channel on this uploader for asking to be paid beyond our window
    /// ([`PeerError::AskedBeyondWindow`]): it gets no new deposit.
    Misbehaved,
    /// The payee proved its identity but the proposal's nonce is not one derived from our
    /// connection with it ([`crate::identity::channel_nonce`]): an id we did not help create
    /// (a replayed proposal, say) is never funded.
    NotFresh,
}

/// Why a channel message was not delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MessageDropReason {
    /// Inbound: its recipient is not our account (web3torrent drops these silently, no ack).
    NotForUs,
    /// Inbound: its sender is not the peer's account.
    SenderMismatch,
    /// Inbound: from a peer without a payment identity.
    NoIdentity,
    /// Outbound: the recipient never connected with the extension.
    UnknownRecipient,
    /// Outbound: too large for one paid-streaming message.
    TooLarge,
    /// Outbound: the recipient had no connection and its outbox was full (oldest dropped).
    OutboxFull,
    /// Inbound: the channel work queue is full
    /// ([`IdentityConfig::max_channel_commands`](crate::IdentityConfig::max_channel_commands)).
    QueueFull,
}

/// Something the application may want to know (UI, logs, metrics), drained with
/// [`Coordinator::poll_event`](crate::Coordinator::poll_event). Purely informational: the
/// coordinator has already acted on it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CoordinatorEvent {
    /// A peer was classified.
    PeerClassified {
        /// The connection.
        peer: PeerKey,
        /// The class.
        class: PeerClass,
    },
    /// We asked the channel client to propose a channel to a paying peer.
    ChannelRequested {
        /// The payer.
        account: Address,
    },
    /// A paying peer needed a channel but the creation limits
    /// ([`IdentityConfig`](crate::IdentityConfig): per connection, overall per window, or the
    /// channel work queue) refused it: the connection waiting for it got `permanent-stop`.
    ChannelRateLimited {
        /// The payer.
        account: Address,
    },
    /// We asked the channel client to join a proposal.
    Joining {
        /// The channel.
        channel_id: ChannelId,
        /// The payee.
        account: Address,
        /// The deposit.
        deposit: u128,
    },
    /// A proposal was not joined.
    ProposalDeclined {
        /// The channel.
        channel_id: ChannelId,
        /// The proposer.
        payee: Address,
        /// Why.
        reason: DeclineReason,
    },
    /// A channel is funded and in use.
    ChannelOpened {
        /// The counterparty.
        account: Address,
        /// The channel.
        channel_id: ChannelId,
        /// Our role.
        role: Role,
    },
    /// A channel from the durable store was adopted after a restart
    /// ([`ChannelEvent::Restored`](crate::ChannelEvent::Restored)).
    ChannelRestored {
        /// The counterparty.
        account: Address,
        /// The channel.
        channel_id: ChannelId,
        /// Our role.
        role: Role,
        /// Cumulative wei paid on it so far.
        paid: u128,
        /// Where it was.
        state: crate::RestoredState,
    },
    /// A proposal was not funded in time, or its creation failed; the peer's connections were
    /// permanently stopped.
    ChannelSetupFailed {
        /// The payer.
        account: Address,
    },
    /// We asked for a cooperative close.
    Closing {
        /// The counterparty.
        account: Address,
        /// The channel.
        channel_id: ChannelId,
        /// Our role.
        role: Role,
    },
    /// The counterparty stopped answering; we challenged.
    Challenging {
        /// The counterparty.
        account: Address,
        /// The channel.
        channel_id: ChannelId,
        /// Our role.
        role: Role,
    },
    /// The channel is finalized.
    ChannelClosed {
        /// The counterparty.
        account: Address,
        /// The channel.
        channel_id: ChannelId,
        /// Our role.
        role: Role,
        /// What the payee receives, in wei.
        payee_amount: u128,
    },
    /// A payment arrived.
    PaymentReceived {
        /// The payer.
        account: Address,
        /// The channel.
        channel_id: ChannelId,
        /// Increase, in wei.
        delta: u128,
        /// Cumulative total, in wei.
        total: u128,
    },
    /// We paid.
    PaymentSent {
        /// The connection whose notice caused it.
        peer: PeerKey,
        /// The channel.
        channel_id: ChannelId,
        /// Wei.
        amount: u128,
        /// Bytes it buys.
        bytes: u64,
        /// STOP or pay-ahead prompt.
        reason: PayReason,
    },
    /// The uploader blocked us (STOP) on this connection.
    Stopped {
        /// The connection.
        peer: PeerKey,
    },
    /// The uploader unblocked us (START): the engine may request again.
    Started {
        /// The connection.
        peer: PeerKey,
    },
    /// The uploader will not serve this connection any more.
    PermanentlyStopped {
        /// The connection.
        peer: PeerKey,
    },
    /// A STOP we sent stayed unpaid for the payment timeout.
    PaymentOverdue {
        /// The connection.
        peer: PeerKey,
        /// The channel.
        channel_id: ChannelId,
    },
    /// We need more than the channel's deposit; the channel is being closed.
    OutOfFunds {
        /// The payee.
        account: Address,
        /// The channel.
        channel_id: ChannelId,
    },
    /// We paid and the uploader sent nothing for the stall timeout; the channel is being closed.
    Stalled {
        /// The payee.
        account: Address,
        /// The channel.
        channel_id: ChannelId,
    },
    /// A torrent finished downloading; channels that only served it are being closed.
    DownloadComplete {
        /// The torrent.
        torrent: TorrentKey,
    },
    /// A channel message was dropped.
    MessageDropped {
        /// The peer's account, if known.
        account: Option<Address>,
        /// Why.
        reason: MessageDropReason,
    },
    /// A peer sent something invalid (already handled).
    PeerMisbehaved {
        /// The connection.
        peer: PeerKey,
        /// What.
        error: PeerError,
    },
}

/// Counters of one connection, from [`Coordinator::peer_stats`](crate::Coordinator::peer_stats).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct PeerStats {
    /// Bytes we served (reported by the engine).
    pub bytes_served: u64,
    /// Piece bytes we received.
    pub bytes_received: u64,
    /// Requests answered [`RequestDecision::Defer`](crate::RequestDecision::Defer).
    pub requests_deferred: u64,
    /// Paid-streaming messages sent.
    pub notices_sent: u64,
    /// Paid-streaming messages received.
    pub notices_received: u64,
    /// Paid-streaming messages not sent because the peer did not advertise the extension.
    pub notices_suppressed: u64,
    /// Acks sent.
    pub acks_sent: u64,
}

/// What we know about one payment identity, from [`Coordinator::identity`](crate::Coordinator::identity).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct IdentityView {
    /// The peer's `pseAccount`.
    pub account: Address,
    /// Connections currently open with it.
    pub connections: usize,
    /// The channel it pays us on (any phase).
    pub payee_channel: Option<ChannelId>,
    /// Whether that channel is funded and running.
    pub payee_channel_open: bool,
    /// The channel we pay it on (any phase).
    pub payer_channel: Option<ChannelId>,
    /// Whether that channel is funded and running.
    pub payer_channel_open: bool,
    /// Wei received from it, all channels.
    pub wei_received: u128,
    /// Bytes served to it, all connections.
    pub bytes_served: u64,
    /// Wei paid to it, all channels.
    pub wei_paid: u128,
    /// Bytes bought from it.
    pub bytes_paid: u64,
    /// Bytes received from it.
    pub bytes_received: u64,
    /// Wei it paid that no connection has used yet.
    pub credit_wei: u128,
    /// Wei worth of bytes it received on trust on closed connections (reduces future trust).
    pub debt_wei: u128,
}

/// Sizes of the coordinator's internal collections, from
/// [`Coordinator::resource_usage`](crate::Coordinator::resource_usage).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ResourceUsage {
    /// Live connections.
    pub peers: usize,
    /// Payment identities remembered (live, with a channel, or with an accounting history).
    pub identities: usize,
    /// Channels tracked.
    pub channels: usize,
    /// Proposals held while their proposer's handshake is awaited.
    pub pending_proposals: usize,
    /// Largest per-connection queue of requests deferred before classification (bounded by
    /// [`CoordinatorConfig::max_deferred_requests`](crate::CoordinatorConfig::max_deferred_requests)).
    pub max_deferred: usize,
    /// Largest per-connection queue of requests waiting for payment (bounded by the choke
    /// configuration's `max_queue_len`).
    pub max_gate_queue: usize,
    /// Largest per-connection set of serves awaiting their bytes-sent report.
    pub max_serving: usize,
    /// Largest per-identity outbox of channel messages (bounded by
    /// [`CoordinatorConfig::max_outbox`](crate::CoordinatorConfig::max_outbox)).
    pub max_outbox: usize,
    /// Undrained engine commands.
    pub engine_commands: usize,
    /// Undrained channel commands.
    pub channel_commands: usize,
    /// Undrained application events.
    pub events: usize,
}
