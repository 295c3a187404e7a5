//! What a channel persists: its phase, the signatures it holds, what it knows of the chain, and
//! the versioned JSON record of all that ([`ChannelSnapshot`]); [`Channel::restore`] rebuilds a
//! channel from it.

use std::sync::Arc;

use alloy_primitives::{Address, B256, U256};
use serde::{Deserialize, Serialize};

use super::{Channel, OnChain, Role};
use crate::error::{Error, UsageError};
use crate::sign::{Signature, Signer, recover_key_eth_message};
use crate::state::FixedPart;
use crate::store::RecordHead;
use crate::voucher::Voucher;

/// The off-chain phase with its data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) enum Phase {
    Proposed,
    Funding,
    AwaitingPostfund,
    Running,
    /// We signed the final state paying the payee `amount`.
    Closing {
        amount: U256,
        sigs: Sigs,
    },
    /// Both signed the final state paying the payee `amount`.
    Closed {
        amount: U256,
        sigs: Sigs,
        /// Whether we proposed it (then the peer already has both signatures).
        initiated: bool,
    },
}

/// Signatures on one state, by role.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Sigs {
    pub(super) payer: Option<Signature>,
    pub(super) payee: Option<Signature>,
}

impl Sigs {
    pub(super) fn get(&self, role: Role) -> Option<Signature> {
        match role {
            Role::Payer => self.payer,
            Role::Payee => self.payee,
        }
    }
    pub(super) fn set(&mut self, role: Role, sig: Signature) {
        match role {
            Role::Payer => self.payer = Some(sig),
            Role::Payee => self.payee = Some(sig),
        }
    }
    pub(super) fn both(&self) -> bool {
        self.payer.is_some() && self.payee.is_some()
    }
    pub(super) fn to_vec(&self) -> Vec<Signature> {
        self.payer
            .iter()
            .chain(self.payee.iter())
            .copied()
            .collect()
    }
}

/// Everything a channel persists. Opaque; JSON inside.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct State {
    #[serde(flatten)]
    pub(super) head: RecordHead<Role>,
    pub(super) deposit: U256,
    pub(super) price: Option<U256>,
    pub(super) phase: Phase,
    pub(super) prefund: Sigs,
    pub(super) postfund: Sigs,
    /// Payer: the latest voucher signed. Payee: the largest voucher received.
    pub(super) best: Option<Voucher>,
    /// Payer: total signed. Payee: total credited (can exceed `best` after a close paying more).
    pub(super) paid: U256,
    pub(super) chain: OnChain,
}

impl State {
    /// A freshly proposed channel: nothing signed, paid or seen on chain yet.
    pub(super) fn proposed(
        role: Role,
        fixed: FixedPart,
        asset: Address,
        deposit: U256,
        price: Option<U256>,
    ) -> Self {
        Self {
            head: RecordHead::new(SNAPSHOT_VERSION, role, fixed, asset),
            deposit,
            price,
            phase: Phase::Proposed,
            prefund: Sigs::default(),
            postfund: Sigs::default(),
            best: None,
            paid: U256::ZERO,
            chain: OnChain::default(),
        }
    }
}

/// A serializable copy of a channel's durable state, for [`ChannelStore::put_channel`](crate::store::ChannelStore::put_channel).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelSnapshot(pub(super) State);

const SNAPSHOT_VERSION: u8 = 1;

impl ChannelSnapshot {
    /// The channel.
    pub fn channel_id(&self) -> B256 {
        self.0.head.fixed.channel_id()
    }

    /// The record's bytes (JSON).
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(&self.0).expect("snapshot serialization is infallible")
    }

    /// Parses a record.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, UsageError> {
        crate::store::decode_snapshot(bytes, SNAPSHOT_VERSION, |s: &State| s.head.version)
            .map(Self)
            .map_err(UsageError::CorruptSnapshot)
    }
}

impl Channel {
    /// Rebuilds a channel from its snapshot and the best voucher in the store (which may be newer
    /// than the snapshot: vouchers are persisted alone). Nothing is queued; call
    /// [`Channel::resend`] to repeat what the peer may have missed.
    pub fn restore(
        signer: Arc<dyn Signer>,
        snapshot: ChannelSnapshot,
        stored_voucher: Option<Voucher>,
    ) -> Result<Self, Error> {
        let st = snapshot.0;
        let me = signer.address();
        if st.head.fixed.participants.len() != 2
            || st.head.fixed.participants[st.head.role.index()] != me
        {
            return Err(UsageError::InvalidParams("the signer is not our participant").into());
        }
        let mut ch = Self::new(signer, st);
        if let Some(sig) = ch.st.prefund.payer {
            let hash = ch.prefund_vp().hash(ch.id);
            ch.payer_key = recover_key_eth_message(&hash, &sig)
                .ok()
                .filter(|k| k.address() == ch.payer());
        }
        if let Some(v) = stored_voucher {
            let better = ch.st.best.is_none_or(|b| v.amount > b.amount);
            if v.channel_id == ch.id && better && v.amount <= ch.st.deposit {
                ch.check_voucher_sig(&v)?;
                ch.st.best = Some(v);
                if v.amount > ch.st.paid {
                    ch.st.paid = v.amount;
                }
                ch.changed();
            }
        }
        Ok(ch)
    }
}
