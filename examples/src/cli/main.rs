//! `paid-torrent`: the sample client's command line. See `examples/README.md`.
//!
//! - [`options`]: the command line (clap).
//! - [`output`]: human lines, JSON lines and the progress bar.
//! - [`wallet`]: keys, the chain connection and the asset.
//! - one module per command: [`create`], [`seed`], [`get`], [`demo`].

#![forbid(unsafe_code)]

mod create;
mod demo;
mod get;
mod options;
mod output;
mod seed;
mod wallet;

use std::error::Error;

use clap::Parser;
use paid_torrent_examples::paid::Units;

use crate::options::{Cli, Command};
use crate::output::Out;

/// The error of a command: printed, and the process exits with status 1.
type Result<T> = std::result::Result<T, Box<dyn Error + Send + Sync>>;

fn main() -> Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(cli))
}

async fn run(cli: Cli) -> Result<()> {
    let out = Out {
        json: cli.json,
        units: Units::NATIVE,
    };
    match cli.command {
        Command::Create(args) => create::run(args),
        Command::Seed(args) => seed::run(args, &cli.chain, out).await,
        Command::Get(args) => get::run(args, &cli.chain, out).await,
        Command::Demo(args) => demo::run(args, cli.chain.asset).await,
    }
}
