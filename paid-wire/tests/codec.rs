//! `tokio_util::codec` contract tests for `PeerCodec` and `HandshakeCodec`.

mod common;

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use hex_literal::hex;
use paid_wire::codec::{DEFAULT_MAX_FRAME_LEN, HandshakeCodec, PeerCodec};
use paid_wire::error::{CodecError, DecodeError, EncodeError};
use paid_wire::handshake::{Handshake, Reserved};
use paid_wire::message::{BlockRequest, Message};
use proptest::prelude::*;
use tokio::io::AsyncWriteExt;
use tokio_util::codec::{Decoder, Encoder, Framed, FramedRead};

fn sample_stream() -> (Vec<Message>, Vec<u8>) {
    let msgs = vec![
        Message::Bitfield(Bytes::from_static(&[0xff, 0x80])),
        Message::KeepAlive,
        Message::Interested,
        Message::Request(BlockRequest::new(0, 0, 16384)),
        Message::Piece {
            index: 0,
            begin: 0,
            data: Bytes::from(vec![7u8; 40]),
        },
        Message::Extended {
            id: 0,
            payload: Bytes::from_static(b"d1:md22:paidStreamingExtensioni3eee"),
        },
        Message::Unknown {
            id: 99,
            payload: Bytes::from_static(b"x"),
        },
        Message::HaveNone,
    ];
    let mut wire = Vec::new();
    for m in &msgs {
        m.encode(&mut wire).unwrap();
    }
    (msgs, wire)
}

/// Feeds `chunks` one at a time, decoding as far as possible after each, then `decode_eof`.
fn decode_chunked<'a>(
    codec: &mut PeerCodec,
    chunks: impl IntoIterator<Item = &'a [u8]>,
) -> Result<Vec<Message>, CodecError> {
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        while let Some(m) = codec.decode(&mut buf)? {
            out.push(m);
        }
    }
    while let Some(m) = codec.decode_eof(&mut buf)? {
        out.push(m);
    }
    Ok(out)
}

#[test]
fn split_at_every_byte_equals_whole() {
    let (msgs, wire) = sample_stream();
    assert_eq!(
        decode_chunked(&mut PeerCodec::new(), [&wire[..]]).unwrap(),
        msgs
    );
    for split in 0..=wire.len() {
        let (a, b) = wire.split_at(split);
        assert_eq!(
            decode_chunked(&mut PeerCodec::new(), [a, b]).unwrap(),
            msgs,
            "split at {split}"
        );
    }
    // One byte at a time.
    assert_eq!(
        decode_chunked(&mut PeerCodec::new(), wire.chunks(1)).unwrap(),
        msgs
    );
}

#[test]
fn partial_frame_is_none_and_header_is_remembered() {
    let mut codec = PeerCodec::new();
    let mut buf = BytesMut::from(&hex!("0000000d 06 0000")[..]);
    assert!(codec.decode(&mut buf).unwrap().is_none());
    // The prefix was consumed and remembered; the rest waits in the buffer.
    assert_eq!(&buf[..], &hex!("06 0000"));
    assert!(buf.capacity() >= 13);
    buf.extend_from_slice(&hex!("0000 00000000 00004000"));
    assert_eq!(
        codec.decode(&mut buf).unwrap(),
        Some(Message::Request(BlockRequest::new(0, 0, 0x4000)))
    );
    assert!(buf.is_empty());
}

#[test]
fn oversized_length_prefix_is_rejected_before_allocating() {
    let mut codec = PeerCodec::new().with_max_frame_len(1024);
    let mut buf = BytesMut::with_capacity(8);
    buf.put_slice(&hex!("00000401 07"));
    let cap = buf.capacity();
    let err = codec.decode(&mut buf).unwrap_err();
    assert!(matches!(
        err,
        CodecError::Decode(DecodeError::FrameTooLarge {
            len: 1025,
            max: 1024
        })
    ));
    assert!(err.is_peer_fault());
    assert_eq!(
        buf.capacity(),
        cap,
        "no reservation for the oversized frame"
    );

    // The default limit: 1 MiB block plus the piece header fits, one more byte does not.
    let mut codec = PeerCodec::new();
    assert_eq!(codec.max_frame_len(), DEFAULT_MAX_FRAME_LEN);
    let mut buf = BytesMut::from(&(DEFAULT_MAX_FRAME_LEN + 1).to_be_bytes()[..]);
    let cap = buf.capacity();
    assert!(codec.decode(&mut buf).is_err());
    assert_eq!(buf.capacity(), cap);
    let mut buf = BytesMut::from(&u32::MAX.to_be_bytes()[..]);
    let cap = buf.capacity();
    assert!(codec.decode(&mut buf).is_err());
    assert_eq!(buf.capacity(), cap);
}

#[test]
fn wrong_length_for_fixed_id_is_rejected_when_the_id_arrives() {
    let mut codec = PeerCodec::new();
    // A 1000-byte "choke": rejected after 5 bytes, without waiting for the rest.
    let mut buf = BytesMut::from(&hex!("000003e8 00")[..]);
    let err = codec.decode(&mut buf).unwrap_err();
    assert!(matches!(
        err,
        CodecError::Decode(DecodeError::IncorrectLength {
            id: 0,
            expected: 1,
            got: 1000
        })
    ));
}

#[test]
fn leftover_bytes_at_eof_are_an_error() {
    let (_, wire) = sample_stream();
    // Cut inside the header of a frame and inside a payload.
    for cut in [1, 2, 3, 6, 9, wire.len() - 1] {
        let mut codec = PeerCodec::new();
        let mut buf = BytesMut::from(&wire[..cut]);
        let mut err = None;
        loop {
            match codec.decode_eof(&mut buf) {
                Ok(Some(_)) => continue,
                Ok(None) => break,
                Err(e) => {
                    err = Some(e);
                    break;
                }
            }
        }
        assert!(
            matches!(
                err,
                Some(CodecError::Decode(DecodeError::TruncatedFrame { .. }))
            ),
            "cut {cut}: {err:?}"
        );
    }
    // A clean end is fine.
    let mut buf = BytesMut::new();
    assert!(PeerCodec::new().decode_eof(&mut buf).unwrap().is_none());
}

#[test]
fn one_trailing_byte_at_eof_is_rejected() {
    let mut wire = Vec::new();
    Message::Have(1).encode(&mut wire).unwrap();
    wire.push(0);
    let err = decode_chunked(&mut PeerCodec::new(), [&wire[..]]).unwrap_err();
    assert!(matches!(
        err,
        CodecError::Decode(DecodeError::TruncatedFrame { remaining: 1 })
    ));
}

#[test]
fn encoder_enforces_max_frame_len() {
    let mut codec = PeerCodec::new().with_max_frame_len(16);
    let mut dst = BytesMut::new();
    let big = Message::Bitfield(Bytes::from(vec![0; 16]));
    let err = codec.encode(&big, &mut dst).unwrap_err();
    assert!(matches!(
        err,
        CodecError::Encode(EncodeError::FrameTooLarge { len: 17, max: 16 })
    ));
    assert!(!err.is_peer_fault());
    assert!(dst.is_empty());
    codec
        .encode(Message::Bitfield(Bytes::from(vec![0; 15])), &mut dst)
        .unwrap();
    assert_eq!(dst.len(), 20);
    codec.set_max_frame_len(100);
    codec.encode(&big, &mut dst).unwrap();
}

#[test]
fn piece_through_the_codec_is_zero_copy() {
    let msg = Message::Piece {
        index: 1,
        begin: 16384,
        data: Bytes::from(vec![1u8; 16384]),
    };
    let mut buf = BytesMut::new();
    PeerCodec::new().encode(&msg, &mut buf).unwrap();
    let range = buf.as_ptr_range();
    let Some(Message::Piece { data, .. }) = PeerCodec::new().decode(&mut buf).unwrap() else {
        panic!("expected a piece");
    };
    assert!(range.contains(&data.as_ptr()));
    assert!(range.contains(&data[data.len() - 1..].as_ptr()));
}

const HANDSHAKE: [u8; 68] = hex!(
    "13 426974546f7272656e742070726f746f636f6c"
    "0000000000100004"
    "1111111111111111111111111111111111111111"
    "2222222222222222222222222222222222222222"
);

#[test]
fn handshake_codec_then_peer_codec_keeps_the_buffer() {
    let mut wire = HANDSHAKE.to_vec();
    Message::HaveAll.encode(&mut wire).unwrap();
    for split in 0..=wire.len() {
        // Feed the first `split` bytes, then the rest once the codec asks for more.
        let mut buf = BytesMut::from(&wire[..split]);
        let mut fed = split;
        let mut hs_codec = HandshakeCodec::new();
        let hs = match hs_codec.decode(&mut buf).unwrap() {
            Some(hs) => hs,
            None => {
                buf.extend_from_slice(&wire[fed..]);
                fed = wire.len();
                hs_codec.decode(&mut buf).unwrap().unwrap()
            }
        };
        assert_eq!(hs.to_bytes(), HANDSHAKE);
        // Switch codecs on the same buffer: bytes after the handshake are kept.
        let mut codec = PeerCodec::new();
        buf.extend_from_slice(&wire[fed..]);
        assert_eq!(
            codec.decode_eof(&mut buf).unwrap(),
            Some(Message::HaveAll),
            "split {split}"
        );
        assert!(buf.is_empty());
    }
}

#[test]
fn handshake_codec_rejects_early_and_at_eof() {
    let mut buf = BytesMut::from(&b"\x10"[..]);
    assert!(matches!(
        HandshakeCodec::new().decode(&mut buf),
        Err(CodecError::Decode(DecodeError::HandshakePstrLen {
            got: 16
        }))
    ));
    let mut buf = BytesMut::from(&HANDSHAKE[..30]);
    assert!(HandshakeCodec::new().decode(&mut buf).unwrap().is_none());
    assert!(matches!(
        HandshakeCodec::new().decode_eof(&mut buf),
        Err(CodecError::Decode(DecodeError::TruncatedFrame {
            remaining: 30
        }))
    ));
    let mut out = BytesMut::new();
    let hs = Handshake::new(
        Reserved::empty()
            .with_fast(true)
            .with_extension_protocol(true),
        [0x11; 20],
        [0x22; 20],
    );
    HandshakeCodec::new().encode(hs, &mut out).unwrap();
    assert_eq!(&out[..], &HANDSHAKE);
}

#[tokio::test(flavor = "current_thread")]
async fn framed_over_a_pipe_with_odd_writes() {
    let (msgs, wire) = sample_stream();
    let (mut tx, rx) = tokio::io::duplex(16);
    let writer = async move {
        for chunk in wire.chunks(5) {
            tx.write_all(chunk).await.unwrap();
        }
        tx.shutdown().await.unwrap();
    };
    let reader = async move {
        FramedRead::new(rx, PeerCodec::new())
            .map(|r| r.unwrap())
            .collect::<Vec<_>>()
            .await
    };
    let ((), got) = tokio::join!(writer, reader);
    assert_eq!(got, msgs);
}

#[tokio::test(flavor = "current_thread")]
async fn framed_sink_round_trip() {
    let (a, b) = tokio::io::duplex(1 << 16);
    let mut tx = Framed::new(a, PeerCodec::new());
    let mut rx = Framed::new(b, PeerCodec::new());
    let (msgs, _) = sample_stream();
    for m in &msgs {
        tx.send(m).await.unwrap();
    }
    for m in &msgs {
        assert_eq!(&rx.next().await.unwrap().unwrap(), m);
    }
}

proptest! {
    #[test]
    fn arbitrary_chunking_equals_whole(
        msgs in proptest::collection::vec(common::message(), 0..12),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
    ) {
        let mut wire = Vec::new();
        for m in &msgs {
            m.encode(&mut wire).unwrap();
        }
        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(wire.len() + 1)).collect();
        points.sort_unstable();
        let mut chunks = Vec::new();
        let mut prev = 0;
        for p in points {
            chunks.push(&wire[prev..p]);
            prev = p;
        }
        chunks.push(&wire[prev..]);
        prop_assert_eq!(decode_chunked(&mut PeerCodec::new(), chunks).unwrap(), msgs);
    }

    #[test]
    fn arbitrary_bytes_never_panic(
        data in proptest::collection::vec(any::<u8>(), 0..256),
        chunk in 1usize..17,
    ) {
        let _ = decode_chunked(&mut PeerCodec::new().with_max_frame_len(4096), data.chunks(chunk));
        let mut buf = BytesMut::from(&data[..]);
        let _ = HandshakeCodec::new().decode_eof(&mut buf);
    }
}
