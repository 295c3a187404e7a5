//! Peers that know only the `.torrent` find each other through a real tracker (Debian
//! `opentracker`, started here on 127.0.0.1) and complete a paid download between two
//! processes on anvil; the tracker's scrape then counts the completed download. Over HTTP
//! (BEP 3 with compact peers) and over UDP (BEP 15). The UDP run also keeps seeding
//! (`get --seed`): after the original seeder leaves, a third peer buys the file from the
//! downloader. A downloader with only a magnet link (whose `tr` names the tracker) finds the
//! seeder the same way, fetches the metadata from it and buys the file. Needs the `ethereum`
//! feature, anvil, the contract artifacts and opentracker.

#![cfg(feature = "ethereum")]

mod support;

use std::time::Duration;

use alloy_primitives::hex;
use paid_torrent_examples::tracker::{ScrapeStats, Tracker, TrackerUrl};
use support::*;

const SIZE: usize = 4 << 20;

fn scrape(url: &str, info_hash: &str) -> ScrapeStats {
    let mut hash = [0u8; 20];
    hash.copy_from_slice(&hex::decode(info_hash).unwrap());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut t = Tracker::new(TrackerUrl::parse(url).unwrap());
        t.scrape(hash).await.expect("scrape")
    })
}

/// Waits until the tracker's scrape of `info_hash` satisfies `pred` (announces arrive a
/// little after the events that cause them).
fn scrape_until(url: &str, info_hash: &str, pred: impl Fn(&ScrapeStats) -> bool) -> ScrapeStats {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let s = scrape(url, info_hash);
        if pred(&s) || std::time::Instant::now() > deadline {
            return s;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `seed` (paid, with `key`) for `torrent`, once the tracker at `url` has registered it.
fn registered_seeder(
    anvil: &Anvil,
    art: &str,
    key: &str,
    torrent: &str,
    seed_dir: &std::path::Path,
    url: &str,
) -> JsonProc {
    let seed_dir = arg(seed_dir);
    let args = [
        "seed",
        torrent,
        "--dir",
        &seed_dir,
        "--listen",
        "127.0.0.1:0",
        "--challenge-duration",
        "10s",
    ];
    let mut seeder = JsonProc::spawn("seeder", chain_cmd(anvil, art, key, &args));
    seeder.expect_event(Duration::from_secs(60), "listening");
    let announced = seeder.expect_event(Duration::from_secs(30), "tracker_announced");
    assert_eq!(announced["announce"], "started");
    assert_eq!(announced["tracker"], url);
    assert_eq!(
        scrape(url, &info_hash(torrent)).complete,
        1,
        "the seeder is registered"
    );
    seeder
}

/// A seeder and a downloader that know only the .torrent (no `--peer`) complete a paid
/// transfer through the tracker at `url_of(port)`; returns what the test needs to go on.
fn paid_download_through_tracker(udp: bool) {
    let Some((anvil, art)) = shared_chain() else {
        return;
    };
    let port = OpenTracker::free_port();
    let url = if udp {
        format!("udp://127.0.0.1:{port}")
    } else {
        format!("http://127.0.0.1:{port}/announce")
    };
    let dir = tempdir();
    let (seed_dir, data, torrent) =
        seeded_torrent_with(dir.path(), "movie.bin", SIZE, 3, std::slice::from_ref(&url));
    let hash = info_hash(&torrent);
    let Some(_tracker) = OpenTracker::start(port, std::slice::from_ref(&hash)) else {
        return;
    };
    // Each test has its own anvil: the same dev accounts serve both.
    let keys = (0, 2, 3);

    let mut seeder = registered_seeder(&anvil, &art, dev_key(keys.0), &torrent, &seed_dir, &url);

    let out1 = arg(&dir.path().join("dl1"));
    let mut get1: Vec<&str> = vec![
        "get",
        &torrent,
        "--dir",
        &out1,
        "--timeout",
        "5m",
        "--granularity",
        "512KiB",
    ];
    if udp {
        // Keep seeding afterwards, on an address the tracker hands out.
        get1.extend(["--seed", "--listen", "127.0.0.1:0", "--price", "2wei"]);
    }
    let mut buyer = JsonProc::spawn("buyer", chain_cmd(&anvil, &art, dev_key(keys.1), &get1));
    let done = buyer.expect_event(Duration::from_secs(300), "done");
    assert_eq!(
        std::fs::read(dir.path().join("dl1/movie.bin")).unwrap(),
        data
    );
    assert_eq!(num(&done, "paid"), SIZE as u128, "1 wei per byte");
    assert!(
        !buyer.events("peer_connected").is_empty(),
        "connected to a peer the tracker named (no --peer given)"
    );
    let found = buyer.events("tracker_announced");
    assert!(
        found
            .iter()
            .any(|e| e["announce"] == "started" && num(e, "peers") >= 1),
        "the tracker named the seeder: {found:?}"
    );
    let stats = scrape_until(&url, &hash, |s| s.downloaded >= 1);
    assert_eq!(
        stats.downloaded, 1,
        "the tracker counted the completed download"
    );

    if !udp {
        assert!(buyer.child.wait().expect("buyer exit").success());
        let stats = scrape_until(&url, &hash, |s| s.incomplete == 0);
        assert_eq!(stats.incomplete, 0, "the downloader said `stopped`");
        seeder.terminate();
        let stats = scrape_until(&url, &hash, |s| s.complete == 0);
        assert_eq!(stats.complete, 0, "the seeder said `stopped`");
        return;
    }

    // ---- keep seeding: the seeder leaves, a third peer buys from the downloader -------------
    buyer.expect_event(Duration::from_secs(10), "seeding");
    seeder.terminate();
    let out2 = arg(&dir.path().join("dl2"));
    let mut third = JsonProc::spawn(
        "third",
        chain_cmd(
            &anvil,
            &art,
            dev_key(keys.2),
            &[
                "get",
                &torrent,
                "--dir",
                &out2,
                "--timeout",
                "5m",
                "--max-price",
                "2wei",
            ],
        ),
    );
    let done = third.expect_event(Duration::from_secs(300), "done");
    assert_eq!(
        std::fs::read(dir.path().join("dl2/movie.bin")).unwrap(),
        data
    );
    assert_eq!(
        num(&done, "paid"),
        2 * SIZE as u128,
        "paid the keep-seeding downloader at its price"
    );
    assert!(third.child.wait().expect("third exit").success());
    buyer.drain();
    let received: u128 = buyer
        .events("payment_received")
        .iter()
        .map(|e| num(e, "delta"))
        .sum();
    assert_eq!(
        received,
        2 * SIZE as u128,
        "the downloader was paid as a seller"
    );
    let stats = scrape_until(&url, &hash, |s| s.downloaded >= 2);
    assert_eq!(stats.downloaded, 2);
    buyer.terminate();
}

#[test]
fn http_tracker_brings_seeder_and_downloader_together() {
    paid_download_through_tracker(false);
}

#[test]
fn udp_tracker_brings_them_together_and_get_keeps_seeding() {
    paid_download_through_tracker(true);
}

/// A downloader that knows only the magnet link (its `tr` names the tracker; no `--peer`)
/// finds the paid seeder through the tracker, fetches the metadata from it (BEP 9, served by
/// the paid seeder) and buys the file.
#[test]
fn a_magnet_link_with_a_tracker_is_enough_for_a_paid_download() {
    let Some((anvil, art)) = shared_chain() else {
        return;
    };
    let port = OpenTracker::free_port();
    let url = format!("http://127.0.0.1:{port}/announce");
    let dir = tempdir();
    let (seed_dir, data, torrent) =
        seeded_torrent_with(dir.path(), "movie.bin", SIZE, 4, std::slice::from_ref(&url));
    let hash = info_hash(&torrent);
    let Some(_tracker) = OpenTracker::start(port, std::slice::from_ref(&hash)) else {
        return;
    };
    let o = cmd(&["info", &torrent, "--json"]).output().unwrap();
    let info: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let magnet = info["magnet"].as_str().unwrap().to_owned();
    assert!(magnet.contains("&tr=http%3A%2F%2F127.0.0.1"), "{magnet}");
    let mut seeder = registered_seeder(&anvil, &art, dev_key(0), &torrent, &seed_dir, &url);

    let out = arg(&dir.path().join("dl"));
    let get = ["get", &magnet, "--dir", &out, "--timeout", "5m"];
    let mut buyer = JsonProc::spawn("buyer", chain_cmd(&anvil, &art, dev_key(2), &get));
    let got = buyer.expect_event(Duration::from_secs(60), "metadata");
    assert_eq!(got["info_hash"], hash.as_str());
    let done = buyer.expect_event(Duration::from_secs(300), "done");
    assert_eq!(
        std::fs::read(dir.path().join("dl/movie.bin")).unwrap(),
        data
    );
    assert_eq!(num(&done, "paid"), SIZE as u128, "1 wei per byte");
    assert!(buyer.child.wait().expect("buyer exit").success());
    seeder.terminate();
}
