//! Payments: the payer signs cumulative vouchers, the payee keeps the largest.

use alloy_primitives::U256;

use super::snapshot::Phase;
use super::{Channel, Event, Role};
use crate::error::{Error, PeerMisbehaved, UsageError};
use crate::message::{Message, VoucherMessage};
use crate::voucher::Voucher;

impl Channel {
    /// Payer: pays `delta` more: signs the voucher for the new cumulative total and queues it.
    /// Refuses (signing nothing) beyond the deposit. A zero `delta` re-sends the latest voucher
    /// (or signs one for zero).
    pub fn send_payment(&mut self, delta: U256) -> Result<Voucher, Error> {
        self.require_role(Role::Payer, "send_payment")?;
        if !matches!(self.st.phase, Phase::Running) {
            return Err(self.wrong_phase("send_payment"));
        }
        if self.is_disputed() {
            return Err(UsageError::Disputed {
                operation: "send_payment",
            }
            .into());
        }
        let total = self.st.paid.checked_add(delta);
        let Some(total) = total.filter(|t| *t <= self.st.deposit) else {
            return Err(UsageError::PayBeyondDeposit {
                deposit: self.st.deposit,
                delta,
                total,
            }
            .into());
        };
        if delta.is_zero()
            && let Some(best) = self.st.best
        {
            self.send(Message::Voucher(VoucherMessage::from_voucher(&best)));
            return Ok(best);
        }
        let voucher = Voucher::sign(self.id, total, &*self.signer)?;
        self.st.best = Some(voucher);
        self.st.paid = total;
        self.voucher_changed();
        self.send(Message::Voucher(VoucherMessage::from_voucher(&voucher)));
        self.emit(Event::PaymentSent { delta, total });
        Ok(voucher)
    }

    pub(super) fn on_voucher(&mut self, m: &VoucherMessage) -> Result<(), Error> {
        self.require_peer_role(Role::Payee, "voucher")?;
        let v = m.to_voucher(self.id);
        if v.amount > self.st.deposit {
            return Err(PeerMisbehaved::OverDeposit {
                deposit: self.st.deposit,
                got: v.amount,
            }
            .into());
        }
        match &self.st.phase {
            Phase::Running if !self.is_disputed() => {}
            // Covered by the final state we signed: a late or duplicate voucher.
            Phase::Closing { amount, .. } | Phase::Closed { amount, .. } if v.amount <= *amount => {
                return Ok(());
            }
            _ => return Err(self.unexpected("voucher")),
        }
        let best = self.st.paid;
        if v.amount == best {
            return Ok(());
        }
        if v.amount < best {
            return Err(PeerMisbehaved::LowerVoucher {
                best,
                got: v.amount,
            }
            .into());
        }
        self.check_voucher_sig(&v)?;
        let delta = v.amount - best;
        self.st.best = Some(v);
        self.st.paid = v.amount;
        self.voucher_changed();
        self.emit(Event::PaymentReceived {
            delta,
            total: v.amount,
        });
        Ok(())
    }

    pub(super) fn check_voucher_sig(&self, v: &Voucher) -> Result<(), Error> {
        self.check_sig(Role::Payer, &v.hash(), &v.signature, "voucher")
    }
}
