//! A plain (unpaid) BitTorrent peer loop over `paid-wire`'s codecs: enough of BEP 3, BEP 6 and
//! BEP 10 to seed to and download from stock clients such as libtorrent.
//!
//! One task per connection: handshake ([`HandshakeCodec`]), then messages ([`PeerCodec`] on
//! the same buffer). The loop reacts to three sources: the peer's messages, the torrent's
//! [`TorrentEvent`]s (a new piece: send `have`, cancel duplicates) and a one-second tick
//! (keep-alive, idle and request timeouts). Message handling itself is synchronous
//! (`Conn::handle`) and only queues outgoing messages, which the loop then writes.
//!
//! Policy, kept simple on purpose: every interested peer is unchoked (no choker slots); up to
//! [`PeerConfig::pipeline`] requests are kept in flight; a choke abandons our requests; with
//! BEP 6 negotiated, requests we will not serve are rejected, otherwise they are dropped.
//!
//! The torrent's metadata is served (BEP 9 `ut_metadata`, advertised with its
//! `metadata_size`), so that peers that know only a magnet link can start; a request past its
//! end is rejected.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use paid_wire::codec::{HandshakeCodec, PeerCodec};
use paid_wire::extended::{ExtendedHandshake, ExtensionIds, HANDSHAKE_ID};
use paid_wire::handshake::{Handshake, Reserved};
use paid_wire::message::{BlockRequest, Message};
use paid_wire::metadata::{self, MetadataMessage};
use tokio::net::TcpStream;
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;
use tokio_util::codec::Framed;

use crate::bitfield::Bitfield;
use crate::error::PeerError;
use crate::torrent::{Received, Torrent, TorrentEvent};

/// Connection settings.
#[derive(Debug, Clone)]
pub struct PeerConfig {
    /// Requests kept in flight to one peer.
    pub pipeline: usize,
    /// Whether to upload at all (serve requests and unchoke interested peers).
    pub upload: bool,
    /// Advertise BEP 6 (fast extension).
    pub fast: bool,
    /// Our TCP listen port, advertised as `p` in the extended handshake.
    pub listen_port: Option<u16>,
    /// Send a keep-alive after this long without sending anything.
    pub keepalive: Duration,
    /// Give up on a peer that sent nothing for this long.
    pub idle_timeout: Duration,
    /// Give a request back to the picker if unanswered for this long.
    pub request_timeout: Duration,
    /// Time allowed for the TCP connect and the BitTorrent handshake.
    pub handshake_timeout: Duration,
}

impl Default for PeerConfig {
    fn default() -> Self {
        Self {
            pipeline: 64,
            upload: true,
            fast: true,
            listen_port: None,
            keepalive: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(150),
            request_timeout: Duration::from_secs(30),
            handshake_timeout: Duration::from_secs(10),
        }
    }
}

/// How a connection went.
#[derive(Debug, Clone, Default)]
pub struct PeerSummary {
    /// The remote address.
    pub addr: Option<SocketAddr>,
    /// The remote peer id.
    pub peer_id: [u8; 20],
    /// The remote client's `v`, if it sent an extended handshake.
    pub client: Option<String>,
    /// Block bytes we sent.
    pub uploaded: u64,
    /// Block bytes we received and kept.
    pub downloaded: u64,
}

/// Our BEP 10 id for `ut_metadata` (peers send their metadata requests with it).
pub const UT_METADATA_ID: u8 = 1;

/// Our BitTorrent handshake's reserved bits: BEP 10 always, BEP 6 if configured.
pub fn local_reserved(cfg: &PeerConfig) -> Reserved {
    Reserved::empty()
        .with_extension_protocol(true)
        .with_fast(cfg.fast)
}

/// Connects to `addr` and runs the connection until it ends.
pub async fn connect(
    torrent: Arc<Torrent>,
    addr: SocketAddr,
    cfg: PeerConfig,
) -> Result<PeerSummary, PeerError> {
    let stream = tokio::time::timeout(cfg.handshake_timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| PeerError::Timeout("connect"))??;
    run(torrent, stream, true, cfg).await
}

/// Runs an accepted connection until it ends.
pub async fn accept(
    torrent: Arc<Torrent>,
    stream: TcpStream,
    cfg: PeerConfig,
) -> Result<PeerSummary, PeerError> {
    run(torrent, stream, false, cfg).await
}

/// Exchanges BitTorrent handshakes (the initiator sends first) and checks the info-hash.
pub async fn handshake(
    stream: TcpStream,
    ours: Handshake,
    outbound: bool,
    timeout: Duration,
) -> Result<(Framed<TcpStream, HandshakeCodec>, Handshake), PeerError> {
    let _ = stream.set_nodelay(true);
    let mut framed = Framed::new(stream, HandshakeCodec::new());
    let exchange = async {
        if outbound {
            framed.send(ours).await?;
        }
        let theirs = framed.next().await.ok_or(PeerError::Closed)??;
        if theirs.info_hash != ours.info_hash {
            return Err(PeerError::WrongInfoHash);
        }
        if !outbound {
            framed.send(ours).await?;
        }
        Ok(theirs)
    };
    let theirs = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| PeerError::Timeout("handshake"))??;
    Ok((framed, theirs))
}

async fn run(
    torrent: Arc<Torrent>,
    stream: TcpStream,
    outbound: bool,
    cfg: PeerConfig,
) -> Result<PeerSummary, PeerError> {
    let addr = stream.peer_addr().ok();
    let ours = Handshake::new(local_reserved(&cfg), torrent.info_hash(), torrent.peer_id());
    let (framed, theirs) = handshake(stream, ours, outbound, cfg.handshake_timeout).await?;
    let mut framed = framed.map_codec(|_| PeerCodec::new());
    let mut events = torrent.subscribe();
    let mut conn = Conn::new(torrent.clone(), cfg, &ours, &theirs);
    conn.summary.addr = addr;
    conn.start();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let result = loop {
        if let Err(e) = conn.flush(&mut framed).await {
            break Err(e);
        }
        if conn.finished() {
            break Ok(());
        }
        tokio::select! {
            msg = framed.next() => match msg {
                Some(Ok(msg)) => {
                    conn.last_recv = Instant::now();
                    if let Err(e) = conn.handle(msg) {
                        break Err(e);
                    }
                }
                Some(Err(e)) => break Err(e.into()),
                None => break Ok(()),
            },
            ev = events.recv() => match ev {
                Ok(TorrentEvent::Have(index)) => conn.on_have_local(index),
                Err(RecvError::Lagged(_)) => conn.resync(),
                Err(RecvError::Closed) => break Ok(()),
            },
            _ = tick.tick() => {
                if let Err(e) = conn.on_tick(Instant::now()) {
                    break Err(e);
                }
            }
        }
    };
    conn.close();
    result.map(|()| conn.summary)
}

/// The state of one connection, driven by [`run`].
#[derive(Debug)]
struct Conn {
    torrent: Arc<Torrent>,
    cfg: PeerConfig,
    fast: bool,
    extended: bool,
    ext: ExtensionIds,
    peer_has: Bitfield,
    got_pieces_msg: bool,
    am_choking: bool,
    am_interested: bool,
    peer_choking: bool,
    peer_interested: bool,
    outstanding: Vec<(BlockRequest, Instant)>,
    out: Vec<Message>,
    last_recv: Instant,
    last_send: Instant,
    summary: PeerSummary,
}

impl Conn {
    fn new(torrent: Arc<Torrent>, cfg: PeerConfig, ours: &Handshake, theirs: &Handshake) -> Self {
        let n = torrent.piece_count();
        let now = Instant::now();
        Self {
            fast: ours.reserved.fast() && theirs.reserved.fast(),
            extended: ours.reserved.extension_protocol() && theirs.reserved.extension_protocol(),
            torrent,
            cfg,
            ext: ExtensionIds::new(),
            peer_has: Bitfield::new(n),
            got_pieces_msg: false,
            am_choking: true,
            am_interested: false,
            peer_choking: true,
            peer_interested: false,
            outstanding: Vec::new(),
            out: Vec::new(),
            last_recv: now,
            last_send: now,
            summary: PeerSummary {
                peer_id: theirs.peer_id,
                ..PeerSummary::default()
            },
        }
    }

    /// First messages: extended handshake (BEP 10), then what we have.
    fn start(&mut self) {
        if self.extended {
            // Never fails: the id is not 0 and the table is empty.
            let _ = self.ext.set_local(metadata::EXTENSION_NAME, UT_METADATA_ID);
            let mut hs = self.ext.local_handshake();
            hs.v = Some(concat!("paid-torrent ", env!("CARGO_PKG_VERSION")).into());
            hs.reqq = Some(500);
            hs.p = self.cfg.listen_port;
            hs.metadata_size = Some(self.torrent.meta().raw_info().len() as u64);
            self.out.push(hs.to_message());
        }
        let have = self.torrent.have();
        if self.fast && have.is_full() {
            self.out.push(Message::HaveAll);
        } else if self.fast && have.count() == 0 {
            self.out.push(Message::HaveNone);
        } else if have.count() > 0 {
            self.out
                .push(Message::Bitfield(have.as_bytes().to_vec().into()));
        }
    }

    /// Both sides are seeds: nothing left to do on this connection.
    fn finished(&self) -> bool {
        self.torrent.is_complete() && self.peer_has.is_full()
    }

    async fn flush(&mut self, framed: &mut Framed<TcpStream, PeerCodec>) -> Result<(), PeerError> {
        if self.out.is_empty() {
            return Ok(());
        }
        for msg in self.out.drain(..) {
            framed.feed(msg).await?;
        }
        SinkExt::<Message>::flush(framed).await?;
        self.last_send = Instant::now();
        Ok(())
    }

    fn protocol(what: impl Into<String>) -> PeerError {
        PeerError::Protocol(what.into())
    }

    fn handle(&mut self, msg: Message) -> Result<(), PeerError> {
        let n = self.torrent.piece_count();
        match msg {
            Message::KeepAlive | Message::Port(_) | Message::Unknown { .. } => {}
            Message::Choke => {
                self.peer_choking = true;
                // BEP 3: a choke drops every pending request. With BEP 6 the peer rejects them
                // explicitly; a late piece for one of them is still accepted by the picker.
                let reqs: Vec<_> = self.outstanding.drain(..).map(|(r, _)| r).collect();
                self.torrent.abandon(&reqs);
            }
            Message::Unchoke => {
                self.peer_choking = false;
                self.fill_requests();
            }
            Message::Interested => {
                self.peer_interested = true;
                if self.cfg.upload && self.am_choking {
                    self.am_choking = false;
                    self.out.push(Message::Unchoke);
                }
            }
            Message::NotInterested => self.peer_interested = false,
            Message::Have(index) => {
                if index >= n {
                    return Err(Self::protocol(format!("have {index} of {n} pieces")));
                }
                self.got_pieces_msg = true;
                if !self.peer_has.get(index) {
                    self.peer_has.set(index);
                    self.torrent.add_piece_availability(index);
                }
                self.update_interest();
            }
            Message::Bitfield(bits) => {
                if self.got_pieces_msg {
                    return Err(Self::protocol("bitfield after the first message"));
                }
                let bf = Bitfield::from_wire(&bits, n).ok_or_else(|| {
                    Self::protocol("bitfield of the wrong size or with spare bits")
                })?;
                self.set_peer_pieces(bf);
            }
            Message::HaveAll | Message::HaveNone => {
                if !self.fast {
                    // BEP 6: "MUST close the connection" without fast negotiated.
                    return Err(Self::protocol("BEP 6 message without the fast extension"));
                }
                if self.got_pieces_msg {
                    return Err(Self::protocol("have-all/none after the first message"));
                }
                let bf = if matches!(msg, Message::HaveAll) {
                    Bitfield::full(n)
                } else {
                    Bitfield::new(n)
                };
                self.set_peer_pieces(bf);
            }
            Message::Request(req) => self.on_request(req)?,
            Message::Piece { index, begin, data } => {
                let req = BlockRequest::new(index, begin, data.len() as u32);
                self.outstanding.retain(|(r, _)| *r != req);
                match self.torrent.receive_block(index, begin, &data)? {
                    Received::Ignored => {}
                    Received::Stored | Received::PieceVerified(_) | Received::PieceFailed(_) => {
                        self.summary.downloaded += data.len() as u64;
                    }
                }
                self.fill_requests();
            }
            // We serve requests as they arrive, so there is nothing queued to cancel.
            Message::Cancel(_) => {}
            Message::Reject(req) => {
                if !self.fast {
                    return Err(Self::protocol("reject without the fast extension"));
                }
                let before = self.outstanding.len();
                self.outstanding.retain(|(r, _)| *r != req);
                if self.outstanding.len() < before {
                    self.torrent.abandon(&[req]);
                }
                self.fill_requests();
            }
            Message::Suggest(_) | Message::AllowedFast(_) if !self.fast => {
                return Err(Self::protocol("BEP 6 message without the fast extension"));
            }
            Message::Extended { id, payload } if id == HANDSHAKE_ID => {
                // A malformed extended handshake is not worth a disconnect: ignore it.
                if let Ok(hs) = ExtendedHandshake::decode(&payload) {
                    self.ext.apply_peer_handshake_known(&hs);
                    if hs.v.is_some() {
                        self.summary.client = hs.v;
                    }
                }
            }
            Message::Extended { id, payload } if id == UT_METADATA_ID && self.extended => {
                self.on_metadata(&payload)?;
            }
            // Suggest / allowed-fast are hints; other extended ids are not ours: ignored.
            _ => {}
        }
        Ok(())
    }

    /// BEP 9: a request is answered with the piece of our info dictionary, or rejected past
    /// its end; an unknown `msg_type` is ignored; a malformed message ends the connection.
    fn on_metadata(&mut self, payload: &[u8]) -> Result<(), PeerError> {
        let request = match MetadataMessage::decode(payload) {
            Ok(MetadataMessage::Request { piece }) => piece,
            // We never ask this peer for metadata: answers are not ours to take.
            Ok(_) | Err(paid_wire::error::MetadataError::UnknownMessageType { .. }) => {
                return Ok(());
            }
            Err(e) => return Err(Self::protocol(format!("ut_metadata: {e}"))),
        };
        // A peer that did not advertise ut_metadata cannot be answered (no id to send with).
        if let Some(id) = self.ext.peer_id(metadata::EXTENSION_NAME) {
            let answer = metadata::serve(self.torrent.meta().raw_info(), request);
            self.out.push(answer.to_message(id));
        }
        Ok(())
    }

    fn set_peer_pieces(&mut self, bf: Bitfield) {
        self.got_pieces_msg = true;
        self.torrent.remove_availability(&self.peer_has);
        self.torrent.add_availability(&bf);
        self.peer_has = bf;
        self.update_interest();
    }

    fn on_request(&mut self, req: BlockRequest) -> Result<(), PeerError> {
        let serve = !self.am_choking && self.cfg.upload;
        let data = if serve {
            self.torrent.read_block(&req)?
        } else {
            None
        };
        match data {
            Some(data) => {
                self.summary.uploaded += data.len() as u64;
                self.out.push(Message::Piece {
                    index: req.index,
                    begin: req.begin,
                    data,
                });
            }
            // BEP 6: every request gets exactly one answer.
            None if self.fast => self.out.push(Message::Reject(req)),
            None => {}
        }
        Ok(())
    }

    fn update_interest(&mut self) {
        let want = self.torrent.wants_from(&self.peer_has);
        if want != self.am_interested {
            self.am_interested = want;
            self.out.push(if want {
                Message::Interested
            } else {
                Message::NotInterested
            });
        }
        self.fill_requests();
    }

    fn fill_requests(&mut self) {
        if self.peer_choking || !self.am_interested {
            return;
        }
        let room = self.cfg.pipeline.saturating_sub(self.outstanding.len());
        if room == 0 {
            return;
        }
        let inflight: Vec<BlockRequest> = self.outstanding.iter().map(|(r, _)| *r).collect();
        let now = Instant::now();
        let peer_has = &self.peer_has;
        for req in self.torrent.pick(&|i| peer_has.get(i), room, &inflight) {
            self.outstanding.push((req, now));
            self.out.push(Message::Request(req));
        }
    }

    /// We completed a piece: announce it, cancel requests for it still in flight here.
    fn on_have_local(&mut self, index: u32) {
        self.out.push(Message::Have(index));
        let mut cancelled = Vec::new();
        self.outstanding.retain(|(r, _)| {
            let hit = r.index == index;
            if hit {
                cancelled.push(*r);
            }
            !hit
        });
        self.out.extend(cancelled.into_iter().map(Message::Cancel));
        self.update_interest();
    }

    /// We missed torrent events: recompute interest (have messages are only an optimisation
    /// for the peer; it learns our pieces on its next connection at worst).
    fn resync(&mut self) {
        self.update_interest();
    }

    fn on_tick(&mut self, now: Instant) -> Result<(), PeerError> {
        if now.duration_since(self.last_recv) > self.cfg.idle_timeout {
            return Err(PeerError::Timeout("peer idle"));
        }
        if now.duration_since(self.last_send) > self.cfg.keepalive && self.out.is_empty() {
            self.out.push(Message::KeepAlive);
        }
        let timeout = self.cfg.request_timeout;
        let mut late = Vec::new();
        self.outstanding.retain(|(r, at)| {
            let expired = now.duration_since(*at) > timeout;
            if expired {
                late.push(*r);
            }
            !expired
        });
        if !late.is_empty() {
            self.torrent.abandon(&late);
            self.out.extend(late.into_iter().map(Message::Cancel));
        }
        self.fill_requests();
        Ok(())
    }

    /// The connection is over: give back what it held.
    fn close(&mut self) {
        let reqs: Vec<_> = self.outstanding.drain(..).map(|(r, _)| r).collect();
        self.torrent.abandon(&reqs);
        self.torrent.remove_availability(&self.peer_has);
    }
}
