//! Hostile peers against a real uploader `Node` (coordinator + reference peer loop) with a real
//! `payment_channel::Client` on a `SimulatedChain`. The attacker is scripted frame by frame with
//! paid-wire's codecs (`send_frame` / `recv_frame`, in `support`), and, where money is involved,
//! runs its own sans-IO payer `Channel` so it can speak the channel protocol honestly or not.
//! The hostile seller against a real buyer is `hostile_seller.rs`.
//!
//! Each case asserts the precise reaction and that the honest side's money and acknowledged
//! state are intact. See the "Security" section of the README for the table.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use paid_wire::choke::TrustPolicy;
use paid_wire::error::{CodecError, DecodeError};
use paid_wire::message::{BlockRequest, Message};
use paid_wire::pse::PseMessage;
use payment_channel::channel::{Channel, PhaseKind};
use payment_channel::client::Client;
use payment_channel::error::{Error as ChannelError, PeerMisbehaved};
use payment_channel::message::{
    ChannelRef, Envelope, Join, Message as ChannelMessage, Propose, VoucherMessage,
};
use payment_channel::sign::{LocalSigner, Signer};
use payment_channel::voucher::Voucher;
use payment_channel::{B256, SimulatedChain, U256};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use torrent_glue::adapter::{ConnectionError, MemoryTorrent, Node, NodeConfig};
use torrent_glue::coordinator::{NonPayingReason, PeerClass};
use torrent_glue::engine::Direction;
use torrent_glue::{Address, CoordinatorConfig, CoordinatorEvent, PeerError, Role};

use crate::support::{
    Attacker, CHALLENGE_DURATION, balance, challenging, client_backend, content, liveness,
    start_node, tcp, until, until_after_finalization, until_challenge_on_chain,
};

const PIECE: u32 = 64 * 1024;
const BLOCK: u32 = 16 * 1024;
const SIZE: u64 = 1024 * 1024;
const DEPOSIT: u128 = 2 * 1024 * 1024;

fn block(index: u32, begin: u32) -> BlockRequest {
    BlockRequest::new(index, begin, BLOCK)
}

// ------------------------------------------------------------------ the honest uploader

struct Seller {
    node: Node,
    client: Client,
    account: Address,
    events: mpsc::UnboundedReceiver<CoordinatorEvent>,
    addr: SocketAddr,
}

impl Seller {
    fn drain(&mut self) -> Vec<CoordinatorEvent> {
        std::iter::from_fn(|| self.events.try_recv().ok()).collect()
    }

    fn connections(&self) -> usize {
        self.node.inspect(|c| c.resource_usage().peers)
    }

    /// Waits (10 s at most) until the coordinator has credited `payer` with `total` wei in all
    /// (`what`: the wait's name).
    async fn credits(&self, what: &str, payer: Address, total: u128) {
        until(what, 10, || {
            self.node
                .inspect(|c| c.identity(payer).is_some_and(|i| i.wei_received == total))
        })
        .await;
    }

    /// Hands `data` from `sender` to the client directly: it is refused as the misbehaviour
    /// `expected` recognises (`what`: the case, in the assertion's message).
    async fn refuses(
        &self,
        what: &str,
        sender: Address,
        data: ChannelMessage,
        expected: fn(&PeerMisbehaved) -> bool,
    ) {
        let env = Envelope {
            recipient: self.account,
            sender,
            data,
        };
        let err = self.client.push_message(env).await.unwrap_err();
        assert!(
            matches!(&err, ChannelError::PeerMisbehaved(m) if expected(m)),
            "{what}: {err:?}"
        );
    }
}

async fn seller(
    chain: &SimulatedChain,
    tweak: impl FnOnce(&mut CoordinatorConfig, &mut NodeConfig),
) -> Seller {
    let signer = Arc::new(LocalSigner::random());
    let account = signer.address();
    let (client, backend) = client_backend(chain, signer.clone(), None).await;
    let mut config = CoordinatorConfig::new(account, account);
    config.liveness = liveness(Duration::from_secs(1));
    config.download = None;
    let up = config.upload.as_mut().unwrap();
    up.deposit = DEPOSIT;
    up.choke.trust = TrustPolicy::NONE;
    up.choke.max_queue_len = 32;
    let mut node_config = NodeConfig::new(*b"-TG0001-SELLER000000");
    node_config.tick = Duration::from_millis(20);
    tweak(&mut config, &mut node_config);
    let (node, events, addr) = start_node(
        config,
        signer,
        node_config,
        backend,
        Arc::new(MemoryTorrent::seed(content(SIZE), PIECE)),
    )
    .await;
    Seller {
        node,
        client,
        account,
        events,
        addr,
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Attacker<S> {
    /// Shows interest and requests block 0 (so it is classified and gated): the channel
    /// proposal it is answered with.
    async fn asks_for_a_block(&mut self) -> Propose {
        self.send_frame(Message::Interested).await;
        self.send_frame(Message::Request(block(0, 0))).await;
        let ChannelMessage::Propose(p) = self.recv_channel(10).await else {
            panic!("expected a proposal");
        };
        p
    }

    /// Asks for a block, receives the proposal, joins honestly, and runs the channel.
    async fn open_channel(&mut self, seller: Address, chain: &SimulatedChain) -> B256 {
        let p = self.asks_for_a_block().await;
        let mut ch = Channel::from_proposal(self.signer.clone(), &p).unwrap();
        ch.join().unwrap();
        let id = ch.id();
        self.ch = Some(ch);
        self.drive_chain(chain);
        let join = self.outbound().expect("join after the deposit");
        self.send_channel(seller, join).await;
        let postfund = self.recv_channel(10).await;
        self.ch.as_mut().unwrap().handle_message(&postfund).unwrap();
        assert!(self.ch.as_ref().unwrap().is_running());
        id
    }

    /// Signs and sends a voucher for `delta` more.
    async fn pay(&mut self, seller: Address, delta: u128) -> Voucher {
        let v = self
            .ch
            .as_mut()
            .unwrap()
            .send_payment(U256::from(delta))
            .unwrap();
        let msg = self.outbound().unwrap();
        self.send_channel(seller, msg).await;
        v
    }
}

/// A seller on `chain` (the usual setup) and a paying attacker connected to it over TCP.
async fn attacked(chain: &SimulatedChain) -> (Seller, Attacker<tokio::net::TcpStream>) {
    let seller = seller(chain, |_, _| {}).await;
    let a = Attacker::paying(tcp(seller.addr).await).await;
    (seller, a)
}

/// The uploader's view of our channel: what it credited (0 if it forgot the channel).
async fn credited(seller: &Seller, id: B256) -> u128 {
    seller
        .client
        .channel_info(id)
        .await
        .map_or(0, |i| u128::try_from(i.paid).unwrap())
}

/// What is sent, and the client's expected verdict.
type ForgedCase = (&'static str, ChannelMessage, fn(&PeerMisbehaved) -> bool);

fn misbehaved(events: &[CoordinatorEvent], f: impl Fn(&PeerError) -> bool) -> bool {
    events
        .iter()
        .any(|e| matches!(e, CoordinatorEvent::PeerMisbehaved { error, .. } if f(error)))
}

// ================================================================== wire-level cases

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_frame_is_a_codec_error_and_closes_the_connection() {
    let chain = SimulatedChain::new();
    let seller = seller(&chain, |_, _| {}).await;
    let (ours, theirs) = tokio::io::duplex(64 * 1024);
    let node = seller.node.clone();
    let conn =
        tokio::spawn(async move { node.run_connection(theirs, Direction::Inbound, None).await });
    let mut a = Attacker::handshake(ours, true).await;
    // A length prefix far above the 1 MiB piece limit: rejected from the header alone.
    a.send_raw(&[0xff, 0xff, 0xff, 0xf0, 7]).await;
    a.expect_closed(5).await;
    let result = tokio::time::timeout(Duration::from_secs(5), conn)
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(
            result,
            Err(ConnectionError::Codec(CodecError::Decode(
                DecodeError::FrameTooLarge { .. }
            )))
        ),
        "{result:?}"
    );
    until("the peer state to go", 5, || seller.connections() == 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_message_ids_and_unrequested_pieces_are_ignored() {
    let chain = SimulatedChain::new();
    let (seller, mut a) = attacked(&chain).await;
    for id in [21u8, 99, 200, 255] {
        a.send_frame(Message::Unknown {
            id,
            payload: Bytes::from_static(b"\x00\x01\x02"),
        })
        .await;
    }
    // A piece we (the uploader) never asked for.
    a.send_frame(Message::Piece {
        index: 0,
        begin: 0,
        data: Bytes::from(vec![0xAB; BLOCK as usize]),
    })
    .await;
    // Still connected, and still a normal peer: a request starts the paid flow.
    a.send_frame(Message::Interested).await;
    a.send_frame(Message::Request(block(0, 0))).await;
    let propose = a.recv_channel(10).await;
    assert!(matches!(propose, ChannelMessage::Propose(_)));
    assert_eq!(seller.connections(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_flood_while_blocked_is_bounded_and_rejected() {
    let chain = SimulatedChain::new();
    let (mut seller, mut a) = attacked(&chain).await;
    a.send_frame(Message::Interested).await;
    // Never join the channel: everything is blocked until paid.
    let n = 2_000u32;
    for i in 0..n {
        let piece = i % (SIZE as u32 / PIECE);
        let begin = (i / (SIZE as u32 / PIECE)) % (PIECE / BLOCK) * BLOCK;
        let r = BlockRequest::new(piece, begin, BLOCK);
        a.send_frame(Message::Request(r)).await;
    }
    // Distinct requests: 64 blocks exist, so the rest are duplicates of queued ones.
    let (frames, closed) = a.collect(1_500).await;
    assert!(!closed);
    let rejects = frames
        .iter()
        .filter(|m| matches!(m, Message::Reject(_)))
        .count();
    let pieces = frames
        .iter()
        .filter(|m| matches!(m, Message::Piece { .. }))
        .count();
    assert_eq!(pieces, 0, "nothing is served unpaid");
    let usage = seller.node.inspect(|c| c.resource_usage());
    assert!(usage.max_gate_queue <= 32, "{usage:?}");
    assert!(usage.max_deferred <= 64, "{usage:?}");
    // 64 distinct blocks, 32 queued: the other 32 distinct ones are rejected (BEP 6) and
    // reported as queue overflows.
    assert!(rejects >= 32, "{rejects} rejects");
    let events = seller.drain();
    assert!(misbehaved(&events, |e| matches!(
        e,
        PeerError::QueueOverflow(_)
    )));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_over_16_kib_are_rejected_as_invalid() {
    let chain = SimulatedChain::new();
    let (mut seller, mut a) = attacked(&chain).await;
    // First a normal request so the peer is classified and gated.
    a.asks_for_a_block().await;
    let big = BlockRequest::new(1, 0, 128 * 1024);
    a.send_frame(Message::Request(big)).await;
    let reject = a.recv_until(5, |m| matches!(m, Message::Reject(_))).await;
    assert_eq!(reject, Message::Reject(big));
    let events = seller.drain();
    assert!(misbehaved(&events, |e| *e == PeerError::InvalidRequest(big)));
    assert_eq!(seller.connections(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extension_messages_from_a_peer_that_never_advertised_it_get_no_reply() {
    let chain = SimulatedChain::new();
    let seller = seller(&chain, |_, _| {}).await;
    let mut a = Attacker::handshake(tcp(seller.addr).await, true).await;
    // Learn the uploader's id, but send no extended handshake of our own.
    a.recv_until(5, |m| matches!(m, Message::Extended { id: 0, .. }))
        .await;
    for msg in [
        PseMessage::Stop { channel_id: None },
        PseMessage::Start,
        PseMessage::Message {
            message: "{}".into(),
        },
    ] {
        a.send_pse(&msg).await;
    }
    let (frames, closed) = a.collect(800).await;
    assert!(!closed);
    assert!(
        !frames
            .iter()
            .any(|m| matches!(m, Message::Extended { id, .. } if *id != 0)),
        "nothing is sent under an extension the peer did not advertise: {frames:?}"
    );
    let key = seller.node.connections()[0];
    let stats = seller.node.inspect(|c| c.peer_stats(key).unwrap());
    assert_eq!(stats.notices_received, 3);
    assert_eq!(stats.notices_sent, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deeply_nested_bencode_is_ignored_unsorted_is_read_leniently_huge_closes() {
    let chain = SimulatedChain::new();
    let seller = seller(&chain, |_, _| {}).await;
    // Deeply nested: beyond the depth limit (8), ignored; the peer stays unclassified.
    let mut a = Attacker::handshake(tcp(seller.addr).await, true).await;
    let mut deep = b"d1:x".to_vec();
    deep.extend(std::iter::repeat_n(b'l', 10_000));
    deep.extend(std::iter::repeat_n(b'e', 10_000));
    deep.push(b'e');
    a.send_frame(Message::Extended {
        id: 0,
        payload: Bytes::from(deep),
    })
    .await;
    let (_, closed) = a.collect(300).await;
    assert!(!closed, "malformed bencode is ignored, not fatal");
    let key = seller.node.connections()[0];
    assert_eq!(seller.node.inspect(|c| c.peer_class(key)), None);
    // Without a valid handshake it is classified non-paying at the handshake timeout.
    until("the handshake timeout", 5, || {
        seller.node.inspect(|c| c.peer_class(key)).is_some()
    })
    .await;
    assert!(matches!(
        seller.node.inspect(|c| c.peer_class(key)),
        Some(PeerClass::NonPaying(NonPayingReason::HandshakeTimeout))
    ));
    // Unsorted keys: read leniently (as libtorrent does), re-encoded canonically.
    let mut u = Attacker::handshake(tcp(seller.addr).await, true).await;
    let unsorted = format!(
        "d1:md22:paidStreamingExtensioni7ee10:pseAccount42:{}7:pseAuthi1e1:ai1ee",
        u.account().to_checksum(None)
    );
    u.send_frame(Message::Extended {
        id: 0,
        payload: Bytes::from(unsorted.into_bytes()),
    })
    .await;
    u.prover = Some(u.signer.clone());
    u.await_challenge(5).await;
    let account = u.account();
    until("the lenient classification", 5, || {
        seller
            .node
            .inspect(|c| c.identity(account).is_some_and(|i| i.connections == 1))
    })
    .await;
    // Huge: a 2 MiB handshake is over the frame limit: the connection is closed.
    let mut b = Attacker::handshake(tcp(seller.addr).await, true).await;
    let mut huge = (2u32 * 1024 * 1024 + 2).to_be_bytes().to_vec();
    huge.extend([20u8, 0]);
    huge.extend(std::iter::repeat_n(b'l', 64 * 1024));
    b.send_raw(&huge).await;
    b.expect_closed(5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_connects_and_sends_nothing_times_out() {
    let chain = SimulatedChain::new();
    let seller = seller(&chain, |_, n| {
        n.handshake_timeout = Duration::from_millis(500);
        n.idle_timeout = Some(Duration::from_secs(1));
    })
    .await;
    // Over TCP: not even a BitTorrent handshake.
    let mut silent = tcp(seller.addr).await;
    let started = tokio::time::Instant::now();
    let mut buf = [0u8; 1];
    let n = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::io::AsyncReadExt::read(&mut silent, &mut buf),
    )
    .await
    .expect("the uploader closes a silent connection");
    assert_eq!(n.unwrap_or(0), 0);
    assert!(started.elapsed() < Duration::from_secs(3));
    // The typed error, over a duplex stream.
    let (_ours, theirs) = tokio::io::duplex(1024);
    let r = seller
        .node
        .run_connection(theirs, Direction::Inbound, None)
        .await;
    assert!(matches!(r, Err(ConnectionError::HandshakeTimeout)), "{r:?}");
    // A handshake, then silence: classified non-paying, then dropped as idle.
    let (ours, theirs) = tokio::io::duplex(64 * 1024);
    let node = seller.node.clone();
    let conn =
        tokio::spawn(async move { node.run_connection(theirs, Direction::Inbound, None).await });
    let mut a = Attacker::handshake(ours, true).await;
    let r = tokio::time::timeout(Duration::from_secs(5), conn)
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(r, Err(ConnectionError::Idle)), "{r:?}");
    a.expect_closed(2).await;
    until("the peer state to go", 5, || seller.connections() == 0).await;
}

// ================================================================== channel cases

/// An attacker with a running channel to the uploader.
async fn funded(chain: &SimulatedChain) -> (Seller, Attacker<tokio::net::TcpStream>, B256) {
    let (seller, mut a) = attacked(chain).await;
    let id = a.open_channel(seller.account, chain).await;
    (seller, a, id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_foreign_lower_and_oversized_vouchers_credit_nothing() {
    let chain = SimulatedChain::new();
    let (mut seller, mut a, id) = funded(&chain).await;
    let s = seller.account;
    a.pay(s, 64 * 1024).await;
    seller.credits("the payment", a.account(), 64 * 1024).await;
    let before = credited(&seller, id).await;
    assert_eq!(before, 64 * 1024);
    let mallory = LocalSigner::random();
    let payer = a.signer.clone();
    let other = B256::repeat_byte(0x77);
    let msg = |v: &Voucher, as_ours: bool| {
        let mut m = VoucherMessage::from_voucher(v);
        if as_ours {
            m.channel = ChannelRef::of(&id);
        }
        ChannelMessage::Voucher(m)
    };
    let foreign = Voucher::sign(other, U256::from(500_000), &*payer).unwrap();
    let cases: [ForgedCase; 5] = [
        (
            "forged signature",
            msg(
                &Voucher::sign(id, U256::from(500_000), &mallory).unwrap(),
                false,
            ),
            |e| matches!(e, PeerMisbehaved::BadSignature { .. }),
        ),
        ("another channel's voucher", msg(&foreign, false), |e| {
            matches!(e, PeerMisbehaved::UnknownChannel(_))
        }),
        (
            "another channel's voucher, relabelled as ours",
            msg(&foreign, true),
            |e| matches!(e, PeerMisbehaved::BadSignature { .. }),
        ),
        (
            "replayed lower voucher",
            msg(
                &Voucher::sign(id, U256::from(1_000), &*payer).unwrap(),
                false,
            ),
            |e| matches!(e, PeerMisbehaved::LowerVoucher { .. }),
        ),
        (
            "voucher above the deposit",
            msg(
                &Voucher::sign(id, U256::from(DEPOSIT + 1), &*payer).unwrap(),
                false,
            ),
            |e| matches!(e, PeerMisbehaved::OverDeposit { .. }),
        ),
    ];
    for (what, data, expected) in cases {
        // Over the wire (the backend drops what the client refuses)...
        a.send_channel(s, data.clone()).await;
        // ...and the client's precise verdict on the same envelope.
        seller.refuses(what, a.account(), data, expected).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(credited(&seller, id).await, before, "nothing was credited");
    let view = seller.node.inspect(|c| c.identity(a.account()).unwrap());
    assert_eq!(view.wei_received, before);
    assert!(u128::from(view.bytes_served) <= view.wei_received);
    // The honest channel still works afterwards.
    a.pay(s, 1_000).await;
    seller
        .credits("the next genuine payment", a.account(), before + 1_000)
        .await;
    let _ = seller.drain();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_by_the_wrong_participant_is_refused_and_the_proposal_abandoned() {
    let chain = SimulatedChain::new();
    let (mut seller, mut a) = attacked(&chain).await;
    let p = a.asks_for_a_block().await;
    let id = p.fixed.channel_id();
    // Mallory signs the prefund and postfund in the payer's place (and deposits nothing).
    let mallory = LocalSigner::random();
    let sig = mallory.sign_eth_message(&B256::repeat_byte(1)).unwrap();
    let join = ChannelMessage::Join(Join {
        channel_id: id,
        prefund: sig,
        postfund: sig,
    });
    a.send_channel(seller.account, join.clone()).await;
    let bad_signature = |e: &PeerMisbehaved| matches!(e, PeerMisbehaved::BadSignature { .. });
    seller
        .refuses(
            "a join by the wrong participant",
            a.account(),
            join,
            bad_signature,
        )
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let info = seller.client.channel_info(id).await.unwrap();
    assert_eq!(info.phase, PhaseKind::Proposed, "the join was refused");
    // Unanswered: after the response timeout the proposal is abandoned (and forgotten by the
    // client), and the peer is permanently stopped.
    until("the proposal to be abandoned", 10, || {
        seller.client.channel_ids().is_empty()
    })
    .await;
    assert!(
        seller
            .drain()
            .iter()
            .any(|e| matches!(e, CoordinatorEvent::ChannelSetupFailed { .. }))
    );
    assert_eq!(chain.holdings_of(id), U256::ZERO);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_after_close_change_nothing() {
    let chain = SimulatedChain::new();
    let (seller, mut a, id) = funded(&chain).await;
    let s = seller.account;
    a.pay(s, 100_000).await;
    seller.credits("the payment", a.account(), 100_000).await;
    // Cooperative close from our side; the uploader countersigns and concludes.
    a.ch.as_mut().unwrap().close().unwrap();
    let close = a.outbound().unwrap();
    a.send_channel(s, close).await;
    let ChannelMessage::Close(c) = a.recv_channel(10).await else {
        panic!("expected the countersignature");
    };
    assert_eq!(c.amount, U256::from(100_000));
    until("the payout", 10, || balance(&chain, s) == 100_000).await;
    // Now a late voucher, a replayed close and a new join: nothing changes.
    let late = Voucher::sign(id, U256::from(900_000), &*a.signer).unwrap();
    let late = ChannelMessage::Voucher(VoucherMessage::from_voucher(&late));
    a.send_channel(s, late.clone()).await;
    a.send_channel(s, ChannelMessage::Close(c.clone())).await;
    let unexpected = |e: &PeerMisbehaved| matches!(e, PeerMisbehaved::UnexpectedInPhase { .. });
    seller
        .refuses("a voucher after the close", a.account(), late, unexpected)
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(credited(&seller, id).await, 100_000);
    assert_eq!(
        balance(&chain, s),
        100_000,
        "the payee got exactly the final amount"
    );
    assert_eq!(chain.holdings_of(id), U256::ZERO);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_challenge_by_the_payer_is_countered_with_the_best_voucher() {
    let chain = SimulatedChain::new();
    let (mut seller, mut a, id) = funded(&chain).await;
    let s = seller.account;
    a.pay(s, 300_000).await;
    seller.credits("the payment", a.account(), 300_000).await;
    // The payer goes on chain with the postfund state (turn 1: the payee gets nothing).
    let now = chain.now();
    a.ch.as_mut().unwrap().challenge(now).unwrap();
    a.drive_chain(&chain);
    assert!(chain.status_of(id).turn_num_record == 1);
    // The uploader sees it and counter-challenges at turn 2 with the voucher.
    until("the counter-challenge", 15, || {
        chain.status_of(id).turn_num_record == 2
    })
    .await;
    chain.advance_time(CHALLENGE_DURATION + 1);
    until_after_finalization(&chain, "the payout", 15, || balance(&chain, s) > 0).await;
    assert_eq!(balance(&chain, s), 300_000, "paid what it credited");
    let _ = seller.drain();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disconnect_in_the_middle_of_a_payment_loses_no_acknowledged_money() {
    let chain = SimulatedChain::new();
    let (mut seller, mut a, id) = funded(&chain).await;
    let s = seller.account;
    let payer = a.account();
    a.pay(s, 200_000).await;
    seller.credits("the first payment", payer, 200_000).await;
    // Half a frame of the next voucher, then the connection drops.
    let v =
        a.ch.as_mut()
            .unwrap()
            .send_payment(U256::from(50_000))
            .unwrap();
    let env = Envelope {
        recipient: s,
        sender: payer,
        data: ChannelMessage::Voucher(VoucherMessage::from_voucher(&v)),
    };
    let payload = PseMessage::Message {
        message: env.to_json(),
    }
    .encode();
    let mut frame = Vec::new();
    Message::Extended {
        id: a.their_pse_id.unwrap(),
        payload: Bytes::from(payload),
    }
    .encode(&mut frame)
    .unwrap();
    a.send_raw(&frame[..frame.len() / 2]).await;
    drop(a);
    // The uploader closes (idle), gets no answer, challenges with its best voucher.
    let challenged = challenging(20, Role::Payee, || seller.drain()).await;
    until_challenge_on_chain(&chain, challenged, 15).await;
    chain.advance_time(CHALLENGE_DURATION + 1);
    until_after_finalization(&chain, "the payout", 15, || balance(&chain, s) > 0).await;
    let got = balance(&chain, s);
    let credited = seller
        .node
        .inspect(|c| c.identity(payer).unwrap().wei_received);
    assert_eq!(credited, 200_000, "the torn voucher was never acknowledged");
    assert_eq!(got, credited, "paid exactly what it acknowledged");
    assert_eq!(
        balance(&chain, payer),
        DEPOSIT - 200_000,
        "the payer recovered the rest"
    );
    assert_eq!(chain.holdings_of(id), U256::ZERO);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_peers_that_open_a_channel_and_vanish_leave_nothing_behind() {
    let chain = SimulatedChain::new();
    const N: usize = 1_000;
    // Reclamation is under test here, not the creation rate limit (`identity` unit tests).
    let seller = seller(&chain, |config, _| {
        config.identity.max_channels_per_window = N as u32;
    })
    .await;
    let started = tokio::time::Instant::now();
    // In waves of 50 over duplex streams (a few over TCP), each a fresh identity.
    for wave in 0..N / 50 {
        let mut tasks = Vec::new();
        for i in 0..50 {
            let node = seller.node.clone();
            let addr = seller.addr;
            let over_tcp = wave == 0 && i < 10;
            tasks.push(tokio::spawn(async move {
                let mut a = if over_tcp {
                    let s = tcp(addr).await;
                    let mut a = Attacker::paying(s).await;
                    a.send_frame(Message::Interested).await;
                    a.send_frame(Message::Request(block(0, 0))).await;
                    let _ = a.recv_channel(20).await;
                    return;
                } else {
                    let (ours, theirs) = tokio::io::duplex(64 * 1024);
                    tokio::spawn(async move {
                        let _ = node.run_connection(theirs, Direction::Inbound, None).await;
                    });
                    Attacker::paying(ours).await
                };
                a.send_frame(Message::Interested).await;
                a.send_frame(Message::Request(block(0, 0))).await;
                // Wait for the proposal, then vanish.
                let _ = a.recv_channel(20).await;
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    }
    // Reclamation already runs during the waves (each departed identity is forgotten 4 s
    // after it left), so what is left now is at most the last few seconds' worth.
    let peak = seller.node.inspect(|c| c.resource_usage());
    assert!(peak.identities <= N, "{peak:?}");
    // Response timeout (2 s) → proposals abandoned; grace (2 s) → identities reclaimed.
    let reclaimed = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let u = seller.node.inspect(|c| c.resource_usage());
            if u.peers == 0 && u.identities == 0 && u.channels == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(
        reclaimed.is_ok(),
        "not reclaimed: {:?}",
        seller.node.inspect(|c| c.resource_usage())
    );
    until("the client's channels to be forgotten", 20, || {
        seller.client.channel_ids().is_empty()
    })
    .await;
    let u = seller.node.inspect(|c| c.resource_usage());
    assert_eq!(u.pending_proposals, 0);
    assert_eq!(u.max_outbox, 0);
    assert!(started.elapsed() < Duration::from_secs(60));
    println!(
        "{N} vanishing peers: peak {} identities, reclaimed in {:?}",
        peak.identities,
        started.elapsed()
    );
}

// ================================================================== identity

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_claiming_the_buyers_account_gets_no_service_paid_by_the_buyer() {
    let chain = SimulatedChain::new();
    let (mut seller, mut a, id) = funded(&chain).await;
    let s = seller.account;
    // Every buyer advertises its account: a stranger claims it and signs with its own key.
    let mut m = Attacker::claiming(
        tcp(seller.addr).await,
        a.account(),
        Some(Arc::new(LocalSigner::random())),
        None,
    )
    .await;
    m.send_frame(Message::Interested).await;
    m.send_frame(Message::Request(block(1, 0))).await;
    // The buyer pays for its blocks, and closes: the stranger gets none of it.
    a.pay(s, 64 * 1024).await;
    a.recv_until(10, |f| matches!(f, Message::Piece { .. }))
        .await;
    a.ch.as_mut().unwrap().close().unwrap();
    let close = a.outbound().expect("our close");
    a.send_channel(s, close).await;
    let answer = a.recv_channel(10).await;
    assert!(matches!(answer, ChannelMessage::Close(_)), "{answer:?}");
    let (frames, _) = m.collect(1_000).await;
    assert!(
        !frames.iter().any(|f| matches!(f, Message::Piece { .. })),
        "{frames:?}"
    );
    assert!(
        !frames
            .iter()
            .any(|f| matches!(f, Message::Extended { payload, .. }
            if matches!(PseMessage::decode(payload), Ok(PseMessage::Message { .. })))),
        "{frames:?}"
    );
    let mut events = Vec::new();
    while let Ok(e) = seller.events.try_recv() {
        events.push(e);
    }
    assert!(misbehaved(&events, |e| matches!(
        e,
        PeerError::BadIdentityProof
    )));
    assert!(events.iter().any(|e| matches!(
        e,
        CoordinatorEvent::PeerClassified {
            class: PeerClass::NonPaying(NonPayingReason::AuthenticationFailed),
            ..
        }
    )));
    let ident = seller.node.inspect(|c| c.identity(a.account())).unwrap();
    assert_eq!(ident.connections, 1);
    assert_eq!(ident.wei_received, 64 * 1024);
    assert_eq!(credited(&seller, id).await, 64 * 1024);
}
