//! Keys, the chain connection and the asset: everything a paid `seed` or `get` needs before
//! its node starts.

use std::path::{Path, PathBuf};

use paid_torrent_examples::paid::{ChainChoice, Wallet};
use payment_channel::{Address, B256, SimulatedChain};
use serde_json::json;

use crate::Result;
use crate::options::{AssetArg, ChainArgs, WalletArgs};
use crate::output::Out;

/// The chain of `chain`, the asset of `--asset` on it and the wallet of `wallet`; `out` with the
/// asset's units.
pub(crate) async fn open(
    chain: &ChainArgs,
    wallet: &WalletArgs,
    out: Out,
) -> Result<(Wallet, Out)> {
    let choice = chain_choice(chain, &out).await?;
    let asset = resolve_asset(&choice, chain, &out).await?;
    let wallet = open_wallet(&choice, wallet, asset).await?;
    let out = Out {
        units: wallet.units,
        ..out
    };
    Ok((wallet, out))
}

pub(crate) fn parse_key(hex_key: &str) -> Result<B256> {
    let bytes = hex::decode(hex_key.trim().trim_start_matches("0x"))?;
    if bytes.len() != 32 {
        return Err("a key is 32 bytes of hex".into());
    }
    Ok(B256::from_slice(&bytes))
}

pub(crate) async fn chain_choice(args: &ChainArgs, out: &Out) -> Result<ChainChoice> {
    let Some(rpc) = &args.rpc else {
        out.event(json!({"event": "chain", "kind": "simulated"}), || {
            "chain: simulated, in this process only (use --rpc to pay a peer in another process)"
                .into()
        });
        return Ok(ChainChoice::Simulated(SimulatedChain::new()));
    };
    ethereum_choice(rpc, args, out).await
}

#[cfg(feature = "ethereum")]
async fn ethereum_choice(rpc: &str, args: &ChainArgs, out: &Out) -> Result<ChainChoice> {
    use payment_channel::chain::ethereum::{NitroArtifacts, SetupError, deploy};
    use payment_channel::chain::sim::{DEFAULT_ADJUDICATOR_ADDRESS, DEFAULT_APP_DEFINITION};
    let key = parse_key(args.key.as_deref().ok_or("--rpc needs --key")?)?;
    let mut adjudicator = args.adjudicator.unwrap_or(DEFAULT_ADJUDICATOR_ADDRESS);
    let mut app = args.app.unwrap_or(DEFAULT_APP_DEFINITION);
    match payment_channel::chain::EthereumChain::connect(rpc, &key, adjudicator).await {
        Ok(_) => {}
        Err(SetupError::NoContract(_)) => {
            let artifacts = NitroArtifacts::from_dir(&artifacts_dir(args))?;
            let d = deploy(rpc, &key, &artifacts).await?;
            adjudicator = d.nitro_adjudicator;
            app = d.payment_app;
        }
        Err(e) => return Err(e.into()),
    }
    out.event(
        json!({"event": "chain", "kind": "ethereum", "rpc": rpc,
               "adjudicator": adjudicator.to_string(), "app": app.to_string()}),
        || format!("chain: {rpc}, NitroAdjudicator {adjudicator}, PaymentApp {app}"),
    );
    Ok(ChainChoice::Ethereum(
        paid_torrent_examples::paid::EthereumChoice {
            rpc: rpc.to_owned(),
            key,
            adjudicator,
            app,
        },
    ))
}

#[cfg(not(feature = "ethereum"))]
async fn ethereum_choice(_rpc: &str, _args: &ChainArgs, _out: &Out) -> Result<ChainChoice> {
    Err("this build has no Ethereum support: build with `--features ethereum`".into())
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

/// The identity key: `--identity`, else the key file next to `--store` (created on first use),
/// else a fresh one.
pub(crate) async fn open_wallet(
    chain: &ChainChoice,
    args: &WalletArgs,
    asset: Address,
) -> Result<Wallet> {
    let identity = match (&args.identity, &args.store) {
        (Some(k), _) => Some(parse_key(k)?),
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
        .map_err(|e| format!("{}: {e}", path.display()))?;
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
            return Err(format!(
                "{}: a secret key file must be readable by its owner only (mode {:o}); \
                 run `chmod 600 {}`",
                path.display(),
                mode & 0o777,
                path.display()
            )
            .into());
        }
    }
    Ok(std::fs::read_to_string(path)?)
}

#[cfg(test)]
mod tests {
    use super::*;

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
