//! Gas each party pays per channel lifecycle on anvil with the published Nitro contracts (sum of
//! the `gasUsed` of the receipts of the transactions its `Client` sent). Prints one table line per
//! lifecycle and party (`GAS <lifecycle> <party>: <total> <transactions>`), and checks that no
//! party pays for a transaction that pays it nothing.
#![cfg(all(feature = "ethereum", feature = "test-utils"))]

use std::sync::Arc;

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
        let chain = Arc::new(
            EthereumChain::connect(&anvil.url, &tx_key(i), deployment.nitro_adjudicator)
                .await
                .unwrap(),
        );
        let meter = Arc::new(GasMeter::new(chain));
        let signer = Arc::new(LocalSigner::from_bytes(&B256::repeat_byte(seed)).unwrap());
        let inbox = net.join(signer.address());
        let config = ClientConfig {
            challenge_duration: 600,
            auto_join: policy,
            // Anvil mines only on transactions: nothing would confirm the last one.
            confirmations: Some(0),
            ..ClientConfig::new(deployment.payment_app)
        };
        let (client, events) = Client::open(
            config,
            signer,
            meter.clone(),
            Arc::new(MemoryStore::new()),
            Some(net.transport()),
        )
        .await
        .unwrap();
        parties.push(Party {
            client,
            _events: events,
            inbox,
            meter,
        });
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
