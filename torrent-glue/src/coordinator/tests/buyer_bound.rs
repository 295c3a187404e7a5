//! The buyer's bound: whatever the uploader does (STOP and START in any order, prompts,
//! reconnects, several connections, new terms), we never pay for more than what we received
//! plus the window, per identity and per channel; terms are fixed per channel.

use proptest::prelude::*;

use super::*;
use crate::error::PeerReaction;

/// 50 000 bytes per payment, at most 100 000 bytes paid ahead, 50 000 bytes of requests in
/// flight: a window of 200 000 bytes, a fifth of the 1 000 000 wei deposit of [`downloader`].
fn bounded() -> CoordinatorConfig {
    let mut c = buyer_config(50_000);
    let d = c.download.as_mut().unwrap();
    d.max_pay_ahead_bytes = 100_000;
    d.in_flight_bytes = 50_000;
    c
}

/// The window of [`bounded`], in bytes.
const WINDOW: u64 = 200_000;

fn paid(cmds: &[ChannelCommand]) -> u128 {
    pays(cmds).iter().sum()
}

fn asked_beyond_window(events: &[CoordinatorEvent]) -> bool {
    events.iter().any(|e| {
        matches!(
            e,
            CoordinatorEvent::PeerMisbehaved {
                error: PeerError::AskedBeyondWindow { .. },
                ..
            }
        )
    })
}

/// Plays `round` `n` times (given the round's number); returns the channel commands and the
/// events it caused.
fn rounds(
    h: &mut H,
    n: usize,
    mut round: impl FnMut(&mut H, usize),
) -> (Vec<ChannelCommand>, Vec<CoordinatorEvent>) {
    let (mut cmds, mut events) = (Vec::new(), Vec::new());
    for i in 0..n {
        round(h, i);
        cmds.extend(h.channel());
        events.extend(h.events());
    }
    (cmds, events)
}

/// A downloader of [`bounded`] missing `remaining` bytes whose seller sends STOP `n` times,
/// `then` played after each (given the seller's connection): the channel commands and the
/// events it caused, and the channel.
fn stops(
    remaining: u64,
    n: usize,
    mut then: impl FnMut(&mut H, PeerKey),
) -> (Vec<ChannelCommand>, Vec<CoordinatorEvent>, ChannelId) {
    let (mut h, k, _, id) = downloader(bounded(), remaining);
    let (cmds, events) = rounds(&mut h, n, |h, _| {
        let _ = h.try_stop(k, id);
        then(h, k);
    });
    (cmds, events, id)
}

/// The typed reaction to a seller that asks again without delivering: it was reported, the
/// channel was closed cooperatively, and challenged once the close went unanswered.
fn closed_then_challenged(cmds: &[ChannelCommand], events: &[CoordinatorEvent], id: ChannelId) {
    assert!(asked_beyond_window(events), "{events:?}");
    let close = cmds
        .iter()
        .position(|c| *c == ChannelCommand::Close { channel_id: id });
    let challenge = cmds
        .iter()
        .position(|c| *c == ChannelCommand::Challenge { channel_id: id });
    assert!(close.is_some() && challenge > close, "{cmds:?}");
}

/// The buyer paid at most the window (for 0 bytes received), then closed and challenged.
/// Returns what it paid.
fn window_then_closed(cmds: &[ChannelCommand], events: &[CoordinatorEvent], id: ChannelId) -> u128 {
    let paid = paid(cmds);
    assert!(paid <= u128::from(WINDOW), "paid {paid} wei for 0 bytes");
    closed_then_challenged(cmds, events, id);
    paid
}

#[test]
fn the_window_is_in_flight_plus_pay_ahead_plus_one_granularity() {
    let d = bounded().download.unwrap();
    assert_eq!(d.window_bytes(), WINDOW);
    let d = DownloadConfig {
        pay_ahead: false,
        ..d
    };
    assert_eq!(d.window_bytes(), 100_000, "no pay-ahead: not counted");
    let d = DownloadConfig::default();
    assert_eq!(
        d.window_bytes(),
        256 * 1024 + 1024 * 1024 + 256 * 1024,
        "on by default: 16 blocks in flight + 1 MiB ahead + 256 KiB"
    );
}

#[test]
fn stop_start_cycling_without_delivery_pays_at_most_the_window() {
    let (cmds, events, id) = stops(10_000_000, 50, |h, k| {
        let _ = h.notice_in(k, &PseMessage::Start);
        h.advance(Duration::from_secs(3));
    });
    let paid = window_then_closed(&cmds, &events, id);
    assert_eq!(paid, u128::from(WINDOW), "up to the window, no further");
}

#[test]
fn stop_without_serving_after_being_paid_for_everything_pays_at_most_the_window() {
    // 30 000 bytes still needed: every STOP after the first is "covered" by what we paid, and is
    // forced after the grace period (the uploader says it has no credit left).
    let (cmds, events, id) = stops(30_000, 50, |h, k| {
        h.advance(Duration::from_secs(3));
        let _ = h.notice_in(k, &PseMessage::Start);
    });
    window_then_closed(&cmds, &events, id);
}

#[test]
fn repeated_stops_without_start_pay_once() {
    let (cmds, _, _) = stops(10_000_000, 20, |h, _| h.advance(Duration::from_secs(3)));
    assert_eq!(pays(&cmds), vec![50_000]);
}

#[test]
fn prompts_without_serving_pay_at_most_the_window() {
    let (mut h, k, _, id) = downloader(bounded(), 10_000_000);
    let (cmds, events) = rounds(&mut h, 50, |h, _| {
        let _ = h.prompt(k, 75_000);
        h.advance(Duration::from_secs(3));
    });
    window_then_closed(&cmds, &events, id);
}

#[test]
fn reconnect_loops_pay_at_most_the_window() {
    let (mut h, k, seller, id) = downloader(bounded(), 10_000_000);
    h.c.handle_disconnect(h.now, k).unwrap();
    let (cmds, events) = rounds(&mut h, 38, |h, round| {
        let k = h.uploader(2 + round as u64, seller);
        let _ = h.try_stop(k, id);
        h.c.handle_disconnect(h.now, k).unwrap();
        h.advance(Duration::from_secs(3));
    });
    window_then_closed(&cmds, &events, id);
}

#[test]
fn several_connections_share_one_window() {
    let (mut h, k1, seller, id) = downloader(bounded(), 10_000_000);
    let k2 = h.uploader(2, seller);
    let k3 = h.uploader(3, seller);
    let (cmds, _) = rounds(&mut h, 20, |h, _| {
        for k in [k1, k2, k3] {
            let _ = h.try_stop(k, id);
            let _ = h.notice_in(k, &PseMessage::Start);
        }
        h.advance(Duration::from_secs(3));
    });
    let paid = paid(&cmds);
    assert!(paid <= u128::from(WINDOW), "paid {paid} wei for 0 bytes");
}

#[test]
fn an_honest_uploader_that_delivers_is_paid_as_before() {
    // Delivery makes room in the window: a long transfer is paid in full, without a reaction.
    let (mut h, k, _, id) = downloader(bounded(), 10_000_000);
    let mut cmds = Vec::new();
    for _ in 0..19 {
        h.stop_in(k, id);
        let bought = paid(&h.channel());
        cmds.push(ChannelCommand::Pay {
            channel_id: id,
            amount: bought,
        });
        h.notice_in(k, &PseMessage::Start).unwrap();
        h.c.handle_block_received(h.now, k, req(0), u32::try_from(bought).unwrap())
            .unwrap();
    }
    assert_eq!(paid(&cmds), 19 * 50_000);
    assert!(!asked_beyond_window(&h.events()));
}

/// A downloader of [`bounded`] whose four prompted payments filled the window, nothing
/// delivered yet.
fn window_filled() -> (H, PeerKey, ChannelId) {
    let (mut h, k, _, id) = downloader(bounded(), 10_000_000);
    for _ in 0..4 {
        h.prompt(k, 1).unwrap();
    }
    assert_eq!(paid(&h.channel()), u128::from(WINDOW));
    (h, k, id)
}

#[test]
fn a_stop_held_by_the_window_is_paid_once_bytes_arrive() {
    // Prompts filled the window; the uploader then stops us while its blocks are in flight.
    let (mut h, k, id) = window_filled();
    h.c.handle_block_received(h.now, k, req(0), 20_000).unwrap();
    h.stop_in(k, id);
    assert!(pays(&h.channel()).is_empty(), "no room: held");
    // Its blocks arrive: room for one granularity.
    h.c.handle_block_received(h.now, k, req(1), 30_000).unwrap();
    assert_eq!(pays(&h.channel()), vec![50_000]);
    assert!(!asked_beyond_window(&h.events()));
}

#[test]
fn asks_without_delivery_are_tolerated_for_the_window_timeout() {
    // An honest uploader at the edge of the window: its STOP crosses our pay-ahead, its START
    // and a prompt arrive before the blocks it then serves.
    let (mut h, k, id) = window_filled();
    for _ in 0..3 {
        h.stop_in(k, id);
        h.notice_in(k, &PseMessage::Start).unwrap();
        h.prompt(k, 1).unwrap();
        h.advance(Duration::from_secs(3));
    }
    assert!(!asked_beyond_window(&h.events()));
    h.c.handle_block_received(h.now, k, req(0), 50_000).unwrap();
    h.stop_in(k, id);
    assert_eq!(pays(&h.channel()), vec![50_000], "delivery made room");
    // Asking again and again with nothing delivered for the window timeout (10 s) is not.
    h.notice_in(k, &PseMessage::Start).unwrap();
    h.prompt(k, 1).unwrap();
    h.advance(Duration::from_secs(9));
    h.prompt(k, 1).unwrap();
    assert!(!asked_beyond_window(&h.events()));
    h.advance(Duration::from_secs(1));
    let err = h.prompt(k, 1).unwrap_err();
    assert!(matches!(
        err,
        Error::Peer(PeerError::AskedBeyondWindow {
            channel_id,
            paid_bytes: 250_000,
            received_bytes: 50_000,
            window_bytes: WINDOW,
        }) if channel_id == id
    ));
    assert_eq!(h.channel(), vec![ChannelCommand::Close { channel_id: id }]);
}

#[test]
fn new_terms_on_a_new_connection_get_no_money() {
    let (mut h, k, seller, id) = downloader(bounded(), 10_000_000);
    h.stop_in(k, id);
    assert_eq!(pays(&h.channel()), vec![50_000]);
    h.c.handle_block_received(h.now, k, req(0), 50_000).unwrap();
    h.c.handle_disconnect(h.now, k).unwrap();
    h.events();
    // It comes back asking 1000 wei per byte on the same channel.
    let pricey = Terms {
        price_per_byte: 1000,
        trust_bytes: 0,
    };
    let k2 = h.seller_with_terms(2, seller, pricey);
    // A connection on the agreed terms is paid, at the agreed price, even beside it.
    let k3 = h.uploader(3, seller);
    h.stop_in(k3, id);
    assert_eq!(pays(&h.channel()), vec![50_000]);
    let err = h.try_stop(k2, id).unwrap_err();
    let agreed = Terms::WEB3TORRENT;
    let expected = PeerError::TermsChanged {
        channel_id: id,
        agreed,
        advertised: pricey,
    };
    assert_eq!(err, Error::Peer(expected.clone()));
    assert_eq!(expected.reaction(), PeerReaction::CloseChannel);
    // Nothing under other terms; the channel is closed (a new proposal is checked anew), and
    // challenged if the close is not answered.
    assert_eq!(h.channel(), vec![ChannelCommand::Close { channel_id: id }]);
    for k in [k2, k3] {
        let _ = h.notice_in(k, &PseMessage::Start);
        let _ = h.try_stop(k, id);
        let _ = h.prompt(k, 1);
    }
    assert!(pays(&h.channel()).is_empty());
    h.advance(Duration::from_secs(21));
    assert_eq!(
        h.channel(),
        vec![ChannelCommand::Challenge { channel_id: id }]
    );
}

#[test]
fn terms_changed_mid_connection_get_no_money() {
    let (mut h, k, seller, id) = downloader(bounded(), 10_000_000);
    let mut hs = handshake(seller, 3);
    hs.terms = Some(Terms {
        price_per_byte: 1,
        trust_bytes: 5_000_000,
    });
    h.c.handle_extended_handshake(h.now, k, &hs).unwrap();
    let err = h.try_stop(k, id).unwrap_err();
    assert!(matches!(err, Error::Peer(PeerError::TermsChanged { .. })));
    assert_eq!(h.channel(), vec![ChannelCommand::Close { channel_id: id }]);
}

/// A downloader whose payer channel `[7; 32]` with the seller `0x5E` was found in the store
/// after a restart (100 000 of its 1 000 000 wei paid), its price not stored.
fn restored_downloader() -> (H, Address, [u8; 32]) {
    let mut h = H::downloading(bounded(), 10_000_000);
    let seller = addr(0x5E);
    let id = [7; 32];
    h.restore(
        id,
        seller,
        Role::Payer,
        1_000_000,
        100_000,
        RestoredState::Open,
    );
    (h, seller, id)
}

#[test]
fn a_restored_channel_is_paid_only_within_the_price_cap() {
    let (mut h, seller, id) = restored_downloader();
    // Its price was not stored: the seller returns advertising 1000 wei per byte.
    let pricey = Terms {
        price_per_byte: 1000,
        trust_bytes: 0,
    };
    let k = h.seller_with_terms(1, seller, pricey);
    h.channel();
    let err = h.try_stop(k, ChannelId(id)).unwrap_err();
    assert!(matches!(
        err,
        Error::Peer(PeerError::PriceAboveCap {
            price: 1000,
            max: 1,
            ..
        })
    ));
    assert_eq!(
        h.channel(),
        vec![ChannelCommand::Close {
            channel_id: ChannelId(id)
        }],
        "nothing above our 1 wei/byte cap; closed"
    );
}

#[test]
fn a_restored_channel_takes_the_terms_of_the_first_connection_within_the_cap() {
    let (mut h, seller, id) = restored_downloader();
    let k = h.uploader(1, seller);
    h.channel();
    h.stop_in(k, ChannelId(id));
    assert_eq!(pays(&h.channel()), vec![50_000]);
    // Fixed now: other terms are refused even within the cap.
    let k2 = h.seller_with_terms(
        2,
        seller,
        Terms {
            price_per_byte: 1,
            trust_bytes: 1,
        },
    );
    assert!(matches!(
        h.try_stop(k2, ChannelId(id)),
        Err(Error::Peer(PeerError::TermsChanged { .. }))
    ));
}

#[test]
fn a_seller_closed_on_for_misbehaviour_gets_no_new_deposit() {
    let (mut h, k, seller, id) = downloader(bounded(), 10_000_000);
    for _ in 0..10 {
        let _ = h.try_stop(k, id);
        let _ = h.notice_in(k, &PseMessage::Start);
        h.advance(Duration::from_secs(3));
    }
    h.ev(ChannelEvent::Closed {
        channel_id: id,
        payee_amount: u128::from(WINDOW),
    });
    h.channel();
    h.events();
    h.proposed([10; 32], seller);
    h.abandons(
        [10; 32],
        "a proposal of a seller that misbehaved is declined",
    );
    assert!(h.events().contains(&CoordinatorEvent::ProposalDeclined {
        channel_id: ChannelId([10; 32]),
        payee: seller,
        reason: DeclineReason::Misbehaved
    }));
}

// ====================================================================== property

/// What a hostile (or honest) uploader does, on one of three connection slots.
#[derive(Debug, Clone)]
pub(super) enum Op {
    Stop(usize),
    Start(usize),
    Prompt(usize, u64),
    /// Piece bytes delivered on the connection.
    Deliver(usize, u32),
    Disconnect(usize),
    /// A new connection on the slot (the old one, if any, is closed first) with these terms.
    Reconnect(usize, u128, u64),
    /// A new extended handshake on the connection with these terms.
    Rehandshake(usize, u128, u64),
    Advance(u64),
    /// The channel is closed (by the uploader, or answered) and the uploader proposes a new one.
    Settle,
}

pub(super) fn op() -> impl Strategy<Value = Op> {
    let slot = 0..3usize;
    let price = prop_oneof![Just(1u128), Just(2), Just(1000)];
    let trust = prop_oneof![Just(0u64), Just(30_000), Just(10_000_000)];
    prop_oneof![
        4 => slot.clone().prop_map(Op::Stop),
        3 => slot.clone().prop_map(Op::Start),
        2 => (slot.clone(), 0..200_000u64).prop_map(|(s, b)| Op::Prompt(s, b)),
        3 => (slot.clone(), 0..70_000u32).prop_map(|(s, b)| Op::Deliver(s, b)),
        1 => slot.clone().prop_map(Op::Disconnect),
        1 => (slot.clone(), price.clone(), trust.clone())
            .prop_map(|(s, p, t)| Op::Reconnect(s, p, t)),
        1 => (slot, price, trust).prop_map(|(s, p, t)| Op::Rehandshake(s, p, t)),
        2 => (0..5_000u64).prop_map(Op::Advance),
        1 => Just(Op::Settle),
    ]
}

/// The buyer's side of what happened, from the coordinator's outputs.
#[derive(Debug, Default)]
struct Ledger {
    /// The channel in use, with the price fixed when it was joined.
    current: Option<(ChannelId, u128)>,
    next_channel: u8,
    /// Per channel: price, wei paid, bytes received while it was ours.
    channels: HashMap<ChannelId, (u128, u128, u64)>,
    received: u64,
    /// The terms of the latest handshake (what a new proposal is checked against).
    advertised: Terms,
}

pub(super) struct Run {
    pub(super) h: H,
    seller: Address,
    conns: [Option<PeerKey>; 3],
    next_key: u64,
    ledger: Ledger,
    /// Every output collected, in order (to compare two runs).
    pub(super) log: Vec<String>,
}

impl Run {
    fn new() -> Self {
        Self::starting_at(Instant::now())
    }

    /// A run whose clock starts at `start` (two runs compared step by step share it).
    pub(super) fn starting_at(start: Instant) -> Self {
        let mut config = bounded();
        config.download.as_mut().unwrap().max_price_per_byte = 2;
        let mut h = H::downloading(config, 100_000_000);
        h.now = start;
        let mut r = Self {
            h,
            seller: addr(0x5E),
            conns: [None; 3],
            next_key: 1,
            ledger: Ledger::default(),
            log: Vec::new(),
        };
        r.connect(0, Terms::WEB3TORRENT);
        r.propose();
        r
    }

    fn connect(&mut self, slot: usize, terms: Terms) {
        self.disconnect(slot);
        let key = self.next_key;
        self.next_key += 1;
        let k = self.h.seller_with_terms(key, self.seller, terms);
        self.ledger.advertised = terms;
        self.conns[slot] = Some(k);
    }

    fn disconnect(&mut self, slot: usize) {
        if let Some(k) = self.conns[slot].take() {
            self.h.c.handle_disconnect(self.h.now, k).unwrap();
        }
    }

    /// The seller proposes a channel; joined channels become ready at once.
    fn propose(&mut self) {
        self.ledger.next_channel += 1;
        let id = [self.ledger.next_channel; 32];
        self.h.proposed(id, self.seller);
        self.collect();
        if self.ledger.current.is_some_and(|(c, _)| c == ChannelId(id)) {
            self.h.ready(id, self.seller, Role::Payer, 1_000_000);
        }
    }

    fn collect(&mut self) {
        for cmd in self.h.channel() {
            self.log.push(format!("{cmd:?}"));
            match cmd {
                ChannelCommand::Join { channel_id, .. } => {
                    let price = self.ledger.advertised.price_per_byte;
                    self.ledger.current = Some((channel_id, price));
                    self.ledger.channels.insert(channel_id, (price, 0, 0));
                }
                ChannelCommand::Pay { channel_id, amount } => {
                    let c = self.ledger.channels.get_mut(&channel_id).unwrap();
                    c.1 += amount;
                }
                _ => {}
            }
        }
        let engine = self.h.engine();
        let events = self.h.events();
        self.log.push(format!("{engine:?} {events:?}"));
    }

    pub(super) fn apply(&mut self, op: &Op) {
        let id = self.ledger.current.map(|(c, _)| c);
        let conn = |slot: &usize| self.conns[*slot];
        match op {
            Op::Stop(s) => {
                if let Some(k) = conn(s) {
                    let _ = self.h.notice_in(k, &PseMessage::Stop { channel_id: id });
                }
            }
            Op::Start(s) => {
                if let Some(k) = conn(s) {
                    let _ = self.h.notice_in(k, &PseMessage::Start);
                }
            }
            Op::Prompt(s, bytes) => {
                if let Some(k) = conn(s) {
                    let n = PseMessage::Prompt {
                        bytes: *bytes,
                        amount: u128::from(*bytes),
                    };
                    let _ = self.h.notice_in(k, &n);
                }
            }
            Op::Deliver(s, bytes) => {
                if let Some(k) = conn(s) {
                    self.h
                        .c
                        .handle_block_received(self.h.now, k, req(0), *bytes)
                        .unwrap();
                    self.ledger.received += u64::from(*bytes);
                    if let Some((c, _)) = self.ledger.current {
                        self.ledger.channels.get_mut(&c).unwrap().2 += u64::from(*bytes);
                    }
                }
            }
            Op::Disconnect(s) => self.disconnect(*s),
            Op::Reconnect(s, price, trust) => self.connect(
                *s,
                Terms {
                    price_per_byte: *price,
                    trust_bytes: *trust,
                },
            ),
            Op::Rehandshake(s, price, trust) => {
                if let Some(k) = conn(s) {
                    let terms = Terms {
                        price_per_byte: *price,
                        trust_bytes: *trust,
                    };
                    let mut hs = handshake(self.seller, 3);
                    hs.terms = Some(terms);
                    self.h
                        .c
                        .handle_extended_handshake(self.h.now, k, &hs)
                        .unwrap();
                    self.ledger.advertised = terms;
                }
            }
            Op::Advance(ms) => self.h.advance(Duration::from_millis(*ms)),
            Op::Settle => {
                if let Some((c, _)) = self.ledger.current.take() {
                    let paid = self.ledger.channels[&c].1;
                    self.h.ev(ChannelEvent::Closed {
                        channel_id: c,
                        payee_amount: paid,
                    });
                }
                self.collect();
                self.propose();
            }
        }
        self.collect();
    }

    /// paid ≤ price × (received + window), per channel (in wei) and per identity (in bytes).
    fn check(&self) -> Result<(), TestCaseError> {
        let mut bytes_paid = 0u128;
        for (id, (price, paid, received)) in &self.ledger.channels {
            let bound = price * u128::from(received + WINDOW);
            prop_assert!(
                *paid <= bound,
                "channel {:?}: paid {paid} > {price} × ({received} + {WINDOW})",
                id.0[0]
            );
            prop_assert_eq!(paid % price, 0);
            bytes_paid += paid / price;
        }
        let bound = u128::from(self.ledger.received + WINDOW);
        prop_assert!(
            bytes_paid <= bound,
            "identity: paid for {bytes_paid} bytes > {} received + {WINDOW}",
            self.ledger.received
        );
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn paid_never_exceeds_received_plus_the_window(ops in prop::collection::vec(op(), 1..80)) {
        let mut run = Run::new();
        run.check()?;
        for op in &ops {
            run.apply(op);
            run.check()?;
        }
    }
}
