//! Peer-wire messages (BEP 3, BEP 5 `port`, BEP 6 fast extension, BEP 10 `extended`).
//!
//! A frame is `<u32 BE length><u8 id><payload>`; length 0 is a keep-alive. Every message id is a
//! constant in [`id`]. Fixed-size messages are checked against their exact length
//! ([`DecodeError::IncorrectLength`]); a well-formed frame with an id this crate does not know is
//! returned as [`Message::Unknown`], never as an error.
//!
//! Decoding a `piece`, `bitfield`, `extended` or unknown message from a [`Bytes`] copies nothing:
//! the payload is a slice of the input buffer.
//!
//! This module only checks framing. Whether a message is allowed *now* (for example BEP 6
//! messages when the fast extension was not negotiated, which BEP 6 says "MUST close the
//! connection") is the caller's decision.

use bytes::{Buf, BufMut, Bytes};

use crate::error::{DecodeError, EncodeError};

/// Message ids, in one place.
pub mod id {
    /// BEP 3 `choke`.
    pub const CHOKE: u8 = 0;
    /// BEP 3 `unchoke`.
    pub const UNCHOKE: u8 = 1;
    /// BEP 3 `interested`.
    pub const INTERESTED: u8 = 2;
    /// BEP 3 `not interested`.
    pub const NOT_INTERESTED: u8 = 3;
    /// BEP 3 `have`.
    pub const HAVE: u8 = 4;
    /// BEP 3 `bitfield`.
    pub const BITFIELD: u8 = 5;
    /// BEP 3 `request`.
    pub const REQUEST: u8 = 6;
    /// BEP 3 `piece`.
    pub const PIECE: u8 = 7;
    /// BEP 3 `cancel`.
    pub const CANCEL: u8 = 8;
    /// BEP 5 `port`.
    pub const PORT: u8 = 9;
    /// BEP 6 `suggest piece`.
    pub const SUGGEST: u8 = 0x0D;
    /// BEP 6 `have all`.
    pub const HAVE_ALL: u8 = 0x0E;
    /// BEP 6 `have none`.
    pub const HAVE_NONE: u8 = 0x0F;
    /// BEP 6 `reject request`.
    pub const REJECT: u8 = 0x10;
    /// BEP 6 `allowed fast`.
    pub const ALLOWED_FAST: u8 = 0x11;
    /// BEP 10 `extended`.
    pub const EXTENDED: u8 = 20;
}

pub use crate::request::BlockRequest;

/// Size of the big-endian length prefix in front of every message.
pub const LENGTH_PREFIX_LEN: usize = 4;

/// Length prefix of a `piece` frame without its data: id, index, begin.
pub const PIECE_HEADER_LEN: u32 = 9;

/// One peer-wire message.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Message {
    /// Length-0 frame.
    KeepAlive,
    /// `choke` (id 0).
    Choke,
    /// `unchoke` (id 1).
    Unchoke,
    /// `interested` (id 2).
    Interested,
    /// `not interested` (id 3).
    NotInterested,
    /// `have <piece index>` (id 4).
    Have(u32),
    /// `bitfield` (id 5): raw bits, high bit first. Spare-bit and size checks need the torrent
    /// and are left to the caller.
    Bitfield(Bytes),
    /// `request` (id 6).
    Request(BlockRequest),
    /// `piece` (id 7).
    Piece {
        /// Piece index.
        index: u32,
        /// Byte offset within the piece.
        begin: u32,
        /// Block data; a slice of the read buffer when decoded.
        data: Bytes,
    },
    /// `cancel` (id 8).
    Cancel(BlockRequest),
    /// BEP 5 `port` (id 9): the peer's DHT port.
    Port(u16),
    /// BEP 6 `suggest piece` (id 0x0D).
    Suggest(u32),
    /// BEP 6 `have all` (id 0x0E).
    HaveAll,
    /// BEP 6 `have none` (id 0x0F).
    HaveNone,
    /// BEP 6 `reject request` (id 0x10).
    Reject(BlockRequest),
    /// BEP 6 `allowed fast` (id 0x11).
    AllowedFast(u32),
    /// BEP 10 `extended` (id 20): `id` 0 is the extended handshake
    /// ([`ExtendedHandshake`](crate::extended::ExtendedHandshake)), any other id selects an
    /// extension by the number the *receiver* advertised.
    Extended {
        /// Extended message id.
        id: u8,
        /// Extension payload.
        payload: Bytes,
    },
    /// A well-formed frame with an id this crate does not interpret.
    Unknown {
        /// Message id (never one of the ids in [`id`]).
        id: u8,
        /// Payload after the id byte.
        payload: Bytes,
    },
}

/// The length prefix a message id must have, if it is fixed.
const fn fixed_len(id: u8) -> Option<u32> {
    match id {
        id::CHOKE | id::UNCHOKE | id::INTERESTED | id::NOT_INTERESTED => Some(1),
        id::HAVE_ALL | id::HAVE_NONE => Some(1),
        id::HAVE | id::SUGGEST | id::ALLOWED_FAST => Some(5),
        id::REQUEST | id::CANCEL | id::REJECT => Some(13),
        id::PORT => Some(3),
        _ => None,
    }
}

/// The smallest length prefix a variable-size message id may have.
const fn min_len(id: u8) -> u32 {
    match id {
        id::PIECE => PIECE_HEADER_LEN,
        // `<20><ext id>`
        id::EXTENDED => 2,
        _ => 1,
    }
}

/// Checks a length prefix against the message id it introduces.
///
/// Lets a streaming decoder reject, say, a 1 MiB `choke` as soon as the id byte arrives instead
/// of buffering the whole frame first.
pub fn check_frame_len(id: u8, len: u32) -> Result<(), DecodeError> {
    if let Some(expected) = fixed_len(id) {
        if len != expected {
            return Err(DecodeError::IncorrectLength {
                id,
                expected,
                got: len,
            });
        }
    } else {
        let min = min_len(id);
        if len < min {
            return Err(DecodeError::TooShort { id, min, got: len });
        }
    }
    Ok(())
}

impl Message {
    /// The message id, or `None` for a keep-alive.
    pub fn id(&self) -> Option<u8> {
        Some(match self {
            Self::KeepAlive => return None,
            Self::Choke => id::CHOKE,
            Self::Unchoke => id::UNCHOKE,
            Self::Interested => id::INTERESTED,
            Self::NotInterested => id::NOT_INTERESTED,
            Self::Have(_) => id::HAVE,
            Self::Bitfield(_) => id::BITFIELD,
            Self::Request(_) => id::REQUEST,
            Self::Piece { .. } => id::PIECE,
            Self::Cancel(_) => id::CANCEL,
            Self::Port(_) => id::PORT,
            Self::Suggest(_) => id::SUGGEST,
            Self::HaveAll => id::HAVE_ALL,
            Self::HaveNone => id::HAVE_NONE,
            Self::Reject(_) => id::REJECT,
            Self::AllowedFast(_) => id::ALLOWED_FAST,
            Self::Extended { .. } => id::EXTENDED,
            Self::Unknown { id, .. } => *id,
        })
    }

    /// The value of the length prefix: id byte plus payload, 0 for a keep-alive.
    ///
    /// May exceed `u32::MAX` for absurdly large payloads, which [`encode`](Self::encode) rejects.
    pub fn frame_len(&self) -> usize {
        match self {
            Self::KeepAlive => 0,
            Self::Choke
            | Self::Unchoke
            | Self::Interested
            | Self::NotInterested
            | Self::HaveAll
            | Self::HaveNone => 1,
            Self::Have(_) | Self::Suggest(_) | Self::AllowedFast(_) => 5,
            Self::Request(_) | Self::Cancel(_) | Self::Reject(_) => 13,
            Self::Port(_) => 3,
            Self::Bitfield(bits) => 1 + bits.len(),
            Self::Piece { data, .. } => PIECE_HEADER_LEN as usize + data.len(),
            Self::Extended { payload, .. } => 2 + payload.len(),
            Self::Unknown { payload, .. } => 1 + payload.len(),
        }
    }

    /// Total encoded size including the 4-byte length prefix.
    pub fn encoded_len(&self) -> usize {
        LENGTH_PREFIX_LEN + self.frame_len()
    }

    /// Writes the length-prefixed frame to `dst`.
    ///
    /// Fails, writing nothing, if the frame length does not fit the `u32` prefix or `dst` has
    /// less than [`encoded_len`](Self::encoded_len) bytes of room.
    pub fn encode<B: BufMut>(&self, dst: &mut B) -> Result<(), EncodeError> {
        let frame_len = self.frame_len();
        let prefix = u32::try_from(frame_len).map_err(|_| EncodeError::FrameTooLarge {
            len: frame_len,
            max: u32::MAX as usize,
        })?;
        let needed = LENGTH_PREFIX_LEN + frame_len;
        if dst.remaining_mut() < needed {
            return Err(EncodeError::BufferTooSmall {
                needed,
                remaining: dst.remaining_mut(),
            });
        }
        dst.put_u32(prefix);
        let Some(id) = self.id() else {
            return Ok(());
        };
        dst.put_u8(id);
        match self {
            Self::KeepAlive
            | Self::Choke
            | Self::Unchoke
            | Self::Interested
            | Self::NotInterested
            | Self::HaveAll
            | Self::HaveNone => {}
            Self::Have(index) | Self::Suggest(index) | Self::AllowedFast(index) => {
                dst.put_u32(*index)
            }
            Self::Request(req) | Self::Cancel(req) | Self::Reject(req) => req.put(dst),
            Self::Port(port) => dst.put_u16(*port),
            Self::Bitfield(bits) => dst.put_slice(bits),
            Self::Piece { index, begin, data } => {
                dst.put_u32(*index);
                dst.put_u32(*begin);
                dst.put_slice(data);
            }
            Self::Extended { id, payload } => {
                dst.put_u8(*id);
                dst.put_slice(payload);
            }
            Self::Unknown { payload, .. } => dst.put_slice(payload),
        }
        Ok(())
    }

    /// Decodes one length-prefixed frame from the front of `src` and advances past it.
    ///
    /// Bytes after the frame are left in `src`. Returns [`DecodeError::Incomplete`] if `src` does
    /// not hold the whole frame; nothing is consumed then, unless `src` is a non-contiguous
    /// buffer that cannot expose its first four bytes (see [`Buf::chunks_vectored`]), in which
    /// case the length prefix has been consumed. There is no maximum frame length here:
    /// the frame is already in memory. Streaming callers should use
    /// [`PeerCodec`](crate::codec::PeerCodec), which has one.
    ///
    /// Zero-copy when `src` is [`Bytes`] or [`BytesMut`](bytes::BytesMut).
    pub fn decode<B: Buf>(src: &mut B) -> Result<Self, DecodeError> {
        let remaining = src.remaining();
        if remaining < LENGTH_PREFIX_LEN {
            return Err(DecodeError::Incomplete {
                needed: LENGTH_PREFIX_LEN - remaining,
            });
        }
        let (len, frame_len) = match peek_prefix(src) {
            Some(len) => {
                let frame_len = len as usize;
                let have = remaining - LENGTH_PREFIX_LEN;
                if have < frame_len {
                    return Err(DecodeError::Incomplete {
                        needed: frame_len - have,
                    });
                }
                src.advance(LENGTH_PREFIX_LEN);
                (len, frame_len)
            }
            None => {
                // A buffer that cannot expose its first four bytes without consuming them.
                let len = src.get_u32();
                let frame_len = len as usize;
                if src.remaining() < frame_len {
                    return Err(DecodeError::Incomplete {
                        needed: frame_len - src.remaining(),
                    });
                }
                (len, frame_len)
            }
        };
        debug_assert_eq!(len as usize, frame_len);
        Self::decode_body(src, len)
    }

    /// Decodes a frame whose length prefix was already removed: `frame` is the id byte plus the
    /// payload (empty for a keep-alive). The whole of `frame` belongs to the message, so a
    /// fixed-size message with a trailing byte is [`DecodeError::IncorrectLength`].
    ///
    /// Payloads are slices of `frame`; nothing is copied.
    pub fn decode_frame(mut frame: Bytes) -> Result<Self, DecodeError> {
        let Ok(len) = u32::try_from(frame.len()) else {
            return Err(DecodeError::FrameTooLarge {
                len: u32::MAX,
                max: u32::MAX,
            });
        };
        Self::decode_body(&mut frame, len)
    }

    /// Decodes the `len` bytes after a length prefix from `src`, which must hold at least
    /// `len` bytes. Fixed-size messages are read in place; payloads are taken with
    /// [`Buf::copy_to_bytes`], which is zero-copy for `Bytes` and `BytesMut`. On error `src` is
    /// left inside the frame (every decode error is fatal to the stream).
    pub(crate) fn decode_body<B: Buf>(src: &mut B, len: u32) -> Result<Self, DecodeError> {
        debug_assert!(src.remaining() >= len as usize);
        if len == 0 {
            return Ok(Self::KeepAlive);
        }
        let id = src.get_u8();
        check_frame_len(id, len)?;
        // From here the length is exact (fixed ids) or at least `min_len(id)`, so none of the
        // reads below can run past the frame.
        let rest = len as usize - 1;
        Ok(match id {
            id::CHOKE => Self::Choke,
            id::UNCHOKE => Self::Unchoke,
            id::INTERESTED => Self::Interested,
            id::NOT_INTERESTED => Self::NotInterested,
            id::HAVE => Self::Have(src.get_u32()),
            id::BITFIELD => Self::Bitfield(src.copy_to_bytes(rest)),
            id::REQUEST => Self::Request(BlockRequest::get(src)),
            id::PIECE => {
                let index = src.get_u32();
                let begin = src.get_u32();
                Self::Piece {
                    index,
                    begin,
                    data: src.copy_to_bytes(rest - 8),
                }
            }
            id::CANCEL => Self::Cancel(BlockRequest::get(src)),
            id::PORT => Self::Port(src.get_u16()),
            id::SUGGEST => Self::Suggest(src.get_u32()),
            id::HAVE_ALL => Self::HaveAll,
            id::HAVE_NONE => Self::HaveNone,
            id::REJECT => Self::Reject(BlockRequest::get(src)),
            id::ALLOWED_FAST => Self::AllowedFast(src.get_u32()),
            id::EXTENDED => {
                let id = src.get_u8();
                Self::Extended {
                    id,
                    payload: src.copy_to_bytes(rest - 1),
                }
            }
            id => Self::Unknown {
                id,
                payload: src.copy_to_bytes(rest),
            },
        })
    }

    /// Encodes into a new [`Bytes`].
    pub fn to_bytes(&self) -> Result<Bytes, EncodeError> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode(&mut out)?;
        Ok(out.into())
    }
}

/// Reads the length prefix without consuming it, if the buffer exposes four bytes.
fn peek_prefix<B: Buf>(src: &B) -> Option<u32> {
    let mut out = [0u8; LENGTH_PREFIX_LEN];
    let chunk = src.chunk();
    if let Some(head) = chunk.get(..LENGTH_PREFIX_LEN) {
        out.copy_from_slice(head);
        return Some(u32::from_be_bytes(out));
    }
    let mut slices = [std::io::IoSlice::new(&[]); LENGTH_PREFIX_LEN];
    let n = src.chunks_vectored(&mut slices);
    let mut filled = 0;
    for byte in slices.iter().take(n).flat_map(|s| s.iter()) {
        if filled == LENGTH_PREFIX_LEN {
            break;
        }
        out[filled] = *byte;
        filled += 1;
    }
    (filled == LENGTH_PREFIX_LEN).then(|| u32::from_be_bytes(out))
}
