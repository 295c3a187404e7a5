//! A deterministic two-coordinator pair harness and the transfers it runs.

use super::*;

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
    /// What D paid on each channel, and each channel's payout when it was closed.
    channel_totals: HashMap<ChannelId, u128>,
    closed_with: HashMap<ChannelId, u128>,
    /// Channels D closed.
    buyer_closed: Vec<ChannelId>,
    /// Channels U proposed, in order.
    proposed: Vec<ChannelId>,
    /// D learns that its channel closed only after U's next proposal (the close transaction is
    /// seen by the two sides at different times).
    buyer_learns_close_late: bool,
    held_close: Option<ChannelEvent>,
    /// Trust U grants, for the invariant checked at every step.
    trust: u64,
    /// Bytes U had served when D closed each channel, in order.
    served_at_close: Vec<u64>,
}

const UPK: PeerKey = PeerKey(10); // U's key for D
const DNK: PeerKey = PeerKey(20); // D's key for U
const CH: ChannelId = ChannelId([0xC4; 32]);

/// The `n`th channel U proposes (the first is [`CH`]).
fn nth_channel(n: usize) -> ChannelId {
    ChannelId([0xC4 + u8::try_from(n).unwrap(); 32])
}

impl Pair {
    fn new(total_blocks: u32, granularity: u64, trust: u64, pipeline: usize) -> Self {
        Self::with_deposit(total_blocks, granularity, trust, pipeline, None)
    }

    /// [`new`](Self::new), U asking for `deposit` (its default if `None`) in its proposals.
    fn with_deposit(
        total_blocks: u32,
        granularity: u64,
        trust: u64,
        pipeline: usize,
        deposit: Option<u128>,
    ) -> Self {
        let seller = keyed(0x5E);
        let buyer = keyed(0xB1);
        let mut up_cfg = CoordinatorConfig::new(seller, seller);
        up_cfg.upload.as_mut().unwrap().choke.trust = TrustPolicy::fixed(trust);
        if let Some(deposit) = deposit {
            up_cfg.upload.as_mut().unwrap().deposit = deposit;
        }
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
        let (up_id, down_id) = ([0x11; 20], [0x22; 20]);
        for (c, k, direction, ours, theirs) in [
            (&mut up, UPK, Direction::Inbound, up_id, down_id),
            (&mut down, DNK, Direction::Outbound, down_id, up_id),
        ] {
            let info = PeerInfo::new(TorrentKey(0), direction, reserved(true, false))
                .with_session([0x17; 20], ours, theirs);
            c.handle_peer_connected(now, k, info).unwrap();
        }
        let to_hs = |c: HandshakeContribution| PeerExtendedHandshake {
            pse_id: Some(2),
            pse_account: Some(c.pse_account.into_bytes()),
            outcome_address: Some(c.outcome_address.into_bytes()),
            terms: c.terms,
            asset: c.asset,
            client: None,
            auth: c.auth,
            hub: c.hub,
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
            channel_totals: HashMap::new(),
            closed_with: HashMap::new(),
            buyer_closed: Vec::new(),
            proposed: Vec::new(),
            buyer_learns_close_late: false,
            held_close: None,
            trust,
            served_at_close: Vec::new(),
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
                    let channel_id = nth_channel(self.proposed.len());
                    self.proposed.push(channel_id);
                    self.up_events
                        .push_back(ChannelEvent::Created { peer, channel_id });
                    self.down_events.push_back(ChannelEvent::Proposed {
                        channel_id,
                        payee: keyed(0x5E),
                        deposit,
                        price: None,
                        nonce,
                    });
                    self.down_events.extend(self.held_close.take());
                }
                ChannelCommand::Close { channel_id } | ChannelCommand::Challenge { channel_id } => {
                    let total = self.channel_total(channel_id);
                    self.closed_with.insert(channel_id, total);
                }
                _ => {}
            }
        }
        while let Some(cmd) = self.down.poll_channel_command() {
            match cmd {
                ChannelCommand::Join {
                    channel_id,
                    deposit,
                    ..
                } => {
                    self.up_events.push_back(ChannelEvent::Ready {
                        channel_id,
                        counterparty: keyed(0xB1),
                        role: Role::Payee,
                        deposit,
                    });
                    self.down_events.push_back(ChannelEvent::Ready {
                        channel_id,
                        counterparty: keyed(0x5E),
                        role: Role::Payer,
                        deposit,
                    });
                }
                ChannelCommand::Pay { channel_id, amount } => {
                    assert!(
                        !self.buyer_closed.contains(&channel_id),
                        "paid {amount} into {channel_id:?} after closing it"
                    );
                    self.total_paid += amount;
                    let total = self.channel_totals.entry(channel_id).or_insert(0);
                    *total += amount;
                    self.up_events.push_back(ChannelEvent::PaymentReceived {
                        channel_id,
                        delta: amount,
                        total: *total,
                    });
                }
                ChannelCommand::Close { channel_id } => {
                    // The payee's client answers the close by itself.
                    self.buyer_closed.push(channel_id);
                    let served = self.up.identity(keyed(0xB1)).map_or(0, |i| i.bytes_served);
                    self.served_at_close.push(served);
                    let total = self.channel_total(channel_id);
                    self.closed_with.insert(channel_id, total);
                    let closed = ChannelEvent::Closed {
                        channel_id,
                        payee_amount: total,
                    };
                    self.up_events.push_back(closed.clone());
                    if self.buyer_learns_close_late {
                        self.held_close = Some(closed);
                    } else {
                        self.down_events.push_back(closed);
                    }
                }
                _ => {}
            }
        }
    }

    fn channel_total(&self, channel_id: ChannelId) -> u128 {
        self.channel_totals.get(&channel_id).copied().unwrap_or(0)
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
        // U never serves more than it was paid plus its trust, gaps between channels included.
        if let Some(seen) = self.up.identity(keyed(0xB1)) {
            assert!(
                u128::from(seen.bytes_served) <= seen.wei_received + u128::from(self.trust),
                "served {} for {} wei with {} trust",
                seen.bytes_served,
                seen.wei_received,
                self.trust
            );
        }
        if !progressed && let Some(closed) = self.held_close.take() {
            // No proposal followed: D learns of the close now.
            self.down_events.push_back(closed);
            return true;
        }
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
        assert_eq!(
            p.closed_with,
            HashMap::from([(CH, p.total_paid)]),
            "closed with that payout"
        );
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

/// A buyer whose deposit covers less than the file downloads it over ONE live connection: the
/// exhausted channel is closed cooperatively with the seller paid for what it served on it, the
/// seller re-arms the connection's gate and proposes the next channel, and the download
/// completes. Both orders in which the two sides may learn of the close; with and without trust.
#[test]
fn exhausted_deposit_on_a_live_connection_continues_on_a_new_channel() {
    const DEPOSIT: u128 = 400_000;
    const GRANULARITY: u64 = 65_536;
    for (trust, late) in [(0u64, false), (0, true), (32_768, false), (32_768, true)] {
        let case = format!("trust {trust}, buyer learns the close late: {late}");
        // 64 blocks (1 MiB) at 1 wei per byte: three deposits' worth.
        let mut p = Pair::with_deposit(64, GRANULARITY, trust, 8, Some(DEPOSIT));
        p.buyer_learns_close_late = late;
        p.run();
        let total = 64 * u64::from(BLOCK);
        assert_eq!(p.received, total, "{case}: completes");
        let seen = p.up.identity(keyed(0xB1)).unwrap();
        assert_eq!(seen.bytes_served, total, "{case}");
        assert_eq!(seen.wei_received, p.total_paid, "{case}");
        assert_eq!(
            p.proposed,
            (0..3).map(nth_channel).collect::<Vec<_>>(),
            "{case}: a new channel per deposit, on the same connection"
        );
        // Every channel closed with what was paid on it; the first two paid in full.
        assert_eq!(p.closed_with, p.channel_totals, "{case}");
        for id in &p.proposed[..2] {
            assert_eq!(p.channel_totals[id], DEPOSIT, "{case}");
        }
        // The first channel paid for what the seller served up to its close (its trust
        // aside), and no more than a block's worth was left over on it.
        let served = u128::from(p.served_at_close[0]);
        assert!(
            served <= DEPOSIT + u128::from(trust),
            "{case}: served {served}"
        );
        assert!(
            DEPOSIT < served + u128::from(BLOCK),
            "{case}: served {served}"
        );
        // The buyer's loss (paid, not received) stays within its window: here none.
        let window = p.down.config().download.unwrap().window_bytes();
        assert!(
            p.total_paid <= u128::from(p.received + window),
            "{case}: paid {} for {}",
            p.total_paid,
            p.received
        );
        assert!(
            p.total_paid <= u128::from(total),
            "{case}: paid {}",
            p.total_paid
        );
        let bought = p.down.identity(keyed(0x5E)).unwrap();
        assert_eq!(bought.wei_paid, p.total_paid, "{case}");
        assert_eq!(bought.payer_channel, None, "{case}: closed on completion");
        assert_eq!(p.down.budget_used(), (0, p.total_paid), "{case}");
    }
}

/// A buyer whose deposit covers about a sixth of the file: six consecutive channels on one
/// connection, more than `max_channels_per_connection` (4), each funded, so none counts
/// against it; the download completes and every channel is paid what was served on it.
#[test]
fn six_consecutive_channels_on_one_connection() {
    const DEPOSIT: u128 = 180_000;
    let mut p = Pair::with_deposit(64, 65_536, 0, 8, Some(DEPOSIT));
    p.run();
    let total = 64 * u64::from(BLOCK);
    assert_eq!(p.received, total, "completes");
    assert_eq!(p.proposed, (0..6).map(nth_channel).collect::<Vec<_>>());
    let seen = p.up.identity(keyed(0xB1)).unwrap();
    assert_eq!(seen.bytes_served, total);
    assert_eq!(seen.wei_received, p.total_paid);
    assert_eq!(p.closed_with, p.channel_totals);
    for id in &p.proposed[..5] {
        assert_eq!(p.channel_totals[id], DEPOSIT);
    }
    assert_eq!(p.down.identity(keyed(0x5E)).unwrap().wei_paid, p.total_paid);
}
