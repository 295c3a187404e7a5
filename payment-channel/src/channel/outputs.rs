//! What a channel asks of its driver ([`Persist`], [`Event`], [`ChainAction`], envelopes) and the
//! [`Outbox`] that holds those outputs back until the state that produced them is persisted.

use std::collections::VecDeque;

use alloy_primitives::{Address, B256, U256};

use super::{Channel, ChannelSnapshot};
use crate::chain::ChainAction;
use crate::message::{Envelope, Message};
use crate::voucher::Voucher;

/// What to store before the outputs of a generation are released.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Persist {
    /// Pass back to [`Channel::handle_persisted`].
    pub generation: u64,
    /// The channel.
    pub channel_id: B256,
    /// The new snapshot, if more than the best voucher changed.
    pub snapshot: Option<ChannelSnapshot>,
    /// The new best voucher (payer: signed; payee: received), if it changed.
    pub voucher: Option<Voucher>,
}

/// Something the application should know.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// Payer: a valid proposal arrived (decide with [`Channel::join`]).
    Proposed {
        /// Who proposes (the payee).
        payee: Address,
        /// Deposit asked for.
        deposit: U256,
        /// Advertised price.
        price: Option<U256>,
        /// The asset the deposit is in (`Address::ZERO`: the native coin).
        asset: Address,
    },
    /// Payer: we joined and asked for the deposit. Payee: the payer's join verified.
    Joined,
    /// The channel is running (funded, postfund signed by both).
    Funded,
    /// Payer: a voucher was signed (and stored) and is on its way.
    PaymentSent {
        /// This payment.
        delta: U256,
        /// Cumulative total.
        total: U256,
    },
    /// Payee: a payment is stored and can be credited.
    PaymentReceived {
        /// This payment.
        delta: U256,
        /// Cumulative total.
        total: U256,
    },
    /// We signed the final state paying the payee `amount`.
    Closing {
        /// Payee's amount.
        amount: U256,
    },
    /// The final state is signed by both.
    Closed {
        /// Payee's amount.
        amount: U256,
    },
    /// A challenge was registered on chain.
    ChallengeRegistered {
        /// Candidate turn.
        turn_num: u64,
        /// Finalization time unless cleared.
        finalizes_at: u64,
    },
    /// The registered challenge was cleared.
    ChallengeCleared,
    /// The channel finalized on chain.
    Finalized {
        /// Our amount in the final outcome.
        amount: U256,
    },
    /// The payout happened.
    PaidOut {
        /// What we received.
        amount: U256,
    },
}

#[derive(Debug, Default)]
struct Outputs {
    outbound: VecDeque<Envelope>,
    events: VecDeque<Event>,
    actions: VecDeque<ChainAction>,
}

impl Outputs {
    fn append(&mut self, other: &mut Self) {
        self.outbound.append(&mut other.outbound);
        self.events.append(&mut other.events);
        self.actions.append(&mut other.actions);
    }
}

/// The outputs of a channel behind its persistence barrier: each change to the durable state
/// starts a new generation, and what it produced stays staged until that generation is reported
/// persisted; then it moves to the queues the `poll_*` methods drain.
#[derive(Debug, Default)]
pub(super) struct Outbox {
    generation: u64,
    persisted: u64,
    snapshot_dirty: bool,
    voucher_dirty: bool,
    staged: Outputs,
    ready: Outputs,
}

/// A generation not persisted yet, and what changed in it.
pub(super) struct Due {
    pub(super) generation: u64,
    /// The snapshot changed.
    pub(super) snapshot: bool,
    /// The best voucher changed.
    pub(super) voucher: bool,
}

impl Outbox {
    /// The durable state changed: a new generation whose snapshot must be stored.
    pub(super) fn snapshot_changed(&mut self) {
        self.snapshot_dirty = true;
        self.generation += 1;
    }

    /// The best voucher changed: a new generation whose voucher must be stored.
    pub(super) fn voucher_changed(&mut self) {
        self.voucher_dirty = true;
        self.generation += 1;
    }

    /// The generation to persist, if the latest one is not.
    pub(super) fn due(&self) -> Option<Due> {
        (self.generation != self.persisted).then_some(Due {
            generation: self.generation,
            snapshot: self.snapshot_dirty,
            voucher: self.voucher_dirty,
        })
    }

    /// `generation` is durable (an older one is ignored).
    pub(super) fn persisted(&mut self, generation: u64) {
        if generation == self.generation {
            self.persisted = generation;
            self.snapshot_dirty = false;
            self.voucher_dirty = false;
        }
    }

    fn release(&mut self) {
        if self.generation == self.persisted {
            self.ready.append(&mut self.staged);
        }
    }

    pub(super) fn pop_outbound(&mut self) -> Option<Envelope> {
        self.release();
        self.ready.outbound.pop_front()
    }

    pub(super) fn pop_event(&mut self) -> Option<Event> {
        self.release();
        self.ready.events.pop_front()
    }

    pub(super) fn pop_action(&mut self) -> Option<ChainAction> {
        self.release();
        self.ready.actions.pop_front()
    }

    /// Drops the queued transactions, staged or released, that `moot` matches.
    pub(super) fn drop_actions(&mut self, moot: impl Fn(&ChainAction) -> bool) {
        self.staged.actions.retain(|a| !moot(a));
        self.ready.actions.retain(|a| !moot(a));
    }
}

impl Channel {
    /// The durable state changed (see [`Outbox`]).
    pub(super) fn changed(&mut self) {
        self.out.snapshot_changed();
    }

    /// The best voucher changed (see [`Outbox`]).
    pub(super) fn voucher_changed(&mut self) {
        self.out.voucher_changed();
    }

    /// Queues a message to the counterparty.
    pub(super) fn send(&mut self, data: Message) {
        self.out.staged.outbound.push_back(Envelope {
            recipient: self.counterparty(),
            sender: self.me,
            data,
        });
    }

    /// Queues an application event.
    pub(super) fn emit(&mut self, ev: Event) {
        self.out.staged.events.push_back(ev);
    }

    /// Queues a transaction.
    pub(super) fn act(&mut self, a: ChainAction) {
        self.out.staged.actions.push_back(a);
    }
}
