//! The consensus state of a ledger channel and the proposals that change it.

use std::collections::BTreeMap;

use alloy_primitives::{Address, B256, Bytes, U256};
use serde::{Deserialize, Serialize};

use super::error::{LedgerPeerError, ProposalError};
use crate::state::{
    Allocation, AssetMetadata, Guarantee, SingleAssetExit, VariablePart, address_to_destination,
    allocation_type,
};

/// One guarantee of a ledger: `amount` locked for the channel it is keyed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GuaranteeEntry {
    /// Locked amount (`a0 + b0` of the guaranteed channel).
    pub amount: U256,
    /// Receives the guaranteed channel's allocation 0 on `reclaim`.
    pub left: B256,
    /// Receives the guaranteed channel's allocation 1 on `reclaim`.
    pub right: B256,
}

/// The ledger's consensus variables at one turn: `[leader balance, follower balance,
/// ...guarantees sorted by target]` in one asset.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LedgerVars {
    /// Turn number.
    pub turn_num: u64,
    /// `[leader, follower]` balances.
    pub balances: [U256; 2],
    /// Guarantees by target channel id (a `BTreeMap`: byte order, the outcome order).
    pub guarantees: BTreeMap<B256, GuaranteeEntry>,
}

/// A change of the ledger's consensus state (§1.3), applied at the next turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Proposal {
    /// Lock `amount` for `target`: `left_deposit + fee` from `left`'s balance, `amount −
    /// left_deposit` from `right`'s, and `fee` credited to `right` (this crate's addition: an
    /// intermediary's fee moves in the same update as the lock, so the payer signs it).
    Add {
        /// The guaranteed channel.
        target: B256,
        /// Guarantee amount.
        amount: U256,
        /// Guarantee `left` (V's allocation 0 goes there on reclaim).
        left: B256,
        /// Guarantee `right` (V's allocation 1 goes there on reclaim).
        right: B256,
        /// Part of `amount` taken from `left`.
        left_deposit: U256,
        /// Moved from `left` to `right` in the same update.
        fee: U256,
    },
    /// Release the guarantee for `target`: `left_amount` to `left`, the rest to `right`.
    Remove {
        /// The guaranteed channel.
        target: B256,
        /// Credited to the guarantee's `left`.
        left_amount: U256,
    },
}

impl Proposal {
    /// The guaranteed channel.
    pub fn target(&self) -> B256 {
        match self {
            Self::Add { target, .. } | Self::Remove { target, .. } => *target,
        }
    }
}

impl LedgerVars {
    /// The funding state: the leader holds `deposit`, the follower nothing.
    pub fn funding(turn_num: u64, deposit: U256) -> Self {
        Self {
            turn_num,
            balances: [deposit, U256::ZERO],
            guarantees: BTreeMap::new(),
        }
    }

    /// Sum of balances and guarantees (`None` on overflow).
    pub fn total(&self) -> Option<U256> {
        self.guarantees
            .values()
            .try_fold(self.balances[0].checked_add(self.balances[1])?, |t, g| {
                t.checked_add(g.amount)
            })
    }

    /// Sum of the guarantees.
    pub fn locked(&self) -> U256 {
        self.guarantees
            .values()
            .fold(U256::ZERO, |t, g| t.saturating_add(g.amount))
    }

    fn index_of(dest: &B256, participants: &[Address; 2]) -> Option<usize> {
        participants
            .iter()
            .position(|p| address_to_destination(*p) == *dest)
    }

    /// The state after `p`, at the next turn. Checks every rule of [`ProposalError`]; the total
    /// is preserved by construction.
    pub fn apply(&self, p: &Proposal, participants: &[Address; 2]) -> Result<Self, ProposalError> {
        let mut next = self.clone();
        next.turn_num = self
            .turn_num
            .checked_add(1)
            .ok_or(ProposalError::Overflow)?;
        match *p {
            Proposal::Add {
                target,
                amount,
                left,
                right,
                left_deposit,
                fee,
            } => {
                if amount.is_zero() {
                    return Err(ProposalError::InvalidGuarantee("zero amount"));
                }
                if target.is_zero() || Self::index_of(&target, participants).is_some() {
                    return Err(ProposalError::InvalidGuarantee(
                        "target is zero or a participant",
                    ));
                }
                if self.guarantees.contains_key(&target) {
                    return Err(ProposalError::DuplicateGuarantee(target));
                }
                let (Some(l), Some(r)) = (
                    Self::index_of(&left, participants),
                    Self::index_of(&right, participants),
                ) else {
                    return Err(ProposalError::NotParticipants);
                };
                if l == r {
                    return Err(ProposalError::NotParticipants);
                }
                if left_deposit > amount {
                    return Err(ProposalError::AboveAmount {
                        what: "left deposit",
                        got: left_deposit,
                        amount,
                    });
                }
                let from_left = left_deposit
                    .checked_add(fee)
                    .ok_or(ProposalError::Overflow)?;
                let from_right = amount - left_deposit;
                let short =
                    |who: B256, balance: U256, needed: U256| ProposalError::InsufficientFunds {
                        who,
                        balance,
                        needed,
                    };
                next.balances[l] = self.balances[l]
                    .checked_sub(from_left)
                    .ok_or_else(|| short(left, self.balances[l], from_left))?;
                next.balances[r] = self.balances[r]
                    .checked_sub(from_right)
                    .ok_or_else(|| short(right, self.balances[r], from_right))?
                    .checked_add(fee)
                    .ok_or(ProposalError::Overflow)?;
                next.guarantees.insert(
                    target,
                    GuaranteeEntry {
                        amount,
                        left,
                        right,
                    },
                );
            }
            Proposal::Remove {
                target,
                left_amount,
            } => {
                let g = next
                    .guarantees
                    .remove(&target)
                    .ok_or(ProposalError::UnknownGuarantee(target))?;
                if left_amount > g.amount {
                    return Err(ProposalError::AboveAmount {
                        what: "left amount",
                        got: left_amount,
                        amount: g.amount,
                    });
                }
                let (Some(l), Some(r)) = (
                    Self::index_of(&g.left, participants),
                    Self::index_of(&g.right, participants),
                ) else {
                    return Err(ProposalError::NotParticipants);
                };
                next.balances[l] = next.balances[l]
                    .checked_add(left_amount)
                    .ok_or(ProposalError::Overflow)?;
                next.balances[r] = next.balances[r]
                    .checked_add(g.amount - left_amount)
                    .ok_or(ProposalError::Overflow)?;
            }
        }
        Ok(next)
    }

    /// The outcome: `[leader, follower, ...guarantees by target]`, type-2 guarantees.
    pub fn outcome(&self, asset: Address, participants: &[Address; 2]) -> Vec<SingleAssetExit> {
        let mut allocations = vec![
            Allocation::simple(participants[0], self.balances[0]),
            Allocation::simple(participants[1], self.balances[1]),
        ];
        allocations.extend(self.guarantees.iter().map(|(target, g)| {
            Allocation::guarantee(
                *target,
                g.amount,
                Guarantee {
                    left: g.left,
                    right: g.right,
                },
            )
        }));
        vec![SingleAssetExit {
            asset,
            asset_metadata: AssetMetadata::default(),
            allocations,
        }]
    }

    /// The state as a variable part (empty app data, as `ConsensusApp` wants).
    pub fn variable_part(
        &self,
        asset: Address,
        participants: &[Address; 2],
        is_final: bool,
    ) -> VariablePart {
        VariablePart {
            outcome: self.outcome(asset, participants),
            app_data: Bytes::new(),
            turn_num: self.turn_num,
            is_final,
        }
    }

    /// Parses a ledger state strictly: one exit in `asset` with default metadata, the two
    /// participants' simple balances first, then type-2 guarantees with well-formed metadata
    /// between the two participants, strictly sorted by target, no zero amounts, no overflow.
    pub fn from_variable_part(
        vp: &VariablePart,
        asset: Address,
        participants: &[Address; 2],
    ) -> Result<Self, LedgerPeerError> {
        use LedgerPeerError::MalformedState as M;
        if !vp.app_data.is_empty() {
            return Err(M("app data must be empty"));
        }
        let [exit] = vp.outcome.as_slice() else {
            return Err(M("not exactly one asset"));
        };
        if exit.asset != asset || exit.asset_metadata != AssetMetadata::default() {
            return Err(M("wrong asset"));
        }
        let allocs = &exit.allocations;
        if allocs.len() < 2 {
            return Err(M("fewer than two allocations"));
        }
        let mut balances = [U256::ZERO; 2];
        for (i, p) in participants.iter().enumerate() {
            let a = &allocs[i];
            if a.destination != address_to_destination(*p)
                || a.allocation_type != allocation_type::SIMPLE
                || !a.metadata.is_empty()
            {
                return Err(M("balances are not the participants' simple allocations"));
            }
            balances[i] = a.amount;
        }
        let mut guarantees = BTreeMap::new();
        let mut last: Option<B256> = None;
        for (index, a) in allocs.iter().enumerate().skip(2) {
            if a.allocation_type != allocation_type::GUARANTEE {
                return Err(LedgerPeerError::NotAGuarantee {
                    index,
                    allocation_type: a.allocation_type,
                });
            }
            let g = a
                .as_guarantee()
                .ok_or(LedgerPeerError::BadGuaranteeMetadata(index))?;
            let (Some(l), Some(r)) = (
                Self::index_of(&g.left, participants),
                Self::index_of(&g.right, participants),
            ) else {
                return Err(LedgerPeerError::BadGuaranteeMetadata(index));
            };
            if l == r || a.amount.is_zero() {
                return Err(M("degenerate guarantee"));
            }
            if last.is_some_and(|t| t >= a.destination) {
                return Err(LedgerPeerError::UnsortedGuarantees);
            }
            last = Some(a.destination);
            guarantees.insert(
                a.destination,
                GuaranteeEntry {
                    amount: a.amount,
                    left: g.left,
                    right: g.right,
                },
            );
        }
        let vars = Self {
            turn_num: vp.turn_num,
            balances,
            guarantees,
        };
        vars.total().ok_or(M("amounts overflow"))?;
        Ok(vars)
    }
}
