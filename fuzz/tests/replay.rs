//! Replays the committed seed corpus and every saved crash input through the fuzz logic on
//! stable: `cargo test --manifest-path fuzz/Cargo.toml`.
//!
//! `cargo test --manifest-path fuzz/Cargo.toml -- --ignored write_seed_corpus` regenerates
//! the seed corpus from the fixtures below.

use std::fs;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use hex_literal::hex;
use paid_wire::extended::ExtendedHandshake;
use paid_wire::handshake::{Handshake, Reserved};
use paid_wire::message::{BlockRequest, Message};
use paid_wire::pse::{ChannelId, PseMessage};

type Target = fn(&[u8]);

const TARGETS: [(&str, Target); 3] = [
    ("wire_decode", paid_wire_fuzz::wire_decode),
    ("ext_handshake", paid_wire_fuzz::ext_handshake),
    ("pse_decode", paid_wire_fuzz::pse_decode),
];

fn dir(kind: &str, target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(kind)
        .join(target)
}

fn inputs(kind: &str, target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let Ok(entries) = fs::read_dir(dir(kind, target)) else {
        return Vec::new();
    };
    let mut out: Vec<_> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.file_name().is_some_and(|n| n != ".gitkeep"))
        .map(|p| {
            let data = fs::read(&p).unwrap();
            (p, data)
        })
        .collect();
    out.sort();
    out
}

#[test]
fn replay_corpus_and_regressions() {
    let mut total = 0;
    for (target, run) in TARGETS {
        let seeds = inputs("corpus", target);
        assert!(seeds.len() >= 12, "{target}: only {} seeds", seeds.len());
        for (path, data) in seeds.iter().chain(&inputs("regressions", target)) {
            eprintln!("{target}: {}", path.display());
            run(data);
            total += 1;
        }
    }
    assert!(total >= 36);
}

fn wire(msgs: &[Message]) -> Vec<u8> {
    let mut out = Vec::new();
    for m in msgs {
        m.encode(&mut out).unwrap();
    }
    out
}

const CHANNEL: &str = "0x6a5b2e8d9c3e4f1a0b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a";

fn wire_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let req = BlockRequest::new(1, 0x4000, 0x4000);
    let hs = Handshake::new(
        Reserved::empty()
            .with_extension_protocol(true)
            .with_fast(true)
            .with_dht(true),
        [0x11; 20],
        *b"-PW0001-123456789012",
    );
    let mut hs_then_msgs = hs.to_bytes().to_vec();
    hs_then_msgs.extend(wire(&[Message::HaveAll, Message::Unchoke]));
    vec![
        (
            "keepalive_choke_unchoke",
            wire(&[Message::KeepAlive, Message::Choke, Message::Unchoke]),
        ),
        (
            "interest",
            wire(&[Message::Interested, Message::NotInterested]),
        ),
        ("have", wire(&[Message::Have(0xdead_beef)])),
        (
            "bitfield",
            wire(&[Message::Bitfield(Bytes::from_static(&[0xff, 0xfe, 0x80]))]),
        ),
        (
            "request_cancel",
            wire(&[Message::Request(req), Message::Cancel(req)]),
        ),
        (
            "piece",
            wire(&[Message::Piece {
                index: 1,
                begin: 0x4000,
                data: Bytes::from(vec![0xab; 64]),
            }]),
        ),
        ("port", wire(&[Message::Port(6881)])),
        (
            "fast",
            wire(&[
                Message::Suggest(3),
                Message::HaveNone,
                Message::Reject(req),
                Message::AllowedFast(9),
            ]),
        ),
        (
            "extended_handshake",
            wire(&[Message::Extended {
                id: 0,
                payload: Bytes::from_static(b"d1:md22:paidStreamingExtensioni2eee"),
            }]),
        ),
        ("extended_pse", wire(&[PseMessage::Start.to_message(2)])),
        (
            "unknown",
            wire(&[Message::Unknown {
                id: 21,
                payload: Bytes::from_static(b"\x01\x02"),
            }]),
        ),
        ("handshake_then_messages", hs_then_msgs),
        ("oversize_prefix", hex!("00 10 00 0a 07 00000000").to_vec()),
        ("bad_fixed_len", hex!("00000002 00 00").to_vec()),
        ("truncated", hex!("0000000d 06 0000").to_vec()),
    ]
}

fn ext_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let mut web3 = ExtendedHandshake::new();
    web3.m.insert("ut_metadata".into(), 1);
    web3.m.insert("paidStreamingExtension".into(), 2);
    web3.metadata_size = Some(12345);
    web3.set_pse_account("0x7F0126D6c4270498b6514Cb934a3274898f68777");
    web3.set_outcome_address("0x8dc5Ad7A0fC0fe1e9eE36A5d4C5C9EE2D7AF3eEc");
    vec![
        (
            "bep10_example",
            b"d1:md11:LT_metadatai1e6:ut_pexi2ee1:pi6881e1:v13:\xc2\xb5Torrent 1.2e".to_vec(),
        ),
        ("web3torrent", web3.to_bytes().to_vec()),
        (
            "libtorrent",
            b"d12:complete_agoi-1e1:md11:lt_donthavei7e10:share_modei8e11:upload_onlyi3e12:ut_holepunchi4e11:ut_metadatai2e6:ut_pexi1ee13:metadata_sizei31235e4:reqqi500e11:upload_onlyi1e1:v17:libtorrent 2.0.8.06:yourip4:\x7f\x00\x00\x01e".to_vec(),
        ),
        ("ipv6_yourip", b"d1:mde6:yourip16:\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01e".to_vec()),
        ("empty", b"de".to_vec()),
        ("unsorted", b"d1:v3:abc1:md6:ut_pexi2e11:LT_metadatai1eee".to_vec()),
        ("duplicate", b"d1:pi1e1:pi2ee".to_vec()),
        ("disable", b"d1:md6:ut_pexi0eee".to_vec()),
        ("weird_m", b"d1:md1:ai300e1:bi-1e1:c1:x1:di3eee".to_vec()),
        ("nested_extra", b"d1:xld1:ali1ei2eeee1:yi-5ee".to_vec()),
        ("too_deep", b"d1:xllllllllleeeeeeeeee".to_vec()),
        ("bad_port", b"d1:pi70000ee".to_vec()),
        ("not_a_dict", b"l1:ae".to_vec()),
        ("big_int", b"d1:xi99999999999999999999ee".to_vec()),
    ]
}

fn pse_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let id: ChannelId = CHANNEL.parse().unwrap();
    let json = r#"{"recipient":"0x7F0126D6c4270498b6514Cb934a3274898f68777","sender":"0xaaaa84838319627Fa056fC3FC29ab94d479B8502","data":{"signedStates":[]}}"#;
    vec![
        (
            "stop",
            PseMessage::Stop {
                channel_id: Some(id),
            }
            .encode(),
        ),
        ("stop_empty", PseMessage::Stop { channel_id: None }.encode()),
        ("start", PseMessage::Start.encode()),
        (
            "permanent_stop",
            PseMessage::PermanentStop {
                channel_id: Some(id),
            }
            .encode(),
        ),
        (
            "permanent_stop_empty",
            PseMessage::PermanentStop { channel_id: None }.encode(),
        ),
        ("ack", PseMessage::Ack.encode()),
        (
            "message",
            PseMessage::Message {
                message: json.into(),
            }
            .encode(),
        ),
        ("stop_no_data", b"d7:command4:stop8:msg_typei0ee".to_vec()),
        ("start_no_msg_type", b"d7:command5:start4:datadee".to_vec()),
        (
            "unknown",
            b"d7:command5:pause4:datad1:ai1ee8:msg_typei0ee".to_vec(),
        ),
        (
            "unsorted",
            b"d8:msg_typei0e7:command3:ack4:datadee".to_vec(),
        ),
        ("bad_channel", b"d7:command4:stop4:data4:0x12e".to_vec()),
        (
            "message_no_string",
            b"d7:command7:message4:datad7:messagei1eee".to_vec(),
        ),
        (
            "trailing",
            b"d7:command3:ack4:datade8:msg_typei0eee".to_vec(),
        ),
    ]
}

#[test]
#[ignore = "writes fuzz/corpus; run explicitly to regenerate the seeds"]
fn write_seed_corpus() {
    for (target, seeds) in [
        ("wire_decode", wire_seeds()),
        ("ext_handshake", ext_seeds()),
        ("pse_decode", pse_seeds()),
    ] {
        let d = dir("corpus", target);
        fs::create_dir_all(&d).unwrap();
        for (name, data) in seeds {
            fs::write(d.join(name), data).unwrap();
        }
    }
}

#[test]
fn seed_fixtures_pass_their_own_target() {
    for (_, data) in wire_seeds() {
        paid_wire_fuzz::wire_decode(&data);
    }
    for (_, data) in ext_seeds() {
        paid_wire_fuzz::ext_handshake(&data);
    }
    for (_, data) in pse_seeds() {
        paid_wire_fuzz::pse_decode(&data);
    }
}
