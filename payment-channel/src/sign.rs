//! Ethereum-style signatures as Nitro uses them: secp256k1 over
//! `keccak256("\x19Ethereum Signed Message:\n32" ‖ hash)`, with `v` = 27 or 28.
//!
//! Two ways to check a signature are provided:
//! - [`recover_eth_message`] recovers the signer's address (what the contract's `ecrecover` does);
//! - [`verify_eth_message`] checks a signature against a **known** public key. It computes the same
//!   curve point as recovery would, checks `r` and the parity that `v` encodes, and costs one
//!   verification instead of a recovery: a signature that passes it recovers to that key on chain.

use std::fmt;
use std::ops::Deref;

use alloy_primitives::{Address, B256, keccak256};
use k256::ecdsa::{RecoveryId, SigningKey, VerifyingKey};
use k256::elliptic_curve::PrimeField;
use k256::elliptic_curve::ops::{Invert, LinearCombination, Reduce};
use k256::elliptic_curve::point::AffineCoordinates;
use k256::elliptic_curve::scalar::IsHigh;
use k256::{ProjectivePoint, Scalar, U256 as KU256};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::abi;

/// The EIP-191 prefix Nitro signs under.
pub const ETH_MESSAGE_PREFIX: &[u8; 28] = b"\x19Ethereum Signed Message:\n32";

/// `keccak256("\x19Ethereum Signed Message:\n32" ‖ hash)`.
pub fn eth_message_hash(hash: &B256) -> B256 {
    let mut buf = [0u8; 60];
    buf[..28].copy_from_slice(ETH_MESSAGE_PREFIX);
    buf[28..].copy_from_slice(hash.as_slice());
    keccak256(buf)
}

/// A recoverable ECDSA signature `(v, r, s)`, with `v` ∈ {27, 28}.
///
/// Its JSON form is the 65-byte `r ‖ s ‖ v` as a `0x`-prefixed hex string (as ethers and go-nitro write it).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signature {
    /// 27 or 28.
    pub v: u8,
    /// The `r` scalar, big-endian.
    pub r: B256,
    /// The `s` scalar, big-endian.
    pub s: B256,
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature(0x{})", hex::encode(self.to_rsv()))
    }
}

/// Why a signature could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    /// The `v` byte is not 27 or 28.
    #[error("signature v must be 27 or 28, got {0}")]
    InvalidV(u8),
    /// `r` or `s` is zero or not below the curve order.
    #[error("signature scalar out of range")]
    InvalidScalar,
    /// `s` is in the upper half of the curve order (malleable form; honest signers never produce it).
    #[error("signature s is not normalized (high s)")]
    HighS,
    /// The signature bytes do not have the 65-byte `r ‖ s ‖ v` form.
    #[error("signature must be 65 bytes, got {0}")]
    InvalidLength(usize),
    /// No public key can be recovered from this signature and hash.
    #[error("public key recovery failed")]
    RecoveryFailed,
    /// The signer failed (e.g. a hardware or remote signer refused).
    #[error("signer failed: {0}")]
    Signer(String),
}

impl Signature {
    /// `r ‖ s ‖ v`, 65 bytes.
    pub fn to_rsv(&self) -> [u8; 65] {
        let mut out = [0u8; 65];
        out[..32].copy_from_slice(self.r.as_slice());
        out[32..64].copy_from_slice(self.s.as_slice());
        out[64] = self.v;
        out
    }

    /// Parses `r ‖ s ‖ v` (65 bytes). `v` must be 27 or 28 (0/1 are accepted and normalized).
    pub fn from_rsv(bytes: &[u8]) -> Result<Self, SignatureError> {
        if bytes.len() != 65 {
            return Err(SignatureError::InvalidLength(bytes.len()));
        }
        let v = match bytes[64] {
            0 | 1 => bytes[64] + 27,
            27 | 28 => bytes[64],
            other => return Err(SignatureError::InvalidV(other)),
        };
        Ok(Self {
            v,
            r: B256::from_slice(&bytes[..32]),
            s: B256::from_slice(&bytes[32..64]),
        })
    }

    /// The Solidity `Signature {v, r, s}`.
    pub fn to_abi(&self) -> abi::Signature {
        abi::Signature {
            v: self.v,
            r: self.r,
            s: self.s,
        }
    }

    /// From the Solidity `Signature {v, r, s}`.
    pub fn from_abi(s: &abi::Signature) -> Self {
        Self {
            v: s.v,
            r: s.r,
            s: s.s,
        }
    }

    fn parts(&self) -> Result<(Scalar, Scalar, u8), SignatureError> {
        let parity = match self.v {
            27 | 28 => self.v - 27,
            other => return Err(SignatureError::InvalidV(other)),
        };
        let r = Option::<Scalar>::from(Scalar::from_repr(self.r.0.into()))
            .filter(|r| !bool::from(r.is_zero()))
            .ok_or(SignatureError::InvalidScalar)?;
        let s = Option::<Scalar>::from(Scalar::from_repr(self.s.0.into()))
            .filter(|s| !bool::from(s.is_zero()))
            .ok_or(SignatureError::InvalidScalar)?;
        if bool::from(s.is_high()) {
            return Err(SignatureError::HighS);
        }
        Ok((r, s, parity))
    }
}

impl Serialize for Signature {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = String::with_capacity(132);
        s.push_str("0x");
        s.push_str(&hex::encode(self.to_rsv()));
        serializer.serialize_str(&s)
    }
}

impl<'de> Deserialize<'de> for Signature {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        let hex_str = s.strip_prefix("0x").unwrap_or(&s);
        if hex_str.len() != 130 {
            return Err(serde::de::Error::custom(
                "signature must be 65 bytes of hex",
            ));
        }
        let mut bytes = [0u8; 65];
        hex::decode_to_slice(hex_str, &mut bytes).map_err(serde::de::Error::custom)?;
        Self::from_rsv(&bytes).map_err(serde::de::Error::custom)
    }
}

/// Something that signs 32-byte digests for one Ethereum address.
///
/// The one required primitive is [`Signer::sign_prehash`], which signs the digest **as given**
/// (no hashing, no prefix). [`Signer::sign_eth_message`] applies the EIP-191 prefix first; that is
/// what every Nitro signature (state, voucher, challenge) uses.
pub trait Signer: Send + Sync {
    /// The address whose key signs.
    fn address(&self) -> Address;

    /// Signs a 32-byte digest as given. The result must have low `s` and `v` ∈ {27, 28}.
    fn sign_prehash(&self, prehash: &B256) -> Result<Signature, SignatureError>;

    /// Signs `keccak256("\x19Ethereum Signed Message:\n32" ‖ hash)`.
    fn sign_eth_message(&self, hash: &B256) -> Result<Signature, SignatureError> {
        self.sign_prehash(&eth_message_hash(hash))
    }
}

impl<T: Signer + ?Sized, D: Deref<Target = T> + Send + Sync> Signer for D {
    fn address(&self) -> Address {
        (**self).address()
    }
    fn sign_prehash(&self, prehash: &B256) -> Result<Signature, SignatureError> {
        (**self).sign_prehash(prehash)
    }
}

/// A [`Signer`] holding a secp256k1 secret key in memory.
#[derive(Clone)]
pub struct LocalSigner {
    key: SigningKey,
    address: Address,
}

impl fmt::Debug for LocalSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalSigner")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl LocalSigner {
    /// A signer for the 32-byte secret key `bytes`.
    pub fn from_bytes(bytes: &B256) -> Result<Self, SignatureError> {
        let key =
            SigningKey::from_bytes(&bytes.0.into()).map_err(|_| SignatureError::InvalidScalar)?;
        Ok(Self::from_signing_key(key))
    }

    /// A signer for a `0x`-prefixed (or bare) hex secret key.
    pub fn from_hex(hex_key: &str) -> Result<Self, SignatureError> {
        let trimmed = hex_key.trim();
        let s = trimmed.strip_prefix("0x").unwrap_or(trimmed);
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(s, &mut bytes)
            .map_err(|_| SignatureError::InvalidLength(s.len() / 2))?;
        Self::from_bytes(&B256::from(bytes))
    }

    /// A signer with a fresh random key from the operating system's RNG.
    pub fn random() -> Self {
        Self::from_signing_key(SigningKey::random(
            &mut k256::elliptic_curve::rand_core::OsRng,
        ))
    }

    /// Wraps a k256 signing key.
    pub fn from_signing_key(key: SigningKey) -> Self {
        let address = address_of(key.verifying_key());
        Self { key, address }
    }

    /// The public key (cache it on the verifying side: see [`verify_eth_message`]).
    pub fn public_key(&self) -> VerifyingKey {
        *self.key.verifying_key()
    }

    /// The 32-byte secret key.
    pub fn secret_bytes(&self) -> B256 {
        B256::from_slice(&self.key.to_bytes())
    }
}

impl Signer for LocalSigner {
    fn address(&self) -> Address {
        self.address
    }

    fn sign_prehash(&self, prehash: &B256) -> Result<Signature, SignatureError> {
        let (sig, recid) = self
            .key
            .sign_prehash_recoverable(prehash.as_slice())
            .map_err(|e| SignatureError::Signer(e.to_string()))?;
        // k256 produces low-s signatures; the recovery id then matches the normalized s.
        let (r, s) = sig.split_bytes();
        Ok(Signature {
            v: 27 + recid.to_byte(),
            r: B256::from_slice(&r),
            s: B256::from_slice(&s),
        })
    }
}

/// The Ethereum address of a public key: the last 20 bytes of `keccak256(x ‖ y)`.
pub fn address_of(key: &VerifyingKey) -> Address {
    let point = key.to_encoded_point(false);
    let hash = keccak256(&point.as_bytes()[1..]);
    Address::from_slice(&hash[12..])
}

/// Recovers the public key that signed the EIP-191 message `hash`.
pub fn recover_key_eth_message(
    hash: &B256,
    sig: &Signature,
) -> Result<VerifyingKey, SignatureError> {
    sig.parts()?;
    let k_sig = k256::ecdsa::Signature::from_scalars(sig.r.0, sig.s.0)
        .map_err(|_| SignatureError::InvalidScalar)?;
    let recid = RecoveryId::from_byte(sig.v - 27).ok_or(SignatureError::InvalidV(sig.v))?;
    let prehash = eth_message_hash(hash);
    VerifyingKey::recover_from_prehash(prehash.as_slice(), &k_sig, recid)
        .map_err(|_| SignatureError::RecoveryFailed)
}

/// Recovers the address that signed the EIP-191 message `hash` (the contract's `recoverSigner`).
pub fn recover_eth_message(hash: &B256, sig: &Signature) -> Result<Address, SignatureError> {
    recover_key_eth_message(hash, sig).map(|k| address_of(&k))
}

/// Checks that `sig` over the EIP-191 message `hash` was made by `key`, **including** `v`: a
/// signature that passes recovers to `key` with `ecrecover`. Costs one ECDSA verification.
pub fn verify_eth_message(hash: &B256, sig: &Signature, key: &VerifyingKey) -> bool {
    verify_prehash_recoverable(&eth_message_hash(hash), sig, key)
}

/// Like [`verify_eth_message`] for a digest that is signed as given.
pub fn verify_prehash_recoverable(prehash: &B256, sig: &Signature, key: &VerifyingKey) -> bool {
    let Ok((r, s, parity)) = sig.parts() else {
        return false;
    };
    let z = <Scalar as Reduce<KU256>>::reduce_bytes(&prehash.0.into());
    // `s` is public, so the variable-time inversion (what k256's own `verify_prehash` uses) is
    // safe here; the constant-time one costs about 5% of the whole verification.
    let Some(s_inv) = Option::<Scalar>::from(Invert::invert_vartime(&s)) else {
        return false;
    };
    let u1 = z * s_inv;
    let u2 = r * s_inv;
    let q = ProjectivePoint::from(*key.as_affine());
    let big_r = ProjectivePoint::lincomb(&ProjectivePoint::GENERATOR, &u1, &q, &u2).to_affine();
    if big_r == k256::AffinePoint::IDENTITY {
        return false;
    }
    let x = <Scalar as Reduce<KU256>>::reduce_bytes(&big_r.x());
    x == r && u8::from(bool::from(big_r.y_is_odd())) == parity
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_verify_agrees_with_recovery_on_v() {
        let signer = LocalSigner::from_bytes(&B256::repeat_byte(7)).unwrap();
        for i in 0u8..32 {
            let hash = keccak256([i]);
            let sig = signer.sign_eth_message(&hash).unwrap();
            assert_eq!(recover_eth_message(&hash, &sig).unwrap(), signer.address());
            assert!(verify_eth_message(&hash, &sig, &signer.public_key()));
            let mut flipped = sig;
            flipped.v = if sig.v == 27 { 28 } else { 27 };
            assert!(!verify_eth_message(&hash, &flipped, &signer.public_key()));
            assert_ne!(
                recover_eth_message(&hash, &flipped).ok(),
                Some(signer.address())
            );
            let other = keccak256([i, 1]);
            assert!(!verify_eth_message(&other, &sig, &signer.public_key()));
        }
    }

    #[test]
    fn rsv_round_trip_and_json() {
        let signer = LocalSigner::random();
        let sig = signer.sign_eth_message(&B256::repeat_byte(1)).unwrap();
        assert_eq!(Signature::from_rsv(&sig.to_rsv()).unwrap(), sig);
        let json = serde_json::to_string(&sig).unwrap();
        assert_eq!(json.len(), 2 + 2 + 130);
        assert_eq!(serde_json::from_str::<Signature>(&json).unwrap(), sig);
        assert!(Signature::from_rsv(&[0u8; 64]).is_err());
    }

    #[test]
    fn rejects_bad_scalars_and_v() {
        let key = LocalSigner::random().public_key();
        let zero = Signature {
            v: 27,
            r: B256::ZERO,
            s: B256::repeat_byte(1),
        };
        assert!(!verify_eth_message(&B256::ZERO, &zero, &key));
        assert_eq!(
            recover_eth_message(&B256::ZERO, &zero),
            Err(SignatureError::InvalidScalar)
        );
        let bad_v = Signature {
            v: 29,
            r: B256::repeat_byte(1),
            s: B256::repeat_byte(1),
        };
        assert_eq!(
            recover_eth_message(&B256::ZERO, &bad_v),
            Err(SignatureError::InvalidV(29))
        );
        let high_s = Signature {
            v: 27,
            r: B256::repeat_byte(1),
            s: B256::repeat_byte(0xee),
        };
        assert!(matches!(
            recover_eth_message(&B256::ZERO, &high_s),
            Err(SignatureError::HighS | SignatureError::InvalidScalar)
        ));
    }
}
