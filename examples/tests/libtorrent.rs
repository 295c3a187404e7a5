//! Interoperability with a stock BitTorrent client: libtorrent 2.0 (Debian `python3-libtorrent`)
//! driven by `tests/lt_peer.py` under `/usr/bin/python3`, over loopback.
//!
//! 1. libtorrent downloads from our seeder (free) and verifies every piece.
//! 2. We download a multi-file torrent from a libtorrent seeder, verify it, and never send an
//!    extension message to it.

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use paid_torrent_examples::metainfo::Metainfo;
use paid_torrent_examples::peer::PeerConfig;
use paid_torrent_examples::picker::Strategy;
use paid_torrent_examples::session;
use paid_torrent_examples::storage::OpenMode;
use paid_torrent_examples::torrent::Torrent;
use support::*;
use tokio::net::TcpListener;

const LIMIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn libtorrent_downloads_from_our_free_seeder() {
    if !libtorrent_available() {
        return;
    }
    let dir = tempdir();
    let (seed_dir, lt_dir) = (dir.path().join("seed"), dir.path().join("lt"));
    // 6 MiB + a short last piece.
    let data = content((6 << 20) + 12345, 1);
    write(&seed_dir.join("movie.bin"), &data);
    let meta = Metainfo::create(&seed_dir.join("movie.bin"), 256 << 10, None).unwrap();
    let torrent_file = dir.path().join("movie.torrent");
    std::fs::write(&torrent_file, meta.to_bytes().unwrap()).unwrap();

    let seeder = Torrent::open(meta, &seed_dir, OpenMode::ReadOnly, Strategy::RarestFirst).unwrap();
    assert!(seeder.is_complete());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(session::serve(
        seeder.clone(),
        listener,
        PeerConfig::default(),
        None,
    ));

    // libtorrent with its default encryption policy: it tries MSE first, we close, it retries
    // in plaintext.
    let mut lt = LtPeer::spawn(&[
        "--torrent",
        &arg(&torrent_file),
        "--save",
        &arg(&lt_dir),
        "--mode",
        "download",
        "--peer",
        &addr.to_string(),
        "--timeout",
        "50",
        "--encryption",
        "default",
    ]);
    let done = tokio::task::spawn_blocking(move || {
        let exit = lt.wait_event(LIMIT, "exit");
        (lt, exit)
    });
    let (lt, exit) = done.await.unwrap();
    server.abort();
    assert_eq!(
        exit.expect("lt_peer exit")["reason"],
        "finished",
        "{:#?}",
        lt.seen
    );
    assert!(
        lt.events("hash_failed").is_empty(),
        "libtorrent saw a bad piece"
    );
    assert_eq!(std::fs::read(lt_dir.join("movie.bin")).unwrap(), data);
    assert_eq!(
        seeder.counters().uploaded.load(Ordering::Relaxed),
        data.len() as u64
    );
    // Apart from its own encrypted attempt, libtorrent never dropped us.
    for d in lt.events("peer_disconnected") {
        let err = d["error"].as_str().unwrap_or_default();
        assert!(
            err == "End of file" || err == "torrent finished",
            "libtorrent dropped us: {d}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn we_download_multi_file_from_libtorrent_seeder() {
    if !libtorrent_available() {
        return;
    }
    let dir = tempdir();
    let (lt_dir, our_dir) = (dir.path().join("lt"), dir.path().join("ours"));
    let files = [
        ("album/01.flac", content(3 << 20, 2)),
        ("album/cover.jpg", content(70_000, 3)),
        ("album/notes/readme.txt", content(1_234_567, 4)),
    ];
    for (p, d) in &files {
        write(&lt_dir.join(p), d);
    }
    let meta = Metainfo::create(&lt_dir.join("album"), 64 << 10, None).unwrap();
    let torrent_file = dir.path().join("album.torrent");
    std::fs::write(&torrent_file, meta.to_bytes().unwrap()).unwrap();

    let mut lt = LtPeer::spawn(&[
        "--torrent",
        &arg(&torrent_file),
        "--save",
        &arg(&lt_dir),
        "--mode",
        "seed",
        "--timeout",
        "50",
    ]);
    let port = lt.port();
    let lt_addr = format!("127.0.0.1:{port}").parse().unwrap();
    let (proxy, recorded) = recording_proxy(lt_addr).await;
    let leecher =
        Torrent::open(meta, &our_dir, OpenMode::ReadWrite, Strategy::RarestFirst).unwrap();
    tokio::time::timeout(
        LIMIT,
        session::download(leecher.clone(), &[proxy], PeerConfig::default(), 20, None),
    )
    .await
    .expect("download timed out");
    assert!(leecher.is_complete());
    for (p, d) in &files {
        assert_eq!(&std::fs::read(our_dir.join(p)).unwrap(), d, "{p}");
    }
    // A fresh open re-verifies everything from disk.
    let meta = Metainfo::load(&torrent_file).unwrap();
    let again = Torrent::open(meta, &our_dir, OpenMode::ReadOnly, Strategy::RarestFirst).unwrap();
    assert!(again.is_complete());

    let rec = recorded.lock().unwrap().clone();
    assert!(rec.parse_error.is_none(), "{rec:?}");
    assert!(
        rec.messages.iter().any(|m| m.0 == Some(6)),
        "we sent requests"
    );
    // BEP 10: only the extended handshake (ext id 0); never an extension message.
    assert!(
        rec.messages
            .iter()
            .all(|(_, ext)| ext.is_none_or(|id| id == 0)),
        "we sent an extension message to libtorrent: {rec:?}"
    );
    lt.drain();
    for d in lt
        .events("peer_disconnected")
        .iter()
        .chain(lt.events("peer_error").iter())
    {
        let err = d["error"].as_str().unwrap_or_default();
        assert!(
            !err.contains("invalid") && !err.contains("protocol"),
            "libtorrent: {d}"
        );
    }
}
