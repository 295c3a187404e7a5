//! Configuration of the choke controller: price, limits and the trust, prompt and blocking policies.

use std::time::Duration;

use derive_setters::Setters;

use super::error::ConfigError;

/// BitTorrent's de-facto block size (16 KiB), the default [`ChokeConfig::max_block_len`].
pub const DEFAULT_MAX_BLOCK_LEN: u32 = 16 * 1024;

/// Default bound of the blocked-request queue ([`ChokeConfig::max_queue_len`]).
///
/// Large enough for the deepest pipelines of mainstream clients, small enough that a hostile
/// peer cannot make the controller hold more than a few kilobytes of request descriptors.
pub const DEFAULT_MAX_QUEUE_LEN: usize = 512;

/// What happens to a request that the peer's credit does not cover.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum BlockedPolicy {
    /// Keep the request in a bounded FIFO queue until a payment covers it, then serve it
    /// (web3torrent's behaviour). With BEP 6 negotiated, a queued request that is dropped from
    /// the queue for any reason (choke, cancel, permanent stop, payment overdue) is rejected, so
    /// it still gets exactly one answer.
    #[default]
    QueueUntilPaid,
    /// Answer at once: reject (BEP 6) or drop silently (no BEP 6). The peer re-requests after
    /// the START that follows its payment. No request ever waits in the controller.
    RefuseImmediately,
}

/// How much the payee serves beyond what has been paid: `served ≤ paid + allowance` always.
///
/// The allowance is `min(initial_bytes + increment_bytes × qualifying_payments, max_bytes)`
/// (with `max_bytes` never below `initial_bytes`). With `increment_bytes = 0` this is a fixed
/// gift/credit line; with an increment it is the Filecoin retrieval-market growing payment
/// interval: trust ramps up as the payer proves it pays, and `max_bytes` caps the exposure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TrustPolicy {
    /// Bytes served before any payment (free credit; 0 = strict pay-before-serve).
    pub initial_bytes: u64,
    /// Bytes added to the allowance by each qualifying payment.
    pub increment_bytes: u64,
    /// Upper bound of the allowance.
    pub max_bytes: u64,
    /// A payment qualifies for growth only if it credits at least this many bytes. This stops a
    /// payer from inflating its allowance with a flood of dust payments.
    pub min_qualifying_payment_bytes: u64,
}

impl TrustPolicy {
    /// No trust: nothing is served before it is paid for.
    pub const NONE: Self = Self {
        initial_bytes: 0,
        increment_bytes: 0,
        max_bytes: 0,
        min_qualifying_payment_bytes: 0,
    };

    /// A fixed allowance of `bytes` that never grows.
    pub const fn fixed(bytes: u64) -> Self {
        Self {
            initial_bytes: bytes,
            increment_bytes: 0,
            max_bytes: bytes,
            min_qualifying_payment_bytes: 0,
        }
    }

    /// A Filecoin-style window: starts at `initial`, grows by `increment` per payment that credits
    /// at least `increment` bytes, capped at `max`.
    pub const fn growing(initial: u64, increment: u64, max: u64) -> Self {
        Self {
            initial_bytes: initial,
            increment_bytes: increment,
            max_bytes: max,
            min_qualifying_payment_bytes: increment,
        }
    }

    /// The allowance after `qualifying_payments` qualifying payments (saturating arithmetic).
    pub fn allowance(&self, qualifying_payments: u64) -> u64 {
        let cap = self.max_bytes.max(self.initial_bytes);
        self.increment_bytes
            .saturating_mul(qualifying_payments)
            .saturating_add(self.initial_bytes)
            .min(cap)
    }
}

/// The remaining-credit level under which the payer is prompted to pay ahead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Watermark {
    /// A fixed number of bytes.
    Bytes(u64),
    /// A percentage (0-100) of the bytes credited by the last payment. Zero before the first
    /// payment.
    PercentOfLastPayment(u8),
}

impl Watermark {
    /// The watermark in bytes, given the bytes credited by the last payment.
    pub fn bytes(&self, last_payment_bytes: u64) -> u64 {
        match *self {
            Self::Bytes(b) => b,
            Self::PercentOfLastPayment(p) => {
                let p = u128::from(p.min(100));
                // ≤ last_payment_bytes, so it fits in u64.
                u64::try_from(u128::from(last_payment_bytes) * p / 100).unwrap_or(u64::MAX)
            }
        }
    }
}

/// When and what to prompt the payer to pay ahead (see [`GateAction::PromptPayment`](super::GateAction::PromptPayment)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PromptPolicy {
    /// Prompt once per refill when the remaining credit drops below this.
    pub watermark: Watermark,
    /// Suggested top-up in bytes; `None` suggests the size of the last payment (or the
    /// watermark before any payment).
    pub suggested_bytes: Option<u64>,
}

impl Default for PromptPolicy {
    /// Prompt when half of the last payment is left, suggesting a payment of the same size.
    fn default() -> Self {
        Self {
            watermark: Watermark::PercentOfLastPayment(50),
            suggested_bytes: None,
        }
    }
}

/// Configuration of one [`ChokeController`](super::ChokeController).
///
/// Build it from [`ChokeConfig::default`] (or [`ChokeConfig::with_price`]) and the `with_*`
/// setters (`ChokeConfig::default().with_max_queue_len(64)`), or assign the public fields of a
/// `let mut` binding. Non-exhaustive: a field may be added in a minor release.
#[derive(Debug, Clone, PartialEq, Eq, Setters)]
#[setters(prefix = "with_")]
#[non_exhaustive]
pub struct ChokeConfig {
    /// Price in the smallest currency unit ("wei") per byte. Must be non-zero. Default 1
    /// (web3torrent's `WEI_PER_BYTE`).
    pub price_per_byte: u128,
    /// Largest request length served; longer (and zero-length) requests are peer misbehaviour.
    /// Default [`DEFAULT_MAX_BLOCK_LEN`].
    pub max_block_len: u32,
    /// Bound of the blocked-request queue. Default [`DEFAULT_MAX_QUEUE_LEN`]. May be 0.
    pub max_queue_len: usize,
    /// Whether BEP 6 (fast extension) is negotiated with this peer: refused requests are then
    /// rejected instead of silently dropped. Can be changed with
    /// [`ChokeController::set_fast_negotiated`](super::ChokeController::set_fast_negotiated).
    /// Default `false`.
    pub fast_negotiated: bool,
    /// What to do with requests the credit does not cover. Default [`BlockedPolicy::QueueUntilPaid`].
    pub blocked: BlockedPolicy,
    /// Trust extended beyond payments. Default [`TrustPolicy::NONE`].
    pub trust: TrustPolicy,
    /// Whether the trust allowance may be served before the payment channel is ready.
    /// Default `true`: the free allowance is served at once, everything beyond it waits for the
    /// channel and a payment (web3torrent #1178). With `false`, nothing at all is served until
    /// [`handle_channel_ready`](super::ChokeController::handle_channel_ready).
    pub serve_trust_before_channel: bool,
    /// Pay-ahead prompt; `None` disables it. Default [`PromptPolicy::default`].
    pub prompt: Option<PromptPolicy>,
    /// If a STOP stays unpaid this long, the queue is cleared and
    /// [`GateAction::PaymentOverdue`](super::GateAction::PaymentOverdue) is emitted. Default `None`.
    pub payment_timeout: Option<Duration>,
    /// Emit [`GateAction::Disconnect`](super::GateAction::Disconnect) after this many misbehaviour
    /// strikes (invalid requests, queue overflows). Default `None` (never).
    pub disconnect_after_strikes: Option<u32>,
}

impl Default for ChokeConfig {
    fn default() -> Self {
        Self {
            price_per_byte: 1,
            max_block_len: DEFAULT_MAX_BLOCK_LEN,
            max_queue_len: DEFAULT_MAX_QUEUE_LEN,
            fast_negotiated: false,
            blocked: BlockedPolicy::default(),
            trust: TrustPolicy::NONE,
            serve_trust_before_channel: true,
            prompt: Some(PromptPolicy::default()),
            payment_timeout: None,
            disconnect_after_strikes: None,
        }
    }
}

impl ChokeConfig {
    /// The default configuration at `price_per_byte` wei per byte.
    pub fn with_price(price_per_byte: u128) -> Self {
        Self {
            price_per_byte,
            ..Self::default()
        }
    }

    /// Checks the configuration; called by [`ChokeController::new`](super::ChokeController::new).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.price_per_byte == 0 {
            return Err(ConfigError::ZeroPrice);
        }
        if self.max_block_len == 0 {
            return Err(ConfigError::ZeroMaxBlockLen);
        }
        if let Some(PromptPolicy {
            watermark: Watermark::PercentOfLastPayment(p),
            ..
        }) = self.prompt
            && p > 100
        {
            return Err(ConfigError::WatermarkPercentOver100 { percent: p });
        }
        if self.disconnect_after_strikes == Some(0) {
            return Err(ConfigError::ZeroStrikeLimit);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowance_grows_saturates_and_caps() {
        let t = TrustPolicy::growing(10, 5, 22);
        assert_eq!(t.allowance(0), 10);
        assert_eq!(t.allowance(2), 20);
        assert_eq!(t.allowance(3), 22);
        assert_eq!(t.allowance(u64::MAX), 22);
        // A cap below the initial allowance never reduces it.
        assert_eq!(TrustPolicy::growing(10, 5, 0).allowance(7), 10);
        assert_eq!(TrustPolicy::NONE.allowance(u64::MAX), 0);
        let huge = TrustPolicy::growing(u64::MAX, u64::MAX, u64::MAX);
        assert_eq!(huge.allowance(u64::MAX), u64::MAX);
    }

    #[test]
    fn watermark_in_bytes() {
        assert_eq!(Watermark::Bytes(7).bytes(1000), 7);
        assert_eq!(Watermark::PercentOfLastPayment(50).bytes(1001), 500);
        assert_eq!(
            Watermark::PercentOfLastPayment(100).bytes(u64::MAX),
            u64::MAX
        );
        assert_eq!(Watermark::PercentOfLastPayment(200).bytes(10), 10);
        assert_eq!(Watermark::PercentOfLastPayment(50).bytes(0), 0);
    }

    #[test]
    fn default_config_is_valid_and_web3torrent_priced() {
        let c = ChokeConfig::default();
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(c.price_per_byte, 1);
        assert_eq!(c.max_block_len, 16 * 1024);
        assert!(c.serve_trust_before_channel);
        assert_eq!(c.trust, TrustPolicy::NONE);
    }
}
