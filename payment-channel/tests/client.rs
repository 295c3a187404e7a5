//! The async `Client` over an in-process transport (tokio mpsc), the `SimulatedChain` and the
//! stores, including resume-from-store.

use std::sync::Arc;

use payment_channel::channel::{Event, PhaseKind};
use payment_channel::client::{Client, ClientConfig, ClientEvent};
use payment_channel::error::{Error, PeerMisbehaved, PolicyRejection};
use payment_channel::message::Envelope;
use payment_channel::policy::JoinPolicy;
use payment_channel::sign::{LocalSigner, Signer};
use payment_channel::store::ChannelStore;
use payment_channel::test_utils::net::MemoryNet;
use payment_channel::{Address, B256, MemoryStore, RedbStore, SimulatedChain, U256};
use tokio::sync::mpsc;

fn u(x: u64) -> U256 {
    U256::from(x)
}

struct Node {
    client: Client,
    events: mpsc::UnboundedReceiver<ClientEvent>,
    inbox: mpsc::UnboundedReceiver<Envelope>,
    seen: Vec<ClientEvent>,
}

impl Node {
    fn drain_events(&mut self) {
        while let Ok(e) = self.events.try_recv() {
            self.seen.push(e);
        }
    }
    fn saw(&self, f: impl Fn(&Event) -> bool) -> bool {
        self.seen.iter().any(|e| f(&e.event))
    }
}

struct World {
    chain: SimulatedChain,
    net: Arc<MemoryNet>,
}

impl World {
    fn new() -> Self {
        Self {
            chain: SimulatedChain::new(),
            net: Arc::new(MemoryNet::default()),
        }
    }

    fn config(&self, policy: Option<JoinPolicy>) -> ClientConfig {
        ClientConfig::new(self.chain.app_definition())
            .with_challenge_duration(600)
            .with_auto_join(policy)
    }

    fn policy(&self) -> JoinPolicy {
        JoinPolicy::new(self.chain.app_definition(), u(10_000), u(15_000))
    }

    /// Keys 1 (the payer, funded with 100 000) and 2 (the payee).
    fn funded_keys(&self) -> (Arc<LocalSigner>, Arc<LocalSigner>) {
        let (payer_key, payee_key) = (key(1), key(2));
        self.chain.fund(payer_key.address(), u(100_000)).unwrap();
        (payer_key, payee_key)
    }

    /// A world, its funded payer (auto-joining, fresh memory store) and the payee's key.
    async fn with_payer() -> (Self, Node, Arc<LocalSigner>) {
        let w = Self::new();
        let (payer_key, payee_key) = w.funded_keys();
        let payer = w.payer(payer_key).await;
        (w, payer, payee_key)
    }

    /// A node with a fresh memory store.
    async fn fresh_node(&self, signer: Arc<LocalSigner>, policy: Option<JoinPolicy>) -> Node {
        self.node(signer, Arc::new(MemoryStore::new()), policy)
            .await
    }

    /// A payer with a fresh memory store that auto-joins under [`World::policy`].
    async fn payer(&self, signer: Arc<LocalSigner>) -> Node {
        self.fresh_node(signer, Some(self.policy())).await
    }

    async fn node(
        &self,
        signer: Arc<LocalSigner>,
        store: Arc<dyn ChannelStore>,
        policy: Option<JoinPolicy>,
    ) -> Node {
        self.node_with(signer, store, self.config(policy)).await
    }

    /// A client on the simulator with `config`.
    async fn node_with(
        &self,
        signer: Arc<LocalSigner>,
        store: Arc<dyn ChannelStore>,
        config: ClientConfig,
    ) -> Node {
        let chain = Arc::new(self.chain.handle(signer.address()));
        open_node(&self.net, config, signer, chain, store).await
    }
}

/// A client on `chain`, reachable through `net`.
async fn open_node(
    net: &Arc<MemoryNet>,
    config: ClientConfig,
    signer: Arc<LocalSigner>,
    chain: Arc<dyn payment_channel::chain::Chain>,
    store: Arc<dyn ChannelStore>,
) -> Node {
    let inbox = net.join(signer.address());
    let (client, events) = Client::open(config, signer, chain, store, Some(net.transport()))
        .await
        .unwrap();
    Node {
        client,
        events,
        inbox,
        seen: Vec::new(),
    }
}

/// Delivers messages until both inboxes are empty; returns the errors the clients reported.
async fn pump(a: &mut Node, b: &mut Node) -> Vec<Error> {
    let mut errors = Vec::new();
    loop {
        let mut moved = false;
        for n in [&mut *a, &mut *b] {
            while let Ok(env) = n.inbox.try_recv() {
                moved = true;
                if let Err(e) = n.client.push_message(env).await {
                    errors.push(e);
                }
            }
        }
        if !moved {
            break;
        }
    }
    a.drain_events();
    b.drain_events();
    errors
}

fn key(seed: u8) -> Arc<LocalSigner> {
    Arc::new(LocalSigner::from_bytes(&B256::repeat_byte(seed)).unwrap())
}

async fn funded_pair(w: &World) -> (Node, Node, B256) {
    let (payer_key, payee_key) = w.funded_keys();
    let mut payer = w.payer(payer_key).await;
    let mut payee = w.fresh_node(payee_key, None).await;
    let id = payee
        .client
        .create(payer.client.address(), u(10_000), Some(u(1)))
        .await
        .unwrap();
    let errors = pump(&mut payer, &mut payee).await;
    assert!(errors.is_empty(), "{errors:?}");
    (payer, payee, id)
}

#[tokio::test]
async fn create_autojoin_pay_close_over_transport() {
    let w = World::new();
    let (mut payer, mut payee, id) = funded_pair(&w).await;
    for n in [&payer, &payee] {
        assert!(n.saw(|e| *e == Event::Funded), "{:?}", n.seen);
        assert_eq!(phase(n, id).await, PhaseKind::Running);
    }
    assert!(payer.saw(|e| matches!(e, Event::Proposed { .. })));
    assert_eq!(w.chain.holdings_of(id), u(10_000));

    pay(&mut payer, &mut payee, id, &[150; 20]).await;
    assert_eq!(payee.client.channel_info(id).await.unwrap().paid, u(3_000));
    let received: U256 = payee
        .seen
        .iter()
        .filter_map(|e| match e.event {
            Event::PaymentReceived { delta, .. } => Some(delta),
            _ => None,
        })
        .sum();
    assert_eq!(received, u(3_000));
    assert!(payer.saw(|e| *e
        == Event::PaymentSent {
            delta: u(150),
            total: u(3_000)
        }));

    let payee_before = w.chain.balance_of(payee.client.address());
    close_and_watch(&mut payer, &mut payee, id).await;
    payer.drain_events();
    payee.drain_events();
    assert_eq!(
        w.chain.balance_of(payee.client.address()),
        payee_before + u(3_000)
    );
    assert_eq!(
        w.chain.balance_of(payer.client.address()),
        u(100_000 - 3_000)
    );
    assert_eq!(w.chain.holdings_of(id), U256::ZERO);
    for (n, amount) in [(&payer, u(7_000)), (&payee, u(3_000))] {
        assert!(
            n.saw(|e| *e == Event::Closed { amount: u(3_000) }),
            "{:?}",
            n.seen
        );
        assert!(n.saw(|e| matches!(e, Event::Finalized { .. })));
        assert!(n.saw(|e| *e == Event::PaidOut { amount }), "{:?}", n.seen);
        assert!(n.client.channel_info(id).await.unwrap().settled);
    }
}

#[tokio::test]
async fn stale_challenge_countered_by_watcher() {
    let w = World::new();
    let (mut payer, mut payee, id) = funded_pair(&w).await;
    pay(&mut payer, &mut payee, id, &[500; 3]).await;
    // The payer tries to walk away with the postfund (pays the payee nothing).
    payer.client.challenge(id).await.unwrap();
    assert_eq!(w.chain.status_of(id).turn_num_record, 1);
    payee.client.watch_chain().await.unwrap();
    assert_eq!(
        w.chain.status_of(id).turn_num_record,
        2,
        "countered at turn 2"
    );
    w.chain.advance_time(601);
    payer.client.watch_chain().await.unwrap();
    payee.client.watch_chain().await.unwrap();
    payee.drain_events();
    payer.drain_events();
    assert_paid_out(&w, &payer, &payee, 1_500);
    assert!(payee.saw(|e| *e == Event::PaidOut { amount: u(1_500) }));
    assert!(payer.saw(|e| *e == Event::PaidOut { amount: u(8_500) }));
    assert!(payee.saw(|e| matches!(e, Event::ChallengeRegistered { turn_num: 2, .. })));
}

async fn resume(
    store: Arc<dyn ChannelStore>,
    reopen: impl Fn() -> Arc<dyn ChannelStore>,
    close: bool,
) {
    let (w, mut payer, payee_key) = World::with_payer().await;
    let mut payee = w.node(payee_key.clone(), store, None).await;
    let id = open_and_pay(&mut payer, &mut payee, &[100; 7]).await;

    // The payee process dies mid-stream: no close, in-memory state gone.
    drop(payee);
    // The payee is offline: the voucher is signed and stored (the payment counts), its delivery
    // fails; it is resent below.
    payer.client.send_payment(id, u(100)).await.unwrap();
    let mut payee = w.node(payee_key, reopen(), None).await;
    let info = payee
        .client
        .channel_info(id)
        .await
        .expect("channel reloaded");
    assert_eq!(info.paid, u(700));
    assert_eq!(info.phase, PhaseKind::Running);
    // The payer retransmits its latest voucher; the restored payee credits the difference.
    payer.client.resend(id).await.unwrap();
    assert!(pump(&mut payer, &mut payee).await.is_empty());
    assert!(payee.saw(|e| *e
        == Event::PaymentReceived {
            delta: u(100),
            total: u(800)
        }));

    if close {
        payee.client.close(id).await.unwrap();
        assert!(pump(&mut payer, &mut payee).await.is_empty());
    } else {
        payer.client.send_payment(id, u(50)).await.unwrap();
        assert!(pump(&mut payer, &mut payee).await.is_empty());
        payee.client.challenge(id).await.unwrap();
        assert_eq!(w.chain.status_of(id).turn_num_record, 2);
        w.chain.advance_time(601);
        payee.client.watch_chain().await.unwrap();
    }
    payer.client.watch_chain().await.unwrap();
    let expect = if close { 800 } else { 850 };
    assert_paid_out(&w, &payer, &payee, expect);
}

#[tokio::test]
async fn resume_from_memory_store_then_close() {
    let store = Arc::new(MemoryStore::new());
    let s2 = store.clone();
    resume(store, move || s2.clone(), true).await;
}

#[tokio::test]
async fn resume_from_redb_then_challenge() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("payee.redb");
    let store: Arc<dyn ChannelStore> = Arc::new(RedbStore::open(&path).unwrap());
    let path2 = path.clone();
    // The first store handle is dropped with the first client (inside `resume`), so the file can
    // be opened again.
    resume(
        store,
        move || Arc::new(RedbStore::open(&path2).unwrap()),
        false,
    )
    .await;
}

#[tokio::test]
async fn policy_caps_and_manual_join() {
    let w = World::new();
    let (payer_key, payee_key) = w.funded_keys();
    let policy = w.policy();
    let policy = policy.with_max_price(u(5));
    let mut payer = w
        .node(
            payer_key.clone(),
            Arc::new(MemoryStore::new()),
            Some(policy),
        )
        .await;
    let mut payee = w.fresh_node(payee_key, None).await;
    let to = payer.client.address();

    payee
        .client
        .create(to, u(20_000), Some(u(1)))
        .await
        .unwrap();
    payee.client.create(to, u(1_000), Some(u(6))).await.unwrap();
    payee.client.create(to, u(1_000), None).await.unwrap();
    let a = payee
        .client
        .create(to, u(10_000), Some(u(5)))
        .await
        .unwrap();
    payee.client.create(to, u(6_000), Some(u(1))).await.unwrap();
    let errors = pump(&mut payer, &mut payee).await;
    let rejections: Vec<_> = errors
        .iter()
        .map(|e| match e {
            Error::Rejected(r) => r.clone(),
            other => panic!("unexpected {other}"),
        })
        .collect();
    assert!(matches!(
        rejections[0],
        PolicyRejection::DepositTooLarge { .. }
    ));
    assert!(matches!(
        rejections[1],
        PolicyRejection::PriceTooHigh { .. }
    ));
    assert!(matches!(
        rejections[2],
        PolicyRejection::PriceTooHigh { got: None, .. }
    ));
    assert!(
        matches!(rejections[3], PolicyRejection::OverBudget { .. }),
        "{rejections:?}"
    );
    assert_eq!(payer.client.channel_ids(), vec![a]);

    // Without a policy, a proposal waits for an explicit join.
    let mut manual = w.fresh_node(payer_key, None).await;
    let b = payee.client.create(to, u(500), None).await.unwrap();
    assert!(pump(&mut manual, &mut payee).await.is_empty());
    assert!(manual.saw(|e| matches!(e, Event::Proposed { .. })));
    assert_eq!(phase(&manual, b).await, PhaseKind::Proposed);
    manual.client.join(b).await.unwrap();
    assert!(pump(&mut manual, &mut payee).await.is_empty());
    assert_eq!(phase(&manual, b).await, PhaseKind::Running);
}

#[tokio::test]
async fn misaddressed_and_unknown_messages_are_typed() {
    let w = World::new();
    let (payer, _payee, id) = funded_pair(&w).await;
    let v = payer.client.send_payment(id, u(1)).await.unwrap();
    let env = Envelope {
        recipient: Address::repeat_byte(7),
        sender: payer.client.address(),
        data: payment_channel::message::Message::Voucher(
            payment_channel::message::VoucherMessage::from_voucher(&v),
        ),
    };
    // Not for us.
    let err = payer.client.push_message(env.clone()).await.unwrap_err();
    assert!(matches!(
        err,
        Error::PeerMisbehaved(PeerMisbehaved::WrongParticipant { .. })
    ));
    // A voucher for a channel this client does not have.
    let (other, _, _) = funded_pair(&World::new()).await;
    let err = other
        .client
        .push_message(Envelope {
            recipient: other.client.address(),
            ..env
        })
        .await
        .unwrap_err();
    assert!(matches!(err, Error::PeerMisbehaved(_)), "{err}");
    // Garbage JSON.
    assert!(matches!(
        payer.client.push_json("{\"recipient\":1}").await,
        Err(Error::Decode(_))
    ));
}

#[tokio::test]
async fn pollable_outbox_without_transport() {
    let chain = SimulatedChain::new();
    let (payer_key, payee_key) = (key(1), key(2));
    chain.fund(payer_key.address(), u(1_000)).unwrap();
    let config = |policy| ClientConfig::new(chain.app_definition()).with_auto_join(policy);
    let policy = JoinPolicy::new(chain.app_definition(), u(1_000), u(1_000));
    let mut clients = Vec::new();
    for (key, join) in [(&payer_key, Some(policy)), (&payee_key, None)] {
        let chain = Arc::new(chain.handle(key.address()));
        let store = Arc::new(MemoryStore::new());
        let (client, _) = Client::open(config(join), key.clone(), chain, store, None)
            .await
            .unwrap();
        clients.push(client);
    }
    let (payee, payer) = (clients.pop().unwrap(), clients.pop().unwrap());
    let id = payee.create(payer.address(), u(1_000), None).await.unwrap();
    let mut turns = 0;
    loop {
        let mut moved = false;
        while let Some(e) = payee.next_outbound() {
            payer.push_json(&e.to_json()).await.unwrap();
            moved = true;
        }
        while let Some(e) = payer.next_outbound() {
            payee.push_json(&e.to_json()).await.unwrap();
            moved = true;
        }
        turns += 1;
        if !moved || turns > 10 {
            break;
        }
    }
    payer.send_payment(id, u(10)).await.unwrap();
    let e = payer.next_outbound().unwrap();
    println!("voucher envelope: {} bytes", e.to_json().len());
    payee.push_message(e).await.unwrap();
    assert_eq!(payee.channel_info(id).await.unwrap().paid, u(10));
}

/// The payee proposes a 10 000 wei channel, the payer (auto-)joins and makes `payments`
/// (wei each); the payee has looked at the chain since. Returns the channel.
async fn open_and_pay(payer: &mut Node, payee: &mut Node, payments: &[u64]) -> B256 {
    let id = open(payer, payee).await;
    pay(payer, payee, id, payments).await;
    payee.client.watch_chain().await.unwrap();
    id
}

/// The payee proposes a channel of 10 000 (no price) to the payer; every message is delivered
/// without an error.
async fn open(payer: &mut Node, payee: &mut Node) -> B256 {
    let id = payee
        .client
        .create(payer.client.address(), u(10_000), None)
        .await
        .unwrap();
    assert!(pump(payer, payee).await.is_empty());
    id
}

/// The payer makes `payments` (wei each); every message is delivered without an error.
async fn pay(payer: &mut Node, payee: &mut Node, id: B256, payments: &[u64]) {
    for &amount in payments {
        payer.client.send_payment(id, u(amount)).await.unwrap();
    }
    assert!(pump(payer, payee).await.is_empty());
}

/// The payer closes cooperatively, then both watch the chain (conclude and payouts).
async fn close_and_watch(payer: &mut Node, payee: &mut Node, id: B256) {
    payer.client.close(id).await.unwrap();
    assert!(pump(payer, payee).await.is_empty());
    payer.client.watch_chain().await.unwrap();
    payee.client.watch_chain().await.unwrap();
}

/// On `w`'s chain, the payee holds `amount` and the payer (funded with 100 000) the rest.
fn assert_paid_out(w: &World, payer: &Node, payee: &Node, amount: u64) {
    assert_eq!(w.chain.balance_of(payee.client.address()), u(amount));
    assert_eq!(
        w.chain.balance_of(payer.client.address()),
        u(100_000 - amount)
    );
}

#[tokio::test]
async fn a_restart_reads_only_chain_events_it_has_not_applied() {
    let (w, mut payer, payee_key) = World::with_payer().await;
    let store: Arc<dyn ChannelStore> = Arc::new(MemoryStore::new());
    let mut payee = w.node(payee_key.clone(), store.clone(), None).await;
    let id = open_and_pay(&mut payer, &mut payee, &[300]).await;
    // Unrelated blocks, then the payee stops.
    for _ in 0..5 {
        w.chain.advance_time(0); // mines an empty block
    }
    drop(payee);

    // What the store says was applied: every block up to the deposit's.
    let snapshot = payment_channel::channel::ChannelSnapshot::from_bytes(
        &store.get_channel(id).await.unwrap().unwrap(),
    )
    .unwrap();
    let cursor = payment_channel::channel::Channel::restore(payee_key.clone(), snapshot, None)
        .unwrap()
        .chain_cursor();
    assert!(cursor > 0, "the deposit's block was recorded");

    let chain = Arc::new(FaultyChain::new(w.chain.handle(payee_key.address())));
    let (client, _events) = Client::open(w.config(None), payee_key, chain.clone(), store, None)
        .await
        .unwrap();
    client.watch_chain().await.unwrap();
    assert_eq!(
        chain.event_queries().first(),
        Some(&cursor),
        "not from block 0"
    );
    // It still settles correctly: challenge with the voucher, time out, paid out.
    client.challenge(id).await.unwrap();
    w.chain.advance_time(601);
    client.watch_chain().await.unwrap();
    assert_eq!(w.chain.balance_of(client.address()), u(300));
    assert!(chain.event_queries().windows(2).all(|p| p[0] <= p[1]));
}

#[tokio::test]
async fn a_new_channel_reads_events_from_its_proposal_not_from_genesis() {
    let w = World::new();
    // A long chain before the channel exists.
    for _ in 0..400 {
        w.chain.advance_time(0); // mines an empty block
    }
    let (payer_key, payee_key) = w.funded_keys();
    let latest = {
        use payment_channel::chain::Chain;
        w.chain
            .handle(payer_key.address())
            .block_number()
            .await
            .unwrap()
    };
    assert!(latest >= 400);
    let mut payer = w.payer(payer_key).await;
    let recording = Arc::new(FaultyChain::new(w.chain.handle(payee_key.address())));
    let store = Arc::new(MemoryStore::new());
    let mut payee = open_node(&w.net, w.config(None), payee_key, recording.clone(), store).await;
    let id = open_and_pay(&mut payer, &mut payee, &[250]).await;
    let froms = recording.event_queries();
    assert!(!froms.is_empty());
    assert!(
        froms
            .iter()
            .all(|f| *f >= latest - payment_channel::client::EVENT_LOOKBACK_BLOCKS),
        "{froms:?} (latest {latest})"
    );
    // The deposit was seen: the channel runs and the payment was credited.
    assert_eq!(phase(&payee, id).await, PhaseKind::Running);
    assert_eq!(payee.client.channel_info(id).await.unwrap().paid, u(250));
}

/// The client against anvil with the published Nitro contracts (skipped without anvil or the
/// artifacts, outside CI).
#[cfg(all(feature = "ethereum", feature = "test-utils"))]
mod on_anvil {
    use payment_channel::chain::{Chain, ChainError};

    use super::*;

    /// Two `Client`s' worth of a real chain: anvil with the contracts deployed, transaction
    /// handles for dev accounts #1 (payer) and #2 (payee), and the network between the clients.
    /// Channel identities are separate keys, so payouts land on fresh addresses and balances are
    /// exact (no gas in them).
    struct OnAnvil {
        anvil: payment_channel::test_utils::anvil::Anvil,
        artifacts: std::path::PathBuf,
        app: Address,
        payer_chain: Arc<payment_channel::chain::EthereumChain>,
        payee_chain: Arc<payment_channel::chain::EthereumChain>,
        net: Arc<MemoryNet>,
    }

    impl OnAnvil {
        /// `None` (skip) without anvil or the artifacts, outside CI.
        async fn start() -> Option<Self> {
            use payment_channel::chain::EthereumChain;
            let (anvil, deployment, artifacts) =
                payment_channel::test_utils::anvil::deployed().await?;
            let chain = async |i: usize| {
                Arc::new(
                    EthereumChain::connect(
                        &anvil.url,
                        &Self::tx_key(i),
                        deployment.nitro_adjudicator,
                    )
                    .await
                    .unwrap(),
                )
            };
            let (payer_chain, payee_chain) = (chain(1).await, chain(2).await);
            Some(Self {
                anvil,
                artifacts,
                app: deployment.payment_app,
                payer_chain,
                payee_chain,
                net: Arc::new(MemoryNet::default()),
            })
        }

        /// Dev account `i`'s secret key.
        fn tx_key(i: usize) -> B256 {
            LocalSigner::from_hex(payment_channel::test_utils::anvil::DEV_KEYS[i])
                .unwrap()
                .secret_bytes()
        }

        /// Dev account `i`'s address.
        fn tx_account(i: usize) -> Address {
            LocalSigner::from_bytes(&Self::tx_key(i)).unwrap().address()
        }

        /// A client for `signer` sending through `chain`, in `asset`, with 600 s challenges.
        async fn node(
            &self,
            signer: Arc<LocalSigner>,
            chain: &Arc<payment_channel::chain::EthereumChain>,
            policy: Option<JoinPolicy>,
            asset: Address,
        ) -> Node {
            let config = self
                .config(policy)
                .with_asset(asset)
                // Anvil mines a block per transaction and none in between: no block would ever
                // confirm the last transaction. Confirmations are tested in `tests/ethereum.rs`.
                .with_confirmations(Some(0));
            self.node_with(signer, chain, config).await
        }

        /// Channels on the deployed app with 600 s challenges, auto-joining under `policy`.
        fn config(&self, policy: Option<JoinPolicy>) -> ClientConfig {
            ClientConfig::new(self.app)
                .with_challenge_duration(600)
                .with_auto_join(policy)
        }

        /// A client for `signer` sending through `chain`, with `config` and a fresh memory store.
        async fn node_with(
            &self,
            signer: Arc<LocalSigner>,
            chain: &Arc<payment_channel::chain::EthereumChain>,
            config: ClientConfig,
        ) -> Node {
            let store = Arc::new(MemoryStore::new());
            open_node(&self.net, config, signer, chain.clone(), store).await
        }
    }

    /// The payee's `Client` watching a real chain: anvil with the published Nitro contracts.
    /// The payer takes the channel on chain with its postfund state (paying the payee nothing);
    /// the payee's `watch_chain` alone answers with a turn-2 challenge carrying its largest voucher,
    /// and after the timeout each side is paid exactly its share.
    #[tokio::test]
    async fn on_anvil_the_payees_watcher_counters_a_stale_challenge() {
        let Some(w) = OnAnvil::start().await else {
            return;
        };
        let (payer_chain, payee_chain) = (&w.payer_chain, &w.payee_chain);
        let (payer_key, payee_key) = (key(0x31), key(0x32));
        let policy = JoinPolicy::new(w.app, u(10_000), u(15_000));
        let native = Address::ZERO;
        let mut payer = w
            .node(payer_key.clone(), payer_chain, Some(policy), native)
            .await;
        let mut payee = w.node(payee_key.clone(), payee_chain, None, native).await;
        let id = open_and_pay(&mut payer, &mut payee, &[500; 3]).await;
        assert_eq!(payee.client.channel_info(id).await.unwrap().paid, u(1_500));

        // The payer walks away with the postfund state.
        payer.client.challenge(id).await.unwrap();
        assert_eq!(payee_chain.status(id).await.unwrap().turn_num_record, 1);
        // Nothing but the payee's watcher runs.
        payee.client.watch_chain().await.unwrap();
        assert_eq!(
            payee_chain.status(id).await.unwrap().turn_num_record,
            2,
            "countered at turn 2"
        );
        payee_chain.increase_time(601).await.unwrap();
        payee.client.watch_chain().await.unwrap();
        payer.client.watch_chain().await.unwrap();
        payee.drain_events();
        assert!(payee.saw(|e| *e == Event::PaidOut { amount: u(1_500) }));
        let coins = async |a: Address| payee_chain.balance(Address::ZERO, a).await.unwrap();
        assert_eq!(coins(payee_key.address()).await, u(1_500));
        assert_eq!(coins(payer_key.address()).await, u(8_500));
        assert_eq!(
            payee_chain.holdings(Address::ZERO, id).await.unwrap(),
            U256::ZERO
        );
    }

    /// Reorg safety on a real node: the payer's deposit lands in the latest block, then a reorg
    /// (anvil's `evm_revert`) removes it. With the default confirmations of `EthereumChain` (2) the
    /// payer never applied it, so it neither told the payee it had funded nor lost track of its
    /// duty: its next watch deposits again, once, and the channel opens on the deposit that stays.
    #[tokio::test]
    async fn on_anvil_a_deposit_removed_by_a_reorg_is_never_applied_and_is_made_again() {
        let Some(w) = OnAnvil::start().await else {
            return;
        };
        let (payer_chain, payee_chain) = (&w.payer_chain, &w.payee_chain);
        assert_eq!(payer_chain.default_confirmations(), 2);
        // The chain's default confirmations (`config` leaves them unset).
        let policy = JoinPolicy::new(w.app, u(10_000), u(15_000));
        let payer_config = w.config(Some(policy));
        let mut payer = w.node_with(key(0x51), payer_chain, payer_config).await;
        let mut payee = w.node_with(key(0x52), payee_chain, w.config(None)).await;

        let id = payee
            .client
            .create(payer.client.address(), u(10_000), None)
            .await
            .unwrap();
        let snapshot = w.anvil.rpc("evm_snapshot", "[]").unwrap();
        // The payer auto-joins and deposits; its deposit is in the latest block only.
        assert!(pump(&mut payer, &mut payee).await.is_empty());
        assert_eq!(
            payer_chain.holdings(Address::ZERO, id).await.unwrap(),
            u(10_000)
        );
        payer.client.watch_chain().await.unwrap();
        assert_eq!(phase(&payer, id).await, PhaseKind::Funding, "not confirmed");
        assert_eq!(phase(&payee, id).await, PhaseKind::Proposed, "no Join sent");

        // The block with the deposit is replaced by empty ones.
        w.anvil.rpc("evm_revert", &format!("[{snapshot}]")).unwrap();
        for _ in 0..3 {
            payer_chain.mine().await.unwrap();
        }
        assert_eq!(
            payer_chain.holdings(Address::ZERO, id).await.unwrap(),
            U256::ZERO
        );
        // The deposit is still the payer's duty: the watcher makes it again.
        payer.client.watch_chain().await.unwrap();
        assert_eq!(
            payer_chain.holdings(Address::ZERO, id).await.unwrap(),
            u(10_000)
        );
        for _ in 0..2 {
            payer_chain.mine().await.unwrap();
        }
        payer.client.watch_chain().await.unwrap();
        assert_eq!(phase(&payer, id).await, PhaseKind::AwaitingPostfund);
        assert!(pump(&mut payer, &mut payee).await.is_empty());
        for n in [&payer, &payee] {
            assert_eq!(phase(n, id).await, PhaseKind::Running);
        }
        assert_eq!(
            payer_chain.holdings(Address::ZERO, id).await.unwrap(),
            u(10_000)
        );
        pay(&mut payer, &mut payee, id, &[250]).await;
        assert_eq!(payee.client.channel_info(id).await.unwrap().paid, u(250));
    }

    /// Two `Client`s paying in a real ERC-20 (`Token.sol`) on anvil: the payer's client approves and
    /// deposits (probe first), 20 vouchers, a cooperative close, and the payout in the token; then a
    /// fee-on-transfer token (`BadToken`) is refused after its probe. Prints the gas of each step.
    #[tokio::test]
    async fn on_anvil_an_erc20_channel_pays_out_in_the_token_and_a_fee_token_is_refused() {
        use payment_channel::test_utils::anvil::{BadTokenMode, deploy_bad_token, deploy_token};

        let Some(w) = OnAnvil::start().await else {
            return;
        };
        let (anvil, dir) = (&w.anvil, &w.artifacts);
        let (tx_key, tx_account) = (OnAnvil::tx_key, OnAnvil::tx_account);
        let token = deploy_token(&anvil.url, &tx_key(0), dir, tx_account(1)).await;
        let (payer_chain, payee_chain) = (&w.payer_chain, &w.payee_chain);
        let (payer_key, payee_key) = (key(0x41), key(0x42));
        let limits = payment_channel::policy::AssetLimits::new(u(1_000_000), u(1_000_000));
        let policy = JoinPolicy::new(w.app, u(0), u(0)).only_asset(token, limits);
        let mut payer = w
            .node(payer_key.clone(), payer_chain, Some(policy), token)
            .await;
        let mut payee = w.node(payee_key.clone(), payee_chain, None, token).await;
        let before = payer_chain.balance(token, tx_account(1)).await.unwrap();
        let block = payer_chain.block_number().await.unwrap();
        let id = payee
            .client
            .create(payer_key.address(), u(10_000), None)
            .await
            .unwrap();
        assert!(pump(&mut payer, &mut payee).await.is_empty());
        payee.client.watch_chain().await.unwrap();
        assert_eq!(payer_chain.holdings(token, id).await.unwrap(), u(10_000));
        assert_eq!(
            payer_chain.balance(token, tx_account(1)).await.unwrap(),
            before - u(10_000)
        );
        assert_eq!(payer_chain.allowance(token).await.unwrap(), U256::ZERO);
        // The funding transactions: approve, probe deposit, rest of the deposit.
        let mut gas = Vec::new();
        for n in block + 1..=payer_chain.block_number().await.unwrap() {
            let b = anvil
                .rpc("eth_getBlockByNumber", &format!(r#"["0x{n:x}",true]"#))
                .unwrap();
            for tx in b["transactions"].as_array().unwrap() {
                let r = anvil
                    .rpc(
                        "eth_getTransactionReceipt",
                        &format!(r#"["{}"]"#, tx["hash"].as_str().unwrap()),
                    )
                    .unwrap();
                gas.push(
                    u64::from_str_radix(
                        r["gasUsed"].as_str().unwrap().trim_start_matches("0x"),
                        16,
                    )
                    .unwrap(),
                );
            }
        }
        println!(
            "GAS client ERC-20 funding (approve, probe deposit, deposit): {gas:?} = {}",
            gas.iter().sum::<u64>()
        );
        assert_eq!(gas.len(), 3, "approve + probe + deposit");

        pay(&mut payer, &mut payee, id, &[150; 20]).await;
        close_and_watch(&mut payer, &mut payee, id).await;
        for (who, balance) in [(payee_key.address(), 3_000), (payer_key.address(), 7_000)] {
            let got = payee_chain.balance(token, who).await.unwrap();
            assert_eq!(got, u(balance), "{who}'s balance");
        }
        assert_eq!(payee_chain.holdings(token, id).await.unwrap(), U256::ZERO);

        // A fee-on-transfer token: only the probe goes in, and the deposit stops with a typed error.
        let fee = deploy_bad_token(
            &anvil.url,
            &tx_key(0),
            dir,
            tx_account(1),
            BadTokenMode::FeeOnTransfer,
        )
        .await;
        let policy = JoinPolicy::new(w.app, u(0), u(0)).only_asset(fee, limits);
        let mut payer = w.node(key(0x43), payer_chain, Some(policy), fee).await;
        let mut payee = w.node(key(0x44), payee_chain, None, fee).await;
        let id = payee
            .client
            .create(payer.client.address(), u(100_000), None)
            .await
            .unwrap();
        let errors = pump(&mut payer, &mut payee).await;
        assert!(
            matches!(
                errors.as_slice(),
                [Error::Chain(ChainError::TokenMisbehaved { sent, received, .. })]
                    if *sent == u(100) && *received == u(99)
            ),
            "{errors:?}"
        );
        assert_eq!(payer_chain.holdings(fee, id).await.unwrap(), u(100));
    }
}

// ---------------------------------------------------------------- the app's code and ERC-20 channels

/// A new [`World`] with a token deployed on its chain, a payer holding `minted` of it (and no
/// native coin) that auto-joins channels in that token only, and a payee that proposes channels
/// in it.
async fn token_world(
    behaviour: payment_channel::TokenBehaviour,
    decimals: u8,
    minted: u64,
) -> (World, Address, Node, Node) {
    let w = World::new();
    let token = w.chain.deploy_token(behaviour, decimals);
    let (payer_key, payee_key) = (key(1), key(2));
    w.chain.mint(token, payer_key.address(), u(minted)).unwrap();
    let policy = w.policy().only_asset(
        token,
        payment_channel::policy::AssetLimits::new(u(1_000_000), u(1_000_000)),
    );
    let payer = w
        .node(payer_key, Arc::new(MemoryStore::new()), Some(policy))
        .await;
    let payee_config = w.config(None).with_asset(token);
    let payee = w
        .node_with(payee_key, Arc::new(MemoryStore::new()), payee_config)
        .await;
    (w, token, payer, payee)
}

#[tokio::test]
async fn erc20_channel_deposit_vouchers_close_and_payout_in_the_token() {
    let (w, token, mut payer, mut payee) =
        token_world(payment_channel::TokenBehaviour::Standard, 6, 100_000).await;
    let (a, b) = (payer.client.address(), payee.client.address());
    let id = payee.client.create(a, u(10_000), Some(u(1))).await.unwrap();
    assert!(pump(&mut payer, &mut payee).await.is_empty());
    assert!(payer.saw(|e| matches!(e, Event::Proposed { asset, .. } if *asset == token)));
    assert!(payee.saw(|e| *e == Event::Funded), "{:?}", payee.seen);
    assert_eq!(w.chain.asset_holdings_of(token, id), u(10_000));
    assert_eq!(w.chain.holdings_of(id), U256::ZERO, "no native coin");
    assert_eq!(w.chain.asset_balance_of(token, a), u(90_000));
    pay(&mut payer, &mut payee, id, &[150; 20]).await;
    assert_eq!(payee.client.channel_info(id).await.unwrap().paid, u(3_000));
    close_and_watch(&mut payer, &mut payee, id).await;
    assert_eq!(w.chain.asset_balance_of(token, b), u(3_000));
    assert_eq!(w.chain.asset_balance_of(token, a), u(97_000));
    assert_eq!(w.chain.asset_holdings_of(token, id), U256::ZERO);
    assert_eq!(w.chain.balance_of(a), U256::ZERO);
    assert_eq!(w.chain.balance_of(b), U256::ZERO);
    // The allowance was set to exactly the deposit and is used up.
    let payer_handle = w.chain.handle(a);
    assert_eq!(
        payment_channel::chain::Chain::allowance(&payer_handle, token)
            .await
            .unwrap(),
        U256::ZERO
    );
}

#[tokio::test]
async fn erc20_payee_challenge_pays_out_in_the_token() {
    let (w, token, mut payer, mut payee) =
        token_world(payment_channel::TokenBehaviour::Standard, 18, 100_000).await;
    let (a, b) = (payer.client.address(), payee.client.address());
    let id = payee.client.create(a, u(10_000), None).await.unwrap();
    assert!(pump(&mut payer, &mut payee).await.is_empty());
    pay(&mut payer, &mut payee, id, &[500; 3]).await;
    payee.client.challenge(id).await.unwrap();
    w.chain.advance_time(601);
    payee.client.watch_chain().await.unwrap();
    payer.client.watch_chain().await.unwrap();
    assert_eq!(w.chain.asset_balance_of(token, b), u(1_500));
    assert_eq!(w.chain.asset_balance_of(token, a), u(100_000 - 1_500));
    assert_eq!(w.chain.asset_holdings_of(token, id), U256::ZERO);
}

#[tokio::test]
async fn erc20_allowance_is_reused_and_never_raised_beyond_the_deposit() {
    use payment_channel::chain::Chain;
    let (w, token, mut payer, mut payee) =
        token_world(payment_channel::TokenBehaviour::Standard, 18, 100_000).await;
    let a = payer.client.address();
    let handle = w.chain.handle(a);
    // A standing allowance above the deposit is used as it is (no approve).
    handle.approve(token, u(25_000)).await.unwrap();
    payee.client.create(a, u(10_000), None).await.unwrap();
    assert!(pump(&mut payer, &mut payee).await.is_empty());
    assert_eq!(handle.allowance(token).await.unwrap(), u(15_000));
    // One below the next deposit is raised to exactly that deposit, which then uses it up.
    handle.approve(token, u(3_000)).await.unwrap();
    payee.client.create(a, u(8_000), None).await.unwrap();
    assert!(pump(&mut payer, &mut payee).await.is_empty());
    assert_eq!(handle.allowance(token).await.unwrap(), U256::ZERO);
    assert_eq!(w.chain.asset_balance_of(token, a), u(82_000));
}

#[tokio::test]
async fn erc20_short_balance_fails_before_anything_is_sent() {
    use payment_channel::chain::{Chain, ChainError};
    let (w, token, mut payer, mut payee) =
        token_world(payment_channel::TokenBehaviour::Standard, 18, 5_000).await;
    let a = payer.client.address();
    let blocks = w.chain.block_number();
    let (id, err) = proposal_error(&mut payer, &mut payee, 10_000).await;
    assert!(
        matches!(
            &err,
            Error::Chain(ChainError::InsufficientFunds { needed, available })
                if *needed == u(10_000) && *available == u(5_000)
        ),
        "{err:?}"
    );
    assert_eq!(w.chain.block_number(), blocks, "no transaction at all");
    assert_eq!(w.chain.asset_holdings_of(token, id), U256::ZERO);
    assert_eq!(
        w.chain.handle(a).allowance(token).await.unwrap(),
        U256::ZERO
    );
}

#[tokio::test]
async fn fee_on_transfer_token_is_refused_after_a_small_probe() {
    use payment_channel::chain::ChainError;
    let (w, token, mut payer, mut payee) = token_world(
        payment_channel::TokenBehaviour::FeeOnTransfer,
        18,
        1_000_000,
    )
    .await;
    let a = payer.client.address();
    let (id, err) = proposal_error(&mut payer, &mut payee, 100_000).await;
    assert!(
        matches!(
            &err,
            Error::Chain(ChainError::TokenMisbehaved { token: t, sent, received })
                if *t == token && *sent == u(100) && *received == u(99)
        ),
        "{err:?}"
    );
    // Only the probe (a thousandth of the deposit) went in; the channel never runs.
    assert_eq!(w.chain.asset_holdings_of(token, id), u(100));
    assert_eq!(w.chain.asset_balance_of(token, a), u(1_000_000 - 100));
    assert!(!payee.saw(|e| *e == Event::Funded));
}

#[tokio::test]
async fn joiner_refuses_an_app_whose_code_is_not_payment_app() {
    let w = World::new();
    // A contract at the agreed address that is not PaymentApp (here: VirtualPaymentApp, whose
    // redemption rule lets the payee take the deposit).
    let vpa = Address::repeat_byte(0x77);
    w.chain.install_virtual_payment_app(vpa);
    let (payer_key, payee_key) = w.funded_keys();
    let config = |policy| {
        ClientConfig::new(vpa)
            .with_challenge_duration(600)
            .with_auto_join(policy)
    };
    let policy = JoinPolicy::new(vpa, u(10_000), u(15_000));
    let open = |key: Arc<LocalSigner>, policy| {
        let chain = Arc::new(w.chain.handle(key.address()));
        open_node(
            &w.net,
            config(policy),
            key,
            chain,
            Arc::new(MemoryStore::new()),
        )
    };
    let mut payer = open(payer_key.clone(), Some(policy)).await;
    let mut payee = open(payee_key, None).await;
    let a = payer.client.address();
    let (_, err) = proposal_error(&mut payer, &mut payee, 1_000).await;
    assert!(
        matches!(&err, Error::Rejected(PolicyRejection::AppCode { app, .. }) if *app == vpa),
        "{err:?}"
    );
    // Without a policy (manual join) the proposal is refused just the same.
    let mut manual = open(payer_key, None).await;
    let (_, err) = proposal_error(&mut manual, &mut payee, 1_000).await;
    assert!(
        matches!(&err, Error::Rejected(PolicyRejection::AppCode { .. })),
        "{err:?}"
    );
    assert!(manual.client.channel_ids().is_empty());
    assert_eq!(w.chain.balance_of(a), u(100_000), "nothing deposited");
}

/// A cooperative close concludes once: nobody sends a second `conclude` after the payout (the
/// adjudicator deletes the status at payout, so "already finalized?" reads no), and nothing is
/// sent for a channel whose holdings are zero.
#[tokio::test]
async fn a_cooperative_close_concludes_once_and_pays_out_once() {
    use payment_channel::chain::ChainEvent;
    let w = World::new();
    let (mut payer, mut payee, id) = funded_pair(&w).await;
    pay(&mut payer, &mut payee, id, &[1_000]).await;
    payer.client.close(id).await.unwrap();
    assert!(pump(&mut payer, &mut payee).await.is_empty());
    for _ in 0..3 {
        payer.client.watch_chain().await.unwrap();
        payee.client.watch_chain().await.unwrap();
        payer.client.close(id).await.ok();
        payee.client.close(id).await.ok();
        assert!(pump(&mut payer, &mut payee).await.is_empty());
    }
    let count = |f: fn(&ChainEvent) -> bool| {
        w.chain
            .all_events()
            .iter()
            .filter(|r| r.event.channel_id() == id && f(&r.event))
            .count()
    };
    assert_eq!(count(|e| matches!(e, ChainEvent::Concluded { .. })), 1);
    assert_eq!(
        count(|e| matches!(e, ChainEvent::AllocationUpdated { .. })),
        1
    );
    assert_eq!(w.chain.balance_of(payee.client.address()), u(1_000));
}

/// A payer that lost its store is offered the same proposal again (same participants and
/// nonce: the same channel id, funded before): refused before anything is signed or deposited.
#[tokio::test]
async fn a_proposal_whose_id_has_history_on_chain_is_refused() {
    let chain = SimulatedChain::new();
    let (payer_key, payee_key) = (key(1), key(2));
    chain.fund(payer_key.address(), u(10_000)).unwrap();
    let policy = || JoinPolicy::new(chain.app_definition(), u(1_000), u(10_000));
    let open = |key: Arc<LocalSigner>, policy: Option<JoinPolicy>| {
        let chain = chain.clone();
        async move {
            Client::open(
                ClientConfig::new(chain.app_definition()).with_auto_join(policy),
                key.clone(),
                Arc::new(chain.handle(key.address())),
                Arc::new(MemoryStore::new()),
                None,
            )
            .await
            .unwrap()
            .0
        }
    };
    let payer = open(payer_key.clone(), Some(policy())).await;
    let payee = open(payee_key.clone(), None).await;
    let id = payee
        .create_with_nonce(payer.address(), u(1_000), None, 7)
        .await
        .unwrap();
    let proposal = payee.next_outbound().unwrap();
    payer.push_message(proposal.clone()).await.unwrap();
    assert_eq!(chain.holdings_of(id), u(1_000));
    // The payer restarts with an empty store; the proposal is replayed.
    let restarted = open(payer_key.clone(), Some(policy())).await;
    let before = chain.balance_of(payer_key.address());
    let err = restarted.push_message(proposal).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Rejected(PolicyRejection::NotFresh { channel_id }) if channel_id == id
        ),
        "{err:?}"
    );
    assert!(restarted.channel_ids().is_empty());
    assert!(restarted.next_outbound().is_none());
    assert_eq!(chain.balance_of(payer_key.address()), before);
    assert_eq!(chain.holdings_of(id), u(1_000));
}

// ---------------------------------------------------------------- on-chain duties (issue 13)

use payment_channel::chain::sim::SimulatedChainHandle;
use payment_channel::test_utils::faulty::{Call, FaultyChain};

type Faulty = Arc<FaultyChain<SimulatedChainHandle>>;

/// A client with a fresh memory store whose chain handle fails on demand.
async fn faulty_node(w: &World, signer: Arc<LocalSigner>, config: ClientConfig) -> (Node, Faulty) {
    faulty_node_on(w, signer, Arc::new(MemoryStore::new()), config).await
}

/// The payee proposes a channel of `deposit` to `payer`, and both are pumped: the channel and the
/// one error it caused (asserted to be the only one).
async fn proposal_error(payer: &mut Node, payee: &mut Node, deposit: u64) -> (B256, Error) {
    let a = payer.client.address();
    let id = payee.client.create(a, u(deposit), None).await.unwrap();
    let mut errors = pump(payer, payee).await;
    assert_eq!(errors.len(), 1, "{errors:?}");
    (id, errors.remove(0))
}

/// A funded payer (auto-joining) and a payee, each with a chain handle that fails on demand.
async fn faulty_pair(w: &World) -> (Node, Faulty, Node, Faulty) {
    let (payer_key, payee_key) = w.funded_keys();
    let (payer, payer_chain) = faulty_node(w, payer_key, w.config(Some(w.policy()))).await;
    let (payee, payee_chain) = faulty_node(w, payee_key, w.config(None)).await;
    (payer, payer_chain, payee, payee_chain)
}

/// The phase of channel `id` at `n`.
async fn phase(n: &Node, id: B256) -> PhaseKind {
    n.client.channel_info(id).await.unwrap().phase
}

/// A funded payer (auto-joining) and a payee whose chain handle fails on demand.
async fn payer_and_faulty_payee(w: &World) -> (Node, Node, Faulty) {
    payer_and_faulty_payee_with(w, w.config(None)).await
}

/// A channel paid `paid` in one voucher between a payer and a payee with a faulty chain
/// handle, challenged by the payee and past its 600 s challenge.
async fn challenged_and_final(paid: u64) -> (World, Node, Node, Faulty, B256) {
    let w = World::new();
    let (mut payer, mut payee, chain) = payer_and_faulty_payee(&w).await;
    let id = open_and_pay(&mut payer, &mut payee, &[paid]).await;
    payee.client.challenge(id).await.unwrap();
    w.chain.advance_time(601);
    (w, payer, payee, chain, id)
}

/// [`payer_and_faulty_payee`] with the payee's `config`.
async fn payer_and_faulty_payee_with(w: &World, config: ClientConfig) -> (Node, Node, Faulty) {
    let (payer_key, payee_key) = w.funded_keys();
    let payer = w.payer(payer_key).await;
    let (payee, chain) = faulty_node(w, payee_key, config).await;
    (payer, payee, chain)
}

/// A client on `store` whose chain handle fails on demand.
async fn faulty_node_on(
    w: &World,
    signer: Arc<LocalSigner>,
    store: Arc<dyn ChannelStore>,
    config: ClientConfig,
) -> (Node, Faulty) {
    let chain = Arc::new(FaultyChain::new(w.chain.handle(signer.address())));
    let node = open_node(&w.net, config, signer, chain.clone(), store).await;
    (node, chain)
}

/// Watches (ignoring the errors of failed duties) with the chain clock moving `step` seconds
/// between watches, until `done` or `max` watches.
async fn watch_until(
    w: &World,
    node: &Node,
    step: u64,
    max: usize,
    done: impl Fn() -> bool,
) -> usize {
    for i in 0..max {
        let _ = node.client.watch_chain().await;
        if done() {
            return i + 1;
        }
        w.chain.advance_time(step);
    }
    max
}

/// The payer registers its postfund (paying the payee nothing) while the payee's counter fails
/// twice: later watches retry it with backoff, it lands once, and the payee is paid its best
/// voucher.
#[tokio::test]
async fn a_stale_challenge_is_countered_although_the_counter_fails_twice() {
    let w = World::new();
    let (mut payer, mut payee, chain) = payer_and_faulty_payee(&w).await;
    let id = open_and_pay(&mut payer, &mut payee, &[500; 3]).await;

    chain.fail_next(Call::Challenge, 2);
    payer.client.challenge(id).await.unwrap();
    assert_eq!(w.chain.status_of(id).turn_num_record, 1);
    let watches = watch_until(&w, &payee, 1, 20, || {
        w.chain.status_of(id).turn_num_record == 2
    })
    .await;
    assert_eq!(w.chain.status_of(id).turn_num_record, 2, "countered");
    assert_eq!(chain.calls(Call::Challenge), 3, "two failures, one landing");
    assert!(watches >= 3, "retried on later watches ({watches})");
    // Retried, never duplicated.
    for _ in 0..3 {
        payee.client.watch_chain().await.unwrap();
    }
    assert_eq!(chain.calls(Call::Challenge), 3);

    w.chain.advance_time(601);
    payee.client.watch_chain().await.unwrap();
    assert_paid_out(&w, &payer, &payee, 1_500);
}

/// The payee applied the payer's stale challenge and persisted its cursor past it, then died
/// before its counter reached the chain. Reopened from the same store, its first watch counters.
#[tokio::test]
async fn a_counter_lost_in_a_crash_after_the_cursor_was_persisted_lands_after_restart() {
    let (w, mut payer, payee_key) = World::with_payer().await;
    let store: Arc<dyn ChannelStore> = Arc::new(MemoryStore::new());
    let (mut payee, chain) =
        faulty_node_on(&w, payee_key.clone(), store.clone(), w.config(None)).await;
    let id = open_and_pay(&mut payer, &mut payee, &[400; 2]).await;

    payer.client.challenge(id).await.unwrap();
    // The transaction never leaves (the process dies while sending it).
    chain.fail_next(Call::Challenge, u32::MAX);
    let _ = payee.client.watch_chain().await;
    drop(payee);
    assert_eq!(w.chain.status_of(id).turn_num_record, 1);
    let snapshot = payment_channel::channel::ChannelSnapshot::from_bytes(
        &store.get_channel(id).await.unwrap().unwrap(),
    )
    .unwrap();
    let restored =
        payment_channel::channel::Channel::restore(payee_key.clone(), snapshot, None).unwrap();
    assert!(
        restored.chain_cursor() > w.chain.block_number(),
        "the cursor was persisted past the challenge"
    );
    assert!(restored.on_chain().challenge.is_some());

    let payee = w.node(payee_key, store, None).await;
    payee.client.watch_chain().await.unwrap();
    assert_eq!(w.chain.status_of(id).turn_num_record, 2, "countered");
    w.chain.advance_time(601);
    payee.client.watch_chain().await.unwrap();
    assert_eq!(w.chain.balance_of(payee.client.address()), u(800));
}

/// A payout that fails is retried on later watches until it lands, once.
#[tokio::test]
async fn a_failed_payout_is_retried_until_it_lands() {
    let (w, _payer, payee, chain, id) = challenged_and_final(700).await;
    chain.fail_next(Call::TransferAllAssets, 3);
    watch_until(&w, &payee, 1, 30, || w.chain.holdings_of(id).is_zero()).await;
    assert_eq!(w.chain.balance_of(payee.client.address()), u(700));
    assert_eq!(chain.calls(Call::TransferAllAssets), 4);
    assert!(payee.client.channel_info(id).await.unwrap().settled);
}

/// The payer's deposit fails when it joins: the watcher deposits later, exactly the deposit.
#[tokio::test]
async fn a_failed_deposit_is_retried_by_the_watcher_and_never_doubled() {
    let w = World::new();
    let (payer_key, payee_key) = w.funded_keys();
    let (mut payer, chain) = faulty_node(&w, payer_key, w.config(Some(w.policy()))).await;
    let mut payee = w.fresh_node(payee_key, None).await;
    chain.fail_next(Call::Deposit, 1);
    let id = payee
        .client
        .create(payer.client.address(), u(10_000), None)
        .await
        .unwrap();
    pump(&mut payer, &mut payee).await;
    assert_eq!(w.chain.holdings_of(id), U256::ZERO);
    for _ in 0..5 {
        let _ = payer.client.watch_chain().await;
        w.chain.advance_time(2);
    }
    assert!(pump(&mut payer, &mut payee).await.is_empty());
    assert_eq!(w.chain.holdings_of(id), u(10_000));
    assert_eq!(chain.calls(Call::Deposit), 2);
    for n in [&payer, &payee] {
        assert_eq!(phase(n, id).await, PhaseKind::Running);
    }
}

/// A cooperative close whose `conclude` fails is concluded and paid out by later watches.
#[tokio::test]
async fn a_failed_conclude_is_retried_until_the_close_pays_out() {
    let w = World::new();
    let (mut payer, chain, mut payee, payee_chain) = faulty_pair(&w).await;
    let id = open_and_pay(&mut payer, &mut payee, &[600]).await;
    chain.fail_next(Call::Conclude, 2);
    payee_chain.fail_next(Call::Conclude, 2);
    payer.client.close(id).await.unwrap();
    pump(&mut payer, &mut payee).await;
    assert_eq!(w.chain.holdings_of(id), u(10_000));
    watch_until(&w, &payer, 1, 20, || w.chain.holdings_of(id).is_zero()).await;
    assert_paid_out(&w, &payer, &payee, 600);
}

/// No gas for nothing: a payer that signed its whole deposit away does not challenge, a payee
/// without a voucher above zero does not challenge, and a party whose share of the finalized
/// outcome is zero leaves the payout to the other.
#[tokio::test]
async fn nobody_pays_gas_for_a_transaction_that_pays_them_nothing() {
    let w = World::new();
    let (mut payer, payer_chain, mut payee, payee_chain) = faulty_pair(&w).await;
    // A payee without a voucher.
    let id = open_and_pay(&mut payer, &mut payee, &[]).await;
    assert!(matches!(
        payee.client.challenge(id).await,
        Err(Error::Usage(
            payment_channel::error::UsageError::CannotChallenge(_)
        ))
    ));
    assert_eq!(payee_chain.calls(Call::Challenge), 0);
    // A payer that paid everything.
    pay(&mut payer, &mut payee, id, &[10_000]).await;
    assert!(matches!(
        payer.client.challenge(id).await,
        Err(Error::Usage(
            payment_channel::error::UsageError::CannotChallenge(_)
        ))
    ));
    assert_eq!(payer_chain.calls(Call::Challenge), 0);
    // The payee's challenge finalizes paying the payer nothing: only the payee pays out.
    payee.client.challenge(id).await.unwrap();
    w.chain.advance_time(601);
    payer.client.watch_chain().await.unwrap();
    assert_eq!(payer_chain.calls(Call::TransferAllAssets), 0);
    assert_eq!(w.chain.holdings_of(id), u(10_000));
    payee.client.watch_chain().await.unwrap();
    assert_eq!(payee_chain.calls(Call::TransferAllAssets), 1);
    assert_eq!(w.chain.balance_of(payee.client.address()), u(10_000));
}

/// `watch_chain` reads the events of all channels with one log query, and none per channel:
/// its reads do not grow with the number of channels, and proposals nobody joined cost nothing.
#[tokio::test]
async fn watch_chain_makes_one_log_query_for_all_channels() {
    let w = World::new();
    let (payer_key, payee_key) = w.funded_keys();
    let policy = JoinPolicy::new(w.chain.app_definition(), u(10_000), u(100_000));
    let mut payer = w
        .node(payer_key, Arc::new(MemoryStore::new()), Some(policy))
        .await;
    let (mut payee, chain) = faulty_node(&w, payee_key, w.config(None)).await;
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(open_and_pay(&mut payer, &mut payee, &[100]).await);
    }
    // Proposals to a payer that is offline: never joined.
    let stranger = key(9).address();
    for _ in 0..5 {
        payee.client.create(stranger, u(1_000), None).await.unwrap();
    }
    let count = |c: &Faulty| {
        [
            Call::Now,
            Call::BlockNumber,
            Call::Events,
            Call::AdjudicatorEvents,
            Call::Holdings,
            Call::Status,
        ]
        .map(|k| c.calls(k))
    };
    let before = count(&chain);
    w.chain.advance_time(0);
    payee.client.watch_chain().await.unwrap();
    let after = count(&chain);
    let delta: Vec<u64> = after.iter().zip(before).map(|(a, b)| a - b).collect();
    assert_eq!(
        delta,
        [1, 1, 0, 1, 0, 0],
        "now, block number, one log query; nothing per channel"
    );
    // The events still reach each channel: a challenge on one of them is countered.
    payer.client.challenge(ids[2]).await.unwrap();
    payee.client.watch_chain().await.unwrap();
    assert_eq!(w.chain.status_of(ids[2]).turn_num_record, 2);
    assert_eq!(
        chain.calls(Call::Events),
        before[2] + 1,
        "one read after our own tx"
    );
}

/// With confirmations, an event is applied only once that many blocks follow its block, and
/// exactly once although the watcher re-reads the last blocks.
#[tokio::test]
async fn events_are_applied_after_the_configured_confirmations_and_once() {
    let w = World::new();
    let config = w.config(None).with_confirmations(Some(2));
    let (mut payer, mut payee, chain) = payer_and_faulty_payee_with(&w, config).await;
    let id = open(&mut payer, &mut payee).await;
    // The deposit is in the latest block: not confirmed yet.
    assert_eq!(phase(&payee, id).await, PhaseKind::Funding);
    for (want, confirmations) in [
        (PhaseKind::Funding, "one confirmation"),
        (PhaseKind::Running, "two confirmations"),
    ] {
        w.chain.advance_time(0);
        payee.client.watch_chain().await.unwrap();
        assert_eq!(phase(&payee, id).await, want, "{confirmations}");
    }
    assert!(pump(&mut payer, &mut payee).await.is_empty());
    pay(&mut payer, &mut payee, id, &[300]).await;

    payer.client.challenge(id).await.unwrap();
    payee.client.watch_chain().await.unwrap();
    assert!(!payee.client.channel_info(id).await.unwrap().disputed);
    for _ in 0..4 {
        w.chain.advance_time(0);
        payee.client.watch_chain().await.unwrap();
    }
    payee.drain_events();
    assert_eq!(w.chain.status_of(id).turn_num_record, 2, "countered");
    assert_eq!(
        chain.calls(Call::Challenge),
        1,
        "once, though not confirmed at first"
    );
    let registered = |turn| {
        payee
            .seen
            .iter()
            .filter(|e| matches!(e.event, Event::ChallengeRegistered { turn_num, .. } if turn_num == turn))
            .count()
    };
    assert_eq!(registered(1), 1);
    assert_eq!(registered(2), 1);
    assert_eq!(
        payee
            .seen
            .iter()
            .filter(|e| e.event == Event::Funded)
            .count(),
        1
    );
}

/// A failed log query leaves every cursor in place (the events are read again next time) and
/// does not hold back a duty the persisted state already shows.
#[tokio::test]
async fn a_failed_log_query_keeps_the_cursor_and_still_pays_out() {
    let (w, _payer, mut payee, chain, id) = challenged_and_final(900).await;
    chain.fail_next(Call::AdjudicatorEvents, 1);
    assert!(payee.client.watch_chain().await.is_err());
    assert_eq!(
        w.chain.balance_of(payee.client.address()),
        u(900),
        "paid out"
    );
    // The channel learned of its payout (read right after the transaction) and stays settled.
    payee.client.watch_chain().await.unwrap();
    payee.drain_events();
    assert!(payee.saw(|e| *e == Event::PaidOut { amount: u(900) }));
    assert!(payee.client.channel_info(id).await.unwrap().settled);
}

#[tokio::test]
async fn presigned_vouchers_are_sent_when_due_and_forgotten_by_a_restart() {
    let w = World::new();
    let (payer_key, payee_key) = w.funded_keys();
    let store: Arc<dyn ChannelStore> = Arc::new(MemoryStore::new());
    let mut payer = w
        .node(payer_key.clone(), store.clone(), Some(w.policy()))
        .await;
    let mut payee = w.fresh_node(payee_key, None).await;
    let id = open_and_pay(&mut payer, &mut payee, &[100, 100]).await;

    // Eight vouchers of 100 signed ahead (on the blocking pool): nothing sent, stored or paid.
    assert_eq!(payer.client.presign(id, u(100), 8).await.unwrap(), 8);
    assert_eq!(payer.client.presign(id, u(100), 8).await.unwrap(), 0);
    assert!(payer.inbox.try_recv().is_err() && payee.inbox.try_recv().is_err());
    assert_eq!(store.get_voucher(id).await.unwrap().unwrap().amount, u(200));
    let info = payer.client.channel_info(id).await.unwrap();
    assert_eq!(
        (info.paid, info.best_voucher.unwrap().amount),
        (u(200), u(200))
    );

    // Due: one payment sends exactly the next one.
    let v = payer.client.send_payment(id, u(100)).await.unwrap();
    assert_eq!(v.amount, u(300));
    assert_eq!(store.get_voucher(id).await.unwrap().unwrap().amount, u(300));
    assert!(pump(&mut payer, &mut payee).await.is_empty());
    assert_eq!(payee.client.channel_info(id).await.unwrap().paid, u(300));

    // The payer crashes holding seven unsent pre-signed vouchers: the restart counts what was
    // sent (and stored), not what was signed ahead.
    drop(payer);
    let mut payer = w.node(payer_key, store.clone(), Some(w.policy())).await;
    let info = payer.client.channel_info(id).await.unwrap();
    assert_eq!(
        (info.paid, info.best_voucher.unwrap().amount),
        (u(300), u(300))
    );
    assert_eq!(store.get_voucher(id).await.unwrap().unwrap().amount, u(300));
    pay(&mut payer, &mut payee, id, &[100]).await;
    assert_eq!(payee.client.channel_info(id).await.unwrap().paid, u(400));
    close_and_watch(&mut payer, &mut payee, id).await;
    assert_paid_out(&w, &payer, &payee, 400);
}

#[tokio::test]
async fn payee_checks_vouchers_off_the_lock_and_credits_only_verified_ones() {
    use payment_channel::message::{Message, VoucherMessage};
    use payment_channel::voucher::Voucher;

    let (w, mut payer, payee_key) = World::with_payer().await;
    let config = w.config(None).with_offload_signatures(true);
    let mut payee = w
        .node_with(payee_key, Arc::new(MemoryStore::new()), config)
        .await;
    let id = open(&mut payer, &mut payee).await;
    // A voucher for 5 000 signed by someone else, in the payer's name.
    let forged = Voucher::sign(id, u(5_000), &*key(9)).unwrap();
    let envelope = Envelope {
        recipient: payee.client.address(),
        sender: payer.client.address(),
        data: Message::Voucher(VoucherMessage::from_voucher(&forged)),
    };
    let err = payee.client.push_message(envelope).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::PeerMisbehaved(PeerMisbehaved::BadSignature { .. })
        ),
        "{err:?}"
    );
    payee.drain_events();
    assert!(!payee.saw(|e| matches!(e, Event::PaymentReceived { .. })));
    assert_eq!(
        payee.client.channel_info(id).await.unwrap().paid,
        U256::ZERO
    );
    assert!(
        payee
            .client
            .channel_info(id)
            .await
            .unwrap()
            .best_voucher
            .is_none()
    );

    // Real vouchers are verified on the blocking pool, then credited.
    pay(&mut payer, &mut payee, id, &[300, 200]).await;
    assert_eq!(payee.client.channel_info(id).await.unwrap().paid, u(500));
    assert!(payee.saw(|e| *e
        == Event::PaymentReceived {
            delta: u(200),
            total: u(500)
        }));
}
