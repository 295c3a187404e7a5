//! [`RedbStore`]: the [`ChannelStore`] contract in a redb file.

use std::path::Path;

use alloy_primitives::{B256, U256};
use async_trait::async_trait;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

use super::{ChannelStore, StoreError};
use crate::sign::Signature;
use crate::voucher::Voucher;

/// Channel records: channel id → the client's opaque record.
const CHANNELS: TableDefinition<'static, &[u8; 32], &[u8]> = TableDefinition::new("channels");
/// Best vouchers: channel id → `amount (32 bytes, big-endian) ‖ r ‖ s ‖ v` (97 bytes).
const VOUCHERS: TableDefinition<'static, &[u8; 32], &[u8; 97]> = TableDefinition::new("vouchers");

fn backend(e: impl Into<redb::Error>) -> StoreError {
    StoreError::Backend(Box::new(e.into()))
}

fn encode_voucher(voucher: &Voucher) -> [u8; 97] {
    let mut out = [0u8; 97];
    out[..32].copy_from_slice(&voucher.amount.to_be_bytes::<32>());
    out[32..].copy_from_slice(&voucher.signature.to_rsv());
    out
}

fn decode_voucher(channel_id: B256, bytes: &[u8; 97]) -> Result<Voucher, StoreError> {
    let mut amount = [0u8; 32];
    amount.copy_from_slice(&bytes[..32]);
    let signature = Signature::from_rsv(&bytes[32..]).map_err(|e| StoreError::Corrupt {
        channel_id,
        reason: format!("stored voucher signature: {e}"),
    })?;
    Ok(Voucher {
        channel_id,
        amount: U256::from_be_bytes(amount),
        signature,
    })
}

/// A durable [`ChannelStore`] in one [redb](https://docs.rs/redb) file.
///
/// Every `put_*` and `remove` is one write transaction committed with
/// [`Durability::Immediate`] (fsync) before the call returns, so everything acknowledged survives
/// a crash and is seen by the next [`RedbStore::open`]. `put_voucher` reads and replaces the best
/// voucher inside one write transaction; redb runs write transactions one at a time, so
/// concurrent calls cannot lose the larger voucher.
///
/// The calls do blocking file I/O on the calling thread (one fsync per write); wrap the store in
/// `tokio::task::spawn_blocking` if that matters to the runtime. A file can be open in only one
/// `RedbStore` at a time.
#[derive(Debug)]
pub struct RedbStore {
    db: Database,
}

impl RedbStore {
    /// Opens the store at `path`, creating the file and its tables if needed.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let db = Database::create(path).map_err(backend)?;
        let store = Self { db };
        store.write(|txn| {
            txn.open_table(CHANNELS).map_err(backend)?;
            txn.open_table(VOUCHERS).map_err(backend)?;
            Ok(())
        })?;
        Ok(store)
    }

    /// Runs `body` in one write transaction and commits it durably.
    fn write<T>(
        &self,
        body: impl FnOnce(&redb::WriteTransaction) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut txn = self.db.begin_write().map_err(backend)?;
        txn.set_durability(Durability::Immediate).map_err(backend)?;
        let out = body(&txn)?;
        txn.commit().map_err(backend)?;
        Ok(out)
    }
}

#[async_trait]
impl ChannelStore for RedbStore {
    async fn put_channel(&self, channel_id: B256, record: &[u8]) -> Result<(), StoreError> {
        self.write(|txn| {
            let mut table = txn.open_table(CHANNELS).map_err(backend)?;
            table.insert(&channel_id.0, record).map_err(backend)?;
            Ok(())
        })
    }

    async fn get_channel(&self, channel_id: B256) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.db.begin_read().map_err(backend)?;
        let table = txn.open_table(CHANNELS).map_err(backend)?;
        let record = table.get(&channel_id.0).map_err(backend)?;
        Ok(record.map(|r| r.value().to_vec()))
    }

    async fn put_voucher(&self, voucher: &Voucher) -> Result<Voucher, StoreError> {
        let channel_id = voucher.channel_id;
        self.write(|txn| {
            let mut table = txn.open_table(VOUCHERS).map_err(backend)?;
            let stored = table
                .get(&channel_id.0)
                .map_err(backend)?
                .map(|v| decode_voucher(channel_id, v.value()))
                .transpose()?;
            match stored {
                Some(best) if best.amount >= voucher.amount => Ok(best),
                _ => {
                    table
                        .insert(&channel_id.0, &encode_voucher(voucher))
                        .map_err(backend)?;
                    Ok(*voucher)
                }
            }
        })
    }

    async fn get_voucher(&self, channel_id: B256) -> Result<Option<Voucher>, StoreError> {
        let txn = self.db.begin_read().map_err(backend)?;
        let table = txn.open_table(VOUCHERS).map_err(backend)?;
        let stored = table.get(&channel_id.0).map_err(backend)?;
        stored
            .map(|v| decode_voucher(channel_id, v.value()))
            .transpose()
    }

    async fn channel_ids(&self) -> Result<Vec<B256>, StoreError> {
        let txn = self.db.begin_read().map_err(backend)?;
        let table = txn.open_table(CHANNELS).map_err(backend)?;
        let mut ids = Vec::new();
        for entry in table.iter().map_err(backend)? {
            let (key, _) = entry.map_err(backend)?;
            ids.push(B256::from(key.value()));
        }
        Ok(ids)
    }

    async fn remove(&self, channel_id: B256) -> Result<(), StoreError> {
        self.write(|txn| {
            txn.open_table(CHANNELS)
                .map_err(backend)?
                .remove(&channel_id.0)
                .map_err(backend)?;
            txn.open_table(VOUCHERS)
                .map_err(backend)?
                .remove(&channel_id.0)
                .map_err(backend)?;
            Ok(())
        })
    }
}
