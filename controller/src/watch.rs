//! The triggers from outside: the manifest's directory (notify; editors
//! and CI replace files by rename, so the directory is watched and events
//! matched by file name) and the Docker events of the project's
//! containers (hints only: the stream ends when the daemon restarts and
//! can miss events, so it is reconnected with `since`, and the periodic
//! resync stays the safety net).

use std::path::Path;
use std::time::Duration;

use futures_util::StreamExt;
use notify::RecursiveMode;
use notify_debouncer_full::{DebounceEventResult, new_debouncer};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::controller::Trigger;
use crate::docker::Engine;

/// Watches the manifest's directory; the returned guard stops watching
/// when dropped.
pub fn manifest(path: &Path, triggers: mpsc::Sender<Trigger>) -> notify::Result<impl Drop> {
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

/// Forwards Docker events as triggers, reconnecting for ever.
pub async fn docker_events(engine: Engine, triggers: mpsc::Sender<Trigger>) {
    let mut since: Option<i64> = None;
    loop {
        let mut events = engine.events(since);
        while let Some(event) = events.next().await {
            match event {
                Ok(e) => {
                    since = e.time.or(since);
                    let what = e.action.unwrap_or_default();
                    debug!(event = %what, "docker event");
                    let _ = triggers.try_send(Trigger::Docker(what));
                }
                Err(e) => {
                    warn!(error = %e, "the Docker event stream failed; reconnecting");
                    break;
                }
            }
        }
        // Whatever was missed is found by the reconcile this triggers.
        let _ = triggers.try_send(Trigger::Docker("reconnect".into()));
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
