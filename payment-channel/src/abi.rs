//! Solidity types of Nitro v2 (`@statechannels/nitro-protocol@2.0.1-alpha.6`), as `alloy-sol-types`
//! definitions. These mirror `INitroTypes.sol`, the exit format (`@statechannels/exit-format@0.2.0`)
//! and `VirtualPaymentApp.sol` exactly, so that every encoding is produced by the ABI encoder rather
//! than by hand. The friendlier Rust types live in [`crate::state`]; they convert into these.
//!
//! [`NitroAdjudicator`] is the adjudicator's interface (the calls and events the payment and
//! ledger channels use), from `IForceMove.sol`, `IMultiAssetHolder.sol` and `NitroAdjudicator.sol`;
//! a test checks every signature against the published artifact's ABI. Its call
//! types (`NitroAdjudicator::challengeCall`, ...) encode calldata in every build; with the
//! `ethereum` feature the interface also gets `alloy` contract bindings
//! (`NitroAdjudicator::NitroAdjudicatorInstance`).

#![allow(missing_docs, unreachable_pub)]

/// Expands the Solidity definitions, with `$file` as block-level and `$rpc` as the interface's
/// extra attributes (alloy's `#[sol(rpc)]` bindings exist only with the `ethereum` feature).
macro_rules! nitro_sol {
    ([$($file:tt)*] [$($rpc:tt)*]) => {
        alloy_sol_types::sol! {
        $($file)*

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

        /// `MultiAssetHolder.Guarantee`: the metadata of a guarantee allocation.
        #[derive(Debug, PartialEq, Eq)]
        struct Guarantee {
            bytes32 left;
            bytes32 right;
        }

        /// `IMultiAssetHolder.ReclaimArgs`, fields in the ABI's order: the argument of `reclaim`.
        #[derive(Debug, PartialEq, Eq)]
        struct ReclaimArgs {
            bytes32 sourceChannelId;
            bytes32 sourceStateHash;
            bytes sourceOutcomeBytes;
            uint256 sourceAssetIndex;
            uint256 indexOfTargetInSource;
            bytes32 targetStateHash;
            bytes targetOutcomeBytes;
            uint256 targetAssetIndex;
        }

        /// `VirtualPaymentApp.VoucherAmountAndSignature`: the app data of the turn-2 redemption state.
        #[derive(Debug, PartialEq, Eq)]
        struct VoucherAmountAndSignature {
            uint256 amount;
            Signature signature;
        }

        /// The ERC-20 calls a token deposit needs.
        $($rpc)*
        interface IERC20 {
            /// `balanceOf(owner)`.
            function balanceOf(address owner) external view returns (uint256);
            /// `allowance(owner, spender)`.
            function allowance(address owner, address spender) external view returns (uint256);
            /// `approve(spender, amount)`.
            function approve(address spender, uint256 amount) external returns (bool);
            /// `decimals()`.
            function decimals() external view returns (uint8);
        }

        /// The Nitro v2 adjudicator (`NitroAdjudicator.sol`): the subset of its interface used here.
        $($rpc)*
        interface NitroAdjudicator {
            /// `IMultiAssetHolder.deposit`: `msg.value` must equal `amount` for the native asset.
            function deposit(address asset, bytes32 channelId, uint256 expectedHeld, uint256 amount) external payable;
            /// `MultiAssetHolder.holdings(asset, channelId)`.
            function holdings(address asset, bytes32 channelId) external view returns (uint256);
            /// `IForceMove.challenge`.
            function challenge(FixedPart fixedPart, SignedVariablePart[] proof, SignedVariablePart candidate, Signature challengerSig) external;
            /// `IForceMove.checkpoint`.
            function checkpoint(FixedPart fixedPart, SignedVariablePart[] proof, SignedVariablePart candidate) external;
            /// `IForceMove.conclude`.
            function conclude(FixedPart fixedPart, SignedVariablePart candidate) external;
            /// `NitroAdjudicator.transferAllAssets`.
            function transferAllAssets(bytes32 channelId, SingleAssetExit[] outcome, bytes32 stateHash) external;
            /// `NitroAdjudicator.concludeAndTransferAllAssets`: `conclude`, then `transferAllAssets`
            /// with a zero state hash, in one transaction.
            function concludeAndTransferAllAssets(FixedPart fixedPart, SignedVariablePart candidate) external;
            /// `IMultiAssetHolder.reclaim`: moves a finalized target channel's outcome back into
            /// the finalized source channel that guarantees it (no funds move).
            function reclaim(ReclaimArgs reclaimArgs) external;
            /// `IMultiAssetHolder.transfer`: pays the allocations at `indices` (all when empty) of
            /// one asset of a finalized channel.
            function transfer(uint256 assetIndex, bytes32 fromChannelId, bytes outcomeBytes, bytes32 stateHash, uint256[] indices) external;
            /// `ForceMove.unpackStatus`.
            function unpackStatus(bytes32 channelId) external view returns (uint48 turnNumRecord, uint48 finalizesAt, uint160 fingerprint);

            /// `IForceMove.ChallengeRegistered`.
            event ChallengeRegistered(bytes32 indexed channelId, uint48 finalizesAt, SignedVariablePart[] proof, SignedVariablePart candidate);
            /// `IForceMove.ChallengeCleared`.
            event ChallengeCleared(bytes32 indexed channelId, uint48 newTurnNumRecord);
            /// `IForceMove.Checkpointed`.
            event Checkpointed(bytes32 indexed channelId, uint48 newTurnNumRecord);
            /// `IForceMove.Concluded`.
            event Concluded(bytes32 indexed channelId, uint48 finalizesAt);
            /// `IMultiAssetHolder.Deposited`.
            event Deposited(bytes32 indexed destination, address asset, uint256 destinationHoldings);
            /// `IMultiAssetHolder.AllocationUpdated`.
            event AllocationUpdated(bytes32 indexed channelId, uint256 assetIndex, uint256 initialHoldings, uint256 finalHoldings);
            /// `IMultiAssetHolder.Reclaimed`.
            event Reclaimed(bytes32 indexed channelId, uint256 assetIndex);
        }
        }
    };
}

#[cfg(feature = "ethereum")]
nitro_sol!([#![sol(alloy_contract = alloy::contract)]] [#[sol(rpc)]]);
#[cfg(not(feature = "ethereum"))]
nitro_sol!([] []);
