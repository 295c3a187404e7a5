//! The coordinator: web3torrent's payment flows, per peer, over any engine and any channel client.
//!
//! [`Coordinator`] is a deterministic state machine. It performs no I/O, reads no clock (every
//! input carries `now`), spawns nothing and never blocks. It sits between three parties:
//!
//! ```text
//!            EngineHooks::on_* / handle_*            handle_channel_event(ChannelEvent)
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
//!   wait, and once the channel is funded the peer gets STOP. A payment credits the connection
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

mod config;
mod events;
pub(crate) mod notice;
mod state;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use paid_wire::choke::{
    Action, BlockedPolicy, ChannelId, ChokeConfig, ChokeController, PayReason, PayerAction,
    PayerConfig, PaymentPlanner, PeerMisbehaviour, PromptPolicy, RequestOutcome, StopOutcome,
    TrustPolicy,
};
use paid_wire::message::BlockRequest;
use payment_channel::Address;
use payment_channel::sign::{Signature, Signer};

pub use config::{
    CoordinatorConfig, DownloadConfig, IdentityConfig, LegacyPolicy, LivenessConfig,
    NonPayingPolicy, OverduePolicy, UploadConfig,
};
pub use events::{
    CoordinatorEvent, DeclineReason, IdentityView, MessageDropReason, NonPayingReason, PeerClass,
    PeerStats, ResourceUsage,
};

use self::notice::{MAX_NOTICE_LEN, Notice};
use self::state::{Claim, Class, Gate, Identity, Peer, PendingProposal, Phase, Slot, Torrent};
use crate::EXTENSION_NAME;
use crate::channel::{ChannelCommand, ChannelEvent, FailedCommand, RestoredState, Role};
use crate::engine::{
    ChokeAuthority, DisconnectReason, EngineCommand, EngineHooks, HandshakeContribution,
    PeerExtendedHandshake, PeerInfo, PeerKey, RequestDecision, Terms, TorrentKey, parse_account,
};
use crate::error::{ConfigError, Error, PeerError, UsageError};
use crate::identity::{AUTH_VERSION, ProofContext};

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
    peers: HashMap<PeerKey, Peer>,
    identities: HashMap<Address, Identity>,
    channels: HashMap<ChannelId, (Address, Role)>,
    torrents: HashMap<TorrentKey, Torrent>,
    proposals: Vec<PendingProposal>,
    budget_reserved: u128,
    budget_spent: u128,
    seq: u64,
    engine_out: VecDeque<EngineCommand>,
    channel_out: VecDeque<ChannelCommand>,
    events: VecDeque<CoordinatorEvent>,
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
        Ok(Self {
            config,
            peers: HashMap::new(),
            identities: HashMap::new(),
            channels: HashMap::new(),
            torrents: HashMap::new(),
            proposals: Vec::new(),
            budget_reserved: 0,
            budget_spent: 0,
            seq: 0,
            engine_out: VecDeque::new(),
            channel_out: VecDeque::new(),
            events: VecDeque::new(),
            signer: None,
            challenge_secret: crate::identity::random_secret(),
            recent_creations: VecDeque::new(),
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
        (self.budget_reserved, self.budget_spent)
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
    pub fn poll_timeout(&self) -> Option<Instant> {
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
                deferred: VecDeque::new(),
                serving: HashMap::new(),
                fed_wei: 0,
                stopped_at: None,
                prompted_at: None,
                planner: None,
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
            // Kept only when it is the text form (web3torrent's); the raw 20-byte form has no
            // string to echo, and the checksummed form is used.
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
                };
                if hs.auth.is_some_and(|v| v >= AUTH_VERSION) {
                    // Paying only once it proves the account (`on_auth_proof`).
                    self.send_challenge(key, claim);
                } else {
                    match self.config.identity.legacy {
                        LegacyPolicy::TrustClaimedAccount => {
                            self.make_paying(now, key, claim.account, claim.outcome, claim.terms)
                        }
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
        let notice = match Notice::decode(payload) {
            Ok(n) => n,
            Err(e) => return Err(self.misbehaved(key, PeerError::MalformedNotice(e))),
        };
        match notice {
            Notice::AuthChallenge(nonce) => return self.on_auth_challenge(key, nonce),
            Notice::AuthProof(signature) => return self.on_auth_proof(now, key, signature),
            _ => {}
        }
        let Some(account) = account else {
            // Not classified as paying: we cannot attribute anything to it.
            return Ok(());
        };
        match notice {
            Notice::AuthChallenge(_) | Notice::AuthProof(_) => {}
            Notice::Ack => {}
            Notice::Stop(channel) => {
                self.send_notice(key, Notice::Ack);
                self.events
                    .push_back(CoordinatorEvent::Stopped { peer: key });
                if let Some(error) = self.on_remote_stop(now, key, account, channel) {
                    return Err(error.into());
                }
            }
            Notice::Start => {
                self.send_notice(key, Notice::Ack);
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
            Notice::PermanentStop(channel) => {
                self.send_notice(key, Notice::Ack);
                if let Some(planner) = self.peers.get_mut(&key).and_then(|p| p.planner.as_mut()) {
                    planner.handle_permanent_stop(channel);
                }
                self.events
                    .push_back(CoordinatorEvent::PermanentlyStopped { peer: key });
                self.drain_planner(now, key);
            }
            Notice::Prompt { bytes, .. } => {
                self.send_notice(key, Notice::Ack);
                if let Some(error) = self.on_prompt(now, key, account, bytes) {
                    return Err(error.into());
                }
            }
            Notice::Message(json) => self.on_channel_message(now, key, account, json)?,
            Notice::Unknown(_) => {
                self.send_notice(key, Notice::Ack);
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
        let peer = self.peer_mut(key)?;
        let not_served = |detail| UsageError::NotBeingServed {
            peer: key,
            request,
            detail,
        };
        if sent > request.length {
            return Err(not_served("more bytes than requested"));
        }
        match &mut peer.gate {
            Gate::Credit(ctrl) => ctrl
                .handle_bytes_sent(now, request, sent)
                .map_err(|_| not_served("no outstanding serve"))?,
            _ => {
                let Some(count) = peer.serving.get_mut(&request) else {
                    return Err(not_served("no outstanding serve"));
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
        peer.local_choked = choked;
        if let Some(ctrl) = peer.gate.controller_mut() {
            if choked {
                ctrl.handle_choke(now);
            } else {
                ctrl.handle_unchoke(now);
            }
        }
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
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut keys: Vec<PeerKey> = self.peers.keys().copied().collect();
        keys.sort_unstable();
        for key in keys {
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

        let mut accounts: Vec<Address> = self.identities.keys().copied().collect();
        accounts.sort_unstable();
        let idle_after = self.config.liveness.idle_close_after;
        for account in accounts {
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
        let mut accounts: Vec<Address> = self.identities.keys().copied().collect();
        accounts.sort_unstable();
        for account in accounts {
            self.reclaim_identity(now, account);
        }
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

    fn upload_price(&self) -> u128 {
        self.config
            .upload
            .as_ref()
            .map_or(1, |u| u.choke.price_per_byte)
            .max(1)
    }

    /// Forgets an identity with nothing left to remember: no connection, no channel (or one
    /// being created), no queued message, and no money or bytes ever accounted to it. Identities cost an attacker
    /// nothing to mint, so without this a stream of short-lived peers would grow the map
    /// without bound; an identity that was served on trust or paid anything is kept (its trust
    /// must not be granted again). It is kept for the response timeout after its last
    /// connection closed, so a quick reconnect finds its queued messages.
    fn reclaim_identity(&mut self, now: Instant, account: Address) {
        let Some(i) = self.identities.get(&account) else {
            return;
        };
        let grace = self.config.liveness.response_timeout;
        let departed = i
            .departed_at
            .is_some_and(|since| since.checked_add(grace).is_some_and(|at| at <= now));
        let empty = departed
            && i.live.is_empty()
            && i.creating.is_none()
            && i.payee.is_none()
            && i.payer.is_none()
            && i.stall_deadline.is_none()
            && i.outbox.is_empty()
            && i.ledger == state::Ledger::default()
            && i.paid == state::PayerLedger::default();
        if empty {
            self.identities.remove(&account);
        }
    }

    /// [`misbehaved`](Self::misbehaved), counted as a strike: at the limit the connection is
    /// closed ([`DisconnectReason::Strikes`]).
    fn strike(&mut self, key: PeerKey, error: PeerError) -> Error {
        let limit = self.config.identity.disconnect_after_strikes;
        if let Some(peer) = self.peers.get_mut(&key) {
            peer.strikes = peer.strikes.saturating_add(1);
            if limit.is_some_and(|l| peer.strikes >= l) && !peer.struck_out {
                peer.struck_out = true;
                self.engine_out.push_back(EngineCommand::Disconnect {
                    peer: key,
                    reason: DisconnectReason::Strikes,
                });
            }
        }
        self.misbehaved(key, error)
    }

    // ------------------------------------------------------------------ identity proofs

    /// Sends our challenge for this connection (once) and remembers what it claims.
    fn send_challenge(&mut self, key: PeerKey, claim: Claim) {
        let secret = self.challenge_secret;
        let Some(peer) = self.peers.get_mut(&key) else {
            return;
        };
        peer.claim = Some(claim);
        if peer.challenge.is_some() {
            return;
        }
        // Unpredictable without the secret, distinct per connection (`seq` never repeats).
        let nonce = crate::identity::challenge_nonce(&secret, peer.seq);
        peer.challenge = Some(nonce);
        self.send_notice(key, Notice::AuthChallenge(nonce));
    }

    /// The peer challenges us: answer once per connection, if we can sign.
    fn on_auth_challenge(&mut self, key: PeerKey, nonce: [u8; 32]) -> Result<(), Error> {
        let Some(signer) = self.signer.clone() else {
            // We announced no `pseAuth`: nothing to answer with.
            return Ok(());
        };
        let peer = self.peer_mut(key)?;
        if peer.answered_challenge {
            // One signature per connection, whatever the peer sends.
            return Err(self.misbehaved(key, PeerError::RepeatedChallenge));
        }
        if peer.pse_id.is_none() {
            return Ok(());
        }
        peer.answered_challenge = true;
        peer.their_challenge = Some(nonce);
        let ctx = ProofContext {
            nonce,
            info_hash: peer.info.info_hash,
            challenger_peer_id: peer.info.remote_peer_id,
            prover_peer_id: peer.info.local_peer_id,
        };
        if let Ok(signature) = crate::identity::prove(signer.as_ref(), &ctx) {
            self.send_notice(key, Notice::AuthProof(signature.to_rsv()));
        }
        Ok(())
    }

    /// The peer answers our challenge: it becomes paying as the account it proved, or it is
    /// non-paying for good and earns a strike.
    fn on_auth_proof(
        &mut self,
        now: Instant,
        key: PeerKey,
        signature: [u8; 65],
    ) -> Result<(), Error> {
        let peer = self.peer_mut(key)?;
        let (Class::Pending { .. }, Some(claim), Some(nonce)) =
            (peer.class, peer.claim, peer.challenge)
        else {
            if matches!(peer.class, Class::Paying(_)) {
                // Proven already: a repeat changes nothing.
                return Ok(());
            }
            return Err(self.strike(key, PeerError::BadIdentityProof));
        };
        let ctx = ProofContext {
            nonce,
            info_hash: peer.info.info_hash,
            challenger_peer_id: peer.info.local_peer_id,
            prover_peer_id: peer.info.remote_peer_id,
        };
        let proven = Signature::from_rsv(&signature)
            .is_ok_and(|sig| crate::identity::verify(&ctx, claim.account, &sig));
        if !proven {
            self.make_non_paying(now, key, NonPayingReason::AuthenticationFailed);
            return Err(self.strike(key, PeerError::BadIdentityProof));
        }
        self.make_paying(now, key, claim.account, claim.outcome, claim.terms);
        Ok(())
    }

    fn misbehaved(&mut self, key: PeerKey, error: PeerError) -> Error {
        self.events.push_back(CoordinatorEvent::PeerMisbehaved {
            peer: key,
            error: error.clone(),
        });
        Error::Peer(error)
    }

    /// Sends a notice if the peer advertised the extension; returns whether it was sent.
    fn send_notice(&mut self, key: PeerKey, notice: Notice) -> bool {
        let Some(peer) = self.peers.get_mut(&key) else {
            return false;
        };
        let payload = notice.encode();
        let Some(id) = peer.pse_id.filter(|_| payload.len() <= MAX_NOTICE_LEN) else {
            // Never send an extension message to a peer that did not advertise it (libtorrent
            // and rqbit disconnect).
            peer.stats.notices_suppressed = peer.stats.notices_suppressed.saturating_add(1);
            return false;
        };
        peer.stats.notices_sent = peer.stats.notices_sent.saturating_add(1);
        if notice == Notice::Ack {
            peer.stats.acks_sent = peer.stats.acks_sent.saturating_add(1);
        }
        self.engine_out.push_back(EngineCommand::SendExtended {
            peer: key,
            extension: EXTENSION_NAME,
            peer_ext_id: id,
            payload: Bytes::from(payload),
        });
        true
    }

    // ------------------------------------------------------------------ classification

    fn make_paying(
        &mut self,
        now: Instant,
        key: PeerKey,
        account: Address,
        outcome: Option<Address>,
        terms: Terms,
    ) {
        let ident = self
            .identities
            .entry(account)
            .or_insert_with(|| Identity::new(terms));
        ident.terms = terms;
        if outcome.is_some() {
            ident.outcome = outcome;
        }
        if ident.live.is_empty() {
            // Back after an absence (or a restart of either side): what we last sent on our
            // channels with it may have been lost with the old connection.
            for slot in [ident.payee, ident.payer].into_iter().flatten() {
                if slot.phase != Phase::Challenging {
                    self.channel_out.push_back(ChannelCommand::Resend {
                        channel_id: slot.id,
                    });
                }
            }
        }
        ident.live.insert(key);
        ident.idle_since = None;
        ident.departed_at = None;
        let payee_open = ident.payee.filter(|s| s.phase == Phase::Open).map(|s| s.id);
        let payer_open = ident.payer.filter(|s| s.phase == Phase::Open).map(|s| s.id);

        let gate = match &self.config.upload {
            None => Gate::Open,
            Some(up) => {
                let choke = self.identity_choke_config(up, account, key);
                ChokeController::new(choke).map_or(Gate::Refuse, |c| Gate::Credit(Box::new(c)))
            }
        };
        let planner = self.config.download.and_then(|d| {
            PaymentPlanner::new(PayerConfig {
                price_per_byte: terms.price_per_byte,
                granularity_bytes: d.granularity_bytes,
                pay_ahead: d.pay_ahead,
                budget_wei: None,
                // The coordinator's window bounds payments per identity and per channel.
                max_unreceived_bytes: None,
            })
            .ok()
        });
        let Some(peer) = self.peers.get_mut(&key) else {
            return;
        };
        peer.class = Class::Paying(account);
        peer.gate = gate;
        peer.planner = planner;
        peer.terms = terms;
        let fast = peer.info.fast_negotiated;
        let choked = peer.local_choked;
        if let Some(ctrl) = peer.gate.controller_mut() {
            ctrl.set_fast_negotiated(fast);
            if choked {
                ctrl.handle_choke(now);
            }
            if let Some(id) = payee_open {
                // The channel is open: the new connection uses it at once.
                let _ = ctrl.handle_channel_ready(now, id);
            }
        }
        if let (Some(planner), Some(id)) = (peer.planner.as_mut(), payer_open) {
            planner.handle_channel_ready(id);
        }
        self.events.push_back(CoordinatorEvent::PeerClassified {
            peer: key,
            class: PeerClass::Paying { account },
        });
        self.drain_gate(now, key, None);
        if let Some(id) = payee_open
            && let Some(ident) = self.identities.get_mut(&account)
            && ident.ledger.bank_wei > 0
        {
            let bank = std::mem::take(&mut ident.ledger.bank_wei);
            self.route_payment(now, account, id, bank);
        }
        self.flush_outbox(account);
        self.retry_proposals(now, account);
        self.replay_deferred(now, key);
        self.update_choke(now, key);
    }

    /// The uploader's per-connection gate config, with the identity's trust: what closed
    /// connections used on trust, and what live ones hold, is not granted again.
    fn identity_choke_config(
        &self,
        up: &UploadConfig,
        account: Address,
        key: PeerKey,
    ) -> ChokeConfig {
        let mut choke = up.choke.clone();
        let price = choke.price_per_byte.max(1);
        if let Some(ident) = self.identities.get(&account) {
            let debt = u64::try_from(ident.ledger.debt_wei.div_ceil(price)).unwrap_or(u64::MAX);
            let held: u64 = ident
                .live
                .iter()
                .filter(|k| **k != key)
                .filter_map(|k| self.peers.get(k)?.gate.controller())
                .map(ChokeController::trust_allowance)
                .fold(0, u64::saturating_add);
            let used = debt.saturating_add(held);
            choke.trust.initial_bytes = choke.trust.initial_bytes.saturating_sub(used);
            choke.trust.max_bytes = choke.trust.max_bytes.saturating_sub(used);
        }
        choke
    }

    fn make_non_paying(&mut self, now: Instant, key: PeerKey, reason: NonPayingReason) {
        let policy = self.config.non_paying;
        let upload = self.config.upload.clone();
        let Some(peer) = self.peers.get_mut(&key) else {
            return;
        };
        let fast = peer.info.fast_negotiated;
        peer.class = Class::NonPaying(reason);
        let mut announce = Vec::new();
        peer.gate = match (upload, policy) {
            (None, _) => Gate::Open,
            (Some(_), NonPayingPolicy::Refuse) => Gate::Refuse,
            (Some(up), NonPayingPolicy::FreeAllowance { bytes }) => {
                let config = ChokeConfig {
                    fast_negotiated: fast,
                    blocked: BlockedPolicy::RefuseImmediately,
                    trust: TrustPolicy::fixed(bytes),
                    serve_trust_before_channel: true,
                    prompt: None::<PromptPolicy>,
                    payment_timeout: None,
                    ..up.choke
                };
                ChokeController::new(config).map_or(Gate::Refuse, |c| Gate::Credit(Box::new(c)))
            }
            (Some(_), NonPayingPolicy::AllowedFastPreview) if fast => {
                announce = peer.info.allowed_fast.clone();
                Gate::Preview(peer.info.allowed_fast.iter().copied().collect())
            }
            (Some(_), _) => Gate::Refuse,
        };
        let choked = peer.local_choked;
        if let Some(ctrl) = peer.gate.controller_mut()
            && choked
        {
            ctrl.handle_choke(now);
        }
        for piece in announce {
            self.engine_out
                .push_back(EngineCommand::AllowedFast { peer: key, piece });
        }
        self.events.push_back(CoordinatorEvent::PeerClassified {
            peer: key,
            class: PeerClass::NonPaying(reason),
        });
        self.replay_deferred(now, key);
        self.update_choke(now, key);
    }

    fn replay_deferred(&mut self, now: Instant, key: PeerKey) {
        let deferred = match self.peers.get_mut(&key) {
            Some(p) => std::mem::take(&mut p.deferred),
            None => return,
        };
        for request in deferred {
            let _ = self.gate_request(now, key, request, true);
        }
    }

    // ------------------------------------------------------------------ choking

    /// Whether a peer may be served at all right now (ignoring credit of paying peers).
    fn servable(peer: &Peer) -> bool {
        match &peer.gate {
            Gate::Open | Gate::Pending => true,
            Gate::Credit(c) => {
                !c.is_permanently_stopped()
                    && (matches!(peer.class, Class::Paying(_)) || c.credit() > 0)
            }
            Gate::Refuse | Gate::Preview(_) => false,
        }
    }

    /// Under glue authority: unchoke an interested servable peer, choke an unservable one.
    fn update_choke(&mut self, now: Instant, key: PeerKey) {
        if self.config.choke_authority != ChokeAuthority::Glue {
            return;
        }
        let Some(peer) = self.peers.get_mut(&key) else {
            return;
        };
        let servable = Self::servable(peer);
        let choke = if !servable {
            true
        } else if peer.remote_interested {
            false
        } else {
            return;
        };
        if peer.local_choked == choke {
            return;
        }
        peer.local_choked = choke;
        if let Some(ctrl) = peer.gate.controller_mut() {
            if choke {
                ctrl.handle_choke(now);
            } else {
                ctrl.handle_unchoke(now);
            }
        }
        self.engine_out.push_back(if choke {
            EngineCommand::Choke { peer: key }
        } else {
            EngineCommand::Unchoke { peer: key }
        });
        self.drain_gate(now, key, None);
    }

    // ------------------------------------------------------------------ uploader

    fn gate_request(
        &mut self,
        now: Instant,
        key: PeerKey,
        request: BlockRequest,
        replay: bool,
    ) -> Result<RequestDecision, UsageError> {
        let max_deferred = self.config.max_deferred_requests;
        let max_block = self
            .config
            .upload
            .as_ref()
            .map_or(paid_wire::choke::DEFAULT_MAX_BLOCK_LEN, |u| {
                u.choke.max_block_len
            });
        let peer = self.peer_mut(key)?;
        let refuse = if peer.info.fast_negotiated {
            RequestDecision::Reject
        } else {
            RequestDecision::Drop
        };
        let decision = match &mut peer.gate {
            Gate::Open => RequestDecision::Serve,
            Gate::Pending => {
                if peer.deferred.contains(&request) {
                    RequestDecision::Defer
                } else if peer.deferred.len() < max_deferred {
                    peer.deferred.push_back(request);
                    RequestDecision::Defer
                } else {
                    refuse
                }
            }
            Gate::Refuse => refuse,
            Gate::Preview(pieces) => {
                if pieces.contains(&request.index)
                    && request.length > 0
                    && request.length <= max_block
                {
                    RequestDecision::Serve
                } else {
                    refuse
                }
            }
            Gate::Credit(ctrl) => {
                let (decision, misbehaviour) = match ctrl.handle_request(now, request) {
                    Ok(RequestOutcome::Served) => (RequestDecision::Serve, None),
                    Ok(RequestOutcome::Rejected(_)) => (RequestDecision::Reject, None),
                    Ok(RequestOutcome::Dropped(_)) => (RequestDecision::Drop, None),
                    Ok(_) => (RequestDecision::Defer, None),
                    Err(e) => (refuse, Some(misbehaviour_error(&e, request))),
                };
                if decision == RequestDecision::Defer {
                    peer.stats.requests_deferred = peer.stats.requests_deferred.saturating_add(1);
                }
                let exhausted = matches!(peer.class, Class::NonPaying(_))
                    && matches!(decision, RequestDecision::Reject | RequestDecision::Drop);
                if let Some(error) = misbehaviour {
                    let _ = self.misbehaved(key, error);
                }
                let intercept = (!replay).then_some((request, decision));
                self.drain_gate(now, key, intercept);
                if replay && decision == RequestDecision::Drop {
                    self.engine_out
                        .push_back(EngineCommand::DropRequest { peer: key, request });
                }
                if exhausted {
                    self.update_choke(now, key);
                }
                return Ok(decision);
            }
        };
        if decision == RequestDecision::Serve {
            *peer.serving.entry(request).or_insert(0) += 1;
        }
        if decision == RequestDecision::Defer {
            peer.stats.requests_deferred = peer.stats.requests_deferred.saturating_add(1);
        }
        if replay {
            let command = match decision {
                RequestDecision::Serve => Some(EngineCommand::Serve { peer: key, request }),
                RequestDecision::Reject => Some(EngineCommand::Reject { peer: key, request }),
                RequestDecision::Drop => Some(EngineCommand::DropRequest { peer: key, request }),
                _ => None,
            };
            self.engine_out.extend(command);
        }
        Ok(decision)
    }

    /// Performs the queued actions of a connection's gate. `intercept` is the request whose
    /// `Serve`/`Reject` the caller returns as a [`RequestDecision`] instead of a command.
    fn drain_gate(
        &mut self,
        now: Instant,
        key: PeerKey,
        mut intercept: Option<(BlockRequest, RequestDecision)>,
    ) {
        let send_prompts = self.config.upload.as_ref().is_some_and(|u| u.send_prompts);
        let on_overdue = self
            .config
            .upload
            .as_ref()
            .map_or(OverduePolicy::Wait, |u| u.on_overdue);
        loop {
            let Some(peer) = self.peers.get_mut(&key) else {
                return;
            };
            let account = peer.account();
            let Some(action) = peer
                .gate
                .controller_mut()
                .and_then(ChokeController::poll_action)
            else {
                return;
            };
            match action {
                Action::Serve(request) => {
                    if intercept == Some((request, RequestDecision::Serve)) {
                        intercept = None;
                    } else {
                        self.engine_out
                            .push_back(EngineCommand::Serve { peer: key, request });
                    }
                }
                Action::Reject(request) => {
                    if intercept == Some((request, RequestDecision::Reject)) {
                        intercept = None;
                    } else {
                        self.engine_out
                            .push_back(EngineCommand::Reject { peer: key, request });
                    }
                }
                Action::NeedChannel => {
                    if let Some(account) = account {
                        self.need_payee_channel(now, account, Some(key));
                    }
                }
                Action::SendStop { channel_id } => {
                    if let Some(account) = account
                        && self.cover_from_pool(now, key, account, channel_id)
                    {
                        // Credit the peer already paid for covered it: no STOP on the wire,
                        // and none of the START that the controller emits next.
                        if let Some(peer) = self.peers.get_mut(&key) {
                            peer.suppress_start = true;
                        }
                        continue;
                    }
                    let Some(peer) = self.peers.get_mut(&key) else {
                        return;
                    };
                    peer.stopped_at = Some(self.seq);
                    self.seq += 1;
                    self.send_notice(key, Notice::Stop(Some(channel_id)));
                }
                Action::SendStart { .. } => {
                    peer.stopped_at = None;
                    if std::mem::take(&mut peer.suppress_start) {
                        continue;
                    }
                    self.send_notice(key, Notice::Start);
                }
                Action::PromptPayment {
                    suggested_bytes,
                    suggested_amount,
                    ..
                } => {
                    peer.prompted_at = Some(self.seq);
                    self.seq += 1;
                    if send_prompts {
                        self.send_notice(
                            key,
                            Notice::Prompt {
                                bytes: suggested_bytes,
                                amount: suggested_amount,
                            },
                        );
                    }
                }
                Action::SendPermanentStop { channel_id } => {
                    self.send_notice(key, Notice::PermanentStop(channel_id));
                    self.update_choke(now, key);
                }
                Action::PaymentOverdue { channel_id } => {
                    self.events.push_back(CoordinatorEvent::PaymentOverdue {
                        peer: key,
                        channel_id,
                    });
                    match on_overdue {
                        OverduePolicy::Wait => {}
                        OverduePolicy::PermanentStop => {
                            if let Some(ctrl) = peer.gate.controller_mut() {
                                ctrl.handle_permanent_stop(now);
                            }
                        }
                        OverduePolicy::Disconnect => {
                            self.engine_out.push_back(EngineCommand::Disconnect {
                                peer: key,
                                reason: DisconnectReason::PaymentOverdue,
                            });
                        }
                    }
                }
                Action::Disconnect(reason) => {
                    let reason = match reason {
                        paid_wire::choke::DisconnectReason::QueueOverflow => {
                            DisconnectReason::QueueOverflow
                        }
                        _ => DisconnectReason::InvalidRequests,
                    };
                    self.engine_out
                        .push_back(EngineCommand::Disconnect { peer: key, reason });
                }
                _ => {}
            }
        }
    }

    /// A paying peer needs a channel to pay us on: propose one unless one exists or is coming,
    /// within the creation limits ([`IdentityConfig`]): per connection (`key`, or the
    /// identity's newest connection), overall per window, and the channel work queue.
    fn need_payee_channel(&mut self, now: Instant, account: Address, key: Option<PeerKey>) {
        let Some(up) = self.config.upload.as_ref() else {
            return;
        };
        let deposit = up.deposit;
        let price = up.choke.price_per_byte;
        let limits = self.config.identity;
        let deadline = now
            .checked_add(self.config.liveness.response_timeout)
            .unwrap_or(now);
        let Some(ident) = self.identities.get(&account) else {
            return;
        };
        if ident.creating.is_some() || ident.payee.is_some() {
            // At most one channel per identity (web3torrent #2220).
            return;
        }
        let key = key.or_else(|| {
            ident
                .live
                .iter()
                .filter_map(|k| Some((*k, self.peers.get(k)?.seq)))
                .max_by_key(|(_, seq)| *seq)
                .map(|(k, _)| k)
        });
        while self.recent_creations.front().is_some_and(|t| {
            t.checked_add(limits.channel_window)
                .is_some_and(|end| end <= now)
        }) {
            self.recent_creations.pop_front();
        }
        let per_connection = key
            .and_then(|k| self.peers.get(&k))
            .is_some_and(|p| p.channels_requested >= limits.max_channels_per_connection);
        let overall = self.recent_creations.len()
            >= usize::try_from(limits.max_channels_per_window).unwrap_or(usize::MAX);
        let queue_full = self.channel_out.len() >= limits.max_channel_commands;
        if per_connection || overall || queue_full {
            // Each proposal costs a signature and durable writes: a stranger gets no more.
            // The connection waiting for it is not served (it may reconnect later).
            self.events
                .push_back(CoordinatorEvent::ChannelRateLimited { account });
            if let Some(k) = key
                && let Some(ctrl) = self.peers.get_mut(&k).and_then(|p| p.gate.controller_mut())
            {
                ctrl.handle_permanent_stop(now);
                self.drain_gate(now, k, None);
            }
            return;
        }
        let mut nonce = None;
        if let Some(p) = key.and_then(|k| self.peers.get_mut(&k)) {
            // The payer contributed its challenge: it can check it helped create the id.
            if let (Some(payer), Some(payee)) = (p.their_challenge, p.challenge) {
                nonce = Some(crate::identity::channel_nonce(
                    &payer,
                    &payee,
                    p.channels_requested,
                ));
            }
            p.channels_requested = p.channels_requested.saturating_add(1);
        }
        self.recent_creations.push_back(now);
        let Some(ident) = self.identities.get_mut(&account) else {
            return;
        };
        ident.creating = Some(deadline);
        self.channel_out.push_back(ChannelCommand::Create {
            peer: account,
            peer_destination: ident.outcome,
            deposit,
            price: Some(price),
            nonce,
        });
        self.events
            .push_back(CoordinatorEvent::ChannelRequested { account });
    }

    /// A connection of `account` ran out of credit. Before a STOP goes out, use what the peer
    /// already paid that sits elsewhere: the identity's ledger, and the unused credit of its
    /// other connections that are idle (credit is held per connection; with several
    /// connections the piece picker may move the last blocks away from the one that holds it).
    /// Returns whether the connection is no longer stopped.
    fn cover_from_pool(
        &mut self,
        now: Instant,
        key: PeerKey,
        account: Address,
        channel_id: ChannelId,
    ) -> bool {
        let siblings: Vec<PeerKey> = match self.identities.get(&account) {
            Some(ident) if slot_open(ident.payee) => {
                ident.live.iter().copied().filter(|k| *k != key).collect()
            }
            _ => return false,
        };
        for sibling in siblings {
            self.resettle(now, sibling, account, channel_id);
        }
        let Some(ident) = self.identities.get_mut(&account) else {
            return false;
        };
        let bank = std::mem::take(&mut ident.ledger.bank_wei);
        if bank == 0 {
            return false;
        }
        let Some(peer) = self.peers.get_mut(&key) else {
            return false;
        };
        let Some(ctrl) = peer.gate.controller_mut() else {
            return false;
        };
        if ctrl.handle_payment(now, channel_id, bank).is_err() {
            if let Some(ident) = self.identities.get_mut(&account) {
                ident.ledger.add(bank, 0);
            }
            return false;
        }
        peer.fed_wei = peer.fed_wei.saturating_add(bank);
        !ctrl.is_stopped()
    }

    /// A connection of `account` is stopped with requests waiting while a sibling holds idle
    /// credit (a payment was routed to the sibling, or its last requests went elsewhere): move
    /// the credit over. The STOP went out, so the START that follows does too.
    fn rebalance(&mut self, now: Instant, account: Address) {
        let Some(ident) = self.identities.get(&account) else {
            return;
        };
        let Some(slot) = ident.payee.filter(|s| s.phase == Phase::Open) else {
            return;
        };
        if ident.live.len() < 2 && ident.ledger.bank_wei == 0 {
            return;
        }
        let mut stopped: Vec<(u64, PeerKey)> = ident
            .live
            .iter()
            .filter_map(|k| {
                let p = self.peers.get(k)?;
                let c = p.gate.controller()?;
                (c.is_stopped() && c.queued_len() > 0).then_some((p.stopped_at?, *k))
            })
            .collect();
        stopped.sort_unstable();
        for (_, key) in stopped {
            self.cover_from_pool(now, key, account, slot.id);
            self.drain_gate(now, key, None);
        }
    }

    /// Moves the unused credit of an idle connection (nothing queued, nothing being served, not
    /// stopped) back to its identity's ledger, by settling it as if it had reconnected: its gate
    /// is replaced by a fresh one on the same channel, with the identity's remaining trust.
    fn resettle(&mut self, now: Instant, key: PeerKey, account: Address, channel_id: ChannelId) {
        let price = self.upload_price();
        let Some(up) = self.config.upload.clone() else {
            return;
        };
        let Some(peer) = self.peers.get(&key) else {
            return;
        };
        let Some(ctrl) = peer.gate.controller() else {
            return;
        };
        let idle = ctrl.queued_len() == 0
            && ctrl.in_flight_len() == 0
            && !ctrl.is_stopped()
            && !ctrl.is_permanently_stopped()
            && ctrl.channel_id() == Some(channel_id);
        let sent_wei = u128::from(ctrl.stats().bytes_sent).saturating_mul(price);
        if !idle || peer.fed_wei <= sent_wei {
            return; // busy, or nothing paid to take back
        }
        let credit = peer.fed_wei - sent_wei;
        let (fast, choked) = (peer.info.fast_negotiated, peer.local_choked);
        let mut config = self.identity_choke_config(&up, account, key);
        config.fast_negotiated = fast;
        let Ok(mut fresh) = ChokeController::new(config) else {
            return;
        };
        if choked {
            fresh.handle_choke(now);
        }
        let _ = fresh.handle_channel_ready(now, channel_id);
        if let Some(ident) = self.identities.get_mut(&account) {
            ident.ledger.add(credit, 0);
        }
        if let Some(peer) = self.peers.get_mut(&key) {
            peer.gate = Gate::Credit(Box::new(fresh));
            peer.fed_wei = 0;
            peer.prompted_at = None;
        }
        self.drain_gate(now, key, None);
    }

    fn on_created(&mut self, now: Instant, account: Address, channel_id: ChannelId) {
        let deposit = self.config.upload.as_ref().map_or(0, |u| u.deposit);
        let deadline = now.checked_add(self.config.liveness.response_timeout);
        let Some(ident) = self.identities.get_mut(&account) else {
            self.channel_out
                .push_back(ChannelCommand::Abandon { channel_id });
            return;
        };
        if ident.payee.is_some_and(|s| s.id != channel_id) {
            self.channel_out
                .push_back(ChannelCommand::Abandon { channel_id });
            return;
        }
        if ident.payee.is_some() {
            return;
        }
        ident.creating = None;
        ident.payee = Some(Slot::new(channel_id, Phase::Proposed, deadline, deposit));
        self.channels.insert(channel_id, (account, Role::Payee));
    }

    /// Picks the connection a payment credits: the oldest outstanding STOP, else the latest
    /// prompt, else the newest connection.
    fn payee_target(&self, account: Address, channel_id: ChannelId) -> Option<PeerKey> {
        let ident = self.identities.get(&account)?;
        let candidates = ident.live.iter().filter_map(|k| {
            let p = self.peers.get(k)?;
            let c = p.gate.controller()?;
            (c.channel_id() == Some(channel_id) && !c.is_permanently_stopped()).then_some((*k, p))
        });
        let mut best: Option<(PeerKey, (u8, u64))> = None;
        for (k, p) in candidates {
            let rank = match (p.stopped_at, p.prompted_at) {
                (Some(at), _) => (2, u64::MAX - at),
                (None, Some(at)) => (1, at),
                (None, None) => (0, p.seq),
            };
            if best.is_none_or(|(_, r)| rank > r) {
                best = Some((k, rank));
            }
        }
        best.map(|(k, _)| k)
    }

    /// Credits `wei` received on `channel_id` to a connection of `account`, or banks it.
    fn route_payment(&mut self, now: Instant, account: Address, channel_id: ChannelId, wei: u128) {
        if wei == 0 {
            return;
        }
        let target = self.payee_target(account, channel_id);
        if let Some(key) = target
            && let Some(peer) = self.peers.get_mut(&key)
            && let Some(ctrl) = peer.gate.controller_mut()
            && ctrl.handle_payment(now, channel_id, wei).is_ok()
        {
            peer.fed_wei = peer.fed_wei.saturating_add(wei);
            self.drain_gate(now, key, None);
            self.update_choke(now, key);
            self.rebalance(now, account);
            return;
        }
        if let Some(ident) = self.identities.get_mut(&account) {
            ident.ledger.add(wei, 0);
        }
    }

    fn on_payment_received(
        &mut self,
        now: Instant,
        channel_id: ChannelId,
        delta: u128,
        total: u128,
    ) -> Result<(), UsageError> {
        let Some(&(account, Role::Payee)) = self.channels.get(&channel_id) else {
            return Err(UsageError::UnknownChannel(channel_id));
        };
        let deadline = self.answer_deadline(now);
        let Some(ident) = self.identities.get_mut(&account) else {
            return Err(UsageError::UnknownChannel(channel_id));
        };
        let Some(slot) = ident.payee.as_mut().filter(|s| s.id == channel_id) else {
            return Err(UsageError::UnknownChannel(channel_id));
        };
        // Vouchers are cumulative: the total is authoritative (a replayed event credits nothing).
        let credited = total.saturating_sub(slot.paid);
        slot.paid = slot.paid.max(total);
        ident.ledger.wei_received = ident.ledger.wei_received.saturating_add(credited);
        ident.touch(deadline);
        self.events.push_back(CoordinatorEvent::PaymentReceived {
            account,
            channel_id,
            delta,
            total,
        });
        if slot_open(ident.payee) {
            self.route_payment(now, account, channel_id, credited);
        } else if let Some(ident) = self.identities.get_mut(&account) {
            ident.ledger.add(credited, 0);
        }
        Ok(())
    }

    fn setup_failed(&mut self, now: Instant, account: Address) {
        let Some(ident) = self.identities.get_mut(&account) else {
            return;
        };
        ident.creating = None;
        if let Some(slot) = ident.payee.filter(|s| s.phase == Phase::Proposed) {
            ident.payee = None;
            self.channels.remove(&slot.id);
            self.channel_out.push_back(ChannelCommand::Abandon {
                channel_id: slot.id,
            });
            if ident.payer.is_none() {
                // Whatever still waits for this peer concerns the abandoned proposal.
                ident.outbox.clear();
            }
        }
        let live: Vec<PeerKey> = ident.live.iter().copied().collect();
        self.events
            .push_back(CoordinatorEvent::ChannelSetupFailed { account });
        for key in live {
            if let Some(ctrl) = self
                .peers
                .get_mut(&key)
                .and_then(|p| p.gate.controller_mut())
            {
                ctrl.handle_permanent_stop(now);
            }
            self.drain_gate(now, key, None);
        }
    }

    // ------------------------------------------------------------------ downloader

    fn evaluate_proposal(
        &mut self,
        now: Instant,
        channel_id: ChannelId,
        payee: Address,
        deposit: u128,
        price: Option<u128>,
        nonce: Option<u64>,
    ) {
        let decline = |this: &mut Self, reason| {
            this.channel_out
                .push_back(ChannelCommand::Abandon { channel_id });
            this.events.push_back(CoordinatorEvent::ProposalDeclined {
                channel_id,
                payee,
                reason,
            });
        };
        let Some(down) = self.config.download else {
            return decline(self, DeclineReason::NotBuying);
        };
        let deadline = now.checked_add(self.config.liveness.response_timeout);
        let Some(ident) = self.identities.get_mut(&payee) else {
            // Its handshake may still be on its way: hold the proposal briefly.
            if !self.proposals.iter().any(|p| p.channel_id == channel_id) {
                let expires = now
                    .checked_add(self.config.liveness.handshake_timeout)
                    .unwrap_or(now);
                self.proposals.push(PendingProposal {
                    channel_id,
                    payee,
                    deposit,
                    price,
                    nonce,
                    expires,
                });
            }
            return;
        };
        if let Some(slot) = ident.payer {
            if slot.id != channel_id {
                decline(self, DeclineReason::AlreadyHaveChannel);
            }
            return;
        }
        if ident.asked_beyond_window {
            return decline(self, DeclineReason::Misbehaved);
        }
        if !self.nonce_is_ours(payee, nonce) {
            return decline(self, DeclineReason::NotFresh);
        }
        let Some(ident) = self.identities.get_mut(&payee) else {
            return;
        };
        if ident.terms.price_per_byte > down.max_price_per_byte {
            return decline(self, DeclineReason::PriceTooHigh);
        }
        if price.is_some_and(|p| p != ident.terms.price_per_byte) {
            // We size payments with the advertised terms: they must be the channel's terms.
            return decline(self, DeclineReason::PriceMismatch);
        }
        if deposit > down.max_deposit {
            return decline(self, DeclineReason::DepositTooLarge);
        }
        let committed = self.budget_reserved.saturating_add(self.budget_spent);
        if committed.saturating_add(deposit) > down.budget {
            return decline(self, DeclineReason::OverBudget);
        }
        self.budget_reserved = self.budget_reserved.saturating_add(deposit);
        // The terms are fixed now: no connection is paid under other terms on this channel.
        let mut slot = Slot::new(channel_id, Phase::Proposed, deadline, deposit);
        slot.terms = Some(ident.terms);
        ident.payer = Some(slot);
        self.channels.insert(channel_id, (payee, Role::Payer));
        self.channel_out.push_back(ChannelCommand::Join {
            channel_id,
            peer: payee,
            deposit,
        });
        self.events.push_back(CoordinatorEvent::Joining {
            channel_id,
            account: payee,
            deposit,
        });
    }

    /// Whether a proposal's nonce is one we helped create: derived from our challenge and the
    /// payee's on one of its live connections that proved its identity
    /// ([`crate::identity::channel_nonce`]). A payee believed on its word
    /// ([`LegacyPolicy::TrustClaimedAccount`]) has no such connection and is not checked.
    fn nonce_is_ours(&self, payee: Address, nonce: Option<u64>) -> bool {
        let Some(ident) = self.identities.get(&payee) else {
            return false;
        };
        let proven: Vec<&Peer> = ident
            .live
            .iter()
            .filter_map(|k| self.peers.get(k))
            .filter(|p| p.challenge.is_some())
            .collect();
        if proven.is_empty() {
            return true;
        }
        let max = self.config.identity.max_channels_per_connection;
        let Some(nonce) = nonce else {
            return false;
        };
        proven.iter().any(|p| {
            let (Some(ours), Some(theirs)) = (p.challenge, p.their_challenge) else {
                return false;
            };
            (0..max).any(|i| crate::identity::channel_nonce(&ours, &theirs, i) == nonce)
        })
    }

    fn retry_proposals(&mut self, now: Instant, account: Address) {
        let (mine, rest) = std::mem::take(&mut self.proposals)
            .into_iter()
            .partition(|p| p.payee == account);
        self.proposals = rest;
        for p in mine {
            self.evaluate_proposal(now, p.channel_id, p.payee, p.deposit, p.price, p.nonce);
        }
    }

    /// Adopts a channel found in the store after a restart (see [`ChannelEvent::Restored`]).
    #[allow(clippy::too_many_arguments)]
    fn on_restored(
        &mut self,
        now: Instant,
        channel_id: ChannelId,
        account: Address,
        role: Role,
        deposit: u128,
        paid: u128,
        state: RestoredState,
    ) {
        if self.channels.contains_key(&channel_id) {
            return; // already known (reported twice)
        }
        let deadline = self.answer_deadline(now);
        let ident = self
            .identities
            .entry(account)
            .or_insert_with(|| Identity::new(Terms::default()));
        let slot = ident.slot_mut(role);
        if slot.is_some() {
            // A channel opened since the restart took the place: the usual rules settle the
            // restored one (its counterparty will challenge it, or our client will on timeout).
            return;
        }
        let (phase, deadline) = match state {
            RestoredState::Funding => (Phase::Proposed, Some(deadline)),
            RestoredState::Open => (Phase::Open, None),
            RestoredState::Closing => (Phase::Closing, Some(deadline)),
        };
        // The price is not in the store: the first connection of the payee within our price
        // cap fixes the terms, and the window counts from now (bytes received before the
        // restart are not known either).
        *slot = Some(Slot {
            paid,
            ..Slot::new(channel_id, phase, deadline, deposit)
        });
        if role == Role::Payer {
            // Locked in the deposit: counts against the budget (what is paid of it is spent
            // when the channel closes).
            self.budget_reserved = self.budget_reserved.saturating_add(deposit);
        } else {
            // A channel creation still in flight is abandoned when it completes (the restored
            // channel holds the place); `paid` is the baseline of the next voucher, so nothing
            // paid before the restart is credited again.
            ident.creating = None;
        }
        if ident.live.is_empty() {
            // The counterparty is not connected (yet): the idle rule applies from now.
            ident.idle_since = Some(now);
            ident.departed_at = Some(now);
        }
        self.channels.insert(channel_id, (account, role));
        self.events.push_back(CoordinatorEvent::ChannelRestored {
            account,
            channel_id,
            role,
            paid,
            state,
        });
    }

    fn on_ready(
        &mut self,
        now: Instant,
        channel_id: ChannelId,
        account: Address,
        role: Role,
        deposit: u128,
    ) {
        let ident = self
            .identities
            .entry(account)
            .or_insert_with(|| Identity::new(Terms::default()));
        let slot = ident.slot_mut(role);
        match slot {
            Some(s) if s.id == channel_id => {
                if s.phase != Phase::Proposed {
                    return;
                }
                s.phase = Phase::Open;
                s.deadline = None;
            }
            Some(_) => return, // another channel is in use for this direction
            None => {
                // Restored (or a proposal we joined and forgot): adopt it.
                *slot = Some(Slot::new(channel_id, Phase::Open, None, deposit));
                if role == Role::Payer {
                    self.budget_reserved = self.budget_reserved.saturating_add(deposit);
                }
            }
        }
        if role == Role::Payee {
            ident.creating = None;
        }
        let live: Vec<PeerKey> = ident.live.iter().copied().collect();
        self.channels.insert(channel_id, (account, role));
        self.events.push_back(CoordinatorEvent::ChannelOpened {
            account,
            channel_id,
            role,
        });
        match role {
            Role::Payee => {
                for &key in &live {
                    if let Some(ctrl) = self
                        .peers
                        .get_mut(&key)
                        .and_then(|p| p.gate.controller_mut())
                    {
                        let _ = ctrl.handle_channel_ready(now, channel_id);
                    }
                    self.drain_gate(now, key, None);
                }
                if let Some(ident) = self.identities.get_mut(&account)
                    && ident.ledger.bank_wei > 0
                {
                    let bank = std::mem::take(&mut ident.ledger.bank_wei);
                    self.route_payment(now, account, channel_id, bank);
                }
            }
            Role::Payer => {
                for &key in &live {
                    let Some(peer) = self.peers.get_mut(&key) else {
                        continue;
                    };
                    if let Some(planner) = peer.planner.as_mut() {
                        planner.handle_channel_ready(channel_id);
                    }
                    if let Some(channel) = peer.stop_pending.take() {
                        // A misbehaviour is reported as an event; nobody to return it to here.
                        let _ = self.on_remote_stop(now, key, account, channel);
                    }
                }
            }
        }
    }

    /// A STOP from `key`: paid once per STOP (a STOP while stopped is only acked), sized by
    /// [`payment_size`](Self::payment_size), deferred for the grace period when our payments
    /// should cover it, held when the window has no room. Returns the misbehaviour to report.
    fn on_remote_stop(
        &mut self,
        now: Instant,
        key: PeerKey,
        account: Address,
        channel: Option<ChannelId>,
    ) -> Option<PeerError> {
        let open = self
            .identities
            .get(&account)
            .and_then(|i| i.payer)
            .filter(|s| s.phase == Phase::Open && channel.is_none_or(|c| c == s.id));
        let peer = self.peers.get_mut(&key)?;
        peer.planner.as_ref()?; // we do not buy: ack only
        let Some(slot) = open else {
            // Not joined yet (web3torrent sends STOP right after proposing): pay once ready.
            peer.stop_pending = Some(channel);
            return None;
        };
        let (bytes, error) = self.stop_size(now, key, account, true, false);
        if let Some(planner) = self.peers.get_mut(&key).and_then(|p| p.planner.as_mut()) {
            allow_bytes(planner, bytes);
            let repeated = planner.handle_stop(slot.id) == StopOutcome::AlreadyStopped;
            if repeated && bytes > 0 {
                // Paid only if this exhaustion's STOP is still unpaid (deferred or held).
                planner.handle_bytes_received(0);
            }
        }
        self.drain_planner(now, key);
        error
    }

    /// Bytes a STOP of `key` gets now (0: nothing now). When our payments should cover it, it
    /// waits [`DownloadConfig::stop_grace`] after our last payment, then is sized ignoring that
    /// estimate (`force`). When the window has no room, it is held (`stop_held`) until bytes
    /// arrive. `ask`: the STOP just arrived or its grace period ended, so a refusal counts
    /// against the payee (not so when bytes arrive for a held STOP).
    fn stop_size(
        &mut self,
        now: Instant,
        key: PeerKey,
        account: Address,
        ask: bool,
        force: bool,
    ) -> (u64, Option<PeerError>) {
        let terms = match self.agreed_terms(key, account) {
            Ok(terms) => terms,
            Err(error) => return (0, ask.then(|| self.refuse_terms(now, key, account, error))),
        };
        let mut size = self.payment_size(key, account, terms, force);
        if size == Payable::Covered && !force {
            // Our payments should cover it: one is probably still in flight. Give it the grace
            // period to arrive (START) before paying again.
            let grace = self
                .config
                .download
                .map(|d| d.stop_grace)
                .unwrap_or_default();
            let retry_at = self
                .identities
                .get(&account)
                .and_then(|i| i.last_paid_at)
                .and_then(|t| t.checked_add(grace))
                .filter(|at| *at > now);
            if let Some(at) = retry_at {
                if let Some(peer) = self.peers.get_mut(&key) {
                    peer.stop_retry_at = Some(at);
                }
                return (0, None);
            }
            size = self.payment_size(key, account, terms, true);
        }
        if let Some(peer) = self.peers.get_mut(&key) {
            peer.stop_held = size == Payable::Window;
        }
        match size {
            Payable::Bytes(bytes) => (bytes, None),
            Payable::Covered => (0, None),
            Payable::OutOfFunds => {
                self.out_of_funds(now, account);
                (0, None)
            }
            Payable::Window => {
                let error = if ask {
                    self.ask_beyond_window(now, key, account)
                } else {
                    None
                };
                (0, error)
            }
        }
    }

    /// A deferred STOP's grace period ended without START: pay it now.
    fn retry_stop(&mut self, now: Instant, key: PeerKey) {
        let Some(peer) = self.peers.get_mut(&key) else {
            return;
        };
        peer.stop_retry_at = None;
        let Some(account) = peer.account() else {
            return;
        };
        if !peer
            .planner
            .as_ref()
            .is_some_and(PaymentPlanner::is_stopped)
        {
            return;
        }
        // A misbehaviour is reported as an event; nobody to return it to from a timer.
        let (bytes, _) = self.stop_size(now, key, account, true, true);
        self.pay_stop(now, key, bytes);
    }

    /// Bytes arrived from `account`: pay the STOPs that waited for room in the window.
    fn retry_held_stops(&mut self, now: Instant, account: Address) {
        let held: Vec<PeerKey> = match self.identities.get(&account) {
            Some(ident) => ident
                .live
                .iter()
                .copied()
                .filter(|k| self.peers.get(k).is_some_and(|p| p.stop_held))
                .collect(),
            None => return,
        };
        for key in held {
            let (bytes, _) = self.stop_size(now, key, account, false, false);
            self.pay_stop(now, key, bytes);
        }
    }

    /// Pays `bytes` for the outstanding STOP of `key`, if it is still unpaid.
    fn pay_stop(&mut self, now: Instant, key: PeerKey, bytes: u64) {
        if let Some(planner) = self.peers.get_mut(&key).and_then(|p| p.planner.as_mut()) {
            allow_bytes(planner, bytes);
            // Re-evaluates the deferred STOP payment under the new cap.
            planner.handle_bytes_received(0);
        }
        self.drain_planner(now, key);
    }

    /// A prompt: pay ahead, one granularity, then more while the credit we think the uploader
    /// holds for us is below its suggestion (within our pay-ahead bound and the window).
    /// Returns the misbehaviour to report.
    fn on_prompt(
        &mut self,
        now: Instant,
        key: PeerKey,
        account: Address,
        suggested: u64,
    ) -> Option<PeerError> {
        let down = self.config.download.filter(|d| d.pay_ahead)?;
        let slot = self
            .identities
            .get(&account)
            .and_then(|i| i.payer)
            .filter(|s| s.phase == Phase::Open)?;
        let stopped = self
            .peers
            .get(&key)
            .and_then(|p| p.planner.as_ref())
            .is_none_or(PaymentPlanner::is_stopped);
        if stopped {
            return None; // the STOP payment covers it
        }
        let terms = match self.agreed_terms(key, account) {
            Ok(terms) => terms,
            Err(error) => return Some(self.refuse_terms(now, key, account, error)),
        };
        // One granularity, then more while the uploader's credit (as we see it) is below what it
        // suggests, within our own pay-ahead bound: several payments in flight at once.
        let target = suggested.min(down.max_pay_ahead_bytes);
        let mut first = true;
        loop {
            if !first && self.credit_at(account, terms) >= target {
                return None;
            }
            match self.payment_size(key, account, terms, false) {
                Payable::OutOfFunds => {
                    self.out_of_funds(now, account);
                    return None;
                }
                Payable::Covered => return None,
                Payable::Window if first => return self.ask_beyond_window(now, key, account),
                Payable::Window => return None,
                Payable::Bytes(bytes) => {
                    let planner = self.peers.get_mut(&key).and_then(|p| p.planner.as_mut())?;
                    allow_bytes(planner, bytes);
                    let queued = planner.handle_prompt(slot.id, bytes);
                    self.drain_planner(now, key);
                    if !queued {
                        return None;
                    }
                }
            }
            first = false;
        }
    }

    /// The uploader asked (STOP or prompt) and the window had no room. An honest uploader asks
    /// so at times (its blocks, or our payments, are still in flight) and delivers soon after;
    /// one that asks again although it delivered nothing for
    /// [`DownloadConfig::window_timeout`] since the first such ask misbehaves: we stop paying,
    /// close the channel (challenged if unanswered, as every close), and decline its later
    /// proposals.
    fn ask_beyond_window(
        &mut self,
        now: Instant,
        key: PeerKey,
        account: Address,
    ) -> Option<PeerError> {
        let down = self.config.download?;
        let ident = self.identities.get_mut(&account)?;
        let slot = ident.payer.as_mut().filter(|s| s.phase == Phase::Open)?;
        let since = *slot.beyond_window_since.get_or_insert(now);
        if since
            .checked_add(down.window_timeout)
            .is_none_or(|at| now < at)
        {
            return None;
        }
        let window = down.window_bytes();
        let error = PeerError::AskedBeyondWindow {
            channel_id: slot.id,
            paid_bytes: slot.bytes_paid,
            received_bytes: slot.bytes_received,
            window_bytes: window,
        };
        ident.asked_beyond_window = true;
        let _ = self.misbehaved(key, error.clone());
        self.close(now, account, Role::Payer);
        Some(error)
    }

    /// `key` asked to be paid under terms other than its channel's (or above our price cap):
    /// nothing is paid, and the channel is closed (challenged if unanswered), so that the payee
    /// may propose a new one, checked against our limits like any proposal.
    fn refuse_terms(
        &mut self,
        now: Instant,
        key: PeerKey,
        account: Address,
        error: PeerError,
    ) -> PeerError {
        let _ = self.misbehaved(key, error.clone());
        self.close(now, account, Role::Payer);
        error
    }

    /// The terms `key` may be paid under on our channel with `account`: the channel's, fixed
    /// when we joined it, and only if the connection advertises the same; a channel adopted
    /// without a proposal (restored) takes the connection's. Never above our price cap.
    fn agreed_terms(&mut self, key: PeerKey, account: Address) -> Result<Terms, PeerError> {
        let max = self.config.download.map_or(0, |d| d.max_price_per_byte);
        let advertised = self.peers.get(&key).map(|p| p.terms).unwrap_or_default();
        let Some(slot) = self
            .identities
            .get_mut(&account)
            .and_then(|i| i.payer.as_mut())
        else {
            return Ok(advertised); // no channel: nothing is paid anyway
        };
        let channel_id = slot.id;
        let terms = match slot.terms {
            Some(agreed) if agreed != advertised => {
                return Err(PeerError::TermsChanged {
                    channel_id,
                    agreed,
                    advertised,
                });
            }
            Some(agreed) => agreed,
            None if advertised.price_per_byte > max => advertised,
            None => *slot.terms.insert(advertised),
        };
        if terms.price_per_byte > max {
            return Err(PeerError::PriceAboveCap {
                channel_id,
                price: terms.price_per_byte,
                max,
            });
        }
        Ok(terms)
    }

    /// The credit we think `account` (an uploader) holds for us: paid + its trust − received,
    /// in bytes.
    fn credit_at(&self, account: Address, terms: Terms) -> u64 {
        self.identities.get(&account).map_or(0, |ident| {
            ident
                .paid
                .bytes_paid
                .saturating_add(terms.trust_bytes)
                .saturating_sub(ident.paid.bytes_received)
        })
    }

    /// Bytes the window still has room for, with `account` and on its payer channel: the
    /// smaller of `received + window − paid` over the identity and over the channel.
    fn window_room(&self, account: Address) -> u64 {
        let Some(down) = self.config.download else {
            return 0;
        };
        let window = down.window_bytes();
        let Some(ident) = self.identities.get(&account) else {
            return 0;
        };
        let room = |paid: u64, received: u64| received.saturating_add(window).saturating_sub(paid);
        let identity = room(ident.paid.bytes_paid, ident.paid.bytes_received);
        let channel = ident
            .payer
            .map_or(0, |s| room(s.bytes_paid, s.bytes_received));
        identity.min(channel)
    }

    /// Bytes to buy now under `terms`: one granularity, no more than we still need beyond the
    /// credit the uploader should still hold for us (paid + its trust − received), no more than
    /// the deposit allows, and only if the window has room for all of it.
    ///
    /// `force` (a STOP whose grace period passed) ignores the credit estimate: the uploader says
    /// it has none left, so the estimate is off (bytes lost with a dropped connection, or less
    /// trust than advertised). The window still applies.
    fn payment_size(&self, key: PeerKey, account: Address, terms: Terms, force: bool) -> Payable {
        let (Some(down), Some(ident), Some(peer)) = (
            self.config.download,
            self.identities.get(&account),
            self.peers.get(&key),
        ) else {
            return Payable::Covered;
        };
        let Some(slot) = ident.payer else {
            return Payable::Covered;
        };
        let price = terms.price_per_byte.max(1);
        let affordable =
            u64::try_from(slot.deposit.saturating_sub(slot.paid) / price).unwrap_or(u64::MAX);
        let needed = self
            .torrents
            .get(&peer.info.torrent)
            .map_or(u64::MAX, Torrent::needed);
        let want = if force {
            needed
        } else {
            needed.saturating_sub(self.credit_at(account, terms))
        };
        let want = want.min(down.granularity_bytes);
        if want == 0 {
            return Payable::Covered;
        }
        if affordable == 0 {
            return Payable::OutOfFunds;
        }
        let want = want.min(affordable);
        if want > self.window_room(account) {
            return Payable::Window;
        }
        Payable::Bytes(want)
    }

    fn drain_planner(&mut self, now: Instant, key: PeerKey) {
        loop {
            let Some(peer) = self.peers.get_mut(&key) else {
                return;
            };
            let Some(account) = peer.account() else {
                return;
            };
            let Some(action) = peer.planner.as_mut().and_then(PaymentPlanner::poll_action) else {
                return;
            };
            match action {
                PayerAction::Pay {
                    channel_id,
                    bytes,
                    reason,
                    ..
                } => self.pay(now, key, account, channel_id, bytes, reason),
                PayerAction::CloseChannel { .. } => {
                    // Only when no other connection to this uploader is still being served.
                    let others_active = self.identities.get(&account).is_some_and(|i| {
                        i.live.iter().filter(|k| **k != key).any(|k| {
                            self.peers
                                .get(k)
                                .and_then(|p| p.planner.as_ref())
                                .is_some_and(|pl| !pl.is_permanently_stopped())
                        })
                    });
                    if !others_active {
                        self.close(now, account, Role::Payer);
                    }
                }
                PayerAction::OutOfFunds { .. } => self.out_of_funds(now, account),
                _ => {}
            }
        }
    }

    /// The one place money leaves: `bytes` at the channel's fixed price, on an open channel,
    /// within the deposit, our price cap and the window (the sizing above already keeps to
    /// them; a payment that would not is dropped).
    fn pay(
        &mut self,
        now: Instant,
        key: PeerKey,
        account: Address,
        channel_id: ChannelId,
        bytes: u64,
        reason: PayReason,
    ) {
        let Some(down) = self.config.download else {
            return;
        };
        let room = self.window_room(account);
        let stall = self
            .config
            .liveness
            .stall_timeout
            .and_then(|t| now.checked_add(t));
        let Some(ident) = self.identities.get_mut(&account) else {
            return;
        };
        let Some(slot) = ident
            .payer
            .as_mut()
            .filter(|s| s.id == channel_id && s.phase == Phase::Open)
        else {
            return;
        };
        let Some(terms) = slot
            .terms
            .filter(|t| t.price_per_byte <= down.max_price_per_byte)
        else {
            return;
        };
        let amount = u128::from(bytes).checked_mul(terms.price_per_byte.max(1));
        let Some(amount) = amount.filter(|a| *a <= slot.deposit.saturating_sub(slot.paid)) else {
            return;
        };
        if bytes == 0 || bytes > room {
            return;
        }
        slot.paid = slot.paid.saturating_add(amount);
        slot.bytes_paid = slot.bytes_paid.saturating_add(bytes);
        ident.paid.wei_paid = ident.paid.wei_paid.saturating_add(amount);
        ident.paid.bytes_paid = ident.paid.bytes_paid.saturating_add(bytes);
        if ident.stall_deadline.is_none() {
            ident.stall_deadline = stall;
        }
        ident.last_paid_at = Some(now);
        self.channel_out
            .push_back(ChannelCommand::Pay { channel_id, amount });
        self.events.push_back(CoordinatorEvent::PaymentSent {
            peer: key,
            channel_id,
            amount,
            bytes,
            reason,
        });
    }

    fn out_of_funds(&mut self, now: Instant, account: Address) {
        if let Some(slot) = self
            .identities
            .get(&account)
            .and_then(|i| i.payer)
            .filter(|s| s.phase == Phase::Open)
        {
            self.events.push_back(CoordinatorEvent::OutOfFunds {
                account,
                channel_id: slot.id,
            });
            self.close(now, account, Role::Payer);
        }
    }

    fn close_finished_payer_channels(&mut self, now: Instant) {
        let mut accounts: Vec<Address> = self
            .identities
            .iter()
            .filter(|(_, i)| slot_open(i.payer))
            .map(|(a, _)| *a)
            .collect();
        accounts.sort_unstable();
        for account in accounts {
            let busy = self.identities.get(&account).is_some_and(|i| {
                i.live.iter().any(|k| {
                    self.peers.get(k).is_some_and(|p| {
                        self.torrents
                            .get(&p.info.torrent)
                            .is_none_or(|t| !t.complete)
                    })
                })
            });
            if !busy {
                self.close(now, account, Role::Payer);
            }
        }
    }

    // ------------------------------------------------------------------ channel messages

    fn on_channel_message(
        &mut self,
        now: Instant,
        key: PeerKey,
        account: Address,
        json: String,
    ) -> Result<(), Error> {
        let Ok(value) = serde_json::from_str::<serde_json::Value>(&json) else {
            return Err(self.misbehaved(key, PeerError::MalformedChannelMessage));
        };
        let Some(recipient) = value.get("recipient").and_then(|r| r.as_str()) else {
            return Err(self.misbehaved(key, PeerError::MalformedChannelMessage));
        };
        let drop_reason = if parse_account(recipient.as_bytes()) != Some(self.config.account) {
            // web3torrent: "If data.recipient !== this.pseAccount, it is silently dropped (no ack)".
            Some(MessageDropReason::NotForUs)
        } else if let Some(sender) = value.get("sender").and_then(|s| s.as_str())
            && parse_account(sender.as_bytes()).is_some_and(|s| s != account)
        {
            Some(MessageDropReason::SenderMismatch)
        } else {
            None
        };
        if let Some(reason) = drop_reason {
            self.events.push_back(CoordinatorEvent::MessageDropped {
                account: Some(account),
                reason,
            });
            return Ok(());
        }
        if self.channel_out.len() >= self.config.identity.max_channel_commands {
            // The channel client is behind: refuse more work rather than queue it without
            // bound. Not acked, so an honest peer's resend brings it again.
            self.events.push_back(CoordinatorEvent::MessageDropped {
                account: Some(account),
                reason: MessageDropReason::QueueFull,
            });
            return Ok(());
        }
        self.send_notice(key, Notice::Ack);
        let deadline = self.answer_deadline(now);
        if let Some(ident) = self.identities.get_mut(&account) {
            ident.touch(deadline);
        }
        self.channel_out.push_back(ChannelCommand::PushMessage {
            from: account,
            json,
        });
        Ok(())
    }

    fn route_outbound(&mut self, to: Address, json: String) {
        let max_outbox = self.config.max_outbox;
        let Some(ident) = self.identities.get(&to) else {
            self.events.push_back(CoordinatorEvent::MessageDropped {
                account: Some(to),
                reason: MessageDropReason::UnknownRecipient,
            });
            return;
        };
        let target = ident
            .live
            .iter()
            .filter_map(|k| self.peers.get(k).map(|p| (*k, p)))
            .filter(|(_, p)| p.pse_id.is_some())
            .max_by_key(|(_, p)| p.seq)
            .map(|(k, p)| (k, p.advertised_account.clone()));
        // The recipient as this connection advertised it: web3torrent drops a message whose
        // `recipient` is not its `pseAccount` string, byte for byte.
        let addressed = match &target {
            Some((_, Some(advertised))) => readdress(&json, to, advertised),
            _ => None,
        };
        let wire_json = addressed.as_deref().unwrap_or(&json);
        if Notice::Message(wire_json.to_owned()).encode().len() > MAX_NOTICE_LEN {
            self.events.push_back(CoordinatorEvent::MessageDropped {
                account: Some(to),
                reason: MessageDropReason::TooLarge,
            });
            return;
        }
        match target {
            Some((key, _)) => {
                self.send_notice(key, Notice::Message(addressed.unwrap_or(json)));
            }
            None => {
                let Some(ident) = self.identities.get_mut(&to) else {
                    return;
                };
                if ident.outbox.len() >= max_outbox {
                    ident.outbox.pop_front();
                    self.events.push_back(CoordinatorEvent::MessageDropped {
                        account: Some(to),
                        reason: MessageDropReason::OutboxFull,
                    });
                }
                if max_outbox > 0
                    && let Some(ident) = self.identities.get_mut(&to)
                {
                    ident.outbox.push_back(json);
                }
            }
        }
    }

    fn flush_outbox(&mut self, account: Address) {
        let Some(ident) = self.identities.get_mut(&account) else {
            return;
        };
        let outbox = std::mem::take(&mut ident.outbox);
        for json in outbox {
            self.route_outbound(account, json);
        }
    }

    fn answer_deadline(&self, now: Instant) -> Instant {
        now.checked_add(self.config.liveness.response_timeout)
            .unwrap_or(now)
    }

    // ------------------------------------------------------------------ closing

    fn close(&mut self, now: Instant, account: Address, role: Role) -> bool {
        let deadline = self.answer_deadline(now);
        let Some(ident) = self.identities.get_mut(&account) else {
            return false;
        };
        let slot = ident.slot_mut(role).as_mut();
        let Some(slot) = slot.filter(|s| s.phase == Phase::Open) else {
            return false;
        };
        slot.phase = Phase::Closing;
        slot.deadline = Some(deadline);
        let channel_id = slot.id;
        self.channel_out
            .push_back(ChannelCommand::Close { channel_id });
        self.events.push_back(CoordinatorEvent::Closing {
            account,
            channel_id,
            role,
        });
        true
    }

    fn challenge(&mut self, now: Instant, account: Address, role: Role) -> bool {
        let Some(ident) = self.identities.get_mut(&account) else {
            return false;
        };
        let slot = ident.slot_mut(role).as_mut();
        let Some(slot) = slot else {
            return false;
        };
        match (slot.phase, role) {
            (Phase::Challenging, _) => return false,
            // Nothing was deposited for us in an unfunded proposal: abandon it instead.
            (Phase::Proposed, Role::Payee) => {
                self.setup_failed(now, account);
                return false;
            }
            _ => {}
        }
        slot.phase = Phase::Challenging;
        slot.deadline = None;
        let channel_id = slot.id;
        self.channel_out
            .push_back(ChannelCommand::Challenge { channel_id });
        self.events.push_back(CoordinatorEvent::Challenging {
            account,
            channel_id,
            role,
        });
        true
    }

    fn on_closed(
        &mut self,
        now: Instant,
        channel_id: ChannelId,
        payee_amount: u128,
    ) -> Result<(), UsageError> {
        let (account, role) = self
            .channels
            .remove(&channel_id)
            .ok_or(UsageError::UnknownChannel(channel_id))?;
        let Some(ident) = self.identities.get_mut(&account) else {
            return Ok(());
        };
        let slot = ident.slot_mut(role);
        let Some(closed) = slot.take_if(|s| s.id == channel_id) else {
            return Ok(());
        };
        let live: Vec<PeerKey> = ident.live.iter().copied().collect();
        if role == Role::Payer {
            ident.stall_deadline = None;
            self.budget_reserved = self.budget_reserved.saturating_sub(closed.deposit);
            self.budget_spent = self.budget_spent.saturating_add(closed.paid);
        }
        self.events.push_back(CoordinatorEvent::ChannelClosed {
            account,
            channel_id,
            role,
            payee_amount,
        });
        if role == Role::Payee {
            let mut waiting = false;
            for key in live {
                let Some(ctrl) = self
                    .peers
                    .get_mut(&key)
                    .and_then(|p| p.gate.controller_mut())
                else {
                    continue;
                };
                if ctrl.channel_id() == Some(channel_id) {
                    // Its channel is gone: nothing more is served on this connection.
                    ctrl.handle_permanent_stop(now);
                    self.drain_gate(now, key, None);
                } else if ctrl.is_channel_pending() {
                    waiting = true;
                }
            }
            if waiting {
                self.need_payee_channel(now, account, None);
            }
        }
        Ok(())
    }

    fn on_command_failed(&mut self, now: Instant, command: FailedCommand, reason: String) {
        let _ = reason;
        match command {
            FailedCommand::Create { peer } => self.setup_failed(now, peer),
            FailedCommand::Join { channel_id } => {
                if let Some((account, _)) = self.channels.remove(&channel_id)
                    && let Some(ident) = self.identities.get_mut(&account)
                    && let Some(slot) = ident.payer.take_if(|s| s.id == channel_id)
                {
                    self.budget_reserved = self.budget_reserved.saturating_sub(slot.deposit);
                }
            }
            FailedCommand::Pay { channel_id, amount } => {
                // A payment that did not go out cannot be retried safely (the STOP it answered
                // is already counted as paid): the channel is unusable, close it.
                if let Some(&(account, Role::Payer)) = self.channels.get(&channel_id)
                    && let Some(ident) = self.identities.get_mut(&account)
                {
                    // Paid at the channel's fixed price (the advertised one if it has none).
                    let slot = ident.payer.as_mut().filter(|s| s.id == channel_id);
                    let price = slot
                        .as_ref()
                        .and_then(|s| s.terms)
                        .map_or(ident.terms.price_per_byte, |t| t.price_per_byte);
                    let bytes = u64::try_from(amount / price.max(1)).unwrap_or(u64::MAX);
                    if let Some(slot) = slot {
                        slot.paid = slot.paid.saturating_sub(amount);
                        slot.bytes_paid = slot.bytes_paid.saturating_sub(bytes);
                    }
                    ident.paid.wei_paid = ident.paid.wei_paid.saturating_sub(amount);
                    ident.paid.bytes_paid = ident.paid.bytes_paid.saturating_sub(bytes);
                    self.close(now, account, Role::Payer);
                }
            }
            FailedCommand::Close { channel_id } => {
                if let Some(&(account, role)) = self.channels.get(&channel_id) {
                    self.challenge(now, account, role);
                }
            }
            FailedCommand::PushMessage {
                from,
                bad_signature: true,
            } => {
                // Only authenticated connections of `from` carry its messages.
                let mut live: Vec<PeerKey> = self
                    .identities
                    .get(&from)
                    .map(|i| i.live.iter().copied().collect())
                    .unwrap_or_default();
                live.sort_unstable();
                for key in live {
                    let _ = self.strike(key, PeerError::BadChannelSignature);
                }
            }
            _ => {}
        }
    }
}

/// How much a STOP or prompt may be paid now (see `Coordinator::payment_size`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Payable {
    /// Buy this many bytes.
    Bytes(u64),
    /// Nothing more is needed: what we paid should cover it.
    Covered,
    /// More is needed, but the window has no room for it until bytes arrive.
    Window,
    /// More is needed, but the deposit is spent.
    OutOfFunds,
}

/// `json` (a channel-message envelope) with its top-level `recipient` replaced by `advertised`,
/// the text by which the peer advertised the address `to`; `None` when nothing needs replacing
/// (the same text already, not an envelope, or a recipient other than `to`).
fn readdress(json: &str, to: Address, advertised: &str) -> Option<String> {
    let mut envelope: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(json).ok()?;
    let current = envelope.get("recipient")?.as_str()?;
    if current == advertised || parse_account(current.as_bytes()) != Some(to) {
        return None;
    }
    envelope.insert(
        "recipient".to_owned(),
        serde_json::Value::String(advertised.to_owned()),
    );
    serde_json::to_string(&envelope).ok()
}

fn slot_open(slot: Option<Slot>) -> bool {
    slot.is_some_and(|s| s.phase == Phase::Open)
}

fn has_open(ident: &Identity) -> bool {
    slot_open(ident.payee) || slot_open(ident.payer)
}

fn misbehaviour_error(e: &PeerMisbehaviour, request: BlockRequest) -> PeerError {
    match e {
        PeerMisbehaviour::QueueOverflow { .. } => PeerError::QueueOverflow(request),
        _ => PeerError::InvalidRequest(request),
    }
}

impl EngineHooks for Coordinator {
    fn on_peer_connected(
        &mut self,
        now: Instant,
        peer: PeerKey,
        info: PeerInfo,
    ) -> Result<(), UsageError> {
        self.handle_peer_connected(now, peer, info)
    }

    fn extended_handshake_contribution(&self) -> HandshakeContribution {
        Coordinator::extended_handshake_contribution(self)
    }

    fn on_extended_handshake(
        &mut self,
        now: Instant,
        peer: PeerKey,
        handshake: &PeerExtendedHandshake,
    ) -> Result<(), Error> {
        self.handle_extended_handshake(now, peer, handshake)
    }

    fn on_extension_message(
        &mut self,
        now: Instant,
        peer: PeerKey,
        extension: &str,
        payload: &[u8],
    ) -> Result<(), Error> {
        self.handle_extension_message(now, peer, extension, payload)
    }

    fn on_request(
        &mut self,
        now: Instant,
        peer: PeerKey,
        request: BlockRequest,
    ) -> Result<RequestDecision, UsageError> {
        self.handle_request(now, peer, request)
    }

    fn on_cancel(
        &mut self,
        now: Instant,
        peer: PeerKey,
        request: BlockRequest,
    ) -> Result<(), UsageError> {
        self.handle_cancel(now, peer, request)
    }

    fn on_bytes_sent(
        &mut self,
        now: Instant,
        peer: PeerKey,
        request: BlockRequest,
        sent: u32,
    ) -> Result<(), UsageError> {
        self.handle_bytes_sent(now, peer, request, sent)
    }

    fn on_block_received(
        &mut self,
        now: Instant,
        peer: PeerKey,
        request: BlockRequest,
        bytes: u32,
    ) -> Result<(), UsageError> {
        self.handle_block_received(now, peer, request, bytes)
    }

    fn on_piece_verified(&mut self, now: Instant, torrent: TorrentKey, piece: u32, length: u32) {
        self.handle_piece_verified(now, torrent, piece, length);
    }

    fn on_piece_failed(&mut self, now: Instant, torrent: TorrentKey, piece: u32, length: u32) {
        self.handle_piece_failed(now, torrent, piece, length);
    }

    fn on_remote_choke(
        &mut self,
        now: Instant,
        peer: PeerKey,
        choked: bool,
    ) -> Result<(), UsageError> {
        self.handle_remote_choke(now, peer, choked)
    }

    fn on_remote_interest(
        &mut self,
        now: Instant,
        peer: PeerKey,
        interested: bool,
    ) -> Result<(), UsageError> {
        self.handle_remote_interest(now, peer, interested)
    }

    fn on_local_choke(
        &mut self,
        now: Instant,
        peer: PeerKey,
        choked: bool,
    ) -> Result<(), UsageError> {
        self.handle_local_choke(now, peer, choked)
    }

    fn on_tick(&mut self, now: Instant) {
        self.handle_timeout(now);
    }

    fn on_disconnect(&mut self, now: Instant, peer: PeerKey) -> Result<(), UsageError> {
        self.handle_disconnect(now, peer)
    }

    fn poll_engine_command(&mut self) -> Option<EngineCommand> {
        Coordinator::poll_engine_command(self)
    }

    fn poll_timeout(&self) -> Option<Instant> {
        Coordinator::poll_timeout(self)
    }
}

/// Lets `planner` pay at most `bytes` more than it has paid so far: the coordinator alone sizes
/// payments (window, terms, deposit), the planner only carries them out.
fn allow_bytes(planner: &mut PaymentPlanner, bytes: u64) {
    let paid = planner.stats().bytes_paid;
    planner.set_bytes_wanted(Some(paid.saturating_add(bytes)));
}
