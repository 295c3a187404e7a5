//! The buyer's on-chain transactions and gas for a download from N seeders, direct channels vs
//! virtual channels through a hub, computed from per-call gas measured on anvil with the published
//! Nitro contracts (nitro-protocol 2.0.1-alpha.6) and this crate's `PaymentApp`:
//! - direct channels: `payment-channel/tests/gas.rs` (sum of each party's receipts per lifecycle,
//!   recorded in the README's "No gas for nothing");
//! - ledgers and virtual channels: `payment-channel/tests/virtual_funding.rs` (header table, printed
//!   by `support::hub` as `GAS <script> <call> <gas>`).
//!
//! Prints a Markdown table: `cargo test -p paid-benches --test hub_gas_table -- --nocapture`.
//! For N = 1, 3, 10 the cooperative columns are also measured end to end on anvil
//! (`payment-channel/tests/hub_service.rs` `figure_hub_gas_for_1_3_10_payees_on_anvil`, `gas.rs`
//! `figure_direct_gas_for_1_3_10_sellers`); this table is their upper end (every payout creates
//! its account) and the only source for N = 30 and the sad paths.
//! Which party sends which call follows the code: a direct channel's buyer only deposits (the
//! seller concludes and pays out); a ledger's cooperative close is sent by the side with a share
//! (`Ledger::chain_duties`), i.e. the buyer for L(buyer, hub) and the hub for L(hub, seller).

/// Direct channel, happy close, buyer: one `deposit`.
const DIRECT_BUYER_HAPPY: u64 = 46_496;
/// Direct channel, happy close, seller: `conclude` + `transferAllAssets`.
const DIRECT_SELLER_HAPPY: u64 = 191_975;
/// Direct channel, the seller vanished, buyer: deposit + challenge + payout.
const DIRECT_BUYER_VANISHED_SELLER: u64 = 236_537;
/// Transactions of the direct buyer when the seller vanished: deposit, challenge, payout.
const DIRECT_BUYER_VANISHED_SELLER_TXS: u64 = 3;

/// `deposit` into a ledger (first deposit).
const LEDGER_DEPOSIT: u64 = 46_532;
/// `concludeAndTransferAllAssets` of a ledger without guarantees.
const LEDGER_CONCLUDE_AND_TRANSFER: u64 = 143_286;
/// `challenge` of a ledger at turn ≥ 2 (holding guarantees).
const LEDGER_CHALLENGE: u64 = 122_473;
/// `challenge` of V with the prefund (the hub's or the payer's exit, no voucher).
const V_CHALLENGE_FUNDING_STATE: u64 = 119_220;
/// `reclaim` of one guarantee.
const RECLAIM: u64 = 61_854;
/// `transferAllAssets` of a ledger after its reclaims (upper end: a payee account created).
const LEDGER_TRANSFER_ALL: u64 = 113_786;

/// One row: N seeders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Row {
    n: u64,
    direct_txs: u64,
    direct_gas: u64,
    direct_all_parties_gas: u64,
    hub_txs: u64,
    hub_gas: u64,
    hub_all_parties_gas: u64,
    direct_sad_txs: u64,
    direct_sad_gas: u64,
    hub_sad_txs: u64,
    hub_sad_gas: u64,
}

fn row(n: u64) -> Row {
    // Hub, cooperative: the buyer deposits into L(buyer, hub) once and closes it once; the hub
    // deposits into and closes L(hub, seller) per seller (when it has no ledger with that
    // seller yet: ledgers are reused across downloads and buyers).
    let hub_buyer = LEDGER_DEPOSIT + LEDGER_CONCLUDE_AND_TRANSFER;
    let hub_side_per_seller = LEDGER_DEPOSIT + LEDGER_CONCLUDE_AND_TRANSFER;
    // Hub vanished, the buyer exits alone: each V challenged with its postfund (as the prefund),
    // L(buyer, hub) challenged, one reclaim per V, one payout.
    let hub_sad = LEDGER_DEPOSIT
        + n * V_CHALLENGE_FUNDING_STATE
        + LEDGER_CHALLENGE
        + n * RECLAIM
        + LEDGER_TRANSFER_ALL;
    Row {
        n,
        direct_txs: n,
        direct_gas: n * DIRECT_BUYER_HAPPY,
        direct_all_parties_gas: n * (DIRECT_BUYER_HAPPY + DIRECT_SELLER_HAPPY),
        hub_txs: 2,
        hub_gas: hub_buyer,
        hub_all_parties_gas: hub_buyer + n * hub_side_per_seller,
        direct_sad_txs: n * DIRECT_BUYER_VANISHED_SELLER_TXS,
        direct_sad_gas: n * DIRECT_BUYER_VANISHED_SELLER,
        hub_sad_txs: 1 + n + 1 + n + 1,
        hub_sad_gas: hub_sad,
    }
}

fn thousands(x: u64) -> String {
    let s = x.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[test]
fn buyer_gas_direct_vs_hub() {
    let rows: Vec<Row> = [1, 3, 10, 30].into_iter().map(row).collect();
    println!(
        "| seeders N | direct: buyer txs | direct: buyer gas | hub: buyer txs | hub: buyer gas | direct: all parties gas | hub: all parties gas (new ledgers) | seller vanished / hub vanished: buyer txs, gas (direct) | (hub) |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {}, {} | {}, {} |",
            r.n,
            r.direct_txs,
            thousands(r.direct_gas),
            r.hub_txs,
            thousands(r.hub_gas),
            thousands(r.direct_all_parties_gas),
            thousands(r.hub_all_parties_gas),
            r.direct_sad_txs,
            thousands(r.direct_sad_gas),
            r.hub_sad_txs,
            thousands(r.hub_sad_gas),
        );
    }
    // The buyer's cooperative cost through a hub does not depend on N; direct grows with N.
    assert!(
        rows.iter()
            .all(|r| r.hub_txs == 2 && r.hub_gas == rows[0].hub_gas)
    );
    assert_eq!(rows[3].direct_txs, 30);
    // Direct is cheaper for the buyer only with a few sellers: the hub pays off from N = 5.
    let break_even = (1..100)
        .find(|&n| row(n).hub_gas < row(n).direct_gas)
        .unwrap();
    println!("hub cheaper for the buyer from N = {break_even}");
    assert_eq!(break_even, 5);
    assert_eq!(thousands(1_234_567), "1,234,567");
}
