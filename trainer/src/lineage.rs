//! What the artifact records about where it came from: the data's hash,
//! the trainer and commit, the time, and a model version an operator can read.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::civil::DateTime;

/// The trainer's version, recorded in every artifact.
pub const TRAINER_VERSION: &str = env!("CARGO_PKG_VERSION");

/// A model version such as `ols-20261126T224800Z-d81269c4`: the method, when
/// it was trained, and the first 8 hex digits of the data's sha256.
pub fn model_version(at: &DateTime, data_sha256: &str) -> String {
    let short: String = data_sha256.chars().take(8).collect();
    format!("ols-{}-{short}", at.compact())
}

/// The commit being trained from: `GIT_COMMIT` when CI sets it (passed in by
/// the caller), else `git rev-parse HEAD` in the current directory, else none.
pub fn git_commit(from_env: Option<&str>) -> Option<String> {
    if let Some(c) = from_env.map(str::trim).filter(|c| !c.is_empty()) {
        return Some(c.to_owned());
    }
    let out = Command::new("git")
        .args(["rev-parse", "HEAD"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let sha = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (out.status.success() && !sha.is_empty()).then_some(sha)
}

/// The data file as recorded: its path as given on the command line, which
/// is what an operator recognises (the sha256 pins the content).
pub fn data_file(path: &Path) -> String {
    path.display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readable_model_version() {
        let at = DateTime::from_unix(1_431_028_326);
        assert_eq!(model_version(&at, "d81269c44f2c"), "ols-20150507T195206Z-d81269c4");
    }

    #[test]
    fn commit_from_the_environment_wins() {
        assert_eq!(git_commit(Some(" abc123 ")).as_deref(), Some("abc123"));
    }
}
