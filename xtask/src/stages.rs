//! The pipeline stages that are plain cargo invocations, and `ci`, which
//! runs every test stage in pipeline order.

use anyhow::Result;

use crate::process::{cmd, run};
use crate::{deps, images, integration, smoke, train};

pub fn lint() -> Result<()> {
    deps::ensure(deps::TRAINER)?;
    run(cmd("cargo", ["fmt", "--all", "--check"]))?;
    run(cmd("cargo", ["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"]))
}

pub fn unit() -> Result<()> {
    deps::ensure(deps::TRAINER)?;
    run(cmd("cargo", ["test", "--workspace"]))
}

/// lint → smoke → unit → train → build & push → integration.
pub fn ci() -> Result<()> {
    lint()?;
    smoke::run()?;
    unit()?;
    train::run(&train::TrainArgs::default())?;
    images::build(&images::BuildArgs::default())?;
    integration::run(&integration::IntegrationArgs::default())
}
