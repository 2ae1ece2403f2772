//! `cargo xtask <command>`: parses `xtask::flags` and dispatches; the work is
//! in the library's modules, and in the `e2e` crate for `e2e` and
//! `bench deploy`.

use std::process::ExitCode;

use clap::Parser;

use xtask::flags::{self, Bench, Command};
use xtask::stages::{build, deploy, integration, lint, smoke, train, unit};
use xtask::{bench, ci, e2e, stack};

fn main() -> ExitCode {
    let cli = flags::Cli::parse();
    let result = match cli.command {
        Command::Lint => lint::run(),
        Command::Smoke => smoke::run(),
        Command::Unit => unit::run(),
        Command::Train(args) => train::run(&args).map(|_| ()),
        Command::Build(args) => build::build(&args).map(|_| ()),
        Command::Integration(args) => integration::run(&args),
        Command::E2e(forwarded) => e2e::scenarios(&forwarded.args),
        Command::Deploy(args) => deploy::run(&args),
        Command::Up(args) => stack::up(&args),
        Command::Down => stack::down(),
        Command::Ci => ci::run(),
        Command::Bench { which: Bench::Train(args) } => bench::train::run(&args),
        Command::Bench { which: Bench::Serve(args) } => bench::serve::run(&args),
        Command::Bench { which: Bench::Deploy(forwarded) } => e2e::bench_deploy(&forwarded.args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
