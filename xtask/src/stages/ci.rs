//! `ci`: every test stage in pipeline order, what `.ci/run` runs.

use anyhow::Result;

use super::{build, integration, lint, smoke, train, unit};

/// lint → smoke → unit → train → build & push → integration.
pub fn run() -> Result<()> {
    lint::run()?;
    smoke::run()?;
    unit::run()?;
    train::run(&train::TrainArgs::default())?;
    build::build(&build::BuildArgs::default())?;
    integration::run(&integration::IntegrationArgs::default())
}
