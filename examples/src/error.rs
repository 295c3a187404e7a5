//! Error types of the sample client, split by cause: a bad `.torrent` file, storage I/O, and a
//! peer connection that had to end.

use std::io;
use std::path::PathBuf;

/// A `.torrent` file could not be created or parsed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MetainfoError {
    /// The bencode itself is malformed (or not canonical: bendy rejects unsorted keys).
    #[error("malformed bencode: {0}")]
    Bencode(String),
    /// A required key is missing.
    #[error("missing key `{0}`")]
    Missing(&'static str),
    /// A key has the wrong type or an invalid value.
    #[error("invalid `{key}`: {reason}")]
    Invalid {
        /// The offending key.
        key: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// Reading the source file or folder failed.
    #[error("reading {path}")]
    Io {
        /// The file being read.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
}

impl MetainfoError {
    pub(crate) fn invalid(key: &'static str, reason: impl Into<String>) -> Self {
        Self::Invalid {
            key,
            reason: reason.into(),
        }
    }
}

impl From<bendy::decoding::Error> for MetainfoError {
    fn from(e: bendy::decoding::Error) -> Self {
        Self::Bencode(e.to_string())
    }
}

impl From<bendy::encoding::Error> for MetainfoError {
    fn from(e: bendy::encoding::Error) -> Self {
        Self::Bencode(e.to_string())
    }
}

/// Storage (the torrent's files on disk) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// An I/O error on one of the torrent's files.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// A block outside the torrent was asked for (a caller bug or a bad peer request that was
    /// not validated).
    #[error("block out of range: piece {index}, offset {begin}, length {length}")]
    OutOfRange {
        /// Piece index.
        index: u32,
        /// Offset within the piece.
        begin: u32,
        /// Length.
        length: u32,
    },
}

/// Why a peer connection ended.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PeerError {
    /// The TCP connection failed or was closed.
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
    /// The peer sent bytes that are not valid peer-wire.
    #[error("wire: {0}")]
    Wire(#[from] paid_wire::error::CodecError),
    /// The peer closed the connection.
    #[error("connection closed by peer")]
    Closed,
    /// The peer's handshake is for another torrent.
    #[error("peer handshake is for another torrent")]
    WrongInfoHash,
    /// The peer broke the protocol (valid bytes, invalid here).
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// Nothing arrived for too long, or the handshake did not complete in time.
    #[error("timed out: {0}")]
    Timeout(&'static str),
    /// Reading or writing the torrent's data failed.
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    /// The paid-streaming layer ended the connection.
    #[error("payments: {0}")]
    Payment(String),
}
