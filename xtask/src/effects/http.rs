//! A tiny blocking HTTP/1.1 client for the stages that probe our own
//! servers on loopback: the registry's `/v2/`, the service in its container,
//! the stack through nginx.
//!
//! Why not a crate: the tests must send requests a polished client refuses
//! to send (a wrong content type, a malformed body), every target is a plain
//! `http://` server of ours on 127.0.0.1, and one request per connection
//! (`Connection: close`) keeps the reader trivial. Chunked bodies are
//! decoded because nginx may re-chunk an upstream answer.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use anyhow::{Context, Result, bail};

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
        serde_json::from_slice(&self.body)
            .with_context(|| format!("answer is not JSON: {:?}", truncate(&self.text(), 200)))
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

    pub fn header(mut self, name: &'a str, value: &'a str) -> Self {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self.headers.push((name, value));
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sends the request to `authority` (`host:port`) and reads the answer.
    pub fn send(&self, authority: &str) -> Result<Response> {
        send(authority, self)
            .with_context(|| format!("{} http://{authority}{} failed", self.method, self.path))
    }
}

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

fn send(authority: &str, req: &Request<'_>) -> Result<Response> {
    let addr = authority
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve {authority}"))?
        .next()
        .with_context(|| format!("{authority} resolves to no address"))?;
    let mut stream = TcpStream::connect_timeout(&addr, req.timeout)?;
    stream.set_read_timeout(Some(req.timeout))?;
    stream.set_write_timeout(Some(req.timeout))?;

    let mut head = format!("{} {} HTTP/1.1\r\nHost: {authority}\r\n", req.method, req.path);
    for (name, value) in &req.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if !req.body.is_empty() || req.method == "POST" || req.method == "PUT" {
        head.push_str(&format!("Content-Length: {}\r\n", req.body.len()));
    }
    head.push_str("Connection: close\r\n\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(req.body)?;
    stream.flush()?;

    read_response(BufReader::new(stream), req.method == "HEAD")
}

fn read_response(mut reader: impl BufRead, head_only: bool) -> Result<Response> {
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let status = parse_status_line(&line)?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            bail!("connection closed inside the response head");
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (name, value) =
            l.split_once(':').with_context(|| format!("malformed header line {l:?}"))?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    let mut resp = Response { status, headers, body: Vec::new() };
    if head_only || status == 204 || status == 304 || (100..200).contains(&status) {
        return Ok(resp);
    }
    let chunked = resp
        .header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    if chunked {
        resp.body = read_chunked(&mut reader)?;
    } else if let Some(len) = resp.header("content-length") {
        let len: usize = len.parse().with_context(|| format!("bad Content-Length {len:?}"))?;
        let mut body = vec![0; len];
        reader.read_exact(&mut body)?;
        resp.body = body;
    } else {
        reader.read_to_end(&mut resp.body)?;
    }
    Ok(resp)
}

fn parse_status_line(line: &str) -> Result<u16> {
    let mut parts = line.split_whitespace();
    match (parts.next(), parts.next()) {
        (Some(v), Some(code)) if v.starts_with("HTTP/1.") => {
            code.parse().with_context(|| format!("bad status code in {line:?}"))
        }
        _ => bail!("not an HTTP/1.x status line: {:?}", truncate(line, 80)),
    }
}

fn read_chunked(reader: &mut impl BufRead) -> Result<Vec<u8>> {
    let mut body = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        reader.read_line(&mut line)?;
        let size_text = line.trim().split(';').next().unwrap_or("");
        let size = usize::from_str_radix(size_text, 16)
            .with_context(|| format!("bad chunk size {size_text:?}"))?;
        if size == 0 {
            // Trailers, up to the blank line.
            loop {
                line.clear();
                if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
                    return Ok(body);
                }
            }
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..])?;
        line.clear();
        reader.read_line(&mut line)?;
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
    use super::*;

    fn parse(raw: &str) -> Response {
        read_response(raw.as_bytes(), false).unwrap()
    }

    #[test]
    fn reads_a_content_length_body() {
        let r = parse("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhelloEXTRA");
        assert_eq!(r.status, 200);
        assert_eq!(r.body, b"hello");
        assert_eq!(r.header("x-a"), Some("b"));
        assert_eq!(r.header("X-A"), Some("b"));
    }

    #[test]
    fn decodes_a_chunked_body() {
        let r = parse(
            "HTTP/1.1 422 Unprocessable Entity\r\nTransfer-Encoding: chunked\r\n\r\n\
             4\r\n{\"a\"\r\n3;ext=1\r\n:1}\r\n0\r\nTrailer: x\r\n\r\n",
        );
        assert_eq!(r.status, 422);
        assert_eq!(r.text(), "{\"a\":1}");
        assert_eq!(r.json().unwrap()["a"], 1);
    }

    #[test]
    fn reads_to_eof_without_length() {
        let r = parse("HTTP/1.0 503 Service Unavailable\r\n\r\nno model");
        assert_eq!(r.status, 503);
        assert_eq!(r.text(), "no model");
    }

    #[test]
    fn refuses_a_non_http_answer() {
        assert!(read_response("SSH-2.0-OpenSSH\r\n".as_bytes(), false).is_err());
        assert!(read_response("HTTP/1.1 200 OK\r\nBroken\r\n\r\n".as_bytes(), false).is_err());
    }
}
