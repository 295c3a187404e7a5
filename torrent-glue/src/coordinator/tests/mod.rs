//! Scripted tests of every flow: the harness here, one file per part of the coordinator.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

use paid_wire::choke::{PayReason, TrustPolicy};

use bytes::Bytes;
use payment_channel::sign::Signature;

use super::*;
use crate::channel::{FailedCommand, RestoredState};
use crate::engine::Direction;
use paid_wire::pse::PseMessage;

/// What `$value` is for each of `$items` (iterated) that matches `$pattern`, in order.
macro_rules! picked {
    ($items:expr, $pattern:pat => $value:expr) => {
        $items
            .into_iter()
            .filter_map(|item| match item {
                $pattern => Some($value),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
}

/// How many of `$items` (iterated) match `$pattern`.
macro_rules! count {
    ($items:expr, $pattern:pat) => {
        $items
            .into_iter()
            .filter(|item| matches!(item, $pattern))
            .count()
    };
}

mod buyer_bound;
mod deadlines;
mod download;
mod identity;
mod lifecycle;
mod messages;
mod non_paying;
mod pair;
mod upload;

const BLOCK: u32 = 16 * 1024;

fn addr(b: u8) -> Address {
    Address::repeat_byte(b)
}

/// A signer whose secret key is 32 bytes of `b`.
fn key(b: u8) -> Arc<payment_channel::sign::LocalSigner> {
    Arc::new(
        payment_channel::sign::LocalSigner::from_bytes(&payment_channel::B256::repeat_byte(b))
            .unwrap(),
    )
}

/// The address of [`key`]`(b)`.
fn keyed(b: u8) -> Address {
    key(b).address()
}

const ME: u8 = 0xAA;

/// The flows are scripted with accounts nobody holds a key for, so these peers are believed on
/// their word ([`LegacyPolicy::TrustClaimedAccount`], web3torrent's behaviour); identity proofs
/// have their own tests (`mod identity`) under the default policy.
fn config() -> CoordinatorConfig {
    CoordinatorConfig {
        identity: IdentityConfig {
            legacy: LegacyPolicy::TrustClaimedAccount,
            ..IdentityConfig::default()
        },
        liveness: LivenessConfig {
            handshake_timeout: Duration::from_secs(5),
            response_timeout: Duration::from_secs(20),
            idle_close_after: Some(Duration::from_secs(30)),
            stall_timeout: None,
        },
        ..CoordinatorConfig::new(addr(ME), addr(ME + 1))
    }
}

fn reserved(ext: bool, fast: bool) -> [u8; 8] {
    let mut r = [0u8; 8];
    if ext {
        r[5] |= 0x10;
    }
    if fast {
        r[7] |= 0x04;
    }
    r
}

fn info(ext: bool, fast: bool) -> PeerInfo {
    let mut i = PeerInfo::new(TorrentKey(0), Direction::Inbound, reserved(ext, fast));
    i.fast_negotiated = fast;
    i
}

fn handshake(account: Address, pse_id: u8) -> PeerExtendedHandshake {
    PeerExtendedHandshake {
        pse_id: Some(pse_id),
        pse_account: Some(account.to_checksum(None).into_bytes()),
        outcome_address: Some(account.to_checksum(None).into_bytes()),
        terms: None,
        asset: None,
        client: None,
        auth: None,
        hub: None,
    }
}

fn req(index: u32) -> BlockRequest {
    BlockRequest {
        index,
        begin: 0,
        length: BLOCK,
    }
}

struct H {
    c: Coordinator,
    now: Instant,
}

impl H {
    fn new(config: CoordinatorConfig) -> Self {
        Self::downloading(config, 0)
    }

    /// A coordinator on [`config`] as `change` leaves it.
    fn configured(change: impl FnOnce(&mut CoordinatorConfig)) -> Self {
        let mut config = config();
        change(&mut config);
        Self::new(config)
    }

    /// A coordinator with torrent 0 missing `remaining` bytes.
    fn downloading(config: CoordinatorConfig, remaining: u64) -> Self {
        Self::with_torrent(Coordinator::new(config).unwrap(), remaining)
    }

    /// A coordinator proving its identity with `signer`, with torrent 0 missing `remaining`
    /// bytes.
    fn signing(
        config: CoordinatorConfig,
        signer: Arc<payment_channel::sign::LocalSigner>,
        remaining: u64,
    ) -> Self {
        Self::with_torrent(Coordinator::with_signer(config, signer).unwrap(), remaining)
    }

    fn with_torrent(mut c: Coordinator, remaining: u64) -> Self {
        c.add_torrent(TorrentKey(0), remaining).unwrap();
        Self {
            c,
            now: Instant::now(),
        }
    }

    /// Connects `account` with the extension (no fast) as `key`, its handshake carrying
    /// `pse_id` and `terms` (`None`: the default terms).
    fn connect(&mut self, key: u64, account: Address, pse_id: u8, terms: Option<Terms>) -> PeerKey {
        let k = self.connected(key, info(true, false));
        let mut hs = handshake(account, pse_id);
        hs.terms = terms;
        self.c.handle_extended_handshake(self.now, k, &hs).unwrap();
        k
    }

    /// Connects an uploader `account` with the extension (no fast) as `key`.
    fn uploader(&mut self, key: u64, account: Address) -> PeerKey {
        self.connect(key, account, 3, None)
    }

    /// Connects an uploader `account` advertising `terms` as `key`.
    fn seller_with_terms(&mut self, key: u64, account: Address, terms: Terms) -> PeerKey {
        self.connect(key, account, 3, Some(terms))
    }

    /// Connects peer `key` (`info`, no extended handshake yet).
    fn connected(&mut self, key: u64, info: PeerInfo) -> PeerKey {
        let k = PeerKey(key);
        self.c.handle_peer_connected(self.now, k, info).unwrap();
        k
    }

    /// Connects peer `key` (`info`, no extended handshake yet), interested in us.
    fn interested(&mut self, key: u64, info: PeerInfo) -> PeerKey {
        let k = self.connected(key, info);
        self.c.handle_remote_interest(self.now, k, true).unwrap();
        k
    }

    /// Whether the engine was told to disconnect `k` for its strikes.
    fn struck_out(&mut self, k: PeerKey) -> bool {
        self.engine().contains(&EngineCommand::Disconnect {
            peer: k,
            reason: DisconnectReason::Strikes,
        })
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
        self.c.handle_timeout(self.now);
    }

    /// Connects a paying peer (no fast), interested in us.
    fn paying(&mut self, key: u64, account: Address) -> PeerKey {
        let k = self.connect(key, account, 7, None);
        self.c.handle_remote_interest(self.now, k, true).unwrap();
        k
    }

    fn engine(&mut self) -> Vec<EngineCommand> {
        std::iter::from_fn(|| self.c.poll_engine_command()).collect()
    }

    fn channel(&mut self) -> Vec<ChannelCommand> {
        std::iter::from_fn(|| self.c.poll_channel_command()).collect()
    }

    fn events(&mut self) -> Vec<CoordinatorEvent> {
        std::iter::from_fn(|| self.c.poll_event()).collect()
    }

    /// `payee` proposes channel `id` with a 1 000 000 deposit, no price, no nonce.
    fn proposed(&mut self, id: [u8; 32], payee: Address) {
        self.ev(proposal(id, payee, 1_000_000));
    }

    /// Channel `id` with `counterparty` is ready: we are `role`, `deposit` is on chain.
    fn ready(&mut self, id: [u8; 32], counterparty: Address, role: Role, deposit: u128) {
        self.ev(ChannelEvent::Ready {
            channel_id: ChannelId(id),
            counterparty,
            role,
            deposit,
        });
    }

    /// The peer `k` sends STOP for channel `id` (which the coordinator accepts).
    fn stop_in(&mut self, k: PeerKey, id: ChannelId) {
        self.try_stop(k, id).unwrap();
    }

    /// The peer `k` sends STOP for channel `id`.
    fn try_stop(&mut self, k: PeerKey, id: ChannelId) -> Result<(), Error> {
        self.notice_in(
            k,
            &PseMessage::Stop {
                channel_id: Some(id),
            },
        )
    }

    /// The peer `k` prompts us to pay ahead `bytes` (for as many wei).
    fn prompt(&mut self, k: PeerKey, bytes: u64) -> Result<(), Error> {
        self.notice_in(
            k,
            &PseMessage::Prompt {
                bytes,
                amount: u128::from(bytes),
            },
        )
    }

    /// Our only channel command is to abandon the proposal `id` (`why`: the assertion's message).
    fn abandons(&mut self, id: [u8; 32], why: &str) {
        assert_eq!(
            self.channel(),
            vec![ChannelCommand::Abandon {
                channel_id: ChannelId(id)
            }],
            "{why}"
        );
    }

    /// Our only channel command is a cooperative close of `id`, and `event` says why.
    fn closes_because(&mut self, id: ChannelId, event: CoordinatorEvent) {
        assert_eq!(
            self.channel(),
            vec![ChannelCommand::Close { channel_id: id }]
        );
        assert!(self.events().contains(&event));
    }

    /// Time passes by `secs` seconds: then our only channel command is a cooperative close of
    /// `id`; `challenge_secs` later, unanswered, its challenge.
    fn closes_then_challenges(&mut self, id: ChannelId, secs: u64, challenge_secs: u64) {
        self.advance(Duration::from_secs(secs));
        assert_eq!(
            self.channel(),
            vec![ChannelCommand::Close { channel_id: id }]
        );
        self.advance(Duration::from_secs(challenge_secs));
        assert_eq!(
            self.channel(),
            vec![ChannelCommand::Challenge { channel_id: id }]
        );
    }

    /// The channel `id` is found in the store after a restart: with `account`, we are `role`,
    /// `deposit` is locked in it and `paid` was paid on it.
    fn restore(
        &mut self,
        id: [u8; 32],
        account: Address,
        role: Role,
        deposit: u128,
        paid: u128,
        state: RestoredState,
    ) {
        self.ev(ChannelEvent::Restored {
            channel_id: ChannelId(id),
            counterparty: account,
            role,
            deposit,
            paid,
            state,
        });
    }

    /// The client hands us the channel message `json` for `to`: what the engine is told then.
    fn outbound(&mut self, to: Address, json: &str) -> Vec<EngineCommand> {
        self.ev(ChannelEvent::Outbound {
            to,
            json: json.to_owned(),
        });
        self.engine()
    }

    fn ev(&mut self, e: ChannelEvent) {
        self.c.handle_channel_event(self.now, e).unwrap();
    }

    fn notice_in(&mut self, k: PeerKey, n: &PseMessage) -> Result<(), Error> {
        self.c
            .handle_extension_message(self.now, k, EXTENSION_NAME, &n.encode())
    }

    /// Our proposal `id` to the payer `account` is created (not funded yet).
    fn created(&mut self, account: Address, id: ChannelId) {
        self.ev(ChannelEvent::Created {
            peer: account,
            channel_id: id,
        });
    }

    /// Opens a payee channel for `account` (Create → Created → Ready).
    fn open_payee(&mut self, account: Address, id: ChannelId) {
        self.created(account, id);
        self.ready(id.0, account, Role::Payee, 1 << 30);
    }

    /// `k` requests block `i` (see [`req`]): what the coordinator decides.
    fn request(&mut self, k: PeerKey, i: u32) -> RequestDecision {
        self.c.handle_request(self.now, k, req(i)).unwrap()
    }

    /// `k` requests the blocks `blocks`: each is served at once and reported sent in full.
    fn served(&mut self, k: PeerKey, blocks: std::ops::Range<u32>) {
        for i in blocks {
            assert_eq!(self.request(k, i), RequestDecision::Serve, "block {i}");
            self.c
                .handle_bytes_sent(self.now, k, req(i), BLOCK)
                .unwrap();
        }
    }

    fn pay_in(&mut self, id: ChannelId, delta: u128, total: u128) {
        self.ev(ChannelEvent::PaymentReceived {
            channel_id: id,
            delta,
            total,
        });
    }
}

fn notices(cmds: &[EngineCommand]) -> Vec<(PeerKey, PseMessage)> {
    cmds.iter()
        .filter_map(|c| match c {
            EngineCommand::SendExtended { peer, payload, .. } => {
                Some((*peer, PseMessage::decode(payload).unwrap()))
            }
            _ => None,
        })
        .collect()
}

/// The notices of a STOP naming `channel_id`, to `k` alone.
fn stop_to(k: PeerKey, channel_id: ChannelId) -> Vec<(PeerKey, PseMessage)> {
    vec![(
        k,
        PseMessage::Stop {
            channel_id: Some(channel_id),
        },
    )]
}

/// `payee` proposes channel `id` with a `deposit`, no price, no nonce.
fn proposal(id: [u8; 32], payee: Address, deposit: u128) -> ChannelEvent {
    ChannelEvent::Proposed {
        channel_id: ChannelId(id),
        payee,
        deposit,
        price: None,
        nonce: None,
    }
}

/// The notices of the channel message `json`, to `k` alone.
fn message_to(k: PeerKey, json: &str) -> Vec<(PeerKey, PseMessage)> {
    vec![(
        k,
        PseMessage::Message {
            message: json.to_owned(),
        },
    )]
}

fn serves(cmds: &[EngineCommand]) -> Vec<BlockRequest> {
    picked!(cmds, EngineCommand::Serve { request, .. } => *request)
}

/// The reasons of the proposals declined among `events`.
fn declined(events: Vec<CoordinatorEvent>) -> Vec<DeclineReason> {
    picked!(events, CoordinatorEvent::ProposalDeclined { reason, .. } => reason)
}

fn creates(cmds: &[ChannelCommand]) -> usize {
    count!(cmds, ChannelCommand::Create { .. })
}

/// An uploader harness (default config): the buyer `0xB1`, connected as peer 1, asked for block
/// 0, and our payee channel `[1; 32]` with it is open; returns the channel id's bytes.
fn uploader() -> (H, PeerKey, Address, [u8; 32]) {
    let (mut h, k, buyer) = asking();
    let id = [1; 32];
    h.open_payee(buyer, ChannelId(id));
    (h, k, buyer, id)
}

/// An uploader harness (default config): the buyer `0xB1`, connected as peer 1, asked for block
/// 0 (deferred: it is asked to pay on a channel we propose).
fn asking() -> (H, PeerKey, Address) {
    let mut h = H::new(config());
    let buyer = addr(0xB1);
    let k = h.paying(1, buyer);
    assert_eq!(h.request(k, 0), RequestDecision::Defer);
    (h, k, buyer)
}

/// An uploader harness (default config) with two connections of the buyer `0xB1`, peers 1 and
/// 2, and no channel yet; returns the bytes of the id its channel will have.
fn two_connections() -> (H, Address, [u8; 32], PeerKey, PeerKey) {
    let mut h = H::new(config());
    let buyer = addr(0xB1);
    let k1 = h.paying(1, buyer);
    let k2 = h.paying(2, buyer);
    (h, buyer, [1; 32], k1, k2)
}

/// A downloader harness: we buy from `seller`, whose proposal `id` we join.
fn downloader(config: CoordinatorConfig, remaining: u64) -> (H, PeerKey, Address, ChannelId) {
    let mut h = H::downloading(config, remaining);
    let seller = addr(0x5E);
    let k = h.uploader(1, seller);
    let id = [9; 32];
    h.proposed(id, seller);
    assert_eq!(
        h.channel(),
        vec![ChannelCommand::Join {
            channel_id: ChannelId(id),
            peer: seller,
            deposit: 1_000_000
        }]
    );
    h.ready(id, seller, Role::Payer, 1_000_000);
    h.engine();
    h.events();
    (h, k, seller, ChannelId(id))
}

fn pays(cmds: &[ChannelCommand]) -> Vec<u128> {
    picked!(cmds, ChannelCommand::Pay { amount, .. } => *amount)
}

fn buyer_config(granularity: u64) -> CoordinatorConfig {
    let mut c = config();
    c.download.as_mut().unwrap().granularity_bytes = granularity;
    c
}

fn envelope(recipient: Address, sender: Address) -> String {
    format!(
        r#"{{"recipient":"{}","sender":"{}","data":{{"signedStates":[]}}}}"#,
        recipient.to_checksum(None),
        sender.to_checksum(None)
    )
}
