//! Payments off the data path, on the sans-IO channel (`payment_channel::test_utils::pair`):
//! vouchers signed ahead of time are liabilities only once sent, and the payee credits only a
//! voucher whose signature was verified.

use payment_channel::channel::{Channel, ChannelSnapshot, Event, MAX_PRESIGNED, VerifiedVoucher};
use payment_channel::error::{Error, PeerMisbehaved, UsageError};
use payment_channel::message::{Message, VoucherMessage};
use payment_channel::sign::Signer;
use payment_channel::test_utils::pair::*;
use payment_channel::voucher::Voucher;
use payment_channel::{B256, U256};

fn u(x: u64) -> U256 {
    U256::from(x)
}

/// Signs the next `count` payments of `delta` ahead, as a driver would (here on this thread).
fn presign(ch: &mut Channel, delta: u64, count: usize) -> usize {
    let job = ch.presign(u(delta), count).expect("something to sign");
    let signed = job.run();
    ch.add_presigned(signed).expect("the channel's own job")
}

#[test]
fn presigned_vouchers_are_not_sent_before_they_are_due() {
    let mut p = Pair::running(1_000);
    p.pay(10);
    p.drive();
    let snapshot = p.payer.ch.snapshot().to_bytes();
    assert_eq!(presign(&mut p.payer.ch, 10, 5), 5);
    assert_eq!(p.payer.ch.presigned_count(), 5);
    // Signing ahead queued nothing, persisted nothing and paid nothing.
    assert!(p.payer.ch.poll_persist().is_none());
    assert!(p.payer.ch.poll_outbound().is_none());
    assert!(p.payer.ch.poll_event().is_none());
    assert_eq!(p.payer.ch.paid(), u(10));
    assert_eq!(p.payer.ch.best_voucher().unwrap().amount, u(10));
    assert_eq!(p.payer.ch.snapshot().to_bytes(), snapshot);
    assert_eq!(p.payer.stored_voucher.unwrap().amount, u(10));

    // Each payment sends exactly the voucher of its total, and nothing beyond.
    for total in [20u64, 30] {
        let v = p.pay(10);
        assert_eq!(v.amount, u(total));
        assert_eq!(p.payer.stored_voucher.unwrap().amount, u(total));
        let sent: Vec<_> = std::iter::from_fn(|| p.to_payee.pop_front()).collect();
        assert_eq!(sent.len(), 1, "one voucher per payment");
        match &sent[0].data {
            Message::Voucher(m) => assert_eq!(m.amount, u(total)),
            other => panic!("expected a voucher, got {other:?}"),
        }
        for env in &sent {
            p.deliver_env(Who::Payee, env);
        }
    }
    assert_eq!(p.payer.ch.presigned_count(), 3);
    assert_eq!(p.payee.ch.paid(), u(30));
    assert_eq!(p.payee.received_total(), u(30));
    // The pre-signed vouchers are real signatures of the payer (what the payee checks).
    let v = p.payer.ch.best_voucher().copied().unwrap();
    assert_eq!(v.recover_signer(), Ok(p.payer.signer.address()));
}

#[test]
fn a_restart_forgets_presigned_vouchers_and_counts_only_what_was_sent() {
    let mut p = Pair::running(1_000);
    p.pay(10);
    p.drive();
    presign(&mut p.payer.ch, 10, 8);
    // The payer "crashes" with 8 vouchers signed ahead and unsent: it restarts from its store.
    let snap = ChannelSnapshot::from_bytes(p.payer.stored_snapshot.as_ref().unwrap()).unwrap();
    let restored = Channel::restore(p.payer.signer.clone(), snap, p.payer.stored_voucher).unwrap();
    assert_eq!(restored.paid(), u(10));
    assert_eq!(restored.best_voucher().unwrap().amount, u(10));
    assert_eq!(restored.presigned_count(), 0);
    assert_eq!(restored.remaining(), u(990));
    p.payer.ch = restored;
    p.payer.ch.resend();
    p.flush(Who::Payer);
    p.drive();
    assert_eq!(p.payee.ch.paid(), u(10));
    p.pay(5);
    p.drive();
    assert_eq!(p.payee.ch.paid(), u(15));
}

#[test]
fn presigning_is_bounded_and_never_beyond_the_deposit() {
    let mut p = Pair::running(100);
    // Up to the deposit only.
    assert_eq!(presign(&mut p.payer.ch, 30, 10), 3);
    assert!(
        p.payer.ch.presign(u(30), 10).is_none(),
        "90 signed, 120 > deposit"
    );
    let mut p = Pair::running(1_000_000);
    assert_eq!(presign(&mut p.payer.ch, 1, 1_000), MAX_PRESIGNED);
    assert!(p.payer.ch.presign(u(1), 1).is_none());
    // A payment on a pre-signed total uses it and drops those below; one off the pre-signed
    // totals drops them all.
    p.pay(3);
    assert_eq!(p.payer.ch.presigned_count(), MAX_PRESIGNED - 3);
    p.pay(100);
    assert_eq!(p.payer.ch.presigned_count(), 0);
    // A job overtaken by a payment keeps only the totals above what was paid meanwhile.
    let job = p.payer.ch.presign(u(2), 4).expect("room again");
    assert_eq!(job.amounts(), &[u(105), u(107), u(109), u(111)]);
    p.pay(4);
    let late = job.run();
    assert_eq!(late.vouchers().len(), 4);
    // Paid 107 meanwhile: 105 and 107 are dropped, 109 and 111 kept.
    assert_eq!(p.payer.ch.add_presigned(late).unwrap(), 2);
    assert_eq!(p.pay(2).amount, u(109));
    assert_eq!(p.payer.ch.presigned_count(), 1);
    // The payee cannot sign ahead; a job of another channel is refused.
    assert!(p.payee.ch.presign(u(1), 1).is_none());
    let mut other = Pair::with_nonce(1_000, 7);
    other.join();
    other.drive();
    let foreign = other.payer.ch.presign(u(1), 1).unwrap().run();
    assert!(matches!(
        p.payer.ch.add_presigned(foreign),
        Err(Error::Usage(UsageError::WrongChannel { .. }))
    ));
}

/// The voucher of `delta` more, in flight to the payee, taken off the wire.
fn voucher_in_flight(p: &mut Pair, delta: u64) -> VoucherMessage {
    p.pay(delta);
    match p.to_payee.pop_front().expect("a voucher").data {
        Message::Voucher(m) => m,
        other => panic!("expected a voucher, got {other:?}"),
    }
}

#[test]
fn payee_credits_only_verified_vouchers() {
    let mut p = Pair::running(1_000);
    let m = voucher_in_flight(&mut p, 40);
    assert!(p.payee.ch.voucher_needs_check(&m));
    let key = p
        .payee
        .ch
        .voucher_key()
        .expect("payer key known once running");
    assert!(p.payer.ch.voucher_key().is_none());
    let id = p.payee.ch.id();

    // A forged voucher (another key signed it) never verifies, so there is no proof to credit.
    let forger = signer(99);
    let forged = Voucher::sign(id, u(500), &*forger).unwrap();
    assert!(VerifiedVoucher::verify(forged, &key).is_none());
    // Verified against the forger's own key, the proof does not bind this channel's payer: the
    // channel checks the signature itself and refuses, crediting nothing.
    let wrong_key = VerifiedVoucher::verify(forged, &forger.public_key()).unwrap();
    let before = p.payee.ch.snapshot().to_bytes();
    let err = p.payee.ch.handle_verified_voucher(&wrong_key).unwrap_err();
    assert!(
        matches!(
            err,
            Error::PeerMisbehaved(PeerMisbehaved::BadSignature { .. })
        ),
        "{err:?}"
    );
    assert_eq!(p.payee.ch.snapshot().to_bytes(), before);
    assert!(p.payee.ch.poll_persist().is_none());
    assert!(p.payee.ch.poll_event().is_none());
    assert_eq!(p.payee.ch.paid(), U256::ZERO);

    // A proof for another channel is the driver's mistake.
    let elsewhere = Voucher::sign(B256::repeat_byte(1), u(40), &*p.payer.signer).unwrap();
    let elsewhere = VerifiedVoucher::verify(elsewhere, &key).unwrap();
    assert!(matches!(
        p.payee.ch.handle_verified_voucher(&elsewhere),
        Err(Error::Usage(UsageError::WrongChannel { .. }))
    ));

    // The real one: credited after verification, persisted before the event.
    let verified = VerifiedVoucher::verify(m.to_voucher(id), &key).unwrap();
    p.payee.ch.handle_verified_voucher(&verified).unwrap();
    assert!(
        p.payee.ch.poll_event().is_none(),
        "no credit before persistence"
    );
    p.flush(Who::Payee);
    assert!(p.payee.has_event(|e| *e
        == Event::PaymentReceived {
            delta: u(40),
            total: u(40)
        }));
    assert_eq!(p.payee.stored_voucher.unwrap().amount, u(40));
    // Replayed, it is a duplicate; the same rules as `handle_message` apply to the rest.
    assert!(!p.payee.ch.voucher_needs_check(&m));
    p.payee.ch.handle_verified_voucher(&verified).unwrap();
    assert!(p.payee.ch.poll_persist().is_none());
    let over = Voucher::sign(id, u(2_000), &*p.payer.signer).unwrap();
    let over = VerifiedVoucher::verify(over, &key).unwrap();
    assert!(matches!(
        p.payee.ch.handle_verified_voucher(&over),
        Err(Error::PeerMisbehaved(PeerMisbehaved::OverDeposit { .. }))
    ));
}
