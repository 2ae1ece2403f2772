//! `webhook-receiver`: the other end of the controller's webhook, for the
//! scenario that checks every rollout event arrives in order
//! (`e2e::notifications`). It runs in a container of its own on the
//! stack's monitoring network, where the controller reaches it by name.
//!
//! Each POST's body is printed on one line of stdout, which the scenario
//! reads with `docker logs`; the first `REFUSE_FIRST` requests (env,
//! default 0) are answered 503 and not printed, so the controller's retry
//! is seen too. Listens on `PORT` (default 8080). The standard library
//! only: the binary is linked statically for a `scratch` image.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The most read of a request head and of a body: an event is a few KiB.
const MAX_HEAD: u64 = 16 << 10;
const MAX_BODY: usize = 256 << 10;
/// A peer that sends nothing more is given up after this.
const STALL: Duration = Duration::from_secs(10);

fn main() -> ExitCode {
    let port = std::env::var("PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(8080u16);
    let refuse: u64 = std::env::var("REFUSE_FIRST").ok().and_then(|n| n.parse().ok()).unwrap_or(0);
    let listener = match TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("webhook-receiver: cannot listen on port {port}: {e}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!("webhook-receiver: listening on port {port}, refusing the first {refuse}");
    let seen = AtomicU64::new(0);
    // One connection at a time: the controller delivers in order, one
    // event after another.
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        if let Err(e) = serve(stream, &seen, refuse) {
            eprintln!("webhook-receiver: {e}");
        }
    }
    ExitCode::SUCCESS
}

fn serve(stream: TcpStream, seen: &AtomicU64, refuse: u64) -> io::Result<()> {
    stream.set_read_timeout(Some(STALL))?;
    stream.set_write_timeout(Some(STALL))?;
    let mut reader = BufReader::new(stream.try_clone()?.take(MAX_HEAD));
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.trim().eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap_or(0);
        }
    }
    let mut out = stream;
    if !request_line.starts_with("POST ") || length > MAX_BODY {
        return respond(&mut out, "400 Bad Request");
    }
    // What the head's reader holds already, then the rest from the socket.
    let mut body = reader.buffer().to_vec();
    body.truncate(length);
    let mut rest = out.try_clone()?.take((length - body.len()) as u64);
    rest.read_to_end(&mut body)?;
    if body.len() < length {
        return respond(&mut out, "400 Bad Request");
    }
    if seen.fetch_add(1, Ordering::Relaxed) < refuse {
        return respond(&mut out, "503 Service Unavailable");
    }
    let text = String::from_utf8_lossy(&body).replace('\n', " ");
    println!("{text}");
    io::stdout().flush()?;
    respond(&mut out, "204 No Content")
}

fn respond(out: &mut TcpStream, status: &str) -> io::Result<()> {
    write!(out, "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")?;
    out.flush()
}
