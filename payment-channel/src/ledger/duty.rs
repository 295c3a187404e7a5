//! Chain duties as data: what a ledger or a virtual channel owes the chain, derived from
//! persisted state so that a driver can run them after any restart.

use alloy_primitives::{Address, B256, U256};

pub use crate::chain::ReclaimArgs;
use crate::sign::Signature;
use crate::state::{Allocation, FixedPart, Outcome, SignedVariablePart};

/// A transaction a driver must send (after checking on chain that it has not landed already).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChainDuty {
    /// `deposit(asset, channelId, expectedHeld, amount)`.
    Deposit {
        /// Asset (`Address::ZERO`: the native coin).
        asset: Address,
        /// Channel.
        channel_id: B256,
        /// Holdings expected before the deposit.
        expected_held: U256,
        /// Amount.
        amount: U256,
    },
    /// `challenge(fixedPart, proof, candidate, challengerSig)`.
    Challenge {
        /// Fixed part.
        fixed: FixedPart,
        /// Support proof.
        proof: Vec<SignedVariablePart>,
        /// Candidate.
        candidate: SignedVariablePart,
        /// Our signature on the challenge message.
        challenger_sig: Signature,
    },
    /// `checkpoint(fixedPart, proof, candidate)`: clears a stale challenge.
    Checkpoint {
        /// Fixed part.
        fixed: FixedPart,
        /// Support proof.
        proof: Vec<SignedVariablePart>,
        /// Candidate (newer than the registered one).
        candidate: SignedVariablePart,
    },
    /// `conclude(fixedPart, candidate)` (a final state signed by every participant).
    Conclude {
        /// Fixed part.
        fixed: FixedPart,
        /// The final state.
        candidate: SignedVariablePart,
    },
    /// `concludeAndTransferAllAssets(fixedPart, candidate)`.
    ConcludeAndTransferAllAssets {
        /// Fixed part.
        fixed: FixedPart,
        /// The final state.
        candidate: SignedVariablePart,
    },
    /// `reclaim(ReclaimArgs)`.
    Reclaim(ReclaimArgs),
    /// `transferAllAssets(channelId, outcome, stateHash)`.
    TransferAllAssets {
        /// Channel.
        channel_id: B256,
        /// Its finalized outcome (after every reclaim).
        outcome: Outcome,
        /// Finalized state hash (zero after `conclude`).
        state_hash: B256,
    },
}

/// Why [`reclaim_effect`] refuses (the contract would revert).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReclaimError {
    /// Outcome shapes the contract does not accept.
    #[error("reclaim: {0}")]
    Invalid(&'static str),
}

/// The ledger outcome after `reclaim` of the guarantee for `target` (`MultiAssetHolder.reclaim`):
/// the guarantee is removed, its `left` is credited the target's allocation 0 and its `right` the
/// target's allocation 1; the two must add up to the guarantee. Returns the new outcome and the
/// guarantee's index in the old one.
pub fn reclaim_effect(
    ledger: &Outcome,
    target: B256,
    target_outcome: &Outcome,
) -> Result<(Outcome, usize), ReclaimError> {
    let [exit] = ledger.as_slice() else {
        return Err(ReclaimError::Invalid("ledger has not one asset"));
    };
    let [texit] = target_outcome.as_slice() else {
        return Err(ReclaimError::Invalid("target has not one asset"));
    };
    if exit.asset != texit.asset {
        return Err(ReclaimError::Invalid("asset differs"));
    }
    let [a0, a1] = texit.allocations.as_slice() else {
        return Err(ReclaimError::Invalid("target has not two allocations"));
    };
    let idx = exit
        .allocations
        .iter()
        .position(|a| a.destination == target && a.as_guarantee().is_some())
        .ok_or(ReclaimError::Invalid("no type-2 guarantee for the target"))?;
    let guarantee = &exit.allocations[idx];
    let g = guarantee
        .as_guarantee()
        .ok_or(ReclaimError::Invalid("no guarantee"))?;
    if a0.amount.checked_add(a1.amount) != Some(guarantee.amount) {
        return Err(ReclaimError::Invalid("totalReclaimed!=guarantee.amount"));
    }
    let mut allocations: Vec<Allocation> = exit.allocations.clone();
    allocations.remove(idx);
    for (dest, amount) in [(g.left, a0.amount), (g.right, a1.amount)] {
        let a = allocations
            .iter_mut()
            .find(|a| a.destination == dest)
            .ok_or(ReclaimError::Invalid("left or right not in the ledger"))?;
        a.amount = a
            .amount
            .checked_add(amount)
            .ok_or(ReclaimError::Invalid("overflow"))?;
    }
    let mut out = exit.clone();
    out.allocations = allocations;
    Ok((vec![out], idx))
}
