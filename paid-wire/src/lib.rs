//! BitTorrent peer-wire codec (BEP 3, BEP 6, BEP 10), the web3torrent-compatible paid-streaming
//! extension, and a sans-IO choke controller that serves only what has been paid for.
//!
//! This crate performs no I/O and reads no clock.

#![forbid(unsafe_code)]
#![cfg_attr(not(fuzzing), deny(missing_docs))]
#![deny(rustdoc::broken_intra_doc_links)]

pub mod bencode;
pub mod choke;
pub mod codec;
pub mod error;
pub mod extended;
pub mod handshake;
pub mod message;
pub mod pse;
