//! Serving: load the model, bind, accept connections within limits, and
//! on a shutdown signal drain them in three steps.
//!
//! Shutdown: the listener is closed at once. For a short grace period,
//! requests that arrive on connections already open (a client may have
//! sent one on a kept-alive connection just as the signal came) are still
//! answered, with `Connection: close`. Then every connection with no
//! request in the application is closed (idle, or a head half sent), and
//! those with one finish it and close. The process exits 0 when every
//! request that reached the application was answered, or 1 if some were
//! still running at the drain deadline.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, Request, Response, header};
use conn_deadline::{Activity, Counted, Deadline, InFlight, Timers};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

use crate::app;
use crate::config::ServeArgs;
use crate::conn::{self, Watched};
use crate::limits::ConnLimits;
use crate::shutdown;
use crate::state::{AppState, Deployment, ModelSlot};

/// Runs the service until it is told to stop. Returns an error if it
/// cannot start, or if requests were still running at the drain deadline.
pub async fn run(args: &ServeArgs) -> Result<()> {
    let limits = args.limits()?;
    let mut conn_limits = args.conn_limits()?;
    let open_files = raise_open_file_limit();
    if let Some(files) = open_files {
        let usable = files.saturating_sub(RESERVED_FILES).max(1);
        if usable < conn_limits.max_connections {
            tracing::warn!(
                max_connections = conn_limits.max_connections,
                open_file_limit = files,
                using = usable,
                "--max-connections is more than the open-file limit allows"
            );
            conn_limits.max_connections = usable;
        }
    }

    let stop = shutdown::install();
    tracing::info!(
        service_version = env!("CARGO_PKG_VERSION"),
        color = args.color.map_or("-", bluegreen::Color::as_str),
        release = args.release.as_deref().unwrap_or("-"),
        max_batch_rows = limits.max_batch_rows,
        max_body_bytes = limits.max_body_bytes,
        prediction_budget_bytes = limits.prediction_budget_bytes,
        small_reserve_bytes = limits.small_reserve_bytes,
        max_waiting_predictions = limits.max_waiting_predictions,
        max_connections = conn_limits.max_connections,
        "starting"
    );
    // File IO: on a blocking thread, never on an async worker.
    let path = args.model.clone();
    let model = tokio::task::spawn_blocking(move || ModelSlot::load(path.as_deref()))
        .await
        .context("the model loading task failed")?;
    match &model {
        ModelSlot::Loaded(loaded) => tracing::info!(
            path = %args.model.as_deref().map(|p| p.display().to_string()).unwrap_or_default(),
            model_version = %loaded.artifact().model_version,
            feature_set = %loaded.artifact().feature_set,
            "model loaded"
        ),
        ModelSlot::Unavailable(reason) => tracing::error!(
            reason = %reason,
            "no model loaded: serving / and /metrics only; /ready, /model and predict answer 503"
        ),
    }
    let deployment = Deployment { color: args.color, version: args.release.clone() };
    let state = AppState::new(model, deployment, limits);

    let addr = SocketAddr::new(args.host, args.port);
    let listener =
        TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
    let local = listener.local_addr().context("cannot read the bound address")?;
    tracing::info!(addr = %local, "listening");

    serve(listener, state, conn_limits, stop).await
}

/// File descriptors kept for everything but client connections (the
/// listener, the runtime, the model file, logs).
const RESERVED_FILES: usize = 32;

/// Raises the soft limit on open files to the hard one, and returns it:
/// past it `accept` fails, and the connection limit (with the room made
/// for new clients) would never be reached.
fn raise_open_file_limit() -> Option<usize> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct passed, which we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return None;
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
        // SAFETY: setrlimit reads the struct passed.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit = raised;
        }
    }
    usize::try_from(limit.rlim_cur).ok()
}

/// What every connection task is told about shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Serving,
    /// The grace period is over: close unless a request is in the application.
    Closing,
}

/// Serves the application on `listener` until `stop` resolves, then drains
/// (see the module documentation).
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    limits: ConnLimits,
    stop: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let router = app::router(state.clone());
    let in_flight = Arc::new(AtomicUsize::new(0));
    let (stage_tx, stage_rx) = watch::channel(Stage::Serving);
    let open = Arc::new(Open::default());
    let mut connections = JoinSet::new();
    tokio::pin!(stop);
    'accept: loop {
        // Room for one more. At the limit, the oldest connection that never
        // delivered a request is closed to make it, once the new one is
        // accepted, so clients that connect and send nothing (or half a
        // head) cannot keep others out; with none such, wait for one to
        // close (further clients wait in the kernel's accept queue).
        loop {
            let closed = open.closed.notified();
            tokio::pin!(closed);
            closed.as_mut().enable();
            if open.count.load(Ordering::Acquire) < limits.max_connections
                || open.victim().is_some()
            {
                break;
            }
            tokio::select! {
                () = &mut stop => break 'accept,
                () = closed => {}
            }
        }
        let tcp = tokio::select! {
            () = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    // EMFILE and friends: wait for connections to close
                    // rather than spin.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        if open.count.load(Ordering::Acquire) >= limits.max_connections
            && let Some(victim) = open.victim()
        {
            victim.evicted.store(true, Ordering::Release);
            victim.evict.notify_one();
            state.metrics.record_connection_evicted();
        }
        let requests = Arc::new(Activity::default());
        let entry = Arc::new(Entry {
            requests: requests.clone(),
            evict: Notify::new(),
            evicted: AtomicBool::new(false),
        });
        let place = open.register(&entry, limits.max_connections);
        let connection = Connection {
            router: router.clone(),
            state: state.clone(),
            in_flight: in_flight.clone(),
            limits,
            stage: stage_rx.clone(),
            requests,
            entry,
            _place: place,
        };
        connections.spawn(connection.run(tcp));
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    state.draining.store(true, Ordering::Relaxed);
    tracing::info!(
        connections = connections.len(),
        requests = in_flight.load(Ordering::Acquire),
        "shutdown requested: listener closed, answering what arrives with Connection: close"
    );

    let grace = limits.shutdown_grace.min(limits.drain_deadline);
    let deadline = tokio::time::Instant::now() + limits.drain_deadline;
    if tokio::time::timeout(grace, join_all(&mut connections)).await.is_err() {
        let _ = stage_tx.send(Stage::Closing);
        let _ = tokio::time::timeout_at(deadline, join_all(&mut connections)).await;
    }
    let unfinished = in_flight.load(Ordering::Acquire);
    connections.abort_all();
    if unfinished > 0 {
        bail!(
            "{unfinished} requests still running {:.1} s after the shutdown signal; exiting anyway",
            limits.drain_deadline.as_secs_f64()
        );
    }
    tracing::info!("all requests finished; exiting");
    Ok(())
}

async fn join_all(set: &mut JoinSet<()>) {
    while set.join_next().await.is_some() {}
}

/// One accepted connection and what it needs.
struct Connection {
    router: Router,
    state: Arc<AppState>,
    in_flight: Arc<AtomicUsize>,
    limits: ConnLimits,
    stage: watch::Receiver<Stage>,
    requests: Arc<Activity>,
    entry: Arc<Entry>,
    _place: Place,
}

/// The open connections, oldest first.
#[derive(Default)]
struct Open {
    entries: Mutex<VecDeque<Weak<Entry>>>,
    count: AtomicUsize,
    /// Notified each time a connection closes.
    closed: Notify,
}

/// What the accept loop knows of one connection.
struct Entry {
    requests: Arc<Activity>,
    /// Notified to make the connection close at once.
    evict: Notify,
    evicted: AtomicBool,
}

/// A connection's place among the open ones, given back when dropped.
struct Place(Arc<Open>);

impl Drop for Place {
    fn drop(&mut self) {
        self.0.count.fetch_sub(1, Ordering::AcqRel);
        self.0.closed.notify_one();
    }
}

impl Open {
    fn register(self: &Arc<Self>, entry: &Arc<Entry>, max: usize) -> Place {
        self.count.fetch_add(1, Ordering::AcqRel);
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.len() >= 2 * max {
            entries.retain(|e| e.strong_count() > 0);
        }
        entries.push_back(Arc::downgrade(entry));
        Place(self.clone())
    }

    /// The connection to close to make room: the oldest that never
    /// delivered a request (silent, or a head half sent), unless one is
    /// already closing for that. Connections that were served keep their
    /// place until their idle timer (one may be about to carry nginx's next
    /// request).
    fn victim(&self) -> Option<Arc<Entry>> {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        while entries.front().is_some_and(|e| e.strong_count() == 0) {
            entries.pop_front();
        }
        let mut pick = None;
        for entry in entries.iter().filter_map(Weak::upgrade) {
            if entry.evicted.load(Ordering::Acquire) {
                // One is on its way out: its place is the one to take.
                return None;
            }
            if pick.is_none() && !entry.requests.any_started() {
                pick = Some(entry);
            }
        }
        pick
    }
}

impl Connection {
    async fn run(mut self, tcp: TcpStream) {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        let _open = self.state.metrics.connection_opened();
        let requests = self.requests.clone();
        let request = &self.state.limits;
        let timers = Timers {
            header: self.limits.header_timeout,
            idle: self.limits.idle_timeout,
            busy: request.admission_wait
                + request.body_timeout
                + request.request_timeout
                + self.limits.idle_timeout,
        };
        // Bytes are counted above `Watched`: what it discards on a close
        // is no request's.
        let socket = Watched::new(tcp, requests.clone(), self.state.clone());
        let io = Counted::new(socket, requests.clone());
        let service = Service {
            router: self.router.clone(),
            state: self.state.clone(),
            requests: requests.clone(),
            in_flight: self.in_flight.clone(),
        };
        let mut http = hyper::server::conn::http1::Builder::new();
        http.max_buf_size(self.limits.max_header_bytes)
            // The timers are `Deadline`'s (hyper's would cut idle
            // connections at the header timeout).
            .header_read_timeout(None)
            .keep_alive(true)
            .half_close(false)
            // One contiguous buffer per write, so `Watched` sees hyper's
            // error answers whole.
            .writev(false);
        let connection = http.serve_connection(TokioIo::new(io), service);
        tokio::pin!(connection);
        // hyper's connection, closed (dropped) when a timer of `Deadline`
        // runs out; checked after each of its turns, which are the only
        // moments requests and bytes come in.
        let mut deadline = Deadline::new(timers, conn::STAGES);
        let graceful = AtomicBool::new(false);
        let mut graceful_applied = false;
        let mut watched = std::future::poll_fn(|cx| {
            if !graceful_applied && graceful.load(Ordering::Relaxed) {
                graceful_applied = true;
                connection.as_mut().graceful_shutdown();
            }
            if let Poll::Ready(result) = connection.as_mut().poll(cx) {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return Poll::Ready(None);
            }
            deadline.poll_expired(&requests, cx).map(Some)
        });
        let mut closing = false;
        loop {
            tokio::select! {
                ended = &mut watched => {
                    if let Some(stage) = ended {
                        self.state.metrics.record_connection_timeout(stage);
                        tracing::debug!(stage, "connection timed out");
                    }
                    return;
                }
                () = self.entry.evict.notified() => {
                    tracing::debug!("connection closed to make room for a new one");
                    return;
                }
                changed = self.stage.changed(), if !closing => {
                    closing = changed.is_err() || *self.stage.borrow() == Stage::Closing;
                    if closing {
                        if !requests.any_started() {
                            // Nothing was ever asked here (hyper would wait
                            // for a first request): close at once.
                            return;
                        }
                        // Closes an idle connection at once; one with a
                        // request in flight answers it and closes.
                        graceful.store(true, Ordering::Relaxed);
                    }
                }
            }
        }
    }
}

/// The application as hyper calls it, counting requests in and out.
#[derive(Clone)]
struct Service {
    router: Router,
    state: Arc<AppState>,
    requests: Arc<Activity>,
    in_flight: Arc<AtomicUsize>,
}

impl hyper::service::Service<Request<Incoming>> for Service {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let done = Done::new(self.requests.start(), self.in_flight.clone());
        let router = self.router.clone();
        let state = self.state.clone();
        Box::pin(async move {
            use tower::ServiceExt;
            let Ok(mut response) = router.oneshot(request).await;
            if state.draining.load(Ordering::Relaxed) {
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            Ok(response.map(|body| Body::new(Tracked { body, pending: Bytes::new(), _done: done })))
        })
    }
}

/// A request counted in flight until it is answered or abandoned.
struct Done {
    _request: InFlight,
    in_flight: Arc<AtomicUsize>,
}

impl Done {
    fn new(request: InFlight, in_flight: Arc<AtomicUsize>) -> Done {
        in_flight.fetch_add(1, Ordering::AcqRel);
        Done { _request: request, in_flight }
    }
}

impl Drop for Done {
    fn drop(&mut self) {
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its request counted until hyper has taken
/// all of it, and hands it over in pieces of at most [`PIECE`] bytes: hyper
/// copies each data frame whole into the connection's write buffer, so
/// the buffer of a client that reads slowly stays small (the rest stays in
/// the body, where a prediction's answer counts against its charge).
struct Tracked {
    body: Body,
    pending: Bytes,
    _done: Done,
}

/// The largest piece of an answer handed to hyper at a time.
const PIECE: usize = 16 * 1024;

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        if this.pending.is_empty() {
            match std::task::ready!(Pin::new(&mut this.body).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => this.pending = data,
                    Err(frame) => return Poll::Ready(Some(Ok(frame))),
                },
                other => return Poll::Ready(other),
            }
        }
        let piece = this.pending.split_to(this.pending.len().min(PIECE));
        Poll::Ready(Some(Ok(http_body::Frame::data(piece))))
    }

    fn is_end_stream(&self) -> bool {
        self.pending.is_empty() && http_body::Body::is_end_stream(&self.body)
    }

    fn size_hint(&self) -> http_body::SizeHint {
        let inner = http_body::Body::size_hint(&self.body);
        let pending = self.pending.len() as u64;
        let mut hint = http_body::SizeHint::new();
        hint.set_lower(inner.lower() + pending);
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper + pending);
        }
        hint
    }
}
