//! The downloader: joining proposals, paying STOP and prompt, closing when done.

use super::*;

#[test]
fn stop_pays_one_granularity_once_and_is_acked() {
    let (mut h, k, _, id) = downloader(buyer_config(50_000), 10_000_000);
    h.stop_in(k, id);
    assert_eq!(notices(&h.engine()), vec![(k, PseMessage::Ack)]);
    assert_eq!(pays(&h.channel()), vec![50_000]);
    assert!(h.c.is_stopped_by_peer(k));
    // STOP while stopped: ack only, no second payment (web3torrent #1876).
    h.stop_in(k, id);
    assert_eq!(notices(&h.engine()), vec![(k, PseMessage::Ack)]);
    assert!(pays(&h.channel()).is_empty());
    // START, then the next STOP pays again.
    h.notice_in(k, &PseMessage::Start).unwrap();
    assert_eq!(notices(&h.engine()), vec![(k, PseMessage::Ack)]);
    h.c.handle_block_received(h.now, k, req(0), 50_000).unwrap();
    h.stop_in(k, id);
    assert_eq!(pays(&h.channel()), vec![50_000]);
    let ev = h.events();
    assert!(ev.contains(&CoordinatorEvent::PaymentSent {
        peer: k,
        channel_id: id,
        amount: 50_000,
        bytes: 50_000,
        reason: PayReason::Stop
    }));
}

#[test]
fn stop_before_join_is_paid_once_the_channel_is_ready() {
    let mut h = H::downloading(buyer_config(40_000), 1_000_000);
    let seller = addr(0x5E);
    let k = h.uploader(1, seller);
    let id = [9; 32];
    h.proposed(id, seller);
    h.channel();
    // web3torrent sends STOP right after proposing.
    h.stop_in(k, ChannelId(id));
    assert!(pays(&h.channel()).is_empty());
    h.ready(id, seller, Role::Payer, 1_000_000);
    assert_eq!(pays(&h.channel()), vec![40_000]);
}

/// The seller's STOP comes with its proposal, before funding, and may come again: nothing is
/// paid before the channel is ready, then exactly once.
#[test]
fn stops_before_funding_are_paid_once_and_not_early() {
    let mut h = H::downloading(buyer_config(40_000), 1_000_000);
    let seller = addr(0x5E);
    let k = h.uploader(1, seller);
    let id = ChannelId([8; 32]);
    let stop = PseMessage::Stop {
        channel_id: Some(id),
    };
    // Before even the proposal reached us, and again after it.
    h.notice_in(k, &stop).unwrap();
    h.proposed(id.0, seller);
    h.notice_in(k, &stop).unwrap();
    assert_eq!(
        notices(&h.engine()),
        vec![(k, PseMessage::Ack), (k, PseMessage::Ack)],
        "each STOP acked"
    );
    assert!(pays(&h.channel()).is_empty(), "nothing paid before funding");
    h.ready(id.0, seller, Role::Payer, 1_000_000);
    assert_eq!(pays(&h.channel()), vec![40_000]);
    // The seller repeating its STOP before our payment arrived: not paid again.
    h.notice_in(k, &stop).unwrap();
    assert!(pays(&h.channel()).is_empty());
}

#[test]
fn stop_crossing_a_pay_ahead_is_not_paid_twice() {
    // 30 000 bytes left to download, 30 000 per payment.
    let (mut h, k, _, id) = downloader(buyer_config(30_000), 30_000);
    h.prompt(k, 1).unwrap();
    assert_eq!(pays(&h.channel()), vec![30_000]);
    // Before it arrives, the uploader (which had nothing left) sends STOP: not paid again.
    h.stop_in(k, id);
    assert!(
        pays(&h.channel()).is_empty(),
        "the payment in flight covers it"
    );
    assert_eq!(h.c.poll_timeout(), Some(h.now + Duration::from_secs(2)));
    // It arrives: START. Nothing more is paid.
    h.notice_in(k, &PseMessage::Start).unwrap();
    h.advance(Duration::from_secs(3));
    assert!(pays(&h.channel()).is_empty());
    // A STOP long after our last payment means our estimate is off (bytes lost with a
    // connection, or less trust than advertised): paid at once.
    h.stop_in(k, id);
    assert_eq!(pays(&h.channel()), vec![30_000]);
    // And a STOP right after a payment that START does not follow: paid after the grace.
    h.notice_in(k, &PseMessage::Start).unwrap();
    h.stop_in(k, id);
    h.advance(Duration::from_secs(1));
    assert!(pays(&h.channel()).is_empty());
    h.advance(Duration::from_secs(1));
    assert_eq!(pays(&h.channel()), vec![30_000]);
}

#[test]
fn credit_stranded_on_an_idle_connection_covers_a_sibling_without_stop() {
    let (mut h, buyer, id, k1, k2) = two_connections();
    h.request(k1, 0);
    h.open_payee(buyer, ChannelId(id));
    h.engine();
    // k1 is paid 4 blocks but only ever asks for 1: 3 blocks of credit sit idle on it.
    h.pay_in(ChannelId(id), 4 * u128::from(BLOCK), 4 * u128::from(BLOCK));
    let cmds = h.engine();
    assert_eq!(serves(&cmds), vec![req(0)]);
    h.c.handle_bytes_sent(h.now, k1, req(0), BLOCK).unwrap();
    // k2's requests are served from it: no STOP, no START on k2.
    assert_eq!(h.request(k2, 1), RequestDecision::Defer);
    let cmds = h.engine();
    assert!(notices(&cmds).is_empty(), "{cmds:?}");
    assert_eq!(serves(&cmds), vec![req(1)]);
    h.c.handle_bytes_sent(h.now, k2, req(1), BLOCK).unwrap();
    h.served(k2, 2..4);
    // (The pay-ahead prompt is the only notice: the peer is never stopped.)
    assert!(
        notices(&h.engine())
            .iter()
            .all(|(_, n)| matches!(n, PseMessage::Prompt { .. }))
    );
    // Only now is the peer out of credit.
    h.request(k2, 4);
    assert_eq!(notices(&h.engine()), stop_to(k2, ChannelId(id)));
    let view = h.c.identity(buyer).unwrap();
    assert_eq!(u128::from(view.bytes_served), view.wei_received);
}

#[test]
fn spare_credit_moves_to_a_stopped_sibling() {
    let (mut h, buyer, id, k1, k2) = two_connections();
    h.request(k1, 0);
    h.request(k2, 1);
    h.open_payee(buyer, ChannelId(id));
    assert_eq!(notices(&h.engine()).len(), 2, "both stopped");
    // One payment for both blocks goes to the oldest STOP (k1), which needs one.
    h.pay_in(ChannelId(id), 2 * u128::from(BLOCK), 2 * u128::from(BLOCK));
    let cmds = h.engine();
    assert_eq!(serves(&cmds), vec![req(0)]);
    // Once k1's block is out, its spare block of credit unblocks k2.
    h.c.handle_bytes_sent(h.now, k1, req(0), BLOCK).unwrap();
    let cmds = h.engine();
    assert!(
        notices(&cmds).contains(&(k2, PseMessage::Start)),
        "{cmds:?}"
    );
    assert_eq!(serves(&cmds), vec![req(1)]);
}

#[test]
fn prompt_pays_ahead_unless_stopped() {
    let (mut h, k, _, id) = downloader(buyer_config(30_000), 10_000_000);
    h.prompt(k, 1).unwrap();
    assert_eq!(notices(&h.engine()), vec![(k, PseMessage::Ack)]);
    assert_eq!(pays(&h.channel()), vec![30_000]);
    h.stop_in(k, id);
    assert_eq!(pays(&h.channel()), vec![30_000]);
    // Stopped: the STOP payment covers it.
    h.prompt(k, 1).unwrap();
    assert!(pays(&h.channel()).is_empty());
}

#[test]
fn prompt_tops_credit_up_to_the_suggestion_within_the_pay_ahead_bound() {
    let mut config = buyer_config(30_000);
    config.download.as_mut().unwrap().max_pay_ahead_bytes = 100_000;
    let (mut h, k, _, _) = downloader(config, 10_000_000);
    // Suggests 75 000 bytes of credit: three payments of one granularity, all in flight.
    h.prompt(k, 75_000).unwrap();
    assert_eq!(pays(&h.channel()), vec![30_000, 30_000, 30_000]);
    // Credit 90 000 ≥ 75 000: one more granularity only (always at least one per prompt).
    h.prompt(k, 75_000).unwrap();
    assert_eq!(pays(&h.channel()), vec![30_000]);
    // A huge suggestion is capped by our own bound: credit 120 000 ≥ 100 000 after one.
    h.notice_in(
        k,
        &PseMessage::Prompt {
            bytes: u64::MAX,
            amount: u128::MAX,
        },
    )
    .unwrap();
    assert_eq!(pays(&h.channel()), vec![30_000]);
}

#[test]
fn payments_never_exceed_what_is_still_needed_minus_advertised_trust() {
    let mut config = buyer_config(100_000);
    config.download.as_mut().unwrap().granularity_bytes = 100_000;
    let mut h = H::downloading(config, 250_000);
    let seller = addr(0x5E);
    let k = h.seller_with_terms(
        1,
        seller,
        Terms {
            price_per_byte: 1,
            trust_bytes: 20_000,
        },
    );
    let id = [9; 32];
    h.proposed(id, seller);
    h.ready(id, seller, Role::Payer, 1_000_000);
    h.channel();
    // 20 000 on trust, then STOP: 100 000, 100 000, then only 30 000.
    h.c.handle_block_received(h.now, k, req(0), 20_000).unwrap();
    let mut total = 0;
    for _ in 0..3 {
        h.stop_in(k, ChannelId(id));
        let p = pays(&h.channel());
        total += p.iter().sum::<u128>();
        h.notice_in(k, &PseMessage::Start).unwrap();
        let got = u32::try_from(p.iter().sum::<u128>()).unwrap();
        h.c.handle_block_received(h.now, k, req(0), got).unwrap();
    }
    assert_eq!(total, 230_000, "250 000 needed − 20 000 trust");
    // More STOPs: nothing left to buy.
    h.stop_in(k, ChannelId(id));
    assert!(pays(&h.channel()).is_empty());
}

#[test]
fn out_of_funds_closes_the_channel() {
    let (mut h, k, seller, id) = downloader(buyer_config(400_000), 10_000_000);
    for _ in 0..3 {
        h.stop_in(k, id);
        h.notice_in(k, &PseMessage::Start).unwrap();
        h.c.handle_block_received(h.now, k, req(0), 400_000)
            .unwrap();
    }
    // Deposit 1 000 000: 400 000 + 400 000 + 200 000.
    assert_eq!(pays(&h.channel()), vec![400_000, 400_000, 200_000]);
    h.stop_in(k, id);
    h.closes_because(
        id,
        CoordinatorEvent::OutOfFunds {
            account: seller,
            channel_id: id,
        },
    );
}

#[test]
fn download_complete_closes_the_channel() {
    let (mut h, k, _, id) = downloader(buyer_config(100_000), 2 * u64::from(BLOCK));
    h.stop_in(k, id);
    assert_eq!(pays(&h.channel()), vec![2 * u128::from(BLOCK)]);
    for i in 0..2 {
        h.c.handle_block_received(h.now, k, req(i), BLOCK).unwrap();
        h.c.handle_piece_verified(h.now, TorrentKey(0), i, BLOCK);
    }
    h.closes_because(
        id,
        CoordinatorEvent::DownloadComplete {
            torrent: TorrentKey(0),
        },
    );
    // The uploader's client answers; the channel is gone and the budget is settled.
    h.ev(ChannelEvent::Closed {
        channel_id: id,
        payee_amount: 2 * u128::from(BLOCK),
    });
    assert_eq!(h.c.budget_used(), (0, 2 * u128::from(BLOCK)));
}

#[test]
fn permanent_stop_closes_the_channel() {
    let (mut h, k, _, id) = downloader(buyer_config(100_000), 10_000_000);
    h.notice_in(
        k,
        &PseMessage::PermanentStop {
            channel_id: Some(id),
        },
    )
    .unwrap();
    assert_eq!(notices(&h.engine()), vec![(k, PseMessage::Ack)]);
    assert_eq!(h.channel(), vec![ChannelCommand::Close { channel_id: id }]);
}

#[test]
fn proposals_are_checked_against_price_deposit_and_budget() {
    let mut config = config();
    {
        let d = config.download.as_mut().unwrap();
        d.max_price_per_byte = 2;
        d.max_deposit = 1000;
        d.budget = 1500;
    }
    let mut h = H::new(config);
    let pricey = addr(0x01);
    h.seller_with_terms(
        1,
        pricey,
        Terms {
            price_per_byte: 3,
            trust_bytes: 0,
        },
    );
    h.ev(proposal([1; 32], pricey, 100));
    let fine = addr(0x02);
    h.paying(2, fine);
    h.ev(proposal([2; 32], fine, 1001));
    h.ev(proposal([3; 32], fine, 1000));
    let other = addr(0x03);
    h.paying(3, other);
    h.ev(proposal([4; 32], other, 600));
    // A second proposal from a peer we already pay.
    h.ev(proposal([5; 32], fine, 10));
    // A proposal whose price differs from the handshake terms.
    let liar = addr(0x04);
    h.paying(4, liar);
    h.ev(ChannelEvent::Proposed {
        channel_id: ChannelId([6; 32]),
        payee: liar,
        deposit: 10,
        price: Some(2),
        nonce: None,
    });
    // Declined proposals are abandoned in the client (they would otherwise pile up there).
    let abandon = |id: u8| ChannelCommand::Abandon {
        channel_id: ChannelId([id; 32]),
    };
    assert_eq!(
        h.channel(),
        vec![
            abandon(1),
            abandon(2),
            ChannelCommand::Join {
                channel_id: ChannelId([3; 32]),
                peer: fine,
                deposit: 1000
            },
            abandon(4),
            abandon(5),
            abandon(6),
        ]
    );
    assert_eq!(
        declined(h.events()),
        vec![
            DeclineReason::PriceTooHigh,
            DeclineReason::DepositTooLarge,
            DeclineReason::OverBudget,
            DeclineReason::AlreadyHaveChannel,
            DeclineReason::PriceMismatch
        ]
    );
}

#[test]
fn proposal_from_a_peer_not_yet_seen_waits_for_its_handshake() {
    let mut h = H::new(config());
    let seller = addr(0x5E);
    h.ev(proposal([4; 32], seller, 10));
    assert!(h.channel().is_empty());
    h.paying(1, seller);
    assert_eq!(
        h.channel(),
        vec![ChannelCommand::Join {
            channel_id: ChannelId([4; 32]),
            peer: seller,
            deposit: 10
        }]
    );
    // Expired proposals are forgotten.
    h.ev(proposal([5; 32], addr(0x77), 10));
    h.advance(Duration::from_secs(6));
    h.abandons([5; 32], "an expired proposal is abandoned in the client");
    h.paying(2, addr(0x77));
    assert!(h.channel().is_empty());
}
