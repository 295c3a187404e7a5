//! Chain-level payment-channel scenarios, written against `Arc<dyn Chain>` only, so that the same
//! script runs on any backend (the real contracts on anvil, or the simulator) and returns a
//! [`Report`] that can be compared across backends.
//!
//! States are built by hand from the crate's primitives: `[payer, payee]` participants,
//! `VirtualPaymentApp` rules (prefund 0, postfund 1 signed by both; redemption 2 signed by the
//! payee carrying the payer's voucher; a final state signed by both for a cooperative close).

#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use alloy_primitives::{Address, B256, U256};
use payment_channel::chain::{Chain, ChainError, ChainEvent, ChannelMode, OnChainStatus, Revert};
use payment_channel::sign::{LocalSigner, Signature, Signer};
use payment_channel::state::{FixedPart, Outcome, SignedVariablePart, VariablePart};
use payment_channel::test_utils::{self, ChannelFixture};
use payment_channel::voucher::Voucher;

/// Moves the backend's clock forward by the given number of seconds (and mines a block).
pub type Advance = Arc<dyn Fn(u64) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// [`Advance`] on a simulator: moves its clock at once.
pub fn sim_advance(sim: &payment_channel::SimulatedChain) -> Advance {
    let clock = sim.clone();
    Arc::new(move |secs| {
        clock.advance_time(secs);
        Box::pin(std::future::ready(()))
    })
}

/// [`Advance`] on anvil: `evm_increaseTime` through `clock`.
#[cfg(feature = "ethereum")]
pub fn anvil_advance(clock: Arc<payment_channel::chain::EthereumChain>) -> Advance {
    Arc::new(move |secs| {
        let clock = clock.clone();
        Box::pin(async move {
            clock.increase_time(secs).await.expect("evm_increaseTime");
        })
    })
}

/// What a scenario needs from a backend.
#[derive(Clone)]
pub struct Env {
    /// Handle acting for the payer (participant 0).
    pub payer: Arc<dyn Chain>,
    /// Handle acting for the payee (participant 1).
    pub payee: Arc<dyn Chain>,
    /// The payer's signing key (its address is `payer.account()`).
    pub payer_key: LocalSigner,
    /// The payee's signing key.
    pub payee_key: LocalSigner,
    /// A key that belongs to neither participant.
    pub stranger_key: LocalSigner,
    /// `VirtualPaymentApp` address (the channels' `appDefinition`).
    pub app: Address,
    /// Time travel.
    pub advance: Advance,
}

/// Gas of one call, as the backend reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gas {
    /// Which call.
    pub call: &'static str,
    /// Gas used.
    pub gas: u64,
}

/// The end state of a scenario, comparable across backends (gas and times excluded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Channel deposit.
    pub deposit: U256,
    /// What the payer's destination received.
    pub payer_received: U256,
    /// What the payee's destination received.
    pub payee_received: U256,
    /// Holdings left in the adjudicator.
    pub holdings_after: U256,
    /// `unpackStatus` at the end (only `turn_num_record` is compared: times differ by backend).
    pub status_after: OnChainStatus,
    /// Mode at the end.
    pub mode_after: ChannelMode,
    /// Kinds of the events about the channel, in order.
    pub events: Vec<&'static str>,
    /// Reverts observed, in order.
    pub reverts: Vec<Revert>,
    /// Gas per call (not compared).
    pub gas: Vec<Gas>,
}

impl Report {
    /// The part of the report both backends must agree on.
    pub fn comparable(&self) -> (U256, U256, U256, U256, u64, ChannelMode, &[&str], &[Revert]) {
        (
            self.deposit,
            self.payer_received,
            self.payee_received,
            self.holdings_after,
            self.status_after.turn_num_record,
            self.mode_after,
            &self.events,
            &self.reverts,
        )
    }

    /// Prints the gas table.
    pub fn print_gas(&self, scenario: &str) {
        for g in &self.gas {
            println!("GAS {scenario:<28} {:<28} {:>9}", g.call, g.gas);
        }
    }
}

/// Challenge duration of every scenario channel, seconds.
pub const CHALLENGE_DURATION: u64 = 600;
/// Deposit of every scenario channel, wei.
pub const DEPOSIT: u64 = 1_000_000_000_000_000; // 0.001 ether

/// A channel between the env's payer and payee (`test_utils::PAYER_KEY` and `PAYEE_KEY`), with
/// fresh destination addresses that never send a transaction (so their balances change only by
/// payouts): a [`ChannelFixture`] seen through signed states.
pub struct TestChannel {
    /// Fixed part.
    pub fixed: FixedPart,
    /// Channel id.
    pub id: B256,
    /// Deposit.
    pub deposit: U256,
    /// Where the payer's share goes.
    pub payer_dest: Address,
    /// Where the payee's share goes.
    pub payee_dest: Address,
    fixture: ChannelFixture,
}

impl TestChannel {
    /// A channel with `nonce`.
    pub fn new(env: &Env, nonce: u64) -> Self {
        let fixture = ChannelFixture::new(env.app, nonce, CHALLENGE_DURATION, U256::from(DEPOSIT));
        assert_eq!(
            [env.payer_key.address(), env.payee_key.address()],
            [fixture.payer.address(), fixture.payee.address()],
            "the env's participants are the fixture's"
        );
        Self {
            id: fixture.channel_id(),
            fixed: fixture.fixed.clone(),
            deposit: fixture.deposit,
            payer_dest: fixture.payer_destination,
            payee_dest: fixture.payee_destination,
            fixture,
        }
    }

    /// What the adjudicator holds for the channel (in the native coin).
    pub async fn holdings(&self, env: &Env) -> U256 {
        env.payer
            .holdings(Address::ZERO, self.id)
            .await
            .expect("holdings")
    }

    /// The outcome giving the payee `paid` and the payer the rest.
    pub fn outcome(&self, paid: U256) -> Outcome {
        self.fixture.outcome(paid)
    }

    /// Signs `vp` with each of `keys`.
    pub fn sign(&self, vp: VariablePart, keys: &[&LocalSigner]) -> SignedVariablePart {
        self.fixture.sign(&vp, keys)
    }

    /// Turn 1, everything to the payer, signed by both.
    pub fn postfund(&self) -> SignedVariablePart {
        self.fixture.signed_by_both(&self.fixture.postfund())
    }

    /// A voucher for the cumulative `amount`, signed by the payer.
    pub fn voucher(&self, amount: U256) -> Voucher {
        self.fixture.voucher(amount)
    }

    /// Turn 2 redemption state for `voucher`, signed by `signer` (normally the payee).
    pub fn redemption(&self, voucher: &Voucher, signer: &LocalSigner) -> SignedVariablePart {
        self.fixture
            .sign(&self.fixture.redemption(voucher), &[signer])
    }

    /// A final state (turn 3) paying the payee `paid`, signed by both.
    pub fn final_state(&self, paid: U256) -> SignedVariablePart {
        self.fixture
            .signed_by_both(&self.fixture.final_state(3, paid))
    }

    /// The challenger signature of `signer` on `candidate`.
    pub fn challenger_sig(
        &self,
        candidate: &SignedVariablePart,
        signer: &LocalSigner,
    ) -> Signature {
        self.fixture
            .challenger_sig(signer, &candidate.variable_part)
    }

    /// `transferAllAssets` from `chain` with the outcome and the hash of the challenged `state`.
    pub async fn transfer_challenged(
        &self,
        chain: &dyn Chain,
        state: &SignedVariablePart,
    ) -> Result<payment_channel::chain::TxReceipt, ChainError> {
        let vp = &state.variable_part;
        chain
            .transfer_all_assets(self.id, &vp.outcome, vp.hash(self.id))
            .await
    }
}

/// The name of an event's kind.
pub fn event_kind(e: &ChainEvent) -> &'static str {
    match e {
        ChainEvent::Deposited { .. } => "Deposited",
        ChainEvent::ChallengeRegistered { .. } => "ChallengeRegistered",
        ChainEvent::ChallengeCleared { .. } => "ChallengeCleared",
        ChainEvent::Checkpointed { .. } => "Checkpointed",
        ChainEvent::Concluded { .. } => "Concluded",
        ChainEvent::AllocationUpdated { .. } => "AllocationUpdated",
        ChainEvent::Reclaimed { .. } => "Reclaimed",
        _ => "Other",
    }
}

/// Expects a typed revert.
pub fn expect_revert<T: std::fmt::Debug>(r: Result<T, ChainError>, expected: &Revert) -> Revert {
    let got = test_utils::expect_revert(r);
    assert_eq!(&got, expected, "wrong revert reason");
    got
}

struct Recorder {
    gas: Vec<Gas>,
    reverts: Vec<Revert>,
    start_block: u64,
    baseline: (U256, U256),
}

impl Recorder {
    async fn new(env: &Env, ch: &TestChannel) -> Self {
        Self {
            gas: Vec::new(),
            reverts: Vec::new(),
            start_block: env.payer.block_number().await.expect("block number"),
            baseline: destination_balances(env, ch).await,
        }
    }

    fn gas(
        &mut self,
        call: &'static str,
        r: Result<payment_channel::chain::TxReceipt, ChainError>,
    ) {
        let receipt = r.unwrap_or_else(|e| panic!("{call} failed: {e}"));
        self.gas.push(Gas {
            call,
            gas: receipt.gas_used,
        });
    }

    /// Expects `r` to revert with `expected`, and (on backends where blocks are mined per
    /// transaction) nothing to have been mined: reverts surface before sending.
    async fn revert<T: std::fmt::Debug>(
        &mut self,
        env: &Env,
        r: Result<T, ChainError>,
        expected: Revert,
    ) {
        let before = env.payer.block_number().await.expect("block number");
        self.reverts.push(expect_revert(r, &expected));
        let after = env.payer.block_number().await.expect("block number");
        assert_eq!(before, after, "a refused call must not be mined");
    }

    async fn finish(self, env: &Env, ch: &TestChannel) -> Report {
        let status = env.payer.status(ch.id).await.expect("status");
        let now = env.payer.now().await.expect("now");
        let events = env
            .payer
            .events(ch.id, self.start_block)
            .await
            .expect("events")
            .iter()
            .map(|r| event_kind(&r.event))
            .collect();
        let (payer_balance, payee_balance) = destination_balances(env, ch).await;
        Report {
            deposit: ch.deposit,
            payer_received: payer_balance - self.baseline.0,
            payee_received: payee_balance - self.baseline.1,
            holdings_after: ch.holdings(env).await,
            status_after: status,
            mode_after: status.mode(now),
            events,
            reverts: self.reverts,
            gas: self.gas,
        }
    }
}

/// The balances of the channel's payer and payee destinations.
async fn destination_balances(env: &Env, ch: &TestChannel) -> (U256, U256) {
    let balance = async |who| {
        env.payer
            .balance(Address::ZERO, who)
            .await
            .expect("balance")
    };
    (balance(ch.payer_dest).await, balance(ch.payee_dest).await)
}

async fn fund(env: &Env, ch: &TestChannel, rec: &mut Recorder) {
    rec.gas(
        "deposit",
        env.payer
            .deposit(Address::ZERO, ch.id, U256::ZERO, ch.deposit)
            .await,
    );
    assert_eq!(ch.holdings(env).await, ch.deposit);
}

/// Pays `n` vouchers of `step` wei each (cumulative) and returns the largest.
fn pay(ch: &TestChannel, env: &Env, n: u64, step: u64) -> Voucher {
    let payer_key = env.payer_key.public_key();
    let mut largest = None;
    for i in 1..=n {
        let v = ch.voucher(U256::from(i * step));
        assert!(v.verify(&payer_key), "payee accepts voucher {i}");
        largest = Some(v);
    }
    largest.expect("n > 0")
}

/// Scenario 1: deposit, `n` vouchers, cooperative close (conclude + transferAllAssets).
pub async fn happy_path(env: &Env, nonce: u64, n: u64) -> Report {
    let ch = TestChannel::new(env, nonce);
    let mut rec = Recorder::new(env, &ch).await;
    fund(env, &ch, &mut rec).await;
    let largest = pay(&ch, env, n, 1_000_000_000);
    let fin = ch.final_state(largest.amount);
    rec.gas("conclude", env.payee.conclude(&ch.fixed, &fin).await);
    let concluded = env.payee.status(ch.id).await.expect("status");
    assert_eq!(concluded.turn_num_record, 0);
    rec.gas(
        "transferAllAssets (concluded)",
        env.payee
            .transfer_all_assets(ch.id, &fin.variable_part.outcome, B256::ZERO)
            .await,
    );
    rec.finish(env, &ch).await
}

/// Scenario 2: the payer goes silent: the payee challenges with its largest voucher and collects it after
/// the challenge duration.
pub async fn payee_challenges(env: &Env, nonce: u64, n: u64) -> Report {
    let ch = TestChannel::new(env, nonce);
    let mut rec = Recorder::new(env, &ch).await;
    fund(env, &ch, &mut rec).await;
    let postfund = ch.postfund();
    let largest = pay(&ch, env, n, 3_000_000_000);
    let redemption = ch.redemption(&largest, &env.payee_key);
    let sig = ch.challenger_sig(&redemption, &env.payee_key);
    let t0 = env.payee.now().await.expect("now");
    rec.gas(
        "challenge (redemption)",
        env.payee
            .challenge(
                &ch.fixed,
                std::slice::from_ref(&postfund),
                &redemption,
                &sig,
            )
            .await,
    );
    let status = env.payee.status(ch.id).await.expect("status");
    assert_eq!(status.turn_num_record, 2);
    assert!(status.finalizes_at > t0 && status.finalizes_at <= t0 + CHALLENGE_DURATION + 5);
    let state_hash = redemption.variable_part.hash(ch.id);
    let outcome = redemption.variable_part.outcome.clone();
    // Too early.
    rec.revert(
        env,
        env.payee
            .transfer_all_assets(ch.id, &outcome, state_hash)
            .await,
        Revert::ChannelNotFinalized,
    )
    .await;
    (env.advance)(CHALLENGE_DURATION + 1).await;
    rec.gas(
        "transferAllAssets (challenged)",
        env.payee
            .transfer_all_assets(ch.id, &outcome, state_hash)
            .await,
    );
    let report = rec.finish(env, &ch).await;
    assert_eq!(report.payee_received, largest.amount);
    report
}

/// Scenario 3: the payee goes silent, the payer challenges with the postfund state; the payee wakes and
/// counters before the timeout, with a challenge at turn 2 (`checkpoint_first = false`) or a
/// checkpoint at turn 2 followed by its own challenge (`checkpoint_first = true`).
pub async fn payer_challenges_payee_counters(
    env: &Env,
    nonce: u64,
    checkpoint_first: bool,
) -> Report {
    let ch = TestChannel::new(env, nonce);
    let mut rec = Recorder::new(env, &ch).await;
    fund(env, &ch, &mut rec).await;
    let postfund = ch.postfund();
    let largest = pay(&ch, env, 5, 7_000_000_000);
    let sig = ch.challenger_sig(&postfund, &env.payer_key);
    rec.gas(
        "challenge (postfund)",
        env.payer.challenge(&ch.fixed, &[], &postfund, &sig).await,
    );
    assert_eq!(
        env.payer
            .status(ch.id)
            .await
            .expect("status")
            .turn_num_record,
        1
    );
    (env.advance)(CHALLENGE_DURATION / 2).await;
    let redemption = ch.redemption(&largest, &env.payee_key);
    let sig = ch.challenger_sig(&redemption, &env.payee_key);
    let proof = std::slice::from_ref(&postfund);
    if checkpoint_first {
        rec.gas(
            "checkpoint (clears)",
            env.payee.checkpoint(&ch.fixed, proof, &redemption).await,
        );
        let s = env.payee.status(ch.id).await.expect("status");
        assert_eq!((s.turn_num_record, s.finalizes_at), (2, 0));
        rec.gas(
            "challenge (redemption)",
            env.payee
                .challenge(&ch.fixed, proof, &redemption, &sig)
                .await,
        );
    } else {
        rec.gas(
            "challenge (counter)",
            env.payee
                .challenge(&ch.fixed, proof, &redemption, &sig)
                .await,
        );
    }
    assert_eq!(
        env.payee
            .status(ch.id)
            .await
            .expect("status")
            .turn_num_record,
        2
    );
    // The payer cannot go back to the postfund state.
    let back = ch.challenger_sig(&postfund, &env.payer_key);
    rec.revert(
        env,
        env.payer.challenge(&ch.fixed, &[], &postfund, &back).await,
        Revert::TurnNumRecordNotIncreased,
    )
    .await;
    (env.advance)(CHALLENGE_DURATION + 1).await;
    rec.gas(
        "transferAllAssets (challenged)",
        ch.transfer_challenged(env.payee.as_ref(), &redemption)
            .await,
    );
    let report = rec.finish(env, &ch).await;
    assert_eq!(report.payee_received, largest.amount);
    report
}

/// Scenario 4: invalid challenges and calls are refused with typed reverts, nothing is mined for them and
/// nothing is paid out by them.
pub async fn invalid_calls(env: &Env, nonce: u64) -> Report {
    let ch = TestChannel::new(env, nonce);
    let other = TestChannel::new(env, nonce + 1_000_000);
    let mut rec = Recorder::new(env, &ch).await;
    rec.revert(
        env,
        env.payer
            .deposit(Address::ZERO, ch.id, U256::from(1u8), ch.deposit)
            .await,
        Revert::HeldMismatch,
    )
    .await;
    fund(env, &ch, &mut rec).await;
    let postfund = ch.postfund();
    let voucher = ch.voucher(U256::from(5_000_000_000u64));
    let good = ch.redemption(&voucher, &env.payee_key);
    let proof = std::slice::from_ref(&postfund);
    let bob_sig = |c: &SignedVariablePart| ch.challenger_sig(c, &env.payee_key);
    let stranger = &env.stranger_key;
    let not_supported = |s: &str| Revert::NotSupported(s.to_owned());

    // Challenges with forged signatures, states of another channel, a greedy outcome: each is
    // `(proof, candidate, challenger signature, revert)`.
    let forged_redemption = ch.redemption(&voucher, stranger);
    let forged_voucher = Voucher::sign(ch.id, voucher.amount, stranger).expect("sign");
    let by_forged_voucher = ch.redemption(&forged_voucher, &env.payee_key);
    let forged_postfund = ch.sign(postfund.variable_part.clone(), &[stranger, &env.payee_key]);
    // A zero signature: `ecrecover` returns 0.
    let zero_sig = Signature {
        v: 27,
        r: B256::ZERO,
        s: B256::ZERO,
    };
    let other_postfund = other.postfund();
    let other_redemption = other.redemption(&other.voucher(voucher.amount), &env.payee_key);
    let by_other_voucher = ch.redemption(&other.voucher(voucher.amount), &env.payee_key);
    // The payee claims more than the voucher.
    let mut greedy_vp = good.variable_part.clone();
    greedy_vp.outcome = ch.outcome(voucher.amount + U256::from(1u8));
    let greedy = ch.sign(greedy_vp, &[&env.payee_key]);
    let refused_challenges = [
        (
            proof,
            &forged_redemption,
            bob_sig(&forged_redemption),
            not_supported("redemption not signed by payee"),
        ),
        (
            proof,
            &by_forged_voucher,
            bob_sig(&by_forged_voucher),
            not_supported("invalid signature for voucher"),
        ),
        (
            std::slice::from_ref(&forged_postfund),
            &good,
            bob_sig(&good),
            not_supported("postfund !unanimous; |proof|=1"),
        ),
        (
            proof,
            &good,
            ch.challenger_sig(&good, stranger),
            Revert::ChallengerNotParticipant,
        ),
        (proof, &good, zero_sig, Revert::InvalidSignature),
        (
            std::slice::from_ref(&other_postfund),
            &other_redemption,
            bob_sig(&other_redemption),
            not_supported("postfund !unanimous; |proof|=1"),
        ),
        (
            proof,
            &by_other_voucher,
            bob_sig(&by_other_voucher),
            not_supported("invalid signature for voucher"),
        ),
        (
            proof,
            &greedy,
            bob_sig(&greedy),
            not_supported("payer not adjusted correctly"),
        ),
    ];
    for (proof, candidate, sig, expected) in refused_challenges {
        rec.revert(
            env,
            env.payee.challenge(&ch.fixed, proof, candidate, &sig).await,
            expected,
        )
        .await;
    }
    // Conclude needs a final, unanimous state.
    rec.revert(
        env,
        env.payee.conclude(&ch.fixed, &good).await,
        Revert::StateMustBeFinal,
    )
    .await;
    let half_final = ch.sign(
        ch.final_state(voucher.amount).variable_part,
        &[&env.payee_key],
    );
    rec.revert(
        env,
        env.payee.conclude(&ch.fixed, &half_final).await,
        Revert::NotUnanimous,
    )
    .await;
    // Nothing happened so far.
    assert_eq!(
        env.payer.status(ch.id).await.expect("status"),
        OnChainStatus::default()
    );
    assert_eq!(ch.holdings(env).await, ch.deposit);

    // A valid challenge, then a lower turn.
    rec.gas(
        "challenge (redemption)",
        env.payee
            .challenge(&ch.fixed, proof, &good, &bob_sig(&good))
            .await,
    );
    let registered = env.payer.status(ch.id).await.expect("status");
    let pf_sig = ch.challenger_sig(&postfund, &env.payer_key);
    // The payer's challenge with the postfund, refused first for its turn, later for the time.
    let postfund_challenge = || env.payer.challenge(&ch.fixed, &[], &postfund, &pf_sig);
    rec.revert(
        env,
        postfund_challenge().await,
        Revert::TurnNumRecordNotIncreased,
    )
    .await;
    rec.revert(
        env,
        env.payer.checkpoint(&ch.fixed, &[], &postfund).await,
        Revert::TurnNumRecordNotIncreased,
    )
    .await;
    assert_eq!(env.payer.status(ch.id).await.expect("status"), registered);
    // Payout with the wrong state hash / before finalization.
    rec.revert(
        env,
        ch.transfer_challenged(env.payee.as_ref(), &good).await,
        Revert::ChannelNotFinalized,
    )
    .await;
    (env.advance)(CHALLENGE_DURATION + 1).await;
    rec.revert(env, postfund_challenge().await, Revert::ChannelFinalized)
        .await;
    rec.revert(
        env,
        ch.transfer_challenged(env.payer.as_ref(), &postfund).await,
        Revert::IncorrectFingerprint,
    )
    .await;
    // Insufficient funds are reported, not sent.
    let huge = U256::from(10u8).pow(U256::from(30u8));
    match other_deposit(env, &other, huge).await {
        Err(ChainError::InsufficientFunds { needed, available }) => {
            assert_eq!(needed, huge);
            assert!(available < huge);
        }
        r => panic!("expected InsufficientFunds, got {r:?}"),
    }
    // Nothing was paid out.
    rec.finish(env, &ch).await
}

async fn other_deposit(
    env: &Env,
    ch: &TestChannel,
    amount: U256,
) -> Result<payment_channel::chain::TxReceipt, ChainError> {
    env.payer
        .deposit(Address::ZERO, ch.id, U256::ZERO, amount)
        .await
}
