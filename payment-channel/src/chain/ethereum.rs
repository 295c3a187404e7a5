//! [`EthereumChain`]: the [`Chain`] trait over Ethereum JSON-RPC, against the real Nitro v2
//! contracts (`NitroAdjudicator` of `@statechannels/nitro-protocol@2.0.1-alpha.6` and this crate's
//! `PaymentApp`, see [`crate::app`]), in the native coin or an ERC-20.
//!
//! - Transactions are built with the typed bindings of [`NitroAdjudicator`] and **signed
//!   locally** with the handle's secret key, so any node works (no unlocked node accounts).
//! - Every transaction is gas-estimated first. A call the contract would refuse therefore fails
//!   with [`ChainError::Reverted`] **before** anything is sent or mined. If a transaction still
//!   reverts on chain (the state changed in between), the call is replayed with `eth_call` at the
//!   block it was mined in to recover the reason.
//! - Receipts are awaited by polling `eth_getTransactionReceipt` (some nodes, e.g. ganache, return
//!   the hash before the receipt exists).
//! - Revert reasons are typed with [`Revert::from_reason`] from either the `Error(string)` revert
//!   data (anvil, geth, hardhat) or the reason in the error message (ganache, hardhat); see
//!   [`revert_from_rpc_error`].
//!
//! [`deploy`] deploys the contracts from their compiled artifacts ([`NitroArtifacts`]): the
//! adjudicator from the npm package, `PaymentApp` from this repository's source, built with a
//! pinned compiler; nothing compiled is vendored in this crate.
//!
//! Every method is one or a few JSON-RPC requests over HTTP; nothing runs in the background.
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use payment_channel::chain::Chain;
//! use payment_channel::chain::ethereum::{EthereumChain, NitroArtifacts, deploy};
//! use payment_channel::{B256, U256};
//!
//! let url = "http://127.0.0.1:8545";
//! let key: B256 = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d".parse()?;
//! // Once per chain: deploy the contracts from the npm artifacts.
//! let artifacts = NitroArtifacts::from_dir("target/nitro-artifacts".as_ref())?;
//! let deployment = deploy(url, &key, &artifacts).await?;
//! // One handle per acting account.
//! let chain = EthereumChain::connect(url, &key, deployment.nitro_adjudicator).await?;
//! let channel_id = B256::repeat_byte(1);
//! let native = payment_channel::Address::ZERO;
//! chain.deposit(native, channel_id, U256::ZERO, U256::from(1000u64)).await?;
//! assert_eq!(chain.holdings(native, channel_id).await?, U256::from(1000u64));
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use alloy::contract::{CallBuilder, CallDecoder, Error as ContractError};
use alloy::eips::{BlockId, BlockNumberOrTag};
use alloy::network::{EthereumWallet, ReceiptResponse, TransactionBuilder};
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::rpc::types::{Filter, Log, TransactionRequest};
use alloy::signers::local::PrivateKeySigner;
use alloy::transports::http::reqwest::Url;
use alloy::transports::{RpcError, TransportErrorKind};
use alloy_primitives::{Address, B256, Bytes, U256};
use alloy_sol_types::{SolError, SolEvent};
use async_trait::async_trait;
use derive_setters::Setters;
use tokio::sync::Mutex;

use crate::abi::{IERC20, NitroAdjudicator};
use crate::chain::{
    Chain, ChainError, ChainEvent, ChainEventRecord, OnChainStatus, ReclaimArgs, Revert, TxCall,
    TxReceipt, impl_chain_backend,
};
use crate::sign::Signature;
use crate::state::{
    FixedPart, SignedVariablePart, SingleAssetExit, encode_outcome, outcome_to_abi,
};

type Adjudicator = NitroAdjudicator::NitroAdjudicatorInstance<DynProvider>;

/// Why an [`EthereumChain`] could not be set up, or contracts not deployed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    /// The RPC URL does not parse.
    #[error("invalid RPC URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL given.
        url: String,
        /// Why it was rejected.
        reason: String,
    },
    /// The secret key is zero or not below the curve order.
    #[error("invalid secret key")]
    InvalidKey,
    /// There is no contract code at the adjudicator address.
    #[error("no contract deployed at {0}")]
    NoContract(Address),
    /// A contract artifact is missing or malformed.
    #[error("contract artifact {path}: {reason}")]
    Artifact {
        /// The artifact file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The code deployed at the app address is not `PaymentApp`.
    #[error("the code at {app} (hash {code_hash}) is not PaymentApp")]
    AppCode {
        /// The app address.
        app: Address,
        /// `keccak256` of the code found there.
        code_hash: B256,
    },
    /// A chain request failed.
    #[error(transparent)]
    Chain(#[from] ChainError),
}

/// Tuning of an [`EthereumChain`] handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Setters)]
#[setters(prefix = "with_")]
#[non_exhaustive]
pub struct EthereumConfig {
    /// Interval between `eth_getTransactionReceipt` polls.
    pub receipt_poll_interval: Duration,
    /// How long to wait for a receipt before giving up with [`ChainError::Transport`] (the
    /// transaction may still be mined later).
    pub receipt_timeout: Duration,
    /// Gas limit = estimate × (100 + this) / 100, for headroom if the state changes between the
    /// estimate and the inclusion.
    pub gas_margin_percent: u64,
    /// Blocks that must follow a block before a `Client` applies its adjudicator events
    /// ([`Chain::default_confirmations`]): a reorg shallower than this never shows a watcher a
    /// challenge or a deposit that then disappears. Default 2.
    pub confirmations: u64,
}

impl Default for EthereumConfig {
    fn default() -> Self {
        Self {
            receipt_poll_interval: Duration::from_millis(20),
            receipt_timeout: Duration::from_secs(120),
            gas_margin_percent: 20,
            confirmations: 2,
        }
    }
}

/// A [`Chain`] handle on an Ethereum node, acting for one account.
///
/// Transactions of one handle are sent one at a time (the nonce is read from the node before each
/// one), so a handle can be shared between tasks; use one handle per account.
pub struct EthereumChain {
    provider: DynProvider,
    adjudicator: Adjudicator,
    account: Address,
    chain_id: u64,
    config: EthereumConfig,
    send_lock: Mutex<()>,
}

impl fmt::Debug for EthereumChain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EthereumChain")
            .field("account", &self.account)
            .field("adjudicator", self.adjudicator.address())
            .field("chain_id", &self.chain_id)
            .finish_non_exhaustive()
    }
}

impl EthereumChain {
    /// Connects to the node at `rpc_url` (HTTP), acting for the account of `secret_key`, with
    /// the `NitroAdjudicator` at `adjudicator`. Checks that the node answers and that the
    /// adjudicator address holds code.
    pub async fn connect(
        rpc_url: &str,
        secret_key: &B256,
        adjudicator: Address,
    ) -> Result<Self, SetupError> {
        let chain = Self::connect_unchecked(rpc_url, secret_key, adjudicator).await?;
        let code = chain
            .provider
            .get_code_at(adjudicator)
            .await
            .map_err(transport)?;
        if code.is_empty() {
            return Err(SetupError::NoContract(adjudicator));
        }
        Ok(chain)
    }

    /// Like [`connect`](Self::connect) without checking the adjudicator address: for reading
    /// the chain id or code hashes (e.g. with [`NITRO_ADJUDICATOR_RUNTIME_HASH`](
    /// crate::chain::NITRO_ADJUDICATOR_RUNTIME_HASH)) before deciding which contracts to use.
    pub async fn connect_unchecked(
        rpc_url: &str,
        secret_key: &B256,
        adjudicator: Address,
    ) -> Result<Self, SetupError> {
        let url = Url::parse(rpc_url).map_err(|e| SetupError::InvalidUrl {
            url: rpc_url.to_owned(),
            reason: e.to_string(),
        })?;
        let signer =
            PrivateKeySigner::from_bytes(secret_key).map_err(|_| SetupError::InvalidKey)?;
        let account = signer.address();
        // No cached nonces: the nonce is read from the node for every transaction, so a
        // transaction that fails before it is sent never leaves a gap.
        let probe = ProviderBuilder::default().connect_http(url);
        let chain_id = probe.get_chain_id().await.map_err(transport)?;
        let provider = ProviderBuilder::default()
            .with_gas_estimation()
            .with_simple_nonce_management()
            .with_chain_id(chain_id)
            .wallet(EthereumWallet::from(signer))
            .connect_provider(probe)
            .erased();
        Ok(Self {
            adjudicator: NitroAdjudicator::new(adjudicator, provider.clone()),
            provider,
            account,
            chain_id,
            config: EthereumConfig::default(),
            send_lock: Mutex::new(()),
        })
    }

    /// Replaces the handle's tuning.
    pub fn with_config(mut self, config: EthereumConfig) -> Self {
        self.config = config;
        self
    }

    /// The node's chain id.
    pub fn chain_id(&self) -> u64 {
        self.chain_id
    }

    /// Dev chains only (anvil, ganache, hardhat): moves the node's clock forward by `seconds`
    /// (`evm_increaseTime`) and mines a block (`evm_mine`), so that the latest block's timestamp
    /// includes the jump. Returns the new [`Chain::now`].
    pub async fn increase_time(&self, seconds: u64) -> Result<u64, ChainError> {
        let _: serde_json::Value = self
            .provider
            .raw_request("evm_increaseTime".into(), [seconds])
            .await
            .map_err(transport)?;
        self.mine().await?;
        self.now().await
    }

    /// Dev chains only: mines one empty block (`evm_mine`, sent with `[]` params because hardhat
    /// rejects `null`).
    pub async fn mine(&self) -> Result<(), ChainError> {
        let _: serde_json::Value = self
            .provider
            .raw_request("evm_mine".into(), Vec::<u64>::new())
            .await
            .map_err(transport)?;
        Ok(())
    }

    /// Estimates, sends, and waits for one transaction; see the module docs.
    async fn send<D: CallDecoder + Send + Sync + Unpin>(
        &self,
        call: CallBuilder<&DynProvider, D>,
        value: U256,
    ) -> Result<(TxReceipt, Option<Address>), ChainError> {
        match self.send_inner(call, value).await {
            Err(ChainError::InsufficientFunds { needed, .. }) => {
                Err(ChainError::InsufficientFunds {
                    needed,
                    available: self.balance(Address::ZERO, self.account).await?,
                })
            }
            other => other,
        }
    }

    async fn send_inner<D: CallDecoder + Send + Sync + Unpin>(
        &self,
        call: CallBuilder<&DynProvider, D>,
        value: U256,
    ) -> Result<(TxReceipt, Option<Address>), ChainError> {
        let call = call.from(self.account).value(value);
        let (call, tx_hash) = {
            let _one_at_a_time = self.send_lock.lock().await;
            let estimate = call
                .estimate_gas()
                .await
                .map_err(|e| self.classify_contract(e, value))?;
            let margin = estimate.saturating_mul(self.config.gas_margin_percent) / 100;
            let call = call.gas(estimate.saturating_add(margin));
            let pending = call
                .send()
                .await
                .map_err(|e| self.classify_contract(e, value))?;
            (call, *pending.tx_hash())
        };
        let receipt = self.wait_for_receipt(tx_hash).await?;
        let block_number = receipt
            .block_number
            .ok_or_else(|| transport_msg(format!("receipt of {tx_hash} has no block number")))?;
        if !receipt.status() {
            let request = call.into_transaction_request();
            return Err(self.replay_failed(request, block_number).await);
        }
        let block_timestamp = self
            .block_timestamp(BlockNumberOrTag::Number(block_number))
            .await?;
        Ok((
            TxReceipt {
                tx_hash,
                gas_used: receipt.gas_used,
                block_number,
                block_timestamp,
            },
            receipt.contract_address(),
        ))
    }

    async fn wait_for_receipt(
        &self,
        tx_hash: B256,
    ) -> Result<alloy::rpc::types::TransactionReceipt, ChainError> {
        let deadline = tokio::time::Instant::now() + self.config.receipt_timeout;
        loop {
            if let Some(receipt) = self
                .provider
                .get_transaction_receipt(tx_hash)
                .await
                .map_err(transport)?
            {
                return Ok(receipt);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(transport_msg(format!(
                    "no receipt for {tx_hash} after {:?}",
                    self.config.receipt_timeout
                )));
            }
            tokio::time::sleep(self.config.receipt_poll_interval).await;
        }
    }

    /// A transaction reverted on chain: replays it with `eth_call` on the state of the block it
    /// was mined in, to learn why.
    async fn replay_failed(&self, mut request: TransactionRequest, block: u64) -> ChainError {
        request.gas = None;
        request.set_from(self.account);
        match self
            .provider
            .call(request)
            .block(BlockId::number(block))
            .await
        {
            Err(e) => self.classify_rpc(&e, U256::ZERO),
            Ok(_) => ChainError::Reverted(Revert::Other(String::from(
                "reverted on chain; replay succeeded, reason unknown",
            ))),
        }
    }

    async fn block_timestamp(&self, block: BlockNumberOrTag) -> Result<u64, ChainError> {
        let block = self
            .provider
            .get_block_by_number(block)
            .await
            .map_err(transport)?
            .ok_or_else(|| transport_msg(format!("node has no block {block}")))?;
        Ok(block.header.timestamp)
    }

    fn classify_contract(&self, e: ContractError, value: U256) -> ChainError {
        match e {
            ContractError::TransportError(e) => self.classify_rpc(&e, value),
            other => ChainError::Transport(Box::new(other)),
        }
    }

    fn classify_rpc(&self, e: &RpcError<TransportErrorKind>, value: U256) -> ChainError {
        if let Some(payload) = e.as_error_resp() {
            let data = payload
                .data
                .as_ref()
                .and_then(|raw| serde_json::from_str::<serde_json::Value>(raw.get()).ok());
            if let Some(revert) = revert_from_rpc_error(&payload.message, data.as_ref()) {
                return ChainError::Reverted(revert);
            }
            if payload
                .message
                .to_ascii_lowercase()
                .contains("insufficient funds")
            {
                // `available` is filled in by `send`.
                return ChainError::InsufficientFunds {
                    needed: value,
                    available: U256::ZERO,
                };
            }
        }
        transport_msg(e.to_string())
    }

    /// Reads a view function's result, mapping errors like transactions do.
    async fn view<D: CallDecoder + Send + Sync + Unpin>(
        &self,
        call: CallBuilder<&DynProvider, D>,
    ) -> Result<D::CallOutput, ChainError> {
        call.call()
            .await
            .map_err(|e| self.classify_contract(e, U256::ZERO))
    }
}

fn transport<E: std::error::Error + Send + Sync + 'static>(e: E) -> ChainError {
    ChainError::Transport(Box::new(e))
}

fn transport_msg(msg: String) -> ChainError {
    ChainError::Transport(msg.into())
}

/// The contract revert in a JSON-RPC error, if it is one, typed with [`Revert::from_reason`].
///
/// `data` is the error's `data` member. Handled shapes, most precise first:
/// - `data` holds ABI revert data (`0x08c379a0…` = `Error(string)`, `0x4e487b71…` = `Panic(uint256)`),
///   either as a hex string (anvil, geth: code 3) or in an object's `data`/`result` member
///   (hardhat, ganache);
/// - the message carries the reason: `execution reverted: X` (anvil, geth),
///   `VM Exception while processing transaction: revert X` (ganache),
///   `… reverted with reason string 'X'` (hardhat);
/// - a reason-less revert (`execution reverted`, `… : revert`) becomes [`Revert::Other`] with an
///   empty reason.
///
/// Returns `None` when the error is not a revert (e.g. a nonce or funds error).
pub fn revert_from_rpc_error(message: &str, data: Option<&serde_json::Value>) -> Option<Revert> {
    if let Some(revert) = data.and_then(revert_from_data) {
        return Some(revert);
    }
    const HARDHAT: &str = "reverted with reason string '";
    const GANACHE: &str = "VM Exception while processing transaction: revert";
    const GETH: &str = "execution reverted";
    if let Some(at) = message.find(HARDHAT) {
        let rest = &message[at + HARDHAT.len()..];
        let reason = rest.rfind('\'').map_or(rest, |end| &rest[..end]);
        return Some(Revert::from_reason(reason));
    }
    if let Some(at) = message.find(GANACHE) {
        return Some(Revert::from_reason(message[at + GANACHE.len()..].trim()));
    }
    if let Some(at) = message.find(GETH) {
        let rest = &message[at + GETH.len()..];
        let reason = rest.strip_prefix(':').unwrap_or(rest).trim();
        return Some(Revert::from_reason(reason));
    }
    None
}

fn revert_from_data(data: &serde_json::Value) -> Option<Revert> {
    let hex_str = match data {
        serde_json::Value::String(s) => s.as_str(),
        serde_json::Value::Object(map) => {
            return ["data", "result"]
                .iter()
                .filter_map(|k| map.get(*k))
                .find_map(revert_from_data);
        }
        _ => return None,
    };
    let bytes = alloy_primitives::hex::decode(hex_str).ok()?;
    if bytes.starts_with(&alloy_sol_types::Revert::SELECTOR) {
        let revert = alloy_sol_types::Revert::abi_decode(&bytes).ok()?;
        return Some(Revert::from_reason(&revert.reason));
    }
    if bytes.starts_with(&alloy_sol_types::Panic::SELECTOR) {
        let panic = alloy_sol_types::Panic::abi_decode(&bytes).ok()?;
        return Some(Revert::Other(format!("panic 0x{:x}", panic.code)));
    }
    None
}

#[async_trait]
impl crate::chain::Backend for EthereumChain {
    fn account(&self) -> Address {
        self.account
    }

    async fn now(&self) -> Result<u64, ChainError> {
        self.block_timestamp(BlockNumberOrTag::Latest).await
    }

    async fn block_number(&self) -> Result<u64, ChainError> {
        self.provider.get_block_number().await.map_err(transport)
    }

    fn adjudicator(&self) -> Address {
        *self.adjudicator.address()
    }

    async fn balance(&self, asset: Address, owner: Address) -> Result<U256, ChainError> {
        if asset == Address::ZERO {
            return self.provider.get_balance(owner).await.map_err(transport);
        }
        self.view(IERC20::new(asset, self.provider.clone()).balanceOf(owner))
            .await
    }

    async fn holdings(&self, asset: Address, channel_id: B256) -> Result<U256, ChainError> {
        self.view(self.adjudicator.holdings(asset, channel_id))
            .await
    }

    async fn allowance(&self, token: Address) -> Result<U256, ChainError> {
        let erc20 = IERC20::new(token, self.provider.clone());
        self.view(erc20.allowance(self.account, Chain::adjudicator(self)))
            .await
    }

    async fn decimals(&self, token: Address) -> Result<u8, ChainError> {
        if token == Address::ZERO {
            return Ok(18);
        }
        self.view(IERC20::new(token, self.provider.clone()).decimals())
            .await
    }

    async fn code_hash(&self, address: Address) -> Result<B256, ChainError> {
        let code = self
            .provider
            .get_code_at(address)
            .await
            .map_err(transport)?;
        Ok(alloy_primitives::keccak256(&code))
    }

    async fn status(&self, channel_id: B256) -> Result<OnChainStatus, ChainError> {
        let s = self.view(self.adjudicator.unpackStatus(channel_id)).await?;
        Ok(OnChainStatus {
            turn_num_record: s.turnNumRecord.to::<u64>(),
            finalizes_at: s.finalizesAt.to::<u64>(),
            fingerprint: s.fingerprint.to_be_bytes::<20>(),
        })
    }

    /// One adjudicator (or token) call per [`TxCall`], sent by [`EthereumChain::send`]; only a
    /// native deposit carries a value.
    async fn send_tx(&self, call: TxCall<'_>) -> Result<TxReceipt, ChainError> {
        let adjudicator = &self.adjudicator;
        let sent = match call {
            TxCall::Deposit {
                asset,
                channel_id,
                expected_held,
                amount,
            } => {
                // The node refuses a value the account cannot pay before executing anything (as
                // the simulator does); a token's balance is the token's to check: its revert
                // reason comes back from the gas estimate, before anything is sent.
                let value = if asset == Address::ZERO {
                    let available = Chain::balance(self, asset, self.account).await?;
                    if available < amount {
                        return Err(ChainError::InsufficientFunds {
                            needed: amount,
                            available,
                        });
                    }
                    amount
                } else {
                    U256::ZERO
                };
                let call = adjudicator.deposit(asset, channel_id, expected_held, amount);
                self.send(call, value).await
            }
            TxCall::Approve { token, amount } => {
                let erc20 = IERC20::new(token, self.provider.clone());
                let call = erc20.approve(Chain::adjudicator(self), amount);
                self.send(call, U256::ZERO).await
            }
            TxCall::Challenge {
                fixed,
                proof,
                candidate,
                challenger_sig,
            } => {
                let (fixed, proof, candidate) = support_to_abi(fixed, proof, candidate);
                let call = adjudicator.challenge(fixed, proof, candidate, challenger_sig.to_abi());
                self.send(call, U256::ZERO).await
            }
            TxCall::Checkpoint {
                fixed,
                proof,
                candidate,
            } => {
                let (fixed, proof, candidate) = support_to_abi(fixed, proof, candidate);
                let call = adjudicator.checkpoint(fixed, proof, candidate);
                self.send(call, U256::ZERO).await
            }
            TxCall::Conclude { fixed, candidate } => {
                let call = adjudicator.conclude(fixed.to_abi(), candidate.to_abi());
                self.send(call, U256::ZERO).await
            }
            TxCall::TransferAllAssets {
                channel_id,
                outcome,
                state_hash,
            } => {
                let call =
                    adjudicator.transferAllAssets(channel_id, outcome_to_abi(outcome), state_hash);
                self.send(call, U256::ZERO).await
            }
            TxCall::ConcludeAndTransferAllAssets { fixed, candidate } => {
                let call =
                    adjudicator.concludeAndTransferAllAssets(fixed.to_abi(), candidate.to_abi());
                self.send(call, U256::ZERO).await
            }
            TxCall::Reclaim { args } => {
                let call = adjudicator.reclaim(args.to_abi());
                self.send(call, U256::ZERO).await
            }
            TxCall::Transfer {
                asset_index,
                from_channel_id,
                outcome,
                state_hash,
                indices,
            } => {
                let call = adjudicator.transfer(
                    U256::from(asset_index),
                    from_channel_id,
                    encode_outcome(outcome).into(),
                    state_hash,
                    indices.iter().map(|i| U256::from(*i)).collect(),
                );
                self.send(call, U256::ZERO).await
            }
        };
        Ok(sent?.0)
    }

    async fn events(
        &self,
        channel_id: B256,
        from_block: u64,
    ) -> Result<Vec<ChainEventRecord>, ChainError> {
        // Some nodes reject a range that starts after the latest block; it is simply empty.
        let latest = Chain::block_number(self).await?;
        if from_block > latest {
            return Ok(Vec::new());
        }
        let filter = Filter::new()
            .address(Chain::adjudicator(self))
            .topic1(channel_id)
            .from_block(from_block)
            .to_block(latest);
        self.logs(&filter).await
    }

    async fn adjudicator_events(
        &self,
        from_block: u64,
        to_block: u64,
    ) -> Result<Vec<ChainEventRecord>, ChainError> {
        if from_block > to_block {
            return Ok(Vec::new());
        }
        let filter = Filter::new()
            .address(Chain::adjudicator(self))
            .from_block(from_block)
            .to_block(to_block);
        self.logs(&filter).await
    }

    fn default_confirmations(&self) -> u64 {
        self.config.confirmations
    }
}

impl_chain_backend!(EthereumChain);

/// The arguments `challenge` and `checkpoint` share, in their ABI form.
type AbiSupport = (
    crate::abi::FixedPart,
    Vec<crate::abi::SignedVariablePart>,
    crate::abi::SignedVariablePart,
);

/// A support (fixed part, proof, candidate) as `challenge` and `checkpoint` take it.
fn support_to_abi(
    fixed: &FixedPart,
    proof: &[SignedVariablePart],
    candidate: &SignedVariablePart,
) -> AbiSupport {
    let proof = proof.iter().map(SignedVariablePart::to_abi).collect();
    (fixed.to_abi(), proof, candidate.to_abi())
}

impl EthereumChain {
    /// `eth_getLogs` of `filter`, decoded and in chain order.
    async fn logs(&self, filter: &Filter) -> Result<Vec<ChainEventRecord>, ChainError> {
        let logs = self.provider.get_logs(filter).await.map_err(transport)?;
        let mut out = Vec::with_capacity(logs.len());
        for log in &logs {
            // Logs without a position are pending; they are reported once mined.
            let (Some(block_number), Some(block_hash), Some(log_index)) =
                (log.block_number, log.block_hash, log.log_index)
            else {
                continue;
            };
            if let Some(event) = decode_event(log)? {
                out.push(ChainEventRecord {
                    block_number,
                    block_hash,
                    log_index,
                    event,
                });
            }
        }
        out.sort_by_key(|r| (r.block_number, r.log_index));
        Ok(out)
    }
}

/// Decodes one adjudicator log; `None` for events this crate does not model.
fn decode_event(log: &Log) -> Result<Option<ChainEvent>, ChainError> {
    use NitroAdjudicator::{
        AllocationUpdated, ChallengeCleared, ChallengeRegistered, Checkpointed, Concluded,
        Deposited, Reclaimed,
    };
    fn decode<E: SolEvent>(log: &Log) -> Result<E, ChainError> {
        E::decode_log_data(log.data()).map_err(|e| {
            transport_msg(format!("malformed {} log from the node: {e}", E::SIGNATURE))
        })
    }
    let Some(topic0) = log.topic0() else {
        return Ok(None);
    };
    let event = match *topic0 {
        Deposited::SIGNATURE_HASH => {
            let e: Deposited = decode(log)?;
            ChainEvent::Deposited {
                channel_id: e.destination,
                asset: e.asset,
                holdings: e.destinationHoldings,
            }
        }
        ChallengeRegistered::SIGNATURE_HASH => {
            let e: ChallengeRegistered = decode(log)?;
            ChainEvent::ChallengeRegistered {
                channel_id: e.channelId,
                finalizes_at: e.finalizesAt.to::<u64>(),
                proof: e.proof.iter().map(SignedVariablePart::from_abi).collect(),
                candidate: SignedVariablePart::from_abi(&e.candidate),
            }
        }
        ChallengeCleared::SIGNATURE_HASH => {
            let e: ChallengeCleared = decode(log)?;
            ChainEvent::ChallengeCleared {
                channel_id: e.channelId,
                new_turn_num_record: e.newTurnNumRecord.to::<u64>(),
            }
        }
        Checkpointed::SIGNATURE_HASH => {
            let e: Checkpointed = decode(log)?;
            ChainEvent::Checkpointed {
                channel_id: e.channelId,
                new_turn_num_record: e.newTurnNumRecord.to::<u64>(),
            }
        }
        Concluded::SIGNATURE_HASH => {
            let e: Concluded = decode(log)?;
            ChainEvent::Concluded {
                channel_id: e.channelId,
                finalizes_at: e.finalizesAt.to::<u64>(),
            }
        }
        AllocationUpdated::SIGNATURE_HASH => {
            let e: AllocationUpdated = decode(log)?;
            ChainEvent::AllocationUpdated {
                channel_id: e.channelId,
                asset_index: u64::try_from(e.assetIndex).map_err(|_| {
                    transport_msg(format!("AllocationUpdated asset index {}", e.assetIndex))
                })?,
                initial_holdings: e.initialHoldings,
                final_holdings: e.finalHoldings,
            }
        }
        Reclaimed::SIGNATURE_HASH => {
            let e: Reclaimed = decode(log)?;
            ChainEvent::Reclaimed {
                channel_id: e.channelId,
                asset_index: u64::try_from(e.assetIndex).map_err(|_| {
                    transport_msg(format!("Reclaimed asset index {}", e.assetIndex))
                })?,
            }
        }
        _ => return Ok(None),
    };
    Ok(Some(event))
}

/// The creation bytecode of the contracts a channel needs: the published `NitroAdjudicator` and
/// `ConsensusApp` (the app of ledger channels; from the npm package's Hardhat artifacts) and this
/// crate's `PaymentApp` (compiled from `contracts/PaymentApp.sol` by `scripts/build-contracts.sh`
/// with the pinned compiler), plus the published `VirtualPaymentApp`, kept only to test why it
/// is not used.
#[derive(Clone, PartialEq, Eq)]
pub struct NitroArtifacts {
    /// `NitroAdjudicator` creation bytecode.
    pub nitro_adjudicator: Bytes,
    /// `PaymentApp` creation bytecode.
    pub payment_app: Bytes,
    /// `VirtualPaymentApp` creation bytecode.
    pub virtual_payment_app: Bytes,
    /// `ConsensusApp` creation bytecode.
    pub consensus_app: Bytes,
}

impl fmt::Debug for NitroArtifacts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NitroArtifacts")
            .field("nitro_adjudicator_len", &self.nitro_adjudicator.len())
            .field("payment_app_len", &self.payment_app.len())
            .field("virtual_payment_app_len", &self.virtual_payment_app.len())
            .field("consensus_app_len", &self.consensus_app.len())
            .finish()
    }
}

impl NitroArtifacts {
    /// The npm package the adjudicator comes from (see `scripts/fetch-nitro-artifacts.sh`).
    pub const NPM_PACKAGE: &'static str = "@statechannels/nitro-protocol@2.0.1-alpha.6";

    /// Reads `NitroAdjudicator.json`, `PaymentApp.json`, `VirtualPaymentApp.json` and
    /// `ConsensusApp.json` (artifacts with a `bytecode` member) from `dir`.
    pub fn from_dir(dir: &Path) -> Result<Self, SetupError> {
        Ok(Self {
            nitro_adjudicator: read_bytecode(&dir.join("NitroAdjudicator.json"))?,
            payment_app: read_bytecode(&dir.join("PaymentApp.json"))?,
            virtual_payment_app: read_bytecode(&dir.join("VirtualPaymentApp.json"))?,
            consensus_app: read_bytecode(&dir.join("ConsensusApp.json"))?,
        })
    }
}

/// The `bytecode` member (creation code, `0x` hex) of a Hardhat-style artifact.
pub fn read_bytecode(path: &Path) -> Result<Bytes, SetupError> {
    let err = |reason: String| SetupError::Artifact {
        path: path.to_owned(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| err(e.to_string()))?;
    let hex_str = json
        .get("bytecode")
        .and_then(serde_json::Value::as_str)
        .ok_or_else(|| err(String::from("no string member `bytecode`")))?;
    let code = alloy_primitives::hex::decode(hex_str).map_err(|e| err(e.to_string()))?;
    if code.is_empty() {
        return Err(err(String::from("empty bytecode")));
    }
    Ok(code.into())
}

/// Addresses (and deployment receipts) of freshly deployed contracts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deployment {
    /// The `NitroAdjudicator`.
    pub nitro_adjudicator: Address,
    /// `PaymentApp` (the channels' `appDefinition`).
    pub payment_app: Address,
    /// The published `VirtualPaymentApp` (not used by channels; see [`crate::app`]).
    pub virtual_payment_app: Address,
    /// The published `ConsensusApp` (the ledger channels' `appDefinition`).
    pub consensus_app: Address,
    /// Receipt of the adjudicator's deployment.
    pub nitro_adjudicator_receipt: TxReceipt,
    /// Receipt of `PaymentApp`'s deployment.
    pub payment_app_receipt: TxReceipt,
}

/// Deploys `NitroAdjudicator`, `PaymentApp`, `VirtualPaymentApp` and `ConsensusApp` from
/// `artifacts`, in this order, from the account of `secret_key` (which pays the gas: about 5 M on
/// a dev chain). On a fresh dev chain from its account #0 they land at
/// [`DEFAULT_ADJUDICATOR_ADDRESS`](crate::chain::sim::DEFAULT_ADJUDICATOR_ADDRESS),
/// [`DEFAULT_APP_DEFINITION`](crate::chain::sim::DEFAULT_APP_DEFINITION) and (the fourth)
/// [`DEFAULT_CONSENSUS_APP`](crate::chain::sim::DEFAULT_CONSENSUS_APP), as in the simulator.
///
/// Fails with [`SetupError::AppCode`] if the deployed `PaymentApp` code is not the one this crate
/// expects ([`PAYMENT_APP_RUNTIME_HASH`](crate::app::PAYMENT_APP_RUNTIME_HASH)).
pub async fn deploy(
    rpc_url: &str,
    secret_key: &B256,
    artifacts: &NitroArtifacts,
) -> Result<Deployment, SetupError> {
    let (nitro_adjudicator, nitro_adjudicator_receipt) =
        deploy_contract(rpc_url, secret_key, artifacts.nitro_adjudicator.clone()).await?;
    let (payment_app, payment_app_receipt) =
        deploy_contract(rpc_url, secret_key, artifacts.payment_app.clone()).await?;
    let (virtual_payment_app, _) =
        deploy_contract(rpc_url, secret_key, artifacts.virtual_payment_app.clone()).await?;
    let (consensus_app, _) =
        deploy_contract(rpc_url, secret_key, artifacts.consensus_app.clone()).await?;
    let chain = EthereumChain::connect_unchecked(rpc_url, secret_key, nitro_adjudicator).await?;
    let code_hash = chain.code_hash(payment_app).await?;
    if code_hash != crate::app::PAYMENT_APP_RUNTIME_HASH {
        return Err(SetupError::AppCode {
            app: payment_app,
            code_hash,
        });
    }
    Ok(Deployment {
        nitro_adjudicator,
        payment_app,
        virtual_payment_app,
        consensus_app,
        nitro_adjudicator_receipt,
        payment_app_receipt,
    })
}

/// Deploys the nitro-protocol package's test ERC-20 (`Token.sol`, built by
/// `scripts/build-contracts.sh` into `Token.json` in `dir`: 18 decimals, 10^10 units minted to
/// `owner`), from the account of `secret_key`. For dev chains and tests.
pub async fn deploy_test_token(
    rpc_url: &str,
    secret_key: &B256,
    dir: &Path,
    owner: Address,
) -> Result<Address, SetupError> {
    use alloy_sol_types::SolValue;
    let mut code = read_bytecode(&dir.join("Token.json"))?.to_vec();
    code.extend_from_slice(&owner.abi_encode());
    Ok(deploy_contract(rpc_url, secret_key, code.into()).await?.0)
}

/// Deploys one contract from `creation_code` (with its ABI-encoded constructor arguments
/// appended), from the account of `secret_key`. Returns its address and the receipt.
pub async fn deploy_contract(
    rpc_url: &str,
    secret_key: &B256,
    creation_code: Bytes,
) -> Result<(Address, TxReceipt), SetupError> {
    let chain = EthereumChain::connect_unchecked(rpc_url, secret_key, Address::ZERO).await?;
    let call = CallBuilder::new_raw_deploy(&chain.provider, creation_code);
    let (receipt, address) = chain.send(call, U256::ZERO).await?;
    let address = address.ok_or_else(|| {
        transport_msg(format!(
            "deployment {} has no contract address",
            receipt.tx_hash
        ))
    })?;
    Ok((address, receipt))
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_sol_types::SolError;

    fn error_string(reason: &str) -> String {
        let data = alloy_sol_types::Revert::from(reason).abi_encode();
        format!("0x{}", alloy_primitives::hex::encode(data))
    }

    #[test]
    fn anvil_revert_with_data() {
        let data = serde_json::Value::String(error_string("Channel finalized."));
        assert_eq!(
            revert_from_rpc_error("execution reverted: Channel finalized.", Some(&data)),
            Some(Revert::ChannelFinalized)
        );
        // The data wins over the message.
        assert_eq!(
            revert_from_rpc_error("execution reverted", Some(&data)),
            Some(Revert::ChannelFinalized)
        );
    }

    #[test]
    fn ganache_message() {
        assert_eq!(
            revert_from_rpc_error(
                "VM Exception while processing transaction: revert turnNumRecord not increased.",
                None
            ),
            Some(Revert::TurnNumRecordNotIncreased)
        );
        assert_eq!(
            revert_from_rpc_error(
                "VM Exception while processing transaction: revert redemption not signed by Bob",
                None
            ),
            Some(Revert::NotSupported(String::from(
                "redemption not signed by Bob"
            )))
        );
    }

    #[test]
    fn hardhat_message_and_object_data() {
        assert_eq!(
            revert_from_rpc_error(
                "Error: VM Exception while processing transaction: reverted with reason string 'Channel not finalized.'",
                None
            ),
            Some(Revert::ChannelNotFinalized)
        );
        let data =
            serde_json::json!({ "message": "…", "data": error_string("held != expectedHeld") });
        assert_eq!(
            revert_from_rpc_error("Error: Transaction reverted", Some(&data)),
            Some(Revert::HeldMismatch)
        );
    }

    #[test]
    fn geth_message_without_data_and_non_reverts() {
        assert_eq!(
            revert_from_rpc_error("execution reverted: incorrect fingerprint", None),
            Some(Revert::IncorrectFingerprint)
        );
        assert_eq!(
            revert_from_rpc_error("execution reverted", None),
            Some(Revert::Other(String::new()))
        );
        assert_eq!(revert_from_rpc_error("nonce too low", None), None);
        assert_eq!(
            revert_from_rpc_error(
                "insufficient funds for gas * price + value",
                Some(&serde_json::Value::Null)
            ),
            None
        );
    }

    #[test]
    fn panic_and_garbage_data() {
        let panic = alloy_sol_types::Panic::from(0x11u64).abi_encode();
        let data = serde_json::Value::String(format!("0x{}", alloy_primitives::hex::encode(panic)));
        assert_eq!(
            revert_from_rpc_error("execution reverted", Some(&data)),
            Some(Revert::Other(String::from("panic 0x11")))
        );
        // Undecodable data falls back to the message.
        let junk = serde_json::Value::String(String::from("0x08c379a0ff"));
        assert_eq!(
            revert_from_rpc_error("execution reverted: Invalid signature", Some(&junk)),
            Some(Revert::InvalidSignature)
        );
    }
}
