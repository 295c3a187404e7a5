//! `paid-torrent`: the sample client's command line. See `examples/README.md`.

#![forbid(unsafe_code)]

use std::error::Error;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use paid_torrent_examples::metainfo::{DEFAULT_PIECE_LENGTH, Metainfo, sha1};
use paid_torrent_examples::paid::{
    BuyTerms, ChainChoice, PaidNode, SellTerms, TORRENT, Units, Wallet,
};
use paid_torrent_examples::peer::PeerConfig;
use paid_torrent_examples::picker::Strategy;
use paid_torrent_examples::session::{self, PeerReport};
use paid_torrent_examples::storage::OpenMode;
use paid_torrent_examples::torrent::Torrent;
use payment_channel::{Address, B256, SimulatedChain, U256};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use torrent_glue::{CoordinatorEvent, LivenessConfig, PeerError};

type Result<T> = std::result::Result<T, Box<dyn Error + Send + Sync>>;

/// A BitTorrent client whose peers pay each other for data over Nitro state channels.
#[derive(Debug, Parser)]
#[command(name = "paid-torrent", version, about)]
struct Cli {
    #[command(flatten)]
    chain: ChainArgs,
    /// Print machine-readable JSON lines on stdout (events and status) instead of a progress bar.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

/// What a seller asks.
#[derive(Debug, Args, Clone)]
struct SellOpts {
    /// Price per byte in the smallest unit of the asset (wei for the native coin).
    #[arg(long, default_value_t = 1)]
    price: u128,
    /// Bytes served to a paying peer before its first payment.
    #[arg(long, default_value_t = 0)]
    trust: u64,
}

/// What a buyer accepts.
#[derive(Debug, Args, Clone)]
struct BuyOpts {
    /// Bytes bought per payment.
    #[arg(long, default_value_t = 1 << 20)]
    granularity: u64,
    /// Total it may lock in deposits and spend, in the asset's smallest unit (default: three
    /// times the content at the
    /// highest accepted price: after a channel's deposit is used up, e.g. by retransmissions or
    /// crashes, a second channel's deposit must still fit).
    #[arg(long)]
    budget: Option<u128>,
    /// Highest accepted price per byte, in the asset's smallest unit (default: 1, or the
    /// demo's `--price`).
    #[arg(long)]
    max_price: Option<u128>,
    /// Most bytes paid ahead of what was received, when the seller prompts (0: pay only on
    /// STOP, slower). Part of the buyer's window, always enforced: we never pay a seller for
    /// more than it delivered plus this, the requests in flight (64 blocks: 1 MiB) and one
    /// granularity (3 MiB by default), whatever it does; a seller that asks for more without
    /// delivering gets no more money and its channel is closed. A crash of either side can
    /// cost one window per run.
    #[arg(long, default_value_t = 1 << 20)]
    max_pay_ahead: u64,
}

impl BuyOpts {
    /// What `get` buys a torrent of `total` bytes with.
    fn terms(&self, total: u128) -> BuyTerms {
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
struct PayOpts {
    #[command(flatten)]
    sell: SellOpts,
    #[command(flatten)]
    buy: BuyOpts,
}

/// Which chain settles the payment channels.
#[derive(Debug, Args)]
struct ChainArgs {
    /// JSON-RPC URL of an Ethereum node (e.g. a local anvil). Default: the simulated chain, which
    /// lives inside one process (so `seed` and `get` in two processes need `--rpc` to pay).
    #[arg(long, global = true, requires = "key")]
    rpc: Option<String>,
    /// Hex secret key of the funded account that sends transactions with `--rpc`.
    #[arg(long, global = true)]
    key: Option<String>,
    /// `NitroAdjudicator` address (default: anvil's first deployment from its dev account #0;
    /// deployed from `--artifacts` if nothing is there).
    #[arg(long, global = true)]
    adjudicator: Option<Address>,
    /// `PaymentApp` address (default: anvil's second deployment from dev account #0). A payer
    /// joins only channels whose app's code is `PaymentApp`'s, whatever this says.
    #[arg(long, global = true)]
    app: Option<Address>,
    /// What channels are paid in: `native` (the chain's coin, default), an ERC-20 token's
    /// address, or `test` for a test token deployed for this run and given to the buyer (demo,
    /// or a dev chain with `--artifacts`). Seller and buyer must name the same asset.
    #[arg(long, global = true, value_name = "native|ADDRESS|test")]
    asset: Option<AssetArg>,
    /// Folder with the Nitro contract artifacts (`scripts/fetch-nitro-artifacts.sh`).
    #[arg(long, global = true)]
    artifacts: Option<PathBuf>,
}

/// The `--asset` option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AssetArg {
    Native,
    Token(Address),
    Test,
}

impl std::str::FromStr for AssetArg {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
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
struct LivenessOpts {
    /// Close a channel whose counterparty has had no connection for this many seconds (its
    /// channel is kept for a reconnect until then, also across a restart with `--store`).
    #[arg(long, default_value_t = 30)]
    idle_close: u64,
    /// Seconds the counterparty has to answer a proposal, a join or a close before the channel
    /// is abandoned (unfunded) or challenged.
    #[arg(long, default_value_t = 60)]
    answer_timeout: u64,
}

impl LivenessOpts {
    fn config(self) -> LivenessConfig {
        LivenessConfig {
            idle_close_after: Some(Duration::from_secs(self.idle_close)),
            response_timeout: Duration::from_secs(self.answer_timeout),
            ..LivenessConfig::default()
        }
    }
}

/// Where the payment identity and channels live.
#[derive(Debug, Args)]
struct WalletArgs {
    /// Channel store (redb file): channels survive a crash and are settled on the next start.
    /// The channel signing key is kept next to it (`<store>.key`) unless `--identity` is given.
    #[arg(long)]
    store: Option<PathBuf>,
    /// Hex secret key that signs channel states (our `pseAccount`; payouts go to its address).
    /// Default: the one kept next to `--store`, or a fresh one.
    #[arg(long)]
    identity: Option<String>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a .torrent from a file or folder.
    Create {
        /// File or folder to share.
        path: PathBuf,
        /// Where to write the .torrent (default: `<name>.torrent` in the current folder).
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Piece length in bytes.
        #[arg(long, default_value_t = DEFAULT_PIECE_LENGTH)]
        piece_length: u32,
        /// Tracker URL to record (this client does not need one).
        #[arg(long)]
        announce: Option<String>,
    },
    /// Seed a torrent whose content is on disk, selling it.
    Seed {
        /// The .torrent file.
        torrent: PathBuf,
        /// Folder that holds the content (default: the .torrent's folder).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:6881")]
        listen: SocketAddr,
        /// Serve everyone for free with the plain peer loop (no paid extension).
        #[arg(long)]
        free: bool,
        /// Bytes a peer without the paid extension (a stock client) gets for free per
        /// connection (default: nothing).
        #[arg(long)]
        free_bytes: Option<u64>,
        /// Challenge duration of the channels we propose, in seconds.
        #[arg(long, default_value_t = 600)]
        challenge_duration: u64,
        #[command(flatten)]
        pay: SellOpts,
        #[command(flatten)]
        wallet: WalletArgs,
        #[command(flatten)]
        liveness: LivenessOpts,
    },
    /// Download a torrent from peers given by address, paying for it.
    Get {
        /// The .torrent file.
        torrent: PathBuf,
        /// Peer to connect to (repeatable).
        #[arg(long = "peer", required = true)]
        peers: Vec<SocketAddr>,
        /// Folder to download into.
        #[arg(long, default_value = ".")]
        out: PathBuf,
        /// Download pieces in order instead of rarest first.
        #[arg(long)]
        sequential: bool,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 3600)]
        timeout: u64,
        /// Plain BitTorrent: no paid extension, pay nothing.
        #[arg(long)]
        free: bool,
        #[command(flatten)]
        pay: BuyOpts,
        #[command(flatten)]
        wallet: WalletArgs,
        #[command(flatten)]
        liveness: LivenessOpts,
    },
    /// Seed a generated file to a downloader in this process, over loopback, with payments.
    Demo {
        /// Size of the generated file in MiB.
        #[arg(long, default_value_t = 64)]
        size_mib: u64,
        /// No payments (plain BitTorrent, for comparison).
        #[arg(long)]
        free: bool,
        #[command(flatten)]
        pay: PayOpts,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(cli))
}

async fn run(cli: Cli) -> Result<()> {
    let out = Out {
        json: cli.json,
        units: Units::NATIVE,
    };
    match cli.command {
        Command::Create {
            path,
            output,
            piece_length,
            announce,
        } => create(&path, output, piece_length, announce),
        Command::Seed {
            torrent,
            dir,
            listen,
            free,
            free_bytes,
            challenge_duration,
            pay,
            wallet,
            liveness,
        } => {
            let meta = Metainfo::load(&torrent)?;
            let dir = content_dir(&torrent, dir);
            let t = Torrent::open(meta, &dir, OpenMode::ReadOnly, Strategy::RarestFirst)?;
            if !t.is_complete() {
                return Err(format!(
                    "{}: the content in {} does not verify ({} of {} pieces)",
                    torrent.display(),
                    dir.display(),
                    t.have().count(),
                    t.piece_count()
                )
                .into());
            }
            if free {
                return seed_free(t, listen).await;
            }
            let sell = SellTerms {
                price_per_byte: pay.price,
                trust_bytes: pay.trust,
                deposit: u128::from(t.meta().info.total_length()) * pay.price + 1,
                free_bytes,
                challenge_duration,
            };
            let chain = chain_choice(&cli.chain, &out).await?;
            let asset = resolve_asset(&chain, &cli.chain, &out).await?;
            let wallet = open_wallet(&chain, &wallet, asset).await?;
            let out = Out {
                units: wallet.units,
                ..out
            };
            seed_paid(t, listen, &wallet, sell, liveness.config(), &out).await
        }
        Command::Get {
            torrent,
            peers,
            out: dir,
            sequential,
            timeout,
            free,
            pay,
            wallet,
            liveness,
        } => {
            let meta = Metainfo::load(&torrent)?;
            let strategy = if sequential {
                Strategy::Sequential
            } else {
                Strategy::RarestFirst
            };
            let t = Torrent::open(meta, &dir, OpenMode::ReadWrite, strategy)?;
            let timeout = Duration::from_secs(timeout);
            if free {
                return get_free(t, &peers, &dir, timeout, &out).await;
            }
            let buy = pay.terms(u128::from(t.meta().info.total_length()));
            let chain = chain_choice(&cli.chain, &out).await?;
            let asset = resolve_asset(&chain, &cli.chain, &out).await?;
            let wallet = open_wallet(&chain, &wallet, asset).await?;
            let out = Out {
                units: wallet.units,
                ..out
            };
            get_paid(
                t,
                &peers,
                &dir,
                timeout,
                &wallet,
                buy,
                liveness.config(),
                &out,
            )
            .await
        }
        Command::Demo {
            size_mib,
            free,
            pay,
        } => demo(size_mib, free, &pay, cli.chain.asset).await,
    }
}

/// Where messages go: human lines on stderr, or JSON lines on stdout with `--json`; amounts in
/// human lines are written in `units`.
#[derive(Debug, Clone, Copy)]
struct Out {
    json: bool,
    units: Units,
}

impl Out {
    fn event(&self, value: serde_json::Value, human: impl FnOnce() -> String) {
        if self.json {
            println!("{value}");
        } else {
            let line = human();
            if !line.is_empty() {
                eprintln!("{line}");
            }
        }
    }
}

fn parse_key(hex_key: &str) -> Result<B256> {
    let bytes = hex::decode(hex_key.trim().trim_start_matches("0x"))?;
    if bytes.len() != 32 {
        return Err("a key is 32 bytes of hex".into());
    }
    Ok(B256::from_slice(&bytes))
}

async fn chain_choice(args: &ChainArgs, out: &Out) -> Result<ChainChoice> {
    let Some(rpc) = &args.rpc else {
        out.event(json!({"event": "chain", "kind": "simulated"}), || {
            "chain: simulated, in this process only (use --rpc to pay a peer in another process)"
                .into()
        });
        return Ok(ChainChoice::Simulated(SimulatedChain::new()));
    };
    ethereum_choice(rpc, args, out).await
}

#[cfg(feature = "ethereum")]
async fn ethereum_choice(rpc: &str, args: &ChainArgs, out: &Out) -> Result<ChainChoice> {
    use payment_channel::chain::ethereum::{NitroArtifacts, SetupError, deploy};
    use payment_channel::chain::sim::{DEFAULT_ADJUDICATOR_ADDRESS, DEFAULT_APP_DEFINITION};
    let key = parse_key(args.key.as_deref().ok_or("--rpc needs --key")?)?;
    let mut adjudicator = args.adjudicator.unwrap_or(DEFAULT_ADJUDICATOR_ADDRESS);
    let mut app = args.app.unwrap_or(DEFAULT_APP_DEFINITION);
    match payment_channel::chain::EthereumChain::connect(rpc, &key, adjudicator).await {
        Ok(_) => {}
        Err(SetupError::NoContract(_)) => {
            let artifacts = NitroArtifacts::from_dir(&artifacts_dir(args))?;
            let d = deploy(rpc, &key, &artifacts).await?;
            adjudicator = d.nitro_adjudicator;
            app = d.payment_app;
        }
        Err(e) => return Err(e.into()),
    }
    out.event(
        json!({"event": "chain", "kind": "ethereum", "rpc": rpc,
               "adjudicator": adjudicator.to_string(), "app": app.to_string()}),
        || format!("chain: {rpc}, NitroAdjudicator {adjudicator}, PaymentApp {app}"),
    );
    Ok(ChainChoice::Ethereum(
        paid_torrent_examples::paid::EthereumChoice {
            rpc: rpc.to_owned(),
            key,
            adjudicator,
            app,
        },
    ))
}

#[cfg(not(feature = "ethereum"))]
async fn ethereum_choice(_rpc: &str, _args: &ChainArgs, _out: &Out) -> Result<ChainChoice> {
    Err("this build has no Ethereum support: build with `--features ethereum`".into())
}

/// The asset of `--asset` on `chain`; `test` deploys a test token (the nitro-protocol package's
/// `Token.sol` on an Ethereum node, minted to the `--key` account; a simulated token otherwise).
async fn resolve_asset(chain: &ChainChoice, args: &ChainArgs, out: &Out) -> Result<Address> {
    let asset = match (args.asset.unwrap_or(AssetArg::Native), chain) {
        (AssetArg::Native, _) => return Ok(Address::ZERO),
        (AssetArg::Token(a), _) => a,
        (AssetArg::Test, ChainChoice::Simulated(sim)) => {
            sim.deploy_token(payment_channel::TokenBehaviour::Standard, 18)
        }
        #[cfg(feature = "ethereum")]
        (AssetArg::Test, ChainChoice::Ethereum(eth)) => {
            use payment_channel::sign::Signer;
            let owner = payment_channel::sign::LocalSigner::from_bytes(&eth.key)?.address();
            payment_channel::chain::ethereum::deploy_test_token(
                &eth.rpc,
                &eth.key,
                &artifacts_dir(args),
                owner,
            )
            .await?
        }
    };
    out.event(
        json!({"event": "asset", "asset": asset.to_string()}),
        || format!("paying in ERC-20 token {asset}"),
    );
    Ok(asset)
}

/// `--artifacts`, else `$NITRO_ARTIFACTS_DIR`, else the repository's `target/nitro-artifacts`.
#[cfg(feature = "ethereum")]
fn artifacts_dir(args: &ChainArgs) -> PathBuf {
    args.artifacts.clone().unwrap_or_else(|| {
        std::env::var_os("NITRO_ARTIFACTS_DIR").map_or_else(
            || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/nitro-artifacts"),
            PathBuf::from,
        )
    })
}

/// The identity key: `--identity`, else the key file next to `--store` (created on first use),
/// else a fresh one.
async fn open_wallet(chain: &ChainChoice, args: &WalletArgs, asset: Address) -> Result<Wallet> {
    let identity = match (&args.identity, &args.store) {
        (Some(k), _) => Some(parse_key(k)?),
        (None, Some(store)) => {
            let key_file = PathBuf::from(format!("{}.key", store.display()));
            if key_file.exists() {
                Some(parse_key(&read_key_file(&key_file)?)?)
            } else {
                let fresh = payment_channel::sign::LocalSigner::random().secret_bytes();
                write_key_file(&key_file, &hex::encode(fresh))?;
                Some(fresh)
            }
        }
        (None, None) => None,
    };
    Ok(Wallet::open(chain, identity, args.store.as_deref(), asset).await?)
}

/// Creates a key file readable by its owner only (mode 0600 on unix), refusing to overwrite one.
fn write_key_file(path: &Path, contents: &str) -> Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()?;
    Ok(())
}

/// Reads a key file, refusing one that its group or others can read (on unix).
fn read_key_file(path: &Path) -> Result<String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)?.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(format!(
                "{}: a secret key file must be readable by its owner only (mode {:o}); \
                 run `chmod 600 {}`",
                path.display(),
                mode & 0o777,
                path.display()
            )
            .into());
        }
    }
    Ok(std::fs::read_to_string(path)?)
}

fn create(
    path: &Path,
    output: Option<PathBuf>,
    piece_length: u32,
    announce: Option<String>,
) -> Result<()> {
    let meta = Metainfo::create(path, piece_length, announce)?;
    let output = output.unwrap_or_else(|| PathBuf::from(format!("{}.torrent", meta.info.name)));
    std::fs::write(&output, meta.to_bytes()?)?;
    println!(
        "created {} ({} bytes, {} pieces of {} bytes), info-hash {}",
        output.display(),
        meta.info.total_length(),
        meta.info.piece_count(),
        meta.info.piece_length,
        meta.info_hash_hex()
    );
    Ok(())
}

fn content_dir(torrent: &Path, dir: Option<PathBuf>) -> PathBuf {
    dir.unwrap_or_else(|| {
        torrent
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."))
    })
}

fn print_reports(mut rx: mpsc::UnboundedReceiver<PeerReport>) {
    tokio::spawn(async move {
        while let Some(r) = rx.recv().await {
            let dir = if r.outbound { "to" } else { "from" };
            let addr = r.addr.map(|a| a.to_string()).unwrap_or_default();
            match r.result {
                Ok(s) => eprintln!(
                    "peer {dir} {addr} ({}) done: up {} B, down {} B",
                    s.client.as_deref().unwrap_or("?"),
                    s.uploaded,
                    s.downloaded
                ),
                Err(e) => eprintln!("peer {dir} {addr}: {e}"),
            }
        }
    });
}

/// Resolves on ctrl-c or (Unix) SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

async fn seed_free(torrent: Arc<Torrent>, listen: SocketAddr) -> Result<()> {
    let listener = TcpListener::bind(listen).await?;
    let local = listener.local_addr()?;
    println!(
        "seeding {} on {local} (free)",
        torrent.meta().info_hash_hex()
    );
    let (tx, rx) = mpsc::unbounded_channel();
    print_reports(rx);
    let cfg = PeerConfig {
        listen_port: Some(local.port()),
        ..PeerConfig::default()
    };
    tokio::select! {
        r = session::serve(torrent, listener, cfg, Some(tx)) => r?,
        () = shutdown_signal() => eprintln!("stopping"),
    }
    Ok(())
}

fn coordinator_event(out: &Out, e: &CoordinatorEvent) {
    match e {
        CoordinatorEvent::PaymentReceived {
            account,
            channel_id,
            total,
            delta,
        } => out.event(
            json!({"event": "payment_received", "from": account.to_string(),
                   "channel": hex::encode(channel_id), "delta": delta, "total": total}),
            || format!("payment from {account}: +{} (total {})", out.units.format(*delta), out.units.format(*total)),
        ),
        CoordinatorEvent::ChannelOpened {
            account, channel_id, ..
        } => out.event(
            json!({"event": "channel_opened", "peer": account.to_string(), "channel": hex::encode(channel_id)}),
            || format!("channel 0x{} with {account} open", hex::encode(channel_id)),
        ),
        CoordinatorEvent::ChannelClosed {
            account,
            channel_id,
            payee_amount,
            ..
        } => out.event(
            json!({"event": "channel_closed", "peer": account.to_string(),
                   "channel": hex::encode(channel_id), "payee_amount": payee_amount}),
            || format!("channel 0x{} with {account} closed: payee gets {}", hex::encode(channel_id), out.units.format(*payee_amount)),
        ),
        CoordinatorEvent::ChannelRestored {
            account,
            channel_id,
            role,
            paid,
            state,
        } => out.event(
            json!({"event": "channel_restored", "peer": account.to_string(), "channel": hex::encode(channel_id),
                   "role": format!("{role:?}"), "paid": paid, "state": format!("{state:?}")}),
            || format!("channel 0x{} with {account} restored from the store ({state:?}, {} paid)", hex::encode(channel_id), out.units.format(*paid)),
        ),
        CoordinatorEvent::ProposalDeclined {
            channel_id,
            payee,
            reason,
        } => out.event(
            json!({"event": "proposal_declined", "peer": payee.to_string(),
                   "channel": hex::encode(channel_id), "reason": format!("{reason:?}")}),
            || format!("declined channel 0x{} from {payee}: {reason:?}", hex::encode(channel_id)),
        ),
        CoordinatorEvent::Closing {
            account, channel_id, ..
        } => out.event(
            json!({"event": "closing", "peer": account.to_string(), "channel": hex::encode(channel_id)}),
            || format!("closing channel 0x{} with {account}", hex::encode(channel_id)),
        ),
        CoordinatorEvent::Challenging {
            account, channel_id, ..
        } => out.event(
            json!({"event": "challenging", "peer": account.to_string(), "channel": hex::encode(channel_id)}),
            || format!("{account} stopped answering: challenging channel 0x{}", hex::encode(channel_id)),
        ),
        // The seller asked for money it may not have (the buyer's window, the channel's terms).
        CoordinatorEvent::PeerMisbehaved { peer, error }
            if matches!(
                error,
                PeerError::AskedBeyondWindow { .. }
                    | PeerError::TermsChanged { .. }
                    | PeerError::PriceAboveCap { .. }
            ) =>
        {
            out.event(
                json!({"event": "peer_misbehaved", "connection": peer.0,
                       "action": format!("{:?}", error.reaction()), "error": error.to_string()}),
                || format!("seller on connection {}: {error} ({:?})", peer.0, error.reaction()),
            );
        }
        _ => {}
    }
}

/// Prints a seller's coordinator event and remembers the payers it has channels with.
fn seller_event(out: &Out, buyers: &mut Vec<Address>, e: &CoordinatorEvent) {
    if let CoordinatorEvent::ChannelOpened { account, .. }
    | CoordinatorEvent::ChannelRestored { account, .. } = e
        && !buyers.contains(account)
    {
        buyers.push(*account);
    }
    coordinator_event(out, e);
}

async fn seed_paid(
    torrent: Arc<Torrent>,
    listen: SocketAddr,
    wallet: &Wallet,
    sell: SellTerms,
    liveness: LivenessConfig,
    out: &Out,
) -> Result<()> {
    // Channels an earlier run left in the store are adopted by the node (reported as
    // `channel_restored`): payments continue on them when their payer comes back; if it does
    // not, they are closed, then challenged with our largest voucher.
    let (node, mut events) =
        PaidNode::start(torrent.clone(), wallet, Some(sell.clone()), None, liveness).await?;
    // Payers whose figures `peer_status` reports.
    let mut buyers: Vec<Address> = Vec::new();
    // What the restore reported comes first (`channel_restored`).
    while let Ok(e) = events.try_recv() {
        seller_event(out, &mut buyers, &e);
    }
    let listener = TcpListener::bind(listen).await?;
    let local = listener.local_addr()?;
    out.event(
        json!({"event": "listening", "addr": local.to_string(), "account": node.account.to_string(),
               "info_hash": torrent.meta().info_hash_hex()}),
        || format!(
            "seeding {} on {local} as {} at {} per byte (trust {} B, free for stock peers {} B)",
            torrent.meta().info_hash_hex(), node.account, out.units.format(sell.price_per_byte), sell.trust_bytes,
            sell.free_bytes.unwrap_or(0)
        ),
    );
    let accept = {
        let n = node.node.clone();
        tokio::spawn(async move { n.accept(listener).await })
    };
    let mut status = tokio::time::interval(Duration::from_millis(250));
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            Some(e) = events.recv() => seller_event(out, &mut buyers, &e),
            _ = status.tick() => {
                for b in &buyers {
                    if let Some(i) = node.node.inspect(|c| c.identity(*b)) {
                        out.event(
                            json!({"event": "peer_status", "peer": b.to_string(),
                                   "served": i.bytes_served, "received": i.wei_received}),
                            String::new,
                        );
                    }
                }
                out.event(
                    json!({"event": "status", "served": torrent.counters().uploaded.load(Ordering::Relaxed)}),
                    String::new,
                );
            }
            () = &mut shutdown => break,
        }
    }
    accept.abort();
    out.event(json!({"event": "stopped"}), || "stopping".into());
    Ok(())
}

async fn get_free(
    torrent: Arc<Torrent>,
    peers: &[SocketAddr],
    dir: &Path,
    timeout: Duration,
    out: &Out,
) -> Result<()> {
    let total = torrent.meta().info.total_length();
    let pb = if out.json {
        ProgressBar::hidden()
    } else {
        progress_bar(total)
    };
    let (tx, rx) = mpsc::unbounded_channel();
    print_reports(rx);
    let started = Instant::now();
    let ticker = spawn_progress(&torrent, &pb, None);
    let done = tokio::time::timeout(
        timeout,
        session::download(torrent.clone(), peers, PeerConfig::default(), 30, Some(tx)),
    )
    .await;
    ticker.abort();
    finish_bar(&pb, &torrent);
    if done.is_err() || !torrent.is_complete() {
        return Err(format!(
            "incomplete: {} of {total} bytes",
            total - torrent.bytes_left()
        )
        .into());
    }
    summary_common(&torrent, total, started.elapsed().as_secs_f64());
    println!(
        "complete: every piece verified; saved under {}",
        dir.display()
    );
    Ok(())
}

#[allow(clippy::too_many_arguments)] // one per CLI option group; a struct would only rename them
async fn get_paid(
    torrent: Arc<Torrent>,
    peers: &[SocketAddr],
    dir: &Path,
    timeout: Duration,
    wallet: &Wallet,
    buy: BuyTerms,
    liveness: LivenessConfig,
    out: &Out,
) -> Result<()> {
    let total = torrent.meta().info.total_length();
    let window = buy.download_config().window_bytes();
    let (node, mut events) =
        PaidNode::start(torrent.clone(), wallet, None, Some(buy), liveness).await?;
    // What the restore reported comes first (`channel_restored`).
    while let Ok(e) = events.try_recv() {
        coordinator_event(out, &e);
    }
    out.event(
        json!({"event": "started", "account": node.account.to_string(), "window_bytes": window}),
        || {
            format!(
                "downloading {} as {} (buyer's window: {window} bytes)",
                torrent.meta().info_hash_hex(),
                node.account
            )
        },
    );
    let mut tasks = tokio::task::JoinSet::new();
    for &addr in peers {
        let (n, t) = (node.node.clone(), torrent.clone());
        // Reconnect whenever the connection ends (the seeder restarted, a network blip) until
        // the download is complete; the overall `--timeout` bounds it.
        tasks.spawn(async move {
            while !t.is_complete() {
                let _ = n.connect(addr, TORRENT).await;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }
    let pb = if out.json {
        ProgressBar::hidden()
    } else {
        progress_bar(total)
    };
    let paid_counter = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let ticker = spawn_progress(&torrent, &pb, Some(paid_counter.clone()));
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + timeout;
    let mut stats = DemoStats::default();
    let mut status = tokio::time::interval(Duration::from_millis(500));
    let mut complete_at = None;
    loop {
        tokio::select! {
            Some(e) = events.recv() => {
                stats.buyer(&e, &paid_counter);
                coordinator_event(out, &e);
                if let CoordinatorEvent::PaymentSent { amount, bytes, .. } = &e {
                    out.event(json!({"event": "payment_sent", "amount": amount, "bytes": bytes}), String::new);
                }
            }
            _ = status.tick() => {
                out.event(
                    json!({"event": "status", "have": total - torrent.bytes_left(), "total": total,
                           "paid": stats.paid, "payments": stats.payments}),
                    String::new,
                );
            }
            () = tokio::time::sleep_until(deadline) => {
                return Err(format!("timed out: {} of {total} bytes", total - torrent.bytes_left()).into());
            }
        }
        if torrent.is_complete() && complete_at.is_none() {
            complete_at = Some(started.elapsed());
        }
        // Done when the file is complete and every channel is closed and paid out.
        if complete_at.is_some()
            && (stats.payments == 0 || stats.buyer_closed.is_some())
            && node.all_settled().await
        {
            break;
        }
    }
    ticker.abort();
    finish_bar(&pb, &torrent);
    tasks.shutdown().await;
    let secs = complete_at.unwrap_or_default().as_secs_f64();
    out.event(
        json!({"event": "done", "bytes": total, "payments": stats.payments, "paid": stats.paid,
               "settled": true, "seconds": secs}),
        || {
            format!(
                "complete: {total} bytes in {secs:.2} s, every piece verified, saved under {}\n\
                 payments: {} ({}); channel closed and settled on chain",
                dir.display(),
                stats.payments,
                out.units.format(stats.paid)
            )
        },
    );
    Ok(())
}

fn progress_bar(total: u64) -> ProgressBar {
    let pb = ProgressBar::new(total);
    pb.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    pb
}

/// Deterministic pseudo-random content (xorshift), so reruns produce the same torrent.
fn generate(path: &Path, size: u64) -> Result<()> {
    use std::io::Write;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut left = size;
    let mut buf = vec![0u8; 1 << 16];
    while left > 0 {
        for chunk in buf.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes());
        }
        let n = left.min(buf.len() as u64) as usize;
        f.write_all(&buf[..n])?;
        left -= n as u64;
    }
    f.flush()?;
    Ok(())
}

async fn demo(size_mib: u64, free: bool, opts: &PayOpts, asset: Option<AssetArg>) -> Result<()> {
    let work = std::env::temp_dir().join(format!("paid-torrent-demo-{}", std::process::id()));
    let _cleanup = RemoveOnDrop(work.clone());
    let (seed_dir, leech_dir) = (work.join("seed"), work.join("leech"));
    std::fs::create_dir_all(&seed_dir)?;
    std::fs::create_dir_all(&leech_dir)?;
    let file = seed_dir.join("demo.bin");
    let size = size_mib << 20;
    generate(&file, size)?;
    let meta = Metainfo::create(&file, DEFAULT_PIECE_LENGTH, None)?;
    println!(
        "demo: {size_mib} MiB file, {} pieces, info-hash {}, payments {}",
        meta.info.piece_count(),
        meta.info_hash_hex(),
        if free { "off" } else { "on (simulated chain)" }
    );
    let seeder = Torrent::open(
        meta.clone(),
        &seed_dir,
        OpenMode::ReadOnly,
        Strategy::RarestFirst,
    )?;
    let leecher = Torrent::open(meta, &leech_dir, OpenMode::ReadWrite, Strategy::RarestFirst)?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let pb = progress_bar(size);
    let started = Instant::now();
    let ticker = spawn_progress(&leecher, &pb, None);
    if free {
        let server = tokio::spawn(session::serve(
            seeder,
            listener,
            PeerConfig::default(),
            None,
        ));
        session::download(leecher.clone(), &[addr], PeerConfig::default(), 3, None).await;
        server.abort();
        ticker.abort();
        finish_bar(&pb, &leecher);
        let secs = started.elapsed().as_secs_f64();
        summary_common(&leecher, size, secs);
        return verify_files(&file, &leech_dir.join("demo.bin"));
    }
    ticker.abort();

    let chain = SimulatedChain::new();
    let choice = ChainChoice::Simulated(chain.clone());
    let asset = match asset.unwrap_or(AssetArg::Native) {
        AssetArg::Native => Address::ZERO,
        AssetArg::Test => chain.deploy_token(payment_channel::TokenBehaviour::Standard, 18),
        AssetArg::Token(_) => {
            return Err(
                "the demo runs on the simulated chain: use `--asset test` for a token".into(),
            );
        }
    };
    let seller_wallet = Wallet::open(&choice, None, None, asset).await?;
    let buyer_wallet = Wallet::open(&choice, None, None, asset).await?;
    let units = buyer_wallet.units;
    let budget = opts
        .buy
        .budget
        .unwrap_or_else(|| u128::from(size) * opts.sell.price * 2);
    if asset == Address::ZERO {
        chain.fund(buyer_wallet.address(), U256::from(budget))?;
    } else {
        chain.mint(asset, buyer_wallet.address(), U256::from(budget))?;
    }
    let sell = SellTerms {
        price_per_byte: opts.sell.price,
        trust_bytes: opts.sell.trust,
        deposit: u128::from(size) * opts.sell.price + 1,
        free_bytes: None,
        challenge_duration: 3600,
    };
    let buy = BuyTerms {
        budget,
        max_price_per_byte: opts.buy.max_price.unwrap_or(opts.sell.price),
        granularity_bytes: opts.buy.granularity,
        max_pay_ahead_bytes: opts.buy.max_pay_ahead,
    };
    let (seller, mut seller_events) = PaidNode::start(
        seeder,
        &seller_wallet,
        Some(sell),
        None,
        LivenessConfig::default(),
    )
    .await?;
    let (buyer, mut buyer_events) = PaidNode::start(
        leecher.clone(),
        &buyer_wallet,
        None,
        Some(buy),
        LivenessConfig::default(),
    )
    .await?;
    let accept = {
        let node = seller.node.clone();
        tokio::spawn(async move { node.accept(listener).await })
    };
    let connect = {
        let node = buyer.node.clone();
        tokio::spawn(async move { node.connect(addr, TORRENT).await })
    };
    let paid = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let ticker = spawn_progress(&leecher, &pb, Some(paid.clone()));
    let mut stats = DemoStats::default();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
    // Until the download is done and both sides saw the channel close.
    while !(leecher.is_complete() && stats.buyer_closed.is_some() && stats.seller_closed.is_some())
    {
        tokio::select! {
            Some(e) = buyer_events.recv() => stats.buyer(&e, &paid),
            Some(e) = seller_events.recv() => stats.seller(&e),
            () = tokio::time::sleep_until(deadline) => return Err("demo timed out".into()),
        }
    }
    let secs = started.elapsed().as_secs_f64();
    ticker.abort();
    finish_bar(&pb, &leecher);
    // The payout is on chain once the seller's client has concluded and transferred.
    let payout_deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !(seller.all_settled().await && buyer.all_settled().await) {
        if tokio::time::Instant::now() > payout_deadline {
            return Err("channel not settled on chain".into());
        }
        let _ = seller.watch_chain().await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    accept.abort();
    connect.abort();
    let on_chain = chain.asset_balance_of(asset, seller.account);
    let served = seller
        .node
        .inspect(|c| c.identity(buyer.account).map(|i| i.bytes_served))
        .unwrap_or(0);
    summary_common(&leecher, size, secs);
    println!(
        "served:     {served} bytes (price {} per byte, trust {} bytes)",
        units.format(opts.sell.price),
        opts.sell.trust
    );
    println!(
        "payments:   {} ({} in total)",
        stats.payments,
        units.format(stats.paid)
    );
    println!(
        "channel:    closed (payee receives {}), settled on chain: seller balance {}",
        units.format(stats.seller_closed.unwrap_or(0)),
        units.format(u128::try_from(on_chain).unwrap_or(u128::MAX))
    );
    if U256::from(stats.paid) != on_chain {
        return Err(format!("paid {} but the seller holds {on_chain}", stats.paid).into());
    }
    verify_files(&file, &leech_dir.join("demo.bin"))
}

/// What the demo learns from the coordinators' events.
#[derive(Debug, Default)]
struct DemoStats {
    payments: u64,
    paid: u128,
    buyer_closed: Option<u128>,
    seller_closed: Option<u128>,
}

impl DemoStats {
    fn buyer(&mut self, e: &CoordinatorEvent, paid: &std::sync::atomic::AtomicU64) {
        match e {
            CoordinatorEvent::PaymentSent { amount, .. } => {
                self.payments += 1;
                self.paid += amount;
                paid.store(
                    u64::try_from(self.paid).unwrap_or(u64::MAX),
                    Ordering::Relaxed,
                );
            }
            CoordinatorEvent::ChannelClosed { payee_amount, .. } => {
                self.buyer_closed = Some(*payee_amount)
            }
            _ => {}
        }
    }

    fn seller(&mut self, e: &CoordinatorEvent) {
        if let CoordinatorEvent::ChannelClosed { payee_amount, .. } = e {
            self.seller_closed = Some(*payee_amount);
        }
    }
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn spawn_progress(
    torrent: &Arc<Torrent>,
    pb: &ProgressBar,
    paid: Option<Arc<std::sync::atomic::AtomicU64>>,
) -> tokio::task::JoinHandle<()> {
    let (t, pb) = (torrent.clone(), pb.clone());
    let total = t.meta().info.total_length();
    tokio::spawn(async move {
        loop {
            pb.set_position(total - t.bytes_left());
            if let Some(p) = &paid {
                pb.set_message(format!("paid {} wei", p.load(Ordering::Relaxed)));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}

fn finish_bar(pb: &ProgressBar, t: &Torrent) {
    pb.set_position(t.meta().info.total_length() - t.bytes_left());
    pb.finish();
}

fn summary_common(t: &Torrent, size: u64, secs: f64) {
    println!(
        "bytes:      {} received, {} in the file",
        t.counters().downloaded.load(Ordering::Relaxed),
        size
    );
    println!(
        "time:       {secs:.2} s, {:.1} MiB/s",
        size as f64 / f64::from(1 << 20) / secs
    );
}

fn verify_files(a: &Path, b: &Path) -> Result<()> {
    let (x, y) = (sha1(&std::fs::read(a)?), sha1(&std::fs::read(b)?));
    if x != y {
        println!("file hash:  MISMATCH");
        return Err("downloaded file differs".into());
    }
    println!("file hash:  verified (SHA-1 {})", hex::encode(x));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn key_files_are_owner_only_and_loose_ones_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("id.key");
        write_key_file(&path, "00").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(read_key_file(&path).unwrap(), "00");
        assert!(write_key_file(&path, "11").is_err(), "never overwritten");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(read_key_file(&path).is_err());
    }

    #[test]
    fn the_buyers_window_is_on_by_default() {
        let cli =
            Cli::try_parse_from(["paid-torrent", "get", "x.torrent", "--peer", "127.0.0.1:1"])
                .unwrap();
        let Command::Get { pay, .. } = cli.command else {
            panic!("not get");
        };
        let download = pay.terms(1 << 30).download_config();
        // 64 requests of 16 KiB in flight + 1 MiB paid ahead + one 1 MiB granularity.
        assert_eq!(download.in_flight_bytes, 1 << 20);
        assert_eq!(download.window_bytes(), 3 << 20);
    }
}
