//! Bounds on what requests and connections may cost, with the command
//! line's defaults. A leaf module: `config` fills them in from flags and
//! `state`, `api` and `server` enforce them, without importing each other.

use std::time::Duration;

/// Bounds on what requests may cost.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_batch_rows: usize,
    pub max_body_bytes: usize,
    /// Predict requests past their content-type and size checks at once;
    /// one more is shed with 503 before its body is read.
    pub max_concurrent_predictions: usize,
    /// Time for a predict body to arrive once its head has (408 after).
    pub body_timeout: Duration,
    /// Time to price a batch once its body has arrived (503 after).
    pub request_timeout: Duration,
}

impl Limits {
    /// The defaults of the command line (`--max-batch-rows` and friends).
    pub const DEFAULT: Limits = Limits {
        max_batch_rows: 10_000,
        max_body_bytes: 4 * 1024 * 1024,
        max_concurrent_predictions: 16,
        body_timeout: Duration::from_secs(10),
        request_timeout: Duration::from_secs(10),
    };
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
