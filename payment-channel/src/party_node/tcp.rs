//! [`TcpNet`]: parties over TCP. Frames are length-delimited (`tokio_util`'s
//! `LengthDelimitedCodec`, 4-byte big-endian length, at most [`TcpConfig::max_frame`] bytes: a
//! longer one closes the connection), each one JSON [`Frame`].
//!
//! # Handshake (both sides run the same steps)
//! 1. send `Hello { address, nonce }` with a fresh random 32-byte nonce;
//! 2. on the peer's `Hello`, send `Proof { signature }`: an EIP-191 signature of
//!    [`handshake_hash`]`(me, peer, my nonce, peer's nonce)` (a domain string, both addresses, both
//!    nonces);
//! 3. on the peer's `Proof`, recover the signer of `handshake_hash(peer, me, peer's nonce, my
//!    nonce)`: it must be the address the peer claimed. A proof from another session does not
//!    verify (our nonce is fresh), nor does our own proof reflected back.
//!
//! After that the peer's address is proven: every `Message` whose envelope `from` is not that
//! address (or whose `to` is not ours) is dropped and **strikes** the peer, as does a frame that
//! does not decode; at [`TcpConfig::max_strikes`] the connection is closed. Strikes are kept per
//! address for the life of the [`TcpNet`].
//!
//! [`run_node`] is the loop that joins a [`TcpNet`] and a [`PartyNode`]: messages in, chain
//! watches and resends on a timer. [`start_node`] binds a net, opens a node on it and spawns
//! that loop.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use alloy_primitives::{Address, B256, keccak256};
use async_trait::async_trait;
use bytes::Bytes;
use derive_setters::Setters;
use futures_util::{SinkExt, StreamExt};
use k256::elliptic_curve::rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

use super::{NodeConfig, NodeError, NodeMessage, PartyNode, Transport, TransportError};
use crate::chain::Chain;
use crate::error::Reaction;
use crate::sign::{Signature, SignatureError, Signer, recover_eth_message};
use crate::store::ChannelStore;
use crate::sync::lock;
use crate::virtual_channel::{PartyConfig, PartyEvent};

/// The domain string of [`handshake_hash`].
pub const HANDSHAKE_DOMAIN: &[u8] = b"paid-torrent party-node handshake v1";

/// Default [`TcpConfig::max_frame`]: 1 MiB.
pub const DEFAULT_MAX_FRAME: usize = 1 << 20;

/// What the signer of a handshake proof signs (EIP-191 over these 32 bytes):
/// `keccak256(HANDSHAKE_DOMAIN ‖ signer ‖ verifier ‖ signer's nonce ‖ verifier's nonce)`.
pub fn handshake_hash(
    signer: Address,
    verifier: Address,
    signer_nonce: &B256,
    verifier_nonce: &B256,
) -> B256 {
    keccak256(
        [
            HANDSHAKE_DOMAIN,
            signer.as_slice(),
            verifier.as_slice(),
            signer_nonce.as_slice(),
            verifier_nonce.as_slice(),
        ]
        .concat(),
    )
}

/// One frame on the wire (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Frame {
    /// Handshake step 1.
    Hello {
        /// The address we claim.
        address: Address,
        /// A fresh random nonce.
        nonce: B256,
    },
    /// Handshake step 2.
    Proof {
        /// EIP-191 signature of [`handshake_hash`].
        signature: Signature,
    },
    /// After the handshake.
    Message(NodeMessage),
}

/// Settings of a [`TcpNet`].
#[derive(Debug, Clone, PartialEq, Eq, Setters)]
#[setters(prefix = "with_")]
#[non_exhaustive]
pub struct TcpConfig {
    /// Largest frame accepted (and sent), bytes.
    pub max_frame: usize,
    /// Longest a handshake may take.
    pub handshake_timeout: Duration,
    /// Strikes after which a peer's connection is closed.
    pub max_strikes: u32,
}

impl Default for TcpConfig {
    fn default() -> Self {
        Self {
            max_frame: DEFAULT_MAX_FRAME,
            handshake_timeout: Duration::from_secs(10),
            max_strikes: 3,
        }
    }
}

/// Why a connection failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetError {
    /// The socket failed.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// The peer did not prove its address (or broke the handshake).
    #[error("handshake: {0}")]
    Handshake(&'static str),
    /// No connection to that address, and no known place to dial it.
    #[error("not connected to {0}")]
    NotConnected(Address),
    /// Our own signer failed.
    #[error("signer: {0}")]
    Signer(#[from] SignatureError),
}

/// A message from an authenticated peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inbound {
    /// The proven address of the sender.
    pub from: Address,
    /// What it sent.
    pub msg: NodeMessage,
}

struct Conn {
    id: u64,
    tx: mpsc::UnboundedSender<Bytes>,
    tasks: [JoinHandle<()>; 2],
}

impl Drop for Conn {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

struct NetInner {
    signer: Arc<dyn Signer>,
    config: TcpConfig,
    local: SocketAddr,
    conns: Mutex<HashMap<Address, Conn>>,
    book: Mutex<HashMap<Address, SocketAddr>>,
    strikes: Mutex<HashMap<Address, u32>>,
    inbound: mpsc::UnboundedSender<Inbound>,
    next_id: AtomicU64,
    accept: Mutex<Option<JoinHandle<()>>>,
}

/// Authenticated TCP connections to parties, by address. See the [module docs](self). Cheap to
/// clone.
#[derive(Clone)]
pub struct TcpNet {
    inner: Arc<NetInner>,
}

impl std::fmt::Debug for TcpNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpNet")
            .field("address", &self.inner.signer.address())
            .field("local", &self.inner.local)
            .finish_non_exhaustive()
    }
}

type Wire = Framed<TcpStream, LengthDelimitedCodec>;

impl TcpNet {
    /// Listens on `listen` and accepts peers in the background. Returns the net and the stream
    /// of messages from authenticated peers.
    pub async fn bind(
        signer: Arc<dyn Signer>,
        listen: SocketAddr,
        config: TcpConfig,
    ) -> Result<(Self, mpsc::UnboundedReceiver<Inbound>), NetError> {
        let listener = TcpListener::bind(listen).await?;
        let local = listener.local_addr()?;
        let (tx, rx) = mpsc::unbounded_channel();
        let net = Self {
            inner: Arc::new(NetInner {
                signer,
                config,
                local,
                conns: Mutex::new(HashMap::new()),
                book: Mutex::new(HashMap::new()),
                strikes: Mutex::new(HashMap::new()),
                inbound: tx,
                next_id: AtomicU64::new(0),
                accept: Mutex::new(None),
            }),
        };
        let weak = Arc::downgrade(&net.inner);
        let task = tokio::spawn(accept_loop(listener, weak));
        *lock(&net.inner.accept) = Some(task);
        Ok((net, rx))
    }

    /// Where we listen.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local
    }

    /// Our address.
    pub fn address(&self) -> Address {
        self.inner.signer.address()
    }

    /// Dials `addr`, runs the handshake and keeps the connection; returns the peer's proven
    /// address. Later sends to that address re-dial `addr` if the connection dropped.
    pub async fn connect(&self, addr: SocketAddr) -> Result<Address, NetError> {
        let stream = TcpStream::connect(addr).await?;
        let peer = self.inner.clone().start(stream).await?;
        lock(&self.inner.book).insert(peer, addr);
        Ok(peer)
    }

    /// Dials again every peer we dialed before whose connection dropped (a restarted hub cannot
    /// dial its payers and payees: they come back to it).
    pub async fn reconnect(&self) {
        let book: Vec<(Address, SocketAddr)> = lock(&self.inner.book)
            .iter()
            .map(|(a, s)| (*a, *s))
            .collect();
        for (peer, addr) in book {
            if !self.is_connected(peer)
                && let Err(e) = self.connect(addr).await
            {
                tracing::debug!(%peer, %addr, error = %e, "reconnect failed");
            }
        }
    }

    /// Whether a connection to `peer` is up.
    pub fn is_connected(&self, peer: Address) -> bool {
        lock(&self.inner.conns)
            .get(&peer)
            .is_some_and(|c| !c.tx.is_closed())
    }

    /// Strikes `peer` has (see the [module docs](self)).
    pub fn strikes(&self, peer: Address) -> u32 {
        lock(&self.inner.strikes).get(&peer).copied().unwrap_or(0)
    }

    /// Strikes `peer` (e.g. for a message its party refused as garbage); closes its connection
    /// at [`TcpConfig::max_strikes`].
    pub fn strike(&self, peer: Address) {
        self.inner.strike(peer);
    }

    /// Stops listening, closes every connection and forgets where peers were dialed (nothing
    /// is sent any more).
    pub fn shutdown(&self) {
        if let Some(t) = lock(&self.inner.accept).take() {
            t.abort();
        }
        lock(&self.inner.book).clear();
        lock(&self.inner.conns).clear();
    }
}

async fn accept_loop(listener: TcpListener, net: Weak<NetInner>) {
    loop {
        let Ok((stream, from)) = listener.accept().await else {
            continue;
        };
        let Some(inner) = net.upgrade() else {
            return;
        };
        tokio::spawn(async move {
            if let Err(e) = inner.start(stream).await {
                tracing::debug!(%from, error = %e, "inbound connection refused");
            }
        });
    }
}

async fn send_frame(wire: &mut Wire, frame: &Frame) -> Result<(), NetError> {
    let bytes = serde_json::to_vec(frame).map_err(|e| NetError::Io(e.into()))?;
    wire.send(Bytes::from(bytes)).await?;
    Ok(())
}

async fn recv_frame(wire: &mut Wire) -> Result<Frame, NetError> {
    let bytes = wire
        .next()
        .await
        .ok_or(NetError::Handshake("closed during the handshake"))??;
    serde_json::from_slice(&bytes).map_err(|_| NetError::Handshake("not a handshake frame"))
}

impl NetInner {
    fn strike(&self, peer: Address) {
        let n = {
            let mut s = lock(&self.strikes);
            let n = s.entry(peer).or_default();
            *n = n.saturating_add(1);
            *n
        };
        tracing::warn!(%peer, strikes = n, "peer struck");
        if n >= self.config.max_strikes {
            lock(&self.conns).remove(&peer);
        }
    }

    async fn handshake(&self, wire: &mut Wire) -> Result<Address, NetError> {
        let me = self.signer.address();
        let mut raw = [0u8; 32];
        OsRng.fill_bytes(&mut raw);
        let nonce = B256::from(raw);
        send_frame(wire, &Frame::Hello { address: me, nonce }).await?;
        let Frame::Hello {
            address: peer,
            nonce: peer_nonce,
        } = recv_frame(wire).await?
        else {
            return Err(NetError::Handshake("expected hello"));
        };
        if peer == me || peer.is_zero() {
            return Err(NetError::Handshake("claims our address or zero"));
        }
        if peer_nonce == nonce {
            return Err(NetError::Handshake("our nonce reflected"));
        }
        let signature =
            self.signer
                .sign_eth_message(&handshake_hash(me, peer, &nonce, &peer_nonce))?;
        send_frame(wire, &Frame::Proof { signature }).await?;
        let Frame::Proof { signature } = recv_frame(wire).await? else {
            return Err(NetError::Handshake("expected proof"));
        };
        let signer =
            recover_eth_message(&handshake_hash(peer, me, &peer_nonce, &nonce), &signature)
                .map_err(|_| NetError::Handshake("proof does not verify"))?;
        if signer != peer {
            return Err(NetError::Handshake("proof is not the claimed address's"));
        }
        Ok(peer)
    }

    /// Handshake on `stream`, then keeps it as the connection to the proven peer.
    async fn start(self: Arc<Self>, stream: TcpStream) -> Result<Address, NetError> {
        let codec = LengthDelimitedCodec::builder()
            .max_frame_length(self.config.max_frame)
            .new_codec();
        let mut wire = Framed::new(stream, codec);
        let peer = tokio::time::timeout(self.config.handshake_timeout, self.handshake(&mut wire))
            .await
            .map_err(|_| NetError::Handshake("timed out"))??;
        if lock(&self.strikes)
            .get(&peer)
            .is_some_and(|n| *n >= self.config.max_strikes)
        {
            return Err(NetError::Handshake("peer struck out"));
        }
        let (mut sink, mut stream) = wire.split();
        let (tx, mut rx) = mpsc::unbounded_channel::<Bytes>();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let writer = tokio::spawn(async move {
            while let Some(b) = rx.recv().await {
                if sink.send(b).await.is_err() {
                    break;
                }
            }
        });
        let weak = Arc::downgrade(&self);
        let me = self.signer.address();
        let reader = tokio::spawn(async move {
            while let Some(item) = stream.next().await {
                let Some(net) = weak.upgrade() else { return };
                let Ok(bytes) = item else {
                    // Oversized frame or a broken socket: the connection ends.
                    net.strike(peer);
                    break;
                };
                match serde_json::from_slice::<Frame>(&bytes) {
                    Ok(Frame::Message(NodeMessage::Envelope(env)))
                        if env.from != peer || env.to != me =>
                    {
                        net.strike(peer);
                    }
                    Ok(Frame::Message(msg)) => {
                        let _ = net.inbound.send(Inbound { from: peer, msg });
                    }
                    Ok(_) | Err(_) => net.strike(peer),
                }
                if !net.is_live(peer, id) {
                    break;
                }
            }
            if let Some(net) = weak.upgrade() {
                net.drop_conn(peer, id);
            }
        });
        let old = lock(&self.conns).insert(
            peer,
            Conn {
                id,
                tx,
                tasks: [writer, reader],
            },
        );
        drop(old);
        tracing::debug!(%peer, "peer connected");
        Ok(peer)
    }

    fn is_live(&self, peer: Address, id: u64) -> bool {
        lock(&self.conns).get(&peer).is_some_and(|c| c.id == id)
    }

    fn drop_conn(&self, peer: Address, id: u64) {
        let mut conns = lock(&self.conns);
        if conns.get(&peer).is_some_and(|c| c.id == id) {
            // Aborting the reader that runs this is harmless: it returns without awaiting.
            conns.remove(&peer);
        }
    }

    fn sender(&self, to: Address) -> Option<mpsc::UnboundedSender<Bytes>> {
        lock(&self.conns)
            .get(&to)
            .filter(|c| !c.tx.is_closed())
            .map(|c| c.tx.clone())
    }
}

#[async_trait]
impl Transport<NodeMessage> for TcpNet {
    async fn send(&self, to: Address, msg: NodeMessage) -> Result<(), TransportError> {
        let bytes = Bytes::from(serde_json::to_vec(&Frame::Message(msg))?);
        if bytes.len() > self.inner.config.max_frame {
            return Err("frame larger than the cap".into());
        }
        if let Some(tx) = self.inner.sender(to)
            && tx.send(bytes.clone()).is_ok()
        {
            return Ok(());
        }
        let addr = lock(&self.inner.book).get(&to).copied();
        let Some(addr) = addr else {
            return Err(Box::new(NetError::NotConnected(to)));
        };
        let peer = self.connect(addr).await?;
        if peer != to {
            return Err(Box::new(NetError::Handshake("another address answered")));
        }
        self.inner
            .sender(to)
            .ok_or(NetError::NotConnected(to))?
            .send(bytes)
            .map_err(|_| NetError::NotConnected(to))?;
        Ok(())
    }
}

/// Where a node started by [`start_node`] listens, and how often its driver ([`run_node`])
/// watches the chain (`tick`) and redials and resends (`resend_every`).
#[derive(Debug, Clone, PartialEq, Eq, Setters)]
#[setters(prefix = "with_")]
#[non_exhaustive]
pub struct TcpNodeConfig {
    /// The address [`TcpNet::bind`] listens on.
    pub listen: SocketAddr,
    /// The net's limits.
    pub tcp: TcpConfig,
    /// Between two [`PartyNode::watch_chain`] calls.
    pub tick: Duration,
    /// Between two rounds of [`TcpNet::reconnect`] and [`PartyNode::resend`].
    pub resend_every: Duration,
}

impl TcpNodeConfig {
    /// Listens on `listen` with the default [`TcpConfig`]; the driver's two periods.
    pub fn new(listen: SocketAddr, tick: Duration, resend_every: Duration) -> Self {
        Self {
            listen,
            tcp: TcpConfig::default(),
            tick,
            resend_every,
        }
    }
}

/// A node started by [`start_node`]: the node, its net, its events and the task of its driver.
#[derive(Debug)]
pub struct RunningNode {
    /// The node (cheap to clone).
    pub node: PartyNode,
    /// Its net (cheap to clone).
    pub net: TcpNet,
    /// The node's events, as [`PartyNode::open`] returns them.
    pub events: mpsc::UnboundedReceiver<PartyEvent>,
    /// The [`run_node`] task; it ends when the net's inbound stream closes.
    pub driver: JoinHandle<()>,
}

/// Binds a [`TcpNet`] as `tcp` says, opens a [`PartyNode`] on it and spawns its driver
/// ([`run_node`]) on the current tokio runtime. The other arguments are those of
/// [`PartyNode::open`] (the signer also proves the net's handshakes). Nothing runs after an
/// error ([`NodeError::Net`] when the net cannot listen).
pub async fn start_node(
    tcp: TcpNodeConfig,
    signer: Arc<dyn Signer>,
    party_config: PartyConfig,
    chain: Arc<dyn Chain>,
    store: Arc<dyn ChannelStore>,
    config: NodeConfig,
) -> Result<RunningNode, NodeError> {
    let (net, inbound) = TcpNet::bind(signer.clone(), tcp.listen, tcp.tcp).await?;
    let transport = Arc::new(net.clone());
    let (node, events) =
        PartyNode::open(signer, party_config, chain, store, transport, config).await?;
    let driver = tokio::spawn(run_node(
        node.clone(),
        net.clone(),
        inbound,
        tcp.tick,
        tcp.resend_every,
    ));
    Ok(RunningNode {
        node,
        net,
        events,
        driver,
    })
}

/// Runs `node` on `net`'s messages until `inbound` closes: each message is handed to the node
/// (a peer whose message the party calls garbage is struck); every `tick` the chain is watched;
/// every `resend_every` dropped connections we dialed are dialed again and the node resends
/// what its state implies.
pub async fn run_node(
    node: PartyNode,
    net: TcpNet,
    mut inbound: mpsc::UnboundedReceiver<Inbound>,
    tick: Duration,
    resend_every: Duration,
) {
    let mut watch = tokio::time::interval(tick);
    watch.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut resend = tokio::time::interval(resend_every);
    resend.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            m = inbound.recv() => {
                let Some(Inbound { from, msg }) = m else { return };
                if let Err(e) = node.handle_message(from, msg).await {
                    let disconnect = matches!(&e, NodeError::Party(p) if p.reaction() != Reaction::Ignore);
                    tracing::debug!(peer = %from, error = %e, "message refused");
                    if disconnect {
                        net.strike(from);
                    }
                }
            }
            _ = watch.tick() => {
                if let Err(e) = node.watch_chain().await {
                    tracing::warn!(error = %e, "chain watch");
                }
            }
            _ = resend.tick() => {
                net.reconnect().await;
                if let Err(e) = node.resend().await {
                    tracing::warn!(error = %e, "resend");
                }
            }
        }
    }
}
