//! What the controller remembers: the rollout in flight (its stage and
//! deadlines), finished rollouts, and the desired state that last failed.
//!
//! Only what cannot be observed is kept here: which rollout is under way
//! and why it ended. The shell persists it after every change (one small
//! JSON file, replaced atomically), so a controller killed at any point
//! resumes the rollout where the record says, against what it observes
//! then. What changes it is [`crate::machine::apply`].

use bluegreen::Color;
use model::Trip;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::analysis::{Figures, Sample};
use crate::clock::Timestamp;
use crate::compare::{Compared, Pair};
use crate::gates::{Diff, Known, Reading};
use crate::manifest::Desired;
use crate::shadow::Judgement;

/// How many finished rollouts the history keeps.
const HISTORY: usize = 100;

/// How far a failed rollout had gone when it was rolled back. In JSON the
/// number 1, 2, 3 or 4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// 1: refused before traffic moved.
    BeforeSwitch,
    /// 2: traffic restored after the check through the front failed.
    AfterProbe,
    /// 3: traffic restored after the analysis of live traffic failed.
    AfterAnalysis,
    /// 4: a canary's share of traffic given back to the stable color (a
    /// comparison failed, an operator aborted, a step was refused).
    Canary,
}

impl Level {
    pub fn number(self) -> u8 {
        match self {
            Level::BeforeSwitch => 1,
            Level::AfterProbe => 2,
            Level::AfterAnalysis => 3,
            Level::Canary => 4,
        }
    }

    pub fn from_number(n: u8) -> Option<Level> {
        match n {
            1 => Some(Level::BeforeSwitch),
            2 => Some(Level::AfterProbe),
            3 => Some(Level::AfterAnalysis),
            4 => Some(Level::Canary),
            _ => None,
        }
    }
}

impl std::fmt::Display for Level {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.number())
    }
}

impl Serialize for Level {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(self.number())
    }
}

impl<'de> Deserialize<'de> for Level {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Level, D::Error> {
        let n = u8::deserialize(d)?;
        Level::from_number(n)
            .ok_or_else(|| serde::de::Error::custom(format!("no rollback level {n}")))
    }
}

/// How a rollout ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Succeeded,
    RolledBack,
}

/// An operator's word on a paused rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operator {
    /// The pause ends; on a canary, the current step is skipped.
    Promote,
    /// A canary skips its remaining steps: all traffic to the new color.
    PromoteFull,
    Abort,
}

/// The name of a rollout's step, as /status, the history and the metrics
/// say it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepName {
    Prepare,
    Start,
    Health,
    Gates,
    WarmUp,
    Paused,
    Switch,
    Verify,
    ScaleDown,
    Rollback,
    Shadow,
    Canary,
}

impl StepName {
    pub const ALL: [StepName; 12] = [
        StepName::Prepare,
        StepName::Start,
        StepName::Health,
        StepName::Gates,
        StepName::WarmUp,
        StepName::Shadow,
        StepName::Paused,
        StepName::Canary,
        StepName::Switch,
        StepName::Verify,
        StepName::ScaleDown,
        StepName::Rollback,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            StepName::Prepare => "prepare",
            StepName::Start => "start",
            StepName::Health => "health",
            StepName::Gates => "gates",
            StepName::WarmUp => "warm_up",
            StepName::Paused => "paused",
            StepName::Switch => "switch",
            StepName::Verify => "verify",
            StepName::ScaleDown => "scale_down",
            StepName::Rollback => "rollback",
            StepName::Shadow => "shadow",
            StepName::Canary => "canary",
        }
    }
}

impl std::fmt::Display for StepName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The analysis window after a switch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Watch {
    pub until: Timestamp,
    pub next_at: Timestamp,
    /// The new color's counters when the window opened.
    pub baseline: Option<Sample>,
    /// Known-answer requests the controller sent in the window, and how
    /// many of them were never answered.
    #[serde(default)]
    pub own: u32,
    #[serde(default)]
    pub own_failed: u32,
    /// The manifest's queries that gave a value within their bounds, and
    /// why the last that could not be answered was not.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conclusive: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inconclusive: Option<String>,
}

impl Watch {
    /// A window that opens now, ending at `until`, first read at `next_at`:
    /// nothing read, sent or judged yet.
    pub fn opening(until: Timestamp, next_at: Timestamp) -> Watch {
        Watch {
            until,
            next_at,
            baseline: None,
            own: 0,
            own_failed: 0,
            conclusive: Vec::new(),
            inconclusive: None,
        }
    }
}

/// Where a rollout is. Each stage is safe to re-enter after a crash, and
/// every wait is a stage with a deadline, never a sleep inside a step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "snake_case")]
pub enum Stage {
    /// Removing leftovers of the idle color.
    Prepare,
    /// Pulling the image and starting the replicas.
    Start,
    /// Waiting for every replica to be healthy.
    Health { deadline: Timestamp },
    /// The model gates: golden trips, quality, the prediction diff.
    Gates,
    /// Warm-up bursts to the new color until one is within the latency
    /// budget; the next burst at `next_at`.
    WarmUp { deadline: Timestamp, next_at: Timestamp, trip: Trip },
    /// Live predictions mirrored to the new color (once `until` is set,
    /// when the mirror is on) until `until`; then both colors' answers
    /// are collected and compared.
    Shadow { until: Option<Timestamp> },
    /// Proven, on the preview entry point, waiting for the operator.
    Paused,
    /// Carrying out step `index` of the canary, the new color having
    /// `weight` percent of live traffic so far.
    Canary { index: usize, weight: u8, at: CanaryAt },
    /// Sending traffic to the new color.
    Switch,
    /// Checking through the front that the new color answers; the next
    /// try at `next_at`.
    Verify { deadline: Timestamp, next_at: Timestamp },
    /// Keeping the old color until the delay (and the analysis window)
    /// ends, then removing it.
    ScaleDown { not_before: Timestamp },
    /// Undoing the rollout: traffic back, new color removed.
    Rollback { level: Level, reason: String },
}

/// What a canary step waits for. Every wait has its deadline or the
/// operator's word.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CanaryAt {
    /// The router is to give the new color `to` percent.
    SetWeight { to: u8 },
    /// Until `until`, or (`None`) until `controller promote`.
    Pause { until: Option<Timestamp> },
    /// Both colors read every second until `until`; the first reading is
    /// the interval's baseline.
    Analysis { until: Timestamp, next_at: Timestamp, baseline: Option<Pair> },
}

impl Stage {
    /// Whether traffic has not moved yet: a failure here is level 1.
    pub fn before_switch(&self) -> bool {
        match self {
            Stage::Canary { weight, .. } => *weight == 0,
            s => !matches!(
                s,
                Stage::Verify { .. } | Stage::ScaleDown { .. } | Stage::Rollback { .. }
            ),
        }
    }

    /// Whether the rollout waits for an operator's word alone.
    pub fn awaits_operator(&self) -> bool {
        matches!(self, Stage::Paused | Stage::Canary { at: CanaryAt::Pause { until: None }, .. })
    }

    pub fn name(&self) -> StepName {
        match self {
            Stage::Prepare => StepName::Prepare,
            Stage::Start => StepName::Start,
            Stage::Health { .. } => StepName::Health,
            Stage::Gates => StepName::Gates,
            Stage::WarmUp { .. } => StepName::WarmUp,
            Stage::Paused => StepName::Paused,
            Stage::Switch => StepName::Switch,
            Stage::Verify { .. } => StepName::Verify,
            Stage::ScaleDown { .. } => StepName::ScaleDown,
            Stage::Rollback { .. } => StepName::Rollback,
            Stage::Shadow { .. } => StepName::Shadow,
            Stage::Canary { .. } => StepName::Canary,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepTime {
    pub step: StepName,
    pub ms: u64,
}

/// What a rollout carries from its start into the history; the record,
/// the history and the /status view share it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub revision: u64,
    /// The color being brought up.
    pub color: Color,
    /// The color live when it began, and its tag.
    pub from_color: Option<Color>,
    pub from_tag: Option<String>,
    pub started_at: Timestamp,
    /// Step timings in milliseconds, in order.
    pub steps: Vec<StepTime>,
    /// Times the controller restarted while it was in flight.
    pub restarts: u32,
    /// What the gates measured users would see change.
    #[serde(default)]
    pub diff: Option<Diff>,
    /// What each gate that ran measured, against its limit, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gates: Vec<Reading>,
    /// What the analysis after the switch saw last.
    #[serde(default)]
    pub analysis: Option<Figures>,
    /// The digest the tag named when the rollout began (`sha256:…`), where
    /// the registry could say; the new color runs it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Transient failures met on the way (a registry or an engine that
    /// could not be reached), by step, and the last one's words.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retries: Vec<Retries>,
    /// The shadow comparison's figures and verdict, when one ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<Judgement>,
    /// Each canary analysis step's latest comparison, in step order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub comparisons: Vec<Compared>,
}

/// How often a step failed transiently, and how it last failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retries {
    pub step: StepName,
    pub count: u32,
    pub error: String,
}

/// The transient failures of the stage under way, and when to try again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    pub failures: u32,
    pub next_at: Timestamp,
}

/// The live color when a rollout begins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    pub color: Color,
    pub tag: String,
    pub replicas: u32,
}

/// A rollout under way.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rollout {
    #[serde(flatten)]
    pub summary: Summary,
    /// How many replicas the previous color ran (the fallback's size).
    pub from_replicas: u32,
    /// The desired state it carries out; its tag is the rollout's.
    pub desired: Desired,
    pub stage: Stage,
    pub stage_started_at: Timestamp,
    pub healthy_at: Option<Timestamp>,
    pub switched_at: Option<Timestamp>,
    /// When it was given up, and when traffic was back on the previous
    /// color.
    pub failed_at: Option<Timestamp>,
    pub restored_at: Option<Timestamp>,
    /// The analysis after the switch, while it runs.
    pub watch: Option<Watch>,
    /// The request whose answer is known, from the gates' evidence: the
    /// analysis sends it when live traffic is low.
    #[serde(default)]
    pub known: Option<Known>,
    /// The current stage's transient failures; cleared when it moves on.
    #[serde(default)]
    pub attempt: Option<Attempt>,
    /// Given up for another desired state: no verdict on its own.
    #[serde(default)]
    pub superseded: bool,
    /// What an operator asked of it while paused.
    pub operator: Option<Operator>,
    /// The new color's share of traffic the router was last told to give
    /// it by a canary step (`None` once a plain route replaced the split).
    /// Kept because the router's read-back does not carry a split yet:
    /// a rollback undoes it before anything else.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split: Option<u8>,
    /// Live predictions are being mirrored to the new color: stopped
    /// before anything else once the shadow is over (the read-back does
    /// not carry the mirror yet either).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub mirroring: bool,
}

impl Rollout {
    pub fn tag(&self) -> &str {
        &self.desired.tag
    }

    /// The previous color, while it is another color than the new one.
    pub fn old_color(&self) -> Option<Color> {
        self.summary.from_color.filter(|c| *c != self.summary.color)
    }
}

/// A finished rollout, as /status and `controller history` show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finished {
    pub tag: String,
    #[serde(flatten)]
    pub summary: Summary,
    pub result: Verdict,
    /// `None` when it succeeded.
    pub level: Option<Level>,
    pub reason: Option<String>,
    pub finished_at: Timestamp,
    pub duration_ms: u64,
    /// From the gates passed to traffic on the new color; the gates' own
    /// time is their step's.
    pub healthy_to_switched_ms: Option<u64>,
    /// From the rollout given up to traffic back on the previous color.
    pub failed_to_restored_ms: Option<u64>,
}

/// The desired state whose rollout failed, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub fingerprint: String,
    pub tag: String,
    /// What the tag named then: the same tag pushed again is another
    /// release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    pub level: Level,
    pub reason: String,
}

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
}

impl Record {
    /// Starts a rollout of `desired` into `color`.
    pub fn begin(&mut self, desired: &Desired, color: Color, from: Option<Origin>, now: Timestamp) {
        self.next_revision = self.next_revision.max(1);
        let revision = self.next_revision;
        self.next_revision += 1;
        self.rollout = Some(Rollout {
            summary: Summary {
                revision,
                color,
                from_color: from.as_ref().map(|o| o.color),
                from_tag: from.as_ref().map(|o| o.tag.clone()),
                started_at: now,
                steps: Vec::new(),
                restarts: 0,
                diff: None,
                gates: Vec::new(),
                analysis: None,
                retries: Vec::new(),
                digest: None,
                shadow: None,
                comparisons: Vec::new(),
            },
            from_replicas: from.map_or(0, |o| o.replicas),
            desired: desired.clone(),
            stage: Stage::Prepare,
            stage_started_at: now,
            healthy_at: None,
            switched_at: None,
            failed_at: None,
            restored_at: None,
            watch: None,
            known: None,
            attempt: None,
            superseded: false,
            operator: None,
            split: None,
            mirroring: false,
        });
    }

    /// Moves the rollout in flight to `stage`, timing the one it leaves.
    pub fn enter(&mut self, stage: Stage, now: Timestamp) {
        let Some(r) = self.rollout.as_mut() else { return };
        let ms = now.millis_since(r.stage_started_at);
        let name = r.stage.name();
        // A stage re-entered (a retry, a restart) keeps one entry.
        match r.summary.steps.iter_mut().find(|s| s.step == name) {
            Some(s) => s.ms += ms,
            None => r.summary.steps.push(StepTime { step: name, ms }),
        }
        match stage {
            Stage::Switch => r.healthy_at = Some(now),
            Stage::Verify { .. } => r.switched_at = Some(now),
            Stage::Rollback { .. } => r.failed_at = r.failed_at.or(Some(now)),
            _ => {}
        }
        r.stage = stage;
        r.stage_started_at = now;
        r.attempt = None;
    }

    /// Notes a transient failure of the stage under way; returns how many
    /// in a row it has now met.
    pub fn note_failure(&mut self, step: StepName, error: &str, next_at: Timestamp) -> u32 {
        let Some(r) = self.rollout.as_mut() else { return 0 };
        match r.summary.retries.iter_mut().find(|x| x.step == step) {
            Some(x) => {
                x.count += 1;
                x.error = error.to_owned();
            }
            None => r.summary.retries.push(Retries { step, count: 1, error: error.to_owned() }),
        }
        let failures = r.attempt.map_or(0, |a| a.failures) + 1;
        r.attempt = Some(Attempt { failures, next_at });
        failures
    }

    /// Ends the rollout in flight: into the history, and into `failed`
    /// when it was rolled back. Returns the finished record.
    pub fn finish(&mut self, now: Timestamp) -> Option<Finished> {
        let stage = self.rollout.as_ref()?.stage.clone();
        self.enter(stage.clone(), now);
        let r = self.rollout.take()?;
        let (result, level, reason) = match stage {
            Stage::Rollback { level, reason } => (Verdict::RolledBack, Some(level), Some(reason)),
            _ => (Verdict::Succeeded, None, None),
        };
        self.failed = match (level, &reason) {
            // Another desired state took over: nothing was learnt of this one.
            _ if r.superseded => self.failed.take(),
            (Some(level), Some(reason)) => Some(Failure {
                fingerprint: r.desired.fingerprint(),
                tag: r.desired.tag.clone(),
                digest: r.summary.digest.clone(),
                level,
                reason: reason.clone(),
            }),
            _ => None,
        };
        let between = |a: Option<Timestamp>, b: Option<Timestamp>| match (a, b) {
            (Some(a), Some(b)) => Some(b.millis_since(a)),
            _ => None,
        };
        let finished = Finished {
            tag: r.desired.tag,
            result,
            level,
            reason,
            finished_at: now,
            duration_ms: now.millis_since(r.summary.started_at),
            healthy_to_switched_ms: between(r.healthy_at, r.switched_at),
            failed_to_restored_ms: between(r.failed_at, r.restored_at),
            summary: r.summary,
        };
        self.history.insert(0, finished.clone());
        self.history.truncate(HISTORY);
        Some(finished)
    }

    /// Notes that the controller restarted: the rollout in flight, if any,
    /// was interrupted and is resumed.
    pub fn note_restart(&mut self) {
        if let Some(r) = self.rollout.as_mut() {
            r.summary.restarts += 1;
        }
    }
}

/// The newest succeeded tag of `history` other than `current`: where
/// `controller rollback` goes.
pub fn previous_good_tag<'a>(history: &'a [Finished], current: Option<&str>) -> Option<&'a str> {
    history
        .iter()
        .filter(|f| f.result == Verdict::Succeeded)
        .map(|f| f.tag.as_str())
        .find(|t| Some(*t) != current)
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
        r.enter(
            Stage::Verify { deadline: Timestamp(9000), next_at: Timestamp(0) },
            Timestamp(2600),
        );
        r.enter(Stage::ScaleDown { not_before: Timestamp(2700) }, Timestamp(2700));
        let f = r.finish(Timestamp(3000)).unwrap();
        assert_eq!(f.result, Verdict::Succeeded);
        assert_eq!((f.summary.revision, f.healthy_to_switched_ms), (1, Some(100)));
        let ms: Vec<(&str, u64)> =
            f.summary.steps.iter().map(|s| (s.step.as_str(), s.ms)).collect();
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
        let from = Origin { color: Color::Blue, tag: "v1".into(), replicas: 1 };
        r.begin(&desired("v2"), Color::Green, Some(from), Timestamp(0));
        let level = Level::BeforeSwitch;
        r.enter(Stage::Rollback { level, reason: "unhealthy".into() }, Timestamp(10));
        let f = r.finish(Timestamp(20)).unwrap();
        assert_eq!((f.result, f.level), (Verdict::RolledBack, Some(Level::BeforeSwitch)));
        let failed = r.failed.clone().unwrap();
        assert_eq!((failed.tag.as_str(), failed.level), ("v2", Level::BeforeSwitch));
        assert_eq!(failed.fingerprint, desired("v2").fingerprint());
    }

    #[test]
    fn previous_good_tag_skips_failures_and_the_current_tag() {
        let mut r = Record::default();
        for (tag, ok) in [("v1", true), ("v2", true), ("bad", false)] {
            r.begin(&desired(tag), Color::Blue, None, Timestamp(0));
            if !ok {
                let level = Level::BeforeSwitch;
                r.enter(Stage::Rollback { level, reason: "x".into() }, Timestamp(1));
            }
            r.finish(Timestamp(2));
        }
        assert_eq!(previous_good_tag(&r.history, Some("v2")), Some("v1"));
        assert_eq!(previous_good_tag(&r.history, Some("bad")), Some("v2"));
        assert_eq!(previous_good_tag(&r.history, None), Some("v2"));
    }

    #[test]
    fn a_restart_is_counted_and_the_record_survives_json() {
        let mut r = Record::default();
        r.note_restart();
        r.begin(&desired("v1"), Color::Blue, None, Timestamp(0));
        r.note_restart();
        assert_eq!(r.rollout.as_ref().unwrap().summary.restarts, 1);
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<Record>(&json).unwrap(), r);
    }

    #[test]
    fn the_vocabulary_keeps_its_json() {
        let f = {
            let mut r = Record::default();
            r.begin(&desired("v1"), Color::Blue, None, Timestamp(0));
            let level = Level::AfterAnalysis;
            r.enter(Stage::Rollback { level, reason: "5xx".into() }, Timestamp(1));
            r.finish(Timestamp(2)).unwrap()
        };
        let json = serde_json::to_value(&f).unwrap();
        assert_eq!(json["level"], 3);
        assert_eq!(json["result"], "rolled_back");
        assert_eq!(json["tag"], "v1");
        assert_eq!(json["revision"], 1);
        assert_eq!(json["steps"][0]["step"], "prepare");
        assert_eq!(serde_json::from_value::<Level>(serde_json::json!(4)).unwrap(), Level::Canary);
        assert!(serde_json::from_value::<Level>(serde_json::json!(5)).is_err());
        for name in StepName::ALL {
            let text = serde_json::to_value(name).unwrap();
            assert_eq!(text, name.as_str());
        }
    }
}
