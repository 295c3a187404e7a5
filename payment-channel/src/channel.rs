//! The sans-IO payment channel state machine.
//!
//! A [`Channel`] is one side (payer or payee) of one channel. It performs no I/O, reads no clock
//! and draws no randomness: time (`now`, unix seconds **of the chain**) is passed in, inputs come
//! through `handle_*`, commands are plain verbs, and everything the caller must do comes out of
//! `poll_*`. The async [`Client`](crate::client::Client) is one driver; tests drive it by hand.
//!
//! # Calling contract
//!
//! * **Inputs**: [`Channel::handle_message`] (a message from the counterparty),
//!   [`Channel::handle_chain_event`] (an adjudicator event about this channel, in chain order;
//!   replays are harmless), [`Channel::handle_timeout`] (chain time passed).
//! * **Commands**: [`Channel::join`], [`Channel::send_payment`], [`Channel::close`],
//!   [`Channel::challenge`], [`Channel::resend`].
//! * **Outputs**, after every input or command, in this order:
//!   1. [`Channel::poll_persist`] until `None`: store what it returns durably (the voucher with
//!      [`ChannelStore::put_voucher`](crate::store::ChannelStore::put_voucher), the snapshot with
//!      `put_channel`), then call [`Channel::handle_persisted`]. **No other output is released
//!      before the state that produced it is persisted**: a payer's voucher never leaves before it
//!      is stored, and a payee never sees `PaymentReceived` before the voucher is stored.
//!   2. [`Channel::poll_outbound`]: envelopes to send to the counterparty.
//!   3. [`Channel::poll_event`]: events for the application.
//!   4. [`Channel::poll_chain_action`]: transactions to send; afterwards feed the resulting chain
//!      events back with [`Channel::handle_chain_event`].
//!
//! A queued transaction is released once; if sending it fails, or the driver stops before it
//! is sent, [`Channel::chain_duty`] still names it: it derives what the channel owes the chain
//! from the persisted state alone, so a driver asks it after every watch and every restart
//! (and checks the chain before sending, since the transaction may have landed already).
//!   5. [`Channel::poll_timeout`]: when to call [`Channel::handle_timeout`] next.
//!
//! An input or command that returns `Err` leaves the channel unchanged and queues nothing
//! (only `handle_timeout` effects of the `now` passed in may have happened).
//!
//! # Protocol (Nitro v2, `PaymentApp`, participants `[payer, payee]`, one asset: native or ERC-20)
//!
//! | turn | state | outcome `{payer, payee}` | signed by |
//! |------|-------|--------------------------|-----------|
//! | 0 | prefund | `{D, 0}` | payee (in [`Propose`]), then payer (in [`Join`]) |
//! | 1 | postfund | `{D, 0}` | payer (in [`Join`], after the deposit is on chain), then payee (in [`Postfund`], after it sees `holdings ≥ D`) |
//! | 2 | redemption | `{D − v, v}`, app data = voucher `v` | payee alone, only to challenge |
//! | 3 | final (`isFinal`) | `{D − a, a}` | both, in [`Close`] messages |
//!
//! The final state uses turn 3, above every state `PaymentApp` can support (0, 1, 2), so it
//! can never be confused with them; `conclude` does not consult the app, so any turn works.
//!
//! **Funding.** The payer deposits only once the prefund is signed by both (it can then always
//! recover its deposit with a prefund challenge). The payee counts the channel as running only
//! once the postfund is signed by both **and** it has seen `holdings ≥ D` on chain.
//!
//! **Payments** are cumulative vouchers. The payee keeps the largest; an equal voucher is a
//! harmless duplicate; a lower one is a replay and an error; one above the deposit is an error.
//!
//! **Close.** Either side signs the final state for the amount it knows (payer: total sent; payee:
//! total received) and sends [`Close`]. The payee countersigns any amount `≥` what it received,
//! the payer any amount `≤` what it sent. If both start a close at once with different amounts, the
//! payer's proposal wins (the payee countersigns it; the payer rejects the payee's). A payee credits
//! nothing above a final state it has signed. Whoever holds the final state signed by both asks
//! for `conclude` then `transferAllAssets(outcome, 0)` unless its share is zero (no gas for
//! nothing: the other side, which gets the money, pays for them); the
//! [`Client`](crate::client::Client) skips them when the chain shows they already happened.
//!
//! **Disputes.** [`Channel::challenge`] registers the best state we can support: the payee the
//! redemption state with its largest voucher (proof: the postfund signed by both), otherwise the
//! latest state signed by both (proof: none). It refuses when the challenge would claim nothing
//! for us (a payee without a voucher above zero, a payer that signed its whole deposit away). While a challenge is registered, payments stop.
//! When the payee sees a registered challenge whose candidate pays it less than its best voucher
//! and whose turn is below 2, it **counter-challenges** at turn 2 with that voucher (a challenge
//! in Challenge mode must raise the turn, and doing so both clears the stale challenge and puts
//! the better outcome on chain with a fresh timeout). A `checkpoint` would only clear the stale
//! challenge and leave the payee to challenge again; with a final state signed by both, either
//! side answers a challenge with `conclude` instead. After the timeout the channel is finalized
//! and either side asks for `transferAllAssets(candidate outcome, candidate state hash)`.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;

use alloy_primitives::{Address, B256, Bytes, U256};
use serde::{Deserialize, Serialize};

use crate::chain::ChainEvent;
use crate::error::{Error, PeerMisbehaved, UsageError};
use crate::message::{Close, Envelope, Join, Message, Postfund, Propose, VoucherMessage};
use crate::sign::{
    PublicKey, Signature, Signer, recover_eth_message, recover_key_eth_message, verify_eth_message,
};
use crate::state::{
    FixedPart, MAX_UINT48, Outcome, SignedVariablePart, VariablePart, challenge_message_hash,
    two_party_outcome,
};
use crate::voucher::Voucher;

pub use crate::role::{PhaseKind, Role};

/// Turn number of the prefund state.
pub const PREFUND_TURN: u64 = 0;
/// Turn number of the postfund state.
pub const POSTFUND_TURN: u64 = 1;
/// Turn number of the payee's redemption state (challenge only).
pub const REDEMPTION_TURN: u64 = 2;
/// Turn number of the final state of a cooperative close.
pub const FINAL_TURN: u64 = 3;

/// The off-chain phase with its data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
enum Phase {
    Proposed,
    Funding,
    AwaitingPostfund,
    Running,
    /// We signed the final state paying the payee `amount`.
    Closing {
        amount: U256,
        sigs: Sigs,
    },
    /// Both signed the final state paying the payee `amount`.
    Closed {
        amount: U256,
        sigs: Sigs,
        /// Whether we proposed it (then the peer already has both signatures).
        initiated: bool,
    },
}

/// Signatures on one state, by role.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Sigs {
    payer: Option<Signature>,
    payee: Option<Signature>,
}

impl Sigs {
    fn get(&self, role: Role) -> Option<Signature> {
        match role {
            Role::Payer => self.payer,
            Role::Payee => self.payee,
        }
    }
    fn set(&mut self, role: Role, sig: Signature) {
        match role {
            Role::Payer => self.payer = Some(sig),
            Role::Payee => self.payee = Some(sig),
        }
    }
    fn both(&self) -> bool {
        self.payer.is_some() && self.payee.is_some()
    }
    fn to_vec(&self) -> Vec<Signature> {
        self.payer
            .iter()
            .chain(self.payee.iter())
            .copied()
            .collect()
    }
}

/// A challenge registered on chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisteredChallenge {
    /// Turn of the candidate.
    pub turn_num: u64,
    /// When it finalizes unless cleared.
    pub finalizes_at: u64,
    /// The candidate state.
    pub candidate: VariablePart,
    /// Its state hash (what `transferAllAssets` needs after the timeout).
    pub state_hash: B256,
}

/// How the channel finalized on chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finalization {
    /// The outcome that pays out.
    pub outcome: Outcome,
    /// The `stateHash` argument of `transferAllAssets` (zero after `conclude`).
    pub state_hash: B256,
    /// Finalization time.
    pub at: u64,
}

/// What this side knows about the channel on chain.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OnChain {
    /// The channel's holdings in its asset, as the latest applied adjudicator event reports
    /// them (`Deposited`, or a payout's `AllocationUpdated`): replaced, never accumulated.
    pub holdings: U256,
    /// The registered challenge, if any.
    pub challenge: Option<RegisteredChallenge>,
    /// Set once the channel finalized.
    pub finalized: Option<Finalization>,
    /// Set once the payout happened.
    pub paid_out: bool,
    /// Largest turn number the adjudicator recorded (never decreases on chain, so replayed
    /// older events are recognized and ignored).
    #[serde(default)]
    pub turn_num_record: u64,
    /// First block whose adjudicator events have not been applied yet (persisted with the
    /// state they produced, so a restart reads only newer blocks).
    #[serde(default)]
    pub next_block: u64,
    /// We asked for a challenge ([`Channel::challenge`]) and no challenge has registered since:
    /// the challenge stays a duty ([`Channel::chain_duty`]) across failures and restarts.
    #[serde(default)]
    pub challenge_requested: bool,
}

/// Everything a channel persists. Opaque; JSON inside.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct State {
    version: u8,
    role: Role,
    fixed: FixedPart,
    /// The asset of the deposit and of every outcome (`Address::ZERO`: the native coin).
    #[serde(default)]
    asset: Address,
    deposit: U256,
    price: Option<U256>,
    phase: Phase,
    prefund: Sigs,
    postfund: Sigs,
    /// Payer: the latest voucher signed. Payee: the largest voucher received.
    best: Option<Voucher>,
    /// Payer: total signed. Payee: total credited (can exceed `best` after a close paying more).
    paid: U256,
    chain: OnChain,
}

impl State {
    /// A freshly proposed channel: nothing signed, paid or seen on chain yet.
    fn proposed(
        role: Role,
        fixed: FixedPart,
        asset: Address,
        deposit: U256,
        price: Option<U256>,
    ) -> Self {
        Self {
            version: SNAPSHOT_VERSION,
            role,
            fixed,
            asset,
            deposit,
            price,
            phase: Phase::Proposed,
            prefund: Sigs::default(),
            postfund: Sigs::default(),
            best: None,
            paid: U256::ZERO,
            chain: OnChain::default(),
        }
    }
}

/// A serializable copy of a channel's durable state, for [`ChannelStore::put_channel`](crate::store::ChannelStore::put_channel).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelSnapshot(State);

const SNAPSHOT_VERSION: u8 = 1;

impl ChannelSnapshot {
    /// The channel.
    pub fn channel_id(&self) -> B256 {
        self.0.fixed.channel_id()
    }

    /// The record's bytes (JSON).
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(&self.0).expect("snapshot serialization is infallible")
    }

    /// Parses a record.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, UsageError> {
        let state: State = serde_json::from_slice(bytes)
            .map_err(|e| UsageError::CorruptSnapshot(e.to_string()))?;
        if state.version != SNAPSHOT_VERSION {
            return Err(UsageError::CorruptSnapshot(format!(
                "unknown version {}",
                state.version
            )));
        }
        Ok(Self(state))
    }
}

/// What to store before the outputs of a generation are released.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Persist {
    /// Pass back to [`Channel::handle_persisted`].
    pub generation: u64,
    /// The channel.
    pub channel_id: B256,
    /// The new snapshot, if more than the best voucher changed.
    pub snapshot: Option<ChannelSnapshot>,
    /// The new best voucher (payer: signed; payee: received), if it changed.
    pub voucher: Option<Voucher>,
}

/// Something the application should know.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// Payer: a valid proposal arrived (decide with [`Channel::join`]).
    Proposed {
        /// Who proposes (the payee).
        payee: Address,
        /// Deposit asked for.
        deposit: U256,
        /// Advertised price.
        price: Option<U256>,
        /// The asset the deposit is in (`Address::ZERO`: the native coin).
        asset: Address,
    },
    /// Payer: we joined and asked for the deposit. Payee: the payer's join verified.
    Joined,
    /// The channel is running (funded, postfund signed by both).
    Funded,
    /// Payer: a voucher was signed (and stored) and is on its way.
    PaymentSent {
        /// This payment.
        delta: U256,
        /// Cumulative total.
        total: U256,
    },
    /// Payee: a payment is stored and can be credited.
    PaymentReceived {
        /// This payment.
        delta: U256,
        /// Cumulative total.
        total: U256,
    },
    /// We signed the final state paying the payee `amount`.
    Closing {
        /// Payee's amount.
        amount: U256,
    },
    /// The final state is signed by both.
    Closed {
        /// Payee's amount.
        amount: U256,
    },
    /// A challenge was registered on chain.
    ChallengeRegistered {
        /// Candidate turn.
        turn_num: u64,
        /// Finalization time unless cleared.
        finalizes_at: u64,
    },
    /// The registered challenge was cleared.
    ChallengeCleared,
    /// The channel finalized on chain.
    Finalized {
        /// Our amount in the final outcome.
        amount: U256,
    },
    /// The payout happened.
    PaidOut {
        /// What we received.
        amount: U256,
    },
}

/// A transaction the driver must send with [`Chain`](crate::chain::Chain).
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
    /// `conclude(fixedPart, candidate)`; skip if the chain shows the channel finalized.
    Conclude {
        /// Fixed part.
        fixed: FixedPart,
        /// The final state signed by both.
        candidate: SignedVariablePart,
    },
    /// `transferAllAssets(channelId, outcome, stateHash)`; skip if the holdings are already zero.
    Transfer {
        /// Channel.
        channel_id: B256,
        /// The finalized outcome.
        outcome: Outcome,
        /// The finalized state hash (zero after conclude).
        state_hash: B256,
    },
}

#[derive(Debug, Default)]
struct Outputs {
    outbound: VecDeque<Envelope>,
    events: VecDeque<Event>,
    actions: VecDeque<ChainAction>,
}

impl Outputs {
    fn append(&mut self, other: &mut Self) {
        self.outbound.append(&mut other.outbound);
        self.events.append(&mut other.events);
        self.actions.append(&mut other.actions);
    }
}

/// Parameters of a channel the payee creates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelParams {
    /// The payer (counterparty).
    pub payer: Address,
    /// The deposit the payer is asked for.
    pub deposit: U256,
    /// Nonce; choose it so that the channel id is new.
    pub channel_nonce: u64,
    /// The deployed `PaymentApp` (see [`crate::app`]).
    pub app_definition: Address,
    /// Challenge duration in seconds.
    pub challenge_duration: u64,
    /// Advisory price (smallest units of the asset per byte).
    pub price: Option<U256>,
    /// The asset of the deposit (`Address::ZERO`: the native coin; otherwise an ERC-20).
    pub asset: Address,
}

/// One side of one payment channel. See the [module docs](self) for the calling contract.
pub struct Channel {
    st: State,
    id: B256,
    me: Address,
    signer: Arc<dyn Signer>,
    /// Payee: the payer's key, recovered once from its prefund signature (fast voucher checks).
    payer_key: Option<PublicKey>,
    generation: u64,
    persisted: u64,
    snapshot_dirty: bool,
    voucher_dirty: bool,
    staged: Outputs,
    ready: Outputs,
}

impl fmt::Debug for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Channel")
            .field("id", &self.id)
            .field("role", &self.st.role)
            .field("phase", &self.phase())
            .field("deposit", &self.st.deposit)
            .field("paid", &self.st.paid)
            .field("chain", &self.st.chain)
            .finish_non_exhaustive()
    }
}

fn check_duration(d: u64) -> bool {
    d > 0 && d <= MAX_UINT48
}

impl Channel {
    // ----- construction -------------------------------------------------------------------

    /// Payee: creates a channel, signs the prefund and queues a [`Propose`] to the payer.
    pub fn create(signer: Arc<dyn Signer>, params: ChannelParams) -> Result<Self, Error> {
        let me = signer.address();
        if params.payer == me || params.payer == Address::ZERO {
            return Err(
                UsageError::InvalidParams("payer must be another, non-zero address").into(),
            );
        }
        if params.deposit.is_zero() {
            return Err(UsageError::InvalidParams("deposit must be positive").into());
        }
        if !check_duration(params.challenge_duration) {
            return Err(UsageError::InvalidParams("challenge duration out of range").into());
        }
        let fixed = FixedPart {
            participants: vec![params.payer, me],
            channel_nonce: params.channel_nonce,
            app_definition: params.app_definition,
            challenge_duration: params.challenge_duration,
        };
        let mut ch = Self::new(
            signer,
            State::proposed(
                Role::Payee,
                fixed,
                params.asset,
                params.deposit,
                params.price,
            ),
        );
        let sig = ch.sign_state(&ch.prefund_vp())?;
        ch.st.prefund.set(Role::Payee, sig);
        ch.changed();
        ch.send(Message::Propose(ch.propose_message()));
        Ok(ch)
    }

    /// Payer: a channel from a peer's proposal, after checking its structure and the payee's
    /// signature (policy is separate: [`JoinPolicy`](crate::policy::JoinPolicy)). Queues
    /// [`Event::Proposed`]; call [`Channel::join`] to accept.
    pub fn from_proposal(signer: Arc<dyn Signer>, proposal: &Propose) -> Result<Self, Error> {
        let me = signer.address();
        let fixed = &proposal.fixed;
        let invalid = |why| Error::from(PeerMisbehaved::InvalidProposal(why));
        if fixed.participants.len() != 2 {
            return Err(invalid("a payment channel has exactly two participants"));
        }
        if fixed.participants[0] != me {
            return Err(invalid("we are not the payer (participants[0])"));
        }
        let payee = fixed.participants[1];
        if payee == me || payee == Address::ZERO {
            return Err(invalid("the payee must be another, non-zero address"));
        }
        if proposal.deposit.is_zero() {
            return Err(invalid("zero deposit"));
        }
        if !check_duration(fixed.challenge_duration) {
            return Err(invalid("challenge duration out of range"));
        }
        let mut ch = Self::new(
            signer,
            State::proposed(
                Role::Payer,
                fixed.clone(),
                proposal.asset,
                proposal.deposit,
                proposal.price,
            ),
        );
        let hash = ch.prefund_vp().hash(ch.id);
        ch.check_sig(Role::Payee, &hash, &proposal.signature, "prefund")?;
        ch.st.prefund.set(Role::Payee, proposal.signature);
        ch.changed();
        ch.emit(Event::Proposed {
            payee,
            deposit: proposal.deposit,
            price: proposal.price,
            asset: proposal.asset,
        });
        Ok(ch)
    }

    /// Rebuilds a channel from its snapshot and the best voucher in the store (which may be newer
    /// than the snapshot: vouchers are persisted alone). Nothing is queued; call
    /// [`Channel::resend`] to repeat what the peer may have missed.
    pub fn restore(
        signer: Arc<dyn Signer>,
        snapshot: ChannelSnapshot,
        stored_voucher: Option<Voucher>,
    ) -> Result<Self, Error> {
        let st = snapshot.0;
        let me = signer.address();
        if st.fixed.participants.len() != 2 || st.fixed.participants[st.role.index()] != me {
            return Err(UsageError::InvalidParams("the signer is not our participant").into());
        }
        let mut ch = Self::new(signer, st);
        if let Some(sig) = ch.st.prefund.payer {
            let hash = ch.prefund_vp().hash(ch.id);
            ch.payer_key = recover_key_eth_message(&hash, &sig)
                .ok()
                .filter(|k| k.address() == ch.payer());
        }
        if let Some(v) = stored_voucher {
            let better = ch.st.best.is_none_or(|b| v.amount > b.amount);
            if v.channel_id == ch.id && better && v.amount <= ch.st.deposit {
                ch.check_voucher_sig(&v)?;
                ch.st.best = Some(v);
                if v.amount > ch.st.paid {
                    ch.st.paid = v.amount;
                }
                ch.changed();
            }
        }
        Ok(ch)
    }

    fn new(signer: Arc<dyn Signer>, st: State) -> Self {
        Self {
            id: st.fixed.channel_id(),
            me: signer.address(),
            signer,
            st,
            payer_key: None,
            generation: 0,
            persisted: 0,
            snapshot_dirty: false,
            voucher_dirty: false,
            staged: Outputs::default(),
            ready: Outputs::default(),
        }
    }

    // ----- accessors ----------------------------------------------------------------------

    /// The channel id.
    pub fn id(&self) -> B256 {
        self.id
    }
    /// Our role.
    pub fn role(&self) -> Role {
        self.st.role
    }
    /// Our address.
    pub fn me(&self) -> Address {
        self.me
    }
    /// The payer's address.
    pub fn payer(&self) -> Address {
        self.st.fixed.participants[0]
    }
    /// The payee's address.
    pub fn payee(&self) -> Address {
        self.st.fixed.participants[1]
    }
    /// The counterparty's address.
    pub fn counterparty(&self) -> Address {
        self.st.fixed.participants[self.st.role.other().index()]
    }
    /// The fixed part.
    pub fn fixed_part(&self) -> &FixedPart {
        &self.st.fixed
    }
    /// The deposit.
    pub fn deposit(&self) -> U256 {
        self.st.deposit
    }
    /// The asset of the deposit and the payments (`Address::ZERO`: the native coin).
    pub fn asset(&self) -> Address {
        self.st.asset
    }
    /// The advertised price.
    pub fn price(&self) -> Option<U256> {
        self.st.price
    }
    /// Payer: total signed away. Payee: total credited.
    pub fn paid(&self) -> U256 {
        self.st.paid
    }
    /// What the payer can still pay.
    pub fn remaining(&self) -> U256 {
        self.st.deposit.saturating_sub(self.st.paid)
    }
    /// The best voucher (payer: latest signed; payee: largest received).
    pub fn best_voucher(&self) -> Option<&Voucher> {
        self.st.best.as_ref()
    }
    /// The phase (`Finalized` once the chain says so).
    pub fn phase(&self) -> PhaseKind {
        if self.st.chain.finalized.is_some() {
            return PhaseKind::Finalized;
        }
        match self.st.phase {
            Phase::Proposed => PhaseKind::Proposed,
            Phase::Funding => PhaseKind::Funding,
            Phase::AwaitingPostfund => PhaseKind::AwaitingPostfund,
            Phase::Running => PhaseKind::Running,
            Phase::Closing { .. } => PhaseKind::Closing,
            Phase::Closed { .. } => PhaseKind::Closed,
        }
    }
    /// Whether payments can flow: running, no challenge registered, not finalized.
    pub fn is_running(&self) -> bool {
        matches!(self.st.phase, Phase::Running) && !self.is_disputed()
    }
    /// Whether a challenge is registered or the channel finalized.
    pub fn is_disputed(&self) -> bool {
        self.st.chain.challenge.is_some() || self.st.chain.finalized.is_some()
    }
    /// What we know of the chain.
    pub fn on_chain(&self) -> &OnChain {
        &self.st.chain
    }
    /// The amount of the final state we signed, if any.
    pub fn final_amount(&self) -> Option<U256> {
        match &self.st.phase {
            Phase::Closing { amount, .. } | Phase::Closed { amount, .. } => Some(*amount),
            _ => None,
        }
    }
    /// Whether the channel is settled (paid out) and can be forgotten.
    pub fn is_settled(&self) -> bool {
        self.st.chain.paid_out
    }
    /// A snapshot of the durable state.
    pub fn snapshot(&self) -> ChannelSnapshot {
        ChannelSnapshot(self.st.clone())
    }

    // ----- outputs ------------------------------------------------------------------------

    /// What must be stored before further outputs are released (see the calling contract).
    pub fn poll_persist(&self) -> Option<Persist> {
        (self.generation != self.persisted).then(|| Persist {
            generation: self.generation,
            channel_id: self.id,
            snapshot: self.snapshot_dirty.then(|| self.snapshot()),
            voucher: if self.voucher_dirty {
                self.st.best
            } else {
                None
            },
        })
    }

    /// Reports that the [`Persist`] of `generation` is durable. An older generation is ignored.
    pub fn handle_persisted(&mut self, generation: u64) {
        if generation == self.generation {
            self.persisted = generation;
            self.snapshot_dirty = false;
            self.voucher_dirty = false;
        }
    }

    fn release(&mut self) {
        if self.generation == self.persisted {
            self.ready.append(&mut self.staged);
        }
    }

    /// The next envelope for the counterparty.
    pub fn poll_outbound(&mut self) -> Option<Envelope> {
        self.release();
        self.ready.outbound.pop_front()
    }

    /// The next application event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.release();
        self.ready.events.pop_front()
    }

    /// The next transaction to send.
    pub fn poll_chain_action(&mut self) -> Option<ChainAction> {
        self.release();
        self.ready.actions.pop_front()
    }

    /// When [`Channel::handle_timeout`] must next be called (a registered challenge's
    /// finalization time), in chain seconds.
    pub fn poll_timeout(&self) -> Option<u64> {
        if self.st.chain.finalized.is_some() {
            return None;
        }
        self.st.chain.challenge.as_ref().map(|c| c.finalizes_at)
    }

    // ----- commands -----------------------------------------------------------------------

    /// Payer: accepts the proposal: countersigns the prefund and asks for the deposit
    /// ([`ChainAction::Deposit`]). Once the chain shows the deposit, the channel signs the
    /// postfund and sends [`Join`]. Calling it again while funding re-queues the deposit (retry).
    pub fn join(&mut self) -> Result<(), Error> {
        self.require_role(Role::Payer, "join")?;
        match self.st.phase {
            Phase::Proposed => {
                let sig = self.sign_state(&self.prefund_vp())?;
                self.st.prefund.set(Role::Payer, sig);
                self.st.phase = Phase::Funding;
                self.changed();
                self.emit(Event::Joined);
                self.request_deposit();
                self.progress()
            }
            Phase::Funding => {
                self.request_deposit();
                Ok(())
            }
            _ => Err(self.wrong_phase("join")),
        }
    }

    fn request_deposit(&mut self) {
        let held = self.st.chain.holdings;
        if held < self.st.deposit {
            self.act(ChainAction::Deposit {
                asset: self.st.asset,
                channel_id: self.id,
                expected_held: held,
                amount: self.st.deposit - held,
            });
        }
    }

    /// Payer: pays `delta` more: signs the voucher for the new cumulative total and queues it.
    /// Refuses (signing nothing) beyond the deposit. A zero `delta` re-sends the latest voucher
    /// (or signs one for zero).
    pub fn send_payment(&mut self, delta: U256) -> Result<Voucher, Error> {
        self.require_role(Role::Payer, "send_payment")?;
        if !matches!(self.st.phase, Phase::Running) {
            return Err(self.wrong_phase("send_payment"));
        }
        if self.is_disputed() {
            return Err(UsageError::Disputed {
                operation: "send_payment",
            }
            .into());
        }
        let total = self.st.paid.checked_add(delta);
        let Some(total) = total.filter(|t| *t <= self.st.deposit) else {
            return Err(UsageError::PayBeyondDeposit {
                deposit: self.st.deposit,
                delta,
                total,
            }
            .into());
        };
        if delta.is_zero()
            && let Some(best) = self.st.best
        {
            self.send(Message::Voucher(VoucherMessage::from_voucher(&best)));
            return Ok(best);
        }
        let voucher = Voucher::sign(self.id, total, &*self.signer)?;
        self.st.best = Some(voucher);
        self.st.paid = total;
        self.voucher_changed();
        self.send(Message::Voucher(VoucherMessage::from_voucher(&voucher)));
        self.emit(Event::PaymentSent { delta, total });
        Ok(voucher)
    }

    /// Either side: starts a cooperative close by signing the final state for the amount we know
    /// (payer: total sent; payee: total received). While closing it re-sends our signature; once
    /// closed and not yet finalized it re-queues the `conclude`.
    pub fn close(&mut self) -> Result<(), Error> {
        if self.st.chain.finalized.is_some() {
            return Err(self.wrong_phase("close"));
        }
        match &self.st.phase {
            Phase::Running => {
                let amount = self.st.paid;
                let sig = self.sign_state(&self.final_vp(amount))?;
                let mut sigs = Sigs::default();
                sigs.set(self.st.role, sig);
                self.st.phase = Phase::Closing { amount, sigs };
                self.changed();
                self.send_close(amount, sig);
                self.emit(Event::Closing { amount });
                Ok(())
            }
            Phase::Closing { .. } => {
                self.resend();
                Ok(())
            }
            Phase::Closed { .. } => {
                self.request_conclude();
                Ok(())
            }
            _ => Err(self.wrong_phase("close")),
        }
    }

    /// Either side: takes the channel on chain with the best state we can support (see the module
    /// docs). With a final state signed by both, asks for `conclude` instead.
    pub fn challenge(&mut self, now: u64) -> Result<(), Error> {
        self.handle_timeout(now);
        if self.st.chain.finalized.is_some() {
            return Err(UsageError::CannotChallenge("the channel is finalized").into());
        }
        if matches!(self.st.phase, Phase::Closed { .. }) {
            self.request_conclude();
            return Ok(());
        }
        let Some((proof, candidate)) = self.best_supported()? else {
            return Err(UsageError::CannotChallenge("no state is signed by both").into());
        };
        if let Some(reg) = &self.st.chain.challenge
            && reg.turn_num >= candidate.variable_part.turn_num
        {
            return Err(UsageError::CannotChallenge(
                "a challenge at this turn or later is registered",
            )
            .into());
        }
        if self.owed().is_zero() {
            // Payee without a voucher above zero, or payer that signed its whole deposit away:
            // the challenge and the payout would cost gas and pay us nothing.
            return Err(UsageError::CannotChallenge("it would claim nothing for us").into());
        }
        let challenge = self.challenge_action(proof, candidate)?;
        if !self.st.chain.challenge_requested {
            self.st.chain.challenge_requested = true;
            self.changed();
        }
        self.queue_challenge(challenge);
        Ok(())
    }

    /// Re-queues the message the counterparty needs for our phase (after a loss or a restart).
    /// Receivers treat duplicates as no-ops, so calling it too often is harmless.
    pub fn resend(&mut self) {
        let msg = match (&self.st.phase, self.st.role) {
            (Phase::Proposed, Role::Payee) => Some(Message::Propose(self.propose_message())),
            (Phase::AwaitingPostfund, Role::Payer) => self.join_message().map(Message::Join),
            (Phase::Running, Role::Payer) => self
                .st
                .best
                .map(|v| Message::Voucher(VoucherMessage::from_voucher(&v))),
            (Phase::Running, Role::Payee) => self.postfund_message().map(Message::Postfund),
            // Closed, whoever initiated: when both proposed the same amount at once, each takes
            // itself for the initiator, and a lost proposal leaves the other side Closing. The
            // side with nothing to claim no longer concludes for it (no gas for nothing), so the
            // signature has to travel. (Only a non-initiator answers a duplicate close, so
            // resending cannot start a ping-pong.)
            (Phase::Closing { amount, sigs }, role)
            | (Phase::Closed { amount, sigs, .. }, role) => sigs.get(role).map(|s| {
                Message::Close(Close {
                    channel_id: self.id,
                    amount: *amount,
                    signature: s,
                })
            }),
            _ => None,
        };
        if let Some(m) = msg {
            self.send(m);
        }
    }

    // ----- inputs -------------------------------------------------------------------------

    /// Handles a message from the counterparty. Duplicates are no-ops; a message that is invalid
    /// or arrives in the wrong phase returns a typed error and changes nothing.
    pub fn handle_message(&mut self, msg: &Message) -> Result<(), Error> {
        if !msg.channel().matches(&self.id) {
            let got = match msg.channel() {
                crate::message::ChannelKey::Id(id) => id,
                crate::message::ChannelKey::Ref(r) => r.padded(),
            };
            return Err(PeerMisbehaved::WrongChannel {
                expected: self.id,
                got,
            }
            .into());
        }
        if self.st.chain.finalized.is_some() {
            // After finalization only the close exchange can still complete (the other side may
            // have concluded before our countersignature arrived), and late vouchers covered by
            // the final state are harmless duplicates.
            match msg {
                Message::Close(_) if self.final_amount().is_some() => {}
                Message::Voucher(v) if self.final_amount().is_some_and(|a| v.amount <= a) => {
                    return Ok(());
                }
                _ => return Err(self.unexpected(msg.kind())),
            }
        }
        match msg {
            Message::Propose(p) => self.on_propose(p),
            Message::Join(j) => self.on_join(j),
            Message::Postfund(f) => self.on_postfund(f),
            Message::Voucher(v) => self.on_voucher(v),
            Message::Close(c) => self.on_close(c),
        }
    }

    /// First block whose events have not been fed to
    /// [`handle_chain_event`](Self::handle_chain_event) yet, as recorded by
    /// [`advance_chain_cursor`](Self::advance_chain_cursor).
    pub fn chain_cursor(&self) -> u64 {
        self.st.chain.next_block
    }

    /// Records that every event before block `next` was handled. Persisted with the channel
    /// (in the same snapshot as the state those events produced); never moves back.
    pub fn advance_chain_cursor(&mut self, next: u64) {
        if next > self.st.chain.next_block {
            self.st.chain.next_block = next;
            self.changed();
        }
    }

    /// Handles an adjudicator event about this channel (in chain order; replays are no-ops).
    pub fn handle_chain_event(&mut self, now: u64, ev: &ChainEvent) -> Result<(), Error> {
        if ev.channel_id() != self.id {
            return Err(UsageError::WrongChannel {
                expected: self.id,
                got: ev.channel_id(),
            }
            .into());
        }
        // Events are applied in chain order before `now` is looked at: a challenge registered
        // (or cleared) before the current time must count when deciding what finalized.
        match ev {
            ChainEvent::Deposited {
                asset, holdings, ..
            } => {
                // Events come in chain order: the latest one tells the holdings (a re-scan after
                // a reorg replaces them rather than adding to them).
                if *asset == self.st.asset && *holdings != self.st.chain.holdings {
                    self.st.chain.holdings = *holdings;
                    self.changed();
                }
                self.progress()?;
            }
            ChainEvent::ChallengeRegistered {
                finalizes_at,
                candidate,
                ..
            } => {
                if self.st.chain.finalized.is_some() {
                    return Ok(());
                }
                let vp = candidate.variable_part.clone();
                let reg = RegisteredChallenge {
                    turn_num: vp.turn_num,
                    finalizes_at: *finalizes_at,
                    state_hash: vp.hash(self.id),
                    candidate: vp,
                };
                // A replay (e.g. after a restart) of this or an older registration.
                let older = reg.turn_num < self.st.chain.turn_num_record;
                if older || self.st.chain.challenge.as_ref() == Some(&reg) {
                    return Ok(());
                }
                self.st.chain.turn_num_record = reg.turn_num;
                let turn = reg.turn_num;
                self.st.chain.challenge = Some(reg);
                // Whoever registered it, the channel is on chain now: what we owe is an answer
                // (see `chain_duty`), not our own challenge.
                self.st.chain.challenge_requested = false;
                self.changed();
                // A queued challenge at or below the registered turn can only revert now.
                let obsolete = |a: &ChainAction| {
                    matches!(a, ChainAction::Challenge { candidate, .. }
                        if candidate.variable_part.turn_num <= turn)
                };
                self.staged.actions.retain(|a| !obsolete(a));
                self.ready.actions.retain(|a| !obsolete(a));
                self.emit(Event::ChallengeRegistered {
                    turn_num: turn,
                    finalizes_at: *finalizes_at,
                });
                if *finalizes_at > now {
                    self.respond_to_challenge()?;
                }
            }
            ChainEvent::ChallengeCleared {
                new_turn_num_record,
                ..
            }
            | ChainEvent::Checkpointed {
                new_turn_num_record,
                ..
            } if *new_turn_num_record > self.st.chain.turn_num_record => {
                // A checkpoint raises the record above the challenge it clears.
                self.st.chain.turn_num_record = *new_turn_num_record;
                self.st.chain.challenge = None;
                self.changed();
                self.emit(Event::ChallengeCleared);
            }
            ChainEvent::Concluded { finalizes_at, .. } => {
                if self.st.chain.finalized.is_none()
                    && let Some(amount) = self.final_amount()
                {
                    self.finalize(Finalization {
                        outcome: self.outcome(amount),
                        state_hash: B256::ZERO,
                        at: *finalizes_at,
                    });
                }
            }
            ChainEvent::AllocationUpdated {
                asset_index,
                final_holdings,
                ..
            } => {
                if *asset_index == 0 && *final_holdings != self.st.chain.holdings {
                    self.st.chain.holdings = *final_holdings;
                    self.changed();
                }
                // A payout implies finalization: catch up with the clock first.
                self.handle_timeout(now);
                if let Some(fin) = &self.st.chain.finalized
                    && !self.st.chain.paid_out
                {
                    let amount = share(&fin.outcome, self.st.role);
                    self.st.chain.paid_out = true;
                    self.changed();
                    self.emit(Event::PaidOut { amount });
                }
            }
            // Future event kinds (the enum is non-exhaustive for other crates) carry nothing we track.
            #[allow(unreachable_patterns)]
            _ => {}
        }
        self.handle_timeout(now);
        Ok(())
    }

    /// Chain time passed: a registered challenge whose time is up finalizes the channel and asks
    /// for the payout.
    pub fn handle_timeout(&mut self, now: u64) {
        if self.st.chain.finalized.is_none()
            && let Some(c) = &self.st.chain.challenge
            && c.finalizes_at <= now
        {
            let fin = Finalization {
                outcome: c.candidate.outcome.clone(),
                state_hash: c.state_hash,
                at: c.finalizes_at,
            };
            self.finalize(fin);
        }
    }

    // ----- message handlers -----------------------------------------------------------------

    fn on_propose(&mut self, p: &Propose) -> Result<(), Error> {
        let same = self.st.role == Role::Payer
            && p.fixed == self.st.fixed
            && p.deposit == self.st.deposit
            && p.price == self.st.price
            && Some(p.signature) == self.st.prefund.payee;
        if same {
            Ok(())
        } else {
            Err(PeerMisbehaved::ConflictingProposal(self.id).into())
        }
    }

    fn on_join(&mut self, j: &Join) -> Result<(), Error> {
        self.require_peer_role(Role::Payee, "join")?;
        let pre = self.prefund_vp().hash(self.id);
        let post = self.postfund_vp().hash(self.id);
        if matches!(self.st.phase, Phase::Proposed) {
            let key = recover_key_eth_message(&pre, &j.prefund).ok();
            let got = key.as_ref().map(PublicKey::address);
            let Some(key) = key.filter(|_| got == Some(self.payer())) else {
                return Err(PeerMisbehaved::BadSignature {
                    what: "prefund",
                    expected: self.payer(),
                    got,
                }
                .into());
            };
            if !verify_eth_message(&post, &j.postfund, &key) {
                return Err(self.bad_sig("postfund", Role::Payer, &post, &j.postfund));
            }
            self.payer_key = Some(key);
            self.st.prefund.set(Role::Payer, j.prefund);
            self.st.postfund.set(Role::Payer, j.postfund);
            self.st.phase = Phase::Funding;
            self.changed();
            self.emit(Event::Joined);
            return self.progress();
        }
        // A duplicate: check it, then repeat our postfund if the payer may have missed it.
        let known =
            self.st.prefund.payer == Some(j.prefund) && self.st.postfund.payer == Some(j.postfund);
        if !known {
            self.check_sig(Role::Payer, &pre, &j.prefund, "prefund")?;
            self.check_sig(Role::Payer, &post, &j.postfund, "postfund")?;
        }
        if matches!(self.st.phase, Phase::Running) {
            self.resend();
        }
        Ok(())
    }

    fn on_postfund(&mut self, f: &Postfund) -> Result<(), Error> {
        self.require_peer_role(Role::Payer, "postfund")?;
        let post = self.postfund_vp().hash(self.id);
        match self.st.phase {
            Phase::Proposed | Phase::Funding => Err(self.unexpected("postfund")),
            Phase::AwaitingPostfund => {
                self.check_sig(Role::Payee, &post, &f.signature, "postfund")?;
                self.st.postfund.set(Role::Payee, f.signature);
                self.st.phase = Phase::Running;
                self.changed();
                self.emit(Event::Funded);
                Ok(())
            }
            _ => {
                if self.st.postfund.payee != Some(f.signature) {
                    self.check_sig(Role::Payee, &post, &f.signature, "postfund")?;
                }
                Ok(())
            }
        }
    }

    fn on_voucher(&mut self, m: &VoucherMessage) -> Result<(), Error> {
        self.require_peer_role(Role::Payee, "voucher")?;
        let v = m.to_voucher(self.id);
        if v.amount > self.st.deposit {
            return Err(PeerMisbehaved::OverDeposit {
                deposit: self.st.deposit,
                got: v.amount,
            }
            .into());
        }
        match &self.st.phase {
            Phase::Running if !self.is_disputed() => {}
            // Covered by the final state we signed: a late or duplicate voucher.
            Phase::Closing { amount, .. } | Phase::Closed { amount, .. } if v.amount <= *amount => {
                return Ok(());
            }
            _ => return Err(self.unexpected("voucher")),
        }
        let best = self.st.paid;
        if v.amount == best {
            return Ok(());
        }
        if v.amount < best {
            return Err(PeerMisbehaved::LowerVoucher {
                best,
                got: v.amount,
            }
            .into());
        }
        self.check_voucher_sig(&v)?;
        let delta = v.amount - best;
        self.st.best = Some(v);
        self.st.paid = v.amount;
        self.voucher_changed();
        self.emit(Event::PaymentReceived {
            delta,
            total: v.amount,
        });
        Ok(())
    }

    fn on_close(&mut self, c: &Close) -> Result<(), Error> {
        if c.amount > self.st.deposit {
            return Err(PeerMisbehaved::OverDeposit {
                deposit: self.st.deposit,
                got: c.amount,
            }
            .into());
        }
        let role = self.st.role;
        let them = role.other();
        let hash = self.final_vp(c.amount).hash(self.id);
        match self.st.phase.clone() {
            Phase::Proposed | Phase::Funding | Phase::AwaitingPostfund => {
                Err(self.unexpected("close"))
            }
            Phase::Running => {
                self.check_close_bound(c.amount)?;
                self.check_sig(them, &hash, &c.signature, "final state")?;
                let mine = self.sign_state(&self.final_vp(c.amount))?;
                let mut sigs = Sigs::default();
                sigs.set(them, c.signature);
                sigs.set(role, mine);
                let credit = (role == Role::Payee && c.amount > self.st.paid)
                    .then(|| c.amount - self.st.paid);
                if credit.is_some() {
                    self.st.paid = c.amount;
                }
                self.st.phase = Phase::Closed {
                    amount: c.amount,
                    sigs,
                    initiated: false,
                };
                self.changed();
                if let Some(delta) = credit {
                    self.emit(Event::PaymentReceived {
                        delta,
                        total: c.amount,
                    });
                }
                self.send_close(c.amount, mine);
                self.emit(Event::Closing { amount: c.amount });
                self.emit(Event::Closed { amount: c.amount });
                self.request_conclude();
                Ok(())
            }
            Phase::Closing { amount, mut sigs } => {
                if c.amount == amount {
                    self.check_sig(them, &hash, &c.signature, "final state")?;
                    sigs.set(them, c.signature);
                    self.st.phase = Phase::Closed {
                        amount,
                        sigs,
                        initiated: true,
                    };
                    self.changed();
                    self.emit(Event::Closed { amount });
                    self.request_conclude();
                    Ok(())
                } else if role == Role::Payee && c.amount > amount {
                    // Simultaneous close: the payer's proposal wins. Nothing above our own final
                    // state is credited (the payer could still conclude that one).
                    self.check_sig(them, &hash, &c.signature, "final state")?;
                    let mine = self.sign_state(&self.final_vp(c.amount))?;
                    let mut sigs = Sigs::default();
                    sigs.set(them, c.signature);
                    sigs.set(role, mine);
                    self.st.phase = Phase::Closed {
                        amount: c.amount,
                        sigs,
                        initiated: false,
                    };
                    self.changed();
                    self.send_close(c.amount, mine);
                    self.emit(Event::Closed { amount: c.amount });
                    self.request_conclude();
                    Ok(())
                } else {
                    Err(PeerMisbehaved::ConflictingClose {
                        signed: amount,
                        got: c.amount,
                    }
                    .into())
                }
            }
            Phase::Closed {
                amount,
                sigs,
                initiated,
            } => {
                if c.amount != amount {
                    return Err(PeerMisbehaved::ConflictingClose {
                        signed: amount,
                        got: c.amount,
                    }
                    .into());
                }
                if sigs.get(them) != Some(c.signature) {
                    self.check_sig(them, &hash, &c.signature, "final state")?;
                }
                // The initiator may have missed our countersignature. (The initiator itself never
                // answers a duplicate, so two closed sides cannot ping-pong.)
                if !initiated {
                    self.resend();
                }
                Ok(())
            }
        }
    }

    fn check_close_bound(&self, amount: U256) -> Result<(), Error> {
        match self.st.role {
            Role::Payee if amount < self.st.paid => Err(PeerMisbehaved::CloseBelowPaid {
                best: self.st.paid,
                got: amount,
            }
            .into()),
            Role::Payer if amount > self.st.paid => Err(PeerMisbehaved::CloseAboveSent {
                sent: self.st.paid,
                got: amount,
            }
            .into()),
            _ => Ok(()),
        }
    }

    // ----- chain-driven progress ------------------------------------------------------------

    /// Advances funding once the holdings cover the deposit.
    fn progress(&mut self) -> Result<(), Error> {
        if self.st.chain.holdings < self.st.deposit || !matches!(self.st.phase, Phase::Funding) {
            return Ok(());
        }
        let sig = self.sign_state(&self.postfund_vp())?;
        self.st.postfund.set(self.st.role, sig);
        match self.st.role {
            Role::Payer => {
                self.st.phase = Phase::AwaitingPostfund;
                self.changed();
                if let Some(j) = self.join_message() {
                    self.send(Message::Join(j));
                }
            }
            Role::Payee => {
                self.st.phase = Phase::Running;
                self.changed();
                if let Some(f) = self.postfund_message() {
                    self.send(Message::Postfund(f));
                }
                self.emit(Event::Funded);
            }
        }
        Ok(())
    }

    fn respond_to_challenge(&mut self) -> Result<(), Error> {
        let Some(reg) = self.st.chain.challenge.clone() else {
            return Ok(());
        };
        if matches!(self.st.phase, Phase::Closed { .. }) {
            // A final state signed by both beats any challenge, and `conclude` works in Challenge mode.
            if share(&reg.candidate.outcome, self.st.role) < self.final_share() {
                self.request_conclude();
            }
            return Ok(());
        }
        if let Some(counter) = self.counter_action(&reg)? {
            self.queue_challenge(counter);
        }
        Ok(())
    }

    fn final_share(&self) -> U256 {
        match self.final_amount() {
            Some(a) => share(&self.outcome(a), self.st.role),
            None => U256::ZERO,
        }
    }

    fn finalize(&mut self, fin: Finalization) {
        let amount = share(&fin.outcome, self.st.role);
        if let Some(t) = self.transfer_action(&fin) {
            self.act(t);
        }
        // Any queued challenge or conclude is moot now.
        let moot = |a: &ChainAction| {
            matches!(
                a,
                ChainAction::Challenge { .. } | ChainAction::Conclude { .. }
            )
        };
        self.staged.actions.retain(|a| !moot(a));
        self.ready.actions.retain(|a| !moot(a));
        self.st.chain.finalized = Some(fin);
        self.changed();
        self.emit(Event::Finalized { amount });
    }

    /// The best `(proof, candidate)` we can support on chain.
    fn best_supported(
        &self,
    ) -> Result<Option<(Vec<SignedVariablePart>, SignedVariablePart)>, Error> {
        if self.st.role == Role::Payee
            && self.st.postfund.both()
            && let Some(v) = self.st.best
            && !v.amount.is_zero()
        {
            let vp = self.redemption_vp(&v);
            let sig = self.sign_state(&vp)?;
            let proof = vec![SignedVariablePart {
                variable_part: self.postfund_vp(),
                sigs: self.st.postfund.to_vec(),
            }];
            return Ok(Some((
                proof,
                SignedVariablePart {
                    variable_part: vp,
                    sigs: vec![sig],
                },
            )));
        }
        for (sigs, vp) in [
            (&self.st.postfund, self.postfund_vp()),
            (&self.st.prefund, self.prefund_vp()),
        ] {
            if sigs.both() {
                return Ok(Some((
                    Vec::new(),
                    SignedVariablePart {
                        variable_part: vp,
                        sigs: sigs.to_vec(),
                    },
                )));
            }
        }
        Ok(None)
    }

    /// Queues `challenge` in place of any queued challenge.
    fn queue_challenge(&mut self, challenge: ChainAction) {
        let is_challenge = |a: &ChainAction| matches!(a, ChainAction::Challenge { .. });
        self.staged.actions.retain(|a| !is_challenge(a));
        self.ready.actions.retain(|a| !is_challenge(a));
        self.act(challenge);
    }

    fn request_conclude(&mut self) {
        if let Some(c) = self.conclude_action() {
            self.act(c);
        }
    }

    /// `conclude` with the final state signed by both, unless the channel finalized or our
    /// share of that state is zero (the other side, which gets everything, pays for it).
    fn conclude_action(&self) -> Option<ChainAction> {
        let Phase::Closed { amount, sigs, .. } = &self.st.phase else {
            return None;
        };
        if self.st.chain.finalized.is_some() || self.final_share().is_zero() {
            return None;
        }
        Some(ChainAction::Conclude {
            fixed: self.st.fixed.clone(),
            candidate: SignedVariablePart {
                variable_part: self.final_vp(*amount),
                sigs: sigs.to_vec(),
            },
        })
    }

    /// The payout of `fin`, unless it happened, our share is zero (the other side pays for
    /// its own payout) or nothing is held.
    fn transfer_action(&self, fin: &Finalization) -> Option<ChainAction> {
        let c = &self.st.chain;
        if c.paid_out || share(&fin.outcome, self.st.role).is_zero() || c.holdings.is_zero() {
            return None;
        }
        Some(ChainAction::Transfer {
            channel_id: self.id,
            outcome: fin.outcome.clone(),
            state_hash: fin.state_hash,
        })
    }

    /// What we can still claim off chain: the payee its best voucher, the payer its deposit
    /// minus what it signed away.
    fn owed(&self) -> U256 {
        match self.st.role {
            Role::Payee => self.st.best.map(|v| v.amount).unwrap_or_default(),
            Role::Payer => self.st.deposit.saturating_sub(self.st.paid),
        }
    }

    /// The challenge we owe after [`Channel::challenge`]: our best supported state, unless it
    /// would claim nothing for us.
    fn own_challenge_action(&self) -> Result<Option<ChainAction>, Error> {
        if self.owed().is_zero() || self.st.chain.holdings.is_zero() {
            return Ok(None);
        }
        let Some((proof, candidate)) = self.best_supported()? else {
            return Ok(None);
        };
        self.challenge_action(proof, candidate).map(Some)
    }

    /// The counter-challenge a registered challenge `reg` calls for (payee: its largest voucher
    /// against a candidate below the redemption turn that pays it less).
    fn counter_action(&self, reg: &RegisteredChallenge) -> Result<Option<ChainAction>, Error> {
        if self.st.role != Role::Payee || reg.turn_num >= REDEMPTION_TURN {
            return Ok(None);
        }
        let best = self.st.best.map(|v| v.amount).unwrap_or_default();
        if best <= share(&reg.candidate.outcome, Role::Payee) {
            return Ok(None);
        }
        match self.best_supported()? {
            Some((proof, candidate)) if candidate.variable_part.turn_num == REDEMPTION_TURN => {
                self.challenge_action(proof, candidate).map(Some)
            }
            _ => Ok(None),
        }
    }

    fn challenge_action(
        &self,
        proof: Vec<SignedVariablePart>,
        candidate: SignedVariablePart,
    ) -> Result<ChainAction, Error> {
        let hash = candidate.variable_part.hash(self.id);
        let challenger_sig = self
            .signer
            .sign_eth_message(&challenge_message_hash(hash))?;
        Ok(ChainAction::Challenge {
            fixed: self.st.fixed.clone(),
            proof,
            candidate,
            challenger_sig,
        })
    }

    /// The transaction this side owes the chain at chain time `now`, derived from the persisted
    /// state alone (so a driver can ask again after any failure or restart), or `None`:
    ///
    /// * finalized (recorded, or a registered challenge whose time is up): the payout, when our
    ///   share and the holdings are not zero;
    /// * a challenge registered: `conclude` when we hold a final state signed by both that pays
    ///   us more than the candidate; the payee's counter-challenge with its largest voucher when
    ///   the candidate is below the redemption turn and pays it less;
    /// * closed by both: `conclude`, when our share is not zero;
    /// * after [`Channel::challenge`] until a challenge registers: that challenge, when it claims
    ///   something for us;
    /// * payer, joined and the deposit not (fully) seen on chain: the rest of the deposit.
    ///
    /// The duty is what the chain still needs *as far as the applied events tell*: a driver
    /// checks the chain before sending (the transaction may have landed in a block not applied
    /// yet) and drops it when it is moot. Nothing is queued and nothing changes.
    pub fn chain_duty(&self, now: u64) -> Result<Option<ChainAction>, Error> {
        let c = &self.st.chain;
        if c.paid_out {
            return Ok(None);
        }
        let timed_out = c.challenge.as_ref().filter(|r| r.finalizes_at <= now);
        let fin = c.finalized.clone().or_else(|| {
            timed_out.map(|r| Finalization {
                outcome: r.candidate.outcome.clone(),
                state_hash: r.state_hash,
                at: r.finalizes_at,
            })
        });
        if let Some(fin) = fin {
            return Ok(self.transfer_action(&fin));
        }
        if let Some(reg) = &c.challenge {
            if matches!(self.st.phase, Phase::Closed { .. }) {
                let better = share(&reg.candidate.outcome, self.st.role) < self.final_share();
                return Ok(if better { self.conclude_action() } else { None });
            }
            return self.counter_action(reg);
        }
        if matches!(self.st.phase, Phase::Closed { .. }) {
            return Ok(self.conclude_action());
        }
        if c.challenge_requested {
            return self.own_challenge_action();
        }
        if self.st.role == Role::Payer
            && matches!(self.st.phase, Phase::Funding)
            && c.holdings < self.st.deposit
        {
            return Ok(Some(ChainAction::Deposit {
                asset: self.st.asset,
                channel_id: self.id,
                expected_held: c.holdings,
                amount: self.st.deposit - c.holdings,
            }));
        }
        Ok(None)
    }

    // ----- states and signatures ------------------------------------------------------------

    /// `{payer: deposit − payee_amount, payee: payee_amount}`; callers keep `payee_amount ≤ deposit`.
    fn outcome(&self, payee_amount: U256) -> Outcome {
        two_party_outcome(
            self.st.asset,
            self.payer(),
            self.st.deposit.saturating_sub(payee_amount),
            self.payee(),
            payee_amount,
        )
    }

    fn vp(
        &self,
        turn_num: u64,
        payee_amount: U256,
        app_data: Bytes,
        is_final: bool,
    ) -> VariablePart {
        VariablePart {
            outcome: self.outcome(payee_amount),
            app_data,
            turn_num,
            is_final,
        }
    }

    fn prefund_vp(&self) -> VariablePart {
        self.vp(PREFUND_TURN, U256::ZERO, Bytes::new(), false)
    }

    fn postfund_vp(&self) -> VariablePart {
        self.vp(POSTFUND_TURN, U256::ZERO, Bytes::new(), false)
    }

    fn redemption_vp(&self, v: &Voucher) -> VariablePart {
        self.vp(REDEMPTION_TURN, v.amount, v.app_data(), false)
    }

    fn final_vp(&self, payee_amount: U256) -> VariablePart {
        self.vp(FINAL_TURN, payee_amount, Bytes::new(), true)
    }

    fn sign_state(&self, vp: &VariablePart) -> Result<Signature, Error> {
        Ok(self.signer.sign_eth_message(&vp.hash(self.id))?)
    }

    /// Checks that `who` signed `hash`: with the cached payer key when we have it (one
    /// verification), by recovery otherwise.
    fn check_sig(
        &self,
        who: Role,
        hash: &B256,
        sig: &Signature,
        what: &'static str,
    ) -> Result<(), Error> {
        let ok = match (who, &self.payer_key) {
            (Role::Payer, Some(key)) => verify_eth_message(hash, sig, key),
            _ => {
                recover_eth_message(hash, sig).ok() == Some(self.st.fixed.participants[who.index()])
            }
        };
        if ok {
            Ok(())
        } else {
            Err(self.bad_sig(what, who, hash, sig))
        }
    }

    fn bad_sig(&self, what: &'static str, who: Role, hash: &B256, sig: &Signature) -> Error {
        PeerMisbehaved::BadSignature {
            what,
            expected: self.st.fixed.participants[who.index()],
            got: recover_eth_message(hash, sig).ok(),
        }
        .into()
    }

    fn check_voucher_sig(&self, v: &Voucher) -> Result<(), Error> {
        self.check_sig(Role::Payer, &v.hash(), &v.signature, "voucher")
    }

    // ----- messages ---------------------------------------------------------------------------

    fn propose_message(&self) -> Propose {
        Propose {
            fixed: self.st.fixed.clone(),
            deposit: self.st.deposit,
            price: self.st.price,
            asset: self.st.asset,
            signature: self
                .st
                .prefund
                .payee
                .expect("a payee channel signs its prefund at creation"),
        }
    }

    fn join_message(&self) -> Option<Join> {
        Some(Join {
            channel_id: self.id,
            prefund: self.st.prefund.payer?,
            postfund: self.st.postfund.payer?,
        })
    }

    fn postfund_message(&self) -> Option<Postfund> {
        Some(Postfund {
            channel_id: self.id,
            signature: self.st.postfund.payee?,
        })
    }

    fn send_close(&mut self, amount: U256, signature: Signature) {
        self.send(Message::Close(Close {
            channel_id: self.id,
            amount,
            signature,
        }));
    }

    // ----- bookkeeping ------------------------------------------------------------------------

    fn changed(&mut self) {
        self.snapshot_dirty = true;
        self.generation += 1;
    }

    fn voucher_changed(&mut self) {
        self.voucher_dirty = true;
        self.generation += 1;
    }

    fn send(&mut self, data: Message) {
        self.staged.outbound.push_back(Envelope {
            recipient: self.counterparty(),
            sender: self.me,
            data,
        });
    }

    fn emit(&mut self, ev: Event) {
        self.staged.events.push_back(ev);
    }

    fn act(&mut self, a: ChainAction) {
        self.staged.actions.push_back(a);
    }

    fn require_role(&self, needed: Role, operation: &'static str) -> Result<(), Error> {
        if self.st.role == needed {
            Ok(())
        } else {
            Err(UsageError::WrongRole { operation, needed }.into())
        }
    }

    fn require_peer_role(&self, needed: Role, message: &'static str) -> Result<(), Error> {
        if self.st.role == needed {
            Ok(())
        } else {
            Err(PeerMisbehaved::WrongRole {
                role: self.st.role,
                message,
            }
            .into())
        }
    }

    fn wrong_phase(&self, operation: &'static str) -> Error {
        UsageError::WrongPhase {
            operation,
            phase: self.phase(),
        }
        .into()
    }

    fn unexpected(&self, message: &'static str) -> Error {
        PeerMisbehaved::UnexpectedInPhase {
            phase: self.phase(),
            message,
        }
        .into()
    }
}

/// The amount `role` gets in a two-party outcome (zero if the outcome has another shape).
pub fn share(outcome: &Outcome, role: Role) -> U256 {
    outcome
        .first()
        .and_then(|e| e.allocations.get(role.index()))
        .map(|a| a.amount)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phase_order_is_lifecycle_order() {
        use PhaseKind::*;
        let order = [
            Proposed,
            Funding,
            AwaitingPostfund,
            Running,
            Closing,
            Closed,
            Finalized,
        ];
        assert!(order.windows(2).all(|w| w[0] < w[1]));
    }
}
