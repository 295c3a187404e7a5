//! Peers without the extension or without a proven account: the non-paying policies.

use super::*;

#[test]
fn refuse_policy_keeps_stock_peers_choked_and_drops_or_rejects() {
    let mut h = H::new(config());
    let plain = h.interested(1, info(false, false));
    assert_eq!(h.request(plain, 0), RequestDecision::Drop);
    let fast = h.connected(2, info(false, true));
    assert_eq!(h.request(fast, 0), RequestDecision::Reject);
    // Never unchoked, never sent an extension message, no error.
    assert!(h.engine().is_empty());
}

#[test]
fn free_allowance_then_refuse_and_choke() {
    let mut config = config();
    config.non_paying = NonPayingPolicy::FreeAllowance {
        bytes: 2 * u64::from(BLOCK),
    };
    let mut h = H::new(config);
    let k = h.interested(1, info(false, true));
    assert_eq!(h.engine(), vec![EngineCommand::Unchoke { peer: k }]);
    h.served(k, 0..2);
    assert_eq!(h.request(k, 2), RequestDecision::Reject);
    assert_eq!(h.engine(), vec![EngineCommand::Choke { peer: k }]);
    assert_eq!(
        h.c.peer_stats(k).unwrap().bytes_served,
        2 * u64::from(BLOCK)
    );
}

/// A stock peer asks for whole blocks: when what is left of its free allowance is smaller than
/// a block, its request is refused and it is choked (and stays choked when it asks again),
/// instead of staying unchoked and asking again forever.
#[test]
fn free_allowance_remainder_smaller_than_a_block_chokes() {
    for fast in [true, false] {
        let mut config = config();
        config.non_paying = NonPayingPolicy::FreeAllowance {
            bytes: 2 * u64::from(BLOCK) + u64::from(BLOCK) / 2,
        };
        let mut h = H::new(config);
        let k = h.interested(1, info(false, fast));
        assert_eq!(h.engine(), vec![EngineCommand::Unchoke { peer: k }]);
        h.served(k, 0..2);
        let refused = if fast {
            RequestDecision::Reject
        } else {
            RequestDecision::Drop
        };
        assert_eq!(h.request(k, 2), refused, "fast {fast}");
        assert_eq!(
            h.engine(),
            vec![EngineCommand::Choke { peer: k }],
            "fast {fast}"
        );
        // Interested again, asking again: no unchoke, nothing served.
        h.c.handle_remote_interest(h.now, k, false).unwrap();
        h.c.handle_remote_interest(h.now, k, true).unwrap();
        assert_eq!(h.request(k, 2), refused, "fast {fast}");
        assert!(h.engine().is_empty(), "fast {fast}");
        assert_eq!(
            h.c.peer_stats(k).unwrap().bytes_served,
            2 * u64::from(BLOCK)
        );
    }
}

#[test]
fn allowed_fast_preview_serves_only_the_fast_set_while_choked() {
    let mut h = H::configured(|c| c.non_paying = NonPayingPolicy::AllowedFastPreview);
    let mut i = info(false, true);
    i.allowed_fast = vec![3, 8];
    let k = h.connected(1, i);
    assert_eq!(
        h.engine(),
        vec![
            EngineCommand::AllowedFast { peer: k, piece: 3 },
            EngineCommand::AllowedFast { peer: k, piece: 8 }
        ]
    );
    h.c.handle_remote_interest(h.now, k, true).unwrap();
    assert!(h.engine().is_empty(), "stays choked");
    assert_eq!(h.request(k, 8), RequestDecision::Serve);
    h.c.handle_bytes_sent(h.now, k, req(8), BLOCK).unwrap();
    assert_eq!(h.request(k, 4), RequestDecision::Reject);
    // Without BEP 6 the preview cannot be expressed: refused like everything else.
    let mut i = info(false, false);
    i.allowed_fast = vec![3];
    let k2 = h.connected(2, i);
    assert!(h.engine().is_empty());
    assert_eq!(h.request(k2, 3), RequestDecision::Drop);
}

#[test]
fn handshake_timeout_classifies_as_non_paying_and_resolves_deferred_requests() {
    let mut h = H::new(config());
    let k = h.interested(1, info(true, false));
    assert_eq!(h.engine(), vec![EngineCommand::Unchoke { peer: k }]);
    for i in 0..3 {
        assert_eq!(h.request(k, i), RequestDecision::Defer);
    }
    assert_eq!(h.c.poll_timeout(), Some(h.now + Duration::from_secs(5)));
    h.advance(Duration::from_secs(5));
    let cmds = h.engine();
    assert_eq!(
        cmds,
        vec![
            EngineCommand::DropRequest {
                peer: k,
                request: req(0)
            },
            EngineCommand::DropRequest {
                peer: k,
                request: req(1)
            },
            EngineCommand::DropRequest {
                peer: k,
                request: req(2)
            },
            EngineCommand::Choke { peer: k },
        ]
    );
    assert_eq!(
        h.c.peer_class(k),
        Some(PeerClass::NonPaying(NonPayingReason::HandshakeTimeout))
    );
}

#[test]
fn self_connection_and_identity_change_are_peer_errors() {
    let mut h = H::new(config());
    let k = h.connected(1, info(true, false));
    let err =
        h.c.handle_extended_handshake(h.now, k, &handshake(addr(ME), 2))
            .unwrap_err();
    assert_eq!(err, Error::Peer(PeerError::SelfConnection));
    assert!(h.engine().contains(&EngineCommand::Disconnect {
        peer: k,
        reason: DisconnectReason::SelfConnection
    }));
    let k2 = h.paying(2, addr(0xB1));
    let err =
        h.c.handle_extended_handshake(h.now, k2, &handshake(addr(0xB2), 2))
            .unwrap_err();
    assert_eq!(err, Error::Peer(PeerError::IdentityChanged));
    assert_eq!(
        h.c.peer_class(k2),
        Some(PeerClass::Paying {
            account: addr(0xB1)
        })
    );
}

#[test]
fn usage_errors() {
    let mut h = H::new(config());
    let k = PeerKey(1);
    assert_eq!(
        h.c.handle_request(h.now, k, req(0)),
        Err(UsageError::UnknownPeer(k))
    );
    h.c.handle_peer_connected(h.now, k, info(false, false))
        .unwrap();
    assert_eq!(
        h.c.handle_peer_connected(h.now, k, info(false, false)),
        Err(UsageError::DuplicatePeer(k))
    );
    assert!(matches!(
        h.c.handle_bytes_sent(h.now, k, req(0), BLOCK),
        Err(UsageError::NotBeingServed { .. })
    ));
    assert_eq!(
        h.c.handle_channel_event(
            h.now,
            ChannelEvent::PaymentReceived {
                channel_id: ChannelId([1; 32]),
                delta: 1,
                total: 1
            }
        ),
        Err(UsageError::UnknownChannel(ChannelId([1; 32])))
    );
    assert_eq!(
        h.c.add_torrent(TorrentKey(0), 1),
        Err(UsageError::DuplicateTorrent(TorrentKey(0)))
    );
    let mut bad = config();
    bad.download.as_mut().unwrap().granularity_bytes = 0;
    assert_eq!(
        Coordinator::new(bad).unwrap_err(),
        ConfigError::ZeroGranularity
    );
}
