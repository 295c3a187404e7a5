//! `paid-torrent`: the sample client's command line. See `examples/README.md`.

#![forbid(unsafe_code)]

use std::error::Error;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use paid_torrent_examples::metainfo::{DEFAULT_PIECE_LENGTH, Metainfo, sha1};
use paid_torrent_examples::paid::{BuyTerms, ChainChoice, PaidNode, SellTerms, TORRENT, Wallet};
use paid_torrent_examples::peer::PeerConfig;
use paid_torrent_examples::picker::Strategy;
use paid_torrent_examples::session::{self, PeerReport};
use paid_torrent_examples::storage::OpenMode;
use paid_torrent_examples::torrent::Torrent;
use payment_channel::{SimulatedChain, U256};
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use torrent_glue::{CoordinatorEvent, LivenessConfig};

type Result<T> = std::result::Result<T, Box<dyn Error + Send + Sync>>;

/// A BitTorrent client whose peers pay each other for data over Nitro state channels.
#[derive(Debug, Parser)]
#[command(name = "paid-torrent", version, about)]
struct Cli {
    #[command(flatten)]
    chain: ChainArgs,
    #[command(subcommand)]
    command: Command,
}

/// Prices and payment sizes.
#[derive(Debug, Args)]
struct PayOpts {
    /// Seller: price in wei per byte.
    #[arg(long, default_value_t = 1)]
    price: u128,
    /// Seller: bytes served before the first payment.
    #[arg(long, default_value_t = 0)]
    trust: u64,
    /// Buyer: bytes bought per payment.
    #[arg(long, default_value_t = 1 << 20)]
    granularity: u64,
    /// Buyer: total wei it may spend (default: twice the price of the content).
    #[arg(long)]
    budget: Option<u128>,
    /// Buyer: highest accepted price in wei per byte (default: the price).
    #[arg(long)]
    max_price: Option<u128>,
}

/// Which chain settles the payment channels.
#[derive(Debug, Args)]
struct ChainArgs {
    /// JSON-RPC URL of an Ethereum node (e.g. a local anvil). Default: the simulated chain.
    #[arg(long, global = true, requires = "key")]
    rpc: Option<String>,
    /// Hex private key of the funded account used with `--rpc`.
    #[arg(long, global = true)]
    key: Option<String>,
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
    /// Seed a torrent whose content is on disk.
    Seed {
        /// The .torrent file.
        torrent: PathBuf,
        /// Folder that holds the content (default: the .torrent's folder).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:6881")]
        listen: SocketAddr,
    },
    /// Download a torrent from peers given by address.
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
    if cli.chain.rpc.is_some() {
        return Err("--rpc is not wired in yet (payments land with torrent-glue)".into());
    }
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
        } => seed(&torrent, dir, listen).await,
        Command::Get {
            torrent,
            peers,
            out,
            sequential,
            timeout,
        } => {
            get(
                &torrent,
                &peers,
                &out,
                sequential,
                Duration::from_secs(timeout),
            )
            .await
        }
        Command::Demo {
            size_mib,
            free,
            pay,
        } => demo(size_mib, free, &pay).await,
    }
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

async fn seed(torrent_path: &Path, dir: Option<PathBuf>, listen: SocketAddr) -> Result<()> {
    let meta = Metainfo::load(torrent_path)?;
    let dir = content_dir(torrent_path, dir);
    let torrent = Torrent::open(meta, &dir, OpenMode::ReadOnly, Strategy::RarestFirst)?;
    if !torrent.is_complete() {
        return Err(format!(
            "{}: the content in {} does not verify ({} of {} pieces)",
            torrent_path.display(),
            dir.display(),
            torrent.have().count(),
            torrent.piece_count()
        )
        .into());
    }
    let listener = TcpListener::bind(listen).await?;
    let local = listener.local_addr()?;
    println!("seeding {} on {local}", torrent.meta().info_hash_hex());
    let (tx, rx) = mpsc::unbounded_channel();
    print_reports(rx);
    let cfg = PeerConfig {
        listen_port: Some(local.port()),
        ..PeerConfig::default()
    };
    tokio::select! {
        r = session::serve(torrent, listener, cfg, Some(tx)) => r?,
        _ = tokio::signal::ctrl_c() => eprintln!("stopping"),
    }
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

async fn get(
    torrent_path: &Path,
    peers: &[SocketAddr],
    out: &Path,
    sequential: bool,
    timeout: Duration,
) -> Result<()> {
    let meta = Metainfo::load(torrent_path)?;
    let strategy = if sequential {
        Strategy::Sequential
    } else {
        Strategy::RarestFirst
    };
    let torrent = Torrent::open(meta, out, OpenMode::ReadWrite, strategy)?;
    let total = torrent.meta().info.total_length();
    let pb = progress_bar(total);
    let (tx, rx) = mpsc::unbounded_channel();
    print_reports(rx);
    let started = Instant::now();
    let ticker = {
        let (torrent, pb) = (torrent.clone(), pb.clone());
        tokio::spawn(async move {
            loop {
                pb.set_position(total - torrent.bytes_left());
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let done = tokio::time::timeout(
        timeout,
        session::download(torrent.clone(), peers, PeerConfig::default(), 30, Some(tx)),
    )
    .await;
    ticker.abort();
    pb.set_position(total - torrent.bytes_left());
    if done.is_err() || !torrent.is_complete() {
        pb.abandon();
        return Err(format!(
            "incomplete: {} of {} bytes",
            total - torrent.bytes_left(),
            total
        )
        .into());
    }
    pb.finish();
    println!(
        "complete: {} bytes in {:.2} s, every piece verified; saved under {}",
        total,
        started.elapsed().as_secs_f64(),
        out.display()
    );
    Ok(())
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

async fn demo(size_mib: u64, free: bool, opts: &PayOpts) -> Result<()> {
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
    let seller_wallet = Wallet::open(&choice, None, None).await?;
    let buyer_wallet = Wallet::open(&choice, None, None).await?;
    let budget = opts
        .budget
        .unwrap_or_else(|| u128::from(size) * opts.price * 2);
    chain.fund(buyer_wallet.address(), U256::from(budget))?;
    let sell = SellTerms {
        price_per_byte: opts.price,
        trust_bytes: opts.trust,
        deposit: u128::from(size) * opts.price + 1,
        free_bytes: None,
        challenge_duration: 3600,
    };
    let buy = BuyTerms {
        budget,
        max_price_per_byte: opts.max_price.unwrap_or(opts.price),
        granularity_bytes: opts.granularity,
    };
    let seller = PaidNode::start(
        seeder,
        &seller_wallet,
        Some(sell),
        None,
        LivenessConfig::default(),
    )
    .await?;
    let buyer = PaidNode::start(
        leecher.clone(),
        &buyer_wallet,
        None,
        Some(buy),
        LivenessConfig::default(),
    )
    .await?;
    let mut seller_events = seller.subscribe();
    let mut buyer_events = buyer.subscribe();
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
    let on_chain = chain.balance_of(seller.account);
    let served = seller
        .node
        .inspect(|c| c.identity(buyer.account).map(|i| i.bytes_served))
        .unwrap_or(0);
    summary_common(&leecher, size, secs);
    println!(
        "served:     {served} bytes (price {} wei/byte, trust {} bytes)",
        opts.price, opts.trust
    );
    println!(
        "payments:   {} ({} wei in total)",
        stats.payments, stats.paid
    );
    println!(
        "channel:    closed (payee receives {} wei), settled on chain: seller balance {} wei",
        stats.seller_closed.unwrap_or(0),
        on_chain
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
