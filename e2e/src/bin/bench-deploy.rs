//! `cargo xtask bench deploy [OPTIONS]`: clients through nginx during
//! deploys, rollbacks and faults.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    e2e::exit(e2e::bench_deploy::run(&e2e::bench_deploy::BenchDeployArgs::parse()))
}
