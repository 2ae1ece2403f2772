//! Shared test fixtures: a realistic model artifact, request bodies, and
//! (for the black-box tests) the real binary on a real socket with a
//! minimal HTTP/1.1 client.
//!
//! The client is hand-written on purpose, and the only one in these tests:
//! the hostile-load tests must send what no well-behaved client library
//! will (a head cut short, a false `Content-Length`, garbage request lines,
//! a connection kept open and silent) and see exactly what comes back.

#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use model::{GoldenTrip, Lineage, ModelArtifact};
use serde_json::{Value, json};
use service::{AppState, LoadedModel, ModelSlot};
use std::sync::Arc;
use tower::ServiceExt;

/// The whole answer of the router, driven in process (no socket).
pub struct Answer {
    pub status: StatusCode,
    pub content_type: String,
    pub text: String,
    /// The body as JSON, or null when it is not JSON.
    pub body: Value,
}

pub async fn send(state: &Arc<AppState>, request: Request<Body>) -> Answer {
    let response = service::router(state.clone()).oneshot(request).await.unwrap();
    let status = response.status();
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Answer { status, content_type, text, body }
}

/// An artifact with a distinct, non-trivial coefficient per feature, so a
/// feature computed or ordered wrongly changes the prediction.
pub fn artifact() -> ModelArtifact {
    let mut lineage = Lineage::hand_made("synthetic.csv");
    lineage.rows_dropped.insert("zero_coordinates".into(), 10);
    lineage.git_commit = Some("0123abc".into());
    ModelArtifact::new(
        "test-model-7",
        [1.9, 0.7, 0.35, -0.05, 0.08, 0.02, -0.03, 0.01, 0.015, 0.11],
        4.25,
        lineage,
    )
}

/// The slot of a loaded [`artifact`].
pub fn loaded_slot() -> ModelSlot {
    LoadedModel::from_artifact(&artifact()).unwrap().into()
}

/// [`artifact`] with golden trips (rows of [`batch`]) and the fares it
/// predicts for them, full-precision numbers that must survive the trip
/// through JSON.
pub fn artifact_with_golden() -> ModelArtifact {
    let mut artifact = artifact();
    artifact.golden = (0..12)
        .map(|i| {
            let row = nyc_row(i);
            let values = model::Field::ALL.map(|f| row[f.name()].as_f64().unwrap());
            let trip = model::Trip::from_values(values).unwrap();
            GoldenTrip { trip, fare: artifact.predict(&trip) }
        })
        .collect();
    artifact
}

/// The request documented in the API contract.
pub fn documented_request() -> Value {
    json!({"data": [{"pickup_latitude": 70.15, "pickup_longitude": -40.22,
        "dropoff_latitude": 70.83, "dropoff_longitude": -1.0, "passenger_count": 2}]})
}

/// A valid row inside New York, varied by `i`.
pub fn nyc_row(i: usize) -> Value {
    let f = i as f64;
    json!({
        "pickup_latitude": 40.70 + (f * 0.0037) % 0.1,
        "pickup_longitude": -74.00 + (f * 0.0051) % 0.1,
        "dropoff_latitude": 40.75 - (f * 0.0029) % 0.1,
        "dropoff_longitude": -73.95 - (f * 0.0043) % 0.1,
        "passenger_count": i % 7,
    })
}

pub fn batch(rows: usize) -> Value {
    json!({ "data": (0..rows).map(nyc_row).collect::<Vec<_>>() })
}

// ---- the real binary ----------------------------------------------------

/// A loopback port nothing listens on (bound, then released).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    listener.local_addr().unwrap().port()
}

/// A running `service` process, killed when dropped.
pub struct Service {
    pub child: Child,
    pub port: u16,
}

impl Service {
    /// Starts the binary with `args` and waits until `/` answers.
    pub fn start(args: &[&str]) -> Service {
        Self::start_with_env(args, &[])
    }

    /// Starts the binary with `--port 0` and learns the port from its
    /// "listening" log line, so parallel tests never race for a port.
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Service {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_service"));
        cmd.args(["--host", "127.0.0.1", "--port", "0", "--log-format", "json"])
            .args(args)
            .env_remove("MODEL_PATH")
            .env_remove("COLOR")
            .env_remove("VERSION")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (port_tx, port_rx) = std::sync::mpsc::channel();
        // Reads the log until the bound address shows up, then keeps
        // draining it so the service never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let Ok(event) = serde_json::from_str::<Value>(&line) else { continue };
                if event["message"] == "listening" {
                    let addr: SocketAddr = event["addr"].as_str().unwrap().parse().unwrap();
                    let _ = port_tx.send(addr.port());
                }
            }
        });
        let port = match port_rx.recv_timeout(Duration::from_secs(10)) {
            Ok(port) => port,
            Err(_) => {
                let _ = child.kill();
                panic!("service logged no listening address within 10 s");
            }
        };
        let mut service = Service { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok((200, _)) = service.try_request("GET", "/", None) {
                return service;
            }
            if let Ok(Some(status)) = service.child.try_wait() {
                panic!("service exited before answering: {status}");
            }
            assert!(Instant::now() < deadline, "service did not answer / within 10 s");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    pub fn try_request(
        &self,
        method: &str,
        path: &str,
        json: Option<&Value>,
    ) -> std::io::Result<(u16, String)> {
        request(self.addr(), method, path, json)
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        let (status, body) = self.try_request("GET", path, None).unwrap();
        (status, serde_json::from_str(&body).unwrap_or(Value::String(body)))
    }

    pub fn post(&self, path: &str, json: &Value) -> (u16, Value) {
        let (status, body) = self.try_request("POST", path, Some(json)).unwrap();
        (status, serde_json::from_str(&body).unwrap_or(Value::String(body)))
    }

    /// The value of one series (`name{labels}` exactly as exposed) in
    /// `/metrics`, or 0 when it is not there yet.
    pub fn metric(&self, series: &str) -> f64 {
        let (status, text) = self.try_request("GET", "/metrics", None).unwrap();
        assert_eq!(status, 200, "{text}");
        text.lines()
            .find_map(|line| line.strip_prefix(series).and_then(|rest| rest.trim().parse().ok()))
            .unwrap_or(0.0)
    }

    /// Polls `/metrics` until `series` reaches `value` (within 20 s).
    pub fn wait_for_metric(&self, series: &str, value: f64) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let now = self.metric(series);
            if now == value {
                return;
            }
            assert!(Instant::now() < deadline, "{series} is {now}, not {value}, after 20 s");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The process's current and peak resident memory in KiB
    /// (`VmRSS`, `VmHWM` of /proc/PID/status).
    pub fn memory_kib(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let field = |name: &str| -> u64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap_or_else(|| panic!("no {name} in {status}"))
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// A raw connection to the service.
    pub fn connect(&self) -> TcpStream {
        connect(self.addr())
    }

    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits at most `limit` for the process to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `service healthcheck --port PORT` and returns whether it exited 0.
pub fn healthcheck(port: u16) -> bool {
    Command::new(env!("CARGO_BIN_EXE_service"))
        .args(["healthcheck", "--port", &port.to_string()])
        .env_remove("PORT")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success()
}

pub fn write_file(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

/// A temporary directory removed when dropped.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("service-test-{tag}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ---- a minimal HTTP/1.1 client -------------------------------------------

/// The request head (with `Connection: close`) for a JSON body of `len` bytes.
pub fn request_head(method: &str, path: &str, len: Option<usize>) -> String {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    if let Some(len) = len {
        head.push_str(&format!("Content-Type: application/json\r\nContent-Length: {len}\r\n"));
    }
    head.push_str("\r\n");
    head
}

/// One request on a fresh connection; returns the status and the body.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    json: Option<&Value>,
) -> std::io::Result<(u16, String)> {
    let body = json.map(|j| j.to_string()).unwrap_or_default();
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let head = request_head(method, path, json.map(|_| body.len()));
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())?;
    read_response(&mut stream)
}

/// A connection whose reads give up after 30 s (a bound, not a check).
pub fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    stream
}

/// One response read off a connection that may stay open.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    /// The head, header names and values lowercased.
    pub head: String,
    pub body: String,
}

impl RawResponse {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            (key.trim() == name).then(|| value.trim())
        })
    }
}

/// Reads one response (head, then a `Content-Length` body), leaving the
/// connection open for the next.
pub fn read_one(stream: &mut TcpStream) -> std::io::Result<RawResponse> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    let status = status_of(&head)?;
    let mut response = RawResponse { status, head, body: String::new() };
    let len: usize = response.header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body)?;
    response.body = String::from_utf8_lossy(&body).into_owned();
    Ok(response)
}

/// Whether the peer has closed `stream`: a read returns end of file (not
/// data, and not the 30 s read bound).
pub fn is_closed_by_peer(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 64];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

/// Reads a whole `Connection: close` response.
pub fn read_response(stream: &mut TcpStream) -> std::io::Result<(u16, String)> {
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    Ok((status_of(head)?, body.to_owned()))
}

/// The status code of a response head.
fn status_of(head: &str) -> std::io::Result<u16> {
    head.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status line in {head:?}")))
}
