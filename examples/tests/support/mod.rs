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
use paid_wire::codec::PeerCodec;
use paid_wire::handshake::HANDSHAKE_LEN;
use paid_wire::message::Message;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::Decoder;

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
    if ok {
        return true;
    }
    let help = "libtorrent for Python is missing: `sudo apt-get install -y python3-libtorrent` \
                (Debian/Ubuntu; it runs under /usr/bin/python3)";
    if std::env::var_os("CI").is_some() {
        panic!("{help}");
    }
    eprintln!("SKIPPED: {help}");
    false
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

/// A running `lt_peer.py`; killed on drop.
pub struct LtPeer {
    child: Child,
    lines: mpsc::Receiver<Value>,
    /// Every JSON line seen so far.
    pub seen: Vec<Value>,
}

impl LtPeer {
    /// Starts the helper with `args` (see `lt_peer.py --help`).
    pub fn spawn(args: &[&str]) -> Self {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/lt_peer.py");
        let mut child = Command::new(PYTHON)
            .arg(script)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn lt_peer.py");
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
                    Err(_) => eprintln!("lt_peer: {line}"),
                }
            }
        });
        Self {
            child,
            lines,
            seen: Vec::new(),
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

    /// Waits for the given event.
    pub fn wait_event(&mut self, timeout: Duration, event: &str) -> Option<Value> {
        self.wait_for(timeout, |v| v["event"] == event)
    }

    /// Drains lines that already arrived.
    pub fn drain(&mut self) {
        while let Ok(v) = self.lines.try_recv() {
            self.seen.push(v);
        }
    }

    /// The libtorrent listen port (from the first line).
    pub fn port(&mut self) -> u16 {
        let v = self
            .wait_event(Duration::from_secs(20), "listening")
            .expect("lt_peer did not start");
        v["port"].as_u64().expect("port") as u16
    }

    /// Lines with this event.
    pub fn events(&self, event: &str) -> Vec<&Value> {
        self.seen.iter().filter(|v| v["event"] == event).collect()
    }
}

impl Drop for LtPeer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Temporary folder for one test.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
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
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = TcpStream::connect(target).await else {
                continue;
            };
            let (mut cr, mut cw) = client.into_split();
            let (mut sr, mut sw) = server.into_split();
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut sr, &mut cw).await;
                let _ = cw.shutdown().await;
            });
            let rec = rec2.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                let mut pending = BytesMut::new();
                let mut codec = PeerCodec::new();
                let mut handshake_done = false;
                loop {
                    let n = match cr.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    if sw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
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
                                    Message::Extended { id, .. } => Some(*id),
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
