//! Payment-channel benchmarks: what one payment costs next to the bare signature floor.
//!
//! One group, `payment`, so that the ratios come from one run on one (noisy, shared) machine:
//! - `bare_k256_sign_verify`: k256 `sign_prehash` + `verify_prehash` of a fixed 32-byte hash, the floor;
//! - `keccak256_64`: keccak256 of 64 bytes (what a voucher hash costs, before the EIP-191 step);
//! - `voucher_sign`: [`Voucher::sign`] of a new cumulative amount;
//! - `voucher_verify_cached_key` / `voucher_recover_address`: the two ways to check a voucher;
//! - `whole_payment`: payer `send_payment(1)` → persist → envelope → JSON string (what travels in the
//!   PSE `message` command); payee parses the JSON → `handle_message` (one verify with the payer's
//!   cached key) → persist → `PaymentReceived`. Both sides persist into a real [`MemoryStore`],
//!   whose futures complete at once and are polled synchronously.
//!
//! The channel is set up through the real protocol (propose, join, deposit on a
//! [`SimulatedChain`], postfund) outside the timed loop, with a 2^128 wei deposit so that
//! millions of 1-wei vouchers never exhaust it. `benches/summarize.py` prints the ratios.
//!
//! `cargo bench -p paid-benches --bench payment -- --warm-up-time 1 --measurement-time 5`

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use alloy_primitives::keccak256;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use k256::ecdsa::signature::hazmat::{PrehashSigner, PrehashVerifier};
use k256::ecdsa::{Signature as K256Signature, SigningKey};
use payment_channel::chain::{Chain, ChainEvent};
use payment_channel::channel::{ChainAction, Channel, ChannelParams, Event, Persist};
use payment_channel::message::{Envelope, Message};
use payment_channel::sign::{LocalSigner, Signer};
use payment_channel::store::ChannelStore;
use payment_channel::voucher::Voucher;
use payment_channel::{B256, MemoryStore, SimulatedChain, U256};

/// Polls a future that must complete at once (the in-memory store and the simulated chain).
fn ready<F: Future>(fut: F) -> F::Output {
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
struct Side {
    ch: Channel,
    store: MemoryStore,
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
struct Running {
    payer: Side,
    payee: Side,
    payer_signer: Arc<LocalSigner>,
}

fn running_channel() -> Running {
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
                    channel_id,
                    expected_held,
                    amount,
                } => {
                    sim.fund(payer_signer.address(), amount).expect("fund");
                    ready(chain.deposit(channel_id, expected_held, amount)).expect("deposit");
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
fn pay_one(r: &mut Running) -> U256 {
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

fn payment(c: &mut Criterion) {
    let mut group = c.benchmark_group("payment");
    group.throughput(Throughput::Elements(1));

    let key = SigningKey::from_bytes(&B256::repeat_byte(0x33).0.into()).expect("key");
    let vkey = *key.verifying_key();
    let prehash = keccak256(b"a fixed 32-byte hash to sign");
    group.bench_function("bare_k256_sign_verify", |b| {
        b.iter(|| {
            let sig: K256Signature = key
                .sign_prehash(black_box(prehash.as_slice()))
                .expect("sign");
            vkey.verify_prehash(black_box(prehash.as_slice()), &sig)
                .expect("verify");
            black_box(sig)
        })
    });

    // Right after the floor: on a shared machine the load drifts, so the two terms of the
    // target ratio are measured as close together in time as possible.
    let mut running = running_channel();
    let first = pay_one(&mut running);
    assert_eq!(first, U256::from(1u8));
    group.bench_function("whole_payment", |b| {
        b.iter(|| black_box(pay_one(&mut running)))
    });
    // Every iteration made a new, larger voucher, and both sides agree on it.
    let paid = running.payee.ch.paid();
    assert_eq!(running.payer.ch.paid(), paid);
    let stored = ready(running.payee.store.get_voucher(running.payee.ch.id()))
        .expect("memory store")
        .expect("a voucher");
    assert_eq!(stored.amount, paid);
    assert_eq!(stored.recover_signer(), Ok(running.payer_signer.address()));

    let input = [0x5au8; 64];
    group.bench_function("keccak256_64", |b| {
        b.iter(|| black_box(keccak256(black_box(&input))))
    });

    let signer = LocalSigner::from_bytes(&B256::repeat_byte(0x44)).expect("key");
    let channel_id = B256::repeat_byte(0x6a);
    let mut amount = U256::ZERO;
    group.bench_function("voucher_sign", |b| {
        b.iter(|| {
            amount += U256::from(1u8);
            black_box(Voucher::sign(channel_id, black_box(amount), &signer).expect("sign"))
        })
    });

    let voucher = Voucher::sign(channel_id, U256::from(1_000_000u64), &signer).expect("sign");
    let payer_key = signer.public_key();
    group.bench_function("voucher_verify_cached_key", |b| {
        b.iter(|| assert!(black_box(&voucher).verify(black_box(&payer_key))))
    });
    group.bench_function("voucher_recover_address", |b| {
        b.iter(|| {
            let addr = black_box(&voucher).recover_signer().expect("recover");
            assert_eq!(addr, signer.address());
        })
    });

    group.finish();
}

criterion_group!(benches, payment);
criterion_main!(benches);
