//! One connection: BitTorrent handshake, extended handshake, then the message loop.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use paid_wire::codec::{HandshakeCodec, PeerCodec};
use paid_wire::error::CodecError;
use paid_wire::extended::{ExtendedHandshake, ExtensionIds, HANDSHAKE_ID};
use paid_wire::handshake::{Handshake, Reserved};
use paid_wire::message::{BlockRequest, Message};
use paid_wire::metadata::{self, MetadataMessage};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_util::codec::Framed;

use super::store::{Delivery, PieceStore};
use super::{Node, Own, now};
use crate::EXTENSION_NAME;
use crate::engine::{
    Direction, EngineCommand, PeerExtendedHandshake, PeerInfo, PeerKey, RequestDecision, TorrentKey,
};
use crate::error::{Error, PeerReaction, UsageError};

/// Why a connection ended abnormally. A disconnect asked for by the coordinator, or a clean
/// end of stream, is `Ok(())`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectionError {
    /// The socket failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// The peer sent bytes that do not decode (the stream is unusable).
    #[error("peer wire error: {0}")]
    Codec(#[from] CodecError),
    /// The stream ended before the BitTorrent handshake completed.
    #[error("connection closed during the handshake")]
    HandshakeEof,
    /// The peer's info hash is not one of our torrents (or not the one we asked for).
    #[error("unknown info hash")]
    UnknownTorrent,
    /// No BitTorrent handshake within [`NodeConfig::handshake_timeout`](super::NodeConfig::handshake_timeout).
    #[error("no handshake within the handshake timeout")]
    HandshakeTimeout,
    /// Nothing received within [`NodeConfig::idle_timeout`](super::NodeConfig::idle_timeout).
    #[error("nothing received within the idle timeout")]
    Idle,
    /// The coordinator refused the connection.
    #[error(transparent)]
    Usage(#[from] UsageError),
}

type Wire<S> = Framed<S, PeerCodec>;

pub(super) async fn run<S>(
    node: Node,
    stream: S,
    direction: Direction,
    torrent: Option<TorrentKey>,
) -> Result<(), ConnectionError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let config = node.config().clone();
    let ours = |info_hash| {
        let reserved = Reserved::empty()
            .with_extension_protocol(true)
            .with_fast(config.fast);
        Handshake::new(reserved, info_hash, config.peer_id)
    };
    let mut framed = Framed::new(stream, HandshakeCodec::new());
    let handshake = async {
        Ok::<_, ConnectionError>(match (direction, torrent) {
            (Direction::Outbound, Some(key)) | (Direction::Inbound, Some(key)) => {
                let (info_hash, store) =
                    node.torrent(key).ok_or(ConnectionError::UnknownTorrent)?;
                if direction == Direction::Outbound {
                    framed.send(ours(info_hash)).await?;
                }
                let theirs = framed.next().await.ok_or(ConnectionError::HandshakeEof)??;
                if theirs.info_hash != info_hash {
                    return Err(ConnectionError::UnknownTorrent);
                }
                if direction == Direction::Inbound {
                    framed.send(ours(info_hash)).await?;
                }
                (key, store, theirs)
            }
            (_, None) => {
                let theirs = framed.next().await.ok_or(ConnectionError::HandshakeEof)??;
                let (key, store) = node
                    .torrent_by_hash(&theirs.info_hash)
                    .ok_or(ConnectionError::UnknownTorrent)?;
                framed.send(ours(theirs.info_hash)).await?;
                (key, store, theirs)
            }
        })
    };
    let (torrent, store, theirs) = tokio::time::timeout(config.handshake_timeout, handshake)
        .await
        .map_err(|_| ConnectionError::HandshakeTimeout)??;
    let mut framed =
        framed.map_codec(|_| PeerCodec::new().with_max_frame_len(config.max_frame_len));
    let (key, mut rx) = node.register();
    let pieces = store.piece_count() as usize;
    // Subscribed before the bitfield is computed: no piece verified in between is missed.
    let verified = node.verified_pieces(torrent);
    let mut conn = Conn {
        node: node.clone(),
        key,
        torrent,
        store,
        fast: config.fast && theirs.reserved.fast(),
        ids: ExtensionIds::new(),
        peer_has: vec![false; pieces],
        announced: vec![false; pieces],
        verified,
        peer_choking: true,
        am_interested: false,
        outstanding: HashSet::new(),
        queue: VecDeque::new(),
        disconnect: false,
        metadata: None,
    };
    // Dropping `conn` (normal end, error, or the task being aborted) reports the disconnect.
    conn.run(&mut framed, &mut rx, &theirs, direction).await
}

struct Conn {
    node: Node,
    key: PeerKey,
    torrent: TorrentKey,
    store: Arc<dyn PieceStore>,
    fast: bool,
    ids: ExtensionIds,
    peer_has: Vec<bool>,
    /// Pieces we told the peer we have (bitfield or `have`).
    announced: Vec<bool>,
    /// Pieces verified by any connection of the torrent (`None` once the torrent is gone).
    verified: Option<tokio::sync::broadcast::Receiver<u32>>,
    peer_choking: bool,
    am_interested: bool,
    outstanding: HashSet<BlockRequest>,
    /// Engine commands for this connection, in coordinator order.
    queue: VecDeque<EngineCommand>,
    disconnect: bool,
    /// The metadata served over `ut_metadata`, if the store has it.
    metadata: Option<bytes::Bytes>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        for request in self.outstanding.drain() {
            self.store.abandon(request);
        }
        self.node.unregister(self.key);
        let (at, key) = (now(), self.key);
        let _ = self.node.with_coordinator(|c| c.handle_disconnect(at, key));
    }
}

impl Conn {
    /// Calls the coordinator and queues this connection's commands in order, with `decision`
    /// (the answer to a request) between what was queued before and what the call emitted.
    fn call<R>(
        &mut self,
        rx: &mut mpsc::UnboundedReceiver<EngineCommand>,
        f: impl FnOnce(&mut crate::Coordinator, PeerKey) -> R,
    ) -> (R, Vec<EngineCommand>) {
        let key = self.key;
        let (result, Own { queued, emitted }) = self.node.call(Some((key, rx)), |c| f(c, key));
        self.queue.extend(queued);
        (result, emitted)
    }

    fn call_queue<R>(
        &mut self,
        rx: &mut mpsc::UnboundedReceiver<EngineCommand>,
        f: impl FnOnce(&mut crate::Coordinator, PeerKey) -> R,
    ) -> R {
        let (result, emitted) = self.call(rx, f);
        self.queue.extend(emitted);
        result
    }

    async fn run<S>(
        &mut self,
        wire: &mut Wire<S>,
        rx: &mut mpsc::UnboundedReceiver<EngineCommand>,
        theirs: &Handshake,
        direction: Direction,
    ) -> Result<(), ConnectionError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let config = self.node.config().clone();
        let at = now();
        let remote = theirs.reserved;
        // Identity proofs bind the info-hash and both peer ids of these handshakes.
        let mut info = PeerInfo::new(self.torrent, direction, remote.0).with_session(
            theirs.info_hash,
            config.peer_id,
            theirs.peer_id,
        );
        info.fast_negotiated = self.fast;
        let torrent = self.torrent;
        self.call_queue(rx, |c, key| c.handle_peer_connected(at, key, info))?;
        if remote.extension_protocol() {
            // BEP 10: the handshake "should be sent immediately after the standard bittorrent
            // handshake to any peer that supports this extension protocol".
            self.ids
                .set_local(EXTENSION_NAME, config.pse_local_id)
                .map_err(|_| ConnectionError::UnknownTorrent)?;
            self.metadata = self.store.metadata();
            if self.metadata.is_some() {
                // Any id but the PSE's.
                let id = if config.pse_local_id == 1 { 2 } else { 1 };
                self.ids
                    .set_local(metadata::EXTENSION_NAME, id)
                    .map_err(|_| ConnectionError::UnknownTorrent)?;
            }
            let mut hs = self.ids.local_handshake();
            hs.metadata_size = self.metadata.as_ref().map(|m| m.len() as u64);
            self.node
                .inspect(|c| c.extended_handshake_contribution())
                .apply_to(&mut hs);
            hs.v = Some(config.client_name.clone());
            hs.reqq = Some(512);
            wire.send(hs.to_message()).await?;
        }
        self.send_bitfield(wire).await?;
        let _ = torrent;
        let mut keepalive = tokio::time::interval(config.keepalive);
        keepalive.tick().await;
        let idle = config.idle_timeout;
        // Far enough in the future to never fire, yet representable.
        let never = tokio::time::Duration::from_secs(86_400 * 365);
        let mut last_heard = tokio::time::Instant::now();
        loop {
            self.perform(wire, rx).await?;
            if self.disconnect {
                return Ok(());
            }
            self.fill_pipeline(wire, config.pipeline).await?;
            let idle_at = last_heard + idle.unwrap_or(never);
            tokio::select! {
                message = wire.next() => match message {
                    None => return Ok(()),
                    Some(Err(e)) => return Err(e.into()),
                    Some(Ok(message)) => {
                        last_heard = tokio::time::Instant::now();
                        self.on_message(wire, rx, message).await?;
                    }
                },
                () = tokio::time::sleep_until(idle_at) => return Err(ConnectionError::Idle),
                command = rx.recv() => {
                    if let Some(command) = command {
                        self.queue.push_back(command);
                    }
                }
                _ = keepalive.tick() => wire.send(Message::KeepAlive).await?,
                piece = next_verified(&mut self.verified) => self.announce(wire, piece).await?,
            }
        }
    }

    /// Sends `have` for a newly verified piece (or, after missing some, for every piece we
    /// have and did not announce yet). A peer that has the piece already is not told (BEP 3
    /// allows it; it only saves bytes).
    async fn announce<S>(
        &mut self,
        wire: &mut Wire<S>,
        piece: Option<u32>,
    ) -> Result<(), ConnectionError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let pieces: Vec<u32> = match piece {
            Some(p) => vec![p],
            None => (0..self.store.piece_count()).collect(),
        };
        for p in pieces {
            let i = p as usize;
            if i >= self.announced.len() || self.announced[i] || !self.store.has_piece(p) {
                continue;
            }
            self.announced[i] = true;
            if !self.peer_has[i] {
                wire.send(Message::Have(p)).await?;
            }
        }
        Ok(())
    }

    async fn send_bitfield<S>(&mut self, wire: &mut Wire<S>) -> Result<(), ConnectionError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let n = self.store.piece_count();
        let have: Vec<bool> = (0..n).map(|p| self.store.has_piece(p)).collect();
        self.announced.clone_from(&have);
        let count = have.iter().filter(|h| **h).count();
        if self.fast && count == have.len() {
            wire.send(Message::HaveAll).await?;
        } else if self.fast && count == 0 {
            wire.send(Message::HaveNone).await?;
        } else if count > 0 {
            let mut bits = vec![0u8; have.len().div_ceil(8)];
            for (i, _) in have.iter().enumerate().filter(|(_, h)| **h) {
                bits[i / 8] |= 0x80 >> (i % 8);
            }
            wire.send(Message::Bitfield(bits.into())).await?;
        }
        Ok(())
    }

    /// Performs the queued commands, in order.
    async fn perform<S>(
        &mut self,
        wire: &mut Wire<S>,
        rx: &mut mpsc::UnboundedReceiver<EngineCommand>,
    ) -> Result<(), ConnectionError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        while let Some(command) = self.queue.pop_front() {
            match command {
                EngineCommand::SendExtended {
                    peer_ext_id,
                    payload,
                    ..
                } => {
                    wire.send(Message::Extended {
                        id: peer_ext_id,
                        payload,
                    })
                    .await?;
                }
                EngineCommand::Choke { .. } => wire.send(Message::Choke).await?,
                EngineCommand::Unchoke { .. } => wire.send(Message::Unchoke).await?,
                EngineCommand::Serve { request, .. } => self.serve(wire, rx, request).await?,
                EngineCommand::Reject { request, .. } if self.fast => {
                    wire.send(Message::Reject(request)).await?;
                }
                EngineCommand::AllowedFast { piece, .. } if self.fast => {
                    wire.send(Message::AllowedFast(piece)).await?;
                }
                EngineCommand::Disconnect { .. } => {
                    self.disconnect = true;
                    return Ok(());
                }
                _ => {}
            }
        }
        Ok(())
    }

    async fn serve<S>(
        &mut self,
        wire: &mut Wire<S>,
        rx: &mut mpsc::UnboundedReceiver<EngineCommand>,
        request: BlockRequest,
    ) -> Result<(), ConnectionError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let sent = match self.store.read_block(request) {
            Some(data) => {
                wire.send(Message::Piece {
                    index: request.index,
                    begin: request.begin,
                    data,
                })
                .await?;
                request.length
            }
            None => {
                if self.fast {
                    wire.send(Message::Reject(request)).await?;
                }
                0
            }
        };
        let at = now();
        self.call_queue(rx, |c, key| c.handle_bytes_sent(at, key, request, sent))?;
        Ok(())
    }

    async fn fill_pipeline<S>(
        &mut self,
        wire: &mut Wire<S>,
        pipeline: usize,
    ) -> Result<(), ConnectionError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        self.update_interest(wire).await?;
        if self.peer_choking || !self.am_interested {
            return Ok(());
        }
        let key = self.key;
        if self.node.inspect(|c| c.is_stopped_by_peer(key)) {
            return Ok(()); // blocked until we pay: what is queued there is enough
        }
        while self.outstanding.len() < pipeline {
            let peer_has = &self.peer_has;
            let Some(request) = self
                .store
                .pick_block(&|p| peer_has.get(p as usize).copied().unwrap_or(false))
            else {
                break;
            };
            self.outstanding.insert(request);
            wire.send(Message::Request(request)).await?;
        }
        Ok(())
    }

    async fn update_interest<S>(&mut self, wire: &mut Wire<S>) -> Result<(), ConnectionError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let wanted = self.store.remaining() > 0
            && (0..self.store.piece_count())
                .any(|p| self.peer_has[p as usize] && !self.store.has_piece(p));
        if wanted != self.am_interested {
            self.am_interested = wanted;
            wire.send(if wanted {
                Message::Interested
            } else {
                Message::NotInterested
            })
            .await?;
        }
        Ok(())
    }

    async fn on_message<S>(
        &mut self,
        wire: &mut Wire<S>,
        rx: &mut mpsc::UnboundedReceiver<EngineCommand>,
        message: Message,
    ) -> Result<(), ConnectionError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let at = now();
        match message {
            Message::Choke => {
                self.peer_choking = true;
                if !self.fast {
                    // BEP 3: a choke discards pending requests.
                    for request in self.outstanding.drain() {
                        self.store.abandon(request);
                    }
                }
                self.call_queue(rx, |c, key| c.handle_remote_choke(at, key, true))?;
            }
            Message::Unchoke => {
                self.peer_choking = false;
                self.call_queue(rx, |c, key| c.handle_remote_choke(at, key, false))?;
            }
            Message::Interested | Message::NotInterested => {
                let interested = message == Message::Interested;
                self.call_queue(rx, |c, key| c.handle_remote_interest(at, key, interested))?;
            }
            Message::Have(piece) => {
                if let Some(has) = self.peer_has.get_mut(piece as usize) {
                    *has = true;
                }
            }
            Message::Bitfield(bits) => {
                for (i, has) in self.peer_has.iter_mut().enumerate() {
                    *has = bits.get(i / 8).is_some_and(|b| b & (0x80 >> (i % 8)) != 0);
                }
            }
            Message::HaveAll => self.peer_has.fill(true),
            Message::HaveNone => self.peer_has.fill(false),
            Message::Request(request) => {
                let (decision, emitted) =
                    self.call(rx, |c, key| c.handle_request(at, key, request));
                match decision? {
                    RequestDecision::Serve => self.queue.push_back(EngineCommand::Serve {
                        peer: self.key,
                        request,
                    }),
                    RequestDecision::Reject => self.queue.push_back(EngineCommand::Reject {
                        peer: self.key,
                        request,
                    }),
                    _ => {}
                }
                self.queue.extend(emitted);
            }
            Message::Cancel(request) => {
                self.call_queue(rx, |c, key| c.handle_cancel(at, key, request))?;
            }
            Message::Piece { index, begin, data } => {
                let length = u32::try_from(data.len()).unwrap_or(u32::MAX);
                let request = BlockRequest {
                    index,
                    begin,
                    length,
                };
                if self.outstanding.remove(&request) {
                    let delivery = self.store.deliver(request, data);
                    let torrent = self.torrent;
                    if let Delivery::Verified { piece, .. } = delivery {
                        self.node.piece_verified(torrent, piece);
                    }
                    self.call_queue(rx, |c, key| {
                        let result = c.handle_block_received(at, key, request, length);
                        match delivery {
                            Delivery::Verified { piece, length } => {
                                c.handle_piece_verified(at, torrent, piece, length);
                            }
                            Delivery::Failed { piece, length } => {
                                c.handle_piece_failed(at, torrent, piece, length);
                            }
                            _ => {}
                        }
                        result
                    })?;
                }
            }
            Message::Reject(request) if self.outstanding.remove(&request) => {
                self.store.abandon(request);
            }
            Message::Extended {
                id: HANDSHAKE_ID,
                payload,
            } => {
                // A malformed extended handshake is ignored, as unknown keys are.
                if let Ok(hs) = ExtendedHandshake::decode(&payload) {
                    // Only the names we speak are kept: a peer's junk names cost nothing.
                    self.ids.apply_peer_handshake_known(&hs);
                    let view = PeerExtendedHandshake::from_extended(&hs);
                    let result =
                        self.call_queue(rx, |c, key| c.handle_extended_handshake(at, key, &view));
                    check(result)?;
                }
            }
            Message::Extended { id, payload }
                if self.ids.local_name(id) == Some(metadata::EXTENSION_NAME) =>
            {
                // BEP 9, served here: a request gets its piece or a reject; anything else
                // (answers we never asked for, unknown or malformed messages) is ignored.
                if let (Ok(MetadataMessage::Request { piece }), Some(to), Some(info)) = (
                    MetadataMessage::decode(&payload),
                    self.ids.peer_id(metadata::EXTENSION_NAME),
                    &self.metadata,
                ) {
                    wire.send(metadata::serve(info, piece).to_message(to))
                        .await?;
                }
            }
            Message::Extended { id, payload } => {
                if let Some(name) = self.ids.local_name(id).map(str::to_owned) {
                    let result = self.call_queue(rx, |c, key| {
                        c.handle_extension_message(at, key, &name, &payload)
                    });
                    check(result)?;
                }
            }
            _ => {}
        }
        let _ = wire;
        Ok(())
    }
}

/// Peer errors were handled by the coordinator (which queued any disconnect); only misuse ends
/// the connection.
fn check(result: Result<(), Error>) -> Result<(), ConnectionError> {
    match result {
        Err(Error::Usage(e)) => Err(e.into()),
        Err(Error::Peer(e)) if e.reaction() == PeerReaction::Disconnect => Ok(()),
        _ => Ok(()),
    }
}

/// The next piece verified for the torrent: `Some(piece)`, or `None` when some were missed
/// (the receiver lagged) and every piece must be checked. Never resolves once the torrent is
/// gone.
async fn next_verified(rx: &mut Option<tokio::sync::broadcast::Receiver<u32>>) -> Option<u32> {
    use tokio::sync::broadcast::error::RecvError;
    let Some(r) = rx.as_mut() else {
        return std::future::pending().await;
    };
    match r.recv().await {
        Ok(piece) => Some(piece),
        Err(RecvError::Lagged(_)) => None,
        Err(RecvError::Closed) => {
            *rx = None;
            std::future::pending().await
        }
    }
}
