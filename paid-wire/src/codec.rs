//! [`tokio_util::codec`] adapters: [`HandshakeCodec`] for the 68-byte BEP 3 handshake and
//! [`PeerCodec`] for the length-prefixed messages after it.
//!
//! The handshake is a **separate step with its own codec** rather than a state of
//! [`PeerCodec`], so that the message stream's `Item` is plain [`Message`]. Switch codecs with
//! [`Framed::map_codec`](tokio_util::codec::Framed::map_codec), which keeps the read buffer, so
//! messages that arrive in the same TCP segment as the handshake are not lost.
//!
//! Contract (tokio-util's `Decoder`):
//! - a partial frame is `Ok(None)`, never an error;
//! - the length prefix is checked against [`PeerCodec::max_frame_len`] before any buffer space
//!   is reserved, and the id byte against the exact length of fixed-size messages as soon as it
//!   arrives;
//! - the parsed length is remembered, so a partial payload is not re-parsed on every read;
//! - bytes left over at end of stream are [`DecodeError::TruncatedFrame`];
//! - any `Err` means the stream is unrecoverable.
//!
//! # Example
//!
//! ```
//! use futures_util::{SinkExt, StreamExt};
//! use paid_wire::codec::{HandshakeCodec, PeerCodec};
//! use paid_wire::handshake::{Handshake, Reserved};
//! use paid_wire::message::{BlockRequest, Message};
//! use tokio_util::codec::Framed;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), paid_wire::error::CodecError> {
//! let (a, b) = tokio::io::duplex(64 * 1024);
//! let reserved = Reserved::empty().with_extension_protocol(true).with_fast(true);
//! let hs = Handshake::new(reserved, [0xaa; 20], *b"-PW0001-123456789012");
//!
//! // Both sides: handshake first, then switch to the message codec on the same buffer.
//! let mut left = Framed::new(a, HandshakeCodec::new());
//! let mut right = Framed::new(b, HandshakeCodec::new());
//! left.send(hs).await?;
//! right.send(hs).await?;
//! let theirs = right.next().await.expect("handshake")?;
//! assert!(theirs.reserved.extension_protocol());
//! left.next().await.expect("handshake")?;
//!
//! let mut left = left.map_codec(|_| PeerCodec::new());
//! let mut right = right.map_codec(|_| PeerCodec::new().with_max_frame_len(32 * 1024));
//! left.send(Message::Request(BlockRequest::new(1, 0, 16384))).await?;
//! assert_eq!(
//!     right.next().await.expect("message")?,
//!     Message::Request(BlockRequest::new(1, 0, 16384))
//! );
//! # Ok(())
//! # }
//! ```

use bytes::{Buf, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::error::{CodecError, DecodeError, EncodeError};
use crate::handshake::{HANDSHAKE_LEN, Handshake};
use crate::message::{LENGTH_PREFIX_LEN, Message, PIECE_HEADER_LEN, check_frame_len};

/// Default maximum length prefix: a `piece` carrying a 1 MiB block (libtorrent disconnects on
/// "packets larger than 1 MB"). A bitfield of up to 8 Mi pieces also fits.
pub const DEFAULT_MAX_FRAME_LEN: u32 = (1 << 20) + PIECE_HEADER_LEN;

/// Decodes and encodes the 68-byte BEP 3 handshake.
///
/// Rejects a wrong protocol-string length after the first byte and a wrong protocol string as
/// soon as it arrives; never reserves more than 68 bytes.
#[derive(Debug, Clone, Copy, Default)]
pub struct HandshakeCodec {
    _priv: (),
}

impl HandshakeCodec {
    /// Creates the codec.
    pub const fn new() -> Self {
        Self { _priv: () }
    }
}

impl Decoder for HandshakeCodec {
    type Item = Handshake;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Handshake>, CodecError> {
        match Handshake::decode(src) {
            Ok(hs) => Ok(Some(hs)),
            Err(DecodeError::Incomplete { needed }) => {
                src.reserve(needed);
                Ok(None)
            }
            Err(err) => Err(err.into()),
        }
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Handshake>, CodecError> {
        match self.decode(src)? {
            Some(hs) => Ok(Some(hs)),
            None if src.is_empty() => Ok(None),
            None => Err(DecodeError::TruncatedFrame {
                remaining: src.len(),
            }
            .into()),
        }
    }
}

impl Encoder<Handshake> for HandshakeCodec {
    type Error = CodecError;

    fn encode(&mut self, hs: Handshake, dst: &mut BytesMut) -> Result<(), CodecError> {
        dst.reserve(HANDSHAKE_LEN);
        hs.encode(dst);
        Ok(())
    }
}

/// Where the decoder is inside the current frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DecodeState {
    /// Waiting for a 4-byte length prefix.
    Head,
    /// The prefix was consumed; waiting for `len` bytes. `checked` once the id byte was
    /// validated against `len`.
    Body { len: u32, checked: bool },
}

/// Decodes and encodes length-prefixed peer-wire [`Message`]s.
///
/// See the [module docs](self) for the contract and an example.
#[derive(Debug, Clone)]
pub struct PeerCodec {
    max_frame_len: u32,
    state: DecodeState,
}

impl Default for PeerCodec {
    fn default() -> Self {
        Self::new()
    }
}

impl PeerCodec {
    /// Creates a codec with [`DEFAULT_MAX_FRAME_LEN`].
    pub const fn new() -> Self {
        Self {
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            state: DecodeState::Head,
        }
    }

    /// Builder form of [`set_max_frame_len`](Self::set_max_frame_len).
    pub const fn with_max_frame_len(mut self, max: u32) -> Self {
        self.max_frame_len = max;
        self
    }

    /// Sets the largest accepted (and sent) length prefix, i.e. id byte plus payload.
    ///
    /// Takes effect at the next frame header; a frame already in flight keeps the limit it was
    /// checked against.
    pub fn set_max_frame_len(&mut self, max: u32) {
        self.max_frame_len = max;
    }

    /// The largest accepted (and sent) length prefix.
    pub const fn max_frame_len(&self) -> u32 {
        self.max_frame_len
    }
}

impl Decoder for PeerCodec {
    type Item = Message;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Message>, CodecError> {
        let (len, checked) = match self.state {
            DecodeState::Head => {
                let Some(head) = src.get(..LENGTH_PREFIX_LEN) else {
                    return Ok(None);
                };
                let mut prefix = [0u8; LENGTH_PREFIX_LEN];
                prefix.copy_from_slice(head);
                let len = u32::from_be_bytes(prefix);
                // Checked before anything is reserved for the body.
                if len > self.max_frame_len {
                    return Err(DecodeError::FrameTooLarge {
                        len,
                        max: self.max_frame_len,
                    }
                    .into());
                }
                src.advance(LENGTH_PREFIX_LEN);
                if len == 0 {
                    return Ok(Some(Message::KeepAlive));
                }
                (len, false)
            }
            DecodeState::Body { len, checked } => (len, checked),
        };
        let checked = checked
            || match src.first() {
                Some(&id) => {
                    check_frame_len(id, len)?;
                    true
                }
                None => false,
            };
        let frame_len = len as usize;
        if src.len() < frame_len {
            self.state = DecodeState::Body { len, checked };
            // The length is within `max_frame_len`, so this reservation is bounded.
            src.reserve(frame_len - src.len());
            return Ok(None);
        }
        self.state = DecodeState::Head;
        // Payloads are split off `src` (`BytesMut::copy_to_bytes` is `split_to().freeze()`).
        Ok(Some(Message::decode_body(src, len)?))
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Message>, CodecError> {
        match self.decode(src)? {
            Some(msg) => Ok(Some(msg)),
            None if src.is_empty() && self.state == DecodeState::Head => Ok(None),
            None => Err(DecodeError::TruncatedFrame {
                remaining: src.len()
                    + match self.state {
                        DecodeState::Head => 0,
                        DecodeState::Body { .. } => LENGTH_PREFIX_LEN,
                    },
            }
            .into()),
        }
    }
}

impl Encoder<&Message> for PeerCodec {
    type Error = CodecError;

    fn encode(&mut self, msg: &Message, dst: &mut BytesMut) -> Result<(), CodecError> {
        let frame_len = msg.frame_len();
        if frame_len > self.max_frame_len as usize {
            return Err(EncodeError::FrameTooLarge {
                len: frame_len,
                max: self.max_frame_len as usize,
            }
            .into());
        }
        dst.reserve(msg.encoded_len());
        msg.encode(dst)?;
        Ok(())
    }
}

impl Encoder<Message> for PeerCodec {
    type Error = CodecError;

    fn encode(&mut self, msg: Message, dst: &mut BytesMut) -> Result<(), CodecError> {
        Encoder::<&Message>::encode(self, &msg, dst)
    }
}
