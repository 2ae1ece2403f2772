//! The deployment controller's end-to-end tests on the real Docker Engine,
//! nginx and registry, and the deploy benchmark: test code, kept out of
//! xtask, which runs these binaries (`cargo xtask e2e`, `cargo xtask bench
//! deploy`) and lends them its stack, images and effects.
//!
//! [`suite`] runs the [`scenarios`], each on a fresh stack ([`fixture`])
//! with images made from the last build ([`images`]), the [`hostile`]
//! colors' among them; [`bench_deploy`] measures what clients see through
//! the [`load`] generator; [`page`] checks the status page in a headless
//! browser.

pub mod bench_deploy;
pub mod canary;
pub mod fixture;
pub mod flood;
pub mod hostile;
pub mod identity;
pub mod images;
pub mod load;
pub mod nodes;
pub mod notifications;
pub mod page;
pub mod privilege;
pub mod prometheus;
pub mod scenarios;
pub mod suite;

use std::process::ExitCode;

/// How a binary ends: the error chain printed once, as xtask prints its own.
pub fn exit(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("e2e: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
