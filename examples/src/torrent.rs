//! One torrent's shared state: the metainfo, the files, the picker, and the notifications
//! every peer connection of the torrent listens to.
//!
//! [`Torrent`] is what a peer loop (ours in [`crate::peer`], or torrent-glue's reference
//! adapter) talks to: it serves block data, takes received blocks, verifies and writes
//! complete pieces, and announces each new piece to all connections.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use paid_wire::message::BlockRequest;
use tokio::sync::{broadcast, watch};

use crate::bitfield::Bitfield;
use crate::error::StorageError;
use crate::metainfo::Metainfo;
use crate::picker::{BlockOutcome, Picker, Strategy};
use crate::storage::{OpenMode, Storage};

/// Something every connection of the torrent must know about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TorrentEvent {
    /// We verified and wrote this piece: announce it (`have`) and cancel duplicates.
    Have(u32),
}

/// What became of a received block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    /// Not wanted (duplicate, unrequested or malformed).
    Ignored,
    /// Stored; its piece is still incomplete.
    Stored,
    /// It completed piece `0`, which verified and was written.
    PieceVerified(u32),
    /// It completed piece `0`, whose hash did not match; the piece will be downloaded again.
    PieceFailed(u32),
}

/// Byte counters of a torrent (payload only, no protocol overhead).
#[derive(Debug, Default)]
pub struct Counters {
    /// Block bytes sent to peers.
    pub uploaded: AtomicU64,
    /// Block bytes received from peers and accepted.
    pub downloaded: AtomicU64,
    /// Pieces that failed verification.
    pub hash_failures: AtomicU64,
}

/// One torrent, shared by all its peer connections (`Arc<Torrent>`).
#[derive(Debug)]
pub struct Torrent {
    meta: Arc<Metainfo>,
    storage: Storage,
    picker: Mutex<Picker>,
    events: broadcast::Sender<TorrentEvent>,
    complete: watch::Sender<bool>,
    counters: Counters,
    peer_id: [u8; 20],
    endgame: AtomicBool,
}

impl Torrent {
    /// Opens the files below `dir` and re-verifies what is already there (resume).
    pub fn open(
        meta: Metainfo,
        dir: &std::path::Path,
        mode: OpenMode,
        strategy: Strategy,
    ) -> Result<Arc<Self>, StorageError> {
        let storage = Storage::open(&meta, dir, mode)?;
        let have = storage.check()?;
        let complete = have.is_full();
        let picker = Picker::new(
            meta.info.piece_length,
            meta.info.total_length(),
            have,
            strategy,
        );
        let (events, _) = broadcast::channel(1024);
        Ok(Arc::new(Self {
            peer_id: new_peer_id(&meta.info_hash),
            meta: Arc::new(meta),
            storage,
            picker: Mutex::new(picker),
            events,
            complete: watch::Sender::new(complete),
            counters: Counters::default(),
            endgame: AtomicBool::new(true),
        }))
    }

    fn picker(&self) -> MutexGuard<'_, Picker> {
        // A panic while holding the lock is a bug elsewhere; the picker stays usable.
        self.picker.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The metainfo.
    pub fn meta(&self) -> &Arc<Metainfo> {
        &self.meta
    }

    /// The info-hash.
    pub fn info_hash(&self) -> [u8; 20] {
        self.meta.info_hash
    }

    /// Our peer id for this torrent (`-PT0001-` + 12 pseudo-random bytes).
    pub fn peer_id(&self) -> [u8; 20] {
        self.peer_id
    }

    /// Number of pieces.
    pub fn piece_count(&self) -> u32 {
        self.meta.info.piece_count()
    }

    /// The verified pieces.
    pub fn have(&self) -> Bitfield {
        self.picker().have().clone()
    }

    /// Whether we have piece `index`.
    pub fn has_piece(&self, index: u32) -> bool {
        self.picker().have().get(index)
    }

    /// Whether every piece is verified.
    pub fn is_complete(&self) -> bool {
        *self.complete.borrow()
    }

    /// Resolves once every piece is verified (immediately for a seed).
    pub async fn wait_complete(&self) {
        let mut rx = self.complete.subscribe();
        // `wait_for` only fails when the sender is dropped, and `self` owns it.
        let _ = rx.wait_for(|done| *done).await;
    }

    /// Bytes not yet verified.
    pub fn bytes_left(&self) -> u64 {
        self.picker().bytes_left()
    }

    /// Payload counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Subscribes to [`TorrentEvent`]s.
    pub fn subscribe(&self) -> broadcast::Receiver<TorrentEvent> {
        self.events.subscribe()
    }

    /// Whether `req` is a block we can serve: inside the torrent, at most 128 KiB (libtorrent
    /// asks for 16 KiB; BEP 3 allows closing on larger ones), of a piece we have.
    pub fn can_serve(&self, req: &BlockRequest) -> bool {
        req.length <= 128 * 1024
            && self
                .storage
                .block_in_range(req.index, req.begin, req.length)
            && self.has_piece(req.index)
    }

    /// Reads a block for a peer; `None` if it is not one we can serve.
    pub fn read_block(&self, req: &BlockRequest) -> Result<Option<Bytes>, StorageError> {
        if !self.can_serve(req) {
            return Ok(None);
        }
        let data = self.storage.read_block(req.index, req.begin, req.length)?;
        self.counters
            .uploaded
            .fetch_add(u64::from(req.length), Ordering::Relaxed);
        Ok(Some(Bytes::from(data)))
    }

    /// A peer announced its pieces.
    pub fn add_availability(&self, peer: &Bitfield) {
        self.picker().add_availability(peer);
    }

    /// A peer announced one piece.
    pub fn add_piece_availability(&self, index: u32) {
        self.picker().add_piece_availability(index);
    }

    /// A peer with these pieces left.
    pub fn remove_availability(&self, peer: &Bitfield) {
        self.picker().remove_availability(peer);
    }

    /// Whether a peer with `peer` has something we still need.
    pub fn wants_from(&self, peer: &Bitfield) -> bool {
        !self.is_complete() && self.picker().wants_from(peer)
    }

    /// Up to `max` new block requests for a peer that has the pieces for which `peer` is
    /// true, given the ones already in flight to it (endgame duplicates as configured with
    /// [`set_endgame`](Self::set_endgame)).
    pub fn pick(
        &self,
        peer: &dyn Fn(u32) -> bool,
        max: usize,
        outstanding: &[BlockRequest],
    ) -> Vec<BlockRequest> {
        if max == 0 || self.is_complete() {
            return Vec::new();
        }
        let endgame = self.endgame.load(Ordering::Relaxed);
        self.picker().pick(peer, max, outstanding, endgame)
    }

    /// Whether to request in-flight blocks from several peers at the end of the download
    /// (default on). Paid downloads turn it off: every duplicate block is paid for.
    pub fn set_endgame(&self, on: bool) {
        self.endgame.store(on, Ordering::Relaxed);
    }

    /// Requests that will not be answered go back to the picker.
    pub fn abandon(&self, reqs: &[BlockRequest]) {
        let mut p = self.picker();
        for r in reqs {
            p.abandon(r);
        }
    }

    /// A block arrived: store it; when it completes a piece, verify the piece, write it and
    /// announce it.
    pub fn receive_block(
        &self,
        index: u32,
        begin: u32,
        data: &[u8],
    ) -> Result<Received, StorageError> {
        let outcome = self.picker().on_block(index, begin, data);
        let piece = match outcome {
            BlockOutcome::Ignored => return Ok(Received::Ignored),
            BlockOutcome::Stored => {
                self.count_download(data.len());
                return Ok(Received::Stored);
            }
            BlockOutcome::PieceComplete { data: piece, .. } => piece,
        };
        self.count_download(data.len());
        // Hash and write outside the lock: other peers keep going meanwhile.
        let ok = self.storage.verify(index, &piece);
        let written = if ok {
            self.storage.write_piece(index, &piece)
        } else {
            Ok(())
        };
        let ok = ok && written.is_ok();
        let complete = {
            let mut p = self.picker();
            p.piece_verified(index, ok);
            p.is_complete()
        };
        written?;
        if !ok {
            self.counters.hash_failures.fetch_add(1, Ordering::Relaxed);
            return Ok(Received::PieceFailed(index));
        }
        // No receivers is fine.
        let _ = self.events.send(TorrentEvent::Have(index));
        if complete {
            self.storage.sync()?;
            self.complete.send_replace(true);
        }
        Ok(Received::PieceVerified(index))
    }

    fn count_download(&self, n: usize) {
        self.counters
            .downloaded
            .fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// A peer id for `info_hash`: `-PT0001-` followed by 12 printable bytes derived from the time,
/// the process id and the torrent.
pub fn new_peer_id(info_hash: &[u8; 20]) -> [u8; 20] {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let mut seed = nanos.to_be_bytes().to_vec();
    seed.extend_from_slice(&std::process::id().to_be_bytes());
    seed.extend_from_slice(info_hash);
    let h = crate::metainfo::sha1(&seed);
    let mut id = *b"-PT0001-000000000000";
    for (dst, src) in id[8..].iter_mut().zip(h) {
        // Printable: libtorrent shows peer ids in its logs.
        *dst = b"0123456789abcdefghijklmnopqrstuvwxyz"[usize::from(src) % 36];
    }
    id
}
