//! The pure-Rust backend: RustCrypto's `k256`.
// With `libsecp256k1` this backend only serves the differential test.
#![cfg_attr(feature = "libsecp256k1", allow(dead_code))]

use k256::ecdsa::{RecoveryId, SigningKey, VerifyingKey};
use k256::elliptic_curve::PrimeField;
use k256::elliptic_curve::ops::{Invert, LinearCombination, Reduce};
use k256::elliptic_curve::point::AffineCoordinates;
use k256::{ProjectivePoint, Scalar, U256 as KU256};

use super::{CheckedSig, SignatureError};

pub(super) const NAME: &str = "k256";

#[derive(Clone)]
pub(super) struct SecretKey(SigningKey);

impl SecretKey {
    pub(super) fn from_bytes(bytes: &[u8; 32]) -> Option<Self> {
        SigningKey::from_bytes(&(*bytes).into()).ok().map(Self)
    }

    pub(super) fn public_key(&self) -> PublicKey {
        PublicKey(*self.0.verifying_key())
    }

    pub(super) fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes().into()
    }

    /// `(r ‖ s, recovery id)`, RFC 6979, low `s`.
    pub(super) fn sign_prehash(
        &self,
        prehash: &[u8; 32],
    ) -> Result<([u8; 64], u8), SignatureError> {
        let (sig, recid) = self
            .0
            .sign_prehash_recoverable(prehash)
            .map_err(|e| SignatureError::Signer(e.to_string()))?;
        // k256 normalizes `s` to the low half and adjusts the recovery id with it.
        Ok((sig.to_bytes().into(), recid.to_byte()))
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) struct PublicKey(VerifyingKey);

impl PublicKey {
    pub(super) fn to_uncompressed(self) -> [u8; 65] {
        let point = self.0.to_encoded_point(false);
        let mut out = [0u8; 65];
        out.copy_from_slice(point.as_bytes());
        out
    }

    pub(super) fn from_sec1(bytes: &[u8]) -> Option<Self> {
        VerifyingKey::from_sec1_bytes(bytes).ok().map(Self)
    }
}

/// The key that signed `prehash` with `sig`.
pub(super) fn recover(prehash: &[u8; 32], sig: &CheckedSig) -> Option<PublicKey> {
    let recid = RecoveryId::from_byte(sig.parity)?;
    let sig = k256::ecdsa::Signature::from_scalars(sig.r, sig.s).ok()?;
    VerifyingKey::recover_from_prehash(prehash, &sig, recid)
        .ok()
        .map(PublicKey)
}

/// Whether `sig` over `prehash` recovers to `key`, at the cost of one verification: it computes
/// the point `R` that recovery would use and checks its `x` against `r` and its `y` parity
/// against `parity`.
pub(super) fn verify_recoverable(prehash: &[u8; 32], sig: &CheckedSig, key: &PublicKey) -> bool {
    let (Some(r), Some(s)) = (
        Option::<Scalar>::from(Scalar::from_repr(sig.r.into())),
        Option::<Scalar>::from(Scalar::from_repr(sig.s.into())),
    ) else {
        return false;
    };
    let z = <Scalar as Reduce<KU256>>::reduce_bytes(&(*prehash).into());
    // `s` is public, so the variable-time inversion (what k256's own `verify_prehash` uses) is
    // safe here; the constant-time one costs about 5% of the whole verification.
    let Some(s_inv) = Option::<Scalar>::from(Invert::invert_vartime(&s)) else {
        return false;
    };
    let u1 = z * s_inv;
    let u2 = r * s_inv;
    let q = ProjectivePoint::from(*key.0.as_affine());
    let big_r = ProjectivePoint::lincomb(&ProjectivePoint::GENERATOR, &u1, &q, &u2).to_affine();
    if big_r == k256::AffinePoint::IDENTITY {
        return false;
    }
    let x = <Scalar as Reduce<KU256>>::reduce_bytes(&big_r.x());
    x == r && u8::from(bool::from(big_r.y_is_odd())) == sig.parity
}
