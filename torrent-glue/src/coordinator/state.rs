//! Internal per-connection, per-identity and per-torrent state.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::time::Instant;

use paid_wire::choke::{ChannelId, ChokeController, PaymentPlanner};
use paid_wire::message::BlockRequest;
use payment_channel::Address;

use super::events::{NonPayingReason, PeerStats};
use crate::channel::Role;
use crate::engine::{PeerInfo, Terms};

/// How requests of one connection are answered.
#[derive(Debug)]
pub(crate) enum Gate {
    /// We do not sell: everything is served.
    Open,
    /// Not classified yet: requests are deferred.
    Pending,
    /// Credit-gated (paying peers, and the free allowance of non-paying ones).
    Credit(Box<ChokeController>),
    /// Nothing is served.
    Refuse,
    /// Only the allowed-fast pieces are served.
    Preview(HashSet<u32>),
}

impl Gate {
    pub(crate) fn controller(&self) -> Option<&ChokeController> {
        match self {
            Self::Credit(c) => Some(c),
            _ => None,
        }
    }

    pub(crate) fn controller_mut(&mut self) -> Option<&mut ChokeController> {
        match self {
            Self::Credit(c) => Some(c),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    Pending { deadline: Instant },
    Paying(Address),
    NonPaying(NonPayingReason),
}

#[derive(Debug)]
pub(crate) struct Peer {
    /// Connection order (later = larger).
    pub(crate) seq: u64,
    pub(crate) info: PeerInfo,
    pub(crate) class: Class,
    /// The peer's non-zero id for the paid-streaming extension.
    pub(crate) pse_id: Option<u8>,
    pub(crate) handshake_seen: bool,
    pub(crate) gate: Gate,
    /// The gate replaced when its payee channel closed, kept (permanently stopped) until the
    /// serves it handed out are reported sent.
    pub(crate) retired: Option<Box<ChokeController>>,
    /// Requests deferred before classification.
    pub(crate) deferred: VecDeque<BlockRequest>,
    /// Serves handed out by gates without a controller, awaiting `handle_bytes_sent`.
    pub(crate) serving: HashMap<BlockRequest, u32>,
    /// Wei routed into this connection's controller.
    pub(crate) fed_wei: u128,
    /// A STOP was covered from the pool and not sent: do not send the START that follows.
    pub(crate) suppress_start: bool,
    /// When (in event order) our STOP to this peer went out, if outstanding.
    pub(crate) stopped_at: Option<u64>,
    /// When (in event order) we last prompted this peer.
    pub(crate) prompted_at: Option<u64>,
    pub(crate) planner: Option<PaymentPlanner>,
    /// We sent STOP naming the channel we proposed, before it was funded (web3torrent's order:
    /// STOP right after the proposal, on the first blocked request). The gate's first STOP once
    /// the channel is ready is that same STOP and is not repeated; if the gate serves first
    /// instead (trust), START tells the peer so.
    pub(crate) early_stop: Option<ChannelId>,
    /// A STOP arrived before our channel to its sender was ready.
    pub(crate) stop_pending: Option<Option<ChannelId>>,
    /// A STOP was deferred (a payment is probably in flight): pay it then unless START came.
    pub(crate) stop_retry_at: Option<Instant>,
    /// A STOP waits for room in the buyer's window: paid when bytes arrive, unless START came.
    pub(crate) stop_held: bool,
    /// The terms this connection advertises (the last ones it sent).
    pub(crate) terms: Terms,
    pub(crate) local_choked: bool,
    pub(crate) remote_choked: bool,
    pub(crate) remote_interested: bool,
    pub(crate) stats: PeerStats,
    /// The identity it claims, until it proves it (see [`crate::identity`]).
    pub(crate) claim: Option<Claim>,
    /// Our challenge to it, once sent.
    pub(crate) challenge: Option<[u8; 32]>,
    /// Whether we answered its challenge (once per connection), and the challenge.
    pub(crate) answered_challenge: bool,
    pub(crate) their_challenge: Option<[u8; 32]>,
    /// Extended handshakes received.
    pub(crate) handshakes: u32,
    /// Misbehaviour strikes, and whether the disconnect they call for was queued.
    pub(crate) strikes: u32,
    pub(crate) struck_out: bool,
    /// Channels we proposed because of this connection (the next proposal's nonce index).
    pub(crate) channels_requested: u32,
    /// Of those, the ones the payer funded: only the others count against
    /// [`IdentityConfig::max_channels_per_connection`](crate::IdentityConfig::max_channels_per_connection).
    pub(crate) channels_funded: u32,
    /// Payer side: one past the highest nonce index of a channel we funded that this
    /// connection's payee proposed. Its next proposals are looked for below this plus
    /// [`IdentityConfig::max_channels_per_connection`](crate::IdentityConfig::max_channels_per_connection).
    pub(crate) nonces_funded_past: u32,
    /// A non-paying peer asked for more than its free allowance has left: it stays choked
    /// (a remainder smaller than its requests would otherwise be a request/reject loop).
    pub(crate) allowance_spent: bool,
    /// Its `pseAccount` exactly as it advertised it (when it is text): the `recipient` of the
    /// channel messages we send on this connection (web3torrent compares it as a string).
    pub(crate) advertised_account: Option<String>,
}

/// What a connection claims in its extended handshake, before it proves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Claim {
    pub(crate) account: Address,
    pub(crate) outcome: Option<Address>,
    pub(crate) terms: Terms,
    pub(crate) hub: Option<crate::engine::HubInfo>,
}

impl Peer {
    pub(crate) fn account(&self) -> Option<Address> {
        match self.class {
            Class::Paying(a) => Some(a),
            _ => None,
        }
    }

    /// We choke (`true`) or unchoke the peer: its gate learns it.
    pub(crate) fn set_local_choke(&mut self, now: Instant, choked: bool) {
        self.local_choked = choked;
        if let Some(ctrl) = self.gate.controller_mut() {
            if choked {
                ctrl.handle_choke(now);
            } else {
                ctrl.handle_unchoke(now);
            }
        }
    }
}

/// A channel slot of one identity, in one direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Slot {
    pub(crate) id: ChannelId,
    pub(crate) phase: Phase,
    /// The counterparty must answer by then (proposed / closing).
    pub(crate) deadline: Option<Instant>,
    pub(crate) deposit: u128,
    /// Payer side: wei paid on this channel.
    pub(crate) paid: u128,
    /// Payer side: the price and trust fixed when we joined; `None` for a channel adopted
    /// without a proposal (restored) until a connection of the payee within our price cap
    /// fixes them.
    pub(crate) terms: Option<Terms>,
    /// Payer side: bytes paid for on this channel (since it was joined or adopted).
    pub(crate) bytes_paid: u64,
    /// Payer side: piece bytes received from the payee since then.
    pub(crate) bytes_received: u64,
    /// Payer side: when the payee first asked (STOP, prompt) while the window had no room,
    /// since it last delivered a byte.
    pub(crate) beyond_window_since: Option<Instant>,
}

impl Slot {
    pub(crate) fn new(
        id: ChannelId,
        phase: Phase,
        deadline: Option<Instant>,
        deposit: u128,
    ) -> Self {
        Self {
            id,
            phase,
            deadline,
            deposit,
            paid: 0,
            terms: None,
            bytes_paid: 0,
            bytes_received: 0,
            beyond_window_since: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Payee: proposed, waiting for the payer to fund. Payer: joining.
    Proposed,
    Open,
    Closing,
    Challenging,
}

/// Payee-side ledger of one identity across connections and channels, in wei.
///
/// Live connections each hold their own credit in their controller; the ledger holds what
/// closed connections left behind: credit (`bank`) the payer paid for but did not use, or debt
/// (bytes served on trust). At most one of the two is non-zero.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Ledger {
    pub(crate) wei_received: u128,
    pub(crate) bytes_served: u64,
    pub(crate) bank_wei: u128,
    pub(crate) debt_wei: u128,
}

impl Ledger {
    /// Adds a signed position `credit − debit` to the ledger, netting bank against debt.
    pub(crate) fn add(&mut self, credit: u128, debit: u128) {
        let bank = self.bank_wei.saturating_add(credit);
        let debt = self.debt_wei.saturating_add(debit);
        let net = bank.min(debt);
        self.bank_wei = bank - net;
        self.debt_wei = debt - net;
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct PayerLedger {
    pub(crate) wei_paid: u128,
    pub(crate) bytes_paid: u64,
    pub(crate) bytes_received: u64,
}

#[derive(Debug)]
pub(crate) struct Identity {
    pub(crate) outcome: Option<Address>,
    pub(crate) terms: Terms,
    /// The hub it last advertised ([`crate::engine::HUB_KEY`]).
    pub(crate) hub: Option<crate::engine::HubInfo>,
    /// Live paying connections.
    pub(crate) live: BTreeSet<crate::engine::PeerKey>,
    pub(crate) idle_since: Option<Instant>,
    /// When its last connection closed (cleared on reconnect): reclamation's clock.
    pub(crate) departed_at: Option<Instant>,
    /// A `Create` is outstanding (no id yet); the payer must answer by then.
    pub(crate) creating: Option<Instant>,
    /// Payee side: the connection whose requests our open proposal was made for (credited
    /// with a funded channel when it opens).
    pub(crate) proposed_on: Option<crate::engine::PeerKey>,
    /// Payer side: the connection and nonce index of the proposal we are joining.
    pub(crate) joining_nonce: Option<(crate::engine::PeerKey, u32)>,
    /// The channel it pays us on.
    pub(crate) payee: Option<Slot>,
    /// The channel we pay it on.
    pub(crate) payer: Option<Slot>,
    pub(crate) ledger: Ledger,
    pub(crate) paid: PayerLedger,
    pub(crate) outbox: VecDeque<String>,
    /// Payer side: we paid and have received nothing since.
    pub(crate) stall_deadline: Option<Instant>,
    /// Payer side: when we last paid.
    pub(crate) last_paid_at: Option<Instant>,
    /// Payer side: we closed a channel on it for asking beyond our window; no new channel.
    pub(crate) asked_beyond_window: bool,
}

impl Identity {
    /// Our channel with this identity in `role` (payee: it pays us; payer: we pay it).
    pub(crate) fn slot_mut(&mut self, role: Role) -> &mut Option<Slot> {
        match role {
            Role::Payee => &mut self.payee,
            Role::Payer => &mut self.payer,
        }
    }

    pub(crate) fn new(terms: Terms) -> Self {
        Self {
            outcome: None,
            terms,
            hub: None,
            live: BTreeSet::new(),
            idle_since: None,
            departed_at: None,
            creating: None,
            proposed_on: None,
            joining_nonce: None,
            payee: None,
            payer: None,
            ledger: Ledger::default(),
            paid: PayerLedger::default(),
            outbox: VecDeque::new(),
            stall_deadline: None,
            last_paid_at: None,
            asked_beyond_window: false,
        }
    }

    /// The counterparty answered: restart every answer deadline.
    pub(crate) fn touch(&mut self, deadline: Instant) {
        if self.creating.is_some() {
            self.creating = Some(deadline);
        }
        for slot in [&mut self.payee, &mut self.payer].into_iter().flatten() {
            if slot.deadline.is_some() {
                slot.deadline = Some(deadline);
            }
        }
    }

    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        [
            self.creating,
            self.payee.and_then(|s| s.deadline),
            self.payer.and_then(|s| s.deadline),
            self.stall_deadline,
        ]
        .into_iter()
        .flatten()
        .min()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Torrent {
    pub(crate) remaining: u64,
    pub(crate) received_unverified: u64,
    pub(crate) complete: bool,
}

impl Torrent {
    /// Bytes still to be received for the torrent.
    pub(crate) fn needed(&self) -> u64 {
        self.remaining.saturating_sub(self.received_unverified)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PendingProposal {
    pub(crate) channel_id: ChannelId,
    pub(crate) payee: Address,
    pub(crate) deposit: u128,
    pub(crate) price: Option<u128>,
    pub(crate) nonce: Option<u64>,
    pub(crate) expires: Instant,
}

/// Whether `slot` holds an open channel.
pub(crate) fn slot_open(slot: Option<Slot>) -> bool {
    slot.is_some_and(|s| s.phase == Phase::Open)
}

/// Whether the identity has an open channel in either direction.
pub(crate) fn has_open(ident: &Identity) -> bool {
    slot_open(ident.payee) || slot_open(ident.payer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ledger_nets_credit_against_debt() {
        let mut l = Ledger::default();
        l.add(0, 10);
        assert_eq!((l.bank_wei, l.debt_wei), (0, 10));
        l.add(4, 0);
        assert_eq!((l.bank_wei, l.debt_wei), (0, 6));
        l.add(10, 0);
        assert_eq!((l.bank_wei, l.debt_wei), (4, 0));
        l.add(3, 2);
        assert_eq!((l.bank_wei, l.debt_wei), (5, 0));
    }
}
