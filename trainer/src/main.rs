//! `trainer`: train the fare model from a trips CSV, or generate synthetic
//! trips. Exit codes: 0 success; 1 error (unreadable or malformed input,
//! rank-deficient fit, IO); 2 bad command line; 3 the model failed the
//! `--min-r2` quality gate (then `--output` is left untouched, the rejected
//! artifact is written to `<output>.rejected` and the metrics as usual, so
//! the failure can be inspected).

use std::io::{BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use tracing::{info, warn};
use tracing_subscriber::EnvFilter;

use model::Metrics;
use trainer::clean::DropReason;
use trainer::output::{write_atomic, write_atomic_with};
use trainer::report;
use trainer::train::{TrainConfig, train};
use trainer::{lineage, synth};

/// Exit code when the held-out R² is below `--min-r2`.
const EXIT_QUALITY_GATE: u8 = 3;

#[derive(Parser)]
#[command(
    name = "trainer",
    version,
    about = "Train the taxi fare model, or generate trips",
    after_help = "Exit codes: 0 success; 1 error (input, fit or IO); 2 bad command line; \
                  3 the model failed the --min-r2 quality gate.\n\
                  Logs go to stderr (RUST_LOG sets the level); the report goes to stdout."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Clean the CSV, fit least squares on a seeded split, score the held-out
    /// rows, and write the model artifact (and metrics).
    Train(TrainArgs),
    /// Write synthetic trips in the reference CSV layout.
    Synth(SynthArgs),
}

#[derive(Args)]
struct TrainArgs {
    /// Trips CSV: fare_amount, pickup/dropoff latitude/longitude and
    /// passenger_count columns, in any order; other columns are ignored.
    #[arg(long, env = "TRAINER_CSV")]
    csv: PathBuf,
    /// Where to write the model artifact (JSON).
    #[arg(long, env = "TRAINER_OUTPUT")]
    output: PathBuf,
    /// Where to write the metrics (JSON).
    #[arg(long, env = "TRAINER_METRICS")]
    metrics: Option<PathBuf>,
    /// Seed of the train/test split.
    #[arg(long, default_value_t = 42, env = "TRAINER_SEED")]
    seed: u64,
    /// Fraction of rows held out for testing, in (0, 1).
    #[arg(long, default_value_t = 0.2, env = "TRAINER_TEST_FRACTION")]
    test_fraction: f64,
    /// Quality gate: when the held-out R² is below this, exit with code 3 and
    /// write the model to `<output>.rejected` instead of `--output`.
    #[arg(long, env = "TRAINER_MIN_R2")]
    min_r2: Option<f64>,
    /// Worker threads for reading and cleaning [default: available cores].
    #[arg(long, env = "TRAINER_THREADS")]
    threads: Option<usize>,
    /// Commit recorded in the artifact [default: `git rev-parse HEAD`].
    #[arg(long, env = "GIT_COMMIT")]
    git_commit: Option<String>,
}

#[derive(Args)]
struct SynthArgs {
    /// Number of trips to write.
    #[arg(long)]
    rows: u64,
    /// Seed of the generator: the same seed writes the same file.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Output CSV file.
    #[arg(long)]
    output: PathBuf,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Train(args) => run_train(&args),
        Command::Synth(args) => run_synth(&args).map(|()| ExitCode::SUCCESS),
    };
    result.unwrap_or_else(|e| {
        eprintln!("trainer: error: {e:#}");
        ExitCode::FAILURE
    })
}

fn run_train(args: &TrainArgs) -> Result<ExitCode> {
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
    let cfg = TrainConfig {
        csv: args.csv.clone(),
        seed: args.seed,
        test_fraction: args.test_fraction,
        threads,
        progress: std::io::stderr().is_terminal(),
    };
    let started = Instant::now();
    info!(csv = %cfg.csv.display(), seed = cfg.seed, test_fraction = cfg.test_fraction, threads, "training");
    let trained = train(&cfg, lineage::git_commit(args.git_commit.as_deref()))?;
    for reason in [DropReason::Unparsable, DropReason::MissingValue] {
        if let Some(lines) = trained.rows.examples.get(&reason) {
            warn!(
                reason = reason.name(),
                count = trained.rows.dropped.get(reason),
                first_lines = ?lines,
                "dropped malformed rows"
            );
        }
    }
    let scores = trained.artifact.lineage.metrics;
    // NaN never passes the gate.
    let gate = args.min_r2.map(|min| (min, scores.r2 >= min));
    // A model that fails the gate never replaces the one at --output: it is
    // kept beside it, for inspection, as `<output>.rejected`.
    let destination = match gate {
        Some((_, false)) => rejected_path(&args.output),
        _ => args.output.clone(),
    };
    write_atomic(&destination, trained.artifact.to_json()?.as_bytes())?;
    if let Some(path) = &args.metrics {
        let metrics = Metrics::of(&trained.artifact, trained.condition)
            .to_json()
            .context("serialising metrics")?;
        write_atomic(path, metrics.as_bytes())?;
    }
    // After the files: a reader that stops early (`| head`) must not cost
    // the model.
    print_report(&report::render(&trained))?;
    info!(
        model_version = %trained.artifact.model_version,
        r2 = scores.r2,
        rmse = scores.rmse,
        output = %destination.display(),
        seconds = started.elapsed().as_secs_f64(),
        "trained"
    );
    match gate {
        Some((min, false)) => {
            eprintln!(
                "trainer: quality gate failed: held-out R² {:.4} is below --min-r2 {min}; \
                 {} was left as it was and the rejected model written to {}",
                scores.r2,
                args.output.display(),
                destination.display()
            );
            return Ok(ExitCode::from(EXIT_QUALITY_GATE));
        }
        Some((min, true)) => info!(r2 = scores.r2, min_r2 = min, "quality gate passed"),
        None => {}
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints the report on stdout. A closed stdout (the reader went away, as
/// `| head` does) is not an error: the reader has what it wanted.
fn print_report(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(e).context("cannot write the report to stdout")
        }
        _ => Ok(()),
    }
}

/// Where a model that failed the quality gate is written.
fn rejected_path(output: &Path) -> PathBuf {
    let mut name = output.as_os_str().to_owned();
    name.push(".rejected");
    PathBuf::from(name)
}

fn run_synth(args: &SynthArgs) -> Result<()> {
    let started = Instant::now();
    write_atomic_with(&args.output, |file| {
        synth::write_trips(&mut BufWriter::with_capacity(1 << 20, file), args.rows, args.seed)
    })?;
    info!(rows = args.rows, seed = args.seed, output = %args.output.display(),
          seconds = started.elapsed().as_secs_f64(), "wrote synthetic trips");
    Ok(())
}
