//! The command line (clap): global options, the option groups and one struct per command.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use paid_torrent_examples::metainfo::DEFAULT_PIECE_LENGTH;
use paid_torrent_examples::paid::BuyTerms;
use paid_torrent_examples::units::{parse_duration, parse_price, parse_size};
use payment_channel::Address;
use torrent_glue::LivenessConfig;

/// A BitTorrent client whose peers pay each other for data over Nitro state channels.
#[derive(Debug, Parser)]
#[command(name = "paid-torrent", version, about)]
pub(crate) struct Cli {
    /// Print machine-readable JSON lines on stdout (events and status) instead of a progress bar.
    #[arg(long, global = true)]
    pub(crate) json: bool,
    /// More log lines on stderr (`-v`: info, `-vv`: debug, `-vvv`: trace). `RUST_LOG` overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    pub(crate) verbose: u8,
    /// Only errors on stderr: no progress bar, no warnings.
    #[arg(short, long, global = true)]
    pub(crate) quiet: bool,
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// What a seller asks.
#[derive(Debug, Args, Clone)]
pub(crate) struct SellOpts {
    /// Price: `AMOUNT[wei|gwei|ether][/SIZE]`, e.g. `1wei` (per byte), `1gwei/KiB`,
    /// `0.001ether/MiB`; rounded down to whole wei per byte. With an ERC-20 asset, `wei` is its
    /// smallest unit.
    #[arg(long, value_name = "PRICE", default_value = "1wei", value_parser = parse_price)]
    pub(crate) price: u128,
    /// Bytes served to a paying peer before its first payment (`0`, `256KiB`, …).
    #[arg(long, value_name = "SIZE", default_value = "0", value_parser = parse_size)]
    pub(crate) trust: u64,
}

/// What a buyer accepts.
#[derive(Debug, Args, Clone)]
pub(crate) struct BuyOpts {
    /// Bytes bought per payment.
    #[arg(long, value_name = "SIZE", default_value = "1MiB", value_parser = parse_size)]
    pub(crate) granularity: u64,
    /// Total it may lock in deposits and spend: `AMOUNT[wei|gwei|ether]` (default: three times
    /// the content at the highest accepted price: after a channel's deposit is used up, e.g. by
    /// retransmissions or crashes, a second channel's deposit must still fit).
    #[arg(long, value_name = "AMOUNT", value_parser = parse_price)]
    pub(crate) budget: Option<u128>,
    /// Highest accepted price, written like `--price` (default: 1wei per byte, or the demo's
    /// `--price`).
    #[arg(long, value_name = "PRICE", value_parser = parse_price)]
    pub(crate) max_price: Option<u128>,
    /// Most bytes paid ahead of what was received, when the seller prompts (0: pay only on
    /// STOP, slower). Part of the buyer's window, always enforced: we never pay a seller for
    /// more than it delivered plus this, the requests in flight (64 blocks: 1 MiB) and one
    /// granularity (3 MiB by default), whatever it does; a seller that asks for more without
    /// delivering gets no more money and its channel is closed. A crash of either side can
    /// cost one window per run.
    #[arg(long, value_name = "SIZE", default_value = "1MiB", value_parser = parse_size)]
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

/// Which chain settles the payment channels (`seed` and `get`).
#[derive(Debug, Args, Clone, Default)]
#[command(next_help_heading = "Chain (where payments settle)")]
pub(crate) struct ChainArgs {
    /// JSON-RPC URL of an Ethereum node (e.g. a local anvil). Default: the simulated chain, which
    /// lives inside one process (so `seed` and `get` in two processes need `--rpc` to pay). It
    /// is only ever printed as `scheme://host[:port]/…` (API keys hide in the rest).
    #[arg(long, value_name = "URL")]
    pub(crate) rpc: Option<String>,
    /// File holding the hex secret key of the funded account that sends transactions with
    /// `--rpc`, readable by its owner only (`chmod 600`). Or set `PAID_TORRENT_KEY`.
    #[arg(long, value_name = "PATH", conflicts_with = "key")]
    pub(crate) key_file: Option<PathBuf>,
    /// The same key as hex on the command line, where every user can see it: development chains
    /// only (chain id 31337 or 1337), with a warning.
    #[arg(long, value_name = "HEX")]
    pub(crate) key: Option<String>,
    /// `NitroAdjudicator` address (default on a development chain: anvil's first deployment
    /// from its dev account #0, deployed from `--artifacts` if nothing is there; required on any
    /// other chain). Its code must be the pinned `NitroAdjudicator`'s.
    #[arg(long, value_name = "ADDRESS")]
    pub(crate) adjudicator: Option<Address>,
    /// `PaymentApp` address (default on a development chain: anvil's second deployment from dev
    /// account #0; required on any other chain). Its code must be `PaymentApp`'s, and a payer
    /// joins only channels whose app's code is `PaymentApp`'s, whatever this says.
    #[arg(long, value_name = "ADDRESS")]
    pub(crate) app: Option<Address>,
    /// What channels are paid in: `native` (the chain's coin, default), an ERC-20 token's
    /// address, or `test` for a test token deployed for this run and given to the buyer (demo,
    /// or a dev chain with `--artifacts`). Seller and buyer must name the same asset.
    #[arg(long, value_name = "native|ADDRESS|test")]
    pub(crate) asset: Option<AssetArg>,
    /// Folder with the Nitro contract artifacts (`scripts/fetch-nitro-artifacts.sh`).
    #[arg(long, value_name = "DIR")]
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
    /// Close a channel whose counterparty has had no connection for this long (`30s`, `5m`; its
    /// channel is kept for a reconnect until then, also across a restart with `--store`).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub(crate) idle_close: Duration,
    /// How long the counterparty has to answer a proposal, a join or a close before the channel
    /// is abandoned (unfunded) or challenged.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub(crate) answer_timeout: Duration,
}

impl LivenessOpts {
    pub(crate) fn config(self) -> LivenessConfig {
        LivenessConfig::default()
            .with_idle_close_after(Some(self.idle_close))
            .with_response_timeout(self.answer_timeout)
    }
}

/// Where the payment identity and channels live.
#[derive(Debug, Args)]
pub(crate) struct WalletArgs {
    /// Channel store (redb file): channels survive a crash and are settled on the next start.
    /// The channel signing key is kept next to it (`<store>.key`) unless one is given.
    #[arg(long, value_name = "FILE")]
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

/// Everything about payment channels that `seed` and `get` share: where our identity and
/// channels live, how long an absent counterparty is waited for, and which chain settles.
#[derive(Debug, Args)]
pub(crate) struct ChannelArgs {
    #[command(flatten)]
    pub(crate) wallet: WalletArgs,
    #[command(flatten)]
    pub(crate) liveness: LivenessOpts,
    #[command(flatten)]
    pub(crate) chain: ChainArgs,
    #[command(flatten)]
    pub(crate) hub: HubOpts,
}

/// Channels through a hub (`paid-torrent hub`): with peers that use the same hub, each channel
/// is a virtual channel funded from one ledger with the hub; with others, a direct channel.
#[derive(Debug, Args, Clone)]
#[command(next_help_heading = "Hub (one deposit for every seller)")]
pub(crate) struct HubOpts {
    /// The hub at HOST:PORT (its address is proven by its handshake and advertised to peers).
    /// Needs --rpc: the hub is another process.
    #[arg(long, value_name = "HOST:PORT")]
    pub(crate) hub: Option<PeerAddr>,
    /// Buying: what we deposit into our ledger with the hub, once for every seller and torrent
    /// (default: --budget, or the torrent's price).
    #[arg(long, value_name = "AMOUNT", value_parser = parse_price, requires = "hub")]
    pub(crate) hub_deposit: Option<u128>,
    /// Buying: the fee we pay the hub per channel (at least the hub's `--fee`).
    #[arg(long, value_name = "AMOUNT", default_value = "0wei", value_parser = parse_price, requires = "hub")]
    pub(crate) hub_fee: u128,
    /// The published `ConsensusApp` (ledgers' app); default: the development chains' deployment.
    #[arg(long, value_name = "ADDRESS", requires = "hub")]
    pub(crate) consensus_app: Option<Address>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Create a .torrent from a file or folder, and print its magnet link.
    Create(CreateArgs),
    /// Show what a .torrent or a magnet link describes.
    Info(InfoArgs),
    /// Seed a torrent whose content is on disk, selling it.
    Seed(SeedArgs),
    /// Download a torrent from the peers its trackers know and those given, paying for it.
    Get(GetArgs),
    /// Seed a generated file to a downloader in this process, over loopback, with payments.
    Demo(DemoArgs),
    /// Run a hub: ledgers and virtual payment channels for payers and payees (needs --rpc).
    Hub(crate::hub::HubArgs),
}

/// A peer given as `HOST:PORT` (a name or an IP address; resolved when connecting).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PeerAddr {
    pub(crate) host: String,
    pub(crate) port: u16,
}

impl std::fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl std::str::FromStr for PeerAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if let Ok(a) = s.parse::<SocketAddr>() {
            return Ok(Self {
                host: a.ip().to_string(),
                port: a.port(),
            });
        }
        let (host, port) = s
            .rsplit_once(':')
            .ok_or_else(|| format!("`{s}` is not HOST:PORT"))?;
        let port = port
            .parse::<u16>()
            .map_err(|_| format!("`{s}`: `{port}` is not a port number"))?;
        if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c == '/') {
            return Err(format!("`{s}`: `{host}` is not a host name"));
        }
        Ok(Self {
            host: host.to_owned(),
            port,
        })
    }
}

impl PeerAddr {
    /// The addresses `host` resolves to (DNS for names).
    pub(crate) async fn resolve(&self) -> std::io::Result<Vec<SocketAddr>> {
        let host = self.host.trim_start_matches('[').trim_end_matches(']');
        Ok(tokio::net::lookup_host((host, self.port)).await?.collect())
    }
}

/// A piece length: a power of two, at least 16 KiB (one block), at most 64 MiB.
fn parse_piece_length(text: &str) -> Result<u32, String> {
    let n = parse_size(text)?;
    let min = 16 << 10;
    if n < min || !n.is_power_of_two() {
        return Err(format!(
            "{n} bytes: a piece length is a power of two of at least 16KiB (16KiB, 32KiB, …, 256KiB, 1MiB, …)"
        ));
    }
    u32::try_from(n)
        .ok()
        .filter(|n| *n <= paid_torrent_examples::metainfo::MAX_PIECE_LENGTH)
        .ok_or_else(|| format!("{n} bytes: at most 64MiB"))
}

// The options of `create`.
#[derive(Debug, Args)]
pub(crate) struct CreateArgs {
    /// File or folder to share.
    pub(crate) path: PathBuf,
    /// Where to write the .torrent (default: `<name>.torrent` in the current folder).
    #[arg(short, long, value_name = "FILE")]
    pub(crate) output: Option<PathBuf>,
    /// Piece length: a power of two of at least 16KiB (`256KiB`, `1MiB`, …).
    #[arg(long, value_name = "SIZE", default_value_t = DEFAULT_PIECE_LENGTH, value_parser = parse_piece_length)]
    pub(crate) piece_length: u32,
    /// Tracker URL (`http://…/announce` or `udp://host:port`), repeatable: the first is the
    /// `announce`, all of them form the announce list (BEP 12, one tier each).
    #[arg(long = "announce", value_name = "URL")]
    pub(crate) announce: Vec<String>,
}

// The options of `info`.
#[derive(Debug, Args)]
pub(crate) struct InfoArgs {
    /// A .torrent file, or a magnet link (`magnet:?xt=urn:btih:…`).
    #[arg(value_name = "FILE.torrent|MAGNET")]
    pub(crate) torrent: String,
}

// The options of `seed`.
#[derive(Debug, Args)]
pub(crate) struct SeedArgs {
    /// The .torrent file.
    #[arg(value_name = "FILE.torrent")]
    pub(crate) torrent: PathBuf,
    /// Folder that holds the content (default: the .torrent's folder).
    #[arg(long, value_name = "DIR")]
    pub(crate) dir: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long, value_name = "IP:PORT", default_value = "127.0.0.1:6881")]
    pub(crate) listen: SocketAddr,
    /// Serve everyone for free with the plain peer loop (no paid extension).
    #[arg(long)]
    pub(crate) free: bool,
    /// Bytes a peer without the paid extension (a stock client) gets for free per
    /// connection (default: nothing).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub(crate) free_bytes: Option<u64>,
    /// Challenge duration of the channels we propose (`10m`, `1h`).
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = parse_duration)]
    pub(crate) challenge_duration: Duration,
    #[command(flatten)]
    pub(crate) trackers: TrackerOpts,
    #[command(flatten)]
    pub(crate) pay: SellOpts,
    #[command(flatten)]
    pub(crate) channels: ChannelArgs,
}

/// How we talk to the torrent's trackers.
#[derive(Debug, Args, Clone)]
pub(crate) struct TrackerOpts {
    /// Do not contact the torrent's trackers (peers only from `--peer`).
    #[arg(long)]
    pub(crate) no_trackers: bool,
    /// The address trackers give to other peers: the port we listen on (default: `--listen`'s;
    /// for `get --seed`, its listening port).
    #[arg(long, value_name = "PORT")]
    pub(crate) announce_port: Option<u16>,
}

// The options of `get`.
#[derive(Debug, Args)]
pub(crate) struct GetArgs {
    /// The .torrent file, or a magnet link (`magnet:?xt=urn:btih:…`: the metadata is fetched
    /// from its peers, `--peer` and those its trackers name).
    #[arg(value_name = "FILE.torrent|MAGNET")]
    pub(crate) torrent: String,
    /// Peer to connect to, as `HOST:PORT` (repeatable), in addition to those the torrent's
    /// trackers name.
    #[arg(long = "peer", value_name = "HOST:PORT")]
    pub(crate) peers: Vec<PeerAddr>,
    /// Folder to download into.
    #[arg(long, visible_alias = "out", value_name = "DIR", default_value = ".")]
    pub(crate) dir: PathBuf,
    /// Download pieces in order instead of rarest first.
    #[arg(long)]
    pub(crate) sequential: bool,
    /// Give up after this long (`30s`, `5m`, `1h`).
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = parse_duration)]
    pub(crate) timeout: Duration,
    /// Plain BitTorrent: no paid extension, pay nothing.
    #[arg(long)]
    pub(crate) free: bool,
    /// Keep seeding after the download (selling at `--price`), until ctrl-c or SIGTERM.
    #[arg(long)]
    pub(crate) seed: bool,
    /// Address to listen on with `--seed`.
    #[arg(
        long,
        value_name = "IP:PORT",
        default_value = "127.0.0.1:0",
        requires = "seed"
    )]
    pub(crate) listen: SocketAddr,
    #[command(flatten)]
    pub(crate) sell: SellOpts,
    #[command(flatten)]
    pub(crate) trackers: TrackerOpts,
    #[command(flatten)]
    pub(crate) pay: BuyOpts,
    #[command(flatten)]
    pub(crate) channels: ChannelArgs,
}

// The options of `demo`.
#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// Size of the generated file (`64MiB`, `1GiB`).
    #[arg(long, value_name = "SIZE", default_value = "64MiB", value_parser = parse_size)]
    pub(crate) size: u64,
    /// No payments (plain BitTorrent, for comparison).
    #[arg(long)]
    pub(crate) free: bool,
    /// What channels are paid in: `native` (default) or `test` (a test token).
    #[arg(long, value_name = "native|test")]
    pub(crate) asset: Option<AssetArg>,
    /// Run a hub too, and pay every seeder through it (virtual channels); prints each party's
    /// on-chain transactions and gas next to what direct channels would have cost.
    #[arg(long, conflicts_with_all = ["free", "asset"])]
    pub(crate) hub: bool,
    /// Seeders of the file (with `--hub`).
    #[arg(long, value_name = "N", default_value_t = 3, requires = "hub")]
    pub(crate) seeders: usize,
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
