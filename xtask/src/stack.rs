//! TODO: being written.

use anyhow::{Result, bail};

#[derive(clap::Args, Debug, Default)]
pub struct UpArgs {}

pub fn up(_args: &UpArgs) -> Result<()> {
    bail!("`stack` is not implemented yet")
}

pub fn down() -> Result<()> {
    bail!("`down` is not implemented yet")
}
