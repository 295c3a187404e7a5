//! The block request: its own module so that errors can name it without importing the
//! message codec (which imports the errors).

use bytes::{Buf, BufMut};

/// A block request as carried by `request`, `cancel` and `reject`: `<index><begin><length>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlockRequest {
    /// Zero-based piece index.
    pub index: u32,
    /// Byte offset within the piece.
    pub begin: u32,
    /// Requested length in bytes.
    pub length: u32,
}

impl BlockRequest {
    /// Encoded size: three big-endian `u32`s.
    pub const ENCODED_LEN: usize = 12;

    /// Creates a block request.
    pub const fn new(index: u32, begin: u32, length: u32) -> Self {
        Self {
            index,
            begin,
            length,
        }
    }

    pub(crate) fn get<B: Buf>(src: &mut B) -> Self {
        // Callers check the exact frame length first.
        Self {
            index: src.get_u32(),
            begin: src.get_u32(),
            length: src.get_u32(),
        }
    }

    pub(crate) fn put<B: BufMut>(&self, dst: &mut B) {
        dst.put_u32(self.index);
        dst.put_u32(self.begin);
        dst.put_u32(self.length);
    }
}
