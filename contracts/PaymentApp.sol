// SPDX-License-Identifier: MIT
pragma solidity 0.8.17;

import {IForceMoveApp} from '@statechannels/nitro-protocol/contracts/interfaces/IForceMoveApp.sol';
import {INitroTypes} from '@statechannels/nitro-protocol/contracts/interfaces/INitroTypes.sol';
import {NitroUtils} from '@statechannels/nitro-protocol/contracts/libraries/NitroUtils.sol';
import {ExitFormat as Outcome} from '@statechannels/exit-format/contracts/ExitFormat.sol';

/**
 * @title PaymentApp
 * @notice The ForceMove app of a one-way voucher payment channel: participants[0] (the payer)
 * pays participants[n-1] (the payee) with vouchers, and the payee can redeem the largest voucher
 * it holds on chain without the payer's cooperation.
 * @dev Same states, app data and voucher encoding as `VirtualPaymentApp` of the npm package
 * statechannels/nitro-protocol, version 2.0.1-alpha.6, so the off-chain protocol is unchanged:
 *
 *   turn 0  prefund      signed by all n participants
 *   turn 1  postfund     signed by all n participants
 *   turn 2  redemption   signed by the payee alone, supported by the postfund as proof;
 *                        appData = abi.encode(VoucherAmountAndSignature), the voucher signed by
 *                        the payer over keccak256(abi.encode(channelId, amount)) (eth_sign
 *                        prefix). Its outcome is the postfund outcome with `amount` moved from
 *                        allocation 0 (payer) to allocation 1 (payee).
 *
 * `VirtualPaymentApp` checks only the two allocation *amounts* of the redemption against the
 * postfund state. Everything else in the outcome is up to the payee, who signs the redemption
 * alone: it can point allocation 0 (the payer's change) at itself and take the whole deposit
 * with a one-wei voucher, swap an allocation's type or metadata, or append allocations. It also
 * refuses every asset but the chain's native coin. This contract requires the redemption's
 * outcome to equal the postfund outcome in everything but the two amounts, and accepts any one
 * asset (native coin or ERC-20).
 *
 * The rules are checked in a fixed order, each with its own revert string, and the Rust
 * simulator of this repository (`payment-channel`, `chain/sim/app.rs`) mirrors them one for one:
 * do not reorder them or change a string without changing it too. Besides these strings,
 * `NitroUtils.recoverSigner` reverts with 'Invalid signature' when the voucher's signature
 * recovers to no address, `abi.decode` reverts without a reason on malformed app data, and
 * `NitroUtils.getClaimedSignersNum` panics (overflow) on a mask with all 256 bits set.
 */
contract PaymentApp is IForceMoveApp {
    /// @notice The app data of a redemption (turn 2): the voucher the payee redeems.
    struct VoucherAmountAndSignature {
        uint256 amount; // the total paid so far, not an increment
        INitroTypes.Signature signature; // the payer's, on keccak256(abi.encode(channelId, amount))
    }

    /// @dev Index of the payer's allocation in the single asset's allocations.
    uint256 internal constant PAYER = 0;
    /// @dev Index of the payee's allocation (zero in the postfund state).
    uint256 internal constant PAYEE = 1;

    /**
     * @notice Returns (true, "") when `candidate` is supported by `proof`; reverts otherwise.
     * @dev Rule 0, `need 2 participants`: payer and payee must be distinct slots. With zero
     * participants `VirtualPaymentApp` treats a state signed by nobody as unanimous, and with
     * one the payer is its own payee.
     *
     * `|proof| = 0` (prefund and postfund): the candidate must be signed by every participant
     * (`!unanimous; |proof|=0`) and be turn 0 or 1 (`bad candidate turnNum; |proof|=0`).
     *
     * `|proof| = 1`: the candidate is a redemption, see `_requireRedemption`.
     *
     * Any other proof: `bad proof length`.
     * @param fixedPart Fixed part of the channel.
     * @param proof Recovered variable parts supporting the candidate: none, or the postfund state.
     * @param candidate The recovered variable part to support.
     * @return (true, "") when supported.
     */
    function stateIsSupported(
        FixedPart calldata fixedPart,
        RecoveredVariablePart[] calldata proof,
        RecoveredVariablePart calldata candidate
    ) external pure override returns (bool, string memory) {
        uint256 n = fixedPart.participants.length;
        require(n >= 2, 'need 2 participants');

        if (proof.length == 0) {
            require(
                NitroUtils.getClaimedSignersNum(candidate.signedBy) == n,
                '!unanimous; |proof|=0'
            );
            uint48 turnNum = candidate.variablePart.turnNum;
            if (turnNum == 0 || turnNum == 1) return (true, ''); // prefund, postfund
            revert('bad candidate turnNum; |proof|=0');
        }

        if (proof.length == 1) {
            _requireRedemption(fixedPart, proof[0], candidate);
            return (true, '');
        }

        revert('bad proof length');
    }

    /**
     * @dev A redemption (turn 2, signed by the payee) supported by the unanimous postfund
     * state (turn 1). In order:
     *  a. `bad proof[0].turnNum; |proof|=1`, b. `postfund !unanimous; |proof|=1`: the proof is
     *     the postfund state every participant signed, the outcome the payer agreed to fund.
     *  c. `bad candidate turnNum; |proof|=1`: the candidate is the redemption, turn 2.
     *  d. `redemption not signed by payee`: participants[n-1] signed it. (`n - 1` fits in a
     *     uint8 here: with more than 255 participants rule b has already failed, as the signer
     *     count is a uint8.)
     *  e. `invalid signature for voucher`: its app data is a voucher the payer signed for this
     *     channel; the channel id in the signed hash stops replaying a voucher of another channel.
     *  Then `_requireSameOutcomeShape` and `_requireVoucherAdjustment`.
     */
    function _requireRedemption(
        FixedPart calldata fixedPart,
        RecoveredVariablePart calldata postfund,
        RecoveredVariablePart calldata candidate
    ) internal pure {
        uint256 n = fixedPart.participants.length;
        require(postfund.variablePart.turnNum == 1, 'bad proof[0].turnNum; |proof|=1');
        require(
            NitroUtils.getClaimedSignersNum(postfund.signedBy) == n,
            'postfund !unanimous; |proof|=1'
        );
        require(candidate.variablePart.turnNum == 2, 'bad candidate turnNum; |proof|=1');
        require(
            NitroUtils.isClaimedSignedBy(candidate.signedBy, uint8(n - 1)),
            'redemption not signed by payee'
        );
        uint256 voucher = _requireValidVoucher(candidate.variablePart.appData, fixedPart);

        Outcome.SingleAssetExit[] calldata before = postfund.variablePart.outcome;
        Outcome.SingleAssetExit[] calldata next = candidate.variablePart.outcome;
        // f. `one asset only`: one asset in both outcomes. (`VirtualPaymentApp` required this
        //    too, and refused any asset but the native coin.)
        require(before.length == 1 && next.length == 1, 'one asset only');
        _requireSameOutcomeShape(before[0], next[0]);
        _requireVoucherAdjustment(before[0], next[0], voucher);
    }

    /**
     * @dev Decodes the app data as a `VoucherAmountAndSignature` and requires the payer
     * (participants[0]) to have signed keccak256(abi.encode(channelId, amount)).
     * @return The voucher's amount.
     */
    function _requireValidVoucher(
        bytes calldata appData,
        FixedPart calldata fixedPart
    ) internal pure returns (uint256) {
        VoucherAmountAndSignature memory voucher = abi.decode(
            appData,
            (VoucherAmountAndSignature)
        );
        bytes32 voucherHash = keccak256(
            abi.encode(NitroUtils.getChannelId(fixedPart), voucher.amount)
        );
        address signer = NitroUtils.recoverSigner(voucherHash, voucher.signature);
        // a wrong channel id or a wrong signature both land here
        require(signer == fixedPart.participants[0], 'invalid signature for voucher');
        return voucher.amount;
    }

    /**
     * @dev The redemption's outcome keeps everything of the postfund outcome but the amounts.
     * `VirtualPaymentApp` compared nothing of this, and the payee, who signs the redemption
     * alone, could rewrite any of it:
     *  g. `asset changed`: the same asset. Now that any asset is accepted, a redemption in
     *     another asset would claim holdings the channel was not funded with and leave the
     *     funded ones locked.
     *  h. `asset metadata changed`: the same asset type and metadata (a token id of an ERC-721 or
     *     ERC-1155 exit, the chain and holder of a qualified asset).
     *  i. `two allocations only`: the postfund outcome is payer + payee, which the two amount
     *     rules below assume. (`VirtualPaymentApp` would index a one-allocation outcome out of
     *     bounds and ignore any further ones.)
     *  j. `allocation count changed`: no allocation appended or dropped; an appended allocation
     *     naming the payee would be paid out of whatever the channel holds beyond the two.
     *  k. per allocation, payer's then payee's:
     *     `destination changed`: THE flaw of `VirtualPaymentApp`: the payee redirects allocation
     *     0, the payer's change, to itself and takes the whole deposit;
     *     `allocation type changed`: a simple allocation turned into a guarantee or withdraw
     *     helper is paid out differently (or not at all) by the adjudicator;
     *     `allocation metadata changed`: the metadata of a guarantee or withdraw helper names who
     *     is really paid (the guarantee's targets, the helper's call).
     */
    function _requireSameOutcomeShape(
        Outcome.SingleAssetExit calldata before,
        Outcome.SingleAssetExit calldata next
    ) internal pure {
        require(before.asset == next.asset, 'asset changed');
        require(
            before.assetMetadata.assetType == next.assetMetadata.assetType &&
                keccak256(before.assetMetadata.metadata) == keccak256(next.assetMetadata.metadata),
            'asset metadata changed'
        );
        require(before.allocations.length == 2, 'two allocations only');
        require(next.allocations.length == before.allocations.length, 'allocation count changed');
        for (uint256 i = 0; i < 2; i++) {
            Outcome.Allocation calldata a = before.allocations[i];
            Outcome.Allocation calldata b = next.allocations[i];
            require(a.destination == b.destination, 'destination changed');
            require(a.allocationType == b.allocationType, 'allocation type changed');
            require(keccak256(a.metadata) == keccak256(b.metadata), 'allocation metadata changed');
        }
    }

    /**
     * @dev The amounts move by exactly the voucher, from the payer to the payee:
     *  l. `voucher above payer's amount`: a voucher cannot pay more than the payer put in. (In
     *     `VirtualPaymentApp` the subtraction below reverted with an arithmetic panic instead of
     *     a reason.)
     *  m. `payer not adjusted correctly`: the payer keeps its postfund amount minus the voucher.
     *  n. `payee not adjusted correctly`: the payee gets exactly the voucher (a voucher carries
     *     the running total, so the largest one is the whole payment).
     *  o. `amounts do not add up`: the payee starts at zero, so the redemption keeps the total
     *     the postfund outcome distributes. `VirtualPaymentApp` assumed this without checking
     *     it: a payee starting above zero would be cut to the voucher and the difference would
     *     leave the outcome, locked in the adjudicator.
     */
    function _requireVoucherAdjustment(
        Outcome.SingleAssetExit calldata before,
        Outcome.SingleAssetExit calldata next,
        uint256 voucher
    ) internal pure {
        uint256 payerBefore = before.allocations[PAYER].amount;
        require(voucher <= payerBefore, "voucher above payer's amount");
        require(
            next.allocations[PAYER].amount == payerBefore - voucher,
            'payer not adjusted correctly'
        );
        require(next.allocations[PAYEE].amount == voucher, 'payee not adjusted correctly');
        require(before.allocations[PAYEE].amount == 0, 'amounts do not add up');
    }
}
