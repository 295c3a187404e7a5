//! Tracker clients: HTTP announce (BEP 3, compact peers of BEP 23, BEP 7 `peers6`) and scrape
//! (the `announce` → `scrape` convention of BEP 48), UDP announce and scrape (BEP 15), and the
//! announce list's tiers (BEP 12).
//!
//! HTTP goes through `reqwest` without TLS: `https://` trackers are refused with a clear error
//! (the client is built without a TLS stack, like the chain connection).
//!
//! ```
//! use paid_torrent_examples::tracker::TrackerUrl;
//! assert!(TrackerUrl::parse("http://127.0.0.1:6969/announce").is_ok());
//! assert!(TrackerUrl::parse("udp://tracker.example:1337").is_ok());
//! assert!(TrackerUrl::parse("wss://tracker.example").is_err());
//! ```

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use bendy::decoding::{Decoder, DictDecoder, Object};
use percent_encoding::{NON_ALPHANUMERIC, percent_encode};
use tokio::net::UdpSocket;
use url::Url;

use crate::metainfo::HASH_LEN;

/// How long one HTTP request or one UDP exchange may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// UDP retransmissions before giving up (BEP 15 waits 15 × 2^n s; a command-line client
/// that has other trackers to try waits [`UDP_RETRY`] each time instead).
pub const UDP_TRIES: u32 = 3;

/// Wait before a UDP request is sent again.
pub const UDP_RETRY: Duration = Duration::from_secs(3);

/// Largest tracker response read (bytes).
const MAX_RESPONSE: usize = 1 << 20;

/// BEP 15's magic `protocol_id` of a connect request.
const UDP_PROTOCOL_ID: u64 = 0x0417_2710_1980;

/// A tracker's address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrackerUrl {
    /// `http://…` announce URL.
    Http(Url),
    /// `udp://host:port`.
    Udp {
        /// Host name or IP address.
        host: String,
        /// Port.
        port: u16,
    },
}

impl fmt::Display for TrackerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Http(u) => write!(f, "{u}"),
            Self::Udp { host, port } => write!(f, "udp://{host}:{port}"),
        }
    }
}

impl TrackerUrl {
    /// Parses an announce URL (`http://` or `udp://`).
    pub fn parse(s: &str) -> Result<Self, TrackerError> {
        let url = Url::parse(s).map_err(|e| TrackerError::Url(format!("{s}: {e}")))?;
        match url.scheme() {
            "http" => Ok(Self::Http(url)),
            "udp" => {
                let host = url
                    .host_str()
                    .ok_or_else(|| TrackerError::Url(format!("{s}: no host")))?;
                let port = url
                    .port()
                    .ok_or_else(|| TrackerError::Url(format!("{s}: no port")))?;
                Ok(Self::Udp {
                    host: host
                        .trim_start_matches('[')
                        .trim_end_matches(']')
                        .to_owned(),
                    port,
                })
            }
            "https" => Err(TrackerError::Url(format!(
                "{s}: https trackers are not supported (no TLS in this client)"
            ))),
            other => Err(TrackerError::Url(format!(
                "{s}: scheme `{other}` (http or udp)"
            ))),
        }
    }
}

/// A tracker request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrackerError {
    /// The URL is not a tracker we can use.
    #[error("bad tracker URL {0}")]
    Url(String),
    /// The tracker could not be reached, or did not answer in time.
    #[error("unreachable")]
    Unreachable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The HTTP tracker answered with an error status.
    #[error("HTTP status {0}")]
    Status(u16),
    /// The tracker refused the request (`failure reason`, or a UDP error action).
    #[error("refused: {0}")]
    Refused(String),
    /// The answer is not a tracker response.
    #[error("malformed response: {0}")]
    Malformed(String),
    /// No scrape URL can be derived from this announce URL (BEP 48).
    #[error("this tracker has no scrape URL")]
    NoScrape,
}

impl From<bendy::decoding::Error> for TrackerError {
    fn from(e: bendy::decoding::Error) -> Self {
        Self::Malformed(e.to_string())
    }
}

/// The `event` of an announce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnnounceEvent {
    /// A regular re-announce.
    None,
    /// The first announce.
    Started,
    /// The download just completed.
    Completed,
    /// We are leaving the swarm.
    Stopped,
}

impl AnnounceEvent {
    fn http(self) -> Option<&'static str> {
        match self {
            Self::None => None,
            Self::Started => Some("started"),
            Self::Completed => Some("completed"),
            Self::Stopped => Some("stopped"),
        }
    }

    fn udp(self) -> u32 {
        match self {
            Self::None => 0,
            Self::Completed => 1,
            Self::Started => 2,
            Self::Stopped => 3,
        }
    }
}

/// What we tell a tracker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Announce {
    /// The torrent.
    pub info_hash: [u8; HASH_LEN],
    /// Our peer id.
    pub peer_id: [u8; 20],
    /// The port we accept peers on (0: we do not).
    pub port: u16,
    /// Payload bytes uploaded since `started`.
    pub uploaded: u64,
    /// Payload bytes downloaded since `started`.
    pub downloaded: u64,
    /// Bytes we still need.
    pub left: u64,
    /// Why we announce.
    pub event: AnnounceEvent,
    /// How many peers we would like.
    pub numwant: u32,
    /// A random number identifying us across IP changes.
    pub key: u32,
}

/// A tracker's answer to an announce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnounceResponse {
    /// When to announce again.
    pub interval: Duration,
    /// Not before this (HTTP `min interval`).
    pub min_interval: Option<Duration>,
    /// Peers of the swarm.
    pub peers: Vec<SocketAddr>,
    /// Seeders, if told.
    pub seeders: Option<u32>,
    /// Leechers, if told.
    pub leechers: Option<u32>,
    /// The tracker's `warning message`.
    pub warning: Option<String>,
}

/// A tracker's figures for one torrent (scrape).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ScrapeStats {
    /// Seeders.
    pub complete: u32,
    /// Completed downloads reported (`completed` events).
    pub downloaded: u32,
    /// Leechers.
    pub incomplete: u32,
}

/// One tracker, with its HTTP client or its UDP connection id.
#[derive(Debug)]
pub struct Tracker {
    url: TrackerUrl,
    http: reqwest::Client,
    udp_connection: Option<(u64, Instant, SocketAddr)>,
}

impl Tracker {
    /// A client for `url`.
    pub fn new(url: TrackerUrl) -> Self {
        Self {
            url,
            http: reqwest::Client::builder()
                .timeout(REQUEST_TIMEOUT)
                .user_agent(concat!("paid-torrent/", env!("CARGO_PKG_VERSION")))
                .build()
                .unwrap_or_default(),
            udp_connection: None,
        }
    }

    /// The tracker's URL.
    pub fn url(&self) -> &TrackerUrl {
        &self.url
    }

    /// Announces `a`, returning the swarm's peers.
    pub async fn announce(&mut self, a: &Announce) -> Result<AnnounceResponse, TrackerError> {
        tracing::debug!(tracker = %self.url, event = ?a.event, left = a.left, "announce");
        match self.url.clone() {
            TrackerUrl::Http(url) => self.http_announce(&url, a).await,
            TrackerUrl::Udp { host, port } => self.udp_announce(&host, port, a).await,
        }
    }

    /// Asks for the torrent's figures.
    pub async fn scrape(&mut self, info_hash: [u8; HASH_LEN]) -> Result<ScrapeStats, TrackerError> {
        match self.url.clone() {
            TrackerUrl::Http(url) => self.http_scrape(&url, info_hash).await,
            TrackerUrl::Udp { host, port } => self.udp_scrape(&host, port, info_hash).await,
        }
    }

    async fn http_get(&self, url: &Url, query: String) -> Result<Vec<u8>, TrackerError> {
        let mut text = url.to_string();
        text.push(if url.query().is_some() { '&' } else { '?' });
        text.push_str(&query);
        let resp = self
            .http
            .get(&text)
            .send()
            .await
            .map_err(|e| TrackerError::Unreachable(e.without_url().into()))?;
        if !resp.status().is_success() {
            return Err(TrackerError::Status(resp.status().as_u16()));
        }
        let body = resp
            .bytes()
            .await
            .map_err(|e| TrackerError::Unreachable(e.without_url().into()))?;
        if body.len() > MAX_RESPONSE {
            return Err(TrackerError::Malformed("response too large".into()));
        }
        Ok(body.to_vec())
    }

    async fn http_announce(
        &self,
        url: &Url,
        a: &Announce,
    ) -> Result<AnnounceResponse, TrackerError> {
        let mut q = format!(
            "info_hash={}&peer_id={}&port={}&uploaded={}&downloaded={}&left={}&compact=1&numwant={}&key={:08x}",
            percent_encode(&a.info_hash, NON_ALPHANUMERIC),
            percent_encode(&a.peer_id, NON_ALPHANUMERIC),
            a.port,
            a.uploaded,
            a.downloaded,
            a.left,
            a.numwant,
            a.key,
        );
        if let Some(e) = a.event.http() {
            q.push_str("&event=");
            q.push_str(e);
        }
        let body = self.http_get(url, q).await?;
        parse_http_announce(&body)
    }

    async fn http_scrape(
        &self,
        url: &Url,
        info_hash: [u8; HASH_LEN],
    ) -> Result<ScrapeStats, TrackerError> {
        let scrape = scrape_url(url).ok_or(TrackerError::NoScrape)?;
        let q = format!("info_hash={}", percent_encode(&info_hash, NON_ALPHANUMERIC));
        let body = self.http_get(&scrape, q).await?;
        parse_http_scrape(&body, &info_hash)
    }

    /// One UDP request/response exchange with retransmissions; `check` accepts the response
    /// of our transaction.
    async fn udp_exchange(
        socket: &UdpSocket,
        request: &[u8],
        transaction: u32,
    ) -> Result<Vec<u8>, TrackerError> {
        let mut buf = vec![0u8; 65536];
        for _ in 0..UDP_TRIES {
            socket
                .send(request)
                .await
                .map_err(|e| TrackerError::Unreachable(e.into()))?;
            let deadline = tokio::time::Instant::now() + UDP_RETRY;
            loop {
                let n = match tokio::time::timeout_at(deadline, socket.recv(&mut buf)).await {
                    Err(_) => break,
                    Ok(Err(e)) => return Err(TrackerError::Unreachable(e.into())),
                    Ok(Ok(n)) => n,
                };
                let r = &buf[..n];
                if r.len() < 8 || be_u32(&r[4..8]) != transaction {
                    continue; // another transaction's, or garbage
                }
                if be_u32(&r[0..4]) == 3 {
                    return Err(TrackerError::Refused(
                        String::from_utf8_lossy(&r[8..]).into_owned(),
                    ));
                }
                return Ok(r.to_vec());
            }
        }
        Err(TrackerError::Unreachable(
            format!("no answer after {UDP_TRIES} tries").into(),
        ))
    }

    async fn udp_socket(
        &mut self,
        host: &str,
        port: u16,
    ) -> Result<(UdpSocket, u64), TrackerError> {
        let addr = match self.udp_connection {
            Some((_, _, addr)) => addr,
            None => tokio::net::lookup_host((host, port))
                .await
                .map_err(|e| TrackerError::Unreachable(e.into()))?
                .next()
                .ok_or_else(|| TrackerError::Unreachable(format!("{host}: no address").into()))?,
        };
        let local: SocketAddr = if addr.is_ipv4() {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let socket = UdpSocket::bind(local)
            .await
            .map_err(|e| TrackerError::Unreachable(e.into()))?;
        socket
            .connect(addr)
            .await
            .map_err(|e| TrackerError::Unreachable(e.into()))?;
        // A connection id is valid for a minute (BEP 15).
        if let Some((id, at, a)) = self.udp_connection
            && a == addr
            && at.elapsed() < Duration::from_secs(55)
        {
            return Ok((socket, id));
        }
        let tid: u32 = rand::random();
        let mut req = Vec::with_capacity(16);
        req.extend_from_slice(&UDP_PROTOCOL_ID.to_be_bytes());
        req.extend_from_slice(&0u32.to_be_bytes());
        req.extend_from_slice(&tid.to_be_bytes());
        let r = Self::udp_exchange(&socket, &req, tid).await?;
        if r.len() < 16 || be_u32(&r[0..4]) != 0 {
            return Err(TrackerError::Malformed("bad connect response".into()));
        }
        let id = u64::from_be_bytes(r[8..16].try_into().unwrap_or_default());
        self.udp_connection = Some((id, Instant::now(), addr));
        Ok((socket, id))
    }

    /// One BEP 15 request of `action` (connection id, action, transaction id, then `body`):
    /// the answer, checked to be that action's and at least 20 bytes long, and whether it came
    /// over IPv6. A failure forgets the connection id.
    async fn udp_request(
        &mut self,
        host: &str,
        port: u16,
        action: u32,
        body: &[u8],
    ) -> Result<(Vec<u8>, bool), TrackerError> {
        let (socket, connection) = self.udp_socket(host, port).await?;
        let tid: u32 = rand::random();
        let mut req = Vec::with_capacity(16 + body.len());
        req.extend_from_slice(&connection.to_be_bytes());
        req.extend_from_slice(&action.to_be_bytes());
        req.extend_from_slice(&tid.to_be_bytes());
        req.extend_from_slice(body);
        let r = Self::udp_exchange(&socket, &req, tid)
            .await
            .inspect_err(|_| {
                self.udp_connection = None;
            })?;
        if r.len() < 20 || be_u32(&r[0..4]) != action {
            let what = if action == 1 { "announce" } else { "scrape" };
            return Err(TrackerError::Malformed(format!("bad {what} response")));
        }
        Ok((r, socket.peer_addr().is_ok_and(|a| a.is_ipv6())))
    }

    async fn udp_announce(
        &mut self,
        host: &str,
        port: u16,
        a: &Announce,
    ) -> Result<AnnounceResponse, TrackerError> {
        let mut body = Vec::with_capacity(82);
        body.extend_from_slice(&a.info_hash);
        body.extend_from_slice(&a.peer_id);
        body.extend_from_slice(&a.downloaded.to_be_bytes());
        body.extend_from_slice(&a.left.to_be_bytes());
        body.extend_from_slice(&a.uploaded.to_be_bytes());
        body.extend_from_slice(&a.event.udp().to_be_bytes());
        body.extend_from_slice(&0u32.to_be_bytes()); // IP: the sender's
        body.extend_from_slice(&a.key.to_be_bytes());
        body.extend_from_slice(&i32::try_from(a.numwant).unwrap_or(-1).to_be_bytes());
        body.extend_from_slice(&a.port.to_be_bytes());
        let (r, ipv6) = self.udp_request(host, port, 1, &body).await?;
        Ok(AnnounceResponse {
            interval: Duration::from_secs(u64::from(be_u32(&r[8..12]))),
            min_interval: None,
            leechers: Some(be_u32(&r[12..16])),
            seeders: Some(be_u32(&r[16..20])),
            peers: if ipv6 {
                compact_peers6(&r[20..])
            } else {
                compact_peers(&r[20..])
            },
            warning: None,
        })
    }

    async fn udp_scrape(
        &mut self,
        host: &str,
        port: u16,
        info_hash: [u8; HASH_LEN],
    ) -> Result<ScrapeStats, TrackerError> {
        let (r, _) = self.udp_request(host, port, 2, &info_hash).await?;
        Ok(ScrapeStats {
            complete: be_u32(&r[8..12]),
            downloaded: be_u32(&r[12..16]),
            incomplete: be_u32(&r[16..20]),
        })
    }
}

/// The trackers of a torrent in BEP 12 tiers: each announce goes to the first tracker of each
/// tier that answers, which then moves to the front of its tier.
#[derive(Debug)]
pub struct Tiers {
    tiers: Vec<Vec<Tracker>>,
}

impl Tiers {
    /// The tiers of `urls` (each inner list a tier, in order); URLs we cannot use are returned
    /// apart, with why.
    pub fn new(urls: &[Vec<String>]) -> (Self, Vec<TrackerError>) {
        let mut bad = Vec::new();
        let tiers = urls
            .iter()
            .map(|tier| {
                tier.iter()
                    .filter_map(|u| TrackerUrl::parse(u).map_err(|e| bad.push(e)).ok())
                    .map(Tracker::new)
                    .collect::<Vec<_>>()
            })
            .filter(|t| !t.is_empty())
            .collect();
        (Self { tiers }, bad)
    }

    /// Whether there is no usable tracker.
    pub fn is_empty(&self) -> bool {
        self.tiers.is_empty()
    }

    /// Announces `a` in every tier; one result per tracker tried, in order.
    pub async fn announce(
        &mut self,
        a: &Announce,
    ) -> Vec<(TrackerUrl, Result<AnnounceResponse, TrackerError>)> {
        let mut results = Vec::new();
        for tier in &mut self.tiers {
            for i in 0..tier.len() {
                let r = tier[i].announce(a).await;
                let ok = r.is_ok();
                results.push((tier[i].url().clone(), r));
                if ok {
                    let t = tier.remove(i);
                    tier.insert(0, t);
                    break;
                }
            }
        }
        results
    }

    /// Every tracker, tier by tier.
    pub fn trackers_mut(&mut self) -> impl Iterator<Item = &mut Tracker> {
        self.tiers.iter_mut().flatten()
    }
}

/// BEP 48: the scrape URL is the announce URL with its last path component's `announce`
/// replaced by `scrape`; `None` if it does not start with `announce`.
pub fn scrape_url(announce: &Url) -> Option<Url> {
    let path = announce.path();
    let (dir, last) = path.rsplit_once('/')?;
    let rest = last.strip_prefix("announce")?;
    let mut u = announce.clone();
    u.set_path(&format!("{dir}/scrape{rest}"));
    Some(u)
}

fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes(b[..4].try_into().unwrap_or_default())
}

/// BEP 23: 6 bytes per IPv4 peer (address, port, big-endian); port 0 entries are skipped.
pub fn compact_peers(b: &[u8]) -> Vec<SocketAddr> {
    b.chunks_exact(6)
        .map(|c| {
            let ip = Ipv4Addr::new(c[0], c[1], c[2], c[3]);
            SocketAddr::new(IpAddr::V4(ip), u16::from_be_bytes([c[4], c[5]]))
        })
        .filter(|a| a.port() != 0)
        .collect()
}

/// BEP 7: 18 bytes per IPv6 peer.
pub fn compact_peers6(b: &[u8]) -> Vec<SocketAddr> {
    b.chunks_exact(18)
        .map(|c| {
            let mut ip = [0u8; 16];
            ip.copy_from_slice(&c[..16]);
            SocketAddr::new(IpAddr::V6(ip.into()), u16::from_be_bytes([c[16], c[17]]))
        })
        .filter(|a| a.port() != 0)
        .collect()
}

fn text(o: Object<'_, '_>) -> Result<String, TrackerError> {
    let b = o
        .try_into_bytes()
        .map_err(|_| TrackerError::Malformed("expected a string".into()))?;
    Ok(String::from_utf8_lossy(b).into_owned())
}

fn int(o: Object<'_, '_>) -> Result<i64, TrackerError> {
    o.try_into_integer()
        .map_err(|_| TrackerError::Malformed("expected an integer".into()))?
        .parse()
        .map_err(|_| TrackerError::Malformed("integer out of range".into()))
}

fn secs(v: i64) -> Duration {
    Duration::from_secs(u64::try_from(v).unwrap_or(0))
}

fn count(v: i64) -> u32 {
    u32::try_from(v.max(0)).unwrap_or(u32::MAX)
}

/// The top-level dictionary of a tracker's HTTP response.
fn response_dict<'obj, 'ser>(
    dec: &'obj mut Decoder<'ser>,
) -> Result<DictDecoder<'obj, 'ser>, TrackerError> {
    dec.next_object()?
        .ok_or_else(|| TrackerError::Malformed("empty".into()))?
        .try_into_dictionary()
        .map_err(|_| TrackerError::Malformed("not a dictionary".into()))
}

/// Parses an HTTP announce response (compact or dictionary peers).
pub fn parse_http_announce(body: &[u8]) -> Result<AnnounceResponse, TrackerError> {
    let mut dec = Decoder::new(body).with_max_depth(8);
    let mut dict = response_dict(&mut dec)?;
    let mut r = AnnounceResponse {
        interval: Duration::ZERO,
        min_interval: None,
        peers: Vec::new(),
        seeders: None,
        leechers: None,
        warning: None,
    };
    let mut interval = None;
    while let Some((k, v)) = dict.next_pair()? {
        match k {
            b"failure reason" => return Err(TrackerError::Refused(text(v)?)),
            b"warning message" => r.warning = Some(text(v)?),
            b"interval" => interval = Some(secs(int(v)?)),
            b"min interval" => r.min_interval = Some(secs(int(v)?)),
            b"complete" => r.seeders = Some(count(int(v)?)),
            b"incomplete" => r.leechers = Some(count(int(v)?)),
            b"peers" => match v {
                Object::Bytes(b) => r.peers.extend(compact_peers(b)),
                Object::List(mut l) => {
                    while let Some(p) = l.next_object()? {
                        if let Some(a) = dict_peer(p)? {
                            r.peers.push(a);
                        }
                    }
                }
                _ => return Err(TrackerError::Malformed("`peers`".into())),
            },
            b"peers6" => {
                let b = v
                    .try_into_bytes()
                    .map_err(|_| TrackerError::Malformed("`peers6`".into()))?;
                r.peers.extend(compact_peers6(b));
            }
            _ => {}
        }
    }
    r.interval = interval.ok_or_else(|| TrackerError::Malformed("no `interval`".into()))?;
    Ok(r)
}

/// A BEP 3 peer dictionary (`ip`, `port`); `None` if its `ip` is a name or missing.
fn dict_peer(o: Object<'_, '_>) -> Result<Option<SocketAddr>, TrackerError> {
    let mut d = o
        .try_into_dictionary()
        .map_err(|_| TrackerError::Malformed("peer is not a dictionary".into()))?;
    let (mut ip, mut port) = (None, None);
    while let Some((k, v)) = d.next_pair()? {
        match k {
            b"ip" => ip = text(v)?.parse::<IpAddr>().ok(),
            b"port" => port = u16::try_from(int(v)?).ok(),
            _ => {}
        }
    }
    Ok(ip.zip(port).map(|(ip, port)| SocketAddr::new(ip, port)))
}

/// Parses an HTTP scrape response for `info_hash` (all zeros if the tracker does not know it).
pub fn parse_http_scrape(
    body: &[u8],
    info_hash: &[u8; HASH_LEN],
) -> Result<ScrapeStats, TrackerError> {
    let mut dec = Decoder::new(body).with_max_depth(8);
    let mut dict = response_dict(&mut dec)?;
    let mut stats = ScrapeStats::default();
    while let Some((k, v)) = dict.next_pair()? {
        match k {
            b"failure reason" => return Err(TrackerError::Refused(text(v)?)),
            b"files" => {
                let mut files = v
                    .try_into_dictionary()
                    .map_err(|_| TrackerError::Malformed("`files`".into()))?;
                while let Some((hash, f)) = files.next_pair()? {
                    if hash != info_hash {
                        continue;
                    }
                    let mut f = f
                        .try_into_dictionary()
                        .map_err(|_| TrackerError::Malformed("`files` entry".into()))?;
                    while let Some((k, v)) = f.next_pair()? {
                        match k {
                            b"complete" => stats.complete = count(int(v)?),
                            b"downloaded" => stats.downloaded = count(int(v)?),
                            b"incomplete" => stats.incomplete = count(int(v)?),
                            _ => {}
                        }
                    }
                }
            }
            _ => {}
        }
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_and_dictionary_peers() {
        let body = b"d8:completei2e10:incompletei1e8:intervali1800e12:min intervali60e5:peers12:\x7f\x00\x00\x01\x1a\xe1\x0a\x00\x00\x02\x00\x50e";
        let r = parse_http_announce(body).unwrap();
        assert_eq!(r.interval, Duration::from_secs(1800));
        assert_eq!(r.min_interval, Some(Duration::from_secs(60)));
        assert_eq!((r.seeders, r.leechers), (Some(2), Some(1)));
        assert_eq!(
            r.peers,
            [
                "127.0.0.1:6881".parse().unwrap(),
                "10.0.0.2:80".parse().unwrap()
            ]
        );
        let body = b"d8:intervali900e5:peersld2:ip9:127.0.0.14:porti7eed2:ip4:name4:porti8eeee";
        let r = parse_http_announce(body).unwrap();
        assert_eq!(r.peers, ["127.0.0.1:7".parse().unwrap()]);
    }

    #[test]
    fn failures_and_garbage_are_errors() {
        assert!(matches!(
            parse_http_announce(b"d14:failure reason9:not liked8:intervali1ee"),
            Err(TrackerError::Refused(r)) if r == "not liked"
        ));
        assert!(matches!(
            parse_http_announce(b"d5:peers0:e"),
            Err(TrackerError::Malformed(_))
        ));
        assert!(parse_http_announce(b"<html>").is_err());
        assert!(parse_http_announce(b"").is_err());
        assert!(parse_http_announce(b"d8:intervali1e5:peersi3ee").is_err());
    }

    #[test]
    fn scrape_of_our_hash_only() {
        let ours = [1u8; 20];
        let mut body = b"d5:filesd20:".to_vec();
        body.extend_from_slice(&[0u8; 20]);
        body.extend_from_slice(b"d8:completei9e10:downloadedi9e10:incompletei9ee20:");
        body.extend_from_slice(&ours);
        body.extend_from_slice(b"d8:completei1e10:downloadedi3e10:incompletei2eeee");
        let s = parse_http_scrape(&body, &ours).unwrap();
        assert_eq!(
            s,
            ScrapeStats {
                complete: 1,
                downloaded: 3,
                incomplete: 2
            }
        );
        assert_eq!(
            parse_http_scrape(b"d5:filesdee", &ours).unwrap(),
            ScrapeStats::default()
        );
    }

    #[test]
    fn scrape_urls_follow_bep_48() {
        let u = |s: &str| Url::parse(s).unwrap();
        assert_eq!(
            scrape_url(&u("http://t:1/announce")).unwrap().as_str(),
            "http://t:1/scrape"
        );
        assert_eq!(
            scrape_url(&u("http://t/x/announce.php?k=1"))
                .unwrap()
                .as_str(),
            "http://t/x/scrape.php?k=1"
        );
        assert_eq!(scrape_url(&u("http://t/a")), None);
    }

    #[test]
    fn tiers_keep_usable_urls() {
        let (tiers, bad) = Tiers::new(&[
            vec!["http://a/announce".into(), "wss://b".into()],
            vec!["ftp://c".into()],
            vec!["udp://d:1".into()],
        ]);
        assert_eq!(bad.len(), 2);
        assert_eq!(tiers.tiers.len(), 2);
        assert!(!tiers.is_empty());
    }
}
