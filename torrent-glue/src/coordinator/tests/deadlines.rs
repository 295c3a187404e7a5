//! The deadline index against a brute-force scan: random event sequences, seller and buyer
//! side, are applied to two coordinators in lockstep, one visiting only the entries its index
//! says are due and one scanning every peer and identity (the code the index replaced). Their
//! outputs must be identical, and the index must equal one rebuilt from every entry.

use proptest::prelude::*;

use super::buyer_bound::{self, Run};
use super::*;

/// Buyers on up to six connection slots, four accounts.
#[derive(Debug, Clone)]
enum SellerOp {
    /// A new connection on the slot (the old one closed first); the extended handshake only
    /// when `handshake` (otherwise it stays pending until its handshake deadline).
    Connect {
        slot: usize,
        buyer: u8,
        handshake: bool,
    },
    Handshake(usize),
    Interest(usize, bool),
    /// The connection requests a block; served blocks are reported sent.
    Request(usize, u32),
    Stop(usize),
    Start(usize),
    Disconnect(usize),
    /// The buyer's channel (after our `Create`) is created, then funded.
    Created(u8),
    Ready(u8),
    /// The buyer pays this many wei on its channel.
    Pay(u8, u128),
    /// The buyer's channel is closed.
    Closed(u8),
    LocalChoke(usize, bool),
    StopUploading,
    Advance(u64),
}

const SLOTS: usize = 6;
const BUYERS: u8 = 4;

fn seller_op() -> impl Strategy<Value = SellerOp> {
    let slot = 0..SLOTS;
    let buyer = 0..BUYERS;
    prop_oneof![
        3 => (slot.clone(), buyer.clone(), any::<bool>())
            .prop_map(|(slot, buyer, handshake)| SellerOp::Connect { slot, buyer, handshake }),
        1 => slot.clone().prop_map(SellerOp::Handshake),
        2 => (slot.clone(), any::<bool>()).prop_map(|(s, i)| SellerOp::Interest(s, i)),
        5 => (slot.clone(), 0..64u32).prop_map(|(s, i)| SellerOp::Request(s, i)),
        1 => slot.clone().prop_map(SellerOp::Stop),
        1 => slot.clone().prop_map(SellerOp::Start),
        1 => slot.clone().prop_map(SellerOp::Disconnect),
        2 => buyer.clone().prop_map(SellerOp::Created),
        2 => buyer.clone().prop_map(SellerOp::Ready),
        3 => (buyer.clone(), 1..200_000u128).prop_map(|(b, w)| SellerOp::Pay(b, w)),
        1 => buyer.prop_map(SellerOp::Closed),
        1 => (slot, any::<bool>()).prop_map(|(s, c)| SellerOp::LocalChoke(s, c)),
        1 => Just(SellerOp::StopUploading),
        4 => prop_oneof![0..3_000u64, 3_000..70_000u64].prop_map(SellerOp::Advance),
    ]
}

/// One seller coordinator and what the simulated buyers know.
struct Seller {
    h: H,
    conns: [Option<(PeerKey, u8)>; SLOTS],
    next_key: u64,
    /// Per buyer: its current channel (number, cumulative paid).
    channels: [Option<(u8, u128)>; BUYERS as usize],
    next_channel: u8,
    log: Vec<String>,
}

fn buyer_addr(b: u8) -> Address {
    addr(0xB0 + b)
}

impl Seller {
    fn new(start: Instant, scan: bool) -> Self {
        let mut h = H::new(config());
        h.now = start;
        h.c.scan_timeouts = scan;
        Self {
            h,
            conns: [None; SLOTS],
            next_key: 1,
            channels: [None; BUYERS as usize],
            next_channel: 0,
            log: Vec::new(),
        }
    }

    fn channel_id(&self, buyer: u8) -> Option<(ChannelId, u128)> {
        self.channels[usize::from(buyer)].map(|(n, paid)| (ChannelId([n; 32]), paid))
    }

    fn apply(&mut self, op: &SellerOp) {
        let now = self.h.now;
        let conn = |s: &usize| self.conns[*s];
        let result = match op {
            SellerOp::Connect {
                slot,
                buyer,
                handshake: hs,
            } => {
                if let Some((k, _)) = self.conns[*slot].take() {
                    let _ = self.h.c.handle_disconnect(now, k);
                }
                let k = PeerKey(self.next_key);
                self.next_key += 1;
                self.conns[*slot] = Some((k, *buyer));
                let r = self.h.c.handle_peer_connected(now, k, info(true, false));
                if *hs {
                    let hs = handshake(buyer_addr(*buyer), 7);
                    self.h
                        .c
                        .handle_extended_handshake(now, k, &hs)
                        .map_err(|e| format!("{e:?}"))
                } else {
                    r.map_err(|e| format!("{e:?}"))
                }
            }
            SellerOp::Handshake(s) => conn(s).map_or(Ok(()), |(k, b)| {
                let hs = handshake(buyer_addr(b), 7);
                self.h
                    .c
                    .handle_extended_handshake(now, k, &hs)
                    .map_err(|e| format!("{e:?}"))
            }),
            SellerOp::Interest(s, i) => conn(s).map_or(Ok(()), |(k, _)| {
                self.h
                    .c
                    .handle_remote_interest(now, k, *i)
                    .map_err(|e| format!("{e:?}"))
            }),
            SellerOp::Request(s, i) => conn(s).map_or(Ok(()), |(k, _)| {
                match self.h.c.handle_request(now, k, req(*i)) {
                    Ok(RequestDecision::Serve) => self
                        .h
                        .c
                        .handle_bytes_sent(now, k, req(*i), BLOCK)
                        .map_err(|e| format!("{e:?}")),
                    Ok(d) => Err(format!("{d:?}")),
                    Err(e) => Err(format!("{e:?}")),
                }
            }),
            SellerOp::Stop(s) => conn(s).map_or(Ok(()), |(k, b)| {
                let channel_id = self.channel_id(b).map(|(id, _)| id);
                self.h
                    .notice_in(k, &PseMessage::Stop { channel_id })
                    .map_err(|e| format!("{e:?}"))
            }),
            SellerOp::Start(s) => conn(s).map_or(Ok(()), |(k, _)| {
                self.h
                    .notice_in(k, &PseMessage::Start)
                    .map_err(|e| format!("{e:?}"))
            }),
            SellerOp::Disconnect(s) => self.conns[*s].take().map_or(Ok(()), |(k, _)| {
                self.h
                    .c
                    .handle_disconnect(now, k)
                    .map_err(|e| format!("{e:?}"))
            }),
            SellerOp::Created(b) => {
                self.next_channel = self.next_channel.wrapping_add(1);
                self.channels[usize::from(*b)] = Some((self.next_channel, 0));
                let (id, _) = self.channel_id(*b).expect("just set");
                self.h
                    .c
                    .handle_channel_event(
                        now,
                        ChannelEvent::Created {
                            peer: buyer_addr(*b),
                            channel_id: id,
                        },
                    )
                    .map_err(|e| format!("{e:?}"))
            }
            SellerOp::Ready(b) => self.channel_id(*b).map_or(Ok(()), |(id, _)| {
                self.h
                    .c
                    .handle_channel_event(
                        now,
                        ChannelEvent::Ready {
                            channel_id: id,
                            counterparty: buyer_addr(*b),
                            role: Role::Payee,
                            deposit: 1 << 30,
                        },
                    )
                    .map_err(|e| format!("{e:?}"))
            }),
            SellerOp::Pay(b, wei) => match self.channels[usize::from(*b)].as_mut() {
                None => Ok(()),
                Some((n, paid)) => {
                    *paid += wei;
                    let event = ChannelEvent::PaymentReceived {
                        channel_id: ChannelId([*n; 32]),
                        delta: *wei,
                        total: *paid,
                    };
                    self.h
                        .c
                        .handle_channel_event(now, event)
                        .map_err(|e| format!("{e:?}"))
                }
            },
            SellerOp::Closed(b) => {
                self.channels[usize::from(*b)]
                    .take()
                    .map_or(Ok(()), |(n, paid)| {
                        let event = ChannelEvent::Closed {
                            channel_id: ChannelId([n; 32]),
                            payee_amount: paid,
                        };
                        self.h
                            .c
                            .handle_channel_event(now, event)
                            .map_err(|e| format!("{e:?}"))
                    })
            }
            SellerOp::LocalChoke(s, c) => conn(s).map_or(Ok(()), |(k, _)| {
                self.h
                    .c
                    .handle_local_choke(now, k, *c)
                    .map_err(|e| format!("{e:?}"))
            }),
            SellerOp::StopUploading => {
                self.h.c.stop_uploading(now, None);
                Ok(())
            }
            SellerOp::Advance(ms) => {
                self.h.advance(Duration::from_millis(*ms));
                Ok(())
            }
        };
        let channel = self.h.channel();
        let engine = self.h.engine();
        let events = self.h.events();
        self.log
            .push(format!("{result:?} {channel:?} {engine:?} {events:?}"));
    }
}

/// The index equals one rebuilt from every entry, and `poll_timeout` equals the scan.
fn index_matches_scan(c: &Coordinator) -> Result<(), TestCaseError> {
    prop_assert!(c.peers.index_is_consistent(), "peer index stale");
    prop_assert!(c.identities.index_is_consistent(), "identity index stale");
    prop_assert_eq!(c.poll_timeout(), c.poll_timeout_scan());
    Ok(())
}

/// Both coordinators said and did the same, and are in the same state.
fn same(
    indexed: &Coordinator,
    scanned: &Coordinator,
    log: (&[String], &[String]),
) -> Result<(), TestCaseError> {
    prop_assert_eq!(log.0, log.1);
    prop_assert_eq!(indexed.poll_timeout(), scanned.poll_timeout());
    prop_assert_eq!(indexed.resource_usage(), scanned.resource_usage());
    prop_assert_eq!(indexed.budget_used(), scanned.budget_used());
    let mut accounts: Vec<Address> = scanned.identities.keys().copied().collect();
    accounts.sort_unstable();
    for a in accounts {
        prop_assert_eq!(indexed.identity(a), scanned.identity(a));
    }
    Ok(())
}

/// Plays `ops` (with `apply`) on two copies of one script, the first keeping the deadline
/// index, the second scanning every entry: after each step the index matches the scan and both
/// said, did and hold the same (`parts`: a script's coordinator and log).
fn index_follows_the_script<S, O>(
    (mut indexed, mut scanned): (S, S),
    ops: &[O],
    apply: impl Fn(&mut S, &O),
    parts: impl for<'a> Fn(&'a S) -> (&'a Coordinator, &'a [String]),
) -> Result<(), TestCaseError> {
    for op in ops {
        apply(&mut indexed, op);
        apply(&mut scanned, op);
        let ((indexed, indexed_log), (scanned, scanned_log)) = (parts(&indexed), parts(&scanned));
        index_matches_scan(indexed)?;
        same(indexed, scanned, (indexed_log, scanned_log))?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn seller_deadline_index_matches_a_full_scan(
        ops in prop::collection::vec(seller_op(), 1..120),
    ) {
        let start = Instant::now();
        let pair = (Seller::new(start, false), Seller::new(start, true));
        index_follows_the_script(pair, &ops, Seller::apply, |s| (&s.h.c, &s.log[..]))?;
    }

    #[test]
    fn buyer_deadline_index_matches_a_full_scan(
        ops in prop::collection::vec(buyer_bound::op(), 1..80),
    ) {
        let start = Instant::now();
        let mut scanned = Run::starting_at(start);
        scanned.h.c.scan_timeouts = true;
        let pair = (Run::starting_at(start), scanned);
        index_follows_the_script(pair, &ops, Run::apply, |r| (&r.h.c, &r.log[..]))?;
    }
}

/// The index follows deadlines that move without the entry's key changing: a pending
/// connection's handshake deadline, then its removal.
#[test]
fn a_pending_connection_wakes_at_its_handshake_deadline_and_not_after_it_leaves() {
    let mut h = H::new(config());
    let k = h.connected(1, info(true, false));
    assert_eq!(h.c.poll_timeout(), Some(h.now + Duration::from_secs(5)));
    h.c.handle_disconnect(h.now, k).unwrap();
    assert!(h.c.peers.index_is_consistent());
    assert_eq!(h.c.poll_timeout(), None);
}
