//! A hub's figures (issue 15): virtual channels funded per second on one core, and memory per
//! virtual channel at the hub.
//!
//! Parties are `payment_channel::virtual_channel::Party` (k256) exchanging envelopes in memory,
//! one thread; every state change is persisted (`poll_persist`, the JSON snapshot a real hub
//! writes before it sends) and released. Ledgers are funded by feeding `Deposited` events (no
//! chain: funding a virtual channel is off chain). Payers hold one ledger with the hub, the hub
//! one ledger with each payee; deposits are large enough never to run out.
//!
//! Criterion group `hub` (one virtual channel funded per iteration: propose → prefund → both
//! guarantees added and countersigned → postfund, until all three parties run it):
//! - `fund_all_parties/open=K`: the whole exchange, payer, hub and payee in this thread, with the
//!   hub already holding K virtual channels;
//! - `fund_hub_share/open=K`: only the time spent inside the hub (its `handle_envelope` and
//!   persisting), i.e. the hub's CPU per channel funded.
//!
//! Then (not criterion: one long run) memory: the hub's snapshot bytes per virtual channel and
//! its in-memory size per virtual channel (RSS growth of restoring 12 more copies of the hub from
//! its snapshot, after 4 copies that absorb what the build freed, `/proc/self/statm`) for `HUB_MEM_N` channels (default `1000,3000`), built
//! through the protocol with 10 payees and one payer per 10 channels. Written to
//! `target/criterion/hub-memory.json`.
//!
//! `cargo bench -p paid-benches --bench hub`

use std::collections::VecDeque;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, Throughput};
use paid_benches::rss_bytes;
use payment_channel::chain::ChainEvent;
use payment_channel::sign::{LocalSigner, Signer};
use payment_channel::virtual_channel::{Envelope, HubLimits, Party, PartyConfig, VirtualParams};
use payment_channel::{Address, B256, U256};

const CONSENSUS_APP: Address = Address::repeat_byte(0xc0);
const PAYMENT_APP: Address = Address::repeat_byte(0xa9);
const DURATION: u64 = 3_600;

fn big() -> U256 {
    U256::from(10u64).pow(U256::from(27u8))
}

fn config(hub: bool) -> PartyConfig {
    PartyConfig::new(CONSENSUS_APP, PAYMENT_APP).with_hub(hub.then(|| HubLimits {
        max_amount: big(),
        max_locked_per_ledger: big() * U256::from(1_000u64),
        min_fee: U256::ZERO,
    }))
}

/// Parties by index: 0 the hub, then payees, then payers.
struct World {
    keys: Vec<Arc<LocalSigner>>,
    parties: Vec<Party>,
    net: VecDeque<Envelope>,
    payees: usize,
    nonce: u64,
    /// Time spent inside the hub.
    hub_time: Duration,
}

impl World {
    fn new(payees: usize) -> Self {
        let key = Arc::new(LocalSigner::random());
        let mut w = Self {
            keys: vec![key.clone()],
            parties: vec![Party::new(key, config(true))],
            net: VecDeque::new(),
            payees,
            nonce: 0,
            hub_time: Duration::ZERO,
        };
        for i in 0..payees {
            let b = w.add(false);
            let baddr = w.keys[b].address();
            let id = w.parties[0]
                .open_ledger(baddr, 10 + i as u64, DURATION, Address::ZERO, big())
                .expect("ledger");
            w.fund_ledger(0, b, id);
        }
        w
    }

    fn add(&mut self, hub: bool) -> usize {
        let key = Arc::new(LocalSigner::random());
        self.parties.push(Party::new(key.clone(), config(hub)));
        self.keys.push(key);
        self.parties.len() - 1
    }

    /// A new payer with its ledger with the hub, open.
    fn add_payer(&mut self) -> usize {
        let p = self.add(false);
        let hub = self.keys[0].address();
        let id = self.parties[p]
            .open_ledger(hub, 1, DURATION, Address::ZERO, big())
            .expect("ledger");
        self.fund_ledger(p, 0, id);
        p
    }

    fn fund_ledger(&mut self, leader: usize, follower: usize, id: B256) {
        self.run();
        let ev = ChainEvent::Deposited {
            channel_id: id,
            asset: Address::ZERO,
            holdings: big(),
        };
        for i in [leader, follower] {
            self.parties[i].handle_chain_event(0, &ev).expect("deposit");
        }
        self.run();
    }

    fn index_of(&self, a: Address) -> usize {
        self.keys
            .iter()
            .position(|k| k.address() == a)
            .expect("a party")
    }

    fn release(&mut self, i: usize) {
        let p = &mut self.parties[i];
        if let Some(s) = p.poll_persist() {
            black_box(s);
            p.handle_persisted();
        }
        while p.poll_event().is_some() {}
        while let Some(e) = p.poll_envelope() {
            self.net.push_back(e);
        }
    }

    fn run(&mut self) {
        for i in 0..self.parties.len() {
            self.release(i);
        }
        while let Some(e) = self.net.pop_front() {
            let to = self.index_of(e.to);
            if to == 0 {
                let t = Instant::now();
                let _ = self.parties[0].handle_envelope(&e);
                self.release(0);
                self.hub_time += t.elapsed();
            } else {
                let _ = self.parties[to].handle_envelope(&e);
                self.release(to);
            }
        }
    }

    /// Payer `payer` funds a virtual channel to payee number `payee` through the hub.
    fn fund(&mut self, payer: usize, payee: usize) -> B256 {
        self.nonce += 1;
        let params = VirtualParams {
            hub: self.keys[0].address(),
            payee: self.keys[1 + payee % self.payees].address(),
            channel_nonce: self.nonce,
            app_definition: PAYMENT_APP,
            challenge_duration: DURATION,
            asset: Address::ZERO,
            amount: U256::from(1_000u64),
            fee: U256::from(1u64),
        };
        let v = self.parties[payer]
            .propose_virtual(&params)
            .expect("propose");
        self.run();
        v
    }

    fn running(&self, v: B256) -> bool {
        self.parties[0].channel(&v).is_some_and(|c| c.is_running())
    }

    fn snapshots(&self) -> Vec<Vec<u8>> {
        self.parties.iter().map(Party::snapshot).collect()
    }

    fn restore(&self, snaps: &[Vec<u8>]) -> Self {
        Self {
            keys: self.keys.clone(),
            parties: snaps
                .iter()
                .zip(&self.keys)
                .map(|(s, k)| Party::restore(k.clone(), s).expect("restore"))
                .collect(),
            net: VecDeque::new(),
            payees: self.payees,
            nonce: self.nonce,
            hub_time: Duration::ZERO,
        }
    }
}

/// A hub with 10 payees and `open` virtual channels from payers that each open 10.
fn world_with(open: usize) -> (World, usize) {
    let mut w = World::new(10);
    let mut payer = w.add_payer();
    for k in 0..open {
        if k > 0 && k % 10 == 0 {
            payer = w.add_payer();
        }
        let v = w.fund(payer, k);
        assert!(w.running(v), "channel {k} not funded");
    }
    // The payer of the measured channels.
    let p = w.add_payer();
    (w, p)
}

fn hub_benches(c: &mut Criterion) {
    let mut group = c.benchmark_group("hub");
    group.throughput(Throughput::Elements(1));
    group.sample_size(20);
    for open in [0usize, 300] {
        let (w, payer) = world_with(open);
        let snaps = w.snapshots();
        group.bench_function(format!("fund_all_parties/open={open}"), |b| {
            b.iter_batched(
                || w.restore(&snaps),
                |mut w| {
                    let v = w.fund(payer, 3);
                    assert!(w.running(v));
                    w
                },
                BatchSize::PerIteration,
            )
        });
        group.bench_function(format!("fund_hub_share/open={open}"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let mut w = w.restore(&snaps);
                    let v = w.fund(payer, 3);
                    assert!(w.running(v));
                    total += w.hub_time;
                }
                total
            })
        });
    }
    group.finish();
}

/// Copies of the hub restored for the in-memory size.
const COPIES: usize = 12;

fn memory() {
    let ns: Vec<usize> = std::env::var("HUB_MEM_N")
        .unwrap_or_else(|_| "1000,3000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let mut lines = Vec::new();
    for n in ns {
        let t = Instant::now();
        let (w, _) = world_with(n);
        let build = t.elapsed();
        let hub_snap = w.parties[0].snapshot();
        let hub_key = w.keys[0].clone();
        // The first copies take what the build freed; the next ones grow the process.
        let restore = || Party::restore(hub_key.clone(), &hub_snap).expect("restore");
        let absorb: Vec<Party> = (0..4).map(|_| restore()).collect();
        let before = rss_bytes();
        let copies: Vec<Party> = (0..COPIES).map(|_| restore()).collect();
        let after = rss_bytes();
        assert!(copies.iter().all(|c| c.channels().count() == n));
        black_box((&absorb, &copies));
        let per_copy = after.saturating_sub(before) / COPIES as u64;
        // The time to fund one more channel with n open (whole exchange, and the hub's share).
        let payer = w.parties.len() - 1;
        let mut w2 = w.restore(&w.snapshots());
        let t = Instant::now();
        let v = w2.fund(payer, 3);
        let one = t.elapsed();
        assert!(w2.running(v));
        let line = format!(
            "{{\"channels\": {n}, \"hub_snapshot_bytes\": {}, \"hub_rss_bytes\": {}, \
             \"build_seconds\": {:.2}, \"fund_one_more_ms\": {:.3}, \"fund_one_more_hub_ms\": {:.3}}}",
            hub_snap.len(),
            per_copy,
            build.as_secs_f64(),
            one.as_secs_f64() * 1e3,
            w2.hub_time.as_secs_f64() * 1e3,
        );
        println!(
            "HUB MEMORY n={n}: snapshot {} B ({} B/channel), in memory {} B ({} B/channel); built in {:.1} s; one more channel: {:.2} ms (hub {:.2} ms)",
            hub_snap.len(),
            hub_snap.len() / n,
            per_copy,
            per_copy / n as u64,
            build.as_secs_f64(),
            one.as_secs_f64() * 1e3,
            w2.hub_time.as_secs_f64() * 1e3,
        );
        lines.push(line);
    }
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/criterion");
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(
        dir.join("hub-memory.json"),
        format!("[\n  {}\n]\n", lines.join(",\n  ")),
    );
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    hub_benches(&mut c);
    c.final_summary();
    if std::env::var_os("HUB_SKIP_MEMORY").is_none() {
        memory();
    }
}
