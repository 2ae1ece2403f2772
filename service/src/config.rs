//! Command line and environment: everything an operator can set, parsed
//! once at the edge into plain values the rest of the service uses.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::state::Limits;

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
    pub color: Option<String>,

    /// Release (image tag) reported on `/` as `version`, set by the controller.
    #[arg(long = "release", env = "VERSION", value_name = "TAG")]
    pub release: Option<String>,

    /// Largest number of rows one predict request may carry (more → 422).
    #[arg(long, env = "MAX_BATCH_ROWS", default_value_t = Limits::DEFAULT.max_batch_rows)]
    pub max_batch_rows: usize,

    /// Largest request body in bytes (more → 413).
    #[arg(long, env = "MAX_BODY_BYTES", default_value_t = Limits::DEFAULT.max_body_bytes)]
    pub max_body_bytes: usize,

    /// A request still running after this many seconds is answered 503.
    #[arg(
        long,
        env = "REQUEST_TIMEOUT_SECS",
        default_value_t = Limits::DEFAULT.request_timeout.as_secs_f64()
    )]
    pub request_timeout_secs: f64,

    /// After SIGTERM/SIGINT, requests in flight get this many seconds to
    /// finish before the process exits anyway (with status 1).
    #[arg(long, env = "SHUTDOWN_TIMEOUT_SECS", default_value_t = 10.0)]
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
        let cli = Cli::try_parse_from(["service", "--model", "m.json", "--port", "1"]).unwrap();
        assert!(cli.command.is_none());
        assert_eq!(cli.serve.model.as_deref(), Some(std::path::Path::new("m.json")));
        assert_eq!(cli.serve.port, 1);
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
