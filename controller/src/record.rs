//! What the controller remembers: the rollout in flight (its stage and
//! deadlines), finished rollouts, and the desired state that last failed.
//!
//! Only what cannot be observed is kept here: which rollout is under way
//! and why it ended. It is persisted after every change (one small JSON
//! file, replaced atomically), so a controller killed at any point resumes
//! the rollout where the record says, against what it observes then.

use bluegreen::Color;
use serde::{Deserialize, Serialize};

use crate::analysis::{Figures, Sample};
use crate::clock::Timestamp;
use crate::gates::Diff;

/// An operator's word on a paused rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operator {
    Promote,
    Abort,
}

/// The analysis window after a switch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Watch {
    pub until: Timestamp,
    pub next_at: Timestamp,
    /// The new color's counters when the window opened.
    pub baseline: Option<Sample>,
    pub figures: Option<Figures>,
}
use crate::manifest::Desired;

/// How many finished rollouts the history keeps.
const HISTORY: usize = 100;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// The revision the next rollout gets (1, 2, …).
    pub next_revision: u64,
    pub rollout: Option<Rollout>,
    /// Finished rollouts, newest first.
    pub history: Vec<Finished>,
    /// The desired state whose rollout failed: not retried until the
    /// manifest changes.
    pub failed: Option<Failure>,
    /// When nginx last loaded an upstream.conf of ours: a live container
    /// (re)started after it has an address nginx has not resolved.
    #[serde(default)]
    pub last_reload_at: Option<Timestamp>,
}

/// A rollout under way.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rollout {
    pub revision: u64,
    pub tag: String,
    /// The color being brought up.
    pub color: Color,
    /// The color live when it began, and its tag and replica count.
    pub from: Option<Color>,
    pub from_tag: Option<String>,
    pub from_replicas: u32,
    /// The desired state it carries out.
    pub desired: Desired,
    pub stage: Stage,
    pub started_at: Timestamp,
    pub stage_started_at: Timestamp,
    pub steps: Vec<StepTime>,
    pub healthy_at: Option<Timestamp>,
    pub switched_at: Option<Timestamp>,
    /// When it was given up, and when traffic was back on the previous
    /// color (level 2).
    #[serde(default)]
    pub failed_at: Option<Timestamp>,
    #[serde(default)]
    pub restored_at: Option<Timestamp>,
    /// What the gates measured users would see change.
    #[serde(default)]
    pub diff: Option<Diff>,
    /// The analysis after the switch, while it runs.
    #[serde(default)]
    pub watch: Option<Watch>,
    /// What an operator asked of a paused rollout.
    #[serde(default)]
    pub operator: Option<Operator>,
    /// Times the controller restarted while this rollout was in flight.
    #[serde(default)]
    pub restarts: u32,
}

/// Where a rollout is. Each stage is safe to re-enter after a crash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "snake_case")]
pub enum Stage {
    /// Removing leftovers of the idle color.
    Prepare,
    /// Pulling the image and starting the replicas.
    Start,
    /// Waiting for Docker health `healthy` on every replica.
    Health { deadline: Timestamp },
    /// The model gates: golden trips, quality, the prediction diff.
    Gates,
    /// Proven, on the preview port, waiting for `controller promote`.
    Paused,
    /// Pointing nginx at the new color.
    Switch,
    /// Probing the new color through nginx.
    Verify,
    /// Keeping the old color until the delay ends, then removing it.
    ScaleDown { not_before: Timestamp },
    /// Undoing the rollout: traffic back, new color removed.
    Rollback { level: u8, reason: String },
}

impl Stage {
    pub fn name(&self) -> &'static str {
        match self {
            Stage::Prepare => "prepare",
            Stage::Start => "start",
            Stage::Health { .. } => "health",
            Stage::Gates => "gates",
            Stage::Paused => "paused",
            Stage::Switch => "switch",
            Stage::Verify => "verify",
            Stage::ScaleDown { .. } => "scale_down",
            Stage::Rollback { .. } => "rollback",
        }
    }

    /// Whether traffic may already have moved to the new color.
    pub fn after_switch(&self) -> bool {
        matches!(self, Stage::Switch | Stage::Verify | Stage::ScaleDown { .. })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepTime {
    pub step: String,
    pub ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Succeeded,
    RolledBack,
}

/// A finished rollout, as /status and `controller history` show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finished {
    pub revision: u64,
    pub tag: String,
    pub color: Color,
    pub from_color: Option<Color>,
    pub from_tag: Option<String>,
    pub result: Outcome,
    /// 1: traffic never moved; 2: restored after a failed probe through
    /// nginx; `None` when it succeeded.
    pub level: Option<u8>,
    pub reason: Option<String>,
    pub started_at: Timestamp,
    pub finished_at: Timestamp,
    pub duration_ms: u64,
    /// Step timings in milliseconds, in order.
    pub steps: Vec<StepTime>,
    /// From the gates passed (every replica healthy) to nginx reloaded on
    /// the new color; the gates' own time is their step's.
    pub healthy_to_switched_ms: Option<u64>,
    /// The fares users would see change, over the golden trips.
    #[serde(default)]
    pub diff: Option<Diff>,
    /// What the analysis after the switch saw last.
    #[serde(default)]
    pub analysis: Option<Figures>,
    /// From the rollout given up to nginx reloaded on the previous color
    /// (level 2).
    #[serde(default)]
    pub failed_to_restored_ms: Option<u64>,
    /// Controller restarts during this rollout.
    pub restarts: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub fingerprint: String,
    pub tag: String,
    pub level: u8,
    pub reason: String,
}

impl Record {
    /// Starts a rollout of `desired` into `color`.
    pub fn begin(
        &mut self,
        desired: &Desired,
        color: Color,
        from: Option<(Color, String, u32)>,
        now: Timestamp,
    ) {
        self.next_revision = self.next_revision.max(1);
        let revision = self.next_revision;
        self.next_revision += 1;
        let (from, from_tag, from_replicas) = match from {
            Some((c, t, n)) => (Some(c), Some(t), n),
            None => (None, None, 0),
        };
        self.rollout = Some(Rollout {
            revision,
            tag: desired.tag.clone(),
            color,
            from,
            from_tag,
            from_replicas,
            desired: desired.clone(),
            stage: Stage::Prepare,
            started_at: now,
            stage_started_at: now,
            steps: Vec::new(),
            healthy_at: None,
            switched_at: None,
            failed_at: None,
            restored_at: None,
            diff: None,
            watch: None,
            operator: None,
            restarts: 0,
        });
    }

    /// Moves the rollout in flight to `stage`, timing the one it leaves.
    pub fn enter(&mut self, stage: Stage, now: Timestamp) {
        let Some(r) = self.rollout.as_mut() else { return };
        let ms = now.millis_since(r.stage_started_at);
        // A stage re-entered after a restart keeps one entry.
        match r.steps.iter_mut().find(|s| s.step == r.stage.name()) {
            Some(s) => s.ms += ms,
            None => r.steps.push(StepTime { step: r.stage.name().to_owned(), ms }),
        }
        match stage {
            Stage::Switch => r.healthy_at = Some(now),
            Stage::Verify => r.switched_at = Some(now),
            Stage::Rollback { .. } => r.failed_at = r.failed_at.or(Some(now)),
            _ => {}
        }
        r.stage = stage;
        r.stage_started_at = now;
    }

    /// Ends the rollout in flight: into the history, and into `failed`
    /// when it was rolled back. Returns the finished record.
    pub fn finish(&mut self, now: Timestamp) -> Option<Finished> {
        let stage = self.rollout.as_ref()?.stage.clone();
        self.enter(stage.clone(), now);
        let r = self.rollout.take()?;
        let (result, level, reason) = match stage {
            Stage::Rollback { level, reason } => (Outcome::RolledBack, Some(level), Some(reason)),
            _ => (Outcome::Succeeded, None, None),
        };
        self.failed = match (level, &reason) {
            (Some(level), Some(reason)) => Some(Failure {
                fingerprint: r.desired.fingerprint(),
                tag: r.tag.clone(),
                level,
                reason: reason.clone(),
            }),
            _ => None,
        };
        let healthy_to_switched_ms = match (r.healthy_at, r.switched_at) {
            (Some(h), Some(s)) => Some(s.millis_since(h)),
            _ => None,
        };
        let failed_to_restored_ms = match (r.failed_at, r.restored_at) {
            (Some(f), Some(s)) => Some(s.millis_since(f)),
            _ => None,
        };
        let finished = Finished {
            revision: r.revision,
            tag: r.tag,
            color: r.color,
            from_color: r.from,
            from_tag: r.from_tag,
            result,
            level,
            reason,
            started_at: r.started_at,
            finished_at: now,
            duration_ms: now.millis_since(r.started_at),
            steps: r.steps,
            healthy_to_switched_ms,
            diff: r.diff,
            analysis: r.watch.as_ref().and_then(|w| w.figures),
            failed_to_restored_ms,
            restarts: r.restarts,
        };
        self.history.insert(0, finished.clone());
        self.history.truncate(HISTORY);
        Some(finished)
    }

    /// Notes that traffic is back on the previous color.
    pub fn restored(&mut self, now: Timestamp) {
        if let Some(r) = self.rollout.as_mut() {
            r.restored_at = r.restored_at.or(Some(now));
        }
    }

    /// Notes that the controller restarted: the rollout in flight, if any,
    /// was interrupted and is resumed.
    pub fn note_restart(&mut self) {
        if let Some(r) = self.rollout.as_mut() {
            r.restarts += 1;
        }
    }

    /// The newest succeeded tag other than `current`: where `controller
    /// rollback` goes.
    pub fn previous_good_tag(&self, current: Option<&str>) -> Option<&str> {
        self.history
            .iter()
            .filter(|f| f.result == Outcome::Succeeded)
            .map(|f| f.tag.as_str())
            .find(|t| Some(*t) != current)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::desired;

    #[test]
    fn a_rollout_is_timed_stage_by_stage_and_lands_in_history() {
        let mut r = Record::default();
        r.begin(&desired("v1"), Color::Blue, None, Timestamp(1000));
        r.enter(Stage::Start, Timestamp(1100));
        r.enter(Stage::Health { deadline: Timestamp(9000) }, Timestamp(1500));
        r.enter(Stage::Gates, Timestamp(2480));
        r.enter(Stage::Switch, Timestamp(2500));
        r.enter(Stage::Verify, Timestamp(2600));
        r.enter(Stage::ScaleDown { not_before: Timestamp(2700) }, Timestamp(2700));
        let f = r.finish(Timestamp(3000)).unwrap();
        assert_eq!(f.result, Outcome::Succeeded);
        assert_eq!((f.revision, f.healthy_to_switched_ms), (1, Some(100)));
        let ms: Vec<(&str, u64)> = f.steps.iter().map(|s| (s.step.as_str(), s.ms)).collect();
        assert_eq!(
            ms,
            [
                ("prepare", 100),
                ("start", 400),
                ("health", 980),
                ("gates", 20),
                ("switch", 100),
                ("verify", 100),
                ("scale_down", 300)
            ]
        );
        assert_eq!(r.history.len(), 1);
        assert!(r.rollout.is_none() && r.failed.is_none());
        assert_eq!(r.next_revision, 2);
    }

    #[test]
    fn a_rolled_back_rollout_is_remembered_as_failed() {
        let mut r = Record::default();
        r.begin(&desired("v2"), Color::Green, Some((Color::Blue, "v1".into(), 1)), Timestamp(0));
        r.enter(Stage::Rollback { level: 1, reason: "unhealthy".into() }, Timestamp(10));
        let f = r.finish(Timestamp(20)).unwrap();
        assert_eq!((f.result, f.level), (Outcome::RolledBack, Some(1)));
        let failed = r.failed.clone().unwrap();
        assert_eq!((failed.tag.as_str(), failed.level), ("v2", 1));
        assert_eq!(failed.fingerprint, desired("v2").fingerprint());
    }

    #[test]
    fn previous_good_tag_skips_failures_and_the_current_tag() {
        let mut r = Record::default();
        for (tag, ok) in [("v1", true), ("v2", true), ("bad", false)] {
            r.begin(&desired(tag), Color::Blue, None, Timestamp(0));
            if !ok {
                r.enter(Stage::Rollback { level: 1, reason: "x".into() }, Timestamp(1));
            }
            r.finish(Timestamp(2));
        }
        assert_eq!(r.previous_good_tag(Some("v2")), Some("v1"));
        assert_eq!(r.previous_good_tag(Some("bad")), Some("v2"));
        assert_eq!(r.previous_good_tag(None), Some("v2"));
    }

    #[test]
    fn a_restart_is_counted_on_the_rollout_in_flight() {
        let mut r = Record::default();
        r.note_restart();
        r.begin(&desired("v1"), Color::Blue, None, Timestamp(0));
        r.note_restart();
        assert_eq!(r.rollout.as_ref().unwrap().restarts, 1);
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<Record>(&json).unwrap(), r);
    }
}
