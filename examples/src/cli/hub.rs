//! `paid-torrent hub`: a long-running hub that payers and payees reach over TCP. Payers open a
//! ledger with it (they deposit); a payee asks for one and the hub opens and funds it from its
//! own account (`--ledger-deposit`, at most `--max-ledgers` at once). Virtual channels
//! `[payer, hub, payee]` are accepted within `--max-channel-amount` and `--max-locked-per-ledger`
//! and for at least `--fee`. Everything is stored in `--store` before it is acted on: after a
//! crash, the same command resumes (messages resent, owed transactions sent).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use paid_torrent_examples::units::{parse_duration, parse_price};
use payment_channel::Address;

use crate::Result;
use crate::failure::Failure;
use crate::options::ChainArgs;
use crate::output::Out;

/// The options of `hub`.
#[derive(Debug, Args)]
pub(crate) struct HubArgs {
    /// Where payers and payees connect.
    #[arg(long, value_name = "IP:PORT", default_value = "127.0.0.1:7070")]
    pub(crate) listen: SocketAddr,
    /// The hub's durable state (a redb file; the signing key is kept next to it as FILE.key
    /// unless --identity-file is given).
    #[arg(long, value_name = "FILE")]
    pub(crate) store: PathBuf,
    /// The hub's signing key (channels), in a file readable by its owner only.
    #[arg(long, value_name = "PATH")]
    pub(crate) identity_file: Option<PathBuf>,
    /// Largest amount of one virtual channel.
    #[arg(long, value_name = "AMOUNT", default_value = "0.01ether", value_parser = parse_price)]
    pub(crate) max_channel_amount: u128,
    /// Most the hub locks in one payee's ledger.
    #[arg(long, value_name = "AMOUNT", default_value = "0.1ether", value_parser = parse_price)]
    pub(crate) max_locked_per_ledger: u128,
    /// Smallest fee per virtual channel (paid by the payer, shown in what it signs).
    #[arg(long, value_name = "AMOUNT", default_value = "0wei", value_parser = parse_price)]
    pub(crate) fee: u128,
    /// What the hub deposits into each payee's ledger (default: --max-locked-per-ledger).
    #[arg(long, value_name = "AMOUNT", value_parser = parse_price)]
    pub(crate) ledger_deposit: Option<u128>,
    /// Most payee ledgers open at once.
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub(crate) max_ledgers: usize,
    /// Challenge duration of the ledgers the hub opens.
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = parse_duration)]
    pub(crate) challenge_duration: Duration,
    /// The published ConsensusApp (ledgers' app); on a development chain, the default
    /// deployment's address.
    #[arg(long, value_name = "ADDRESS")]
    pub(crate) consensus_app: Option<Address>,
    /// Blocks an event needs on top of it before it is applied (default: the chain's).
    #[arg(long, value_name = "N")]
    pub(crate) confirmations: Option<u64>,
    /// How long a ledger's Remove may wait for a silent payer or payee (V's final state signed
    /// by all) before the hub takes that ledger on chain to recover its share.
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = parse_duration)]
    pub(crate) stalled_remove_patience: Duration,
    /// How often the chain is watched.
    #[arg(long, value_name = "DURATION", default_value = "500ms", value_parser = parse_duration)]
    pub(crate) watch_every: Duration,
    /// How often the hub resends what its state implies (peers that missed it while it was
    /// down get it again).
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = parse_duration)]
    pub(crate) resend_every: Duration,
    #[command(flatten)]
    pub(crate) chain: ChainArgs,
}

/// Runs the hub until ctrl-c or SIGTERM.
#[cfg(feature = "ethereum")]
pub(crate) async fn run(args: HubArgs, out: Out) -> Result<()> {
    use payment_channel::chain::sim::DEFAULT_CONSENSUS_APP;
    use payment_channel::chain::{CONSENSUS_APP_RUNTIME_HASH, Chain, EthereumChain};
    use payment_channel::party_node::tcp::{RunningNode, TcpNodeConfig, start_node};
    use payment_channel::party_node::{LedgerService, NodeConfig, NodeError};
    use payment_channel::sign::{LocalSigner, Signer};
    use payment_channel::virtual_channel::{HubLimits, PartyConfig};
    use payment_channel::{RedbStore, U256};
    use serde_json::json;
    use std::sync::Arc;

    use crate::wallet::{self, IDENTITY_ENV, Secret};

    if args.chain.rpc.is_none() {
        return Err(Failure::usage(
            "a hub needs --rpc: its payers and payees are other processes, which a simulated \
             chain cannot reach",
        ));
    }
    let (choice, dev) = wallet::chain_choice(&args.chain, &out).await?;
    let paid_torrent_examples::paid::ChainChoice::Ethereum(eth) = choice else {
        return Err(Failure::usage("a hub needs --rpc"));
    };
    let chain = EthereumChain::connect(&eth.rpc, &eth.key, eth.adjudicator).await?;
    let consensus_app = match args.consensus_app {
        Some(a) => a,
        None if dev => DEFAULT_CONSENSUS_APP,
        None => {
            return Err(Failure::usage(
                "off a development chain give the ConsensusApp's address with --consensus-app",
            ));
        }
    };
    let code = chain.code_hash(consensus_app).await?;
    if code != CONSENSUS_APP_RUNTIME_HASH {
        return Err(Failure::chain(format!(
            "the code at {consensus_app} (hash {code}) is not ConsensusApp: wrong --consensus-app?"
        )));
    }
    // The signing key: --identity-file, $PAID_TORRENT_IDENTITY, else FILE.key (made once).
    let identity = Secret::find(
        ("--identity", None),
        args.identity_file.as_deref(),
        IDENTITY_ENV,
        |name| std::env::var(name).ok(),
    )?;
    let identity = match identity {
        Some(s) => s.key,
        None => {
            let key_file = PathBuf::from(format!("{}.key", args.store.display()));
            if key_file.exists() {
                wallet::parse_key(&wallet::read_key_file(&key_file)?)?
            } else {
                let fresh = LocalSigner::random().secret_bytes();
                wallet::write_key_file(&key_file, &alloy_primitives::hex::encode(fresh))?;
                fresh
            }
        }
    };
    let signer: Arc<dyn Signer> = Arc::new(LocalSigner::from_bytes(&identity)?);
    let store = RedbStore::open(&args.store)
        .map_err(|e| Failure::other(format!("store {}: {e}", args.store.display())))?;
    let max_locked = U256::from(args.max_locked_per_ledger);
    let limits = HubLimits {
        max_amount: U256::from(args.max_channel_amount),
        max_locked_per_ledger: max_locked,
        min_fee: U256::from(args.fee),
    };
    let deposit = args.ledger_deposit.map_or(max_locked, U256::from);
    let party_config = PartyConfig::new(consensus_app, eth.app).with_hub(Some(limits));
    let node_config = NodeConfig::default()
        .with_confirmations(args.confirmations)
        .with_max_retry_interval(30)
        .with_ledger_service(Some(LedgerService {
            asset: Address::ZERO,
            deposit,
            challenge_duration: args.challenge_duration.as_secs().max(1),
            max_ledgers: args.max_ledgers,
        }))
        .with_stalled_remove_patience(Some(args.stalled_remove_patience.as_secs().max(1)));
    let chain: Arc<dyn Chain> = Arc::new(chain);
    let tcp = TcpNodeConfig::new(args.listen, args.watch_every, args.resend_every);
    let RunningNode {
        node,
        net,
        mut events,
        driver,
    } = start_node(
        tcp,
        signer.clone(),
        party_config,
        chain,
        Arc::new(store),
        node_config,
    )
    .await
    .map_err(|e| match e {
        NodeError::Net(e) => Failure::network(format!("listen on {}: {e}", args.listen)),
        NodeError::Chain(c) => Failure::chain(c),
        other => Failure::other(other),
    })?;
    let (ledgers, channels) = node
        .inspect(|p| (p.ledgers().count(), p.channels().count()))
        .await;
    let address = signer.address();
    let local = net.local_addr();
    out.event(
        json!({"event": "hub", "address": address.to_string(), "listen": local.to_string(),
               "ledgers": ledgers, "channels": channels}),
        || {
            format!(
                "hub {address} listening on {local} ({ledgers} ledgers, {channels} channels stored)"
            )
        },
    );
    tokio::spawn(async move {
        while let Some(e) = events.recv().await {
            tracing::info!(event = ?e, "hub");
        }
    });
    crate::seed::shutdown_signal().await;
    driver.abort();
    net.shutdown();
    out.event(json!({"event": "stopped"}), || "hub stopped".into());
    Ok(())
}

#[cfg(not(feature = "ethereum"))]
pub(crate) async fn run(_args: HubArgs, _out: Out) -> Result<()> {
    Err(Failure::usage(
        "this build has no Ethereum support, which a hub needs: build with `--features ethereum`",
    ))
}
