//! Scripted tests of every flow, and a deterministic two-coordinator pair harness.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

use paid_wire::choke::{PayReason, TrustPolicy};

use super::notice::Notice;
use super::*;
use crate::engine::Direction;

mod buyer_bound;
mod identity;

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

    /// A coordinator with torrent 0 missing `remaining` bytes.
    fn downloading(config: CoordinatorConfig, remaining: u64) -> Self {
        let mut c = Coordinator::new(config).unwrap();
        c.add_torrent(TorrentKey(0), remaining).unwrap();
        Self {
            c,
            now: Instant::now(),
        }
    }

    /// Connects an uploader `account` with the extension (no fast) as `key`.
    fn uploader(&mut self, key: u64, account: Address) -> PeerKey {
        let k = PeerKey(key);
        self.c
            .handle_peer_connected(self.now, k, info(true, false))
            .unwrap();
        self.c
            .handle_extended_handshake(self.now, k, &handshake(account, 3))
            .unwrap();
        k
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
        self.c.handle_timeout(self.now);
    }

    /// Connects a paying peer (no fast) and drains the resulting commands.
    fn paying(&mut self, key: u64, account: Address) -> PeerKey {
        let k = PeerKey(key);
        self.c
            .handle_peer_connected(self.now, k, info(true, false))
            .unwrap();
        self.c
            .handle_extended_handshake(self.now, k, &handshake(account, 7))
            .unwrap();
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

    fn ev(&mut self, e: ChannelEvent) {
        self.c.handle_channel_event(self.now, e).unwrap();
    }

    fn notice_in(&mut self, k: PeerKey, n: &Notice) -> Result<(), Error> {
        self.c
            .handle_extension_message(self.now, k, EXTENSION_NAME, &n.encode())
    }

    /// Opens a payee channel for `account` (Create → Created → Ready).
    fn open_payee(&mut self, account: Address, id: ChannelId) {
        self.ev(ChannelEvent::Created {
            peer: account,
            channel_id: id,
        });
        self.ev(ChannelEvent::Ready {
            channel_id: id,
            counterparty: account,
            role: Role::Payee,
            deposit: 1 << 30,
        });
    }

    fn pay_in(&mut self, id: ChannelId, delta: u128, total: u128) {
        self.ev(ChannelEvent::PaymentReceived {
            channel_id: id,
            delta,
            total,
        });
    }
}

fn notices(cmds: &[EngineCommand]) -> Vec<(PeerKey, Notice)> {
    cmds.iter()
        .filter_map(|c| match c {
            EngineCommand::SendExtended { peer, payload, .. } => {
                Some((*peer, Notice::decode(payload).unwrap()))
            }
            _ => None,
        })
        .collect()
}

fn serves(cmds: &[EngineCommand]) -> Vec<BlockRequest> {
    cmds.iter()
        .filter_map(|c| match c {
            EngineCommand::Serve { request, .. } => Some(*request),
            _ => None,
        })
        .collect()
}

fn creates(cmds: &[ChannelCommand]) -> usize {
    cmds.iter()
        .filter(|c| matches!(c, ChannelCommand::Create { .. }))
        .count()
}

// ====================================================================== uploader

#[test]
fn burst_of_first_requests_creates_one_channel_and_stop_follows_funding() {
    let mut h = H::new(config());
    let buyer = addr(0xB1);
    let k = h.paying(1, buyer);
    assert_eq!(h.engine(), vec![EngineCommand::Unchoke { peer: k }]);
    for i in 0..20 {
        assert_eq!(
            h.c.handle_request(h.now, k, req(i)).unwrap(),
            RequestDecision::Defer
        );
    }
    let cmds = h.channel();
    assert_eq!(creates(&cmds), 1);
    assert_eq!(
        cmds[0],
        ChannelCommand::Create {
            peer: buyer,
            peer_destination: Some(buyer),
            deposit: UploadConfig::default().deposit,
            price: Some(1),
            nonce: None,
        }
    );
    // Nothing is sent before the channel is funded (STOP carries the channel id).
    assert!(h.engine().is_empty());
    let id = [1; 32];
    h.open_payee(buyer, id);
    assert_eq!(notices(&h.engine()), vec![(k, Notice::Stop(Some(id)))]);
    // A second connection of the same identity in the middle of it all: no new channel.
    let k2 = h.paying(2, buyer);
    h.c.handle_request(h.now, k2, req(100)).unwrap();
    assert_eq!(creates(&h.channel()), 0);
    assert_eq!(notices(&h.engine()), vec![(k2, Notice::Stop(Some(id)))]);
}

#[test]
fn burst_across_connections_before_funding_creates_one_channel() {
    let mut h = H::new(config());
    let buyer = addr(0xB1);
    let ks: Vec<PeerKey> = (1..=4).map(|i| h.paying(i, buyer)).collect();
    for &k in &ks {
        for i in 0..5 {
            h.c.handle_request(h.now, k, req(i)).unwrap();
        }
    }
    assert_eq!(creates(&h.channel()), 1);
    h.engine();
    h.open_payee(buyer, [3; 32]);
    let stops = notices(&h.engine());
    assert_eq!(stops.len(), 4, "one STOP per waiting connection");
    assert!(stops.iter().all(|(_, n)| *n == Notice::Stop(Some([3; 32]))));
}

#[test]
fn payment_credits_starts_and_replays_in_order() {
    let mut h = H::new(config());
    let buyer = addr(0xB1);
    let k = h.paying(1, buyer);
    for i in 0..3 {
        h.c.handle_request(h.now, k, req(i)).unwrap();
    }
    let id = [1; 32];
    h.open_payee(buyer, id);
    h.engine();
    // Pays for two blocks: START, then the first two requests, then STOP again.
    h.pay_in(id, 2 * u128::from(BLOCK), 2 * u128::from(BLOCK));
    let cmds = h.engine();
    assert_eq!(notices(&cmds)[0], (k, Notice::Start));
    assert_eq!(serves(&cmds), vec![req(0), req(1)]);
    let start_pos = cmds
        .iter()
        .position(|c| matches!(c, EngineCommand::SendExtended { .. }))
        .unwrap();
    let serve_pos = cmds
        .iter()
        .position(|c| matches!(c, EngineCommand::Serve { .. }))
        .unwrap();
    assert!(
        start_pos < serve_pos,
        "START precedes the pieces it unblocks"
    );
    assert_eq!(notices(&cmds).last(), Some(&(k, Notice::Stop(Some(id)))));
    for r in [req(0), req(1)] {
        h.c.handle_bytes_sent(h.now, k, r, BLOCK).unwrap();
    }
    // A replayed event (same total) credits nothing.
    h.pay_in(id, 2 * u128::from(BLOCK), 2 * u128::from(BLOCK));
    assert!(serves(&h.engine()).is_empty());
    let view = h.c.identity(buyer).unwrap();
    assert_eq!(view.wei_received, 2 * u128::from(BLOCK));
    assert_eq!(view.bytes_served, 2 * u64::from(BLOCK));
}

#[test]
fn low_watermark_prompts_the_payer() {
    let mut h = H::new(config());
    let buyer = addr(0xB1);
    let k = h.paying(1, buyer);
    h.c.handle_request(h.now, k, req(0)).unwrap();
    let id = [1; 32];
    h.open_payee(buyer, id);
    h.engine();
    h.pay_in(id, 4 * u128::from(BLOCK), 4 * u128::from(BLOCK));
    h.engine();
    // Credit 3 blocks left after the replay; at 50 % of the last payment (2 blocks) → prompt.
    h.c.handle_request(h.now, k, req(1)).unwrap();
    assert!(notices(&h.engine()).is_empty());
    assert_eq!(
        h.c.handle_request(h.now, k, req(2)).unwrap(),
        RequestDecision::Serve
    );
    assert_eq!(
        notices(&h.engine()),
        vec![(
            k,
            Notice::Prompt {
                bytes: 4 * u64::from(BLOCK),
                amount: 4 * u128::from(BLOCK)
            }
        )]
    );
}

#[test]
fn payment_goes_to_the_stopped_connection_first() {
    let mut h = H::new(config());
    let buyer = addr(0xB1);
    let id = [1; 32];
    let k1 = h.paying(1, buyer);
    h.c.handle_request(h.now, k1, req(0)).unwrap();
    h.open_payee(buyer, id);
    let k2 = h.paying(2, buyer);
    h.engine();
    // Only k2 is stopped now? Both are: k1 got STOP at funding, k2 at its first request.
    h.c.handle_request(h.now, k2, req(5)).unwrap();
    h.engine();
    h.pay_in(id, u128::from(BLOCK), u128::from(BLOCK));
    let cmds = h.engine();
    assert_eq!(
        cmds.iter()
            .find(|c| matches!(c, EngineCommand::Serve { .. })),
        Some(&EngineCommand::Serve {
            peer: k1,
            request: req(0)
        }),
        "the oldest STOP is paid first"
    );
    h.pay_in(id, u128::from(BLOCK), 2 * u128::from(BLOCK));
    assert_eq!(serves(&h.engine()), vec![req(5)]);
}

#[test]
fn reconnect_reuses_the_channel_and_carries_credit_and_trust_debt() {
    let mut config = config();
    config.upload.as_mut().unwrap().choke.trust = TrustPolicy::fixed(2 * u64::from(BLOCK));
    let mut h = H::new(config);
    let buyer = addr(0xB1);
    let id = [1; 32];
    let k1 = h.paying(1, buyer);
    // Trust: two blocks served at once, before any channel.
    for i in 0..2 {
        assert_eq!(
            h.c.handle_request(h.now, k1, req(i)).unwrap(),
            RequestDecision::Serve
        );
        h.c.handle_bytes_sent(h.now, k1, req(i), BLOCK).unwrap();
    }
    h.open_payee(buyer, id);
    assert_eq!(creates(&h.channel()), 1);
    // Pays 3 blocks, uses none, and drops.
    h.pay_in(id, 3 * u128::from(BLOCK), 3 * u128::from(BLOCK));
    h.c.handle_disconnect(h.now, k1).unwrap();
    let view = h.c.identity(buyer).unwrap();
    assert_eq!(view.credit_wei, u128::from(BLOCK), "3 paid − 2 on trust");
    assert_eq!(view.debt_wei, 0);
    // Reconnects: same channel, no Create, the credit is usable at once, and the trust it
    // already consumed and repaid is granted again.
    let k2 = h.paying(2, buyer);
    assert_eq!(creates(&h.channel()), 0);
    h.engine();
    for i in 2..5 {
        assert_eq!(
            h.c.handle_request(h.now, k2, req(i)).unwrap(),
            RequestDecision::Serve,
            "block {i}"
        );
        h.c.handle_bytes_sent(h.now, k2, req(i), BLOCK).unwrap();
    }
    assert_eq!(
        h.c.handle_request(h.now, k2, req(5)).unwrap(),
        RequestDecision::Defer
    );
    let view = h.c.identity(buyer).unwrap();
    assert_eq!(view.bytes_served, 5 * u64::from(BLOCK));
    assert_eq!(view.wei_received, 3 * u128::from(BLOCK));
    // served = paid + trust, exactly.
    assert_eq!(
        u128::from(view.bytes_served),
        view.wei_received + 2 * u128::from(BLOCK)
    );
}

#[test]
fn trust_is_per_identity_not_per_connection() {
    let mut config = config();
    config.upload.as_mut().unwrap().choke.trust = TrustPolicy::fixed(u64::from(BLOCK));
    let mut h = H::new(config);
    let buyer = addr(0xB1);
    let k1 = h.paying(1, buyer);
    assert_eq!(
        h.c.handle_request(h.now, k1, req(0)).unwrap(),
        RequestDecision::Serve
    );
    h.c.handle_bytes_sent(h.now, k1, req(0), BLOCK).unwrap();
    // A parallel connection gets no second allowance.
    let k2 = h.paying(2, buyer);
    assert_eq!(
        h.c.handle_request(h.now, k2, req(1)).unwrap(),
        RequestDecision::Defer
    );
    // Reconnecting does not refresh it either.
    h.c.handle_disconnect(h.now, k1).unwrap();
    h.c.handle_disconnect(h.now, k2).unwrap();
    assert_eq!(h.c.identity(buyer).unwrap().debt_wei, u128::from(BLOCK));
    let k3 = h.paying(3, buyer);
    assert_eq!(
        h.c.handle_request(h.now, k3, req(1)).unwrap(),
        RequestDecision::Defer
    );
}

#[test]
fn payee_close_by_payer_is_answered_by_permanent_stop() {
    let mut h = H::new(config());
    let buyer = addr(0xB1);
    let id = [1; 32];
    let k = h.paying(1, buyer);
    h.c.handle_request(h.now, k, req(0)).unwrap();
    h.open_payee(buyer, id);
    h.engine();
    h.ev(ChannelEvent::Closed {
        channel_id: id,
        payee_amount: 0,
    });
    let cmds = h.engine();
    assert_eq!(notices(&cmds), vec![(k, Notice::PermanentStop(Some(id)))]);
    assert!(cmds.contains(&EngineCommand::Choke { peer: k }));
    assert_eq!(h.c.identity(buyer).unwrap().payee_channel, None);
}

#[test]
fn overdue_stop_disconnects_by_default() {
    let mut h = H::new(config());
    let buyer = addr(0xB1);
    let id = [1; 32];
    let k = h.paying(1, buyer);
    h.c.handle_request(h.now, k, req(0)).unwrap();
    h.open_payee(buyer, id);
    h.engine();
    h.advance(Duration::from_secs(59));
    assert!(h.engine().is_empty());
    h.advance(Duration::from_secs(2));
    assert_eq!(
        h.engine(),
        vec![EngineCommand::Disconnect {
            peer: k,
            reason: DisconnectReason::PaymentOverdue
        }]
    );
    assert!(h.events().contains(&CoordinatorEvent::PaymentOverdue {
        peer: k,
        channel_id: id
    }));
}

#[test]
fn fast_peer_gets_rejects_for_refused_and_cancelled_requests() {
    let mut h = H::new(config());
    let buyer = addr(0xB1);
    let k = PeerKey(1);
    h.c.handle_peer_connected(h.now, k, info(true, true))
        .unwrap();
    // A request before the handshake is deferred; its cancel is answered with a reject.
    assert_eq!(
        h.c.handle_request(h.now, k, req(9)).unwrap(),
        RequestDecision::Defer
    );
    h.c.handle_cancel(h.now, k, req(9)).unwrap();
    assert_eq!(
        h.engine(),
        vec![EngineCommand::Reject {
            peer: k,
            request: req(9)
        }]
    );
    h.c.handle_extended_handshake(h.now, k, &handshake(buyer, 7))
        .unwrap();
    // Choked (never interested): refused with a reject.
    assert_eq!(
        h.c.handle_request(h.now, k, req(0)).unwrap(),
        RequestDecision::Reject
    );
    h.c.handle_remote_interest(h.now, k, true).unwrap();
    h.engine();
    h.c.handle_request(h.now, k, req(1)).unwrap();
    h.c.handle_cancel(h.now, k, req(1)).unwrap();
    assert!(h.engine().contains(&EngineCommand::Reject {
        peer: k,
        request: req(1)
    }));
    // Oversized request: misbehaviour, rejected, reported.
    let big = BlockRequest {
        index: 0,
        begin: 0,
        length: 1 << 20,
    };
    assert_eq!(
        h.c.handle_request(h.now, k, big).unwrap(),
        RequestDecision::Reject
    );
    assert!(h.events().contains(&CoordinatorEvent::PeerMisbehaved {
        peer: k,
        error: PeerError::InvalidRequest(big)
    }));
}

#[test]
fn engine_authority_never_chokes_and_mirrors_engine_choke() {
    let mut config = config();
    config.choke_authority = ChokeAuthority::Engine;
    let mut h = H::new(config);
    let buyer = addr(0xB1);
    let id = [1; 32];
    let k = h.paying(1, buyer);
    assert!(
        h.engine().is_empty(),
        "no choke commands under engine authority"
    );
    h.c.handle_request(h.now, k, req(0)).unwrap();
    h.open_payee(buyer, id);
    h.engine();
    h.c.handle_local_choke(h.now, k, true).unwrap();
    // The queued request is dropped with the choke (no BEP 6).
    assert_eq!(h.c.upload_gate(k).unwrap().queued_len(), 0);
    assert_eq!(
        h.c.handle_request(h.now, k, req(1)).unwrap(),
        RequestDecision::Drop
    );
    h.c.handle_local_choke(h.now, k, false).unwrap();
    assert_eq!(
        h.c.handle_request(h.now, k, req(1)).unwrap(),
        RequestDecision::Defer
    );
    assert!(!h.engine().iter().any(|c| matches!(
        c,
        EngineCommand::Choke { .. } | EngineCommand::Unchoke { .. }
    )));
}

// ====================================================================== downloader

/// A downloader harness: we buy from `seller`, whose proposal `id` we join.
fn downloader(config: CoordinatorConfig, remaining: u64) -> (H, PeerKey, Address, ChannelId) {
    let mut h = H::downloading(config, remaining);
    let seller = addr(0x5E);
    let k = h.uploader(1, seller);
    let id = [9; 32];
    h.ev(ChannelEvent::Proposed {
        channel_id: id,
        payee: seller,
        deposit: 1_000_000,
        price: None,
        nonce: None,
    });
    assert_eq!(
        h.channel(),
        vec![ChannelCommand::Join {
            channel_id: id,
            peer: seller,
            deposit: 1_000_000
        }]
    );
    h.ev(ChannelEvent::Ready {
        channel_id: id,
        counterparty: seller,
        role: Role::Payer,
        deposit: 1_000_000,
    });
    h.engine();
    h.events();
    (h, k, seller, id)
}

fn pays(cmds: &[ChannelCommand]) -> Vec<u128> {
    cmds.iter()
        .filter_map(|c| match c {
            ChannelCommand::Pay { amount, .. } => Some(*amount),
            _ => None,
        })
        .collect()
}

fn buyer_config(granularity: u64) -> CoordinatorConfig {
    let mut c = config();
    c.download.as_mut().unwrap().granularity_bytes = granularity;
    c
}

#[test]
fn stop_pays_one_granularity_once_and_is_acked() {
    let (mut h, k, _, id) = downloader(buyer_config(50_000), 10_000_000);
    h.notice_in(k, &Notice::Stop(Some(id))).unwrap();
    assert_eq!(notices(&h.engine()), vec![(k, Notice::Ack)]);
    assert_eq!(pays(&h.channel()), vec![50_000]);
    assert!(h.c.is_stopped_by_peer(k));
    // STOP while stopped: ack only, no second payment (web3torrent #1876).
    h.notice_in(k, &Notice::Stop(Some(id))).unwrap();
    assert_eq!(notices(&h.engine()), vec![(k, Notice::Ack)]);
    assert!(pays(&h.channel()).is_empty());
    // START, then the next STOP pays again.
    h.notice_in(k, &Notice::Start).unwrap();
    assert_eq!(notices(&h.engine()), vec![(k, Notice::Ack)]);
    h.c.handle_block_received(h.now, k, req(0), 50_000).unwrap();
    h.notice_in(k, &Notice::Stop(Some(id))).unwrap();
    assert_eq!(pays(&h.channel()), vec![50_000]);
    let ev = h.events();
    assert!(ev.contains(&CoordinatorEvent::PaymentSent {
        peer: k,
        channel_id: id,
        amount: 50_000,
        bytes: 50_000,
        reason: PayReason::Stop
    }));
}

#[test]
fn stop_before_join_is_paid_once_the_channel_is_ready() {
    let mut h = H::downloading(buyer_config(40_000), 1_000_000);
    let seller = addr(0x5E);
    let k = h.uploader(1, seller);
    let id = [9; 32];
    h.ev(ChannelEvent::Proposed {
        channel_id: id,
        payee: seller,
        deposit: 1_000_000,
        price: None,
        nonce: None,
    });
    h.channel();
    // web3torrent sends STOP right after proposing.
    h.notice_in(k, &Notice::Stop(Some(id))).unwrap();
    assert!(pays(&h.channel()).is_empty());
    h.ev(ChannelEvent::Ready {
        channel_id: id,
        counterparty: seller,
        role: Role::Payer,
        deposit: 1_000_000,
    });
    assert_eq!(pays(&h.channel()), vec![40_000]);
}

#[test]
fn stop_crossing_a_pay_ahead_is_not_paid_twice() {
    // 30 000 bytes left to download, 30 000 per payment.
    let (mut h, k, _, id) = downloader(buyer_config(30_000), 30_000);
    h.notice_in(
        k,
        &Notice::Prompt {
            bytes: 1,
            amount: 1,
        },
    )
    .unwrap();
    assert_eq!(pays(&h.channel()), vec![30_000]);
    // Before it arrives, the uploader (which had nothing left) sends STOP: not paid again.
    h.notice_in(k, &Notice::Stop(Some(id))).unwrap();
    assert!(
        pays(&h.channel()).is_empty(),
        "the payment in flight covers it"
    );
    assert_eq!(h.c.poll_timeout(), Some(h.now + Duration::from_secs(2)));
    // It arrives: START. Nothing more is paid.
    h.notice_in(k, &Notice::Start).unwrap();
    h.advance(Duration::from_secs(3));
    assert!(pays(&h.channel()).is_empty());
    // A STOP long after our last payment means our estimate is off (bytes lost with a
    // connection, or less trust than advertised): paid at once.
    h.notice_in(k, &Notice::Stop(Some(id))).unwrap();
    assert_eq!(pays(&h.channel()), vec![30_000]);
    // And a STOP right after a payment that START does not follow: paid after the grace.
    h.notice_in(k, &Notice::Start).unwrap();
    h.notice_in(k, &Notice::Stop(Some(id))).unwrap();
    h.advance(Duration::from_secs(1));
    assert!(pays(&h.channel()).is_empty());
    h.advance(Duration::from_secs(1));
    assert_eq!(pays(&h.channel()), vec![30_000]);
}

#[test]
fn credit_stranded_on_an_idle_connection_covers_a_sibling_without_stop() {
    let mut h = H::new(config());
    let buyer = addr(0xB1);
    let id = [1; 32];
    let k1 = h.paying(1, buyer);
    let k2 = h.paying(2, buyer);
    h.c.handle_request(h.now, k1, req(0)).unwrap();
    h.open_payee(buyer, id);
    h.engine();
    // k1 is paid 4 blocks but only ever asks for 1: 3 blocks of credit sit idle on it.
    h.pay_in(id, 4 * u128::from(BLOCK), 4 * u128::from(BLOCK));
    let cmds = h.engine();
    assert_eq!(serves(&cmds), vec![req(0)]);
    h.c.handle_bytes_sent(h.now, k1, req(0), BLOCK).unwrap();
    // k2's requests are served from it: no STOP, no START on k2.
    assert_eq!(
        h.c.handle_request(h.now, k2, req(1)).unwrap(),
        RequestDecision::Defer
    );
    let cmds = h.engine();
    assert!(notices(&cmds).is_empty(), "{cmds:?}");
    assert_eq!(serves(&cmds), vec![req(1)]);
    h.c.handle_bytes_sent(h.now, k2, req(1), BLOCK).unwrap();
    for i in 2..4 {
        assert_eq!(
            h.c.handle_request(h.now, k2, req(i)).unwrap(),
            RequestDecision::Serve,
            "block {i}"
        );
        h.c.handle_bytes_sent(h.now, k2, req(i), BLOCK).unwrap();
    }
    // (The pay-ahead prompt is the only notice: the peer is never stopped.)
    assert!(
        notices(&h.engine())
            .iter()
            .all(|(_, n)| matches!(n, Notice::Prompt { .. }))
    );
    // Only now is the peer out of credit.
    h.c.handle_request(h.now, k2, req(4)).unwrap();
    assert_eq!(notices(&h.engine()), vec![(k2, Notice::Stop(Some(id)))]);
    let view = h.c.identity(buyer).unwrap();
    assert_eq!(u128::from(view.bytes_served), view.wei_received);
}

#[test]
fn spare_credit_moves_to_a_stopped_sibling() {
    let mut h = H::new(config());
    let buyer = addr(0xB1);
    let id = [1; 32];
    let k1 = h.paying(1, buyer);
    let k2 = h.paying(2, buyer);
    h.c.handle_request(h.now, k1, req(0)).unwrap();
    h.c.handle_request(h.now, k2, req(1)).unwrap();
    h.open_payee(buyer, id);
    assert_eq!(notices(&h.engine()).len(), 2, "both stopped");
    // One payment for both blocks goes to the oldest STOP (k1), which needs one.
    h.pay_in(id, 2 * u128::from(BLOCK), 2 * u128::from(BLOCK));
    let cmds = h.engine();
    assert_eq!(serves(&cmds), vec![req(0)]);
    // Once k1's block is out, its spare block of credit unblocks k2.
    h.c.handle_bytes_sent(h.now, k1, req(0), BLOCK).unwrap();
    let cmds = h.engine();
    assert!(notices(&cmds).contains(&(k2, Notice::Start)), "{cmds:?}");
    assert_eq!(serves(&cmds), vec![req(1)]);
}

#[test]
fn prompt_pays_ahead_unless_stopped() {
    let (mut h, k, _, id) = downloader(buyer_config(30_000), 10_000_000);
    h.notice_in(
        k,
        &Notice::Prompt {
            bytes: 1,
            amount: 1,
        },
    )
    .unwrap();
    assert_eq!(notices(&h.engine()), vec![(k, Notice::Ack)]);
    assert_eq!(pays(&h.channel()), vec![30_000]);
    h.notice_in(k, &Notice::Stop(Some(id))).unwrap();
    assert_eq!(pays(&h.channel()), vec![30_000]);
    // Stopped: the STOP payment covers it.
    h.notice_in(
        k,
        &Notice::Prompt {
            bytes: 1,
            amount: 1,
        },
    )
    .unwrap();
    assert!(pays(&h.channel()).is_empty());
}

#[test]
fn prompt_tops_credit_up_to_the_suggestion_within_the_pay_ahead_bound() {
    let mut config = buyer_config(30_000);
    config.download.as_mut().unwrap().max_pay_ahead_bytes = 100_000;
    let (mut h, k, _, _) = downloader(config, 10_000_000);
    // Suggests 75 000 bytes of credit: three payments of one granularity, all in flight.
    h.notice_in(
        k,
        &Notice::Prompt {
            bytes: 75_000,
            amount: 75_000,
        },
    )
    .unwrap();
    assert_eq!(pays(&h.channel()), vec![30_000, 30_000, 30_000]);
    // Credit 90 000 ≥ 75 000: one more granularity only (always at least one per prompt).
    h.notice_in(
        k,
        &Notice::Prompt {
            bytes: 75_000,
            amount: 75_000,
        },
    )
    .unwrap();
    assert_eq!(pays(&h.channel()), vec![30_000]);
    // A huge suggestion is capped by our own bound: credit 120 000 ≥ 100 000 after one.
    h.notice_in(
        k,
        &Notice::Prompt {
            bytes: u64::MAX,
            amount: u128::MAX,
        },
    )
    .unwrap();
    assert_eq!(pays(&h.channel()), vec![30_000]);
}

#[test]
fn payments_never_exceed_what_is_still_needed_minus_advertised_trust() {
    let mut config = buyer_config(100_000);
    config.download.as_mut().unwrap().granularity_bytes = 100_000;
    let mut h = H::downloading(config, 250_000);
    let seller = addr(0x5E);
    let k = PeerKey(1);
    h.c.handle_peer_connected(h.now, k, info(true, false))
        .unwrap();
    let mut hs = handshake(seller, 3);
    hs.terms = Some(Terms {
        price_per_byte: 1,
        trust_bytes: 20_000,
    });
    h.c.handle_extended_handshake(h.now, k, &hs).unwrap();
    let id = [9; 32];
    h.ev(ChannelEvent::Proposed {
        channel_id: id,
        payee: seller,
        deposit: 1_000_000,
        price: None,
        nonce: None,
    });
    h.ev(ChannelEvent::Ready {
        channel_id: id,
        counterparty: seller,
        role: Role::Payer,
        deposit: 1_000_000,
    });
    h.channel();
    // 20 000 on trust, then STOP: 100 000, 100 000, then only 30 000.
    h.c.handle_block_received(h.now, k, req(0), 20_000).unwrap();
    let mut total = 0;
    for _ in 0..3 {
        h.notice_in(k, &Notice::Stop(Some(id))).unwrap();
        let p = pays(&h.channel());
        total += p.iter().sum::<u128>();
        h.notice_in(k, &Notice::Start).unwrap();
        let got = u32::try_from(p.iter().sum::<u128>()).unwrap();
        h.c.handle_block_received(h.now, k, req(0), got).unwrap();
    }
    assert_eq!(total, 230_000, "250 000 needed − 20 000 trust");
    // More STOPs: nothing left to buy.
    h.notice_in(k, &Notice::Stop(Some(id))).unwrap();
    assert!(pays(&h.channel()).is_empty());
}

#[test]
fn out_of_funds_closes_the_channel() {
    let (mut h, k, seller, id) = downloader(buyer_config(400_000), 10_000_000);
    for _ in 0..3 {
        h.notice_in(k, &Notice::Stop(Some(id))).unwrap();
        h.notice_in(k, &Notice::Start).unwrap();
        h.c.handle_block_received(h.now, k, req(0), 400_000)
            .unwrap();
    }
    // Deposit 1 000 000: 400 000 + 400 000 + 200 000.
    assert_eq!(pays(&h.channel()), vec![400_000, 400_000, 200_000]);
    h.notice_in(k, &Notice::Stop(Some(id))).unwrap();
    assert_eq!(h.channel(), vec![ChannelCommand::Close { channel_id: id }]);
    assert!(h.events().contains(&CoordinatorEvent::OutOfFunds {
        account: seller,
        channel_id: id
    }));
}

#[test]
fn download_complete_closes_the_channel() {
    let (mut h, k, _, id) = downloader(buyer_config(100_000), 2 * u64::from(BLOCK));
    h.notice_in(k, &Notice::Stop(Some(id))).unwrap();
    assert_eq!(pays(&h.channel()), vec![2 * u128::from(BLOCK)]);
    for i in 0..2 {
        h.c.handle_block_received(h.now, k, req(i), BLOCK).unwrap();
        h.c.handle_piece_verified(h.now, TorrentKey(0), i, BLOCK);
    }
    assert_eq!(h.channel(), vec![ChannelCommand::Close { channel_id: id }]);
    assert!(h.events().contains(&CoordinatorEvent::DownloadComplete {
        torrent: TorrentKey(0)
    }));
    // The uploader's client answers; the channel is gone and the budget is settled.
    h.ev(ChannelEvent::Closed {
        channel_id: id,
        payee_amount: 2 * u128::from(BLOCK),
    });
    assert_eq!(h.c.budget_used(), (0, 2 * u128::from(BLOCK)));
}

#[test]
fn permanent_stop_closes_the_channel() {
    let (mut h, k, _, id) = downloader(buyer_config(100_000), 10_000_000);
    h.notice_in(k, &Notice::PermanentStop(Some(id))).unwrap();
    assert_eq!(notices(&h.engine()), vec![(k, Notice::Ack)]);
    assert_eq!(h.channel(), vec![ChannelCommand::Close { channel_id: id }]);
}

#[test]
fn proposals_are_checked_against_price_deposit_and_budget() {
    let mut config = config();
    {
        let d = config.download.as_mut().unwrap();
        d.max_price_per_byte = 2;
        d.max_deposit = 1000;
        d.budget = 1500;
    }
    let mut h = H::new(config);
    let pricey = addr(0x01);
    let k1 = PeerKey(1);
    h.c.handle_peer_connected(h.now, k1, info(true, false))
        .unwrap();
    let mut hs = handshake(pricey, 3);
    hs.terms = Some(Terms {
        price_per_byte: 3,
        trust_bytes: 0,
    });
    h.c.handle_extended_handshake(h.now, k1, &hs).unwrap();
    let proposal = |id: u8, payee: Address, deposit: u128| ChannelEvent::Proposed {
        channel_id: [id; 32],
        payee,
        deposit,
        price: None,
        nonce: None,
    };
    h.ev(proposal(1, pricey, 100));
    let fine = addr(0x02);
    h.paying(2, fine);
    h.ev(proposal(2, fine, 1001));
    h.ev(proposal(3, fine, 1000));
    let other = addr(0x03);
    h.paying(3, other);
    h.ev(proposal(4, other, 600));
    // A second proposal from a peer we already pay.
    h.ev(proposal(5, fine, 10));
    // A proposal whose price differs from the handshake terms.
    let liar = addr(0x04);
    h.paying(4, liar);
    h.ev(ChannelEvent::Proposed {
        channel_id: [6; 32],
        payee: liar,
        deposit: 10,
        price: Some(2),
        nonce: None,
    });
    // Declined proposals are abandoned in the client (they would otherwise pile up there).
    let abandon = |id: u8| ChannelCommand::Abandon {
        channel_id: [id; 32],
    };
    assert_eq!(
        h.channel(),
        vec![
            abandon(1),
            abandon(2),
            ChannelCommand::Join {
                channel_id: [3; 32],
                peer: fine,
                deposit: 1000
            },
            abandon(4),
            abandon(5),
            abandon(6),
        ]
    );
    let declined: Vec<DeclineReason> = h
        .events()
        .into_iter()
        .filter_map(|e| match e {
            CoordinatorEvent::ProposalDeclined { reason, .. } => Some(reason),
            _ => None,
        })
        .collect();
    assert_eq!(
        declined,
        vec![
            DeclineReason::PriceTooHigh,
            DeclineReason::DepositTooLarge,
            DeclineReason::OverBudget,
            DeclineReason::AlreadyHaveChannel,
            DeclineReason::PriceMismatch
        ]
    );
}

#[test]
fn proposal_from_a_peer_not_yet_seen_waits_for_its_handshake() {
    let mut h = H::new(config());
    let seller = addr(0x5E);
    h.ev(ChannelEvent::Proposed {
        channel_id: [4; 32],
        payee: seller,
        deposit: 10,
        price: None,
        nonce: None,
    });
    assert!(h.channel().is_empty());
    h.paying(1, seller);
    assert_eq!(
        h.channel(),
        vec![ChannelCommand::Join {
            channel_id: [4; 32],
            peer: seller,
            deposit: 10
        }]
    );
    // Expired proposals are forgotten.
    h.ev(ChannelEvent::Proposed {
        channel_id: [5; 32],
        payee: addr(0x77),
        deposit: 10,
        price: None,
        nonce: None,
    });
    h.advance(Duration::from_secs(6));
    assert_eq!(
        h.channel(),
        vec![ChannelCommand::Abandon {
            channel_id: [5; 32]
        }],
        "an expired proposal is abandoned in the client"
    );
    h.paying(2, addr(0x77));
    assert!(h.channel().is_empty());
}

// ====================================================================== notices and messages

fn envelope(recipient: Address, sender: Address) -> String {
    format!(
        r#"{{"recipient":"{}","sender":"{}","data":{{"signedStates":[]}}}}"#,
        recipient.to_checksum(None),
        sender.to_checksum(None)
    )
}

#[test]
fn channel_messages_for_us_are_pushed_and_acked_others_dropped_silently() {
    let mut h = H::new(config());
    let peer = addr(0xB1);
    let k = h.paying(1, peer);
    h.engine();
    let ours = envelope(addr(ME), peer);
    h.notice_in(k, &Notice::Message(ours.clone())).unwrap();
    assert_eq!(notices(&h.engine()), vec![(k, Notice::Ack)]);
    assert_eq!(
        h.channel(),
        vec![ChannelCommand::PushMessage {
            from: peer,
            json: ours
        }]
    );
    // Lower-case recipient is still us.
    let lower = envelope(addr(ME), peer).to_lowercase();
    h.notice_in(k, &Notice::Message(lower)).unwrap();
    assert_eq!(h.channel().len(), 1);
    h.engine();
    // Not for us: no ack, nothing pushed.
    h.notice_in(k, &Notice::Message(envelope(addr(0x99), peer)))
        .unwrap();
    // Forged sender: no ack, nothing pushed.
    h.notice_in(k, &Notice::Message(envelope(addr(ME), addr(0x98))))
        .unwrap();
    assert!(h.engine().is_empty());
    assert!(h.channel().is_empty());
    let reasons: Vec<MessageDropReason> = h
        .events()
        .into_iter()
        .filter_map(|e| match e {
            CoordinatorEvent::MessageDropped { reason, .. } => Some(reason),
            _ => None,
        })
        .collect();
    assert_eq!(
        reasons,
        vec![
            MessageDropReason::NotForUs,
            MessageDropReason::SenderMismatch
        ]
    );
    // Garbage: reported, not acked.
    assert!(matches!(
        h.notice_in(k, &Notice::Message("not json".into())),
        Err(Error::Peer(PeerError::MalformedChannelMessage))
    ));
    assert!(h.engine().is_empty());
}

#[test]
fn acks_are_never_acked_unknown_commands_are() {
    let mut h = H::new(config());
    let k = h.paying(1, addr(0xB1));
    h.engine();
    h.notice_in(k, &Notice::Ack).unwrap();
    assert!(h.engine().is_empty());
    h.notice_in(k, &Notice::Unknown("frobnicate".into()))
        .unwrap();
    assert_eq!(notices(&h.engine()), vec![(k, Notice::Ack)]);
    // Malformed payload: ignored, reported, no ack.
    let err =
        h.c.handle_extension_message(h.now, k, EXTENSION_NAME, b"d7:command")
            .unwrap_err();
    assert!(matches!(err, Error::Peer(PeerError::MalformedNotice(_))));
    assert!(h.engine().is_empty());
    // Other extensions are not ours.
    h.c.handle_extension_message(h.now, k, "ut_metadata", b"garbage")
        .unwrap();
    assert_eq!(h.c.peer_stats(k).unwrap().notices_received, 3);
}

#[test]
fn outbound_messages_use_the_newest_connection_and_wait_for_reconnects() {
    let mut h = H::new(config());
    let peer = addr(0xB1);
    let k1 = h.paying(1, peer);
    let k2 = h.paying(2, peer);
    h.engine();
    let json = envelope(peer, addr(ME));
    h.ev(ChannelEvent::Outbound {
        to: peer,
        json: json.clone(),
    });
    assert_eq!(
        notices(&h.engine()),
        vec![(k2, Notice::Message(json.clone()))]
    );
    h.c.handle_disconnect(h.now, k1).unwrap();
    h.c.handle_disconnect(h.now, k2).unwrap();
    h.ev(ChannelEvent::Outbound {
        to: peer,
        json: json.clone(),
    });
    assert!(h.engine().is_empty());
    let k3 = h.paying(3, peer);
    assert!(notices(&h.engine()).contains(&(k3, Notice::Message(json.clone()))));
    // Unknown recipient: dropped.
    h.ev(ChannelEvent::Outbound {
        to: addr(0x42),
        json,
    });
    assert!(h.events().contains(&CoordinatorEvent::MessageDropped {
        account: Some(addr(0x42)),
        reason: MessageDropReason::UnknownRecipient
    }));
}

/// web3torrent accepts a `message` only if `recipient` is its `pseAccount` string exactly:
/// the recipient goes out as the connection advertised it, whatever case the client wrote.
#[test]
fn outbound_recipient_is_the_account_as_the_connection_advertised_it() {
    let mut h = H::new(config());
    let peer = keyed(0xB1);
    let checksummed = peer.to_checksum(None);
    assert_ne!(checksummed, checksummed.to_lowercase(), "mixed case");
    let lower_json = envelope(peer, addr(ME)).replace(&checksummed, &checksummed.to_lowercase());
    let advertised = |text: &str| PeerExtendedHandshake {
        pse_account: Some(text.as_bytes().to_vec()),
        ..handshake(peer, 7)
    };
    let send = |h: &mut H, json: &str| {
        h.ev(ChannelEvent::Outbound {
            to: peer,
            json: json.to_owned(),
        });
        let sent = notices(&h.engine());
        assert_eq!(sent.len(), 1, "{sent:?}");
        let Notice::Message(json) = &sent[0].1 else {
            panic!("{sent:?}")
        };
        serde_json::from_str::<serde_json::Value>(json).unwrap()
    };
    // Advertised checksummed, the client wrote lower case: checksummed on the wire.
    let k = PeerKey(1);
    h.c.handle_peer_connected(h.now, k, info(true, false))
        .unwrap();
    h.c.handle_extended_handshake(h.now, k, &advertised(&checksummed))
        .unwrap();
    h.engine();
    let out = send(&mut h, &lower_json);
    assert_eq!(out["recipient"], checksummed.as_str());
    // The rest of the envelope is untouched.
    let before: serde_json::Value = serde_json::from_str(&lower_json).unwrap();
    assert_eq!(out["sender"], before["sender"]);
    assert_eq!(out["data"], before["data"]);
    // Already as advertised: the very same bytes.
    let exact = envelope(peer, addr(ME));
    h.ev(ChannelEvent::Outbound {
        to: peer,
        json: exact.clone(),
    });
    assert_eq!(
        notices(&h.engine()),
        vec![(k, Notice::Message(exact.clone()))]
    );
    // A newer connection advertising lower case gets lower case.
    let k2 = PeerKey(2);
    h.c.handle_peer_connected(h.now, k2, info(true, false))
        .unwrap();
    h.c.handle_extended_handshake(h.now, k2, &advertised(&checksummed.to_lowercase()))
        .unwrap();
    h.engine();
    let out = send(&mut h, &exact);
    assert_eq!(out["recipient"], checksummed.to_lowercase().as_str());
}

#[test]
fn nothing_is_sent_to_a_peer_that_did_not_advertise_or_disabled_the_extension() {
    let mut config = config();
    config.non_paying = NonPayingPolicy::FreeAllowance { bytes: 0 };
    let mut h = H::new(config);
    // Advertises other extensions only.
    let k = PeerKey(1);
    h.c.handle_peer_connected(h.now, k, info(true, false))
        .unwrap();
    let hs = PeerExtendedHandshake {
        pse_account: Some(addr(0xB1).to_checksum(None).into_bytes()),
        ..Default::default()
    };
    h.c.handle_extended_handshake(h.now, k, &hs).unwrap();
    assert_eq!(
        h.c.peer_class(k),
        Some(PeerClass::NonPaying(NonPayingReason::NotAdvertised))
    );
    for i in 0..5 {
        h.c.handle_request(h.now, k, req(i)).unwrap();
    }
    h.advance(Duration::from_secs(600));
    assert!(
        !h.engine()
            .iter()
            .any(|c| matches!(c, EngineCommand::SendExtended { .. }))
    );
    assert!(h.channel().is_empty());
    // A paying peer that later disables the extension (id 0): notices are suppressed.
    let buyer = addr(0xB2);
    let k2 = h.paying(2, buyer);
    h.c.handle_request(h.now, k2, req(0)).unwrap();
    h.engine();
    let disable = PeerExtendedHandshake {
        pse_id: Some(0),
        ..Default::default()
    };
    h.c.handle_extended_handshake(h.now, k2, &disable).unwrap();
    h.open_payee(buyer, [1; 32]);
    assert!(
        !h.engine()
            .iter()
            .any(|c| matches!(c, EngineCommand::SendExtended { .. }))
    );
    assert_eq!(h.c.peer_stats(k2).unwrap().notices_suppressed, 1);
}

// ====================================================================== non-paying policies

#[test]
fn refuse_policy_keeps_stock_peers_choked_and_drops_or_rejects() {
    let mut h = H::new(config());
    let plain = PeerKey(1);
    h.c.handle_peer_connected(h.now, plain, info(false, false))
        .unwrap();
    h.c.handle_remote_interest(h.now, plain, true).unwrap();
    assert_eq!(
        h.c.handle_request(h.now, plain, req(0)).unwrap(),
        RequestDecision::Drop
    );
    let fast = PeerKey(2);
    h.c.handle_peer_connected(h.now, fast, info(false, true))
        .unwrap();
    assert_eq!(
        h.c.handle_request(h.now, fast, req(0)).unwrap(),
        RequestDecision::Reject
    );
    // Never unchoked, never sent an extension message, no error.
    assert!(h.engine().is_empty());
}

#[test]
fn free_allowance_then_refuse_and_choke() {
    let mut config = config();
    config.non_paying = NonPayingPolicy::FreeAllowance {
        bytes: 2 * u64::from(BLOCK),
    };
    let mut h = H::new(config);
    let k = PeerKey(1);
    h.c.handle_peer_connected(h.now, k, info(false, true))
        .unwrap();
    h.c.handle_remote_interest(h.now, k, true).unwrap();
    assert_eq!(h.engine(), vec![EngineCommand::Unchoke { peer: k }]);
    for i in 0..2 {
        assert_eq!(
            h.c.handle_request(h.now, k, req(i)).unwrap(),
            RequestDecision::Serve
        );
        h.c.handle_bytes_sent(h.now, k, req(i), BLOCK).unwrap();
    }
    assert_eq!(
        h.c.handle_request(h.now, k, req(2)).unwrap(),
        RequestDecision::Reject
    );
    assert_eq!(h.engine(), vec![EngineCommand::Choke { peer: k }]);
    assert_eq!(
        h.c.peer_stats(k).unwrap().bytes_served,
        2 * u64::from(BLOCK)
    );
}

#[test]
fn allowed_fast_preview_serves_only_the_fast_set_while_choked() {
    let mut config = config();
    config.non_paying = NonPayingPolicy::AllowedFastPreview;
    let mut h = H::new(config);
    let k = PeerKey(1);
    let mut i = info(false, true);
    i.allowed_fast = vec![3, 8];
    h.c.handle_peer_connected(h.now, k, i).unwrap();
    assert_eq!(
        h.engine(),
        vec![
            EngineCommand::AllowedFast { peer: k, piece: 3 },
            EngineCommand::AllowedFast { peer: k, piece: 8 }
        ]
    );
    h.c.handle_remote_interest(h.now, k, true).unwrap();
    assert!(h.engine().is_empty(), "stays choked");
    assert_eq!(
        h.c.handle_request(h.now, k, req(8)).unwrap(),
        RequestDecision::Serve
    );
    h.c.handle_bytes_sent(h.now, k, req(8), BLOCK).unwrap();
    assert_eq!(
        h.c.handle_request(h.now, k, req(4)).unwrap(),
        RequestDecision::Reject
    );
    // Without BEP 6 the preview cannot be expressed: refused like everything else.
    let k2 = PeerKey(2);
    let mut i = info(false, false);
    i.allowed_fast = vec![3];
    h.c.handle_peer_connected(h.now, k2, i).unwrap();
    assert!(h.engine().is_empty());
    assert_eq!(
        h.c.handle_request(h.now, k2, req(3)).unwrap(),
        RequestDecision::Drop
    );
}

#[test]
fn handshake_timeout_classifies_as_non_paying_and_resolves_deferred_requests() {
    let mut h = H::new(config());
    let k = PeerKey(1);
    h.c.handle_peer_connected(h.now, k, info(true, false))
        .unwrap();
    h.c.handle_remote_interest(h.now, k, true).unwrap();
    assert_eq!(h.engine(), vec![EngineCommand::Unchoke { peer: k }]);
    for i in 0..3 {
        assert_eq!(
            h.c.handle_request(h.now, k, req(i)).unwrap(),
            RequestDecision::Defer
        );
    }
    assert_eq!(h.c.poll_timeout(), Some(h.now + Duration::from_secs(5)));
    h.advance(Duration::from_secs(5));
    let cmds = h.engine();
    assert_eq!(
        cmds,
        vec![
            EngineCommand::DropRequest {
                peer: k,
                request: req(0)
            },
            EngineCommand::DropRequest {
                peer: k,
                request: req(1)
            },
            EngineCommand::DropRequest {
                peer: k,
                request: req(2)
            },
            EngineCommand::Choke { peer: k },
        ]
    );
    assert_eq!(
        h.c.peer_class(k),
        Some(PeerClass::NonPaying(NonPayingReason::HandshakeTimeout))
    );
}

#[test]
fn self_connection_and_identity_change_are_peer_errors() {
    let mut h = H::new(config());
    let k = PeerKey(1);
    h.c.handle_peer_connected(h.now, k, info(true, false))
        .unwrap();
    let err =
        h.c.handle_extended_handshake(h.now, k, &handshake(addr(ME), 2))
            .unwrap_err();
    assert_eq!(err, Error::Peer(PeerError::SelfConnection));
    assert!(h.engine().contains(&EngineCommand::Disconnect {
        peer: k,
        reason: DisconnectReason::SelfConnection
    }));
    let k2 = h.paying(2, addr(0xB1));
    let err =
        h.c.handle_extended_handshake(h.now, k2, &handshake(addr(0xB2), 2))
            .unwrap_err();
    assert_eq!(err, Error::Peer(PeerError::IdentityChanged));
    assert_eq!(
        h.c.peer_class(k2),
        Some(PeerClass::Paying {
            account: addr(0xB1)
        })
    );
}

#[test]
fn usage_errors() {
    let mut h = H::new(config());
    let k = PeerKey(1);
    assert_eq!(
        h.c.handle_request(h.now, k, req(0)),
        Err(UsageError::UnknownPeer(k))
    );
    h.c.handle_peer_connected(h.now, k, info(false, false))
        .unwrap();
    assert_eq!(
        h.c.handle_peer_connected(h.now, k, info(false, false)),
        Err(UsageError::DuplicatePeer(k))
    );
    assert!(matches!(
        h.c.handle_bytes_sent(h.now, k, req(0), BLOCK),
        Err(UsageError::NotBeingServed { .. })
    ));
    assert_eq!(
        h.c.handle_channel_event(
            h.now,
            ChannelEvent::PaymentReceived {
                channel_id: [1; 32],
                delta: 1,
                total: 1
            }
        ),
        Err(UsageError::UnknownChannel([1; 32]))
    );
    assert_eq!(
        h.c.add_torrent(TorrentKey(0), 1),
        Err(UsageError::DuplicateTorrent(TorrentKey(0)))
    );
    let mut bad = config();
    bad.download.as_mut().unwrap().granularity_bytes = 0;
    assert_eq!(
        Coordinator::new(bad).unwrap_err(),
        ConfigError::ZeroGranularity
    );
}

// ====================================================================== liveness

#[test]
fn unfunded_proposal_is_abandoned_after_the_response_timeout() {
    let mut h = H::new(config());
    let buyer = addr(0xB1);
    let k = h.paying(1, buyer);
    h.c.handle_request(h.now, k, req(0)).unwrap();
    h.ev(ChannelEvent::Created {
        peer: buyer,
        channel_id: [1; 32],
    });
    h.engine();
    h.channel();
    // Channel messages from the peer restart the clock.
    h.advance(Duration::from_secs(15));
    h.notice_in(k, &Notice::Message(envelope(addr(ME), buyer)))
        .unwrap();
    h.engine();
    h.advance(Duration::from_secs(15));
    assert!(
        h.channel()
            .iter()
            .all(|c| matches!(c, ChannelCommand::PushMessage { .. }))
    );
    h.advance(Duration::from_secs(6));
    assert_eq!(
        h.channel(),
        vec![ChannelCommand::Abandon {
            channel_id: [1; 32]
        }],
        "nothing to challenge (unfunded): the proposal is abandoned"
    );
    assert_eq!(notices(&h.engine()), vec![(k, Notice::PermanentStop(None))]);
    assert!(
        h.events()
            .contains(&CoordinatorEvent::ChannelSetupFailed { account: buyer })
    );
    assert_eq!(h.c.identity(buyer).unwrap().payee_channel, None);
}

#[test]
fn vanished_payer_channel_is_closed_then_challenged() {
    let mut h = H::new(config());
    let buyer = addr(0xB1);
    let id = [1; 32];
    let k = h.paying(1, buyer);
    h.c.handle_request(h.now, k, req(0)).unwrap();
    h.open_payee(buyer, id);
    h.pay_in(id, u128::from(BLOCK), u128::from(BLOCK));
    h.c.handle_bytes_sent(h.now, k, req(0), BLOCK).unwrap();
    h.channel();
    h.c.handle_disconnect(h.now, k).unwrap();
    assert_eq!(h.c.poll_timeout(), Some(h.now + Duration::from_secs(30)));
    h.advance(Duration::from_secs(30));
    assert_eq!(h.channel(), vec![ChannelCommand::Close { channel_id: id }]);
    h.advance(Duration::from_secs(20));
    assert_eq!(
        h.channel(),
        vec![ChannelCommand::Challenge { channel_id: id }]
    );
    assert!(h.events().contains(&CoordinatorEvent::Challenging {
        account: buyer,
        channel_id: id,
        role: Role::Payee
    }));
    h.ev(ChannelEvent::Closed {
        channel_id: id,
        payee_amount: u128::from(BLOCK),
    });
    assert_eq!(h.c.identity(buyer).unwrap().payee_channel, None);
    assert_eq!(h.c.poll_timeout(), None);
}

#[test]
fn reconnect_within_grace_keeps_the_channel_open() {
    let mut h = H::new(config());
    let buyer = addr(0xB1);
    let id = [1; 32];
    let k = h.paying(1, buyer);
    h.c.handle_request(h.now, k, req(0)).unwrap();
    h.open_payee(buyer, id);
    h.channel();
    h.c.handle_disconnect(h.now, k).unwrap();
    h.advance(Duration::from_secs(29));
    h.paying(2, buyer);
    // Back: our last channel message is repeated (it may have been lost with the connection).
    assert_eq!(h.channel(), vec![ChannelCommand::Resend { channel_id: id }]);
    h.advance(Duration::from_secs(60));
    assert!(h.channel().is_empty(), "neither closed nor challenged");
    assert!(h.c.identity(buyer).unwrap().payee_channel_open);
    // A second connection while the first is live repeats nothing.
    h.paying(3, buyer);
    assert!(h.channel().is_empty());
}

#[test]
fn vanished_uploader_is_challenged_by_the_payer() {
    let (mut h, k, seller, id) = downloader(buyer_config(100_000), 10_000_000);
    h.notice_in(k, &Notice::Stop(Some(id))).unwrap();
    h.channel();
    h.c.handle_disconnect(h.now, k).unwrap();
    h.advance(Duration::from_secs(30));
    assert_eq!(h.channel(), vec![ChannelCommand::Close { channel_id: id }]);
    h.advance(Duration::from_secs(20));
    assert_eq!(
        h.channel(),
        vec![ChannelCommand::Challenge { channel_id: id }]
    );
    h.ev(ChannelEvent::Closed {
        channel_id: id,
        payee_amount: 100_000,
    });
    assert_eq!(h.c.budget_used(), (0, 100_000));
    assert_eq!(h.c.identity(seller).unwrap().payer_channel, None);
}

#[test]
fn stalled_uploader_is_closed_on() {
    let mut config = buyer_config(100_000);
    config.liveness.stall_timeout = Some(Duration::from_secs(10));
    let (mut h, k, seller, id) = downloader(config, 10_000_000);
    h.notice_in(k, &Notice::Stop(Some(id))).unwrap();
    h.channel();
    h.advance(Duration::from_secs(9));
    h.c.handle_block_received(h.now, k, req(0), 1000).unwrap();
    h.advance(Duration::from_secs(9));
    assert!(h.channel().is_empty(), "data arrived: not stalled");
    h.notice_in(k, &Notice::Start).unwrap();
    h.notice_in(k, &Notice::Stop(Some(id))).unwrap();
    h.channel();
    h.advance(Duration::from_secs(10));
    assert_eq!(h.channel(), vec![ChannelCommand::Close { channel_id: id }]);
    assert!(h.events().contains(&CoordinatorEvent::Stalled {
        account: seller,
        channel_id: id
    }));
}

#[test]
fn failed_close_is_challenged_and_failed_join_releases_budget() {
    let (mut h, _, seller, id) = downloader(buyer_config(100_000), 10_000_000);
    assert!(h.c.close_channel(h.now, seller, Role::Payer));
    h.channel();
    h.ev(ChannelEvent::CommandFailed {
        command: FailedCommand::Close { channel_id: id },
        reason: "peer gone".into(),
    });
    assert_eq!(
        h.channel(),
        vec![ChannelCommand::Challenge { channel_id: id }]
    );
    let mut h = H::new(config());
    let seller = addr(0x5E);
    h.paying(1, seller);
    h.ev(ChannelEvent::Proposed {
        channel_id: [2; 32],
        payee: seller,
        deposit: 500,
        price: None,
        nonce: None,
    });
    assert_eq!(h.c.budget_used(), (500, 0));
    h.ev(ChannelEvent::CommandFailed {
        command: FailedCommand::Join {
            channel_id: [2; 32],
        },
        reason: "no funds".into(),
    });
    assert_eq!(h.c.budget_used(), (0, 0));
    assert_eq!(h.c.identity(seller).unwrap().payer_channel, None);
}

#[test]
fn stop_uploading_sends_permanent_stop_to_everyone() {
    let mut h = H::new(config());
    let buyer = addr(0xB1);
    let k = h.paying(1, buyer);
    h.c.handle_request(h.now, k, req(0)).unwrap();
    h.open_payee(buyer, [1; 32]);
    h.engine();
    h.c.stop_uploading(h.now, None);
    let cmds = h.engine();
    assert_eq!(
        notices(&cmds),
        vec![(k, Notice::PermanentStop(Some([1; 32])))]
    );
    assert!(cmds.contains(&EngineCommand::Choke { peer: k }));
}

#[test]
fn hooks_trait_is_object_safe_and_delegates() {
    let mut c: Box<dyn EngineHooks> = Box::new(Coordinator::new(config()).unwrap());
    let now = Instant::now();
    c.on_peer_connected(now, PeerKey(1), info(false, false))
        .unwrap();
    assert_eq!(
        c.on_request(now, PeerKey(1), req(0)).unwrap(),
        RequestDecision::Drop
    );
    assert_eq!(
        c.extended_handshake_contribution().extension_name,
        EXTENSION_NAME
    );
    c.on_tick(now);
    c.on_disconnect(now, PeerKey(1)).unwrap();
    assert_eq!(c.poll_engine_command(), None);
}

// ====================================================================== pair harness

/// A message on the simulated wire.
#[derive(Debug, Clone)]
enum Wire {
    Unchoke,
    Choke,
    Request(BlockRequest),
    Piece(BlockRequest),
    Reject(BlockRequest),
    Ext(Bytes),
}

/// Two coordinators (uploader U, downloader D) connected by an in-order simulated wire, a
/// minimal engine on each side, and a simulated channel that turns D's payments into U's
/// payment events. Everything runs on one simulated clock.
struct Pair {
    now: Instant,
    up: Coordinator,
    down: Coordinator,
    /// Messages U → D and D → U.
    to_down: VecDeque<Wire>,
    to_up: VecDeque<Wire>,
    /// Channel events for U and D, delivered after `channel_delay` steps.
    up_events: VecDeque<ChannelEvent>,
    down_events: VecDeque<ChannelEvent>,
    /// D's engine: blocks wanted, in order; outstanding requests.
    wanted: VecDeque<BlockRequest>,
    outstanding: BTreeSet<(u32, u32)>,
    pipeline: usize,
    unchoked: bool,
    received: u64,
    block_count: u32,
    blocks_per_piece: u32,
    piece_blocks: HashMap<u32, u32>,
    total_paid: u128,
    channel_total: u128,
    closed_with: Option<u128>,
}

const UPK: PeerKey = PeerKey(10); // U's key for D
const DNK: PeerKey = PeerKey(20); // D's key for U
const CH: ChannelId = [0xC4; 32];

impl Pair {
    fn new(total_blocks: u32, granularity: u64, trust: u64, pipeline: usize) -> Self {
        let seller = keyed(0x5E);
        let buyer = keyed(0xB1);
        let mut up_cfg = CoordinatorConfig::new(seller, seller);
        up_cfg.upload.as_mut().unwrap().choke.trust = TrustPolicy::fixed(trust);
        up_cfg.download = None;
        let mut down_cfg = CoordinatorConfig::new(buyer, buyer);
        down_cfg.download.as_mut().unwrap().granularity_bytes = granularity;
        down_cfg.download.as_mut().unwrap().max_deposit = u128::MAX;
        down_cfg.download.as_mut().unwrap().budget = u128::MAX;
        // Both prove their accounts to each other over the piped notices.
        let mut up = Coordinator::with_signer(up_cfg, key(0x5E)).unwrap();
        let mut down = Coordinator::with_signer(down_cfg, key(0xB1)).unwrap();
        let total = u64::from(total_blocks) * u64::from(BLOCK);
        up.add_torrent(TorrentKey(0), 0).unwrap();
        down.add_torrent(TorrentKey(0), total).unwrap();
        let now = Instant::now();
        let ext = reserved(true, false);
        let (up_id, down_id) = ([0x11; 20], [0x22; 20]);
        up.handle_peer_connected(
            now,
            UPK,
            PeerInfo::new(TorrentKey(0), Direction::Inbound, ext)
                .with_session([0x17; 20], up_id, down_id),
        )
        .unwrap();
        down.handle_peer_connected(
            now,
            DNK,
            PeerInfo::new(TorrentKey(0), Direction::Outbound, ext)
                .with_session([0x17; 20], down_id, up_id),
        )
        .unwrap();
        let to_hs = |c: HandshakeContribution| PeerExtendedHandshake {
            pse_id: Some(2),
            pse_account: Some(c.pse_account.into_bytes()),
            outcome_address: Some(c.outcome_address.into_bytes()),
            terms: c.terms,
            asset: c.asset,
            client: None,
            auth: c.auth,
        };
        let up_hs = to_hs(up.extended_handshake_contribution());
        let down_hs = to_hs(down.extended_handshake_contribution());
        up.handle_extended_handshake(now, UPK, &down_hs).unwrap();
        down.handle_extended_handshake(now, DNK, &up_hs).unwrap();
        up.handle_remote_interest(now, UPK, true).unwrap();
        let wanted = (0..total_blocks)
            .map(|i| BlockRequest {
                index: i / 4,
                begin: (i % 4) * BLOCK,
                length: BLOCK,
            })
            .collect();
        Self {
            now,
            up,
            down,
            to_down: VecDeque::new(),
            to_up: VecDeque::new(),
            up_events: VecDeque::new(),
            down_events: VecDeque::new(),
            wanted,
            outstanding: BTreeSet::new(),
            pipeline,
            unchoked: false,
            received: 0,
            block_count: total_blocks,
            blocks_per_piece: 4,
            piece_blocks: HashMap::new(),
            total_paid: 0,
            channel_total: 0,
            closed_with: None,
        }
    }

    /// Runs U's and D's outputs into the wire and the channel.
    fn pump_outputs(&mut self) {
        while let Some(cmd) = self.up.poll_engine_command() {
            match cmd {
                EngineCommand::Unchoke { .. } => self.to_down.push_back(Wire::Unchoke),
                EngineCommand::Choke { .. } => self.to_down.push_back(Wire::Choke),
                EngineCommand::Serve { request, .. } => self.serve(request),
                EngineCommand::Reject { request, .. } => {
                    self.to_down.push_back(Wire::Reject(request));
                }
                EngineCommand::SendExtended { payload, .. } => {
                    self.to_down.push_back(Wire::Ext(payload));
                }
                _ => {}
            }
        }
        while let Some(cmd) = self.down.poll_engine_command() {
            if let EngineCommand::SendExtended { payload, .. } = cmd {
                self.to_up.push_back(Wire::Ext(payload));
            }
        }
        while let Some(cmd) = self.up.poll_channel_command() {
            match cmd {
                ChannelCommand::Create {
                    peer,
                    deposit,
                    nonce,
                    ..
                } => {
                    // The buyer only joins a nonce it helped create.
                    assert!(nonce.is_some());
                    self.up_events.push_back(ChannelEvent::Created {
                        peer,
                        channel_id: CH,
                    });
                    self.down_events.push_back(ChannelEvent::Proposed {
                        channel_id: CH,
                        payee: keyed(0x5E),
                        deposit,
                        price: None,
                        nonce,
                    });
                }
                ChannelCommand::Close { .. } | ChannelCommand::Challenge { .. } => {
                    self.closed_with = Some(self.channel_total);
                }
                _ => {}
            }
        }
        while let Some(cmd) = self.down.poll_channel_command() {
            match cmd {
                ChannelCommand::Join { deposit, .. } => {
                    self.up_events.push_back(ChannelEvent::Ready {
                        channel_id: CH,
                        counterparty: keyed(0xB1),
                        role: Role::Payee,
                        deposit,
                    });
                    self.down_events.push_back(ChannelEvent::Ready {
                        channel_id: CH,
                        counterparty: keyed(0x5E),
                        role: Role::Payer,
                        deposit,
                    });
                }
                ChannelCommand::Pay { amount, .. } => {
                    self.total_paid += amount;
                    self.channel_total += amount;
                    self.up_events.push_back(ChannelEvent::PaymentReceived {
                        channel_id: CH,
                        delta: amount,
                        total: self.channel_total,
                    });
                }
                ChannelCommand::Close { .. } => {
                    // The payee's client answers the close by itself.
                    self.closed_with = Some(self.channel_total);
                    let closed = ChannelEvent::Closed {
                        channel_id: CH,
                        payee_amount: self.channel_total,
                    };
                    self.up_events.push_back(closed.clone());
                    self.down_events.push_back(closed);
                }
                _ => {}
            }
        }
    }

    fn serve(&mut self, request: BlockRequest) {
        self.up
            .handle_bytes_sent(self.now, UPK, request, request.length)
            .unwrap();
        self.to_down.push_back(Wire::Piece(request));
    }

    fn request_more(&mut self) {
        if !self.unchoked || self.down.is_stopped_by_peer(DNK) {
            return;
        }
        while self.outstanding.len() < self.pipeline {
            let Some(r) = self.wanted.pop_front() else {
                return;
            };
            self.outstanding.insert((r.index, r.begin));
            self.to_up.push_back(Wire::Request(r));
        }
    }

    /// One step: deliver everything in flight, once. Returns whether anything happened.
    fn step(&mut self) -> bool {
        self.now += Duration::from_millis(10);
        self.request_more();
        self.pump_outputs();
        let mut progressed = false;
        for ev in std::mem::take(&mut self.up_events) {
            progressed = true;
            let _ = self.up.handle_channel_event(self.now, ev);
        }
        for ev in std::mem::take(&mut self.down_events) {
            progressed = true;
            let _ = self.down.handle_channel_event(self.now, ev);
        }
        self.pump_outputs();
        for msg in std::mem::take(&mut self.to_up) {
            progressed = true;
            match msg {
                Wire::Request(r) => match self.up.handle_request(self.now, UPK, r).unwrap() {
                    RequestDecision::Serve => self.serve(r),
                    RequestDecision::Reject => self.to_down.push_back(Wire::Reject(r)),
                    _ => {}
                },
                Wire::Ext(p) => {
                    self.up
                        .handle_extension_message(self.now, UPK, EXTENSION_NAME, &p)
                        .unwrap();
                }
                _ => {}
            }
            self.pump_outputs();
        }
        for msg in std::mem::take(&mut self.to_down) {
            progressed = true;
            match msg {
                Wire::Unchoke => self.unchoked = true,
                Wire::Choke => self.unchoked = false,
                Wire::Piece(r) => {
                    self.outstanding.remove(&(r.index, r.begin));
                    self.received += u64::from(r.length);
                    self.down
                        .handle_block_received(self.now, DNK, r, r.length)
                        .unwrap();
                    let got = self.piece_blocks.entry(r.index).or_insert(0);
                    *got += 1;
                    let in_piece = self
                        .blocks_per_piece
                        .min(self.block_count - r.index * self.blocks_per_piece);
                    if *got == in_piece {
                        self.down.handle_piece_verified(
                            self.now,
                            TorrentKey(0),
                            r.index,
                            in_piece * BLOCK,
                        );
                    }
                }
                Wire::Reject(r) => {
                    self.outstanding.remove(&(r.index, r.begin));
                    self.wanted.push_front(r);
                }
                Wire::Ext(p) => {
                    self.down
                        .handle_extension_message(self.now, DNK, EXTENSION_NAME, &p)
                        .unwrap();
                }
                Wire::Request(_) => {}
            }
            self.pump_outputs();
        }
        self.request_more();
        progressed || !self.to_up.is_empty()
    }

    fn run(&mut self) {
        for _ in 0..100_000 {
            if !self.step() {
                return;
            }
        }
        panic!("did not settle");
    }
}

#[test]
fn pair_transfers_and_serves_exactly_paid_plus_trust() {
    for (blocks, granularity, trust, pipeline) in [
        (64u32, 16_384u64, 0u64, 4usize),
        (64, 65_536, 0, 8),
        (64, 100_000, 32_768, 8),
        (256, 262_144, 16_384, 16),
        (100, 1 << 20, 0, 5),
        (40, 50_000, 49_152, 3),
    ] {
        let mut p = Pair::new(blocks, granularity, trust, pipeline);
        p.run();
        let total = u64::from(blocks) * u64::from(BLOCK);
        let seen = p.up.identity(keyed(0xB1)).unwrap();
        assert_eq!(p.received, total, "{blocks} blocks at {granularity}");
        assert_eq!(seen.bytes_served, total);
        assert_eq!(
            u128::from(seen.bytes_served),
            p.total_paid + u128::from(trust),
            "served = paid + trust, exactly ({blocks} blocks, granularity {granularity}, trust {trust})"
        );
        assert_eq!(seen.wei_received, p.total_paid);
        assert_eq!(p.closed_with, Some(p.total_paid), "closed with that payout");
        let bought = p.down.identity(keyed(0x5E)).unwrap();
        assert_eq!(bought.wei_paid, p.total_paid);
        assert_eq!(bought.payer_channel, None, "closed on completion");
    }
}

#[test]
fn pay_ahead_keeps_a_steady_transfer_from_stopping() {
    // With pay-ahead, after the first STOP the uploader never has to stop the downloader again.
    let mut p = Pair::new(256, 262_144, 0, 8);
    p.run();
    let gate_stops = p.up.identity(keyed(0xB1)).unwrap();
    assert_eq!(gate_stops.bytes_served, 256 * u64::from(BLOCK));
    let planner = p.down.download_planner(DNK).unwrap().stats();
    assert_eq!(planner.stops, 1, "only the initial STOP");
    assert!(planner.pay_ahead_payments >= 14);
}

// ====================================================================== resource reclamation

#[test]
fn departed_identities_without_history_are_reclaimed_and_their_proposals_abandoned() {
    let mut config = config();
    config.upload.as_mut().unwrap().choke.trust = TrustPolicy::fixed(u64::from(BLOCK));
    // Idle close fires before the grace ends (it must not reset the reclamation clock).
    config.liveness.idle_close_after = Some(Duration::from_secs(1));
    let mut h = H::new(config);
    // 50 peers, each with its own fresh account, ask for a channel and vanish.
    for i in 0..50u8 {
        let k = h.paying(u64::from(i) + 1, addr(0x20 + i));
        h.c.handle_request(h.now, k, req(0)).unwrap();
        h.ev(ChannelEvent::Created {
            peer: addr(0x20 + i),
            channel_id: [i; 32],
        });
        h.c.handle_disconnect(h.now, k).unwrap();
    }
    // One more that was served on trust: its identity must be remembered (no second allowance).
    let trusted = addr(0x10);
    let k = h.paying(100, trusted);
    assert_eq!(
        h.c.handle_request(h.now, k, req(0)).unwrap(),
        RequestDecision::Serve
    );
    h.c.handle_bytes_sent(h.now, k, req(0), BLOCK).unwrap();
    h.c.handle_disconnect(h.now, k).unwrap();
    h.engine();
    h.channel();
    assert_eq!(h.c.resource_usage().identities, 51);
    // Past the response timeout the proposals are abandoned, then the identities reclaimed.
    h.advance(Duration::from_secs(21));
    let abandoned = h
        .channel()
        .iter()
        .filter(|c| matches!(c, ChannelCommand::Abandon { .. }))
        .count();
    assert_eq!(abandoned, 50);
    h.advance(Duration::from_secs(21));
    let usage = h.c.resource_usage();
    assert_eq!(usage.peers, 0);
    assert_eq!(usage.identities, 1, "{usage:?}");
    assert_eq!(usage.channels, 0);
    assert_eq!(h.c.identity(trusted).unwrap().debt_wei, u128::from(BLOCK));
}

// ====================================================================== restart

fn restored(
    id: ChannelId,
    account: Address,
    role: Role,
    paid: u128,
    state: RestoredState,
) -> ChannelEvent {
    ChannelEvent::Restored {
        channel_id: id,
        counterparty: account,
        role,
        deposit: 1 << 30,
        paid,
        state,
    }
}

#[test]
fn restored_payee_channel_is_used_again_and_old_payments_are_not_credited_twice() {
    let mut h = H::new(config());
    let buyer = keyed(0xB1);
    let id = [4; 32];
    h.ev(restored(
        id,
        buyer,
        Role::Payee,
        5 * u128::from(BLOCK),
        RestoredState::Open,
    ));
    assert!(h.events().contains(&CoordinatorEvent::ChannelRestored {
        account: buyer,
        channel_id: id,
        role: Role::Payee,
        paid: 5 * u128::from(BLOCK),
        state: RestoredState::Open,
    }));
    // The payer comes back: no second channel, STOP on the restored one at the first request.
    let k = h.paying(1, buyer);
    h.engine();
    h.c.handle_request(h.now, k, req(0)).unwrap();
    assert_eq!(creates(&h.channel()), 0, "the restored channel is reused");
    assert_eq!(notices(&h.engine()), vec![(k, Notice::Stop(Some(id)))]);
    // Its client repeats the voucher we already held: nothing is credited.
    h.pay_in(id, 0, 5 * u128::from(BLOCK));
    assert!(serves(&h.engine()).is_empty());
    // A new voucher credits only the increase: one block.
    h.pay_in(id, u128::from(BLOCK), 6 * u128::from(BLOCK));
    let cmds = h.engine();
    assert_eq!(serves(&cmds), vec![req(0)]);
    h.c.handle_bytes_sent(h.now, k, req(0), BLOCK).unwrap();
    h.c.handle_request(h.now, k, req(1)).unwrap();
    assert!(
        serves(&h.engine()).is_empty(),
        "one block was bought, one served"
    );
}

#[test]
fn restored_payer_channel_pays_a_stop_without_a_new_proposal() {
    let mut h = H::downloading(buyer_config(40_000), 1_000_000);
    let seller = keyed(0x5E);
    let id = [7; 32];
    // Most of the deposit was spent before the restart.
    let deposit = 100_000u128;
    h.ev(ChannelEvent::Restored {
        channel_id: id,
        counterparty: seller,
        role: Role::Payer,
        deposit,
        paid: 90_000,
        state: RestoredState::Open,
    });
    let k = h.uploader(1, seller);
    h.channel();
    h.notice_in(k, &Notice::Stop(Some(id))).unwrap();
    // Only what is left of the deposit can be paid.
    assert_eq!(pays(&h.channel()), vec![10_000]);
    // A second proposal from the same seller is declined: the restored channel is in use.
    h.ev(ChannelEvent::Proposed {
        channel_id: [8; 32],
        payee: seller,
        deposit: 1_000_000,
        price: None,
        nonce: None,
    });
    assert_eq!(
        h.channel(),
        vec![ChannelCommand::Abandon {
            channel_id: [8; 32]
        }]
    );
}

#[test]
fn restored_channel_of_a_peer_that_never_returns_is_closed_then_challenged() {
    let mut h = H::new(config());
    let buyer = keyed(0xB1);
    let id = [4; 32];
    h.ev(restored(id, buyer, Role::Payee, 1000, RestoredState::Open));
    h.channel();
    h.advance(Duration::from_secs(29));
    assert!(h.channel().is_empty());
    h.advance(Duration::from_secs(2));
    assert_eq!(h.channel(), vec![ChannelCommand::Close { channel_id: id }]);
    h.advance(Duration::from_secs(21));
    assert_eq!(
        h.channel(),
        vec![ChannelCommand::Challenge { channel_id: id }]
    );
}

#[test]
fn restored_setup_must_be_funded_in_time() {
    let mut h = H::new(config());
    let (buyer, seller) = (keyed(0xB1), keyed(0x5E));
    // Our proposal (payee) and a channel we had joined (payer): neither funded.
    h.ev(restored(
        [1; 32],
        buyer,
        Role::Payee,
        0,
        RestoredState::Funding,
    ));
    h.ev(restored(
        [2; 32],
        seller,
        Role::Payer,
        0,
        RestoredState::Funding,
    ));
    // The buyer reconnects and asks: no second proposal while the first may still be funded.
    let k = h.paying(1, buyer);
    h.c.handle_request(h.now, k, req(0)).unwrap();
    assert_eq!(creates(&h.channel()), 0);
    h.advance(Duration::from_secs(21));
    let cmds = h.channel();
    assert!(
        cmds.contains(&ChannelCommand::Abandon {
            channel_id: [1; 32]
        }),
        "{cmds:?}"
    );
    // Our own deposit may be on chain: the payer side challenges to get it back.
    assert!(
        cmds.contains(&ChannelCommand::Challenge {
            channel_id: [2; 32]
        }),
        "{cmds:?}"
    );
}

#[test]
fn a_restored_channel_reported_twice_is_adopted_once() {
    let mut h = H::new(config());
    let buyer = keyed(0xB1);
    h.ev(restored(
        [4; 32],
        buyer,
        Role::Payee,
        10,
        RestoredState::Open,
    ));
    h.ev(restored(
        [4; 32],
        buyer,
        Role::Payee,
        10,
        RestoredState::Open,
    ));
    let restored_events = h
        .events()
        .into_iter()
        .filter(|e| matches!(e, CoordinatorEvent::ChannelRestored { .. }))
        .count();
    assert_eq!(restored_events, 1);
}
