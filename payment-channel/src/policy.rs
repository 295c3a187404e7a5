//! The payer's auto-join policy: which proposals a [`Client`](crate::client::Client) joins (and
//! funds) without asking.

use alloy_primitives::{Address, U256};

use crate::error::PolicyRejection;
use crate::message::Propose;

/// Caps a payer applies before joining (and depositing into) a proposed channel.
///
/// Structural checks (`participants == [me, proposer]`, a valid payee signature, a non-zero
/// deposit) are not policy: [`Channel::from_proposal`](crate::channel::Channel::from_proposal)
/// always enforces them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinPolicy {
    /// The only app definition accepted: the deployed `VirtualPaymentApp`.
    pub app_definition: Address,
    /// Largest deposit for one channel.
    pub max_deposit: U256,
    /// Largest total deposit locked across this payer's channels that are not yet paid out.
    pub budget: U256,
    /// Shortest challenge duration accepted (seconds): too short and we may miss a challenge.
    pub min_challenge_duration: u64,
    /// Longest challenge duration accepted (seconds): too long and our deposit is stuck if the payee vanishes.
    pub max_challenge_duration: u64,
    /// Highest advertised price accepted (wei per byte). `None`: any price, or none.
    pub max_price: Option<U256>,
}

impl JoinPolicy {
    /// A policy for `app_definition` with the given per-channel cap and budget, challenge durations
    /// between 60 s and 1 day, and no price cap.
    pub fn new(app_definition: Address, max_deposit: U256, budget: U256) -> Self {
        Self {
            app_definition,
            max_deposit,
            budget,
            min_challenge_duration: 60,
            max_challenge_duration: 86_400,
            max_price: None,
        }
    }

    /// Checks a proposal, given the total already `locked` in our open payer channels.
    pub fn check(&self, proposal: &Propose, locked: U256) -> Result<(), PolicyRejection> {
        let fixed = &proposal.fixed;
        if fixed.app_definition != self.app_definition {
            return Err(PolicyRejection::WrongApp {
                expected: self.app_definition,
                got: fixed.app_definition,
            });
        }
        if proposal.deposit > self.max_deposit {
            return Err(PolicyRejection::DepositTooLarge {
                max: self.max_deposit,
                got: proposal.deposit,
            });
        }
        let within_budget = locked
            .checked_add(proposal.deposit)
            .is_some_and(|total| total <= self.budget);
        if !within_budget {
            return Err(PolicyRejection::OverBudget {
                budget: self.budget,
                locked,
                deposit: proposal.deposit,
            });
        }
        let d = fixed.challenge_duration;
        if d < self.min_challenge_duration || d > self.max_challenge_duration {
            return Err(PolicyRejection::ChallengeDuration {
                min: self.min_challenge_duration,
                max: self.max_challenge_duration,
                got: d,
            });
        }
        if let Some(max) = self.max_price
            && proposal.price.is_none_or(|p| p > max)
        {
            return Err(PolicyRejection::PriceTooHigh {
                max,
                got: proposal.price,
            });
        }
        Ok(())
    }
}
