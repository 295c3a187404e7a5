//! `paid-torrent info`: what a .torrent or a magnet link describes.

use std::path::Path;

use alloy_primitives::hex;
use paid_torrent_examples::magnet::Magnet;
use paid_torrent_examples::metainfo::Metainfo;
use paid_torrent_examples::units::format_size;
use serde_json::json;

use crate::Result;
use crate::failure::Failure;
use crate::options::InfoArgs;
use crate::output::Out;

/// Prints name, size, files, pieces, info-hash and trackers (a magnet link names fewer).
pub(crate) fn run(args: InfoArgs, out: Out) -> Result<()> {
    if args.torrent.starts_with("magnet:") {
        let m: Magnet = args.torrent.parse().map_err(Failure::usage)?;
        if out.json {
            println!(
                "{}",
                json!({"info_hash": hex::encode(m.info_hash), "name": m.name,
                       "trackers": m.trackers, "peers": m.peers})
            );
        } else {
            println!("name:       {}", m.name.as_deref().unwrap_or("(not given)"));
            println!("info-hash:  {}", hex::encode(m.info_hash));
            print_list("trackers:", &m.trackers);
            print_list("peers:", &m.peers);
            println!("(a magnet link names no size, files or pieces: they come with the metadata)");
        }
        return Ok(());
    }
    let meta = Metainfo::load(Path::new(&args.torrent))?;
    let files = meta.info.files();
    if out.json {
        let files: Vec<_> = files
            .iter()
            .map(|(p, l)| json!({"path": p.display().to_string(), "bytes": l}))
            .collect();
        println!(
            "{}",
            json!({"name": meta.info.name, "bytes": meta.info.total_length(), "files": files,
                   "pieces": meta.info.piece_count(), "piece_length": meta.info.piece_length,
                   "info_hash": meta.info_hash_hex(), "trackers": meta.trackers(),
                   "private": meta.info.private, "magnet": meta.magnet_link()})
        );
        return Ok(());
    }
    let total = meta.info.total_length();
    println!("name:       {}", meta.info.name);
    println!("size:       {} ({total} bytes)", format_size(total));
    println!(
        "pieces:     {} of {}",
        meta.info.piece_count(),
        format_size(u64::from(meta.info.piece_length))
    );
    println!("info-hash:  {}", meta.info_hash_hex());
    if meta.info.private {
        println!("private:    yes (BEP 27: trackers only)");
    }
    print_list("trackers:", &meta.trackers());
    println!("files:");
    for (path, len) in files {
        println!("  {} ({})", path.display(), format_size(len));
    }
    println!("magnet:     {}", meta.magnet_link());
    Ok(())
}

fn print_list(label: &str, items: &[String]) {
    if items.is_empty() {
        println!("{label:<12}none");
    }
    for (i, t) in items.iter().enumerate() {
        let l = if i == 0 { label } else { "" };
        println!("{l:<12}{t}");
    }
}
