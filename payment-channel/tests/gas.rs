//! Gas each party pays per channel lifecycle on anvil with the published Nitro contracts (sum of
//! the `gasUsed` of the receipts of the transactions its `Client` sent). Prints one table line per
//! lifecycle and party (`GAS <lifecycle> <party>: <total> <transactions>`), and checks that no
//! party pays for a transaction that pays it nothing.
//! Also one buyer with direct channels to N = 1, 3, 10 sellers (`FIGURE direct N=..`, issue 15).
#![cfg(all(feature = "ethereum", feature = "test-utils"))]

use std::sync::Arc;

use payment_channel::chain::ethereum::Deployment;
use payment_channel::chain::{Chain, EthereumChain};
use payment_channel::client::{Client, ClientConfig, ClientEvent};
use payment_channel::message::Envelope;
use payment_channel::policy::JoinPolicy;
use payment_channel::sign::{LocalSigner, Signer};
use payment_channel::test_utils::faulty::FaultyChain;
use payment_channel::test_utils::net::MemoryNet;
use payment_channel::{Address, B256, MemoryStore, U256};
use tokio::sync::mpsc;

fn u(x: u64) -> U256 {
    U256::from(x)
}

/// A chain handle that records the gas of the transactions sent through it.
type GasMeter = FaultyChain<Arc<EthereumChain>>;

fn total(meter: &GasMeter) -> u64 {
    meter.gas_used().iter().map(|(_, g)| g).sum()
}

fn list(meter: &GasMeter) -> String {
    let parts: Vec<String> = meter
        .gas_used()
        .iter()
        .map(|(call, g)| format!("{call:?} {g}"))
        .collect();
    format!("[{}]", parts.join(", "))
}

struct Party {
    client: Client,
    _events: mpsc::UnboundedReceiver<ClientEvent>,
    inbox: mpsc::UnboundedReceiver<Envelope>,
    meter: Arc<GasMeter>,
}

async fn pump(a: &mut Party, b: &mut Party) {
    loop {
        let mut moved = false;
        for n in [&mut *a, &mut *b] {
            while let Ok(env) = n.inbox.try_recv() {
                moved = true;
                let _ = n.client.push_message(env).await;
            }
        }
        if !moved {
            break;
        }
    }
}

/// Dev account `i`'s secret key.
fn tx_key(i: usize) -> B256 {
    LocalSigner::from_hex(payment_channel::test_utils::anvil::DEV_KEYS[i])
        .unwrap()
        .secret_bytes()
}

struct Setup {
    _anvil: payment_channel::test_utils::anvil::Anvil,
    buyer: Party,
    seller: Party,
    chain: Arc<EthereumChain>,
}

/// A client on `net` that signs with `signer` and sends its transactions from `tx_key` to
/// `anvil`, through a gas meter.
async fn party(
    anvil: &payment_channel::test_utils::anvil::Anvil,
    deployment: &Deployment,
    tx_key: B256,
    signer: LocalSigner,
    policy: Option<JoinPolicy>,
    net: &Arc<MemoryNet>,
) -> Party {
    let chain = Arc::new(
        EthereumChain::connect(&anvil.url, &tx_key, deployment.nitro_adjudicator)
            .await
            .unwrap(),
    );
    let meter = Arc::new(GasMeter::new(chain));
    let signer = Arc::new(signer);
    let inbox = net.join(signer.address());
    let config = ClientConfig::new(deployment.payment_app)
        .with_challenge_duration(600)
        .with_auto_join(policy)
        // Anvil mines only on transactions: nothing would confirm the last one.
        .with_confirmations(Some(0));
    let (client, events) = Client::open(
        config,
        signer,
        meter.clone(),
        Arc::new(MemoryStore::new()),
        Some(net.transport()),
    )
    .await
    .unwrap();
    Party {
        client,
        _events: events,
        inbox,
        meter,
    }
}

/// A fresh anvil with the contracts, a buyer (payer, auto-joins) and a seller (payee).
async fn setup() -> Option<Setup> {
    use payment_channel::chain::ethereum::{NitroArtifacts, deploy};
    use payment_channel::test_utils::anvil::{Anvil, artifacts_dir};
    let artifacts = artifacts_dir()?;
    let anvil = Anvil::start()?;
    let contracts = NitroArtifacts::from_dir(&artifacts).unwrap();
    let deployment = deploy(&anvil.url, &tx_key(0), &contracts).await.unwrap();
    let net = Arc::new(MemoryNet::default());
    let mut parties = Vec::new();
    for (i, seed, policy) in [
        (
            1,
            0x41u8,
            Some(JoinPolicy::new(
                deployment.payment_app,
                u(10_000),
                u(15_000),
            )),
        ),
        (2, 0x42u8, None),
    ] {
        let signer = LocalSigner::from_bytes(&B256::repeat_byte(seed)).unwrap();
        parties.push(party(&anvil, &deployment, tx_key(i), signer, policy, &net).await);
    }
    let seller = parties.pop().unwrap();
    let buyer = parties.pop().unwrap();
    let chain = seller.meter.inner().clone();
    Some(Setup {
        _anvil: anvil,
        buyer,
        seller,
        chain,
    })
}

/// Opens a 10 000 wei channel and pays `payments`.
async fn open(s: &mut Setup, payments: &[u64]) -> B256 {
    let id = s
        .seller
        .client
        .create(s.buyer.client.address(), u(10_000), None)
        .await
        .unwrap();
    pump(&mut s.buyer, &mut s.seller).await;
    for &p in payments {
        s.buyer.client.send_payment(id, u(p)).await.unwrap();
    }
    pump(&mut s.buyer, &mut s.seller).await;
    s.seller.client.watch_chain().await.unwrap();
    id
}

fn report(lifecycle: &str, s: &Setup) -> (u64, u64) {
    for (party, p) in [("buyer", &s.buyer), ("seller", &s.seller)] {
        println!(
            "GAS {lifecycle} {party}: {} {}",
            total(&p.meter),
            list(&p.meter)
        );
    }
    (total(&s.buyer.meter), total(&s.seller.meter))
}

#[tokio::test]
async fn gas_per_party_per_lifecycle() {
    // Happy close: payments, cooperative close, conclude, payout.
    let Some(mut s) = setup().await else {
        return;
    };
    let id = open(&mut s, &[500; 3]).await;
    s.buyer.client.close(id).await.unwrap();
    pump(&mut s.buyer, &mut s.seller).await;
    let _ = s.buyer.client.watch_chain().await;
    let _ = s.seller.client.watch_chain().await;
    assert!(s.seller.client.channel_info(id).await.unwrap().settled);
    assert_eq!(
        s.chain.holdings(Address::ZERO, id).await.unwrap(),
        U256::ZERO
    );
    report("happy-close", &s);

    // Vanished buyer: deposits, pays nothing, disappears. The seller tries to close, then to
    // challenge; a challenge would only refund the buyer at the seller's expense.
    let Some(mut s) = setup().await else {
        return;
    };
    let id = open(&mut s, &[]).await;
    let _ = s.seller.client.close(id).await;
    let _ = s.seller.client.challenge(id).await;
    s.chain.increase_time(601).await.unwrap();
    let _ = s.seller.client.watch_chain().await;
    let (_, seller) = report("vanished-buyer", &s);
    assert_eq!(seller, 0, "the seller pays nothing to refund the buyer");

    // Vanished seller: the buyer paid 1 500 of 10 000 and the seller disappears; the buyer
    // challenges with the postfund, waits, and pays out.
    let Some(mut s) = setup().await else {
        return;
    };
    let id = open(&mut s, &[500; 3]).await;
    s.buyer.client.challenge(id).await.unwrap();
    s.chain.increase_time(601).await.unwrap();
    let _ = s.buyer.client.watch_chain().await;
    assert_eq!(
        s.chain.holdings(Address::ZERO, id).await.unwrap(),
        U256::ZERO
    );
    report("vanished-seller", &s);
}

/// Delivers every queued message between the buyer and the sellers until none is left.
async fn pump_all(buyer: &mut Party, sellers: &mut [Party]) {
    loop {
        let mut moved = false;
        for n in std::iter::once(&mut *buyer).chain(sellers.iter_mut()) {
            while let Ok(env) = n.inbox.try_recv() {
                moved = true;
                let _ = n.client.push_message(env).await;
            }
        }
        if !moved {
            break;
        }
    }
}

/// Issue 15's figure, the direct side, measured: one buyer with a direct channel of 10 000 wei
/// to each of N = 1, 3, 10 sellers on anvil, 1 500 paid on each, cooperative close. One line per
/// N in the format of `hub_service.rs`'s `FIGURE hub` lines (no hub: 0). The buyer sends exactly
/// N transactions (its deposits), each seller its conclude and payout, and every payout is exact.
#[tokio::test]
async fn figure_direct_gas_for_1_3_10_sellers() {
    let Some((anvil, deployment, _)) = payment_channel::test_utils::anvil::deployed().await else {
        return;
    };
    const DEPOSIT: u64 = 10_000;
    const PAID: u64 = 1_500;
    for n in [1usize, 3, 10] {
        let net = Arc::new(MemoryNet::default());
        // Fresh transaction accounts (anvil has 10 dev accounts) and fresh signing addresses,
        // which receive the payouts and never pay gas.
        let funded = || {
            let k = LocalSigner::random();
            anvil
                .rpc(
                    "anvil_setBalance",
                    &format!("[\"{}\", \"0x3635c9adc5dea00000\"]", k.address()),
                )
                .unwrap();
            k.secret_bytes()
        };
        let policy = JoinPolicy::new(deployment.payment_app, u(DEPOSIT), u(DEPOSIT * n as u64));
        let buyer_key = funded();
        let mut buyer = party(
            &anvil,
            &deployment,
            buyer_key,
            LocalSigner::random(),
            Some(policy),
            &net,
        )
        .await;
        let mut sellers = Vec::new();
        for _ in 0..n {
            let k = funded();
            sellers.push(party(&anvil, &deployment, k, LocalSigner::random(), None, &net).await);
        }
        let mut ids = Vec::new();
        for s in &sellers {
            ids.push(
                s.client
                    .create(buyer.client.address(), u(DEPOSIT), None)
                    .await
                    .unwrap(),
            );
        }
        pump_all(&mut buyer, &mut sellers).await;
        for id in &ids {
            for _ in 0..3 {
                buyer.client.send_payment(*id, u(PAID / 3)).await.unwrap();
            }
        }
        pump_all(&mut buyer, &mut sellers).await;
        for s in &sellers {
            s.client.watch_chain().await.unwrap();
        }
        for id in &ids {
            buyer.client.close(*id).await.unwrap();
        }
        pump_all(&mut buyer, &mut sellers).await;
        let _ = buyer.client.watch_chain().await;
        for s in &sellers {
            let _ = s.client.watch_chain().await;
        }
        let chain = buyer.meter.inner().clone();
        for (s, id) in sellers.iter().zip(&ids) {
            assert!(s.client.channel_info(*id).await.unwrap().settled, "N={n}");
            assert_eq!(
                chain.holdings(Address::ZERO, *id).await.unwrap(),
                U256::ZERO
            );
            assert_eq!(
                chain
                    .balance(Address::ZERO, s.client.address())
                    .await
                    .unwrap(),
                u(PAID),
                "N={n}: the seller's payout"
            );
        }
        assert_eq!(
            chain
                .balance(Address::ZERO, buyer.client.address())
                .await
                .unwrap(),
            u((DEPOSIT - PAID) * n as u64),
            "N={n}: the buyer's refunds"
        );
        let buyer_txs = buyer.meter.gas_used().len();
        let sellers_txs: usize = sellers.iter().map(|s| s.meter.gas_used().len()).sum();
        let sellers_gas: u64 = sellers.iter().map(|s| total(&s.meter)).sum();
        println!("GAS direct N={n} buyer: {}", list(&buyer.meter));
        for s in &sellers {
            println!("GAS direct N={n} seller: {}", list(&s.meter));
        }
        println!(
            "FIGURE direct N={n} payer txs {buyer_txs} gas {} | hub txs 0 gas 0 | payees txs \
             {sellers_txs} gas {sellers_gas}",
            total(&buyer.meter)
        );
        assert_eq!(buyer_txs, n, "N={n}: one deposit per channel");
    }
}
