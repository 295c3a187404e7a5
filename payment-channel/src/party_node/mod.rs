//! [`PartyNode`]: the async driver of a [`Party`] (one participant's ledgers and virtual channels)
//! over a [`Chain`], a durable [`ChannelStore`] and a [`Transport`]`<`[`NodeMessage`]`>`.
//!
//! It keeps the [`Party`] calling contract the way [`Client`](crate::client::Client) keeps the
//! `Channel` one:
//! - **persist before act**: after every input the party's snapshot is stored (one record of the
//!   store, [`PARTY_RECORD`]) before any message it produced leaves, any event is published, or
//!   any transaction is sent;
//! - **duties from persisted state**: [`PartyNode::watch_chain`] reads the adjudicator's events
//!   (all channels, one log query, applied once [`NodeConfig::confirmations`] blocks follow them),
//!   passes the chain time, then sends every transaction [`Party::chain_duties`] names. Before
//!   sending, the chain is read so that nothing is sent twice or for nothing (a deposit already
//!   made, a challenge already registered, a finalized channel, a reclaim already done, a payout
//!   of nothing); a failed transaction is retried on later watches with exponential backoff in
//!   chain seconds until it lands or becomes moot. After a restart the same duties come back from
//!   the stored snapshot;
//! - the event cursor is stored too ([`CURSOR_RECORD`]), after the snapshot it led to: a crash
//!   in between only re-applies events, which the party ignores.
//!
//! `reclaim` emits `Reclaimed(ledger)` without naming the guarantee: the node identifies which
//! guarantees went by matching the ledger's on-chain fingerprint against the outcomes our
//! finalized virtual channels would leave (reclaims commute, so a set is enough).
//!
//! Hubs: with [`NodeConfig::ledger_service`], a peer that sends [`NodeMessage::LedgerRequest`]
//! gets a ledger led (and funded) by us, once, within the configured count.

#[cfg(feature = "tcp")]
#[cfg_attr(docsrs, doc(cfg(feature = "tcp")))]
pub mod tcp;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use alloy_primitives::{Address, B256, U256, keccak256};
use derive_setters::Setters;
use k256::elliptic_curve::rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, mpsc};

use crate::backoff::Backoff;
use crate::chain::{Chain, ChainAction, ChainError, ReclaimArgs, TxReceipt, checks, fingerprint};
use crate::ledger::{LedgerPhase, LedgerRole, reclaim_effect};
use crate::sign::Signer;
use crate::state::{FixedPart, Outcome, SignedVariablePart, hash_outcome};
use crate::store::{ChannelStore, StoreError};
use crate::virtual_channel::{
    Envelope, Party, PartyConfig, PartyEvent, VirtualError, VirtualParams,
};
use crate::voucher::Voucher;

/// The store key of the party's snapshot (not a channel id: no channel has this preimage).
pub const PARTY_RECORD: B256 = B256::new(*b"paid-torrent/party-node/snapshot");
/// The store key of the chain event cursor (next block to read, 8 bytes big-endian).
pub const CURSOR_RECORD: B256 = B256::new(*b"paid-torrent/party-node/cursor\0\0");

pub use crate::client::{Transport, TransportError};

/// What nodes send each other (after the transport authenticated the sender).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum NodeMessage {
    /// A party message (boxed: it is most of the size).
    Envelope(Box<Envelope>),
    /// "Please open (and fund) a ledger with me": a payee to its hub. Idempotent.
    LedgerRequest,
}

/// A hub's answer to [`NodeMessage::LedgerRequest`]: the ledgers it opens and funds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerService {
    /// Asset of the ledgers.
    pub asset: Address,
    /// What we deposit into each (our liquidity for that payee).
    pub deposit: U256,
    /// Challenge duration of the ledgers, seconds.
    pub challenge_duration: u64,
    /// Most ledgers we lead at once (each one locks `deposit` of ours).
    pub max_ledgers: usize,
}

/// Default of [`NodeConfig::stalled_remove_patience`]: 10 minutes. A live counterparty
/// countersigns a Remove in one round trip, and the node resends what waits; the patience is
/// for one that stays away, so that a peer restarting is not taken on chain.
pub const DEFAULT_STALLED_REMOVE_PATIENCE: u64 = 600;

/// Settings of a [`PartyNode`].
#[derive(Debug, Clone, PartialEq, Eq, Setters)]
#[setters(prefix = "with_")]
#[non_exhaustive]
pub struct NodeConfig {
    /// Blocks that must follow a block before its events are applied; `None`: the chain's
    /// [`Chain::default_confirmations`].
    pub confirmations: Option<u64>,
    /// Longest wait, in chain seconds, between two attempts of a failed duty.
    pub max_retry_interval: u64,
    /// Set on a hub that opens ledgers on request.
    pub ledger_service: Option<LedgerService>,
    /// How long, in chain seconds, a ledger may stay among [`Party::stalled_removes`] (a
    /// virtual channel's final state is signed by all, but the ledger's counterparty does not
    /// countersign the Remove) before the node takes the ledger on chain
    /// ([`Party::challenge_ledger`]): V is then concluded with its final state and the guarantee
    /// reclaimed, so the money a silent counterparty holds up is recovered without anyone's
    /// intervention. `None`: never automatically (the caller decides). Counted from the first
    /// watch that saw the ledger stalled in this process, so a restart waits again.
    pub stalled_remove_patience: Option<u64>,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            confirmations: None,
            max_retry_interval: 60,
            ledger_service: None,
            stalled_remove_patience: Some(DEFAULT_STALLED_REMOVE_PATIENCE),
        }
    }
}

/// Why a [`PartyNode`] call failed, by cause.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The party refused the input (a peer's fault, our usage, or our policy: see
    /// [`VirtualError::reaction`]); nothing changed.
    #[error(transparent)]
    Party(#[from] VirtualError),
    /// The chain failed; the duty is retried on later watches.
    #[error(transparent)]
    Chain(#[from] ChainError),
    /// The store failed: nothing produced since the last successful write left.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The stored snapshot does not decode or belongs to another signer.
    #[error("stored party: {0}")]
    Corrupt(String),
    /// A [`NodeMessage::LedgerRequest`] we do not serve (not a hub, or at the ledger limit).
    #[error("ledger request refused: {0}")]
    Refused(&'static str),
    /// The node's [`TcpNet`](tcp::TcpNet) failed (it could not listen).
    #[cfg(feature = "tcp")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tcp")))]
    #[error("net: {0}")]
    Net(#[from] tcp::NetError),
}

struct State {
    party: Party,
    /// Next block to read events from.
    cursor: u64,
    stored_cursor: u64,
    /// Logs applied in the re-read window: `(block hash, log index)` → block number.
    applied: HashMap<(B256, u64), u64>,
    backoff: HashMap<(u8, B256), Backoff>,
    /// Ledgers among [`Party::stalled_removes`], with the chain time they were first seen so.
    stalled_since: HashMap<B256, u64>,
}

struct Inner {
    chain: Arc<dyn Chain>,
    store: Arc<dyn ChannelStore>,
    transport: Arc<dyn Transport<NodeMessage>>,
    events: mpsc::UnboundedSender<PartyEvent>,
    config: NodeConfig,
    address: Address,
    state: Mutex<State>,
}

/// The async driver of a [`Party`]. See the [module docs](self). Cheap to clone.
#[derive(Clone)]
pub struct PartyNode {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for PartyNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartyNode")
            .field("address", &self.inner.address)
            .finish_non_exhaustive()
    }
}

impl PartyNode {
    /// Opens the node: restores the party from `store` (a new one with `config` if the store has
    /// none), queues every message its state implies and sends them. Call
    /// [`PartyNode::watch_chain`] next (it performs what a crash left owed on chain).
    pub async fn open(
        signer: Arc<dyn Signer>,
        party_config: PartyConfig,
        chain: Arc<dyn Chain>,
        store: Arc<dyn ChannelStore>,
        transport: Arc<dyn Transport<NodeMessage>>,
        config: NodeConfig,
    ) -> Result<(Self, mpsc::UnboundedReceiver<PartyEvent>), NodeError> {
        let address = signer.address();
        let party = match store.get_channel(PARTY_RECORD).await? {
            Some(bytes) => {
                Party::restore(signer, &bytes).map_err(|e| NodeError::Corrupt(e.to_string()))?
            }
            None => Party::new(signer, party_config),
        };
        let cursor = match store.get_channel(CURSOR_RECORD).await? {
            Some(b) => {
                let b: [u8; 8] = b
                    .as_slice()
                    .try_into()
                    .map_err(|_| NodeError::Corrupt("cursor".into()))?;
                u64::from_be_bytes(b)
            }
            // Nothing of a new party can be on chain before now.
            None => chain.block_number().await?,
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let node = Self {
            inner: Arc::new(Inner {
                chain,
                store,
                transport,
                events: tx,
                config,
                address,
                state: Mutex::new(State {
                    party,
                    cursor,
                    stored_cursor: cursor,
                    applied: HashMap::new(),
                    backoff: HashMap::new(),
                    stalled_since: HashMap::new(),
                }),
            }),
        };
        node.resend().await?;
        Ok((node, rx))
    }

    /// Our signing address.
    pub fn address(&self) -> Address {
        self.inner.address
    }

    /// The chain handle (the account that sends our transactions).
    pub fn chain(&self) -> &Arc<dyn Chain> {
        &self.inner.chain
    }

    /// Reads the party (ledgers, channels) under the node's lock.
    pub async fn inspect<T>(&self, f: impl FnOnce(&Party) -> T) -> T {
        f(&self.inner.state.lock().await.party)
    }

    async fn apply<T>(
        &self,
        f: impl FnOnce(&mut Party) -> Result<T, VirtualError>,
    ) -> Result<T, NodeError> {
        let mut st = self.inner.state.lock().await;
        let value = f(&mut st.party)?;
        self.drive(&mut st).await?;
        Ok(value)
    }

    /// Opens a ledger with `counterparty` where we lead and deposit `deposit` (a fresh random
    /// channel nonce). The deposit is a duty: [`PartyNode::watch_chain`] sends it.
    pub async fn open_ledger(
        &self,
        counterparty: Address,
        asset: Address,
        deposit: U256,
        challenge_duration: u64,
    ) -> Result<B256, NodeError> {
        let nonce = OsRng.next_u64() >> 16;
        self.apply(|p| p.open_ledger(counterparty, nonce, challenge_duration, asset, deposit))
            .await
    }

    /// Payer: proposes a virtual channel (see [`Party::propose_virtual`]).
    pub async fn propose_virtual(&self, params: &VirtualParams) -> Result<B256, NodeError> {
        self.apply(|p| p.propose_virtual(params)).await
    }

    /// Payer: pays `delta` more through `channel`; the voucher is stored before it is sent.
    pub async fn pay(&self, channel: B256, delta: U256) -> Result<Voucher, NodeError> {
        self.apply(|p| p.pay(channel, delta)).await
    }

    /// Payer: signs and sends the final state of `channel`.
    pub async fn close_virtual(&self, channel: B256) -> Result<(), NodeError> {
        self.apply(|p| p.close_virtual(channel)).await
    }

    /// Hub or payee: asks the payer for the final state.
    pub async fn request_final(&self, channel: B256) -> Result<(), NodeError> {
        self.apply(|p| p.request_final(channel)).await
    }

    /// Signs the final state of a ledger without guarantees.
    pub async fn close_ledger(&self, ledger: B256) -> Result<(), NodeError> {
        self.apply(|p| p.close_ledger(ledger)).await
    }

    /// Takes a virtual channel on chain (see [`Party::challenge_virtual`]).
    pub async fn challenge_virtual(&self, channel: B256) -> Result<(), NodeError> {
        self.apply(|p| p.challenge_virtual(channel)).await
    }

    /// Takes a ledger on chain (see [`Party::challenge_ledger`]), e.g. one of
    /// [`Party::stalled_removes`] whose counterparty stays silent.
    pub async fn challenge_ledger(&self, ledger: B256) -> Result<(), NodeError> {
        self.apply(|p| p.challenge_ledger(ledger)).await
    }

    /// Re-sends every message our state implies (after a restart, a reconnection, or
    /// periodically while something waits for a peer).
    pub async fn resend(&self) -> Result<(), NodeError> {
        self.apply(|p| {
            p.resend();
            Ok(())
        })
        .await
    }

    /// Asks `hub` for a ledger led by it (see [`LedgerService`]).
    pub async fn request_ledger(&self, hub: Address) -> Result<(), TransportError> {
        self.inner
            .transport
            .send(hub, NodeMessage::LedgerRequest)
            .await
    }

    /// A message from `from`, which the transport authenticated. An envelope whose `from`
    /// differs is refused (the transport should have dropped it).
    pub async fn handle_message(&self, from: Address, msg: NodeMessage) -> Result<(), NodeError> {
        match msg {
            NodeMessage::Envelope(env) => {
                if env.from != from {
                    return Err(NodeError::Party(
                        crate::virtual_channel::VirtualPeerError::NotParticipant(env.from).into(),
                    ));
                }
                self.apply(|p| p.handle_envelope(&env)).await
            }
            NodeMessage::LedgerRequest => self.handle_ledger_request(from).await.map(|_| ()),
        }
    }

    /// Hub: opens a ledger with `from` unless one we lead is already opening or open.
    pub async fn handle_ledger_request(&self, from: Address) -> Result<B256, NodeError> {
        let service = self
            .inner
            .config
            .ledger_service
            .clone()
            .ok_or(NodeError::Refused("not a hub"))?;
        let mut st = self.inner.state.lock().await;
        let live = |phase| {
            matches!(
                phase,
                LedgerPhase::Proposed | LedgerPhase::Funding | LedgerPhase::Open
            )
        };
        let existing = st
            .party
            .ledgers()
            .find(|l| {
                l.counterparty() == from
                    && l.role() == LedgerRole::Leader
                    && live(l.phase())
                    && l.chain().finalized.is_none()
            })
            .map(|l| l.id());
        if let Some(id) = existing {
            // A lost Open: send it again.
            st.party.resend();
            self.drive(&mut st).await?;
            return Ok(id);
        }
        let led = st
            .party
            .ledgers()
            .filter(|l| l.role() == LedgerRole::Leader && !l.chain().paid_out)
            .count();
        if led >= service.max_ledgers {
            return Err(NodeError::Refused("at the ledger limit"));
        }
        let nonce = OsRng.next_u64() >> 16;
        let id = st.party.open_ledger(
            from,
            nonce,
            service.challenge_duration,
            service.asset,
            service.deposit,
        )?;
        tracing::info!(peer = %from, ledger = %id, deposit = %service.deposit, "opening a ledger on request");
        self.drive(&mut st).await?;
        Ok(id)
    }

    /// Persists the party if it changed, then releases its events and messages.
    async fn drive(&self, st: &mut State) -> Result<(), NodeError> {
        if let Some(snapshot) = st.party.poll_persist() {
            self.inner
                .store
                .put_channel(PARTY_RECORD, &snapshot)
                .await?;
            st.party.handle_persisted();
        }
        while let Some(ev) = st.party.poll_event() {
            // A dropped receiver only means nobody listens.
            let _ = self.inner.events.send(ev);
        }
        while let Some(env) = st.party.poll_envelope() {
            let to = env.to;
            if let Err(e) = self
                .inner
                .transport
                .send(to, NodeMessage::Envelope(Box::new(env)))
                .await
            {
                tracing::debug!(peer = %to, error = %e, "send failed (resent later)");
            }
        }
        Ok(())
    }

    fn confirmations(&self) -> u64 {
        self.inner
            .config
            .confirmations
            .unwrap_or_else(|| self.inner.chain.default_confirmations())
    }

    /// Reads the adjudicator's confirmed events, applies those about our channels, passes the
    /// chain time, stores the result, then sends the transactions owed (see the
    /// [module docs](self)). A failed duty does not stop the others; the first error is returned.
    pub async fn watch_chain(&self) -> Result<(), NodeError> {
        let chain = &self.inner.chain;
        let latest = chain.block_number().await?;
        let now = chain.now().await?;
        let k = self.confirmations();
        let mut st = self.inner.state.lock().await;
        let mut reclaimed = BTreeSet::new();
        if let Some(to) = latest.checked_sub(k) {
            let from = st.cursor.saturating_sub(k);
            if from <= to {
                let records = chain.adjudicator_events(from, to).await?;
                st.applied.retain(|_, b| *b >= from);
                let known: HashSet<B256> = st
                    .party
                    .ledgers()
                    .map(|l| l.id())
                    .chain(st.party.channels().map(|v| v.id()))
                    .collect();
                for r in records {
                    let id = r.event.channel_id();
                    if !known.contains(&id)
                        || st
                            .applied
                            .insert((r.block_hash, r.log_index), r.block_number)
                            .is_some()
                    {
                        continue;
                    }
                    if matches!(r.event, crate::chain::ChainEvent::Reclaimed { .. }) {
                        reclaimed.insert(id);
                    }
                    if let Err(e) = st.party.handle_chain_event(now, &r.event) {
                        tracing::warn!(channel = %id, error = %e, "chain event not applied");
                    }
                }
                st.cursor = st.cursor.max(to.saturating_add(1));
            }
        }
        st.party.handle_timeout(now);
        if let Some(patience) = self.inner.config.stalled_remove_patience {
            Self::take_stalled_ledgers_on_chain(&mut st, now, patience);
        }
        for ledger in reclaimed {
            if let Err(e) = self.sync_reclaims(&mut st, ledger).await {
                tracing::warn!(%ledger, error = %e, "reclaim not identified");
            }
        }
        self.drive(&mut st).await?;
        if st.cursor != st.stored_cursor {
            self.inner
                .store
                .put_channel(CURSOR_RECORD, &st.cursor.to_be_bytes())
                .await?;
            st.stored_cursor = st.cursor;
        }
        let mut first_err = None;
        let duties = st.party.chain_duties(now)?;
        for duty in duties {
            let key = duty_key(&duty);
            if st.backoff.get(&key).is_some_and(|b| !b.ready(now)) {
                continue;
            }
            let result = self.execute(&mut st, &duty).await;
            match result {
                Ok(()) => {
                    st.backoff.remove(&key);
                }
                Err(e) => {
                    tracing::warn!(duty = duty.name(), error = %e, "on-chain duty failed");
                    st.backoff
                        .entry(key)
                        .or_default()
                        .failed(now, self.inner.config.max_retry_interval);
                    first_err.get_or_insert(e);
                }
            }
        }
        self.drive(&mut st).await?;
        first_err.map_or(Ok(()), Err)
    }

    /// Takes on chain every ledger that has been among [`Party::stalled_removes`] for at least
    /// `patience` chain seconds (see [`NodeConfig::stalled_remove_patience`]).
    fn take_stalled_ledgers_on_chain(st: &mut State, now: u64, patience: u64) {
        let stalled = st.party.stalled_removes();
        st.stalled_since.retain(|l, _| stalled.contains(l));
        for ledger in stalled {
            let since = *st.stalled_since.entry(ledger).or_insert(now);
            if now.saturating_sub(since) < patience {
                continue;
            }
            match st.party.challenge_ledger(ledger) {
                Ok(()) => {
                    tracing::info!(%ledger, waited = now - since, "counterparty silent on a Remove: ledger taken on chain");
                    st.stalled_since.remove(&ledger);
                }
                Err(e) => tracing::warn!(%ledger, error = %e, "stalled ledger not taken on chain"),
            }
        }
    }

    /// Sends one duty unless the chain shows it landed or is moot.
    async fn execute(&self, st: &mut State, duty: &ChainAction) -> Result<(), NodeError> {
        let chain = &self.inner.chain;
        match duty {
            ChainAction::Deposit {
                asset, channel_id, ..
            } => {
                let Some((held, missing)) = checks::deposit_shortfall(chain.as_ref(), duty).await?
                else {
                    return Ok(());
                };
                if !asset.is_zero() && chain.allowance(*asset).await? < missing {
                    chain.approve(*asset, missing).await?;
                }
                tracing::info!(channel = %channel_id, amount = %missing, "deposit");
                if let Err(e) = chain.deposit(*asset, *channel_id, held, missing).await
                    && chain.holdings(*asset, *channel_id).await? < held.saturating_add(missing)
                {
                    return Err(e.into());
                }
            }
            ChainAction::Challenge {
                fixed, candidate, ..
            } => {
                let call = duty.send(chain.as_ref());
                self.register_turn(fixed, candidate, true, call).await?;
            }
            ChainAction::Checkpoint {
                fixed, candidate, ..
            } => {
                let call = duty.send(chain.as_ref());
                self.register_turn(fixed, candidate, false, call).await?;
            }
            ChainAction::Conclude { fixed, .. } => {
                let id = fixed.channel_id();
                if self.finalized(id).await? {
                    return Ok(());
                }
                tracing::info!(channel = %id, "conclude");
                if let Err(e) = duty.send(chain.as_ref()).await
                    && !self.finalized(id).await?
                {
                    return Err(e.into());
                }
            }
            ChainAction::ConcludeAndTransferAllAssets { fixed, candidate } => {
                let id = fixed.channel_id();
                let asset = checks::first_asset(&candidate.variable_part.outcome);
                let moot = |held: U256, fin: bool| held.is_zero() || fin;
                if moot(chain.holdings(asset, id).await?, self.finalized(id).await?) {
                    return Ok(());
                }
                tracing::info!(channel = %id, "concludeAndTransferAllAssets");
                if let Err(e) = duty.send(chain.as_ref()).await
                    && !moot(chain.holdings(asset, id).await?, self.finalized(id).await?)
                {
                    return Err(e.into());
                }
            }
            ChainAction::Reclaim(args) => {
                let source = args.source_channel_id;
                let Some(target) = reclaim_target(args) else {
                    return Ok(());
                };
                let expected =
                    fingerprint(args.source_state_hash, hash_outcome(&args.source_outcome));
                if chain.status(source).await?.fingerprint != expected {
                    // Someone reclaimed (or paid out) already: learn what happened.
                    return self.sync_reclaims(st, source).await;
                }
                tracing::info!(ledger = %source, channel = %target, "reclaim");
                match duty.send(chain.as_ref()).await {
                    Ok(_) => {
                        st.party.handle_reclaimed(source, target)?;
                    }
                    Err(e) => {
                        if chain.status(source).await?.fingerprint == expected {
                            return Err(e.into());
                        }
                        self.sync_reclaims(st, source).await?;
                    }
                }
            }
            ChainAction::TransferAllAssets { .. } => {
                checks::transfer_all_assets_once(chain.as_ref(), duty).await?;
            }
        }
        Ok(())
    }

    /// Sends `call` (not started yet), a `challenge` or a checkpoint of `candidate`, unless the
    /// chain shows its turn moot before; a failure counts only if the turn is still not moot.
    async fn register_turn(
        &self,
        fixed: &FixedPart,
        candidate: &SignedVariablePart,
        challenge: bool,
        call: impl Future<Output = Result<TxReceipt, ChainError>>,
    ) -> Result<(), NodeError> {
        let id = fixed.channel_id();
        let turn = candidate.variable_part.turn_num;
        if self.turn_is_moot(id, turn, challenge).await? {
            return Ok(());
        }
        let what = if challenge { "challenge" } else { "checkpoint" };
        tracing::info!(channel = %id, turn, "{what}");
        if let Err(e) = call.await
            && !self.turn_is_moot(id, turn, challenge).await?
        {
            return Err(e.into());
        }
        Ok(())
    }

    async fn finalized(&self, id: B256) -> Result<bool, NodeError> {
        Ok(checks::is_finalized(self.inner.chain.as_ref(), id).await?)
    }

    async fn turn_is_moot(&self, id: B256, turn: u64, challenge: bool) -> Result<bool, NodeError> {
        Ok(checks::turn_is_moot(self.inner.chain.as_ref(), id, turn, challenge).await?)
    }

    /// Brings `ledger`'s finalized outcome up to the chain's after reclaims we did not see
    /// sent: the set of our finalized virtual channels whose reclaim gives the on-chain
    /// fingerprint.
    async fn sync_reclaims(&self, st: &mut State, ledger: B256) -> Result<(), NodeError> {
        let Some(fin) = st
            .party
            .ledger(&ledger)
            .and_then(|l| l.chain().finalized.clone())
        else {
            return Ok(());
        };
        let on_chain = self.inner.chain.status(ledger).await?.fingerprint;
        let candidates: Vec<(B256, Outcome)> = fin
            .outcome
            .iter()
            .flat_map(|e| e.allocations.iter())
            .filter(|a| a.as_guarantee().is_some())
            .filter_map(|a| {
                let v = st.party.channel(&a.destination)?;
                Some((v.id(), v.chain().finalized.as_ref()?.outcome.clone()))
            })
            .collect();
        let found = matching_reclaims(&fin.outcome, fin.state_hash, &candidates, on_chain);
        for target in found {
            st.party.handle_reclaimed(ledger, target)?;
        }
        Ok(())
    }
}

/// The subset of `candidates` (virtual channel, its finalized outcome) whose reclaims turn
/// `outcome` into one with fingerprint `on_chain`; empty if none (or nothing changed).
fn matching_reclaims(
    outcome: &Outcome,
    state_hash: B256,
    candidates: &[(B256, Outcome)],
    on_chain: [u8; 20],
) -> Vec<B256> {
    if fingerprint(state_hash, hash_outcome(outcome)) == on_chain {
        return Vec::new();
    }
    // One reclaim since we last looked (the usual case), then any set among the first 12.
    for (target, t_out) in candidates {
        if let Ok((o, _)) = reclaim_effect(outcome, *target, t_out)
            && fingerprint(state_hash, hash_outcome(&o)) == on_chain
        {
            return vec![*target];
        }
    }
    let n = candidates.len().min(12);
    for mask in 1u32..(1u32 << n) {
        let mut o = outcome.clone();
        let mut ok = true;
        for (i, (target, t_out)) in candidates.iter().take(n).enumerate() {
            if mask & (1 << i) != 0 {
                match reclaim_effect(&o, *target, t_out) {
                    Ok((next, _)) => o = next,
                    Err(_) => {
                        ok = false;
                        break;
                    }
                }
            }
        }
        if ok && fingerprint(state_hash, hash_outcome(&o)) == on_chain {
            return (0..n)
                .filter(|i| mask & (1 << i) != 0)
                .map(|i| candidates[i].0)
                .collect();
        }
    }
    Vec::new()
}

/// The virtual channel a reclaim is for: the destination of the guarantee it names.
fn reclaim_target(args: &ReclaimArgs) -> Option<B256> {
    let exit = args
        .source_outcome
        .get(usize::try_from(args.source_asset_index).ok()?)?;
    let a = exit
        .allocations
        .get(usize::try_from(args.index_of_target_in_source).ok()?)?;
    a.as_guarantee().map(|_| a.destination)
}

/// A duty's identity for its backoff: its kind and channel (reclaims: ledger and target).
fn duty_key(d: &ChainAction) -> (u8, B256) {
    match d {
        ChainAction::Deposit { channel_id, .. } => (0, *channel_id),
        ChainAction::Challenge { fixed, .. } => (1, fixed.channel_id()),
        ChainAction::Checkpoint { fixed, .. } => (2, fixed.channel_id()),
        ChainAction::Conclude { fixed, .. } => (3, fixed.channel_id()),
        ChainAction::ConcludeAndTransferAllAssets { fixed, .. } => (4, fixed.channel_id()),
        ChainAction::Reclaim(args) => {
            let target = reclaim_target(args).unwrap_or_default();
            (
                5,
                keccak256([args.source_channel_id.as_slice(), target.as_slice()].concat()),
            )
        }
        ChainAction::TransferAllAssets { channel_id, .. } => (6, *channel_id),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Allocation, Guarantee, address_to_destination, two_party_outcome};

    fn u(n: u64) -> U256 {
        U256::from(n)
    }

    #[test]
    fn reclaims_are_identified_by_the_on_chain_fingerprint() {
        let (a, b) = (Address::repeat_byte(1), Address::repeat_byte(2));
        let (v1, v2, v3) = (
            B256::repeat_byte(0x11),
            B256::repeat_byte(0x22),
            B256::repeat_byte(0x33),
        );
        let g = Guarantee {
            left: address_to_destination(a),
            right: address_to_destination(b),
        };
        let mut ledger = two_party_outcome(Address::ZERO, a, u(1_000), b, u(0));
        for (v, amount) in [(v1, 100), (v2, 50), (v3, 30)] {
            ledger[0]
                .allocations
                .push(Allocation::guarantee(v, u(amount), g));
        }
        let pays = |amount: u64, paid: u64| {
            two_party_outcome(Address::ZERO, a, u(amount - paid), b, u(paid))
        };
        let candidates = vec![(v1, pays(100, 40)), (v2, pays(50, 50)), (v3, pays(30, 0))];
        let state_hash = B256::repeat_byte(0xee);
        let after = |vs: &[usize]| {
            let mut o = ledger.clone();
            for i in vs {
                o = reclaim_effect(&o, candidates[*i].0, &candidates[*i].1)
                    .unwrap()
                    .0;
            }
            fingerprint(state_hash, hash_outcome(&o))
        };
        let found = |fp| matching_reclaims(&ledger, state_hash, &candidates, fp);
        assert_eq!(found(after(&[])), Vec::<B256>::new(), "nothing changed");
        assert_eq!(found(after(&[1])), vec![v2]);
        assert_eq!(found(after(&[2, 0])), vec![v1, v3], "order does not matter");
        assert_eq!(found(after(&[0, 1, 2])), vec![v1, v2, v3]);
        assert_eq!(
            found([7u8; 20]),
            Vec::<B256>::new(),
            "unknown: nothing applied"
        );
    }

    #[test]
    fn store_keys_differ() {
        assert_ne!(PARTY_RECORD, CURSOR_RECORD);
    }
}
