//! The simulated adjudicator against the Nitro v2 rules (`@statechannels/nitro-protocol@2.0.1-alpha.6`):
//! each rule's happy path and every revert, then the chain-level scenarios of `test_utils` that
//! the Ethereum backend also runs against the real contracts.

use std::sync::Arc;

use payment_channel::chain::sim::{DEFAULT_ADJUDICATOR_ADDRESS, SimError};
use payment_channel::chain::{
    Chain, ChainError, ChainEvent, ChannelMode, OnChainStatus, Revert, fingerprint,
};
use payment_channel::sign::Signer;
use payment_channel::state::{
    Allocation, MAX_UINT48, SignedVariablePart, SingleAssetExit, VariablePart,
    address_to_destination, hash_outcome,
};
use payment_channel::test_utils::*;
use payment_channel::{
    Address, B256, Bytes, SimulatedChain, SimulatedChainHandle, TokenBehaviour, U256,
};

const PANIC_OVERFLOW: &str = "panic: arithmetic underflow or overflow (0x11)";

fn eth() -> U256 {
    U256::from(10u64).pow(U256::from(18))
}

fn wei(n: u64) -> U256 {
    U256::from(n)
}

struct Env {
    sim: SimulatedChain,
    f: ChannelFixture,
    payer: SimulatedChainHandle,
    payee: SimulatedChainHandle,
}

impl Env {
    fn id(&self) -> B256 {
        self.f.channel_id()
    }

    fn postfund(&self) -> SignedVariablePart {
        self.f.signed_by_both(&self.f.postfund())
    }

    /// The payee's redemption challenge arguments for a voucher of `amount`.
    fn redemption(&self, amount: u64) -> (VariablePart, SignedVariablePart) {
        let state = self.f.redemption(&self.f.voucher(wei(amount)));
        let signed = self.f.sign(&state, &[&self.f.payee]);
        (state, signed)
    }

    /// The payee signs `state` and challenges with it over the postfund: the revert.
    async fn payee_redemption_refused(&self, state: &VariablePart) -> Revert {
        let candidate = self.f.sign(state, &[&self.f.payee]);
        reverted(
            self.challenge_by_payee(&[self.postfund()], &candidate)
                .await,
        )
    }

    async fn challenge_by_payee(
        &self,
        proof: &[SignedVariablePart],
        candidate: &SignedVariablePart,
    ) -> Result<payment_channel::chain::TxReceipt, ChainError> {
        let sig = self
            .f
            .challenger_sig(&self.f.payee, &candidate.variable_part);
        self.payee
            .challenge(&self.f.fixed, proof, candidate, &sig)
            .await
    }

    async fn challenge_postfund(&self) -> Result<payment_channel::chain::TxReceipt, ChainError> {
        self.challenge_by_payee(&[], &self.postfund()).await
    }

    async fn challenge_redemption(
        &self,
        amount: u64,
    ) -> Result<payment_channel::chain::TxReceipt, ChainError> {
        let (_, candidate) = self.redemption(amount);
        self.challenge_by_payee(&[self.postfund()], &candidate)
            .await
    }

    /// `by` checkpoints the payee's redemption of a voucher of `amount` over the postfund.
    async fn checkpoint_redemption(
        &self,
        by: &SimulatedChainHandle,
        amount: u64,
    ) -> Result<payment_channel::chain::TxReceipt, ChainError> {
        let (_, candidate) = self.redemption(amount);
        by.checkpoint(&self.f.fixed, &[self.postfund()], &candidate)
            .await
    }

    /// The payee pays this channel out with `outcome`, its state hash given as `state_hash`.
    async fn payee_transfer(
        &self,
        outcome: &[SingleAssetExit],
        state_hash: B256,
    ) -> Result<payment_channel::chain::TxReceipt, ChainError> {
        self.payee
            .transfer_all_assets(self.id(), outcome, state_hash)
            .await
    }

    /// Concludes with a final state paying `paid` and returns its outcome.
    async fn conclude(&self, paid: u64) -> Vec<SingleAssetExit> {
        let state = self.f.final_state(5, wei(paid));
        self.payee
            .conclude(&self.f.fixed, &self.f.signed_by_both(&state))
            .await
            .unwrap();
        state.outcome
    }
}

/// A chain with funded participants and a channel (nonce 7, 100 s, 1000 wei), not yet deposited.
fn env_with(challenge_duration: u64, app: Option<Address>) -> Env {
    let sim = SimulatedChain::new();
    let f = ChannelFixture::new(
        app.unwrap_or_else(|| sim.app_definition()),
        7,
        challenge_duration,
        wei(1000),
    );
    sim.fund(f.payer.address(), eth()).unwrap();
    sim.fund(f.payee.address(), eth()).unwrap();
    let payer = sim.handle(f.payer.address());
    let payee = sim.handle(f.payee.address());
    Env {
        sim,
        f,
        payer,
        payee,
    }
}

fn env() -> Env {
    env_with(100, None)
}

/// [`env`] with the deposit made.
async fn funded() -> Env {
    let e = env();
    e.payer
        .deposit(Address::ZERO, e.id(), U256::ZERO, wei(1000))
        .await
        .unwrap();
    e
}

fn reverted<T: std::fmt::Debug>(r: Result<T, ChainError>) -> Revert {
    expect_revert(r)
}

/// Asserts that `r` is the revert `want`.
#[track_caller]
fn assert_reverted<T: std::fmt::Debug>(r: Result<T, ChainError>, want: Revert) {
    assert_eq!(reverted(r), want);
}

fn other(reason: &str) -> Revert {
    Revert::Other(reason.to_owned())
}

fn is_silent(r: &Revert) -> bool {
    matches!(r, Revert::Other(s) if s.starts_with("no reason:"))
}

// ---------------------------------------------------------------- deposit

#[tokio::test]
async fn deposit_debits_sender_and_credits_holdings() {
    let e = env();
    let id = e.id();
    let r = e
        .payer
        .deposit(Address::ZERO, id, U256::ZERO, wei(600))
        .await
        .unwrap();
    assert_eq!(r.block_number, 1);
    assert_eq!(r.block_timestamp, e.sim.now());
    assert_eq!(r.gas_used, 0);
    e.payee
        .deposit(Address::ZERO, id, wei(600), wei(400))
        .await
        .unwrap();
    assert_eq!(
        e.payer.holdings(Address::ZERO, id).await.unwrap(),
        wei(1000)
    );
    assert_eq!(e.sim.balance_of(e.f.payer.address()), eth() - wei(600));
    assert_eq!(e.sim.balance_of(e.f.payee.address()), eth() - wei(400));
    assert_eq!(e.sim.balance_of(DEFAULT_ADJUDICATOR_ADDRESS), wei(1000));
    let events = e.payer.events(id, 0).await.unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(
        events[1].event,
        ChainEvent::Deposited {
            channel_id: id,
            asset: Address::ZERO,
            holdings: wei(1000)
        }
    );
    assert_eq!(events[1].block_number, 2);
}

#[tokio::test]
async fn deposit_requires_expected_held() {
    let e = funded().await;
    let block = e.sim.block_number();
    for expected_held in [U256::ZERO, wei(2000)] {
        assert_reverted(
            e.payer
                .deposit(Address::ZERO, e.id(), expected_held, wei(1))
                .await,
            Revert::HeldMismatch,
        );
    }
    assert_eq!(e.sim.block_number(), block, "a revert mines no block");
    assert_eq!(e.sim.holdings_of(e.id()), wei(1000));
    assert_eq!(e.sim.balance_of(e.f.payer.address()), eth() - wei(1000));
}

#[tokio::test]
async fn deposit_to_external_destination_reverts() {
    let e = env();
    let external = address_to_destination(e.f.payee.address());
    assert_reverted(
        e.payer
            .deposit(Address::ZERO, external, U256::ZERO, wei(1))
            .await,
        other("Deposit to external destination"),
    );
}

#[tokio::test]
async fn deposit_beyond_balance_is_insufficient_funds() {
    let e = env();
    let err = e
        .payer
        .deposit(Address::ZERO, e.id(), U256::ZERO, eth() + wei(1))
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        ChainError::InsufficientFunds { needed, available } if needed == eth() + wei(1) && available == eth()
    ));
    assert_eq!(e.sim.holdings_of(e.id()), U256::ZERO);
}

#[tokio::test]
async fn deposit_overflowing_holdings_panics() {
    let e = env();
    let whale = Address::repeat_byte(0x77);
    e.sim.fund(whale, U256::MAX).unwrap();
    e.sim
        .handle(whale)
        .deposit(Address::ZERO, e.id(), U256::ZERO, U256::MAX - wei(1))
        .await
        .unwrap();
    assert_reverted(
        e.payer
            .deposit(Address::ZERO, e.id(), U256::MAX - wei(1), wei(2))
            .await,
        other(PANIC_OVERFLOW),
    );
}

// ---------------------------------------------------------------- challenge

#[tokio::test]
async fn challenge_registers_status_and_event() {
    let e = funded().await;
    let id = e.id();
    let postfund = e.postfund();
    let r = e.challenge_postfund().await.unwrap();
    let state_hash = e.f.postfund().hash(id);
    let status = e.sim.status_of(id);
    assert_eq!(
        status,
        OnChainStatus {
            turn_num_record: 1,
            finalizes_at: r.block_timestamp + 100,
            fingerprint: fingerprint(state_hash, hash_outcome(&e.f.postfund().outcome)),
        }
    );
    assert_eq!(status.mode(e.sim.now()), ChannelMode::Challenge);
    let events = e.payee.events(id, r.block_number).await.unwrap();
    assert_eq!(
        events[0].event,
        ChainEvent::ChallengeRegistered {
            channel_id: id,
            finalizes_at: r.block_timestamp + 100,
            proof: vec![],
            candidate: postfund,
        }
    );
    e.sim.advance_time(100);
    assert_eq!(
        e.sim.status_of(id).mode(e.sim.now()),
        ChannelMode::Finalized
    );
}

#[tokio::test]
async fn challenge_with_unanimous_prefund_is_supported() {
    let e = funded().await;
    let prefund = e.f.signed_by_both(&e.f.prefund());
    e.challenge_by_payee(&[], &prefund).await.unwrap();
    assert_eq!(e.sim.status_of(e.id()).turn_num_record, 0);
}

#[tokio::test]
async fn challenge_in_open_mode_rejects_a_decreased_turn_but_allows_equal() {
    let e = funded().await;
    e.checkpoint_redemption(&e.payee, 300).await.unwrap();
    assert_reverted(e.challenge_postfund().await, Revert::TurnNumRecordDecreased);
    e.challenge_redemption(300).await.unwrap();
    assert_eq!(e.sim.status_of(e.id()).turn_num_record, 2);
}

#[tokio::test]
async fn challenge_in_challenge_mode_requires_an_increased_turn() {
    let e = funded().await;
    e.challenge_postfund().await.unwrap();
    assert_reverted(
        e.challenge_postfund().await,
        Revert::TurnNumRecordNotIncreased,
    );
    e.challenge_redemption(300).await.unwrap();
    assert_reverted(
        e.challenge_redemption(400).await,
        Revert::TurnNumRecordNotIncreased,
    );
}

#[tokio::test]
async fn challenge_after_finalization_reverts() {
    let e = funded().await;
    e.challenge_postfund().await.unwrap();
    e.sim.advance_time(100);
    assert_reverted(e.challenge_redemption(300).await, Revert::ChannelFinalized);
}

#[tokio::test]
async fn challenger_must_be_a_participant() {
    let e = funded().await;
    let postfund = e.postfund();
    let by_stranger = e.f.challenger_sig(&e.f.stranger, &postfund.variable_part);
    // A participant's signature over another state is someone else's signature here.
    let over_another_state = e.f.challenger_sig(&e.f.payee, &e.f.prefund());
    for sig in [by_stranger, over_another_state] {
        assert_reverted(
            e.payee.challenge(&e.f.fixed, &[], &postfund, &sig).await,
            Revert::ChallengerNotParticipant,
        );
    }
    assert_eq!(e.sim.status_of(e.id()), OnChainStatus::default());
}

#[tokio::test]
async fn unrecoverable_signatures_revert_invalid_signature() {
    let e = funded().await;
    let postfund = e.postfund();
    let mut sig = e.f.challenger_sig(&e.f.payee, &postfund.variable_part);
    sig.v = 0;
    assert_reverted(
        e.payee.challenge(&e.f.fixed, &[], &postfund, &sig).await,
        Revert::InvalidSignature,
    );
    let mut bad = e.postfund();
    bad.sigs[1].r = B256::ZERO;
    assert_reverted(
        e.challenge_by_payee(&[], &bad).await,
        Revert::InvalidSignature,
    );
}

#[tokio::test]
async fn high_s_signatures_recover_like_ecrecover() {
    // secp256k1 order n; (r, n - s, v ^ 1) recovers the same key.
    let n = U256::from_str_radix(
        "fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141",
        16,
    )
    .unwrap();
    let e = funded().await;
    let mut postfund = e.postfund();
    for sig in &mut postfund.sigs {
        let s = U256::from_be_bytes(sig.s.0);
        sig.s = B256::from((n - s).to_be_bytes::<32>());
        sig.v = if sig.v == 27 { 28 } else { 27 };
    }
    e.challenge_by_payee(&[], &postfund).await.unwrap();
}

#[tokio::test]
async fn unknown_app_definition_reverts_like_a_call_to_no_contract() {
    let e = env_with(100, Some(Address::repeat_byte(0xab)));
    let r = reverted(e.challenge_postfund().await);
    assert!(is_silent(&r), "{r:?}");
    // The adjudicator itself is not the app either.
    let e = env_with(100, Some(DEFAULT_ADJUDICATOR_ADDRESS));
    assert!(is_silent(&reverted(e.challenge_postfund().await)));
}

#[tokio::test]
async fn challenge_deadline_overflowing_uint48_panics() {
    let e = env_with(MAX_UINT48, None);
    assert_reverted(e.challenge_postfund().await, other(PANIC_OVERFLOW));
}

#[tokio::test]
async fn asset_type_outside_the_enum_fails_calldata_decoding() {
    let e = funded().await;
    let mut state = e.f.postfund();
    state.outcome[0].asset_metadata.asset_type = 4;
    let r = reverted(e.challenge_by_payee(&[], &e.f.signed_by_both(&state)).await);
    assert!(is_silent(&r), "{r:?}");
}

// ---------------------------------------------------------------- VirtualPaymentApp.stateIsSupported

/// A challenge by the payee: the proof and the candidate it signed.
type Challenge = (Vec<SignedVariablePart>, SignedVariablePart);

/// A labelled unsupported challenge, built on a funded [`Env`], and its revert reason.
type RefusedCase = (&'static str, fn(&Env) -> Challenge, &'static str);

/// The payee signs `state` and would challenge with it over the postfund (see
/// [`Env::payee_redemption_refused`]).
fn payee_redemption(e: &Env, state: &VariablePart) -> Challenge {
    (vec![e.postfund()], e.f.sign(state, &[&e.f.payee]))
}

/// A redemption of a 300 wei voucher, with `edit` applied to the state.
fn edited_redemption(e: &Env, edit: fn(&mut VariablePart)) -> Challenge {
    let mut state = e.f.redemption(&e.f.voucher(wei(300)));
    edit(&mut state);
    payee_redemption(e, &state)
}

/// Every challenge `VirtualPaymentApp` does not support, each on a freshly funded channel, with
/// its revert reason.
#[tokio::test]
async fn app_refuses_unsupported_challenges() {
    let cases: [RefusedCase; 16] = [
        // Without a proof the candidate needs unanimity...
        (
            "without proof, signed by the payer only",
            |e| (vec![], e.f.sign(&e.f.postfund(), &[&e.f.payer])),
            "!unanimous; |proof|=0",
        ),
        // ...and the same signer twice sets one bit.
        (
            "without proof, signed twice by the payer",
            |e| (vec![], e.f.sign(&e.f.postfund(), &[&e.f.payer, &e.f.payer])),
            "!unanimous; |proof|=0",
        ),
        // Without a proof only turns 0 and 1 are supported.
        (
            "without proof, a redemption signed by both",
            |e| (vec![], e.f.signed_by_both(&e.redemption(300).0)),
            "bad candidate turnNum; |proof|=0",
        ),
        // The proof must be the unanimous postfund.
        (
            "the prefund as proof",
            |e| {
                (
                    vec![e.f.signed_by_both(&e.f.prefund())],
                    e.redemption(300).1,
                )
            },
            "bad proof[0].turnNum; |proof|=1",
        ),
        (
            "a postfund signed by the payee only as proof",
            |e| {
                (
                    vec![e.f.sign(&e.f.postfund(), &[&e.f.payee])],
                    e.redemption(300).1,
                )
            },
            "postfund !unanimous; |proof|=1",
        ),
        // After the postfund the candidate must be turn 2.
        (
            "a redemption at turn 3",
            |e| edited_redemption(e, |s| s.turn_num = 3),
            "bad candidate turnNum; |proof|=1",
        ),
        (
            "a redemption signed by the payer",
            |e| {
                (
                    vec![e.postfund()],
                    e.f.sign(&e.redemption(300).0, &[&e.f.payer]),
                )
            },
            "redemption not signed by payee",
        ),
        // The voucher must be signed by alice for this channel.
        (
            "a voucher signed by a stranger",
            |e| {
                let forged = e.f.voucher_signed_by(wei(300), &e.f.stranger);
                payee_redemption(e, &e.f.redemption(&forged))
            },
            "invalid signature for voucher",
        ),
        (
            "a voucher of another channel",
            |e| {
                let other = ChannelFixture::new(e.sim.app_definition(), 8, 100, wei(1000));
                let mut foreign = other.voucher(wei(300));
                foreign.channel_id = e.id();
                payee_redemption(e, &e.f.redemption(&foreign))
            },
            "invalid signature for voucher",
        ),
        // The one asset of the postfund is kept.
        (
            "another asset",
            |e| edited_redemption(e, |s| s.outcome[0].asset = Address::repeat_byte(0x70)),
            "asset changed",
        ),
        (
            "two exits",
            |e| edited_redemption(e, |s| s.outcome.push(s.outcome[0].clone())),
            "one asset only",
        ),
        // Both adjustments are checked.
        (
            "the payer's amount off",
            |e| edited_redemption(e, |s| s.outcome[0].allocations[0].amount = wei(701)),
            "payer not adjusted correctly",
        ),
        (
            "the payee's amount off",
            |e| edited_redemption(e, |s| s.outcome[0].allocations[1].amount = wei(299)),
            "payee not adjusted correctly",
        ),
        // Longer proofs are refused.
        (
            "two postfunds as proof",
            |e| (vec![e.postfund(), e.postfund()], e.redemption(300).1),
            "bad proof length",
        ),
        // Bounds are checked before arithmetic: a voucher above the payer's postfund allocation
        // is refused before any subtraction...
        (
            "a voucher above the payer's amount",
            |e| (vec![e.postfund()], e.redemption(1001).1),
            "voucher above payer's amount",
        ),
        // ...and a one-allocation outcome before any allocation is read.
        (
            "one allocation",
            |e| {
                let mut state = e.f.redemption(&e.f.voucher(wei(0)));
                state.outcome[0].allocations.truncate(1);
                payee_redemption(e, &state)
            },
            "allocation count changed",
        ),
    ];
    for (label, challenge, reason) in cases {
        let e = funded().await;
        let (proof, candidate) = challenge(&e);
        assert_eq!(
            reverted(e.challenge_by_payee(&proof, &candidate).await),
            revert(reason),
            "{label}"
        );
    }
}

#[tokio::test]
async fn app_voucher_app_data_must_decode() {
    let e = funded().await;
    let voucher = e.f.voucher(wei(300));
    for app_data in [
        Bytes::new(),
        Bytes::from(voucher.app_data()[..127].to_vec()),
        {
            let mut d = voucher.app_data().to_vec();
            d[62] = 1; // v's word no longer fits in uint8
            Bytes::from(d)
        },
    ] {
        let mut state = e.f.redemption(&voucher);
        state.app_data = app_data;
        let r = e.payee_redemption_refused(&state).await;
        assert!(is_silent(&r), "{r:?}");
    }
    // Trailing bytes are ignored by abi.decode.
    let mut state = e.f.redemption(&voucher);
    let mut d = voucher.app_data().to_vec();
    d.extend_from_slice(&[0xee; 7]);
    state.app_data = Bytes::from(d);
    let candidate = e.f.sign(&state, &[&e.f.payee]);
    e.challenge_by_payee(&[e.postfund()], &candidate)
        .await
        .unwrap();
}

// ---------------------------------------------------------------- checkpoint

#[tokio::test]
async fn checkpoint_in_open_mode_records_turn() {
    let e = funded().await;
    let r = e.checkpoint_redemption(&e.payer, 300).await.unwrap();
    assert_eq!(
        e.sim.status_of(e.id()),
        OnChainStatus {
            turn_num_record: 2,
            finalizes_at: 0,
            // `_generateStatus(ChannelData(turn, 0, 0, 0))`: the fingerprint of two zero hashes.
            fingerprint: fingerprint(B256::ZERO, B256::ZERO),
        }
    );
    assert_ne!(fingerprint(B256::ZERO, B256::ZERO), [0u8; 20]);
    let events = e.payer.events(e.id(), r.block_number).await.unwrap();
    assert_eq!(
        events[0].event,
        ChainEvent::Checkpointed {
            channel_id: e.id(),
            new_turn_num_record: 2
        }
    );
}

#[tokio::test]
async fn checkpoint_clears_a_challenge() {
    let e = funded().await;
    e.challenge_postfund().await.unwrap();
    let r = e.checkpoint_redemption(&e.payee, 300).await.unwrap();
    let status = e.sim.status_of(e.id());
    assert_eq!(status.mode(e.sim.now()), ChannelMode::Open);
    assert_eq!(status.turn_num_record, 2);
    let events = e.payer.events(e.id(), r.block_number).await.unwrap();
    assert_eq!(
        events[0].event,
        ChainEvent::ChallengeCleared {
            channel_id: e.id(),
            new_turn_num_record: 2
        }
    );
}

#[tokio::test]
async fn checkpoint_requires_increase_support_and_no_finalization() {
    let e = funded().await;
    // turnNumRecord is 0 on a fresh channel: turn 0 is not an increase.
    let prefund = e.f.signed_by_both(&e.f.prefund());
    assert_reverted(
        e.payee.checkpoint(&e.f.fixed, &[], &prefund).await,
        Revert::TurnNumRecordNotIncreased,
    );
    let half = e.f.sign(&e.f.postfund(), &[&e.f.payer]);
    assert_reverted(
        e.payee.checkpoint(&e.f.fixed, &[], &half).await,
        revert("!unanimous; |proof|=0"),
    );
    e.challenge_postfund().await.unwrap();
    e.sim.advance_time(100);
    assert_reverted(
        e.checkpoint_redemption(&e.payee, 300).await,
        Revert::ChannelFinalized,
    );
}

// ---------------------------------------------------------------- conclude

#[tokio::test]
async fn conclude_finalizes_now_with_the_outcome_fingerprint() {
    let e = funded().await;
    e.challenge_postfund().await.unwrap(); // conclude also ends a running challenge
    let state = e.f.final_state(9, wei(300));
    let r = e
        .payer
        .conclude(&e.f.fixed, &e.f.signed_by_both(&state))
        .await
        .unwrap();
    let status = e.sim.status_of(e.id());
    assert_eq!(
        status,
        OnChainStatus {
            turn_num_record: 0,
            finalizes_at: r.block_timestamp,
            fingerprint: fingerprint(B256::ZERO, hash_outcome(&state.outcome)),
        }
    );
    assert_eq!(status.mode(e.sim.now()), ChannelMode::Finalized);
    let events = e.payer.events(e.id(), r.block_number).await.unwrap();
    assert_eq!(
        events[0].event,
        ChainEvent::Concluded {
            channel_id: e.id(),
            finalizes_at: r.block_timestamp
        }
    );
}

#[tokio::test]
async fn conclude_requires_final_unanimous_unfinalized() {
    let e = funded().await;
    let not_final = e.f.signed_by_both(&e.f.postfund());
    assert_reverted(
        e.payer.conclude(&e.f.fixed, &not_final).await,
        Revert::StateMustBeFinal,
    );
    let state = e.f.final_state(9, wei(300));
    let half = e.f.sign(&state, &[&e.f.payee]);
    assert_reverted(
        e.payer.conclude(&e.f.fixed, &half).await,
        Revert::NotUnanimous,
    );
    let with_stranger = e.f.sign(&state, &[&e.f.payee, &e.f.stranger]);
    assert_reverted(
        e.payer.conclude(&e.f.fixed, &with_stranger).await,
        Revert::NotUnanimous,
    );
    let mut broken = e.f.signed_by_both(&state);
    broken.sigs[0].v = 30;
    assert_reverted(
        e.payer.conclude(&e.f.fixed, &broken).await,
        Revert::InvalidSignature,
    );
    e.conclude(300).await;
    assert_reverted(
        e.payer
            .conclude(&e.f.fixed, &e.f.signed_by_both(&state))
            .await,
        Revert::ChannelFinalized,
    );
}

#[tokio::test]
async fn conclude_does_not_consult_the_app() {
    let e = env_with(100, Some(Address::repeat_byte(0xab)));
    e.conclude(300).await;
    assert_eq!(
        e.sim.status_of(e.id()).mode(e.sim.now()),
        ChannelMode::Finalized
    );
}

// ---------------------------------------------------------------- transferAllAssets

#[tokio::test]
async fn transfer_requires_finalization() {
    let e = funded().await;
    let outcome = e.f.postfund().outcome;
    assert_reverted(
        e.payee_transfer(&outcome, B256::ZERO).await,
        Revert::ChannelNotFinalized,
    );
    e.challenge_postfund().await.unwrap();
    e.sim.advance_time(99);
    assert_reverted(
        e.payee_transfer(&outcome, e.f.postfund().hash(e.id()))
            .await,
        Revert::ChannelNotFinalized,
    );
}

#[tokio::test]
async fn transfer_requires_the_stored_fingerprint() {
    let e = funded().await;
    let outcome = e.conclude(300).await;
    let wrong_outcome = e.f.outcome(wei(301));
    assert_reverted(
        e.payee_transfer(&wrong_outcome, B256::ZERO).await,
        Revert::IncorrectFingerprint,
    );
    assert_reverted(
        e.payee_transfer(&outcome, B256::repeat_byte(1)).await,
        Revert::IncorrectFingerprint,
    );
    e.payee_transfer(&outcome, B256::ZERO).await.unwrap();
}

#[tokio::test]
async fn transfer_pays_in_order_while_holdings_last_and_stores_the_rest() {
    let e = env();
    let id = e.id();
    e.payer
        .deposit(Address::ZERO, id, U256::ZERO, wei(500))
        .await
        .unwrap();
    let outcome = e.conclude(300).await; // [700, 300]
    let before = e.sim.status_of(id);
    let r = e
        .payee
        .transfer_all_assets(id, &outcome, B256::ZERO)
        .await
        .unwrap();
    assert_eq!(e.sim.balance_of(e.f.payer_destination), wei(500));
    assert_eq!(e.sim.balance_of(e.f.payee_destination), wei(0));
    assert_eq!(e.sim.holdings_of(id), U256::ZERO);
    // [700, 300] with 500 held: the payer's 500 is paid, [200, 300] is left.
    let mut left = outcome.clone();
    left[0].allocations[0].amount = wei(200);
    assert_eq!(
        e.sim.status_of(id),
        OnChainStatus {
            fingerprint: fingerprint(B256::ZERO, hash_outcome(&left)),
            ..before
        }
    );
    let events = e.payee.events(id, r.block_number).await.unwrap();
    assert_eq!(
        events[0].event,
        ChainEvent::AllocationUpdated {
            channel_id: id,
            asset_index: 0,
            initial_holdings: wei(500),
            final_holdings: wei(0)
        }
    );
    // The original outcome no longer matches; topping up (deposit does not check the mode) and
    // paying the remaining outcome finishes the payout and deletes the status.
    assert_reverted(
        e.payee.transfer_all_assets(id, &outcome, B256::ZERO).await,
        Revert::IncorrectFingerprint,
    );
    e.payer
        .deposit(Address::ZERO, id, U256::ZERO, wei(500))
        .await
        .unwrap();
    e.payee
        .transfer_all_assets(id, &left, B256::ZERO)
        .await
        .unwrap();
    assert_eq!(e.sim.balance_of(e.f.payer_destination), wei(700));
    assert_eq!(e.sim.balance_of(e.f.payee_destination), wei(300));
    assert_eq!(e.sim.status_of(id), OnChainStatus::default());
    assert_eq!(e.sim.balance_of(DEFAULT_ADJUDICATOR_ADDRESS), U256::ZERO);
}

/// Concludes `e`'s channel with a hand-made outcome and returns it.
async fn conclude_with(e: &Env, outcome: Vec<SingleAssetExit>) -> Vec<SingleAssetExit> {
    let state = VariablePart {
        outcome,
        app_data: Bytes::new(),
        turn_num: 4,
        is_final: true,
    };
    e.payee
        .conclude(&e.f.fixed, &e.f.signed_by_both(&state))
        .await
        .unwrap();
    state.outcome
}

/// Concludes with `outcome` ([`conclude_with`]), then the payee pays it out.
async fn conclude_and_transfer(
    e: &Env,
    outcome: Vec<SingleAssetExit>,
) -> Result<payment_channel::chain::TxReceipt, ChainError> {
    let outcome = conclude_with(e, outcome).await;
    e.payee_transfer(&outcome, B256::ZERO).await
}

#[tokio::test]
async fn transfer_refuses_guarantees() {
    let e = funded().await;
    let mut outcome = e.f.outcome(wei(300));
    outcome[0].allocations[1].allocation_type = 2;
    assert_reverted(
        conclude_and_transfer(&e, outcome).await,
        other("cannot transfer a guarantee"),
    );
}

#[tokio::test]
async fn transfer_to_a_channel_destination_credits_its_holdings() {
    let e = funded().await;
    let target = B256::repeat_byte(0xcc);
    let mut outcome = e.f.outcome(wei(300));
    outcome[0].allocations[1].destination = target;
    conclude_and_transfer(&e, outcome).await.unwrap();
    assert_eq!(e.sim.holdings_of(target), wei(300));
    assert_eq!(e.sim.balance_of(e.f.payer_destination), wei(700));
    assert_eq!(e.sim.balance_of(DEFAULT_ADJUDICATOR_ADDRESS), wei(300));
}

#[tokio::test]
async fn transfer_to_a_contract_without_receive_fails() {
    let e = funded().await;
    let mut outcome = e.f.outcome(wei(300));
    outcome[0].allocations[1] = Allocation::simple(e.sim.app_definition(), wei(300));
    assert_reverted(
        conclude_and_transfer(&e, outcome).await,
        other("Could not transfer ETH"),
    );
    assert_eq!(e.sim.holdings_of(e.id()), wei(1000), "the revert is atomic");
}

#[tokio::test]
async fn transfer_of_a_token_reverts_without_a_token_contract() {
    let e = funded().await;
    let mut outcome = e.f.outcome(wei(300));
    let mut token = outcome[0].clone();
    token.asset = Address::repeat_byte(0x70);
    outcome.push(token);
    let r = reverted(conclude_and_transfer(&e, outcome).await);
    assert!(is_silent(&r), "{r:?}");
    assert_eq!(e.sim.holdings_of(e.id()), wei(1000));
}

#[tokio::test]
async fn transfer_of_a_duplicated_asset_overdraws_and_panics() {
    let e = funded().await;
    let mut outcome = e.f.outcome(wei(300));
    outcome.push(outcome[0].clone());
    assert_reverted(
        conclude_and_transfer(&e, outcome).await,
        other(PANIC_OVERFLOW),
    );
}

// ---------------------------------------------------------------- events and clock

#[tokio::test]
async fn events_filter_by_channel_and_block() {
    let e = funded().await;
    let other_id = B256::repeat_byte(0x99);
    e.payer
        .deposit(Address::ZERO, other_id, U256::ZERO, wei(1))
        .await
        .unwrap();
    let r = e.challenge_postfund().await.unwrap();
    let all = e.payer.events(e.id(), 0).await.unwrap();
    assert_eq!(all.len(), 2);
    assert!(all.iter().all(|rec| rec.event.channel_id() == e.id()));
    let late = e.payer.events(e.id(), r.block_number).await.unwrap();
    assert_eq!(late.len(), 1);
    assert_eq!(late[0].log_index, 0);
    assert!(
        e.payer
            .events(e.id(), r.block_number + 1)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(e.sim.all_events().len(), 3);
}

#[tokio::test]
async fn clock_moves_forward_only_and_mines_blocks() {
    let e = env();
    let t0 = e.sim.now();
    assert_eq!(e.sim.advance_time(10), t0 + 10);
    assert_eq!(e.sim.block_number(), 1);
    assert_eq!(e.payer.now().await.unwrap(), t0 + 10);
    assert_eq!(
        e.sim.set_time(t0),
        Err(SimError::TimeWentBackwards {
            now: t0 + 10,
            requested: t0
        })
    );
    e.sim.set_time(t0 + 50).unwrap();
    assert_eq!(e.payer.block_number().await.unwrap(), 2);
    assert_eq!(e.sim.now(), t0 + 50);
    assert_eq!(
        e.sim.fund(e.f.payer.address(), U256::MAX),
        Err(SimError::BalanceOverflow {
            address: e.f.payer.address()
        })
    );
}

// ---------------------------------------------------------------- scenarios (shared with the Ethereum backend)

fn sim_env(nonce: u64) -> (SimulatedChain, ScenarioConfig) {
    let sim = SimulatedChain::new();
    for key in [PAYER_KEY, PAYEE_KEY] {
        sim.fund(signer(key).address(), eth()).unwrap();
    }
    let config = ScenarioConfig::new(sim.app_definition(), nonce);
    (sim, config)
}

/// The same scenario run with the deposit in a (standard) ERC-20 held by the payer.
fn sim_token_env(nonce: u64) -> (SimulatedChain, ScenarioConfig) {
    let (sim, mut config) = sim_env(nonce);
    let token = sim.deploy_token(TokenBehaviour::Standard, 6);
    sim.mint(token, signer(PAYER_KEY).address(), eth()).unwrap();
    config.asset = token;
    (sim, config)
}

macro_rules! run_scenario {
    ($name:ident) => {
        run_scenario!($name, sim_env)
    };
    ($name:ident, $env:ident) => {{
        let (sim, config) = $env(42);
        let chain_for = |a: Address| Arc::new(sim.handle(a)) as Arc<dyn Chain>;
        let advance = |secs: u64| {
            sim.advance_time(secs);
            std::future::ready(())
        };
        Scenario::new(chain_for, advance, config).$name().await
    }};
}

#[tokio::test]
async fn scenario_e_forged_redemptions_are_refused() {
    run_scenario!(forged_redemptions);
}

#[tokio::test]
async fn scenarios_in_an_erc20() {
    run_scenario!(conclude, sim_token_env);
    run_scenario!(payee_redeems, sim_token_env);
    run_scenario!(payee_counters_stale_challenge, sim_token_env);
    run_scenario!(forged_redemptions, sim_token_env);
}

/// The flaw that made this crate write its own app, kept as a test: on `VirtualPaymentApp`, one
/// 1-unit voucher lets the payee take the whole deposit.
#[tokio::test]
async fn virtual_payment_app_lets_a_payee_take_the_whole_deposit() {
    let (sim, mut config) = sim_env(43);
    let vpa = Address::repeat_byte(0x77);
    sim.install_virtual_payment_app(vpa);
    config.app_definition = vpa;
    config.voucher_amount = wei(1);
    let chain_for = |a: Address| Arc::new(sim.handle(a)) as Arc<dyn Chain>;
    let advance = |secs: u64| {
        sim.advance_time(secs);
        std::future::ready(())
    };
    let taken = Scenario::new(chain_for, advance, config.clone())
        .virtual_payment_app_theft()
        .await;
    assert_eq!(taken, config.deposit);
    assert_ne!(
        sim.code_hash(vpa),
        payment_channel::app::PAYMENT_APP_RUNTIME_HASH
    );
    assert_eq!(
        sim.code_hash(sim.app_definition()),
        payment_channel::app::PAYMENT_APP_RUNTIME_HASH
    );
}

#[tokio::test]
async fn erc20_deposits_follow_the_token_and_leave_nothing_on_failure() {
    let sim = SimulatedChain::new();
    let payer = signer(PAYER_KEY).address();
    let h = sim.handle(payer);
    let id = B256::repeat_byte(0x42);
    let token = sim.deploy_token(TokenBehaviour::Standard, 18);
    assert_eq!(h.decimals(token).await.unwrap(), 18);
    // No allowance: OpenZeppelin's revert, nothing moved.
    sim.mint(token, payer, wei(1000)).unwrap();
    assert_reverted(
        h.deposit(token, id, U256::ZERO, wei(600)).await,
        revert("ERC20: insufficient allowance"),
    );
    h.approve(token, wei(5000)).await.unwrap();
    assert_eq!(h.allowance(token).await.unwrap(), wei(5000));
    // Allowance but not the balance.
    assert_reverted(
        h.deposit(token, id, U256::ZERO, wei(1001)).await,
        revert("ERC20: transfer amount exceeds balance"),
    );
    assert_eq!(h.balance(token, payer).await.unwrap(), wei(1000));
    // The deposit moves the tokens and spends the allowance; no native coin is involved.
    h.deposit(token, id, U256::ZERO, wei(600)).await.unwrap();
    assert_eq!(h.holdings(token, id).await.unwrap(), wei(600));
    assert_eq!(h.holdings(Address::ZERO, id).await.unwrap(), U256::ZERO);
    assert_eq!(h.balance(token, payer).await.unwrap(), wei(400));
    assert_eq!(
        h.balance(token, DEFAULT_ADJUDICATOR_ADDRESS).await.unwrap(),
        wei(600)
    );
    assert_eq!(h.allowance(token).await.unwrap(), wei(4400));
    // A token whose transferFrom returns false: SafeERC20 refuses it.
    let liar = sim.deploy_token(TokenBehaviour::FalseOnTransferFrom, 18);
    sim.mint(liar, payer, wei(1000)).unwrap();
    h.approve(liar, wei(1000)).await.unwrap();
    assert_reverted(
        h.deposit(liar, id, U256::ZERO, wei(10)).await,
        revert("SafeERC20: ERC20 operation did not succeed"),
    );
    assert_eq!(h.holdings(liar, id).await.unwrap(), U256::ZERO);
    // A fee-on-transfer token: the adjudicator records more than it received.
    let fee = sim.deploy_token(TokenBehaviour::FeeOnTransfer, 18);
    sim.mint(fee, payer, wei(1000)).unwrap();
    h.approve(fee, wei(1000)).await.unwrap();
    h.deposit(fee, id, U256::ZERO, wei(1000)).await.unwrap();
    assert_eq!(h.holdings(fee, id).await.unwrap(), wei(1000));
    assert_eq!(
        h.balance(fee, DEFAULT_ADJUDICATOR_ADDRESS).await.unwrap(),
        wei(990)
    );
}

#[tokio::test]
async fn scenario_a_conclude_and_transfer() {
    run_scenario!(conclude);
}

#[tokio::test]
async fn scenario_b_payee_redeems_by_challenge() {
    run_scenario!(payee_redeems);
}

#[tokio::test]
async fn scenario_c_payee_counters_a_stale_challenge() {
    run_scenario!(payee_counters_stale_challenge);
}

#[tokio::test]
async fn scenario_d_invalid_challenges_pay_nothing() {
    run_scenario!(invalid_challenges);
}

#[test]
fn fixture_keys_are_anvil_dev_accounts_1_and_2() {
    assert_eq!(
        signer(PAYER_KEY).address(),
        "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
            .parse::<Address>()
            .unwrap()
    );
    assert_eq!(
        signer(PAYEE_KEY).address(),
        "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"
            .parse::<Address>()
            .unwrap()
    );
}
