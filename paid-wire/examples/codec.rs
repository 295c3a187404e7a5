//! The peer-wire codec and the paid-streaming extension, without a socket: frame a request and
//! decode it back, negotiate the extension's ids from the BEP 10 handshakes, and frame a STOP for
//! the peer. Every frame is printed in hex.
//!
//! Run with `cargo run -p paid-wire --example codec`.

use bytes::BytesMut;
use paid_wire::codec::PeerCodec;
use paid_wire::extended::{ExtendedHandshake, ExtensionIds};
use paid_wire::message::{BlockRequest, Message};
use paid_wire::pse::{self, PseMessage};
use tokio_util::codec::{Decoder, Encoder};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut codec = PeerCodec::new();

    // A request for the first 16 KiB block, framed and decoded back.
    let mut buf = BytesMut::new();
    let req = Message::Request(BlockRequest::new(0, 0, 16 * 1024));
    codec.encode(req.clone(), &mut buf)?;
    println!("request frame: {}", hex(&buf));
    let decoded = codec.decode(&mut buf)?;
    assert_eq!(decoded, Some(req));
    println!("decoded back:  {decoded:?}");

    // We advertise the paid-streaming extension under our id 2; the peer's handshake names its id.
    let mut ids = ExtensionIds::new();
    ids.set_local(pse::EXTENSION_NAME, 2)?;
    let mut theirs = ExtendedHandshake::new();
    theirs.m.insert(pse::EXTENSION_NAME.to_owned(), 7);
    ids.apply_peer_handshake(&theirs);

    // Messages to the peer carry the peer's id; without one, nothing is sent.
    let Some(peer_id) = ids.peer_id(pse::EXTENSION_NAME) else {
        return Err("the peer does not speak the extension".into());
    };
    let stop = PseMessage::Stop {
        channel_id: Some(pse::ChannelId([0xab; 32])),
    };
    let frame = stop.to_message(peer_id);
    assert!(matches!(frame, Message::Extended { id: 7, .. }));
    codec.encode(frame, &mut buf)?;
    println!("STOP frame under the peer's id {peer_id}: {}", hex(&buf));
    let back = codec.decode(&mut buf)?;
    println!("decoded back:  {back:?}");
    Ok(())
}
