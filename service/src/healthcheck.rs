//! `service healthcheck`: one plain HTTP/1.1 GET of the local `/ready`, so a
//! container HEALTHCHECK works in an image that holds nothing but this binary.
//!
//! Hand-written on purpose: it only needs a status line from loopback, and
//! an HTTP client library would add its size to the `FROM scratch` image
//! for nothing (tests have their own raw client in `tests/common`, for the
//! malformed requests no library sends).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// Probes `http://127.0.0.1:{port}/ready`; Ok when it answers 200.
pub fn probe(port: u16, timeout: Duration) -> Result<()> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&addr, timeout)
        .with_context(|| format!("cannot connect to {addr}"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(stream, "GET /ready HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n")
        .context("cannot send the request")?;
    // The status line fits in the first few bytes; the body is not needed.
    let mut head = [0u8; 64];
    let mut len = 0;
    while len < head.len() {
        let n = stream.read(&mut head[len..]).context("no answer")?;
        if n == 0 {
            break;
        }
        len += n;
        if head[..len].contains(&b'\n') {
            break;
        }
    }
    let line = String::from_utf8_lossy(&head[..len]);
    let line = line.lines().next().unwrap_or("");
    let status = line.split_whitespace().nth(1).unwrap_or("");
    if status != "200" {
        bail!("GET /ready answered {line:?}");
    }
    Ok(())
}
