//! The uploader: the request gate and choking, the payee channel (creation, pool, rebalance,
//! resettle) and the payments it receives.

use std::time::Instant;

use paid_wire::choke::{ChannelId, ChokeController, GateAction, PeerMisbehaviour, RequestOutcome};
use paid_wire::message::BlockRequest;
use payment_channel::Address;

use super::state::slot_open;
use super::state::{Class, Gate, Peer, Phase, Slot};
use super::{Coordinator, CoordinatorEvent, OverduePolicy, UploadConfig};
use crate::channel::{ChannelCommand, Role};
use crate::engine::{ChokeAuthority, DisconnectReason, EngineCommand, PeerKey, RequestDecision};
use crate::error::{PeerError, UsageError};
use paid_wire::pse::PseMessage;

impl Coordinator {
    pub(super) fn upload_price(&self) -> u128 {
        self.config
            .upload
            .as_ref()
            .map_or(1, |u| u.choke.price_per_byte)
            .max(1)
    }

    /// Whether a peer may be served at all right now (ignoring credit of paying peers).
    pub(super) fn servable(peer: &Peer) -> bool {
        match &peer.gate {
            Gate::Open | Gate::Pending => true,
            Gate::Credit(c) => {
                !c.is_permanently_stopped()
                    && (matches!(peer.class, Class::Paying(_))
                        || (c.credit() > 0 && !peer.allowance_spent))
            }
            Gate::Refuse | Gate::Preview(_) => false,
        }
    }

    /// Under glue authority: unchoke an interested servable peer, choke an unservable one.
    pub(super) fn update_choke(&mut self, now: Instant, key: PeerKey) {
        if self.config.choke_authority != ChokeAuthority::Glue {
            return;
        }
        let Some(peer) = self.peers.get_mut(&key) else {
            return;
        };
        let servable = Self::servable(peer);
        let choke = if !servable {
            true
        } else if peer.remote_interested {
            false
        } else {
            return;
        };
        if peer.local_choked == choke {
            return;
        }
        peer.set_local_choke(now, choke);
        self.engine_out.push_back(if choke {
            EngineCommand::Choke { peer: key }
        } else {
            EngineCommand::Unchoke { peer: key }
        });
        self.drain_gate(now, key, None);
    }

    pub(super) fn gate_request(
        &mut self,
        now: Instant,
        key: PeerKey,
        request: BlockRequest,
        replay: bool,
    ) -> Result<RequestDecision, UsageError> {
        let max_deferred = self.config.max_deferred_requests;
        let max_block = self
            .config
            .upload
            .as_ref()
            .map_or(paid_wire::choke::DEFAULT_MAX_BLOCK_LEN, |u| {
                u.choke.max_block_len
            });
        let peer = self.peer_mut(key)?;
        let refuse = if peer.info.fast_negotiated {
            RequestDecision::Reject
        } else {
            RequestDecision::Drop
        };
        let decision = match &mut peer.gate {
            Gate::Open => RequestDecision::Serve,
            Gate::Pending => {
                if peer.deferred.contains(&request) {
                    RequestDecision::Defer
                } else if peer.deferred.len() < max_deferred {
                    peer.deferred.push_back(request);
                    RequestDecision::Defer
                } else {
                    refuse
                }
            }
            Gate::Refuse => refuse,
            Gate::Preview(pieces) => {
                if pieces.contains(&request.index)
                    && request.length > 0
                    && request.length <= max_block
                {
                    RequestDecision::Serve
                } else {
                    refuse
                }
            }
            Gate::Credit(ctrl) => {
                let (decision, misbehaviour) = match ctrl.handle_request(now, request) {
                    Ok(RequestOutcome::Served) => (RequestDecision::Serve, None),
                    Ok(RequestOutcome::Rejected(_)) => (RequestDecision::Reject, None),
                    Ok(RequestOutcome::Dropped(_)) => (RequestDecision::Drop, None),
                    Ok(_) => (RequestDecision::Defer, None),
                    Err(e) => (refuse, Some(misbehaviour_error(&e, request))),
                };
                if decision == RequestDecision::Defer {
                    peer.stats.requests_deferred = peer.stats.requests_deferred.saturating_add(1);
                }
                let exhausted = matches!(peer.class, Class::NonPaying(_))
                    && matches!(decision, RequestDecision::Reject | RequestDecision::Drop);
                if exhausted {
                    // What is left of the free allowance does not cover what it asks for (a
                    // stock peer asks for whole blocks): it is choked for good.
                    peer.allowance_spent = true;
                }
                if let Some(error) = misbehaviour {
                    let _ = self.misbehaved(key, error);
                }
                let intercept = (!replay).then_some((request, decision));
                self.drain_gate(now, key, intercept);
                if replay && decision == RequestDecision::Drop {
                    self.engine_out
                        .push_back(EngineCommand::DropRequest { peer: key, request });
                }
                if exhausted {
                    self.update_choke(now, key);
                }
                return Ok(decision);
            }
        };
        if decision == RequestDecision::Serve {
            *peer.serving.entry(request).or_insert(0) += 1;
        }
        if decision == RequestDecision::Defer {
            peer.stats.requests_deferred = peer.stats.requests_deferred.saturating_add(1);
        }
        if replay {
            let command = match decision {
                RequestDecision::Serve => Some(EngineCommand::Serve { peer: key, request }),
                RequestDecision::Reject => Some(EngineCommand::Reject { peer: key, request }),
                RequestDecision::Drop => Some(EngineCommand::DropRequest { peer: key, request }),
                _ => None,
            };
            self.engine_out.extend(command);
        }
        Ok(decision)
    }

    /// Performs the queued actions of a connection's gate. `intercept` is the request whose
    /// `Serve`/`Reject` the caller returns as a [`RequestDecision`] instead of a command.
    pub(super) fn drain_gate(
        &mut self,
        now: Instant,
        key: PeerKey,
        mut intercept: Option<(BlockRequest, RequestDecision)>,
    ) {
        let send_prompts = self.config.upload.as_ref().is_some_and(|u| u.send_prompts);
        let on_overdue = self
            .config
            .upload
            .as_ref()
            .map_or(OverduePolicy::Wait, |u| u.on_overdue);
        loop {
            let Some(peer) = self.peers.get_mut(&key) else {
                return;
            };
            let account = peer.account();
            let Some(action) = peer
                .gate
                .controller_mut()
                .and_then(ChokeController::poll_action)
            else {
                return;
            };
            match action {
                GateAction::Serve(request) => {
                    if peer.early_stop.take().is_some() {
                        // Served (trust) before the peer paid for our early STOP: it is no
                        // longer stopped.
                        self.send_notice(key, PseMessage::Start);
                    }
                    if intercept == Some((request, RequestDecision::Serve)) {
                        intercept = None;
                    } else {
                        self.engine_out
                            .push_back(EngineCommand::Serve { peer: key, request });
                    }
                }
                GateAction::Reject(request) => {
                    if intercept == Some((request, RequestDecision::Reject)) {
                        intercept = None;
                    } else {
                        self.engine_out
                            .push_back(EngineCommand::Reject { peer: key, request });
                    }
                }
                GateAction::NeedChannel => {
                    if let Some(account) = account {
                        self.need_payee_channel(now, account, Some(key));
                        // A channel already proposed: this connection learns it now.
                        if let Some(channel_id) = self
                            .identities
                            .get(&account)
                            .and_then(|i| i.payee)
                            .filter(|s| s.phase == Phase::Proposed)
                            .map(|s| s.id)
                        {
                            self.send_early_stops(account, channel_id);
                        }
                    }
                }
                GateAction::SendStop { channel_id } => {
                    let told = peer.early_stop.take() == Some(channel_id);
                    if let Some(account) = account
                        && self.cover_from_pool(now, key, account, channel_id)
                    {
                        // Credit the peer already paid for covered it: no STOP on the wire,
                        // and none of the START that the controller emits next (unless the
                        // peer saw our early STOP: then it must hear START).
                        if let Some(peer) = self.peers.get_mut(&key) {
                            peer.suppress_start = !told;
                        }
                        continue;
                    }
                    let Some(peer) = self.peers.get_mut(&key) else {
                        return;
                    };
                    peer.stopped_at = Some(self.seq);
                    self.seq += 1;
                    if told {
                        // The STOP we sent on the proposal: not repeated.
                        continue;
                    }
                    self.send_notice(
                        key,
                        PseMessage::Stop {
                            channel_id: Some(channel_id),
                        },
                    );
                }
                GateAction::SendStart { .. } => {
                    peer.stopped_at = None;
                    peer.early_stop = None;
                    if std::mem::take(&mut peer.suppress_start) {
                        continue;
                    }
                    self.send_notice(key, PseMessage::Start);
                }
                GateAction::PromptPayment {
                    suggested_bytes,
                    suggested_amount,
                    ..
                } => {
                    peer.prompted_at = Some(self.seq);
                    self.seq += 1;
                    if send_prompts {
                        self.send_notice(
                            key,
                            PseMessage::Prompt {
                                bytes: suggested_bytes,
                                amount: suggested_amount,
                            },
                        );
                    }
                }
                GateAction::SendPermanentStop { channel_id } => {
                    peer.early_stop = None;
                    self.send_notice(key, PseMessage::PermanentStop { channel_id });
                    self.update_choke(now, key);
                }
                GateAction::PaymentOverdue { channel_id } => {
                    self.events.push_back(CoordinatorEvent::PaymentOverdue {
                        peer: key,
                        channel_id,
                    });
                    match on_overdue {
                        OverduePolicy::Wait => {}
                        OverduePolicy::PermanentStop => {
                            if let Some(ctrl) = peer.gate.controller_mut() {
                                ctrl.handle_permanent_stop(now);
                            }
                        }
                        OverduePolicy::Disconnect => {
                            self.engine_out.push_back(EngineCommand::Disconnect {
                                peer: key,
                                reason: DisconnectReason::PaymentOverdue,
                            });
                        }
                    }
                }
                GateAction::Disconnect(reason) => {
                    let reason = match reason {
                        paid_wire::choke::DisconnectReason::QueueOverflow => {
                            DisconnectReason::QueueOverflow
                        }
                        _ => DisconnectReason::InvalidRequests,
                    };
                    self.engine_out
                        .push_back(EngineCommand::Disconnect { peer: key, reason });
                }
                _ => {}
            }
        }
    }

    /// A paying peer needs a channel to pay us on: propose one unless one exists or is coming,
    /// within the creation limits ([`IdentityConfig`]): per connection (`key`, or the
    /// identity's newest connection), overall per window, and the channel work queue.
    pub(super) fn need_payee_channel(
        &mut self,
        now: Instant,
        account: Address,
        key: Option<PeerKey>,
    ) {
        let Some(up) = self.config.upload.as_ref() else {
            return;
        };
        let deposit = up.deposit;
        let price = up.choke.price_per_byte;
        let limits = self.config.identity;
        let deadline = now
            .checked_add(self.config.liveness.response_timeout)
            .unwrap_or(now);
        let Some(ident) = self.identities.get(&account) else {
            return;
        };
        if ident.creating.is_some() || ident.payee.is_some() {
            // At most one channel per identity (web3torrent #2220).
            return;
        }
        let key = key.or_else(|| {
            ident
                .live
                .iter()
                .filter_map(|k| Some((*k, self.peers.get(k)?.seq)))
                .max_by_key(|(_, seq)| *seq)
                .map(|(k, _)| k)
        });
        while self.recent_creations.front().is_some_and(|t| {
            t.checked_add(limits.channel_window)
                .is_some_and(|end| end <= now)
        }) {
            self.recent_creations.pop_front();
        }
        let per_connection = key.and_then(|k| self.peers.get(&k)).is_some_and(|p| {
            p.channels_requested.saturating_sub(p.channels_funded)
                >= limits.max_channels_per_connection
        });
        let overall = self.recent_creations.len()
            >= usize::try_from(limits.max_channels_per_window).unwrap_or(usize::MAX);
        let queue_full = self.channel_out.len() >= limits.max_channel_commands;
        if per_connection || overall || queue_full {
            // Each proposal costs a signature and durable writes: a stranger gets no more.
            // The connection waiting for it is not served (it may reconnect later).
            self.events
                .push_back(CoordinatorEvent::ChannelRateLimited { account });
            if let Some(k) = key
                && let Some(ctrl) = self.peers.get_mut(&k).and_then(|p| p.gate.controller_mut())
            {
                ctrl.handle_permanent_stop(now);
                self.drain_gate(now, k, None);
            }
            return;
        }
        let mut nonce = None;
        if let Some(p) = key.and_then(|k| self.peers.get_mut(&k)) {
            // The payer contributed its challenge: it can check it helped create the id.
            if let (Some(payer), Some(payee)) = (p.their_challenge, p.challenge) {
                nonce = Some(crate::identity::channel_nonce(
                    &payer,
                    &payee,
                    p.channels_requested,
                ));
            }
            p.channels_requested = p.channels_requested.saturating_add(1);
        }
        self.recent_creations.push_back(now);
        let Some(ident) = self.identities.get_mut(&account) else {
            return;
        };
        ident.creating = Some(deadline);
        ident.proposed_on = key;
        self.channel_out.push_back(ChannelCommand::Create {
            peer: account,
            peer_destination: ident.outcome,
            deposit,
            price: Some(price),
            nonce,
            peer_hub: ident.hub.clone(),
        });
        self.events
            .push_back(CoordinatorEvent::ChannelRequested { account });
    }

    /// A connection of `account` ran out of credit. Before a STOP goes out, use what the peer
    /// already paid that sits elsewhere: the identity's ledger, and the unused credit of its
    /// other connections that are idle (credit is held per connection; with several
    /// connections the piece picker may move the last blocks away from the one that holds it).
    /// Returns whether the connection is no longer stopped.
    pub(super) fn cover_from_pool(
        &mut self,
        now: Instant,
        key: PeerKey,
        account: Address,
        channel_id: ChannelId,
    ) -> bool {
        let siblings: Vec<PeerKey> = match self.identities.get(&account) {
            Some(ident) if slot_open(ident.payee) => {
                ident.live.iter().copied().filter(|k| *k != key).collect()
            }
            _ => return false,
        };
        for sibling in siblings {
            self.resettle(now, sibling, account, channel_id);
        }
        let Some(ident) = self.identities.get_mut(&account) else {
            return false;
        };
        let bank = std::mem::take(&mut ident.ledger.bank_wei);
        if bank == 0 {
            return false;
        }
        let Some(peer) = self.peers.get_mut(&key) else {
            return false;
        };
        let Some(ctrl) = peer.gate.controller_mut() else {
            return false;
        };
        if ctrl.handle_payment(now, channel_id, bank).is_err() {
            if let Some(ident) = self.identities.get_mut(&account) {
                ident.ledger.add(bank, 0);
            }
            return false;
        }
        peer.fed_wei = peer.fed_wei.saturating_add(bank);
        !ctrl.is_stopped()
    }

    /// A connection of `account` is stopped with requests waiting while a sibling holds idle
    /// credit (a payment was routed to the sibling, or its last requests went elsewhere): move
    /// the credit over. The STOP went out, so the START that follows does too.
    pub(super) fn rebalance(&mut self, now: Instant, account: Address) {
        let Some(ident) = self.identities.get(&account) else {
            return;
        };
        let Some(slot) = ident.payee.filter(|s| s.phase == Phase::Open) else {
            return;
        };
        if ident.live.len() < 2 && ident.ledger.bank_wei == 0 {
            return;
        }
        let mut stopped: Vec<(u64, PeerKey)> = ident
            .live
            .iter()
            .filter_map(|k| {
                let p = self.peers.get(k)?;
                let c = p.gate.controller()?;
                (c.is_stopped() && c.queued_len() > 0).then_some((p.stopped_at?, *k))
            })
            .collect();
        stopped.sort_unstable();
        for (_, key) in stopped {
            self.cover_from_pool(now, key, account, slot.id);
            self.drain_gate(now, key, None);
        }
    }

    /// Moves the unused credit of an idle connection (nothing queued, nothing being served, not
    /// stopped) back to its identity's ledger, by settling it as if it had reconnected: its gate
    /// is replaced by a fresh one on the same channel, with the identity's remaining trust.
    pub(super) fn resettle(
        &mut self,
        now: Instant,
        key: PeerKey,
        account: Address,
        channel_id: ChannelId,
    ) {
        let price = self.upload_price();
        let Some(up) = self.config.upload.clone() else {
            return;
        };
        let Some(peer) = self.peers.get(&key) else {
            return;
        };
        let Some(ctrl) = peer.gate.controller() else {
            return;
        };
        let idle = ctrl.queued_len() == 0
            && ctrl.in_flight_len() == 0
            && !ctrl.is_stopped()
            && !ctrl.is_permanently_stopped()
            && ctrl.channel_id() == Some(channel_id);
        let sent_wei = u128::from(ctrl.stats().bytes_sent).saturating_mul(price);
        if !idle || peer.fed_wei <= sent_wei {
            return; // busy, or nothing paid to take back
        }
        let credit = peer.fed_wei - sent_wei;
        let Some(mut fresh) = self.fresh_gate(now, &up, account, key) else {
            return;
        };
        let _ = fresh.handle_channel_ready(now, channel_id);
        if let Some(ident) = self.identities.get_mut(&account) {
            ident.ledger.add(credit, 0);
        }
        if let Some(peer) = self.peers.get_mut(&key) {
            peer.gate = Gate::Credit(Box::new(fresh));
            peer.fed_wei = 0;
            peer.prompted_at = None;
        }
        self.drain_gate(now, key, None);
    }

    /// A new gate for connection `key` of `account`, as a new connection would get it: no
    /// channel, the identity's remaining trust, the connection's BEP 6 and choke state.
    fn fresh_gate(
        &self,
        now: Instant,
        up: &UploadConfig,
        account: Address,
        key: PeerKey,
    ) -> Option<ChokeController> {
        let peer = self.peers.get(&key)?;
        let (fast, choked) = (peer.info.fast_negotiated, peer.local_choked);
        let mut config = self.identity_choke_config(up, account, key);
        config.fast_negotiated = fast;
        let mut fresh = ChokeController::new(config).ok()?;
        if choked {
            fresh.handle_choke(now);
        }
        Some(fresh)
    }

    /// The payee channel the gate of `key` was bound to closed while the connection lives (the
    /// payer spent its deposit, or finished): the gate is re-armed as on a new connection, so
    /// that its next request asks for a new channel (web3torrent creates one on the first
    /// request without a channel). The old gate is settled into the identity's ledger like a
    /// closed connection, counting the serves it handed out as spent (it is kept, stopped,
    /// until they are reported); its waiting requests are replayed into the new gate. A peer
    /// that was stopped hears START: its requests are taken again (and stopped anew, naming the
    /// new channel, until that channel is funded).
    pub(super) fn repend_gate(&mut self, now: Instant, key: PeerKey, account: Address) {
        let price = self.upload_price();
        let Some(up) = self.config.upload.clone() else {
            return;
        };
        let Some(peer) = self.peers.get_mut(&key) else {
            return;
        };
        let Gate::Credit(mut old) = std::mem::replace(&mut peer.gate, Gate::Pending) else {
            return;
        };
        let queued: Vec<BlockRequest> = old.queued().copied().collect();
        let stopped = old.is_stopped();
        let spent_wei = u128::from(old.stats().bytes_committed).saturating_mul(price);
        let fed_wei = std::mem::take(&mut peer.fed_wei);
        // No request of the old gate is answered by it any more (they are replayed below), and
        // none of its actions reaches the peer.
        old.handle_permanent_stop(now);
        while old.poll_action().is_some() {}
        peer.retired = (old.in_flight_len() > 0).then_some(old);
        peer.prompted_at = None;
        peer.stopped_at = None;
        peer.early_stop = None;
        peer.suppress_start = false;
        if let Some(ident) = self.identities.get_mut(&account) {
            ident.ledger.add(
                fed_wei.saturating_sub(spent_wei),
                spent_wei.saturating_sub(fed_wei),
            );
        }
        let fresh = self.fresh_gate(now, &up, account, key);
        let Some(peer) = self.peers.get_mut(&key) else {
            return;
        };
        peer.gate = fresh.map_or(Gate::Refuse, |c| Gate::Credit(Box::new(c)));
        if stopped {
            self.send_notice(key, PseMessage::Start);
        }
        for request in queued {
            let _ = self.gate_request(now, key, request, true);
        }
        self.drain_gate(now, key, None);
        self.update_choke(now, key);
    }

    pub(super) fn on_created(&mut self, now: Instant, account: Address, channel_id: ChannelId) {
        let deposit = self.config.upload.as_ref().map_or(0, |u| u.deposit);
        let deadline = now.checked_add(self.config.liveness.response_timeout);
        let Some(ident) = self.identities.get_mut(&account) else {
            self.channel_out
                .push_back(ChannelCommand::Abandon { channel_id });
            return;
        };
        if ident.payee.is_some_and(|s| s.id != channel_id) {
            self.channel_out
                .push_back(ChannelCommand::Abandon { channel_id });
            return;
        }
        if ident.payee.is_some() {
            return;
        }
        ident.creating = None;
        ident.payee = Some(Slot::new(channel_id, Phase::Proposed, deadline, deposit));
        self.channels.insert(channel_id, (account, Role::Payee));
        self.send_early_stops(account, channel_id);
    }

    /// STOP naming the channel just proposed to `account`, to each of its connections whose
    /// requests wait for it (once each). web3torrent's seeder does this right after creating
    /// the channel on the first request, and its leecher learns the channel from this STOP and
    /// pays once the channel runs. Nothing is served before funding all the same (#1178).
    pub(super) fn send_early_stops(&mut self, account: Address, channel_id: ChannelId) {
        let Some(ident) = self.identities.get(&account) else {
            return;
        };
        let waiting: Vec<PeerKey> = ident
            .live
            .iter()
            .copied()
            .filter(|k| {
                self.peers.get(k).is_some_and(|p| {
                    p.early_stop.is_none()
                        && p.gate.controller().is_some_and(|c| {
                            c.is_channel_pending()
                                && c.queued_len() > 0
                                && !c.is_permanently_stopped()
                        })
                })
            })
            .collect();
        for key in waiting {
            if let Some(peer) = self.peers.get_mut(&key) {
                peer.early_stop = Some(channel_id);
            }
            self.send_notice(
                key,
                PseMessage::Stop {
                    channel_id: Some(channel_id),
                },
            );
        }
    }

    /// Picks the connection a payment credits: the oldest outstanding STOP, else the latest
    /// prompt, else the newest connection.
    pub(super) fn payee_target(&self, account: Address, channel_id: ChannelId) -> Option<PeerKey> {
        let ident = self.identities.get(&account)?;
        let candidates = ident.live.iter().filter_map(|k| {
            let p = self.peers.get(k)?;
            let c = p.gate.controller()?;
            (c.channel_id() == Some(channel_id) && !c.is_permanently_stopped()).then_some((*k, p))
        });
        let mut best: Option<(PeerKey, (u8, u64))> = None;
        for (k, p) in candidates {
            let rank = match (p.stopped_at, p.prompted_at) {
                (Some(at), _) => (2, u64::MAX - at),
                (None, Some(at)) => (1, at),
                (None, None) => (0, p.seq),
            };
            if best.is_none_or(|(_, r)| rank > r) {
                best = Some((k, rank));
            }
        }
        best.map(|(k, _)| k)
    }

    /// Credits `wei` received on `channel_id` to a connection of `account`, or banks it.
    pub(super) fn route_payment(
        &mut self,
        now: Instant,
        account: Address,
        channel_id: ChannelId,
        wei: u128,
    ) {
        if wei == 0 {
            return;
        }
        let target = self.payee_target(account, channel_id);
        if let Some(key) = target
            && let Some(peer) = self.peers.get_mut(&key)
            && let Some(ctrl) = peer.gate.controller_mut()
            && ctrl.handle_payment(now, channel_id, wei).is_ok()
        {
            peer.fed_wei = peer.fed_wei.saturating_add(wei);
            self.drain_gate(now, key, None);
            self.update_choke(now, key);
            self.rebalance(now, account);
            return;
        }
        if let Some(ident) = self.identities.get_mut(&account) {
            ident.ledger.add(wei, 0);
        }
    }

    pub(super) fn on_payment_received(
        &mut self,
        now: Instant,
        channel_id: ChannelId,
        delta: u128,
        total: u128,
    ) -> Result<(), UsageError> {
        let Some(&(account, Role::Payee)) = self.channels.get(&channel_id) else {
            return Err(UsageError::UnknownChannel(channel_id));
        };
        let deadline = self.answer_deadline(now);
        let Some(ident) = self.identities.get_mut(&account) else {
            return Err(UsageError::UnknownChannel(channel_id));
        };
        let Some(slot) = ident.payee.as_mut().filter(|s| s.id == channel_id) else {
            return Err(UsageError::UnknownChannel(channel_id));
        };
        // Vouchers are cumulative: the total is authoritative (a replayed event credits nothing).
        let credited = total.saturating_sub(slot.paid);
        slot.paid = slot.paid.max(total);
        ident.ledger.wei_received = ident.ledger.wei_received.saturating_add(credited);
        ident.touch(deadline);
        self.events.push_back(CoordinatorEvent::PaymentReceived {
            account,
            channel_id,
            delta,
            total,
        });
        if slot_open(ident.payee) {
            self.route_payment(now, account, channel_id, credited);
        } else if let Some(ident) = self.identities.get_mut(&account) {
            ident.ledger.add(credited, 0);
        }
        Ok(())
    }

    pub(super) fn setup_failed(&mut self, now: Instant, account: Address) {
        let Some(ident) = self.identities.get_mut(&account) else {
            return;
        };
        ident.creating = None;
        ident.proposed_on = None;
        if let Some(slot) = ident.payee.filter(|s| s.phase == Phase::Proposed) {
            ident.payee = None;
            self.channels.remove(&slot.id);
            self.channel_out.push_back(ChannelCommand::Abandon {
                channel_id: slot.id,
            });
            if ident.payer.is_none() {
                // Whatever still waits for this peer concerns the abandoned proposal.
                ident.outbox.clear();
            }
        }
        let live: Vec<PeerKey> = ident.live.iter().copied().collect();
        self.events
            .push_back(CoordinatorEvent::ChannelSetupFailed { account });
        for key in live {
            if let Some(ctrl) = self
                .peers
                .get_mut(&key)
                .and_then(|p| p.gate.controller_mut())
            {
                ctrl.handle_permanent_stop(now);
            }
            self.drain_gate(now, key, None);
        }
    }
}

pub(super) fn misbehaviour_error(e: &PeerMisbehaviour, request: BlockRequest) -> PeerError {
    match e {
        PeerMisbehaviour::QueueOverflow { .. } => PeerError::QueueOverflow(request),
        _ => PeerError::InvalidRequest(request),
    }
}
