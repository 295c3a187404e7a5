//! Piece and block selection: rarest-first (or sequential), finish started pieces first,
//! endgame duplicates at the end, and in-memory assembly of pieces until they verify.
//!
//! The picker is shared by every peer connection of a torrent (behind a lock); it does no I/O.
//! A peer loop asks it for requests ([`Picker::pick`]), hands it the blocks that arrive
//! ([`Picker::on_block`]), gives back requests that will not be answered
//! ([`Picker::abandon`]), and reports the verification result of each completed piece
//! ([`Picker::piece_verified`]).

use std::collections::BTreeMap;

use paid_wire::message::BlockRequest;

use crate::bitfield::Bitfield;

/// Block size used for requests: 16 KiB, what every client uses (BEP 3).
pub const BLOCK_SIZE: u32 = 16 * 1024;

/// Largest number of peers asked for the same block in endgame mode.
const MAX_DUPLICATES: u8 = 3;

/// Order in which new pieces are started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strategy {
    /// The piece the fewest connected peers have (random among equals): what keeps a swarm
    /// healthy.
    #[default]
    RarestFirst,
    /// Lowest index first: for streaming playback.
    Sequential,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Block {
    Missing,
    /// Outstanding at this many peers.
    Requested(u8),
    Received,
}

#[derive(Debug)]
struct Partial {
    blocks: Vec<Block>,
    data: Vec<u8>,
    received: usize,
}

/// What became of a block handed to [`Picker::on_block`].
#[derive(Debug, PartialEq, Eq)]
pub enum BlockOutcome {
    /// Not wanted (already have it, never requested, or malformed): drop it.
    Ignored,
    /// Stored; the piece is not complete yet.
    Stored,
    /// The piece is complete: verify `data` and report with [`Picker::piece_verified`].
    PieceComplete {
        /// Piece index.
        index: u32,
        /// The whole piece.
        data: Vec<u8>,
    },
}

/// Piece picker and assembler for one torrent.
#[derive(Debug)]
pub struct Picker {
    strategy: Strategy,
    piece_length: u32,
    total_length: u64,
    have: Bitfield,
    /// Pieces complete and waiting for verification.
    verifying: Bitfield,
    availability: Vec<u32>,
    partial: BTreeMap<u32, Partial>,
    rng: u64,
}

impl Picker {
    /// A picker for a torrent of `total_length` bytes in pieces of `piece_length`, of which
    /// `have` are already verified.
    pub fn new(piece_length: u32, total_length: u64, have: Bitfield, strategy: Strategy) -> Self {
        let n = have.len();
        Self {
            strategy,
            piece_length,
            total_length,
            verifying: Bitfield::new(n),
            availability: vec![0; n as usize],
            have,
            partial: BTreeMap::new(),
            rng: 0x9e37_79b9_7f4a_7c15 ^ total_length,
        }
    }

    /// The verified pieces.
    pub fn have(&self) -> &Bitfield {
        &self.have
    }

    /// Whether every piece is verified.
    pub fn is_complete(&self) -> bool {
        self.have.is_full()
    }

    /// Bytes still missing (not verified).
    pub fn bytes_left(&self) -> u64 {
        (0..self.have.len())
            .filter(|&i| !self.have.get(i))
            .map(|i| u64::from(self.piece_size(i)))
            .sum()
    }

    /// Size of piece `index`.
    pub fn piece_size(&self, index: u32) -> u32 {
        let start = u64::from(index) * u64::from(self.piece_length);
        if index >= self.have.len() || start >= self.total_length {
            return 0;
        }
        (self.total_length - start).min(u64::from(self.piece_length)) as u32
    }

    /// A peer announced these pieces (bitfield or have-all).
    pub fn add_availability(&mut self, peer: &Bitfield) {
        for i in peer.ones() {
            self.availability[i as usize] += 1;
        }
    }

    /// A peer announced one piece (`have`).
    pub fn add_piece_availability(&mut self, index: u32) {
        if let Some(a) = self.availability.get_mut(index as usize) {
            *a += 1;
        }
    }

    /// A peer with these pieces disconnected.
    pub fn remove_availability(&mut self, peer: &Bitfield) {
        for i in peer.ones() {
            let a = &mut self.availability[i as usize];
            *a = a.saturating_sub(1);
        }
    }

    /// Whether `peer` has a piece we lack (i.e. we are interested).
    pub fn wants_from(&self, peer: &Bitfield) -> bool {
        peer.ones().any(|i| !self.have.get(i))
    }

    /// Up to `max` new requests to send to a peer that has `peer`; `outstanding` are the
    /// requests already in flight to that peer (never repeated to it).
    ///
    /// With `endgame`, once every missing block is requested somewhere, blocks in flight at
    /// other peers are requested from this one too (up to 3 copies). A paid download turns it
    /// off: a duplicate block is paid for twice.
    pub fn pick(
        &mut self,
        peer: &dyn Fn(u32) -> bool,
        max: usize,
        outstanding: &[BlockRequest],
        endgame: bool,
    ) -> Vec<BlockRequest> {
        let mut out = Vec::new();
        // 1. Missing blocks of started pieces.
        self.pick_from_partials(peer, max, &mut out, outstanding, |b| b == Block::Missing);
        // 2. Start new pieces.
        while out.len() < max {
            let Some(index) = self.next_piece(peer) else {
                break;
            };
            let size = self.piece_size(index) as usize;
            self.partial.insert(
                index,
                Partial {
                    blocks: vec![Block::Missing; size.div_ceil(BLOCK_SIZE as usize)],
                    data: vec![0; size],
                    received: 0,
                },
            );
            self.pick_from_partials(peer, max, &mut out, outstanding, |b| b == Block::Missing);
        }
        // 3. Endgame: every missing block is requested somewhere; ask this peer too.
        if endgame && out.len() < max {
            self.pick_from_partials(
                peer,
                max,
                &mut out,
                outstanding,
                |b| matches!(b, Block::Requested(n) if n < MAX_DUPLICATES),
            );
        }
        out
    }

    fn pick_from_partials(
        &mut self,
        peer: &dyn Fn(u32) -> bool,
        max: usize,
        out: &mut Vec<BlockRequest>,
        exclude: &[BlockRequest],
        eligible: impl Fn(Block) -> bool,
    ) {
        for (&index, p) in self.partial.iter_mut() {
            if !peer(index) {
                continue;
            }
            let size = p.data.len() as u32;
            for (i, b) in p.blocks.iter_mut().enumerate() {
                if out.len() >= max {
                    return;
                }
                if !eligible(*b) {
                    continue;
                }
                let begin = i as u32 * BLOCK_SIZE;
                let req = BlockRequest::new(index, begin, (size - begin).min(BLOCK_SIZE));
                if out.contains(&req) || exclude.contains(&req) {
                    continue;
                }
                *b = match *b {
                    Block::Requested(n) => Block::Requested(n + 1),
                    _ => Block::Requested(1),
                };
                out.push(req);
            }
        }
    }

    fn next_piece(&mut self, peer: &dyn Fn(u32) -> bool) -> Option<u32> {
        let candidates = (0..self.have.len()).filter(|&i| {
            peer(i) && !self.have.get(i) && !self.verifying.get(i) && !self.partial.contains_key(&i)
        });
        match self.strategy {
            Strategy::Sequential => candidates.min(),
            Strategy::RarestFirst => {
                // xorshift for the tie-break: no need for a cryptographic RNG here.
                self.rng ^= self.rng << 13;
                self.rng ^= self.rng >> 7;
                self.rng ^= self.rng << 17;
                let salt = self.rng;
                let avail = &self.availability;
                candidates.min_by_key(|&i| {
                    let mix = (u64::from(i) ^ salt).wrapping_mul(0x2545_f491_4f6c_dd1d);
                    (avail[i as usize], mix >> 32)
                })
            }
        }
    }

    /// A request will not be answered (peer choked us, rejected it, timed out or left).
    pub fn abandon(&mut self, req: &BlockRequest) {
        if let Some(b) = self
            .partial
            .get_mut(&req.index)
            .and_then(|p| p.blocks.get_mut((req.begin / BLOCK_SIZE) as usize))
        {
            *b = match *b {
                Block::Requested(n) if n > 1 => Block::Requested(n - 1),
                Block::Requested(_) => Block::Missing,
                other => other,
            };
        }
    }

    /// A block arrived.
    pub fn on_block(&mut self, index: u32, begin: u32, data: &[u8]) -> BlockOutcome {
        let Some(p) = self.partial.get_mut(&index) else {
            return BlockOutcome::Ignored;
        };
        let size = p.data.len() as u32;
        if !begin.is_multiple_of(BLOCK_SIZE)
            || begin >= size
            || data.len() as u32 != (size - begin).min(BLOCK_SIZE)
        {
            return BlockOutcome::Ignored;
        }
        let slot = &mut p.blocks[(begin / BLOCK_SIZE) as usize];
        if *slot == Block::Received {
            return BlockOutcome::Ignored;
        }
        *slot = Block::Received;
        p.data[begin as usize..begin as usize + data.len()].copy_from_slice(data);
        p.received += 1;
        if p.received < p.blocks.len() {
            return BlockOutcome::Stored;
        }
        let done = self
            .partial
            .remove(&index)
            .map(|p| p.data)
            .unwrap_or_default();
        self.verifying.set(index);
        BlockOutcome::PieceComplete { index, data: done }
    }

    /// The verification (and write) of a completed piece finished: `ok` marks it as had,
    /// otherwise it is downloaded again.
    pub fn piece_verified(&mut self, index: u32, ok: bool) {
        self.verifying.clear(index);
        if ok {
            self.have.set(index);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fill(p: &mut Picker, reqs: &[BlockRequest]) -> Vec<(u32, Vec<u8>)> {
        let mut done = Vec::new();
        for r in reqs {
            let data = vec![r.index as u8; r.length as usize];
            if let BlockOutcome::PieceComplete { index, data } = p.on_block(r.index, r.begin, &data)
            {
                done.push((index, data));
            }
        }
        done
    }

    #[test]
    fn sequential_download_with_short_last_piece() {
        // 3 pieces of 40 KiB (3 blocks: 16+16+8) and a last piece of 10 bytes.
        let total = 3 * 40 * 1024 + 10;
        let mut p = Picker::new(40 * 1024, total, Bitfield::new(4), Strategy::Sequential);
        let peer = |_| true;
        let reqs = p.pick(&peer, 100, &[], true);
        assert_eq!(reqs.len(), 10);
        assert_eq!(reqs[0], BlockRequest::new(0, 0, BLOCK_SIZE));
        assert_eq!(reqs[2], BlockRequest::new(0, 32768, 8192));
        assert_eq!(reqs[9], BlockRequest::new(3, 0, 10));
        // Everything is requested once; the endgame must not repeat them to the same peer.
        assert!(p.pick(&peer, 100, &reqs, true).is_empty());
        // A malformed block is ignored.
        assert_eq!(p.on_block(0, 1, &[0; 10]), BlockOutcome::Ignored);
        let done = fill(&mut p, &reqs);
        assert_eq!(done.len(), 4);
        assert_eq!(done[3].1.len(), 10);
        for (i, _) in &done {
            p.piece_verified(*i, *i != 2);
        }
        assert!(!p.is_complete());
        assert_eq!(p.bytes_left(), 40 * 1024);
        let again = p.pick(&peer, 100, &[], true);
        assert_eq!(
            again.iter().map(|r| r.index).collect::<Vec<_>>(),
            vec![2, 2, 2]
        );
        let done = fill(&mut p, &again);
        p.piece_verified(done[0].0, true);
        assert!(p.is_complete());
    }

    #[test]
    fn rarest_first_endgame_and_abandon() {
        let mut p = Picker::new(
            BLOCK_SIZE,
            4 * u64::from(BLOCK_SIZE),
            Bitfield::new(4),
            Strategy::RarestFirst,
        );
        let all = Bitfield::full(4);
        let mut some = Bitfield::new(4);
        some.set(2);
        p.add_availability(&all);
        p.add_availability(&all);
        p.add_availability(&some);
        p.add_piece_availability(1);
        // Pieces 0 and 3 are the rarest.
        let any = |_| true;
        let first = p.pick(&any, 2, &[], true);
        let mut idx: Vec<u32> = first.iter().map(|r| r.index).collect();
        idx.sort();
        assert_eq!(idx, vec![0, 3]);
        let rest = p.pick(&any, 2, &first, true);
        assert_eq!(rest.len(), 2);
        // Without endgame, nothing is left to ask for.
        assert!(p.pick(&any, 10, &[], false).is_empty());
        // Endgame: another peer gets duplicates of in-flight blocks.
        let dup = p.pick(&any, 10, &[], true);
        assert_eq!(dup.len(), 4);
        // Abandon brings a block back to missing once no one has it outstanding.
        p.abandon(&first[0]);
        p.abandon(&first[0]);
        let again = p.pick(&any, 1, &[], true);
        assert_eq!(again, vec![first[0]]);
        assert!(p.wants_from(&some));
    }
}
