//! Talking to the torrent's trackers while `seed` or `get` runs: `started`, re-announces on the
//! tracker's interval, `completed` once the download is verified, `stopped` on the way out.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use paid_torrent_examples::torrent::Torrent;
use paid_torrent_examples::tracker::{Announce, AnnounceEvent, Tiers};
use serde_json::json;
use tokio::sync::{mpsc, oneshot};

use crate::output::Out;

/// Wait before announcing again after every tracker failed (doubling up to [`MAX_RETRY`]).
const FIRST_RETRY: Duration = Duration::from_secs(15);
const MAX_RETRY: Duration = Duration::from_secs(30 * 60);
/// The shortest interval honoured, whatever a tracker says.
const MIN_INTERVAL: Duration = Duration::from_secs(10);

/// What the announcer tells the command.
#[derive(Debug)]
pub(crate) enum SwarmNews {
    /// Peers a tracker named.
    Peers(Vec<SocketAddr>),
    /// An announce round ended.
    Round,
}

/// The running announcer; [`Announcer::stop`] sends `stopped`.
#[derive(Debug)]
pub(crate) struct Announcer {
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Announcer {
    /// Announces `torrent` on `tiers` with our listening `port` (0: none) until stopped.
    pub(crate) fn spawn(
        mut tiers: Tiers,
        torrent: Arc<Torrent>,
        port: u16,
        out: Out,
        news: mpsc::UnboundedSender<SwarmNews>,
    ) -> Self {
        let (stop_tx, mut stop_rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let start_up = torrent.counters().uploaded.load(Ordering::Relaxed);
            let start_down = torrent.counters().downloaded.load(Ordering::Relaxed);
            let key: u32 = rand::random();
            let announce = |event| Announce {
                info_hash: torrent.info_hash(),
                peer_id: torrent.peer_id(),
                port,
                uploaded: torrent.counters().uploaded.load(Ordering::Relaxed) - start_up,
                downloaded: torrent.counters().downloaded.load(Ordering::Relaxed) - start_down,
                left: torrent.bytes_left(),
                event,
                numwant: 50,
                key,
            };
            let mut event = AnnounceEvent::Started;
            let mut was_complete = torrent.is_complete();
            let mut retry = FIRST_RETRY;
            loop {
                let wait = round(&mut tiers, &announce(event), &out, &news).await;
                let wait = match wait {
                    Some(w) => {
                        retry = FIRST_RETRY;
                        w.max(MIN_INTERVAL)
                    }
                    None => {
                        let w = retry;
                        retry = (retry * 2).min(MAX_RETRY);
                        w
                    }
                };
                event = AnnounceEvent::None;
                let next = tokio::time::Instant::now() + wait;
                // Wake early for `completed`.
                loop {
                    tokio::select! {
                        () = tokio::time::sleep_until(next) => break,
                        () = tokio::time::sleep(Duration::from_millis(250)), if !was_complete => {
                            if torrent.is_complete() {
                                was_complete = true;
                                event = AnnounceEvent::Completed;
                                break;
                            }
                        }
                        _ = &mut stop_rx => {
                            // A download that completed since the last look is reported
                            // before leaving (the tracker counts it).
                            if !was_complete && torrent.is_complete() {
                                let _ = tokio::time::timeout(
                                    Duration::from_secs(5),
                                    round(&mut tiers, &announce(AnnounceEvent::Completed), &out, &news),
                                )
                                .await;
                            }
                            let _ = tokio::time::timeout(
                                Duration::from_secs(5),
                                round(&mut tiers, &announce(AnnounceEvent::Stopped), &out, &news),
                            )
                            .await;
                            return;
                        }
                    }
                }
            }
        });
        Self {
            stop: Some(stop_tx),
            task,
        }
    }

    /// Sends `stopped` to the trackers (at most 5 s) and ends the announcer.
    pub(crate) async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = (&mut self.task).await;
    }
}

/// One announce to every tier; the interval to wait, `None` if no tracker answered.
async fn round(
    tiers: &mut Tiers,
    a: &Announce,
    out: &Out,
    news: &mpsc::UnboundedSender<SwarmNews>,
) -> Option<Duration> {
    let mut wait: Option<Duration> = None;
    let event = format!("{:?}", a.event).to_lowercase();
    for (url, r) in tiers.announce(a).await {
        match r {
            Ok(resp) => {
                out.event(
                    json!({"event": "tracker_announced", "tracker": url.to_string(), "announce": event,
                           "peers": resp.peers.len(), "interval": resp.interval.as_secs(),
                           "seeders": resp.seeders, "leechers": resp.leechers,
                           "warning": resp.warning}),
                    || {
                        format!(
                            "tracker {url}: {} peer(s), next announce in {} s{}",
                            resp.peers.len(),
                            resp.interval.as_secs(),
                            resp.warning
                                .as_deref()
                                .map(|w| format!(" (warning: {w})"))
                                .unwrap_or_default()
                        )
                    },
                );
                let interval = resp.interval.max(resp.min_interval.unwrap_or_default());
                wait = Some(wait.map_or(interval, |w| w.min(interval)));
                if !resp.peers.is_empty() {
                    let _ = news.send(SwarmNews::Peers(resp.peers));
                }
            }
            Err(e) => {
                let reason = crate::failure::Failure::network(e).report();
                let reason = reason
                    .trim_start_matches("error: ")
                    .replace("\n  caused by:", ":");
                out.event(
                    json!({"event": "tracker_failed", "tracker": url.to_string(), "announce": event,
                           "reason": reason}),
                    || format!("tracker {url}: {reason}"),
                );
            }
        }
    }
    let _ = news.send(SwarmNews::Round);
    wait
}
