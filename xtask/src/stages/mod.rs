//! The pipeline stages, one module each, in the order `ci` runs them:
//! lint → smoke → unit → train → build & push → integration → deploy. Each
//! is one CI job (`cargo xtask <stage>`), so the pipeline runs the same way
//! on a laptop, in CI and in `.ci/run`; `pipeline` holds the CI file to
//! that.

pub mod artifacts;
pub mod build;
pub mod ci;
pub mod deploy;
pub mod integration;
pub mod lint;
#[cfg(test)]
mod pipeline;
pub mod smoke;
pub mod train;
pub mod unit;
