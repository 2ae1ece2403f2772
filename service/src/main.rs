//! `service`: serve predictions, or probe a running instance.

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;
use service::config::{Cli, Command, ServeArgs, seconds};
use service::{healthcheck, server, telemetry};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Healthcheck(args)) => {
            let result = seconds("timeout-secs", args.timeout_secs)
                .and_then(|timeout| healthcheck::probe(args.port, timeout));
            match result {
                Ok(()) => {
                    println!("ready");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("not ready: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        None => {
            telemetry::init(cli.serve.log_format);
            match serve(&cli.serve) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = format!("{e:#}"), "service stopped");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn serve(args: &ServeArgs) -> Result<()> {
    let workers = args
        .worker_threads
        .or_else(|| std::thread::available_parallelism().ok().map(usize::from))
        .unwrap_or(1)
        .max(1);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        // Big batches are priced on blocking threads: CPU-bound, so more
        // threads than cores would only add memory.
        .max_blocking_threads(workers)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(server::run(args))
}
