//! The apps the simulator runs, rule for rule: this crate's `PaymentApp` (see [`crate::app`]),
//! the published `ConsensusApp` (2.0.1-alpha.6; the app of ledger channels) and the published
//! `VirtualPaymentApp`, kept to show its flaw.

use alloy_primitives::{Address, B256, U256, keccak256};

use super::{Recovered, claimed_signers_num, panic_oob, panic_overflow, recover_signer, silent};
use crate::chain::Revert;
use crate::sign::Signature;
use crate::state::{FixedPart, SingleAssetExit};
use crate::voucher::voucher_hash;

/// Index of the payer's allocation (`AllocationIndices.Alice`).
const ALICE: usize = 0;
/// Index of the payee's allocation (`AllocationIndices.Bob`).
const BOB: usize = 1;

/// Which contract answers `stateIsSupported` at an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AppKind {
    /// This crate's `PaymentApp`.
    Payment,
    /// The published `VirtualPaymentApp`.
    VirtualPayment,
    /// The published `ConsensusApp`.
    Consensus,
}

/// The arguments of an app's `stateIsSupported(fixedPart, proof, candidate)`, with every signer
/// recovered and the channel id the adjudicator derived from `fixedPart`.
#[derive(Clone, Copy)]
pub(super) struct Support<'a> {
    pub(super) fixed: &'a FixedPart,
    pub(super) channel_id: B256,
    pub(super) proof: &'a [Recovered],
    pub(super) candidate: &'a Recovered,
}

impl AppKind {
    pub(super) fn state_is_supported(self, support: Support<'_>) -> Result<(), Revert> {
        match self {
            Self::Payment => payment_app(support),
            Self::VirtualPayment => virtual_payment_app(support),
            Self::Consensus => consensus_app(support),
        }
    }
}

/// `ConsensusApp.stateIsSupported` (`Consensus.requireConsensus`): no proof, and the candidate
/// signed by every participant.
fn consensus_app(args: Support<'_>) -> Result<(), Revert> {
    require(args.proof.is_empty(), "|proof|!=0")?;
    require(
        usize::from(claimed_signers_num(args.candidate.signed_by)?)
            == args.fixed.participants.len(),
        "!unanimous",
    )
}

/// `PaymentApp.stateIsSupported`: the rules and their order are in [`crate::app`].
fn payment_app(args: Support<'_>) -> Result<(), Revert> {
    let n = args.fixed.participants.len();
    require(n >= 2, "need 2 participants")?;
    if args.proof.is_empty() {
        return require_unanimous_prefund_or_postfund(args.candidate, n);
    }
    let [postfund] = args.proof else {
        return Err(Revert::from_reason("bad proof length"));
    };
    require_proof_of_unanimous_consensus_on_post_fund(postfund, n)?;
    require(
        args.candidate.variable_part.turn_num == 2,
        "bad candidate turnNum; |proof|=1",
    )?;
    require(
        // `uint8(participants.length - 1)`: a truncating conversion, as in the contract.
        is_claimed_signed_by(args.candidate.signed_by, (n - 1) % 256),
        "redemption not signed by payee",
    )?;
    let voucher = require_valid_voucher(args)?;
    let ([old], [new]) = (
        postfund.variable_part.outcome.as_slice(),
        args.candidate.variable_part.outcome.as_slice(),
    ) else {
        return Err(Revert::from_reason("one asset only"));
    };
    require(old.asset == new.asset, "asset changed")?;
    require(
        old.asset_metadata.asset_type == new.asset_metadata.asset_type
            && keccak256(&old.asset_metadata.metadata) == keccak256(&new.asset_metadata.metadata),
        "asset metadata changed",
    )?;
    require(old.allocations.len() == 2, "two allocations only")?;
    require(
        new.allocations.len() == old.allocations.len(),
        "allocation count changed",
    )?;
    for (o, c) in old.allocations.iter().zip(&new.allocations) {
        require(o.destination == c.destination, "destination changed")?;
        require(
            o.allocation_type == c.allocation_type,
            "allocation type changed",
        )?;
        require(
            keccak256(&o.metadata) == keccak256(&c.metadata),
            "allocation metadata changed",
        )?;
    }
    let (old_payer, old_payee) = (old.allocations[ALICE].amount, old.allocations[BOB].amount);
    require(voucher <= old_payer, "voucher above payer's amount")?;
    require(
        new.allocations[ALICE].amount == old_payer - voucher,
        "payer not adjusted correctly",
    )?;
    require(
        new.allocations[BOB].amount == voucher,
        "payee not adjusted correctly",
    )?;
    require(old_payee.is_zero(), "amounts do not add up")
}

/// `VirtualPaymentApp.stateIsSupported(fixedPart, proof, candidate)`. The contract either returns
/// `(true, "")` or reverts, so `Ok(())` means supported.
fn virtual_payment_app(args: Support<'_>) -> Result<(), Revert> {
    let n = args.fixed.participants.len();

    // "states 0,1 can be supported via unanimous consensus"
    if args.proof.is_empty() {
        return require_unanimous_prefund_or_postfund(args.candidate, n);
    }

    // "State 2 can be supported via a forced transition from state 1"
    if let [postfund] = args.proof {
        require_proof_of_unanimous_consensus_on_post_fund(postfund, n)?;
        require(
            args.candidate.variable_part.turn_num == 2,
            "bad candidate turnNum; |proof|=1",
        )?;
        // `uint8(fixedPart.participants.length - 1)`: checked subtraction, truncating conversion.
        let bob_index = n.checked_sub(1).ok_or_else(panic_overflow)? % 256;
        require(
            is_claimed_signed_by(args.candidate.signed_by, bob_index),
            "redemption not signed by Bob",
        )?;
        let voucher_amount = require_valid_voucher(args)?;
        require_correct_adjustments(
            &postfund.variable_part.outcome,
            &args.candidate.variable_part.outcome,
            voucher_amount,
        )?;
        return Ok(());
    }
    Err(Revert::from_reason("bad proof length"))
}

fn require(condition: bool, reason: &str) -> Result<(), Revert> {
    if condition {
        Ok(())
    } else {
        Err(Revert::from_reason(reason))
    }
}

/// `|proof| = 0`, the same rule in both apps: turn 0 or 1, signed by all `n` participants.
fn require_unanimous_prefund_or_postfund(candidate: &Recovered, n: usize) -> Result<(), Revert> {
    require(
        usize::from(claimed_signers_num(candidate.signed_by)?) == n,
        "!unanimous; |proof|=0",
    )?;
    require(
        candidate.variable_part.turn_num <= 1,
        "bad candidate turnNum; |proof|=0",
    )
}

fn is_claimed_signed_by(signed_by: U256, index: usize) -> bool {
    (signed_by >> index).bit(0)
}

fn require_proof_of_unanimous_consensus_on_post_fund(
    rvp: &Recovered,
    num_participants: usize,
) -> Result<(), Revert> {
    require(
        rvp.variable_part.turn_num == 1,
        "bad proof[0].turnNum; |proof|=1",
    )?;
    require(
        usize::from(claimed_signers_num(rvp.signed_by)?) == num_participants,
        "postfund !unanimous; |proof|=1",
    )
}

/// `abi.decode(appData, (VoucherAmountAndSignature))` as the Solidity decoder does it: at least
/// four words (trailing bytes are ignored), and `v` must fit in a `uint8`.
fn decode_voucher(app_data: &[u8]) -> Result<(U256, Signature), Revert> {
    let word = |i: usize| -> Result<[u8; 32], Revert> {
        app_data
            .get(i * 32..(i + 1) * 32)
            .and_then(|w| <[u8; 32]>::try_from(w).ok())
            .ok_or_else(|| silent("abi.decode of appData as VoucherAmountAndSignature: too short"))
    };
    let amount = U256::from_be_bytes(word(0)?);
    let v_word = word(1)?;
    if v_word[..31].iter().any(|b| *b != 0) {
        return Err(silent(
            "abi.decode of appData as VoucherAmountAndSignature: v does not fit in uint8",
        ));
    }
    let signature = Signature {
        v: v_word[31],
        r: B256::from(word(2)?),
        s: B256::from(word(3)?),
    };
    Ok((amount, signature))
}

/// The amount of the voucher in the candidate's `appData`, which the payer (participant 0) must
/// have signed for this channel.
fn require_valid_voucher(args: Support<'_>) -> Result<U256, Revert> {
    let (amount, signature) = decode_voucher(&args.candidate.variable_part.app_data)?;
    let signer = recover_signer(&voucher_hash(args.channel_id, amount), &signature)?;
    let alice: Address = *args.fixed.participants.first().ok_or_else(panic_oob)?;
    // "could be incorrect channelId or incorrect signature"
    require(signer == alice, "invalid signature for voucher")?;
    Ok(amount)
}

fn allocation_amount(exit: &SingleAssetExit, index: usize) -> Result<U256, Revert> {
    exit.allocations
        .get(index)
        .map(|a| a.amount)
        .ok_or_else(panic_oob)
}

fn require_correct_adjustments(
    old_outcome: &[SingleAssetExit],
    new_outcome: &[SingleAssetExit],
    voucher_amount: U256,
) -> Result<(), Revert> {
    let (old, new) = match (old_outcome, new_outcome) {
        ([old], [new]) if old.asset == Address::ZERO && new.asset == Address::ZERO => (old, new),
        _ => return Err(Revert::from_reason("only native asset allowed")),
    };
    // `new[Alice].amount == old[Alice].amount - voucherAmount`; 0.8 checked arithmetic, so an
    // overdrawn voucher panics (0x11) rather than failing the require.
    let old_alice = allocation_amount(old, ALICE)?;
    let expected_alice = old_alice
        .checked_sub(voucher_amount)
        .ok_or_else(panic_overflow)?;
    let new_alice = allocation_amount(new, ALICE)?;
    require(new_alice == expected_alice, "Alice not adjusted correctly")?;
    let new_bob = allocation_amount(new, BOB)?;
    require(new_bob == voucher_amount, "Bob not adjusted correctly")
}
