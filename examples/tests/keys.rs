//! Keys and addresses of `paid-torrent --rpc` (feature `ethereum`): the transaction key from a
//! file or the environment (on the command line only on a development chain, with a warning),
//! the RPC URL never printed with its secrets, and off a development chain the contracts given
//! explicitly and checked by their code. Needs anvil and the contract artifacts (skipped without
//! them, failing under CI).

#![cfg(feature = "ethereum")]

mod support;

use std::path::Path;
use std::process::{Command, Output};

use payment_channel::B256;
use payment_channel::chain::ethereum::{Deployment, NitroArtifacts, deploy};
use serde_json::Value;
use support::*;

/// Secret parts of the URLs below: none may be printed.
const SECRETS: [&str; 4] = ["hunter22", "0123456789abcdef", "s3cretvalue", "bobby"];

/// `paid-torrent get <torrent> --json --rpc <rpc> <args…> --peer 127.0.0.1:9 --timeout 1`: a
/// paid `get` that opens its wallet, starts, and gives up (no seller there).
fn get(rpc: &str, torrent: &str, out: &Path, args: &[&str], env_key: Option<&str>) -> Output {
    let mut cmd = Command::new(binary());
    cmd.args(["get", torrent, "--json", "--rpc", rpc])
        .args(args)
        .args(["--peer", "127.0.0.1:9", "--timeout", "1"])
        .arg("--out")
        .arg(out)
        .env_remove("PAID_TORRENT_KEY")
        .env_remove("PAID_TORRENT_IDENTITY");
    if let Some(k) = env_key {
        cmd.env("PAID_TORRENT_KEY", k);
    }
    cmd.output().expect("run paid-torrent")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn events(o: &Output) -> Vec<Value> {
    json_lines(&String::from_utf8_lossy(&o.stdout))
}

fn event(o: &Output, name: &str) -> Option<Value> {
    events(o).into_iter().find(|v| v["event"] == name)
}

/// Neither stdout nor stderr holds a secret part of the URL.
fn assert_no_secret(o: &Output) {
    let all = format!("{}{}", String::from_utf8_lossy(&o.stdout), stderr(o));
    for s in SECRETS {
        assert!(!all.contains(s), "{s:?} printed:\n{all}");
    }
}

/// A key file readable by its owner only.
fn key_file(dir: &Path, name: &str, key: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, key).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    arg(&path)
}

#[test]
fn an_unreachable_rpc_url_is_reported_without_its_secrets() {
    let dir = tempdir();
    let (_, _, torrent) = seeded_torrent(dir.path(), "a.bin", 1 << 16, 1);
    let rpc = "http://bobby:hunter22@127.0.0.1:9/v3/0123456789abcdef?apikey=s3cretvalue";
    let o = get(
        rpc,
        &torrent,
        &dir.path().join("out"),
        &[],
        Some(dev_key(1)),
    );
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("http://127.0.0.1:9/…"),
        "{}",
        stderr(&o)
    );
    assert_no_secret(&o);
}

#[test]
fn on_a_dev_chain_the_key_comes_from_a_file_the_environment_or_the_command_line_with_a_warning() {
    let (Some(anvil), Some(art)) = (Anvil::start(), nitro_artifacts()) else {
        return;
    };
    let dir = tempdir();
    let (_, _, torrent) = seeded_torrent(dir.path(), "a.bin", 1 << 16, 2);
    let out = dir.path().join("out");
    // userinfo and a query string: anvil answers on `/` whatever they are.
    let rpc = anvil
        .url
        .replace("http://", "http://bobby:hunter22@")
        .trim_end_matches('/')
        .to_owned()
        + "/?apikey=s3cretvalue";
    let shown = format!("http://127.0.0.1:{}/…", anvil.port);
    let file = key_file(dir.path(), "tx.key", dev_key(1));
    let runs = [
        (
            "--key-file",
            get(
                &rpc,
                &torrent,
                &out,
                &["--key-file", &file, "--artifacts", &art],
                None,
            ),
        ),
        (
            "env",
            get(
                &rpc,
                &torrent,
                &out,
                &["--artifacts", &art],
                Some(dev_key(2)),
            ),
        ),
        (
            "--key",
            get(
                &rpc,
                &torrent,
                &out,
                &["--key", dev_key(3), "--artifacts", &art],
                None,
            ),
        ),
    ];
    for (how, o) in &runs {
        let chain =
            event(o, "chain").unwrap_or_else(|| panic!("{how}: no chain line: {}", stderr(o)));
        assert_eq!(chain["rpc"], shown.as_str(), "{how}");
        assert_eq!(chain["chain_id"], 1337, "{how}: the harness's dev chain");
        assert!(event(o, "started").is_some(), "{how}: {}", stderr(o));
        assert_no_secret(o);
        let warned = stderr(o).contains("warning: --key puts a secret key in the process list");
        assert_eq!(warned, *how == "--key", "{how}: {}", stderr(o));
    }
    // A loose key file is refused.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let o = get(&rpc, &torrent, &out, &["--key-file", &file], None);
        assert!(
            !o.status.success() && stderr(&o).contains("chmod 600"),
            "{}",
            stderr(&o)
        );
    }
    // No key at all.
    let o = get(&rpc, &torrent, &out, &[], None);
    assert!(
        !o.status.success() && stderr(&o).contains("PAID_TORRENT_KEY"),
        "{}",
        stderr(&o)
    );
}

/// Anvil posing as Sepolia (chain id 11155111), with the contracts deployed.
fn sepolia() -> Option<(Anvil, Deployment)> {
    let anvil = Anvil::start_with(&["--chain-id", "11155111"])?;
    let artifacts = NitroArtifacts::from_dir(Path::new(&nitro_artifacts()?)).unwrap();
    let key: B256 = dev_key(0).parse().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let d = rt.block_on(deploy(&anvil.url, &key, &artifacts)).unwrap();
    Some((anvil, d))
}

#[test]
fn off_a_dev_chain_the_contracts_are_explicit_and_their_code_is_checked() {
    let Some((anvil, d)) = sepolia() else {
        return;
    };
    let dir = tempdir();
    let (_, _, torrent) = seeded_torrent(dir.path(), "a.bin", 1 << 16, 3);
    let out = dir.path().join("out");
    let file = key_file(dir.path(), "tx.key", dev_key(1));
    let (adj, app, vapp) = (
        d.nitro_adjudicator.to_string(),
        d.payment_app.to_string(),
        d.virtual_payment_app.to_string(),
    );
    let nothing = "0x00000000000000000000000000000000000000aa";
    let fails_with = |args: &[&str], why: &str| {
        let mut argv = vec!["--key-file", file.as_str()];
        argv.extend_from_slice(args);
        let o = get(&anvil.url, &torrent, &out, &argv, None);
        assert!(!o.status.success(), "{args:?} accepted");
        assert!(stderr(&o).contains(why), "{args:?}: {}", stderr(&o));
        assert!(event(&o, "started").is_none(), "{args:?} started");
    };
    // No defaults: the first deployment's address holds the adjudicator here too, and is not used.
    fails_with(
        &[],
        "give the contracts' addresses with --adjudicator and --app",
    );
    fails_with(&["--adjudicator", &adj], "--adjudicator and --app");
    fails_with(&["--app", &app], "--adjudicator and --app");
    // The code behind each address is checked.
    fails_with(
        &["--adjudicator", &app, "--app", &app],
        "is not the NitroAdjudicator",
    );
    fails_with(
        &["--adjudicator", &adj, "--app", &vapp],
        "is not PaymentApp",
    );
    fails_with(
        &["--adjudicator", nothing, "--app", &app],
        "is not the NitroAdjudicator",
    );
    // A key on the command line is refused here.
    let o = get(
        &anvil.url,
        &torrent,
        &out,
        &["--key", dev_key(1), "--adjudicator", &adj, "--app", &app],
        None,
    );
    assert!(
        !o.status.success() && stderr(&o).contains("--key-file"),
        "{}",
        stderr(&o)
    );
    assert!(event(&o, "started").is_none());
    // And with both given and right, the client starts.
    let o = get(
        &anvil.url,
        &torrent,
        &out,
        &["--key-file", &file, "--adjudicator", &adj, "--app", &app],
        None,
    );
    let chain = event(&o, "chain").unwrap_or_else(|| panic!("no chain line: {}", stderr(&o)));
    assert_eq!(chain["chain_id"], 11155111);
    assert_eq!(chain["adjudicator"], adj.as_str());
    assert_eq!(chain["app"], app.as_str());
    assert!(event(&o, "started").is_some(), "{}", stderr(&o));
}
