//! Two [`Client`]s pay each other over a byte pipe, on the simulated chain: Bob proposes a
//! channel, Alice joins and deposits, pays ten vouchers of 100 wei, closes, and Bob is paid out.
//!
//! The transport is the smallest real one: each envelope is a line of JSON (the compact envelope a
//! torrent client carries inside the paid-streaming extension) written into one end of a
//! `tokio::io::duplex` pipe; a task at the other end reads the lines and hands them to its
//! client with `push_json`.
//!
//! Run with `cargo run -p payment-channel --example duplex_payment`.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use payment_channel::channel::Event;
use payment_channel::client::{Client, ClientConfig, ClientEvent, Transport, TransportError};
use payment_channel::message::Envelope;
use payment_channel::policy::JoinPolicy;
use payment_channel::sign::{LocalSigner, Signer};
use payment_channel::{Address, MemoryStore, SimulatedChain, U256};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, DuplexStream, WriteHalf};
use tokio::sync::{Mutex, mpsc};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Writes each envelope as one line of JSON into our end of the pipe (there is one peer).
struct PipeTransport(Mutex<WriteHalf<DuplexStream>>);

#[async_trait]
impl Transport for PipeTransport {
    async fn send(
        &self,
        _to: Address,
        envelope: Envelope,
    ) -> std::result::Result<(), TransportError> {
        let mut line = envelope.to_json();
        line.push('\n');
        self.0.lock().await.write_all(line.as_bytes()).await?;
        Ok(())
    }
}

/// Opens a client on `chain` whose messages go into `pipe`, and spawns the task that feeds it
/// what arrives on `pipe`.
async fn open(
    chain: &SimulatedChain,
    signer: Arc<LocalSigner>,
    config: ClientConfig,
    pipe: DuplexStream,
) -> Result<(Client, mpsc::UnboundedReceiver<ClientEvent>)> {
    let (read, write) = tokio::io::split(pipe);
    let transport: Arc<dyn Transport> = Arc::new(PipeTransport(Mutex::new(write)));
    let (client, events) = Client::open(
        config,
        signer.clone(),
        Arc::new(chain.handle(signer.address())),
        Arc::new(MemoryStore::new()),
        Some(transport),
    )
    .await?;
    let inbox = client.clone();
    tokio::spawn(async move {
        let mut lines = BufReader::new(read).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if let Err(e) = inbox.push_json(&line).await {
                eprintln!("message refused: {e}");
            }
        }
    });
    Ok((client, events))
}

/// Waits (at most 10 s) for an event that `pick` recognizes.
async fn wait_for<T>(
    events: &mut mpsc::UnboundedReceiver<ClientEvent>,
    pick: impl Fn(&Event) -> Option<T>,
) -> Result<T> {
    tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(e) = events.recv().await {
            if let Some(t) = pick(&e.event) {
                return Ok(t);
            }
        }
        Err("the client stopped".into())
    })
    .await?
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let chain = SimulatedChain::new();
    let (alice, bob) = (
        Arc::new(LocalSigner::random()),
        Arc::new(LocalSigner::random()),
    );
    chain.fund(alice.address(), U256::from(1_000_000))?;
    let (alice_end, bob_end) = tokio::io::duplex(64 * 1024);

    // Alice pays: she joins proposals that use the real app, up to 10_000 wei per channel.
    let mut alice_config = ClientConfig::new(chain.app_definition());
    alice_config.auto_join = Some(JoinPolicy::new(
        chain.app_definition(),
        U256::from(10_000),
        U256::from(50_000),
    ));
    let (alice_client, mut alice_events) =
        open(&chain, alice.clone(), alice_config, alice_end).await?;
    let bob_config = ClientConfig::new(chain.app_definition());
    let (bob_client, mut bob_events) = open(&chain, bob.clone(), bob_config, bob_end).await?;

    let id = bob_client
        .create(alice.address(), U256::from(10_000), None)
        .await?;
    wait_for(&mut alice_events, |e| {
        matches!(e, Event::Funded).then_some(())
    })
    .await?;
    println!("channel {id} funded with 10000 wei by {}", alice.address());

    for _ in 0..10 {
        alice_client.send_payment(id, U256::from(100)).await?;
    }
    let total = wait_for(&mut bob_events, |e| match e {
        Event::PaymentReceived { total, .. } if *total == U256::from(1000) => Some(*total),
        _ => None,
    })
    .await?;
    println!("bob received vouchers for {total} wei");

    alice_client.close(id).await?;
    let closed = wait_for(&mut bob_events, |e| match e {
        Event::Closed { amount } => Some(*amount),
        _ => None,
    })
    .await?;
    // Bob's watcher concludes and transfers the payout (it may already have).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while chain.balance_of(bob.address()) != U256::from(1000) {
        if tokio::time::Instant::now() > deadline {
            return Err("no payout".into());
        }
        bob_client.watch_chain().await?;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!(
        "closed at {closed} wei; on chain bob holds {} wei, alice {} wei",
        chain.balance_of(bob.address()),
        chain.balance_of(alice.address())
    );
    Ok(())
}
