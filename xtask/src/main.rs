//! `cargo xtask <stage>`: every pipeline stage, the local stack and the
//! benchmarks, runnable the same way on a laptop, in CI and in `.ci/run`.

mod api;
mod bench;
mod e2e;
mod effects;
mod images;
mod load;
mod stack;
mod stages;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use stages::{build, ci, deploy, integration, lint, smoke, train, unit};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Pipeline stages, images, the local stack and benchmarks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Stage lint: rustfmt --check and clippy -D warnings on every target.
    Lint,
    /// Stage smoke: the service answers with no model and with a stub model.
    Smoke,
    /// Stage unit: every crate's unit and in-process tests.
    Unit,
    /// Stage train: train on the reference data (or a generated sample) and
    /// apply the quality gate; the artifact and metrics land in artifacts/.
    Train(train::TrainArgs),
    /// Stage build & push: build the images and push the service image,
    /// tagged with the commit sha, to the local registry.
    Build(build::BuildArgs),
    /// Stage integration: run the pushed image as a container on port 32000
    /// and test it over real HTTP.
    Integration(integration::IntegrationArgs),
    /// The deployment controller's end-to-end scenarios on the real Docker
    /// Engine, nginx and registry (needs `cargo xtask build` first).
    E2e(e2e::E2eArgs),
    /// Stage deploy: write the built tag into the live manifest and follow
    /// the controller until that rollout has ended (fails on a rollback).
    Deploy(deploy::DeployArgs),
    /// The main job: install what is missing, train, build, push, and start
    /// the registry and the nginx + blue/green stack with one color live.
    Up(stack::UpArgs),
    /// Stop everything `up` started; leaves no container behind.
    Down,
    /// The whole pipeline on this machine, what `.ci/run` runs: every stage,
    /// the stack up, deploy, the end-to-end tests, then down (always).
    Ci,
    /// Benchmarks that compare this project with the original stack.
    Bench {
        #[command(subcommand)]
        which: Bench,
    },
}

#[derive(Subcommand)]
enum Bench {
    /// The trainer against pandas + scikit-learn.
    Train(bench::train::BenchTrainArgs),
    /// The service against FastAPI + uvicorn, with wrk.
    Serve(bench::serve::BenchServeArgs),
    /// Clients through nginx during deploys, rollbacks and faults.
    Deploy(bench::deploy::BenchDeployArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Lint => lint::run(),
        Command::Smoke => smoke::run(),
        Command::Unit => unit::run(),
        Command::Train(args) => train::run(&args).map(|_| ()),
        Command::Build(args) => build::build(&args).map(|_| ()),
        Command::Integration(args) => integration::run(&args),
        Command::E2e(args) => e2e::run(&args),
        Command::Deploy(args) => deploy::run(&args),
        Command::Up(args) => stack::up(&args),
        Command::Down => stack::down(),
        Command::Ci => ci::run(),
        Command::Bench { which: Bench::Train(args) } => bench::train::run(&args),
        Command::Bench { which: Bench::Serve(args) } => bench::serve::run(&args),
        Command::Bench { which: Bench::Deploy(args) } => bench::deploy::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// What a stage's arguments are when none is given on the command line,
/// for the tests that check a stage's `Default` (what `ci` and `up` pass)
/// against it.
#[cfg(test)]
fn parse_empty_command_line<A: clap::Args>() -> A {
    #[derive(Parser)]
    struct Cli<A: clap::Args> {
        #[command(flatten)]
        args: A,
    }
    Cli::<A>::parse_from(["xtask"]).args
}
