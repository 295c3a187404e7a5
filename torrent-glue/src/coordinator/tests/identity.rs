//! Identity proofs and the bounds on what one stranger may cost (default policies: a claimed
//! account counts only once proven).

use super::*;
use crate::identity::{ProofContext, prove, verify};

const INFO_HASH: [u8; 20] = [0x17; 20];
const OUR_ID: [u8; 20] = [0x01; 20];

fn their_id(k: u64) -> [u8; 20] {
    [
        0x80 | (k as u8),
        0x42,
        0x42,
        0x42,
        0x42,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        9,
    ]
}

/// A seller that verifies proofs (no signer of its own needed for that), default identity policy.
fn seller() -> H {
    H::new(CoordinatorConfig {
        liveness: config().liveness,
        ..CoordinatorConfig::new(keyed(ME), keyed(ME))
    })
}

/// Connects `k` claiming `account`, announcing `pseAuth` if `auth`.
fn connect(h: &mut H, k: u64, account: Address, auth: bool) -> PeerKey {
    let key = PeerKey(k);
    let info = info(true, false).with_session(INFO_HASH, OUR_ID, their_id(k));
    h.c.handle_peer_connected(h.now, key, info).unwrap();
    let mut hs = handshake(account, 7);
    hs.auth = auth.then_some(1);
    h.c.handle_extended_handshake(h.now, key, &hs).unwrap();
    h.c.handle_remote_interest(h.now, key, true).unwrap();
    key
}

fn notices(cmds: &[EngineCommand], to: PeerKey) -> Vec<PseMessage> {
    cmds.iter()
        .filter_map(|c| match c {
            EngineCommand::SendExtended { peer, payload, .. } if *peer == to => {
                PseMessage::decode(payload).ok()
            }
            _ => None,
        })
        .collect()
}

fn challenge(cmds: &[EngineCommand], to: PeerKey) -> [u8; 32] {
    notices(cmds, to)
        .into_iter()
        .find_map(|n| match n {
            PseMessage::AuthChallenge { nonce } => Some(nonce),
            _ => None,
        })
        .expect("a challenge")
}

/// `signer` answers `nonce` as connection `k` would (its own peer id as the prover).
fn answer(
    h: &mut H,
    key: PeerKey,
    k: u64,
    signer: &payment_channel::sign::LocalSigner,
    nonce: [u8; 32],
) -> Result<(), Error> {
    let ctx = ProofContext {
        nonce,
        info_hash: INFO_HASH,
        challenger_peer_id: OUR_ID,
        prover_peer_id: their_id(k),
    };
    let sig = prove(signer, &ctx).unwrap();
    h.notice_in(
        key,
        &PseMessage::AuthProof {
            signature: sig.to_rsv(),
        },
    )
}

/// Connects `k` claiming `account`, announcing `pseAuth`: its key and our challenge to it.
fn challenged(h: &mut H, k: u64, account: Address) -> (PeerKey, [u8; 32]) {
    let key = connect(h, k, account, true);
    (key, challenge(&h.engine(), key))
}

/// Connects and proves `signer`'s account as `k`.
fn proven(h: &mut H, k: u64, signer: &payment_channel::sign::LocalSigner) -> PeerKey {
    let (key, nonce) = challenged(h, k, signer.address());
    answer(h, key, k, signer, nonce).unwrap();
    key
}

#[test]
fn a_claimed_account_counts_only_once_proven() {
    let mut h = seller();
    let buyer = key(0xB1);
    // Challenged, not classified: its requests wait and no channel is proposed.
    let (k, nonce) = challenged(&mut h, 1, buyer.address());
    assert_eq!(h.c.peer_class(k), None);
    assert_eq!(h.request(k, 0), RequestDecision::Defer);
    assert!(h.channel().is_empty());
    answer(&mut h, k, 1, &buyer, nonce).unwrap();
    assert_eq!(
        h.c.peer_class(k),
        Some(PeerClass::Paying {
            account: buyer.address()
        })
    );
    // The deferred request now asks for its channel.
    assert!(
        h.channel()
            .iter()
            .any(|c| matches!(c, ChannelCommand::Create { peer, .. } if *peer == buyer.address()))
    );
}

#[test]
fn a_stranger_claiming_a_buyers_account_gets_nothing_paid_by_the_buyer() {
    let mut h = seller();
    let buyer = key(0xB1);
    let b = proven(&mut h, 1, &buyer);
    assert_eq!(h.request(b, 0), RequestDecision::Defer);
    h.channel();
    let id = [0x31; 32];
    h.created(buyer.address(), ChannelId(id));
    h.ready(id, buyer.address(), Role::Payee, 1 << 30);
    h.engine();

    // A stranger claims the buyer's account (every buyer advertises it) and signs with its
    // own key: refused, a strike, non-paying for good.
    let stranger = key(0x66);
    let (s, nonce) = challenged(&mut h, 2, buyer.address());
    assert_eq!(
        answer(&mut h, s, 2, &stranger, nonce),
        Err(Error::Peer(PeerError::BadIdentityProof))
    );
    assert_eq!(
        h.c.peer_class(s),
        Some(PeerClass::NonPaying(NonPayingReason::AuthenticationFailed))
    );
    // It is not served, not on the buyer's payments, and gets none of its channel messages.
    let decision = h.request(s, 1);
    assert!(matches!(
        decision,
        RequestDecision::Drop | RequestDecision::Reject
    ));
    // (choked, as a refused non-paying peer is)
    h.engine();
    h.ev(ChannelEvent::Outbound {
        to: buyer.address(),
        json: "{\"postfund\":1}".into(),
    });
    h.ev(ChannelEvent::PaymentReceived {
        channel_id: ChannelId(id),
        delta: u128::from(BLOCK),
        total: u128::from(BLOCK),
    });
    let cmds = h.engine();
    assert!(cmds.iter().all(|c| c.peer() != s), "{cmds:?}");
    assert!(cmds.contains(&EngineCommand::Serve {
        peer: b,
        request: req(0)
    }));
    assert!(notices(&cmds, b).contains(&PseMessage::Message {
        message: "{\"postfund\":1}".into()
    }));
    assert_eq!(h.c.identity(buyer.address()).unwrap().connections, 1);
}

#[test]
fn a_proof_made_for_another_connection_does_not_verify() {
    let mut h = seller();
    let buyer = key(0xB1);
    // A stranger relays, from elsewhere, a proof the buyer made for connection 1's context.
    let (s, nonce) = challenged(&mut h, 2, buyer.address());
    assert!(answer(&mut h, s, 1, &buyer, nonce).is_err());
    assert_eq!(
        h.c.peer_class(s),
        Some(PeerClass::NonPaying(NonPayingReason::AuthenticationFailed))
    );
    // And a proof nobody asked for (no challenge out) is a strike too.
    let mut h = seller();
    let k = connect(&mut h, 3, buyer.address(), false);
    assert_eq!(
        h.notice_in(k, &PseMessage::AuthProof { signature: [0; 65] }),
        Err(Error::Peer(PeerError::BadIdentityProof))
    );
}

#[test]
fn challenges_differ_per_connection_and_a_silent_prover_times_out() {
    let mut h = seller();
    let buyer = key(0xB1);
    let a = connect(&mut h, 1, buyer.address(), true);
    let b = connect(&mut h, 2, buyer.address(), true);
    let cmds = h.engine();
    assert_ne!(challenge(&cmds, a), challenge(&cmds, b));
    h.advance(Duration::from_secs(6));
    assert_eq!(
        h.c.peer_class(a),
        Some(PeerClass::NonPaying(NonPayingReason::AuthenticationFailed))
    );
}

#[test]
fn legacy_peers_are_non_paying_unless_claimed_accounts_are_trusted() {
    let mut h = seller();
    let k = connect(&mut h, 1, addr(0xB1), false);
    assert_eq!(
        h.c.peer_class(k),
        Some(PeerClass::NonPaying(NonPayingReason::Unauthenticated))
    );
    // No challenge is sent to a peer that did not announce `pseAuth`.
    assert!(notices(&h.engine(), k).is_empty());
    let mut h = H::new(config());
    let k = connect(&mut h, 1, addr(0xB1), false);
    assert_eq!(
        h.c.peer_class(k),
        Some(PeerClass::Paying {
            account: addr(0xB1)
        })
    );
}

#[test]
fn we_answer_one_challenge_per_connection_with_a_proof_bound_to_it() {
    let me = key(ME);
    let cfg = CoordinatorConfig {
        liveness: config().liveness,
        ..CoordinatorConfig::new(me.address(), me.address())
    };
    assert_eq!(
        Coordinator::with_signer(cfg.clone(), key(0x01)).err(),
        Some(ConfigError::SignerMismatch)
    );
    let mut h = H::signing(cfg, me.clone(), 0);
    assert_eq!(h.c.extended_handshake_contribution().auth, Some(1));
    let k = connect(&mut h, 5, addr(0xB1), true);
    h.engine();
    let nonce = [0x99; 32];
    h.notice_in(k, &PseMessage::AuthChallenge { nonce })
        .unwrap();
    let proof = notices(&h.engine(), k)
        .into_iter()
        .find_map(|n| match n {
            PseMessage::AuthProof { signature: sig } => Some(sig),
            _ => None,
        })
        .expect("a proof");
    let sig = Signature::from_rsv(&proof).unwrap();
    // The peer checks it with its own view: it challenged (its id), we prove (ours).
    let ctx = ProofContext {
        nonce,
        info_hash: INFO_HASH,
        challenger_peer_id: their_id(5),
        prover_peer_id: OUR_ID,
    };
    assert!(verify(&ctx, me.address(), &sig));
    // A second challenge costs us no second signature.
    assert_eq!(
        h.notice_in(k, &PseMessage::AuthChallenge { nonce: [0x98; 32] }),
        Err(Error::Peer(PeerError::RepeatedChallenge))
    );
    assert!(notices(&h.engine(), k).is_empty());
}

#[test]
fn repeated_extended_handshakes_are_bounded_and_strike_out() {
    let mut h = seller();
    let k = connect(&mut h, 1, addr(0xB1), false);
    h.engine();
    let hs = handshake(addr(0xB1), 7);
    for _ in 1..8 {
        h.c.handle_extended_handshake(h.now, k, &hs).unwrap();
    }
    for strike in 1..=3 {
        assert_eq!(
            h.c.handle_extended_handshake(h.now, k, &hs),
            Err(Error::Peer(PeerError::TooManyHandshakes))
        );
        assert_eq!(h.struck_out(k), strike == 3);
    }
}

#[test]
fn bad_channel_signatures_are_strikes() {
    let mut h = seller();
    let buyer = key(0xB1);
    let b = proven(&mut h, 1, &buyer);
    h.engine();
    for strike in 1..=3 {
        h.ev(ChannelEvent::CommandFailed {
            command: FailedCommand::PushMessage {
                from: buyer.address(),
                bad_signature: true,
            },
            reason: "bad signature".into(),
        });
        assert_eq!(h.struck_out(b), strike == 3);
    }
}

#[test]
fn channel_creation_is_rate_limited_overall() {
    let mut h = H::configured(|c| c.identity.max_channels_per_window = 2);
    for k in 1..=3u8 {
        let p = h.paying(u64::from(k), addr(0xB0 + k));
        assert_eq!(h.request(p, 0), RequestDecision::Defer);
    }
    assert_eq!(creates(&h.channel()), 2);
    assert!(h.events().contains(&CoordinatorEvent::ChannelRateLimited {
        account: addr(0xB3)
    }));
    // Once the window has passed, a new stranger gets one again.
    h.now += Duration::from_secs(61);
    let p = h.paying(4, addr(0xB4));
    h.request(p, 0);
    assert!(
        h.channel()
            .iter()
            .any(|c| matches!(c, ChannelCommand::Create { peer, .. } if *peer == addr(0xB4)))
    );
}

#[test]
fn channel_creation_is_rate_limited_per_connection() {
    let mut h = H::configured(|c| c.identity.max_channels_per_connection = 1);
    let p = h.paying(1, addr(0xB1));
    h.request(p, 0);
    assert_eq!(h.channel().len(), 1);
    // The proposal is never answered: abandoned at the response timeout. The connection is
    // permanently stopped then, and a later need of the same connection proposes nothing.
    h.created(addr(0xB1), ChannelId([0x41; 32]));
    h.c.need_payee_channel(h.now, addr(0xB1), Some(p));
    assert!(h.channel().is_empty());
    h.advance(Duration::from_secs(21));
    h.channel();
    h.c.need_payee_channel(h.now, addr(0xB1), Some(p));
    assert!(
        !h.channel()
            .iter()
            .any(|c| matches!(c, ChannelCommand::Create { .. }))
    );
    assert!(h.events().contains(&CoordinatorEvent::ChannelRateLimited {
        account: addr(0xB1)
    }));
}

#[test]
fn the_channel_work_queue_is_bounded() {
    let mut h = H::configured(|c| c.identity.max_channel_commands = 2);
    let p = h.paying(1, addr(0xB1));
    h.engine();
    let json = format!(
        "{{\"recipient\":\"{}\",\"sender\":\"{}\"}}",
        addr(ME).to_checksum(None),
        addr(0xB1).to_checksum(None)
    );
    for _ in 0..5 {
        h.notice_in(
            p,
            &PseMessage::Message {
                message: json.clone(),
            },
        )
        .unwrap();
    }
    assert_eq!(h.c.resource_usage().channel_commands, 2);
    let acks = notices(&h.engine(), p)
        .into_iter()
        .filter(|n| *n == PseMessage::Ack)
        .count();
    assert_eq!(acks, 2, "refused messages are not acked");
    assert!(h.events().contains(&CoordinatorEvent::MessageDropped {
        account: Some(addr(0xB1)),
        reason: MessageDropReason::QueueFull,
    }));
}

/// A buyer proving its identity as `key(ME)` (default identity policy), missing 1 MiB, with the
/// seller `key(0x5E)` proven as connection 1, which challenged us too: the harness, the seller,
/// and the nonce of the `i`-th channel proposed on that connection (derived from our challenge
/// and the seller's).
fn buyer_of_a_proven_seller() -> (
    H,
    Arc<payment_channel::sign::LocalSigner>,
    impl Fn(u32) -> u64,
) {
    let me = key(ME);
    let mut cfg = buyer_config(BLOCK.into());
    cfg.identity = IdentityConfig::default();
    cfg.account = me.address();
    let mut h = H::signing(cfg, me, 1 << 20);
    let seller = key(0x5E);
    let k = proven(&mut h, 1, &seller);
    // The seller challenges us too: its share of the nonce.
    let theirs = [0x33; 32];
    h.notice_in(k, &PseMessage::AuthChallenge { nonce: theirs })
        .unwrap();
    h.engine();
    // Our challenge went out when it connected.
    let ours = h.c.peers.get(&k).and_then(|p| p.challenge).unwrap();
    let nonce = move |i| crate::identity::channel_nonce(&ours, &theirs, i);
    (h, seller, nonce)
}

#[test]
fn a_proven_payee_is_joined_only_on_a_nonce_we_helped_create() {
    let (mut h, seller, nonce) = buyer_of_a_proven_seller();
    let fresh = nonce(0);
    // A replayed (or any other) nonce: declined, nothing joined.
    h.ev(ChannelEvent::Proposed {
        channel_id: ChannelId([0x51; 32]),
        payee: seller.address(),
        deposit: 1 << 20,
        price: Some(1),
        nonce: Some(fresh ^ 1),
    });
    assert!(h.events().contains(&CoordinatorEvent::ProposalDeclined {
        channel_id: ChannelId([0x51; 32]),
        payee: seller.address(),
        reason: DeclineReason::NotFresh,
    }));
    assert!(
        !h.channel()
            .iter()
            .any(|c| matches!(c, ChannelCommand::Join { .. }))
    );
    // The nonce derived from this connection: joined.
    h.ev(ChannelEvent::Proposed {
        channel_id: ChannelId([0x52; 32]),
        payee: seller.address(),
        deposit: 1 << 20,
        price: Some(1),
        nonce: Some(fresh),
    });
    assert!(h.channel().iter().any(
        |c| matches!(c, ChannelCommand::Join { channel_id, .. } if *channel_id == ChannelId([0x52; 32]))
    ));
}

/// The limit on proposals per connection counts the ones never funded: proposals the payer
/// abandoned stop the connection at the limit, however many channels it funded before.
#[test]
fn abandoned_proposals_stop_a_connection_whatever_it_funded_before() {
    let limit = IdentityConfig::default().max_channels_per_connection;
    for funded in [0u8, 1, 6] {
        let mut h = H::new(config());
        let b = addr(0xB1);
        let p = h.paying(1, b);
        h.request(p, 0);
        let mut next = 0u8;
        let mut id = || {
            next += 1;
            ChannelId([next; 32])
        };
        assert_eq!(creates(&h.channel()), 1, "funded {funded}");
        for _ in 0..funded {
            let channel = id();
            h.open_payee(b, channel);
            h.ev(ChannelEvent::Closed {
                channel_id: channel,
                payee_amount: 0,
            });
            h.c.need_payee_channel(h.now, b, Some(p));
            assert_eq!(creates(&h.channel()), 1, "funded {funded}: one more");
        }
        // Now `limit` proposals in a row are never answered (abandoned at the response
        // timeout): each but the last is followed by another; after the last, none.
        for n in 1..=limit {
            h.created(b, id());
            h.advance(Duration::from_secs(21));
            h.channel();
            h.events();
            h.c.need_payee_channel(h.now, b, Some(p));
            let more = creates(&h.channel());
            if n < limit {
                assert_eq!(more, 1, "funded {funded}, abandoned {n}");
            } else {
                assert_eq!(more, 0, "funded {funded}, abandoned {n}");
                assert!(
                    h.events()
                        .contains(&CoordinatorEvent::ChannelRateLimited { account: b })
                );
            }
        }
    }
}

/// As a buyer, a proven payee's proposal is joined when its nonce's index is within
/// `max_channels_per_connection` past the last channel we funded on that connection: a payee
/// that needs a fifth (sixth, ...) deposit on one connection is not refused, and an index
/// further ahead still is.
#[test]
fn a_payee_is_joined_within_the_limit_past_the_channels_we_funded() {
    let limit = IdentityConfig::default().max_channels_per_connection;
    let (mut h, seller, nonce) = buyer_of_a_proven_seller();
    let mut next = 0x60u8;
    let mut propose = |h: &mut H, i: u32| -> (ChannelId, bool) {
        next += 1;
        let channel_id = ChannelId([next; 32]);
        h.ev(ChannelEvent::Proposed {
            channel_id,
            payee: seller.address(),
            deposit: 1 << 16,
            price: Some(1),
            nonce: Some(nonce(i)),
        });
        let joined = h
            .channel()
            .iter()
            .any(|c| matches!(c, ChannelCommand::Join { channel_id: j, .. } if *j == channel_id));
        h.events();
        (channel_id, joined)
    };
    // Nothing funded yet: indices 0..limit.
    assert!(
        !propose(&mut h, limit).1,
        "index {limit} before any funding"
    );
    // Funded at indices 0, 3, 6, 9 (the ones between were abandoned by the payee): each is
    // within the limit past the previous one; six channels and more on one connection.
    let mut last = 0;
    for i in [0, 3, 6, 9, 10, 11] {
        let (id, joined) = propose(&mut h, i);
        assert!(joined, "index {i}");
        h.ready(id.0, seller.address(), Role::Payer, 1 << 16);
        h.ev(ChannelEvent::Closed {
            channel_id: id,
            payee_amount: 0,
        });
        h.channel();
        h.events();
        last = i;
    }
    assert!(!propose(&mut h, last + 1 + limit).1, "beyond the limit");
    assert!(propose(&mut h, last + limit).1, "at the limit's end");
}
