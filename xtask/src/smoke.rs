//! TODO: being written.

use anyhow::{Result, bail};

pub fn run() -> Result<()> {
    bail!("`smoke` is not implemented yet")
}
