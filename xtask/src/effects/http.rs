//! The HTTP client of the stages and benchmarks: the registry's `/v2/`, the
//! service on loopback or in its container, the stack through nginx.
//!
//! A thin layer over `ureq` (no TLS, no compression: every target is a
//! plain `http://` server of ours). Nothing here must send a malformed
//! request — the "bad input" checks send well-formed HTTP with a wrong
//! content type or a broken JSON body, which ureq sends as given — so a
//! well-kept client replaces the hand-written one. Statuses are answers,
//! not errors: callers check them, and a connection error stays an
//! `std::io::Error` in the chain (the registry probe tells "nothing
//! listens" from "something else" by it).

use std::time::Duration;

use anyhow::{Context, Result};
use ureq::http;

/// An answer: status, headers (names lower-cased) and the whole body.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The first header with this (case-insensitive) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON.
    pub fn json(&self) -> Result<serde_json::Value> {
        self.parse()
    }

    /// The body parsed as JSON into `T`.
    pub fn parse<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_slice(&self.body)
            .with_context(|| format!("unexpected answer: {:?}", truncate(&self.text(), 200)))
    }
}

/// One request to be sent to `host:port`.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub headers: Vec<(&'a str, &'a str)>,
    pub body: &'a [u8],
    pub timeout: Duration,
}

impl<'a> Request<'a> {
    pub fn get(path: &'a str) -> Self {
        Request { method: "GET", path, headers: Vec::new(), body: &[], timeout: DEFAULT_TIMEOUT }
    }

    /// A POST with `Content-Type: application/json`.
    pub fn post_json(path: &'a str, body: &'a [u8]) -> Self {
        Request {
            method: "POST",
            path,
            headers: vec![("Content-Type", "application/json")],
            body,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Sets a header, replacing one of the same name.
    pub fn header(mut self, name: &'a str, value: &'a str) -> Self {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self.headers.push((name, value));
        self
    }

    /// The bound on the whole exchange, connecting included.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sends the request to `authority` (`host:port`) and reads the answer.
    pub fn send(&self, authority: &str) -> Result<Response> {
        self.exchange(authority)
            .with_context(|| format!("{} http://{authority}{} failed", self.method, self.path))
    }

    fn exchange(&self, authority: &str) -> Result<Response> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_global(Some(self.timeout))
            .build()
            .into();
        let mut builder = http::Request::builder()
            .method(self.method)
            .uri(format!("http://{authority}{}", self.path));
        for (name, value) in &self.headers {
            builder = builder.header(*name, *value);
        }
        let sent = if self.body.is_empty() && self.method == "GET" {
            agent.run(builder.body(())?)
        } else {
            agent.run(builder.body(self.body)?)
        };
        let mut answer = sent.map_err(into_io)?;
        let headers = answer
            .headers()
            .iter()
            .map(|(n, v)| (n.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into()))
            .collect();
        let body = answer.body_mut().read_to_vec().map_err(into_io)?;
        Ok(Response { status: answer.status().as_u16(), headers, body })
    }
}

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Keeps a socket error an `std::io::Error` in the chain, so callers can
/// ask for its kind.
fn into_io(e: ureq::Error) -> anyhow::Error {
    match e {
        ureq::Error::Io(io) => io.into(),
        other => other.into(),
    }
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpListener;

    use super::*;

    /// A one-shot server on a free port: answers `raw` to the first
    /// connection and hands back what the client sent.
    fn serve_once(raw: &'static str) -> (String, std::thread::JoinHandle<Vec<u8>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let authority = listener.local_addr().unwrap().to_string();
        let handle = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            stream.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
            let mut seen = Vec::new();
            let mut buf = [0; 4096];
            while let Ok(n) = stream.read(&mut buf) {
                if n == 0 {
                    break;
                }
                seen.extend_from_slice(&buf[..n]);
                if seen.windows(4).any(|w| w == b"\r\n\r\n") && seen.ends_with(b"}") {
                    break;
                }
                if seen.ends_with(b"\r\n\r\n") && !seen.starts_with(b"POST") {
                    break;
                }
            }
            stream.write_all(raw.as_bytes()).unwrap();
            seen
        });
        (authority, handle)
    }

    #[test]
    fn an_error_status_is_an_answer_with_its_body() {
        let (at, server) = serve_once(
            "HTTP/1.1 422 Unprocessable Entity\r\nTransfer-Encoding: chunked\r\nX-A: b\r\n\r\n\
             4\r\n{\"a\"\r\n3\r\n:1}\r\n0\r\n\r\n",
        );
        let r = Request::post_json("/api/predict/", b"{\"data\":[]}")
            .header("Content-Type", "text/plain")
            .send(&at)
            .unwrap();
        assert_eq!(r.status, 422);
        assert_eq!(r.json().unwrap()["a"], 1);
        assert_eq!(r.header("X-A"), Some("b"));
        let sent = String::from_utf8(server.join().unwrap()).unwrap().to_ascii_lowercase();
        assert!(sent.starts_with("post /api/predict/ http/1.1\r\n"), "{sent}");
        assert!(sent.contains("content-type: text/plain\r\n"), "{sent}");
        assert!(!sent.contains("application/json"), "{sent}");
        assert!(sent.ends_with("{\"data\":[]}"), "{sent}");
    }

    #[test]
    fn a_refused_connection_is_an_io_error() {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let err = Request::get("/").send(&format!("127.0.0.1:{port}")).unwrap_err();
        let refused = err.chain().any(|c| {
            c.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
        });
        assert!(refused, "{err:#}");
    }

    #[test]
    fn a_non_http_answer_is_an_error() {
        let (at, _server) = serve_once("SSH-2.0-OpenSSH\r\n");
        assert!(Request::get("/").send(&at).is_err());
    }
}
