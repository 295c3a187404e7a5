//! Peer-wire codec benchmarks: encode/decode of a 16 KiB piece, a request and a PSE message,
//! and piece decode across payload sizes (decode time should not grow with the payload: the
//! block is a slice of the read buffer, not a copy).
//!
//! `cargo bench -p paid-benches --bench wire -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use paid_wire::codec::PeerCodec;
use paid_wire::message::{BlockRequest, Message};
use paid_wire::pse::{ChannelId, PseMessage};
use tokio_util::codec::{Decoder, Encoder};

const BLOCK: usize = 16 * 1024;

fn piece(len: usize) -> Message {
    Message::Piece {
        index: 7,
        begin: 0,
        data: Bytes::from(vec![0x5a; len]),
    }
}

fn encoded(msg: &Message) -> Bytes {
    msg.to_bytes().expect("encodable")
}

fn messages(c: &mut Criterion) {
    let request = Message::Request(BlockRequest::new(7, 0, BLOCK as u32));
    let cases = [("piece_16k", piece(BLOCK)), ("request", request)];
    let mut group = c.benchmark_group("message");
    for (name, msg) in &cases {
        let wire = encoded(msg);
        group.throughput(Throughput::Bytes(wire.len() as u64));
        group.bench_function(format!("encode/{name}"), |b| {
            let mut dst = BytesMut::with_capacity(wire.len());
            b.iter(|| {
                dst.clear();
                black_box(msg).encode(&mut dst).expect("encodable");
                black_box(&dst);
            })
        });
        group.bench_function(format!("decode/{name}"), |b| {
            b.iter(|| {
                let mut src = black_box(wire.clone());
                black_box(Message::decode(&mut src).expect("valid"))
            })
        });
        // Through the tokio-util codec, as a connection would: bytes land in a BytesMut.
        group.bench_function(format!("codec_decode/{name}"), |b| {
            let mut codec = PeerCodec::new();
            b.iter_batched_ref(
                || BytesMut::from(&wire[..]),
                |buf| black_box(codec.decode(buf).expect("valid")),
                BatchSize::SmallInput,
            )
        });
        group.bench_function(format!("codec_encode/{name}"), |b| {
            let mut codec = PeerCodec::new();
            let mut dst = BytesMut::with_capacity(wire.len());
            b.iter(|| {
                dst.clear();
                codec.encode(black_box(msg), &mut dst).expect("encodable");
                black_box(&dst);
            })
        });
    }
    group.finish();
}

fn pse(c: &mut Criterion) {
    let id = ChannelId([0x6a; 32]);
    let json = r#"{"recipient":"0x7F0126D6c4270498b6514Cb934a3274898f68777","sender":"0xaaaa84838319627Fa056fC3FC29ab94d479B8502","data":{"signedStates":[{"channelId":"0x6a6a","turnNum":5}]}}"#;
    let cases = [
        (
            "stop",
            PseMessage::Stop {
                channel_id: Some(id),
            },
        ),
        (
            "message",
            PseMessage::Message {
                message: json.to_owned(),
            },
        ),
    ];
    let mut group = c.benchmark_group("pse");
    for (name, msg) in &cases {
        let wire = msg.encode();
        group.throughput(Throughput::Bytes(wire.len() as u64));
        group.bench_function(format!("encode/{name}"), |b| {
            b.iter(|| black_box(black_box(msg).encode()))
        });
        group.bench_function(format!("decode/{name}"), |b| {
            b.iter(|| black_box(PseMessage::decode(black_box(&wire)).expect("valid")))
        });
    }
    group.finish();
}

fn piece_decode_by_size(c: &mut Criterion) {
    let mut group = c.benchmark_group("piece_decode_by_size");
    for (name, len) in [
        ("1KiB", 1 << 10),
        ("16KiB", 16 << 10),
        ("128KiB", 128 << 10),
        ("1MiB", 1 << 20),
    ] {
        let wire = encoded(&piece(len));
        group.throughput(Throughput::Bytes(wire.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut src = black_box(wire.clone());
                black_box(Message::decode(&mut src).expect("valid"))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, messages, pse, piece_decode_by_size);
criterion_main!(benches);
