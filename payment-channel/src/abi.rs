//! Solidity types of Nitro v2 (`@statechannels/nitro-protocol@2.0.1-alpha.6`), as `alloy-sol-types`
//! definitions. These mirror `INitroTypes.sol`, the exit format (`@statechannels/exit-format@0.2.0`)
//! and `VirtualPaymentApp.sol` exactly, so that every encoding is produced by the ABI encoder rather
//! than by hand. The friendlier Rust types live in [`crate::state`]; they convert into these.

#![allow(missing_docs, unreachable_pub)]

alloy_sol_types::sol! {
    /// `INitroTypes.Signature`.
    #[derive(Debug, PartialEq, Eq)]
    struct Signature {
        uint8 v;
        bytes32 r;
        bytes32 s;
    }

    /// `INitroTypes.FixedPart`.
    #[derive(Debug, PartialEq, Eq)]
    struct FixedPart {
        address[] participants;
        uint64 channelNonce;
        address appDefinition;
        uint48 challengeDuration;
    }

    /// `ExitFormat.AssetMetadata`.
    #[derive(Debug, PartialEq, Eq)]
    struct AssetMetadata {
        uint8 assetType;
        bytes metadata;
    }

    /// `ExitFormat.Allocation`.
    #[derive(Debug, PartialEq, Eq)]
    struct Allocation {
        bytes32 destination;
        uint256 amount;
        uint8 allocationType;
        bytes metadata;
    }

    /// `ExitFormat.SingleAssetExit`.
    #[derive(Debug, PartialEq, Eq)]
    struct SingleAssetExit {
        address asset;
        AssetMetadata assetMetadata;
        Allocation[] allocations;
    }

    /// `INitroTypes.VariablePart`.
    #[derive(Debug, PartialEq, Eq)]
    struct VariablePart {
        SingleAssetExit[] outcome;
        bytes appData;
        uint48 turnNum;
        bool isFinal;
    }

    /// `INitroTypes.SignedVariablePart`.
    #[derive(Debug, PartialEq, Eq)]
    struct SignedVariablePart {
        VariablePart variablePart;
        Signature[] sigs;
    }

    /// `VirtualPaymentApp.VoucherAmountAndSignature`: the app data of the turn-2 redemption state.
    #[derive(Debug, PartialEq, Eq)]
    struct VoucherAmountAndSignature {
        uint256 amount;
        Signature signature;
    }
}
