//! TODO: being written.

use anyhow::{Result, bail};

#[derive(clap::Args, Debug, Default)]
pub struct TrainArgs {}

pub fn run(_args: &TrainArgs) -> Result<()> {
    bail!("`train` is not implemented yet")
}
