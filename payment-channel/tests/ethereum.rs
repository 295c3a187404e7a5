//! `EthereumChain` against the real Nitro v2 contracts (`NitroAdjudicator` + `VirtualPaymentApp`
//! from `@statechannels/nitro-protocol@2.0.1-alpha.6`) on a local anvil node, one node per test.
//!
//! Needs anvil (`scripts/install-anvil.sh`) and the artifacts (`scripts/fetch-nitro-artifacts.sh`);
//! without them the tests are skipped, or fail when `CI` is set. Figures (gas, anvil start time,
//! per-test wall time) are printed: run with `--nocapture`.

mod support;

use std::sync::Arc;
use std::time::Instant;

use alloy_primitives::{Address, B256, U256};
use payment_channel::chain::ethereum::{Deployment, EthereumChain};
use payment_channel::chain::{Chain, ChainEvent, ChannelMode};
use payment_channel::sign::{LocalSigner, Signer};
use payment_channel::test_utils::anvil::{
    Anvil, artifacts_dir, deployed, dev_key as key, simulated_dev_chain,
};
use payment_channel::test_utils::{PAYEE_KEY, PAYER_KEY, Scenario, ScenarioConfig};
use support::scenarios::{self, Env, Report};

/// A node with the contracts deployed and handles for dev accounts #1 (payer) and #2 (payee);
/// #0 deploys, #3 is the stranger.
struct Setup {
    env: Env,
    payer: Arc<EthereumChain>,
    deployment: Deployment,
    anvil: Anvil,
}

async fn setup() -> Option<Setup> {
    let (anvil, deployment, _) = deployed().await?;
    let connect = |i: usize| {
        let url = anvil.url.clone();
        let adjudicator = deployment.nitro_adjudicator;
        async move {
            Arc::new(
                EthereumChain::connect(&url, &key(i).secret_bytes(), adjudicator)
                    .await
                    .expect("connect"),
            )
        }
    };
    let payer = connect(1).await;
    let payee = connect(2).await;
    let env = Env {
        payer: payer.clone(),
        payee,
        payer_key: key(1),
        payee_key: key(2),
        stranger_key: key(3),
        app: deployment.payment_app,
        advance: scenarios::anvil_advance(payer.clone()),
    };
    Some(Setup {
        env,
        payer,
        deployment,
        anvil,
    })
}

impl Setup {
    /// `chain_for` of the shared `test_utils` scenarios: the payer's or the payee's handle.
    fn chain_for(&self) -> impl Fn(Address) -> Arc<dyn Chain> + use<> {
        let (payer, payee) = (self.env.payer.clone(), self.env.payee.clone());
        move |a| {
            if a == payer.account() {
                payer.clone()
            } else if a == payee.account() {
                payee.clone()
            } else {
                panic!("no dev account handle for {a}")
            }
        }
    }

    /// `advance_time` of the shared scenarios.
    fn advance_time(&self) -> impl Fn(u64) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> {
        let advance = self.env.advance.clone();
        move |secs| advance(secs)
    }
}

/// The same participants on a fresh `SimulatedChain` (funded like anvil's dev accounts).
fn sim_env() -> Env {
    let sim = simulated_dev_chain(1..4);
    Env {
        payer: Arc::new(sim.handle(key(1).address())),
        payee: Arc::new(sim.handle(key(2).address())),
        payer_key: key(1),
        payee_key: key(2),
        stranger_key: key(3),
        app: sim.app_definition(),
        advance: scenarios::sim_advance(&sim),
    }
}

/// Prints the figures and checks that the simulator ends the same way.
fn finish(name: &str, started: Instant, report: &Report, sim: &Report) {
    report.print_gas(name);
    println!("TIME {name:<28} {:?}", started.elapsed());
    assert_eq!(
        report.comparable(),
        sim.comparable(),
        "{name}: anvil (left) and SimulatedChain (right) disagree"
    );
}

/// Runs `scenario` on anvil and then on a fresh simulator, prints its figures and checks that both
/// end the same way ([`finish`]); the anvil setup and report, or `None` without anvil.
async fn on_both(name: &str, scenario: impl AsyncFn(&Env) -> Report) -> Option<(Setup, Report)> {
    let started = Instant::now();
    let s = setup().await?;
    let r = scenario(&s.env).await;
    finish(name, started, &r, &scenario(&sim_env()).await);
    Some((s, r))
}

#[tokio::test]
async fn deploys_and_connects() {
    let started = Instant::now();
    let Some(s) = setup().await else { return };
    println!("ANVIL start {:?}", s.anvil.started_in);
    println!(
        "GAS deploy NitroAdjudicator {} / PaymentApp {}",
        s.deployment.nitro_adjudicator_receipt.gas_used, s.deployment.payment_app_receipt.gas_used
    );
    assert_eq!(s.payer.chain_id(), 1337);
    assert_eq!(s.payer.account(), key(1).address());
    assert_eq!(s.payer.adjudicator(), s.deployment.nitro_adjudicator);
    // The dev keys are anvil's accounts #1..#3 (#0 paid for the deployment).
    for i in 1..4 {
        assert!(
            !s.payer
                .balance(Address::ZERO, key(i).address())
                .await
                .unwrap()
                .is_zero()
        );
    }
    // A wrong adjudicator address is caught at connect time.
    let err = EthereumChain::connect(&s.anvil.url, &key(1).secret_bytes(), key(3).address())
        .await
        .expect_err("no code there");
    assert!(err.to_string().contains("no contract"), "{err}");
    // Time travel moves the adjudicator's clock.
    let t0 = s.payer.now().await.unwrap();
    let t1 = s.payer.increase_time(1000).await.unwrap();
    assert!(t1 >= t0 + 1000, "{t0} -> {t1}");
    let invalid = EthereumChain::connect(&s.anvil.url, &B256::ZERO, s.deployment.nitro_adjudicator)
        .await
        .expect_err("zero key");
    assert!(invalid.to_string().contains("secret key"), "{invalid}");
    println!("TIME deploys_and_connects {:?}", started.elapsed());
}

#[tokio::test]
async fn happy_path_cooperative_close() {
    let n = 20;
    let scenario = async |env: &Env| scenarios::happy_path(env, 1, n).await;
    let Some((_, r)) = on_both("happy_path", scenario).await else {
        return;
    };
    let paid = U256::from(n * 1_000_000_000);
    assert_eq!(r.payee_received, paid);
    assert_eq!(r.payer_received, r.deposit - paid);
    assert!(r.holdings_after.is_zero());
    // Paying out everything deletes the channel's status.
    assert_eq!(r.status_after, Default::default());
    assert_eq!(r.mode_after, ChannelMode::Open);
    assert_eq!(r.events, ["Deposited", "Concluded", "AllocationUpdated"]);
}

#[tokio::test]
async fn payee_challenges_with_voucher_after_payer_goes_silent() {
    let scenario = async |env: &Env| scenarios::payee_challenges(env, 2, 7).await;
    let Some((s, r)) = on_both("payee_challenges", scenario).await else {
        return;
    };
    let paid = U256::from(7 * 3_000_000_000u64);
    assert_eq!(
        (r.payee_received, r.payer_received),
        (paid, r.deposit - paid)
    );
    assert!(r.holdings_after.is_zero());
    assert_eq!(
        r.events,
        ["Deposited", "ChallengeRegistered", "AllocationUpdated"]
    );
    // The ChallengeRegistered event carries the candidate as sent.
    let ch = scenarios::TestChannel::new(&s.env, 2);
    let events = s.payer.events(ch.id, 0).await.unwrap();
    let Some(ChainEvent::ChallengeRegistered {
        candidate, proof, ..
    }) = events
        .iter()
        .map(|e| &e.event)
        .find(|e| matches!(e, ChainEvent::ChallengeRegistered { .. }))
    else {
        panic!("no ChallengeRegistered in {events:?}");
    };
    assert_eq!(proof, &[ch.postfund()]);
    assert_eq!(candidate.variable_part.turn_num, 2);
    let v =
        payment_channel::voucher::Voucher::from_app_data(ch.id, &candidate.variable_part.app_data)
            .expect("voucher in app data");
    assert_eq!(v.amount, paid);
    // A range that starts after the latest block is empty.
    let latest = s.payer.block_number().await.unwrap();
    assert!(s.payer.events(ch.id, latest + 10).await.unwrap().is_empty());
}

/// The payer challenges with the postfund and the payee counters with its voucher: by a challenge
/// of its own, or with `checkpoint` by a checkpoint first; on both backends, with `events`.
async fn payer_challenges(name: &str, nonce: u64, checkpoint: bool, events: &[&str]) {
    let scenario =
        async |env: &Env| scenarios::payer_challenges_payee_counters(env, nonce, checkpoint).await;
    let Some((_, r)) = on_both(name, scenario).await else {
        return;
    };
    assert!(r.holdings_after.is_zero());
    assert_eq!(r.events, events);
}

#[tokio::test]
async fn payer_challenges_payee_counters_with_challenge() {
    let events = [
        "Deposited",
        "ChallengeRegistered",
        "ChallengeRegistered",
        "AllocationUpdated",
    ];
    payer_challenges("payer_chal/payee_counters", 3, false, &events).await;
}

#[tokio::test]
async fn payer_challenges_payee_checkpoints() {
    let events = [
        "Deposited",
        "ChallengeRegistered",
        "ChallengeCleared",
        "ChallengeRegistered",
        "AllocationUpdated",
    ];
    payer_challenges("payer_chal/payee_checkpoint", 4, true, &events).await;
}

#[tokio::test]
async fn invalid_challenges_are_refused_with_typed_reverts() {
    let scenario = async |env: &Env| scenarios::invalid_calls(env, 5).await;
    let Some((_, r)) = on_both("invalid_calls", scenario).await else {
        return;
    };
    assert!(r.payee_received.is_zero() && r.payer_received.is_zero());
    assert_eq!(r.holdings_after, r.deposit);
    assert_eq!(r.events, ["Deposited", "ChallengeRegistered"]);
    println!("REVERTS {:?}", r.reverts);
}

// The shared chain-level scenarios of `test_utils` (also run against `SimulatedChain` in
// `tests/sim_chain.rs`), on the real contracts.

async fn shared(name: &str, nonce: u64, run: impl AsyncFnOnce(&Setup, ScenarioConfig)) {
    let started = Instant::now();
    let Some(s) = setup().await else { return };
    assert_eq!(
        key(1).address(),
        LocalSigner::from_hex(PAYER_KEY).unwrap().address()
    );
    assert_eq!(
        key(2).address(),
        LocalSigner::from_hex(PAYEE_KEY).unwrap().address()
    );
    run(&s, ScenarioConfig::new(s.env.app, nonce)).await;
    println!("TIME shared/{name:<21} {:?}", started.elapsed());
}

/// A test that runs the shared scenario `$scenario` (named `$name` in the timing line) on the
/// real contracts, with channel nonce `$nonce`.
macro_rules! shared_scenario {
    ($test:ident, $name:literal, $nonce:literal, $scenario:ident) => {
        #[tokio::test]
        async fn $test() {
            shared($name, $nonce, async |s, c| {
                Scenario::new(s.chain_for(), s.advance_time(), c)
                    .$scenario()
                    .await
            })
            .await;
        }
    };
}

shared_scenario!(shared_scenario_conclude, "conclude", 11, conclude);

shared_scenario!(
    shared_scenario_payee_redeems,
    "payee_redeems",
    12,
    payee_redeems
);

shared_scenario!(
    shared_scenario_payee_counters_stale_challenge,
    "payee_counters",
    13,
    payee_counters_stale_challenge
);

shared_scenario!(
    shared_scenario_invalid_challenges,
    "invalid_challenges",
    14,
    invalid_challenges
);

/// Two challenges that each pass gas estimation land in the same block; the second one reverts
/// on chain. Its reason is recovered by replaying it, and typed like any other revert.
#[tokio::test]
async fn on_chain_revert_is_recovered_by_replay() {
    use payment_channel::chain::{ChainError, Revert};
    let started = Instant::now();
    let Some(s) = setup().await else { return };
    let ch = scenarios::TestChannel::new(&s.env, 21);
    s.env
        .payer
        .deposit(Address::ZERO, ch.id, U256::ZERO, ch.deposit)
        .await
        .unwrap();
    let postfund = ch.postfund();
    let redemption = ch.redemption(&ch.voucher(U256::from(1000u64)), &s.env.payee_key);
    let proof = std::slice::from_ref(&postfund);
    let by_payee = ch.challenger_sig(&redemption, &s.env.payee_key);
    let by_payer = ch.challenger_sig(&redemption, &s.env.payer_key);

    s.anvil
        .rpc("evm_setAutomine", "[false]")
        .expect("automine off");
    let block = s.env.payer.block_number().await.unwrap();
    let miner = async {
        // Mine once both transactions are in the pool.
        loop {
            let pool = s.anvil.rpc("txpool_status", "[]").expect("txpool_status");
            let pending = pool["pending"]
                .as_str()
                .and_then(|h| u64::from_str_radix(h.trim_start_matches("0x"), 16).ok())
                .or_else(|| pool["pending"].as_u64())
                .unwrap_or(0);
            if pending >= 2 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        s.anvil.rpc("evm_mine", "[]").expect("evm_mine");
    };
    let (a, b, ()) = tokio::join!(
        s.env
            .payee
            .challenge(&ch.fixed, proof, &redemption, &by_payee),
        s.env
            .payer
            .challenge(&ch.fixed, proof, &redemption, &by_payer),
        miner
    );
    s.anvil
        .rpc("evm_setAutomine", "[true]")
        .expect("automine on");
    let (ok, failed) = match (a, b) {
        (Ok(r), Err(e)) | (Err(e), Ok(r)) => (r, e),
        other => panic!("expected exactly one of the two to revert: {other:?}"),
    };
    assert_eq!(ok.block_number, block + 1);
    assert!(
        matches!(
            failed,
            ChainError::Reverted(Revert::TurnNumRecordNotIncreased)
        ),
        "{failed:?}"
    );
    assert_eq!(s.env.payer.status(ch.id).await.unwrap().turn_num_record, 2);
    println!("TIME on_chain_revert_replay      {:?}", started.elapsed());
}

// ---------------------------------------------------------------- PaymentApp and ERC-20 on the real contracts

shared_scenario!(
    shared_scenario_forged_redemptions,
    "forged_redemptions",
    15,
    forged_redemptions
);

/// The deployed app is what the pinned compiler builds from `contracts/PaymentApp.sol`: its
/// runtime code hashes to the constant joiners check, which is the hash the build script pins.
#[tokio::test]
async fn deployed_payment_app_is_the_pinned_build() {
    let Some(s) = setup().await else { return };
    let hash = s.payer.code_hash(s.deployment.payment_app).await.unwrap();
    assert_eq!(hash, payment_channel::app::PAYMENT_APP_RUNTIME_HASH);
    let pinned = std::fs::read_to_string(
        payment_channel::test_utils::anvil::repo_root().join("contracts/PaymentApp.runtime-hash"),
    )
    .unwrap();
    assert_eq!(pinned.trim().parse::<B256>().unwrap(), hash);
    assert_ne!(
        s.payer
            .code_hash(s.deployment.virtual_payment_app)
            .await
            .unwrap(),
        hash
    );
    assert_eq!(
        s.deployment.payment_app,
        payment_channel::chain::sim::DEFAULT_APP_DEFINITION
    );
}

/// Why this crate does not use the published `VirtualPaymentApp`: a 1-wei voucher takes a
/// 10^15 wei deposit. Also prints the gas of a redemption challenge on each app.
#[tokio::test]
async fn virtual_payment_app_lets_a_payee_take_the_whole_deposit() {
    let Some(s) = setup().await else { return };
    let mut c = ScenarioConfig::new(s.deployment.virtual_payment_app, 16);
    c.deposit = U256::from(10u64).pow(U256::from(15u8));
    c.voucher_amount = U256::from(1u8);
    let taken = Scenario::new(s.chain_for(), s.advance_time(), c.clone())
        .virtual_payment_app_theft()
        .await;
    assert_eq!(taken, c.deposit, "the payee took everything");
    // The same theft on PaymentApp is refused (scenario e), and an honest redemption costs:
    for (name, app, nonce) in [
        ("PaymentApp", s.deployment.payment_app, 17),
        ("VirtualPaymentApp", s.deployment.virtual_payment_app, 18),
    ] {
        let f = ScenarioConfig::new(app, nonce).fixture();
        let payer = s.chain_for()(f.payer.address());
        payer
            .deposit(Address::ZERO, f.channel_id(), U256::ZERO, f.deposit)
            .await
            .unwrap();
        let redemption = f.redemption(&f.voucher(U256::from(300u64)));
        let postfund = f.signed_by_both(&f.postfund());
        let receipt = f
            .payee_challenges(s.env.payee.as_ref(), &postfund, &redemption)
            .await
            .unwrap();
        println!("GAS redemption challenge on {name}: {}", receipt.gas_used);
    }
}

/// The shared scenarios with the deposit in the package's `Token.sol` (compiled with the pinned
/// compiler), plus the gas of approve + deposit against a native deposit.
#[tokio::test]
async fn shared_scenarios_in_an_erc20() {
    use payment_channel::test_utils::anvil::deploy_token;
    let Some(dir) = artifacts_dir() else { return };
    let Some(s) = setup().await else { return };
    let token = deploy_token(&s.anvil.url, &key(0).secret_bytes(), &dir, key(1).address()).await;
    assert_eq!(s.payer.decimals(token).await.unwrap(), 18);
    let config = |nonce| ScenarioConfig::new(s.env.app, nonce).with_asset(token);
    let on = |nonce| Scenario::new(s.chain_for(), s.advance_time(), config(nonce));
    on(31).conclude().await;
    on(32).payee_redeems().await;
    on(33).payee_counters_stale_challenge().await;
    on(35).forged_redemptions().await;

    // Gas: approve + deposit in the token vs a native deposit (first deposit into a channel).
    let id = |b: u8| B256::repeat_byte(b);
    let approve = s.payer.approve(token, U256::from(1000u64)).await.unwrap();
    let token_deposit = s
        .payer
        .deposit(token, id(0xe1), U256::ZERO, U256::from(1000u64))
        .await
        .unwrap();
    let native_deposit = s
        .payer
        .deposit(Address::ZERO, id(0xe2), U256::ZERO, U256::from(1000u64))
        .await
        .unwrap();
    println!(
        "GAS deposit: ERC-20 approve {} + deposit {} = {}; native {}",
        approve.gas_used,
        token_deposit.gas_used,
        approve.gas_used + token_deposit.gas_used,
        native_deposit.gas_used
    );
}

/// Token deposits that must fail with nothing moved: no allowance, no balance, a token whose
/// `transferFrom` returns false.
#[tokio::test]
async fn erc20_deposit_failures_on_the_real_contracts() {
    use payment_channel::chain::{ChainError, Revert};
    use payment_channel::test_utils::anvil::{BadTokenMode, deploy_bad_token, deploy_token};
    let Some(dir) = artifacts_dir() else { return };
    let Some(s) = setup().await else { return };
    let payer = key(1).address();
    let token = deploy_token(&s.anvil.url, &key(0).secret_bytes(), &dir, payer).await;
    let id = B256::repeat_byte(0xd1);
    // The reason a deposit of `amount` in `token` reverts with.
    let refused = async |token, amount| match s.payer.deposit(token, id, U256::ZERO, amount).await {
        Err(ChainError::Reverted(Revert::Other(reason))) => reason,
        other => panic!("expected a revert, got {other:?}"),
    };
    assert_eq!(
        refused(token, U256::from(5u8)).await,
        "ERC20: insufficient allowance"
    );
    let balance = s.payer.balance(token, payer).await.unwrap();
    s.payer
        .approve(token, balance + U256::from(1u8))
        .await
        .unwrap();
    // A short balance: the token's own reason, as on the simulator, and nothing sent.
    let block = s.payer.block_number().await.unwrap();
    assert_eq!(
        refused(token, balance + U256::from(1u8)).await,
        "ERC20: transfer amount exceeds balance"
    );
    assert_eq!(s.payer.block_number().await.unwrap(), block);
    let liar = deploy_bad_token(
        &s.anvil.url,
        &key(0).secret_bytes(),
        &dir,
        payer,
        BadTokenMode::FalseOnTransferFrom,
    )
    .await;
    s.payer.approve(liar, U256::from(10u8)).await.unwrap();
    assert_eq!(
        refused(liar, U256::from(10u8)).await,
        "SafeERC20: ERC20 operation did not succeed"
    );
    assert_eq!(s.payer.holdings(token, id).await.unwrap(), U256::ZERO);
    assert_eq!(s.payer.holdings(liar, id).await.unwrap(), U256::ZERO);
    assert_eq!(s.payer.balance(token, payer).await.unwrap(), balance);
}
