//! BEP 10 extension protocol: the extended handshake and the extension-id registry.
//!
//! # Extended handshake
//!
//! [`ExtendedHandshake`] is the bencoded dictionary sent as extended message id 0. The keys
//! defined by BEP 9/10 are typed fields (`m`, `v`, `p`, `reqq`, `yourip`, `metadata_size`);
//! **every other key is kept** in [`ExtendedHandshake::extra`] as a [`Value`], so web3torrent's
//! `pseAccount` and `outcomeAddress` (and anything a future client adds) round-trip. Typed
//! accessors exist for those two keys.
//!
//! Decoding policy:
//! - bounded by [`HANDSHAKE_LIMITS`]: at most 64 KiB, nesting depth 8, 1024 items in total;
//! - **unsorted keys are accepted, duplicate keys are rejected**, as for all bencode in this
//!   crate (see [`crate::bencode`] for the reasoning); encoding always emits sorted keys;
//! - a handshake whose canonical re-encoding would exceed those bounds (encoding always emits
//!   `m`) is rejected the same way, so whatever decodes can be re-encoded and decoded again;
//! - a BEP 9/10 key whose value has the wrong type or range (e.g. `p` not in `0..=65535`, `v`
//!   not UTF-8) is [`ExtendedError::InvalidField`];
//! - inside `m`, entries whose name is not UTF-8 or whose id is not an integer in `0..=255` are
//!   ignored (BEP 10: "Any unknown names should be ignored").
//!
//! # Extension ids
//!
//! BEP 10: "The IDs are local to the sender of the handshake". [`ExtensionIds`] keeps **our**
//! ids (advertised in our handshake; the peer sends to us with them, we dispatch incoming
//! messages by them) apart from **the peer's** ids (from its handshakes; we send with them).
//! Applying a later peer handshake is additive, and id 0 disables that name.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use bytes::{BufMut, Bytes};

use crate::bencode::{Limits, Value};
use crate::error::{ExtendedError, UsageError};
use crate::message::Message;

/// Extended message id of the extended handshake.
pub const HANDSHAKE_ID: u8 = 0;

/// Bounds for decoding a peer's extended handshake.
pub const HANDSHAKE_LIMITS: Limits = Limits {
    max_len: 64 * 1024,
    max_depth: 8,
    max_items: 1024,
};

/// web3torrent's handshake key for the peer's signing address (a `0x`-prefixed hex string).
pub const PSE_ACCOUNT_KEY: &str = "pseAccount";

/// web3torrent's handshake key for the peer's payout (destination) address.
pub const OUTCOME_ADDRESS_KEY: &str = "outcomeAddress";

/// Handshake key by which a peer announces that it proves control of its `pseAccount` (the
/// value is the version of the proof it speaks, an integer; 1 today). Unknown to web3torrent,
/// which ignores it (BEP 10: "Any unknown names should be ignored").
pub const PSE_AUTH_KEY: &str = "pseAuth";

const KNOWN_KEYS: [&str; 6] = ["m", "metadata_size", "p", "reqq", "v", "yourip"];

/// A BEP 10 extended handshake.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExtendedHandshake {
    /// `m`: extension name → extended message id chosen by the *sender*; 0 disables.
    pub m: BTreeMap<String, u8>,
    /// `v`: client name and version.
    pub v: Option<String>,
    /// `p`: the sender's TCP listen port.
    pub p: Option<u16>,
    /// `reqq`: outstanding requests the sender accepts without dropping any.
    pub reqq: Option<u32>,
    /// `yourip`: the receiver's address as the sender sees it (4 or 16 bytes, kept raw).
    pub yourip: Option<Vec<u8>>,
    /// BEP 9 `metadata_size`. Values above `i64::MAX` (not representable in bencode) are
    /// encoded as `i64::MAX`.
    pub metadata_size: Option<u64>,
    /// Every other key, as received. Entries whose key is one of the typed fields above are
    /// ignored when encoding; the typed field wins.
    pub extra: BTreeMap<Vec<u8>, Value>,
}

impl ExtendedHandshake {
    /// An empty handshake.
    pub fn new() -> Self {
        Self::default()
    }

    /// Decodes a handshake payload (the bytes after `<20><0>`), within [`HANDSHAKE_LIMITS`].
    pub fn decode(payload: &[u8]) -> Result<Self, ExtendedError> {
        let Value::Dict(mut dict) = Value::decode(payload, &HANDSHAKE_LIMITS)? else {
            return Err(ExtendedError::NotADict);
        };
        let mut hs = Self::new();
        if let Some(m) = dict.remove(&b"m"[..]) {
            let Value::Dict(m) = m else {
                return Err(ExtendedError::InvalidField { key: "m" });
            };
            for (name, id) in m {
                let (Ok(name), Some(id)) = (
                    String::from_utf8(name),
                    id.as_int().and_then(|id| u8::try_from(id).ok()),
                ) else {
                    continue;
                };
                hs.m.insert(name, id);
            }
        }
        if let Some(v) = dict.remove(&b"v"[..]) {
            let Value::Bytes(v) = v else {
                return Err(ExtendedError::InvalidField { key: "v" });
            };
            hs.v =
                Some(String::from_utf8(v).map_err(|_| ExtendedError::InvalidField { key: "v" })?);
        }
        hs.p = take_int(&mut dict, "p")?;
        hs.reqq = take_int(&mut dict, "reqq")?;
        hs.metadata_size = take_int(&mut dict, "metadata_size")?;
        if let Some(ip) = dict.remove(&b"yourip"[..]) {
            let Value::Bytes(ip) = ip else {
                return Err(ExtendedError::InvalidField { key: "yourip" });
            };
            hs.yourip = Some(ip);
        }
        hs.extra = dict;
        // Encoding adds `m` when it was absent; keep what we accept re-decodable.
        hs.to_value().check_reencoding(&HANDSHAKE_LIMITS)?;
        Ok(hs)
    }

    /// The handshake as one canonical bencode dictionary.
    pub fn to_value(&self) -> Value {
        let mut dict: BTreeMap<Vec<u8>, Value> = self
            .extra
            .iter()
            .filter(|(key, _)| !KNOWN_KEYS.iter().any(|k| k.as_bytes() == key.as_slice()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let m = self
            .m
            .iter()
            .map(|(name, id)| (name.as_bytes().to_vec(), Value::Int(i64::from(*id))))
            .collect();
        dict.insert(b"m".to_vec(), Value::Dict(m));
        if let Some(v) = &self.v {
            dict.insert(b"v".to_vec(), Value::from(v.as_str()));
        }
        if let Some(p) = self.p {
            dict.insert(b"p".to_vec(), Value::Int(i64::from(p)));
        }
        if let Some(reqq) = self.reqq {
            dict.insert(b"reqq".to_vec(), Value::Int(i64::from(reqq)));
        }
        if let Some(ip) = &self.yourip {
            dict.insert(b"yourip".to_vec(), Value::Bytes(ip.clone()));
        }
        if let Some(size) = self.metadata_size {
            // Sizes above i64::MAX cannot be bencoded; saturate rather than wrap.
            let size = i64::try_from(size).unwrap_or(i64::MAX);
            dict.insert(b"metadata_size".to_vec(), Value::Int(size));
        }
        Value::Dict(dict)
    }

    /// Appends the canonical (sorted-key) encoding to `dst`. `m` is always present.
    pub fn encode<B: BufMut>(&self, dst: &mut B) {
        self.to_value().encode(dst);
    }

    /// The canonical encoding.
    pub fn to_bytes(&self) -> Bytes {
        self.to_value().to_vec().into()
    }

    /// The peer-wire message carrying this handshake (`<20><0><payload>`).
    pub fn to_message(&self) -> Message {
        Message::Extended {
            id: HANDSHAKE_ID,
            payload: self.to_bytes(),
        }
    }

    /// The non-zero id the sender advertised for `name`.
    pub fn extension_id(&self, name: &str) -> Option<u8> {
        self.m.get(name).copied().filter(|&id| id != 0)
    }

    fn extra_bytes(&self, key: &str) -> Option<&[u8]> {
        self.extra.get(key.as_bytes()).and_then(Value::as_bytes)
    }

    fn set_extra_bytes(&mut self, key: &str, value: Vec<u8>) {
        self.extra
            .insert(key.as_bytes().to_vec(), Value::Bytes(value));
    }

    /// web3torrent `pseAccount`: the sender's signing address, as raw bytes (web3torrent sends
    /// the `0x…` hex string). `None` if absent or not a byte string.
    pub fn pse_account(&self) -> Option<&[u8]> {
        self.extra_bytes(PSE_ACCOUNT_KEY)
    }

    /// Sets web3torrent `pseAccount`.
    pub fn set_pse_account(&mut self, account: impl Into<Vec<u8>>) {
        self.set_extra_bytes(PSE_ACCOUNT_KEY, account.into());
    }

    /// web3torrent `outcomeAddress`: where the sender wants to be paid, as raw bytes.
    /// `None` if absent or not a byte string.
    pub fn outcome_address(&self) -> Option<&[u8]> {
        self.extra_bytes(OUTCOME_ADDRESS_KEY)
    }

    /// Sets web3torrent `outcomeAddress`.
    pub fn set_outcome_address(&mut self, address: impl Into<Vec<u8>>) {
        self.set_extra_bytes(OUTCOME_ADDRESS_KEY, address.into());
    }

    /// [`PSE_AUTH_KEY`]: the identity-proof version the sender speaks. `None` if absent or not
    /// a non-negative integer below 2^32.
    pub fn pse_auth(&self) -> Option<u32> {
        self.extra
            .get(PSE_AUTH_KEY.as_bytes())
            .and_then(Value::as_int)
            .and_then(|v| u32::try_from(v).ok())
    }

    /// Sets [`PSE_AUTH_KEY`] (`None` removes it).
    pub fn set_pse_auth(&mut self, version: Option<u32>) {
        match version {
            Some(v) => {
                self.extra
                    .insert(PSE_AUTH_KEY.as_bytes().to_vec(), Value::Int(i64::from(v)));
            }
            None => {
                self.extra.remove(PSE_AUTH_KEY.as_bytes());
            }
        }
    }

    /// `yourip` as an address, if it is 4 or 16 bytes long.
    pub fn yourip_addr(&self) -> Option<IpAddr> {
        let ip = self.yourip.as_deref()?;
        if let Ok(v4) = <[u8; 4]>::try_from(ip) {
            Some(IpAddr::V4(Ipv4Addr::from(v4)))
        } else if let Ok(v6) = <[u8; 16]>::try_from(ip) {
            Some(IpAddr::V6(Ipv6Addr::from(v6)))
        } else {
            None
        }
    }
}

fn take_int<T: TryFrom<i64>>(
    dict: &mut BTreeMap<Vec<u8>, Value>,
    key: &'static str,
) -> Result<Option<T>, ExtendedError> {
    dict.remove(key.as_bytes())
        .map(|v| {
            v.as_int()
                .and_then(|n| T::try_from(n).ok())
                .ok_or(ExtendedError::InvalidField { key })
        })
        .transpose()
}

/// Extension-name ↔ id tables for one connection: ours and the peer's, kept apart.
///
/// - **Local** ids are what we advertise in our `m`. The peer sends extension messages to us
///   with them, so incoming [`Message::Extended`] ids are looked up with
///   [`local_name`](Self::local_name).
/// - **Peer** ids come from the peer's handshakes. We send with them
///   ([`peer_id`](Self::peer_id)); a name the peer did not advertise (or disabled) has no id,
///   and nothing may be sent for it.
///
/// ```
/// use paid_wire::extended::{ExtendedHandshake, ExtensionIds};
/// use paid_wire::pse::EXTENSION_NAME;
///
/// let mut ids = ExtensionIds::new();
/// ids.set_local(EXTENSION_NAME, 3).unwrap();
///
/// let mut theirs = ExtendedHandshake::new();
/// theirs.m.insert(EXTENSION_NAME.into(), 2);
/// ids.apply_peer_handshake(&theirs);
///
/// assert_eq!(ids.local_name(3), Some(EXTENSION_NAME)); // they send to us with 3
/// assert_eq!(ids.peer_id(EXTENSION_NAME), Some(2)); // we send to them with 2
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExtensionIds {
    local: BTreeMap<String, u8>,
    peer: BTreeMap<String, u8>,
}

impl ExtensionIds {
    /// Empty tables.
    pub fn new() -> Self {
        Self::default()
    }

    /// Advertises `name` with our id `id`.
    ///
    /// Fails if `id` is 0 (reserved for the handshake) or already used by another name.
    /// Re-registering a name replaces its id.
    pub fn set_local(&mut self, name: impl Into<String>, id: u8) -> Result<(), UsageError> {
        let name = name.into();
        if id == HANDSHAKE_ID {
            return Err(UsageError::ExtensionIdZero);
        }
        if self.local.iter().any(|(n, &i)| i == id && *n != name) {
            return Err(UsageError::ExtensionIdInUse { id });
        }
        self.local.insert(name, id);
        Ok(())
    }

    /// Our id for `name`.
    pub fn local_id(&self, name: &str) -> Option<u8> {
        self.local.get(name).copied()
    }

    /// The name of our extension with id `id` (to dispatch an incoming extended message).
    pub fn local_name(&self, id: u8) -> Option<&str> {
        self.local
            .iter()
            .find(|&(_, &i)| i == id)
            .map(|(name, _)| name.as_str())
    }

    /// Our `m` table.
    pub fn local(&self) -> &BTreeMap<String, u8> {
        &self.local
    }

    /// A handshake advertising our `m` table, to which the caller adds `v`, `p`, ….
    pub fn local_handshake(&self) -> ExtendedHandshake {
        ExtendedHandshake {
            m: self.local.clone(),
            ..ExtendedHandshake::default()
        }
    }

    /// Merges a peer handshake's `m` into the peer table: BEP 10, "the m dictionary is
    /// additive"; a name mapped to 0 is removed; other names keep their ids.
    pub fn apply_peer_handshake(&mut self, hs: &ExtendedHandshake) {
        for (name, &id) in &hs.m {
            if id == 0 {
                self.peer.remove(name);
            } else {
                self.peer.insert(name.clone(), id);
            }
        }
    }

    /// [`apply_peer_handshake`](Self::apply_peer_handshake) restricted to the names we
    /// advertise ourselves: a name we do not speak is never sent to, so it is not kept. The peer
    /// table is then bounded by our own, however many handshakes (and names) a peer sends.
    ///
    /// ```
    /// use paid_wire::extended::{ExtendedHandshake, ExtensionIds};
    ///
    /// let mut ids = ExtensionIds::new();
    /// ids.set_local("ut_metadata", 1).unwrap();
    /// let mut theirs = ExtendedHandshake::new();
    /// theirs.m.insert("ut_metadata".into(), 4);
    /// theirs.m.insert("junk-1".into(), 5);
    /// ids.apply_peer_handshake_known(&theirs);
    /// assert_eq!(ids.peer_id("ut_metadata"), Some(4));
    /// assert_eq!(ids.peer().len(), 1);
    /// ```
    pub fn apply_peer_handshake_known(&mut self, hs: &ExtendedHandshake) {
        for (name, &id) in &hs.m {
            if !self.local.contains_key(name) {
                continue;
            }
            if id == 0 {
                self.peer.remove(name);
            } else {
                self.peer.insert(name.clone(), id);
            }
        }
    }

    /// The id to send `name` messages with, if the peer supports it.
    pub fn peer_id(&self, name: &str) -> Option<u8> {
        self.peer.get(name).copied()
    }

    /// The peer's current `m` table (disabled names removed).
    pub fn peer(&self) -> &BTreeMap<String, u8> {
        &self.peer
    }
}
