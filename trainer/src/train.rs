//! The training run: stream the file once to clean, split and accumulate
//! the least-squares sums; solve; then score the held-out rows.
//!
//! Pass 1 is a pipeline: one thread reads and hashes the file and cuts it
//! into blocks of whole records ([`BlockReader`]); worker threads parse,
//! clean, split and fold each block into its own [`Moments`]; the calling
//! thread merges the block results strictly in file order. Block boundaries
//! depend only on the file's bytes, so the result is bit-identical whatever
//! the thread count and scheduling. A fixed pool of block buffers bounds
//! memory: the reader waits for a buffer when the workers fall behind.
//!
//! A record's side of the split is a hash of (seed, the line it ends on):
//! the line is known without counting the records before it, which is what
//! lets blocks be parsed in parallel.
//!
//! Held-out rows are spooled to an anonymous temporary file (in `TMPDIR`,
//! 48 bytes a row: 96 MB for 10M rows at a 20% split) as they are met, so
//! pass 2 scores them with the fitted artifact's own
//! [`ModelArtifact::predict`] without re-reading or re-parsing the CSV, and
//! memory stays flat however many rows there are.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};

use model::{
    FEATURE_NAMES, FeatureRange, Lineage, ModelArtifact, N_FEATURES, Scores, Trip, features,
};
use tracing::debug;

use crate::civil::DateTime;
use crate::clean::{CleanRow, DropCounts, DropReason, check_distance, classify_before_distance};
use crate::error::TrainError;
use crate::lineage;
use crate::ols::{Fit, Moments};
use crate::progress::Progress;
use crate::source::{self, BlockReader, Columns};
use crate::split::{Side, Splitter};
use model::ScoreAccumulator;
use model::geo::haversine_km;

/// Bytes per block. Large enough to amortise channel traffic, small enough
/// that the pool of buffers stays a few megabytes.
const BLOCK_BYTES: usize = 1 << 20;
/// How many example line numbers to keep per drop reason.
pub const EXAMPLES_PER_REASON: usize = 3;

/// What to train on and how.
#[derive(Debug, Clone)]
pub struct TrainConfig {
    pub csv: PathBuf,
    pub seed: u64,
    pub test_fraction: f64,
    /// Worker threads for pass 1 (at least 1).
    pub threads: usize,
    /// Show a progress bar (the caller decides whether stderr is a terminal).
    pub progress: bool,
}

/// Row accounting of one run.
#[derive(Debug, Clone, PartialEq)]
pub struct RowCounts {
    pub read: u64,
    pub train: u64,
    pub test: u64,
    pub dropped: DropCounts,
    /// The first few line numbers dropped under each reason.
    pub examples: BTreeMap<DropReason, Vec<u64>>,
}

impl RowCounts {
    pub fn used(&self) -> u64 {
        self.train + self.test
    }
}

/// Everything pass 1 learns.
#[derive(Debug, Clone)]
pub struct FirstPass {
    pub rows: RowCounts,
    pub moments: Moments<N_FEATURES>,
    /// Where each feature lay over the training rows.
    pub ranges: [FeatureRange; N_FEATURES],
    pub sha256: String,
}

/// Held-out scores of the model and of the training-mean baseline.
#[derive(Debug, Clone, PartialEq)]
pub struct HeldOut {
    pub model: Scores,
    pub baseline: Scores,
    /// The first held-out trips with the model's fares for them.
    pub golden: Vec<model::GoldenTrip>,
}

/// How many held-out trips the artifact carries as golden requests.
const GOLDEN_TRIPS: usize = 16;

/// The outcome of pass 1 and the fit, with the spool for pass 2.
pub struct Fitted {
    pub first: FirstPass,
    pub fit: Fit<N_FEATURES>,
    spool: File,
}

/// Runs pass 1 and solves. The least number of training rows accepted is
/// the parameter count; the solver refuses degenerate designs.
pub fn fit(cfg: &TrainConfig) -> Result<Fitted, TrainError> {
    if !(cfg.test_fraction > 0.0 && cfg.test_fraction < 1.0) {
        return Err(TrainError::TestFraction(cfg.test_fraction));
    }
    let mut spool = tempfile::tempfile().map_err(TrainError::Scratch)?;
    let first = first_pass(cfg, &mut spool)?;
    let rows = &first.rows;
    if rows.read == 0 {
        return Err(TrainError::NoRows { path: cfg.csv.clone() });
    }
    let min = N_FEATURES as u64 + 1;
    if rows.train < min || rows.test == 0 {
        return Err(TrainError::TooFewRows {
            path: cfg.csv.clone(),
            read: rows.read,
            train: rows.train,
            test: rows.test,
            min,
        });
    }
    let fit = first.moments.solve(&FEATURE_NAMES)?;
    Ok(Fitted { first, fit, spool })
}

impl Fitted {
    /// Pass 2: scores the spooled held-out rows with `artifact.predict` and
    /// the training mean.
    pub fn score(self, artifact: &ModelArtifact) -> Result<HeldOut, TrainError> {
        let mut spool = self.spool;
        spool.rewind().map_err(TrainError::Scratch)?;
        let mut reader = BufReader::with_capacity(1 << 20, spool);
        let mean = self.first.moments.mean_y();
        let (mut model, mut baseline) = (ScoreAccumulator::default(), ScoreAccumulator::default());
        let mut buf = [0u8; SPOOL_RECORD];
        let mut golden = Vec::with_capacity(GOLDEN_TRIPS);
        for _ in 0..self.first.rows.test {
            reader.read_exact(&mut buf).map_err(TrainError::Scratch)?;
            let row = decode(&buf);
            let fare = artifact.predict(&row.trip);
            model.push(row.fare, fare);
            baseline.push(row.fare, mean);
            if golden.len() < GOLDEN_TRIPS {
                golden.push(model::GoldenTrip { trip: row.trip, fare });
            }
        }
        Ok(HeldOut { model: model.finish(), baseline: baseline.finish(), golden })
    }
}

/// A trained model with the run's accounting.
#[derive(Debug, Clone)]
pub struct Trained {
    pub artifact: ModelArtifact,
    pub rows: RowCounts,
    /// Condition number of the feature correlation matrix.
    pub condition: f64,
}

/// Trains end to end: pass 1 and the fit, the artifact with its lineage,
/// then pass 2 to score it on the held-out rows.
pub fn train(cfg: &TrainConfig, git_commit: Option<String>) -> Result<Trained, TrainError> {
    let started = std::time::Instant::now();
    let fitted = fit(cfg)?;
    debug!(seconds = started.elapsed().as_secs_f64(), "pass 1 and fit done");
    let created = DateTime::now();
    let first = &fitted.first;
    let rows = first.rows.clone();
    let unscored = Scores { rmse: f64::NAN, mae: f64::NAN, r2: f64::NAN };
    let mut artifact = ModelArtifact::new(
        lineage::model_version(&created, &first.sha256),
        fitted.fit.coefficients,
        fitted.fit.intercept,
        Lineage {
            data_file: lineage::data_file(&cfg.csv),
            data_sha256: first.sha256.clone(),
            rows_read: rows.read,
            rows_used: rows.used(),
            rows_train: rows.train,
            rows_test: rows.test,
            rows_dropped: rows.dropped.to_map(),
            split_seed: cfg.seed,
            test_fraction: cfg.test_fraction,
            metrics: unscored,
            baseline: unscored,
            trainer_version: lineage::TRAINER_VERSION.to_owned(),
            git_commit,
            created_at: created.rfc3339(),
        },
    );
    // Clamp to what the training rows spanned, not to every valid trip.
    artifact.feature_ranges = first.ranges.to_vec();
    let condition = fitted.fit.condition;
    let held_out = fitted.score(&artifact)?;
    debug!(seconds = started.elapsed().as_secs_f64(), "held-out rows scored");
    artifact.lineage.metrics = held_out.model;
    artifact.lineage.baseline = held_out.baseline;
    artifact.golden = held_out.golden;
    // Once complete: the checks include the lineage's metrics, which only
    // exist after scoring (a non-finite fit shows up there too).
    artifact.validate()?;
    Ok(Trained { artifact, rows, condition })
}

/// A block of whole CSV records, recycled through the pool.
struct Block {
    seq: u64,
    /// The file line the block starts on.
    first_line: u64,
    bytes: Vec<u8>,
}

/// What a worker makes of a block.
struct Partial {
    read: u64,
    moments: Moments<N_FEATURES>,
    ranges: [FeatureRange; N_FEATURES],
    dropped: DropCounts,
    examples: Vec<(DropReason, u64)>,
    train: u64,
    test_rows: Vec<CleanRow>,
}

fn process(block: &Block, columns: &Columns, splitter: &Splitter) -> Partial {
    let mut p = Partial {
        read: 0,
        moments: Moments::default(),
        ranges: [FeatureRange::EMPTY; N_FEATURES],
        dropped: DropCounts::default(),
        examples: Vec::new(),
        train: 0,
        test_rows: Vec::new(),
    };
    columns.for_each_record(&block.bytes, block.first_line, |values, line, key| {
        p.read += 1;
        let outcome = classify_before_distance(values).and_then(|row| {
            match splitter.side(key) {
                Side::Train => {
                    // Feature 0 is the haversine distance the last check
                    // needs: compute it once, for both.
                    let x = features(&row.trip);
                    check_distance(x[0]).map(|()| (row, Some(x)))
                }
                Side::Test => check_distance(haversine_km(row.trip.pickup(), row.trip.dropoff()))
                    .map(|()| (row, None)),
            }
        });
        match outcome {
            Ok((row, Some(x))) => {
                p.moments.push(&x, row.fare);
                p.ranges.iter_mut().zip(x).for_each(|(r, v)| r.include(v));
                p.train += 1;
            }
            Ok((row, None)) => p.test_rows.push(row),
            Err(reason) => {
                p.dropped.add(reason);
                if p.dropped.get(reason) <= EXAMPLES_PER_REASON as u64 {
                    p.examples.push((reason, line));
                }
            }
        }
    });
    p
}

/// Reads the file into blocks; returns the file's sha256.
fn read_blocks(
    path: &Path,
    mut blocks: BlockReader<File>,
    pool: Receiver<Block>,
    work: SyncSender<Block>,
    progress: &Progress,
) -> Result<String, TrainError> {
    let read_err = |e: std::io::Error, line: u64| TrainError::Read {
        path: path.to_owned(),
        line,
        message: format!("read failed: {e}"),
    };
    let mut seq = 0u64;
    let mut line = 2;
    loop {
        let Ok(mut block) = pool.recv() else {
            // The merger stopped early: its error is the one to report.
            return Ok(String::new());
        };
        let Some(first_line) =
            blocks.next_block(&mut block.bytes).map_err(|e| read_err(e, line))?
        else {
            break;
        };
        block.seq = seq;
        block.first_line = first_line;
        line = first_line;
        seq += 1;
        progress.set(blocks.bytes_read());
        if work.send(block).is_err() {
            return Ok(String::new());
        }
    }
    blocks.finish().map_err(|e| read_err(e, line))
}

fn first_pass(cfg: &TrainConfig, spool: &mut File) -> Result<FirstPass, TrainError> {
    let opened = source::open(&cfg.csv, BLOCK_BYTES)?;
    let columns = opened.columns;
    let progress = Progress::new(cfg.progress, opened.size);
    let splitter = Splitter::new(cfg.seed, cfg.test_fraction);
    let workers = cfg.threads.max(1);
    let buffers = 2 * workers + 2;

    let (pool_tx, pool_rx) = sync_channel::<Block>(buffers);
    let (work_tx, work_rx) = sync_channel::<Block>(buffers);
    let (done_tx, done_rx) = sync_channel::<(u64, Partial, Block)>(buffers);
    for _ in 0..buffers {
        let block = Block { seq: 0, first_line: 0, bytes: Vec::with_capacity(BLOCK_BYTES) };
        // The channel holds `buffers` items, so this cannot block or fail.
        let _ = pool_tx.send(block);
    }
    let work_rx = Arc::new(Mutex::new(work_rx));

    let mut out = BufWriter::with_capacity(1 << 20, spool);
    let mut read = 0u64;
    let mut moments = Moments::<N_FEATURES>::default();
    let mut ranges = [FeatureRange::EMPTY; N_FEATURES];
    let mut dropped = DropCounts::default();
    let mut examples: BTreeMap<DropReason, Vec<u64>> = BTreeMap::new();
    let (mut train, mut test) = (0u64, 0u64);

    let (read_result, merge_result) = std::thread::scope(|s| {
        let reader = s.spawn(|| read_blocks(&cfg.csv, opened.blocks, pool_rx, work_tx, &progress));
        for _ in 0..workers {
            let work_rx = Arc::clone(&work_rx);
            let done_tx = done_tx.clone();
            let (columns, splitter) = (&columns, &splitter);
            s.spawn(move || {
                loop {
                    let next = match work_rx.lock() {
                        Ok(rx) => rx.recv(),
                        Err(_) => return,
                    };
                    let Ok(block) = next else { return };
                    let partial = process(&block, columns, splitter);
                    if done_tx.send((block.seq, partial, block)).is_err() {
                        return;
                    }
                }
            });
        }
        drop(done_tx);

        // Merge strictly in block order.
        let merge_result = (|| {
            let mut pending: BTreeMap<u64, (Partial, Block)> = BTreeMap::new();
            let mut next = 0u64;
            for (seq, partial, block) in done_rx.iter() {
                pending.insert(seq, (partial, block));
                while let Some((p, block)) = pending.remove(&next) {
                    read += p.read;
                    moments.merge(&p.moments);
                    ranges.iter_mut().zip(&p.ranges).for_each(|(r, o)| r.merge(o));
                    dropped.merge(&p.dropped);
                    for (reason, line) in p.examples {
                        let lines = examples.entry(reason).or_default();
                        if lines.len() < EXAMPLES_PER_REASON {
                            lines.push(line);
                        }
                    }
                    train += p.train;
                    test += p.test_rows.len() as u64;
                    for row in &p.test_rows {
                        out.write_all(&encode(row)).map_err(TrainError::Scratch)?;
                    }
                    // The reader may have finished; a closed pool is fine.
                    let _ = pool_tx.send(block);
                    next += 1;
                }
            }
            out.flush().map_err(TrainError::Scratch)
        })();
        // Unblock the reader if merging failed, then collect it.
        drop(pool_tx);
        drop(done_rx);
        let read_result = reader.join().unwrap_or_else(|_| {
            Err(TrainError::Read {
                path: cfg.csv.clone(),
                line: 0,
                message: "the reader thread panicked".into(),
            })
        });
        (read_result, merge_result)
    });
    progress.finish();
    merge_result?;
    let sha256 = read_result?;
    let rows = RowCounts { read, train, test, dropped, examples };
    Ok(FirstPass { rows, moments, ranges, sha256 })
}

/// Spool layout: the five trip values then the fare, little-endian f64.
const SPOOL_RECORD: usize = 48;

fn encode(row: &CleanRow) -> [u8; SPOOL_RECORD] {
    let mut buf = [0u8; SPOOL_RECORD];
    let t = row.trip.values();
    for (chunk, v) in buf.chunks_exact_mut(8).zip(t.iter().chain([row.fare].iter())) {
        chunk.copy_from_slice(&v.to_le_bytes());
    }
    buf
}

fn decode(buf: &[u8; SPOOL_RECORD]) -> CleanRow {
    let mut v = [0.0; 6];
    for (slot, chunk) in v.iter_mut().zip(buf.chunks_exact(8)) {
        let mut b = [0u8; 8];
        b.copy_from_slice(chunk);
        *slot = f64::from_le_bytes(b);
    }
    // Written from a validated trip moments ago by this process.
    let trip = Trip {
        pickup_latitude: v[0],
        pickup_longitude: v[1],
        dropoff_latitude: v[2],
        dropoff_longitude: v[3],
        passenger_count: v[4] as u8,
    };
    CleanRow { trip, fare: v[5] }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// [`process`] takes the distance check's input from feature 0.
    #[test]
    fn feature_zero_is_the_trip_distance() {
        assert_eq!(FEATURE_NAMES[0], "haversine_km");
        let trip = Trip::from_values([40.7614, -73.9776, 40.6413, -73.7781, 1.0]).unwrap();
        let km = haversine_km(trip.pickup(), trip.dropoff());
        assert_eq!(features(&trip)[0].to_bits(), km.to_bits());
    }

    #[test]
    fn spool_round_trip() {
        let trip = Trip::from_values([40.7, -73.9, 40.8, -73.95, 3.0]).unwrap();
        let row = CleanRow { trip, fare: 12.34 };
        assert_eq!(decode(&encode(&row)), row);
    }
}
