//! [`Recording`]: a [`Chain`] that records the transactions it sends, and [`Call`], the name of
//! every [`Chain`] method.

use std::future::Future;
use std::sync::Mutex;

use alloy_primitives::{Address, B256, U256};
use async_trait::async_trait;

use super::{Chain, ChainError, ChainEventRecord, OnChainStatus, ReclaimArgs, TxReceipt};
use crate::sign::Signature;
use crate::state::{FixedPart, SignedVariablePart, SingleAssetExit};
use crate::sync::lock;

/// A [`Chain`] method: what [`Recording::sent`] names a transaction by (and what a test wrapper
/// counts or fails a call by).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
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

/// Forwards every call to `inner` and records each transaction that was mined (a revert or a
/// transport error is not recorded), in order, with the gas its receipt reports: what a run
/// sent on chain and what it cost (the simulated chain reports no gas, so a report prices the
/// [`Call`]s itself).
///
/// ```
/// # use payment_channel::{SimulatedChain, Address, B256, U256};
/// # use payment_channel::chain::{Call, Chain, Recording};
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let sim = SimulatedChain::new();
/// let payer = Address::repeat_byte(1);
/// sim.fund(payer, U256::from(10)).unwrap();
/// let chain = Recording::new(sim.handle(payer));
/// chain.now().await.unwrap();
/// let channel = B256::repeat_byte(2);
/// chain.deposit(Address::ZERO, channel, U256::ZERO, U256::from(3)).await.unwrap();
/// assert_eq!(chain.sent(), [(Call::Deposit, 0)]);
/// # });
/// ```
#[derive(Debug)]
pub struct Recording<C> {
    inner: C,
    sent: Mutex<Vec<(Call, u64)>>,
}

impl<C: Chain> Recording<C> {
    /// Wraps `inner`, with nothing recorded yet.
    pub fn new(inner: C) -> Self {
        Self {
            inner,
            sent: Mutex::new(Vec::new()),
        }
    }

    /// The wrapped chain.
    pub fn inner(&self) -> &C {
        &self.inner
    }

    /// The transactions mined so far, in order, with the gas each used.
    pub fn sent(&self) -> Vec<(Call, u64)> {
        lock(&self.sent).clone()
    }

    /// Awaits the transaction `send` and records it as `call` if it was mined.
    async fn record(
        &self,
        call: Call,
        send: impl Future<Output = Result<TxReceipt, ChainError>>,
    ) -> Result<TxReceipt, ChainError> {
        let receipt = send.await?;
        lock(&self.sent).push((call, receipt.gas_used));
        Ok(receipt)
    }
}

/// The `around` of [`Recording`]'s calls: a transaction goes through [`Recording::record`], the
/// rest is forwarded.
macro_rules! recorded {
    (tx $name:ident, $this:ident, $call:expr) => {
        $this.record(Call::$name, $call).await
    };
    ($kind:ident $name:ident, $this:ident, $call:expr $(, $from:ident)?) => {
        $call.await
    };
}

super::impl_chain_wrapper!(
    impl[C: Chain] for Recording<C>,
    inner: |this| this.inner,
    around: recorded
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SimulatedChain;
    use crate::chain::Revert;

    #[tokio::test]
    async fn records_mined_transactions_in_order_and_nothing_else() {
        let sim = SimulatedChain::new();
        let payer = Address::repeat_byte(1);
        sim.fund(payer, U256::from(10)).unwrap();
        let chain = Recording::new(sim.handle(payer));
        let channel = B256::repeat_byte(2);
        let deposit = |held: u64, amount: u64| {
            chain.deposit(Address::ZERO, channel, U256::from(held), U256::from(amount))
        };

        deposit(0, 3).await.unwrap();
        // Reads and event queries are forwarded, not recorded.
        assert_eq!(
            chain.holdings(Address::ZERO, channel).await.unwrap(),
            U256::from(3)
        );
        assert!(chain.events(channel, 0).await.unwrap().len() == 1);
        // A revert (wrong expected holdings) is not a transaction sent.
        assert!(matches!(
            deposit(0, 1).await,
            Err(ChainError::Reverted(Revert::HeldMismatch))
        ));
        deposit(3, 4).await.unwrap();

        assert_eq!(chain.sent(), [(Call::Deposit, 0), (Call::Deposit, 0)]);
        assert_eq!(chain.account(), payer);
        assert_eq!(chain.inner().account(), payer);
    }
}
