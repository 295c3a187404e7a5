//! Fuzz logic for `paid-wire`, `payment-channel` and `torrent-glue`, kept in a library so the
//! `fuzz_targets/` are one-liners and the committed corpus and regressions can be replayed by a
//! stable `cargo test`.
//!
//! Every function panics if, and only if, an oracle fails.

#![forbid(unsafe_code)]

mod channel_ops;
mod glue_events;
mod hub_ops;

pub use channel_ops::{ChannelOp, Forgery, Who, channel_ops};
pub use glue_events::{Chan, Ext, GlueOp, Hs, Len, glue_events};
pub use hub_ops::{HubConfig, HubOp, hub_ops};

use std::fmt::Debug;

use arbitrary::{Arbitrary, Unstructured};
use bytes::{Bytes, BytesMut};
use paid_wire::bencode::Value;
use paid_wire::codec::{HandshakeCodec, PeerCodec};
use paid_wire::extended::{ExtendedHandshake, HANDSHAKE_LIMITS};
use paid_wire::handshake::Handshake;
use paid_wire::message::Message;
use paid_wire::metadata::{HEADER_LIMITS, MetadataDownload, MetadataMessage, PIECE_LEN, serve};
use paid_wire::pse::{PSE_LIMITS, PseMessage};
use paid_wire::test_utils::bendy_canonical;
use tokio_util::codec::Decoder;

/// Max frame length used for the codec checks: small, so oversize paths are reachable.
const FUZZ_MAX_FRAME: u32 = 64 * 1024;

/// Whether [`run_ops`] draws its first operation from an input already used up (`arbitrary`
/// then yields a default value).
#[derive(Clone, Copy)]
enum FirstOp {
    /// Draw it anyway: every input runs at least one operation.
    Always,
    /// Draw it only if input is left.
    IfInputLeft,
}

/// Draws up to `max` operations of type `T` from `u` and hands each to `apply`; stops at the
/// first that does not decode, or when the input is used up (see [`FirstOp`] for the first
/// one). Prints each operation to stderr when the environment variable `debug_var` (if any) is
/// set.
fn run_ops<'a, T: Arbitrary<'a> + Debug>(
    u: &mut Unstructured<'a>,
    max: usize,
    first: FirstOp,
    debug_var: Option<&str>,
    mut apply: impl FnMut(T),
) {
    for i in 0..max {
        if u.is_empty() && (i > 0 || matches!(first, FirstOp::IfInputLeft)) {
            break;
        }
        let Ok(op) = T::arbitrary(u) else {
            break;
        };
        if debug_var.is_some_and(|var| std::env::var_os(var).is_some()) {
            eprintln!("{op:?}");
        }
        apply(op);
    }
}

/// Peer-wire decoding.
///
/// Oracles:
/// - every message `Message::decode` accepts re-encodes to exactly the bytes it consumed;
/// - `Message::decode_frame` likewise for the whole input as one frame body;
/// - an accepted handshake re-encodes to the first 68 bytes;
/// - the codec fed in chunks (size from the first byte) yields the same messages, and fails
///   or not in the same way, as the codec fed the whole input at once; it never panics.
pub fn wire_decode(data: &[u8]) {
    let mut src = Bytes::copy_from_slice(data);
    loop {
        let before = src.clone();
        let Ok(msg) = Message::decode(&mut src) else {
            break;
        };
        let consumed = before.len() - src.len();
        let reencoded = msg.to_bytes().expect("decoded message re-encodes");
        assert_eq!(&reencoded[..], &before[..consumed], "{msg:?}");
        if consumed == 0 {
            break;
        }
    }

    if let Ok(msg) = Message::decode_frame(Bytes::copy_from_slice(data)) {
        let reencoded = msg.to_bytes().expect("decoded frame re-encodes");
        assert_eq!(&reencoded[4..], data, "{msg:?}");
    }

    if let Ok(hs) = Handshake::decode(&mut &data[..]) {
        assert_eq!(&hs.to_bytes()[..], &data[..68]);
    }
    let mut buf = BytesMut::from(data);
    let _ = HandshakeCodec::new().decode_eof(&mut buf);

    let chunk = usize::from(data.first().copied().unwrap_or(0) % 16) + 1;
    let whole = run_codec([data]);
    let chunked = run_codec(data.chunks(chunk));
    assert_eq!(whole, chunked, "chunk size {chunk}");
}

/// Messages decoded until the end or the first error, and whether there was an error.
fn run_codec<'a>(chunks: impl IntoIterator<Item = &'a [u8]>) -> (Vec<Message>, bool) {
    let mut codec = PeerCodec::new().with_max_frame_len(FUZZ_MAX_FRAME);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(msg)) => out.push(msg),
                Ok(None) => break,
                Err(_) => return (out, true),
            }
        }
    }
    loop {
        match codec.decode_eof(&mut buf) {
            Ok(Some(msg)) => out.push(msg),
            Ok(None) => return (out, false),
            Err(_) => return (out, true),
        }
    }
}

/// BEP 10 extended handshake decoding.
///
/// Oracles:
/// - a decoded handshake re-encodes to something that decodes to the same handshake, and whose
///   encoding is a fixed point and canonical (bendy accepts it);
/// - for bencode in general: input that our bounded decoder accepts and bendy considers
///   canonical re-encodes to exactly the input.
pub fn ext_handshake(data: &[u8]) {
    if let Ok(value) = Value::decode(data, &HANDSHAKE_LIMITS) {
        let encoded = value.to_vec();
        assert_eq!(encoded.len(), value.encoded_len());
        if bendy_canonical(data, HANDSHAKE_LIMITS.max_depth) {
            assert_eq!(encoded, data);
        }
    }
    if let Ok(hs) = ExtendedHandshake::decode(data) {
        let encoded = hs.to_bytes();
        assert!(bendy_canonical(&encoded, HANDSHAKE_LIMITS.max_depth));
        let again = ExtendedHandshake::decode(&encoded).expect("re-encoded handshake decodes");
        assert_eq!(again, hs);
        assert_eq!(again.to_bytes(), encoded);
    }
    ut_metadata(data);
}

/// BEP 9 `ut_metadata` payloads (the other BEP 10 messages this crate decodes), in the
/// `ext_handshake` target.
///
/// Oracles: a decoded message re-encodes to bytes that decode to the same message, and that
/// encoding is a fixed point; when the dictionary part of the input is canonical bencode
/// holding only the keys the message keeps, the input is reproduced byte for byte; a decoded
/// `data` fed to a [`MetadataDownload`] of its `total_size` is accepted or refused with a typed
/// error, and when accepted its bytes are where `serve` would read them.
pub fn ut_metadata(data: &[u8]) {
    let Ok(msg) = MetadataMessage::decode(data) else {
        return;
    };
    let encoded = msg.encode();
    let again = MetadataMessage::decode(&encoded).expect("re-encoded ut_metadata decodes");
    assert_eq!(again, msg);
    assert_eq!(again.encode(), encoded);
    let (header, used) = Value::decode_prefix(data, &HEADER_LIMITS).expect("decoded once");
    let kept = if matches!(msg, MetadataMessage::Data { .. }) {
        3
    } else {
        2
    };
    if bendy_canonical(&data[..used], HEADER_LIMITS.max_depth)
        && header.as_dict().is_some_and(|d| d.len() == kept)
    {
        assert_eq!(encoded, data, "{msg:?}");
    }
    if let MetadataMessage::Data {
        piece,
        total_size,
        data: bytes,
    } = &msg
        && let Ok(mut download) = MetadataDownload::new(*total_size)
        && download.handle(msg.clone()).is_ok()
    {
        let start = *piece as usize * PIECE_LEN;
        let mut whole = vec![0u8; *total_size as usize];
        whole[start..start + bytes.len()].copy_from_slice(bytes);
        assert_eq!(serve(&whole, *piece), msg);
    }
}

/// Paid-streaming extension decoding.
///
/// Oracles: a decoded message re-encodes (with the predicted length) to bytes that decode to
/// the same message, and that encoding is a fixed point; when the input itself is canonical
/// bencode in exactly the form web3torrent sends (re-encoding is lossless for it), it is
/// reproduced byte for byte.
pub fn pse_decode(data: &[u8]) {
    let Ok(msg) = PseMessage::decode(data) else {
        return;
    };
    let encoded = msg.encode();
    assert_eq!(encoded.len(), msg.encoded_len(), "{msg:?}");
    let again = PseMessage::decode(&encoded).expect("re-encoded PSE message decodes");
    assert_eq!(again, msg);
    assert_eq!(again.encode(), encoded);
    // Where the input is canonical and carries only what the message keeps, bytes match.
    if bendy_canonical(data, PSE_LIMITS.max_depth) && is_web3torrent_shape(data) {
        assert_eq!(encoded, data, "{msg:?}");
    }
}

/// `{command, data?, msg_type: 0}` with nothing else, and `data` in the form our encoder emits
/// for the decoded command.
fn is_web3torrent_shape(data: &[u8]) -> bool {
    let Ok(Value::Dict(dict)) = Value::decode(data, &PSE_LIMITS) else {
        return false;
    };
    let keys_ok = dict
        .keys()
        .all(|k| matches!(k.as_slice(), b"command" | b"data" | b"msg_type"));
    let msg_type_ok = dict.get(&b"msg_type"[..]) == Some(&Value::Int(0));
    let Some(command) = dict.get(&b"command"[..]).and_then(Value::as_str) else {
        return false;
    };
    let data_value = dict.get(&b"data"[..]);
    let data_ok = match command {
        // Any data decodes to the same message; only `{}` is reproduced.
        "start" | "ack" => data_value.is_some_and(|d| d.as_dict().is_some_and(|d| d.is_empty())),
        // A missing data is re-encoded as `{}`; lower-case hex only.
        "stop" | "permanent-stop" => data_value.is_some_and(|d| match d {
            Value::Bytes(b) => !b.iter().any(u8::is_ascii_uppercase),
            Value::Dict(d) => d.is_empty(),
            _ => false,
        }),
        // Extra keys in the message data are dropped.
        "message" => data_value
            .and_then(Value::as_dict)
            .is_some_and(|d| d.len() == 1),
        // Read leniently: only both fields, a canonical decimal amount and a non-negative
        // byte count are reproduced.
        "prompt" => data_value.and_then(Value::as_dict).is_some_and(|d| {
            let amount_ok = d
                .get(&b"amount"[..])
                .and_then(Value::as_str)
                .is_some_and(|a| a.parse::<u128>().is_ok_and(|n| n.to_string() == a));
            let bytes_ok = d
                .get(&b"bytes"[..])
                .and_then(Value::as_int)
                .is_some_and(|n| n >= 0);
            d.len() == 2 && amount_ok && bytes_ok
        }),
        // One field; lower-case hex only.
        "auth-challenge" | "auth-proof" => data_value.and_then(Value::as_dict).is_some_and(|d| {
            d.len() == 1
                && d.values().all(|v| match v {
                    Value::Bytes(b) => !b.iter().any(u8::is_ascii_uppercase),
                    _ => false,
                })
        }),
        _ => true,
    };
    keys_ok && msg_type_ok && data_ok
}
