//! `hub_ops`: a payer, a hub and one to three payees (`payment_channel::virtual_channel::Party`)
//! with ledger channels and virtual channels through the hub, over the real `SimulatedChain`
//! (ConsensusApp ledgers, PaymentApp virtual channels, guarantees and `reclaim` as the contracts
//! do them). The fuzzer chooses the operations: open virtual channels, pay, close, ask for the
//! final state, close ledgers; deliver, lose, duplicate and reorder messages; crash a party
//! (persisted state only, or persisted and killed before sending); challenge virtual channels
//! and ledgers, run a party's chain duties, let time pass; a network attacker delivering mutated
//! copies of messages; and at most one hostile party (chosen by the input's first bytes) whose
//! messages the fuzzer replaces with mutated, re-signed ones and which may roll back to an older
//! snapshot and act on chain from it.
//!
//! After every operation: an input a party refuses changes nothing and queues nothing; honest
//! totals never decrease and never exceed a channel's amount; an honest party's countersigned
//! ledger states keep the ledger's total; the hub never locks more than its per-ledger limit or
//! accepts a channel above its per-channel limit; money is conserved (wallets + holdings = 0).
//!
//! Then everything settles: the hostile party goes silent, messages are delivered reliably, the
//! honest payer closes its channels, every honest party takes what is left on chain (challenges,
//! reclaims, payouts) while time passes. At the end (with no hostile party) every channel's
//! holdings are paid out, and every honest party got what it is owed: a payee at least its best voucher in every channel, the
//! payer lost at most what it signed plus the fees of the channels the hub funded, the hub at
//! least those fees (it never loses capital). With no hostile party these are equalities.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use arbitrary::{Arbitrary, Unstructured};
use payment_channel::chain::{ChainAction, ChainEvent};
use payment_channel::ledger::LedgerBody;
use payment_channel::sign::{LocalSigner, Signer};
use payment_channel::test_utils::pair::signer;
use payment_channel::test_utils::ready;
use payment_channel::virtual_channel::{
    Envelope, HubLimits, Party, PartyConfig, Payload, Side, VirtualBody, VirtualParams,
};
use payment_channel::voucher::Voucher;
use payment_channel::{Address, B256, SimulatedChain, U256};

const GENESIS: u64 = 1_700_000_000;
const PAYMENT_APP: Address = Address::repeat_byte(0xA9);
const DURATION: u64 = 100;
/// What the payer deposits into L(payer, hub).
const PAYER_DEPOSIT: u64 = 1_000;
/// What the hub deposits into each L(hub, payee).
const HUB_DEPOSIT: u64 = 300;
/// Operations per input.
const MAX_OPS: usize = 48;
/// Snapshots of the hostile party kept for rollbacks.
const HISTORY: usize = 32;

fn u(x: u64) -> U256 {
    U256::from(x)
}

fn limits() -> HubLimits {
    HubLimits {
        max_amount: u(200),
        max_locked_per_ledger: u(250),
        min_fee: u(1),
    }
}

/// The setup: how many payees, and which party (if any) is hostile.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub struct HubConfig {
    /// `1 + payees % 3` payees.
    pub payees: u8,
    /// `hostile % 6`: 0–2 nobody, 3 the payer, 4 the hub, 5 the first payee.
    pub hostile: u8,
}

/// One step.
#[derive(Arbitrary, Debug)]
pub enum HubOp {
    /// The payer proposes a virtual channel to payee `payee` (modulo the count) with
    /// `a0 = 1 + amount % 250` and `fee = fee % 4` (the hub wants ≤ 200 and ≥ 1).
    Propose {
        /// Payee index.
        payee: u8,
        /// Amount selector.
        amount: u8,
        /// Fee selector.
        fee: u8,
    },
    /// The payer pays `delta % 128` more in channel `channel` (modulo the proposed ones).
    Pay {
        /// Channel index.
        channel: u8,
        /// Amount.
        delta: u8,
    },
    /// The payer signs the final state of `channel`.
    Close(u8),
    /// The hub (`by_hub`) or the channel's payee asks the payer for the final state.
    RequestFinal {
        /// Hub or payee.
        by_hub: bool,
        /// Channel index.
        channel: u8,
    },
    /// Message number `pick` (modulo the in-flight count) is delivered (or lost), maybe twice,
    /// maybe with the receiver killed after persisting and before sending anything.
    Deliver {
        /// Which message (reordering).
        pick: u8,
        /// Lose it.
        drop: bool,
        /// Deliver it twice.
        dup: bool,
        /// Kill the receiver after it persisted.
        crash: bool,
    },
    /// Party `who` re-sends what its state implies.
    Resend(u8),
    /// Party `who` restarts from what it stored (and replays every chain event).
    Crash(u8),
    /// The payer closes its ledger (`None`) or the hub its ledger with payee `Some(i)`.
    CloseLedger(Option<u8>),
    /// Party `who` takes channel `channel` on chain.
    Challenge {
        /// Party index.
        who: u8,
        /// Channel index.
        channel: u8,
    },
    /// Party `who` takes its ledger number `ledger` on chain.
    ChallengeLedger {
        /// Party index.
        who: u8,
        /// Ledger index among the party's.
        ledger: u8,
    },
    /// Party `who` sends the transactions it owes now.
    Duties(u8),
    /// Honest parties send what they owe, then `secs` seconds pass; every party handles its
    /// timeouts.
    Advance(u8),
    /// A network attacker delivers a copy of message `pick` with byte `at` of its JSON flipped by
    /// `xor` (the original stays in flight).
    Tamper {
        /// Which message.
        pick: u8,
        /// Byte index (modulo the length).
        at: u16,
        /// XOR mask (0 becomes 1).
        xor: u8,
    },
    /// The hostile party's next message (the first in flight from it after `pick`) is replaced by
    /// a mutated copy whose signatures it re-signs with its own key.
    Hostile {
        /// Where to start looking.
        pick: u8,
        /// Byte index.
        at: u16,
        /// XOR mask.
        xor: u8,
    },
    /// The hostile party restarts from an older snapshot (`back` steps back).
    Rollback(u8),
}

struct World {
    sim: SimulatedChain,
    keys: Vec<Arc<LocalSigner>>,
    parties: Vec<Party>,
    disk: Vec<Vec<u8>>,
    history: Vec<Vec<u8>>,
    hostile: Option<usize>,
    net: VecDeque<Envelope>,
    /// Every chain event delivered so far.
    seen: usize,
    /// `reclaim` target of each `Reclaimed` event, by event index.
    reclaim_targets: BTreeMap<usize, B256>,
    /// What each party's wallet was funded with (for deposits).
    funded: BTreeMap<Address, U256>,
    /// Proposed channels, in order.
    channels: Vec<B256>,
    /// Per (party, channel): highest total seen.
    max_paid: BTreeMap<(usize, B256), U256>,
    nonce: u64,
    /// During settlement the hostile party is silent.
    settling: bool,
}

const PAYER: usize = 0;
const HUB: usize = 1;

impl World {
    fn new(cfg: HubConfig) -> Self {
        let n = 2 + 1 + usize::from(cfg.payees % 3);
        let hostile = match cfg.hostile % 6 {
            3 => Some(PAYER),
            4 => Some(HUB),
            5 => Some(2),
            _ => None,
        };
        let sim = SimulatedChain::with_genesis(GENESIS, PAYMENT_APP);
        let consensus_app = sim.consensus_app();
        let keys: Vec<Arc<LocalSigner>> = (0..n).map(|i| signer(11 + i as u8)).collect();
        let parties: Vec<Party> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| {
                Party::new(
                    k.clone(),
                    PartyConfig::new(consensus_app, PAYMENT_APP).with_hub((i == HUB).then(limits)),
                )
            })
            .collect();
        let disk = parties.iter().map(Party::snapshot).collect();
        let mut w = Self {
            sim,
            keys,
            parties,
            disk,
            history: Vec::new(),
            hostile,
            net: VecDeque::new(),
            seen: 0,
            reclaim_targets: BTreeMap::new(),
            funded: BTreeMap::new(),
            channels: Vec::new(),
            max_paid: BTreeMap::new(),
            nonce: 0,
            settling: false,
        };
        // Ledgers are opened and funded reliably (every party honest so far).
        let hub = w.addr(HUB);
        w.parties[PAYER]
            .open_ledger(hub, 1, DURATION, Address::ZERO, u(PAYER_DEPOSIT))
            .expect("valid ledger");
        for i in 2..n {
            let b = w.addr(i);
            w.parties[HUB]
                .open_ledger(b, 10 + i as u64, DURATION, Address::ZERO, u(HUB_DEPOSIT))
                .expect("valid ledger");
        }
        for _ in 0..6 {
            w.deliver_all();
            for i in 0..n {
                w.duties(i);
            }
        }
        w.deliver_all();
        for p in &w.parties {
            for l in p.ledgers() {
                assert_eq!(
                    l.phase(),
                    payment_channel::ledger::LedgerPhase::Open,
                    "setup: ledger not open"
                );
            }
        }
        w
    }

    fn n(&self) -> usize {
        self.parties.len()
    }

    fn addr(&self, i: usize) -> Address {
        self.keys[i].address()
    }

    fn index_of(&self, a: Address) -> Option<usize> {
        self.keys.iter().position(|k| k.address() == a)
    }

    fn honest(&self, i: usize) -> bool {
        self.hostile != Some(i)
    }

    fn silent(&self, i: usize) -> bool {
        self.settling && !self.honest(i)
    }

    /// What party `i`'s virtual channels show paid (payer: signed; payee: best voucher).
    fn paid_total(&self, i: usize) -> u128 {
        self.parties[i]
            .channels()
            .map(|c| c.paid().to::<u128>())
            .sum()
    }

    /// The fees of party `i`'s virtual channels whose payer-side guarantee is in place.
    fn funded_fees(&self, i: usize) -> u128 {
        self.parties[i]
            .channels()
            .filter(|c| c.is_guaranteed(Side::PayerSide))
            .map(|c| c.fee().to::<u128>())
            .sum()
    }

    /// The parties among the first `n` that are not silent.
    fn speaking(&self, n: usize) -> Vec<usize> {
        (0..n).filter(|&i| !self.silent(i)).collect()
    }

    fn now(&self) -> u64 {
        self.sim.now()
    }

    // ----- persistence, outputs, chain events ------------------------------------------------

    /// Persists every party and moves its released messages into the network.
    fn flush(&mut self) {
        for i in 0..self.n() {
            let p = &mut self.parties[i];
            if let Some(s) = p.poll_persist() {
                if self.hostile == Some(i) {
                    self.history.push(s.clone());
                    if self.history.len() > HISTORY {
                        self.history.remove(0);
                    }
                }
                self.disk[i] = s;
                p.handle_persisted();
            }
            while p.poll_event().is_some() {}
            while let Some(e) = p.poll_envelope() {
                if !(self.settling && self.hostile == Some(i)) {
                    self.net.push_back(e);
                }
            }
        }
    }

    /// Feeds event `idx` of the chain's log to party `i`.
    fn feed(&mut self, i: usize, idx: usize, ev: &ChainEvent) {
        let now = self.now();
        let p = &mut self.parties[i];
        if let ChainEvent::Reclaimed { channel_id, .. } = ev {
            if let Some(target) = self.reclaim_targets.get(&idx) {
                p.handle_timeout(now);
                if p.ledger(channel_id).is_some() {
                    let _ = p.handle_reclaimed(*channel_id, *target);
                }
            }
        } else {
            // Events a party cannot use (e.g. a conclude it has no final state for) are refused
            // without a change; nothing else to do here.
            let _ = p.handle_chain_event(now, ev);
        }
    }

    /// Delivers new chain events to every party.
    fn pump(&mut self) {
        let all = self.sim.all_events();
        for (idx, r) in all.iter().enumerate().skip(self.seen) {
            for i in 0..self.n() {
                self.feed(i, idx, &r.event);
            }
        }
        self.seen = all.len();
        self.flush();
    }

    /// Runs party `i`'s chain duties (reverts are fine: a duty may have landed already).
    fn duties(&mut self, i: usize) {
        if self.silent(i) {
            return;
        }
        let now = self.now();
        self.parties[i].handle_timeout(now);
        self.flush();
        let Ok(duties) = self.parties[i].chain_duties(now) else {
            return;
        };
        let me = self.addr(i);
        let h = self.sim.handle(me);
        for d in duties {
            // A revert is fine (the duty landed already, or a hostile party got there first).
            if let ChainAction::Deposit { amount, .. } = &d {
                self.sim.fund(me, *amount).expect("the simulator funds");
                *self.funded.entry(me).or_default() += *amount;
            }
            let landed = ready(d.send(&h)).is_ok();
            if let (ChainAction::Reclaim(args), true) = (&d, landed) {
                let idx = usize::try_from(args.index_of_target_in_source).unwrap_or(0);
                let target = args.source_outcome[0].allocations[idx].destination;
                self.reclaim_targets
                    .insert(self.sim.all_events().len() - 1, target);
            }
            self.pump();
        }
    }

    fn restore(&mut self, i: usize, bytes: &[u8]) {
        let mut p = Party::restore(self.keys[i].clone(), bytes).expect("our own snapshot restores");
        let all = self.sim.all_events();
        std::mem::swap(&mut self.parties[i], &mut p);
        for (idx, r) in all.iter().enumerate() {
            self.feed(i, idx, &r.event);
        }
        let now = self.now();
        self.parties[i].handle_timeout(now);
        self.parties[i].resend();
        self.flush();
    }

    fn crash(&mut self, i: usize) {
        let bytes = self.disk[i].clone();
        self.restore(i, &bytes);
    }

    /// Delivers `e`; a refusal must leave the receiver unchanged with nothing queued.
    fn deliver_env(&mut self, e: &Envelope, crash: bool) {
        let Some(to) = self.index_of(e.to) else {
            return;
        };
        if self.silent(to) {
            return;
        }
        let p = &mut self.parties[to];
        let before = p.snapshot();
        if let Err(err) = p.handle_envelope(e) {
            assert_eq!(
                p.snapshot(),
                before,
                "refused input changed the state: {err}"
            );
            assert!(
                p.poll_persist().is_none(),
                "refused input asks to persist: {err}"
            );
        }
        if crash {
            if let Some(s) = p.poll_persist() {
                self.disk[to] = s;
            }
            self.crash(to);
        }
        self.flush();
    }

    fn deliver_all(&mut self) {
        self.flush();
        let mut steps = 0;
        while let Some(e) = self.net.pop_front() {
            steps += 1;
            assert!(steps < 20_000, "delivery does not converge");
            self.deliver_env(&e, false);
        }
    }

    fn pick(&self, pick: u8) -> Option<usize> {
        (!self.net.is_empty()).then(|| usize::from(pick) % self.net.len())
    }

    fn channel(&self, c: u8) -> Option<B256> {
        (!self.channels.is_empty()).then(|| self.channels[usize::from(c) % self.channels.len()])
    }

    /// The payee of `v`.
    fn payee_of(&self, v: B256) -> Option<usize> {
        let c = self.parties[PAYER].channel(&v)?;
        self.index_of(c.fixed_part().participants[2])
    }

    // ----- operations ------------------------------------------------------------------------

    fn apply(&mut self, op: HubOp) {
        match op {
            HubOp::Propose { payee, amount, fee } => {
                let b = 2 + usize::from(payee) % (self.n() - 2);
                self.nonce += 1;
                let params = VirtualParams {
                    hub: self.addr(HUB),
                    payee: self.addr(b),
                    channel_nonce: 1_000 + self.nonce,
                    app_definition: PAYMENT_APP,
                    challenge_duration: DURATION,
                    asset: Address::ZERO,
                    amount: u(1 + u64::from(amount) % 250),
                    fee: u(u64::from(fee % 4)),
                };
                if let Ok(id) = self.parties[PAYER].propose_virtual(&params) {
                    self.channels.push(id);
                }
            }
            HubOp::Pay { channel, delta } => {
                if let Some(v) = self.channel(channel) {
                    let _ = self.parties[PAYER].pay(v, u(u64::from(delta % 128)));
                }
            }
            HubOp::Close(c) => {
                if let Some(v) = self.channel(c) {
                    let _ = self.parties[PAYER].close_virtual(v);
                }
            }
            HubOp::RequestFinal { by_hub, channel } => {
                if let Some(v) = self.channel(channel) {
                    let who = if by_hub { Some(HUB) } else { self.payee_of(v) };
                    if let Some(who) = who {
                        let _ = self.parties[who].request_final(v);
                    }
                }
            }
            HubOp::Deliver {
                pick,
                drop,
                dup,
                crash,
            } => {
                if let Some(i) = self.pick(pick) {
                    let e = self.net.remove(i).expect("index in range");
                    if !drop {
                        self.deliver_env(&e, crash);
                        if dup {
                            self.deliver_env(&e, false);
                        }
                    }
                }
            }
            HubOp::Resend(who) => {
                let i = usize::from(who) % self.n();
                self.parties[i].resend();
            }
            HubOp::Crash(who) => self.crash(usize::from(who) % self.n()),
            HubOp::CloseLedger(which) => {
                let (who, counterparty) = match which {
                    None => (PAYER, HUB),
                    Some(b) => (HUB, 2 + usize::from(b) % (self.n() - 2)),
                };
                let other = self.addr(counterparty);
                let id = self.parties[who]
                    .ledgers()
                    .find(|l| l.counterparty() == other)
                    .map(|l| l.id());
                if let Some(id) = id {
                    let _ = self.parties[who].close_ledger(id);
                }
            }
            HubOp::Challenge { who, channel } => {
                let i = usize::from(who) % self.n();
                if let Some(v) = self.channel(channel)
                    && self.parties[i].channel(&v).is_some()
                {
                    let _ = self.parties[i].challenge_virtual(v);
                }
            }
            HubOp::ChallengeLedger { who, ledger } => {
                let i = usize::from(who) % self.n();
                let ids: Vec<B256> = self.parties[i].ledgers().map(|l| l.id()).collect();
                if !ids.is_empty() {
                    let id = ids[usize::from(ledger) % ids.len()];
                    let _ = self.parties[i].challenge_ledger(id);
                }
            }
            HubOp::Duties(who) => {
                let i = usize::from(who) % self.n();
                self.flush();
                self.duties(i);
            }
            HubOp::Advance(secs) => self.advance(u64::from(secs)),
            HubOp::Tamper { pick, at, xor } => {
                if let Some(i) = self.pick(pick)
                    && let Some(e) = mutate(&self.net[i], at, xor)
                {
                    self.deliver_env(&e, false);
                }
            }
            HubOp::Hostile { pick, at, xor } => {
                let Some(h) = self.hostile else { return };
                let me = self.addr(h);
                let Some(start) = self.pick(pick) else { return };
                let len = self.net.len();
                let Some(i) = (0..len)
                    .map(|k| (start + k) % len)
                    .find(|&k| self.net[k].from == me)
                else {
                    return;
                };
                let original = self.net.remove(i).expect("index in range");
                if let Some(mut e) = mutate(&original, at, xor) {
                    resign(&mut e, &*self.keys[h]);
                    self.deliver_env(&e, false);
                }
            }
            HubOp::Rollback(back) => {
                let Some(h) = self.hostile else { return };
                if self.history.is_empty() {
                    return;
                }
                let k = self
                    .history
                    .len()
                    .saturating_sub(1 + usize::from(back) % self.history.len());
                let bytes = self.history[k].clone();
                self.restore(h, &bytes);
            }
        }
        self.flush();
    }

    /// Time passes. Honest parties watch the chain: they send what they owe (answers to
    /// challenges included) before time moves, as a watcher inside the challenge window does.
    fn advance(&mut self, secs: u64) {
        for _ in 0..2 {
            for i in 0..self.n() {
                if self.honest(i) {
                    self.duties(i);
                }
            }
        }
        self.sim.advance_time(secs);
        let now = self.now();
        for p in &mut self.parties {
            p.handle_timeout(now);
        }
        self.flush();
    }

    // ----- oracles ---------------------------------------------------------------------------

    fn net_of(&self, i: usize) -> i128 {
        let a = self.addr(i);
        let bal = self.sim.balance_of(a);
        let funded = self.funded.get(&a).copied().unwrap_or_default();
        i128::try_from(bal).expect("small") - i128::try_from(funded).expect("small")
    }

    fn ledger_ids(&self) -> Vec<B256> {
        let mut ids: Vec<B256> = self
            .parties
            .iter()
            .flat_map(|p| p.ledgers().map(|l| l.id()).collect::<Vec<_>>())
            .collect();
        ids.sort();
        ids.dedup();
        ids
    }

    fn check(&mut self) {
        let lim = limits();
        for i in 0..self.n() {
            if !self.honest(i) {
                continue;
            }
            let p = &self.parties[i];
            for c in p.channels() {
                let paid = c.paid();
                assert!(paid <= c.amount(), "total {paid} above a0 {}", c.amount());
                let max = self.max_paid.entry((i, c.id())).or_default();
                assert!(paid >= *max, "party {i}: total decreased {max} -> {paid}");
                *max = paid;
                if i == HUB {
                    assert!(c.amount() <= lim.max_amount, "hub accepted above its limit");
                    assert!(
                        c.fee() >= lim.min_fee,
                        "hub accepted a fee below its minimum"
                    );
                }
                if let Some(x) = c.final_amount() {
                    if c.role() == payment_channel::virtual_channel::VirtualRole::Payee {
                        assert!(
                            x >= paid,
                            "payee signed a final state below its best voucher"
                        );
                    }
                    if c.role() == payment_channel::virtual_channel::VirtualRole::Payer {
                        assert!(x <= paid, "payer signed a final state above what it paid");
                    }
                }
            }
            for l in p.ledgers() {
                if let Some(vars) = l.countersigned() {
                    assert_eq!(vars.total(), Some(l.deposit()), "ledger total changed");
                    if i == HUB && l.role() == payment_channel::ledger::LedgerRole::Leader {
                        assert!(
                            vars.locked() <= lim.max_locked_per_ledger,
                            "hub locked {} > limit",
                            vars.locked()
                        );
                    }
                }
            }
        }
        // Conservation: what wallets gained is what holdings lost.
        let wallets: i128 = (0..self.n()).map(|i| self.net_of(i)).sum();
        let mut ids = self.ledger_ids();
        ids.extend(self.channels.iter().copied());
        let held: i128 = ids
            .iter()
            .map(|id| i128::try_from(self.sim.holdings_of(*id)).expect("small"))
            .sum();
        assert_eq!(wallets + held, 0, "money created or destroyed");
    }

    /// The hostile party goes silent; the others finish cooperatively where they can and take
    /// the rest on chain.
    fn settle(&mut self) {
        self.settling = true;
        let n = self.n();
        for round in 0..16 {
            if self.paid_out() && round > 0 {
                break;
            }
            // Delivery is reliable from here on: re-sending recovers what the fuzzed phase lost,
            // and again after the on-chain steps in case one depends on the order of arrival.
            if matches!(round, 0 | 1 | 4 | 7) {
                for i in 0..n {
                    self.parties[i].resend();
                }
            }
            self.deliver_all();
            if round == 0 && self.honest(PAYER) {
                for v in self.channels.clone() {
                    let _ = self.parties[PAYER].close_virtual(v);
                }
                self.deliver_all();
            }
            // Ledgers without guarantees close cooperatively.
            for i in self.speaking(n) {
                let ids: Vec<B256> = self.parties[i].ledgers().map(|l| l.id()).collect();
                for id in ids {
                    let _ = self.parties[i].close_ledger(id);
                }
            }
            self.deliver_all();
            if round == 3 {
                // What did not finish off chain goes on chain.
                for i in self.speaking(n) {
                    let open: Vec<B256> = self.parties[i]
                        .channels()
                        .filter(|c| !c.is_defunded())
                        .map(|c| c.id())
                        .collect();
                    for v in open {
                        let _ = self.parties[i].challenge_virtual(v);
                    }
                }
            }
            if round == 6 {
                for i in self.speaking(n) {
                    let ids: Vec<B256> = self.parties[i]
                        .ledgers()
                        .filter(|l| l.chain().finalized.is_none())
                        .map(|l| l.id())
                        .collect();
                    for id in ids {
                        let _ = self.parties[i].challenge_ledger(id);
                    }
                }
            }
            self.flush();
            for _ in 0..3 {
                for i in 0..n {
                    self.duties(i);
                }
            }
            if round >= 3 {
                self.advance(DURATION + 1);
            }
            self.check();
        }
    }

    fn dump(&self) {
        for (i, p) in self.parties.iter().enumerate() {
            eprintln!("party {i} net {}", self.net_of(i));
            for c in p.channels() {
                eprintln!(
                    "  V {} {:?} a0 {} paid {} final {:?} running {} defunded {} chain {:?}",
                    c.id(),
                    c.role(),
                    c.amount(),
                    c.paid(),
                    c.final_amount(),
                    c.is_running(),
                    c.is_defunded(),
                    c.chain()
                );
            }
            for l in p.ledgers() {
                eprintln!(
                    "  L {} {:?} {:?} cs {:?} chain {:?}",
                    l.id(),
                    l.role(),
                    l.phase(),
                    l.countersigned(),
                    l.chain()
                );
            }
        }
        for r in self.sim.all_events() {
            eprintln!("event {:?}", r.event);
        }
    }

    /// Every ledger is paid out.
    fn paid_out(&self) -> bool {
        self.ledger_ids()
            .iter()
            .all(|id| self.sim.holdings_of(*id).is_zero())
    }

    fn final_oracles(&mut self) {
        if std::env::var_os("HUB_DEBUG").is_some() {
            self.dump();
        }
        // With a hostile party, what stays locked may be its own money (e.g. it signed a final
        // state and went silent where only it would submit): the per-party oracles below decide.
        let exact = self.hostile.is_none();
        for id in self.ledger_ids().into_iter().filter(|_| exact) {
            assert!(
                self.sim.holdings_of(id).is_zero(),
                "ledger {id} still holds {}",
                self.sim.holdings_of(id)
            );
        }
        for v in &self.channels {
            assert!(
                self.sim.holdings_of(*v).is_zero(),
                "channel {v} holds funds"
            );
        }
        for b in 2..self.n() {
            if !self.honest(b) {
                continue;
            }
            let owed = self.paid_total(b);
            let got = self.net_of(b);
            let below = || format!("payee {b} got {got} < its vouchers {owed}");
            assert_net(got, owed as i128, exact, below, &format!("payee {b}"));
        }
        let fees_funded = self.funded_fees(HUB);
        if self.honest(PAYER) {
            let signed = self.paid_total(PAYER);
            let fees = self.funded_fees(PAYER);
            let got = self.net_of(PAYER);
            assert!(
                got >= -((signed + fees) as i128),
                "payer lost {} > signed {signed} + fees {fees}",
                -got
            );
            if exact {
                let paid_out: u128 = (2..self.n()).map(|b| self.net_of(b) as u128).sum();
                assert_eq!(got, -((paid_out + fees) as i128), "payer");
            }
        }
        if self.honest(HUB) {
            let got = self.net_of(HUB);
            let below = || format!("hub netted {got} < fees {fees_funded}");
            assert_net(got, fees_funded as i128, exact, below, "hub");
        }
    }
}

/// Checks that a party netted at least `owed` (`below` says otherwise), and exactly `owed` when
/// `exact`.
fn assert_net(got: i128, owed: i128, exact: bool, below: impl FnOnce() -> String, who: &str) {
    assert!(got >= owed, "{}", below());
    if exact {
        assert_eq!(got, owed, "{who}");
    }
}

/// `e` as JSON with one byte flipped, if that still parses and differs.
fn mutate(e: &Envelope, at: u16, xor: u8) -> Option<Envelope> {
    let mut bytes = serde_json::to_vec(e).expect("envelopes serialize");
    let i = usize::from(at) % bytes.len();
    bytes[i] ^= xor.max(1);
    let m: Envelope = serde_json::from_slice(&bytes).ok()?;
    (m != *e).then_some(m)
}

/// A hostile sender signs what it mutated: states it proposes, final states, vouchers.
fn resign(e: &mut Envelope, key: &dyn Signer) {
    match &mut e.payload {
        Payload::Ledger(m) => {
            let id = m.ledger_id;
            match &mut m.body {
                LedgerBody::Proposals { updates } => {
                    for up in updates {
                        if let Ok(s) = key.sign_eth_message(&up.state.hash(id)) {
                            up.signature = s;
                        }
                    }
                }
                LedgerBody::Final { state, signature } => {
                    if let Ok(s) = key.sign_eth_message(&state.hash(id)) {
                        *signature = s;
                    }
                }
                _ => {}
            }
        }
        Payload::Virtual(m) => {
            let id = m.channel_id;
            match &mut m.body {
                VirtualBody::Final { state, signature } => {
                    if let Ok(s) = key.sign_eth_message(&state.hash(id)) {
                        *signature = s;
                    }
                }
                VirtualBody::Voucher(v) => {
                    if let Ok(s) = Voucher::sign(v.channel_id, v.amount, key) {
                        *v = s;
                    }
                }
                _ => {}
            }
        }
    }
}

/// Runs one input: a [`HubConfig`], then up to [`MAX_OPS`] [`HubOp`]s, then settlement; panics
/// if an oracle fails (see the module docs).
pub fn hub_ops(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(cfg) = HubConfig::arbitrary(&mut u) else {
        return;
    };
    let mut w = World::new(cfg);
    w.check();
    crate::run_ops(
        &mut u,
        MAX_OPS,
        crate::FirstOp::IfInputLeft,
        Some("HUB_DEBUG"),
        |op: HubOp| {
            w.apply(op);
            w.check();
        },
    );
    w.settle();
    w.final_oracles();
}
