//! `paid-torrent create`: a .torrent from a file or folder.

use std::path::PathBuf;

use paid_torrent_examples::metainfo::Metainfo;

use crate::Result;
use crate::options::CreateArgs;

/// Hashes `args.path` into a v1 .torrent and writes it.
pub(crate) fn run(args: CreateArgs) -> Result<()> {
    let CreateArgs {
        path,
        output,
        piece_length,
        announce,
    } = args;
    let meta = Metainfo::create(&path, piece_length, announce)?;
    let output = output.unwrap_or_else(|| PathBuf::from(format!("{}.torrent", meta.info.name)));
    std::fs::write(&output, meta.to_bytes()?)?;
    println!(
        "created {} ({} bytes, {} pieces of {} bytes), info-hash {}",
        output.display(),
        meta.info.total_length(),
        meta.info.piece_count(),
        meta.info.piece_length,
        meta.info_hash_hex()
    );
    Ok(())
}
