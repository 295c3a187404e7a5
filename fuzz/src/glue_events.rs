//! `glue_events`: arbitrary engine and channel-client inputs into one [`Coordinator`], with a
//! model engine (which requests are being served) and a model channel client (which channels
//! exist, what was paid on them). Fails on a panic, on a queue beyond its configured bound, or
//! when an identity was served more than it paid for plus the trust it was granted.
//!
//! Peers prove their accounts the way a real one does (`Hs::Paying { auth: Some(true) }`), or
//! send a stranger's proof, or none (web3torrent: non-paying under the default policy); the
//! harness answers the coordinator's challenges and proposes with the nonce both sides derive.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use paid_wire::choke::{BlockedPolicy, PromptPolicy, TrustPolicy};
use paid_wire::extended::ExtendedHandshake;
use paid_wire::message::BlockRequest;
use paid_wire::pse::{self, PseMessage};
use payment_channel::B256;
use payment_channel::sign::{LocalSigner, Signer};
use torrent_glue::channel::FailedCommand;
use torrent_glue::engine::{Direction, PeerExtendedHandshake, PeerInfo, TERMS_KEY};
use torrent_glue::identity::{self, ProofContext};
use torrent_glue::{
    Address, ChannelCommand, ChannelEvent, ChannelId, Coordinator, CoordinatorConfig,
    EXTENSION_NAME, EngineCommand, LivenessConfig, NonPayingPolicy, PeerKey, RequestDecision,
    RestoredState, Role, TorrentKey,
};

const INFO_HASH: [u8; 20] = [0x17; 20];
const OUR_PEER_ID: [u8; 20] = [0x01; 20];

/// The keys of [`account`]`(0..ACCOUNTS)`, then ours (computed once: key derivation is slow).
fn signers() -> &'static [Arc<LocalSigner>] {
    static KEYS: OnceLock<Vec<Arc<LocalSigner>>> = OnceLock::new();
    KEYS.get_or_init(|| {
        (0..=ACCOUNTS)
            .map(|i| {
                let byte = if i == ACCOUNTS { 0xEE } else { 0x10 + i };
                Arc::new(LocalSigner::from_bytes(&B256::repeat_byte(byte)).expect("a valid key"))
            })
            .collect()
    })
}

fn me() -> Address {
    signers()[usize::from(ACCOUNTS)].address()
}

fn peer_id(key: PeerKey) -> [u8; 20] {
    let mut id = [0x50; 20];
    id[12..].copy_from_slice(&key.0.to_be_bytes());
    id
}
const PRICE: u128 = 2;
const TRUST: u64 = 16 * 1024;
const BLOCK: u32 = 16 * 1024;
const MAX_OPS: usize = 256;
const PEERS: u8 = 6;
const ACCOUNTS: u8 = 4;

fn account(i: u8) -> Address {
    signers()[usize::from(i % ACCOUNTS)].address()
}

/// A block length: mostly valid, sometimes hostile.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Len {
    /// 16 KiB.
    Block,
    /// Zero.
    Zero,
    /// Anything.
    Any(u32),
}

/// An extended handshake.
#[derive(Arbitrary, Debug)]
pub enum Hs {
    /// A well-formed paying handshake.
    Paying {
        /// Account index.
        account: u8,
        /// Our extension's id at the peer (0 disables).
        pse_id: u8,
        /// Advertised terms: (price, trust).
        terms: Option<(u8, u16)>,
        /// `None`: no `pseAuth` (web3torrent); `Some(true)`: proves the account;
        /// `Some(false)`: the proof is another account's signature (a stranger).
        auth: Option<bool>,
    },
    /// Presents our own account.
    SelfAccount,
    /// Raw bencode, decoded the way the adapter does.
    Raw(Vec<u8>),
}

/// A paid-streaming message.
#[derive(Arbitrary, Debug)]
pub enum Ext {
    /// Random bytes.
    Raw(Vec<u8>),
    /// `stop` (maybe with a channel id byte).
    Stop(Option<u8>),
    /// `start`.
    Start,
    /// `permanent-stop`.
    PermanentStop(Option<u8>),
    /// `ack`.
    Ack,
    /// `prompt`.
    Prompt(u32, u64),
    /// A channel message.
    Message {
        /// Addressed to us (else to someone else).
        for_us: bool,
        /// Sender account index.
        sender: u8,
        /// Extra payload length (may exceed the limits).
        pad: u16,
    },
    /// An unknown command.
    Unknown(u8),
    /// Challenges us (we answer once per connection).
    AuthChallenge(u8),
    /// A proof nobody asked for, or garbage.
    AuthProof(u8),
    /// Sent under another extension's name.
    OtherExtension(Vec<u8>),
}

/// What the channel client reports (a model of a real client: consistent totals).
#[derive(Arbitrary, Debug)]
pub enum Chan {
    /// The oldest pending `Create` succeeded.
    Created,
    /// A created payee channel is funded.
    PayeeReady(u8),
    /// A payment on a ready payee channel.
    Paid(u8, u32),
    /// A proposal from a payee.
    Proposed {
        /// Account index.
        payee: u8,
        /// Deposit.
        deposit: u32,
        /// Price.
        price: Option<u8>,
        /// With the nonce derived from a connection of the payee (else none: declined if
        /// the payee proved its account).
        fresh: bool,
    },
    /// A joined channel is funded.
    PayerReady(u8),
    /// A channel closed.
    Closed(u8, u32),
    /// The oldest pending command failed.
    Failed,
    /// A message to a peer.
    Outbound(u8, u16),
    /// An event about a channel we never heard of.
    Unknown(u8),
    /// A channel from the store after a restart (normally reported first; here at any time).
    Restored {
        /// Account index.
        account: u8,
        /// We are its payee (else its payer).
        payee: bool,
        /// Cumulative wei paid on it.
        paid: u16,
        /// 0 funding, 1 open, 2 closing.
        state: u8,
    },
}

/// One input.
#[derive(Arbitrary, Debug)]
pub enum GlueOp {
    /// BitTorrent handshake done.
    Connect {
        /// Peer slot.
        peer: u8,
        /// BEP 10 bit.
        ext: bool,
        /// BEP 6.
        fast: bool,
    },
    /// Extended handshake.
    Handshake(u8, Hs),
    /// Extension message.
    Ext(u8, Ext),
    /// A request.
    Request(u8, u8, Len),
    /// A cancel of the n-th outstanding serve (or of anything).
    Cancel(u8, u8),
    /// Bytes sent for the n-th outstanding serve.
    BytesSent(u8, u8, Len),
    /// Bytes sent for something never served.
    BogusBytesSent(u8, u8),
    /// A block arrived.
    Block(u8, u16),
    /// Piece verified / failed.
    Piece(bool, u16),
    /// Remote choke.
    RemoteChoke(u8, bool),
    /// Remote interest.
    Interest(u8, bool),
    /// Local choke (engine authority only; ignored otherwise).
    LocalChoke(u8, bool),
    /// A channel-client event.
    Channel(Chan),
    /// Time passes (tenths of a second, squared for reach).
    Tick(u8),
    /// The connection is gone.
    Disconnect(u8),
    /// Application commands.
    StopUploading,
    /// Close our channel with an account.
    Close(u8, bool),
    /// Challenge it.
    Challenge(u8, bool),
}

#[derive(Default)]
struct Model {
    connected: HashMap<u8, PeerKey>,
    next_key: u64,
    /// Serves the coordinator asked for, per connection, not yet reported sent.
    serving: HashMap<PeerKey, Vec<BlockRequest>>,
    /// Account of each connection, as the coordinator classified it.
    pending_creates: Vec<Address>,
    pending_failures: Vec<FailedCommand>,
    /// Payee channels: id → (payer account, ready, total paid).
    payee: BTreeMap<ChannelId, (Address, bool, u128)>,
    /// Payer channels: id → (payee account, joined).
    payer: BTreeMap<ChannelId, (Address, bool)>,
    next_channel: u8,
    paid: HashMap<Address, u128>,
    served: HashMap<Address, u64>,
    /// The buyer's side: wei we were told to pay each payee in this run (failed payments are
    /// rolled back by the coordinator, and here), and bytes that arrived from its connections.
    bought: HashMap<Address, u128>,
    received: HashMap<Address, u64>,
    /// Raw handshakes that decoded (each may name an account outside `account(..)`).
    raw_handshakes: usize,
    /// The coordinator's challenge to each connection, and the one it answered.
    ours: HashMap<PeerKey, [u8; 32]>,
    theirs: HashMap<PeerKey, [u8; 32]>,
}

fn config() -> CoordinatorConfig {
    let mut c = CoordinatorConfig::new(me(), me());
    c.non_paying = NonPayingPolicy::Refuse;
    c.max_deferred_requests = 8;
    c.max_outbox = 4;
    c.liveness = LivenessConfig::default()
        .with_handshake_timeout(Duration::from_secs(5))
        .with_response_timeout(Duration::from_secs(20))
        .with_idle_close_after(Some(Duration::from_secs(30)))
        .with_stall_timeout(Some(Duration::from_secs(40)));
    let up = c.upload.as_mut().expect("default upload config");
    up.deposit = 1 << 24;
    up.choke.price_per_byte = PRICE;
    up.choke.trust = TrustPolicy::fixed(TRUST);
    up.choke.max_queue_len = 16;
    up.choke.blocked = BlockedPolicy::QueueUntilPaid;
    up.choke.prompt = Some(PromptPolicy::default());
    let down = c.download.as_mut().expect("default download config");
    down.granularity_bytes = 64 * 1024;
    down.max_price_per_byte = 4;
    down.max_deposit = 1 << 26;
    down.budget = 1 << 27;
    c
}

fn request(index: u8, begin: u8, len: Len) -> BlockRequest {
    BlockRequest {
        index: u32::from(index % 8),
        begin: u32::from(begin % 4) * BLOCK,
        length: match len {
            Len::Block => BLOCK,
            Len::Zero => 0,
            Len::Any(x) => x,
        },
    }
}

fn envelope(recipient: Address, sender: Address, pad: u16) -> String {
    format!(
        r#"{{"recipient":"{}","sender":"{}","data":{{"pad":"{}"}}}}"#,
        recipient.to_checksum(None),
        sender.to_checksum(None),
        "x".repeat(usize::from(pad) % 3000)
    )
}

fn ext_payload(ext: &Ext) -> Option<(&'static str, Vec<u8>)> {
    let cid = |b: &Option<u8>| b.map(|b| pse::ChannelId([b; 32]));
    let msg = match ext {
        Ext::Raw(bytes) => return Some((EXTENSION_NAME, bytes.clone())),
        Ext::OtherExtension(bytes) => return Some(("ut_metadata", bytes.clone())),
        Ext::Stop(c) => PseMessage::Stop { channel_id: cid(c) },
        Ext::Start => PseMessage::Start,
        Ext::PermanentStop(c) => PseMessage::PermanentStop { channel_id: cid(c) },
        Ext::Ack => PseMessage::Ack,
        Ext::Prompt(bytes, amount) => PseMessage::Prompt {
            bytes: u64::from(*bytes),
            amount: u128::from(*amount),
        },
        Ext::Message {
            for_us,
            sender,
            pad,
        } => PseMessage::Message {
            message: envelope(
                if *for_us { me() } else { account(3) },
                account(*sender),
                *pad,
            ),
        },
        Ext::Unknown(x) => PseMessage::Unknown {
            command: format!("cmd{x}"),
            data: None,
        },
        Ext::AuthChallenge(x) => {
            return Some((EXTENSION_NAME, identity::encode_challenge(&[*x; 32])));
        }
        Ext::AuthProof(x) => {
            let mut payload = b"d7:command10:auth-proof4:datad9:signature132:0x".to_vec();
            payload.extend(std::iter::repeat_n(
                b"0123456789abcdef"[usize::from(*x % 16)],
                130,
            ));
            payload.extend_from_slice(b"ee8:msg_typei0ee");
            return Some((EXTENSION_NAME, payload));
        }
    };
    Some((EXTENSION_NAME, msg.encode()))
}

struct Harness {
    c: Coordinator,
    now: Instant,
    m: Model,
    config: CoordinatorConfig,
}

impl Harness {
    fn key(&self, peer: u8) -> Option<PeerKey> {
        self.m.connected.get(&(peer % PEERS)).copied()
    }

    fn account_of(&self, key: PeerKey) -> Option<Address> {
        match self.c.peer_class(key)? {
            torrent_glue::coordinator::PeerClass::Paying { account } => Some(account),
            _ => None,
        }
    }

    fn serve(&mut self, key: PeerKey, request: BlockRequest) {
        self.m.serving.entry(key).or_default().push(request);
    }

    /// Drains every output, acting like an engine and a channel client would.
    fn drain(&mut self) {
        while let Some(cmd) = self.c.poll_engine_command() {
            match cmd {
                EngineCommand::Serve { peer, request } => self.serve(peer, request),
                EngineCommand::Disconnect { peer, .. } => {
                    if let Some(slot) = self
                        .m
                        .connected
                        .iter()
                        .find(|(_, k)| **k == peer)
                        .map(|(s, _)| *s)
                    {
                        self.m.connected.remove(&slot);
                        self.m.serving.remove(&peer);
                        self.c
                            .handle_disconnect(self.now, peer)
                            .expect("a connected peer disconnects");
                    }
                }
                EngineCommand::SendExtended { peer, payload, .. } => {
                    assert!(payload.len() <= 16 * 1024, "oversized extension message");
                    if let Some(nonce) = identity::decode_challenge(&payload) {
                        self.m.ours.insert(peer, nonce);
                    }
                }
                _ => {}
            }
        }
        while let Some(cmd) = self.c.poll_channel_command() {
            match cmd {
                ChannelCommand::Create { peer, .. } => self.m.pending_creates.push(peer),
                ChannelCommand::Join { channel_id, .. } => {
                    if let Some(ch) = self.m.payer.get_mut(&channel_id) {
                        ch.1 = true;
                    }
                    self.m
                        .pending_failures
                        .push(FailedCommand::Join { channel_id });
                }
                ChannelCommand::Pay { channel_id, amount } => {
                    let (payee, _) = *self
                        .m
                        .payer
                        .get(&channel_id)
                        .expect("a payment on a channel we joined and that is not closed");
                    *self.m.bought.entry(payee).or_default() += amount;
                    self.m
                        .pending_failures
                        .push(FailedCommand::Pay { channel_id, amount });
                }
                ChannelCommand::Close { channel_id } => self
                    .m
                    .pending_failures
                    .push(FailedCommand::Close { channel_id }),
                ChannelCommand::Challenge { channel_id } => self
                    .m
                    .pending_failures
                    .push(FailedCommand::Challenge { channel_id }),
                _ => {}
            }
        }
        while self.c.poll_event().is_some() {}
        if self.m.pending_failures.len() > 64 {
            self.m.pending_failures.drain(..32);
        }
    }

    fn channel(&mut self, ev: Chan) {
        let nth = |n: u8, len: usize| usize::from(n) % len.max(1);
        let mut credit = None;
        let event = match ev {
            Chan::Created => {
                if self.m.pending_creates.is_empty() {
                    return;
                }
                let peer = self.m.pending_creates.remove(0);
                self.m.next_channel = self.m.next_channel.wrapping_add(1);
                let id = ChannelId([self.m.next_channel; 32]);
                self.m.payee.insert(id, (peer, false, 0));
                ChannelEvent::Created {
                    peer,
                    channel_id: id,
                }
            }
            Chan::PayeeReady(n) => {
                let len = self.m.payee.len();
                let Some((&id, ch)) = self.m.payee.iter_mut().nth(nth(n, len)) else {
                    return;
                };
                if ch.1 {
                    return; // a client reports funding once
                }
                ch.1 = true;
                ChannelEvent::Ready {
                    channel_id: id,
                    counterparty: ch.0,
                    role: Role::Payee,
                    deposit: 1 << 24,
                }
            }
            Chan::Paid(n, delta) => {
                let len = self.m.payee.len();
                let Some((&id, ch)) = self.m.payee.iter_mut().nth(nth(n, len)) else {
                    return;
                };
                if !ch.1 || delta == 0 {
                    return;
                }
                let delta = u128::from(delta);
                ch.2 += delta;
                credit = Some((ch.0, delta));
                ChannelEvent::PaymentReceived {
                    channel_id: id,
                    delta,
                    total: ch.2,
                }
            }
            Chan::Proposed {
                payee,
                deposit,
                price,
                fresh,
            } => {
                let nonce = fresh
                    .then(|| {
                        self.m.connected.values().find_map(|k| {
                            (self.account_of(*k) == Some(account(payee)))
                                .then(|| Some((self.m.ours.get(k)?, self.m.theirs.get(k)?)))
                                .flatten()
                                .map(|(o, t)| identity::channel_nonce(o, t, 0))
                        })
                    })
                    .flatten();
                self.m.next_channel = self.m.next_channel.wrapping_add(1);
                let id = ChannelId([self.m.next_channel; 32]);
                self.m.payer.insert(id, (account(payee), false));
                ChannelEvent::Proposed {
                    channel_id: id,
                    payee: account(payee),
                    deposit: u128::from(deposit),
                    price: price.map(u128::from),
                    nonce,
                }
            }
            Chan::PayerReady(n) => {
                let len = self.m.payer.len();
                let Some((&id, ch)) = self.m.payer.iter().nth(nth(n, len)) else {
                    return;
                };
                if !ch.1 {
                    return;
                }
                ChannelEvent::Ready {
                    channel_id: id,
                    counterparty: ch.0,
                    role: Role::Payer,
                    deposit: 1 << 20,
                }
            }
            Chan::Closed(n, amount) => {
                let ids: Vec<ChannelId> = self
                    .m
                    .payee
                    .keys()
                    .chain(self.m.payer.keys())
                    .copied()
                    .collect();
                let Some(&id) = ids.get(nth(n, ids.len())) else {
                    return;
                };
                // A closed channel reports nothing more.
                let payee_amount = match self.m.payee.remove(&id) {
                    Some(ch) => ch.2,
                    None => {
                        self.m.payer.remove(&id);
                        u128::from(amount)
                    }
                };
                ChannelEvent::Closed {
                    channel_id: id,
                    payee_amount,
                }
            }
            Chan::Failed => {
                if let Some(peer) = self.m.pending_creates.first().copied() {
                    self.m.pending_creates.remove(0);
                    ChannelEvent::CommandFailed {
                        command: FailedCommand::Create { peer },
                        reason: "fuzz".into(),
                    }
                } else if !self.m.pending_failures.is_empty() {
                    let command = self.m.pending_failures.remove(0);
                    if let FailedCommand::Pay { channel_id, amount } = command
                        && let Some((payee, _)) = self.m.payer.get(&channel_id)
                        && let Some(bought) = self.m.bought.get_mut(payee)
                    {
                        // The coordinator takes a failed payment back (and may make it again).
                        *bought = bought.saturating_sub(amount);
                    }
                    ChannelEvent::CommandFailed {
                        command,
                        reason: "fuzz".into(),
                    }
                } else {
                    return;
                }
            }
            Chan::Outbound(a, pad) => ChannelEvent::Outbound {
                to: account(a),
                json: envelope(account(a), me(), pad),
            },
            Chan::Restored {
                account: a,
                payee,
                paid,
                state,
            } => {
                self.m.next_channel = self.m.next_channel.wrapping_add(1);
                let id = ChannelId([self.m.next_channel; 32]);
                let state = match state % 3 {
                    0 => RestoredState::Funding,
                    1 => RestoredState::Open,
                    _ => RestoredState::Closing,
                };
                let paid = u128::from(paid);
                // What was paid before the restart was credited then: the model credits only
                // payments above it.
                if payee {
                    self.m.payee.insert(id, (account(a), true, paid));
                } else {
                    self.m.payer.insert(id, (account(a), false));
                }
                ChannelEvent::Restored {
                    channel_id: id,
                    counterparty: account(a),
                    role: if payee { Role::Payee } else { Role::Payer },
                    deposit: 1 << 24,
                    paid,
                    state,
                }
            }
            Chan::Unknown(b) => ChannelEvent::PaymentReceived {
                channel_id: ChannelId([0xF0 | (b & 0x0F); 32]),
                delta: 1,
                total: 1,
            },
        };
        let accepted = self.c.handle_channel_event(self.now, event).is_ok();
        if let Some((account, delta)) = credit.filter(|_| accepted) {
            *self.m.paid.entry(account).or_default() += delta;
        }
    }

    fn step(&mut self, op: GlueOp) {
        let now = self.now;
        match op {
            GlueOp::Connect { peer, ext, fast } => {
                let slot = peer % PEERS;
                if self.m.connected.contains_key(&slot) {
                    return;
                }
                self.m.next_key += 1;
                let key = PeerKey(self.m.next_key);
                let mut reserved = [0u8; 8];
                if ext {
                    reserved[5] |= 0x10;
                }
                if fast {
                    reserved[7] |= 0x04;
                }
                let mut info = PeerInfo::new(TorrentKey(0), Direction::Inbound, reserved)
                    .with_session(INFO_HASH, OUR_PEER_ID, peer_id(key));
                info.fast_negotiated = fast;
                info.allowed_fast = vec![1, 2];
                self.c
                    .handle_peer_connected(now, key, info)
                    .expect("a fresh key connects");
                self.m.connected.insert(slot, key);
            }
            GlueOp::Handshake(peer, hs) => {
                let Some(key) = self.key(peer) else { return };
                let mut proof = None;
                let view = match hs {
                    Hs::Paying {
                        account: a,
                        pse_id,
                        terms,
                        auth,
                    } => {
                        let mut h = ExtendedHandshake::new();
                        h.m.insert(EXTENSION_NAME.into(), pse_id);
                        h.set_pse_account(account(a).to_checksum(None).as_bytes());
                        h.set_pse_auth(auth.map(|_| identity::AUTH_VERSION));
                        if let Some(honest) = auth {
                            let prover = if honest { a } else { a.wrapping_add(1) };
                            proof = Some(signers()[usize::from(prover % ACCOUNTS)].clone());
                        }
                        if let Some((price, trust)) = terms {
                            let t = torrent_glue::Terms {
                                price_per_byte: u128::from(price),
                                trust_bytes: u64::from(trust),
                            };
                            h.extra.insert(TERMS_KEY.as_bytes().to_vec(), t.to_value());
                        }
                        PeerExtendedHandshake::from_extended(&h)
                    }
                    Hs::SelfAccount => {
                        let mut h = ExtendedHandshake::new();
                        h.m.insert(EXTENSION_NAME.into(), 3);
                        h.set_pse_account(me().to_checksum(None).as_bytes());
                        PeerExtendedHandshake::from_extended(&h)
                    }
                    Hs::Raw(bytes) => match ExtendedHandshake::decode(&bytes) {
                        Ok(h) => {
                            self.m.raw_handshakes += 1;
                            PeerExtendedHandshake::from_extended(&h)
                        }
                        Err(_) => return,
                    },
                };
                let _ = self.c.handle_extended_handshake(now, key, &view);
                self.drain();
                // Answer the challenge, as the peer (or a stranger claiming its account) would.
                if let (Some(prover), Some(nonce)) = (proof, self.m.ours.get(&key).copied()) {
                    let ctx = ProofContext {
                        nonce,
                        info_hash: INFO_HASH,
                        challenger_peer_id: OUR_PEER_ID,
                        prover_peer_id: peer_id(key),
                    };
                    let sig = identity::prove(prover.as_ref(), &ctx).expect("signs");
                    let _ = self.c.handle_extension_message(
                        now,
                        key,
                        EXTENSION_NAME,
                        &identity::encode_proof(&sig),
                    );
                }
            }
            GlueOp::Ext(peer, ext) => {
                let Some(key) = self.key(peer) else { return };
                if let Ext::AuthChallenge(x) = &ext {
                    self.m.theirs.entry(key).or_insert([*x; 32]);
                }
                if let Some((name, payload)) = ext_payload(&ext) {
                    let _ = self.c.handle_extension_message(now, key, name, &payload);
                }
            }
            GlueOp::Request(peer, index, len) => {
                let Some(key) = self.key(peer) else { return };
                let r = request(index, index / 8, len);
                if let Ok(RequestDecision::Serve) = self.c.handle_request(now, key, r) {
                    self.serve(key, r);
                }
            }
            GlueOp::Cancel(peer, n) => {
                let Some(key) = self.key(peer) else { return };
                let r = self
                    .m
                    .serving
                    .get(&key)
                    .and_then(|v| v.get(usize::from(n) % v.len().max(1)).copied())
                    .unwrap_or_else(|| request(n, 0, Len::Block));
                let _ = self.c.handle_cancel(now, key, r);
            }
            GlueOp::BytesSent(peer, n, len) => {
                let Some(key) = self.key(peer) else { return };
                let Some(list) = self.m.serving.get_mut(&key) else {
                    return;
                };
                if list.is_empty() {
                    return;
                }
                let r = list.remove(usize::from(n) % list.len());
                let sent = match len {
                    Len::Block | Len::Any(_) => r.length,
                    Len::Zero => 0,
                };
                let account = self.account_of(key);
                self.c
                    .handle_bytes_sent(now, key, r, sent)
                    .expect("a serve the coordinator asked for is accepted");
                match account {
                    Some(a) => *self.m.served.entry(a).or_default() += u64::from(sent),
                    None => assert_eq!(sent, 0, "served a peer that is not paying: {r:?}"),
                }
            }
            GlueOp::BogusBytesSent(peer, n) => {
                let Some(key) = self.key(peer) else { return };
                let r = request(n, n, Len::Block);
                let outstanding = self.m.serving.get(&key).is_some_and(|v| v.contains(&r));
                if !outstanding {
                    assert!(
                        self.c.handle_bytes_sent(now, key, r, r.length).is_err(),
                        "bytes sent for a request never served were accepted"
                    );
                }
            }
            GlueOp::Block(peer, bytes) => {
                let Some(key) = self.key(peer) else { return };
                let account = self.account_of(key);
                let accepted = self
                    .c
                    .handle_block_received(now, key, request(0, 0, Len::Block), u32::from(bytes))
                    .is_ok();
                if let (true, Some(a)) = (accepted, account) {
                    *self.m.received.entry(a).or_default() += u64::from(bytes);
                }
            }
            GlueOp::Piece(ok, len) => {
                if ok {
                    self.c
                        .handle_piece_verified(now, TorrentKey(0), 0, u32::from(len));
                } else {
                    self.c
                        .handle_piece_failed(now, TorrentKey(0), 0, u32::from(len));
                }
            }
            GlueOp::RemoteChoke(peer, choked) => {
                let Some(key) = self.key(peer) else { return };
                let _ = self.c.handle_remote_choke(now, key, choked);
            }
            GlueOp::Interest(peer, interested) => {
                let Some(key) = self.key(peer) else { return };
                let _ = self.c.handle_remote_interest(now, key, interested);
            }
            GlueOp::LocalChoke(peer, choked) => {
                let Some(key) = self.key(peer) else { return };
                let _ = self.c.handle_local_choke(now, key, choked);
            }
            GlueOp::Channel(ev) => self.channel(ev),
            GlueOp::Tick(t) => {
                let tenths = u64::from(t) * u64::from(t);
                self.now += Duration::from_millis(tenths * 100);
                self.c.handle_timeout(self.now);
            }
            GlueOp::Disconnect(peer) => {
                let slot = peer % PEERS;
                if let Some(key) = self.m.connected.remove(&slot) {
                    self.m.serving.remove(&key);
                    self.c
                        .handle_disconnect(now, key)
                        .expect("a connected peer disconnects");
                }
            }
            GlueOp::StopUploading => self.c.stop_uploading(now, None),
            GlueOp::Close(a, payee) => {
                let role = if payee { Role::Payee } else { Role::Payer };
                self.c.close_channel(now, account(a), role);
            }
            GlueOp::Challenge(a, payee) => {
                let role = if payee { Role::Payee } else { Role::Payer };
                self.c.challenge_channel(now, account(a), role);
            }
        }
        self.drain();
    }

    fn check(&self) {
        let usage = self.c.resource_usage();
        let cfg = &self.config;
        let up = cfg.upload.as_ref().expect("upload");
        assert!(usage.peers <= usize::from(PEERS), "{usage:?}");
        assert!(usage.max_deferred <= cfg.max_deferred_requests, "{usage:?}");
        assert!(usage.max_gate_queue <= up.choke.max_queue_len, "{usage:?}");
        assert!(usage.max_outbox <= cfg.max_outbox, "{usage:?}");
        assert!(
            usage.identities <= usize::from(ACCOUNTS) + self.m.raw_handshakes,
            "{usage:?}"
        );
        assert!(usage.pending_proposals <= 256, "{usage:?}");
        // Served ≤ paid + trust, per identity (bytes at the configured price).
        for (account, served) in &self.m.served {
            let paid = self.m.paid.get(account).copied().unwrap_or(0);
            let allowed = paid / PRICE + u128::from(TRUST);
            assert!(
                u128::from(*served) <= allowed,
                "{account}: served {served} bytes, paid {paid} wei (+{TRUST} trust)"
            );
            if let Some(view) = self.c.identity(*account) {
                assert!(view.wei_received <= paid, "credited more than was paid");
            }
        }
        // The buyer's bound: paid ≤ (received + window) at the highest price we accept, per
        // payee, whatever the seller sends (prompts, STOP/START, new terms, reconnects).
        let down = cfg.download.as_ref().expect("download");
        let window = down.window_bytes();
        for (payee, wei) in &self.m.bought {
            let received = self.m.received.get(payee).copied().unwrap_or(0);
            let allowed = down.max_price_per_byte * u128::from(received.saturating_add(window));
            assert!(
                *wei <= allowed,
                "{payee}: paid {wei} wei for {received} bytes received (window {window} B)"
            );
        }
    }
}

/// Runs the inputs, checking the bounds and the accounting after each.
pub fn glue_events(data: &[u8]) {
    let mut u = arbitrary::Unstructured::new(data);
    let config = config();
    let me = signers()[usize::from(ACCOUNTS)].clone();
    let mut c = Coordinator::with_signer(config.clone(), me).expect("valid config");
    // Reproducible challenges: a crash replays exactly.
    c.set_challenge_secret([0x5e; 32]);
    c.add_torrent(TorrentKey(0), 1 << 22).expect("new torrent");
    let mut h = Harness {
        c,
        now: Instant::now(),
        m: Model::default(),
        config,
    };
    crate::run_ops(
        &mut u,
        MAX_OPS,
        crate::FirstOp::Always,
        Some("GLUE_DEBUG"),
        |op: GlueOp| {
            h.step(op);
            h.check();
        },
    );
    // Everyone leaves; after the grace periods nothing is held for them but accounting.
    let peers: Vec<PeerKey> = h.m.connected.drain().map(|(_, k)| k).collect();
    for key in peers {
        h.c.handle_disconnect(h.now, key).expect("connected");
    }
    h.drain();
    for _ in 0..4 {
        h.now += Duration::from_secs(60);
        h.c.handle_timeout(h.now);
        h.drain();
    }
    let usage = h.c.resource_usage();
    assert_eq!(usage.peers, 0);
    assert_eq!(usage.pending_proposals, 0, "{usage:?}");
    h.check();
}
