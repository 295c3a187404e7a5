//! Ethereum-style signatures as Nitro uses them: secp256k1 over
//! `keccak256("\x19Ethereum Signed Message:\n32" ‖ hash)`, with `v` = 27 or 28.
//!
//! Two ways to check a signature are provided:
//! - [`recover_eth_message`] recovers the signer's address (what the contract's `ecrecover` does);
//! - [`verify_eth_message`] checks a signature against a **known** public key. It computes the same
//!   curve point as recovery would, checks `r` and the parity that `v` encodes, and costs one
//!   verification instead of a recovery: a signature that passes it recovers to that key on chain.
//!
//! # Backends
//! The curve arithmetic comes from one of two libraries, chosen at build time; the API, the
//! signatures (RFC 6979, low `s`: byte for byte) and every accept/reject decision are the same:
//! - pure-Rust [`k256`](https://docs.rs/k256) (default);
//! - libsecp256k1, Bitcoin Core's C library, through the [`secp256k1`](https://docs.rs/secp256k1)
//!   crate (feature `libsecp256k1`): about 2× faster to sign and 3× to verify.
//!
//! [`BACKEND`] names the one compiled in.

use std::fmt;
use std::ops::Deref;

use alloy_primitives::{Address, B256, U256, hex, keccak256};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::abi;

#[cfg(any(not(feature = "libsecp256k1"), test))]
mod k256_backend;
#[cfg(feature = "libsecp256k1")]
mod libsecp_backend;

#[cfg(not(feature = "libsecp256k1"))]
use k256_backend as backend;
#[cfg(feature = "libsecp256k1")]
use libsecp_backend as backend;

/// The signature library compiled in: `"k256"` or `"libsecp256k1"`.
pub const BACKEND: &str = backend::NAME;

/// The secp256k1 group order `n`, big-endian.
const CURVE_ORDER: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe,
    0xba, 0xae, 0xdc, 0xe6, 0xaf, 0x48, 0xa0, 0x3b, 0xbf, 0xd2, 0x5e, 0x8c, 0xd0, 0x36, 0x41, 0x41,
];

/// `n / 2`: an `s` above it is "high" (malleable).
const HALF_ORDER: [u8; 32] = [
    0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0x5d, 0x57, 0x6e, 0x73, 0x57, 0xa4, 0x50, 0x1d, 0xdf, 0xe9, 0x2f, 0x46, 0x68, 0x1b, 0x20, 0xa0,
];

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
    /// The bytes are not a point of the curve in SEC1 form.
    #[error("invalid public key")]
    InvalidPublicKey,
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

    /// The signature with `r` and `s` checked (both in `[1, n)`, `s` low) and its recovery
    /// parity (`v - 27`): what the backends take.
    fn checked(&self) -> Result<CheckedSig, SignatureError> {
        let parity = self.ecrecover_parity()?;
        if self.s.0 > HALF_ORDER {
            return Err(SignatureError::HighS);
        }
        Ok(CheckedSig {
            r: self.r.0,
            s: self.s.0,
            parity,
        })
    }

    /// What the `ecrecover` precompile checks: `v` ∈ {27, 28}, `r` and `s` in `[1, n)` (high `s`
    /// allowed).
    fn ecrecover_parity(&self) -> Result<u8, SignatureError> {
        let parity = match self.v {
            27 | 28 => self.v - 27,
            other => return Err(SignatureError::InvalidV(other)),
        };
        let in_range = |x: &B256| !x.is_zero() && x.0 < CURVE_ORDER;
        if !in_range(&self.r) || !in_range(&self.s) {
            return Err(SignatureError::InvalidScalar);
        }
        Ok(parity)
    }

    /// The same signature with `s` replaced by `n - s` and the parity flipped: both recover the
    /// same key.
    fn flipped_s(&self) -> Self {
        let s = U256::from_be_bytes(CURVE_ORDER) - U256::from_be_bytes(self.s.0);
        Self {
            v: if self.v == 27 { 28 } else { 27 },
            r: self.r,
            s: B256::from(s.to_be_bytes::<32>()),
        }
    }
}

/// A [`Signature`] as both backends' `recover` and `verify_recoverable` take it, from
/// [`Signature::checked`]: `r` and `s` big-endian, each in `[1, n)`, `s` low, and `parity` (the
/// recovery id, 0 or 1) for `v`.
#[derive(Debug, Clone, Copy)]
struct CheckedSig {
    r: [u8; 32],
    s: [u8; 32],
    parity: u8,
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

/// A secp256k1 public key: what a channel caches to verify its counterparty's signatures
/// without recovering the key each time (see [`verify_eth_message`]).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(backend::PublicKey);

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.address())
    }
}

impl PublicKey {
    /// The Ethereum address of this key: the last 20 bytes of `keccak256(x ‖ y)`.
    pub fn address(&self) -> Address {
        let point = self.0.to_uncompressed();
        let hash = keccak256(&point[1..]);
        Address::from_slice(&hash[12..])
    }

    /// The 65-byte SEC1 uncompressed encoding `0x04 ‖ x ‖ y`.
    pub fn to_uncompressed(self) -> [u8; 65] {
        self.0.to_uncompressed()
    }

    /// Parses a SEC1 encoding (33 or 65 bytes).
    pub fn from_sec1(bytes: &[u8]) -> Result<Self, SignatureError> {
        backend::PublicKey::from_sec1(bytes)
            .map(Self)
            .ok_or(SignatureError::InvalidPublicKey)
    }
}

/// A [`Signer`] holding a secp256k1 secret key in memory.
#[derive(Clone)]
pub struct LocalSigner {
    key: backend::SecretKey,
    public: PublicKey,
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
        let key = backend::SecretKey::from_bytes(&bytes.0).ok_or(SignatureError::InvalidScalar)?;
        let public = PublicKey(key.public_key());
        Ok(Self {
            key,
            public,
            address: public.address(),
        })
    }

    /// A signer for a `0x`-prefixed (or bare) hex secret key.
    pub fn from_hex(hex_key: &str) -> Result<Self, SignatureError> {
        let trimmed = hex_key.trim();
        let s = trimmed.strip_prefix("0x").unwrap_or(trimmed);
        let mut bytes = [0u8; 32];
        // Exactly 64 digits: `alloy_primitives::hex` would strip a second `0x`.
        if s.len() != 64 {
            return Err(SignatureError::InvalidLength(s.len() / 2));
        }
        hex::decode_to_slice(s, &mut bytes)
            .map_err(|_| SignatureError::InvalidLength(s.len() / 2))?;
        Self::from_bytes(&B256::from(bytes))
    }

    /// A signer with a fresh random key from the operating system's RNG.
    pub fn random() -> Self {
        use k256::elliptic_curve::rand_core::{OsRng, RngCore};
        loop {
            let mut bytes = [0u8; 32];
            OsRng.fill_bytes(&mut bytes);
            // Zero or not below the group order: probability ~2^-128; draw again.
            if let Ok(signer) = Self::from_bytes(&B256::from(bytes)) {
                return signer;
            }
        }
    }

    /// The public key (cache it on the verifying side: see [`verify_eth_message`]).
    pub fn public_key(&self) -> PublicKey {
        self.public
    }

    /// The 32-byte secret key.
    pub fn secret_bytes(&self) -> B256 {
        B256::from(self.key.to_bytes())
    }
}

impl Signer for LocalSigner {
    fn address(&self) -> Address {
        self.address
    }

    fn sign_prehash(&self, prehash: &B256) -> Result<Signature, SignatureError> {
        // Both backends sign with RFC 6979 nonces and return low `s` with its recovery id.
        let (rs, recid) = self.key.sign_prehash(&prehash.0)?;
        if recid > 1 {
            // `r` is the x of a point above the group order (probability ~2^-127): Ethereum's
            // `v` cannot express it.
            return Err(SignatureError::Signer("recovery id above 1".into()));
        }
        Ok(Signature {
            v: 27 + recid,
            r: B256::from_slice(&rs[..32]),
            s: B256::from_slice(&rs[32..]),
        })
    }
}

/// Recovers the public key that signed the EIP-191 message `hash`.
pub fn recover_key_eth_message(hash: &B256, sig: &Signature) -> Result<PublicKey, SignatureError> {
    recover_key_prehash(&eth_message_hash(hash), sig)
}

/// Recovers the public key that signed the digest `prehash` as given. Refuses high `s`.
pub fn recover_key_prehash(prehash: &B256, sig: &Signature) -> Result<PublicKey, SignatureError> {
    backend::recover(&prehash.0, &sig.checked()?)
        .map(PublicKey)
        .ok_or(SignatureError::RecoveryFailed)
}

/// Recovers the address that signed the EIP-191 message `hash` (the contract's `recoverSigner`).
pub fn recover_eth_message(hash: &B256, sig: &Signature) -> Result<Address, SignatureError> {
    recover_key_eth_message(hash, sig).map(|k| k.address())
}

/// The EVM's `ecrecover` precompile on a digest: `None` where it returns nothing (`v` not 27/28,
/// `r` or `s` out of range, no point for `r`). Unlike [`recover_key_prehash`] it accepts high `s`,
/// as the precompile does (the simulated chain uses it to judge what the contracts would).
pub fn ecrecover(prehash: &B256, sig: &Signature) -> Option<Address> {
    sig.ecrecover_parity().ok()?;
    // (r, s, v) and (r, n - s, v ^ 1) recover the same key.
    let low = if sig.s.0 > HALF_ORDER {
        sig.flipped_s()
    } else {
        *sig
    };
    recover_key_prehash(prehash, &low).ok().map(|k| k.address())
}

/// Checks that `sig` over the EIP-191 message `hash` was made by `key`, **including** `v`: a
/// signature that passes recovers to `key` with `ecrecover`. Costs one ECDSA verification.
pub fn verify_eth_message(hash: &B256, sig: &Signature, key: &PublicKey) -> bool {
    verify_prehash_recoverable(&eth_message_hash(hash), sig, key)
}

/// Like [`verify_eth_message`] for a digest that is signed as given.
pub fn verify_prehash_recoverable(prehash: &B256, sig: &Signature, key: &PublicKey) -> bool {
    sig.checked()
        .is_ok_and(|sig| backend::verify_recoverable(&prehash.0, &sig, &key.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_hex_takes_one_optional_prefix_and_exactly_32_bytes() {
        let key = "11".repeat(32);
        let plain = LocalSigner::from_hex(&key).unwrap().address();
        assert_eq!(
            LocalSigner::from_hex(&format!("0x{key}"))
                .unwrap()
                .address(),
            plain
        );
        assert!(LocalSigner::from_hex(&format!("0x0x{key}")).is_err());
        assert!(LocalSigner::from_hex(&key[2..]).is_err());
        assert!(LocalSigner::from_hex(&format!("{key}11")).is_err());
        assert!(LocalSigner::from_hex(&format!("zz{}", &key[2..])).is_err());
    }

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

/// The two backends side by side: the same signatures byte for byte and the same decision on
/// every signature, well-formed or not.
#[cfg(all(test, feature = "libsecp256k1"))]
mod differential {
    use proptest::prelude::*;

    use super::{HALF_ORDER, Signature, k256_backend as rust, libsecp_backend as c};

    fn decide(prehash: &[u8; 32], sig: &Signature, k: &rust::PublicKey, l: &c::PublicKey) {
        match sig.checked() {
            Err(_) => {}
            Ok(checked) => {
                let kr = rust::recover(prehash, &checked).map(|k| k.to_uncompressed());
                let lr = c::recover(prehash, &checked).map(|k| k.to_uncompressed());
                assert_eq!(kr, lr, "recovery differs for {sig:?}");
                assert_eq!(
                    rust::verify_recoverable(prehash, &checked, k),
                    c::verify_recoverable(prehash, &checked, l),
                    "verification differs for {sig:?}"
                );
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        #[test]
        fn backends_agree(key in any::<[u8; 32]>(), hash in any::<[u8; 32]>(),
                          junk_r in any::<[u8; 32]>(), junk_s in any::<[u8; 32]>(), junk_v in any::<u8>()) {
            let (Some(ks), Some(ls)) = (rust::SecretKey::from_bytes(&key), c::SecretKey::from_bytes(&key)) else {
                // Both refuse the same keys (0 and >= n).
                prop_assert!(rust::SecretKey::from_bytes(&key).is_none());
                prop_assert!(c::SecretKey::from_bytes(&key).is_none());
                return Ok(());
            };
            let (kp, lp) = (ks.public_key(), ls.public_key());
            prop_assert_eq!(kp.to_uncompressed(), lp.to_uncompressed());
            let (k_rs, k_id) = ks.sign_prehash(&hash).unwrap();
            let (l_rs, l_id) = ls.sign_prehash(&hash).unwrap();
            prop_assert_eq!(k_rs, l_rs, "RFC 6979 signatures differ");
            prop_assert_eq!(k_id, l_id);
            prop_assert!(k_rs[32..] <= HALF_ORDER[..]);
            let good = Signature::from_rsv(&[&k_rs[..], &[27 + k_id]].concat()).unwrap();
            decide(&hash, &good, &kp, &lp);
            // v flipped, s flipped to the high half (with and without v), junk.
            let flipped_v = Signature { v: if good.v == 27 { 28 } else { 27 }, ..good };
            decide(&hash, &flipped_v, &kp, &lp);
            decide(&hash, &good.flipped_s(), &kp, &lp);
            decide(&hash, &Signature { v: good.v, ..good.flipped_s() }, &kp, &lp);
            let junk = Signature { v: junk_v, r: junk_r.into(), s: junk_s.into() };
            decide(&hash, &junk, &kp, &lp);
            decide(&hash, &Signature { v: 27, ..junk }, &kp, &lp);
            decide(&hash, &Signature { v: 28, r: good.r, ..junk }, &kp, &lp);
        }
    }
}
