//! Two peers, each a `Node` (coordinator + reference peer loop) with a real
//! `payment_channel::Client` (k256 signatures, `MemoryStore`) on one `SimulatedChain`, connected
//! over `tokio::io::duplex` or loopback TCP. Every test is bounded in time.

mod support;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use paid_wire::choke::{PromptPolicy, TrustPolicy, Watermark};
use payment_channel::chain::Chain;
use payment_channel::chain::sim::SimulatedChainHandle;
use payment_channel::client::Client;
use payment_channel::sign::{LocalSigner, Signer};
use payment_channel::test_utils::faulty::{Call, FaultyChain};
use payment_channel::{SimulatedChain, U256};
use tokio::sync::{Notify, mpsc};
use torrent_glue::adapter::{
    ChannelBackend, ChannelEvents, ClientBackend, MemoryTorrent, Node, NodeConfig, PieceSink,
};
use torrent_glue::coordinator::IdentityView;
use torrent_glue::engine::Direction;
use torrent_glue::{
    Address, ChannelCommand, Coordinator, CoordinatorConfig, CoordinatorEvent, LivenessConfig,
    Role, TorrentKey,
};

use torrent_glue::test_utils::{self, pseudo_random_content as content};

use crate::support::{
    balance, challenging, unbounded_buyer, until, until_after_finalization,
    until_challenge_on_chain,
};

const INFO_HASH: [u8; 20] = [0x17; 20];
const T: TorrentKey = TorrentKey(0);
const KIB: u64 = 1024;
const MIB: u64 = 1024 * 1024;
const FUNDS: u64 = 1 << 40;
const CHALLENGE_DURATION: u64 = 60;

/// A backend that can go dark: after `pay_limit` payments (or when told), it ignores every
/// command and tick, as if its owner vanished.
struct Vanishing {
    inner: ClientBackend,
    pay_limit: Option<u32>,
    pays: AtomicU32,
    dark: AtomicBool,
    gone: Notify,
}

impl Vanishing {
    fn vanish(&self) {
        self.dark.store(true, Ordering::SeqCst);
        self.gone.notify_one();
    }
}

#[async_trait]
impl ChannelBackend for Vanishing {
    async fn execute(&self, command: ChannelCommand, events: &ChannelEvents) {
        if self.dark.load(Ordering::SeqCst) {
            return;
        }
        if matches!(command, ChannelCommand::Pay { .. })
            && let Some(limit) = self.pay_limit
            && self.pays.fetch_add(1, Ordering::SeqCst) >= limit
        {
            self.vanish();
            return;
        }
        self.inner.execute(command, events).await;
    }

    async fn tick(&self, events: &ChannelEvents) {
        if !self.dark.load(Ordering::SeqCst) {
            self.inner.tick(events).await;
        }
    }
}

struct Party {
    node: Node,
    store: Arc<MemoryTorrent>,
    account: Address,
    client: Client,
    backend: Arc<Vanishing>,
    events: mpsc::UnboundedReceiver<CoordinatorEvent>,
}

/// The suites' liveness with idle connections closed after 1 s, and 5 s for handshakes.
fn liveness() -> LivenessConfig {
    support::liveness(Duration::from_secs(1)).with_handshake_timeout(Duration::from_secs(5))
}

async fn party(
    chain: &SimulatedChain,
    store: Arc<MemoryTorrent>,
    configure: impl FnOnce(&mut CoordinatorConfig),
    pay_limit: Option<u32>,
    funded: bool,
) -> Party {
    party_on(chain, |h| Arc::new(h), store, configure, pay_limit, funded).await
}

/// [`party`], sending its transactions through `wrap` of its simulator handle.
async fn party_on(
    chain: &SimulatedChain,
    wrap: impl FnOnce(SimulatedChainHandle) -> Arc<dyn Chain>,
    store: Arc<MemoryTorrent>,
    configure: impl FnOnce(&mut CoordinatorConfig),
    pay_limit: Option<u32>,
    funded: bool,
) -> Party {
    let signer = Arc::new(LocalSigner::random());
    let account = signer.address();
    if funded {
        chain.fund(account, U256::from(FUNDS)).unwrap();
    }
    let (client, inner) = test_utils::client_backend(
        chain,
        wrap(chain.handle(account)),
        signer.clone(),
        CHALLENGE_DURATION,
        Some(test_utils::accept_any(chain)),
    )
    .await;
    // Every downloader here signs 8 vouchers ahead (off by default): `finish` then also checks
    // that a voucher signed ahead and never sent is never paid (served = paid + trust, and the
    // channel pays out exactly what was paid).
    let inner = inner.presign_ahead(8);
    let backend = Arc::new(Vanishing {
        inner,
        pay_limit,
        pays: AtomicU32::new(0),
        dark: AtomicBool::new(false),
        gone: Notify::new(),
    });
    let mut config = CoordinatorConfig::new(account, account);
    config.liveness = liveness();
    configure(&mut config);
    let coordinator = Coordinator::with_signer(config, signer.clone()).unwrap();
    let mut node_config = NodeConfig::new(*b"-TG0001-000000000000");
    node_config.peer_id[19] = account.0[0];
    node_config.tick = Duration::from_millis(20);
    let node = Node::start(coordinator, node_config, backend.clone());
    node.add_torrent(T, INFO_HASH, store.clone()).unwrap();
    let events = node.subscribe();
    Party {
        node,
        store,
        account,
        client,
        backend,
        events,
    }
}

/// An uploader seeding `size` bytes (its config changed by `seller_tweak`) and a downloader
/// buying them.
async fn pair(
    chain: &SimulatedChain,
    size: u64,
    granularity: u64,
    trust: u64,
    pay_ahead: bool,
    buyer_pay_limit: Option<u32>,
    seller_tweak: impl FnOnce(&mut CoordinatorConfig),
) -> (Party, Party) {
    let seed = MemoryTorrent::seed(content(size), 256 * 1024);
    let meta = seed.meta().clone();
    let seller = party(
        chain,
        Arc::new(seed),
        |c| {
            let up = c.upload.as_mut().unwrap();
            up.choke.trust = TrustPolicy::fixed(trust);
            up.deposit = u128::from(size) * 2;
            c.download = None;
            seller_tweak(c);
        },
        None,
        false,
    )
    .await;
    let buyer = party(
        chain,
        Arc::new(MemoryTorrent::empty(meta)),
        |c| {
            let down = unbounded_buyer(c);
            down.granularity_bytes = granularity;
            down.pay_ahead = pay_ahead;
        },
        buyer_pay_limit,
        true,
    )
    .await;
    (seller, buyer)
}

fn connect_duplex(seller: &Party, buyer: &Party) -> tokio::task::JoinHandle<()> {
    let (a, b) = tokio::io::duplex(256 * 1024);
    let s = seller.node.clone();
    tokio::spawn(async move {
        let _ = s.run_connection(a, Direction::Inbound, None).await;
    });
    let d = buyer.node.clone();
    tokio::spawn(async move {
        let _ = d.run_connection(b, Direction::Outbound, Some(T)).await;
    })
}

/// A stream whose reads are limited to `rate` bytes per second: a steady transfer.
struct Throttled<S> {
    inner: S,
    rate: u64,
    start: tokio::time::Instant,
    read: u64,
    sleep: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Throttled<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::task::Poll;
        let this = &mut *self;
        let due = this.start + Duration::from_secs_f64(this.read as f64 / this.rate as f64);
        if due > tokio::time::Instant::now() {
            let sleep = this
                .sleep
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
            sleep.as_mut().reset(due);
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
        let mut chunk = [0u8; 16 * 1024];
        let max = buf.remaining().min(chunk.len());
        let mut limited = tokio::io::ReadBuf::new(&mut chunk[..max]);
        let poll = std::pin::Pin::new(&mut this.inner).poll_read(cx, &mut limited);
        let n = limited.filled().len();
        buf.put_slice(limited.filled());
        this.read += n as u64;
        poll
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Throttled<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

async fn connect_tcp(seller: &Party, buyer: &Party) -> tokio::task::JoinHandle<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let s = seller.node.clone();
    tokio::spawn(async move {
        let _ = s.accept(listener).await;
    });
    let d = buyer.node.clone();
    tokio::spawn(async move {
        let _ = d.connect(addr, T).await;
    })
}

fn drain(p: &mut Party) -> Vec<CoordinatorEvent> {
    std::iter::from_fn(|| p.events.try_recv().ok()).collect()
}

/// Figures of one finished transfer.
#[derive(Debug)]
#[allow(dead_code)] // printed
struct Figures {
    bytes: u64,
    served: u64,
    paid: u128,
    payments: u64,
    stops: u64,
    payout: u128,
    channels: usize,
}

/// Waits for the download, the cooperative close and the payout; checks the invariants.
async fn finish(
    chain: &SimulatedChain,
    seller: &mut Party,
    buyer: &mut Party,
    trust: u64,
    lossless: bool,
) -> Figures {
    let size = buyer.store.meta().length;
    until("the download", 120, || buyer.store.remaining() == 0).await;
    let (s, b) = (seller.account, buyer.account);
    until("the cooperative close and payout", 30, || {
        let closed = seller
            .node
            .inspect(|c| c.identity(b).is_some_and(|i| i.payee_channel.is_none()));
        closed && balance(chain, s) > 0
    })
    .await;
    let served = seller.node.inspect(|c| c.identity(b).unwrap().bytes_served);
    let bought = buyer.node.inspect(|c| c.identity(s).unwrap());
    let payout = balance(chain, s);
    assert_eq!(buyer.store.data(), content(size), "the data arrived intact");
    if lossless {
        assert_eq!(served, size);
    } else {
        // Blocks in flight when a connection dropped were served (and paid) twice.
        assert!(served >= size);
    }
    assert_eq!(
        u128::from(served),
        bought.wei_paid + u128::from(trust),
        "served = paid + trust, exactly"
    );
    assert_eq!(
        payout, bought.wei_paid,
        "the channel closed with that payout"
    );
    let events = drain(buyer);
    let payments = events
        .iter()
        .filter(|e| matches!(e, CoordinatorEvent::PaymentSent { .. }))
        .count() as u64;
    let stops = events
        .iter()
        .filter(|e| matches!(e, CoordinatorEvent::Stopped { .. }))
        .count() as u64;
    let requested = drain(seller)
        .iter()
        .filter(|e| matches!(e, CoordinatorEvent::ChannelRequested { .. }))
        .count();
    assert_eq!(requested, 1, "one channel per peer");
    let figures = Figures {
        bytes: size,
        served,
        paid: bought.wei_paid,
        payments,
        stops,
        payout,
        channels: seller.client.channel_ids().len(),
    };
    assert_eq!(figures.channels, 1);
    println!("{figures:?}");
    figures
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplex_transfers_at_several_granularities() {
    for (granularity, trust) in [(16 * KIB, 0), (64 * KIB, 32 * KIB), (MIB, 0)] {
        let chain = SimulatedChain::new();
        let (mut seller, mut buyer) =
            pair(&chain, 4 * MIB, granularity, trust, true, None, |_| {}).await;
        connect_duplex(&seller, &buyer);
        let f = finish(&chain, &mut seller, &mut buyer, trust, true).await;
        assert!(f.payments >= (4 * MIB - trust) / granularity);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_transfers_at_several_granularities() {
    for (granularity, trust, pay_ahead) in
        [(32 * KIB, 16 * KIB, false), (256 * KIB, 64 * KIB, true)]
    {
        let chain = SimulatedChain::new();
        let (mut seller, mut buyer) =
            pair(&chain, 6 * MIB, granularity, trust, pay_ahead, None, |_| {}).await;
        connect_tcp(&seller, &buyer).await;
        let f = finish(&chain, &mut seller, &mut buyer, trust, true).await;
        if !pay_ahead {
            assert_eq!(
                f.stops, f.payments,
                "without pay-ahead, one payment per STOP"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pay_ahead_never_waits_for_a_payment_round_trip() {
    let chain = SimulatedChain::new();
    // The watermark must cover what is in flight (the request pipeline, 16 × 16 KiB, is served
    // ahead of the prompt) plus a payment round trip at the transfer's rate. Prompt at 75 % of
    // the last payment (768 KiB); a steady 2 MiB/s: 512 KiB of margin, 250 ms, far more than a
    // payment round trip (signing, two channel tasks, verification).
    let (mut seller, mut buyer) = pair(&chain, 8 * MIB, MIB, 0, true, None, |c| {
        c.upload.as_mut().unwrap().choke.prompt = Some(PromptPolicy {
            watermark: Watermark::PercentOfLastPayment(75),
            suggested_bytes: None,
        });
    })
    .await;
    let (a, b) = tokio::io::duplex(256 * 1024);
    let s = seller.node.clone();
    tokio::spawn(async move {
        let _ = s.run_connection(a, Direction::Inbound, None).await;
    });
    let d = buyer.node.clone();
    let b = Throttled {
        inner: b,
        rate: 2 * MIB,
        start: tokio::time::Instant::now(),
        read: 0,
        sleep: None,
    };
    tokio::spawn(async move {
        let _ = d.run_connection(b, Direction::Outbound, Some(T)).await;
    });
    let f = finish(&chain, &mut seller, &mut buyer, 0, true).await;
    // The only STOP is the first one (no channel yet); every later payment is made ahead.
    assert_eq!(f.stops, 1, "{f:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_first_requests_on_two_connections_creates_one_channel() {
    let chain = SimulatedChain::new();
    let (mut seller, mut buyer) = pair(&chain, 4 * MIB, 64 * KIB, 0, true, None, |_| {}).await;
    connect_duplex(&seller, &buyer);
    connect_duplex(&seller, &buyer);
    until("two connections", 10, || {
        seller.node.connections().len() == 2
    })
    .await;
    finish(&chain, &mut seller, &mut buyer, 0, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnect_mid_transfer_reuses_the_channel() {
    let chain = SimulatedChain::new();
    let trust = 48 * KIB;
    let (mut seller, mut buyer) = pair(&chain, 4 * MIB, 64 * KIB, trust, true, None, |_| {}).await;
    connect_tcp(&seller, &buyer).await;
    until("half of the download", 60, || {
        buyer.store.remaining() <= 2 * MIB
    })
    .await;
    for key in buyer.node.connections() {
        buyer.node.disconnect(key);
    }
    until("the disconnect", 10, || {
        seller.node.connections().is_empty()
    })
    .await;
    let b = buyer.account;
    assert!(
        seller
            .node
            .inspect(|c| c.identity(b).unwrap().payee_channel_open)
    );
    connect_duplex(&seller, &buyer);
    finish(&chain, &mut seller, &mut buyer, trust, false).await;
}

/// Connects `seller` and `buyer` (which stops paying after a number of payments), waits until
/// the buyer stops paying and drops its connections; returns the channel the seller challenges
/// then.
async fn vanishes_while_buying(seller: &mut Party, buyer: &Party) -> paid_wire::ChannelId {
    connect_duplex(seller, buyer);
    tokio::time::timeout(Duration::from_secs(60), buyer.backend.gone.notified())
        .await
        .expect("the downloader stops paying");
    for key in buyer.node.connections() {
        buyer.node.disconnect(key);
    }
    challenging(30, Role::Payee, || drain(seller)).await
}

/// The seller's challenge against the buyer `b` (who paid 10 payments of 64 KiB) landed: past
/// its timeout the seller is paid out exactly for what it served. Returns its view of `b`.
async fn paid_out_for_what_it_served(
    chain: &SimulatedChain,
    seller: &Party,
    b: Address,
) -> IdentityView {
    let s = seller.account;
    chain.advance_time(CHALLENGE_DURATION + 1);
    until_after_finalization(chain, "the payout", 30, || balance(chain, s) > 0).await;
    let view = seller.node.inspect(|c| c.identity(b).unwrap());
    assert_eq!(view.wei_received, 10 * 64 * 1024);
    assert_eq!(
        balance(chain, s),
        u128::from(view.bytes_served),
        "paid exactly for what it served"
    );
    view
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downloader_vanishes_uploader_challenges_and_is_paid_for_what_it_served() {
    let chain = SimulatedChain::new();
    // No trust, STOP-driven: at each STOP everything paid for has been served.
    let (mut seller, buyer) = pair(&chain, 4 * MIB, 64 * KIB, 0, false, Some(10), |_| {}).await;
    let challenged = vanishes_while_buying(&mut seller, &buyer).await;
    let (s, b) = (seller.account, buyer.account);
    until_challenge_on_chain(&chain, challenged, 30).await;
    let view = paid_out_for_what_it_served(&chain, &seller, b).await;
    assert_eq!(u128::from(view.bytes_served), view.wei_received);
    until("the channel to close", 10, || {
        seller
            .node
            .inspect(|c| c.identity(b).unwrap().payee_channel.is_none())
    })
    .await;
    println!(
        "downloader vanished: served {} B, challenged, paid out {} wei",
        view.bytes_served,
        balance(&chain, s)
    );
}

/// As above, but the uploader's first two challenge transactions fail (node timeouts): its
/// client retries the challenge on later watches, it lands once, and the uploader is still paid
/// exactly for what it served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploader_whose_challenge_fails_twice_is_still_paid_for_what_it_served() {
    let chain = SimulatedChain::new();
    let size = 4 * MIB;
    let seed = MemoryTorrent::seed(content(size), 256 * 1024);
    let meta = seed.meta().clone();
    let faulty = std::sync::Mutex::new(None);
    let mut seller = party_on(
        &chain,
        |h| {
            let f = Arc::new(FaultyChain::new(h));
            f.fail_next(Call::Challenge, 2);
            *faulty.lock().unwrap() = Some(f.clone());
            f
        },
        Arc::new(seed),
        |c| {
            let up = c.upload.as_mut().unwrap();
            up.choke.trust = TrustPolicy::fixed(0);
            up.deposit = u128::from(size) * 2;
            c.download = None;
        },
        None,
        false,
    )
    .await;
    let faulty = faulty.into_inner().unwrap().unwrap();
    let buyer = party(
        &chain,
        Arc::new(MemoryTorrent::empty(meta)),
        |c| {
            let down = unbounded_buyer(c);
            down.granularity_bytes = 64 * KIB;
            down.pay_ahead = false;
        },
        Some(10),
        true,
    )
    .await;
    let challenged = vanishes_while_buying(&mut seller, &buyer).await;
    let b = buyer.account;
    // Retries back off in chain time: let the clock move in small steps (far below the
    // challenge duration) until the challenge has landed, and only then jump past its timeout.
    until("the challenge on chain despite two failures", 30, || {
        let landed = chain.status_of(challenged.0.into()).finalizes_at > 0;
        if !landed {
            chain.advance_time(1);
        }
        landed
    })
    .await;
    assert_eq!(
        faulty.calls(Call::Challenge),
        3,
        "two failures, one landing"
    );
    paid_out_for_what_it_served(&chain, &seller, b).await;
    assert_eq!(faulty.calls(Call::Challenge), 3, "never duplicated");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploader_vanishes_downloader_challenges_and_recovers_the_unspent_deposit() {
    let chain = SimulatedChain::new();
    let (seller, mut buyer) = pair(&chain, 4 * MIB, 64 * KIB, 0, true, None, |_| {}).await;
    connect_tcp(&seller, &buyer).await;
    until("a quarter of the download", 60, || {
        buyer.store.remaining() <= 3 * MIB
    })
    .await;
    seller.backend.vanish();
    for key in seller.node.connections() {
        seller.node.disconnect(key);
    }
    let (s, b) = (seller.account, buyer.account);
    let challenged = challenging(30, Role::Payer, || drain(&mut buyer)).await;
    until_challenge_on_chain(&chain, challenged, 30).await;
    let bought = buyer.node.inspect(|c| c.identity(s).unwrap());
    let deposit = u128::from(4 * MIB) * 2;
    assert_eq!(
        balance(&chain, b),
        u128::from(FUNDS) - deposit,
        "deposit locked"
    );
    chain.advance_time(CHALLENGE_DURATION + 1);
    until_after_finalization(&chain, "the refund", 30, || {
        balance(&chain, b) > u128::from(FUNDS) - deposit
    })
    .await;
    let recovered = balance(&chain, b) - (u128::from(FUNDS) - deposit);
    assert!(
        recovered >= deposit - bought.wei_paid,
        "recovered {recovered} of {deposit}, paid {}",
        bought.wei_paid
    );
    // The vanished payee never redeemed its vouchers: the payer's postfund challenge returns the
    // whole deposit.
    assert_eq!(recovered, deposit);
    println!(
        "uploader vanished: paid {} wei for {} B, challenged, recovered {recovered} of {deposit}",
        bought.wei_paid, bought.bytes_received
    );
    until("the channel to close", 10, || {
        buyer
            .node
            .inspect(|c| c.identity(s).unwrap().payer_channel.is_none())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pieces_downloaded_are_announced_with_have_to_every_other_peer() {
    // A sells to B; C connects to B while B has nothing yet, so B's bitfield tells C nothing.
    // C can only learn what B gets from A through BEP 3 `have` messages (B serves for free).
    let chain = SimulatedChain::new();
    let (mut seller, mut buyer) = pair(&chain, 2 * MIB, 256 * KIB, 0, true, None, |_| {}).await;
    let meta = seller.store.meta().clone();
    let late = party(
        &chain,
        Arc::new(MemoryTorrent::empty(meta)),
        |c| {
            unbounded_buyer(c);
        },
        None,
        true,
    )
    .await;
    connect_duplex(&buyer, &late);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        late.store.remaining(),
        2 * MIB,
        "B had nothing to offer yet"
    );
    connect_duplex(&seller, &buyer);
    finish(&chain, &mut seller, &mut buyer, 0, true).await;
    until("C to complete from B's `have` announcements", 30, || {
        late.store.remaining() == 0
    })
    .await;
}
