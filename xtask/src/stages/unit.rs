//! Stage unit: every crate's unit and in-process tests.

use anyhow::Result;

use crate::effects::deps;
use crate::effects::process::{self, cmd};

pub fn run() -> Result<()> {
    deps::ensure(deps::TRAINER)?;
    process::run(cmd("cargo", ["test", "--workspace"]))
}
