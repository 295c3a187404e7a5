//! Support of torrent-glue's integration tests (`until`, `balance`, the real node under test) and
//! the scripted peer of the hostile suites (`hostile.rs`: a hostile buyer against a real seller;
//! `hostile_seller.rs`: a hostile seller against a real buyer). The peer speaks the wire frame by
//! frame with paid-wire's codecs and, where money is involved, runs its own sans-IO `Channel`
//! (payer or payee) so it can follow the channel protocol honestly or not.

#![allow(dead_code, unreachable_pub)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use paid_wire::codec::{HandshakeCodec, PeerCodec};
use paid_wire::extended::ExtendedHandshake;
use paid_wire::handshake::{Handshake, Reserved};
use paid_wire::message::Message;
use paid_wire::pse::PseMessage;
use payment_channel::SimulatedChain;
use payment_channel::chain::Chain;
use payment_channel::channel::Channel;
use payment_channel::client::Client;
use payment_channel::message::{Envelope, Message as ChannelMessage};
use payment_channel::policy::JoinPolicy;
use payment_channel::sign::{LocalSigner, Signer};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::codec::Framed;
use torrent_glue::adapter::{ChannelBackend, ClientBackend, MemoryTorrent, Node, NodeConfig};
use torrent_glue::engine::TERMS_KEY;
use torrent_glue::identity::{self, ProofContext};
use torrent_glue::test_utils;
use torrent_glue::{
    Address, ChannelId, Coordinator, CoordinatorConfig, CoordinatorEvent, DownloadConfig,
    EXTENSION_NAME, LivenessConfig, Role, Terms, TorrentKey,
};

/// Makes `config` a buyer's (no upload) whose deposits and budget have no cap: its download
/// settings, to tune further.
pub fn unbounded_buyer(config: &mut CoordinatorConfig) -> &mut DownloadConfig {
    config.upload = None;
    let down = config.download.as_mut().unwrap();
    down.max_deposit = u128::MAX;
    down.budget = u128::MAX;
    down
}

/// The info hash of the suites' torrent.
pub const INFO_HASH: [u8; 20] = [0x42; 20];
/// Our (the scripted peer's) local id for the paid-streaming extension.
pub const OUR_PSE_ID: u8 = 7;
/// The scripted peer's BitTorrent peer id.
pub const OUR_PEER_ID: [u8; 20] = *b"-XX0001-ATTACKER0000";

pub async fn until(what: &str, secs: u64, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits up to `secs` for a `Challenging` event of `role` among what `events` drains, and
/// returns its channel.
pub async fn challenging(
    secs: u64,
    role: Role,
    mut events: impl FnMut() -> Vec<CoordinatorEvent>,
) -> ChannelId {
    let mut challenged = None;
    until("the challenge", secs, || {
        for e in events() {
            if let CoordinatorEvent::Challenging {
                role: r,
                channel_id,
                ..
            } = e
                && r == role
            {
                challenged = Some(channel_id);
            }
        }
        challenged.is_some()
    })
    .await;
    challenged.expect("until returned")
}

/// Like [`until`] after the challenge period has passed on `chain`, but the simulated clock goes
/// on by a second every 100 ms of waiting, as a real chain's blocks keep coming: a transaction
/// that failed (e.g. sent before the watcher saw the last challenge) is retried with a backoff
/// counted in chain time, which a frozen clock would never reach.
pub async fn until_after_finalization(
    chain: &SimulatedChain,
    what: &str,
    secs: u64,
    mut done: impl FnMut() -> bool,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    let mut next_second = tokio::time::Instant::now() + Duration::from_millis(100);
    while !done() {
        let now = tokio::time::Instant::now();
        assert!(now < deadline, "timed out waiting for {what}");
        if now >= next_second {
            chain.advance_time(1);
            next_second = now + Duration::from_millis(100);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until `id`'s challenge is registered on chain. The `Challenging` event says the
/// challenge was decided, not that it landed: time may only move on once the adjudicator has
/// registered it, or the challenge would finalize a duration later.
pub async fn until_challenge_on_chain(chain: &SimulatedChain, id: ChannelId, secs: u64) {
    until("the challenge on chain", secs, || {
        chain.status_of(id.0.into()).finalizes_at > 0
    })
    .await;
}

pub fn balance(chain: &SimulatedChain, a: Address) -> u128 {
    u128::try_from(chain.balance_of(a)).unwrap()
}

pub use payment_channel::test_utils::ready;

// ------------------------------------------------------------------ the real node under test

/// Challenge duration of every channel in the suites (seconds).
pub const CHALLENGE_DURATION: u64 = 60;

/// A payment-channel client for `signer` on `chain` (no transport: the node's backend carries
/// its messages), and that backend, vetting proposals with `policy`.
pub async fn client_backend(
    chain: &SimulatedChain,
    signer: Arc<LocalSigner>,
    policy: Option<JoinPolicy>,
) -> (Client, Arc<ClientBackend>) {
    let handle = Arc::new(chain.handle(signer.address()));
    let (client, backend) =
        test_utils::client_backend(chain, handle, signer, CHALLENGE_DURATION, policy).await;
    (client, Arc::new(backend))
}

/// The key of the suites' torrent in every node.
pub const T: TorrentKey = TorrentKey(0);

/// Starts a node of `config` signed by `signer` over `backend`, with `torrent` as the suites'
/// torrent, accepting connections on a fresh loopback port: the node, its events, its address.
pub async fn start_node(
    config: CoordinatorConfig,
    signer: Arc<LocalSigner>,
    node_config: NodeConfig,
    backend: Arc<dyn ChannelBackend>,
    torrent: Arc<MemoryTorrent>,
) -> (Node, mpsc::UnboundedReceiver<CoordinatorEvent>, SocketAddr) {
    let node = Node::start(
        Coordinator::with_signer(config, signer).unwrap(),
        node_config,
        backend,
    );
    node.add_torrent(T, INFO_HASH, torrent).unwrap();
    let events = node.subscribe();
    let addr = listen(&node).await;
    (node, events, addr)
}

/// The suites' liveness: 2 s for handshakes and answers, idle connections closed after `idle`.
pub fn liveness(idle: Duration) -> LivenessConfig {
    LivenessConfig::default()
        .with_handshake_timeout(Duration::from_secs(2))
        .with_response_timeout(Duration::from_secs(2))
        .with_idle_close_after(Some(idle))
        .with_stall_timeout(None)
}

/// The suites' torrent content: `size` bytes of a fixed pattern.
pub fn content(size: u64) -> Vec<u8> {
    (0..size).map(|i| (i * 7 % 251) as u8).collect()
}

/// Accepts connections for `node` on a fresh loopback port, in the background; its address.
pub async fn listen(node: &Node) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let n = node.clone();
    tokio::spawn(async move {
        let _ = n.accept(listener).await;
    });
    addr
}

// ------------------------------------------------------------------ the scripted peer

#[derive(Debug)]
pub enum Recv {
    Frame(Message),
    Closed,
    Silent,
}

pub struct Attacker<S> {
    pub wire: Framed<S, PeerCodec>,
    pub signer: Arc<LocalSigner>,
    /// The uploader's id for the paid-streaming extension (from its extended handshake).
    pub their_pse_id: Option<u8>,
    /// Our payer side of the channel, when we open one.
    pub ch: Option<Channel>,
    pub seen_chain_events: usize,
    /// The node's BitTorrent peer id (identity proofs bind it).
    pub their_peer_id: [u8; 20],
    /// Who answers the node's identity challenges: our signer unless a test makes a stranger
    /// answer for the account it claims; `None`: challenges go unanswered.
    pub prover: Option<Arc<LocalSigner>>,
    /// The account our extended handshakes claim (`None`: our signer's).
    pub claimed: Option<Address>,
    /// Challenges received from the node, and proofs we sent.
    pub challenges: usize,
    /// Frames read while answering the challenge, handed out first by `recv_frame`.
    pub buffered: VecDeque<Message>,
    /// The node's last challenge to us (the payer's value when the node buys).
    pub node_challenge: Option<[u8; 32]>,
    /// Our challenge to the node (the payee's value when we sell).
    pub our_challenge: Option<[u8; 32]>,
    /// Channels we proposed on this connection (the index of the next nonce).
    pub proposed: u32,
}

pub async fn tcp(addr: SocketAddr) -> tokio::net::TcpStream {
    let s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    s
}

impl<S: AsyncRead + AsyncWrite + Unpin> Attacker<S> {
    /// BitTorrent handshake (BEP 10 and BEP 6 bits as given), then the uploader's handshake.
    pub async fn handshake(stream: S, ext: bool) -> Self {
        let mut hs = Framed::new(stream, HandshakeCodec::new());
        let reserved = Reserved::empty()
            .with_extension_protocol(ext)
            .with_fast(true);
        hs.send(Handshake::new(reserved, INFO_HASH, OUR_PEER_ID))
            .await
            .unwrap();
        let theirs = hs.next().await.unwrap().unwrap();
        assert_eq!(theirs.info_hash, INFO_HASH);
        Self {
            wire: hs.map_codec(|_| PeerCodec::new()),
            signer: Arc::new(LocalSigner::random()),
            their_pse_id: None,
            ch: None,
            seen_chain_events: 0,
            their_peer_id: theirs.peer_id,
            prover: None,
            claimed: None,
            challenges: 0,
            buffered: VecDeque::new(),
            node_challenge: None,
            our_challenge: None,
            proposed: 0,
        }
    }

    /// Handshake plus a paying extended handshake with our account.
    pub async fn paying(stream: S) -> Self {
        Self::paying_with(stream, Arc::new(LocalSigner::random()), None).await
    }

    /// Handshake plus a paying extended handshake as `signer`'s account, advertising `terms`
    /// (as an uploader does) if given.
    ///
    /// It proves the account as the node asks (`pseAuth`), before returning: the node treats it
    /// as paying from then on.
    pub async fn paying_with(stream: S, signer: Arc<LocalSigner>, terms: Option<Terms>) -> Self {
        let mut a = Self::handshake(stream, true).await;
        a.prover = Some(signer.clone());
        a.signer = signer;
        a.send_extended_handshake(terms).await;
        a.await_challenge(10).await;
        a.challenge_node().await;
        a
    }

    /// Challenges the node to prove its account (it answers with `auth-proof`, which
    /// `recv_frame` hands on like any frame). Our challenge is the payee's share of the nonce
    /// of the channels we propose.
    pub async fn challenge_node(&mut self) {
        let mut nonce = [0u8; 32];
        getrandom::fill(&mut nonce).expect("OS random generator");
        self.our_challenge = Some(nonce);
        self.send_pse_payload(identity::encode_challenge(&nonce))
            .await;
    }

    /// The nonce of the next channel we propose to the node on this connection: derived from
    /// both challenges, as an honest seller does.
    pub fn next_nonce(&mut self) -> u64 {
        let n = identity::channel_nonce(
            &self.node_challenge.expect("the node challenged us"),
            &self.our_challenge.expect("we challenged the node"),
            self.proposed,
        );
        self.proposed += 1;
        n
    }

    /// Handshake plus an extended handshake claiming `claimed` (someone else's account), with
    /// `prover` answering the node's challenge (`None`: nobody answers). Returns once the
    /// challenge was answered (or, without a prover, once it arrived).
    pub async fn claiming(
        stream: S,
        claimed: Address,
        prover: Option<Arc<LocalSigner>>,
        terms: Option<Terms>,
    ) -> Self {
        let mut a = Self::handshake(stream, true).await;
        a.claimed = Some(claimed);
        a.prover = prover;
        a.send_extended_handshake(terms).await;
        a.await_challenge(10).await;
        a
    }

    /// Reads (and keeps for later `recv_frame`s) until the node's challenge has arrived and
    /// been handled.
    pub async fn await_challenge(&mut self, secs: u64) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        let seen = self.challenges;
        while self.challenges == seen {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.read_frame(left.as_millis() as u64).await {
                Recv::Frame(m) => self.buffered.push_back(m),
                other => panic!("no identity challenge from the node: {other:?}"),
            }
        }
    }

    /// A (new) extended handshake with our account and these terms.
    pub async fn send_extended_handshake(&mut self, terms: Option<Terms>) {
        let mut hs = ExtendedHandshake::new();
        hs.m.insert(EXTENSION_NAME.into(), OUR_PSE_ID);
        let account = self.claimed.unwrap_or_else(|| self.signer.address());
        hs.set_pse_account(account.to_checksum(None).as_bytes());
        hs.set_pse_auth(Some(identity::AUTH_VERSION));
        if let Some(terms) = terms {
            hs.extra
                .insert(TERMS_KEY.as_bytes().to_vec(), terms.to_value());
        }
        self.send_frame(hs.to_message()).await;
    }

    pub fn account(&self) -> Address {
        self.signer.address()
    }

    pub async fn send_frame(&mut self, m: Message) {
        self.wire.send(m).await.unwrap();
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        let io = self.wire.get_mut();
        io.write_all(bytes).await.unwrap();
        io.flush().await.unwrap();
    }

    pub async fn recv_frame(&mut self, millis: u64) -> Recv {
        if let Some(m) = self.buffered.pop_front() {
            return Recv::Frame(m);
        }
        self.read_frame(millis).await
    }

    /// The next frame off the wire; the node's identity challenge is answered on the way (by
    /// `prover`) and counted, and handed on like any frame.
    async fn read_frame(&mut self, millis: u64) -> Recv {
        match tokio::time::timeout(Duration::from_millis(millis), self.wire.next()).await {
            Err(_) => Recv::Silent,
            Ok(None | Some(Err(_))) => Recv::Closed,
            Ok(Some(Ok(m))) => {
                if let Message::Extended { id: 0, payload } = &m
                    && let Ok(hs) = ExtendedHandshake::decode(payload)
                    && let Some(id) = hs.m.get(EXTENSION_NAME)
                {
                    self.their_pse_id = Some(*id);
                }
                if let Message::Extended { id, payload } = &m
                    && *id == OUR_PSE_ID
                    && let Some(nonce) = identity::decode_challenge(payload)
                {
                    self.challenges += 1;
                    self.node_challenge = Some(nonce);
                    if let Some(prover) = self.prover.clone() {
                        self.prove(&prover, nonce).await;
                    }
                }
                Recv::Frame(m)
            }
        }
    }

    /// Answers `nonce` with `prover`'s signature, for the account we claim.
    pub async fn prove(&mut self, prover: &LocalSigner, nonce: [u8; 32]) {
        let ctx = ProofContext {
            nonce,
            info_hash: INFO_HASH,
            challenger_peer_id: self.their_peer_id,
            prover_peer_id: OUR_PEER_ID,
        };
        let sig = identity::prove(prover, &ctx).unwrap();
        self.send_pse_payload(identity::encode_proof(&sig)).await;
    }

    /// Frames until `pred` holds (returning that frame); panics on close or after `secs`.
    pub async fn recv_until(
        &mut self,
        secs: u64,
        mut pred: impl FnMut(&Message) -> bool,
    ) -> Message {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.recv_frame(left.as_millis() as u64).await {
                Recv::Frame(m) if pred(&m) => return m,
                Recv::Frame(_) => {}
                other => panic!("expected a frame, got {other:?}"),
            }
        }
    }

    /// Everything received within `millis`, stopping early if the connection closes.
    pub async fn collect(&mut self, millis: u64) -> (Vec<Message>, bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(millis);
        let mut out = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.recv_frame(left.as_millis() as u64).await {
                Recv::Frame(m) => out.push(m),
                Recv::Closed => return (out, true),
                Recv::Silent => return (out, false),
            }
        }
    }

    /// Reads until the uploader closes the connection.
    pub async fn expect_closed(&mut self, secs: u64) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.recv_frame(left.as_millis() as u64).await {
                Recv::Frame(_) => {}
                Recv::Closed => return,
                Recv::Silent => panic!("the connection stayed open"),
            }
        }
    }

    pub async fn send_pse(&mut self, msg: &PseMessage) {
        self.send_pse_payload(msg.encode()).await;
    }

    /// Sends `payload` as a message of the node's `pse` extension (it must have advertised it).
    async fn send_pse_payload(&mut self, payload: Vec<u8>) {
        let id = self
            .their_pse_id
            .expect("the node advertised the extension");
        self.send_frame(Message::Extended {
            id,
            payload: Bytes::from(payload),
        })
        .await;
    }

    pub async fn send_channel(&mut self, to: Address, data: ChannelMessage) {
        let env = Envelope {
            recipient: to,
            sender: self.account(),
            data,
        };
        self.send_pse(&PseMessage::Message {
            message: env.to_json(),
        })
        .await;
    }

    /// The next channel message the uploader sends us.
    pub async fn recv_channel(&mut self, secs: u64) -> ChannelMessage {
        let m = self
            .recv_until(secs, |m| {
                matches!(m, Message::Extended { id, payload } if *id == OUR_PSE_ID
                    && matches!(PseMessage::decode(payload), Ok(PseMessage::Message { .. })))
            })
            .await;
        let Message::Extended { payload, .. } = m else {
            unreachable!()
        };
        let Ok(PseMessage::Message { message }) = PseMessage::decode(&payload) else {
            unreachable!()
        };
        Envelope::from_json(&message).unwrap().data
    }

    /// Executes our channel's chain actions and feeds back every new chain event.
    pub fn drive_chain(&mut self, chain: &SimulatedChain) {
        let me = self.account();
        let ch = self.ch.as_mut().unwrap();
        loop {
            while let Some(p) = ch.poll_persist() {
                ch.handle_persisted(p.generation);
            }
            let mut acted = false;
            while let Some(a) = ch.poll_chain_action() {
                acted = true;
                let h = chain.handle(me);
                match a {
                    payment_channel::channel::ChainAction::Deposit {
                        asset,
                        channel_id,
                        expected_held,
                        amount,
                    } => {
                        chain.fund(me, amount).unwrap();
                        ready(h.deposit(asset, channel_id, expected_held, amount)).unwrap();
                    }
                    payment_channel::channel::ChainAction::Challenge {
                        fixed,
                        proof,
                        candidate,
                        challenger_sig,
                    } => {
                        let _ = ready(h.challenge(&fixed, &proof, &candidate, &challenger_sig));
                    }
                    _ => {}
                }
            }
            let all = chain.all_events();
            let fresh = &all[self.seen_chain_events..];
            self.seen_chain_events = all.len();
            for r in fresh {
                if r.event.channel_id() == ch.id() {
                    ch.handle_chain_event(chain.now(), &r.event).unwrap();
                }
            }
            if !acted && fresh.is_empty() {
                return;
            }
        }
    }

    /// Our channel's next outbound message (after persisting), if any.
    pub fn outbound(&mut self) -> Option<ChannelMessage> {
        let ch = self.ch.as_mut().unwrap();
        while let Some(p) = ch.poll_persist() {
            ch.handle_persisted(p.generation);
        }
        ch.poll_outbound().map(|e| e.data)
    }
}
