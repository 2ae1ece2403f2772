//! TODO: being written.

use anyhow::{Result, bail};

#[derive(clap::Args, Debug, Default)]
pub struct BuildArgs {}

pub fn build(_args: &BuildArgs) -> Result<()> {
    bail!("`images` is not implemented yet")
}
