//! The files the controller and xtask both write. Each is replaced whole
//! ([`replace`]): a reader (nginx, a restarted controller, the manifest
//! watcher) sees the old content or the new, never a part. The live
//! manifest has one writer, [`write_tag`], used by the controller's API,
//! `controller set-image --manifest` and xtask alike. What the controller
//! reads back ([`read_bounded`]) must be a regular file of bounded size.

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

/// The most the controller reads of a manifest, a record or a router
/// configuration: each is a few KiB.
pub const MAX_READ: u64 = 1 << 20;

/// Reads a regular file of at most `cap` bytes. A FIFO, a device or a
/// directory is refused at once (it is opened without blocking), and so is
/// a larger file, so a file put in the way can neither hang nor exhaust
/// the reader.
pub fn read_bounded(path: &Path, cap: u64) -> std::io::Result<String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a regular file"));
    }
    if meta.len() > cap {
        let message = format!("{} bytes, more than the {cap} read", meta.len());
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, message));
    }
    let mut text = String::new();
    file.take(cap).read_to_string(&mut text)?;
    Ok(text)
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
    let text = read_bounded(&file, MAX_READ).map_err(io(&file))?;
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
    fn reads_are_of_bounded_regular_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, "12345").unwrap();
        assert_eq!(read_bounded(&path, 5).unwrap(), "12345");
        assert!(read_bounded(&path, 4).unwrap_err().to_string().contains("more than"));
        assert!(read_bounded(dir.path(), 5).is_err());
        let fifo = dir.path().join("fifo");
        let name = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path; mkfifo only creates a node.
        assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o600) }, 0);
        let started = std::time::Instant::now();
        let e = read_bounded(&fifo, 5).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
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
