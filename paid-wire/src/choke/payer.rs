//! The payer-side (downloader) reaction to STOP / START / prompt notices.

use std::collections::VecDeque;

use derive_setters::Setters;

use super::ChannelId;
use super::error::ConfigError;

/// Configuration of a [`PaymentPlanner`]; build it from [`PayerConfig::new`] and the `with_*`
/// setters for the optional limits (`PayerConfig::new(1, 1024).with_budget_wei(Some(10_000))`).
/// Non-exhaustive: a field may be added in a minor release.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Setters)]
#[setters(prefix = "with_")]
#[non_exhaustive]
pub struct PayerConfig {
    /// Price in wei per byte (must match the payee's; a mismatch only mis-sizes payments).
    pub price_per_byte: u128,
    /// Bytes bought per payment. Should be at least the largest block requested, or a payment
    /// cannot unblock a full block on its own (it still progresses, one START/STOP per payment).
    pub granularity_bytes: u64,
    /// Answer [`GateAction::PromptPayment`](super::GateAction::PromptPayment) by paying ahead. Default `true`.
    pub pay_ahead: bool,
    /// Total wei this peer may be paid; `None` = unbounded. A partial last payment is made when
    /// less than one granularity is left, then [`PayerAction::OutOfFunds`].
    pub budget_wei: Option<u128>,
    /// Refuse to pay while this many paid bytes are still undelivered (protects against a payee
    /// that collects payments without serving). The payment is deferred until
    /// [`PaymentPlanner::handle_bytes_received`] brings the gap below the limit. Must exceed the
    /// payer's request pipeline plus one granularity, or an honest payee is slowed down.
    /// Default `None`.
    pub max_unreceived_bytes: Option<u64>,
}

impl PayerConfig {
    /// Pay `granularity_bytes` per payment at `price_per_byte`, pay-ahead on, no limits.
    pub fn new(price_per_byte: u128, granularity_bytes: u64) -> Self {
        Self {
            price_per_byte,
            granularity_bytes,
            pay_ahead: true,
            budget_wei: None,
            max_unreceived_bytes: None,
        }
    }

    /// Checks the configuration.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.price_per_byte == 0 {
            return Err(ConfigError::ZeroPrice);
        }
        if self.granularity_bytes == 0 {
            return Err(ConfigError::ZeroGranularity);
        }
        Ok(())
    }
}

/// Why a payment is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PayReason {
    /// The payee sent STOP: we are blocked.
    Stop,
    /// The payee prompted us to pay ahead.
    PayAhead,
}

/// What the payer's glue must do, drained from [`PaymentPlanner::poll_action`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PayerAction {
    /// Send a payment of `amount` wei (the voucher increase) on `channel_id`.
    Pay {
        /// Channel to pay on.
        channel_id: ChannelId,
        /// Wei to add to the cumulative voucher.
        amount: u128,
        /// Bytes this buys (`amount / price`).
        bytes: u64,
        /// Why.
        reason: PayReason,
    },
    /// The payee stopped serving for good: close the channel cooperatively.
    CloseChannel {
        /// Channel to close.
        channel_id: ChannelId,
    },
    /// The budget is exhausted while payment is needed: close the channel or raise the budget
    /// (see [`PaymentPlanner::raise_budget`]). Emitted once per exhaustion.
    OutOfFunds {
        /// The channel that needs funds.
        channel_id: ChannelId,
    },
}

/// What [`PaymentPlanner::handle_stop`] did. In every case the glue acks the STOP notice
/// (paid-streaming rule: every accepted non-ack command gets one `ack`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StopOutcome {
    /// A payment for this STOP was queued.
    Paid,
    /// Already stopped (and paid or deferred for this exhaustion): ack only, no second payment.
    AlreadyStopped,
    /// Payment is due but held back (budget, undelivered bytes or nothing more wanted); it is
    /// made as soon as the condition clears.
    Deferred,
}

/// Counters of a [`PaymentPlanner`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct PayerStats {
    /// Wei paid in total.
    pub wei_paid: u128,
    /// Bytes bought in total.
    pub bytes_paid: u64,
    /// Bytes reported received.
    pub bytes_received: u64,
    /// Payments made because of a STOP.
    pub stop_payments: u64,
    /// Payments made ahead because of a prompt.
    pub pay_ahead_payments: u64,
    /// STOP notices received.
    pub stops: u64,
    /// STOP notices received while already stopped (acked, not paid).
    pub repeated_stops: u64,
    /// START notices received.
    pub starts: u64,
}

/// Payer-side tracker: decides when to pay the payee of one peer connection.
///
/// Rules (web3torrent receive handler plus #1876 fix, and pay-ahead):
/// * STOP when not stopped → stopped; pay `granularity` bytes (exactly one payment per STOP).
/// * STOP when already stopped → ack only; never a second payment for the same exhaustion.
/// * START → not stopped (ready for the next STOP).
/// * Prompt when not stopped → pay ahead; ignored while stopped (the STOP payment covers it).
/// * permanent-stop → [`PayerAction::CloseChannel`]; nothing is paid any more.
///
/// Liveness relies on the payee's guarantee that every payment crediting at least one byte
/// while stopped is answered by START (as [`ChokeController`](super::ChokeController) does), so
/// a payment is never waiting for a START that will not come. The only cost of the race "STOP
/// sent before a pay-ahead arrived" is that both are paid: at most one granularity of credit paid
/// early, never lost (the payee counts it).
#[derive(Debug, Clone)]
pub struct PaymentPlanner {
    config: PayerConfig,
    channel: Option<ChannelId>,
    stopped: bool,
    /// A payment was made (or is pending) for the current STOP.
    stop_paid: bool,
    permanently_stopped: bool,
    out_of_funds_emitted: bool,
    bytes_wanted: Option<u64>,
    actions: VecDeque<PayerAction>,
    stats: PayerStats,
}

impl PaymentPlanner {
    /// A planner with no known channel, not stopped.
    pub fn new(config: PayerConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self {
            config,
            channel: None,
            stopped: false,
            stop_paid: false,
            permanently_stopped: false,
            out_of_funds_emitted: false,
            bytes_wanted: None,
            actions: VecDeque::new(),
            stats: PayerStats::default(),
        })
    }

    /// Counters.
    pub fn stats(&self) -> PayerStats {
        self.stats
    }

    /// Whether the payee has us stopped (STOP without START since).
    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// Whether the payee stopped serving for good.
    pub fn is_permanently_stopped(&self) -> bool {
        self.permanently_stopped
    }

    /// The channel we pay on, once known.
    pub fn channel_id(&self) -> Option<ChannelId> {
        self.channel
    }

    /// Paid bytes not yet received (saturating; 0 when the payee served on trust).
    pub fn unreceived_paid_bytes(&self) -> u64 {
        self.stats
            .bytes_paid
            .saturating_sub(self.stats.bytes_received)
    }

    /// The next thing to do.
    pub fn poll_action(&mut self) -> Option<PayerAction> {
        self.actions.pop_front()
    }

    /// We joined `channel_id` (the payee's proposal for this peer). STOP notices also carry it.
    pub fn handle_channel_ready(&mut self, channel_id: ChannelId) {
        self.channel = Some(channel_id);
    }

    /// Caps the total bytes ever paid for on this connection (e.g. what is left of the torrent
    /// from this peer), so the tail is not overpaid (web3torrent #1307). `None` = no cap.
    pub fn set_bytes_wanted(&mut self, bytes: Option<u64>) {
        self.bytes_wanted = bytes;
    }

    /// Adds `wei` to the budget (if one is set) and retries a deferred STOP payment.
    pub fn raise_budget(&mut self, wei: u128) {
        if let Some(b) = self.config.budget_wei.as_mut() {
            *b = b.saturating_add(wei);
            self.out_of_funds_emitted = false;
        }
        self.retry_stop_payment();
    }

    /// A `stop` notice carrying `channel_id`.
    pub fn handle_stop(&mut self, channel_id: ChannelId) -> StopOutcome {
        self.stats.stops = self.stats.stops.saturating_add(1);
        if self.stopped || self.permanently_stopped {
            self.stats.repeated_stops = self.stats.repeated_stops.saturating_add(1);
            return StopOutcome::AlreadyStopped;
        }
        self.channel = Some(channel_id);
        self.stopped = true;
        self.stop_paid = false;
        if self.try_pay(PayReason::Stop) {
            StopOutcome::Paid
        } else {
            StopOutcome::Deferred
        }
    }

    /// A `start` notice.
    pub fn handle_start(&mut self) {
        self.stats.starts = self.stats.starts.saturating_add(1);
        if !self.permanently_stopped {
            self.stopped = false;
            self.stop_paid = false;
        }
    }

    /// A pay-ahead prompt for `channel_id` (see [`GateAction::PromptPayment`](super::GateAction::PromptPayment)).
    /// The suggestion is informational: the planner pays its own granularity. Returns whether a
    /// payment was queued.
    pub fn handle_prompt(&mut self, channel_id: ChannelId, _suggested_bytes: u64) -> bool {
        if !self.config.pay_ahead || self.stopped || self.permanently_stopped {
            return false;
        }
        self.channel = Some(channel_id);
        self.try_pay(PayReason::PayAhead)
    }

    /// A `permanent-stop` notice (`channel_id` as carried by it, if any).
    pub fn handle_permanent_stop(&mut self, channel_id: Option<ChannelId>) {
        if self.permanently_stopped {
            return;
        }
        self.permanently_stopped = true;
        self.stopped = true;
        if let Some(channel_id) = channel_id.or(self.channel) {
            self.actions
                .push_back(PayerAction::CloseChannel { channel_id });
        }
    }

    /// `bytes` of piece payload arrived from the payee. May release a deferred STOP payment.
    pub fn handle_bytes_received(&mut self, bytes: u64) {
        self.stats.bytes_received = self.stats.bytes_received.saturating_add(bytes);
        self.retry_stop_payment();
    }

    fn retry_stop_payment(&mut self) {
        if self.stopped && !self.stop_paid && !self.permanently_stopped {
            self.try_pay(PayReason::Stop);
        }
    }

    fn try_pay(&mut self, reason: PayReason) -> bool {
        let Some(channel_id) = self.channel else {
            return false;
        };
        if let Some(limit) = self.config.max_unreceived_bytes
            && self.unreceived_paid_bytes() >= limit
        {
            return false;
        }
        let price = self.config.price_per_byte;
        let mut bytes = self.config.granularity_bytes;
        if let Some(wanted) = self.bytes_wanted {
            bytes = bytes.min(wanted.saturating_sub(self.stats.bytes_paid));
        }
        // Never overflow `bytes × price`.
        bytes = u64::try_from(u128::from(bytes).min(u128::MAX / price)).unwrap_or(u64::MAX);
        if let Some(budget) = self.config.budget_wei {
            let affordable = budget.saturating_sub(self.stats.wei_paid) / price;
            bytes = u64::try_from(u128::from(bytes).min(affordable)).unwrap_or(u64::MAX);
            if bytes == 0 && self.bytes_wanted.is_none_or(|w| self.stats.bytes_paid < w) {
                if !self.out_of_funds_emitted {
                    self.out_of_funds_emitted = true;
                    self.actions
                        .push_back(PayerAction::OutOfFunds { channel_id });
                }
                return false;
            }
        }
        if bytes == 0 {
            return false;
        }
        let amount = u128::from(bytes) * price; // bounded above
        self.stats.wei_paid = self.stats.wei_paid.saturating_add(amount);
        self.stats.bytes_paid = self.stats.bytes_paid.saturating_add(bytes);
        match reason {
            PayReason::Stop => {
                self.stop_paid = true;
                self.stats.stop_payments = self.stats.stop_payments.saturating_add(1);
            }
            PayReason::PayAhead => {
                self.stats.pay_ahead_payments = self.stats.pay_ahead_payments.saturating_add(1);
            }
        }
        self.actions.push_back(PayerAction::Pay {
            channel_id,
            amount,
            bytes,
            reason,
        });
        true
    }
}
