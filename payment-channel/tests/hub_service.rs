//! The hub as a service (issue 15, item 2): [`PartyNode`]s over [`TcpNet`] on 127.0.0.1.
//!
//! - Hostile peers against a node's TCP side: a wrong handshake signature, a replayed proof, a
//!   forged envelope `from`, an oversized frame, garbage — each refused, and an honest peer's
//!   message delivered (so the refusals are not a dead socket).
//! - One payer paying 3 payees through one hub, every party a driver over real TCP, cooperative
//!   close of everything, on `SimulatedChain` and (when installed) on anvil with the real
//!   contracts: the payer sends exactly 2 transactions, every party's payout address ends with
//!   what the vouchers say, the hub nets the fees, and both backends end with the same figures.
//! - Issue 15's figure: the same life with N = 1, 3, 10 payees on anvil, printing each side's
//!   transactions and gas (`FIGURE hub N=..`); `gas.rs` prints the direct-channel counterpart.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use payment_channel::chain::Chain;
use payment_channel::ledger::LedgerPhase;
use payment_channel::party_node::tcp::{
    Frame, Inbound, RunningNode, TcpConfig, TcpNet, TcpNodeConfig, handshake_hash, start_node,
};
use payment_channel::party_node::{LedgerService, NodeConfig, NodeMessage, PartyNode};
use payment_channel::sign::{LocalSigner, Signer};
use payment_channel::test_utils::faulty::{Call, FaultyChain};
use payment_channel::virtual_channel::{
    Envelope, HubLimits, PartyConfig, Payload, VirtualBody, VirtualChannel, VirtualMessage,
    VirtualParams,
};
use payment_channel::{Address, B256, MemoryStore, SimulatedChain, U256};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

type Wire = Framed<TcpStream, LengthDelimitedCodec>;

fn u(n: u64) -> U256 {
    U256::from(n)
}

// ----- hostile peers over TCP -----------------------------------------------------------------

async fn listening(max_frame: usize) -> (TcpNet, mpsc::UnboundedReceiver<Inbound>, LocalSigner) {
    let key = LocalSigner::random();
    let config = TcpConfig::default()
        .with_max_frame(max_frame)
        .with_handshake_timeout(Duration::from_secs(5))
        .with_max_strikes(3);
    let (net, rx) = TcpNet::bind(
        Arc::new(key.clone()),
        "127.0.0.1:0".parse().unwrap(),
        config,
    )
    .await
    .unwrap();
    (net, rx, key)
}

async fn dial(at: SocketAddr) -> Wire {
    Framed::new(
        TcpStream::connect(at).await.unwrap(),
        LengthDelimitedCodec::new(),
    )
}

async fn send(w: &mut Wire, f: &Frame) {
    w.send(Bytes::from(serde_json::to_vec(f).unwrap()))
        .await
        .unwrap();
}

async fn recv(w: &mut Wire) -> Option<Frame> {
    let b = tokio::time::timeout(Duration::from_secs(5), w.next())
        .await
        .expect("the node answers or closes")?
        .ok()?;
    Some(serde_json::from_slice(&b).unwrap())
}

/// Whether the node closed the connection (reads until EOF or an error, at most 5 s).
async fn closed(w: &mut Wire) -> bool {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), w.next()).await {
            Err(_) => return false,
            Ok(None) | Ok(Some(Err(_))) => return true,
            Ok(Some(Ok(_))) => continue,
        }
    }
}

/// Hello as `claimed`, then a proof signed by `signer` over the node's nonce; returns the wire
/// and the node's hello nonce and our proof.
async fn handshake_as(
    at: SocketAddr,
    claimed: Address,
    signer: &LocalSigner,
    node: Address,
) -> (Wire, payment_channel::sign::Signature) {
    let mut w = dial(at).await;
    let nonce = B256::repeat_byte(7);
    send(
        &mut w,
        &Frame::Hello {
            address: claimed,
            nonce,
        },
    )
    .await;
    let Some(Frame::Hello {
        address,
        nonce: theirs,
    }) = recv(&mut w).await
    else {
        panic!("no hello");
    };
    assert_eq!(address, node);
    let Some(Frame::Proof { .. }) = recv(&mut w).await else {
        panic!("no proof");
    };
    let sig = signer
        .sign_eth_message(&handshake_hash(claimed, node, &nonce, &theirs))
        .unwrap();
    send(&mut w, &Frame::Proof { signature: sig }).await;
    (w, sig)
}

/// A random peer with a completed, correctly signed handshake to the node at `net`.
async fn honest_session(net: &TcpNet, node_key: &LocalSigner) -> (LocalSigner, Wire) {
    let peer = LocalSigner::random();
    let (w, _) = handshake_as(net.local_addr(), peer.address(), &peer, node_key.address()).await;
    (peer, w)
}

/// Sends an envelope frame claiming to come `from` to `to`.
async fn send_message(w: &mut Wire, from: Address, to: Address) {
    send(w, &Frame::Message(envelope(from, to))).await;
}

/// The next message the node delivers (within 5 s).
async fn delivered(rx: &mut mpsc::UnboundedReceiver<Inbound>) -> Inbound {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap()
        .unwrap()
}

fn envelope(from: Address, to: Address) -> NodeMessage {
    NodeMessage::Envelope(Box::new(Envelope {
        from,
        to,
        payload: Payload::Virtual(VirtualMessage {
            channel_id: B256::repeat_byte(9),
            body: VirtualBody::RequestFinal,
        }),
    }))
}

async fn nothing_delivered(rx: &mut mpsc::UnboundedReceiver<Inbound>) -> bool {
    tokio::time::timeout(Duration::from_millis(300), rx.recv())
        .await
        .is_err()
}

#[tokio::test]
async fn honest_peer_is_authenticated_and_delivered() {
    let (net, mut rx, node_key) = listening(1 << 16).await;
    let (peer, mut w) = honest_session(&net, &node_key).await;
    send_message(&mut w, peer.address(), node_key.address()).await;
    let got = delivered(&mut rx).await;
    assert_eq!(got.from, peer.address());
    assert_eq!(got.msg, envelope(peer.address(), node_key.address()));
    assert!(net.is_connected(peer.address()));
    assert_eq!(net.strikes(peer.address()), 0);
}

#[tokio::test]
async fn wrong_signature_is_refused() {
    let (net, mut rx, node_key) = listening(1 << 16).await;
    let claimed = LocalSigner::random();
    let other = LocalSigner::random();
    let (mut w, _) = handshake_as(
        net.local_addr(),
        claimed.address(),
        &other,
        node_key.address(),
    )
    .await;
    send_message(&mut w, claimed.address(), node_key.address()).await;
    assert!(closed(&mut w).await, "connection kept after a wrong proof");
    assert!(nothing_delivered(&mut rx).await);
    assert!(!net.is_connected(claimed.address()));
}

#[tokio::test]
async fn replayed_proof_is_refused() {
    let (net, mut rx, node_key) = listening(1 << 16).await;
    let peer = LocalSigner::random();
    let (_first, proof) =
        handshake_as(net.local_addr(), peer.address(), &peer, node_key.address()).await;
    // A second session by someone who saw the first: same hello, the recorded proof.
    let mut w = dial(net.local_addr()).await;
    send(
        &mut w,
        &Frame::Hello {
            address: peer.address(),
            nonce: B256::repeat_byte(7),
        },
    )
    .await;
    assert!(matches!(recv(&mut w).await, Some(Frame::Hello { .. })));
    assert!(matches!(recv(&mut w).await, Some(Frame::Proof { .. })));
    send(&mut w, &Frame::Proof { signature: proof }).await;
    send_message(&mut w, peer.address(), node_key.address()).await;
    assert!(closed(&mut w).await, "a replayed proof was accepted");
    assert!(nothing_delivered(&mut rx).await);
}

#[tokio::test]
async fn forged_from_is_dropped_and_struck_until_disconnect() {
    let (net, mut rx, node_key) = listening(1 << 16).await;
    let peer = LocalSigner::random();
    let victim = LocalSigner::random().address();
    let (mut w, _) =
        handshake_as(net.local_addr(), peer.address(), &peer, node_key.address()).await;
    for _ in 0..3 {
        send_message(&mut w, victim, node_key.address()).await;
    }
    assert!(closed(&mut w).await, "still connected after 3 forgeries");
    assert!(
        nothing_delivered(&mut rx).await,
        "a forged envelope was delivered"
    );
    assert_eq!(net.strikes(peer.address()), 3);
    // Struck out: a new, correctly signed session is refused too.
    let (mut again, _) =
        handshake_as(net.local_addr(), peer.address(), &peer, node_key.address()).await;
    send_message(&mut again, peer.address(), node_key.address()).await;
    assert!(closed(&mut again).await);
    assert!(nothing_delivered(&mut rx).await);
}

#[tokio::test]
async fn oversized_frame_closes_the_connection() {
    let (net, mut rx, node_key) = listening(1024).await;
    let (peer, mut w) = honest_session(&net, &node_key).await;
    w.send(Bytes::from(vec![b' '; 4096])).await.unwrap();
    assert!(closed(&mut w).await, "an oversized frame was read");
    assert!(nothing_delivered(&mut rx).await);
    assert_eq!(net.strikes(peer.address()), 1);
}

#[tokio::test]
async fn garbage_is_struck() {
    let (net, mut rx, node_key) = listening(1 << 16).await;
    let (peer, mut w) = honest_session(&net, &node_key).await;
    w.send(Bytes::from_static(b"\x00\xffnot json"))
        .await
        .unwrap();
    send(
        &mut w,
        &Frame::Hello {
            address: peer.address(),
            nonce: B256::ZERO,
        },
    )
    .await;
    // Still below the limit: an honest message after two strikes goes through.
    send_message(&mut w, peer.address(), node_key.address()).await;
    let got = delivered(&mut rx).await;
    assert_eq!(got.from, peer.address());
    assert_eq!(net.strikes(peer.address()), 2);
    w.send(Bytes::from_static(b"{}")).await.unwrap();
    assert!(closed(&mut w).await);
    // Garbage before the handshake: refused, no strike against anybody's address.
    let mut raw = dial(net.local_addr()).await;
    raw.send(Bytes::from_static(b"garbage")).await.unwrap();
    assert!(closed(&mut raw).await);
}

// ----- one payer, one hub, three payees ---------------------------------------------------------

/// The chain handles and contracts of one backend.
struct Backend {
    /// Chain accounts: payer, hub, payee 0..N (they send transactions; their keys are not the
    /// parties' signing keys, so payouts land on addresses that never pay gas).
    chains: Vec<Arc<FaultyChain<Arc<dyn Chain>>>>,
    consensus_app: Address,
    payment_app: Address,
    /// Events are applied after this many blocks.
    confirmations: u64,
}

const DURATION: u64 = 3_600;
const PAYER_DEPOSIT: u64 = 2_000;
const HUB_DEPOSIT: u64 = 1_000;
const AMOUNT: u64 = 300;
const FEE: u64 = 2;
/// The most payees a test here runs.
const MAX_PAYEES: usize = 10;

/// The payer's deposit for `n` payees: `PAYER_DEPOSIT`, or enough to fund `n` channels of
/// `AMOUNT` plus `FEE` when that is more.
fn payer_deposit(n: usize) -> u64 {
    PAYER_DEPOSIT.max(n as u64 * (AMOUNT + FEE))
}

#[derive(Debug, PartialEq, Eq)]
struct Report {
    payer_txs: usize,
    /// Balance of each party's payout (signing) address at the end: payer, hub, payees.
    payouts: Vec<U256>,
    /// `(who, call, gas)`.
    gas: Vec<(usize, String, u64)>,
}

struct Party3 {
    node: PartyNode,
    net: TcpNet,
    key: LocalSigner,
}

async fn start(b: &Backend, i: usize, hub: Option<(HubLimits, LedgerService)>) -> Party3 {
    let key = LocalSigner::random();
    let signer: Arc<dyn Signer> = Arc::new(key.clone());
    let party = PartyConfig::new(b.consensus_app, b.payment_app)
        .with_hub(hub.as_ref().map(|(l, _)| l.clone()));
    let config = NodeConfig::default()
        .with_confirmations(Some(b.confirmations))
        .with_max_retry_interval(5)
        .with_ledger_service(hub.map(|(_, s)| s));
    let tcp = TcpNodeConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        Duration::from_millis(40),
        Duration::from_millis(500),
    );
    let chain: Arc<dyn Chain> = b.chains[i].clone();
    let store = Arc::new(MemoryStore::new());
    let RunningNode { node, net, .. } = start_node(tcp, signer, party, chain, store, config)
        .await
        .unwrap();
    Party3 { node, net, key }
}

/// Party 1 as the hub: up to 500 per channel, `HUB_DEPOSIT` locked per ledger, a fee of at
/// least `FEE`, and ledgers of `HUB_DEPOSIT` opened on request.
async fn start_hub(b: &Backend) -> Party3 {
    let limits = HubLimits {
        max_amount: u(500),
        max_locked_per_ledger: u(HUB_DEPOSIT),
        min_fee: u(FEE),
    };
    let service = LedgerService {
        asset: Address::ZERO,
        deposit: u(HUB_DEPOSIT),
        challenge_duration: DURATION,
        // The payer's ledger and one per payee, up to `MAX_PAYEES`.
        max_ledgers: MAX_PAYEES + 1,
    };
    start(b, 1, Some((limits, service))).await
}

async fn until<Fut: Future<Output = bool>>(what: &str, f: impl FnMut() -> Fut) {
    payment_channel::test_utils::until(what, Duration::from_secs(90), f).await
}

/// Waits until `holds` is true of virtual channel `vs[i]` at the payer, at the hub and at payee
/// `i`, for every `i`.
async fn until_every_virtual(
    what: &str,
    vs: &[B256],
    [payer, hub]: [&Party3; 2],
    payees: &[Party3],
    holds: impl Fn(&VirtualChannel) -> bool + Copy,
) {
    for (v, payee) in vs.iter().zip(payees) {
        for n in [&payer.node, &hub.node, &payee.node] {
            until(what, || async {
                n.inspect(|p| p.channel(v).is_some_and(holds)).await
            })
            .await;
        }
    }
}

async fn ledger_open_with(p: &PartyNode, peer: Address) -> Option<B256> {
    p.inspect(|party| {
        party
            .ledgers()
            .find(|l| l.counterparty() == peer && l.phase() == LedgerPhase::Open)
            .map(|l| l.id())
    })
    .await
}

async fn paid_out(p: &PartyNode) -> bool {
    p.inspect(|party| party.ledgers().all(|l| l.chain().paid_out))
        .await
}

/// The whole cooperative life: ledgers, one virtual channel per payee (payee `i` is paid
/// `pays[i]`), vouchers, closes. `b` has a chain handle for the payer, the hub and each payee.
async fn one_payer_n_payees(b: Backend, pays: &[u64]) -> Report {
    assert_eq!(b.chains.len(), 2 + pays.len(), "a chain handle per party");
    let hub = start_hub(&b).await;
    let payer = start(&b, 0, None).await;
    let mut payees = Vec::new();
    for i in 0..pays.len() {
        payees.push(start(&b, 2 + i, None).await);
    }
    let h = hub.key.address();
    // Payees reach the hub and ask for a ledger; the payer reaches the hub and every payee.
    for p in &payees {
        assert_eq!(p.net.connect(hub.net.local_addr()).await.unwrap(), h);
        p.node.request_ledger(h).await.unwrap();
    }
    assert_eq!(payer.net.connect(hub.net.local_addr()).await.unwrap(), h);
    for p in &payees {
        payer.net.connect(p.net.local_addr()).await.unwrap();
    }
    let pl = payer
        .node
        .open_ledger(h, Address::ZERO, u(payer_deposit(pays.len())), DURATION)
        .await
        .unwrap();
    until("payer ledger open", || async {
        ledger_open_with(&payer.node, h).await == Some(pl)
    })
    .await;
    let mut payee_ledgers = Vec::new();
    for p in &payees {
        until("payee ledger open", || async {
            ledger_open_with(&p.node, h).await.is_some()
        })
        .await;
        payee_ledgers.push(ledger_open_with(&p.node, h).await.unwrap());
    }
    let mut vs = Vec::new();
    for (i, p) in payees.iter().enumerate() {
        let params = VirtualParams {
            hub: h,
            payee: p.key.address(),
            channel_nonce: 1_000 + i as u64,
            app_definition: b.payment_app,
            challenge_duration: DURATION,
            asset: Address::ZERO,
            amount: u(AMOUNT),
            fee: u(FEE),
        };
        vs.push(payer.node.propose_virtual(&params).await.unwrap());
    }
    until_every_virtual(
        "virtual channel running",
        &vs,
        [&payer, &hub],
        &payees,
        |c| c.is_running(),
    )
    .await;
    for (i, v) in vs.iter().enumerate() {
        let third = pays[i] / 3;
        for d in [third, third, pays[i] - 2 * third] {
            payer.node.pay(*v, u(d)).await.unwrap();
        }
        until("vouchers received", || async {
            payees[i]
                .node
                .inspect(|p| p.channel(v).map(|c| c.paid()) == Some(u(pays[i])))
                .await
        })
        .await;
    }
    for v in &vs {
        payer.node.close_virtual(*v).await.unwrap();
    }
    until_every_virtual("defunded", &vs, [&payer, &hub], &payees, |c| {
        c.is_defunded()
    })
    .await;
    payer.node.close_ledger(pl).await.unwrap();
    for (p, l) in payees.iter().zip(&payee_ledgers) {
        p.node.close_ledger(*l).await.unwrap();
    }
    for n in [&payer.node, &hub.node]
        .into_iter()
        .chain(payees.iter().map(|p| &p.node))
    {
        until("every ledger paid out", || paid_out(n)).await;
    }
    let mut payouts = Vec::new();
    for k in [&payer.key, &hub.key]
        .into_iter()
        .chain(payees.iter().map(|p| &p.key))
    {
        payouts.push(
            b.chains[0]
                .balance(Address::ZERO, k.address())
                .await
                .unwrap(),
        );
    }
    let mut gas = Vec::new();
    for (who, c) in b.chains.iter().enumerate() {
        for (call, g) in c.gas_used() {
            gas.push((who, format!("{call:?}"), g));
        }
    }
    for p in [&payer, &hub].into_iter().chain(payees.iter()) {
        p.net.shutdown();
    }
    Report {
        payer_txs: b.chains[0].gas_used().len(),
        payouts,
        gas,
    }
}

fn check(r: &Report, pays: &[u64]) {
    let total: u64 = pays.iter().sum();
    let n = pays.len() as u64;
    assert_eq!(r.payer_txs, 2, "the payer sends exactly 2 transactions");
    assert_eq!(
        r.payouts[0],
        u(payer_deposit(pays.len()) - total - n * FEE),
        "payer"
    );
    assert_eq!(
        r.payouts[1],
        u(n * HUB_DEPOSIT + n * FEE),
        "hub: its deposits back plus the fees"
    );
    for (i, pay) in pays.iter().enumerate() {
        assert_eq!(r.payouts[2 + i], u(*pay), "payee {i}");
    }
}

const PAYS: [u64; 3] = [30, 0, 300];

fn sim_backend() -> Backend {
    sim_backend_and_clock().0
}

fn sim_backend_and_clock() -> (Backend, SimulatedChain) {
    sim_backend_for(3)
}

/// A simulator with chain handles for a payer, a hub and `payees` payees.
fn sim_backend_for(payees: usize) -> (Backend, SimulatedChain) {
    let sim = SimulatedChain::new();
    let ether = U256::from(10u64).pow(U256::from(18u8));
    let chains = (0..2 + payees)
        .map(|_| {
            let a = LocalSigner::random().address();
            sim.fund(a, ether).unwrap();
            let c: Arc<dyn Chain> = Arc::new(sim.handle(a));
            Arc::new(FaultyChain::new(c))
        })
        .collect();
    let b = Backend {
        chains,
        consensus_app: sim.consensus_app(),
        payment_app: sim.app_definition(),
        confirmations: 0,
    };
    (b, sim)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_payer_three_payees_over_tcp_on_the_simulator() {
    let r = one_payer_n_payees(sim_backend(), &PAYS).await;
    check(&r, &PAYS);
}

/// A chain account with 1 000 ether for each of a payer, a hub and `payees` payees on `anvil`
/// (random keys funded with `anvil_setBalance`: anvil has only 10 dev accounts), and the payer's
/// account address.
#[cfg(feature = "ethereum")]
async fn anvil_backend(
    anvil: &payment_channel::test_utils::anvil::Anvil,
    d: &payment_channel::chain::ethereum::Deployment,
    payees: usize,
) -> (Backend, Address) {
    use payment_channel::chain::EthereumChain;
    let mut chains = Vec::new();
    let accounts: Vec<LocalSigner> = (0..2 + payees).map(|_| LocalSigner::random()).collect();
    for k in &accounts {
        anvil
            .rpc(
                "anvil_setBalance",
                &format!("[\"{}\", \"0x3635c9adc5dea00000\"]", k.address()),
            )
            .unwrap();
        let c = EthereumChain::connect(&anvil.url, &k.secret_bytes(), d.nitro_adjudicator)
            .await
            .unwrap();
        let c: Arc<dyn Chain> = Arc::new(c);
        chains.push(Arc::new(FaultyChain::new(c)));
    }
    let b = Backend {
        chains,
        consensus_app: d.consensus_app,
        payment_app: d.payment_app,
        confirmations: 0,
    };
    (b, accounts[0].address())
}

#[cfg(feature = "ethereum")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_payer_three_payees_over_tcp_on_anvil_like_the_simulator() {
    let Some((anvil, d, _)) = payment_channel::test_utils::anvil::deployed().await else {
        return;
    };
    let (b, payer_account) = anvil_backend(&anvil, &d, 3).await;
    let r = one_payer_n_payees(b, &PAYS).await;
    for (who, call, gas) in &r.gas {
        println!("GAS hub-service party {who} {call} {gas}");
    }
    check(&r, &PAYS);
    // The chain agrees: the payer account's nonce is 2.
    let nonce = anvil
        .rpc(
            "eth_getTransactionCount",
            &format!("[\"{payer_account}\", \"latest\"]"),
        )
        .unwrap();
    assert_eq!(nonce.as_str(), Some("0x2"));
    let sim = one_payer_n_payees(sim_backend(), &PAYS).await;
    assert_eq!((sim.payer_txs, &sim.payouts), (r.payer_txs, &r.payouts));
    let calls = |r: &Report| -> Vec<(usize, String)> {
        let mut v: Vec<_> = r.gas.iter().map(|(w, c, _)| (*w, c.clone())).collect();
        v.sort();
        v
    };
    assert_eq!(
        calls(&sim),
        calls(&r),
        "the same transactions on both backends"
    );
}

/// Issue 15's figure, measured: the buyer's (payer's) transactions and gas for a download paid
/// to N = 1, 3, 10 seeders (payees) through one hub, every party a driver over TCP on anvil with
/// the real contracts. One line per N: `FIGURE hub N=.. payer txs .. gas .. | hub txs .. gas ..
/// | payees txs .. gas ..` (payees: the sum over all of them). The payer sends exactly 2
/// transactions whatever N, and every payout is exact.
#[cfg(feature = "ethereum")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn figure_hub_gas_for_1_3_10_payees_on_anvil() {
    let Some((anvil, d, _)) = payment_channel::test_utils::anvil::deployed().await else {
        return;
    };
    for n in [1usize, 3, MAX_PAYEES] {
        // Every payee paid something, each a different amount.
        let pays: Vec<u64> = (0..n as u64).map(|i| AMOUNT - 10 * i).collect();
        let (b, payer_account) = anvil_backend(&anvil, &d, n).await;
        let r = one_payer_n_payees(b, &pays).await;
        for (who, call, gas) in &r.gas {
            println!("GAS hub N={n} party {who} {call} {gas}");
        }
        check(&r, &pays);
        let sum = |who: &dyn Fn(usize) -> bool| -> (usize, u64) {
            let g: Vec<u64> = r
                .gas
                .iter()
                .filter(|(w, _, _)| who(*w))
                .map(|(_, _, g)| *g)
                .collect();
            (g.len(), g.iter().sum())
        };
        let (payer_txs, payer_gas) = sum(&|w| w == 0);
        let (hub_txs, hub_gas) = sum(&|w| w == 1);
        let (payees_txs, payees_gas) = sum(&|w| w >= 2);
        println!(
            "FIGURE hub N={n} payer txs {payer_txs} gas {payer_gas} | hub txs {hub_txs} gas \
             {hub_gas} | payees txs {payees_txs} gas {payees_gas}"
        );
        assert_eq!(
            payer_txs, 2,
            "N={n}: the payer sends exactly 2 transactions"
        );
        // The chain agrees: the payer account's nonce is 2.
        let nonce = anvil
            .rpc(
                "eth_getTransactionCount",
                &format!("[\"{payer_account}\", \"latest\"]"),
            )
            .unwrap();
        assert_eq!(nonce.as_str(), Some("0x2"), "N={n}");
    }
}

/// The payee takes V on chain against a silent payer; the drivers do the rest (V's challenge
/// with the redemption, the ledgers' challenges timed after V's, reclaims by whoever comes first
/// — the other one learns it from the fingerprint — and payouts): everybody ends with exactly
/// what the cooperative close would have given them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payee_redeems_on_chain_against_a_silent_payer_through_the_drivers() {
    let (b, sim) = sim_backend_and_clock();
    let hub = start_hub(&b).await;
    let payer = start(&b, 0, None).await;
    let payee = start(&b, 2, None).await;
    let h = hub.key.address();
    payee.net.connect(hub.net.local_addr()).await.unwrap();
    payee.node.request_ledger(h).await.unwrap();
    payer.net.connect(hub.net.local_addr()).await.unwrap();
    payer.net.connect(payee.net.local_addr()).await.unwrap();
    let pl = payer
        .node
        .open_ledger(h, Address::ZERO, u(PAYER_DEPOSIT), DURATION)
        .await
        .unwrap();
    until("ledgers open", || async {
        ledger_open_with(&payer.node, h).await == Some(pl)
            && ledger_open_with(&payee.node, h).await.is_some()
    })
    .await;
    let hl = ledger_open_with(&payee.node, h).await.unwrap();
    let v = payer
        .node
        .propose_virtual(&VirtualParams {
            hub: h,
            payee: payee.key.address(),
            channel_nonce: 5,
            app_definition: b.payment_app,
            challenge_duration: DURATION,
            asset: Address::ZERO,
            amount: u(AMOUNT),
            fee: u(FEE),
        })
        .await
        .unwrap();
    // Running at the payer too: the payee may see all signatures before the payer does.
    for n in [&payer.node, &payee.node] {
        until("V running", || async {
            n.inspect(|p| p.channel(&v).is_some_and(|c| c.is_running()))
                .await
        })
        .await;
    }
    payer.node.pay(v, u(40)).await.unwrap();
    until("voucher received", || async {
        payee
            .node
            .inspect(|p| p.channel(&v).map(|c| c.paid()) == Some(u(40)))
            .await
    })
    .await;
    // The payer goes silent (it still watches the chain, as any party's driver does).
    payer.net.shutdown();
    payee.node.challenge_virtual(v).await.unwrap();
    let chain = b.chains[2].clone();
    let finalizes_at = |id: B256| {
        let chain = chain.clone();
        async move { chain.status(id).await.unwrap().finalizes_at }
    };
    // Wait for the on-chain effect: V and both ledgers challenged.
    until("V and both ledgers challenged on chain", || async {
        finalizes_at(v).await != 0 && finalizes_at(hl).await != 0 && finalizes_at(pl).await != 0
    })
    .await;
    assert!(
        finalizes_at(hl).await >= finalizes_at(v).await,
        "§0.4: L(H,B) after V"
    );
    assert!(
        finalizes_at(pl).await >= finalizes_at(v).await,
        "§0.4: L(P,H) after V"
    );
    let last = finalizes_at(hl).await.max(finalizes_at(pl).await);
    let now = chain.now().await.unwrap();
    sim.advance_time(last.saturating_sub(now) + 1);
    for n in [&payer.node, &hub.node, &payee.node] {
        until("every ledger paid out", || paid_out(n)).await;
    }
    let bal = |a: Address| {
        let chain = chain.clone();
        async move { chain.balance(Address::ZERO, a).await.unwrap() }
    };
    assert_eq!(bal(payee.key.address()).await, u(40), "payee: its voucher");
    assert_eq!(bal(payer.key.address()).await, u(PAYER_DEPOSIT - 40 - FEE));
    assert_eq!(
        bal(h).await,
        u(HUB_DEPOSIT + FEE),
        "hub: its deposit and the fee"
    );
    for id in [v, pl, hl] {
        assert!(chain.holdings(Address::ZERO, id).await.unwrap().is_zero());
    }
    let reclaims: usize = b
        .chains
        .iter()
        .map(|c| {
            c.gas_used()
                .iter()
                .filter(|(call, _)| *call == Call::Reclaim)
                .count()
        })
        .sum();
    assert_eq!(reclaims, 2, "one reclaim per ledger, none sent twice");
    for p in [&payer, &hub, &payee] {
        p.net.shutdown();
    }
}
