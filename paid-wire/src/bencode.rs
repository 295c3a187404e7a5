//! A small, bounded bencode value type shared by the BEP-10 extended handshake and the PSE.
//!
//! **Encoding** is canonical: dictionary keys are emitted in ascending raw-byte order (a
//! [`BTreeMap`] keeps them so), integers and lengths without leading zeros.
//!
//! **Decoding policy** for bytes from a peer:
//! - the input is bounded by [`Limits`]: total length, nesting depth, and the number of list
//!   items plus dictionary entries, all checked while parsing (nothing is allocated beyond what
//!   the bounded input describes, and recursion depth is bounded);
//! - **unsorted dictionary keys are accepted, duplicate keys are rejected**
//!   ([`BencodeError::DuplicateKey`]). BEP 3 requires sorted keys, and every client we know of
//!   sorts, but libtorrent, Transmission and anacrolix all accept unsorted dictionaries, so
//!   rejecting them would only cost interop. Duplicates are rejected because they make the
//!   meaning ambiguous (first wins or last wins differs between clients). A decoded value
//!   re-encodes in canonical (sorted) form;
//! - integers must be canonical (`i0e`, no leading zeros, no `-0`) and fit an `i64`; string
//!   lengths must be canonical and fit the input;
//! - bytes after the top-level value are rejected ([`BencodeError::TrailingBytes`]).
//!
//! This is a hand-written parser rather than `bendy`'s decoder because bendy rejects unsorted
//! keys with no opt-out and allocates a 2048-entry state stack per decoder; bendy serves as the
//! reference oracle in this crate's tests instead.

use std::collections::BTreeMap;

use bytes::BufMut;

use crate::error::BencodeError;

/// Bounds applied while decoding untrusted bencode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Maximum input length in bytes.
    pub max_len: usize,
    /// Maximum nesting of lists and dictionaries (the top-level dictionary counts as 1).
    pub max_depth: usize,
    /// Maximum number of list items plus dictionary entries, over the whole value.
    pub max_items: usize,
}

/// A bencode value.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Value {
    /// `i<n>e`.
    Int(i64),
    /// `<len>:<bytes>`.
    Bytes(Vec<u8>),
    /// `l<items>e`.
    List(Vec<Value>),
    /// `d<key><value>...e`, keys kept sorted.
    Dict(BTreeMap<Vec<u8>, Value>),
}

impl Value {
    /// Decodes exactly one value spanning all of `input`, within `limits`.
    pub fn decode(input: &[u8], limits: &Limits) -> Result<Self, BencodeError> {
        if input.len() > limits.max_len {
            return Err(BencodeError::TooLarge {
                len: input.len(),
                max: limits.max_len,
            });
        }
        let mut parser = Parser {
            input,
            pos: 0,
            items: 0,
            limits,
        };
        let value = parser.value(0)?;
        match input.len() - parser.pos {
            0 => Ok(value),
            count => Err(BencodeError::TrailingBytes { count }),
        }
    }

    /// Decodes one value at the start of `input` and returns it with the number of bytes it
    /// spans; what follows is the caller's (BEP 9 `ut_metadata` data messages carry the piece
    /// after their dictionary). The value itself must end within `limits.max_len` bytes, else
    /// [`BencodeError::TooLarge`] (with `len` the whole input's length).
    ///
    /// ```
    /// use paid_wire::bencode::{Limits, Value};
    /// let limits = Limits { max_len: 64, max_depth: 2, max_items: 8 };
    /// let (value, used) = Value::decode_prefix(b"d1:ai1eeRAW", &limits).unwrap();
    /// assert_eq!(used, 8);
    /// assert_eq!(value.to_vec(), b"d1:ai1ee");
    /// ```
    pub fn decode_prefix(input: &[u8], limits: &Limits) -> Result<(Self, usize), BencodeError> {
        let window = &input[..input.len().min(limits.max_len)];
        let mut parser = Parser {
            input: window,
            pos: 0,
            items: 0,
            limits,
        };
        match parser.value(0) {
            Ok(value) => Ok((value, parser.pos)),
            Err(BencodeError::UnexpectedEof) if input.len() > limits.max_len => {
                Err(BencodeError::TooLarge {
                    len: input.len(),
                    max: limits.max_len,
                })
            }
            Err(e) => Err(e),
        }
    }

    /// Appends the canonical encoding to `dst`.
    pub fn encode<B: BufMut>(&self, dst: &mut B) {
        match self {
            Self::Int(n) => {
                dst.put_u8(b'i');
                put_int(dst, *n);
                dst.put_u8(b'e');
            }
            Self::Bytes(bytes) => put_bytes(dst, bytes),
            Self::List(items) => {
                dst.put_u8(b'l');
                for item in items {
                    item.encode(dst);
                }
                dst.put_u8(b'e');
            }
            Self::Dict(entries) => {
                dst.put_u8(b'd');
                for (key, value) in entries {
                    put_bytes(dst, key);
                    value.encode(dst);
                }
                dst.put_u8(b'e');
            }
        }
    }

    /// Length of the canonical encoding.
    pub fn encoded_len(&self) -> usize {
        fn bytes_len(b: &[u8]) -> usize {
            uint_len(b.len() as u64) + 1 + b.len()
        }
        match self {
            Self::Int(n) => 2 + usize::from(*n < 0) + uint_len(n.unsigned_abs()),
            Self::Bytes(b) => bytes_len(b),
            Self::List(items) => 2 + items.iter().map(Self::encoded_len).sum::<usize>(),
            Self::Dict(entries) => {
                2 + entries
                    .iter()
                    .map(|(k, v)| bytes_len(k) + v.encoded_len())
                    .sum::<usize>()
            }
        }
    }

    /// Number of list items plus dictionary entries in this value and everything inside it
    /// (what [`Limits::max_items`] bounds).
    pub fn item_count(&self) -> usize {
        match self {
            Self::Int(_) | Self::Bytes(_) => 0,
            Self::List(items) => items.len() + items.iter().map(Self::item_count).sum::<usize>(),
            Self::Dict(entries) => {
                entries.len() + entries.values().map(Self::item_count).sum::<usize>()
            }
        }
    }

    /// Checks that the canonical encoding of this value is itself within `limits` (depth
    /// aside, which re-encoding never increases). A decoder that fills in defaults (such as
    /// a missing key) uses this so that everything it accepts can be re-encoded and decoded
    /// again.
    pub fn check_reencoding(&self, limits: &Limits) -> Result<(), BencodeError> {
        let len = self.encoded_len();
        if len > limits.max_len {
            return Err(BencodeError::TooLarge {
                len,
                max: limits.max_len,
            });
        }
        if self.item_count() > limits.max_items {
            return Err(BencodeError::TooManyItems {
                max: limits.max_items,
            });
        }
        Ok(())
    }

    /// The canonical encoding.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode(&mut out);
        out
    }

    /// The integer, if this is one.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Self::Int(n) => Some(*n),
            _ => None,
        }
    }

    /// The byte string, if this is one.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Self::Bytes(b) => Some(b),
            _ => None,
        }
    }

    /// The byte string as UTF-8, if this is a byte string holding valid UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        self.as_bytes().and_then(|b| std::str::from_utf8(b).ok())
    }

    /// The list, if this is one.
    pub fn as_list(&self) -> Option<&[Value]> {
        match self {
            Self::List(items) => Some(items),
            _ => None,
        }
    }

    /// The dictionary, if this is one.
    pub fn as_dict(&self) -> Option<&BTreeMap<Vec<u8>, Value>> {
        match self {
            Self::Dict(entries) => Some(entries),
            _ => None,
        }
    }
}

impl From<i64> for Value {
    fn from(n: i64) -> Self {
        Self::Int(n)
    }
}

impl From<&[u8]> for Value {
    fn from(bytes: &[u8]) -> Self {
        Self::Bytes(bytes.to_vec())
    }
}

impl From<Vec<u8>> for Value {
    fn from(bytes: Vec<u8>) -> Self {
        Self::Bytes(bytes)
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Self::Bytes(s.as_bytes().to_vec())
    }
}

/// Writes `<len>:<bytes>`.
pub(crate) fn put_bytes<B: BufMut>(dst: &mut B, bytes: &[u8]) {
    put_uint(dst, bytes.len() as u64);
    dst.put_u8(b':');
    dst.put_slice(bytes);
}

/// Writes a decimal integer.
pub(crate) fn put_int<B: BufMut>(dst: &mut B, n: i64) {
    if n < 0 {
        dst.put_u8(b'-');
    }
    put_uint(dst, n.unsigned_abs());
}

fn put_uint<B: BufMut>(dst: &mut B, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut start = buf.len();
    loop {
        start -= 1;
        buf[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    dst.put_slice(&buf[start..]);
}

/// Number of decimal digits of `n`.
pub(crate) fn uint_len(mut n: u64) -> usize {
    let mut len = 1;
    while n >= 10 {
        n /= 10;
        len += 1;
    }
    len
}

struct Parser<'a> {
    input: &'a [u8],
    pos: usize,
    items: usize,
    limits: &'a Limits,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Result<u8, BencodeError> {
        self.input
            .get(self.pos)
            .copied()
            .ok_or(BencodeError::UnexpectedEof)
    }

    fn count_item(&mut self) -> Result<(), BencodeError> {
        self.items += 1;
        if self.items > self.limits.max_items {
            return Err(BencodeError::TooManyItems {
                max: self.limits.max_items,
            });
        }
        Ok(())
    }

    fn enter(&mut self, depth: usize) -> Result<usize, BencodeError> {
        let depth = depth + 1;
        if depth > self.limits.max_depth {
            return Err(BencodeError::TooDeep {
                max: self.limits.max_depth,
            });
        }
        self.pos += 1;
        Ok(depth)
    }

    fn value(&mut self, depth: usize) -> Result<Value, BencodeError> {
        match self.peek()? {
            b'i' => {
                self.pos += 1;
                let n = self.int(b'e')?;
                Ok(Value::Int(n))
            }
            b'0'..=b'9' => Ok(Value::Bytes(self.bytes()?.to_vec())),
            b'l' => {
                let depth = self.enter(depth)?;
                let mut items = Vec::new();
                while self.peek()? != b'e' {
                    self.count_item()?;
                    items.push(self.value(depth)?);
                }
                self.pos += 1;
                Ok(Value::List(items))
            }
            b'd' => {
                let depth = self.enter(depth)?;
                let mut entries = BTreeMap::new();
                loop {
                    let offset = self.pos;
                    match self.peek()? {
                        b'e' => break,
                        b'0'..=b'9' => {}
                        _ => return Err(BencodeError::NonStringKey { offset }),
                    }
                    self.count_item()?;
                    let key = self.bytes()?;
                    if entries.contains_key(key) {
                        return Err(BencodeError::DuplicateKey { offset });
                    }
                    let value = self.value(depth)?;
                    entries.insert(key.to_vec(), value);
                }
                self.pos += 1;
                Ok(Value::Dict(entries))
            }
            byte => Err(BencodeError::UnexpectedByte {
                byte,
                offset: self.pos,
            }),
        }
    }

    /// Parses a canonical decimal integer up to `terminator` and consumes the terminator.
    fn int(&mut self, terminator: u8) -> Result<i64, BencodeError> {
        let start = self.pos;
        let negative = self.peek()? == b'-';
        if negative {
            self.pos += 1;
        }
        let digits_start = self.pos;
        let mut n: i64 = 0;
        loop {
            let byte = self.peek()?;
            if byte == terminator {
                break;
            }
            if !byte.is_ascii_digit() {
                return Err(BencodeError::UnexpectedByte {
                    byte,
                    offset: self.pos,
                });
            }
            let digit = i64::from(byte - b'0');
            n = n
                .checked_mul(10)
                .and_then(|n| {
                    if negative {
                        n.checked_sub(digit)
                    } else {
                        n.checked_add(digit)
                    }
                })
                .ok_or(BencodeError::InvalidInteger { offset: start })?;
            self.pos += 1;
        }
        let digits = &self.input[digits_start..self.pos];
        let canonical = match digits {
            [] => false,
            [b'0'] => !negative,
            [b'0', ..] => false,
            _ => true,
        };
        if !canonical {
            return Err(BencodeError::InvalidInteger { offset: start });
        }
        self.pos += 1;
        Ok(n)
    }

    /// Parses `<len>:<bytes>` and returns the bytes.
    fn bytes(&mut self) -> Result<&'a [u8], BencodeError> {
        let offset = self.pos;
        if self.peek()? == b'-' {
            return Err(BencodeError::InvalidInteger { offset });
        }
        let len = self.int(b':')?;
        let len = usize::try_from(len).map_err(|_| BencodeError::InvalidInteger { offset })?;
        let end = self
            .pos
            .checked_add(len)
            .ok_or(BencodeError::InvalidInteger { offset })?;
        let input: &'a [u8] = self.input;
        let bytes = input
            .get(self.pos..end)
            .ok_or(BencodeError::UnexpectedEof)?;
        self.pos = end;
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_len: 1024,
        max_depth: 4,
        max_items: 64,
    };

    fn dec(input: &[u8]) -> Result<Value, BencodeError> {
        Value::decode(input, &LIMITS)
    }

    #[test]
    fn integers() {
        assert_eq!(dec(b"i0e"), Ok(Value::Int(0)));
        assert_eq!(dec(b"i-42e"), Ok(Value::Int(-42)));
        assert_eq!(dec(b"i-9223372036854775808e"), Ok(Value::Int(i64::MIN)));
        assert_eq!(dec(b"i9223372036854775807e"), Ok(Value::Int(i64::MAX)));
        for bad in [
            &b"i9223372036854775808e"[..],
            b"i-0e",
            b"i01e",
            b"ie",
            b"i-e",
            b"i1",
            b"i1x",
        ] {
            assert!(dec(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn strings() {
        assert_eq!(dec(b"0:"), Ok(Value::Bytes(vec![])));
        assert_eq!(dec(b"3:abc"), Ok(Value::from("abc")));
        assert_eq!(dec(b"4:abc"), Err(BencodeError::UnexpectedEof));
        assert!(dec(b"03:abc").is_err());
        assert!(dec(b"-1:").is_err());
        assert!(dec(b"99999999999999999999:").is_err());
    }

    #[test]
    fn unsorted_keys_are_accepted_and_reencoded_sorted() {
        let v = dec(b"d1:bi1e1:ai2ee").unwrap();
        assert_eq!(v.to_vec(), b"d1:ai2e1:bi1ee");
    }

    #[test]
    fn duplicate_keys_are_rejected() {
        assert_eq!(
            dec(b"d1:ai1e1:ai2ee"),
            Err(BencodeError::DuplicateKey { offset: 7 })
        );
        assert_eq!(
            dec(b"d1:ai1e1:bi1e1:ai2ee"),
            Err(BencodeError::DuplicateKey { offset: 13 })
        );
    }

    #[test]
    fn bounds() {
        assert_eq!(dec(b"lllleeee"), Ok(dec(b"lllleeee").unwrap()));
        assert_eq!(dec(b"llllleeeee"), Err(BencodeError::TooDeep { max: 4 }));
        let many = format!("l{}e", "i1e".repeat(65));
        assert_eq!(
            dec(many.as_bytes()),
            Err(BencodeError::TooManyItems { max: 64 })
        );
        let big = vec![b'l'; 1025];
        assert_eq!(
            dec(&big),
            Err(BencodeError::TooLarge {
                len: 1025,
                max: 1024
            })
        );
        assert_eq!(dec(b"i1ee"), Err(BencodeError::TrailingBytes { count: 1 }));
        assert_eq!(
            dec(b"di1ei1ee"),
            Err(BencodeError::NonStringKey { offset: 1 })
        );
    }

    #[test]
    fn prefix_decoding_leaves_the_rest() {
        assert_eq!(
            Value::decode_prefix(b"i7eabc", &LIMITS),
            Ok((Value::Int(7), 3))
        );
        assert_eq!(
            Value::decode_prefix(b"d1:xi1ee", &LIMITS).map(|(_, n)| n),
            Ok(8)
        );
        assert_eq!(
            Value::decode_prefix(b"d1:xi1e", &LIMITS),
            Err(BencodeError::UnexpectedEof)
        );
        // A value that does not end within the limit, however much data follows.
        let mut long = b"1100:".to_vec();
        long.extend(vec![b'a'; 1100]);
        assert_eq!(
            Value::decode_prefix(&long, &LIMITS),
            Err(BencodeError::TooLarge {
                len: 1105,
                max: 1024
            })
        );
        // A short value followed by more than the limit is fine.
        let mut tail = b"i1e".to_vec();
        tail.extend(vec![0u8; 4096]);
        assert_eq!(Value::decode_prefix(&tail, &LIMITS), Ok((Value::Int(1), 3)));
    }

    #[test]
    fn uint_len_matches_formatting() {
        for n in [0u64, 9, 10, 99, 100, 12345, u64::MAX] {
            assert_eq!(uint_len(n), n.to_string().len());
        }
    }
}
