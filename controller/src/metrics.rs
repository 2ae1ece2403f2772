//! The controller's Prometheus metrics: rollouts by result and level,
//! rollout and step durations, time from healthy to switched, the active
//! color, the phase, reconcile errors by kind and manifest errors, and the
//! API's connections refused or timed out.
//!
//! `/metrics` answers in the format the scraper asks for
//! ([`Metrics::exposition`]): OpenMetrics to one whose `Accept` names it
//! (Prometheus does), the classic text format (0.0.4) to anyone else.
//! `promtool check metrics` reads only the classic one (in OpenMetrics a
//! counter's `# TYPE` line names it without `_total`, which that parser
//! takes for a second family without help), and is what a plain `curl`
//! gets.

use bluegreen::Color;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use controller_core::observed::Observed;
use controller_core::record::{Finished, Verdict};
use controller_core::status::Phase;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RolloutLabels {
    result: String,
    level: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StepLabels {
    step: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ColorLabels {
    color: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    phase: String,
}

/// Every phase `/status` can say, each a series of `controller_phase`.
const PHASES: [Phase; 4] = [Phase::Healthy, Phase::Progressing, Phase::Paused, Phase::Degraded];

/// Every (result, level) a rollout can finish with, created at zero so
/// that `increase()` sees a first rollback as a step from 0 to 1.
const OUTCOMES: [(&str, &str); 5] = [
    ("succeeded", "none"),
    ("rolled_back", "1"),
    ("rolled_back", "2"),
    ("rolled_back", "3"),
    ("rolled_back", "4"),
];

fn seconds() -> Histogram {
    // 5 ms to about 3 minutes.
    Histogram::new(exponential_buckets(0.005, 2.0, 16))
}

pub struct Metrics {
    registry: Registry,
    rollouts: Family<RolloutLabels, Counter>,
    rollout_seconds: Histogram,
    step_seconds: Family<StepLabels, Histogram, fn() -> Histogram>,
    healthy_to_switched: Histogram,
    active: Family<ColorLabels, Gauge>,
    phase: Family<PhaseLabels, Gauge>,
    ready: Gauge,
    desired: Gauge,
    front_up: Gauge,
    reconcile_errors: Family<KindLabels, Counter>,
    notifications: Family<KindLabels, Counter>,
    manifest_errors: Counter,
    reconciles: Counter,
    api_refused: Family<ReasonLabels, Counter>,
    api_timeouts: Family<StageLabels, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageLabels {
    stage: String,
}

impl Default for Metrics {
    fn default() -> Self {
        let m = Metrics {
            registry: Registry::with_prefix("controller"),
            rollouts: Family::default(),
            rollout_seconds: seconds(),
            step_seconds: Family::new_with_constructor(seconds),
            healthy_to_switched: seconds(),
            active: Family::default(),
            phase: Family::default(),
            ready: Gauge::default(),
            desired: Gauge::default(),
            front_up: Gauge::default(),
            reconcile_errors: Family::default(),
            notifications: Family::default(),
            manifest_errors: Counter::default(),
            reconciles: Counter::default(),
            api_refused: Family::default(),
            api_timeouts: Family::default(),
        };
        let mut registry = m.registry;
        registry.register(
            "rollouts",
            "Finished rollouts by result and rollback level",
            m.rollouts.clone(),
        );
        registry.register(
            "rollout_duration_seconds",
            "Duration of finished rollouts",
            m.rollout_seconds.clone(),
        );
        registry.register(
            "step_duration_seconds",
            "Duration of each rollout step",
            m.step_seconds.clone(),
        );
        registry.register(
            "healthy_to_switched_seconds",
            "From every new replica healthy to nginx reloaded on it",
            m.healthy_to_switched.clone(),
        );
        registry.register(
            "active_color",
            "1 for the color nginx sends traffic to",
            m.active.clone(),
        );
        registry.register(
            "phase",
            "1 for the phase /status says (Healthy, Progressing, Paused, Degraded)",
            m.phase.clone(),
        );
        registry.register(
            "live_replicas_ready",
            "Running, healthy replicas of the live color",
            m.ready.clone(),
        );
        registry.register(
            "live_replicas_desired",
            "Replicas the manifest asks of the live color",
            m.desired.clone(),
        );
        registry.register(
            "front_up",
            "1 while the front answers GET / with a 2xx, as users reach it",
            m.front_up.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Failed reconcile steps by kind",
            m.reconcile_errors.clone(),
        );
        registry.register(
            "manifest_errors",
            "Manifest reads refused (parse or validation)",
            m.manifest_errors.clone(),
        );
        registry.register("reconciles", "Reconcile steps taken", m.reconciles.clone());
        registry.register(
            "notifications",
            "Rollout events for the webhook, by outcome (sent, retried, failed, dropped)",
            m.notifications.clone(),
        );
        registry.register(
            "api_connections_refused",
            "API connections closed at once: from the app network, or past the connection cap",
            m.api_refused.clone(),
        );
        registry.register(
            "api_connection_timeouts",
            "API connections closed by a timer (header, idle or request)",
            m.api_timeouts.clone(),
        );
        for (result, level) in OUTCOMES {
            let _ = m
                .rollouts
                .get_or_create(&RolloutLabels { result: result.into(), level: level.into() });
        }
        Metrics { registry, ..m }
    }
}

impl Metrics {
    pub fn finished(&self, f: &Finished) {
        let result = match f.result {
            Verdict::Succeeded => "succeeded",
            Verdict::RolledBack => "rolled_back",
        };
        let level = f.level.map(|l| l.to_string()).unwrap_or_else(|| "none".into());
        self.rollouts.get_or_create(&RolloutLabels { result: result.into(), level }).inc();
        self.rollout_seconds.observe(f.duration_ms as f64 / 1000.0);
        for s in &f.summary.steps {
            self.step_seconds
                .get_or_create(&StepLabels { step: s.step.to_string() })
                .observe(s.ms as f64 / 1000.0);
        }
        if let Some(ms) = f.healthy_to_switched_ms {
            self.healthy_to_switched.observe(ms as f64 / 1000.0);
        }
    }

    pub fn active(&self, live: Option<Color>) {
        for c in Color::ALL {
            self.active
                .get_or_create(&ColorLabels { color: c.to_string() })
                .set(i64::from(live == Some(c)));
        }
    }

    /// The phase of the status just published.
    pub fn phase(&self, now: Phase) {
        for p in PHASES {
            self.phase
                .get_or_create(&PhaseLabels { phase: p.to_string() })
                .set(i64::from(p == now));
        }
    }

    /// What the last observation showed of the live color and the front.
    pub fn observed(&self, o: &Observed, desired: Option<u32>) {
        let ready = o.live_color().map_or(0, |l| o.of(l).iter().filter(|c| c.is_ready()).count());
        self.ready.set(ready as i64);
        self.desired.set(i64::from(desired.unwrap_or(0)));
        self.front_up.set(i64::from(matches!(o.front, Some(Ok(())))));
    }

    pub fn notification(&self, outcome: &str) {
        self.notifications.get_or_create(&KindLabels { kind: outcome.into() }).inc();
    }

    pub fn reconcile_error(&self, kind: &str) {
        self.reconcile_errors.get_or_create(&KindLabels { kind: kind.into() }).inc();
    }

    pub fn manifest_error(&self) {
        self.manifest_errors.inc();
    }

    pub fn reconciled(&self) {
        self.reconciles.inc();
    }

    /// An API connection closed as soon as accepted, and why.
    pub fn api_refused(&self, reason: &str) {
        self.api_refused.get_or_create(&ReasonLabels { reason: reason.into() }).inc();
    }

    /// An API connection closed when the timer of `stage` ran out.
    pub fn api_timeout(&self, stage: &str) {
        self.api_timeouts.get_or_create(&StageLabels { stage: stage.into() }).inc();
    }

    /// The content type and body `/metrics` answers a request whose
    /// `Accept` header is `accept`.
    pub fn exposition(&self, accept: Option<&str>) -> (&'static str, String) {
        if accept.is_some_and(wants_openmetrics) {
            (OPENMETRICS, self.encode())
        } else {
            (CLASSIC, self.encode_text())
        }
    }

    /// The OpenMetrics exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// The same registry in the classic text format (0.0.4), the one
    /// `promtool check metrics` reads.
    pub fn encode_text(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry);
        out
    }
}

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const CLASSIC: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Whether an `Accept` header names OpenMetrics with a weight above zero.
fn wants_openmetrics(accept: &str) -> bool {
    accept.split(',').any(|range| {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or("");
        let refused = parts.any(|p| {
            p.strip_prefix("q=").and_then(|q| q.parse::<f32>().ok()).is_some_and(|q| q <= 0.0)
        });
        media.eq_ignore_ascii_case("application/openmetrics-text") && !refused
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use controller_core::clock::Timestamp;
    use controller_core::record::{Level, Record, Stage};

    #[test]
    fn answers_in_the_format_asked_for() {
        let m = Metrics::default();
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;\
                          version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        let (kind, body) = m.exposition(Some(prometheus));
        assert!(kind.starts_with("application/openmetrics-text") && body.ends_with("# EOF\n"));
        for accept in
            [None, Some("*/*"), Some("text/plain"), Some("application/openmetrics-text;q=0")]
        {
            let (kind, body) = m.exposition(accept);
            assert!(kind.starts_with("text/plain; version=0.0.4"), "{accept:?}");
            assert!(!body.contains("# EOF"), "{accept:?}");
        }
    }

    #[test]
    fn counts_rollouts_and_errors_by_label() {
        let m = Metrics::default();
        let mut r = Record::default();
        let desired = crate::fixtures::desired();
        r.begin(&desired, Color::Blue, None, Timestamp(0));
        let level = Level::AfterProbe;
        r.enter(Stage::Rollback { level, reason: "probe".into() }, Timestamp(500));
        m.finished(&r.finish(Timestamp(1000)).unwrap());
        m.active(Some(Color::Green));
        m.reconcile_error("nginx_test");
        let text = m.encode();
        assert!(
            text.contains(r#"controller_rollouts_total{result="rolled_back",level="2"} 1"#),
            "{text}"
        );
        assert!(text.contains(r#"controller_active_color{color="green"} 1"#), "{text}");
        assert!(text.contains(r#"controller_active_color{color="blue"} 0"#), "{text}");
        assert!(
            text.contains(r#"controller_reconcile_errors_total{kind="nginx_test"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"controller_step_duration_seconds_count{step="rollback"} 1"#),
            "{text}"
        );
    }

    #[test]
    fn the_phase_is_one_series_per_phase() {
        let m = Metrics::default();
        m.phase(Phase::Degraded);
        let text = m.encode();
        assert!(text.contains(r#"controller_phase{phase="Degraded"} 1"#), "{text}");
        assert!(text.contains(r#"controller_phase{phase="Healthy"} 0"#), "{text}");
        // Rollbacks start at zero, so a first one is an increase.
        assert!(
            text.contains(r#"controller_rollouts_total{result="rolled_back",level="1"} 0"#),
            "{text}"
        );
    }

    /// `promtool check metrics` on a populated registry. Skipped when
    /// promtool is missing, unless `TAXI_REQUIRE_PROMTOOL` is set (the unit
    /// stage sets it after installing Debian's `prometheus`).
    #[test]
    fn promtool_accepts_the_metrics() {
        use std::io::Write;
        use std::process::{Command, Stdio};

        let m = Metrics::default();
        let mut r = Record::default();
        r.begin(&crate::fixtures::desired(), Color::Blue, None, Timestamp(0));
        let level = Level::BeforeSwitch;
        r.enter(Stage::Rollback { level, reason: "health".into() }, Timestamp(500));
        m.finished(&r.finish(Timestamp(1000)).unwrap());
        m.active(Some(Color::Blue));
        m.phase(Phase::Healthy);
        m.reconcile_error("nginx_test");
        m.notification("sent");
        m.manifest_error();
        m.reconciled();
        m.api_refused("limit");
        m.api_timeout("idle");
        let child = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        let mut child = match child {
            Ok(c) => c,
            Err(e) if std::env::var_os("TAXI_REQUIRE_PROMTOOL").is_none() => {
                eprintln!("skipped: cannot run promtool ({e})");
                return;
            }
            Err(e) => panic!("cannot run promtool: {e}"),
        };
        // What /metrics answers a client that names no format.
        let (_, served) = m.exposition(Some("*/*"));
        child.stdin.take().unwrap().write_all(served.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success() && said.trim().is_empty(), "promtool: {said}");
    }
}
