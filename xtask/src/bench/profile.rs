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

/// Runs the driver under callgrind once per stage and returns each stage's
/// inclusive instructions per request (stages callgrind did not see are
/// left out).
///
/// Each run collects only inside its stage's function
/// (`--toggle-collect`), so the program's total is the stage's inclusive
/// count, exactly, whatever the build's debug info. (Read from one run's
/// `callgrind_annotate --inclusive=yes` listing instead, a function whose
/// inlined code comes from several source files is listed once per file,
/// each line with the calls of the whole function: added up, a stage was
/// counted more than once in a build with debug info.)
fn callgrind(
    driver: &Path,
    model: &Path,
    body: &Path,
    mode: &str,
    work: &Path,
) -> Result<Vec<(usize, u64)>> {
    let mut counts = Vec::new();
    for (i, (symbol, _)) in STAGES.iter().enumerate() {
        let data = work.join(format!("callgrind-{mode}-{i}.out"));
        let mut c = cmd("valgrind", ["--tool=callgrind", "--quiet"]);
        // `stage_…` are `batch_profile`'s functions; the others are named
        // in full.
        let pattern =
            if symbol.contains("::") { (*symbol).to_owned() } else { format!("*::{symbol}") };
        c.arg(format!("--toggle-collect={pattern}"))
            .arg(format!("--callgrind-out-file={}", data.display()))
            .arg(driver)
            .arg(model)
            .arg(body)
            .arg(ITERATIONS.to_string())
            .arg(mode);
        output(c)?;
        let text = output(cmd("callgrind_annotate", [&data]))?;
        if let Some(n) = program_total(&text, ITERATIONS) {
            counts.push((i, n));
        }
    }
    Ok(counts)
}

/// The `PROGRAM TOTALS` of a callgrind_annotate listing, per request over
/// `iterations` requests; `None` for none or zero (the function never ran,
/// or is not in this build under its name).
fn program_total(text: &str, iterations: usize) -> Option<u64> {
    let line = text.lines().find(|line| line.contains("PROGRAM TOTALS"))?;
    let number = line.split_whitespace().next()?;
    let total: u64 = number.replace(',', "").parse().ok()?;
    (total > 0).then(|| total / iterations.max(1) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A listing of a run collected inside `stage_predict`, in the form a
    /// build with debug info gives (the function once per source file its
    /// inlined code came from, adding up to more than the run): the
    /// program's total is the stage's inclusive count.
    #[test]
    fn takes_the_program_total_not_the_lines_per_file() {
        let text = "\
--------------------------------------------------------------------------------
Profile data file 'callgrind-fast-2.out' (creator: callgrind-3.19.0)
--------------------------------------------------------------------------------
Events recorded:  Ir
--------------------------------------------------------------------------------
Ir
--------------------------------------------------------------------------------
20,315,651 (100.0%)  PROGRAM TOTALS

--------------------------------------------------------------------------------
Ir                   file:function
--------------------------------------------------------------------------------
20,315,651 (100.0%)  service/examples/batch_profile.rs:batch_profile::stage_predict [/x/batch_profile]
20,108,651 (98.98%)  /rustc/library/core/src/iter/traits/iterator.rs:batch_profile::stage_predict [/x/batch_profile]
17,920,108 (88.21%)  model/src/features.rs:model::features::features [/x/batch_profile]
";
        assert_eq!(program_total(text, 200), Some(101_578));
    }

    #[test]
    fn a_stage_that_never_ran_is_left_out() {
        let text = "Ir\n0  PROGRAM TOTALS\n";
        assert_eq!(program_total(text, 200), None);
        assert_eq!(program_total("no listing", 200), None);
        assert_eq!(program_total("1,000 (100.0%)  PROGRAM TOTALS", 0), Some(1_000));
    }
}
