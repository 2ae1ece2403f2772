//! The admission figures of `bench serve`: the service as it runs (admission
//! by cost, with a share of the budget kept for small requests and a line
//! for large ones) against the same binary configured to admit by count as
//! it used to (16 requests at once whatever their size, the rest shed at
//! once, nothing kept for small requests), each measurement on a fresh
//! process, so its peak RSS is its own:
//!
//! - 128 wrk connections posting 100-row batches: answers by status (the
//!   service's own count), the shed share (target: 0);
//! - a flood of 10,000-row batches from 48 clients while 2 post the
//!   documented 1-row request (one every 10 ms at most), all waiting as
//!   `Retry-After` says: each
//!   kind's answers by status, the 1-row 200 share (target: ≥ 95 %), the
//!   `overloaded` and `timeout` answers, `GET /` latency and peak RSS.
//!
//! "By count" is emulated with the new flags: a budget of 16 times what the
//! service charges for the scenario's body (read off its
//! `prediction_budget_used_bytes` while such a request is admitted), no
//! small reserve and no line.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::overload::{self, Answers, Clients, Overload, quantile};
use super::serve::{self, Measured, Scenario};
use crate::effects::http::Request;
use crate::effects::local_server::LocalServer;

/// wrk connections of the first measurement, as in the issue.
const CONNECTIONS: u32 = 128;
/// Flood clients posting 10,000-row batches, and 1-row clients meanwhile.
const LARGE_CLIENTS: usize = 48;
const SMALL_CLIENTS: usize = 2;
/// The 1-row clients' pace, as interactive clients send: at most one
/// request each this often, so both configurations see the same load of
/// them (back to back, the well-served ones would load the machine far
/// more than the shed ones).
const SMALL_PACE: Duration = Duration::from_millis(10);
/// Requests the count-limited service admitted at once
/// (`--max-concurrent-predictions`' default).
const OLD_SLOTS: usize = 16;
/// The share of 1-row requests to be answered 200 during the flood.
const SMALL_SERVED: f64 = 0.95;

/// Everything the admission figures need from `bench serve`.
pub(super) struct Setup<'a> {
    pub model: &'a Path,
    pub work: &'a Path,
    pub threads: u32,
    pub wrk_seconds: u32,
    pub flood: Duration,
    /// The 100-row scenario.
    pub hundred: &'a Scenario,
    /// A 10,000-row body.
    pub large_body: &'a str,
}

/// One configuration's figures.
#[derive(Debug)]
pub(super) struct Run {
    pub wrk: Measured,
    /// The service's predict answers during the wrk run, by status.
    pub wrk_answers: Answers,
    pub wrk_kinds: BTreeMap<String, f64>,
    pub flood: Overload,
    pub flood_kinds: BTreeMap<String, f64>,
}

/// Both configurations, side by side.
#[derive(Debug)]
pub(super) struct Figures {
    pub wrk_body_bytes: usize,
    pub large_body_bytes: usize,
    pub flood_seconds: f64,
    pub charged_hundred: u64,
    pub charged_large: u64,
    pub by_cost: Run,
    pub by_count: Run,
}

pub(super) fn measure(setup: &Setup) -> Result<Figures> {
    let hundred_body = setup.hundred.body.as_deref().context("the 100-row scenario has no body")?;
    let probe = start(setup, "bench-admission-probe", &[])?;
    let charged_hundred = charged_bytes(&probe, hundred_body.len())?;
    let charged_large = charged_bytes(&probe, setup.large_body.len())?;
    drop(probe);
    println!(
        "admission: the service charges {charged_hundred} B for a 100-row body, \
         {charged_large} B for a 10,000-row one"
    );
    let by_count_wrk = flags(&[
        ("prediction-budget-bytes", OLD_SLOTS as u64 * charged_hundred),
        ("small-reserve-bytes", 0),
        ("max-waiting-predictions", 0),
        ("max-body-bytes", hundred_body.len() as u64),
    ]);
    let by_count_flood = flags(&[
        ("prediction-budget-bytes", OLD_SLOTS as u64 * charged_large),
        ("small-reserve-bytes", 0),
        ("max-waiting-predictions", 0),
    ]);
    let by_cost = run(setup, "by-cost", &[], &[])?;
    let by_count = run(setup, "by-count", &by_count_wrk, &by_count_flood)?;
    Ok(Figures {
        wrk_body_bytes: hundred_body.len(),
        large_body_bytes: setup.large_body.len(),
        flood_seconds: setup.flood.as_secs_f64(),
        charged_hundred,
        charged_large,
        by_cost,
        by_count,
    })
}

fn flags(pairs: &[(&str, u64)]) -> Vec<String> {
    pairs.iter().flat_map(|(name, value)| [format!("--{name}"), value.to_string()]).collect()
}

fn start(setup: &Setup, name: &str, extra: &[String]) -> Result<LocalServer> {
    let mut service = serve::start_service(name, setup.model, extra)?;
    service.wait_for("/ready", 200, Duration::from_secs(30))?;
    Ok(service)
}

/// Both measurements of one configuration, each on a fresh process.
fn run(setup: &Setup, name: &str, wrk_flags: &[String], flood_flags: &[String]) -> Result<Run> {
    let service = start(setup, &format!("bench-admission-{name}-wrk"), wrk_flags)?;
    let wrk = serve::wrk(
        &service,
        setup.hundred,
        setup.threads,
        CONNECTIONS,
        setup.wrk_seconds,
        setup.work,
    )?;
    let (wrk_answers, wrk_kinds) = predict_answers(&service)?;
    println!(
        "  {name:<9} c={CONNECTIONS} 100 rows: {:.0} req/s, answers {:?}",
        wrk.rps, wrk_answers.by_status
    );
    drop(service);

    let service = start(setup, &format!("bench-admission-{name}-flood"), flood_flags)?;
    let clients = |count, body: &str, timeout, pace| Clients {
        count,
        body: Arc::from(body.as_bytes()),
        timeout: Duration::from_secs(timeout),
        pace,
    };
    let large = clients(LARGE_CLIENTS, setup.large_body, 30, None);
    let small = clients(SMALL_CLIENTS, &crate::api::documented_request(), 10, Some(SMALL_PACE));
    let flood = overload::measure(&service, &large, &small, setup.flood)?;
    let (_, flood_kinds) = predict_answers(&service)?;
    println!(
        "  {name:<9} flood: 10,000 rows {:?}, 1 row {:?}",
        flood.large.by_status, flood.small.by_status
    );
    Ok(Run { wrk, wrk_answers, wrk_kinds, flood, flood_kinds })
}

/// What the service charges a request declaring `len` body bytes: read
/// off its gauge while one such request is admitted, its body unsent.
fn charged_bytes(service: &LocalServer, len: usize) -> Result<u64> {
    let mut stream = TcpStream::connect(service.authority())?;
    write!(
        stream,
        "POST /api/predict/ HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n\
         Content-Length: {len}\r\n\r\n"
    )?;
    let charged = wait_for_gauge(service, |v| v > 0.0)?;
    drop(stream);
    wait_for_gauge(service, |v| v == 0.0)?;
    Ok(charged as u64)
}

fn wait_for_gauge(service: &LocalServer, done: impl Fn(f64) -> bool) -> Result<f64> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = Request::get("/metrics").send(&service.authority())?.text();
        let value = series(&text, "prediction_budget_used_bytes").map(|(_, v)| v).sum::<f64>();
        if done(value) {
            return Ok(value);
        }
        if Instant::now() > deadline {
            bail!("prediction_budget_used_bytes stayed at {value} for 10 s");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The service's own count of its predict answers, by status, and of its
/// 503s by kind.
fn predict_answers(service: &LocalServer) -> Result<(Answers, BTreeMap<String, f64>)> {
    let text = Request::get("/metrics").send(&service.authority())?.text();
    let mut answers = Answers::default();
    for (labels, value) in series(&text, "http_requests_total") {
        if labels.get("route") == Some(&"/api/predict/")
            && let Some(status) = labels.get("status").and_then(|s| s.parse().ok())
        {
            *answers.by_status.entry(status).or_default() += value as u64;
        }
    }
    let mut kinds = BTreeMap::new();
    for (labels, value) in series(&text, "http_request_errors_total") {
        if labels.get("route") == Some(&"/api/predict/")
            && let Some(kind) = labels.get("kind")
        {
            *kinds.entry((*kind).to_owned()).or_default() += value;
        }
    }
    Ok((answers, kinds))
}

/// The series of metric `name` in a Prometheus text, as labels and value
/// (label values of this service hold no commas or quotes).
fn series<'a>(
    text: &'a str,
    name: &'a str,
) -> impl Iterator<Item = (BTreeMap<&'a str, &'a str>, f64)> + 'a {
    text.lines().filter(|l| !l.starts_with('#')).filter_map(move |line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (found, labels) = match series.split_once('{') {
            Some((found, rest)) => (found, rest.strip_suffix('}')?),
            None => (series, ""),
        };
        if found != name {
            return None;
        }
        let labels = labels
            .split(',')
            .filter_map(|pair| {
                let (key, value) = pair.split_once('=')?;
                Some((key, value.trim_matches('"')))
            })
            .collect();
        Some((labels, value.parse().ok()?))
    })
}

impl Figures {
    pub fn table(&self) -> String {
        let (new, old) = (&self.by_cost, &self.by_count);
        let mut out = String::new();
        let _ = writeln!(
            out,
            "\nadmission: by cost (the defaults) against by count ({OLD_SLOTS} requests at once \
             whatever their size: a budget of {OLD_SLOTS} × the scenario's charge, no small \
             reserve, no line), each on a fresh process"
        );
        let _ = writeln!(
            out,
            "(a) wrk, {CONNECTIONS} connections posting 100-row batches ({:.1} KB, charged \
             {:.1} KB); (b) {LARGE_CLIENTS} clients posting 10,000-row batches ({:.2} MB, \
             charged {:.2} MB) for {:.0} s while {SMALL_CLIENTS} post the documented 1-row \
             request every {} ms, all waiting as Retry-After says",
            self.wrk_body_bytes as f64 / 1e3,
            self.charged_hundred as f64 / 1e3,
            self.large_body_bytes as f64 / 1e6,
            self.charged_large as f64 / 1e6,
            self.flood_seconds,
            SMALL_PACE.as_millis()
        );
        let _ = writeln!(out, "\n| figure | by cost | by count | cost / count |");
        let _ = writeln!(out, "|---|---:|---:|---:|");
        let kind = |kinds: &BTreeMap<String, f64>, k: &str| kinds.get(k).copied().unwrap_or(0.0);
        let shed = |run: &Run| kind(&run.wrk_kinds, "overloaded") / run.wrk_answers.total() as f64;
        let priced = |run: &Run| run.flood.large.of(200) as f64 / run.flood.seconds;
        let rss = |kib: u64| kib as f64 / 1024.0;
        let rows: Vec<(String, f64, f64, Unit)> = vec![
            ("(a) req/s".into(), new.wrk.rps, old.wrk.rps, Unit::Count),
            ("(a) answers".into(), count(&new.wrk_answers), count(&old.wrk_answers), Unit::Count),
            ("(a) … 200".into(), ok(&new.wrk_answers), ok(&old.wrk_answers), Unit::Count),
            (
                "(a) … 503 overloaded".into(),
                kind(&new.wrk_kinds, "overloaded"),
                kind(&old.wrk_kinds, "overloaded"),
                Unit::Count,
            ),
            (
                "(a) … other".into(),
                other(&new.wrk_answers, &new.wrk_kinds),
                other(&old.wrk_answers, &old.wrk_kinds),
                Unit::Count,
            ),
            ("(a) shed share".into(), shed(new), shed(old), Unit::Share),
            ("(a) p99".into(), new.wrk.p99_ms, old.wrk.p99_ms, Unit::Ms),
            (
                "(a) wrk socket errors and non-2xx".into(),
                new.wrk.errors as f64,
                old.wrk.errors as f64,
                Unit::Count,
            ),
            (
                "(b) 1-row answers".into(),
                count(&new.flood.small),
                count(&old.flood.small),
                Unit::Count,
            ),
            ("(b) … 200".into(), ok(&new.flood.small), ok(&old.flood.small), Unit::Count),
            (
                "(b) … 503".into(),
                new.flood.small.of(503) as f64,
                old.flood.small.of(503) as f64,
                Unit::Count,
            ),
            (
                "(b) … other or none".into(),
                not_ok_or_503(&new.flood.small),
                not_ok_or_503(&old.flood.small),
                Unit::Count,
            ),
            (
                "(b) 1-row 200 share".into(),
                new.flood.small.ok_share(),
                old.flood.small.ok_share(),
                Unit::Share,
            ),
            (
                "(b) 1-row p50 (200s)".into(),
                quantile(&new.flood.small.ok_ms, 0.5),
                quantile(&old.flood.small.ok_ms, 0.5),
                Unit::Ms,
            ),
            (
                "(b) 1-row p99 (200s)".into(),
                quantile(&new.flood.small.ok_ms, 0.99),
                quantile(&old.flood.small.ok_ms, 0.99),
                Unit::Ms,
            ),
            (
                "(b) 10,000-row answers".into(),
                count(&new.flood.large),
                count(&old.flood.large),
                Unit::Count,
            ),
            ("(b) … 200".into(), ok(&new.flood.large), ok(&old.flood.large), Unit::Count),
            (
                "(b) … 503".into(),
                new.flood.large.of(503) as f64,
                old.flood.large.of(503) as f64,
                Unit::Count,
            ),
            (
                "(b) … other or none".into(),
                not_ok_or_503(&new.flood.large),
                not_ok_or_503(&old.flood.large),
                Unit::Count,
            ),
            (
                "(b) 10,000-row batches priced per second".into(),
                priced(new),
                priced(old),
                Unit::Count,
            ),
            (
                "(b) 10,000-row p99 (200s)".into(),
                quantile(&new.flood.large.ok_ms, 0.99),
                quantile(&old.flood.large.ok_ms, 0.99),
                Unit::Ms,
            ),
            (
                "(b) 503 overloaded (service's count)".into(),
                kind(&new.flood_kinds, "overloaded"),
                kind(&old.flood_kinds, "overloaded"),
                Unit::Count,
            ),
            (
                "(b) 503 timeout (service's count)".into(),
                kind(&new.flood_kinds, "timeout"),
                kind(&old.flood_kinds, "timeout"),
                Unit::Count,
            ),
            (
                "(b) `GET /` p99".into(),
                quantile(&new.flood.live_ms, 0.99),
                quantile(&old.flood.live_ms, 0.99),
                Unit::Ms,
            ),
            (
                "(b) peak RSS (VmHWM)".into(),
                rss(new.flood.peak_rss_kib),
                rss(old.flood.peak_rss_kib),
                Unit::Mib,
            ),
            (
                "(b) RSS 2 s after the flood".into(),
                rss(new.flood.rss_after_kib),
                rss(old.flood.rss_after_kib),
                Unit::Mib,
            ),
            (
                "(b) CPU in the 2 s after the flood".into(),
                new.flood.cpu_after_s,
                old.flood.cpu_after_s,
                Unit::Seconds,
            ),
        ];
        for (what, a, b, unit) in rows {
            let ratio =
                if b > 0.0 && a.is_finite() { format!("{:.2}×", a / b) } else { "–".into() };
            let _ = writeln!(out, "| {what} | {} | {} | {ratio} |", unit.show(a), unit.show(b));
        }
        out.push_str(&self.targets());
        out
    }

    /// The targets, checked against this run.
    fn targets(&self) -> String {
        let new = &self.by_cost;
        let shed = new.wrk_kinds.get("overloaded").copied().unwrap_or(0.0);
        let share = new.flood.small.ok_share();
        let timeouts = new.flood_kinds.get("timeout").copied().unwrap_or(0.0);
        let verdict = |ok: bool| if ok { "met" } else { "missed" };
        let mut out = String::new();
        let _ = writeln!(out, "\n| target (admission by cost) | measured | |");
        let _ = writeln!(out, "|---|---:|---|");
        let rows = [
            (
                format!("(a) nothing shed at {CONNECTIONS} connections of 100-row batches"),
                format!("{shed:.0} shed"),
                shed == 0.0,
            ),
            (
                format!(
                    "(b) 1-row requests answered 200 during the flood ≥ {:.0} %",
                    SMALL_SERVED * 100.0
                ),
                format!("{:.1} %", share * 100.0),
                share >= SMALL_SERVED,
            ),
            (
                "(b) no `timeout` answers under the flood (shed with `overloaded` instead)".into(),
                format!("{timeouts:.0}"),
                timeouts == 0.0,
            ),
        ];
        for (what, value, ok) in rows {
            let _ = writeln!(out, "| {what} | {value} | {} |", verdict(ok));
        }
        out
    }
}

fn count(answers: &Answers) -> f64 {
    answers.total() as f64
}

fn ok(answers: &Answers) -> f64 {
    answers.of(200) as f64
}

/// Answers neither 200 nor `overloaded`.
fn other(answers: &Answers, kinds: &BTreeMap<String, f64>) -> f64 {
    count(answers) - ok(answers) - kinds.get("overloaded").copied().unwrap_or(0.0)
}

fn not_ok_or_503(answers: &Answers) -> f64 {
    count(answers) - ok(answers) - answers.of(503) as f64
}

#[derive(Debug, Clone, Copy)]
enum Unit {
    Count,
    Share,
    Ms,
    Mib,
    Seconds,
}

impl Unit {
    fn show(self, v: f64) -> String {
        if !v.is_finite() {
            return "–".into();
        }
        match self {
            Unit::Count => format!("{v:.0}"),
            Unit::Share => format!("{:.1} %", v * 100.0),
            Unit::Ms => format!("{v:.2} ms"),
            Unit::Mib => format!("{v:.1} MiB"),
            Unit::Seconds => format!("{v:.2} s"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const METRICS: &str = "# HELP http_requests_total HTTP requests answered.
http_requests_total{route=\"/api/predict/\",method=\"POST\",status=\"200\"} 12
http_requests_total{route=\"/api/predict/\",method=\"POST\",status=\"503\"} 3
http_requests_total{route=\"/\",method=\"GET\",status=\"200\"} 7
http_request_errors_total{route=\"/api/predict/\",status=\"503\",kind=\"overloaded\"} 3
prediction_budget_used_bytes 4096
";

    #[test]
    fn reads_series_by_name_and_labels() {
        let used: Vec<_> = series(METRICS, "prediction_budget_used_bytes").collect();
        assert_eq!(used, vec![(BTreeMap::new(), 4096.0)]);
        let predict: f64 = series(METRICS, "http_requests_total")
            .filter(|(labels, _)| labels.get("route") == Some(&"/api/predict/"))
            .map(|(_, v)| v)
            .sum();
        assert_eq!(predict, 15.0);
        let labels = series(METRICS, "http_request_errors_total").next().unwrap().0;
        assert_eq!(labels.get("kind"), Some(&"overloaded"));
        assert_eq!(series(METRICS, "http_requests").count(), 0);
    }
}
