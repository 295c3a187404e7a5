//! `VirtualPaymentApp.stateIsSupported` (2.0.1-alpha.6), rule for rule.

use alloy_primitives::{Address, B256, U256};

use super::{Recovered, claimed_signers_num, panic_oob, panic_overflow, recover_signer, silent};
use crate::chain::Revert;
use crate::sign::Signature;
use crate::state::{FixedPart, SingleAssetExit};
use crate::voucher::voucher_hash;

/// Index of the payer's allocation (`AllocationIndices.Alice`).
const ALICE: usize = 0;
/// Index of the payee's allocation (`AllocationIndices.Bob`).
const BOB: usize = 1;

/// `stateIsSupported(fixedPart, proof, candidate)`. The contract either returns `(true, "")` or
/// reverts, so `Ok(())` means supported.
pub(super) fn state_is_supported(
    fixed: &FixedPart,
    channel_id: B256,
    proof: &[Recovered],
    candidate: &Recovered,
) -> Result<(), Revert> {
    let n = fixed.participants.len();

    // "states 0,1 can be supported via unanimous consensus"
    if proof.is_empty() {
        require(
            usize::from(claimed_signers_num(candidate.signed_by)?) == n,
            "!unanimous; |proof|=0",
        )?;
        if candidate.variable_part.turn_num == 0 || candidate.variable_part.turn_num == 1 {
            return Ok(());
        }
        return Err(Revert::from_reason("bad candidate turnNum; |proof|=0"));
    }

    // "State 2 can be supported via a forced transition from state 1"
    if let [postfund] = proof {
        require_proof_of_unanimous_consensus_on_post_fund(postfund, n)?;
        require(
            candidate.variable_part.turn_num == 2,
            "bad candidate turnNum; |proof|=1",
        )?;
        // `uint8(fixedPart.participants.length - 1)`: checked subtraction, truncating conversion.
        let bob_index = n.checked_sub(1).ok_or_else(panic_overflow)? % 256;
        require(
            is_claimed_signed_by(candidate.signed_by, bob_index),
            "redemption not signed by Bob",
        )?;
        let voucher_amount =
            require_valid_voucher(&candidate.variable_part.app_data, fixed, channel_id)?;
        require_correct_adjustments(
            &postfund.variable_part.outcome,
            &candidate.variable_part.outcome,
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

fn require_valid_voucher(
    app_data: &[u8],
    fixed: &FixedPart,
    channel_id: B256,
) -> Result<U256, Revert> {
    let (amount, signature) = decode_voucher(app_data)?;
    let signer = recover_signer(&voucher_hash(channel_id, amount), &signature)?;
    let alice: Address = *fixed.participants.first().ok_or_else(panic_oob)?;
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
