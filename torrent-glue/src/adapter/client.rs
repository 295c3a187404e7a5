//! [`ChannelBackend`] over [`payment_channel::client::Client`].
//!
//! The client is opened **without** a `Transport`: everything it does happens inside the calls
//! this backend makes (it has no background tasks), so after each call the backend drains the
//! client's outbox into [`ChannelEvent::Outbound`] (the coordinator carries it in the
//! paid-streaming `message` command) and its event stream into coordinator events. Joins are
//! decided by the coordinator (price, deposit, budget, one channel per peer), so the client must
//! not auto-join; the backend additionally checks each proposal against a
//! [`JoinPolicy`] (app definition, challenge duration, deposit, price) before handing it over.
//!
//! Signatures stay off the peer loop: they run in the node's channel task, never in a
//! connection's task (the client can also check vouchers on tokio's blocking pool,
//! `ClientConfig::offload_signatures`), and this backend has the next
//! [`ClientBackend::presign_ahead`] vouchers of each payment's size signed in a background task
//! (topped up once half are used), so that a due `Pay` sends one without signing. A pre-signed
//! voucher leaves only when the coordinator's `Pay` makes it due; until then it is neither
//! stored nor counted as paid.

use async_trait::async_trait;
use paid_wire::ChannelId;
use payment_channel::client::{Client, ClientEvent};
use payment_channel::error::PeerMisbehaved;
use payment_channel::message::{Envelope, Message};
use payment_channel::policy::JoinPolicy;
use payment_channel::{B256, U256};
use tokio::sync::{Mutex, mpsc};

use super::{ChannelBackend, ChannelEvents};
use crate::channel::{ChannelCommand, ChannelEvent, FailedCommand, RestoredState, Role};
use payment_channel::channel::Event;
use payment_channel::role::PhaseKind;

/// Drives a [`Client`] for a [`Node`](super::Node).
#[derive(Debug)]
pub struct ClientBackend {
    client: Client,
    events: Mutex<mpsc::UnboundedReceiver<ClientEvent>>,
    policy: Option<JoinPolicy>,
    /// Call `watch_chain` every this many ticks (1 = every tick).
    watch_every: u32,
    ticks: std::sync::atomic::AtomicU32,
    /// Nonces of the proposals pushed to the client, until it reports them.
    nonces: Mutex<std::collections::HashMap<ChannelId, u64>>,
    /// Vouchers to sign ahead after each payment (0: none).
    presign_ahead: usize,
    /// Per channel: payments since the last pre-signing batch started (the channel is absent
    /// while none ran yet; a batch starts once half of the previous one is used).
    presigning: std::sync::Mutex<std::collections::HashMap<B256, usize>>,
}

/// Default of [`ClientBackend::presign_ahead`].
pub const DEFAULT_PRESIGN_AHEAD: usize = 0;

fn wei(x: U256) -> u128 {
    u128::try_from(x).unwrap_or(u128::MAX)
}

impl ClientBackend {
    /// Wraps a client opened with `transport = None` and `auto_join = None`, with its event
    /// stream. `policy` vets proposals before they reach the client (its `budget` is not used:
    /// the coordinator keeps the budget).
    pub fn new(
        client: Client,
        events: mpsc::UnboundedReceiver<ClientEvent>,
        policy: Option<JoinPolicy>,
    ) -> Self {
        Self {
            client,
            events: Mutex::new(events),
            policy,
            watch_every: 1,
            ticks: std::sync::atomic::AtomicU32::new(0),
            nonces: Mutex::new(std::collections::HashMap::new()),
            presign_ahead: DEFAULT_PRESIGN_AHEAD,
            presigning: Default::default(),
        }
    }

    /// After each payment, signs the next `n` vouchers of the same size ahead of time in a
    /// background task (default [`DEFAULT_PRESIGN_AHEAD`]; 0 turns it off). Each is sent only
    /// when a later `Pay` of that size reaches its total.
    pub fn presign_ahead(mut self, n: usize) -> Self {
        self.presign_ahead = n;
        self
    }

    /// After a payment: starts signing the next vouchers of `channel_id` ahead in a background
    /// task when half of the last batch is used (one hand-off to the blocking pool per
    /// `presign_ahead / 2` payments, not one per payment).
    fn start_presign(&self, channel_id: B256, amount: u128) {
        if self.presign_ahead == 0 {
            return;
        }
        {
            let mut since = self
                .presigning
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let used = since.entry(channel_id).or_insert(usize::MAX);
            *used = used.saturating_add(1);
            if *used < self.presign_ahead.div_ceil(2) {
                return;
            }
            *used = 0;
        }
        let (client, n) = (self.client.clone(), self.presign_ahead);
        tokio::spawn(async move {
            // A failure only means that the next payments sign when they are due.
            let _ = client.presign(channel_id, U256::from(amount), n).await;
        });
    }

    /// Watches the chain every `n` node ticks instead of every tick.
    pub fn watch_every(mut self, n: u32) -> Self {
        self.watch_every = n.max(1);
        self
    }

    /// The client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Reports what the client produced: outbound envelopes first (the counterparty needs them
    /// to make progress), then events.
    async fn flush(&self, events: &ChannelEvents) {
        while let Some(envelope) = self.client.next_outbound() {
            events.report(ChannelEvent::Outbound {
                to: envelope.recipient,
                json: envelope.to_json(),
            });
        }
        let mut rx = self.events.lock().await;
        while let Ok(ClientEvent { channel_id, event }) = rx.try_recv() {
            let id = ChannelId(channel_id.0);
            match event {
                Event::Proposed {
                    payee,
                    deposit,
                    price,
                    ..
                } => events.report(ChannelEvent::Proposed {
                    channel_id: id,
                    payee,
                    deposit: wei(deposit),
                    price: price.map(wei),
                    nonce: self.nonces.lock().await.remove(&id),
                }),
                Event::Funded => {
                    if let Some(info) = self.client.channel_info(channel_id).await {
                        events.report(ChannelEvent::Ready {
                            channel_id: id,
                            counterparty: info.counterparty,
                            role: info.role,
                            deposit: wei(info.deposit),
                        });
                    }
                }
                Event::PaymentReceived { delta, total } => {
                    events.report(ChannelEvent::PaymentReceived {
                        channel_id: id,
                        delta: wei(delta),
                        total: wei(total),
                    });
                }
                Event::Closed { amount } => events.report(ChannelEvent::Closed {
                    channel_id: id,
                    payee_amount: wei(amount),
                }),
                Event::Finalized { amount } => {
                    // `amount` is ours; the coordinator wants the payee's.
                    if let Some(info) = self.client.channel_info(channel_id).await {
                        let payee_amount = match info.role {
                            Role::Payee => amount,
                            Role::Payer => info.deposit.saturating_sub(amount),
                        };
                        events.report(ChannelEvent::Closed {
                            channel_id: id,
                            payee_amount: wei(payee_amount),
                        });
                    }
                }
                _ => {}
            }
        }
    }

    fn failed(events: &ChannelEvents, command: FailedCommand, error: impl ToString) {
        events.report(ChannelEvent::CommandFailed {
            command,
            reason: error.to_string(),
        });
    }
}

#[async_trait]
impl ChannelBackend for ClientBackend {
    async fn execute(&self, command: ChannelCommand, events: &ChannelEvents) {
        match command {
            ChannelCommand::Create {
                peer,
                deposit,
                price,
                nonce,
                ..
            } => match match nonce {
                Some(nonce) => {
                    self.client
                        .create_with_nonce(peer, U256::from(deposit), price.map(U256::from), nonce)
                        .await
                }
                None => {
                    self.client
                        .create(peer, U256::from(deposit), price.map(U256::from))
                        .await
                }
            } {
                Ok(id) => {
                    // The proposal goes out first: the coordinator follows it with STOP naming
                    // the channel (web3torrent's order).
                    self.flush(events).await;
                    events.report(ChannelEvent::Created {
                        peer,
                        channel_id: ChannelId(id.0),
                    });
                }
                Err(e) => Self::failed(events, FailedCommand::Create { peer }, e),
            },
            ChannelCommand::Join { channel_id, .. } => {
                if let Err(e) = self.client.join(B256::from(channel_id.0)).await {
                    Self::failed(events, FailedCommand::Join { channel_id }, e);
                }
            }
            ChannelCommand::Pay { channel_id, amount } => {
                let id = B256::from(channel_id.0);
                match self.client.send_payment(id, U256::from(amount)).await {
                    Ok(_) => self.start_presign(id, amount),
                    Err(e) => Self::failed(events, FailedCommand::Pay { channel_id, amount }, e),
                }
            }
            ChannelCommand::Close { channel_id } => {
                self.presigning
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .remove(&B256::from(channel_id.0));
                if let Err(e) = self.client.close(B256::from(channel_id.0)).await {
                    Self::failed(events, FailedCommand::Close { channel_id }, e);
                }
            }
            ChannelCommand::Challenge { channel_id } => {
                if let Err(e) = self.client.challenge(B256::from(channel_id.0)).await {
                    Self::failed(events, FailedCommand::Challenge { channel_id }, e);
                }
            }
            ChannelCommand::PushMessage { json, .. } => {
                let Ok(envelope) = Envelope::from_json(&json) else {
                    return;
                };
                let envelope_sender = envelope.sender;
                if let Message::Propose(proposal) = &envelope.data {
                    // The coordinator counts in the client's asset: a proposal in another one
                    // is not a channel we would ever join.
                    let refused = proposal.asset != self.client.config().asset
                        || self
                            .policy
                            .as_ref()
                            .is_some_and(|p| p.check(proposal, U256::ZERO).is_err());
                    if refused {
                        return;
                    }
                    let mut nonces = self.nonces.lock().await;
                    // Read back when the client reports the proposal; bounded like the
                    // coordinator's channel work queue.
                    if nonces.len() >= 1024 {
                        nonces.clear();
                    }
                    nonces.insert(
                        ChannelId(proposal.fixed.channel_id().0),
                        proposal.fixed.channel_nonce,
                    );
                }
                // Peer errors are the client's to judge (replays are harmless, forgeries are
                // refused); a forged signature is reported, a strike against the sender.
                if let Err(payment_channel::error::Error::PeerMisbehaved(
                    e @ PeerMisbehaved::BadSignature { .. },
                )) = self.client.push_message(envelope).await
                {
                    Self::failed(
                        events,
                        FailedCommand::PushMessage {
                            from: envelope_sender,
                            bad_signature: true,
                        },
                        e,
                    );
                }
            }
            ChannelCommand::Resend { channel_id } => {
                let _ = self.client.resend(B256::from(channel_id.0)).await;
            }
            ChannelCommand::Abandon { channel_id } => {
                self.presigning
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .remove(&B256::from(channel_id.0));
                let _ = self.client.forget(B256::from(channel_id.0)).await;
            }
            // Future commands (the enum is non-exhaustive for other crates).
            #[allow(unreachable_patterns)]
            _ => {}
        }
        self.flush(events).await;
    }

    /// Reads the chain, then reports every channel of the client that is still in use as
    /// [`ChannelEvent::Restored`], forgets proposals we never joined (nothing of ours is at
    /// stake in them), retries the deposit of channels we joined if the chain does not hold
    /// it, asks again for the `conclude` of channels closed by both, then repeats the last
    /// message of every channel (the counterparty may have missed it when we stopped).
    /// Channels being challenged are left to the client (`watch_chain` finishes them).
    async fn restore(&self, events: &ChannelEvents) {
        // Catch up with the chain first: deposits, challenges and conclusions that happened
        // while we were away decide what each channel is now.
        let _ = self.client.watch_chain().await;
        for id in self.client.channel_ids() {
            let Some(info) = self.client.channel_info(id).await else {
                continue;
            };
            if info.settled || info.disputed {
                continue;
            }
            let role = info.role;
            let state = match info.phase {
                PhaseKind::Proposed if role == Role::Payer => {
                    // A proposal we had not joined yet: nothing deposited, nothing signed.
                    let _ = self.client.forget(id).await;
                    continue;
                }
                PhaseKind::Funding if role == Role::Payer => {
                    // Joined: the deposit may not have been sent (it is only sent when the chain
                    // does not hold it yet, so this never deposits twice).
                    let _ = self.client.join(id).await;
                    RestoredState::Funding
                }
                PhaseKind::Proposed | PhaseKind::Funding | PhaseKind::AwaitingPostfund => {
                    RestoredState::Funding
                }
                PhaseKind::Running => RestoredState::Open,
                PhaseKind::Closing => RestoredState::Closing,
                PhaseKind::Closed => {
                    // Signed by both: only the `conclude` (and payout) may be missing.
                    let _ = self.client.close(id).await;
                    continue;
                }
                _ => continue,
            };
            events.report(ChannelEvent::Restored {
                channel_id: ChannelId(id.0),
                counterparty: info.counterparty,
                role,
                deposit: wei(info.deposit),
                paid: wei(info.paid),
                state,
            });
        }
        let _ = self.client.resend_all().await;
        self.flush(events).await;
    }

    async fn tick(&self, events: &ChannelEvents) {
        let n = self
            .ticks
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if n.is_multiple_of(self.watch_every) {
            let _ = self.client.watch_chain().await;
        }
        self.flush(events).await;
    }
}
