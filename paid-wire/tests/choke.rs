//! Tests of the choke controller (payee) and payment planner (payer): one test per rule, the
//! web3torrent regressions, property tests of the invariants, and a simulated two-party transfer.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use paid_wire::choke::{
    BlockedPolicy, ChannelId, ChokeConfig, ChokeController, ConfigError, DisconnectReason,
    GateAction, PayReason, PayerAction, PayerConfig, PaymentPlanner, PeerMisbehaviour,
    PromptPolicy, RefuseReason, RequestOutcome, StopOutcome, TrustPolicy, UsageError, Watermark,
};
use paid_wire::message::BlockRequest;

const BLOCK: u32 = 16 * 1024;
const CH: ChannelId = ChannelId([0xab; 32]);

fn req(index: u32) -> BlockRequest {
    BlockRequest {
        index,
        begin: 0,
        length: BLOCK,
    }
}

fn drain(c: &mut ChokeController) -> Vec<GateAction> {
    std::iter::from_fn(|| c.poll_action()).collect()
}

fn drain_payer(p: &mut PaymentPlanner) -> Vec<PayerAction> {
    std::iter::from_fn(|| p.poll_action()).collect()
}

fn cfg() -> ChokeConfig {
    ChokeConfig::default().with_prompt(None)
}

/// A controller with the channel attached and the action queue empty.
fn attached(config: ChokeConfig) -> (ChokeController, Instant) {
    let now = Instant::now();
    let mut c = ChokeController::new(config).unwrap();
    c.handle_channel_ready(now, CH).unwrap();
    assert_eq!(drain(&mut c), vec![]);
    (c, now)
}

/// [`cfg`] with BEP 6 negotiated.
fn fast() -> ChokeConfig {
    cfg().with_fast_negotiated(true)
}

/// [`cfg`] at `price_per_byte` wei per byte.
fn priced(price_per_byte: u128) -> ChokeConfig {
    cfg().with_price_per_byte(price_per_byte)
}

/// [`attached`], then requests for blocks `0..n` (unpaid: queued), then the actions drained.
fn queued(config: ChokeConfig, n: u32) -> (ChokeController, Instant) {
    let (mut c, now) = attached(config);
    for i in 0..n {
        c.handle_request(now, req(i)).unwrap();
    }
    drain(&mut c);
    (c, now)
}

/// A controller without a channel yet that got requests for blocks `0..n` at `now` (its
/// actions not drained).
fn requested(now: Instant, n: u32, config: ChokeConfig) -> ChokeController {
    let mut c = ChokeController::new(config).unwrap();
    for i in 0..n {
        c.handle_request(now, req(i)).unwrap();
    }
    c
}

fn serves(actions: &[GateAction]) -> Vec<BlockRequest> {
    actions
        .iter()
        .filter_map(|a| match a {
            GateAction::Serve(r) => Some(*r),
            _ => None,
        })
        .collect()
}

// ------------------------------------------------------------------------------- serving / credit

#[test]
fn serves_when_credit_covers_and_debits_at_serve_time() {
    let (mut c, now) = attached(cfg());
    c.handle_payment(now, CH, 2 * u128::from(BLOCK)).unwrap();
    assert_eq!(c.credit(), 2 * u64::from(BLOCK));
    assert_eq!(c.handle_request(now, req(0)), Ok(RequestOutcome::Served));
    assert_eq!(drain(&mut c), vec![GateAction::Serve(req(0))]);
    // Debited at serve time, before the engine reports the bytes as sent.
    assert_eq!(c.credit(), u64::from(BLOCK));
    assert_eq!(c.stats().bytes_committed, u64::from(BLOCK));
    assert_eq!(c.stats().bytes_sent, 0);
}

#[test]
fn uncovered_requests_queue_and_stop_is_sent_once_per_exhaustion() {
    let (mut c, now) = attached(cfg());
    for i in 0..5 {
        assert_eq!(c.handle_request(now, req(i)), Ok(RequestOutcome::Queued));
    }
    assert_eq!(drain(&mut c), vec![GateAction::SendStop { channel_id: CH }]);
    assert_eq!(c.queued_len(), 5);
    assert_eq!(c.stats().stops_sent, 1);
    assert!(c.is_stopped());
}

#[test]
fn payment_converts_wei_to_bytes_with_floor_and_carry() {
    let (mut c, now) = attached(priced(3));
    let out = c.handle_payment(now, CH, 10).unwrap();
    assert_eq!(out.credited_bytes, 3); // floor(10 / 3), 1 wei carried
    let out = c.handle_payment(now, CH, 2).unwrap();
    assert_eq!(out.credited_bytes, 1); // (1 + 2) / 3: the carried wei counts
    assert_eq!(c.stats().bytes_paid, 4);
    assert_eq!(c.stats().wei_received, 12);
    // A sub-price payment credits nothing now but is not lost.
    assert_eq!(c.handle_payment(now, CH, 2).unwrap().credited_bytes, 0);
    assert_eq!(c.handle_payment(now, CH, 1).unwrap().credited_bytes, 1);
}

#[test]
fn regression_unit_mix_wei_vs_bytes() {
    // web3torrent compared a byte buffer with a wei price; at 5 wei/byte, 16384 wei buys
    // 3276 bytes, not a 16 KiB block.
    let price = 5u128;
    let (mut c, now) = attached(priced(price));
    c.handle_request(now, req(0)).unwrap();
    assert_eq!(drain(&mut c), vec![GateAction::SendStop { channel_id: CH }]);
    c.handle_payment(now, CH, u128::from(BLOCK)).unwrap();
    assert_eq!(c.credit(), u64::from(BLOCK) / 5);
    let a = drain(&mut c);
    assert!(
        serves(&a).is_empty(),
        "16384 wei must not buy 16384 bytes: {a:?}"
    );
    // Paying the rest (carry included) buys exactly one block.
    c.handle_payment(now, CH, u128::from(BLOCK) * (price - 1))
        .unwrap();
    let a = drain(&mut c);
    assert_eq!(serves(&a), vec![req(0)]);
    assert_eq!(c.credit(), 0);
    assert_eq!(c.stats().bytes_paid, u64::from(BLOCK));
}

/// A payment sends START, then serves the queue in order while the credit lasts; if it runs
/// out again, a new STOP follows and the rest stays queued.
#[test]
fn payment_sends_start_then_replays_queue_in_order_until_credit_runs_out() {
    let (start, stop) = (
        GateAction::SendStart { channel_id: CH },
        GateAction::SendStop { channel_id: CH },
    );
    let serve = |i| GateAction::Serve(req(i));
    let cases = [
        (3, 3, vec![start, serve(0), serve(1), serve(2)], vec![]),
        (5, 2, vec![start, serve(0), serve(1), stop], vec![2, 3, 4]),
    ];
    for (requests, paid_blocks, actions, left) in cases {
        let (mut c, now) = queued(cfg(), requests);
        c.handle_payment(now, CH, paid_blocks * u128::from(BLOCK))
            .unwrap();
        assert_eq!(drain(&mut c), actions);
        let left: Vec<_> = left.into_iter().map(req).collect();
        assert_eq!(c.queued().copied().collect::<Vec<_>>(), left);
        assert_eq!(c.queued_len(), left.len());
        assert_eq!(c.is_stopped(), !left.is_empty());
    }
}

#[test]
fn new_requests_do_not_overtake_queued_ones() {
    let (mut c, now) = queued(cfg(), 1);
    // A refund-free credit arriving via a tiny payment is not enough for req(0)…
    c.handle_payment(now, CH, 100).unwrap();
    drain(&mut c);
    // …and a smaller later request must wait behind it.
    let small = BlockRequest {
        index: 9,
        begin: 0,
        length: 10,
    };
    assert_eq!(c.handle_request(now, small), Ok(RequestOutcome::Queued));
    assert_eq!(c.queued().copied().collect::<Vec<_>>(), vec![req(0), small]);
}

#[test]
fn duplicate_queued_request_is_answered_once() {
    let (mut c, now) = attached(fast());
    c.handle_request(now, req(0)).unwrap();
    assert_eq!(c.handle_request(now, req(0)), Ok(RequestOutcome::Duplicate));
    assert_eq!(c.queued_len(), 1);
    c.handle_permanent_stop(now);
    let rejects = drain(&mut c)
        .into_iter()
        .filter(|a| *a == GateAction::Reject(req(0)))
        .count();
    assert_eq!(rejects, 1);
}

// ------------------------------------------------------------------------------- invalid requests

#[test]
fn oversized_request_is_misbehaviour_and_never_served() {
    let (mut c, now) = attached(fast());
    c.handle_payment(now, CH, 1 << 30).unwrap();
    drain(&mut c);
    let big = BlockRequest {
        index: 0,
        begin: 0,
        length: BLOCK + 1,
    };
    assert_eq!(
        c.handle_request(now, big),
        Err(PeerMisbehaviour::OversizedRequest {
            request: big,
            max: BLOCK
        })
    );
    assert_eq!(drain(&mut c), vec![GateAction::Reject(big)]);
    let empty = BlockRequest { length: 0, ..big };
    assert_eq!(
        c.handle_request(now, empty),
        Err(PeerMisbehaviour::EmptyRequest { request: empty })
    );
    assert_eq!(drain(&mut c), vec![GateAction::Reject(empty)]);
    assert_eq!(c.stats().invalid_requests, 2);
    assert_eq!(c.stats().bytes_committed, 0);
}

#[test]
fn oversized_request_without_fast_is_dropped_silently() {
    let (mut c, now) = attached(cfg());
    let big = BlockRequest {
        index: 0,
        begin: 0,
        length: 1 << 20,
    };
    assert!(c.handle_request(now, big).is_err());
    assert_eq!(drain(&mut c), vec![]);
    assert_eq!(c.stats().requests_dropped, 1);
}

#[test]
fn max_block_len_is_configurable() {
    let (mut c, now) = attached(cfg().with_max_block_len(1 << 17));
    c.handle_payment(now, CH, 1 << 17).unwrap();
    let r = BlockRequest {
        index: 0,
        begin: 0,
        length: 1 << 17,
    };
    assert_eq!(c.handle_request(now, r), Ok(RequestOutcome::Served));
}

// ------------------------------------------------------------------------------- queue bound

#[test]
fn queue_overflow_rejects_with_fast_and_drops_without() {
    for fast in [true, false] {
        let (mut c, now) = attached(cfg().with_max_queue_len(2).with_fast_negotiated(fast));
        c.handle_request(now, req(0)).unwrap();
        c.handle_request(now, req(1)).unwrap();
        drain(&mut c);
        assert_eq!(
            c.handle_request(now, req(2)),
            Err(PeerMisbehaviour::QueueOverflow {
                request: req(2),
                bound: 2
            })
        );
        assert_eq!(c.queued_len(), 2);
        assert_eq!(c.stats().queue_overflows, 1);
        let a = drain(&mut c);
        if fast {
            assert_eq!(a, vec![GateAction::Reject(req(2))]);
        } else {
            assert_eq!(a, vec![]);
        }
    }
}

#[test]
fn disconnect_after_n_strikes_is_emitted_once() {
    let (mut c, now) = attached(
        cfg()
            .with_max_queue_len(0)
            .with_disconnect_after_strikes(Some(3)),
    );
    for i in 0..5 {
        let _ = c.handle_request(now, req(i));
    }
    let disconnects: Vec<_> = drain(&mut c)
        .into_iter()
        .filter(|a| matches!(a, GateAction::Disconnect(_)))
        .collect();
    assert_eq!(
        disconnects,
        vec![GateAction::Disconnect(DisconnectReason::QueueOverflow)]
    );
    assert_eq!(c.strikes(), 5);
}

// ------------------------------------------------------------------------------- cancel / policies

#[test]
fn cancel_removes_a_queued_request_and_rejects_it_under_fast() {
    for fast in [true, false] {
        let (mut c, now) = attached(cfg().with_fast_negotiated(fast));
        c.handle_request(now, req(0)).unwrap();
        c.handle_request(now, req(1)).unwrap();
        drain(&mut c);
        assert!(c.handle_cancel(now, req(0)));
        assert!(!c.handle_cancel(now, req(0)), "already gone");
        assert!(!c.handle_cancel(now, req(7)), "never requested");
        assert_eq!(c.queued().copied().collect::<Vec<_>>(), vec![req(1)]);
        let a = drain(&mut c);
        assert_eq!(
            a,
            if fast {
                vec![GateAction::Reject(req(0))]
            } else {
                vec![]
            }
        );
        // A cancelled request is not served by a later payment.
        c.handle_payment(now, CH, 2 * u128::from(BLOCK)).unwrap();
        assert_eq!(serves(&drain(&mut c)), vec![req(1)]);
    }
}

#[test]
fn refuse_immediately_policy_rejects_and_still_stops_once() {
    let (mut c, now) = attached(
        cfg()
            .with_fast_negotiated(true)
            .with_blocked(BlockedPolicy::RefuseImmediately),
    );
    assert_eq!(
        c.handle_request(now, req(0)),
        Ok(RequestOutcome::Rejected(RefuseReason::Unpaid))
    );
    c.handle_request(now, req(1)).unwrap();
    assert_eq!(
        drain(&mut c),
        vec![
            GateAction::Reject(req(0)),
            GateAction::SendStop { channel_id: CH },
            GateAction::Reject(req(1)),
        ]
    );
    assert_eq!(c.queued_len(), 0);
    c.handle_payment(now, CH, u128::from(BLOCK)).unwrap();
    assert_eq!(
        drain(&mut c),
        vec![GateAction::SendStart { channel_id: CH }]
    );
    assert_eq!(c.handle_request(now, req(0)), Ok(RequestOutcome::Served));
}

#[test]
fn refuse_immediately_without_fast_drops() {
    let (mut c, now) = attached(cfg().with_blocked(BlockedPolicy::RefuseImmediately));
    assert_eq!(
        c.handle_request(now, req(0)),
        Ok(RequestOutcome::Dropped(RefuseReason::Unpaid))
    );
}

// ------------------------------------------------------------------------------- choke vs payment

#[test]
fn engine_choke_clears_queue_with_rejects_under_fast_and_keeps_payment_state() {
    let (mut c, now) = queued(fast(), 2);
    c.handle_choke(now);
    assert_eq!(
        drain(&mut c),
        vec![GateAction::Reject(req(0)), GateAction::Reject(req(1))]
    );
    assert!(
        c.is_stopped(),
        "the BitTorrent choke is not the payment gate"
    );
    assert_eq!(
        c.handle_request(now, req(2)),
        Ok(RequestOutcome::Rejected(RefuseReason::Choked))
    );
    drain(&mut c);
    // Payment while choked: START (the payment gate opens) but nothing is served.
    c.handle_payment(now, CH, u128::from(BLOCK)).unwrap();
    assert_eq!(
        drain(&mut c),
        vec![GateAction::SendStart { channel_id: CH }]
    );
    c.handle_unchoke(now);
    assert_eq!(c.handle_request(now, req(3)), Ok(RequestOutcome::Served));
}

#[test]
fn engine_choke_without_fast_drops_queue_silently() {
    let (mut c, now) = queued(cfg(), 1);
    c.handle_choke(now);
    assert_eq!(drain(&mut c), vec![]);
    assert_eq!(c.queued_len(), 0);
    assert_eq!(c.stats().requests_dropped, 1);
}

#[test]
fn payment_gate_does_not_touch_engine_choke() {
    let (mut c, now) = attached(cfg());
    c.handle_request(now, req(0)).unwrap();
    let a = drain(&mut c);
    assert!(!a.iter().any(|a| matches!(a, GateAction::Reject(_))));
    assert!(!c.is_choked());
}

// ------------------------------------------------------------------------------- permanent stop / timeout

#[test]
fn permanent_stop_clears_queue_and_refuses_later_requests() {
    let (mut c, now) = queued(fast(), 1);
    c.handle_permanent_stop(now);
    c.handle_permanent_stop(now); // idempotent
    assert_eq!(
        drain(&mut c),
        vec![
            GateAction::SendPermanentStop {
                channel_id: Some(CH)
            },
            GateAction::Reject(req(0)),
        ]
    );
    assert_eq!(
        c.handle_request(now, req(1)),
        Ok(RequestOutcome::Rejected(RefuseReason::PermanentlyStopped))
    );
    // Money arriving afterwards is counted, but nothing restarts.
    c.handle_payment(now, CH, 1 << 20).unwrap();
    assert_eq!(drain(&mut c), vec![GateAction::Reject(req(1))]);
    assert_eq!(c.stats().bytes_paid, 1 << 20);
}

#[test]
fn permanent_stop_before_any_channel_carries_no_id() {
    let mut c = ChokeController::new(cfg()).unwrap();
    c.handle_permanent_stop(Instant::now());
    assert_eq!(
        drain(&mut c),
        vec![GateAction::SendPermanentStop { channel_id: None }]
    );
}

#[test]
fn unpaid_stop_times_out_once_and_clears_the_queue() {
    let (mut c, now) = attached(
        cfg()
            .with_fast_negotiated(true)
            .with_payment_timeout(Some(Duration::from_secs(30))),
    );
    assert_eq!(c.next_deadline(), None);
    c.handle_request(now, req(0)).unwrap();
    drain(&mut c);
    let due = now + Duration::from_secs(30);
    assert_eq!(c.next_deadline(), Some(due));
    c.handle_timeout(due - Duration::from_millis(1));
    assert_eq!(drain(&mut c), vec![]);
    c.handle_timeout(due);
    assert_eq!(
        drain(&mut c),
        vec![
            GateAction::PaymentOverdue { channel_id: CH },
            GateAction::Reject(req(0))
        ]
    );
    assert_eq!(c.next_deadline(), None);
    c.handle_timeout(due + Duration::from_secs(60));
    assert_eq!(drain(&mut c), vec![]);
}

#[test]
fn payment_disarms_the_timeout() {
    let (mut c, now) = attached(cfg().with_payment_timeout(Some(Duration::from_secs(5))));
    c.handle_request(now, req(0)).unwrap();
    c.handle_payment(now, CH, u128::from(BLOCK)).unwrap();
    assert_eq!(c.next_deadline(), None);
}

// ------------------------------------------------------------------------------- bytes sent

#[test]
fn bytes_sent_confirms_and_refunds_unsent_bytes() {
    let (mut c, now) = attached(cfg());
    c.handle_payment(now, CH, u128::from(BLOCK)).unwrap();
    c.handle_request(now, req(0)).unwrap();
    c.handle_request(now, req(1)).unwrap(); // queued
    drain(&mut c);
    assert_eq!(c.in_flight_len(), 1);
    // The engine sent only 1000 bytes (e.g. aborted after a cancel): the rest is refunded…
    c.handle_bytes_sent(now, req(0), 1000).unwrap();
    assert_eq!(c.stats().bytes_sent, 1000);
    assert_eq!(c.stats().bytes_committed, 1000);
    assert_eq!(c.credit(), u64::from(BLOCK) - 1000);
    assert_eq!(c.in_flight_len(), 0);
    // …and not reported twice.
    assert_eq!(
        c.handle_bytes_sent(now, req(0), 0),
        Err(UsageError::NotBeingServed { request: req(0) })
    );
    assert_eq!(
        c.handle_bytes_sent(now, req(1), BLOCK + 1),
        Err(UsageError::SentMoreThanRequested {
            request: req(1),
            sent: BLOCK + 1
        })
    );
}

#[test]
fn refund_serves_waiting_requests() {
    let (mut c, now) = attached(cfg());
    c.handle_payment(now, CH, u128::from(BLOCK)).unwrap();
    c.handle_request(now, req(0)).unwrap();
    c.handle_request(now, req(1)).unwrap();
    drain(&mut c);
    c.handle_bytes_sent(now, req(0), 0).unwrap();
    assert_eq!(serves(&drain(&mut c)), vec![req(1)]);
}

// ------------------------------------------------------------------------------- prompt

#[test]
fn low_watermark_prompt_is_emitted_once_per_refill() {
    let (mut c, now) = attached(
        cfg()
            .with_prompt(Some(PromptPolicy {
                watermark: Watermark::PercentOfLastPayment(50),
                suggested_bytes: None,
            }))
            .with_price_per_byte(2),
    );
    c.handle_payment(now, CH, 2 * 4 * u128::from(BLOCK))
        .unwrap(); // 4 blocks
    c.handle_request(now, req(0)).unwrap();
    c.handle_request(now, req(1)).unwrap();
    assert_eq!(c.stats().prompts_sent, 0, "exactly half left: not below");
    c.handle_request(now, req(2)).unwrap();
    let a = drain(&mut c);
    assert_eq!(
        a.last(),
        Some(&GateAction::PromptPayment {
            channel_id: CH,
            suggested_bytes: 4 * u64::from(BLOCK),
            suggested_amount: 2 * 4 * u128::from(BLOCK),
        })
    );
    c.handle_request(now, req(3)).unwrap();
    assert_eq!(serves(&drain(&mut c)), vec![req(3)]);
    assert_eq!(c.stats().prompts_sent, 1, "once per refill");
    // The refill re-arms it.
    c.handle_payment(now, CH, 2 * u128::from(BLOCK)).unwrap();
    c.handle_request(now, req(4)).unwrap();
    assert_eq!(c.stats().prompts_sent, 2);
}

#[test]
fn prompt_with_fixed_watermark_and_suggestion() {
    let (mut c, now) = attached(
        cfg()
            .with_prompt(Some(PromptPolicy {
                watermark: Watermark::Bytes(u64::from(BLOCK) + 1),
                suggested_bytes: Some(1 << 20),
            }))
            .with_trust(TrustPolicy::fixed(2 * u64::from(BLOCK))),
    );
    c.handle_request(now, req(0)).unwrap();
    assert_eq!(
        drain(&mut c),
        vec![
            GateAction::Serve(req(0)),
            GateAction::PromptPayment {
                channel_id: CH,
                suggested_bytes: 1 << 20,
                suggested_amount: 1 << 20,
            }
        ]
    );
}

#[test]
fn no_prompt_while_a_stop_is_outstanding() {
    let now = Instant::now();
    let mut c = ChokeController::new(cfg().with_prompt(Some(PromptPolicy {
        watermark: Watermark::Bytes(u64::MAX),
        suggested_bytes: None,
    })))
    .unwrap();
    c.handle_request(now, req(0)).unwrap();
    assert_eq!(drain(&mut c), vec![GateAction::NeedChannel]);
    // Blocked demand at channel-ready: STOP, and no prompt on top of it.
    c.handle_channel_ready(now, CH).unwrap();
    assert_eq!(drain(&mut c), vec![GateAction::SendStop { channel_id: CH }]);
    c.handle_request(now, req(1)).unwrap();
    assert_eq!(drain(&mut c), vec![]);
    // Without blocked demand, a channel-ready below the watermark prompts at once.
    let (mut c, _) = attached(cfg());
    c.handle_payment(now, CH, 1).unwrap();
    assert_eq!(c.stats().prompts_sent, 0, "prompt disabled in cfg()");
}

// ------------------------------------------------------------------------------- trust

#[test]
fn initial_trust_is_served_free_then_blocks() {
    let (mut c, now) = attached(cfg().with_trust(TrustPolicy::fixed(2 * u64::from(BLOCK))));
    assert_eq!(c.handle_request(now, req(0)), Ok(RequestOutcome::Served));
    assert_eq!(c.handle_request(now, req(1)), Ok(RequestOutcome::Served));
    assert_eq!(c.handle_request(now, req(2)), Ok(RequestOutcome::Queued));
    assert_eq!(c.stats().bytes_paid, 0);
    assert_eq!(c.stats().bytes_committed, 2 * u64::from(BLOCK));
}

#[test]
fn trust_window_grows_per_qualifying_payment_up_to_cap() {
    let kib = 1024u64;
    let (mut c, now) =
        attached(cfg().with_trust(TrustPolicy::growing(64 * kib, 64 * kib, 200 * kib)));
    assert_eq!(c.trust_allowance(), 64 * kib);
    c.handle_payment(now, CH, u128::from(64 * kib)).unwrap();
    assert_eq!(c.trust_allowance(), 128 * kib);
    // Dust does not grow the window (min qualifying payment = increment).
    for _ in 0..100 {
        c.handle_payment(now, CH, 1).unwrap();
    }
    assert_eq!(c.trust_allowance(), 128 * kib);
    c.handle_payment(now, CH, u128::from(64 * kib)).unwrap();
    c.handle_payment(now, CH, u128::from(64 * kib)).unwrap();
    assert_eq!(c.trust_allowance(), 200 * kib, "capped");
    assert_eq!(
        c.credit(),
        c.stats().bytes_paid + c.trust_allowance() - c.stats().bytes_committed
    );
}

// ------------------------------------------------------------------------------- channel

#[test]
fn regression_2220_burst_of_first_requests_one_channel() {
    let now = Instant::now();
    let mut c = requested(now, 50, cfg());
    let a = drain(&mut c);
    assert_eq!(
        a,
        vec![GateAction::NeedChannel],
        "one channel for the whole burst"
    );
    assert!(c.is_channel_pending());
    assert_eq!(c.queued_len(), 50);
    c.handle_channel_ready(now, CH).unwrap();
    assert_eq!(drain(&mut c), vec![GateAction::SendStop { channel_id: CH }]);
    for i in 50..60 {
        c.handle_request(now, req(i)).unwrap();
    }
    assert!(!drain(&mut c).contains(&GateAction::NeedChannel));
}

#[test]
fn regression_1178_no_free_data_while_joining() {
    let now = Instant::now();
    // Default policy, no trust: nothing is served while the channel is being set up.
    let mut c = requested(now, 5, cfg());
    assert!(serves(&drain(&mut c)).is_empty());
    assert_eq!(c.stats().bytes_committed, 0);

    // Trust served before the channel (default flag): at most the allowance.
    let mut c = requested(
        now,
        5,
        cfg().with_trust(TrustPolicy::fixed(u64::from(BLOCK))),
    );
    assert_eq!(
        drain(&mut c),
        vec![GateAction::NeedChannel, GateAction::Serve(req(0))]
    );

    // Strict: not even the allowance before the channel; served once it is ready.
    let mut c = requested(
        now,
        5,
        cfg()
            .with_trust(TrustPolicy::fixed(u64::from(BLOCK)))
            .with_serve_trust_before_channel(false),
    );
    assert_eq!(drain(&mut c), vec![GateAction::NeedChannel]);
    c.handle_channel_ready(now, CH).unwrap();
    assert_eq!(
        drain(&mut c),
        vec![
            GateAction::Serve(req(0)),
            GateAction::SendStop { channel_id: CH }
        ]
    );
}

#[test]
fn channel_ready_is_idempotent_and_rejects_a_second_channel() {
    let (mut c, now) = attached(cfg());
    assert_eq!(c.handle_channel_ready(now, CH), Ok(()));
    assert_eq!(
        c.handle_channel_ready(now, ChannelId([1; 32])),
        Err(UsageError::WrongChannel {
            attached: CH,
            got: ChannelId([1; 32])
        })
    );
    assert_eq!(c.channel_id(), Some(CH));
}

#[test]
fn payment_before_channel_or_on_another_channel_is_misuse() {
    let now = Instant::now();
    let mut c = ChokeController::new(cfg()).unwrap();
    assert_eq!(c.handle_payment(now, CH, 5), Err(UsageError::NoChannel));
    c.handle_channel_ready(now, CH).unwrap();
    assert_eq!(
        c.handle_payment(now, ChannelId([2; 32]), 5),
        Err(UsageError::WrongChannel {
            attached: CH,
            got: ChannelId([2; 32])
        })
    );
    assert_eq!(c.stats().wei_received, 0);
}

// ------------------------------------------------------------------------------- zero / overflow

#[test]
fn zero_payment_is_harmless() {
    let (mut c, now) = attached(priced(7));
    // While not stopped.
    let out = c.handle_payment(now, CH, 0).unwrap();
    assert_eq!(out.credited_bytes, 0);
    assert_eq!(drain(&mut c), vec![]);
    // While stopped: no START spam, no replay, state intact.
    c.handle_request(now, req(0)).unwrap();
    drain(&mut c);
    let before = c.stats();
    for _ in 0..10 {
        c.handle_payment(now, CH, 0).unwrap();
    }
    assert_eq!(drain(&mut c), vec![]);
    assert!(c.is_stopped());
    assert_eq!(c.queued_len(), 1);
    assert_eq!(c.stats().stops_sent, before.stops_sent);
    assert_eq!(c.stats().starts_sent, 0);
    assert_eq!(c.stats().ineffective_payments, 11);
    assert_eq!(c.stats().payments, 0);
    // A real payment still works afterwards.
    c.handle_payment(now, CH, 7 * u128::from(BLOCK)).unwrap();
    assert_eq!(
        drain(&mut c),
        vec![
            GateAction::SendStart { channel_id: CH },
            GateAction::Serve(req(0))
        ]
    );
}

#[test]
fn huge_amounts_saturate_instead_of_overflowing() {
    let (mut c, now) =
        attached(cfg().with_trust(TrustPolicy::growing(u64::MAX, u64::MAX, u64::MAX)));
    c.handle_payment(now, CH, u128::MAX).unwrap();
    c.handle_payment(now, CH, u128::MAX).unwrap();
    assert_eq!(c.stats().wei_received, u128::MAX);
    assert_eq!(c.stats().bytes_paid, u64::MAX);
    assert_eq!(c.credit(), u64::MAX);
    assert_eq!(c.handle_request(now, req(0)), Ok(RequestOutcome::Served));

    let mut c = ChokeController::new(cfg().with_price_per_byte(u128::MAX).with_prompt(Some(
        PromptPolicy {
            watermark: Watermark::Bytes(u64::MAX),
            suggested_bytes: Some(u64::MAX),
        },
    )))
    .unwrap();
    c.handle_channel_ready(now, CH).unwrap();
    c.handle_payment(now, CH, u128::MAX).unwrap();
    assert_eq!(c.stats().bytes_paid, 1);
    let a = drain(&mut c);
    assert!(a.contains(&GateAction::PromptPayment {
        channel_id: CH,
        suggested_bytes: u64::MAX,
        suggested_amount: u128::MAX,
    }));
}

#[test]
fn config_validation() {
    let bad = |c: ChokeConfig| ChokeController::new(c).unwrap_err();
    assert_eq!(bad(ChokeConfig::with_price(0)), ConfigError::ZeroPrice);
    assert_eq!(
        bad(cfg().with_max_block_len(0)),
        ConfigError::ZeroMaxBlockLen
    );
    assert_eq!(
        bad(cfg().with_prompt(Some(PromptPolicy {
            watermark: Watermark::PercentOfLastPayment(101),
            suggested_bytes: None
        }))),
        ConfigError::WatermarkPercentOver100 { percent: 101 }
    );
    assert_eq!(
        bad(cfg().with_disconnect_after_strikes(Some(0))),
        ConfigError::ZeroStrikeLimit
    );
    assert_eq!(
        PaymentPlanner::new(PayerConfig::new(1, 0)).unwrap_err(),
        ConfigError::ZeroGranularity
    );
    assert_eq!(
        PaymentPlanner::new(PayerConfig::new(0, 1)).unwrap_err(),
        ConfigError::ZeroPrice
    );
}

#[test]
fn set_fast_negotiated_switches_reject_vs_drop() {
    let (mut c, now) = attached(cfg().with_max_queue_len(0));
    assert!(!c.fast_negotiated());
    let _ = c.handle_request(now, req(0));
    c.set_fast_negotiated(true);
    let _ = c.handle_request(now, req(1));
    let rejects: Vec<_> = drain(&mut c)
        .into_iter()
        .filter(|a| matches!(a, GateAction::Reject(_)))
        .collect();
    assert_eq!(rejects, vec![GateAction::Reject(req(1))]);
}

// ------------------------------------------------------------------------------- payer

fn planner(granularity: u64) -> PaymentPlanner {
    planner_with(1, granularity, |_| {})
}

/// A planner at `price` wei per byte paying by `granularity` bytes, `tweak` applied to its
/// configuration.
fn planner_with(
    price: u128,
    granularity: u64,
    tweak: impl FnOnce(&mut PayerConfig),
) -> PaymentPlanner {
    let mut config = PayerConfig::new(price, granularity);
    tweak(&mut config);
    PaymentPlanner::new(config).unwrap()
}

fn pay(bytes: u64, reason: PayReason) -> PayerAction {
    pay_at(1, bytes, reason)
}

/// A payment for `bytes` at `price` wei per byte.
fn pay_at(price: u128, bytes: u64, reason: PayReason) -> PayerAction {
    PayerAction::Pay {
        channel_id: CH,
        amount: price * u128::from(bytes),
        bytes,
        reason,
    }
}

#[test]
fn payer_pays_once_per_stop_and_acks_a_repeated_stop() {
    let mut p = planner(80 * 1024);
    assert_eq!(p.handle_stop(CH), StopOutcome::Paid);
    assert_eq!(p.handle_stop(CH), StopOutcome::AlreadyStopped);
    assert_eq!(p.handle_stop(CH), StopOutcome::AlreadyStopped);
    assert_eq!(drain_payer(&mut p), vec![pay(80 * 1024, PayReason::Stop)]);
    assert_eq!(p.stats().repeated_stops, 2);
    p.handle_start();
    assert!(!p.is_stopped());
    assert_eq!(p.handle_stop(CH), StopOutcome::Paid);
    assert_eq!(p.stats().stop_payments, 2);
}

#[test]
fn payer_pays_ahead_on_prompt_only_when_not_stopped() {
    let mut p = planner(1000);
    assert!(p.handle_prompt(CH, 5000));
    assert_eq!(drain_payer(&mut p), vec![pay(1000, PayReason::PayAhead)]);
    p.handle_stop(CH);
    drain_payer(&mut p);
    assert!(!p.handle_prompt(CH, 5000), "the STOP payment covers it");
    let mut off = planner_with(1, 1000, |c| c.pay_ahead = false);
    assert!(!off.handle_prompt(CH, 1));
}

#[test]
fn payer_budget_partial_payment_then_out_of_funds_once() {
    let mut p = planner_with(2, 1000, |c| c.budget_wei = Some(2500));
    p.handle_stop(CH);
    p.handle_start();
    assert_eq!(p.handle_stop(CH), StopOutcome::Paid); // 250 bytes: the remainder
    p.handle_start();
    assert_eq!(p.handle_stop(CH), StopOutcome::Deferred);
    p.handle_bytes_received(10); // retries, still broke: no second OutOfFunds
    let a = drain_payer(&mut p);
    assert_eq!(
        a,
        vec![
            pay_at(2, 1000, PayReason::Stop),
            pay_at(2, 250, PayReason::Stop),
            PayerAction::OutOfFunds { channel_id: CH },
        ]
    );
    p.raise_budget(2000);
    assert_eq!(drain_payer(&mut p), vec![pay_at(2, 1000, PayReason::Stop)]);
}

#[test]
fn payer_defers_while_too_much_paid_data_is_undelivered() {
    let mut p = planner_with(1, 1000, |c| c.max_unreceived_bytes = Some(1500));
    assert_eq!(p.handle_stop(CH), StopOutcome::Paid);
    p.handle_start();
    assert!(p.handle_prompt(CH, 0)); // 2000 unreceived now
    assert_eq!(p.handle_stop(CH), StopOutcome::Deferred);
    p.handle_bytes_received(400); // 1600 ≥ 1500: still deferred
    assert_eq!(drain_payer(&mut p).len(), 2);
    p.handle_bytes_received(200); // 1400 < 1500: the STOP is paid now, once
    p.handle_bytes_received(1000);
    assert_eq!(drain_payer(&mut p), vec![pay(1000, PayReason::Stop)]);
}

#[test]
fn payer_caps_payments_at_bytes_wanted() {
    let mut p = planner(1000);
    p.set_bytes_wanted(Some(1500));
    p.handle_stop(CH);
    p.handle_start();
    p.handle_stop(CH);
    p.handle_start();
    assert_eq!(p.handle_stop(CH), StopOutcome::Deferred);
    assert_eq!(
        drain_payer(&mut p),
        vec![pay(1000, PayReason::Stop), pay(500, PayReason::Stop)]
    );
}

#[test]
fn payer_permanent_stop_closes_the_channel_and_stops_paying() {
    let mut p = planner(1000);
    p.handle_channel_ready(CH);
    p.handle_permanent_stop(None);
    p.handle_permanent_stop(Some(CH));
    assert_eq!(
        drain_payer(&mut p),
        vec![PayerAction::CloseChannel { channel_id: CH }]
    );
    assert_eq!(p.handle_stop(CH), StopOutcome::AlreadyStopped);
    assert!(!p.handle_prompt(CH, 1));
    p.handle_start();
    assert!(p.is_stopped());
    assert_eq!(drain_payer(&mut p), vec![]);
}

#[test]
fn regression_1876_stop_while_blocked_no_deadlock() {
    // The payee serves 4 of 5 blocked requests, STOPs on the 5th. A web3torrent-era payee may
    // also send a spurious second STOP while the payer is stopped. The payer acks it without
    // paying twice, and every payment is answered by START (then STOP again if needed), so
    // the transfer always progresses.
    let now = Instant::now();
    let (mut seeder, _) = attached(cfg());
    let mut payer = planner(4 * u64::from(BLOCK));
    for i in 0..5 {
        seeder.handle_request(now, req(i)).unwrap();
    }
    let mut served = Vec::new();
    let mut to_payer: VecDeque<GateAction> = drain(&mut seeder).into();
    // Spurious duplicate STOP on the wire.
    to_payer.push_back(GateAction::SendStop { channel_id: CH });
    let mut rounds = 0;
    while served.len() < 5 {
        rounds += 1;
        assert!(rounds < 20, "deadlock: served {served:?}");
        while let Some(a) = to_payer.pop_front() {
            match a {
                GateAction::SendStop { channel_id } => {
                    payer.handle_stop(channel_id);
                }
                GateAction::SendStart { .. } => payer.handle_start(),
                GateAction::Serve(r) => {
                    served.push(r);
                    seeder.handle_bytes_sent(now, r, r.length).unwrap();
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        while let Some(PayerAction::Pay {
            channel_id, amount, ..
        }) = payer.poll_action()
        {
            seeder.handle_payment(now, channel_id, amount).unwrap();
        }
        to_payer.extend(drain(&mut seeder));
    }
    assert_eq!(served, (0..5).map(req).collect::<Vec<_>>());
    assert_eq!(payer.stats().stop_payments, 2, "one payment per real STOP");
    assert_eq!(payer.stats().repeated_stops, 1);
}

// ------------------------------------------------------------------------------- property tests

mod props {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    #[derive(Debug, Clone)]
    enum Op {
        Request { index: u32, length: u32 },
        Cancel { index: u32, length: u32 },
        Payment(u128),
        BytesSent { pick: usize, percent: u32 },
        Tick(u64),
        ChannelReady,
        Choke,
        Unchoke,
    }

    fn length() -> impl Strategy<Value = u32> {
        prop_oneof![
            6 => Just(BLOCK),
            2 => 1u32..BLOCK,
            1 => Just(0u32),
            1 => (BLOCK + 1)..(2 * BLOCK),
        ]
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            8 => (0u32..12, length()).prop_map(|(index, length)| Op::Request { index, length }),
            2 => (0u32..12, length()).prop_map(|(index, length)| Op::Cancel { index, length }),
            4 => prop_oneof![Just(0u128), 0u128..100_000, 0u128..1_000].prop_map(Op::Payment),
            4 => (any::<usize>(), 0u32..=100).prop_map(|(pick, percent)| Op::BytesSent { pick, percent }),
            2 => (0u64..20_000).prop_map(Op::Tick),
            1 => Just(Op::ChannelReady),
            1 => Just(Op::Choke),
            1 => Just(Op::Unchoke),
        ]
    }

    fn config() -> impl Strategy<Value = ChokeConfig> {
        (
            prop_oneof![Just(1u128), Just(3), Just(7)],
            0usize..6,
            any::<bool>(),
            any::<bool>(),
            (0u64..40_000, 0u64..20_000, 0u64..100_000),
            any::<bool>(),
            prop::option::of(prop_oneof![
                (0u64..60_000).prop_map(Watermark::Bytes),
                (0u8..=100).prop_map(Watermark::PercentOfLastPayment),
            ]),
            prop::option::of(1u64..10_000),
        )
            .prop_map(
                |(price, qlen, fast, refuse, (ti, tinc, tmax), before, wm, timeout)| {
                    ChokeConfig::default()
                        .with_price_per_byte(price)
                        .with_max_queue_len(qlen)
                        .with_fast_negotiated(fast)
                        .with_blocked(if refuse {
                            BlockedPolicy::RefuseImmediately
                        } else {
                            BlockedPolicy::QueueUntilPaid
                        })
                        .with_trust(TrustPolicy::growing(ti, tinc, tmax))
                        .with_serve_trust_before_channel(before)
                        .with_prompt(wm.map(|watermark| PromptPolicy {
                            watermark,
                            suggested_bytes: None,
                        }))
                        .with_payment_timeout(timeout.map(Duration::from_millis))
                        .with_disconnect_after_strikes(Some(3))
                },
            )
    }

    /// Checks one batch of actions against the model; returns nothing, panics via prop_assert.
    struct Model {
        /// Requests the controller still owes an answer (queued), by key.
        owed: HashSet<BlockRequest>,
        in_flight: Vec<BlockRequest>,
        answered: u64,
        submitted: u64,
        last_gate: Option<bool>, // Some(true) = last was STOP
        need_channel: u32,
    }

    fn check(
        c: &ChokeController,
        m: &mut Model,
        current: Option<(BlockRequest, Result<RequestOutcome, PeerMisbehaviour>)>,
        actions: &[GateAction],
        fast: bool,
    ) -> Result<(), TestCaseError> {
        let mut current_answer_pending = match &current {
            Some((_, Ok(RequestOutcome::Served | RequestOutcome::Rejected(_)))) => true,
            Some((_, Err(_))) => fast,
            _ => false,
        };
        if let Some((r, Ok(RequestOutcome::Queued))) = &current {
            prop_assert!(m.owed.insert(*r), "queued twice without answer");
        }
        for a in actions {
            match a {
                GateAction::Serve(r) | GateAction::Reject(r) => {
                    let is_current = current.as_ref().is_some_and(|(cr, _)| cr == r);
                    if is_current && current_answer_pending {
                        current_answer_pending = false;
                    } else {
                        prop_assert!(m.owed.remove(r), "answer to a request not owed: {a:?}");
                    }
                    m.answered += 1;
                    if matches!(a, GateAction::Serve(_)) {
                        m.in_flight.push(*r);
                    } else {
                        prop_assert!(fast, "reject without BEP 6");
                    }
                }
                GateAction::SendStop { .. } => {
                    prop_assert_ne!(m.last_gate, Some(true), "two STOPs without a START");
                    m.last_gate = Some(true);
                }
                GateAction::SendStart { .. } => {
                    prop_assert_eq!(m.last_gate, Some(true), "START without a STOP");
                    m.last_gate = Some(false);
                }
                GateAction::NeedChannel => m.need_channel += 1,
                _ => {}
            }
        }
        prop_assert!(!current_answer_pending, "immediate answer missing");
        prop_assert!(m.need_channel <= 1);
        // served ≤ paid + trust, at every instant.
        let s = c.stats();
        prop_assert!(
            u128::from(s.bytes_committed)
                <= u128::from(s.bytes_paid) + u128::from(c.trust_allowance())
        );
        prop_assert!(s.bytes_sent <= s.bytes_committed);
        prop_assert!(c.queued_len() <= c.config().max_queue_len);
        let queued: HashSet<_> = c.queued().copied().collect();
        prop_assert_eq!(&queued, &m.owed);
        prop_assert_eq!(c.in_flight_len(), m.in_flight.len());
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn invariants_hold_over_random_sequences(
            config in config(),
            ops in prop::collection::vec(op(), 1..120),
        ) {
            let fast = config.fast_negotiated;
            let t0 = Instant::now();
            let mut now = t0;
            let mut c = ChokeController::new(config).unwrap();
            let mut m = Model {
                owed: HashSet::new(),
                in_flight: Vec::new(),
                answered: 0,
                submitted: 0,
                last_gate: None,
                need_channel: 0,
            };
            let mut sent_by_req: HashMap<BlockRequest, u64> = HashMap::new();
            for op in ops {
                let mut current = None;
                match op {
                    Op::Request { index, length } => {
                        let r = BlockRequest { index, begin: 0, length };
                        let out = c.handle_request(now, r);
                        if out != Ok(RequestOutcome::Duplicate) {
                            m.submitted += 1;
                        }
                        current = Some((r, out));
                    }
                    Op::Cancel { index, length } => {
                        let r = BlockRequest { index, begin: 0, length };
                        let was = m.owed.contains(&r);
                        prop_assert_eq!(c.handle_cancel(now, r), was);
                        if was && !fast {
                            m.owed.remove(&r); // answered by silence
                        }
                    }
                    Op::Payment(amount) => {
                        let res = c.handle_payment(now, CH, amount);
                        prop_assert_eq!(res.is_err(), c.channel_id().is_none());
                    }
                    Op::BytesSent { pick, percent } => {
                        if !m.in_flight.is_empty() {
                            let r = m.in_flight.remove(pick % m.in_flight.len());
                            let sent = r.length / 100 * percent.min(100);
                            c.handle_bytes_sent(now, r, sent).unwrap();
                            *sent_by_req.entry(r).or_default() += u64::from(sent);
                        }
                    }
                    Op::Tick(ms) => {
                        now += Duration::from_millis(ms);
                        if c.next_deadline().is_some_and(|d| d <= now) {
                            c.handle_timeout(now);
                            if !fast {
                                m.owed.clear();
                            }
                        }
                    }
                    Op::ChannelReady => {
                        if c.channel_id().is_none() {
                            c.handle_channel_ready(now, CH).unwrap();
                        }
                    }
                    Op::Choke => {
                        c.handle_choke(now);
                        if !fast {
                            m.owed.clear();
                        }
                    }
                    Op::Unchoke => c.handle_unchoke(now),
                }
                let actions = drain(&mut c);
                check(&c, &mut m, current, &actions, fast)?;
            }
            // Final clear: every queued request gets its answer (reject under BEP 6).
            c.handle_permanent_stop(now);
            let actions = drain(&mut c);
            if !fast {
                m.owed.clear();
            }
            check(&c, &mut m, None, &actions, fast)?;
            prop_assert!(m.owed.is_empty());
            prop_assert_eq!(c.queued_len(), 0);
            if fast {
                prop_assert_eq!(m.answered, m.submitted, "exactly one answer per request");
            } else {
                prop_assert!(m.answered <= m.submitted);
            }
            let sent: u64 = sent_by_req.values().sum();
            prop_assert_eq!(sent, c.stats().bytes_sent);
        }

        #[test]
        fn payer_never_pays_twice_for_one_stop(
            events in prop::collection::vec(0u8..4, 1..200),
        ) {
            let mut p = planner(1000);
            let mut stopped = false;
            let mut paid_this_stop = false;
            for e in events {
                match e {
                    0 => { p.handle_stop(CH); stopped = true; }
                    1 => { p.handle_start(); stopped = false; paid_this_stop = false; }
                    2 => { p.handle_prompt(CH, 10); }
                    _ => p.handle_bytes_received(500),
                }
                for a in drain_payer(&mut p) {
                    if let PayerAction::Pay { reason: PayReason::Stop, .. } = a {
                        prop_assert!(stopped && !paid_this_stop, "second payment for one STOP");
                        paid_this_stop = true;
                    }
                    if let PayerAction::Pay { reason: PayReason::PayAhead, .. } = a {
                        prop_assert!(!stopped);
                    }
                }
                // Every STOP is paid at once (no limits configured).
                prop_assert_eq!(stopped, paid_this_stop);
            }
        }
    }
}

// ------------------------------------------------------------------------------- two-party simulation

/// Messages on the simulated wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Msg {
    // payer → payee
    Request(u32),
    Payment(u128),
    // payee → payer
    Piece(u32),
    Stop,
    Start,
    Prompt,
    // local event at the payee
    ChannelReady,
}

struct SimResult {
    /// Requests that had to wait in the queue for a payment after the first START.
    stalls: u64,
    stops_after_warmup: u64,
    payments: u64,
    finish_ms: u64,
}

/// Downloads `total` bytes in 16 KiB blocks, `pipeline` requests outstanding, `latency_ms`
/// one way, `block_us` upload time per block, paying `granularity` bytes per payment.
fn simulate(total: u64, granularity: u64, pipeline: u32, prompt: bool) -> SimResult {
    let latency = 20_000u64; // µs, one way
    let block_us = 1_000u64; // 16 MB/s upload
    let price = 3u128;
    let blocks = u32::try_from(total / u64::from(BLOCK)).unwrap();
    let t0 = Instant::now();
    let mut seeder = ChokeController::new(
        ChokeConfig::default()
            .with_price_per_byte(price)
            .with_prompt(prompt.then_some(PromptPolicy {
                watermark: Watermark::PercentOfLastPayment(50),
                suggested_bytes: None,
            })),
    )
    .unwrap();
    let mut payer = PaymentPlanner::new(PayerConfig::new(price, granularity)).unwrap();
    payer.set_bytes_wanted(Some(total));

    let mut wire: BinaryHeap<Reverse<(u64, u64, bool, Msg)>> = BinaryHeap::new(); // (t, seq, to_payee, msg)
    let mut seq = 0u64;
    let mut send = |wire: &mut BinaryHeap<_>, t: u64, to_payee: bool, m: Msg| {
        seq += 1;
        wire.push(Reverse((t, seq, to_payee, m)));
    };
    let mut next_block = 0u32;
    for _ in 0..pipeline.min(blocks) {
        send(&mut wire, latency, true, Msg::Request(next_block));
        next_block += 1;
    }
    let mut upload_free_at = 0u64;
    let mut received = 0u32;
    let mut warm = false;
    let mut stalls = 0;
    let mut stops_after_warmup = 0;
    let mut finish = 0;
    while let Some(Reverse((t, _, to_payee, msg))) = wire.pop() {
        let now = t0 + Duration::from_micros(t);
        if to_payee {
            match msg {
                Msg::Request(i) => {
                    if seeder.handle_request(now, req(i)).unwrap() == RequestOutcome::Queued && warm
                    {
                        stalls += 1;
                    }
                }
                Msg::Payment(a) => {
                    seeder.handle_payment(now, CH, a).unwrap();
                }
                Msg::ChannelReady => seeder.handle_channel_ready(now, CH).unwrap(),
                _ => unreachable!(),
            }
            while let Some(a) = seeder.poll_action() {
                match a {
                    GateAction::NeedChannel => {
                        // Channel setup: one round trip.
                        send(&mut wire, t + 2 * latency, true, Msg::ChannelReady);
                        payer.handle_channel_ready(CH);
                    }
                    GateAction::Serve(r) => {
                        upload_free_at = upload_free_at.max(t) + block_us;
                        seeder.handle_bytes_sent(now, r, r.length).unwrap();
                        send(
                            &mut wire,
                            upload_free_at + latency,
                            false,
                            Msg::Piece(r.index),
                        );
                    }
                    GateAction::SendStop { .. } => {
                        if warm {
                            stops_after_warmup += 1;
                        }
                        send(&mut wire, t + latency, false, Msg::Stop);
                    }
                    GateAction::SendStart { .. } => {
                        warm = true;
                        send(&mut wire, t + latency, false, Msg::Start);
                    }
                    GateAction::PromptPayment { .. } => {
                        send(&mut wire, t + latency, false, Msg::Prompt)
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
        } else {
            match msg {
                Msg::Piece(_) => {
                    received += 1;
                    payer.handle_bytes_received(u64::from(BLOCK));
                    if received == blocks {
                        finish = t;
                    }
                    if next_block < blocks {
                        send(&mut wire, t + latency, true, Msg::Request(next_block));
                        next_block += 1;
                    }
                }
                Msg::Stop => {
                    payer.handle_stop(CH);
                }
                Msg::Start => payer.handle_start(),
                Msg::Prompt => {
                    payer.handle_prompt(CH, 0);
                }
                _ => unreachable!(),
            }
            while let Some(a) = payer.poll_action() {
                if let PayerAction::Pay { amount, .. } = a {
                    send(&mut wire, t + latency, true, Msg::Payment(amount));
                }
            }
        }
    }
    assert_eq!(received, blocks, "transfer incomplete");
    let s = seeder.stats();
    assert!(
        s.bytes_sent <= s.bytes_paid,
        "served more than paid (no trust configured)"
    );
    assert_eq!(s.wei_received, payer.stats().wei_paid);
    SimResult {
        stalls,
        stops_after_warmup,
        payments: s.payments,
        finish_ms: finish / 1000,
    }
}

#[test]
fn two_party_transfer_prompt_removes_payment_stalls() {
    let total = 10 * 1024 * 1024u64;
    for granularity in [256 * 1024u64, 1024 * 1024, 2 * 1024 * 1024] {
        let with = simulate(total, granularity, 4, true);
        let without = simulate(total, granularity, 4, false);
        let rounds = total / granularity;
        assert_eq!(
            with.stalls, 0,
            "granularity {granularity}: stalls with prompt"
        );
        assert_eq!(with.stops_after_warmup, 0);
        // Without the prompt every refill costs a payment round trip.
        assert!(
            without.stops_after_warmup >= rounds - 1,
            "granularity {granularity}: {} stops",
            without.stops_after_warmup
        );
        assert!(without.stalls >= rounds - 1);
        assert!(with.payments >= rounds && without.payments >= rounds);
        assert!(
            with.finish_ms < without.finish_ms,
            "granularity {granularity}: {} ms vs {} ms",
            with.finish_ms,
            without.finish_ms
        );
        eprintln!(
            "granularity {:>7}: with prompt {} ms, 0 stalls; without {} ms, {} STOPs, {} queued requests",
            granularity,
            with.finish_ms,
            without.finish_ms,
            without.stops_after_warmup,
            without.stalls
        );
    }
}
