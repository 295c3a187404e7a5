//! Virtual channels through a hub, off chain: a payer, a hub and payees exchange messages through
//! an in-memory network; a tiny in-test chain applies deposits, concludes, challenges, reclaims and
//! payouts as the contracts would (§4.1 of the virtual-funding reference), so end balances are
//! checked in wei.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use payment_channel::chain::{ChainAction, ChainEvent, ReclaimArgs};
use payment_channel::error::Reaction;
use payment_channel::ledger::{
    LedgerBody, LedgerError, LedgerMessage, LedgerPeerError, LedgerVars, Proposal, SignedUpdate,
    reclaim_effect,
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
    /// The adjudicator's records of channels on chain (sad-path tests).
    onchain: BTreeMap<B256, OnChain>,
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
            onchain: BTreeMap::new(),
        }
    }

    fn add(&mut self, hub: Option<HubLimits>) -> Address {
        let key = Arc::new(LocalSigner::random());
        let a = key.address();
        let config = PartyConfig::new(CONSENSUS_APP, PAYMENT_APP).with_hub(hub);
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

/// A world with one payee where V is proposed and the prefund signed by all, but the envelopes
/// `hold` picks (given the world) are withheld and returned.
fn withheld(hold: impl Fn(&World, &Envelope) -> bool) -> (World, B256, Vec<Envelope>) {
    let mut w = world(1, None);
    let p = params(&w, 0, 100, 2);
    let v = w.net.p(w.payer).propose_virtual(&p).unwrap();
    let held = deliver_except(&mut w, hold);
    (w, v, held)
}

/// Delivers everything in flight (and what it causes) but the envelopes `hold` picks, which are
/// returned.
fn deliver_except(w: &mut World, hold: impl Fn(&World, &Envelope) -> bool) -> Vec<Envelope> {
    let mut held = Vec::new();
    w.net.flush();
    while let Some(e) = w.net.inflight.pop_front() {
        if hold(w, &e) {
            held.push(e);
        } else {
            w.net.deliver(e);
        }
    }
    held
}

/// `withheld` holding back every ledger proposal.
fn proposals_withheld() -> (World, B256, Vec<Envelope>) {
    withheld(|_, e| is_ledger_proposals(e))
}

/// `withheld` holding back only the hub's ledger proposal to the payee.
fn payee_side_withheld() -> (World, B256) {
    let (w, v, _) = withheld(|w, e| is_ledger_proposals(e) && e.to == w.payees[0]);
    (w, v)
}

/// A world with one payee and V running, paid `paid`.
fn paid_world(paid: u64) -> (World, B256) {
    let mut w = world(1, None);
    let p = params(&w, 0, 100, 2);
    let v = w.net.p(w.payer).propose_virtual(&p).unwrap();
    w.net.run();
    w.net.p(w.payer).pay(v, u(paid)).unwrap();
    w.net.run();
    (w, v)
}

/// The ledger error a peer's message caused (panics on any other error).
fn ledger_peer(err: VirtualError) -> LedgerPeerError {
    match err {
        VirtualError::Ledger(LedgerError::Peer(e)) => e,
        other => panic!("not a ledger peer error: {other:?}"),
    }
}

/// Checks that `e` is refused as a ledger proposal other than the one the recipient expects.
fn assert_mismatch(w: &mut World, e: &Envelope, label: &str) {
    let err = ledger_peer(refused(w, e));
    assert!(
        matches!(err, LedgerPeerError::ProposalMismatch { .. }),
        "{label}: {err:?}"
    );
}

/// The turn after `at`'s latest countersigned state of ledger `l`.
fn next_turn(w: &mut World, at: Address, l: B256) -> u64 {
    let ledger = w.net.p(at).ledger(&l).unwrap();
    ledger.countersigned().unwrap().turn_num + 1
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
    let (mut w, v, _) = proposals_withheld();
    let add = expected_add(&mut w, v, true);
    let (payer, hub, l) = (w.payer, w.hub, w.payer_ledger);
    let e = proposals(&mut w, payer, hub, l, add, 2, |s| {
        s.outcome[0].allocations[2].allocation_type = 1
    });
    assert!(matches!(
        ledger_peer(refused(&mut w, &e)),
        LedgerPeerError::NotAGuarantee { .. }
    ));
}

#[test]
fn hostile_payer_swapped_left_right_is_not_countersigned() {
    let (mut w, v, _) = proposals_withheld();
    // left = hub, right = payer: on reclaim the payer would receive what the payee redeems.
    let mut swapped = expected_add(&mut w, v, true);
    let Proposal::Add {
        left,
        right,
        left_deposit,
        fee,
        ..
    } = &mut swapped
    else {
        unreachable!()
    };
    std::mem::swap(left, right);
    (*left_deposit, *fee) = (U256::ZERO, U256::ZERO);
    let (payer, hub, l) = (w.payer, w.hub, w.payer_ledger);
    let e = proposals(&mut w, payer, hub, l, swapped, 2, |_| {});
    assert_mismatch(&mut w, &e, "left and right swapped");
    // A fee other than the one proposed in V is refused the same way.
    let mut cheap = expected_add(&mut w, v, true);
    let Proposal::Add { fee, .. } = &mut cheap else {
        unreachable!()
    };
    *fee = U256::ZERO;
    let e = proposals(&mut w, payer, hub, l, cheap, 2, |_| {});
    assert_mismatch(&mut w, &e, "no fee");
}

#[test]
fn hostile_payer_skipped_turn_and_replayed_proposal_are_refused() {
    let (mut w, v, held) = proposals_withheld();
    let add = expected_add(&mut w, v, true);
    let (payer, hub, l) = (w.payer, w.hub, w.payer_ledger);
    let e = proposals(&mut w, payer, hub, l, add, 3, |_| {});
    assert_eq!(
        ledger_peer(refused(&mut w, &e)),
        LedgerPeerError::SkippedTurn {
            expected: 2,
            got: 3
        }
    );
    // Deliver the honest traffic; then replay the payer's first proposals message.
    let replay = held.iter().find(|e| e.to == hub).unwrap().clone();
    for e in held {
        w.net.deliver(e);
    }
    w.net.run();
    assert!(w.net.p(hub).channel(&v).unwrap().is_running());
    let err = refused(&mut w, &replay);
    assert_eq!(err.reaction(), Reaction::Ignore);
    assert!(matches!(
        ledger_peer(err),
        LedgerPeerError::StaleTurn { .. }
    ));
}

/// A world with one payee, V running and paid `paid`, the final state signed by all, and the
/// ledger Removes withheld.
fn closed_removes_withheld(paid: u64) -> (World, B256) {
    let (mut w, v) = paid_world(paid);
    w.net.p(w.payer).close_virtual(v).unwrap();
    deliver_except(&mut w, |_, e| is_ledger_proposals(e));
    for a in [w.payer, w.hub, w.payees[0]] {
        assert_eq!(
            w.net.p(a).channel(&v).unwrap().final_amount(),
            Some(u(paid))
        );
    }
    (w, v)
}

#[test]
fn hostile_removes_paying_the_left_side_more_are_refused() {
    // After 30 of 100 paid, a Remove giving the left side 71 (not 70) is refused in both ledgers.
    for side in [
        "the payer crediting itself more",
        "the hub shorting the payee",
    ] {
        let (mut w, v) = closed_removes_withheld(30);
        let (from, to, l) = if side.starts_with("the payer") {
            (w.payer, w.hub, w.payer_ledger)
        } else {
            (w.hub, w.payees[0], w.hub_ledgers[0])
        };
        let turn = next_turn(&mut w, to, l);
        let greedy = Proposal::Remove {
            target: v,
            left_amount: u(71),
        };
        let e = proposals(&mut w, from, to, l, greedy, turn, |_| {});
        assert_mismatch(&mut w, &e, side);
    }
}

#[test]
fn hostile_hub_over_guarantee_is_refused() {
    // Deliver the payer-side traffic, withhold the hub's proposal to the payee.
    let (mut w, v) = payee_side_withheld();
    let b = w.payees[0];
    assert!(
        w.net
            .p(w.hub)
            .channel(&v)
            .unwrap()
            .is_guaranteed(payment_channel::virtual_channel::Side::PayerSide)
    );
    let mut over = expected_add(&mut w, v, false);
    let Proposal::Add {
        amount,
        left_deposit,
        fee,
        ..
    } = &mut over
    else {
        unreachable!()
    };
    (*amount, *left_deposit, *fee) = (u(101), u(101), U256::ZERO);
    let (hub, l) = (w.hub, w.hub_ledgers[0]);
    let e = proposals(&mut w, hub, b, l, over, 2, |_| {});
    assert_mismatch(&mut w, &e, "over-guarantee");
}

#[test]
fn payee_refuses_vouchers_before_postfund_and_guarantee() {
    // The hub never locks its money for the payee (its proposal is withheld) but signs the
    // postfund anyway and tells the payee to go ahead.
    let (mut w, v) = payee_side_withheld();
    let b = w.payees[0];
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
    let (mut w, v, held) = proposals_withheld();
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
        ledger_peer(refused(&mut w, &e)),
        LedgerPeerError::BadSignature(_)
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
    let (mut w, v) = paid_world(30);
    let (payer, hub, b) = (w.payer, w.hub, w.payees[0]);
    let redirect = move |s: &mut VariablePart| {
        // The payer's change goes to the payee.
        s.outcome[0].allocations[0].destination = address_to_destination(b);
    };
    let amounts = |payer_gets: u64, payee_gets: u64| {
        move |s: &mut VariablePart| {
            s.outcome[0].allocations[0].amount = u(payer_gets);
            s.outcome[0].allocations[1].amount = u(payee_gets);
        }
    };
    let above = VirtualPeerError::FinalAbovePaid {
        paid: u(30),
        got: u(31),
    };
    let below = VirtualPeerError::FinalBelowPaid {
        best: u(30),
        got: u(29),
    };
    let not_adding_up = |s: &mut VariablePart| s.outcome[0].allocations[1].amount = u(31);
    // (label, from, to, edit of the honest final state, the exact error or `None` for
    // `InvalidFinal`).
    type Case = (
        &'static str,
        Address,
        Address,
        Box<dyn Fn(&mut VariablePart)>,
        Option<VirtualPeerError>,
    );
    let cases: [Case; 5] = [
        (
            "x = 31 > 30 paid",
            b,
            payer,
            Box::new(amounts(69, 31)),
            Some(above),
        ),
        (
            "redirected, to the payer",
            b,
            payer,
            Box::new(redirect),
            None,
        ),
        ("redirected, to the hub", b, hub, Box::new(redirect), None),
        (
            "amounts that do not add up, to the hub",
            b,
            hub,
            Box::new(not_adding_up),
            None,
        ),
        (
            "the payee refuses a final below its best voucher",
            payer,
            b,
            Box::new(amounts(71, 29)),
            Some(below),
        ),
    ];
    for (label, by, to, edit, expected) in cases {
        let e = final_from(&mut w, v, by, to, edit);
        let err = refused(&mut w, &e);
        match expected {
            Some(peer) => assert_eq!(err, VirtualError::Peer(peer), "{label}"),
            None => assert!(
                matches!(err, VirtualError::Peer(VirtualPeerError::InvalidFinal(_))),
                "{label}: {err:?}"
            ),
        }
    }
}

/// Proposes V with `p` and returns the payer's proposal to the hub, undelivered (all else in
/// flight is dropped).
fn proposal_to_hub(w: &mut World, p: &VirtualParams) -> Envelope {
    w.net.p(w.payer).propose_virtual(p).unwrap();
    w.net.flush();
    let hub = w.hub;
    let e = w.net.inflight.iter().find(|e| e.to == hub).unwrap().clone();
    w.net.inflight.clear();
    e
}

#[test]
fn hub_limits_refuse_before_locking() {
    let mut w = world(1, None);
    let (hub, b) = (w.hub, w.payees[0]);
    type Case = (&'static str, u64, u64, u64, fn(&Rejection) -> bool);
    let cases: [Case; 3] = [
        (
            "too large for the hub's cap per channel",
            501,
            2,
            100,
            |r| matches!(r, Rejection::AmountTooLarge { .. }),
        ),
        (
            "more than the hub's free balance (200) in its ledger with the payee",
            201,
            2,
            77,
            |r| matches!(r, Rejection::Capital { .. }),
        ),
        ("fee too low", 10, 0, 78, |r| {
            matches!(r, Rejection::FeeTooLow { .. })
        }),
    ];
    for (label, amount, fee, nonce, expected) in cases {
        let mut p = params(&w, 0, amount, fee);
        p.channel_nonce = nonce;
        let e = proposal_to_hub(&mut w, &p);
        let err = refused(&mut w, &e);
        assert!(
            matches!(&err, VirtualError::Rejected(r) if expected(r)),
            "{label}: {err:?}"
        );
    }
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
    w.net.onchain.insert(
        id,
        OnChain {
            turn: candidate.variable_part.turn_num,
            finalizes_at,
            outcome: candidate.variable_part.outcome.clone(),
        },
    );
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

/// The challenge of channel `id` among `duties`.
fn challenge_of(duties: &[ChainAction], id: B256) -> ChainAction {
    duties
        .iter()
        .find(|d| matches!(d, ChainAction::Challenge { fixed, .. } if fixed.channel_id() == id))
        .unwrap_or_else(|| panic!("no challenge of {id} in {duties:?}"))
        .clone()
}

/// The reclaims among `duties`.
fn reclaims(duties: &[ChainAction]) -> Vec<ReclaimArgs> {
    duties
        .iter()
        .filter_map(|d| match d {
            ChainAction::Reclaim(a) => Some(a.clone()),
            _ => None,
        })
        .collect()
}

/// The payouts among `duties`: channel and outcome.
fn transfers(duties: &[ChainAction]) -> Vec<(B256, Outcome)> {
    duties
        .iter()
        .filter_map(|d| match d {
            ChainAction::TransferAllAssets {
                channel_id,
                outcome,
                ..
            } => Some((*channel_id, outcome.clone())),
            _ => None,
        })
        .collect()
}

/// The first reclaim among `a`'s duties.
fn first_reclaim(w: &mut World, a: Address) -> ReclaimArgs {
    let d = duties(w, a);
    reclaims(&d)
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no reclaim in {d:?}"))
}

/// Tells `parties` that V's guarantee in `ledger` was reclaimed, then pays `ledger` out with the
/// outcome of `by`'s first transfer duty.
fn reclaimed_then_paid_out(w: &mut World, parties: &[Address], ledger: B256, v: B256, by: Address) {
    for a in parties {
        w.net.p(*a).handle_reclaimed(ledger, v).unwrap();
    }
    w.net.flush();
    let d = duties(w, by);
    let (_, outcome) = transfers(&d)
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no transfer in {d:?}"));
    w.net.pay_out(ledger, &outcome);
}

/// Moves everyone in `parties` to the network's clock and flushes what that causes.
fn timeout_all(w: &mut World, parties: &[Address]) {
    let now = w.net.now;
    for a in parties {
        w.net.p(*a).handle_timeout(now);
    }
    w.net.flush();
}

#[test]
fn payee_with_a_silent_payer_redeems_through_the_chain() {
    let (mut w, v) = paid_world(40);
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
    timeout_all(&mut w, &[b]);
    let d = duties(&mut w, b);
    let ld = challenge_of(&d, l);
    let (_, l_final) = register(&mut w, &ld);
    assert!(l_final >= v_final);
    // Time passes; both finalize; the payee reclaims then transfers.
    w.net.now = l_final;
    timeout_all(&mut w, &[hub, b]);
    let args = first_reclaim(&mut w, b);
    assert_eq!(args.source_channel_id, l);
    let (after, idx) = reclaim_effect(&args.source_outcome, v, &args.target_outcome).unwrap();
    assert_eq!(args.index_of_target_in_source, idx as u64);
    // Hub 200 − 100 locked + 60 back; payee 40.
    assert_eq!(after[0].allocations[0].amount, u(160));
    assert_eq!(after[0].allocations[1].amount, u(40));
    reclaimed_then_paid_out(&mut w, &[hub, b], l, v, b);
    assert_eq!(w.net.wallet(b), 40);
}

#[test]
fn hub_with_a_silent_payee_nets_zero_on_chain() {
    let (mut w, v) = paid_world(25);
    let (payer, hub, b) = (w.payer, w.hub, w.payees[0]);
    let (pl, hl) = (w.payer_ledger, w.hub_ledgers[0]);
    w.net.p(hub).challenge_virtual(v).unwrap();
    w.net.flush();
    let d = duties(&mut w, hub);
    let vd = challenge_of(&d, v);
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
    let counter = challenge_of(&d, v);
    let (_, v_final) = register(&mut w, &counter);
    timeout_all(&mut w, &[hub]);
    let d = duties(&mut w, hub);
    let mut ledger_finals = Vec::new();
    for lid in [pl, hl] {
        let ld = challenge_of(&d, lid);
        let (_, at) = register(&mut w, &ld);
        assert!(at >= v_final);
        ledger_finals.push(at);
    }
    w.net.now = *ledger_finals.iter().max().unwrap();
    timeout_all(&mut w, &[payer, hub, b]);
    let d = duties(&mut w, hub);
    let reclaims = reclaims(&d);
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
    let transfers = transfers(&d);
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
    let (mut w, v, held) = proposals_withheld();
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
    let (mut w, v) = paid_world(10);
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
    let counter = challenge_of(&d, v);
    let (_, v_final2) = register(&mut w, &counter);
    assert!(v_final2 >= v_final);
    timeout_all(&mut w, &[payer]);
    let d = duties(&mut w, payer);
    let ld = challenge_of(&d, pl);
    let (_, l_final) = register(&mut w, &ld);
    w.net.now = l_final.max(v_final2);
    timeout_all(&mut w, &[payer, hub, b]);
    let r = first_reclaim(&mut w, payer);
    assert_eq!(r.source_channel_id, pl);
    reclaimed_then_paid_out(&mut w, &[payer, hub], pl, v, payer);
    // The payer gets everything back but the fee and the 10 it paid (which went to the hub in
    // L(P,H); the hub owes the payee 10 in L(H,B)).
    assert_eq!(w.net.wallet(payer), -2000 + 2000 - 2 - 10);
}

// ----- silent parties after (or before) the final state, to the last wei -----------------------

/// The adjudicator's view of one channel, as far as the silent-party tests need it.
#[derive(Default, Clone)]
struct OnChain {
    /// Turn of the registered challenge (or of the concluded state).
    turn: u64,
    finalizes_at: u64,
    /// The outcome a payout or reclaim must present (rewritten by each reclaim).
    outcome: Outcome,
}

/// Runs the `honest` parties to the end: messages among them are delivered (anything to or from
/// another party is lost: it is silent), their chain duties are applied as the contracts would
/// (challenges with turn checks, checkpoints, concludes, reclaims with fingerprint checks,
/// payouts), and time jumps to their next timeout whenever nothing else moves.
fn run_to_the_end(w: &mut World, honest: &[Address]) {
    for _ in 0..200 {
        w.net.flush();
        let mut moved = false;
        while let Some(e) = w.net.inflight.pop_front() {
            if honest.contains(&e.from) && honest.contains(&e.to) {
                w.net.deliver(e);
                moved = true;
            }
        }
        for a in honest {
            for d in duties(w, *a) {
                moved |= apply_on_chain(w, *a, d);
            }
        }
        if moved {
            continue;
        }
        let next = honest
            .iter()
            .filter_map(|a| w.net.parties[a].poll_timeout())
            .filter(|t| *t > w.net.now)
            .min();
        match next {
            Some(t) => {
                w.net.now = t;
                let all: Vec<Address> = w.net.parties.keys().copied().collect();
                timeout_all(w, &all);
            }
            None => return,
        }
    }
    panic!("the exit does not settle");
}

fn apply_on_chain(w: &mut World, by: Address, d: ChainAction) -> bool {
    let now = w.net.now;
    let is_final =
        |c: Option<&OnChain>| c.is_some_and(|c| c.finalizes_at != 0 && c.finalizes_at <= now);
    match d {
        ChainAction::Challenge {
            ref fixed,
            ref candidate,
            ..
        } => {
            let id = fixed.channel_id();
            let c = w.net.onchain.get(&id);
            if is_final(c) || c.is_some_and(|c| c.turn >= candidate.variable_part.turn_num) {
                return false;
            }
            register(w, &d);
            true
        }
        ChainAction::Checkpoint {
            fixed, candidate, ..
        } => {
            let id = fixed.channel_id();
            let c = w.net.onchain.get(&id);
            if is_final(c) || c.is_none_or(|c| c.turn >= candidate.variable_part.turn_num) {
                return false;
            }
            w.net.onchain.insert(id, OnChain::default());
            w.net.emit(
                id,
                ChainEvent::ChallengeCleared {
                    channel_id: id,
                    new_turn_num_record: candidate.variable_part.turn_num,
                },
            );
            true
        }
        ChainAction::Conclude { fixed, candidate } => {
            let id = fixed.channel_id();
            if is_final(w.net.onchain.get(&id)) {
                return false;
            }
            assert!(candidate.variable_part.is_final && candidate.sigs.len() == 3);
            w.net.onchain.insert(
                id,
                OnChain {
                    turn: candidate.variable_part.turn_num,
                    finalizes_at: now,
                    outcome: candidate.variable_part.outcome,
                },
            );
            w.net.emit(
                id,
                ChainEvent::Concluded {
                    channel_id: id,
                    finalizes_at: now,
                },
            );
            true
        }
        ChainAction::Reclaim(args) => {
            let l = args.source_channel_id;
            let Some(g) = args.source_outcome[0]
                .allocations
                .get(args.index_of_target_in_source as usize)
            else {
                return false;
            };
            let v = g.destination;
            let (Some(lc), Some(vc)) = (w.net.onchain.get(&l), w.net.onchain.get(&v)) else {
                return false;
            };
            if !is_final(Some(lc))
                || !is_final(Some(vc))
                || lc.outcome != args.source_outcome
                || vc.outcome != args.target_outcome
            {
                return false;
            }
            let (after, idx) = reclaim_effect(&lc.outcome, v, &vc.outcome).unwrap();
            assert_eq!(idx as u64, args.index_of_target_in_source);
            w.net.onchain.get_mut(&l).unwrap().outcome = after;
            for a in w.net.participants_of(l) {
                w.net.p(a).handle_reclaimed(l, v).unwrap();
            }
            w.net.flush();
            true
        }
        ChainAction::TransferAllAssets {
            channel_id,
            outcome,
            ..
        } => {
            let c = w.net.onchain.get(&channel_id);
            let held = w
                .net
                .chain
                .holdings
                .get(&channel_id)
                .copied()
                .unwrap_or_default();
            if !is_final(c) || c.is_some_and(|c| c.outcome != outcome) || held.is_zero() {
                return false;
            }
            w.net.pay_out(channel_id, &outcome);
            true
        }
        other => w.net.apply(by, other),
    }
}

fn is_final_msg(e: &Envelope) -> bool {
    matches!(
        &e.payload,
        Payload::Virtual(VirtualMessage {
            body: VirtualBody::Final { .. },
            ..
        })
    )
}

/// `paid_world(40)`, then the payer signs the final state; `lost` picks the envelopes lost
/// from then on (the rest is delivered).
fn final_signed_then(lost: impl Fn(&World, &Envelope) -> bool) -> (World, B256) {
    let (mut w, v) = paid_world(40);
    w.net.p(w.payer).close_virtual(v).unwrap();
    deliver_except(&mut w, lost);
    (w, v)
}

/// Runs the `honest` parties to the end ([`run_to_the_end`]), then checks everyone's balances
/// after V (a0 = 100, fee 2) paid 40: payer −42, hub +2, payee +40, nothing held.
fn end_paid_40(w: &mut World, honest: &[Address]) {
    run_to_the_end(w, honest);
    for (who, owed) in [(w.payer, -42), (w.hub, 2), (w.payees[0], 40)] {
        assert_eq!(w.net.wallet(who), owed, "a party's payout");
    }
    assert!(
        w.net.chain.holdings.values().all(|h| h.is_zero()),
        "money left on chain"
    );
}

#[test]
fn payer_silent_after_final_payee_paid_off_chain_hub_recovers_on_chain() {
    // The payer's final reaches the hub and the payee, then the payer is gone.
    let (mut w, v) =
        final_signed_then(|w, e| e.to == w.payer || (e.from == w.payer && !is_final_msg(e)));
    let (hub, b, pl, hl) = (w.hub, w.payees[0], w.payer_ledger, w.hub_ledgers[0]);
    // Cooperative: the hub and the payee remove V from L(H,B) with the final amounts.
    assert!(
        w.net.p(b).channel(&v).unwrap().is_defunded(),
        "payee not defunded"
    );
    let l = w
        .net
        .p(b)
        .ledger(&hl)
        .unwrap()
        .countersigned()
        .unwrap()
        .clone();
    assert!(l.guarantees.is_empty());
    assert_eq!(l.balances, [u(160), u(40)]);
    // The hub sees the Remove in L(P,H) waiting for the payer, and only that one.
    assert_eq!(w.net.p(hub).stalled_removes(), vec![pl]);
    assert!(w.net.p(b).stalled_removes().is_empty());
    // The hub takes L(P,H) on chain (V concluded with the final), and closes L(H,B) with the payee.
    w.net.p(hub).challenge_ledger(pl).unwrap();
    assert!(w.net.p(hub).stalled_removes().is_empty());
    w.net.p(hub).close_ledger(hl).unwrap();
    end_paid_40(&mut w, &[hub, b]);
}

#[test]
fn payer_silent_while_sending_final_payee_relays_it_to_the_hub() {
    // The payer's final reaches only the payee; the payer is gone. The payee holds all three
    // signatures, the hub only two: without the payer's, the hub could not remove V from L(H,B).
    let (mut w, v) =
        final_signed_then(|w, e| e.to == w.payer || (e.from == w.payer && e.to != w.payees[0]));
    let (hub, b, pl, hl) = (w.hub, w.payees[0], w.payer_ledger, w.hub_ledgers[0]);
    assert_eq!(w.net.p(b).channel(&v).unwrap().final_amount(), Some(u(40)));
    assert!(
        w.net.p(b).channel(&v).unwrap().is_defunded(),
        "payee not defunded"
    );
    assert_eq!(
        w.net.p(hub).channel(&v).unwrap().final_amount(),
        Some(u(40))
    );
    w.net.p(hub).challenge_ledger(pl).unwrap();
    w.net.p(hub).close_ledger(hl).unwrap();
    end_paid_40(&mut w, &[hub, b]);
}

#[test]
fn hub_challenging_the_payer_first_still_removes_v_with_the_payee() {
    // The payer's final reaches both, then the payer is gone; the payee's signature reaches the
    // hub only after the hub took L(P,H) (and so V) on chain. The Remove with the final amounts
    // in L(H,B) still goes through off chain, and L(H,B) never goes on chain.
    let (mut w, v) = final_signed_then(|w, e| {
        e.to == w.payer
            || (e.from == w.payer && !is_final_msg(e))
            || (e.from == w.payees[0] && e.to == w.hub)
    });
    let (hub, b, pl, hl) = (w.hub, w.payees[0], w.payer_ledger, w.hub_ledgers[0]);
    assert_eq!(w.net.p(hub).channel(&v).unwrap().final_amount(), None);
    w.net.p(hub).challenge_ledger(pl).unwrap();
    // V is on chain for the hub; the payee, with the final signed by all, sees its Remove wait.
    assert_eq!(w.net.p(b).stalled_removes(), vec![hl]);
    w.net.flush();
    w.net.p(b).resend();
    w.net.flush();
    deliver_except(&mut w, |w, e| e.to == w.payer);
    assert!(
        w.net.p(b).channel(&v).unwrap().is_defunded(),
        "payee not defunded"
    );
    w.net.p(hub).close_ledger(hl).unwrap();
    end_paid_40(&mut w, &[hub, b]);
    let hub_ledger = w.net.p(hub).ledger(&hl).unwrap().clone();
    assert!(
        hub_ledger.chain().challenge.is_none(),
        "L(H,B) went on chain"
    );
}

#[test]
fn hub_silent_after_final_payee_and_payer_exit_on_chain() {
    // Everyone signs the final; the hub sends its signature, then is gone (no Remove anywhere).
    let (mut w, v) =
        final_signed_then(|w, e| (e.to == w.hub || e.from == w.hub) && !is_final_msg(e));
    let (payer, b, pl) = (w.payer, w.payees[0], w.payer_ledger);
    for a in [payer, b] {
        let c = w.net.p(a).channel(&v).unwrap();
        assert_eq!(c.final_amount(), Some(u(40)));
        assert!(!c.is_defunded());
    }
    assert_eq!(w.net.p(b).stalled_removes(), vec![w.hub_ledgers[0]]);
    assert_eq!(w.net.p(payer).stalled_removes(), vec![pl]);
    w.net.p(b).challenge_virtual(v).unwrap();
    w.net.p(payer).challenge_ledger(pl).unwrap();
    end_paid_40(&mut w, &[payer, b]);
}

#[test]
fn payer_silent_before_final_payee_redeems_and_hub_recovers() {
    let (mut w, v) = paid_world(40);
    let (hub, b) = (w.hub, w.payees[0]);
    w.net.p(b).request_final(v).unwrap();
    w.net.p(b).challenge_virtual(v).unwrap();
    end_paid_40(&mut w, &[hub, b]);
}

#[test]
fn hostile_final_support_is_checked_signature_by_signature() {
    let (mut w, v) = paid_world(30);
    let (payer, hub, b) = (w.payer, w.hub, w.payees[0]);
    let honest = final_from(&mut w, v, payer, hub, |_| {});
    let Payload::Virtual(VirtualMessage {
        body: VirtualBody::Final { state, signature },
        ..
    }) = honest.payload
    else {
        unreachable!()
    };
    let sign = |w: &World, who: Address, s: &VariablePart| {
        w.net.keys[&who].sign_eth_message(&s.hash(v)).unwrap()
    };
    let support = |state: VariablePart, signatures| Envelope {
        from: b,
        to: hub,
        payload: Payload::Virtual(VirtualMessage {
            channel_id: v,
            body: VirtualBody::FinalSupport { state, signatures },
        }),
    };
    // The payee "relays" a final the payer never signed (its own key in the payer's place).
    let forged = vec![
        sign(&w, b, &state),
        sign(&w, hub, &state),
        sign(&w, b, &state),
    ];
    assert_eq!(
        refused(&mut w, &support(state.clone(), forged)),
        VirtualError::Peer(VirtualPeerError::BadSignature("final"))
    );
    // Signatures in the wrong order are refused the same way.
    let swapped = vec![sign(&w, hub, &state), signature, sign(&w, b, &state)];
    assert_eq!(
        refused(&mut w, &support(state.clone(), swapped)),
        VirtualError::Peer(VirtualPeerError::BadSignature("final"))
    );
    // Two signatures are not a relay of a state signed by all.
    let two = vec![signature, sign(&w, hub, &state)];
    assert_eq!(
        refused(&mut w, &support(state.clone(), two)),
        VirtualError::Peer(VirtualPeerError::InvalidFinal("not three signatures"))
    );
    // The honest relay completes the hub's final state.
    let all = vec![signature, sign(&w, hub, &state), sign(&w, b, &state)];
    w.net.p(hub).handle_envelope(&support(state, all)).unwrap();
    assert_eq!(
        w.net.p(hub).channel(&v).unwrap().final_amount(),
        Some(u(30))
    );
}

#[test]
fn hub_taking_the_payee_ledger_on_chain_alone_gets_v_concluded_by_the_payee() {
    // The final state is signed by all and the Removes are withheld; the hub registers a
    // challenge of L(H,B) (holding V's guarantee) but never concludes V, then is gone. The payee
    // concludes V itself (or its ledger could never pay out) and gets exactly its 40; the payer
    // takes L(P,H) on chain.
    let (mut w, v) = closed_removes_withheld(40);
    let (payer, hub, b, pl, hl) = (
        w.payer,
        w.hub,
        w.payees[0],
        w.payer_ledger,
        w.hub_ledgers[0],
    );
    w.net.inflight.clear();
    w.net.p(hub).challenge_ledger(hl).unwrap();
    w.net.flush();
    let d = duties(&mut w, hub);
    let ld = challenge_of(&d, hl);
    register(&mut w, &ld);
    assert!(
        duties(&mut w, b)
            .iter()
            .any(|d| matches!(d, ChainAction::Conclude { fixed, .. } if fixed.channel_id() == v))
    );
    w.net.p(payer).challenge_ledger(pl).unwrap();
    // The hub's V conclude never lands: only the payer's and the payee's duties run.
    end_paid_40(&mut w, &[payer, b]);
}
