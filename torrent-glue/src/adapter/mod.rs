//! Reference tokio adapter: the engine side of the sample client (feature `adapter`).
//!
//! A [`Node`] owns one [`Coordinator`] behind a mutex (never held across an `.await`) and runs
//! each peer connection as a task that owns its stream, framed with paid-wire's
//! [`HandshakeCodec`](paid_wire::codec::HandshakeCodec) then
//! [`PeerCodec`](paid_wire::codec::PeerCodec). Like `lightning-net-tokio` for LDK, it is a thin
//! shell: every decision is the coordinator's; the shell moves bytes, reads and stores blocks
//! through [`PieceSource`] / [`PieceSink`], keeps time, and hands channel work to a
//! [`ChannelBackend`].
//!
//! ```text
//!  TcpStream ⇄ peer task ──handle_*──▶ Coordinator ──channel commands──▶ channel task ──▶ ChannelBackend
//!            ◀─ engine commands (per-peer queue) ─┘        ▲                                  │
//!                                                          └───────── ChannelEvents ◀─────────┘
//! ```
//!
//! # Ordering
//! Engine commands are dispatched under the coordinator lock into per-connection queues, so each
//! connection performs its commands in exactly the order the coordinator emitted them (a START
//! precedes the pieces it unblocks; a STOP follows the pieces served before it). A served block
//! is reported with [`Coordinator::handle_bytes_sent`] once it is written to the socket.
//!
//! Channel commands are executed one at a time, in order, by one task. That keeps payments and
//! channel messages ordered; a slow chain transaction delays other channel work (a production
//! embedding would shard by channel).
//!
//! # Time
//! Every input carries `tokio::time::Instant::now()` converted to `std`, so tests may pause tokio's
//! clock. A timer task calls [`Coordinator::handle_timeout`] at
//! [`Coordinator::poll_timeout`] or every [`NodeConfig::tick`], whichever is sooner, and gives
//! the backend a [`ChannelBackend::tick`].

mod client;
mod hub;
mod peer;
mod store;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use derive_setters::Setters;
use tokio::sync::mpsc;

pub use self::client::{ClientBackend, DEFAULT_PRESIGN_AHEAD};
pub use self::hub::{HubBackend, HubConfig, HubError};
pub use self::peer::ConnectionError;
pub use self::store::{
    BLOCK_LEN, Delivery, MemoryTorrent, PieceSink, PieceSource, PieceStore, TorrentMeta,
};
use crate::channel::{ChannelCommand, ChannelEvent};
use crate::coordinator::{Coordinator, CoordinatorEvent};
use crate::engine::{Direction, EngineCommand, PeerKey, TorrentKey};
use crate::error::UsageError;

/// Settings of a [`Node`].
#[derive(Debug, Clone, PartialEq, Eq, Setters)]
#[setters(prefix = "with_")]
#[non_exhaustive]
pub struct NodeConfig {
    /// Our BitTorrent peer id.
    pub peer_id: [u8; 20],
    /// Advertise and use BEP 6 (rejects, have-all/none, allowed-fast). Default `true`.
    pub fast: bool,
    /// Requests kept outstanding per connection while downloading. Default 16.
    pub pipeline: usize,
    /// Longest wait between two [`Coordinator::handle_timeout`] calls. Default 1 s.
    pub tick: Duration,
    /// Send a keep-alive after this long without writing. Default 60 s.
    pub keepalive: Duration,
    /// Our local BEP 10 id for `paidStreamingExtension`. Default 3 (web3torrent used 2 or 3).
    pub pse_local_id: u8,
    /// Largest frame accepted from a peer. Default paid-wire's (a 1 MiB piece).
    pub max_frame_len: u32,
    /// `v` in our extended handshake.
    pub client_name: String,
    /// Longest wait for the peer's BitTorrent handshake after the connection opens; a peer
    /// that connects and sends nothing is dropped with
    /// [`ConnectionError::HandshakeTimeout`]. Default 10 s.
    pub handshake_timeout: Duration,
    /// Drop a connection after this long without receiving anything (not even a keep-alive,
    /// which BEP 3 peers send every two minutes) with [`ConnectionError::Idle`]. Default 3 min.
    pub idle_timeout: Option<Duration>,
}

impl NodeConfig {
    /// Defaults with this peer id.
    pub fn new(peer_id: [u8; 20]) -> Self {
        Self {
            peer_id,
            fast: true,
            pipeline: 16,
            tick: Duration::from_secs(1),
            keepalive: Duration::from_secs(60),
            pse_local_id: 3,
            max_frame_len: paid_wire::codec::DEFAULT_MAX_FRAME_LEN,
            client_name: concat!("torrent-glue/", env!("CARGO_PKG_VERSION")).into(),
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Some(Duration::from_secs(180)),
        }
    }
}

/// Performs channel work for a [`Node`]: the bridge to a payment-channel client.
///
/// [`execute`](Self::execute) is called for one command at a time, in order; what happens is
/// reported through `events` (now, or later from the backend's own tasks: proposals,
/// payments received, channel messages to send, closures).
#[async_trait]
pub trait ChannelBackend: Send + Sync + 'static {
    /// Performs `command`.
    async fn execute(&self, command: ChannelCommand, events: &ChannelEvents);

    /// Called every [`NodeConfig::tick`] (e.g. to watch the chain). Default: nothing.
    async fn tick(&self, _events: &ChannelEvents) {}

    /// Called by [`Node::restore`]: report the channels a previous run left in the durable
    /// store as [`ChannelEvent::Restored`], so the coordinator carries on with them instead of
    /// opening new ones. Default: nothing.
    async fn restore(&self, _events: &ChannelEvents) {}
}

/// Reports [`ChannelEvent`]s to the [`Node`] that owns it. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ChannelEvents {
    node: Node,
}

impl ChannelEvents {
    /// Feeds `event` to the coordinator and performs what follows.
    pub fn report(&self, event: ChannelEvent) {
        let now = now();
        self.node.with_coordinator(|c| {
            let _ = c.handle_channel_event(now, event);
        });
    }
}

/// What the channel task does, in order.
enum ChannelWork {
    Command(ChannelCommand),
    Restore(tokio::sync::oneshot::Sender<()>),
}

/// Commands for the calling connection, returned by [`Node::call`].
#[derive(Debug, Default)]
struct Own {
    /// Already queued before the call.
    queued: Vec<EngineCommand>,
    /// Emitted by the call.
    emitted: Vec<EngineCommand>,
}

struct Torrent {
    info_hash: [u8; 20],
    store: Arc<dyn PieceStore>,
    /// Pieces verified here, for every connection of the torrent to announce (BEP 3 `have`).
    verified: tokio::sync::broadcast::Sender<u32>,
}

struct Inner {
    config: NodeConfig,
    coordinator: Mutex<Coordinator>,
    peers: Mutex<HashMap<PeerKey, mpsc::UnboundedSender<EngineCommand>>>,
    torrents: Mutex<HashMap<TorrentKey, Torrent>>,
    channel_tx: mpsc::UnboundedSender<ChannelWork>,
    subscribers: Mutex<Vec<mpsc::UnboundedSender<CoordinatorEvent>>>,
    next_key: AtomicU64,
    wake: tokio::sync::Notify,
}

/// A client: one coordinator, its connections, its channel backend. Cheap to clone.
#[derive(Clone)]
pub struct Node {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("peer_id", &self.inner.config.peer_id)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Short critical sections over plain data: keep going after a panic elsewhere.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The current time as the coordinator sees it (tokio's clock, so paused tests work).
pub fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

impl Node {
    /// Starts a node: spawns the timer task and the channel task on the current runtime.
    pub fn start(
        coordinator: Coordinator,
        config: NodeConfig,
        backend: Arc<dyn ChannelBackend>,
    ) -> Self {
        let (channel_tx, mut channel_rx) = mpsc::unbounded_channel();
        let node = Self {
            inner: Arc::new(Inner {
                config,
                coordinator: Mutex::new(coordinator),
                peers: Mutex::new(HashMap::new()),
                torrents: Mutex::new(HashMap::new()),
                channel_tx,
                subscribers: Mutex::new(Vec::new()),
                next_key: AtomicU64::new(1),
                wake: tokio::sync::Notify::new(),
            }),
        };
        let weak = Arc::downgrade(&node.inner);
        let driver = (weak.clone(), backend.clone());
        tokio::spawn(async move {
            let (weak, backend) = driver;
            while let Some(work) = channel_rx.recv().await {
                let Some(inner) = weak.upgrade() else { return };
                let events = ChannelEvents {
                    node: Node { inner },
                };
                match work {
                    ChannelWork::Command(command) => backend.execute(command, &events).await,
                    ChannelWork::Restore(done) => {
                        backend.restore(&events).await;
                        let _ = done.send(());
                    }
                }
            }
        });
        tokio::spawn(async move {
            let mut next_tick = now();
            loop {
                let Some(inner) = weak.upgrade() else { return };
                let tick = inner.config.tick;
                let deadline = lock(&inner.coordinator).poll_timeout();
                let until = deadline.map_or(next_tick, |d| d.min(next_tick));
                let woken = tokio::select! {
                    () = tokio::time::sleep_until(tokio::time::Instant::from_std(until)) => false,
                    () = inner.wake.notified() => true,
                };
                if woken {
                    continue; // an input may have moved the deadline: recompute it
                }
                let node = Node { inner };
                let at = now();
                if deadline.is_some_and(|d| d <= at) || at >= next_tick {
                    node.with_coordinator(|c| c.handle_timeout(at));
                }
                if at >= next_tick {
                    next_tick = at + tick;
                    backend.tick(&node.channel_events()).await;
                }
            }
        });
        node
    }

    /// Picks up the channels a previous run left in the backend's durable store
    /// ([`ChannelBackend::restore`]) and returns once the coordinator has adopted them. Call it
    /// once after [`start`](Self::start) (and after [`subscribe`](Self::subscribe), to see
    /// the [`ChannelRestored`](CoordinatorEvent::ChannelRestored) events), before connecting
    /// to or accepting peers: otherwise a returning peer gets a second channel and the restored
    /// one is only settled on chain.
    pub async fn restore(&self) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.inner.channel_tx.send(ChannelWork::Restore(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    /// The configuration.
    pub fn config(&self) -> &NodeConfig {
        &self.inner.config
    }

    /// A handle for the channel backend to report events with.
    pub fn channel_events(&self) -> ChannelEvents {
        ChannelEvents { node: self.clone() }
    }

    /// A stream of the coordinator's [`CoordinatorEvent`]s from now on.
    pub fn subscribe(&self) -> mpsc::UnboundedReceiver<CoordinatorEvent> {
        let (tx, rx) = mpsc::unbounded_channel();
        lock(&self.inner.subscribers).push(tx);
        rx
    }

    /// Registers a torrent under `key`, identified on the wire by `info_hash`.
    pub fn add_torrent(
        &self,
        key: TorrentKey,
        info_hash: [u8; 20],
        store: Arc<dyn PieceStore>,
    ) -> Result<(), UsageError> {
        let remaining = store.remaining();
        self.with_coordinator(|c| c.add_torrent(key, remaining))?;
        let (verified, _) = tokio::sync::broadcast::channel(1024);
        lock(&self.inner.torrents).insert(
            key,
            Torrent {
                info_hash,
                store,
                verified,
            },
        );
        Ok(())
    }

    /// Runs `f` on the coordinator, then dispatches what it emitted: engine commands to their
    /// connections, channel commands to the channel task, events to subscribers.
    pub fn with_coordinator<R>(&self, f: impl FnOnce(&mut Coordinator) -> R) -> R {
        self.call(None, f).0
    }

    /// Reads the coordinator (no dispatch).
    pub fn inspect<R>(&self, f: impl FnOnce(&Coordinator) -> R) -> R {
        f(&lock(&self.inner.coordinator))
    }

    /// Like [`with_coordinator`](Self::with_coordinator), but the commands for `own` are not
    /// queued: what was already queued for it and what `f` emitted for it are returned, in
    /// that order, for the connection task to perform in place.
    fn call<R>(
        &self,
        own: Option<(PeerKey, &mut mpsc::UnboundedReceiver<EngineCommand>)>,
        f: impl FnOnce(&mut Coordinator) -> R,
    ) -> (R, Own) {
        let mut coordinator = lock(&self.inner.coordinator);
        let mut mine = Own::default();
        let own_key = own.map(|(key, rx)| {
            while let Ok(cmd) = rx.try_recv() {
                mine.queued.push(cmd);
            }
            key
        });
        let result = f(&mut coordinator);
        let peers = lock(&self.inner.peers);
        while let Some(cmd) = coordinator.poll_engine_command() {
            if Some(cmd.peer()) == own_key {
                mine.emitted.push(cmd);
            } else if let Some(tx) = peers.get(&cmd.peer()) {
                let _ = tx.send(cmd);
            }
        }
        drop(peers);
        while let Some(cmd) = coordinator.poll_channel_command() {
            let _ = self.inner.channel_tx.send(ChannelWork::Command(cmd));
        }
        let mut subscribers = lock(&self.inner.subscribers);
        while let Some(event) = coordinator.poll_event() {
            subscribers.retain(|s| s.send(event.clone()).is_ok());
        }
        drop(subscribers);
        drop(coordinator);
        self.inner.wake.notify_one();
        (result, mine)
    }

    /// The connections currently running.
    pub fn connections(&self) -> Vec<PeerKey> {
        let mut keys: Vec<PeerKey> = lock(&self.inner.peers).keys().copied().collect();
        keys.sort_unstable();
        keys
    }

    /// Asks a connection to close (it ends after the commands already queued for it).
    pub fn disconnect(&self, peer: PeerKey) {
        if let Some(tx) = lock(&self.inner.peers).get(&peer) {
            let _ = tx.send(EngineCommand::Disconnect {
                peer,
                reason: crate::engine::DisconnectReason::Application,
            });
        }
    }

    fn register(&self) -> (PeerKey, mpsc::UnboundedReceiver<EngineCommand>) {
        let key = PeerKey(self.inner.next_key.fetch_add(1, Ordering::Relaxed));
        let (tx, rx) = mpsc::unbounded_channel();
        lock(&self.inner.peers).insert(key, tx);
        (key, rx)
    }

    fn unregister(&self, key: PeerKey) {
        lock(&self.inner.peers).remove(&key);
    }

    fn torrent_by_hash(&self, info_hash: &[u8; 20]) -> Option<(TorrentKey, Arc<dyn PieceStore>)> {
        lock(&self.inner.torrents)
            .iter()
            .find(|(_, t)| t.info_hash == *info_hash)
            .map(|(k, t)| (*k, t.store.clone()))
    }

    fn torrent(&self, key: TorrentKey) -> Option<([u8; 20], Arc<dyn PieceStore>)> {
        lock(&self.inner.torrents)
            .get(&key)
            .map(|t| (t.info_hash, t.store.clone()))
    }

    /// Pieces of `key` verified from now on (see [`Node::piece_verified`]).
    fn verified_pieces(&self, key: TorrentKey) -> Option<tokio::sync::broadcast::Receiver<u32>> {
        lock(&self.inner.torrents)
            .get(&key)
            .map(|t| t.verified.subscribe())
    }

    /// Tells every connection of `key` that `piece` is now verified here: each sends BEP 3
    /// `have` to its peer (unless the peer has it already). The peer loop calls it for pieces
    /// it downloads; call it for pieces completed another way.
    pub fn piece_verified(&self, key: TorrentKey, piece: u32) {
        if let Some(t) = lock(&self.inner.torrents).get(&key) {
            let _ = t.verified.send(piece);
        }
    }

    /// Connects to `addr` for `torrent` and runs the connection until it ends.
    pub async fn connect(
        &self,
        addr: std::net::SocketAddr,
        torrent: TorrentKey,
    ) -> Result<(), ConnectionError> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        let _ = stream.set_nodelay(true);
        self.run_connection(stream, Direction::Outbound, Some(torrent))
            .await
    }

    /// Accepts connections on `listener` forever, each on its own task.
    pub async fn accept(&self, listener: tokio::net::TcpListener) -> std::io::Result<()> {
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            let node = self.clone();
            tokio::spawn(async move {
                let _ = node.run_connection(stream, Direction::Inbound, None).await;
            });
        }
    }

    /// Runs one connection over any byte stream until it ends. Outbound connections name their
    /// torrent; inbound ones are matched by the info hash the peer sends.
    pub async fn run_connection<S>(
        &self,
        stream: S,
        direction: Direction,
        torrent: Option<TorrentKey>,
    ) -> Result<(), ConnectionError>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send,
    {
        peer::run(self.clone(), stream, direction, torrent).await
    }
}
