//! A transport-agnostic, two-party, unidirectional payment channel, byte-compatible with the
//! Nitro v2 contracts (`@statechannels/nitro-protocol@2.0.1-alpha.6`, the go-nitro generation).
//!
//! Participants are `[payer, payee]`; the app is this crate's `PaymentApp` ([`app`]: the state
//! shape of `VirtualPaymentApp` without its flaw); the asset is the native coin or an ERC-20;
//! payments are cumulative vouchers `sign(keccak256(abi.encode(channelId, amount)))` under the
//! EIP-191 prefix.
//!
//! - [`channel::Channel`]: the sans-IO state machine (no I/O, no clock, no randomness).
//! - [`client::Client`]: the async driver over [`chain::Chain`], [`store::ChannelStore`] and
//!   [`client::Transport`].
//! - [`party_node::PartyNode`]: the async driver of a [`virtual_channel::Party`] (ledgers and
//!   virtual channels through a hub) over a chain, a store and a transport.
//! - [`message`]: the wire messages and their compact JSON envelope.
//! - [`error`]: errors by cause, each with the [`error::Reaction`] to take.
//! - [`role`]: [`role::Role`] and [`role::PhaseKind`], shared by the channel, its errors and
//!   messages.
//! - [`ledger`]: sans-IO `ConsensusApp` ledger channels `[leader, follower]` (funding, the
//!   consensus Add/Remove protocol with guarantees, closing, chain duties as data).
//! - [`virtual_channel`]: sans-IO virtual payment channels `[payer, hub, payee]` funded by
//!   guarantees in two ledgers, and [`virtual_channel::Party`], one participant's ledgers and
//!   virtual channels together.
//!
//! # Features
//! - `ethereum` (off by default): `chain::EthereumChain`, the [`chain::Chain`] trait over
//!   JSON-RPC against the real contracts (pulls in `alloy`, about 300 crates).
//! - `libsecp256k1` (off by default): signatures with libsecp256k1 (C) instead of the pure-Rust
//!   k256, byte for byte the same ([`sign::BACKEND`] says which is compiled in); about 2× faster
//!   to sign and 3× to verify. Needs a C compiler.
//! - `tcp` (off by default): [`party_node`]'s TCP transport (`party_node::tcp`: length-delimited
//!   JSON frames, peers authenticated by signature) and its run loop.
//! - `test-utils` (private): state builders and chain-level scenario scripts for tests.
//!
#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![cfg_attr(not(fuzzing), deny(missing_docs))]
#![deny(rustdoc::broken_intra_doc_links)]

pub mod abi;
pub mod app;
#[cfg(feature = "client")]
mod backoff;
pub mod chain;
pub mod channel;
#[cfg(feature = "client")]
#[cfg_attr(docsrs, doc(cfg(feature = "client")))]
pub mod client;
pub mod error;
pub mod ledger;
pub mod message;
#[cfg(feature = "client")]
#[cfg_attr(docsrs, doc(cfg(feature = "client")))]
pub mod party_node;
pub mod policy;
pub mod role;
pub mod sign;
pub mod state;
pub mod store;
#[cfg(feature = "client")]
mod sync;
#[cfg(feature = "test-utils")]
#[doc(hidden)]
pub mod test_utils;
pub mod virtual_channel;
pub mod voucher;

pub use alloy_primitives::{Address, B256, Bytes, U256};
#[cfg(feature = "client")]
#[cfg_attr(docsrs, doc(cfg(feature = "client")))]
pub use chain::sim::{SimulatedChain, SimulatedChainHandle, TokenBehaviour};
#[cfg(feature = "client")]
#[cfg_attr(docsrs, doc(cfg(feature = "client")))]
pub use store::{MemoryStore, RedbStore};
