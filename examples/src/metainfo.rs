//! `.torrent` metainfo (BEP 3, v1): create one from a file or folder, parse one, and compute
//! the info-hash.
//!
//! The info-hash is the SHA-1 of the bencoded `info` dictionary **exactly as it appears in the
//! file**: parsing keeps the raw bytes of `info` and hashes those, never a re-encoding, so keys
//! this module does not know (`private`, `source`, …) still count.
//!
//! bencode goes through bendy, which insists on canonical form (sorted dictionary keys). A
//! `.torrent` with unsorted keys is rejected with [`MetainfoError::Bencode`] rather than being
//! silently re-sorted (which would change its info-hash).

use std::fs::File;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use bendy::decoding::{Decoder, DictDecoder, Object};
use bendy::encoding::{Encoder, SingleItemEncoder};
use sha1::{Digest, Sha1};

use crate::error::MetainfoError;

/// SHA-1 digest size.
pub const HASH_LEN: usize = 20;

/// Largest accepted `piece length` (64 MiB); larger pieces make single pieces unwieldy.
pub const MAX_PIECE_LENGTH: u32 = 64 << 20;

/// Default piece length for [`Metainfo::create`]: 256 KiB.
pub const DEFAULT_PIECE_LENGTH: u32 = 256 << 10;

/// Nesting depth allowed when parsing a `.torrent` (the format needs 4 or 5).
const MAX_DEPTH: usize = 16;

/// One file of a multi-file torrent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    /// Path components below the torrent's root folder.
    pub path: Vec<String>,
    /// Size in bytes.
    pub length: u64,
}

/// Single-file or multi-file layout of the content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// `length`: the torrent is one file called `name`.
    Single {
        /// Size in bytes.
        length: u64,
    },
    /// `files`: the torrent is a folder called `name` holding these files, in this order.
    Multi {
        /// The files, in piece order.
        files: Vec<FileEntry>,
    },
}

/// The `info` dictionary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    /// Suggested file or folder name.
    pub name: String,
    /// Bytes per piece (the last piece may be shorter).
    pub piece_length: u32,
    /// SHA-1 of every piece.
    pub pieces: Vec<[u8; HASH_LEN]>,
    /// File layout.
    pub layout: Layout,
    /// BEP 27 `private` flag.
    pub private: bool,
}

impl Info {
    /// Total content size in bytes.
    pub fn total_length(&self) -> u64 {
        match &self.layout {
            Layout::Single { length } => *length,
            Layout::Multi { files } => files.iter().map(|f| f.length).sum(),
        }
    }

    /// Number of pieces.
    pub fn piece_count(&self) -> u32 {
        self.pieces.len() as u32
    }

    /// Size of piece `index` (0 when out of range).
    pub fn piece_size(&self, index: u32) -> u32 {
        let start = u64::from(index) * u64::from(self.piece_length);
        let total = self.total_length();
        if index >= self.piece_count() || start >= total {
            return 0;
        }
        (total - start).min(u64::from(self.piece_length)) as u32
    }

    /// The files as `(relative path, length)`, relative to the download folder.
    ///
    /// Single-file: `[(name, length)]`. Multi-file: `name/…/file` for each entry.
    pub fn files(&self) -> Vec<(PathBuf, u64)> {
        match &self.layout {
            Layout::Single { length } => vec![(PathBuf::from(&self.name), *length)],
            Layout::Multi { files } => files
                .iter()
                .map(|f| {
                    let mut p = PathBuf::from(&self.name);
                    p.extend(&f.path);
                    (p, f.length)
                })
                .collect(),
        }
    }

    /// The bencoded `info` dictionary (canonical form).
    pub fn to_bencode(&self) -> Result<Vec<u8>, MetainfoError> {
        let mut enc = Encoder::new().with_max_depth(MAX_DEPTH);
        enc.emit_with(|e| self.encode_into(e))?;
        Ok(enc.get_output()?)
    }

    fn encode_into(&self, e: SingleItemEncoder<'_>) -> Result<(), bendy::encoding::Error> {
        let pieces: Vec<u8> = self.pieces.iter().flatten().copied().collect();
        e.emit_dict(|mut d| {
            match &self.layout {
                Layout::Multi { files } => d.emit_pair_with(b"files", |e| {
                    e.emit_list(|l| {
                        for f in files {
                            l.emit_with(|e| {
                                e.emit_dict(|mut fd| {
                                    fd.emit_pair(b"length", f.length)?;
                                    fd.emit_pair_with(b"path", |e| {
                                        e.emit_list(|pl| {
                                            for c in &f.path {
                                                pl.emit_str(c)?;
                                            }
                                            Ok(())
                                        })
                                    })
                                })
                            })?;
                        }
                        Ok(())
                    })
                })?,
                Layout::Single { length } => d.emit_pair(b"length", *length)?,
            }
            d.emit_pair_with(b"name", |e| e.emit_str(&self.name))?;
            d.emit_pair(b"piece length", self.piece_length)?;
            d.emit_pair_with(b"pieces", |e| e.emit_bytes(&pieces))?;
            if self.private {
                d.emit_pair(b"private", 1u8)?;
            }
            Ok(())
        })
    }

    /// Parses and validates a bencoded `info` dictionary.
    pub fn from_bencode(raw: &[u8]) -> Result<Self, MetainfoError> {
        let mut dec = Decoder::new(raw).with_max_depth(MAX_DEPTH);
        let mut dict = top_dictionary(&mut dec, "info")?;
        let (mut name, mut piece_length, mut pieces, mut length, mut files, mut private) =
            (None, None, None, None, None, false);
        while let Some((key, value)) = dict.next_pair()? {
            match key {
                b"name" => name = Some(utf8(value, "name")?),
                b"piece length" => piece_length = Some(integer(value, "piece length")?),
                b"pieces" => {
                    let b = value
                        .try_into_bytes()
                        .map_err(|_| MetainfoError::invalid("pieces", "not a byte string"))?;
                    if b.len() % HASH_LEN != 0 {
                        return Err(MetainfoError::invalid(
                            "pieces",
                            "length not a multiple of 20",
                        ));
                    }
                    pieces = Some(
                        b.chunks_exact(HASH_LEN)
                            .map(|c| {
                                let mut h = [0u8; HASH_LEN];
                                h.copy_from_slice(c);
                                h
                            })
                            .collect::<Vec<_>>(),
                    );
                }
                b"length" => length = Some(integer(value, "length")?),
                b"files" => files = Some(parse_files(value)?),
                b"private" => private = integer(value, "private")? == 1,
                _ => {}
            }
        }
        let name = name.ok_or(MetainfoError::Missing("name"))?;
        check_component(&name, "name")?;
        let piece_length = piece_length.ok_or(MetainfoError::Missing("piece length"))?;
        if piece_length == 0 || piece_length > u64::from(MAX_PIECE_LENGTH) {
            return Err(MetainfoError::invalid(
                "piece length",
                format!("{piece_length} is not in 1..={MAX_PIECE_LENGTH}"),
            ));
        }
        let layout = match (length, files) {
            (Some(length), None) => Layout::Single { length },
            (None, Some(files)) => Layout::Multi { files },
            (Some(_), Some(_)) => {
                return Err(MetainfoError::invalid("files", "both `length` and `files`"));
            }
            (None, None) => return Err(MetainfoError::Missing("length")),
        };
        let info = Self {
            name,
            piece_length: piece_length as u32,
            pieces: pieces.ok_or(MetainfoError::Missing("pieces"))?,
            layout,
            private,
        };
        let total = info
            .files()
            .iter()
            .try_fold(0u64, |acc, (_, l)| acc.checked_add(*l))
            .ok_or_else(|| MetainfoError::invalid("length", "total size overflows"))?;
        if total == 0 {
            return Err(MetainfoError::invalid("length", "the torrent is empty"));
        }
        let expected = total.div_ceil(u64::from(info.piece_length));
        if expected != info.pieces.len() as u64 {
            return Err(MetainfoError::invalid(
                "pieces",
                format!("{} hashes for {expected} pieces", info.pieces.len()),
            ));
        }
        Ok(info)
    }
}

/// A parsed or created `.torrent`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metainfo {
    /// Tracker URL, if any.
    pub announce: Option<String>,
    /// BEP 12 `announce-list`: tiers of tracker URLs (empty if the file has none).
    pub announce_list: Vec<Vec<String>>,
    /// The `info` dictionary.
    pub info: Info,
    /// SHA-1 of the raw bencoded `info` dictionary.
    pub info_hash: [u8; HASH_LEN],
    raw_info: Vec<u8>,
}

impl Metainfo {
    /// Builds the metainfo for `info` (the info-hash is computed from its canonical encoding).
    pub fn new(info: Info, announce: Option<String>) -> Result<Self, MetainfoError> {
        let raw_info = info.to_bencode()?;
        Ok(Self {
            announce,
            announce_list: Vec::new(),
            info_hash: sha1(&raw_info),
            info,
            raw_info,
        })
    }

    /// Hashes `path` (a file, or a folder walked recursively in sorted order; symlinks and
    /// empty files are skipped) into a new torrent with pieces of `piece_length` bytes.
    pub fn create(
        path: &Path,
        piece_length: u32,
        announce: Option<String>,
    ) -> Result<Self, MetainfoError> {
        if piece_length == 0 || piece_length > MAX_PIECE_LENGTH {
            return Err(MetainfoError::invalid("piece length", "out of range"));
        }
        let io = |p: &Path| {
            let p = p.to_path_buf();
            move |source| MetainfoError::Io { path: p, source }
        };
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| MetainfoError::invalid("name", "path has no UTF-8 file name"))?
            .to_owned();
        let meta = std::fs::metadata(path).map_err(io(path))?;
        let (layout, sources): (Layout, Vec<PathBuf>) = if meta.is_dir() {
            let mut found = Vec::new();
            walk(path, &mut Vec::new(), &mut found)?;
            let files: Vec<FileEntry> = found.iter().map(|(e, _)| e.clone()).collect();
            let sources = found.into_iter().map(|(_, p)| p).collect();
            (Layout::Multi { files }, sources)
        } else {
            (
                Layout::Single { length: meta.len() },
                vec![path.to_path_buf()],
            )
        };
        let mut hasher = PieceHasher::new(piece_length);
        let mut buf = vec![0u8; 1 << 20];
        for src in &sources {
            let mut f = File::open(src).map_err(io(src))?;
            loop {
                let n = f.read(&mut buf).map_err(io(src))?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
            }
        }
        let pieces = hasher.finish();
        if pieces.is_empty() {
            return Err(MetainfoError::invalid("length", "nothing to share (empty)"));
        }
        Self::new(
            Info {
                name,
                piece_length,
                pieces,
                layout,
                private: false,
            },
            announce,
        )
    }

    /// Parses a `.torrent` file's bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, MetainfoError> {
        let mut dec = Decoder::new(bytes).with_max_depth(MAX_DEPTH);
        let mut dict = top_dictionary(&mut dec, "metainfo")?;
        let (mut announce, mut raw_info) = (None, None);
        let mut announce_list = Vec::new();
        while let Some((key, value)) = dict.next_pair()? {
            match key {
                b"announce" => announce = Some(utf8(value, "announce")?),
                b"announce-list" => announce_list = tiers(value)?,
                b"info" => {
                    let d = value
                        .try_into_dictionary()
                        .map_err(|_| MetainfoError::invalid("info", "not a dictionary"))?;
                    raw_info = Some(d.into_raw()?.to_vec());
                }
                _ => {}
            }
        }
        let raw_info = raw_info.ok_or(MetainfoError::Missing("info"))?;
        Ok(Self {
            announce,
            announce_list,
            info: Info::from_bencode(&raw_info)?,
            info_hash: sha1(&raw_info),
            raw_info,
        })
    }

    /// The metainfo of a raw bencoded `info` dictionary (as fetched for a magnet link, kept
    /// byte for byte) with `trackers`, one BEP 12 tier each (the first is also `announce`).
    pub fn from_raw_info(raw_info: &[u8], trackers: &[String]) -> Result<Self, MetainfoError> {
        Ok(Self {
            announce: trackers.first().cloned(),
            announce_list: if trackers.len() > 1 {
                trackers.iter().map(|t| vec![t.clone()]).collect()
            } else {
                Vec::new()
            },
            info: Info::from_bencode(raw_info)?,
            info_hash: sha1(raw_info),
            raw_info: raw_info.to_vec(),
        })
    }

    /// Reads and parses a `.torrent` file.
    pub fn load(path: &Path) -> Result<Self, MetainfoError> {
        let bytes = std::fs::read(path).map_err(|source| MetainfoError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_bytes(&bytes)
    }

    /// The `.torrent` file's bytes (the `info` dictionary is kept byte for byte).
    pub fn to_bytes(&self) -> Result<Vec<u8>, MetainfoError> {
        // Keys in sorted order: announce, created by, info.
        let mut out = b"d".to_vec();
        if let Some(a) = &self.announce {
            out.extend_from_slice(format!("8:announce{}:", a.len()).as_bytes());
            out.extend_from_slice(a.as_bytes());
        }
        if !self.announce_list.is_empty() {
            out.extend_from_slice(b"13:announce-listl");
            for tier in &self.announce_list {
                out.push(b'l');
                for url in tier {
                    out.extend_from_slice(format!("{}:", url.len()).as_bytes());
                    out.extend_from_slice(url.as_bytes());
                }
                out.push(b'e');
            }
            out.push(b'e');
        }
        let client = concat!("paid-torrent ", env!("CARGO_PKG_VERSION"));
        out.extend_from_slice(format!("10:created by{}:{client}", client.len()).as_bytes());
        out.extend_from_slice(b"4:info");
        out.extend_from_slice(&self.raw_info);
        out.push(b'e');
        Ok(out)
    }

    /// The info-hash as lowercase hex.
    pub fn info_hash_hex(&self) -> String {
        alloy_primitives::hex::encode(self.info_hash)
    }

    /// Every tracker URL, once, in the order BEP 12 tries them: the `announce-list` tiers if
    /// there are any (BEP 12: then `announce` is ignored), else `announce`.
    pub fn trackers(&self) -> Vec<String> {
        let mut all: Vec<String> = Vec::new();
        let listed = self.announce_list.iter().flatten();
        let urls: Vec<&String> = if self.announce_list.is_empty() {
            self.announce.iter().collect()
        } else {
            listed.collect()
        };
        for u in urls {
            if !all.contains(u) {
                all.push(u.clone());
            }
        }
        all
    }

    /// The raw bencoded `info` dictionary, as in the file (what the info-hash is the SHA-1 of).
    pub fn raw_info(&self) -> &[u8] {
        &self.raw_info
    }

    /// The magnet link (BEP 9): the info-hash, the name and every tracker.
    pub fn magnet_link(&self) -> String {
        crate::magnet::Magnet {
            info_hash: self.info_hash,
            name: Some(self.info.name.clone()),
            trackers: self.trackers(),
            peers: Vec::new(),
        }
        .to_string()
    }
}

/// A BEP 12 `announce-list`: a list of tiers, each a list of URLs.
fn tiers(value: Object<'_, '_>) -> Result<Vec<Vec<String>>, MetainfoError> {
    let bad = || MetainfoError::invalid("announce-list", "not a list of lists of URLs");
    let mut list = value.try_into_list().map_err(|_| bad())?;
    let mut out = Vec::new();
    while let Some(tier) = list.next_object()? {
        let mut tier = tier.try_into_list().map_err(|_| bad())?;
        let mut urls = Vec::new();
        while let Some(url) = tier.next_object()? {
            urls.push(utf8(url, "announce-list")?);
        }
        if !urls.is_empty() {
            out.push(urls);
        }
    }
    Ok(out)
}

/// SHA-1 of `data`.
pub fn sha1(data: &[u8]) -> [u8; HASH_LEN] {
    let mut h = [0u8; HASH_LEN];
    h.copy_from_slice(&Sha1::digest(data));
    h
}

/// Cuts a byte stream into pieces and hashes each.
#[derive(Debug)]
struct PieceHasher {
    piece_length: usize,
    filled: usize,
    current: Sha1,
    done: Vec<[u8; HASH_LEN]>,
}

impl PieceHasher {
    fn new(piece_length: u32) -> Self {
        Self {
            piece_length: piece_length as usize,
            filled: 0,
            current: Sha1::new(),
            done: Vec::new(),
        }
    }

    fn update(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let take = (self.piece_length - self.filled).min(data.len());
            self.current.update(&data[..take]);
            self.filled += take;
            data = &data[take..];
            if self.filled == self.piece_length {
                self.push();
            }
        }
    }

    fn push(&mut self) {
        let mut h = [0u8; HASH_LEN];
        h.copy_from_slice(&std::mem::replace(&mut self.current, Sha1::new()).finalize());
        self.done.push(h);
        self.filled = 0;
    }

    fn finish(mut self) -> Vec<[u8; HASH_LEN]> {
        if self.filled > 0 {
            self.push();
        }
        self.done
    }
}

fn walk(
    dir: &Path,
    prefix: &mut Vec<String>,
    out: &mut Vec<(FileEntry, PathBuf)>,
) -> Result<(), MetainfoError> {
    let io = |source| MetainfoError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(io)?
        .collect::<Result<_, _>>()
        .map_err(io)?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let ty = entry.file_type().map_err(io)?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            return Err(MetainfoError::invalid("files", "a file name is not UTF-8"));
        };
        prefix.push(name);
        if ty.is_dir() {
            walk(&entry.path(), prefix, out)?;
        } else if ty.is_file() {
            let length = entry.metadata().map_err(io)?.len();
            if length > 0 {
                out.push((
                    FileEntry {
                        path: prefix.clone(),
                        length,
                    },
                    entry.path(),
                ));
            }
        }
        prefix.pop();
    }
    Ok(())
}

fn parse_files(value: Object<'_, '_>) -> Result<Vec<FileEntry>, MetainfoError> {
    let mut list = value
        .try_into_list()
        .map_err(|_| MetainfoError::invalid("files", "not a list"))?;
    let mut files = Vec::new();
    while let Some(item) = list.next_object()? {
        let mut d = item
            .try_into_dictionary()
            .map_err(|_| MetainfoError::invalid("files", "entry is not a dictionary"))?;
        let (mut length, mut path) = (None, None);
        while let Some((key, value)) = d.next_pair()? {
            match key {
                b"length" => length = Some(integer(value, "length")?),
                b"path" => {
                    let mut pl = value
                        .try_into_list()
                        .map_err(|_| MetainfoError::invalid("path", "not a list"))?;
                    let mut comps = Vec::new();
                    while let Some(c) = pl.next_object()? {
                        let c = utf8(c, "path")?;
                        check_component(&c, "path")?;
                        comps.push(c);
                    }
                    if comps.is_empty() {
                        return Err(MetainfoError::invalid("path", "empty"));
                    }
                    path = Some(comps);
                }
                _ => {}
            }
        }
        files.push(FileEntry {
            path: path.ok_or(MetainfoError::Missing("path"))?,
            length: length.ok_or(MetainfoError::Missing("length"))?,
        });
    }
    if files.is_empty() {
        return Err(MetainfoError::invalid("files", "empty list"));
    }
    Ok(files)
}

/// A file name or path component must stay inside the download folder.
fn check_component(c: &str, key: &'static str) -> Result<(), MetainfoError> {
    let mut comps = Path::new(c).components();
    match (comps.next(), comps.next()) {
        (Some(Component::Normal(_)), None) if !c.contains(['/', '\\', '\0']) => Ok(()),
        _ => Err(MetainfoError::invalid(
            key,
            format!("unsafe path component {c:?}"),
        )),
    }
}

/// The dictionary that a bencoded `what` (a `.torrent` or an `info` dictionary) is made of.
fn top_dictionary<'obj, 'ser>(
    dec: &'obj mut Decoder<'ser>,
    what: &'static str,
) -> Result<DictDecoder<'obj, 'ser>, MetainfoError> {
    let obj = dec.next_object()?.ok_or(MetainfoError::Missing("info"))?;
    obj.try_into_dictionary()
        .map_err(|_| MetainfoError::invalid(what, "not a dictionary"))
}

fn utf8(value: Object<'_, '_>, key: &'static str) -> Result<String, MetainfoError> {
    let b = value
        .try_into_bytes()
        .map_err(|_| MetainfoError::invalid(key, "not a byte string"))?;
    String::from_utf8(b.to_vec()).map_err(|_| MetainfoError::invalid(key, "not UTF-8"))
}

fn integer(value: Object<'_, '_>, key: &'static str) -> Result<u64, MetainfoError> {
    let s = value
        .try_into_integer()
        .map_err(|_| MetainfoError::invalid(key, "not an integer"))?;
    s.parse::<u64>()
        .map_err(|_| MetainfoError::invalid(key, format!("{s} is not a non-negative integer")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, rel: &str, len: usize, seed: u8) -> Vec<u8> {
        let data: Vec<u8> = (0..len)
            .map(|i| (i as u8).wrapping_mul(31) ^ seed)
            .collect();
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, &data).unwrap();
        data
    }

    #[test]
    fn single_file_round_trip_and_hashes() {
        let dir = tempfile::tempdir().unwrap();
        let data = write(dir.path(), "a.bin", 100_000, 1);
        let m = Metainfo::create(&dir.path().join("a.bin"), 32768, None).unwrap();
        assert_eq!(m.info.piece_count(), 4);
        assert_eq!(m.info.piece_size(3), 100_000 - 3 * 32768);
        assert_eq!(m.info.pieces[1], sha1(&data[32768..65536]));
        let bytes = m.to_bytes().unwrap();
        let back = Metainfo::from_bytes(&bytes).unwrap();
        assert_eq!(back.info, m.info);
        assert_eq!(back.info_hash, m.info_hash);
        // The info-hash is the SHA-1 of the info dict as it sits in the file.
        let start = bytes.windows(6).position(|w| w == b"4:info").unwrap() + 6;
        assert_eq!(sha1(&bytes[start..bytes.len() - 1]), m.info_hash);
    }

    #[test]
    fn multi_file_pieces_span_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut all = write(dir.path(), "top/b/2.bin", 5000, 2);
        let first = write(dir.path(), "top/a.bin", 7000, 3);
        all.splice(0..0, first);
        let m = Metainfo::create(&dir.path().join("top"), 4096, Some("http://t/a".into())).unwrap();
        let Layout::Multi { files } = &m.info.layout else {
            panic!("multi-file expected")
        };
        assert_eq!(files[0].path, vec!["a.bin"]);
        assert_eq!(files[1].path, vec!["b", "2.bin"]);
        assert_eq!(m.info.piece_count(), 3);
        assert_eq!(m.info.pieces[1], sha1(&all[4096..8192]));
        let back = Metainfo::from_bytes(&m.to_bytes().unwrap()).unwrap();
        assert_eq!(back, m);
        assert_eq!(back.announce.as_deref(), Some("http://t/a"));
    }

    #[test]
    fn unknown_info_keys_count_in_the_info_hash() {
        let info = b"d6:lengthi3e4:name1:a12:piece lengthi16384e6:pieces20:aaaaaaaaaaaaaaaaaaaa6:source3:xyze";
        let mut file = b"d4:info".to_vec();
        file.extend_from_slice(info);
        file.push(b'e');
        let m = Metainfo::from_bytes(&file).unwrap();
        assert_eq!(m.info_hash, sha1(info));
        assert_ne!(m.info_hash, sha1(&m.info.to_bencode().unwrap()));
        // And it survives a write/read cycle.
        assert_eq!(
            Metainfo::from_bytes(&m.to_bytes().unwrap())
                .unwrap()
                .info_hash,
            sha1(info)
        );
    }

    #[test]
    fn hostile_metainfo_is_rejected() {
        let cases: &[&[u8]] = &[
            b"d4:infod6:lengthi3e4:name2:..12:piece lengthi16384e6:pieces20:aaaaaaaaaaaaaaaaaaaaee",
            b"d4:infod6:lengthi3e4:name1:a12:piece lengthi0e6:pieces20:aaaaaaaaaaaaaaaaaaaaee",
            b"d4:infod6:lengthi3e4:name1:a12:piece lengthi16384e6:pieces19:aaaaaaaaaaaaaaaaaaaee",
            b"d4:infod6:lengthi99999e4:name1:a12:piece lengthi16384e6:pieces20:aaaaaaaaaaaaaaaaaaaaee",
            b"d4:infod5:filesld6:lengthi3e4:pathl2:..1:xeee4:name1:a12:piece lengthi16384e6:pieces20:aaaaaaaaaaaaaaaaaaaaee",
            b"d4:infod6:lengthi-3e4:name1:a12:piece lengthi16384e6:pieces20:aaaaaaaaaaaaaaaaaaaaee",
            b"d4:infoi3ee",
            b"d4:infod",
            b"",
        ];
        for c in cases {
            assert!(
                Metainfo::from_bytes(c).is_err(),
                "{}",
                String::from_utf8_lossy(c)
            );
        }
    }
}
