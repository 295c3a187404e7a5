//! End-to-end paid transfer vs payment granularity, beside the payment floor, in one run.
//!
//! Group `floor` (per payment, run first): `bare_sign_verify` (the signature library's sign + verify of a
//! 32-byte hash) and `whole_payment` (the `payment` bench's sans-IO payer → JSON → payee round,
//! see `support/channel.rs`). The crypto-bound throughput at granularity G is
//! G / `whole_payment`.
//!
//! Group `transfer`: 64 MiB from a seeder to a downloader, two whole-stack peers
//! (`support/nodes.rs`: paid-wire codec, choke controller, coordinator, channel task with a real
//! `payment_channel::Client` signing with k256 or, with `--features libsecp256k1`, libsecp256k1, `SimulatedChain`), each a `Node` on one
//! two-worker tokio runtime, over `tokio::io::duplex(256 KiB)` or loopback TCP:
//! - `duplex/unpaid`, `tcp/unpaid`: payments off. The same stack and policy, but the seeder
//!   trusts the downloader with the whole file (`TrustPolicy::fixed(64 MiB)`), so the downloader
//!   never owes anything and pays nothing. A channel is still proposed, joined and funded (the
//!   first request of a paying peer creates it) but no voucher is ever signed.
//! - `duplex/paid_<G>`, `tcp/paid_<G>`: no trust; the downloader pays every G bytes (1 wei/byte),
//!   ahead when prompted (the seeder prompts at 50 % of the last payment, the default).
//!
//! Each paid iteration is preceded by an untimed unpaid transfer on the same link; both times
//! go to `target/criterion/transfer-paired.json`, so that `publish.py` can also report
//! paid / unpaid as the median of per-pair ratios (robust to the load drifting between cases).
//!
//! Timed per iteration (`iter_custom`): from starting both connection tasks to the downloader's
//! `DownloadComplete` event, i.e. BitTorrent + extended handshakes, channel setup (propose, join,
//! deposit on the simulated chain, postfund: a few signatures), the transfer and the Keccak check
//! of every piece. A fresh pair of nodes, chain and empty copy is built outside the timer for
//! every iteration; the seed (and its piece hashes) is shared.
//!
//! `cargo bench -p paid-benches --bench transfer`, then `python3 benches/publish.py`. With
//! `CRITERION_HOME=dir` everything (criterion's output and the paired file) goes to `dir`.

#[path = "support/channel.rs"]
mod channel;
#[path = "support/nodes.rs"]
mod nodes;

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use torrent_glue::CoordinatorEvent;
use torrent_glue::adapter::{MemoryTorrent, PieceSink};
use torrent_glue::engine::Direction;

use payment_channel::SimulatedChain;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const SIZE: u64 = 64 * MIB;
const PIECE: u32 = 256 * 1024;
const FUNDS: u64 = 1 << 40;

#[derive(Clone, Copy, Debug)]
enum Link {
    Duplex,
    Tcp,
}

/// CPU time of every thread of the process so far (`/proc/self/task/*/schedstat`, ns).
fn process_cpu() -> Duration {
    let mut ns = 0u64;
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for task in tasks.flatten() {
            if let Ok(s) = std::fs::read_to_string(task.path().join("schedstat")) {
                ns += s
                    .split_whitespace()
                    .next()
                    .and_then(|x| x.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
    }
    Duration::from_nanos(ns)
}

/// One transfer; returns the timed part and the number of payments made.
async fn transfer(
    seed: &Arc<MemoryTorrent>,
    link: Link,
    granularity: Option<u64>,
) -> (Duration, u64) {
    let chain = SimulatedChain::new();
    let trust = if granularity.is_some() { 0 } else { SIZE };
    let seller = nodes::seller(&chain, seed.clone(), trust, u128::from(SIZE) * 2).await;
    let mut buyer = nodes::buyer(
        &chain,
        seed.meta().clone(),
        granularity.unwrap_or(256 * KIB),
        FUNDS,
        1,
    )
    .await;
    let (s, b) = (seller.node.clone(), buyer.node.clone());
    let start;
    let tasks = match link {
        Link::Duplex => {
            let (x, y) = tokio::io::duplex(256 * 1024);
            start = Instant::now();
            [
                tokio::spawn(async move {
                    let _ = s.run_connection(x, Direction::Inbound, None).await;
                }),
                tokio::spawn(async move {
                    let _ = b
                        .run_connection(y, Direction::Outbound, Some(nodes::T))
                        .await;
                }),
            ]
        }
        Link::Tcp => {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let addr = listener.local_addr().expect("addr");
            start = Instant::now();
            [
                tokio::spawn(async move {
                    let (stream, _) = listener.accept().await.expect("accept");
                    let _ = stream.set_nodelay(true);
                    let _ = s.run_connection(stream, Direction::Inbound, None).await;
                }),
                tokio::spawn(async move {
                    let _ = b.connect(addr, nodes::T).await;
                }),
            ]
        }
    };
    let mut payments = 0;
    loop {
        match tokio::time::timeout(Duration::from_secs(300), buyer.events.recv()).await {
            Ok(Some(CoordinatorEvent::DownloadComplete { .. })) => break,
            Ok(Some(CoordinatorEvent::PaymentSent { .. })) => payments += 1,
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => panic!("the download did not complete"),
        }
    }
    let elapsed = start.elapsed();
    assert_eq!(buyer.store.remaining(), 0);
    for t in tasks {
        t.abort();
    }
    drop((seller, buyer));
    (elapsed, payments)
}

fn label(bytes: u64) -> String {
    if bytes >= MIB {
        format!("{}MiB", bytes / MIB)
    } else {
        format!("{}KiB", bytes / KIB)
    }
}

fn benches(c: &mut Criterion) {
    // Per payment, first (same run as the transfers; see the module docs).
    let mut floor = c.benchmark_group("floor");
    floor.throughput(Throughput::Elements(1));
    let running = channel::floor_benches(&mut floor);
    assert!(running.payee.ch.paid() > payment_channel::U256::ZERO);
    drop(running.payer_signer);
    floor.finish();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let seed = Arc::new(MemoryTorrent::seed(nodes::content(SIZE as usize), PIECE));

    let mut group = c.benchmark_group("transfer");
    group.throughput(Throughput::Bytes(SIZE));
    group.sample_size(10);
    group.sampling_mode(SamplingMode::Flat);
    group.warm_up_time(Duration::from_millis(1));
    group.measurement_time(Duration::from_secs(1));
    let mut pairs: Vec<(String, [Duration; 4])> = Vec::new();
    let mut cases: Vec<(Link, Option<u64>)> = vec![(Link::Duplex, None)];
    for g in [KIB, 4 * KIB, 16 * KIB, 64 * KIB, 256 * KIB, MIB, 4 * MIB] {
        cases.push((Link::Duplex, Some(g)));
    }
    cases.extend([
        (Link::Tcp, None),
        (Link::Tcp, Some(4 * KIB)),
        (Link::Tcp, Some(16 * KIB)),
        (Link::Tcp, Some(MIB)),
    ]);
    for (link, granularity) in cases {
        let id = format!(
            "{}/{}",
            match link {
                Link::Duplex => "duplex",
                Link::Tcp => "tcp",
            },
            granularity.map_or_else(|| "unpaid".to_owned(), |g| format!("paid_{}", label(g)))
        );
        let mut reported = false;
        let pairs = &mut pairs;
        group.bench_function(&id, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    // Paired reference: an unpaid transfer right before each paid one, so that
                    // paid / unpaid is also taken per pair (the load drifts between cases).
                    // CPU time of the whole process around each (the floor benches are over).
                    let reference = granularity.map(|_| {
                        let cpu = process_cpu();
                        let u = rt.block_on(transfer(&seed, link, None)).0;
                        (u, process_cpu() - cpu)
                    });
                    let cpu = process_cpu();
                    let (t, payments) = rt.block_on(transfer(&seed, link, granularity));
                    let cpu = process_cpu() - cpu;
                    if let Some((u, u_cpu)) = reference {
                        pairs.push((id.clone(), [t, u, cpu, u_cpu]));
                    }
                    if std::env::var_os("TRANSFER_VERBOSE").is_some() {
                        eprintln!("{id}: {t:?}");
                    }
                    if !reported {
                        eprintln!("{id}: {payments} payments per transfer, {t:?}");
                        reported = true;
                    }
                    total += t;
                }
                total
            })
        });
    }
    group.finish();
    write_pairs(&pairs);
}

/// `target/criterion/transfer-paired.json`:
/// `{id: [[paid_ns, unpaid_ns, paid_cpu_ns, unpaid_cpu_ns], ...]}` (wall time, process CPU time).
fn write_pairs(pairs: &[(String, [Duration; 4])]) {
    let mut ids: Vec<&str> = pairs.iter().map(|p| p.0.as_str()).collect();
    ids.dedup();
    let body: Vec<String> = ids
        .iter()
        .map(|id| {
            let v: Vec<String> = pairs
                .iter()
                .filter(|p| p.0 == *id)
                .map(|p| {
                    let v: Vec<String> = p.1.iter().map(|d| d.as_nanos().to_string()).collect();
                    format!("[{}]", v.join(", "))
                })
                .collect();
            format!("  \"{id}\": [{}]", v.join(", "))
        })
        .collect();
    // Criterion's own output directory (`CRITERION_HOME`, default `target/criterion`).
    let dir = std::env::var_os("CRITERION_HOME").map_or_else(
        || std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/criterion"),
        std::path::PathBuf::from,
    );
    std::fs::create_dir_all(&dir).expect("target/criterion");
    std::fs::write(
        dir.join("transfer-paired.json"),
        format!("{{\n{}\n}}\n", body.join(",\n")),
    )
    .expect("transfer-paired.json");
}

criterion_group!(transfer_benches, benches);
criterion_main!(transfer_benches);
