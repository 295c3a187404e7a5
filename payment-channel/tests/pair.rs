//! Deterministic two-party harness (`payment_channel::test_utils::pair`): two `Channel`s, messages
//! carried by hand, a clock moved by the test, the `SimulatedChain` (quinn `Pair` / LDK
//! functional-test style).

use payment_channel::channel::{Channel, ChannelParams, ChannelSnapshot, Event, PhaseKind};
use payment_channel::error::{Error, PeerMisbehaved, Reaction, UsageError};
use payment_channel::message::{
    Close, Envelope, Join, MAX_VOUCHER_ENVELOPE_LEN, Message, VoucherMessage,
};
use payment_channel::sign::{LocalSigner, Signer};
use payment_channel::state::{FixedPart, VariablePart, two_party_outcome};
use payment_channel::test_utils::pair::*;
use payment_channel::voucher::Voucher;
use payment_channel::{Address, B256, Bytes, U256};

fn u(x: u64) -> U256 {
    U256::from(x)
}

/// Everything observable about a channel: its durable state and whether it queued anything.
fn fingerprint(ch: &mut Channel) -> (Vec<u8>, bool) {
    let snap = ch.snapshot().to_bytes();
    let quiet = ch.poll_persist().is_none()
        && ch.poll_outbound().is_none()
        && ch.poll_event().is_none()
        && ch.poll_chain_action().is_none();
    (snap, quiet)
}

/// Feeds `msg` to `ch`, expects an error, and checks that nothing changed and nothing was queued.
fn rejects(ch: &mut Channel, msg: &Message) -> Error {
    let (before, quiet) = fingerprint(ch);
    assert!(quiet, "channel must be quiet before the test input");
    let err = ch.handle_message(msg).expect_err("must be rejected");
    let (after, quiet) = fingerprint(ch);
    assert_eq!(before, after, "state changed on error {err}");
    assert!(quiet, "output queued on error {err}");
    err
}

/// [`rejects`], for an error the peer caused.
fn rejects_peer(ch: &mut Channel, msg: &Message) -> PeerMisbehaved {
    match rejects(ch, msg) {
        Error::PeerMisbehaved(p) => p,
        other => panic!("not the peer's fault: {other:?}"),
    }
}

/// The message carrying voucher `v`.
fn voucher_msg(v: &Voucher) -> Message {
    Message::Voucher(VoucherMessage::from_voucher(v))
}

/// A running channel of `deposit` in which the payer paid each of `payments`, all delivered.
fn paid(deposit: u64, payments: &[u64]) -> Pair {
    let mut p = Pair::running(deposit);
    for &delta in payments {
        p.pay(delta);
    }
    p.drive();
    p
}

/// `who` closes cooperatively and every message is delivered.
fn close_and_drive(p: &mut Pair, who: Who) {
    p.close(who);
    p.drive();
}

/// Asserts what the chain paid out: `payee` to the payee and `payer` to the payer.
fn assert_payout(p: &Pair, payee: u64, payer: u64) {
    assert_eq!(
        p.chain.paid_to(p.payee_addr()),
        u(payee),
        "paid to the payee"
    );
    assert_eq!(
        p.chain.paid_to(p.payer_addr()),
        u(payer),
        "paid to the payer"
    );
}

/// Lets the challenge period run out, then asserts the payout as [`assert_payout`] does.
fn timeout_pays_out(p: &mut Pair, payee: u64, payer: u64) {
    p.advance(DURATION);
    assert_payout(p, payee, payer);
}

/// Asserts that no transaction of either side reverted.
fn assert_no_reverts(p: &Pair) {
    assert!(
        p.payer.reverts.is_empty() && p.payee.reverts.is_empty(),
        "{:?} {:?}",
        p.payer.reverts,
        p.payee.reverts
    );
}

#[test]
fn create_join_pay_close_pays_out() {
    let mut p = Pair::running(1_000);
    assert!(p.payer.has_event(|e| matches!(e, Event::Proposed { .. })));
    assert!(p.payer.has_event(|e| *e == Event::Joined));
    assert!(p.payee.has_event(|e| *e == Event::Joined));
    assert!(p.payer.has_event(|e| *e == Event::Funded));
    assert!(p.payee.has_event(|e| *e == Event::Funded));
    assert_eq!(p.chain.holdings[&p.id()], u(1_000));

    for i in 1..=25u64 {
        p.pay(i);
        p.drive();
    }
    let sum: u64 = (1..=25).sum();
    let total = u(sum);
    assert_eq!(p.payer.ch.paid(), total);
    assert_eq!(p.payee.ch.paid(), total);
    assert_eq!(p.payee.received_total(), total);
    assert_eq!(p.payee.stored_voucher.unwrap().amount, total);

    close_and_drive(&mut p, Who::Payer);
    for s in [&p.payer, &p.payee] {
        assert!(s.has_event(|e| *e == Event::Closed { amount: total }));
        assert!(s.has_event(|e| matches!(e, Event::Finalized { .. })));
        assert!(s.has_event(|e| matches!(e, Event::PaidOut { .. })));
        assert_eq!(s.ch.phase(), PhaseKind::Finalized);
        assert!(s.ch.is_settled());
    }
    assert!(
        p.payee
            .has_event(|e| *e == Event::PaidOut { amount: total })
    );
    assert!(p.payer.has_event(|e| *e
        == Event::PaidOut {
            amount: u(1_000) - total
        }));
    assert_payout(&p, sum, 1_000 - sum);
    assert_eq!(p.chain.holdings[&p.id()], U256::ZERO);
    // One conclude and one transfer: the second side saw them done.
    let n = |what| p.chain.calls.iter().filter(|(_, c)| *c == what).count();
    assert_eq!(n("conclude"), 1);
    assert_eq!(n("transferAllAssets"), 1);
    assert_no_reverts(&p);
}

#[test]
fn payee_initiated_close() {
    let mut p = paid(500, &[70]);
    close_and_drive(&mut p, Who::Payee);
    assert_payout(&p, 70, 430);
}

#[test]
fn close_before_last_voucher_arrives_credits_it() {
    let mut p = paid(500, &[10]);
    p.pay(5); // in flight
    p.close(Who::Payer);
    // Deliver the close before the voucher.
    let voucher = p.to_payee.pop_front().unwrap();
    p.drive();
    assert!(p.payee.has_event(|e| *e
        == Event::PaymentReceived {
            delta: u(5),
            total: u(15)
        }));
    // The late voucher is covered by the final state: a no-op.
    p.deliver_env(Who::Payee, &voucher);
    assert!(p.errors.is_empty(), "{:?}", p.errors);
    assert_payout(&p, 15, 485);
}

#[test]
fn output_waits_for_persistence() {
    let mut p = Pair::running(100);
    p.payer.ch.send_payment(u(3)).unwrap();
    // Nothing leaves before the voucher is stored.
    assert!(p.payer.ch.poll_outbound().is_none());
    assert!(p.payer.ch.poll_event().is_none());
    let persist = p.payer.ch.poll_persist().unwrap();
    assert_eq!(persist.voucher.unwrap().amount, u(3));
    assert!(
        persist.snapshot.is_none(),
        "a payment persists only the voucher"
    );
    p.payer.ch.handle_persisted(persist.generation);
    let env = p.payer.ch.poll_outbound().unwrap();

    // Payee: no credit before the store confirms.
    p.payee.ch.handle_message(&env.data).unwrap();
    assert!(p.payee.ch.poll_event().is_none());
    let persist = p.payee.ch.poll_persist().unwrap();
    assert_eq!(persist.voucher.unwrap().amount, u(3));
    p.payee.ch.handle_persisted(persist.generation - 1); // stale ack: ignored
    assert!(p.payee.ch.poll_event().is_none());
    p.payee.ch.handle_persisted(persist.generation);
    assert_eq!(
        p.payee.ch.poll_event(),
        Some(Event::PaymentReceived {
            delta: u(3),
            total: u(3)
        })
    );
}

#[test]
fn survives_drop_duplicate_and_reorder() {
    // A deterministic lossy network: every 3rd message dropped, every 4th duplicated, and each
    // batch delivered in reverse order; both sides retransmit when the network is idle.
    let mut p = Pair::new(1_000);
    p.join();
    let mut counter = 0u32;
    let mut step = |p: &mut Pair| {
        for to in [Who::Payee, Who::Payer] {
            let batch: Vec<Envelope> = match to {
                Who::Payee => p.to_payee.drain(..).collect(),
                Who::Payer => p.to_payer.drain(..).collect(),
            };
            for env in batch.iter().rev() {
                counter += 1;
                if counter.is_multiple_of(3) {
                    continue;
                }
                p.deliver_env(to, env);
                if counter.is_multiple_of(4) {
                    p.deliver_env(to, env);
                }
            }
        }
    };
    let mut paid = 0u64;
    for round in 0..200 {
        step(&mut p);
        if p.payer.ch.is_running() && paid < 300 && round % 2 == 0 {
            // Several payments per round, so that reordering reverses them.
            for _ in 0..3 {
                p.pay(10);
                paid += 10;
            }
        }
        if p.to_payee.is_empty() && p.to_payer.is_empty() {
            p.payer.ch.resend();
            p.flush(Who::Payer);
            p.payee.ch.resend();
            p.flush(Who::Payee);
        }
        if paid >= 300 && p.payee.ch.paid() == u(300) {
            break;
        }
    }
    assert_eq!(p.payee.ch.paid(), u(300));
    assert_eq!(p.payee.received_total(), u(300), "credits add up exactly");
    // Only harmless errors: replays and too-early messages.
    for (_, e) in &p.errors {
        assert_eq!(e.reaction(), Reaction::Ignore, "{e}");
    }
    assert!(p.errors.iter().any(|(_, e)| matches!(
        e,
        Error::PeerMisbehaved(PeerMisbehaved::LowerVoucher { .. })
    )));

    p.close(Who::Payer);
    for _ in 0..50 {
        step(&mut p);
        if p.payer.ch.is_settled() && p.payee.ch.is_settled() {
            break;
        }
        p.payer.ch.resend();
        p.flush(Who::Payer);
        p.payee.ch.resend();
        p.flush(Who::Payee);
    }
    assert!(p.payee.ch.is_settled() && p.payer.ch.is_settled());
    assert_payout(&p, 300, 700);
}

#[test]
fn duplicates_are_no_ops_everywhere() {
    let mut p = Pair::new(100);
    p.join();
    // Capture every message once, deliver each twice.
    let mut seen = Vec::new();
    for _ in 0..10 {
        while let Some(e) = p.to_payee.pop_front() {
            seen.push((Who::Payee, e.clone()));
            p.deliver_env(Who::Payee, &e);
            p.deliver_env(Who::Payee, &e);
        }
        while let Some(e) = p.to_payer.pop_front() {
            seen.push((Who::Payer, e.clone()));
            p.deliver_env(Who::Payer, &e);
            p.deliver_env(Who::Payer, &e);
        }
        if p.payer.ch.is_running() && p.payer.ch.paid().is_zero() {
            p.pay(7);
        }
    }
    // The duplicate Join made the payee repeat its postfund; repeats are no-ops for the payer.
    p.drive();
    assert!(p.errors.is_empty(), "{:?}", p.errors);
    assert_eq!(p.payee.received_total(), u(7));
    let funded = p
        .payee
        .events
        .iter()
        .filter(|e| **e == Event::Funded)
        .count();
    assert_eq!(funded, 1);
}

#[test]
fn stale_challenge_is_countered() {
    let mut p = paid(1_000, &[25; 4]);
    assert_eq!(p.payee.ch.paid(), u(100));
    // The payer goes on chain with the postfund, which pays the payee nothing.
    p.challenge(Who::Payer);
    // The payee saw it and countered at turn 2 with its best voucher.
    let reg = p.payee.ch.on_chain().challenge.clone().unwrap();
    assert_eq!(reg.turn_num, 2);
    assert!(
        p.payee
            .has_event(|e| matches!(e, Event::ChallengeRegistered { turn_num: 1, .. }))
    );
    assert!(
        p.payee
            .has_event(|e| matches!(e, Event::ChallengeRegistered { turn_num: 2, .. }))
    );
    // No payments during the dispute.
    assert!(matches!(
        p.payer.ch.send_payment(u(1)),
        Err(Error::Usage(UsageError::Disputed { .. }))
    ));
    p.advance(DURATION - 1);
    assert!(p.payee.ch.on_chain().finalized.is_none());
    p.advance(1);
    assert_payout(&p, 100, 900);
    assert!(
        p.payee
            .has_event(|e| *e == Event::PaidOut { amount: u(100) })
    );
    assert!(
        p.payer
            .has_event(|e| *e == Event::PaidOut { amount: u(900) })
    );
    assert_no_reverts(&p);
}

#[test]
fn payee_challenges_with_best_voucher_when_payer_vanishes() {
    let mut p = paid(1_000, &[40, 2]);
    p.challenge(Who::Payee);
    assert_eq!(p.challenge_turn(Who::Payee), 2);
    // A second challenge cannot improve on it.
    assert!(matches!(
        p.payee.ch.challenge(p.chain.now),
        Err(Error::Usage(UsageError::CannotChallenge(_)))
    ));
    timeout_pays_out(&mut p, 42, 958);
}

/// Issue 13 (gas for nothing): a payee without a voucher above zero has nothing to claim, so it
/// does not challenge (that would refund the payer at the payee's expense). The payer recovers
/// its deposit with its own postfund challenge.
#[test]
fn payee_without_voucher_does_not_challenge_and_the_payer_recovers_its_deposit() {
    let mut p = Pair::running(300);
    assert!(matches!(
        p.payee.ch.challenge(p.chain.now),
        Err(Error::Usage(UsageError::CannotChallenge(_)))
    ));
    assert_eq!(p.payee.ch.poll_chain_action(), None);
    assert_eq!(p.payee.ch.chain_duty(p.chain.now).unwrap(), None);
    p.challenge(Who::Payer);
    assert_eq!(p.challenge_turn(Who::Payer), 1);
    timeout_pays_out(&mut p, 0, 300);
}

#[test]
fn payer_recovers_deposit_when_payee_never_countersigns_postfund() {
    let mut p = Pair::new(300);
    p.join();
    p.to_payee.clear(); // the Join is lost, and the payee vanishes
    assert_eq!(p.payer.ch.phase(), PhaseKind::AwaitingPostfund);
    p.challenge(Who::Payer);
    assert_eq!(p.challenge_turn(Who::Payer), 0);
    timeout_pays_out(&mut p, 0, 300);
}

#[test]
fn challenge_answered_by_conclude_when_closed() {
    let mut p = paid(1_000, &[60]);
    // The payee signs the final state but its countersignature never reaches the payer... the
    // payer, now closed on the payee side only, challenges with the postfund.
    p.close(Who::Payer);
    p.deliver(Who::Payee);
    p.to_payer.clear();
    // The payee already concluded as responder; the chain is finalized with 60 to the payee.
    assert!(p.chain.is_finalized(&p.id()));
    assert_payout(&p, 60, 940);
}

#[test]
fn stale_challenge_during_close_is_concluded() {
    let mut p = paid(1_000, &[60]);
    // Build a fully-signed final state on the payee side without letting its conclude through:
    // deliver the payer's close to a payee that has not finished; then the payer challenges.
    p.close(Who::Payer);
    let close = p.to_payee.pop_front().unwrap();
    p.challenge(Who::Payer);
    // The payee countered with its voucher (turn 2)...
    assert_eq!(p.challenge_turn(Who::Payee), 2);
    // ...and the close still settles at once: conclude works during a challenge.
    p.deliver_env(Who::Payee, &close);
    p.drive();
    assert!(p.chain.is_finalized(&p.id()));
    assert_payout(&p, 60, 940);
}

#[test]
fn bad_inputs_are_typed_and_change_nothing() {
    let mut p = paid(1_000, &[100]);
    let id = p.id();
    let payer_key = p.payer.signer.clone();
    let mallory = signer(9);

    // Forged voucher signature.
    let forged = Voucher::sign(id, u(200), &*mallory).unwrap();
    let err = rejects_peer(&mut p.payee.ch, &voucher_msg(&forged));
    assert!(matches!(
        err,
        PeerMisbehaved::BadSignature {
            what: "voucher",
            ..
        }
    ));
    assert_eq!(err.reaction(), Reaction::Disconnect);

    // Another channel's voucher: same participants, another nonce.
    let other = Pair::with_nonce(1_000, 2);
    let other_v = Voucher::sign(other.id(), u(300), &*payer_key).unwrap();
    let err = rejects_peer(&mut p.payee.ch, &voucher_msg(&other_v));
    assert!(matches!(err, PeerMisbehaved::WrongChannel { .. }));
    // ...even if relabelled with this channel's reference, its signature does not verify here.
    let mut relabelled = VoucherMessage::from_voucher(&other_v);
    relabelled.channel = VoucherMessage::from_voucher(&forged).channel;
    let err = rejects_peer(&mut p.payee.ch, &Message::Voucher(relabelled));
    assert!(matches!(err, PeerMisbehaved::BadSignature { .. }));

    // Replayed lower voucher.
    let lower = Voucher::sign(id, u(50), &*payer_key).unwrap();
    let err = rejects_peer(&mut p.payee.ch, &voucher_msg(&lower));
    assert!(matches!(err, PeerMisbehaved::LowerVoucher { .. }));
    assert_eq!(err.reaction(), Reaction::Ignore);

    // Equal voucher: a harmless duplicate (even with a garbage signature: it credits nothing).
    let same = Voucher::sign(id, u(100), &*mallory).unwrap();
    let (before, _) = fingerprint(&mut p.payee.ch);
    p.payee.ch.handle_message(&voucher_msg(&same)).unwrap();
    assert_eq!(fingerprint(&mut p.payee.ch), (before, true));

    // Voucher above the deposit, validly signed by the payer.
    let over = Voucher::sign(id, u(1_001), &*payer_key).unwrap();
    let err = rejects_peer(&mut p.payee.ch, &voucher_msg(&over));
    assert!(matches!(err, PeerMisbehaved::OverDeposit { .. }));

    // A voucher sent to the payer.
    let err = rejects_peer(&mut p.payer.ch, &voucher_msg(&lower));
    assert!(matches!(err, PeerMisbehaved::WrongRole { .. }));

    // A close that pays the payee less than it holds, and one the payer never paid.
    let (payer_addr, payee_addr) = (p.payer_addr(), p.payee_addr());
    // The close paying the payee `amount`, signed by `by`.
    let close_msg = |amount: u64, by: &LocalSigner| {
        let final_hash = VariablePart {
            outcome: two_party_outcome(
                Address::ZERO,
                payer_addr,
                u(1_000 - amount),
                payee_addr,
                u(amount),
            ),
            app_data: Bytes::new(),
            turn_num: 3,
            is_final: true,
        }
        .hash(id);
        Message::Close(Close {
            channel_id: id,
            amount: u(amount),
            signature: by.sign_eth_message(&final_hash).unwrap(),
        })
    };
    let err = rejects_peer(&mut p.payee.ch, &close_msg(10, &payer_key));
    assert!(matches!(err, PeerMisbehaved::CloseBelowPaid { .. }));
    assert_eq!(err.reaction(), Reaction::Challenge);
    let payee_key = p.payee.signer.clone();
    let err = rejects_peer(&mut p.payer.ch, &close_msg(900, &payee_key));
    assert!(matches!(err, PeerMisbehaved::CloseAboveSent { .. }));
    // A close signed by someone else.
    let err = rejects_peer(&mut p.payee.ch, &close_msg(100, &mallory));
    assert!(matches!(err, PeerMisbehaved::BadSignature { .. }));

    // Nothing above happened as far as the counterparty or the chain are concerned.
    assert_eq!(p.payee.ch.paid(), u(100));
    assert!(p.to_payer.is_empty() && p.to_payee.is_empty());
}

#[test]
fn join_by_wrong_participant_is_rejected() {
    let mut p = Pair::new(1_000);
    let mallory = signer(9);
    let fixed = p.payee.ch.fixed_part().clone();
    let id = p.id();
    let state = |turn| VariablePart {
        outcome: two_party_outcome(
            Address::ZERO,
            fixed.participants[0],
            u(1_000),
            fixed.participants[1],
            U256::ZERO,
        ),
        app_data: Bytes::new(),
        turn_num: turn,
        is_final: false,
    };
    let join = Join {
        channel_id: id,
        prefund: mallory.sign_eth_message(&state(0).hash(id)).unwrap(),
        postfund: mallory.sign_eth_message(&state(1).hash(id)).unwrap(),
    };
    let err = rejects_peer(&mut p.payee.ch, &Message::Join(join));
    assert!(
        matches!(err, PeerMisbehaved::BadSignature { what: "prefund", got: Some(a), .. } if a == mallory.address())
    );
    // The real payer's prefund with a forged postfund is rejected too.
    let payer = p.payer.signer.clone();
    let join = Join {
        channel_id: id,
        prefund: payer.sign_eth_message(&state(0).hash(id)).unwrap(),
        postfund: mallory.sign_eth_message(&state(1).hash(id)).unwrap(),
    };
    let err = rejects_peer(&mut p.payee.ch, &Message::Join(join));
    assert!(matches!(
        err,
        PeerMisbehaved::BadSignature {
            what: "postfund",
            ..
        }
    ));
    assert_eq!(p.payee.ch.phase(), PhaseKind::Proposed);

    // A proposal naming us in the wrong order is refused outright.
    let mut bad = FixedPart {
        participants: vec![p.payee_addr(), p.payer_addr()],
        ..fixed
    };
    bad.channel_nonce = 5;
    let propose = payment_channel::message::Propose {
        fixed: bad,
        deposit: u(1),
        price: None,
        asset: Address::ZERO,
        signature: mallory.sign_eth_message(&B256::ZERO).unwrap(),
    };
    let err = Channel::from_proposal(p.payer.signer.clone(), &propose).unwrap_err();
    assert!(matches!(
        err,
        Error::PeerMisbehaved(PeerMisbehaved::InvalidProposal(_))
    ));
}

#[test]
fn messages_after_close_are_rejected() {
    let mut p = paid(1_000, &[100]);
    close_and_drive(&mut p, Who::Payer);
    assert_eq!(p.payee.ch.phase(), PhaseKind::Finalized);
    let payer = p.payer.signer.clone();
    let higher = Voucher::sign(p.id(), u(200), &*payer).unwrap();
    let err = rejects_peer(&mut p.payee.ch, &voucher_msg(&higher));
    assert!(matches!(err, PeerMisbehaved::UnexpectedInPhase { .. }));
    // Payments and a new close are refused locally.
    assert!(matches!(
        p.payer.ch.send_payment(u(1)),
        Err(Error::Usage(UsageError::WrongPhase { .. }))
    ));
    assert!(p.payer.ch.close().is_err());

    // Before finalization (closed off chain only), a different close is a conflict.
    let mut q = paid(1_000, &[5]);
    q.payer.ch.close().unwrap();
    q.flush(Who::Payer);
    let close = q.to_payee.pop_front().unwrap();
    // Deliver to the payee, but keep its conclude from happening by not finalizing: use a
    // fresh copy of the payee channel restored from its snapshot.
    let snap = ChannelSnapshot::from_bytes(&q.payee.ch.snapshot().to_bytes()).unwrap();
    let mut payee = Channel::restore(q.payee.signer.clone(), snap, None).unwrap();
    payee.handle_message(&close.data).unwrap();
    while let Some(x) = payee.poll_persist() {
        payee.handle_persisted(x.generation);
    }
    while payee.poll_outbound().is_some()
        || payee.poll_event().is_some()
        || payee.poll_chain_action().is_some()
    {}
    assert_eq!(payee.phase(), PhaseKind::Closed);
    let later = Voucher::sign(q.id(), u(6), &*q.payer.signer.clone()).unwrap();
    let err = rejects_peer(&mut payee, &voucher_msg(&later));
    assert!(matches!(err, PeerMisbehaved::UnexpectedInPhase { .. }));
    let Message::Close(mut c) = close.data.clone() else {
        unreachable!()
    };
    c.amount = u(4);
    let err = rejects_peer(&mut payee, &Message::Close(c));
    assert!(matches!(err, PeerMisbehaved::ConflictingClose { .. }));
    // The duplicate close is answered with our countersignature (the initiator may have lost it).
    payee.handle_message(&close.data).unwrap();
    assert!(matches!(
        payee.poll_outbound().map(|e| e.data),
        Some(Message::Close(_))
    ));
}

#[test]
fn usage_errors_sign_nothing() {
    let mut p = paid(100, &[60]);
    let (before, quiet) = fingerprint(&mut p.payer.ch);
    assert!(quiet);
    let err = p.payer.ch.send_payment(u(41)).unwrap_err();
    assert!(matches!(
        err,
        Error::Usage(UsageError::PayBeyondDeposit { .. })
    ));
    let err = p.payer.ch.send_payment(U256::MAX).unwrap_err();
    assert!(matches!(
        err,
        Error::Usage(UsageError::PayBeyondDeposit { total: None, .. })
    ));
    assert_eq!(fingerprint(&mut p.payer.ch), (before, true));
    assert!(matches!(
        p.payee.ch.send_payment(u(1)),
        Err(Error::Usage(UsageError::WrongRole { .. }))
    ));
    assert!(matches!(
        p.payee.ch.join(),
        Err(Error::Usage(UsageError::WrongRole { .. }))
    ));
    // Paying exactly up to the deposit works.
    p.pay(40);
    p.drive();
    assert_eq!(p.payee.ch.paid(), u(100));
    // Zero payment: re-sends the latest voucher, signs nothing new.
    let v = p.payer.ch.send_payment(U256::ZERO).unwrap();
    assert_eq!(v.amount, u(100));
    // Creating with silly parameters.
    let err = Channel::create(
        signer(2),
        ChannelParams {
            payer: signer(2).address(),
            deposit: u(1),
            channel_nonce: 0,
            app_definition: APP,
            challenge_duration: 10,
            price: None,
            asset: Address::ZERO,
        },
    )
    .unwrap_err();
    assert!(matches!(err, Error::Usage(UsageError::InvalidParams(_))));
}

#[test]
fn restore_mid_stream_and_close_with_largest_voucher() {
    let mut p = paid(1_000, &[30; 5]);
    // The payee "crashes": rebuild it from what it stored. The snapshot is from before the
    // payments (vouchers are persisted alone); the store's voucher brings it up to date.
    let snap = ChannelSnapshot::from_bytes(p.payee.stored_snapshot.as_ref().unwrap()).unwrap();
    assert_eq!(
        Channel::restore(p.payee.signer.clone(), snap.clone(), None)
            .unwrap()
            .paid(),
        U256::ZERO
    );
    let restored = Channel::restore(p.payee.signer.clone(), snap, p.payee.stored_voucher).unwrap();
    assert_eq!(restored.paid(), u(150));
    p.payee.ch = restored;
    p.flush(Who::Payee);
    p.pay(10);
    p.drive();
    assert_eq!(p.payee.ch.paid(), u(160));
    close_and_drive(&mut p, Who::Payee);
    assert_payout(&p, 160, 840);
}

#[test]
fn voucher_envelope_is_small_and_round_trips() {
    let mut p = Pair::running(u64::MAX);
    p.payer.ch.send_payment(U256::from(u64::MAX)).unwrap();
    p.payer.persist();
    let env = p.payer.ch.poll_outbound().unwrap();
    let json = env.to_json();
    println!("voucher envelope ({} bytes): {json}", json.len());
    assert!(json.len() <= 270, "{} bytes", json.len());
    assert!(json.len() < MAX_VOUCHER_ENVELOPE_LEN);
    assert_eq!(Envelope::from_json(&json).unwrap(), env);
    // Garbage is a decode error, never a panic.
    for bad in [
        "",
        "{}",
        "[1]",
        &json[..json.len() - 1],
        &json.replace("\"v\"", "\"x\""),
    ] {
        let e = Envelope::from_json(bad).unwrap_err();
        assert_eq!(Error::from(e).reaction(), Reaction::Disconnect);
    }
    let long = "x".repeat(10_000);
    assert!(matches!(
        Envelope::from_json(&long),
        Err(payment_channel::error::DecodeError::TooLong { .. })
    ));
}

#[test]
fn lifecycle_and_stale_challenge_on_simulated_chain() {
    // Close path.
    let mut p = paid(1_000, &[300]);
    close_and_drive(&mut p, Who::Payer);
    assert_payout(&p, 300, 700);
    assert_no_reverts(&p);

    // Challenge path, with the real VirtualPaymentApp rules checking the counter-challenge.
    let mut p = paid(1_000, &[120]);
    p.challenge(Who::Payer);
    assert_eq!(p.challenge_turn(Who::Payee), 2);
    timeout_pays_out(&mut p, 120, 880);
    assert_no_reverts(&p);
}

#[test]
fn replayed_chain_events_are_no_ops() {
    let mut p = paid(1_000, &[80]);
    p.challenge(Who::Payer);
    assert_eq!(p.challenge_turn(Who::Payee), 2);
    // A restarted watcher reads the whole log again, in order.
    let log = p.chain.log.clone();
    let now = p.chain.now;
    for who in [Who::Payer, Who::Payee] {
        let (before, _) = fingerprint(&mut p.side(who).ch);
        for ev in &log {
            p.side(who).ch.handle_chain_event(now, ev).unwrap();
        }
        assert_eq!(fingerprint(&mut p.side(who).ch), (before, true), "{who:?}");
    }
}

#[test]
fn every_message_fits_its_bound() {
    let mut p = Pair::new(1_000_000_000_000_000_000);
    let mut sizes = Vec::new();
    let mut record = |env: &Envelope| {
        let json = env.to_json();
        assert!(json.len() <= payment_channel::message::MAX_ENVELOPE_LEN);
        assert_eq!(&Envelope::from_json(&json).unwrap(), env);
        sizes.push((env.data.kind(), json.len(), json));
    };
    // Replay the proposal for the record.
    p.payee.ch.resend();
    p.payee.persist();
    record(&p.payee.ch.poll_outbound().unwrap());
    p.join();
    record(p.to_payee.front().unwrap());
    p.deliver(Who::Payee);
    record(p.to_payer.front().unwrap());
    p.drive();
    p.pay(1_000_000_000_000_000);
    record(p.to_payee.front().unwrap());
    p.drive();
    p.close(Who::Payer);
    record(p.to_payee.front().unwrap());
    for (kind, len, json) in &sizes {
        println!("{kind:>8} {len:>4} bytes  {json}");
    }
    // The largest possible voucher still parses.
    let env = p.to_payee.front().unwrap().clone();
    let Message::Close(c) = &env.data else {
        panic!()
    };
    let max = Envelope {
        data: Message::Voucher(VoucherMessage {
            channel: payment_channel::message::ChannelRef::of(&c.channel_id),
            amount: U256::MAX,
            signature: c.signature,
        }),
        ..env
    };
    let json = max.to_json();
    assert!(json.len() <= MAX_VOUCHER_ENVELOPE_LEN, "{}", json.len());
    assert_eq!(Envelope::from_json(&json).unwrap(), max);
    let voucher = sizes.iter().find(|s| s.0 == "voucher").unwrap();
    assert!(voucher.1 <= 270, "{}", voucher.1);
}
