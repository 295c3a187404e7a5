//! Who a peer is: identity proofs (challenge and answer), strikes, and the classification of a
//! connection as paying or non-paying (with the requests deferred until it is known).

use std::time::Instant;

use paid_wire::choke::{
    BlockedPolicy, ChokeConfig, ChokeController, PayerConfig, PaymentPlanner, TrustPolicy,
};
use payment_channel::Address;
use payment_channel::sign::Signature;

use super::state::{Claim, Class, Gate, Identity, Phase};
use super::{
    Coordinator, CoordinatorEvent, NonPayingPolicy, NonPayingReason, PeerClass, UploadConfig,
};
use crate::channel::ChannelCommand;
use crate::engine::{DisconnectReason, EngineCommand, PeerKey};
use crate::error::{Error, PeerError};
use crate::identity::ProofContext;
use paid_wire::pse::PseMessage;

impl Coordinator {
    /// [`misbehaved`](Self::misbehaved), counted as a strike: at the limit the connection is
    /// closed ([`DisconnectReason::Strikes`]).
    pub(super) fn strike(&mut self, key: PeerKey, error: PeerError) -> Error {
        let limit = self.config.identity.disconnect_after_strikes;
        if let Some(peer) = self.peers.get_mut(&key) {
            peer.strikes = peer.strikes.saturating_add(1);
            if limit.is_some_and(|l| peer.strikes >= l) && !peer.struck_out {
                peer.struck_out = true;
                self.engine_out.push_back(EngineCommand::Disconnect {
                    peer: key,
                    reason: DisconnectReason::Strikes,
                });
            }
        }
        self.misbehaved(key, error)
    }

    /// Sends our challenge for this connection (once) and remembers what it claims.
    pub(super) fn send_challenge(&mut self, key: PeerKey, claim: Claim) {
        let secret = self.challenge_secret;
        let Some(peer) = self.peers.get_mut(&key) else {
            return;
        };
        peer.claim = Some(claim);
        if peer.challenge.is_some() {
            return;
        }
        // Unpredictable without the secret, distinct per connection (`seq` never repeats).
        let nonce = crate::identity::challenge_nonce(&secret, peer.seq);
        peer.challenge = Some(nonce);
        self.send_notice(key, PseMessage::AuthChallenge { nonce });
    }

    /// The peer challenges us: answer once per connection, if we can sign.
    pub(super) fn on_auth_challenge(&mut self, key: PeerKey, nonce: [u8; 32]) -> Result<(), Error> {
        let Some(signer) = self.signer.clone() else {
            // We announced no `pseAuth`: nothing to answer with.
            return Ok(());
        };
        let peer = self.peer_mut(key)?;
        if peer.answered_challenge {
            // One signature per connection, whatever the peer sends.
            return Err(self.misbehaved(key, PeerError::RepeatedChallenge));
        }
        if peer.pse_id.is_none() {
            return Ok(());
        }
        peer.answered_challenge = true;
        peer.their_challenge = Some(nonce);
        let ctx = ProofContext {
            nonce,
            info_hash: peer.info.info_hash,
            challenger_peer_id: peer.info.remote_peer_id,
            prover_peer_id: peer.info.local_peer_id,
        };
        if let Ok(signature) = crate::identity::prove(signer.as_ref(), &ctx) {
            self.send_notice(
                key,
                PseMessage::AuthProof {
                    signature: signature.to_rsv(),
                },
            );
        }
        Ok(())
    }

    /// The peer answers our challenge: it becomes paying as the account it proved, or it is
    /// non-paying for good and earns a strike.
    pub(super) fn on_auth_proof(
        &mut self,
        now: Instant,
        key: PeerKey,
        signature: [u8; 65],
    ) -> Result<(), Error> {
        let peer = self.peer_mut(key)?;
        let (Class::Pending { .. }, Some(claim), Some(nonce)) =
            (peer.class, peer.claim.clone(), peer.challenge)
        else {
            if matches!(peer.class, Class::Paying(_)) {
                // Proven already: a repeat changes nothing.
                return Ok(());
            }
            return Err(self.strike(key, PeerError::BadIdentityProof));
        };
        let ctx = ProofContext {
            nonce,
            info_hash: peer.info.info_hash,
            challenger_peer_id: peer.info.local_peer_id,
            prover_peer_id: peer.info.remote_peer_id,
        };
        let proven = Signature::from_rsv(&signature)
            .is_ok_and(|sig| crate::identity::verify(&ctx, claim.account, &sig));
        if !proven {
            self.make_non_paying(now, key, NonPayingReason::AuthenticationFailed);
            return Err(self.strike(key, PeerError::BadIdentityProof));
        }
        self.make_paying(now, key, claim);
        Ok(())
    }

    pub(super) fn misbehaved(&mut self, key: PeerKey, error: PeerError) -> Error {
        self.events.push_back(CoordinatorEvent::PeerMisbehaved {
            peer: key,
            error: error.clone(),
        });
        Error::Peer(error)
    }

    pub(super) fn make_paying(&mut self, now: Instant, key: PeerKey, claim: Claim) {
        let Claim {
            account,
            outcome,
            terms,
            hub,
        } = claim;
        let ident = self
            .identities
            .entry(account)
            .or_insert_with(|| Identity::new(terms));
        ident.terms = terms;
        ident.hub = hub;
        if outcome.is_some() {
            ident.outcome = outcome;
        }
        if ident.live.is_empty() {
            // Back after an absence (or a restart of either side): what we last sent on our
            // channels with it may have been lost with the old connection.
            for slot in [ident.payee, ident.payer].into_iter().flatten() {
                if slot.phase != Phase::Challenging {
                    self.channel_out.push_back(ChannelCommand::Resend {
                        channel_id: slot.id,
                    });
                }
            }
        }
        ident.live.insert(key);
        ident.idle_since = None;
        ident.departed_at = None;
        let payee_open = ident.payee.filter(|s| s.phase == Phase::Open).map(|s| s.id);
        let payer_open = ident.payer.filter(|s| s.phase == Phase::Open).map(|s| s.id);

        let gate = match &self.config.upload {
            None => Gate::Open,
            Some(up) => {
                let choke = self.identity_choke_config(up, account, key);
                ChokeController::new(choke).map_or(Gate::Refuse, |c| Gate::Credit(Box::new(c)))
            }
        };
        let planner = self.config.download.and_then(|d| {
            // Neither a budget nor an unreceived-bytes limit: the coordinator's window bounds
            // payments per identity and per channel.
            PaymentPlanner::new(
                PayerConfig::new(terms.price_per_byte, d.granularity_bytes)
                    .with_pay_ahead(d.pay_ahead),
            )
            .ok()
        });
        let Some(peer) = self.peers.get_mut(&key) else {
            return;
        };
        peer.class = Class::Paying(account);
        peer.gate = gate;
        peer.planner = planner;
        peer.terms = terms;
        let fast = peer.info.fast_negotiated;
        let choked = peer.local_choked;
        if let Some(ctrl) = peer.gate.controller_mut() {
            ctrl.set_fast_negotiated(fast);
            if choked {
                ctrl.handle_choke(now);
            }
            if let Some(id) = payee_open {
                // The channel is open: the new connection uses it at once.
                let _ = ctrl.handle_channel_ready(now, id);
            }
        }
        if let (Some(planner), Some(id)) = (peer.planner.as_mut(), payer_open) {
            planner.handle_channel_ready(id);
        }
        self.events.push_back(CoordinatorEvent::PeerClassified {
            peer: key,
            class: PeerClass::Paying { account },
        });
        self.drain_gate(now, key, None);
        if let Some(id) = payee_open
            && let Some(ident) = self.identities.get_mut(&account)
            && ident.ledger.bank_wei > 0
        {
            let bank = std::mem::take(&mut ident.ledger.bank_wei);
            self.route_payment(now, account, id, bank);
        }
        self.flush_outbox(account);
        self.retry_proposals(now, account);
        self.replay_deferred(now, key);
        self.update_choke(now, key);
    }

    /// The uploader's per-connection gate config, with the identity's trust: what closed
    /// connections used on trust, and what live ones hold, is not granted again.
    pub(super) fn identity_choke_config(
        &self,
        up: &UploadConfig,
        account: Address,
        key: PeerKey,
    ) -> ChokeConfig {
        let mut choke = up.choke.clone();
        let price = choke.price_per_byte.max(1);
        if let Some(ident) = self.identities.get(&account) {
            let debt = u64::try_from(ident.ledger.debt_wei.div_ceil(price)).unwrap_or(u64::MAX);
            let held: u64 = ident
                .live
                .iter()
                .filter(|k| **k != key)
                .filter_map(|k| self.peers.get(k)?.gate.controller())
                .map(ChokeController::trust_allowance)
                .fold(0, u64::saturating_add);
            let used = debt.saturating_add(held);
            choke.trust.initial_bytes = choke.trust.initial_bytes.saturating_sub(used);
            choke.trust.max_bytes = choke.trust.max_bytes.saturating_sub(used);
        }
        choke
    }

    pub(super) fn make_non_paying(&mut self, now: Instant, key: PeerKey, reason: NonPayingReason) {
        let policy = self.config.non_paying;
        let upload = self.config.upload.clone();
        let Some(peer) = self.peers.get_mut(&key) else {
            return;
        };
        let fast = peer.info.fast_negotiated;
        peer.class = Class::NonPaying(reason);
        let mut announce = Vec::new();
        peer.gate = match (upload, policy) {
            (None, _) => Gate::Open,
            (Some(_), NonPayingPolicy::Refuse) => Gate::Refuse,
            (Some(up), NonPayingPolicy::FreeAllowance { bytes }) => {
                let config = up
                    .choke
                    .with_fast_negotiated(fast)
                    .with_blocked(BlockedPolicy::RefuseImmediately)
                    .with_trust(TrustPolicy::fixed(bytes))
                    .with_serve_trust_before_channel(true)
                    .with_prompt(None)
                    .with_payment_timeout(None);
                ChokeController::new(config).map_or(Gate::Refuse, |c| Gate::Credit(Box::new(c)))
            }
            (Some(_), NonPayingPolicy::AllowedFastPreview) if fast => {
                announce = peer.info.allowed_fast.clone();
                Gate::Preview(peer.info.allowed_fast.iter().copied().collect())
            }
            (Some(_), _) => Gate::Refuse,
        };
        let choked = peer.local_choked;
        if let Some(ctrl) = peer.gate.controller_mut()
            && choked
        {
            ctrl.handle_choke(now);
        }
        for piece in announce {
            self.engine_out
                .push_back(EngineCommand::AllowedFast { peer: key, piece });
        }
        self.events.push_back(CoordinatorEvent::PeerClassified {
            peer: key,
            class: PeerClass::NonPaying(reason),
        });
        self.replay_deferred(now, key);
        self.update_choke(now, key);
    }

    pub(super) fn replay_deferred(&mut self, now: Instant, key: PeerKey) {
        let deferred = match self.peers.get_mut(&key) {
            Some(p) => std::mem::take(&mut p.deferred),
            None => return,
        };
        for request in deferred {
            let _ = self.gate_request(now, key, request, true);
        }
    }
}
