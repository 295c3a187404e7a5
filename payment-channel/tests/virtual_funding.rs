//! Virtual funding through a hub on chain (issue 15): ledger channels with the published
//! `ConsensusApp`, type-2 guarantees for a virtual channel `V = [payer, hub, payee]` with
//! `PaymentApp`, `reclaim`, and the contract hazards of the reference (§0.1, §0.2, §0.4, §3.1).
//!
//! Every script of `support::hub` runs on `SimulatedChain` and, when anvil and the artifacts are
//! installed (`scripts/ci-install.sh`), on anvil with the real contracts; both must end with the
//! same payouts, holdings, statuses (turn, mode, fingerprint), events and revert strings. On
//! anvil the gas of each call is printed (`GAS <script> <call> <gas>`, run with `--nocapture`)
//! and checked against loose regression bounds.
//!
//! Gas on anvil 1.x (nitro-protocol 2.0.1-alpha.6, this crate's `PaymentApp`, V with 3
//! participants), as the tests printed it; the "sum" rows are the on-chain exits of the
//! reference §4.2 for comparison:
//!
//! | call                                                          | gas     |
//! |---------------------------------------------------------------|---------|
//! | `deposit` into a ledger (first deposit)                       | 46 532  |
//! | `challenge` a ledger, turn 2 with a guarantee                 | 122 473 |
//! | `challenge` a ledger, turn 1 without guarantee                | 113 170 |
//! | `checkpoint` a ledger (clears a challenge)                    | 79 550  |
//! | `conclude` a ledger (final state, guarantee still in)         | 83 127  |
//! | `challenge` V with the payee's redemption (proof = postfund)  | 172 121 |
//! | `challenge` V with the prefund (hub exit)                     | 119 220 |
//! | counter-`challenge` of V with the redemption                  | 155 481 |
//! | `conclude` V (3 signatures)                                   | 88 213  |
//! | `reclaim`                                                     | 61 854  |
//! | `transferAllAssets` of a ledger after reclaim (2 payouts)     | 88 798 – 113 786 (a payee account created: +25k) |
//! | `concludeAndTransferAllAssets` of a ledger without guarantees | 143 286 |
//! | `transfer(…, [2])` of a guarantee by a third party (§0.4)     | 81 814  |
//! | S1 hub side: 2× challenge L, 2× reclaim, 2× transferAllAssets | ≈ 571k  |
//! | S1 in all, with the payee's challenge of V                    | ≈ 744k  |
//!
//! Each call's regression bound (≈ 1.3× these) is in `support::hub`.

mod support;

use std::sync::Arc;

use alloy_primitives::address;
use payment_channel::Address;
use payment_channel::sign::Signer;
use payment_channel::test_utils::anvil::{dev_key as key, simulated_dev_chain};
#[cfg(feature = "ethereum")]
use support::hub::HubReport;
use support::hub::{self, HubEnv};

/// Where anvil's dev account #0 deploys `VirtualPaymentApp` (its third deployment, see
/// `chain::ethereum::deploy`); the simulator installs it there too.
const VIRTUAL_PAYMENT_APP: Address = address!("0x9fE46736679d2D9a65F0992F2272dE9f3c7fa6e0");

/// A fresh `SimulatedChain` with the accounts funded like anvil's dev accounts: #1 payer, #2
/// hub, #3 payee, #0 the third party.
fn sim_env() -> HubEnv {
    let sim = simulated_dev_chain(0..4);
    sim.install_virtual_payment_app(VIRTUAL_PAYMENT_APP);
    HubEnv {
        payer: Arc::new(sim.handle(key(1).address())),
        hub: Arc::new(sim.handle(key(2).address())),
        payee: Arc::new(sim.handle(key(3).address())),
        third_party: Arc::new(sim.handle(key(0).address())),
        payer_key: key(1),
        hub_key: key(2),
        payee_key: key(3),
        payment_app: sim.app_definition(),
        consensus_app: sim.consensus_app(),
        virtual_payment_app: VIRTUAL_PAYMENT_APP,
        advance: support::scenarios::sim_advance(&sim),
    }
}

#[cfg(feature = "ethereum")]
mod anvil {
    use super::*;
    use payment_channel::chain::EthereumChain;
    use payment_channel::test_utils::anvil::{Anvil, deployed};

    /// A node with the contracts deployed, and the same accounts as [`sim_env`].
    pub(crate) struct Node {
        pub(crate) env: HubEnv,
        _anvil: Anvil,
    }

    pub(crate) async fn env() -> Option<Node> {
        let (anvil, d, _) = deployed().await?;
        assert_eq!(d.virtual_payment_app, VIRTUAL_PAYMENT_APP);
        let mut handles = Vec::new();
        for i in 0..4 {
            let chain =
                EthereumChain::connect(&anvil.url, &key(i).secret_bytes(), d.nitro_adjudicator)
                    .await
                    .expect("connect");
            handles.push(Arc::new(chain));
        }
        let env = HubEnv {
            payer: handles[1].clone(),
            hub: handles[2].clone(),
            payee: handles[3].clone(),
            third_party: handles[0].clone(),
            payer_key: key(1),
            hub_key: key(2),
            payee_key: key(3),
            payment_app: d.payment_app,
            consensus_app: d.consensus_app,
            virtual_payment_app: d.virtual_payment_app,
            advance: support::scenarios::anvil_advance(handles[0].clone()),
        };
        Some(Node { env, _anvil: anvil })
    }
}

/// Prints the gas table of an anvil run, checks its bounds, and checks that the simulator ended
/// the same way.
#[cfg(feature = "ethereum")]
fn compare(name: &str, anvil: &HubReport, sim: &HubReport) {
    for g in &anvil.gas {
        println!("GAS {name:<34} {:<40} {:>8}", g.call, g.gas);
        assert!(
            g.gas > 0 && g.gas <= g.bound,
            "{name}: {} used {} gas (bound {})",
            g.call,
            g.gas,
            g.bound
        );
    }
    assert_eq!(
        anvil.comparable(),
        sim.comparable(),
        "{name}: anvil (left) and SimulatedChain (right) disagree"
    );
}

/// Runs `script` on the simulator, then (when available) on anvil, and compares.
macro_rules! on_both {
    ($name:ident, $script:path, $nonce:expr) => {
        #[tokio::test]
        async fn $name() {
            let sim = $script(&sim_env(), $nonce).await;
            assert!(sim.gas.iter().all(|g| g.gas == 0));
            #[cfg(feature = "ethereum")]
            {
                let Some(node) = anvil::env().await else {
                    return;
                };
                let real = $script(&node.env, $nonce).await;
                compare(stringify!($name), &real, &sim);
            }
        }
    };
}

on_both!(
    s1_both_ledgers_challenged_v_redeemed_then_two_reclaims,
    hub::s1_both_ledgers_and_redemption,
    100
);
on_both!(
    s5_hub_exits_v_with_prefund_payee_counters_ledgers_concluded,
    hub::s5_hub_exits_payee_counters,
    200
);
on_both!(
    stale_ledger_challenge_is_cleared_by_a_checkpoint,
    hub::stale_ledger_challenge_cleared,
    300
);
on_both!(
    type_1_guarantee_is_refused_by_reclaim_and_paid_into_v,
    hub::type_1_guarantee_is_not_reclaimable,
    400
);
on_both!(
    b0_above_zero_is_refused_by_payment_app_and_breaks_reclaim_with_virtual_payment_app,
    hub::b0_breaks_reclaim,
    500
);
on_both!(
    v_with_app_definition_zero_cannot_be_challenged,
    hub::zero_app_v_cannot_be_challenged,
    600
);
on_both!(
    s3_anyone_can_transfer_a_finalized_ledgers_guarantee_into_v,
    hub::third_party_transfer_of_a_guarantee,
    700
);
on_both!(
    s3_the_payer_takes_a0_twice_if_the_hub_does_not_reclaim_at_once,
    hub::payer_takes_a0_twice_through_transfer,
    900
);
on_both!(
    cooperative_ledger_close_with_conclude_and_transfer_all_assets,
    hub::cooperative_ledger_close,
    800
);
