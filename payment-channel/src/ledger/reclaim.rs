//! What `reclaim` does to a ledger's outcome, computed off chain (for building
//! [`ChainAction::Reclaim`](crate::chain::ChainAction::Reclaim) and for recognising reclaims sent
//! by others).

use alloy_primitives::B256;

use crate::state::{Allocation, Outcome};

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
