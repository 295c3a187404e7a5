//! `paid-torrent get`: download a torrent from peers given by address, paying for it (or not).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::ProgressBar;
use paid_torrent_examples::metainfo::Metainfo;
use paid_torrent_examples::paid::{BuyTerms, PaidNode, TORRENT, Wallet};
use paid_torrent_examples::peer::PeerConfig;
use paid_torrent_examples::picker::Strategy;
use paid_torrent_examples::session;
use paid_torrent_examples::storage::OpenMode;
use paid_torrent_examples::torrent::Torrent;
use serde_json::json;
use tokio::sync::mpsc;
use torrent_glue::{CoordinatorEvent, LivenessConfig};

use crate::Result;
use crate::options::{ChainArgs, GetArgs};
use crate::output::{
    DemoStats, Out, coordinator_event, finish_bar, print_reports, progress_bar, spawn_progress,
    summary_common,
};

/// Downloads into `args.out`, resuming what verifies there; paid, it waits until its channels
/// are closed and paid out.
pub(crate) async fn run(args: GetArgs, chain: &ChainArgs, out: Out) -> Result<()> {
    let GetArgs {
        torrent,
        peers,
        out: dir,
        sequential,
        timeout,
        free,
        pay,
        wallet,
        liveness,
    } = args;
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
    let (wallet, out) = crate::wallet::open(chain, &wallet, out).await?;
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
