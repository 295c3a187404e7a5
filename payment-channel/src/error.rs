//! Errors of the channel state machine and the client, split by **who caused them**
//! (after rustls' `InvalidMessage` / `PeerMisbehaved` / `ApiMisuse` split), each with the
//! [`Reaction`] the caller should take (after rust-lightning's `ChannelError`).
//!
//! Contract: a [`Channel`](crate::channel::Channel) method that returns `Err` has **not changed**
//! the channel's state and has queued no output.

use alloy_primitives::{Address, B256, U256};

use crate::chain::ChainError;
use crate::role::{PhaseKind, Role};
use crate::sign::SignatureError;
use crate::store::StoreError;

/// What the caller should do about an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Reaction {
    /// Nothing: the input was harmless (a replay, a late or reordered message, a local mistake, a
    /// transient failure). The channel is unchanged; retrying later may succeed.
    Ignore,
    /// The peer sends garbage or forgeries: stop talking to it. Funds are not at risk.
    Disconnect,
    /// The peer breaks the protocol in a way that puts funds at risk: take the channel on chain
    /// ([`Channel::challenge`](crate::channel::Channel::challenge)).
    Challenge,
}

/// Any error of this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Bytes from the peer that do not decode.
    #[error("decode: {0}")]
    Decode(#[from] DecodeError),
    /// A well-formed message that the protocol does not allow here.
    #[error("peer misbehaved: {0}")]
    PeerMisbehaved(#[from] PeerMisbehaved),
    /// The caller misused the API (our mistake, not the peer's).
    #[error("usage: {0}")]
    Usage(#[from] UsageError),
    /// A channel proposal that the join policy refuses.
    #[error("proposal rejected: {0}")]
    Rejected(#[from] PolicyRejection),
    /// Our own signer failed.
    #[error("signer: {0}")]
    Signer(#[from] SignatureError),
    /// A chain call failed.
    #[error("chain: {0}")]
    Chain(#[from] ChainError),
    /// The durable store failed; nothing was acknowledged.
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

impl Error {
    /// What to do about this error.
    pub fn reaction(&self) -> Reaction {
        match self {
            Self::Decode(_) => Reaction::Disconnect,
            Self::PeerMisbehaved(p) => p.reaction(),
            Self::Usage(_)
            | Self::Rejected(_)
            | Self::Signer(_)
            | Self::Chain(_)
            | Self::Store(_) => Reaction::Ignore,
        }
    }

    /// Whether the peer is to blame.
    pub fn is_peer_fault(&self) -> bool {
        matches!(self, Self::Decode(_) | Self::PeerMisbehaved(_))
    }
}

/// Bytes that are not a valid message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input is longer than the bound for its kind (checked before parsing).
    #[error("message of {len} bytes exceeds the limit of {max}")]
    TooLong {
        /// Input length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The JSON is malformed or does not match any message shape.
    #[error("invalid JSON message: {0}")]
    Json(String),
}

/// A well-formed message or chain record that breaks the protocol. The channel is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PeerMisbehaved {
    /// A signature does not verify, or was made by someone else than the party that must sign.
    #[error("bad signature on {what}: expected signer {expected}, got {got:?}")]
    BadSignature {
        /// What was signed (`"voucher"`, `"prefund"`, ...).
        what: &'static str,
        /// Who had to sign.
        expected: Address,
        /// Who did sign, if the signature recovers at all.
        got: Option<Address>,
    },
    /// A message for another channel was given to this one.
    #[error("message for channel {got}, this is channel {expected}")]
    WrongChannel {
        /// This channel.
        expected: B256,
        /// The channel the message names (a voucher names only a prefix; it is padded with zeros).
        got: B256,
    },
    /// A voucher below the best one already received (a replay). Equal vouchers are no-ops, not errors.
    #[error("voucher of {got} is below the best voucher {best}")]
    LowerVoucher {
        /// Best amount received so far.
        best: U256,
        /// Amount of the rejected voucher.
        got: U256,
    },
    /// An amount above the channel's deposit.
    #[error("amount {got} exceeds the deposit {deposit}")]
    OverDeposit {
        /// The channel's deposit.
        deposit: U256,
        /// The amount claimed.
        got: U256,
    },
    /// The message cannot be accepted in the channel's current phase (too early, or after close or
    /// dispute). Reordered messages land here; they are dropped and the sender retransmits.
    #[error("{message} unexpected in phase {phase:?}")]
    UnexpectedInPhase {
        /// The channel's phase.
        phase: PhaseKind,
        /// The message kind.
        message: &'static str,
    },
    /// A message that our role never receives (e.g. a voucher sent to the payer).
    #[error("{message} is never sent to the {role:?}")]
    WrongRole {
        /// Our role.
        role: Role,
        /// The message kind.
        message: &'static str,
    },
    /// A proposal that is malformed: not two distinct participants, we are not the payer, zero
    /// deposit, out-of-range challenge duration.
    #[error("invalid proposal: {0}")]
    InvalidProposal(&'static str),
    /// A proposal for an existing channel id that differs from the one we have.
    #[error("conflicting proposal for channel {0}")]
    ConflictingProposal(B256),
    /// A close that pays the payee less than the vouchers it holds.
    #[error("close pays {got}, below the {best} already paid")]
    CloseBelowPaid {
        /// Best voucher received.
        best: U256,
        /// Amount the close proposes.
        got: U256,
    },
    /// A close that pays the payee more than the vouchers the payer signed.
    #[error("close pays {got}, above the {sent} sent")]
    CloseAboveSent {
        /// Total the payer signed.
        sent: U256,
        /// Amount the close proposes.
        got: U256,
    },
    /// A close whose amount differs from the final state we already signed.
    #[error("close pays {got}, but we signed a final state paying {signed}")]
    ConflictingClose {
        /// Amount of the final state we signed.
        signed: U256,
        /// Amount proposed.
        got: U256,
    },
    /// A message from an address that is not the channel's counterparty, or not addressed to us.
    #[error("message from {sender} to {recipient} is not for this channel's participants")]
    WrongParticipant {
        /// Envelope sender.
        sender: Address,
        /// Envelope recipient.
        recipient: Address,
    },
    /// A message for a channel we do not know.
    #[error("unknown channel {0}")]
    UnknownChannel(B256),
}

impl PeerMisbehaved {
    /// What to do about it.
    pub fn reaction(&self) -> Reaction {
        match self {
            Self::LowerVoucher { .. }
            | Self::UnexpectedInPhase { .. }
            | Self::UnknownChannel(_)
            | Self::WrongParticipant { .. } => Reaction::Ignore,
            Self::BadSignature { .. }
            | Self::WrongChannel { .. }
            | Self::OverDeposit { .. }
            | Self::WrongRole { .. }
            | Self::InvalidProposal(_)
            | Self::ConflictingProposal(_) => Reaction::Disconnect,
            Self::CloseBelowPaid { .. }
            | Self::CloseAboveSent { .. }
            | Self::ConflictingClose { .. } => Reaction::Challenge,
        }
    }
}

/// The caller asked for something the channel cannot do. Nothing was signed or sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UsageError {
    /// A payment that would take the cumulative total beyond the deposit.
    #[error("paying {delta} more would total {total:?}, beyond the deposit {deposit}")]
    PayBeyondDeposit {
        /// The deposit.
        deposit: U256,
        /// The payment asked for.
        delta: U256,
        /// The total it would make (`None` on overflow).
        total: Option<U256>,
    },
    /// The operation needs the other role (e.g. paying as the payee, joining as the payee).
    #[error("{operation} needs the {needed:?} role")]
    WrongRole {
        /// What was attempted.
        operation: &'static str,
        /// The role it needs.
        needed: Role,
    },
    /// The operation is not possible in the channel's phase.
    #[error("{operation} is not possible in phase {phase:?}")]
    WrongPhase {
        /// What was attempted.
        operation: &'static str,
        /// The channel's phase.
        phase: PhaseKind,
    },
    /// The operation is not possible while a challenge is registered on chain or after the channel
    /// finalized.
    #[error("{operation} is not possible during an on-chain dispute")]
    Disputed {
        /// What was attempted.
        operation: &'static str,
    },
    /// There is no state that can be taken on chain, or a better one is already registered.
    #[error("cannot challenge: {0}")]
    CannotChallenge(&'static str),
    /// Invalid parameters for a new channel.
    #[error("invalid channel parameters: {0}")]
    InvalidParams(&'static str),
    /// No channel with this id.
    #[error("unknown channel {0}")]
    UnknownChannel(B256),
    /// A chain event or snapshot of another channel was given to this channel.
    #[error("input for channel {got}, this is channel {expected}")]
    WrongChannel {
        /// This channel.
        expected: B256,
        /// The input's channel.
        got: B256,
    },
    /// A snapshot that cannot be restored.
    #[error("corrupt snapshot: {0}")]
    CorruptSnapshot(String),
    /// A signature task on the blocking pool did not finish (the runtime is shutting down, or
    /// the signer panicked). Nothing was credited or sent.
    #[error("signature task failed: {0}")]
    SignatureTask(String),
}

/// Why a proposal was not auto-joined.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyRejection {
    /// The app definition is not the configured `PaymentApp`.
    #[error("app definition {got} is not the configured {expected}")]
    WrongApp {
        /// Configured app.
        expected: Address,
        /// Proposed app.
        got: Address,
    },
    /// The deposit is above the per-channel cap.
    #[error("deposit {got} above the cap {max}")]
    DepositTooLarge {
        /// Cap.
        max: U256,
        /// Proposed deposit.
        got: U256,
    },
    /// Joining would lock more than the budget across open channels.
    #[error("deposit {deposit} with {locked} already locked exceeds the budget {budget}")]
    OverBudget {
        /// Budget.
        budget: U256,
        /// Already locked in open payer channels.
        locked: U256,
        /// Proposed deposit.
        deposit: U256,
    },
    /// The challenge duration is outside the accepted bounds.
    #[error("challenge duration {got}s outside [{min}, {max}]")]
    ChallengeDuration {
        /// Lower bound.
        min: u64,
        /// Upper bound.
        max: u64,
        /// Proposed duration.
        got: u64,
    },
    /// The advertised price is above the cap (or missing while a cap is set).
    #[error("price {got:?} above the cap {max}")]
    PriceTooHigh {
        /// Cap.
        max: U256,
        /// Proposed price.
        got: Option<U256>,
    },
    /// The code deployed at the proposed app is not `PaymentApp` (see [`crate::app`]): the app
    /// decides who can take the deposit, so nothing is signed or deposited.
    #[error("the code at app {app} (hash {code_hash}) is not PaymentApp")]
    AppCode {
        /// The proposed app address.
        app: Address,
        /// `keccak256` of the code found there.
        code_hash: B256,
    },
    /// The deposit's asset is not one the policy lists.
    #[error("asset {0} not accepted")]
    AssetNotAccepted(Address),
    /// The proposal came from a peer we do not want to pay.
    #[error("counterparty {0} not accepted")]
    Counterparty(Address),
    /// The channel id has a history on chain (a status or holdings): not a new channel.
    #[error("channel {channel_id} already has a history on chain")]
    NotFresh {
        /// The proposed channel.
        channel_id: B256,
    },
}
