//! What travels between peers as extension messages: notices we send, channel messages we
//! receive and the per-identity outbox of channel messages to send.

use std::time::Instant;

use bytes::Bytes;
use payment_channel::Address;

use super::{Coordinator, CoordinatorEvent, MessageDropReason};
use crate::EXTENSION_NAME;
use crate::channel::ChannelCommand;
use crate::engine::{EngineCommand, PeerKey, parse_account};
use crate::error::{Error, PeerError};
use paid_wire::pse::{MAX_PSE_LEN, PseMessage};

impl Coordinator {
    /// Sends a notice if the peer advertised the extension; returns whether it was sent.
    pub(super) fn send_notice(&mut self, key: PeerKey, notice: PseMessage) -> bool {
        let Some(peer) = self.peers.get_mut(&key) else {
            return false;
        };
        let payload = notice.encode();
        let Some(id) = peer.pse_id.filter(|_| payload.len() <= MAX_PSE_LEN) else {
            // Never send an extension message to a peer that did not advertise it (libtorrent
            // and rqbit disconnect).
            peer.stats.notices_suppressed = peer.stats.notices_suppressed.saturating_add(1);
            return false;
        };
        peer.stats.notices_sent = peer.stats.notices_sent.saturating_add(1);
        if notice == PseMessage::Ack {
            peer.stats.acks_sent = peer.stats.acks_sent.saturating_add(1);
        }
        self.engine_out.push_back(EngineCommand::SendExtended {
            peer: key,
            extension: EXTENSION_NAME,
            peer_ext_id: id,
            payload: Bytes::from(payload),
        });
        true
    }

    pub(super) fn on_channel_message(
        &mut self,
        now: Instant,
        key: PeerKey,
        account: Address,
        json: String,
    ) -> Result<(), Error> {
        let Ok(value) = serde_json::from_str::<serde_json::Value>(&json) else {
            return Err(self.misbehaved(key, PeerError::MalformedChannelMessage));
        };
        let Some(recipient) = value.get("recipient").and_then(|r| r.as_str()) else {
            return Err(self.misbehaved(key, PeerError::MalformedChannelMessage));
        };
        let drop_reason = if parse_account(recipient.as_bytes()) != Some(self.config.account) {
            // web3torrent: "If data.recipient !== this.pseAccount, it is silently dropped (no ack)".
            Some(MessageDropReason::NotForUs)
        } else if let Some(sender) = value.get("sender").and_then(|s| s.as_str())
            && parse_account(sender.as_bytes()).is_some_and(|s| s != account)
        {
            Some(MessageDropReason::SenderMismatch)
        } else {
            None
        };
        if let Some(reason) = drop_reason {
            self.events.push_back(CoordinatorEvent::MessageDropped {
                account: Some(account),
                reason,
            });
            return Ok(());
        }
        if self.channel_out.len() >= self.config.identity.max_channel_commands {
            // The channel client is behind: refuse more work rather than queue it without
            // bound. Not acked, so an honest peer's resend brings it again.
            self.events.push_back(CoordinatorEvent::MessageDropped {
                account: Some(account),
                reason: MessageDropReason::QueueFull,
            });
            return Ok(());
        }
        self.send_notice(key, PseMessage::Ack);
        let deadline = self.answer_deadline(now);
        if let Some(ident) = self.identities.get_mut(&account) {
            ident.touch(deadline);
        }
        self.channel_out.push_back(ChannelCommand::PushMessage {
            from: account,
            json,
        });
        Ok(())
    }

    pub(super) fn route_outbound(&mut self, to: Address, json: String) {
        let max_outbox = self.config.max_outbox;
        let Some(ident) = self.identities.get(&to) else {
            self.events.push_back(CoordinatorEvent::MessageDropped {
                account: Some(to),
                reason: MessageDropReason::UnknownRecipient,
            });
            return;
        };
        let target = ident
            .live
            .iter()
            .filter_map(|k| self.peers.get(k).map(|p| (*k, p)))
            .filter(|(_, p)| p.pse_id.is_some())
            .max_by_key(|(_, p)| p.seq)
            .map(|(k, p)| (k, p.advertised_account.clone()));
        // The recipient as this connection advertised it: web3torrent drops a message whose
        // `recipient` is not its `pseAccount` string, byte for byte.
        let addressed = match &target {
            Some((_, Some(advertised))) => readdress(&json, to, advertised),
            _ => None,
        };
        let message = addressed.unwrap_or(json);
        if (PseMessage::Message {
            message: message.clone(),
        })
        .encode()
        .len()
            > MAX_PSE_LEN
        {
            self.events.push_back(CoordinatorEvent::MessageDropped {
                account: Some(to),
                reason: MessageDropReason::TooLarge,
            });
            return;
        }
        match target {
            Some((key, _)) => {
                self.send_notice(key, PseMessage::Message { message });
            }
            None => {
                let Some(ident) = self.identities.get_mut(&to) else {
                    return;
                };
                if ident.outbox.len() >= max_outbox {
                    ident.outbox.pop_front();
                    self.events.push_back(CoordinatorEvent::MessageDropped {
                        account: Some(to),
                        reason: MessageDropReason::OutboxFull,
                    });
                }
                if max_outbox > 0
                    && let Some(ident) = self.identities.get_mut(&to)
                {
                    ident.outbox.push_back(message);
                }
            }
        }
    }

    pub(super) fn flush_outbox(&mut self, account: Address) {
        let Some(ident) = self.identities.get_mut(&account) else {
            return;
        };
        let outbox = std::mem::take(&mut ident.outbox);
        for json in outbox {
            self.route_outbound(account, json);
        }
    }

    pub(super) fn answer_deadline(&self, now: Instant) -> Instant {
        now.checked_add(self.config.liveness.response_timeout)
            .unwrap_or(now)
    }
}

/// `json` (a channel-message envelope) with its top-level `recipient` replaced by `advertised`,
/// the text by which the peer advertised the address `to`; `None` when nothing needs replacing
/// (the same text already, not an envelope, or a recipient other than `to`).
fn readdress(json: &str, to: Address, advertised: &str) -> Option<String> {
    let mut envelope: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(json).ok()?;
    let current = envelope.get("recipient")?.as_str()?;
    if current == advertised || parse_account(current.as_bytes()) != Some(to) {
        return None;
    }
    envelope.insert(
        "recipient".to_owned(),
        serde_json::Value::String(advertised.to_owned()),
    );
    serde_json::to_string(&envelope).ok()
}
