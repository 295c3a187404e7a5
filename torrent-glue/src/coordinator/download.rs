//! The downloader: joining proposals, answering STOP and prompt within the agreed terms and the
//! window, sizing and making payments, and closing payer channels when done or out of funds.

use std::time::Instant;

use paid_wire::choke::{ChannelId, PayReason, PayerAction, PaymentPlanner, StopOutcome};
use payment_channel::Address;

use super::state::slot_open;
use super::state::{PendingProposal, Phase, Slot, Torrent};
use super::{Coordinator, CoordinatorEvent, DeclineReason};
use crate::channel::{ChannelCommand, Role};
use crate::engine::{PeerKey, Terms};
use crate::error::PeerError;

impl Coordinator {
    pub(super) fn evaluate_proposal(
        &mut self,
        now: Instant,
        channel_id: ChannelId,
        payee: Address,
        deposit: u128,
        price: Option<u128>,
        nonce: Option<u64>,
    ) {
        let decline = |this: &mut Self, reason| {
            this.channel_out
                .push_back(ChannelCommand::Abandon { channel_id });
            this.events.push_back(CoordinatorEvent::ProposalDeclined {
                channel_id,
                payee,
                reason,
            });
        };
        // Kept to evaluate again (`retry_proposals`) until `expires` (abandoned then).
        let hold = |this: &mut Self, expires: Option<Instant>| {
            if !this.proposals.iter().any(|p| p.channel_id == channel_id) {
                this.proposals.push(PendingProposal {
                    channel_id,
                    payee,
                    deposit,
                    price,
                    nonce,
                    expires: expires.unwrap_or(now),
                });
            }
        };
        let Some(down) = self.config.download else {
            return decline(self, DeclineReason::NotBuying);
        };
        let deadline = now.checked_add(self.config.liveness.response_timeout);
        let Some(ident) = self.identities.get_mut(&payee) else {
            // Its handshake may still be on its way: hold the proposal briefly.
            let expires = now.checked_add(self.config.liveness.handshake_timeout);
            hold(self, expires);
            return;
        };
        if let Some(slot) = ident.payer {
            if slot.id == channel_id {
                return;
            }
            if matches!(slot.phase, Phase::Closing | Phase::Challenging) {
                // The payee saw our channel close before we did (it proposes the next one at
                // once): hold the proposal until the close reaches us, within the answer time.
                hold(self, deadline);
                return;
            }
            return decline(self, DeclineReason::AlreadyHaveChannel);
        }
        if ident.asked_beyond_window {
            return decline(self, DeclineReason::Misbehaved);
        }
        if !self.nonce_is_ours(payee, nonce) {
            return decline(self, DeclineReason::NotFresh);
        }
        let Some(ident) = self.identities.get_mut(&payee) else {
            return;
        };
        if ident.terms.price_per_byte > down.max_price_per_byte {
            return decline(self, DeclineReason::PriceTooHigh);
        }
        if price.is_some_and(|p| p != ident.terms.price_per_byte) {
            // We size payments with the advertised terms: they must be the channel's terms.
            return decline(self, DeclineReason::PriceMismatch);
        }
        if deposit > down.max_deposit {
            return decline(self, DeclineReason::DepositTooLarge);
        }
        if !self.budget.try_reserve(deposit) {
            return decline(self, DeclineReason::OverBudget);
        }
        // The terms are fixed now: no connection is paid under other terms on this channel.
        let mut slot = Slot::new(channel_id, Phase::Proposed, deadline, deposit);
        slot.terms = Some(ident.terms);
        ident.payer = Some(slot);
        self.channels.insert(channel_id, (payee, Role::Payer));
        let origin = self.nonce_origin(payee, nonce);
        if let Some(ident) = self.identities.get_mut(&payee) {
            ident.joining_nonce = origin;
        }
        self.channel_out.push_back(ChannelCommand::Join {
            channel_id,
            peer: payee,
            deposit,
        });
        self.events.push_back(CoordinatorEvent::Joining {
            channel_id,
            account: payee,
            deposit,
        });
    }

    /// Whether a proposal's nonce is one we helped create: derived from our challenge and the
    /// payee's on one of its live connections that proved its identity
    /// ([`crate::identity::channel_nonce`]). A payee believed on its word
    /// ([`LegacyPolicy::TrustClaimedAccount`]) has no such connection and is not checked.
    pub(super) fn nonce_is_ours(&self, payee: Address, nonce: Option<u64>) -> bool {
        let Some(ident) = self.identities.get(&payee) else {
            return false;
        };
        let proven = ident
            .live
            .iter()
            .filter_map(|k| self.peers.get(k))
            .any(|p| p.challenge.is_some());
        !proven || self.nonce_origin(payee, nonce).is_some()
    }

    /// The proven connection of `payee` and the index whose nonce is `nonce`. The indices
    /// looked at end [`max_channels_per_connection`](crate::IdentityConfig::max_channels_per_connection)
    /// past the last channel we funded on that connection: the payee counts only unfunded
    /// proposals against that limit.
    pub(super) fn nonce_origin(
        &self,
        payee: Address,
        nonce: Option<u64>,
    ) -> Option<(PeerKey, u32)> {
        let ident = self.identities.get(&payee)?;
        let nonce = nonce?;
        let max = self.config.identity.max_channels_per_connection;
        ident.live.iter().find_map(|k| {
            let p = self.peers.get(k)?;
            let (Some(ours), Some(theirs)) = (p.challenge, p.their_challenge) else {
                return None;
            };
            (0..p.nonces_funded_past.saturating_add(max))
                .find(|i| crate::identity::channel_nonce(&ours, &theirs, *i) == nonce)
                .map(|i| (*k, i))
        })
    }

    pub(super) fn retry_proposals(&mut self, now: Instant, account: Address) {
        let (mine, rest) = std::mem::take(&mut self.proposals)
            .into_iter()
            .partition(|p| p.payee == account);
        self.proposals = rest;
        for p in mine {
            self.evaluate_proposal(now, p.channel_id, p.payee, p.deposit, p.price, p.nonce);
        }
    }

    /// A STOP from `key`: paid once per STOP (a STOP while stopped is only acked), sized by
    /// [`payment_size`](Self::payment_size), deferred for the grace period when our payments
    /// should cover it, held when the window has no room. Returns the misbehaviour to report.
    pub(super) fn on_remote_stop(
        &mut self,
        now: Instant,
        key: PeerKey,
        account: Address,
        channel: Option<ChannelId>,
    ) -> Option<PeerError> {
        let open = self
            .identities
            .get(&account)
            .and_then(|i| i.payer)
            .filter(|s| s.phase == Phase::Open && channel.is_none_or(|c| c == s.id));
        let peer = self.peers.get_mut(&key)?;
        peer.planner.as_ref()?; // we do not buy: ack only
        let Some(slot) = open else {
            // Not joined yet (web3torrent sends STOP right after proposing): pay once ready.
            peer.stop_pending = Some(channel);
            return None;
        };
        let (bytes, error) = self.stop_size(now, key, account, true, false);
        if let Some(planner) = self.peers.get_mut(&key).and_then(|p| p.planner.as_mut()) {
            allow_bytes(planner, bytes);
            let repeated = planner.handle_stop(slot.id) == StopOutcome::AlreadyStopped;
            if repeated && bytes > 0 {
                // Paid only if this exhaustion's STOP is still unpaid (deferred or held).
                planner.handle_bytes_received(0);
            }
        }
        self.drain_planner(now, key);
        error
    }

    /// Bytes a STOP of `key` gets now (0: nothing now). When our payments should cover it, it
    /// waits [`DownloadConfig::stop_grace`] after our last payment, then is sized ignoring that
    /// estimate (`force`). When the window has no room, it is held (`stop_held`) until bytes
    /// arrive. `ask`: the STOP just arrived or its grace period ended, so a refusal counts
    /// against the payee (not so when bytes arrive for a held STOP).
    pub(super) fn stop_size(
        &mut self,
        now: Instant,
        key: PeerKey,
        account: Address,
        ask: bool,
        force: bool,
    ) -> (u64, Option<PeerError>) {
        let terms = match self.agreed_terms(key, account) {
            Ok(terms) => terms,
            Err(error) => return (0, ask.then(|| self.refuse_terms(now, key, account, error))),
        };
        let mut size = self.payment_size(key, account, terms, force);
        if size == Payable::Covered && !force {
            // Our payments should cover it: one is probably still in flight. Give it the grace
            // period to arrive (START) before paying again.
            let grace = self
                .config
                .download
                .map(|d| d.stop_grace)
                .unwrap_or_default();
            let retry_at = self
                .identities
                .get(&account)
                .and_then(|i| i.last_paid_at)
                .and_then(|t| t.checked_add(grace))
                .filter(|at| *at > now);
            if let Some(at) = retry_at {
                if let Some(peer) = self.peers.get_mut(&key) {
                    peer.stop_retry_at = Some(at);
                }
                return (0, None);
            }
            size = self.payment_size(key, account, terms, true);
        }
        if let Some(peer) = self.peers.get_mut(&key) {
            peer.stop_held = size == Payable::Window;
        }
        match size {
            Payable::Bytes(bytes) => (bytes, None),
            Payable::Covered => (0, None),
            Payable::OutOfFunds => {
                self.out_of_funds(now, account);
                (0, None)
            }
            Payable::Window => {
                let error = if ask {
                    self.ask_beyond_window(now, key, account)
                } else {
                    None
                };
                (0, error)
            }
        }
    }

    /// A deferred STOP's grace period ended without START: pay it now.
    pub(super) fn retry_stop(&mut self, now: Instant, key: PeerKey) {
        let Some(peer) = self.peers.get_mut(&key) else {
            return;
        };
        peer.stop_retry_at = None;
        let Some(account) = peer.account() else {
            return;
        };
        if !peer
            .planner
            .as_ref()
            .is_some_and(PaymentPlanner::is_stopped)
        {
            return;
        }
        // A misbehaviour is reported as an event; nobody to return it to from a timer.
        let (bytes, _) = self.stop_size(now, key, account, true, true);
        self.pay_stop(now, key, bytes);
    }

    /// Bytes arrived from `account`: pay the STOPs that waited for room in the window.
    pub(super) fn retry_held_stops(&mut self, now: Instant, account: Address) {
        let held: Vec<PeerKey> = match self.identities.get(&account) {
            Some(ident) => ident
                .live
                .iter()
                .copied()
                .filter(|k| self.peers.get(k).is_some_and(|p| p.stop_held))
                .collect(),
            None => return,
        };
        for key in held {
            let (bytes, _) = self.stop_size(now, key, account, false, false);
            self.pay_stop(now, key, bytes);
        }
    }

    /// Pays `bytes` for the outstanding STOP of `key`, if it is still unpaid.
    pub(super) fn pay_stop(&mut self, now: Instant, key: PeerKey, bytes: u64) {
        if let Some(planner) = self.peers.get_mut(&key).and_then(|p| p.planner.as_mut()) {
            allow_bytes(planner, bytes);
            // Re-evaluates the deferred STOP payment under the new cap.
            planner.handle_bytes_received(0);
        }
        self.drain_planner(now, key);
    }

    /// A prompt: pay ahead, one granularity, then more while the credit we think the uploader
    /// holds for us is below its suggestion (within our pay-ahead bound and the window).
    /// Returns the misbehaviour to report.
    pub(super) fn on_prompt(
        &mut self,
        now: Instant,
        key: PeerKey,
        account: Address,
        suggested: u64,
    ) -> Option<PeerError> {
        let down = self.config.download.filter(|d| d.pay_ahead)?;
        let slot = self
            .identities
            .get(&account)
            .and_then(|i| i.payer)
            .filter(|s| s.phase == Phase::Open)?;
        let stopped = self
            .peers
            .get(&key)
            .and_then(|p| p.planner.as_ref())
            .is_none_or(PaymentPlanner::is_stopped);
        if stopped {
            return None; // the STOP payment covers it
        }
        let terms = match self.agreed_terms(key, account) {
            Ok(terms) => terms,
            Err(error) => return Some(self.refuse_terms(now, key, account, error)),
        };
        // One granularity, then more while the uploader's credit (as we see it) is below what it
        // suggests, within our own pay-ahead bound: several payments in flight at once.
        let target = suggested.min(down.max_pay_ahead_bytes);
        let mut first = true;
        loop {
            if !first && self.credit_at(account, terms) >= target {
                return None;
            }
            match self.payment_size(key, account, terms, false) {
                Payable::OutOfFunds => {
                    self.out_of_funds(now, account);
                    return None;
                }
                Payable::Covered => return None,
                Payable::Window if first => return self.ask_beyond_window(now, key, account),
                Payable::Window => return None,
                Payable::Bytes(bytes) => {
                    let planner = self.peers.get_mut(&key).and_then(|p| p.planner.as_mut())?;
                    allow_bytes(planner, bytes);
                    let queued = planner.handle_prompt(slot.id, bytes);
                    self.drain_planner(now, key);
                    if !queued {
                        return None;
                    }
                }
            }
            first = false;
        }
    }

    /// The uploader asked (STOP or prompt) and the window had no room. An honest uploader asks
    /// so at times (its blocks, or our payments, are still in flight) and delivers soon after;
    /// one that asks again although it delivered nothing for
    /// [`DownloadConfig::window_timeout`] since the first such ask misbehaves: we stop paying,
    /// close the channel (challenged if unanswered, as every close), and decline its later
    /// proposals.
    pub(super) fn ask_beyond_window(
        &mut self,
        now: Instant,
        key: PeerKey,
        account: Address,
    ) -> Option<PeerError> {
        let down = self.config.download?;
        let ident = self.identities.get_mut(&account)?;
        let slot = ident.payer.as_mut().filter(|s| s.phase == Phase::Open)?;
        let since = *slot.beyond_window_since.get_or_insert(now);
        if since
            .checked_add(down.window_timeout)
            .is_none_or(|at| now < at)
        {
            return None;
        }
        let window = down.window_bytes();
        let error = PeerError::AskedBeyondWindow {
            channel_id: slot.id,
            paid_bytes: slot.bytes_paid,
            received_bytes: slot.bytes_received,
            window_bytes: window,
        };
        ident.asked_beyond_window = true;
        let _ = self.misbehaved(key, error.clone());
        self.close(now, account, Role::Payer);
        Some(error)
    }

    /// `key` asked to be paid under terms other than its channel's (or above our price cap):
    /// nothing is paid, and the channel is closed (challenged if unanswered), so that the payee
    /// may propose a new one, checked against our limits like any proposal.
    pub(super) fn refuse_terms(
        &mut self,
        now: Instant,
        key: PeerKey,
        account: Address,
        error: PeerError,
    ) -> PeerError {
        let _ = self.misbehaved(key, error.clone());
        self.close(now, account, Role::Payer);
        error
    }

    /// The terms `key` may be paid under on our channel with `account`: the channel's, fixed
    /// when we joined it, and only if the connection advertises the same; a channel adopted
    /// without a proposal (restored) takes the connection's. Never above our price cap.
    pub(super) fn agreed_terms(
        &mut self,
        key: PeerKey,
        account: Address,
    ) -> Result<Terms, PeerError> {
        let max = self.config.download.map_or(0, |d| d.max_price_per_byte);
        let advertised = self.peers.get(&key).map(|p| p.terms).unwrap_or_default();
        let Some(slot) = self
            .identities
            .get_mut(&account)
            .and_then(|i| i.payer.as_mut())
        else {
            return Ok(advertised); // no channel: nothing is paid anyway
        };
        let channel_id = slot.id;
        let terms = match slot.terms {
            Some(agreed) if agreed != advertised => {
                return Err(PeerError::TermsChanged {
                    channel_id,
                    agreed,
                    advertised,
                });
            }
            Some(agreed) => agreed,
            None if advertised.price_per_byte > max => advertised,
            None => *slot.terms.insert(advertised),
        };
        if terms.price_per_byte > max {
            return Err(PeerError::PriceAboveCap {
                channel_id,
                price: terms.price_per_byte,
                max,
            });
        }
        Ok(terms)
    }

    /// The credit we think `account` (an uploader) holds for us: paid + its trust − received,
    /// in bytes.
    pub(super) fn credit_at(&self, account: Address, terms: Terms) -> u64 {
        self.identities.get(&account).map_or(0, |ident| {
            ident
                .paid
                .bytes_paid
                .saturating_add(terms.trust_bytes)
                .saturating_sub(ident.paid.bytes_received)
        })
    }

    /// Bytes the window still has room for, with `account` and on its payer channel: the
    /// smaller of `received + window − paid` over the identity and over the channel.
    pub(super) fn window_room(&self, account: Address) -> u64 {
        let Some(down) = self.config.download else {
            return 0;
        };
        let window = down.window_bytes();
        let Some(ident) = self.identities.get(&account) else {
            return 0;
        };
        let room = |paid: u64, received: u64| received.saturating_add(window).saturating_sub(paid);
        let identity = room(ident.paid.bytes_paid, ident.paid.bytes_received);
        let channel = ident
            .payer
            .map_or(0, |s| room(s.bytes_paid, s.bytes_received));
        identity.min(channel)
    }

    /// Bytes to buy now under `terms`: one granularity, no more than we still need beyond the
    /// credit the uploader should still hold for us (paid + its trust − received), no more than
    /// the deposit allows, and only if the window has room for all of it.
    ///
    /// `force` (a STOP whose grace period passed) ignores the credit estimate: the uploader says
    /// it has none left, so the estimate is off (bytes lost with a dropped connection, or less
    /// trust than advertised). The window still applies.
    pub(super) fn payment_size(
        &self,
        key: PeerKey,
        account: Address,
        terms: Terms,
        force: bool,
    ) -> Payable {
        let (Some(down), Some(ident), Some(peer)) = (
            self.config.download,
            self.identities.get(&account),
            self.peers.get(&key),
        ) else {
            return Payable::Covered;
        };
        let Some(slot) = ident.payer else {
            return Payable::Covered;
        };
        let price = terms.price_per_byte.max(1);
        let affordable =
            u64::try_from(slot.deposit.saturating_sub(slot.paid) / price).unwrap_or(u64::MAX);
        let needed = self
            .torrents
            .get(&peer.info.torrent)
            .map_or(u64::MAX, Torrent::needed);
        let want = if force {
            needed
        } else {
            needed.saturating_sub(self.credit_at(account, terms))
        };
        let want = want.min(down.granularity_bytes);
        if want == 0 {
            return Payable::Covered;
        }
        if affordable == 0 {
            return Payable::OutOfFunds;
        }
        let want = want.min(affordable);
        if want > self.window_room(account) {
            return Payable::Window;
        }
        Payable::Bytes(want)
    }

    pub(super) fn drain_planner(&mut self, now: Instant, key: PeerKey) {
        loop {
            let Some(peer) = self.peers.get_mut(&key) else {
                return;
            };
            let Some(account) = peer.account() else {
                return;
            };
            let Some(action) = peer.planner.as_mut().and_then(PaymentPlanner::poll_action) else {
                return;
            };
            match action {
                PayerAction::Pay {
                    channel_id,
                    bytes,
                    reason,
                    ..
                } => self.pay(now, key, account, channel_id, bytes, reason),
                PayerAction::CloseChannel { .. } => {
                    // Only when no other connection to this uploader is still being served.
                    let others_active = self.identities.get(&account).is_some_and(|i| {
                        i.live.iter().filter(|k| **k != key).any(|k| {
                            self.peers
                                .get(k)
                                .and_then(|p| p.planner.as_ref())
                                .is_some_and(|pl| !pl.is_permanently_stopped())
                        })
                    });
                    if !others_active {
                        self.close(now, account, Role::Payer);
                    }
                }
                PayerAction::OutOfFunds { .. } => self.out_of_funds(now, account),
                _ => {}
            }
        }
    }

    /// The one place money leaves: `bytes` at the channel's fixed price, on an open channel,
    /// within the deposit, our price cap and the window (the sizing above already keeps to
    /// them; a payment that would not is dropped).
    pub(super) fn pay(
        &mut self,
        now: Instant,
        key: PeerKey,
        account: Address,
        channel_id: ChannelId,
        bytes: u64,
        reason: PayReason,
    ) {
        let Some(down) = self.config.download else {
            return;
        };
        let room = self.window_room(account);
        let stall = self
            .config
            .liveness
            .stall_timeout
            .and_then(|t| now.checked_add(t));
        let Some(ident) = self.identities.get_mut(&account) else {
            return;
        };
        let Some(slot) = ident
            .payer
            .as_mut()
            .filter(|s| s.id == channel_id && s.phase == Phase::Open)
        else {
            return;
        };
        let Some(terms) = slot
            .terms
            .filter(|t| t.price_per_byte <= down.max_price_per_byte)
        else {
            return;
        };
        let amount = u128::from(bytes).checked_mul(terms.price_per_byte.max(1));
        let Some(amount) = amount.filter(|a| *a <= slot.deposit.saturating_sub(slot.paid)) else {
            return;
        };
        if bytes == 0 || bytes > room {
            return;
        }
        slot.paid = slot.paid.saturating_add(amount);
        slot.bytes_paid = slot.bytes_paid.saturating_add(bytes);
        ident.paid.wei_paid = ident.paid.wei_paid.saturating_add(amount);
        ident.paid.bytes_paid = ident.paid.bytes_paid.saturating_add(bytes);
        if ident.stall_deadline.is_none() {
            ident.stall_deadline = stall;
        }
        ident.last_paid_at = Some(now);
        self.channel_out
            .push_back(ChannelCommand::Pay { channel_id, amount });
        self.events.push_back(CoordinatorEvent::PaymentSent {
            peer: key,
            channel_id,
            amount,
            bytes,
            reason,
        });
    }

    pub(super) fn out_of_funds(&mut self, now: Instant, account: Address) {
        if let Some(slot) = self
            .identities
            .get(&account)
            .and_then(|i| i.payer)
            .filter(|s| s.phase == Phase::Open)
        {
            self.events.push_back(CoordinatorEvent::OutOfFunds {
                account,
                channel_id: slot.id,
            });
            self.close(now, account, Role::Payer);
        }
    }

    pub(super) fn close_finished_payer_channels(&mut self, now: Instant) {
        let mut accounts: Vec<Address> = self
            .identities
            .iter()
            .filter(|(_, i)| slot_open(i.payer))
            .map(|(a, _)| *a)
            .collect();
        accounts.sort_unstable();
        for account in accounts {
            let busy = self.identities.get(&account).is_some_and(|i| {
                i.live.iter().any(|k| {
                    self.peers.get(k).is_some_and(|p| {
                        self.torrents
                            .get(&p.info.torrent)
                            .is_none_or(|t| !t.complete)
                    })
                })
            });
            if !busy {
                self.close(now, account, Role::Payer);
            }
        }
    }
}

/// How much a STOP or prompt may be paid now (see `Coordinator::payment_size`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Payable {
    /// Buy this many bytes.
    Bytes(u64),
    /// Nothing more is needed: what we paid should cover it.
    Covered,
    /// More is needed, but the window has no room for it until bytes arrive.
    Window,
    /// More is needed, but the deposit is spent.
    OutOfFunds,
}

/// Lets `planner` pay at most `bytes` more than it has paid so far: the coordinator alone sizes
/// payments (window, terms, deposit), the planner only carries them out.
pub(super) fn allow_bytes(planner: &mut PaymentPlanner, bytes: u64) {
    let paid = planner.stats().bytes_paid;
    planner.set_bytes_wanted(Some(paid.saturating_add(bytes)));
}
