//! [`ChainAction`]: a transaction a sans-IO core (a [`Channel`](crate::channel::Channel), a
//! [`Ledger`](crate::ledger::Ledger) or a [`VirtualChannel`](crate::virtual_channel::VirtualChannel))
//! asks its driver to send with [`Chain`](super::Chain).

use alloy_primitives::{Address, B256, U256};

use super::ReclaimArgs;
#[cfg(feature = "client")]
use super::{Chain, ChainError, TxReceipt};
use crate::sign::Signature;
use crate::state::{FixedPart, Outcome, SignedVariablePart};

/// A transaction a driver must send with [`Chain`](super::Chain), after checking on chain that it
/// has not landed already or become moot (the drivers retry from persisted state, so an action may
/// be seen more than once).
///
/// A two-party [`Channel`](crate::channel::Channel) asks for `Deposit`, `Challenge`, `Conclude`
/// and `TransferAllAssets`; ledgers and virtual channels for any of them.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChainAction {
    /// `deposit(asset, channelId, expectedHeld, amount)`.
    Deposit {
        /// The asset (`Address::ZERO`: the native coin).
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
    /// `conclude(fixedPart, candidate)` (a final state signed by every participant); skip if
    /// the chain shows the channel finalized.
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
    /// `transferAllAssets(channelId, outcome, stateHash)`; skip if the holdings are already zero.
    TransferAllAssets {
        /// Channel.
        channel_id: B256,
        /// Its finalized outcome (after every reclaim).
        outcome: Outcome,
        /// Finalized state hash (zero after `conclude`).
        state_hash: B256,
    },
}

impl ChainAction {
    /// The adjudicator function the action calls, as the contract names it (`"deposit"`,
    /// `"concludeAndTransferAllAssets"`, ...): for logs and test tallies.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Deposit { .. } => "deposit",
            Self::Challenge { .. } => "challenge",
            Self::Checkpoint { .. } => "checkpoint",
            Self::Conclude { .. } => "conclude",
            Self::ConcludeAndTransferAllAssets { .. } => "concludeAndTransferAllAssets",
            Self::Reclaim(_) => "reclaim",
            Self::TransferAllAssets { .. } => "transferAllAssets",
        }
    }

    /// Sends the action on `chain` as it stands: the one place each variant meets its [`Chain`]
    /// call. No check that it landed already or became moot; the drivers wrap their own checks
    /// around it (and a revert comes back as the error).
    #[cfg(feature = "client")]
    #[cfg_attr(docsrs, doc(cfg(feature = "client")))]
    pub async fn send(&self, chain: &dyn Chain) -> Result<TxReceipt, ChainError> {
        match self {
            Self::Deposit {
                asset,
                channel_id,
                expected_held,
                amount,
            } => {
                chain
                    .deposit(*asset, *channel_id, *expected_held, *amount)
                    .await
            }
            Self::Challenge {
                fixed,
                proof,
                candidate,
                challenger_sig,
            } => {
                chain
                    .challenge(fixed, proof, candidate, challenger_sig)
                    .await
            }
            Self::Checkpoint {
                fixed,
                proof,
                candidate,
            } => chain.checkpoint(fixed, proof, candidate).await,
            Self::Conclude { fixed, candidate } => chain.conclude(fixed, candidate).await,
            Self::ConcludeAndTransferAllAssets { fixed, candidate } => {
                chain
                    .conclude_and_transfer_all_assets(fixed, candidate)
                    .await
            }
            Self::Reclaim(args) => chain.reclaim(args).await,
            Self::TransferAllAssets {
                channel_id,
                outcome,
                state_hash,
            } => {
                chain
                    .transfer_all_assets(*channel_id, outcome, *state_hash)
                    .await
            }
        }
    }
}
