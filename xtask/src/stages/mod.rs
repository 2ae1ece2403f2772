//! The pipeline stages, one module each, in the order the CI jobs run
//! them: lint → smoke → unit → train → build & push → integration →
//! deploy. Each is one CI job (`cargo xtask <stage>`), so the pipeline
//! runs the same way on a laptop, in CI and in `.ci/run`; `artifacts` is
//! what they hand each other. Running them all is `ci`'s job, not a stage.

pub mod artifacts;
pub mod build;
pub mod deploy;
pub mod integration;
pub mod lint;
pub mod smoke;
pub mod train;
pub mod unit;
