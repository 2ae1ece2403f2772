//! The manifest as a trigger: its directory is watched through notify
//! (editors and CI replace files by rename, so the directory is watched
//! and events matched by file name). The platform's own events come from
//! `platform::Workloads::events`.

use std::path::Path;
use std::time::Duration;

use notify::RecursiveMode;
use notify_debouncer_full::{DebounceEventResult, new_debouncer};
use tokio::sync::mpsc;

use crate::reconciler::Trigger;

/// Watches the manifest's directory; the returned guard stops watching
/// when dropped.
pub fn manifest(path: &Path, triggers: mpsc::Sender<Trigger>) -> notify::Result<impl Drop + use<>> {
    let dir =
        path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_owned();
    let name = path.file_name().map(|n| n.to_owned());
    let mut debouncer =
        new_debouncer(Duration::from_millis(100), None, move |result: DebounceEventResult| {
            let Ok(events) = result else { return };
            let ours =
                events.iter().any(|e| e.paths.iter().any(|p| p.file_name() == name.as_deref()));
            if ours {
                // The loop drains duplicates; a full channel already has one.
                let _ = triggers.try_send(Trigger::Manifest);
            }
        })?;
    debouncer.watch(&dir, RecursiveMode::NonRecursive)?;
    Ok(debouncer)
}
