//! Interoperability with web3torrent's paid-streaming extension: a Node peer
//! (`tests/web3torrent/peer.js`, on `bittorrent-protocol@3.1.1` and `bencode@2.0.1`, the versions
//! web3torrent pinned) that follows the original's observable rules, over loopback.
//!
//! 1. It leeches from our paid seeder: our handshake keys, STOP with the channel id on its first
//!    request, our proposal accepted (its recipient is its `pseAccount` string) and acked, the
//!    channel id it recomputes from `JSON.parse` equal to ours, and no piece before payment.
//! 2. It seeds to our downloader: its notices acked one by one, its Nitro v1 wallet message
//!    accepted (a recipient in any case) and not understood, its STOPs never paid.
//!
//! Payments themselves do not interoperate: web3torrent's wallet spoke Nitro v1, we speak
//! Nitro v2 vouchers. Install the Node packages with `scripts/install-web3torrent-peer.sh`.

mod support;

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::Duration;

use alloy_primitives::hex;
use paid_torrent_examples::metainfo::Metainfo;
use paid_torrent_examples::paid::TORRENT;
use paid_torrent_examples::picker::Strategy;
use paid_torrent_examples::storage::OpenMode;
use paid_torrent_examples::torrent::Torrent;
use payment_channel::message::{Envelope, Message, Propose};
use payment_channel::sign::Signature;
use payment_channel::state::FixedPart;
use payment_channel::{Address, U256};
use serde_json::{Value, json};
use support::*;
use torrent_glue::{IdentityConfig, LegacyPolicy};

const LIMIT: Duration = Duration::from_secs(40);
const ACK: &str = "d7:command3:ack4:datade8:msg_typei0ee";

/// The web3torrent peer's signing account: mixed case when checksummed.
const JS_ACCOUNT: &str = "0x5050a4f4b3f9338c3472dcc01a87c76a144b3c9c";
const JS_OUTCOME: &str = "0x1a642f0e3c3af545e7acbd38b07251b3990914f1";

fn node_modules() -> PathBuf {
    repo_root().join(".ci/interop/node_modules")
}

fn script(name: &str) -> PathBuf {
    repo_root().join("examples/tests/web3torrent").join(name)
}

/// Whether node and the npm packages are there. Without them: under CI the test fails; locally
/// it prints how to install them and the caller skips.
fn web3torrent_peer_available() -> bool {
    node_packages_available(
        &node_modules(),
        &["bittorrent-protocol", "bencode", "js-sha3"],
        "the web3torrent peer needs node and `scripts/install-web3torrent-peer.sh`",
    )
}

fn node(args: &[&str]) -> Command {
    let mut cmd = Command::new("node");
    cmd.args(args).env("NODE_PATH", node_modules());
    cmd
}

/// The web3torrent peer (`peer.js`) with `opts` and its account, outcome address and timing
/// (it exits after 2.5 s without a message, or after 30 s).
fn js_peer(name: &'static str, mut opts: Value) -> JsonProc {
    for (key, value) in [
        ("account", json!(JS_ACCOUNT)),
        ("outcome", json!(JS_OUTCOME)),
        ("quietMs", json!(2500)),
        ("maxMs", json!(30000)),
    ] {
        opts[key] = value;
    }
    JsonProc::spawn(
        name,
        node(&[&script("peer.js").to_string_lossy(), &opts.to_string()]),
    )
}

/// Waits for `js` to exit, prints the exchange under `title` and asserts that the peer exited
/// because the exchange went quiet.
async fn quiet_exit(js: JsonProc, title: &str) -> JsonProc {
    let (js, exit) = js.exit_within(LIMIT).await;
    transcript(&js, title);
    assert_eq!(exit.expect("exit")["reason"], "quiet", "{:#?}", js.seen);
    js
}

fn identity() -> IdentityConfig {
    // web3torrent sends its account and no proof of it: believed, as web3torrent does.
    IdentityConfig::default().with_legacy(LegacyPolicy::TrustClaimedAccount)
}

fn checksummed(address: &str) -> String {
    address.parse::<Address>().unwrap().to_checksum(None)
}

/// Prints the exchange of a run as a transcript (runs of the same line collapsed).
fn transcript(js: &JsonProc, title: &str) {
    println!("--- transcript: {title}");
    let mut lines: Vec<(String, usize)> = Vec::new();
    for v in &js.seen {
        let event = v["event"].as_str().unwrap_or_default();
        let raw = v["raw"].as_str().unwrap_or_default();
        let line = match event {
            "send" => format!("web3torrent -> us : {raw}"),
            "recv" => format!("us -> web3torrent : {raw}"),
            "extended_handshake" => format!(
                "us -> web3torrent : extended handshake, keys {} m {} pseAccount {}",
                v["keys"], v["m"], v["pseAccount"]
            ),
            "request" | "peer_request" => format!(
                "   ({} piece {} offset {})",
                if event == "request" {
                    "web3torrent requests"
                } else {
                    "we request"
                },
                v["index"],
                v["offset"]
            ),
            "piece" | "payment" | "proposal" | "unchoke" | "choke" | "exit" => {
                format!("   ({event}) {v}")
            }
            _ => continue,
        };
        match lines.last_mut() {
            Some((last, n)) if *last == line => *n += 1,
            _ => lines.push((line, 1)),
        }
    }
    for (line, n) in lines {
        if n > 1 {
            println!("{line}   [x{n}]");
        } else {
            println!("{line}");
        }
    }
    println!("--- end of transcript");
}

fn position(seen: &[Value], pred: impl Fn(&Value) -> bool) -> Option<usize> {
    seen.iter().position(pred)
}

/// Every notice the peer accepted got exactly one ack, right after it.
fn assert_one_ack_per_accepted_notice(seen: &[Value], acks_from: &str) {
    let notices: Vec<&Value> = seen
        .iter()
        .filter(|v| v["event"] == "send" || v["event"] == "recv")
        .collect();
    for (i, v) in notices.iter().enumerate() {
        let is_from_other = v["event"] == acks_from;
        let command = v["command"].as_str().unwrap_or_default();
        if !is_from_other || command == "ack" || v["accepted"] == false {
            continue;
        }
        let answer = notices[i + 1..]
            .iter()
            .find(|n| n["event"] != acks_from)
            .unwrap_or_else(|| panic!("no answer to {v}"));
        assert_eq!(answer["raw"], ACK, "the answer to {v}");
    }
    let received = notices
        .iter()
        .filter(|v| v["event"] == acks_from && v["command"] != "ack" && v["accepted"] != false)
        .count();
    let acks = notices
        .iter()
        .filter(|v| v["event"] != acks_from && v["raw"] == ACK)
        .count();
    assert_eq!(acks, received, "one ack per accepted notice");
}

/// Item 2 of issue 16: JavaScript reads our JSON exactly. A proposal with a 64-bit nonce is
/// parsed by `JSON.parse` in Node, which recomputes the channel id from the parsed values.
#[test]
fn node_recomputes_our_channel_id_from_json_parse() {
    if !web3torrent_peer_available() {
        return;
    }
    let fixed = FixedPart {
        participants: vec![JS_ACCOUNT.parse().unwrap(), JS_OUTCOME.parse().unwrap()],
        channel_nonce: 4_211_659_201_689_351_742,
        app_definition: Address::repeat_byte(0x33),
        challenge_duration: 600,
    };
    let mut rsv = [7u8; 65];
    rsv[64] = 27;
    let envelope = Envelope {
        recipient: JS_ACCOUNT.parse().unwrap(),
        sender: JS_OUTCOME.parse().unwrap(),
        data: Message::Propose(Propose {
            fixed: fixed.clone(),
            deposit: U256::from(1u64 << 40),
            price: Some(U256::from(1)),
            asset: Address::ZERO,
            signature: Signature::from_rsv(&rsv).unwrap(),
        }),
    };
    let run = |json: &str| -> Value {
        let out = node(&[&script("nitro.js").to_string_lossy(), json])
            .output()
            .expect("node");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let json = envelope.to_json();
    let parsed = run(&json);
    assert_eq!(
        parsed["channelId"],
        fixed.channel_id().to_string(),
        "{json}"
    );
    assert_eq!(parsed["nonceType"], "string");
    assert_eq!(parsed["recipient"], checksummed(JS_ACCOUNT));
    assert_eq!(parsed["sender"], checksummed(JS_OUTCOME));
    // The old form (a JSON number) is what issue 16 saw: JavaScript rounds it and gets
    // another channel.
    let old = json.replace(r#""4211659201689351742""#, "4211659201689351742");
    assert_ne!(old, json);
    assert_ne!(run(&old)["channelId"], fixed.channel_id().to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web3torrent_leecher_gets_stop_with_channel_id_and_no_piece_before_payment() {
    if !web3torrent_peer_available() {
        return;
    }
    let dir = tempdir();
    let data = content((1 << 20) + 999, 21);
    let (torrent, _) = seed_movie(dir.path(), &data, 256 << 10);
    let info_hash = hex::encode(torrent.meta().info_hash);
    let (seller, addr) = paid_seller(torrent, None, identity()).await;

    let js = js_peer(
        "web3torrent leecher",
        json!({"mode": "leech", "infoHash": info_hash, "peer": addr.to_string()}),
    );
    let js = quiet_exit(js, "a web3torrent leecher and our seeder").await;
    let seen = &js.seen;

    // Our extended handshake: the keys web3torrent reads.
    let hs = js
        .last("extended_handshake")
        .expect("our extended handshake");
    for key in ["m", "outcomeAddress", "pseAccount"] {
        assert!(
            hs["keys"].as_array().unwrap().iter().any(|k| k == key),
            "{hs}"
        );
    }
    assert!(
        hs["m"]["paidStreamingExtension"].as_u64().unwrap() > 0,
        "{hs}"
    );
    assert_eq!(hs["pseAccount"], seller.account.to_checksum(None));

    // STOP with the channel id, on its first request.
    let ids = seller.client.channel_ids();
    assert_eq!(ids.len(), 1, "one channel proposed");
    let id = ids[0].to_string();
    let first_request = position(seen, |v| v["event"] == "request").expect("it requested");
    let first_stop =
        position(seen, |v| v["event"] == "recv" && v["command"] == "stop").expect("we sent STOP");
    assert!(first_request < first_stop);
    assert_eq!(
        seen[first_stop]["raw"],
        format!("d7:command4:stop4:data66:{id}8:msg_typei0ee")
    );
    assert!(
        seen.iter()
            .filter(|v| v["event"] == "recv" && v["command"] == "stop")
            .all(|v| v["raw"] == seen[first_stop]["raw"]),
        "every STOP names the channel"
    );
    // Our proposal accepted (recipient = its pseAccount string), acked, and the channel id it
    // recomputes from JSON.parse is ours.
    let messages: Vec<&Value> = seen
        .iter()
        .filter(|v| v["event"] == "recv" && v["command"] == "message")
        .collect();
    assert!(!messages.is_empty());
    for m in &messages {
        assert_eq!(m["accepted"], true, "{m}");
        assert_eq!(m["recipient"], checksummed(JS_ACCOUNT));
        assert_eq!(m["sender"], seller.account.to_checksum(None));
    }
    let proposal = js.last("proposal").expect("it read our proposal");
    assert_eq!(proposal["channelId"], id);
    assert_eq!(proposal["nonceType"], "string");
    assert_one_ack_per_accepted_notice(seen, "recv");
    // STOP starts one payment (that it cannot make in Nitro v2), for our channel; a STOP while
    // stopped is only acked.
    let payments = js.events("payment");
    assert_eq!(payments.len(), 1, "{payments:?}");
    assert_eq!(payments[0]["channelId"], id);
    // Nothing served before payment.
    assert!(js.events("piece").is_empty(), "a piece before payment");
    assert_eq!(
        seller.torrent.counters().uploaded.load(Ordering::Relaxed),
        0
    );
    assert!(js.events("socket_error").is_empty() && js.events("closed").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web3torrent_seeder_notices_are_acked_and_its_stops_never_paid() {
    if !web3torrent_peer_available() {
        return;
    }
    let dir = tempdir();
    let (src_dir, our_dir) = (dir.path().join("src"), dir.path().join("ours"));
    let data = content((1 << 20) + 4321, 22);
    write(&src_dir.join("song.flac"), &data);
    let meta = Metainfo::create(&src_dir.join("song.flac"), 128 << 10, None).unwrap();
    let (info_hash, pieces) = (hex::encode(meta.info_hash), meta.info.piece_count());
    let torrent =
        Torrent::open(meta, &our_dir, OpenMode::ReadWrite, Strategy::RarestFirst).unwrap();

    let mut js = js_peer(
        "web3torrent seeder",
        json!({"mode": "seed", "infoHash": info_hash, "pieces": pieces, "lowerCaseCopy": true}),
    );
    let port = js.expect_event(Duration::from_secs(10), "listening")["port"]
        .as_u64()
        .unwrap();
    let buyer = paid_buyer(torrent.clone(), 1 << 18, identity()).await;
    buyer
        .node
        .connect(format!("127.0.0.1:{port}").parse().unwrap(), TORRENT)
        .await
        .unwrap();
    let js = quiet_exit(js, "our downloader and a web3torrent seeder").await;
    let seen = &js.seen;

    let hs = js
        .last("extended_handshake")
        .expect("our extended handshake");
    assert_eq!(hs["pseAccount"], buyer.account.to_checksum(None));
    assert!(!js.events("peer_request").is_empty(), "we requested");
    // Its wallet message, to our account as we advertise it and in lower case: both taken
    // (acked) though not understood (Nitro v1).
    let sent_messages = seen
        .iter()
        .filter(|v| v["event"] == "send" && v["command"] == "message")
        .count();
    assert_eq!(sent_messages, 2);
    let stops = seen
        .iter()
        .filter(|v| v["event"] == "send" && v["command"] == "stop")
        .count();
    assert!(stops >= 1);
    assert_one_ack_per_accepted_notice(seen, "send");
    // We never paid, never sent a channel message, opened nothing, and got nothing.
    assert!(
        seen.iter()
            .filter(|v| v["event"] == "recv")
            .all(|v| v["raw"] == ACK),
        "only acks from us"
    );
    assert!(buyer.client.channel_ids().is_empty());
    assert!(!torrent.is_complete());
    assert!(js.events("socket_error").is_empty() && js.events("closed").is_empty());
}
