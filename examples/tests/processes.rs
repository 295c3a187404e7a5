//! Two of our peers as separate OS processes (`paid-torrent seed` and `paid-torrent get`) over
//! loopback, paying through Nitro channels on a local anvil (`--rpc`): a chain that two processes
//! can share, unlike the in-process simulated one. Needs the `ethereum` feature, anvil
//! (`scripts/install-anvil.sh`) and the contract artifacts (`scripts/fetch-nitro-artifacts.sh`).
//!
//! 1. A 64 MiB file moves with payments on; the seeder's payout on chain is exactly the price
//!    of the file.
//! 2. Again through a slow link, and the downloader is killed with SIGKILL mid-transfer: the
//!    seeder (stopped, then restarted on the same durable store) restores the channel, waits
//!    for the payer to come back, then challenges with the largest voucher it received, and
//!    ends paid exactly that, on chain, for what it served.

#![cfg(feature = "ethereum")]

mod support;

use std::time::Duration;

use alloy_primitives::hex;
use support::*;

const MIB: u64 = 1 << 20;
const SIZE: u64 = 64 * MIB;
const GRANULARITY: u64 = MIB;

/// `seed <torrent> --dir <seed_dir> --listen 127.0.0.1:0 --challenge-duration 10 <extra…>`.
fn seed_args(torrent: &str, seed_dir: &std::path::Path, extra: &[&str]) -> Vec<String> {
    // Long enough for the watcher's 2 confirmations (1 s blocks) plus a counter.
    let mut v = support::seed_args(torrent, seed_dir, &["--challenge-duration", "10"]);
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

#[test]
fn two_processes_pay_for_64_mib_and_survive_a_sigkill() {
    let Some((anvil, art)) = shared_chain() else {
        return;
    };
    let dir = tempdir();
    let (seed_dir, data, torrent) = seeded_torrent(dir.path(), "movie.bin", SIZE as usize, 64);
    let seed_args = |extra: &[&str]| seed_args(&torrent, &seed_dir, extra);

    // ---- 1. a full paid transfer between two processes -------------------------------------
    let identity = format!("0x{}", hex::encode(content(32, 7)));
    let args = seed_args(&["--identity", &identity]);
    let mut seeder = JsonProc::spawn("seeder", chain_cmd(&anvil, &art, dev_key(0), &args));
    let (addr, seller) = seeder.listening();
    let before = anvil.balance(&seller);
    let out1 = arg(&dir.path().join("dl1"));
    let started = std::time::Instant::now();
    let get = get_args(&torrent, &addr, &out1, &["--timeout", "300"]);
    let mut buyer = JsonProc::spawn("buyer", chain_cmd(&anvil, &art, dev_key(2), &get));
    let done = buyer.expect_event(Duration::from_secs(300), "done");
    println!(
        "run 1: {} bytes, {} payments, {} wei, transfer {:.2} s, total with close and payout {:.2} s",
        done["bytes"],
        done["payments"],
        done["paid"],
        done["seconds"].as_f64().unwrap_or_default(),
        started.elapsed().as_secs_f64()
    );
    assert!(buyer.child.wait().expect("buyer exit").success());
    assert_eq!(
        std::fs::read(dir.path().join("dl1/movie.bin")).unwrap(),
        data
    );
    assert_eq!(num(&done, "paid"), u128::from(SIZE), "1 wei per byte");
    assert_eq!(
        anvil.balance(&seller) - before,
        u128::from(SIZE),
        "the seller's payout on chain is exactly the price of the file"
    );
    seeder.terminate();

    // ---- 2. SIGKILL the downloader mid-transfer, restart the seeder ------------------------
    let store = arg(&dir.path().join("seller.redb"));
    let seed_argv = seed_args(&["--store", &store]);
    let mut seeder = JsonProc::spawn("seeder-2", chain_cmd(&anvil, &art, dev_key(0), &seed_argv));
    let (addr, seller) = seeder.listening();
    let before = anvil.balance(&seller);
    let rt = one_worker_runtime();
    // 8 MiB/s: the 64 MiB take 8 s, plenty of time to kill the downloader half way.
    let slow = rt.block_on(relay(8 * MIB));
    *slow.upstream.lock().unwrap() = Some(addr.parse().unwrap());
    let slow = slow.addr;
    let out2 = arg(&dir.path().join("dl2"));
    let granularity = GRANULARITY.to_string();
    let get = get_args(
        &torrent,
        &slow.to_string(),
        &out2,
        &["--granularity", &granularity],
    );
    let mut buyer = JsonProc::spawn("buyer-2", chain_cmd(&anvil, &art, dev_key(3), &get));
    let progress = buyer
        .wait_for(Duration::from_secs(120), |v| {
            v["event"] == "status" && v["have"].as_u64().is_some_and(|h| h >= SIZE / 3)
        })
        .expect("the downloader made progress");
    buyer.kill9();
    println!(
        "run 2: downloader SIGKILLed at {} of {SIZE} bytes",
        progress["have"]
    );
    // Let the seeder notice, then stop it and read its last figures for that peer.
    std::thread::sleep(Duration::from_millis(1500));
    seeder.terminate();
    let last = seeder
        .last("peer_status")
        .cloned()
        .expect("the seeder reported the downloader");
    let (served, received) = (num(&last, "served"), num(&last, "received"));
    assert!(
        served > 0 && served < u128::from(SIZE),
        "killed mid-transfer: {last}"
    );
    assert_eq!(anvil.balance(&seller), before, "nothing paid out yet");

    // Restarted on its store, the seeder carries on with the channel; the downloader does not
    // come back, so after `--idle-close` the seeder asks for a close, gets no answer within
    // `--answer-timeout`, and challenges with the largest voucher it holds.
    let mut argv3 = seed_argv;
    argv3.extend(["--idle-close", "1", "--answer-timeout", "2"].map(String::from));
    let mut seeder = JsonProc::spawn("seeder-3", chain_cmd(&anvil, &art, dev_key(0), &argv3));
    let restored = seeder.expect_event(Duration::from_secs(60), "channel_restored");
    let voucher = num(&restored, "paid");
    assert_eq!(
        voucher, received,
        "the durable store kept the largest voucher received"
    );
    seeder.expect_event(Duration::from_secs(30), "challenging");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while anvil.balance(&seller) == before {
        assert!(
            std::time::Instant::now() < deadline,
            "no payout 60 s after the challenge"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let payout = anvil.balance(&seller) - before;
    println!(
        "run 2: served {served} bytes, largest voucher {voucher} wei, paid out on chain {payout} wei"
    );
    assert_eq!(payout, voucher, "paid out exactly the largest voucher");
    // Served only what was paid for (no trust). The downloader pays before it receives (on
    // STOP, or ahead when prompted), so at the kill it had prepaid some credit it never used:
    // at most what pay-ahead keeps in flight (two payments) plus blocks on the wire.
    assert!(served <= payout, "served {served} > paid {payout}");
    assert!(
        payout - served <= 3 * u128::from(GRANULARITY),
        "paid {payout} for {served} served"
    );
    seeder.terminate();
}

/// The same two processes paying in an ERC-20 (`--asset`): the nitro-protocol package's
/// `Token.sol`, deployed by the test and owned by the buyer's transaction account. The file
/// arrives whole and the seller's payout on chain is exactly the price of the file, in the token.
#[test]
fn two_processes_pay_in_an_erc20() {
    use payment_channel::chain::ethereum::deploy_test_token;
    use payment_channel::chain::{Chain, EthereumChain};
    use payment_channel::sign::{LocalSigner, Signer};
    let Some((anvil, art)) = shared_chain() else {
        return;
    };
    const SIZE: u64 = 8 * MIB;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let key = |i: usize| LocalSigner::from_hex(dev_key(i)).unwrap();
    let token = rt
        .block_on(deploy_test_token(
            &anvil.url,
            &key(3).secret_bytes(),
            std::path::Path::new(&art),
            key(2).address(),
        ))
        .expect("deploy the token");
    let token_arg = token.to_string();
    let dir = tempdir();
    let (seed_dir, data, torrent) = seeded_torrent(dir.path(), "book.bin", SIZE as usize, 9);
    let mut seeder = JsonProc::spawn(
        "seeder-erc20",
        chain_cmd(
            &anvil,
            &art,
            dev_key(0),
            &seed_args(&torrent, &seed_dir, &["--asset", &token_arg]),
        ),
    );
    let (addr, seller) = seeder.listening();
    let seller: payment_channel::Address = seller.parse().unwrap();
    let out = arg(&dir.path().join("dl"));
    let get = get_args(
        &torrent,
        &addr,
        &out,
        &["--asset", &token_arg, "--timeout", "300"],
    );
    let mut buyer = JsonProc::spawn("buyer-erc20", chain_cmd(&anvil, &art, dev_key(2), &get));
    let done = buyer.expect_event(Duration::from_secs(300), "done");
    assert!(buyer.child.wait().expect("buyer exit").success());
    seeder.terminate();
    assert_eq!(std::fs::read(dir.path().join("dl/book.bin")).unwrap(), data);
    assert_eq!(
        num(&done, "paid"),
        u128::from(SIZE),
        "1 token unit per byte"
    );
    let chain = rt
        .block_on(EthereumChain::connect(
            &anvil.url,
            &key(3).secret_bytes(),
            payment_channel::chain::sim::DEFAULT_ADJUDICATOR_ADDRESS,
        ))
        .unwrap();
    let payout = rt.block_on(chain.balance(token, seller)).unwrap();
    assert_eq!(
        payout,
        payment_channel::U256::from(SIZE),
        "the seller's payout on chain is exactly the price of the file, in the token"
    );
    let native = rt
        .block_on(chain.balance(payment_channel::Address::ZERO, seller))
        .unwrap();
    assert!(native.is_zero(), "nothing in the native coin");
    println!(
        "erc20 run: {SIZE} bytes, {} payments, payout {payout} token units",
        done["payments"]
    );
}
