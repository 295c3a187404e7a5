//! The cooperative close: the final state signed by both, then `conclude` by whoever has a share
//! to claim.

use alloy_primitives::U256;

use super::snapshot::{Phase, Sigs};
use super::{ChainAction, Channel, Event, Role, share};
use crate::error::{Error, PeerMisbehaved};
use crate::message::{Close, Message};
use crate::sign::Signature;
use crate::state::SignedVariablePart;

impl Channel {
    /// Either side: starts a cooperative close by signing the final state for the amount we know
    /// (payer: total sent; payee: total received). While closing it re-sends our signature; once
    /// closed and not yet finalized it re-queues the `conclude`.
    pub fn close(&mut self) -> Result<(), Error> {
        if self.st.chain.finalized.is_some() {
            return Err(self.wrong_phase("close"));
        }
        match &self.st.phase {
            Phase::Running => {
                let amount = self.st.paid;
                let sig = self.sign_state(&self.final_vp(amount))?;
                let mut sigs = Sigs::default();
                sigs.set(self.st.head.role, sig);
                self.st.phase = Phase::Closing { amount, sigs };
                self.changed();
                self.send_close(amount, sig);
                self.emit(Event::Closing { amount });
                Ok(())
            }
            Phase::Closing { .. } => {
                self.resend();
                Ok(())
            }
            Phase::Closed { .. } => {
                self.request_conclude();
                Ok(())
            }
            _ => Err(self.wrong_phase("close")),
        }
    }

    pub(super) fn on_close(&mut self, c: &Close) -> Result<(), Error> {
        if c.amount > self.st.deposit {
            return Err(PeerMisbehaved::OverDeposit {
                deposit: self.st.deposit,
                got: c.amount,
            }
            .into());
        }
        let role = self.st.head.role;
        let them = role.other();
        let hash = self.final_vp(c.amount).hash(self.id);
        match self.st.phase.clone() {
            Phase::Proposed | Phase::Funding | Phase::AwaitingPostfund => {
                Err(self.unexpected("close"))
            }
            Phase::Running => {
                self.check_close_bound(c.amount)?;
                self.check_sig(them, &hash, &c.signature, "final state")?;
                let mine = self.sign_state(&self.final_vp(c.amount))?;
                let mut sigs = Sigs::default();
                sigs.set(them, c.signature);
                sigs.set(role, mine);
                let credit = (role == Role::Payee && c.amount > self.st.paid)
                    .then(|| c.amount - self.st.paid);
                if credit.is_some() {
                    self.st.paid = c.amount;
                }
                self.st.phase = Phase::Closed {
                    amount: c.amount,
                    sigs,
                    initiated: false,
                };
                self.changed();
                if let Some(delta) = credit {
                    self.emit(Event::PaymentReceived {
                        delta,
                        total: c.amount,
                    });
                }
                self.send_close(c.amount, mine);
                self.emit(Event::Closing { amount: c.amount });
                self.emit(Event::Closed { amount: c.amount });
                self.request_conclude();
                Ok(())
            }
            Phase::Closing { amount, mut sigs } => {
                if c.amount == amount {
                    self.check_sig(them, &hash, &c.signature, "final state")?;
                    sigs.set(them, c.signature);
                    self.st.phase = Phase::Closed {
                        amount,
                        sigs,
                        initiated: true,
                    };
                    self.changed();
                    self.emit(Event::Closed { amount });
                    self.request_conclude();
                    Ok(())
                } else if role == Role::Payee && c.amount > amount {
                    // Simultaneous close: the payer's proposal wins. Nothing above our own final
                    // state is credited (the payer could still conclude that one).
                    self.check_sig(them, &hash, &c.signature, "final state")?;
                    let mine = self.sign_state(&self.final_vp(c.amount))?;
                    let mut sigs = Sigs::default();
                    sigs.set(them, c.signature);
                    sigs.set(role, mine);
                    self.st.phase = Phase::Closed {
                        amount: c.amount,
                        sigs,
                        initiated: false,
                    };
                    self.changed();
                    self.send_close(c.amount, mine);
                    self.emit(Event::Closed { amount: c.amount });
                    self.request_conclude();
                    Ok(())
                } else {
                    Err(PeerMisbehaved::ConflictingClose {
                        signed: amount,
                        got: c.amount,
                    }
                    .into())
                }
            }
            Phase::Closed {
                amount,
                sigs,
                initiated,
            } => {
                if c.amount != amount {
                    return Err(PeerMisbehaved::ConflictingClose {
                        signed: amount,
                        got: c.amount,
                    }
                    .into());
                }
                if sigs.get(them) != Some(c.signature) {
                    self.check_sig(them, &hash, &c.signature, "final state")?;
                }
                // The initiator may have missed our countersignature. (The initiator itself never
                // answers a duplicate, so two closed sides cannot ping-pong.)
                if !initiated {
                    self.resend();
                }
                Ok(())
            }
        }
    }

    pub(super) fn check_close_bound(&self, amount: U256) -> Result<(), Error> {
        match self.st.head.role {
            Role::Payee if amount < self.st.paid => Err(PeerMisbehaved::CloseBelowPaid {
                best: self.st.paid,
                got: amount,
            }
            .into()),
            Role::Payer if amount > self.st.paid => Err(PeerMisbehaved::CloseAboveSent {
                sent: self.st.paid,
                got: amount,
            }
            .into()),
            _ => Ok(()),
        }
    }

    pub(super) fn final_share(&self) -> U256 {
        match self.final_amount() {
            Some(a) => share(&self.outcome(a), self.st.head.role),
            None => U256::ZERO,
        }
    }

    pub(super) fn request_conclude(&mut self) {
        if let Some(c) = self.conclude_action() {
            self.act(c);
        }
    }

    /// `conclude` with the final state signed by both, unless the channel finalized or our
    /// share of that state is zero (the other side, which gets everything, pays for it).
    pub(super) fn conclude_action(&self) -> Option<ChainAction> {
        let Phase::Closed { amount, sigs, .. } = &self.st.phase else {
            return None;
        };
        if self.st.chain.finalized.is_some() || self.final_share().is_zero() {
            return None;
        }
        Some(ChainAction::Conclude {
            fixed: self.st.head.fixed.clone(),
            candidate: SignedVariablePart {
                variable_part: self.final_vp(*amount),
                sigs: sigs.to_vec(),
            },
        })
    }

    pub(super) fn send_close(&mut self, amount: U256, signature: Signature) {
        self.send(Message::Close(Close {
            channel_id: self.id,
            amount,
            signature,
        }));
    }
}
