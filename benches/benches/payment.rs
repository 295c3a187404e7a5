//! Payment-channel benchmarks: what one payment costs next to the bare signature floor.
//!
//! One group, `payment`, so that the ratios come from one run on one (noisy, shared) machine:
//! - `bare_sign_verify`: the bare signature library's sign + verify of a fixed 32-byte hash, the floor
//!   (k256, or libsecp256k1 with `--features libsecp256k1`: the backend payment-channel signs with);
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

#[path = "support/channel.rs"]
mod channel;

use std::hint::black_box;

use alloy_primitives::keccak256;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use payment_channel::sign::{LocalSigner, Signer};
use payment_channel::store::ChannelStore;
use payment_channel::voucher::Voucher;
use payment_channel::{B256, U256};

use channel::{floor_benches, ready};

fn payment(c: &mut Criterion) {
    let mut group = c.benchmark_group("payment");
    group.throughput(Throughput::Elements(1));

    // The floor and the whole payment, back to back (shared with the `transfer` bench).
    let running = floor_benches(&mut group);
    let paid = running.payee.ch.paid();
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
