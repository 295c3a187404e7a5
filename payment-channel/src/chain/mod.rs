//! The on-chain side of a channel: the Nitro adjudicator's funding, dispute and payout calls.
//!
//! [`Chain`] is what the async [`crate`] client drives. Each handle acts for **one account** (the
//! participant that sends the transactions and pays for them). Implementations:
//! - `SimulatedChain` (module `sim`): an in-memory adjudicator with the v2 rules and a controllable clock;
//! - `EthereumChain` (feature `ethereum`): JSON-RPC to a node running the real contracts.
//!
//! Both must behave identically: same reverts (as [`Revert`]), same events, same payouts.

use alloy_primitives::{Address, B256, U256};
#[cfg(feature = "client")]
use async_trait::async_trait;

#[cfg(feature = "ethereum")]
#[cfg_attr(docsrs, doc(cfg(feature = "ethereum")))]
pub mod ethereum;
#[cfg(feature = "client")]
#[cfg_attr(docsrs, doc(cfg(feature = "client")))]
pub mod sim;
#[cfg(feature = "ethereum")]
#[cfg_attr(docsrs, doc(cfg(feature = "ethereum")))]
pub use ethereum::EthereumChain;

#[cfg(feature = "client")]
use crate::sign::Signature;
use crate::state::SignedVariablePart;
#[cfg(feature = "client")]
use crate::state::{FixedPart, SingleAssetExit};

/// `keccak256` of the `NitroAdjudicator`'s runtime code
/// (`@statechannels/nitro-protocol@2.0.1-alpha.6`'s `deployedBytecode`, which is what
/// `eth_getCode` returns once deployed: the contract has no immutables), for checking with
/// [`Chain::code_hash`] that an adjudicator address holds that contract. A test recomputes it from
/// the artifact (`scripts/fetch-nitro-artifacts.sh`), so it cannot drift from the pinned version.
pub const NITRO_ADJUDICATOR_RUNTIME_HASH: B256 =
    alloy_primitives::b256!("0xa3b620a30e9c313891eb06a41fcbf46f85cdae9cb700d7cb3e576470b1566949");

/// What a mined transaction reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxReceipt {
    /// Transaction hash (the simulator makes up a unique one).
    pub tx_hash: B256,
    /// Gas used (the simulator reports 0).
    pub gas_used: u64,
    /// Block the transaction was mined in.
    pub block_number: u64,
    /// Timestamp of that block, unix seconds.
    pub block_timestamp: u64,
}

/// The adjudicator's stored status of a channel (`unpackStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OnChainStatus {
    /// Largest turn number the adjudicator knows to be supported.
    pub turn_num_record: u64,
    /// When the channel finalizes (0 = open, no challenge).
    pub finalizes_at: u64,
    /// Last 160 bits of `keccak256(abi.encode(stateHash, outcomeHash))`, as a 20-byte big-endian value.
    pub fingerprint: [u8; 20],
}

/// The adjudicator's mode of a channel at some time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelMode {
    /// No challenge is running and the channel has not finalized.
    Open,
    /// A challenge is running; it finalizes at `finalizes_at` unless cleared.
    Challenge,
    /// The channel has finalized; funds can be paid out.
    Finalized,
}

impl OnChainStatus {
    /// The mode at unix time `now` (`StatusManager._mode`).
    pub fn mode(&self, now: u64) -> ChannelMode {
        if self.finalizes_at == 0 {
            ChannelMode::Open
        } else if self.finalizes_at <= now {
            ChannelMode::Finalized
        } else {
            ChannelMode::Challenge
        }
    }
}

/// An adjudicator event about one channel.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChainEvent {
    /// `Deposited(destination, asset, destinationHoldings)`.
    Deposited {
        /// Channel funded.
        channel_id: B256,
        /// Asset (zero = native).
        asset: Address,
        /// Holdings after the deposit.
        holdings: U256,
    },
    /// `ChallengeRegistered(channelId, finalizesAt, proof, candidate)`.
    ChallengeRegistered {
        /// Channel challenged.
        channel_id: B256,
        /// When it finalizes unless cleared.
        finalizes_at: u64,
        /// Support proof.
        proof: Vec<SignedVariablePart>,
        /// The challenge state.
        candidate: SignedVariablePart,
    },
    /// `ChallengeCleared(channelId, newTurnNumRecord)`.
    ChallengeCleared {
        /// Channel.
        channel_id: B256,
        /// New turn number record.
        new_turn_num_record: u64,
    },
    /// `Checkpointed(channelId, newTurnNumRecord)`.
    Checkpointed {
        /// Channel.
        channel_id: B256,
        /// New turn number record.
        new_turn_num_record: u64,
    },
    /// `Concluded(channelId, finalizesAt)`.
    Concluded {
        /// Channel.
        channel_id: B256,
        /// Finalization time (the block time of the conclude).
        finalizes_at: u64,
    },
    /// `AllocationUpdated(channelId, assetIndex, initialHoldings, finalHoldings)`: a payout happened.
    AllocationUpdated {
        /// Channel.
        channel_id: B256,
        /// Index of the asset in the outcome.
        asset_index: u64,
        /// Holdings before.
        initial_holdings: U256,
        /// Holdings after.
        final_holdings: U256,
    },
}

impl ChainEvent {
    /// The channel the event is about.
    pub fn channel_id(&self) -> B256 {
        match self {
            Self::Deposited { channel_id, .. }
            | Self::ChallengeRegistered { channel_id, .. }
            | Self::ChallengeCleared { channel_id, .. }
            | Self::Checkpointed { channel_id, .. }
            | Self::Concluded { channel_id, .. }
            | Self::AllocationUpdated { channel_id, .. } => *channel_id,
        }
    }
}

/// An event with its position in the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainEventRecord {
    /// Block number.
    pub block_number: u64,
    /// Hash of that block: with `log_index`, identifies the log across re-scans (a reorg gives
    /// a replaced block another hash).
    pub block_hash: B256,
    /// Index of the log within the block.
    pub log_index: u64,
    /// The event.
    pub event: ChainEvent,
}

/// A revert reason of the Nitro v2 contracts, typed. Unknown reasons are kept as [`Revert::Other`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Revert {
    /// `Channel finalized.`
    #[error("Channel finalized.")]
    ChannelFinalized,
    /// `Channel not finalized.`
    #[error("Channel not finalized.")]
    ChannelNotFinalized,
    /// `turnNumRecord not increased.`
    #[error("turnNumRecord not increased.")]
    TurnNumRecordNotIncreased,
    /// `turnNumRecord decreased.`
    #[error("turnNumRecord decreased.")]
    TurnNumRecordDecreased,
    /// `Invalid signature` (ecrecover returned zero).
    #[error("Invalid signature")]
    InvalidSignature,
    /// `Challenger is not a participant`
    #[error("Challenger is not a participant")]
    ChallengerNotParticipant,
    /// `State must be final`
    #[error("State must be final")]
    StateMustBeFinal,
    /// `!unanimous` (conclude without every signature).
    #[error("!unanimous")]
    NotUnanimous,
    /// `held != expectedHeld`
    #[error("held != expectedHeld")]
    HeldMismatch,
    /// `Incorrect msg.value for deposit`
    #[error("Incorrect msg.value for deposit")]
    IncorrectDepositValue,
    /// `incorrect fingerprint`
    #[error("incorrect fingerprint")]
    IncorrectFingerprint,
    /// A `stateIsSupported` rejection by the app (e.g. `invalid signature for voucher`,
    /// `destination changed`, `!unanimous; |proof|=0`; the list is in [`crate::app`]).
    #[error("not supported: {0}")]
    NotSupported(String),
    /// Any other reason, verbatim.
    #[error("reverted: {0}")]
    Other(String),
}

impl Revert {
    /// Maps a contract revert string to its typed form.
    pub fn from_reason(reason: &str) -> Self {
        match reason {
            "Channel finalized." => Self::ChannelFinalized,
            "Channel not finalized." => Self::ChannelNotFinalized,
            "turnNumRecord not increased." => Self::TurnNumRecordNotIncreased,
            "turnNumRecord decreased." => Self::TurnNumRecordDecreased,
            "Invalid signature" => Self::InvalidSignature,
            "Challenger is not a participant" => Self::ChallengerNotParticipant,
            "State must be final" => Self::StateMustBeFinal,
            "!unanimous" => Self::NotUnanimous,
            "held != expectedHeld" => Self::HeldMismatch,
            "Incorrect msg.value for deposit" => Self::IncorrectDepositValue,
            "incorrect fingerprint" => Self::IncorrectFingerprint,
            r if crate::app::PAYMENT_APP_REVERTS.contains(&r)
                || crate::app::VIRTUAL_PAYMENT_APP_REVERTS.contains(&r) =>
            {
                Self::NotSupported(reason.to_owned())
            }
            other => Self::Other(other.to_owned()),
        }
    }
}

/// Why a chain call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChainError {
    /// The contract reverted.
    #[error("transaction reverted: {0}")]
    Reverted(#[from] Revert),
    /// The sending account cannot pay for the call (value or gas).
    #[error("insufficient funds: need {needed}, have {available}")]
    InsufficientFunds {
        /// Amount needed.
        needed: U256,
        /// Amount available.
        available: U256,
    },
    /// A token moved another amount than asked (a fee-on-transfer or otherwise non-standard
    /// ERC-20): the deposit stops before more is at risk.
    #[error("token {token} moved {received} for a transfer of {sent}")]
    TokenMisbehaved {
        /// The token.
        token: Address,
        /// The amount transferred.
        sent: U256,
        /// What the recipient's balance rose by.
        received: U256,
    },
    /// The node or its transport failed; the call may or may not have happened.
    #[error("chain transport: {0}")]
    Transport(Box<dyn std::error::Error + Send + Sync>),
}

/// Access to a Nitro v2 adjudicator, acting for one account.
///
/// All methods that send a transaction return once it is mined, with its receipt, or with
/// [`ChainError::Reverted`] and no effect. Implementations must be usable behind `Arc<dyn Chain>`.
#[cfg(feature = "client")]
#[cfg_attr(docsrs, doc(cfg(feature = "client")))]
#[async_trait]
pub trait Chain: Send + Sync {
    /// The account that sends (and pays for) this handle's transactions.
    fn account(&self) -> Address;

    /// Timestamp of the latest block (the adjudicator's "now"), unix seconds.
    async fn now(&self) -> Result<u64, ChainError>;

    /// Number of the latest block.
    async fn block_number(&self) -> Result<u64, ChainError>;

    /// The adjudicator's address (where deposits go, and the spender a token deposit approves).
    fn adjudicator(&self) -> Address;

    /// Balance of `owner` in `asset`: the native coin for `Address::ZERO`, otherwise the ERC-20
    /// `balanceOf(owner)`.
    async fn balance(&self, asset: Address, owner: Address) -> Result<U256, ChainError>;

    /// `deposit(asset, channelId, expectedHeld, amount)`, with `msg.value = amount` for the
    /// native coin and no value for an ERC-20 (whose allowance to the adjudicator must cover
    /// `amount`: see [`Chain::approve`]).
    async fn deposit(
        &self,
        asset: Address,
        channel_id: B256,
        expected_held: U256,
        amount: U256,
    ) -> Result<TxReceipt, ChainError>;

    /// `holdings(asset, channelId)`.
    async fn holdings(&self, asset: Address, channel_id: B256) -> Result<U256, ChainError>;

    /// ERC-20 `allowance(account, adjudicator)` of `token`.
    async fn allowance(&self, token: Address) -> Result<U256, ChainError>;

    /// ERC-20 `approve(adjudicator, amount)` of `token`, from this handle's account.
    async fn approve(&self, token: Address, amount: U256) -> Result<TxReceipt, ChainError>;

    /// ERC-20 `decimals()` of `token` (18 for the native coin).
    async fn decimals(&self, token: Address) -> Result<u8, ChainError>;

    /// `keccak256` of the runtime code at `address` (`eth_getCode`); the hash of empty code where
    /// there is no contract.
    async fn code_hash(&self, address: Address) -> Result<B256, ChainError>;

    /// `unpackStatus(channelId)`.
    async fn status(&self, channel_id: B256) -> Result<OnChainStatus, ChainError>;

    /// `challenge(fixedPart, proof, candidate, challengerSig)`.
    async fn challenge(
        &self,
        fixed: &FixedPart,
        proof: &[SignedVariablePart],
        candidate: &SignedVariablePart,
        challenger_sig: &Signature,
    ) -> Result<TxReceipt, ChainError>;

    /// `checkpoint(fixedPart, proof, candidate)`.
    async fn checkpoint(
        &self,
        fixed: &FixedPart,
        proof: &[SignedVariablePart],
        candidate: &SignedVariablePart,
    ) -> Result<TxReceipt, ChainError>;

    /// `conclude(fixedPart, candidate)`.
    async fn conclude(
        &self,
        fixed: &FixedPart,
        candidate: &SignedVariablePart,
    ) -> Result<TxReceipt, ChainError>;

    /// `transferAllAssets(channelId, outcome, stateHash)`: pays out a finalized channel.
    /// `state_hash` is zero for a concluded channel and the challenge state's hash otherwise.
    async fn transfer_all_assets(
        &self,
        channel_id: B256,
        outcome: &[SingleAssetExit],
        state_hash: B256,
    ) -> Result<TxReceipt, ChainError>;

    /// Adjudicator events about `channel_id` in blocks `from_block..=latest`, in chain order.
    async fn events(
        &self,
        channel_id: B256,
        from_block: u64,
    ) -> Result<Vec<ChainEventRecord>, ChainError>;

    /// Adjudicator events about **every** channel in blocks `from_block..=to_block`, in chain
    /// order: one log query however many channels the caller watches (it dispatches by
    /// [`ChainEvent::channel_id`]). Empty when `from_block > to_block`.
    async fn adjudicator_events(
        &self,
        from_block: u64,
        to_block: u64,
    ) -> Result<Vec<ChainEventRecord>, ChainError>;

    /// How many blocks must follow a block before a watcher applies its events, unless the
    /// client configures another number (see `ClientConfig::confirmations`). A simulated chain
    /// has no reorgs and answers 0; the default is 0.
    fn default_confirmations(&self) -> u64 {
        0
    }
}

#[cfg(feature = "client")]
#[async_trait]
impl<T: Chain + ?Sized> Chain for std::sync::Arc<T> {
    fn account(&self) -> Address {
        (**self).account()
    }
    async fn now(&self) -> Result<u64, ChainError> {
        (**self).now().await
    }
    async fn block_number(&self) -> Result<u64, ChainError> {
        (**self).block_number().await
    }
    fn adjudicator(&self) -> Address {
        (**self).adjudicator()
    }
    async fn balance(&self, asset: Address, owner: Address) -> Result<U256, ChainError> {
        (**self).balance(asset, owner).await
    }
    async fn deposit(
        &self,
        asset: Address,
        channel_id: B256,
        expected_held: U256,
        amount: U256,
    ) -> Result<TxReceipt, ChainError> {
        (**self)
            .deposit(asset, channel_id, expected_held, amount)
            .await
    }
    async fn holdings(&self, asset: Address, channel_id: B256) -> Result<U256, ChainError> {
        (**self).holdings(asset, channel_id).await
    }
    async fn allowance(&self, token: Address) -> Result<U256, ChainError> {
        (**self).allowance(token).await
    }
    async fn approve(&self, token: Address, amount: U256) -> Result<TxReceipt, ChainError> {
        (**self).approve(token, amount).await
    }
    async fn decimals(&self, token: Address) -> Result<u8, ChainError> {
        (**self).decimals(token).await
    }
    async fn code_hash(&self, address: Address) -> Result<B256, ChainError> {
        (**self).code_hash(address).await
    }
    async fn status(&self, channel_id: B256) -> Result<OnChainStatus, ChainError> {
        (**self).status(channel_id).await
    }
    async fn challenge(
        &self,
        fixed: &FixedPart,
        proof: &[SignedVariablePart],
        candidate: &SignedVariablePart,
        challenger_sig: &Signature,
    ) -> Result<TxReceipt, ChainError> {
        (**self)
            .challenge(fixed, proof, candidate, challenger_sig)
            .await
    }
    async fn checkpoint(
        &self,
        fixed: &FixedPart,
        proof: &[SignedVariablePart],
        candidate: &SignedVariablePart,
    ) -> Result<TxReceipt, ChainError> {
        (**self).checkpoint(fixed, proof, candidate).await
    }
    async fn conclude(
        &self,
        fixed: &FixedPart,
        candidate: &SignedVariablePart,
    ) -> Result<TxReceipt, ChainError> {
        (**self).conclude(fixed, candidate).await
    }
    async fn transfer_all_assets(
        &self,
        channel_id: B256,
        outcome: &[SingleAssetExit],
        state_hash: B256,
    ) -> Result<TxReceipt, ChainError> {
        (**self)
            .transfer_all_assets(channel_id, outcome, state_hash)
            .await
    }
    async fn events(
        &self,
        channel_id: B256,
        from_block: u64,
    ) -> Result<Vec<ChainEventRecord>, ChainError> {
        (**self).events(channel_id, from_block).await
    }
    async fn adjudicator_events(
        &self,
        from_block: u64,
        to_block: u64,
    ) -> Result<Vec<ChainEventRecord>, ChainError> {
        (**self).adjudicator_events(from_block, to_block).await
    }
    fn default_confirmations(&self) -> u64 {
        (**self).default_confirmations()
    }
}

/// `keccak256(abi.encode(stateHash, outcomeHash))` truncated to its last 160 bits (`_generateFingerprint`).
pub fn fingerprint(state_hash: B256, outcome_hash: B256) -> [u8; 20] {
    use alloy_sol_types::SolValue;
    let h = alloy_primitives::keccak256((state_hash, outcome_hash).abi_encode_params());
    let mut out = [0u8; 20];
    out.copy_from_slice(&h[12..]);
    out
}

#[cfg(feature = "client")]
#[allow(dead_code)]
struct _ObjectSafe(Box<dyn Chain>);
