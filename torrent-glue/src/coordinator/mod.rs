//! The coordinator: web3torrent's payment flows, per peer, over any engine and any channel client.
//!
//! [`Coordinator`] is a deterministic state machine. It performs no I/O, reads no clock (every
//! input carries `now`), spawns nothing and never blocks. It sits between three parties:
//!
//! ```text
//!                     handle_*                     handle_channel_event(ChannelEvent)
//!  engine ─────────────────────────────────▶ Coordinator ◀──────────────────────────── channel client
//!         ◀─────────────────────────────────            ─────────────────────────────▶
//!              poll_engine_command()                      poll_channel_command()
//!                                        poll_event() ──▶ application (UI, logs)
//! ```
//!
//! # Calling contract
//! Method kinds follow quinn: `handle_*` feed inputs, plain verbs are application commands
//! ([`stop_uploading`](Coordinator::stop_uploading), [`close_channel`](Coordinator::close_channel),
//! [`challenge_channel`](Coordinator::challenge_channel)), `poll_*` drain outputs, and getters
//! never change state.
//!
//! 1. Create with [`Coordinator::new`]; register each torrent with
//!    [`add_torrent`](Coordinator::add_torrent) (bytes still missing; 0 when seeding).
//! 2. Add [`extended_handshake_contribution`](Coordinator::extended_handshake_contribution) to
//!    the extended handshake sent to every peer.
//! 3. Per connection, in wire order: [`handle_peer_connected`](Coordinator::handle_peer_connected),
//!    [`handle_extended_handshake`](Coordinator::handle_extended_handshake) (each one),
//!    [`handle_extension_message`](Coordinator::handle_extension_message),
//!    [`handle_request`](Coordinator::handle_request) / [`handle_cancel`](Coordinator::handle_cancel),
//!    [`handle_bytes_sent`](Coordinator::handle_bytes_sent) (exactly once per served request),
//!    [`handle_block_received`](Coordinator::handle_block_received), choke and interest changes,
//!    and finally [`handle_disconnect`](Coordinator::handle_disconnect). Per torrent:
//!    [`handle_piece_verified`](Coordinator::handle_piece_verified) /
//!    [`handle_piece_failed`](Coordinator::handle_piece_failed).
//! 4. Feed everything the channel client reports to
//!    [`handle_channel_event`](Coordinator::handle_channel_event).
//! 5. After every input (or batch), drain [`poll_engine_command`](Coordinator::poll_engine_command)
//!    and [`poll_channel_command`](Coordinator::poll_channel_command) until `None` and perform
//!    them **in order** (a START precedes the pieces it unblocks); optionally drain
//!    [`poll_event`](Coordinator::poll_event).
//! 6. Call [`handle_timeout`](Coordinator::handle_timeout) no later than
//!    [`poll_timeout`](Coordinator::poll_timeout) (or on every engine tick).
//!
//! # Flows (the seed's, per peer)
//! * **Identity.** A peer that advertises `paidStreamingExtension` and a valid `pseAccount` is
//!   *paying* once it proved that account ([`crate::identity`]: it announces `pseAuth`, we send
//!   `auth-challenge` with a fresh nonce, it answers `auth-proof`); its account is then its
//!   identity. Until then nothing paid, credited or addressed to that account reaches it; a bad
//!   proof is a strike ([`PeerError::BadIdentityProof`]) and leaves it non-paying. Peers that
//!   cannot prove (web3torrent) get the [`LegacyPolicy`]. All connections of an identity
//!   (reconnects, other torrents) share one channel per direction and one credit ledger.
//! * **Fresh channel ids.** We propose with a nonce derived from both challenges of the
//!   connection ([`crate::identity::channel_nonce`]) and join a proven payee's proposal only
//!   with such a nonce ([`DeclineReason::NotFresh`]).
//! * **Bounded cost per stranger** ([`IdentityConfig`]): one answered challenge per connection,
//!   at most `max_extended_handshakes` extended handshakes, channel proposals limited per
//!   connection and per time window ([`CoordinatorEvent::ChannelRateLimited`]), the channel
//!   work queue bounded ([`MessageDropReason::QueueFull`]), and strikes (bad proofs, bad
//!   channel signatures, excess handshakes) that close the connection at
//!   `disconnect_after_strikes`.
//! * **Uploader.** The first request of a paying peer with no channel creates one (at most one
//!   per identity, whatever the burst of requests or the number of connections); its requests
//!   wait (nothing is served before funding beyond the trust allowance), and right after the
//!   proposal the peer gets STOP naming the channel (web3torrent's order: its leecher learns
//!   the channel from that STOP); funding does not repeat it. A payment credits the connection
//!   that is waiting (oldest STOP first), which sends START and replays its queued requests.
//!   When its credit drops below the watermark, the peer is prompted to pay ahead. Credit is
//!   held per connection; credit left idle on one connection is moved to a sibling that runs
//!   out, so several connections never make the peer pay twice.
//! * **Downloader.** A proposal from a paying peer is joined if its advertised price, the deposit
//!   and our budget allow; its price and trust are then fixed for the channel: a connection
//!   that asks to be paid under other terms is not paid, and the channel is closed
//!   ([`PeerError::TermsChanged`]). STOP → pay one
//!   granularity (once per STOP; a STOP while stopped is only acked); prompt → pay ahead.
//!   Payments are sized so we never pay for more than we still need (the uploader's trust is
//!   counted); a STOP that crosses a payment still in flight waits
//!   [`DownloadConfig::stop_grace`] for START before it is paid. Whatever the uploader does,
//!   we never pay for more than it delivered plus the window
//!   ([`DownloadConfig::window_bytes`]), per identity and per channel: a payment without room
//!   waits for bytes to arrive, and an uploader that keeps asking without delivering for
//!   [`DownloadConfig::window_timeout`] is closed on ([`PeerError::AskedBeyondWindow`]). The
//!   channel is closed when every torrent it served is complete, or when the deposit runs out;
//!   the uploader's client answers the close by itself.
//! * **Notices.** Every accepted notice except `ack` is acked (web3torrent §1.3); a channel
//!   message whose recipient is not us is dropped without an ack. Nothing is ever sent to a peer
//!   that did not advertise the extension.
//! * **Unresponsive counterparty.** Channel work we start (propose, join, close) must be
//!   answered within [`LivenessConfig::response_timeout`]; each channel message from the peer
//!   restarts the clock. On expiry an unfunded proposal is abandoned and a funded channel is
//!   challenged. A channel whose counterparty has had no connection for
//!   [`LivenessConfig::idle_close_after`] is closed (and challenged if the close is not answered).
//! * **Peers without the extension** get the [`NonPayingPolicy`]: never a protocol error.
//!
//! # Where each part lives
//! This file holds the struct, its inputs (`handle_*`, application commands) and outputs
//! (`poll_*`); each concern is a sibling file: `peers.rs` (identity proofs, strikes, paying /
//! non-paying classification), `upload.rs` (request gate, choking, the payee channel and the
//! payments it receives), `download.rs` (joining proposals, answering STOP and prompt, sizing
//! payments), `budget.rs` (the downloader's budget), `lifecycle.rs` (restored, ready, closed,
//! challenged channels, failed commands, reclaimed identities), `messages.rs` (notices out,
//! channel messages in, the outbox), `state.rs` (per-peer and per-identity state),
//! `config.rs` and `events.rs` (the public configuration and events). The tests follow the
//! same split under `tests/`.

mod budget;
mod config;
mod deadlines;
mod download;
mod events;
mod lifecycle;
mod messages;
mod peers;
mod state;
#[cfg(test)]
mod tests;
mod upload;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use paid_wire::choke::{ChannelId, ChokeController, PaymentPlanner};
use paid_wire::error::UsageError as GateUsageError;
use paid_wire::message::BlockRequest;
use payment_channel::Address;
use payment_channel::sign::Signer;

pub use config::{
    CoordinatorConfig, DownloadConfig, IdentityConfig, LegacyPolicy, LivenessConfig,
    NonPayingPolicy, OverduePolicy, UploadConfig,
};
pub use events::{
    CoordinatorEvent, DeclineReason, IdentityView, MessageDropReason, NonPayingReason, PeerClass,
    PeerStats, ResourceUsage,
};

use self::budget::Budget;
use self::deadlines::{DueWalk, Lane, Timed, Timing};
use self::download::allow_bytes;
use self::state::has_open;
use self::state::{Claim, Class, Gate, Identity, Peer, PendingProposal, Phase, Torrent};
use crate::EXTENSION_NAME;
use crate::channel::{ChannelCommand, ChannelEvent, Role};
use crate::engine::{
    ChokeAuthority, DisconnectReason, EngineCommand, HandshakeContribution, PeerExtendedHandshake,
    PeerInfo, PeerKey, RequestDecision, Terms, TorrentKey, parse_account,
};
use crate::error::{ConfigError, Error, PeerError, UsageError};
use crate::identity::AUTH_VERSION;
use paid_wire::pse::PseMessage;

/// Up to how many peers and identities debug builds check the deadline index against a scan
/// on every [`Coordinator::poll_timeout`].
#[cfg(debug_assertions)]
const DEBUG_CHECK_UP_TO: usize = 256;

/// Runs the paid-streaming flows for every connection of one client. See the
/// [module docs](self) for the calling contract and the flows.
pub struct Coordinator {
    config: CoordinatorConfig,
    /// Signs our identity proofs; `None`: we cannot prove our account (peers treat us as the
    /// original web3torrent).
    signer: Option<Arc<dyn Signer>>,
    /// Secret from which our per-connection challenges are derived.
    challenge_secret: [u8; 32],
    /// When we proposed our recent channels (the overall creation rate limit).
    recent_creations: VecDeque<Instant>,
    /// Connections, with their deadlines indexed (see `deadlines.rs`).
    peers: Timed<PeerKey, Peer>,
    /// Identities, with their deadlines indexed.
    identities: Timed<Address, Identity>,
    channels: HashMap<ChannelId, (Address, Role)>,
    torrents: HashMap<TorrentKey, Torrent>,
    proposals: Vec<PendingProposal>,
    /// The downloader's budget (deposits locked and wei spent).
    budget: Budget,
    seq: u64,
    engine_out: VecDeque<EngineCommand>,
    channel_out: VecDeque<ChannelCommand>,
    events: VecDeque<CoordinatorEvent>,
    /// Tests only: `handle_timeout` visits every peer and identity (the brute-force scan the
    /// deadline index replaced), to compare the two.
    #[cfg(test)]
    scan_timeouts: bool,
}

impl std::fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coordinator")
            .field("account", &self.config.account)
            .field("signs_proofs", &self.signer.is_some())
            .field("peers", &self.peers.len())
            .field("identities", &self.identities.len())
            .field("channels", &self.channels.len())
            .finish_non_exhaustive()
    }
}

impl Coordinator {
    /// A coordinator with no peers, torrents or channels.
    pub fn new(config: CoordinatorConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let budget = Budget::new(config.download.as_ref().map_or(0, |d| d.budget));
        let timing = Timing {
            idle_close_after: config.liveness.idle_close_after,
            reclaim_grace: config.liveness.response_timeout,
        };
        Ok(Self {
            config,
            peers: Timed::new(timing),
            identities: Timed::new(timing),
            channels: HashMap::new(),
            torrents: HashMap::new(),
            proposals: Vec::new(),
            budget,
            seq: 0,
            engine_out: VecDeque::new(),
            channel_out: VecDeque::new(),
            events: VecDeque::new(),
            signer: None,
            challenge_secret: crate::identity::random_secret(),
            recent_creations: VecDeque::new(),
            #[cfg(test)]
            scan_timeouts: false,
        })
    }

    /// A coordinator that proves our account to peers with `signer` (see [`crate::identity`]):
    /// it announces `pseAuth` and answers each connection's challenge once. `signer` must sign
    /// for [`CoordinatorConfig::account`]. Without a signer ([`Coordinator::new`]) peers cannot
    /// tell us from a stranger claiming our account, so they will not pay or join us unless
    /// they trust claimed accounts ([`LegacyPolicy::TrustClaimedAccount`]).
    pub fn with_signer(
        config: CoordinatorConfig,
        signer: Arc<dyn Signer>,
    ) -> Result<Self, ConfigError> {
        if signer.address() != config.account {
            return Err(ConfigError::SignerMismatch);
        }
        let mut this = Self::new(config)?;
        this.signer = Some(signer);
        Ok(this)
    }

    /// Replaces the secret our challenges are derived from (drawn from the OS at creation).
    /// For reproducible runs (tests, fuzzing) only: a secret known to others makes our
    /// challenges predictable, and proofs for them could be collected in advance.
    pub fn set_challenge_secret(&mut self, secret: [u8; 32]) {
        self.challenge_secret = secret;
    }

    // ------------------------------------------------------------------ getters

    /// The configuration.
    pub fn config(&self) -> &CoordinatorConfig {
        &self.config
    }

    /// What to add to our extended handshake (the same for every peer).
    pub fn extended_handshake_contribution(&self) -> HandshakeContribution {
        HandshakeContribution {
            extension_name: EXTENSION_NAME,
            pse_account: self.config.account.to_checksum(None),
            outcome_address: self.config.outcome_address.to_checksum(None),
            terms: self.config.upload.as_ref().map(UploadConfig::terms),
            asset: self.config.upload.as_ref().and_then(|u| u.asset),
            auth: self.signer.as_ref().map(|_| AUTH_VERSION),
            hub: self.config.hub.clone(),
        }
    }

    /// How a connection was classified (`None` while its extended handshake is awaited, or if
    /// the key is unknown).
    pub fn peer_class(&self, peer: PeerKey) -> Option<PeerClass> {
        match self.peers.get(&peer)?.class {
            Class::Pending { .. } => None,
            Class::Paying(account) => Some(PeerClass::Paying { account }),
            Class::NonPaying(reason) => Some(PeerClass::NonPaying(reason)),
        }
    }

    /// Counters of a connection.
    pub fn peer_stats(&self, peer: PeerKey) -> Option<PeerStats> {
        self.peers.get(&peer).map(|p| p.stats)
    }

    /// The uploader-side gate of a connection, for inspection (credit, queue, counters).
    pub fn upload_gate(&self, peer: PeerKey) -> Option<&ChokeController> {
        self.peers.get(&peer)?.gate.controller()
    }

    /// The downloader-side planner of a connection, for inspection.
    pub fn download_planner(&self, peer: PeerKey) -> Option<&PaymentPlanner> {
        self.peers.get(&peer)?.planner.as_ref()
    }

    /// Whether the uploader has this connection stopped (STOP without START since).
    pub fn is_stopped_by_peer(&self, peer: PeerKey) -> bool {
        self.download_planner(peer)
            .is_some_and(PaymentPlanner::is_stopped)
    }

    /// What we know about a payment identity.
    pub fn identity(&self, account: Address) -> Option<IdentityView> {
        let i = self.identities.get(&account)?;
        Some(IdentityView {
            account,
            connections: i.live.len(),
            payee_channel: i.payee.map(|s| s.id),
            payee_channel_open: i.payee.is_some_and(|s| s.phase == Phase::Open),
            payer_channel: i.payer.map(|s| s.id),
            payer_channel_open: i.payer.is_some_and(|s| s.phase == Phase::Open),
            wei_received: i.ledger.wei_received,
            bytes_served: i.ledger.bytes_served,
            wei_paid: i.paid.wei_paid,
            bytes_paid: i.paid.bytes_paid,
            bytes_received: i.paid.bytes_received,
            credit_wei: i.ledger.bank_wei,
            debt_wei: i.ledger.debt_wei,
        })
    }

    /// Sizes of the internal collections (for monitoring, and for tests that check that what
    /// departed peers left behind is reclaimed).
    pub fn resource_usage(&self) -> ResourceUsage {
        let max = |it: &mut dyn Iterator<Item = usize>| it.max().unwrap_or(0);
        ResourceUsage {
            peers: self.peers.len(),
            identities: self.identities.len(),
            channels: self.channels.len(),
            pending_proposals: self.proposals.len(),
            max_deferred: max(&mut self.peers.values().map(|p| p.deferred.len())),
            max_gate_queue: max(&mut self
                .peers
                .values()
                .filter_map(|p| p.gate.controller())
                .map(ChokeController::queued_len)),
            max_serving: max(&mut self.peers.values().map(|p| p.serving.len())),
            max_outbox: max(&mut self.identities.values().map(|i| i.outbox.len())),
            engine_commands: self.engine_out.len(),
            channel_commands: self.channel_out.len(),
            events: self.events.len(),
        }
    }

    /// Wei locked in deposits of channels we pay on, and wei spent on closed ones.
    pub fn budget_used(&self) -> (u128, u128) {
        self.budget.used()
    }

    // ------------------------------------------------------------------ outputs

    /// The next engine command, oldest first.
    pub fn poll_engine_command(&mut self) -> Option<EngineCommand> {
        self.engine_out.pop_front()
    }

    /// The next channel command, oldest first.
    pub fn poll_channel_command(&mut self) -> Option<ChannelCommand> {
        self.channel_out.pop_front()
    }

    /// The next application notification, oldest first. Undrained events are kept, so an
    /// embedding that does not care should drain and drop them.
    pub fn poll_event(&mut self) -> Option<CoordinatorEvent> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) must next be called, if ever.
    ///
    /// O(log n) in peers and identities: their deadlines are indexed where they change.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let proposals = self.proposals.iter().map(|p| p.expires);
        let next = [
            self.peers.earliest(Lane::Wake),
            self.identities.earliest(Lane::Wake),
        ]
        .into_iter()
        .flatten()
        .chain(proposals)
        .min();
        #[cfg(debug_assertions)]
        if self.peers.len() + self.identities.len() <= DEBUG_CHECK_UP_TO {
            debug_assert_eq!(next, self.poll_timeout_scan(), "deadline index is stale");
        }
        next
    }

    /// [`poll_timeout`](Self::poll_timeout) by scanning every peer and identity: what the
    /// index must agree with.
    #[cfg(any(test, debug_assertions))]
    pub(crate) fn poll_timeout_scan(&self) -> Option<Instant> {
        let idle = self.config.liveness.idle_close_after;
        let peers = self.peers.values().flat_map(|p| {
            let pending = match p.class {
                Class::Pending { deadline } => Some(deadline),
                _ => None,
            };
            [
                pending,
                p.gate.controller().and_then(|c| c.next_deadline()),
                p.stop_retry_at,
            ]
        });
        let identities = self.identities.values().flat_map(|i| {
            let idle_at = match (i.idle_since, idle) {
                (Some(since), Some(after)) if has_open(i) => since.checked_add(after),
                _ => None,
            };
            [i.next_deadline(), idle_at]
        });
        let proposals = self.proposals.iter().map(|p| Some(p.expires));
        peers.chain(identities).chain(proposals).flatten().min()
    }

    // ------------------------------------------------------------------ torrents

    /// Registers a torrent with the number of bytes still missing (0 when seeding).
    pub fn add_torrent(&mut self, torrent: TorrentKey, remaining: u64) -> Result<(), UsageError> {
        if self.torrents.contains_key(&torrent) {
            return Err(UsageError::DuplicateTorrent(torrent));
        }
        self.torrents.insert(
            torrent,
            Torrent {
                remaining,
                received_unverified: 0,
                complete: remaining == 0,
            },
        );
        Ok(())
    }

    /// Forgets a torrent (its connections should be disconnected first).
    pub fn remove_torrent(&mut self, torrent: TorrentKey) {
        self.torrents.remove(&torrent);
    }

    /// A piece passed its hash check. When the torrent completes, channels we pay on that
    /// serve no incomplete torrent are closed.
    pub fn handle_piece_verified(
        &mut self,
        now: Instant,
        torrent: TorrentKey,
        _piece: u32,
        length: u32,
    ) {
        let Some(t) = self.torrents.get_mut(&torrent) else {
            return;
        };
        t.remaining = t.remaining.saturating_sub(u64::from(length));
        t.received_unverified = t.received_unverified.saturating_sub(u64::from(length));
        if t.remaining == 0 && !t.complete {
            t.complete = true;
            self.events
                .push_back(CoordinatorEvent::DownloadComplete { torrent });
            self.close_finished_payer_channels(now);
        }
    }

    /// A piece failed its hash check: its bytes are needed again.
    pub fn handle_piece_failed(
        &mut self,
        _now: Instant,
        torrent: TorrentKey,
        _piece: u32,
        length: u32,
    ) {
        if let Some(t) = self.torrents.get_mut(&torrent) {
            t.received_unverified = t.received_unverified.saturating_sub(u64::from(length));
        }
    }

    // ------------------------------------------------------------------ connections

    /// A connection finished its BitTorrent handshake.
    pub fn handle_peer_connected(
        &mut self,
        now: Instant,
        key: PeerKey,
        info: PeerInfo,
    ) -> Result<(), UsageError> {
        if self.peers.contains_key(&key) {
            return Err(UsageError::DuplicatePeer(key));
        }
        let seq = self.next_seq();
        let ext = info.supports_extension_protocol();
        let deadline = now
            .checked_add(self.config.liveness.handshake_timeout)
            .unwrap_or(now);
        let glue = self.config.choke_authority == ChokeAuthority::Glue;
        self.peers.insert(
            key,
            Peer {
                seq,
                info,
                class: Class::Pending { deadline },
                pse_id: None,
                handshake_seen: false,
                gate: Gate::Pending,
                retired: None,
                deferred: VecDeque::new(),
                serving: HashMap::new(),
                fed_wei: 0,
                stopped_at: None,
                prompted_at: None,
                planner: None,
                early_stop: None,
                stop_pending: None,
                stop_retry_at: None,
                stop_held: false,
                terms: Terms::default(),
                suppress_start: false,
                // BEP 3: "Connections start out choked". Under engine authority the engine
                // reports its own state.
                local_choked: glue,
                remote_choked: true,
                remote_interested: false,
                stats: PeerStats::default(),
                claim: None,
                challenge: None,
                answered_challenge: false,
                their_challenge: None,
                handshakes: 0,
                strikes: 0,
                struck_out: false,
                channels_requested: 0,
                channels_funded: 0,
                nonces_funded_past: 0,
                allowance_spent: false,
                advertised_account: None,
            },
        );
        if !ext {
            self.make_non_paying(now, key, NonPayingReason::NoExtensionProtocol);
        }
        Ok(())
    }

    /// The peer's extended handshake (every one: they are additive).
    pub fn handle_extended_handshake(
        &mut self,
        now: Instant,
        key: PeerKey,
        hs: &PeerExtendedHandshake,
    ) -> Result<(), Error> {
        let max_handshakes = self.config.identity.max_extended_handshakes;
        let peer = self.peer_mut(key)?;
        peer.handshakes = peer.handshakes.saturating_add(1);
        if peer.handshakes > max_handshakes {
            // Each one costs a decode and is kept: bounded per connection.
            return Err(self.strike(key, PeerError::TooManyHandshakes));
        }
        peer.handshake_seen = true;
        if let Some(raw) = hs.pse_account.as_deref()
            && parse_account(raw).is_some()
        {
            // Kept only in the text form (web3torrent's); the raw 20-byte form has no string to
            // echo, and the client's checksummed form is used.
            peer.advertised_account = std::str::from_utf8(raw)
                .ok()
                .filter(|_| raw.len() != 20)
                .map(str::to_owned);
        }
        let was_enabled = peer.pse_id.is_some();
        match hs.pse_id {
            // BEP 10: "Setting an extension number to zero means that the extension is not
            // supported/disabled".
            Some(0) => peer.pse_id = None,
            Some(id) => peer.pse_id = Some(id),
            None => {}
        }
        let enabled = peer.pse_id.is_some();
        match peer.class {
            Class::Pending { .. } => {
                if !enabled {
                    self.make_non_paying(now, key, NonPayingReason::NotAdvertised);
                    return Ok(());
                }
                let Some(account) = hs.pse_account.as_deref().and_then(parse_account) else {
                    self.make_non_paying(now, key, NonPayingReason::NoAccount);
                    return Ok(());
                };
                if account == self.config.account {
                    self.make_non_paying(now, key, NonPayingReason::SelfConnection);
                    self.engine_out.push_back(EngineCommand::Disconnect {
                        peer: key,
                        reason: DisconnectReason::SelfConnection,
                    });
                    return Err(self.misbehaved(key, PeerError::SelfConnection));
                }
                let claim = Claim {
                    account,
                    outcome: hs.outcome_address.as_deref().and_then(parse_account),
                    terms: hs.terms.unwrap_or_default(),
                    hub: hs.hub.clone(),
                };
                if hs.auth.is_some_and(|v| v >= AUTH_VERSION) {
                    // Paying only once it proves the account (`on_auth_proof`).
                    self.send_challenge(key, claim);
                } else {
                    match self.config.identity.legacy {
                        LegacyPolicy::TrustClaimedAccount => self.make_paying(now, key, claim),
                        _ => self.make_non_paying(now, key, NonPayingReason::Unauthenticated),
                    }
                }
            }
            Class::Paying(account) => {
                if let Some(raw) = hs.pse_account.as_deref()
                    && parse_account(raw) != Some(account)
                {
                    return Err(self.misbehaved(key, PeerError::IdentityChanged));
                }
                if let Some(ident) = self.identities.get_mut(&account) {
                    if let Some(outcome) = hs.outcome_address.as_deref().and_then(parse_account) {
                        ident.outcome = Some(outcome);
                    }
                    if let Some(terms) = hs.terms {
                        ident.terms = terms;
                    }
                }
                if let (Some(terms), Some(peer)) = (hs.terms, self.peers.get_mut(&key)) {
                    peer.terms = terms;
                }
                if enabled && !was_enabled {
                    self.flush_outbox(account);
                }
            }
            // Classification is final.
            Class::NonPaying(_) => {}
        }
        Ok(())
    }

    /// A paid-streaming message arrived (messages of other extensions are ignored).
    ///
    /// A malformed payload is ignored and reported as [`PeerError::MalformedNotice`]: no reply,
    /// no ack, the connection stays up.
    pub fn handle_extension_message(
        &mut self,
        now: Instant,
        key: PeerKey,
        extension: &str,
        payload: &[u8],
    ) -> Result<(), Error> {
        if extension != EXTENSION_NAME {
            return Ok(());
        }
        let peer = self.peer_mut(key)?;
        peer.stats.notices_received = peer.stats.notices_received.saturating_add(1);
        let account = peer.account();
        let notice = match PseMessage::decode(payload) {
            Ok(n) => n,
            Err(e) => return Err(self.misbehaved(key, PeerError::MalformedNotice(e))),
        };
        match notice {
            PseMessage::AuthChallenge { nonce } => return self.on_auth_challenge(key, nonce),
            PseMessage::AuthProof { signature } => return self.on_auth_proof(now, key, signature),
            _ => {}
        }
        let Some(account) = account else {
            // Not classified as paying: we cannot attribute anything to it.
            return Ok(());
        };
        match notice {
            PseMessage::AuthChallenge { nonce: _ } | PseMessage::AuthProof { signature: _ } => {}
            PseMessage::Ack => {}
            PseMessage::Stop {
                channel_id: channel,
            } => {
                self.send_notice(key, PseMessage::Ack);
                self.events
                    .push_back(CoordinatorEvent::Stopped { peer: key });
                if let Some(error) = self.on_remote_stop(now, key, account, channel) {
                    return Err(error.into());
                }
            }
            PseMessage::Start => {
                self.send_notice(key, PseMessage::Ack);
                if let Some(peer) = self.peers.get_mut(&key) {
                    peer.stop_retry_at = None;
                    peer.stop_held = false;
                    if let Some(planner) = peer.planner.as_mut() {
                        planner.handle_start();
                    }
                }
                if let Some(ident) = self.identities.get_mut(&account) {
                    ident.stall_deadline = None;
                }
                self.events
                    .push_back(CoordinatorEvent::Started { peer: key });
            }
            PseMessage::PermanentStop {
                channel_id: channel,
            } => {
                self.send_notice(key, PseMessage::Ack);
                if let Some(planner) = self.peers.get_mut(&key).and_then(|p| p.planner.as_mut()) {
                    planner.handle_permanent_stop(channel);
                }
                self.events
                    .push_back(CoordinatorEvent::PermanentlyStopped { peer: key });
                self.drain_planner(now, key);
            }
            PseMessage::Prompt { bytes, .. } => {
                self.send_notice(key, PseMessage::Ack);
                if let Some(error) = self.on_prompt(now, key, account, bytes) {
                    return Err(error.into());
                }
            }
            PseMessage::Message { message: json } => {
                self.on_channel_message(now, key, account, json)?
            }
            // Commands we do not know (and any added later) are acked, as web3torrent does.
            _ => {
                self.send_notice(key, PseMessage::Ack);
            }
        }
        Ok(())
    }

    /// The peer requested a block. See [`RequestDecision`] for what the engine does next.
    pub fn handle_request(
        &mut self,
        now: Instant,
        key: PeerKey,
        request: BlockRequest,
    ) -> Result<RequestDecision, UsageError> {
        self.gate_request(now, key, request, false)
    }

    /// The peer cancelled a request. A deferred one is answered (reject under BEP 6) or
    /// forgotten; one already being served is the engine's to finish or abort.
    pub fn handle_cancel(
        &mut self,
        now: Instant,
        key: PeerKey,
        request: BlockRequest,
    ) -> Result<(), UsageError> {
        let peer = self.peer_mut(key)?;
        let fast = peer.info.fast_negotiated;
        let removed = match &mut peer.gate {
            Gate::Pending => match peer.deferred.iter().position(|r| *r == request) {
                Some(pos) => {
                    peer.deferred.remove(pos);
                    true
                }
                None => false,
            },
            Gate::Credit(ctrl) => ctrl.handle_cancel(now, request),
            _ => false,
        };
        if removed {
            let was_pending = matches!(peer.gate, Gate::Pending);
            if !fast {
                self.engine_out
                    .push_back(EngineCommand::DropRequest { peer: key, request });
            } else if was_pending {
                self.engine_out
                    .push_back(EngineCommand::Reject { peer: key, request });
            }
        }
        self.drain_gate(now, key, None);
        Ok(())
    }

    /// A served request went out: `sent` bytes (0 if the engine could not send it).
    pub fn handle_bytes_sent(
        &mut self,
        now: Instant,
        key: PeerKey,
        request: BlockRequest,
        sent: u32,
    ) -> Result<(), UsageError> {
        let price = self.upload_price();
        let peer = self.peer_mut(key)?;
        let not_served = |cause| UsageError::NotBeingServed { peer: key, cause };
        if sent > request.length {
            return Err(not_served(GateUsageError::SentMoreThanRequested {
                request,
                sent,
            }));
        }
        let mut refund_wei = 0;
        match &mut peer.gate {
            Gate::Credit(ctrl) => {
                if let Err(e) = ctrl.handle_bytes_sent(now, request, sent) {
                    // A serve handed out by the gate retired when its channel closed: what it
                    // did not send goes back to the identity (it was settled as committed).
                    let retired = peer.retired.as_mut().ok_or_else(|| not_served(e.clone()))?;
                    retired
                        .handle_bytes_sent(now, request, sent)
                        .map_err(|_| not_served(e))?;
                    refund_wei = u128::from(request.length - sent).saturating_mul(price);
                    if retired.in_flight_len() == 0 {
                        peer.retired = None;
                    }
                }
            }
            _ => {
                let Some(count) = peer.serving.get_mut(&request) else {
                    return Err(not_served(GateUsageError::NotBeingServed { request }));
                };
                *count -= 1;
                if *count == 0 {
                    peer.serving.remove(&request);
                }
            }
        }
        peer.stats.bytes_served = peer.stats.bytes_served.saturating_add(u64::from(sent));
        let account = peer.account();
        if let Some(ident) = account.and_then(|a| self.identities.get_mut(&a)) {
            ident.ledger.bytes_served = ident.ledger.bytes_served.saturating_add(u64::from(sent));
            ident.ledger.add(refund_wei, 0);
        }
        self.drain_gate(now, key, None);
        if let Some(account) = account {
            self.rebalance(now, account);
        }
        Ok(())
    }

    /// `bytes` of piece payload for `request` arrived from the peer.
    pub fn handle_block_received(
        &mut self,
        now: Instant,
        key: PeerKey,
        _request: BlockRequest,
        bytes: u32,
    ) -> Result<(), UsageError> {
        let peer = self.peer_mut(key)?;
        let bytes = u64::from(bytes);
        peer.stats.bytes_received = peer.stats.bytes_received.saturating_add(bytes);
        let torrent = peer.info.torrent;
        let account = peer.account();
        if let Some(planner) = peer.planner.as_mut() {
            // Only the coordinator decides payments (window, terms): the planner makes none on
            // its own here; a STOP waiting for room is retried below.
            allow_bytes(planner, 0);
            planner.handle_bytes_received(bytes);
        }
        if let Some(t) = self.torrents.get_mut(&torrent) {
            t.received_unverified = t.received_unverified.saturating_add(bytes);
        }
        if let Some(ident) = account.and_then(|a| self.identities.get_mut(&a)) {
            ident.paid.bytes_received = ident.paid.bytes_received.saturating_add(bytes);
            ident.stall_deadline = None;
            if let Some(slot) = ident.payer.as_mut() {
                slot.bytes_received = slot.bytes_received.saturating_add(bytes);
                if bytes > 0 {
                    slot.beyond_window_since = None;
                }
            }
        }
        self.drain_planner(now, key);
        if let Some(account) = account {
            self.retry_held_stops(now, account);
        }
        Ok(())
    }

    /// The peer choked (`true`) or unchoked us.
    pub fn handle_remote_choke(
        &mut self,
        _now: Instant,
        key: PeerKey,
        choked: bool,
    ) -> Result<(), UsageError> {
        self.peer_mut(key)?.remote_choked = choked;
        Ok(())
    }

    /// The peer became interested (`true`) or not. Under [`ChokeAuthority::Glue`] an interested
    /// peer that may be served is unchoked.
    pub fn handle_remote_interest(
        &mut self,
        now: Instant,
        key: PeerKey,
        interested: bool,
    ) -> Result<(), UsageError> {
        self.peer_mut(key)?.remote_interested = interested;
        self.update_choke(now, key);
        Ok(())
    }

    /// The engine choked (`true`) or unchoked the peer ([`ChokeAuthority::Engine`] only).
    /// Choking clears the peer's waiting requests (rejected under BEP 6).
    pub fn handle_local_choke(
        &mut self,
        now: Instant,
        key: PeerKey,
        choked: bool,
    ) -> Result<(), UsageError> {
        let engine = self.config.choke_authority == ChokeAuthority::Engine;
        let peer = self.peer_mut(key)?;
        if !engine {
            return Ok(());
        }
        peer.set_local_choke(now, choked);
        self.drain_gate(now, key, None);
        Ok(())
    }

    /// The connection is gone. What its peer paid for and did not use (or used on trust) stays
    /// with the peer's identity for its other and later connections.
    pub fn handle_disconnect(&mut self, now: Instant, key: PeerKey) -> Result<(), UsageError> {
        let peer = self
            .peers
            .remove(&key)
            .ok_or(UsageError::UnknownPeer(key))?;
        self.engine_out.retain(|c| c.peer() != key);
        let Some(account) = peer.account() else {
            return Ok(());
        };
        let price = self.upload_price();
        let Some(ident) = self.identities.get_mut(&account) else {
            return Ok(());
        };
        if let Gate::Credit(ctrl) = &peer.gate {
            let sent_wei = u128::from(ctrl.stats().bytes_sent).saturating_mul(price);
            if peer.fed_wei >= sent_wei {
                ident.ledger.add(peer.fed_wei - sent_wei, 0);
            } else {
                ident.ledger.add(0, sent_wei - peer.fed_wei);
            }
        }
        if let Some(retired) = &peer.retired {
            // Its serves still out were settled as committed and will never be sent.
            let stats = retired.stats();
            let unsent = stats.bytes_committed.saturating_sub(stats.bytes_sent);
            ident
                .ledger
                .add(u128::from(unsent).saturating_mul(price), 0);
        }
        ident.live.remove(&key);
        if ident.live.is_empty() {
            ident.idle_since = Some(now);
            ident.departed_at = Some(now);
        } else if ident.ledger.bank_wei > 0
            && let Some(slot) = ident.payee.filter(|s| s.phase == Phase::Open)
        {
            let bank = std::mem::take(&mut ident.ledger.bank_wei);
            self.route_payment(now, account, slot.id, bank);
        }
        Ok(())
    }

    /// Time passed: handshake, payment, answer, idle and stall deadlines.
    ///
    /// Visits only the peers and identities with a deadline at or before `now`, in key order
    /// (as a scan of all of them would), each seeing what the visits before it changed.
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut walk = self.peers.walk_due(Lane::Visit, now);
        while let Some(key) = self.next_peer_due(&mut walk) {
            let Some(peer) = self.peers.get_mut(&key) else {
                continue;
            };
            if let Class::Pending { deadline } = peer.class
                && deadline <= now
            {
                let reason = if peer.claim.is_some() {
                    // It announced a proof and did not deliver one in time.
                    NonPayingReason::AuthenticationFailed
                } else {
                    NonPayingReason::HandshakeTimeout
                };
                self.make_non_paying(now, key, reason);
                continue;
            }
            let retry = peer.stop_retry_at.is_some_and(|at| at <= now);
            if let Some(ctrl) = peer.gate.controller_mut()
                && ctrl.next_deadline().is_some_and(|d| d <= now)
            {
                ctrl.handle_timeout(now);
                self.drain_gate(now, key, None);
            }
            if retry {
                self.retry_stop(now, key);
            }
        }

        let idle_after = self.config.liveness.idle_close_after;
        let mut walk = self.identities.walk_due(Lane::Visit, now);
        while let Some(account) = self.next_identity_due(&mut walk) {
            let Some(ident) = self.identities.get_mut(&account) else {
                continue;
            };
            let due = |d: Option<Instant>| d.is_some_and(|d| d <= now);
            if due(ident.creating) {
                self.setup_failed(now, account);
            }
            let Some(ident) = self.identities.get(&account) else {
                continue;
            };
            if let Some(slot) = ident.payee
                && due(slot.deadline)
            {
                match slot.phase {
                    Phase::Proposed => self.setup_failed(now, account),
                    _ => {
                        self.challenge(now, account, Role::Payee);
                    }
                }
            }
            if let Some(slot) = self.identities.get(&account).and_then(|i| i.payer)
                && due(slot.deadline)
            {
                self.challenge(now, account, Role::Payer);
            }
            let Some(ident) = self.identities.get_mut(&account) else {
                continue;
            };
            if due(ident.stall_deadline) {
                ident.stall_deadline = None;
                if let Some(slot) = ident.payer.filter(|s| s.phase == Phase::Open) {
                    self.events.push_back(CoordinatorEvent::Stalled {
                        account,
                        channel_id: slot.id,
                    });
                    self.close(now, account, Role::Payer);
                }
            }
            let Some(ident) = self.identities.get_mut(&account) else {
                continue;
            };
            if let (Some(since), Some(after)) = (ident.idle_since, idle_after)
                && since.checked_add(after).is_some_and(|at| at <= now)
            {
                ident.idle_since = None;
                self.close(now, account, Role::Payee);
                self.close(now, account, Role::Payer);
            }
        }
        let (expired, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.proposals)
            .into_iter()
            .partition(|p| p.expires <= now);
        self.proposals = kept;
        for p in expired {
            self.channel_out.push_back(ChannelCommand::Abandon {
                channel_id: p.channel_id,
            });
        }
        for account in self.identities_to_reclaim(now) {
            self.reclaim_identity(now, account);
        }
    }

    /// The walk's next peer with a deadline at or before its `now`.
    fn next_peer_due(&self, walk: &mut DueWalk<PeerKey>) -> Option<PeerKey> {
        #[cfg(test)]
        if self.scan_timeouts {
            return walk.scan_next(self.peers.keys().copied());
        }
        self.peers.next_due(walk)
    }

    /// The walk's next identity with a deadline at or before its `now`.
    fn next_identity_due(&self, walk: &mut DueWalk<Address>) -> Option<Address> {
        #[cfg(test)]
        if self.scan_timeouts {
            return walk.scan_next(self.identities.keys().copied());
        }
        self.identities.next_due(walk)
    }

    /// The identities whose last connection left at least a grace ago, in order.
    fn identities_to_reclaim(&self, now: Instant) -> Vec<Address> {
        #[cfg(test)]
        if self.scan_timeouts {
            let mut all: Vec<Address> = self.identities.keys().copied().collect();
            all.sort_unstable();
            return all;
        }
        self.identities.due(Lane::Reclaim, now)
    }

    // ------------------------------------------------------------------ application commands

    /// Stops serving, for good, every connection (of `torrent`, or all): paying peers get
    /// `permanent-stop` (web3torrent's `stopUploading`), everyone is choked and refused.
    pub fn stop_uploading(&mut self, now: Instant, torrent: Option<TorrentKey>) {
        let mut keys: Vec<PeerKey> = self
            .peers
            .iter()
            .filter(|(_, p)| torrent.is_none_or(|t| p.info.torrent == t))
            .map(|(k, _)| *k)
            .collect();
        keys.sort_unstable();
        for key in keys {
            let Some(peer) = self.peers.get_mut(&key) else {
                continue;
            };
            match &mut peer.gate {
                Gate::Credit(ctrl) => ctrl.handle_permanent_stop(now),
                gate => *gate = Gate::Refuse,
            }
            self.drain_gate(now, key, None);
            self.update_choke(now, key);
        }
    }

    /// Closes our channel with `account` in `role` cooperatively (if it is open). Returns
    /// whether a close was started.
    pub fn close_channel(&mut self, now: Instant, account: Address, role: Role) -> bool {
        self.close(now, account, role)
    }

    /// Challenges our channel with `account` in `role` (web3torrent's "Challenge" button).
    /// Returns whether a challenge was started.
    pub fn challenge_channel(&mut self, now: Instant, account: Address, role: Role) -> bool {
        self.challenge(now, account, role)
    }

    // ------------------------------------------------------------------ channel events

    /// Something the channel client reports.
    pub fn handle_channel_event(
        &mut self,
        now: Instant,
        event: ChannelEvent,
    ) -> Result<(), UsageError> {
        match event {
            ChannelEvent::Created { peer, channel_id } => {
                self.on_created(now, peer, channel_id);
                Ok(())
            }
            ChannelEvent::Proposed {
                channel_id,
                payee,
                deposit,
                price,
                nonce,
            } => {
                self.evaluate_proposal(now, channel_id, payee, deposit, price, nonce);
                Ok(())
            }
            ChannelEvent::Ready {
                channel_id,
                counterparty,
                role,
                deposit,
            } => {
                self.on_ready(now, channel_id, counterparty, role, deposit);
                Ok(())
            }
            ChannelEvent::PaymentReceived {
                channel_id,
                delta,
                total,
            } => self.on_payment_received(now, channel_id, delta, total),
            ChannelEvent::Outbound { to, json } => {
                self.route_outbound(to, json);
                Ok(())
            }
            ChannelEvent::Closed {
                channel_id,
                payee_amount,
            } => self.on_closed(now, channel_id, payee_amount),
            ChannelEvent::Restored {
                channel_id,
                counterparty,
                role,
                deposit,
                paid,
                state,
            } => {
                self.on_restored(now, channel_id, counterparty, role, deposit, paid, state);
                Ok(())
            }
            ChannelEvent::CommandFailed { command, reason } => {
                self.on_command_failed(now, command, reason);
                Ok(())
            }
        }
    }

    // ================================================================== internals

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    fn peer_mut(&mut self, key: PeerKey) -> Result<&mut Peer, UsageError> {
        self.peers.get_mut(&key).ok_or(UsageError::UnknownPeer(key))
    }
}
