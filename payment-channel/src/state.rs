//! Nitro v2 state: fixed part, outcome (exit format), variable part, channel id and state hash.
//!
//! Formulas (`NitroUtils.sol` of `@statechannels/nitro-protocol@2.0.1-alpha.6`):
//!
//! ```text
//! channelId = keccak256(abi.encode(address[] participants, uint64 channelNonce, address appDefinition, uint48 challengeDuration))
//! stateHash = keccak256(abi.encode(bytes32 channelId, bytes appData, SingleAssetExit[] outcome, uint48 turnNum, bool isFinal))
//! outcomeHash = keccak256(abi.encode(SingleAssetExit[] outcome))
//! ```
//!
//! All encodings go through [`alloy_sol_types`]; nothing is hand-written.

use alloy_primitives::{Address, B256, Bytes, U256, keccak256};
use alloy_sol_types::SolValue;
use serde::{Deserialize, Serialize};

use crate::abi;
use crate::sign::Signature;

/// Largest value of a Solidity `uint48` (turn numbers, challenge durations, timestamps).
pub const MAX_UINT48: u64 = (1 << 48) - 1;

/// The part of a channel's state that never changes; it determines the channel id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FixedPart {
    /// Participants' signing addresses. In a payment channel: `[payer, payee]`.
    pub participants: Vec<Address>,
    /// Nonce that makes the channel id unique among channels of the same participants.
    ///
    /// In JSON a decimal string (`"4211659201689351742"`): nonces are random 64-bit values and
    /// JavaScript's `JSON.parse` rounds numbers above 2^53 − 1. A JSON number is still read.
    #[serde(with = "js_int::always_string")]
    pub channel_nonce: u64,
    /// Address of the `IForceMoveApp` contract (`PaymentApp`, see [`crate::app`]).
    pub app_definition: Address,
    /// Seconds a challenge stays open before the channel finalizes (`uint48`).
    ///
    /// In JSON a number up to 2^53 − 1 and a decimal string above; both forms are read.
    #[serde(with = "js_int::safe")]
    pub challenge_duration: u64,
}

/// Serde for `u64` values in JSON that JavaScript peers read: `JSON.parse` keeps integers
/// exactly only within ±(2^53 − 1) (`Number.MAX_SAFE_INTEGER`).
mod js_int {
    use serde::Deserializer;
    use serde::de::{self, Visitor};
    use std::fmt;

    /// `Number.MAX_SAFE_INTEGER`.
    pub(crate) const MAX_SAFE: u64 = (1 << 53) - 1;

    struct U64Visitor;

    impl Visitor<'_> for U64Visitor {
        type Value = u64;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an unsigned 64-bit integer, as a JSON number or a decimal string")
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
            Ok(v)
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
            u64::try_from(v).map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<u64, E> {
            // Canonical decimal only: no sign, no leading zeros, no spaces, no exponent.
            let canonical = !v.is_empty()
                && v.bytes().all(|b| b.is_ascii_digit())
                && (v == "0" || !v.starts_with('0'));
            if !canonical {
                return Err(E::invalid_value(de::Unexpected::Str(v), &self));
            }
            v.parse()
                .map_err(|_| E::invalid_value(de::Unexpected::Str(v), &self))
        }
    }

    /// Both modules read the same: a number or a canonical decimal string in human-readable
    /// formats, the plain `u64` otherwise.
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        if d.is_human_readable() {
            d.deserialize_any(U64Visitor)
        } else {
            serde::Deserialize::deserialize(d)
        }
    }

    /// Always a decimal string; reads a number too.
    pub(crate) mod always_string {
        pub(crate) use super::deserialize;
        use serde::Serializer;

        pub(crate) fn serialize<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
            if s.is_human_readable() {
                s.collect_str(v)
            } else {
                s.serialize_u64(*v)
            }
        }
    }

    /// A number up to [`MAX_SAFE`], a decimal string above; reads both.
    pub(crate) mod safe {
        use super::MAX_SAFE;
        pub(crate) use super::deserialize;
        use serde::Serializer;

        pub(crate) fn serialize<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
            if s.is_human_readable() && *v > MAX_SAFE {
                s.collect_str(v)
            } else {
                s.serialize_u64(*v)
            }
        }
    }
}

impl FixedPart {
    /// The channel id: `keccak256(abi.encode(participants, channelNonce, appDefinition, challengeDuration))`.
    pub fn channel_id(&self) -> B256 {
        keccak256(self.to_abi().abi_encode_params())
    }

    /// The Solidity form of this fixed part.
    pub fn to_abi(&self) -> abi::FixedPart {
        abi::FixedPart {
            participants: self.participants.clone(),
            channelNonce: self.channel_nonce,
            appDefinition: self.app_definition,
            challengeDuration: alloy_primitives::Uint::<48, 1>::from(
                self.challenge_duration & MAX_UINT48,
            ),
        }
    }
}

/// Metadata of an asset in the exit format.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AssetMetadata {
    /// 0 = default (native or ERC20).
    pub asset_type: u8,
    /// Opaque metadata, empty for plain assets.
    pub metadata: Bytes,
}

/// One allocation of an asset to a destination.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Allocation {
    /// Destination: an external address left-padded to 32 bytes, or a channel id.
    pub destination: B256,
    /// Amount in the asset's smallest unit (wei for the native asset).
    pub amount: U256,
    /// One of [`allocation_type`]: 0 = simple, 1 = withdraw helper, 2 = guarantee.
    pub allocation_type: u8,
    /// Opaque metadata: empty for simple allocations, [`Guarantee::encode`] for guarantees.
    pub metadata: Bytes,
}

/// The exit format's `AllocationType` (`enum AllocationType {simple, withdrawHelper, guarantee}` in
/// `@statechannels/exit-format@0.2.0`).
///
/// go-nitro writes guarantees with type 1, which `MultiAssetHolder.reclaim` refuses (`not a
/// guarantee allocation`) and `transfer` pays out as if it were a plain allocation to the target:
/// this crate writes and accepts only [`GUARANTEE`](allocation_type::GUARANTEE) (2).
pub mod allocation_type {
    /// A plain allocation: `transfer` pays `amount` to `destination`.
    pub const SIMPLE: u8 = 0;
    /// Withdraw helper (unused here).
    pub const WITHDRAW_HELPER: u8 = 1;
    /// A guarantee for the channel in `destination`, redeemed by `reclaim`.
    pub const GUARANTEE: u8 = 2;
}

/// The metadata of a guarantee allocation (`MultiAssetHolder.Guarantee`): which destinations of
/// the *guaranteeing* channel receive the guaranteed channel's allocations 0 and 1 on `reclaim`.
///
/// For a virtual channel `V = [payer, hub, payee]`, `left`/`right` follow V's participant order:
/// in the payer's ledger `left = payer, right = hub`; in the payee's ledger `left = hub,
/// right = payee`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Guarantee {
    /// Receives V's allocation 0 (the payer's change).
    pub left: B256,
    /// Receives V's allocation 1 (what the payee was paid).
    pub right: B256,
}

impl Guarantee {
    /// `abi.encode(Guarantee{left, right})`: the 64 bytes `left ‖ right`.
    pub fn encode(&self) -> Bytes {
        abi::Guarantee {
            left: self.left,
            right: self.right,
        }
        .abi_encode()
        .into()
    }

    /// Decodes [`Guarantee::encode`]'s output; `None` unless `metadata` is exactly 64 bytes.
    pub fn decode(metadata: &[u8]) -> Option<Self> {
        if metadata.len() != 64 {
            return None;
        }
        Some(Self {
            left: B256::from_slice(&metadata[..32]),
            right: B256::from_slice(&metadata[32..]),
        })
    }
}

impl Allocation {
    /// A simple allocation of `amount` to the external address `to`.
    pub fn simple(to: Address, amount: U256) -> Self {
        Self {
            destination: address_to_destination(to),
            amount,
            allocation_type: allocation_type::SIMPLE,
            metadata: Bytes::new(),
        }
    }

    /// A guarantee of `amount` for the channel `target` (type 2, the contracts' value).
    pub fn guarantee(target: B256, amount: U256, guarantee: Guarantee) -> Self {
        Self {
            destination: target,
            amount,
            allocation_type: allocation_type::GUARANTEE,
            metadata: guarantee.encode(),
        }
    }

    /// This allocation's guarantee, if it is one the contracts can `reclaim` (type 2 with
    /// well-formed metadata).
    pub fn as_guarantee(&self) -> Option<Guarantee> {
        if self.allocation_type != allocation_type::GUARANTEE {
            return None;
        }
        Guarantee::decode(&self.metadata)
    }
}

/// All allocations of one asset.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SingleAssetExit {
    /// Asset address; `Address::ZERO` is the chain's native asset.
    pub asset: Address,
    /// Asset metadata.
    pub asset_metadata: AssetMetadata,
    /// Allocations, in priority order.
    pub allocations: Vec<Allocation>,
}

/// An outcome: one exit per asset.
pub type Outcome = Vec<SingleAssetExit>;

/// A one-asset outcome with two simple allocations, in participant order `[payer, payee]`
/// (`asset` = `Address::ZERO`: the native coin).
pub fn two_party_outcome(
    asset: Address,
    payer_destination: Address,
    payer_amount: U256,
    payee_destination: Address,
    payee_amount: U256,
) -> Outcome {
    vec![SingleAssetExit {
        asset,
        asset_metadata: AssetMetadata::default(),
        allocations: vec![
            Allocation::simple(payer_destination, payer_amount),
            Allocation::simple(payee_destination, payee_amount),
        ],
    }]
}

/// `abi.encode(SingleAssetExit[])` of an outcome (what `transferAllAssets` receives and `hashOutcome` hashes).
pub fn encode_outcome(outcome: &[SingleAssetExit]) -> Vec<u8> {
    outcome_to_abi(outcome).abi_encode()
}

/// `keccak256(abi.encode(outcome))`.
pub fn hash_outcome(outcome: &[SingleAssetExit]) -> B256 {
    keccak256(encode_outcome(outcome))
}

/// Converts an outcome to its Solidity form.
pub fn outcome_to_abi(outcome: &[SingleAssetExit]) -> Vec<abi::SingleAssetExit> {
    outcome.iter().map(SingleAssetExit::to_abi).collect()
}

impl SingleAssetExit {
    /// The Solidity form of this exit.
    pub fn to_abi(&self) -> abi::SingleAssetExit {
        abi::SingleAssetExit {
            asset: self.asset,
            assetMetadata: abi::AssetMetadata {
                assetType: self.asset_metadata.asset_type,
                metadata: self.asset_metadata.metadata.clone(),
            },
            allocations: self
                .allocations
                .iter()
                .map(|a| abi::Allocation {
                    destination: a.destination,
                    amount: a.amount,
                    allocationType: a.allocation_type,
                    metadata: a.metadata.clone(),
                })
                .collect(),
        }
    }

    /// Converts from the Solidity form.
    pub fn from_abi(e: &abi::SingleAssetExit) -> Self {
        Self {
            asset: e.asset,
            asset_metadata: AssetMetadata {
                asset_type: e.assetMetadata.assetType,
                metadata: e.assetMetadata.metadata.clone(),
            },
            allocations: e
                .allocations
                .iter()
                .map(|a| Allocation {
                    destination: a.destination,
                    amount: a.amount,
                    allocation_type: a.allocationType,
                    metadata: a.metadata.clone(),
                })
                .collect(),
        }
    }
}

/// An external address as an exit-format destination (left-padded to 32 bytes).
pub fn address_to_destination(address: Address) -> B256 {
    address.into_word()
}

/// The external address in a destination, if it is one (the upper 12 bytes are zero).
pub fn destination_to_address(destination: &B256) -> Option<Address> {
    if destination[..12].iter().all(|b| *b == 0) {
        Some(Address::from_slice(&destination[12..]))
    } else {
        None
    }
}

/// The part of a state that changes from turn to turn.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VariablePart {
    /// The outcome the adjudicator pays out if this state finalizes.
    pub outcome: Outcome,
    /// App-specific data (for the redemption state: the voucher).
    pub app_data: Bytes,
    /// Turn number (`uint48`).
    pub turn_num: u64,
    /// Whether this is a final state.
    pub is_final: bool,
}

impl VariablePart {
    /// The Solidity form.
    pub fn to_abi(&self) -> abi::VariablePart {
        abi::VariablePart {
            outcome: outcome_to_abi(&self.outcome),
            appData: self.app_data.clone(),
            turnNum: alloy_primitives::Uint::<48, 1>::from(self.turn_num & MAX_UINT48),
            isFinal: self.is_final,
        }
    }

    /// Converts from the Solidity form.
    pub fn from_abi(v: &abi::VariablePart) -> Self {
        Self {
            outcome: v.outcome.iter().map(SingleAssetExit::from_abi).collect(),
            app_data: v.appData.clone(),
            turn_num: v.turnNum.to::<u64>(),
            is_final: v.isFinal,
        }
    }

    /// The state hash of this variable part in the channel `channel_id`:
    /// `keccak256(abi.encode(channelId, appData, outcome, turnNum, isFinal))`.
    pub fn hash(&self, channel_id: B256) -> B256 {
        let outcome = outcome_to_abi(&self.outcome);
        let encoded = (
            channel_id,
            self.app_data.clone(),
            outcome,
            U256::from(self.turn_num),
            self.is_final,
        )
            .abi_encode_params();
        keccak256(encoded)
    }
}

/// A variable part with the signatures collected on it (the contract's `SignedVariablePart`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SignedVariablePart {
    /// The state.
    pub variable_part: VariablePart,
    /// Signatures over its state hash, by any subset of participants.
    pub sigs: Vec<Signature>,
}

impl SignedVariablePart {
    /// The Solidity form.
    pub fn to_abi(&self) -> abi::SignedVariablePart {
        abi::SignedVariablePart {
            variablePart: self.variable_part.to_abi(),
            sigs: self.sigs.iter().map(Signature::to_abi).collect(),
        }
    }

    /// Converts from the Solidity form.
    pub fn from_abi(s: &abi::SignedVariablePart) -> Self {
        Self {
            variable_part: VariablePart::from_abi(&s.variablePart),
            sigs: s.sigs.iter().map(Signature::from_abi).collect(),
        }
    }
}

/// The message a challenger signs: `keccak256(abi.encode(bytes32 supportedStateHash, string "forceMove"))`.
pub fn challenge_message_hash(supported_state_hash: B256) -> B256 {
    keccak256((supported_state_hash, String::from("forceMove")).abi_encode_params())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixed(nonce: u64, challenge_duration: u64) -> FixedPart {
        FixedPart {
            participants: vec![Address::repeat_byte(0x11), Address::repeat_byte(0x22)],
            channel_nonce: nonce,
            app_definition: Address::repeat_byte(0x33),
            challenge_duration,
        }
    }

    #[test]
    fn channel_nonce_is_a_decimal_string_in_json() {
        // The nonce of issue 16: as a JSON number, JavaScript reads 4211659201689351700.
        let f = fixed(4_211_659_201_689_351_742, 600);
        let json = serde_json::to_string(&f).unwrap();
        assert!(
            json.contains(r#""channelNonce":"4211659201689351742""#),
            "{json}"
        );
        assert!(json.contains(r#""challengeDuration":600"#), "{json}");
        assert_eq!(serde_json::from_str::<FixedPart>(&json).unwrap(), f);
        let small = serde_json::to_string(&fixed(7, 1)).unwrap();
        assert!(small.contains(r#""channelNonce":"7""#), "{small}");
    }

    #[test]
    fn old_number_form_is_still_read() {
        let f = fixed(4_211_659_201_689_351_742, 600);
        let old = format!(
            r#"{{"participants":["{}","{}"],"channelNonce":4211659201689351742,"appDefinition":"{}","challengeDuration":600}}"#,
            f.participants[0], f.participants[1], f.app_definition
        );
        assert_eq!(serde_json::from_str::<FixedPart>(&old).unwrap(), f);
        let max = old.replace("4211659201689351742", &u64::MAX.to_string());
        assert_eq!(
            serde_json::from_str::<FixedPart>(&max)
                .unwrap()
                .channel_nonce,
            u64::MAX
        );
    }

    #[test]
    fn challenge_duration_above_2_pow_53_is_a_string() {
        let safe = js_int::MAX_SAFE;
        let at = serde_json::to_string(&fixed(1, safe)).unwrap();
        assert!(
            at.contains(&format!(r#""challengeDuration":{safe}"#)),
            "{at}"
        );
        let above = serde_json::to_string(&fixed(1, safe + 1)).unwrap();
        assert!(
            above.contains(&format!(r#""challengeDuration":"{}""#, safe + 1)),
            "{above}"
        );
        assert_eq!(
            serde_json::from_str::<FixedPart>(&above)
                .unwrap()
                .challenge_duration,
            safe + 1
        );
    }

    #[test]
    fn non_canonical_integer_strings_are_refused() {
        let good = serde_json::to_string(&fixed(12, 600)).unwrap();
        for bad in [
            r#""012""#,
            r#""-12""#,
            r#""+12""#,
            r#""1e1""#,
            r#""""#,
            r#"" 12""#,
            r#""18446744073709551616""#,
            "-12",
            "12.5",
            "null",
        ] {
            let json = good.replace(r#""12""#, bad);
            assert!(
                serde_json::from_str::<FixedPart>(&json).is_err(),
                "accepted {json}"
            );
        }
    }
}
