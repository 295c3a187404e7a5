//! Test support, behind the **private** `test-utils` feature: the node setup shared by this
//! crate's tests and the workspace's benches. Not part of the API, no semver promise.

use std::sync::Arc;

use payment_channel::SimulatedChain;
use payment_channel::chain::Chain;
use payment_channel::client::{Client, ClientConfig};
use payment_channel::policy::JoinPolicy;
use payment_channel::sign::LocalSigner;
use payment_channel::{MemoryStore, U256};

use crate::adapter::ClientBackend;

/// A payment-channel client for `signer` on `chain` (channels with `challenge_duration`, a fresh
/// `MemoryStore`) that sends its transactions through `handle`, and the node backend that
/// carries its messages (no transport of its own), vetting proposals with `policy`.
///
/// # Panics
/// If the client does not open (a memory store and a simulated chain do not fail).
pub async fn client_backend(
    chain: &SimulatedChain,
    handle: Arc<dyn Chain>,
    signer: Arc<LocalSigner>,
    challenge_duration: u64,
    policy: Option<JoinPolicy>,
) -> (Client, ClientBackend) {
    let mut client_config = ClientConfig::new(chain.app_definition());
    client_config.challenge_duration = challenge_duration;
    let (client, client_events) = Client::open(
        client_config,
        signer,
        handle,
        Arc::new(MemoryStore::new()),
        None,
    )
    .await
    .expect("a client on a simulated chain and a memory store opens");
    let backend = ClientBackend::new(client.clone(), client_events, policy);
    (client, backend)
}

/// A join policy that accepts any proposal on `chain`'s payment app, whatever its deposit.
pub fn accept_any(chain: &SimulatedChain) -> JoinPolicy {
    JoinPolicy::new(chain.app_definition(), U256::MAX, U256::MAX)
}

/// `len` pseudo-random bytes (xorshift from a fixed seed), so that piece hashes differ.
pub fn pseudo_random_content(len: u64) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
