//! [`MemoryStore`]: the [`ChannelStore`] contract in memory, without durability.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use alloy_primitives::B256;
use async_trait::async_trait;

use super::{ChannelStore, StoreError};
use crate::voucher::Voucher;

#[derive(Debug, Default)]
struct Maps {
    channels: HashMap<B256, Vec<u8>>,
    vouchers: HashMap<B256, Voucher>,
}

/// A [`ChannelStore`] in memory: same semantics as a durable store (largest voucher kept
/// atomically, `remove` drops both record and voucher), but everything is lost with the value.
#[derive(Debug, Default)]
pub struct MemoryStore {
    maps: Mutex<Maps>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn maps(&self) -> MutexGuard<'_, Maps> {
        // Nothing panics while the lock is held, so a poisoned lock still guards consistent maps.
        self.maps.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait]
impl ChannelStore for MemoryStore {
    async fn put_channel(&self, channel_id: B256, record: &[u8]) -> Result<(), StoreError> {
        self.maps().channels.insert(channel_id, record.to_vec());
        Ok(())
    }

    async fn get_channel(&self, channel_id: B256) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.maps().channels.get(&channel_id).cloned())
    }

    async fn put_voucher(&self, voucher: &Voucher) -> Result<Voucher, StoreError> {
        let mut maps = self.maps();
        let best = maps
            .vouchers
            .entry(voucher.channel_id)
            .and_modify(|stored| {
                if voucher.amount > stored.amount {
                    *stored = *voucher;
                }
            })
            .or_insert(*voucher);
        Ok(*best)
    }

    async fn get_voucher(&self, channel_id: B256) -> Result<Option<Voucher>, StoreError> {
        Ok(self.maps().vouchers.get(&channel_id).copied())
    }

    async fn channel_ids(&self) -> Result<Vec<B256>, StoreError> {
        Ok(self.maps().channels.keys().copied().collect())
    }

    async fn remove(&self, channel_id: B256) -> Result<(), StoreError> {
        let mut maps = self.maps();
        maps.channels.remove(&channel_id);
        maps.vouchers.remove(&channel_id);
        Ok(())
    }
}
