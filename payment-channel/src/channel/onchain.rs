//! What the channel knows of the chain ([`OnChain`]), how adjudicator events change it, and what
//! the channel owes the chain ([`Channel::chain_duty`]).

use alloy_primitives::{B256, U256};
use serde::{Deserialize, Serialize};

use super::snapshot::Phase;
use super::{ChainAction, Channel, Event, Role};
use crate::error::Error;
use crate::state::{Outcome, SignedVariablePart, VariablePart};

/// A challenge registered on chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisteredChallenge {
    /// Turn of the candidate.
    pub turn_num: u64,
    /// When it finalizes unless cleared.
    pub finalizes_at: u64,
    /// The candidate state.
    pub candidate: VariablePart,
    /// Its state hash (what `transferAllAssets` needs after the timeout).
    pub state_hash: B256,
}

impl RegisteredChallenge {
    /// The challenge of `candidate` for channel `channel_id`, finalizing at `finalizes_at`.
    pub fn new(channel_id: B256, finalizes_at: u64, candidate: &VariablePart) -> Self {
        Self {
            turn_num: candidate.turn_num,
            finalizes_at,
            candidate: candidate.clone(),
            state_hash: candidate.hash(channel_id),
        }
    }

    /// The finalization this challenge reaches by chain time `now`: `None` while its time is not
    /// up (a ledger, a virtual channel and a payment channel all finalize this way).
    pub fn finalization_by(&self, now: u64) -> Option<Finalization> {
        (self.finalizes_at <= now).then(|| Finalization {
            outcome: self.candidate.outcome.clone(),
            state_hash: self.state_hash,
            at: self.finalizes_at,
        })
    }
}

/// How the channel finalized on chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finalization {
    /// The outcome that pays out.
    pub outcome: Outcome,
    /// The `stateHash` argument of `transferAllAssets` (zero after `conclude`).
    pub state_hash: B256,
    /// Finalization time.
    pub at: u64,
}

/// Chain time `now` passed: records in `finalized` the finalization `challenge` reaches by then,
/// unless finalized already. Whether it did (ledgers and virtual channels then emit `Finalized`).
pub(crate) fn finalize_on_timeout(
    finalized: &mut Option<Finalization>,
    challenge: Option<&RegisteredChallenge>,
    now: u64,
) -> bool {
    if finalized.is_some() {
        return false;
    }
    *finalized = challenge.and_then(|c| c.finalization_by(now));
    finalized.is_some()
}

/// What this side knows about the channel on chain.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OnChain {
    /// The channel's holdings in its asset, as the latest applied adjudicator event reports
    /// them (`Deposited`, or a payout's `AllocationUpdated`): replaced, never accumulated.
    pub holdings: U256,
    /// The registered challenge, if any.
    pub challenge: Option<RegisteredChallenge>,
    /// Set once the channel finalized.
    pub finalized: Option<Finalization>,
    /// Set once the payout happened.
    pub paid_out: bool,
    /// Largest turn number the adjudicator recorded (never decreases on chain, so replayed
    /// older events are recognized and ignored).
    #[serde(default)]
    pub turn_num_record: u64,
    /// First block whose adjudicator events have not been applied yet (persisted with the
    /// state they produced, so a restart reads only newer blocks).
    #[serde(default)]
    pub next_block: u64,
    /// We asked for a challenge ([`Channel::challenge`]) and no challenge has registered since:
    /// the challenge stays a duty ([`Channel::chain_duty`]) across failures and restarts.
    #[serde(default)]
    pub challenge_requested: bool,
}

impl Channel {
    /// First block whose events have not been fed to
    /// [`handle_chain_event`](Self::handle_chain_event) yet, as recorded by
    /// [`advance_chain_cursor`](Self::advance_chain_cursor).
    pub fn chain_cursor(&self) -> u64 {
        self.st.chain.next_block
    }

    /// Records that every event before block `next` was handled. Persisted with the channel
    /// (in the same snapshot as the state those events produced); never moves back.
    pub fn advance_chain_cursor(&mut self, next: u64) {
        if next > self.st.chain.next_block {
            self.st.chain.next_block = next;
            self.changed();
        }
    }

    /// `ChallengeRegistered`: records the challenge, drops the queued challenges it makes moot
    /// and answers it while it runs. `Ok(false)`: a replay, or the channel finalized already.
    pub(super) fn on_challenge_registered(
        &mut self,
        now: u64,
        finalizes_at: u64,
        candidate: &SignedVariablePart,
    ) -> Result<bool, Error> {
        if self.st.chain.finalized.is_some() {
            return Ok(false);
        }
        let reg = RegisteredChallenge::new(self.id, finalizes_at, &candidate.variable_part);
        // A replay (e.g. after a restart) of this or an older registration.
        let older = reg.turn_num < self.st.chain.turn_num_record;
        if older || self.st.chain.challenge.as_ref() == Some(&reg) {
            return Ok(false);
        }
        self.st.chain.turn_num_record = reg.turn_num;
        let turn = reg.turn_num;
        self.st.chain.challenge = Some(reg);
        // Whoever registered it, the channel is on chain now: what we owe is an answer
        // (see `chain_duty`), not our own challenge.
        self.st.chain.challenge_requested = false;
        self.changed();
        // A queued challenge at or below the registered turn can only revert now.
        let obsolete = |a: &ChainAction| {
            matches!(a, ChainAction::Challenge { candidate, .. }
                if candidate.variable_part.turn_num <= turn)
        };
        self.out.drop_actions(obsolete);
        self.emit(Event::ChallengeRegistered {
            turn_num: turn,
            finalizes_at,
        });
        if finalizes_at > now {
            self.respond_to_challenge()?;
        }
        Ok(true)
    }

    /// `ChallengeCleared` or `Checkpointed` raising the turn number record.
    pub(super) fn on_challenge_cleared(&mut self, new_turn_num_record: u64) {
        // A checkpoint raises the record above the challenge it clears.
        self.st.chain.turn_num_record = new_turn_num_record;
        self.st.chain.challenge = None;
        self.changed();
        self.emit(Event::ChallengeCleared);
    }

    /// `Concluded`: finalized with the final state signed by both (if we hold it).
    pub(super) fn on_concluded(&mut self, finalizes_at: u64) {
        if self.st.chain.finalized.is_none()
            && let Some(amount) = self.final_amount()
        {
            self.finalize(Finalization {
                outcome: self.outcome(amount),
                state_hash: B256::ZERO,
                at: finalizes_at,
            });
        }
    }

    /// `AllocationUpdated`: the holdings after a payout, which implies finalization.
    pub(super) fn on_allocation_updated(
        &mut self,
        now: u64,
        asset_index: u64,
        final_holdings: U256,
    ) {
        if asset_index == 0 && final_holdings != self.st.chain.holdings {
            self.st.chain.holdings = final_holdings;
            self.changed();
        }
        // A payout implies finalization: catch up with the clock first.
        self.handle_timeout(now);
        if let Some(fin) = &self.st.chain.finalized
            && !self.st.chain.paid_out
        {
            let amount = share(&fin.outcome, self.st.head.role);
            self.st.chain.paid_out = true;
            self.changed();
            self.emit(Event::PaidOut { amount });
        }
    }

    pub(super) fn finalize(&mut self, fin: Finalization) {
        let amount = share(&fin.outcome, self.st.head.role);
        if let Some(t) = self.transfer_action(&fin) {
            self.act(t);
        }
        // Any queued challenge or conclude is moot now.
        let moot = |a: &ChainAction| {
            matches!(
                a,
                ChainAction::Challenge { .. } | ChainAction::Conclude { .. }
            )
        };
        self.out.drop_actions(moot);
        self.st.chain.finalized = Some(fin);
        self.changed();
        self.emit(Event::Finalized { amount });
    }

    /// The payout of `fin`, unless it happened, our share is zero (the other side pays for
    /// its own payout) or nothing is held.
    pub(super) fn transfer_action(&self, fin: &Finalization) -> Option<ChainAction> {
        let c = &self.st.chain;
        if c.paid_out || share(&fin.outcome, self.st.head.role).is_zero() || c.holdings.is_zero() {
            return None;
        }
        Some(ChainAction::TransferAllAssets {
            channel_id: self.id,
            outcome: fin.outcome.clone(),
            state_hash: fin.state_hash,
        })
    }

    /// The transaction this side owes the chain at chain time `now`, derived from the persisted
    /// state alone (so a driver can ask again after any failure or restart), or `None`:
    ///
    /// * finalized (recorded, or a registered challenge whose time is up): the payout, when our
    ///   share and the holdings are not zero;
    /// * a challenge registered: `conclude` when we hold a final state signed by both that pays
    ///   us more than the candidate; the payee's counter-challenge with its largest voucher when
    ///   the candidate is below the redemption turn and pays it less;
    /// * closed by both: `conclude`, when our share is not zero;
    /// * after [`Channel::challenge`] until a challenge registers: that challenge, when it claims
    ///   something for us;
    /// * payer, joined and the deposit not (fully) seen on chain: the rest of the deposit.
    ///
    /// The duty is what the chain still needs *as far as the applied events tell*: a driver
    /// checks the chain before sending (the transaction may have landed in a block not applied
    /// yet) and drops it when it is moot. Nothing is queued and nothing changes.
    pub fn chain_duty(&self, now: u64) -> Result<Option<ChainAction>, Error> {
        let c = &self.st.chain;
        if c.paid_out {
            return Ok(None);
        }
        let fin = c
            .finalized
            .clone()
            .or_else(|| c.challenge.as_ref()?.finalization_by(now));
        if let Some(fin) = fin {
            return Ok(self.transfer_action(&fin));
        }
        if let Some(reg) = &c.challenge {
            if matches!(self.st.phase, Phase::Closed { .. }) {
                let better = share(&reg.candidate.outcome, self.st.head.role) < self.final_share();
                return Ok(if better { self.conclude_action() } else { None });
            }
            return self.counter_action(reg);
        }
        if matches!(self.st.phase, Phase::Closed { .. }) {
            return Ok(self.conclude_action());
        }
        if c.challenge_requested {
            return self.own_challenge_action();
        }
        if self.st.head.role == Role::Payer
            && matches!(self.st.phase, Phase::Funding)
            && c.holdings < self.st.deposit
        {
            return Ok(Some(ChainAction::Deposit {
                asset: self.st.head.asset,
                channel_id: self.id,
                expected_held: c.holdings,
                amount: self.st.deposit - c.holdings,
            }));
        }
        Ok(None)
    }
}

/// The amount `role` gets in a two-party outcome (zero if the outcome has another shape).
pub fn share(outcome: &Outcome, role: Role) -> U256 {
    outcome
        .first()
        .and_then(|e| e.allocations.get(role.index()))
        .map(|a| a.amount)
        .unwrap_or_default()
}
