//! The states the channel signs (prefund, postfund, redemption, final) and the checks of the
//! counterparty's signatures on them.

use alloy_primitives::{B256, Bytes, U256};

use super::{Channel, FINAL_TURN, POSTFUND_TURN, PREFUND_TURN, REDEMPTION_TURN, Role};
use crate::error::{Error, PeerMisbehaved};
use crate::sign::{Signature, recover_eth_message, verify_eth_message};
use crate::state::{Outcome, VariablePart, two_party_outcome};
use crate::voucher::Voucher;

impl Channel {
    /// `{payer: deposit − payee_amount, payee: payee_amount}`; callers keep `payee_amount ≤ deposit`.
    pub(super) fn outcome(&self, payee_amount: U256) -> Outcome {
        two_party_outcome(
            self.st.head.asset,
            self.payer(),
            self.st.deposit.saturating_sub(payee_amount),
            self.payee(),
            payee_amount,
        )
    }

    pub(super) fn vp(
        &self,
        turn_num: u64,
        payee_amount: U256,
        app_data: Bytes,
        is_final: bool,
    ) -> VariablePart {
        VariablePart {
            outcome: self.outcome(payee_amount),
            app_data,
            turn_num,
            is_final,
        }
    }

    pub(super) fn prefund_vp(&self) -> VariablePart {
        self.vp(PREFUND_TURN, U256::ZERO, Bytes::new(), false)
    }

    pub(super) fn postfund_vp(&self) -> VariablePart {
        self.vp(POSTFUND_TURN, U256::ZERO, Bytes::new(), false)
    }

    pub(super) fn redemption_vp(&self, v: &Voucher) -> VariablePart {
        self.vp(REDEMPTION_TURN, v.amount, v.app_data(), false)
    }

    pub(super) fn final_vp(&self, payee_amount: U256) -> VariablePart {
        self.vp(FINAL_TURN, payee_amount, Bytes::new(), true)
    }

    pub(super) fn sign_state(&self, vp: &VariablePart) -> Result<Signature, Error> {
        Ok(self.signer.sign_eth_message(&vp.hash(self.id))?)
    }

    /// Checks that `who` signed `hash`: with the cached payer key when we have it (one
    /// verification), by recovery otherwise.
    pub(super) fn check_sig(
        &self,
        who: Role,
        hash: &B256,
        sig: &Signature,
        what: &'static str,
    ) -> Result<(), Error> {
        let ok = match (who, &self.payer_key) {
            (Role::Payer, Some(key)) => verify_eth_message(hash, sig, key),
            _ => {
                recover_eth_message(hash, sig).ok()
                    == Some(self.st.head.fixed.participants[who.index()])
            }
        };
        if ok {
            Ok(())
        } else {
            Err(self.bad_sig(what, who, hash, sig))
        }
    }

    pub(super) fn bad_sig(
        &self,
        what: &'static str,
        who: Role,
        hash: &B256,
        sig: &Signature,
    ) -> Error {
        PeerMisbehaved::BadSignature {
            what,
            expected: self.st.head.fixed.participants[who.index()],
            got: recover_eth_message(hash, sig).ok(),
        }
        .into()
    }
}
