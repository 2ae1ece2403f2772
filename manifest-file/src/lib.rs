//! The files the controller and xtask both write. Each is replaced whole
//! ([`replace`]): a reader (nginx, a restarted controller, the manifest
//! watcher) sees the old content or the new, never a part. The live
//! manifest has one writer, [`write_tag`], used by the controller's API,
//! `controller set-image --manifest` and xtask alike.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use controller_core::manifest::{self, ManifestError};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("manifest: {0}")]
    Manifest(#[from] ManifestError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io { path: path.display().to_string(), source }
}

/// The file a path names, through any symbolic links: replacing the
/// link itself would turn it into a plain file.
fn target(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned())
}

/// Writes `bytes` to a fresh temporary file beside `path` (a unique name,
/// so two writers never share one), syncs it, renames it over `path` and
/// syncs the directory. A symbolic link stays a link: its target is
/// replaced.
pub fn replace(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let path = target(path);
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(io(&path))?;
    tmp.write_all(bytes).map_err(io(&path))?;
    tmp.as_file().sync_all().map_err(io(&path))?;
    // The mode of the file it replaces, so a deploy does not change who
    // may read the manifest.
    if let Ok(meta) = std::fs::metadata(&path) {
        let _ = tmp.as_file().set_permissions(meta.permissions());
    }
    tmp.persist(&path)
        .map_err(|e| Error::Io { path: path.display().to_string(), source: e.error })?;
    if let Ok(d) = File::open(dir) {
        // Not every file system syncs directories; the rename stands.
        let _ = d.sync_all();
    }
    Ok(())
}

/// Sets `spec.image.tag` in the manifest at `path`, keeping the rest of
/// the file as it was. Writers are serialised across processes by an
/// exclusive lock on `.<name>.lock` beside the file, so two deploys never
/// read the same text and both write.
pub fn write_tag(path: &Path, tag: &str) -> Result<(), Error> {
    let file = target(path);
    let dir = file.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = file.file_name().and_then(|n| n.to_str()).unwrap_or("manifest");
    let lock_path = dir.join(format!(".{name}.lock"));
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io(&lock_path))?;
    lock.lock().map_err(io(&lock_path))?;
    let text = std::fs::read_to_string(&file).map_err(io(&file))?;
    let edited = manifest::set_tag(&text, tag)?;
    replace(&file, edited.as_bytes())
    // The lock is released when `lock` is dropped.
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# keep me\napiVersion: deploy.taxi-fare.io/v1\nkind: Rollout\nmetadata:\n  name: t\n\
                        spec:\n  image:\n    repository: r/s\n    tag: a # ci\n";

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !n.ends_with(".lock"))
            .collect();
        names.sort();
        names
    }

    #[test]
    fn replaces_the_whole_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("upstream.conf");
        replace(&path, b"first, longer content").unwrap();
        replace(&path, b"second").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "second");
        assert_eq!(names(dir.path()), ["upstream.conf"]);
    }

    #[test]
    fn edits_in_place_and_refuses_a_broken_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rollout.yaml");
        std::fs::write(&path, TEXT).unwrap();
        write_tag(&path, "b").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), TEXT.replace("tag: a", "tag: b"));
        std::fs::write(&path, "spec: [").unwrap();
        assert!(matches!(write_tag(&path, "c"), Err(Error::Manifest(_))));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "spec: [");
    }

    #[test]
    fn a_symlinked_manifest_stays_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.yaml");
        std::fs::write(&real, TEXT).unwrap();
        let link = dir.path().join("rollout.yaml");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        write_tag(&link, "b").unwrap();
        assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
        assert!(std::fs::read_to_string(&real).unwrap().contains("tag: b # ci"));
    }

    #[test]
    fn concurrent_writers_are_serialised() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rollout.yaml");
        std::fs::write(&path, TEXT).unwrap();
        let writers: Vec<_> = (0..8)
            .map(|i| {
                let path = path.clone();
                std::thread::spawn(move || {
                    for j in 0..20 {
                        write_tag(&path, &format!("t{i}-{j}")).unwrap();
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        let text = std::fs::read_to_string(&path).unwrap();
        // Whichever writer came last, the file is whole and parses.
        let desired = manifest::parse(&text).unwrap();
        assert!(desired.tag.ends_with("-19"), "{}", desired.tag);
        assert!(text.starts_with("# keep me\n"));
        assert_eq!(names(dir.path()), ["rollout.yaml"]);
    }
}
