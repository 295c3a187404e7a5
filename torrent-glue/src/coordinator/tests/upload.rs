//! The uploader: request gate, choking, channel creation and credit.

use super::*;

#[test]
fn burst_of_first_requests_creates_one_channel_and_stop_follows_the_proposal() {
    let mut h = H::new(config());
    let buyer = addr(0xB1);
    let k = h.paying(1, buyer);
    assert_eq!(h.engine(), vec![EngineCommand::Unchoke { peer: k }]);
    for i in 0..20 {
        assert_eq!(h.request(k, i), RequestDecision::Defer);
    }
    let cmds = h.channel();
    assert_eq!(creates(&cmds), 1);
    assert_eq!(
        cmds[0],
        ChannelCommand::Create {
            peer: buyer,
            peer_destination: Some(buyer),
            deposit: UploadConfig::default().deposit,
            price: Some(1),
            nonce: None,
            peer_hub: None,
        }
    );
    // Nothing is sent before the channel id exists (STOP carries it).
    assert!(h.engine().is_empty());
    let id = [1; 32];
    // STOP as soon as the channel is proposed (web3torrent's order); nothing served.
    h.created(buyer, ChannelId(id));
    let cmds = h.engine();
    assert_eq!(cmds.len(), 1, "{cmds:?}");
    assert_eq!(notices(&cmds), stop_to(k, ChannelId(id)));
    // Funded: that STOP is not repeated, and still nothing is served before payment.
    h.ready(id, buyer, Role::Payee, 1 << 30);
    assert!(h.engine().is_empty());
    // A second connection of the same identity in the middle of it all: no new channel.
    let k2 = h.paying(2, buyer);
    h.request(k2, 100);
    assert_eq!(creates(&h.channel()), 0);
    assert_eq!(notices(&h.engine()), stop_to(k2, ChannelId(id)));
}

#[test]
fn burst_across_connections_before_funding_creates_one_channel() {
    let mut h = H::new(config());
    let buyer = addr(0xB1);
    let ks: Vec<PeerKey> = (1..=4).map(|i| h.paying(i, buyer)).collect();
    for &k in &ks {
        for i in 0..5 {
            h.request(k, i);
        }
    }
    assert_eq!(creates(&h.channel()), 1);
    h.engine();
    h.open_payee(buyer, ChannelId([3; 32]));
    let stops = notices(&h.engine());
    assert_eq!(stops.len(), 4, "one STOP per waiting connection");
    assert!(stops.iter().all(|(_, n)| *n
        == PseMessage::Stop {
            channel_id: Some(ChannelId([3; 32]))
        }));
}

#[test]
fn payment_credits_starts_and_replays_in_order() {
    let mut h = H::new(config());
    let buyer = addr(0xB1);
    let k = h.paying(1, buyer);
    for i in 0..3 {
        h.request(k, i);
    }
    let id = [1; 32];
    h.open_payee(buyer, ChannelId(id));
    h.engine();
    // Pays for two blocks: START, then the first two requests, then STOP again.
    h.pay_in(ChannelId(id), 2 * u128::from(BLOCK), 2 * u128::from(BLOCK));
    let cmds = h.engine();
    assert_eq!(notices(&cmds)[0], (k, PseMessage::Start));
    assert_eq!(serves(&cmds), vec![req(0), req(1)]);
    let start_pos = cmds
        .iter()
        .position(|c| matches!(c, EngineCommand::SendExtended { .. }))
        .unwrap();
    let serve_pos = cmds
        .iter()
        .position(|c| matches!(c, EngineCommand::Serve { .. }))
        .unwrap();
    assert!(
        start_pos < serve_pos,
        "START precedes the pieces it unblocks"
    );
    assert_eq!(
        notices(&cmds).last(),
        Some(&(
            k,
            PseMessage::Stop {
                channel_id: Some(ChannelId(id))
            }
        ))
    );
    for r in [req(0), req(1)] {
        h.c.handle_bytes_sent(h.now, k, r, BLOCK).unwrap();
    }
    // A replayed event (same total) credits nothing.
    h.pay_in(ChannelId(id), 2 * u128::from(BLOCK), 2 * u128::from(BLOCK));
    assert!(serves(&h.engine()).is_empty());
    let view = h.c.identity(buyer).unwrap();
    assert_eq!(view.wei_received, 2 * u128::from(BLOCK));
    assert_eq!(view.bytes_served, 2 * u64::from(BLOCK));
}

#[test]
fn low_watermark_prompts_the_payer() {
    let (mut h, k, _, id) = uploader();
    h.engine();
    h.pay_in(ChannelId(id), 4 * u128::from(BLOCK), 4 * u128::from(BLOCK));
    h.engine();
    // Credit 3 blocks left after the replay; at 50 % of the last payment (2 blocks) → prompt.
    h.request(k, 1);
    assert!(notices(&h.engine()).is_empty());
    assert_eq!(h.request(k, 2), RequestDecision::Serve);
    assert_eq!(
        notices(&h.engine()),
        vec![(
            k,
            PseMessage::Prompt {
                bytes: 4 * u64::from(BLOCK),
                amount: 4 * u128::from(BLOCK)
            }
        )]
    );
}

#[test]
fn payment_goes_to_the_stopped_connection_first() {
    let (mut h, k1, buyer, id) = uploader();
    let k2 = h.paying(2, buyer);
    h.engine();
    // Only k2 is stopped now? Both are: k1 got STOP at funding, k2 at its first request.
    h.request(k2, 5);
    h.engine();
    h.pay_in(ChannelId(id), u128::from(BLOCK), u128::from(BLOCK));
    let cmds = h.engine();
    assert_eq!(
        cmds.iter()
            .find(|c| matches!(c, EngineCommand::Serve { .. })),
        Some(&EngineCommand::Serve {
            peer: k1,
            request: req(0)
        }),
        "the oldest STOP is paid first"
    );
    h.pay_in(ChannelId(id), u128::from(BLOCK), 2 * u128::from(BLOCK));
    assert_eq!(serves(&h.engine()), vec![req(5)]);
}

#[test]
fn reconnect_reuses_the_channel_and_carries_credit_and_trust_debt() {
    let mut h = H::configured(|c| {
        c.upload.as_mut().unwrap().choke.trust = TrustPolicy::fixed(2 * u64::from(BLOCK))
    });
    let buyer = addr(0xB1);
    let id = [1; 32];
    let k1 = h.paying(1, buyer);
    // Trust: two blocks served at once, before any channel.
    h.served(k1, 0..2);
    h.open_payee(buyer, ChannelId(id));
    assert_eq!(creates(&h.channel()), 1);
    // Pays 3 blocks, uses none, and drops.
    h.pay_in(ChannelId(id), 3 * u128::from(BLOCK), 3 * u128::from(BLOCK));
    h.c.handle_disconnect(h.now, k1).unwrap();
    let view = h.c.identity(buyer).unwrap();
    assert_eq!(view.credit_wei, u128::from(BLOCK), "3 paid − 2 on trust");
    assert_eq!(view.debt_wei, 0);
    // Reconnects: same channel, no Create, the credit is usable at once, and the trust it
    // already consumed and repaid is granted again.
    let k2 = h.paying(2, buyer);
    assert_eq!(creates(&h.channel()), 0);
    h.engine();
    h.served(k2, 2..5);
    assert_eq!(h.request(k2, 5), RequestDecision::Defer);
    let view = h.c.identity(buyer).unwrap();
    assert_eq!(view.bytes_served, 5 * u64::from(BLOCK));
    assert_eq!(view.wei_received, 3 * u128::from(BLOCK));
    // served = paid + trust, exactly.
    assert_eq!(
        u128::from(view.bytes_served),
        view.wei_received + 2 * u128::from(BLOCK)
    );
}

#[test]
fn trust_is_per_identity_not_per_connection() {
    let mut h = H::configured(|c| {
        c.upload.as_mut().unwrap().choke.trust = TrustPolicy::fixed(u64::from(BLOCK))
    });
    let buyer = addr(0xB1);
    let k1 = h.paying(1, buyer);
    assert_eq!(h.request(k1, 0), RequestDecision::Serve);
    h.c.handle_bytes_sent(h.now, k1, req(0), BLOCK).unwrap();
    // A parallel connection gets no second allowance.
    let k2 = h.paying(2, buyer);
    assert_eq!(h.request(k2, 1), RequestDecision::Defer);
    // Reconnecting does not refresh it either.
    h.c.handle_disconnect(h.now, k1).unwrap();
    h.c.handle_disconnect(h.now, k2).unwrap();
    assert_eq!(h.c.identity(buyer).unwrap().debt_wei, u128::from(BLOCK));
    let k3 = h.paying(3, buyer);
    assert_eq!(h.request(k3, 1), RequestDecision::Defer);
}

#[test]
fn payee_close_by_payer_rearms_the_gate_for_a_new_channel() {
    // The buyer closes our channel (its deposit is spent) while its connection lives: the
    // connection is not stopped for good (web3torrent's seeder proposes a new channel on the
    // next request), and nothing is served until the new channel is funded and paid.
    let (mut h, k, buyer, id) = uploader();
    h.engine();
    // Paid for one block: req(0) is handed out (not reported sent yet); req(1) waits.
    h.pay_in(ChannelId(id), u128::from(BLOCK), u128::from(BLOCK));
    assert_eq!(serves(&h.engine()), vec![req(0)]);
    assert_eq!(h.request(k, 1), RequestDecision::Defer);
    assert_eq!(notices(&h.engine()), stop_to(k, ChannelId(id)));
    h.channel();
    h.ev(ChannelEvent::Closed {
        channel_id: ChannelId(id),
        payee_amount: u128::from(BLOCK),
    });
    let cmds = h.engine();
    // START (it was stopped), no permanent-stop, no choke, nothing served.
    assert_eq!(notices(&cmds), vec![(k, PseMessage::Start)]);
    assert!(
        !cmds.contains(&EngineCommand::Choke { peer: k }),
        "{cmds:?}"
    );
    assert!(serves(&cmds).is_empty(), "{cmds:?}");
    assert_eq!(h.c.identity(buyer).unwrap().payee_channel, None);
    // The waiting request asks for a new channel.
    assert_eq!(creates(&h.channel()), 1);
    // The block handed out before the close is still reported to the old gate.
    h.c.handle_bytes_sent(h.now, k, req(0), BLOCK).unwrap();
    assert_eq!(
        h.c.handle_bytes_sent(h.now, k, req(0), BLOCK),
        Err(UsageError::NotBeingServed {
            peer: k,
            cause: GateUsageError::NotBeingServed { request: req(0) }
        }),
        "reported once"
    );
    let seen = h.c.identity(buyer).unwrap();
    assert_eq!(seen.bytes_served, u64::from(BLOCK));
    assert_eq!((seen.credit_wei, seen.debt_wei), (0, 0), "paid what it got");
    // The new channel: STOP naming it once proposed; served once funded and paid.
    let id2 = ChannelId([2; 32]);
    h.created(buyer, id2);
    assert_eq!(notices(&h.engine()), stop_to(k, id2));
    h.ready(id2.0, buyer, Role::Payee, 1 << 30);
    assert!(h.engine().is_empty(), "not served before it pays");
    h.pay_in(id2, u128::from(BLOCK), u128::from(BLOCK));
    assert_eq!(serves(&h.engine()), vec![req(1)]);
}

#[test]
fn serves_out_when_the_channel_closes_are_refunded_if_never_sent() {
    // Paid credit committed to a serve that was handed out before the close but never sent
    // (aborted, or the connection dropped) goes back to the identity.
    for disconnect in [false, true] {
        let (mut h, k, buyer, id) = uploader();
        h.pay_in(ChannelId(id), u128::from(BLOCK), u128::from(BLOCK));
        assert_eq!(serves(&h.engine()), vec![req(0)]);
        h.ev(ChannelEvent::Closed {
            channel_id: ChannelId(id),
            payee_amount: u128::from(BLOCK),
        });
        if disconnect {
            h.c.handle_disconnect(h.now, k).unwrap();
        } else {
            h.c.handle_bytes_sent(h.now, k, req(0), 1000).unwrap();
        }
        let sent = if disconnect { 0 } else { 1000 };
        let seen = h.c.identity(buyer).unwrap();
        assert_eq!(seen.bytes_served, sent);
        assert_eq!(
            seen.credit_wei,
            u128::from(BLOCK - sent as u32),
            "disconnect {disconnect}"
        );
        assert_eq!(seen.debt_wei, 0);
    }
}

#[test]
fn overdue_stop_disconnects_by_default() {
    let (mut h, k, _, id) = uploader();
    h.engine();
    h.advance(Duration::from_secs(59));
    assert!(h.engine().is_empty());
    h.advance(Duration::from_secs(2));
    assert_eq!(
        h.engine(),
        vec![EngineCommand::Disconnect {
            peer: k,
            reason: DisconnectReason::PaymentOverdue
        }]
    );
    assert!(h.events().contains(&CoordinatorEvent::PaymentOverdue {
        peer: k,
        channel_id: ChannelId(id)
    }));
}

#[test]
fn fast_peer_gets_rejects_for_refused_and_cancelled_requests() {
    let mut h = H::new(config());
    let buyer = addr(0xB1);
    let k = h.connected(1, info(true, true));
    // A request before the handshake is deferred; its cancel is answered with a reject.
    assert_eq!(h.request(k, 9), RequestDecision::Defer);
    h.c.handle_cancel(h.now, k, req(9)).unwrap();
    assert_eq!(
        h.engine(),
        vec![EngineCommand::Reject {
            peer: k,
            request: req(9)
        }]
    );
    h.c.handle_extended_handshake(h.now, k, &handshake(buyer, 7))
        .unwrap();
    // Choked (never interested): refused with a reject.
    assert_eq!(h.request(k, 0), RequestDecision::Reject);
    h.c.handle_remote_interest(h.now, k, true).unwrap();
    h.engine();
    h.request(k, 1);
    h.c.handle_cancel(h.now, k, req(1)).unwrap();
    assert!(h.engine().contains(&EngineCommand::Reject {
        peer: k,
        request: req(1)
    }));
    // Oversized request: misbehaviour, rejected, reported.
    let big = BlockRequest {
        index: 0,
        begin: 0,
        length: 1 << 20,
    };
    assert_eq!(
        h.c.handle_request(h.now, k, big).unwrap(),
        RequestDecision::Reject
    );
    assert!(h.events().contains(&CoordinatorEvent::PeerMisbehaved {
        peer: k,
        error: PeerError::InvalidRequest(big)
    }));
}

#[test]
fn engine_authority_never_chokes_and_mirrors_engine_choke() {
    let mut h = H::configured(|c| c.choke_authority = ChokeAuthority::Engine);
    let buyer = addr(0xB1);
    let id = [1; 32];
    let k = h.paying(1, buyer);
    assert!(
        h.engine().is_empty(),
        "no choke commands under engine authority"
    );
    h.request(k, 0);
    h.open_payee(buyer, ChannelId(id));
    h.engine();
    h.c.handle_local_choke(h.now, k, true).unwrap();
    // The queued request is dropped with the choke (no BEP 6).
    assert_eq!(h.c.upload_gate(k).unwrap().queued_len(), 0);
    assert_eq!(h.request(k, 1), RequestDecision::Drop);
    h.c.handle_local_choke(h.now, k, false).unwrap();
    assert_eq!(h.request(k, 1), RequestDecision::Defer);
    assert!(!h.engine().iter().any(|c| matches!(
        c,
        EngineCommand::Choke { .. } | EngineCommand::Unchoke { .. }
    )));
}

#[test]
fn connection_that_asks_while_the_proposal_is_out_gets_stop_then_start_on_payment() {
    let (mut h, k, buyer) = asking();
    assert_eq!(creates(&h.channel()), 1);
    let id = ChannelId([4; 32]);
    h.created(buyer, id);
    h.engine();
    // A second connection of the same identity asks before funding: STOP right away.
    let k2 = h.paying(2, buyer);
    h.engine();
    h.request(k2, 1);
    assert_eq!(notices(&h.engine()), stop_to(k2, id));
    // Its further requests and the funding add no STOP; nothing is served.
    h.request(k2, 2);
    h.ready(id.0, buyer, Role::Payee, 1 << 30);
    let cmds = h.engine();
    assert!(
        notices(&cmds).is_empty() && serves(&cmds).is_empty(),
        "{cmds:?}"
    );
    // The payment the early STOP asked for: START, then the queue.
    h.pay_in(id, u128::from(BLOCK), u128::from(BLOCK));
    let cmds = h.engine();
    assert_eq!(notices(&cmds)[0], (k, PseMessage::Start));
    assert!(
        !notices(&cmds)
            .iter()
            .any(|(_, n)| matches!(n, PseMessage::Stop { .. })),
        "{cmds:?}"
    );
    assert_eq!(serves(&cmds), vec![req(0)]);
}

#[test]
fn early_stop_then_trust_served_sends_start_before_serving() {
    let mut config = config();
    if let Some(up) = config.upload.as_mut() {
        up.choke.trust = TrustPolicy::fixed(u64::from(BLOCK));
        // The trust allowance too waits for funding here.
        up.choke.serve_trust_before_channel = false;
    }
    let mut h = H::new(config);
    let buyer = addr(0xB1);
    let k = h.paying(1, buyer);
    h.engine();
    h.request(k, 0);
    h.request(k, 1);
    h.channel();
    let id = ChannelId([5; 32]);
    h.created(buyer, id);
    assert_eq!(
        notices(&h.engine()),
        stop_to(k, id),
        "nothing served before funding, trust or not (#1178)"
    );
    h.ready(id.0, buyer, Role::Payee, 1 << 30);
    // Trust serves one block: the peer first hears START (it is no longer stopped), then the
    // next exhaustion's STOP.
    let cmds = h.engine();
    assert_eq!(serves(&cmds), vec![req(0)]);
    let start = cmds
        .iter()
        .position(|c| notices(std::slice::from_ref(c)) == vec![(k, PseMessage::Start)])
        .expect("START");
    let serve = cmds
        .iter()
        .position(|c| matches!(c, EngineCommand::Serve { .. }))
        .unwrap();
    assert!(start < serve, "{cmds:?}");
    assert_eq!(
        notices(&cmds),
        vec![
            (k, PseMessage::Start),
            (
                k,
                PseMessage::Stop {
                    channel_id: Some(id)
                }
            )
        ]
    );
}

#[test]
fn the_buyers_advertised_hub_goes_with_create_and_ours_into_the_handshake() {
    let hub = crate::engine::HubInfo {
        address: addr(0xCC),
        endpoint: "127.0.0.1:7400".into(),
    };
    let mut h = H::new(config().with_hub(Some(hub.clone())));
    assert_eq!(h.c.extended_handshake_contribution().hub, Some(hub.clone()));
    let buyer = addr(0xB1);
    let k = h.connected(1, info(true, false));
    let mut hs = handshake(buyer, 7);
    hs.hub = Some(hub.clone());
    h.c.handle_extended_handshake(h.now, k, &hs).unwrap();
    h.c.handle_remote_interest(h.now, k, true).unwrap();
    h.request(k, 0);
    let cmds = h.channel();
    assert!(
        matches!(&cmds[..], [ChannelCommand::Create { peer, peer_hub: Some(p), .. }] if *peer == buyer && *p == hub),
        "{cmds:?}"
    );
    // Without a hub in its handshake, the Create names none.
    let other = addr(0xB2);
    let k2 = h.paying(2, other);
    h.request(k2, 0);
    let cmds = h.channel();
    assert!(
        matches!(&cmds[..], [ChannelCommand::Create { peer, peer_hub: None, .. }] if *peer == other),
        "{cmds:?}"
    );
}
