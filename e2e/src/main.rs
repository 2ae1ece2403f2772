//! `cargo xtask e2e [--only TEXT]…`: the scenarios.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    e2e::exit(e2e::suite::run(&e2e::suite::E2eArgs::parse()))
}
