//! Interoperability with a stock BitTorrent client: libtorrent 2.0 (Debian `python3-libtorrent`)
//! driven by `tests/lt_peer.py` under `/usr/bin/python3`, over loopback.
//!
//! With payments on (torrent-glue's adapter, the paid-streaming extension advertised):
//! 1. libtorrent downloads from our paid seeder: with a free allowance for peers without the
//!    extension it completes and verifies the file; paid-only, it stays connected and gets
//!    nothing, and never drops us for a protocol error.
//! 2. We download from a libtorrent seeder: the file completes and verifies, and we never send
//!    our extension to it (a recording proxy parses everything we send).
//!
//! The same two directions with the plain (unpaid) peer loop of `paid_torrent_examples::peer`.

mod support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use paid_torrent_examples::metainfo::Metainfo;
use paid_torrent_examples::paid::TORRENT;
use paid_torrent_examples::peer::PeerConfig;
use paid_torrent_examples::picker::Strategy;
use paid_torrent_examples::session;
use paid_torrent_examples::storage::OpenMode;
use paid_torrent_examples::torrent::Torrent;
use support::*;
use torrent_glue::IdentityConfig;

const LIMIT: Duration = Duration::from_secs(60);

/// A libtorrent seeder ([`LtPeer::seed`]) in a fresh temporary directory, and the folder our
/// client downloads into.
struct LtSeeding {
    /// The temporary directory, removed on drop.
    _dir: tempfile::TempDir,
    our_dir: PathBuf,
    lt: LtPeer,
    addr: SocketAddr,
    meta: Metainfo,
    torrent_file: PathBuf,
}

impl LtSeeding {
    /// libtorrent seeding `files` as the torrent of `root`; `None` (skip) without libtorrent.
    fn start(root: &str, files: &[(&str, Vec<u8>)], piece_length: u32) -> Option<Self> {
        let (dir, our_dir) = libtorrent_tempdir("ours")?;
        let (lt, addr, meta, torrent_file) = LtPeer::seed(dir.path(), root, files, piece_length);
        Some(Self {
            _dir: dir,
            our_dir,
            lt,
            addr,
            meta,
            torrent_file,
        })
    }

    /// Our torrent, opened for writing in `our_dir`, and a [`recording_proxy`] to libtorrent.
    async fn leecher_through_proxy(&self) -> (Arc<Torrent>, SocketAddr, Arc<Mutex<Recorded>>) {
        let (proxy, recorded) = recording_proxy(self.addr).await;
        let ours = Torrent::open(
            self.meta.clone(),
            &self.our_dir,
            OpenMode::ReadWrite,
            Strategy::RarestFirst,
        )
        .unwrap();
        (ours, proxy, recorded)
    }
}

/// What the recording proxy saw us send, checked: it all parsed, and (BEP 10) we sent only the
/// extended handshake (ext id 0), never an extension message.
fn recorded_without_extension_messages(recorded: &Mutex<Recorded>) -> Recorded {
    let rec = recorded.lock().unwrap().clone();
    assert!(rec.parse_error.is_none(), "{rec:?}");
    assert!(
        rec.messages
            .iter()
            .all(|(_, ext)| ext.is_none_or(|id| id == 0)),
        "we sent an extension message to libtorrent: {rec:?}"
    );
    rec
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn libtorrent_downloads_from_our_free_seeder() {
    let Some((dir, lt_dir)) = libtorrent_tempdir("lt") else {
        return;
    };
    // 6 MiB + a short last piece.
    let data = content((6 << 20) + 12345, 1);
    let (seeder, addr, torrent_file, server) = free_seeder(dir.path(), &data, 256 << 10).await;
    // libtorrent with its default encryption policy: it tries MSE first, we close, it retries
    // in plaintext.
    let torrent = ["--torrent", &arg(&torrent_file)];
    let (lt, exit) =
        LtPeer::download(torrent, &lt_dir, addr, 50, &["--encryption", "default"]).await;
    server.abort();
    lt.assert_finished(exit);
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
    let files = [
        ("album/01.flac", content(3 << 20, 2)),
        ("album/cover.jpg", content(70_000, 3)),
        ("album/notes/readme.txt", content(1_234_567, 4)),
    ];
    let Some(mut seeding) = LtSeeding::start("album", &files, 64 << 10) else {
        return;
    };
    let (leecher, proxy, recorded) = seeding.leecher_through_proxy().await;
    let our_dir = &seeding.our_dir;
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
    let meta = Metainfo::load(&seeding.torrent_file).unwrap();
    let again = Torrent::open(meta, our_dir, OpenMode::ReadOnly, Strategy::RarestFirst).unwrap();
    assert!(again.is_complete());

    let rec = recorded_without_extension_messages(&recorded);
    assert!(
        rec.messages.iter().any(|m| m.0 == Some(6)),
        "we sent requests"
    );
    seeding.lt.drain();
    for d in seeding
        .lt
        .events("peer_disconnected")
        .iter()
        .chain(seeding.lt.events("peer_error").iter())
    {
        let err = d["error"].as_str().unwrap_or_default();
        assert!(
            !err.contains("invalid") && !err.contains("protocol"),
            "libtorrent: {d}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn libtorrent_downloads_free_allowance_from_paid_seeder() {
    let Some((dir, lt_dir)) = libtorrent_tempdir("lt") else {
        return;
    };
    let data = content((5 << 20) + 777, 11);
    let (seller, addr, torrent_file) = paid_seeder(dir.path(), &data, Some(1 << 30)).await;
    let torrent = ["--torrent", &arg(&torrent_file)];
    let (lt, exit) = LtPeer::download(torrent, &lt_dir, addr, 50, &[]).await;
    lt.assert_finished(exit);
    assert_eq!(std::fs::read(lt_dir.join("movie.bin")).unwrap(), data);
    assert_eq!(
        seller.torrent.counters().uploaded.load(Ordering::Relaxed),
        data.len() as u64
    );
    for d in lt.events("peer_disconnected") {
        assert_eq!(d["error"], "torrent finished", "libtorrent dropped us: {d}");
    }
    // A stock client never opens a channel.
    assert!(seller.client.channel_ids().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn libtorrent_gets_nothing_from_paid_only_seeder_and_stays_connected() {
    let Some((dir, lt_dir)) = libtorrent_tempdir("lt") else {
        return;
    };
    let data = content(3 << 20, 12);
    let (seller, addr, torrent_file) = paid_seeder(dir.path(), &data, None).await;
    let torrent = ["--torrent", &arg(&torrent_file)];
    let (lt, exit) = LtPeer::download(torrent, &lt_dir, addr, 8, &[]).await;
    assert_eq!(exit.expect("lt_peer exit")["reason"], "timeout");
    let last = lt.last("status").expect("status");
    assert_eq!(last["down"], 0, "libtorrent got nothing: {last}");
    let peers = last["peers"].as_array().expect("peers");
    assert_eq!(peers.len(), 1, "still connected to us at the end: {last}");
    assert_eq!(peers[0]["we_choked_by_them"], true, "{last}");
    assert_eq!(peers[0]["extensions"], true, "we speak BEP 10: {last}");
    assert!(
        lt.events("peer_disconnected").is_empty() && lt.events("peer_error").is_empty(),
        "libtorrent never dropped us: {:#?}",
        lt.seen
    );
    assert_eq!(
        seller.torrent.counters().uploaded.load(Ordering::Relaxed),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paid_downloader_gets_file_from_libtorrent_without_sending_extension() {
    let data = content((4 << 20) + 4321, 13);
    let files = [("song.flac", data.clone())];
    let Some(mut seeding) = LtSeeding::start("song.flac", &files, 128 << 10) else {
        return;
    };
    let (torrent, proxy, recorded) = seeding.leecher_through_proxy().await;
    let buyer = paid_buyer(torrent.clone(), 1 << 20, IdentityConfig::default()).await;
    let n = buyer.node.clone();
    tokio::spawn(async move {
        // libtorrent may still be checking its files: retry a few times.
        for _ in 0..20 {
            let _ = n.connect(proxy, TORRENT).await;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    tokio::time::timeout(LIMIT, torrent.wait_complete())
        .await
        .expect("download timed out");
    assert_eq!(
        std::fs::read(seeding.our_dir.join("song.flac")).unwrap(),
        data
    );
    // We never sent an extension message, libtorrent not advertising it ...
    let rec = recorded_without_extension_messages(&recorded);
    // ... though we advertised the extension.
    assert!(
        rec.ext_handshakes
            .iter()
            .any(|h| h.windows(22).any(|w| w == b"paidStreamingExtension")),
        "our extended handshake advertises paidStreamingExtension"
    );
    assert!(
        buyer.client.channel_ids().is_empty(),
        "no channel with a stock peer"
    );
    seeding.lt.drain();
    assert!(
        seeding.lt.events("peer_error").is_empty(),
        "libtorrent reported errors: {:#?}",
        seeding.lt.events("peer_error")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn libtorrent_gets_the_metadata_of_a_magnet_link_from_our_free_seeder() {
    let Some((dir, lt_dir)) = libtorrent_tempdir("lt") else {
        return;
    };
    // 14 MiB in 16 KiB pieces: 896 piece hashes, an info dictionary of two metadata pieces.
    let data = content(14 << 20, 8);
    let (seeder, addr, _, server) = free_seeder(dir.path(), &data, 16 << 10).await;
    let meta = seeder.meta();
    assert_eq!(
        paid_wire::metadata::piece_count(meta.raw_info().len() as u64),
        2
    );
    // libtorrent knows only the magnet link and our address.
    let magnet = ["--magnet", &meta.magnet_link()];
    let (lt, exit) = LtPeer::download(magnet, &lt_dir, addr, 50, &[]).await;
    server.abort();
    lt.assert_finished(exit);
    assert_eq!(lt.events("metadata_received").len(), 1, "{:#?}", lt.seen);
    assert!(lt.events("metadata_failed").is_empty(), "{:#?}", lt.seen);
    assert_eq!(std::fs::read(lt_dir.join("movie.bin")).unwrap(), data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn we_get_a_magnet_link_from_a_libtorrent_seeder() {
    let files = [
        ("show/e01.mkv", content(2 << 20, 9)),
        ("show/e02.mkv", content(1_500_000, 10)),
    ];
    let Some(seeding) = LtSeeding::start("show", &files, 32 << 10) else {
        return;
    };
    // Our client as a user runs it, with only the magnet link and libtorrent's address.
    let link = seeding.meta.magnet_link();
    let (peer, out) = (seeding.addr.to_string(), arg(&seeding.our_dir));
    let (stdout, _) = tokio::task::spawn_blocking(move || {
        run_get(&[&link, "--free", "--peer", &peer, "--dir", &out])
    })
    .await
    .unwrap();
    assert!(
        stdout.contains(r#""event":"metadata""#),
        "the metadata came from libtorrent: {stdout}"
    );
    for (p, d) in &files {
        assert_eq!(&std::fs::read(seeding.our_dir.join(p)).unwrap(), d, "{p}");
    }
    drop(seeding);
}
