//! The API's own accept loop on hyper's HTTP/1 connections: axum's
//! `serve` has no header or idle timer and no connection cap.
//!
//! A connection is closed at once, before hyper sees a byte, when its
//! peer is refused ([`Peers`]: the app network) or when
//! [`Limits::max_connections`] are open already; either is counted in
//! `controller_api_connections_refused_total{reason}` and logged at most
//! once a second, so a flood cannot fill the log.
//!
//! An accepted one has three timers, kept by [`Deadline`] from what
//! [`Activity`] records (requests in and out of the router, bytes read)
//! and counted in `controller_api_connection_timeouts_total{stage}`:
//!
//! - `header`: from the accept, and from the first byte of each later
//!   request, the head must arrive within the header timeout (hyper's own
//!   timer also runs while a kept-alive connection waits, so it cannot be
//!   told from the idle one);
//! - `idle`: between requests, the next must start within the idle
//!   timeout;
//! - `request`: a request in the router (its body read, the manifest
//!   written) must be answered within the request timeout.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, Sleep};
use tracing::{debug, warn};

use super::peers::Peers;
use crate::reconciler::Shared;

/// The bounds of the API's connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub request_timeout: Duration,
    /// Connections open at once; one more is closed as soon as accepted.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            request_timeout: Duration::from_secs(30),
            max_connections: 64,
        }
    }
}

/// hyper's read buffer, and so the largest request head (more is 431):
/// the API's heads are a few hundred bytes. hyper's minimum is 8 KiB.
const MAX_HEAD: usize = 16 << 10;
/// How long open connections get to finish at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// The labels of the refusals' metric.
const APP_NETWORK: &str = "app_network";
const AT_CAP: &str = "limit";

/// Serves the API on `listener` until `stop` resolves; then the listener
/// closes, idle connections close, and the others get
/// [`SHUTDOWN_GRACE`] to finish.
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    limits: Limits,
    peers: Peers,
    stop: impl Future<Output = ()> + Send,
) {
    let router = super::router(shared.clone());
    let places = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let (closing, closing_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut refusals = Refusals::default();
    tokio::pin!(stop);
    loop {
        let (tcp, peer) = tokio::select! {
            () = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // EMFILE and friends: wait for connections to close
                    // rather than spin.
                    warn!(error = %e, "cannot accept an API connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Dropping `tcp` closes it: no byte of it is read.
        if !peers.allows(peer.ip()) {
            shared.metrics.api_refused(APP_NETWORK);
            refusals.note(peer, APP_NETWORK);
            continue;
        }
        let Ok(place) = places.clone().try_acquire_owned() else {
            shared.metrics.api_refused(AT_CAP);
            refusals.note(peer, AT_CAP);
            continue;
        };
        let connection = Connection {
            router: router.clone(),
            shared: shared.clone(),
            limits,
            closing: closing_rx.clone(),
            _place: place,
        };
        connections.spawn(connection.run(tcp));
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    let _ = closing.send(true);
    let finished = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(SHUTDOWN_GRACE, finished).await.is_err() {
        warn!(open = connections.len(), "API connections still open at shutdown; closing them");
        connections.abort_all();
    }
}

/// Refused connections, logged at most once a second with how many
/// there were since the last line.
#[derive(Default)]
struct Refusals {
    logged: Option<Instant>,
    since: u64,
}

impl Refusals {
    fn note(&mut self, peer: SocketAddr, reason: &'static str) {
        self.since += 1;
        let now = Instant::now();
        if self.logged.is_some_and(|at| now.duration_since(at) < Duration::from_secs(1)) {
            return;
        }
        warn!(%peer, reason, refused = self.since, "API connection refused");
        self.logged = Some(now);
        self.since = 0;
    }
}

/// One accepted connection and what it needs.
struct Connection {
    router: Router,
    shared: Arc<Shared>,
    limits: Limits,
    closing: watch::Receiver<bool>,
    /// Its place among the open connections, given back when dropped.
    _place: OwnedSemaphorePermit,
}

impl Connection {
    async fn run(self, tcp: TcpStream) {
        if let Err(e) = tcp.set_nodelay(true) {
            debug!(error = %e, "cannot set TCP_NODELAY");
        }
        let activity = Arc::new(Activity::default());
        let io = TokioIo::new(Counted { io: tcp, activity: activity.clone() });
        let service = Counting { router: self.router.clone(), activity: activity.clone() };
        let mut http = hyper::server::conn::http1::Builder::new();
        http.max_buf_size(MAX_HEAD)
            // The timers are `Deadline`'s.
            .header_read_timeout(None)
            .keep_alive(true)
            .half_close(false);
        let connection = http.serve_connection(io, service);
        tokio::pin!(connection);
        let mut closing = self.closing;
        let shutdown = async move {
            let _ = closing.wait_for(|c| *c).await;
        };
        tokio::pin!(shutdown);
        let mut shutting_down = false;
        let mut deadline = Deadline::new(self.limits);
        // hyper's connection, dropped (closed) when a timer runs out;
        // the timers are checked after each of its turns, the only moments
        // requests and bytes come in.
        let expired = std::future::poll_fn(|cx| {
            if !shutting_down && shutdown.as_mut().poll(cx).is_ready() {
                shutting_down = true;
                // Closes an idle connection; one with a request answers it.
                connection.as_mut().graceful_shutdown();
            }
            if let Poll::Ready(result) = connection.as_mut().poll(cx) {
                if let Err(e) = result {
                    debug!(error = %e, "API connection ended with an error");
                }
                return Poll::Ready(None);
            }
            deadline.poll_expired(&activity, cx).map(Some)
        })
        .await;
        if let Some(stage) = expired {
            self.shared.metrics.api_timeout(stage);
            debug!(stage, "API connection timed out");
        }
    }
}

/// Requests of one connection that entered and left the router, and the
/// bytes read from it.
#[derive(Debug, Default)]
struct Activity {
    started: AtomicU64,
    finished: AtomicU64,
    bytes_read: AtomicU64,
}

/// Counts its request out of [`Activity`] when dropped: answered, or
/// given up with its connection.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn new(activity: Arc<Activity>) -> InFlight {
        activity.started.fetch_add(1, Ordering::AcqRel);
        InFlight(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.finished.fetch_add(1, Ordering::AcqRel);
    }
}

/// The router as hyper calls it, counting requests in and out.
#[derive(Clone)]
struct Counting {
    router: Router,
    activity: Arc<Activity>,
}

impl hyper::service::Service<Request<Incoming>> for Counting {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let in_flight = InFlight::new(self.activity.clone());
        let router = self.router.clone();
        Box::pin(async move {
            use tower::ServiceExt;
            let response = router.oneshot(request).await;
            drop(in_flight);
            response
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// A request head is arriving (or the connection was just opened).
    Head,
    /// Between requests, nothing of the next one read yet.
    Idle,
    /// A request is in the router.
    Busy,
}

impl Phase {
    /// The stage the timeout metric names.
    fn stage(self) -> &'static str {
        match self {
            Phase::Head => "header",
            Phase::Idle => "idle",
            Phase::Busy => "request",
        }
    }
}

/// When a connection is to be closed, recomputed after each turn of
/// hyper's connection future.
struct Deadline {
    limits: Limits,
    phase: Phase,
    started_seen: u64,
    finished_seen: u64,
    bytes_seen: u64,
    timer: Pin<Box<Sleep>>,
}

impl Deadline {
    /// A new connection: its first head is due within the header timeout.
    fn new(limits: Limits) -> Deadline {
        Deadline {
            limits,
            phase: Phase::Head,
            started_seen: 0,
            finished_seen: 0,
            bytes_seen: 0,
            timer: Box::pin(tokio::time::sleep(limits.header_timeout)),
        }
    }

    /// Follows the connection's progress, then polls the timer: ready
    /// with the stage whose time ran out.
    fn poll_expired(&mut self, activity: &Activity, cx: &mut Context<'_>) -> Poll<&'static str> {
        let started = activity.started.load(Ordering::Acquire);
        let finished = activity.finished.load(Ordering::Acquire);
        let bytes = activity.bytes_read.load(Ordering::Acquire);
        if started > finished {
            if self.phase != Phase::Busy || started != self.started_seen {
                self.started_seen = started;
                self.enter(Phase::Busy, self.limits.request_timeout);
            }
        } else if self.phase == Phase::Busy || finished != self.finished_seen {
            self.finished_seen = finished;
            self.bytes_seen = bytes;
            self.enter(Phase::Idle, self.limits.idle_timeout);
        } else if self.phase == Phase::Idle && bytes != self.bytes_seen {
            self.enter(Phase::Head, self.limits.header_timeout);
        }
        ready!(self.timer.as_mut().poll(cx));
        Poll::Ready(self.phase.stage())
    }

    fn enter(&mut self, phase: Phase, within: Duration) {
        self.phase = phase;
        self.timer.as_mut().reset(Instant::now() + within);
    }
}

/// The socket, counting the bytes read from it.
struct Counted {
    io: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Counted {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.io).poll_read(cx, buf))?;
        let read = (buf.filled().len() - before) as u64;
        this.activity.bytes_read.fetch_add(read, Ordering::AcqRel);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            request_timeout: Duration::from_secs(30),
            max_connections: 1,
        }
    }

    /// The stage whose timer would run out next, after the deadline has
    /// followed `activity`, and the time left on it.
    fn next(deadline: &mut Deadline, activity: &Activity) -> (&'static str, Duration) {
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        assert!(deadline.poll_expired(activity, &mut cx).is_pending());
        (deadline.phase.stage(), deadline.timer.deadline() - Instant::now())
    }

    #[tokio::test(start_paused = true)]
    async fn phases_follow_the_connection() {
        let activity = Arc::new(Activity::default());
        let mut deadline = Deadline::new(limits());
        // Opened: the head is due.
        assert_eq!(next(&mut deadline, &activity).0, "header");
        // Bytes of the first head do not restart its timer.
        tokio::time::advance(Duration::from_secs(4)).await;
        activity.bytes_read.fetch_add(10, Ordering::AcqRel);
        let (stage, left) = next(&mut deadline, &activity);
        assert_eq!((stage, left), ("header", Duration::from_secs(6)));
        // A request in the router.
        let request = InFlight::new(activity.clone());
        assert_eq!(next(&mut deadline, &activity), ("request", Duration::from_secs(30)));
        // Answered: idle until a byte of the next one.
        drop(request);
        assert_eq!(next(&mut deadline, &activity), ("idle", Duration::from_secs(60)));
        tokio::time::advance(Duration::from_secs(59)).await;
        activity.bytes_read.fetch_add(1, Ordering::AcqRel);
        assert_eq!(next(&mut deadline, &activity), ("header", Duration::from_secs(10)));
        // Two requests back to back between two looks: a fresh request timer.
        let first = InFlight::new(activity.clone());
        assert_eq!(next(&mut deadline, &activity).0, "request");
        tokio::time::advance(Duration::from_secs(20)).await;
        drop(first);
        let _second = InFlight::new(activity.clone());
        assert_eq!(next(&mut deadline, &activity), ("request", Duration::from_secs(30)));
    }

    #[tokio::test(start_paused = true)]
    async fn the_timer_names_the_stage_that_ran_out() {
        let activity = Activity::default();
        let mut deadline = Deadline::new(limits());
        let expired = std::future::poll_fn(|cx| deadline.poll_expired(&activity, cx)).await;
        assert_eq!(expired, "header");
    }
}
