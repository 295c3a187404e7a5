//! Opening and funding: the payee's proposal, the payer's join and deposit, the postfund
//! exchange, until both count the channel as running.

use std::sync::Arc;

use alloy_primitives::{Address, U256};

use super::snapshot::{Phase, State};
use super::{ChainAction, Channel, Event, Role};
use crate::error::{Error, PeerMisbehaved, UsageError};
use crate::message::{Join, Message, Postfund, Propose};
use crate::sign::{PublicKey, Signer, recover_key_eth_message, verify_eth_message};
use crate::state::{FixedPart, MAX_UINT48};

/// Parameters of a channel the payee creates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelParams {
    /// The payer (counterparty).
    pub payer: Address,
    /// The deposit the payer is asked for.
    pub deposit: U256,
    /// Nonce; choose it so that the channel id is new.
    pub channel_nonce: u64,
    /// The deployed `PaymentApp` (see [`crate::app`]).
    pub app_definition: Address,
    /// Challenge duration in seconds.
    pub challenge_duration: u64,
    /// Advisory price (smallest units of the asset per byte).
    pub price: Option<U256>,
    /// The asset of the deposit (`Address::ZERO`: the native coin; otherwise an ERC-20).
    pub asset: Address,
}

fn check_duration(d: u64) -> bool {
    d > 0 && d <= MAX_UINT48
}

impl Channel {
    /// Payee: creates a channel, signs the prefund and queues a [`Propose`] to the payer.
    pub fn create(signer: Arc<dyn Signer>, params: ChannelParams) -> Result<Self, Error> {
        let me = signer.address();
        if params.payer == me || params.payer == Address::ZERO {
            return Err(
                UsageError::InvalidParams("payer must be another, non-zero address").into(),
            );
        }
        if params.deposit.is_zero() {
            return Err(UsageError::InvalidParams("deposit must be positive").into());
        }
        if !check_duration(params.challenge_duration) {
            return Err(UsageError::InvalidParams("challenge duration out of range").into());
        }
        let fixed = FixedPart {
            participants: vec![params.payer, me],
            channel_nonce: params.channel_nonce,
            app_definition: params.app_definition,
            challenge_duration: params.challenge_duration,
        };
        let mut ch = Self::new(
            signer,
            State::proposed(
                Role::Payee,
                fixed,
                params.asset,
                params.deposit,
                params.price,
            ),
        );
        let sig = ch.sign_state(&ch.prefund_vp())?;
        ch.st.prefund.set(Role::Payee, sig);
        ch.changed();
        ch.send(Message::Propose(ch.propose_message()));
        Ok(ch)
    }

    /// Payer: a channel from a peer's proposal, after checking its structure and the payee's
    /// signature (policy is separate: [`JoinPolicy`](crate::policy::JoinPolicy)). Queues
    /// [`Event::Proposed`]; call [`Channel::join`] to accept.
    pub fn from_proposal(signer: Arc<dyn Signer>, proposal: &Propose) -> Result<Self, Error> {
        let me = signer.address();
        let fixed = &proposal.fixed;
        let invalid = |why| Error::from(PeerMisbehaved::InvalidProposal(why));
        if fixed.participants.len() != 2 {
            return Err(invalid("a payment channel has exactly two participants"));
        }
        if fixed.participants[0] != me {
            return Err(invalid("we are not the payer (participants[0])"));
        }
        let payee = fixed.participants[1];
        if payee == me || payee == Address::ZERO {
            return Err(invalid("the payee must be another, non-zero address"));
        }
        if proposal.deposit.is_zero() {
            return Err(invalid("zero deposit"));
        }
        if !check_duration(fixed.challenge_duration) {
            return Err(invalid("challenge duration out of range"));
        }
        let mut ch = Self::new(
            signer,
            State::proposed(
                Role::Payer,
                fixed.clone(),
                proposal.asset,
                proposal.deposit,
                proposal.price,
            ),
        );
        let hash = ch.prefund_vp().hash(ch.id);
        ch.check_sig(Role::Payee, &hash, &proposal.signature, "prefund")?;
        ch.st.prefund.set(Role::Payee, proposal.signature);
        ch.changed();
        ch.emit(Event::Proposed {
            payee,
            deposit: proposal.deposit,
            price: proposal.price,
            asset: proposal.asset,
        });
        Ok(ch)
    }

    /// Payer: accepts the proposal: countersigns the prefund and asks for the deposit
    /// ([`ChainAction::Deposit`]). Once the chain shows the deposit, the channel signs the
    /// postfund and sends [`Join`]. Calling it again while funding re-queues the deposit (retry).
    pub fn join(&mut self) -> Result<(), Error> {
        self.require_role(Role::Payer, "join")?;
        match self.st.phase {
            Phase::Proposed => {
                let sig = self.sign_state(&self.prefund_vp())?;
                self.st.prefund.set(Role::Payer, sig);
                self.st.phase = Phase::Funding;
                self.changed();
                self.emit(Event::Joined);
                self.request_deposit();
                self.progress()
            }
            Phase::Funding => {
                self.request_deposit();
                Ok(())
            }
            _ => Err(self.wrong_phase("join")),
        }
    }

    pub(super) fn request_deposit(&mut self) {
        let held = self.st.chain.holdings;
        if held < self.st.deposit {
            self.act(ChainAction::Deposit {
                asset: self.st.head.asset,
                channel_id: self.id,
                expected_held: held,
                amount: self.st.deposit - held,
            });
        }
    }

    pub(super) fn on_propose(&mut self, p: &Propose) -> Result<(), Error> {
        let same = self.st.head.role == Role::Payer
            && p.fixed == self.st.head.fixed
            && p.deposit == self.st.deposit
            && p.price == self.st.price
            && Some(p.signature) == self.st.prefund.payee;
        if same {
            Ok(())
        } else {
            Err(PeerMisbehaved::ConflictingProposal(self.id).into())
        }
    }

    pub(super) fn on_join(&mut self, j: &Join) -> Result<(), Error> {
        self.require_peer_role(Role::Payee, "join")?;
        let pre = self.prefund_vp().hash(self.id);
        let post = self.postfund_vp().hash(self.id);
        if matches!(self.st.phase, Phase::Proposed) {
            let key = recover_key_eth_message(&pre, &j.prefund).ok();
            let got = key.as_ref().map(PublicKey::address);
            let Some(key) = key.filter(|_| got == Some(self.payer())) else {
                return Err(PeerMisbehaved::BadSignature {
                    what: "prefund",
                    expected: self.payer(),
                    got,
                }
                .into());
            };
            if !verify_eth_message(&post, &j.postfund, &key) {
                return Err(self.bad_sig("postfund", Role::Payer, &post, &j.postfund));
            }
            self.payer_key = Some(key);
            self.st.prefund.set(Role::Payer, j.prefund);
            self.st.postfund.set(Role::Payer, j.postfund);
            self.st.phase = Phase::Funding;
            self.changed();
            self.emit(Event::Joined);
            return self.progress();
        }
        // A duplicate: check it, then repeat our postfund if the payer may have missed it.
        let known =
            self.st.prefund.payer == Some(j.prefund) && self.st.postfund.payer == Some(j.postfund);
        if !known {
            self.check_sig(Role::Payer, &pre, &j.prefund, "prefund")?;
            self.check_sig(Role::Payer, &post, &j.postfund, "postfund")?;
        }
        if matches!(self.st.phase, Phase::Running) {
            self.resend();
        }
        Ok(())
    }

    pub(super) fn on_postfund(&mut self, f: &Postfund) -> Result<(), Error> {
        self.require_peer_role(Role::Payer, "postfund")?;
        let post = self.postfund_vp().hash(self.id);
        match self.st.phase {
            Phase::Proposed | Phase::Funding => Err(self.unexpected("postfund")),
            Phase::AwaitingPostfund => {
                self.check_sig(Role::Payee, &post, &f.signature, "postfund")?;
                self.st.postfund.set(Role::Payee, f.signature);
                self.st.phase = Phase::Running;
                self.changed();
                self.emit(Event::Funded);
                Ok(())
            }
            _ => {
                if self.st.postfund.payee != Some(f.signature) {
                    self.check_sig(Role::Payee, &post, &f.signature, "postfund")?;
                }
                Ok(())
            }
        }
    }

    /// `Deposited`: the latest holdings; funding advances once they cover the deposit.
    pub(super) fn on_deposited(&mut self, asset: Address, holdings: U256) -> Result<(), Error> {
        // Events come in chain order: the latest one tells the holdings (a re-scan after
        // a reorg replaces them rather than adding to them).
        if asset == self.st.head.asset && holdings != self.st.chain.holdings {
            self.st.chain.holdings = holdings;
            self.changed();
        }
        self.progress()
    }

    /// Advances funding once the holdings cover the deposit.
    pub(super) fn progress(&mut self) -> Result<(), Error> {
        if self.st.chain.holdings < self.st.deposit || !matches!(self.st.phase, Phase::Funding) {
            return Ok(());
        }
        let sig = self.sign_state(&self.postfund_vp())?;
        self.st.postfund.set(self.st.head.role, sig);
        match self.st.head.role {
            Role::Payer => {
                self.st.phase = Phase::AwaitingPostfund;
                self.changed();
                if let Some(j) = self.join_message() {
                    self.send(Message::Join(j));
                }
            }
            Role::Payee => {
                self.st.phase = Phase::Running;
                self.changed();
                if let Some(f) = self.postfund_message() {
                    self.send(Message::Postfund(f));
                }
                self.emit(Event::Funded);
            }
        }
        Ok(())
    }

    pub(super) fn propose_message(&self) -> Propose {
        Propose {
            fixed: self.st.head.fixed.clone(),
            deposit: self.st.deposit,
            price: self.st.price,
            asset: self.st.head.asset,
            signature: self
                .st
                .prefund
                .payee
                .expect("a payee channel signs its prefund at creation"),
        }
    }

    pub(super) fn join_message(&self) -> Option<Join> {
        Some(Join {
            channel_id: self.id,
            prefund: self.st.prefund.payer?,
            postfund: self.st.postfund.payer?,
        })
    }

    pub(super) fn postfund_message(&self) -> Option<Postfund> {
        Some(Postfund {
            channel_id: self.id,
            signature: self.st.postfund.payee?,
        })
    }
}
