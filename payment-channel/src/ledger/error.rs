//! Errors of the ledger channel, split by who caused them, each with the
//! [`Reaction`](crate::error::Reaction) to take.
//!
//! Contract: a [`Ledger`](super::Ledger) method that returns `Err` has **not changed** the ledger
//! and has queued no output.

use alloy_primitives::{B256, U256};

use crate::error::Reaction;
use crate::sign::SignatureError;

/// Any error of a ledger channel.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LedgerError {
    /// The counterparty sent something the protocol does not allow.
    #[error("peer misbehaved: {0}")]
    Peer(#[from] LedgerPeerError),
    /// The caller asked for something the ledger cannot do.
    #[error("usage: {0}")]
    Usage(#[from] LedgerUsageError),
    /// Our own signer failed.
    #[error("signer: {0}")]
    Signer(#[from] SignatureError),
}

impl LedgerError {
    /// What to do about this error.
    pub fn reaction(&self) -> Reaction {
        match self {
            Self::Peer(p) => p.reaction(),
            Self::Usage(_) | Self::Signer(_) => Reaction::Ignore,
        }
    }

    /// Whether the counterparty is to blame.
    pub fn is_peer_fault(&self) -> bool {
        matches!(self, Self::Peer(_))
    }
}

/// Why a [`Proposal`](super::Proposal) cannot be applied to a ledger state (§1.3 of the
/// virtual-funding reference: duplicate guarantee, insufficient funds, deposit above the amount,
/// guarantee not found, plus this crate's stricter rules).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProposalError {
    /// `Add` for a target that already has a guarantee.
    #[error("a guarantee for {0} exists already")]
    DuplicateGuarantee(B256),
    /// `Remove` of a target without a guarantee.
    #[error("no guarantee for {0}")]
    UnknownGuarantee(B256),
    /// A balance would go negative.
    #[error("balance of {who} is {balance}, {needed} needed")]
    InsufficientFunds {
        /// The destination whose balance is short.
        who: B256,
        /// Its balance.
        balance: U256,
        /// What the proposal takes from it.
        needed: U256,
    },
    /// `left_deposit` above the guarantee amount, or a `Remove` crediting more than it frees.
    #[error("{what} {got} above the guarantee amount {amount}")]
    AboveAmount {
        /// Which field.
        what: &'static str,
        /// Its value.
        got: U256,
        /// The guarantee amount.
        amount: U256,
    },
    /// `left`/`right` are not the ledger's two participants (in either order).
    #[error("left/right are not the ledger's two participants")]
    NotParticipants,
    /// A guarantee of zero, or a target that is a participant's destination or zero.
    #[error("invalid guarantee: {0}")]
    InvalidGuarantee(&'static str),
    /// An amount overflows 256 bits.
    #[error("amount overflow")]
    Overflow,
}

/// The counterparty broke the ledger protocol. The ledger is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LedgerPeerError {
    /// A signature that is not the expected participant's on the expected state.
    #[error("bad signature on {0}")]
    BadSignature(&'static str),
    /// A message for another ledger, or from someone who is not the counterparty.
    #[error("message for ledger {got} from a non-participant or for another ledger")]
    WrongLedger {
        /// The ledger the message names.
        got: B256,
    },
    /// A message our role never receives (a follower's countersignature sent to the follower).
    #[error("{0} is never sent to this side")]
    WrongRole(&'static str),
    /// A message that the ledger's phase does not accept (early, late or reordered: dropped, the
    /// sender retransmits).
    #[error("{0} unexpected in this phase")]
    Unexpected(&'static str),
    /// A ledger opening that this crate does not accept (participants, app, deposit).
    #[error("invalid ledger opening: {0}")]
    InvalidOpen(&'static str),
    /// An allocation of a ledger state that is not a type-2 guarantee (a go-nitro type-1
    /// "guarantee" is paid out by `transfer` instead of being reclaimable).
    #[error("allocation {index} has type {allocation_type}, not a guarantee (2)")]
    NotAGuarantee {
        /// Index in the outcome.
        index: usize,
        /// Its allocation type.
        allocation_type: u8,
    },
    /// A guarantee whose metadata is not `abi.encode(Guarantee{left, right})`.
    #[error("allocation {0} has malformed guarantee metadata")]
    BadGuaranteeMetadata(usize),
    /// Guarantees not strictly sorted by target.
    #[error("guarantees not sorted by target")]
    UnsortedGuarantees,
    /// A state whose shape is not a ledger state of this ledger.
    #[error("malformed ledger state: {0}")]
    MalformedState(&'static str),
    /// The proposal cannot be applied.
    #[error("invalid proposal: {0}")]
    InvalidProposal(#[from] ProposalError),
    /// The signed state is not the proposal applied to the previous state (totals, balances or
    /// guarantees differ from what the proposal says).
    #[error("the state of turn {0} is not its proposal applied to the previous state")]
    StateMismatch(u64),
    /// A proposal at a turn beyond the next one (a skipped turn).
    #[error("proposal for turn {got}, expected {expected}")]
    SkippedTurn {
        /// `latest + 1`.
        expected: u64,
        /// The turn received.
        got: u64,
    },
    /// A proposal or countersignature for a turn we already have (a replay). Harmless.
    #[error("stale turn {got}; the countersigned turn is {current}")]
    StaleTurn {
        /// Our countersigned turn.
        current: u64,
        /// The turn received.
        got: u64,
    },
    /// The next proposal for a guarantee target differs from the one our objective expects.
    #[error("proposal for {target} differs from the expected one")]
    ProposalMismatch {
        /// The guarantee target.
        target: B256,
    },
    /// A final state that is not the countersigned state closed (or guarantees remain).
    #[error("invalid final state: {0}")]
    InvalidFinal(&'static str),
}

impl LedgerPeerError {
    /// What to do about it.
    pub fn reaction(&self) -> Reaction {
        match self {
            Self::Unexpected(_) | Self::StaleTurn { .. } | Self::WrongLedger { .. } => {
                Reaction::Ignore
            }
            Self::BadSignature(_)
            | Self::WrongRole(_)
            | Self::InvalidOpen(_)
            | Self::NotAGuarantee { .. }
            | Self::BadGuaranteeMetadata(_)
            | Self::UnsortedGuarantees
            | Self::MalformedState(_)
            | Self::InvalidProposal(_)
            | Self::StateMismatch(_)
            | Self::SkippedTurn { .. }
            | Self::InvalidFinal(_) => Reaction::Disconnect,
            // The leader asks us to lock or release money other than agreed: our funds are
            // safe (we sign nothing), but the guarantee our objective waits for will not come.
            Self::ProposalMismatch { .. } => Reaction::Challenge,
        }
    }
}

/// The caller misused the ledger API. Nothing was signed or sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LedgerUsageError {
    /// The operation needs the other role.
    #[error("{0} needs the other role")]
    WrongRole(&'static str),
    /// The operation is not possible in the ledger's phase.
    #[error("{0} is not possible in this phase")]
    WrongPhase(&'static str),
    /// Invalid parameters for a new ledger.
    #[error("invalid ledger parameters: {0}")]
    InvalidParams(&'static str),
    /// Our own proposal cannot be applied.
    #[error("invalid proposal: {0}")]
    InvalidProposal(#[from] ProposalError),
    /// A close while guarantees or proposals remain.
    #[error("cannot close: {0}")]
    NotEmpty(&'static str),
    /// A reclaim that the finalized outcome does not allow.
    #[error("cannot reclaim: {0}")]
    Reclaim(&'static str),
    /// A snapshot that cannot be restored.
    #[error("corrupt snapshot: {0}")]
    CorruptSnapshot(String),
}
