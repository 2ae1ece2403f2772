//! The images the scenarios deploy, all made from the real service image
//! of the last build and pushed under tags that start with `e2e-`: two
//! good tags of the same image, one whose model file is missing (it runs
//! but never turns ready: a level-1 rollback), one that listens on a port
//! nginx does not proxy to (healthy, but unreachable through nginx: a
//! level-2 rollback), and a tag that is never pushed.

use std::fs;

use anyhow::{Context, Result};
use bluegreen::service_image;

use crate::effects::docker::{self, docker};
use crate::effects::paths;
use crate::effects::process::run;
use crate::stages::artifacts::Built;

pub const GOOD_A: &str = "e2e-good-a";
pub const GOOD_B: &str = "e2e-good-b";
pub const NO_MODEL: &str = "e2e-no-model";
pub const WRONG_PORT: &str = "e2e-wrong-port";
pub const NEVER_BUILT: &str = "e2e-never-built";

/// Tags and pushes the scenario images.
pub fn prepare(built: &Built) -> Result<()> {
    for tag in [GOOD_A, GOOD_B] {
        run(docker(["tag", &built.service, &service_image(tag)]))?;
        docker::push(&service_image(tag))?;
    }
    let variants =
        [(NO_MODEL, "ENV MODEL_PATH=/model/missing.json"), (WRONG_PORT, "ENV PORT=32001")];
    for (tag, change) in variants {
        let context = paths::target().join("images/e2e").join(tag);
        paths::remove_dir_if_present(&context)?;
        fs::create_dir_all(&context)?;
        let dockerfile = format!(
            "# A broken variant of the real service image, for `cargo xtask e2e`.\nFROM {}\n{change}\n",
            built.service
        );
        fs::write(context.join("Dockerfile"), dockerfile)
            .with_context(|| format!("cannot write the {tag} Dockerfile"))?;
        docker::build(&context, &[&service_image(tag)], &[])?;
        docker::push(&service_image(tag))?;
    }
    Ok(())
}
