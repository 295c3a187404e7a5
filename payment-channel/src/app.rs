//! The payment app: the `IForceMoveApp` every channel of this crate names as its
//! `appDefinition`, and what a joiner checks before it trusts one.
//!
//! The contract is `PaymentApp` (`contracts/PaymentApp.sol` in this repository, built from
//! source with a pinned compiler by `scripts/build-contracts.sh`). It keeps the state shape and
//! the voucher encoding of `VirtualPaymentApp` (`@statechannels/nitro-protocol@2.0.1-alpha.6`) but
//! closes its flaw: `VirtualPaymentApp` compares only the two allocation *amounts* of a
//! redemption with the postfund state, so a payee holding one voucher could sign a redemption
//! whose allocation 0 (the payer's change) points at itself, challenge with it and take the whole
//! deposit. `PaymentApp` requires the redemption's outcome to equal the postfund outcome in
//! everything but the two amounts, and it accepts any single asset (the native coin or an
//! ERC-20), where `VirtualPaymentApp` refuses every asset but the native coin.
//!
//! # Rules (`stateIsSupported`), in the contract's order, with their revert strings
//! | # | candidate | rule | revert string |
//! |---|---|---|---|
//! | 0 | any | at least two participants | `need 2 participants` |
//! | 1 | proof `[]` | signed by every participant | `!unanimous; \|proof\|=0` |
//! | 2 | proof `[]` | turn 0 or 1 | `bad candidate turnNum; \|proof\|=0` |
//! | 3 | proof `[postfund]` | proof is turn 1 | `bad proof[0].turnNum; \|proof\|=1` |
//! | 4 | | proof signed by every participant | `postfund !unanimous; \|proof\|=1` |
//! | 5 | | candidate is turn 2 | `bad candidate turnNum; \|proof\|=1` |
//! | 6 | | signed by the last participant (the payee) | `redemption not signed by payee` |
//! | 7 | | app data = voucher signed by participant 0 (the payer) | `invalid signature for voucher` |
//! | 8 | | one asset in both outcomes | `one asset only` |
//! | 9 | | same asset | `asset changed` |
//! | 10 | | same asset metadata | `asset metadata changed` |
//! | 11 | | the postfund has two allocations | `two allocations only` |
//! | 12 | | same number of allocations | `allocation count changed` |
//! | 13 | | per allocation: same destination, type, metadata | `destination changed`, `allocation type changed`, `allocation metadata changed` |
//! | 14 | | voucher ≤ the payer's postfund amount | `voucher above payer's amount` |
//! | 15 | | payer's amount lowered by exactly the voucher | `payer not adjusted correctly` |
//! | 16 | | payee's amount is exactly the voucher | `payee not adjusted correctly` |
//! | 17 | | the payee's postfund amount is 0 (the total is kept) | `amounts do not add up` |
//! | – | proof of any other length | | `bad proof length` |
//!
//! # Checking a deployed app
//! A channel's app decides who can take its deposit, so a joiner must not take the proposer's
//! word for it: [`Client`](crate::client::Client) joins a proposal only if the code deployed at
//! its `appDefinition` hashes to [`PAYMENT_APP_RUNTIME_HASH`] (read with
//! [`Chain::code_hash`](crate::chain::Chain::code_hash)). The build script fails when the pinned
//! compiler produces other runtime code than this hash, and a test checks the hash against
//! `contracts/PaymentApp.runtime-hash`.

use alloy_primitives::{B256, b256};

/// `keccak256` of `PaymentApp`'s runtime code, as the pinned compiler (solc 0.8.17, see
/// `contracts/build.mjs`) produces it and as `eth_getCode` returns it once deployed.
pub const PAYMENT_APP_RUNTIME_HASH: B256 =
    b256!("0xfbd107857d0e89a07b085a29467b06e16f7be25912fee8bd49913c4a7f1d94f9");

/// Every reason `PaymentApp.stateIsSupported` reverts with (typed as
/// [`Revert::NotSupported`](crate::chain::Revert::NotSupported)).
pub const PAYMENT_APP_REVERTS: &[&str] = &[
    "need 2 participants",
    "!unanimous; |proof|=0",
    "bad candidate turnNum; |proof|=0",
    "bad proof[0].turnNum; |proof|=1",
    "postfund !unanimous; |proof|=1",
    "bad candidate turnNum; |proof|=1",
    "redemption not signed by payee",
    "invalid signature for voucher",
    "one asset only",
    "asset changed",
    "asset metadata changed",
    "two allocations only",
    "allocation count changed",
    "destination changed",
    "allocation type changed",
    "allocation metadata changed",
    "voucher above payer's amount",
    "payer not adjusted correctly",
    "payee not adjusted correctly",
    "amounts do not add up",
    "bad proof length",
];

/// The reasons of the published `VirtualPaymentApp` that `PaymentApp` does not share (kept so
/// that its documented flaw can be tested against it).
pub const VIRTUAL_PAYMENT_APP_REVERTS: &[&str] = &[
    "redemption not signed by Bob",
    "only native asset allowed",
    "Alice not adjusted correctly",
    "Bob not adjusted correctly",
];

#[cfg(test)]
mod tests {
    use super::*;

    /// The constant joiners check is the hash `scripts/build-contracts.sh` pins (and fails on).
    #[test]
    fn runtime_hash_is_the_pinned_build() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../contracts/PaymentApp.runtime-hash"
        );
        let pinned = std::fs::read_to_string(path).expect("contracts/PaymentApp.runtime-hash");
        assert_eq!(
            pinned.trim().parse::<B256>().unwrap(),
            PAYMENT_APP_RUNTIME_HASH
        );
    }

    /// Every reason of the app is typed as a rejection by the app.
    #[test]
    fn every_reason_is_typed_not_supported() {
        for r in PAYMENT_APP_REVERTS
            .iter()
            .chain(VIRTUAL_PAYMENT_APP_REVERTS)
        {
            assert_eq!(
                crate::chain::Revert::from_reason(r),
                crate::chain::Revert::NotSupported((*r).to_owned())
            );
        }
    }
}
