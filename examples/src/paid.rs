//! Paid transfers: the torrent plugged into torrent-glue's reference tokio adapter
//! ([`torrent_glue::adapter::Node`]), with a payment-channel [`Client`] on the simulated chain or
//! on an Ethereum node.
//!
//! [`Torrent`] implements the adapter's [`PieceSource`] and [`PieceSink`]: the adapter owns the
//! sockets and the paid-streaming flows, the torrent keeps storage, piece selection and
//! verification. [`PaidNode`] wires one torrent, one wallet and one coordinator together.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use paid_wire::choke::TrustPolicy;
use paid_wire::message::BlockRequest;
use payment_channel::chain::Chain;
use payment_channel::client::{Client, ClientConfig};
use payment_channel::policy::{AssetLimits, JoinPolicy};
use payment_channel::sign::{LocalSigner, Signer};
use payment_channel::store::ChannelStore;
use payment_channel::{Address, B256, MemoryStore, RedbStore, SimulatedChain, U256};
use tokio::sync::mpsc;
use torrent_glue::adapter::{
    BLOCK_LEN, ChannelBackend, ClientBackend, Delivery, HubBackend, HubConfig, HubError, Node,
    NodeConfig, PieceSink, PieceSource,
};
use torrent_glue::engine::HubInfo;
use torrent_glue::engine::TorrentKey;
use torrent_glue::{
    AssetTerms, Coordinator, CoordinatorConfig, CoordinatorEvent, DownloadConfig, IdentityConfig,
    LivenessConfig, NonPayingPolicy, UploadConfig,
};

use crate::torrent::{Received, Torrent};

/// The only torrent of a [`PaidNode`].
pub const TORRENT: TorrentKey = TorrentKey(0);

/// Block requests kept in flight per connection (64 × 16 KiB = 1 MiB).
pub const PIPELINE: usize = 64;

/// Setting up payments failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PaidError {
    /// The payment-channel client or its store failed.
    #[error("payment channel: {0}")]
    Channel(#[from] payment_channel::error::Error),
    /// The channel store could not be opened.
    #[error("channel store: {0}")]
    Store(#[from] payment_channel::store::StoreError),
    /// The coordinator configuration is invalid.
    #[error("configuration: {0}")]
    Config(#[from] torrent_glue::ConfigError),
    /// The coordinator refused the torrent.
    #[error("torrent: {0}")]
    Usage(#[from] torrent_glue::UsageError),
    /// The hub could not be reached or its node did not open.
    #[error("hub: {0}")]
    Hub(#[from] HubError),
    /// A key is not a valid secp256k1 secret key.
    #[error("invalid key")]
    Key,
    /// The Ethereum node could not be used.
    #[error("ethereum: {0}")]
    Ethereum(String),
    /// The asset is not an ERC-20 token on this chain.
    #[error("asset {0} is not an ERC-20 token here: {1}")]
    Asset(Address, String),
}

impl PieceSource for Torrent {
    fn piece_count(&self) -> u32 {
        Torrent::piece_count(self)
    }

    fn has_piece(&self, piece: u32) -> bool {
        Torrent::has_piece(self, piece)
    }

    fn read_block(&self, request: BlockRequest) -> Option<Bytes> {
        // A storage error is reported as "not available": the adapter rejects the request.
        Torrent::read_block(self, &request).ok().flatten()
    }

    fn metadata(&self) -> Option<Bytes> {
        Some(Bytes::copy_from_slice(self.meta().raw_info()))
    }
}

impl PieceSink for Torrent {
    fn remaining(&self) -> u64 {
        self.bytes_left()
    }

    fn pick_block(&self, peer_has: &dyn Fn(u32) -> bool) -> Option<BlockRequest> {
        self.pick(peer_has, 1, &[]).into_iter().next()
    }

    fn deliver(&self, request: BlockRequest, data: Bytes) -> Delivery {
        let length = self.meta().info.piece_size(request.index);
        match self.receive_block(request.index, request.begin, &data) {
            Ok(Received::Ignored) => Delivery::Unwanted,
            Ok(Received::Stored) => Delivery::Stored,
            Ok(Received::PieceVerified(piece)) => Delivery::Verified { piece, length },
            Ok(Received::PieceFailed(piece)) => Delivery::Failed { piece, length },
            // The piece could not be written: it is wanted again.
            Err(_) => Delivery::Failed {
                piece: request.index,
                length,
            },
        }
    }

    fn abandon(&self, request: BlockRequest) {
        Torrent::abandon(self, &[request]);
    }
}

/// Where channels are settled.
#[derive(Debug, Clone)]
pub enum ChainChoice {
    /// The in-process simulated adjudicator (shared by every node of this process).
    Simulated(SimulatedChain),
    /// An Ethereum node over JSON-RPC (feature `ethereum`), e.g. a local anvil.
    #[cfg(feature = "ethereum")]
    #[cfg_attr(docsrs, doc(cfg(feature = "ethereum")))]
    Ethereum(EthereumChoice),
}

/// An Ethereum node and the deployed Nitro contracts. Its `Debug` shows the RPC URL redacted
/// ([`redact::rpc_url`](crate::redact::rpc_url)) and not the key.
#[cfg(feature = "ethereum")]
#[cfg_attr(docsrs, doc(cfg(feature = "ethereum")))]
#[derive(Clone)]
pub struct EthereumChoice {
    /// JSON-RPC URL.
    pub rpc: String,
    /// Secret key of the account that sends transactions (deposits, challenges, payouts).
    pub key: B256,
    /// `NitroAdjudicator` address.
    pub adjudicator: Address,
    /// `PaymentApp` address.
    pub app: Address,
}

#[cfg(feature = "ethereum")]
impl std::fmt::Debug for EthereumChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EthereumChoice")
            .field("rpc", &crate::redact::rpc_url(&self.rpc))
            .field("adjudicator", &self.adjudicator)
            .field("app", &self.app)
            .finish_non_exhaustive()
    }
}

/// What channels are paid in, and how its amounts are written for people: the native coin in
/// wei, an ERC-20 in whole tokens (its `decimals`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Units {
    /// `Address::ZERO` for the native coin, else the ERC-20 token.
    pub asset: Address,
    /// The token's `decimals()` (18 for the native coin).
    pub decimals: u8,
}

impl Default for Units {
    fn default() -> Self {
        Self::NATIVE
    }
}

impl Units {
    /// The chain's native coin.
    pub const NATIVE: Self = Self {
        asset: Address::ZERO,
        decimals: 18,
    };

    /// `amount` (in the asset's smallest unit) for people: `"1500 wei"` for the native coin,
    /// `"0.0015 tokens 0x5FbD…"` for a token with 6 decimals.
    pub fn format(&self, amount: u128) -> String {
        if self.asset == Address::ZERO {
            return format!("{amount} wei");
        }
        let Some(scale) = 10u128.checked_pow(u32::from(self.decimals)) else {
            return format!("{amount} units of token {}", self.asset);
        };
        let (whole, frac) = (amount / scale, amount % scale);
        let frac = format!("{frac:0width$}", width = usize::from(self.decimals));
        let frac = frac.trim_end_matches('0');
        let dot = if frac.is_empty() { "" } else { "." };
        format!("{whole}{dot}{frac} tokens {}", self.asset)
    }
}

/// A payment identity on a chain, with its channel store.
#[derive(Clone)]
pub struct Wallet {
    /// The channel signing key; its address is our `pseAccount` and where payouts go.
    pub signer: Arc<LocalSigner>,
    /// The chain handle (acting for the transaction account).
    pub chain: Arc<dyn Chain>,
    /// The `PaymentApp` address.
    pub app: Address,
    /// What our channels are paid in.
    pub units: Units,
    /// Durable (redb) or in-memory channel store.
    pub store: Arc<dyn ChannelStore>,
}

impl std::fmt::Debug for Wallet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wallet")
            .field("address", &self.signer.address())
            .field("chain_account", &self.chain.account())
            .field("app", &self.app)
            .finish_non_exhaustive()
    }
}

impl Wallet {
    /// Opens a wallet whose channels are paid in `asset` (`Address::ZERO`: the native coin).
    /// `signer` is the channel key (random if `None`); `store` a redb file (in memory if
    /// `None`). On the simulated chain the signer's address is also the transaction account.
    pub async fn open(
        chain: &ChainChoice,
        signer: Option<B256>,
        store: Option<&Path>,
        asset: Address,
    ) -> Result<Self, PaidError> {
        let signer = Arc::new(match signer {
            Some(k) => LocalSigner::from_bytes(&k).map_err(|_| PaidError::Key)?,
            None => LocalSigner::random(),
        });
        let store: Arc<dyn ChannelStore> = match store {
            Some(p) => Arc::new(RedbStore::open(p)?),
            None => Arc::new(MemoryStore::new()),
        };
        let (chain, app): (Arc<dyn Chain>, Address) = match chain {
            ChainChoice::Simulated(sim) => {
                (Arc::new(sim.handle(signer.address())), sim.app_definition())
            }
            #[cfg(feature = "ethereum")]
            ChainChoice::Ethereum(eth) => {
                let c = payment_channel::chain::EthereumChain::connect(
                    &eth.rpc,
                    &eth.key,
                    eth.adjudicator,
                )
                .await
                .map_err(|e| PaidError::Ethereum(e.to_string()))?;
                (Arc::new(c), eth.app)
            }
        };
        let decimals = chain
            .decimals(asset)
            .await
            .map_err(|e| PaidError::Asset(asset, e.to_string()))?;
        Ok(Self {
            signer,
            chain,
            app,
            units: Units { asset, decimals },
            store,
        })
    }

    /// Our `pseAccount`.
    pub fn address(&self) -> Address {
        self.signer.address()
    }
}

/// What we sell, as an uploader.
#[derive(Debug, Clone)]
pub struct SellTerms {
    /// Price per byte, in the smallest unit of the wallet's asset.
    pub price_per_byte: u128,
    /// Bytes served to a paying peer before its first payment.
    pub trust_bytes: u64,
    /// Deposit asked of each payer.
    pub deposit: u128,
    /// Bytes a peer without the extension (a stock client) gets for free per connection;
    /// `None`: nothing.
    pub free_bytes: Option<u64>,
    /// Challenge duration of the channels we propose, in seconds.
    pub challenge_duration: u64,
}

/// What we buy, as a downloader.
#[derive(Debug, Clone)]
pub struct BuyTerms {
    /// Total we may lock or spend, in the smallest unit of the wallet's asset.
    pub budget: u128,
    /// Highest price per byte we accept.
    pub max_price_per_byte: u128,
    /// Bytes bought per payment.
    pub granularity_bytes: u64,
    /// Most bytes paid ahead of what was received (`DownloadConfig::max_pay_ahead_bytes`); 0
    /// pays only on STOP.
    pub max_pay_ahead_bytes: u64,
}

impl BuyTerms {
    /// The downloader's configuration: the buyer's window
    /// ([`DownloadConfig::window_bytes`]) counts the [`PIPELINE`] of requests in flight.
    pub fn download_config(&self) -> DownloadConfig {
        DownloadConfig::default()
            .with_granularity_bytes(self.granularity_bytes)
            .with_pay_ahead(self.max_pay_ahead_bytes > 0)
            .with_max_pay_ahead_bytes(self.max_pay_ahead_bytes)
            .with_max_price_per_byte(self.max_price_per_byte)
            .with_max_deposit(self.budget)
            .with_budget(self.budget)
            .with_in_flight_bytes(PIPELINE as u64 * u64::from(BLOCK_LEN))
    }
}

/// Channels through a hub (`--hub`): virtual channels with peers that use the same hub.
#[derive(Clone)]
pub struct HubTerms {
    /// `host:port` of the hub (its address is learned from the signed handshake).
    pub endpoint: String,
    /// The deployed `ConsensusApp` (ledgers).
    pub consensus_app: Address,
    /// Buying: what we deposit into our one ledger with the hub; `None`: no ledger of ours.
    pub ledger_deposit: Option<u128>,
    /// Selling: ask the hub for a ledger it funds.
    pub request_ledger: bool,
    /// The fee we pay the hub per virtual channel.
    pub fee: u128,
    /// Challenge duration of our ledger and of the virtual channels, seconds.
    pub challenge_duration: u64,
    /// Where the ledger and the virtual channels are kept (not the channel store: its records
    /// are direct channels).
    pub store: Arc<dyn ChannelStore>,
    /// The chain handle for the ledger's transactions (`None`: the wallet's).
    pub chain: Option<Arc<dyn Chain>>,
    /// How often the hub node watches the chain.
    pub watch_every: Duration,
}

impl std::fmt::Debug for HubTerms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubTerms")
            .field("endpoint", &self.endpoint)
            .field("ledger_deposit", &self.ledger_deposit)
            .field("fee", &self.fee)
            .finish_non_exhaustive()
    }
}

/// One torrent served or downloaded through the glue adapter, with payments.
#[derive(Debug, Clone)]
pub struct PaidNode {
    /// The adapter node.
    pub node: Node,
    /// The payment-channel client.
    pub client: Client,
    /// Our payment identity.
    pub account: Address,
    /// The torrent.
    pub torrent: Arc<Torrent>,
    /// The hub backend, when started with [`HubTerms`].
    pub hub: Option<Arc<HubBackend>>,
}

impl PaidNode {
    /// Starts a node for `torrent`: selling with `sell`, buying with `buy` (either may be
    /// `None`). Channels left in the wallet's store by an earlier run are reloaded and adopted
    /// (their [`CoordinatorEvent::ChannelRestored`] events are the first of the returned
    /// stream).
    pub async fn start(
        torrent: Arc<Torrent>,
        wallet: &Wallet,
        sell: Option<SellTerms>,
        buy: Option<BuyTerms>,
        liveness: LivenessConfig,
    ) -> Result<(Self, mpsc::UnboundedReceiver<CoordinatorEvent>), PaidError> {
        Self::start_with_hub(
            torrent,
            wallet,
            sell,
            buy,
            liveness,
            IdentityConfig::default(),
            None,
        )
        .await
    }

    /// [`PaidNode::start`] with the given identity rules (e.g.
    /// [`LegacyPolicy::TrustClaimedAccount`](torrent_glue::LegacyPolicy::TrustClaimedAccount)
    /// to pay and be paid by web3torrent peers, which cannot prove their account), and with
    /// channels through a hub when `hub` is given (advertised in our handshake; direct channels
    /// with peers that use another hub or none).
    pub async fn start_with_hub(
        torrent: Arc<Torrent>,
        wallet: &Wallet,
        sell: Option<SellTerms>,
        buy: Option<BuyTerms>,
        liveness: LivenessConfig,
        identity: IdentityConfig,
        hub: Option<HubTerms>,
    ) -> Result<(Self, mpsc::UnboundedReceiver<CoordinatorEvent>), PaidError> {
        let mut client_config = ClientConfig::new(wallet.app);
        client_config.asset = wallet.units.asset;
        if let Some(s) = &sell {
            client_config.challenge_duration = s.challenge_duration;
        }
        let (client, events) = Client::open(
            client_config,
            wallet.signer.clone(),
            wallet.chain.clone(),
            wallet.store.clone(),
            None,
        )
        .await?;
        // Only our asset: a channel in anything else is refused (the coordinator's budget and
        // prices are in our asset's units).
        let mut policy = JoinPolicy::new(wallet.app, U256::MAX, U256::MAX)
            .only_asset(wallet.units.asset, AssetLimits::new(U256::MAX, U256::MAX));
        // A short challenge window only shortens how long our deposit could be stuck; the
        // payee cannot take more than our largest voucher.
        policy.min_challenge_duration = 1;
        if let Some(b) = &buy {
            policy = policy.with_max_price(U256::from(b.max_price_per_byte));
        }
        let direct = ClientBackend::new(client.clone(), events, Some(policy));
        let (backend, hub_backend): (Arc<dyn ChannelBackend>, _) = match hub {
            None => (Arc::new(direct), None),
            Some(h) => {
                let b = Arc::new(
                    HubBackend::start(
                        wallet.signer.clone(),
                        h.chain.unwrap_or_else(|| wallet.chain.clone()),
                        h.store,
                        direct,
                        HubConfig::new(
                            HubInfo {
                                address: Address::ZERO,
                                endpoint: h.endpoint,
                            },
                            payment_channel::virtual_channel::PartyConfig::new(
                                h.consensus_app,
                                wallet.app,
                            ),
                        )
                        .with_asset(wallet.units.asset)
                        .with_challenge_duration(h.challenge_duration)
                        .with_ledger_deposit(h.ledger_deposit.map(U256::from))
                        .with_request_ledger(h.request_ledger)
                        .with_fee(U256::from(h.fee))
                        .with_watch_every(h.watch_every),
                    )
                    .await?,
                );
                (b.clone() as Arc<dyn ChannelBackend>, Some(b))
            }
        };
        let account = wallet.address();
        let mut config = CoordinatorConfig::new(account, account);
        config.hub = hub_backend.as_ref().map(|b| b.hub().clone());
        config.liveness = liveness;
        config.identity = identity;
        config.upload = sell.as_ref().map(|s| {
            let mut up = UploadConfig::default();
            up.choke.price_per_byte = s.price_per_byte;
            up.choke.trust = TrustPolicy::fixed(s.trust_bytes);
            up.deposit = s.deposit;
            up.asset = (wallet.units.asset != Address::ZERO).then_some(AssetTerms {
                asset: wallet.units.asset,
                decimals: wallet.units.decimals,
            });
            up
        });
        config.non_paying = match sell.as_ref().and_then(|s| s.free_bytes) {
            Some(bytes) => NonPayingPolicy::FreeAllowance { bytes },
            None => NonPayingPolicy::Refuse,
        };
        config.download = buy.as_ref().map(BuyTerms::download_config);
        if buy.is_some() {
            // Every duplicate block of an endgame would be paid for.
            torrent.set_endgame(false);
        }
        let coordinator = Coordinator::with_signer(config, wallet.signer.clone())?;
        let mut node_config = NodeConfig::new(torrent.peer_id());
        node_config.pipeline = PIPELINE;
        node_config.tick = Duration::from_millis(100);
        node_config.client_name = concat!("paid-torrent ", env!("CARGO_PKG_VERSION")).into();
        let node = Node::start(coordinator, node_config, backend);
        node.add_torrent(TORRENT, torrent.info_hash(), torrent.clone())?;
        let events = node.subscribe();
        // Channels an earlier run left in the store: carried on with (see `Node::restore`).
        node.restore().await;
        Ok((
            Self {
                node,
                client,
                account,
                torrent,
                hub: hub_backend,
            },
            events,
        ))
    }

    /// Reads the chain once (finalizes and pays out challenges that timed out).
    pub async fn watch_chain(&self) -> Result<(), PaidError> {
        Ok(self.client.watch_chain().await?)
    }

    /// Whether every channel of the client is paid out.
    pub async fn all_settled(&self) -> bool {
        for id in self.client.channel_ids() {
            if self
                .client
                .channel_info(id)
                .await
                .is_some_and(|i| !i.settled)
            {
                return false;
            }
        }
        true
    }
}
