//! `paid-torrent demo --hub`: one hub, `--seeders` seeders and one downloader in this process on
//! the simulated chain; every seeder is paid through the hub (virtual channels), and each party's
//! on-chain transactions are printed next to what direct channels would have cost.

use std::sync::Arc;
use std::time::{Duration, Instant};

use paid_torrent_examples::paid::{
    BuyTerms, ChainChoice, HubTerms, PaidNode, SellTerms, TORRENT, Wallet,
};
use payment_channel::chain::{Call, Chain, Recording};
use payment_channel::ledger::LedgerRole;
use payment_channel::party_node::tcp::{RunningNode, TcpNodeConfig, start_node};
use payment_channel::party_node::{LedgerService, NodeConfig, NodeError};
use payment_channel::sign::{LocalSigner, Signer};
use payment_channel::virtual_channel::{HubLimits, PartyConfig};
use payment_channel::{Address, MemoryStore, SimulatedChain, SimulatedChainHandle, U256};
use torrent_glue::adapter::HubBackend;
use torrent_glue::{IdentityConfig, LivenessConfig};

use crate::Result;
use crate::demo::workspace;
use crate::failure::Failure;
use crate::options::PayOpts;

/// Gas per call measured on anvil with the published contracts (docs/benchmarks.md): the
/// simulated chain reports none, so the table prices each transaction it counted with these.
mod gas {
    /// Direct: the buyer's `deposit` into one channel.
    pub(super) const DIRECT_DEPOSIT: u64 = 46_496;
    /// Direct: the seller's `concludeAndTransferAllAssets` of one channel.
    pub(super) const DIRECT_CLOSE: u64 = 191_975;
    /// A ledger's `deposit`.
    pub(super) const LEDGER_DEPOSIT: u64 = 46_532;
    /// A ledger's `concludeAndTransferAllAssets` (no guarantees left).
    pub(super) const LEDGER_CLOSE: u64 = 143_286;
}

/// What one transaction of the hub run costs (a ledger's deposit or close).
fn priced(tx: Call) -> u64 {
    match tx {
        Call::Deposit => gas::LEDGER_DEPOSIT,
        Call::ConcludeAndTransferAllAssets => gas::LEDGER_CLOSE,
        // Not on the cooperative path; priced as the close to stay on the safe side.
        _ => gas::LEDGER_CLOSE,
    }
}

const CHALLENGE: u64 = 3_600;
const WAIT: Duration = Duration::from_secs(120);

async fn until(what: &str, mut done: impl AsyncFnMut() -> bool) -> Result<()> {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !done().await {
        if tokio::time::Instant::now() > deadline {
            return Err(Failure::network(format!(
                "demo timed out waiting for {what}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// The hub backend of a node started with hub terms.
fn hub_of(node: &PaidNode) -> Result<Arc<HubBackend>> {
    node.hub
        .clone()
        .ok_or_else(|| Failure::other("no hub backend"))
}

/// A party's chain handle, recording the transactions it sends for the table.
type CountedChain = Recording<SimulatedChainHandle>;

fn counted(sim: &SimulatedChain, a: Address) -> Arc<CountedChain> {
    Arc::new(Recording::new(sim.handle(a)))
}

/// Runs the demo: `seeders` seeders of a generated file of `size` bytes, one buyer, one hub.
pub(crate) async fn run(size: u64, seeders: usize, opts: &PayOpts) -> Result<()> {
    if seeders == 0 {
        return Err(Failure::usage("--seeders: at least one"));
    }
    let ws = workspace("demo-hub", size)?;
    println!(
        "demo --hub: {} file, {} seeders, one downloader, one hub (simulated chain)",
        paid_torrent_examples::units::format_size(size),
        seeders
    );
    let sim = SimulatedChain::new();
    let choice = ChainChoice::Simulated(sim.clone());
    let price = opts.sell.price;
    let deposit = u128::from(size) * price + 1;
    let fee = 0u128;

    // The hub: a party node with a ledger service, over loopback TCP.
    let hub_key = Arc::new(LocalSigner::random());
    let hub_chain = counted(&sim, hub_key.address());
    let per_ledger = deposit.saturating_mul(2);
    sim.fund(
        hub_key.address(),
        U256::from(per_ledger) * U256::from(seeders as u64),
    )?;
    let party =
        PartyConfig::new(sim.consensus_app(), sim.app_definition()).with_hub(Some(HubLimits {
            max_amount: U256::from(per_ledger),
            max_locked_per_ledger: U256::from(per_ledger),
            min_fee: U256::from(fee),
        }));
    let config = NodeConfig::default()
        .with_confirmations(Some(0))
        .with_max_retry_interval(5)
        .with_ledger_service(Some(LedgerService {
            asset: Address::ZERO,
            deposit: U256::from(per_ledger),
            challenge_duration: CHALLENGE,
            max_ledgers: seeders + 1,
        }));
    let tcp = TcpNodeConfig::new(
        "127.0.0.1:0".parse().map_err(Failure::other)?,
        Duration::from_millis(50),
        Duration::from_millis(500),
    );
    let store = Arc::new(MemoryStore::new());
    let RunningNode {
        node: hub_node,
        net,
        driver: hub_loop,
        ..
    } = start_node(
        tcp,
        hub_key.clone(),
        party,
        hub_chain.clone(),
        store,
        config,
    )
    .await
    .map_err(|e| match e {
        NodeError::Net(e) => Failure::network(e),
        e => Failure::other(e),
    })?;
    let endpoint = net.local_addr().to_string();
    let hub_terms = |seller: bool, chain: Arc<CountedChain>, ledger: Option<u128>| HubTerms {
        endpoint: endpoint.clone(),
        consensus_app: sim.consensus_app(),
        ledger_deposit: ledger,
        request_ledger: seller,
        fee,
        challenge_duration: CHALLENGE,
        store: Arc::new(MemoryStore::new()),
        chain: Some(chain),
        watch_every: Duration::from_millis(50),
    };
    let liveness =
        LivenessConfig::default().with_idle_close_after(Some(Duration::from_millis(500)));
    let wallet = |chain: Arc<CountedChain>, signer: Arc<LocalSigner>| Wallet {
        signer,
        chain: chain as Arc<dyn Chain>,
        app: sim.app_definition(),
        units: paid_torrent_examples::paid::Units {
            asset: Address::ZERO,
            decimals: 18,
        },
        store: Arc::new(MemoryStore::new()),
    };
    let _ = &choice;

    // The seeders.
    let mut sellers = Vec::new();
    for _ in 0..seeders {
        let key = Arc::new(LocalSigner::random());
        let chain = counted(&sim, key.address());
        let (node, _events) = PaidNode::start_with_hub(
            ws.seeder()?,
            &wallet(chain.clone(), key),
            Some(SellTerms {
                price_per_byte: price,
                trust_bytes: opts.sell.trust,
                deposit,
                free_bytes: None,
                challenge_duration: CHALLENGE,
            }),
            None,
            liveness,
            IdentityConfig::default(),
            Some(hub_terms(true, chain.clone(), None)),
        )
        .await?;
        sellers.push((node, chain));
    }
    // The downloader: one ledger for every seeder.
    let key = Arc::new(LocalSigner::random());
    let buyer_chain = counted(&sim, key.address());
    let ledger = (deposit + fee) * seeders as u128;
    let budget = ledger + deposit;
    sim.fund(key.address(), U256::from(ledger))?;
    let leecher = ws.leecher()?;
    let buy = BuyTerms {
        budget,
        max_price_per_byte: price,
        granularity_bytes: opts.buy.granularity,
        // Paid as served: with several seeders, paying ahead pays one for what another sent.
        max_pay_ahead_bytes: 0,
    };
    let (buyer, _buyer_events) = PaidNode::start_with_hub(
        leecher.clone(),
        &wallet(buyer_chain.clone(), key),
        None,
        Some(buy),
        liveness,
        IdentityConfig::default(),
        Some(hub_terms(false, buyer_chain.clone(), Some(ledger))),
    )
    .await?;
    let bh = hub_of(&buyer)?;
    let seller_hubs = sellers
        .iter()
        .map(|(s, _)| hub_of(s))
        .collect::<Result<Vec<_>>>()?;
    until("the buyer's ledger", async || {
        bh.open_ledger(LedgerRole::Leader).await.is_some()
    })
    .await?;
    for h in &seller_hubs {
        until("a seeder's ledger", async || {
            h.open_ledger(LedgerRole::Follower).await.is_some()
        })
        .await?;
    }
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (s, _) in &sellers {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let at = listener.local_addr()?;
        let n = s.node.clone();
        tasks.push(tokio::spawn(async move {
            let _ = n.accept(listener).await;
        }));
        let b = buyer.node.clone();
        tasks.push(tokio::spawn(async move {
            let _ = b.connect(at, TORRENT).await;
        }));
    }
    until("the download", async || leecher.is_complete()).await?;
    let secs = started.elapsed().as_secs_f64();
    until("every virtual channel defunded", async || {
        bh.party_node()
            .inspect(|p| p.channels().count() > 0 && p.channels().all(|c| c.is_defunded()))
            .await
    })
    .await?;
    for h in &seller_hubs {
        until("a seeder's side defunded", async || {
            h.party_node()
                .inspect(|p| p.channels().all(|c| c.is_defunded()))
                .await
        })
        .await?;
    }
    // Everybody closes its ledger with the hub: the payouts.
    let mut nodes = vec![hub_node.clone(), bh.party_node().clone()];
    let (l, _) = bh
        .open_ledger(LedgerRole::Leader)
        .await
        .ok_or_else(|| Failure::other("the buyer's ledger is gone"))?;
    bh.party_node()
        .close_ledger(l)
        .await
        .map_err(Failure::other)?;
    for h in &seller_hubs {
        if let Some((l, _)) = h.open_ledger(LedgerRole::Follower).await {
            h.party_node()
                .close_ledger(l)
                .await
                .map_err(Failure::other)?;
        }
        nodes.push(h.party_node().clone());
    }
    for n in &nodes {
        until("every ledger paid out", async || {
            n.inspect(|p| p.ledgers().all(|l| l.chain().paid_out)).await
        })
        .await?;
    }
    for t in tasks {
        t.abort();
    }
    hub_loop.abort();
    net.shutdown();

    // The figures.
    println!(
        "downloaded: {} in {secs:.2} s",
        paid_torrent_examples::units::format_size(size)
    );
    println!(
        "on-chain transactions per party (gas: per-call figures measured on anvil, docs/benchmarks.md)"
    );
    println!(
        "{:<10} {:>8} {:>11} {:>12} {:>11}  paid out",
        "party", "hub txs", "hub gas", "direct txs", "direct gas"
    );
    let row = |name: &str, sent: &[(Call, u64)], direct: (u64, u64), paid: U256| {
        let gas: u64 = sent.iter().map(|(t, _)| priced(*t)).sum();
        println!(
            "{name:<10} {:>8} {:>11} {:>12} {:>11}  {paid}",
            sent.len(),
            gas,
            direct.0,
            direct.1
        );
    };
    let mut total_paid = U256::ZERO;
    let mut sellers_paid = 0u64;
    let mut seller_rows = Vec::new();
    for (i, (s, chain)) in sellers.iter().enumerate() {
        let account = s.account;
        let paid = sim.balance_of(account);
        let served = paid > U256::ZERO;
        if served {
            sellers_paid += 1;
        }
        total_paid += paid;
        // Direct: one channel per seeder that sold, closed by the seeder.
        let direct = if served {
            (1, gas::DIRECT_CLOSE)
        } else {
            (0, 0)
        };
        // Exactly its largest voucher (the buyer pays each window before it is served, so a
        // seeder whose last window went unused is paid for it).
        let vouchers = buyer
            .node
            .inspect(|c| c.identity(account).map_or(0, |i| i.wei_paid));
        if U256::from(vouchers) != paid {
            return Err(Failure::chain(format!(
                "seeder {} was paid {vouchers} and holds {paid}",
                i + 1
            )));
        }
        seller_rows.push((format!("seeder {}", i + 1), chain.sent(), direct, paid));
    }
    let buyer_paid = buyer.node.inspect(|c| {
        sellers
            .iter()
            .filter_map(|(s, _)| c.identity(s.account).map(|i| i.wei_paid))
            .sum::<u128>()
    });
    row(
        "buyer",
        &buyer_chain.sent(),
        (sellers_paid, sellers_paid * gas::DIRECT_DEPOSIT),
        U256::from(ledger) - U256::from(buyer_paid) - U256::from(fee * sellers_paid as u128),
    );
    for (name, sent, direct, paid) in &seller_rows {
        row(name, sent, *direct, *paid);
    }
    row(
        "hub",
        &hub_chain.sent(),
        (0, 0),
        sim.balance_of(hub_key.address()),
    );
    if total_paid != U256::from(buyer_paid) {
        return Err(Failure::chain(format!(
            "the buyer paid {buyer_paid} but the seeders hold {total_paid}"
        )));
    }
    if sim.balance_of(buyer.account)
        != U256::from(ledger) - U256::from(buyer_paid) - U256::from(fee * sellers_paid as u128)
    {
        return Err(Failure::chain(
            "the buyer's refund is not what it left unspent",
        ));
    }
    ws.verify()
}
