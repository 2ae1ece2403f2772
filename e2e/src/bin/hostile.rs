//! `hostile [serve|healthcheck]`: a color that misbehaves on purpose, for
//! the scenarios that prove the controller bounds what it reads from a new
//! color and how long it waits for it (`e2e::hostile`). It runs in a copy
//! of the real service image (`e2e::images`), on the service's port, with
//! the mode in `HOSTILE_MODE`:
//!
//! - `huge` answers `GET /`, `/ready`, `/model` and `/metrics` as the
//!   service does, so the color turns healthy and its artifact reads; but
//!   `POST /api/predict/` answers 200 with a chunked body of 1 GiB, the
//!   same 64 KiB written again and again until all is sent or the peer has
//!   gone.
//! - `silent` accepts connections, reads what comes and never answers.
//!
//! `healthcheck` is the image's HEALTHCHECK: in `huge`, `GET /ready` on
//! loopback, as `service healthcheck`; in `silent`, success at once, so
//! Docker calls the color healthy and the controller's own HTTP is what
//! meets the silence. The standard library, anyhow and serde_json (for
//! the artifact's version) only: the binary is linked statically for a
//! `scratch` image.

use std::fmt::Write as _;
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// The service's port, as its image sets `PORT`.
const DEFAULT_PORT: u16 = 32000;
/// The size of the answer to a prediction.
const HUGE: u64 = 1 << 30;
/// What each write of that answer hands the kernel.
const PIECE: usize = 64 << 10;
/// The answer's first bytes: a prediction that never ends.
const PREFIX: &[u8] = br#"{"predictions":["#;
/// The most read of a request head and of a request body.
const MAX_HEAD: u64 = 16 << 10;
const MAX_BODY: u64 = 4 << 20;
/// The most connections served or held at once, a thread each, well under
/// the app containers' process limit (`spec.resources.pids`); past it, new
/// ones wait in the kernel's accept queue (which is silence too).
const MAX_CONNECTIONS: usize = 128;
/// A peer that neither reads nor closes is given up after this.
const STALL: Duration = Duration::from_secs(10);
/// The artifact is the service's, at most 1 MiB; a little room on top.
const MAX_MODEL: u64 = 2 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Huge,
    Silent,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Huge => "huge",
            Mode::Silent => "silent",
        }
    }

    fn from_env() -> Result<Mode> {
        match std::env::var("HOSTILE_MODE").as_deref() {
            Ok("huge") => Ok(Mode::Huge),
            Ok("silent") => Ok(Mode::Silent),
            Ok(other) => bail!("HOSTILE_MODE is {other:?}, not huge or silent"),
            Err(_) => bail!("HOSTILE_MODE is not set (huge or silent)"),
        }
    }
}

/// What the `huge` mode answers with besides the huge body: the service's
/// identity and artifact, and counters for /metrics.
struct Service {
    color: Option<String>,
    version: Option<String>,
    model: Vec<u8>,
    model_version: String,
    requests: AtomicU64,
    predictions: AtomicU64,
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = Mode::from_env().and_then(|mode| {
        let port = port()?;
        match args.as_slice() {
            [] | ["serve"] => serve(mode, port),
            ["healthcheck"] => healthcheck(mode, port),
            other => bail!("usage: hostile [serve|healthcheck], not {other:?}"),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hostile: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn port() -> Result<u16> {
    match std::env::var("PORT") {
        Ok(p) => p.parse().with_context(|| format!("PORT is {p:?}, not a port")),
        Err(_) => Ok(DEFAULT_PORT),
    }
}

/// Docker's health check. `silent` passes without a request: its point is
/// to reach the controller's HTTP, past Docker's health.
fn healthcheck(mode: Mode, port: u16) -> Result<()> {
    if mode == Mode::Silent {
        println!("healthy (silent mode: no request made)");
        return Ok(());
    }
    // The service's own check: this image must look healthy as it does.
    service::healthcheck::probe(port, Duration::from_secs(2))?;
    println!("ready");
    Ok(())
}

fn serve(mode: Mode, port: u16) -> Result<()> {
    let service = match mode {
        Mode::Huge => Some(Arc::new(load()?)),
        Mode::Silent => None,
    };
    let listener = TcpListener::bind((Ipv4Addr::UNSPECIFIED, port))
        .with_context(|| format!("cannot listen on port {port}"))?;
    eprintln!("hostile: {} on port {port}", mode.name());
    accept(&listener, service, &Arc::new(AtomicUsize::new(0)))
}

/// A thread per connection, `open` of them at most [`MAX_CONNECTIONS`]:
/// each answered as `huge` when there is a `service`, else held silent.
fn accept(listener: &TcpListener, service: Option<Arc<Service>>, open: &Arc<AtomicUsize>) -> ! {
    loop {
        while open.load(Ordering::Acquire) >= MAX_CONNECTIONS {
            thread::sleep(Duration::from_millis(10));
        }
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors, or a connection reset in the queue:
                // not a reason to stop.
                eprintln!("hostile: accept: {e}");
                thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        let guard = Open::new(open);
        let service = service.clone();
        // A small stack: the buffers live on the heap.
        let spawned = thread::Builder::new().stack_size(256 << 10).spawn(move || {
            let _guard = guard;
            match service {
                Some(service) => {
                    if let Err(e) = answer(&stream, &service) {
                        eprintln!("hostile: {e}");
                    }
                }
                None => hold(&stream),
            }
        });
        if let Err(e) = spawned {
            // The stream and its guard went with the closure: closed.
            eprintln!("hostile: cannot start a thread: {e}");
        }
    }
}

/// Counts a connection until it is dropped.
struct Open(Arc<AtomicUsize>);

impl Open {
    fn new(open: &Arc<AtomicUsize>) -> Open {
        open.fetch_add(1, Ordering::AcqRel);
        Open(open.clone())
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The artifact the image carries, and the identity the controller gave
/// the container.
fn load() -> Result<Service> {
    let path = std::env::var("MODEL_PATH").unwrap_or_else(|_| "/model/model.json".to_owned());
    let mut model = Vec::new();
    fs::File::open(&path)
        .and_then(|f| f.take(MAX_MODEL + 1).read_to_end(&mut model))
        .with_context(|| format!("cannot read the model {path}"))?;
    if model.len() as u64 > MAX_MODEL {
        bail!("the model {path} is over {} KiB", MAX_MODEL >> 10);
    }
    Service::new(model, std::env::var("COLOR").ok(), std::env::var("VERSION").ok())
        .with_context(|| format!("the model {path}"))
}

impl Service {
    fn new(model: Vec<u8>, color: Option<String>, version: Option<String>) -> Result<Service> {
        let artifact: serde_json::Value = serde_json::from_slice(&model).context("not JSON")?;
        let model_version =
            artifact["model_version"].as_str().context("no model_version")?.to_owned();
        Ok(Service {
            color,
            version,
            model,
            model_version,
            requests: AtomicU64::new(0),
            predictions: AtomicU64::new(0),
        })
    }
}

/// `silent`: reads and drops whatever comes until the peer closes; never
/// writes a byte.
fn hold(mut stream: &TcpStream) {
    let mut sink = [0u8; 4096];
    while let Ok(n) = stream.read(&mut sink) {
        if n == 0 {
            return;
        }
    }
}

/// One request, as the service would answer it but for the prediction;
/// then the connection is closed.
fn answer(stream: &TcpStream, service: &Service) -> io::Result<()> {
    stream.set_read_timeout(Some(STALL))?;
    stream.set_write_timeout(Some(STALL))?;
    let mut reader = BufReader::new(stream);
    let Some((method, path)) = read_request(&mut reader)? else { return Ok(()) };
    service.requests.fetch_add(1, Ordering::Relaxed);
    let mut out = stream;
    match (method.as_str(), path.as_str()) {
        ("GET", "/") => {
            let body = serde_json::json!({
                "status": "ok",
                "model_loaded": true,
                "model_version": service.model_version,
                "color": service.color,
                "version": service.version,
            });
            reply(&mut out, "200 OK", "application/json", body.to_string().as_bytes())
        }
        ("GET", "/ready") => {
            let body =
                serde_json::json!({"status": "ready", "model_version": service.model_version});
            reply(&mut out, "200 OK", "application/json", body.to_string().as_bytes())
        }
        ("GET", "/model") => reply(&mut out, "200 OK", "application/json", &service.model),
        ("GET", "/metrics") => {
            let text = metrics(service);
            reply(&mut out, "200 OK", "text/plain; version=0.0.4", text.as_bytes())
        }
        ("POST", "/api/predict/" | "/api/predict") => {
            service.predictions.fetch_add(1, Ordering::Relaxed);
            let (sent, ended) = huge(&mut out);
            let mib = sent >> 20;
            match ended {
                Ok(()) => eprintln!("hostile: POST {path}: all {mib} MiB sent"),
                Err(e) => eprintln!("hostile: POST {path}: {mib} MiB sent, then: {e}"),
            }
            Ok(())
        }
        _ => reply(&mut out, "404 Not Found", "application/json", br#"{"detail":"Not Found"}"#),
    }
}

/// The request line's method and path (no query); the head and a body of
/// the declared length are read and dropped. `None` when the peer closed
/// before a request.
fn read_request(reader: &mut BufReader<&TcpStream>) -> io::Result<Option<(String, String)>> {
    let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
    let mut head = reader.by_ref().take(MAX_HEAD);
    let mut line = String::new();
    if head.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let mut words = line.split_whitespace();
    let (Some(method), Some(target)) = (words.next(), words.next()) else {
        return Err(invalid("not an HTTP request line"));
    };
    let method = method.to_owned();
    let path = target.split('?').next().unwrap_or(target).to_owned();
    let mut length = 0u64;
    loop {
        line.clear();
        if head.read_line(&mut line)? == 0 {
            return Err(invalid("the request head ended early or is over 16 KiB"));
        }
        let field = line.trim_end();
        if field.is_empty() {
            break;
        }
        if let Some((name, value)) = field.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().map_err(|_| invalid("a bad Content-Length"))?;
        }
    }
    io::copy(&mut reader.by_ref().take(length.min(MAX_BODY)), &mut io::sink())?;
    Ok(Some((method, path)))
}

fn reply(out: &mut &TcpStream, status: &str, kind: &str, body: &[u8]) -> io::Result<()> {
    write!(
        out,
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    out.write_all(body)?;
    out.flush()
}

/// A minimal exposition: the service's counter of predictions, which the
/// controller's analysis reads, and one of every request.
fn metrics(service: &Service) -> String {
    let mut text = String::new();
    let requests = service.requests.load(Ordering::Relaxed);
    let predictions = service.predictions.load(Ordering::Relaxed);
    let _ = writeln!(text, "# HELP http_requests_total Predictions answered, by route and status.");
    let _ = writeln!(text, "# TYPE http_requests_total counter");
    let _ = writeln!(
        text,
        "http_requests_total{{route=\"/api/predict/\",status=\"200\"}} {predictions}"
    );
    let _ = writeln!(text, "# HELP hostile_requests_total Requests of any route.");
    let _ = writeln!(text, "# TYPE hostile_requests_total counter");
    let _ = writeln!(text, "hostile_requests_total {requests}");
    text
}

/// 200 and a chunked body of exactly [`HUGE`] bytes (a JSON array of
/// zeros that never closes), one [`PIECE`] per write, until all is sent or
/// a write fails because the peer closed or stalled. How much went, and
/// how it ended.
fn huge(out: &mut &TcpStream) -> (u64, io::Result<()>) {
    let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
    if let Err(e) = out.write_all(head.as_bytes()) {
        return (0, Err(e));
    }
    let chunk = |data: &[u8]| {
        let mut c = format!("{:x}\r\n", data.len()).into_bytes();
        c.extend_from_slice(data);
        c.extend_from_slice(b"\r\n");
        c
    };
    let zeros: Vec<u8> = b"0.0,".iter().copied().cycle().take(PIECE).collect();
    let mut first = PREFIX.to_vec();
    first.extend_from_slice(&zeros[..PIECE - PREFIX.len()]);
    let (first, rest) = (chunk(&first), chunk(&zeros));
    let mut sent = 0u64;
    while sent < HUGE {
        let piece = if sent == 0 { &first } else { &rest };
        if let Err(e) = out.write_all(piece) {
            return (sent, Err(e));
        }
        sent += PIECE as u64;
    }
    (sent, out.write_all(b"0\r\n\r\n").and_then(|()| out.flush()))
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;

    /// The server on a free loopback port, in the background.
    fn start(service: Option<Service>) -> (SocketAddr, Arc<AtomicUsize>) {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let addr = listener.local_addr().unwrap();
        let open = Arc::new(AtomicUsize::new(0));
        let counted = open.clone();
        thread::spawn(move || accept(&listener, service.map(Arc::new), &counted));
        (addr, open)
    }

    fn service() -> Service {
        let model = br#"{"model_version":"m1","golden":[]}"#.to_vec();
        Service::new(model, Some("green".into()), Some("e2e-hostile-huge".into())).unwrap()
    }

    fn get(addr: SocketAddr, path: &str) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        write!(s, "GET {path}?x=1 HTTP/1.1\r\nHost: h\r\n\r\n").unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        answer
    }

    #[test]
    fn huge_answers_like_the_service_but_for_predictions() {
        let (addr, open) = start(Some(service()));
        let root = get(addr, "/");
        assert!(root.starts_with("HTTP/1.1 200"), "{root}");
        let body = root.split("\r\n\r\n").nth(1).unwrap();
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["color"], "green");
        assert_eq!(json["version"], "e2e-hostile-huge");
        assert_eq!(json["model_version"], "m1");
        assert!(get(addr, "/ready").contains(r#""status":"ready""#));
        assert!(get(addr, "/model").ends_with(r#"{"model_version":"m1","golden":[]}"#));
        assert!(get(addr, "/nowhere").starts_with("HTTP/1.1 404"));

        let mut s = TcpStream::connect(addr).unwrap();
        let body = r#"{"data":[]}"#;
        write!(s, "POST /api/predict/ HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}", body.len())
            .unwrap();
        let mut first = vec![0u8; 300 << 10];
        s.read_exact(&mut first).unwrap();
        let text = String::from_utf8_lossy(&first);
        assert!(text.starts_with("HTTP/1.1 200 OK"), "{text:.100}");
        assert!(text.contains("Transfer-Encoding: chunked"));
        assert!(text.contains(r#"{"predictions":[0.0,0.0,"#));
        assert!(get(addr, "/metrics").contains(r#"route="/api/predict/",status="200"} 1"#));
        // The client goes: the writer stops, the connection is let go.
        drop(s);
        let started = std::time::Instant::now();
        while open.load(Ordering::Acquire) > 0 {
            assert!(started.elapsed() < Duration::from_secs(5), "the writer did not stop");
            thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn silent_never_answers() {
        let (addr, open) = start(None);
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(b"GET /ready HTTP/1.1\r\nHost: h\r\n\r\n").unwrap();
        s.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
        let mut byte = [0u8; 1];
        let e = s.read(&mut byte).unwrap_err();
        assert!(matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut), "{e}");
        assert_eq!(open.load(Ordering::Acquire), 1);
    }

    #[test]
    fn the_huge_body_is_a_gibibyte_in_whole_pieces() {
        assert_eq!(HUGE % PIECE as u64, 0);
        assert_eq!((PIECE - PREFIX.len()) % 4, 0, "the zeros after the prefix stay aligned");
    }
}
