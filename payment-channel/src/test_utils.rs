//! Test support, behind the **private** `test-utils` feature: not part of the API, no semver
//! promise.
//!
//! - [`ChannelFixture`] builds the states, vouchers and signatures of a `[payer, payee]`
//!   payment channel by hand (on `PaymentApp`, or on `VirtualPaymentApp` to show its flaw).
//! - [`Scenario`]'s methods are chain-level scripts that run against **any** [`Chain`]
//!   implementation: the [`SimulatedChain`](crate::SimulatedChain) in this crate's tests, and the
//!   real contracts on a dev chain in the Ethereum backend's tests. They panic (like a test) when
//!   the chain deviates from the Nitro v2 rules.
//!
//! - [`until`] waits, in async tests, for a condition to hold.
//!
//! # Calling a scenario
//! [`Scenario::new`] takes three arguments:
//! - `chain_for: impl Fn(Address) -> Arc<dyn Chain>`: a handle that sends transactions from the
//!   given account. The scenarios send from [`PAYER_KEY`]'s and [`PAYEE_KEY`]'s addresses (anvil's
//!   dev accounts #1 and #2, which anvil funds and unlocks); on another chain, fund them first
//!   with at least [`ScenarioConfig::deposit`] (plus gas) each.
//! - `advance_time: impl Fn(u64) -> impl Future<Output = ()>`: moves the chain's clock forward by
//!   that many seconds and mines a block (`evm_increaseTime` + `evm_mine` on a node).
//! - `config: &ScenarioConfig`: the app address, the asset and a channel nonce that is fresh on
//!   that chain. With an ERC-20 asset, the payer must hold at least the deposit in it.
//!
//! Payouts go to destinations derived from the nonce ([`ChannelFixture::payer_destination`]), not
//! to the senders, so balance changes are exact even where transactions cost gas.
//!
//! ```
//! # use std::sync::Arc;
//! # use payment_channel::{SimulatedChain, U256, chain::Chain, sign::Signer, test_utils::*};
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let sim = SimulatedChain::new();
//! let config = ScenarioConfig::new(sim.app_definition(), 1);
//! for key in [PAYER_KEY, PAYEE_KEY] {
//!     sim.fund(signer(key).address(), U256::from(10u64).pow(U256::from(18))).unwrap();
//! }
//! let chain_for = |a| Arc::new(sim.handle(a)) as Arc<dyn Chain>;
//! let advance = |secs| {
//!     sim.advance_time(secs);
//!     std::future::ready(())
//! };
//! Scenario::new(chain_for, advance, config).conclude().await;
//! # });
//! ```

pub mod anvil;
pub mod faulty;
pub mod net;
pub mod pair;

use std::future::Future;
use std::sync::Arc;

use alloy_primitives::{Address, B256, Bytes, U256, keccak256};
use derive_setters::Setters;

use crate::SimulatedChain;
use crate::chain::{
    Chain, ChainAction, ChainError, ChainEvent, ChannelMode, OnChainStatus, Revert, TxReceipt,
    fingerprint,
};
use crate::sign::{LocalSigner, Signature, Signer};
use crate::state::{
    FixedPart, Outcome, SignedVariablePart, VariablePart, challenge_message_hash, hash_outcome,
    two_party_outcome,
};
use crate::voucher::Voucher;

/// Secret key of the payer (participant 0, "Alice"): anvil's dev account #1
/// (`0x70997970C51812dc3A010C7d01b50e0d17dc79C8`).
pub const PAYER_KEY: &str = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d";
/// Secret key of the payee (participant 1, "Bob"): anvil's dev account #2
/// (`0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC`).
pub const PAYEE_KEY: &str = "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a";
/// Secret key of someone who is not a participant (forges signatures in the scenarios).
pub const STRANGER_KEY: &str = "0x4242424242424242424242424242424242424242424242424242424242424242";

/// A [`LocalSigner`] for one of the keys above.
pub fn signer(key: &str) -> LocalSigner {
    LocalSigner::from_hex(key).expect("the test keys are valid")
}

/// Runs a future that never waits (the simulated chain, the memory store) to completion.
///
/// # Panics
/// If the future is pending on its first poll.
pub fn ready<F: Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match f.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(v) => v,
        std::task::Poll::Pending => panic!("an in-memory future must complete at once"),
    }
}

/// Polls `done` every 20 ms until it yields `true`; panics (like a failed assertion) naming
/// `what` if `timeout` passes first. The tokio timer drives it.
pub async fn until<F, Fut>(what: &str, timeout: std::time::Duration, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    while !done().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Sends the transaction of a channel's `action` from `from` on `sim`, as the async client would:
/// a deposit is funded just in time (`from` gets the amount first); a conclude of a finalized
/// channel and a transfer of an empty one are skipped, like the client's idempotent retries.
/// `None` when nothing was sent, else the transaction's result.
pub fn run_chain_action(
    sim: &SimulatedChain,
    from: Address,
    action: &ChainAction,
) -> Option<Result<(), ChainError>> {
    match action {
        ChainAction::Deposit { amount, .. } => {
            sim.fund(from, *amount)
                .expect("the simulator funds any account");
        }
        ChainAction::Conclude { fixed, .. }
            if sim.status_of(fixed.channel_id()).mode(sim.now()) == ChannelMode::Finalized =>
        {
            return None;
        }
        ChainAction::TransferAllAssets { channel_id, .. }
            if sim.holdings_of(*channel_id).is_zero() =>
        {
            return None;
        }
        _ => {}
    }
    Some(ready(action.send(&sim.handle(from))).map(|_| ()))
}

/// A two-party payment channel and everything needed to build its states by hand.
#[derive(Debug, Clone)]
pub struct ChannelFixture {
    /// Participant 0, who pays.
    pub payer: LocalSigner,
    /// Participant 1, who is paid.
    pub payee: LocalSigner,
    /// A non-participant.
    pub stranger: LocalSigner,
    /// Where the payer's allocation goes (a fresh address per nonce).
    pub payer_destination: Address,
    /// Where the payee's allocation goes (a fresh address per nonce).
    pub payee_destination: Address,
    /// The channel's fixed part.
    pub fixed: FixedPart,
    /// What the payer deposits; the postfund outcome is `[deposit, 0]`.
    pub deposit: U256,
    /// The asset of the deposit and the outcome (`Address::ZERO`: the native coin).
    pub asset: Address,
}

fn derived_address(label: &str, nonce: u64) -> Address {
    let mut data = label.as_bytes().to_vec();
    data.extend_from_slice(&nonce.to_be_bytes());
    Address::from_slice(&keccak256(data)[12..])
}

impl ChannelFixture {
    /// The channel `[PAYER_KEY, PAYEE_KEY]` with this app, nonce, challenge duration and deposit.
    pub fn new(
        app_definition: Address,
        channel_nonce: u64,
        challenge_duration: u64,
        deposit: U256,
    ) -> Self {
        let payer = signer(PAYER_KEY);
        let payee = signer(PAYEE_KEY);
        Self {
            fixed: FixedPart {
                participants: vec![payer.address(), payee.address()],
                channel_nonce,
                app_definition,
                challenge_duration,
            },
            payer,
            payee,
            stranger: signer(STRANGER_KEY),
            payer_destination: derived_address("payer destination", channel_nonce),
            payee_destination: derived_address("payee destination", channel_nonce),
            deposit,
            asset: Address::ZERO,
        }
    }

    /// The same channel in `asset`.
    pub fn with_asset(mut self, asset: Address) -> Self {
        self.asset = asset;
        self
    }

    /// The channel id.
    pub fn channel_id(&self) -> B256 {
        self.fixed.channel_id()
    }

    /// The outcome after `paid` has been paid: `[payer: deposit - paid, payee: paid]`
    /// (`deposit - paid` saturates at zero).
    pub fn outcome(&self, paid: U256) -> Outcome {
        two_party_outcome(
            self.asset,
            self.payer_destination,
            self.deposit.saturating_sub(paid),
            self.payee_destination,
            paid,
        )
    }

    /// A state of this channel.
    pub fn state(
        &self,
        turn_num: u64,
        paid: U256,
        is_final: bool,
        app_data: Bytes,
    ) -> VariablePart {
        VariablePart {
            outcome: self.outcome(paid),
            app_data,
            turn_num,
            is_final,
        }
    }

    /// The prefund state (turn 0, nothing paid).
    pub fn prefund(&self) -> VariablePart {
        self.state(0, U256::ZERO, false, Bytes::new())
    }

    /// The postfund state (turn 1, nothing paid).
    pub fn postfund(&self) -> VariablePart {
        self.state(1, U256::ZERO, false, Bytes::new())
    }

    /// A voucher for the cumulative `amount`, signed by the payer.
    pub fn voucher(&self, amount: U256) -> Voucher {
        self.voucher_signed_by(amount, &self.payer)
    }

    /// A voucher for `amount` signed by `by` (a forgery unless `by` is the payer).
    pub fn voucher_signed_by(&self, amount: U256, by: &LocalSigner) -> Voucher {
        Voucher::sign(self.channel_id(), amount, by).expect("local signing cannot fail")
    }

    /// The redemption state (turn 2): the voucher in the app data, the outcome adjusted by its amount.
    pub fn redemption(&self, voucher: &Voucher) -> VariablePart {
        self.state(2, voucher.amount, false, voucher.app_data())
    }

    /// A final state at `turn_num` with `paid` paid (what a cooperative close signs).
    pub fn final_state(&self, turn_num: u64, paid: U256) -> VariablePart {
        self.state(turn_num, paid, true, Bytes::new())
    }

    /// Signs `state` by each of `signers`, in order.
    pub fn sign(&self, state: &VariablePart, signers: &[&LocalSigner]) -> SignedVariablePart {
        let hash = state.hash(self.channel_id());
        SignedVariablePart {
            variable_part: state.clone(),
            sigs: signers
                .iter()
                .map(|s| {
                    s.sign_eth_message(&hash)
                        .expect("local signing cannot fail")
                })
                .collect(),
        }
    }

    /// `state` signed by the payer and the payee.
    pub fn signed_by_both(&self, state: &VariablePart) -> SignedVariablePart {
        self.sign(state, &[&self.payer, &self.payee])
    }

    /// The payee alone takes `redemption` on chain through `chain`: signs it, and challenges with
    /// it over `proof` (normally the postfund signed by both).
    pub async fn payee_challenges(
        &self,
        chain: &dyn Chain,
        proof: &SignedVariablePart,
        redemption: &VariablePart,
    ) -> Result<TxReceipt, ChainError> {
        chain
            .challenge(
                &self.fixed,
                std::slice::from_ref(proof),
                &self.sign(redemption, &[&self.payee]),
                &self.challenger_sig(&self.payee, redemption),
            )
            .await
    }

    /// The payer takes the channel on chain with the postfund signed by both (no proof): the
    /// stale state that pays the payee nothing.
    pub async fn payer_challenges_with_postfund(
        &self,
        chain: &dyn Chain,
    ) -> Result<TxReceipt, ChainError> {
        let postfund = self.postfund();
        chain
            .challenge(
                &self.fixed,
                &[],
                &self.signed_by_both(&postfund),
                &self.challenger_sig(&self.payer, &postfund),
            )
            .await
    }

    /// The challenger signature of `by` for a challenge with `candidate`.
    pub fn challenger_sig(&self, by: &LocalSigner, candidate: &VariablePart) -> Signature {
        by.sign_eth_message(&challenge_message_hash(candidate.hash(self.channel_id())))
            .expect("local signing cannot fail")
    }
}

/// Parameters of a scenario run.
#[derive(Debug, Clone, Setters)]
#[setters(prefix = "with_")]
#[non_exhaustive]
pub struct ScenarioConfig {
    /// The app address on the chain under test (`PaymentApp`, unless a scenario says otherwise).
    pub app_definition: Address,
    /// The asset (`Address::ZERO`: the native coin).
    pub asset: Address,
    /// A channel nonce not used before on that chain (scenario (d) also uses `channel_nonce + 1`).
    pub channel_nonce: u64,
    /// Challenge duration, seconds.
    pub challenge_duration: u64,
    /// What the payer deposits, wei.
    pub deposit: U256,
    /// The voucher the payee redeems, wei (at most `deposit`).
    pub voucher_amount: U256,
}

impl ScenarioConfig {
    /// Defaults: 100 s challenges, a 1000 wei deposit, a 300 wei voucher.
    pub fn new(app_definition: Address, channel_nonce: u64) -> Self {
        Self {
            app_definition,
            asset: Address::ZERO,
            channel_nonce,
            challenge_duration: 100,
            deposit: U256::from(1000u64),
            voucher_amount: U256::from(300u64),
        }
    }

    /// The fixture of this run's channel.
    pub fn fixture(&self) -> ChannelFixture {
        ChannelFixture::new(
            self.app_definition,
            self.channel_nonce,
            self.challenge_duration,
            self.deposit,
        )
        .with_asset(self.asset)
    }
}

/// The revert inside `result`, or a panic describing what happened instead.
pub fn expect_revert<T: std::fmt::Debug>(result: Result<T, ChainError>) -> Revert {
    match result {
        Err(ChainError::Reverted(r)) => r,
        other => panic!("expected a revert, got {other:?}"),
    }
}

/// Shorthand for `Revert::from_reason`.
pub fn revert(reason: &str) -> Revert {
    Revert::from_reason(reason)
}

/// The payer deposits `fixture.deposit` into a fresh channel; returns the payer's handle.
async fn fund_channel(
    chain_for: &impl Fn(Address) -> Arc<dyn Chain>,
    f: &ChannelFixture,
) -> Arc<dyn Chain> {
    let payer = chain_for(f.payer.address());
    let id = f.channel_id();
    assert_eq!(
        payer.holdings(f.asset, id).await.unwrap(),
        U256::ZERO,
        "the channel nonce must be fresh"
    );
    if f.asset != Address::ZERO {
        payer.approve(f.asset, f.deposit).await.unwrap();
    }
    payer
        .deposit(f.asset, id, U256::ZERO, f.deposit)
        .await
        .unwrap();
    assert_eq!(payer.holdings(f.asset, id).await.unwrap(), f.deposit);
    payer
}

/// Moves chain time forward by `secs` seconds and mines a block: what every scenario's
/// `advance_time` argument does (see the module docs). Any `Fn(u64) -> impl Future<Output = ()>`
/// is one.
pub trait AdvanceTime {
    /// Moves the clock.
    fn advance(&self, secs: u64) -> impl Future<Output = ()>;
}

impl<T, F> AdvanceTime for T
where
    T: Fn(u64) -> F,
    F: Future<Output = ()>,
{
    fn advance(&self, secs: u64) -> impl Future<Output = ()> {
        self(secs)
    }
}

/// The opening of every scenario: the fixture of `config`, its channel id, the payer's chain
/// handle (after it funded the channel) and the payee's.
async fn open_funded(
    chain_for: &impl Fn(Address) -> Arc<dyn Chain>,
    config: &ScenarioConfig,
) -> (ChannelFixture, B256, Arc<dyn Chain>, Arc<dyn Chain>) {
    let f = config.fixture();
    let id = f.channel_id();
    let payer = fund_channel(chain_for, &f).await;
    let payee = chain_for(f.payee.address());
    (f, id, payer, payee)
}

/// Destination balances before a payout.
async fn destination_balances(chain: &dyn Chain, f: &ChannelFixture) -> (U256, U256) {
    (
        chain.balance(f.asset, f.payer_destination).await.unwrap(),
        chain.balance(f.asset, f.payee_destination).await.unwrap(),
    )
}

/// `transferAllAssets` of the finalized `outcome` (with `state_hash`, zero after a conclude), and
/// [`assert_paid_out`] of `paid`.
async fn pay_out(
    chain: &dyn Chain,
    f: &ChannelFixture,
    outcome: &[crate::state::SingleAssetExit],
    state_hash: B256,
    paid: U256,
) {
    let before = destination_balances(chain, f).await;
    chain
        .transfer_all_assets(f.channel_id(), outcome, state_hash)
        .await
        .unwrap();
    assert_paid_out(chain, f, before, paid).await;
}

/// [`pay_out`] of a channel finalized by a challenge with `state`.
async fn pay_out_challenged(
    chain: &dyn Chain,
    f: &ChannelFixture,
    state: &VariablePart,
    paid: U256,
) {
    pay_out(chain, f, &state.outcome, state.hash(f.channel_id()), paid).await;
}

/// Checks that the payout moved exactly `paid` to the payee's destination and the rest to the
/// payer's, and emptied the channel.
async fn assert_paid_out(chain: &dyn Chain, f: &ChannelFixture, before: (U256, U256), paid: U256) {
    let (payer_after, payee_after) = destination_balances(chain, f).await;
    assert_eq!(
        payee_after - before.1,
        paid,
        "payee gets exactly the voucher"
    );
    assert_eq!(
        payer_after - before.0,
        f.deposit - paid,
        "payer gets the rest"
    );
    let id = f.channel_id();
    assert_eq!(chain.holdings(f.asset, id).await.unwrap(), U256::ZERO);
    // Everything paid: `delete statusOf[channelId]`.
    assert_eq!(chain.status(id).await.unwrap(), OnChainStatus::default());
}

/// Checks that `transferAllAssets` of `state` (its outcome and hash) on channel `id` reverts with
/// `reason`.
async fn assert_transfer_refused(
    chain: &dyn Chain,
    id: B256,
    state: &VariablePart,
    reason: Revert,
) {
    assert_eq!(
        expect_revert(
            chain
                .transfer_all_assets(id, &state.outcome, state.hash(id))
                .await
        ),
        reason
    );
}

/// Checks that the channel `id` is challenged at turn `turn`, finalizing one challenge duration
/// after the block of `receipt`.
async fn assert_challenge_at(
    chain: &dyn Chain,
    id: B256,
    turn: u64,
    receipt: &TxReceipt,
    config: &ScenarioConfig,
) {
    let status = chain.status(id).await.unwrap();
    assert_eq!(status.turn_num_record, turn);
    assert_eq!(
        status.finalizes_at,
        receipt.block_timestamp + config.challenge_duration
    );
}

/// One forged redemption of [`Scenario::forged_redemptions`]: a name, the state the payee signs
/// (with the proof it uses) and the reason `PaymentApp` refuses it with.
struct Forgery {
    name: &'static str,
    proof: SignedVariablePart,
    state: VariablePart,
    reason: &'static str,
}

/// The forgeries a payee holding one voucher could try against its payer, each built from the
/// honest redemption (proof: the postfund signed by both).
fn forgeries(f: &ChannelFixture, voucher_amount: U256) -> Vec<Forgery> {
    let postfund = f.signed_by_both(&f.postfund());
    let voucher = f.voucher(voucher_amount);
    let honest = f.redemption(&voucher);
    let forged = |name, reason, change: &dyn Fn(&mut VariablePart)| {
        let mut state = honest.clone();
        change(&mut state);
        Forgery {
            name,
            proof: postfund.clone(),
            state,
            reason,
        }
    };
    let payee_destination = crate::state::address_to_destination(f.payee_destination);
    let mut forgeries = vec![
        // The VirtualPaymentApp theft: the payer's change redirected to the payee.
        forged("redirected destination", "destination changed", &|s| {
            s.outcome[0].allocations[0].destination = payee_destination;
        }),
        forged("appended allocation", "allocation count changed", &|s| {
            let extra = s.outcome[0].allocations[1].clone();
            s.outcome[0].allocations.push(extra);
        }),
        forged("changed allocation type", "allocation type changed", &|s| {
            s.outcome[0].allocations[1].allocation_type = 1;
        }),
        forged(
            "changed allocation metadata",
            "allocation metadata changed",
            &|s| {
                s.outcome[0].allocations[0].metadata = Bytes::from_static(b"mine");
            },
        ),
        forged("changed asset", "asset changed", &|s| {
            s.outcome[0].asset = Address::repeat_byte(0xa5);
        }),
        forged("changed asset metadata", "asset metadata changed", &|s| {
            s.outcome[0].asset_metadata.asset_type = 1;
        }),
        forged("a second asset", "one asset only", &|s| {
            let second = s.outcome[0].clone();
            s.outcome.push(second);
        }),
        forged(
            "payer's amount not lowered by the voucher",
            "payer not adjusted correctly",
            &|s| {
                s.outcome[0].allocations[0].amount -= U256::from(1u8);
            },
        ),
        forged(
            "payee's amount above the voucher",
            "payee not adjusted correctly",
            &|s| {
                s.outcome[0].allocations[1].amount += U256::from(1u8);
            },
        ),
    ];
    // A voucher above the payer's amount (the outcome adjusted to it, as if the deposit covered it).
    let above = f.voucher(f.deposit + U256::from(1u8));
    let mut state = f.redemption(&above);
    state.outcome[0].allocations[0].amount = U256::ZERO;
    forgeries.push(Forgery {
        name: "voucher above the payer's amount",
        proof: postfund.clone(),
        state,
        reason: "voucher above payer's amount",
    });
    // A voucher signed by someone else than the payer.
    let forged_voucher = f.voucher_signed_by(voucher_amount, &f.stranger);
    forgeries.push(Forgery {
        name: "voucher by someone else",
        proof: postfund.clone(),
        state: f.redemption(&forged_voucher),
        reason: "invalid signature for voucher",
    });
    // Amounts that do not add up: a postfund that already pays the payee (signed by both), and a
    // redemption that sets the payee to the voucher, so the total shrinks.
    let mut odd_postfund = f.postfund();
    odd_postfund.outcome[0].allocations[0].amount -= U256::from(10u8);
    odd_postfund.outcome[0].allocations[1].amount = U256::from(10u8);
    let mut state = honest.clone();
    state.outcome[0].allocations[0].amount =
        odd_postfund.outcome[0].allocations[0].amount - voucher_amount;
    forgeries.push(Forgery {
        name: "amounts that do not add up",
        proof: f.signed_by_both(&odd_postfund),
        state,
        reason: "amounts do not add up",
    });
    forgeries
}

/// Where a shared scenario runs, its one argument: `chain_for` gives an account's chain handle,
/// `advance_time` moves the chain's clock (see [`AdvanceTime`]) and `config` sets the channel.
/// The scenarios are its methods.
pub struct Scenario<C, A> {
    /// An account's chain handle.
    pub chain_for: C,
    /// Moves the chain's clock.
    pub advance_time: A,
    /// The channel and its amounts.
    pub config: ScenarioConfig,
}

/// Shows the config (the clock and the chain handles are closures).
impl<C, A> std::fmt::Debug for Scenario<C, A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scenario")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<C, A> Scenario<C, A>
where
    C: Fn(Address) -> Arc<dyn Chain>,
    A: AdvanceTime,
{
    /// A scenario run with these surroundings.
    pub fn new(chain_for: C, advance_time: A, config: ScenarioConfig) -> Self {
        Self {
            chain_for,
            advance_time,
            config,
        }
    }

    /// The payee's honest redemption of `f`'s channel: one voucher of `config.voucher_amount`.
    fn redemption(&self, f: &ChannelFixture) -> VariablePart {
        f.redemption(&f.voucher(self.config.voucher_amount))
    }

    /// Moves the clock past a whole challenge duration, so that a challenge registered now
    /// finalizes.
    async fn pass_challenge_duration(&self) {
        self.advance_time
            .advance(self.config.challenge_duration + 1)
            .await;
    }

    /// Scenario (a): deposit → `conclude` with a final state signed by both → `transferAllAssets`:
    /// the payee gets exactly the voucher amount, the payer the rest, holdings end at 0.
    pub async fn conclude(&self) {
        let (f, id, payer, payee) = open_funded(&self.chain_for, &self.config).await;
        let from_block = payer.block_number().await.unwrap();

        let paid = self.config.voucher_amount;
        let final_state = f.final_state(3, paid);
        let receipt = payee
            .conclude(&f.fixed, &f.signed_by_both(&final_state))
            .await
            .unwrap();
        let status = payee.status(id).await.unwrap();
        assert_eq!(
            status,
            OnChainStatus {
                turn_num_record: 0,
                finalizes_at: receipt.block_timestamp,
                fingerprint: fingerprint(B256::ZERO, hash_outcome(&final_state.outcome)),
            }
        );

        pay_out(payee.as_ref(), &f, &final_state.outcome, B256::ZERO, paid).await;

        let events = payee.events(id, from_block).await.unwrap();
        assert!(events.iter().any(|r| matches!(
            r.event,
            ChainEvent::Concluded { finalizes_at, .. } if finalizes_at == receipt.block_timestamp
        )));
        assert!(events.iter().any(|r| matches!(
            r.event,
            ChainEvent::AllocationUpdated { asset_index: 0, initial_holdings, final_holdings, .. }
                if initial_holdings == f.deposit && final_holdings == U256::ZERO
        )));
    }

    /// Scenario (b): the payee alone force-closes with the redemption state (proof = postfund signed
    /// by both, candidate = turn 2 signed by the payee with the voucher as app data), waits out the
    /// challenge, and `transferAllAssets` pays it exactly the voucher.
    pub async fn payee_redeems(&self) {
        let (f, id, _, payee) = open_funded(&self.chain_for, &self.config).await;

        let postfund = f.signed_by_both(&f.postfund());
        let redemption = self.redemption(&f);
        let receipt = f
            .payee_challenges(payee.as_ref(), &postfund, &redemption)
            .await
            .unwrap();
        let finalizes_at = receipt.block_timestamp + self.config.challenge_duration;
        let state_hash = redemption.hash(id);
        assert_eq!(
            payee.status(id).await.unwrap(),
            OnChainStatus {
                turn_num_record: 2,
                finalizes_at,
                fingerprint: fingerprint(state_hash, hash_outcome(&redemption.outcome)),
            }
        );
        let events = payee.events(id, receipt.block_number).await.unwrap();
        assert!(events.iter().any(|r| matches!(
            &r.event,
            ChainEvent::ChallengeRegistered { finalizes_at: at, candidate: c, .. }
                if *at == finalizes_at && c.variable_part.turn_num == 2
        )));

        // Not before the challenge times out.
        assert_transfer_refused(payee.as_ref(), id, &redemption, Revert::ChannelNotFinalized).await;
        self.pass_challenge_duration().await;

        pay_out_challenged(payee.as_ref(), &f, &redemption, self.config.voucher_amount).await;
    }

    /// Scenario (c): the payer challenges with the postfund (`[deposit, 0]`); before the timeout the
    /// payee counters with a turn-2 challenge carrying the voucher; the payout reflects the voucher.
    pub async fn payee_counters_stale_challenge(&self) {
        let (f, id, payer, payee) = open_funded(&self.chain_for, &self.config).await;

        let postfund_state = f.postfund();
        let postfund = f.signed_by_both(&postfund_state);
        let stale = f
            .payer_challenges_with_postfund(payer.as_ref())
            .await
            .unwrap();
        assert_challenge_at(payer.as_ref(), id, 1, &stale, &self.config).await;

        // Half-way through the challenge, the payee answers with the voucher.
        self.advance_time
            .advance(self.config.challenge_duration / 2)
            .await;
        let redemption = self.redemption(&f);
        let counter = f
            .payee_challenges(payee.as_ref(), &postfund, &redemption)
            .await
            .unwrap();
        assert_challenge_at(payee.as_ref(), id, 2, &counter, &self.config).await;

        // The payer cannot go back to the postfund.
        assert_eq!(
            expect_revert(f.payer_challenges_with_postfund(payer.as_ref()).await),
            Revert::TurnNumRecordNotIncreased
        );

        self.pass_challenge_duration().await;
        // The stale state no longer matches the stored fingerprint.
        assert_transfer_refused(
            payer.as_ref(),
            id,
            &postfund_state,
            Revert::IncorrectFingerprint,
        )
        .await;
        pay_out_challenged(payee.as_ref(), &f, &redemption, self.config.voucher_amount).await;
    }

    /// Scenario (d): invalid challenges revert with typed errors and nothing is paid: a forged
    /// challenger signature, a forged voucher, a redemption not signed by the payee, an unrecoverable
    /// signature, states from another channel (nonce `channel_nonce + 1`), and a lower turn than the
    /// on-chain record.
    pub async fn invalid_challenges(&self) {
        let (f, id, payer, payee) = open_funded(&self.chain_for, &self.config).await;

        let postfund_state = f.postfund();
        let postfund = f.signed_by_both(&postfund_state);
        let redemption = self.redemption(&f);
        let candidate = f.sign(&redemption, &[&f.payee]);
        let payee_sig = f.challenger_sig(&f.payee, &redemption);
        let proof = std::slice::from_ref(&postfund);

        // A voucher signed by someone other than the payer.
        let fake_redemption =
            f.redemption(&f.voucher_signed_by(self.config.voucher_amount, &f.stranger));
        // A signature `ecrecover` cannot recover (s = 0).
        let mut broken = candidate.clone();
        broken.sigs[0].s = B256::ZERO;
        // States signed for another channel of the same participants.
        let other = ScenarioConfig {
            channel_nonce: self.config.channel_nonce + 1,
            ..self.config.clone()
        }
        .fixture();
        let other_postfund = other.signed_by_both(&other.postfund());
        let other_redemption = self.redemption(&other);
        let refused: [(&[SignedVariablePart], SignedVariablePart, Signature, Revert); 5] = [
            // A challenger signature by a non-participant.
            (
                proof,
                candidate.clone(),
                f.challenger_sig(&f.stranger, &redemption),
                Revert::ChallengerNotParticipant,
            ),
            (
                proof,
                f.sign(&fake_redemption, &[&f.payee]),
                f.challenger_sig(&f.payee, &fake_redemption),
                revert("invalid signature for voucher"),
            ),
            // The redemption state signed by a stranger instead of the payee.
            (
                proof,
                f.sign(&redemption, &[&f.stranger]),
                payee_sig,
                revert("redemption not signed by payee"),
            ),
            (proof, broken, payee_sig, Revert::InvalidSignature),
            (
                std::slice::from_ref(&other_postfund),
                other.sign(&other_redemption, &[&other.payee]),
                f.challenger_sig(&f.payee, &other_redemption),
                revert("postfund !unanimous; |proof|=1"),
            ),
        ];
        for (proof, candidate, sig, expected) in refused {
            let result = payee.challenge(&f.fixed, proof, &candidate, &sig).await;
            assert_eq!(expect_revert(result), expected);
        }

        // The payee checkpoints the redemption; then a challenge with the (lower) postfund fails.
        payee.checkpoint(&f.fixed, proof, &candidate).await.unwrap();
        assert_eq!(
            expect_revert(f.payer_challenges_with_postfund(payer.as_ref()).await),
            Revert::TurnNumRecordDecreased
        );

        // Nothing happened to the funds, and nothing can be paid out.
        self.pass_challenge_duration().await;
        let status = payee.status(id).await.unwrap();
        assert_eq!(status.turn_num_record, 2);
        assert_eq!(status.finalizes_at, 0);
        assert_eq!(payee.holdings(f.asset, id).await.unwrap(), f.deposit);
        assert_transfer_refused(payee.as_ref(), id, &redemption, Revert::ChannelNotFinalized).await;
        let (payer_dest, payee_dest) = destination_balances(payee.as_ref(), &f).await;
        assert_eq!(payer_dest, U256::ZERO);
        assert_eq!(payee_dest, U256::ZERO);
    }

    /// Scenario (e), `PaymentApp` only: every redemption a payee can forge from one voucher is refused
    /// with its reason and changes nothing (see [`crate::app`]): a redirected destination, an appended
    /// allocation, a changed allocation type or metadata, a changed or added asset, amounts that do not
    /// add up, a voucher above the payer's amount, a voucher by someone else. The honest redemption
    /// then pays exactly the voucher.
    pub async fn forged_redemptions(&self) {
        let (f, id, _, payee) = open_funded(&self.chain_for, &self.config).await;
        for forgery in forgeries(&f, self.config.voucher_amount) {
            let result = f
                .payee_challenges(payee.as_ref(), &forgery.proof, &forgery.state)
                .await;
            assert_eq!(
                expect_revert(result),
                revert(forgery.reason),
                "{}",
                forgery.name
            );
            assert_eq!(
                payee.status(id).await.unwrap(),
                OnChainStatus::default(),
                "{}: nothing registered",
                forgery.name
            );
        }
        // The honest redemption still works and pays exactly the voucher.
        let postfund = f.signed_by_both(&f.postfund());
        let redemption = self.redemption(&f);
        f.payee_challenges(payee.as_ref(), &postfund, &redemption)
            .await
            .unwrap();
        self.pass_challenge_duration().await;
        pay_out_challenged(payee.as_ref(), &f, &redemption, self.config.voucher_amount).await;
    }

    /// Why this crate does not use the published `VirtualPaymentApp`: with `config.app_definition`
    /// pointing at it, a payee holding a single voucher of `config.voucher_amount` redirects the
    /// payer's change to itself, challenges alone, and after the timeout receives the **whole
    /// deposit**. Returns what the payee's destination received (the deposit).
    pub async fn virtual_payment_app_theft(&self) -> U256 {
        let (f, id, _, payee) = open_funded(&self.chain_for, &self.config).await;
        let postfund = f.signed_by_both(&f.postfund());
        let mut theft = self.redemption(&f);
        theft.outcome[0].allocations[0].destination =
            crate::state::address_to_destination(f.payee_destination);
        f.payee_challenges(payee.as_ref(), &postfund, &theft)
            .await
            .expect("VirtualPaymentApp accepts the redirected redemption");
        self.pass_challenge_duration().await;
        let (_, payee_before) = destination_balances(payee.as_ref(), &f).await;
        payee
            .transfer_all_assets(id, &theft.outcome, theft.hash(id))
            .await
            .unwrap();
        let (_, payee_after) = destination_balances(payee.as_ref(), &f).await;
        payee_after - payee_before
    }
}
