//! `paid-torrent get`: download a torrent from the peers its trackers name and those given,
//! paying for it (or not), reporting each peer that cannot take part as it happens, and ending
//! early when no peer can sell under our terms; with `--seed`, keep selling afterwards.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use alloy_primitives::hex;
use indicatif::ProgressBar;
use paid_torrent_examples::magnet::Magnet;
use paid_torrent_examples::metainfo::Metainfo;
use paid_torrent_examples::paid::{BuyTerms, PaidNode, SellTerms, TORRENT, Wallet};
use paid_torrent_examples::peer::PeerConfig;
use paid_torrent_examples::picker::Strategy;
use paid_torrent_examples::session;
use paid_torrent_examples::storage::OpenMode;
use paid_torrent_examples::torrent::{Torrent, new_peer_id};
use paid_torrent_examples::tracker::{Announce, AnnounceEvent, Tiers};
use payment_channel::Address;
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use torrent_glue::adapter::Node;
use torrent_glue::coordinator::{NonPayingReason, PeerClass};
use torrent_glue::engine::{Direction, PeerKey};
use torrent_glue::{CoordinatorEvent, LivenessConfig};

use crate::Result;
use crate::failure::Failure;
use crate::options::{GetArgs, PeerAddr, TrackerOpts};
use crate::output::{
    DemoStats, Out, coordinator_event, finish_bar, print_reports, progress_bar, seller_event,
    spawn_progress, summary_common,
};
use crate::swarm::{Announcer, SwarmNews};

/// How long a peer whose connections keep dropping (after the TCP connection was made) is
/// retried before it counts as unable to sell; a refused or unreachable address counts at once.
pub(crate) const DROP_GRACE: Duration = Duration::from_secs(60);

/// How long without a received byte before "no peer can sell" is concluded.
const QUIET_BEFORE_GIVING_UP: Duration = Duration::from_secs(3);

/// What a connection task reports.
#[derive(Debug)]
enum PeerNews {
    Connected(SocketAddr),
    /// The address could not be reached (`definitive`) or the connection ended.
    Failed {
        addr: SocketAddr,
        reason: String,
        definitive: bool,
    },
}

/// What we know about one peer address.
#[derive(Debug, Clone)]
enum PeerState {
    Trying,
    Connected,
    Failed {
        reason: String,
        definitive: bool,
        since: Instant,
    },
}

impl PeerState {
    fn hopeless(&self) -> bool {
        match self {
            Self::Failed {
                definitive, since, ..
            } => *definitive || since.elapsed() >= DROP_GRACE,
            _ => false,
        }
    }
}

/// Why a live connection cannot sell to us.
#[derive(Debug, Clone)]
struct Unable {
    reason: String,
    /// Over our terms (or, without `--rpc`, stopped for good): nothing will change. Otherwise
    /// (stopped for good, stalled, broke the protocol: a restart of either side causes these,
    /// and the coordinator recovers with a new channel or connection) it is only reported.
    definitive: bool,
}

impl Unable {
    fn hopeless(&self) -> bool {
        self.definitive
    }
}

/// Every peer address tried, and the connections the coordinator found unable to sell.
#[derive(Debug, Default)]
struct PeerBook {
    addrs: BTreeMap<SocketAddr, PeerState>,
    ever_connected: usize,
    failures: usize,
    /// Live connections that cannot sell to us, with why.
    unable: HashMap<PeerKey, Unable>,
    accounts: HashMap<PeerKey, Address>,
}

impl PeerBook {
    fn update(&mut self, news: &PeerNews, out: &Out) {
        match news {
            PeerNews::Connected(addr) => {
                if !matches!(self.addrs.get(addr), Some(PeerState::Connected)) {
                    self.ever_connected += 1;
                }
                self.addrs.insert(*addr, PeerState::Connected);
                out.event(
                    json!({"event": "peer_connected", "peer": addr.to_string()}),
                    String::new,
                );
            }
            PeerNews::Failed {
                addr,
                reason,
                definitive,
            } => {
                self.failures += 1;
                // A dropped connection keeps the time of the first failure in a row.
                let since = match self.addrs.get(addr) {
                    Some(PeerState::Failed { since, .. }) => *since,
                    _ => Instant::now(),
                };
                self.addrs.insert(
                    *addr,
                    PeerState::Failed {
                        reason: reason.clone(),
                        definitive: *definitive,
                        since,
                    },
                );
                out.event(
                    json!({"event": "peer_failed", "peer": addr.to_string(), "reason": reason,
                           "retrying": !definitive}),
                    || format!("peer {addr}: {reason}"),
                );
            }
        }
    }

    /// Records what a coordinator event says about a seller's ability to sell to us.
    fn coordinator(&mut self, e: &CoordinatorEvent, out: &Out, same_process_chain: bool) {
        let flag = |book: &mut Self,
                    keys: Vec<PeerKey>,
                    account: Option<Address>,
                    reason: String,
                    definitive: bool| {
            for k in keys {
                // A definitive reason is not replaced by a passing one.
                if book.unable.get(&k).is_some_and(|u| u.definitive) {
                    continue;
                }
                book.unable.insert(
                    k,
                    Unable {
                        reason: reason.clone(),
                        definitive,
                    },
                );
            }
            out.event(
                json!({"event": "peer_unable", "account": account.map(|a| a.to_string()),
                       "reason": reason}),
                || match account {
                    Some(a) => format!("seller {a} cannot sell to us: {reason}"),
                    None => format!("a peer cannot sell to us: {reason}"),
                },
            );
        };
        let keys_of = |book: &Self, a: &Address| -> Vec<PeerKey> {
            book.accounts
                .iter()
                .filter(|(_, acc)| *acc == a)
                .map(|(k, _)| *k)
                .collect()
        };
        match e {
            CoordinatorEvent::PeerClassified { peer, class } => match class {
                PeerClass::Paying { account } => {
                    self.accounts.insert(*peer, *account);
                }
                PeerClass::NonPaying(reason) => {
                    // A stock client may still serve for free: reported, not flagged.
                    out.event(
                        json!({"event": "peer_not_paying", "connection": peer.0,
                               "reason": non_paying_reason(*reason)}),
                        || format!(
                            "connection {}: no payments with this peer ({}); it may still serve for free",
                            peer.0,
                            non_paying_reason(*reason)
                        ),
                    );
                }
                _ => {}
            },
            CoordinatorEvent::ProposalDeclined { payee, reason, .. } => {
                use torrent_glue::coordinator::DeclineReason as D;
                let keys = keys_of(self, payee);
                let over_terms = matches!(
                    reason,
                    D::PriceTooHigh
                        | D::PriceMismatch
                        | D::DepositTooLarge
                        | D::OverBudget
                        | D::Misbehaved
                );
                let why = if over_terms {
                    format!("its channel proposal is over our terms ({reason:?})")
                } else {
                    format!("we declined its channel proposal ({reason:?})")
                };
                flag(self, keys, Some(*payee), why, over_terms);
            }
            CoordinatorEvent::PermanentlyStopped { peer } => {
                let account = self.accounts.get(peer).copied();
                // Without --rpc a seller in another process never sees our deposit: it gives
                // up on the channel and stops us; nothing will change.
                let why = if same_process_chain {
                    "it stopped serving us for good (permanent-stop); without --rpc only a peer \
                     in this process can be paid: another process settles on its own simulated \
                     chain"
                } else {
                    "it stopped serving us for good (permanent-stop)"
                };
                flag(self, vec![*peer], account, why.into(), same_process_chain);
            }
            CoordinatorEvent::Stalled { account, .. } => {
                let keys = keys_of(self, account);
                flag(
                    self,
                    keys,
                    Some(*account),
                    "we paid and it sent nothing (stalled)".into(),
                    false,
                );
            }
            CoordinatorEvent::MessageDropped {
                account: Some(account),
                reason,
            } => {
                out.event(
                    json!({"event": "message_dropped", "account": account.to_string(),
                           "reason": format!("{reason:?}")}),
                    || format!("dropped a channel message of {account}: {reason:?}"),
                );
            }
            CoordinatorEvent::PeerMisbehaved { peer, error } => {
                let account = self.accounts.get(peer).copied();
                flag(
                    self,
                    vec![*peer],
                    account,
                    format!("it broke the protocol: {error}"),
                    false,
                );
            }
            _ => {}
        }
    }

    /// Why no peer can sell, one line per peer, if that is so: every address tried is
    /// hopeless or connected, and every live connection is flagged.
    fn nobody_can_sell(&self, live: &[PeerKey]) -> Option<String> {
        if self.addrs.is_empty() {
            return None;
        }
        let connected = self
            .addrs
            .values()
            .filter(|s| matches!(s, PeerState::Connected))
            .count();
        let all_addrs = self
            .addrs
            .values()
            .all(|s| s.hopeless() || matches!(s, PeerState::Connected));
        let all_live = live
            .iter()
            .all(|k| self.unable.get(k).is_some_and(Unable::hopeless));
        if !all_addrs || !all_live || live.len() < connected {
            return None;
        }
        let mut lines = vec!["no peer can sell under our terms:".to_owned()];
        for (addr, s) in &self.addrs {
            if let PeerState::Failed { reason, .. } = s {
                lines.push(format!("  {addr}: {reason}"));
            }
        }
        for k in live {
            if let Some(Unable { reason: r, .. }) = self.unable.get(k) {
                let who = self
                    .accounts
                    .get(k)
                    .map(|a| format!("seller {a}"))
                    .unwrap_or_else(|| format!("connection {}", k.0));
                lines.push(format!("  {who}: {r}"));
            }
        }
        Some(lines.join("\n"))
    }

    fn summary(&self, out: &Out) {
        let failed = self.addrs.values().filter(|s| s.hopeless()).count();
        out.event(
            json!({"event": "peers", "known": self.addrs.len(), "connected": self.ever_connected,
                   "failed": failed, "failures": self.failures, "unable": self.unable.len()}),
            || {
                format!(
                    "peers:      {} known, {} connected, {failed} unreachable, {} could not sell",
                    self.addrs.len(),
                    self.ever_connected,
                    self.unable.len()
                )
            },
        );
    }
}

fn non_paying_reason(r: NonPayingReason) -> &'static str {
    match r {
        NonPayingReason::NoExtensionProtocol => "no extension protocol (BEP 10)",
        NonPayingReason::NotAdvertised => "no paidStreamingExtension",
        NonPayingReason::NoAccount => "no valid pseAccount",
        NonPayingReason::HandshakeTimeout => "no extended handshake in time",
        NonPayingReason::SelfConnection => "it is ourselves",
        NonPayingReason::Unauthenticated => "no identity proof (original web3torrent)",
        NonPayingReason::AuthenticationFailed => "its identity proof did not verify",
        _ => "unknown",
    }
}

/// Connects to `addr` again and again until the torrent is complete: a refused or unreachable
/// address is retried with a growing pause, a dropped connection after a second.
async fn peer_task(
    node: Node,
    addr: SocketAddr,
    torrent: Arc<Torrent>,
    news: mpsc::UnboundedSender<PeerNews>,
) {
    let mut pause = Duration::from_secs(1);
    while !torrent.is_complete() {
        tracing::debug!(%addr, "connecting");
        match tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(addr)).await {
            Err(_) => {
                let _ = news.send(PeerNews::Failed {
                    addr,
                    reason: "cannot connect: timed out".into(),
                    definitive: true,
                });
                pause = (pause * 2).min(Duration::from_secs(30));
            }
            Ok(Err(e)) => {
                let _ = news.send(PeerNews::Failed {
                    addr,
                    reason: format!("cannot connect: {e}"),
                    definitive: true,
                });
                pause = (pause * 2).min(Duration::from_secs(30));
            }
            Ok(Ok(stream)) => {
                pause = Duration::from_secs(1);
                let _ = stream.set_nodelay(true);
                let _ = news.send(PeerNews::Connected(addr));
                let r = node
                    .run_connection(stream, Direction::Outbound, Some(TORRENT))
                    .await;
                if torrent.is_complete() {
                    return;
                }
                let (reason, definitive) = match r {
                    Ok(()) => ("connection closed".to_owned(), false),
                    Err(e @ torrent_glue::adapter::ConnectionError::UnknownTorrent) => {
                        (format!("{e}: it does not have this torrent"), true)
                    }
                    Err(e) => (format!("connection dropped: {e}"), false),
                };
                let _ = news.send(PeerNews::Failed {
                    addr,
                    reason,
                    definitive,
                });
            }
        }
        tokio::time::sleep(pause).await;
    }
}

/// Downloads into `args.dir`, resuming what verifies there; paid, it waits until its channels
/// are closed and paid out; with `--seed`, it then keeps selling.
pub(crate) async fn run(args: GetArgs, out: Out) -> Result<()> {
    let GetArgs {
        torrent,
        peers,
        dir,
        sequential,
        timeout,
        free,
        seed,
        listen,
        sell,
        trackers,
        pay,
        channels,
    } = args;
    let (mut given, unresolved) = resolve(&peers).await;
    for (p, e) in &unresolved {
        out.event(
            json!({"event": "peer_failed", "peer": p.to_string(), "reason": e, "retrying": false}),
            || format!("peer {p}: {e}"),
        );
    }
    let meta = if torrent.starts_with("magnet:") {
        let magnet: Magnet = torrent.parse().map_err(Failure::usage)?;
        let (meta, found) = fetch_metadata(&magnet, &given, &trackers, &out).await?;
        // The link's peers and those its trackers named are peers of the download too.
        given = found;
        meta
    } else {
        Metainfo::load(Path::new(&torrent))?
    };
    let strategy = if sequential {
        Strategy::Sequential
    } else {
        Strategy::RarestFirst
    };
    let t = Torrent::open(meta, &dir, OpenMode::ReadWrite, strategy)?;
    let listener = match seed {
        true => Some(crate::seed::bind(listen).await?),
        false => None,
    };
    let port = listener
        .as_ref()
        .and_then(|l| l.local_addr().ok())
        .map_or(0, |a| a.port());
    let swarm = crate::seed::announce(&t, &trackers, port, out)?;
    if given.is_empty() && swarm.is_none() {
        let why = if peers.is_empty() {
            Failure::usage(
                "no peer to download from: the torrent names no tracker we can use; give \
                 --peer HOST:PORT",
            )
        } else {
            Failure::network(format!(
                "no peer can be reached:\n{}",
                unresolved
                    .iter()
                    .map(|(p, e)| format!("  {p}: {e}"))
                    .collect::<Vec<_>>()
                    .join("\n")
            ))
        };
        return Err(why);
    }
    if let Some(l) = &listener
        && let Ok(a) = l.local_addr()
    {
        out.event(
            json!({"event": "listening", "addr": a.to_string(), "info_hash": t.meta().info_hash_hex()}),
            || format!("listening on {a} (pieces we have are offered to others)"),
        );
    }
    if free {
        return get_free(t, given, swarm, &dir, timeout, listener, &out).await;
    }
    let total = u128::from(t.meta().info.total_length());
    let buy = pay.terms(total);
    let sell = seed.then(|| SellTerms {
        price_per_byte: sell.price,
        trust_bytes: sell.trust,
        deposit: total * sell.price + 1,
        free_bytes: None,
        challenge_duration: 600,
    });
    let same_process_chain = channels.chain.rpc.is_none();
    let (wallet, out, hub) =
        crate::wallet::open_with_hub(&channels, out, sell.is_some(), Some(buy.budget), 600).await?;
    let paid = Paid {
        wallet: &wallet,
        buy,
        sell,
        liveness: channels.liveness.config(),
        same_process_chain,
        hub,
    };
    get_paid(t, given, swarm, &dir, timeout, listener, paid, &out).await
}

/// How long one peer has to give the metadata of a magnet link.
const METADATA_TIMEOUT: Duration = Duration::from_secs(20);

/// The torrent a magnet link names: its info dictionary fetched from the link's peers
/// (`x.pe`), `given` ones and those its trackers name in one announce, the first that matches
/// the info-hash. Returns it with every peer address known.
async fn fetch_metadata(
    magnet: &Magnet,
    given: &[SocketAddr],
    trackers: &TrackerOpts,
    out: &Out,
) -> Result<(Metainfo, Vec<SocketAddr>)> {
    let peer_id = new_peer_id(&magnet.info_hash);
    let linked: Vec<PeerAddr> = magnet.peers.iter().filter_map(|p| p.parse().ok()).collect();
    let (mut peers, _) = resolve(&linked).await;
    peers.extend(given);
    if !trackers.no_trackers && !magnet.trackers.is_empty() {
        let tiers: Vec<Vec<String>> = magnet.trackers.iter().map(|t| vec![t.clone()]).collect();
        let (mut tiers, bad) = Tiers::new(&tiers);
        for e in bad {
            out.event(
                json!({"event": "tracker_failed", "reason": e.to_string()}),
                || format!("tracker skipped: {e}"),
            );
        }
        let announce = Announce {
            info_hash: magnet.info_hash,
            peer_id,
            port: 0,
            uploaded: 0,
            downloaded: 0,
            // Unknown until the metadata arrives; not 0, which would make us a seed.
            left: 1,
            event: AnnounceEvent::Started,
            numwant: 50,
            key: rand::random(),
        };
        for (url, r) in tiers.announce(&announce).await {
            match r {
                Ok(r) => peers.extend(r.peers),
                Err(e) => out.event(
                    json!({"event": "tracker_failed", "tracker": url.to_string(),
                           "reason": e.to_string()}),
                    || format!("tracker {url}: {e}"),
                ),
            }
        }
    }
    let mut seen = Vec::new();
    peers.retain(|a| {
        let new = !seen.contains(a);
        seen.push(*a);
        new
    });
    if peers.is_empty() {
        return Err(Failure::usage(
            "no peer to fetch the metadata from: the magnet link names no peer and no tracker \
             that answered; give --peer HOST:PORT",
        ));
    }
    let mut failures = Vec::new();
    let mut misbehaved = false;
    let raw = paid_torrent_examples::magnet::fetch_metadata(
        magnet.info_hash,
        peer_id,
        &peers,
        METADATA_TIMEOUT,
        |addr, e| {
            misbehaved |= e.is_misbehaviour();
            out.event(
                json!({"event": "metadata_failed", "peer": addr.to_string(), "reason": e.to_string()}),
                || format!("peer {addr}: no metadata: {e}"),
            );
            failures.push(format!("  {addr}: {e}"));
        },
    )
    .await;
    let Some(raw) = raw else {
        let why = format!(
            "no peer gave the metadata of {}:\n{}",
            hex::encode(magnet.info_hash),
            failures.join("\n")
        );
        return Err(if misbehaved {
            Failure::verification(why)
        } else {
            Failure::network(why)
        });
    };
    let meta = magnet.metainfo(&raw).map_err(Failure::verification)?;
    out.event(
        json!({"event": "metadata", "info_hash": meta.info_hash_hex(), "name": meta.info.name,
               "bytes": meta.info.total_length()}),
        || {
            format!(
                "metadata of {} received ({} bytes of content)",
                meta.info.name,
                meta.info.total_length()
            )
        },
    );
    Ok((meta, peers))
}

/// `--peer` names resolved (the first address of each), and those that did not resolve.
async fn resolve(peers: &[PeerAddr]) -> (Vec<SocketAddr>, Vec<(PeerAddr, String)>) {
    let (mut ok, mut bad) = (Vec::new(), Vec::new());
    for p in peers {
        match p.resolve().await {
            Ok(a) if !a.is_empty() => {
                if !ok.contains(&a[0]) {
                    ok.push(a[0]);
                }
            }
            Ok(_) => bad.push((p.clone(), "the name has no address".into())),
            Err(e) => bad.push((p.clone(), format!("cannot resolve: {e}"))),
        }
    }
    (ok, bad)
}

async fn get_free(
    torrent: Arc<Torrent>,
    mut peers: Vec<SocketAddr>,
    swarm: Option<(Announcer, mpsc::UnboundedReceiver<SwarmNews>)>,
    dir: &Path,
    timeout: Duration,
    listener: Option<TcpListener>,
    out: &Out,
) -> Result<()> {
    let total = torrent.meta().info.total_length();
    // The plain loop takes its peers up front: those of the trackers' first answers.
    let (announcer, mut news) = match swarm {
        Some((a, n)) => (Some(a), Some(n)),
        None => (None, None),
    };
    if let Some(n) = &mut news {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while let Ok(Some(m)) = tokio::time::timeout_at(deadline, n.recv()).await {
            match m {
                SwarmNews::Peers(p) => peers.extend(p.into_iter().filter(|a| !is_us(a, &listener))),
                SwarmNews::Round => break,
            }
        }
    }
    peers.sort_unstable();
    peers.dedup();
    if peers.is_empty() {
        return Err(Failure::network(
            "no peer to download from: the trackers know none",
        ));
    }
    let pb = if out.json || out.quiet {
        ProgressBar::hidden()
    } else {
        progress_bar(total)
    };
    let (tx, rx) = mpsc::unbounded_channel();
    print_reports(rx);
    let serving = listener.map(|l| {
        let cfg = PeerConfig {
            listen_port: l.local_addr().ok().map(|a| a.port()),
            ..PeerConfig::default()
        };
        tokio::spawn(session::serve(torrent.clone(), l, cfg, Some(tx.clone())))
    });
    let started = Instant::now();
    let ticker = spawn_progress(&torrent, &pb, None);
    let done = tokio::time::timeout(
        timeout,
        session::download(torrent.clone(), &peers, PeerConfig::default(), 30, Some(tx)),
    )
    .await;
    ticker.abort();
    finish_bar(&pb, &torrent);
    if done.is_err() || !torrent.is_complete() {
        if let Some(a) = announcer {
            a.stop().await;
        }
        return Err(Failure::network(format!(
            "incomplete: {} of {total} bytes (timed out or every peer failed)",
            total - torrent.bytes_left()
        )));
    }
    summary_common(&torrent, total, started.elapsed().as_secs_f64());
    println!(
        "complete: every piece verified; saved under {}",
        dir.display()
    );
    if let Some(s) = serving {
        eprintln!("seeding (free) until ctrl-c");
        crate::seed::shutdown_signal().await;
        s.abort();
    }
    if let Some(a) = announcer {
        a.stop().await;
    }
    Ok(())
}

fn is_us(a: &SocketAddr, listener: &Option<TcpListener>) -> bool {
    listener
        .as_ref()
        .and_then(|l| l.local_addr().ok())
        .is_some_and(|l| l.port() == a.port() && (a.ip().is_loopback() || a.ip() == l.ip()))
}

/// The paid side of `get`.
struct Paid<'a> {
    wallet: &'a Wallet,
    buy: BuyTerms,
    sell: Option<SellTerms>,
    liveness: LivenessConfig,
    same_process_chain: bool,
    hub: Option<paid_torrent_examples::paid::HubTerms>,
}

#[allow(clippy::too_many_arguments)] // one per CLI option group; a struct would only rename them
async fn get_paid(
    torrent: Arc<Torrent>,
    given: Vec<SocketAddr>,
    swarm: Option<(Announcer, mpsc::UnboundedReceiver<SwarmNews>)>,
    dir: &Path,
    timeout: Duration,
    listener: Option<TcpListener>,
    paid: Paid<'_>,
    out: &Out,
) -> Result<()> {
    let total = torrent.meta().info.total_length();
    let window = paid.buy.download_config().window_bytes();
    let (node, mut events) = PaidNode::start_with_hub(
        torrent.clone(),
        paid.wallet,
        paid.sell.clone(),
        Some(paid.buy.clone()),
        paid.liveness,
        torrent_glue::IdentityConfig::default(),
        paid.hub.clone(),
    )
    .await?;
    // What the restore reported comes first (`channel_restored`).
    while let Ok(e) = events.try_recv() {
        coordinator_event(out, &e);
    }
    if let Some(h) = &node.hub {
        // Sellers that use the hub are paid through our ledger: wait until the hub joined it.
        let role = payment_channel::ledger::LedgerRole::Leader;
        let wait = tokio::time::Instant::now() + Duration::from_secs(120);
        let (id, funds) = loop {
            if let Some(open) = h.open_ledger(role).await {
                break open;
            }
            if tokio::time::Instant::now() > wait {
                return Err(Failure::chain("the ledger with the hub did not open"));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        out.event(
            json!({"event": "hub_ledger_open", "ledger": id.to_string(), "funds": funds.to_string()}),
            || format!("ledger with hub {} open ({funds} to spend)", h.hub().address),
        );
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
    let us = listener.as_ref().and_then(|l| l.local_addr().ok());
    let accept = listener.map(|l| {
        let n = node.node.clone();
        tokio::spawn(async move { n.accept(l).await })
    });
    let (announcer, mut swarm_news) = match swarm {
        Some((a, n)) => (Some(a), Some(n)),
        None => (None, None),
    };
    let (peer_tx, mut peer_rx) = mpsc::unbounded_channel();
    let mut book = PeerBook::default();
    let mut tasks = tokio::task::JoinSet::new();
    let mut add_peer = |book: &mut PeerBook, addr: SocketAddr| {
        let is_us = us.is_some_and(|l| {
            l.port() == addr.port()
                && (addr.ip().is_loopback() || addr.ip() == l.ip() || l.ip().is_unspecified())
        });
        if book.addrs.contains_key(&addr) || is_us {
            return;
        }
        book.addrs.insert(addr, PeerState::Trying);
        tasks.spawn(peer_task(
            node.node.clone(),
            addr,
            torrent.clone(),
            peer_tx.clone(),
        ));
    };
    for a in given {
        add_peer(&mut book, a);
    }
    let pb = if out.json || out.quiet {
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
    let (mut last_left, mut last_progress) = (torrent.bytes_left(), Instant::now());
    let mut buyers: Vec<Address> = Vec::new();
    let failure = loop {
        tokio::select! {
            Some(e) = events.recv() => {
                stats.buyer(&e, &paid_counter);
                book.coordinator(&e, out, paid.same_process_chain);
                if paid.sell.is_some() {
                    seller_event(out, &mut buyers, &e);
                } else {
                    coordinator_event(out, &e);
                }
                if let CoordinatorEvent::PaymentSent { amount, bytes, .. } = &e {
                    out.event(json!({"event": "payment_sent", "amount": amount, "bytes": bytes}), String::new);
                }
            }
            Some(n) = peer_rx.recv() => {
                pb.suspend(|| book.update(&n, out));
            }
            Some(n) = async { match &mut swarm_news { Some(r) => r.recv().await, None => None } } => {
                if let SwarmNews::Peers(addrs) = n {
                    for a in addrs {
                        add_peer(&mut book, a);
                    }
                }
            }
            _ = status.tick() => {
                out.event(
                    json!({"event": "status", "have": total - torrent.bytes_left(), "total": total,
                           "paid": stats.paid, "payments": stats.payments}),
                    String::new,
                );
                let left = torrent.bytes_left();
                if left != last_left {
                    (last_left, last_progress) = (left, Instant::now());
                }
                let live = node.node.connections();
                if complete_at.is_none()
                    && (live.is_empty() || last_progress.elapsed() >= QUIET_BEFORE_GIVING_UP)
                    && let Some(why) = book.nobody_can_sell(&live)
                {
                    break Some(Failure::network(why));
                }
            }
            () = tokio::time::sleep_until(deadline) => {
                break Some(Failure::network(format!(
                    "timed out: {} of {total} bytes",
                    total - torrent.bytes_left()
                )));
            }
        }
        if torrent.is_complete() && complete_at.is_none() {
            complete_at = Some(started.elapsed());
        }
        // Done when the file is complete and every channel we pay on is closed and paid out
        // (when seeding, channels others pay us on stay open).
        if complete_at.is_some()
            && (stats.payments == 0 || stats.buyer_closed.is_some())
            && (paid.sell.is_some() || node.all_settled().await)
        {
            break None;
        }
    };
    ticker.abort();
    finish_bar(&pb, &torrent);
    tasks.shutdown().await;
    book.summary(out);
    if let Some(f) = failure {
        if let Some(a) = announcer {
            a.stop().await;
        }
        return Err(f);
    }
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
    if accept.is_some() {
        out.event(json!({"event": "seeding"}), || {
            "seeding what we downloaded until ctrl-c".into()
        });
        let shutdown = crate::seed::shutdown_signal();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                Some(e) = events.recv() => seller_event(out, &mut buyers, &e),
                () = &mut shutdown => break,
            }
        }
        out.event(json!({"event": "stopped"}), || "stopping".into());
    }
    if let Some(a) = accept {
        a.abort();
    }
    if let Some(a) = announcer {
        a.stop().await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quiet() -> Out {
        Out {
            json: true,
            quiet: true,
            units: paid_torrent_examples::paid::Units::NATIVE,
        }
    }

    #[test]
    fn a_refused_peer_ends_the_wait_at_once() {
        let mut book = PeerBook::default();
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        book.addrs.insert(a, PeerState::Trying);
        assert!(book.nobody_can_sell(&[]).is_none(), "still trying");
        book.update(
            &PeerNews::Failed {
                addr: a,
                reason: "cannot connect: Connection refused".into(),
                definitive: true,
            },
            &quiet(),
        );
        let why = book.nobody_can_sell(&[]).unwrap();
        assert!(
            why.contains("127.0.0.1:1: cannot connect: Connection refused"),
            "{why}"
        );
    }

    #[test]
    fn a_dropped_peer_is_retried_for_the_grace_period() {
        let mut book = PeerBook::default();
        let a: SocketAddr = "127.0.0.1:2".parse().unwrap();
        book.update(
            &PeerNews::Failed {
                addr: a,
                reason: "connection dropped".into(),
                definitive: false,
            },
            &quiet(),
        );
        assert!(book.nobody_can_sell(&[]).is_none());
        if let Some(PeerState::Failed { since, .. }) = book.addrs.get_mut(&a) {
            *since -= DROP_GRACE;
        }
        assert!(book.nobody_can_sell(&[]).is_some());
    }

    #[test]
    fn a_live_seller_counts_until_flagged() {
        let mut book = PeerBook::default();
        let a: SocketAddr = "127.0.0.1:3".parse().unwrap();
        book.update(&PeerNews::Connected(a), &quiet());
        let k = PeerKey(7);
        let account = Address::repeat_byte(1);
        book.coordinator(
            &CoordinatorEvent::PeerClassified {
                peer: k,
                class: PeerClass::Paying { account },
            },
            &quiet(),
            false,
        );
        assert!(book.nobody_can_sell(&[k]).is_none());
        book.coordinator(
            &CoordinatorEvent::ProposalDeclined {
                channel_id: Default::default(),
                payee: account,
                reason: torrent_glue::coordinator::DeclineReason::PriceTooHigh,
            },
            &quiet(),
            false,
        );
        let why = book.nobody_can_sell(&[k]).unwrap();
        assert!(why.contains("PriceTooHigh"), "{why}");
        assert!(why.contains(&account.to_string()), "{why}");
    }

    #[test]
    fn a_permanent_stop_ends_the_wait_only_across_simulated_chains() {
        for same_process_chain in [false, true] {
            let mut book = PeerBook::default();
            let a: SocketAddr = "127.0.0.1:4".parse().unwrap();
            book.update(&PeerNews::Connected(a), &quiet());
            let k = PeerKey(9);
            book.coordinator(
                &CoordinatorEvent::PermanentlyStopped { peer: k },
                &quiet(),
                same_process_chain,
            );
            let why = book.nobody_can_sell(&[k]);
            assert_eq!(why.is_some(), same_process_chain);
            if same_process_chain {
                assert!(why.unwrap().contains("without --rpc"));
            } else {
                // A restarted seeder can stop us: reported, and the wait goes on.
                assert!(book.unable.contains_key(&k));
            }
        }
    }
}
