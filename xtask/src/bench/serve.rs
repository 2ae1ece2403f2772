//! `cargo xtask bench serve`: this service against the original stack
//! (FastAPI + uvicorn, one worker, a scikit-learn LinearRegression with the
//! same coefficients and features, each request turned into a pandas
//! DataFrame as the original service did), against a tuned Python port of
//! it (the same app with numpy arrays instead of a DataFrame: Python's best
//! case), against a hello-world axum server (the ceiling) and against a
//! read-the-body ceiling (the hello-world server reading the whole body as
//! the service does and answering the service's own answer to it, fixed in
//! advance: what the bytes alone cost), one after the other in the same
//! run, with wrk on loopback. Prints requests/s, p50 and
//! p99 per scenario with the ratios, then idle RSS and the time from spawn
//! to ready, then the service's admission figures (`admission`: shedding
//! at 128 connections of 100-row batches, and 1-row requests during a
//! flood of 10,000-row batches, with `GET /` latency and peak RSS; by cost
//! against by count as it was), then the instructions of each stage of a
//! predict request (`profile`). The Python apps are
//! `xtask/python/original_app.py`; both must predict the model crate's
//! fares before they are measured.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use model::ModelArtifact;

use super::{admission, profile, python};
use crate::api;
use crate::effects::http::Request;
use crate::effects::local_server::{LocalServer, free_port};
use crate::effects::process::{self, cmd, output};
use crate::effects::{deps, paths, venv};
use crate::stages::{artifacts, smoke, train};

#[derive(clap::Args, Debug)]
pub struct BenchServeArgs {
    /// Seconds of load per scenario.
    #[arg(long, default_value_t = 5)]
    pub duration_secs: u32,
    /// wrk threads.
    #[arg(long, default_value_t = 2)]
    pub threads: u32,
    /// Connection counts to measure each scenario at.
    #[arg(long, value_delimiter = ',', default_value = "32,128")]
    pub connections: Vec<u32>,
    /// Model artifact [default: artifacts/model.json if present, else a stub].
    #[arg(long)]
    pub model: Option<PathBuf>,
}

/// The longest flood of the admission figures.
const MAX_FLOOD: Duration = Duration::from_secs(20);

/// What wrk measured for one server in one scenario.
#[derive(Debug, Clone, Copy)]
pub(super) struct Measured {
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Non-2xx answers plus socket errors.
    pub errors: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Server {
    Service,
    Original,
    NumpyPort,
    Hello,
    Ceiling,
}

impl Server {
    /// The service first: the ceiling is given its answers.
    const ALL: [Server; 5] =
        [Server::Service, Server::Original, Server::NumpyPort, Server::Hello, Server::Ceiling];

    fn name(self) -> &'static str {
        match self {
            Server::Service => "service (axum)",
            Server::Original => "original (FastAPI + pandas)",
            Server::NumpyPort => "FastAPI + numpy port",
            Server::Hello => "hello-world axum",
            Server::Ceiling => "read-the-body ceiling",
        }
    }

    /// How the Python app builds its feature matrix, for the two that are.
    fn frame(self) -> Option<&'static str> {
        match self {
            Server::Original => Some("pandas"),
            Server::NumpyPort => Some("numpy"),
            Server::Service | Server::Hello | Server::Ceiling => None,
        }
    }
}

pub(super) struct Scenario {
    name: &'static str,
    path: &'static str,
    /// POST body; GET when None.
    pub body: Option<String>,
}

struct ServerRun {
    server: Server,
    rss_kib: u64,
    ready: Duration,
    results: Vec<Measured>,
}

pub fn run(args: &BenchServeArgs) -> Result<()> {
    ensure!(args.duration_secs > 0 && args.threads > 0, "duration and threads must be positive");
    ensure!(!args.connections.is_empty(), "at least one connection count is needed");
    ensure!(args.connections.iter().all(|c| *c >= args.threads), "connections must be ≥ threads");
    deps::ensure(deps::BENCH_SERVE)?;
    let work = paths::target().join("bench-serve");
    std::fs::create_dir_all(&work)?;
    let (model_path, artifact) = model(args, &work)?;
    println!("model: {} ({})", artifact.model_version, model_path.display());

    let mut build = cmd(
        "cargo",
        [
            "build",
            "--quiet",
            "--release",
            "-p",
            "service",
            "--bin",
            "service",
            "--example",
            "hello",
            "--example",
            "body_ceiling",
            "--example",
            "batch_profile",
        ],
    );
    build.current_dir(paths::root());
    process::run(build)?;
    let python =
        venv::python("bench-serve", &["fastapi", "uvicorn", "scikit-learn", "numpy", "pandas"])?;
    python::install(&work)?;

    let scenarios = scenarios(&work)?;
    // Start every server first (one at a time, so start-up times do not
    // compete), then take turns per scenario: a load spike elsewhere on the
    // machine then hits all three alike instead of one server's block.
    let mut started: Vec<(LocalServer, ServerRun)> = Vec::new();
    let mut replies = Vec::new();
    for server in Server::ALL {
        if server == Server::Ceiling {
            let service = started.first().map(|(p, _)| p).context("the service is not running")?;
            replies = ceiling_replies(service, &scenarios, &work)?;
        }
        let mut process = start(server, &python, &work, &model_path, &replies)?;
        let ready = process.wait_for("/ready", 200, Duration::from_secs(60))?;
        std::thread::sleep(Duration::from_millis(300));
        let rss_kib = process.rss_kib()?;
        println!(
            "{}: ready {:.1} ms after spawn, idle RSS {:.1} MiB",
            server.name(),
            ready.as_secs_f64() * 1e3,
            rss_kib as f64 / 1024.0
        );
        if server.frame().is_some() {
            check_same_predictions(server, &process, &artifact, &scenarios[2])?;
        }
        started.push((process, ServerRun { server, rss_kib, ready, results: Vec::new() }));
    }
    for (process, _) in &started {
        // Warm up: connection pools, allocator arenas, caches.
        wrk(process, &scenarios[1], args.threads, args.connections[0], 1, &work)?;
    }
    for scenario in &scenarios {
        for &connections in &args.connections {
            for (process, run) in &mut started {
                let m =
                    wrk(process, scenario, args.threads, connections, args.duration_secs, &work)?;
                println!(
                    "  {:<16} c={connections:<4} {:<20} {:>8.0} req/s  p50 {:>8}  p99 {:>8}{}",
                    scenario.name,
                    run.server.name(),
                    m.rps,
                    ms(m.p50_ms),
                    ms(m.p99_ms),
                    if m.errors > 0 { format!("  ({} errors)", m.errors) } else { String::new() }
                );
                run.results.push(m);
            }
        }
    }
    let runs: Vec<ServerRun> = started.into_iter().map(|(_, run)| run).collect();
    // The admission figures run fresh processes of the service alone.
    let large_body = api::predict_body(&synthetic_trips(&work, 10_000)?);
    let setup = admission::Setup {
        model: &model_path,
        work: &work,
        threads: args.threads,
        wrk_seconds: args.duration_secs,
        flood: Duration::from_secs(2 * u64::from(args.duration_secs)).min(MAX_FLOOD),
        hundred: &scenarios[2],
        large_body: &large_body,
    };
    let figures = admission::measure(&setup)?;
    let bodies: Vec<(&str, &str)> =
        scenarios.iter().filter_map(|s| Some((s.name, s.body.as_deref()?))).collect();
    let profile = profile::table(&model_path, &bodies, &work)?;
    print!("{}", table(args, &scenarios, &runs));
    print!("{}", figures.table());
    print!("{profile}");
    Ok(())
}

/// The artifact to serve: the trained one when present, else the stub.
fn model(args: &BenchServeArgs, work: &Path) -> Result<(PathBuf, ModelArtifact)> {
    let trained = artifacts::model_path();
    let path = match &args.model {
        Some(p) => p.clone(),
        None if trained.is_file() => trained,
        None => {
            let stub = work.join("stub-model.json");
            smoke::write_stub(&stub)?;
            stub
        }
    };
    let artifact = artifacts::load_model(&path)?;
    Ok((path, artifact))
}

/// The scenarios; the predict bodies hold trips of a `trainer synth`
/// sample (the project's one trip generator), not rows made up here.
fn scenarios(work: &Path) -> Result<Vec<Scenario>> {
    let rows = synthetic_trips(work, 100)?;
    let batch = |n: usize| api::predict_body(&rows[..n]);
    Ok(vec![
        Scenario { name: "GET /", path: "/", body: None },
        Scenario { name: "predict 1 row", path: "/api/predict/", body: Some(batch(1)) },
        Scenario { name: "predict 100 rows", path: "/api/predict/", body: Some(batch(100)) },
    ])
}

/// The first `n` valid trips of a seeded `trainer synth` sample, as values
/// in [`model::Field::ALL`] order (the sample's dirty rows are skipped).
fn synthetic_trips(work: &Path, n: usize) -> Result<Vec<[f64; 5]>> {
    let trainer = train::build_trainer()?;
    // Twice as many rows as needed: a few percent are dirty on purpose.
    let rows = 2 * n as u64;
    let csv = work.join(format!("synth-{rows}.csv"));
    train::ensure_synthetic(&trainer, &csv, rows, 7)?;
    let text =
        std::fs::read_to_string(&csv).with_context(|| format!("cannot read {}", csv.display()))?;
    let trips = valid_trips(&text)?;
    ensure!(trips.len() >= n, "{} holds {} valid trips, {n} needed", csv.display(), trips.len());
    Ok(trips[..n].to_vec())
}

/// The valid trips of a CSV in the reference layout (columns found by
/// header name).
fn valid_trips(csv: &str) -> Result<Vec<[f64; 5]>> {
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().context("empty CSV")?.split(',').collect();
    let columns = model::Field::ALL.map(|f| header.iter().position(|h| *h == f.name()));
    let columns: Vec<usize> =
        columns.into_iter().collect::<Option<_>>().context("a trip column is missing")?;
    let trips = lines.filter_map(|line| {
        let cells: Vec<&str> = line.split(',').collect();
        let mut values = [0.0; 5];
        for (value, &column) in values.iter_mut().zip(&columns) {
            *value = cells.get(column)?.trim().parse().ok()?;
        }
        let nonzero = values[..4].iter().all(|v| *v != 0.0);
        (nonzero && model::Trip::from_values(values).is_ok()).then_some(values)
    });
    Ok(trips.collect())
}

/// The release service on a free loopback port, with `extra` flags.
pub(super) fn start_service(name: &str, model: &Path, extra: &[String]) -> Result<LocalServer> {
    let port = free_port()?;
    let mut c = Command::new(paths::cargo_target().join("release").join("service"));
    c.args(["--host", "127.0.0.1", "--port", &port.to_string(), "--model"]).arg(model).args(extra);
    LocalServer::spawn(name, c, port)
}

/// The service's answer to each predict scenario's body, written to a
/// file, as the ceiling's `LENGTH=FILE` arguments.
fn ceiling_replies(
    service: &LocalServer,
    scenarios: &[Scenario],
    work: &Path,
) -> Result<Vec<String>> {
    let mut replies = Vec::new();
    for scenario in scenarios {
        let Some(body) = &scenario.body else { continue };
        let answer =
            Request::post_json(scenario.path, body.as_bytes()).send(&service.authority())?;
        ensure!(answer.status == 200, "the service answered {}: {}", answer.status, answer.text());
        let file = work.join(format!("reply-{}.json", body.len()));
        std::fs::write(&file, &answer.body)?;
        replies.push(format!("{}={}", body.len(), file.display()));
    }
    Ok(replies)
}

fn start(
    server: Server,
    python: &Path,
    work: &Path,
    model: &Path,
    replies: &[String],
) -> Result<LocalServer> {
    let port = free_port()?;
    let release = paths::cargo_target().join("release");
    let (name, command) = match server {
        Server::Service => return start_service("bench-service", model, &[]),
        Server::Hello => {
            let mut c = Command::new(release.join("examples").join("hello"));
            c.arg(port.to_string());
            ("bench-hello", c)
        }
        Server::Ceiling => {
            let mut c = Command::new(release.join("examples").join("body_ceiling"));
            c.arg(port.to_string()).args(replies);
            ("bench-body-ceiling", c)
        }
        Server::Original | Server::NumpyPort => {
            let mut c = Command::new(python);
            let app = format!("{}:app", python::ORIGINAL_APP_MODULE);
            c.args(["-m", "uvicorn", &app, "--host", "127.0.0.1"])
                // uvicorn's defaults, access log included, as the original ran.
                .args(["--port", &port.to_string()])
                .current_dir(work)
                .env("MODEL_PATH", model)
                .env("FRAME", server.frame().unwrap_or("pandas"))
                .env(python::CONSTANTS_ENV, python::constants());
            let name =
                if server == Server::Original { "bench-original" } else { "bench-numpy-port" };
            (name, c)
        }
    };
    LocalServer::spawn(name, command, port)
}

/// The original stack must compute the same fares, or the comparison is
/// meaningless.
fn check_same_predictions(
    server: Server,
    original: &LocalServer,
    artifact: &ModelArtifact,
    scenario: &Scenario,
) -> Result<()> {
    let body = scenario.body.as_deref().unwrap_or_default();
    let answer =
        Request::post_json("/api/predict/", body.as_bytes()).send(&original.authority())?;
    let name = server.name();
    ensure!(answer.status == 200, "{name} answered {}: {}", answer.status, answer.text());
    let theirs: Vec<f64> = serde_json::from_value(answer.json()?["predictions"].clone())?;
    let request: serde_json::Value = serde_json::from_str(body)?;
    let rows = request["data"].as_array().context("bench body has no data")?;
    ensure!(theirs.len() == rows.len(), "{name} returned {} predictions", theirs.len());
    for (row, their) in rows.iter().zip(&theirs) {
        let values = model::Field::ALL.map(|f| row[f.name()].as_f64().unwrap_or(f64::NAN));
        let trip = model::Trip::from_values(values)
            .map_err(|v| anyhow::anyhow!("bench row is invalid: {v:?}"))?;
        let ours = artifact.predict(&trip);
        ensure!(
            (ours - their).abs() <= 1e-9 * ours.abs().max(1.0),
            "{name} predicts {their}, the model crate {ours} for {row}"
        );
    }
    println!("  {name} predicts the same fares as the model crate (100 rows, ≤1e-9)");
    Ok(())
}

pub(super) fn wrk(
    server: &LocalServer,
    scenario: &Scenario,
    threads: u32,
    connections: u32,
    seconds: u32,
    work: &Path,
) -> Result<Measured> {
    let mut c = cmd(
        "wrk",
        [
            format!("-t{threads}"),
            format!("-c{connections}"),
            format!("-d{seconds}s"),
            "--latency".to_owned(),
            "--timeout".to_owned(),
            "10s".to_owned(),
        ],
    );
    if let Some(body) = &scenario.body {
        let script = work.join(format!("post-{}.lua", body.len()));
        std::fs::write(
            &script,
            format!(
                "wrk.method = \"POST\"\nwrk.headers[\"Content-Type\"] = \"application/json\"\nwrk.body = [==[{body}]==]\n"
            ),
        )?;
        c.arg("-s").arg(&script);
    }
    c.arg(format!("http://{}{}", server.authority(), scenario.path));
    let text = output(c)?;
    parse_wrk(&text).with_context(|| format!("cannot read wrk's output:\n{text}"))
}

fn parse_wrk(text: &str) -> Result<Measured> {
    let mut rps = None;
    let (mut p50, mut p99) = (None, None);
    let mut errors = 0;
    for line in text.lines() {
        let line = line.trim();
        if let Some(v) = line.strip_prefix("Requests/sec:") {
            rps = v.trim().parse().ok();
        } else if let Some(v) = line.strip_prefix("50%") {
            p50 = Some(duration_ms(v.trim())?);
        } else if let Some(v) = line.strip_prefix("99%") {
            p99 = Some(duration_ms(v.trim())?);
        } else if let Some(v) = line.strip_prefix("Non-2xx or 3xx responses:") {
            errors += v.trim().parse::<u64>().unwrap_or(0);
        } else if let Some(v) = line.strip_prefix("Socket errors:") {
            // "connect 0, read 0, write 0, timeout 0"
            errors += v
                .split(',')
                .filter_map(|part| part.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum::<u64>();
        }
    }
    match (rps, p50, p99) {
        (Some(rps), Some(p50_ms), Some(p99_ms)) => Ok(Measured { rps, p50_ms, p99_ms, errors }),
        _ => bail!("no Requests/sec or latency distribution"),
    }
}

/// wrk's durations: `812.00us`, `1.23ms`, `2.01s`, `1.50m`.
fn duration_ms(text: &str) -> Result<f64> {
    let split = text.find(|c: char| c.is_ascii_alphabetic()).context("no unit")?;
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().with_context(|| format!("bad duration {text:?}"))?;
    let factor = match unit {
        "us" => 1e-3,
        "ms" => 1.0,
        "s" => 1e3,
        "m" => 60e3,
        _ => bail!("unknown unit in {text:?}"),
    };
    Ok(value * factor)
}

fn ms(v: f64) -> String {
    if v < 1.0 { format!("{:.0}µs", v * 1e3) } else { format!("{v:.2}ms") }
}

fn table(args: &BenchServeArgs, scenarios: &[Scenario], runs: &[ServerRun]) -> String {
    let find = |s: Server| runs.iter().find(|r| r.server == s);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nbench serve: wrk -t{} -d{}s --latency on 127.0.0.1, {} cores shared by wrk and the server",
        args.threads,
        args.duration_secs,
        std::thread::available_parallelism().map(usize::from).unwrap_or(0)
    );
    let _ = writeln!(
        out,
        "\n| scenario | conns | server | req/s | p50 | p99 | vs original | vs numpy port | vs hello-world | vs read-the-body |"
    );
    let _ = writeln!(out, "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|");
    let mut i = 0;
    for scenario in scenarios {
        for &connections in &args.connections {
            let base = |s: Server| find(s).map(|r| r.results[i].rps);
            for run in runs {
                let m = run.results[i];
                let ratio = |b: Option<f64>| match b {
                    Some(b) if b > 0.0 => format!("{:.2}×", m.rps / b),
                    _ => "–".to_owned(),
                };
                let errors =
                    if m.errors > 0 { format!(" ({} errors)", m.errors) } else { String::new() };
                let _ = writeln!(
                    out,
                    "| {} | {connections} | {} | {:.0}{errors} | {} | {} | {} | {} | {} | {} |",
                    scenario.name,
                    run.server.name(),
                    m.rps,
                    ms(m.p50_ms),
                    ms(m.p99_ms),
                    ratio(base(Server::Original)),
                    ratio(base(Server::NumpyPort)),
                    ratio(base(Server::Hello)),
                    ratio(base(Server::Ceiling)),
                );
            }
            i += 1;
        }
    }
    let _ = writeln!(out, "\n| server | idle RSS | spawn → /ready 200 |");
    let _ = writeln!(out, "|---|---:|---:|");
    for run in runs {
        let _ = writeln!(
            out,
            "| {} | {:.1} MiB | {:.1} ms |",
            run.server.name(),
            run.rss_kib as f64 / 1024.0,
            run.ready.as_secs_f64() * 1e3
        );
    }
    out.push_str(&targets(args, runs));
    out
}

/// The targets, checked against this run: the 1-row and 100-row predict
/// at the first connection count, shedding at the last.
fn targets(args: &BenchServeArgs, runs: &[ServerRun]) -> String {
    let find = |s: Server| runs.iter().find(|r| r.server == s);
    let (Some(service), Some(original), Some(port), Some(hello), Some(ceiling)) = (
        find(Server::Service),
        find(Server::Original),
        find(Server::NumpyPort),
        find(Server::Hello),
        find(Server::Ceiling),
    ) else {
        return String::new();
    };
    // Results are ordered scenario-major: GET / at each count, then 1 row,
    // then 100 rows.
    let counts = args.connections.len();
    let one = |r: &ServerRun| r.results[counts];
    let hundred = |r: &ServerRun| r.results[2 * counts];
    let verdict = |ok: Option<bool>| match ok {
        Some(true) => "met",
        Some(false) => "missed",
        None => "",
    };
    let percent = |x: f64| format!("{:.0} %", x * 100.0);
    let vs_original = one(service).rps / one(original).rps;
    let vs_hello = one(service).rps / one(hello).rps;
    let vs_port = one(service).rps / one(port).rps;
    let batch_vs_one = hundred(service).rps / one(service).rps;
    let batch_vs_ceiling = hundred(service).rps / hundred(ceiling).rps;
    let p99 = one(service).p99_ms;
    let rss = service.rss_kib as f64 / 1024.0;
    let ready = service.ready.as_secs_f64() * 1e3;
    let c = args.connections[0];
    let last = counts - 1;
    let most = args.connections[last];
    let shed: u64 =
        [counts + last, 2 * counts + last].iter().map(|&i| service.results[i].errors).sum();
    let mut out = String::new();
    let _ = writeln!(out, "\n| target (predict, {c} connections unless said) | measured | |");
    let _ = writeln!(out, "|---|---:|---|");
    let rows = [
        (
            "1 row: req/s ≥ 100× the original",
            format!("{vs_original:.1}×"),
            Some(vs_original >= 100.0),
        ),
        ("(no target) 1 row: req/s vs the numpy port", format!("{vs_port:.1}×"), None),
        ("1 row: req/s ≥ 90 % of hello-world", percent(vs_hello), Some(vs_hello >= 0.9)),
        ("1 row: p99 ≤ 2 ms", ms(p99), Some(p99 <= 2.0)),
        ("100 rows: req/s ≥ 50 % of 1 row's", percent(batch_vs_one), Some(batch_vs_one >= 0.5)),
        (
            "100 rows: req/s ≥ 60 % of the read-the-body ceiling",
            percent(batch_vs_ceiling),
            Some(batch_vs_ceiling >= 0.6),
        ),
        (
            if most == 128 {
                "none shed at 128 connections"
            } else {
                "none shed at the most connections"
            },
            format!("{shed} errors at {most}"),
            Some(shed == 0),
        ),
        ("idle RSS ≤ 15 MB", format!("{rss:.1} MiB"), Some(rss * 1.048_576 <= 15.0)),
        ("ready ≤ 100 ms after start", format!("{ready:.1} ms"), Some(ready <= 100.0)),
    ];
    for (what, value, ok) in rows {
        let _ = writeln!(out, "| {what} | {value} | {} |", verdict(ok));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const WRK: &str = "Running 5s test @ http://127.0.0.1:1/
  2 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   412.35us  300.12us   9.87ms   91.00%
  Latency Distribution
     50%  350.00us
     75%  500.00us
     90%  700.00us
     99%    1.52ms
  123456 requests in 5.00s, 20.00MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 4
Requests/sec:  24691.20
Transfer/sec:      4.00MB
";

    #[test]
    fn reads_wrk_output() {
        let m = parse_wrk(WRK).unwrap();
        assert_eq!(m.rps, 24691.2);
        assert!((m.p50_ms - 0.35).abs() < 1e-12);
        assert_eq!(m.p99_ms, 1.52);
        assert_eq!(m.errors, 7);
        assert!(parse_wrk("garbage").is_err());
    }

    #[test]
    fn keeps_only_valid_trips_and_finds_columns_by_name() {
        let csv = ",key,fare_amount,pickup_datetime,pickup_longitude,pickup_latitude,\
                   dropoff_longitude,dropoff_latitude,passenger_count\n\
                   0,k,7.5,t,-73.99,40.75,-73.98,40.76,2\n\
                   1,k,7.5,t,0,0,-73.98,40.76,1\n\
                   2,k,7.5,t,-73.99,95.0,-73.98,40.76,1\n\
                   3,broken line\n";
        assert_eq!(valid_trips(csv).unwrap(), vec![[40.75, -73.99, 40.76, -73.98, 2.0]]);
        assert!(valid_trips("a,b\n1,2\n").is_err());
    }

    #[test]
    fn reads_wrk_durations() {
        assert_eq!(duration_ms("2.00s").unwrap(), 2000.0);
        assert_eq!(duration_ms("1.50m").unwrap(), 90_000.0);
        assert!(duration_ms("3.0xs").is_err());
    }
}
