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
    return_large_buffers_to_the_system();
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

/// Request bodies (up to `--max-body-bytes`) are single large buffers.
/// glibc serves those with `mmap` and unmaps them when freed, until the
/// first one is freed: then it raises its threshold to that size and keeps
/// later ones in its heaps, where they stay after a burst (measured: 72 MiB
/// held after two bursts of 16 maximum-size bodies, 7 MiB with the
/// threshold fixed). Fixing the threshold keeps memory returned.
fn return_large_buffers_to_the_system() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        const THRESHOLD: libc::c_int = 128 * 1024;
        // SAFETY: mallopt only sets an allocator parameter; it is called
        // before any other thread exists.
        let set = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, THRESHOLD) };
        if set != 1 {
            tracing::warn!("cannot fix malloc's mmap threshold; memory may stay held after bursts");
        }
    }
}
