//! Scale: one seeder with N (default 1,000) concurrent paid channels, each to its own in-process
//! downloader.
//!
//! Not a criterion bench (one long run says more than ten): it prints its figures and writes
//! them to `target/criterion/scale.json` and `scale-N.json` for `benches/publish.py`.
//!
//! Every peer is a whole-stack `Node` (`support/nodes.rs`) with its own `payment_channel::Client`
//! (k256, `MemoryStore`) on one `SimulatedChain`, all on one two-worker tokio runtime; each
//! downloader is connected to the seeder by its own `tokio::io::duplex(64 KiB)`.
//! 1. Baseline RSS; build the seeder and the N downloaders (not connected): RSS again.
//! 2. Connect all N. Each downloader's first request makes the seeder propose a channel, which
//!    the downloader joins and funds; the downloaders' channel backends hold every `Pay` behind
//!    a gate, so all N channels stay open and unpaid. When the seeder has N channels open: RSS.
//!    Memory per channel = that delta / N: **both ends** (seeder and downloader channel state,
//!    coordinator peer and identity state, the connection's two tasks, codec buffers and the
//!    duplex pipe).
//! 3. Open the gate and time every downloader fetching its 64 KiB copy at 1 KiB per payment
//!    (64 payments each). Payments per second per core = payments / CPU seconds of the process
//!    (user + system, `/proc/self/stat`): each payment is signed by a downloader and verified by
//!    the seeder, both in this process.
//!
//! RSS is read from `/proc/self/statm` (no allocator instrumentation: the workspace forbids
//! `unsafe`). `SCALE_N` overrides N (default 1000); `CRITERION_HOME` the output directory.
//!
//! `cargo bench -p paid-benches --bench scale`

#[path = "support/nodes.rs"]
mod nodes;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use paid_benches::rss_bytes;
use payment_channel::SimulatedChain;
use tokio::sync::watch;
use torrent_glue::adapter::{ChannelBackend, ChannelEvents, MemoryTorrent, PieceSink};
use torrent_glue::engine::Direction;
use torrent_glue::{ChannelCommand, CoordinatorEvent, Role};

const KIB: u64 = 1024;
const SIZE: u64 = 64 * KIB;
const GRANULARITY: u64 = KIB;

/// Holds `Pay` commands until the gate opens.
struct Gated {
    inner: Arc<dyn ChannelBackend>,
    gate: watch::Receiver<bool>,
}

#[async_trait]
impl ChannelBackend for Gated {
    async fn execute(&self, command: ChannelCommand, events: &ChannelEvents) {
        if matches!(command, ChannelCommand::Pay { .. }) {
            let mut gate = self.gate.clone();
            let _ = gate.wait_for(|open| *open).await;
        }
        self.inner.execute(command, events).await;
    }

    async fn tick(&self, events: &ChannelEvents) {
        self.inner.tick(events).await;
    }
}

/// User + system CPU time of the process.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("stat");
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat, i.e. 11 and 12 after the name and state.
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    // USER_HZ is 100 on Linux.
    Duration::from_millis(ticks * 10)
}

async fn wait_for(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<CoordinatorEvent>,
    what: &str,
    n: usize,
    mut matches: impl FnMut(&CoordinatorEvent) -> bool,
) {
    let mut seen = 0;
    while seen < n {
        match tokio::time::timeout(Duration::from_secs(120), rx.recv()).await {
            Ok(Some(e)) if matches(&e) => seen += 1,
            Ok(Some(_)) => {}
            _ => panic!("timed out waiting for {what}: {seen} of {n}"),
        }
    }
}

fn main() {
    // `cargo bench` passes `--bench`; there is nothing to filter.
    let n: usize = std::env::var("SCALE_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let figures = rt.block_on(async move {
        let chain = SimulatedChain::new();
        let seed = Arc::new(MemoryTorrent::seed(
            nodes::content(SIZE as usize),
            64 * 1024,
        ));
        let meta = seed.meta().clone();
        let rss_0 = rss_bytes();
        let mut seller = nodes::seller(&chain, seed, 0, u128::from(SIZE) * 2).await;
        let (gate_tx, gate_rx) = watch::channel(false);
        let mut buyers = Vec::with_capacity(n);
        for i in 0..n {
            let b = nodes::buyer_with(
                &chain,
                meta.clone(),
                GRANULARITY,
                1 << 40,
                i as u8,
                |inner| {
                    Arc::new(Gated {
                        inner,
                        gate: gate_rx.clone(),
                    })
                },
            )
            .await;
            buyers.push(b);
        }
        let rss_nodes = rss_bytes();

        // 2. All channels open, no payment yet.
        let mut tasks = Vec::with_capacity(2 * n);
        for b in &buyers {
            let (x, y) = tokio::io::duplex(64 * 1024);
            let (s, d) = (seller.node.clone(), b.node.clone());
            tasks.push(tokio::spawn(async move {
                let _ = s.run_connection(x, Direction::Inbound, None).await;
            }));
            tasks.push(tokio::spawn(async move {
                let _ = d
                    .run_connection(y, Direction::Outbound, Some(nodes::T))
                    .await;
            }));
        }
        let t_open = Instant::now();
        wait_for(&mut seller.events, "the channels", n, |e| {
            matches!(
                e,
                CoordinatorEvent::ChannelOpened {
                    role: Role::Payee,
                    ..
                }
            )
        })
        .await;
        let open_time = t_open.elapsed();
        tokio::time::sleep(Duration::from_millis(200)).await; // let the last messages settle
        let rss_open = rss_bytes();
        let open_channels = seller.node.inspect(|c| {
            buyers
                .iter()
                .filter(|b| c.identity(b.account).is_some_and(|i| i.payee_channel_open))
                .count()
        });
        assert_eq!(open_channels, n, "all channels open at once");
        assert!(
            buyers.iter().all(|b| b.store.remaining() == SIZE),
            "nothing paid yet"
        );

        // 3. Pay: everyone downloads its copy.
        let cpu_0 = cpu_time();
        let t_pay = Instant::now();
        gate_tx.send_replace(true);
        let mut payments = 0u64;
        for b in &mut buyers {
            wait_for(&mut b.events, "a download", 1, |e| {
                payments += u64::from(matches!(e, CoordinatorEvent::PaymentSent { .. }));
                matches!(e, CoordinatorEvent::DownloadComplete { .. })
            })
            .await;
        }
        let wall = t_pay.elapsed();
        let cpu = cpu_time() - cpu_0;
        for b in &mut buyers {
            while let Ok(e) = b.events.try_recv() {
                payments += u64::from(matches!(e, CoordinatorEvent::PaymentSent { .. }));
            }
        }
        for t in tasks {
            t.abort();
        }
        let payments = payments as f64;
        format!(
            concat!(
                "{{\n  \"channels\": {n},\n  \"payments\": {payments},\n",
                "  \"bytes_per_channel\": {size},\n  \"granularity\": {g},\n",
                "  \"rss_baseline\": {rss0},\n  \"rss_nodes\": {rssn},\n  \"rss_open\": {rsso},\n",
                "  \"node_bytes_per_downloader\": {node_b:.0},\n",
                "  \"bytes_per_channel_both_ends\": {chan_b:.0},\n",
                "  \"open_seconds\": {open:.3},\n",
                "  \"pay_wall_seconds\": {wall:.3},\n  \"pay_cpu_seconds\": {cpu:.3},\n",
                "  \"payments_per_second\": {pps:.0},\n",
                "  \"payments_per_cpu_second\": {ppc:.0}\n}}"
            ),
            n = n,
            payments = payments,
            size = SIZE,
            g = GRANULARITY,
            rss0 = rss_0,
            rssn = rss_nodes,
            rsso = rss_open,
            node_b = (rss_nodes - rss_0) as f64 / n as f64,
            chan_b = (rss_open as f64 - rss_nodes as f64) / n as f64,
            open = open_time.as_secs_f64(),
            wall = wall.as_secs_f64(),
            cpu = cpu.as_secs_f64(),
            pps = payments / wall.as_secs_f64(),
            ppc = payments / cpu.as_secs_f64(),
        )
    });
    println!("{figures}");
    // Criterion's own output directory (`CRITERION_HOME`, default `target/criterion`).
    let dir = std::env::var_os("CRITERION_HOME").map_or_else(
        || std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/criterion"),
        std::path::PathBuf::from,
    );
    std::fs::create_dir_all(&dir).expect("target/criterion");
    // `scale.json` is the run the report details; `scale-N.json` keeps one run per N for the
    // table of runs at several N.
    std::fs::write(dir.join(format!("scale-{n}.json")), figures.clone() + "\n")
        .expect("scale-N.json");
    std::fs::write(dir.join("scale.json"), figures + "\n").expect("scale.json");
}
