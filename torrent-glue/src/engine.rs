//! The engine boundary: what a BitTorrent engine tells the glue (the
//! [`Coordinator`](crate::Coordinator)'s `handle_*` inputs) and what the
//! glue asks the engine to do ([`EngineCommand`] / [`EngineControl`]).
//!
//! Nothing here names an engine type. A connection is an opaque [`PeerKey`], a torrent an opaque
//! [`TorrentKey`], requests are [`BlockRequest`]s and extension payloads are bytes. The hook set
//! is the union of what libtorrent (`peer_plugin`), WebTorrent (`wire.use`), anacrolix
//! (`Callbacks`) and a forked rqbit (`PeerConnectionHandler`) can deliver:
//!
//! | # | hook (engine → glue) | [`Coordinator`](crate::Coordinator) input |
//! |---|---|---|
//! | 1 | peer connected (reserved bits, direction, BEP 6) | [`handle_peer_connected`](crate::Coordinator::handle_peer_connected) |
//! | 2 | contribute to our extended handshake | [`extended_handshake_contribution`](crate::Coordinator::extended_handshake_contribution) |
//! | 3 | peer's extended handshake received | [`handle_extended_handshake`](crate::Coordinator::handle_extended_handshake) |
//! | 4 | extension message received (reassembled) | [`handle_extension_message`](crate::Coordinator::handle_extension_message) |
//! | 5 | request received → serve / reject / drop / defer | [`handle_request`](crate::Coordinator::handle_request) (+ [`handle_cancel`](crate::Coordinator::handle_cancel)) |
//! | 6 | bytes actually sent | [`handle_bytes_sent`](crate::Coordinator::handle_bytes_sent) |
//! | 7 | block received, piece verified / failed | [`handle_block_received`](crate::Coordinator::handle_block_received), [`handle_piece_verified`](crate::Coordinator::handle_piece_verified), [`handle_piece_failed`](crate::Coordinator::handle_piece_failed) |
//! | 8 | remote choke / interest, local choke | [`handle_remote_choke`](crate::Coordinator::handle_remote_choke), [`handle_remote_interest`](crate::Coordinator::handle_remote_interest), [`handle_local_choke`](crate::Coordinator::handle_local_choke) |
//! | 9 | periodic tick | [`handle_timeout`](crate::Coordinator::handle_timeout) (+ [`poll_timeout`](crate::Coordinator::poll_timeout)) |
//! | 10 | disconnect | [`handle_disconnect`](crate::Coordinator::handle_disconnect) |
//!
//! Commands flow back through [`poll_engine_command`](crate::Coordinator::poll_engine_command); [`EngineCommand::apply`]
//! dispatches one onto an [`EngineControl`] implementation.
//!
//! # Threading
//! Engines call hooks on their network thread or under a client lock (libtorrent, anacrolix), so
//! every hook is synchronous and non-blocking: no I/O, no channel work, no waiting. Payment
//! channel work leaves through a separate command queue (see [`crate::channel`]) that the
//! embedding drains outside the engine's lock. [`EngineControl`] implementations must likewise
//! only enqueue: an engine that deadlocks when written to from inside its own callback
//! (anacrolix) drains commands after the callback returns.

use std::net::SocketAddr;

use std::collections::BTreeMap;

use bytes::Bytes;
use paid_wire::bencode::Value;
use paid_wire::extended::ExtendedHandshake;
use paid_wire::message::BlockRequest;
use payment_channel::Address;

/// Opaque key of one peer connection, chosen by the engine and unique while the connection lives.
///
/// Two connections to the same remote party (a reconnect, or one connection per torrent) have
/// different keys; the glue links them through the peer's payment identity (`pseAccount`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerKey(pub u64);

/// Opaque key of one torrent, chosen by the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct TorrentKey(pub u64);

/// Who opened the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// The remote peer connected to us.
    Inbound,
    /// We connected to the remote peer.
    Outbound,
}

/// What the engine knows about a new connection once the BitTorrent handshake is done (hook 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// The torrent this connection belongs to.
    pub torrent: TorrentKey,
    /// Who opened the connection.
    pub direction: Direction,
    /// The 8 reserved bytes of the **peer's** BitTorrent handshake.
    pub remote_reserved: [u8; 8],
    /// Whether BEP 6 (fast extension) is negotiated, i.e. both handshakes set `reserved[7] & 0x04`.
    /// Decides between BEP 6 `reject` and a silent drop for refused requests.
    pub fast_negotiated: bool,
    /// The peer's address, if the engine knows it (diagnostics only).
    pub addr: Option<SocketAddr>,
    /// The BEP 6 allowed-fast set the engine computed for this peer (pieces a choked peer may
    /// still request). Used by [`NonPayingPolicy::AllowedFastPreview`](crate::NonPayingPolicy::AllowedFastPreview).
    pub allowed_fast: Vec<u32>,
    /// The torrent's info-hash on this connection, bound into identity proofs
    /// ([`crate::identity`]). Zero when the engine does not set it.
    pub info_hash: [u8; 20],
    /// Our BitTorrent peer id on this connection (from our handshake), bound into identity
    /// proofs. Zero when the engine does not set it.
    pub local_peer_id: [u8; 20],
    /// The peer's BitTorrent peer id (from its handshake), bound into identity proofs. Zero
    /// when the engine does not set it.
    pub remote_peer_id: [u8; 20],
}

impl PeerInfo {
    /// A connection of `torrent` with the peer's reserved bytes; fast negotiation, address and
    /// allowed-fast set default to off / unknown / empty.
    pub fn new(torrent: TorrentKey, direction: Direction, remote_reserved: [u8; 8]) -> Self {
        Self {
            torrent,
            direction,
            remote_reserved,
            fast_negotiated: false,
            addr: None,
            allowed_fast: Vec::new(),
            info_hash: [0; 20],
            local_peer_id: [0; 20],
            remote_peer_id: [0; 20],
        }
    }

    /// Sets the info-hash and both peer ids of the BitTorrent handshakes, which identity proofs
    /// bind to ([`crate::identity`]). An engine should always set them: without them a proof is
    /// bound to the challenge alone.
    pub fn with_session(
        mut self,
        info_hash: [u8; 20],
        local_peer_id: [u8; 20],
        remote_peer_id: [u8; 20],
    ) -> Self {
        self.info_hash = info_hash;
        self.local_peer_id = local_peer_id;
        self.remote_peer_id = remote_peer_id;
        self
    }

    /// Whether the peer set the BEP 10 extension-protocol bit (`reserved[5] & 0x10`).
    pub fn supports_extension_protocol(&self) -> bool {
        self.remote_reserved[5] & 0x10 != 0
    }

    /// Whether the peer set the BEP 6 fast-extension bit (`reserved[7] & 0x04`). Negotiation also
    /// needs our own bit: see [`PeerInfo::fast_negotiated`].
    pub fn remote_supports_fast(&self) -> bool {
        self.remote_reserved[7] & 0x04 != 0
    }
}

/// Commercial terms an uploader advertises in its extended handshake (key [`TERMS_KEY`]).
///
/// web3torrent peers advertise nothing; they are assumed to use [`Terms::WEB3TORRENT`]
/// (1 wei per byte, no trust), the constants that client shipped with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Terms {
    /// Price in wei per byte.
    pub price_per_byte: u128,
    /// Bytes served before the first payment (the uploader's trust allowance). A downloader
    /// subtracts it when sizing its last payments, so it never pays for more than it gets.
    pub trust_bytes: u64,
}

impl Terms {
    /// web3torrent's `WEI_PER_BYTE = 1` with an initial buffer of 0 bytes.
    pub const WEB3TORRENT: Self = Self {
        price_per_byte: 1,
        trust_bytes: 0,
    };
}

impl Terms {
    /// The bencoded form under [`TERMS_KEY`]: `{price: <int>, trust: <int>}` (a price above
    /// `i64::MAX` is written as a decimal byte string).
    pub fn to_value(&self) -> Value {
        let price = i64::try_from(self.price_per_byte).map_or_else(
            |_| Value::Bytes(self.price_per_byte.to_string().into_bytes()),
            Value::Int,
        );
        let mut dict = BTreeMap::new();
        dict.insert(b"price".to_vec(), price);
        dict.insert(
            b"trust".to_vec(),
            Value::Int(i64::try_from(self.trust_bytes).unwrap_or(i64::MAX)),
        );
        Value::Dict(dict)
    }

    /// Parses [`Terms::to_value`]'s form; `None` if `price` is missing or invalid. A missing or
    /// invalid `trust` reads as 0 (the safe side for the payer: it pays for everything).
    pub fn from_value(value: &Value) -> Option<Self> {
        let dict = value.as_dict()?;
        let price_per_byte = match dict.get(b"price".as_slice())? {
            Value::Int(p) => u128::try_from(*p).ok()?,
            Value::Bytes(p) => std::str::from_utf8(p).ok()?.parse().ok()?,
            _ => return None,
        };
        let trust_bytes = dict
            .get(b"trust".as_slice())
            .and_then(Value::as_int)
            .and_then(|t| u64::try_from(t).ok())
            .unwrap_or(0);
        Some(Self {
            price_per_byte,
            trust_bytes,
        })
    }
}

impl Default for Terms {
    fn default() -> Self {
        Self::WEB3TORRENT
    }
}

/// The asset an uploader is paid in, advertised inside [`TERMS_KEY`] as `asset` (the ERC-20's
/// `0x` EIP-55 address) and `decimals` when it is not the native coin (no `asset` key: the native
/// coin). It is a hint for choosing sellers: the asset that binds is the one in the channel
/// proposal, which a payer's join policy checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AssetTerms {
    /// The ERC-20 token.
    pub asset: Address,
    /// Its `decimals()`, for showing amounts.
    pub decimals: u8,
}

impl AssetTerms {
    /// Reads `asset`/`decimals` from a [`TERMS_KEY`] dictionary; `None` when absent or invalid.
    pub fn from_value(value: &Value) -> Option<Self> {
        let dict = value.as_dict()?;
        let asset = std::str::from_utf8(dict.get(b"asset".as_slice())?.as_bytes()?)
            .ok()?
            .parse()
            .ok()?;
        let decimals = u8::try_from(dict.get(b"decimals".as_slice())?.as_int()?).ok()?;
        Some(Self { asset, decimals })
    }

    /// Adds `asset` and `decimals` to a [`TERMS_KEY`] dictionary.
    pub fn insert_into(&self, value: &mut Value) {
        if let Value::Dict(dict) = value {
            dict.insert(
                b"asset".to_vec(),
                Value::Bytes(self.asset.to_checksum(None).into_bytes()),
            );
            dict.insert(b"decimals".to_vec(), Value::Int(i64::from(self.decimals)));
        }
    }
}

/// Top-level extended-handshake key under which [`Terms`] are advertised:
/// `pseTerms: {price: <int>, trust: <int>}`. Unknown to web3torrent, which ignores it (BEP 10:
/// "Any unknown names should be ignored").
pub const TERMS_KEY: &str = "pseTerms";

/// Top-level extended-handshake key under which a peer names the hub it funds channels through:
/// `pseHub: {addr: "0x…", at: "host:port"}` ([`HubInfo`]).
///
/// A claim proves nothing: the hub's identity is proven by the signed handshake of the TCP
/// connection to the hub (`payment_channel::party_node::tcp`), and a peer claiming a hub it has
/// no ledger with only makes us choose the funding path (virtual instead of direct), never
/// gives it anything on credit.
pub const HUB_KEY: &str = "pseHub";

/// Longest `at` accepted in a [`HUB_KEY`] value (a DNS name of 253 bytes and a port).
pub const MAX_HUB_ENDPOINT_LEN: usize = 260;

/// A hub: its signing address and where it listens. See [`HUB_KEY`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HubInfo {
    /// The hub's signing address (the one its TCP handshake proves).
    pub address: Address,
    /// `host:port` of its party-node listener.
    pub endpoint: String,
}

impl HubInfo {
    /// The bencoded form under [`HUB_KEY`].
    pub fn to_value(&self) -> Value {
        let mut dict = BTreeMap::new();
        dict.insert(
            b"addr".to_vec(),
            Value::Bytes(self.address.to_checksum(None).into_bytes()),
        );
        dict.insert(
            b"at".to_vec(),
            Value::Bytes(self.endpoint.clone().into_bytes()),
        );
        Value::Dict(dict)
    }

    /// Parses [`HubInfo::to_value`]'s form; `None` when a key is missing, the address does not
    /// parse, or `at` is not UTF-8 of at most [`MAX_HUB_ENDPOINT_LEN`] bytes.
    pub fn from_value(value: &Value) -> Option<Self> {
        let dict = value.as_dict()?;
        let address = parse_account(dict.get(b"addr".as_slice())?.as_bytes()?)?;
        let at = dict.get(b"at".as_slice())?.as_bytes()?;
        if at.is_empty() || at.len() > MAX_HUB_ENDPOINT_LEN {
            return None;
        }
        let endpoint = std::str::from_utf8(at).ok()?.to_owned();
        Some(Self { address, endpoint })
    }
}

/// The parts of the peer's extended handshake the glue needs (hook 3).
///
/// BEP 10 handshakes are **additive**: a later handshake only carries changes. Every field is
/// therefore "absent = unchanged"; for [`pse_id`](Self::pse_id), `Some(0)` disables the extension
/// ("Setting an extension number to zero means that the extension is not supported/disabled").
/// Engines that keep a merged view may pass the merged view every time; it is equivalent.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PeerExtendedHandshake {
    /// The id the peer assigned to `paidStreamingExtension` in its `m` dictionary.
    pub pse_id: Option<u8>,
    /// `pseAccount`: the peer's payment signing address as sent (web3torrent sends a `0x…` string).
    pub pse_account: Option<Vec<u8>>,
    /// `outcomeAddress`: where the peer's channel funds go.
    pub outcome_address: Option<Vec<u8>>,
    /// The peer's advertised [`Terms`] ([`TERMS_KEY`]), if any.
    pub terms: Option<Terms>,
    /// The ERC-20 the peer sells in, when its terms name one ([`AssetTerms`]).
    pub asset: Option<AssetTerms>,
    /// `v`: client name and version, for diagnostics.
    pub client: Option<String>,
    /// `pseAuth`: the identity-proof version the peer speaks ([`crate::identity`]); `None` for
    /// peers that cannot prove their `pseAccount` (the original web3torrent).
    pub auth: Option<u32>,
    /// The hub the peer funds channels through ([`HUB_KEY`]), if it names a valid one.
    pub hub: Option<HubInfo>,
}

impl PeerExtendedHandshake {
    /// The glue's view of a decoded BEP 10 handshake.
    pub fn from_extended(hs: &ExtendedHandshake) -> Self {
        Self {
            pse_id: hs.m.get(crate::EXTENSION_NAME).copied(),
            pse_account: hs.pse_account().map(<[u8]>::to_vec),
            outcome_address: hs.outcome_address().map(<[u8]>::to_vec),
            terms: hs
                .extra
                .get(TERMS_KEY.as_bytes())
                .and_then(Terms::from_value),
            asset: hs
                .extra
                .get(TERMS_KEY.as_bytes())
                .and_then(AssetTerms::from_value),
            client: hs.v.clone(),
            auth: hs.pse_auth(),
            hub: hs
                .extra
                .get(HUB_KEY.as_bytes())
                .and_then(HubInfo::from_value),
        }
    }
}

/// What the glue adds to our extended handshake (hook 2).
///
/// The engine registers [`extension_name`](Self::extension_name) in `m` under a local id of its
/// choosing, and adds the top-level keys `pseAccount`, `outcomeAddress` (as byte strings, the way
/// web3torrent sends them) and [`TERMS_KEY`] when [`terms`](Self::terms) is set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandshakeContribution {
    /// The BEP 10 extension name, `paidStreamingExtension`.
    pub extension_name: &'static str,
    /// Our `pseAccount`: the signing address, `0x`-prefixed EIP-55 hex.
    pub pse_account: String,
    /// Our `outcomeAddress`, `0x`-prefixed EIP-55 hex.
    pub outcome_address: String,
    /// Our terms as an uploader; `None` when we do not sell.
    pub terms: Option<Terms>,
    /// The ERC-20 we sell in (advertised inside the terms); `None`: the native coin.
    pub asset: Option<AssetTerms>,
    /// The identity-proof version we answer challenges with (`pseAuth`); `None` when we cannot
    /// sign (no signer was given to the coordinator).
    pub auth: Option<u32>,
    /// The hub we fund channels through ([`HUB_KEY`]); `None`: direct channels only.
    pub hub: Option<HubInfo>,
}

impl HandshakeContribution {
    /// Adds the top-level keys to `hs` (`pseAccount`, `outcomeAddress`, `pseAuth`, [`TERMS_KEY`],
    /// [`HUB_KEY`]). The
    /// `m` entry is the engine's: register [`extension_name`](Self::extension_name) under a
    /// local id of its choosing (e.g. with `paid_wire::extended::ExtensionIds::set_local`).
    pub fn apply_to(&self, hs: &mut ExtendedHandshake) {
        hs.set_pse_account(self.pse_account.as_bytes());
        hs.set_outcome_address(self.outcome_address.as_bytes());
        hs.set_pse_auth(self.auth);
        match self.terms {
            Some(terms) => {
                let mut value = terms.to_value();
                if let Some(asset) = &self.asset {
                    asset.insert_into(&mut value);
                }
                hs.extra.insert(TERMS_KEY.as_bytes().to_vec(), value);
            }
            None => {
                hs.extra.remove(TERMS_KEY.as_bytes());
            }
        }
        match &self.hub {
            Some(hub) => {
                hs.extra.insert(HUB_KEY.as_bytes().to_vec(), hub.to_value());
            }
            None => {
                hs.extra.remove(HUB_KEY.as_bytes());
            }
        }
    }
}

/// The glue's answer to a request (hook 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RequestDecision {
    /// Serve it now. Report the outcome with [`Coordinator::handle_bytes_sent`](crate::Coordinator::handle_bytes_sent) (exactly once).
    Serve,
    /// Answer with a BEP 6 `reject` now (only returned when fast is negotiated).
    Reject,
    /// Forget it silently (no BEP 6): the peer re-requests after it is unblocked.
    Drop,
    /// Keep it pending: the glue decides later with [`EngineCommand::Serve`],
    /// [`EngineCommand::Reject`] or [`EngineCommand::DropRequest`] for this request.
    Defer,
}

/// Who controls the BitTorrent CHOKE state of peers. Every engine has its own choker
/// (libtorrent 15 s slots, WebTorrent 10 s, rqbit unchoke-all), so this must be explicit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum ChokeAuthority {
    /// The engine's choker decides. The glue never emits [`EngineCommand::Choke`] /
    /// [`EngineCommand::Unchoke`]; it gates uploads through [`Coordinator::handle_request`](crate::Coordinator::handle_request) only
    /// (the "serve gate", web3torrent's soft choke), and the engine reports its own choke
    /// decisions with [`Coordinator::handle_local_choke`](crate::Coordinator::handle_local_choke).
    Engine,
    /// The glue decides and the engine must not override it: peers start choked, a peer that may
    /// be served is unchoked when it becomes interested, and a peer that may not (refused,
    /// permanently stopped, free allowance used up) is choked. [`Coordinator::handle_local_choke`](crate::Coordinator::handle_local_choke)
    /// is not needed.
    #[default]
    Glue,
}

/// Why the glue asks the engine to drop a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DisconnectReason {
    /// Too many invalid requests (oversized or empty).
    InvalidRequests,
    /// The peer overflowed the blocked-request queue repeatedly.
    QueueOverflow,
    /// A STOP stayed unpaid for the configured payment timeout.
    PaymentOverdue,
    /// The peer connected with our own payment identity.
    SelfConnection,
    /// The peer reached the strike limit
    /// ([`IdentityConfig::disconnect_after_strikes`](crate::IdentityConfig::disconnect_after_strikes)):
    /// bad identity proofs, bad channel-message signatures, repeated extended handshakes.
    Strikes,
    /// The application asked for it (not emitted by the coordinator).
    Application,
}

/// One thing the engine must do, drained with [`Coordinator::poll_engine_command`](crate::Coordinator::poll_engine_command) in order.
///
/// Commands addressed to a peer that has since disconnected must be ignored by the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EngineCommand {
    /// Send a BEP 10 extension message: `<len><20><peer_ext_id><payload>`. The glue only emits
    /// this for a peer that advertised `extension` with a non-zero id; `peer_ext_id` is that id
    /// (engines that address extensions by name may use `extension` instead).
    SendExtended {
        /// The connection.
        peer: PeerKey,
        /// The extension name (`paidStreamingExtension`).
        extension: &'static str,
        /// The id the peer assigned to the extension.
        peer_ext_id: u8,
        /// The extension payload (without the id byte).
        payload: Bytes,
    },
    /// Send BitTorrent CHOKE (only under [`ChokeAuthority::Glue`]).
    Choke {
        /// The connection.
        peer: PeerKey,
    },
    /// Send BitTorrent UNCHOKE (only under [`ChokeAuthority::Glue`]).
    Unchoke {
        /// The connection.
        peer: PeerKey,
    },
    /// Serve a request that was deferred; report with [`Coordinator::handle_bytes_sent`](crate::Coordinator::handle_bytes_sent).
    Serve {
        /// The connection.
        peer: PeerKey,
        /// The request.
        request: BlockRequest,
    },
    /// Send a BEP 6 `reject` for a request that was deferred.
    Reject {
        /// The connection.
        peer: PeerKey,
        /// The request.
        request: BlockRequest,
    },
    /// Forget a deferred request without answering (no BEP 6).
    DropRequest {
        /// The connection.
        peer: PeerKey,
        /// The request.
        request: BlockRequest,
    },
    /// Send a BEP 6 `allowed fast` for `piece` (free preview).
    AllowedFast {
        /// The connection.
        peer: PeerKey,
        /// The piece index.
        piece: u32,
    },
    /// Close the connection.
    Disconnect {
        /// The connection.
        peer: PeerKey,
        /// Why.
        reason: DisconnectReason,
    },
}

impl EngineCommand {
    /// The connection the command is about.
    pub fn peer(&self) -> PeerKey {
        match self {
            Self::SendExtended { peer, .. }
            | Self::Choke { peer }
            | Self::Unchoke { peer }
            | Self::Serve { peer, .. }
            | Self::Reject { peer, .. }
            | Self::DropRequest { peer, .. }
            | Self::AllowedFast { peer, .. }
            | Self::Disconnect { peer, .. } => *peer,
        }
    }

    /// Performs the command on `engine`.
    pub fn apply<E: EngineControl + ?Sized>(self, engine: &mut E) {
        match self {
            Self::SendExtended {
                peer,
                extension,
                peer_ext_id,
                payload,
            } => engine.send_extended(peer, extension, peer_ext_id, payload),
            Self::Choke { peer } => engine.choke(peer),
            Self::Unchoke { peer } => engine.unchoke(peer),
            Self::Serve { peer, request } => engine.serve(peer, request),
            Self::Reject { peer, request } => engine.reject(peer, request),
            Self::DropRequest { peer, request } => engine.drop_request(peer, request),
            Self::AllowedFast { peer, piece } => engine.allowed_fast(peer, piece),
            Self::Disconnect { peer, reason } => engine.disconnect(peer, reason),
        }
    }
}

/// The engine's side of [`EngineCommand`]: one method per command. Implementations enqueue and
/// return at once; a command for an unknown (disconnected) peer is ignored.
pub trait EngineControl {
    /// See [`EngineCommand::SendExtended`].
    fn send_extended(
        &mut self,
        peer: PeerKey,
        extension: &'static str,
        peer_ext_id: u8,
        payload: Bytes,
    );
    /// See [`EngineCommand::Choke`].
    fn choke(&mut self, peer: PeerKey);
    /// See [`EngineCommand::Unchoke`].
    fn unchoke(&mut self, peer: PeerKey);
    /// See [`EngineCommand::Serve`].
    fn serve(&mut self, peer: PeerKey, request: BlockRequest);
    /// See [`EngineCommand::Reject`].
    fn reject(&mut self, peer: PeerKey, request: BlockRequest);
    /// See [`EngineCommand::DropRequest`].
    fn drop_request(&mut self, peer: PeerKey, request: BlockRequest);
    /// See [`EngineCommand::AllowedFast`].
    fn allowed_fast(&mut self, peer: PeerKey, piece: u32);
    /// See [`EngineCommand::Disconnect`].
    fn disconnect(&mut self, peer: PeerKey, reason: DisconnectReason);
}

/// Parses a `pseAccount` / `outcomeAddress` value: `0x` + 40 hex digits (any case, checksum not
/// enforced, as web3torrent never validated it either), or 20 raw bytes.
pub fn parse_account(bytes: &[u8]) -> Option<Address> {
    if bytes.len() == 20 {
        return Some(Address::from_slice(bytes));
    }
    let text = std::str::from_utf8(bytes).ok()?.trim();
    let digits = text
        .strip_prefix("0x")
        .or_else(|| text.strip_prefix("0X"))?;
    if digits.len() != 40 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    digits.parse::<Address>().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_bits() {
        let mut r = [0u8; 8];
        let info = PeerInfo::new(TorrentKey(1), Direction::Inbound, r);
        assert!(!info.supports_extension_protocol());
        r[5] = 0x10;
        r[7] = 0x04;
        let info = PeerInfo::new(TorrentKey(1), Direction::Outbound, r);
        assert!(info.supports_extension_protocol());
        assert!(info.remote_supports_fast());
    }

    #[test]
    fn handshake_contribution_round_trips_through_bencode() {
        let contribution = HandshakeContribution {
            extension_name: crate::EXTENSION_NAME,
            pse_account: "0x7F0126D6c4270498b6514Cb934a3274898f68777".into(),
            outcome_address: "0x00000000000000000000000000000000000000b1".into(),
            terms: Some(Terms {
                price_per_byte: u128::MAX,
                trust_bytes: 81920,
            }),
            asset: Some(AssetTerms {
                asset: "0x5FbDB2315678afecb367f032d93F642f64180aa3"
                    .parse()
                    .unwrap(),
                decimals: 6,
            }),
            auth: Some(1),
            hub: Some(HubInfo {
                address: "0x00000000000000000000000000000000000000cc"
                    .parse()
                    .unwrap(),
                endpoint: "hub.example:7400".into(),
            }),
        };
        let mut ours = ExtendedHandshake::new();
        ours.m.insert(crate::EXTENSION_NAME.into(), 3);
        ours.m.insert("ut_metadata".into(), 1);
        contribution.apply_to(&mut ours);
        let wire = ours.to_bytes();
        let theirs = ExtendedHandshake::decode(&wire).unwrap();
        let view = PeerExtendedHandshake::from_extended(&theirs);
        assert_eq!(view.pse_id, Some(3));
        assert_eq!(
            parse_account(view.pse_account.as_deref().unwrap()),
            parse_account(contribution.pse_account.as_bytes())
        );
        assert_eq!(view.terms, contribution.terms);
        assert_eq!(view.asset, contribution.asset);
        assert_eq!(view.auth, Some(1));
        assert_eq!(view.hub, contribution.hub);
        // Without an asset (the native coin), the terms carry none.
        let native = HandshakeContribution {
            asset: None,
            ..contribution.clone()
        };
        let mut ours = ExtendedHandshake::new();
        native.apply_to(&mut ours);
        let view = PeerExtendedHandshake::from_extended(&ours);
        assert_eq!((view.terms, view.asset), (native.terms, None));
        // A web3torrent handshake: no terms.
        let mut w3t = ExtendedHandshake::new();
        w3t.m.insert(crate::EXTENSION_NAME.into(), 2);
        w3t.set_pse_account(&b"0x7F0126D6c4270498b6514Cb934a3274898f68777"[..]);
        let view = PeerExtendedHandshake::from_extended(&w3t);
        assert_eq!(view.terms, None);
        assert_eq!(view.hub, None);
        assert_eq!(Terms::default(), Terms::WEB3TORRENT);
        assert_eq!(Terms::from_value(&Value::Int(1)), None);
    }

    #[test]
    fn hub_claims_that_do_not_parse_are_ignored() {
        let hub = |addr: &[u8], at: &[u8]| {
            let mut dict = BTreeMap::new();
            dict.insert(b"addr".to_vec(), Value::Bytes(addr.to_vec()));
            dict.insert(b"at".to_vec(), Value::Bytes(at.to_vec()));
            HubInfo::from_value(&Value::Dict(dict))
        };
        let good = b"0x00000000000000000000000000000000000000cc";
        assert!(hub(good, b"127.0.0.1:1").is_some());
        assert_eq!(hub(b"0xnothex", b"127.0.0.1:1"), None);
        assert_eq!(hub(good, b""), None);
        assert_eq!(hub(good, &[b'a'; MAX_HUB_ENDPOINT_LEN + 1]), None);
        assert_eq!(hub(good, &[0xff, 0xfe]), None);
        assert_eq!(HubInfo::from_value(&Value::Int(3)), None);
    }

    #[test]
    fn accounts_parse_hex_any_case_or_raw() {
        let a = parse_account(b"0x7F0126D6c4270498b6514Cb934a3274898f68777").unwrap();
        assert_eq!(
            parse_account(b"0x7f0126d6c4270498b6514cb934a3274898f68777"),
            Some(a)
        );
        assert_eq!(parse_account(a.as_slice()), Some(a));
        assert_eq!(parse_account(b"0x7f01"), None);
        assert_eq!(
            parse_account(b"7f0126d6c4270498b6514cb934a3274898f68777"),
            None
        );
        assert_eq!(
            parse_account(b"0xzz0126d6c4270498b6514cb934a3274898f68777"),
            None
        );
        assert_eq!(parse_account(&[0xff; 3]), None);
    }
}
