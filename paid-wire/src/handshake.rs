//! The BEP 3 handshake: `<19>"BitTorrent protocol"<8 reserved><20 info_hash><20 peer_id>`.
//!
//! It is the first thing each side sends, exactly 68 bytes, without a length prefix. The
//! [`Reserved`] bytes announce optional protocol extensions; this crate names the three that
//! matter to a paid seeder (BEP 10 extension protocol, BEP 6 fast extension, BEP 5 DHT) and
//! keeps every other bit as received.
//!
//! Comparing `info_hash` with the torrent being served (BEP 3: a peer whose info_hash differs
//! is disconnected) is the caller's job.

use bytes::{Buf, BufMut};

use crate::error::DecodeError;

/// The BEP 3 protocol string.
pub const PROTOCOL: &[u8; 19] = b"BitTorrent protocol";

/// Encoded size of a handshake.
pub const HANDSHAKE_LEN: usize = 68;

/// The 8 reserved bytes of the handshake, with typed accessors for the known bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Reserved(pub [u8; 8]);

impl Reserved {
    // BEP 10: "the bit selected for the extension protocol is bit 20 from the right".
    const EXTENSION_PROTOCOL: (usize, u8) = (5, 0x10);
    // BEP 6: "The Fast Extension is enabled by setting the third least significant bit of the
    // last reserved byte".
    const FAST: (usize, u8) = (7, 0x04);
    // BEP 5: "the last bit in the 8-byte reserved flags exchanged in the BitTorrent handshake".
    const DHT: (usize, u8) = (7, 0x01);

    /// No bits set.
    pub const fn empty() -> Self {
        Self([0; 8])
    }

    fn get(&self, (byte, mask): (usize, u8)) -> bool {
        self.0[byte] & mask != 0
    }

    fn set(&mut self, (byte, mask): (usize, u8), on: bool) {
        if on {
            self.0[byte] |= mask;
        } else {
            self.0[byte] &= !mask;
        }
    }

    /// BEP 10 extension protocol (`reserved[5] & 0x10`).
    pub fn extension_protocol(&self) -> bool {
        self.get(Self::EXTENSION_PROTOCOL)
    }

    /// Sets or clears the BEP 10 extension protocol bit.
    pub fn set_extension_protocol(&mut self, on: bool) {
        self.set(Self::EXTENSION_PROTOCOL, on);
    }

    /// BEP 6 fast extension (`reserved[7] & 0x04`). It is in effect only if both sides set it.
    pub fn fast(&self) -> bool {
        self.get(Self::FAST)
    }

    /// Sets or clears the BEP 6 fast extension bit.
    pub fn set_fast(&mut self, on: bool) {
        self.set(Self::FAST, on);
    }

    /// BEP 5 DHT (`reserved[7] & 0x01`).
    pub fn dht(&self) -> bool {
        self.get(Self::DHT)
    }

    /// Sets or clears the BEP 5 DHT bit.
    pub fn set_dht(&mut self, on: bool) {
        self.set(Self::DHT, on);
    }

    /// Builder form of [`set_extension_protocol`](Self::set_extension_protocol).
    pub fn with_extension_protocol(mut self, on: bool) -> Self {
        self.set_extension_protocol(on);
        self
    }

    /// Builder form of [`set_fast`](Self::set_fast).
    pub fn with_fast(mut self, on: bool) -> Self {
        self.set_fast(on);
        self
    }

    /// Builder form of [`set_dht`](Self::set_dht).
    pub fn with_dht(mut self, on: bool) -> Self {
        self.set_dht(on);
        self
    }
}

/// The BEP 3 handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Handshake {
    /// Extension bits.
    pub reserved: Reserved,
    /// SHA-1 of the torrent's info dictionary.
    pub info_hash: [u8; 20],
    /// The sender's peer id.
    pub peer_id: [u8; 20],
}

impl Handshake {
    /// Creates a handshake.
    pub const fn new(reserved: Reserved, info_hash: [u8; 20], peer_id: [u8; 20]) -> Self {
        Self {
            reserved,
            info_hash,
            peer_id,
        }
    }

    /// Always [`HANDSHAKE_LEN`].
    pub const fn encoded_len(&self) -> usize {
        HANDSHAKE_LEN
    }

    /// Writes the 68 bytes to `dst`.
    ///
    /// # Panics
    ///
    /// Like [`BufMut::put_slice`], if `dst` is a fixed-size buffer with less than 68 bytes of
    /// room. Growable buffers (`Vec<u8>`, `BytesMut`) never panic.
    pub fn encode<B: BufMut>(&self, dst: &mut B) {
        dst.put_slice(&self.to_bytes());
    }

    /// The 68 encoded bytes.
    pub fn to_bytes(&self) -> [u8; HANDSHAKE_LEN] {
        let mut out = [0u8; HANDSHAKE_LEN];
        let mut dst = &mut out[..];
        dst.put_u8(PROTOCOL.len() as u8);
        dst.put_slice(PROTOCOL);
        dst.put_slice(&self.reserved.0);
        dst.put_slice(&self.info_hash);
        dst.put_slice(&self.peer_id);
        out
    }

    /// Checks as much of a handshake prefix as is available (any length).
    ///
    /// Lets a streaming decoder reject a non-BitTorrent peer after the first byte.
    pub fn check_prefix(prefix: &[u8]) -> Result<(), DecodeError> {
        if let Some(&got) = prefix.first()
            && usize::from(got) != PROTOCOL.len()
        {
            return Err(DecodeError::HandshakePstrLen { got });
        }
        let pstr = prefix.get(1..).unwrap_or_default();
        let n = pstr.len().min(PROTOCOL.len());
        if pstr.get(..n) != PROTOCOL.get(..n) {
            return Err(DecodeError::HandshakePstr);
        }
        Ok(())
    }

    /// Decodes 68 bytes from the front of `src` and advances past them.
    ///
    /// Returns [`DecodeError::Incomplete`] without consuming anything if fewer than 68 bytes are
    /// available and the available prefix is valid; a bad prefix is reported at once.
    pub fn decode<B: Buf>(src: &mut B) -> Result<Self, DecodeError> {
        let remaining = src.remaining();
        let chunk = src.chunk();
        Self::check_prefix(&chunk[..chunk.len().min(HANDSHAKE_LEN)])?;
        if remaining < HANDSHAKE_LEN {
            return Err(DecodeError::Incomplete {
                needed: HANDSHAKE_LEN - remaining,
            });
        }
        let mut raw = [0u8; HANDSHAKE_LEN];
        src.copy_to_slice(&mut raw);
        Self::check_prefix(&raw)?;
        Ok(Self::from_bytes(&raw))
    }

    fn from_bytes(raw: &[u8; HANDSHAKE_LEN]) -> Self {
        let mut reserved = [0u8; 8];
        let mut info_hash = [0u8; 20];
        let mut peer_id = [0u8; 20];
        reserved.copy_from_slice(&raw[20..28]);
        info_hash.copy_from_slice(&raw[28..48]);
        peer_id.copy_from_slice(&raw[48..68]);
        Self {
            reserved: Reserved(reserved),
            info_hash,
            peer_id,
        }
    }
}
