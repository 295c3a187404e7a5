//! A running payment channel driven by hand (no async runtime): the whole per-payment cost,
//! shared by the `payment` and `transfer` benches.

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use alloy_primitives::keccak256;
use criterion::BenchmarkGroup;
use criterion::measurement::Measurement;
#[cfg(not(feature = "libsecp256k1"))]
use k256::ecdsa::signature::hazmat::{PrehashSigner, PrehashVerifier};
#[cfg(not(feature = "libsecp256k1"))]
use k256::ecdsa::{Signature as K256Signature, SigningKey};
use payment_channel::chain::{Chain, ChainEvent};
use payment_channel::channel::{ChainAction, Channel, ChannelParams, Event, Persist};
use payment_channel::message::{Envelope, Message};
use payment_channel::sign::{LocalSigner, Signer};
use payment_channel::store::ChannelStore;
use payment_channel::{B256, MemoryStore, SimulatedChain, U256};

/// Polls a future that must complete at once (the in-memory store and the simulated chain).
pub(crate) fn ready<F: Future>(fut: F) -> F::Output {
    let mut fut = pin!(fut);
    match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("an in-memory future must complete at once"),
    }
}

/// Stores what `p` asks for, as the async client would, and acknowledges it.
fn persist(ch: &mut Channel, store: &MemoryStore, p: Persist) {
    if let Some(snap) = &p.snapshot {
        ready(store.put_channel(p.channel_id, &snap.to_bytes())).expect("memory store");
    }
    if let Some(v) = &p.voucher {
        ready(store.put_voucher(v)).expect("memory store");
    }
    ch.handle_persisted(p.generation);
}

/// One side: its channel, its store and its chain account.
pub(crate) struct Side {
    pub(crate) ch: Channel,
    pub(crate) store: MemoryStore,
}

impl Side {
    fn settle(&mut self) {
        while let Some(p) = self.ch.poll_persist() {
            persist(&mut self.ch, &self.store, p);
        }
    }

    /// Settles, then returns the outbound envelopes as JSON and the chain actions; drops events.
    fn drain(&mut self) -> (Vec<String>, Vec<ChainAction>) {
        self.settle();
        let mut out = Vec::new();
        while let Some(env) = self.ch.poll_outbound() {
            out.push(env.to_json());
        }
        while self.ch.poll_event().is_some() {}
        let mut actions = Vec::new();
        while let Some(a) = self.ch.poll_chain_action() {
            actions.push(a);
        }
        (out, actions)
    }

    fn receive(&mut self, json: &str) {
        let env = Envelope::from_json(json).expect("valid envelope");
        assert_eq!(env.recipient, self.ch.me(), "envelope for us");
        self.ch.handle_message(&env.data).expect("accepted");
    }
}

/// A running channel, set up through the real protocol on a [`SimulatedChain`].
pub(crate) struct Running {
    pub(crate) payer: Side,
    pub(crate) payee: Side,
    pub(crate) payer_signer: Arc<LocalSigner>,
}

pub(crate) fn running_channel() -> Running {
    let sim = SimulatedChain::new();
    let payer_signer = Arc::new(LocalSigner::from_bytes(&B256::repeat_byte(0x11)).expect("key"));
    let payee_signer = Arc::new(LocalSigner::from_bytes(&B256::repeat_byte(0x22)).expect("key"));
    let deposit = U256::from(1u8) << 128;
    let params = ChannelParams {
        payer: payer_signer.address(),
        deposit,
        channel_nonce: 1,
        app_definition: sim.app_definition(),
        challenge_duration: 3_600,
        price: None,
        asset: payment_channel::Address::ZERO,
    };
    let mut payee = Side {
        ch: Channel::create(payee_signer, params).expect("create"),
        store: MemoryStore::new(),
    };
    let (proposals, _) = payee.drain();
    let proposal = match Envelope::from_json(&proposals[0]).expect("valid").data {
        Message::Propose(p) => p,
        other => panic!("expected a proposal, got {}", other.kind()),
    };
    let mut payer = Side {
        ch: Channel::from_proposal(payer_signer.clone(), &proposal).expect("valid proposal"),
        store: MemoryStore::new(),
    };
    payer.ch.join().expect("join");

    let chain = sim.handle(payer_signer.address());
    let mut seen = 0;
    for _ in 0..16 {
        let (to_payee, actions) = payer.drain();
        let (to_payer, _) = payee.drain();
        if to_payee.is_empty() && to_payer.is_empty() && actions.is_empty() {
            break;
        }
        for a in actions {
            match a {
                ChainAction::Deposit {
                    asset,
                    channel_id,
                    expected_held,
                    amount,
                } => {
                    sim.fund(payer_signer.address(), amount).expect("fund");
                    ready(chain.deposit(asset, channel_id, expected_held, amount))
                        .expect("deposit");
                }
                other => panic!("unexpected chain action {other:?}"),
            }
        }
        let events: Vec<ChainEvent> = sim.all_events()[seen..]
            .iter()
            .map(|r| r.event.clone())
            .collect();
        seen += events.len();
        for ev in &events {
            for side in [&mut payer, &mut payee] {
                side.ch.handle_chain_event(sim.now(), ev).expect("event");
            }
        }
        to_payee.iter().for_each(|m| payee.receive(m));
        to_payer.iter().for_each(|m| payer.receive(m));
    }
    assert!(payer.ch.is_running() && payee.ch.is_running(), "set-up");
    Running {
        payer,
        payee,
        payer_signer,
    }
}

/// One whole payment of 1 wei; returns the payee's new total.
pub(crate) fn pay_one(r: &mut Running) -> U256 {
    // Payer: sign, persist before sending, encode.
    r.payer.ch.send_payment(U256::from(1u8)).expect("pay");
    r.payer.settle();
    let env = r.payer.ch.poll_outbound().expect("voucher envelope");
    let json = env.to_json();
    while r.payer.ch.poll_event().is_some() {}
    // Payee: parse, verify, persist, credit.
    let json = black_box(json);
    let env = Envelope::from_json(&json).expect("valid envelope");
    debug_assert_eq!(env.recipient, r.payee.ch.me());
    r.payee.ch.handle_message(&env.data).expect("accepted");
    r.payee.settle();
    match r.payee.ch.poll_event() {
        Some(Event::PaymentReceived { total, .. }) => total,
        other => panic!("expected PaymentReceived, got {other:?}"),
    }
}

/// Benches, into `group`, the floor (`bare_sign_verify`: the bare library's sign + verify of a
/// fixed 32-byte hash, for the signature backend `payment-channel` is built with: k256, or
/// libsecp256k1 with the feature `libsecp256k1`) and right after it `whole_payment` ([`pay_one`]):
/// on a shared machine the load drifts, so the two terms of the ratio are measured as close
/// together in time as possible. Returns the channel, every iteration having paid 1 wei more.
pub(crate) fn floor_benches<M: Measurement>(group: &mut BenchmarkGroup<'_, M>) -> Running {
    let prehash = keccak256(b"a fixed 32-byte hash to sign");
    eprintln!("signature backend: {}", payment_channel::sign::BACKEND);
    #[cfg(not(feature = "libsecp256k1"))]
    {
        let key = SigningKey::from_bytes(&B256::repeat_byte(0x33).0.into()).expect("key");
        let vkey = *key.verifying_key();
        group.bench_function("bare_sign_verify", |b| {
            b.iter(|| {
                let sig: K256Signature = key
                    .sign_prehash(black_box(prehash.as_slice()))
                    .expect("sign");
                vkey.verify_prehash(black_box(prehash.as_slice()), &sig)
                    .expect("verify");
                black_box(sig)
            })
        });
    }
    #[cfg(feature = "libsecp256k1")]
    {
        let secp = secp256k1::Secp256k1::new();
        let key = secp256k1::SecretKey::from_byte_array([0x33; 32]).expect("key");
        let pk = secp256k1::PublicKey::from_secret_key(&secp, &key);
        let msg = secp256k1::Message::from_digest(prehash.0);
        group.bench_function("bare_sign_verify", |b| {
            b.iter(|| {
                let sig = secp.sign_ecdsa(black_box(msg), &key);
                secp.verify_ecdsa(black_box(msg), &sig, &pk)
                    .expect("verify");
                black_box(sig)
            })
        });
    }

    let mut running = running_channel();
    let first = pay_one(&mut running);
    assert_eq!(first, U256::from(1u8));
    group.bench_function("whole_payment", |b| {
        b.iter(|| black_box(pay_one(&mut running)))
    });
    // Every iteration made a new, larger voucher, and both sides agree on it.
    assert_eq!(running.payer.ch.paid(), running.payee.ch.paid());
    running
}
