//! The API's own accept loop on hyper's HTTP/1 connections: axum's
//! `serve` has no header or idle timer and no connection cap.
//!
//! A connection is closed at once, before hyper sees a byte, when its
//! peer is refused ([`Peers`]: the app network) or when
//! [`Limits::max_connections`] are open already; either is counted in
//! `controller_api_connections_refused_total{reason}` and logged at most
//! once a second, so a flood cannot fill the log.
//!
//! An accepted one has three timers, kept by a [`Deadline`] (the
//! `conn_deadline` crate, which the service shares) from what its
//! [`Activity`] records (requests in and out of the router, bytes read),
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

use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use axum::Router;
use conn_deadline::{Activity, Counted, Deadline, Stages, Timers};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
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
/// The stages of the timeouts' metric: the busy one is a request in the
/// router, so it is the `request`'s.
const STAGES: Stages = Stages::with_busy("request");

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
        let io = TokioIo::new(Counted::new(tcp, activity.clone()));
        let (router, requests) = (self.router.clone(), activity.clone());
        // The router as hyper calls it, each request counted in until the
        // router answers (or hyper drops the call with its connection).
        let service = hyper::service::service_fn(move |request| {
            let in_flight = requests.start();
            let router = router.clone();
            async move {
                use tower::ServiceExt;
                let response = router.oneshot(request).await;
                drop(in_flight);
                response
            }
        });
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
        let timers = Timers {
            header: self.limits.header_timeout,
            idle: self.limits.idle_timeout,
            busy: self.limits.request_timeout,
        };
        let mut deadline = Deadline::new(timers, STAGES);
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
