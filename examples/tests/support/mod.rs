//! Shared helpers of the interop tests: the libtorrent peer process, content generation and a
//! recording TCP proxy. Every process and socket is local (127.0.0.1) and bounded in time.

#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use paid_torrent_examples::metainfo::Metainfo;
use paid_torrent_examples::paid::{BuyTerms, ChainChoice, PaidNode, SellTerms, Wallet};
use paid_torrent_examples::peer::PeerConfig;
use paid_torrent_examples::picker::Strategy;
use paid_torrent_examples::session;
use paid_torrent_examples::storage::OpenMode;
use paid_torrent_examples::torrent::Torrent;
use paid_wire::codec::PeerCodec;
use paid_wire::handshake::HANDSHAKE_LEN;
use paid_wire::message::Message;
#[allow(unused_imports)]
// used by processes.rs, not by every test binary that includes this module
pub use payment_channel::test_utils::anvil::{Anvil, missing, repo_root};
use payment_channel::{Address, SimulatedChain};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::Decoder;
use torrent_glue::{CoordinatorEvent, IdentityConfig, LivenessConfig};

/// The Debian interpreter that `python3-libtorrent` is built for.
pub const PYTHON: &str = "/usr/bin/python3";

/// Whether libtorrent can be used. Without it: under CI (env `CI` set) the test fails; locally it
/// prints how to install it and the caller skips.
pub fn libtorrent_available() -> bool {
    let ok = Command::new(PYTHON)
        .args(["-c", "import libtorrent"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    available(
        ok,
        "libtorrent for Python is missing: `sudo apt-get install -y python3-libtorrent` \
         (Debian/Ubuntu; it runs under /usr/bin/python3)",
    )
}

/// A temporary folder for a libtorrent test and its `<dir>/<sub>` path, or `None` (skip; a
/// panic under CI) when libtorrent is missing.
pub fn libtorrent_tempdir(sub: &str) -> Option<(tempfile::TempDir, PathBuf)> {
    let dir = tempdir_if(libtorrent_available())?;
    let path = dir.path().join(sub);
    Some((dir, path))
}

/// `ok`, or, when a tool a test needs is missing (`help` says how to install it): a panic under
/// CI (env `CI` set), else `false` after printing `help` (the caller skips).
pub fn available(ok: bool, help: &str) -> bool {
    if ok {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("{help}");
    }
    eprintln!("SKIPPED: {help}");
    false
}

/// Whether `node` runs and every one of `packages` is installed in `node_modules` (see
/// [`available`]: `help` says how to install them).
pub fn node_packages_available(node_modules: &Path, packages: &[&str], help: &str) -> bool {
    let node = Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let packages = packages
        .iter()
        .all(|p| node_modules.join(p).join("package.json").is_file());
    available(node && packages, help)
}

/// A runtime with one worker thread, for the async helpers ([`relay`]) of a blocking test.
pub fn one_worker_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

/// Deterministic pseudo-random content.
pub fn content(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Writes `data` to `path`, creating folders.
pub fn write(path: &Path, data: &[u8]) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, data).expect("write");
}

/// A child process that prints JSON lines on stdout; killed on drop.
pub struct JsonProc {
    /// The process.
    pub child: Child,
    lines: mpsc::Receiver<Value>,
    /// Every JSON line seen so far.
    pub seen: Vec<Value>,
    name: &'static str,
}

impl JsonProc {
    /// Starts `cmd` with stdout piped (stderr inherited).
    pub fn spawn(name: &'static str, mut cmd: Command) -> Self {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                match serde_json::from_str::<Value>(&line) {
                    Ok(v) => {
                        if tx.send(v).is_err() {
                            break;
                        }
                    }
                    Err(_) => eprintln!("{name}: {line}"),
                }
            }
        });
        Self {
            child,
            lines,
            seen: Vec::new(),
            name,
        }
    }

    /// Waits (at most `timeout`) for a line matching `pred` and returns it.
    pub fn wait_for(&mut self, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Option<Value> {
        if let Some(v) = self.seen.iter().find(|v| pred(v)) {
            return Some(v.clone());
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let v = self.lines.recv_timeout(left).ok()?;
            self.seen.push(v.clone());
            if pred(&v) {
                return Some(v);
            }
        }
    }

    /// Waits for the given event; panics with the lines seen if it does not come.
    pub fn expect_event(&mut self, timeout: Duration, event: &str) -> Value {
        match self.wait_for(timeout, |v| v["event"] == event) {
            Some(v) => v,
            None => panic!(
                "{}: no {event:?} within {timeout:?}; last status: {:?}; last other lines: {:#?}",
                self.name,
                self.last("status"),
                self.seen
                    .iter()
                    .rev()
                    .filter(|v| v["event"] != "status")
                    .take(12)
                    .collect::<Vec<_>>()
            ),
        }
    }

    /// Waits for the given event.
    pub fn wait_event(&mut self, timeout: Duration, event: &str) -> Option<Value> {
        self.wait_for(timeout, |v| v["event"] == event)
    }

    /// Waits (on a blocking thread) at most `limit` for the `exit` event; returns the process
    /// with it.
    pub async fn exit_within(mut self, limit: Duration) -> (Self, Option<Value>) {
        tokio::task::spawn_blocking(move || {
            let exit = self.wait_event(limit, "exit");
            (self, exit)
        })
        .await
        .unwrap()
    }

    /// Waits (60 s at most) for the `listening` line of our `seed`; returns its `addr` and
    /// `account`.
    pub fn listening(&mut self) -> (String, String) {
        let l = self.expect_event(Duration::from_secs(60), "listening");
        let field = |k: &str| l[k].as_str().unwrap().to_owned();
        (field("addr"), field("account"))
    }

    /// Drains lines that already arrived.
    pub fn drain(&mut self) {
        while let Ok(v) = self.lines.try_recv() {
            self.seen.push(v);
        }
    }

    /// Lines with this event.
    pub fn events(&self, event: &str) -> Vec<&Value> {
        self.seen.iter().filter(|v| v["event"] == event).collect()
    }

    /// The last line with this event.
    pub fn last(&self, event: &str) -> Option<&Value> {
        self.seen.iter().rev().find(|v| v["event"] == event)
    }

    /// SIGKILL (what `Child::kill` sends on Unix), then reap.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM (a graceful stop), then wait up to 10 s for the exit (SIGKILL after that).
    pub fn terminate(&mut self) {
        self.terminate_within(Duration::from_secs(10));
    }

    /// SIGTERM, then SIGKILL if the process has not exited within `grace`.
    pub fn terminate_within(&mut self, grace: Duration) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                self.drain();
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill9();
    }
}

impl Drop for JsonProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running `lt_peer.py`.
pub struct LtPeer(pub JsonProc);

impl std::ops::Deref for LtPeer {
    type Target = JsonProc;
    fn deref(&self) -> &JsonProc {
        &self.0
    }
}

impl std::ops::DerefMut for LtPeer {
    fn deref_mut(&mut self) -> &mut JsonProc {
        &mut self.0
    }
}

impl LtPeer {
    /// Starts the helper with `args` (see `lt_peer.py --help`).
    pub fn spawn(args: &[&str]) -> Self {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/lt_peer.py");
        let mut cmd = Command::new(PYTHON);
        cmd.arg(script).args(args);
        Self(JsonProc::spawn("lt_peer", cmd))
    }

    /// The libtorrent listen port (from the first line).
    pub fn port(&mut self) -> u16 {
        let v = self.expect_event(Duration::from_secs(20), "listening");
        v["port"].as_u64().expect("port") as u16
    }

    /// libtorrent downloading `source` (`["--torrent", FILE]` or `["--magnet", LINK]`) into
    /// `save` from `peer`, for at most `secs` seconds, with `extra` options; waits (on a
    /// blocking thread) until it exits and returns it with its `exit` event.
    pub async fn download(
        source: [&str; 2],
        save: &Path,
        peer: SocketAddr,
        secs: u64,
        extra: &[&str],
    ) -> (Self, Option<Value>) {
        let (save, peer, timeout) = (arg(save), peer.to_string(), secs.to_string());
        let mut args = source.to_vec();
        args.extend(["--save", &save, "--mode", "download", "--peer", &peer]);
        args.extend(["--timeout", &timeout]);
        args.extend(extra);
        let lt = Self::spawn(&args);
        let (lt, exit) = lt.0.exit_within(Duration::from_secs(secs + 20)).await;
        (Self(lt), exit)
    }

    /// libtorrent seeding `files` (paths under `<dir>/lt`, with their content): the torrent of
    /// `<dir>/lt/<root>` in pieces of `piece_length` bytes, written to `<dir>/<root>.torrent`.
    /// Returns it once it listens, with its address, the torrent and the `.torrent` file.
    pub fn seed(
        dir: &Path,
        root: &str,
        files: &[(&str, Vec<u8>)],
        piece_length: u32,
    ) -> (Self, SocketAddr, Metainfo, PathBuf) {
        let lt_dir = dir.join("lt");
        for (p, d) in files {
            write(&lt_dir.join(p), d);
        }
        let meta = Metainfo::create(&lt_dir.join(root), piece_length, None).unwrap();
        let torrent_file = dir.join(format!("{root}.torrent"));
        std::fs::write(&torrent_file, meta.to_bytes().unwrap()).unwrap();
        let (torrent, save) = (arg(&torrent_file), arg(&lt_dir));
        let args = ["--torrent", &torrent, "--save", &save, "--mode", "seed"];
        let mut lt = Self::spawn(&[&args[..], &["--timeout", "50"]].concat());
        let addr = SocketAddr::from(([127, 0, 0, 1], lt.port()));
        (lt, addr, meta, torrent_file)
    }

    /// Asserts that the download finished (every piece downloaded and hash-checked) without a
    /// bad piece.
    pub fn assert_finished(&self, exit: Option<Value>) {
        let reason = exit.expect("lt_peer exit")["reason"].clone();
        assert_eq!(reason, "finished", "{:#?}", self.seen);
        assert!(
            self.events("hash_failed").is_empty(),
            "libtorrent saw a bad piece"
        );
    }
}

/// Temporary folder for one test.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

/// A temporary folder for a test that needs a tool, or `None` (skip) when `available` is
/// false.
pub fn tempdir_if(available: bool) -> Option<tempfile::TempDir> {
    available.then(tempdir)
}

/// Path of a file in a folder, as a `String` for command lines.
pub fn arg(p: &Path) -> String {
    p.to_str().expect("utf-8 path").to_owned()
}

/// What a [`RecordingProxy`] saw the client send.
#[derive(Debug, Default, Clone)]
pub struct Recorded {
    /// `(message id, extended id)` of every message from the client, in order.
    pub messages: Vec<(Option<u8>, Option<u8>)>,
    /// Payloads of the client's extended handshakes (extended id 0).
    pub ext_handshakes: Vec<Vec<u8>>,
    /// Whether the client's stream failed to parse.
    pub parse_error: Option<String>,
}

/// A one-connection TCP proxy in front of `target` that parses what the client sends.
pub async fn recording_proxy(target: SocketAddr) -> (SocketAddr, Arc<Mutex<Recorded>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let rec = Arc::new(Mutex::new(Recorded::default()));
    let rec2 = rec.clone();
    tokio::spawn(async move {
        while let Some((client, server)) = next_pair(&listener, || Some(target)).await {
            let (mut cr, cw) = client.into_split();
            let (sr, mut sw) = server.into_split();
            pipe(sr, cw);
            let rec = rec2.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                let mut pending = BytesMut::new();
                let mut codec = PeerCodec::new();
                let mut handshake_done = false;
                while let Some(n) = forward(&mut cr, &mut sw, &mut buf).await {
                    pending.extend_from_slice(&buf[..n]);
                    if !handshake_done {
                        if pending.len() < HANDSHAKE_LEN {
                            continue;
                        }
                        let _ = pending.split_to(HANDSHAKE_LEN);
                        handshake_done = true;
                    }
                    let mut r = rec.lock().expect("lock");
                    loop {
                        match codec.decode(&mut pending) {
                            Ok(Some(msg)) => {
                                let ext = match &msg {
                                    Message::Extended { id, payload } => {
                                        if *id == 0 {
                                            r.ext_handshakes.push(payload.to_vec());
                                        }
                                        Some(*id)
                                    }
                                    _ => None,
                                };
                                r.messages.push((msg.id(), ext));
                            }
                            Ok(None) => break,
                            Err(e) => {
                                r.parse_error = Some(e.to_string());
                                break;
                            }
                        }
                    }
                }
                let _ = sw.shutdown().await;
            });
        }
    });
    (addr, rec)
}

/// `CARGO_BIN_EXE_paid-torrent`.
pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_paid-torrent"))
}

/// `paid-torrent <args…>`, to be run.
pub fn cmd(args: &[&str]) -> Command {
    let mut c = Command::new(binary());
    c.args(args);
    c
}

/// Asserts that a finished `paid-torrent` exited 0 (showing its output if not); returns its
/// stdout.
pub fn assert_success(o: &std::process::Output) -> String {
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{}\n{stdout}\n{stderr}", o.status);
    stdout
}

/// The JSON lines of a command's output (other lines skipped).
pub fn json_lines(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// `paid-torrent get <args…> --timeout 60s --json` run to its end: asserts that it succeeded;
/// returns its stdout and its JSON lines.
pub fn run_get(args: &[&str]) -> (String, Vec<Value>) {
    let o = Command::new(binary())
        .arg("get")
        .args(args)
        .args(["--timeout", "60s", "--json"])
        .output()
        .unwrap();
    let stdout = assert_success(&o);
    let lines = json_lines(&stdout);
    (stdout, lines)
}

/// `get <torrent> --peer <peer> --out <out> <extra…>`.
pub fn get_args(torrent: &str, peer: &str, out: &str, extra: &[&str]) -> Vec<String> {
    let args = ["get", torrent, "--peer", peer, "--out", out];
    args.iter().chain(extra).map(|s| s.to_string()).collect()
}

/// The next client of `listener` with a connection to `target()` for it (a client with no
/// target, or whose target refuses, is dropped); `None` once the listener fails.
async fn next_pair(
    listener: &TcpListener,
    target: impl Fn() -> Option<SocketAddr>,
) -> Option<(TcpStream, TcpStream)> {
    loop {
        let (client, _) = listener.accept().await.ok()?;
        let Some(target) = target() else { continue };
        if let Ok(server) = TcpStream::connect(target).await {
            return Some((client, server));
        }
    }
}

/// Copies `from` to `to` in a task, then shuts `to` down.
fn pipe(mut from: OwnedReadHalf, mut to: OwnedWriteHalf) {
    tokio::spawn(async move {
        let _ = tokio::io::copy(&mut from, &mut to).await;
        let _ = to.shutdown().await;
    });
}

/// Reads what `from` has next into `buf` and writes it to `to`: its length, or `None` at the end
/// of `from` or an error on either side.
async fn forward(
    from: &mut OwnedReadHalf,
    to: &mut OwnedWriteHalf,
    buf: &mut [u8],
) -> Option<usize> {
    let n = match from.read(buf).await {
        Ok(0) | Err(_) => return None,
        Ok(n) => n,
    };
    to.write_all(&buf[..n]).await.ok()?;
    Some(n)
}

/// A throttled TCP relay to whatever address [`Relay::upstream`] names at the time a client
/// connects (a seeder that restarts listens on a new port). What flows from upstream to the
/// client is limited to `rate` bytes per second (a slow link), and the `piece` payload bytes
/// written to the client's socket are counted in [`Relay::received`]: what the client
/// received, whatever either side reports.
pub struct Relay {
    /// Where clients connect.
    pub addr: SocketAddr,
    /// Where the next connection is relayed (`None`: refused).
    pub upstream: Arc<Mutex<Option<SocketAddr>>>,
    /// Piece payload bytes delivered to clients, whole blocks only.
    pub received: Arc<std::sync::atomic::AtomicU64>,
}

/// Starts a [`Relay`] (call inside a tokio runtime).
pub async fn relay(rate: u64) -> Relay {
    use std::sync::atomic::Ordering;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let upstream: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
    let received = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (up, counted) = (upstream.clone(), received.clone());
    tokio::spawn(async move {
        while let Some((client, server)) = next_pair(&listener, || *up.lock().unwrap()).await {
            let (cr, mut cw) = client.into_split();
            let (mut sr, sw) = server.into_split();
            pipe(cr, sw);
            let counted = counted.clone();
            tokio::spawn(async move {
                let start = tokio::time::Instant::now();
                let mut sent = 0u64;
                let mut buf = vec![0u8; 16 * 1024];
                // The stream as the client sees it: the handshake, then frames.
                let (mut stream, mut codec) = (BytesMut::new(), PeerCodec::new());
                let mut handshake_left = HANDSHAKE_LEN;
                while let Some(n) = forward(&mut sr, &mut cw, &mut buf).await {
                    let skip = handshake_left.min(n);
                    handshake_left -= skip;
                    stream.extend_from_slice(&buf[skip..n]);
                    while let Ok(Some(message)) = codec.decode(&mut stream) {
                        if let Message::Piece { data, .. } = message {
                            counted.fetch_add(data.len() as u64, Ordering::SeqCst);
                        }
                    }
                    sent += n as u64;
                    let due = start + Duration::from_secs_f64(sent as f64 / rate as f64);
                    tokio::time::sleep_until(due).await;
                }
                let _ = cw.shutdown().await;
            });
        }
    });
    Relay {
        addr,
        upstream,
        received,
    }
}

/// Anvil dev account `i`'s secret key (they only ever hold dev-chain ether).
pub fn dev_key(i: usize) -> &'static str {
    payment_channel::test_utils::anvil::DEV_KEYS[i]
}

/// A decimal amount of an event line (a JSON string or number).
pub fn num(v: &Value, key: &str) -> u128 {
    match &v[key] {
        Value::String(s) => s.parse().expect("decimal"),
        other => u128::from(other.as_u64().unwrap_or_else(|| panic!("{key} in {v}"))),
    }
}

/// The Nitro contract artifacts folder as a command-line argument, or `None` (skip; a panic
/// under CI) when it is missing.
pub fn nitro_artifacts() -> Option<String> {
    payment_channel::test_utils::anvil::artifacts_dir().map(|d| arg(&d))
}

/// A dev chain for processes to share (anvil mining a block every second, like a real chain)
/// and the contract artifacts folder as an argument; `None` (skip; a panic under CI) when
/// either is missing.
pub fn shared_chain() -> Option<(Anvil, String)> {
    let anvil = Anvil::start_with(&["--block-time", "1"])?;
    let artifacts = nitro_artifacts()?;
    Some((anvil, artifacts))
}

/// `size` bytes of generated content (from `seed`) in `<dir>/seed/<name>`, and a .torrent for
/// it made by `paid-torrent create` in `<dir>/<name>.torrent`. Returns the content folder, the
/// content and the .torrent's path.
pub fn seeded_torrent(
    dir: &Path,
    name: &str,
    size: usize,
    seed: u64,
) -> (PathBuf, Vec<u8>, String) {
    let seed_dir = dir.join("seed");
    let data = content(size, seed);
    write(&seed_dir.join(name), &data);
    let torrent = arg(&dir.join(format!("{name}.torrent")));
    let status = Command::new(binary())
        .args(["create", &arg(&seed_dir.join(name)), "-o", &torrent])
        .status()
        .expect("create");
    assert!(status.success(), "paid-torrent create failed");
    (seed_dir, data, torrent)
}

/// `seed <torrent> --dir <seed_dir> --listen 127.0.0.1:0 <extra…>`.
pub fn seed_args(torrent: &str, seed_dir: &Path, extra: &[&str]) -> Vec<String> {
    let seed_dir = arg(seed_dir);
    let args = [
        "seed",
        torrent,
        "--dir",
        &seed_dir,
        "--listen",
        "127.0.0.1:0",
    ];
    args.iter().chain(extra).map(|s| s.to_string()).collect()
}

/// `paid-torrent <command> --json --rpc <anvil> --key <key> --artifacts <artifacts> <args…>`.
pub fn chain_cmd<S: AsRef<std::ffi::OsStr>>(
    anvil: &Anvil,
    artifacts: &str,
    key: &str,
    args: &[S],
) -> Command {
    let mut c = Command::new(binary());
    // The subcommand first: the chain options belong to `seed` and `get`.
    let (command, rest) = args.split_first().expect("a subcommand");
    c.arg(command);
    c.args([
        "--json",
        "--rpc",
        &anvil.url,
        "--key",
        key,
        "--artifacts",
        artifacts,
    ]);
    c.args(rest);
    c
}

/// A Debian `opentracker` on 127.0.0.1 (HTTP and UDP on one port) in whitelist mode, killed on
/// drop. Debian builds it with a whitelist: only the info-hashes given are tracked.
pub struct OpenTracker {
    child: Child,
    /// The port (TCP and UDP).
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl OpenTracker {
    /// Starts a tracker for `info_hashes` (hex) on a free port; `None` (skip; a panic under CI)
    /// when opentracker is not installed.
    pub fn start(port: u16, info_hashes: &[String]) -> Option<Self> {
        let bin = ["/usr/bin/opentracker", "/usr/sbin/opentracker"]
            .into_iter()
            .find(|p| Path::new(p).exists());
        let help = "opentracker is missing: `sudo apt-get install -y opentracker` \
                    (scripts/ci-install.sh installs it)";
        if !available(bin.is_some(), help) {
            return None;
        }
        let bin = bin.expect("checked by `available`");
        // It changes into (as root: chroots into) the folder and reads the whitelist there,
        // possibly as `nobody`.
        let dir = tempdir();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
                .expect("chmod");
        }
        std::fs::write(dir.path().join("whitelist"), info_hashes.join("\n") + "\n")
            .expect("whitelist");
        let port_s = port.to_string();
        let child = Command::new(bin)
            .args(["-i", "127.0.0.1", "-p", &port_s, "-P", &port_s, "-d"])
            .arg(dir.path())
            .args(["-w", "whitelist"])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn opentracker");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "opentracker did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(Self {
            child,
            port,
            _dir: dir,
        })
    }

    /// A port free for both TCP and UDP on 127.0.0.1 (at the time of asking).
    pub fn free_port() -> u16 {
        loop {
            let t = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            let port = t.local_addr().expect("addr").port();
            if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
                return port;
            }
        }
    }
}

impl Drop for OpenTracker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Like [`seeded_torrent`], with `create --announce` for each tracker URL.
pub fn seeded_torrent_with(
    dir: &Path,
    name: &str,
    size: usize,
    seed: u64,
    announce: &[String],
) -> (PathBuf, Vec<u8>, String) {
    let seed_dir = dir.join("seed");
    let data = content(size, seed);
    write(&seed_dir.join(name), &data);
    let torrent = arg(&dir.join(format!("{name}.torrent")));
    let mut cmd = Command::new(binary());
    cmd.args(["create", &arg(&seed_dir.join(name)), "-o", &torrent]);
    for a in announce {
        cmd.args(["--announce", a]);
    }
    assert!(cmd.status().expect("create").success(), "create failed");
    (seed_dir, data, torrent)
}

/// The info-hash (hex) of a .torrent, from `paid-torrent info --json`.
pub fn info_hash(torrent: &str) -> String {
    let o = Command::new(binary())
        .args(["info", torrent, "--json"])
        .output()
        .expect("info");
    assert!(o.status.success(), "info failed");
    let v: Value = serde_json::from_slice(&o.stdout).expect("info JSON");
    v["info_hash"].as_str().expect("info_hash").to_owned()
}

/// A wallet paying in the native coin on a simulated chain of its own (libtorrent never pays).
pub async fn native_wallet_on_its_own_chain() -> Wallet {
    Wallet::open(
        &ChainChoice::Simulated(SimulatedChain::new()),
        None,
        None,
        Address::ZERO,
    )
    .await
    .unwrap()
}

/// `data` as `<dir>/seed/movie.bin`, its torrent in pieces of `piece_length` bytes written to
/// `<dir>/movie.torrent`, and the complete torrent opened for seeding.
pub fn seed_movie(dir: &Path, data: &[u8], piece_length: u32) -> (Arc<Torrent>, PathBuf) {
    let seed_dir = dir.join("seed");
    write(&seed_dir.join("movie.bin"), data);
    let meta = Metainfo::create(&seed_dir.join("movie.bin"), piece_length, None).unwrap();
    let torrent_file = dir.join("movie.torrent");
    std::fs::write(&torrent_file, meta.to_bytes().unwrap()).unwrap();
    let torrent =
        Torrent::open(meta, &seed_dir, OpenMode::ReadOnly, Strategy::RarestFirst).unwrap();
    assert!(torrent.is_complete());
    (torrent, torrent_file)
}

/// [`seed_movie`] served for free by the plain peer loop on 127.0.0.1 until the returned task
/// is aborted: the torrent, its address, the `.torrent` file and the task.
pub async fn free_seeder(
    dir: &Path,
    data: &[u8],
    piece_length: u32,
) -> (
    Arc<Torrent>,
    SocketAddr,
    PathBuf,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let (torrent, torrent_file) = seed_movie(dir, data, piece_length);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let serve = session::serve(torrent.clone(), listener, PeerConfig::default(), None);
    (torrent, addr, torrent_file, tokio::spawn(serve))
}

/// A paid seeder (glue adapter) for `data`, on the simulated chain; `free_bytes` for peers
/// without the extension.
pub async fn paid_seeder(
    dir: &Path,
    data: &[u8],
    free_bytes: Option<u64>,
) -> (PaidNode, SocketAddr, PathBuf) {
    let (torrent, torrent_file) = seed_movie(dir, data, 256 << 10);
    let (node, addr) = paid_seller(torrent, free_bytes, IdentityConfig::default()).await;
    (node, addr, torrent_file)
}

/// `torrent` sold (1 wei per byte, no trust) by a node with the `identity` rules on a
/// simulated chain of its own, accepting peers on 127.0.0.1; `free_bytes` for peers without
/// the extension. Returns the node and its address.
pub async fn paid_seller(
    torrent: Arc<Torrent>,
    free_bytes: Option<u64>,
    identity: IdentityConfig,
) -> (PaidNode, SocketAddr) {
    let sell = SellTerms {
        price_per_byte: 1,
        trust_bytes: 0,
        deposit: 1 << 40,
        free_bytes,
        challenge_duration: 600,
    };
    let (node, _) = start_paid(torrent, Some(sell), None, identity).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let n = node.node.clone();
    tokio::spawn(async move { n.accept(listener).await });
    (node, addr)
}

/// `torrent` bought (at most 1 wei per byte, a budget of 2^40) by a node with the `identity`
/// rules on a simulated chain of its own, paying `window` bytes at a time and at most `window`
/// ahead.
pub async fn paid_buyer(torrent: Arc<Torrent>, window: u64, identity: IdentityConfig) -> PaidNode {
    let buy = BuyTerms {
        budget: 1 << 40,
        max_price_per_byte: 1,
        granularity_bytes: window,
        max_pay_ahead_bytes: window,
    };
    start_paid(torrent, None, Some(buy), identity).await.0
}

async fn start_paid(
    torrent: Arc<Torrent>,
    sell: Option<SellTerms>,
    buy: Option<BuyTerms>,
    identity: IdentityConfig,
) -> (
    PaidNode,
    tokio::sync::mpsc::UnboundedReceiver<CoordinatorEvent>,
) {
    PaidNode::start_with_hub(
        torrent,
        &native_wallet_on_its_own_chain().await,
        sell,
        buy,
        LivenessConfig::default(),
        identity,
        None,
    )
    .await
    .unwrap()
}
