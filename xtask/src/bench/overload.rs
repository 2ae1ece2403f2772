//! The flood of `bench serve`: the service alone, flooded with more large
//! predict requests at once than its budget takes while a few clients post
//! small ones and a prober times `GET /`. The clients are well-behaved:
//! after a 503 each waits as `Retry-After` says (a client that retries at
//! once only makes the service read and discard more bodies it refused).
//!
//! Measured: every client's answers by status and its latencies, the
//! latency of liveness under that load, the peak RSS of the process
//! (`VmHWM`, its lifetime's peak, the flood included: run it on a fresh
//! process), its RSS once the flood is over, and the CPU it burned after
//! every client had gone (work that outlives its request).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};

use crate::effects::http::Request;
use crate::effects::local_server::LocalServer;

/// One kind of client of a flood: how many post which body.
#[derive(Debug, Clone)]
pub struct Clients {
    pub count: usize,
    pub body: Arc<[u8]>,
    /// The bound on one exchange; past it the request counts as no answer.
    pub timeout: Duration,
    /// At most one request per client this often (none: back to back), so
    /// the load these clients offer is the same however they are served.
    pub pace: Option<Duration>,
}

/// What one kind of client saw.
#[derive(Debug, Clone, Default)]
pub struct Answers {
    /// Answers by status; 0 counts requests with no answer (connection
    /// errors, timeouts).
    pub by_status: BTreeMap<u16, u64>,
    /// Latencies of the 200 answers, sorted, in milliseconds.
    pub ok_ms: Vec<f64>,
}

impl Answers {
    pub fn total(&self) -> u64 {
        self.by_status.values().sum()
    }

    pub fn of(&self, status: u16) -> u64 {
        self.by_status.get(&status).copied().unwrap_or(0)
    }

    /// The share of requests answered 200 (NaN when none were sent).
    pub fn ok_share(&self) -> f64 {
        self.of(200) as f64 / self.total() as f64
    }

    fn add(&mut self, other: Answers) {
        for (status, n) in other.by_status {
            *self.by_status.entry(status).or_default() += n;
        }
        self.ok_ms.extend(other.ok_ms);
    }
}

/// The `q` quantile (0..=1) of sorted values (NaN for none).
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// What one flood measured.
#[derive(Debug, Clone)]
pub struct Overload {
    pub seconds: f64,
    pub large: Answers,
    pub small: Answers,
    /// `GET /` latencies during the flood, sorted, in milliseconds.
    pub live_ms: Vec<f64>,
    pub peak_rss_kib: u64,
    pub rss_after_kib: u64,
    /// CPU seconds the process used in the 2 s after the last client left.
    pub cpu_after_s: f64,
}

/// Floods `service` with `large` and `small` clients posting to the
/// predict route for `duration`, while one more thread probes `GET /`.
pub fn measure(
    service: &LocalServer,
    large: &Clients,
    small: &Clients,
    duration: Duration,
) -> Result<Overload> {
    let authority = service.authority();
    let stop = Arc::new(AtomicBool::new(false));
    let spawn = |clients: &Clients| -> Vec<thread::JoinHandle<Answers>> {
        (0..clients.count)
            .map(|_| {
                let (authority, clients, stop) = (authority.clone(), clients.clone(), stop.clone());
                thread::spawn(move || post_until(&authority, &clients, &stop))
            })
            .collect()
    };
    let large_threads = spawn(large);
    let small_threads = spawn(small);
    let prober = {
        let (authority, stop) = (authority.clone(), stop.clone());
        thread::spawn(move || {
            let probe = Request::get("/").timeout(Duration::from_secs(30));
            let mut latencies = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let sent = Instant::now();
                if matches!(probe.send(&authority), Ok(r) if r.status == 200) {
                    latencies.push(sent.elapsed().as_secs_f64() * 1e3);
                }
                thread::sleep(Duration::from_millis(5));
            }
            latencies
        })
    };
    thread::sleep(duration);
    stop.store(true, Ordering::Relaxed);
    let join = |threads: Vec<thread::JoinHandle<Answers>>| -> Result<Answers> {
        let mut all = Answers::default();
        for thread in threads {
            all.add(thread.join().map_err(|_| anyhow!("a flood client panicked"))?);
        }
        all.ok_ms.sort_by(f64::total_cmp);
        Ok(all)
    };
    let large = join(large_threads)?;
    let small = join(small_threads)?;
    let mut live_ms = prober.join().map_err(|_| anyhow!("the prober panicked"))?;
    live_ms.sort_by(f64::total_cmp);
    let pid = service.pid();
    let cpu_before = cpu_seconds(pid)?;
    thread::sleep(Duration::from_secs(2));
    let cpu_after_s = cpu_seconds(pid)? - cpu_before;
    let (rss_after_kib, peak_rss_kib) = memory_kib(pid)?;
    Ok(Overload {
        seconds: duration.as_secs_f64(),
        large,
        small,
        live_ms,
        peak_rss_kib,
        rss_after_kib,
        cpu_after_s,
    })
}

/// One client: posts its body until `stop`, waiting as `Retry-After` says
/// after a 503.
fn post_until(authority: &str, clients: &Clients, stop: &AtomicBool) -> Answers {
    let mut answers = Answers::default();
    let request = Request::post_json("/api/predict/", &clients.body).timeout(clients.timeout);
    while !stop.load(Ordering::Relaxed) {
        let sent = Instant::now();
        let answer = request.send(authority);
        let status = answer.as_ref().map_or(0, |r| r.status);
        *answers.by_status.entry(status).or_default() += 1;
        if status == 200 {
            answers.ok_ms.push(sent.elapsed().as_secs_f64() * 1e3);
        }
        let retry_after = match &answer {
            Ok(r) if r.status == 503 => r.header("retry-after").and_then(|v| v.parse::<u64>().ok()),
            _ => None,
        };
        let paced = sent + clients.pace.unwrap_or_default();
        let wait_until = paced.max(Instant::now() + Duration::from_secs(retry_after.unwrap_or(0)));
        while Instant::now() < wait_until && !stop.load(Ordering::Relaxed) {
            thread::sleep(Duration::from_millis(10));
        }
    }
    answers
}

/// `VmRSS` and `VmHWM` of a process, in KiB.
fn memory_kib(pid: u32) -> Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> Result<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .with_context(|| format!("no {name} in /proc/{pid}/status"))
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

/// User plus system CPU time of a process so far, from `/proc/PID/stat`.
fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_cpu_ticks(&stat)
        .map(|ticks| ticks as f64 / CLOCK_TICKS_PER_SECOND)
        .with_context(|| format!("cannot read /proc/{pid}/stat: {stat:?}"))
}

/// `USER_HZ`: 100 on every Linux this runs on (the kernel's ABI constant).
const CLOCK_TICKS_PER_SECOND: f64 = 100.0;

/// Fields 14 and 15 (utime, stime) of a stat line; the command name in
/// parentheses may hold spaces, so fields are counted after its `)`.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After the name: state is field 3, so utime (14) is index 11.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cpu_ticks_past_a_name_with_spaces() {
        let stat = "1234 (my (odd) name) S 1 1 1 0 -1 4194304 100 0 0 0 250 50 0 0 20 0 4 0";
        assert_eq!(parse_cpu_ticks(stat), Some(300));
        assert_eq!(parse_cpu_ticks("garbage"), None);
    }

    #[test]
    fn quantiles_and_shares() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&values, 0.5), 51.0);
        assert_eq!(quantile(&values, 0.99), 99.0);
        assert_eq!(quantile(&values, 1.0), 100.0);
        assert!(quantile(&[], 0.5).is_nan());
        let mut answers = Answers::default();
        answers.add(Answers { by_status: BTreeMap::from([(200, 3), (503, 1)]), ok_ms: vec![] });
        assert_eq!((answers.total(), answers.of(200), answers.of(404)), (4, 3, 0));
        assert_eq!(answers.ok_share(), 0.75);
    }
}

/// Runs the flood against the release service with the stub model
/// (`cargo build --release -p service` first):
/// `cargo test -p xtask overload_figures -- --ignored --nocapture`.
#[cfg(test)]
mod live {
    use std::process::Command;

    use super::*;
    use crate::effects::local_server::free_port;
    use crate::effects::paths;

    #[test]
    // A measurement, not a check: it floods a release service for seconds,
    // which a shared CI machine should not pay for on every run. Run it with
    // `cargo test -p xtask overload_figures -- --ignored --nocapture`;
    // `cargo xtask bench serve` prints the same figures.
    #[ignore = "floods a release build of the service for seconds"]
    fn overload_figures() {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("stub.json");
        crate::stages::smoke::write_stub(&model).unwrap();
        let port = free_port().unwrap();
        let mut command = Command::new(paths::cargo_target().join("release").join("service"));
        command.args(["--host", "127.0.0.1", "--port", &port.to_string(), "--model"]).arg(&model);
        let mut service = LocalServer::spawn("overload-test", command, port).unwrap();
        service.wait_for("/ready", 200, Duration::from_secs(30)).unwrap();
        let clients = |count, body: String, pace| Clients {
            count,
            body: Arc::from(body.into_bytes()),
            timeout: Duration::from_secs(30),
            pace,
        };
        let batch = crate::api::predict_body(&vec![model::DOCUMENTED_TRIP; 10_000]);
        let large = clients(48, batch, None);
        let small = clients(2, crate::api::documented_request(), Some(Duration::from_millis(10)));
        let o = measure(&service, &large, &small, Duration::from_secs(5)).unwrap();
        println!(
            "large {:?}, 1-row {:?}, peak RSS {} KiB",
            o.large.by_status, o.small.by_status, o.peak_rss_kib
        );
        assert!(o.large.of(200) > 0 && o.small.ok_share() >= 0.95, "{o:?}");
    }
}
