//! A second stock BitTorrent client as a peer: webtorrent 1.9 (npm) in Node over plain TCP,
//! driven by `tests/webtorrent/peer.js` (no DHT, trackers, WebRTC or uTP), against our client
//! as users run it (`paid-torrent seed` / `get`, separate processes):
//! 1. webtorrent downloads from `seed --free-bytes SIZE`: it gets exactly the free allowance's
//!    whole blocks (the file if smaller), each block equal to the file's bytes there, and is
//!    then choked (not rejected over and over when the remainder is smaller than a block);
//! 2. from a paid-only seeder it gets nothing and stays connected;
//! 3. our `get` downloads what webtorrent seeds (its own `.torrent`), paying nothing, file
//!    verified.
//!
//! Install webtorrent with `scripts/install-webtorrent.sh`.

mod support;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use paid_torrent_examples::metainfo::Metainfo;
use sha1::{Digest, Sha1};
use support::*;

const LIMIT: Duration = Duration::from_secs(60);
const BLOCK: u64 = 16 << 10;

fn node_modules() -> PathBuf {
    repo_root().join(".ci/webtorrent/node_modules")
}

/// Whether node and webtorrent are there. Without them: under CI the test fails; locally it
/// prints how to install them and the caller skips.
fn webtorrent_available() -> bool {
    node_packages_available(
        &node_modules(),
        &["webtorrent"],
        "the webtorrent peer needs node and `scripts/install-webtorrent.sh`",
    )
}

/// `node peer.js ARGS…` with webtorrent on its module path.
fn webtorrent(args: &[&str]) -> Command {
    let mut cmd = Command::new("node");
    cmd.arg(repo_root().join("examples/tests/webtorrent/peer.js"))
        .args(args)
        .env("NODE_PATH", node_modules());
    cmd
}

/// Starts our seeder for `torrent` (`extra` options added) and returns it with its address.
fn our_seeder(torrent: &str, seed_dir: &Path, extra: &[&str]) -> (JsonProc, String) {
    let mut args = seed_args(torrent, seed_dir, &["--no-trackers", "--json"]);
    args.extend(extra.iter().map(ToString::to_string));
    let mut seeder = JsonProc::spawn(
        "seeder",
        cmd(&args.iter().map(String::as_str).collect::<Vec<_>>()),
    );
    let listening = seeder.expect_event(LIMIT, "listening");
    let addr = listening["addr"].as_str().expect("addr").to_owned();
    (seeder, addr)
}

/// webtorrent downloads `torrent` into `dir` from `peer` for at most `seconds`; its lines.
fn webtorrent_download(torrent: &str, dir: &Path, peer: &str, seconds: u64) -> JsonProc {
    let secs = seconds.to_string();
    let mut wt = JsonProc::spawn(
        "webtorrent",
        webtorrent(&["download", torrent, &arg(dir), peer, &secs]),
    );
    wt.expect_event(Duration::from_secs(seconds + 30), "exit");
    wt
}

/// Every block webtorrent received is the file's bytes at its place, none twice; their total.
fn check_blocks(wt: &JsonProc, data: &[u8], piece_length: u64) -> u64 {
    let mut seen = HashSet::new();
    let mut total = 0;
    for b in wt.events("block") {
        let index = b["index"].as_u64().unwrap();
        let offset = b["offset"].as_u64().unwrap();
        let length = b["length"].as_u64().unwrap();
        assert!(seen.insert((index, offset)), "block received twice: {b}");
        let start = usize::try_from(index * piece_length + offset).unwrap();
        let end = start + usize::try_from(length).unwrap();
        assert!(end <= data.len(), "block past the end: {b}");
        let expected = alloy_primitives::hex::encode(Sha1::digest(&data[start..end]));
        assert_eq!(b["sha1"], expected.as_str(), "block content: {b}");
        total += length;
    }
    total
}

fn piece_length(torrent: &str) -> u64 {
    u64::from(
        Metainfo::load(Path::new(torrent))
            .unwrap()
            .info
            .piece_length,
    )
}

#[test]
fn webtorrent_gets_the_free_allowance_from_our_seeder() {
    if !webtorrent_available() {
        return;
    }
    // (file size, --free-bytes, bytes webtorrent gets): a whole number of blocks, a remainder
    // smaller than a block (62.5 blocks: it gets 62, then is choked), a file smaller than
    // the allowance (the whole file).
    for (size, free, expected) in [
        (3 << 20, "1MiB", 1 << 20),
        (3 << 20, "1000KiB", 62 * BLOCK),
        (700_000, "1MiB", 700_000),
    ] {
        let case = format!("{size} bytes, --free-bytes {free}");
        let dir = tempdir();
        let (seed_dir, data, torrent) = seeded_torrent(dir.path(), "movie.bin", size, 31);
        let plen = piece_length(&torrent);
        let (mut seeder, addr) = our_seeder(&torrent, &seed_dir, &["--free-bytes", free]);
        let wt_dir = dir.path().join("wt");
        let wt = webtorrent_download(&torrent, &wt_dir, &addr, 8);
        let exit = wt.last("exit").unwrap().clone();
        assert_eq!(check_blocks(&wt, &data, plen), expected, "{case}: {exit}");
        assert_eq!(exit["downloaded"], expected, "{case}: {exit}");
        if expected == size as u64 {
            assert_eq!(exit["reason"], "done", "{case}: {exit}");
            assert_eq!(
                std::fs::read(wt_dir.join("movie.bin")).unwrap(),
                data,
                "{case}"
            );
        } else {
            assert_eq!(exit["reason"], "timeout", "{case}: {exit}");
            // Choked once the allowance cannot cover a block; rejected only the requests it
            // had in flight then (BEP 6), not the same ones over and over.
            assert_eq!(exit["choked"], true, "{case}: {exit}");
            let rejects = exit["rejects"].as_u64().unwrap();
            assert!(rejects <= 256, "{case}: {rejects} rejects: {exit}");
        }
        seeder.terminate();
    }
}

#[test]
fn our_paid_only_seeder_gives_webtorrent_nothing() {
    let Some(dir) = tempdir_if(webtorrent_available()) else {
        return;
    };
    let (seed_dir, _data, torrent) = seeded_torrent(dir.path(), "movie.bin", 2 << 20, 32);
    let (mut seeder, addr) = our_seeder(&torrent, &seed_dir, &[]);
    let wt = webtorrent_download(&torrent, &dir.path().join("wt"), &addr, 5);
    let exit = wt.last("exit").unwrap();
    assert_eq!(exit["reason"], "timeout", "{exit}");
    assert_eq!(exit["downloaded"], 0, "{exit}");
    assert!(wt.events("block").is_empty());
    assert!(wt.events("unchoke").is_empty(), "never unchoked");
    assert_eq!(exit["choked"], true, "{exit}");
    assert_eq!(
        wt.events("wire").len(),
        1,
        "connected to us: {:#?}",
        wt.seen
    );
    seeder.terminate();
}

#[test]
fn our_get_downloads_from_a_webtorrent_seeder() {
    let Some(dir) = tempdir_if(webtorrent_available()) else {
        return;
    };
    let data = content((3 << 20) + 4321, 33);
    let file = dir.path().join("movie.bin");
    write(&file, &data);
    let torrent = dir.path().join("wt.torrent");
    let mut wt = JsonProc::spawn(
        "webtorrent",
        webtorrent(&["seed", &arg(&file), &arg(&torrent)]),
    );
    let port = wt.expect_event(LIMIT, "listening")["port"]
        .as_u64()
        .expect("port");
    let out = dir.path().join("ours");
    // Our client as a user runs it: paid by default; webtorrent is a free peer.
    let (stdout, events) = run_get(&[
        &arg(&torrent),
        "--peer",
        &format!("127.0.0.1:{port}"),
        "--no-trackers",
        "--dir",
        &arg(&out),
    ]);
    let done = events
        .iter()
        .find(|v| v["event"] == "done")
        .unwrap_or_else(|| panic!("no done: {stdout}"));
    assert_eq!(done["bytes"], data.len() as u64, "{done}");
    assert_eq!(done["paid"], 0, "{done}");
    assert!(
        events.iter().any(|v| v["event"] == "peer_not_paying"),
        "webtorrent is a free peer: {stdout}"
    );
    assert_eq!(std::fs::read(out.join("movie.bin")).unwrap(), data);
    // What webtorrent reports it uploaded is the file, at least.
    let uploaded = wt
        .wait_for(Duration::from_secs(5), |v| {
            v["event"] == "uploaded" && v["bytes"].as_u64() >= Some(data.len() as u64)
        })
        .unwrap_or_else(|| panic!("webtorrent's upload count: {:#?}", wt.events("uploaded")));
    assert!(uploaded["bytes"].as_u64().unwrap() >= data.len() as u64);
    wt.terminate();
}
