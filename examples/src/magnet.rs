//! Magnet links (BEP 9): `magnet:?xt=urn:btih:<info-hash>&dn=<name>&tr=<tracker>&x.pe=<peer>`.
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
use std::str::FromStr;

use url::Url;
use url::form_urlencoded;

use crate::metainfo::HASH_LEN;

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

fn parse_btih(h: &str) -> Result<[u8; HASH_LEN], MagnetError> {
    let bytes = match h.len() {
        40 => hex::decode(h).map_err(|_| MagnetError(format!("`{h}` is not hex")))?,
        32 => base32(h).ok_or_else(|| MagnetError(format!("`{h}` is not base32")))?,
        n => return Err(MagnetError(format!("an info-hash of {n} characters"))),
    };
    let mut out = [0u8; HASH_LEN];
    out.copy_from_slice(&bytes);
    Ok(out)
}

/// RFC 4648 base32 without padding (the older magnet form of an info-hash: 32 characters).
fn base32(s: &str) -> Option<Vec<u8>> {
    let (mut bits, mut acc, mut out) = (0u32, 0u64, Vec::with_capacity(20));
    for c in s.bytes() {
        let v = match c.to_ascii_uppercase() {
            c @ b'A'..=b'Z' => c - b'A',
            c @ b'2'..=b'7' => c - b'2' + 26,
            _ => return None,
        };
        acc = (acc << 5) | u64::from(v);
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
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
