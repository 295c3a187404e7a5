//! The payee-side per-peer state machine.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use crate::message::BlockRequest;

use super::config::{BlockedPolicy, ChokeConfig};
use super::error::{ConfigError, PeerMisbehaviour};
use super::{
    ChannelId, DisconnectReason, GateAction, PaymentOutcome, RefuseReason, RequestOutcome,
};
use crate::error::UsageError;

/// Counters of one controller, returned by [`ChokeController::stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ChokeStats {
    /// Bytes the engine reported as actually sent ([`ChokeController::handle_bytes_sent`]).
    pub bytes_sent: u64,
    /// Bytes committed: sent plus reserved by outstanding [`GateAction::Serve`]s.
    pub bytes_committed: u64,
    /// Bytes credited by payments (`floor(wei_received / price)`, saturating).
    pub bytes_paid: u64,
    /// Total wei received (saturating).
    pub wei_received: u128,
    /// Payments that credited at least one byte.
    pub payments: u64,
    /// Payments of zero wei, or too small to credit a byte (their wei are carried).
    pub ineffective_payments: u64,
    /// STOP notices emitted.
    pub stops_sent: u64,
    /// START notices emitted.
    pub starts_sent: u64,
    /// Pay-ahead prompts emitted.
    pub prompts_sent: u64,
    /// Requests served ([`GateAction::Serve`] emitted).
    pub requests_served: u64,
    /// Requests that entered the blocked-request queue.
    pub requests_queued: u64,
    /// Requests rejected ([`GateAction::Reject`] emitted).
    pub requests_rejected: u64,
    /// Requests dropped silently.
    pub requests_dropped: u64,
    /// Duplicate requests ignored.
    pub duplicate_requests: u64,
    /// Queued requests removed by a cancel.
    pub cancels: u64,
    /// Requests refused because the queue was full.
    pub queue_overflows: u64,
    /// Oversized or empty requests.
    pub invalid_requests: u64,
}

/// Where the peer's payment channel is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChannelSlot {
    None,
    Requested,
    Ready(ChannelId),
}

/// Payee-side credit gate for one peer. See the [module docs](super) for the calling contract.
#[derive(Debug, Clone)]
pub struct ChokeController {
    config: ChokeConfig,
    channel: ChannelSlot,
    /// Bytes credited per qualifying payment count; see [`super::TrustPolicy`].
    qualifying_payments: u64,
    /// `Serve`s awaiting `handle_bytes_sent`, with multiplicity.
    in_flight: HashMap<BlockRequest, u32>,
    queue: VecDeque<BlockRequest>,
    /// Demand went unmet since the last credit increase (the peer needs to pay).
    starved: bool,
    /// A STOP was emitted and no START since.
    stop_outstanding: bool,
    /// A pay-ahead prompt may be emitted (re-armed by every crediting payment).
    prompt_armed: bool,
    last_payment_bytes: u64,
    engine_choked: bool,
    permanently_stopped: bool,
    overdue_at: Option<Instant>,
    strikes: u32,
    disconnect_emitted: bool,
    actions: VecDeque<GateAction>,
    stats: ChokeStats,
}

impl ChokeController {
    /// A controller for a new peer: no channel, no credit beyond the trust policy.
    pub fn new(config: ChokeConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self {
            config,
            channel: ChannelSlot::None,
            qualifying_payments: 0,
            in_flight: HashMap::new(),
            queue: VecDeque::new(),
            starved: false,
            stop_outstanding: false,
            prompt_armed: true,
            last_payment_bytes: 0,
            engine_choked: false,
            permanently_stopped: false,
            overdue_at: None,
            strikes: 0,
            disconnect_emitted: false,
            actions: VecDeque::new(),
            stats: ChokeStats::default(),
        })
    }

    // ---------------------------------------------------------------- getters

    /// The configuration.
    pub fn config(&self) -> &ChokeConfig {
        &self.config
    }

    /// Counters.
    pub fn stats(&self) -> ChokeStats {
        self.stats
    }

    /// The attached channel, if any.
    pub fn channel_id(&self) -> Option<ChannelId> {
        match self.channel {
            ChannelSlot::Ready(id) => Some(id),
            _ => None,
        }
    }

    /// Whether [`GateAction::NeedChannel`] was emitted and no channel is attached yet.
    pub fn is_channel_pending(&self) -> bool {
        self.channel == ChannelSlot::Requested
    }

    /// Current trust allowance in bytes.
    pub fn trust_allowance(&self) -> u64 {
        self.config.trust.allowance(self.qualifying_payments)
    }

    /// Bytes that can still be committed: `paid + allowance − committed` (saturating).
    pub fn credit(&self) -> u64 {
        let limit = u128::from(self.stats.bytes_paid) + u128::from(self.trust_allowance());
        let left = limit.saturating_sub(u128::from(self.stats.bytes_committed));
        u64::try_from(left).unwrap_or(u64::MAX)
    }

    /// Number of requests waiting in the blocked-request queue.
    pub fn queued_len(&self) -> usize {
        self.queue.len()
    }

    /// The waiting requests, oldest first.
    pub fn queued(&self) -> impl ExactSizeIterator<Item = &BlockRequest> {
        self.queue.iter()
    }

    /// Number of [`GateAction::Serve`]s not yet confirmed by [`handle_bytes_sent`](Self::handle_bytes_sent).
    pub fn in_flight_len(&self) -> usize {
        self.in_flight.values().map(|&n| n as usize).sum()
    }

    /// Whether a STOP is outstanding (emitted, not yet followed by a START).
    pub fn is_stopped(&self) -> bool {
        self.stop_outstanding
    }

    /// Whether serving was permanently stopped.
    pub fn is_permanently_stopped(&self) -> bool {
        self.permanently_stopped
    }

    /// Whether the engine currently chokes the peer.
    pub fn is_choked(&self) -> bool {
        self.engine_choked
    }

    /// Whether BEP 6 is considered negotiated.
    pub fn fast_negotiated(&self) -> bool {
        self.config.fast_negotiated
    }

    /// Misbehaviour strikes so far.
    pub fn strikes(&self) -> u32 {
        self.strikes
    }

    /// When [`handle_timeout`](Self::handle_timeout) must next be called, if ever.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.overdue_at
    }

    // ---------------------------------------------------------------- outputs

    /// The next thing the engine must do, oldest first. Drain after every input.
    pub fn poll_action(&mut self) -> Option<GateAction> {
        self.actions.pop_front()
    }

    // ---------------------------------------------------------------- inputs

    /// Records whether BEP 6 is negotiated with this peer (both handshakes set `reserved[7] & 0x04`).
    pub fn set_fast_negotiated(&mut self, fast: bool) {
        self.config.fast_negotiated = fast;
    }

    /// A `request` message from the peer.
    ///
    /// Returns what was done with it; the engine-visible reaction is in the action queue.
    /// `Err` reports peer misbehaviour (oversized/empty request, queue overflow); its reaction
    /// (reject under BEP 6, else drop; `Disconnect` at the strike limit) is queued too.
    pub fn handle_request(
        &mut self,
        now: Instant,
        request: BlockRequest,
    ) -> Result<RequestOutcome, PeerMisbehaviour> {
        if request.length == 0 || request.length > self.config.max_block_len {
            self.stats.invalid_requests = self.stats.invalid_requests.saturating_add(1);
            self.refuse(request, RefuseReason::Invalid);
            self.strike(DisconnectReason::InvalidRequests);
            return Err(if request.length == 0 {
                PeerMisbehaviour::EmptyRequest { request }
            } else {
                PeerMisbehaviour::OversizedRequest {
                    request,
                    max: self.config.max_block_len,
                }
            });
        }
        if self.permanently_stopped {
            return Ok(self.refuse(request, RefuseReason::PermanentlyStopped));
        }
        if self.engine_choked {
            // BEP 6: "A request from a choked peer SHOULD be rejected"; BEP 3: discarded.
            return Ok(self.refuse(request, RefuseReason::Choked));
        }
        if self.queue.contains(&request) {
            self.stats.duplicate_requests = self.stats.duplicate_requests.saturating_add(1);
            return Ok(RequestOutcome::Duplicate);
        }
        if self.channel == ChannelSlot::None {
            // At most once per controller: later requests find `Requested` (#2220).
            self.channel = ChannelSlot::Requested;
            self.actions.push_back(GateAction::NeedChannel);
        }
        // FIFO: nothing overtakes a request that is already waiting.
        if self.queue.is_empty() && self.try_serve(request) {
            return Ok(RequestOutcome::Served);
        }
        self.starved = true;
        let outcome = match self.config.blocked {
            BlockedPolicy::RefuseImmediately => Ok(self.refuse(request, RefuseReason::Unpaid)),
            BlockedPolicy::QueueUntilPaid if self.queue.len() >= self.config.max_queue_len => {
                self.stats.queue_overflows = self.stats.queue_overflows.saturating_add(1);
                self.refuse(request, RefuseReason::QueueFull);
                self.strike(DisconnectReason::QueueOverflow);
                Err(PeerMisbehaviour::QueueOverflow {
                    request,
                    bound: self.config.max_queue_len,
                })
            }
            BlockedPolicy::QueueUntilPaid => {
                self.queue.push_back(request);
                self.stats.requests_queued = self.stats.requests_queued.saturating_add(1);
                Ok(RequestOutcome::Queued)
            }
        };
        self.maybe_stop(now);
        outcome
    }

    /// A `cancel` message from the peer. A queued request is removed (and rejected under BEP 6:
    /// "even when a request is cancelled, the peer receiving the cancel should respond with either
    /// the corresponding reject or the corresponding piece"). Returns whether it was queued.
    ///
    /// A request already handed out as [`GateAction::Serve`] is the engine's: it may still send it,
    /// or abort and report `handle_bytes_sent(req, 0)` (answering the peer itself).
    pub fn handle_cancel(&mut self, _now: Instant, request: BlockRequest) -> bool {
        let Some(pos) = self.queue.iter().position(|r| *r == request) else {
            return false;
        };
        self.queue.remove(pos);
        self.stats.cancels = self.stats.cancels.saturating_add(1);
        self.refuse(request, RefuseReason::Cancelled);
        true
    }

    /// The payment channel for this peer is ready (funded). Idempotent for the same id.
    ///
    /// Queued requests are replayed (the trust allowance may now be usable), and a STOP is emitted
    /// if the peer has unmet demand.
    pub fn handle_channel_ready(
        &mut self,
        now: Instant,
        channel_id: ChannelId,
    ) -> Result<(), UsageError> {
        match self.channel {
            ChannelSlot::Ready(attached) if attached == channel_id => return Ok(()),
            ChannelSlot::Ready(attached) => {
                return Err(UsageError::WrongChannel {
                    attached,
                    got: channel_id,
                });
            }
            ChannelSlot::None | ChannelSlot::Requested => {}
        }
        self.channel = ChannelSlot::Ready(channel_id);
        if !self.permanently_stopped {
            self.replay(now);
            self.maybe_stop(now);
            self.maybe_prompt();
        }
        Ok(())
    }

    /// A verified payment of `amount` wei (the *increase* of the cumulative voucher) on `channel_id`.
    ///
    /// Credits `floor` bytes (remainder carried). If a STOP is outstanding, emits START first and
    /// then replays the queue in order through the same credit check; if the replay exhausts the
    /// credit again, a new STOP follows. A payment that credits no byte (zero, or below the price
    /// once the carry is added) changes nothing visible: no START, no replay.
    pub fn handle_payment(
        &mut self,
        now: Instant,
        channel_id: ChannelId,
        amount: u128,
    ) -> Result<PaymentOutcome, UsageError> {
        let attached = match self.channel {
            ChannelSlot::Ready(id) => id,
            ChannelSlot::None | ChannelSlot::Requested => return Err(UsageError::NoChannel),
        };
        if attached != channel_id {
            return Err(UsageError::WrongChannel {
                attached,
                got: channel_id,
            });
        }
        self.stats.wei_received = self.stats.wei_received.saturating_add(amount);
        let total_bytes = self.stats.wei_received / self.config.price_per_byte;
        let total_bytes = u64::try_from(total_bytes).unwrap_or(u64::MAX);
        let credited = total_bytes.saturating_sub(self.stats.bytes_paid);
        if credited == 0 {
            self.stats.ineffective_payments = self.stats.ineffective_payments.saturating_add(1);
            return Ok(PaymentOutcome {
                credited_bytes: 0,
                credit_after: self.credit(),
            });
        }
        self.stats.bytes_paid = total_bytes;
        self.stats.payments = self.stats.payments.saturating_add(1);
        self.last_payment_bytes = credited;
        if credited >= self.config.trust.min_qualifying_payment_bytes {
            self.qualifying_payments = self.qualifying_payments.saturating_add(1);
        }
        self.starved = false;
        self.prompt_armed = true;
        self.overdue_at = None;
        if !self.permanently_stopped {
            if self.stop_outstanding {
                // #1876: always START right after a payment, then replay.
                self.stop_outstanding = false;
                self.stats.starts_sent = self.stats.starts_sent.saturating_add(1);
                self.actions.push_back(GateAction::SendStart { channel_id });
            }
            self.replay(now);
            self.maybe_stop(now);
            self.maybe_prompt();
        }
        Ok(PaymentOutcome {
            credited_bytes: credited,
            credit_after: self.credit(),
        })
    }

    /// The engine finished (or abandoned) an [`GateAction::Serve`]: `sent` bytes actually went out.
    ///
    /// Call exactly once per `Serve`. Unsent bytes (`length − sent`) are returned to the credit
    /// and used for waiting requests at once.
    pub fn handle_bytes_sent(
        &mut self,
        now: Instant,
        request: BlockRequest,
        sent: u32,
    ) -> Result<(), UsageError> {
        if sent > request.length {
            return Err(UsageError::SentMoreThanRequested { request, sent });
        }
        let Some(count) = self.in_flight.get_mut(&request) else {
            return Err(UsageError::NotBeingServed { request });
        };
        *count -= 1; // count ≥ 1 for every present key
        if *count == 0 {
            self.in_flight.remove(&request);
        }
        self.stats.bytes_sent = self.stats.bytes_sent.saturating_add(u64::from(sent));
        let refund = u64::from(request.length - sent);
        if refund > 0 {
            self.stats.bytes_committed = self.stats.bytes_committed.saturating_sub(refund);
            if !self.permanently_stopped && !self.engine_choked {
                self.replay(now);
            }
        }
        Ok(())
    }

    /// The engine choked the peer (BitTorrent CHOKE). Queued requests are cleared: rejected under
    /// BEP 6 ("it MUST reject all requests from the peer to whom the choke was sent"), else
    /// dropped (BEP 3: a choke discards pending requests). Credit and STOP state are untouched.
    pub fn handle_choke(&mut self, _now: Instant) {
        self.engine_choked = true;
        self.clear_queue(RefuseReason::Choked);
    }

    /// The engine unchoked the peer. Payment gating is unaffected.
    pub fn handle_unchoke(&mut self, _now: Instant) {
        self.engine_choked = false;
    }

    /// Stop serving this peer for good: emits [`GateAction::SendPermanentStop`], clears the queue
    /// (rejects under BEP 6) and refuses every later request. Payments are still counted.
    pub fn handle_permanent_stop(&mut self, _now: Instant) {
        if self.permanently_stopped {
            return;
        }
        self.permanently_stopped = true;
        self.overdue_at = None;
        self.actions.push_back(GateAction::SendPermanentStop {
            channel_id: self.channel_id(),
        });
        self.clear_queue(RefuseReason::PermanentlyStopped);
    }

    /// Time passed. If an outstanding STOP has been unpaid for [`ChokeConfig::payment_timeout`],
    /// clears the queue (rejects under BEP 6) and emits [`GateAction::PaymentOverdue`] once.
    pub fn handle_timeout(&mut self, now: Instant) {
        let Some(due) = self.overdue_at else { return };
        if now < due {
            return;
        }
        self.overdue_at = None;
        if let ChannelSlot::Ready(channel_id) = self.channel {
            self.actions
                .push_back(GateAction::PaymentOverdue { channel_id });
        }
        self.clear_queue(RefuseReason::PaymentOverdue);
    }

    // ---------------------------------------------------------------- internals

    /// Bytes that may be committed now: all credit once the channel is ready, else the trust
    /// allowance only if the policy allows serving before the channel.
    fn spendable(&self) -> u64 {
        match self.channel {
            ChannelSlot::Ready(_) => self.credit(),
            _ if self.config.serve_trust_before_channel => self.credit(),
            _ => 0,
        }
    }

    fn try_serve(&mut self, request: BlockRequest) -> bool {
        let len = u64::from(request.length);
        if self.spendable() < len {
            return false;
        }
        self.stats.bytes_committed = self.stats.bytes_committed.saturating_add(len);
        *self.in_flight.entry(request).or_insert(0) += 1;
        self.stats.requests_served = self.stats.requests_served.saturating_add(1);
        self.actions.push_back(GateAction::Serve(request));
        self.maybe_prompt();
        true
    }

    /// Serves waiting requests in order while the credit covers the head of the queue.
    fn replay(&mut self, now: Instant) {
        while let Some(&head) = self.queue.front() {
            if !self.try_serve(head) {
                self.starved = true;
                self.maybe_stop(now);
                return;
            }
            self.queue.pop_front();
        }
    }

    fn maybe_stop(&mut self, now: Instant) {
        if !self.starved || self.stop_outstanding || self.permanently_stopped {
            return;
        }
        let ChannelSlot::Ready(channel_id) = self.channel else {
            return; // emitted by `handle_channel_ready`, since STOP carries the channel id
        };
        self.stop_outstanding = true;
        self.stats.stops_sent = self.stats.stops_sent.saturating_add(1);
        self.actions.push_back(GateAction::SendStop { channel_id });
        self.overdue_at = self.config.payment_timeout.and_then(|t| now.checked_add(t));
    }

    fn maybe_prompt(&mut self) {
        let Some(policy) = self.config.prompt else {
            return;
        };
        if !self.prompt_armed || self.stop_outstanding || self.permanently_stopped {
            return;
        }
        let ChannelSlot::Ready(channel_id) = self.channel else {
            return;
        };
        let watermark = policy.watermark.bytes(self.last_payment_bytes);
        if self.credit() >= watermark {
            return;
        }
        self.prompt_armed = false;
        let suggested_bytes = policy
            .suggested_bytes
            .unwrap_or(if self.last_payment_bytes > 0 {
                self.last_payment_bytes
            } else {
                watermark
            });
        let suggested_amount =
            u128::from(suggested_bytes).saturating_mul(self.config.price_per_byte);
        self.stats.prompts_sent = self.stats.prompts_sent.saturating_add(1);
        self.actions.push_back(GateAction::PromptPayment {
            channel_id,
            suggested_bytes,
            suggested_amount,
        });
    }

    fn refuse(&mut self, request: BlockRequest, reason: RefuseReason) -> RequestOutcome {
        if self.config.fast_negotiated {
            self.stats.requests_rejected = self.stats.requests_rejected.saturating_add(1);
            self.actions.push_back(GateAction::Reject(request));
            RequestOutcome::Rejected(reason)
        } else {
            self.stats.requests_dropped = self.stats.requests_dropped.saturating_add(1);
            RequestOutcome::Dropped(reason)
        }
    }

    fn clear_queue(&mut self, reason: RefuseReason) {
        while let Some(request) = self.queue.pop_front() {
            self.refuse(request, reason);
        }
    }

    fn strike(&mut self, reason: DisconnectReason) {
        self.strikes = self.strikes.saturating_add(1);
        if let Some(limit) = self.config.disconnect_after_strikes
            && self.strikes >= limit
            && !self.disconnect_emitted
        {
            self.disconnect_emitted = true;
            self.actions.push_back(GateAction::Disconnect(reason));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(index: u32, length: u32) -> BlockRequest {
        BlockRequest {
            index,
            begin: 0,
            length,
        }
    }

    #[test]
    fn spendable_respects_the_before_channel_policy() {
        let trust = super::super::TrustPolicy::fixed(100);
        let mut c = ChokeController::new(ChokeConfig {
            trust,
            ..ChokeConfig::default()
        })
        .unwrap();
        assert_eq!(c.spendable(), 100);
        c.config.serve_trust_before_channel = false;
        assert_eq!(c.spendable(), 0);
        c.channel = ChannelSlot::Ready(ChannelId([0; 32]));
        assert_eq!(c.spendable(), 100);
    }

    #[test]
    fn in_flight_counts_duplicates_separately() {
        let mut c = ChokeController::new(ChokeConfig::default()).unwrap();
        let now = Instant::now();
        c.handle_channel_ready(now, ChannelId([1; 32])).unwrap();
        c.handle_payment(now, ChannelId([1; 32]), 100).unwrap();
        // The same block requested again after it was served (e.g. hash failure) is a new request.
        assert_eq!(
            c.handle_request(now, req(0, 10)),
            Ok(RequestOutcome::Served)
        );
        assert_eq!(
            c.handle_request(now, req(0, 10)),
            Ok(RequestOutcome::Served)
        );
        assert_eq!(c.in_flight_len(), 2);
        c.handle_bytes_sent(now, req(0, 10), 10).unwrap();
        assert_eq!(c.in_flight_len(), 1);
        c.handle_bytes_sent(now, req(0, 10), 10).unwrap();
        assert_eq!(c.in_flight_len(), 0);
        assert!(c.in_flight.is_empty());
    }
}
