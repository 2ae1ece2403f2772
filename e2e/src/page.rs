//! The status page on the real stack, drawn by headless Chromium: a
//! paused rollout shows its step and tag, a rolled-back one its level and
//! reason; and how long the page takes to show a change /status shows.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use xtask::api;
use xtask::effects::deps;
use xtask::effects::paths::target;
use xtask::effects::poll::{self, Poll};
use xtask::rollout::{self, Verdict};
use xtask::stack;

use crate::fixture::Fixture;
use crate::images::{GOLDEN_MISMATCH, GOOD_A, GOOD_B};
use crate::load::Load;

const PAGE: &str = "http://127.0.0.1:9300/";
/// One run of the browser: its start, the page's first poll and drawing.
const BROWSER_RUN: Duration = Duration::from_secs(30);
/// From /status showing a change to the page showing it.
const PAGE_CATCHES_UP: Duration = Duration::from_secs(30);
/// The most the scenario's load runs, whatever happens.
const LOAD_BOUND: Duration = Duration::from_secs(180);

/// Runs headless Chromium on the page with `extra` and returns its
/// stdout; killed past [`BROWSER_RUN`].
fn chromium(extra: &[&str]) -> Result<String> {
    let mut child = Command::new("chromium")
        .args(["--headless=new", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=4000"])
        .arg("--window-size=1200,1800")
        // One word: Chromium takes a separate path for a second page.
        .arg(format!("--user-data-dir={}", target().join("e2e/page/profile").display()))
        .args(extra)
        .arg(PAGE)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start chromium")?;
    let mut stdout = child.stdout.take().context("chromium's stdout")?;
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        stdout.read_to_string(&mut text).map(|_| text)
    });
    let deadline = Instant::now() + BROWSER_RUN;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("chromium did not finish within {BROWSER_RUN:?}");
        }
        sleep(Duration::from_millis(50));
    };
    let text = reader.join().map_err(|_| anyhow::anyhow!("chromium's reader panicked"))??;
    ensure!(status.success(), "chromium exited with {status}");
    Ok(text)
}

/// The page's DOM as the browser drew it.
fn dom() -> Result<String> {
    chromium(&["--dump-dom"])
}

/// Dumps the DOM until `shows` holds; returns it and how long that took.
fn until_shown(what: &str, shows: impl Fn(&str) -> bool) -> Result<(String, Duration)> {
    let from = Instant::now();
    let dom = poll::until(PAGE_CATCHES_UP, Duration::from_millis(200), || {
        let dom = dom()?;
        Ok(if shows(&dom) {
            Poll::Ready(dom)
        } else {
            Poll::Pending(format!("not showing {what}"))
        })
    })
    .with_context(|| format!("the page at {PAGE}"))?;
    Ok((dom, from.elapsed()))
}

fn screenshot(name: &str) -> Result<PathBuf> {
    let dir = target().join("e2e/page");
    fs::create_dir_all(&dir)?;
    let path = dir.join(name);
    chromium(&[&format!("--screenshot={}", path.display())])?;
    ensure!(Path::new(&path).exists(), "chromium wrote no screenshot at {}", path.display());
    println!("e2e: status page screenshot: {}", path.display());
    Ok(path)
}

/// The number in attribute `name` of the element whose id is `id`.
fn attribute(dom: &str, id: &str, name: &str) -> Option<f64> {
    let at = dom.find(&format!(r#"id="{id}""#))?;
    let tag = &dom[at..at + dom[at..].find('>')?];
    let value = tag.split(&format!(r#"{name}=""#)).nth(1)?.split('"').next()?;
    value.parse().ok()
}

/// Text as the DOM dump writes it.
fn escaped(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('\u{a0}', "&nbsp;")
}

pub fn status_page(fx: &Fixture) -> Result<String> {
    deps::ensure(deps::BROWSER)?;
    fx.fresh(GOOD_A)?;
    // One client's predictions through the front, for the chart of the
    // live color's traffic.
    let load = Load::start(&stack::front(), &api::documented_request(), 1, 0, LOAD_BOUND);
    fx.pause(GOOD_B)?;
    let tag = format!(r#"<code id="rollout-tag">{GOOD_B}</code>"#);
    let (_, paused_in) = until_shown("the paused step and its tag", |d| {
        d.contains(r#"data-phase="Paused""#)
            && d.contains(r#"<li class="current" data-step="paused">"#)
            && d.contains(&tag)
    })?;
    // Every gate ran and passed, each shown with what it measured.
    let (dom, _) = until_shown("the gates' readings", |d| {
        ["golden trips", "held-out R²", "RMSE vs live", "warm-up p99"]
            .iter()
            .all(|g| d.contains(&format!(r#"data-figure="{}" data-verdict="pass""#, escaped(g))))
    })?;
    ensure!(dom.contains(" priced as promised"), "the golden trips' reading is not shown");
    let (dom, _) = until_shown("the live traffic chart", |d| {
        attribute(d, "traffic-chart", "data-points").is_some_and(|n| n >= 2.0)
    })?;
    let rate = attribute(&dom, "traffic-chart", "data-max-rps").unwrap_or(0.0);
    ensure!(rate >= 1.0, "the chart shows at most {rate} requests per second under load");
    let paused_shot = screenshot("paused.png")?;
    let report = load.stop();
    let failed = report.failures().len();
    ensure!(failed == 0, "{failed} of {} predictions failed", report.samples.len());

    let before = fx.status()?.history.len() as u64;
    fx.cli(&["abort"])?;
    rollout::follow(GOOD_B, before, Duration::from_secs(90))?;
    let done = fx.deploy(GOLDEN_MISMATCH)?;
    ensure!(
        done.result == Verdict::RolledBack && done.level.map(|l| l.number()) == Some(1),
        "expected a level-1 rollback: {}",
        rollout::describe(&done)
    );
    let reason = done.reason.clone().unwrap_or_default();
    let entry = format!(r#"data-result="rolled_back" data-level="1" data-tag="{GOLDEN_MISMATCH}""#);
    let (dom, rolled_back_in) = until_shown("the rolled-back entry", |d| d.contains(&entry))?;
    ensure!(dom.contains(&escaped(&reason)), "the page does not give the reason {reason:?}");
    ensure!(dom.contains(r#"id="color-blue" data-live="true""#), "blue is not marked live");
    // The golden trips refused; the quality gate after them never ran.
    for (gate, verdict) in
        [("golden trips", "fail"), ("held-out R²", "not run"), ("warm-up p99", "not run")]
    {
        let shown = format!(r#"data-figure="{}" data-verdict="{verdict}""#, escaped(gate));
        ensure!(dom.contains(&shown), "the page does not show {gate} as {verdict}");
    }
    let rolled_back_shot = screenshot("rolled-back.png")?;
    Ok(format!(
        "paused shown {} ms after /status said so, the level-1 rollback {} ms after it \
         finished (each a browser start included); live traffic charted at up to {rate:.0} \
         req/s ({} predictions, none failed); screenshots {} and {}",
        paused_in.as_millis(),
        rolled_back_in.as_millis(),
        report.samples.len(),
        paused_shot.display(),
        rolled_back_shot.display()
    ))
}
