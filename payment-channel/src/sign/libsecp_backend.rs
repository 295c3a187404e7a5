//! The C backend: libsecp256k1 through the `secp256k1` crate (feature `libsecp256k1`).

use std::sync::LazyLock;

use secp256k1::ecdsa::{RecoverableSignature, RecoveryId};
use secp256k1::{All, Message, Secp256k1};

use super::{CheckedSig, SignatureError};

pub(super) const NAME: &str = "libsecp256k1";

/// One context for the process: libsecp256k1's contexts are immutable after creation and
/// shareable across threads; creating one per call would cost more than a signature.
static CONTEXT: LazyLock<Secp256k1<All>> = LazyLock::new(Secp256k1::new);

#[derive(Clone)]
pub(super) struct SecretKey(secp256k1::SecretKey);

impl SecretKey {
    pub(super) fn from_bytes(bytes: &[u8; 32]) -> Option<Self> {
        secp256k1::SecretKey::from_byte_array(*bytes).ok().map(Self)
    }

    pub(super) fn public_key(&self) -> PublicKey {
        PublicKey(secp256k1::PublicKey::from_secret_key(&CONTEXT, &self.0))
    }

    pub(super) fn to_bytes(&self) -> [u8; 32] {
        self.0.secret_bytes()
    }

    /// `(r ‖ s, recovery id)`, RFC 6979, low `s` (libsecp256k1 always signs low `s`).
    pub(super) fn sign_prehash(
        &self,
        prehash: &[u8; 32],
    ) -> Result<([u8; 64], u8), SignatureError> {
        let sig = CONTEXT.sign_ecdsa_recoverable(Message::from_digest(*prehash), &self.0);
        let (recid, rs) = sig.serialize_compact();
        let recid = u8::try_from(i32::from(recid))
            .map_err(|_| SignatureError::Signer("recovery id out of range".into()))?;
        Ok((rs, recid))
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) struct PublicKey(secp256k1::PublicKey);

impl PublicKey {
    pub(super) fn to_uncompressed(self) -> [u8; 65] {
        self.0.serialize_uncompressed()
    }

    pub(super) fn from_sec1(bytes: &[u8]) -> Option<Self> {
        secp256k1::PublicKey::from_slice(bytes).ok().map(Self)
    }
}

/// The key that signed `prehash` with `sig`.
pub(super) fn recover(prehash: &[u8; 32], sig: &CheckedSig) -> Option<PublicKey> {
    let mut rs = [0u8; 64];
    rs[..32].copy_from_slice(&sig.r);
    rs[32..].copy_from_slice(&sig.s);
    let recid = RecoveryId::try_from(i32::from(sig.parity)).ok()?;
    let sig = RecoverableSignature::from_compact(&rs, recid).ok()?;
    CONTEXT
        .recover_ecdsa(Message::from_digest(*prehash), &sig)
        .ok()
        .map(PublicKey)
}

/// Whether `sig` over `prehash` recovers to `key`. libsecp256k1's plain verification does not
/// look at the parity `v` encodes, and a recovery there costs about what a verification does
/// (26 µs against 22 µs), so this recovers and compares.
pub(super) fn verify_recoverable(prehash: &[u8; 32], sig: &CheckedSig, key: &PublicKey) -> bool {
    recover(prehash, sig).is_some_and(|k| k == *key)
}
