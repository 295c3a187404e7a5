//! Sans-IO ledger channels: two-party `ConsensusApp` channels `[leader, follower]` in one asset
//! that fund virtual channels with guarantees (§1 and §2 of the virtual-funding reference).
//!
//! A [`Ledger`] is one side of one ledger channel. Like [`Channel`](crate::channel::Channel) it
//! performs no I/O, reads no clock and draws no randomness; unlike it, it does not talk to the
//! chain through queued actions but names what it owes the chain as data
//! ([`Ledger::chain_duties`]), derived from its persisted state alone, so a driver runs it after
//! every restart.
//!
//! # Calling contract
//! * **Inputs**: [`Ledger::handle_message`], [`Ledger::handle_chain_event`],
//!   [`Ledger::handle_timeout`].
//! * **Commands**: [`Ledger::open`], [`Ledger::accept_open`], [`Ledger::propose`] (leader),
//!   [`Ledger::countersign_next`] (follower), [`Ledger::close`], [`Ledger::request_challenge`],
//!   [`Ledger::apply_reclaim`], [`Ledger::resend`].
//! * **Outputs**: [`Ledger::poll_output`] after every input or command. **Persist first**: the
//!   caller stores [`Ledger::to_bytes`] before it sends any message the call produced (a message
//!   is a signature, and a signature must never be given away for a state the restarted ledger
//!   does not know). A restored ledger queues nothing; call [`Ledger::resend`].
//! * A method that returns `Err` has not changed the ledger and has queued nothing.
//!
//! # Protocol
//! | turn | state | signed |
//! |---|---|---|
//! | 0 | prefund `[D, 0]` | leader ([`LedgerBody::Open`]), follower ([`LedgerBody::Prefund`]) |
//! | 1 | postfund `[D, 0]` | each once it sees `holdings ≥ D` ([`LedgerBody::Postfund`]) |
//! | t+1 | `latest` with one [`Proposal`] applied | leader ([`LedgerBody::Proposals`], the whole queue, resent until countersigned), then follower ([`LedgerBody::Countersign`]) |
//! | t+1, final | the countersigned state at turn t, no guarantee left | both ([`LedgerBody::Final`]) |
//!
//! Only the leader (the opener) deposits. The follower accepts a proposal only at `latest + 1`,
//! checks the signed state is exactly the proposal applied to its latest state (so totals are
//! kept, no balance goes negative, guarantees are type 2, well formed and sorted), and
//! countersigns it only when its own objective passes the same proposal to
//! [`Ledger::countersign_next`]: nothing is signed blind.

mod error;
mod reclaim;
mod vars;

use std::collections::VecDeque;

use alloy_primitives::{Address, B256, U256};
use serde::{Deserialize, Serialize};

pub use error::{LedgerError, LedgerPeerError, LedgerUsageError, ProposalError};
pub use reclaim::{ReclaimError, reclaim_effect};
pub use vars::{GuaranteeEntry, LedgerVars, Proposal};

use crate::chain::{ChainAction, ChainEvent, ReclaimArgs};
use crate::channel::{Finalization, RegisteredChallenge, finalize_on_timeout};
use crate::sign::{Signature, Signer, recover_eth_message};
use crate::state::{
    FixedPart, MAX_UINT48, Outcome, SignedVariablePart, VariablePart, challenge_message_hash,
};
use crate::store::RecordHead;

/// Turn of the ledger's prefund state.
pub const PREFUND_TURN: u64 = 0;
/// Turn of the ledger's postfund state (the first consensus state).
pub const POSTFUND_TURN: u64 = 1;

/// Which side of the ledger we are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum LedgerRole {
    /// Participant 0: opened the ledger, deposits, proposes.
    Leader,
    /// Participant 1: countersigns what its objectives expect.
    Follower,
}

impl LedgerRole {
    /// Index in `participants` and in the balances.
    pub fn index(self) -> usize {
        match self {
            Self::Leader => 0,
            Self::Follower => 1,
        }
    }
}

/// Where the ledger is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum LedgerPhase {
    /// Leader: prefund signed and sent; waiting for the follower's.
    Proposed,
    /// Prefund signed by both; waiting for the deposit and the postfund signatures.
    Funding,
    /// Postfund signed by both: proposals flow.
    Open,
    /// We signed the final state.
    Closing,
    /// The final state is signed by both.
    Closed,
}

/// A ledger message: to the ledger's other participant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LedgerMessage {
    /// The ledger.
    pub ledger_id: B256,
    /// What it says.
    pub body: LedgerBody,
}

/// One proposal with the state it produces and the leader's signature on that state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SignedUpdate {
    /// The proposal.
    pub proposal: Proposal,
    /// The resulting state (its turn is the proposal's turn).
    pub state: VariablePart,
    /// The leader's signature on `state`.
    pub signature: Signature,
}

/// The ledger messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum LedgerBody {
    /// Leader → follower: a new ledger, with the leader's prefund signature.
    Open {
        /// Fixed part (`[leader, follower]`, `ConsensusApp`).
        fixed: FixedPart,
        /// The asset.
        asset: Address,
        /// The leader's deposit.
        deposit: U256,
        /// Leader's signature on the prefund.
        signature: Signature,
    },
    /// Follower → leader: prefund countersignature.
    Prefund {
        /// Signature on the prefund.
        signature: Signature,
    },
    /// Either: postfund signature.
    Postfund {
        /// Signature on the postfund.
        signature: Signature,
    },
    /// Leader → follower: the whole queue of uncountersigned proposals, consecutive turns.
    Proposals {
        /// The queue.
        updates: Vec<SignedUpdate>,
    },
    /// Follower → leader: countersignature of the state at `turn_num`.
    Countersign {
        /// The countersigned turn.
        turn_num: u64,
        /// Follower's signature on that state.
        signature: Signature,
    },
    /// Either: the final state and the sender's signature on it.
    Final {
        /// The final state.
        state: VariablePart,
        /// Signature on it.
        signature: Signature,
    },
}

/// Something the objectives or the application should know.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LedgerEvent {
    /// The prefund is signed by both (leader: deposit now, see [`Ledger::chain_duties`]).
    PrefundComplete,
    /// The postfund is signed by both: the ledger is open.
    Funded,
    /// Follower: proposals arrived and wait for [`Ledger::countersign_next`].
    ProposalsReceived,
    /// A proposal is part of the countersigned state.
    Countersigned {
        /// Its turn.
        turn_num: u64,
        /// The proposal.
        proposal: Proposal,
    },
    /// The final state is signed by both.
    Closed,
    /// A challenge was registered; `stale` when its turn is below our countersigned turn (a
    /// [`ChainAction::Checkpoint`] follows from [`Ledger::chain_duties`]).
    ChallengeRegistered {
        /// Candidate turn.
        turn_num: u64,
        /// Finalization time unless cleared.
        finalizes_at: u64,
        /// Whether we hold a newer countersigned state.
        stale: bool,
    },
    /// The ledger finalized on chain.
    Finalized,
    /// Alert (§0.4): holdings moved while the finalized outcome still holds guarantees — a
    /// third party pushed a guarantee out with `transfer`.
    UnexpectedPayout {
        /// Holdings before.
        initial_holdings: U256,
        /// Holdings after.
        final_holdings: U256,
    },
    /// The payout happened (holdings reached zero).
    PaidOut,
}

/// An output of [`Ledger::poll_output`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LedgerOutput {
    /// Send to the counterparty.
    Send(LedgerMessage),
    /// Tell the objectives / application.
    Event(LedgerEvent),
}

/// A state signed by both participants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SupportedState {
    /// The state.
    pub vars: LedgerVars,
    /// `[leader, follower]` signatures.
    pub sigs: [Signature; 2],
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Queued {
    proposal: Proposal,
    vars: LedgerVars,
    /// The leader's signature.
    signature: Signature,
}

/// What the ledger knows about the chain.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerChain {
    /// Latest reported holdings.
    pub holdings: U256,
    /// Registered challenge.
    pub challenge: Option<RegisteredChallenge>,
    /// Finalization (its outcome rewritten by each reclaim).
    pub finalized: Option<Finalization>,
    /// We want a challenge registered.
    pub challenge_requested: bool,
    /// Holdings reached zero after finalization.
    pub paid_out: bool,
}

const SNAPSHOT_VERSION: u8 = 1;

/// One side of one ledger channel. See the [module docs](self).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ledger {
    #[serde(flatten)]
    head: RecordHead<LedgerRole>,
    deposit: U256,
    phase: LedgerPhase,
    prefund: [Option<Signature>; 2],
    postfund: [Option<Signature>; 2],
    supported: Option<SupportedState>,
    queue: Vec<Queued>,
    final_sigs: [Option<Signature>; 2],
    chain: LedgerChain,
    #[serde(skip)]
    out: VecDeque<LedgerOutput>,
}

type Result<T, E = LedgerError> = std::result::Result<T, E>;

/// Why the ledger has no final state to sign: see [`Ledger::closable_vars`].
enum NotClosable {
    /// No countersigned state yet.
    NoState,
    /// The countersigned state still holds guarantees.
    GuaranteesRemain,
}

impl NotClosable {
    /// Our close refused.
    fn into_usage(self) -> LedgerError {
        usage(match self {
            Self::NoState => LedgerUsageError::WrongPhase("close"),
            Self::GuaranteesRemain => LedgerUsageError::NotEmpty("guarantees remain"),
        })
    }

    /// The peer's final state refused.
    fn into_peer(self) -> LedgerError {
        peer(match self {
            Self::NoState => LedgerPeerError::Unexpected("final"),
            Self::GuaranteesRemain => LedgerPeerError::InvalidFinal("guarantees remain"),
        })
    }
}

fn peer(e: LedgerPeerError) -> LedgerError {
    LedgerError::Peer(e)
}

fn usage(e: LedgerUsageError) -> LedgerError {
    LedgerError::Usage(e)
}

impl Ledger {
    // ----- construction -----------------------------------------------------------------------

    /// Leader: a new ledger `fixed` (`[me, follower]`, `ConsensusApp`) where we deposit
    /// `deposit`; signs the prefund and queues [`LedgerBody::Open`].
    pub fn open(
        signer: &dyn Signer,
        fixed: FixedPart,
        asset: Address,
        deposit: U256,
    ) -> Result<Self> {
        let bad = |m| usage(LedgerUsageError::InvalidParams(m));
        if fixed.participants.len() != 2 || fixed.participants[0] != signer.address() {
            return Err(bad("participants must be [me, follower]"));
        }
        if fixed.participants[1] == fixed.participants[0] || fixed.participants[1].is_zero() {
            return Err(bad("follower must be another, non-zero address"));
        }
        if deposit.is_zero() {
            return Err(bad("zero deposit"));
        }
        if fixed.challenge_duration == 0 || fixed.challenge_duration > MAX_UINT48 {
            return Err(bad("challenge duration"));
        }
        let mut l = Self::new(LedgerRole::Leader, fixed, asset, deposit);
        let sig = l.sign(signer, &l.prefund_vp())?;
        l.prefund[0] = Some(sig);
        l.send(LedgerBody::Open {
            fixed: l.head.fixed.clone(),
            asset,
            deposit,
            signature: sig,
        });
        Ok(l)
    }

    /// Follower: accepts an [`LedgerBody::Open`] from `from` for a ledger with `consensus_app`,
    /// countersigns the prefund and queues [`LedgerBody::Prefund`]. Whether to accept the
    /// counterparty and the deposit at all is the caller's policy.
    pub fn accept_open(
        signer: &dyn Signer,
        consensus_app: Address,
        from: Address,
        msg: &LedgerMessage,
    ) -> Result<Self> {
        let LedgerBody::Open {
            fixed,
            asset,
            deposit,
            signature,
        } = &msg.body
        else {
            return Err(peer(LedgerPeerError::Unexpected(
                "non-open message for a new ledger",
            )));
        };
        let bad = |m| peer(LedgerPeerError::InvalidOpen(m));
        if fixed.channel_id() != msg.ledger_id {
            return Err(peer(LedgerPeerError::WrongLedger { got: msg.ledger_id }));
        }
        if fixed.participants.len() != 2
            || fixed.participants[0] != from
            || fixed.participants[1] != signer.address()
            || from == signer.address()
        {
            return Err(bad("participants must be [sender, me]"));
        }
        if fixed.app_definition != consensus_app || consensus_app.is_zero() {
            return Err(bad("app is not ConsensusApp"));
        }
        if fixed.challenge_duration == 0 || fixed.challenge_duration > MAX_UINT48 {
            return Err(bad("challenge duration"));
        }
        if deposit.is_zero() {
            return Err(bad("zero deposit"));
        }
        let mut l = Self::new(LedgerRole::Follower, fixed.clone(), *asset, *deposit);
        l.check_sig(0, &l.prefund_vp(), signature, "prefund")?;
        let mine = l.sign(signer, &l.prefund_vp())?;
        l.prefund = [Some(*signature), Some(mine)];
        l.supported = Some(SupportedState {
            vars: LedgerVars::funding(PREFUND_TURN, *deposit),
            sigs: [*signature, mine],
        });
        l.phase = LedgerPhase::Funding;
        l.send(LedgerBody::Prefund { signature: mine });
        l.emit(LedgerEvent::PrefundComplete);
        Ok(l)
    }

    fn new(role: LedgerRole, fixed: FixedPart, asset: Address, deposit: U256) -> Self {
        Self {
            head: RecordHead::new(SNAPSHOT_VERSION, role, fixed, asset),
            deposit,
            phase: LedgerPhase::Proposed,
            prefund: [None; 2],
            postfund: [None; 2],
            supported: None,
            queue: Vec::new(),
            final_sigs: [None; 2],
            chain: LedgerChain::default(),
            out: VecDeque::new(),
        }
    }

    /// The durable state (JSON).
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("ledger serialization is infallible")
    }

    /// Restores [`Ledger::to_bytes`]. Nothing is queued; call [`Ledger::resend`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, LedgerUsageError> {
        crate::store::decode_snapshot(bytes, SNAPSHOT_VERSION, |l: &Self| l.head.version)
            .map_err(LedgerUsageError::CorruptSnapshot)
    }

    // ----- getters ----------------------------------------------------------------------------

    /// The ledger's channel id.
    pub fn id(&self) -> B256 {
        self.head.fixed.channel_id()
    }

    /// Our role.
    pub fn role(&self) -> LedgerRole {
        self.head.role
    }

    /// The fixed part.
    pub fn fixed_part(&self) -> &FixedPart {
        &self.head.fixed
    }

    /// `[leader, follower]`.
    pub fn participants(&self) -> [Address; 2] {
        [
            self.head.fixed.participants[0],
            self.head.fixed.participants[1],
        ]
    }

    /// The other participant.
    pub fn counterparty(&self) -> Address {
        self.head.fixed.participants[1 - self.head.role.index()]
    }

    /// The asset.
    pub fn asset(&self) -> Address {
        self.head.asset
    }

    /// The leader's deposit.
    pub fn deposit(&self) -> U256 {
        self.deposit
    }

    /// The phase.
    pub fn phase(&self) -> LedgerPhase {
        self.phase
    }

    /// The latest state signed by both (the prefund while funding).
    pub fn supported(&self) -> Option<&SupportedState> {
        self.supported.as_ref()
    }

    /// The latest countersigned consensus variables, once open.
    pub fn countersigned(&self) -> Option<&LedgerVars> {
        (self.phase >= LedgerPhase::Open)
            .then(|| self.supported.as_ref().map(|s| &s.vars))
            .flatten()
    }

    /// The latest proposed variables (leader: last queued; otherwise the countersigned ones).
    pub fn latest_proposed(&self) -> Option<&LedgerVars> {
        self.queue
            .last()
            .map(|q| &q.vars)
            .or_else(|| self.countersigned())
    }

    /// Proposals signed by the leader and not countersigned yet.
    pub fn pending(&self) -> impl Iterator<Item = &Proposal> {
        self.queue.iter().map(|q| &q.proposal)
    }

    /// Our balance in the latest proposed state (what we can still lock).
    pub fn free_balance(&self) -> U256 {
        self.latest_proposed()
            .map(|v| v.balances[self.head.role.index()])
            .unwrap_or_default()
    }

    /// What the chain side knows.
    pub fn chain(&self) -> &LedgerChain {
        &self.chain
    }

    // ----- outputs ----------------------------------------------------------------------------

    /// The next output.
    pub fn poll_output(&mut self) -> Option<LedgerOutput> {
        self.out.pop_front()
    }

    /// Re-queues every message the state implies (after a restore or a suspected loss).
    pub fn resend(&mut self) {
        let me = self.head.role.index();
        match self.phase {
            LedgerPhase::Proposed => {
                if let Some(signature) = self.prefund[0] {
                    self.send(LedgerBody::Open {
                        fixed: self.head.fixed.clone(),
                        asset: self.head.asset,
                        deposit: self.deposit,
                        signature,
                    });
                }
            }
            LedgerPhase::Funding | LedgerPhase::Open => {
                if self.head.role == LedgerRole::Follower
                    && let Some(signature) = self.prefund[1]
                {
                    self.send(LedgerBody::Prefund { signature });
                }
                if let Some(signature) = self.postfund[me] {
                    self.send(LedgerBody::Postfund { signature });
                }
                if self.phase == LedgerPhase::Open {
                    self.resend_consensus();
                }
            }
            LedgerPhase::Closing | LedgerPhase::Closed => {
                self.resend_consensus();
                if let Some(signature) = self.final_sigs[me] {
                    self.send_final(signature);
                }
            }
        }
    }

    fn resend_consensus(&mut self) {
        match self.head.role {
            LedgerRole::Leader if !self.queue.is_empty() => self.send_queue(),
            LedgerRole::Follower => {
                if let Some(s) = &self.supported
                    && s.vars.turn_num > POSTFUND_TURN
                {
                    let body = LedgerBody::Countersign {
                        turn_num: s.vars.turn_num,
                        signature: s.sigs[1],
                    };
                    self.send(body);
                }
            }
            LedgerRole::Leader => {}
        }
    }

    // ----- commands ---------------------------------------------------------------------------

    /// Leader: applies `proposal` to the latest proposed state, signs the result at the next turn,
    /// queues it and sends the whole queue. Returns the turn.
    pub fn propose(&mut self, signer: &dyn Signer, proposal: Proposal) -> Result<u64> {
        if self.head.role != LedgerRole::Leader {
            return Err(usage(LedgerUsageError::WrongRole("propose")));
        }
        if self.phase != LedgerPhase::Open || self.chain.finalized.is_some() {
            return Err(usage(LedgerUsageError::WrongPhase("propose")));
        }
        let base = self
            .latest_proposed()
            .ok_or_else(|| usage(LedgerUsageError::WrongPhase("propose")))?;
        let vars = base
            .apply(&proposal, &self.participants())
            .map_err(|e| usage(e.into()))?;
        let signature = self.sign(signer, &self.vp(&vars, false))?;
        let turn = vars.turn_num;
        self.queue.push(Queued {
            proposal,
            vars,
            signature,
        });
        self.send_queue();
        Ok(turn)
    }

    /// Follower: countersigns the next proposal if it is `expected` (what our own objective
    /// expects). `Ok(false)`: the next proposal has not arrived or concerns another target (its
    /// own objective will countersign it). A next proposal for the same target that differs is
    /// refused ([`LedgerPeerError::ProposalMismatch`]) and stays unsigned.
    pub fn countersign_next(&mut self, signer: &dyn Signer, expected: &Proposal) -> Result<bool> {
        if self.head.role != LedgerRole::Follower {
            return Err(usage(LedgerUsageError::WrongRole("countersign")));
        }
        if self.phase != LedgerPhase::Open || self.chain.finalized.is_some() {
            return Ok(false);
        }
        let Some(next) = self.queue.first() else {
            return Ok(false);
        };
        if next.proposal.target() != expected.target() {
            return Ok(false);
        }
        if next.proposal != *expected {
            return Err(peer(LedgerPeerError::ProposalMismatch {
                target: expected.target(),
            }));
        }
        let signature = self.sign(signer, &self.vp(&next.vars, false))?;
        let next = self.queue.remove(0);
        let turn_num = next.vars.turn_num;
        self.supported = Some(SupportedState {
            vars: next.vars,
            sigs: [next.signature, signature],
        });
        self.send(LedgerBody::Countersign {
            turn_num,
            signature,
        });
        self.emit(LedgerEvent::Countersigned {
            turn_num,
            proposal: next.proposal,
        });
        Ok(true)
    }

    /// Signs the final state (the countersigned state at the next turn, `isFinal`) and sends it.
    /// Refused while guarantees or proposals remain.
    pub fn close(&mut self, signer: &dyn Signer) -> Result<()> {
        if self.phase != LedgerPhase::Open || self.chain.challenge.is_some() {
            return Err(usage(LedgerUsageError::WrongPhase("close")));
        }
        let vars = self.closable_vars().map_err(NotClosable::into_usage)?;
        if !self.queue.is_empty() {
            return Err(usage(LedgerUsageError::NotEmpty("proposals are pending")));
        }
        let signature = self.sign(signer, &self.vp(&vars, true))?;
        self.final_sigs[self.head.role.index()] = Some(signature);
        self.phase = LedgerPhase::Closing;
        self.send_final(signature);
        Ok(())
    }

    /// Asks for a challenge with the latest state signed by both ([`Ledger::chain_duties`]).
    pub fn request_challenge(&mut self) -> Result<()> {
        if self.supported.is_none() {
            return Err(usage(LedgerUsageError::WrongPhase("challenge")));
        }
        self.chain.challenge_requested = true;
        Ok(())
    }

    /// Records a `reclaim` of the guarantee for `target` with that channel's finalized outcome:
    /// the finalized outcome becomes the contract's post-reclaim outcome.
    pub fn apply_reclaim(&mut self, target: B256, target_outcome: &Outcome) -> Result<()> {
        let fin = self
            .chain
            .finalized
            .as_ref()
            .ok_or_else(|| usage(LedgerUsageError::Reclaim("not finalized")))?;
        let (outcome, _) = reclaim_effect(&fin.outcome, target, target_outcome)
            .map_err(|_| usage(LedgerUsageError::Reclaim("the contract would revert")))?;
        if let Some(f) = self.chain.finalized.as_mut() {
            f.outcome = outcome;
        }
        Ok(())
    }

    /// The `reclaim` arguments for the guarantee of `target` (finalized in `target_state_hash`,
    /// `target_outcome`), if this ledger is finalized with that guarantee.
    pub fn reclaim_args(
        &self,
        target: B256,
        target_state_hash: B256,
        target_outcome: &Outcome,
    ) -> Option<ReclaimArgs> {
        let fin = self.chain.finalized.as_ref()?;
        let (_, idx) = reclaim_effect(&fin.outcome, target, target_outcome).ok()?;
        Some(ReclaimArgs {
            source_channel_id: self.id(),
            source_state_hash: fin.state_hash,
            source_outcome: fin.outcome.clone(),
            source_asset_index: 0,
            index_of_target_in_source: idx as u64,
            target_state_hash,
            target_outcome: target_outcome.clone(),
            target_asset_index: 0,
        })
    }

    /// Whether the finalized on-chain outcome still holds a guarantee for `target`.
    pub fn finalized_with_guarantee(&self, target: B256) -> bool {
        self.chain.finalized.as_ref().is_some_and(|f| {
            f.outcome.iter().any(|e| {
                e.allocations
                    .iter()
                    .any(|a| a.destination == target && a.as_guarantee().is_some())
            })
        })
    }

    /// What the ledger owes the chain now, from its persisted state alone (`reclaim` is the
    /// virtual channel's duty: it needs that channel's outcome). A driver checks on chain that a
    /// duty has not landed before sending it.
    pub fn chain_duties(&self, signer: &dyn Signer, now: u64) -> Result<Vec<ChainAction>> {
        let mut duties = Vec::new();
        let me = self.head.role.index();
        let fin = self.chain.finalized.as_ref();
        let disputed = self.chain.challenge.is_some() || fin.is_some();
        if self.head.role == LedgerRole::Leader
            && self.phase == LedgerPhase::Funding
            && !disputed
            && self.chain.holdings < self.deposit
        {
            duties.push(ChainAction::Deposit {
                asset: self.head.asset,
                channel_id: self.id(),
                expected_held: self.chain.holdings,
                amount: self.deposit - self.chain.holdings,
            });
        }
        if let (Some(final_vp), None) = (self.final_signed_by_both(), fin) {
            // The side with a share submits (the other has nothing to gain from paying gas).
            let vars = &self.supported.as_ref().map(|s| &s.vars);
            let submitter = match vars {
                Some(v) if v.balances[0].is_zero() => 1,
                _ => 0,
            };
            if submitter == me {
                duties.push(ChainAction::ConcludeAndTransferAllAssets {
                    fixed: self.head.fixed.clone(),
                    candidate: final_vp,
                });
            }
            return Ok(duties);
        }
        if fin.is_none()
            && let Some(s) = &self.supported
        {
            let candidate = SignedVariablePart {
                variable_part: self.vp(&s.vars, false),
                sigs: s.sigs.to_vec(),
            };
            match &self.chain.challenge {
                Some(c) if c.finalizes_at > now && c.turn_num < s.vars.turn_num => {
                    duties.push(ChainAction::Checkpoint {
                        fixed: self.head.fixed.clone(),
                        proof: Vec::new(),
                        candidate,
                    });
                }
                None if self.chain.challenge_requested => {
                    let hash = candidate.variable_part.hash(self.id());
                    let challenger_sig = signer.sign_eth_message(&challenge_message_hash(hash))?;
                    duties.push(ChainAction::Challenge {
                        fixed: self.head.fixed.clone(),
                        proof: Vec::new(),
                        candidate,
                        challenger_sig,
                    });
                }
                _ => {}
            }
        }
        if let Some(f) = fin
            && !self.chain.paid_out
            && !self.chain.holdings.is_zero()
            && f.outcome
                .iter()
                .all(|e| e.allocations.iter().all(|a| a.as_guarantee().is_none()))
        {
            duties.push(ChainAction::TransferAllAssets {
                channel_id: self.id(),
                outcome: f.outcome.clone(),
                state_hash: f.state_hash,
            });
        }
        Ok(duties)
    }

    // ----- inputs -----------------------------------------------------------------------------

    /// A message from `from` (the counterparty).
    pub fn handle_message(
        &mut self,
        signer: &dyn Signer,
        from: Address,
        msg: &LedgerMessage,
    ) -> Result<()> {
        if msg.ledger_id != self.id() || from != self.counterparty() {
            return Err(peer(LedgerPeerError::WrongLedger { got: msg.ledger_id }));
        }
        match &msg.body {
            LedgerBody::Open { .. } => match self.phase {
                // A resent open for a ledger we accepted: answer again.
                _ if self.head.role == LedgerRole::Follower => {
                    self.resend();
                    Ok(())
                }
                _ => Err(peer(LedgerPeerError::WrongRole("open"))),
            },
            LedgerBody::Prefund { signature } => self.on_prefund(signature),
            LedgerBody::Postfund { signature } => self.on_postfund(signer, signature),
            LedgerBody::Proposals { updates } => self.on_proposals(updates),
            LedgerBody::Countersign {
                turn_num,
                signature,
            } => self.on_countersign(*turn_num, signature),
            LedgerBody::Final { state, signature } => self.on_final(signer, state, signature),
        }
    }

    fn on_prefund(&mut self, sig: &Signature) -> Result<()> {
        if self.head.role != LedgerRole::Leader {
            return Err(peer(LedgerPeerError::WrongRole("prefund")));
        }
        if self.phase != LedgerPhase::Proposed {
            return Ok(()); // duplicate
        }
        self.check_sig(1, &self.prefund_vp(), sig, "prefund")?;
        let Some(mine) = self.prefund[0] else {
            return Err(peer(LedgerPeerError::Unexpected("prefund")));
        };
        self.prefund[1] = Some(*sig);
        self.supported = Some(SupportedState {
            vars: LedgerVars::funding(PREFUND_TURN, self.deposit),
            sigs: [mine, *sig],
        });
        self.phase = LedgerPhase::Funding;
        self.emit(LedgerEvent::PrefundComplete);
        Ok(())
    }

    fn on_postfund(&mut self, signer: &dyn Signer, sig: &Signature) -> Result<()> {
        let other = 1 - self.head.role.index();
        match self.phase {
            LedgerPhase::Proposed => return Err(peer(LedgerPeerError::Unexpected("postfund"))),
            LedgerPhase::Funding => {}
            _ => return Ok(()), // duplicate
        }
        self.check_sig(other, &self.postfund_vp(), sig, "postfund")?;
        self.postfund[other] = Some(*sig);
        self.progress_funding(signer)
    }

    fn progress_funding(&mut self, signer: &dyn Signer) -> Result<()> {
        let me = self.head.role.index();
        if self.phase != LedgerPhase::Funding {
            return Ok(());
        }
        if self.postfund[me].is_none() && self.chain.holdings >= self.deposit {
            let sig = self.sign(signer, &self.postfund_vp())?;
            self.postfund[me] = Some(sig);
            self.send(LedgerBody::Postfund { signature: sig });
        }
        if let [Some(a), Some(b)] = self.postfund {
            self.supported = Some(SupportedState {
                vars: LedgerVars::funding(POSTFUND_TURN, self.deposit),
                sigs: [a, b],
            });
            self.phase = LedgerPhase::Open;
            self.emit(LedgerEvent::Funded);
        }
        Ok(())
    }

    fn on_proposals(&mut self, updates: &[SignedUpdate]) -> Result<()> {
        if self.head.role != LedgerRole::Follower {
            return Err(peer(LedgerPeerError::WrongRole("proposals")));
        }
        if self.phase != LedgerPhase::Open {
            return Err(peer(LedgerPeerError::Unexpected("proposals")));
        }
        let current = self.countersigned_turn();
        let participants = self.participants();
        let mut queue = self.queue.clone();
        let mut added = false;
        for u in updates {
            let latest = queue
                .last()
                .map(|q| &q.vars)
                .or_else(|| self.supported.as_ref().map(|s| &s.vars))
                .ok_or_else(|| peer(LedgerPeerError::Unexpected("proposals")))?;
            let turn = u.state.turn_num;
            if turn <= latest.turn_num {
                continue; // already countersigned or queued
            }
            if turn != latest.turn_num + 1 {
                return Err(peer(LedgerPeerError::SkippedTurn {
                    expected: latest.turn_num + 1,
                    got: turn,
                }));
            }
            if u.state.is_final {
                return Err(peer(LedgerPeerError::MalformedState(
                    "final flag on a proposal",
                )));
            }
            let signed = LedgerVars::from_variable_part(&u.state, self.head.asset, &participants)
                .map_err(peer)?;
            let expected = latest
                .apply(&u.proposal, &participants)
                .map_err(|e| peer(e.into()))?;
            if signed != expected {
                return Err(peer(LedgerPeerError::StateMismatch(turn)));
            }
            self.check_sig(0, &u.state, &u.signature, "proposal")?;
            queue.push(Queued {
                proposal: u.proposal,
                vars: expected,
                signature: u.signature,
            });
            added = true;
        }
        if !added {
            let got = updates
                .iter()
                .map(|u| u.state.turn_num)
                .max()
                .unwrap_or_default();
            return Err(peer(LedgerPeerError::StaleTurn { current, got }));
        }
        self.queue = queue;
        self.emit(LedgerEvent::ProposalsReceived);
        Ok(())
    }

    fn on_countersign(&mut self, turn: u64, sig: &Signature) -> Result<()> {
        if self.head.role != LedgerRole::Leader {
            return Err(peer(LedgerPeerError::WrongRole("countersign")));
        }
        let current = self.countersigned_turn();
        let Some(pos) = self.queue.iter().position(|q| q.vars.turn_num == turn) else {
            return Err(peer(if turn <= current {
                LedgerPeerError::StaleTurn { current, got: turn }
            } else {
                LedgerPeerError::Unexpected("countersignature of an unknown turn")
            }));
        };
        let q = &self.queue[pos];
        self.check_sig(1, &self.vp(&q.vars, false), sig, "countersignature")?;
        let done: Vec<Queued> = self.queue.drain(..=pos).collect();
        let last = done.last().cloned();
        for d in done {
            self.emit(LedgerEvent::Countersigned {
                turn_num: d.vars.turn_num,
                proposal: d.proposal,
            });
        }
        if let Some(last) = last {
            self.supported = Some(SupportedState {
                vars: last.vars,
                sigs: [last.signature, *sig],
            });
        }
        if !self.queue.is_empty() {
            self.send_queue();
        }
        Ok(())
    }

    fn on_final(
        &mut self,
        signer: &dyn Signer,
        state: &VariablePart,
        sig: &Signature,
    ) -> Result<()> {
        let me = self.head.role.index();
        let other = 1 - me;
        if !matches!(
            self.phase,
            LedgerPhase::Open | LedgerPhase::Closing | LedgerPhase::Closed
        ) {
            return Err(peer(LedgerPeerError::Unexpected("final")));
        }
        let vars = self.closable_vars().map_err(NotClosable::into_peer)?;
        let want = self.vp(&vars, true);
        if *state != want {
            return Err(peer(LedgerPeerError::InvalidFinal(
                "not the countersigned state, closed",
            )));
        }
        self.check_sig(other, state, sig, "final")?;
        let mine = match self.final_sigs[me] {
            Some(s) => s,
            None => {
                let s = self.sign(signer, &want)?;
                self.send_final(s);
                s
            }
        };
        let was_closed = self.phase == LedgerPhase::Closed;
        self.final_sigs[me] = Some(mine);
        self.final_sigs[other] = Some(*sig);
        // Pending proposals are void: the final state replaces them.
        self.queue.clear();
        self.phase = LedgerPhase::Closed;
        if !was_closed {
            self.emit(LedgerEvent::Closed);
        }
        Ok(())
    }

    /// An adjudicator event about this ledger. Replays are harmless.
    pub fn handle_chain_event(
        &mut self,
        signer: &dyn Signer,
        now: u64,
        ev: &ChainEvent,
    ) -> Result<()> {
        if ev.channel_id() != self.id() {
            return Err(usage(LedgerUsageError::InvalidParams(
                "event for another channel",
            )));
        }
        match ev {
            ChainEvent::Deposited { holdings, .. } => {
                self.chain.holdings = *holdings;
                self.progress_funding(signer)?;
            }
            ChainEvent::ChallengeRegistered {
                finalizes_at,
                candidate,
                ..
            } => {
                let turn_num = candidate.variable_part.turn_num;
                let stale = self
                    .supported
                    .as_ref()
                    .is_some_and(|s| s.vars.turn_num > turn_num);
                self.chain.challenge = Some(RegisteredChallenge::new(
                    self.id(),
                    *finalizes_at,
                    &candidate.variable_part,
                ));
                self.chain.challenge_requested = false;
                self.emit(LedgerEvent::ChallengeRegistered {
                    turn_num,
                    finalizes_at: *finalizes_at,
                    stale,
                });
            }
            ChainEvent::ChallengeCleared { .. } | ChainEvent::Checkpointed { .. } => {
                if self.chain.finalized.is_none() {
                    self.chain.challenge = None;
                }
            }
            ChainEvent::Concluded { finalizes_at, .. } => {
                if self.chain.finalized.is_none() {
                    let vars = self.final_vars().ok_or_else(|| {
                        peer(LedgerPeerError::Unexpected(
                            "conclude without a final state",
                        ))
                    })?;
                    self.chain.finalized = Some(Finalization {
                        outcome: vars.outcome(self.head.asset, &self.participants()),
                        state_hash: B256::ZERO,
                        at: *finalizes_at,
                    });
                    self.chain.challenge = None;
                    self.emit(LedgerEvent::Finalized);
                }
            }
            ChainEvent::AllocationUpdated {
                initial_holdings,
                final_holdings,
                ..
            } => {
                self.handle_timeout(now);
                let guarantees_left = self.chain.finalized.as_ref().is_none_or(|f| {
                    f.outcome
                        .iter()
                        .any(|e| e.allocations.iter().any(|a| a.as_guarantee().is_some()))
                });
                if guarantees_left {
                    self.emit(LedgerEvent::UnexpectedPayout {
                        initial_holdings: *initial_holdings,
                        final_holdings: *final_holdings,
                    });
                }
                self.chain.holdings = *final_holdings;
                if final_holdings.is_zero() && !self.chain.paid_out {
                    self.chain.paid_out = true;
                    self.emit(LedgerEvent::PaidOut);
                }
            }
            // Which guarantee went is not in the event: the caller identifies it and calls
            // `apply_reclaim` (a driver matches the on-chain fingerprint).
            ChainEvent::Reclaimed { .. } => self.handle_timeout(now),
        }
        Ok(())
    }

    /// Chain time passed: a registered challenge finalizes at its time.
    pub fn handle_timeout(&mut self, now: u64) {
        let challenge = self.chain.challenge.as_ref();
        if finalize_on_timeout(&mut self.chain.finalized, challenge, now) {
            self.emit(LedgerEvent::Finalized);
        }
    }

    /// When [`Ledger::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Option<u64> {
        if self.chain.finalized.is_some() {
            return None;
        }
        self.chain.challenge.as_ref().map(|c| c.finalizes_at)
    }

    // ----- helpers ----------------------------------------------------------------------------

    fn final_vars(&self) -> Option<LedgerVars> {
        let s = self.supported.as_ref()?;
        let mut v = s.vars.clone();
        v.turn_num = v.turn_num.checked_add(1)?;
        Some(v)
    }

    /// The final state's variables when the ledger can close (our close and a peer's final state
    /// alike): a countersigned state without guarantees.
    fn closable_vars(&self) -> Result<LedgerVars, NotClosable> {
        let vars = self.final_vars().ok_or(NotClosable::NoState)?;
        if vars.guarantees.is_empty() {
            Ok(vars)
        } else {
            Err(NotClosable::GuaranteesRemain)
        }
    }

    /// The turn of the countersigned state (0 before the postfund).
    fn countersigned_turn(&self) -> u64 {
        self.supported.as_ref().map_or(0, |s| s.vars.turn_num)
    }

    fn final_signed_by_both(&self) -> Option<SignedVariablePart> {
        let [Some(a), Some(b)] = self.final_sigs else {
            return None;
        };
        Some(SignedVariablePart {
            variable_part: self.vp(&self.final_vars()?, true),
            sigs: vec![a, b],
        })
    }

    fn vp(&self, vars: &LedgerVars, is_final: bool) -> VariablePart {
        vars.variable_part(self.head.asset, &self.participants(), is_final)
    }

    fn prefund_vp(&self) -> VariablePart {
        self.vp(&LedgerVars::funding(PREFUND_TURN, self.deposit), false)
    }

    fn postfund_vp(&self) -> VariablePart {
        self.vp(&LedgerVars::funding(POSTFUND_TURN, self.deposit), false)
    }

    fn sign(&self, signer: &dyn Signer, vp: &VariablePart) -> Result<Signature> {
        if signer.address() != self.head.fixed.participants[self.head.role.index()] {
            return Err(usage(LedgerUsageError::InvalidParams(
                "signer is not our participant",
            )));
        }
        Ok(signer.sign_eth_message(&vp.hash(self.id()))?)
    }

    fn check_sig(
        &self,
        who: usize,
        vp: &VariablePart,
        sig: &Signature,
        what: &'static str,
    ) -> Result<()> {
        if recover_eth_message(&vp.hash(self.id()), sig).ok()
            == Some(self.head.fixed.participants[who])
        {
            Ok(())
        } else {
            Err(peer(LedgerPeerError::BadSignature(what)))
        }
    }

    fn send_queue(&mut self) {
        let updates = self
            .queue
            .iter()
            .map(|q| SignedUpdate {
                proposal: q.proposal,
                state: self.vp(&q.vars, false),
                signature: q.signature,
            })
            .collect();
        self.send(LedgerBody::Proposals { updates });
    }

    fn send_final(&mut self, signature: Signature) {
        if let Some(vars) = self.final_vars() {
            let state = self.vp(&vars, true);
            self.send(LedgerBody::Final { state, signature });
        }
    }

    fn send(&mut self, body: LedgerBody) {
        self.out.push_back(LedgerOutput::Send(LedgerMessage {
            ledger_id: self.id(),
            body,
        }));
    }

    fn emit(&mut self, ev: LedgerEvent) {
        self.out.push_back(LedgerOutput::Event(ev));
    }
}
