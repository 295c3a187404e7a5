//! An in-memory Nitro v2 adjudicator with a controllable clock.
//!
//! [`SimulatedChain`] is one shared world (cheap to clone; every clone sees the same state), and
//! [`SimulatedChain::handle`] gives a [`Chain`] that acts for one account. It follows the
//! `NitroAdjudicator` of `@statechannels/nitro-protocol@2.0.1-alpha.6` (ForceMove, StatusManager,
//! MultiAssetHolder) and this crate's `PaymentApp` ([`crate::app`]) rule for rule, with the same revert strings
//! (typed as [`Revert`]), the same status packing and fingerprints, and the same payout arithmetic
//! (`compute_transfer_effects_and_interactions` of the exit format).
//!
//! # What it models
//! - **Accounts**: native-asset balances, credited with [`SimulatedChain::fund`]. A deposit debits
//!   the sending account; payouts credit the allocations' external addresses.
//! - **ERC-20 tokens** ([`SimulatedChain::deploy_token`]): balances, allowances, `approve`, and the
//!   OpenZeppelin 4.7 `transferFrom`/`transfer` rules with their revert strings; a token can be made
//!   to misbehave ([`TokenBehaviour`]) like the test contract `contracts/test/BadToken.sol`.
//! - **Blocks and time**: every successful transaction mines one block at the current clock time;
//!   [`SimulatedChain::advance_time`] and [`SimulatedChain::set_time`] move the clock and mine an
//!   empty block (like `evm_increaseTime` + `evm_mine`), so [`Chain::now`] is always the latest
//!   block's timestamp.
//! - **The adjudicator**: holdings per asset and channel, status per channel as
//!   `(turnNumRecord, finalizesAt, fingerprint)`, and an event log.
//! - **The apps**: `PaymentApp` at [`SimulatedChain::app_definition`]; the published
//!   `ConsensusApp` (ledger channels) at [`SimulatedChain::consensus_app`]; the published
//!   `VirtualPaymentApp` only where [`SimulatedChain::install_virtual_payment_app`] puts it (to
//!   show its flaw). A channel whose `appDefinition` is any other address reverts like a call
//!   to an address without that function. [`Chain::code_hash`] tells the apps apart as
//!   `eth_getCode` would: `PaymentApp`'s is [`PAYMENT_APP_RUNTIME_HASH`], `ConsensusApp`'s is
//!   [`CONSENSUS_APP_RUNTIME_HASH`].
//! - **Guarantees**: `reclaim`, `transfer` (with its contract bug: the `cannot transfer a
//!   guarantee` check reads `allocations[k]`, `k` indexing `indices`, so `transfer(…, [i])` pays
//!   out a guarantee at index `i`; see [`Chain::transfer`]) and `concludeAndTransferAllAssets`,
//!   with the contract's checks in the contract's order and its revert strings.
//! - **EVM arithmetic**: what Solidity 0.8 checks (under/overflow, array bounds) reverts with a
//!   `panic: …` reason, as a node reports it; reverts that carry no reason on chain (ABI decoding
//!   failures, calls to non-contracts) get a descriptive [`Revert::Other`] prefixed `no reason:`.
//!
//! # What it does not model
//! Gas (receipts report 0 and no fee is charged), the transaction pool, reorgs and confirmations,
//! token standards other than ERC-20, contracts other than the apps, the tokens and the
//! adjudicator, and strictly increasing block timestamps (two transactions in the same second share a timestamp). A reverted transaction
//! changes nothing and mines no block (as a node's gas estimation would refuse it).
//!
//! Each transaction copies the chain's state, applies itself to the copy and keeps it only on
//! success, so a revert is atomic. That costs O(state) per transaction: this is a test double.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use alloy_primitives::{Address, B256, U256, address, keccak256};
use alloy_sol_types::SolValue;
use async_trait::async_trait;

use super::{
    CONSENSUS_APP_RUNTIME_HASH, ChainError, ChainEvent, ChainEventRecord, ChannelMode,
    OnChainStatus, ReclaimArgs, Revert, TxCall, TxReceipt, fingerprint, impl_chain_backend,
};
// The docs' [`Chain`]: this module implements it with `impl_chain_backend!`, calling none of it.
#[cfg(doc)]
use super::Chain;
use crate::sign::{Signature, ecrecover, eth_message_hash};
use crate::state::allocation_type::GUARANTEE;
use crate::state::{
    Allocation, FixedPart, MAX_UINT48, SignedVariablePart, SingleAssetExit, VariablePart,
    challenge_message_hash, destination_to_address, hash_outcome,
};

mod app;

use self::app::AppKind;
use crate::app::PAYMENT_APP_RUNTIME_HASH;

/// The adjudicator's address: what anvil gives the first deployment from its dev account #0
/// (`0xf39F…2266`, nonce 0). The simulator credits deposits to it and pays out from it.
pub const DEFAULT_ADJUDICATOR_ADDRESS: Address =
    address!("0x5FbDB2315678afecb367f032d93F642f64180aa3");

/// The `PaymentApp` address of [`SimulatedChain::new`]: what anvil gives the second
/// deployment from its dev account #0 (nonce 1), so that states built for the simulator also
/// work on an anvil where the adjudicator and then the app were deployed.
pub const DEFAULT_APP_DEFINITION: Address = address!("0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512");

/// The `ConsensusApp` address of every simulated chain: what anvil gives the fourth deployment
/// from its dev account #0 (nonce 3, after the adjudicator, `PaymentApp` and
/// `VirtualPaymentApp`; see `chain::ethereum::deploy`).
pub const DEFAULT_CONSENSUS_APP: Address = address!("0xCf7Ed3AccA5a467e9e704C703E8D87F634fB0Fc9");

/// The timestamp of the genesis block of [`SimulatedChain::new`] (2023-11-14T22:13:20Z).
pub const DEFAULT_GENESIS_TIME: u64 = 1_700_000_000;

/// Largest `AssetType` of the exit format (`Default, ERC721, ERC1155, Qualified`).
const MAX_ASSET_TYPE: u8 = 3;

/// Misuse of the simulator's own controls (not a chain revert).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    /// [`SimulatedChain::set_time`] was asked to move the clock backwards.
    #[error("cannot move the clock back from {now} to {requested}")]
    TimeWentBackwards {
        /// The current time.
        now: u64,
        /// The requested time.
        requested: u64,
    },
    /// [`SimulatedChain::fund`] would overflow the account's balance.
    #[error("funding {address} would overflow its balance")]
    BalanceOverflow {
        /// The account.
        address: Address,
    },
    /// [`SimulatedChain::mint`] named an address where no token was deployed.
    #[error("no token at {0}")]
    NoToken(Address),
}

/// How a simulated ERC-20 token behaves (the modes of `contracts/test/BadToken.sol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum TokenBehaviour {
    /// OpenZeppelin 4.7 `ERC20`.
    #[default]
    Standard,
    /// `transfer` and `transferFrom` burn 1% of the amount: the recipient gets 99%.
    FeeOnTransfer,
    /// `transferFrom` returns `false` and moves nothing.
    FalseOnTransferFrom,
}

/// One ERC-20 token contract.
#[derive(Debug, Clone, Default)]
struct Token {
    behaviour: TokenBehaviour,
    decimals: u8,
    balances: HashMap<Address, U256>,
    /// `allowance[(owner, spender)]`.
    allowances: HashMap<(Address, Address), U256>,
}

impl Token {
    fn balance(&self, owner: Address) -> U256 {
        self.balances.get(&owner).copied().unwrap_or_default()
    }

    /// OpenZeppelin 4.7 `_transfer`, with the behaviour's fee.
    fn transfer(&mut self, from: Address, to: Address, amount: U256) -> Result<(), Revert> {
        let have = self.balance(from);
        require(have >= amount, "ERC20: transfer amount exceeds balance")?;
        let received = match self.behaviour {
            TokenBehaviour::FeeOnTransfer => amount - amount / U256::from(100u8),
            _ => amount,
        };
        self.balances.insert(from, have - amount);
        let to_balance = self.balances.entry(to).or_default();
        *to_balance = to_balance
            .checked_add(received)
            .ok_or_else(panic_overflow)?;
        Ok(())
    }

    /// `transferFrom(from, to, amount)` called by `spender`; `Ok(false)` is the returned `false`.
    fn transfer_from(
        &mut self,
        spender: Address,
        from: Address,
        to: Address,
        amount: U256,
    ) -> Result<bool, Revert> {
        if self.behaviour == TokenBehaviour::FalseOnTransferFrom {
            return Ok(false);
        }
        // `_spendAllowance`, then `_transfer`.
        let allowed = self
            .allowances
            .get(&(from, spender))
            .copied()
            .unwrap_or_default();
        if allowed != U256::MAX {
            require(allowed >= amount, "ERC20: insufficient allowance")?;
            self.allowances.insert((from, spender), allowed - amount);
        }
        self.transfer(from, to, amount)?;
        Ok(true)
    }
}

/// The chain's state that transactions change.
#[derive(Debug, Clone, Default)]
struct State {
    balances: HashMap<Address, U256>,
    /// `holdings[asset][channelId]`.
    holdings: HashMap<(Address, B256), U256>,
    /// `statusOf[channelId]`; a missing entry is the zero word.
    status: HashMap<B256, OnChainStatus>,
    /// ERC-20 token contracts by address.
    tokens: HashMap<Address, Token>,
}

#[derive(Debug)]
struct World {
    state: State,
    now: u64,
    block_number: u64,
    /// Where `PaymentApp` is.
    app_definition: Address,
    /// Every app contract, by address.
    apps: HashMap<Address, AppKind>,
    adjudicator: Address,
    events: Vec<ChainEventRecord>,
}

/// An in-memory Nitro v2 adjudicator shared by every clone (see the [module docs](self)).
#[derive(Debug, Clone)]
pub struct SimulatedChain {
    world: Arc<Mutex<World>>,
}

impl Default for SimulatedChain {
    fn default() -> Self {
        Self::new()
    }
}

impl SimulatedChain {
    /// A chain at block 0, time [`DEFAULT_GENESIS_TIME`], with the app at [`DEFAULT_APP_DEFINITION`].
    pub fn new() -> Self {
        Self::with_genesis(DEFAULT_GENESIS_TIME, DEFAULT_APP_DEFINITION)
    }

    /// A chain at block 0 and time `genesis_time`, with `PaymentApp` at `app_definition` and
    /// `ConsensusApp` at [`DEFAULT_CONSENSUS_APP`] (unless `app_definition` is that address).
    pub fn with_genesis(genesis_time: u64, app_definition: Address) -> Self {
        let mut apps = HashMap::from([(DEFAULT_CONSENSUS_APP, AppKind::Consensus)]);
        apps.insert(app_definition, AppKind::Payment);
        Self {
            world: Arc::new(Mutex::new(World {
                state: State::default(),
                now: genesis_time,
                block_number: 0,
                app_definition,
                apps,
                adjudicator: DEFAULT_ADJUDICATOR_ADDRESS,
                events: Vec::new(),
            })),
        }
    }

    fn world(&self) -> MutexGuard<'_, World> {
        // No code panics while holding the lock, so a poisoned lock still holds a consistent world.
        self.world.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A [`Chain`] handle that sends transactions from `account`.
    pub fn handle(&self, account: Address) -> SimulatedChainHandle {
        SimulatedChainHandle {
            chain: self.clone(),
            account,
        }
    }

    /// The address of `PaymentApp` (the app of the channels this crate opens).
    pub fn app_definition(&self) -> Address {
        self.world().app_definition
    }

    /// The address of the published `ConsensusApp` (the app of ledger channels):
    /// [`DEFAULT_CONSENSUS_APP`].
    pub fn consensus_app(&self) -> Address {
        DEFAULT_CONSENSUS_APP
    }

    /// Puts the published `VirtualPaymentApp` at `address` (its code hash is not
    /// [`PAYMENT_APP_RUNTIME_HASH`]). For tests of why this crate does not use it.
    pub fn install_virtual_payment_app(&self, address: Address) {
        self.world().apps.insert(address, AppKind::VirtualPayment);
    }

    /// `keccak256(eth_getCode(address))`: [`PAYMENT_APP_RUNTIME_HASH`] for `PaymentApp`,
    /// [`CONSENSUS_APP_RUNTIME_HASH`] for `ConsensusApp`, a distinct made-up hash for each other
    /// contract kind, and the hash of empty code elsewhere.
    pub fn code_hash(&self, address: Address) -> B256 {
        let world = self.world();
        let label = match world.apps.get(&address) {
            Some(AppKind::Payment) => return PAYMENT_APP_RUNTIME_HASH,
            Some(AppKind::Consensus) => return CONSENSUS_APP_RUNTIME_HASH,
            Some(AppKind::VirtualPayment) => "simulated VirtualPaymentApp",
            None if address == world.adjudicator => "simulated NitroAdjudicator",
            None if world.state.tokens.contains_key(&address) => "simulated ERC20",
            None => return keccak256([]),
        };
        keccak256(label)
    }

    /// Deploys an ERC-20 token with `decimals` that behaves as `behaviour`; returns its address
    /// (derived from the number of tokens deployed before, so it is the same in every run).
    pub fn deploy_token(&self, behaviour: TokenBehaviour, decimals: u8) -> Address {
        let mut world = self.world();
        let n = world.state.tokens.len() as u64;
        let address = Address::from_slice(
            &keccak256((String::from("SimulatedChain token"), n).abi_encode_params())[12..],
        );
        world.state.tokens.insert(
            address,
            Token {
                behaviour,
                decimals,
                ..Token::default()
            },
        );
        address
    }

    /// Mints `amount` of `token` to `to` (out of thin air). Returns the new balance.
    pub fn mint(&self, token: Address, to: Address, amount: U256) -> Result<U256, SimError> {
        let mut world = self.world();
        let token_state = world
            .state
            .tokens
            .get_mut(&token)
            .ok_or(SimError::NoToken(token))?;
        let balance = token_state.balances.entry(to).or_default();
        *balance = balance
            .checked_add(amount)
            .ok_or(SimError::BalanceOverflow { address: to })?;
        Ok(*balance)
    }

    /// `balanceOf(owner)` of `asset` (the native balance for `Address::ZERO`; zero for an address
    /// without a token).
    pub fn asset_balance_of(&self, asset: Address, owner: Address) -> U256 {
        asset_balance(&self.world().state, asset, owner)
    }

    /// The adjudicator's address (holds the deposited funds).
    pub fn adjudicator_address(&self) -> Address {
        self.world().adjudicator
    }

    /// The clock: the latest block's timestamp, unix seconds.
    pub fn now(&self) -> u64 {
        self.world().now
    }

    /// The latest block number.
    pub fn block_number(&self) -> u64 {
        self.world().block_number
    }

    /// Moves the clock forward by `secs` (saturating) and mines an empty block there. Returns the
    /// new time.
    pub fn advance_time(&self, secs: u64) -> u64 {
        let mut world = self.world();
        world.now = world.now.saturating_add(secs);
        world.block_number = world.block_number.saturating_add(1);
        world.now
    }

    /// Sets the clock to `unix_secs` and mines an empty block there. The clock never goes back.
    pub fn set_time(&self, unix_secs: u64) -> Result<(), SimError> {
        let mut world = self.world();
        if unix_secs < world.now {
            return Err(SimError::TimeWentBackwards {
                now: world.now,
                requested: unix_secs,
            });
        }
        world.now = unix_secs;
        world.block_number = world.block_number.saturating_add(1);
        Ok(())
    }

    /// Credits `amount` of the native asset to `address` (out of thin air, like a genesis
    /// allocation). Returns the new balance.
    pub fn fund(&self, address: Address, amount: U256) -> Result<U256, SimError> {
        let mut world = self.world();
        let balance = world.state.balances.entry(address).or_default();
        *balance = balance
            .checked_add(amount)
            .ok_or(SimError::BalanceOverflow { address })?;
        Ok(*balance)
    }

    /// The native-asset balance of `address`.
    pub fn balance_of(&self, address: Address) -> U256 {
        balance(&self.world().state, address)
    }

    /// `holdings(address(0), channelId)`.
    pub fn holdings_of(&self, channel_id: B256) -> U256 {
        holdings(&self.world().state, Address::ZERO, channel_id)
    }

    /// `holdings(asset, channelId)`.
    pub fn asset_holdings_of(&self, asset: Address, channel_id: B256) -> U256 {
        holdings(&self.world().state, asset, channel_id)
    }

    /// `unpackStatus(channelId)`.
    pub fn status_of(&self, channel_id: B256) -> OnChainStatus {
        status(&self.world().state, channel_id)
    }

    /// Every event emitted so far, in chain order.
    pub fn all_events(&self) -> Vec<ChainEventRecord> {
        self.world().events.clone()
    }

    /// Runs one transaction from `sender`: `body` works on a copy of the state, which replaces the
    /// chain's state (and mines a block with the events) only if `body` succeeds.
    fn transact(
        &self,
        sender: Address,
        body: impl FnOnce(&mut Tx) -> Result<(), ChainError>,
    ) -> Result<TxReceipt, ChainError> {
        let mut world = self.world();
        let mut tx = Tx {
            state: world.state.clone(),
            events: Vec::new(),
            now: world.now,
            apps: world.apps.clone(),
            adjudicator: world.adjudicator,
        };
        body(&mut tx)?;
        let block_number = world.block_number.saturating_add(1);
        world.block_number = block_number;
        world.state = tx.state;
        for (log_index, event) in (0u64..).zip(tx.events) {
            world.events.push(ChainEventRecord {
                block_number,
                block_hash: sim_block_hash(block_number),
                log_index,
                event,
            });
        }
        let tx_hash = keccak256(
            (
                U256::from(block_number),
                sender,
                String::from("SimulatedChain transaction"),
            )
                .abi_encode_params(),
        );
        Ok(TxReceipt {
            tx_hash,
            gas_used: 0,
            block_number,
            block_timestamp: world.now,
        })
    }
}

/// The made-up hash of a simulated block (the simulator has no reorgs, so a number names it).
fn sim_block_hash(block_number: u64) -> B256 {
    keccak256(
        (
            U256::from(block_number),
            String::from("SimulatedChain block"),
        )
            .abi_encode_params(),
    )
}

fn balance(state: &State, address: Address) -> U256 {
    state.balances.get(&address).copied().unwrap_or_default()
}

impl State {
    /// The token contract at `address`, for a `call` to it; a call to an address without one
    /// reverts without a reason (decoding the missing return data fails).
    fn token(&self, address: Address, call: &str) -> Result<&Token, Revert> {
        self.tokens
            .get(&address)
            .ok_or_else(|| silent(&format!("{call}: no token contract at {address}")))
    }

    /// [`State::token`], to change it.
    fn token_mut(&mut self, address: Address, call: &str) -> Result<&mut Token, Revert> {
        self.tokens
            .get_mut(&address)
            .ok_or_else(|| silent(&format!("{call}: no token contract at {address}")))
    }
}

fn asset_balance(state: &State, asset: Address, owner: Address) -> U256 {
    if asset == Address::ZERO {
        return balance(state, owner);
    }
    state
        .tokens
        .get(&asset)
        .map(|t| t.balance(owner))
        .unwrap_or_default()
}

fn holdings(state: &State, asset: Address, channel_id: B256) -> U256 {
    state
        .holdings
        .get(&(asset, channel_id))
        .copied()
        .unwrap_or_default()
}

fn status(state: &State, channel_id: B256) -> OnChainStatus {
    state.status.get(&channel_id).copied().unwrap_or_default()
}

/// A transaction in progress.
struct Tx {
    state: State,
    events: Vec<ChainEvent>,
    now: u64,
    apps: HashMap<Address, AppKind>,
    adjudicator: Address,
}

/// A state with its signatures replaced by the `signedBy` bitmask (`RecoveredVariablePart`).
#[derive(Debug)]
struct Recovered {
    variable_part: VariablePart,
    signed_by: U256,
}

/// Solidity 0.8's `Panic(0x11)`, as nodes report it.
fn panic_overflow() -> Revert {
    Revert::Other("panic: arithmetic underflow or overflow (0x11)".to_owned())
}

/// Solidity 0.8's `Panic(0x32)`, as nodes report it.
fn panic_oob() -> Revert {
    Revert::Other("panic: array out-of-bounds access (0x32)".to_owned())
}

/// A revert that carries no reason on chain; `what` says why it happened.
fn silent(what: &str) -> Revert {
    Revert::Other(format!("no reason: {what}"))
}

fn require(condition: bool, reason: &str) -> Result<(), Revert> {
    if condition {
        Ok(())
    } else {
        Err(Revert::from_reason(reason))
    }
}

/// `NitroUtils.recoverSigner`: `ecrecover` over the EIP-191 message, `'Invalid signature'` if it fails.
fn recover_signer(digest: &B256, sig: &Signature) -> Result<Address, Revert> {
    ecrecover(&eth_message_hash(digest), sig)
        .ok_or_else(|| Revert::from_reason("Invalid signature"))
}

/// `NitroUtils.getClaimedSignersNum`: its `uint8` counter overflows past 255 signers.
fn claimed_signers_num(signed_by: U256) -> Result<u8, Revert> {
    u8::try_from(signed_by.count_ones()).map_err(|_| panic_overflow())
}

/// `ForceMove.recoverVariablePart`.
fn recover_variable_part(
    fixed: &FixedPart,
    channel_id: B256,
    svp: &SignedVariablePart,
) -> Result<Recovered, Revert> {
    let state_hash = svp.variable_part.hash(channel_id);
    let mut signed_by = U256::ZERO;
    for sig in &svp.sigs {
        let signer = recover_signer(&state_hash, sig)?;
        if let Some(i) = fixed.participants.iter().position(|p| *p == signer) {
            // `2 ** i` overflows a uint256 from i = 256 on.
            if i >= 256 {
                return Err(panic_overflow());
            }
            signed_by |= U256::from(1u8) << i;
        }
    }
    Ok(Recovered {
        variable_part: svp.variable_part.clone(),
        signed_by,
    })
}

/// What the contract sees after ABI-decoding its calldata: `uint48` fields are truncated (the
/// sender's encoder does that), and an `AssetType` enum value above 3 fails decoding.
fn decode_outcome(outcome: &[SingleAssetExit]) -> Result<Vec<SingleAssetExit>, Revert> {
    if outcome
        .iter()
        .any(|e| e.asset_metadata.asset_type > MAX_ASSET_TYPE)
    {
        return Err(silent(
            "calldata decoding: AssetType enum value out of range",
        ));
    }
    Ok(outcome
        .iter()
        .map(|e| SingleAssetExit::from_abi(&e.to_abi()))
        .collect())
}

fn decode_signed(svp: &SignedVariablePart) -> Result<SignedVariablePart, Revert> {
    decode_outcome(&svp.variable_part.outcome)?;
    Ok(SignedVariablePart::from_abi(&svp.to_abi()))
}

/// The arguments of `challenge` and `checkpoint`, as the contract's ABI decoder sees them.
fn decode_support(
    fixed: &FixedPart,
    proof: &[SignedVariablePart],
    candidate: &SignedVariablePart,
) -> Result<(FixedPart, Vec<SignedVariablePart>, SignedVariablePart), Revert> {
    let proof = proof
        .iter()
        .map(decode_signed)
        .collect::<Result<Vec<_>, _>>()?;
    Ok((decode_fixed(fixed), proof, decode_signed(candidate)?))
}

fn decode_fixed(fixed: &FixedPart) -> FixedPart {
    let abi = fixed.to_abi();
    FixedPart {
        participants: abi.participants,
        channel_nonce: abi.channelNonce,
        app_definition: abi.appDefinition,
        challenge_duration: abi.challengeDuration.to::<u64>(),
    }
}

fn revert_err(revert: Revert) -> ChainError {
    ChainError::Reverted(revert)
}

impl Tx {
    fn mode(&self, channel_id: B256) -> ChannelMode {
        status(&self.state, channel_id).mode(self.now)
    }

    fn set_status(&mut self, channel_id: B256, new: OnChainStatus) {
        self.state.status.insert(channel_id, new);
    }

    /// `uint48(block.timestamp)`: an explicit conversion, so it truncates.
    fn now48(&self) -> u64 {
        self.now & MAX_UINT48
    }

    /// `_requireChannelNotFinalized`.
    fn require_channel_not_finalized(&self, channel_id: B256) -> Result<(), Revert> {
        require(
            self.mode(channel_id) != ChannelMode::Finalized,
            "Channel finalized.",
        )
    }

    /// `_requireIncreasedTurnNumber`.
    fn require_increased_turn_number(&self, channel_id: B256, turn: u64) -> Result<(), Revert> {
        require(
            turn > status(&self.state, channel_id).turn_num_record,
            "turnNumRecord not increased.",
        )
    }

    /// `_requireNonDecreasedTurnNumber`.
    fn require_non_decreased_turn_number(&self, channel_id: B256, turn: u64) -> Result<(), Revert> {
        require(
            turn >= status(&self.state, channel_id).turn_num_record,
            "turnNumRecord decreased.",
        )
    }

    /// `ForceMove._stateIsSupported`: recovers every signer, then calls the app.
    fn state_is_supported(
        &self,
        fixed: &FixedPart,
        channel_id: B256,
        proof: &[SignedVariablePart],
        candidate: &SignedVariablePart,
    ) -> Result<(), Revert> {
        let recovered_proof = proof
            .iter()
            .map(|svp| recover_variable_part(fixed, channel_id, svp))
            .collect::<Result<Vec<_>, _>>()?;
        let recovered_candidate = recover_variable_part(fixed, channel_id, candidate)?;
        let Some(app) = self.apps.get(&fixed.app_definition) else {
            return Err(silent(&format!(
                "appDefinition {} has no stateIsSupported (no contract there)",
                fixed.app_definition
            )));
        };
        app.state_is_supported(app::Support {
            fixed,
            channel_id,
            proof: &recovered_proof,
            candidate: &recovered_candidate,
        })
    }

    fn deposit(
        &mut self,
        sender: Address,
        asset: Address,
        channel_id: B256,
        expected_held: U256,
        amount: U256,
    ) -> Result<(), ChainError> {
        // The node refuses a transaction whose value the sender cannot pay, before executing it.
        let native = asset == Address::ZERO;
        let available = balance(&self.state, sender);
        if native && available < amount {
            return Err(ChainError::InsufficientFunds {
                needed: amount,
                available,
            });
        }
        require(
            destination_to_address(&channel_id).is_none(),
            "Deposit to external destination",
        )?;
        let held = holdings(&self.state, asset, channel_id);
        require(held == expected_held, "held != expectedHeld")?;
        let adjudicator = self.adjudicator;
        if native {
            // msg.value == amount by construction: 'Incorrect msg.value for deposit' cannot happen.
            self.state.balances.insert(sender, available - amount);
            self.credit(adjudicator, amount)?;
        } else {
            // `IERC20(asset).safeTransferFrom(msg.sender, address(this), amount)`.
            let token = self.state.token_mut(asset, "safeTransferFrom")?;
            let ok = token.transfer_from(adjudicator, sender, adjudicator, amount)?;
            require(ok, "SafeERC20: ERC20 operation did not succeed")?;
        }
        let held = held.checked_add(amount).ok_or_else(panic_overflow)?;
        self.state.holdings.insert((asset, channel_id), held);
        self.events.push(ChainEvent::Deposited {
            channel_id,
            asset,
            holdings: held,
        });
        Ok(())
    }

    /// `IERC20(token).approve(spender, amount)` sent by `owner`.
    fn approve(
        &mut self,
        owner: Address,
        token: Address,
        spender: Address,
        amount: U256,
    ) -> Result<(), Revert> {
        self.state
            .token_mut(token, "approve")?
            .allowances
            .insert((owner, spender), amount);
        Ok(())
    }

    fn credit(&mut self, address: Address, amount: U256) -> Result<(), Revert> {
        let balance = self.state.balances.entry(address).or_default();
        *balance = balance.checked_add(amount).ok_or_else(panic_overflow)?;
        Ok(())
    }

    fn challenge(
        &mut self,
        fixed: &FixedPart,
        proof: &[SignedVariablePart],
        candidate: &SignedVariablePart,
        challenger_sig: &Signature,
    ) -> Result<(), Revert> {
        let channel_id = fixed.channel_id();
        let candidate_turn_num = candidate.variable_part.turn_num;

        match self.mode(channel_id) {
            ChannelMode::Open => {
                self.require_non_decreased_turn_number(channel_id, candidate_turn_num)?
            }
            ChannelMode::Challenge => {
                self.require_increased_turn_number(channel_id, candidate_turn_num)?
            }
            // "This should revert."
            ChannelMode::Finalized => self.require_channel_not_finalized(channel_id)?,
        }

        self.state_is_supported(fixed, channel_id, proof, candidate)?;

        let supported_state_hash = candidate.variable_part.hash(channel_id);
        // _requireChallengerIsParticipant
        let challenger = recover_signer(
            &challenge_message_hash(supported_state_hash),
            challenger_sig,
        )?;
        require(
            fixed.participants.contains(&challenger),
            "Challenger is not a participant",
        )?;

        // `uint48(block.timestamp) + fixedPart.challengeDuration`, checked in uint48.
        let finalizes_at = self
            .now48()
            .checked_add(fixed.challenge_duration)
            .filter(|t| *t <= MAX_UINT48)
            .ok_or_else(panic_overflow)?;
        self.events.push(ChainEvent::ChallengeRegistered {
            channel_id,
            finalizes_at,
            proof: proof.to_vec(),
            candidate: candidate.clone(),
        });
        self.set_status(
            channel_id,
            OnChainStatus {
                turn_num_record: candidate_turn_num,
                finalizes_at,
                fingerprint: fingerprint(
                    supported_state_hash,
                    hash_outcome(&candidate.variable_part.outcome),
                ),
            },
        );
        Ok(())
    }

    fn checkpoint(
        &mut self,
        fixed: &FixedPart,
        proof: &[SignedVariablePart],
        candidate: &SignedVariablePart,
    ) -> Result<(), Revert> {
        let channel_id = fixed.channel_id();
        let candidate_turn_num = candidate.variable_part.turn_num;

        self.require_channel_not_finalized(channel_id)?;
        self.require_increased_turn_number(channel_id, candidate_turn_num)?;
        self.state_is_supported(fixed, channel_id, proof, candidate)?;

        let curr_mode = self.mode(channel_id);
        // `_generateStatus(ChannelData(turn, 0, bytes32(0), bytes32(0)))`: the fingerprint of two
        // zero hashes is not zero.
        self.set_status(
            channel_id,
            OnChainStatus {
                turn_num_record: candidate_turn_num,
                finalizes_at: 0,
                fingerprint: fingerprint(B256::ZERO, B256::ZERO),
            },
        );
        self.events.push(if curr_mode == ChannelMode::Open {
            ChainEvent::Checkpointed {
                channel_id,
                new_turn_num_record: candidate_turn_num,
            }
        } else {
            // "`Finalized` was ruled out by the require above"
            ChainEvent::ChallengeCleared {
                channel_id,
                new_turn_num_record: candidate_turn_num,
            }
        });
        Ok(())
    }

    fn conclude(
        &mut self,
        fixed: &FixedPart,
        candidate: &SignedVariablePart,
    ) -> Result<(), Revert> {
        let channel_id = fixed.channel_id();

        self.require_channel_not_finalized(channel_id)?;
        require(candidate.variable_part.is_final, "State must be final")?;
        let recovered = recover_variable_part(fixed, channel_id, candidate)?;
        require(
            usize::from(claimed_signers_num(recovered.signed_by)?) == fixed.participants.len(),
            "!unanimous",
        )?;

        let finalizes_at = self.now48();
        self.set_status(
            channel_id,
            OnChainStatus {
                turn_num_record: 0,
                finalizes_at,
                fingerprint: fingerprint(
                    B256::ZERO,
                    hash_outcome(&candidate.variable_part.outcome),
                ),
            },
        );
        self.events.push(ChainEvent::Concluded {
            channel_id,
            finalizes_at,
        });
        Ok(())
    }

    fn transfer_all_assets(
        &mut self,
        channel_id: B256,
        mut outcome: Vec<SingleAssetExit>,
        state_hash: B256,
    ) -> Result<(), Revert> {
        // checks
        self.require_finalized_with(channel_id, state_hash, &outcome)?;

        // computation
        let mut allocates_only_zeros_for_all_assets = true;
        let mut exits = Vec::with_capacity(outcome.len());
        let mut initial_holdings = Vec::with_capacity(outcome.len());
        let mut total_payouts = Vec::with_capacity(outcome.len());
        for asset_outcome in &mut outcome {
            let initial = holdings(&self.state, asset_outcome.asset, channel_id);
            let effects = compute_transfer_effects(initial, &asset_outcome.allocations, &[])?;
            if !effects.allocates_only_zeros {
                allocates_only_zeros_for_all_assets = false;
            }
            initial_holdings.push(initial);
            total_payouts.push(effects.total_payouts);
            exits.push((asset_outcome.asset, effects.exit));
            asset_outcome.allocations = effects.new_allocations;
        }

        // effects
        for (asset_index, (asset_outcome, (initial, total))) in (0u64..).zip(
            outcome
                .iter()
                .zip(initial_holdings.iter().zip(total_payouts.iter())),
        ) {
            let key = (asset_outcome.asset, channel_id);
            // Each asset's payout was computed from the holdings before any effect, so an asset
            // listed twice can overdraw: `holdings -= totalPayouts` then panics.
            let left = holdings(&self.state, key.0, key.1)
                .checked_sub(*total)
                .ok_or_else(panic_overflow)?;
            self.state.holdings.insert(key, left);
            self.events.push(ChainEvent::AllocationUpdated {
                channel_id,
                asset_index,
                initial_holdings: *initial,
                final_holdings: left,
            });
        }

        if allocates_only_zeros_for_all_assets {
            // `delete statusOf[channelId]`
            self.state.status.remove(&channel_id);
        } else {
            self.update_fingerprint(channel_id, state_hash, &outcome);
        }

        // interactions: `_executeExit`
        for (asset, exit) in exits {
            self.execute_single_asset_exit(asset, &exit)?;
        }
        Ok(())
    }

    /// `NitroAdjudicator.concludeAndTransferAllAssets`: `_conclude`, then `transferAllAssets`
    /// with a zero state hash.
    fn conclude_and_transfer_all_assets(
        &mut self,
        fixed: &FixedPart,
        candidate: &SignedVariablePart,
    ) -> Result<(), Revert> {
        self.conclude(fixed, candidate)?;
        self.transfer_all_assets(
            fixed.channel_id(),
            candidate.variable_part.outcome.clone(),
            B256::ZERO,
        )
    }

    /// `_requireChannelFinalized` and `_requireMatchingFingerprint` of `MultiAssetHolder`.
    fn require_finalized_with(
        &self,
        channel_id: B256,
        state_hash: B256,
        outcome: &[SingleAssetExit],
    ) -> Result<(), Revert> {
        require(
            self.mode(channel_id) == ChannelMode::Finalized,
            "Channel not finalized.",
        )?;
        require(
            status(&self.state, channel_id).fingerprint
                == fingerprint(state_hash, hash_outcome(outcome)),
            "incorrect fingerprint",
        )
    }

    /// `MultiAssetHolder._updateFingerprint`: keeps `turnNumRecord` and `finalizesAt`.
    fn update_fingerprint(
        &mut self,
        channel_id: B256,
        state_hash: B256,
        outcome: &[SingleAssetExit],
    ) {
        let old = status(&self.state, channel_id);
        self.set_status(
            channel_id,
            OnChainStatus {
                fingerprint: fingerprint(state_hash, hash_outcome(outcome)),
                ..old
            },
        );
    }

    /// `MultiAssetHolder.transfer`, its `indices` bug included (see [`Chain::transfer`]).
    fn transfer(
        &mut self,
        asset_index: u64,
        channel_id: B256,
        mut outcome: Vec<SingleAssetExit>,
        state_hash: B256,
        indices: &[u64],
    ) -> Result<(), Revert> {
        // `_apply_transfer_checks`
        for pair in indices.windows(2) {
            require(pair[0] < pair[1], "Indices must be sorted")?;
        }
        self.require_finalized_with(channel_id, state_hash, &outcome)?;
        let i = index(asset_index, outcome.len())?;
        let asset = outcome[i].asset;
        let initial = holdings(&self.state, asset, channel_id);

        let effects = compute_transfer_effects(initial, &outcome[i].allocations, indices)?;

        // `_apply_transfer_effects`: the fingerprint is updated even when only zeros are left
        // (only `transferAllAssets` deletes the status).
        let left = initial
            .checked_sub(effects.total_payouts)
            .ok_or_else(panic_overflow)?;
        self.state.holdings.insert((asset, channel_id), left);
        outcome[i].allocations = effects.new_allocations;
        self.update_fingerprint(channel_id, state_hash, &outcome);
        self.events.push(ChainEvent::AllocationUpdated {
            channel_id,
            asset_index,
            initial_holdings: initial,
            final_holdings: left,
        });

        // `_apply_transfer_interactions`
        self.execute_single_asset_exit(asset, &effects.exit)
    }

    /// `MultiAssetHolder.reclaim`.
    fn reclaim(&mut self, args: &ReclaimArgs) -> Result<(), Revert> {
        // `_apply_reclaim_checks`: source checks, then the guarantee, then the target.
        let source_id = args.source_channel_id;
        self.require_finalized_with(source_id, args.source_state_hash, &args.source_outcome)?;
        let source_index = index(args.source_asset_index, args.source_outcome.len())?;
        let source = &args.source_outcome[source_index];
        let g_index = index(args.index_of_target_in_source, source.allocations.len())?;
        let guarantee = &source.allocations[g_index];
        require(
            guarantee.allocation_type == GUARANTEE,
            "not a guarantee allocation",
        )?;
        let target_id = guarantee.destination;
        let target_index = index(args.target_asset_index, args.target_outcome.len())?;
        let target = &args.target_outcome[target_index];
        require(
            target.asset == source.asset,
            "targetAsset != guaranteeAsset",
        )?;
        self.require_finalized_with(target_id, args.target_state_hash, &args.target_outcome)?;

        let new_allocations =
            compute_reclaim_effects(&source.allocations, &target.allocations, g_index)?;

        // `_apply_reclaim_effects`: the target channel is not touched.
        let mut outcome = args.source_outcome.clone();
        outcome[source_index].allocations = new_allocations;
        self.update_fingerprint(source_id, args.source_state_hash, &outcome);
        self.events.push(ChainEvent::Reclaimed {
            channel_id: source_id,
            asset_index: args.source_asset_index,
        });
        Ok(())
    }

    /// `MultiAssetHolder._executeSingleAssetExit`.
    fn execute_single_asset_exit(
        &mut self,
        asset: Address,
        exit: &[(B256, U256)],
    ) -> Result<(), Revert> {
        for (destination, amount) in exit {
            match destination_to_address(destination) {
                Some(to) => self.transfer_asset(asset, to, *amount)?,
                None => {
                    let entry = self
                        .state
                        .holdings
                        .entry((asset, *destination))
                        .or_default();
                    *entry = entry.checked_add(*amount).ok_or_else(panic_overflow)?;
                }
            }
        }
        Ok(())
    }

    /// `MultiAssetHolder._transferAsset`.
    fn transfer_asset(&mut self, asset: Address, to: Address, amount: U256) -> Result<(), Revert> {
        let adjudicator = self.adjudicator;
        if asset != Address::ZERO {
            // `IERC20(asset).transfer(destination, amount)`, its returned bool ignored.
            return self
                .state
                .token_mut(asset, "transfer")?
                .transfer(adjudicator, to, amount);
        }
        // The adjudicator and the apps have no receive/fallback function: sending them value fails.
        require(
            to != self.adjudicator && !self.apps.contains_key(&to),
            "Could not transfer ETH",
        )?;
        let from = balance(&self.state, adjudicator)
            .checked_sub(amount)
            .ok_or_else(|| silent("simulator invariant: adjudicator balance below payout"))?;
        self.state.balances.insert(adjudicator, from);
        self.credit(to, amount)
    }
}

struct TransferEffects {
    new_allocations: Vec<Allocation>,
    allocates_only_zeros: bool,
    /// `exitAllocations` as `(destination, amount)`: one entry per index (per allocation when
    /// `indices` is empty); entries of indices that matched no allocation stay `(0, 0)`.
    exit: Vec<(B256, U256)>,
    total_payouts: U256,
}

/// `compute_transfer_effects_and_interactions(initialHoldings, allocations, indices)`: pays the
/// allocations at `indices` (all when empty) while the holdings last; allocations before them
/// use up holdings without being paid.
///
/// Faithful to the contract's bug: the guarantee check reads `allocations[k]`, where `k` counts
/// the matched `indices`, not `allocations[i]`. With `indices == []`, `k == i`; otherwise a
/// guarantee at index `i > 0` passes whenever `allocations[k]` is not one.
fn compute_transfer_effects(
    initial_holdings: U256,
    allocations: &[Allocation],
    indices: &[u64],
) -> Result<TransferEffects, Revert> {
    let exit_len = if indices.is_empty() {
        allocations.len()
    } else {
        indices.len()
    };
    let mut exit = vec![(B256::ZERO, U256::ZERO); exit_len];
    let mut new_allocations = Vec::with_capacity(allocations.len());
    let mut total_payouts = U256::ZERO;
    let mut allocates_only_zeros = true;
    let mut surplus = initial_holdings;
    let mut k = 0usize;
    for (i, allocation) in allocations.iter().enumerate() {
        let affords_for_destination = allocation.amount.min(surplus);
        let mut new = allocation.clone();
        let selected = indices.is_empty()
            || indices
                .get(k)
                .is_some_and(|idx| u64::try_from(i) == Ok(*idx));
        if selected {
            // `allocations[k]`: `k <= i` here, so it is in bounds.
            if allocations[k].allocation_type == GUARANTEE {
                return Err(Revert::from_reason("cannot transfer a guarantee"));
            }
            new.amount = allocation.amount - affords_for_destination;
            exit[k] = (allocation.destination, affords_for_destination);
            total_payouts = total_payouts
                .checked_add(affords_for_destination)
                .ok_or_else(panic_overflow)?;
            k += 1;
        }
        if new.amount != U256::ZERO {
            allocates_only_zeros = false;
        }
        new_allocations.push(new);
        surplus -= affords_for_destination;
    }
    Ok(TransferEffects {
        new_allocations,
        allocates_only_zeros,
        exit,
        total_payouts,
    })
}

/// `MultiAssetHolder.compute_reclaim_effects`: the source's allocations without the guarantee at
/// `index_of_target`, its `left` credited with `target[0]` and its `right` with `target[1]`
/// (each at its first occurrence), which must add up to the guarantee's amount.
fn compute_reclaim_effects(
    source: &[Allocation],
    target: &[Allocation],
    index_of_target: usize,
) -> Result<Vec<Allocation>, Revert> {
    let guarantee = source.get(index_of_target).ok_or_else(panic_oob)?;
    // `abi.decode(metadata, (Guarantee))`: two words; shorter data reverts without a reason.
    let word = |i: usize| {
        guarantee
            .metadata
            .get(i * 32..(i + 1) * 32)
            .map(B256::from_slice)
            .ok_or_else(|| silent("abi.decode of the guarantee metadata: too short"))
    };
    let (left, right) = (word(0)?, word(1)?);
    let target_amount = |i: usize| target.get(i).map(|a| a.amount).ok_or_else(panic_oob);

    let mut new_allocations = Vec::with_capacity(source.len().saturating_sub(1));
    let (mut found_target, mut found_left, mut found_right) = (false, false, false);
    let mut total_reclaimed = U256::ZERO;
    for (i, allocation) in source.iter().enumerate() {
        if i == index_of_target {
            found_target = true;
            continue;
        }
        let mut new = allocation.clone();
        for (found, side, which) in [
            (&mut found_left, left, 0usize),
            (&mut found_right, right, 1usize),
        ] {
            if !*found && allocation.destination == side {
                let amount = target_amount(which)?;
                new.amount = new.amount.checked_add(amount).ok_or_else(panic_overflow)?;
                total_reclaimed = total_reclaimed
                    .checked_add(amount)
                    .ok_or_else(panic_overflow)?;
                *found = true;
            }
        }
        new_allocations.push(new);
    }
    require(found_target, "could not find target")?;
    require(found_left, "could not find left")?;
    require(found_right, "could not find right")?;
    require(
        total_reclaimed == guarantee.amount,
        "totalReclaimed!=guarantee.amount",
    )?;
    Ok(new_allocations)
}

/// An index into a Solidity memory array: out of bounds is `Panic(0x32)`.
fn index(i: u64, len: usize) -> Result<usize, Revert> {
    usize::try_from(i)
        .ok()
        .filter(|i| *i < len)
        .ok_or_else(panic_oob)
}

/// A [`Chain`] acting for one account of a [`SimulatedChain`].
#[derive(Debug, Clone)]
pub struct SimulatedChainHandle {
    chain: SimulatedChain,
    account: Address,
}

impl SimulatedChainHandle {
    /// The shared chain this handle acts on.
    pub fn chain(&self) -> &SimulatedChain {
        &self.chain
    }

    /// The events mined so far that `keep` selects, in chain order.
    fn events_where(&self, keep: impl Fn(&ChainEventRecord) -> bool) -> Vec<ChainEventRecord> {
        let world = self.chain.world();
        world.events.iter().filter(|r| keep(r)).cloned().collect()
    }
}

#[async_trait]
impl super::Backend for SimulatedChainHandle {
    fn account(&self) -> Address {
        self.account
    }

    async fn now(&self) -> Result<u64, ChainError> {
        Ok(self.chain.now())
    }

    async fn block_number(&self) -> Result<u64, ChainError> {
        Ok(self.chain.block_number())
    }

    fn adjudicator(&self) -> Address {
        self.chain.adjudicator_address()
    }

    async fn balance(&self, asset: Address, owner: Address) -> Result<U256, ChainError> {
        Ok(self.chain.asset_balance_of(asset, owner))
    }

    async fn holdings(&self, asset: Address, channel_id: B256) -> Result<U256, ChainError> {
        Ok(self.chain.asset_holdings_of(asset, channel_id))
    }

    async fn allowance(&self, token: Address) -> Result<U256, ChainError> {
        let world = self.chain.world();
        Ok(world
            .state
            .token(token, "allowance")?
            .allowances
            .get(&(self.account, world.adjudicator))
            .copied()
            .unwrap_or_default())
    }

    async fn decimals(&self, token: Address) -> Result<u8, ChainError> {
        if token == Address::ZERO {
            return Ok(18);
        }
        Ok(self.chain.world().state.token(token, "decimals")?.decimals)
    }

    async fn code_hash(&self, address: Address) -> Result<B256, ChainError> {
        Ok(self.chain.code_hash(address))
    }

    async fn status(&self, channel_id: B256) -> Result<OnChainStatus, ChainError> {
        Ok(self.chain.status_of(channel_id))
    }

    /// Every transaction decodes its arguments like the contract's ABI decoder (a malformed one
    /// reverts) and runs in one [`SimulatedChain::transact`] from this handle's account.
    async fn send_tx(&self, call: TxCall<'_>) -> Result<TxReceipt, ChainError> {
        let sender = self.account;
        self.chain.transact(sender, |tx| match call {
            TxCall::Deposit {
                asset,
                channel_id,
                expected_held,
                amount,
            } => tx.deposit(sender, asset, channel_id, expected_held, amount),
            TxCall::Approve { token, amount } => {
                let spender = tx.adjudicator;
                tx.approve(sender, token, spender, amount)
                    .map_err(revert_err)
            }
            TxCall::Challenge {
                fixed,
                proof,
                candidate,
                challenger_sig,
            } => {
                let (fixed, proof, candidate) = decode_support(fixed, proof, candidate)?;
                tx.challenge(&fixed, &proof, &candidate, challenger_sig)
                    .map_err(revert_err)
            }
            TxCall::Checkpoint {
                fixed,
                proof,
                candidate,
            } => {
                let (fixed, proof, candidate) = decode_support(fixed, proof, candidate)?;
                tx.checkpoint(&fixed, &proof, &candidate)
                    .map_err(revert_err)
            }
            TxCall::Conclude { fixed, candidate } => {
                let (fixed, candidate) = (decode_fixed(fixed), decode_signed(candidate)?);
                tx.conclude(&fixed, &candidate).map_err(revert_err)
            }
            TxCall::TransferAllAssets {
                channel_id,
                outcome,
                state_hash,
            } => {
                let outcome = decode_outcome(outcome)?;
                tx.transfer_all_assets(channel_id, outcome, state_hash)
                    .map_err(revert_err)
            }
            TxCall::ConcludeAndTransferAllAssets { fixed, candidate } => {
                let (fixed, candidate) = (decode_fixed(fixed), decode_signed(candidate)?);
                tx.conclude_and_transfer_all_assets(&fixed, &candidate)
                    .map_err(revert_err)
            }
            TxCall::Reclaim { args } => {
                let args = ReclaimArgs {
                    source_outcome: decode_outcome(&args.source_outcome)?,
                    target_outcome: decode_outcome(&args.target_outcome)?,
                    ..args.clone()
                };
                tx.reclaim(&args).map_err(revert_err)
            }
            TxCall::Transfer {
                asset_index,
                from_channel_id,
                outcome,
                state_hash,
                indices,
            } => {
                let outcome = decode_outcome(outcome)?;
                tx.transfer(asset_index, from_channel_id, outcome, state_hash, indices)
                    .map_err(revert_err)
            }
        })
    }

    async fn events(
        &self,
        channel_id: B256,
        from_block: u64,
    ) -> Result<Vec<ChainEventRecord>, ChainError> {
        Ok(self
            .events_where(|r| r.block_number >= from_block && r.event.channel_id() == channel_id))
    }

    async fn adjudicator_events(
        &self,
        from_block: u64,
        to_block: u64,
    ) -> Result<Vec<ChainEventRecord>, ChainError> {
        Ok(self.events_where(|r| (from_block..=to_block).contains(&r.block_number)))
    }

    /// No reorgs.
    fn default_confirmations(&self) -> u64 {
        0
    }
}

impl_chain_backend!(SimulatedChainHandle);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sign::{LocalSigner, Signer};

    /// The address of the contract `deployer` creates with its `nonce`-th transaction
    /// (`keccak256(rlp([deployer, nonce]))[12..]`, for nonces below 0x80).
    fn create_address(deployer: Address, nonce: u8) -> Address {
        let mut rlp = vec![0xd6, 0x94];
        rlp.extend_from_slice(deployer.as_slice());
        rlp.push(if nonce == 0 { 0x80 } else { nonce });
        Address::from_slice(&keccak256(&rlp)[12..])
    }

    #[test]
    fn default_addresses_are_anvil_deployments_from_dev_account_0() {
        let dev0 = LocalSigner::from_hex(
            "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
        )
        .unwrap();
        assert_eq!(
            dev0.address(),
            address!("0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266")
        );
        assert_eq!(
            create_address(dev0.address(), 0),
            DEFAULT_ADJUDICATOR_ADDRESS
        );
        assert_eq!(create_address(dev0.address(), 1), DEFAULT_APP_DEFINITION);
        assert_eq!(create_address(dev0.address(), 3), DEFAULT_CONSENSUS_APP);
    }

    #[test]
    fn ecrecover_accepts_high_s_like_the_precompile() {
        let signer = LocalSigner::from_bytes(&B256::repeat_byte(9)).unwrap();
        let digest = B256::repeat_byte(3);
        let sig = signer.sign_eth_message(&digest).unwrap();
        assert_eq!(recover_signer(&digest, &sig), Ok(signer.address()));
        // n - s, with v flipped: the same key, in the high-s form honest signers never produce.
        let n = U256::from_str_radix(
            "fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141",
            16,
        )
        .unwrap();
        let high = Signature {
            v: if sig.v == 27 { 28 } else { 27 },
            r: sig.r,
            s: B256::from(n - U256::from_be_bytes(sig.s.0)),
        };
        assert_eq!(recover_signer(&digest, &high), Ok(signer.address()));
        for bad in [
            Signature { v: 29, ..sig },
            Signature { v: 0, ..sig },
            Signature {
                r: B256::ZERO,
                ..sig
            },
            Signature {
                s: B256::repeat_byte(0xff),
                ..sig
            },
        ] {
            assert_eq!(recover_signer(&digest, &bad), Err(Revert::InvalidSignature));
        }
    }

    #[test]
    fn compute_transfer_effects_pays_in_order_while_holdings_last() {
        let a = Allocation::simple(Address::repeat_byte(1), U256::from(5));
        let b = Allocation::simple(Address::repeat_byte(2), U256::from(7));
        let fx = compute_transfer_effects(U256::from(9), &[a.clone(), b.clone()], &[]).unwrap();
        assert_eq!(fx.total_payouts, U256::from(9));
        assert_eq!(fx.exit[0].1, U256::from(5));
        assert_eq!(fx.exit[1].1, U256::from(4));
        assert_eq!(fx.new_allocations[0].amount, U256::ZERO);
        assert_eq!(fx.new_allocations[1].amount, U256::from(3));
        assert!(!fx.allocates_only_zeros);
        let mut g = b;
        g.allocation_type = GUARANTEE;
        assert!(matches!(
            compute_transfer_effects(U256::from(9), &[a, g], &[]),
            Err(Revert::Other(r)) if r == "cannot transfer a guarantee"
        ));
    }

    fn guarantee(amount: u64, left: B256, right: B256) -> Allocation {
        Allocation::guarantee(
            B256::repeat_byte(0xcc),
            U256::from(amount),
            crate::state::Guarantee { left, right },
        )
    }

    #[test]
    fn transfer_with_indices_checks_the_wrong_allocation_like_the_contract() {
        let a = Allocation::simple(Address::repeat_byte(1), U256::from(5));
        let b = Allocation::simple(Address::repeat_byte(2), U256::from(5));
        let g = guarantee(4, a.destination, b.destination);
        let allocations = [a.clone(), b, g.clone()];
        // `[2]`: the check reads `allocations[0]` (simple), so the guarantee is paid out.
        let fx = compute_transfer_effects(U256::from(14), &allocations, &[2]).unwrap();
        assert_eq!(fx.exit, vec![(g.destination, U256::from(4))]);
        assert_eq!(fx.total_payouts, U256::from(4));
        assert_eq!(fx.new_allocations[2].amount, U256::ZERO);
        assert_eq!(fx.new_allocations[0].amount, U256::from(5));
        // `[0, 2]`: `allocations[1]` is checked for the second match: paid too.
        let fx = compute_transfer_effects(U256::from(14), &allocations, &[0, 2]).unwrap();
        assert_eq!(fx.total_payouts, U256::from(9));
        // With the guarantee first, `[0]` is refused; an index past the end pays nothing.
        let first = [g, a];
        assert!(compute_transfer_effects(U256::from(9), &first, &[0]).is_err());
        let fx = compute_transfer_effects(U256::from(9), &first, &[7]).unwrap();
        assert_eq!(fx.exit, vec![(B256::ZERO, U256::ZERO)]);
    }

    /// go-nitro's `computeReclaimEffects` vector (reference §5.4): `[A 2, B 2, G(6, A, B)]`,
    /// index 2, target `[A 1, B 5]` gives `[A 3, B 7]`.
    #[test]
    fn compute_reclaim_effects_vector_and_reverts() {
        let (a, b) = (
            B256::left_padding_from(&[0x0a]),
            B256::left_padding_from(&[0x0b]),
        );
        let alloc = |d: B256, x: u64| Allocation {
            destination: d,
            ..Allocation::simple(Address::ZERO, U256::from(x))
        };
        let source = [alloc(a, 2), alloc(b, 2), guarantee(6, a, b)];
        let target = [alloc(a, 1), alloc(b, 5)];
        let out = compute_reclaim_effects(&source, &target, 2).unwrap();
        assert_eq!(out, vec![alloc(a, 3), alloc(b, 7)]);
        let reason = |r: Result<Vec<Allocation>, Revert>| match r {
            Err(Revert::Other(s)) => s,
            other => panic!("{other:?}"),
        };
        let short = [alloc(a, 1), alloc(b, 4)];
        assert_eq!(
            reason(compute_reclaim_effects(&source, &short, 2)),
            "totalReclaimed!=guarantee.amount"
        );
        let c = B256::left_padding_from(&[0x0c]);
        let no_right = [alloc(a, 2), alloc(c, 2), guarantee(6, a, b)];
        assert_eq!(
            reason(compute_reclaim_effects(&no_right, &target, 2)),
            "could not find right"
        );
        let mut bad_metadata = guarantee(6, a, b);
        bad_metadata.metadata = bad_metadata.metadata.slice(..40);
        assert!(
            reason(compute_reclaim_effects(
                &[alloc(a, 2), bad_metadata],
                &target,
                1
            ))
            .starts_with("no reason:")
        );
    }
}
