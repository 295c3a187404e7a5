//! `paid-torrent create`: a .torrent from a file or folder, and its magnet link.

use std::path::PathBuf;

use paid_torrent_examples::metainfo::Metainfo;
use paid_torrent_examples::units::format_size;
use serde_json::json;

use crate::Result;
use crate::failure::Failure;
use crate::options::CreateArgs;
use crate::output::Out;

/// Hashes `args.path` into a v1 .torrent, writes it and prints its magnet link.
pub(crate) fn run(args: CreateArgs, out: Out) -> Result<()> {
    let CreateArgs {
        path,
        output,
        piece_length,
        announce,
    } = args;
    for url in &announce {
        paid_torrent_examples::tracker::TrackerUrl::parse(url)
            .map_err(|e| Failure::usage(format!("--announce {url}: {e}")))?;
    }
    let mut meta = Metainfo::create(&path, piece_length, announce.first().cloned())?;
    if announce.len() > 1 {
        meta.announce_list = announce.iter().map(|u| vec![u.clone()]).collect();
    }
    let output = output.unwrap_or_else(|| PathBuf::from(format!("{}.torrent", meta.info.name)));
    std::fs::write(&output, meta.to_bytes()?)
        .map_err(|e| Failure::other(format!("writing {}: {e}", output.display())))?;
    let magnet = meta.magnet_link();
    let line = json!({"event": "created", "torrent": output.display().to_string(),
        "info_hash": meta.info_hash_hex(), "bytes": meta.info.total_length(),
        "pieces": meta.info.piece_count(), "piece_length": meta.info.piece_length, "magnet": magnet});
    if out.json {
        println!("{line}");
    } else {
        println!(
            "created {} ({}, {} pieces of {}), info-hash {}\n{magnet}",
            output.display(),
            format_size(meta.info.total_length()),
            meta.info.piece_count(),
            format_size(u64::from(meta.info.piece_length)),
            meta.info_hash_hex()
        );
    }
    Ok(())
}
