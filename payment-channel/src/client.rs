//! The async driver: runs [`Channel`]s against a [`Chain`], a [`ChannelStore`] and a [`Transport`].
//!
//! A [`Client`] acts for one signing address and holds any number of channels, as payer or payee.
//! It is cheap to clone (all clones share state) and safe to use from several tasks; each channel
//! is processed by one task at a time.
//!
//! For every input it follows the [`Channel`] calling contract: it **persists** what the channel
//! asks for (best voucher first, then the snapshot) before anything leaves; then it publishes the
//! events, hands envelopes to the transport (or to [`Client::next_outbound`] when there is none),
//! and sends the chain transactions, feeding the resulting chain events back in.
//!
//! Nothing runs in the background: call [`Client::watch_chain`] periodically (e.g. every block
//! or every few seconds, and well within the shortest challenge duration). It reads the
//! adjudicator's events of all channels with **one** log query, applies each to its channel,
//! then performs each channel's on-chain duty.
//!
//! # On-chain duties
//!
//! What a channel owes the chain (counter a stale challenge, `conclude`, pay out, finish the
//! deposit, a challenge we asked for) is derived from its **persisted** state by
//! [`Channel::chain_duty`] on every watch, after a restart too (disputed channels included). A
//! failed transaction (node timeout, nonce clash, empty gas wallet) is retried on later watches
//! with exponential backoff in chain time (1 s, 2 s, 4 s, … up to
//! [`ClientConfig::max_retry_interval`]) until it lands or becomes moot. Before sending, the
//! chain is checked so that nothing is sent twice: a challenge is skipped when the channel
//! finalized or the adjudicator already records its turn, a `conclude` when the channel
//! finalized or holds nothing, a payout when the holdings are zero, a deposit when the holdings
//! already cover it (and it is re-sized to what is missing). No transaction is sent for nothing:
//! no challenge that claims nothing for us, no `conclude` or payout when our share or the
//! holdings are zero.
//!
//! # Confirmations and reorgs
//!
//! Events are applied only once [`ClientConfig::confirmations`] blocks (default: the chain's
//! [`Chain::default_confirmations`], 2 on `EthereumChain`, 0 on the simulator) follow their
//! block. Each watch re-reads that many blocks below the cursor and skips logs it already
//! applied (by block hash and log index), so a log that a shallow reorg moved to another block
//! is still applied once. Holdings are taken from the latest applied event, not accumulated.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use alloy_primitives::{Address, B256, U256};
use async_trait::async_trait;
use derive_setters::Setters;
use k256::elliptic_curve::rand_core::{OsRng, RngCore};
use tokio::sync::mpsc;

use crate::app::PAYMENT_APP_RUNTIME_HASH;
use crate::backoff::Backoff;
use crate::chain::{Chain, ChainError, ChainEventRecord, OnChainStatus, Revert, checks};
use crate::channel::{
    ChainAction, Channel, ChannelParams, ChannelSnapshot, Event, PhaseKind, Role, VerifiedVoucher,
};
use crate::error::{Error, PeerMisbehaved, PolicyRejection, UsageError};
use crate::message::{ChannelKey, Envelope, Message};
use crate::policy::JoinPolicy;
use crate::sign::Signer;
use crate::store::ChannelStore;
use crate::sync::lock;
use crate::voucher::Voucher;

/// An error a [`Transport`] reports.
pub type TransportError = Box<dyn std::error::Error + Send + Sync>;

/// Delivers messages of type `M` to peers by signing address: a [`Client`]'s envelopes (in
/// practice: the BEP-10 paid-streaming extension's `message` command of the connection to `to`),
/// or a [`PartyNode`](crate::party_node::PartyNode)'s
/// [`NodeMessage`](crate::party_node::NodeMessage)s.
///
/// Delivery may be lossy: the protocols tolerate drops, duplicates and reordering, and
/// [`Client::resend`] (or [`PartyNode::resend`](crate::party_node::PartyNode::resend)) repeats
/// what a peer may have missed. An `Err` is logged, not returned to the operation that produced
/// the message: that operation is already committed (a voucher is signed and stored, so the
/// payment counts) and only its delivery failed.
#[async_trait]
pub trait Transport<M: Send + 'static = Envelope>: Send + Sync {
    /// Sends `msg` to the peer with signing address `to`.
    async fn send(&self, to: Address, msg: M) -> Result<(), TransportError>;
}

#[async_trait]
impl<M: Send + 'static, T: Transport<M> + ?Sized> Transport<M> for Arc<T> {
    async fn send(&self, to: Address, msg: M) -> Result<(), TransportError> {
        (**self).send(to, msg).await
    }
}

#[allow(dead_code)]
struct _ObjectSafe(Box<dyn Transport>);

/// Settings of a [`Client`].
#[derive(Debug, Clone, PartialEq, Eq, Setters)]
#[setters(prefix = "with_")]
#[non_exhaustive]
pub struct ClientConfig {
    /// The deployed `PaymentApp` (used in the channels we create).
    pub app_definition: Address,
    /// The asset of the channels we create (`Address::ZERO`: the native coin; otherwise an
    /// ERC-20 address).
    pub asset: Address,
    /// Challenge duration of the channels we create, in seconds.
    pub challenge_duration: u64,
    /// Payer side: proposals this policy accepts are joined and funded automatically; others are
    /// refused. `None`: every valid proposal waits for [`Client::join`] (see [`Event::Proposed`]).
    pub auto_join: Option<JoinPolicy>,
    /// Blocks that must follow a block before its adjudicator events are applied. `None`: the
    /// chain's [`Chain::default_confirmations`] (2 on `EthereumChain`, 0 on the simulator).
    /// Keep `confirmations × block time` well below the challenge duration.
    pub confirmations: Option<u64>,
    /// Longest wait, in chain seconds, between two attempts of a failed on-chain duty (the
    /// wait doubles from 1 s up to this). Keep it well below the challenge duration. The waits
    /// are measured on the chain's clock ([`Chain::now`]): where it stands still (a simulator, an
    /// idle dev node) a failed duty is retried once it moves.
    pub max_retry_interval: u64,
    /// Check voucher signatures (payee) on tokio's blocking thread pool, outside the channel's
    /// lock, so that the task calling the client does not hold up its runtime worker for a
    /// signature. Default `false`: a hand-off to the pool costs a thread wake-up per voucher,
    /// which measured (`benches/`, 16 KiB per payment, libsecp256k1) at about three times the
    /// verification it moves; worth it only where a runtime worker must never run 25-80 µs of
    /// CPU. Signing ahead ([`Client::presign`]) always runs on the pool: it is batched.
    pub offload_signatures: bool,
}

impl ClientConfig {
    /// Channels on `app_definition` in the native coin with a one-hour challenge duration, no
    /// auto-join.
    pub fn new(app_definition: Address) -> Self {
        Self {
            app_definition,
            asset: Address::ZERO,
            challenge_duration: 3600,
            auto_join: None,
            confirmations: None,
            max_retry_interval: 60,
            offload_signatures: false,
        }
    }
}

/// An [`Event`] of one channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientEvent {
    /// The channel.
    pub channel_id: B256,
    /// What happened.
    pub event: Event,
}

/// A summary of one channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelInfo {
    /// The channel.
    pub channel_id: B256,
    /// Our role.
    pub role: Role,
    /// Its phase.
    pub phase: PhaseKind,
    /// The other participant.
    pub counterparty: Address,
    /// The deposit.
    pub deposit: U256,
    /// Payer: total sent. Payee: total received.
    pub paid: U256,
    /// The best voucher.
    pub best_voucher: Option<Voucher>,
    /// Whether a challenge is registered (or the channel finalized).
    pub disputed: bool,
    /// Whether the channel is paid out.
    pub settled: bool,
}

type Slot = Arc<tokio::sync::Mutex<Channel>>;

struct Inner {
    config: ClientConfig,
    signer: Arc<dyn Signer>,
    chain: Arc<dyn Chain>,
    store: Arc<dyn ChannelStore>,
    transport: Option<Arc<dyn Transport>>,
    channels: Mutex<HashMap<B256, Slot>>,
    outbox: Mutex<VecDeque<Envelope>>,
    events: mpsc::UnboundedSender<ClientEvent>,
    /// Serializes joins, so that two proposals cannot both pass the budget check.
    join_lock: tokio::sync::Mutex<()>,
    /// App addresses whose code was checked to be `PaymentApp` (deployed code does not change).
    verified_apps: Mutex<HashSet<Address>>,
    /// Per channel: when its failed duty may be tried again.
    backoff: Mutex<HashMap<B256, Backoff>>,
    /// Logs applied in the re-scanned window, by `(block hash, log index)`, with their block
    /// number (to forget them once below the window).
    applied: Mutex<HashMap<(B256, u64), u64>>,
}

/// The async payment-channel client. See the [module docs](self).
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("address", &self.inner.signer.address())
            .field("channels", &self.channel_ids().len())
            .finish_non_exhaustive()
    }
}

/// Blocks before the current one that a new channel still reads events from (see
/// `Client::first_block`): about 50 minutes of Ethereum mainnet.
pub const EVENT_LOOKBACK_BLOCKS: u64 = 256;

impl Client {
    /// Opens a client and reloads **every** channel in `store` (resume after a restart). Returns
    /// the client and its event stream.
    ///
    /// After opening, call [`Client::watch_chain`] (catches up on chain events and performs
    /// every channel's pending on-chain duty, disputed channels included) and
    /// [`Client::resend_all`] (repeats what peers may have missed).
    pub async fn open(
        config: ClientConfig,
        signer: Arc<dyn Signer>,
        chain: Arc<dyn Chain>,
        store: Arc<dyn ChannelStore>,
        transport: Option<Arc<dyn Transport>>,
    ) -> Result<(Self, mpsc::UnboundedReceiver<ClientEvent>), Error> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut channels = HashMap::new();
        for id in store.channel_ids().await? {
            let Some(record) = store.get_channel(id).await? else {
                continue;
            };
            let snapshot = ChannelSnapshot::from_bytes(&record)?;
            if snapshot.channel_id() != id {
                return Err(UsageError::CorruptSnapshot(format!(
                    "record of {id} is another channel"
                ))
                .into());
            }
            let voucher = store.get_voucher(id).await?;
            let channel = Channel::restore(signer.clone(), snapshot, voucher)?;
            channels.insert(id, Arc::new(tokio::sync::Mutex::new(channel)));
        }
        let client = Self {
            inner: Arc::new(Inner {
                config,
                signer,
                chain,
                store,
                transport,
                channels: Mutex::new(channels),
                outbox: Mutex::new(VecDeque::new()),
                events: tx,
                join_lock: tokio::sync::Mutex::new(()),
                verified_apps: Mutex::new(HashSet::new()),
                backoff: Mutex::new(HashMap::new()),
                applied: Mutex::new(HashMap::new()),
            }),
        };
        // Persist anything the restore merged (a voucher newer than the snapshot).
        for slot in client.slots() {
            let mut ch = slot.lock().await;
            client.drive(&mut ch).await?;
        }
        Ok((client, rx))
    }

    /// The client's settings.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// Our signing address.
    pub fn address(&self) -> Address {
        self.inner.signer.address()
    }

    /// Every channel we hold.
    pub fn channel_ids(&self) -> Vec<B256> {
        lock(&self.inner.channels).keys().copied().collect()
    }

    /// A summary of a channel.
    pub async fn channel_info(&self, channel_id: B256) -> Option<ChannelInfo> {
        let slot = self.slot(channel_id).ok()?;
        let ch = slot.lock().await;
        Some(ChannelInfo {
            channel_id,
            role: ch.role(),
            phase: ch.phase(),
            counterparty: ch.counterparty(),
            deposit: ch.deposit(),
            paid: ch.paid(),
            best_voucher: ch.best_voucher().copied(),
            disputed: ch.is_disputed(),
            settled: ch.is_settled(),
        })
    }

    /// Payee: proposes a channel in which `payer` deposits `deposit`, with a random nonce;
    /// returns its id.
    pub async fn create(
        &self,
        payer: Address,
        deposit: U256,
        price: Option<U256>,
    ) -> Result<B256, Error> {
        self.create_with_nonce(payer, deposit, price, OsRng.next_u64())
            .await
    }

    /// [`Client::create`] with the channel nonce given: one the payer helped choose, so it can
    /// check that the id is fresh (a payer should not fund an id it did not help create).
    pub async fn create_with_nonce(
        &self,
        payer: Address,
        deposit: U256,
        price: Option<U256>,
        nonce: u64,
    ) -> Result<B256, Error> {
        let params = ChannelParams {
            payer,
            deposit,
            channel_nonce: nonce,
            app_definition: self.inner.config.app_definition,
            challenge_duration: self.inner.config.challenge_duration,
            price,
            asset: self.inner.config.asset,
        };
        let mut channel = Channel::create(self.inner.signer.clone(), params)?;
        channel.advance_chain_cursor(self.first_block().await);
        let id = channel.id();
        let slot = Arc::new(tokio::sync::Mutex::new(channel));
        lock(&self.inner.channels).insert(id, slot.clone());
        let mut ch = slot.lock().await;
        self.drive(&mut ch).await?;
        Ok(id)
    }

    /// Payer: joins (and funds) a proposed channel. Retries the deposit if called again while
    /// funding.
    pub async fn join(&self, channel_id: B256) -> Result<(), Error> {
        let _guard = self.inner.join_lock.lock().await;
        let slot = self.slot(channel_id)?;
        let mut ch = slot.lock().await;
        ch.join()?;
        self.drive(&mut ch).await
    }

    /// Forgets a proposal we do not want to join (or a settled channel).
    pub async fn forget(&self, channel_id: B256) -> Result<(), Error> {
        self.inner.store.remove(channel_id).await?;
        lock(&self.inner.channels).remove(&channel_id);
        Ok(())
    }

    /// Payer: signs the vouchers of the next `count` payments of `delta` each ahead of time (on
    /// tokio's blocking pool, without holding the channel), so that [`Client::send_payment`] of `delta` sends one without signing when it
    /// is due. A pre-signed voucher is not sent, stored or counted as paid before then: a
    /// restart forgets it. Returns how many were added (at most
    /// [`MAX_PRESIGNED`](crate::channel::MAX_PRESIGNED) are kept per channel).
    pub async fn presign(
        &self,
        channel_id: B256,
        delta: U256,
        count: usize,
    ) -> Result<usize, Error> {
        let slot = self.slot(channel_id)?;
        let Some(job) = slot.lock().await.presign(delta, count) else {
            return Ok(0);
        };
        let signed = tokio::task::spawn_blocking(move || job.run())
            .await
            .map_err(|e| UsageError::SignatureTask(e.to_string()))?;
        slot.lock().await.add_presigned(signed)
    }

    /// Payer: pays `delta` more. The voucher is stored before it is sent. A voucher signed
    /// ahead for the new total ([`Client::presign`]) is used instead of signing now.
    pub async fn send_payment(&self, channel_id: B256, delta: U256) -> Result<Voucher, Error> {
        let slot = self.slot(channel_id)?;
        let mut ch = slot.lock().await;
        let voucher = ch.send_payment(delta)?;
        self.drive(&mut ch).await?;
        Ok(voucher)
    }

    /// Either side: starts (or retries) a cooperative close.
    pub async fn close(&self, channel_id: B256) -> Result<(), Error> {
        let slot = self.slot(channel_id)?;
        let mut ch = slot.lock().await;
        ch.close()?;
        self.drive(&mut ch).await
    }

    /// Either side: takes the channel on chain with the best state we can support. Refused
    /// ([`UsageError::CannotChallenge`]) when it would claim nothing for us. The request is
    /// persisted: if the transaction fails, [`Client::watch_chain`] retries it until a challenge
    /// registers.
    pub async fn challenge(&self, channel_id: B256) -> Result<(), Error> {
        let slot = self.slot(channel_id)?;
        let mut ch = slot.lock().await;
        let now = self.inner.chain.now().await?;
        ch.challenge(now)?;
        self.drive(&mut ch).await
    }

    /// Repeats the message the counterparty of `channel_id` needs in our current phase.
    pub async fn resend(&self, channel_id: B256) -> Result<(), Error> {
        let slot = self.slot(channel_id)?;
        let mut ch = slot.lock().await;
        ch.resend();
        self.drive(&mut ch).await
    }

    /// [`Client::resend`] for every channel that is not settled.
    pub async fn resend_all(&self) -> Result<(), Error> {
        let mut first_err = None;
        for slot in self.slots() {
            let mut ch = slot.lock().await;
            if ch.is_settled() {
                continue;
            }
            ch.resend();
            if let Err(e) = self.drive(&mut ch).await {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Parses and handles an envelope's JSON (see [`Client::push_message`]).
    pub async fn push_json(&self, json: &str) -> Result<(), Error> {
        let envelope = Envelope::from_json(json)?;
        self.push_message(envelope).await
    }

    /// Handles an envelope from a peer. A proposal for a new channel is checked, then joined
    /// automatically when [`ClientConfig::auto_join`] accepts it (or kept for [`Client::join`] when
    /// there is no policy). Errors are typed; see [`Error::reaction`].
    pub async fn push_message(&self, envelope: Envelope) -> Result<(), Error> {
        let me = self.address();
        if envelope.recipient != me {
            return Err(PeerMisbehaved::WrongParticipant {
                sender: envelope.sender,
                recipient: envelope.recipient,
            }
            .into());
        }
        if let Message::Propose(p) = &envelope.data {
            let id = p.fixed.channel_id();
            if self.slot(id).is_err() {
                return self.on_new_proposal(envelope).await;
            }
        }
        let slot = self.route(&envelope)?;
        let mut ch = slot.lock().await;
        if ch.counterparty() != envelope.sender {
            return Err(PeerMisbehaved::WrongParticipant {
                sender: envelope.sender,
                recipient: envelope.recipient,
            }
            .into());
        }
        if let Message::Voucher(m) = &envelope.data
            && self.inner.config.offload_signatures
            && ch.voucher_needs_check(m)
            && let Some(key) = ch.voucher_key()
        {
            // The signature check runs on the blocking pool without the channel's lock; the
            // credit follows it (the channel re-checks everything but the signature).
            let voucher = m.to_voucher(ch.id());
            drop(ch);
            let verified =
                tokio::task::spawn_blocking(move || VerifiedVoucher::verify(voucher, &key))
                    .await
                    .map_err(|e| UsageError::SignatureTask(e.to_string()))?;
            ch = slot.lock().await;
            match verified {
                // A larger voucher was credited while this one was checked (the peer's
                // messages were handled concurrently): this one is covered, not a replay.
                Some(v) if v.voucher().amount <= ch.paid() => return Ok(()),
                Some(v) => ch.handle_verified_voucher(&v)?,
                // Not signed by the payer: the channel's own check reports it (typed).
                None => ch.handle_message(&envelope.data)?,
            }
            return self.drive(&mut ch).await;
        }
        ch.handle_message(&envelope.data)?;
        let needs_funding_check = matches!(envelope.data, Message::Join(_))
            && ch.role() == Role::Payee
            && ch.phase() == PhaseKind::Funding;
        if needs_funding_check {
            // The payer joins after its deposit: look at the chain now rather than at the next watch.
            self.sync_chain(&mut ch).await?;
        }
        self.drive(&mut ch).await
    }

    async fn on_new_proposal(&self, envelope: Envelope) -> Result<(), Error> {
        let Message::Propose(p) = &envelope.data else {
            unreachable!("checked by the caller");
        };
        let mut channel = Channel::from_proposal(self.inner.signer.clone(), p)?;
        if channel.counterparty() != envelope.sender {
            return Err(PeerMisbehaved::WrongParticipant {
                sender: envelope.sender,
                recipient: envelope.recipient,
            }
            .into());
        }
        let id = channel.id();
        let _guard = self.inner.join_lock.lock().await;
        let auto = match &self.inner.config.auto_join {
            Some(policy) => {
                policy.check(p, self.locked(p.asset).await)?;
                true
            }
            None => false,
        };
        // Whatever the policy: the app decides who can take the deposit.
        self.check_app(p.fixed.app_definition).await?;
        self.check_fresh(id, p.asset).await?;
        channel.advance_chain_cursor(self.first_block().await);
        let slot = Arc::new(tokio::sync::Mutex::new(channel));
        lock(&self.inner.channels).insert(id, slot.clone());
        let mut ch = slot.lock().await;
        self.drive(&mut ch).await?;
        if auto {
            ch.join()?;
            self.drive(&mut ch).await?;
        }
        Ok(())
    }

    /// Total deposit in `asset` of our payer channels that are joined and not yet settled.
    async fn locked(&self, asset: Address) -> U256 {
        let mut total = U256::ZERO;
        for slot in self.slots() {
            let ch = slot.lock().await;
            if ch.role() == Role::Payer
                && ch.asset() == asset
                && ch.phase() > PhaseKind::Proposed
                && !ch.is_settled()
            {
                total = total.saturating_add(ch.deposit());
            }
        }
        total
    }

    /// Refuses a proposal whose channel id already has a history on our chain (a status or
    /// holdings): it is not a new channel, and may be an old one replayed to a payer that lost
    /// its store, whose old vouchers would take the new deposit.
    async fn check_fresh(&self, channel_id: B256, asset: Address) -> Result<(), Error> {
        let status = self.inner.chain.status(channel_id).await?;
        let held = self.inner.chain.holdings(asset, channel_id).await?;
        if status != OnChainStatus::default() || !held.is_zero() {
            return Err(PolicyRejection::NotFresh { channel_id }.into());
        }
        Ok(())
    }

    /// Refuses an app whose deployed code is not `PaymentApp` ([`crate::app`]).
    async fn check_app(&self, app: Address) -> Result<(), Error> {
        if lock(&self.inner.verified_apps).contains(&app) {
            return Ok(());
        }
        let code_hash = self.inner.chain.code_hash(app).await?;
        if code_hash != PAYMENT_APP_RUNTIME_HASH {
            return Err(PolicyRejection::AppCode { app, code_hash }.into());
        }
        lock(&self.inner.verified_apps).insert(app);
        Ok(())
    }

    /// An ERC-20 deposit: checks the balance, sets the allowance to what this deposit needs if
    /// it is lower, then deposits a small probe first and checks that the adjudicator's balance
    /// rose by exactly the probe before the rest is put at risk (a fee-on-transfer token fails
    /// here with [`ChainError::TokenMisbehaved`], having moved only the probe).
    async fn deposit_token(
        &self,
        token: Address,
        channel_id: B256,
        expected_held: U256,
        amount: U256,
    ) -> Result<(), Error> {
        let chain = &self.inner.chain;
        let available = chain.balance(token, chain.account()).await?;
        if available < amount {
            return Err(ChainError::InsufficientFunds {
                needed: amount,
                available,
            }
            .into());
        }
        if chain.allowance(token).await? < amount {
            // Exactly what the deposit needs: never a standing allowance beyond it.
            chain.approve(token, amount).await?;
        }
        // A thousandth of the deposit: a percentage fee shows on it, and at most that is lost.
        let probe = (amount / U256::from(1000u16))
            .max(U256::from(1u8))
            .min(amount);
        let adjudicator = chain.adjudicator();
        let before = chain.balance(token, adjudicator).await?;
        chain
            .deposit(token, channel_id, expected_held, probe)
            .await?;
        let received = chain
            .balance(token, adjudicator)
            .await?
            .saturating_sub(before);
        if received != probe {
            return Err(ChainError::TokenMisbehaved {
                token,
                sent: probe,
                received,
            }
            .into());
        }
        if amount > probe {
            chain
                .deposit(token, channel_id, expected_held + probe, amount - probe)
                .await?;
        }
        Ok(())
    }

    /// Reads the chain for every channel that has a chain history (not settled, not a bare
    /// proposal): the adjudicator events of all of them with one log query (confirmed blocks
    /// only, see the [module docs](self)), dispatched by channel id, and the chain time; then
    /// performs each channel's on-chain duty (counter a stale challenge, `conclude`, pay out,
    /// deposit), retrying failed ones with backoff. Errors of one channel do not stop the
    /// others; the first is returned.
    pub async fn watch_chain(&self) -> Result<(), Error> {
        let chain = &self.inner.chain;
        let latest = chain.block_number().await?;
        let now = chain.now().await?;
        let k = self.confirmations();
        let confirmed = latest.checked_sub(k);
        let mut watched = Vec::new();
        for slot in self.slots() {
            let ch = slot.lock().await;
            // A proposal has no chain history until someone joins (the payee learns it from
            // the `Join`, which makes it read the chain): nothing to read for it.
            if ch.is_settled() || ch.phase() == PhaseKind::Proposed {
                continue;
            }
            let rescan_from = ch.chain_cursor().saturating_sub(k);
            drop(ch);
            watched.push((slot, rescan_from));
        }
        let mut by_channel: HashMap<B256, Vec<ChainEventRecord>> = HashMap::new();
        let mut first_err = None;
        let mut logs_read = true;
        let from = watched.iter().map(|(_, f)| *f).min();
        if let (Some(from), Some(to)) = (from, confirmed)
            && from <= to
        {
            match chain.adjudicator_events(from, to).await {
                Ok(records) => {
                    for r in records {
                        by_channel.entry(r.event.channel_id()).or_default().push(r);
                    }
                    lock(&self.inner.applied).retain(|_, block| *block >= from);
                }
                Err(e) => {
                    // The duties the persisted state already shows (e.g. a payout) need no
                    // logs: perform them, but leave every cursor where it is.
                    tracing::warn!(error = %e, "watch_chain: log query failed");
                    first_err = Some(Error::from(e));
                    logs_read = false;
                }
            }
        }
        for (slot, rescan_from) in watched {
            let mut ch = slot.lock().await;
            if logs_read {
                let records = by_channel.remove(&ch.id()).unwrap_or_default();
                self.apply_events(&mut ch, &records, rescan_from, confirmed, now);
            } else {
                ch.handle_timeout(now);
            }
            let result = match self.drive(&mut ch).await {
                Ok(()) => self.perform_duty(&mut ch, now).await,
                Err(e) => Err(e),
            };
            if let Err(e) = result {
                tracing::warn!(channel = %ch.id(), error = %e, "watch_chain");
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// The next envelope to send, when the client has no [`Transport`].
    pub fn next_outbound(&self) -> Option<Envelope> {
        lock(&self.inner.outbox).pop_front()
    }

    // ----- internals ----------------------------------------------------------------------

    fn slots(&self) -> Vec<Slot> {
        lock(&self.inner.channels).values().cloned().collect()
    }

    fn slot(&self, channel_id: B256) -> Result<Slot, Error> {
        lock(&self.inner.channels)
            .get(&channel_id)
            .cloned()
            .ok_or_else(|| UsageError::UnknownChannel(channel_id).into())
    }

    fn route(&self, envelope: &Envelope) -> Result<Slot, Error> {
        let channels = lock(&self.inner.channels);
        match envelope.data.channel() {
            ChannelKey::Id(id) => channels.get(&id).cloned(),
            ChannelKey::Ref(r) => {
                // Vouchers name a channel by an 8-byte prefix; with several channels of this peer
                // sharing it (never by accident), the signature check of the first one decides.
                channels
                    .iter()
                    .find(|(id, _)| r.matches(id))
                    .map(|(_, s)| s.clone())
            }
        }
        .ok_or_else(|| {
            let id = match envelope.data.channel() {
                ChannelKey::Id(id) => id,
                ChannelKey::Ref(r) => r.padded(),
            };
            PeerMisbehaved::UnknownChannel(id).into()
        })
    }

    /// Where a new channel starts reading adjudicator events: a channel id contains a fresh
    /// random nonce, so nothing about it can be on chain before its proposal; the look-back
    /// covers the proposal's travel time and short reorgs. Block 0 if the chain cannot say.
    async fn first_block(&self) -> u64 {
        match self.inner.chain.block_number().await {
            Ok(latest) => latest.saturating_sub(EVENT_LOOKBACK_BLOCKS),
            Err(_) => 0,
        }
    }

    /// The number of confirmations events need (see [`ClientConfig::confirmations`]).
    fn confirmations(&self) -> u64 {
        self.inner
            .config
            .confirmations
            .unwrap_or_else(|| self.inner.chain.default_confirmations())
    }

    /// Feeds one channel its new confirmed chain events and the chain time (one per-channel log
    /// query: used right after a transaction and when a `Join` arrives, not by the watcher).
    async fn sync_chain(&self, ch: &mut Channel) -> Result<(), Error> {
        let chain = &self.inner.chain;
        let latest = chain.block_number().await?;
        let now = chain.now().await?;
        let k = self.confirmations();
        let confirmed = latest.checked_sub(k);
        let rescan_from = ch.chain_cursor().saturating_sub(k);
        let records = match confirmed {
            Some(to) if rescan_from <= to => chain.events(ch.id(), rescan_from).await?,
            _ => Vec::new(),
        };
        self.apply_events(ch, &records, rescan_from, confirmed, now);
        Ok(())
    }

    /// Applies the records of blocks `rescan_from..=confirmed` that were not applied yet (a log
    /// is known by its block hash and index), moves the cursor past `confirmed` (stored with the
    /// state the events produced: the caller drives the persist) and passes the chain time.
    fn apply_events(
        &self,
        ch: &mut Channel,
        records: &[ChainEventRecord],
        rescan_from: u64,
        confirmed: Option<u64>,
        now: u64,
    ) {
        if let Some(to) = confirmed {
            let id = ch.id();
            let mut applied = lock(&self.inner.applied);
            for r in records {
                if r.block_number < rescan_from || r.block_number > to || r.event.channel_id() != id
                {
                    continue;
                }
                if applied
                    .insert((r.block_hash, r.log_index), r.block_number)
                    .is_some()
                {
                    continue;
                }
                if let Err(e) = ch.handle_chain_event(now, &r.event) {
                    tracing::warn!(channel = %id, error = %e, "chain event not applied");
                }
            }
            drop(applied);
            ch.advance_chain_cursor(to.saturating_add(1));
        }
        ch.handle_timeout(now);
    }

    /// Performs the channel's current on-chain duty ([`Channel::chain_duty`]) unless a recent
    /// failure of it is still backing off; learns the chain's view afterwards.
    async fn perform_duty(&self, ch: &mut Channel, now: u64) -> Result<(), Error> {
        let id = ch.id();
        let Some(action) = ch.chain_duty(now)? else {
            lock(&self.inner.backoff).remove(&id);
            return Ok(());
        };
        if !self.ready(id, now) {
            return Ok(());
        }
        let result = self.execute(&action).await;
        self.record(id, now, result.is_ok());
        self.sync_chain(ch).await?;
        self.drive(ch).await?;
        result
    }

    fn ready(&self, id: B256, now: u64) -> bool {
        lock(&self.inner.backoff)
            .get(&id)
            .is_none_or(|b| b.ready(now))
    }

    fn record(&self, id: B256, now: u64, ok: bool) {
        let mut backoff = lock(&self.inner.backoff);
        if ok {
            backoff.remove(&id);
        } else {
            backoff
                .entry(id)
                .or_default()
                .failed(now, self.inner.config.max_retry_interval);
        }
    }

    /// Runs the channel's outputs until it is quiet: persist, events, envelopes, transactions.
    async fn drive(&self, ch: &mut Channel) -> Result<(), Error> {
        loop {
            while let Some(p) = ch.poll_persist() {
                if let Some(v) = &p.voucher {
                    self.inner.store.put_voucher(v).await?;
                }
                if let Some(s) = &p.snapshot {
                    self.inner
                        .store
                        .put_channel(p.channel_id, &s.to_bytes())
                        .await?;
                }
                ch.handle_persisted(p.generation);
            }
            while let Some(event) = ch.poll_event() {
                // A dropped receiver only means nobody listens.
                let _ = self.inner.events.send(ClientEvent {
                    channel_id: ch.id(),
                    event,
                });
            }
            while let Some(env) = ch.poll_outbound() {
                match &self.inner.transport {
                    Some(t) => {
                        // Delivery is best effort: what was produced is already committed and
                        // stored, and `resend` repairs a loss. The payment is not undone.
                        if let Err(e) = t.send(env.recipient, env).await {
                            tracing::warn!(channel = %ch.id(), error = %e, "transport send failed");
                        }
                    }
                    None => lock(&self.inner.outbox).push_back(env),
                }
            }
            let Some(action) = ch.poll_chain_action() else {
                break;
            };
            let result = self.execute(&action).await;
            if result.is_err() {
                // `watch_chain` retries it (as the channel's duty) once the backoff allows.
                // Without the chain's time, the next watch retries it at once.
                if let Ok(now) = self.inner.chain.now().await {
                    self.record(ch.id(), now, false);
                }
            }
            // Whatever happened, learn the chain's view before going on.
            self.sync_chain(ch).await?;
            result?;
        }
        Ok(())
    }

    /// Whether a challenge at `turn` can no longer land or is not needed: the channel finalized,
    /// a registered challenge already has this turn or a later one, a checkpoint passed it, or
    /// nothing is held.
    /// Whether a challenge at `turn` cannot land or is not needed: the chain records the turn
    /// already, or finalized, or holds nothing (paid out or never funded).
    async fn challenge_is_moot(
        &self,
        id: B256,
        turn: u64,
        candidate: &crate::state::SignedVariablePart,
    ) -> Result<bool, Error> {
        let chain = self.inner.chain.as_ref();
        if checks::turn_is_moot(chain, id, turn, true).await? {
            return Ok(true);
        }
        let asset = checks::first_asset(&candidate.variable_part.outcome);
        Ok(chain.holdings(asset, id).await?.is_zero())
    }

    async fn execute(&self, action: &ChainAction) -> Result<(), Error> {
        let chain = &self.inner.chain;
        match action {
            ChainAction::Deposit {
                asset, channel_id, ..
            } => {
                let Some((held, missing)) =
                    checks::deposit_shortfall(chain.as_ref(), action).await?
                else {
                    return Ok(());
                };
                if *asset == Address::ZERO {
                    chain.deposit(*asset, *channel_id, held, missing).await?;
                } else {
                    self.deposit_token(*asset, *channel_id, held, missing)
                        .await?;
                }
            }
            ChainAction::Challenge {
                fixed, candidate, ..
            } => {
                let id = fixed.channel_id();
                let turn = candidate.variable_part.turn_num;
                if self.challenge_is_moot(id, turn, candidate).await? {
                    return Ok(());
                }
                if let Err(e) = action.send(chain.as_ref()).await {
                    // Someone may have registered the turn, or finalized, in between.
                    if !self.challenge_is_moot(id, turn, candidate).await? {
                        return Err(e.into());
                    }
                }
            }
            ChainAction::Conclude { fixed, candidate } => {
                let id = fixed.channel_id();
                if checks::is_finalized(chain.as_ref(), id).await? {
                    return Ok(());
                }
                // Nothing held: either paid out already (the adjudicator deletes the status at
                // payout, so the check above reads "open") or never funded. A conclude would
                // cost gas and pay nobody.
                let asset = checks::first_asset(&candidate.variable_part.outcome);
                if chain.holdings(asset, id).await?.is_zero() {
                    return Ok(());
                }
                match action.send(chain.as_ref()).await {
                    Ok(_) | Err(ChainError::Reverted(Revert::ChannelFinalized)) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            ChainAction::TransferAllAssets { .. } => {
                checks::transfer_all_assets_once(chain.as_ref(), action).await?;
            }
            // A two-party channel asks for none of the others (checkpoints, reclaims and the
            // combined conclude-and-transfer are ledger and virtual-channel actions).
            ChainAction::Checkpoint { .. }
            | ChainAction::ConcludeAndTransferAllAssets { .. }
            | ChainAction::Reclaim(_) => {}
        }
        Ok(())
    }
}
