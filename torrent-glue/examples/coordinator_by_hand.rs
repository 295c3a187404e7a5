//! The sans-IO [`Coordinator`] driven by hand, the way an engine binding drives it: a seller
//! meets a downloader that advertises the paid-streaming extension, defers its first request,
//! proposes a channel, and serves the request once the channel client reports a payment. Every
//! command the coordinator emits is printed.
//!
//! Run with `cargo run -p torrent-glue --example coordinator_by_hand`.

use std::time::Instant;

use torrent_glue::channel::{ChannelCommand, ChannelEvent, Role};
use torrent_glue::engine::{
    Direction, EngineCommand, PeerExtendedHandshake, PeerInfo, PeerKey, RequestDecision, TorrentKey,
};
use torrent_glue::{Address, BlockRequest, ChannelId, Coordinator, CoordinatorConfig};

/// Prints and returns the next engine command.
fn engine(up: &mut Coordinator) -> Option<EngineCommand> {
    let c = up.poll_engine_command();
    if let Some(c) = &c {
        println!("  engine  <- {c:?}");
    }
    c
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let now = Instant::now();
    let seller = Address::repeat_byte(0x5e);
    let mut up = Coordinator::new(CoordinatorConfig::new(seller, seller))?;
    up.add_torrent(TorrentKey(0), 0)?; // seeding: nothing left to download

    println!("a downloader connects with the BEP 10 bit and advertises the extension");
    let peer = PeerKey(1);
    let mut reserved = [0u8; 8];
    reserved[5] = 0x10;
    up.handle_peer_connected(
        now,
        peer,
        PeerInfo::new(TorrentKey(0), Direction::Inbound, reserved),
    )?;
    let buyer: Address = "0x00000000000000000000000000000000000000b1"
        .parse()
        .expect("address");
    let hs = PeerExtendedHandshake {
        pse_id: Some(3),
        pse_account: Some(buyer.to_string().into_bytes()),
        ..Default::default()
    };
    up.handle_extended_handshake(now, peer, &hs)?;
    up.handle_remote_interest(now, peer, true)?;
    assert_eq!(engine(&mut up), Some(EngineCommand::Unchoke { peer }));

    println!("its first request is deferred, and a channel is proposed");
    let req = BlockRequest {
        index: 0,
        begin: 0,
        length: 16384,
    };
    assert_eq!(up.handle_request(now, peer, req)?, RequestDecision::Defer);
    let create = up.poll_channel_command();
    println!("  channel <- {create:?}");
    assert!(matches!(create, Some(ChannelCommand::Create { peer, .. }) if peer == buyer));

    println!("the channel client reports the proposal, the funding and a payment");
    let id = ChannelId([7u8; 32]);
    up.handle_channel_event(
        now,
        ChannelEvent::Created {
            peer: buyer,
            channel_id: id,
        },
    )?;
    up.handle_channel_event(
        now,
        ChannelEvent::Ready {
            channel_id: id,
            counterparty: buyer,
            role: Role::Payee,
            deposit: 1 << 20,
        },
    )?;
    // STOP: an extension message under the peer's id 3.
    assert!(matches!(
        engine(&mut up),
        Some(EngineCommand::SendExtended { peer_ext_id: 3, .. })
    ));
    up.handle_channel_event(
        now,
        ChannelEvent::PaymentReceived {
            channel_id: id,
            delta: 16384,
            total: 16384,
        },
    )?;
    // START, then the queued request is served.
    assert!(matches!(
        engine(&mut up),
        Some(EngineCommand::SendExtended { .. })
    ));
    assert_eq!(
        engine(&mut up),
        Some(EngineCommand::Serve { peer, request: req })
    );
    up.handle_bytes_sent(now, peer, req, 16384)?;

    let served = up.identity(buyer).map(|i| i.bytes_served).unwrap_or(0);
    assert_eq!(served, 16384);
    println!("served {served} bytes to {buyer}, paid for");
    Ok(())
}
