#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![cfg_attr(not(fuzzing), deny(missing_docs))]
#![deny(rustdoc::broken_intra_doc_links)]

#[cfg(feature = "adapter")]
#[cfg_attr(docsrs, doc(cfg(feature = "adapter")))]
pub mod adapter;
pub mod channel;
pub mod coordinator;
pub mod engine;
pub mod error;
pub mod identity;
#[cfg(feature = "test-utils")]
#[doc(hidden)]
pub mod test_utils;

pub use channel::{
    ChannelCommand, ChannelControl, ChannelEvent, CreateRequest, RestoredState, Role,
};
pub use coordinator::{
    Coordinator, CoordinatorConfig, CoordinatorEvent, DownloadConfig, IdentityConfig, LegacyPolicy,
    LivenessConfig, NonPayingPolicy, OverduePolicy, UploadConfig,
};
pub use engine::{
    AssetTerms, ChokeAuthority, EngineCommand, EngineControl, PeerInfo, PeerKey, RequestDecision,
    Terms, TorrentKey,
};
pub use error::{ConfigError, Error, PeerError, UsageError};
pub use paid_wire::choke::ChannelId;
pub use paid_wire::message::BlockRequest;
pub use payment_channel::Address;

/// The BEP 10 name of the paid-streaming extension, `paidStreamingExtension` (web3torrent's).
pub use paid_wire::pse::EXTENSION_NAME;
