//! [`MemoryNet`]: an in-memory network between [`Client`](crate::client::Client)s.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use alloy_primitives::Address;
use async_trait::async_trait;
use tokio::sync::mpsc;

use crate::client::{Transport, TransportError};
use crate::message::Envelope;

/// Routes envelopes to per-address queues, as JSON text (as the extension would carry them). An
/// envelope to an address that never joined is lost (the peer is offline); one to an address
/// whose inbox was dropped fails to send.
#[derive(Debug, Default)]
pub struct MemoryNet {
    queues: Mutex<HashMap<Address, mpsc::UnboundedSender<Envelope>>>,
}

impl MemoryNet {
    /// Connects `address`: the envelopes sent to it arrive in the returned inbox.
    pub fn join(&self, address: Address) -> mpsc::UnboundedReceiver<Envelope> {
        let (tx, inbox) = mpsc::unbounded_channel();
        self.queues
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(address, tx);
        inbox
    }

    /// A client transport that sends over this network.
    pub fn transport(self: &Arc<Self>) -> Arc<dyn Transport> {
        Arc::new(NetTransport(self.clone()))
    }
}

#[derive(Debug)]
struct NetTransport(Arc<MemoryNet>);

#[async_trait]
impl Transport for NetTransport {
    async fn send(&self, to: Address, envelope: Envelope) -> Result<(), TransportError> {
        let q = self
            .0
            .queues
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&to)
            .cloned();
        match q {
            Some(q) => q
                .send(Envelope::from_json(&envelope.to_json())?)
                .map_err(|e| e.to_string().into()),
            None => Ok(()),
        }
    }
}
