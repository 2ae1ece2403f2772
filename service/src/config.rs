//! Command line and environment: everything an operator can set, parsed
//! once at the edge into plain values the rest of the service uses.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

use bluegreen::Color;
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::admission::Cost;
use crate::limits::{ConnLimits, Limits};

/// The port the original service listened on; scripts and images rely on it.
pub const DEFAULT_PORT: u16 = 32000;

/// `service [OPTIONS]` serves; `service healthcheck` probes a running one.
#[derive(Debug, Parser)]
#[command(
    name = "service",
    version,
    about = "Serves taxi-fare predictions from a model artifact over HTTP",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Exit 0 when the local instance answers GET /ready with 200, else 1
    /// (for a container HEALTHCHECK: the image needs no curl).
    Healthcheck(HealthcheckArgs),
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// The model artifact (JSON) to serve. Without one, or when it cannot be
    /// loaded, the service still answers `/` and reports why.
    #[arg(long, env = "MODEL_PATH", value_name = "PATH")]
    pub model: Option<PathBuf>,

    /// Address to listen on.
    #[arg(long, env = "HOST", default_value_t = IpAddr::V4(Ipv4Addr::UNSPECIFIED))]
    pub host: IpAddr,

    /// Port to listen on (0 picks a free one; the bound address is logged).
    #[arg(long, env = "PORT", default_value_t = DEFAULT_PORT)]
    pub port: u16,

    /// Deployment color (blue/green) reported on `/`, set by the controller.
    #[arg(long, env = "COLOR")]
    pub color: Option<Color>,

    /// Release (image tag) reported on `/` as `version`, set by the controller.
    #[arg(long = "release", env = "VERSION", value_name = "TAG")]
    pub release: Option<String>,

    /// Largest number of rows one predict request may carry (more → 422).
    #[arg(long, env = "MAX_BATCH_ROWS", default_value_t = Limits::DEFAULT.max_batch_rows)]
    pub max_batch_rows: usize,

    /// Largest request body in bytes (more → 413).
    #[arg(long, env = "MAX_BODY_BYTES", default_value_t = Limits::DEFAULT.max_body_bytes)]
    pub max_body_bytes: usize,

    /// Memory in bytes the predict requests in flight may cost together:
    /// each is charged its body plus what its rows may take, from its
    /// declared length before its body is read (a chunked body as one at
    /// --max-body-bytes). A request that does not fit is answered 503
    /// `overloaded` with Retry-After, unread. Bounds memory: see
    /// ARCHITECTURE.md for the formula.
    #[arg(
        long,
        env = "PREDICTION_BUDGET_BYTES",
        default_value_t = Limits::DEFAULT.prediction_budget_bytes
    )]
    pub prediction_budget_bytes: usize,

    /// The part of --prediction-budget-bytes that only small requests (a
    /// declared body of at most 20 KiB, ~100 rows) may use, so large
    /// batches cannot crowd them out. Small requests never wait: they are
    /// admitted at once or shed.
    #[arg(long, env = "SMALL_RESERVE_BYTES", default_value_t = Limits::DEFAULT.small_reserve_bytes)]
    pub small_reserve_bytes: usize,

    /// Large predict requests that may wait in line (first come, first
    /// served) for room in the budget; one more is shed at once (0: never
    /// wait).
    #[arg(
        long,
        env = "MAX_WAITING_PREDICTIONS",
        default_value_t = Limits::DEFAULT.max_waiting_predictions
    )]
    pub max_waiting_predictions: usize,

    /// A large predict request still waiting for room this many seconds
    /// after it arrived is shed (503 `overloaded`, Retry-After).
    #[arg(
        long,
        env = "ADMISSION_WAIT_SECS",
        default_value_t = Limits::DEFAULT.admission_wait.as_secs_f64()
    )]
    pub admission_wait_secs: f64,

    /// A predict body still arriving this many seconds after the request
    /// was admitted is answered 408.
    #[arg(
        long,
        env = "BODY_TIMEOUT_SECS",
        default_value_t = Limits::DEFAULT.body_timeout.as_secs_f64()
    )]
    pub body_timeout_secs: f64,

    /// Pricing still running this many seconds after the body arrived is
    /// stopped and answered 503.
    #[arg(
        long,
        env = "REQUEST_TIMEOUT_SECS",
        default_value_t = Limits::DEFAULT.request_timeout.as_secs_f64()
    )]
    pub request_timeout_secs: f64,

    /// Open connections at once; more wait in the kernel's accept queue.
    #[arg(long, env = "MAX_CONNECTIONS", default_value_t = ConnLimits::DEFAULT.max_connections)]
    pub max_connections: usize,

    /// Largest request head (request line and headers) in bytes, also the
    /// read buffer of each connection; more is answered 431 (at least 8192).
    #[arg(long, env = "MAX_HEADER_BYTES", default_value_t = ConnLimits::DEFAULT.max_header_bytes)]
    pub max_header_bytes: usize,

    /// A request head must arrive in full within this many seconds of its
    /// first byte (or of the connection's opening), else the connection is
    /// closed.
    #[arg(
        long,
        env = "HEADER_TIMEOUT_SECS",
        default_value_t = ConnLimits::DEFAULT.header_timeout.as_secs_f64()
    )]
    pub header_timeout_secs: f64,

    /// A kept-alive connection with no new request for this many seconds
    /// is closed. Longer than nginx's upstream `keepalive_timeout` (30 s),
    /// so nginx always closes first and never reuses a connection the
    /// service is closing.
    #[arg(
        long,
        env = "IDLE_TIMEOUT_SECS",
        default_value_t = ConnLimits::DEFAULT.idle_timeout.as_secs_f64()
    )]
    pub idle_timeout_secs: f64,

    /// After SIGTERM/SIGINT, requests that arrive on open connections are
    /// still answered (with `Connection: close`) for this many seconds;
    /// then connections with no request in flight are closed.
    #[arg(
        long,
        env = "SHUTDOWN_GRACE_SECS",
        default_value_t = ConnLimits::DEFAULT.shutdown_grace.as_secs_f64()
    )]
    pub shutdown_grace_secs: f64,

    /// After SIGTERM/SIGINT, requests in flight get this many seconds to
    /// finish before the process exits anyway (with status 1).
    #[arg(
        long,
        env = "SHUTDOWN_TIMEOUT_SECS",
        default_value_t = ConnLimits::DEFAULT.drain_deadline.as_secs_f64()
    )]
    pub shutdown_timeout_secs: f64,

    /// Runtime worker threads (default: the number of available cores).
    #[arg(long, env = "WORKER_THREADS")]
    pub worker_threads: Option<usize>,

    /// Log format on stderr.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

#[derive(Debug, Clone, Args)]
pub struct HealthcheckArgs {
    /// Port of the local instance to probe.
    #[arg(long, env = "PORT", default_value_t = DEFAULT_PORT)]
    pub port: u16,

    /// Give up after this many seconds.
    #[arg(long, default_value_t = 2.0)]
    pub timeout_secs: f64,
}

impl ServeArgs {
    /// The request limits, checked.
    pub fn limits(&self) -> anyhow::Result<Limits> {
        let limits = Limits {
            max_batch_rows: self.max_batch_rows,
            max_body_bytes: self.max_body_bytes,
            prediction_budget_bytes: self.prediction_budget_bytes,
            small_reserve_bytes: self.small_reserve_bytes,
            max_waiting_predictions: self.max_waiting_predictions,
            admission_wait: seconds("admission-wait-secs", self.admission_wait_secs)?,
            body_timeout: seconds("body-timeout-secs", self.body_timeout_secs)?,
            request_timeout: seconds("request-timeout-secs", self.request_timeout_secs)?,
        };
        anyhow::ensure!(limits.max_batch_rows > 0, "--max-batch-rows must be at least 1");
        anyhow::ensure!(
            limits.small_reserve_bytes < limits.prediction_budget_bytes,
            "--small-reserve-bytes ({}) must be less than --prediction-budget-bytes ({})",
            limits.small_reserve_bytes,
            limits.prediction_budget_bytes
        );
        // Else a legal request at the size limit could never be admitted.
        let largest = Cost::largest(&limits).bytes;
        anyhow::ensure!(
            limits.large_budget_bytes() >= largest,
            "--prediction-budget-bytes less --small-reserve-bytes is {} bytes, less than one \
             request at --max-body-bytes and --max-batch-rows costs ({largest} bytes)",
            limits.large_budget_bytes()
        );
        Ok(limits)
    }

    /// The connection limits, checked.
    pub fn conn_limits(&self) -> anyhow::Result<ConnLimits> {
        let limits = ConnLimits {
            max_connections: self.max_connections,
            max_header_bytes: self.max_header_bytes,
            header_timeout: seconds("header-timeout-secs", self.header_timeout_secs)?,
            idle_timeout: seconds("idle-timeout-secs", self.idle_timeout_secs)?,
            shutdown_grace: seconds("shutdown-grace-secs", self.shutdown_grace_secs)?,
            drain_deadline: seconds("shutdown-timeout-secs", self.shutdown_timeout_secs)?,
        };
        anyhow::ensure!(limits.max_connections > 0, "--max-connections must be at least 1");
        anyhow::ensure!(
            limits.max_header_bytes >= ConnLimits::MIN_HEADER_BYTES,
            "--max-header-bytes must be at least {}",
            ConnLimits::MIN_HEADER_BYTES
        );
        Ok(limits)
    }
}

/// A validated positive duration from a seconds flag.
pub fn seconds(name: &str, value: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(value).ok().filter(|d| !d.is_zero()).ok_or_else(|| {
        anyhow::anyhow!("--{name} must be a positive number of seconds, not {value}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Read from clap's definition rather than a parse, so the environment
    /// of the test run (PORT, HOST, …) cannot change the answer.
    fn default_of(name: &str) -> String {
        use clap::CommandFactory;
        let command = Cli::command();
        let arg = command.get_arguments().find(|a| a.get_id() == name).unwrap();
        arg.get_default_values()[0].to_string_lossy().into_owned()
    }

    #[test]
    fn defaults_match_the_documented_command_line() {
        assert_eq!(default_of("port"), "32000");
        assert_eq!(default_of("host"), "0.0.0.0");
        assert_eq!(default_of("max_batch_rows"), "10000");
        assert_eq!(default_of("prediction_budget_bytes"), (64 << 20).to_string());
        assert_eq!(default_of("small_reserve_bytes"), (16 << 20).to_string());
        assert_eq!(default_of("max_waiting_predictions"), "64");
        assert_eq!(default_of("admission_wait_secs"), "2");
        let cli = Cli::try_parse_from(["service", "--model", "m.json", "--port", "1"]).unwrap();
        assert!(cli.command.is_none());
        assert_eq!(cli.serve.model.as_deref(), Some(std::path::Path::new("m.json")));
        assert_eq!(cli.serve.port, 1);
    }

    #[test]
    fn color_is_blue_or_green() {
        let cli = Cli::try_parse_from(["service", "--color", "green"]).unwrap();
        assert_eq!(cli.serve.color, Some(Color::Green));
        assert!(Cli::try_parse_from(["service", "--color", "purple"]).is_err());
    }

    #[test]
    fn limits_refuse_what_hyper_or_the_service_cannot_honour() {
        let parse = |extra: &[&str]| {
            let mut args = vec!["service"];
            args.extend_from_slice(extra);
            Cli::try_parse_from(args).unwrap().serve
        };
        assert!(parse(&[]).limits().is_ok() && parse(&[]).conn_limits().is_ok());
        assert!(parse(&["--max-header-bytes", "4096"]).conn_limits().is_err());
        assert!(parse(&["--max-connections", "0"]).conn_limits().is_err());
        assert!(parse(&["--body-timeout-secs", "0"]).limits().is_err());
        assert!(parse(&["--admission-wait-secs", "0"]).limits().is_err());
        // The reserve must leave room for one request at the size limit.
        assert!(parse(&["--small-reserve-bytes", "67108864"]).limits().is_err());
        assert!(parse(&["--prediction-budget-bytes", "20000000"]).limits().is_err());
        let tight = ["--prediction-budget-bytes", "6000000", "--small-reserve-bytes", "0"];
        assert!(parse(&tight).limits().is_ok());
        assert!(parse(&["--max-waiting-predictions", "0"]).limits().is_ok());
    }

    #[test]
    fn healthcheck_is_a_subcommand_with_its_own_port() {
        let cli = Cli::try_parse_from(["service", "healthcheck", "--port", "1234"]).unwrap();
        match cli.command {
            Some(Command::Healthcheck(a)) => assert_eq!(a.port, 1234),
            None => panic!("healthcheck not parsed"),
        }
    }

    #[test]
    fn seconds_refuses_zero_negative_and_nan() {
        assert_eq!(seconds("x", 1.5).unwrap(), Duration::from_millis(1500));
        for bad in [0.0, -1.0, f64::NAN] {
            assert!(seconds("x", bad).is_err(), "{bad}");
        }
    }
}
