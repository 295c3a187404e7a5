//! Vouchers: the payer's cumulative promise `sign(keccak256(abi.encode(channelId, amount)))`,
//! exactly as `PaymentApp` (and `VirtualPaymentApp`) check it on chain.

use alloy_primitives::{Address, B256, Bytes, U256, keccak256};
use alloy_sol_types::SolValue;
use serde::{Deserialize, Serialize};

use crate::abi;
use crate::sign::{
    PublicKey, Signature, SignatureError, Signer, recover_eth_message, verify_eth_message,
};

/// A signed, cumulative payment: "the payee may redeem `amount` in total from `channel_id`".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Voucher {
    /// The channel the voucher draws on.
    pub channel_id: B256,
    /// Cumulative amount (wei), not a delta.
    pub amount: U256,
    /// The payer's signature over [`voucher_hash`].
    pub signature: Signature,
}

/// `keccak256(abi.encode(bytes32 channelId, uint256 amount))`: what the payer signs (with the EIP-191 prefix).
pub fn voucher_hash(channel_id: B256, amount: U256) -> B256 {
    keccak256((channel_id, amount).abi_encode_params())
}

impl Voucher {
    /// Signs a voucher for the cumulative `amount`.
    pub fn sign(
        channel_id: B256,
        amount: U256,
        signer: &dyn Signer,
    ) -> Result<Self, SignatureError> {
        let signature = signer.sign_eth_message(&voucher_hash(channel_id, amount))?;
        Ok(Self {
            channel_id,
            amount,
            signature,
        })
    }

    /// The hash this voucher's signature covers.
    pub fn hash(&self) -> B256 {
        voucher_hash(self.channel_id, self.amount)
    }

    /// The address that signed this voucher.
    pub fn recover_signer(&self) -> Result<Address, SignatureError> {
        recover_eth_message(&self.hash(), &self.signature)
    }

    /// Whether the payer with public key `payer` signed this voucher (one ECDSA verification; the
    /// `v` byte is checked too, so a voucher that passes is redeemable on chain).
    pub fn verify(&self, payer: &PublicKey) -> bool {
        verify_eth_message(&self.hash(), &self.signature, payer)
    }

    /// The redemption state's app data: `abi.encode(VoucherAmountAndSignature{amount, signature})`.
    pub fn app_data(&self) -> Bytes {
        abi::VoucherAmountAndSignature {
            amount: self.amount,
            signature: self.signature.to_abi(),
        }
        .abi_encode()
        .into()
    }

    /// Parses redemption-state app data back into a voucher for `channel_id`.
    pub fn from_app_data(channel_id: B256, app_data: &[u8]) -> Option<Self> {
        let v = abi::VoucherAmountAndSignature::abi_decode(app_data).ok()?;
        Some(Self {
            channel_id,
            amount: v.amount,
            signature: Signature::from_abi(&v.signature),
        })
    }
}
