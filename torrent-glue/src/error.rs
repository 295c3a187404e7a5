//! Errors, split by who is at fault: the configuration ([`ConfigError`]), the caller
//! ([`UsageError`]) or the remote peer ([`PeerError`]). [`Error`] is their union for the calls
//! that can fail either way.

use paid_wire::choke::ChannelId;
use paid_wire::message::BlockRequest;

use crate::engine::{PeerKey, Terms, TorrentKey};

/// The configuration is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The uploader's choke configuration is invalid.
    #[error("invalid choke configuration: {0}")]
    Choke(#[from] paid_wire::choke::ConfigError),
    /// The payment granularity is zero.
    #[error("payment granularity must be non-zero")]
    ZeroGranularity,
    /// The maximum price a downloader accepts is zero (it could never join a channel).
    #[error("maximum accepted price must be non-zero")]
    ZeroMaxPrice,
    /// Our account is the zero address.
    #[error("our payment account must not be the zero address")]
    ZeroAccount,
    /// A limit of [`IdentityConfig`](crate::IdentityConfig) is zero.
    #[error("identity and stranger limits must be non-zero")]
    ZeroLimit,
    /// The signer given to the coordinator signs for another address than our account.
    #[error("the signer's address is not our payment account")]
    SignerMismatch,
}

/// The caller used the API wrongly; no state changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UsageError {
    /// The peer key is not connected.
    #[error("unknown peer {0:?}")]
    UnknownPeer(PeerKey),
    /// [`handle_peer_connected`](crate::Coordinator::handle_peer_connected) for a key that is
    /// already connected.
    #[error("peer {0:?} is already connected")]
    DuplicatePeer(PeerKey),
    /// A torrent was registered twice.
    #[error("torrent {0:?} is already registered")]
    DuplicateTorrent(TorrentKey),
    /// [`handle_bytes_sent`](crate::Coordinator::handle_bytes_sent) for a request that was not
    /// being served, or with more bytes than asked.
    #[error("bytes sent reported on {peer:?}: {cause}")]
    NotBeingServed {
        /// The connection.
        peer: PeerKey,
        /// What was wrong ([`NotBeingServed`](paid_wire::error::UsageError::NotBeingServed) or
        /// [`SentMoreThanRequested`](paid_wire::error::UsageError::SentMoreThanRequested)).
        #[source]
        cause: paid_wire::error::UsageError,
    },
    /// A channel event named a channel the coordinator does not know.
    #[error("unknown channel {0:02x?}")]
    UnknownChannel(ChannelId),
}

/// What to do about a [`PeerError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PeerReaction {
    /// Nothing: the input was ignored (web3torrent logs and drops bad notices too).
    Ignore,
    /// The connection should be closed (the glue has already queued the command if needed).
    Disconnect,
    /// We stopped paying the peer and started a cooperative close of our channel with it
    /// (challenged if the close is not answered within
    /// [`LivenessConfig::response_timeout`](crate::LivenessConfig::response_timeout)). The
    /// connection may stay up: it is never paid again.
    CloseChannel,
}

/// The peer sent something invalid. The glue has ignored it (no reply, no ack) and queued any
/// reaction itself; the caller may log it or apply its own ban policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PeerError {
    /// A paid-streaming payload that does not decode.
    #[error("malformed paid-streaming message: {0}")]
    MalformedNotice(#[source] paid_wire::error::PseError),
    /// A `message` whose JSON has no string `recipient`.
    #[error("channel message without a recipient")]
    MalformedChannelMessage,
    /// A later extended handshake carried a different `pseAccount`; it was ignored.
    #[error("peer changed its payment account mid-connection")]
    IdentityChanged,
    /// The peer presented our own payment account.
    #[error("peer presented our own payment account")]
    SelfConnection,
    /// An identity proof (`auth-proof`) that does not recover to the claimed account, or that
    /// answers no challenge of ours. A strike; the connection stays non-paying.
    #[error("bad identity proof")]
    BadIdentityProof,
    /// A second `auth-challenge` on the same connection: each connection is answered once.
    #[error("repeated identity challenge")]
    RepeatedChallenge,
    /// More extended handshakes than
    /// [`IdentityConfig::max_extended_handshakes`](crate::IdentityConfig::max_extended_handshakes)
    /// on one connection: ignored, a strike.
    #[error("too many extended handshakes")]
    TooManyHandshakes,
    /// A channel message the channel client refused for a bad signature: a strike.
    #[error("channel message with a bad signature")]
    BadChannelSignature,
    /// An oversized or empty request.
    #[error("invalid request {0:?}")]
    InvalidRequest(BlockRequest),
    /// The blocked-request queue overflowed.
    #[error("request queue overflow with {0:?}")]
    QueueOverflow(BlockRequest),
    /// An uploader kept asking to be paid (STOP or prompt) while we had already paid for the
    /// whole [window](crate::DownloadConfig::window_bytes) beyond what it delivered, and
    /// delivered nothing for [`window_timeout`](crate::DownloadConfig::window_timeout). We
    /// stopped paying it and closed the channel (see [`PeerReaction::CloseChannel`]); its
    /// later proposals are declined.
    #[error(
        "uploader asked to be paid beyond our window on channel {channel_id:02x?}: \
         {paid_bytes} bytes paid, {received_bytes} received, window {window_bytes}"
    )]
    AskedBeyondWindow {
        /// The channel we pay it on.
        channel_id: ChannelId,
        /// Bytes paid for on that channel.
        paid_bytes: u64,
        /// Bytes received from it since we joined the channel.
        received_bytes: u64,
        /// Our window ([`DownloadConfig::window_bytes`](crate::DownloadConfig::window_bytes)).
        window_bytes: u64,
    },
    /// A connection of an uploader advertises terms other than those fixed when we joined its
    /// channel, and asked to be paid under them: it was not paid, and we closed the channel
    /// (see [`PeerReaction::CloseChannel`]); the uploader may propose a new one, checked
    /// against our limits like any proposal.
    #[error(
        "uploader advertises {advertised:?} for channel {channel_id:02x?}, joined at {agreed:?}: not paid"
    )]
    TermsChanged {
        /// The channel.
        channel_id: ChannelId,
        /// The terms fixed when we joined it.
        agreed: Terms,
        /// The terms this connection advertises.
        advertised: Terms,
    },
    /// An uploader asked to be paid at a price above our
    /// [`max_price_per_byte`](crate::DownloadConfig::max_price_per_byte) (a channel adopted
    /// after a restart takes the terms of the first connection within it): not paid, and the
    /// channel is closed as for [`PeerError::TermsChanged`].
    #[error(
        "price {price} wei/byte on channel {channel_id:02x?} is above our maximum {max}: not paid"
    )]
    PriceAboveCap {
        /// The channel.
        channel_id: ChannelId,
        /// The price it asks.
        price: u128,
        /// Our maximum.
        max: u128,
    },
}

impl PeerError {
    /// The reaction this error calls for.
    pub fn reaction(&self) -> PeerReaction {
        match self {
            Self::SelfConnection => PeerReaction::Disconnect,
            Self::AskedBeyondWindow { .. }
            | Self::TermsChanged { .. }
            | Self::PriceAboveCap { .. } => PeerReaction::CloseChannel,
            _ => PeerReaction::Ignore,
        }
    }
}

/// Any error of the coordinator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The caller's mistake.
    #[error(transparent)]
    Usage(#[from] UsageError),
    /// The peer's mistake.
    #[error(transparent)]
    Peer(#[from] PeerError),
}
