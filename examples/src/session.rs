//! Running a torrent: accept incoming peers, connect to peers given by address, wait for the
//! download to finish. Each connection is one tokio task running [`crate::peer`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::error::PeerError;
use crate::peer::{self, PeerConfig, PeerSummary};
use crate::torrent::Torrent;

/// The outcome of one connection, for the user interface.
#[derive(Debug)]
pub struct PeerReport {
    /// Remote address.
    pub addr: Option<SocketAddr>,
    /// Whether we opened the connection.
    pub outbound: bool,
    /// Summary, or why it failed.
    pub result: Result<PeerSummary, PeerError>,
}

/// Where connection outcomes go (dropped reports are fine).
pub type Reports = mpsc::UnboundedSender<PeerReport>;

/// Accepts connections on `listener` forever, one task per peer.
pub async fn serve(
    torrent: Arc<Torrent>,
    listener: TcpListener,
    cfg: PeerConfig,
    reports: Option<Reports>,
) -> std::io::Result<()> {
    let mut tasks = JoinSet::new();
    loop {
        let (stream, addr) = listener.accept().await?;
        let (torrent, cfg, reports) = (torrent.clone(), cfg.clone(), reports.clone());
        tasks.spawn(async move {
            let result = peer::accept(torrent, stream, cfg).await;
            if let Some(r) = reports {
                let _ = r.send(PeerReport {
                    addr: Some(addr),
                    outbound: false,
                    result,
                });
            }
        });
        // Reap finished tasks so the set does not grow without bound.
        while tasks.try_join_next().is_some() {}
    }
}

/// Connects to every address in `peers` (retrying failed or ended connections every second,
/// at most `attempts` times per address) until the torrent is complete.
pub async fn download(
    torrent: Arc<Torrent>,
    peers: &[SocketAddr],
    cfg: PeerConfig,
    attempts: u32,
    reports: Option<Reports>,
) {
    let mut tasks = JoinSet::new();
    for &addr in peers {
        let (torrent, cfg, reports) = (torrent.clone(), cfg.clone(), reports.clone());
        tasks.spawn(async move {
            for _ in 0..attempts {
                if torrent.is_complete() {
                    return;
                }
                let result = peer::connect(torrent.clone(), addr, cfg.clone()).await;
                if let Some(r) = &reports {
                    let _ = r.send(PeerReport {
                        addr: Some(addr),
                        outbound: true,
                        result,
                    });
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }
    tokio::select! {
        () = torrent.wait_complete() => {}
        () = async { while tasks.join_next().await.is_some() {} } => {}
    }
    tasks.shutdown().await;
}
