//! `paid-torrent demo`: a generated file seeded to a downloader in this process, over loopback.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use alloy_primitives::hex;
use paid_torrent_examples::metainfo::{DEFAULT_PIECE_LENGTH, Metainfo, sha1};
use paid_torrent_examples::paid::{BuyTerms, ChainChoice, PaidNode, SellTerms, TORRENT, Wallet};
use paid_torrent_examples::peer::PeerConfig;
use paid_torrent_examples::picker::Strategy;
use paid_torrent_examples::session;
use paid_torrent_examples::storage::OpenMode;
use paid_torrent_examples::torrent::Torrent;
use payment_channel::{Address, SimulatedChain, U256};
use tokio::net::TcpListener;
use torrent_glue::LivenessConfig;

use crate::Result;
use crate::failure::Failure;
use crate::options::{AssetArg, DemoArgs};
use crate::output::{DemoStats, finish_bar, progress_bar, spawn_progress, summary_common};

/// Deterministic pseudo-random content (xorshift), so reruns produce the same torrent.
pub(crate) fn generate(path: &Path, size: u64) -> Result<()> {
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

/// Seeds a generated file of `args.size` bytes to a downloader in this process and checks the
/// payout on the simulated chain and the file.
pub(crate) async fn run(args: DemoArgs) -> Result<()> {
    let DemoArgs {
        size,
        free,
        asset,
        hub,
        seeders,
        pay: opts,
    } = args;
    if size == 0 {
        return Err(Failure::usage("--size: the demo needs at least one byte"));
    }
    if hub {
        return crate::demo_hub::run(size, seeders, &opts).await;
    }
    let ws = workspace("demo", size)?;
    println!(
        "demo: {} file, {} pieces, info-hash {}, payments {}",
        paid_torrent_examples::units::format_size(size),
        ws.meta.info.piece_count(),
        ws.meta.info_hash_hex(),
        if free { "off" } else { "on (simulated chain)" }
    );
    let seeder = ws.seeder()?;
    let leecher = ws.leecher()?;
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
        return ws.verify();
    }
    ticker.abort();

    let chain = SimulatedChain::new();
    let choice = ChainChoice::Simulated(chain.clone());
    let asset = match asset.unwrap_or(AssetArg::Native) {
        AssetArg::Native => Address::ZERO,
        AssetArg::Test => chain.deploy_token(payment_channel::TokenBehaviour::Standard, 18),
        AssetArg::Token(_) => {
            return Err(Failure::usage(
                "the demo runs on the simulated chain: use `--asset test` for a token",
            ));
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
            () = tokio::time::sleep_until(deadline) => return Err(Failure::network("demo timed out")),
        }
    }
    let secs = started.elapsed().as_secs_f64();
    ticker.abort();
    finish_bar(&pb, &leecher);
    // The payout is on chain once the seller's client has concluded and transferred.
    let payout_deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !(seller.all_settled().await && buyer.all_settled().await) {
        if tokio::time::Instant::now() > payout_deadline {
            return Err(Failure::chain("channel not settled on chain"));
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
        return Err(Failure::chain(format!(
            "paid {} but the seller holds {on_chain}",
            stats.paid
        )));
    }
    ws.verify()
}

pub(crate) struct RemoveOnDrop(pub(crate) PathBuf);

/// A demo's files: a generated file of its size in `seed_dir`, its metainfo, and an empty
/// `leech_dir` for the downloader; all of them removed when it drops.
pub(crate) struct Workspace {
    pub(crate) seed_dir: PathBuf,
    pub(crate) leech_dir: PathBuf,
    pub(crate) file: PathBuf,
    pub(crate) meta: Metainfo,
    _cleanup: RemoveOnDrop,
}

impl Workspace {
    /// The generated file, opened for seeding.
    pub(crate) fn seeder(&self) -> Result<Arc<Torrent>> {
        self.open(&self.seed_dir, OpenMode::ReadOnly)
    }

    /// The empty download folder, opened for the downloader.
    pub(crate) fn leecher(&self) -> Result<Arc<Torrent>> {
        self.open(&self.leech_dir, OpenMode::ReadWrite)
    }

    fn open(&self, dir: &Path, mode: OpenMode) -> Result<Arc<Torrent>> {
        Ok(Torrent::open(
            self.meta.clone(),
            dir,
            mode,
            Strategy::RarestFirst,
        )?)
    }

    /// Checks that the downloader's copy is the generated file.
    pub(crate) fn verify(&self) -> Result<()> {
        verify_files(&self.file, &self.leech_dir.join("demo.bin"))
    }
}

/// Makes a [`Workspace`] under the temporary directory (`paid-torrent-NAME-PID`).
pub(crate) fn workspace(name: &str, size: u64) -> Result<Workspace> {
    let work = std::env::temp_dir().join(format!("paid-torrent-{name}-{}", std::process::id()));
    let cleanup = RemoveOnDrop(work.clone());
    let (seed_dir, leech_dir) = (work.join("seed"), work.join("leech"));
    std::fs::create_dir_all(&seed_dir)?;
    std::fs::create_dir_all(&leech_dir)?;
    let file = seed_dir.join("demo.bin");
    generate(&file, size)?;
    let meta = Metainfo::create(&file, DEFAULT_PIECE_LENGTH, None)?;
    Ok(Workspace {
        seed_dir,
        leech_dir,
        file,
        meta,
        _cleanup: cleanup,
    })
}

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub(crate) fn verify_files(a: &Path, b: &Path) -> Result<()> {
    let (x, y) = (sha1(&std::fs::read(a)?), sha1(&std::fs::read(b)?));
    if x != y {
        println!("file hash:  MISMATCH");
        return Err(Failure::verification("downloaded file differs"));
    }
    println!("file hash:  verified (SHA-1 {})", hex::encode(x));
    Ok(())
}
