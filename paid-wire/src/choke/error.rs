//! Errors of the choke controller, split by who is at fault.

use crate::message::BlockRequest;

/// The peer broke the rules. The controller has already queued its reaction (a reject when
/// BEP 6 is negotiated, and [`GateAction::Disconnect`](super::GateAction::Disconnect) once the strike
/// limit is reached); the caller may log it or apply its own ban policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PeerMisbehaviour {
    /// A request longer than the configured maximum block length.
    #[error("request {request:?} is longer than the maximum block length {max}")]
    OversizedRequest {
        /// The offending request.
        request: BlockRequest,
        /// The configured maximum.
        max: u32,
    },
    /// A request for zero bytes.
    #[error("request {request:?} has zero length")]
    EmptyRequest {
        /// The offending request.
        request: BlockRequest,
    },
    /// A blocked request arrived while the queue was full.
    #[error("request {request:?} overflowed the blocked-request queue (bound {bound})")]
    QueueOverflow {
        /// The refused request.
        request: BlockRequest,
        /// The configured queue bound.
        bound: usize,
    },
}

/// The configuration is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// `price_per_byte` is zero (payments could not be converted to bytes).
    #[error("price per byte must be non-zero")]
    ZeroPrice,
    /// `max_block_len` is zero (nothing could ever be served).
    #[error("maximum block length must be non-zero")]
    ZeroMaxBlockLen,
    /// A percentage watermark above 100.
    #[error("watermark percentage {percent} is above 100")]
    WatermarkPercentOver100 {
        /// The configured percentage.
        percent: u8,
    },
    /// `disconnect_after_strikes = Some(0)` would disconnect before any misbehaviour.
    #[error("strike limit must be at least 1")]
    ZeroStrikeLimit,
    /// Payer: the payment granularity is zero (a zero payment can never unblock a STOP).
    #[error("payment granularity must be non-zero")]
    ZeroGranularity,
}
