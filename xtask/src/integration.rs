//! TODO: being written.

use anyhow::{Result, bail};

#[derive(clap::Args, Debug, Default)]
pub struct IntegrationArgs {}

pub fn run(_args: &IntegrationArgs) -> Result<()> {
    bail!("`integration` is not implemented yet")
}
