//! Virtualenvs for the original (Python) stack the benchmarks compare with,
//! installed with pip on first use and cached under `target/`.

use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::effects::paths;
use crate::effects::process::{cmd, run};

/// Returns the interpreter of a virtualenv named `name` that has
/// `packages` installed, creating or completing it as needed.
pub fn python(name: &str, packages: &[&str]) -> Result<PathBuf> {
    let dir = paths::target().join("venv").join(name);
    let python = dir.join("bin").join("python");
    let stamp = dir.join(".installed");
    let wanted = packages.join("\n");
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(wanted.as_str()) {
        return Ok(python);
    }
    if !python.exists() {
        let mut create = cmd("python3", ["-m", "venv"]);
        create.arg(&dir);
        run(create).context("creating a virtualenv needs python3 with the venv module")?;
    }
    let mut pip = cmd(python.to_string_lossy().as_ref(), ["-m", "pip", "install", "-q"]);
    pip.args(packages);
    run(pip)?;
    std::fs::write(&stamp, wanted)?;
    Ok(python)
}
