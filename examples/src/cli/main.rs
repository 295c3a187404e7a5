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
use std::process::ExitCode;

use clap::Parser;
use paid_torrent_examples::paid::Units;
use paid_torrent_examples::redact;

use crate::options::{Cli, Command};
use crate::output::Out;

/// The error of a command: printed, and the process exits with status 1.
type Result<T> = std::result::Result<T, Box<dyn Error + Send + Sync>>;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rpc = cli.chain.rpc.clone();
    let done = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(Into::into)
        .and_then(|rt| rt.block_on(run(cli)));
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Errors may quote the RPC URL (a transport error names the URL it failed on).
            let text = e.to_string();
            let text = match &rpc {
                Some(url) => redact::scrub(&text, url),
                None => text,
            };
            eprintln!("Error: {text}");
            ExitCode::FAILURE
        }
    }
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
