//! Engine-agnostic glue between a BitTorrent engine, the paid-streaming extension
//! ([`paid_wire`]) and a payment channel ([`payment_channel`]): the Rust successor of
//! statechannels' web3torrent client logic.
//!
//! The crate is sans-IO. It performs no I/O, reads no clock, spawns nothing and never blocks:
//! an engine feeds it events through [`EngineHooks`] (or the [`Coordinator`]'s `handle_*`
//! methods) and performs the [`EngineCommand`]s it drains; a channel client performs the
//! [`ChannelCommand`]s and reports [`ChannelEvent`]s. See [`coordinator`] for the calling
//! contract and the flows, and [`engine`] for the hook table.
//!
//! # Example
//! A downloader meets an uploader; both coordinators are driven by hand, messages are carried
//! between them, and the channel client is scripted.
//! ```
//! use std::time::Instant;
//! use torrent_glue::channel::{ChannelCommand, ChannelEvent, Role};
//! use torrent_glue::engine::{Direction, EngineCommand, PeerExtendedHandshake, PeerInfo, PeerKey, RequestDecision, TorrentKey};
//! use torrent_glue::{Address, BlockRequest, Coordinator, CoordinatorConfig};
//!
//! let now = Instant::now();
//! let seller = Address::repeat_byte(0x5e);
//! let mut up = Coordinator::new(CoordinatorConfig::new(seller, seller)).unwrap();
//! up.add_torrent(TorrentKey(0), 0).unwrap(); // seeding
//!
//! // A downloader connects, with the BEP 10 bit, and advertises the extension.
//! let peer = PeerKey(1);
//! let mut reserved = [0u8; 8];
//! reserved[5] = 0x10;
//! up.handle_peer_connected(now, peer, PeerInfo::new(TorrentKey(0), Direction::Inbound, reserved)).unwrap();
//! let buyer = "0x00000000000000000000000000000000000000b1";
//! let hs = PeerExtendedHandshake {
//!     pse_id: Some(3),
//!     pse_account: Some(buyer.as_bytes().to_vec()),
//!     ..Default::default()
//! };
//! up.handle_extended_handshake(now, peer, &hs).unwrap();
//! up.handle_remote_interest(now, peer, true).unwrap();
//! assert_eq!(up.poll_engine_command(), Some(EngineCommand::Unchoke { peer }));
//!
//! // Its first request: deferred, and one channel is proposed.
//! let req = BlockRequest { index: 0, begin: 0, length: 16384 };
//! assert_eq!(up.handle_request(now, peer, req).unwrap(), RequestDecision::Defer);
//! let buyer: Address = buyer.parse().unwrap();
//! assert!(matches!(up.poll_channel_command(), Some(ChannelCommand::Create { peer, .. }) if peer == buyer));
//!
//! // The channel client reports the proposal, the funding and a payment.
//! let id = [7u8; 32];
//! up.handle_channel_event(now, ChannelEvent::Created { peer: buyer, channel_id: id }).unwrap();
//! up.handle_channel_event(now, ChannelEvent::Ready { channel_id: id, counterparty: buyer, role: Role::Payee, deposit: 1 << 20 }).unwrap();
//! // → STOP went out (an extension message with the peer's id 3).
//! assert!(matches!(up.poll_engine_command(), Some(EngineCommand::SendExtended { peer_ext_id: 3, .. })));
//! up.handle_channel_event(now, ChannelEvent::PaymentReceived { channel_id: id, delta: 16384, total: 16384 }).unwrap();
//! // → START, then the queued request is served.
//! assert!(matches!(up.poll_engine_command(), Some(EngineCommand::SendExtended { .. })));
//! assert_eq!(up.poll_engine_command(), Some(EngineCommand::Serve { peer, request: req }));
//! up.handle_bytes_sent(now, peer, req, 16384).unwrap();
//! assert_eq!(up.identity(buyer).unwrap().bytes_served, 16384);
//! ```

#![forbid(unsafe_code)]
#![cfg_attr(not(fuzzing), deny(missing_docs))]
#![deny(rustdoc::broken_intra_doc_links)]

#[cfg(feature = "adapter")]
pub mod adapter;
pub mod channel;
pub mod coordinator;
pub mod engine;
pub mod error;

pub use channel::{ChannelCommand, ChannelControl, ChannelEvent, Role};
pub use coordinator::{
    Coordinator, CoordinatorConfig, CoordinatorEvent, DownloadConfig, LivenessConfig,
    NonPayingPolicy, OverduePolicy, UploadConfig,
};
pub use engine::{
    ChokeAuthority, EngineCommand, EngineControl, EngineHooks, PeerInfo, PeerKey, RequestDecision,
    Terms, TorrentKey,
};
pub use error::{ConfigError, Error, PeerError, UsageError};
pub use paid_wire::choke::ChannelId;
pub use paid_wire::message::BlockRequest;
pub use payment_channel::Address;

/// The BEP 10 name of the paid-streaming extension, `paidStreamingExtension` (web3torrent's).
pub use paid_wire::pse::EXTENSION_NAME;
