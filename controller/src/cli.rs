//! The CLI commands that talk to a running controller over its API.

use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::de::DeserializeOwned;

use controller::api::{ABORT, Accepted, PROMOTE, PROMOTE_FULL, ROLLBACK, SET_IMAGE, SetImage};
use controller_core::clock::Timestamp;
use controller_core::gates::{Gate, Reading};
use controller_core::record::{Finished, Verdict};
use controller_core::status::{Phase, Status};

pub struct Client {
    base: String,
    http: reqwest::Client,
}

impl Client {
    pub fn new(base: &str) -> Client {
        Client {
            base: base.trim_end_matches('/').to_owned(),
            http: controller::color_http::client(),
        }
    }

    async fn read<T: DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
        what: &str,
    ) -> Result<T> {
        let response = request.send().await.with_context(|| {
            format!("the controller does not answer at {} (is `controller run` up?)", self.base)
        })?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        if !status.is_success() {
            let message = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_owned))
                .unwrap_or(text);
            bail!("{what}: the controller answered {status}: {message}");
        }
        serde_json::from_str(&text).with_context(|| format!("{what}: unexpected answer {text:?}"))
    }

    pub async fn status(&self) -> Result<Status> {
        self.read(self.http.get(format!("{}/status", self.base)), "status").await
    }

    pub async fn set_image(&self, token: &str, tag: &str) -> Result<Accepted> {
        let request = self
            .http
            .post(format!("{}{SET_IMAGE}", self.base))
            .bearer_auth(token)
            .json(&SetImage { tag: tag.into() });
        self.read(request, "set-image").await
    }

    /// Promotes (or aborts) the paused rollout.
    pub async fn decide(&self, token: &str, promote: bool) -> Result<Accepted> {
        let (path, what) = if promote { (PROMOTE, "promote") } else { (ABORT, "abort") };
        self.read(self.http.post(format!("{}{path}", self.base)).bearer_auth(token), what).await
    }

    /// Promotes a canary past every step left.
    pub async fn promote_full(&self, token: &str) -> Result<Accepted> {
        let request = self.http.post(format!("{}{PROMOTE_FULL}", self.base)).bearer_auth(token);
        self.read(request, "promote --full").await
    }

    pub async fn rollback(&self, token: &str) -> Result<Accepted> {
        self.read(self.http.post(format!("{}{ROLLBACK}", self.base)).bearer_auth(token), "rollback")
            .await
    }
}

pub fn read_token(path: &Path) -> Result<String> {
    let token = std::fs::read_to_string(path).with_context(|| {
        format!("cannot read the API token at {} (see --token-file)", path.display())
    })?;
    Ok(token.trim().to_owned())
}

/// `controller status`: the document as a person reads it.
pub fn summary(s: &Status) -> String {
    let mut out = String::new();
    let or = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    out += &format!("phase     {}", s.phase);
    if let Some(step) = &s.step {
        out += &format!(" (step {step})");
    }
    out += "\n";
    if let Some(reason) = &s.reason {
        out += &format!("reason    {reason}\n");
    }
    out += &format!(
        "desired   {} ({} replicas) from {}\n",
        or(&s.desired.tag),
        s.desired.replicas.map_or("-".into(), |r| r.to_string()),
        s.desired.source
    );
    if let Some(e) = &s.desired.error {
        out += &format!("manifest  REFUSED: {e}\n");
    }
    out += &format!(
        "active    {} {}\n",
        s.active.color.map_or("-".into(), |c| c.to_string()),
        or(&s.active.tag)
    );
    for (name, containers) in [("blue", &s.colors.blue), ("green", &s.colors.green)] {
        let list = containers.as_ref().map_or("-".into(), |cs| {
            cs.iter()
                .map(|c| format!("{} {} {}/{}", c.name, c.tag, c.state, c.health))
                .collect::<Vec<_>>()
                .join(", ")
        });
        out += &format!("{name:<9} {list}\n");
    }
    if let Some(l) = &s.last {
        out += &format!("last      {}\n", history_line(l));
    }
    if let Some(e) = &s.error {
        out += &format!("error     {e}\n");
    }
    out
}

/// How `status --watch` ends: the exit code says how the deployment
/// settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// Healthy: the desired tag is live.
    Healthy = 0,
    /// Degraded: rolled back, or nothing healthy serves.
    Degraded = 2,
    /// Paused: a proven rollout waits for `promote` or `abort`.
    Paused = 3,
}

/// Whether the document shows a settled deployment, judged only from an
/// observation made after `since` (one before could predate the change
/// the caller waits on).
pub fn settled(s: &Status, since: Timestamp) -> Option<Settled> {
    if s.observed_at.is_none_or(|at| at < since) {
        return None;
    }
    match s.phase {
        Phase::Healthy => Some(Settled::Healthy),
        Phase::Degraded => Some(Settled::Degraded),
        Phase::Paused => Some(Settled::Paused),
        Phase::Progressing => None,
    }
}

/// `controller status --watch`: the summary redrawn as it changes (the
/// screen cleared on a terminal, each new state below the last one
/// otherwise), until the deployment settles or `timeout` passes.
pub async fn watch(client: &Client, timeout: std::time::Duration) -> Result<Settled> {
    use std::io::{IsTerminal, Write};
    let terminal = std::io::stdout().is_terminal();
    let since = Timestamp::from_system(std::time::SystemTime::now());
    let deadline = tokio::time::Instant::now() + timeout;
    let mut shown = String::new();
    loop {
        let s = client.status().await?;
        let text = watch_view(&s);
        if text != shown {
            let mut out = std::io::stdout().lock();
            if terminal {
                // Home, then clear: the view redrawn in place.
                let _ = write!(out, "\x1b[H\x1b[2J");
            } else if !shown.is_empty() {
                let _ = writeln!(out, "---");
            }
            let _ = write!(out, "{text}");
            let _ = out.flush();
            shown = text;
        }
        if let Some(end) = settled(&s, since) {
            return Ok(end);
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("not settled within {}", humantime::format_duration(timeout));
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

/// The summary with the rollout in flight: its steps so far and the
/// analysis' figures.
fn watch_view(s: &Status) -> String {
    let mut out = summary(s);
    if let Some(r) = &s.rollout {
        let steps: Vec<String> =
            r.summary.steps.iter().map(|t| format!("{} {} ms", t.step, t.ms)).collect();
        out += &format!(
            "rollout   #{} {} → {}: {} (now {})\n",
            r.summary.revision,
            r.tag,
            r.summary.color,
            if steps.is_empty() { "-".to_owned() } else { steps.join(", ") },
            r.step
        );
        if let Some(f) = &r.summary.analysis {
            out += &format!(
                "analysis  {:.0} predictions, {:.0} shed, {:.2}% faults, p99 {:.1} ms, {} own\n",
                f.requests,
                f.shed,
                f.error_rate * 100.0,
                f.p99_seconds * 1e3,
                f.own
            );
        }
        for x in &r.summary.retries {
            out += &format!("retries   {} × {}: {}\n", x.count, x.step, x.error);
        }
    }
    out
}

/// `controller history --revision N`: one finished rollout, whole.
pub fn detail(f: &Finished) -> String {
    let s = &f.summary;
    let mut out = format!("{}\n", history_line(f));
    out += &format!("digest    {}\n", s.digest.as_deref().unwrap_or("-"));
    out += &format!(
        "from      {} {}\n",
        s.from_color.map_or("-".into(), |c| c.to_string()),
        s.from_tag.as_deref().unwrap_or("-")
    );
    out += &format!("started   {}, {} restart(s)\n", s.started_at.rfc3339(), s.restarts);
    let steps: Vec<String> = s.steps.iter().map(|t| format!("{} {} ms", t.step, t.ms)).collect();
    out += &format!("steps     {}\n", if steps.is_empty() { "-".into() } else { steps.join(", ") });
    if let Some(ms) = f.healthy_to_switched_ms {
        out += &format!("switch    healthy → switched in {ms} ms\n");
    }
    for g in &s.gates {
        out += &format!("gate      {}\n", gate_line(g));
    }
    if let Some(d) = &s.diff {
        out += &format!(
            "diff      {} golden trips, mean change ${:.2}, largest ${:.2}\n",
            d.trips, d.mean_abs, d.max_abs
        );
    }
    if let Some(a) = &s.analysis {
        out += &format!(
            "analysis  {:.0} predictions, {:.0} shed, {:.2}% faults, p99 {:.1} ms, {} own\n",
            a.requests,
            a.shed,
            a.error_rate * 100.0,
            a.p99_seconds * 1e3,
            a.own
        );
    }
    for x in &s.retries {
        out += &format!("retries   {} × {}: {}\n", x.count, x.step, x.error);
    }
    out
}

/// One gate's reading: what it measured against its limit, and whether
/// it passed.
fn gate_line(g: &Reading) -> String {
    let verdict = if g.passed { "pass" } else { "FAIL" };
    let m = g.measured;
    let figure = |show: &dyn Fn(f64) -> String| m.map_or("not a number".to_owned(), show);
    let (name, measured, limit) = match g.gate {
        Gate::Golden => (
            "golden trips",
            figure(&|m| format!("{m:.0} priced as promised")),
            format!("all {:.0}", g.limit),
        ),
        Gate::MinR2 => ("held-out R²", figure(&|m| format!("{m:.4}")), format!("≥ {}", g.limit)),
        Gate::MaxRmseIncrease => (
            "RMSE vs live",
            figure(&|m| format!("{:+.1}%", m * 100.0)),
            format!("≤ +{:.1}%", g.limit * 100.0),
        ),
        Gate::LatencyBudget => (
            "warm-up p99",
            figure(&|m| format!("{:.1} ms", m * 1e3)),
            format!("≤ {:.0} ms", g.limit * 1e3),
        ),
    };
    format!("{name}: {measured} ({limit}) {verdict}")
}

pub fn history_line(f: &Finished) -> String {
    let result = match (f.result, f.level) {
        (Verdict::Succeeded, _) => "succeeded".to_owned(),
        (_, Some(level)) => format!("rolled back (level {level})"),
        _ => "rolled back".to_owned(),
    };
    let reason = f.reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default();
    format!(
        "#{} {} → {} {} in {} ms{}",
        f.summary.revision, f.tag, f.summary.color, result, f.duration_ms, reason
    )
}

#[cfg(test)]
mod tests {
    use controller_core::manifest;
    use controller_core::observed::{Observed, Traffic};
    use controller_core::record::Record;
    use controller_core::status::{ManifestState, build};

    use super::*;

    #[test]
    fn a_watch_settles_only_on_a_fresh_observation() {
        let text = "apiVersion: deploy.taxi-fare.io/v1\nkind: Rollout\nmetadata:\n  name: t\n\
                    spec:\n  image:\n    repository: r/s\n    tag: v1\n";
        let desired = manifest::parse(text).unwrap();
        let m = ManifestState { desired: Some(&desired), error: None, source: "m" };
        let nothing =
            Observed { replicas: vec![], traffic: Traffic::to(None), front: None, resolved: None };
        // Nothing serves: Degraded, once seen after the watch began.
        let s = build(&m, Some(&nothing), &Record::default(), None, Timestamp(2000));
        assert_eq!(s.phase, Phase::Degraded);
        assert_eq!(settled(&s, Timestamp(1000)), Some(Settled::Degraded));
        assert_eq!(settled(&s, Timestamp(3000)), None, "an older observation settled it");
        assert_eq!(Settled::Degraded as i32, 2);
        // A rollout in flight is not settled.
        let mut r = Record::default();
        r.begin(&desired, bluegreen::Color::Blue, None, Timestamp(0));
        let s = build(&m, Some(&nothing), &r, None, Timestamp(2000));
        assert_eq!(settled(&s, Timestamp(1000)), None);
        assert!(watch_view(&s).contains("rollout   #1 v1 → blue"), "{}", watch_view(&s));
    }

    #[test]
    fn one_revision_in_detail() {
        let text = "apiVersion: deploy.taxi-fare.io/v1\nkind: Rollout\nmetadata:\n  name: t\n\
                    spec:\n  image:\n    repository: r/s\n    tag: v1\n";
        let desired = manifest::parse(text).unwrap();
        let mut r = Record::default();
        r.begin(&desired, bluegreen::Color::Green, None, Timestamp(0));
        r.rollout.as_mut().unwrap().summary.digest = Some("sha256:abc".into());
        r.rollout.as_mut().unwrap().summary.gates = vec![
            Reading::new(Gate::Golden, 8.0, 8.0, true),
            Reading::new(Gate::MinR2, f64::NAN, 0.7, false),
        ];
        r.note_failure(controller_core::record::StepName::Start, "registry down", Timestamp(1));
        let done = r.finish(Timestamp(5)).unwrap();
        let text = detail(&done);
        assert!(text.starts_with("#1 v1 → green succeeded in 5 ms"), "{text}");
        assert!(text.contains("digest    sha256:abc"), "{text}");
        assert!(text.contains("retries   1 × start: registry down"), "{text}");
        assert!(
            text.contains("gate      golden trips: 8 priced as promised (all 8) pass"),
            "{text}"
        );
        assert!(text.contains("gate      held-out R²: not a number (≥ 0.7) FAIL"), "{text}");
    }
}
