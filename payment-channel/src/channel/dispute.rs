//! Disputes: our own challenge with the best state we can support, and the payee's
//! counter-challenge against a stale one.

use alloy_primitives::U256;

use super::snapshot::Phase;
use super::{ChainAction, Channel, REDEMPTION_TURN, RegisteredChallenge, Role, share};
use crate::error::{Error, UsageError};
use crate::state::{SignedVariablePart, challenge_message_hash};

impl Channel {
    /// Either side: takes the channel on chain with the best state we can support (see the module
    /// docs). With a final state signed by both, asks for `conclude` instead.
    pub fn challenge(&mut self, now: u64) -> Result<(), Error> {
        self.handle_timeout(now);
        if self.st.chain.finalized.is_some() {
            return Err(UsageError::CannotChallenge("the channel is finalized").into());
        }
        if matches!(self.st.phase, Phase::Closed { .. }) {
            self.request_conclude();
            return Ok(());
        }
        let Some((proof, candidate)) = self.best_supported()? else {
            return Err(UsageError::CannotChallenge("no state is signed by both").into());
        };
        if let Some(reg) = &self.st.chain.challenge
            && reg.turn_num >= candidate.variable_part.turn_num
        {
            return Err(UsageError::CannotChallenge(
                "a challenge at this turn or later is registered",
            )
            .into());
        }
        if self.owed().is_zero() {
            // Payee without a voucher above zero, or payer that signed its whole deposit away:
            // the challenge and the payout would cost gas and pay us nothing.
            return Err(UsageError::CannotChallenge("it would claim nothing for us").into());
        }
        let challenge = self.challenge_action(proof, candidate)?;
        if !self.st.chain.challenge_requested {
            self.st.chain.challenge_requested = true;
            self.changed();
        }
        self.queue_challenge(challenge);
        Ok(())
    }

    pub(super) fn respond_to_challenge(&mut self) -> Result<(), Error> {
        let Some(reg) = self.st.chain.challenge.clone() else {
            return Ok(());
        };
        if matches!(self.st.phase, Phase::Closed { .. }) {
            // A final state signed by both beats any challenge, and `conclude` works in Challenge mode.
            if share(&reg.candidate.outcome, self.st.head.role) < self.final_share() {
                self.request_conclude();
            }
            return Ok(());
        }
        if let Some(counter) = self.counter_action(&reg)? {
            self.queue_challenge(counter);
        }
        Ok(())
    }

    /// The best `(proof, candidate)` we can support on chain.
    pub(super) fn best_supported(
        &self,
    ) -> Result<Option<(Vec<SignedVariablePart>, SignedVariablePart)>, Error> {
        if self.st.head.role == Role::Payee
            && self.st.postfund.both()
            && let Some(v) = self.st.best
            && !v.amount.is_zero()
        {
            let vp = self.redemption_vp(&v);
            let sig = self.sign_state(&vp)?;
            let proof = vec![SignedVariablePart {
                variable_part: self.postfund_vp(),
                sigs: self.st.postfund.to_vec(),
            }];
            return Ok(Some((
                proof,
                SignedVariablePart {
                    variable_part: vp,
                    sigs: vec![sig],
                },
            )));
        }
        for (sigs, vp) in [
            (&self.st.postfund, self.postfund_vp()),
            (&self.st.prefund, self.prefund_vp()),
        ] {
            if sigs.both() {
                return Ok(Some((
                    Vec::new(),
                    SignedVariablePart {
                        variable_part: vp,
                        sigs: sigs.to_vec(),
                    },
                )));
            }
        }
        Ok(None)
    }

    /// Queues `challenge` in place of any queued challenge.
    pub(super) fn queue_challenge(&mut self, challenge: ChainAction) {
        let is_challenge = |a: &ChainAction| matches!(a, ChainAction::Challenge { .. });
        self.out.drop_actions(is_challenge);
        self.act(challenge);
    }

    /// What we can still claim off chain: the payee its best voucher, the payer its deposit
    /// minus what it signed away.
    pub(super) fn owed(&self) -> U256 {
        match self.st.head.role {
            Role::Payee => self.st.best.map(|v| v.amount).unwrap_or_default(),
            Role::Payer => self.st.deposit.saturating_sub(self.st.paid),
        }
    }

    /// The challenge we owe after [`Channel::challenge`]: our best supported state, unless it
    /// would claim nothing for us.
    pub(super) fn own_challenge_action(&self) -> Result<Option<ChainAction>, Error> {
        if self.owed().is_zero() || self.st.chain.holdings.is_zero() {
            return Ok(None);
        }
        let Some((proof, candidate)) = self.best_supported()? else {
            return Ok(None);
        };
        self.challenge_action(proof, candidate).map(Some)
    }

    /// The counter-challenge a registered challenge `reg` calls for (payee: its largest voucher
    /// against a candidate below the redemption turn that pays it less).
    pub(super) fn counter_action(
        &self,
        reg: &RegisteredChallenge,
    ) -> Result<Option<ChainAction>, Error> {
        if self.st.head.role != Role::Payee || reg.turn_num >= REDEMPTION_TURN {
            return Ok(None);
        }
        let best = self.st.best.map(|v| v.amount).unwrap_or_default();
        if best <= share(&reg.candidate.outcome, Role::Payee) {
            return Ok(None);
        }
        match self.best_supported()? {
            Some((proof, candidate)) if candidate.variable_part.turn_num == REDEMPTION_TURN => {
                self.challenge_action(proof, candidate).map(Some)
            }
            _ => Ok(None),
        }
    }

    pub(super) fn challenge_action(
        &self,
        proof: Vec<SignedVariablePart>,
        candidate: SignedVariablePart,
    ) -> Result<ChainAction, Error> {
        let hash = candidate.variable_part.hash(self.id);
        let challenger_sig = self
            .signer
            .sign_eth_message(&challenge_message_hash(hash))?;
        Ok(ChainAction::Challenge {
            fixed: self.st.head.fixed.clone(),
            proof,
            candidate,
            challenger_sig,
        })
    }
}
