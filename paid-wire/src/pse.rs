//! The paid-streaming extension (PSE), byte-compatible with statechannels' web3torrent.
//!
//! The extension is negotiated under the BEP 10 name [`EXTENSION_NAME`]; the handshake also
//! carries the keys `pseAccount` and `outcomeAddress` (see
//! [`ExtendedHandshake::pse_account`](crate::extended::ExtendedHandshake::pse_account)).
//! Never send a PSE message to a peer that did not advertise the name.
//!
//! Each message is the bencoded dictionary `{command, data, msg_type: 0}` with sorted keys:
//!
//! | [`PseMessage`] | bytes |
//! |---|---|
//! | `Stop { channel_id: Some(id) }` | `d7:command4:stop4:data66:0x<64 hex>8:msg_typei0ee` |
//! | `Start` | `d7:command5:start4:datade8:msg_typei0ee` |
//! | `PermanentStop { channel_id: Some(id) }` | `d7:command14:permanent-stop4:data66:0x<64 hex>8:msg_typei0ee` |
//! | `Stop`/`PermanentStop { channel_id: None }` | `…4:datade…` (web3torrent's `data = {}` default) |
//! | `Ack` | `d7:command3:ack4:datade8:msg_typei0ee` |
//! | `Message { message }` | `d7:command7:message4:datad7:message<N>:<json>ee8:msg_typei0ee` |
//!
//! Three commands are this crate's own (web3torrent acks and ignores commands it does not know):
//!
//! | [`PseMessage`] | `data` |
//! |---|---|
//! | `Prompt { bytes, amount }` | `d6:amount<N>:<wei, decimal>5:bytesi<bytes>ee` |
//! | `AuthChallenge { nonce }` | `d5:nonce66:0x<64 hex>e` |
//! | `AuthProof { signature }` | `d9:signature132:0x<130 hex>e` |
//!
//! Decoding is tolerant where web3torrent is: `msg_type` and unknown keys are ignored, a
//! missing `data` is accepted (web3torrent omits it when the channel id is `null`; it decodes
//! as `channel_id: None`), the `data` of `start`/`ack` is ignored, channel-id hex digits may be
//! upper case, and unknown commands become [`PseMessage::Unknown`]. It is strict elsewhere: the
//! payload must be one bencoded dictionary of at most [`MAX_PSE_LEN`] bytes (nesting depth 4,
//! no trailing bytes, no duplicate keys; unsorted keys are accepted as everywhere in this
//! crate), `command` must be a UTF-8 string, a `stop`/`permanent-stop` `data` must be `{}` or
//! `0x` + 64 hex digits, and `message` data must hold a UTF-8 string under `message`. A payload
//! whose canonical re-encoding (which adds `msg_type` and `data` if missing) would exceed the
//! bounds is rejected too, so every decoded message can be re-encoded and decoded again.
//!
//! Encoding is canonical, so `decode(encode(m)) == m`, and for every input that decodes,
//! re-encoding the result is a fixed point.
//!
//! # Example
//!
//! ```
//! use paid_wire::pse::{ChannelId, PseMessage};
//!
//! let start = PseMessage::Start.encode();
//! assert_eq!(start, b"d7:command5:start4:datade8:msg_typei0ee");
//!
//! let id: ChannelId = "0x00000000000000000000000000000000000000000000000000000000000000ff"
//!     .parse()
//!     .unwrap();
//! let stop = PseMessage::Stop { channel_id: Some(id) };
//! let bytes = stop.encode();
//! assert!(bytes.starts_with(b"d7:command4:stop4:data66:0x0000"));
//! assert_eq!(PseMessage::decode(&bytes), Ok(stop));
//!
//! // Sent inside a BEP 10 extended message, with the id the *peer* advertised:
//! let frame = PseMessage::Ack.to_message(2);
//! # let _ = frame;
//! ```

use std::fmt;
use std::str::FromStr;

use bytes::{BufMut, Bytes};

use crate::bencode::{Limits, Value, put_bytes, uint_len};
use crate::error::{BencodeError, PseError};
use crate::message::Message;

/// The BEP 10 extension name.
pub const EXTENSION_NAME: &str = "paidStreamingExtension";

/// Largest accepted PSE payload.
pub const MAX_PSE_LEN: usize = 16 * 1024;

/// Bounds for decoding a PSE payload.
pub const PSE_LIMITS: Limits = Limits {
    max_len: MAX_PSE_LEN,
    max_depth: 4,
    max_items: 256,
};

/// Command strings.
pub mod command {
    /// Seeder → leecher: requests are blocked until paid; data is the channel id.
    pub const STOP: &str = "stop";
    /// Seeder → leecher: requests are served again.
    pub const START: &str = "start";
    /// Seeder → leecher: no more data will be served; data is the channel id.
    pub const PERMANENT_STOP: &str = "permanent-stop";
    /// Either way: acknowledges any other accepted command.
    pub const ACK: &str = "ack";
    /// Either way: a tunnelled payment-channel message (JSON).
    pub const MESSAGE: &str = "message";
    /// Seeder → leecher: credit is running low, pay ahead (this crate's extension).
    pub const PROMPT: &str = "prompt";
    /// Either way: prove your account by signing this nonce (this crate's extension).
    pub const AUTH_CHALLENGE: &str = "auth-challenge";
    /// Either way: the signature answering an `auth-challenge` (this crate's extension).
    pub const AUTH_PROOF: &str = "auth-proof";
}

/// A 32-byte state-channel id, written on the wire as `0x` + 64 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct ChannelId(pub [u8; 32]);

impl ChannelId {
    /// Length of the hex form, `0x` included.
    pub const HEX_LEN: usize = 66;

    /// Parses `0x` + 64 hex digits (either case).
    pub fn from_hex(hex: &[u8]) -> Option<Self> {
        from_hex_array(hex).map(Self)
    }

    /// `0x` + 64 lower-case hex digits.
    pub fn to_hex(&self) -> [u8; Self::HEX_LEN] {
        let mut out = [0u8; Self::HEX_LEN];
        write_hex(&mut out, &self.0);
        out
    }
}

/// Writes `0x` + the lower-case hex digits of `bytes` into `dst` (`2 + 2 * bytes.len()` long).
fn write_hex(dst: &mut [u8], bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    dst[0] = b'0';
    dst[1] = b'x';
    for (pair, byte) in dst[2..].chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(byte >> 4)];
        pair[1] = DIGITS[usize::from(byte & 0x0f)];
    }
}

/// `0x` + the lower-case hex digits of `bytes`.
fn to_hex_vec(bytes: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; 2 + 2 * bytes.len()];
    write_hex(&mut out, bytes);
    out
}

/// Parses `0x` + exactly `2 * N` hex digits (either case).
fn from_hex_array<const N: usize>(hex: &[u8]) -> Option<[u8; N]> {
    let digits = hex.strip_prefix(b"0x")?;
    if digits.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        let (hi, lo) = (hex_val(pair[0])?, hex_val(pair[1])?);
        *byte = (hi << 4) | lo;
    }
    Some(out)
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

impl AsRef<[u8]> for ChannelId {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl From<[u8; 32]> for ChannelId {
    fn from(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }
}

impl fmt::Display for ChannelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The hex form is ASCII by construction.
        f.write_str(std::str::from_utf8(&self.to_hex()).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for ChannelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChannelId({self})")
    }
}

/// The string is not `0x` + 64 hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a 0x-prefixed 32-byte hex channel id")]
pub struct ParseChannelIdError;

impl FromStr for ChannelId {
    type Err = ParseChannelIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_hex(s.as_bytes()).ok_or(ParseChannelIdError)
    }
}

/// One paid-streaming extension message.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PseMessage {
    /// `stop`: the sender blocks the receiver's requests until it is paid.
    Stop {
        /// The channel the receiver should pay on (web3torrent's `seedingChannelId`); `None`
        /// when there is none yet (encoded as `{}`).
        channel_id: Option<ChannelId>,
    },
    /// `start`: requests are served again.
    Start,
    /// `permanent-stop`: no more data will be served.
    PermanentStop {
        /// The channel, if any (encoded as `{}` when `None`).
        channel_id: Option<ChannelId>,
    },
    /// `ack`.
    Ack,
    /// `message`: a tunnelled payment-channel message.
    Message {
        /// The JSON text (not parsed here).
        message: String,
    },
    /// `prompt` (this crate's extension; web3torrent acks and ignores it): the seeder's credit
    /// for the receiver is running low, pay ahead. Data `{amount: "<wei, decimal>", bytes:
    /// <int>}`. Decoding is lenient like web3torrent: a missing or malformed field reads as 0
    /// (`amount` may also be an integer). `bytes` above `i64::MAX` is encoded as `i64::MAX`.
    Prompt {
        /// The bytes the seeder suggests paying for.
        bytes: u64,
        /// Their price in wei.
        amount: u128,
    },
    /// `auth-challenge` (this crate's extension): prove your account by signing `nonce`. Data
    /// `{nonce: "0x" + 64 hex digits}`.
    AuthChallenge {
        /// The nonce to sign.
        nonce: [u8; 32],
    },
    /// `auth-proof` (this crate's extension): the answer to an `auth-challenge`. Data
    /// `{signature: "0x" + 130 hex digits}` (`r ‖ s ‖ v`).
    AuthProof {
        /// The signature, `r ‖ s ‖ v`.
        signature: [u8; 65],
    },
    /// A command this crate does not know, kept as received. `command` is never one of the
    /// known commands.
    Unknown {
        /// The command string.
        command: String,
        /// The `data` value, if present.
        data: Option<Value>,
    },
}

impl PseMessage {
    /// The command string.
    pub fn command(&self) -> &str {
        match self {
            Self::Stop { .. } => command::STOP,
            Self::Start => command::START,
            Self::PermanentStop { .. } => command::PERMANENT_STOP,
            Self::Ack => command::ACK,
            Self::Message { .. } => command::MESSAGE,
            Self::Prompt { .. } => command::PROMPT,
            Self::AuthChallenge { .. } => command::AUTH_CHALLENGE,
            Self::AuthProof { .. } => command::AUTH_PROOF,
            Self::Unknown { command, .. } => command,
        }
    }

    /// The `data` of the commands this crate added (`prompt`, `auth-*`), as a bencode value.
    fn extension_data(&self) -> Option<Value> {
        let dict = |key: &[u8], value: Value| Value::Dict([(key.to_vec(), value)].into());
        match self {
            Self::Prompt { bytes, amount } => Some(Value::Dict(
                [
                    (
                        b"amount".to_vec(),
                        Value::Bytes(amount.to_string().into_bytes()),
                    ),
                    (
                        b"bytes".to_vec(),
                        Value::Int(i64::try_from(*bytes).unwrap_or(i64::MAX)),
                    ),
                ]
                .into(),
            )),
            Self::AuthChallenge { nonce } => Some(dict(b"nonce", Value::Bytes(to_hex_vec(nonce)))),
            Self::AuthProof { signature } => {
                Some(dict(b"signature", Value::Bytes(to_hex_vec(signature))))
            }
            Self::Unknown { data, .. } => data.clone(),
            _ => None,
        }
    }

    /// Encoded length in bytes.
    pub fn encoded_len(&self) -> usize {
        // d 7:command <cmd> [4:data <data>] 8:msg_type i0e e
        const FIXED: usize = 1 + 9 + 10 + 3 + 1;
        const DATA_KEY: usize = 6;
        const EMPTY_DICT: usize = 2;
        let command = self.command().len();
        let data = match self {
            Self::Stop { channel_id } | Self::PermanentStop { channel_id } => {
                DATA_KEY
                    + match channel_id {
                        Some(_) => 3 + ChannelId::HEX_LEN,
                        None => EMPTY_DICT,
                    }
            }
            Self::Start | Self::Ack => DATA_KEY + EMPTY_DICT,
            Self::Message { message } => {
                // d 7:message <len>:<json> e
                DATA_KEY + 1 + 9 + uint_len(message.len() as u64) + 1 + message.len() + 1
            }
            Self::Prompt { .. }
            | Self::AuthChallenge { .. }
            | Self::AuthProof { .. }
            | Self::Unknown { .. } => self
                .extension_data()
                .map_or(0, |d| DATA_KEY + d.encoded_len()),
        };
        FIXED + uint_len(command as u64) + 1 + command + data
    }

    /// Appends the encoding to `dst`.
    pub fn encode_to<B: BufMut>(&self, dst: &mut B) {
        dst.put_u8(b'd');
        put_bytes(dst, b"command");
        put_bytes(dst, self.command().as_bytes());
        let data_key = |dst: &mut B| put_bytes(dst, b"data");
        match self {
            Self::Stop { channel_id } | Self::PermanentStop { channel_id } => {
                data_key(dst);
                match channel_id {
                    Some(id) => put_bytes(dst, &id.to_hex()),
                    None => dst.put_slice(b"de"),
                }
            }
            Self::Start | Self::Ack => {
                data_key(dst);
                dst.put_slice(b"de");
            }
            Self::Message { message } => {
                data_key(dst);
                dst.put_u8(b'd');
                put_bytes(dst, b"message");
                put_bytes(dst, message.as_bytes());
                dst.put_u8(b'e');
            }
            Self::Prompt { .. }
            | Self::AuthChallenge { .. }
            | Self::AuthProof { .. }
            | Self::Unknown { .. } => {
                if let Some(data) = self.extension_data() {
                    data_key(dst);
                    data.encode(dst);
                }
            }
        }
        dst.put_slice(b"8:msg_typei0ee");
    }

    /// The encoding, byte-identical to web3torrent's.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode_to(&mut out);
        out
    }

    /// The peer-wire message carrying this PSE message, sent with the extended id the **peer**
    /// advertised for [`EXTENSION_NAME`]
    /// (see [`ExtensionIds::peer_id`](crate::extended::ExtensionIds::peer_id)).
    pub fn to_message(&self, peer_ext_id: u8) -> Message {
        Message::Extended {
            id: peer_ext_id,
            payload: Bytes::from(self.encode()),
        }
    }

    /// Decodes a PSE payload (the bytes after `<20><ext id>`). See the module docs for the
    /// policy.
    pub fn decode(payload: &[u8]) -> Result<Self, PseError> {
        let Value::Dict(mut dict) = Value::decode(payload, &PSE_LIMITS)? else {
            return Err(PseError::NotADict);
        };
        let command = match dict.remove(&b"command"[..]) {
            None => return Err(PseError::MissingCommand),
            Some(Value::Bytes(c)) => String::from_utf8(c).map_err(|_| PseError::InvalidCommand)?,
            Some(_) => return Err(PseError::InvalidCommand),
        };
        let data = dict.remove(&b"data"[..]);
        let msg = match command.as_str() {
            command::STOP => Self::Stop {
                channel_id: channel_id(data, command::STOP)?,
            },
            command::PERMANENT_STOP => Self::PermanentStop {
                channel_id: channel_id(data, command::PERMANENT_STOP)?,
            },
            command::START => Self::Start,
            command::ACK => Self::Ack,
            command::MESSAGE => {
                let Some(Value::Dict(mut data)) = data else {
                    return Err(PseError::InvalidMessageData);
                };
                match data.remove(&b"message"[..]) {
                    Some(Value::Bytes(m)) => Self::Message {
                        message: String::from_utf8(m).map_err(|_| PseError::InvalidMessageData)?,
                    },
                    _ => return Err(PseError::InvalidMessageData),
                }
            }
            command::PROMPT => prompt(data.as_ref()),
            command::AUTH_CHALLENGE => Self::AuthChallenge {
                nonce: hex_field(data, b"nonce", command::AUTH_CHALLENGE)?,
            },
            command::AUTH_PROOF => Self::AuthProof {
                signature: hex_field(data, b"signature", command::AUTH_PROOF)?,
            },
            _ => Self::Unknown { command, data },
        };
        msg.check_reencoding()?;
        Ok(msg)
    }

    /// Encoding fills in `msg_type` (and `data: {}`), so an input at the bounds could re-encode
    /// beyond them; reject it, so that every decoded message re-encodes to a decodable one.
    fn check_reencoding(&self) -> Result<(), BencodeError> {
        let len = self.encoded_len();
        if len > PSE_LIMITS.max_len {
            return Err(BencodeError::TooLarge {
                len,
                max: PSE_LIMITS.max_len,
            });
        }
        // Top level: command, msg_type, and data when present.
        let items = match self {
            Self::Message { .. } => 4,
            Self::Prompt { .. }
            | Self::AuthChallenge { .. }
            | Self::AuthProof { .. }
            | Self::Unknown { .. } => self.extension_data().map_or(2, |d| 3 + d.item_count()),
            _ => 3,
        };
        if items > PSE_LIMITS.max_items {
            return Err(BencodeError::TooManyItems {
                max: PSE_LIMITS.max_items,
            });
        }
        Ok(())
    }
}

/// `prompt` data, read leniently: a missing or malformed field is 0.
fn prompt(data: Option<&Value>) -> PseMessage {
    let field = |key: &[u8]| data?.as_dict()?.get(key);
    let bytes = field(b"bytes")
        .and_then(Value::as_int)
        .and_then(|b| u64::try_from(b).ok())
        .unwrap_or(0);
    let amount = match field(b"amount") {
        Some(Value::Bytes(a)) => std::str::from_utf8(a)
            .ok()
            .and_then(|a| a.parse::<u128>().ok())
            .unwrap_or(0),
        Some(Value::Int(a)) => u128::try_from(*a).unwrap_or(0),
        _ => 0,
    };
    PseMessage::Prompt { bytes, amount }
}

/// The `0x` hex value under `key` in a dictionary `data`, exactly `N` bytes long.
fn hex_field<const N: usize>(
    data: Option<Value>,
    key: &'static [u8],
    command: &'static str,
) -> Result<[u8; N], PseError> {
    let hex = match data {
        Some(Value::Dict(mut d)) => d.remove(key),
        _ => None,
    };
    match hex {
        Some(Value::Bytes(hex)) => from_hex_array(&hex),
        _ => None,
    }
    .ok_or(PseError::InvalidHexField { command })
}

fn channel_id(data: Option<Value>, command: &'static str) -> Result<Option<ChannelId>, PseError> {
    match data {
        None => Ok(None),
        Some(Value::Dict(d)) if d.is_empty() => Ok(None),
        Some(Value::Bytes(hex)) => ChannelId::from_hex(&hex)
            .map(Some)
            .ok_or(PseError::InvalidChannelId { command }),
        Some(_) => Err(PseError::InvalidChannelId { command }),
    }
}
