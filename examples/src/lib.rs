//! A small but real BitTorrent client that sells and buys upload bandwidth over Nitro payment
//! channels: the sample for `paid-wire`, `payment-channel` and `torrent-glue`.
//!
//! - [`metainfo`]: create and parse `.torrent` files (v1, single- and multi-file).
//! - [`storage`]: the files on disk, block I/O, SHA-1 piece verification, resume.
//! - [`picker`]: rarest-first / sequential piece selection with endgame.
//! - [`torrent`]: one torrent's shared state, used by every connection.
//! - [`peer`]: the plain (unpaid) peer loop: BEP 3 + BEP 6 + BEP 10 over `paid-wire` codecs.
//! - [`session`]: accept and connect peers, wait for completion (plain loop).
//! - [`paid`]: paid transfers through torrent-glue's reference adapter, wallets and chains.
//! - [`redact`]: RPC URLs without their secrets, for printing.
//! - [`magnet`]: magnet links (BEP 9).
//! - [`tracker`]: HTTP (BEP 3, BEP 23, BEP 48) and UDP (BEP 15) tracker clients, announce lists
//!   (BEP 12).
//! - [`units`]: sizes, durations and prices as people write them.
//!
//! The binary `paid-torrent` (`src/cli/`) is the command-line front end.
//!
//! # Features
//! - `ethereum` (off by default): `--rpc`, settling on an Ethereum node through
//!   `payment-channel`'s `EthereumChain` ([`paid::ChainChoice`]'s `Ethereum` variant).

#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(missing_docs)]
#![deny(rustdoc::broken_intra_doc_links)]

pub mod bitfield;
pub mod error;
pub mod magnet;
pub mod metainfo;
pub mod paid;
pub mod peer;
pub mod picker;
pub mod redact;
pub mod session;
pub mod storage;
pub mod torrent;
pub mod tracker;
pub mod units;
