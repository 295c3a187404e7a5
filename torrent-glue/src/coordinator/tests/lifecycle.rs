//! Channel life: liveness deadlines, closing and challenging, reclaiming identities, restart.

use super::*;

#[test]
fn unfunded_proposal_is_abandoned_after_the_response_timeout() {
    let (mut h, k, buyer) = asking();
    h.created(buyer, ChannelId([1; 32]));
    h.engine();
    h.channel();
    // Channel messages from the peer restart the clock.
    h.advance(Duration::from_secs(15));
    h.notice_in(
        k,
        &PseMessage::Message {
            message: envelope(addr(ME), buyer),
        },
    )
    .unwrap();
    h.engine();
    h.advance(Duration::from_secs(15));
    assert!(
        h.channel()
            .iter()
            .all(|c| matches!(c, ChannelCommand::PushMessage { .. }))
    );
    h.advance(Duration::from_secs(6));
    h.abandons(
        [1; 32],
        "nothing to challenge (unfunded): the proposal is abandoned",
    );
    assert_eq!(
        notices(&h.engine()),
        vec![(k, PseMessage::PermanentStop { channel_id: None })]
    );
    assert!(
        h.events()
            .contains(&CoordinatorEvent::ChannelSetupFailed { account: buyer })
    );
    assert_eq!(h.c.identity(buyer).unwrap().payee_channel, None);
}

#[test]
fn vanished_payer_channel_is_closed_then_challenged() {
    let (mut h, k, buyer, id) = uploader();
    h.pay_in(ChannelId(id), u128::from(BLOCK), u128::from(BLOCK));
    h.c.handle_bytes_sent(h.now, k, req(0), BLOCK).unwrap();
    h.channel();
    h.c.handle_disconnect(h.now, k).unwrap();
    assert_eq!(h.c.poll_timeout(), Some(h.now + Duration::from_secs(30)));
    h.closes_then_challenges(ChannelId(id), 30, 20);
    assert!(h.events().contains(&CoordinatorEvent::Challenging {
        account: buyer,
        channel_id: ChannelId(id),
        role: Role::Payee
    }));
    h.ev(ChannelEvent::Closed {
        channel_id: ChannelId(id),
        payee_amount: u128::from(BLOCK),
    });
    assert_eq!(h.c.identity(buyer).unwrap().payee_channel, None);
    assert_eq!(h.c.poll_timeout(), None);
}

#[test]
fn reconnect_within_grace_keeps_the_channel_open() {
    let (mut h, k, buyer, id) = uploader();
    h.channel();
    h.c.handle_disconnect(h.now, k).unwrap();
    h.advance(Duration::from_secs(29));
    h.paying(2, buyer);
    // Back: our last channel message is repeated (it may have been lost with the connection).
    assert_eq!(
        h.channel(),
        vec![ChannelCommand::Resend {
            channel_id: ChannelId(id)
        }]
    );
    h.advance(Duration::from_secs(60));
    assert!(h.channel().is_empty(), "neither closed nor challenged");
    assert!(h.c.identity(buyer).unwrap().payee_channel_open);
    // A second connection while the first is live repeats nothing.
    h.paying(3, buyer);
    assert!(h.channel().is_empty());
}

#[test]
fn vanished_uploader_is_challenged_by_the_payer() {
    let (mut h, k, seller, id) = downloader(buyer_config(100_000), 10_000_000);
    h.stop_in(k, id);
    h.channel();
    h.c.handle_disconnect(h.now, k).unwrap();
    h.closes_then_challenges(id, 30, 20);
    h.ev(ChannelEvent::Closed {
        channel_id: id,
        payee_amount: 100_000,
    });
    assert_eq!(h.c.budget_used(), (0, 100_000));
    assert_eq!(h.c.identity(seller).unwrap().payer_channel, None);
}

#[test]
fn stalled_uploader_is_closed_on() {
    let mut config = buyer_config(100_000);
    config.liveness.stall_timeout = Some(Duration::from_secs(10));
    let (mut h, k, seller, id) = downloader(config, 10_000_000);
    h.stop_in(k, id);
    h.channel();
    h.advance(Duration::from_secs(9));
    h.c.handle_block_received(h.now, k, req(0), 1000).unwrap();
    h.advance(Duration::from_secs(9));
    assert!(h.channel().is_empty(), "data arrived: not stalled");
    h.notice_in(k, &PseMessage::Start).unwrap();
    h.stop_in(k, id);
    h.channel();
    h.advance(Duration::from_secs(10));
    h.closes_because(
        id,
        CoordinatorEvent::Stalled {
            account: seller,
            channel_id: id,
        },
    );
}

#[test]
fn failed_close_is_challenged_and_failed_join_releases_budget() {
    let (mut h, _, seller, id) = downloader(buyer_config(100_000), 10_000_000);
    assert!(h.c.close_channel(h.now, seller, Role::Payer));
    h.channel();
    h.ev(ChannelEvent::CommandFailed {
        command: FailedCommand::Close { channel_id: id },
        reason: "peer gone".into(),
    });
    assert_eq!(
        h.channel(),
        vec![ChannelCommand::Challenge { channel_id: id }]
    );
    let mut h = H::new(config());
    let seller = addr(0x5E);
    h.paying(1, seller);
    h.ev(proposal([2; 32], seller, 500));
    assert_eq!(h.c.budget_used(), (500, 0));
    h.ev(ChannelEvent::CommandFailed {
        command: FailedCommand::Join {
            channel_id: ChannelId([2; 32]),
        },
        reason: "no funds".into(),
    });
    assert_eq!(h.c.budget_used(), (0, 0));
    assert_eq!(h.c.identity(seller).unwrap().payer_channel, None);
}

#[test]
fn stop_uploading_sends_permanent_stop_to_everyone() {
    let (mut h, k, _, _) = uploader();
    h.engine();
    h.c.stop_uploading(h.now, None);
    let cmds = h.engine();
    assert_eq!(
        notices(&cmds),
        vec![(
            k,
            PseMessage::PermanentStop {
                channel_id: Some(ChannelId([1; 32]))
            }
        )]
    );
    assert!(cmds.contains(&EngineCommand::Choke { peer: k }));
}

#[test]
fn a_peer_without_the_extension_has_its_requests_dropped() {
    let mut c = Coordinator::new(config()).unwrap();
    let now = Instant::now();
    c.handle_peer_connected(now, PeerKey(1), info(false, false))
        .unwrap();
    assert_eq!(
        c.handle_request(now, PeerKey(1), req(0)).unwrap(),
        RequestDecision::Drop
    );
    assert_eq!(
        c.extended_handshake_contribution().extension_name,
        EXTENSION_NAME
    );
    c.handle_timeout(now);
    c.handle_disconnect(now, PeerKey(1)).unwrap();
    assert_eq!(c.poll_engine_command(), None);
}

#[test]
fn departed_identities_without_history_are_reclaimed_and_their_proposals_abandoned() {
    let mut config = config();
    config.upload.as_mut().unwrap().choke.trust = TrustPolicy::fixed(u64::from(BLOCK));
    // Idle close fires before the grace ends (it must not reset the reclamation clock).
    config.liveness.idle_close_after = Some(Duration::from_secs(1));
    let mut h = H::new(config);
    // 50 peers, each with its own fresh account, ask for a channel and vanish.
    for i in 0..50u8 {
        let k = h.paying(u64::from(i) + 1, addr(0x20 + i));
        h.request(k, 0);
        h.created(addr(0x20 + i), ChannelId([i; 32]));
        h.c.handle_disconnect(h.now, k).unwrap();
    }
    // One more that was served on trust: its identity must be remembered (no second allowance).
    let trusted = addr(0x10);
    let k = h.paying(100, trusted);
    assert_eq!(h.request(k, 0), RequestDecision::Serve);
    h.c.handle_bytes_sent(h.now, k, req(0), BLOCK).unwrap();
    h.c.handle_disconnect(h.now, k).unwrap();
    h.engine();
    h.channel();
    assert_eq!(h.c.resource_usage().identities, 51);
    // Past the response timeout the proposals are abandoned, then the identities reclaimed.
    h.advance(Duration::from_secs(21));
    assert_eq!(count!(h.channel(), ChannelCommand::Abandon { .. }), 50);
    h.advance(Duration::from_secs(21));
    let usage = h.c.resource_usage();
    assert_eq!(usage.peers, 0);
    assert_eq!(usage.identities, 1, "{usage:?}");
    assert_eq!(usage.channels, 0);
    assert_eq!(h.c.identity(trusted).unwrap().debt_wei, u128::from(BLOCK));
}

/// A seller whose payee channel `[4; 32]` with the buyer `keyed(0xB1)` (`paid` on it) was found
/// in the store after a restart.
fn restored_payee(paid: u128) -> (H, Address, [u8; 32]) {
    let mut h = H::new(config());
    let buyer = keyed(0xB1);
    let id = [4; 32];
    h.restore(id, buyer, Role::Payee, 1 << 30, paid, RestoredState::Open);
    (h, buyer, id)
}

#[test]
fn restored_payee_channel_is_used_again_and_old_payments_are_not_credited_twice() {
    let (mut h, buyer, id) = restored_payee(5 * u128::from(BLOCK));
    assert!(h.events().contains(&CoordinatorEvent::ChannelRestored {
        account: buyer,
        channel_id: ChannelId(id),
        role: Role::Payee,
        paid: 5 * u128::from(BLOCK),
        state: RestoredState::Open,
    }));
    // The payer comes back: no second channel, STOP on the restored one at the first request.
    let k = h.paying(1, buyer);
    h.engine();
    h.request(k, 0);
    assert_eq!(creates(&h.channel()), 0, "the restored channel is reused");
    assert_eq!(notices(&h.engine()), stop_to(k, ChannelId(id)));
    // Its client repeats the voucher we already held: nothing is credited.
    h.pay_in(ChannelId(id), 0, 5 * u128::from(BLOCK));
    assert!(serves(&h.engine()).is_empty());
    // A new voucher credits only the increase: one block.
    h.pay_in(ChannelId(id), u128::from(BLOCK), 6 * u128::from(BLOCK));
    let cmds = h.engine();
    assert_eq!(serves(&cmds), vec![req(0)]);
    h.c.handle_bytes_sent(h.now, k, req(0), BLOCK).unwrap();
    h.request(k, 1);
    assert!(
        serves(&h.engine()).is_empty(),
        "one block was bought, one served"
    );
}

#[test]
fn restored_payer_channel_pays_a_stop_without_a_new_proposal() {
    let mut h = H::downloading(buyer_config(40_000), 1_000_000);
    let seller = keyed(0x5E);
    let id = [7; 32];
    // Most of the deposit was spent before the restart.
    let deposit = 100_000u128;
    h.restore(
        id,
        seller,
        Role::Payer,
        deposit,
        90_000,
        RestoredState::Open,
    );
    let k = h.uploader(1, seller);
    h.channel();
    h.stop_in(k, ChannelId(id));
    // Only what is left of the deposit can be paid.
    assert_eq!(pays(&h.channel()), vec![10_000]);
    // A second proposal from the same seller is declined: the restored channel is in use.
    h.proposed([8; 32], seller);
    h.abandons([8; 32], "the restored channel is in use");
}

#[test]
fn restored_channel_of_a_peer_that_never_returns_is_closed_then_challenged() {
    let (mut h, _, id) = restored_payee(1000);
    h.channel();
    h.advance(Duration::from_secs(29));
    assert!(h.channel().is_empty());
    h.closes_then_challenges(ChannelId(id), 2, 21);
}

#[test]
fn restored_setup_must_be_funded_in_time() {
    let mut h = H::new(config());
    let (buyer, seller) = (keyed(0xB1), keyed(0x5E));
    // Our proposal (payee) and a channel we had joined (payer): neither funded.
    h.restore(
        [1; 32],
        buyer,
        Role::Payee,
        1 << 30,
        0,
        RestoredState::Funding,
    );
    h.restore(
        [2; 32],
        seller,
        Role::Payer,
        1 << 30,
        0,
        RestoredState::Funding,
    );
    // The buyer reconnects and asks: no second proposal while the first may still be funded.
    let k = h.paying(1, buyer);
    h.request(k, 0);
    assert_eq!(creates(&h.channel()), 0);
    h.advance(Duration::from_secs(21));
    let cmds = h.channel();
    assert!(
        cmds.contains(&ChannelCommand::Abandon {
            channel_id: ChannelId([1; 32])
        }),
        "{cmds:?}"
    );
    // Our own deposit may be on chain: the payer side challenges to get it back.
    assert!(
        cmds.contains(&ChannelCommand::Challenge {
            channel_id: ChannelId([2; 32])
        }),
        "{cmds:?}"
    );
}

#[test]
fn a_restored_channel_reported_twice_is_adopted_once() {
    let (mut h, buyer, id) = restored_payee(10);
    h.restore(id, buyer, Role::Payee, 1 << 30, 10, RestoredState::Open);
    let restored_events = count!(h.events(), CoordinatorEvent::ChannelRestored { .. });
    assert_eq!(restored_events, 1);
}
