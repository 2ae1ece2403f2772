//! A flood of large batches during the analysis after a switch: the
//! attack that used to veto any deploy. The release is good, so it must
//! stay live, and the clients posting the documented one-row request must
//! keep being answered while 10,000-row batches flood the front.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use xtask::api;
use xtask::effects::http::Request;
use xtask::effects::paths::live_manifest;
use xtask::rollout::{self, StepName, Verdict};
use xtask::stack;

use crate::fixture::{Fixture, manifest};
use crate::images::{GOOD_A, GOOD_B};

/// The flood of the issue that found it: 48 clients posting 10,000-row
/// batches for 40 s, as fast as they are answered, with 2 clients of one
/// row each.
const LARGE_CLIENTS: usize = 48;
const LARGE_ROWS: usize = 10_000;
const SMALL_CLIENTS: usize = 2;
const FLOOD: Duration = Duration::from_secs(40);
/// The analysis window of the deploy flooded: the flood falls inside.
const WINDOW: Duration = Duration::from_secs(50);
/// The share of one-row requests that must be answered 200.
const SMALL_SERVED: f64 = 0.95;

/// Answers by status (0: no answer at all).
type Tally = BTreeMap<u16, u64>;

/// Clients posting one body in a loop until told to stop.
struct Clients {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<Tally>>,
}

impl Clients {
    fn start(n: usize, body: Arc<String>, stop: &Arc<AtomicBool>) -> Clients {
        let threads = (0..n)
            .map(|_| {
                let (stop, body) = (stop.clone(), body.clone());
                thread::spawn(move || {
                    let front = stack::front();
                    let mut tally = Tally::new();
                    let started = Instant::now();
                    // Bounded even if nobody says stop.
                    while !stop.load(Ordering::Relaxed) && started.elapsed() < FLOOD * 2 {
                        let answer = Request::post_json("/api/predict/", body.as_bytes())
                            .timeout(Duration::from_secs(15))
                            .send(&front);
                        let status = answer.map_or(0, |r| r.status);
                        *tally.entry(status).or_default() += 1;
                        if status == 0 {
                            thread::sleep(Duration::from_millis(20));
                        }
                    }
                    tally
                })
            })
            .collect();
        Clients { stop: stop.clone(), threads }
    }

    fn join(self) -> Tally {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = Tally::new();
        for t in self.threads {
            for (status, n) in t.join().unwrap_or_default() {
                *all.entry(status).or_default() += n;
            }
        }
        all
    }
}

fn describe(tally: &Tally) -> String {
    let mut out = String::new();
    for (status, n) in tally {
        let what = if *status == 0 { "no answer".to_owned() } else { status.to_string() };
        let _ = write!(out, "{}{n} × {what}", if out.is_empty() { "" } else { ", " });
    }
    out
}

fn share_ok(tally: &Tally) -> f64 {
    let all: u64 = tally.values().sum();
    if all == 0 { 0.0 } else { tally.get(&200).copied().unwrap_or(0) as f64 / all as f64 }
}

pub fn flood_during_analysis(fx: &Fixture) -> Result<String> {
    fx.fresh(GOOD_A)?;
    // An analysis window that the whole flood falls in.
    let before = rollout::newest_revision(&fx.status()?);
    let text =
        manifest(GOOD_B, 1)?.replace("window: 3s", &format!("window: {}s", WINDOW.as_secs()));
    std::fs::write(live_manifest(), text)?;
    fx.wait_for_step(StepName::ScaleDown)?;
    let large = Arc::new(api::predict_body(&vec![model::DOCUMENTED_TRIP; LARGE_ROWS]));
    let small = Arc::new(api::predict_body(&[model::DOCUMENTED_TRIP]));
    let stop = Arc::new(AtomicBool::new(false));
    let floods = Clients::start(LARGE_CLIENTS, large, &stop);
    let smalls = Clients::start(SMALL_CLIENTS, small, &stop);
    thread::sleep(FLOOD);
    let small = smalls.join();
    let large = floods.join();
    let done = rollout::follow(GOOD_B, before, Duration::from_secs(120))?;
    let figures = done.summary.analysis;
    ensure!(
        done.result == Verdict::Succeeded,
        "the good release did not survive the flood: {} (large: {}; one-row: {})",
        rollout::describe(&done),
        describe(&large),
        describe(&small)
    );
    fx.expect_live("green", GOOD_B, 1)?;
    let served = share_ok(&small);
    ensure!(
        served >= SMALL_SERVED,
        "only {:.1}% of the one-row requests were answered 200 ({}), at least {:.0}% wanted",
        served * 100.0,
        describe(&small),
        SMALL_SERVED * 100.0
    );
    let figures = figures.map_or("no figures".to_owned(), |f| {
        format!(
            "{:.0} predictions, {:.0} shed, {:.2}% faults, p99 of small batches {:.1} ms",
            f.requests,
            f.shed,
            f.error_rate * 100.0,
            f.p99_seconds * 1e3
        )
    });
    Ok(format!(
        "stayed live; large: {}; one-row: {} ({:.1}% 200); analysis: {figures}",
        describe(&large),
        describe(&small),
        served * 100.0
    ))
}
