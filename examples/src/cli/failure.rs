//! Why a command failed, who has to act on it, and the process's exit status.
//!
//! | status | kind | examples |
//! |---|---|---|
//! | 0 | — | done |
//! | 1 | [`Kind::Other`] | a local I/O error (disk full, permissions) |
//! | 2 | [`Kind::Usage`] | a bad option or value (clap's own errors exit 2 too), a missing or malformed `.torrent`, a bad key |
//! | 3 | [`Kind::Network`] | no peer could be reached or sell under our terms, a tracker failed, `--timeout` |
//! | 4 | [`Kind::Chain`] | the Ethereum node, the contracts or a channel's deposit or payout |
//! | 5 | [`Kind::Verification`] | the content on disk does not match the `.torrent`; the metadata peers sent for a magnet link does not match its info-hash |

use std::error::Error;

use paid_torrent_examples::error::{MetainfoError, StorageError};
use paid_torrent_examples::paid::PaidError;

/// Who has to act on a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Anything else (local I/O).
    Other,
    /// The command line or its input files.
    Usage,
    /// Peers and trackers.
    Network,
    /// The chain.
    Chain,
    /// Content that does not verify.
    Verification,
}

impl Kind {
    /// The process's exit status.
    pub(crate) fn code(self) -> u8 {
        match self {
            Self::Other => 1,
            Self::Usage => 2,
            Self::Network => 3,
            Self::Chain => 4,
            Self::Verification => 5,
        }
    }
}

/// A failed command: what failed (with its causes) and its [`Kind`].
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) kind: Kind,
    pub(crate) error: Box<dyn Error + Send + Sync>,
}

impl Failure {
    pub(crate) fn new(kind: Kind, error: impl Into<Box<dyn Error + Send + Sync>>) -> Self {
        Self {
            kind,
            error: error.into(),
        }
    }

    pub(crate) fn other(error: impl Into<Box<dyn Error + Send + Sync>>) -> Self {
        Self::new(Kind::Other, error)
    }

    pub(crate) fn usage(error: impl Into<Box<dyn Error + Send + Sync>>) -> Self {
        Self::new(Kind::Usage, error)
    }

    pub(crate) fn network(error: impl Into<Box<dyn Error + Send + Sync>>) -> Self {
        Self::new(Kind::Network, error)
    }

    pub(crate) fn chain(error: impl Into<Box<dyn Error + Send + Sync>>) -> Self {
        Self::new(Kind::Chain, error)
    }

    pub(crate) fn verification(error: impl Into<Box<dyn Error + Send + Sync>>) -> Self {
        Self::new(Kind::Verification, error)
    }

    /// A failure of [`Kind::Other`] becomes one of `kind` (the errors of a step whose failures
    /// are all of one kind, e.g. connecting to the chain).
    pub(crate) fn or(self, kind: Kind) -> Self {
        if self.kind == Kind::Other {
            Self { kind, ..self }
        } else {
            self
        }
    }

    /// `error: …` and each cause on its own line (`  caused by: …`); a cause whose text the
    /// line above already quotes is not repeated.
    pub(crate) fn report(&self) -> String {
        let mut text = format!("error: {}", self.error);
        let mut last = self.error.to_string();
        let mut cause = self.error.source();
        while let Some(c) = cause {
            let line = c.to_string();
            if !last.contains(&line) {
                text.push_str(&format!("\n  caused by: {line}"));
            }
            last = line;
            cause = c.source();
        }
        text
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.error.fmt(f)
    }
}

impl From<String> for Failure {
    fn from(e: String) -> Self {
        Self::other(e)
    }
}

impl From<&str> for Failure {
    fn from(e: &str) -> Self {
        Self::other(e)
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        Self::other(e)
    }
}

impl From<MetainfoError> for Failure {
    fn from(e: MetainfoError) -> Self {
        Self::usage(e)
    }
}

impl From<StorageError> for Failure {
    fn from(e: StorageError) -> Self {
        Self::other(e)
    }
}

impl From<PaidError> for Failure {
    fn from(e: PaidError) -> Self {
        match e {
            PaidError::Key | PaidError::Config(_) | PaidError::Usage(_) => Self::usage(e),
            PaidError::Store(_) => Self::other(e),
            _ => Self::chain(e),
        }
    }
}

impl From<payment_channel::error::Error> for Failure {
    fn from(e: payment_channel::error::Error) -> Self {
        Self::chain(e)
    }
}

/// Errors of the chain and of its setup: [`Kind::Chain`].
macro_rules! chain_errors {
    ($($t:ty),* $(,)?) => {$(
        impl From<$t> for Failure {
            fn from(e: $t) -> Self {
                Self::chain(e)
            }
        }
    )*};
}

chain_errors!(
    payment_channel::chain::ChainError,
    payment_channel::chain::sim::SimError,
);

#[cfg(feature = "ethereum")]
chain_errors!(payment_channel::chain::ethereum::SetupError);

impl From<payment_channel::sign::SignatureError> for Failure {
    fn from(e: payment_channel::sign::SignatureError) -> Self {
        Self::usage(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_one_per_line_without_repeats() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file");
        let f = Failure::from(MetainfoError::Io {
            path: "nonexist.torrent".into(),
            source: io,
        });
        assert_eq!(f.kind.code(), 2);
        assert_eq!(
            f.report(),
            "error: reading nonexist.torrent\n  caused by: No such file"
        );
        let f = Failure::network("no peer can sell");
        assert_eq!(f.report(), "error: no peer can sell");
        assert_eq!(f.kind.code(), 3);
    }

    #[test]
    fn exit_codes_are_distinct() {
        let kinds = [
            Kind::Other,
            Kind::Usage,
            Kind::Network,
            Kind::Chain,
            Kind::Verification,
        ];
        let mut codes: Vec<u8> = kinds.iter().map(|k| k.code()).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), kinds.len());
        assert!(!codes.contains(&0));
        assert_eq!(Failure::other("x").or(Kind::Chain).kind, Kind::Chain);
        assert_eq!(Failure::usage("x").or(Kind::Chain).kind, Kind::Usage);
    }
}
