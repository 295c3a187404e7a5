//! Keys, the chain connection and the asset: everything a paid `seed` or `get` needs before
//! its node starts.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use alloy_primitives::hex;
use paid_torrent_examples::paid::{ChainChoice, Wallet};
use payment_channel::{Address, B256, SimulatedChain};
use serde_json::json;

use crate::Result;
use crate::failure::{Failure, Kind};
use crate::options::{AssetArg, ChainArgs, ChannelArgs, WalletArgs};
use crate::output::Out;

/// The chain of `chain`, the asset of `--asset` on it and the wallet of `wallet`; `out` with the
/// asset's units.
pub(crate) async fn open(
    chain: &ChainArgs,
    wallet: &WalletArgs,
    out: Out,
) -> Result<(Wallet, Out)> {
    let (choice, dev) = chain_choice(chain, &out)
        .await
        .map_err(|f| f.or(Kind::Chain))?;
    let asset = resolve_asset(&choice, chain, &out)
        .await
        .map_err(|f| f.or(Kind::Chain))?;
    let wallet = open_wallet(&choice, dev, wallet, asset).await?;
    let out = Out {
        units: wallet.units,
        ..out
    };
    Ok((wallet, out))
}

/// The environment variable that holds the transaction key (instead of `--key-file`).
pub(crate) const KEY_ENV: &str = "PAID_TORRENT_KEY";
/// The environment variable that holds the identity key (instead of `--identity-file`).
pub(crate) const IDENTITY_ENV: &str = "PAID_TORRENT_IDENTITY";

/// Chain ids of local development chains (anvil and hardhat: 31337; ganache and geth `--dev`:
/// 1337), whose accounts hold nothing of value: keys may be given on the command line and the
/// contracts' default addresses are used (deployed if nothing is there).
pub(crate) const DEV_CHAIN_IDS: [u64; 2] = [31337, 1337];

pub(crate) fn parse_key(hex_key: &str) -> Result<B256> {
    let bytes = hex::decode(hex_key.trim().trim_start_matches("0x"))
        .map_err(|_| Failure::usage("a key is 32 bytes of hex"))?;
    if bytes.len() != 32 {
        return Err(Failure::usage("a key is 32 bytes of hex"));
    }
    Ok(B256::from_slice(&bytes))
}

/// Where a secret key came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum KeySource {
    /// The command line (`--key`, `--identity`): visible to every user in the process list and
    /// kept in shell history.
    CommandLine(&'static str),
    /// A file readable by its owner only.
    File(PathBuf),
    /// An environment variable.
    Env(&'static str),
}

/// A secret key and where it came from.
#[derive(Clone)]
pub(crate) struct Secret {
    pub(crate) key: B256,
    pub(crate) source: KeySource,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secret")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl Secret {
    /// The key given on the command line as `flag`, else in the file `file`, else in the
    /// environment variable `env_name` (read with `env`); `None` if none is.
    pub(crate) fn find(
        (flag, value): (&'static str, Option<&str>),
        file: Option<&Path>,
        env_name: &'static str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>> {
        let (text, source) = match (value, file) {
            (Some(v), _) => (v.to_owned(), KeySource::CommandLine(flag)),
            (None, Some(path)) => (read_key_file(path)?, KeySource::File(path.to_owned())),
            (None, None) => match env(env_name).filter(|v| !v.trim().is_empty()) {
                Some(v) => (v, KeySource::Env(env_name)),
                None => return Ok(None),
            },
        };
        let key = parse_key(&text)
            .map_err(|e| Failure::usage(format!("{}: {}", source.describe(), e.error)))?;
        Ok(Some(Self { key, source }))
    }

    /// Whether the key may be used on a chain that is (`dev`) or is not a development chain:
    /// a key on the command line is refused off one, and warned about on one (the warning is
    /// returned).
    pub(crate) fn check(&self, dev: bool) -> Result<Option<String>> {
        let KeySource::CommandLine(flag) = self.source else {
            return Ok(None);
        };
        let instead = match flag {
            "--identity" => format!("--identity-file PATH or ${IDENTITY_ENV}"),
            _ => format!("--key-file PATH or ${KEY_ENV}"),
        };
        if dev {
            Ok(Some(format!(
                "warning: {flag} puts a secret key in the process list and the shell history; \
                 accepted on a development chain only, use {instead}"
            )))
        } else {
            Err(Failure::usage(format!(
                "{flag}: a secret key on the command line is refused off a development chain \
                 (chain id not {} or {}); use {instead}",
                DEV_CHAIN_IDS[0], DEV_CHAIN_IDS[1]
            )))
        }
    }
}

impl KeySource {
    fn describe(&self) -> String {
        match self {
            Self::CommandLine(flag) => (*flag).to_owned(),
            Self::File(path) => path.display().to_string(),
            Self::Env(name) => format!("${name}"),
        }
    }
}

/// The chain of `--rpc` (the simulated one without it), and whether it is a development chain
/// (the simulated chain is one).
pub(crate) async fn chain_choice(args: &ChainArgs, out: &Out) -> Result<(ChainChoice, bool)> {
    let Some(rpc) = &args.rpc else {
        out.event(
            json!({"event": "chain", "kind": "simulated", "same_process_only": true}),
            || {
                "no --rpc: payments settle on a chain simulated inside this process, so only a \
                 peer in this same process can pay or be paid; a paid peer in another process \
                 (another paid-torrent) never can. Give both sides the same --rpc URL."
                    .into()
            },
        );
        return Ok((ChainChoice::Simulated(SimulatedChain::new()), true));
    };
    ethereum_choice(rpc, args, out).await
}

/// Connects to `rpc` with the transaction key, and picks the contracts: off a development chain
/// `--adjudicator` and `--app` are required; on one they default to a fresh anvil's first
/// deployments (deployed from `--artifacts` if there is no code). Either way the code at both
/// addresses must be the pinned `NitroAdjudicator`'s and `PaymentApp`'s.
#[cfg(feature = "ethereum")]
async fn ethereum_choice(rpc: &str, args: &ChainArgs, out: &Out) -> Result<(ChainChoice, bool)> {
    use payment_channel::app::PAYMENT_APP_RUNTIME_HASH;
    use payment_channel::chain::ethereum::{NitroArtifacts, deploy};
    use payment_channel::chain::sim::{DEFAULT_ADJUDICATOR_ADDRESS, DEFAULT_APP_DEFINITION};
    use payment_channel::chain::{Chain, EthereumChain, NITRO_ADJUDICATOR_RUNTIME_HASH};
    let shown = paid_torrent_examples::redact::rpc_url(rpc);
    let key = Secret::find(
        ("--key", args.key.as_deref()),
        args.key_file.as_deref(),
        KEY_ENV,
        |name| std::env::var(name).ok(),
    )?
    .ok_or_else(|| {
        Failure::usage(format!("--rpc needs the transaction account's key: --key-file PATH or ${KEY_ENV} (or --key HEX on a development chain)"))
    })?;
    let mut adjudicator = args.adjudicator.unwrap_or(DEFAULT_ADJUDICATOR_ADDRESS);
    let mut app = args.app.unwrap_or(DEFAULT_APP_DEFINITION);
    let probe = EthereumChain::connect_unchecked(rpc, &key.key, adjudicator).await?;
    let chain_id = probe.chain_id();
    let dev = DEV_CHAIN_IDS.contains(&chain_id);
    if let Some(warning) = key.check(dev)? {
        eprintln!("{warning}");
    }
    if !dev && (args.adjudicator.is_none() || args.app.is_none()) {
        return Err(Failure::usage(format!(
            "chain {chain_id} is not a development chain ({} or {}): give the contracts' \
             addresses with --adjudicator and --app (no defaults, nothing deployed)",
            DEV_CHAIN_IDS[0], DEV_CHAIN_IDS[1]
        )));
    }
    let mut adjudicator_code = probe.code_hash(adjudicator).await?;
    if adjudicator_code == alloy_primitives::KECCAK256_EMPTY && dev {
        let artifacts = NitroArtifacts::from_dir(&artifacts_dir(args))?;
        let d = deploy(rpc, &key.key, &artifacts).await?;
        adjudicator = d.nitro_adjudicator;
        app = d.payment_app;
        adjudicator_code = probe.code_hash(adjudicator).await?;
    }
    if adjudicator_code != NITRO_ADJUDICATOR_RUNTIME_HASH {
        return Err(format!(
            "the code at {adjudicator} (hash {adjudicator_code}) is not the NitroAdjudicator \
             (hash {NITRO_ADJUDICATOR_RUNTIME_HASH}): wrong --adjudicator?"
        )
        .into());
    }
    let app_code = probe.code_hash(app).await?;
    if app_code != PAYMENT_APP_RUNTIME_HASH {
        return Err(format!(
            "the code at {app} (hash {app_code}) is not PaymentApp (hash \
             {PAYMENT_APP_RUNTIME_HASH}): wrong --app?"
        )
        .into());
    }
    out.event(
        json!({"event": "chain", "kind": "ethereum", "rpc": shown, "chain_id": chain_id,
               "adjudicator": adjudicator.to_string(), "app": app.to_string()}),
        || {
            format!(
                "chain: {shown} (id {chain_id}), NitroAdjudicator {adjudicator}, PaymentApp {app}"
            )
        },
    );
    Ok((
        ChainChoice::Ethereum(paid_torrent_examples::paid::EthereumChoice {
            rpc: rpc.to_owned(),
            key: key.key,
            adjudicator,
            app,
        }),
        dev,
    ))
}

#[cfg(not(feature = "ethereum"))]
async fn ethereum_choice(_rpc: &str, _args: &ChainArgs, _out: &Out) -> Result<(ChainChoice, bool)> {
    Err(Failure::usage(
        "this build has no Ethereum support: build with `--features ethereum`",
    ))
}

/// The asset of `--asset` on `chain`; `test` deploys a test token (the nitro-protocol package's
/// `Token.sol` on an Ethereum node, minted to the `--key` account; a simulated token otherwise).
pub(crate) async fn resolve_asset(
    chain: &ChainChoice,
    args: &ChainArgs,
    out: &Out,
) -> Result<Address> {
    let asset = match (args.asset.unwrap_or(AssetArg::Native), chain) {
        (AssetArg::Native, _) => return Ok(Address::ZERO),
        (AssetArg::Token(a), _) => a,
        (AssetArg::Test, ChainChoice::Simulated(sim)) => {
            sim.deploy_token(payment_channel::TokenBehaviour::Standard, 18)
        }
        #[cfg(feature = "ethereum")]
        (AssetArg::Test, ChainChoice::Ethereum(eth)) => {
            use payment_channel::sign::Signer;
            let owner = payment_channel::sign::LocalSigner::from_bytes(&eth.key)?.address();
            payment_channel::chain::ethereum::deploy_test_token(
                &eth.rpc,
                &eth.key,
                &artifacts_dir(args),
                owner,
            )
            .await?
        }
    };
    out.event(
        json!({"event": "asset", "asset": asset.to_string()}),
        || format!("paying in ERC-20 token {asset}"),
    );
    Ok(asset)
}

/// `--artifacts`, else `$NITRO_ARTIFACTS_DIR`, else the repository's `target/nitro-artifacts`.
#[cfg(feature = "ethereum")]
fn artifacts_dir(args: &ChainArgs) -> PathBuf {
    args.artifacts.clone().unwrap_or_else(|| {
        std::env::var_os("NITRO_ARTIFACTS_DIR").map_or_else(
            || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/nitro-artifacts"),
            PathBuf::from,
        )
    })
}

/// The identity key: `--identity` (development chains only), `--identity-file` or
/// `$PAID_TORRENT_IDENTITY`, else the key file next to `--store` (created on first use), else a
/// fresh one.
pub(crate) async fn open_wallet(
    chain: &ChainChoice,
    dev: bool,
    args: &WalletArgs,
    asset: Address,
) -> Result<Wallet> {
    let given = Secret::find(
        ("--identity", args.identity.as_deref()),
        args.identity_file.as_deref(),
        IDENTITY_ENV,
        |name| std::env::var(name).ok(),
    )?;
    if let Some(warning) = given.as_ref().map(|s| s.check(dev)).transpose()?.flatten() {
        eprintln!("{warning}");
    }
    let identity = match (given, &args.store) {
        (Some(k), _) => Some(k.key),
        (None, Some(store)) => {
            let key_file = PathBuf::from(format!("{}.key", store.display()));
            if key_file.exists() {
                Some(parse_key(&read_key_file(&key_file)?)?)
            } else {
                let fresh = payment_channel::sign::LocalSigner::random().secret_bytes();
                write_key_file(&key_file, &hex::encode(fresh))?;
                Some(fresh)
            }
        }
        (None, None) => None,
    };
    Ok(Wallet::open(chain, identity, args.store.as_deref(), asset).await?)
}

/// Creates a key file readable by its owner only (mode 0600 on unix), refusing to overwrite one.
pub(crate) fn write_key_file(path: &Path, contents: &str) -> Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .map_err(|e| Failure::other(format!("{}: {e}", path.display())))?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()?;
    Ok(())
}

/// Reads a key file, refusing one that its group or others can read (on unix).
pub(crate) fn read_key_file(path: &Path) -> Result<String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)?.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(Failure::usage(format!(
                "{}: a secret key file must be readable by its owner only (mode {:o}); \
                 run `chmod 600 {}`",
                path.display(),
                mode & 0o777,
                path.display()
            )));
        }
    }
    Ok(std::fs::read_to_string(path)?)
}

/// [`open`] with the channel options of `seed`/`get`, and their hub settings ([`hub_terms`]).
pub(crate) async fn open_with_hub(
    channels: &ChannelArgs,
    out: Out,
    sell: bool,
    buy_deposit: Option<u128>,
    challenge_duration: u64,
) -> Result<(Wallet, Out, Option<paid_torrent_examples::paid::HubTerms>)> {
    let (wallet, out) = open(&channels.chain, &channels.wallet, out).await?;
    let hub = hub_terms(channels, &wallet, sell, buy_deposit, challenge_duration).await?;
    Ok((wallet, out, hub))
}

/// The hub settings of `seed`/`get` (`None` without `--hub`): `deposit` into our ledger when we
/// buy, a ledger asked of the hub when we sell. The ledger and virtual channels are kept in
/// `<store>.party` (in memory without `--store`).
async fn hub_terms(
    channels: &ChannelArgs,
    wallet: &Wallet,
    sell: bool,
    buy_deposit: Option<u128>,
    challenge_duration: u64,
) -> Result<Option<paid_torrent_examples::paid::HubTerms>> {
    use payment_channel::chain::CONSENSUS_APP_RUNTIME_HASH;
    use payment_channel::chain::sim::DEFAULT_CONSENSUS_APP;
    let ChannelArgs {
        wallet: wallet_args,
        chain,
        hub: opts,
        ..
    } = channels;
    let Some(hub) = &opts.hub else {
        return Ok(None);
    };
    if chain.rpc.is_none() {
        return Err(Failure::usage(
            "--hub needs --rpc: the hub is another process, which a simulated chain cannot reach",
        ));
    }
    let consensus_app = opts.consensus_app.unwrap_or(DEFAULT_CONSENSUS_APP);
    let code = wallet
        .chain
        .code_hash(consensus_app)
        .await
        .map_err(Failure::chain)?;
    if code != CONSENSUS_APP_RUNTIME_HASH {
        return Err(Failure::usage(format!(
            "the code at {consensus_app} is not ConsensusApp: give --consensus-app"
        )));
    }
    let store: Arc<dyn payment_channel::store::ChannelStore> = match &wallet_args.store {
        Some(p) => {
            let party = PathBuf::from(format!("{}.party", p.display()));
            Arc::new(
                payment_channel::RedbStore::open(&party)
                    .map_err(|e| Failure::other(format!("store {}: {e}", party.display())))?,
            )
        }
        None => Arc::new(payment_channel::MemoryStore::new()),
    };
    Ok(Some(paid_torrent_examples::paid::HubTerms {
        endpoint: hub.to_string(),
        consensus_app,
        ledger_deposit: opts.hub_deposit.or(buy_deposit),
        request_ledger: sell,
        fee: opts.hub_fee,
        challenge_duration: challenge_duration.max(1),
        store,
        chain: None,
        watch_every: std::time::Duration::from_millis(500),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: &str = "0x0101010101010101010101010101010101010101010101010101010101010101";
    const K2: &str = "0202020202020202020202020202020202020202020202020202020202020202";

    fn env_with(value: Option<&str>) -> impl Fn(&str) -> Option<String> {
        let value = value.map(str::to_owned);
        move |name| (name == KEY_ENV).then(|| value.clone()).flatten()
    }

    #[test]
    fn a_key_comes_from_the_flag_a_file_or_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tx.key");
        write_key_file(&file, K2).unwrap();
        let find = |flag: Option<&str>, file: Option<&Path>, env: Option<&str>| {
            Secret::find(("--key", flag), file, KEY_ENV, env_with(env)).unwrap()
        };
        let flag = find(Some(K1), None, Some(K2)).unwrap();
        assert_eq!(
            (flag.key, flag.source),
            (parse_key(K1).unwrap(), KeySource::CommandLine("--key"))
        );
        let from_file = find(None, Some(&file), Some(K1)).unwrap();
        assert_eq!(
            (from_file.key, from_file.source),
            (parse_key(K2).unwrap(), KeySource::File(file))
        );
        let from_env = find(None, None, Some(K1)).unwrap();
        assert_eq!(
            (from_env.key, from_env.source),
            (parse_key(K1).unwrap(), KeySource::Env(KEY_ENV))
        );
        assert!(find(None, None, None).is_none());
        assert!(
            find(None, None, Some("  ")).is_none(),
            "an empty variable is no key"
        );
    }

    #[test]
    fn a_bad_key_is_refused_without_echoing_it() {
        let secret = "0x01010101010101010101010101010101010101010101010101010101010101zz";
        let e = Secret::find(("--key", None), None, KEY_ENV, env_with(Some(secret))).unwrap_err();
        let e = e.to_string();
        assert!(
            e.contains("$PAID_TORRENT_KEY") && !e.contains("0101"),
            "{e}"
        );
        let short = Secret::find(("--key", Some("0x0101")), None, KEY_ENV, env_with(None));
        assert!(short.is_err());
    }

    #[test]
    fn a_key_on_the_command_line_is_for_development_chains_only() {
        let on_line = Secret::find(("--key", Some(K1)), None, KEY_ENV, env_with(None))
            .unwrap()
            .unwrap();
        let warning = on_line
            .check(true)
            .unwrap()
            .expect("a warning on a dev chain");
        assert!(
            warning.contains("--key-file") && warning.contains(KEY_ENV),
            "{warning}"
        );
        let refused = on_line.check(false).unwrap_err().to_string();
        assert!(refused.contains("--key-file"), "{refused}");
        let identity = Secret {
            source: KeySource::CommandLine("--identity"),
            ..on_line
        };
        assert!(
            identity
                .check(false)
                .unwrap_err()
                .to_string()
                .contains("--identity-file")
        );
        for source in [KeySource::Env(KEY_ENV), KeySource::File(PathBuf::from("k"))] {
            let quiet = Secret {
                source,
                ..on_line.clone()
            };
            assert_eq!(quiet.check(false).unwrap(), None);
            assert_eq!(quiet.check(true).unwrap(), None);
        }
    }

    #[cfg(unix)]
    #[test]
    fn key_files_are_owner_only_and_loose_ones_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("id.key");
        write_key_file(&path, "00").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(read_key_file(&path).unwrap(), "00");
        assert!(write_key_file(&path, "11").is_err(), "never overwritten");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(read_key_file(&path).is_err());
    }
}
