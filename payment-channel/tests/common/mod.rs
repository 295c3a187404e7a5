//! Shared test doubles: a synchronous adjudicator model with the v2 + VirtualPaymentApp rules that
//! matter here, and a deterministic two-party harness that carries messages by hand.
#![allow(dead_code, unreachable_pub)]

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use payment_channel::chain::{Chain, ChainError, ChannelMode};
use payment_channel::chain::{ChainEvent, Revert};
use payment_channel::channel::{ChainAction, Channel, ChannelParams, Event, Role};
use payment_channel::message::{Envelope, Message};
use payment_channel::sign::{LocalSigner, Signer, recover_eth_message};
use payment_channel::state::{FixedPart, SignedVariablePart, challenge_message_hash, hash_outcome};
use payment_channel::voucher::Voucher;
use payment_channel::{Address, B256, SimulatedChain, U256};

/// Runs a future that never waits (the simulator is in memory) to completion.
fn ready<F: Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match f.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(v) => v,
        std::task::Poll::Pending => panic!("the simulator never waits"),
    }
}

pub const APP: Address = Address::repeat_byte(0xAA);
pub const DURATION: u64 = 100;
pub const GENESIS: u64 = 1_700_000_000;

pub fn signer(seed: u8) -> Arc<LocalSigner> {
    Arc::new(LocalSigner::from_bytes(&B256::repeat_byte(seed)).unwrap())
}

#[derive(Debug, Default, Clone)]
struct Status {
    turn_num_record: u64,
    finalizes_at: u64,
    state_hash: B256,
    outcome_hash: B256,
}

/// A synchronous model of the adjudicator: balances, holdings, status, events, and the
/// VirtualPaymentApp support rules (with real signature recovery).
#[derive(Debug)]
pub struct MockChain {
    pub now: u64,
    pub holdings: HashMap<B256, U256>,
    status: HashMap<B256, Status>,
    pub paid: HashMap<Address, U256>,
    pub log: Vec<ChainEvent>,
    pub calls: Vec<(Address, &'static str)>,
    /// When set, transactions run on the real simulator instead of this model.
    sim: Option<SimulatedChain>,
    sim_seen: usize,
}

impl Default for MockChain {
    fn default() -> Self {
        Self {
            now: GENESIS,
            holdings: HashMap::new(),
            status: HashMap::new(),
            paid: HashMap::new(),
            log: Vec::new(),
            calls: Vec::new(),
            sim: None,
            sim_seen: 0,
        }
    }
}

fn signed_by(fixed: &FixedPart, s: &SignedVariablePart) -> Result<[bool; 2], Revert> {
    let hash = s.variable_part.hash(fixed.channel_id());
    let mut by = [false; 2];
    for sig in &s.sigs {
        let a = recover_eth_message(&hash, sig).map_err(|_| Revert::InvalidSignature)?;
        for (i, p) in fixed.participants.iter().enumerate() {
            if *p == a {
                by[i] = true;
            }
        }
    }
    Ok(by)
}

fn ns(s: &str) -> Revert {
    Revert::NotSupported(s.into())
}

/// `VirtualPaymentApp.stateIsSupported`, for two participants.
fn supported(
    fixed: &FixedPart,
    proof: &[SignedVariablePart],
    c: &SignedVariablePart,
) -> Result<(), Revert> {
    let cb = signed_by(fixed, c)?;
    match proof {
        [] => {
            if !(cb[0] && cb[1]) {
                return Err(ns("!unanimous; |proof|=0"));
            }
            if c.variable_part.turn_num > 1 {
                return Err(ns("bad candidate turnNum; |proof|=0"));
            }
            Ok(())
        }
        [p] => {
            if p.variable_part.turn_num != 1 {
                return Err(ns("bad proof[0].turnNum; |proof|=1"));
            }
            let pb = signed_by(fixed, p)?;
            if !(pb[0] && pb[1]) {
                return Err(ns("postfund !unanimous; |proof|=1"));
            }
            if c.variable_part.turn_num != 2 {
                return Err(ns("bad candidate turnNum; |proof|=1"));
            }
            if !cb[1] {
                return Err(ns("redemption not signed by payee"));
            }
            let v = Voucher::from_app_data(fixed.channel_id(), &c.variable_part.app_data)
                .ok_or_else(|| Revert::Other("abi decode".into()))?;
            if v.recover_signer().ok() != Some(fixed.participants[0]) {
                return Err(ns("invalid signature for voucher"));
            }
            let old = &p.variable_part.outcome[0].allocations;
            let new = &c.variable_part.outcome[0].allocations;
            if new[0].amount
                != old[0]
                    .amount
                    .checked_sub(v.amount)
                    .ok_or_else(|| ns("underflow"))?
            {
                return Err(ns("payer not adjusted correctly"));
            }
            if new[1].amount != v.amount {
                return Err(ns("payee not adjusted correctly"));
            }
            Ok(())
        }
        _ => Err(ns("bad proof length")),
    }
}

impl MockChain {
    /// A model backed by the real `SimulatedChain` (same API; the simulator checks every rule).
    pub fn simulated() -> Self {
        Self {
            sim: Some(SimulatedChain::with_genesis(GENESIS, APP)),
            ..Self::default()
        }
    }

    fn apply_sim(&mut self, from: Address, a: &ChainAction) -> Result<Vec<ChainEvent>, Revert> {
        let sim = self.sim.clone().expect("simulated");
        if sim.now() < self.now {
            sim.set_time(self.now).unwrap();
        }
        let h = sim.handle(from);
        let result: Result<(), ChainError> = match a {
            ChainAction::Deposit {
                asset,
                channel_id,
                expected_held,
                amount,
            } => {
                self.calls.push((from, "deposit"));
                sim.fund(from, *amount).unwrap();
                ready(h.deposit(*asset, *channel_id, *expected_held, *amount)).map(|_| ())
            }
            ChainAction::Challenge {
                fixed,
                proof,
                candidate,
                challenger_sig,
            } => {
                self.calls.push((from, "challenge"));
                ready(h.challenge(fixed, proof, candidate, challenger_sig)).map(|_| ())
            }
            ChainAction::Conclude { fixed, candidate } => {
                if sim.status_of(fixed.channel_id()).mode(sim.now()) == ChannelMode::Finalized {
                    return Ok(vec![]);
                }
                self.calls.push((from, "conclude"));
                ready(h.conclude(fixed, candidate)).map(|_| ())
            }
            ChainAction::Transfer {
                channel_id,
                outcome,
                state_hash,
            } => {
                if sim.holdings_of(*channel_id).is_zero() {
                    return Ok(vec![]);
                }
                self.calls.push((from, "transfer"));
                ready(h.transfer_all_assets(*channel_id, outcome, *state_hash)).map(|_| ())
            }
            _ => Ok(()),
        };
        match result {
            Ok(()) => {}
            Err(ChainError::Reverted(r)) => return Err(r),
            Err(e) => return Err(Revert::Other(e.to_string())),
        }
        let all = sim.all_events();
        let new: Vec<ChainEvent> = all[self.sim_seen..]
            .iter()
            .map(|r| r.event.clone())
            .collect();
        self.sim_seen = all.len();
        for ev in &new {
            match ev {
                ChainEvent::Deposited {
                    channel_id,
                    holdings,
                    ..
                } => {
                    self.holdings.insert(*channel_id, *holdings);
                }
                ChainEvent::AllocationUpdated {
                    channel_id,
                    final_holdings,
                    ..
                } => {
                    self.holdings.insert(*channel_id, *final_holdings);
                }
                _ => {}
            }
        }
        self.log.extend(new.iter().cloned());
        Ok(new)
    }

    fn mode_finalized(&self, id: &B256) -> bool {
        if let Some(sim) = &self.sim {
            return sim.status_of(*id).mode(self.now.max(sim.now())) == ChannelMode::Finalized;
        }
        self.status
            .get(id)
            .is_some_and(|s| s.finalizes_at != 0 && s.finalizes_at <= self.now)
    }

    pub fn is_finalized(&self, id: &B256) -> bool {
        self.mode_finalized(id)
    }

    /// Executes an action for `from` (idempotently for conclude/transfer, like the Client).
    pub fn apply(&mut self, from: Address, a: &ChainAction) -> Result<Vec<ChainEvent>, Revert> {
        if self.sim.is_some() {
            return self.apply_sim(from, a);
        }
        match a {
            ChainAction::Deposit {
                asset: _,
                channel_id,
                expected_held,
                amount,
            } => {
                self.calls.push((from, "deposit"));
                let held = self.holdings.entry(*channel_id).or_default();
                if held != expected_held {
                    return Err(Revert::HeldMismatch);
                }
                *held += *amount;
                let ev = ChainEvent::Deposited {
                    channel_id: *channel_id,
                    asset: Address::ZERO,
                    holdings: *held,
                };
                self.log.push(ev.clone());
                Ok(vec![ev])
            }
            ChainAction::Challenge {
                fixed,
                proof,
                candidate,
                challenger_sig,
            } => {
                self.calls.push((from, "challenge"));
                let id = fixed.channel_id();
                let st = self.status.get(&id).cloned().unwrap_or_default();
                let turn = candidate.variable_part.turn_num;
                if self.mode_finalized(&id) {
                    return Err(Revert::ChannelFinalized);
                }
                if st.finalizes_at == 0 {
                    if turn < st.turn_num_record {
                        return Err(Revert::TurnNumRecordDecreased);
                    }
                } else if turn <= st.turn_num_record {
                    return Err(Revert::TurnNumRecordNotIncreased);
                }
                supported(fixed, proof, candidate)?;
                let hash = candidate.variable_part.hash(id);
                let challenger = recover_eth_message(&challenge_message_hash(hash), challenger_sig)
                    .map_err(|_| Revert::InvalidSignature)?;
                if !fixed.participants.contains(&challenger) {
                    return Err(Revert::ChallengerNotParticipant);
                }
                let finalizes_at = self.now + fixed.challenge_duration;
                self.status.insert(
                    id,
                    Status {
                        turn_num_record: turn,
                        finalizes_at,
                        state_hash: hash,
                        outcome_hash: hash_outcome(&candidate.variable_part.outcome),
                    },
                );
                let ev = ChainEvent::ChallengeRegistered {
                    channel_id: id,
                    finalizes_at,
                    proof: proof.clone(),
                    candidate: candidate.clone(),
                };
                self.log.push(ev.clone());
                Ok(vec![ev])
            }
            ChainAction::Conclude { fixed, candidate } => {
                let id = fixed.channel_id();
                if self.mode_finalized(&id) {
                    return Ok(vec![]);
                }
                self.calls.push((from, "conclude"));
                if !candidate.variable_part.is_final {
                    return Err(Revert::StateMustBeFinal);
                }
                let by = signed_by(fixed, candidate)?;
                if !(by[0] && by[1]) {
                    return Err(Revert::NotUnanimous);
                }
                self.status.insert(
                    id,
                    Status {
                        turn_num_record: 0,
                        finalizes_at: self.now,
                        state_hash: B256::ZERO,
                        outcome_hash: hash_outcome(&candidate.variable_part.outcome),
                    },
                );
                let ev = ChainEvent::Concluded {
                    channel_id: id,
                    finalizes_at: self.now,
                };
                self.log.push(ev.clone());
                Ok(vec![ev])
            }
            ChainAction::Transfer {
                channel_id,
                outcome,
                state_hash,
            } => {
                let held = self.holdings.get(channel_id).copied().unwrap_or_default();
                if held.is_zero() {
                    return Ok(vec![]);
                }
                self.calls.push((from, "transfer"));
                if !self.mode_finalized(channel_id) {
                    return Err(Revert::ChannelNotFinalized);
                }
                let st = &self.status[channel_id];
                if st.state_hash != *state_hash || st.outcome_hash != hash_outcome(outcome) {
                    return Err(Revert::IncorrectFingerprint);
                }
                let mut left = held;
                for a in &outcome[0].allocations {
                    let pay = a.amount.min(left);
                    left -= pay;
                    let to = Address::from_slice(&a.destination[12..]);
                    *self.paid.entry(to).or_default() += pay;
                }
                self.holdings.insert(*channel_id, left);
                let ev = ChainEvent::AllocationUpdated {
                    channel_id: *channel_id,
                    asset_index: 0,
                    initial_holdings: held,
                    final_holdings: left,
                };
                self.log.push(ev.clone());
                Ok(vec![ev])
            }
            _ => Ok(vec![]),
        }
    }

    pub fn paid_to(&self, a: Address) -> U256 {
        if let Some(sim) = &self.sim {
            // Deposits are funded just in time, so a balance is exactly what was paid out.
            return sim.balance_of(a);
        }
        self.paid.get(&a).copied().unwrap_or_default()
    }
}

/// One side in the harness: a channel plus what it persisted.
#[derive(Debug)]
pub struct Side {
    pub ch: Channel,
    pub signer: Arc<LocalSigner>,
    pub events: Vec<Event>,
    pub stored_snapshot: Option<Vec<u8>>,
    pub stored_voucher: Option<Voucher>,
    pub reverts: Vec<Revert>,
}

impl Side {
    fn new(ch: Channel, signer: Arc<LocalSigner>) -> Self {
        Self {
            ch,
            signer,
            events: Vec::new(),
            stored_snapshot: None,
            stored_voucher: None,
            reverts: Vec::new(),
        }
    }

    /// Persists what the channel asks for (always succeeds here).
    pub fn persist(&mut self) {
        while let Some(p) = self.ch.poll_persist() {
            if let Some(v) = p.voucher
                && self.stored_voucher.is_none_or(|s| v.amount > s.amount)
            {
                self.stored_voucher = Some(v);
            }
            if let Some(s) = p.snapshot {
                self.stored_snapshot = Some(s.to_bytes());
            }
            self.ch.handle_persisted(p.generation);
        }
    }

    pub fn received_total(&self) -> U256 {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::PaymentReceived { delta, .. } => Some(*delta),
                _ => None,
            })
            .fold(U256::ZERO, |a, b| a + b)
    }

    pub fn has_event(&self, f: impl Fn(&Event) -> bool) -> bool {
        self.events.iter().any(f)
    }
}

/// Which side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Who {
    Payer,
    Payee,
}

/// Two channels, a chain, and the messages in flight.
#[derive(Debug)]
pub struct Pair {
    pub payer: Side,
    pub payee: Side,
    pub chain: MockChain,
    pub to_payer: VecDeque<Envelope>,
    pub to_payee: VecDeque<Envelope>,
    pub errors: Vec<(Who, payment_channel::error::Error)>,
    pub deposit: U256,
}

impl Pair {
    /// The payee creates a channel; the proposal is in flight to the payer.
    pub fn new(deposit: u64) -> Self {
        Self::with_nonce(deposit, 1)
    }

    pub fn with_nonce(deposit: u64, nonce: u64) -> Self {
        Self::with_chain(deposit, nonce, MockChain::default())
    }

    pub fn with_chain(deposit: u64, nonce: u64, chain: MockChain) -> Self {
        let payer_signer = signer(1);
        let payee_signer = signer(2);
        let deposit = U256::from(deposit);
        let payee_ch = Channel::create(
            payee_signer.clone(),
            ChannelParams {
                payer: payer_signer.address(),
                deposit,
                channel_nonce: nonce,
                app_definition: APP,
                challenge_duration: DURATION,
                price: Some(U256::from(1)),
                asset: Address::ZERO,
            },
        )
        .unwrap();
        let mut payee = Side::new(payee_ch, payee_signer);
        payee.persist();
        let proposal = match payee.ch.poll_outbound().map(|e| e.data) {
            Some(Message::Propose(p)) => p,
            other => panic!("expected a proposal, got {other:?}"),
        };
        let payer_ch = Channel::from_proposal(payer_signer.clone(), &proposal).unwrap();
        let mut pair = Self {
            payer: Side::new(payer_ch, payer_signer),
            payee,
            chain,
            to_payer: VecDeque::new(),
            to_payee: VecDeque::new(),
            errors: Vec::new(),
            deposit,
        };
        pair.flush(Who::Payee);
        pair.flush(Who::Payer);
        pair
    }

    pub fn side(&mut self, who: Who) -> &mut Side {
        match who {
            Who::Payer => &mut self.payer,
            Who::Payee => &mut self.payee,
        }
    }

    /// Persists, collects outputs, executes chain actions and feeds the resulting chain events
    /// to both sides (both watch the chain), until both are quiet.
    pub fn flush(&mut self, who: Who) {
        let mut pending = vec![who];
        while let Some(w) = pending.pop() {
            let now = self.chain.now;
            let side = self.side(w);
            side.persist();
            let mut out = Vec::new();
            while let Some(e) = side.ch.poll_outbound() {
                out.push(e);
            }
            while let Some(ev) = side.ch.poll_event() {
                side.events.push(ev);
            }
            let mut actions = Vec::new();
            while let Some(a) = side.ch.poll_chain_action() {
                actions.push(a);
            }
            let from = side.ch.me();
            for e in out {
                match w {
                    Who::Payer => self.to_payee.push_back(e),
                    Who::Payee => self.to_payer.push_back(e),
                }
            }
            for a in actions {
                match self.chain.apply(from, &a) {
                    Ok(evs) => {
                        for ev in evs {
                            for other in [Who::Payer, Who::Payee] {
                                let s = self.side(other);
                                s.ch.handle_chain_event(now, &ev).unwrap();
                                pending.push(other);
                            }
                        }
                    }
                    Err(r) => self.side(w).reverts.push(r),
                }
            }
            if !pending.contains(&w) {
                // Drain again in case chain events produced more for this side.
                let s = self.side(w);
                if s.ch.poll_persist().is_some() {
                    pending.push(w);
                }
            }
        }
    }

    /// Delivers the next message to `to`; returns false if none was in flight.
    pub fn deliver(&mut self, to: Who) -> bool {
        let env = match to {
            Who::Payer => self.to_payer.pop_front(),
            Who::Payee => self.to_payee.pop_front(),
        };
        let Some(env) = env else { return false };
        self.deliver_env(to, &env);
        true
    }

    pub fn deliver_env(&mut self, to: Who, env: &Envelope) {
        let side = self.side(to);
        assert_eq!(env.recipient, side.ch.me());
        if let Err(e) = side.ch.handle_message(&env.data) {
            self.errors.push((to, e));
        }
        self.flush(to);
    }

    /// Delivers everything in flight, both ways, until nothing is left.
    pub fn drive(&mut self) {
        while self.deliver(Who::Payee) || self.deliver(Who::Payer) {}
    }

    pub fn join(&mut self) {
        self.payer.ch.join().unwrap();
        self.flush(Who::Payer);
    }

    /// Create → join → fund → running, with perfect delivery.
    pub fn running(deposit: u64) -> Self {
        Self::running_on(deposit, MockChain::default())
    }

    /// Like [`Pair::running`] on a given chain.
    pub fn running_on(deposit: u64, chain: MockChain) -> Self {
        let mut p = Self::with_chain(deposit, 1, chain);
        p.join();
        p.drive();
        assert!(p.payer.ch.is_running(), "{:?}", p.payer.ch);
        assert!(p.payee.ch.is_running(), "{:?}", p.payee.ch);
        p
    }

    pub fn pay(&mut self, delta: u64) -> Voucher {
        let v = self.payer.ch.send_payment(U256::from(delta)).unwrap();
        self.flush(Who::Payer);
        v
    }

    pub fn advance(&mut self, secs: u64) {
        self.chain.now += secs;
        let now = self.chain.now;
        for w in [Who::Payer, Who::Payee] {
            self.side(w).ch.handle_timeout(now);
            self.flush(w);
        }
    }

    pub fn payer_addr(&self) -> Address {
        self.payer.ch.me()
    }

    pub fn payee_addr(&self) -> Address {
        self.payee.ch.me()
    }

    pub fn id(&self) -> B256 {
        self.payee.ch.id()
    }
}

pub fn role_of(who: Who) -> Role {
    match who {
        Who::Payer => Role::Payer,
        Who::Payee => Role::Payee,
    }
}
