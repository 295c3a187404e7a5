//! [`FaultyChain`]: a [`Chain`] wrapper that fails chosen calls, counts every call, and records
//! the gas of its transactions and the `from_block` of its event queries.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;

use alloy_primitives::{Address, B256, U256};
use async_trait::async_trait;

use crate::chain::{Chain, ChainError, ChainEventRecord, OnChainStatus, ReclaimArgs, TxReceipt};
use crate::sign::Signature;
use crate::state::{FixedPart, SignedVariablePart, SingleAssetExit};

/// A [`Chain`] method, for [`FaultyChain::fail_next`] and [`FaultyChain::calls`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Call {
    /// [`Chain::now`].
    Now,
    /// [`Chain::block_number`].
    BlockNumber,
    /// [`Chain::balance`].
    Balance,
    /// [`Chain::deposit`].
    Deposit,
    /// [`Chain::holdings`].
    Holdings,
    /// [`Chain::allowance`].
    Allowance,
    /// [`Chain::approve`].
    Approve,
    /// [`Chain::decimals`].
    Decimals,
    /// [`Chain::code_hash`].
    CodeHash,
    /// [`Chain::status`].
    Status,
    /// [`Chain::challenge`].
    Challenge,
    /// [`Chain::checkpoint`].
    Checkpoint,
    /// [`Chain::conclude`].
    Conclude,
    /// [`Chain::transfer_all_assets`].
    TransferAllAssets,
    /// [`Chain::conclude_and_transfer_all_assets`].
    ConcludeAndTransferAllAssets,
    /// [`Chain::reclaim`].
    Reclaim,
    /// [`Chain::transfer`].
    Transfer,
    /// [`Chain::events`] (one channel).
    Events,
    /// [`Chain::adjudicator_events`] (all channels).
    AdjudicatorEvents,
}

/// Forwards to `inner`, except that the next `n` calls of a method chosen with
/// [`FaultyChain::fail_next`] fail with [`ChainError::Transport`] without reaching `inner` (a
/// transaction that was never sent: node timeout, nonce clash, empty gas wallet). Counts every
/// call, failed ones included ([`FaultyChain::calls`]), the gas of every transaction that went
/// through ([`FaultyChain::gas_used`]) and the `from_block` of every event query
/// ([`FaultyChain::event_queries`]).
///
/// ```
/// # use payment_channel::{SimulatedChain, Address, chain::Chain};
/// # use payment_channel::test_utils::faulty::{Call, FaultyChain};
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let chain = FaultyChain::new(SimulatedChain::new().handle(Address::repeat_byte(1)));
/// chain.fail_next(Call::Now, 1);
/// assert!(chain.now().await.is_err());
/// assert!(chain.now().await.is_ok());
/// assert_eq!(chain.calls(Call::Now), 2);
/// # });
/// ```
#[derive(Debug)]
pub struct FaultyChain<C> {
    inner: C,
    faults: Mutex<HashMap<Call, u32>>,
    counts: Mutex<HashMap<Call, u64>>,
    gas: Mutex<Vec<(Call, u64)>>,
    from_blocks: Mutex<Vec<u64>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl<C: Chain> FaultyChain<C> {
    /// Wraps `inner`; nothing fails until [`FaultyChain::fail_next`].
    pub fn new(inner: C) -> Self {
        Self {
            inner,
            faults: Mutex::new(HashMap::new()),
            counts: Mutex::new(HashMap::new()),
            gas: Mutex::new(Vec::new()),
            from_blocks: Mutex::new(Vec::new()),
        }
    }

    /// The wrapped chain.
    pub fn inner(&self) -> &C {
        &self.inner
    }

    /// Makes the next `n` calls of `call` fail (replacing any count left).
    pub fn fail_next(&self, call: Call, n: u32) {
        lock(&self.faults).insert(call, n);
    }

    /// How many times `call` was made, failed calls included.
    pub fn calls(&self, call: Call) -> u64 {
        lock(&self.counts).get(&call).copied().unwrap_or(0)
    }

    /// The gas used by each transaction that went through, in order.
    pub fn gas_used(&self) -> Vec<(Call, u64)> {
        lock(&self.gas).clone()
    }

    /// The `from_block` of each [`Chain::events`] and [`Chain::adjudicator_events`] query, in
    /// order, failed ones included.
    pub fn event_queries(&self) -> Vec<u64> {
        lock(&self.from_blocks).clone()
    }

    /// A transaction: [`Self::enter`], then `send`, recording the gas it used.
    async fn transact(
        &self,
        call: Call,
        send: impl Future<Output = Result<TxReceipt, ChainError>>,
    ) -> Result<TxReceipt, ChainError> {
        self.enter(call)?;
        let receipt = send.await?;
        lock(&self.gas).push((call, receipt.gas_used));
        Ok(receipt)
    }

    /// [`enter`](Self::enter) for a log query, recording the block it starts from.
    fn enter_log_query(&self, call: Call, from_block: u64) -> Result<(), ChainError> {
        lock(&self.from_blocks).push(from_block);
        self.enter(call)
    }

    /// Counts the call, and fails it if a fault is pending.
    fn enter(&self, call: Call) -> Result<(), ChainError> {
        *lock(&self.counts).entry(call).or_default() += 1;
        let mut faults = lock(&self.faults);
        match faults.get_mut(&call) {
            Some(n) if *n > 0 => {
                *n -= 1;
                Err(ChainError::Transport(
                    format!("injected fault in {call:?}").into(),
                ))
            }
            _ => Ok(()),
        }
    }
}

#[async_trait]
impl<C: Chain> Chain for FaultyChain<C> {
    fn account(&self) -> Address {
        self.inner.account()
    }
    async fn now(&self) -> Result<u64, ChainError> {
        self.enter(Call::Now)?;
        self.inner.now().await
    }
    async fn block_number(&self) -> Result<u64, ChainError> {
        self.enter(Call::BlockNumber)?;
        self.inner.block_number().await
    }
    fn adjudicator(&self) -> Address {
        self.inner.adjudicator()
    }
    async fn balance(&self, asset: Address, owner: Address) -> Result<U256, ChainError> {
        self.enter(Call::Balance)?;
        self.inner.balance(asset, owner).await
    }
    async fn deposit(
        &self,
        asset: Address,
        channel_id: B256,
        expected_held: U256,
        amount: U256,
    ) -> Result<TxReceipt, ChainError> {
        self.transact(
            Call::Deposit,
            self.inner.deposit(asset, channel_id, expected_held, amount),
        )
        .await
    }
    async fn holdings(&self, asset: Address, channel_id: B256) -> Result<U256, ChainError> {
        self.enter(Call::Holdings)?;
        self.inner.holdings(asset, channel_id).await
    }
    async fn allowance(&self, token: Address) -> Result<U256, ChainError> {
        self.enter(Call::Allowance)?;
        self.inner.allowance(token).await
    }
    async fn approve(&self, token: Address, amount: U256) -> Result<TxReceipt, ChainError> {
        self.transact(Call::Approve, self.inner.approve(token, amount))
            .await
    }
    async fn decimals(&self, token: Address) -> Result<u8, ChainError> {
        self.enter(Call::Decimals)?;
        self.inner.decimals(token).await
    }
    async fn code_hash(&self, address: Address) -> Result<B256, ChainError> {
        self.enter(Call::CodeHash)?;
        self.inner.code_hash(address).await
    }
    async fn status(&self, channel_id: B256) -> Result<OnChainStatus, ChainError> {
        self.enter(Call::Status)?;
        self.inner.status(channel_id).await
    }
    async fn challenge(
        &self,
        fixed: &FixedPart,
        proof: &[SignedVariablePart],
        candidate: &SignedVariablePart,
        challenger_sig: &Signature,
    ) -> Result<TxReceipt, ChainError> {
        self.transact(
            Call::Challenge,
            self.inner
                .challenge(fixed, proof, candidate, challenger_sig),
        )
        .await
    }
    async fn checkpoint(
        &self,
        fixed: &FixedPart,
        proof: &[SignedVariablePart],
        candidate: &SignedVariablePart,
    ) -> Result<TxReceipt, ChainError> {
        self.transact(
            Call::Checkpoint,
            self.inner.checkpoint(fixed, proof, candidate),
        )
        .await
    }
    async fn conclude(
        &self,
        fixed: &FixedPart,
        candidate: &SignedVariablePart,
    ) -> Result<TxReceipt, ChainError> {
        self.transact(Call::Conclude, self.inner.conclude(fixed, candidate))
            .await
    }
    async fn transfer_all_assets(
        &self,
        channel_id: B256,
        outcome: &[SingleAssetExit],
        state_hash: B256,
    ) -> Result<TxReceipt, ChainError> {
        self.transact(
            Call::TransferAllAssets,
            self.inner
                .transfer_all_assets(channel_id, outcome, state_hash),
        )
        .await
    }
    async fn conclude_and_transfer_all_assets(
        &self,
        fixed: &FixedPart,
        candidate: &SignedVariablePart,
    ) -> Result<TxReceipt, ChainError> {
        self.transact(
            Call::ConcludeAndTransferAllAssets,
            self.inner
                .conclude_and_transfer_all_assets(fixed, candidate),
        )
        .await
    }
    async fn reclaim(&self, args: &ReclaimArgs) -> Result<TxReceipt, ChainError> {
        self.transact(Call::Reclaim, self.inner.reclaim(args)).await
    }
    async fn transfer(
        &self,
        asset_index: u64,
        from_channel_id: B256,
        outcome: &[SingleAssetExit],
        state_hash: B256,
        indices: &[u64],
    ) -> Result<TxReceipt, ChainError> {
        self.transact(
            Call::Transfer,
            self.inner
                .transfer(asset_index, from_channel_id, outcome, state_hash, indices),
        )
        .await
    }
    async fn events(
        &self,
        channel_id: B256,
        from_block: u64,
    ) -> Result<Vec<ChainEventRecord>, ChainError> {
        self.enter_log_query(Call::Events, from_block)?;
        self.inner.events(channel_id, from_block).await
    }
    async fn adjudicator_events(
        &self,
        from_block: u64,
        to_block: u64,
    ) -> Result<Vec<ChainEventRecord>, ChainError> {
        self.enter_log_query(Call::AdjudicatorEvents, from_block)?;
        self.inner.adjudicator_events(from_block, to_block).await
    }
    fn default_confirmations(&self) -> u64 {
        self.inner.default_confirmations()
    }
}
