//! A running payment channel driven by hand (no async runtime): the whole per-payment cost,
//! shared by the `payment` and `transfer` benches.

use std::hint::black_box;
use std::sync::Arc;

use alloy_primitives::keccak256;
use criterion::BenchmarkGroup;
use criterion::measurement::Measurement;
#[cfg(not(feature = "libsecp256k1"))]
use k256::ecdsa::signature::hazmat::{PrehashSigner, PrehashVerifier};
#[cfg(not(feature = "libsecp256k1"))]
use k256::ecdsa::{Signature as K256Signature, SigningKey};
#[cfg(not(feature = "libsecp256k1"))]
use payment_channel::B256;
use payment_channel::channel::{Channel, Event, Persist};
use payment_channel::message::Envelope;
use payment_channel::sign::LocalSigner;
use payment_channel::store::ChannelStore;
use payment_channel::test_utils::pair::Pair;
pub(crate) use payment_channel::test_utils::ready;
use payment_channel::{MemoryStore, U256};

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
}

/// A running channel, set up through the real protocol on a `SimulatedChain` by
/// `payment_channel::test_utils::pair`.
pub(crate) struct Running {
    pub(crate) payer: Side,
    pub(crate) payee: Side,
    pub(crate) payer_signer: Arc<LocalSigner>,
}

pub(crate) fn running_channel() -> Running {
    // The deposit covers a 1-wei payment per iteration for as long as any bench runs.
    let pair = Pair::running(u64::MAX);
    Running {
        payer_signer: pair.payer.signer,
        payer: Side {
            ch: pair.payer.ch,
            store: MemoryStore::new(),
        },
        payee: Side {
            ch: pair.payee.ch,
            store: MemoryStore::new(),
        },
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
        // libsecp256k1's plain verification ignores the parity `v` encodes, so the payee
        // recovers the key and compares (see payment_channel::sign): this is that floor.
        group.bench_function("bare_sign_recover", |b| {
            b.iter(|| {
                let sig = secp.sign_ecdsa_recoverable(black_box(msg), &key);
                let got = secp.recover_ecdsa(black_box(msg), &sig).expect("recover");
                assert_eq!(got, pk);
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
