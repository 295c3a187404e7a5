//! What the peer loop needs from the engine's storage: block data to serve ([`PieceSource`]),
//! a place to deliver received blocks and a block picker ([`PieceSink`]). Everything that is
//! not about payment (piece selection, storage, hashing) stays behind these traits.
//!
//! [`MemoryTorrent`] is an in-memory implementation for tests and the sample client.

use std::collections::HashSet;
use std::sync::Mutex;

use bytes::Bytes;
use paid_wire::message::BlockRequest;
use sha1::{Digest, Sha1};

/// Serves block data. Called on the connection's task: implementations must not block for
/// long (an in-memory or page-cache read is fine; slow storage should be read ahead).
pub trait PieceSource: Send + Sync {
    /// Number of pieces of the torrent.
    fn piece_count(&self) -> u32;
    /// Whether we have (and verified) `piece`.
    fn has_piece(&self, piece: u32) -> bool;
    /// The block's bytes, or `None` if we do not have them (the peer loop then reports 0 bytes
    /// sent and rejects under BEP 6).
    fn read_block(&self, request: BlockRequest) -> Option<Bytes>;
    /// The torrent's metadata (its bencoded `info` dictionary) for peers that ask for it with
    /// BEP 9 `ut_metadata` (a client that has only the magnet link). With `Some`, connections
    /// advertise `ut_metadata` and `metadata_size` and answer requests (a piece past the end is
    /// rejected). Default: `None`, nothing advertised.
    fn metadata(&self) -> Option<Bytes> {
        None
    }
}

/// What became of a delivered block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Delivery {
    /// Stored; its piece is not complete yet.
    Stored,
    /// Stored, and it completed `piece`, which passed its hash check.
    Verified {
        /// The piece.
        piece: u32,
        /// Its length in bytes.
        length: u32,
    },
    /// Stored, and it completed `piece`, which failed its hash check (its blocks are wanted
    /// again).
    Failed {
        /// The piece.
        piece: u32,
        /// Its length in bytes.
        length: u32,
    },
    /// Not wanted (never requested, or already have it).
    Unwanted,
}

/// Receives blocks and picks what to request next. Shared by all connections of a torrent.
pub trait PieceSink: Send + Sync {
    /// Bytes still missing.
    fn remaining(&self) -> u64;
    /// The next block to request from a peer that has the pieces for which `peer_has` is true,
    /// marking it in progress; `None` if there is nothing to request from it.
    fn pick_block(&self, peer_has: &dyn Fn(u32) -> bool) -> Option<BlockRequest>;
    /// A requested block arrived.
    fn deliver(&self, request: BlockRequest, data: Bytes) -> Delivery;
    /// A block in progress will not arrive (rejected, choked, disconnected): pick it again.
    fn abandon(&self, request: BlockRequest);
}

/// Both halves: what one torrent needs to give the peer loop.
pub trait PieceStore: PieceSource + PieceSink {}

impl<T: PieceSource + PieceSink + ?Sized> PieceStore for T {}

/// Layout and piece hashes of a torrent (SHA-1 per piece, as in BitTorrent's `pieces`; this is
/// the reference adapter's own format, not a `.torrent` file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TorrentMeta {
    /// Total length in bytes.
    pub length: u64,
    /// Piece length in bytes (the last piece may be shorter).
    pub piece_length: u32,
    /// SHA-1 of each piece.
    pub hashes: Vec<[u8; 20]>,
}

impl TorrentMeta {
    /// Number of pieces.
    pub fn piece_count(&self) -> u32 {
        u32::try_from(self.hashes.len()).unwrap_or(u32::MAX)
    }

    /// Length of `piece` (0 if out of range).
    pub fn piece_len(&self, piece: u32) -> u32 {
        let start = u64::from(piece) * u64::from(self.piece_length);
        let len = self
            .length
            .saturating_sub(start)
            .min(u64::from(self.piece_length));
        u32::try_from(len).unwrap_or(0)
    }
}

#[derive(Debug)]
struct State {
    data: Vec<u8>,
    have: Vec<bool>,
    /// Received blocks of incomplete pieces, by (piece, begin).
    received: HashSet<(u32, u32)>,
    in_progress: HashSet<(u32, u32)>,
    remaining: u64,
}

/// An in-memory torrent: a seed ([`MemoryTorrent::seed`]) or an empty copy to download into
/// ([`MemoryTorrent::empty`]). Blocks are 16 KiB and picked in order.
#[derive(Debug)]
pub struct MemoryTorrent {
    meta: TorrentMeta,
    block: u32,
    state: Mutex<State>,
}

/// The block size [`MemoryTorrent`] requests (16 KiB).
pub const BLOCK_LEN: u32 = 16 * 1024;

impl MemoryTorrent {
    /// A complete torrent holding `data`, cut in pieces of `piece_length` bytes.
    pub fn seed(data: Vec<u8>, piece_length: u32) -> Self {
        let piece_length = piece_length.max(1);
        let hashes = data
            .chunks(piece_length as usize)
            .map(|piece| Sha1::digest(piece).into())
            .collect::<Vec<[u8; 20]>>();
        let meta = TorrentMeta {
            length: data.len() as u64,
            piece_length,
            hashes,
        };
        let have = vec![true; meta.hashes.len()];
        Self {
            block: BLOCK_LEN,
            state: Mutex::new(State {
                data,
                have,
                received: HashSet::new(),
                in_progress: HashSet::new(),
                remaining: 0,
            }),
            meta,
        }
    }

    /// An empty torrent with this layout, to download into.
    pub fn empty(meta: TorrentMeta) -> Self {
        let len = usize::try_from(meta.length).unwrap_or(0);
        Self {
            block: BLOCK_LEN,
            state: Mutex::new(State {
                data: vec![0; len],
                have: vec![false; meta.hashes.len()],
                received: HashSet::new(),
                in_progress: HashSet::new(),
                remaining: meta.length,
            }),
            meta,
        }
    }

    /// Layout and hashes.
    pub fn meta(&self) -> &TorrentMeta {
        &self.meta
    }

    /// A copy of the data (meaningful once complete).
    pub fn data(&self) -> Vec<u8> {
        self.lock().data.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Plain data: a panic elsewhere leaves it usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn range(&self, request: BlockRequest) -> Option<std::ops::Range<usize>> {
        let piece_len = self.meta.piece_len(request.index);
        let end = request.begin.checked_add(request.length)?;
        if request.length == 0 || end > piece_len {
            return None;
        }
        let start =
            u64::from(request.index) * u64::from(self.meta.piece_length) + u64::from(request.begin);
        let start = usize::try_from(start).ok()?;
        Some(start..start.checked_add(request.length as usize)?)
    }
}

impl PieceSource for MemoryTorrent {
    fn piece_count(&self) -> u32 {
        self.meta.piece_count()
    }

    fn has_piece(&self, piece: u32) -> bool {
        self.lock()
            .have
            .get(piece as usize)
            .copied()
            .unwrap_or(false)
    }

    fn read_block(&self, request: BlockRequest) -> Option<Bytes> {
        let range = self.range(request)?;
        let state = self.lock();
        if !state.have.get(request.index as usize).copied()? {
            return None;
        }
        state.data.get(range).map(Bytes::copy_from_slice)
    }
}

impl PieceSink for MemoryTorrent {
    fn remaining(&self) -> u64 {
        self.lock().remaining
    }

    fn pick_block(&self, peer_has: &dyn Fn(u32) -> bool) -> Option<BlockRequest> {
        let mut state = self.lock();
        for piece in 0..self.meta.piece_count() {
            if state.have[piece as usize] || !peer_has(piece) {
                continue;
            }
            let len = self.meta.piece_len(piece);
            let mut begin = 0;
            while begin < len {
                let key = (piece, begin);
                if !state.received.contains(&key) && !state.in_progress.contains(&key) {
                    state.in_progress.insert(key);
                    return Some(BlockRequest {
                        index: piece,
                        begin,
                        length: self.block.min(len - begin),
                    });
                }
                begin += self.block;
            }
        }
        None
    }

    fn deliver(&self, request: BlockRequest, data: Bytes) -> Delivery {
        let Some(range) = self.range(request) else {
            return Delivery::Unwanted;
        };
        let key = (request.index, request.begin);
        let mut state = self.lock();
        if !state.in_progress.remove(&key) || data.len() != range.len() {
            return Delivery::Unwanted;
        }
        state.data[range].copy_from_slice(&data);
        state.received.insert(key);
        let piece = request.index;
        let len = self.meta.piece_len(piece);
        let complete = (0..len)
            .step_by(self.block as usize)
            .all(|b| state.received.contains(&(piece, b)));
        if !complete {
            return Delivery::Stored;
        }
        for b in (0..len).step_by(self.block as usize) {
            state.received.remove(&(piece, b));
        }
        let start = piece as usize * self.meta.piece_length as usize;
        let hash: [u8; 20] = Sha1::digest(&state.data[start..start + len as usize]).into();
        if self.meta.hashes.get(piece as usize) == Some(&hash) {
            state.have[piece as usize] = true;
            state.remaining = state.remaining.saturating_sub(u64::from(len));
            Delivery::Verified { piece, length: len }
        } else {
            Delivery::Failed { piece, length: len }
        }
    }

    fn abandon(&self, request: BlockRequest) {
        self.lock()
            .in_progress
            .remove(&(request.index, request.begin));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_serves_and_empty_copy_verifies() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let seed = MemoryTorrent::seed(data.clone(), 32 * 1024);
        assert_eq!(seed.piece_count(), 4);
        assert_eq!(seed.meta().piece_len(3), 100_000 - 3 * 32 * 1024);
        let copy = MemoryTorrent::empty(seed.meta().clone());
        assert_eq!(copy.remaining(), 100_000);
        let mut verified = 0;
        while let Some(r) = copy.pick_block(&|_| true) {
            let block = seed.read_block(r).unwrap();
            match copy.deliver(r, block) {
                Delivery::Verified { length, .. } => verified += u64::from(length),
                Delivery::Stored => {}
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(verified, 100_000);
        assert_eq!(copy.remaining(), 0);
        assert_eq!(copy.data(), data);
        // Unrequested and out-of-range blocks are unwanted; reads past the end are refused.
        let r = BlockRequest::new(0, 0, BLOCK_LEN);
        assert_eq!(
            copy.deliver(r, Bytes::from(vec![0; 16384])),
            Delivery::Unwanted
        );
        assert_eq!(seed.read_block(BlockRequest::new(3, 0, 32 * 1024)), None);
        assert_eq!(seed.read_block(BlockRequest::new(9, 0, 1)), None);
    }

    #[test]
    fn corrupt_piece_fails_and_is_wanted_again() {
        let seed = MemoryTorrent::seed(vec![7; 20_000], 20_000);
        let copy = MemoryTorrent::empty(seed.meta().clone());
        let a = copy.pick_block(&|_| true).unwrap();
        let b = copy.pick_block(&|_| true).unwrap();
        assert_eq!(copy.pick_block(&|_| true), None);
        assert_eq!(
            copy.deliver(a, seed.read_block(a).unwrap()),
            Delivery::Stored
        );
        let bad = Bytes::from(vec![0; b.length as usize]);
        assert_eq!(
            copy.deliver(b, bad),
            Delivery::Failed {
                piece: 0,
                length: 20_000
            }
        );
        assert_eq!(copy.pick_block(&|_| true), Some(a));
        copy.abandon(a);
        assert_eq!(copy.pick_block(&|_| false), None);
    }
}
