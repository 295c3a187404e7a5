//! One hub, two seeders and a downloader, each its own OS process (`paid-torrent hub`,
//! `seed --hub` ×2, `get --hub`) on anvil with 1 s blocks: a paid download from both seeders
//! through the hub. The file arrives byte for byte; the downloader sent exactly one transaction
//! (its ledger's deposit); each seeder is paid out on chain exactly what the downloader paid it
//! (balances read from the chain). Needs the `ethereum` feature, anvil and the contract
//! artifacts.

#![cfg(feature = "ethereum")]

mod support;

use std::time::{Duration, Instant};

use payment_channel::chain::ethereum::{NitroArtifacts, deploy};
use payment_channel::sign::Signer;
use payment_channel::test_utils::anvil::Anvil;
use support::*;

const SIZE: usize = 4 << 20;

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn nonce(anvil: &Anvil, key: &str) -> u64 {
    let a = payment_channel::sign::LocalSigner::from_hex(key)
        .unwrap()
        .address();
    let v = anvil
        .rpc("eth_getTransactionCount", &format!("[\"{a}\", \"latest\"]"))
        .unwrap();
    u64::from_str_radix(v.as_str().unwrap().trim_start_matches("0x"), 16).unwrap()
}

#[test]
fn a_hub_two_seeders_and_a_downloader_as_processes_on_anvil() {
    let Some((anvil, art)) = shared_chain() else {
        return;
    };
    // The contracts, ConsensusApp included, deployed once for every process.
    let deployer = payment_channel::sign::LocalSigner::from_hex(dev_key(0)).unwrap();
    let artifacts = NitroArtifacts::from_dir(std::path::Path::new(&art)).unwrap();
    let d = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(deploy(&anvil.url, &deployer.secret_bytes(), &artifacts))
        .unwrap();
    let contracts = [
        "--adjudicator".to_owned(),
        d.nitro_adjudicator.to_string(),
        "--app".into(),
        d.payment_app.to_string(),
        "--consensus-app".into(),
        d.consensus_app.to_string(),
    ];
    let dir = tempdir();
    let (seed_dir, data, torrent) = seeded_torrent(dir.path(), "film.bin", SIZE, 11);
    let listen = format!("127.0.0.1:{}", free_port());
    let store = arg(&dir.path().join("hub.redb"));
    let mut hub = JsonProc::spawn(
        "hub",
        chain_cmd(
            &anvil,
            &art,
            dev_key(1),
            &[
                &["hub".to_owned()][..],
                &contracts,
                &[
                    "--listen".into(),
                    listen.clone(),
                    "--store".into(),
                    store,
                    "--watch-every".into(),
                    "200ms".into(),
                    "--resend-every".into(),
                    "1s".into(),
                ],
            ]
            .concat(),
        ),
    );
    let ev = hub.expect_event(Duration::from_secs(90), "hub");
    let hub_address = ev["address"].as_str().unwrap().to_owned();
    let mut seeders = Vec::new();
    for (i, key) in [(0, dev_key(2)), (1, dev_key(3))] {
        let mut args = seed_args(
            &torrent,
            &seed_dir,
            &["--hub", &listen, "--challenge-duration", "10m"],
        );
        args.extend(contracts.iter().cloned());
        let mut p = JsonProc::spawn(
            if i == 0 { "seeder-1" } else { "seeder-2" },
            chain_cmd(&anvil, &art, key, &args),
        );
        let hub_ev = p.expect_event(Duration::from_secs(60), "hub");
        assert_eq!(hub_ev["hub"].as_str().unwrap(), hub_address);
        let (addr, account) = p.listening();
        p.expect_event(Duration::from_secs(60), "hub_ledger_open");
        seeders.push((p, addr, account));
    }
    let out = arg(&dir.path().join("dl"));
    let buyer_key = dev_key(0);
    let nonce_before = nonce(&anvil, buyer_key);
    let started = Instant::now();
    let mut get = vec![
        "get".to_owned(),
        torrent.clone(),
        "--out".into(),
        out,
        "--hub".into(),
        listen,
        "--timeout".into(),
        "300".into(),
    ];
    for (_, addr, _) in &seeders {
        get.push("--peer".into());
        get.push(addr.clone());
    }
    get.extend(contracts.iter().cloned());
    let mut buyer = JsonProc::spawn("buyer", chain_cmd(&anvil, &art, buyer_key, &get));
    buyer.expect_event(Duration::from_secs(120), "hub_ledger_open");
    let ledger_open = started.elapsed();
    buyer.expect_event(Duration::from_secs(120), "channel_opened");
    let first_paid_virtual = started.elapsed() - ledger_open;
    let done = buyer.expect_event(Duration::from_secs(300), "done");
    println!(
        "FIGURE hub processes: ledger open after {:.2} s, {} bytes, paid {} wei, transfer {:.2} s, total {:.2} s",
        ledger_open.as_secs_f64(),
        done["bytes"],
        done["paid"],
        done["seconds"].as_f64().unwrap_or_default(),
        started.elapsed().as_secs_f64()
    );
    assert!(buyer.child.wait().expect("buyer exit").success());
    assert_eq!(std::fs::read(dir.path().join("dl/film.bin")).unwrap(), data);
    let paid = num(&done, "paid");
    assert!(paid >= SIZE as u128, "paid {paid} for {SIZE} bytes");
    assert_eq!(
        nonce(&anvil, buyer_key) - nonce_before,
        1,
        "the downloader sent one transaction: its ledger's deposit"
    );
    // The seeders stop: each closes its ledger with the hub, which concludes it (payouts).
    let mut total = 0u128;
    for (p, _, account) in &mut seeders {
        // Closing the ledger takes the hub's conclude and its confirmations (1 s blocks); the
        // seeder waits for the payout up to 60 s before it exits.
        p.terminate_within(Duration::from_secs(70));
        let received = p
            .seen
            .iter()
            .filter(|v| v["event"] == "peer_status")
            .map(|v| num(v, "received"))
            .max()
            .unwrap_or(0);
        assert!(
            p.seen.iter().any(|v| v["event"] == "hub_ledger_closed"),
            "the seeder's ledger closed; its last events: {:?}",
            &p.seen[p.seen.len().saturating_sub(5)..]
        );
        let payout = anvil.balance(account);
        assert_eq!(
            payout, received,
            "seeder paid out exactly its largest voucher"
        );
        total += payout;
    }
    assert_eq!(total, paid, "the seeders hold what the downloader paid");
    assert!(
        seeders.iter().all(|(_, _, a)| anvil.balance(a) > 0),
        "both seeders sold"
    );
    hub.terminate();

    // The same first paid byte over a direct channel (a seeder and a downloader without a hub):
    // the deposit has to be mined first.
    let mut seeder = JsonProc::spawn(
        "seeder-direct",
        chain_cmd(
            &anvil,
            &art,
            dev_key(2),
            &[
                seed_args(&torrent, &seed_dir, &["--challenge-duration", "10m"]),
                contracts[..4].to_vec(),
            ]
            .concat(),
        ),
    );
    let (addr, _) = seeder.listening();
    let out2 = arg(&dir.path().join("dl2"));
    let started = Instant::now();
    let mut extra = vec!["--timeout", "300"];
    extra.extend(contracts[..4].iter().map(String::as_str));
    let get = get_args(&torrent, &addr, &out2, &extra);
    let mut buyer = JsonProc::spawn("buyer-direct", chain_cmd(&anvil, &art, buyer_key, &get));
    buyer.expect_event(Duration::from_secs(120), "started");
    let start_up = started.elapsed();
    buyer.expect_event(Duration::from_secs(120), "channel_opened");
    let first_paid_direct = started.elapsed() - start_up;
    buyer.expect_event(Duration::from_secs(300), "done");
    assert_eq!(
        std::fs::read(dir.path().join("dl2/film.bin")).unwrap(),
        data
    );
    seeder.terminate();
    println!(
        "FIGURE time to first paid byte on anvil (1 s blocks), from the downloader's start: \
         virtual {:.2} s (its ledger already open), direct {:.2} s",
        first_paid_virtual.as_secs_f64(),
        first_paid_direct.as_secs_f64()
    );
}
