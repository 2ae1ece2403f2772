//! TODO: being written.

use anyhow::{Result, bail};

#[derive(clap::Args, Debug, Default)]
pub struct BenchTrainArgs {}

pub fn run(_args: &BenchTrainArgs) -> Result<()> {
    bail!("`bench_train` is not implemented yet")
}
