//! Errors, split by who is at fault: the configuration ([`ConfigError`]), the caller
//! ([`UsageError`]) or the remote peer ([`PeerError`]). [`Error`] is their union for the calls
//! that can fail either way.

use paid_wire::choke::ChannelId;
use paid_wire::message::BlockRequest;

use crate::engine::{PeerKey, TorrentKey};

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
}

/// The caller used the API wrongly; no state changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UsageError {
    /// The peer key is not connected.
    #[error("unknown peer {0:?}")]
    UnknownPeer(PeerKey),
    /// `on_peer_connected` for a key that is already connected.
    #[error("peer {0:?} is already connected")]
    DuplicatePeer(PeerKey),
    /// A torrent was registered twice.
    #[error("torrent {0:?} is already registered")]
    DuplicateTorrent(TorrentKey),
    /// `on_bytes_sent` for a request that was not being served, or with more bytes than asked.
    #[error(
        "bytes sent reported for {request:?} on {peer:?}, which was not being served ({detail})"
    )]
    NotBeingServed {
        /// The connection.
        peer: PeerKey,
        /// The request.
        request: BlockRequest,
        /// What was wrong.
        detail: &'static str,
    },
    /// A channel event named a channel the coordinator does not know.
    #[error("unknown channel {0:02x?}")]
    UnknownChannel(ChannelId),
}

/// What to do about a [`PeerError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PeerErrorAction {
    /// Nothing: the input was ignored (web3torrent logs and drops bad notices too).
    Ignore,
    /// The connection should be closed (the glue has already queued the command if needed).
    Disconnect,
}

/// The peer sent something invalid. The glue has ignored it (no reply, no ack) and queued any
/// reaction itself; the caller may log it or apply its own ban policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PeerError {
    /// A paid-streaming payload that does not decode.
    #[error("malformed paid-streaming message: {0}")]
    MalformedNotice(String),
    /// A `message` whose JSON has no string `recipient`.
    #[error("channel message without a recipient")]
    MalformedChannelMessage,
    /// A later extended handshake carried a different `pseAccount`; it was ignored.
    #[error("peer changed its payment account mid-connection")]
    IdentityChanged,
    /// The peer presented our own payment account.
    #[error("peer presented our own payment account")]
    SelfConnection,
    /// An oversized or empty request.
    #[error("invalid request {0:?}")]
    InvalidRequest(BlockRequest),
    /// The blocked-request queue overflowed.
    #[error("request queue overflow with {0:?}")]
    QueueOverflow(BlockRequest),
}

impl PeerError {
    /// The reaction this error calls for.
    pub fn action(&self) -> PeerErrorAction {
        match self {
            Self::SelfConnection => PeerErrorAction::Disconnect,
            _ => PeerErrorAction::Ignore,
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
