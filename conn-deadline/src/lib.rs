//! The timers of an HTTP/1 connection served by hand, shared by the
//! service's and the controller's accept loops.
//!
//! hyper's own `header_read_timeout` also runs while a kept-alive
//! connection waits for its next request, so it cannot tell a slow request
//! head (seconds) from an idle connection (a minute or more). A
//! [`Deadline`] keeps the three timers instead, from what an [`Activity`]
//! records, and the connection task closes (drops) hyper's connection when
//! it passes:
//!
//! - from the accept, and from the first byte of each later request, the
//!   head must arrive within [`Timers::header`];
//! - between requests, the next one must start within [`Timers::idle`];
//! - while a request is in the application, it must leave it within
//!   [`Timers::busy`].
//!
//! The caller wraps the socket in [`Counted`] (bytes read), counts each
//! request with [`Activity::start`] in its hyper service, keeping the
//! [`InFlight`] guard for as long as the request is its (until the router
//! answers, or until hyper has taken the answer's last byte), and polls
//! [`Deadline::poll_expired`] after each poll of hyper's connection future:
//! those are the only moments requests and bytes come in.
//!
//! This crate knows nothing of hyper or HTTP: the callers name what their
//! timeout metrics call each timer ([`Stages`]).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Requests of one connection that entered and left the application, and
/// the bytes read from it. Shared by the socket ([`Counted`]), the
/// service (the [`InFlight`] guards) and the connection task
/// ([`Deadline`]).
#[derive(Debug, Default)]
pub struct Activity {
    started: AtomicU64,
    finished: AtomicU64,
    bytes_read: AtomicU64,
}

// Called per request and per write, across the crate boundary: inlined,
// they cost what they did when each caller had its own.
impl Activity {
    /// Counts a request in; it is counted out when the guard drops.
    #[inline]
    pub fn start(self: &Arc<Self>) -> InFlight {
        self.started.fetch_add(1, Ordering::AcqRel);
        InFlight(self.clone())
    }

    /// Whether the connection ever delivered a request to the application.
    #[inline]
    pub fn any_started(&self) -> bool {
        self.started.load(Ordering::Acquire) > 0
    }

    /// Whether a request is in the application now.
    #[inline]
    pub fn is_busy(&self) -> bool {
        let (started, finished) = self.requests();
        started > finished
    }

    /// Requests started and finished. `finished` is read first, so
    /// `started` is never behind it.
    #[inline]
    fn requests(&self) -> (u64, u64) {
        let finished = self.finished.load(Ordering::Acquire);
        (self.started.load(Ordering::Acquire), finished)
    }
}

/// Counts its request out of [`Activity`] when dropped: done, or given up
/// with its connection.
#[derive(Debug)]
pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    #[inline]
    fn drop(&mut self) {
        self.0.finished.fetch_add(1, Ordering::AcqRel);
    }
}

/// How long each phase of a connection may last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timers {
    /// From the accept, or from the first byte of a later request, to its
    /// head parsed (the request in the application).
    pub header: Duration,
    /// From a request out of the application to the first byte of the next.
    pub idle: Duration,
    /// From a request into the application to its [`InFlight`] dropped.
    pub busy: Duration,
}

/// What a caller's timeout metric calls each timer: its label values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stages {
    pub header: &'static str,
    pub idle: &'static str,
    pub busy: &'static str,
}

impl Stages {
    /// `header` and `idle`, as every caller names them, and the caller's
    /// name for the busy stage: what it spans is the caller's (an answer
    /// taken by the client, or a request in the router), and so is its word.
    pub const fn with_busy(busy: &'static str) -> Stages {
        Stages { header: "header", idle: "idle", busy }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// A request head is arriving (or the connection was just opened).
    Head,
    /// Between requests, nothing of the next one read yet.
    Idle,
    /// A request is in the application.
    Busy,
}

impl Phase {
    fn stage(self, stages: &Stages) -> &'static str {
        match self {
            Phase::Head => stages.header,
            Phase::Idle => stages.idle,
            Phase::Busy => stages.busy,
        }
    }
}

/// When a connection is to be closed, recomputed by the connection task
/// after each turn of hyper's connection future. One timer, reset at each
/// change of phase, so following a connection allocates nothing.
#[derive(Debug)]
pub struct Deadline {
    timers: Timers,
    stages: Stages,
    phase: Phase,
    started_seen: u64,
    finished_seen: u64,
    bytes_seen: u64,
    timer: Pin<Box<Sleep>>,
}

impl Deadline {
    /// A new connection: its first head is due within the header timeout.
    pub fn new(timers: Timers, stages: Stages) -> Deadline {
        Deadline {
            timers,
            stages,
            phase: Phase::Head,
            started_seen: 0,
            finished_seen: 0,
            bytes_seen: 0,
            timer: Box::pin(tokio::time::sleep(timers.header)),
        }
    }

    /// Follows the connection's progress, then polls the timer: ready with
    /// the stage (from [`Stages`]) whose time ran out.
    pub fn poll_expired(
        &mut self,
        activity: &Activity,
        cx: &mut Context<'_>,
    ) -> Poll<&'static str> {
        let (started, finished) = activity.requests();
        let bytes = activity.bytes_read.load(Ordering::Acquire);
        if started > finished {
            // A request started since the last look (even if the one before
            // it finished in between) gets a fresh timer.
            if self.phase != Phase::Busy || started != self.started_seen {
                self.started_seen = started;
                self.enter(Phase::Busy, self.timers.busy);
            }
        } else if self.phase == Phase::Busy || finished != self.finished_seen {
            self.finished_seen = finished;
            self.bytes_seen = bytes;
            self.enter(Phase::Idle, self.timers.idle);
        } else if self.phase == Phase::Idle && bytes != self.bytes_seen {
            // Bytes during a head do not restart its timer: only the first
            // byte after an idle spell does.
            self.enter(Phase::Head, self.timers.header);
        }
        ready!(self.timer.as_mut().poll(cx));
        Poll::Ready(self.phase.stage(&self.stages))
    }

    fn enter(&mut self, phase: Phase, within: Duration) {
        self.phase = phase;
        self.timer.as_mut().reset(Instant::now() + within);
    }
}

/// A socket (or a wrapper of one) that counts into [`Activity`] the bytes
/// read through it; writes pass through untouched.
#[derive(Debug)]
pub struct Counted<IO> {
    io: IO,
    activity: Arc<Activity>,
}

impl<IO> Counted<IO> {
    pub fn new(io: IO, activity: Arc<Activity>) -> Self {
        Counted { io, activity }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Counted<IO> {
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

impl<IO: AsyncWrite + Unpin> AsyncWrite for Counted<IO> {
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

    const STAGES: Stages = Stages::with_busy("busy");

    fn timers() -> Timers {
        Timers {
            header: Duration::from_secs(10),
            idle: Duration::from_secs(60),
            busy: Duration::from_secs(30),
        }
    }

    /// The stage whose timer would run out next, after the deadline has
    /// followed `activity`, and the time left on it.
    fn next(deadline: &mut Deadline, activity: &Activity) -> (&'static str, Duration) {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(deadline.poll_expired(activity, &mut cx).is_pending());
        (deadline.phase.stage(&STAGES), deadline.timer.deadline() - Instant::now())
    }

    fn read(activity: &Activity, bytes: u64) {
        activity.bytes_read.fetch_add(bytes, Ordering::AcqRel);
    }

    #[tokio::test(start_paused = true)]
    async fn phases_follow_the_connection() {
        let activity = Arc::new(Activity::default());
        let mut deadline = Deadline::new(timers(), STAGES);
        // Opened: the head is due.
        assert_eq!(next(&mut deadline, &activity).0, "header");
        // Bytes of the first head do not restart its timer.
        tokio::time::advance(Duration::from_secs(4)).await;
        read(&activity, 10);
        assert_eq!(next(&mut deadline, &activity), ("header", Duration::from_secs(6)));
        // A request in the application.
        let request = activity.start();
        assert!(activity.is_busy() && activity.any_started());
        assert_eq!(next(&mut deadline, &activity), ("busy", Duration::from_secs(30)));
        // Done: idle until a byte of the next one.
        drop(request);
        assert!(!activity.is_busy());
        assert_eq!(next(&mut deadline, &activity), ("idle", Duration::from_secs(60)));
        tokio::time::advance(Duration::from_secs(59)).await;
        read(&activity, 1);
        assert_eq!(next(&mut deadline, &activity), ("header", Duration::from_secs(10)));
        // Two requests back to back between two looks: a fresh busy timer.
        let first = activity.start();
        assert_eq!(next(&mut deadline, &activity).0, "busy");
        tokio::time::advance(Duration::from_secs(20)).await;
        drop(first);
        let _second = activity.start();
        assert_eq!(next(&mut deadline, &activity), ("busy", Duration::from_secs(30)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_that_came_and_went_between_two_looks_restarts_the_idle_timer() {
        let activity = Arc::new(Activity::default());
        let mut deadline = Deadline::new(timers(), STAGES);
        drop(activity.start());
        assert_eq!(next(&mut deadline, &activity), ("idle", Duration::from_secs(60)));
        tokio::time::advance(Duration::from_secs(50)).await;
        read(&activity, 100);
        drop(activity.start());
        assert_eq!(next(&mut deadline, &activity), ("idle", Duration::from_secs(60)));
    }

    #[tokio::test(start_paused = true)]
    async fn the_timer_names_the_stage_that_ran_out() {
        let activity = Activity::default();
        let mut deadline = Deadline::new(timers(), Stages::with_busy("response"));
        let expired = std::future::poll_fn(|cx| deadline.poll_expired(&activity, cx)).await;
        assert_eq!(expired, "header");
    }

    #[tokio::test]
    async fn counted_counts_what_is_read_through_it_and_not_what_is_written() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let activity = Arc::new(Activity::default());
        let (ours, mut theirs) = tokio::io::duplex(64);
        let mut counted = Counted::new(ours, activity.clone());
        theirs.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        let mut buf = [0u8; 64];
        let n = counted.read(&mut buf).await.unwrap();
        counted.write_all(b"HTTP/1.1 200 OK\r\n").await.unwrap();
        assert_eq!((n, activity.bytes_read.load(Ordering::Acquire)), (16, 16));
    }
}
