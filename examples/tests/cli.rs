//! The command line as a user meets it: each error prints one clear line per cause (no Debug
//! form) and exits with the documented status (README: 2 usage, 3 network, 5 verification);
//! units are accepted; `create` refuses bad piece lengths and prints the magnet link; `info`;
//! a `get` whose only peer refuses fails fast with the reason.

mod support;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;

fn run(args: &[&str]) -> Output {
    cmd(args).output().expect("run paid-torrent")
}

/// `get TORRENT --peer 127.0.0.1:1 --dir OUT <extra…>`: a get whose only peer refuses.
fn get_from_refusing_peer(torrent: &str, out: &str, extra: &[&str]) -> Command {
    let mut c = cmd(&["get", torrent, "--peer", "127.0.0.1:1", "--dir", out]);
    c.args(extra);
    c
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The error lines (`error: …` and its `caused by:` lines): no Debug output anywhere.
fn error_lines(o: &Output) -> Vec<String> {
    let err = stderr(o);
    assert!(
        !err.contains("Io {") && !err.contains("Os {"),
        "Debug form: {err}"
    );
    assert!(err.ends_with('\n'), "no trailing newline: {err:?}");
    let mut lines = err.lines().skip_while(|l| !l.starts_with("error:"));
    let first = lines
        .next()
        .unwrap_or_else(|| panic!("no error line: {err}"));
    std::iter::once(first.to_owned())
        .chain(lines.map(str::to_owned))
        .collect()
}

#[test]
fn usage_errors_exit_2_with_one_line_per_cause() {
    let dir = tempdir();
    let missing = arg(&dir.path().join("nonexist.torrent"));
    let o = run(&["info", &missing]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let lines = error_lines(&o);
    assert_eq!(lines[0], format!("error: reading {missing}"));
    assert!(
        lines[1].starts_with("  caused by: No such file"),
        "{lines:?}"
    );
    assert_eq!(lines.len(), 2, "{lines:?}");

    // Bad values are refused by the parser, naming the option.
    let file = dir.path().join("a.bin");
    write(&file, &content(100_000, 1));
    for (args, why) in [
        (
            vec!["create", &*arg(&file), "--piece-length", "1000"],
            "a piece length is a power of two of at least 16KiB",
        ),
        (
            vec!["create", &*arg(&file), "--piece-length", "48KiB"],
            "a piece length is a power of two",
        ),
        (
            vec![
                "create",
                &*arg(&file),
                "--announce",
                "wss://tracker.example",
            ],
            "--announce wss://tracker.example",
        ),
        (
            vec!["get", "x.torrent", "--timeout", "5 parsecs"],
            "is not a duration like 30s or 5m",
        ),
        (
            vec!["get", "x.torrent", "--granularity", "lots"],
            "is not a size like 16KiB or 1MiB",
        ),
        (
            vec!["get", "x.torrent", "--max-price", "1dollar"],
            "is not a price like 1wei",
        ),
        (
            vec!["get", "x.torrent", "--peer", "localhost"],
            "is not HOST:PORT",
        ),
        (vec!["info", "magnet:?dn=x"], "not a BitTorrent magnet link"),
    ] {
        let o = run(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(why), "{args:?}: {}", stderr(&o));
    }

    // A .torrent without trackers and no --peer: nobody to ask.
    let torrent = arg(&dir.path().join("a.torrent"));
    assert!(
        run(&["create", &arg(&file), "-o", &torrent])
            .status
            .success()
    );
    let o = run(&["get", &torrent, "--dir", &arg(&dir.path().join("out"))]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(error_lines(&o)[0].contains("give --peer HOST:PORT"));
}

#[test]
fn create_prints_the_magnet_link_and_info_reads_it_back() {
    let dir = tempdir();
    let file = dir.path().join("b.bin");
    write(&file, &content(70_000, 2));
    let torrent = arg(&dir.path().join("b.torrent"));
    let o = run(&[
        "create",
        &arg(&file),
        "-o",
        &torrent,
        "--piece-length",
        "32KiB",
        "--announce",
        "http://127.0.0.1:1/announce",
        "--announce",
        "udp://127.0.0.1:2",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let magnet = out
        .lines()
        .find(|l| l.starts_with("magnet:?xt=urn:btih:"))
        .unwrap_or_else(|| panic!("no magnet link: {out}"))
        .to_owned();
    assert!(out.contains("3 pieces of 32.0 KiB"), "{out}");
    let info: Value =
        serde_json::from_slice(&run(&["info", &torrent, "--json"]).stdout).expect("JSON");
    assert_eq!(info["name"], "b.bin");
    assert_eq!(info["bytes"], 70_000);
    assert_eq!(info["pieces"], 3);
    assert_eq!(info["piece_length"], 32 << 10);
    assert_eq!(
        info["trackers"],
        serde_json::json!(["http://127.0.0.1:1/announce", "udp://127.0.0.1:2"])
    );
    assert_eq!(info["magnet"], magnet.as_str());
    let m: Value = serde_json::from_slice(&run(&["info", &magnet, "--json"]).stdout).unwrap();
    assert_eq!(m["info_hash"], info["info_hash"]);
    assert_eq!(m["name"], "b.bin");
    assert_eq!(m["trackers"], info["trackers"]);
    let human = stdout(&run(&["info", &torrent]));
    for part in [
        "name:       b.bin",
        "size:       68.4 KiB (70000 bytes)",
        "udp://127.0.0.1:2",
    ] {
        assert!(human.contains(part), "{part}: {human}");
    }
}

#[test]
fn a_get_whose_only_peer_refuses_fails_fast_with_the_reason() {
    let dir = tempdir();
    let (_, _, torrent) = seeded_torrent(dir.path(), "c.bin", 50_000, 3);
    let out = arg(&dir.path().join("out"));
    // A name is resolved (no "invalid socket address syntax"); nothing listens on port 1.
    let started = Instant::now();
    let o = run(&[
        "get",
        &torrent,
        "--peer",
        "localhost:1",
        "--dir",
        &out,
        "--json",
    ]);
    let took = started.elapsed();
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let lines = error_lines(&o);
    assert_eq!(lines[0], "error: no peer can sell under our terms:");
    assert!(
        lines[1].contains(":1: cannot connect: Connection refused"),
        "{lines:?}"
    );
    assert!(took < Duration::from_secs(30), "took {took:?}, not fast");
    let events = json_lines(&stdout(&o));
    let failed = events
        .iter()
        .find(|e| e["event"] == "peer_failed")
        .expect("a peer_failed event");
    assert!(failed["reason"].as_str().unwrap().contains("refused"));
    let peers = events
        .iter()
        .find(|e| e["event"] == "peers")
        .expect("the peer counts");
    assert_eq!(
        (peers["known"].as_u64(), peers["failed"].as_u64()),
        (Some(1), Some(1))
    );
    // Without --rpc it says plainly that only a peer in this process can be paid.
    let chain = events.iter().find(|e| e["event"] == "chain").unwrap();
    assert_eq!(chain["same_process_only"], true);

    // Unresolvable names too, at once.
    let o = run(&[
        "get",
        &torrent,
        "--peer",
        "no-such-host.invalid:5",
        "--dir",
        &out,
    ]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains("no-such-host.invalid:5: cannot resolve"));
}

#[test]
fn seeding_content_that_does_not_verify_exits_5() {
    let dir = tempdir();
    let (seed_dir, data, torrent) = seeded_torrent(dir.path(), "d.bin", 40_000, 4);
    let mut bad = data;
    bad[0] ^= 1;
    write(&seed_dir.join("d.bin"), &bad);
    let o = cmd(&[])
        .args(seed_args(&torrent, &seed_dir, &[]))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(5), "{}", stderr(&o));
    assert!(error_lines(&o)[0].contains("does not verify"));
}

#[test]
fn logs_go_to_stderr_and_quiet_silences_them() {
    let dir = tempdir();
    let (_, _, torrent) = seeded_torrent(dir.path(), "e.bin", 20_000, 5);
    let out = arg(&dir.path().join("out"));
    // -q: the error line only.
    let o = get_from_refusing_peer(&torrent, &out, &["-q"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3));
    assert!(stderr(&o).starts_with("error: "), "{}", stderr(&o));
    // -vv: debug lines on stderr (here: the connection attempts); stdout keeps only JSON.
    let o = get_from_refusing_peer(&torrent, &out, &["--json", "-vv"])
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert!(
        stdout(&o)
            .lines()
            .all(|l| serde_json::from_str::<Value>(l).is_ok())
    );
    let err = stderr(&o);
    assert!(
        err.contains("DEBUG") && err.contains("connecting addr=127.0.0.1:1"),
        "{err}"
    );
    // RUST_LOG wins over -v.
    let o = get_from_refusing_peer(&torrent, &out, &["-vv"])
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(!stderr(&o).contains("DEBUG"), "{}", stderr(&o));
}

/// `demo --hub`: one hub, three seeders and a downloader in one process; the table shows the
/// buyer's 2 transactions (ledger deposit and close) whatever the number of seeders, no
/// transaction for the seeders, and the direct cost next to it.
#[test]
fn demo_hub_prints_each_partys_transactions() {
    let o = run(&["demo", "--hub", "--seeders", "3", "--size", "2MiB"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    let row = |name: &str| -> Vec<String> {
        out.lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no {name} row: {out}"))
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    };
    // party, hub txs, hub gas, direct txs, direct gas, paid out
    let buyer = row("buyer");
    assert_eq!(buyer[1], "2", "{out}");
    assert_eq!(buyer[2], (46_532 + 143_286).to_string());
    let sold: u64 = (1..=3)
        .map(|i| {
            let r = row(&format!("seeder {i}"));
            // "seeder" "i" then the columns.
            assert_eq!(r[2], "0", "a seeder sends nothing: {out}");
            r[4].parse::<u64>().unwrap()
        })
        .sum();
    assert!(sold >= 1);
    assert_eq!(buyer[3], sold.to_string(), "direct: one deposit per seller");
    assert_eq!(
        row("hub")[1],
        "6",
        "the hub: a deposit and a close per seeder"
    );
    assert!(out.contains("file hash:  verified"), "{out}");
}
