//! The file Prometheus discovers the app replicas from (`file_sd_configs`):
//! one target per running replica of either color, `<container>:32000`,
//! labelled `color`, `replica` and `tag`. Written after each observation,
//! only when what it would say changed, and always whole (by rename,
//! [`manifest_file::replace`]), so Prometheus never reads half a file and
//! follows replicas as they come and go.

use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use bluegreen::APP_PORT;
use controller_core::observed::{Observed, Replica};
use serde::Serialize;
use tracing::{info, warn};

/// One `file_sd` group: a single target and its labels.
#[derive(Debug, Serialize, PartialEq, Eq)]
struct Group<'a> {
    targets: [String; 1],
    labels: Labels<'a>,
}

#[derive(Debug, Serialize, PartialEq, Eq)]
struct Labels<'a> {
    color: &'a str,
    replica: String,
    tag: &'a str,
}

/// The targets file's contents for these replicas: the running ones,
/// ordered by color and replica number, so one set of replicas is always
/// the same bytes.
pub fn render(replicas: &[Replica]) -> String {
    let mut running: Vec<&Replica> = replicas.iter().filter(|r| r.is_running()).collect();
    running.sort_by_key(|r| (r.color.as_str(), r.replica, r.name.as_str()));
    let groups: Vec<Group> = running
        .into_iter()
        .map(|r| Group {
            targets: [format!("{}:{APP_PORT}", r.name)],
            labels: Labels { color: r.color.as_str(), replica: r.replica.to_string(), tag: &r.tag },
        })
        .collect();
    // A Vec of plain structs always serializes.
    let mut text = serde_json::to_string_pretty(&groups).unwrap_or_else(|_| "[]".into());
    text.push('\n');
    text
}

/// The writer of the targets file.
pub struct ScrapeTargets {
    path: PathBuf,
    /// What the file was last written with; `None` until the first write.
    written: Option<String>,
}

impl ScrapeTargets {
    pub fn new(path: PathBuf) -> ScrapeTargets {
        ScrapeTargets { path, written: None }
    }

    /// Writes the file for `observed` when it would change. A failure is
    /// logged and retried at the next observation: monitoring never holds
    /// a rollout up.
    pub fn observed(&mut self, observed: &Observed) {
        let text = render(&observed.replicas);
        if self.written.as_deref() == Some(text.as_str()) {
            return;
        }
        match self.write(&text) {
            Ok(()) => {
                let targets = observed.replicas.iter().filter(|r| r.is_running()).count();
                info!(path = %self.path.display(), targets, "scrape targets written");
                self.written = Some(text);
            }
            Err(e) => {
                warn!(path = %self.path.display(), error = %e, "cannot write the scrape targets")
            }
        }
    }

    fn write(&self, text: &str) -> std::result::Result<(), String> {
        // Created world-readable first: Prometheus runs as another user,
        // and the replacement keeps the mode of the file it replaces.
        if !self.path.exists() {
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o644)
                .open(&self.path)
                .map_err(|e| format!("cannot create {}: {e}", self.path.display()))?;
        }
        manifest_file::replace(&self.path, text.as_bytes()).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use bluegreen::Color;
    use controller_core::observed::{Health, State, Traffic};

    use super::*;

    fn replica(color: Color, n: u32, state: State) -> Replica {
        Replica {
            id: format!("id-{color}-{n}"),
            name: bluegreen::container_name(color, n),
            color,
            replica: n,
            tag: format!("tag-{color}"),
            image: None,
            digest: None,
            state,
            health: Health::Healthy,
            exit_code: None,
            started_at: None,
        }
    }

    fn observed(replicas: Vec<Replica>) -> Observed {
        Observed { replicas, traffic: Traffic::to(None), front: None, resolved: None }
    }

    #[test]
    fn lists_running_replicas_in_order_with_their_labels() {
        let text = render(&[
            replica(Color::Green, 1, State::Running),
            replica(Color::Blue, 2, State::Running),
            replica(Color::Blue, 1, State::Running),
            replica(Color::Blue, 3, State::Exited),
        ]);
        let groups: serde_json::Value = serde_json::from_str(&text).unwrap();
        let expected = serde_json::json!([
            {"targets": ["taxi-fare_app_blue_1:32000"],
             "labels": {"color": "blue", "replica": "1", "tag": "tag-blue"}},
            {"targets": ["taxi-fare_app_blue_2:32000"],
             "labels": {"color": "blue", "replica": "2", "tag": "tag-blue"}},
            {"targets": ["taxi-fare_app_green_1:32000"],
             "labels": {"color": "green", "replica": "1", "tag": "tag-green"}},
        ]);
        assert_eq!(groups, expected);
        assert_eq!(render(&[]), "[]\n");
    }

    #[test]
    fn writes_only_on_change_and_readable_by_others() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("targets.json");
        let mut t = ScrapeTargets::new(path.clone());
        t.observed(&observed(vec![replica(Color::Blue, 1, State::Running)]));
        let first = std::fs::read_to_string(&path).unwrap();
        assert!(first.contains("taxi-fare_app_blue_1:32000"), "{first}");
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o644);

        // The same replicas: the file is not touched.
        std::fs::write(&path, "sentinel").unwrap();
        t.observed(&observed(vec![replica(Color::Blue, 1, State::Running)]));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "sentinel");

        // Another replica comes, the first goes.
        t.observed(&observed(vec![
            replica(Color::Blue, 1, State::Exited),
            replica(Color::Green, 1, State::Running),
        ]));
        let now = std::fs::read_to_string(&path).unwrap();
        assert!(now.contains("taxi-fare_app_green_1:32000") && !now.contains("blue"), "{now}");
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o644);
    }

    #[test]
    fn a_failed_write_is_retried() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing-dir/targets.json");
        let mut t = ScrapeTargets::new(path.clone());
        let o = observed(vec![replica(Color::Blue, 1, State::Running)]);
        t.observed(&o);
        assert!(!path.exists());
        std::fs::create_dir(path.parent().unwrap()).unwrap();
        t.observed(&o);
        assert!(path.exists());
    }
}
