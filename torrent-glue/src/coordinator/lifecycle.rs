//! A channel's life after its setup: restored from the store, ready, closed, challenged, a
//! failed command, and forgetting identities with nothing left to remember.

use std::time::Instant;

use paid_wire::choke::ChannelId;
use payment_channel::Address;

use super::download::allow_bytes;
use super::state::{Identity, Phase, Slot};
use super::{Coordinator, CoordinatorEvent, state};
use crate::channel::{ChannelCommand, FailedCommand, RestoredState, Role};
use crate::engine::{PeerKey, Terms};
use crate::error::{PeerError, UsageError};

impl Coordinator {
    /// Forgets an identity with nothing left to remember: no connection, no channel (or one
    /// being created), no queued message, and no money or bytes ever accounted to it. Identities cost an attacker
    /// nothing to mint, so without this a stream of short-lived peers would grow the map
    /// without bound; an identity that was served on trust or paid anything is kept (its trust
    /// must not be granted again). It is kept for the response timeout after its last
    /// connection closed, so a quick reconnect finds its queued messages.
    pub(super) fn reclaim_identity(&mut self, now: Instant, account: Address) {
        let Some(i) = self.identities.get(&account) else {
            return;
        };
        let grace = self.config.liveness.response_timeout;
        let departed = i
            .departed_at
            .is_some_and(|since| since.checked_add(grace).is_some_and(|at| at <= now));
        let empty = departed
            && i.live.is_empty()
            && i.creating.is_none()
            && i.payee.is_none()
            && i.payer.is_none()
            && i.stall_deadline.is_none()
            && i.outbox.is_empty()
            && i.ledger == state::Ledger::default()
            && i.paid == state::PayerLedger::default();
        if empty {
            self.identities.remove(&account);
        }
    }

    /// Adopts a channel found in the store after a restart (see [`ChannelEvent::Restored`]).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_restored(
        &mut self,
        now: Instant,
        channel_id: ChannelId,
        account: Address,
        role: Role,
        deposit: u128,
        paid: u128,
        state: RestoredState,
    ) {
        if self.channels.contains_key(&channel_id) {
            return; // already known (reported twice)
        }
        let deadline = self.answer_deadline(now);
        let ident = self
            .identities
            .entry(account)
            .or_insert_with(|| Identity::new(Terms::default()));
        let slot = ident.slot_mut(role);
        if slot.is_some() {
            // A channel opened since the restart took the place: the usual rules settle the
            // restored one (its counterparty will challenge it, or our client will on timeout).
            return;
        }
        let (phase, deadline) = match state {
            RestoredState::Funding => (Phase::Proposed, Some(deadline)),
            RestoredState::Open => (Phase::Open, None),
            RestoredState::Closing => (Phase::Closing, Some(deadline)),
        };
        // The price is not in the store: the first connection of the payee within our price
        // cap fixes the terms, and the window counts from now (bytes received before the
        // restart are not known either).
        *slot = Some(Slot {
            paid,
            ..Slot::new(channel_id, phase, deadline, deposit)
        });
        if role == Role::Payer {
            // Locked in the deposit: counts against the budget (what is paid of it is spent
            // when the channel closes).
            self.budget.reserve(deposit);
        } else {
            // A channel creation still in flight is abandoned when it completes (the restored
            // channel holds the place); `paid` is the baseline of the next voucher, so nothing
            // paid before the restart is credited again.
            ident.creating = None;
        }
        if ident.live.is_empty() {
            // The counterparty is not connected (yet): the idle rule applies from now.
            ident.idle_since = Some(now);
            ident.departed_at = Some(now);
        }
        self.channels.insert(channel_id, (account, role));
        self.events.push_back(CoordinatorEvent::ChannelRestored {
            account,
            channel_id,
            role,
            paid,
            state,
        });
    }

    pub(super) fn on_ready(
        &mut self,
        now: Instant,
        channel_id: ChannelId,
        account: Address,
        role: Role,
        deposit: u128,
    ) {
        let ident = self
            .identities
            .entry(account)
            .or_insert_with(|| Identity::new(Terms::default()));
        let slot = ident.slot_mut(role);
        match slot {
            Some(s) if s.id == channel_id => {
                if s.phase != Phase::Proposed {
                    return;
                }
                s.phase = Phase::Open;
                s.deadline = None;
            }
            Some(_) => return, // another channel is in use for this direction
            None => {
                // Restored (or a proposal we joined and forgot): adopt it.
                *slot = Some(Slot::new(channel_id, Phase::Open, None, deposit));
                if role == Role::Payer {
                    self.budget.reserve(deposit);
                }
            }
        }
        // Our proposal was funded (also for a channel adopted in its place): it no longer
        // counts against its connection's limit (payee), and that connection's next nonces
        // are looked for past it (payer).
        let origin = match role {
            Role::Payee => ident.proposed_on.take().map(|k| (k, None)),
            Role::Payer => ident.joining_nonce.take().map(|(k, i)| (k, Some(i))),
        };
        if role == Role::Payee {
            ident.creating = None;
        }
        let live: Vec<PeerKey> = ident.live.iter().copied().collect();
        if let Some((key, index)) = origin
            && let Some(peer) = self.peers.get_mut(&key)
        {
            match index {
                None => peer.channels_funded = peer.channels_funded.saturating_add(1),
                Some(i) => {
                    peer.nonces_funded_past = peer.nonces_funded_past.max(i.saturating_add(1))
                }
            }
        }
        self.channels.insert(channel_id, (account, role));
        self.events.push_back(CoordinatorEvent::ChannelOpened {
            account,
            channel_id,
            role,
        });
        match role {
            Role::Payee => {
                for &key in &live {
                    if let Some(ctrl) = self
                        .peers
                        .get_mut(&key)
                        .and_then(|p| p.gate.controller_mut())
                    {
                        let _ = ctrl.handle_channel_ready(now, channel_id);
                    }
                    self.drain_gate(now, key, None);
                }
                if let Some(ident) = self.identities.get_mut(&account)
                    && ident.ledger.bank_wei > 0
                {
                    let bank = std::mem::take(&mut ident.ledger.bank_wei);
                    self.route_payment(now, account, channel_id, bank);
                }
            }
            Role::Payer => {
                for &key in &live {
                    let Some(peer) = self.peers.get_mut(&key) else {
                        continue;
                    };
                    if let Some(planner) = peer.planner.as_mut() {
                        planner.handle_channel_ready(channel_id);
                    }
                    if let Some(channel) = peer.stop_pending.take() {
                        // A misbehaviour is reported as an event; nobody to return it to here.
                        let _ = self.on_remote_stop(now, key, account, channel);
                    }
                }
            }
        }
    }

    pub(super) fn close(&mut self, now: Instant, account: Address, role: Role) -> bool {
        let deadline = self.answer_deadline(now);
        let Some(ident) = self.identities.get_mut(&account) else {
            return false;
        };
        let slot = ident.slot_mut(role).as_mut();
        let Some(slot) = slot.filter(|s| s.phase == Phase::Open) else {
            return false;
        };
        slot.phase = Phase::Closing;
        slot.deadline = Some(deadline);
        let id = slot.id;
        self.end_channel(account, role, id, true)
    }

    pub(super) fn challenge(&mut self, now: Instant, account: Address, role: Role) -> bool {
        let Some(ident) = self.identities.get_mut(&account) else {
            return false;
        };
        let slot = ident.slot_mut(role).as_mut();
        let Some(slot) = slot else {
            return false;
        };
        match (slot.phase, role) {
            (Phase::Challenging, _) => return false,
            // Nothing was deposited for us in an unfunded proposal: abandon it instead.
            (Phase::Proposed, Role::Payee) => {
                self.setup_failed(now, account);
                return false;
            }
            _ => {}
        }
        slot.phase = Phase::Challenging;
        slot.deadline = None;
        let id = slot.id;
        self.end_channel(account, role, id, false)
    }

    /// Asks the client to end `channel_id` (with `account`, as `role`): a cooperative close if
    /// `close`, else a challenge; announces it. Returns `true`.
    fn end_channel(
        &mut self,
        account: Address,
        role: Role,
        channel_id: ChannelId,
        close: bool,
    ) -> bool {
        let (command, event) = if close {
            (
                ChannelCommand::Close { channel_id },
                CoordinatorEvent::Closing {
                    account,
                    channel_id,
                    role,
                },
            )
        } else {
            (
                ChannelCommand::Challenge { channel_id },
                CoordinatorEvent::Challenging {
                    account,
                    channel_id,
                    role,
                },
            )
        };
        self.channel_out.push_back(command);
        self.events.push_back(event);
        true
    }

    pub(super) fn on_closed(
        &mut self,
        now: Instant,
        channel_id: ChannelId,
        payee_amount: u128,
    ) -> Result<(), UsageError> {
        let (account, role) = self
            .channels
            .remove(&channel_id)
            .ok_or(UsageError::UnknownChannel(channel_id))?;
        let Some(ident) = self.identities.get_mut(&account) else {
            return Ok(());
        };
        let slot = ident.slot_mut(role);
        let Some(closed) = slot.take_if(|s| s.id == channel_id) else {
            return Ok(());
        };
        let mut live: Vec<PeerKey> = ident.live.iter().copied().collect();
        live.sort_unstable();
        if role == Role::Payer {
            ident.stall_deadline = None;
            self.budget.spend(closed.deposit, closed.paid);
            for key in &live {
                if let Some(planner) = self.peers.get_mut(key).and_then(|p| p.planner.as_mut()) {
                    // Nothing more is paid on the closed channel: payments wait for the next.
                    allow_bytes(planner, 0);
                }
            }
        }
        self.events.push_back(CoordinatorEvent::ChannelClosed {
            account,
            channel_id,
            role,
            payee_amount,
        });
        if role == Role::Payee {
            let mut waiting = false;
            for key in live {
                let Some(ctrl) = self
                    .peers
                    .get_mut(&key)
                    .and_then(|p| p.gate.controller_mut())
                else {
                    continue;
                };
                if ctrl.channel_id() == Some(channel_id) {
                    // Its channel is gone, the connection is not: it is served again once a
                    // new channel is funded (asked for by its next request).
                    self.repend_gate(now, key, account);
                } else if ctrl.is_channel_pending() {
                    waiting = true;
                }
            }
            if waiting {
                self.need_payee_channel(now, account, None);
            }
        } else {
            // A proposal that arrived while this channel was closing is considered now.
            self.retry_proposals(now, account);
        }
        Ok(())
    }

    pub(super) fn on_command_failed(
        &mut self,
        now: Instant,
        command: FailedCommand,
        reason: String,
    ) {
        let _ = reason;
        match command {
            FailedCommand::Create { peer } => self.setup_failed(now, peer),
            FailedCommand::Join { channel_id } => {
                if let Some((account, _)) = self.channels.remove(&channel_id)
                    && let Some(ident) = self.identities.get_mut(&account)
                    && let Some(slot) = ident.payer.take_if(|s| s.id == channel_id)
                {
                    self.budget.release(slot.deposit);
                }
            }
            FailedCommand::Pay { channel_id, amount } => {
                // A payment that did not go out cannot be retried safely (the STOP it answered
                // is already counted as paid): the channel is unusable, close it.
                if let Some(&(account, Role::Payer)) = self.channels.get(&channel_id)
                    && let Some(ident) = self.identities.get_mut(&account)
                {
                    // Paid at the channel's fixed price (the advertised one if it has none).
                    let slot = ident.payer.as_mut().filter(|s| s.id == channel_id);
                    let price = slot
                        .as_ref()
                        .and_then(|s| s.terms)
                        .map_or(ident.terms.price_per_byte, |t| t.price_per_byte);
                    let bytes = u64::try_from(amount / price.max(1)).unwrap_or(u64::MAX);
                    if let Some(slot) = slot {
                        slot.paid = slot.paid.saturating_sub(amount);
                        slot.bytes_paid = slot.bytes_paid.saturating_sub(bytes);
                    }
                    ident.paid.wei_paid = ident.paid.wei_paid.saturating_sub(amount);
                    ident.paid.bytes_paid = ident.paid.bytes_paid.saturating_sub(bytes);
                    self.close(now, account, Role::Payer);
                }
            }
            FailedCommand::Close { channel_id } => {
                if let Some(&(account, role)) = self.channels.get(&channel_id) {
                    self.challenge(now, account, role);
                }
            }
            FailedCommand::PushMessage {
                from,
                bad_signature: true,
            } => {
                // Only authenticated connections of `from` carry its messages.
                let mut live: Vec<PeerKey> = self
                    .identities
                    .get(&from)
                    .map(|i| i.live.iter().copied().collect())
                    .unwrap_or_default();
                live.sort_unstable();
                for key in live {
                    let _ = self.strike(key, PeerError::BadChannelSignature);
                }
            }
            _ => {}
        }
    }
}
