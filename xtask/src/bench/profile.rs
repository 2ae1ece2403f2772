//! The instruction profile of `cargo xtask bench serve`: where a predict
//! request's CPU goes inside the process, stage by stage (decode and
//! validation, features, the dot product, the out-of-area flags, encode),
//! counted by callgrind on the service's `batch_profile` example, which
//! drives each stage in a function of its own. Instruction counts do not
//! drift with the machine's noise, so before and after compare exactly:
//! each body is profiled on today's path and on the path before the
//! scanner (the full streaming parser and an owned answer), in one build.
//! The socket's share (read, write, the runtime) is out of process and out
//! of reach here: `perf` on the running service measures it (ARCHITECTURE.md).

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;

use crate::effects::process::{cmd, output};
use crate::effects::{deps, paths};

/// Debian's valgrind, for callgrind and callgrind_annotate.
const TOOLS: &[&str] = &["valgrind"];

/// Requests driven per profile: enough that start-up is noise.
const ITERATIONS: usize = 200;

/// The stages, as `batch_profile` names its functions, and what they are.
const STAGES: [(&str, &str); 5] = [
    ("stage_decode", "JSON decode + validation"),
    ("model::features::features", "features (inside predict)"),
    ("stage_predict", "predict: features + dot product"),
    ("stage_out_of_area", "out-of-area flags"),
    ("stage_encode", "JSON encode"),
];

/// One path's instructions per request, by stage.
struct Profile {
    path: &'static str,
    stages: Vec<(usize, u64)>,
}

/// Profiles each predict body on both paths and renders the table.
pub(super) fn table(model: &Path, bodies: &[(&str, &str)], work: &Path) -> Result<String> {
    deps::ensure(TOOLS)?;
    let driver = paths::cargo_target().join("release").join("examples").join("batch_profile");
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nprofile: instructions per request inside the process (callgrind, {ITERATIONS} requests; \
         the socket, hyper and tokio are not included)"
    );
    for (name, body) in bodies {
        let file = work.join(format!("profile-body-{}.json", body.len()));
        std::fs::write(&file, body)?;
        let mut profiles = Vec::new();
        for (path, mode) in [("before (full parser)", "full"), ("now", "fast")] {
            let counts = callgrind(&driver, model, &file, mode, work)?;
            profiles.push(Profile { path, stages: counts });
        }
        let _ = writeln!(out, "\n| {name} | {} | {} |", profiles[0].path, profiles[1].path);
        let _ = writeln!(out, "|---|---:|---:|");
        let total = |p: &Profile| -> u64 {
            p.stages
                .iter()
                .filter(|(i, _)| STAGES[*i].0 != "model::features::features")
                .map(|(_, n)| n)
                .sum()
        };
        for (i, (_, what)) in STAGES.iter().enumerate() {
            let cell = |p: &Profile| match p.stages.iter().find(|(j, _)| *j == i) {
                Some((_, n)) => {
                    format!("{n} ({:.0} %)", 100.0 * *n as f64 / total(p).max(1) as f64)
                }
                None => "–".to_owned(),
            };
            let _ = writeln!(out, "| {what} | {} | {} |", cell(&profiles[0]), cell(&profiles[1]));
        }
        let _ = writeln!(out, "| total | {} | {} |", total(&profiles[0]), total(&profiles[1]));
    }
    Ok(out)
}

/// Runs the driver under callgrind and returns each stage's inclusive
/// instructions per request (stages callgrind did not see are left out).
fn callgrind(
    driver: &Path,
    model: &Path,
    body: &Path,
    mode: &str,
    work: &Path,
) -> Result<Vec<(usize, u64)>> {
    let data = work.join(format!("callgrind-{mode}.out"));
    let mut c = cmd("valgrind", ["--tool=callgrind", "--quiet"]);
    c.arg(format!("--callgrind-out-file={}", data.display()))
        .arg(driver)
        .arg(model)
        .arg(body)
        .arg(ITERATIONS.to_string())
        .arg(mode);
    output(c)?;
    let mut annotate = cmd("callgrind_annotate", ["--inclusive=yes", "--threshold=100"]);
    annotate.arg(&data);
    let text = output(annotate)?;
    Ok(stage_counts(&text, ITERATIONS))
}

/// Each stage's inclusive count over `iterations` requests, per request,
/// from callgrind_annotate's lines (`1,234,567 (12.3%)  ???:name [file]`).
fn stage_counts(text: &str, iterations: usize) -> Vec<(usize, u64)> {
    let mut counts = Vec::new();
    for (i, (symbol, _)) in STAGES.iter().enumerate() {
        let found = text.lines().filter_map(|line| {
            let (number, rest) = line.trim().split_once(' ')?;
            let name = rest.split_once(':')?.1;
            let name = name.split(" [").next()?.trim();
            let matches = name == *symbol || name.ends_with(&format!("::{symbol}"));
            let n: u64 = number.replace(',', "").parse().ok()?;
            matches.then_some(n)
        });
        // The same function may be listed once per object file: add them.
        let total: u64 = found.sum();
        if total > 0 {
            counts.push((i, total / iterations as u64));
        }
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_callgrind_annotate_lines() {
        let text = "\
--------------------------------------------------------------------------------
Ir
--------------------------------------------------------------------------------
400,000 (100.0%)  PROGRAM TOTALS
  200,000 (50.0%)  ???:batch_profile::stage_decode [/x/batch_profile]
  100,000 (25.0%)  ???:batch_profile::stage_predict [/x/batch_profile]
   60,000 (15.0%)  ???:model::features::features [/x/batch_profile]
   20,000 ( 5.0%)  ???:batch_profile::stage_encode [/x/batch_profile]
";
        let counts = stage_counts(text, 100);
        assert_eq!(counts, vec![(0, 2000), (1, 600), (2, 1000), (4, 200)]);
    }
}
