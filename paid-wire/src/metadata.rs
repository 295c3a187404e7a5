//! BEP 9 `ut_metadata`: fetching a torrent's info dictionary from peers (for magnet links).
//!
//! The extension is negotiated under the BEP 10 name [`EXTENSION_NAME`]; a peer that has the
//! metadata also puts its size in the extended handshake
//! ([`ExtendedHandshake::metadata_size`](crate::extended::ExtendedHandshake::metadata_size)).
//! The metadata (the bencoded `info` dictionary, whose SHA-1 is the info-hash) is exchanged in
//! pieces of [`PIECE_LEN`] bytes, the last one shorter.
//!
//! Each message is a bencoded dictionary, followed, for `data` only, by the piece's bytes:
//!
//! | [`MetadataMessage`] | bytes |
//! |---|---|
//! | `Request { piece }` | `d8:msg_typei0e5:piecei<piece>ee` |
//! | `Data { piece, total_size, data }` | `d8:msg_typei1e5:piecei<piece>e10:total_sizei<size>ee<data>` |
//! | `Reject { piece }` | `d8:msg_typei2e5:piecei<piece>ee` |
//!
//! Decoding accepts unknown keys and unsorted keys (as everywhere in this crate), bounds the
//! dictionary by [`HEADER_LIMITS`] and the data by [`PIECE_LEN`], and rejects bytes after a
//! request or reject. A `msg_type` other than 0, 1, 2 is
//! [`MetadataError::UnknownMessageType`], which BEP 9 says to ignore.
//!
//! The sans-IO halves of the exchange: [`serve`] answers a request from the metadata we have;
//! [`MetadataDownload`] asks for the pieces of a peer's metadata and assembles them. Checking
//! the result's SHA-1 against the info-hash is the caller's (this crate has no hash function):
//! on a mismatch, [`MetadataDownload::reset`] and ask another peer.
//!
//! ```
//! use paid_wire::metadata::{MetadataDownload, MetadataMessage, Progress, serve};
//!
//! let info = vec![b'x'; 20_000]; // the seeder's metadata: two pieces
//! let mut download = MetadataDownload::new(info.len() as u64).unwrap();
//! let mut done = None;
//! while let Some(request) = download.next_request() {
//!     // On the wire: request.encode() to the seeder, whose answer is decoded again.
//!     let MetadataMessage::Request { piece } = MetadataMessage::decode(&request.encode()).unwrap()
//!     else { unreachable!() };
//!     let answer = MetadataMessage::decode(&serve(&info, piece).encode()).unwrap();
//!     if let Progress::Complete(bytes) = download.handle(answer).unwrap() {
//!         done = Some(bytes);
//!     }
//! }
//! assert_eq!(done.as_deref(), Some(&info[..]));
//! ```

use std::collections::BTreeMap;

use bytes::{BufMut, Bytes};

use crate::bencode::{Limits, Value};
use crate::error::MetadataError;
use crate::message::Message;

/// The BEP 10 extension name.
pub const EXTENSION_NAME: &str = "ut_metadata";

/// Length of every metadata piece but the last (BEP 9: 16 KiB).
pub const PIECE_LEN: usize = 16 * 1024;

/// Largest metadata size [`MetadataDownload`] accepts: 16 MiB, the info dictionary of a
/// torrent with ~800,000 pieces. A peer's `metadata_size` decides how much we allocate, so it
/// is bounded.
pub const MAX_METADATA_SIZE: u64 = 16 << 20;

/// Bounds for the dictionary at the start of a message (its data excluded).
pub const HEADER_LIMITS: Limits = Limits {
    max_len: 512,
    max_depth: 2,
    max_items: 32,
};

const REQUEST: i64 = 0;
const DATA: i64 = 1;
const REJECT: i64 = 2;

/// A `ut_metadata` message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetadataMessage {
    /// `msg_type` 0: send me this piece.
    Request {
        /// The piece index.
        piece: u32,
    },
    /// `msg_type` 1: a piece of the metadata.
    Data {
        /// The piece index.
        piece: u32,
        /// The size of the whole metadata.
        total_size: u64,
        /// The piece's bytes (at most [`PIECE_LEN`]).
        data: Bytes,
    },
    /// `msg_type` 2: the sender does not give this piece.
    Reject {
        /// The piece index.
        piece: u32,
    },
}

impl MetadataMessage {
    /// Decodes an extended-message payload (the bytes after `<20><id>`).
    pub fn decode(payload: &[u8]) -> Result<Self, MetadataError> {
        let (value, used) = Value::decode_prefix(payload, &HEADER_LIMITS)?;
        let Value::Dict(dict) = value else {
            return Err(MetadataError::NotADict);
        };
        let msg_type = field::<i64>(&dict, "msg_type")?;
        let piece = field::<u32>(&dict, "piece")?;
        let rest = &payload[used..];
        let no_data = || match rest.len() {
            0 => Ok(()),
            count => Err(MetadataError::TrailingData { count }),
        };
        match msg_type {
            REQUEST => no_data().map(|()| Self::Request { piece }),
            REJECT => no_data().map(|()| Self::Reject { piece }),
            DATA => {
                let total_size = field::<u64>(&dict, "total_size")?;
                if rest.len() > PIECE_LEN {
                    return Err(MetadataError::PieceTooLarge { len: rest.len() });
                }
                Ok(Self::Data {
                    piece,
                    total_size,
                    data: Bytes::copy_from_slice(rest),
                })
            }
            msg_type => Err(MetadataError::UnknownMessageType { msg_type }),
        }
    }

    /// The piece index the message is about.
    pub fn piece(&self) -> u32 {
        match self {
            Self::Request { piece } | Self::Data { piece, .. } | Self::Reject { piece } => *piece,
        }
    }

    /// Appends the encoding (sorted keys, then the data of a `Data`) to `dst`.
    pub fn encode_to<B: BufMut>(&self, dst: &mut B) {
        let mut dict = BTreeMap::new();
        let (msg_type, data) = match self {
            Self::Request { .. } => (REQUEST, None),
            Self::Reject { .. } => (REJECT, None),
            Self::Data {
                total_size, data, ..
            } => {
                // Sizes above i64::MAX cannot be bencoded; saturate rather than wrap.
                let size = i64::try_from(*total_size).unwrap_or(i64::MAX);
                dict.insert(b"total_size".to_vec(), Value::Int(size));
                (DATA, Some(data))
            }
        };
        dict.insert(b"msg_type".to_vec(), Value::Int(msg_type));
        dict.insert(b"piece".to_vec(), Value::Int(i64::from(self.piece())));
        Value::Dict(dict).encode(dst);
        if let Some(data) = data {
            dst.put_slice(data);
        }
    }

    /// The encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_to(&mut out);
        out
    }

    /// The peer-wire message carrying this one, sent with the id the *peer* advertised for
    /// [`EXTENSION_NAME`].
    pub fn to_message(&self, peer_id: u8) -> Message {
        Message::Extended {
            id: peer_id,
            payload: self.encode().into(),
        }
    }
}

/// A required integer field that fits `T`.
fn field<T: TryFrom<i64>>(
    dict: &BTreeMap<Vec<u8>, Value>,
    key: &'static str,
) -> Result<T, MetadataError> {
    let value = dict
        .get(key.as_bytes())
        .ok_or(MetadataError::MissingField { key })?;
    value
        .as_int()
        .and_then(|n| T::try_from(n).ok())
        .ok_or(MetadataError::InvalidField { key })
}

/// How many pieces metadata of `size` bytes has.
pub fn piece_count(size: u64) -> u32 {
    u32::try_from(size.div_ceil(PIECE_LEN as u64)).unwrap_or(u32::MAX)
}

/// The answer to a request for `piece` of `metadata`: its data, or a reject if there is no
/// such piece.
///
/// ```
/// use paid_wire::metadata::{MetadataMessage, serve};
/// let info = b"d4:name1:xe";
/// assert!(matches!(serve(info, 0), MetadataMessage::Data { total_size: 11, .. }));
/// assert_eq!(serve(info, 1), MetadataMessage::Reject { piece: 1 });
/// ```
pub fn serve(metadata: &[u8], piece: u32) -> MetadataMessage {
    let start = usize::try_from(piece)
        .ok()
        .and_then(|p| p.checked_mul(PIECE_LEN))
        .filter(|&s| s < metadata.len());
    match start {
        Some(start) => MetadataMessage::Data {
            piece,
            total_size: metadata.len() as u64,
            data: Bytes::copy_from_slice(&metadata[start..metadata.len().min(start + PIECE_LEN)]),
        },
        None => MetadataMessage::Reject { piece },
    }
}

/// Where a [`MetadataDownload`] stands after a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// More pieces are needed.
    Pending,
    /// Every piece arrived: the metadata (check its SHA-1 against the info-hash).
    Complete(Vec<u8>),
    /// The peer will not give this piece: ask another peer.
    Rejected(u32),
}

/// Downloading one peer's metadata: which pieces to request, and their assembly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataDownload {
    size: u64,
    buf: Vec<u8>,
    received: Vec<bool>,
    next: u32,
}

impl MetadataDownload {
    /// Starts downloading metadata of `size` bytes (the peer's `metadata_size`); fails if it
    /// is 0 or above [`MAX_METADATA_SIZE`].
    pub fn new(size: u64) -> Result<Self, MetadataError> {
        if size == 0 || size > MAX_METADATA_SIZE {
            return Err(MetadataError::SizeOutOfRange { size });
        }
        let count = piece_count(size) as usize;
        Ok(Self {
            size,
            buf: vec![0; size as usize],
            received: vec![false; count],
            next: 0,
        })
    }

    /// The metadata size.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// How many pieces the metadata has.
    pub fn piece_count(&self) -> u32 {
        self.received.len() as u32
    }

    /// The next request to send, until every piece was asked for once.
    pub fn next_request(&mut self) -> Option<MetadataMessage> {
        while (self.next as usize) < self.received.len() {
            let piece = self.next;
            self.next += 1;
            if !self.received[piece as usize] {
                return Some(MetadataMessage::Request { piece });
            }
        }
        None
    }

    /// Takes the peer's answer. A `Data` must be a piece of this metadata, with this
    /// `total_size` and the piece's exact length; a `Request` is not an answer (serve it with
    /// [`serve`]) and changes nothing.
    pub fn handle(&mut self, msg: MetadataMessage) -> Result<Progress, MetadataError> {
        let (piece, total_size, data) = match msg {
            MetadataMessage::Data {
                piece,
                total_size,
                data,
            } => (piece, total_size, data),
            MetadataMessage::Reject { piece } => return Ok(Progress::Rejected(piece)),
            MetadataMessage::Request { .. } => return Ok(Progress::Pending),
        };
        let count = self.piece_count();
        if piece >= count {
            return Err(MetadataError::PieceOutOfRange { piece, count });
        }
        if total_size != self.size {
            return Err(MetadataError::TotalSizeMismatch {
                expected: self.size,
                got: total_size,
            });
        }
        let start = piece as usize * PIECE_LEN;
        let end = self.buf.len().min(start + PIECE_LEN);
        if data.len() != end - start {
            return Err(MetadataError::PieceLength {
                piece,
                expected: end - start,
                got: data.len(),
            });
        }
        self.buf[start..end].copy_from_slice(&data);
        self.received[piece as usize] = true;
        if self.received.iter().all(|&r| r) {
            Ok(Progress::Complete(self.buf.clone()))
        } else {
            Ok(Progress::Pending)
        }
    }

    /// Forgets every piece (after the assembled metadata did not match the info-hash), so
    /// that [`next_request`](Self::next_request) asks for all of them again.
    pub fn reset(&mut self) {
        self.received.fill(false);
        self.next = 0;
    }
}
