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

const TARGETS: [(&str, Target); 6] = [
    ("wire_decode", paid_wire_fuzz::wire_decode),
    ("ext_handshake", paid_wire_fuzz::ext_handshake),
    ("pse_decode", paid_wire_fuzz::pse_decode),
    ("channel_ops", paid_wire_fuzz::channel_ops),
    ("glue_events", paid_wire_fuzz::glue_events),
    ("hub_ops", paid_wire_fuzz::hub_ops),
];

/// Minimum committed seeds per target.
fn min_seeds(target: &str) -> usize {
    match target {
        "channel_ops" | "glue_events" | "hub_ops" => 6,
        _ => 12,
    }
}

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
        assert!(
            seeds.len() >= min_seeds(target),
            "{target}: only {} seeds",
            seeds.len()
        );
        for (path, data) in seeds.iter().chain(&inputs("regressions", target)) {
            eprintln!("{target}: {}", path.display());
            run(data);
            total += 1;
        }
    }
    assert!(total >= 48);
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
        // BEP 9 ut_metadata payloads, decoded by the same target.
        ("ut_metadata_request", b"d8:msg_typei0e5:piecei0ee".to_vec()),
        (
            "ut_metadata_data",
            b"d8:msg_typei1e5:piecei1e10:total_sizei16390ee123456".to_vec(),
        ),
        ("ut_metadata_reject", b"d8:msg_typei2e5:piecei7ee".to_vec()),
        (
            "ut_metadata_unsorted_extra",
            b"d5:piecei0e1:xi1e8:msg_typei1e10:total_sizei3eeabc".to_vec(),
        ),
        ("ut_metadata_trailing", b"d8:msg_typei0e5:piecei0eeX".to_vec()),
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
        ("channel_ops", channel_seeds()),
        ("glue_events", glue_seeds()),
        ("hub_ops", hub_seeds()),
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
    for (_, data) in channel_seeds() {
        paid_wire_fuzz::channel_ops(&data);
    }
    for (_, data) in glue_seeds() {
        paid_wire_fuzz::glue_events(&data);
    }
    for (name, data) in hub_seeds() {
        eprintln!("hub_ops: {name}");
        paid_wire_fuzz::hub_ops(&data);
    }
}

// ---------------------------------------------------------------- operation-sequence seeds

/// Writes bytes that `arbitrary` (derive, 1.x) decodes into chosen values: an enum variant is a
/// little-endian `u32` scaled to the variant count, integers are little-endian, `bool` is the low
/// bit of a byte. `seeds_decode_as_written` pins the encoding.
#[derive(Default)]
struct Enc(Vec<u8>);

impl Enc {
    fn variant(&mut self, i: u32, n: u32) -> &mut Self {
        let x = (u64::from(i) << 32).div_ceil(u64::from(n));
        self.0.extend(u32::try_from(x).unwrap().to_le_bytes());
        self
    }
    fn u8(&mut self, x: u8) -> &mut Self {
        self.0.push(x);
        self
    }
    fn u16(&mut self, x: u16) -> &mut Self {
        self.0.extend(x.to_le_bytes());
        self
    }
    fn u32(&mut self, x: u32) -> &mut Self {
        self.0.extend(x.to_le_bytes());
        self
    }
    fn bool(&mut self, b: bool) -> &mut Self {
        self.0.push(u8::from(b));
        self
    }
}

/// A script of a fuzz target whose op enum has `OPS` variants: each op is its variant, then its
/// fields ([`Enc`]).
struct Script<const OPS: u32>(Enc);

impl<const OPS: u32> Script<OPS> {
    fn new() -> Self {
        Self(Enc::default())
    }
    fn op(&mut self, v: u32) -> &mut Enc {
        self.0.variant(v, OPS)
    }
    /// Appends op `v` with the fields `fields` writes; returns the script for chaining.
    fn push(&mut self, v: u32, fields: impl FnOnce(&mut Enc) -> &mut Enc) -> &mut Self {
        fields(self.op(v));
        self
    }
    fn bytes(&self) -> Vec<u8> {
        self.0.0.clone()
    }
}

// `ChannelOp` variants, in declaration order.
const C_OPS: u32 = 11;
const C_JOIN: u32 = 0;
const C_PAY: u32 = 1;
const C_DELIVER: u32 = 2;
const C_REORDER: u32 = 3;
const C_RESEND: u32 = 4;
const C_CLOSE: u32 = 5;
const C_CHALLENGE: u32 = 6;
const C_ADVANCE: u32 = 7;
const C_RESTORE: u32 = 8;
const C_MUTATE: u32 = 9;
const C_FORGE: u32 = 10;
const PAYER: u32 = 0;
const PAYEE: u32 = 1;

/// A `channel_ops` script.
type Ch = Script<C_OPS>;

impl Ch {
    fn join(&mut self) -> &mut Self {
        self.push(C_JOIN, |e| e)
    }
    fn pay(&mut self, x: u16) -> &mut Self {
        self.push(C_PAY, |e| e.u16(x))
    }
    fn deliver(&mut self, to: u32, drop: bool, dup: bool) -> &mut Self {
        self.push(C_DELIVER, |e| e.variant(to, 2).bool(drop).bool(dup))
    }
    fn to(&mut self, op: u32, who: u32) -> &mut Self {
        self.push(op, |e| e.variant(who, 2))
    }
    fn advance(&mut self, s: u8) -> &mut Self {
        self.push(C_ADVANCE, |e| e.u8(s))
    }
    fn mutate(&mut self, to: u32, at: u16, xor: u8) -> &mut Self {
        self.push(C_MUTATE, |e| e.variant(to, 2).u16(at).u8(xor))
    }
    fn forge(&mut self, kind: u32, arg: Option<(u32, u16)>) -> &mut Self {
        self.op(C_FORGE).variant(kind, 6);
        match (kind, arg) {
            (0 | 3, Some((_, x))) => {
                self.0.u16(x);
            }
            (5, Some((who, x))) => {
                self.0.variant(who, 2).u16(x);
            }
            _ => {}
        }
        self
    }
    /// Proposal delivered, joined, join delivered, postfund delivered: running.
    fn running(&mut self) -> &mut Self {
        self.deliver(PAYER, false, false)
            .join()
            .deliver(PAYEE, false, false)
            .deliver(PAYER, false, false)
    }
}

fn channel_seeds() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        (
            "never_joined",
            Ch::new().deliver(PAYER, false, false).bytes(),
        ),
        (
            "happy_close",
            Ch::new()
                .running()
                .pay(100)
                .deliver(PAYEE, false, false)
                .pay(250)
                .deliver(PAYEE, false, false)
                .to(C_CLOSE, PAYER)
                .deliver(PAYEE, false, false)
                .deliver(PAYER, false, false)
                .bytes(),
        ),
        (
            "lossy_duplicating_reordering",
            Ch::new()
                .running()
                .pay(10)
                .pay(20)
                .pay(30)
                .to(C_REORDER, PAYEE)
                .deliver(PAYEE, true, false)
                .deliver(PAYEE, false, true)
                .deliver(PAYEE, false, false)
                .to(C_RESEND, PAYER)
                .deliver(PAYEE, false, true)
                .bytes(),
        ),
        (
            "payee_challenges_payer_vanished",
            Ch::new()
                .running()
                .pay(300)
                .deliver(PAYEE, false, false)
                .to(C_CHALLENGE, PAYEE)
                .advance(60)
                .advance(60)
                .bytes(),
        ),
        (
            "stale_challenge_by_payer_is_countered",
            Ch::new()
                .running()
                .pay(400)
                .deliver(PAYEE, false, false)
                .to(C_CHALLENGE, PAYER)
                .advance(30)
                .pay(1)
                .advance(200)
                .bytes(),
        ),
        (
            "crash_and_restore_mid_payment",
            Ch::new()
                .running()
                .pay(100)
                .to(C_RESTORE, PAYER)
                .deliver(PAYEE, false, false)
                .to(C_RESTORE, PAYEE)
                .pay(5)
                .deliver(PAYEE, false, false)
                .to(C_RESTORE, PAYEE)
                .bytes(),
        ),
        (
            "forgeries",
            Ch::new()
                .running()
                .pay(50)
                .deliver(PAYEE, false, false)
                .forge(0, Some((0, 7)))
                .forge(1, None)
                .forge(2, None)
                .forge(3, Some((0, 9)))
                .forge(4, None)
                .forge(5, Some((PAYEE, 900)))
                .forge(5, Some((PAYER, 1)))
                .bytes(),
        ),
        (
            "mutated_messages",
            Ch::new()
                .mutate(PAYER, 40, 0x20)
                .running()
                .pay(70)
                .mutate(PAYEE, 30, 0x01)
                .mutate(PAYEE, 60, 0x08)
                .deliver(PAYEE, false, false)
                .bytes(),
        ),
        (
            "pay_beyond_deposit_and_close_race",
            Ch::new()
                .running()
                .pay(999)
                .pay(2)
                .pay(1)
                .to(C_CLOSE, PAYEE)
                .to(C_CLOSE, PAYER)
                .deliver(PAYEE, false, false)
                .deliver(PAYER, false, false)
                .deliver(PAYEE, false, false)
                .deliver(PAYER, false, false)
                .bytes(),
        ),
    ]
}

// `GlueOp` variants, in declaration order.
const G_OPS: u32 = 18;
const G_CONNECT: u32 = 0;
const G_HANDSHAKE: u32 = 1;
const G_EXT: u32 = 2;
const G_REQUEST: u32 = 3;
const G_CANCEL: u32 = 4;
const G_SENT: u32 = 5;
const G_BOGUS: u32 = 6;
const G_BLOCK: u32 = 7;
const G_PIECE: u32 = 8;
const G_CHANNEL: u32 = 12;
const G_TICK: u32 = 13;
const G_DISCONNECT: u32 = 14;
const G_STOP_UPLOADING: u32 = 15;
const G_CLOSE: u32 = 16;
const G_CHALLENGE: u32 = 17;
const G_INTEREST: u32 = 10;
// `Ext` and `Chan` variants.
const E_VARIANTS: u32 = 11;
const E_UNKNOWN: u32 = 7;
const E_STOP: u32 = 1;
const E_START: u32 = 2;
const E_PSTOP: u32 = 3;
const E_ACK: u32 = 4;
const E_PROMPT: u32 = 5;
const E_MESSAGE: u32 = 6;
const E_AUTH_CHALLENGE: u32 = 8;
const CH_VARIANTS: u32 = 9;
const CH_CREATED: u32 = 0;
const CH_PAYEE_READY: u32 = 1;
const CH_PAID: u32 = 2;
const CH_PROPOSED: u32 = 3;
const CH_PAYER_READY: u32 = 4;
const CH_FAILED: u32 = 6;

/// A `glue_events` script.
type Gl = Script<G_OPS>;

impl Gl {
    fn connect(&mut self, peer: u8, ext: bool, fast: bool) -> &mut Self {
        self.push(G_CONNECT, |e| e.u8(peer).bool(ext).bool(fast))
    }
    fn paying(&mut self, peer: u8, account: u8) -> &mut Self {
        self.push(G_HANDSHAKE, |e| {
            e.u8(peer)
                .variant(0, 3)
                .u8(account)
                .u8(3)
                .bool(false)
                // auth: Some(true), an honest proof of the account.
                .bool(true)
                .bool(true)
        })
    }
    fn self_account(&mut self, peer: u8) -> &mut Self {
        self.push(G_HANDSHAKE, |e| e.u8(peer).variant(1, 3))
    }
    fn interested(&mut self, peer: u8) -> &mut Self {
        self.push(G_INTEREST, |e| e.u8(peer).bool(true))
    }
    fn request(&mut self, peer: u8, index: u8, len: Option<u32>) -> &mut Self {
        let e = self.op(G_REQUEST).u8(peer).u8(index);
        match len {
            None => e.variant(0, 3),
            Some(x) => e.variant(2, 3).u32(x),
        };
        self
    }
    fn sent(&mut self, peer: u8, n: u8) -> &mut Self {
        self.push(G_SENT, |e| e.u8(peer).u8(n).variant(0, 3))
    }
    fn bogus(&mut self, peer: u8, n: u8) -> &mut Self {
        self.push(G_BOGUS, |e| e.u8(peer).u8(n))
    }
    fn cancel(&mut self, peer: u8, n: u8) -> &mut Self {
        self.push(G_CANCEL, |e| e.u8(peer).u8(n))
    }
    fn ext(&mut self, peer: u8, variant: u32) -> &mut Enc {
        self.op(G_EXT).u8(peer).variant(variant, E_VARIANTS)
    }
    fn chan(&mut self, variant: u32) -> &mut Enc {
        self.op(G_CHANNEL).variant(variant, CH_VARIANTS)
    }
    fn tick(&mut self, t: u8) -> &mut Self {
        self.push(G_TICK, |e| e.u8(t))
    }
    fn disconnect(&mut self, peer: u8) -> &mut Self {
        self.push(G_DISCONNECT, |e| e.u8(peer))
    }
}

fn glue_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let mut paid_flow = Gl::new();
    paid_flow
        .connect(0, true, true)
        .paying(0, 1)
        .interested(0)
        .request(0, 0, None)
        .request(0, 1, None);
    paid_flow.chan(CH_CREATED);
    paid_flow.chan(CH_PAYEE_READY).u8(0);
    paid_flow.chan(CH_PAID).u8(0).u32(40_000);
    paid_flow
        .sent(0, 0)
        .sent(0, 0)
        .request(0, 2, None)
        .sent(0, 0);
    paid_flow.ext(0, E_START);
    paid_flow.ext(0, E_ACK);

    let mut flood = Gl::new();
    flood.connect(1, true, false).paying(1, 2).interested(1);
    for i in 0..40 {
        flood.request(1, i, None);
    }
    flood.request(1, 3, Some(1 << 20)).request(1, 4, Some(0));
    flood.tick(30).tick(30);

    let mut hostile_pse = Gl::new();
    hostile_pse
        .connect(2, true, true)
        .paying(2, 0)
        .interested(2);
    hostile_pse.ext(2, E_STOP).bool(true).u8(9);
    hostile_pse.ext(2, E_PSTOP).bool(false);
    hostile_pse.ext(2, E_PROMPT).u32(1 << 30).u32(0).u32(1);
    hostile_pse.ext(2, E_MESSAGE).bool(true).u8(2).u16(2500);
    hostile_pse.ext(2, E_MESSAGE).bool(false).u8(0).u16(10);
    hostile_pse.ext(2, E_UNKNOWN).u8(5);
    hostile_pse.bogus(2, 1).cancel(2, 0);

    let mut never_handshakes = Gl::new();
    never_handshakes
        .connect(3, true, false)
        .request(3, 0, None)
        .tick(8)
        .tick(8)
        .request(3, 1, None)
        .connect(4, false, true)
        .request(4, 2, None)
        .connect(5, true, false)
        .self_account(5);

    let mut downloader = Gl::new();
    downloader.connect(0, true, true).paying(0, 3).interested(0);
    // The seller challenges us: its share of the channel nonce.
    downloader.ext(0, E_AUTH_CHALLENGE).u8(9);
    downloader
        .chan(CH_PROPOSED)
        .u8(3)
        .u32(1 << 20)
        .bool(true)
        .u8(2)
        // fresh: the nonce derived from the connection.
        .bool(true);
    downloader.chan(CH_PAYER_READY).u8(0);
    downloader.ext(0, E_STOP).bool(false);
    downloader.op(G_BLOCK).u8(0).u16(16_384);
    downloader.op(G_PIECE).bool(true).u16(16_384);
    downloader.chan(CH_FAILED);
    downloader.tick(100);

    let mut churn = Gl::new();
    for round in 0..6u8 {
        churn
            .connect(round, true, false)
            .paying(round, round)
            .interested(round)
            .request(round, round, None);
        churn.chan(CH_CREATED);
        churn.disconnect(round);
    }
    churn.tick(200).tick(200);
    churn.op(G_STOP_UPLOADING);
    churn.op(G_CLOSE).u8(1).bool(true);
    churn.op(G_CHALLENGE).u8(2).bool(false);

    vec![
        ("paid_flow", paid_flow.bytes()),
        ("request_flood_while_blocked", flood.bytes()),
        ("hostile_pse", hostile_pse.bytes()),
        (
            "never_handshakes_and_self_connection",
            never_handshakes.bytes(),
        ),
        ("downloader", downloader.bytes()),
        ("churn", churn.bytes()),
    ]
}

/// Pins the hand encoding above to `arbitrary`'s: the seeds decode to the operations meant.
#[test]
fn seeds_decode_as_written() {
    use arbitrary::{Arbitrary, Unstructured};
    let ops = |bytes: &[u8]| -> Vec<String> {
        let mut u = Unstructured::new(bytes);
        std::iter::from_fn(|| {
            (!u.is_empty()).then(|| {
                format!(
                    "{:?}",
                    paid_wire_fuzz::ChannelOp::arbitrary(&mut u).unwrap()
                )
            })
        })
        .collect()
    };
    let happy = ops(&channel_seeds()[1].1);
    assert_eq!(happy[0], "Deliver { to: Payer, drop: false, dup: false }");
    assert_eq!(happy[1], "Join");
    assert_eq!(happy[4], "Pay(100)");
    let forged = ops(&channel_seeds()[6].1);
    assert!(
        forged
            .iter()
            .any(|o| o == "Forge(StrangerClose(Payee, 900))"),
        "{forged:?}"
    );
    let glue = |bytes: &[u8]| -> Vec<String> {
        let mut u = Unstructured::new(bytes);
        std::iter::from_fn(|| {
            (!u.is_empty())
                .then(|| format!("{:?}", paid_wire_fuzz::GlueOp::arbitrary(&mut u).unwrap()))
        })
        .collect()
    };
    let flow = glue(&glue_seeds()[0].1);
    assert_eq!(flow[0], "Connect { peer: 0, ext: true, fast: true }");
    assert_eq!(
        flow[1],
        "Handshake(0, Paying { account: 1, pse_id: 3, terms: None, auth: Some(true) })"
    );
    assert_eq!(flow[3], "Request(0, 0, Block)");
    assert_eq!(flow[6], "Channel(PayeeReady(0))");
    assert_eq!(flow[7], "Channel(Paid(0, 40000))");
    assert_eq!(flow[8], "BytesSent(0, 0, Block)");
    let pse = glue(&glue_seeds()[2].1);
    assert!(
        pse.iter()
            .any(|o| o.starts_with("Ext(2, Message { for_us: true")),
        "{pse:?}"
    );
    assert!(pse.iter().any(|o| o == "BogusBytesSent(2, 1)"), "{pse:?}");
}

// `HubOp` variants, in declaration order.
const H_OPS: u32 = 15;
const H_PROPOSE: u32 = 0;
const H_PAY: u32 = 1;
const H_CLOSE: u32 = 2;
const H_REQUEST_FINAL: u32 = 3;
const H_DELIVER: u32 = 4;
const H_RESEND: u32 = 5;
const H_CRASH: u32 = 6;
const H_CLOSE_LEDGER: u32 = 7;
const H_CHALLENGE: u32 = 8;
const H_CHALLENGE_LEDGER: u32 = 9;
const H_DUTIES: u32 = 10;
const H_ADVANCE: u32 = 11;
const H_TAMPER: u32 = 12;
const H_HOSTILE: u32 = 13;
const H_ROLLBACK: u32 = 14;
// Party indices: payer, hub, payees from 2.
const P: u8 = 0;
const H: u8 = 1;
const B0: u8 = 2;

/// A `hub_ops` script.
type Hb = Script<H_OPS>;

impl Hb {
    /// The script's setup: `payees` in 1..=3; `hostile`: `None`, or the party index (payer, hub,
    /// first payee).
    fn hub(payees: u8, hostile: Option<u8>) -> Self {
        let mut e = Enc::default();
        e.u8(payees - 1).u8(hostile.map_or(0, |h| 3 + h));
        Self(e)
    }
    fn propose(&mut self, payee: u8, amount: u8, fee: u8) -> &mut Self {
        self.push(H_PROPOSE, |e| e.u8(payee).u8(amount).u8(fee))
    }
    fn pay(&mut self, channel: u8, delta: u8) -> &mut Self {
        self.push(H_PAY, |e| e.u8(channel).u8(delta))
    }
    fn close(&mut self, channel: u8) -> &mut Self {
        self.push(H_CLOSE, |e| e.u8(channel))
    }
    fn request_final(&mut self, by_hub: bool, channel: u8) -> &mut Self {
        self.push(H_REQUEST_FINAL, |e| e.bool(by_hub).u8(channel))
    }
    fn deliver(&mut self, pick: u8, drop: bool, dup: bool, crash: bool) -> &mut Self {
        self.push(H_DELIVER, |e| e.u8(pick).bool(drop).bool(dup).bool(crash))
    }
    fn deliver_n(&mut self, n: usize) -> &mut Self {
        for _ in 0..n {
            self.deliver(0, false, false, false);
        }
        self
    }
    fn who(&mut self, op: u32, who: u8) -> &mut Self {
        self.push(op, |e| e.u8(who))
    }
    fn close_ledger(&mut self, payee: Option<u8>) -> &mut Self {
        let e = self.op(H_CLOSE_LEDGER);
        match payee {
            None => e.bool(false),
            Some(b) => e.bool(true).u8(b),
        };
        self
    }
    fn challenge(&mut self, who: u8, channel: u8) -> &mut Self {
        self.push(H_CHALLENGE, |e| e.u8(who).u8(channel))
    }
    fn challenge_ledger(&mut self, who: u8, ledger: u8) -> &mut Self {
        self.push(H_CHALLENGE_LEDGER, |e| e.u8(who).u8(ledger))
    }
    fn advance(&mut self, secs: u8) -> &mut Self {
        self.push(H_ADVANCE, |e| e.u8(secs))
    }
    fn tamper(&mut self, op: u32, pick: u8, at: u16, xor: u8) -> &mut Self {
        self.push(op, |e| e.u8(pick).u16(at).u8(xor))
    }
}

fn hub_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let happy = Hb::hub(3, None)
        .propose(0, 99, 2)
        .propose(1, 49, 1)
        .propose(2, 149, 3)
        .deliver_n(30)
        .pay(0, 40)
        .pay(1, 10)
        .pay(2, 100)
        .deliver_n(3)
        .close(0)
        .close(1)
        .close(2)
        .deliver_n(6)
        .bytes();
    let mut lossy = Hb::hub(2, None);
    lossy.propose(0, 80, 1).propose(1, 60, 2);
    for i in 0..14u8 {
        lossy.deliver(i * 7, i % 4 == 1, i % 5 == 2, false);
    }
    lossy
        .who(H_RESEND, P)
        .who(H_RESEND, H)
        .deliver_n(10)
        .pay(0, 30)
        .pay(1, 20)
        .deliver(1, false, true, false)
        .request_final(true, 0)
        .request_final(false, 1)
        .deliver_n(8);
    let mut crashes = Hb::hub(1, None);
    crashes.propose(0, 100, 1);
    for i in 0..10u8 {
        crashes.deliver(0, false, false, i % 3 == 0);
    }
    crashes
        .who(H_CRASH, H)
        .deliver_n(6)
        .pay(0, 25)
        .who(H_CRASH, B0)
        .deliver_n(2)
        .close(0)
        .deliver(0, false, false, true)
        .deliver_n(6)
        .who(H_CRASH, P)
        .close_ledger(None);
    let silent_payer = Hb::hub(1, Some(P))
        .propose(0, 100, 2)
        .deliver_n(16)
        .pay(0, 40)
        .deliver_n(2)
        .challenge(B0, 0)
        .who(H_DUTIES, B0)
        .advance(200)
        .who(H_DUTIES, B0)
        .who(H_DUTIES, H)
        .bytes();
    let mut hostile_hub = Hb::hub(2, Some(H));
    hostile_hub.propose(0, 90, 1).propose(1, 70, 2);
    for i in 0..12u16 {
        hostile_hub
            .tamper(H_HOSTILE, i as u8, 40 + 23 * i, 1 << (i % 7))
            .deliver(0, false, false, false);
    }
    hostile_hub.deliver_n(10).pay(0, 50).deliver_n(2).close(0);
    let mut rollback = Hb::hub(1, Some(P));
    rollback
        .propose(0, 120, 2)
        .deliver_n(16)
        .pay(0, 30)
        .deliver_n(1)
        .pay(0, 30)
        .deliver_n(1)
        .who(H_ROLLBACK, 1)
        .pay(0, 10)
        .deliver_n(2)
        .close(0)
        .deliver_n(4)
        .challenge(P, 0)
        .who(H_DUTIES, P)
        .challenge_ledger(P, 0)
        .advance(120)
        .who(H_DUTIES, P)
        .who(H_DUTIES, H);
    let limits = Hb::hub(1, None)
        .propose(0, 249, 1)
        .propose(0, 150, 0)
        .propose(0, 150, 1)
        .propose(0, 150, 1)
        .propose(0, 99, 1)
        .deliver_n(40)
        .bytes();
    let mut tamper = Hb::hub(1, None);
    tamper.propose(0, 60, 1);
    for i in 0..12u16 {
        tamper
            .tamper(H_TAMPER, 0, 17 + 31 * i, 0x04)
            .deliver(0, false, false, false);
    }
    tamper.deliver_n(8).pay(0, 20).tamper(H_TAMPER, 0, 90, 0x01);
    let mut hostile_payee = Hb::hub(2, Some(B0));
    hostile_payee.propose(0, 100, 1).propose(1, 100, 1);
    for i in 0..8u16 {
        hostile_payee
            .tamper(H_HOSTILE, 0, 60 + 41 * i, 0x02)
            .deliver(0, false, false, false);
    }
    hostile_payee
        .deliver_n(12)
        .pay(0, 60)
        .pay(1, 60)
        .deliver_n(4)
        .challenge(B0, 0)
        .who(H_DUTIES, B0)
        .challenge_ledger(B0, 0)
        .who(H_DUTIES, B0)
        .advance(255)
        .who(H_DUTIES, B0);
    vec![
        ("happy_three_payees", happy),
        ("lossy_reordering_duplicates", lossy.bytes()),
        ("crashes_mid_funding_and_defunding", crashes.bytes()),
        ("payee_redeems_against_silent_payer", silent_payer),
        ("hostile_hub_resigned_mutations", hostile_hub.bytes()),
        (
            "hostile_payer_rollback_and_stale_challenges",
            rollback.bytes(),
        ),
        ("hub_limits", limits),
        ("network_tampering", tamper.bytes()),
        ("hostile_payee", hostile_payee.bytes()),
    ]
}

/// Pins the `hub_ops` encoding: the seeds decode to the operations meant.
#[test]
fn hub_seeds_decode_as_written() {
    use arbitrary::{Arbitrary, Unstructured};
    let seeds = hub_seeds();
    let mut u = Unstructured::new(&seeds[5].1);
    let cfg = paid_wire_fuzz::HubConfig::arbitrary(&mut u).unwrap();
    assert_eq!((cfg.payees % 3, cfg.hostile % 6), (0, 3));
    let ops: Vec<String> = std::iter::from_fn(|| {
        (!u.is_empty()).then(|| format!("{:?}", paid_wire_fuzz::HubOp::arbitrary(&mut u).unwrap()))
    })
    .collect();
    assert_eq!(ops[0], "Propose { payee: 0, amount: 120, fee: 2 }");
    assert_eq!(
        ops[1],
        "Deliver { pick: 0, drop: false, dup: false, crash: false }"
    );
    assert!(ops.iter().any(|o| o == "Rollback(1)"), "{ops:?}");
    assert!(
        ops.iter()
            .any(|o| o == "ChallengeLedger { who: 0, ledger: 0 }"),
        "{ops:?}"
    );
    assert!(
        ops.iter().any(|o| o == "Challenge { who: 0, channel: 0 }"),
        "{ops:?}"
    );
}

#[test]
#[ignore = "debugging aid: HUB_SEED=<name> HUB_DEBUG=1"]
fn hub_seed_debug() {
    let name = std::env::var("HUB_SEED").unwrap();
    let (_, data) = hub_seeds().into_iter().find(|(n, _)| *n == name).unwrap();
    paid_wire_fuzz::hub_ops(&data);
}

#[test]
#[ignore = "debugging aid: HUB_FILE=<path> HUB_DEBUG=1"]
fn hub_file_debug() {
    let data = fs::read(std::env::var("HUB_FILE").unwrap()).unwrap();
    paid_wire_fuzz::hub_ops(&data);
}
