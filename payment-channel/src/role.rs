//! The two small vocabularies every layer shares: which side of a channel we are ([`Role`]) and
//! where a channel is in its life ([`PhaseKind`]). In their own module so that the channel, its
//! errors and its messages depend on them without depending on each other.

use serde::{Deserialize, Serialize};

/// Which side of the channel we are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Role {
    /// Participant 0: deposits and signs vouchers.
    Payer,
    /// Participant 1: proposes the channel and receives vouchers.
    Payee,
}

impl Role {
    /// Index in `participants` and in the outcome's allocations.
    pub fn index(self) -> usize {
        match self {
            Self::Payer => 0,
            Self::Payee => 1,
        }
    }

    /// The other role.
    pub fn other(self) -> Self {
        match self {
            Self::Payer => Self::Payee,
            Self::Payee => Self::Payer,
        }
    }
}

/// The channel's phase, without its data. The order is the lifecycle order (pinned by a test).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum PhaseKind {
    /// The payee signed the prefund; the payer has not joined.
    Proposed,
    /// Prefund signed by both; waiting for `holdings ≥ deposit` on chain.
    Funding,
    /// Payer only: deposit done, postfund signed and sent; waiting for the payee's countersignature.
    AwaitingPostfund,
    /// Funded and postfund signed by both: vouchers flow.
    Running,
    /// We signed the final state; waiting for the countersignature.
    Closing,
    /// The final state is signed by both.
    Closed,
    /// The channel finalized on chain (concluded or challenge timed out).
    Finalized,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phase_order_is_lifecycle_order() {
        use PhaseKind::*;
        #[rustfmt::skip]
        let order = [Proposed, Funding, AwaitingPostfund, Running, Closing, Closed, Finalized];
        assert!(order.windows(2).all(|w| w[0] < w[1]));
    }
}
