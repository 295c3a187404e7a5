//! [`Party`]: one participant's ledgers and virtual channels together — message routing,
//! the ledger updates its objectives want, hub limits, the on-chain exit, one snapshot.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use alloy_primitives::{Address, B256, U256};
use derive_setters::Setters;
use serde::{Deserialize, Serialize};

use super::error::{Rejection, VirtualError, VirtualPeerError, VirtualUsageError};
use super::{
    Side, VirtualBody, VirtualChannel, VirtualEvent, VirtualMessage, VirtualOutput, VirtualParams,
    VirtualRole,
};
use crate::chain::{ChainAction, ChainEvent};
use crate::ledger::{
    Ledger, LedgerBody, LedgerError, LedgerEvent, LedgerMessage, LedgerOutput, LedgerPhase,
    LedgerRole, LedgerUsageError, Proposal,
};
use crate::sign::Signer;
use crate::state::FixedPart;
use crate::voucher::Voucher;

type Result<T, E = VirtualError> = std::result::Result<T, E>;

/// A hub's limits, checked before it locks its own money.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HubLimits {
    /// Largest `a0` per virtual channel.
    pub max_amount: U256,
    /// Most the hub locks in guarantees in one ledger with a payee.
    pub max_locked_per_ledger: U256,
    /// Smallest fee accepted.
    pub min_fee: U256,
}

/// A party's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Setters)]
#[setters(prefix = "with_")]
#[non_exhaustive]
pub struct PartyConfig {
    /// The deployed `ConsensusApp` (ledgers).
    pub consensus_app: Address,
    /// The deployed `PaymentApp` (virtual channels).
    pub payment_app: Address,
    /// Set when we act as a hub.
    pub hub: Option<HubLimits>,
}

impl PartyConfig {
    /// A party on these contracts that does not act as a hub.
    pub fn new(consensus_app: Address, payment_app: Address) -> Self {
        Self {
            consensus_app,
            payment_app,
            hub: None,
        }
    }
}

/// What a message carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Payload {
    /// About a ledger.
    Ledger(LedgerMessage),
    /// About a virtual channel.
    Virtual(VirtualMessage),
}

/// A message between parties. `from` is not authenticated: every signature inside is checked
/// against the participant it claims to be.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Sender.
    pub from: Address,
    /// Recipient.
    pub to: Address,
    /// Content.
    pub payload: Payload,
}

/// Something the application should know.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PartyEvent {
    /// From a ledger.
    Ledger {
        /// The ledger.
        ledger_id: B256,
        /// The event.
        event: LedgerEvent,
    },
    /// From a virtual channel.
    Virtual {
        /// The channel.
        channel_id: B256,
        /// The event.
        event: VirtualEvent,
    },
}

#[derive(Debug, Default)]
struct Outputs {
    envelopes: VecDeque<Envelope>,
    events: VecDeque<PartyEvent>,
}

const SNAPSHOT_VERSION: u8 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct PartyState {
    version: u8,
    me: Address,
    config: PartyConfig,
    ledgers: BTreeMap<B256, Ledger>,
    channels: BTreeMap<B256, VirtualChannel>,
    /// Ledgers we were asked to take on chain ([`Party::challenge_ledger`],
    /// [`Party::challenge_virtual`]): [`tick`] challenges them when their guarantees allow, even
    /// for a virtual channel whose final state is signed by all.
    #[serde(default)]
    exits: BTreeSet<B256>,
}

/// One participant (payer, hub or payee) with its ledgers and virtual channels.
///
/// # Calling contract
/// * Inputs: [`Party::handle_envelope`], [`Party::handle_chain_event`], [`Party::handle_timeout`],
///   [`Party::handle_reclaimed`]; commands: [`Party::open_ledger`], [`Party::propose_virtual`],
///   [`Party::pay`], [`Party::close_virtual`], [`Party::request_final`], [`Party::close_ledger`],
///   [`Party::challenge_virtual`], [`Party::resend`].
/// * After each: [`Party::poll_persist`] → store it → [`Party::handle_persisted`]; only then
///   do [`Party::poll_envelope`] and [`Party::poll_event`] release what the call produced
///   (persist before act). [`Party::chain_duties`] names the transactions owed, from the
///   persisted state.
/// * Every input is atomic: `Err` leaves the party unchanged and queues nothing.
pub struct Party {
    signer: Arc<dyn Signer>,
    st: PartyState,
    staged: Outputs,
    ready: Outputs,
    dirty: bool,
}

impl std::fmt::Debug for Party {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Party")
            .field("me", &self.st.me)
            .field("ledgers", &self.st.ledgers.len())
            .field("channels", &self.st.channels.len())
            .finish_non_exhaustive()
    }
}

impl Party {
    /// A party without ledgers or channels.
    pub fn new(signer: Arc<dyn Signer>, config: PartyConfig) -> Self {
        let st = PartyState {
            version: SNAPSHOT_VERSION,
            me: signer.address(),
            config,
            ledgers: BTreeMap::new(),
            channels: BTreeMap::new(),
            exits: BTreeSet::new(),
        };
        Self {
            signer,
            st,
            staged: Outputs::default(),
            ready: Outputs::default(),
            dirty: false,
        }
    }

    /// The durable state (JSON).
    pub fn snapshot(&self) -> Vec<u8> {
        serde_json::to_vec(&self.st).expect("party serialization is infallible")
    }

    /// Restores [`Party::snapshot`]. Nothing is queued: call [`Party::resend`].
    pub fn restore(signer: Arc<dyn Signer>, bytes: &[u8]) -> Result<Self> {
        let st: PartyState = serde_json::from_slice(bytes)
            .map_err(|e| VirtualUsageError::CorruptSnapshot(e.to_string()))?;
        if st.version != SNAPSHOT_VERSION || st.me != signer.address() {
            return Err(VirtualUsageError::CorruptSnapshot("version or signer".into()).into());
        }
        Ok(Self {
            signer,
            st,
            staged: Outputs::default(),
            ready: Outputs::default(),
            dirty: false,
        })
    }

    /// Our address.
    pub fn address(&self) -> Address {
        self.st.me
    }

    /// A ledger.
    pub fn ledger(&self, id: &B256) -> Option<&Ledger> {
        self.st.ledgers.get(id)
    }

    /// A virtual channel.
    pub fn channel(&self, id: &B256) -> Option<&VirtualChannel> {
        self.st.channels.get(id)
    }

    /// All ledgers.
    pub fn ledgers(&self) -> impl Iterator<Item = &Ledger> {
        self.st.ledgers.values()
    }

    /// All virtual channels.
    pub fn channels(&self) -> impl Iterator<Item = &VirtualChannel> {
        self.st.channels.values()
    }

    // ----- persistence and outputs ------------------------------------------------------------

    /// The snapshot to store before outputs are released, if anything changed.
    pub fn poll_persist(&self) -> Option<Vec<u8>> {
        self.dirty.then(|| self.snapshot())
    }

    /// The last [`Party::poll_persist`] is durable: releases the outputs it covers.
    pub fn handle_persisted(&mut self) {
        self.dirty = false;
        self.ready.envelopes.append(&mut self.staged.envelopes);
        self.ready.events.append(&mut self.staged.events);
    }

    /// The next message to send (only after its state is persisted).
    pub fn poll_envelope(&mut self) -> Option<Envelope> {
        self.ready.envelopes.pop_front()
    }

    /// The next event (only after its state is persisted).
    pub fn poll_event(&mut self) -> Option<PartyEvent> {
        self.ready.events.pop_front()
    }

    fn transact<T>(
        &mut self,
        f: impl FnOnce(&mut PartyState, &dyn Signer) -> Result<T>,
    ) -> Result<T> {
        let mut next = self.st.clone();
        let signer: &dyn Signer = &*self.signer;
        let value = f(&mut next, signer)?;
        let mut out = Outputs::default();
        drive(&mut next, signer, &mut out)?;
        if next != self.st || !out.envelopes.is_empty() || !out.events.is_empty() {
            self.dirty = true;
        }
        self.st = next;
        self.staged.envelopes.append(&mut out.envelopes);
        self.staged.events.append(&mut out.events);
        Ok(value)
    }

    // ----- commands ---------------------------------------------------------------------------

    /// Opens a ledger with `counterparty` where we lead and deposit `deposit`.
    pub fn open_ledger(
        &mut self,
        counterparty: Address,
        channel_nonce: u64,
        challenge_duration: u64,
        asset: Address,
        deposit: U256,
    ) -> Result<B256> {
        self.transact(|st, signer| {
            let fixed = FixedPart {
                participants: vec![st.me, counterparty],
                channel_nonce,
                app_definition: st.config.consensus_app,
                challenge_duration,
            };
            let l = Ledger::open(signer, fixed, asset, deposit)?;
            let id = l.id();
            if st.ledgers.contains_key(&id) {
                return Err(VirtualUsageError::InvalidParams("ledger exists").into());
            }
            st.ledgers.insert(id, l);
            Ok(id)
        })
    }

    /// Payer: proposes a virtual channel to `params.payee` through our ledger with `params.hub`.
    pub fn propose_virtual(&mut self, params: &VirtualParams) -> Result<B256> {
        self.transact(|st, signer| {
            let lid = find_ledger(st, params.hub, LedgerRole::Leader)
                .ok_or(VirtualUsageError::NoLedger(params.hub))?;
            let l = &st.ledgers[&lid];
            if l.asset() != params.asset {
                return Err(
                    VirtualUsageError::InvalidParams("asset differs from the ledger's").into(),
                );
            }
            let needed = params.amount.saturating_add(params.fee);
            let pending = pending_locks(st, lid, Side::PayerSide);
            if l.free_balance().saturating_sub(pending) < needed {
                return Err(VirtualUsageError::InvalidParams(
                    "not enough free balance in the ledger",
                )
                .into());
            }
            let v = VirtualChannel::propose(signer, params, lid)?;
            let id = v.id();
            if st.channels.contains_key(&id) {
                return Err(VirtualUsageError::InvalidParams("channel exists").into());
            }
            st.channels.insert(id, v);
            Ok(id)
        })
    }

    /// Payer: pays `delta` more through `channel`.
    pub fn pay(&mut self, channel: B256, delta: U256) -> Result<Voucher> {
        self.transact(|st, signer| channel_mut(st, channel)?.pay(signer, delta))
    }

    /// Payer: signs and sends the final state.
    pub fn close_virtual(&mut self, channel: B256) -> Result<()> {
        self.transact(|st, signer| channel_mut(st, channel)?.close(signer))
    }

    /// Hub or payee: asks the payer for the final state.
    pub fn request_final(&mut self, channel: B256) -> Result<()> {
        self.transact(|st, _| channel_mut(st, channel)?.request_final())
    }

    /// Signs the final state of a ledger without guarantees.
    pub fn close_ledger(&mut self, ledger: B256) -> Result<()> {
        self.transact(|st, signer| Ok(ledger_mut(st, ledger)?.close(signer)?))
    }

    /// Takes a virtual channel on chain: V's challenge first, then our ledgers that hold its
    /// guarantee. Without a final state signed by all they follow once they would finalize no
    /// earlier than V (see [`Party::handle_timeout`]); with one, V is concluded at once, so they
    /// are challenged at once (a ledger whose partner is honest would rather remove the
    /// guarantee off chain: challenge V only when that partner is silent too).
    pub fn challenge_virtual(&mut self, channel: B256) -> Result<()> {
        self.transact(|st, _| {
            let v = channel_mut(st, channel)?;
            v.request_challenge()?;
            let now = v.removable_off_chain();
            for lid in v.ledgers().into_iter().flatten() {
                st.exits.insert(lid);
                if now {
                    request_ledger_challenge(st, lid, channel)?;
                }
            }
            Ok(())
        })
    }

    /// Takes a ledger on chain (its counterparty stopped answering, e.g. while closing): every
    /// virtual channel whose guarantee the ledger holds is challenged first, and the ledger
    /// follows once it would finalize no earlier than them (§0.4, see
    /// [`Party::handle_timeout`]), or at once when each of them has a final state signed by
    /// all (they are concluded at once); a ledger without guarantees is challenged at once with
    /// the latest state signed by both. Our other ledgers holding those channels are not taken
    /// on chain when the channel's final state is signed by all: there the guarantee is removed
    /// off chain with the final amounts (hub and payee after a silent payer).
    pub fn challenge_ledger(&mut self, ledger: B256) -> Result<()> {
        self.transact(|st, _| {
            let l = st
                .ledgers
                .get(&ledger)
                .ok_or(VirtualUsageError::Unknown(ledger))?;
            let held: Vec<B256> = l
                .countersigned()
                .map(|c| c.guarantees.keys().copied().collect())
                .unwrap_or_default();
            if held.is_empty() {
                return Ok(ledger_mut(st, ledger)?.request_challenge()?);
            }
            st.exits.insert(ledger);
            let mut all_final = true;
            for v in &held {
                let c = channel_mut(st, *v)?;
                if !c.disputed() {
                    c.request_challenge()?;
                }
                all_final &= c.removable_off_chain();
            }
            if all_final {
                request_ledger_challenge(st, ledger, held[0])?;
            }
            Ok(())
        })
    }

    /// Our ledgers, off chain, where a virtual channel's final state is signed by all but its
    /// guarantee is still in the latest state signed by both (V on chain or not): the Remove
    /// waits for the ledger's counterparty. Normal for a round trip; a driver resends
    /// ([`Party::resend`]), and when that counterparty stays silent it takes the ledger on
    /// chain ([`Party::challenge_ledger`]): V is concluded with the final state and the
    /// guarantee reclaimed, so nobody ends with less than the final amounts (the hub after a
    /// silent payer, the payer or the payee after a silent hub).
    pub fn stalled_removes(&self) -> Vec<B256> {
        let mut out: Vec<B256> = self
            .st
            .channels
            .values()
            .filter(|v| v.removable_off_chain())
            .flat_map(|v| {
                v.ledgers().into_iter().flatten().filter(|lid| {
                    self.st.ledgers.get(lid).is_some_and(|l| {
                        let off_chain = l.chain().challenge.is_none()
                            && l.chain().finalized.is_none()
                            && !l.chain().challenge_requested;
                        off_chain
                            && l.countersigned()
                                .is_some_and(|c| c.guarantees.contains_key(&v.id()))
                    })
                })
            })
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// Re-queues every message our state implies (after a restore, or periodically while
    /// something waits for a peer).
    pub fn resend(&mut self) {
        let signer = self.signer.clone();
        let _ = self.transact(|st, _| {
            for l in st.ledgers.values_mut() {
                l.resend();
            }
            for v in st.channels.values_mut() {
                v.resend();
            }
            Ok(())
        });
        drop(signer);
    }

    // ----- inputs -----------------------------------------------------------------------------

    /// A message from a peer.
    pub fn handle_envelope(&mut self, env: &Envelope) -> Result<()> {
        if env.to != self.st.me || env.from == self.st.me {
            return Err(VirtualPeerError::NotParticipant(env.from).into());
        }
        self.transact(|st, signer| {
            match &env.payload {
                Payload::Ledger(m) => {
                    if let Some(l) = st.ledgers.get_mut(&m.ledger_id) {
                        l.handle_message(signer, env.from, m)?;
                    } else if matches!(m.body, LedgerBody::Open { .. }) {
                        let l = Ledger::accept_open(signer, st.config.consensus_app, env.from, m)?;
                        st.ledgers.insert(l.id(), l);
                    } else {
                        return Err(VirtualPeerError::UnknownChannel(m.ledger_id).into());
                    }
                }
                Payload::Virtual(m) => {
                    if let Some(v) = st.channels.get_mut(&m.channel_id) {
                        v.handle_message(signer, env.from, m)?;
                    } else if matches!(m.body, VirtualBody::Propose { .. }) {
                        accept_virtual(st, signer, env.from, m)?;
                    } else {
                        return Err(VirtualPeerError::UnknownChannel(m.channel_id).into());
                    }
                }
            }
            Ok(())
        })
    }

    /// An adjudicator event (in chain order) at chain time `now`. Events about channels we do not
    /// know are ignored.
    pub fn handle_chain_event(&mut self, now: u64, ev: &ChainEvent) -> Result<()> {
        self.transact(|st, signer| {
            let id = ev.channel_id();
            if let Some(l) = st.ledgers.get_mut(&id) {
                l.handle_chain_event(signer, now, ev)?;
            } else if let Some(v) = st.channels.get_mut(&id) {
                v.handle_chain_event(now, ev)?;
            }
            tick(st, now)
        })
    }

    /// Chain time passed: challenges finalize; ledgers holding the guarantee of a virtual channel
    /// on chain get challenged once they would finalize no earlier than it (§0.4).
    pub fn handle_timeout(&mut self, now: u64) {
        let _ = self.transact(|st, _| {
            for l in st.ledgers.values_mut() {
                l.handle_timeout(now);
            }
            for v in st.channels.values_mut() {
                v.handle_timeout(now);
            }
            tick(st, now)
        });
    }

    /// `reclaim` of `channel`'s guarantee in `ledger` happened on chain.
    pub fn handle_reclaimed(&mut self, ledger: B256, channel: B256) -> Result<()> {
        self.transact(|st, _| {
            let outcome = st
                .channels
                .get(&channel)
                .and_then(|v| v.chain().finalized.as_ref())
                .map(|f| f.outcome.clone())
                .ok_or(VirtualUsageError::Unknown(channel))?;
            Ok(ledger_mut(st, ledger)?.apply_reclaim(channel, &outcome)?)
        })
    }

    /// Every transaction owed now: virtual channels' challenges or concludes first, then the
    /// ledgers' duties, then `reclaim`s (V and the ledger both final).
    pub fn chain_duties(&self, now: u64) -> Result<Vec<ChainAction>> {
        let signer: &dyn Signer = &*self.signer;
        let mut duties = Vec::new();
        for v in self.st.channels.values() {
            duties.extend(v.chain_duties(signer, now)?);
        }
        for l in self.st.ledgers.values() {
            duties.extend(l.chain_duties(signer, now)?);
        }
        for v in self.st.channels.values() {
            let Some(vf) = &v.chain().finalized else {
                continue;
            };
            for lid in v.ledgers().into_iter().flatten() {
                if let Some(args) = self
                    .st
                    .ledgers
                    .get(&lid)
                    .and_then(|l| l.reclaim_args(v.id(), vf.state_hash, &vf.outcome))
                {
                    duties.push(ChainAction::Reclaim(args));
                }
            }
        }
        Ok(duties)
    }

    /// When [`Party::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Option<u64> {
        let l = self.st.ledgers.values().filter_map(Ledger::poll_timeout);
        let v = self.st.channels.values().filter_map(|v| {
            (v.chain().finalized.is_none())
                .then(|| v.chain().challenge.as_ref().map(|c| c.finalizes_at))
                .flatten()
        });
        l.chain(v).min()
    }
}

fn channel_mut(st: &mut PartyState, id: B256) -> Result<&mut VirtualChannel> {
    st.channels
        .get_mut(&id)
        .ok_or_else(|| VirtualUsageError::Unknown(id).into())
}

fn ledger_mut(st: &mut PartyState, id: B256) -> Result<&mut Ledger> {
    st.ledgers
        .get_mut(&id)
        .ok_or_else(|| VirtualUsageError::Unknown(id).into())
}

/// An open ledger with `counterparty` where we have `role`.
fn find_ledger(st: &PartyState, counterparty: Address, role: LedgerRole) -> Option<B256> {
    st.ledgers
        .values()
        .find(|l| {
            l.counterparty() == counterparty
                && l.role() == role
                && l.phase() == LedgerPhase::Open
                && l.chain().challenge.is_none()
                && l.chain().finalized.is_none()
        })
        .map(Ledger::id)
}

/// What virtual channels accepted but not yet guaranteed will take from our balance in `lid`,
/// beyond the ledger's latest proposed state: [`Ledger::free_balance`] and the locked total are
/// that state's, so a lock whose Add is already queued there is taken from them once and not
/// counted here again.
fn pending_locks(st: &PartyState, lid: B256, side: Side) -> U256 {
    let proposed = st
        .ledgers
        .get(&lid)
        .and_then(Ledger::latest_proposed)
        .map(|v| &v.guarantees);
    st.channels
        .values()
        .filter(|v| {
            v.ledgers()[side.index()] == Some(lid)
                && !v.is_guaranteed(side)
                && !v.disputed()
                && !proposed.is_some_and(|g| g.contains_key(&v.id()))
        })
        .fold(U256::ZERO, |t, v| {
            let fee = if side == Side::PayerSide {
                v.fee()
            } else {
                U256::ZERO
            };
            t.saturating_add(v.amount()).saturating_add(fee)
        })
}

fn accept_virtual(
    st: &mut PartyState,
    signer: &dyn Signer,
    from: Address,
    m: &VirtualMessage,
) -> Result<()> {
    let VirtualBody::Propose {
        fixed, amount, fee, ..
    } = &m.body
    else {
        return Err(VirtualPeerError::UnknownChannel(m.channel_id).into());
    };
    let p = &fixed.participants;
    if p.len() != 3 || p[0] != from {
        return Err(VirtualPeerError::InvalidProposal("not proposed by its payer").into());
    }
    let ledgers = match p.iter().position(|a| *a == st.me) {
        Some(1) => {
            let limits = st
                .config
                .hub
                .clone()
                .ok_or(VirtualPeerError::InvalidProposal("we are not a hub"))?;
            let payer_side =
                find_ledger(st, p[0], LedgerRole::Follower).ok_or(Rejection::NoLedger(p[0]))?;
            let payee_side =
                find_ledger(st, p[2], LedgerRole::Leader).ok_or(Rejection::NoLedger(p[2]))?;
            if *amount > limits.max_amount {
                return Err(Rejection::AmountTooLarge {
                    max: limits.max_amount,
                    got: *amount,
                }
                .into());
            }
            if *fee < limits.min_fee {
                return Err(Rejection::FeeTooLow {
                    min: limits.min_fee,
                    got: *fee,
                }
                .into());
            }
            let available = hub_capacity(st, payee_side, &limits);
            if *amount > available {
                return Err(Rejection::Capital {
                    ledger: payee_side,
                    needed: *amount,
                    available,
                }
                .into());
            }
            [Some(payer_side), Some(payee_side)]
        }
        Some(2) => {
            let payee_side =
                find_ledger(st, p[1], LedgerRole::Follower).ok_or(Rejection::NoLedger(p[1]))?;
            [None, Some(payee_side)]
        }
        _ => {
            return Err(
                VirtualPeerError::InvalidProposal("we are not the hub or the payee").into(),
            );
        }
    };
    let v = VirtualChannel::accept(signer, st.config.payment_app, m, ledgers)?;
    st.channels.insert(v.id(), v);
    Ok(())
}

/// What the hub may still lock in `lid`: its free balance and its cap, minus what accepted
/// channels will lock there.
fn hub_capacity(st: &PartyState, lid: B256, limits: &HubLimits) -> U256 {
    let Some(l) = st.ledgers.get(&lid) else {
        return U256::ZERO;
    };
    let pending = pending_locks(st, lid, Side::PayeeSide);
    let locked = l.latest_proposed().map(|v| v.locked()).unwrap_or_default();
    let free = l.free_balance().saturating_sub(pending);
    let cap = limits
        .max_locked_per_ledger
        .saturating_sub(locked)
        .saturating_sub(pending);
    free.min(cap)
}

/// Requests the challenge of `lid` if it holds the countersigned guarantee of `channel` and is
/// not on chain yet.
fn request_ledger_challenge(st: &mut PartyState, lid: B256, channel: B256) -> Result<()> {
    let l = ledger_mut(st, lid)?;
    let holds = l
        .countersigned()
        .is_some_and(|c| c.guarantees.contains_key(&channel));
    let idle = l.chain().challenge.is_none()
        && l.chain().finalized.is_none()
        && !l.chain().challenge_requested;
    if holds && idle {
        l.request_challenge()?;
    }
    Ok(())
}

/// §0.4 timing: a ledger holding the countersigned guarantee of a V on chain is challenged once
/// it would finalize no earlier than V (or at once when V is final). Not when V's final state
/// is signed by all ([`VirtualChannel::removable_off_chain`]): that guarantee is removed off
/// chain with the final amounts, and the ledger goes on chain only when asked
/// ([`Party::challenge_ledger`], [`Party::challenge_virtual`]).
fn tick(st: &mut PartyState, now: u64) -> Result<()> {
    let mut requests = Vec::new();
    for v in st.channels.values() {
        let cooperative = v.removable_off_chain();
        let v_final_at = match (&v.chain().finalized, &v.chain().challenge) {
            (Some(f), _) => Some(f.at),
            (None, Some(c)) => Some(c.finalizes_at),
            _ => None,
        };
        let Some(at) = v_final_at else { continue };
        for lid in v.ledgers().into_iter().flatten() {
            if cooperative && !st.exits.contains(&lid) {
                continue;
            }
            let Some(l) = st.ledgers.get(&lid) else {
                continue;
            };
            let holds = l
                .countersigned()
                .is_some_and(|c| c.guarantees.contains_key(&v.id()));
            let idle = l.chain().challenge.is_none()
                && l.chain().finalized.is_none()
                && !l.chain().challenge_requested;
            if holds && idle && now.saturating_add(l.fixed_part().challenge_duration) >= at {
                requests.push(lid);
            }
        }
    }
    for lid in requests {
        ledger_mut(st, lid)?.request_challenge()?;
    }
    // The converse: a ledger challenged on chain (by anyone) in a state that holds V's
    // guarantee, which our own latest state also holds (no checkpoint clears it), can only pay
    // out after a `reclaim`, which needs V finalized: V goes on chain too (concluded at once
    // when its final state is signed by all).
    let mut disputes = Vec::new();
    for l in st.ledgers.values() {
        let Some(c) = &l.chain().challenge else {
            continue;
        };
        let ours = l.countersigned().map(|v| &v.guarantees);
        for a in c.candidate.outcome.iter().flat_map(|e| &e.allocations) {
            if a.as_guarantee().is_some() && ours.is_some_and(|g| g.contains_key(&a.destination)) {
                disputes.push(a.destination);
            }
        }
    }
    for v in disputes {
        if let Some(c) = st.channels.get_mut(&v)
            && !c.disputed()
        {
            // A guarantee countersigned in our ledger implies V's prefund signed by all, which
            // is all a challenge needs; should it fail, the chain event must still be recorded.
            let _ = c.request_challenge();
        }
    }
    Ok(())
}

/// Runs the objectives' ledger wants until nothing moves, and collects every output.
fn drive(st: &mut PartyState, signer: &dyn Signer, out: &mut Outputs) -> Result<()> {
    for _ in 0..256 {
        let mut progressed = false;
        let wants: Vec<(VirtualRole, B256, Proposal)> = st
            .channels
            .values()
            .flat_map(|v| {
                v.ledger_wants()
                    .into_iter()
                    .map(move |(l, p)| (v.role(), l, p))
            })
            .collect();
        let hub = st.config.hub.clone();
        for (role, lid, p) in wants {
            let capacity = match (&hub, role, &p) {
                (Some(limits), VirtualRole::Hub, Proposal::Add { .. }) => {
                    Some(hub_capacity_now(st, lid, limits))
                }
                _ => None,
            };
            let Some(l) = st.ledgers.get_mut(&lid) else {
                continue;
            };
            if l.phase() != LedgerPhase::Open || l.chain().finalized.is_some() {
                continue;
            }
            match l.role() {
                LedgerRole::Leader => {
                    let Some(latest) = l.latest_proposed() else {
                        continue;
                    };
                    let present = latest.guarantees.contains_key(&p.target());
                    let needed = match p {
                        Proposal::Add { amount, .. } => {
                            !present && capacity.is_none_or(|c| amount <= c)
                        }
                        Proposal::Remove { .. } => present,
                    };
                    if needed {
                        match l.propose(signer, p) {
                            Ok(_) => progressed = true,
                            // Our own balance does not allow it: the objective waits.
                            Err(LedgerError::Usage(LedgerUsageError::InvalidProposal(_))) => {}
                            Err(e) => return Err(e.into()),
                        }
                    }
                }
                LedgerRole::Follower => progressed |= l.countersign_next(signer, &p)?,
            }
        }
        for v in st.channels.values_mut() {
            for lid in v.ledgers().into_iter().flatten() {
                if let Some(vars) = st.ledgers.get(&lid).and_then(Ledger::countersigned) {
                    v.observe_ledger(signer, lid, vars)?;
                }
            }
        }
        progressed |= collect(st, out);
        if !progressed {
            return Ok(());
        }
    }
    Ok(())
}

/// The hub's capacity in `lid` for a proposal being made now (the proposing channel is no
/// longer pending once proposed, so only the ledger's latest state and cap count).
fn hub_capacity_now(st: &PartyState, lid: B256, limits: &HubLimits) -> U256 {
    let Some(l) = st.ledgers.get(&lid) else {
        return U256::ZERO;
    };
    let locked = l.latest_proposed().map(|v| v.locked()).unwrap_or_default();
    l.free_balance()
        .min(limits.max_locked_per_ledger.saturating_sub(locked))
}

fn collect(st: &mut PartyState, out: &mut Outputs) -> bool {
    let mut any = false;
    let me = st.me;
    for l in st.ledgers.values_mut() {
        let id = l.id();
        let to = l.counterparty();
        while let Some(o) = l.poll_output() {
            any = true;
            match o {
                LedgerOutput::Send(m) => out.envelopes.push_back(Envelope {
                    from: me,
                    to,
                    payload: Payload::Ledger(m),
                }),
                LedgerOutput::Event(event) => out.events.push_back(PartyEvent::Ledger {
                    ledger_id: id,
                    event,
                }),
            }
        }
    }
    for v in st.channels.values_mut() {
        let id = v.id();
        while let Some(o) = v.poll_output() {
            any = true;
            match o {
                VirtualOutput::Send { to, msg } => out.envelopes.push_back(Envelope {
                    from: me,
                    to,
                    payload: Payload::Virtual(msg),
                }),
                VirtualOutput::Event(event) => out.events.push_back(PartyEvent::Virtual {
                    channel_id: id,
                    event,
                }),
            }
        }
    }
    any
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sign::LocalSigner;

    const CONSENSUS_APP: Address = Address::repeat_byte(0xc0);
    const PAYMENT_APP: Address = Address::repeat_byte(0xa9);

    fn party(hub: Option<HubLimits>) -> Party {
        Party::new(
            Arc::new(LocalSigner::random()),
            PartyConfig {
                consensus_app: CONSENSUS_APP,
                payment_app: PAYMENT_APP,
                hub,
            },
        )
    }

    /// Delivers messages between `ps` until none is left, except those `hold` keeps back;
    /// deposit duties are applied as the contract would. Returns what was held.
    fn run(ps: &mut [Party], hold: &dyn Fn(&Envelope) -> bool) -> Vec<Envelope> {
        let mut held = Vec::new();
        let mut holdings: BTreeMap<B256, U256> = BTreeMap::new();
        for _ in 0..50 {
            let mut inflight = Vec::new();
            let mut deposits = Vec::new();
            for p in ps.iter_mut() {
                if p.poll_persist().is_some() {
                    p.handle_persisted();
                }
                while let Some(e) = p.poll_envelope() {
                    inflight.push(e);
                }
                while p.poll_event().is_some() {}
                for d in p.chain_duties(1_000).unwrap() {
                    if let ChainAction::Deposit {
                        channel_id,
                        expected_held,
                        amount,
                        ..
                    } = d
                    {
                        let h = holdings.entry(channel_id).or_default();
                        if *h == expected_held {
                            *h += amount;
                            deposits.push((channel_id, *h));
                        }
                    }
                }
            }
            if inflight.is_empty() && deposits.is_empty() {
                return held;
            }
            for (channel_id, holdings) in deposits {
                let ev = ChainEvent::Deposited {
                    channel_id,
                    asset: Address::ZERO,
                    holdings,
                };
                for p in ps.iter_mut() {
                    if p.ledger(&channel_id).is_some() {
                        p.handle_chain_event(1_000, &ev).unwrap();
                    }
                }
            }
            for e in inflight {
                if hold(&e) {
                    held.push(e);
                    continue;
                }
                let to = ps.iter_mut().find(|p| p.address() == e.to).unwrap();
                to.handle_envelope(&e).unwrap();
            }
        }
        panic!("messages do not settle");
    }

    #[test]
    fn propose_virtual_counts_a_queued_lock_once() {
        let limits = HubLimits {
            max_amount: U256::from(1_000),
            max_locked_per_ledger: U256::from(1_000),
            min_fee: U256::ZERO,
        };
        let mut ps = [party(None), party(Some(limits)), party(None)];
        let [payer, hub, payee] = [0, 1, 2].map(|i| ps[i].address());
        let lid = ps[0]
            .open_ledger(hub, 1, 100, Address::ZERO, U256::from(100))
            .unwrap();
        ps[1]
            .open_ledger(payee, 2, 100, Address::ZERO, U256::from(500))
            .unwrap();
        run(&mut ps, &|_| false);
        assert_eq!(ps[0].ledger(&lid).unwrap().phase(), LedgerPhase::Open);
        let params = |nonce, amount| native_params(hub, payee, nonce, amount);
        // V1 locks 40: its Add reaches the ledger's queue, the hub's countersignature is held.
        ps[0].propose_virtual(&params(10, 40)).unwrap();
        let held = run(&mut ps, &|e| {
            e.from == payer && e.to == hub && matches!(e.payload, Payload::Ledger(_))
        });
        assert!(!held.is_empty());
        let ledger = ps[0].ledger(&lid).unwrap();
        assert_eq!(ledger.pending().count(), 1);
        assert_eq!(ledger.free_balance(), U256::from(60));
        // 60 are free: more is refused, 50 is accepted (it was refused while the queued lock
        // was subtracted a second time: 60 - 40 < 50).
        assert!(ps[0].propose_virtual(&params(11, 61)).is_err());
        ps[0].propose_virtual(&params(12, 50)).unwrap();
        // V2 (50, not in the ledger yet) still counts: 10 are left.
        assert!(ps[0].propose_virtual(&params(13, 11)).is_err());
        ps[0].propose_virtual(&params(14, 10)).unwrap();
    }

    /// V `[_, hub, payee]` in the native coin for `amount`, no fee, challenge duration 100.
    fn native_params(hub: Address, payee: Address, nonce: u64, amount: u64) -> VirtualParams {
        VirtualParams {
            hub,
            payee,
            channel_nonce: nonce,
            app_definition: PAYMENT_APP,
            challenge_duration: 100,
            asset: Address::ZERO,
            amount: U256::from(amount),
            fee: U256::ZERO,
        }
    }

    #[test]
    fn hub_capacity_counts_a_queued_lock_once() {
        let limits = HubLimits {
            max_amount: U256::from(1_000),
            max_locked_per_ledger: U256::from(450),
            min_fee: U256::ZERO,
        };
        let mut ps = [party(None), party(Some(limits.clone())), party(None)];
        let [payer, hub, payee] = [0, 1, 2].map(|i| ps[i].address());
        ps[0]
            .open_ledger(hub, 1, 100, Address::ZERO, U256::from(1_000))
            .unwrap();
        let hl = ps[1]
            .open_ledger(payee, 2, 100, Address::ZERO, U256::from(500))
            .unwrap();
        run(&mut ps, &|_| false);
        let params = |nonce, amount| native_params(hub, payee, nonce, amount);
        // V1 locks 300 of the hub's 500: its Add is queued in L(H,B), the payee's
        // countersignature is held.
        let hold = |e: &Envelope| {
            e.from == hub && e.to == payee && matches!(e.payload, Payload::Ledger(_))
        };
        ps[0].propose_virtual(&params(10, 300)).unwrap();
        assert!(!run(&mut ps, &hold).is_empty());
        let ledger = ps[1].ledger(&hl).unwrap();
        assert_eq!(ledger.pending().count(), 1);
        assert_eq!(ledger.free_balance(), U256::from(200));
        // 200 are free and 150 under the cap (it was 0: the queued 300 were subtracted twice).
        assert_eq!(hub_capacity(&ps[1].st, hl, &limits), U256::from(150));
        // V2 (100) is accepted by the hub, but its Add in L(P,H) is held, so the hub has not
        // proposed its own in L(H,B): it still counts against the hub's capacity.
        ps[0].propose_virtual(&params(11, 100)).unwrap();
        run(&mut ps, &|e: &Envelope| {
            hold(e) || (e.from == payer && e.to == hub && matches!(e.payload, Payload::Ledger(_)))
        });
        assert!(ps[1].channels().count() == 2);
        assert_eq!(ps[1].ledger(&hl).unwrap().pending().count(), 1);
        assert_eq!(hub_capacity(&ps[1].st, hl, &limits), U256::from(50));
    }
}
