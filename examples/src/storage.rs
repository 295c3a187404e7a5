//! The torrent's files on disk: positioned block reads and piece writes across file
//! boundaries, SHA-1 piece verification, and resume by re-verifying what is already there.
//!
//! Pieces are written only once they are complete and verified (the downloader assembles
//! them in memory), so a file on disk never holds unverified data from a peer.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use crate::bitfield::Bitfield;
use crate::error::StorageError;
use crate::metainfo::{Metainfo, sha1};

/// How to open the files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Seeding existing content: every file must exist; nothing is created or written.
    ReadOnly,
    /// Downloading: missing files and folders are created (sparse, at their final size).
    ReadWrite,
}

#[derive(Debug)]
struct StoredFile {
    path: PathBuf,
    /// Offset of the file's first byte in the torrent's byte stream.
    offset: u64,
    length: u64,
    file: File,
}

/// The files of one torrent, opened.
#[derive(Debug)]
pub struct Storage {
    files: Vec<StoredFile>,
    piece_length: u64,
    total_length: u64,
    hashes: Vec<[u8; 20]>,
    writable: bool,
}

impl Storage {
    /// Opens (or, with [`OpenMode::ReadWrite`], creates) the torrent's files below `dir`.
    ///
    /// The layout is [`Info::files`](crate::metainfo::Info::files): a single-file torrent is
    /// `dir/<name>`, a multi-file one `dir/<name>/…`.
    pub fn open(meta: &Metainfo, dir: &Path, mode: OpenMode) -> Result<Self, StorageError> {
        let mut files = Vec::new();
        let mut offset = 0u64;
        for (rel, length) in meta.info.files() {
            let path = dir.join(rel);
            let io = |source| StorageError::Io {
                path: path.clone(),
                source,
            };
            let file = match mode {
                OpenMode::ReadOnly => File::open(&path).map_err(io)?,
                OpenMode::ReadWrite => {
                    if let Some(parent) = path.parent() {
                        std::fs::create_dir_all(parent).map_err(io)?;
                    }
                    let f = OpenOptions::new()
                        .read(true)
                        .write(true)
                        .create(true)
                        .truncate(false)
                        .open(&path)
                        .map_err(io)?;
                    if f.metadata().map_err(io)?.len() != length {
                        f.set_len(length).map_err(io)?;
                    }
                    f
                }
            };
            files.push(StoredFile {
                path,
                offset,
                length,
                file,
            });
            offset += length;
        }
        Ok(Self {
            files,
            piece_length: u64::from(meta.info.piece_length),
            total_length: offset,
            hashes: meta.info.pieces.clone(),
            writable: mode == OpenMode::ReadWrite,
        })
    }

    /// Number of pieces.
    pub fn piece_count(&self) -> u32 {
        self.hashes.len() as u32
    }

    /// Size of piece `index` (0 when out of range).
    pub fn piece_size(&self, index: u32) -> u32 {
        let start = u64::from(index) * self.piece_length;
        if index >= self.piece_count() || start >= self.total_length {
            return 0;
        }
        (self.total_length - start).min(self.piece_length) as u32
    }

    /// Whether `length` bytes at `begin` lie inside piece `index` (and `length > 0`).
    pub fn block_in_range(&self, index: u32, begin: u32, length: u32) -> bool {
        length > 0 && u64::from(begin) + u64::from(length) <= u64::from(self.piece_size(index))
    }

    /// Reads `length` bytes at `begin` of piece `index`.
    pub fn read_block(&self, index: u32, begin: u32, length: u32) -> Result<Vec<u8>, StorageError> {
        if !self.block_in_range(index, begin, length) {
            return Err(StorageError::OutOfRange {
                index,
                begin,
                length,
            });
        }
        let mut buf = vec![0u8; length as usize];
        let start = u64::from(index) * self.piece_length + u64::from(begin);
        self.for_each_span(start, buf.len(), |f, file_off, range| {
            read_exact_at(&f.file, &mut buf[range], file_off).map_err(|source| StorageError::Io {
                path: f.path.clone(),
                source,
            })
        })?;
        Ok(buf)
    }

    /// Reads a whole piece.
    pub fn read_piece(&self, index: u32) -> Result<Vec<u8>, StorageError> {
        self.read_block(index, 0, self.piece_size(index))
    }

    /// Whether `data` is piece `index` (its SHA-1 matches the torrent).
    pub fn verify(&self, index: u32, data: &[u8]) -> bool {
        self.hashes
            .get(index as usize)
            .is_some_and(|h| data.len() == self.piece_size(index) as usize && sha1(data) == *h)
    }

    /// Writes a complete piece (normally after [`verify`](Self::verify)).
    pub fn write_piece(&self, index: u32, data: &[u8]) -> Result<(), StorageError> {
        let size = self.piece_size(index);
        if !self.writable || data.len() != size as usize || size == 0 {
            return Err(StorageError::OutOfRange {
                index,
                begin: 0,
                length: data.len() as u32,
            });
        }
        let start = u64::from(index) * self.piece_length;
        self.for_each_span(start, data.len(), |f, file_off, range| {
            write_all_at(&f.file, &data[range], file_off).map_err(|source| StorageError::Io {
                path: f.path.clone(),
                source,
            })
        })
    }

    /// Re-verifies every piece on disk (resume): the returned bitfield has the pieces whose
    /// data matches their hash.
    pub fn check(&self) -> Result<Bitfield, StorageError> {
        let mut have = Bitfield::new(self.piece_count());
        for i in 0..self.piece_count() {
            if self.verify(i, &self.read_piece(i)?) {
                have.set(i);
            }
        }
        Ok(have)
    }

    /// Flushes written data to disk.
    pub fn sync(&self) -> Result<(), StorageError> {
        if !self.writable {
            return Ok(());
        }
        for f in &self.files {
            f.file.sync_all().map_err(|source| StorageError::Io {
                path: f.path.clone(),
                source,
            })?;
        }
        Ok(())
    }

    /// Calls `op(file, offset in file, range in the buffer)` for each file overlapping
    /// `[start, start + len)` of the torrent's byte stream.
    fn for_each_span(
        &self,
        start: u64,
        len: usize,
        mut op: impl FnMut(&StoredFile, u64, std::ops::Range<usize>) -> Result<(), StorageError>,
    ) -> Result<(), StorageError> {
        let end = start + len as u64;
        for f in &self.files {
            let (fs, fe) = (f.offset, f.offset + f.length);
            if fe <= start || fs >= end {
                continue;
            }
            let s = start.max(fs);
            let e = end.min(fe);
            op(f, s - fs, (s - start) as usize..(e - start) as usize)?;
        }
        Ok(())
    }
}

#[cfg(unix)]
fn read_exact_at(f: &File, buf: &mut [u8], off: u64) -> io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(f, buf, off)
}

#[cfg(unix)]
fn write_all_at(f: &File, buf: &[u8], off: u64) -> io::Result<()> {
    std::os::unix::fs::FileExt::write_all_at(f, buf, off)
}

#[cfg(windows)]
fn read_exact_at(f: &File, mut buf: &mut [u8], mut off: u64) -> io::Result<()> {
    use std::os::windows::fs::FileExt;
    while !buf.is_empty() {
        match f.seek_read(buf, off)? {
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            n => {
                buf = &mut buf[n..];
                off += n as u64;
            }
        }
    }
    Ok(())
}

#[cfg(windows)]
fn write_all_at(f: &File, mut buf: &[u8], mut off: u64) -> io::Result<()> {
    use std::os::windows::fs::FileExt;
    while !buf.is_empty() {
        match f.seek_write(buf, off)? {
            0 => return Err(io::ErrorKind::WriteZero.into()),
            n => {
                buf = &buf[n..];
                off += n as u64;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_across_files_write_verify_resume() {
        let src = tempfile::tempdir().unwrap();
        let top = src.path().join("top");
        std::fs::create_dir_all(top.join("sub")).unwrap();
        let a: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
        let b: Vec<u8> = (0..9000u32).map(|i| (i * 7) as u8).collect();
        std::fs::write(top.join("a"), &a).unwrap();
        std::fs::write(top.join("sub/b"), &b).unwrap();
        let m = Metainfo::create(&top, 4096, None).unwrap();
        let all = [a, b].concat();

        let seed = Storage::open(&m, src.path(), OpenMode::ReadOnly).unwrap();
        assert_eq!(seed.check().unwrap().count(), 4);
        // A block straddling the file boundary at 5000.
        assert_eq!(seed.read_block(1, 500, 1000).unwrap(), all[4596..5596]);
        assert!(seed.read_block(3, 0, 4096).is_err(), "last piece is short");
        assert!(seed.write_piece(0, &all[..4096]).is_err(), "read-only");

        let dst = tempfile::tempdir().unwrap();
        let leech = Storage::open(&m, dst.path(), OpenMode::ReadWrite).unwrap();
        assert_eq!(leech.check().unwrap().count(), 0);
        for i in [3u32, 1] {
            let p = seed.read_piece(i).unwrap();
            assert!(leech.verify(i, &p));
            assert!(!leech.verify(i ^ 2, &p));
            leech.write_piece(i, &p).unwrap();
        }
        drop(leech);
        let again = Storage::open(&m, dst.path(), OpenMode::ReadWrite).unwrap();
        assert_eq!(
            again.check().unwrap().ones().collect::<Vec<_>>(),
            vec![1, 3]
        );
    }
}
