//! Bounds on what requests and connections may cost, with the command
//! line's defaults. A leaf module: `config` fills them in from flags and
//! `state`, `api`, `admission` and `server` enforce them, without importing
//! each other.

use std::time::Duration;

/// Batches of at most this many rows are "small": they are what
/// interactive clients send, and `prediction_duration_seconds` tells their
/// latency (`batch="small"`) from that of bulk batches (`batch="large"`).
pub const SMALL_BATCH_ROWS: usize = 100;

/// A declared body of at most this many bytes is admitted as a small
/// request (from the whole budget, its reserve included) and priced on the
/// async worker. [`SMALL_BATCH_ROWS`] rows as clients write them take
/// 13–20 KiB (the documented row is 133 bytes; full-precision coordinates
/// make ~200).
pub const SMALL_BODY_BYTES: usize = 20 * 1024;

/// Bounds on what requests may cost.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_batch_rows: usize,
    pub max_body_bytes: usize,
    /// What the predict requests admitted at once may cost together, in
    /// bytes of memory, each priced from its declared length before its
    /// body is read (`admission::Cost`).
    pub prediction_budget_bytes: usize,
    /// The part of the budget that only small requests may use, so large
    /// batches cannot crowd them out.
    pub small_reserve_bytes: usize,
    /// Large requests that may wait for budget at once; one more is shed.
    pub max_waiting_predictions: usize,
    /// How long a large request may wait for budget before it is shed.
    pub admission_wait: Duration,
    /// Time for a predict body to arrive once it is admitted (408 after).
    pub body_timeout: Duration,
    /// Time to price a batch once its body has arrived (503 after).
    pub request_timeout: Duration,
}

impl Limits {
    /// The defaults of the command line (`--max-batch-rows` and friends).
    pub const DEFAULT: Limits = Limits {
        max_batch_rows: 10_000,
        max_body_bytes: 4 * 1024 * 1024,
        prediction_budget_bytes: 64 * 1024 * 1024,
        small_reserve_bytes: 16 * 1024 * 1024,
        max_waiting_predictions: 64,
        admission_wait: Duration::from_secs(2),
        body_timeout: Duration::from_secs(10),
        request_timeout: Duration::from_secs(10),
    };

    /// The part of the budget large requests may hold together.
    pub fn large_budget_bytes(&self) -> usize {
        self.prediction_budget_bytes.saturating_sub(self.small_reserve_bytes)
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits::DEFAULT
    }
}

/// Bounds on connections, as opposed to requests ([`Limits`]).
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    pub max_connections: usize,
    /// The largest request head, and each connection's read buffer.
    pub max_header_bytes: usize,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub shutdown_grace: Duration,
    pub drain_deadline: Duration,
}

impl ConnLimits {
    /// hyper refuses a smaller read buffer.
    pub const MIN_HEADER_BYTES: usize = 8192;

    /// The defaults of the command line.
    pub const DEFAULT: ConnLimits = ConnLimits {
        max_connections: 1024,
        max_header_bytes: 16 * 1024,
        header_timeout: Duration::from_secs(10),
        // nginx's upstream keepalive_timeout is 30 s (nginx/upstream_*.tmpl).
        idle_timeout: Duration::from_secs(75),
        shutdown_grace: Duration::from_millis(500),
        drain_deadline: Duration::from_secs(10),
    };
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits::DEFAULT
    }
}
