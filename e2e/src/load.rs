//! A bounded load generator for the stack's front (loopback only): client
//! threads sending `POST /api/predict/` in a sustained stream, some over
//! kept-alive connections (as real clients and upstream proxies do), some
//! over a connection per request, plus a witness asking `GET /` which
//! color and tag answer.
//!
//! The HTTP/1.1 client is written here on purpose: a library client may
//! retry a request that failed on a reused connection, which would hide
//! exactly the losses this measures. Here every failure is recorded and
//! never retried; a connection is reopened only for the next request, or
//! when the server said `Connection: close` (which is not a failure).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde::Deserialize;

/// How long one request may take before it counts as a timeout.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The pause between two requests of one client: a steady stream that
/// leaves the machine's two cores room for the stack itself.
const PACE: Duration = Duration::from_millis(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Connection {
    KeepAlive,
    PerRequest,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// 2xx with a valid prediction from `model_version`.
    Ok {
        model_version: String,
        fare: f64,
    },
    /// An HTTP answer that is not a valid 2xx prediction.
    Bad {
        status: u16,
        body: String,
    },
    /// The connection was refused, reset or closed before an answer.
    Connection(String),
    Timeout,
}

#[derive(Debug, Clone)]
pub struct Sample {
    /// When it was sent, since the load started.
    pub at: Duration,
    pub latency: Duration,
    pub connection: Connection,
    pub outcome: Outcome,
}

/// What `GET /` answered at a moment.
#[derive(Debug, Clone)]
pub struct Witness {
    pub at: Duration,
    pub color: Option<String>,
    pub version: Option<String>,
}

pub struct Load {
    stop: Arc<AtomicBool>,
    clients: Vec<JoinHandle<Vec<Sample>>>,
    witness: JoinHandle<Vec<Witness>>,
    started: Instant,
    bound: Duration,
}

pub struct Report {
    pub samples: Vec<Sample>,
    pub witness: Vec<Witness>,
    pub elapsed: Duration,
}

#[derive(Deserialize)]
struct Prediction {
    predictions: Vec<f64>,
    model_version: String,
}

#[derive(Deserialize)]
struct Liveness {
    color: Option<String>,
    version: Option<String>,
}

impl Load {
    /// Starts `keep_alive` + `per_request` clients against `authority`
    /// (`127.0.0.1:port`), each posting `body`; every thread stops by
    /// itself after `bound` even if [`Load::stop`] is never called.
    pub fn start(
        authority: &str,
        body: &str,
        keep_alive: usize,
        per_request: usize,
        bound: Duration,
    ) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let kinds = std::iter::repeat_n(Connection::KeepAlive, keep_alive)
            .chain(std::iter::repeat_n(Connection::PerRequest, per_request));
        let clients = kinds
            .map(|kind| {
                let (stop, authority, body) = (stop.clone(), authority.to_owned(), body.to_owned());
                thread::spawn(move || client(&authority, &body, kind, &stop, started, bound))
            })
            .collect();
        let witness = {
            let (stop, authority) = (stop.clone(), authority.to_owned());
            thread::spawn(move || witness(&authority, &stop, started, bound))
        };
        Load { stop, clients, witness, started, bound }
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Stops every thread and gathers what they saw.
    pub fn stop(self) -> Report {
        self.stop.store(true, Ordering::Relaxed);
        let mut samples: Vec<Sample> =
            self.clients.into_iter().flat_map(|h| h.join().unwrap_or_default()).collect();
        samples.sort_by_key(|s| s.at);
        let witness = self.witness.join().unwrap_or_default();
        let _ = self.bound;
        Report { samples, witness, elapsed: self.started.elapsed() }
    }
}

fn client(
    authority: &str,
    body: &str,
    kind: Connection,
    stop: &AtomicBool,
    started: Instant,
    bound: Duration,
) -> Vec<Sample> {
    let request = format!(
        "POST /api/predict/ HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n{}\r\n{body}",
        body.len(),
        if kind == Connection::PerRequest { "Connection: close\r\n" } else { "" }
    );
    let mut samples = Vec::new();
    let mut open: Option<BufReader<TcpStream>> = None;
    while !stop.load(Ordering::Relaxed) && started.elapsed() < bound {
        let at = started.elapsed();
        let sent = Instant::now();
        let (outcome, keep) = exchange(&mut open, authority, request.as_bytes());
        samples.push(Sample { at, latency: sent.elapsed(), connection: kind, outcome });
        if !keep || kind == Connection::PerRequest {
            open = None;
        }
        thread::sleep(PACE);
    }
    samples
}

/// One request on the open connection (or a new one); whether the
/// connection may carry the next request.
fn exchange(
    open: &mut Option<BufReader<TcpStream>>,
    authority: &str,
    request: &[u8],
) -> (Outcome, bool) {
    if open.is_none() {
        match TcpStream::connect(authority) {
            Ok(s) => {
                let _ = s.set_read_timeout(Some(REQUEST_TIMEOUT));
                let _ = s.set_write_timeout(Some(REQUEST_TIMEOUT));
                let _ = s.set_nodelay(true);
                *open = Some(BufReader::new(s));
            }
            Err(e) => return (Outcome::Connection(format!("connect: {e}")), false),
        }
    }
    let Some(reader) = open.as_mut() else {
        return (Outcome::Connection("no connection".into()), false);
    };
    if let Err(e) = reader.get_mut().write_all(request) {
        return (failure(e), false);
    }
    match read_response(reader) {
        Ok((status, close, body)) => {
            let outcome = match serde_json::from_slice::<Prediction>(&body) {
                Ok(p)
                    if (200..300).contains(&status)
                        && p.predictions.len() == 1
                        && p.predictions[0].is_finite() =>
                {
                    Outcome::Ok { model_version: p.model_version, fare: p.predictions[0] }
                }
                _ => Outcome::Bad {
                    status,
                    body: String::from_utf8_lossy(&body).chars().take(200).collect(),
                },
            };
            (outcome, !close)
        }
        Err(e) => (failure(e), false),
    }
}

fn failure(e: std::io::Error) -> Outcome {
    match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => Outcome::Timeout,
        _ => Outcome::Connection(e.to_string()),
    }
}

/// Reads a response with a Content-Length body: (status, connection
/// closes, body). EOF before the status line is an error.
fn read_response(reader: &mut BufReader<TcpStream>) -> std::io::Result<(u16, bool, Vec<u8>)> {
    let invalid =
        |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "closed before an answer",
        ));
    }
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| invalid("no status"))?;
    let (mut length, mut close) = (0usize, false);
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "closed in the headers",
            ));
        }
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = value.parse().map_err(|_| invalid("bad content-length"))?;
            } else if name.eq_ignore_ascii_case("connection") && value.eq_ignore_ascii_case("close")
            {
                close = true;
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    Ok((status, close, body))
}

fn witness(authority: &str, stop: &AtomicBool, started: Instant, bound: Duration) -> Vec<Witness> {
    let mut seen = Vec::new();
    let request = format!("GET / HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
    while !stop.load(Ordering::Relaxed) && started.elapsed() < bound {
        let at = started.elapsed();
        let mut open = None;
        let answered = match TcpStream::connect(authority) {
            Ok(s) => {
                let _ = s.set_read_timeout(Some(REQUEST_TIMEOUT));
                open = Some(BufReader::new(s));
                open.as_mut()
                    .and_then(|r| r.get_mut().write_all(request.as_bytes()).ok().map(|_| r))
                    .and_then(|r| read_response(r).ok())
            }
            Err(_) => None,
        };
        drop(open);
        let live = answered.and_then(|(_, _, body)| serde_json::from_slice::<Liveness>(&body).ok());
        seen.push(Witness {
            at,
            color: live.as_ref().and_then(|l| l.color.clone()),
            version: live.and_then(|l| l.version),
        });
        thread::sleep(Duration::from_millis(20));
    }
    seen
}

impl Report {
    /// Samples whose outcome is not a valid 2xx prediction.
    pub fn failures(&self) -> Vec<&Sample> {
        self.samples.iter().filter(|s| !matches!(s.outcome, Outcome::Ok { .. })).collect()
    }

    /// 2xx answers whose model version or fare is not one of `expected`
    /// (version, fare) pairs.
    pub fn wrong_answers(&self, expected: &[(String, f64)]) -> Vec<&Sample> {
        self.samples
            .iter()
            .filter(|s| match &s.outcome {
                Outcome::Ok { model_version, fare } => !expected.iter().any(|(v, f)| {
                    v == model_version && (f - fare).abs() <= 1e-9 * f.abs().max(1.0)
                }),
                _ => false,
            })
            .collect()
    }

    /// Counts: (sent, ok, bad status, connection errors, timeouts).
    pub fn counts(&self, kind: Option<Connection>) -> (usize, usize, usize, usize, usize) {
        let of: Vec<&Sample> =
            self.samples.iter().filter(|s| kind.is_none_or(|k| s.connection == k)).collect();
        let count = |f: &dyn Fn(&Outcome) -> bool| of.iter().filter(|s| f(&s.outcome)).count();
        (
            of.len(),
            count(&|o| matches!(o, Outcome::Ok { .. })),
            count(&|o| matches!(o, Outcome::Bad { .. })),
            count(&|o| matches!(o, Outcome::Connection(_))),
            count(&|o| matches!(o, Outcome::Timeout)),
        )
    }

    /// p50, p99 and max latency of the requests of `kind` (all when
    /// `None`) sent within `window`.
    pub fn latency(
        &self,
        window: Option<(Duration, Duration)>,
        kind: Option<Connection>,
    ) -> (Duration, Duration, Duration) {
        let mut l: Vec<Duration> = self
            .samples
            .iter()
            .filter(|s| window.is_none_or(|(a, b)| s.at >= a && s.at <= b))
            .filter(|s| kind.is_none_or(|k| s.connection == k))
            .map(|s| s.latency)
            .collect();
        if l.is_empty() {
            return Default::default();
        }
        l.sort();
        let at = |q: f64| l[((l.len() - 1) as f64 * q).round() as usize];
        (at(0.5), at(0.99), l[l.len() - 1])
    }

    /// The longest stretch during which every request failed: an outage.
    pub fn longest_outage(&self) -> Duration {
        let (mut longest, mut since) = (Duration::ZERO, None);
        for s in &self.samples {
            match (&s.outcome, since) {
                (Outcome::Ok { .. }, Some(start)) => {
                    longest = longest.max(s.at - start);
                    since = None;
                }
                (Outcome::Ok { .. }, None) => {}
                (_, None) => since = Some(s.at),
                (_, Some(_)) => {}
            }
        }
        if let Some(start) = since {
            longest = longest.max(self.elapsed.saturating_sub(start));
        }
        longest
    }

    /// What the witness saw last before `at`, and first after it.
    pub fn served_around(&self, at: Duration) -> (String, String) {
        let name = |w: Option<&Witness>| {
            w.map(|w| {
                format!(
                    "{} {}",
                    w.color.as_deref().unwrap_or("-"),
                    w.version.as_deref().unwrap_or("-")
                )
            })
            .unwrap_or_else(|| "-".into())
        };
        let before = self.witness.iter().rev().find(|w| w.at < at && w.color.is_some());
        let after = self.witness.iter().find(|w| w.at > at && w.color.is_some());
        (name(before), name(after))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(ms: u64, ok: bool) -> Sample {
        Sample {
            at: Duration::from_millis(ms),
            latency: Duration::from_millis(ms % 7),
            connection: Connection::KeepAlive,
            outcome: if ok {
                Outcome::Ok { model_version: "m".into(), fare: 10.0 }
            } else {
                Outcome::Connection("reset".into())
            },
        }
    }

    #[test]
    fn outages_and_counts() {
        let r = Report {
            samples: vec![
                sample(0, true),
                sample(10, false),
                sample(40, false),
                sample(50, true),
                sample(60, false),
            ],
            witness: vec![],
            elapsed: Duration::from_millis(70),
        };
        assert_eq!(r.longest_outage(), Duration::from_millis(40));
        assert_eq!(r.counts(None), (5, 2, 0, 3, 0));
        assert_eq!(r.failures().len(), 3);
        assert!(r.wrong_answers(&[("m".into(), 10.0)]).is_empty());
        assert_eq!(r.wrong_answers(&[("m".into(), 10.5)]).len(), 2);
    }

    #[test]
    fn reads_a_response_and_its_connection_header() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).unwrap();
            let body = r#"{"predictions":[12.5],"model_version":"m1"}"#;
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            s.write_all(format!("{head}{body}").as_bytes()).unwrap();
        });
        let mut open = None;
        let (outcome, keep) = exchange(&mut open, &addr.to_string(), b"POST / HTTP/1.1\r\n\r\n");
        server.join().unwrap();
        assert_eq!(outcome, Outcome::Ok { model_version: "m1".into(), fare: 12.5 });
        assert!(!keep);
        let (refused, _) = exchange(&mut None, "127.0.0.1:1", b"x");
        assert!(matches!(refused, Outcome::Connection(_)), "{refused:?}");
    }
}
