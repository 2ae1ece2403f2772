//! The /status document: what the controller wants, sees and did, built
//! from the desired state, the last observation and the record. Pure.

use bluegreen::Color;
use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::manifest::Desired;
use crate::observed::{Container, Health, Observed};
use crate::record::{Finished, Record, StepTime};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Status {
    pub desired: DesiredView,
    pub active: ActiveView,
    /// `Healthy`, `Progressing` or `Degraded`.
    pub phase: String,
    /// The step of the rollout in flight.
    pub step: Option<String>,
    /// Why the phase is what it is, when it is not Healthy.
    pub reason: Option<String>,
    pub rollout: Option<RolloutView>,
    pub colors: Colors,
    pub last: Option<Finished>,
    pub history: Vec<Finished>,
    /// The last reconcile step that failed, if the latest one did.
    pub error: Option<String>,
    pub observed_at: Option<Timestamp>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DesiredView {
    pub tag: Option<String>,
    pub image: Option<String>,
    pub replicas: Option<u32>,
    /// Why the manifest was refused; the last valid desired state stays.
    pub error: Option<String>,
    /// The manifest file the controller watches.
    pub source: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ActiveView {
    pub color: Option<Color>,
    pub tag: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Colors {
    pub blue: Option<Vec<ContainerView>>,
    pub green: Option<Vec<ContainerView>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ContainerView {
    pub id: String,
    pub name: String,
    pub tag: String,
    pub state: String,
    pub health: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RolloutView {
    pub revision: u64,
    pub tag: String,
    pub color: Color,
    pub from_color: Option<Color>,
    pub step: String,
    pub started_at: Timestamp,
    pub steps: Vec<StepTime>,
    pub restarts: u32,
}

fn view(c: &Container) -> ContainerView {
    let health = match c.health {
        Health::None => "none",
        Health::Starting => "starting",
        Health::Healthy => "healthy",
        Health::Unhealthy => "unhealthy",
    };
    ContainerView {
        id: c.id.chars().take(12).collect(),
        name: c.name.clone(),
        tag: c.tag.clone(),
        state: c.state.clone(),
        health: health.into(),
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
    let serving = match (observed, live) {
        (Some(o), Some(l)) => o.of(l).iter().any(|c| c.is_running() && c.health == Health::Healthy),
        _ => false,
    };
    let failed = match (desired, &record.failed) {
        (Some(d), Some(f)) if f.fingerprint == d.fingerprint() => Some(f),
        _ => None,
    };
    let (phase, reason) = if let Some(r) =
        record.rollout.as_ref().filter(|r| r.stage == crate::record::Stage::Paused)
    {
        (
            "Paused",
            Some(format!(
                "{} passed its gates in {}: `controller promote` or `controller abort`",
                r.tag, r.color
            )),
        )
    } else if let Some(r) = &record.rollout {
        ("Progressing", Some(format!("rolling out {} to {}", r.tag, r.color)))
    } else if let Some(f) = failed {
        (
            "Degraded",
            Some(format!("tag {} was rolled back (level {}): {}", f.tag, f.level, f.reason)),
        )
    } else if desired.is_none() {
        ("Degraded", Some("no valid desired state".to_owned()))
    } else if let Some(o) = observed.filter(|o| o.live.is_err()) {
        ("Degraded", o.live.clone().err())
    } else if !serving {
        ("Degraded", Some("no healthy container serves traffic".to_owned()))
    } else if desired.map(|d| &d.tag) != live_tag.as_ref() {
        ("Progressing", Some("a rollout of the desired tag is about to begin".to_owned()))
    } else {
        ("Healthy", None)
    };
    let history = record.history.clone();
    Status {
        desired: DesiredView {
            tag: desired.map(|d| d.tag.clone()),
            image: desired.map(Desired::image),
            replicas: desired.map(|d| d.replicas),
            error: manifest.error.map(str::to_owned),
            source: manifest.source.to_owned(),
        },
        active: ActiveView { color: live, tag: live_tag },
        phase: phase.to_owned(),
        step: record.rollout.as_ref().map(|r| r.stage.name().to_owned()),
        reason,
        rollout: record.rollout.as_ref().map(|r| RolloutView {
            revision: r.revision,
            tag: r.tag.clone(),
            color: r.color,
            from_color: r.from,
            step: r.stage.name().to_owned(),
            started_at: r.started_at,
            steps: r.steps.clone(),
            restarts: r.restarts,
        }),
        colors: Colors { blue: colors_of(Color::Blue), green: colors_of(Color::Green) },
        last: history.first().cloned(),
        history,
        error: error.map(str::to_owned),
        observed_at: observed.map(|_| now),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{container, desired, observed};
    use crate::record::Stage;

    fn phase(d: Option<&Desired>, o: &Observed, r: &Record) -> (String, Option<String>) {
        let m = ManifestState { desired: d, error: None, source: "m.yaml" };
        let s = build(&m, Some(o), r, None, Timestamp(0));
        (s.phase, s.reason)
    }

    #[test]
    fn phases() {
        let d = desired("v1");
        let blue =
            observed(Some(Color::Blue), vec![container(Color::Blue, 1, "v1", Health::Healthy)]);
        assert_eq!(phase(Some(&d), &blue, &Record::default()).0, "Healthy");
        assert_eq!(phase(Some(&desired("v2")), &blue, &Record::default()).0, "Progressing");
        assert_eq!(phase(None, &blue, &Record::default()).0, "Degraded");
        let none = observed(None, vec![]);
        assert_eq!(phase(Some(&d), &none, &Record::default()).0, "Degraded");
        let mut r = Record::default();
        r.begin(&desired("v2"), Color::Green, None, Timestamp(0));
        assert_eq!(phase(Some(&desired("v2")), &blue, &r).0, "Progressing");
        r.enter(Stage::Rollback { level: 2, reason: "probe failed".into() }, Timestamp(1));
        r.finish(Timestamp(2));
        let (p, reason) = phase(Some(&desired("v2")), &blue, &r);
        assert_eq!(p, "Degraded");
        assert!(reason.unwrap().contains("level 2"));
    }

    #[test]
    fn the_document_has_the_contract_keys() {
        let d = desired("v1");
        let o = observed(Some(Color::Blue), vec![container(Color::Blue, 1, "v1", Health::Healthy)]);
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
    }
}
