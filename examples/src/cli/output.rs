//! What the client prints: human lines on stderr or JSON lines on stdout (`--json`), the
//! progress bar, and the figures learnt from the coordinators' events.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use alloy_primitives::hex;
use indicatif::{ProgressBar, ProgressStyle};
use paid_torrent_examples::paid::Units;
use paid_torrent_examples::session::PeerReport;
use paid_torrent_examples::torrent::Torrent;
use payment_channel::Address;
use serde_json::json;
use tokio::sync::mpsc;
use torrent_glue::{CoordinatorEvent, PeerError};

/// Where messages go: human lines on stderr, or JSON lines on stdout with `--json`; amounts in
/// human lines are written in `units`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Out {
    pub(crate) json: bool,
    /// `-q`: no human lines and no progress bar (errors only; JSON lines are unchanged).
    pub(crate) quiet: bool,
    pub(crate) units: Units,
}

impl Out {
    pub(crate) fn event(&self, value: serde_json::Value, human: impl FnOnce() -> String) {
        if self.json {
            println!("{value}");
        } else if !self.quiet {
            let line = human();
            if !line.is_empty() {
                eprintln!("{line}");
            }
        }
    }

    /// An event of one channel with `peer`: `{"event", "peer", "channel"}` in JSON, or the line
    /// `human` makes of the channel id in hex.
    fn channel_event(
        &self,
        event: &str,
        peer: &Address,
        channel_id: impl AsRef<[u8]>,
        human: impl FnOnce(&str) -> String,
    ) {
        let channel = hex::encode(channel_id);
        self.event(
            json!({"event": event, "peer": peer.to_string(), "channel": channel}),
            || human(&channel),
        );
    }
}

pub(crate) fn print_reports(mut rx: mpsc::UnboundedReceiver<PeerReport>) {
    tokio::spawn(async move {
        while let Some(r) = rx.recv().await {
            let dir = if r.outbound { "to" } else { "from" };
            let addr = r.addr.map(|a| a.to_string()).unwrap_or_default();
            match r.result {
                Ok(s) => eprintln!(
                    "peer {dir} {addr} ({}) done: up {} B, down {} B",
                    s.client.as_deref().unwrap_or("?"),
                    s.uploaded,
                    s.downloaded
                ),
                Err(e) => eprintln!("peer {dir} {addr}: {e}"),
            }
        }
    });
}

pub(crate) fn coordinator_event(out: &Out, e: &CoordinatorEvent) {
    match e {
        CoordinatorEvent::PaymentReceived {
            account,
            channel_id,
            total,
            delta,
        } => out.event(
            json!({"event": "payment_received", "from": account.to_string(),
                   "channel": hex::encode(channel_id), "delta": delta, "total": total}),
            || format!("payment from {account}: +{} (total {})", out.units.format(*delta), out.units.format(*total)),
        ),
        CoordinatorEvent::ChannelOpened {
            account, channel_id, ..
        } => out.channel_event("channel_opened", account, channel_id, |c| {
            format!("channel 0x{c} with {account} open")
        }),
        CoordinatorEvent::ChannelClosed {
            account,
            channel_id,
            payee_amount,
            ..
        } => out.event(
            json!({"event": "channel_closed", "peer": account.to_string(),
                   "channel": hex::encode(channel_id), "payee_amount": payee_amount}),
            || format!("channel 0x{} with {account} closed: payee gets {}", hex::encode(channel_id), out.units.format(*payee_amount)),
        ),
        CoordinatorEvent::ChannelRestored {
            account,
            channel_id,
            role,
            paid,
            state,
        } => out.event(
            json!({"event": "channel_restored", "peer": account.to_string(), "channel": hex::encode(channel_id),
                   "role": format!("{role:?}"), "paid": paid, "state": format!("{state:?}")}),
            || format!("channel 0x{} with {account} restored from the store ({state:?}, {} paid)", hex::encode(channel_id), out.units.format(*paid)),
        ),
        CoordinatorEvent::ProposalDeclined {
            channel_id,
            payee,
            reason,
        } => out.event(
            json!({"event": "proposal_declined", "peer": payee.to_string(),
                   "channel": hex::encode(channel_id), "reason": format!("{reason:?}")}),
            || format!("declined channel 0x{} from {payee}: {reason:?}", hex::encode(channel_id)),
        ),
        CoordinatorEvent::Closing {
            account, channel_id, ..
        } => out.channel_event("closing", account, channel_id, |c| {
            format!("closing channel 0x{c} with {account}")
        }),
        CoordinatorEvent::Challenging {
            account, channel_id, ..
        } => out.channel_event("challenging", account, channel_id, |c| {
            format!("{account} stopped answering: challenging channel 0x{c}")
        }),
        // The seller asked for money it may not have (the buyer's window, the channel's terms).
        CoordinatorEvent::PeerMisbehaved { peer, error }
            if matches!(
                error,
                PeerError::AskedBeyondWindow { .. }
                    | PeerError::TermsChanged { .. }
                    | PeerError::PriceAboveCap { .. }
            ) =>
        {
            out.event(
                json!({"event": "peer_misbehaved", "connection": peer.0,
                       "action": format!("{:?}", error.reaction()), "error": error.to_string()}),
                || format!("seller on connection {}: {error} ({:?})", peer.0, error.reaction()),
            );
        }
        _ => {}
    }
}

/// Prints a seller's coordinator event and remembers the payers it has channels with.
pub(crate) fn seller_event(out: &Out, buyers: &mut Vec<Address>, e: &CoordinatorEvent) {
    if let CoordinatorEvent::ChannelOpened { account, .. }
    | CoordinatorEvent::ChannelRestored { account, .. } = e
        && !buyers.contains(account)
    {
        buyers.push(*account);
    }
    coordinator_event(out, e);
}

pub(crate) fn progress_bar(total: u64) -> ProgressBar {
    let pb = ProgressBar::new(total);
    pb.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    pb
}

/// What the demo learns from the coordinators' events.
#[derive(Debug, Default)]
pub(crate) struct DemoStats {
    pub(crate) payments: u64,
    pub(crate) paid: u128,
    pub(crate) buyer_closed: Option<u128>,
    pub(crate) seller_closed: Option<u128>,
}

impl DemoStats {
    pub(crate) fn buyer(&mut self, e: &CoordinatorEvent, paid: &AtomicU64) {
        match e {
            CoordinatorEvent::PaymentSent { amount, .. } => {
                self.payments += 1;
                self.paid += amount;
                paid.store(
                    u64::try_from(self.paid).unwrap_or(u64::MAX),
                    Ordering::Relaxed,
                );
            }
            CoordinatorEvent::ChannelClosed {
                payee_amount,
                role: torrent_glue::Role::Payer,
                ..
            } => self.buyer_closed = Some(*payee_amount),
            _ => {}
        }
    }

    pub(crate) fn seller(&mut self, e: &CoordinatorEvent) {
        if let CoordinatorEvent::ChannelClosed { payee_amount, .. } = e {
            self.seller_closed = Some(*payee_amount);
        }
    }
}

pub(crate) fn spawn_progress(
    torrent: &Arc<Torrent>,
    pb: &ProgressBar,
    paid: Option<Arc<AtomicU64>>,
) -> tokio::task::JoinHandle<()> {
    let (t, pb) = (torrent.clone(), pb.clone());
    let total = t.meta().info.total_length();
    tokio::spawn(async move {
        loop {
            pb.set_position(total - t.bytes_left());
            if let Some(p) = &paid {
                pb.set_message(format!("paid {} wei", p.load(Ordering::Relaxed)));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}

pub(crate) fn finish_bar(pb: &ProgressBar, t: &Torrent) {
    pb.set_position(t.meta().info.total_length() - t.bytes_left());
    pb.finish();
}

pub(crate) fn summary_common(t: &Torrent, size: u64, secs: f64) {
    println!(
        "bytes:      {} received, {} in the file",
        t.counters().downloaded.load(Ordering::Relaxed),
        size
    );
    println!(
        "time:       {secs:.2} s, {:.1} MiB/s",
        size as f64 / f64::from(1 << 20) / secs
    );
}
