//! `paid-torrent seed`: sell a torrent whose content is on disk (or serve it for free).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use paid_torrent_examples::metainfo::Metainfo;
use paid_torrent_examples::paid::{HubTerms, PaidNode, SellTerms, Wallet};
use paid_torrent_examples::peer::PeerConfig;
use paid_torrent_examples::picker::Strategy;
use paid_torrent_examples::session;
use paid_torrent_examples::storage::OpenMode;
use paid_torrent_examples::torrent::Torrent;
use paid_torrent_examples::tracker::Tiers;
use payment_channel::Address;
use payment_channel::ledger::LedgerRole;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use torrent_glue::LivenessConfig;

use crate::Result;
use crate::failure::Failure;
use crate::options::{SeedArgs, TrackerOpts};
use crate::output::{Out, print_reports, seller_event};
use crate::swarm::{Announcer, SwarmNews};

/// Re-verifies the content, then sells it (or, with `--free`, serves it with the plain loop)
/// until ctrl-c or SIGTERM.
pub(crate) async fn run(args: SeedArgs, out: Out) -> Result<()> {
    let SeedArgs {
        torrent,
        dir,
        listen,
        free,
        free_bytes,
        challenge_duration,
        trackers,
        pay,
        channels,
    } = args;
    let meta = Metainfo::load(&torrent)?;
    let dir = content_dir(&torrent, dir);
    let t = Torrent::open(meta, &dir, OpenMode::ReadOnly, Strategy::RarestFirst)?;
    if !t.is_complete() {
        return Err(Failure::verification(format!(
            "{}: the content in {} does not verify ({} of {} pieces)",
            torrent.display(),
            dir.display(),
            t.have().count(),
            t.piece_count()
        )));
    }
    if free {
        return seed_free(t, listen, &trackers, out).await;
    }
    let sell = SellTerms {
        price_per_byte: pay.price,
        trust_bytes: pay.trust,
        deposit: u128::from(t.meta().info.total_length()) * pay.price + 1,
        free_bytes,
        challenge_duration: challenge_duration.as_secs(),
    };
    let (wallet, out, hub) =
        crate::wallet::open_with_hub(&channels, out, true, None, challenge_duration.as_secs())
            .await?;
    seed_paid(
        t,
        listen,
        &trackers,
        &wallet,
        sell,
        channels.liveness.config(),
        hub,
        &out,
    )
    .await
}

/// Announces `torrent` on its trackers with the port we listen on, unless `--no-trackers`.
pub(crate) fn announce(
    torrent: &Arc<Torrent>,
    opts: &TrackerOpts,
    listening: u16,
    out: Out,
) -> Result<Option<(Announcer, mpsc::UnboundedReceiver<SwarmNews>)>> {
    if opts.no_trackers {
        return Ok(None);
    }
    let meta = torrent.meta();
    let urls: Vec<Vec<String>> = if meta.announce_list.is_empty() {
        meta.announce.iter().map(|u| vec![u.clone()]).collect()
    } else {
        meta.announce_list.clone()
    };
    let (tiers, bad) = Tiers::new(&urls);
    for e in bad {
        out.event(
            json!({"event": "tracker_failed", "reason": e.to_string()}),
            || format!("tracker skipped: {e}"),
        );
    }
    if tiers.is_empty() {
        return Ok(None);
    }
    let (tx, rx) = mpsc::unbounded_channel();
    let port = opts.announce_port.unwrap_or(listening);
    Ok(Some((
        Announcer::spawn(tiers, torrent.clone(), port, out, tx),
        rx,
    )))
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

/// Resolves on ctrl-c or (Unix) SIGTERM.
pub(crate) async fn shutdown_signal() {
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

async fn seed_free(
    torrent: Arc<Torrent>,
    listen: SocketAddr,
    trackers: &TrackerOpts,
    out: Out,
) -> Result<()> {
    let listener = bind(listen).await?;
    let local = listener.local_addr()?;
    let swarm = announce(&torrent, trackers, local.port(), out)?;
    out.event(
        json!({"event": "listening", "addr": local.to_string(),
               "info_hash": torrent.meta().info_hash_hex(), "free": true}),
        || {
            format!(
                "seeding {} on {local} (free)",
                torrent.meta().info_hash_hex()
            )
        },
    );
    let (tx, rx) = mpsc::unbounded_channel();
    print_reports(rx);
    let cfg = PeerConfig {
        listen_port: Some(local.port()),
        ..PeerConfig::default()
    };
    tokio::select! {
        r = session::serve(torrent, listener, cfg, Some(tx)) => r.map_err(Failure::network)?,
        () = shutdown_signal() => eprintln!("stopping"),
    }
    if let Some((a, _)) = swarm {
        a.stop().await;
    }
    Ok(())
}

/// Binds the listening socket; failing is the user's to fix (port in use, not our address).
pub(crate) async fn bind(listen: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(listen)
        .await
        .map_err(|e| Failure::usage(format!("cannot listen on {listen}: {e}")))
}

#[allow(clippy::too_many_arguments)] // one per CLI option group; a struct would only rename them
async fn seed_paid(
    torrent: Arc<Torrent>,
    listen: SocketAddr,
    trackers: &TrackerOpts,
    wallet: &Wallet,
    sell: SellTerms,
    liveness: LivenessConfig,
    hub: Option<HubTerms>,
    out: &Out,
) -> Result<()> {
    // Channels an earlier run left in the store are adopted by the node (reported as
    // `channel_restored`): payments continue on them when their payer comes back; if it does
    // not, they are closed, then challenged with our largest voucher.
    let (node, mut events) = PaidNode::start_with_hub(
        torrent.clone(),
        wallet,
        Some(sell.clone()),
        None,
        liveness,
        torrent_glue::IdentityConfig::default(),
        hub,
    )
    .await?;
    if let Some(h) = &node.hub {
        out.event(
            json!({"event": "hub", "hub": h.hub().address.to_string(), "at": h.hub().endpoint}),
            || {
                format!(
                    "paid through hub {} at {} when buyers use it",
                    h.hub().address,
                    h.hub().endpoint
                )
            },
        );
        // Buyers that use the hub are paid through it only once the hub funded our ledger.
        let (h, out) = (h.clone(), *out);
        tokio::spawn(async move {
            loop {
                if let Some((id, hub_funds)) = h.open_ledger(LedgerRole::Follower).await {
                    out.event(
                        json!({"event": "hub_ledger_open", "ledger": id.to_string(),
                               "hub_funds": hub_funds.to_string()}),
                        || format!("ledger with the hub open ({hub_funds} of the hub's to lock)"),
                    );
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
    }
    // Payers whose figures `peer_status` reports.
    let mut buyers: Vec<Address> = Vec::new();
    // What the restore reported comes first (`channel_restored`).
    while let Ok(e) = events.try_recv() {
        seller_event(out, &mut buyers, &e);
    }
    let listener = bind(listen).await?;
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
    let swarm = announce(&torrent, trackers, local.port(), *out)?;
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
            _ = status.tick() => report_status(&node, &buyers, &torrent, out),
            () = &mut shutdown => break,
        }
    }
    // The last word on what each buyer received: a payment that came after the last tick is
    // reported too.
    report_status(&node, &buyers, &torrent, out);
    accept.abort();
    if let Some((a, _)) = swarm {
        a.stop().await;
    }
    if let Some(h) = &node.hub {
        close_hub_ledger(h, out).await;
    }
    out.event(json!({"event": "stopped"}), || "stopping".into());
    Ok(())
}

/// One `peer_status` line per buyer (bytes served, wei received) and one `status` line.
fn report_status(node: &PaidNode, buyers: &[Address], torrent: &Torrent, out: &Out) {
    for b in buyers {
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

/// On the way out: closes our ledger with the hub if no virtual channel holds a guarantee in it
/// (the hub concludes it and we are paid out), waiting up to a minute; otherwise it stays open
/// (and is restored from `--store` next time).
async fn close_hub_ledger(h: &torrent_glue::adapter::HubBackend, out: &Out) {
    let Some((id, _)) = h.open_ledger(LedgerRole::Follower).await else {
        return;
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    // A buyer that just finished may still be removing its virtual channel's guarantee from the
    // ledger (the Remove is a round trip through the hub): until it lands, the ledger refuses
    // to close, so the close is retried until the same deadline.
    loop {
        match h.party_node().close_ledger(id).await {
            Ok(()) => break,
            Err(e) if tokio::time::Instant::now() >= deadline => {
                out.event(
                    json!({"event": "hub_ledger_kept", "reason": e.to_string()}),
                    || format!("ledger with the hub kept open: {e}"),
                );
                h.shutdown();
                return;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    while tokio::time::Instant::now() < deadline {
        let paid_out = h
            .party_node()
            .inspect(|p| p.ledger(&id).is_some_and(|l| l.chain().paid_out))
            .await;
        if paid_out {
            out.event(
                json!({"event": "hub_ledger_closed", "ledger": id.to_string()}),
                || "ledger with the hub closed and paid out".into(),
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    h.shutdown();
}
