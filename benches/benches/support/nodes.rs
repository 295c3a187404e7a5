//! Whole-stack peers for the `transfer` and `scale` benches: a `torrent_glue::adapter::Node`
//! (paid-wire codec, choke controller, coordinator) driving a real `payment_channel::Client`
//! (k256 signatures, `MemoryStore`) on a shared `SimulatedChain`, as in
//! `torrent-glue/tests/adapter.rs`.

#![allow(dead_code)] // shared by several bench binaries, each using a subset

use std::sync::Arc;
use std::time::Duration;

use paid_wire::choke::{PromptPolicy, TrustPolicy, Watermark};
use payment_channel::sign::{LocalSigner, Signer};
use payment_channel::{SimulatedChain, U256};
use tokio::sync::mpsc;
use torrent_glue::adapter::{ChannelBackend, MemoryTorrent, Node, NodeConfig, TorrentMeta};
use torrent_glue::test_utils;
use torrent_glue::{Address, Coordinator, CoordinatorConfig, CoordinatorEvent, TorrentKey};

pub(crate) const INFO_HASH: [u8; 20] = [0x17; 20];
pub(crate) const T: TorrentKey = TorrentKey(0);

/// A node with its torrent store, account and event stream.
pub(crate) struct Peer {
    pub(crate) node: Node,
    pub(crate) store: Arc<MemoryTorrent>,
    pub(crate) account: Address,
    pub(crate) events: mpsc::UnboundedReceiver<CoordinatorEvent>,
}

/// Pseudo-random content, so that piece hashes differ.
pub(crate) fn content(len: usize) -> Vec<u8> {
    test_utils::pseudo_random_content(len as u64)
}

async fn peer(
    chain: &SimulatedChain,
    store: Arc<MemoryTorrent>,
    funds: u64,
    seed: u8,
    configure: impl FnOnce(&mut CoordinatorConfig),
    wrap: impl FnOnce(Arc<dyn ChannelBackend>) -> Arc<dyn ChannelBackend>,
) -> Peer {
    let signer = Arc::new(LocalSigner::random());
    let account = signer.address();
    if funds > 0 {
        chain.fund(account, U256::from(funds)).expect("fund");
    }
    let (_, backend) = test_utils::client_backend(
        chain,
        Arc::new(chain.handle(account)),
        signer.clone(),
        60,
        Some(test_utils::accept_any(chain)),
    )
    .await;
    // `PRESIGN_AHEAD=n` overrides how many vouchers the downloader signs ahead (0: none).
    let backend = match std::env::var("PRESIGN_AHEAD")
        .ok()
        .and_then(|n| n.parse().ok())
    {
        Some(n) => backend.presign_ahead(n),
        None => backend,
    };
    let backend = wrap(Arc::new(backend));
    let mut config = CoordinatorConfig::new(account, account);
    configure(&mut config);
    let coordinator = Coordinator::with_signer(config, signer).expect("config");
    let mut node_config = NodeConfig::new(*b"-PB0001-000000000000");
    node_config.peer_id[18] = seed;
    node_config.peer_id[19] = account.0[0];
    let node = Node::start(coordinator, node_config, backend);
    node.add_torrent(T, INFO_HASH, store.clone())
        .expect("torrent");
    let events = node.subscribe();
    Peer {
        node,
        store,
        account,
        events,
    }
}

/// The seeder's pay-ahead prompt: when a buyer's credit drops under 768 KiB (more than the
/// downloader's request pipeline, 16 × 16 KiB, plus a payment round trip at a few hundred MiB/s),
/// suggest topping it up to 1 MiB. The default (prompt at 50 % of the last payment, suggest one
/// payment) keeps one payment in flight, which caps a transfer at one granularity per payment
/// round trip.
pub(crate) const PROMPT: PromptPolicy = PromptPolicy {
    watermark: Watermark::Bytes(768 * 1024),
    suggested_bytes: Some(1024 * 1024),
};

/// A seeder of `store` at 1 wei/byte that trusts each buyer with `trust` bytes, proposes
/// channels of `deposit` wei and prompts with [`PROMPT`]; it buys nothing. Everything else is
/// the default policy (requests queued until paid).
pub(crate) async fn seller(
    chain: &SimulatedChain,
    store: Arc<MemoryTorrent>,
    trust: u64,
    deposit: u128,
) -> Peer {
    peer(
        chain,
        store,
        0,
        0,
        |c| {
            let up = c.upload.as_mut().expect("upload");
            up.choke.trust = TrustPolicy::fixed(trust);
            up.choke.prompt = Some(PROMPT);
            up.deposit = deposit;
            c.download = None;
            // The scale run has every downloader ask for a channel at once: lift the limits a
            // public seeder keeps against strangers (64 new channels a minute, 1,024 queued
            // channel commands), which would measure the rate limit instead.
            c.identity.max_channels_per_window = u32::MAX;
            c.identity.max_channel_commands = 1 << 20;
            // Every voucher is verified by the seeder's one channel task, in arrival order: at
            // 10,000 channels paying at once a buyer's voucher waits behind thousands of others,
            // longer than the default 60 s a STOP may stay unpaid (the buyer was disconnected
            // and the run stalled). A transfer with a few buyers never gets near it.
            up.choke.payment_timeout = None;
            c.liveness.response_timeout = Duration::from_secs(3600);
            c.liveness.handshake_timeout = Duration::from_secs(3600);
            c.liveness.idle_close_after = None;
        },
        |b| b,
    )
    .await
}

/// A buyer of `meta` (funded with `funds` wei) paying `granularity` bytes per payment, with
/// pay-ahead; it sells nothing.
pub(crate) async fn buyer(
    chain: &SimulatedChain,
    meta: TorrentMeta,
    granularity: u64,
    funds: u64,
    seed: u8,
) -> Peer {
    buyer_with(chain, meta, granularity, funds, seed, |b| b).await
}

/// [`buyer`], with its channel backend wrapped by `wrap`.
pub(crate) async fn buyer_with(
    chain: &SimulatedChain,
    meta: TorrentMeta,
    granularity: u64,
    funds: u64,
    seed: u8,
    wrap: impl FnOnce(Arc<dyn ChannelBackend>) -> Arc<dyn ChannelBackend>,
) -> Peer {
    peer(
        chain,
        Arc::new(MemoryTorrent::empty(meta)),
        funds,
        seed,
        |c| {
            c.upload = None;
            let down = c.download.as_mut().expect("download");
            down.granularity_bytes = granularity;
            down.pay_ahead = true;
            down.max_deposit = u128::MAX;
            down.budget = u128::MAX;
            // The scale run holds every payment back until all its channels are open, which
            // takes longer than these defaults allow a seller to wait for its money (10 s)
            // or a counterparty to answer (60 s) at 10,000 channels; transfers never get near.
            down.window_timeout = Duration::from_secs(3600);
            c.liveness.response_timeout = Duration::from_secs(3600);
            c.liveness.handshake_timeout = Duration::from_secs(3600);
            c.liveness.idle_close_after = None;
        },
        wrap,
    )
    .await
}
