//! The payer's auto-join policy: which proposals a [`Client`](crate::client::Client) joins (and
//! funds) without asking.

use std::collections::BTreeMap;

use alloy_primitives::{Address, U256};

use crate::error::PolicyRejection;
use crate::message::Propose;

/// Caps for one asset: how much of it a payer locks, and at what price.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct AssetLimits {
    /// Largest deposit for one channel, in the asset's smallest unit.
    pub max_deposit: U256,
    /// Largest total deposit locked in this asset across this payer's channels that are not yet
    /// paid out.
    pub budget: U256,
    /// Highest advertised price accepted (smallest units per byte). `None`: any price, or none.
    pub max_price: Option<U256>,
}

impl AssetLimits {
    /// Limits with this per-channel cap and budget and no price cap.
    pub fn new(max_deposit: U256, budget: U256) -> Self {
        Self {
            max_deposit,
            budget,
            max_price: None,
        }
    }

    /// The same limits with a price cap.
    pub fn with_max_price(mut self, max_price: U256) -> Self {
        self.max_price = Some(max_price);
        self
    }
}

/// Caps a payer applies before joining (and depositing into) a proposed channel.
///
/// Structural checks (`participants == [me, proposer]`, a valid payee signature, a non-zero
/// deposit) are not policy: [`Channel::from_proposal`](crate::channel::Channel::from_proposal)
/// always enforces them. Neither is the app's code: the [`Client`](crate::client::Client) joins
/// only where the code at `appDefinition` is `PaymentApp` ([`crate::app`]), whatever the policy.
///
/// Only the assets listed in [`JoinPolicy::assets`] are accepted: a token is trusted with a
/// deposit only when the user names it (a token contract decides who owns what; see the crate's
/// security notes on fee-on-transfer tokens).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct JoinPolicy {
    /// The only app definition accepted: the deployed `PaymentApp`.
    pub app_definition: Address,
    /// The accepted assets (`Address::ZERO`: the native coin) and their caps.
    pub assets: BTreeMap<Address, AssetLimits>,
    /// Shortest challenge duration accepted (seconds): too short and we may miss a challenge.
    pub min_challenge_duration: u64,
    /// Longest challenge duration accepted (seconds): too long and our deposit is stuck if the payee vanishes.
    pub max_challenge_duration: u64,
}

impl JoinPolicy {
    /// A policy for `app_definition` that accepts the native coin only, with the given
    /// per-channel cap and budget, challenge durations between 60 s and 1 day, and no price cap.
    pub fn new(app_definition: Address, max_deposit: U256, budget: U256) -> Self {
        Self {
            app_definition,
            assets: BTreeMap::from([(Address::ZERO, AssetLimits::new(max_deposit, budget))]),
            min_challenge_duration: 60,
            max_challenge_duration: 86_400,
        }
    }

    /// Also accepts `asset` (or replaces its limits).
    pub fn with_asset(mut self, asset: Address, limits: AssetLimits) -> Self {
        self.assets.insert(asset, limits);
        self
    }

    /// Accepts only `asset`, with these limits (e.g. a token and not the native coin).
    pub fn only_asset(mut self, asset: Address, limits: AssetLimits) -> Self {
        self.assets = BTreeMap::from([(asset, limits)]);
        self
    }

    /// Sets the price cap of every accepted asset.
    pub fn with_max_price(mut self, max_price: U256) -> Self {
        for limits in self.assets.values_mut() {
            limits.max_price = Some(max_price);
        }
        self
    }

    /// Sets the accepted challenge durations (seconds).
    pub fn with_challenge_durations(mut self, min: u64, max: u64) -> Self {
        self.min_challenge_duration = min;
        self.max_challenge_duration = max;
        self
    }

    /// Checks a proposal, given the total of its asset already `locked` in our open payer
    /// channels.
    pub fn check(&self, proposal: &Propose, locked: U256) -> Result<(), PolicyRejection> {
        let fixed = &proposal.fixed;
        if fixed.app_definition != self.app_definition {
            return Err(PolicyRejection::WrongApp {
                expected: self.app_definition,
                got: fixed.app_definition,
            });
        }
        let Some(limits) = self.assets.get(&proposal.asset) else {
            return Err(PolicyRejection::AssetNotAccepted(proposal.asset));
        };
        if proposal.deposit > limits.max_deposit {
            return Err(PolicyRejection::DepositTooLarge {
                max: limits.max_deposit,
                got: proposal.deposit,
            });
        }
        let within_budget = locked
            .checked_add(proposal.deposit)
            .is_some_and(|total| total <= limits.budget);
        if !within_budget {
            return Err(PolicyRejection::OverBudget {
                budget: limits.budget,
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
        if let Some(max) = limits.max_price
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
