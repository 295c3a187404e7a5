//! Errors of virtual channels and of a [`Party`](super::Party), split by who caused them, each
//! with the [`Reaction`](crate::error::Reaction) to take.
//!
//! Contract: a method that returns `Err` has **not changed** any state and has queued no output.

use alloy_primitives::{Address, B256, U256};

use crate::error::Reaction;
use crate::ledger::LedgerError;
use crate::sign::SignatureError;

/// Any error of a virtual channel or a party.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VirtualError {
    /// A peer sent something the protocol does not allow.
    #[error("peer misbehaved: {0}")]
    Peer(#[from] VirtualPeerError),
    /// The caller asked for something that is not possible.
    #[error("usage: {0}")]
    Usage(#[from] VirtualUsageError),
    /// A virtual channel that our policy (hub limits, apps) refuses.
    #[error("rejected: {0}")]
    Rejected(#[from] Rejection),
    /// An error of one of our ledgers.
    #[error("ledger: {0}")]
    Ledger(#[from] LedgerError),
    /// Our own signer failed.
    #[error("signer: {0}")]
    Signer(#[from] SignatureError),
}

impl VirtualError {
    /// What to do about this error.
    pub fn reaction(&self) -> Reaction {
        match self {
            Self::Peer(p) => p.reaction(),
            Self::Ledger(l) => l.reaction(),
            Self::Usage(_) | Self::Rejected(_) | Self::Signer(_) => Reaction::Ignore,
        }
    }

    /// Whether a peer is to blame.
    pub fn is_peer_fault(&self) -> bool {
        match self {
            Self::Peer(_) => true,
            Self::Ledger(l) => l.is_peer_fault(),
            _ => false,
        }
    }
}

/// A peer broke the virtual-channel protocol. Nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VirtualPeerError {
    /// A signature that is not a participant's on the expected state (or is ours, or the
    /// sender's address differs from the signer).
    #[error("bad signature on {0}")]
    BadSignature(&'static str),
    /// A channel proposal this crate refuses (participants, app `0x0` or unknown, amounts).
    #[error("invalid virtual channel: {0}")]
    InvalidProposal(&'static str),
    /// A message for a channel we do not know (reordered: the sender retransmits).
    #[error("unknown channel {0}")]
    UnknownChannel(B256),
    /// A message from someone who is not a participant, or not to us.
    #[error("message from {0} is not from a participant")]
    NotParticipant(Address),
    /// A message our role never receives (a voucher to the hub).
    #[error("{0} is never sent to this role")]
    WrongRole(&'static str),
    /// A message the channel's phase does not accept (early, late, reordered).
    #[error("{0} unexpected in this phase")]
    Unexpected(&'static str),
    /// A voucher before the postfund is signed by all and our ledger holds the countersigned
    /// guarantee (go-nitro #1721/#890: such vouchers are unenforceable).
    #[error("voucher before the channel is funded")]
    NotFunded,
    /// A voucher signed by someone else than the payer, or for another channel.
    #[error("invalid voucher")]
    InvalidVoucher,
    /// A voucher below the best one (a replay).
    #[error("voucher of {got} below the best {best}")]
    LowerVoucher {
        /// Best so far.
        best: U256,
        /// Received.
        got: U256,
    },
    /// A voucher above the channel's amount.
    #[error("voucher of {got} above the channel amount {amount}")]
    OverAmount {
        /// Channel amount `a0`.
        amount: U256,
        /// Voucher.
        got: U256,
    },
    /// A final state whose shape differs from the postfund's (turn, flags, asset, destinations,
    /// types, count) or whose amounts do not add up to `a0`.
    #[error("invalid final state: {0}")]
    InvalidFinal(&'static str),
    /// Payee: a final state paying less than the best voucher.
    #[error("final state pays {got}, below the best voucher {best}")]
    FinalBelowPaid {
        /// Best voucher received.
        best: U256,
        /// Paid by the final state.
        got: U256,
    },
    /// Payer: a final state paying more than the vouchers signed.
    #[error("final state pays {got}, above the {paid} paid")]
    FinalAbovePaid {
        /// Total of the vouchers signed.
        paid: U256,
        /// Paid by the final state.
        got: U256,
    },
    /// A final state that differs from the one we signed.
    #[error("final state pays {got}, we signed one paying {signed}")]
    ConflictingFinal {
        /// What we signed.
        signed: U256,
        /// What was proposed.
        got: U256,
    },
}

impl VirtualPeerError {
    /// What to do about it.
    pub fn reaction(&self) -> Reaction {
        match self {
            Self::UnknownChannel(_)
            | Self::Unexpected(_)
            | Self::LowerVoucher { .. }
            | Self::NotParticipant(_) => Reaction::Ignore,
            Self::BadSignature(_)
            | Self::InvalidProposal(_)
            | Self::WrongRole(_)
            | Self::NotFunded
            | Self::InvalidVoucher
            | Self::OverAmount { .. }
            | Self::InvalidFinal(_) => Reaction::Disconnect,
            Self::FinalBelowPaid { .. }
            | Self::FinalAbovePaid { .. }
            | Self::ConflictingFinal { .. } => Reaction::Challenge,
        }
    }
}

/// The caller misused the API. Nothing was signed or sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VirtualUsageError {
    /// The operation needs another role.
    #[error("{0} needs another role")]
    WrongRole(&'static str),
    /// The operation is not possible in this phase.
    #[error("{0} is not possible in this phase")]
    WrongPhase(&'static str),
    /// Invalid parameters.
    #[error("invalid parameters: {0}")]
    InvalidParams(&'static str),
    /// Paying beyond the channel's amount.
    #[error("paying {delta} more exceeds the channel amount {amount}")]
    PayBeyondAmount {
        /// Channel amount.
        amount: U256,
        /// Asked for.
        delta: U256,
    },
    /// No open ledger with this counterparty in the needed role.
    #[error("no open ledger with {0}")]
    NoLedger(Address),
    /// Unknown channel or ledger.
    #[error("unknown channel {0}")]
    Unknown(B256),
    /// A snapshot that cannot be restored.
    #[error("corrupt snapshot: {0}")]
    CorruptSnapshot(String),
}

/// Why a hub (or a payee) refuses a virtual channel.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Rejection {
    /// The app is not our `PaymentApp` (`0x0` included: such a channel cannot be challenged).
    #[error("app {0} is not the configured PaymentApp")]
    WrongApp(Address),
    /// No open ledger with the payer (hub) or the hub (payee), or with the payee (hub).
    #[error("no open ledger with {0}")]
    NoLedger(Address),
    /// The channel amount is above the hub's cap per channel.
    #[error("amount {got} above the cap {max}")]
    AmountTooLarge {
        /// Cap.
        max: U256,
        /// Asked.
        got: U256,
    },
    /// The fee is below the hub's minimum.
    #[error("fee {got} below the minimum {min}")]
    FeeTooLow {
        /// Minimum.
        min: U256,
        /// Offered.
        got: U256,
    },
    /// Locking the amount would exceed the hub's free balance or its cap in that ledger.
    #[error("ledger {ledger}: {needed} needed, {available} available")]
    Capital {
        /// The hub's ledger with the payee.
        ledger: B256,
        /// What the channel needs.
        needed: U256,
        /// Free and allowed.
        available: U256,
    },
}
