#!/usr/bin/python3
"""Reference row for `docs/benchmarks.md`: a stock engine moving the same 64 MiB.

Two libtorrent 2.0 sessions (default settings) in this process (python3-libtorrent, e.g. Debian's
`python3-libtorrent`), a seeder with the whole file and a downloader with nothing, over loopback
TCP, 256 KiB pieces (as `benches/benches/transfer.rs`). Timed like the Rust transfers: from
connecting the downloader to the seeder to the downloader holding every piece, SHA-1 checked;
each iteration uses fresh sessions and an empty download directory (in the system temporary
directory), built outside the timer.
Writes `{"samples_ns": [...], "median_ns": ..., "libtorrent": "2.0.x"}` to
`$CRITERION_HOME/libtorrent.json` (default `target/criterion/libtorrent.json`).

Usage: /usr/bin/python3 benches/reference/libtorrent_loopback.py [--iterations 10]
"""

import argparse
import json
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

import libtorrent as lt

SIZE = 64 * 1024 * 1024
PIECE = 256 * 1024
# Per iteration: the time to the first verified piece (choke round and handshakes).
FIRST_PIECE = []


def settings(port):
    # Default settings, the discovery services off, and the seeder's choker rerun every second
    # (default 15 s: a fresh interested peer may otherwise wait that long for its unchoke, which
    # would time libtorrent's choke round rather than its transfer).
    pack = {"unchoke_interval": 1}
    pack.update({
        "listen_interfaces": f"127.0.0.1:{port}",
        "enable_dht": False,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "alert_mask": 0,
        # Both peers share 127.0.0.1.
        "allow_multiple_connections_per_ip": True,
    })
    return pack


def make_torrent(root):
    data = random.Random(17).randbytes(SIZE)
    (root / "seed").mkdir()
    (root / "seed" / "content.bin").write_bytes(data)
    fs = lt.file_storage()
    lt.add_files(fs, str(root / "seed" / "content.bin"))
    t = lt.create_torrent(fs, PIECE)
    lt.set_piece_hashes(t, str(root / "seed"))
    return lt.torrent_info(lt.bencode(t.generate()))


def wait(pred, what, timeout=300.0, step=0.0005):
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(step)


def one(root, info, i):
    seeder = lt.session(settings(0))
    leecher = lt.session(settings(0))
    seed = seeder.add_torrent({"ti": info, "save_path": str(root / "seed"),
                               "flags": lt.torrent_flags.seed_mode})
    dest = root / f"down{i}"
    dest.mkdir()
    down = leecher.add_torrent({"ti": lt.torrent_info(info), "save_path": str(dest)})
    wait(lambda: seed.status().is_seeding, "the seeder")
    wait(lambda: seeder.listen_port() != 0, "the listen port")
    start = time.perf_counter_ns()
    down.connect_peer(("127.0.0.1", seeder.listen_port()))
    wait(lambda: down.status().total_wanted_done > 0, "the first piece")
    first = time.perf_counter_ns() - start
    wait(lambda: down.status().is_seeding, "the download")
    elapsed = time.perf_counter_ns() - start
    FIRST_PIECE.append(first)
    assert down.status().total_wanted_done == SIZE
    del seeder, leecher
    return elapsed


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--iterations", type=int, default=10)
    args = ap.parse_args()
    out = Path(os.environ.get("CRITERION_HOME",
                              Path(__file__).resolve().parents[2] / "target" / "criterion"))
    # On disk (the page cache): on tmpfs, libtorrent 2.0's memory-mapped storage measured ten
    # times slower here.
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        info = make_torrent(root)
        one(root, info, "warmup")
        samples = [one(root, info, i) for i in range(args.iterations)]
    median = statistics.median(samples)
    result = {"samples_ns": samples, "median_ns": median, "libtorrent": lt.__version__,
              "bytes": SIZE, "first_piece_ns": FIRST_PIECE[1:]}
    out.mkdir(parents=True, exist_ok=True)
    (out / "libtorrent.json").write_text(json.dumps(result, indent=1) + "\n")
    print("samples (ms):", [round(x / 1e6) for x in samples])
    print("first piece after (ms):", [round(x / 1e6) for x in FIRST_PIECE[1:]])
    print(f"libtorrent {lt.__version__}: 64 MiB over loopback, median {median / 1e6:.0f} ms "
          f"({SIZE / (median / 1e9) / 2**20:.0f} MiB/s) of {len(samples)}")


if __name__ == "__main__":
    main()
