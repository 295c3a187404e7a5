//! On-chain scripts of virtual funding through a hub (issue 15), written against `Arc<dyn Chain>`
//! only, so that the same script runs on anvil (the published `NitroAdjudicator` and
//! `ConsensusApp`, this crate's `PaymentApp`) and on `SimulatedChain`, and returns a
//! [`HubReport`] to compare across backends.
//!
//! Channels, built by hand with the anvil dev keys (payer #1, hub #2, payee #3; #0 is the
//! third party that is in no channel):
//! - `L1 = L(payer, hub)` and `L2 = L(hub, payee)`: ledgers with `ConsensusApp`, participants
//!   `[leader, follower]`, outcome `[leader, follower, G(V)]`; only the leader deposits. Turn 1 is
//!   the postfund, turn 2 the state after the guarantee was added.
//! - `V = [payer, hub, payee]` with `PaymentApp`: `[payer a0, payee 0]`; turn 0 prefund, 1
//!   postfund, 2 the payee's redemption of a voucher of `x`.
//! - Guarantees (type 2): in L1 `G(V, a0, left payer, right hub)`, in L2 `G(V, a0, left hub,
//!   right payee)` (reference §2).
//!
//! Every party pays out to a fresh destination address that never sends a transaction, so its
//! balance changes only by payouts.

#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;

use alloy_primitives::{Address, B256, Bytes, U256, keccak256};
use payment_channel::chain::{Chain, ChainError, ChannelMode, ReclaimArgs, Revert};
use payment_channel::sign::{LocalSigner, Signature, Signer};
use payment_channel::state::{
    Allocation, FixedPart, Guarantee, Outcome, SignedVariablePart, VariablePart,
    address_to_destination, allocation_type, challenge_message_hash, two_party_outcome,
};
use payment_channel::voucher::Voucher;

use super::scenarios::{Advance, event_kind};

/// What the scripts need from a backend.
#[derive(Clone)]
pub struct HubEnv {
    /// Sends the payer's transactions.
    pub payer: Arc<dyn Chain>,
    /// Sends the hub's transactions.
    pub hub: Arc<dyn Chain>,
    /// Sends the payee's transactions.
    pub payee: Arc<dyn Chain>,
    /// Sends transactions of an account that is in no channel.
    pub third_party: Arc<dyn Chain>,
    /// The payer's signing key (its address is `payer.account()`).
    pub payer_key: LocalSigner,
    /// The hub's signing key.
    pub hub_key: LocalSigner,
    /// The payee's signing key.
    pub payee_key: LocalSigner,
    /// `PaymentApp` (the virtual channels' app).
    pub payment_app: Address,
    /// The published `ConsensusApp` (the ledgers' app).
    pub consensus_app: Address,
    /// The published `VirtualPaymentApp` (only to show why it is not used).
    pub virtual_payment_app: Address,
    /// Time travel.
    pub advance: Advance,
}

/// Gas of one call on the backend, with the regression bound it must stay under on anvil.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GasLine {
    /// Which call.
    pub call: &'static str,
    /// Gas used (0 on the simulator).
    pub gas: u64,
    /// Upper bound on anvil.
    pub bound: u64,
}

/// What a channel looks like on chain at the end of a script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelEnd {
    /// `holdings(0, id)`.
    pub holdings: U256,
    /// `turnNumRecord`.
    pub turn_num_record: u64,
    /// The stored fingerprint (independent of times).
    pub fingerprint: [u8; 20],
    /// The mode at the end.
    pub mode: ChannelMode,
    /// Kinds of the events about the channel during the script, in order.
    pub events: Vec<&'static str>,
}

/// The end of a script, comparable across backends except for `gas`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubReport {
    /// What the payer's, the hub's and the payee's destinations received.
    pub received: [U256; 3],
    /// L1, L2 and V at the end.
    pub channels: [ChannelEnd; 3],
    /// Reverts observed, in order (reason-less reverts as `<no reason>`).
    pub reverts: Vec<String>,
    /// Gas per call (not compared).
    pub gas: Vec<GasLine>,
}

impl HubReport {
    /// The part both backends must agree on.
    pub fn comparable(&self) -> (&[U256; 3], &[ChannelEnd; 3], &[String]) {
        (&self.received, &self.channels, &self.reverts)
    }
}

/// Challenge duration of every channel, seconds.
pub const CHALLENGE_DURATION: u64 = 600;
/// One unit of the scripts' amounts: 1 gwei.
pub const UNIT: u64 = 1_000_000_000;
/// What the leader deposits into each ledger.
pub const LEDGER_DEPOSIT: u64 = 10 * UNIT;
/// V's `a0`: the payer's amount in V, and each guarantee's amount.
pub const A0: u64 = 5 * UNIT;
/// The voucher the payee redeems.
pub const PAID: u64 = 3 * UNIT;

fn u(x: u64) -> U256 {
    U256::from(x)
}

/// One channel: its fixed part and how to sign its states.
#[derive(Debug, Clone)]
pub struct Chan {
    /// Fixed part.
    pub fixed: FixedPart,
    /// Channel id.
    pub id: B256,
}

impl Chan {
    fn new(participants: Vec<Address>, nonce: u64, app: Address) -> Self {
        let fixed = FixedPart {
            participants,
            channel_nonce: nonce,
            app_definition: app,
            challenge_duration: CHALLENGE_DURATION,
        };
        Self {
            id: fixed.channel_id(),
            fixed,
        }
    }

    /// `vp` signed by each of `keys`.
    pub fn sign(&self, vp: VariablePart, keys: &[&LocalSigner]) -> SignedVariablePart {
        let hash = vp.hash(self.id);
        let sigs = keys
            .iter()
            .map(|k| k.sign_eth_message(&hash).expect("local signing"))
            .collect();
        SignedVariablePart {
            variable_part: vp,
            sigs,
        }
    }

    /// `key`'s challenger signature for a challenge with `candidate`.
    pub fn challenger_sig(&self, key: &LocalSigner, candidate: &SignedVariablePart) -> Signature {
        key.sign_eth_message(&challenge_message_hash(
            candidate.variable_part.hash(self.id),
        ))
        .expect("local signing")
    }

    /// The hash `transferAllAssets`/`reclaim` need for a channel challenged with `candidate`.
    pub fn hash(&self, candidate: &SignedVariablePart) -> B256 {
        candidate.variable_part.hash(self.id)
    }

    /// `transferAllAssets` of this channel, finalized by a challenge with `candidate`, by `chain`.
    pub async fn transfer_challenged(
        &self,
        chain: &Arc<dyn Chain>,
        candidate: &SignedVariablePart,
    ) -> Result<payment_channel::chain::TxReceipt, ChainError> {
        let outcome = &candidate.variable_part.outcome;
        chain
            .transfer_all_assets(self.id, outcome, self.hash(candidate))
            .await
    }
}

fn state(outcome: Outcome, turn_num: u64, is_final: bool, app_data: Bytes) -> VariablePart {
    VariablePart {
        outcome,
        app_data,
        turn_num,
        is_final,
    }
}

fn destination(label: &str, nonce: u64) -> Address {
    let mut data = label.as_bytes().to_vec();
    data.extend_from_slice(&nonce.to_be_bytes());
    Address::from_slice(&keccak256(data)[12..])
}

/// The channels of one payer–hub–payee setup (see the module docs).
pub struct Setup {
    /// L(payer, hub).
    pub l1: Chan,
    /// L(hub, payee).
    pub l2: Chan,
    /// V = [payer, hub, payee].
    pub v: Chan,
    /// Where the payer, the hub and the payee are paid.
    pub dests: [Address; 3],
    env: HubEnv,
}

impl Setup {
    /// The setup with nonces `nonce` (V), `nonce + 1` (L1), `nonce + 2` (L2), V's app `v_app`.
    pub fn new(env: &HubEnv, nonce: u64, v_app: Address) -> Self {
        let (p, h, b) = (
            env.payer_key.address(),
            env.hub_key.address(),
            env.payee_key.address(),
        );
        Self {
            v: Chan::new(vec![p, h, b], nonce, v_app),
            l1: Chan::new(vec![p, h], nonce + 1, env.consensus_app),
            l2: Chan::new(vec![h, b], nonce + 2, env.consensus_app),
            dests: [
                destination("payer destination", nonce),
                destination("hub destination", nonce),
                destination("payee destination", nonce),
            ],
            env: env.clone(),
        }
    }

    fn dest(&self, who: usize) -> B256 {
        address_to_destination(self.dests[who])
    }

    /// V's guarantee in L1 (`left` payer, `right` hub) or L2 (`left` hub, `right` payee), of
    /// `amount`, with allocation type `ty`.
    pub fn guarantee(&self, in_l2: bool, amount: u64, ty: u8) -> Allocation {
        let (left, right) = if in_l2 { (1, 2) } else { (0, 1) };
        Allocation {
            allocation_type: ty,
            ..Allocation::guarantee(
                self.v.id,
                u(amount),
                Guarantee {
                    left: self.dest(left),
                    right: self.dest(right),
                },
            )
        }
    }

    /// A ledger outcome `[leader, follower, guarantee?]` (L1: payer, hub; L2: hub, payee).
    pub fn ledger_outcome(
        &self,
        in_l2: bool,
        leader: u64,
        follower: u64,
        g: Option<Allocation>,
    ) -> Outcome {
        let (a, b) = if in_l2 { (1, 2) } else { (0, 1) };
        let mut o = two_party_outcome(
            Address::ZERO,
            self.dests[a],
            u(leader),
            self.dests[b],
            u(follower),
        );
        o[0].allocations.extend(g);
        o
    }

    /// A ledger state signed by both participants.
    pub fn ledger_state(
        &self,
        in_l2: bool,
        outcome: Outcome,
        turn: u64,
        is_final: bool,
    ) -> SignedVariablePart {
        let (l, keys) = if in_l2 {
            (&self.l2, [&self.env.hub_key, &self.env.payee_key])
        } else {
            (&self.l1, [&self.env.payer_key, &self.env.hub_key])
        };
        l.sign(state(outcome, turn, is_final, Bytes::new()), &keys)
    }

    /// A ledger state with the guarantee `g` taken from the leader's deposit, signed by both.
    pub fn ledger_with(
        &self,
        in_l2: bool,
        g: Allocation,
        turn: u64,
        is_final: bool,
    ) -> SignedVariablePart {
        let amount = g.amount.to::<u64>();
        let outcome = self.ledger_outcome(in_l2, LEDGER_DEPOSIT - amount, 0, Some(g));
        self.ledger_state(in_l2, outcome, turn, is_final)
    }

    /// [`Setup::ledger_with`] V's type-2 guarantee of `a0`: turn 2 is the state after the Add,
    /// turn 3 final its close with the guarantee still in.
    pub fn ledger_with_v(&self, in_l2: bool, turn: u64, is_final: bool) -> SignedVariablePart {
        let g = self.guarantee(in_l2, A0, allocation_type::GUARANTEE);
        self.ledger_with(in_l2, g, turn, is_final)
    }

    /// V's outcome `[payer a0 - paid, payee b0 + paid]`… as `PaymentApp` redeems it: the payee's
    /// amount becomes `paid`.
    pub fn v_outcome(&self, payer: u64, payee: u64) -> Outcome {
        two_party_outcome(
            Address::ZERO,
            self.dests[0],
            u(payer),
            self.dests[2],
            u(payee),
        )
    }

    /// V's turn-0 or turn-1 state with `[a0, b0]`, signed by all three.
    pub fn v_unanimous(&self, turn: u64, b0: u64) -> SignedVariablePart {
        let keys = [&self.env.payer_key, &self.env.hub_key, &self.env.payee_key];
        self.v.sign(
            state(self.v_outcome(A0, b0), turn, false, Bytes::new()),
            &keys,
        )
    }

    /// The payee's redemption (turn 2) of the payer's voucher for `paid`: `[a0 - paid, paid]`.
    pub fn v_redemption(&self, paid: u64) -> SignedVariablePart {
        let voucher = Voucher::sign(self.v.id, u(paid), &self.env.payer_key).expect("voucher");
        self.v.sign(
            state(
                self.v_outcome(A0 - paid, paid),
                2,
                false,
                voucher.app_data(),
            ),
            &[&self.env.payee_key],
        )
    }

    /// `reclaim` of V's guarantee at index 2 of `ledger`'s outcome (the ledger challenged with
    /// `ledger`, or `concluded` with it: zero state hash), V challenged with `v`.
    pub fn reclaim_args(
        &self,
        in_l2: bool,
        ledger: &SignedVariablePart,
        concluded: bool,
        v: &SignedVariablePart,
    ) -> ReclaimArgs {
        let l = if in_l2 { &self.l2 } else { &self.l1 };
        ReclaimArgs {
            source_channel_id: l.id,
            source_state_hash: if concluded {
                B256::ZERO
            } else {
                l.hash(ledger)
            },
            source_outcome: ledger.variable_part.outcome.clone(),
            source_asset_index: 0,
            index_of_target_in_source: 2,
            target_state_hash: self.v.hash(v),
            target_outcome: v.variable_part.outcome.clone(),
            target_asset_index: 0,
        }
    }

    /// The payee challenges V with `redemption` over `postfund`, through `chain`.
    pub async fn redeem(
        &self,
        chain: &Arc<dyn Chain>,
        postfund: &SignedVariablePart,
        redemption: &SignedVariablePart,
    ) -> Result<payment_channel::chain::TxReceipt, ChainError> {
        let sig = self.v.challenger_sig(&self.env.payee_key, redemption);
        chain
            .challenge(
                &self.v.fixed,
                std::slice::from_ref(postfund),
                redemption,
                &sig,
            )
            .await
    }
}

/// A revert as both backends report it: a revert without reason data is `<no reason>` (anvil
/// reports an empty reason, the simulator says why it happened).
pub fn normalize(r: &Revert) -> String {
    match r {
        Revert::Other(s) if s.is_empty() || s.starts_with("no reason:") => "<no reason>".into(),
        other => other.to_string(),
    }
}

/// Records gas and reverts along a script.
pub struct Rec {
    gas: Vec<GasLine>,
    reverts: Vec<String>,
    start_block: u64,
    baseline: [U256; 3],
    env: HubEnv,
}

impl Rec {
    /// Starts recording for `setup`.
    pub async fn new(env: &HubEnv, setup: &Setup) -> Self {
        let mut baseline = [U256::ZERO; 3];
        for (b, d) in baseline.iter_mut().zip(setup.dests) {
            *b = env.payer.balance(Address::ZERO, d).await.expect("balance");
        }
        Self {
            gas: Vec::new(),
            reverts: Vec::new(),
            start_block: env.payer.block_number().await.expect("block number"),
            baseline,
            env: env.clone(),
        }
    }

    /// Expects `r` to succeed; records its gas with the bound it must stay under on anvil.
    pub fn ok(
        &mut self,
        call: &'static str,
        bound: u64,
        r: Result<payment_channel::chain::TxReceipt, ChainError>,
    ) {
        let receipt = r.unwrap_or_else(|e| panic!("{call} failed: {e}"));
        self.gas.push(GasLine {
            call,
            gas: receipt.gas_used,
            bound,
        });
    }

    /// Expects `r` to revert with `expected` (compared after [`normalize`]) and nothing to be
    /// mined for it.
    pub async fn revert<T: std::fmt::Debug>(&mut self, r: Result<T, ChainError>, expected: &str) {
        let before = self.env.payer.block_number().await.expect("block number");
        let got = match r {
            Err(ChainError::Reverted(rev)) => normalize(&rev),
            other => panic!("expected a revert {expected:?}, got {other:?}"),
        };
        assert_eq!(got, expected, "wrong revert");
        let after = self.env.payer.block_number().await.expect("block number");
        assert_eq!(before, after, "a refused call must not be mined");
        self.reverts.push(got);
    }

    /// The report: what each destination received and how L1, L2 and V end.
    pub async fn finish(self, setup: &Setup) -> HubReport {
        let chain = &self.env.payer;
        let now = chain.now().await.expect("now");
        let mut received = [U256::ZERO; 3];
        for ((r, d), b) in received.iter_mut().zip(setup.dests).zip(self.baseline) {
            *r = chain.balance(Address::ZERO, d).await.expect("balance") - b;
        }
        let mut ends = Vec::new();
        for id in [setup.l1.id, setup.l2.id, setup.v.id] {
            let status = chain.status(id).await.expect("status");
            ends.push(ChannelEnd {
                holdings: chain.holdings(Address::ZERO, id).await.expect("holdings"),
                turn_num_record: status.turn_num_record,
                fingerprint: status.fingerprint,
                mode: status.mode(now),
                events: chain
                    .events(id, self.start_block)
                    .await
                    .expect("events")
                    .iter()
                    .map(|r| event_kind(&r.event))
                    .collect(),
            });
        }
        HubReport {
            received,
            channels: ends.try_into().expect("three channels"),
            reverts: self.reverts,
            gas: self.gas,
        }
    }
}

// Regression bounds on anvil (≈ 1.3× what anvil 1.x measured; see the gas table the tests print).
const DEPOSIT_GAS: u64 = 60_000;
const CHALLENGE_LEDGER_GAS: u64 = 160_000;
const CHALLENGE_V_GAS: u64 = 230_000;
const CHECKPOINT_GAS: u64 = 110_000;
const CONCLUDE_GAS: u64 = 120_000;
const RECLAIM_GAS: u64 = 90_000;
const TRANSFER_ALL_GAS: u64 = 160_000;
const TRANSFER_GAS: u64 = 160_000;
const CONCLUDE_AND_TRANSFER_GAS: u64 = 200_000;

/// The opening of most scripts: the channels of `nonce` (V on `PaymentApp`), a recorder, and
/// [`fund`] of the ledgers chosen.
async fn open_funded(env: &HubEnv, nonce: u64, l1: bool, l2: bool) -> (Setup, Rec) {
    let s = Setup::new(env, nonce, env.payment_app);
    let mut rec = Rec::new(env, &s).await;
    fund(env, &s, &mut rec, l1, l2).await;
    (s, rec)
}

/// The payer funds L1 and the hub funds L2, `LEDGER_DEPOSIT` each.
async fn fund(env: &HubEnv, s: &Setup, rec: &mut Rec, l1: bool, l2: bool) {
    let d = u(LEDGER_DEPOSIT);
    if l1 {
        let r = env
            .payer
            .deposit(Address::ZERO, s.l1.id, U256::ZERO, d)
            .await;
        rec.ok("deposit L(P,H) (payer)", DEPOSIT_GAS, r);
    }
    if l2 {
        let r = env.hub.deposit(Address::ZERO, s.l2.id, U256::ZERO, d).await;
        rec.ok("deposit L(H,B) (hub)", DEPOSIT_GAS, r);
    }
}

/// `chain` (acting for `key`) challenges `l` with `state` alone (`proof = []`).
async fn challenge_without_proof(
    chain: &Arc<dyn Chain>,
    key: &LocalSigner,
    l: &Chan,
    state: &SignedVariablePart,
) -> Result<payment_channel::chain::TxReceipt, ChainError> {
    chain
        .challenge(&l.fixed, &[], state, &l.challenger_sig(key, state))
        .await
}

/// The hub challenges L(H,B) with `l2` (no proof), the payee challenges V with its redemption of
/// `PAID` (postfund with `b0` for the payee), both recorded under `labels`; after the challenge
/// duration, the hub's `reclaim` in L(H,B) reverts with `reclaim_revert`. Returns the hub's
/// `transferAllAssets` of L(H,B), for the caller to judge.
async fn challenge_l2_and_v_then_fail_reclaim(
    env: &HubEnv,
    s: &Setup,
    rec: &mut Rec,
    l2: &SignedVariablePart,
    b0: u64,
    labels: [&'static str; 2],
    reclaim_revert: &str,
) -> Result<payment_channel::chain::TxReceipt, ChainError> {
    let postfund = s.v_unanimous(1, b0);
    let redemption = s.v_redemption(PAID);
    let r = challenge_without_proof(&env.hub, &env.hub_key, &s.l2, l2).await;
    rec.ok(labels[0], CHALLENGE_LEDGER_GAS, r);
    let r = s.redeem(&env.payee, &postfund, &redemption).await;
    rec.ok(labels[1], CHALLENGE_V_GAS, r);
    (env.advance)(CHALLENGE_DURATION + 1).await;
    let args = s.reclaim_args(true, l2, false, &redemption);
    rec.revert(env.hub.reclaim(&args).await, reclaim_revert)
        .await;
    s.l2.transfer_challenged(&env.hub, l2).await
}

/// After V finalized with `redemption` (challenged) and both ledgers with `l1`/`l2` (challenged,
/// or `concluded`), reclaims in both ledgers and pays both out, L(H,B) first; the report, checked
/// with [`assert_settled`].
async fn reclaim_pay_out_and_settle(
    env: &HubEnv,
    s: &Setup,
    mut rec: Rec,
    [l1, l2]: [&SignedVariablePart; 2],
    concluded: bool,
    redemption: &SignedVariablePart,
) -> HubReport {
    for (in_l2, ledger, reclaim, pay_out) in [
        (true, l2, "reclaim L(H,B)", "transferAllAssets L(H,B)"),
        (false, l1, "reclaim L(P,H)", "transferAllAssets L(P,H)"),
    ] {
        let args = s.reclaim_args(in_l2, ledger, concluded, redemption);
        rec.ok(reclaim, RECLAIM_GAS, env.hub.reclaim(&args).await);
        // The guarantee is gone: a second reclaim no longer matches the fingerprint.
        rec.revert(env.hub.reclaim(&args).await, "incorrect fingerprint")
            .await;
        // L(H,B): the hub gets its change back, the payee its receipts; L(P,H): the payer gets
        // its change back, the hub what the payee got.
        let after = s.ledger_outcome(in_l2, LEDGER_DEPOSIT - A0 + (A0 - PAID), PAID, None);
        let r = env
            .hub
            .transfer_all_assets(args.source_channel_id, &after, args.source_state_hash)
            .await;
        rec.ok(pay_out, TRANSFER_ALL_GAS, r);
    }
    let report = rec.finish(s).await;
    assert_settled(&report);
    report
}

/// Checks the end of a complete virtual-funded exit: the payee got exactly `PAID`, the hub got
/// back its deposit (nets 0), the payer its deposit minus `PAID`, and nothing is held any more.
fn assert_settled(r: &HubReport) {
    assert_eq!(
        r.received,
        [u(LEDGER_DEPOSIT - PAID), u(LEDGER_DEPOSIT), u(PAID)]
    );
    for c in &r.channels {
        assert_eq!(c.holdings, U256::ZERO);
    }
    // Both ledgers paid everything: their status is deleted.
    assert_eq!(r.channels[0].turn_num_record, 0);
    assert_eq!(r.channels[0].fingerprint, [0; 20]);
    assert_eq!(r.channels[1].fingerprint, [0; 20]);
}

/// S1 (reference §4.3): both ledgers and V go on chain (V with the payee's redemption);
/// `transferAllAssets` of a ledger before its reclaim reverts; 2× reclaim, 2× transferAllAssets.
pub async fn s1_both_ledgers_and_redemption(env: &HubEnv, nonce: u64) -> HubReport {
    let (s, mut rec) = open_funded(env, nonce, true, true).await;
    let l1 = s.ledger_with_v(false, 2, false);
    let l2 = s.ledger_with_v(true, 2, false);
    let postfund = s.v_unanimous(1, 0);
    let redemption = s.v_redemption(PAID);

    let r = challenge_without_proof(&env.hub, &env.hub_key, &s.l2, &l2).await;
    rec.ok("challenge L(H,B) (turn 2)", CHALLENGE_LEDGER_GAS, r);
    let r = s.redeem(&env.payee, &postfund, &redemption).await;
    rec.ok("challenge V (redemption)", CHALLENGE_V_GAS, r);
    let r = challenge_without_proof(&env.hub, &env.hub_key, &s.l1, &l1).await;
    rec.ok("challenge L(P,H) (turn 2)", CHALLENGE_LEDGER_GAS, r);
    // Nothing is final yet.
    let args = s.reclaim_args(true, &l2, false, &redemption);
    rec.revert(env.hub.reclaim(&args).await, "Channel not finalized.")
        .await;
    (env.advance)(CHALLENGE_DURATION + 1).await;

    // A ledger with a live guarantee cannot pay out.
    let r = s.l1.transfer_challenged(&env.hub, &l1).await;
    rec.revert(r, "reverted: cannot transfer a guarantee").await;

    reclaim_pay_out_and_settle(env, &s, rec, [&l1, &l2], false, &redemption).await
}

/// S5: the hub exits V with the prefund; the payee counter-challenges with its redemption; both
/// ledgers are concluded cooperatively (guarantee still in), so reclaim uses a zero source hash.
pub async fn s5_hub_exits_payee_counters(env: &HubEnv, nonce: u64) -> HubReport {
    let (s, mut rec) = open_funded(env, nonce, true, true).await;
    let prefund = s.v_unanimous(0, 0);
    let postfund = s.v_unanimous(1, 0);
    let redemption = s.v_redemption(PAID);

    let r = challenge_without_proof(&env.hub, &env.hub_key, &s.v, &prefund).await;
    rec.ok("challenge V (prefund, hub)", CHALLENGE_V_GAS, r);
    (env.advance)(CHALLENGE_DURATION / 2).await;
    let r = s.redeem(&env.payee, &postfund, &redemption).await;
    rec.ok("challenge V (counter: redemption)", CHALLENGE_V_GAS, r);

    // Final ledger states: turn 3, isFinal, the guarantee still in.
    let l1 = s.ledger_with_v(false, 3, true);
    let l2 = s.ledger_with_v(true, 3, true);
    rec.ok(
        "conclude L(H,B)",
        CONCLUDE_GAS,
        env.hub.conclude(&s.l2.fixed, &l2).await,
    );
    rec.ok(
        "conclude L(P,H)",
        CONCLUDE_GAS,
        env.hub.conclude(&s.l1.fixed, &l1).await,
    );
    // The ledger is final, V is not yet.
    let args = s.reclaim_args(true, &l2, true, &redemption);
    rec.revert(env.hub.reclaim(&args).await, "Channel not finalized.")
        .await;
    (env.advance)(CHALLENGE_DURATION + 1).await;
    // The prefund is no longer what V's fingerprint holds.
    let stale = s.reclaim_args(true, &l2, true, &prefund);
    rec.revert(env.hub.reclaim(&stale).await, "incorrect fingerprint")
        .await;

    reclaim_pay_out_and_settle(env, &s, rec, [&l1, &l2], true, &redemption).await
}

/// A stale ledger challenge (the payer's postfund, from before the guarantee was added) is
/// cleared by the hub's checkpoint of the newer countersigned state; `ConsensusApp` refuses a
/// proof and a state not signed by both.
pub async fn stale_ledger_challenge_cleared(env: &HubEnv, nonce: u64) -> HubReport {
    let (s, mut rec) = open_funded(env, nonce, true, false).await;
    let stale = s.ledger_state(
        false,
        s.ledger_outcome(false, LEDGER_DEPOSIT, 0, None),
        1,
        false,
    );
    let newer = s.ledger_with_v(false, 2, false);

    let r = challenge_without_proof(&env.payer, &env.payer_key, &s.l1, &stale).await;
    rec.ok("challenge L(P,H) (stale turn 1)", CHALLENGE_LEDGER_GAS, r);
    // ConsensusApp: no proof allowed, every participant must sign.
    let r = env
        .hub
        .checkpoint(&s.l1.fixed, std::slice::from_ref(&stale), &newer)
        .await;
    rec.revert(r, "reverted: |proof|!=0").await;
    let hub_only = s.l1.sign(newer.variable_part.clone(), &[&env.hub_key]);
    let r = env.hub.checkpoint(&s.l1.fixed, &[], &hub_only).await;
    rec.revert(r, "!unanimous").await;

    let r = env.hub.checkpoint(&s.l1.fixed, &[], &newer).await;
    rec.ok("checkpoint L(P,H) (clears)", CHECKPOINT_GAS, r);
    let status = env.hub.status(s.l1.id).await.expect("status");
    assert_eq!((status.turn_num_record, status.finalizes_at), (2, 0));
    // The payer cannot go back to the stale state.
    let r = challenge_without_proof(&env.payer, &env.payer_key, &s.l1, &stale).await;
    rec.revert(r, "turnNumRecord decreased.").await;
    (env.advance)(CHALLENGE_DURATION + 1).await;
    let report = rec.finish(&s).await;
    assert_eq!(report.channels[0].mode, ChannelMode::Open);
    assert_eq!(report.channels[0].holdings, u(LEDGER_DEPOSIT));
    report
}

/// S2 (§0.1): a go-nitro-style type-1 "guarantee" cannot be reclaimed, and paying the ledger out
/// moves its amount into `holdings[V]` as if V were a plain destination.
pub async fn type_1_guarantee_is_not_reclaimable(env: &HubEnv, nonce: u64) -> HubReport {
    let (s, mut rec) = open_funded(env, nonce, false, true).await;
    let l2 = s.ledger_with(
        true,
        s.guarantee(true, A0, allocation_type::WITHDRAW_HELPER),
        2,
        false,
    );
    let r = challenge_l2_and_v_then_fail_reclaim(
        env,
        &s,
        &mut rec,
        &l2,
        0,
        ["challenge L(H,B) (type 1)", "challenge V (redemption)"],
        "reverted: not a guarantee allocation",
    )
    .await;
    rec.ok("transferAllAssets L(H,B) (type 1)", TRANSFER_ALL_GAS, r);
    let report = rec.finish(&s).await;
    assert_eq!(
        report.received,
        [U256::ZERO, u(LEDGER_DEPOSIT - A0), U256::ZERO]
    );
    assert_eq!(report.channels[2].holdings, u(A0), "a0 went to holdings[V]");
    report
}

/// b0 > 0: `PaymentApp` refuses the payee's redemption (`amounts do not add up`), so a hub
/// cannot end up with an unreclaimable V; with the published `VirtualPaymentApp` the redemption
/// is accepted, and `reclaim` then reverts because V's total shrank below the guarantee, which
/// locks the ledger's funds (`cannot transfer a guarantee`).
pub async fn b0_breaks_reclaim(env: &HubEnv, nonce: u64) -> HubReport {
    const B0: u64 = UNIT;
    // PaymentApp.
    let s = Setup::new(env, nonce + 10, env.payment_app);
    let mut rec = Rec::new(env, &s).await;
    let postfund = s.v_unanimous(1, B0);
    let redemption = s.v_redemption(PAID);
    let r = s.redeem(&env.payee, &postfund, &redemption).await;
    rec.revert(r, "not supported: amounts do not add up").await;
    let refused = rec.reverts.clone();

    // VirtualPaymentApp.
    let s = Setup::new(env, nonce, env.virtual_payment_app);
    let mut rec = Rec::new(env, &s).await;
    rec.reverts = refused;
    fund(env, &s, &mut rec, false, true).await;
    let g = s.guarantee(true, A0 + B0, allocation_type::GUARANTEE);
    let l2 = s.ledger_with(true, g, 2, false);
    let r = challenge_l2_and_v_then_fail_reclaim(
        env,
        &s,
        &mut rec,
        &l2,
        B0,
        [
            "challenge L(H,B) (turn 2)",
            "challenge V (VirtualPaymentApp, b0 > 0)",
        ],
        "reverted: totalReclaimed!=guarantee.amount",
    )
    .await;
    rec.revert(r, "reverted: cannot transfer a guarantee").await;
    let report = rec.finish(&s).await;
    assert_eq!(report.channels[1].holdings, u(LEDGER_DEPOSIT), "locked");
    report
}

/// S4 (§0.2): a V with `appDefinition = 0x0` (go-nitro's) cannot be challenged, neither with the
/// prefund nor with a redemption (the call to `stateIsSupported` returns no data); `conclude`,
/// which calls no app, works.
pub async fn zero_app_v_cannot_be_challenged(env: &HubEnv, nonce: u64) -> HubReport {
    let s = Setup::new(env, nonce, Address::ZERO);
    let mut rec = Rec::new(env, &s).await;
    let prefund = s.v_unanimous(0, 0);
    let postfund = s.v_unanimous(1, 0);
    let redemption = s.v_redemption(PAID);
    let r = challenge_without_proof(&env.hub, &env.hub_key, &s.v, &prefund).await;
    rec.revert(r, "<no reason>").await;
    let r = s.redeem(&env.payee, &postfund, &redemption).await;
    rec.revert(r, "<no reason>").await;
    let keys = [&env.payer_key, &env.hub_key, &env.payee_key];
    let fin = s.v.sign(
        state(s.v_outcome(A0 - PAID, PAID), 2, true, Bytes::new()),
        &keys,
    );
    rec.ok(
        "conclude V (0x0 app)",
        CONCLUDE_GAS,
        env.hub.conclude(&s.v.fixed, &fin).await,
    );
    let report = rec.finish(&s).await;
    assert_eq!(report.channels[2].mode, ChannelMode::Finalized);
    report
}

/// S3 (§0.4), a regression test of a contract hazard: once L(H,B) is finalized with V's live
/// guarantee (the hub exits an unresponsive payee; V never went on chain), **an account in no
/// channel** calls `transfer(0, L2, outcome, hash, [2])`: the check reads `allocations[0]`, so the
/// guarantee's `a0` moves into `holdings[V]`. The leftover zero guarantee then blocks
/// `transferAllAssets`, and only the same bug (`transfer(…, [0, 1])`) pays the ledger out.
pub async fn third_party_transfer_of_a_guarantee(env: &HubEnv, nonce: u64) -> HubReport {
    let (s, mut rec) = open_funded(env, nonce, false, true).await;
    let l2 = s.ledger_with_v(true, 2, false);
    let r = challenge_without_proof(&env.hub, &env.hub_key, &s.l2, &l2).await;
    rec.ok("challenge L(H,B) (turn 2)", CHALLENGE_LEDGER_GAS, r);
    (env.advance)(CHALLENGE_DURATION + 1).await;
    assert!(
        !s.l2.fixed.participants.contains(&env.third_party.account()),
        "the caller is in no channel"
    );
    let hash = s.l2.hash(&l2);
    // `[2]` straight away, and `[0]` pointing at the leader's balance, are not refused; `[2, 2]`
    // is.
    let r = env
        .third_party
        .transfer(0, s.l2.id, &l2.variable_part.outcome, hash, &[2, 2])
        .await;
    rec.revert(r, "reverted: Indices must be sorted").await;
    let r = env
        .third_party
        .transfer(0, s.l2.id, &l2.variable_part.outcome, hash, &[2])
        .await;
    rec.ok("transfer L(H,B) [2] (third party)", TRANSFER_GAS, r);
    assert_eq!(
        env.hub
            .holdings(Address::ZERO, s.v.id)
            .await
            .expect("holdings"),
        u(A0)
    );
    let zeroed = s.guarantee(true, 0, allocation_type::GUARANTEE);
    let after = s.ledger_outcome(true, LEDGER_DEPOSIT - A0, 0, Some(zeroed));
    let r = env.hub.transfer_all_assets(s.l2.id, &after, hash).await;
    rec.revert(r, "reverted: cannot transfer a guarantee").await;
    let r = env.hub.transfer(0, s.l2.id, &after, hash, &[0, 1]).await;
    rec.ok("transfer L(H,B) [0, 1] (hub)", TRANSFER_GAS, r);
    let report = rec.finish(&s).await;
    assert_eq!(
        report.received,
        [U256::ZERO, u(LEDGER_DEPOSIT - A0), U256::ZERO]
    );
    assert_eq!(report.channels[1].holdings, U256::ZERO);
    assert_eq!(
        report.channels[2].holdings,
        u(A0),
        "the hub's a0 sits in holdings[V]"
    );
    // `transfer` never deletes the status, even when only zeros are left.
    assert_ne!(report.channels[1].fingerprint, [0; 20]);
    report
}

/// The cooperative close of a ledger: `concludeAndTransferAllAssets` of a final state without
/// guarantees pays both out in one transaction; with a guarantee left in, the whole call reverts
/// (the conclude too).
pub async fn cooperative_ledger_close(env: &HubEnv, nonce: u64) -> HubReport {
    let (s, mut rec) = open_funded(env, nonce, true, true).await;
    let with_g = s.ledger_with_v(true, 3, true);
    let r = env
        .hub
        .conclude_and_transfer_all_assets(&s.l2.fixed, &with_g)
        .await;
    rec.revert(r, "reverted: cannot transfer a guarantee").await;
    // The payer paid the hub PAID through V, removed cooperatively: the final ledger state.
    let fin = s.ledger_state(
        false,
        s.ledger_outcome(false, LEDGER_DEPOSIT - PAID, PAID, None),
        4,
        true,
    );
    let half = s.l1.sign(fin.variable_part.clone(), &[&env.payer_key]);
    let r = env
        .hub
        .conclude_and_transfer_all_assets(&s.l1.fixed, &half)
        .await;
    rec.revert(r, "!unanimous").await;
    let r = env
        .hub
        .conclude_and_transfer_all_assets(&s.l1.fixed, &fin)
        .await;
    rec.ok(
        "concludeAndTransferAllAssets L(P,H)",
        CONCLUDE_AND_TRANSFER_GAS,
        r,
    );
    let report = rec.finish(&s).await;
    assert_eq!(
        report.received,
        [u(LEDGER_DEPOSIT - PAID), u(PAID), U256::ZERO]
    );
    assert_eq!(report.channels[0].holdings, U256::ZERO);
    assert_eq!(report.channels[0].fingerprint, [0; 20], "status deleted");
    assert_eq!(
        report.channels[1].mode,
        ChannelMode::Open,
        "L2's conclude rolled back"
    );
    report
}

/// S3 continued (§4.4), what the hazard costs the hub: the hub exits an unresponsive payee by
/// finalizing L(H,B) and V (with the prefund). The payer then pushes L(H,B)'s guarantee into
/// `holdings[V]` with `transfer(…, [2])`, reclaims its own guarantee in L(P,H) from the same V,
/// and pays V out: it gets `a0` back twice, and the hub, who can no longer reclaim in L(H,B) (V's
/// status is gone), loses `a0`. The mitigation is the hub's: reclaim in the first block in which
/// both L(H,B) and V are final.
pub async fn payer_takes_a0_twice_through_transfer(env: &HubEnv, nonce: u64) -> HubReport {
    let (s, mut rec) = open_funded(env, nonce, true, true).await;
    let l1 = s.ledger_with_v(false, 2, false);
    let l2 = s.ledger_with_v(true, 2, false);
    let prefund = s.v_unanimous(0, 0);
    let r = challenge_without_proof(&env.hub, &env.hub_key, &s.l2, &l2).await;
    rec.ok("challenge L(H,B) (turn 2)", CHALLENGE_LEDGER_GAS, r);
    let r = challenge_without_proof(&env.hub, &env.hub_key, &s.v, &prefund).await;
    rec.ok("challenge V (prefund, hub)", CHALLENGE_V_GAS, r);
    let r = challenge_without_proof(&env.payer, &env.payer_key, &s.l1, &l1).await;
    rec.ok("challenge L(P,H) (turn 2, payer)", CHALLENGE_LEDGER_GAS, r);
    (env.advance)(CHALLENGE_DURATION + 1).await;

    // The payer moves the hub's a0 into V, then reclaims its own a0 in L(P,H).
    let (l2_hash, v_hash) = (s.l2.hash(&l2), s.v.hash(&prefund));
    let r = env
        .payer
        .transfer(0, s.l2.id, &l2.variable_part.outcome, l2_hash, &[2])
        .await;
    rec.ok("transfer L(H,B) [2] (payer)", TRANSFER_GAS, r);
    let args = s.reclaim_args(false, &l1, false, &prefund);
    rec.ok(
        "reclaim L(P,H)",
        RECLAIM_GAS,
        env.payer.reclaim(&args).await,
    );
    let l1_after = s.ledger_outcome(false, LEDGER_DEPOSIT, 0, None);
    let r = env
        .payer
        .transfer_all_assets(s.l1.id, &l1_after, args.source_state_hash)
        .await;
    rec.ok("transferAllAssets L(P,H)", TRANSFER_ALL_GAS, r);
    let r = env
        .payer
        .transfer_all_assets(s.v.id, &prefund.variable_part.outcome, v_hash)
        .await;
    rec.ok("transferAllAssets V (a0 from L(H,B))", TRANSFER_ALL_GAS, r);

    // The hub comes back: V's status is deleted, so its reclaim in L(H,B) fails; only the
    // balances are left to take.
    let zeroed = s.guarantee(true, 0, allocation_type::GUARANTEE);
    let l2_now = s.ledger_outcome(true, LEDGER_DEPOSIT - A0, 0, Some(zeroed));
    let mut args = s.reclaim_args(true, &l2, false, &prefund);
    args.source_outcome = l2_now.clone();
    rec.revert(env.hub.reclaim(&args).await, "Channel not finalized.")
        .await;
    let r = env
        .hub
        .transfer(0, s.l2.id, &l2_now, l2_hash, &[0, 1])
        .await;
    rec.ok("transfer L(H,B) [0, 1] (hub)", TRANSFER_GAS, r);
    let report = rec.finish(&s).await;
    assert_eq!(
        report.received,
        [u(LEDGER_DEPOSIT + A0), u(LEDGER_DEPOSIT - A0), U256::ZERO],
        "the payer got a0 twice, the hub lost a0"
    );
    for c in &report.channels {
        assert_eq!(c.holdings, U256::ZERO);
    }
    report
}
