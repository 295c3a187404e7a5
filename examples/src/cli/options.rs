//! The command line (clap): global options, the option groups and one struct per command.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use paid_torrent_examples::metainfo::DEFAULT_PIECE_LENGTH;
use paid_torrent_examples::paid::BuyTerms;
use payment_channel::Address;
use torrent_glue::LivenessConfig;

/// A BitTorrent client whose peers pay each other for data over Nitro state channels.
#[derive(Debug, Parser)]
#[command(name = "paid-torrent", version, about)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) chain: ChainArgs,
    /// Print machine-readable JSON lines on stdout (events and status) instead of a progress bar.
    #[arg(long, global = true)]
    pub(crate) json: bool,
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// What a seller asks.
#[derive(Debug, Args, Clone)]
pub(crate) struct SellOpts {
    /// Price per byte in the smallest unit of the asset (wei for the native coin).
    #[arg(long, default_value_t = 1)]
    pub(crate) price: u128,
    /// Bytes served to a paying peer before its first payment.
    #[arg(long, default_value_t = 0)]
    pub(crate) trust: u64,
}

/// What a buyer accepts.
#[derive(Debug, Args, Clone)]
pub(crate) struct BuyOpts {
    /// Bytes bought per payment.
    #[arg(long, default_value_t = 1 << 20)]
    pub(crate) granularity: u64,
    /// Total it may lock in deposits and spend, in the asset's smallest unit (default: three
    /// times the content at the
    /// highest accepted price: after a channel's deposit is used up, e.g. by retransmissions or
    /// crashes, a second channel's deposit must still fit).
    #[arg(long)]
    pub(crate) budget: Option<u128>,
    /// Highest accepted price per byte, in the asset's smallest unit (default: 1, or the
    /// demo's `--price`).
    #[arg(long)]
    pub(crate) max_price: Option<u128>,
    /// Most bytes paid ahead of what was received, when the seller prompts (0: pay only on
    /// STOP, slower). Part of the buyer's window, always enforced: we never pay a seller for
    /// more than it delivered plus this, the requests in flight (64 blocks: 1 MiB) and one
    /// granularity (3 MiB by default), whatever it does; a seller that asks for more without
    /// delivering gets no more money and its channel is closed. A crash of either side can
    /// cost one window per run.
    #[arg(long, default_value_t = 1 << 20)]
    pub(crate) max_pay_ahead: u64,
}

impl BuyOpts {
    /// What `get` buys a torrent of `total` bytes with.
    pub(crate) fn terms(&self, total: u128) -> BuyTerms {
        let max_price = self.max_price.unwrap_or(1);
        BuyTerms {
            budget: self.budget.unwrap_or_else(|| total * max_price * 3),
            max_price_per_byte: max_price,
            granularity_bytes: self.granularity,
            max_pay_ahead_bytes: self.max_pay_ahead,
        }
    }
}

/// Prices and payment sizes of both sides (demo).
#[derive(Debug, Args, Clone)]
pub(crate) struct PayOpts {
    #[command(flatten)]
    pub(crate) sell: SellOpts,
    #[command(flatten)]
    pub(crate) buy: BuyOpts,
}

/// Which chain settles the payment channels.
#[derive(Debug, Args)]
pub(crate) struct ChainArgs {
    /// JSON-RPC URL of an Ethereum node (e.g. a local anvil). Default: the simulated chain, which
    /// lives inside one process (so `seed` and `get` in two processes need `--rpc` to pay). It
    /// is only ever printed as `scheme://host[:port]/…` (API keys hide in the rest).
    #[arg(long, global = true)]
    pub(crate) rpc: Option<String>,
    /// File holding the hex secret key of the funded account that sends transactions with
    /// `--rpc`, readable by its owner only (`chmod 600`). Or set `PAID_TORRENT_KEY`.
    #[arg(long, global = true, value_name = "PATH", conflicts_with = "key")]
    pub(crate) key_file: Option<PathBuf>,
    /// The same key as hex on the command line, where every user can see it: development chains
    /// only (chain id 31337 or 1337), with a warning.
    #[arg(long, global = true, value_name = "HEX")]
    pub(crate) key: Option<String>,
    /// `NitroAdjudicator` address (default on a development chain: anvil's first deployment
    /// from its dev account #0, deployed from `--artifacts` if nothing is there; required on any
    /// other chain). Its code must be the pinned `NitroAdjudicator`'s.
    #[arg(long, global = true)]
    pub(crate) adjudicator: Option<Address>,
    /// `PaymentApp` address (default on a development chain: anvil's second deployment from dev
    /// account #0; required on any other chain). Its code must be `PaymentApp`'s, and a payer
    /// joins only channels whose app's code is `PaymentApp`'s, whatever this says.
    #[arg(long, global = true)]
    pub(crate) app: Option<Address>,
    /// What channels are paid in: `native` (the chain's coin, default), an ERC-20 token's
    /// address, or `test` for a test token deployed for this run and given to the buyer (demo,
    /// or a dev chain with `--artifacts`). Seller and buyer must name the same asset.
    #[arg(long, global = true, value_name = "native|ADDRESS|test")]
    pub(crate) asset: Option<AssetArg>,
    /// Folder with the Nitro contract artifacts (`scripts/fetch-nitro-artifacts.sh`).
    #[arg(long, global = true)]
    pub(crate) artifacts: Option<PathBuf>,
}

/// The `--asset` option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AssetArg {
    Native,
    Token(Address),
    Test,
}

impl std::str::FromStr for AssetArg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "native" => Ok(Self::Native),
            "test" => Ok(Self::Test),
            other => other
                .parse()
                .map(Self::Token)
                .map_err(|e| format!("not `native`, `test` or an address: {e}")),
        }
    }
}

/// How long an absent or silent counterparty is waited for.
#[derive(Debug, Args, Clone, Copy)]
pub(crate) struct LivenessOpts {
    /// Close a channel whose counterparty has had no connection for this many seconds (its
    /// channel is kept for a reconnect until then, also across a restart with `--store`).
    #[arg(long, default_value_t = 30)]
    pub(crate) idle_close: u64,
    /// Seconds the counterparty has to answer a proposal, a join or a close before the channel
    /// is abandoned (unfunded) or challenged.
    #[arg(long, default_value_t = 60)]
    pub(crate) answer_timeout: u64,
}

impl LivenessOpts {
    pub(crate) fn config(self) -> LivenessConfig {
        LivenessConfig {
            idle_close_after: Some(Duration::from_secs(self.idle_close)),
            response_timeout: Duration::from_secs(self.answer_timeout),
            ..LivenessConfig::default()
        }
    }
}

/// Where the payment identity and channels live.
#[derive(Debug, Args)]
pub(crate) struct WalletArgs {
    /// Channel store (redb file): channels survive a crash and are settled on the next start.
    /// The channel signing key is kept next to it (`<store>.key`) unless one is given.
    #[arg(long)]
    pub(crate) store: Option<PathBuf>,
    /// File holding the hex secret key that signs channel states (our `pseAccount`; payouts go
    /// to its address), readable by its owner only. Or set `PAID_TORRENT_IDENTITY`. Default: the
    /// one kept next to `--store`, or a fresh one.
    #[arg(long, value_name = "PATH", conflicts_with = "identity")]
    pub(crate) identity_file: Option<PathBuf>,
    /// The same key as hex on the command line, where every user can see it: development chains
    /// (and the simulated one) only, with a warning.
    #[arg(long, value_name = "HEX")]
    pub(crate) identity: Option<String>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Create a .torrent from a file or folder.
    Create(CreateArgs),
    /// Seed a torrent whose content is on disk, selling it.
    Seed(SeedArgs),
    /// Download a torrent from peers given by address, paying for it.
    Get(GetArgs),
    /// Seed a generated file to a downloader in this process, over loopback, with payments.
    Demo(DemoArgs),
}

// The options of `create`.
#[derive(Debug, Args)]
pub(crate) struct CreateArgs {
    /// File or folder to share.
    pub(crate) path: PathBuf,
    /// Where to write the .torrent (default: `<name>.torrent` in the current folder).
    #[arg(short, long)]
    pub(crate) output: Option<PathBuf>,
    /// Piece length in bytes.
    #[arg(long, default_value_t = DEFAULT_PIECE_LENGTH)]
    pub(crate) piece_length: u32,
    /// Tracker URL to record (this client does not need one).
    #[arg(long)]
    pub(crate) announce: Option<String>,
}

// The options of `seed`.
#[derive(Debug, Args)]
pub(crate) struct SeedArgs {
    /// The .torrent file.
    pub(crate) torrent: PathBuf,
    /// Folder that holds the content (default: the .torrent's folder).
    #[arg(long)]
    pub(crate) dir: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:6881")]
    pub(crate) listen: SocketAddr,
    /// Serve everyone for free with the plain peer loop (no paid extension).
    #[arg(long)]
    pub(crate) free: bool,
    /// Bytes a peer without the paid extension (a stock client) gets for free per
    /// connection (default: nothing).
    #[arg(long)]
    pub(crate) free_bytes: Option<u64>,
    /// Challenge duration of the channels we propose, in seconds.
    #[arg(long, default_value_t = 600)]
    pub(crate) challenge_duration: u64,
    #[command(flatten)]
    pub(crate) pay: SellOpts,
    #[command(flatten)]
    pub(crate) wallet: WalletArgs,
    #[command(flatten)]
    pub(crate) liveness: LivenessOpts,
}

// The options of `get`.
#[derive(Debug, Args)]
pub(crate) struct GetArgs {
    /// The .torrent file.
    pub(crate) torrent: PathBuf,
    /// Peer to connect to (repeatable).
    #[arg(long = "peer", required = true)]
    pub(crate) peers: Vec<SocketAddr>,
    /// Folder to download into.
    #[arg(long, default_value = ".")]
    pub(crate) out: PathBuf,
    /// Download pieces in order instead of rarest first.
    #[arg(long)]
    pub(crate) sequential: bool,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 3600)]
    pub(crate) timeout: u64,
    /// Plain BitTorrent: no paid extension, pay nothing.
    #[arg(long)]
    pub(crate) free: bool,
    #[command(flatten)]
    pub(crate) pay: BuyOpts,
    #[command(flatten)]
    pub(crate) wallet: WalletArgs,
    #[command(flatten)]
    pub(crate) liveness: LivenessOpts,
}

// The options of `demo`.
#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// Size of the generated file in MiB.
    #[arg(long, default_value_t = 64)]
    pub(crate) size_mib: u64,
    /// No payments (plain BitTorrent, for comparison).
    #[arg(long)]
    pub(crate) free: bool,
    #[command(flatten)]
    pub(crate) pay: PayOpts,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_buyers_window_is_on_by_default() {
        let cli =
            Cli::try_parse_from(["paid-torrent", "get", "x.torrent", "--peer", "127.0.0.1:1"])
                .unwrap();
        let Command::Get(GetArgs { pay, .. }) = cli.command else {
            panic!("not get");
        };
        let download = pay.terms(1 << 30).download_config();
        // 64 requests of 16 KiB in flight + 1 MiB paid ahead + one 1 MiB granularity.
        assert_eq!(download.in_flight_bytes, 1 << 20);
        assert_eq!(download.window_bytes(), 3 << 20);
    }
}
