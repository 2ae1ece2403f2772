//! One client connection's socket, watched.
//!
//! Its timers are `conn_deadline`'s: the connection task polls a
//! [`conn_deadline::Deadline`] that follows the connection's
//! [`Activity`] (requests in and out of the application, bytes read), and
//! closes the connection when it passes, counted under [`STAGES`]:
//!
//! - `header`: from the accept, and from the first byte of each later
//!   request, the head must arrive within the header timeout (hyper's own
//!   timer also runs while a kept-alive connection waits, so it cannot
//!   tell a slow head from an idle connection);
//! - `idle`: between requests, the next one must start within the idle
//!   timeout (longer than nginx's upstream keep-alive);
//! - `response`: once a request is in the application, it must be
//!   answered (and the answer taken by hyper) within admission wait +
//!   body timeout + request timeout + idle timeout: its wait for budget,
//!   its body and its pricing have their own timers (`api::predict`), so
//!   this only cuts a client that does not read its answer.
//!
//! [`Watched`] wraps the socket, beneath the [`conn_deadline::Counted`]
//! that counts the bytes read. It replaces hyper's answers to unparsable
//! heads (400, 414, 431), which have empty bodies and no hook, with
//! FastAPI-shaped ones; and it closes lingering: every close (after an
//! answer sent before its body was read, such as 413, a shed 503 or 408)
//! shuts our side first, then reads and discards what the client still
//! sends for at most 2 s and 8 MiB, so the kernel does not reset the
//! connection, losing the answer, over unread bytes. What it discards is
//! read beneath the counter, so it restarts no timer.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::http::StatusCode;
use conn_deadline::{Activity, Stages};
use memchr::memmem;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

use crate::error::protocol_error_response;
use crate::state::AppState;

/// How long, and how many bytes, a closing connection discards.
const LINGER: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 8 * 1024 * 1024;

/// The stages of `connection_timeouts_total`: the busy one lasts until
/// hyper has taken the answer's last byte, so it is the `response`'s.
pub const STAGES: Stages = Stages::with_busy("response");

/// A socket with the error-body rewrite and the lingering close.
pub struct Watched<IO> {
    io: IO,
    /// Whether a request is in the application: then hyper writes no
    /// error answer of its own.
    requests: Arc<Activity>,
    state: Arc<AppState>,
    rewrite: Option<Rewrite>,
    /// Bytes discarded since our side was shut, and until when, once it is.
    linger: Option<(usize, Pin<Box<Sleep>>)>,
}

/// Our answer in place of one of hyper's: `replaces` bytes of hyper's
/// buffer are reported written once all of `bytes` are.
struct Rewrite {
    bytes: Vec<u8>,
    written: usize,
    replaces: usize,
}

impl<IO> Watched<IO> {
    pub fn new(io: IO, requests: Arc<Activity>, state: Arc<AppState>) -> Self {
        Watched { io, requests, state, rewrite: None, linger: None }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Watched<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Watched<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.rewrite.is_none() {
            // hyper answers a bad head only while no request is in the
            // application, so a busy connection's bytes are not searched.
            let found = if this.requests.is_busy() { None } else { find_hyper_error(buf) };
            match found {
                None => return Pin::new(&mut this.io).poll_write(cx, buf),
                // Earlier answers first, so ours starts a write.
                Some(found) if found.at > 0 => {
                    return Pin::new(&mut this.io).poll_write(cx, &buf[..found.at]);
                }
                Some(found) => {
                    this.state.metrics.record_protocol_error(found.status.as_u16(), found.kind);
                    this.rewrite = Some(Rewrite {
                        bytes: protocol_error_response(found.status, found.detail),
                        written: 0,
                        replaces: found.len,
                    });
                }
            }
        }
        let Some(rewrite) = this.rewrite.as_mut() else {
            return Poll::Ready(Ok(0));
        };
        while rewrite.written < rewrite.bytes.len() {
            let n =
                ready!(Pin::new(&mut this.io).poll_write(cx, &rewrite.bytes[rewrite.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            rewrite.written += n;
        }
        let replaces = rewrite.replaces;
        this.rewrite = None;
        Poll::Ready(Ok(replaces))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.linger.is_none() {
            ready!(Pin::new(&mut this.io).poll_shutdown(cx))?;
            this.linger = Some((0, Box::pin(tokio::time::sleep(LINGER))));
        }
        Poll::Ready(loop {
            let Some((lingered, timer)) = this.linger.as_mut() else { break Ok(()) };
            if *lingered > LINGER_BYTES {
                break Ok(());
            }
            let mut scratch = [0u8; 64 * 1024];
            let mut buf = ReadBuf::new(&mut scratch);
            match Pin::new(&mut this.io).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if buf.filled().is_empty() => break Ok(()),
                Poll::Ready(Ok(())) => *lingered += buf.filled().len(),
                // Reset or gone: nothing left to protect.
                Poll::Ready(Err(_)) => break Ok(()),
                Poll::Pending => {
                    if timer.as_mut().poll(cx).is_ready() {
                        break Ok(());
                    }
                    return Poll::Pending;
                }
            }
        })
    }
}

/// One of hyper's own error answers found in its write buffer.
#[derive(Debug, PartialEq)]
struct HyperError {
    at: usize,
    len: usize,
    status: StatusCode,
    kind: &'static str,
    detail: &'static str,
}

/// The answers hyper writes for a request head it cannot parse: a status
/// line and `content-length: 0` (then `date`), no body.
const HYPER_ERRORS: [(StatusCode, &str, &str); 3] = [
    (StatusCode::BAD_REQUEST, "bad_request", "the request is not valid HTTP/1.1"),
    (StatusCode::URI_TOO_LONG, "uri_too_long", "the request target is too long"),
    (
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        "headers_too_large",
        "the request head (request line and headers) is larger than the limit",
    ),
];

/// Where a client error's status line starts: searched for in every answer
/// hyper writes while no request is in the application, so with memchr's
/// vectorised search (a byte-by-byte one cost 2.4 % of the service's CPU).
static STATUS_4XX: LazyLock<memmem::Finder<'static>> =
    LazyLock::new(|| memmem::Finder::new(b"HTTP/1.1 4"));

fn find_hyper_error(buf: &[u8]) -> Option<HyperError> {
    const EMPTY: &[u8] = b"\r\ncontent-length: 0\r\n";
    let mut from = 0;
    while let Some(offset) = STATUS_4XX.find(&buf[from..]) {
        let at = from + offset;
        let rest = &buf[at..];
        let head_len = memmem::find(rest, b"\r\n\r\n").map(|end| end + 4);
        if let Some(len) = head_len {
            let head = &rest[..len];
            for (status, kind, detail) in HYPER_ERRORS {
                let line = format!("HTTP/1.1 {status}\r\n");
                let has_line = head.starts_with(line.as_bytes());
                let empty = head.windows(EMPTY.len()).any(|w| w.eq_ignore_ascii_case(EMPTY));
                if has_line && empty {
                    return Some(HyperError { at, len, status, kind, detail });
                }
            }
        }
        from = at + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_hypers_empty_error_answers_only() {
        let hyper =
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        let found = find_hyper_error(hyper).unwrap();
        assert_eq!((found.at, found.len), (0, hyper.len()));
        assert_eq!(found.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);

        let ours = b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 9\r\n\r\n{\"a\":\"b\"}";
        assert_eq!(find_hyper_error(ours), None);
        let mut both = ours.to_vec();
        both.extend_from_slice(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n");
        let found = find_hyper_error(&both).unwrap();
        assert_eq!((found.at, found.status), (ours.len(), StatusCode::BAD_REQUEST));
        assert_eq!(find_hyper_error(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"), None);
    }

    /// The byte-by-byte search it replaced, as the reference.
    fn reference(buf: &[u8]) -> Option<(usize, usize, StatusCode)> {
        const START: &[u8] = b"HTTP/1.1 4";
        const EMPTY: &[u8] = b"\r\ncontent-length: 0\r\n";
        let mut from = 0;
        while let Some(offset) = buf[from..].windows(START.len()).position(|w| w == START) {
            let at = from + offset;
            let rest = &buf[at..];
            if let Some(len) = rest.windows(4).position(|w| w == b"\r\n\r\n").map(|e| e + 4) {
                let head = &rest[..len];
                for (status, _, _) in HYPER_ERRORS {
                    let line = format!("HTTP/1.1 {status}\r\n");
                    if head.starts_with(line.as_bytes())
                        && head.windows(EMPTY.len()).any(|w| w.eq_ignore_ascii_case(EMPTY))
                    {
                        return Some((at, len, status));
                    }
                }
            }
            from = at + 1;
        }
        None
    }

    #[test]
    fn finds_what_the_byte_by_byte_search_found() {
        let pieces: [&[u8]; 9] = [
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 5\r\n\r\n",
            b"{\"predictions\":[1.5],\"model_version\":\"HTTP/1.1 4\"}",
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 414 URI Too Long\r\nContent-Length: 0\r\ndate: x\r\n\r\n",
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 4",
            b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 0\r\n\r\n",
            b"\r\n\r\n",
            b"x",
        ];
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..5000 {
            let mut buf = Vec::new();
            for _ in 0..(x % 5) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                buf.extend_from_slice(pieces[(x % pieces.len() as u64) as usize]);
            }
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let found = find_hyper_error(&buf).map(|f| (f.at, f.len, f.status));
            assert_eq!(found, reference(&buf), "{}", String::from_utf8_lossy(&buf));
        }
    }
}
