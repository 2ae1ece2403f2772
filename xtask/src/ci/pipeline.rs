//! Tests of the CI pipeline's definition, `.gitflic-ci.yaml`, against the
//! code: no CI server runs them before a push, and a pipeline that names a
//! stage xtask lacks, runs jobs out of order or hands a job nothing to read
//! only fails on the server, after the merge.
//!
//! The file is parsed with a YAML library (serde-saphyr) and held to:
//! the stage order of `ci` (lint → smoke → unit → train → build →
//! integration → deploy); one job per stage whose script is that stage's
//! `cargo xtask <stage>` and nothing else (no logic in the YAML); a
//! subcommand of xtask for each; every file a stage reads from
//! `artifacts/` handed to its job by an earlier job; and nothing the
//! pipeline writes in the work tree left unignored by git, since a dirty
//! tree would tag the image `<sha>-dirty` and the deploy job, deploying
//! `$CI_COMMIT_SHA`, would find no such tag.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::CommandFactory;
use serde::Deserialize;
use serde_json::Value;

use super::steps;
use crate::effects::paths;
use crate::effects::process::cmd;
use crate::flags::Cli;
use crate::rollout;
use crate::stages::artifacts;

const FILE: &str = ".gitflic-ci.yaml";

/// Top-level keys that are not jobs (GitLab-CI's global keywords).
const GLOBAL_KEYS: [&str; 4] = ["stages", "variables", "default", "workflow"];

/// Keywords that would put commands in the YAML beside the stage's own.
const SCRIPT_KEYS: [&str; 2] = ["before_script", "after_script"];

#[derive(Debug, Deserialize)]
struct Job {
    stage: String,
    script: Vec<String>,
    needs: Option<Vec<Need>>,
    #[serde(default)]
    artifacts: Artifacts,
}

/// An entry of `needs`: a job's name, or `{job, artifacts}`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Need {
    Name(String),
    Job {
        job: String,
        #[serde(default = "yes")]
        artifacts: bool,
    },
}

fn yes() -> bool {
    true
}

impl Need {
    fn job(&self) -> &str {
        match self {
            Need::Name(job) | Need::Job { job, .. } => job,
        }
    }

    fn takes_artifacts(&self) -> bool {
        match self {
            Need::Name(_) => true,
            Need::Job { artifacts, .. } => *artifacts,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
struct Artifacts {
    #[serde(default)]
    paths: Vec<String>,
}

struct Pipeline {
    stages: Vec<String>,
    variables: BTreeMap<String, String>,
    /// Every job, by name.
    jobs: BTreeMap<String, Job>,
    /// The raw document, for keyword checks.
    raw: BTreeMap<String, Value>,
}

fn load() -> Pipeline {
    let path = paths::root().join(FILE);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{FILE}: {e}"));
    parse(&text)
}

fn parse(text: &str) -> Pipeline {
    let raw: BTreeMap<String, Value> =
        serde_saphyr::from_str(text).unwrap_or_else(|e| panic!("{FILE} is not YAML: {e}"));
    let stages = serde_json::from_value(raw["stages"].clone()).expect("stages: a list of names");
    let variables = raw
        .get("variables")
        .map(|v| serde_json::from_value(v.clone()).expect("variables: a map of strings"))
        .unwrap_or_default();
    let jobs = raw
        .iter()
        .filter(|(key, _)| !GLOBAL_KEYS.contains(&key.as_str()))
        .map(|(name, value)| {
            let job = serde_json::from_value(value.clone())
                .unwrap_or_else(|e| panic!("{FILE}: job {name}: {e}"));
            (name.clone(), job)
        })
        .collect();
    Pipeline { stages, variables, jobs, raw }
}

/// What each stage reads from `artifacts/` (written by an earlier stage).
fn reads(stage: &str) -> Vec<PathBuf> {
    match stage {
        "build" => vec![artifacts::model_path()],
        "integration" => vec![artifacts::model_path(), artifacts::images_path()],
        "deploy" => vec![artifacts::images_path()],
        _ => vec![],
    }
}

/// What each stage writes in `artifacts/` for later ones.
fn writes(stage: &str) -> Vec<PathBuf> {
    match stage {
        "train" => vec![artifacts::model_path(), artifacts::metrics_path()],
        "build" => vec![artifacts::images_path()],
        _ => vec![],
    }
}

/// A path of `artifacts/` as the YAML names it (relative to the root).
fn relative(path: &std::path::Path) -> String {
    path.strip_prefix(paths::root()).unwrap().to_string_lossy().into_owned()
}

/// The stage list differs from `ci`'s jobs.
fn order_problems(p: &Pipeline, ci_jobs: &[&str]) -> Vec<String> {
    if p.stages == ci_jobs {
        return vec![];
    }
    vec![format!("stages are {:?}, `cargo xtask ci` runs {ci_jobs:?}", p.stages)]
}

/// Jobs that are not one `cargo xtask <stage>` of an existing stage, and
/// commands the YAML adds around them.
fn job_problems(p: &Pipeline, subcommands: &[String]) -> Vec<String> {
    let mut problems = Vec::new();
    for (name, job) in &p.jobs {
        if !p.stages.contains(&job.stage) {
            problems.push(format!("job {name}: stage {} is not in stages", job.stage));
        }
        if &job.stage != name {
            problems.push(format!("job {name} runs in stage {}", job.stage));
        }
        if job.script != [format!("cargo xtask {name}")] {
            problems
                .push(format!("job {name}'s script is {:?}, not `cargo xtask {name}`", job.script));
        }
        if !subcommands.contains(name) {
            problems.push(format!("`cargo xtask {name}` does not exist"));
        }
    }
    for stage in &p.stages {
        if !p.jobs.contains_key(stage) {
            problems.push(format!("stage {stage} has no job"));
        }
    }
    let mut scopes: Vec<(&str, &Value)> =
        p.raw.get("default").map(|d| ("default", d)).into_iter().collect();
    scopes.extend(p.raw.iter().filter(|(k, _)| p.jobs.contains_key(*k)).map(|(k, v)| (&**k, v)));
    for key in SCRIPT_KEYS {
        if p.raw.contains_key(key) {
            problems.push(format!("{key} at the top level"));
        }
        for (scope, value) in &scopes {
            if value.get(key).is_some() {
                problems.push(format!("{key} in {scope}: the logic belongs in xtask"));
            }
        }
    }
    problems
}

/// Files a stage reads that no earlier job hands its job, `needs` on jobs
/// that do not run before, and outputs a job does not keep.
fn handoff_problems(p: &Pipeline) -> Vec<String> {
    let mut problems = Vec::new();
    let position = |stage: &str| p.stages.iter().position(|s| s == stage).unwrap_or(usize::MAX);
    for (name, job) in &p.jobs {
        // GitLab's rule: with `needs`, the artifacts of the jobs named
        // (unless `artifacts: false`); without, of every earlier stage's.
        let givers: Vec<&str> = match &job.needs {
            Some(needs) => {
                for need in needs {
                    match p.jobs.get(need.job()) {
                        None => problems.push(format!("job {name} needs {}, no job", need.job())),
                        Some(giver) if position(&giver.stage) >= position(&job.stage) => problems
                            .push(format!(
                                "job {name} needs {}, which does not run before it",
                                need.job()
                            )),
                        Some(_) => {}
                    }
                }
                needs.iter().filter(|n| n.takes_artifacts()).map(Need::job).collect()
            }
            None => p
                .jobs
                .iter()
                .filter(|(_, j)| position(&j.stage) < position(&job.stage))
                .map(|(n, _)| n.as_str())
                .collect(),
        };
        for file in reads(name) {
            let file = relative(&file);
            let handed = givers.iter().any(|g| {
                p.jobs.get(*g).is_some_and(|giver| {
                    position(&giver.stage) < position(&job.stage)
                        && giver.artifacts.paths.contains(&file)
                })
            });
            if !handed {
                problems.push(format!(
                    "job {name} reads {file}, but no earlier job it takes artifacts from ({givers:?}) keeps it"
                ));
            }
        }
        for file in writes(name) {
            let file = relative(&file);
            if !job.artifacts.paths.contains(&file) {
                problems.push(format!("job {name} does not keep {file}"));
            }
        }
    }
    problems
}

fn ci_jobs() -> Vec<&'static str> {
    steps().iter().filter(|s| s.job).map(|s| s.name).collect()
}

fn subcommands() -> Vec<String> {
    Cli::command().get_subcommands().map(|c| c.get_name().to_owned()).collect()
}

#[test]
fn the_stages_are_cis_jobs_in_the_same_order() {
    assert_eq!(ci_jobs(), ["lint", "smoke", "unit", "train", "build", "integration", "deploy"]);
    assert_eq!(order_problems(&load(), &ci_jobs()), Vec::<String>::new());
}

#[test]
fn each_stage_has_one_job_running_its_xtask_stage_and_nothing_else() {
    assert_eq!(job_problems(&load(), &subcommands()), Vec::<String>::new());
}

#[test]
fn what_a_job_reads_an_earlier_job_hands_it() {
    assert_eq!(handoff_problems(&load()), Vec::<String>::new());
}

/// A pipeline of the three stages that hand files on, with `edit` applied
/// to its text.
fn small_pipeline(edit: impl Fn(String) -> String) -> Pipeline {
    let text = "stages: [train, build, integration]\n\
                train:\n  stage: train\n  script: [cargo xtask train]\n  \
                artifacts:\n    paths: [artifacts/model.json, artifacts/metrics.json]\n\
                build:\n  stage: build\n  needs: [train]\n  script: [cargo xtask build]\n  \
                artifacts:\n    paths: [artifacts/images.json]\n\
                integration:\n  stage: integration\n  needs: [train, {job: build, artifacts: true}]\n  \
                script: [cargo xtask integration]\n";
    parse(&edit(text.to_owned()))
}

#[test]
fn the_checks_catch_a_broken_pipeline() {
    let ok = small_pipeline(|t| t);
    assert_eq!(handoff_problems(&ok), Vec::<String>::new());
    assert_eq!(job_problems(&ok, &subcommands()), Vec::<String>::new());
    assert_eq!(order_problems(&ok, &["train", "build", "integration"]), Vec::<String>::new());

    let expect = |problems: Vec<String>, part: &str| {
        assert!(problems.iter().any(|p| p.contains(part)), "expected {part:?} in {problems:?}")
    };
    // Out of order.
    let swapped =
        small_pipeline(|t| t.replace("[train, build, integration]", "[build, train, integration]"));
    expect(order_problems(&swapped, &["train", "build", "integration"]), "stages are");
    expect(handoff_problems(&swapped), "needs train, which does not run before it");
    // Handed nothing: the model not kept, the build record not taken.
    expect(
        handoff_problems(&small_pipeline(|t| t.replace("artifacts/model.json, ", ""))),
        "job build reads artifacts/model.json",
    );
    expect(
        handoff_problems(&small_pipeline(|t| t.replace("artifacts: true", "artifacts: false"))),
        "job integration reads artifacts/images.json",
    );
    // Without needs, every earlier stage's artifacts are handed on.
    let no_needs =
        small_pipeline(|t| t.replace("  needs: [train, {job: build, artifacts: true}]\n", ""));
    assert_eq!(handoff_problems(&no_needs), Vec::<String>::new());
    // A stage xtask lacks, and logic in the YAML.
    let renamed = small_pipeline(|t| t.replace("integration", "acceptance"));
    expect(job_problems(&renamed, &subcommands()), "`cargo xtask acceptance` does not exist");
    let scripted = small_pipeline(|t| {
        t.replace("script: [cargo xtask build]", "script: [cargo xtask build, docker push x]")
    });
    expect(job_problems(&scripted, &subcommands()), "job build's script");
    let before = small_pipeline(|t| t + "default:\n  before_script: [make]\n");
    expect(job_problems(&before, &subcommands()), "before_script in default");
}

/// Keeps `reads` true: a stage that loads the model or the build record
/// is declared to read it.
#[test]
fn the_declared_reads_are_the_stages_code() {
    let p = load();
    let uses =
        [("load_model(", artifacts::model_path()), ("Built::last()", artifacts::images_path())];
    for stage in &p.stages {
        let source = paths::root().join(format!("xtask/src/stages/{stage}.rs"));
        let source = std::fs::read_to_string(&source)
            .unwrap_or_else(|e| panic!("{}: {e}", source.display()));
        for (call, file) in &uses {
            assert_eq!(
                source.contains(call),
                reads(stage).contains(file),
                "stage {stage}: calls {call} but reads() says otherwise, or the reverse"
            );
        }
    }
}

#[test]
fn nothing_the_pipeline_writes_in_the_work_tree_makes_it_dirty() {
    let p = load();
    let mut written: Vec<String> =
        p.jobs.values().flat_map(|j| j.artifacts.paths.iter().cloned()).collect();
    for value in p.variables.values() {
        if let Some(inside) = value.strip_prefix("$CI_PROJECT_DIR/") {
            written.push(inside.to_owned());
        }
    }
    let cached = &p.raw["default"]["cache"]["paths"];
    written.extend(
        cached.as_array().into_iter().flatten().filter_map(Value::as_str).map(str::to_owned),
    );
    assert!(written.iter().any(|w| w.starts_with(".cargo-home")), "{written:?}");
    for path in written {
        let mut check = cmd("git", ["check-ignore", "-q", "--no-index", &path]);
        check.current_dir(paths::root());
        let status = check.status().expect("git runs");
        assert!(status.success(), "{path} is not ignored by git: CI would build a -dirty tag");
    }
}

#[test]
fn the_deploy_job_deploys_the_commit_to_the_stacks_controller() {
    let p = load();
    let deploy = &p.raw["deploy"]["variables"];
    assert_eq!(deploy["TAXI_DEPLOY_TAG"], "$CI_COMMIT_SHA");
    let manifest = deploy["TAXI_MANIFEST"].as_str().unwrap();
    assert_eq!(paths::root().join(manifest), paths::live_manifest());
    let controller = deploy["TAXI_CONTROLLER"].as_str().unwrap();
    assert_eq!(controller.trim_start_matches("http://"), rollout::ADDR);
    assert_eq!(deploy["TAXI_REGISTRY"], bluegreen::REGISTRY_ADDR);
}
