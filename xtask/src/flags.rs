//! Every command of `cargo xtask` and its arguments, in one place (the
//! binary dispatches on them; the pipeline test reads the subcommands).
//! `e2e` and `bench deploy` take their arguments as given: the `e2e`
//! crate's binaries parse them.

use clap::{Parser, Subcommand};

use crate::bench;
use crate::stack::UpArgs;
use crate::stages::{build, deploy, integration, train};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Pipeline stages, images, the local stack and benchmarks")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
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
    #[command(disable_help_flag = true)]
    E2e(Forwarded),
    /// Stage deploy: write the built tag into the live manifest and follow
    /// the controller until that rollout has ended (fails on a rollback).
    Deploy(deploy::DeployArgs),
    /// The main job: install what is missing, train, build, push, and start
    /// the registry and the nginx + blue/green stack with one color live.
    Up(UpArgs),
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
pub enum Bench {
    /// The trainer against pandas + scikit-learn.
    Train(bench::train::BenchTrainArgs),
    /// The service against FastAPI + uvicorn, with wrk.
    Serve(bench::serve::BenchServeArgs),
    /// Clients through nginx during deploys, rollbacks and faults.
    #[command(disable_help_flag = true)]
    Deploy(Forwarded),
}

/// The arguments of a command another binary implements, passed on
/// untouched (`--help` included, so its help is the one shown).
#[derive(clap::Args, Debug)]
pub struct Forwarded {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, value_name = "ARGS")]
    pub args: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forwarded(line: &[&str]) -> Vec<String> {
        match Cli::try_parse_from(line).unwrap().command {
            Command::E2e(f) | Command::Bench { which: Bench::Deploy(f) } => f.args,
            _ => panic!("{line:?} is not a forwarded command"),
        }
    }

    #[test]
    fn forwarded_commands_pass_every_argument_on() {
        assert_eq!(forwarded(&["xtask", "e2e"]), Vec::<String>::new());
        assert_eq!(
            forwarded(&["xtask", "e2e", "--only", "level 1", "--help"]),
            ["--only", "level 1", "--help"]
        );
        assert_eq!(
            forwarded(&["xtask", "bench", "deploy", "--good", "2", "--no-faults"]),
            ["--good", "2", "--no-faults"]
        );
    }
}
