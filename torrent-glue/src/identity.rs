//! Proof that a connection controls the `pseAccount` it claims.
//!
//! web3torrent trusts the `pseAccount` of an extended handshake as sent, yet credit, payment
//! routing and channel messages are keyed by it: anyone could claim another peer's account. Here
//! a connection counts as account `X` only once it has signed, with `X`'s key, a fresh value
//! chosen by **our** side for **this** connection. Until then it is not a paying peer: nothing
//! paid, credited or addressed to `X` reaches it.
//!
//! # Wire (ignored by web3torrent)
//!
//! - Extended-handshake key `pseAuth: 1` ([`paid_wire::extended::PSE_AUTH_KEY`]): "I prove my
//!   account, version 1". web3torrent ignores unknown keys.
//! - Paid-streaming command `auth-challenge`, data `{nonce: "0x" + 64 hex}`: 32 bytes drawn at
//!   random by the challenger for this connection. Sent once the peer's handshake announced
//!   `pseAuth` and the extension.
//! - Paid-streaming command `auth-proof`, data `{signature: "0x" + 130 hex}`: the answer,
//!   the 65-byte `r ‖ s ‖ v` signature over [`proof_digest`].
//!
//! web3torrent acks unknown commands and ignores them (`reference/web3torrent.md` §1.3), as it
//! does the `prompt` command already.
//!
//! # What is signed
//!
//! A domain-separated digest, signed with the EIP-191 prefix (`Signer::sign_eth_message`, as
//! every Nitro signature) and checked by recovering the address:
//!
//! ```text
//! digest = keccak256("paid-torrent identity proof v1" ‖ nonce[32] ‖ info_hash[20]
//!                    ‖ challenger_peer_id[20] ‖ prover_peer_id[20] ‖ prover_account[20])
//! ```
//!
//! The domain tag and the fixed 132-byte layout keep it apart from Nitro state and voucher
//! hashes (keccak of ABI encodings), so a proof can never be replayed as a channel signature,
//! nor the other way round. The nonce is ours and fresh for the connection, so a proof recorded
//! elsewhere does not verify here; the info-hash and both BitTorrent peer ids bind it to this
//! session.
//!
//! # Residual risk
//!
//! BitTorrent connections are not encrypted or authenticated, so nothing binds the proof to the
//! TCP connection itself: a party **on the path** between us and the real owner of `X` that
//! relays the BitTorrent handshakes (copying both peer ids) and the challenge can pass the
//! owner's proof off as its own and then read or inject messages on that connection. It cannot
//! do so from elsewhere. Closing this needs a transport that authenticates its ends (e.g. a
//! key-exchange bound into the digest); it is out of scope here.
//!
//! # Peers that cannot prove (the original web3torrent)
//!
//! See [`LegacyPolicy`](crate::LegacyPolicy): by default they are non-paying peers
//! ([`NonPayingReason::Unauthenticated`](crate::coordinator::NonPayingReason::Unauthenticated)),
//! served under the [`NonPayingPolicy`](crate::NonPayingPolicy) like any peer without the
//! extension.

use payment_channel::sign::{Signature, Signer, recover_eth_message};
use payment_channel::{Address, B256};
use sha3::{Digest, Keccak256};

use paid_wire::pse::PseMessage;

/// The proof version this crate speaks (the value of `pseAuth`).
pub const AUTH_VERSION: u32 = 1;

/// The domain tag hashed in front of every proof.
pub const PROOF_DOMAIN: &[u8] = b"paid-torrent identity proof v1";

/// What a proof binds to, besides the account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProofContext {
    /// The challenger's fresh random value.
    pub nonce: [u8; 32],
    /// The torrent's info-hash.
    pub info_hash: [u8; 20],
    /// The BitTorrent peer id of the side that sent the challenge.
    pub challenger_peer_id: [u8; 20],
    /// The BitTorrent peer id of the side that answers it.
    pub prover_peer_id: [u8; 20],
}

/// The digest a prover signs (see the [module docs](self)).
pub fn proof_digest(ctx: &ProofContext, prover_account: Address) -> B256 {
    let mut h = Keccak256::new();
    h.update(PROOF_DOMAIN);
    h.update(ctx.nonce);
    h.update(ctx.info_hash);
    h.update(ctx.challenger_peer_id);
    h.update(ctx.prover_peer_id);
    h.update(prover_account.as_slice());
    B256::from_slice(&h.finalize())
}

/// Our challenge for the connection numbered `seq`: `keccak256(secret ‖ "challenge" ‖ seq)`.
/// Unpredictable to anyone without `secret`, and never the same twice in one run.
pub(crate) fn challenge_nonce(secret: &[u8; 32], seq: u64) -> [u8; 32] {
    let mut h = Keccak256::new();
    h.update(secret);
    h.update(b"challenge");
    h.update(seq.to_be_bytes());
    h.finalize().into()
}

/// 32 bytes from the operating system's generator.
pub(crate) fn random_secret() -> [u8; 32] {
    let mut out = [0u8; 32];
    // Like `OsRng`: a system without a random generator cannot run a node at all.
    getrandom::fill(&mut out).expect("the operating system's random generator failed");
    out
}

/// The channel nonce a payee proposes with on a connection where both sides challenged each
/// other: the first 8 bytes (big-endian) of
/// `keccak256("paid-torrent channel nonce v1" ‖ payer_challenge ‖ payee_challenge ‖ index)`,
/// where `payer_challenge` is the challenge the payer sent (its fresh value),
/// `payee_challenge` the payee's, and `index` counts the channels proposed on the connection.
///
/// The payer joins only a nonce derived from one of its live connections with the payee
/// (`index` at most [`IdentityConfig::max_channels_per_connection`](crate::IdentityConfig::max_channels_per_connection)
/// past the last channel it funded on that connection, the payee's bound on unfunded proposals),
/// so it never funds a channel id it did not help create: an old proposal replayed after a
/// restart (or one used on another chain) has another nonce, hence another id.
pub fn channel_nonce(payer_challenge: &[u8; 32], payee_challenge: &[u8; 32], index: u32) -> u64 {
    let mut h = Keccak256::new();
    h.update(b"paid-torrent channel nonce v1");
    h.update(payer_challenge);
    h.update(payee_challenge);
    h.update(index.to_be_bytes());
    let digest = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// Signs a proof for `signer`'s address.
pub fn prove(
    signer: &dyn Signer,
    ctx: &ProofContext,
) -> Result<Signature, payment_channel::sign::SignatureError> {
    signer.sign_eth_message(&proof_digest(ctx, signer.address()))
}

/// Whether `signature` proves control of `account` in `ctx` (one public-key recovery).
pub fn verify(ctx: &ProofContext, account: Address, signature: &Signature) -> bool {
    recover_eth_message(&proof_digest(ctx, account), signature).is_ok_and(|a| a == account)
}

/// The paid-streaming payload of an `auth-challenge` carrying `nonce`.
pub fn encode_challenge(nonce: &[u8; 32]) -> Vec<u8> {
    PseMessage::AuthChallenge { nonce: *nonce }.encode()
}

/// The nonce of an `auth-challenge` payload; `None` for anything else.
pub fn decode_challenge(payload: &[u8]) -> Option<[u8; 32]> {
    match PseMessage::decode(payload) {
        Ok(PseMessage::AuthChallenge { nonce }) => Some(nonce),
        _ => None,
    }
}

/// The paid-streaming payload of an `auth-proof` carrying `signature`.
pub fn encode_proof(signature: &Signature) -> Vec<u8> {
    PseMessage::AuthProof {
        signature: signature.to_rsv(),
    }
    .encode()
}

/// The signature of an `auth-proof` payload; `None` for anything else (or an invalid
/// signature encoding).
pub fn decode_proof(payload: &[u8]) -> Option<Signature> {
    match PseMessage::decode(payload) {
        Ok(PseMessage::AuthProof { signature: sig }) => Signature::from_rsv(&sig).ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use payment_channel::sign::LocalSigner;

    fn ctx() -> ProofContext {
        ProofContext {
            nonce: [1; 32],
            info_hash: [2; 20],
            challenger_peer_id: [3; 20],
            prover_peer_id: [4; 20],
        }
    }

    #[test]
    fn a_proof_verifies_only_in_its_context_and_for_its_account() {
        let signer = LocalSigner::random();
        let me = signer.address();
        let sig = prove(&signer, &ctx()).unwrap();
        assert!(verify(&ctx(), me, &sig));
        assert!(!verify(&ctx(), Address::repeat_byte(9), &sig));
        let changes: [fn(&mut ProofContext); 4] = [
            |c| c.nonce[0] ^= 1,
            |c| c.info_hash[0] ^= 1,
            |c| c.challenger_peer_id[0] ^= 1,
            |c| c.prover_peer_id[0] ^= 1,
        ];
        for change in changes {
            let mut other = ctx();
            change(&mut other);
            assert!(!verify(&other, me, &sig));
        }
        // Swapping the roles (a proof reflected back at its challenger) does not verify.
        let mut swapped = ctx();
        std::mem::swap(&mut swapped.challenger_peer_id, &mut swapped.prover_peer_id);
        assert!(!verify(&swapped, me, &sig));
        // The wire forms round-trip; web3torrent sees an unknown command.
        assert_eq!(decode_proof(&encode_proof(&sig)), Some(sig));
        let challenge = encode_challenge(&[0xab; 32]);
        assert!(challenge.starts_with(b"d7:command14:auth-challenge4:datad5:nonce66:0xabab"));
        assert_eq!(decode_challenge(&challenge), Some([0xab; 32]));
        assert_eq!(decode_challenge(&encode_proof(&sig)), None);
    }
}
