//! Notices and channel messages: acks, routing, the outbox.

use super::*;

#[test]
fn channel_messages_for_us_are_pushed_and_acked_others_dropped_silently() {
    let mut h = H::new(config());
    let peer = addr(0xB1);
    let k = h.paying(1, peer);
    h.engine();
    let ours = envelope(addr(ME), peer);
    h.notice_in(
        k,
        &PseMessage::Message {
            message: ours.clone(),
        },
    )
    .unwrap();
    assert_eq!(notices(&h.engine()), vec![(k, PseMessage::Ack)]);
    assert_eq!(
        h.channel(),
        vec![ChannelCommand::PushMessage {
            from: peer,
            json: ours
        }]
    );
    // Lower-case recipient is still us.
    let lower = envelope(addr(ME), peer).to_lowercase();
    h.notice_in(k, &PseMessage::Message { message: lower })
        .unwrap();
    assert_eq!(h.channel().len(), 1);
    h.engine();
    // Not for us: no ack, nothing pushed.
    h.notice_in(
        k,
        &PseMessage::Message {
            message: envelope(addr(0x99), peer),
        },
    )
    .unwrap();
    // Forged sender: no ack, nothing pushed.
    h.notice_in(
        k,
        &PseMessage::Message {
            message: envelope(addr(ME), addr(0x98)),
        },
    )
    .unwrap();
    assert!(h.engine().is_empty());
    assert!(h.channel().is_empty());
    let reasons = picked!(h.events(), CoordinatorEvent::MessageDropped { reason, .. } => reason);
    assert_eq!(
        reasons,
        vec![
            MessageDropReason::NotForUs,
            MessageDropReason::SenderMismatch
        ]
    );
    // Garbage: reported, not acked.
    assert!(matches!(
        h.notice_in(
            k,
            &PseMessage::Message {
                message: "not json".into()
            }
        ),
        Err(Error::Peer(PeerError::MalformedChannelMessage))
    ));
    assert!(h.engine().is_empty());
}

#[test]
fn acks_are_never_acked_unknown_commands_are() {
    let mut h = H::new(config());
    let k = h.paying(1, addr(0xB1));
    h.engine();
    h.notice_in(k, &PseMessage::Ack).unwrap();
    assert!(h.engine().is_empty());
    h.notice_in(
        k,
        &PseMessage::Unknown {
            command: "frobnicate".into(),
            data: None,
        },
    )
    .unwrap();
    assert_eq!(notices(&h.engine()), vec![(k, PseMessage::Ack)]);
    // Malformed payload: ignored, reported, no ack.
    let err =
        h.c.handle_extension_message(h.now, k, EXTENSION_NAME, b"d7:command")
            .unwrap_err();
    assert!(matches!(err, Error::Peer(PeerError::MalformedNotice(_))));
    assert!(h.engine().is_empty());
    // Other extensions are not ours.
    h.c.handle_extension_message(h.now, k, "ut_metadata", b"garbage")
        .unwrap();
    assert_eq!(h.c.peer_stats(k).unwrap().notices_received, 3);
}

#[test]
fn outbound_messages_use_the_newest_connection_and_wait_for_reconnects() {
    let mut h = H::new(config());
    let peer = addr(0xB1);
    let k1 = h.paying(1, peer);
    let k2 = h.paying(2, peer);
    h.engine();
    let json = envelope(peer, addr(ME));
    assert_eq!(notices(&h.outbound(peer, &json)), message_to(k2, &json));
    h.c.handle_disconnect(h.now, k1).unwrap();
    h.c.handle_disconnect(h.now, k2).unwrap();
    assert!(h.outbound(peer, &json).is_empty());
    let k3 = h.paying(3, peer);
    assert!(notices(&h.engine()).contains(&(
        k3,
        PseMessage::Message {
            message: json.clone()
        }
    )));
    // Unknown recipient: dropped.
    h.ev(ChannelEvent::Outbound {
        to: addr(0x42),
        json,
    });
    assert!(h.events().contains(&CoordinatorEvent::MessageDropped {
        account: Some(addr(0x42)),
        reason: MessageDropReason::UnknownRecipient
    }));
}

#[test]
fn nothing_is_sent_to_a_peer_that_did_not_advertise_or_disabled_the_extension() {
    let mut h = H::configured(|c| c.non_paying = NonPayingPolicy::FreeAllowance { bytes: 0 });
    // Advertises other extensions only.
    let k = h.connected(1, info(true, false));
    let hs = PeerExtendedHandshake {
        pse_account: Some(addr(0xB1).to_checksum(None).into_bytes()),
        ..Default::default()
    };
    h.c.handle_extended_handshake(h.now, k, &hs).unwrap();
    assert_eq!(
        h.c.peer_class(k),
        Some(PeerClass::NonPaying(NonPayingReason::NotAdvertised))
    );
    for i in 0..5 {
        h.request(k, i);
    }
    h.advance(Duration::from_secs(600));
    assert!(
        !h.engine()
            .iter()
            .any(|c| matches!(c, EngineCommand::SendExtended { .. }))
    );
    assert!(h.channel().is_empty());
    // A paying peer that later disables the extension (id 0): notices are suppressed.
    let buyer = addr(0xB2);
    let k2 = h.paying(2, buyer);
    h.request(k2, 0);
    h.engine();
    let disable = PeerExtendedHandshake {
        pse_id: Some(0),
        ..Default::default()
    };
    h.c.handle_extended_handshake(h.now, k2, &disable).unwrap();
    h.open_payee(buyer, ChannelId([1; 32]));
    assert!(
        !h.engine()
            .iter()
            .any(|c| matches!(c, EngineCommand::SendExtended { .. }))
    );
    assert_eq!(h.c.peer_stats(k2).unwrap().notices_suppressed, 1);
}

/// web3torrent accepts a `message` only if `recipient` is its `pseAccount` string exactly:
/// the recipient goes out as the connection advertised it, whatever case the client wrote.
#[test]
fn outbound_recipient_is_the_account_as_the_connection_advertised_it() {
    let mut h = H::new(config());
    let peer = keyed(0xB1);
    let checksummed = peer.to_checksum(None);
    assert_ne!(checksummed, checksummed.to_lowercase(), "mixed case");
    let lower_json = envelope(peer, addr(ME)).replace(&checksummed, &checksummed.to_lowercase());
    let advertised = |text: &str| PeerExtendedHandshake {
        pse_account: Some(text.as_bytes().to_vec()),
        ..handshake(peer, 7)
    };
    let send = |h: &mut H, json: &str| {
        let sent = notices(&h.outbound(peer, json));
        assert_eq!(sent.len(), 1, "{sent:?}");
        let PseMessage::Message { message } = &sent[0].1 else {
            panic!("{sent:?}")
        };
        serde_json::from_str::<serde_json::Value>(message).unwrap()
    };
    // Advertised checksummed, the client wrote lower case: checksummed on the wire.
    let k = h.connected(1, info(true, false));
    h.c.handle_extended_handshake(h.now, k, &advertised(&checksummed))
        .unwrap();
    h.engine();
    let out = send(&mut h, &lower_json);
    assert_eq!(out["recipient"], checksummed.as_str());
    // The rest of the envelope is untouched.
    let before: serde_json::Value = serde_json::from_str(&lower_json).unwrap();
    assert_eq!(out["sender"], before["sender"]);
    assert_eq!(out["data"], before["data"]);
    // Already as advertised: the very same bytes.
    let exact = envelope(peer, addr(ME));
    assert_eq!(notices(&h.outbound(peer, &exact)), message_to(k, &exact));
    // A newer connection advertising lower case gets lower case.
    let k2 = h.connected(2, info(true, false));
    h.c.handle_extended_handshake(h.now, k2, &advertised(&checksummed.to_lowercase()))
        .unwrap();
    h.engine();
    let out = send(&mut h, &exact);
    assert_eq!(out["recipient"], checksummed.to_lowercase().as_str());
}
