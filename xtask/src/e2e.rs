//! `cargo xtask e2e` and `cargo xtask bench deploy`: the `e2e` crate's
//! binaries, built and run by cargo with the arguments given here. The
//! scenarios and the load generator are test code, so they live in that
//! crate, which depends on this library for the stack, the images and the
//! effects; this crate never depends on it, and knows it only by name.

use anyhow::Result;

use crate::effects::paths;
use crate::effects::process::{cmd, run};

/// The scenarios (`e2e --help` lists their options).
pub fn scenarios(args: &[String]) -> Result<()> {
    run_bin("e2e", args)
}

/// What clients through nginx see during deploys and faults.
pub fn bench_deploy(args: &[String]) -> Result<()> {
    run_bin("bench-deploy", args)
}

/// `cargo run` of one of the crate's binaries in the profile the `xtask`
/// alias uses for this crate (.cargo/config.toml: dev, quiet).
fn run_bin(bin: &str, args: &[String]) -> Result<()> {
    let mut c = cmd("cargo", ["run", "--quiet", "--package", "e2e", "--bin", bin, "--"]);
    c.args(args).current_dir(paths::root());
    run(c)
}
