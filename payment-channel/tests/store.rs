//! `MemoryStore` and `RedbStore` against the same `ChannelStore` contract, plus durability across
//! reopening for `RedbStore`.

use std::sync::Arc;

use payment_channel::sign::LocalSigner;
use payment_channel::store::{ChannelStore, StoreError};
use payment_channel::voucher::Voucher;
use payment_channel::{B256, MemoryStore, RedbStore, U256};

fn payer() -> LocalSigner {
    LocalSigner::from_bytes(&B256::repeat_byte(0x11)).unwrap()
}

fn voucher(channel: u8, amount: u64) -> Voucher {
    Voucher::sign(B256::repeat_byte(channel), U256::from(amount), &payer()).unwrap()
}

/// Two OS threads (each with its own runtime) race `put_voucher`; the store ends with the maximum.
fn threads_race_put_voucher(store: Arc<dyn ChannelStore>) {
    let channel = 10u8;
    std::thread::scope(|scope| {
        for start in [0u64, 1] {
            let store = Arc::clone(&store);
            scope.spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    for amount in (start..30).step_by(2) {
                        store.put_voucher(&voucher(channel, amount)).await.unwrap();
                    }
                });
            });
        }
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let best = rt
        .block_on(store.get_voucher(B256::repeat_byte(channel)))
        .unwrap()
        .unwrap();
    assert_eq!(best.amount, U256::from(29u64));
}

#[test]
fn memory_store_threads_race_put_voucher() {
    threads_race_put_voucher(Arc::new(MemoryStore::new()));
}

#[test]
fn redb_store_threads_race_put_voucher() {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open(dir.path().join("channels.redb")).unwrap();
    threads_race_put_voucher(Arc::new(store));
}

/// The contract every store keeps.
async fn contract(store: &dyn ChannelStore) {
    let a = B256::repeat_byte(1);
    let b = B256::repeat_byte(2);

    // Records.
    assert_eq!(store.get_channel(a).await.unwrap(), None);
    store.put_channel(a, b"first").await.unwrap();
    store.put_channel(a, b"second").await.unwrap();
    store.put_channel(b, b"").await.unwrap();
    assert_eq!(
        store.get_channel(a).await.unwrap().as_deref(),
        Some(&b"second"[..])
    );
    assert_eq!(store.get_channel(b).await.unwrap(), Some(vec![]));
    let mut ids = store.channel_ids().await.unwrap();
    ids.sort();
    assert_eq!(ids, vec![a, b]);

    // Vouchers: the largest is kept, and put_voucher reports it.
    assert_eq!(store.get_voucher(a).await.unwrap(), None);
    for (put, kept) in [(10, 10), (30, 30), (20, 30), (30, 30)] {
        assert_eq!(
            store.put_voucher(&voucher(1, put)).await.unwrap(),
            voucher(1, kept)
        );
    }
    assert_eq!(store.get_voucher(a).await.unwrap(), Some(voucher(1, 30)));
    // Per channel.
    store.put_voucher(&voucher(2, 5)).await.unwrap();
    assert_eq!(store.get_voucher(b).await.unwrap(), Some(voucher(2, 5)));
    // Full 256-bit amounts survive.
    let big = Voucher::sign(B256::repeat_byte(3), U256::MAX, &payer()).unwrap();
    store.put_voucher(&big).await.unwrap();
    assert_eq!(store.get_voucher(big.channel_id).await.unwrap(), Some(big));

    // Remove drops both record and voucher of that channel only.
    store.remove(a).await.unwrap();
    assert_eq!(store.get_channel(a).await.unwrap(), None);
    assert_eq!(store.get_voucher(a).await.unwrap(), None);
    assert_eq!(store.channel_ids().await.unwrap(), vec![b]);
    assert_eq!(store.get_voucher(b).await.unwrap(), Some(voucher(2, 5)));
    store.remove(a).await.unwrap(); // removing twice is fine
}

/// Two tasks race `put_voucher` with interleaved amounts; the store ends with the maximum.
async fn concurrent_put_voucher_keeps_max(store: Arc<dyn ChannelStore>) {
    let channel = 9u8;
    let tasks: Vec<_> = [(0u64, 2u64), (1, 2)]
        .into_iter()
        .map(|(start, step)| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let mut best = U256::ZERO;
                for amount in (start..40).step_by(step as usize) {
                    let kept = store.put_voucher(&voucher(channel, amount)).await.unwrap();
                    assert!(kept.amount >= U256::from(amount));
                    assert!(kept.amount >= best, "the best voucher never shrinks");
                    best = kept.amount;
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(
        store
            .get_voucher(B256::repeat_byte(channel))
            .await
            .unwrap()
            .unwrap()
            .amount,
        U256::from(39u64)
    );
}

#[tokio::test]
async fn memory_store_keeps_the_contract() {
    contract(&MemoryStore::new()).await;
}

#[tokio::test]
async fn redb_store_keeps_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    contract(&RedbStore::open(dir.path().join("channels.redb")).unwrap()).await;
}

#[tokio::test]
async fn memory_store_concurrent_put_voucher_keeps_max() {
    concurrent_put_voucher_keeps_max(Arc::new(MemoryStore::new())).await;
}

#[tokio::test]
async fn redb_store_concurrent_put_voucher_keeps_max() {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open(dir.path().join("channels.redb")).unwrap();
    concurrent_put_voucher_keeps_max(Arc::new(store)).await;
}

#[tokio::test]
async fn redb_store_reopened_after_drop_sees_everything_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("channels.redb");
    {
        let store = RedbStore::open(&path).unwrap();
        store
            .put_channel(B256::repeat_byte(1), b"record")
            .await
            .unwrap();
        store.put_voucher(&voucher(1, 70)).await.unwrap();
        store.put_voucher(&voucher(1, 50)).await.unwrap();
        store
            .put_channel(B256::repeat_byte(2), b"gone")
            .await
            .unwrap();
        store.remove(B256::repeat_byte(2)).await.unwrap();
    }
    let store = RedbStore::open(&path).unwrap();
    assert_eq!(
        store
            .get_channel(B256::repeat_byte(1))
            .await
            .unwrap()
            .as_deref(),
        Some(&b"record"[..])
    );
    assert_eq!(
        store.get_voucher(B256::repeat_byte(1)).await.unwrap(),
        Some(voucher(1, 70))
    );
    assert_eq!(
        store.channel_ids().await.unwrap(),
        vec![B256::repeat_byte(1)]
    );
    assert_eq!(store.get_channel(B256::repeat_byte(2)).await.unwrap(), None);
}

#[tokio::test]
async fn redb_store_reports_backend_errors() {
    let dir = tempfile::tempdir().unwrap();
    // A directory is not a database file.
    let err = RedbStore::open(dir.path()).unwrap_err();
    assert!(matches!(err, StoreError::Backend(_)), "{err:?}");
    // The same file cannot be open twice at once.
    let path = dir.path().join("channels.redb");
    let _first = RedbStore::open(&path).unwrap();
    assert!(matches!(
        RedbStore::open(&path).unwrap_err(),
        StoreError::Backend(_)
    ));
}
