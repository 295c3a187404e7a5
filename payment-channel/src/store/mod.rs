//! Durable channel state.
//!
//! The contract every implementation keeps: when a `put_*` call returns `Ok`, the data survives a
//! crash of the process (the durable store commits with fsync before returning). The client relies
//! on it to **persist before it acts**: the payee stores a voucher before crediting it, and the
//! payer stores a voucher it signed before sending it. Records are opaque bytes (the client
//! serializes its channel snapshot); vouchers are typed so that a store can keep the largest.
//!
//! Implementations:
//! - [`MemoryStore`]: a map in memory. It keeps the same semantics but is **not** durable; for
//!   tests and for nodes that accept losing their vouchers on a crash.
//! - [`RedbStore`]: a [`redb`](https://docs.rs/redb) file; every `put_*` commits with immediate
//!   durability before it returns.

use alloy_primitives::B256;
#[cfg(feature = "client")]
use async_trait::async_trait;

#[cfg(feature = "client")]
use crate::voucher::Voucher;

#[cfg(feature = "client")]
mod memory;
#[cfg(feature = "client")]
mod redb;

#[cfg(feature = "client")]
#[cfg_attr(docsrs, doc(cfg(feature = "client")))]
pub use self::memory::MemoryStore;
#[cfg(feature = "client")]
#[cfg_attr(docsrs, doc(cfg(feature = "client")))]
pub use self::redb::RedbStore;

/// What every snapshot record of a channel (a payment channel's, a ledger's, a virtual
/// channel's) starts with, flattened into the record's JSON: its format version, our role, the
/// channel's fixed part and the asset of its outcomes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct RecordHead<R> {
    /// The record's format (checked by [`decode_snapshot`]).
    pub(crate) version: u8,
    /// Our role in the channel.
    pub(crate) role: R,
    /// The channel.
    pub(crate) fixed: crate::state::FixedPart,
    /// The asset of the deposits and of every outcome (`Address::ZERO`: the native coin).
    #[serde(default)]
    pub(crate) asset: alloy_primitives::Address,
}

impl<R> RecordHead<R> {
    /// The head of a new record in format `version`.
    pub(crate) fn new(
        version: u8,
        role: R,
        fixed: crate::state::FixedPart,
        asset: alloy_primitives::Address,
    ) -> Self {
        Self {
            version,
            role,
            fixed,
            asset,
        }
    }
}

/// Decodes a versioned JSON snapshot record (a channel's, a ledger's, a virtual channel's):
/// `Err` holds why it is corrupt (unparsable, or a `version` other than `expected`), for the
/// record's own `CorruptSnapshot` error.
pub(crate) fn decode_snapshot<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    expected: u8,
    version: impl FnOnce(&T) -> u8,
) -> Result<T, String> {
    let record: T = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    match version(&record) {
        v if v == expected => Ok(record),
        v => Err(format!("unknown version {v}")),
    }
}

/// Why the store failed. A failed `put_*` means nothing was acknowledged.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The backing storage failed (I/O, corruption, lock).
    #[error("store backend: {0}")]
    Backend(Box<dyn std::error::Error + Send + Sync>),
    /// A stored record could not be decoded.
    #[error("corrupt record for channel {channel_id}: {reason}")]
    Corrupt {
        /// The channel.
        channel_id: B256,
        /// What was wrong.
        reason: String,
    },
}

/// Durable storage for channel records and their best vouchers.
#[cfg(feature = "client")]
#[cfg_attr(docsrs, doc(cfg(feature = "client")))]
#[async_trait]
pub trait ChannelStore: Send + Sync {
    /// Durably replaces the record of `channel_id`.
    async fn put_channel(&self, channel_id: B256, record: &[u8]) -> Result<(), StoreError>;

    /// The record of `channel_id`, if any.
    async fn get_channel(&self, channel_id: B256) -> Result<Option<Vec<u8>>, StoreError>;

    /// Durably stores `voucher` as the best voucher of its channel **unless** the stored one has a
    /// larger or equal amount. Returns the best voucher stored after the call.
    async fn put_voucher(&self, voucher: &Voucher) -> Result<Voucher, StoreError>;

    /// The best voucher stored for `channel_id`, if any.
    async fn get_voucher(&self, channel_id: B256) -> Result<Option<Voucher>, StoreError>;

    /// Every channel with a record, in no particular order.
    async fn channel_ids(&self) -> Result<Vec<B256>, StoreError>;

    /// Removes a channel's record and voucher (after it is settled).
    async fn remove(&self, channel_id: B256) -> Result<(), StoreError>;
}

#[cfg(feature = "client")]
#[async_trait]
impl<T: ChannelStore + ?Sized> ChannelStore for std::sync::Arc<T> {
    async fn put_channel(&self, channel_id: B256, record: &[u8]) -> Result<(), StoreError> {
        (**self).put_channel(channel_id, record).await
    }
    async fn get_channel(&self, channel_id: B256) -> Result<Option<Vec<u8>>, StoreError> {
        (**self).get_channel(channel_id).await
    }
    async fn put_voucher(&self, voucher: &Voucher) -> Result<Voucher, StoreError> {
        (**self).put_voucher(voucher).await
    }
    async fn get_voucher(&self, channel_id: B256) -> Result<Option<Voucher>, StoreError> {
        (**self).get_voucher(channel_id).await
    }
    async fn channel_ids(&self) -> Result<Vec<B256>, StoreError> {
        (**self).channel_ids().await
    }
    async fn remove(&self, channel_id: B256) -> Result<(), StoreError> {
        (**self).remove(channel_id).await
    }
}

#[cfg(feature = "client")]
#[allow(dead_code)]
struct _ObjectSafe(Box<dyn ChannelStore>);
