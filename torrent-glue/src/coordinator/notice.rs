//! Paid-streaming notices as the coordinator sees them, mapped onto [`paid_wire::pse`].
//!
//! Byte-compatible with web3torrent (`{command, data, msg_type: 0}`, sorted keys), plus the
//! `prompt` command (data `{amount: "<wei, decimal>", bytes: <int>}`) for the low-watermark
//! pay-ahead prompt: web3torrent peers ack and ignore commands they do not know, and
//! [`PseMessage`] keeps it as [`PseMessage::Unknown`].

use std::collections::BTreeMap;

use paid_wire::bencode::Value;
use paid_wire::choke::ChannelId;
use paid_wire::pse::{self, PseMessage};

/// Largest notice payload accepted or sent (rqbit drops extension messages above ~16 KiB).
pub(crate) const MAX_NOTICE_LEN: usize = pse::MAX_PSE_LEN;

/// The command string of the pay-ahead prompt.
pub(crate) const PROMPT: &str = "prompt";

/// The command string of an identity challenge ([`crate::identity`]).
pub(crate) const AUTH_CHALLENGE: &str = "auth-challenge";

/// The command string of an identity proof ([`crate::identity`]).
pub(crate) const AUTH_PROOF: &str = "auth-proof";

/// One paid-streaming notice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Notice {
    Stop(Option<ChannelId>),
    Start,
    PermanentStop(Option<ChannelId>),
    Ack,
    Message(String),
    Prompt {
        bytes: u64,
        amount: u128,
    },
    /// `auth-challenge {nonce}`.
    AuthChallenge([u8; 32]),
    /// `auth-proof {signature}` (`r ‖ s ‖ v`).
    AuthProof([u8; 65]),
    Unknown(String),
}

fn hex_value(bytes: &[u8]) -> Value {
    let mut out = Vec::with_capacity(2 + bytes.len() * 2);
    out.extend_from_slice(b"0x");
    for b in bytes {
        out.extend_from_slice(format!("{b:02x}").as_bytes());
    }
    Value::Bytes(out)
}

fn from_hex<const N: usize>(value: Option<Value>) -> Option<[u8; N]> {
    let Value::Bytes(text) = value? else {
        return None;
    };
    let digits = text.strip_prefix(b"0x")?;
    if digits.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        let pair = std::str::from_utf8(pair).ok()?;
        *byte = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(out)
}

impl Notice {
    fn to_pse(&self) -> PseMessage {
        match self {
            Self::Stop(id) => PseMessage::Stop {
                channel_id: id.map(pse::ChannelId),
            },
            Self::Start => PseMessage::Start,
            Self::PermanentStop(id) => PseMessage::PermanentStop {
                channel_id: id.map(pse::ChannelId),
            },
            Self::Ack => PseMessage::Ack,
            Self::Message(message) => PseMessage::Message {
                message: message.clone(),
            },
            Self::Prompt { bytes, amount } => {
                let mut data = BTreeMap::new();
                data.insert(
                    b"amount".to_vec(),
                    Value::Bytes(amount.to_string().into_bytes()),
                );
                data.insert(
                    b"bytes".to_vec(),
                    Value::Int(i64::try_from(*bytes).unwrap_or(i64::MAX)),
                );
                PseMessage::Unknown {
                    command: PROMPT.into(),
                    data: Some(Value::Dict(data)),
                }
            }
            Self::AuthChallenge(nonce) => PseMessage::Unknown {
                command: AUTH_CHALLENGE.into(),
                data: Some(Value::Dict(BTreeMap::from([(
                    b"nonce".to_vec(),
                    hex_value(nonce),
                )]))),
            },
            Self::AuthProof(signature) => PseMessage::Unknown {
                command: AUTH_PROOF.into(),
                data: Some(Value::Dict(BTreeMap::from([(
                    b"signature".to_vec(),
                    hex_value(signature),
                )]))),
            },
            Self::Unknown(command) => PseMessage::Unknown {
                command: command.clone(),
                data: None,
            },
        }
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        self.to_pse().encode()
    }

    /// Decodes a payload; unknown commands become [`Notice::Unknown`].
    pub(crate) fn decode(payload: &[u8]) -> Result<Self, String> {
        let message = PseMessage::decode(payload).map_err(|e| e.to_string())?;
        Ok(match message {
            PseMessage::Stop { channel_id } => Self::Stop(channel_id.map(|c| c.0)),
            PseMessage::Start => Self::Start,
            PseMessage::PermanentStop { channel_id } => {
                Self::PermanentStop(channel_id.map(|c| c.0))
            }
            PseMessage::Ack => Self::Ack,
            PseMessage::Message { message } => Self::Message(message),
            PseMessage::Unknown { command, data } if command == PROMPT => {
                let field = |key: &[u8]| data.as_ref()?.as_dict()?.get(key).cloned();
                let bytes = field(b"bytes")
                    .and_then(|v| v.as_int())
                    .and_then(|b| u64::try_from(b).ok())
                    .unwrap_or(0);
                let amount = match field(b"amount") {
                    Some(Value::Bytes(a)) => std::str::from_utf8(&a)
                        .ok()
                        .and_then(|a| a.parse::<u128>().ok())
                        .unwrap_or(0),
                    Some(Value::Int(a)) => u128::try_from(a).unwrap_or(0),
                    _ => 0,
                };
                Self::Prompt { bytes, amount }
            }
            PseMessage::Unknown { command, data } if command == AUTH_CHALLENGE => {
                let field = data.and_then(|d| match d {
                    Value::Dict(mut d) => d.remove(b"nonce".as_slice()),
                    _ => None,
                });
                Self::AuthChallenge(from_hex(field).ok_or("invalid auth-challenge nonce")?)
            }
            PseMessage::Unknown { command, data } if command == AUTH_PROOF => {
                let field = data.and_then(|d| match d {
                    Value::Dict(mut d) => d.remove(b"signature".as_slice()),
                    _ => None,
                });
                Self::AuthProof(from_hex(field).ok_or("invalid auth-proof signature")?)
            }
            PseMessage::Unknown { command, .. } => Self::Unknown(command),
            _ => return Err("unsupported paid-streaming message".into()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn web3torrent_bytes() {
        assert_eq!(
            Notice::Start.encode(),
            b"d7:command5:start4:datade8:msg_typei0ee"
        );
        assert_eq!(
            Notice::Ack.encode(),
            b"d7:command3:ack4:datade8:msg_typei0ee"
        );
        let stop = Notice::Stop(Some([0xab; 32])).encode();
        assert!(stop.starts_with(b"d7:command4:stop4:data66:0xabab"));
        assert!(stop.ends_with(b"8:msg_typei0ee"));
        assert_eq!(
            Notice::Message("{}".into()).encode(),
            b"d7:command7:message4:datad7:message2:{}e8:msg_typei0ee"
        );
    }

    #[test]
    fn round_trips() {
        for n in [
            Notice::Stop(Some([1; 32])),
            Notice::Stop(None),
            Notice::PermanentStop(Some([2; 32])),
            Notice::Start,
            Notice::Ack,
            Notice::Message("{\"recipient\":\"0x1\"}".into()),
            Notice::Prompt {
                bytes: 65536,
                amount: u128::MAX,
            },
            Notice::AuthChallenge([0xa5; 32]),
            Notice::AuthProof([0x5a; 65]),
            Notice::Unknown("frobnicate".into()),
        ] {
            assert_eq!(Notice::decode(&n.encode()), Ok(n));
        }
    }

    #[test]
    fn tolerant_where_web3torrent_is() {
        // Missing data (channel id was null), upper-case hex.
        assert_eq!(
            Notice::decode(b"d7:command4:stop8:msg_typei0ee"),
            Ok(Notice::Stop(None))
        );
        let mut upper = b"d7:command4:stop4:data66:0x".to_vec();
        upper.extend_from_slice(&[b'A'; 64]);
        upper.extend_from_slice(b"e");
        assert_eq!(Notice::decode(&upper), Ok(Notice::Stop(Some([0xaa; 32]))));
    }

    #[test]
    fn rejects_garbage_without_panicking() {
        for bad in [
            &b""[..],
            b"d",
            b"de",
            b"le",
            b"i1e",
            b"d7:command4:stop4:data3:0x1e",
            b"d7:command7:message4:datadee",
            b"d7:command5:start4:datade8:msg_typei0eeX",
            b"d7:commandi1ee",
            b"d99999999999999999999:x",
            b"dddddddddddd",
            b"d7:command14:auth-challenge4:datad5:nonce4:0x12ee",
            b"d7:command10:auth-proof4:datadee",
            b"d7:command10:auth-proof4:datai1ee",
        ] {
            assert!(Notice::decode(bad).is_err(), "{bad:?}");
        }
    }
}
