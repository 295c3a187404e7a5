//! A deterministic two-party harness: a payer's and a payee's sans-IO [`Channel`] that carry
//! their messages by hand (the test decides what is delivered, lost or reordered), over a
//! [`SimulatedChain`] that runs their chain actions and feeds the resulting events to both sides.
//! Shared by this crate's tests, the fuzz targets and the benches.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use crate::chain::{ChainAction, ChainError, ChainEvent, ChannelMode, Revert};
use crate::channel::{Channel, ChannelParams, Event, Role};
use crate::message::{Envelope, Message};
use crate::sign::{LocalSigner, Signer};
use crate::voucher::Voucher;
use crate::{Address, B256, SimulatedChain, U256};

use super::run_chain_action;

/// The app address of the harness's simulated chain.
pub const APP: Address = Address::repeat_byte(0xAA);
/// The harness channels' challenge duration, seconds.
pub const DURATION: u64 = 100;
/// The simulated chain's clock at the start, seconds.
pub const GENESIS: u64 = 1_700_000_000;

/// The deterministic signer with the secret key `[seed; 32]` (`seed` must not be 0).
pub fn signer(seed: u8) -> Arc<LocalSigner> {
    Arc::new(LocalSigner::from_bytes(&B256::repeat_byte(seed)).expect("a non-zero seed is a key"))
}

/// The chain of a [`Pair`]: a [`SimulatedChain`] (which checks every adjudicator rule), the
/// harness's clock, and a record of what was sent and what happened.
#[derive(Debug)]
pub struct PairChain {
    /// The harness's clock; the simulator is moved forward to it before each transaction.
    pub now: u64,
    /// Holdings per channel, as the last `Deposited` / `AllocationUpdated` event said.
    pub holdings: HashMap<B256, U256>,
    /// Every chain event, in order.
    pub log: Vec<ChainEvent>,
    /// Every transaction sent: who, and which (`deposit`, `challenge`, `conclude`, `transfer`).
    pub calls: Vec<(Address, &'static str)>,
    /// The simulator.
    pub sim: SimulatedChain,
}

impl Default for PairChain {
    fn default() -> Self {
        Self {
            now: GENESIS,
            holdings: HashMap::new(),
            log: Vec::new(),
            calls: Vec::new(),
            sim: SimulatedChain::with_genesis(GENESIS, APP),
        }
    }
}

impl PairChain {
    /// Runs `action` for `from` (idempotently for conclude/transfer, like the client) and returns
    /// the chain events it caused.
    pub fn apply(
        &mut self,
        from: Address,
        action: &ChainAction,
    ) -> Result<Vec<ChainEvent>, Revert> {
        if self.sim.now() < self.now {
            self.sim
                .set_time(self.now)
                .expect("the clock only moves forward");
        }
        let seen = self.sim.all_events().len();
        let sent = run_chain_action(&self.sim, from, action);
        if sent.is_some() {
            self.calls.push((from, action.name()));
        }
        match sent {
            None | Some(Ok(())) => {}
            Some(Err(ChainError::Reverted(r))) => return Err(r),
            Some(Err(e)) => return Err(Revert::Other(e.to_string())),
        }
        let new: Vec<ChainEvent> = self.sim.all_events()[seen..]
            .iter()
            .map(|r| r.event.clone())
            .collect();
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

    /// Whether channel `id` is finalized, or was and has been paid out (a payout clears its
    /// on-chain status, and `transferAllAssets` only pays a finalized channel).
    pub fn is_finalized(&self, id: &B256) -> bool {
        self.sim.status_of(*id).mode(self.now.max(self.sim.now())) == ChannelMode::Finalized
            || self.log.iter().any(|e| {
                matches!(e, ChainEvent::AllocationUpdated { channel_id, .. } if channel_id == id)
            })
    }

    /// What `a` received from payouts (deposits are funded just in time, so a balance is
    /// exactly what was paid out).
    pub fn paid_to(&self, a: Address) -> U256 {
        self.sim.balance_of(a)
    }
}

/// One side in the harness: a channel plus what it persisted.
#[derive(Debug)]
pub struct Side {
    /// The channel.
    pub ch: Channel,
    /// Its signer.
    pub signer: Arc<LocalSigner>,
    /// Every event it emitted, in order.
    pub events: Vec<Event>,
    /// The last snapshot it asked to persist.
    pub stored_snapshot: Option<Vec<u8>>,
    /// The best voucher it asked to persist.
    pub stored_voucher: Option<Voucher>,
    /// The reverts of its transactions.
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
        persist(
            &mut self.ch,
            &mut self.stored_snapshot,
            &mut self.stored_voucher,
        );
    }

    /// The sum of the payments it received.
    pub fn received_total(&self) -> U256 {
        received_total(&self.events)
    }

    /// Whether it emitted an event matching `f`.
    pub fn has_event(&self, f: impl Fn(&Event) -> bool) -> bool {
        self.events.iter().any(f)
    }
}

/// Persists everything `ch` asks for into `snapshot` (the latest) and `voucher` (the largest),
/// acknowledging each (a store that never fails).
pub fn persist(ch: &mut Channel, snapshot: &mut Option<Vec<u8>>, voucher: &mut Option<Voucher>) {
    while let Some(p) = ch.poll_persist() {
        if let Some(v) = p.voucher
            && voucher.is_none_or(|s| v.amount > s.amount)
        {
            *voucher = Some(v);
        }
        if let Some(s) = p.snapshot {
            *snapshot = Some(s.to_bytes());
        }
        ch.handle_persisted(p.generation);
    }
}

/// The sum of the `PaymentReceived` deltas among `events`.
pub fn received_total(events: &[Event]) -> U256 {
    events
        .iter()
        .filter_map(|e| match e {
            Event::PaymentReceived { delta, .. } => Some(*delta),
            _ => None,
        })
        .fold(U256::ZERO, |a, b| a + b)
}

/// Which side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Who {
    /// Participant 0, who pays.
    Payer,
    /// Participant 1, who is paid.
    Payee,
}

/// Two channels, a chain, and the messages in flight.
#[derive(Debug)]
pub struct Pair {
    /// The payer.
    pub payer: Side,
    /// The payee.
    pub payee: Side,
    /// The chain both watch.
    pub chain: PairChain,
    /// Messages in flight to the payer.
    pub to_payer: VecDeque<Envelope>,
    /// Messages in flight to the payee.
    pub to_payee: VecDeque<Envelope>,
    /// The errors the sides returned for delivered messages.
    pub errors: Vec<(Who, crate::error::Error)>,
    /// The channel's deposit.
    pub deposit: U256,
}

impl Pair {
    /// The payee creates a channel; the proposal is in flight to the payer.
    pub fn new(deposit: u64) -> Self {
        Self::with_nonce(deposit, 1)
    }

    /// [`Pair::new`] with channel nonce `nonce`.
    pub fn with_nonce(deposit: u64, nonce: u64) -> Self {
        Self::with_chain(deposit, nonce, PairChain::default())
    }

    /// [`Pair::new`] with channel nonce `nonce`, on `chain`.
    pub fn with_chain(deposit: u64, nonce: u64, chain: PairChain) -> Self {
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

    /// The side `who`.
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

    /// Delivers `env` to `to` (which must be its recipient) and flushes `to`.
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

    /// The payer accepts the proposal (deposits, then joins).
    pub fn join(&mut self) {
        self.payer.ch.join().unwrap();
        self.flush(Who::Payer);
    }

    /// Create → join → fund → running, with perfect delivery.
    pub fn running(deposit: u64) -> Self {
        Self::running_on(deposit, PairChain::default())
    }

    /// Like [`Pair::running`] on a given chain.
    pub fn running_on(deposit: u64, chain: PairChain) -> Self {
        let mut p = Self::with_chain(deposit, 1, chain);
        p.join();
        p.drive();
        assert!(p.payer.ch.is_running(), "{:?}", p.payer.ch);
        assert!(p.payee.ch.is_running(), "{:?}", p.payee.ch);
        p
    }

    /// The payer pays `delta` more; returns the voucher (in flight to the payee).
    pub fn pay(&mut self, delta: u64) -> Voucher {
        let v = self.payer.ch.send_payment(U256::from(delta)).unwrap();
        self.flush(Who::Payer);
        v
    }

    /// `who` closes cooperatively (signs the final state) and flushes.
    pub fn close(&mut self, who: Who) {
        self.side(who).ch.close().expect("the channel can close");
        self.flush(who);
    }

    /// `who` challenges on chain and flushes.
    pub fn challenge(&mut self, who: Who) {
        let now = self.chain.now;
        self.side(who)
            .ch
            .challenge(now)
            .expect("the channel can challenge");
        self.flush(who);
    }

    /// The turn of the challenge registered on chain, as `who` saw it.
    ///
    /// # Panics
    /// If `who` saw no challenge.
    pub fn challenge_turn(&mut self, who: Who) -> u64 {
        self.side(who)
            .ch
            .on_chain()
            .challenge
            .as_ref()
            .expect("a challenge was registered")
            .turn_num
    }

    /// Moves the clock `secs` forward and lets both sides handle the timeout.
    pub fn advance(&mut self, secs: u64) {
        self.chain.now += secs;
        let now = self.chain.now;
        for w in [Who::Payer, Who::Payee] {
            self.side(w).ch.handle_timeout(now);
            self.flush(w);
        }
    }

    /// The payer's address.
    pub fn payer_addr(&self) -> Address {
        self.payer.ch.me()
    }

    /// The payee's address.
    pub fn payee_addr(&self) -> Address {
        self.payee.ch.me()
    }

    /// The channel id.
    pub fn id(&self) -> B256 {
        self.payee.ch.id()
    }
}

/// The channel role of `who`.
pub fn role_of(who: Who) -> Role {
    match who {
        Who::Payer => Role::Payer,
        Who::Payee => Role::Payee,
    }
}
