//! The controller image: the statically linked `controller` binary on
//! `scratch` (images/controller/Dockerfile).

use std::path::Path;

use anyhow::Result;

use crate::effects::docker;

/// The controller image repository (local: it is never pulled).
pub const REPOSITORY: &str = "taxi/controller";

/// Builds the image from the binary, tagged `reference`.
pub fn build_image(binary: &Path, reference: &str, build_args: &[(&str, String)]) -> Result<()> {
    let context = super::fresh_context("controller")?;
    super::copy_with_mode(binary, &context.join("controller"), 0o755)?;
    docker::build(&context, &[reference], build_args)
}
