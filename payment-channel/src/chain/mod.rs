//! The on-chain side of a channel: the Nitro adjudicator's funding, dispute and payout calls.
//!
//! [`Chain`] is what the async [`crate`] client drives. Each handle acts for **one account** (the
//! participant that sends the transactions and pays for them). Implementations:
//! - `SimulatedChain` (module `sim`): an in-memory adjudicator with the v2 rules and a controllable clock;
//! - `EthereumChain` (feature `ethereum`): JSON-RPC to a node running the real contracts.
//!
//! Both must behave identically: same reverts (as [`Revert`]), same events, same payouts.
//! [`Recording`] wraps either and records the transactions it sent (by [`Call`]).

use alloy_primitives::{Address, B256, U256};
#[cfg(feature = "client")]
use async_trait::async_trait;

mod action;
#[cfg(feature = "client")]
pub(crate) mod checks;
#[cfg(feature = "ethereum")]
#[cfg_attr(docsrs, doc(cfg(feature = "ethereum")))]
pub mod ethereum;
#[cfg(feature = "client")]
mod recording;
#[cfg(feature = "client")]
#[cfg_attr(docsrs, doc(cfg(feature = "client")))]
pub mod sim;
#[cfg(feature = "ethereum")]
#[cfg_attr(docsrs, doc(cfg(feature = "ethereum")))]
pub use ethereum::EthereumChain;

pub use self::action::ChainAction;
#[cfg(feature = "client")]
#[cfg_attr(docsrs, doc(cfg(feature = "client")))]
pub use self::recording::{Call, Recording};

#[cfg(feature = "client")]
use crate::sign::Signature;
#[cfg(feature = "client")]
use crate::state::FixedPart;
use crate::state::SignedVariablePart;
use crate::state::SingleAssetExit;

/// `keccak256` of the `NitroAdjudicator`'s runtime code
/// (`@statechannels/nitro-protocol@2.0.1-alpha.6`'s `deployedBytecode`, which is what
/// `eth_getCode` returns once deployed: the contract has no immutables), for checking with
/// [`Chain::code_hash`] that an adjudicator address holds that contract. A test recomputes it from
/// the artifact (`scripts/fetch-nitro-artifacts.sh`), so it cannot drift from the pinned version.
pub const NITRO_ADJUDICATOR_RUNTIME_HASH: B256 =
    alloy_primitives::b256!("0xa3b620a30e9c313891eb06a41fcbf46f85cdae9cb700d7cb3e576470b1566949");

/// `keccak256` of the published `ConsensusApp`'s runtime code (the same npm package's
/// `deployedBytecode`; no immutables): the app of ledger channels, whose rule is "no proof, the
/// candidate signed by every participant". A test recomputes it from the fetched artifact.
pub const CONSENSUS_APP_RUNTIME_HASH: B256 =
    alloy_primitives::b256!("0xd5d4caa5a34d439ee02ae71f0c87872d927bf4ae2a2398715eab5c3373f4ce4a");

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
    /// `Reclaimed(channelId, assetIndex)`: a guarantee in the ledger `channel_id` was replaced by
    /// the guaranteed channel's outcome ([`Chain::reclaim`]); no funds moved.
    Reclaimed {
        /// The source (ledger) channel.
        channel_id: B256,
        /// Index of the asset in its outcome.
        asset_index: u64,
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
            | Self::AllocationUpdated { channel_id, .. }
            | Self::Reclaimed { channel_id, .. } => *channel_id,
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

/// The arguments of `reclaim` (`IMultiAssetHolder.ReclaimArgs`), typed: the outcomes are ABI-encoded
/// when sent. `reclaim` moves the finalized outcome of a target channel `V` back into a finalized
/// source channel `L` whose allocation `index_of_target_in_source` is a guarantee (allocation type
/// 2) for `V`: the guarantee is removed and `left += V[0].amount`, `right += V[1].amount`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReclaimArgs {
    /// The source (ledger) channel.
    pub source_channel_id: B256,
    /// The state hash in the source's fingerprint: the challenge state's hash, zero if concluded.
    pub source_state_hash: B256,
    /// The source's outcome as currently fingerprinted (after earlier reclaims or transfers).
    pub source_outcome: Vec<SingleAssetExit>,
    /// Index of the asset in the source outcome.
    pub source_asset_index: u64,
    /// Index of the guarantee in that asset's allocations.
    pub index_of_target_in_source: u64,
    /// The state hash in the target's fingerprint: the challenge state's hash, zero if concluded.
    pub target_state_hash: B256,
    /// The target's finalized outcome.
    pub target_outcome: Vec<SingleAssetExit>,
    /// Index of the asset in the target outcome.
    pub target_asset_index: u64,
}

impl ReclaimArgs {
    /// The ABI struct (`sourceOutcomeBytes` and `targetOutcomeBytes` are `abi.encode(outcome)`).
    pub fn to_abi(&self) -> crate::abi::ReclaimArgs {
        crate::abi::ReclaimArgs {
            sourceChannelId: self.source_channel_id,
            sourceStateHash: self.source_state_hash,
            sourceOutcomeBytes: crate::state::encode_outcome(&self.source_outcome).into(),
            sourceAssetIndex: U256::from(self.source_asset_index),
            indexOfTargetInSource: U256::from(self.index_of_target_in_source),
            targetStateHash: self.target_state_hash,
            targetOutcomeBytes: crate::state::encode_outcome(&self.target_outcome).into(),
            targetAssetIndex: U256::from(self.target_asset_index),
        }
    }
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

    /// `concludeAndTransferAllAssets(fixedPart, candidate)`: `conclude` with a final state signed
    /// by every participant, then `transferAllAssets` of its outcome, in one transaction (the
    /// cooperative close of a ledger channel that holds no guarantee: the payout reverts
    /// `cannot transfer a guarantee` otherwise, and the whole call with it).
    async fn conclude_and_transfer_all_assets(
        &self,
        fixed: &FixedPart,
        candidate: &SignedVariablePart,
    ) -> Result<TxReceipt, ChainError>;

    /// `reclaim(reclaimArgs)`: once both the source (ledger) channel and the target (virtual)
    /// channel it guarantees are finalized, replaces the guarantee in the source's fingerprinted
    /// outcome by the target's amounts (see [`ReclaimArgs`]). Moves no funds; emits
    /// [`ChainEvent::Reclaimed`]. A ledger pays out ([`Chain::transfer_all_assets`]) only once
    /// every guarantee in it was reclaimed.
    async fn reclaim(&self, args: &ReclaimArgs) -> Result<TxReceipt, ChainError>;

    /// `transfer(assetIndex, fromChannelId, outcomeBytes, stateHash, indices)`: pays the
    /// allocations at `indices` (strictly increasing; empty = all) of asset `asset_index` of a
    /// finalized channel, and stores the reduced outcome's fingerprint.
    ///
    /// **This crate never needs it; it exists to test a contract hazard.** In
    /// `nitro-protocol@2.0.1-alpha.6` the `cannot transfer a guarantee` check reads
    /// `allocations[k]` with `k` indexing `indices`, not `allocations`. So once a ledger is
    /// finalized with a live guarantee at index `i ≥ 1`, **anyone** can call it with `[i]` and
    /// move the guarantee's amount into `holdings[V]` (the guaranteed channel), outside `reclaim`.
    /// A hub must never let a ledger with a guarantee finalize before the guaranteed channel, and
    /// must reclaim in the first block where both are final.
    async fn transfer(
        &self,
        asset_index: u64,
        from_channel_id: B256,
        outcome: &[SingleAssetExit],
        state_hash: B256,
        indices: &[u64],
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

/// The list of [`Chain`]'s methods, written once: `chain_methods!('l, mac! { head })` expands to
/// `mac! { head sync {..} query {..} tx {..} log {..} }`, with the references of the transaction
/// arguments borrowed for `'l` (`'_` in a method's signature, a named lifetime in [`TxCall`]).
/// Each async method is `Name method(args)`, `Name` being its [`Call`]; an event query also names
/// its `from_block` argument. One missing is a compile error in every implementation, unless the
/// trait gives it a default.
#[cfg(feature = "client")]
macro_rules! chain_methods {
    ($l:lifetime, $mac:ident! { $($head:tt)* }) => {
        $crate::chain::$mac! { $($head)*
            sync {
                account() -> Address;
                adjudicator() -> Address;
                default_confirmations() -> u64;
            }
            query {
                Now now() -> u64;
                BlockNumber block_number() -> u64;
                Balance balance(asset: Address, owner: Address) -> U256;
                Holdings holdings(asset: Address, channel_id: B256) -> U256;
                Allowance allowance(token: Address) -> U256;
                Decimals decimals(token: Address) -> u8;
                CodeHash code_hash(address: Address) -> B256;
                Status status(channel_id: B256) -> OnChainStatus;
            }
            tx {
                Deposit deposit(asset: Address, channel_id: B256, expected_held: U256, amount: U256);
                Approve approve(token: Address, amount: U256);
                Challenge challenge(
                    fixed: &$l FixedPart,
                    proof: &$l [SignedVariablePart],
                    candidate: &$l SignedVariablePart,
                    challenger_sig: &$l Signature
                );
                Checkpoint checkpoint(
                    fixed: &$l FixedPart,
                    proof: &$l [SignedVariablePart],
                    candidate: &$l SignedVariablePart
                );
                Conclude conclude(fixed: &$l FixedPart, candidate: &$l SignedVariablePart);
                TransferAllAssets transfer_all_assets(
                    channel_id: B256,
                    outcome: &$l [SingleAssetExit],
                    state_hash: B256
                );
                ConcludeAndTransferAllAssets conclude_and_transfer_all_assets(
                    fixed: &$l FixedPart,
                    candidate: &$l SignedVariablePart
                );
                Reclaim reclaim(args: &$l ReclaimArgs);
                Transfer transfer(
                    asset_index: u64,
                    from_channel_id: B256,
                    outcome: &$l [SingleAssetExit],
                    state_hash: B256,
                    indices: &$l [u64]
                );
            }
            log {
                Events events(channel_id: B256, from_block: u64) from from_block;
                AdjudicatorEvents adjudicator_events(from_block: u64, to_block: u64) from from_block;
            }
        }
    };
}
#[cfg(feature = "client")]
pub(crate) use chain_methods;

/// Declares [`TxCall`] and [`Backend`] from the method list.
#[cfg(feature = "client")]
macro_rules! declare_backend {
    (
        $l:lifetime
        sync { $($sync:ident() -> $sync_ret:ty;)* }
        query { $($q_name:ident $query:ident($($q_arg:ident: $q_ty:ty),*) -> $q_ret:ty;)* }
        tx { $($t_name:ident $tx:ident($($t_arg:ident: $t_ty:ty),*);)* }
        log { $($l_name:ident $log:ident($($l_arg:ident: $l_ty:ty),*) from $from:ident;)* }
    ) => {
        /// A transaction [`Chain`] can send, with its arguments borrowed: what a [`Backend`]
        /// sends. Each variant is named as its [`Call`] and holds the method's arguments.
        #[derive(Debug, Clone, Copy)]
        pub(crate) enum TxCall<$l> {
            $($t_name { $($t_arg: $t_ty),* },)*
        }

        /// What `EthereumChain` and `SimulatedChainHandle` implement; `impl_chain_backend!`
        /// makes it their [`Chain`]. The reads and event queries are [`Chain`]'s; every
        /// transaction is one [`Backend::send_tx`].
        #[async_trait]
        pub(crate) trait Backend: Send + Sync {
            $(fn $sync(&self) -> $sync_ret;)*
            $(async fn $query(&self, $($q_arg: $q_ty),*) -> Result<$q_ret, ChainError>;)*
            $(async fn $log(&self, $($l_arg: $l_ty),*) -> Result<Vec<ChainEventRecord>, ChainError>;)*
            /// Sends `call` and waits until it is mined, as [`Chain`]'s transaction methods do.
            async fn send_tx(&self, call: TxCall<'_>) -> Result<TxReceipt, ChainError>;
        }
    };
}
#[cfg(feature = "client")]
pub(crate) use declare_backend;

#[cfg(feature = "client")]
chain_methods!('a, declare_backend! { 'a });

/// Implements [`Chain`] for a wrapper of another chain: `impl_chain_wrapper!(impl[generics] for
/// Type, inner: |this| expr, around: hook)`. Each method calls the same method of the inner chain
/// (`expr`, borrowed from `this: &Self`); the async ones go through `hook!(kind Name, this, call)`
/// (`hook!(log Name, this, call, from_block)` for an event query), where `kind` is `query` (a
/// read), `tx` (a transaction) or `log` (an event query), `Name` the method's [`Call`] and `call`
/// the inner call's future, not yet awaited.
#[cfg(feature = "client")]
macro_rules! impl_chain_wrapper {
    (impl[$($gen:tt)*] for $ty:ty, inner: |$this:ident| $inner:expr, around: $around:ident) => {
        $crate::chain::chain_methods!('_, impl_chain! {
            [$($gen)*] $ty, $this, $inner, [$around], Chain
        });
    };
}
#[cfg(feature = "client")]
pub(crate) use impl_chain_wrapper;

/// Implements [`Chain`] for a [`Backend`]: the reads and event queries are the backend's, each
/// transaction method sends its [`TxCall`] with [`Backend::send_tx`].
#[cfg(feature = "client")]
macro_rules! impl_chain_backend {
    ($ty:ty) => {
        $crate::chain::chain_methods!('_, impl_chain! {
            [] $ty, this, *this, [$crate::chain::forward], Backend
        });
    };
}
#[cfg(feature = "client")]
pub(crate) use impl_chain_backend;

/// The [`Chain`] impl behind [`impl_chain_wrapper!`] (`via` = `Chain`: the inner chain's methods)
/// and [`impl_chain_backend!`] (`via` = `Backend`).
#[cfg(feature = "client")]
macro_rules! impl_chain {
    (
        [$($gen:tt)*] $ty:ty, $this:ident, $inner:expr, $around:tt, $via:ident
        sync { $($sync:ident() -> $sync_ret:ty;)* }
        query { $($q_name:ident $query:ident($($q_arg:ident: $q_ty:ty),*) -> $q_ret:ty;)* }
        tx { $($t_name:ident $tx:ident($($t_arg:ident: $t_ty:ty),*);)* }
        log { $($l_name:ident $log:ident($($l_arg:ident: $l_ty:ty),*) from $from:ident;)* }
    ) => {
        #[async_trait]
        impl<$($gen)*> $crate::chain::Chain for $ty {
            $(fn $sync(&self) -> $sync_ret {
                let $this = self;
                $crate::chain::$via::$sync(&($inner))
            })*
            $(async fn $query(&self, $($q_arg: $q_ty),*) -> Result<$q_ret, ChainError> {
                let $this = self;
                $crate::chain::around!($around query $q_name, $this, $crate::chain::$via::$query(&($inner), $($q_arg),*))
            })*
            $(async fn $tx(&self, $($t_arg: $t_ty),*) -> Result<TxReceipt, ChainError> {
                let $this = self;
                $crate::chain::around!($around tx $t_name, $this, $crate::chain::send_via!(
                    $via, &($inner), $t_name $tx($($t_arg),*)
                ))
            })*
            $(async fn $log(&self, $($l_arg: $l_ty),*) -> Result<Vec<ChainEventRecord>, ChainError> {
                let $this = self;
                $crate::chain::around!($around log $l_name, $this, $crate::chain::$via::$log(&($inner), $($l_arg),*), $from)
            })*
        }
    };
}
#[cfg(feature = "client")]
pub(crate) use impl_chain;

/// A transaction of [`impl_chain!`]: the inner chain's method, or the backend's
/// [`Backend::send_tx`] of its [`TxCall`].
#[cfg(feature = "client")]
macro_rules! send_via {
    (Chain, $inner:expr, $name:ident $tx:ident($($arg:ident),*)) => {
        $crate::chain::Chain::$tx($inner, $($arg),*)
    };
    (Backend, $inner:expr, $name:ident $tx:ident($($arg:ident),*)) => {
        $crate::chain::Backend::send_tx($inner, $crate::chain::TxCall::$name { $($arg),* })
    };
}
#[cfg(feature = "client")]
pub(crate) use send_via;

/// Invokes the `around` hook of [`impl_chain!`], given as `[path]`.
#[cfg(feature = "client")]
macro_rules! around {
    ([$($hook:tt)*] $($args:tt)*) => {
        $($hook)*!($($args)*)
    };
}
#[cfg(feature = "client")]
pub(crate) use around;

/// The `around` of a plain forwarding: awaits the inner call.
#[cfg(feature = "client")]
macro_rules! forward {
    ($kind:ident $name:ident, $this:ident, $call:expr $(, $from:ident)?) => {
        $call.await
    };
}
#[cfg(feature = "client")]
pub(crate) use forward;

// Every pointer to a chain (`Arc<dyn Chain>`, `Box<C>`, `&C`) is one.
#[cfg(feature = "client")]
impl_chain_wrapper!(
    impl[T: Chain + ?Sized, D: std::ops::Deref<Target = T> + Send + Sync] for D,
    inner: |this| **this,
    around: forward
);

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
