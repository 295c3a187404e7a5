//! Virtual channels through a hub, off chain: a payer, a hub and payees exchange messages through
//! an in-memory network; a tiny in-test chain applies deposits, concludes, challenges, reclaims and
//! payouts as the contracts would (§4.1 of the virtual-funding reference), so end balances are
//! checked in wei.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use payment_channel::chain::{ChainAction, ChainEvent};
use payment_channel::error::Reaction;
use payment_channel::ledger::{
    LedgerBody, LedgerMessage, LedgerPeerError, LedgerVars, Proposal, SignedUpdate, reclaim_effect,
};
use payment_channel::sign::{LocalSigner, Signer};
use payment_channel::state::{
    Outcome, VariablePart, address_to_destination, destination_to_address,
};
use payment_channel::virtual_channel::{
    Envelope, HubLimits, Party, PartyConfig, Payload, Rejection, VirtualBody, VirtualError,
    VirtualMessage, VirtualParams, VirtualPeerError,
};
use payment_channel::voucher::Voucher;
use payment_channel::{Address, B256, U256};
use proptest::prelude::*;

const CONSENSUS_APP: Address = Address::repeat_byte(0xc0);
const PAYMENT_APP: Address = Address::repeat_byte(0xa9);
const DURATION: u64 = 100;

fn u(n: u64) -> U256 {
    U256::from(n)
}

/// The contracts' bookkeeping, as far as these tests need it.
#[derive(Default)]
struct Chain {
    holdings: BTreeMap<B256, U256>,
    /// Externally owned balances: + payouts, − deposits.
    wallets: BTreeMap<Address, i128>,
    concluded: BTreeMap<B256, ()>,
}

struct Net {
    keys: BTreeMap<Address, Arc<LocalSigner>>,
    parties: BTreeMap<Address, Party>,
    inflight: VecDeque<Envelope>,
    chain: Chain,
    now: u64,
    /// Persisted snapshots, by party.
    disk: BTreeMap<Address, Vec<u8>>,
    delivered: usize,
    /// Crash (restore from disk, resend) the receiver of delivery number `crash_at`.
    crash_at: Option<usize>,
}

fn as_i(x: U256) -> i128 {
    i128::try_from(x).unwrap()
}

impl Net {
    fn new() -> Self {
        Self {
            keys: BTreeMap::new(),
            parties: BTreeMap::new(),
            inflight: VecDeque::new(),
            chain: Chain::default(),
            now: 1_000,
            disk: BTreeMap::new(),
            delivered: 0,
            crash_at: None,
        }
    }

    fn add(&mut self, hub: Option<HubLimits>) -> Address {
        let key = Arc::new(LocalSigner::random());
        let a = key.address();
        let config = PartyConfig {
            consensus_app: CONSENSUS_APP,
            payment_app: PAYMENT_APP,
            hub,
        };
        self.parties.insert(a, Party::new(key.clone(), config));
        self.keys.insert(a, key);
        a
    }

    fn p(&mut self, a: Address) -> &mut Party {
        self.parties.get_mut(&a).unwrap()
    }

    /// Persists every party and moves its released messages into the network.
    fn flush(&mut self) {
        for (a, p) in self.parties.iter_mut() {
            if let Some(s) = p.poll_persist() {
                self.disk.insert(*a, s);
                p.handle_persisted();
            }
            while let Some(e) = p.poll_envelope() {
                self.inflight.push_back(e);
            }
            while p.poll_event().is_some() {}
        }
    }

    fn crash(&mut self, a: Address) {
        let key = self.keys[&a].clone();
        let restored = Party::restore(key, &self.disk[&a]).unwrap();
        self.parties.insert(a, restored);
        self.p(a).resend();
    }

    fn deliver(&mut self, e: Envelope) {
        let to = e.to;
        if let Err(err) = self.p(to).handle_envelope(&e) {
            assert_eq!(
                err.reaction(),
                Reaction::Ignore,
                "honest traffic refused: {err}"
            );
        }
        if self.crash_at == Some(self.delivered) {
            // Persisted, then the process died before sending anything.
            if let Some(s) = self.p(to).poll_persist() {
                self.disk.insert(to, s);
            }
            self.crash(to);
        }
        self.delivered += 1;
        self.flush();
    }

    fn run(&mut self) {
        self.flush();
        while let Some(e) = self.inflight.pop_front() {
            self.deliver(e);
        }
        self.settle();
    }

    /// Runs the parties' chain duties until none is left (happy-path duties only).
    fn settle(&mut self) {
        for _ in 0..20 {
            let mut any = false;
            let addrs: Vec<Address> = self.parties.keys().copied().collect();
            for a in addrs {
                let now = self.now;
                let duties = self.p(a).chain_duties(now).unwrap();
                for d in duties {
                    any |= self.apply(a, d);
                }
            }
            self.flush();
            while let Some(e) = self.inflight.pop_front() {
                self.deliver(e);
            }
            if !any {
                return;
            }
        }
        panic!("chain duties do not settle");
    }

    fn participants_of(&self, channel: B256) -> Vec<Address> {
        self.parties
            .iter()
            .filter(|(_, p)| p.ledger(&channel).is_some() || p.channel(&channel).is_some())
            .map(|(a, _)| *a)
            .collect()
    }

    fn emit(&mut self, channel: B256, ev: ChainEvent) {
        for a in self.participants_of(channel) {
            let now = self.now;
            self.p(a).handle_chain_event(now, &ev).unwrap();
        }
        self.flush();
    }

    fn pay_out(&mut self, channel: B256, outcome: &Outcome) {
        let held = self
            .chain
            .holdings
            .get(&channel)
            .copied()
            .unwrap_or_default();
        let mut paid = U256::ZERO;
        for a in &outcome[0].allocations {
            assert_eq!(a.allocation_type, 0, "transfer of a guarantee");
            let to = destination_to_address(&a.destination).unwrap();
            *self.chain.wallets.entry(to).or_default() += as_i(a.amount);
            paid += a.amount;
        }
        assert_eq!(paid, held, "outcome total differs from holdings");
        self.chain.holdings.insert(channel, U256::ZERO);
        self.emit(
            channel,
            ChainEvent::AllocationUpdated {
                channel_id: channel,
                asset_index: 0,
                initial_holdings: held,
                final_holdings: U256::ZERO,
            },
        );
    }

    /// Applies one duty as the contracts would; false if it already landed.
    fn apply(&mut self, by: Address, d: ChainAction) -> bool {
        match d {
            ChainAction::Deposit {
                channel_id,
                expected_held,
                amount,
                ..
            } => {
                let h = self.chain.holdings.entry(channel_id).or_default();
                if *h != expected_held {
                    return false;
                }
                *h += amount;
                let holdings = *h;
                *self.chain.wallets.entry(by).or_default() -= as_i(amount);
                self.emit(
                    channel_id,
                    ChainEvent::Deposited {
                        channel_id,
                        asset: Address::ZERO,
                        holdings,
                    },
                );
                true
            }
            ChainAction::ConcludeAndTransferAllAssets { fixed, candidate } => {
                let id = fixed.channel_id();
                if self.chain.concluded.insert(id, ()).is_some() {
                    return false;
                }
                assert!(candidate.variable_part.is_final && candidate.sigs.len() == 2);
                let now = self.now;
                self.emit(
                    id,
                    ChainEvent::Concluded {
                        channel_id: id,
                        finalizes_at: now,
                    },
                );
                self.pay_out(id, &candidate.variable_part.outcome);
                true
            }
            other => panic!("unexpected duty on the happy path: {other:?}"),
        }
    }

    fn wallet(&self, a: Address) -> i128 {
        self.chain.wallets.get(&a).copied().unwrap_or_default()
    }
}

struct World {
    net: Net,
    payer: Address,
    hub: Address,
    payees: Vec<Address>,
    payer_ledger: B256,
    hub_ledgers: Vec<B256>,
}

fn limits() -> HubLimits {
    HubLimits {
        max_amount: u(500),
        max_locked_per_ledger: u(1_000),
        min_fee: u(1),
    }
}

fn world(payees: usize, crash_at: Option<usize>) -> World {
    let mut net = Net::new();
    net.crash_at = crash_at;
    let payer = net.add(None);
    let hub = net.add(Some(limits()));
    let payees: Vec<Address> = (0..payees).map(|_| net.add(None)).collect();
    let payer_ledger = net
        .p(payer)
        .open_ledger(hub, 1, DURATION, Address::ZERO, u(2_000))
        .unwrap();
    let hub_ledgers = payees
        .iter()
        .enumerate()
        .map(|(i, b)| {
            net.p(hub)
                .open_ledger(*b, 10 + i as u64, DURATION, Address::ZERO, u(200))
                .unwrap()
        })
        .collect();
    net.run();
    World {
        net,
        payer,
        hub,
        payees,
        payer_ledger,
        hub_ledgers,
    }
}

fn params(w: &World, i: usize, amount: u64, fee: u64) -> VirtualParams {
    VirtualParams {
        hub: w.hub,
        payee: w.payees[i],
        channel_nonce: 100 + i as u64,
        app_definition: PAYMENT_APP,
        challenge_duration: DURATION,
        asset: Address::ZERO,
        amount: u(amount),
        fee: u(fee),
    }
}

/// Opens V_i to every payee, pays `pays[i]` in three vouchers, closes, defunds, closes every
/// ledger; returns the channel ids.
fn happy(w: &mut World, pays: &[u64], fee: u64) -> Vec<B256> {
    let vs: Vec<B256> = (0..w.payees.len())
        .map(|i| {
            let p = params(w, i, 100, fee);
            w.net.p(w.payer).propose_virtual(&p).unwrap()
        })
        .collect();
    w.net.run();
    for (i, v) in vs.iter().enumerate() {
        for a in [w.payer, w.hub, w.payees[i]] {
            assert!(
                w.net.p(a).channel(v).unwrap().is_running(),
                "not running at {a}"
            );
        }
    }
    for (i, v) in vs.iter().enumerate() {
        let third = pays[i] / 3;
        for d in [third, third, pays[i] - 2 * third] {
            w.net.p(w.payer).pay(*v, u(d)).unwrap();
            w.net.run();
        }
        assert_eq!(w.net.p(w.payees[i]).channel(v).unwrap().paid(), u(pays[i]));
    }
    for v in &vs {
        w.net.p(w.payer).close_virtual(*v).unwrap();
    }
    w.net.run();
    for (i, v) in vs.iter().enumerate() {
        for a in [w.payer, w.hub, w.payees[i]] {
            let c = w.net.p(a).channel(v).unwrap();
            assert_eq!(c.final_amount(), Some(u(pays[i])));
            assert!(c.is_defunded(), "not defunded at {a}");
        }
    }
    let pl = w.payer_ledger;
    w.net.p(w.payer).close_ledger(pl).unwrap();
    for l in w.hub_ledgers.clone() {
        w.net.p(w.hub).close_ledger(l).unwrap();
    }
    w.net.run();
    vs
}

fn assert_happy_balances(w: &World, pays: &[u64], fee: u64) {
    let total: u64 = pays.iter().sum();
    let fees = fee * pays.len() as u64;
    assert_eq!(w.net.wallet(w.payer), -((total + fees) as i128));
    assert_eq!(
        w.net.wallet(w.hub),
        fees as i128,
        "the hub nets exactly the fees"
    );
    for (i, b) in w.payees.iter().enumerate() {
        assert_eq!(w.net.wallet(*b), pays[i] as i128);
    }
    assert!(w.net.chain.holdings.values().all(|h| h.is_zero()));
}

#[test]
fn happy_path_one_payer_hub_three_payees() {
    let mut w = world(3, None);
    let pays = [30, 0, 100];
    let vs = happy(&mut w, &pays, 2);
    assert_eq!(vs.len(), 3);
    assert_happy_balances(&w, &pays, 2);
}

#[test]
fn crash_after_any_step_then_restore_and_resend_finishes_the_same() {
    // One crash per run, at every delivery of the whole scenario (mid-funding, mid-payment,
    // mid-defunding, mid-close).
    let mut n = 0;
    loop {
        let mut w = world(1, Some(n));
        let pays = [42];
        happy(&mut w, &pays, 3);
        assert_happy_balances(&w, &pays, 3);
        if w.net.delivered <= n {
            break;
        }
        n += 1;
    }
    assert!(n > 20, "the scenario has steps to crash at");
}

// ----- hostile peers ---------------------------------------------------------------------------

/// A world with one payee where V is proposed and the prefund signed by all, but the ledger
/// updates are withheld (`hold` returns true for envelopes that are not delivered).
fn withheld(hold: impl Fn(&Envelope) -> bool) -> (World, B256, Vec<Envelope>) {
    let mut w = world(1, None);
    let p = params(&w, 0, 100, 2);
    let v = w.net.p(w.payer).propose_virtual(&p).unwrap();
    let mut held = Vec::new();
    w.net.flush();
    while let Some(e) = w.net.inflight.pop_front() {
        if hold(&e) {
            held.push(e);
        } else {
            w.net.deliver(e);
        }
    }
    (w, v, held)
}

fn is_ledger_proposals(e: &Envelope) -> bool {
    matches!(
        &e.payload,
        Payload::Ledger(LedgerMessage {
            body: LedgerBody::Proposals { .. },
            ..
        })
    )
}

/// Delivers `e` to its recipient and checks that it is refused without any state change or output.
fn refused(w: &mut World, e: &Envelope) -> VirtualError {
    w.net.flush();
    let party = w.net.p(e.to);
    let before = party.snapshot();
    let err = party.handle_envelope(e).unwrap_err();
    assert_eq!(party.snapshot(), before, "state changed on {err}");
    assert!(party.poll_persist().is_none() && party.poll_envelope().is_none());
    err
}

/// A Proposals message for `ledger` signed by `leader` with `proposal` applied to the follower's
/// countersigned state at `turn`, its state edited by `edit`.
fn proposals(
    w: &mut World,
    leader: Address,
    follower: Address,
    ledger: B256,
    proposal: Proposal,
    turn: u64,
    edit: impl FnOnce(&mut VariablePart),
) -> Envelope {
    let l = w.net.p(follower).ledger(&ledger).unwrap().clone();
    let base = l.countersigned().unwrap().clone();
    let mut vars = base
        .apply(&proposal, &l.participants())
        .unwrap_or_else(|_| base.clone());
    vars.turn_num = turn;
    let mut state = vars.variable_part(Address::ZERO, &l.participants(), false);
    edit(&mut state);
    let signature = w.net.keys[&leader]
        .sign_eth_message(&state.hash(ledger))
        .unwrap();
    Envelope {
        from: leader,
        to: follower,
        payload: Payload::Ledger(LedgerMessage {
            ledger_id: ledger,
            body: LedgerBody::Proposals {
                updates: vec![SignedUpdate {
                    proposal,
                    state,
                    signature,
                }],
            },
        }),
    }
}

fn expected_add(w: &mut World, v: B256, on_payer_side: bool) -> Proposal {
    let c = w.net.p(w.hub).channel(&v).unwrap().clone();
    c.add_proposal(if on_payer_side {
        payment_channel::virtual_channel::Side::PayerSide
    } else {
        payment_channel::virtual_channel::Side::PayeeSide
    })
}

#[test]
fn hostile_payer_app_zero_is_refused_by_hub_and_payee() {
    let mut w = world(1, None);
    let mut p = params(&w, 0, 100, 2);
    p.app_definition = PAYMENT_APP;
    let key = w.net.keys[&w.payer].clone();
    // Build the proposal by hand: the library refuses to create it.
    let fixed = payment_channel::state::FixedPart {
        participants: vec![w.payer, w.hub, w.payees[0]],
        channel_nonce: 9,
        app_definition: Address::ZERO,
        challenge_duration: DURATION,
    };
    let id = fixed.channel_id();
    let prefund = VariablePart {
        outcome: payment_channel::state::two_party_outcome(
            Address::ZERO,
            w.payer,
            u(100),
            w.payees[0],
            U256::ZERO,
        ),
        app_data: Default::default(),
        turn_num: 0,
        is_final: false,
    };
    let signature = key.sign_eth_message(&prefund.hash(id)).unwrap();
    for to in [w.hub, w.payees[0]] {
        let e = Envelope {
            from: w.payer,
            to,
            payload: Payload::Virtual(VirtualMessage {
                channel_id: id,
                body: VirtualBody::Propose {
                    fixed: fixed.clone(),
                    asset: Address::ZERO,
                    amount: u(100),
                    fee: u(2),
                    signature,
                },
            }),
        };
        assert_eq!(
            refused(&mut w, &e),
            VirtualError::Peer(VirtualPeerError::InvalidProposal(
                "app 0x0 cannot be challenged"
            ))
        );
    }
    // And the library refuses to propose one.
    p.app_definition = Address::ZERO;
    assert!(w.net.p(w.payer).propose_virtual(&p).is_err());
}

#[test]
fn hostile_payer_type_one_guarantee_is_refused() {
    let (mut w, v, _) = withheld(is_ledger_proposals);
    let add = expected_add(&mut w, v, true);
    let (payer, hub, l) = (w.payer, w.hub, w.payer_ledger);
    let e = proposals(&mut w, payer, hub, l, add, 2, |s| {
        s.outcome[0].allocations[2].allocation_type = 1
    });
    assert!(matches!(
        refused(&mut w, &e),
        VirtualError::Ledger(payment_channel::ledger::LedgerError::Peer(
            LedgerPeerError::NotAGuarantee { .. }
        ))
    ));
}

#[test]
fn hostile_payer_swapped_left_right_is_not_countersigned() {
    let (mut w, v, _) = withheld(is_ledger_proposals);
    let Proposal::Add {
        target,
        amount,
        left,
        right,
        fee,
        ..
    } = expected_add(&mut w, v, true)
    else {
        unreachable!()
    };
    // left = hub, right = payer: on reclaim the payer would receive what the payee redeems.
    let swapped = Proposal::Add {
        target,
        amount,
        left: right,
        right: left,
        left_deposit: U256::ZERO,
        fee: U256::ZERO,
    };
    let _ = fee;
    let (payer, hub, l) = (w.payer, w.hub, w.payer_ledger);
    let e = proposals(&mut w, payer, hub, l, swapped, 2, |_| {});
    let err = refused(&mut w, &e);
    assert!(
        matches!(
            err,
            VirtualError::Ledger(payment_channel::ledger::LedgerError::Peer(
                LedgerPeerError::ProposalMismatch { .. }
            ))
        ),
        "{err:?}"
    );
    // A fee other than the one proposed in V is refused the same way.
    let Proposal::Add { left_deposit, .. } = expected_add(&mut w, v, true) else {
        unreachable!()
    };
    let cheap = Proposal::Add {
        target,
        amount,
        left,
        right,
        left_deposit,
        fee: U256::ZERO,
    };
    let e = proposals(&mut w, payer, hub, l, cheap, 2, |_| {});
    assert!(matches!(
        refused(&mut w, &e),
        VirtualError::Ledger(payment_channel::ledger::LedgerError::Peer(
            LedgerPeerError::ProposalMismatch { .. }
        ))
    ));
}

#[test]
fn hostile_payer_skipped_turn_and_replayed_proposal_are_refused() {
    let (mut w, v, held) = withheld(is_ledger_proposals);
    let add = expected_add(&mut w, v, true);
    let (payer, hub, l) = (w.payer, w.hub, w.payer_ledger);
    let e = proposals(&mut w, payer, hub, l, add, 3, |_| {});
    assert!(matches!(
        refused(&mut w, &e),
        VirtualError::Ledger(payment_channel::ledger::LedgerError::Peer(
            LedgerPeerError::SkippedTurn {
                expected: 2,
                got: 3
            }
        ))
    ));
    // Deliver the honest traffic; then replay the payer's first proposals message.
    let replay = held.iter().find(|e| e.to == hub).unwrap().clone();
    for e in held {
        w.net.deliver(e);
    }
    w.net.run();
    assert!(w.net.p(hub).channel(&v).unwrap().is_running());
    let err = refused(&mut w, &replay);
    assert!(matches!(
        err,
        VirtualError::Ledger(payment_channel::ledger::LedgerError::Peer(
            LedgerPeerError::StaleTurn { .. }
        ))
    ));
    assert_eq!(err.reaction(), Reaction::Ignore);
}

/// A world with one payee, V running and paid `paid`, the final state signed by all, and the
/// ledger Removes withheld.
fn closed_removes_withheld(paid: u64) -> (World, B256) {
    let mut w = world(1, None);
    let p = params(&w, 0, 100, 2);
    let v = w.net.p(w.payer).propose_virtual(&p).unwrap();
    w.net.run();
    w.net.p(w.payer).pay(v, u(paid)).unwrap();
    w.net.run();
    w.net.p(w.payer).close_virtual(v).unwrap();
    w.net.flush();
    while let Some(e) = w.net.inflight.pop_front() {
        if !is_ledger_proposals(&e) {
            w.net.deliver(e);
        }
    }
    for a in [w.payer, w.hub, w.payees[0]] {
        assert_eq!(
            w.net.p(a).channel(&v).unwrap().final_amount(),
            Some(u(paid))
        );
    }
    (w, v)
}

#[test]
fn hostile_payer_remove_crediting_itself_more_is_refused() {
    let (mut w, v) = closed_removes_withheld(30);
    let (payer, hub, l) = (w.payer, w.hub, w.payer_ledger);
    let turn = w
        .net
        .p(hub)
        .ledger(&l)
        .unwrap()
        .countersigned()
        .unwrap()
        .turn_num
        + 1;
    let greedy = Proposal::Remove {
        target: v,
        left_amount: u(71),
    };
    let e = proposals(&mut w, payer, hub, l, greedy, turn, |_| {});
    assert!(matches!(
        refused(&mut w, &e),
        VirtualError::Ledger(payment_channel::ledger::LedgerError::Peer(
            LedgerPeerError::ProposalMismatch { .. }
        ))
    ));
}

#[test]
fn hostile_hub_remove_shorting_the_payee_is_refused() {
    let (mut w, v) = closed_removes_withheld(30);
    let (hub, b, l) = (w.hub, w.payees[0], w.hub_ledgers[0]);
    let turn = w
        .net
        .p(b)
        .ledger(&l)
        .unwrap()
        .countersigned()
        .unwrap()
        .turn_num
        + 1;
    let short = Proposal::Remove {
        target: v,
        left_amount: u(71),
    };
    let e = proposals(&mut w, hub, b, l, short, turn, |_| {});
    assert!(matches!(
        refused(&mut w, &e),
        VirtualError::Ledger(payment_channel::ledger::LedgerError::Peer(
            LedgerPeerError::ProposalMismatch { .. }
        ))
    ));
}

#[test]
fn hostile_hub_over_guarantee_is_refused() {
    // Deliver the payer-side traffic, withhold the hub's proposal to the payee.
    let mut w = world(1, None);
    let p = params(&w, 0, 100, 2);
    let v = w.net.p(w.payer).propose_virtual(&p).unwrap();
    let b = w.payees[0];
    w.net.flush();
    while let Some(e) = w.net.inflight.pop_front() {
        if !(is_ledger_proposals(&e) && e.to == b) {
            w.net.deliver(e);
        }
    }
    assert!(
        w.net
            .p(w.hub)
            .channel(&v)
            .unwrap()
            .is_guaranteed(payment_channel::virtual_channel::Side::PayerSide)
    );
    let Proposal::Add {
        target,
        left,
        right,
        ..
    } = expected_add(&mut w, v, false)
    else {
        unreachable!()
    };
    let over = Proposal::Add {
        target,
        amount: u(101),
        left,
        right,
        left_deposit: u(101),
        fee: U256::ZERO,
    };
    let (hub, l) = (w.hub, w.hub_ledgers[0]);
    let e = proposals(&mut w, hub, b, l, over, 2, |_| {});
    assert!(matches!(
        refused(&mut w, &e),
        VirtualError::Ledger(payment_channel::ledger::LedgerError::Peer(
            LedgerPeerError::ProposalMismatch { .. }
        ))
    ));
}

#[test]
fn payee_refuses_vouchers_before_postfund_and_guarantee() {
    // The hub never locks its money for the payee (its proposal is withheld) but signs the
    // postfund anyway and tells the payee to go ahead.
    let mut w = world(1, None);
    let p = params(&w, 0, 100, 2);
    let v = w.net.p(w.payer).propose_virtual(&p).unwrap();
    let b = w.payees[0];
    w.net.flush();
    while let Some(e) = w.net.inflight.pop_front() {
        if !(is_ledger_proposals(&e) && e.to == b) {
            w.net.deliver(e);
        }
    }
    let fixed = w.net.p(b).channel(&v).unwrap().fixed_part().clone();
    let postfund = VariablePart {
        outcome: payment_channel::state::two_party_outcome(
            Address::ZERO,
            w.payer,
            u(100),
            b,
            U256::ZERO,
        ),
        app_data: Default::default(),
        turn_num: 1,
        is_final: false,
    };
    let id = fixed.channel_id();
    for who in [w.hub, w.payer] {
        let signature = w.net.keys[&who]
            .sign_eth_message(&postfund.hash(id))
            .unwrap();
        let e = Envelope {
            from: who,
            to: b,
            payload: Payload::Virtual(VirtualMessage {
                channel_id: id,
                body: VirtualBody::Postfund { signature },
            }),
        };
        w.net.p(b).handle_envelope(&e).unwrap();
    }
    assert!(!w.net.p(b).channel(&v).unwrap().is_running());
    let voucher = Voucher::sign(id, u(10), &*w.net.keys[&w.payer]).unwrap();
    let e = Envelope {
        from: w.payer,
        to: b,
        payload: Payload::Virtual(VirtualMessage {
            channel_id: id,
            body: VirtualBody::Voucher(voucher),
        }),
    };
    assert_eq!(
        refused(&mut w, &e),
        VirtualError::Peer(VirtualPeerError::NotFunded)
    );
}

#[test]
fn payer_refuses_a_countersignature_on_a_state_with_an_unshown_fee() {
    let (mut w, v, held) = withheld(is_ledger_proposals);
    let (payer, hub, l) = (w.payer, w.hub, w.payer_ledger);
    // The payer's proposal is queued at the payer; the hub "countersigns" a state where it also
    // takes 5 more than the fee shown.
    assert!(held.iter().any(|e| e.to == hub));
    let ledger = w.net.p(payer).ledger(&l).unwrap().clone();
    let mut vars: LedgerVars = ledger.latest_proposed().unwrap().clone();
    vars.balances[0] -= u(5);
    vars.balances[1] += u(5);
    let state = vars.variable_part(Address::ZERO, &ledger.participants(), false);
    let signature = w.net.keys[&hub].sign_eth_message(&state.hash(l)).unwrap();
    let e = Envelope {
        from: hub,
        to: payer,
        payload: Payload::Ledger(LedgerMessage {
            ledger_id: l,
            body: LedgerBody::Countersign {
                turn_num: vars.turn_num,
                signature,
            },
        }),
    };
    assert!(matches!(
        refused(&mut w, &e),
        VirtualError::Ledger(payment_channel::ledger::LedgerError::Peer(
            LedgerPeerError::BadSignature(_)
        ))
    ));
    assert!(!w.net.p(payer).channel(&v).unwrap().is_running());
}

fn final_from(
    w: &mut World,
    v: B256,
    by: Address,
    to: Address,
    edit: impl FnOnce(&mut VariablePart),
) -> Envelope {
    let c = w.net.p(to).channel(&v).unwrap().clone();
    let p = &c.fixed_part().participants;
    let mut state = VariablePart {
        outcome: payment_channel::state::two_party_outcome(Address::ZERO, p[0], u(70), p[2], u(30)),
        app_data: Default::default(),
        turn_num: 2,
        is_final: true,
    };
    edit(&mut state);
    let signature = w.net.keys[&by].sign_eth_message(&state.hash(v)).unwrap();
    Envelope {
        from: by,
        to,
        payload: Payload::Virtual(VirtualMessage {
            channel_id: v,
            body: VirtualBody::Final { state, signature },
        }),
    }
}

#[test]
fn hostile_payee_final_states_are_refused() {
    let mut w = world(1, None);
    let p = params(&w, 0, 100, 2);
    let v = w.net.p(w.payer).propose_virtual(&p).unwrap();
    w.net.run();
    w.net.p(w.payer).pay(v, u(30)).unwrap();
    w.net.run();
    let (payer, hub, b) = (w.payer, w.hub, w.payees[0]);
    // x = 31 > 30 paid.
    let e = final_from(&mut w, v, b, payer, |s| {
        s.outcome[0].allocations[0].amount = u(69);
        s.outcome[0].allocations[1].amount = u(31);
    });
    assert_eq!(
        refused(&mut w, &e),
        VirtualError::Peer(VirtualPeerError::FinalAbovePaid {
            paid: u(30),
            got: u(31)
        })
    );
    // Redirected: the payer's change goes to the payee.
    for to in [payer, hub] {
        let e = final_from(&mut w, v, b, to, |s| {
            s.outcome[0].allocations[0].destination = address_to_destination(b);
        });
        assert!(matches!(
            refused(&mut w, &e),
            VirtualError::Peer(VirtualPeerError::InvalidFinal(_))
        ));
    }
    // Amounts that do not add up, to the hub.
    let e = final_from(&mut w, v, b, hub, |s| {
        s.outcome[0].allocations[1].amount = u(31)
    });
    assert!(matches!(
        refused(&mut w, &e),
        VirtualError::Peer(VirtualPeerError::InvalidFinal(_))
    ));
    // The payee refuses a payer's final below its best voucher.
    let e = final_from(&mut w, v, payer, b, |s| {
        s.outcome[0].allocations[0].amount = u(71);
        s.outcome[0].allocations[1].amount = u(29);
    });
    assert_eq!(
        refused(&mut w, &e),
        VirtualError::Peer(VirtualPeerError::FinalBelowPaid {
            best: u(30),
            got: u(29)
        })
    );
}

#[test]
fn hub_limits_refuse_before_locking() {
    let mut w = world(1, None);
    let (hub, b) = (w.hub, w.payees[0]);
    // Too large for the hub's cap per channel.
    let p = params(&w, 0, 501, 2);
    w.net.p(w.payer).propose_virtual(&p).unwrap();
    w.net.flush();
    let e = w.net.inflight.iter().find(|e| e.to == hub).unwrap().clone();
    w.net.inflight.clear();
    assert!(matches!(
        refused(&mut w, &e),
        VirtualError::Rejected(Rejection::AmountTooLarge { .. })
    ));
    // More than the hub's free balance (200) in its ledger with the payee.
    let mut p = params(&w, 0, 201, 2);
    p.channel_nonce = 77;
    w.net.p(w.payer).propose_virtual(&p).unwrap();
    w.net.flush();
    let e = w.net.inflight.iter().find(|e| e.to == hub).unwrap().clone();
    w.net.inflight.clear();
    assert!(matches!(
        refused(&mut w, &e),
        VirtualError::Rejected(Rejection::Capital { .. })
    ));
    // Fee too low.
    let mut p = params(&w, 0, 10, 0);
    p.channel_nonce = 78;
    w.net.p(w.payer).propose_virtual(&p).unwrap();
    w.net.flush();
    let e = w.net.inflight.iter().find(|e| e.to == hub).unwrap().clone();
    w.net.inflight.clear();
    assert!(matches!(
        refused(&mut w, &e),
        VirtualError::Rejected(Rejection::FeeTooLow { .. })
    ));
    // Two channels of 150 each: the second exceeds what is left (the first is pending).
    let mut p1 = params(&w, 0, 150, 2);
    p1.channel_nonce = 80;
    let mut p2 = params(&w, 0, 150, 2);
    p2.channel_nonce = 81;
    w.net.p(w.payer).propose_virtual(&p1).unwrap();
    w.net.p(w.payer).propose_virtual(&p2).unwrap();
    w.net.flush();
    let to_hub: Vec<Envelope> = w
        .net
        .inflight
        .iter()
        .filter(|e| e.to == hub)
        .cloned()
        .collect();
    w.net.inflight.clear();
    w.net.p(hub).handle_envelope(&to_hub[0]).unwrap();
    assert!(matches!(
        refused(&mut w, &to_hub[1]),
        VirtualError::Rejected(Rejection::Capital { .. })
    ));
    let _ = b;
}

// ----- sad paths on chain ----------------------------------------------------------------------

/// Registers `d` (a challenge) on the in-test chain: `ChallengeRegistered` to everyone in it.
fn register(w: &mut World, d: &ChainAction) -> (B256, u64) {
    let ChainAction::Challenge {
        fixed,
        proof,
        candidate,
        ..
    } = d
    else {
        panic!("{d:?}")
    };
    let id = fixed.channel_id();
    let finalizes_at = w.net.now + fixed.challenge_duration;
    w.net.emit(
        id,
        ChainEvent::ChallengeRegistered {
            channel_id: id,
            finalizes_at,
            proof: proof.clone(),
            candidate: candidate.clone(),
        },
    );
    (id, finalizes_at)
}

fn duties(w: &mut World, a: Address) -> Vec<ChainAction> {
    let now = w.net.now;
    w.net.p(a).chain_duties(now).unwrap()
}

#[test]
fn payee_with_a_silent_payer_redeems_through_the_chain() {
    let mut w = world(1, None);
    let p = params(&w, 0, 100, 2);
    let v = w.net.p(w.payer).propose_virtual(&p).unwrap();
    w.net.run();
    w.net.p(w.payer).pay(v, u(40)).unwrap();
    w.net.run();
    let (hub, b, l) = (w.hub, w.payees[0], w.hub_ledgers[0]);
    w.net.p(b).challenge_virtual(v).unwrap();
    w.net.flush();
    // V first: the redemption with the best voucher, the postfund as proof.
    let d = duties(&mut w, b);
    let [vd] = d.as_slice() else { panic!("{d:?}") };
    let ChainAction::Challenge {
        proof, candidate, ..
    } = vd
    else {
        panic!()
    };
    assert_eq!(candidate.variable_part.turn_num, 2);
    assert_eq!(proof.len(), 1);
    assert_eq!(proof[0].sigs.len(), 3);
    assert_eq!(
        Voucher::from_app_data(v, &candidate.variable_part.app_data)
            .unwrap()
            .amount,
        u(40)
    );
    let (_, v_final) = register(&mut w, vd);
    // Then the ledger, with the latest countersigned state (holding V's guarantee), timed to
    // finalize no earlier than V.
    let now = w.net.now;
    w.net.p(b).handle_timeout(now);
    w.net.flush();
    let d = duties(&mut w, b);
    let ld = d
        .iter()
        .find(|d| matches!(d, ChainAction::Challenge { fixed, .. } if fixed.channel_id() == l))
        .unwrap()
        .clone();
    let (_, l_final) = register(&mut w, &ld);
    assert!(l_final >= v_final);
    // Time passes; both finalize; the payee reclaims then transfers.
    w.net.now = l_final;
    for a in [hub, b] {
        let now = w.net.now;
        w.net.p(a).handle_timeout(now);
    }
    w.net.flush();
    let d = duties(&mut w, b);
    let Some(ChainAction::Reclaim(args)) = d
        .iter()
        .find(|d| matches!(d, ChainAction::Reclaim(_)))
        .cloned()
    else {
        panic!("{d:?}")
    };
    assert_eq!(args.source_channel_id, l);
    let (after, idx) = reclaim_effect(&args.source_outcome, v, &args.target_outcome).unwrap();
    assert_eq!(args.index_of_target_in_source, idx as u64);
    // Hub 200 − 100 locked + 60 back; payee 40.
    assert_eq!(after[0].allocations[0].amount, u(160));
    assert_eq!(after[0].allocations[1].amount, u(40));
    for a in [hub, b] {
        w.net.p(a).handle_reclaimed(l, v).unwrap();
    }
    w.net.flush();
    let d = duties(&mut w, b);
    let Some(ChainAction::TransferAllAssets { outcome, .. }) = d
        .iter()
        .find(|d| matches!(d, ChainAction::TransferAllAssets { .. }))
        .cloned()
    else {
        panic!("{d:?}")
    };
    w.net.pay_out(l, &outcome);
    assert_eq!(w.net.wallet(b), 40);
}

#[test]
fn hub_with_a_silent_payee_nets_zero_on_chain() {
    let mut w = world(1, None);
    let p = params(&w, 0, 100, 2);
    let v = w.net.p(w.payer).propose_virtual(&p).unwrap();
    w.net.run();
    w.net.p(w.payer).pay(v, u(25)).unwrap();
    w.net.run();
    let (payer, hub, b) = (w.payer, w.hub, w.payees[0]);
    let (pl, hl) = (w.payer_ledger, w.hub_ledgers[0]);
    w.net.p(hub).challenge_virtual(v).unwrap();
    w.net.flush();
    let d = duties(&mut w, hub);
    let vd = d
        .iter()
        .find(|d| matches!(d, ChainAction::Challenge { fixed, .. } if fixed.channel_id() == v))
        .unwrap()
        .clone();
    let ChainAction::Challenge { candidate, .. } = &vd else {
        unreachable!()
    };
    assert_eq!(
        candidate.variable_part.turn_num, 1,
        "the hub exits with the postfund"
    );
    register(&mut w, &vd);
    // The payee counter-challenges with its redemption (a challenge in challenge mode raises the turn).
    let d = duties(&mut w, b);
    let counter = d
        .iter()
        .find(|d| matches!(d, ChainAction::Challenge { fixed, .. } if fixed.channel_id() == v))
        .unwrap()
        .clone();
    let (_, v_final) = register(&mut w, &counter);
    let now = w.net.now;
    w.net.p(hub).handle_timeout(now);
    w.net.flush();
    let d = duties(&mut w, hub);
    let mut ledger_finals = Vec::new();
    for lid in [pl, hl] {
        let ld = d
            .iter()
            .find(
                |d| matches!(d, ChainAction::Challenge { fixed, .. } if fixed.channel_id() == lid),
            )
            .unwrap()
            .clone();
        let (_, at) = register(&mut w, &ld);
        assert!(at >= v_final);
        ledger_finals.push(at);
    }
    w.net.now = *ledger_finals.iter().max().unwrap();
    for a in [payer, hub, b] {
        let now = w.net.now;
        w.net.p(a).handle_timeout(now);
    }
    w.net.flush();
    let d = duties(&mut w, hub);
    let reclaims: Vec<_> = d
        .iter()
        .filter_map(|d| match d {
            ChainAction::Reclaim(a) => Some(a.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(reclaims.len(), 2, "reclaim in both ledgers: {d:?}");
    for r in &reclaims {
        for a in [payer, hub, b] {
            if w.net.p(a).ledger(&r.source_channel_id).is_some() {
                w.net.p(a).handle_reclaimed(r.source_channel_id, v).unwrap();
            }
        }
    }
    w.net.flush();
    let d = duties(&mut w, hub);
    let transfers: Vec<(B256, Outcome)> = d
        .iter()
        .filter_map(|d| match d {
            ChainAction::TransferAllAssets {
                channel_id,
                outcome,
                ..
            } => Some((*channel_id, outcome.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(transfers.len(), 2);
    for (id, o) in transfers {
        w.net.pay_out(id, &o);
    }
    // Hub: deposited 200, gets 200 − 100 + 75 back in L(H,B) and 2 (fee) + 25 in L(P,H): +2.
    assert_eq!(w.net.wallet(hub), -200 + 175 + 27);
    assert_eq!(w.net.wallet(payer), -2000 + 2000 - 2 - 25);
    assert_eq!(w.net.wallet(b), 25);
}

// ----- random interleavings --------------------------------------------------------------------

/// Runs the happy scenario over a network that reorders and drops messages (the parties resend
/// until done) and checks that every honest party ends with exactly what it is owed.
fn lossy(seed: u64, drop_pct: u64) {
    let mut rng = seed;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut w = world(2, None);
    let pays = [17u64, 60];
    let fee = 1;
    let mut vs: Vec<B256> = Vec::new();
    let mut stage = 0;
    for _round in 0..200 {
        // Deliver in random order, dropping some.
        w.net.flush();
        while !w.net.inflight.is_empty() {
            let i = (next() % w.net.inflight.len() as u64) as usize;
            let e = w.net.inflight.remove(i).unwrap();
            if next() % 100 >= drop_pct {
                w.net.deliver(e);
            }
        }
        w.net.settle();
        let running = |w: &mut World, vs: &[B256]| {
            vs.iter().enumerate().all(|(i, v)| {
                [w.payer, w.hub, w.payees[i]]
                    .iter()
                    .all(|a| w.net.p(*a).channel(v).is_some_and(|c| c.is_running()))
            })
        };
        let ledgers_open = |w: &mut World| {
            let mut ids = vec![w.payer_ledger];
            ids.extend(w.hub_ledgers.iter().copied());
            ids.iter().all(|l| {
                w.net.participants_of(*l).len() == 2
                    && w.net.participants_of(*l).iter().all(|a| {
                        w.net.parties[a].ledger(l).unwrap().phase()
                            == payment_channel::ledger::LedgerPhase::Open
                    })
            })
        };
        match stage {
            0 if ledgers_open(&mut w) => {
                vs = (0..2)
                    .map(|i| {
                        let p = params(&w, i, 100, fee);
                        w.net.p(w.payer).propose_virtual(&p).unwrap()
                    })
                    .collect();
                stage = 1;
            }
            1 if running(&mut w, &vs) => {
                for (i, v) in vs.iter().enumerate() {
                    w.net.p(w.payer).pay(*v, u(pays[i] - 5)).unwrap();
                    w.net.p(w.payer).pay(*v, u(5)).unwrap();
                }
                stage = 2;
            }
            2 if vs
                .iter()
                .enumerate()
                .all(|(i, v)| w.net.p(w.payees[i]).channel(v).unwrap().paid() == u(pays[i])) =>
            {
                for v in &vs {
                    w.net.p(w.payer).close_virtual(*v).unwrap();
                }
                stage = 3;
            }
            3 if vs.iter().enumerate().all(|(i, v)| {
                [w.payer, w.hub, w.payees[i]]
                    .iter()
                    .all(|a| w.net.p(*a).channel(v).unwrap().is_defunded())
            }) =>
            {
                let pl = w.payer_ledger;
                w.net.p(w.payer).close_ledger(pl).unwrap();
                for l in w.hub_ledgers.clone() {
                    w.net.p(w.hub).close_ledger(l).unwrap();
                }
                stage = 4;
            }
            4 if w.net.chain.concluded.len() == 3 => {
                assert_happy_balances(&w, &pays, fee);
                return;
            }
            _ => {}
        }
        // Whatever was lost is sent again.
        let addrs: Vec<Address> = w.net.parties.keys().copied().collect();
        for a in addrs {
            w.net.p(a).resend();
        }
        // Money invariants at every round: nobody holds less than it is owed so far.
        assert!(w.net.wallet(w.hub) >= -400, "the hub never loses capital");
    }
    panic!("did not finish (stage {stage})");
}

#[test]
fn lossy_network_example() {
    lossy(0x9e37_79b9_7f4a_7c15, 30);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 8, ..ProptestConfig::default() })]
    #[test]
    fn random_interleavings_and_drops_keep_the_money_right(seed in 1u64.., drop_pct in 0u64..40) {
        lossy(seed, drop_pct);
    }
}

fn sent_postfund(from: Address, held: &[Envelope]) -> bool {
    held.iter().any(|e| {
        e.from == from
            && matches!(
                &e.payload,
                Payload::Virtual(VirtualMessage {
                    body: VirtualBody::Postfund { .. },
                    ..
                })
            )
    })
}

#[test]
fn hub_locks_only_after_the_payer_side_and_signs_postfund_only_after_both() {
    use payment_channel::virtual_channel::Side;
    // Hold every ledger proposal: nothing is countersigned anywhere.
    let (mut w, v, held) = withheld(is_ledger_proposals);
    let (payer, hub, b) = (w.payer, w.hub, w.payees[0]);
    let hl = w.hub_ledgers[0];
    assert!(
        held.iter().all(|e| e.from == payer),
        "the hub proposed before the payer's Add was countersigned"
    );
    assert!(
        w.net
            .p(hub)
            .ledger(&hl)
            .unwrap()
            .latest_proposed()
            .unwrap()
            .guarantees
            .is_empty()
    );
    // Deliver the payer's Add (the hub countersigns it); hold the hub's Add to the payee.
    let mut later = Vec::new();
    let mut seen = Vec::new();
    for e in held {
        w.net.deliver(e);
    }
    while let Some(e) = w.net.inflight.pop_front() {
        if is_ledger_proposals(&e) && e.to == b {
            later.push(e);
        } else {
            seen.push(e.clone());
            w.net.deliver(e);
        }
    }
    let h = w.net.p(hub).channel(&v).unwrap().clone();
    assert!(h.is_guaranteed(Side::PayerSide) && !h.is_guaranteed(Side::PayeeSide));
    assert_eq!(
        later.len(),
        1,
        "the hub locks its own money once the payer's side is countersigned"
    );
    assert!(!h.is_running());
    w.net.flush();
    while let Some(e) = w.net.inflight.pop_front() {
        seen.push(e.clone());
        w.net.deliver(e);
    }
    assert!(
        !sent_postfund(hub, &seen),
        "the hub signed the postfund before both Adds"
    );
    // The payee countersigns; now the hub signs and everyone runs.
    for e in later {
        w.net.deliver(e);
    }
    w.net.run();
    for a in [payer, hub, b] {
        assert!(w.net.p(a).channel(&v).unwrap().is_running());
    }
}

#[test]
fn payer_with_a_silent_hub_exits_on_chain() {
    let mut w = world(1, None);
    let p = params(&w, 0, 100, 2);
    let v = w.net.p(w.payer).propose_virtual(&p).unwrap();
    w.net.run();
    w.net.p(w.payer).pay(v, u(10)).unwrap();
    w.net.run();
    let (payer, hub, b) = (w.payer, w.hub, w.payees[0]);
    let pl = w.payer_ledger;
    w.net.p(payer).challenge_virtual(v).unwrap();
    // Paying stops once V is disputed.
    assert!(w.net.p(payer).pay(v, u(1)).is_err());
    w.net.flush();
    let d = duties(&mut w, payer);
    let [vd] = d.as_slice() else { panic!("{d:?}") };
    let (_, v_final) = register(&mut w, vd);
    // The payee redeems its voucher too (it pays the payee, not the payer's change).
    let d = duties(&mut w, b);
    let counter = d
        .iter()
        .find(|d| matches!(d, ChainAction::Challenge { fixed, .. } if fixed.channel_id() == v))
        .unwrap()
        .clone();
    let (_, v_final2) = register(&mut w, &counter);
    assert!(v_final2 >= v_final);
    let now = w.net.now;
    w.net.p(payer).handle_timeout(now);
    w.net.flush();
    let d = duties(&mut w, payer);
    let ld = d
        .iter()
        .find(|d| matches!(d, ChainAction::Challenge { fixed, .. } if fixed.channel_id() == pl))
        .unwrap()
        .clone();
    let (_, l_final) = register(&mut w, &ld);
    w.net.now = l_final.max(v_final2);
    for a in [payer, hub, b] {
        let now = w.net.now;
        w.net.p(a).handle_timeout(now);
    }
    w.net.flush();
    let d = duties(&mut w, payer);
    let Some(ChainAction::Reclaim(r)) = d
        .iter()
        .find(|d| matches!(d, ChainAction::Reclaim(_)))
        .cloned()
    else {
        panic!("{d:?}")
    };
    assert_eq!(r.source_channel_id, pl);
    for a in [payer, hub] {
        w.net.p(a).handle_reclaimed(pl, v).unwrap();
    }
    w.net.flush();
    let d = duties(&mut w, payer);
    let Some(ChainAction::TransferAllAssets { outcome, .. }) = d
        .iter()
        .find(|d| matches!(d, ChainAction::TransferAllAssets { .. }))
        .cloned()
    else {
        panic!("{d:?}")
    };
    w.net.pay_out(pl, &outcome);
    // The payer gets everything back but the fee and the 10 it paid (which went to the hub in
    // L(P,H); the hub owes the payee 10 in L(H,B)).
    assert_eq!(w.net.wallet(payer), -2000 + 2000 - 2 - 10);
}
