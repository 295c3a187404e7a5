//! BitTorrent peer-wire codec (BEP 3, BEP 6, BEP 9, BEP 10), the web3torrent-compatible paid-streaming
//! extension, and a sans-IO choke controller that serves only what has been paid for.
//!
//! This crate performs no I/O and reads no clock.
//!
//! - [`handshake`]: the 68-byte BEP 3 handshake and its reserved bits.
//! - [`message`]: every peer-wire message as one [`message::Message`] enum, `decode`/`encode`.
//! - [`codec`]: `tokio_util::codec` adapters ([`codec::HandshakeCodec`], [`codec::PeerCodec`]).
//! - [`extended`]: the BEP 10 extended handshake and the extension-id registry.
//! - [`pse`]: the web3torrent paid-streaming extension messages.
//! - [`metadata`]: BEP 9 `ut_metadata` messages, serving and assembling metadata (magnet links).
//! - [`bencode`]: the bounded bencode value type used by `extended` and `pse`.
//! - [`error`]: error types, split by cause (peer bytes, caller misuse, I/O).

#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![cfg_attr(not(fuzzing), deny(missing_docs))]
#![deny(rustdoc::broken_intra_doc_links)]

pub mod bencode;
pub mod choke;
#[cfg(feature = "codec")]
#[cfg_attr(docsrs, doc(cfg(feature = "codec")))]
pub mod codec;
pub mod error;
pub mod extended;
pub mod handshake;
pub mod message;
pub mod metadata;
pub mod pse;
mod request;
#[cfg(feature = "test-utils")]
#[doc(hidden)]
pub mod test_utils;

/// A 32-byte state-channel id: one type for the wire (`pse`), the choke controller and the
/// glue above them.
pub use pse::ChannelId;

#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
