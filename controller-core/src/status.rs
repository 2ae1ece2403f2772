//! The /status document: what the controller wants, sees and did, built
//! from the desired state, the last observation and the record. Pure.

use bluegreen::Color;
use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::manifest::strategy::{Shadow, Strategy};
use crate::manifest::{Analysis, Desired, Gates};
use crate::observed::{Health, Observed, Replica, State};
use crate::record::{CanaryAt, Finished, Record, Stage, StepName, Summary};

/// How the deployment stands, in one word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    /// The desired tag is live and nothing is in flight.
    Healthy,
    /// A rollout is under way (or about to begin).
    Progressing,
    /// A proven rollout waits for the operator.
    Paused,
    /// The desired tag failed and was rolled back, or nothing healthy
    /// serves.
    Degraded,
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Phase::Healthy => "Healthy",
            Phase::Progressing => "Progressing",
            Phase::Paused => "Paused",
            Phase::Degraded => "Degraded",
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Status {
    pub desired: DesiredView,
    pub active: ActiveView,
    pub phase: Phase,
    /// The step of the rollout in flight.
    pub step: Option<StepName>,
    /// Why the phase is what it is, when it is not Healthy.
    pub reason: Option<String>,
    pub rollout: Option<RolloutView>,
    pub colors: Colors,
    /// Ready and desired replicas of each color that has or should have
    /// any.
    pub replicas: Counts,
    pub last: Option<Finished>,
    pub history: Vec<Finished>,
    /// The last reconcile step that failed, if the latest one did.
    pub error: Option<String>,
    /// How the webhook's deliveries go, when one is configured.
    #[serde(default)]
    pub notifications: Option<Notifications>,
    /// The live color's request, fault and shed rates, oldest first, over
    /// the last ten minutes (read by the runtime).
    #[serde(default)]
    pub live_traffic: Vec<crate::traffic::Point>,
    pub observed_at: Option<Timestamp>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DesiredView {
    pub tag: Option<String>,
    pub image: Option<String>,
    pub replicas: Option<u32>,
    /// What the tag names in the registry now, as last resolved.
    pub digest: Option<String>,
    /// Why the manifest was refused; the last valid desired state stays.
    pub error: Option<String>,
    /// The manifest file the controller watches.
    pub source: String,
    /// The thresholds the gates and the analysis judge by, so a reader
    /// sees why a figure passed or was refused.
    #[serde(default)]
    pub gates: Option<Gates>,
    #[serde(default)]
    pub analysis: Option<Analysis>,
    #[serde(default)]
    pub auto_promote: Option<bool>,
    /// How traffic moves (`None` without a desired state), and the shadow
    /// comparison's thresholds, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<Strategy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<Shadow>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ActiveView {
    pub color: Option<Color>,
    pub tag: Option<String>,
    /// The digest the live color runs, when its replicas agree on one.
    pub digest: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Colors {
    pub blue: Option<Vec<ReplicaView>>,
    pub green: Option<Vec<ReplicaView>>,
}

/// The webhook's deliveries so far.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Notifications {
    pub sent: u64,
    /// Events given up after every try, and events dropped because too
    /// many waited.
    pub failed: u64,
    pub dropped: u64,
    /// Why the last try failed, if the last event has not been delivered.
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Counts {
    pub blue: Option<Count>,
    pub green: Option<Count>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct Count {
    pub ready: u32,
    pub desired: u32,
}

/// What each color should run: the live one the desired replicas; during
/// a rollout the new one the rollout's and the old one what it ran.
fn counts(observed: Option<&Observed>, desired: Option<&Desired>, record: &Record) -> Counts {
    let want = |c: Color| -> u32 {
        match &record.rollout {
            Some(r) if r.summary.color == c => r.desired.replicas,
            Some(r) if r.summary.from_color == Some(c) => r.from_replicas,
            Some(_) => 0,
            None if observed.and_then(Observed::live_color) == Some(c) => {
                desired.map_or(0, |d| d.replicas)
            }
            None => 0,
        }
    };
    let count = |c: Color| {
        let ready = observed.map_or(0, |o| o.of(c).iter().filter(|x| x.is_ready()).count());
        let ready = u32::try_from(ready).unwrap_or(u32::MAX);
        let desired = want(c);
        (ready > 0 || desired > 0).then_some(Count { ready, desired })
    };
    Counts { blue: count(Color::Blue), green: count(Color::Green) }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ReplicaView {
    pub id: String,
    pub name: String,
    pub tag: String,
    pub digest: Option<String>,
    pub state: State,
    pub health: Health,
}

/// The rollout in flight.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RolloutView {
    pub tag: String,
    #[serde(flatten)]
    pub summary: Summary,
    pub step: StepName,
    /// When the current step began.
    #[serde(default)]
    pub step_started_at: Option<Timestamp>,
    /// Where a canary is, while one runs its steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<CanaryView>,
}

/// A canary under way: step `step` of `steps`, the new color's share of
/// traffic, and what the step waits for.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CanaryView {
    pub step: usize,
    pub steps: usize,
    pub weight: u8,
    /// `set_weight`, `pause` or `analysis`.
    pub at: String,
    /// A timed pause's or an analysis interval's end.
    pub until: Option<Timestamp>,
    /// Only `controller promote` (or abort) moves it on.
    pub awaiting_promote: bool,
}

impl Status {
    /// The tag of the rollout that takes an operator's word, if any: one
    /// paused for promotion, a canary at any step, a shadow comparison
    /// (which only an abort ends early).
    pub fn paused_tag(&self) -> Option<&str> {
        let takes_word = |r: &&RolloutView| {
            matches!(r.step, StepName::Paused | StepName::Canary | StepName::Shadow)
        };
        self.rollout.as_ref().filter(takes_word).map(|r| r.tag.as_str())
    }
}

fn canary_view(r: &crate::record::Rollout) -> Option<CanaryView> {
    let Stage::Canary { index, weight, at } = &r.stage else { return None };
    let (name, until) = match at {
        CanaryAt::SetWeight { .. } => ("set_weight", None),
        CanaryAt::Pause { until } => ("pause", *until),
        CanaryAt::Analysis { until, .. } => ("analysis", Some(*until)),
    };
    Some(CanaryView {
        step: *index,
        steps: r.desired.strategy.steps().len(),
        weight: *weight,
        at: name.to_owned(),
        until,
        awaiting_promote: r.stage.awaits_operator(),
    })
}

/// Ready and desired replicas of the live color, when it is short.
fn short(observed: Option<&Observed>, desired: Option<&Desired>) -> Option<(usize, u32)> {
    let (o, d) = (observed?, desired?);
    let ready = o.of(o.live_color()?).iter().filter(|c| c.is_ready() && c.tag == d.tag).count();
    (ready < d.replicas as usize).then_some((ready, d.replicas))
}

fn view(c: &Replica) -> ReplicaView {
    ReplicaView {
        id: c.id.chars().take(12).collect(),
        name: c.name.clone(),
        tag: c.tag.clone(),
        digest: c.digest.clone(),
        state: c.state,
        health: c.health,
    }
}

/// What the controller last read from the manifest.
pub struct ManifestState<'a> {
    pub desired: Option<&'a Desired>,
    pub error: Option<&'a str>,
    pub source: &'a str,
}

pub fn build(
    manifest: &ManifestState<'_>,
    observed: Option<&Observed>,
    record: &Record,
    error: Option<&str>,
    now: Timestamp,
) -> Status {
    let desired = manifest.desired;
    let live = observed.and_then(Observed::live_color);
    let live_tag = observed.and_then(|o| o.live_tag().map(str::to_owned));
    let colors_of = |c: Color| {
        let of = observed?.of(c);
        (!of.is_empty()).then(|| of.into_iter().map(view).collect())
    };
    let serving = observed.is_some_and(Observed::serving);
    let failed = match (desired, &record.failed) {
        (Some(d), Some(f)) if f.fingerprint == d.fingerprint() => Some(f),
        _ => None,
    };
    let (phase, reason) = if let Some((r, Some(c))) =
        record.rollout.as_ref().filter(|r| r.stage.awaits_operator()).map(|r| (r, canary_view(r)))
    {
        (
            Phase::Paused,
            Some(format!(
                "{} in {} has {}% of traffic at canary step {} of {}: `controller promote` \
                 (`--full` for every step left) or `controller abort`",
                r.tag(),
                r.summary.color,
                c.weight,
                c.step,
                c.steps
            )),
        )
    } else if let Some(r) = record.rollout.as_ref().filter(|r| r.stage == Stage::Paused) {
        (
            Phase::Paused,
            Some(format!(
                "{} passed its gates in {}: `controller promote` or `controller abort`",
                r.tag(),
                r.summary.color
            )),
        )
    } else if let Some(r) = &record.rollout {
        (Phase::Progressing, Some(format!("rolling out {} to {}", r.tag(), r.summary.color)))
    } else if let Some(f) = failed {
        let outcome = if live_tag.as_deref() == Some(f.tag.as_str()) {
            "failed, and still serves: the previous color was gone"
        } else {
            "was rolled back"
        };
        (
            Phase::Degraded,
            Some(format!("tag {} {outcome} (level {}): {}", f.tag, f.level, f.reason)),
        )
    } else if desired.is_none() {
        (Phase::Degraded, Some("no valid desired state".to_owned()))
    } else if let Some(o) = observed.filter(|o| o.traffic.live.is_err()) {
        (Phase::Degraded, o.traffic.live.clone().err())
    } else if !serving {
        (Phase::Degraded, Some("no healthy replica serves traffic".to_owned()))
    } else if let Some(Err(e)) = observed.and_then(|o| o.front.as_ref()) {
        (Phase::Degraded, Some(format!("the front does not answer: {e}")))
    } else if let Some(o) = observed.filter(|o| !o.traffic.down.is_empty()) {
        (Phase::Degraded, Some(format!("down: {}", o.traffic.down.join(", "))))
    } else if desired.map(|d| &d.tag) != live_tag.as_ref() {
        (Phase::Progressing, Some("a rollout of the desired tag is about to begin".to_owned()))
    } else if let Some((ready, want)) = short(observed, desired) {
        (Phase::Degraded, Some(format!("{ready} of {want} replicas of the live color ready")))
    } else {
        (Phase::Healthy, None)
    };
    let history = record.history.clone();
    Status {
        desired: DesiredView {
            tag: desired.map(|d| d.tag.clone()),
            image: desired.map(Desired::image),
            replicas: desired.map(|d| d.replicas),
            digest: desired.and_then(|d| observed?.digest_of(&d.image()).map(str::to_owned)),
            error: manifest.error.map(str::to_owned),
            source: manifest.source.to_owned(),
            gates: desired.map(|d| d.gates.clone()),
            analysis: desired.map(|d| d.analysis.clone()),
            auto_promote: desired.map(|d| d.auto_promote),
            strategy: desired.map(|d| d.strategy.clone()),
            shadow: desired.and_then(|d| d.shadow.clone()),
        },
        active: ActiveView {
            color: live,
            tag: live_tag,
            digest: observed.and_then(|o| o.live_digest().map(str::to_owned)),
        },
        phase,
        step: record.rollout.as_ref().map(|r| r.stage.name()),
        reason,
        rollout: record.rollout.as_ref().map(|r| RolloutView {
            tag: r.tag().to_owned(),
            summary: r.summary.clone(),
            step: r.stage.name(),
            step_started_at: Some(r.stage_started_at),
            canary: canary_view(r),
        }),
        colors: Colors { blue: colors_of(Color::Blue), green: colors_of(Color::Green) },
        replicas: counts(observed, desired, record),
        last: history.first().cloned(),
        history,
        error: error.map(str::to_owned),
        notifications: None,
        live_traffic: Vec::new(),
        observed_at: observed.map(|_| now),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{desired, observed, replica};
    use crate::record::Level;

    fn phase(d: Option<&Desired>, o: &Observed, r: &Record) -> (Phase, Option<String>) {
        let m = ManifestState { desired: d, error: None, source: "m.yaml" };
        let s = build(&m, Some(o), r, None, Timestamp(0));
        (s.phase, s.reason)
    }

    #[test]
    fn phases() {
        let d = desired("v1");
        let blue =
            observed(Some(Color::Blue), vec![replica(Color::Blue, 1, "v1", Health::Healthy)]);
        assert_eq!(phase(Some(&d), &blue, &Record::default()).0, Phase::Healthy);
        assert_eq!(phase(Some(&desired("v2")), &blue, &Record::default()).0, Phase::Progressing);
        assert_eq!(phase(None, &blue, &Record::default()).0, Phase::Degraded);
        let none = observed(None, vec![]);
        assert_eq!(phase(Some(&d), &none, &Record::default()).0, Phase::Degraded);
        let mut r = Record::default();
        r.begin(&desired("v2"), Color::Green, None, Timestamp(0));
        assert_eq!(phase(Some(&desired("v2")), &blue, &r).0, Phase::Progressing);
        r.enter(
            Stage::Rollback { level: Level::AfterProbe, reason: "probe failed".into() },
            Timestamp(1),
        );
        r.finish(Timestamp(2));
        let (p, reason) = phase(Some(&desired("v2")), &blue, &r);
        assert_eq!(p, Phase::Degraded);
        assert!(reason.unwrap().contains("level 2"));
    }

    #[test]
    fn never_healthy_while_the_front_cannot_answer_or_the_live_color_is_short() {
        let d = desired("v1");
        let mut blue =
            observed(Some(Color::Blue), vec![replica(Color::Blue, 1, "v1", Health::Healthy)]);
        blue.front = Some(Ok(()));
        assert_eq!(phase(Some(&d), &blue, &Record::default()).0, Phase::Healthy);
        blue.front = Some(Err("GET http://edge:80/ answered 503".into()));
        let (p, reason) = phase(Some(&d), &blue, &Record::default());
        assert_eq!(p, Phase::Degraded);
        assert!(reason.unwrap().contains("the front does not answer"));
        blue.front = Some(Ok(()));
        blue.traffic.down = vec!["taxi-fare_edge_1".into()];
        assert!(phase(Some(&d), &blue, &Record::default()).1.unwrap().contains("edge"));
        blue.traffic.down.clear();
        let mut two = d.clone();
        two.replicas = 2;
        let (p, reason) = phase(Some(&two), &blue, &Record::default());
        assert_eq!(p, Phase::Degraded);
        assert_eq!(reason.as_deref(), Some("1 of 2 replicas of the live color ready"));
    }

    #[test]
    fn the_document_has_the_contract_keys() {
        let d = desired("v1");
        let o = observed(Some(Color::Blue), vec![replica(Color::Blue, 1, "v1", Health::Healthy)]);
        let m = ManifestState { desired: Some(&d), error: Some("bad"), source: "/m/rollout.yaml" };
        let s = serde_json::to_value(build(&m, Some(&o), &Record::default(), None, Timestamp(0)))
            .unwrap();
        assert_eq!(s["desired"]["tag"], "v1");
        assert_eq!(s["desired"]["error"], "bad");
        assert_eq!(s["desired"]["source"], "/m/rollout.yaml");
        assert_eq!(s["active"]["color"], "blue");
        assert_eq!(s["active"]["tag"], "v1");
        assert_eq!(s["colors"]["blue"][0]["health"], "healthy");
        assert!(s["colors"]["green"].is_null());
        assert!(s["last"].is_null());
        assert_eq!(s["history"], serde_json::json!([]));
        assert_eq!(s["phase"], "Healthy");
        assert_eq!(s["colors"]["blue"][0]["state"], "running");
        assert_eq!(s["replicas"]["blue"], serde_json::json!({ "ready": 1, "desired": 1 }));
        assert!(s["replicas"]["green"].is_null());
        assert_eq!(s["desired"]["gates"]["golden"], true);
        assert_eq!(s["desired"]["analysis"]["max_error_rate"], 0.01);
        assert_eq!(s["desired"]["analysis"]["max_p99"], 1000);
        assert_eq!(s["desired"]["auto_promote"], true);
    }

    #[test]
    fn a_canary_shows_its_step_and_waits_for_promote_as_paused() {
        use crate::manifest::strategy::{CanaryStep, Strategy};
        let mut d = desired("v2");
        d.strategy = Strategy::Canary {
            steps: vec![CanaryStep::SetWeight(10), CanaryStep::Pause { duration: None }],
        };
        let o = observed(
            Some(Color::Blue),
            vec![
                replica(Color::Blue, 1, "v1", Health::Healthy),
                replica(Color::Green, 1, "v2", Health::Healthy),
            ],
        );
        let mut r = Record::default();
        r.begin(&d, Color::Green, None, Timestamp(0));
        let at = CanaryAt::Pause { until: None };
        r.enter(Stage::Canary { index: 1, weight: 10, at }, Timestamp(1));
        let m = ManifestState { desired: Some(&d), error: None, source: "m.yaml" };
        let s = build(&m, Some(&o), &r, None, Timestamp(2));
        assert_eq!(s.phase, Phase::Paused);
        assert!(s.reason.as_deref().unwrap().contains("10% of traffic at canary step 1 of 2"));
        assert_eq!(s.paused_tag(), Some("v2"));
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["rollout"]["canary"]["weight"], 10);
        assert_eq!(json["rollout"]["canary"]["awaiting_promote"], true);
        assert_eq!(json["rollout"]["step"], "canary");
        assert_eq!(json["desired"]["strategy"]["canary"]["steps"][0]["set_weight"], 10);
        // A timed pause is progress, not a pause for the operator; the
        // operator's word is still taken.
        let at = CanaryAt::Pause { until: Some(Timestamp(30_000)) };
        r.enter(Stage::Canary { index: 1, weight: 10, at }, Timestamp(3));
        let s = build(&m, Some(&o), &r, None, Timestamp(4));
        assert_eq!(s.phase, Phase::Progressing);
        assert_eq!(s.paused_tag(), Some("v2"));
    }
}
