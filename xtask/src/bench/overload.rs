//! The overload figures of `bench serve`: the service alone, flooded with
//! more maximum-size predict requests at once than it takes
//! (`--max-concurrent-predictions`), while a prober times `GET /`. The
//! clients are well-behaved: after a 503 each waits as `Retry-After` says
//! (a client that retries at once only makes the service read and discard
//! more bodies it refused).
//!
//! Reported: how many predict requests were shed (503 with `Retry-After`)
//! and how many priced, the latency of liveness under that load (p50, p99,
//! max), the peak RSS of the process (`VmHWM`, its lifetime's peak, the
//! flood included), its RSS once the flood is over, and the CPU it burned
//! after every client had gone (work that outlives its request).

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};

use crate::effects::http::Request;
use crate::effects::local_server::LocalServer;

/// What one flood measured.
#[derive(Debug, Clone)]
pub struct Overload {
    pub clients: usize,
    pub seconds: f64,
    pub body_bytes: usize,
    pub priced: u64,
    pub shed: u64,
    /// Other statuses and connection errors.
    pub other: u64,
    /// `GET /` latencies during the flood, sorted, in milliseconds.
    pub live_ms: Vec<f64>,
    pub peak_rss_kib: u64,
    pub rss_after_kib: u64,
    /// CPU seconds the process used in the 2 s after the last client left.
    pub cpu_after_s: f64,
}

impl Overload {
    pub fn shed_rate(&self) -> f64 {
        let sent = self.priced + self.shed + self.other;
        if sent == 0 { 0.0 } else { self.shed as f64 / sent as f64 }
    }

    /// The `q` quantile (0..=1) of liveness latency, in milliseconds.
    pub fn live_quantile(&self, q: f64) -> f64 {
        if self.live_ms.is_empty() {
            return f64::NAN;
        }
        let i = ((self.live_ms.len() - 1) as f64 * q).round() as usize;
        self.live_ms[i.min(self.live_ms.len() - 1)]
    }

    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "\noverload: {} clients posting {:.1} MB batches for {:.0} s (waiting as Retry-After \
             says when shed), `GET /` probed meanwhile",
            self.clients,
            self.body_bytes as f64 / 1e6,
            self.seconds
        );
        let _ = writeln!(out, "\n| figure | measured |\n|---|---:|");
        let sent = self.priced + self.shed + self.other;
        let rows = [
            ("predict requests sent", sent.to_string()),
            ("priced (200)", self.priced.to_string()),
            ("priced per second", format!("{:.0}", self.priced as f64 / self.seconds)),
            ("shed (503, Retry-After)", self.shed.to_string()),
            ("other answers or errors", self.other.to_string()),
            ("shed rate", format!("{:.1} %", self.shed_rate() * 100.0)),
            ("`GET /` probes", self.live_ms.len().to_string()),
            ("`GET /` p50", format!("{:.2} ms", self.live_quantile(0.5))),
            ("`GET /` p99", format!("{:.2} ms", self.live_quantile(0.99))),
            ("`GET /` max", format!("{:.2} ms", self.live_quantile(1.0))),
            ("peak RSS (VmHWM)", format!("{:.1} MiB", self.peak_rss_kib as f64 / 1024.0)),
            ("RSS 2 s after the flood", format!("{:.1} MiB", self.rss_after_kib as f64 / 1024.0)),
            ("CPU in the 2 s after the flood", format!("{:.2} s", self.cpu_after_s)),
        ];
        for (what, value) in rows {
            let _ = writeln!(out, "| {what} | {value} |");
        }
        out
    }
}

/// Floods `service` with `clients` threads posting `body` to the predict
/// route for `duration`, while one more thread probes `GET /`.
pub fn measure(
    service: &LocalServer,
    body: &str,
    clients: usize,
    duration: Duration,
) -> Result<Overload> {
    let authority = service.authority();
    let body: Arc<[u8]> = Arc::from(body.as_bytes());
    let stop = Arc::new(AtomicBool::new(false));
    let flood: Vec<_> = (0..clients)
        .map(|_| {
            let (authority, body, stop) = (authority.clone(), body.clone(), stop.clone());
            thread::spawn(move || {
                let mut counts = [0u64; 3];
                let request =
                    Request::post_json("/api/predict/", &body).timeout(Duration::from_secs(30));
                while !stop.load(Ordering::Relaxed) {
                    let answer = request.send(&authority);
                    let retry_after = match &answer {
                        Ok(r) if r.status == 503 => {
                            r.header("retry-after").and_then(|v| v.parse::<u64>().ok())
                        }
                        _ => None,
                    };
                    let slot = match (&answer, retry_after) {
                        (Ok(r), _) if r.status == 200 => 0,
                        (_, Some(_)) => 1,
                        _ => 2,
                    };
                    counts[slot] += 1;
                    let wait_until = Instant::now() + Duration::from_secs(retry_after.unwrap_or(0));
                    while Instant::now() < wait_until && !stop.load(Ordering::Relaxed) {
                        thread::sleep(Duration::from_millis(10));
                    }
                }
                counts
            })
        })
        .collect();
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
    let mut totals = [0u64; 3];
    for client in flood {
        let counts = client.join().map_err(|_| anyhow!("a flood client panicked"))?;
        for (total, n) in totals.iter_mut().zip(counts) {
            *total += n;
        }
    }
    let mut live_ms = prober.join().map_err(|_| anyhow!("the prober panicked"))?;
    live_ms.sort_by(f64::total_cmp);
    let pid = service.pid();
    let cpu_before = cpu_seconds(pid)?;
    thread::sleep(Duration::from_secs(2));
    let cpu_after_s = cpu_seconds(pid)? - cpu_before;
    let (rss_after_kib, peak_rss_kib) = memory_kib(pid)?;
    Ok(Overload {
        clients,
        seconds: duration.as_secs_f64(),
        body_bytes: body.len(),
        priced: totals[0],
        shed: totals[1],
        other: totals[2],
        live_ms,
        peak_rss_kib,
        rss_after_kib,
        cpu_after_s,
    })
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
    fn quantiles_and_shed_rate() {
        let o = Overload {
            clients: 1,
            seconds: 1.0,
            body_bytes: 1,
            priced: 3,
            shed: 1,
            other: 0,
            live_ms: (1..=100).map(f64::from).collect(),
            peak_rss_kib: 0,
            rss_after_kib: 0,
            cpu_after_s: 0.0,
        };
        assert_eq!(o.shed_rate(), 0.25);
        assert_eq!(o.live_quantile(0.5), 51.0);
        assert_eq!(o.live_quantile(0.99), 99.0);
        assert_eq!(o.live_quantile(1.0), 100.0);
        assert!(o.table().contains("| shed rate | 25.0 % |"), "{}", o.table());
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
    // `cargo xtask bench serve` prints the same table.
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
        let body = crate::api::predict_body(&vec![model::DOCUMENTED_TRIP; 10_000]);
        let o = measure(&service, &body, 64, Duration::from_secs(5)).unwrap();
        print!("{}", o.table());
        assert!(o.priced > 0 && o.other == 0, "{o:?}");
    }
}
