//! `paid-torrent hub` as an OS process on anvil, SIGKILLed in the middle of funding and of
//! defunding and restarted on the same `--store`: nothing is lost and everything completes.
//!
//! A payer and a payee run in this test process as `PartyNode`s over TCP; the hub is the CLI
//! binary. The hub is killed (SIGKILL) at four points, each chosen by what the payer or payee
//! observes (so the exact step the hub was at varies from run to run; every step must be safe):
//! 1. the payee holds the hub's ledger proposal (the hub's deposit is owed or in flight);
//! 2. the payer's guarantee for V is countersigned (the hub's own Add toward the payee is next);
//! 3. the payer signed V's final state (the Removes in both ledgers are next);
//! 4. the payee signed its ledger's final state (the hub's `concludeAndTransferAllAssets` is
//!    next).
//!
//! Checked at the end: the hub's ledger holds exactly its deposit once (no second deposit), every
//! ledger is paid out, and the payout addresses hold exactly what the vouchers and the fee say.
//! Needs the `ethereum` feature, anvil and the contract artifacts.

#![cfg(feature = "ethereum")]

mod support;

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use payment_channel::chain::ethereum::{NitroArtifacts, deploy};
use payment_channel::chain::{Chain, EthereumChain};
use payment_channel::ledger::{LedgerPhase, LedgerRole};
use payment_channel::party_node::tcp::{RunningNode, TcpNet, TcpNodeConfig, start_node};
use payment_channel::party_node::{NodeConfig, PartyNode};
use payment_channel::sign::{LocalSigner, Signer};
use payment_channel::test_utils::anvil::{Anvil, artifacts_dir};
use payment_channel::test_utils::faulty::FaultyChain;
use payment_channel::virtual_channel::{Party, PartyConfig, Side, VirtualParams};
use payment_channel::{Address, B256, MemoryStore, U256};
use support::{JsonProc, arg, binary, dev_key};

const HUB_DEPOSIT: u64 = 1_000;
const PAYER_DEPOSIT: u64 = 2_000;
const AMOUNT: u64 = 300;
const FEE: u64 = 2;
const PAID: u64 = 120;

struct Hub {
    cmd: Vec<String>,
    proc: Option<JsonProc>,
    address: Address,
}

impl Hub {
    fn start(&mut self) {
        let mut c = Command::new(binary());
        c.args(&self.cmd);
        let mut p = JsonProc::spawn("hub", c);
        let ev = p.expect_event(Duration::from_secs(60), "hub");
        eprintln!("hub started: {ev}");
        let address: Address = ev["address"].as_str().unwrap().parse().unwrap();
        if !self.address.is_zero() {
            assert_eq!(
                address, self.address,
                "the restarted hub has the same identity"
            );
        }
        self.address = address;
        self.proc = Some(p);
    }

    fn kill_and_restart(&mut self, when: &str) {
        eprintln!("SIGKILL the hub: {when}");
        if let Some(mut p) = self.proc.take() {
            p.kill9();
        }
        self.start();
    }
}

struct Peer {
    node: PartyNode,
    net: TcpNet,
    key: LocalSigner,
    chain: Arc<FaultyChain<Arc<dyn Chain>>>,
}

async fn peer(url: &str, adjudicator: Address, apps: (Address, Address)) -> Peer {
    let key = LocalSigner::random();
    let account = LocalSigner::random();
    fund(url, account.address());
    let chain = EthereumChain::connect(url, &account.secret_bytes(), adjudicator)
        .await
        .unwrap();
    let chain: Arc<dyn Chain> = Arc::new(chain);
    let chain = Arc::new(FaultyChain::new(chain));
    let signer: Arc<dyn Signer> = Arc::new(key.clone());
    let party = PartyConfig::new(apps.0, apps.1);
    let config = NodeConfig::default()
        .with_confirmations(Some(0))
        .with_max_retry_interval(2)
        .with_ledger_service(None);
    let tcp = TcpNodeConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        Duration::from_millis(100),
        Duration::from_millis(300),
    );
    let store = Arc::new(MemoryStore::new());
    let RunningNode { node, net, .. } =
        start_node(tcp, signer, party, chain.clone(), store, config)
            .await
            .unwrap();
    Peer {
        node,
        net,
        key,
        chain,
    }
}

fn fund(url: &str, a: Address) {
    let port: u16 = url.rsplit(':').next().unwrap().parse().unwrap();
    payment_channel::test_utils::anvil::rpc(
        port,
        "anvil_setBalance",
        &format!("[\"{a}\", \"0x3635c9adc5dea00000\"]"),
    )
    .unwrap();
}

async fn until<Fut: Future<Output = bool>>(what: &str, f: impl FnMut() -> Fut) {
    payment_channel::test_utils::until(what, Duration::from_secs(120), f).await
}

/// [`until`] `done` holds of `n`'s party.
async fn until_on(n: &PartyNode, what: &str, done: impl Fn(&Party) -> bool + Copy) {
    until(what, || async move { n.inspect(done).await }).await;
}

/// [`until_on`] each of `nodes`.
async fn until_all(nodes: [&PartyNode; 2], what: &str, done: impl Fn(&Party) -> bool + Copy) {
    for n in nodes {
        until_on(n, what, done).await;
    }
}

async fn ledger_with(n: &PartyNode, peer: Address) -> Option<(B256, LedgerPhase)> {
    n.inspect(|p| {
        p.ledgers()
            .find(|l| l.counterparty() == peer)
            .map(|l| (l.id(), l.phase()))
    })
    .await
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_killed_during_funding_and_defunding_loses_nothing() {
    let Some(dir) = artifacts_dir() else { return };
    let Some(anvil) = Anvil::start() else { return };
    let deployer = LocalSigner::from_hex(dev_key(0)).unwrap();
    let d = deploy(
        &anvil.url,
        &deployer.secret_bytes(),
        &NitroArtifacts::from_dir(&dir).unwrap(),
    )
    .await
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("hub.redb");
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut hub = Hub {
        cmd: hub_cmd(&anvil, &dir, &store, listen, &d),
        proc: None,
        address: Address::ZERO,
    };
    hub.start();
    let h = hub.address;
    let apps = (d.consensus_app, d.payment_app);
    let payer = peer(&anvil.url, d.nitro_adjudicator, apps).await;
    let payee = peer(&anvil.url, d.nitro_adjudicator, apps).await;

    // 1. The payee's ledger: kill once the hub has proposed it.
    assert_eq!(payee.net.connect(listen).await.unwrap(), h);
    payee.node.request_ledger(h).await.unwrap();
    until("the hub proposes a ledger", || async {
        ledger_with(&payee.node, h).await.is_some()
    })
    .await;
    hub.kill_and_restart("ledger proposed to the payee");
    until("payee ledger open", || async {
        matches!(
            ledger_with(&payee.node, h).await,
            Some((_, LedgerPhase::Open))
        )
    })
    .await;
    let (hub_ledger, _) = ledger_with(&payee.node, h).await.unwrap();
    assert_eq!(
        payee
            .chain
            .holdings(Address::ZERO, hub_ledger)
            .await
            .unwrap(),
        U256::from(HUB_DEPOSIT),
        "the hub deposited exactly once"
    );

    // 2. V: kill once the payer's guarantee is countersigned.
    assert_eq!(payer.net.connect(listen).await.unwrap(), h);
    payer.net.connect(payee.net.local_addr()).await.unwrap();
    let pl = payer
        .node
        .open_ledger(h, Address::ZERO, U256::from(PAYER_DEPOSIT), 3_600)
        .await
        .unwrap();
    until("payer ledger open", || async {
        ledger_with(&payer.node, h).await == Some((pl, LedgerPhase::Open))
    })
    .await;
    let v = payer
        .node
        .propose_virtual(&VirtualParams {
            hub: h,
            payee: payee.key.address(),
            channel_nonce: 7,
            app_definition: d.payment_app,
            challenge_duration: 3_600,
            asset: Address::ZERO,
            amount: U256::from(AMOUNT),
            fee: U256::from(FEE),
        })
        .await
        .unwrap();
    until_on(&payer.node, "payer's guarantee countersigned", |p| {
        p.channel(&v)
            .is_some_and(|c| c.is_guaranteed(Side::PayerSide))
    })
    .await;
    hub.kill_and_restart("payer side of V guaranteed");
    until_all([&payer.node, &payee.node], "V running", |p| {
        p.channel(&v).is_some_and(|c| c.is_running())
    })
    .await;
    for d in [40, 40, 40] {
        payer.node.pay(v, U256::from(d)).await.unwrap();
    }
    until_on(&payee.node, "vouchers received", |p| {
        p.channel(&v).map(|c| c.paid()) == Some(U256::from(PAID))
    })
    .await;

    // 3. Defund V: kill once the payer signed the final state.
    payer.node.close_virtual(v).await.unwrap();
    until_on(&payer.node, "payer signed the final state", |p| {
        p.channel(&v).is_some_and(|c| c.final_amount().is_some())
    })
    .await;
    hub.kill_and_restart("V's final state signed by the payer");
    until_all([&payer.node, &payee.node], "V defunded", |p| {
        p.channel(&v).is_some_and(|c| c.is_defunded())
    })
    .await;

    // 4. Close the ledgers: kill once the payee signed its ledger's final state.
    payer.node.close_ledger(pl).await.unwrap();
    payee.node.close_ledger(hub_ledger).await.unwrap();
    until("payee's ledger final state signed by both", || async {
        matches!(
            ledger_with(&payee.node, h).await,
            Some((_, LedgerPhase::Closed))
        )
    })
    .await;
    hub.kill_and_restart("payee ledger's final state signed");
    until_all([&payer.node, &payee.node], "ledgers paid out", |p| {
        p.ledgers().all(|l| l.chain().paid_out)
    })
    .await;
    let bal = |a: Address| {
        let c = payer.chain.clone();
        async move { c.balance(Address::ZERO, a).await.unwrap() }
    };
    assert_eq!(
        bal(payer.key.address()).await,
        U256::from(PAYER_DEPOSIT - PAID - FEE)
    );
    assert_eq!(bal(payee.key.address()).await, U256::from(PAID));
    assert_eq!(
        bal(h).await,
        U256::from(HUB_DEPOSIT + FEE),
        "hub: deposit + fee"
    );
    for l in [pl, hub_ledger] {
        assert!(
            payer
                .chain
                .holdings(Address::ZERO, l)
                .await
                .unwrap()
                .is_zero()
        );
    }
    assert_eq!(
        payer.chain.gas_used().len(),
        2,
        "the payer sent 2 transactions"
    );
    let role = payee
        .node
        .inspect(|p| p.ledger(&hub_ledger).map(|l| l.role()))
        .await;
    assert_eq!(role, Some(LedgerRole::Follower));
    // A graceful stop exits 0.
    let mut p = hub.proc.take().unwrap();
    p.terminate();
    assert!(p.child.wait().unwrap().success());
}

fn hub_cmd(
    anvil: &Anvil,
    artifacts: &Path,
    store: &Path,
    listen: SocketAddr,
    d: &payment_channel::chain::ethereum::Deployment,
) -> Vec<String> {
    [
        "hub",
        "--json",
        "--rpc",
        &anvil.url,
        "--key",
        dev_key(2),
        "--artifacts",
        &arg(artifacts),
        "--adjudicator",
        &d.nitro_adjudicator.to_string(),
        "--app",
        &d.payment_app.to_string(),
        "--consensus-app",
        &d.consensus_app.to_string(),
        "--listen",
        &listen.to_string(),
        "--store",
        &arg(store),
        "--confirmations",
        "0",
        "--watch-every",
        "100ms",
        "--resend-every",
        "300ms",
        "--max-channel-amount",
        "500wei",
        "--max-locked-per-ledger",
        "1000wei",
        "--ledger-deposit",
        "1000wei",
        "--fee",
        "2wei",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}
