//! Error types, split by who caused them.
//!
//! | type | cause | typical reaction |
//! |---|---|---|
//! | [`DecodeError`] | the peer sent bytes that are not a valid peer-wire frame | disconnect |
//! | [`BencodeError`] | the peer sent malformed or out-of-bounds bencode | see the wrapping error |
//! | [`ExtendedError`] | the peer's BEP-10 extended handshake is malformed | treat the peer as having no extensions, or disconnect |
//! | [`PseError`] | a paid-streaming extension payload is malformed | drop the message (web3torrent logs and drops) |
//! | [`MetadataError`] | a `ut_metadata` message is malformed or does not fit the metadata | ask another peer for the metadata |
//! | [`EncodeError`] | the caller asked to encode something the wire cannot carry | fix the caller |
//! | [`UsageError`] | the caller misused an API | fix the caller |
//! | [`CodecError`] | any of the above inside a [`tokio_util::codec`] adapter, or I/O | the stream is finished |
//!
//! Every public enum is `#[non_exhaustive]`; match with a wildcard arm.

use std::io;

use crate::ChannelId;
use crate::request::BlockRequest;

/// The peer sent bytes that are not a valid handshake or peer-wire frame.
///
/// Lengths called `len`, `expected` or `got` in frame errors are values of the 4-byte length
/// prefix, i.e. they count the message id byte plus the payload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The buffer ends before the item does (only from the `Buf`-level `decode` functions; the
    /// codecs return `Ok(None)` instead).
    #[error("incomplete input: {needed} more byte(s) needed")]
    Incomplete {
        /// How many more bytes are needed at least.
        needed: usize,
    },
    /// The first handshake byte (the protocol-string length) is not 19.
    #[error("handshake protocol string length is {got}, expected 19")]
    HandshakePstrLen {
        /// The length byte that was received.
        got: u8,
    },
    /// The handshake protocol string is not `"BitTorrent protocol"`.
    #[error("handshake protocol string is not \"BitTorrent protocol\"")]
    HandshakePstr,
    /// The length prefix exceeds the configured maximum frame length.
    #[error("frame length {len} exceeds the maximum of {max}")]
    FrameTooLarge {
        /// The received length prefix.
        len: u32,
        /// The configured maximum.
        max: u32,
    },
    /// A fixed-size message has the wrong length.
    #[error("message id {id} must have length {expected}, got {got}")]
    IncorrectLength {
        /// The message id.
        id: u8,
        /// The only valid length prefix for this id.
        expected: u32,
        /// The received length prefix.
        got: u32,
    },
    /// A variable-size message is shorter than its fixed header.
    #[error("message id {id} must have length at least {min}, got {got}")]
    TooShort {
        /// The message id.
        id: u8,
        /// The smallest valid length prefix for this id.
        min: u32,
        /// The received length prefix.
        got: u32,
    },
    /// The stream ended inside a handshake or frame.
    #[error("stream ended with {remaining} byte(s) of an incomplete frame buffered")]
    TruncatedFrame {
        /// Bytes that were buffered but never formed a complete item.
        remaining: usize,
    },
}

/// Malformed or out-of-bounds bencode.
///
/// Offsets are byte offsets into the decoded input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BencodeError {
    /// The input ends inside a value.
    #[error("bencode ends unexpectedly")]
    UnexpectedEof,
    /// An unexpected byte.
    #[error("unexpected byte {byte:#04x} at offset {offset}")]
    UnexpectedByte {
        /// The offending byte.
        byte: u8,
        /// Its offset.
        offset: usize,
    },
    /// An integer or string length is not in canonical form (leading zero, `-0`, empty) or does
    /// not fit the target type.
    #[error("invalid integer at offset {offset}")]
    InvalidInteger {
        /// Offset of the first digit.
        offset: usize,
    },
    /// A dictionary key is not a byte string.
    #[error("dictionary key at offset {offset} is not a byte string")]
    NonStringKey {
        /// Offset of the key.
        offset: usize,
    },
    /// A dictionary contains the same key twice.
    #[error("duplicate dictionary key at offset {offset}")]
    DuplicateKey {
        /// Offset of the second occurrence.
        offset: usize,
    },
    /// Lists and dictionaries are nested deeper than allowed.
    #[error("nesting deeper than {max}")]
    TooDeep {
        /// The maximum depth.
        max: usize,
    },
    /// More list items plus dictionary entries than allowed.
    #[error("more than {max} list items and dictionary entries")]
    TooManyItems {
        /// The maximum number of items.
        max: usize,
    },
    /// The input is larger than allowed.
    #[error("input of {len} bytes exceeds the maximum of {max}")]
    TooLarge {
        /// The input length.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// Bytes follow the top-level value.
    #[error("{count} trailing byte(s) after the bencoded value")]
    TrailingBytes {
        /// How many bytes follow the value.
        count: usize,
    },
}

/// A BEP-10 extended handshake that cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ExtendedError {
    /// The payload is not valid (or not bounded) bencode.
    #[error(transparent)]
    Bencode(#[from] BencodeError),
    /// The payload is valid bencode but not a dictionary.
    #[error("extended handshake is not a dictionary")]
    NotADict,
    /// A key defined by BEP 9/10 has a value of the wrong type or range.
    #[error("extended handshake key {key:?} has an invalid value")]
    InvalidField {
        /// The key.
        key: &'static str,
    },
}

/// A paid-streaming extension payload that cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PseError {
    /// The payload is not valid (or not bounded) bencode.
    #[error(transparent)]
    Bencode(#[from] BencodeError),
    /// The payload is valid bencode but not a dictionary.
    #[error("PSE payload is not a dictionary")]
    NotADict,
    /// The `command` key is missing.
    #[error("PSE payload has no command")]
    MissingCommand,
    /// The `command` value is not a UTF-8 byte string.
    #[error("PSE command is not a UTF-8 string")]
    InvalidCommand,
    /// The `data` of `stop` / `permanent-stop` is neither `{}` nor a `0x` + 64 hex digit channel id.
    #[error("PSE {command} data is not a 0x-prefixed 32-byte hex channel id")]
    InvalidChannelId {
        /// The command carrying the bad channel id.
        command: &'static str,
    },
    /// The `data` of `message` is not a dictionary with a UTF-8 string under `message`.
    #[error("PSE message data is not a dictionary with a UTF-8 string `message`")]
    InvalidMessageData,
    /// The `data` of `auth-challenge` / `auth-proof` is not a dictionary holding its field
    /// (`nonce`, `signature`) as `0x` + hex digits of the right length.
    #[error("PSE {command} data is not a dictionary with its 0x-prefixed hex field")]
    InvalidHexField {
        /// The command with the bad data.
        command: &'static str,
    },
}

/// A BEP 9 `ut_metadata` message that cannot be decoded, or that does not fit the metadata
/// being downloaded ([`MetadataDownload`](crate::metadata::MetadataDownload)). All are the
/// peer's doing; [`UnknownMessageType`](Self::UnknownMessageType) is to be ignored (BEP 9: "an
/// unrecognized message ID MUST be ignored"), the others end the metadata exchange with that
/// peer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MetadataError {
    /// The dictionary is not valid (or not bounded) bencode.
    #[error(transparent)]
    Bencode(#[from] BencodeError),
    /// The message does not start with a dictionary.
    #[error("ut_metadata message is not a dictionary")]
    NotADict,
    /// A required key is missing.
    #[error("ut_metadata message has no {key:?}")]
    MissingField {
        /// The key.
        key: &'static str,
    },
    /// A key has a value of the wrong type or range.
    #[error("ut_metadata message key {key:?} has an invalid value")]
    InvalidField {
        /// The key.
        key: &'static str,
    },
    /// A `msg_type` this crate does not know: ignore the message.
    #[error("unknown ut_metadata msg_type {msg_type}")]
    UnknownMessageType {
        /// The received `msg_type`.
        msg_type: i64,
    },
    /// Bytes follow the dictionary of a message that carries none (request, reject).
    #[error("{count} byte(s) after a ut_metadata message that carries no data")]
    TrailingData {
        /// How many.
        count: usize,
    },
    /// A data message carries more than one metadata piece (16 KiB).
    #[error("ut_metadata piece of {len} bytes, more than 16 KiB")]
    PieceTooLarge {
        /// The data length.
        len: usize,
    },
    /// The advertised metadata size is 0 or larger than
    /// [`MAX_METADATA_SIZE`](crate::metadata::MAX_METADATA_SIZE).
    #[error("metadata size {size} is out of range")]
    SizeOutOfRange {
        /// The advertised size.
        size: u64,
    },
    /// A data message for a piece past the end of the metadata.
    #[error("metadata piece {piece} of {count}")]
    PieceOutOfRange {
        /// The piece.
        piece: u32,
        /// How many pieces the metadata has.
        count: u32,
    },
    /// A data message's `total_size` differs from the size being downloaded.
    #[error("metadata total_size {got}, expected {expected}")]
    TotalSizeMismatch {
        /// The size being downloaded.
        expected: u64,
        /// The message's `total_size`.
        got: u64,
    },
    /// A data message's piece has the wrong length (every piece but the last is 16 KiB).
    #[error("metadata piece {piece} has {got} bytes, expected {expected}")]
    PieceLength {
        /// The piece.
        piece: u32,
        /// Its length from the metadata size.
        expected: usize,
        /// The received length.
        got: usize,
    },
}

/// The caller asked to encode something the wire cannot carry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The frame (id plus payload) is longer than the limit (the codec's maximum, or `u32::MAX`).
    #[error("frame of {len} bytes exceeds the maximum of {max}")]
    FrameTooLarge {
        /// The frame length (id plus payload).
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The destination buffer has less room than the encoded item needs.
    #[error("destination buffer has {remaining} byte(s) of room, {needed} needed")]
    BufferTooSmall {
        /// Bytes needed.
        needed: usize,
        /// Room left in the buffer.
        remaining: usize,
    },
}

/// The error type of [`PeerCodec`](crate::codec::PeerCodec) and
/// [`HandshakeCodec`](crate::codec::HandshakeCodec).
///
/// Any `Err` from a decoder means the stream is unrecoverable: close the connection.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The peer sent invalid bytes.
    #[error("peer sent an invalid frame: {0}")]
    Decode(#[from] DecodeError),
    /// The caller tried to send something that cannot be encoded.
    #[error("cannot encode: {0}")]
    Encode(#[from] EncodeError),
    /// The underlying transport failed.
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
}

impl CodecError {
    /// Whether the peer is at fault (as opposed to the local caller or the transport).
    pub fn is_peer_fault(&self) -> bool {
        matches!(self, Self::Decode(_))
    }
}

/// The caller misused an API (as opposed to bad input from the peer).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UsageError {
    /// Extended message id 0 is the extended handshake and cannot name an extension.
    #[error("extended message id 0 is reserved for the handshake")]
    ExtensionIdZero,
    /// Another local extension already uses this id.
    #[error("extended message id {id} is already used by another extension")]
    ExtensionIdInUse {
        /// The id.
        id: u8,
    },
    // The choke controller's (its state is unchanged):
    /// A payment was reported before any channel was attached.
    #[error("payment reported but no channel is attached")]
    NoChannel,
    /// A payment or channel id does not match the attached channel.
    #[error("channel mismatch: attached {attached}, got {got}")]
    WrongChannel {
        /// The attached channel.
        attached: ChannelId,
        /// The id the caller passed.
        got: ChannelId,
    },
    /// `handle_bytes_sent` for a request that has no outstanding `Serve`.
    #[error("bytes sent reported for {request:?}, which was not being served")]
    NotBeingServed {
        /// The request passed by the caller.
        request: BlockRequest,
    },
    /// `handle_bytes_sent` reported more bytes than the request's length.
    #[error("{sent} bytes reported sent for {request:?}, more than its length")]
    SentMoreThanRequested {
        /// The request.
        request: BlockRequest,
        /// The reported byte count.
        sent: u32,
    },
}
