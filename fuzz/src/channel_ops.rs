//! `channel_ops`: an operation sequence on the two sides of one payment channel (payer, payee)
//! over the real `SimulatedChain`, with a lossy, duplicating, reordering, mutating network,
//! crashes (restore from the stored snapshot and voucher, then a replay of every chain event),
//! and forgeries. After every operation and after settlement the money invariants must hold.

use std::collections::VecDeque;
use std::sync::Arc;

use arbitrary::Arbitrary;
use payment_channel::chain::ChainEvent;
use payment_channel::channel::{
    ChainAction, Channel, ChannelParams, ChannelSnapshot, Event, PhaseKind,
};
use payment_channel::message::{Close, Envelope, Join, Message, VoucherMessage};
use payment_channel::sign::{LocalSigner, Signer};
use payment_channel::test_utils::pair::{persist, received_total, signer};
use payment_channel::test_utils::run_chain_action;
use payment_channel::voucher::Voucher;
use payment_channel::{Address, B256, SimulatedChain, U256};

const DEPOSIT: u64 = 1_000;
const DURATION: u64 = 100;
const GENESIS: u64 = 1_700_000_000;
const APP: Address = Address::repeat_byte(0xAA);
/// Operations per input (each costs a few signatures).
const MAX_OPS: usize = 64;

/// A side of the channel.
#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Who {
    /// Participant 0.
    Payer,
    /// Participant 1.
    Payee,
}

/// One step.
#[derive(Arbitrary, Debug)]
pub enum ChannelOp {
    /// The payer accepts the proposal it has (deposits, then sends `Join`).
    Join,
    /// The payer pays `delta` more (refused, signing nothing, beyond the deposit).
    Pay(u16),
    /// The next message in flight to `to` is delivered (or lost), maybe twice.
    Deliver {
        /// Recipient.
        to: Who,
        /// Lose it.
        drop: bool,
        /// Deliver it twice.
        dup: bool,
    },
    /// The next message in flight to `to` goes to the back of the queue.
    Reorder(Who),
    /// `resend` (after a suspected loss).
    Resend(Who),
    /// Cooperative close.
    Close(Who),
    /// Dispute.
    Challenge(Who),
    /// Chain time passes.
    Advance(u8),
    /// A crash: the side is rebuilt from what it stored and replays every chain event.
    Restore(Who),
    /// A copy of the next message to `to`, with one byte flipped, is delivered (the original
    /// stays in flight).
    Mutate {
        /// Recipient.
        to: Who,
        /// Byte index (modulo the length).
        at: u16,
        /// XOR mask (0 becomes 1).
        xor: u8,
    },
    /// A hostile message.
    Forge(Forgery),
}

/// Hostile messages, sent by a third party or replayed.
#[derive(Arbitrary, Debug)]
pub enum Forgery {
    /// A voucher signed by someone other than the payer.
    StrangerVoucher(u16),
    /// A genuine payer voucher below what the payee has.
    LowerVoucher,
    /// A genuine payer voucher above the deposit.
    AboveDeposit,
    /// A genuine payer voucher for another channel.
    OtherChannel(u16),
    /// A join signed by someone other than the payer.
    StrangerJoin,
    /// A close signed by someone other than the counterparty, to either side.
    StrangerClose(Who, u16),
}

struct Side {
    ch: Option<Channel>,
    signer: Arc<LocalSigner>,
    events: Vec<Event>,
    snapshot: Option<Vec<u8>>,
    voucher: Option<Voucher>,
}

impl Side {
    fn new(ch: Option<Channel>, signer: Arc<LocalSigner>) -> Self {
        Self {
            ch,
            signer,
            events: Vec::new(),
            snapshot: None,
            voucher: None,
        }
    }

    fn persist(&mut self) {
        if let Some(ch) = self.ch.as_mut() {
            persist(ch, &mut self.snapshot, &mut self.voucher);
        }
    }

    fn paid(&self) -> U256 {
        self.ch.as_ref().map_or(U256::ZERO, Channel::paid)
    }

    fn received_total(&self) -> U256 {
        received_total(&self.events)
    }
}

struct World {
    sim: SimulatedChain,
    payer: Side,
    payee: Side,
    to_payer: VecDeque<Envelope>,
    to_payee: VecDeque<Envelope>,
    id: B256,
    seen_events: usize,
    /// Funding of deposits that reverted (still in the payer's wallet).
    stranded: U256,
    /// Highest totals observed, for monotonicity.
    max_payer: U256,
    max_payee: U256,
}

impl World {
    fn new() -> Self {
        let sim = SimulatedChain::with_genesis(GENESIS, APP);
        let payer_signer = signer(1);
        let payee_signer = signer(2);
        let ch = Channel::create(
            payee_signer.clone(),
            ChannelParams {
                payer: payer_signer.address(),
                deposit: U256::from(DEPOSIT),
                channel_nonce: 7,
                app_definition: APP,
                challenge_duration: DURATION,
                price: Some(U256::from(1)),
                asset: Address::ZERO,
            },
        )
        .expect("valid parameters");
        let id = ch.id();
        let mut w = Self {
            sim,
            payer: Side::new(None, payer_signer),
            payee: Side::new(Some(ch), payee_signer),
            to_payer: VecDeque::new(),
            to_payee: VecDeque::new(),
            id,
            seen_events: 0,
            stranded: U256::ZERO,
            max_payer: U256::ZERO,
            max_payee: U256::ZERO,
        };
        w.flush(Who::Payee);
        w
    }

    fn side(&mut self, who: Who) -> &mut Side {
        match who {
            Who::Payer => &mut self.payer,
            Who::Payee => &mut self.payee,
        }
    }

    fn queue(&mut self, to: Who) -> &mut VecDeque<Envelope> {
        match to {
            Who::Payer => &mut self.to_payer,
            Who::Payee => &mut self.to_payee,
        }
    }

    fn apply(&mut self, from: Address, a: &ChainAction) -> Vec<ChainEvent> {
        // Deposits are funded just in time; what a reverted deposit leaves in the wallet is not
        // a payout, so it is remembered and subtracted.
        if let (ChainAction::Deposit { amount, .. }, Some(Err(_))) =
            (a, run_chain_action(&self.sim, from, a))
        {
            self.stranded += *amount;
        }
        let all = self.sim.all_events();
        let new = all[self.seen_events..]
            .iter()
            .map(|r| r.event.clone())
            .collect();
        self.seen_events = all.len();
        new
    }

    /// Persists, routes outputs, runs chain actions, feeds chain events to both sides.
    fn flush(&mut self, who: Who) {
        let mut pending = vec![who];
        let mut rounds = 0;
        while let Some(w) = pending.pop() {
            rounds += 1;
            assert!(rounds < 10_000, "flush does not converge");
            let now = self.sim.now();
            let side = self.side(w);
            side.persist();
            let Some(ch) = side.ch.as_mut() else { continue };
            let mut out = Vec::new();
            while let Some(e) = ch.poll_outbound() {
                out.push(e);
            }
            let mut evs = Vec::new();
            while let Some(ev) = ch.poll_event() {
                evs.push(ev);
            }
            let mut actions = Vec::new();
            while let Some(a) = ch.poll_chain_action() {
                actions.push(a);
            }
            let from = ch.me();
            side.events.extend(evs);
            for e in out {
                self.queue(match w {
                    Who::Payer => Who::Payee,
                    Who::Payee => Who::Payer,
                })
                .push_back(e);
            }
            for a in actions {
                for ev in self.apply(from, &a) {
                    for other in [Who::Payer, Who::Payee] {
                        if let Some(ch) = self.side(other).ch.as_mut() {
                            ch.handle_chain_event(now, &ev)
                                .expect("chain events about our channel are accepted");
                            pending.push(other);
                        }
                    }
                }
            }
            if !pending.contains(&w)
                && self
                    .side(w)
                    .ch
                    .as_ref()
                    .is_some_and(|c| c.poll_persist().is_some())
            {
                pending.push(w);
            }
        }
    }

    fn deliver_env(&mut self, to: Who, env: &Envelope) {
        let side = self.side(to);
        match side.ch.as_mut() {
            Some(ch) => {
                let _ = ch.handle_message(&env.data);
            }
            None => {
                // The payer learns of the channel from the proposal.
                if let Message::Propose(p) = &env.data
                    && let Ok(ch) = Channel::from_proposal(side.signer.clone(), p)
                {
                    side.ch = Some(ch);
                }
            }
        }
        self.flush(to);
    }

    fn deliver(&mut self, to: Who) -> bool {
        let Some(env) = self.queue(to).pop_front() else {
            return false;
        };
        self.deliver_env(to, &env);
        true
    }

    fn drive(&mut self) {
        let mut steps = 0;
        while self.deliver(Who::Payee) || self.deliver(Who::Payer) {
            steps += 1;
            assert!(steps < 10_000, "delivery does not converge");
        }
    }

    fn advance(&mut self, secs: u64) {
        self.sim.advance_time(secs);
        let now = self.sim.now();
        for w in [Who::Payer, Who::Payee] {
            if let Some(ch) = self.side(w).ch.as_mut() {
                ch.handle_timeout(now);
            }
            self.flush(w);
        }
    }

    fn restore(&mut self, who: Who) {
        let now = self.sim.now();
        let id = self.id;
        let events: Vec<ChainEvent> = self
            .sim
            .all_events()
            .into_iter()
            .map(|r| r.event)
            .filter(|e| e.channel_id() == id)
            .collect();
        let side = self.side(who);
        let Some(bytes) = side.snapshot.clone() else {
            return;
        };
        let snapshot = ChannelSnapshot::from_bytes(&bytes).expect("our own snapshot parses");
        let mut ch = Channel::restore(side.signer.clone(), snapshot, side.voucher)
            .expect("our own snapshot restores");
        for ev in &events {
            ch.handle_chain_event(now, ev)
                .expect("replayed chain events are accepted");
        }
        ch.resend();
        side.ch = Some(ch);
        self.flush(who);
    }

    fn forge(&mut self, f: Forgery) {
        let mallory = signer(9);
        let payer_signer = self.payer.signer.clone();
        let id = self.id;
        let best = self.payee.paid();
        let voucher = |amount: U256, by: &dyn Signer, channel: B256| {
            let v = Voucher::sign(channel, amount, by).expect("signing");
            Message::Voucher(VoucherMessage::from_voucher(&v))
        };
        let (to, msg) = match f {
            Forgery::StrangerVoucher(x) => (
                Who::Payee,
                voucher(best + U256::from(x) + U256::from(1), &*mallory, id),
            ),
            Forgery::LowerVoucher => {
                if best.is_zero() {
                    return;
                }
                (
                    Who::Payee,
                    voucher(best - U256::from(1), &*payer_signer, id),
                )
            }
            Forgery::AboveDeposit => (
                Who::Payee,
                voucher(U256::from(DEPOSIT + 1), &*payer_signer, id),
            ),
            Forgery::OtherChannel(x) => {
                // Another channel whose id shares nothing with ours.
                let other = B256::repeat_byte(0x5A);
                (
                    Who::Payee,
                    voucher(
                        best + U256::from(x % 100) + U256::from(1),
                        &*payer_signer,
                        other,
                    ),
                )
            }
            Forgery::StrangerJoin => {
                let sig = mallory
                    .sign_eth_message(&B256::repeat_byte(3))
                    .expect("signing");
                (
                    Who::Payee,
                    Message::Join(Join {
                        channel_id: id,
                        prefund: sig,
                        postfund: sig,
                    }),
                )
            }
            Forgery::StrangerClose(to, x) => {
                let sig = mallory
                    .sign_eth_message(&B256::repeat_byte(4))
                    .expect("signing");
                (
                    to,
                    Message::Close(Close {
                        channel_id: id,
                        amount: U256::from(x % 1_500),
                        signature: sig,
                    }),
                )
            }
        };
        let side = self.side(to);
        let Some(ch) = side.ch.as_mut() else { return };
        let before = ch.snapshot();
        let running = ch.phase() == PhaseKind::Running;
        let r = ch.handle_message(&msg);
        if running {
            assert!(r.is_err(), "forgery accepted: {msg:?}");
        }
        assert_eq!(
            ch.snapshot(),
            before,
            "a forgery changed the state: {msg:?}"
        );
        self.flush(to);
    }

    fn deposited(&self) -> bool {
        self.sim
            .all_events()
            .iter()
            .any(|r| matches!(r.event, ChainEvent::Deposited { .. }))
    }

    fn check(&mut self) {
        let d = U256::from(DEPOSIT);
        let payer_paid = self.payer.paid();
        let payee_paid = self.payee.paid();
        assert!(payer_paid >= self.max_payer, "payer total decreased");
        assert!(payee_paid >= self.max_payee, "payee total decreased");
        self.max_payer = payer_paid;
        self.max_payee = payee_paid;
        assert!(payer_paid <= d, "payer signed beyond the deposit");
        for env in &self.to_payee {
            if let Message::Voucher(v) = &env.data {
                assert!(v.amount <= d, "voucher above the deposit in flight");
            }
        }
        assert!(
            payee_paid <= payer_paid,
            "payee credited {payee_paid} > signed {payer_paid}"
        );
        assert_eq!(self.payee.received_total(), payee_paid);
        let payer_addr = self.payer.signer.address();
        if let Some(v) = self.payee.ch.as_ref().and_then(Channel::best_voucher) {
            assert_eq!(v.recover_signer().ok(), Some(payer_addr));
            assert!(v.amount <= payee_paid);
        }
        if let Some(v) = self.payee.voucher {
            assert_eq!(v.recover_signer().ok(), Some(payer_addr));
        }
        let total = self.sim.holdings_of(self.id) + self.sim.balance_of(payer_addr) - self.stranded
            + self.sim.balance_of(self.payee.signer.address());
        let expected = if self.deposited() { d } else { U256::ZERO };
        assert_eq!(total, expected, "balances do not sum to the deposit");
        for side in [&self.payer, &self.payee] {
            if let Some(a) = side.ch.as_ref().and_then(Channel::final_amount) {
                assert!(a <= d);
            }
        }
    }

    fn step(&mut self, op: ChannelOp) {
        match op {
            ChannelOp::Join => {
                if let Some(ch) = self.payer.ch.as_mut() {
                    let _ = ch.join();
                }
                self.flush(Who::Payer);
            }
            ChannelOp::Pay(x) => {
                if let Some(ch) = self.payer.ch.as_mut() {
                    let before = ch.paid();
                    if ch.send_payment(U256::from(x)).is_err() {
                        assert_eq!(ch.paid(), before, "a refused payment signed something");
                    }
                }
                self.flush(Who::Payer);
            }
            ChannelOp::Deliver { to, drop, dup } => {
                if let Some(env) = self.queue(to).pop_front()
                    && !drop
                {
                    self.deliver_env(to, &env);
                    if dup {
                        self.deliver_env(to, &env);
                    }
                }
            }
            ChannelOp::Reorder(to) => {
                let q = self.queue(to);
                if let Some(e) = q.pop_front() {
                    q.push_back(e);
                }
            }
            ChannelOp::Resend(w) => {
                if let Some(ch) = self.side(w).ch.as_mut() {
                    ch.resend();
                }
                self.flush(w);
            }
            ChannelOp::Close(w) => {
                if let Some(ch) = self.side(w).ch.as_mut() {
                    let _ = ch.close();
                }
                self.flush(w);
            }
            ChannelOp::Challenge(w) => {
                let now = self.sim.now();
                if let Some(ch) = self.side(w).ch.as_mut() {
                    let _ = ch.challenge(now);
                }
                self.flush(w);
            }
            ChannelOp::Advance(s) => self.advance(u64::from(s)),
            ChannelOp::Restore(w) => self.restore(w),
            ChannelOp::Mutate { to, at, xor } => {
                let Some(env) = self.queue(to).front() else {
                    return;
                };
                let mut bytes = env.to_json().into_bytes();
                let i = usize::from(at) % bytes.len();
                bytes[i] ^= xor.max(1);
                if let Ok(env) = Envelope::from_slice(&bytes) {
                    self.deliver_env(to, &env);
                }
            }
            ChannelOp::Forge(f) => self.forge(f),
        }
    }

    /// Reliable delivery and retransmission, then a dispute if needed, then time.
    fn settle(&mut self) {
        for _ in 0..4 {
            self.drive();
            for w in [Who::Payer, Who::Payee] {
                if let Some(ch) = self.side(w).ch.as_mut() {
                    ch.resend();
                }
                self.flush(w);
            }
            self.drive();
        }
        self.check();
        let funded = self.deposited();
        if !funded {
            // Nothing ever reached the chain: nobody holds or lost anything.
            assert_eq!(self.payer.paid(), U256::ZERO);
            assert_eq!(self.payee.paid(), U256::ZERO);
            return;
        }
        let now = self.sim.now();
        let finalized = self
            .payee
            .ch
            .as_ref()
            .is_some_and(|c| c.phase() == PhaseKind::Finalized);
        if !finalized {
            let payee_ok = self
                .payee
                .ch
                .as_mut()
                .is_some_and(|c| c.challenge(now).is_ok());
            if payee_ok {
                self.flush(Who::Payee);
            } else if let Some(ch) = self.payer.ch.as_mut()
                && ch.challenge(now).is_ok()
            {
                self.flush(Who::Payer);
            }
        }
        self.advance(DURATION);
        self.advance(DURATION);
        self.check();
        let d = U256::from(DEPOSIT);
        let payer = self.payer.ch.as_ref().expect("a payer deposited");
        let payee = self.payee.ch.as_ref().expect("the payee exists");
        assert!(
            payer.is_settled() && payee.is_settled(),
            "not settled: {payer:?} {payee:?}"
        );
        let to_payer = self.sim.balance_of(payer.me()) - self.stranded;
        let to_payee = self.sim.balance_of(payee.me());
        assert_eq!(to_payer + to_payee, d);
        assert!(
            to_payee >= payee.paid(),
            "payee got {to_payee}, credited {}",
            payee.paid()
        );
        assert!(
            to_payer >= d - payer.paid(),
            "payer got {to_payer}, sent {}",
            payer.paid()
        );
    }
}

/// Runs the operations, checking the invariants after each, then settles and checks payouts.
pub fn channel_ops(data: &[u8]) {
    let mut u = arbitrary::Unstructured::new(data);
    let mut world = World::new();
    crate::run_ops(
        &mut u,
        MAX_OPS,
        crate::FirstOp::Always,
        None,
        |op: ChannelOp| {
            world.step(op);
            world.check();
        },
    );
    world.settle();
}
