//! [`HubBackend`]: channels through a hub (virtual) or direct.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex as StdMutex, Weak};
use std::time::Duration;

use async_trait::async_trait;
use derive_setters::Setters;
use paid_wire::ChannelId;
use payment_channel::chain::Chain;
use payment_channel::ledger::{LedgerPhase, LedgerRole};
use payment_channel::party_node::tcp::{NetError, TcpConfig, TcpNet, run_node};
use payment_channel::party_node::{
    NodeConfig as PartyNodeConfig, NodeError, NodeMessage, PartyNode, Transport, TransportError,
};
use payment_channel::sign::Signer;
use payment_channel::state::FixedPart;
use payment_channel::store::ChannelStore;
use payment_channel::virtual_channel::{
    PartyConfig, PartyEvent, Payload, VirtualBody, VirtualEvent, VirtualParams, VirtualRole,
};
use payment_channel::{Address, B256, U256};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::{ChannelBackend, ChannelEvents, ClientBackend, Inner, lock};
use crate::channel::{ChannelCommand, ChannelEvent, FailedCommand, RestoredState, Role};
use crate::engine::HubInfo;

/// Vouchers kept per channel until it is funded.
const MAX_EARLY_PER_CHANNEL: usize = 8;
/// Channels with early vouchers kept at once.
const MAX_EARLY_CHANNELS: usize = 64;
/// Requests received and not joined (yet) kept at once.
const MAX_REQUESTS: usize = 1024;

/// Settings of a [`HubBackend`].
#[derive(Debug, Clone, PartialEq, Eq, Setters)]
#[setters(prefix = "with_")]
#[non_exhaustive]
pub struct HubConfig {
    /// Our hub (the one we advertise: set [`HubBackend::hub`] in
    /// [`CoordinatorConfig::hub`](crate::CoordinatorConfig::hub)). An address of zero accepts
    /// whichever address the hub proves in its handshake (`--hub HOST:PORT` alone); another
    /// address must be the one proved.
    pub hub: HubInfo,
    /// The ledgers' and virtual channels' contracts.
    pub party: PartyConfig,
    /// Asset of our ledger (zero: the native coin).
    pub asset: Address,
    /// Challenge duration of our ledger and of the virtual channels we request (selling); the
    /// longest we accept in a seller's request (buying).
    pub challenge_duration: u64,
    /// Buying: what we deposit into our ledger with the hub (opened once, reused for every
    /// seller of every torrent); `None`: we open none (and fund no virtual channel).
    pub ledger_deposit: Option<U256>,
    /// Selling: ask the hub for a ledger it funds, so buyers can pay us through it.
    pub request_ledger: bool,
    /// The fee we pay the hub per virtual channel (shown in what we sign).
    pub fee: U256,
    /// Blocks after which chain events are applied (`None`: the chain's default).
    pub confirmations: Option<u64>,
    /// How often the node watches the chain.
    pub watch_every: Duration,
    /// How often the node redials the hub and resends what its state implies.
    pub resend_every: Duration,
}

impl HubConfig {
    /// Through `hub` on `party`'s contracts, in the native coin: one-hour challenges, neither
    /// a ledger deposit nor a ledger request, no fee, the chain's confirmations, a chain watch
    /// every second and a resend every 2 s.
    pub fn new(hub: HubInfo, party: PartyConfig) -> Self {
        Self {
            hub,
            party,
            asset: Address::ZERO,
            challenge_duration: 3600,
            ledger_deposit: None,
            request_ledger: false,
            fee: U256::ZERO,
            confirmations: None,
            watch_every: Duration::from_secs(1),
            resend_every: Duration::from_secs(2),
        }
    }
}

/// Why a [`HubBackend`] did not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HubError {
    /// `hub.endpoint` does not resolve.
    #[error("hub endpoint {0}: {1}")]
    Resolve(String, std::io::Error),
    /// The connection to the hub failed.
    #[error(transparent)]
    Net(#[from] NetError),
    /// Another address answered at the hub's endpoint.
    #[error("hub at {endpoint} proved {proved}, not {expected}")]
    WrongHub {
        /// The endpoint.
        endpoint: String,
        /// The address we expect.
        expected: Address,
        /// The address it proved.
        proved: Address,
    },
    /// The party node failed (store, chain, our own usage).
    #[error(transparent)]
    Node(#[from] NodeError),
    /// The hub did not take our ledger request.
    #[error("ledger request: {0}")]
    Request(TransportError),
}

/// A virtual channel a seller asked us (the buyer) to fund.
#[derive(Debug, Clone, Copy)]
struct Request {
    seller: Address,
    nonce: u64,
    amount: U256,
    duration: u64,
}

/// Routes the node's messages: to the hub over TCP, to buyers and sellers through the
/// coordinator (`data.virtual` in the paid-streaming `message` command).
struct Router {
    net: TcpNet,
    hub: Address,
    me: Address,
    peers: mpsc::UnboundedSender<(Address, String)>,
}

#[async_trait]
impl Transport<NodeMessage> for Router {
    async fn send(&self, to: Address, msg: NodeMessage) -> Result<(), TransportError> {
        if to == self.hub {
            return self.net.send(to, msg).await;
        }
        let json = envelope(to, self.me, json!({ "message": msg }));
        self.peers
            .send((to, json))
            .map_err(|_| TransportError::from("backend stopped"))
    }
}

fn envelope(to: Address, from: Address, virtual_part: Value) -> String {
    json!({
        "recipient": to.to_checksum(None),
        "sender": from.to_checksum(None),
        "data": { "virtual": virtual_part },
    })
    .to_string()
}

fn wei(x: U256) -> u128 {
    u128::try_from(x).unwrap_or(u128::MAX)
}

/// The node's messages for peers and its events, until they are forwarded.
type NodeOutput = (
    mpsc::UnboundedReceiver<(Address, String)>,
    mpsc::UnboundedReceiver<PartyEvent>,
);

/// Channels funded through a hub (virtual channels) when buyer and seller use the
/// same one, direct channels ([`ClientBackend`]) otherwise.
///
/// One [`PartyNode`] per process holds our ledger with the hub and every virtual channel `V =
/// [buyer, hub, seller]`; it reaches the hub over `party_node::tcp` (the hub proves its address
/// in the signed handshake, so a `pseHub` claim in a peer's BEP 10 handshake only chooses the
/// funding path). Messages between buyer and seller (V's proposal, prefund and postfund
/// signatures, vouchers, final states) travel in the paid-streaming `message` command like direct
/// channel messages, under `data.virtual`:
///
/// | step | seller (payee) | buyer (payer) |
/// |---|---|---|
/// | `Create` | same hub as the buyer and its ledger with the hub open: sends a **request** (nonce, amount, challenge duration) and reports `Created` with V's id (computed from the request: V's fixed part is `[buyer, hub, seller]`, the nonce, the payment app, the duration) | |
/// | | | request → `Proposed` (same id); the coordinator's `Join` → [`PartyNode::propose_virtual`] through its one ledger with the hub |
/// | funding | `Ready` once V's postfund is signed by all **and** its ledger holds the countersigned guarantee | `Ready` once V's postfund is signed by all |
/// | `Pay` | `PaymentReceived` | a voucher (the same vouchers as direct channels) |
/// | `Close` | asks the buyer for the final state | signs the final state; both ledgers drop the guarantees; `Closed` |
/// | `Challenge` | V on chain with its largest voucher, then reclaim and payout (the node's chain duties) | V on chain |
///
/// Anything else (no common hub, the seller's ledger not open or too small) goes to the direct
/// [`ClientBackend`], exactly as without a hub. Vouchers that reach the seller before it saw V
/// funded are kept (a bounded number) and handed over once it is funded; vouchers are cumulative,
/// so a repeat never credits twice.
pub struct HubBackend {
    direct: ClientBackend,
    node: PartyNode,
    net: TcpNet,
    config: HubConfig,
    me: Address,
    /// V ids we (the seller) requested and the buyer has not proposed yet.
    requested: StdMutex<HashSet<B256>>,
    /// Requests we (the buyer) received, by V id.
    requests: StdMutex<HashMap<B256, Request>>,
    /// Vouchers that arrived before their channel was funded.
    early: Early,
    /// How many were kept so far.
    early_kept: std::sync::atomic::AtomicU64,
    /// The node's loop (messages from the hub, chain watching, resends).
    run: StdMutex<Option<tokio::task::JoinHandle<()>>>,
    /// What the node produced before the backend had the node's event handle.
    pending: tokio::sync::Mutex<Option<NodeOutput>>,
}

impl std::fmt::Debug for HubBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubBackend")
            .field("me", &self.me)
            .field("hub", &self.config.hub)
            .finish_non_exhaustive()
    }
}

impl HubBackend {
    /// Opens the party node from `store` (restoring its ledgers and channels), connects to the
    /// hub (which must prove `config.hub.address`), starts the node's loop, then opens our
    /// ledger ([`HubConfig::ledger_deposit`]) and asks for the hub's
    /// ([`HubConfig::request_ledger`]) unless they exist. `chain` sends our transactions.
    pub async fn start(
        signer: Arc<dyn Signer>,
        chain: Arc<dyn Chain>,
        store: Arc<dyn ChannelStore>,
        direct: ClientBackend,
        mut config: HubConfig,
    ) -> Result<Self, HubError> {
        let me = signer.address();
        let endpoint = config.hub.endpoint.clone();
        let at: SocketAddr = tokio::net::lookup_host(endpoint.as_str())
            .await
            .map_err(|e| HubError::Resolve(endpoint.clone(), e))?
            .next()
            .ok_or_else(|| {
                HubError::Resolve(
                    endpoint.clone(),
                    std::io::Error::new(std::io::ErrorKind::NotFound, "no address"),
                )
            })?;
        let listen: SocketAddr = if at.is_ipv4() {
            "127.0.0.1:0"
        } else {
            "[::1]:0"
        }
        .parse()
        .map_err(|_| HubError::Resolve(endpoint.clone(), std::io::ErrorKind::Other.into()))?;
        let (net, inbound) = TcpNet::bind(signer.clone(), listen, TcpConfig::default()).await?;
        let proved = net.connect(at).await?;
        if config.hub.address == Address::ZERO {
            config.hub.address = proved;
        }
        if proved != config.hub.address {
            net.shutdown();
            return Err(HubError::WrongHub {
                endpoint: endpoint.clone(),
                expected: config.hub.address,
                proved,
            });
        }
        let (peers_tx, peers_rx) = mpsc::unbounded_channel();
        let router = Router {
            net: net.clone(),
            hub: config.hub.address,
            me,
            peers: peers_tx,
        };
        let (node, party_events) = PartyNode::open(
            signer,
            config.party.clone(),
            chain,
            store,
            Arc::new(router),
            PartyNodeConfig::default().with_confirmations(config.confirmations),
        )
        .await?;
        let run = tokio::spawn(run_node(
            node.clone(),
            net.clone(),
            inbound,
            config.watch_every,
            config.resend_every,
        ));
        let hub = config.hub.address;
        let (led, served) = node
            .inspect(|p| {
                let live = |l: &&payment_channel::ledger::Ledger| {
                    l.counterparty() == hub && l.chain().finalized.is_none()
                };
                (
                    p.ledgers()
                        .filter(live)
                        .any(|l| l.role() == LedgerRole::Leader),
                    p.ledgers()
                        .filter(live)
                        .any(|l| l.role() == LedgerRole::Follower),
                )
            })
            .await;
        if let Some(deposit) = config.ledger_deposit
            && !led
        {
            node.open_ledger(hub, config.asset, deposit, config.challenge_duration)
                .await?;
        }
        if config.request_ledger && !served {
            node.request_ledger(hub).await.map_err(HubError::Request)?;
        }
        Ok(Self {
            direct,
            node,
            net,
            config,
            me,
            requested: StdMutex::default(),
            requests: StdMutex::default(),
            early: Early::default(),
            early_kept: std::sync::atomic::AtomicU64::new(0),
            run: StdMutex::new(Some(run)),
            pending: tokio::sync::Mutex::new(Some((peers_rx, party_events))),
        })
    }

    /// Vouchers kept so far because they arrived before their channel was funded here (each is
    /// handed to the channel once it is funded).
    pub fn early_vouchers(&self) -> u64 {
        self.early_kept.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Our hub, with the address it proved.
    pub fn hub(&self) -> &HubInfo {
        &self.config.hub
    }

    /// The party node (our ledger with the hub and the virtual channels).
    pub fn party_node(&self) -> &PartyNode {
        &self.node
    }

    /// The direct-channel backend.
    pub fn direct(&self) -> &ClientBackend {
        &self.direct
    }

    /// Stops the node's loop and closes the connection to the hub: nothing more is received,
    /// watched or resent (before the process exits, or to hand the store to a new backend).
    pub fn shutdown(&self) {
        if let Some(run) = lock(&self.run).take() {
            run.abort();
        }
        self.net.shutdown();
    }

    /// Our ledger with the hub in `role` once it is open: its id and our free balance in it.
    pub async fn open_ledger(&self, role: LedgerRole) -> Option<(B256, U256)> {
        let hub = self.config.hub.address;
        self.node
            .inspect(|p| {
                p.ledgers()
                    .find(|l| {
                        l.counterparty() == hub
                            && l.role() == role
                            && l.phase() == LedgerPhase::Open
                            && l.chain().finalized.is_none()
                    })
                    .map(|l| {
                        let free = l
                            .countersigned()
                            .map(|v| v.balances[LedgerRole::Leader.index()])
                            .unwrap_or_default();
                        (l.id(), free)
                    })
            })
            .await
    }

    /// Starts forwarding the node's output to the coordinator (once: on the first call with an
    /// event handle).
    async fn attach(&self, events: &ChannelEvents) {
        let Some((mut peers, mut party)) = self.pending.lock().await.take() else {
            return;
        };
        let weak: Weak<Inner> = Arc::downgrade(&events.node.inner);
        let node = self.node.clone();
        let early = self.early.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    m = peers.recv() => {
                        let Some((to, json)) = m else { return };
                        let Some(inner) = weak.upgrade() else { return };
                        let events = ChannelEvents { node: super::Node { inner } };
                        events.report(ChannelEvent::Outbound { to, json });
                    }
                    e = party.recv() => {
                        let Some(PartyEvent::Virtual { channel_id, event }) = e else {
                            if e.is_none() { return }
                            continue;
                        };
                        let Some(inner) = weak.upgrade() else { return };
                        let events = ChannelEvents { node: super::Node { inner } };
                        on_virtual_event(&node, &events, &early, channel_id, event).await;
                    }
                }
            }
        });
    }

    fn is_virtual(&self, id: B256) -> bool {
        lock(&self.requested).contains(&id) || lock(&self.requests).contains_key(&id)
    }

    async fn party_has(&self, id: B256) -> bool {
        self.node.inspect(|p| p.channel(&id).is_some()).await
    }

    /// Seller: `Create` through the hub when the buyer names ours and our ledger can fund it.
    async fn create_virtual(
        &self,
        peer: Address,
        deposit: u128,
        price: Option<u128>,
        nonce: Option<u64>,
        events: &ChannelEvents,
    ) -> bool {
        let Some((_, hub_balance)) = self.open_ledger(LedgerRole::Follower).await else {
            return false;
        };
        let amount = U256::from(deposit);
        if hub_balance < amount {
            return false;
        }
        let nonce = nonce.unwrap_or_else(|| {
            let mut b = [0u8; 8];
            getrandom::fill(&mut b).map_or(0, |()| u64::from_be_bytes(b) >> 16)
        });
        let id = self.virtual_id(peer, self.me, nonce, self.config.challenge_duration);
        lock(&self.requested).insert(id);
        let mut request = json!({
            "request": {
                "hub": self.config.hub.address.to_checksum(None),
                "nonce": nonce.to_string(),
                "amount": amount.to_string(),
                "duration": self.config.challenge_duration,
            }
        });
        if let Some(price) = price {
            request["request"]["price"] = Value::String(price.to_string());
        }
        events.report(ChannelEvent::Outbound {
            to: peer,
            json: envelope(peer, self.me, request),
        });
        events.report(ChannelEvent::Created {
            peer,
            channel_id: ChannelId(id.0),
        });
        true
    }

    fn virtual_id(&self, payer: Address, payee: Address, nonce: u64, duration: u64) -> B256 {
        FixedPart {
            participants: vec![payer, self.config.hub.address, payee],
            channel_nonce: nonce,
            app_definition: self.config.party.payment_app,
            challenge_duration: duration,
        }
        .channel_id()
    }

    /// A `data.virtual` message from `from`.
    async fn push_virtual(&self, from: Address, part: &Value, events: &ChannelEvents) {
        if let Some(request) = part.get("request") {
            self.on_request(from, request, events);
            return;
        }
        let Some(msg) = part
            .get("message")
            .and_then(|m| serde_json::from_value::<NodeMessage>(m.clone()).ok())
        else {
            return;
        };
        // Only party messages travel between peers (a ledger request is for a hub, over TCP).
        let NodeMessage::Envelope(env) = &msg else {
            return;
        };
        if let Payload::Virtual(v) = &env.payload
            && let VirtualBody::Propose { fixed, .. } = &v.body
            && fixed.participants.get(2) == Some(&self.me)
            && !lock(&self.requested).remove(&v.channel_id)
            && !self.party_has(v.channel_id).await
        {
            // A channel paying us that we did not ask for (its hub would lock capital for it).
            return;
        }
        if let Payload::Virtual(v) = &env.payload
            && matches!(v.body, VirtualBody::Voucher(_))
        {
            let id = v.channel_id;
            let waiting = self
                .node
                .inspect(|p| {
                    p.channel(&id)
                        .is_some_and(|c| c.role() == VirtualRole::Payee && !c.is_running())
                })
                .await;
            if waiting {
                let mut early = lock(&self.early.0);
                if early.contains_key(&id) || early.len() < MAX_EARLY_CHANNELS {
                    let q = early.entry(id).or_default();
                    if q.len() >= MAX_EARLY_PER_CHANNEL {
                        q.pop_front();
                    }
                    q.push_back(msg);
                    self.early_kept
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                return;
            }
        }
        if let Err(e) = self.node.handle_message(from, msg).await {
            let strike = matches!(&e, NodeError::Party(p)
                if p.reaction() != payment_channel::error::Reaction::Ignore);
            if strike {
                events.report(ChannelEvent::CommandFailed {
                    command: FailedCommand::PushMessage {
                        from,
                        bad_signature: true,
                    },
                    reason: e.to_string(),
                });
            }
        }
    }

    /// Buyer: a seller asks us to fund V through our hub.
    fn on_request(&self, from: Address, r: &Value, events: &ChannelEvents) {
        let text = |k: &str| r.get(k).and_then(Value::as_str);
        let hub = text("hub").and_then(|h| h.parse::<Address>().ok());
        let nonce = text("nonce").and_then(|n| n.parse::<u64>().ok());
        let amount = text("amount").and_then(|a| a.parse::<U256>().ok());
        let duration = r.get("duration").and_then(Value::as_u64);
        let price = text("price").and_then(|p| p.parse::<u128>().ok());
        let (Some(hub), Some(nonce), Some(amount), Some(duration)) = (hub, nonce, amount, duration)
        else {
            return;
        };
        if hub != self.config.hub.address
            || duration == 0
            || duration > self.config.challenge_duration
            || self.config.ledger_deposit.is_none()
        {
            // Not a channel we could fund: the seller falls back after its timeout.
            return;
        }
        let id = self.virtual_id(self.me, from, nonce, duration);
        {
            let mut requests = lock(&self.requests);
            if requests.len() >= MAX_REQUESTS {
                requests.clear();
            }
            requests.insert(
                id,
                Request {
                    seller: from,
                    nonce,
                    amount,
                    duration,
                },
            );
        }
        events.report(ChannelEvent::Proposed {
            channel_id: ChannelId(id.0),
            payee: from,
            deposit: wei(amount),
            price,
            nonce: Some(nonce),
        });
    }

    async fn join_virtual(&self, id: B256, events: &ChannelEvents) {
        let Some(request) = lock(&self.requests).get(&id).copied() else {
            return;
        };
        let params = VirtualParams {
            hub: self.config.hub.address,
            payee: request.seller,
            channel_nonce: request.nonce,
            app_definition: self.config.party.payment_app,
            challenge_duration: request.duration,
            asset: self.config.asset,
            amount: request.amount,
            fee: self.config.fee,
        };
        let channel_id = ChannelId(id.0);
        match self.node.propose_virtual(&params).await {
            Ok(v) if v == id => {}
            Ok(_) => fail(
                events,
                FailedCommand::Join { channel_id },
                "channel id differs",
            ),
            Err(e) => fail(events, FailedCommand::Join { channel_id }, e),
        }
    }

    async fn execute_virtual(&self, command: ChannelCommand, events: &ChannelEvents) {
        match command {
            ChannelCommand::Join { channel_id, .. } => {
                self.join_virtual(B256::from(channel_id.0), events).await;
            }
            ChannelCommand::Pay { channel_id, amount } => {
                if let Err(e) = self
                    .node
                    .pay(B256::from(channel_id.0), U256::from(amount))
                    .await
                {
                    fail(events, FailedCommand::Pay { channel_id, amount }, e);
                }
            }
            ChannelCommand::Close { channel_id } => {
                let id = B256::from(channel_id.0);
                let role = self
                    .node
                    .inspect(|p| p.channel(&id).map(|c| c.role()))
                    .await;
                let r = match role {
                    Some(VirtualRole::Payer) => self.node.close_virtual(id).await,
                    Some(_) => self.node.request_final(id).await,
                    None => Ok(()),
                };
                if let Err(e) = r {
                    fail(events, FailedCommand::Close { channel_id }, e);
                }
            }
            ChannelCommand::Challenge { channel_id } => {
                if let Err(e) = self.node.challenge_virtual(B256::from(channel_id.0)).await {
                    fail(events, FailedCommand::Challenge { channel_id }, e);
                }
            }
            ChannelCommand::Abandon { channel_id } => {
                let id = B256::from(channel_id.0);
                lock(&self.requested).remove(&id);
                lock(&self.requests).remove(&id);
            }
            ChannelCommand::Resend { .. } => {
                let _ = self.node.resend().await;
            }
            _ => {}
        }
    }
}

fn fail(events: &ChannelEvents, command: FailedCommand, reason: impl ToString) {
    events.report(ChannelEvent::CommandFailed {
        command,
        reason: reason.to_string(),
    });
}

/// Vouchers kept until their channel is funded (shared with the forwarding task).
#[derive(Clone, Default)]
struct Early(Arc<StdMutex<HashMap<B256, VecDeque<NodeMessage>>>>);

/// What V's participants other than us are, and our role.
async fn roles(node: &PartyNode, id: B256) -> Option<(Role, Address, U256, U256, Option<U256>)> {
    node.inspect(|p| {
        let c = p.channel(&id)?;
        let parts = &c.fixed_part().participants;
        let (role, other) = match c.role() {
            VirtualRole::Payer => (Role::Payer, *parts.get(2)?),
            VirtualRole::Payee => (Role::Payee, *parts.first()?),
            VirtualRole::Hub => return None,
        };
        Some((role, other, c.amount(), c.paid(), c.final_amount()))
    })
    .await
}

async fn on_virtual_event(
    node: &PartyNode,
    events: &ChannelEvents,
    early: &Early,
    id: B256,
    event: VirtualEvent,
) {
    let Some((role, counterparty, amount, paid, fin)) = roles(node, id).await else {
        return;
    };
    let channel_id = ChannelId(id.0);
    match event {
        VirtualEvent::Funded => {
            events.report(ChannelEvent::Ready {
                channel_id,
                counterparty,
                role,
                deposit: wei(amount),
            });
            let queued = lock(&early.0).remove(&id).unwrap_or_default();
            for msg in queued {
                let _ = node.handle_message(counterparty, msg).await;
            }
        }
        VirtualEvent::PaymentReceived { delta, total } => {
            events.report(ChannelEvent::PaymentReceived {
                channel_id,
                delta: wei(delta),
                total: wei(total),
            });
        }
        VirtualEvent::Defunded | VirtualEvent::Finalized => {
            events.report(ChannelEvent::Closed {
                channel_id,
                payee_amount: wei(fin.unwrap_or(paid)),
            });
        }
        _ => {}
    }
}

#[async_trait]
impl ChannelBackend for HubBackend {
    async fn execute(&self, command: ChannelCommand, events: &ChannelEvents) {
        self.attach(events).await;
        match command {
            ChannelCommand::Create {
                peer,
                deposit,
                price,
                nonce,
                ref peer_hub,
                ..
            } if peer_hub
                .as_ref()
                .is_some_and(|h| h.address == self.config.hub.address) =>
            {
                if !self
                    .create_virtual(peer, deposit, price, nonce, events)
                    .await
                {
                    self.direct.execute(command, events).await;
                }
            }
            ChannelCommand::PushMessage { from, ref json } => {
                let part = serde_json::from_str::<Value>(json)
                    .ok()
                    .and_then(|v| v.get("data")?.get("virtual").cloned());
                match part {
                    Some(part) => self.push_virtual(from, &part, events).await,
                    None => self.direct.execute(command, events).await,
                }
            }
            ChannelCommand::Join { channel_id, .. }
            | ChannelCommand::Pay { channel_id, .. }
            | ChannelCommand::Close { channel_id }
            | ChannelCommand::Challenge { channel_id }
            | ChannelCommand::Abandon { channel_id }
            | ChannelCommand::Resend { channel_id } => {
                let id = B256::from(channel_id.0);
                if self.is_virtual(id) || self.party_has(id).await {
                    self.execute_virtual(command, events).await;
                } else {
                    self.direct.execute(command, events).await;
                }
            }
            other => self.direct.execute(other, events).await,
        }
    }

    async fn tick(&self, events: &ChannelEvents) {
        self.attach(events).await;
        self.direct.tick(events).await;
    }

    /// Reports the virtual channels the node's store holds (not yet closed) as
    /// [`ChannelEvent::Restored`], then the direct ones.
    async fn restore(&self, events: &ChannelEvents) {
        self.attach(events).await;
        let _ = self.node.watch_chain().await;
        let restored = self
            .node
            .inspect(|p| {
                p.channels()
                    .filter(|c| c.role() != VirtualRole::Hub)
                    .filter(|c| !c.is_defunded() && c.chain().finalized.is_none() && !c.disputed())
                    .map(|c| c.id())
                    .collect::<Vec<_>>()
            })
            .await;
        for id in restored {
            let Some((role, counterparty, amount, paid, fin)) = roles(&self.node, id).await else {
                continue;
            };
            let running = self
                .node
                .inspect(|p| p.channel(&id).is_some_and(|c| c.is_running()))
                .await;
            let state = if fin.is_some() {
                RestoredState::Closing
            } else if running {
                RestoredState::Open
            } else {
                RestoredState::Funding
            };
            events.report(ChannelEvent::Restored {
                channel_id: ChannelId(id.0),
                counterparty,
                role,
                deposit: wei(amount),
                paid: wei(paid),
                state,
            });
        }
        let _ = self.node.resend().await;
        self.direct.restore(events).await;
    }
}
