//! [`CountedChain`]: a [`Chain`] that records every transaction it sends, by call, so a run can
//! report each party's on-chain transactions (`paid-torrent demo --hub`).

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use payment_channel::chain::ReclaimArgs;
use payment_channel::chain::{Chain, ChainError, ChainEventRecord, OnChainStatus, TxReceipt};
use payment_channel::sign::Signature;
use payment_channel::state::{FixedPart, SignedVariablePart, SingleAssetExit};
use payment_channel::{Address, B256, U256};

/// A transaction a [`CountedChain`] sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Tx {
    /// `deposit`.
    Deposit,
    /// ERC-20 `approve`.
    Approve,
    /// `challenge`.
    Challenge,
    /// `checkpoint`.
    Checkpoint,
    /// `conclude`.
    Conclude,
    /// `transferAllAssets`.
    TransferAllAssets,
    /// `concludeAndTransferAllAssets`.
    ConcludeAndTransferAllAssets,
    /// `reclaim`.
    Reclaim,
    /// `transfer`.
    Transfer,
}

/// Wraps a chain handle and records the transactions that succeed (in order).
pub struct CountedChain {
    inner: Arc<dyn Chain>,
    sent: Mutex<Vec<(Tx, u64)>>,
}

impl std::fmt::Debug for CountedChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CountedChain")
            .field("account", &self.inner.account())
            .finish_non_exhaustive()
    }
}

impl CountedChain {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Chain>) -> Self {
        Self {
            inner,
            sent: Mutex::new(Vec::new()),
        }
    }

    /// The transactions sent so far, with the gas each used (as the chain reported it).
    pub fn sent(&self) -> Vec<(Tx, u64)> {
        self.sent.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn record(&self, tx: Tx, r: Result<TxReceipt, ChainError>) -> Result<TxReceipt, ChainError> {
        if let Ok(receipt) = &r {
            self.sent
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((tx, receipt.gas_used));
        }
        r
    }
}

#[async_trait]
impl Chain for CountedChain {
    fn account(&self) -> Address {
        self.inner.account()
    }
    async fn now(&self) -> Result<u64, ChainError> {
        self.inner.now().await
    }
    async fn block_number(&self) -> Result<u64, ChainError> {
        self.inner.block_number().await
    }
    fn adjudicator(&self) -> Address {
        self.inner.adjudicator()
    }
    async fn balance(&self, asset: Address, owner: Address) -> Result<U256, ChainError> {
        self.inner.balance(asset, owner).await
    }
    async fn deposit(
        &self,
        asset: Address,
        channel_id: B256,
        expected_held: U256,
        amount: U256,
    ) -> Result<TxReceipt, ChainError> {
        let r = self
            .inner
            .deposit(asset, channel_id, expected_held, amount)
            .await;
        self.record(Tx::Deposit, r)
    }
    async fn holdings(&self, asset: Address, channel_id: B256) -> Result<U256, ChainError> {
        self.inner.holdings(asset, channel_id).await
    }
    async fn allowance(&self, token: Address) -> Result<U256, ChainError> {
        self.inner.allowance(token).await
    }
    async fn approve(&self, token: Address, amount: U256) -> Result<TxReceipt, ChainError> {
        let r = self.inner.approve(token, amount).await;
        self.record(Tx::Approve, r)
    }
    async fn decimals(&self, token: Address) -> Result<u8, ChainError> {
        self.inner.decimals(token).await
    }
    async fn code_hash(&self, address: Address) -> Result<B256, ChainError> {
        self.inner.code_hash(address).await
    }
    async fn status(&self, channel_id: B256) -> Result<OnChainStatus, ChainError> {
        self.inner.status(channel_id).await
    }
    async fn challenge(
        &self,
        fixed: &FixedPart,
        proof: &[SignedVariablePart],
        candidate: &SignedVariablePart,
        challenger_sig: &Signature,
    ) -> Result<TxReceipt, ChainError> {
        let r = self
            .inner
            .challenge(fixed, proof, candidate, challenger_sig)
            .await;
        self.record(Tx::Challenge, r)
    }
    async fn checkpoint(
        &self,
        fixed: &FixedPart,
        proof: &[SignedVariablePart],
        candidate: &SignedVariablePart,
    ) -> Result<TxReceipt, ChainError> {
        let r = self.inner.checkpoint(fixed, proof, candidate).await;
        self.record(Tx::Checkpoint, r)
    }
    async fn conclude(
        &self,
        fixed: &FixedPart,
        candidate: &SignedVariablePart,
    ) -> Result<TxReceipt, ChainError> {
        let r = self.inner.conclude(fixed, candidate).await;
        self.record(Tx::Conclude, r)
    }
    async fn transfer_all_assets(
        &self,
        channel_id: B256,
        outcome: &[SingleAssetExit],
        state_hash: B256,
    ) -> Result<TxReceipt, ChainError> {
        let r = self
            .inner
            .transfer_all_assets(channel_id, outcome, state_hash)
            .await;
        self.record(Tx::TransferAllAssets, r)
    }
    async fn conclude_and_transfer_all_assets(
        &self,
        fixed: &FixedPart,
        candidate: &SignedVariablePart,
    ) -> Result<TxReceipt, ChainError> {
        let r = self
            .inner
            .conclude_and_transfer_all_assets(fixed, candidate)
            .await;
        self.record(Tx::ConcludeAndTransferAllAssets, r)
    }
    async fn reclaim(&self, args: &ReclaimArgs) -> Result<TxReceipt, ChainError> {
        let r = self.inner.reclaim(args).await;
        self.record(Tx::Reclaim, r)
    }
    async fn transfer(
        &self,
        asset_index: u64,
        from_channel_id: B256,
        outcome: &[SingleAssetExit],
        state_hash: B256,
        indices: &[u64],
    ) -> Result<TxReceipt, ChainError> {
        let r = self
            .inner
            .transfer(asset_index, from_channel_id, outcome, state_hash, indices)
            .await;
        self.record(Tx::Transfer, r)
    }
    async fn events(
        &self,
        channel_id: B256,
        from_block: u64,
    ) -> Result<Vec<ChainEventRecord>, ChainError> {
        self.inner.events(channel_id, from_block).await
    }
    async fn adjudicator_events(
        &self,
        from_block: u64,
        to_block: u64,
    ) -> Result<Vec<ChainEventRecord>, ChainError> {
        self.inner.adjudicator_events(from_block, to_block).await
    }
    fn default_confirmations(&self) -> u64 {
        self.inner.default_confirmations()
    }
}
