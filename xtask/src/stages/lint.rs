//! Stage lint: rustfmt and clippy (every warning an error) on every target
//! of the workspace.

use anyhow::Result;

use crate::effects::deps;
use crate::effects::process::{self, cmd};

pub fn run() -> Result<()> {
    // Clippy compiles the trainer, which links LAPACK.
    deps::ensure(deps::TRAINER)?;
    process::run(cmd("cargo", ["fmt", "--all", "--check"]))?;
    process::run(cmd("cargo", ["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"]))
}
