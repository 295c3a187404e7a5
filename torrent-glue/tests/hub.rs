//! Channels funded through a hub: a real hub (a `PartyNode` with a ledger service over
//! `party_node::tcp`), sellers and buyers as `Node`s over `HubBackend` (virtual channels) or
//! `ClientBackend` (direct), all on one `SimulatedChain`, peers over loopback TCP.

mod support;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use payment_channel::chain::Chain;
use payment_channel::ledger::LedgerRole;
use payment_channel::party_node::tcp::{RunningNode, TcpNet, TcpNodeConfig, start_node};
use payment_channel::party_node::{
    DEFAULT_STALLED_REMOVE_PATIENCE, LedgerService, NodeConfig as PartyNodeConfig, PartyNode,
};
use payment_channel::sign::{LocalSigner, Signer};
use payment_channel::test_utils::faulty::FaultyChain;
use payment_channel::virtual_channel::{HubLimits, PartyConfig};
use payment_channel::{Address, B256, MemoryStore, SimulatedChain, U256};
use torrent_glue::adapter::{
    ChannelBackend, HubBackend, HubConfig, MemoryTorrent, Node, NodeConfig, PieceSink,
};
use torrent_glue::engine::HubInfo;
use torrent_glue::test_utils::{self, pseudo_random_content as content};
use torrent_glue::{Coordinator, CoordinatorConfig, LivenessConfig, TorrentKey};

use crate::support::{balance, unbounded_buyer};

const INFO_HASH: [u8; 20] = [0x5a; 20];
const T: TorrentKey = TorrentKey(0);
const KIB: u64 = 1024;
const DURATION: u64 = 60;
const FUNDS: u64 = 1 << 40;
const FEE: u64 = 2;
const SIZE: u64 = 512 * KIB;
const PIECE: u32 = 64 * 1024;
/// Each seller asks for this much in its channel (price 1 wei per byte).
const CHANNEL: u64 = 2 * SIZE;
const BUYER_LEDGER: u64 = 4 * CHANNEL;
const HUB_LEDGER: u64 = 2 * CHANNEL;

type Faulty = Arc<FaultyChain<Arc<dyn Chain>>>;

struct Hub {
    info: HubInfo,
    node: PartyNode,
    net: TcpNet,
}

async fn hub(sim: &SimulatedChain) -> Hub {
    let key = Arc::new(LocalSigner::random());
    sim.fund(key.address(), U256::from(FUNDS)).unwrap();
    let party =
        PartyConfig::new(sim.consensus_app(), sim.app_definition()).with_hub(Some(HubLimits {
            max_amount: U256::from(HUB_LEDGER),
            max_locked_per_ledger: U256::from(HUB_LEDGER),
            min_fee: U256::from(FEE),
        }));
    let config = PartyNodeConfig::default()
        .with_confirmations(Some(0))
        .with_max_retry_interval(5)
        .with_ledger_service(Some(LedgerService {
            asset: Address::ZERO,
            deposit: U256::from(HUB_LEDGER),
            challenge_duration: DURATION,
            max_ledgers: 10,
        }));
    let tcp = TcpNodeConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        Duration::from_millis(30),
        Duration::from_millis(300),
    );
    let chain = Arc::new(sim.handle(key.address()));
    let store = Arc::new(MemoryStore::new());
    let RunningNode { node, net, .. } = start_node(tcp, key.clone(), party, chain, store, config)
        .await
        .unwrap();
    Hub {
        info: HubInfo {
            address: key.address(),
            endpoint: net.local_addr().to_string(),
        },
        node,
        net,
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Funding {
    /// A `HubBackend` (and our hub advertised).
    Hub,
    /// A `HubBackend` that never gets a ledger with the hub (our hub advertised).
    HubNoLedger,
    /// A `ClientBackend` only, nothing advertised.
    Direct,
    /// A `ClientBackend` only, but our hub advertised (a claim without a ledger).
    Claim,
}

#[allow(dead_code)] // some fields serve some tests only
struct Peer {
    node: Node,
    account: Address,
    signer: Arc<LocalSigner>,
    store: Arc<MemoryTorrent>,
    chain: Faulty,
    hub: Option<Arc<HubBackend>>,
    client: payment_channel::client::Client,
    party_store: Arc<MemoryStore>,
}

/// The suites' liveness with idle connections closed after 1 s, and 5 s for handshakes and
/// answers.
fn liveness() -> LivenessConfig {
    support::liveness(Duration::from_secs(1))
        .with_handshake_timeout(Duration::from_secs(5))
        .with_response_timeout(Duration::from_secs(5))
}

struct Role {
    seller: bool,
    trust: u64,
}

/// A seller of [`seed`] asking `trust` bytes of trust, with a fresh key, store and chain handle.
async fn new_seller(sim: &SimulatedChain, hub: &Hub, funding: Funding, trust: u64) -> Peer {
    peer(
        sim,
        hub,
        funding,
        seller_role(trust),
        Arc::new(seed()),
        None,
        None,
        None,
    )
    .await
}

/// A buyer of [`seed`]'s torrent that has none of it, with a fresh key, store and chain handle.
async fn new_buyer(sim: &SimulatedChain, hub: &Hub, funding: Funding) -> Peer {
    let empty = MemoryTorrent::empty(seed().meta().clone());
    peer(sim, hub, funding, BUYER, Arc::new(empty), None, None, None).await
}

#[allow(clippy::too_many_arguments)]
async fn peer(
    sim: &SimulatedChain,
    hub: &Hub,
    funding: Funding,
    role: Role,
    store: Arc<MemoryTorrent>,
    signer: Option<Arc<LocalSigner>>,
    party_store: Option<Arc<MemoryStore>>,
    chain: Option<Faulty>,
) -> Peer {
    let signer = signer.unwrap_or_else(|| {
        let s = Arc::new(LocalSigner::random());
        sim.fund(s.address(), U256::from(FUNDS)).unwrap();
        s
    });
    let account = signer.address();
    let chain = chain.unwrap_or_else(|| {
        let c: Arc<dyn Chain> = Arc::new(sim.handle(account));
        Arc::new(FaultyChain::new(c))
    });
    let (client, direct) = test_utils::client_backend(
        sim,
        chain.clone(),
        signer.clone(),
        DURATION,
        Some(test_utils::accept_any(sim)),
    )
    .await;
    let party_store = party_store.unwrap_or_else(|| Arc::new(MemoryStore::new()));
    let (backend, hub_backend): (Arc<dyn ChannelBackend>, _) = match funding {
        Funding::Hub | Funding::HubNoLedger => {
            let ledger = funding == Funding::Hub;
            let b = Arc::new(
                HubBackend::start(
                    signer.clone(),
                    chain.clone(),
                    party_store.clone(),
                    direct,
                    HubConfig::new(
                        hub.info.clone(),
                        PartyConfig::new(sim.consensus_app(), sim.app_definition()),
                    )
                    .with_asset(Address::ZERO)
                    .with_challenge_duration(DURATION)
                    .with_ledger_deposit((ledger && !role.seller).then(|| U256::from(BUYER_LEDGER)))
                    .with_request_ledger(ledger && role.seller)
                    .with_fee(U256::from(FEE))
                    .with_confirmations(Some(0))
                    .with_watch_every(Duration::from_millis(30))
                    .with_resend_every(Duration::from_millis(300)),
                )
                .await
                .unwrap(),
            );
            (b.clone() as Arc<dyn ChannelBackend>, Some(b))
        }
        Funding::Direct | Funding::Claim => (Arc::new(direct) as Arc<dyn ChannelBackend>, None),
    };
    let mut config = CoordinatorConfig::new(account, account);
    config.liveness = liveness();
    if funding != Funding::Direct {
        config = config.with_hub(Some(hub.info.clone()));
    }
    if role.seller {
        let up = config.upload.as_mut().unwrap();
        up.choke.trust = paid_wire::choke::TrustPolicy::fixed(role.trust);
        up.deposit = u128::from(CHANNEL);
        config.download = None;
    } else {
        let down = unbounded_buyer(&mut config);
        down.granularity_bytes = 16 * KIB;
        // Paid as served: with two sellers, paying ahead would pay one for blocks the other sent.
        down.pay_ahead = false;
    }
    let coordinator = Coordinator::with_signer(config, signer.clone()).unwrap();
    let mut node_config = NodeConfig::new(*b"-TG0001-000000000000");
    node_config.peer_id[18..].copy_from_slice(&account.0[..2]);
    node_config.tick = Duration::from_millis(20);
    let node = Node::start(coordinator, node_config, backend);
    node.restore().await;
    node.add_torrent(T, INFO_HASH, store.clone()).unwrap();
    Peer {
        node,
        account,
        signer,
        store,
        chain,
        hub: hub_backend,
        client,
        party_store,
    }
}

async fn until<Fut: Future<Output = bool>>(what: &str, secs: u64, f: impl FnMut() -> Fut) {
    payment_channel::test_utils::until(what, Duration::from_secs(secs), f).await
}

async fn ledger_open(p: &Peer, role: LedgerRole) {
    let b = p.hub.clone().unwrap();
    until("the ledger with the hub open", 30, || {
        let b = b.clone();
        async move { b.open_ledger(role).await.is_some() }
    })
    .await;
}

async fn serve(p: &Peer) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let n = p.node.clone();
    tokio::spawn(async move {
        let _ = n.accept(listener).await;
    });
    addr
}

fn connect(buyer: &Peer, at: std::net::SocketAddr) {
    let n = buyer.node.clone();
    tokio::spawn(async move {
        let _ = n.connect(at, T).await;
    });
}

fn seed() -> MemoryTorrent {
    MemoryTorrent::seed(content(SIZE), PIECE)
}

fn seller_role(trust: u64) -> Role {
    Role {
        seller: true,
        trust,
    }
}

const BUYER: Role = Role {
    seller: false,
    trust: 0,
};

async fn virtual_channels(p: &Peer) -> usize {
    match &p.hub {
        Some(h) => {
            h.party_node()
                .inspect(|party| party.channels().count())
                .await
        }
        None => 0,
    }
}

/// The id of the first virtual channel of a party's hub backend.
async fn first_virtual_channel(b: &HubBackend) -> B256 {
    b.party_node()
        .inspect(|p| p.channels().next().unwrap().id())
        .await
}

/// Waits until the virtual channel `v` of a party's hub backend is defunded.
async fn defunded(b: &Arc<HubBackend>, v: B256) {
    until("V defunded", 30, || {
        let b = b.clone();
        async move {
            b.party_node()
                .inspect(|p| p.channel(&v).is_some_and(|c| c.is_defunded()))
                .await
        }
    })
    .await;
}

/// Whether every ledger of `node` is paid out on chain.
async fn paid_out(node: &PartyNode) -> bool {
    node.inspect(|p| p.ledgers().all(|l| l.chain().paid_out))
        .await
}

/// Waits until every ledger of `node` is paid out (`what`: the wait's name).
async fn ledgers_paid_out(what: &str, node: &PartyNode) {
    until(what, 30, || {
        let n = node.clone();
        async move { paid_out(&n).await }
    })
    .await;
}

/// Lets the challenges on chain time out (the chain's clock past the challenge duration, up to
/// 20 times, until every ledger of `node` is paid out), then waits for that payout.
async fn challenges_time_out(sim: &SimulatedChain, what: &str, node: &PartyNode) {
    for _ in 0..20 {
        sim.advance_time(DURATION + 1);
        tokio::time::sleep(Duration::from_millis(200)).await;
        if paid_out(node).await {
            break;
        }
    }
    ledgers_paid_out(what, node).await;
}

/// Opens the seller's ledger with the hub (it follows) and the buyer's (it leads).
async fn ledgers_open(seller: &Peer, buyer: &Peer) {
    ledger_open(seller, LedgerRole::Follower).await;
    ledger_open(buyer, LedgerRole::Leader).await;
}

/// With their ledgers with the hub open, the buyer connects to the seller, which serves it.
async fn download_through_the_hub(seller: &Peer, buyer: &Peer) {
    ledgers_open(seller, buyer).await;
    let at = serve(seller).await;
    connect(buyer, at);
}

/// A hub on `sim`, a seller (no trust) and a buyer with ledgers with it, the buyer halfway
/// through its download; with the buyer's hub connection (which the scenarios cut).
async fn halfway_through_the_hub(sim: &SimulatedChain) -> (Hub, Peer, Peer, Arc<HubBackend>) {
    let hub = hub(sim).await;
    let seller = new_seller(sim, &hub, Funding::Hub, 0).await;
    let buyer = new_buyer(sim, &hub, Funding::Hub).await;
    download_through_the_hub(&seller, &buyer).await;
    until("half the download", 60, || async {
        buyer.store.remaining() <= SIZE / 2
    })
    .await;
    let buyer_hub = buyer.hub.clone().unwrap();
    (hub, seller, buyer, buyer_hub)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_seeders_paid_through_the_hub_and_the_buyer_sends_two_transactions() {
    let sim = SimulatedChain::new();
    let hub = hub(&sim).await;
    let mut sellers = Vec::new();
    for _ in 0..2 {
        let s = peer(
            &sim,
            &hub,
            Funding::Hub,
            seller_role(0),
            Arc::new(seed()),
            None,
            None,
            None,
        )
        .await;
        sellers.push(s);
    }
    let meta = seed().meta().clone();
    let buyer = peer(
        &sim,
        &hub,
        Funding::Hub,
        BUYER,
        Arc::new(MemoryTorrent::empty(meta)),
        None,
        None,
        None,
    )
    .await;
    ledger_open(&buyer, LedgerRole::Leader).await;
    for s in &sellers {
        ledger_open(s, LedgerRole::Follower).await;
    }
    let started = tokio::time::Instant::now();
    for s in &sellers {
        let at = serve(s).await;
        connect(&buyer, at);
    }
    until("the download", 60, || async {
        buyer.store.remaining() == 0
    })
    .await;
    println!(
        "FIGURE hub download {SIZE} B from 2 seeders via the hub: {:?}",
        started.elapsed()
    );
    assert_eq!(buyer.store.data(), content(SIZE), "the data arrived intact");
    // Idle connections close the channels cooperatively (V defunded in both ledgers).
    let b = buyer.hub.clone().unwrap();
    until("every virtual channel defunded", 30, || {
        let b = b.clone();
        async move {
            b.party_node()
                .inspect(|p| p.channels().count() == 2 && p.channels().all(|c| c.is_defunded()))
                .await
        }
    })
    .await;
    for s in &sellers {
        let h = s.hub.clone().unwrap();
        until("the seller's side defunded", 30, || {
            let h = h.clone();
            async move {
                h.party_node()
                    .inspect(|p| p.channels().all(|c| c.is_defunded()))
                    .await
            }
        })
        .await;
    }
    // Every channel was virtual: no direct channel anywhere.
    assert!(buyer.client.channel_ids().is_empty());
    for s in &sellers {
        assert!(s.client.channel_ids().is_empty());
        assert_eq!(virtual_channels(s).await, 1);
    }
    // Everybody closes its ledger with the hub.
    let (bl, _) = b.open_ledger(LedgerRole::Leader).await.unwrap();
    b.party_node().close_ledger(bl).await.unwrap();
    for s in &sellers {
        let h = s.hub.clone().unwrap();
        let (l, _) = h.open_ledger(LedgerRole::Follower).await.unwrap();
        h.party_node().close_ledger(l).await.unwrap();
    }
    for n in [hub.node.clone(), b.party_node().clone()]
        .into_iter()
        .chain(
            sellers
                .iter()
                .map(|s| s.hub.clone().unwrap().party_node().clone()),
        )
    {
        ledgers_paid_out("every ledger paid out", &n).await;
    }
    let mut total = 0u128;
    for s in &sellers {
        let paid = buyer
            .node
            .inspect(|c| c.identity(s.account).unwrap().wei_paid);
        let served = s
            .node
            .inspect(|c| c.identity(buyer.account).unwrap().bytes_served);
        assert!(paid > 0, "both sellers served and were paid");
        assert_eq!(u128::from(served), paid, "served = paid (no trust)");
        assert_eq!(
            balance(&sim, s.account),
            u128::from(FUNDS) + paid,
            "the seller's payout is exactly what it was paid, and it sent no transaction"
        );
        assert!(s.chain.gas_used().is_empty());
        total += paid;
    }
    assert_eq!(total, u128::from(SIZE));
    assert_eq!(
        buyer.chain.gas_used().len(),
        2,
        "the buyer sends exactly 2 transactions: {:?}",
        buyer.chain.gas_used()
    );
    let gas: u64 = buyer.chain.gas_used().iter().map(|(_, g)| g).sum();
    println!(
        "FIGURE hub buyer transactions {:?} gas {gas}",
        buyer.chain.gas_used()
    );
    assert_eq!(
        balance(&sim, buyer.account),
        u128::from(FUNDS) - total - 2 * u128::from(FEE),
        "the buyer ends with its funds less what it paid and the hub's fees"
    );
    assert_eq!(
        balance(&sim, hub.info.address),
        u128::from(FUNDS) + 2 * u128::from(FEE),
        "the hub: its deposits back plus the fees"
    );
    hub.net.shutdown();
}

/// The buyer downloads `SIZE` from `seller`; returns once the seller's channel closed and paid.
async fn download_and_close(sim: &SimulatedChain, seller: &Peer, buyer: &Peer) -> u128 {
    let at = serve(seller).await;
    connect(buyer, at);
    until("the download", 60, || async {
        buyer.store.remaining() == 0
    })
    .await;
    assert_eq!(buyer.store.data(), content(SIZE));
    let (s, b) = (seller.account, buyer.account);
    until("the close and payout", 30, || async {
        let closed = seller
            .node
            .inspect(|c| c.identity(b).is_some_and(|i| i.payee_channel.is_none()));
        closed && balance(sim, s) > u128::from(FUNDS)
    })
    .await;
    let paid = buyer.node.inspect(|c| c.identity(s).unwrap().wei_paid);
    assert_eq!(paid, u128::from(SIZE));
    assert_eq!(balance(sim, s), u128::from(FUNDS) + paid, "payout exact");
    paid
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_common_hub_channels_are_direct_both_ways() {
    for (seller_funding, buyer_funding) in [
        (Funding::Hub, Funding::Direct),
        (Funding::Direct, Funding::Hub),
        // The same hub, but the seller's ledger with it is not open.
        (Funding::HubNoLedger, Funding::Hub),
    ] {
        let sim = SimulatedChain::new();
        let hub = hub(&sim).await;
        let seller = new_seller(&sim, &hub, seller_funding, 0).await;
        let buyer = new_buyer(&sim, &hub, buyer_funding).await;
        for (p, role, funding) in [
            (&seller, LedgerRole::Follower, seller_funding),
            (&buyer, LedgerRole::Leader, buyer_funding),
        ] {
            if funding == Funding::Hub {
                ledger_open(p, role).await;
            }
        }
        download_and_close(&sim, &seller, &buyer).await;
        assert_eq!(seller.client.channel_ids().len(), 1, "one direct channel");
        assert_eq!(buyer.client.channel_ids().len(), 1, "one direct channel");
        assert_eq!(virtual_channels(&seller).await, 0);
        assert_eq!(virtual_channels(&buyer).await, 0);
        hub.net.shutdown();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_claiming_our_hub_without_a_ledger_gets_only_the_trust() {
    const TRUST: u64 = 16 * KIB;
    let sim = SimulatedChain::new();
    let hub = hub(&sim).await;
    let seller = new_seller(&sim, &hub, Funding::Hub, TRUST).await;
    ledger_open(&seller, LedgerRole::Follower).await;
    let buyer = new_buyer(&sim, &hub, Funding::Claim).await;
    let at = serve(&seller).await;
    connect(&buyer, at);
    let b = buyer.account;
    until("the trust served", 20, || async {
        seller
            .node
            .inspect(|c| c.identity(b).is_some_and(|i| i.bytes_served >= TRUST))
    })
    .await;
    // Longer than the response timeout: the unfunded request is abandoned, nothing more served.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let served = seller
        .node
        .inspect(|c| c.identity(b).map_or(0, |i| i.bytes_served));
    assert_eq!(served, TRUST, "nothing beyond the free allowance");
    assert!(buyer.store.remaining() > 0);
    assert_eq!(virtual_channels(&seller).await, 0, "no channel was funded");
    assert!(seller.client.channel_ids().is_empty(), "and none direct");
    let locked = hub.node.inspect(|p| p.channels().count()).await;
    assert_eq!(locked, 0, "the hub locked nothing");
    hub.net.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_buyer_is_challenged_and_the_seller_gets_exactly_its_largest_voucher() {
    let sim = SimulatedChain::new();
    let (hub, seller, buyer, bh) = halfway_through_the_hub(&sim).await;
    // The buyer goes silent mid-download: no hub connection, no peer connection (its node still
    // watches the chain, as every party's driver does).
    bh.shutdown();
    for k in buyer.node.connections() {
        buyer.node.disconnect(k);
    }
    let b = buyer.account;
    let sh = seller.hub.clone().unwrap();
    let v = first_virtual_channel(&sh).await;
    let chain = seller.chain.clone();
    until("V challenged on chain by the seller", 30, || {
        let chain = chain.clone();
        async move { chain.status(v).await.unwrap().finalizes_at != 0 }
    })
    .await;
    // Let every challenge (V, then the ledgers no earlier than V) time out.
    challenges_time_out(&sim, "the seller's ledger paid out", sh.party_node()).await;
    // Vouchers in flight when the buyer went silent still count: read the totals now.
    let received = seller.node.inspect(|c| c.identity(b).unwrap().wei_received);
    let largest = sh
        .party_node()
        .inspect(|p| p.channel(&v).unwrap().paid())
        .await;
    assert_eq!(U256::from(received), largest);
    assert!(received > 0 && received < u128::from(SIZE));
    assert_eq!(
        balance(&sim, seller.account),
        u128::from(FUNDS) + received,
        "the seller gets exactly its largest voucher"
    );
    assert!(
        seller.client.channel_ids().is_empty(),
        "V, not a direct channel"
    );
    hub.net.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_buyer_silent_after_its_final_state_the_seller_is_paid_off_chain_and_the_hub_on_chain() {
    let sim = SimulatedChain::new();
    let (hub, seller, buyer, bh) = halfway_through_the_hub(&sim).await;
    // V is running. The buyer loses the hub (vouchers and its final state go over the peer
    // wire): its final state reaches only the seller, and it never removes V from its ledger
    // with the hub.
    let (pl, _) = bh.open_ledger(LedgerRole::Leader).await.unwrap();
    bh.shutdown();
    until("the download", 60, || async {
        buyer.store.remaining() == 0
    })
    .await;
    let sh = seller.hub.clone().unwrap();
    let v = first_virtual_channel(&sh).await;
    // The seller relays the final state signed by all to the hub; they remove V from L(H,B).
    let n = sh.party_node().clone();
    until("the seller's side defunded off chain", 30, || {
        let n = n.clone();
        async move { n.inspect(|p| p.channel(&v).unwrap().is_defunded()).await }
    })
    .await;
    let b = buyer.account;
    let received = seller.node.inspect(|c| c.identity(b).unwrap().wei_received);
    assert_eq!(received, u128::from(SIZE), "the whole download was paid");
    assert!(
        seller.chain.status(v).await.unwrap().finalizes_at == 0,
        "V did not go on chain for the seller"
    );
    // The hub sees L(P,H)'s Remove waiting for the silent buyer and, once its patience
    // (`NodeConfig::stalled_remove_patience`, chain time) has passed, takes it on chain by itself.
    let n = hub.node.clone();
    until("only L(P,H) waiting at the hub", 30, || {
        let n = n.clone();
        async move { n.inspect(|p| p.stalled_removes()).await == vec![pl] }
    })
    .await;
    let mut challenged = false;
    for _ in 0..50 {
        sim.advance_time(DEFAULT_STALLED_REMOVE_PATIENCE / 10);
        tokio::time::sleep(Duration::from_millis(100)).await;
        if sim.status_of(pl).finalizes_at != 0 {
            challenged = true;
            break;
        }
    }
    assert!(
        challenged,
        "the hub took L(P,H) on chain once its patience ran out"
    );
    // The seller closes its ledger with the hub cooperatively.
    let (sl, _) = sh.open_ledger(LedgerRole::Follower).await.unwrap();
    sh.party_node().close_ledger(sl).await.unwrap();
    challenges_time_out(&sim, "every hub ledger paid out", &hub.node).await;
    assert_eq!(
        balance(&sim, seller.account),
        u128::from(FUNDS) + received,
        "the seller gets exactly its largest voucher, and sent no transaction"
    );
    assert!(seller.chain.gas_used().is_empty());
    assert_eq!(
        balance(&sim, hub.info.address),
        u128::from(FUNDS) + u128::from(FEE),
        "the hub: its deposit back, what it paid the seller recovered, plus the fee"
    );
    assert_eq!(
        balance(&sim, buyer.account),
        u128::from(FUNDS) - received - u128::from(FEE),
        "the silent buyer's change is paid out too"
    );
    hub.net.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_seeder_restores_its_virtual_channel_and_is_paid() {
    let sim = SimulatedChain::new();
    let hub = hub(&sim).await;
    let data = Arc::new(seed());
    let seller = peer(
        &sim,
        &hub,
        Funding::Hub,
        seller_role(0),
        data.clone(),
        None,
        None,
        None,
    )
    .await;
    let buyer = new_buyer(&sim, &hub, Funding::Hub).await;
    ledgers_open(&seller, &buyer).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let at = listener.local_addr().unwrap();
    let n = seller.node.clone();
    let accepting = tokio::spawn(async move {
        let _ = n.accept(listener).await;
    });
    connect(&buyer, at);
    until("part of the download", 60, || async {
        buyer.store.remaining() <= SIZE / 2
    })
    .await;
    // The seller stops: its node loop, its hub connection, its peer connections.
    let sh = seller.hub.clone().unwrap();
    let v = first_virtual_channel(&sh).await;
    sh.shutdown();
    accepting.abort();
    for k in seller.node.connections() {
        seller.node.disconnect(k);
    }
    let (signer, party_store, chain) = (
        seller.signer.clone(),
        seller.party_store.clone(),
        seller.chain.clone(),
    );
    drop(seller);
    drop(sh);
    // Restarted from its store: the same V is restored and carries on.
    let seller = peer(
        &sim,
        &hub,
        Funding::Hub,
        seller_role(0),
        data,
        Some(signer),
        Some(party_store),
        Some(chain),
    )
    .await;
    let b = buyer.account;
    assert!(
        seller
            .node
            .inspect(|c| c.identity(b).is_some_and(|i| i.payee_channel.is_some())),
        "the coordinator adopted the restored channel"
    );
    let at = serve(&seller).await;
    connect(&buyer, at);
    until("the download", 60, || async {
        buyer.store.remaining() == 0
    })
    .await;
    assert_eq!(buyer.store.data(), content(SIZE));
    let sh = seller.hub.clone().unwrap();
    defunded(&sh, v).await;
    assert_eq!(virtual_channels(&seller).await, 1, "no second channel");
    let paid = buyer
        .node
        .inspect(|c| c.identity(seller.account).unwrap().wei_paid);
    let (l, _) = sh.open_ledger(LedgerRole::Follower).await.unwrap();
    sh.party_node().close_ledger(l).await.unwrap();
    ledgers_paid_out("the seller's ledger paid out", sh.party_node()).await;
    assert!(paid >= u128::from(SIZE));
    assert_eq!(
        balance(&sim, seller.account),
        u128::from(FUNDS) + paid,
        "paid for everything, across the restart"
    );
    hub.net.shutdown();
}

/// Figures: time from the connection to the first paid byte (trust 0: nothing is served before
/// the channel is funded), direct vs virtual (the ledgers are open beforehand: they are set up
/// once per party, not per seller), on the simulated chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_to_first_paid_byte_direct_vs_virtual_on_the_simulator() {
    let mut figures = Vec::new();
    for funding in [Funding::Direct, Funding::Hub] {
        let sim = SimulatedChain::new();
        let hub = hub(&sim).await;
        let seller = new_seller(&sim, &hub, funding, 0).await;
        let buyer = new_buyer(&sim, &hub, funding).await;
        if funding == Funding::Hub {
            ledgers_open(&seller, &buyer).await;
        }
        let at = serve(&seller).await;
        let started = tokio::time::Instant::now();
        connect(&buyer, at);
        let b = buyer.account;
        loop {
            let served = seller
                .node
                .inspect(|c| c.identity(b).map_or(0, |i| i.bytes_served));
            if served > 0 {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "nothing served"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let elapsed = started.elapsed();
        let virtual_channels = virtual_channels(&seller).await;
        assert_eq!(virtual_channels, usize::from(funding == Funding::Hub));
        figures.push(elapsed);
        hub.net.shutdown();
    }
    println!(
        "FIGURE time to first paid byte on the simulated chain: direct {:?}, virtual {:?}",
        figures[0], figures[1]
    );
}

/// A TCP relay to `upstream` that delays what flows back (upstream → client) by `delay` per
/// read: the seller learns its channel is funded late.
async fn slow_relay(upstream: String, delay: Duration) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let at = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                continue;
            };
            let (mut cr, mut cw) = client.into_split();
            let (mut sr, mut sw) = server.into_split();
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut cr, &mut sw).await;
            });
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = match sr.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    tokio::time::sleep(delay).await;
                    if cw.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    at
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vouchers_before_the_seller_saw_its_funding_are_kept_and_credited_once() {
    let sim = SimulatedChain::new();
    let mut hub = hub(&sim).await;
    // The seller reaches the hub through a relay that delays the hub's messages: the buyer's
    // first vouchers (sent as soon as the hub confirmed V to the buyer) arrive first.
    let real = hub.info.endpoint.clone();
    hub.info.endpoint = slow_relay(real.clone(), Duration::from_millis(150)).await;
    let seller = new_seller(&sim, &hub, Funding::Hub, 0).await;
    hub.info.endpoint = real;
    let buyer = new_buyer(&sim, &hub, Funding::Hub).await;
    download_through_the_hub(&seller, &buyer).await;
    until("the download", 60, || async {
        buyer.store.remaining() == 0
    })
    .await;
    let sh = seller.hub.clone().unwrap();
    let (s, b) = (seller.account, buyer.account);
    let v = first_virtual_channel(&sh).await;
    defunded(&sh, v).await;
    let paid = buyer.node.inspect(|c| c.identity(s).unwrap().wei_paid);
    let received = seller.node.inspect(|c| c.identity(b).unwrap().wei_received);
    let largest = sh
        .party_node()
        .inspect(|p| p.channel(&v).unwrap().paid())
        .await;
    assert_eq!(received, paid, "every voucher credited once");
    assert_eq!(U256::from(paid), largest);
    assert_eq!(paid, u128::from(SIZE));
    assert!(
        sh.early_vouchers() > 0,
        "a voucher arrived before the seller saw V funded"
    );
    hub.net.shutdown();
}
