//! Writing result files atomically: a temporary file in the same directory,
//! flushed and synced, then renamed over the target. A reader (the service
//! loading model.json, CI collecting artifacts) never sees a half-written file.

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;

use crate::error::TrainError;

/// Atomically replaces `path` with `contents`.
pub fn write_atomic(path: &Path, contents: &[u8]) -> Result<(), TrainError> {
    write_atomic_with(path, |file| file.write_all(contents))
}

/// Atomically replaces `path` with what `write` writes into the file: for
/// contents streamed rather than held in memory.
pub fn write_atomic_with(
    path: &Path,
    write: impl FnOnce(&mut File) -> io::Result<()>,
) -> Result<(), TrainError> {
    let err = |source| TrainError::Write { path: path.to_owned(), source };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new().prefix(".tmp-").tempfile_in(dir).map_err(err)?;
    write(tmp.as_file_mut()).map_err(err)?;
    // Temporary files are private; results are meant to be read by others
    // (the service may run as another user).
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file().set_permissions(std::fs::Permissions::from_mode(0o644)).map_err(err)?;
    }
    tmp.as_file().sync_all().map_err(err)?;
    tmp.persist(path).map_err(|e| err(e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_and_leaves_no_temporaries() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("model.json");
        write_atomic(&target, b"one").unwrap();
        write_atomic(&target, b"two").unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn missing_directory_names_the_file() {
        let err = write_atomic(Path::new("/nonexistent-dir/m.json"), b"x").unwrap_err();
        assert!(err.to_string().contains("/nonexistent-dir/m.json"), "{err}");
    }
}
