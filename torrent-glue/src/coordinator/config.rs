//! Coordinator configuration: identity, the uploader's and the downloader's policies, the policy
//! for peers without the extension, and liveness timers.

use std::time::Duration;

use derive_setters::Setters;
use paid_wire::choke::{BlockedPolicy, ChokeConfig};
use payment_channel::Address;

use crate::engine::{AssetTerms, ChokeAuthority, HubInfo, Terms};
use crate::error::ConfigError;

/// Configuration of a [`Coordinator`](crate::Coordinator).
///
/// Build it with [`CoordinatorConfig::new`] and the `with_*` setters
/// (`CoordinatorConfig::new(account, account).with_upload(None)`), or assign the public fields of
/// a `let mut` binding. This and the other configs here are non-exhaustive: a field may be added
/// in a minor release.
#[derive(Debug, Clone, PartialEq, Eq, Setters)]
#[setters(prefix = "with_")]
#[non_exhaustive]
pub struct CoordinatorConfig {
    /// Our `pseAccount`: the payment-channel signing address. Channel messages addressed to
    /// anyone else are dropped.
    pub account: Address,
    /// Our `outcomeAddress`: where our channel funds go.
    pub outcome_address: Address,
    /// Who controls BitTorrent choking. Default [`ChokeAuthority::Glue`].
    pub choke_authority: ChokeAuthority,
    /// Selling: `None` serves every peer for free (no gating at all).
    pub upload: Option<UploadConfig>,
    /// Buying: `None` never joins a channel nor pays (paid uploaders then serve only their trust).
    pub download: Option<DownloadConfig>,
    /// What peers without the paid-streaming extension get from us.
    /// Default [`NonPayingPolicy::Refuse`].
    pub non_paying: NonPayingPolicy,
    /// Timers that detect unresponsive or vanished counterparties.
    pub liveness: LivenessConfig,
    /// Requests held (deferred) per peer while we wait for its extended handshake. Default 64.
    pub max_deferred_requests: usize,
    /// Channel messages held per peer identity while it has no connection (delivered when it
    /// reconnects; the oldest are dropped beyond this). Default 32.
    pub max_outbox: usize,
    /// Identity proofs and per-stranger bounds.
    pub identity: IdentityConfig,
    /// The hub we fund channels through, advertised under [`HUB_KEY`](crate::engine::HUB_KEY)
    /// (the channel client is configured with the same one; each
    /// [`ChannelCommand::Create`](crate::ChannelCommand::Create) names the peer's). Default
    /// `None`: nothing advertised, direct channels.
    pub hub: Option<HubInfo>,
}

impl CoordinatorConfig {
    /// Sells with [`UploadConfig::default`], buys with [`DownloadConfig::default`], refuses
    /// non-paying peers, glue-controlled choking.
    pub fn new(account: Address, outcome_address: Address) -> Self {
        Self {
            account,
            outcome_address,
            choke_authority: ChokeAuthority::Glue,
            upload: Some(UploadConfig::default()),
            download: Some(DownloadConfig::default()),
            non_paying: NonPayingPolicy::Refuse,
            liveness: LivenessConfig::default(),
            max_deferred_requests: 64,
            max_outbox: 32,
            identity: IdentityConfig::default(),
            hub: None,
        }
    }

    /// Checks the configuration.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.account == Address::ZERO {
            return Err(ConfigError::ZeroAccount);
        }
        if let Some(up) = &self.upload {
            up.choke.validate()?;
        }
        if let Some(down) = &self.download {
            if down.granularity_bytes == 0 {
                return Err(ConfigError::ZeroGranularity);
            }
            if down.max_price_per_byte == 0 {
                return Err(ConfigError::ZeroMaxPrice);
            }
        }
        let id = &self.identity;
        if id.disconnect_after_strikes == Some(0)
            || id.max_channel_commands == 0
            || id.max_channels_per_connection == 0
            || id.max_channels_per_window == 0
        {
            return Err(ConfigError::ZeroLimit);
        }
        Ok(())
    }
}

/// The uploader's (payee's) policy.
#[derive(Debug, Clone, PartialEq, Eq, Setters)]
#[setters(prefix = "with_")]
#[non_exhaustive]
pub struct UploadConfig {
    /// Per-connection gate: price per byte, trust allowance, pay-ahead prompt watermark,
    /// blocked-request policy, queue bound, payment timeout, strike limit. Its
    /// `fast_negotiated` is overridden per peer. The trust allowance is granted **per payment
    /// identity**, not per connection: a reconnecting peer inherits what it already used.
    pub choke: ChokeConfig,
    /// Wei the payer is asked to deposit when we propose a channel.
    pub deposit: u128,
    /// Send the `prompt` notice when a paying peer's credit drops below the watermark (peers
    /// that do not know it ack and ignore it). Default `true`.
    pub send_prompts: bool,
    /// What to do when a STOP stays unpaid for `choke.payment_timeout`.
    /// Default [`OverduePolicy::Disconnect`].
    pub on_overdue: OverduePolicy,
    /// The ERC-20 we sell in, advertised with the terms; `None` (default): the native coin.
    /// The channel client's asset must be the same (it is what the proposals carry).
    pub asset: Option<AssetTerms>,
}

impl Default for UploadConfig {
    /// 1 wei/byte, no trust, prompt at 50 % of the last payment, requests queued until paid,
    /// STOP overdue after 60 s, 100 MB (1e8 wei) deposit.
    fn default() -> Self {
        Self {
            choke: ChokeConfig::default()
                .with_blocked(BlockedPolicy::QueueUntilPaid)
                .with_payment_timeout(Some(Duration::from_secs(60))),
            deposit: 100_000_000,
            send_prompts: true,
            on_overdue: OverduePolicy::Disconnect,
            asset: None,
        }
    }
}

impl UploadConfig {
    /// The terms we advertise.
    pub fn terms(&self) -> Terms {
        Terms {
            price_per_byte: self.choke.price_per_byte,
            trust_bytes: self.choke.trust.initial_bytes,
        }
    }
}

/// Reaction to a STOP left unpaid for the payment timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum OverduePolicy {
    /// Keep the connection; the queue was cleared and the peer may still pay.
    Wait,
    /// Send `permanent-stop`: the peer will not be served on this connection again.
    PermanentStop,
    /// Close the connection (the channel is closed later if the peer does not come back).
    Disconnect,
}

/// The downloader's (payer's) policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Setters)]
#[setters(prefix = "with_")]
#[non_exhaustive]
pub struct DownloadConfig {
    /// Bytes bought per payment (the payment granularity): the trust/overhead trade-off of
    /// web3torrent's `PEER_TRUST × BLOCK_LENGTH`.
    pub granularity_bytes: u64,
    /// Pay ahead when the uploader prompts, so a steady transfer never waits for a payment
    /// round trip. Default `true`.
    pub pay_ahead: bool,
    /// A prompt is answered with one granularity, then with more (each one granularity, all in
    /// flight at once) while the credit we think the uploader holds for us (paid + trust −
    /// received) is below the bytes the prompt suggests, up to this many bytes of credit.
    /// Several payments in flight keep a fast transfer from waiting one payment round trip per
    /// granularity. Bounds what an uploader can make us prepay. Default 1 MiB.
    pub max_pay_ahead_bytes: u64,
    /// Highest price per byte we join a channel at (uploaders advertise their price), and pay
    /// at: it is checked again on every payment. A channel's price and trust are fixed when we
    /// join it; a connection that asks to be paid under other terms is not paid (and the
    /// channel is closed).
    pub max_price_per_byte: u128,
    /// Largest deposit one channel may ask of us.
    pub max_deposit: u128,
    /// Total wei we may lock in deposits (open channels) and spend (closed channels).
    pub budget: u128,
    /// Bytes of block requests our engine keeps outstanding with one uploader (pipeline ×
    /// block length): blocks it may have served that are still on their way to us. One of the
    /// three parts of the [window](Self::window_bytes). Default 256 KiB, the 16 requests of
    /// 16 KiB of the adapter's default `NodeConfig::pipeline`; set it
    /// to what the engine really keeps in flight (e.g. pipeline × connections per uploader),
    /// or an honest uploader's STOP may wait for its blocks to arrive before it is paid.
    pub in_flight_bytes: u64,
    /// A STOP that arrives although what we paid should still cover the uploader (typically it
    /// crossed a pay-ahead payment still in flight) is not paid at once: if no START follows
    /// within this time after our last payment, it is paid then. This is what keeps a
    /// pay-ahead downloader from paying twice for one exhaustion. Default 2 s.
    pub stop_grace: Duration,
    /// An uploader that asks to be paid (STOP, prompt) while the [window](Self::window_bytes)
    /// is full, and asks again although it delivered nothing for this long since, is a
    /// [`PeerError::AskedBeyondWindow`](crate::PeerError::AskedBeyondWindow). An honest one
    /// delivers what is in flight (its blocks, or the payments it has not processed yet) well
    /// within it. Default 10 s.
    pub window_timeout: Duration,
}

impl Default for DownloadConfig {
    /// 256 KiB per payment, pay-ahead on (up to 1 MiB ahead), 256 KiB of requests in flight
    /// (a window of 1.5 MiB), up to 1 wei/byte, 1e8 wei per channel, 1e9 in total.
    fn default() -> Self {
        Self {
            granularity_bytes: 256 * 1024,
            pay_ahead: true,
            max_pay_ahead_bytes: 1024 * 1024,
            max_price_per_byte: 1,
            max_deposit: 100_000_000,
            budget: 1_000_000_000,
            in_flight_bytes: 256 * 1024,
            stop_grace: Duration::from_secs(2),
            window_timeout: Duration::from_secs(10),
        }
    }
}

impl DownloadConfig {
    /// The buyer's window, in bytes: the most we ever pay for beyond what an uploader
    /// delivered, whatever it does (STOP and START in any order, prompts, reconnects, several
    /// connections, new terms):
    ///
    /// ```text
    /// window = in_flight_bytes + max_pay_ahead_bytes (0 without pay_ahead) + granularity_bytes
    /// ```
    ///
    /// It is always enforced, per payment identity and per channel: for each uploader,
    /// `bytes paid ≤ bytes received + window`, and for each channel (whose price is fixed when
    /// we join it, and never above [`max_price_per_byte`](Self::max_price_per_byte))
    /// `wei paid ≤ price × (bytes received on it + window)`. "Received" counts the piece bytes
    /// of our requests that arrived from that uploader (a channel counts them from when we
    /// joined it; after a restart, from when it was restored, as the store does not record
    /// bytes). An honest uploader stays within it: what it may have served and we have not
    /// received yet is in flight, what we pay ahead is bounded by the pay-ahead, and a STOP buys
    /// one granularity. A payment the window has no room for waits until bytes arrive; an
    /// uploader that keeps asking (STOP or prompt) without delivering anything for
    /// [`window_timeout`](Self::window_timeout) is a
    /// [`PeerError::AskedBeyondWindow`](crate::PeerError::AskedBeyondWindow): we stop paying
    /// it, close the channel, and challenge if the close is not answered.
    ///
    /// Default: 256 KiB + 1 MiB + 256 KiB = 1.5 MiB.
    pub fn window_bytes(&self) -> u64 {
        let ahead = if self.pay_ahead {
            self.max_pay_ahead_bytes
        } else {
            0
        };
        self.in_flight_bytes
            .saturating_add(ahead)
            .saturating_add(self.granularity_bytes)
    }
}

/// What a peer without the paid-streaming extension (no BEP 10 bit, no
/// `paidStreamingExtension` in its `m`, no valid `pseAccount`, or no extended handshake in
/// time) gets. None of these is a protocol error: a stock client stays connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum NonPayingPolicy {
    /// Nothing: kept choked (glue authority), every request rejected (BEP 6) or dropped.
    #[default]
    Refuse,
    /// Up to `bytes` per connection for free, then as [`NonPayingPolicy::Refuse`]: the first
    /// request the rest does not cover (a stock peer asks for whole blocks) is refused and the
    /// peer choked for good.
    FreeAllowance {
        /// The allowance in bytes.
        bytes: u64,
    },
    /// The BEP 6 allowed-fast set from [`PeerInfo::allowed_fast`](crate::PeerInfo::allowed_fast)
    /// as a free preview: announced with `allowed fast`, served while choked, everything else
    /// refused. Needs BEP 6; without it this is [`NonPayingPolicy::Refuse`].
    AllowedFastPreview,
}

/// Timers that detect unresponsive or vanished counterparties. A channel is challenged when the
/// counterparty stops answering channel messages for [`response_timeout`](Self::response_timeout).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Setters)]
#[setters(prefix = "with_")]
#[non_exhaustive]
pub struct LivenessConfig {
    /// A peer that set the BEP 10 bit but sent no extended handshake this long after connecting
    /// is treated as non-paying. Default 10 s.
    pub handshake_timeout: Duration,
    /// The counterparty must answer channel work we started (a proposal, a join, a close) within
    /// this time; every channel message it sends restarts the clock. On expiry an unfunded
    /// proposal is abandoned and a funded channel is challenged. Default 60 s.
    pub response_timeout: Duration,
    /// Close a channel whose counterparty has had no connection for this long (`None`: keep it
    /// open for a later reconnect). Default 30 s.
    pub idle_close_after: Option<Duration>,
    /// Downloader: if the uploader sends neither data nor START for this long after one of our
    /// payments, close the channel (it takes payments without serving). Default `None`.
    pub stall_timeout: Option<Duration>,
}

impl Default for LivenessConfig {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(10),
            response_timeout: Duration::from_secs(60),
            idle_close_after: Some(Duration::from_secs(30)),
            stall_timeout: None,
        }
    }
}

/// What a peer that cannot prove its `pseAccount` gets (the original web3torrent sends the
/// account and no proof; see [`crate::identity`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum LegacyPolicy {
    /// It is a non-paying peer
    /// ([`NonPayingReason::Unauthenticated`](crate::coordinator::NonPayingReason::Unauthenticated)),
    /// served under [`NonPayingPolicy`]: no channel, no payment, no channel message. The safe
    /// default: an unproven account may be anyone's (every peer advertises its own).
    #[default]
    NonPaying,
    /// Its claimed account is believed, as web3torrent does. **Unsafe** among strangers: a
    /// peer claiming a buyer's account is served on that buyer's payments and receives the
    /// channel messages meant for it. Only for closed deployments where every peer is trusted
    /// not to lie about its account.
    TrustClaimedAccount,
}

/// Identity proofs, and what one stranger may cost us.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Setters)]
#[setters(prefix = "with_")]
#[non_exhaustive]
pub struct IdentityConfig {
    /// Peers that announce no `pseAuth`. Default [`LegacyPolicy::NonPaying`].
    pub legacy: LegacyPolicy,
    /// Extended handshakes processed per connection; later ones are ignored and each is a
    /// strike ([`PeerError::TooManyHandshakes`](crate::PeerError::TooManyHandshakes)).
    /// Default 8.
    pub max_extended_handshakes: u32,
    /// Strikes (bad identity proofs, channel messages with a bad signature, extended handshakes
    /// beyond the limit) after which the connection is closed
    /// ([`DisconnectReason::Strikes`](crate::engine::DisconnectReason::Strikes)); `None`:
    /// never. Default 3.
    pub disconnect_after_strikes: Option<u32>,
    /// Channel commands queued for the channel client at most (`poll_channel_command`); work
    /// a stranger causes beyond it is refused (a proposal is not made, a message not pushed)
    /// rather than queued. Default 1024.
    pub max_channel_commands: usize,
    /// Proposals to one identity from one connection that it left unfunded, at most (each
    /// costs a signature and durable writes); the channels it funded do not count, so a buyer
    /// that needs a fifth deposit on one connection gets it. Beyond: that connection gets
    /// `permanent-stop`. As a payer, we look for a payee's nonce up to this many indices past
    /// the last channel we funded on the connection. Default 4.
    pub max_channels_per_connection: u32,
    /// Channels we propose overall within [`channel_window`](Self::channel_window) at most.
    /// Default 64.
    pub max_channels_per_window: u32,
    /// The window of [`max_channels_per_window`](Self::max_channels_per_window). Default 60 s.
    pub channel_window: Duration,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        Self {
            legacy: LegacyPolicy::NonPaying,
            max_extended_handshakes: 8,
            disconnect_after_strikes: Some(3),
            max_channel_commands: 1024,
            max_channels_per_connection: 4,
            max_channels_per_window: 64,
            channel_window: Duration::from_secs(60),
        }
    }
}
