//! Payments: the payer signs cumulative vouchers, the payee keeps the largest.
//!
//! Both signature operations can run off the caller's thread without giving up anything:
//! - the payer signs the next cumulative vouchers ahead of time ([`Channel::presign`] →
//!   [`PresignJob::run`] anywhere → [`Channel::add_presigned`]); they stay inside the channel,
//!   unsent, unpersisted and not counted as paid, until [`Channel::send_payment`] reaches their
//!   total, which then takes the pre-signed voucher instead of signing (and persists it before
//!   it leaves, as any voucher);
//! - the payee checks a voucher's signature anywhere ([`VerifiedVoucher::verify`] with
//!   [`Channel::voucher_key`]) and hands the proof to [`Channel::handle_verified_voucher`], which
//!   credits exactly as [`Channel::handle_message`] would, without checking the signature again.

use std::sync::Arc;

use alloy_primitives::{B256, U256};

use super::snapshot::Phase;
use super::{Channel, Event, Role};
use crate::error::{Error, PeerMisbehaved, UsageError};
use crate::message::{Message, VoucherMessage};
use crate::sign::{PublicKey, Signer};
use crate::voucher::Voucher;

/// Most pre-signed vouchers a channel keeps (see [`Channel::presign`]).
pub const MAX_PRESIGNED: usize = 64;

/// Vouchers to sign ahead of time for one channel, with that channel's signer: made by
/// [`Channel::presign`], run anywhere (e.g. a blocking thread pool) with [`PresignJob::run`].
pub struct PresignJob {
    channel_id: B256,
    amounts: Vec<U256>,
    signer: Arc<dyn Signer>,
}

impl std::fmt::Debug for PresignJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PresignJob")
            .field("channel_id", &self.channel_id)
            .field("amounts", &self.amounts)
            .finish_non_exhaustive()
    }
}

impl PresignJob {
    /// The cumulative totals this job signs.
    pub fn amounts(&self) -> &[U256] {
        &self.amounts
    }

    /// Signs every voucher (stops at the first signer failure: what was signed before it is
    /// kept). Pure computation: no channel state is touched.
    pub fn run(self) -> Presigned {
        let mut vouchers = Vec::with_capacity(self.amounts.len());
        for amount in self.amounts {
            match Voucher::sign(self.channel_id, amount, &*self.signer) {
                Ok(v) => vouchers.push(v),
                Err(_) => break,
            }
        }
        Presigned {
            channel_id: self.channel_id,
            vouchers,
        }
    }
}

/// Vouchers signed by a [`PresignJob`], for [`Channel::add_presigned`]. Only a job can make one,
/// so they are signed by the channel's own signer.
#[derive(Debug, Clone)]
pub struct Presigned {
    channel_id: B256,
    vouchers: Vec<Voucher>,
}

impl Presigned {
    /// The signed vouchers.
    pub fn vouchers(&self) -> &[Voucher] {
        &self.vouchers
    }
}

/// A voucher whose signature was checked against a payer key: the proof
/// [`Channel::handle_verified_voucher`] takes. Only [`VerifiedVoucher::verify`] makes one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifiedVoucher {
    voucher: Voucher,
    key: PublicKey,
}

impl VerifiedVoucher {
    /// Checks `voucher`'s signature (its `v` included) against `payer`: one ECDSA verification,
    /// no channel state involved, so it can run on any thread. `None` if it does not verify.
    pub fn verify(voucher: Voucher, payer: &PublicKey) -> Option<Self> {
        voucher.verify(payer).then_some(Self {
            voucher,
            key: *payer,
        })
    }

    /// The verified voucher.
    pub fn voucher(&self) -> &Voucher {
        &self.voucher
    }
}

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
        // A voucher signed ahead for exactly this total is used as is; it becomes a liability
        // only now, and is persisted before it leaves like any other.
        let voucher = match self.presigned.remove(&total) {
            Some(v) => {
                self.presigned.retain(|amount, _| *amount > total);
                v
            }
            None => {
                let v = Voucher::sign(self.id, total, &*self.signer)?;
                // Off the pre-signed totals: the later ones are unlikely to be reached exactly.
                self.presigned.clear();
                v
            }
        };
        self.st.best = Some(voucher);
        self.st.paid = total;
        self.voucher_changed();
        self.send(Message::Voucher(VoucherMessage::from_voucher(&voucher)));
        self.emit(Event::PaymentSent { delta, total });
        Ok(voucher)
    }

    /// Payer: a job that signs the vouchers of the next `count` payments of `delta` each
    /// (cumulative totals `paid + delta`, `paid + 2·delta`, …, up to the deposit), skipping the
    /// totals already signed ahead and keeping at most [`MAX_PRESIGNED`]. `None` when there is
    /// nothing to sign (not a running payer channel, `delta` zero, the deposit reached).
    ///
    /// Signing ahead commits nothing: a pre-signed voucher is not sent, not persisted and not
    /// counted in [`Channel::paid`] until [`Channel::send_payment`] reaches its total; it is
    /// lost with the channel value (a restart signs again).
    pub fn presign(&self, delta: U256, count: usize) -> Option<PresignJob> {
        if self.st.head.role != Role::Payer || !self.is_running() || delta.is_zero() {
            return None;
        }
        let room = MAX_PRESIGNED.saturating_sub(self.presigned.len());
        let mut amounts = Vec::new();
        let mut total = self.st.paid;
        for _ in 0..count {
            if amounts.len() >= room {
                break;
            }
            match total.checked_add(delta) {
                Some(t) if t <= self.st.deposit => total = t,
                _ => break,
            }
            if !self.presigned.contains_key(&total) {
                amounts.push(total);
            }
        }
        (!amounts.is_empty()).then(|| PresignJob {
            channel_id: self.id,
            amounts,
            signer: self.signer.clone(),
        })
    }

    /// Payer: keeps the vouchers a [`PresignJob`] of this channel signed, for
    /// [`Channel::send_payment`] to use when it reaches their totals. Vouchers at or below what
    /// was paid meanwhile are dropped, and at most [`MAX_PRESIGNED`] are kept. Returns how many
    /// were kept. Nothing is queued, persisted or counted as paid.
    pub fn add_presigned(&mut self, presigned: Presigned) -> Result<usize, Error> {
        self.require_role(Role::Payer, "add_presigned")?;
        if presigned.channel_id != self.id {
            return Err(UsageError::WrongChannel {
                expected: self.id,
                got: presigned.channel_id,
            }
            .into());
        }
        let mut kept = 0;
        for v in presigned.vouchers {
            if v.amount > self.st.paid
                && v.amount <= self.st.deposit
                && self.presigned.len() < MAX_PRESIGNED
                && self.presigned.insert(v.amount, v).is_none()
            {
                kept += 1;
            }
        }
        Ok(kept)
    }

    /// Payer: how many vouchers are signed ahead and not sent.
    pub fn presigned_count(&self) -> usize {
        self.presigned.len()
    }

    /// Payee: the key to check a voucher of this channel with ([`VerifiedVoucher::verify`]),
    /// once the payer's key is known (from its prefund signature).
    pub fn voucher_key(&self) -> Option<PublicKey> {
        match self.st.head.role {
            Role::Payee => self.payer_key,
            Role::Payer => None,
        }
    }

    /// Payee: whether `m` would be credited, i.e. needs its signature checked: above what was
    /// received, within the deposit, and the channel running. A `false` is decided by
    /// [`Channel::handle_message`] without any signature check (a duplicate, or an error).
    pub fn voucher_needs_check(&self, m: &VoucherMessage) -> bool {
        self.st.head.role == Role::Payee
            && m.channel.matches(&self.id)
            && self.is_running()
            && m.amount > self.st.paid
            && m.amount <= self.st.deposit
    }

    /// Payee: handles a voucher whose signature was checked already (off this thread): exactly
    /// [`Channel::handle_message`] with its voucher, minus the signature check when the proof
    /// was made with this channel's payer key (with another key, the signature is checked here).
    /// Nothing is credited that was not verified.
    pub fn handle_verified_voucher(&mut self, verified: &VerifiedVoucher) -> Result<(), Error> {
        let v = verified.voucher;
        if v.channel_id != self.id {
            return Err(UsageError::WrongChannel {
                expected: self.id,
                got: v.channel_id,
            }
            .into());
        }
        let key_matches = self.payer_key == Some(verified.key);
        self.handle_voucher_message(&VoucherMessage::from_voucher(&v), key_matches)
    }

    pub(super) fn on_voucher(&mut self, m: &VoucherMessage) -> Result<(), Error> {
        self.on_voucher_checked(m, false)
    }

    pub(super) fn on_voucher_checked(
        &mut self,
        m: &VoucherMessage,
        signature_verified: bool,
    ) -> Result<(), Error> {
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
        if !signature_verified {
            self.check_voucher_sig(&v)?;
        }
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
