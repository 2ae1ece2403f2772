//! Crash points, so the end-to-end tests can prove that a controller
//! killed at the narrowest moments of a rollout (between writing
//! upstream.conf and reloading nginx, say) converges after a restart.
//!
//! A point fires only when the file `<state dir>/crash-at` names it: the
//! file is removed first (so it fires once) and the process aborts at
//! once, as under SIGKILL: no step is finished, nothing is saved. Without
//! that file, which only a test writes, a point does nothing.

use std::path::PathBuf;
use std::sync::OnceLock;

static FILE: OnceLock<PathBuf> = OnceLock::new();

/// Where the points look; set once at start.
pub fn arm(state_dir: &std::path::Path) {
    let _ = FILE.set(state_dir.join("crash-at"));
}

/// Aborts the process if `crash-at` names `name`.
pub fn point(name: &str) {
    let Some(file) = FILE.get() else { return };
    let Ok(wanted) = std::fs::read_to_string(file) else { return };
    if wanted.trim() == name && std::fs::remove_file(file).is_ok() {
        eprintln!("crash point {name}: aborting as asked by {}", file.display());
        std::process::abort();
    }
}
