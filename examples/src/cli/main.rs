//! `paid-torrent`: the sample client's command line. See `examples/README.md`.
//!
//! - [`options`]: the command line (clap).
//! - [`output`]: human lines, JSON lines and the progress bar.
//! - [`wallet`]: keys, the chain connection and the asset.
//! - [`failure`]: errors, their causes and the exit codes.
//! - one module per command: [`create`], [`info`], [`seed`], [`get`], [`demo`], [`hub`].

#![forbid(unsafe_code)]

mod create;
mod demo;
mod demo_hub;
mod failure;
mod get;
mod hub;
mod info;
mod options;
mod output;
mod seed;
mod swarm;
mod wallet;

use std::process::ExitCode;

use clap::Parser;
use paid_torrent_examples::paid::Units;
use paid_torrent_examples::redact;

use crate::failure::Failure;
use crate::options::{Cli, Command};
use crate::output::Out;

/// The error of a command: printed with its causes, one per line, and the process exits with
/// the status of its [`failure::Kind`].
type Result<T> = std::result::Result<T, Failure>;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logs(cli.verbose, cli.quiet);
    let rpc = match &cli.command {
        Command::Seed(a) => a.channels.chain.rpc.clone(),
        Command::Get(a) => a.channels.chain.rpc.clone(),
        Command::Hub(a) => a.chain.rpc.clone(),
        _ => None,
    };
    let done = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(Failure::other)
        .and_then(|rt| rt.block_on(run(cli)));
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            // Errors may quote the RPC URL (a transport error names the URL it failed on).
            let text = f.report();
            let text = match &rpc {
                Some(url) => redact::scrub(&text, url),
                None => text,
            };
            eprintln!("{text}");
            ExitCode::from(f.kind.code())
        }
    }
}

/// Log lines (the libraries' `tracing` events) on stderr: warnings by default, `-v` info,
/// `-vv` debug, `-vvv` trace, `-q` errors only; `RUST_LOG` (e.g. `torrent_glue=debug`) wins.
fn init_logs(verbose: u8, quiet: bool) {
    use tracing_subscriber::EnvFilter;
    let level = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, 2) => "debug",
        (false, _) => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(true)
        .try_init();
}

async fn run(cli: Cli) -> Result<()> {
    let out = Out {
        json: cli.json,
        quiet: cli.quiet,
        units: Units::NATIVE,
    };
    match cli.command {
        Command::Create(args) => create::run(args, out),
        Command::Info(args) => info::run(args, out),
        Command::Seed(args) => seed::run(args, out).await,
        Command::Get(args) => get::run(args, out).await,
        Command::Demo(args) => demo::run(args).await,
        Command::Hub(args) => hub::run(args, out).await,
    }
}
