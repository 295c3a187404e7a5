//! [`FaultyChain`]: a [`Chain`] wrapper that fails chosen calls, counts every call, and records
//! the gas of its transactions and the `from_block` of its event queries.

use std::collections::HashMap;
use std::sync::Mutex;

use alloy_primitives::{Address, B256, U256};
use async_trait::async_trait;

pub use crate::chain::Call;
use crate::chain::{
    Chain, ChainError, ChainEventRecord, OnChainStatus, ReclaimArgs, Recording, TxReceipt,
};
use crate::sign::Signature;
use crate::state::{FixedPart, SignedVariablePart, SingleAssetExit};
use crate::sync::lock;

/// Forwards to `inner`, except that the next `n` calls of a method chosen with
/// [`FaultyChain::fail_next`] fail with [`ChainError::Transport`] without reaching `inner` (a
/// transaction that was never sent: node timeout, nonce clash, empty gas wallet). Counts every
/// call, failed ones included ([`FaultyChain::calls`]), the gas of every transaction that went
/// through ([`FaultyChain::gas_used`]) and the `from_block` of every event query
/// ([`FaultyChain::event_queries`]). The gas is what the [`Recording`] inside records.
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
    inner: Recording<C>,
    faults: Mutex<HashMap<Call, u32>>,
    counts: Mutex<HashMap<Call, u64>>,
    from_blocks: Mutex<Vec<u64>>,
}

impl<C: Chain> FaultyChain<C> {
    /// Wraps `inner`; nothing fails until [`FaultyChain::fail_next`].
    pub fn new(inner: C) -> Self {
        Self {
            inner: Recording::new(inner),
            faults: Mutex::new(HashMap::new()),
            counts: Mutex::new(HashMap::new()),
            from_blocks: Mutex::new(Vec::new()),
        }
    }

    /// The wrapped chain.
    pub fn inner(&self) -> &C {
        self.inner.inner()
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
        self.inner.sent()
    }

    /// The `from_block` of each [`Chain::events`] and [`Chain::adjudicator_events`] query, in
    /// order, failed ones included.
    pub fn event_queries(&self) -> Vec<u64> {
        lock(&self.from_blocks).clone()
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

/// The `around` of [`FaultyChain`]'s calls: a read or a transaction goes through
/// [`FaultyChain::enter`] (the inner [`Recording`] records the transaction's gas), an event
/// query through [`FaultyChain::enter_log_query`].
macro_rules! faulty_call {
    ($kind:ident $name:ident, $this:ident, $call:expr) => {{
        $this.enter(Call::$name)?;
        $call.await
    }};
    (log $name:ident, $this:ident, $call:expr, $from:ident) => {{
        $this.enter_log_query(Call::$name, $from)?;
        $call.await
    }};
}

crate::chain::impl_chain_wrapper!(
    impl[C: Chain] for FaultyChain<C>,
    inner: |this| this.inner,
    around: faulty_call
);
