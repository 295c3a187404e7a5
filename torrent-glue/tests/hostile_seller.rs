//! Hostile sellers against a real buyer: a `Node` (coordinator + reference peer loop) with a real
//! `payment_channel::Client` on a `SimulatedChain`, accepting connections over loopback TCP. The
//! seller is scripted frame by frame (the `support` peer) and runs its own sans-IO payee
//! `Channel`: it proposes, answers the buyer's join honestly, and then never serves a byte.
//!
//! Each case asserts the buyer's loss — what the seller is paid out after the buyer's close
//! went unanswered and its challenge was countered with the seller's best voucher — is at most
//! the buyer's window, and the typed reaction: the misbehaviour, the cooperative close, and the
//! challenge once the close is not answered. See the "Security" section of the README.

mod support;

use std::sync::Arc;
use std::time::Duration;

use paid_wire::bencode::Value;
use paid_wire::message::Message;
use paid_wire::pse::{self, PseMessage};
use payment_channel::chain::Chain;
use payment_channel::channel::{Channel, ChannelParams};
use payment_channel::message::{Envelope, Message as ChannelMessage};
use payment_channel::sign::{LocalSigner, Signer};
use payment_channel::{B256, SimulatedChain, U256};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use torrent_glue::adapter::{MemoryTorrent, Node, NodeConfig};
use torrent_glue::error::PeerReaction;
use torrent_glue::{Address, CoordinatorConfig, CoordinatorEvent, PeerError, Role, Terms};

use crate::support::{
    Attacker, CHALLENGE_DURATION, OUR_PSE_ID, Recv, balance, client_backend, content, liveness,
    ready, start_node, tcp, unbounded_buyer, until, until_after_finalization,
    until_challenge_on_chain,
};

const PIECE: u32 = 64 * 1024;
const SIZE: u64 = 4 * 1024 * 1024;
const DEPOSIT: u128 = 2 * 1024 * 1024;
const FUNDS: u128 = 1 << 40;
const GRANULARITY: u64 = 64 * 1024;
const PAY_AHEAD: u64 = 128 * 1024;
/// The buyer's requests in flight per connection, as its `DownloadConfig` counts them.
const PIPELINE: usize = 4;
const IN_FLIGHT: u64 = PIPELINE as u64 * 16 * 1024;
/// The buyer's window: 64 KiB in flight + 128 KiB paid ahead + 64 KiB per payment = 256 KiB,
/// an eighth of the deposit.
const WINDOW: u64 = IN_FLIGHT + PAY_AHEAD + GRANULARITY;

// ------------------------------------------------------------------ the honest buyer

struct Buyer {
    node: Node,
    account: Address,
    events: mpsc::UnboundedReceiver<CoordinatorEvent>,
    seen: Vec<CoordinatorEvent>,
    addr: std::net::SocketAddr,
}

impl Buyer {
    /// Whether the buyer reported an event matching `f` so far.
    fn saw(&mut self, f: impl Fn(&CoordinatorEvent) -> bool) -> bool {
        while let Ok(e) = self.events.try_recv() {
            self.seen.push(e);
        }
        self.seen.iter().any(f)
    }

    fn channel_open(&self, seller: Address) -> bool {
        self.node
            .inspect(|c| c.identity(seller).is_some_and(|i| i.payer_channel_open))
    }
}

/// A buyer of a `size`-byte torrent, listening on loopback, with its window checked.
async fn buyer(
    chain: &SimulatedChain,
    size: u64,
    tweak: impl FnOnce(&mut CoordinatorConfig),
) -> Buyer {
    buyer_as(chain, size, Arc::new(LocalSigner::random()), tweak).await
}

/// [`buyer`] with the key `signer` and an empty store (a restart that lost its store).
async fn buyer_as(
    chain: &SimulatedChain,
    size: u64,
    signer: Arc<LocalSigner>,
    tweak: impl FnOnce(&mut CoordinatorConfig),
) -> Buyer {
    let account = signer.address();
    chain.fund(account, U256::from(FUNDS)).unwrap();
    let policy = torrent_glue::test_utils::accept_any(chain);
    let (_, backend) = client_backend(chain, signer.clone(), Some(policy)).await;
    let mut config = CoordinatorConfig::new(account, account);
    config.liveness = liveness(Duration::from_secs(10));
    let down = unbounded_buyer(&mut config);
    down.granularity_bytes = GRANULARITY;
    down.max_pay_ahead_bytes = PAY_AHEAD;
    down.in_flight_bytes = IN_FLIGHT;
    // Asking without delivering for half a second, once the window is full, is misbehaving.
    down.window_timeout = Duration::from_millis(500);
    assert_eq!(down.window_bytes(), WINDOW);
    tweak(&mut config);
    let mut node_config = NodeConfig::new(*b"-TG0001-BUYER0000000");
    node_config.pipeline = PIPELINE;
    node_config.tick = Duration::from_millis(20);
    let meta = MemoryTorrent::seed(content(size), PIECE).meta().clone();
    let (node, events, addr) = start_node(
        config,
        signer,
        node_config,
        backend,
        Arc::new(MemoryTorrent::empty(meta)),
    )
    .await;
    Buyer {
        node,
        account,
        events,
        seen: Vec::new(),
        addr,
    }
}

// ------------------------------------------------------------------ the scripted seller

/// A seller connected to `buyer` as `signer`'s account, advertising `terms`.
async fn connect(
    buyer: &Buyer,
    signer: Arc<LocalSigner>,
    terms: Terms,
) -> Attacker<tokio::net::TcpStream> {
    let mut a = Attacker::paying_with(tcp(buyer.addr).await, signer, Some(terms)).await;
    // The buyer's extended handshake tells us its id for the extension.
    while a.their_pse_id.is_none() {
        assert!(
            matches!(a.recv_frame(5_000).await, Recv::Frame(_)),
            "no extended handshake from the buyer"
        );
    }
    a
}

/// A seller `signer` connected to `buyer` with web3torrent's terms, whose 1 wei/byte channel the
/// buyer joined and funded. Returns the connection and the channel.
async fn sold_channel(
    buyer: &Buyer,
    chain: &SimulatedChain,
    signer: Arc<LocalSigner>,
) -> (Attacker<tokio::net::TcpStream>, B256) {
    let mut a = connect(buyer, signer, Terms::WEB3TORRENT).await;
    let seller = a.account();
    let id = a.sell_to(buyer.account, chain, 1).await;
    until("the channel to open", 10, || buyer.channel_open(seller)).await;
    (a, id)
}

fn stop(id: B256) -> PseMessage {
    PseMessage::Stop {
        channel_id: Some(pse::ChannelId(id.0)),
    }
}

/// A pay-ahead prompt suggesting 1 MiB.
fn prompt() -> PseMessage {
    let mut data = std::collections::BTreeMap::new();
    data.insert(b"amount".to_vec(), Value::Bytes(b"1048576".to_vec()));
    data.insert(b"bytes".to_vec(), Value::Int(1 << 20));
    PseMessage::Unknown {
        command: "prompt".into(),
        data: Some(Value::Dict(data)),
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Attacker<S> {
    /// Proposes a channel to `buyer` at `price` wei/byte, waits for its join (sent once its
    /// deposit is on chain) and answers with the postfund: the channel is funded and running.
    async fn sell_to(&mut self, buyer: Address, chain: &SimulatedChain, price: u128) -> B256 {
        let ch = Channel::create(
            self.signer.clone(),
            ChannelParams {
                payer: buyer,
                deposit: U256::from(DEPOSIT),
                channel_nonce: self.next_nonce(),
                app_definition: chain.app_definition(),
                challenge_duration: CHALLENGE_DURATION,
                price: Some(U256::from(price)),
                asset: Address::ZERO,
            },
        )
        .unwrap();
        let id = ch.id();
        self.ch = Some(ch);
        let propose = self.outbound().expect("the proposal");
        self.send_channel(buyer, propose).await;
        let join = self.recv_channel(15).await;
        assert!(matches!(join, ChannelMessage::Join(_)), "{join:?}");
        self.drive_chain(chain);
        self.ch.as_mut().unwrap().handle_message(&join).unwrap();
        self.drive_chain(chain);
        let postfund = self.outbound().expect("the postfund once funded");
        self.send_channel(buyer, postfund).await;
        id
    }

    /// Reads for `millis`, crediting the buyer's vouchers to our channel. Everything else (its
    /// close in particular) is left unanswered.
    async fn take_vouchers(&mut self, millis: u64) {
        let (frames, _) = self.collect(millis).await;
        for m in frames {
            let Message::Extended { id, payload } = m else {
                continue;
            };
            if id != OUR_PSE_ID {
                continue;
            }
            let Ok(PseMessage::Message { message }) = PseMessage::decode(&payload) else {
                continue;
            };
            if let Ok(Envelope {
                data: data @ ChannelMessage::Voucher(_),
                ..
            }) = Envelope::from_json(&message)
            {
                let _ = self.ch.as_mut().unwrap().handle_message(&data);
            }
        }
    }

    /// Wei the buyer's vouchers give us so far.
    fn credited(&self) -> u128 {
        u128::try_from(self.ch.as_ref().unwrap().paid()).unwrap()
    }
}

// ------------------------------------------------------------------ the verdict

fn misbehaved(e: &CoordinatorEvent, expected: fn(&PeerError) -> bool) -> bool {
    matches!(e, CoordinatorEvent::PeerMisbehaved { error, .. } if expected(error))
}

/// The buyer paid at most its window for 0 bytes, reported `expected`, closed the channel, and
/// challenged when the close went unanswered; the seller counters with its best voucher and
/// is paid out exactly that, the buyer gets the rest of its deposit back.
async fn assert_bounded_and_closed(
    case: &str,
    buyer: &mut Buyer,
    a: &mut Attacker<tokio::net::TcpStream>,
    chain: &SimulatedChain,
    id: B256,
    expected: fn(&PeerError) -> bool,
) {
    a.take_vouchers(500).await;
    let paid = a.credited();
    assert!(
        paid <= u128::from(WINDOW),
        "{case}: paid {paid} wei for 0 bytes, window {WINDOW}"
    );
    until("the typed misbehaviour", 10, || {
        buyer.saw(|e| misbehaved(e, expected))
    })
    .await;
    let closing = CoordinatorEvent::Closing {
        account: a.account(),
        channel_id: paid_wire::ChannelId(id.0),
        role: Role::Payer,
    };
    until("the close", 10, || buyer.saw(|e| *e == closing)).await;
    // We never answer the close: after the response timeout the buyer challenges.
    let challenging = CoordinatorEvent::Challenging {
        account: a.account(),
        channel_id: paid_wire::ChannelId(id.0),
        role: Role::Payer,
    };
    until("the challenge", 10, || buyer.saw(|e| *e == challenging)).await;
    until_challenge_on_chain(chain, paid_wire::ChannelId(id.0), 10).await;
    // The worst case for the buyer: the seller counters with the best voucher it holds.
    a.drive_chain(chain);
    assert!(chain.status_of(id).turn_num_record >= 1);
    chain.advance_time(CHALLENGE_DURATION + 1);
    until_after_finalization(chain, "the payout", 20, || {
        chain.holdings_of(id) == U256::ZERO
    })
    .await;
    let loss = balance(chain, a.account());
    assert_eq!(
        loss, paid,
        "{case}: the seller is paid out its best voucher"
    );
    assert_eq!(balance(chain, buyer.account), FUNDS - loss);
    let more = buyer
        .node
        .inspect(|c| c.identity(a.account()).unwrap().wei_paid);
    assert_eq!(more, paid, "{case}: nothing was paid after the reaction");
    println!(
        "{case}: buyer lost {loss} wei for 0 bytes received (window {WINDOW} bytes at 1 wei/byte)"
    );
}

fn asked_beyond_window(e: &PeerError) -> bool {
    matches!(e, PeerError::AskedBeyondWindow { .. }) && e.reaction() == PeerReaction::CloseChannel
}

// ================================================================== cases

/// What a seller that never serves does, again and again, on its sold channel.
#[derive(Clone, Copy)]
enum Round {
    /// STOP, START at once, then look at the vouchers.
    StopStart,
    /// STOP, wait for the vouchers (past the grace period), then START.
    StopWaitStart,
    /// A pay-ahead prompt.
    Prompt,
}

/// A buyer missing `size` bytes (its config changed by `configure`) buys from a seller that
/// plays `round` until the buyer closes the channel (at most 100 rounds): it pays at most its
/// window and reacts to the misbehaviour ([`assert_bounded_and_closed`]).
async fn never_served(case: &str, size: u64, configure: fn(&mut CoordinatorConfig), round: Round) {
    let chain = SimulatedChain::new();
    let mut buyer = buyer(&chain, size, configure).await;
    let (mut a, id) = sold_channel(&buyer, &chain, Arc::new(LocalSigner::random())).await;
    for _ in 0..100 {
        match round {
            Round::StopStart => {
                a.send_pse(&stop(id)).await;
                a.send_pse(&PseMessage::Start).await;
                a.take_vouchers(50).await;
            }
            Round::StopWaitStart => {
                a.send_pse(&stop(id)).await;
                a.take_vouchers(300).await;
                a.send_pse(&PseMessage::Start).await;
            }
            Round::Prompt => {
                a.send_pse(&prompt()).await;
                a.take_vouchers(50).await;
            }
        }
        if buyer.saw(|e| matches!(e, CoordinatorEvent::Closing { .. })) {
            break;
        }
    }
    assert_bounded_and_closed(case, &mut buyer, &mut a, &chain, id, asked_beyond_window).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_start_cycling_without_serving_costs_at_most_the_window() {
    never_served("STOP/START", SIZE, |_| {}, Round::StopStart).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_without_serving_after_being_paid_for_everything_costs_at_most_the_window() {
    // 48 KiB to download: after the first payment every STOP is "covered", and paid anyway
    // once the grace period passes (the seller says it has no credit left).
    let grace = |c: &mut CoordinatorConfig| {
        c.download.as_mut().unwrap().stop_grace = Duration::from_millis(200);
    };
    never_served("STOP after grace", 48 * 1024, grace, Round::StopWaitStart).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompts_without_serving_cost_at_most_the_window() {
    never_served("prompts", SIZE, |_| {}, Round::Prompt).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_terms_on_a_new_connection_get_no_money() {
    let chain = SimulatedChain::new();
    let mut buyer = buyer(&chain, SIZE, |_| {}).await;
    let signer = Arc::new(LocalSigner::random());
    let (mut a, id) = sold_channel(&buyer, &chain, signer.clone()).await;
    // One honest-looking STOP at the agreed 1 wei/byte: one granularity.
    a.send_pse(&stop(id)).await;
    for _ in 0..100 {
        a.take_vouchers(100).await;
        if a.credited() > 0 {
            break;
        }
    }
    assert_eq!(a.credited(), u128::from(GRANULARITY));
    // Back on a new connection, asking 1000 wei per byte on the same channel.
    let pricey = Terms {
        price_per_byte: 1000,
        trust_bytes: 0,
    };
    let mut b = connect(&buyer, signer, pricey).await;
    b.ch = a.ch.take();
    b.seen_chain_events = a.seen_chain_events;
    drop(a);
    b.send_pse(&stop(id)).await;
    b.send_pse(&prompt()).await;
    assert_bounded_and_closed("new terms", &mut buyer, &mut b, &chain, id, |e| {
        matches!(
            e,
            PeerError::TermsChanged {
                advertised: Terms {
                    price_per_byte: 1000,
                    ..
                },
                ..
            }
        ) && e.reaction() == PeerReaction::CloseChannel
    })
    .await;
}

// ================================================================== identity and freshness

/// Channel messages (vouchers, closes, joins) in `frames`.
fn channel_messages(frames: &[Message]) -> Vec<ChannelMessage> {
    frames
        .iter()
        .filter_map(|m| match m {
            Message::Extended { id, payload } if *id == OUR_PSE_ID => {
                match PseMessage::decode(payload) {
                    Ok(PseMessage::Message { message }) => {
                        Envelope::from_json(&message).ok().map(|e| e.data)
                    }
                    _ => None,
                }
            }
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_claiming_the_sellers_account_gets_no_voucher() {
    let chain = SimulatedChain::new();
    let mut buyer = buyer(&chain, SIZE, |_| {}).await;
    let (mut a, id) = sold_channel(&buyer, &chain, Arc::new(LocalSigner::random())).await;
    let seller = a.account();
    // Every seller advertises its account: a stranger claims it, and cannot prove it.
    let mut m = Attacker::claiming(
        tcp(buyer.addr).await,
        seller,
        Some(Arc::new(LocalSigner::random())),
        Some(Terms::WEB3TORRENT),
    )
    .await;
    until("the stranger to be refused", 5, || {
        buyer.saw(|e| {
            matches!(
                e,
                CoordinatorEvent::PeerMisbehaved {
                    error: PeerError::BadIdentityProof,
                    ..
                }
            )
        })
    })
    .await;
    // Its STOP is not paid; the real seller's is, on the real seller's connection only.
    m.send_pse(&stop(id)).await;
    a.send_pse(&stop(id)).await;
    a.take_vouchers(1_500).await;
    assert_eq!(a.credited(), u128::from(GRANULARITY));
    let (frames, _) = m.collect(500).await;
    assert!(channel_messages(&frames).is_empty(), "{frames:?}");
    assert_eq!(
        buyer
            .node
            .inspect(|c| c.identity(seller).map(|i| i.connections)),
        Some(1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_proposal_to_a_buyer_without_its_store_is_refused_and_nothing_deposited() {
    let chain = SimulatedChain::new();
    let key = Arc::new(LocalSigner::random());
    let first = buyer_as(&chain, SIZE, key.clone(), |_| {}).await;
    let seller = Arc::new(LocalSigner::random());
    let (a, id) = sold_channel(&first, &chain, seller.clone()).await;
    let old_nonce = a.ch.as_ref().unwrap().fixed_part().channel_nonce;
    let held = ready(chain.handle(key.address()).holdings(Address::ZERO, id)).unwrap();
    assert_eq!(held, U256::from(DEPOSIT));
    // The buyer restarts with the same key and an empty store; the seller replays the old
    // proposal (same participants, nonce, app: the same channel id) on a new connection.
    let mut second = buyer_as(&chain, SIZE, key.clone(), |_| {}).await;
    let balance_before = balance(&chain, key.address());
    let mut b = connect(&second, seller.clone(), Terms::WEB3TORRENT).await;
    let replay = Channel::create(
        seller.clone(),
        ChannelParams {
            payer: key.address(),
            deposit: U256::from(DEPOSIT),
            channel_nonce: old_nonce,
            app_definition: chain.app_definition(),
            challenge_duration: CHALLENGE_DURATION,
            price: Some(U256::from(1u8)),
            asset: Address::ZERO,
        },
    )
    .unwrap();
    assert_eq!(replay.id(), id);
    b.ch = Some(replay);
    let propose = b.outbound().expect("the proposal");
    b.send_channel(key.address(), propose).await;
    let (frames, _) = b.collect(2_000).await;
    assert!(
        !channel_messages(&frames)
            .iter()
            .any(|m| matches!(m, ChannelMessage::Join(_))),
        "{frames:?}"
    );
    // Nothing deposited, nothing joined.
    assert_eq!(
        ready(chain.handle(key.address()).holdings(Address::ZERO, id)).unwrap(),
        U256::from(DEPOSIT)
    );
    assert_eq!(balance(&chain, key.address()), balance_before);
    assert!(!second.saw(|e| matches!(e, CoordinatorEvent::Joining { .. })));
    assert!(!second.channel_open(seller.address()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_extended_handshakes_are_bounded() {
    let chain = SimulatedChain::new();
    let mut buyer = buyer(&chain, SIZE, |_| {}).await;
    let mut a = connect(&buyer, Arc::new(LocalSigner::random()), Terms::WEB3TORRENT).await;
    // Each with junk extension names: none is kept, and past the limit the connection goes.
    for i in 0..50u32 {
        let mut hs = paid_wire::extended::ExtendedHandshake::new();
        for j in 0..100u32 {
            hs.m.insert(format!("junk-{i}-{j}"), 1 + (j % 200) as u8);
        }
        // The node may close the connection while we are still writing.
        if futures_util::SinkExt::send(&mut a.wire, hs.to_message())
            .await
            .is_err()
        {
            break;
        }
    }
    a.expect_closed(5).await;
    assert!(buyer.saw(|e| {
        matches!(
            e,
            CoordinatorEvent::PeerMisbehaved {
                error: PeerError::TooManyHandshakes,
                ..
            }
        )
    }));
    until("the connection to go", 5, || {
        buyer.node.inspect(|c| c.resource_usage().peers) == 0
    })
    .await;
}

/// The seller proposes, the buyer joins and deposits, and the seller never sends its postfund:
/// the buyer challenges with the prefund both signed (which pays it everything) once the seller
/// has not answered for the response timeout, and gets its whole deposit back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postfund_never_sent_costs_the_buyer_nothing() {
    let chain = SimulatedChain::new();
    let mut buyer = buyer(&chain, SIZE, |_| {}).await;
    let mut a = connect(&buyer, Arc::new(LocalSigner::random()), Terms::WEB3TORRENT).await;
    let ch = Channel::create(
        a.signer.clone(),
        ChannelParams {
            payer: buyer.account,
            deposit: U256::from(DEPOSIT),
            channel_nonce: a.next_nonce(),
            app_definition: chain.app_definition(),
            challenge_duration: CHALLENGE_DURATION,
            price: Some(U256::from(1u8)),
            asset: Address::ZERO,
        },
    )
    .unwrap();
    let id = ch.id();
    a.ch = Some(ch);
    let propose = a.outbound().expect("the proposal");
    a.send_channel(buyer.account, propose).await;
    let join = a.recv_channel(15).await;
    assert!(matches!(join, ChannelMessage::Join(_)), "{join:?}");
    assert_eq!(chain.holdings_of(id), U256::from(DEPOSIT), "deposited");
    // No postfund, ever. The buyer challenges once the response timeout has passed.
    let challenging = CoordinatorEvent::Challenging {
        account: a.account(),
        channel_id: paid_wire::ChannelId(id.0),
        role: Role::Payer,
    };
    until("the challenge", 15, || buyer.saw(|e| *e == challenging)).await;
    until_challenge_on_chain(&chain, paid_wire::ChannelId(id.0), 10).await;
    chain.advance_time(CHALLENGE_DURATION + 1);
    until_after_finalization(&chain, "the refund", 20, || {
        chain.holdings_of(id) == U256::ZERO
    })
    .await;
    assert_eq!(balance(&chain, a.account()), 0, "the seller got nothing");
    assert_eq!(
        balance(&chain, buyer.account),
        FUNDS,
        "the buyer recovered its whole deposit"
    );
    assert_eq!(
        buyer
            .node
            .inspect(|c| c.identity(a.account()).map_or(0, |i| i.wei_paid)),
        0,
        "nothing was paid on a channel that never ran"
    );
}
