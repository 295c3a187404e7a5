//! A local anvil node for tests: found (never installed) and started on a free loopback port,
//! killed when the handle drops.
//!
//! Where anvil is looked for, in order:
//! 1. `$ANVIL_BIN`;
//! 2. `<repo>/.ci/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil` (what
//!    `scripts/install-anvil.sh` installs);
//! 3. `anvil` on `PATH`.
//!
//! The contract artifacts come from `$NITRO_ARTIFACTS_DIR`, default `<repo>/target/nitro-artifacts`
//! (what `scripts/fetch-nitro-artifacts.sh` and `scripts/build-contracts.sh` write).
//!
//! When either is missing, a test **fails** if `$CI` is set and is skipped (with instructions on
//! stderr) otherwise.

use std::io::Read;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Private keys of anvil's default dev accounts #0..#3 (the public "test test … junk" mnemonic).
/// They only ever hold dev-chain ether.
pub const DEV_KEYS: [&str; 4] = [
    "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
    "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
    "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
    "0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6",
];

/// Anvil's dev account `i` (0..4) as a signer.
pub fn dev_key(i: usize) -> crate::sign::LocalSigner {
    crate::sign::LocalSigner::from_hex(DEV_KEYS[i]).expect("dev key")
}

/// A fresh `SimulatedChain` with the dev `accounts` funded like anvil's (10 000 ether each).
pub fn simulated_dev_chain(accounts: impl IntoIterator<Item = usize>) -> crate::SimulatedChain {
    use crate::sign::Signer;
    let sim = crate::SimulatedChain::new();
    let ether = alloy_primitives::U256::from(10u64).pow(alloy_primitives::U256::from(18u8));
    for i in accounts {
        sim.fund(
            dev_key(i).address(),
            alloy_primitives::U256::from(10_000u64) * ether,
        )
        .expect("fund");
    }
    sim
}

/// Anvil with the Nitro contracts deployed by dev account #0 (see
/// [`deploy`](crate::chain::ethereum::deploy)), and the artifacts' directory; `None` (skip)
/// without anvil or the artifacts, outside CI.
#[cfg(feature = "ethereum")]
pub async fn deployed() -> Option<(Anvil, crate::chain::ethereum::Deployment, PathBuf)> {
    use crate::chain::ethereum::{NitroArtifacts, deploy};
    let dir = artifacts_dir()?;
    let anvil = Anvil::start()?;
    let artifacts = NitroArtifacts::from_dir(&dir).expect("artifacts");
    let deployment = deploy(&anvil.url, &dev_key(0).secret_bytes(), &artifacts)
        .await
        .expect("deploy");
    Some((anvil, deployment, dir))
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("crate is inside the workspace")
        .to_path_buf()
}

/// Whether `$CI` is set (to anything but empty, `false` or `0`).
pub fn in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// Fails under CI, else prints why the test is skipped. Returns `None` for `?`-style use.
pub fn missing<T>(what: &str, how: &str) -> Option<T> {
    if in_ci() {
        panic!("{what} is required when CI is set: {how}");
    }
    eprintln!("SKIPPED: {what} not found. {how}");
    None
}

/// Finds the anvil binary.
pub fn find_anvil() -> Option<PathBuf> {
    if let Some(bin) = std::env::var_os("ANVIL_BIN") {
        return Some(PathBuf::from(bin));
    }
    let ci_bin = repo_root().join(".ci/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil");
    if ci_bin.is_file() {
        return Some(ci_bin);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("anvil"))
        .find(|p| p.is_file())
}

/// The artifacts every Ethereum test needs.
const ARTIFACTS: [&str; 6] = [
    "NitroAdjudicator.json",
    "VirtualPaymentApp.json",
    "ConsensusApp.json",
    "PaymentApp.json",
    "Token.json",
    "BadToken.json",
];

/// The directory holding the contract artifacts (`NitroAdjudicator.json`,
/// `VirtualPaymentApp.json`, `ConsensusApp.json`, `PaymentApp.json`, `Token.json`,
/// `BadToken.json`), or `None` (skip)
/// / panic (CI) when it does not.
pub fn artifacts_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("NITRO_ARTIFACTS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/nitro-artifacts"));
    if ARTIFACTS.iter().all(|a| dir.join(a).is_file()) {
        Some(dir)
    } else {
        missing(
            &format!("contract artifacts in {}", dir.display()),
            "Run `scripts/fetch-nitro-artifacts.sh` and `scripts/build-contracts.sh` (need npm), \
             or set NITRO_ARTIFACTS_DIR.",
        )
    }
}

/// How `contracts/test/BadToken.sol` misbehaves (its constructor's `mode`).
#[cfg(feature = "ethereum")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadTokenMode {
    /// 1% of every transfer is burnt from the recipient.
    FeeOnTransfer = 1,
    /// `transferFrom` returns `false` and moves nothing.
    FalseOnTransferFrom = 2,
}

/// Deploys the nitro-protocol package's `Token.sol` (compiled by `scripts/build-contracts.sh`;
/// 18 decimals, 10^10 units minted to `owner`) from the account of `deployer_key`.
#[cfg(feature = "ethereum")]
pub async fn deploy_token(
    url: &str,
    deployer_key: &alloy_primitives::B256,
    dir: &Path,
    owner: alloy_primitives::Address,
) -> alloy_primitives::Address {
    crate::chain::ethereum::deploy_test_token(url, deployer_key, dir, owner)
        .await
        .expect("deploy Token")
}

/// Deploys `contracts/test/BadToken.sol` (18 decimals, 10^28 units minted to `owner`).
#[cfg(feature = "ethereum")]
pub async fn deploy_bad_token(
    url: &str,
    deployer_key: &alloy_primitives::B256,
    dir: &Path,
    owner: alloy_primitives::Address,
    mode: BadTokenMode,
) -> alloy_primitives::Address {
    use alloy_primitives::U256;
    use alloy_sol_types::SolValue;
    let mut code = crate::chain::ethereum::read_bytecode(&dir.join("BadToken.json"))
        .expect("BadToken artifact")
        .to_vec();
    code.extend_from_slice(&(owner, U256::from(mode as u8)).abi_encode_params());
    crate::chain::ethereum::deploy_contract(url, deployer_key, code.into())
        .await
        .expect("deploy BadToken")
        .0
}

/// A running anvil node; killed (and reaped) on drop.
#[derive(Debug)]
pub struct Anvil {
    child: Child,
    /// The loopback port it listens on.
    pub port: u16,
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    /// From spawn to the first answered `eth_chainId`.
    pub started_in: Duration,
}

impl Anvil {
    /// Starts anvil (chain id 1337) on a free loopback port, or returns `None` (skip) / panics (CI) when anvil
    /// is not installed.
    pub fn start() -> Option<Self> {
        Self::start_with(&[])
    }

    /// Like [`Anvil::start`], with extra command-line arguments (e.g. `["--block-time", "1"]`).
    /// The chain id is 1337 unless they give `--chain-id`.
    pub fn start_with(extra_args: &[&str]) -> Option<Self> {
        let Some(bin) = find_anvil() else {
            return missing(
                "anvil",
                "Install it with `scripts/install-anvil.sh` (npm install --prefix .ci @foundry-rs/anvil), \
                 or set ANVIL_BIN.",
            );
        };
        let mut last_err = String::new();
        for _attempt in 0..5 {
            match Self::start_once(&bin, extra_args) {
                Ok(anvil) => return Some(anvil),
                Err(e) => last_err = e,
            }
        }
        panic!("anvil ({}) did not start: {last_err}", bin.display());
    }

    fn start_once(bin: &Path, extra_args: &[&str]) -> Result<Self, String> {
        // Not every anvil version takes `--port 0`: reserve a port, release it, and retry on a
        // collision (another process may grab it in between).
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let default_chain_id: &[&str] = if extra_args.contains(&"--chain-id") {
            &[]
        } else {
            &["--chain-id", "1337"]
        };
        let started = Instant::now();
        let mut child = Command::new(bin)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(default_chain_id)
            .args(extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", bin.display()))?;
        let url = format!("http://127.0.0.1:{port}");
        let deadline = started + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let mut stderr = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = e.read_to_string(&mut stderr);
                }
                return Err(format!("anvil exited with {status}: {stderr}"));
            }
            if chain_id_answers(port) {
                return Ok(Self {
                    child,
                    port,
                    url,
                    started_in: started.elapsed(),
                });
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(String::from("no eth_chainId answer within 10 s"));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Anvil {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether `eth_chainId` on 127.0.0.1:`port` gets a JSON-RPC result.
fn chain_id_answers(port: u16) -> bool {
    rpc(port, "eth_chainId", "[]").is_ok()
}

/// One JSON-RPC request to 127.0.0.1:`port` with a minimal HTTP/1.1 client (so that readiness
/// and node control need no async runtime); returns the `result` member.
pub fn rpc(port: u16, method: &str, params: &str) -> Result<serde_json::Value, String> {
    use std::io::Write;
    let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    let body = format!(r#"{{"jsonrpc":"2.0","id":1,"method":"{method}","params":{params}}}"#);
    let req = format!(
        "POST / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).map_err(|e| e.to_string())?;
    let json = resp
        .split_once("\r\n\r\n")
        .map(|(_, body)| body)
        .ok_or_else(|| format!("no HTTP body in {resp:?}"))?;
    let v: serde_json::Value = serde_json::from_str(json).map_err(|e| format!("{e}: {json:?}"))?;
    v.get("result")
        .cloned()
        .ok_or_else(|| format!("no result in {v}"))
}

impl Anvil {
    /// A JSON-RPC request to this node (node control in tests: `evm_setAutomine`, `evm_mine`, ...).
    pub fn rpc(&self, method: &str, params: &str) -> Result<serde_json::Value, String> {
        rpc(self.port, method, params)
    }

    /// Balance of `address` (hex) in wei.
    pub fn balance(&self, address: &str) -> u128 {
        let v = self
            .rpc("eth_getBalance", &format!(r#"["{address}","latest"]"#))
            .expect("eth_getBalance");
        let hex = v.as_str().expect("hex quantity").trim_start_matches("0x");
        u128::from_str_radix(hex, 16).expect("balance fits u128")
    }
}
