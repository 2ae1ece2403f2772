//! TODO: being written.

use anyhow::{Result, bail};

#[derive(clap::Args, Debug, Default)]
pub struct BenchServeArgs {}

pub fn run(_args: &BenchServeArgs) -> Result<()> {
    bail!("`bench_serve` is not implemented yet")
}
