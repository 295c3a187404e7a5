//! Paid-streaming notices as the coordinator sees them, and their wire form.
//!
//! Byte-compatible with web3torrent (`{command, data, msg_type: 0}`, sorted keys), plus the
//! `prompt` command (data `{amount: "<wei, decimal>", bytes: <int>}`) for the low-watermark
//! pay-ahead prompt: web3torrent peers ack and ignore commands they do not know.

use std::collections::BTreeMap;

use paid_wire::choke::ChannelId;

/// Largest notice payload accepted or sent (rqbit drops extension messages above ~16 KiB).
pub(crate) const MAX_NOTICE_LEN: usize = 16 * 1024;

/// The command string of the pay-ahead prompt.
pub(crate) const PROMPT: &str = "prompt";

/// One paid-streaming notice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Notice {
    Stop(Option<ChannelId>),
    Start,
    PermanentStop(Option<ChannelId>),
    Ack,
    Message(String),
    Prompt { bytes: u64, amount: u128 },
    Unknown(String),
}

impl Notice {
    pub(crate) fn command(&self) -> &str {
        match self {
            Self::Stop(_) => "stop",
            Self::Start => "start",
            Self::PermanentStop(_) => "permanent-stop",
            Self::Ack => "ack",
            Self::Message(_) => "message",
            Self::Prompt { .. } => PROMPT,
            Self::Unknown(c) => c,
        }
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        out.push(b'd');
        put_str(&mut out, b"command");
        put_str(&mut out, self.command().as_bytes());
        put_str(&mut out, b"data");
        match self {
            Self::Stop(Some(id)) | Self::PermanentStop(Some(id)) => {
                put_str(&mut out, &channel_hex(id));
            }
            Self::Message(json) => {
                out.push(b'd');
                put_str(&mut out, b"message");
                put_str(&mut out, json.as_bytes());
                out.push(b'e');
            }
            Self::Prompt { bytes, amount } => {
                out.push(b'd');
                put_str(&mut out, b"amount");
                put_str(&mut out, amount.to_string().as_bytes());
                put_str(&mut out, b"bytes");
                out.extend_from_slice(format!("i{bytes}e").as_bytes());
                out.push(b'e');
            }
            _ => out.extend_from_slice(b"de"),
        }
        put_str(&mut out, b"msg_type");
        out.extend_from_slice(b"i0e");
        out.push(b'e');
        out
    }

    /// Decodes a payload; unknown commands become [`Notice::Unknown`].
    pub(crate) fn decode(payload: &[u8]) -> Result<Self, String> {
        if payload.len() > MAX_NOTICE_LEN {
            return Err(format!("{} bytes, above {MAX_NOTICE_LEN}", payload.len()));
        }
        let mut parser = Parser {
            input: payload,
            pos: 0,
            depth: 0,
        };
        let value = parser.value()?;
        if parser.pos != payload.len() {
            return Err("trailing bytes".into());
        }
        let Value::Dict(dict) = value else {
            return Err("not a dictionary".into());
        };
        let command = match dict.get(b"command".as_slice()) {
            Some(Value::Bytes(c)) => {
                String::from_utf8(c.clone()).map_err(|_| "command not UTF-8")?
            }
            _ => return Err("no command".into()),
        };
        let data = dict.get(b"data".as_slice());
        let channel = || -> Result<Option<ChannelId>, String> {
            match data {
                None => Ok(None),
                Some(Value::Dict(d)) if d.is_empty() => Ok(None),
                Some(Value::Bytes(hex)) => parse_channel_hex(hex)
                    .map(Some)
                    .ok_or_else(|| "bad channel id".to_string()),
                Some(_) => Err("bad channel id".into()),
            }
        };
        Ok(match command.as_str() {
            "stop" => Self::Stop(channel()?),
            "start" => Self::Start,
            "permanent-stop" => Self::PermanentStop(channel()?),
            "ack" => Self::Ack,
            "message" => match data {
                Some(Value::Dict(d)) => match d.get(b"message".as_slice()) {
                    Some(Value::Bytes(m)) => Self::Message(
                        String::from_utf8(m.clone()).map_err(|_| "message not UTF-8")?,
                    ),
                    _ => return Err("message without data.message".into()),
                },
                _ => return Err("message without data".into()),
            },
            PROMPT => {
                let Some(Value::Dict(d)) = data else {
                    return Err("prompt without data".into());
                };
                let bytes = match d.get(b"bytes".as_slice()) {
                    Some(Value::Int(b)) => u64::try_from(*b).map_err(|_| "negative bytes")?,
                    _ => 0,
                };
                let amount = match d.get(b"amount".as_slice()) {
                    Some(Value::Bytes(a)) => std::str::from_utf8(a)
                        .ok()
                        .and_then(|a| a.parse::<u128>().ok())
                        .ok_or("bad amount")?,
                    Some(Value::Int(a)) => u128::try_from(*a).map_err(|_| "negative amount")?,
                    _ => 0,
                };
                Self::Prompt { bytes, amount }
            }
            _ => Self::Unknown(command),
        })
    }
}

fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(s.len().to_string().as_bytes());
    out.push(b':');
    out.extend_from_slice(s);
}

fn channel_hex(id: &ChannelId) -> Vec<u8> {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = Vec::with_capacity(66);
    out.extend_from_slice(b"0x");
    for b in id {
        out.push(DIGITS[usize::from(b >> 4)]);
        out.push(DIGITS[usize::from(b & 0x0f)]);
    }
    out
}

fn parse_channel_hex(hex: &[u8]) -> Option<ChannelId> {
    let digits = hex.strip_prefix(b"0x")?;
    if digits.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        let hi = char::from(pair[0]).to_digit(16)?;
        let lo = char::from(pair[1]).to_digit(16)?;
        *byte = u8::try_from(hi * 16 + lo).ok()?;
    }
    Some(out)
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Value {
    Int(i64),
    Bytes(Vec<u8>),
    List(Vec<Value>),
    Dict(BTreeMap<Vec<u8>, Value>),
}

struct Parser<'a> {
    input: &'a [u8],
    pos: usize,
    depth: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Result<u8, String> {
        self.input
            .get(self.pos)
            .copied()
            .ok_or_else(|| "unexpected end".to_string())
    }

    fn value(&mut self) -> Result<Value, String> {
        match self.peek()? {
            b'i' => {
                self.pos += 1;
                let n = self.until(b'e')?;
                let n = std::str::from_utf8(n)
                    .ok()
                    .and_then(|s| s.parse::<i64>().ok())
                    .ok_or("bad integer")?;
                Ok(Value::Int(n))
            }
            b'0'..=b'9' => Ok(Value::Bytes(self.bytes()?.to_vec())),
            c @ (b'l' | b'd') => {
                self.depth += 1;
                if self.depth > 4 {
                    return Err("nested too deeply".into());
                }
                self.pos += 1;
                let mut list = Vec::new();
                let mut dict = BTreeMap::new();
                while self.peek()? != b'e' {
                    if c == b'l' {
                        list.push(self.value()?);
                    } else {
                        let key = self.bytes()?.to_vec();
                        let value = self.value()?;
                        if dict.insert(key, value).is_some() {
                            return Err("duplicate key".into());
                        }
                    }
                }
                self.pos += 1;
                self.depth -= 1;
                Ok(if c == b'l' {
                    Value::List(list)
                } else {
                    Value::Dict(dict)
                })
            }
            _ => Err("unexpected byte".into()),
        }
    }

    fn until(&mut self, end: u8) -> Result<&[u8], String> {
        let rest = &self.input[self.pos..];
        let len = rest.iter().position(|&b| b == end).ok_or("unterminated")?;
        self.pos += len + 1;
        Ok(&rest[..len])
    }

    fn bytes(&mut self) -> Result<&[u8], String> {
        let len = self.until(b':')?;
        let len = std::str::from_utf8(len)
            .ok()
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse::<usize>().ok())
            .ok_or("bad length")?;
        let end = self.pos.checked_add(len).ok_or("bad length")?;
        let out = self.input.get(self.pos..end).ok_or("string past end")?;
        self.pos = end;
        Ok(out)
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
        ] {
            assert!(Notice::decode(bad).is_err(), "{bad:?}");
        }
    }
}
