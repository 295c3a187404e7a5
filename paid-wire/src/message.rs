//! Peer-wire messages (BEP 3, BEP 6, BEP 10).

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
