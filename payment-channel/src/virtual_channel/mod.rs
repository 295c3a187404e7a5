//! Sans-IO virtual payment channels `V = [payer, hub, payee]` funded by guarantees in two ledger
//! channels, L(payer, hub) and L(hub, payee) (§2–§4 of the virtual-funding reference).
//!
//! A [`VirtualChannel`] is one party's objective for one V: fund, pay, defund, and the on-chain
//! exit as [`ChainAction`] data. It does not own ledgers: it says which ledger updates it wants
//! ([`VirtualChannel::ledger_wants`]) and learns their countersigned states
//! ([`VirtualChannel::observe_ledger`]). [`Party`] puts ledgers and virtual channels together,
//! routes messages and is what a driver runs.
//!
//! # Protocol (app: this crate's `PaymentApp`, never `0x0`; `b0 = 0`)
//! | step | who | what |
//! |---|---|---|
//! | prefund (turn 0) | payer, then hub and payee | [`VirtualBody::Propose`], [`VirtualBody::Prefund`] |
//! | Add in L(P,H) | payer proposes, hub countersigns | `G(V, a0, left = payer, right = hub)`, `a0` and the hub's fee from the payer |
//! | Add in L(H,B) | hub proposes (only after L(P,H)'s Add is countersigned), payee countersigns | `G(V, a0, left = hub, right = payee)`, `a0` from the hub |
//! | postfund (turn 1) | payer after its Add, payee after its Add, **hub after both** (ADR 0009) | [`VirtualBody::Postfund`] |
//! | pay | payer → payee | [`Voucher`]; the payee accepts them only once the postfund is signed by all and its ledger holds the countersigned guarantee |
//! | final (turn 2, `isFinal`) | payer, then hub and payee | `[a0 − x, x]`, x = the payer's total; [`VirtualBody::Final`] |
//! | Remove in both ledgers | each ledger's leader | L(P,H): payer `a0 − x`, hub `x`; L(H,B): hub `a0 − x`, payee `x` |
//!
//! Checks before signing a final state: the payee refuses `x <` its best voucher, the payer
//! refuses `x >` what it paid, everybody (the hub) requires the amounts to add up to `a0` and the
//! destinations, types, asset and count to equal the postfund's.
//!
//! # A silent party during the defund (issue 15)
//! Whoever completes the final state (signed by all) relays it to whoever sent it only one
//! signature ([`VirtualBody::FinalSupport`]): a payer that went silent while sending its final
//! state to only the payee still has its signature reach the hub. From then on the final
//! state decides V whatever happens on chain ([`VirtualChannel::removable_off_chain`]): anyone
//! holding it concludes V with it before any challenge times out, so each ledger's partners
//! remove V's guarantee off chain with the final amounts, also while V is on chain, and a
//! ledger goes on chain only when its own counterparty is silent
//! ([`Party::stalled_removes`], [`Party::challenge_ledger`]).
//!
//! | silent | honest payee | honest hub | honest payer |
//! |---|---|---|---|
//! | payer, after its final | Remove in L(H,B) with the hub: gets `x` off chain | pays `x` in L(H,B) off chain; takes L(P,H) on chain: conclude V, `reclaim` gives it `x` (+ fee) | – |
//! | hub, after the final | challenges V (conclude) and L(H,B), `reclaim`: gets `x` | – | takes L(P,H) on chain: gets `a0 − x` back |
//! | payer, before a final | redemption with its best voucher, L(H,B), `reclaim`: gets the voucher | V on chain → both ledgers challenged, `reclaim` in both: nets the fee | – |
//!
//! Why each is safe: the payee never countersigns a Remove below its best voucher (the final
//! is `≥` it); the hub pays `x` in L(H,B) only against a final signed by all, which it can
//! conclude itself, so `reclaim` in L(P,H) returns exactly `x`; a ledger challenged by the
//! other side in a state holding V's guarantee puts V on chain too (the ledger cannot pay out
//! before V is final and reclaimed).

mod error;
mod party;

use std::collections::VecDeque;

use alloy_primitives::{Address, B256, Bytes, U256};
use serde::{Deserialize, Serialize};

pub use error::{Rejection, VirtualError, VirtualPeerError, VirtualUsageError};
pub use party::{Envelope, HubLimits, Party, PartyConfig, PartyEvent, Payload};

use crate::chain::ChainAction;
use crate::chain::ChainEvent;
use crate::channel::{Finalization, RegisteredChallenge, finalize_on_timeout};
use crate::ledger::{GuaranteeEntry, LedgerVars, Proposal};
use crate::sign::{Signature, Signer, recover_eth_message};
use crate::state::{
    Allocation, AssetMetadata, FixedPart, MAX_UINT48, Outcome, SignedVariablePart, SingleAssetExit,
    VariablePart, address_to_destination, allocation_type, challenge_message_hash,
};
use crate::store::RecordHead;
use crate::voucher::Voucher;

/// Prefund turn of V.
pub const PREFUND_TURN: u64 = 0;
/// Postfund turn of V.
pub const POSTFUND_TURN: u64 = 1;
/// Turn of the payee's redemption (challenge only) and of the cooperative final state.
pub const FINAL_TURN: u64 = 2;

/// Our place in V.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum VirtualRole {
    /// Participant 0: locks `a0` in L(P,H) and signs vouchers.
    Payer,
    /// Participant 1: countersigns in L(P,H), locks `a0` of its own in L(H,B).
    Hub,
    /// Participant 2: receives vouchers.
    Payee,
}

impl VirtualRole {
    /// Index in V's participants.
    pub fn index(self) -> usize {
        match self {
            Self::Payer => 0,
            Self::Hub => 1,
            Self::Payee => 2,
        }
    }
}

/// Which of V's two ledgers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Side {
    /// L(payer, hub).
    PayerSide,
    /// L(hub, payee).
    PayeeSide,
}

impl Side {
    fn index(self) -> usize {
        match self {
            Self::PayerSide => 0,
            Self::PayeeSide => 1,
        }
    }
}

/// A message about a virtual channel, to one participant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMessage {
    /// V's channel id.
    pub channel_id: B256,
    /// What it says.
    pub body: VirtualBody,
}

/// The virtual-channel messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum VirtualBody {
    /// Payer → hub and payee: a new V with the payer's prefund signature.
    Propose {
        /// V's fixed part.
        fixed: FixedPart,
        /// Asset.
        asset: Address,
        /// `a0`.
        amount: U256,
        /// The hub's fee, moved payer → hub in L(P,H)'s Add.
        fee: U256,
        /// Payer's prefund signature.
        signature: Signature,
    },
    /// A prefund signature (the signer is recovered).
    Prefund {
        /// Signature.
        signature: Signature,
    },
    /// A postfund signature.
    Postfund {
        /// Signature.
        signature: Signature,
    },
    /// A final state with one signature on it.
    Final {
        /// The state.
        state: VariablePart,
        /// Signature.
        signature: Signature,
    },
    /// The final state signed by all, relayed by a participant that holds every signature to
    /// those that may lack one (the payer's, when the payer went silent while sending its
    /// final state to only some of us): with it the hub and the payee remove V from L(H,B)
    /// off chain without the payer. Each signature is checked against its participant.
    FinalSupport {
        /// The state.
        state: VariablePart,
        /// Payer's, hub's and payee's signatures, in participant order (exactly three).
        signatures: Vec<Signature>,
    },
    /// Payer → payee.
    Voucher(Voucher),
    /// Hub or payee → payer: please sign the final state.
    RequestFinal,
}

/// What the application should know.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum VirtualEvent {
    /// The prefund is signed by all.
    PrefundComplete,
    /// The guarantee of `side` is in the countersigned ledger state.
    Guaranteed(Side),
    /// Postfund signed by all (and our guarantees countersigned): vouchers are enforceable.
    Funded,
    /// Payer: a voucher was signed.
    PaymentSent {
        /// Total.
        total: U256,
    },
    /// Payee: a voucher was accepted.
    PaymentReceived {
        /// This payment.
        delta: U256,
        /// Total.
        total: U256,
    },
    /// The final state is signed by all.
    Closed {
        /// Paid to the payee.
        paid: U256,
    },
    /// Every guarantee of ours is removed: V is defunded off chain.
    Defunded,
    /// A challenge of V was registered.
    ChallengeRegistered {
        /// Candidate turn.
        turn_num: u64,
        /// Finalization time.
        finalizes_at: u64,
    },
    /// V finalized on chain.
    Finalized,
}

/// An output of [`VirtualChannel::poll_output`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VirtualOutput {
    /// Send to a participant.
    Send {
        /// Recipient.
        to: Address,
        /// Message.
        msg: VirtualMessage,
    },
    /// Tell the application.
    Event(VirtualEvent),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct FinalState {
    /// Paid to the payee.
    amount: U256,
    sigs: [Option<Signature>; 3],
}

/// A challenge of V registered on chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VirtualChallenge {
    /// Candidate.
    pub candidate: VariablePart,
    /// Finalization time.
    pub finalizes_at: u64,
}

/// V's chain side.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VirtualChain {
    /// Registered challenge.
    pub challenge: Option<VirtualChallenge>,
    /// Finalization.
    pub finalized: Option<Finalization>,
    /// We want V on chain.
    pub challenge_requested: bool,
}

const SNAPSHOT_VERSION: u8 = 1;

/// One party's objective for one virtual channel. See the [module docs](self).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VirtualChannel {
    #[serde(flatten)]
    head: RecordHead<VirtualRole>,
    amount: U256,
    fee: U256,
    /// `[L(P,H), L(H,B)]`, the ones we are in.
    ledgers: [Option<B256>; 2],
    prefund: [Option<Signature>; 3],
    postfund: [Option<Signature>; 3],
    added: [bool; 2],
    removed: [bool; 2],
    running: bool,
    /// Payer: total signed. Payee: best voucher's amount.
    paid: U256,
    best: Option<Voucher>,
    fin: Option<FinalState>,
    chain: VirtualChain,
    #[serde(skip)]
    out: VecDeque<VirtualOutput>,
}

type Result<T, E = VirtualError> = std::result::Result<T, E>;

fn peer(e: VirtualPeerError) -> VirtualError {
    VirtualError::Peer(e)
}

fn usage(e: VirtualUsageError) -> VirtualError {
    VirtualError::Usage(e)
}

/// Parameters of a new V (payer side).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtualParams {
    /// The hub.
    pub hub: Address,
    /// The payee.
    pub payee: Address,
    /// Nonce (make the id new).
    pub channel_nonce: u64,
    /// `PaymentApp`.
    pub app_definition: Address,
    /// Challenge duration of V.
    pub challenge_duration: u64,
    /// Asset.
    pub asset: Address,
    /// `a0`: the most the payer can pay through V.
    pub amount: U256,
    /// The hub's fee.
    pub fee: U256,
}

impl VirtualChannel {
    /// Payer: a new V funded through `payer_ledger` (our ledger with the hub); signs the prefund
    /// and sends [`VirtualBody::Propose`] to the hub and the payee.
    pub fn propose(
        signer: &dyn Signer,
        params: &VirtualParams,
        payer_ledger: B256,
    ) -> Result<Self> {
        let me = signer.address();
        let bad = |m| usage(VirtualUsageError::InvalidParams(m));
        let p = [me, params.hub, params.payee];
        if p.iter().any(|a| a.is_zero()) || p[0] == p[1] || p[1] == p[2] || p[0] == p[2] {
            return Err(bad("three distinct non-zero participants"));
        }
        if params.app_definition.is_zero() {
            return Err(bad("app 0x0 cannot be challenged"));
        }
        if params.amount.is_zero() {
            return Err(bad("zero amount"));
        }
        if params.challenge_duration == 0 || params.challenge_duration > MAX_UINT48 {
            return Err(bad("challenge duration"));
        }
        let fixed = FixedPart {
            participants: p.to_vec(),
            channel_nonce: params.channel_nonce,
            app_definition: params.app_definition,
            challenge_duration: params.challenge_duration,
        };
        let mut v = Self::new(
            VirtualRole::Payer,
            fixed,
            params.asset,
            params.amount,
            params.fee,
            [Some(payer_ledger), None],
        );
        let signature = v.sign(signer, &v.funding_vp(PREFUND_TURN))?;
        v.prefund[0] = Some(signature);
        let body = VirtualBody::Propose {
            fixed: v.head.fixed.clone(),
            asset: v.head.asset,
            amount: v.amount,
            fee: v.fee,
            signature,
        };
        v.broadcast(body);
        Ok(v)
    }

    /// Hub or payee: joins a [`VirtualBody::Propose`] with the ledgers it is in (`[L(P,H),
    /// L(H,B)]`: the hub both, the payee the second), countersigns the prefund and broadcasts it.
    /// Checks: three distinct participants with us at index 1 or 2, `app == payment_app` (never
    /// `0x0`), `a0 > 0`, the payer's signature. Policy (limits) is the caller's.
    pub fn accept(
        signer: &dyn Signer,
        payment_app: Address,
        msg: &VirtualMessage,
        ledgers: [Option<B256>; 2],
    ) -> Result<Self> {
        let VirtualBody::Propose {
            fixed,
            asset,
            amount,
            fee,
            signature,
        } = &msg.body
        else {
            return Err(peer(VirtualPeerError::UnknownChannel(msg.channel_id)));
        };
        let bad = |m| peer(VirtualPeerError::InvalidProposal(m));
        if fixed.channel_id() != msg.channel_id {
            return Err(bad("channel id is not the fixed part's"));
        }
        if fixed.app_definition.is_zero() {
            return Err(bad("app 0x0 cannot be challenged"));
        }
        if fixed.app_definition != payment_app {
            return Err(VirtualError::Rejected(Rejection::WrongApp(
                fixed.app_definition,
            )));
        }
        let p = &fixed.participants;
        if p.len() != 3
            || p.iter().any(|a| a.is_zero())
            || p[0] == p[1]
            || p[1] == p[2]
            || p[0] == p[2]
        {
            return Err(bad("three distinct non-zero participants"));
        }
        let role = match p.iter().position(|a| *a == signer.address()) {
            Some(1) => VirtualRole::Hub,
            Some(2) => VirtualRole::Payee,
            _ => return Err(bad("we are not the hub or the payee")),
        };
        if amount.is_zero() {
            return Err(bad("zero amount"));
        }
        if fixed.challenge_duration == 0 || fixed.challenge_duration > MAX_UINT48 {
            return Err(bad("challenge duration"));
        }
        let needed = match role {
            VirtualRole::Hub => ledgers[0].is_some() && ledgers[1].is_some(),
            _ => ledgers[1].is_some(),
        };
        if !needed {
            return Err(usage(VirtualUsageError::InvalidParams("missing ledger")));
        }
        let mut v = Self::new(role, fixed.clone(), *asset, *amount, *fee, ledgers);
        if role == VirtualRole::Payee {
            v.ledgers[0] = None;
        }
        let prefund = v.funding_vp(PREFUND_TURN);
        v.check_sig(0, &prefund, signature, "prefund")?;
        let mine = v.sign(signer, &prefund)?;
        v.prefund[0] = Some(*signature);
        v.prefund[role.index()] = Some(mine);
        v.broadcast(VirtualBody::Prefund { signature: mine });
        v.progress(signer)?;
        Ok(v)
    }

    fn new(
        role: VirtualRole,
        fixed: FixedPart,
        asset: Address,
        amount: U256,
        fee: U256,
        ledgers: [Option<B256>; 2],
    ) -> Self {
        Self {
            head: RecordHead::new(SNAPSHOT_VERSION, role, fixed, asset),
            amount,
            fee,
            ledgers,
            prefund: [None; 3],
            postfund: [None; 3],
            added: [false; 2],
            removed: [false; 2],
            running: false,
            paid: U256::ZERO,
            best: None,
            fin: None,
            chain: VirtualChain::default(),
            out: VecDeque::new(),
        }
    }

    /// The durable state (JSON).
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("virtual channel serialization is infallible")
    }

    /// Restores [`VirtualChannel::to_bytes`]; nothing is queued (call [`VirtualChannel::resend`]).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, VirtualUsageError> {
        crate::store::decode_snapshot(bytes, SNAPSHOT_VERSION, |v: &Self| v.head.version)
            .map_err(VirtualUsageError::CorruptSnapshot)
    }

    // ----- getters ----------------------------------------------------------------------------

    /// V's channel id.
    pub fn id(&self) -> B256 {
        self.head.fixed.channel_id()
    }

    /// Our role.
    pub fn role(&self) -> VirtualRole {
        self.head.role
    }

    /// V's fixed part.
    pub fn fixed_part(&self) -> &FixedPart {
        &self.head.fixed
    }

    /// `a0`.
    pub fn amount(&self) -> U256 {
        self.amount
    }

    /// The hub's fee.
    pub fn fee(&self) -> U256 {
        self.fee
    }

    /// `[L(P,H), L(H,B)]`, those we are in.
    pub fn ledgers(&self) -> [Option<B256>; 2] {
        self.ledgers
    }

    /// Payer: total signed. Payee: best voucher.
    pub fn paid(&self) -> U256 {
        self.paid
    }

    /// Whether vouchers flow (postfund signed by all, our guarantees countersigned).
    pub fn is_running(&self) -> bool {
        self.running
    }

    /// The amount of the final state, once signed by all.
    pub fn final_amount(&self) -> Option<U256> {
        self.fin
            .as_ref()
            .filter(|f| f.sigs.iter().all(Option::is_some))
            .map(|f| f.amount)
    }

    /// Whether all our guarantees are removed after the final state.
    pub fn is_defunded(&self) -> bool {
        self.final_amount().is_some()
            && (0..2).all(|s| self.ledgers[s].is_none() || self.removed[s])
    }

    /// Whether the guarantee of `side` is countersigned in our ledger.
    pub fn is_guaranteed(&self, side: Side) -> bool {
        self.added[side.index()]
    }

    /// The chain side.
    pub fn chain(&self) -> &VirtualChain {
        &self.chain
    }

    /// The guarantee V needs in the ledger of `side` (§2 layout).
    pub fn guarantee(&self, side: Side) -> GuaranteeEntry {
        let d = |i: usize| address_to_destination(self.head.fixed.participants[i]);
        let (left, right) = match side {
            Side::PayerSide => (d(0), d(1)),
            Side::PayeeSide => (d(1), d(2)),
        };
        GuaranteeEntry {
            amount: self.amount,
            left,
            right,
        }
    }

    /// The Add proposal V needs in the ledger of `side` (the fee only in L(P,H)).
    pub fn add_proposal(&self, side: Side) -> Proposal {
        let g = self.guarantee(side);
        Proposal::Add {
            target: self.id(),
            amount: g.amount,
            left: g.left,
            right: g.right,
            left_deposit: self.amount,
            fee: if side == Side::PayerSide {
                self.fee
            } else {
                U256::ZERO
            },
        }
    }

    /// The Remove proposal after a final state paying `x`: `left` gets `a0 − x` (payer in
    /// L(P,H), hub in L(H,B)), `right` gets `x` (hub, payee).
    pub fn remove_proposal(&self, x: U256) -> Proposal {
        Proposal::Remove {
            target: self.id(),
            left_amount: self.amount.saturating_sub(x),
        }
    }

    fn prefund_complete(&self) -> bool {
        self.prefund.iter().all(Option::is_some)
    }

    fn postfund_complete(&self) -> bool {
        self.postfund.iter().all(Option::is_some)
    }

    /// Whether V's guarantees may be removed off chain with the final amounts whatever happens
    /// to V on chain: the final state is signed by all and V has not finalized with another
    /// outcome. Anyone holding that state can `conclude` V with it at any time before V
    /// finalizes (also during a challenge), and every honest holder does once V is on chain
    /// ([`VirtualChannel::chain_duties`]), so V's on-chain outcome is the final's: a ledger
    /// partner that removes the guarantee with those amounts gets from the other ledger, by
    /// `reclaim`, exactly what it gave up.
    pub fn removable_off_chain(&self) -> bool {
        let Some(x) = self.final_amount() else {
            return false;
        };
        self.chain
            .finalized
            .as_ref()
            .is_none_or(|f| f.outcome == self.outcome(x))
    }

    /// The ledger updates this objective wants now, per ledger: Adds once the prefund is signed
    /// by all (the hub's L(H,B) Add only after L(P,H)'s is countersigned) and V is off chain,
    /// Removes once the final state is signed by all — also while V is on chain
    /// ([`VirtualChannel::removable_off_chain`]): the hub and the payee settle L(H,B) off
    /// chain even when the payer went silent after signing the final state.
    pub fn ledger_wants(&self) -> Vec<(B256, Proposal)> {
        let mut wants = Vec::new();
        let disputed = self.disputed();
        if disputed && !self.removable_off_chain() {
            return wants;
        }
        for side in [Side::PayerSide, Side::PayeeSide] {
            let s = side.index();
            let Some(lid) = self.ledgers[s] else { continue };
            if !self.added[s] {
                if disputed {
                    continue;
                }
                let hub_waits =
                    self.head.role == VirtualRole::Hub && side == Side::PayeeSide && !self.added[0];
                if self.prefund_complete() && !hub_waits {
                    wants.push((lid, self.add_proposal(side)));
                }
            } else if !self.removed[s]
                && let Some(x) = self.final_amount()
            {
                wants.push((lid, self.remove_proposal(x)));
            }
        }
        wants
    }

    /// The countersigned state of `ledger_id` (one of ours): records our guarantee's arrival
    /// and removal, then signs the postfund when its conditions hold.
    pub fn observe_ledger(
        &mut self,
        signer: &dyn Signer,
        ledger_id: B256,
        vars: &LedgerVars,
    ) -> Result<()> {
        let Some(s) = self.ledgers.iter().position(|l| *l == Some(ledger_id)) else {
            return Ok(());
        };
        let side = if s == 0 {
            Side::PayerSide
        } else {
            Side::PayeeSide
        };
        let present = vars.guarantees.get(&self.id());
        if !self.added[s] && present == Some(&self.guarantee(side)) {
            self.added[s] = true;
            self.emit(VirtualEvent::Guaranteed(side));
        }
        if self.added[s] && !self.removed[s] && present.is_none() && self.final_amount().is_some() {
            self.removed[s] = true;
            if self.is_defunded() {
                self.emit(VirtualEvent::Defunded);
            }
        }
        self.progress(signer)
    }

    fn progress(&mut self, signer: &dyn Signer) -> Result<()> {
        let me = self.head.role.index();
        if !self.prefund_complete() {
            return Ok(());
        }
        let ready = match self.head.role {
            VirtualRole::Payer => self.added[0],
            VirtualRole::Hub => self.added[0] && self.added[1],
            VirtualRole::Payee => self.added[1],
        };
        if ready && self.postfund[me].is_none() {
            let sig = self.sign(signer, &self.funding_vp(POSTFUND_TURN))?;
            self.postfund[me] = Some(sig);
            self.broadcast(VirtualBody::Postfund { signature: sig });
        }
        if ready && !self.running && self.postfund_complete() {
            self.running = true;
            self.emit(VirtualEvent::Funded);
        }
        Ok(())
    }

    // ----- commands ---------------------------------------------------------------------------

    /// Payer: signs a voucher for `delta` more and sends it to the payee.
    pub fn pay(&mut self, signer: &dyn Signer, delta: U256) -> Result<Voucher> {
        if self.head.role != VirtualRole::Payer {
            return Err(usage(VirtualUsageError::WrongRole("pay")));
        }
        if !self.running || self.fin.is_some() || self.disputed() {
            return Err(usage(VirtualUsageError::WrongPhase("pay")));
        }
        let total = self
            .paid
            .checked_add(delta)
            .filter(|t| *t <= self.amount)
            .ok_or_else(|| {
                usage(VirtualUsageError::PayBeyondAmount {
                    amount: self.amount,
                    delta,
                })
            })?;
        let voucher = Voucher::sign(self.id(), total, signer)?;
        self.paid = total;
        self.best = Some(voucher);
        self.send(
            self.head.fixed.participants[2],
            VirtualBody::Voucher(voucher),
        );
        self.emit(VirtualEvent::PaymentSent { total });
        Ok(voucher)
    }

    /// Payer: signs the final state paying the payee everything it paid and sends it to both.
    pub fn close(&mut self, signer: &dyn Signer) -> Result<()> {
        if self.head.role != VirtualRole::Payer {
            return Err(usage(VirtualUsageError::WrongRole("close")));
        }
        if !self.running || self.disputed() {
            return Err(usage(VirtualUsageError::WrongPhase("close")));
        }
        if let Some(f) = &self.fin {
            let sig = f.sigs[0];
            if let Some(signature) = sig {
                let state = self.final_vp(f.amount);
                self.broadcast(VirtualBody::Final { state, signature });
            }
            return Ok(());
        }
        let state = self.final_vp(self.paid);
        let signature = self.sign(signer, &state)?;
        let mut sigs = [None; 3];
        sigs[0] = Some(signature);
        self.fin = Some(FinalState {
            amount: self.paid,
            sigs,
        });
        self.broadcast(VirtualBody::Final { state, signature });
        Ok(())
    }

    /// Hub or payee: asks the payer for the final state.
    pub fn request_final(&mut self) -> Result<()> {
        if self.head.role == VirtualRole::Payer {
            return Err(usage(VirtualUsageError::WrongRole("request final")));
        }
        self.send(self.head.fixed.participants[0], VirtualBody::RequestFinal);
        Ok(())
    }

    /// Takes V on chain ([`VirtualChannel::chain_duties`]); the party also finalizes our ledgers
    /// that hold V's guarantee, no earlier than V.
    pub fn request_challenge(&mut self) -> Result<()> {
        if !self.prefund_complete() {
            return Err(usage(VirtualUsageError::WrongPhase("challenge")));
        }
        self.chain.challenge_requested = true;
        Ok(())
    }

    /// Re-queues the messages the state implies.
    pub fn resend(&mut self) {
        let me = self.head.role.index();
        if let Some(signature) = self.prefund[me] {
            if self.head.role == VirtualRole::Payer {
                let body = VirtualBody::Propose {
                    fixed: self.head.fixed.clone(),
                    asset: self.head.asset,
                    amount: self.amount,
                    fee: self.fee,
                    signature,
                };
                self.broadcast(body);
            } else {
                self.broadcast(VirtualBody::Prefund { signature });
            }
        }
        if let Some(signature) = self.postfund[me] {
            self.broadcast(VirtualBody::Postfund { signature });
        }
        if self.head.role == VirtualRole::Payer
            && let Some(v) = self.best
        {
            self.send(self.head.fixed.participants[2], VirtualBody::Voucher(v));
        }
        if let Some(f) = &self.fin
            && let Some(signature) = f.sigs[me]
        {
            let state = self.final_vp(f.amount);
            self.broadcast(VirtualBody::Final { state, signature });
        }
        self.relay_final(&[0, 1, 2]);
    }

    // ----- inputs -----------------------------------------------------------------------------

    /// A message from `from`.
    pub fn handle_message(
        &mut self,
        signer: &dyn Signer,
        from: Address,
        msg: &VirtualMessage,
    ) -> Result<()> {
        if msg.channel_id != self.id() {
            return Err(peer(VirtualPeerError::UnknownChannel(msg.channel_id)));
        }
        let Some(from_idx) = self.head.fixed.participants.iter().position(|p| *p == from) else {
            return Err(peer(VirtualPeerError::NotParticipant(from)));
        };
        if from_idx == self.head.role.index() {
            return Err(peer(VirtualPeerError::NotParticipant(from)));
        }
        match &msg.body {
            VirtualBody::Propose { signature, .. } => {
                // A resent proposal: the payer has not seen our prefund.
                if from_idx == 0 && self.prefund[0] == Some(*signature) {
                    if let Some(mine) = self.prefund[self.head.role.index()] {
                        self.send(from, VirtualBody::Prefund { signature: mine });
                    }
                    Ok(())
                } else {
                    Err(peer(VirtualPeerError::InvalidProposal(
                        "conflicting proposal",
                    )))
                }
            }
            VirtualBody::Prefund { signature } => {
                self.check_sig(
                    from_idx,
                    &self.funding_vp(PREFUND_TURN),
                    signature,
                    "prefund",
                )?;
                if self.prefund[from_idx].is_none() {
                    self.prefund[from_idx] = Some(*signature);
                    if self.prefund_complete() {
                        self.emit(VirtualEvent::PrefundComplete);
                    }
                }
                self.progress(signer)
            }
            VirtualBody::Postfund { signature } => {
                if !self.prefund_complete() {
                    return Err(peer(VirtualPeerError::Unexpected("postfund")));
                }
                self.check_sig(
                    from_idx,
                    &self.funding_vp(POSTFUND_TURN),
                    signature,
                    "postfund",
                )?;
                self.postfund[from_idx] = Some(*signature);
                self.progress(signer)
            }
            VirtualBody::Voucher(v) => self.on_voucher(from_idx, v),
            VirtualBody::Final { state, signature } => {
                self.on_final(signer, &[(from_idx, *signature)], state)
            }
            VirtualBody::FinalSupport { state, signatures } => {
                if signatures.len() != 3 {
                    return Err(peer(VirtualPeerError::InvalidFinal("not three signatures")));
                }
                let all: Vec<(usize, Signature)> = signatures.iter().copied().enumerate().collect();
                self.on_final(signer, &all, state)
            }
            VirtualBody::RequestFinal => {
                if self.head.role != VirtualRole::Payer {
                    return Err(peer(VirtualPeerError::WrongRole("request final")));
                }
                if !self.running || self.disputed() {
                    return Err(peer(VirtualPeerError::Unexpected("request final")));
                }
                self.close(signer)
            }
        }
    }

    fn on_voucher(&mut self, from_idx: usize, v: &Voucher) -> Result<()> {
        if self.head.role != VirtualRole::Payee {
            return Err(peer(VirtualPeerError::WrongRole("voucher")));
        }
        if from_idx != 0 {
            return Err(peer(VirtualPeerError::InvalidVoucher));
        }
        if !self.running {
            return Err(peer(VirtualPeerError::NotFunded));
        }
        if self.fin.is_some() || self.disputed() {
            return Err(peer(VirtualPeerError::Unexpected("voucher")));
        }
        if v.channel_id != self.id()
            || v.recover_signer().ok() != Some(self.head.fixed.participants[0])
        {
            return Err(peer(VirtualPeerError::InvalidVoucher));
        }
        if v.amount > self.amount {
            return Err(peer(VirtualPeerError::OverAmount {
                amount: self.amount,
                got: v.amount,
            }));
        }
        if v.amount < self.paid {
            return Err(peer(VirtualPeerError::LowerVoucher {
                best: self.paid,
                got: v.amount,
            }));
        }
        if v.amount == self.paid {
            return Ok(());
        }
        let delta = v.amount - self.paid;
        self.paid = v.amount;
        self.best = Some(*v);
        self.emit(VirtualEvent::PaymentReceived {
            delta,
            total: v.amount,
        });
        Ok(())
    }

    /// Parses a final state strictly against the postfund: turn 2, final, empty app data, one
    /// exit in our asset, two simple allocations to the payer and the payee, amounts adding up
    /// to `a0`. Returns the payee's amount.
    fn check_final_shape(&self, state: &VariablePart) -> Result<U256, VirtualPeerError> {
        use VirtualPeerError::InvalidFinal as F;
        if state.turn_num != FINAL_TURN || !state.is_final {
            return Err(F("not turn 2 and final"));
        }
        if !state.app_data.is_empty() {
            return Err(F("app data"));
        }
        let [exit] = state.outcome.as_slice() else {
            return Err(F("not one asset"));
        };
        if exit.asset != self.head.asset || exit.asset_metadata != AssetMetadata::default() {
            return Err(F("asset changed"));
        }
        let [a, b] = exit.allocations.as_slice() else {
            return Err(F("not two allocations"));
        };
        let dest = |i: usize| address_to_destination(self.head.fixed.participants[i]);
        if a.destination != dest(0) || b.destination != dest(2) {
            return Err(F("destinations differ from the postfund's"));
        }
        if [a, b]
            .iter()
            .any(|x| x.allocation_type != allocation_type::SIMPLE || !x.metadata.is_empty())
        {
            return Err(F("allocation type or metadata changed"));
        }
        if a.amount.checked_add(b.amount) != Some(self.amount) {
            return Err(F("amounts do not add up to the channel amount"));
        }
        Ok(b.amount)
    }

    /// A final state with `sigs` (participant index, signature) on it: checked as a whole (shape,
    /// our role's bound, every signature) before anything is recorded; we countersign it if we
    /// have not, and relay it signed by all once it is ([`VirtualBody::FinalSupport`]) to those
    /// who did not send us their signature.
    fn on_final(
        &mut self,
        signer: &dyn Signer,
        sigs: &[(usize, Signature)],
        state: &VariablePart,
    ) -> Result<()> {
        if !self.running {
            return Err(peer(VirtualPeerError::Unexpected("final")));
        }
        let x = self.check_final_shape(state).map_err(peer)?;
        match self.head.role {
            VirtualRole::Payee if x < self.paid => {
                return Err(peer(VirtualPeerError::FinalBelowPaid {
                    best: self.paid,
                    got: x,
                }));
            }
            VirtualRole::Payer if x > self.paid => {
                return Err(peer(VirtualPeerError::FinalAbovePaid {
                    paid: self.paid,
                    got: x,
                }));
            }
            _ => {}
        }
        if let Some(f) = &self.fin
            && f.amount != x
        {
            return Err(peer(VirtualPeerError::ConflictingFinal {
                signed: f.amount,
                got: x,
            }));
        }
        for (i, sig) in sigs {
            self.check_sig(*i, state, sig, "final")?;
        }
        let me = self.head.role.index();
        let mut fin = self.fin.clone().unwrap_or(FinalState {
            amount: x,
            sigs: [None; 3],
        });
        for (i, sig) in sigs {
            fin.sigs[*i] = Some(*sig);
        }
        if fin.sigs[me].is_none() {
            let mine = self.sign(signer, state)?;
            fin.sigs[me] = Some(mine);
            self.broadcast(VirtualBody::Final {
                state: state.clone(),
                signature: mine,
            });
        }
        let was = self.final_amount().is_some();
        self.fin = Some(fin);
        if !was && self.final_amount().is_some() {
            self.emit(VirtualEvent::Closed { paid: x });
            // Whoever sent us only its own signature may lack a third one.
            if let [(from, _)] = sigs {
                self.relay_final(&[*from]);
            }
        }
        Ok(())
    }

    /// Sends the final state signed by all to the participants in `to` (indices), if we hold it.
    fn relay_final(&mut self, to: &[usize]) {
        let Some(f) = &self.fin else { return };
        let Some(signatures) = f.sigs.iter().copied().collect::<Option<Vec<_>>>() else {
            return;
        };
        let state = self.final_vp(f.amount);
        for i in to {
            if *i != self.head.role.index() {
                self.send(
                    self.head.fixed.participants[*i],
                    VirtualBody::FinalSupport {
                        state: state.clone(),
                        signatures: signatures.clone(),
                    },
                );
            }
        }
    }

    /// An adjudicator event about V.
    pub fn handle_chain_event(&mut self, now: u64, ev: &ChainEvent) -> Result<()> {
        if ev.channel_id() != self.id() {
            return Err(usage(VirtualUsageError::Unknown(ev.channel_id())));
        }
        match ev {
            ChainEvent::ChallengeRegistered {
                finalizes_at,
                candidate,
                ..
            } => {
                self.chain.challenge = Some(VirtualChallenge {
                    candidate: candidate.variable_part.clone(),
                    finalizes_at: *finalizes_at,
                });
                self.chain.challenge_requested = false;
                self.emit(VirtualEvent::ChallengeRegistered {
                    turn_num: candidate.variable_part.turn_num,
                    finalizes_at: *finalizes_at,
                });
            }
            ChainEvent::Concluded { finalizes_at, .. } => {
                if self.chain.finalized.is_none() {
                    let x = self.fin.as_ref().map(|f| f.amount).ok_or_else(|| {
                        peer(VirtualPeerError::Unexpected(
                            "conclude without a final state",
                        ))
                    })?;
                    self.chain.finalized = Some(Finalization {
                        outcome: self.final_vp(x).outcome,
                        state_hash: B256::ZERO,
                        at: *finalizes_at,
                    });
                    self.emit(VirtualEvent::Finalized);
                }
            }
            ChainEvent::ChallengeCleared { .. } | ChainEvent::Checkpointed { .. } => {
                if self.chain.finalized.is_none() {
                    self.chain.challenge = None;
                }
            }
            ChainEvent::Deposited { .. }
            | ChainEvent::AllocationUpdated { .. }
            | ChainEvent::Reclaimed { .. } => {}
        }
        self.handle_timeout(now);
        Ok(())
    }

    /// Chain time passed.
    pub fn handle_timeout(&mut self, now: u64) {
        let id = self.id();
        let challenge = (self.chain.challenge.as_ref())
            .map(|c| RegisteredChallenge::new(id, c.finalizes_at, &c.candidate));
        if finalize_on_timeout(&mut self.chain.finalized, challenge.as_ref(), now) {
            self.emit(VirtualEvent::Finalized);
        }
    }

    /// Whether V is on chain or asked to be.
    pub fn disputed(&self) -> bool {
        self.chain.challenge_requested
            || self.chain.challenge.is_some()
            || self.chain.finalized.is_some()
    }

    /// What V owes the chain (`reclaim` and ledger challenges come from the [`Party`]): with a
    /// final state signed by all, `conclude`; otherwise the best challenge of our role — the payee
    /// its redemption with the best voucher (proof: the postfund signed by all), the others the
    /// postfund (or the prefund) signed by all — and the payee's counter-challenge when a
    /// registered candidate below turn 2 pays it less than its best voucher.
    pub fn chain_duties(&self, signer: &dyn Signer, now: u64) -> Result<Vec<ChainAction>> {
        let mut duties = Vec::new();
        if self.chain.finalized.is_some() || !self.disputed() {
            return Ok(duties);
        }
        if let Some(candidate) = self.final_signed() {
            duties.push(ChainAction::Conclude {
                fixed: self.head.fixed.clone(),
                candidate,
            });
            return Ok(duties);
        }
        let registered = self
            .chain
            .challenge
            .as_ref()
            .filter(|c| c.finalizes_at > now);
        let want = match registered {
            None => self.chain.challenge_requested,
            Some(c) => {
                let paid_on_chain = c
                    .candidate
                    .outcome
                    .first()
                    .and_then(|e| e.allocations.get(1))
                    .map(|a| a.amount)
                    .unwrap_or_default();
                self.head.role == VirtualRole::Payee
                    && c.candidate.turn_num < FINAL_TURN
                    && paid_on_chain < self.paid
            }
        };
        if !want {
            return Ok(duties);
        }
        let (proof, candidate) = self.best_support(signer)?;
        let hash = candidate.variable_part.hash(self.id());
        let challenger_sig = signer.sign_eth_message(&challenge_message_hash(hash))?;
        duties.push(ChainAction::Challenge {
            fixed: self.head.fixed.clone(),
            proof,
            candidate,
            challenger_sig,
        });
        Ok(duties)
    }

    fn best_support(
        &self,
        signer: &dyn Signer,
    ) -> Result<(Vec<SignedVariablePart>, SignedVariablePart)> {
        let all = |sigs: &[Option<Signature>; 3]| -> Option<Vec<Signature>> {
            sigs.iter().copied().collect()
        };
        let postfund = all(&self.postfund).map(|sigs| SignedVariablePart {
            variable_part: self.funding_vp(POSTFUND_TURN),
            sigs,
        });
        if self.head.role == VirtualRole::Payee
            && let (Some(pf), Some(v)) = (&postfund, &self.best)
        {
            let mut state = self.final_vp(v.amount);
            state.is_final = false;
            state.app_data = v.app_data();
            let sig = self.sign(signer, &state)?;
            return Ok((
                vec![pf.clone()],
                SignedVariablePart {
                    variable_part: state,
                    sigs: vec![sig],
                },
            ));
        }
        if let Some(pf) = postfund {
            return Ok((Vec::new(), pf));
        }
        let sigs =
            all(&self.prefund).ok_or_else(|| usage(VirtualUsageError::WrongPhase("challenge")))?;
        Ok((
            Vec::new(),
            SignedVariablePart {
                variable_part: self.funding_vp(PREFUND_TURN),
                sigs,
            },
        ))
    }

    // ----- helpers ----------------------------------------------------------------------------

    fn final_signed(&self) -> Option<SignedVariablePart> {
        let f = self.fin.as_ref()?;
        let sigs: Option<Vec<Signature>> = f.sigs.iter().copied().collect();
        Some(SignedVariablePart {
            variable_part: self.final_vp(f.amount),
            sigs: sigs?,
        })
    }

    fn outcome(&self, x: U256) -> Outcome {
        vec![SingleAssetExit {
            asset: self.head.asset,
            asset_metadata: AssetMetadata::default(),
            allocations: vec![
                Allocation::simple(
                    self.head.fixed.participants[0],
                    self.amount.saturating_sub(x),
                ),
                Allocation::simple(self.head.fixed.participants[2], x),
            ],
        }]
    }

    fn funding_vp(&self, turn_num: u64) -> VariablePart {
        VariablePart {
            outcome: self.outcome(U256::ZERO),
            app_data: Bytes::new(),
            turn_num,
            is_final: false,
        }
    }

    fn final_vp(&self, x: U256) -> VariablePart {
        VariablePart {
            outcome: self.outcome(x),
            app_data: Bytes::new(),
            turn_num: FINAL_TURN,
            is_final: true,
        }
    }

    fn sign(&self, signer: &dyn Signer, vp: &VariablePart) -> Result<Signature> {
        if signer.address() != self.head.fixed.participants[self.head.role.index()] {
            return Err(usage(VirtualUsageError::InvalidParams(
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
            Err(peer(VirtualPeerError::BadSignature(what)))
        }
    }

    fn send(&mut self, to: Address, body: VirtualBody) {
        self.out.push_back(VirtualOutput::Send {
            to,
            msg: VirtualMessage {
                channel_id: self.id(),
                body,
            },
        });
    }

    fn broadcast(&mut self, body: VirtualBody) {
        let me = self.head.role.index();
        for i in 0..3 {
            if i != me {
                self.send(self.head.fixed.participants[i], body.clone());
            }
        }
    }

    fn emit(&mut self, ev: VirtualEvent) {
        self.out.push_back(VirtualOutput::Event(ev));
    }

    /// The next output.
    pub fn poll_output(&mut self) -> Option<VirtualOutput> {
        self.out.pop_front()
    }
}
