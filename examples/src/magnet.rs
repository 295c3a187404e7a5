//! Magnet links (BEP 9): `magnet:?xt=urn:btih:<info-hash>&dn=<name>&tr=<tracker>&x.pe=<peer>`,
//! and fetching the info dictionary they name from peers ([`fetch_metadata`], BEP 9
//! `ut_metadata` over BEP 10), verified against the info-hash.
//!
//! ```
//! use paid_torrent_examples::magnet::Magnet;
//! let m: Magnet = "magnet:?xt=urn:btih:c12fe1c06bba254a9dc9f519b335aa7c1367a88a&dn=a%20b&tr=udp%3A%2F%2Ft%3A1"
//!     .parse()
//!     .unwrap();
//! assert_eq!(m.name.as_deref(), Some("a b"));
//! assert_eq!(m.trackers, ["udp://t:1"]);
//! assert_eq!(m.to_string().parse::<Magnet>().unwrap(), m);
//! ```

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use alloy_primitives::hex;
use futures_util::{SinkExt, StreamExt};
use paid_wire::codec::PeerCodec;
use paid_wire::error::MetadataError;
use paid_wire::extended::{ExtendedHandshake, ExtensionIds, HANDSHAKE_ID};
use paid_wire::handshake::{Handshake, Reserved};
use paid_wire::message::Message;
use paid_wire::metadata::{self, MetadataDownload, MetadataMessage, Progress};
use tokio::net::TcpStream;
use url::Url;
use url::form_urlencoded;

use crate::error::{MetainfoError, PeerError};
use crate::metainfo::{HASH_LEN, Metainfo, sha1};
use crate::peer::{self, UT_METADATA_ID};

/// What a magnet link names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Magnet {
    /// The v1 info-hash (`xt=urn:btih:`, 40 hex digits or 32 base32 characters).
    pub info_hash: [u8; HASH_LEN],
    /// The display name (`dn`), if given.
    pub name: Option<String>,
    /// Tracker URLs (`tr`), in order.
    pub trackers: Vec<String>,
    /// Peer addresses (`x.pe`, `HOST:PORT`).
    pub peers: Vec<String>,
}

/// A magnet link that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a BitTorrent magnet link: {0}")]
pub struct MagnetError(String);

impl FromStr for Magnet {
    type Err = MagnetError;

    fn from_str(s: &str) -> Result<Self, MagnetError> {
        let url = Url::parse(s).map_err(|e| MagnetError(e.to_string()))?;
        if url.scheme() != "magnet" {
            return Err(MagnetError(format!("scheme `{}`", url.scheme())));
        }
        let (mut info_hash, mut name, mut trackers, mut peers) =
            (None, None, Vec::new(), Vec::new());
        for (k, v) in url.query_pairs() {
            match k.as_ref() {
                "xt" => {
                    if let Some(h) = v.strip_prefix("urn:btih:") {
                        info_hash = Some(parse_btih(h)?);
                    }
                }
                "dn" => name = Some(v.into_owned()),
                "tr" => trackers.push(v.into_owned()),
                "x.pe" => peers.push(v.into_owned()),
                _ => {}
            }
        }
        Ok(Self {
            info_hash: info_hash.ok_or_else(|| MagnetError("no `xt=urn:btih:`".into()))?,
            name,
            trackers,
            peers,
        })
    }
}

/// The info-hash of `xt=urn:btih:`: 40 hex digits, or 32 characters of RFC 4648 base32 (the
/// older form; either case).
fn parse_btih(h: &str) -> Result<[u8; HASH_LEN], MagnetError> {
    let bytes = match h.len() {
        40 => hex::decode(h).map_err(|_| MagnetError(format!("`{h}` is not hex")))?,
        32 => data_encoding::BASE32_NOPAD
            .decode(h.to_ascii_uppercase().as_bytes())
            .map_err(|_| MagnetError(format!("`{h}` is not base32")))?,
        n => return Err(MagnetError(format!("an info-hash of {n} characters"))),
    };
    <[u8; HASH_LEN]>::try_from(bytes.as_slice())
        .map_err(|_| MagnetError(format!("`{h}` is not a 20-byte info-hash")))
}

impl fmt::Display for Magnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "magnet:?xt=urn:btih:{}", hex::encode(self.info_hash))?;
        let mut q = form_urlencoded::Serializer::new(String::new());
        if let Some(n) = &self.name {
            q.append_pair("dn", n);
        }
        for t in &self.trackers {
            q.append_pair("tr", t);
        }
        for p in &self.peers {
            q.append_pair("x.pe", p);
        }
        let q = q.finish();
        if !q.is_empty() {
            write!(f, "&{q}")?;
        }
        Ok(())
    }
}

impl Magnet {
    /// The torrent once its info dictionary (`raw_info`, fetched from peers) is known: the
    /// link's trackers, one tier each (BEP 12). Fails if `raw_info` is not this link's (its
    /// SHA-1 is not the info-hash) or not a valid info dictionary.
    pub fn metainfo(&self, raw_info: &[u8]) -> Result<Metainfo, FetchError> {
        if sha1(raw_info) != self.info_hash {
            return Err(FetchError::HashMismatch);
        }
        Metainfo::from_raw_info(raw_info, &self.trackers).map_err(FetchError::Invalid)
    }
}

/// Why a peer did not give us the metadata.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// Connecting, the handshake or the connection failed.
    #[error(transparent)]
    Peer(#[from] PeerError),
    /// The peer does not speak BEP 10 or did not advertise `ut_metadata`.
    #[error("it does not offer metadata (no BEP 9 ut_metadata)")]
    Unsupported,
    /// The peer advertised `ut_metadata` but no `metadata_size`: it has no metadata itself.
    #[error("it does not have the metadata (no metadata_size)")]
    NoMetadata,
    /// The peer sent a malformed `ut_metadata` message or one that does not fit the metadata.
    #[error("bad ut_metadata message: {0}")]
    Metadata(#[from] MetadataError),
    /// The peer refused a piece of the metadata.
    #[error("it refused metadata piece {0}")]
    Rejected(u32),
    /// What the peer sent is not the metadata of this info-hash.
    #[error("its metadata does not match the info-hash (SHA-1)")]
    HashMismatch,
    /// The metadata matches the info-hash but is not a valid info dictionary.
    #[error("the metadata is not a valid info dictionary: {0}")]
    Invalid(MetainfoError),
}

impl FetchError {
    /// Whether the peer is at fault (sent something wrong), as opposed to being unreachable or
    /// not offering metadata.
    pub fn is_misbehaviour(&self) -> bool {
        matches!(
            self,
            Self::Metadata(_) | Self::HashMismatch | Self::Peer(PeerError::Protocol(_))
        )
    }
}

/// Asks the peers at `peers`, one after the other, for the info dictionary of `info_hash`,
/// each for at most `timeout`; returns the first that matches the info-hash (its SHA-1), and
/// reports every peer that failed, with why, to `failed`.
pub async fn fetch_metadata(
    info_hash: [u8; HASH_LEN],
    peer_id: [u8; 20],
    peers: &[SocketAddr],
    timeout: Duration,
    mut failed: impl FnMut(SocketAddr, FetchError),
) -> Option<Vec<u8>> {
    for &addr in peers {
        let attempt = fetch_from(addr, info_hash, peer_id, timeout);
        match tokio::time::timeout(timeout, attempt).await {
            Ok(Ok(raw)) => return Some(raw),
            Ok(Err(e)) => failed(addr, e),
            Err(_) => failed(addr, PeerError::Timeout("metadata").into()),
        }
    }
    None
}

/// One peer's metadata: handshakes advertising `ut_metadata` (without a `metadata_size`: we
/// have none), every piece requested at once, the whole checked against the info-hash.
pub async fn fetch_from(
    addr: SocketAddr,
    info_hash: [u8; HASH_LEN],
    peer_id: [u8; 20],
    timeout: Duration,
) -> Result<Vec<u8>, FetchError> {
    let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| PeerError::Timeout("connect"))?
        .map_err(PeerError::Io)?;
    let ours = Handshake::new(
        Reserved::empty().with_extension_protocol(true),
        info_hash,
        peer_id,
    );
    let (framed, theirs) = peer::handshake(stream, ours, true, timeout).await?;
    if !theirs.reserved.extension_protocol() {
        return Err(FetchError::Unsupported);
    }
    let mut framed = framed.map_codec(|_| PeerCodec::new());
    let mut ids = ExtensionIds::new();
    // Never fails: the id is not 0 and the table is empty.
    let _ = ids.set_local(metadata::EXTENSION_NAME, UT_METADATA_ID);
    let mut hs = ids.local_handshake();
    hs.v = Some(concat!("paid-torrent ", env!("CARGO_PKG_VERSION")).into());
    framed
        .send(hs.to_message())
        .await
        .map_err(PeerError::from)?;
    let mut download: Option<(MetadataDownload, u8)> = None;
    loop {
        let msg = framed
            .next()
            .await
            .ok_or(PeerError::Closed)?
            .map_err(PeerError::from)?;
        let Message::Extended { id, payload } = msg else {
            // Bitfield, have, keep-alive…: not what we came for.
            continue;
        };
        if id == HANDSHAKE_ID {
            let hs = ExtendedHandshake::decode(&payload)
                .map_err(|e| PeerError::Protocol(format!("extended handshake: {e}")))?;
            ids.apply_peer_handshake_known(&hs);
            if download.is_some() {
                continue;
            }
            let their_id = ids
                .peer_id(metadata::EXTENSION_NAME)
                .ok_or(FetchError::Unsupported)?;
            let size = hs.metadata_size.ok_or(FetchError::NoMetadata)?;
            let mut d = MetadataDownload::new(size)?;
            while let Some(request) = d.next_request() {
                framed
                    .feed(request.to_message(their_id))
                    .await
                    .map_err(PeerError::from)?;
            }
            SinkExt::<Message>::flush(&mut framed)
                .await
                .map_err(PeerError::from)?;
            download = Some((d, their_id));
            continue;
        }
        if id != UT_METADATA_ID {
            continue;
        }
        let Some((d, their_id)) = download.as_mut() else {
            continue;
        };
        let msg = match MetadataMessage::decode(&payload) {
            Err(MetadataError::UnknownMessageType { .. }) => continue,
            Err(e) => return Err(e.into()),
            Ok(msg) => msg,
        };
        if let MetadataMessage::Request { piece } = msg {
            // We have no metadata to give.
            let reject = MetadataMessage::Reject { piece }.to_message(*their_id);
            framed.send(reject).await.map_err(PeerError::from)?;
            continue;
        }
        match d.handle(msg)? {
            Progress::Pending => {}
            Progress::Rejected(piece) => return Err(FetchError::Rejected(piece)),
            Progress::Complete(raw) if sha1(&raw) == info_hash => return Ok(raw),
            Progress::Complete(_) => return Err(FetchError::HashMismatch),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_and_base32_info_hashes() {
        let hex_form: Magnet = "magnet:?xt=urn:btih:c12fe1c06bba254a9dc9f519b335aa7c1367a88a"
            .parse()
            .unwrap();
        let b32: Magnet = "magnet:?xt=urn:btih:YEX6DQDLXISUVHOJ6UM3GNNKPQJWPKEK"
            .parse()
            .unwrap();
        assert_eq!(hex_form.info_hash, b32.info_hash);
        assert_eq!(hex_form.name, None);
    }

    #[test]
    fn bad_links_are_refused() {
        for bad in [
            // 32 characters, but not base32 (`1`, `8` are outside its alphabet).
            "magnet:?xt=urn:btih:1EX6DQDLXISUVHOJ6UM3GNNKPQJWPKE8",
            "http://example.com/?xt=urn:btih:c12fe1c06bba254a9dc9f519b335aa7c1367a88a",
            "magnet:?dn=x",
            "magnet:?xt=urn:btih:c12f",
            "magnet:?xt=urn:btih:zz2fe1c06bba254a9dc9f519b335aa7c1367a88a",
        ] {
            assert!(bad.parse::<Magnet>().is_err(), "{bad}");
        }
    }

    #[test]
    fn round_trip_with_escapes() {
        let m = Magnet {
            info_hash: [7; 20],
            name: Some("a&b c.bin".into()),
            trackers: vec!["http://t/announce?x=1&y=2".into(), "udp://u:80".into()],
            peers: vec!["127.0.0.1:6881".into()],
        };
        assert_eq!(m.to_string().parse::<Magnet>().unwrap(), m);
    }
}
