//! The manifest on disk: the one place the controller's API and the CLI
//! change it, always as a whole-file replacement.

use std::path::Path;

use crate::atomic_file;
use crate::error::{Error, Result};
use crate::manifest;

fn io_error(path: &Path, source: std::io::Error) -> Error {
    Error::ManifestIo { path: path.display().to_string(), source }
}

/// Sets `spec.image.tag` in the file, keeping the rest of it as it was.
pub fn write_tag(path: &Path, tag: &str) -> Result<()> {
    let text = std::fs::read_to_string(path).map_err(|e| io_error(path, e))?;
    let edited = manifest::set_tag(&text, tag)?;
    atomic_file::write(path, edited.as_bytes()).map_err(|e| io_error(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edits_in_place_and_refuses_a_broken_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rollout.yaml");
        let text = "# keep me\napiVersion: deploy.taxi-fare.io/v1\nkind: Rollout\nmetadata:\n  name: t\n\
                    spec:\n  image:\n    repository: r/s\n    tag: a # ci\n";
        std::fs::write(&path, text).unwrap();
        write_tag(&path, "b").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text.replace("tag: a", "tag: b"));
        std::fs::write(&path, "spec: [").unwrap();
        assert!(write_tag(&path, "c").is_err());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "spec: [");
    }
}
