//! The desired state: `manifests/rollout.yaml`, Kubernetes style.
//!
//! The file is parsed into raw structs that mirror it (unknown fields
//! refused), then validated into [`Desired`], the only form the rest of
//! the controller sees. Errors name the field and, where the file has it,
//! its line. [`set_tag`] edits `spec.image.tag` in place, so comments and
//! the rest of the file survive a deploy.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::reference;
pub mod strategy;

use self::strategy::{RawShadow, RawStrategy, Shadow, Strategy};

pub const API_VERSION: &str = "deploy.taxi-fare.io/v1";
pub const KIND: &str = "Rollout";

/// The limits a manifest's knobs must stay within.
const MAX_REPLICAS: u32 = 8;
const MAX_HEALTH_TIMEOUT: Duration = Duration::from_secs(15 * 60);
const MAX_SCALE_DOWN_DELAY: Duration = Duration::from_secs(60 * 60);
const MAX_PROBE_TIMEOUT: Duration = Duration::from_secs(60);
const MIB: u64 = 1 << 20;
const MEMORY: (u64, u64) = (32 * MIB, 64 << 30);
const PIDS: (u32, u32) = (32, 32_768);
/// In billionths of a CPU, as the engine counts them: 0.01 to 64 CPUs.
const NANO_CPUS: (u64, u64) = (10_000_000, 64_000_000_000);

/// The validated desired state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Desired {
    pub repository: String,
    pub tag: String,
    /// Containers per color; all must be healthy before a switch.
    pub replicas: u32,
    /// How long a new color may take to become healthy.
    #[serde(with = "millis")]
    pub health_timeout: Duration,
    pub probe: Probe,
    /// How long the old color keeps running after a switch, so a rollback
    /// in that window is instant.
    #[serde(with = "millis")]
    pub scale_down_delay: Duration,
    /// What the new model must prove before traffic moves to it.
    #[serde(default)]
    pub gates: Gates,
    /// What the new color must keep showing after traffic moved to it.
    #[serde(default)]
    pub analysis: Analysis,
    /// Switch as soon as the gates pass; when false, pause with the new
    /// color on the preview port until `controller promote`.
    #[serde(default = "yes")]
    pub auto_promote: bool,
    /// What each app container may use. Left out of the JSON while it
    /// is the default, so a desired state recorded before the field
    /// existed keeps its fingerprint (a failed tag stays not retried).
    #[serde(default, skip_serializing_if = "Resources::is_default")]
    pub resources: Resources,
    /// How traffic moves to the new color; left out of the JSON while
    /// blue-green, for the same reason.
    #[serde(default, skip_serializing_if = "Strategy::is_blue_green")]
    pub strategy: Strategy,
    /// Live predictions mirrored to the new color and its answers compared
    /// with the live color's before traffic moves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<Shadow>,
}

fn yes() -> bool {
    true
}

/// The model gates before a switch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gates {
    /// Send the artifact's golden trips to the new color and require its
    /// fares and model version.
    pub golden: bool,
    /// The new model's held-out RMSE may exceed the live model's by at
    /// most this fraction (0.05 for `5%`).
    pub max_rmse_increase: Option<f64>,
    /// The new model's held-out R² must be at least this.
    pub min_r2: Option<f64>,
    /// The p99 of a warm-up burst sent to the new color must be within
    /// this before the switch (retried until the health timeout).
    #[serde(default, with = "millis_opt")]
    pub latency_budget: Option<Duration>,
}

/// The analysis after a switch, while the old color still runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Analysis {
    /// How long after the switch the new color is watched (0: not at all).
    #[serde(with = "millis")]
    pub window: Duration,
    /// Share of predictions answered 5xx above which it is rolled back.
    pub max_error_rate: f64,
    /// p99 of predictions above which it is rolled back.
    #[serde(with = "millis")]
    pub max_p99: Duration,
    /// Predictions needed before judging.
    pub min_requests: u32,
    /// PromQL queries each reading also asks Prometheus, with the bounds
    /// their value must keep.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub queries: Vec<Query>,
}

/// A PromQL query of the analysis. `{{color}}` and `{{tag}}` in it stand
/// for the new color and its tag.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Query {
    pub name: String,
    pub query: String,
    pub min: Option<f64>,
    pub max: Option<f64>,
}

impl Query {
    /// The query as sent, for `color` running `tag`.
    pub fn render(&self, color: &str, tag: &str) -> String {
        self.query.replace("{{color}}", color).replace("{{tag}}", tag)
    }

    /// Whether `value` keeps the bounds; the reason when it does not.
    pub fn check(&self, value: f64) -> Result<(), String> {
        let below = self.min.filter(|min| value < *min).map(|min| format!("below {min}"));
        let above = self.max.filter(|max| value > *max).map(|max| format!("above {max}"));
        match below.or(above) {
            Some(how) => Err(format!("analysis: query {} is {value}, {how}", self.name)),
            None => Ok(()),
        }
    }
}

/// The most queries an analysis may name, and the longest query.
const MAX_QUERIES: usize = 16;
const MAX_QUERY_BYTES: usize = 4096;

impl Default for Analysis {
    fn default() -> Self {
        Analysis {
            window: Duration::from_secs(60),
            max_error_rate: 0.01,
            max_p99: Duration::from_secs(1),
            min_requests: 20,
            queries: Vec::new(),
        }
    }
}

impl Eq for Analysis {}

impl Default for Gates {
    fn default() -> Self {
        Gates { golden: true, max_rmse_increase: None, min_r2: None, latency_budget: None }
    }
}

impl Eq for Gates {}

/// The limits the engine puts on each app container, so one replica
/// cannot starve the host, the router or the controller of memory,
/// processes or CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    /// Memory in bytes; swap is not added on top of it.
    pub memory_bytes: u64,
    /// Processes and threads at once.
    pub pids: u32,
    /// A CPU quota in billionths of a CPU; `None`: no quota (throttling
    /// costs latency, and memory and pids already bound the harm).
    #[serde(default)]
    pub nano_cpus: Option<u64>,
}

impl Default for Resources {
    fn default() -> Self {
        // The service's worst case is ~140 MiB and a few dozen threads.
        Resources { memory_bytes: 512 * MIB, pids: 256, nano_cpus: None }
    }
}

impl Resources {
    fn is_default(&self) -> bool {
        *self == Resources::default()
    }
}

/// What the probe through nginx checks after a switch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Probe {
    /// Answers JSON naming the color and version that served it.
    pub path: String,
    /// Also send a known prediction request and expect 200.
    pub predict: bool,
    /// How long the new color may take to answer through nginx.
    #[serde(with = "millis")]
    pub timeout: Duration,
}

impl Desired {
    /// `repository:tag`.
    pub fn image(&self) -> String {
        format!("{}:{}", self.repository, self.tag)
    }

    /// Identifies this desired state: a failed rollout is not retried
    /// until it changes.
    pub fn fingerprint(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| self.image())
    }
}

pub(crate) mod millis_opt {
    use std::time::Duration;

    use serde::Deserialize;

    pub fn serialize<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&(d.as_millis() as u64)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        Option::<u64>::deserialize(d).map(|o| o.map(Duration::from_millis))
    }
}

pub(crate) mod millis {
    use std::time::Duration;

    use serde::Deserialize;

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

/// Why a manifest was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}{}", line.map(|l| format!(" (line {l})")).unwrap_or_default())]
pub struct ManifestError {
    /// The field's path, e.g. `spec.image.tag`, or `manifest` for the file.
    pub field: String,
    pub message: String,
    pub line: Option<usize>,
}

impl ManifestError {
    pub(crate) fn at(text: &str, field: &str, message: impl Into<String>) -> ManifestError {
        let path: Vec<&str> = field.split('.').collect();
        ManifestError {
            field: field.to_owned(),
            message: message.into(),
            line: line_of(text, &path),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawManifest {
    api_version: String,
    kind: String,
    metadata: RawMetadata,
    spec: RawSpec,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetadata {
    name: String,
    #[serde(default)]
    #[allow(dead_code)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    #[allow(dead_code)]
    annotations: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawSpec {
    image: RawImage,
    replicas: Option<u32>,
    health_timeout: Option<String>,
    probe: Option<RawProbe>,
    scale_down_delay: Option<String>,
    gates: Option<RawGates>,
    analysis: Option<RawAnalysis>,
    auto_promote: Option<bool>,
    resources: Option<RawResources>,
    strategy: Option<RawStrategy>,
    shadow: Option<RawShadow>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawResources {
    memory: Option<Scalar>,
    pids: Option<u32>,
    cpus: Option<Scalar>,
}

/// A value YAML may give as a number (`cpus: 1`) or as text (`cpus: "1"`,
/// `memory: 512Mi`).
#[derive(Deserialize)]
#[serde(untagged)]
enum Scalar {
    Number(f64),
    Text(String),
}

impl Scalar {
    fn text(&self) -> String {
        match self {
            Scalar::Number(n) => n.to_string(),
            Scalar::Text(t) => t.trim().to_owned(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawGates {
    golden: Option<bool>,
    max_rmse_increase: Option<String>,
    min_r2: Option<f64>,
    latency_budget: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawAnalysis {
    window: Option<String>,
    max_error_rate: Option<String>,
    max_p99: Option<String>,
    min_requests: Option<u32>,
    #[serde(default)]
    queries: Vec<RawQuery>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQuery {
    name: String,
    query: String,
    min: Option<f64>,
    max: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawImage {
    repository: String,
    tag: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProbe {
    path: Option<String>,
    predict: Option<bool>,
    timeout: Option<String>,
}

/// Parses and validates a manifest's text.
pub fn parse(text: &str) -> Result<Desired, ManifestError> {
    let text_of_manifest = text;
    let raw: RawManifest =
        serde_saphyr::from_str(text).map_err(|e| syntax_error(&e.to_string()))?;
    if raw.api_version != API_VERSION {
        return Err(ManifestError::at(
            text,
            "apiVersion",
            format!("is {:?}, expected {API_VERSION:?}", raw.api_version),
        ));
    }
    if raw.kind != KIND {
        return Err(ManifestError::at(
            text,
            "kind",
            format!("is {:?}, expected {KIND:?}", raw.kind),
        ));
    }
    if raw.metadata.name.trim().is_empty() {
        return Err(ManifestError::at(text, "metadata.name", "must not be empty"));
    }
    let spec = raw.spec;
    reference::check_repository(&spec.image.repository)
        .map_err(|m| ManifestError::at(text, "spec.image.repository", m))?;
    reference::check_tag(&spec.image.tag)
        .map_err(|m| ManifestError::at(text, "spec.image.tag", m))?;

    let replicas = spec.replicas.unwrap_or(1);
    if !(1..=MAX_REPLICAS).contains(&replicas) {
        return Err(ManifestError::at(
            text,
            "spec.replicas",
            format!("is {replicas}, must be 1 to {MAX_REPLICAS}"),
        ));
    }
    let duration =
        |field: &str, value: Option<&str>, default: Duration, min: Duration, max: Duration| {
            let Some(value) = value else { return Ok(default) };
            let d = humantime::parse_duration(value.trim()).map_err(|e| {
                ManifestError::at(
                    text,
                    field,
                    format!("{value:?} is not a duration like 90s or 2m: {e}"),
                )
            })?;
            if d < min || d > max {
                return Err(ManifestError::at(
                    text,
                    field,
                    format!(
                        "is {value}, must be from {} to {}",
                        humantime::format_duration(min),
                        humantime::format_duration(max)
                    ),
                ));
            }
            Ok(d)
        };
    let health_timeout = duration(
        "spec.healthTimeout",
        spec.health_timeout.as_deref(),
        Duration::from_secs(60),
        Duration::from_secs(1),
        MAX_HEALTH_TIMEOUT,
    )?;
    let scale_down_delay = duration(
        "spec.scaleDownDelay",
        spec.scale_down_delay.as_deref(),
        Duration::from_secs(10),
        Duration::ZERO,
        MAX_SCALE_DOWN_DELAY,
    )?;
    let raw_probe = spec.probe.unwrap_or(RawProbe { path: None, predict: None, timeout: None });
    let path = raw_probe.path.unwrap_or_else(|| "/".to_owned());
    if !path.starts_with('/') || path.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(ManifestError::at(
            text,
            "spec.probe.path",
            format!("{path:?} must be an absolute path such as /"),
        ));
    }
    let probe = Probe {
        path,
        predict: raw_probe.predict.unwrap_or(true),
        timeout: duration(
            "spec.probe.timeout",
            raw_probe.timeout.as_deref(),
            Duration::from_secs(10),
            Duration::from_millis(100),
            MAX_PROBE_TIMEOUT,
        )?,
    };
    let gates = match spec.gates {
        None => Gates::default(),
        Some(raw) => {
            let max_rmse_increase = match raw.max_rmse_increase {
                None => None,
                Some(text) => Some(percent(&text).ok_or_else(|| {
                    ManifestError::at(
                        text_of_manifest,
                        "spec.gates.maxRmseIncrease",
                        format!("{text:?} is not a percentage from 0% to 1000% such as 5%"),
                    )
                })?),
            };
            if let Some(r2) = raw.min_r2.filter(|r| !(r.is_finite() && *r <= 1.0)) {
                return Err(ManifestError::at(
                    text_of_manifest,
                    "spec.gates.minR2",
                    format!("is {r2}, must be a number up to 1"),
                ));
            }
            let latency_budget = match raw.latency_budget.as_deref() {
                None => None,
                Some(v) => Some(duration(
                    "spec.gates.latencyBudget",
                    Some(v),
                    Duration::ZERO,
                    Duration::from_millis(1),
                    MAX_PROBE_TIMEOUT,
                )?),
            };
            Gates {
                golden: raw.golden.unwrap_or(true),
                max_rmse_increase,
                min_r2: raw.min_r2,
                latency_budget,
            }
        }
    };
    let analysis = match spec.analysis {
        None => Analysis::default(),
        Some(raw) => {
            let defaults = Analysis::default();
            let max_error_rate = match raw.max_error_rate {
                None => defaults.max_error_rate,
                Some(text) => percent(&text).filter(|p| *p <= 1.0).ok_or_else(|| {
                    ManifestError::at(
                        text_of_manifest,
                        "spec.analysis.maxErrorRate",
                        format!("{text:?} is not a percentage from 0% to 100% such as 1%"),
                    )
                })?,
            };
            Analysis {
                window: duration(
                    "spec.analysis.window",
                    raw.window.as_deref(),
                    defaults.window,
                    Duration::ZERO,
                    MAX_SCALE_DOWN_DELAY,
                )?,
                max_error_rate,
                max_p99: duration(
                    "spec.analysis.maxP99",
                    raw.max_p99.as_deref(),
                    defaults.max_p99,
                    Duration::from_millis(1),
                    MAX_PROBE_TIMEOUT,
                )?,
                min_requests: raw.min_requests.unwrap_or(defaults.min_requests),
                queries: queries(text, raw.queries)?,
            }
        }
    };
    fn queries(text: &str, raw: Vec<RawQuery>) -> Result<Vec<Query>, ManifestError> {
        if raw.len() > MAX_QUERIES {
            let why = format!("{} queries, at most {MAX_QUERIES}", raw.len());
            return Err(ManifestError::at(text, "spec.analysis.queries", why));
        }
        let mut out: Vec<Query> = Vec::with_capacity(raw.len());
        for (i, q) in raw.into_iter().enumerate() {
            let field = format!("spec.analysis.queries[{i}]");
            let refuse = |why: &str| Err(ManifestError::at(text, &field, why));
            if q.name.trim().is_empty() || out.iter().any(|o| o.name == q.name) {
                return refuse("needs a name of its own");
            }
            if q.query.trim().is_empty() || q.query.len() > MAX_QUERY_BYTES {
                return refuse("needs a query of at most 4096 bytes");
            }
            let finite = |v: Option<f64>| v.is_none_or(f64::is_finite);
            if (q.min.is_none() && q.max.is_none()) || !finite(q.min) || !finite(q.max) {
                return refuse("needs a finite min or max for its value");
            }
            out.push(Query { name: q.name, query: q.query, min: q.min, max: q.max });
        }
        Ok(out)
    }
    let resources = match spec.resources {
        None => Resources::default(),
        Some(raw) => resources(text, raw)?,
    };
    let auto_promote = spec.auto_promote.unwrap_or(true);
    let strategy = match spec.strategy {
        None => Strategy::BlueGreen,
        Some(raw) => strategy::strategy(text, raw, auto_promote)?,
    };
    let shadow = spec.shadow.map(|raw| strategy::shadow(text, raw)).transpose()?;
    Ok(Desired {
        repository: spec.image.repository,
        tag: spec.image.tag,
        replicas,
        health_timeout,
        probe,
        scale_down_delay,
        gates,
        analysis,
        auto_promote,
        resources,
        strategy,
        shadow,
    })
}

/// `spec.resources`, each field within its bounds; a field left out
/// keeps its default.
fn resources(text: &str, raw: RawResources) -> Result<Resources, ManifestError> {
    let defaults = Resources::default();
    let memory_bytes = match raw.memory {
        None => defaults.memory_bytes,
        Some(value) => {
            let value = value.text();
            let field = "spec.resources.memory";
            let bytes = bytes(&value).ok_or_else(|| {
                ManifestError::at(text, field, format!("{value:?} is not a size like 512Mi or 1Gi"))
            })?;
            if !(MEMORY.0..=MEMORY.1).contains(&bytes) {
                return Err(ManifestError::at(
                    text,
                    field,
                    format!(
                        "is {value}, must be from {}Mi to {}Gi",
                        MEMORY.0 / MIB,
                        MEMORY.1 >> 30
                    ),
                ));
            }
            bytes
        }
    };
    let pids = raw.pids.unwrap_or(defaults.pids);
    if !(PIDS.0..=PIDS.1).contains(&pids) {
        return Err(ManifestError::at(
            text,
            "spec.resources.pids",
            format!("is {pids}, must be {} to {}", PIDS.0, PIDS.1),
        ));
    }
    let nano_cpus = match raw.cpus {
        None => defaults.nano_cpus,
        Some(value) => {
            let value = value.text();
            let field = "spec.resources.cpus";
            let nano = nano_cpus(&value).ok_or_else(|| {
                ManifestError::at(
                    text,
                    field,
                    format!("{value:?} is not a number of CPUs like 1, 0.5 or 500m"),
                )
            })?;
            if !(NANO_CPUS.0..=NANO_CPUS.1).contains(&nano) {
                return Err(ManifestError::at(
                    text,
                    field,
                    format!("is {value}, must be from 0.01 to {}", NANO_CPUS.1 / 1_000_000_000),
                ));
            }
            Some(nano)
        }
    };
    Ok(Resources { memory_bytes, pids, nano_cpus })
}

/// `512Mi` → 536870912: a number of bytes with an optional suffix, binary
/// (`Ki`, `Mi`, `Gi`) or decimal (`k`, `M`, `G`), as Kubernetes writes
/// quantities. Docker's `512m` (which Kubernetes reads as 0.512) is
/// refused rather than guessed at.
fn bytes(text: &str) -> Option<u64> {
    const UNITS: [(&str, f64); 6] = [
        ("Ki", 1024.0),
        ("Mi", 1_048_576.0),
        ("Gi", 1_073_741_824.0),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
    ];
    let (number, unit) = UNITS
        .iter()
        .find_map(|(suffix, unit)| text.strip_suffix(suffix).map(|n| (n, *unit)))
        .unwrap_or((text, 1.0));
    let value: f64 = number.trim().parse().ok()?;
    let bytes = value * unit;
    (bytes.is_finite() && bytes >= 0.0 && bytes < u64::MAX as f64).then(|| bytes.round() as u64)
}

/// `1` → 1e9, `0.5` → 5e8, `500m` (millicores) → 5e8.
fn nano_cpus(text: &str) -> Option<u64> {
    let (number, unit) = match text.strip_suffix('m') {
        Some(milli) => (milli, 1e6),
        None => (text, 1e9),
    };
    let value: f64 = number.trim().parse().ok()?;
    let nano = value * unit;
    (nano.is_finite() && nano >= 0.0 && nano < u64::MAX as f64).then(|| nano.round() as u64)
}

/// `5%` → 0.05.
pub(crate) fn percent(text: &str) -> Option<f64> {
    let value: f64 = text.trim().strip_suffix('%')?.trim().parse().ok()?;
    (value.is_finite() && (0.0..=1000.0).contains(&value)).then_some(value / 100.0)
}

/// A parser error, with the line the parser names pulled out.
fn syntax_error(message: &str) -> ManifestError {
    let line = message
        .split("line ")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok());
    let first = message.lines().next().unwrap_or(message).trim();
    ManifestError { field: "manifest".to_owned(), message: first.to_owned(), line }
}

/// Returns the text with `spec.image.tag` set to `tag`, everything else
/// (comments, order, other fields) as it was. The result is parsed again
/// and must carry the tag, so a file this cannot edit safely is refused.
pub fn set_tag(text: &str, tag: &str) -> Result<String, ManifestError> {
    reference::check_tag(tag).map_err(|m| ManifestError {
        field: "spec.image.tag".into(),
        message: m,
        line: None,
    })?;
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    match line_of(text, &["spec", "image", "tag"]) {
        Some(n) => {
            let line = &lines[n - 1];
            let indent = line.len() - line.trim_start().len();
            // The comment keeps the blanks that set it apart from the value.
            let comment = match line.find(" #") {
                Some(i) => {
                    let start = line[..i].trim_end().len();
                    line[start..].to_owned()
                }
                None => String::new(),
            };
            lines[n - 1] = format!("{}tag: {tag}{comment}", " ".repeat(indent));
        }
        None => {
            let at =
                line_of(text, &["spec", "image", "repository"]).ok_or_else(|| ManifestError {
                    field: "spec.image".into(),
                    message: "has no repository line to put the tag beside".into(),
                    line: None,
                })?;
            let line = &lines[at - 1];
            let indent = line.len() - line.trim_start().len();
            lines.insert(at, format!("{}tag: {tag}", " ".repeat(indent)));
        }
    }
    let mut edited = lines.join("\n");
    if text.ends_with('\n') {
        edited.push('\n');
    }
    let parsed = parse(&edited)?;
    if parsed.tag != tag {
        return Err(ManifestError {
            field: "spec.image.tag".into(),
            message: "the file's layout could not be edited in place".into(),
            line: None,
        });
    }
    Ok(edited)
}

/// The 1-based line of the key at `path` in a block-style YAML mapping,
/// found by indentation. Enough for manifests and error messages; flow
/// style and anchors are not followed.
pub fn line_of(text: &str, path: &[&str]) -> Option<usize> {
    let mut stack: Vec<(usize, String)> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let content = line.trim_start();
        if content.is_empty() || content.starts_with('#') || content.starts_with('-') {
            continue;
        }
        let indent = line.len() - content.len();
        let Some((key, _)) = content.split_once(':') else { continue };
        let key = key.trim().trim_matches('"').trim_matches('\'');
        while stack.last().is_some_and(|(d, _)| *d >= indent) {
            stack.pop();
        }
        stack.push((indent, key.to_owned()));
        if stack.len() == path.len() && stack.iter().zip(path).all(|((_, k), p)| k == p) {
            return Some(i + 1);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "\
# The desired state.
apiVersion: deploy.taxi-fare.io/v1
kind: Rollout
metadata:
  name: taxi-fare
spec:
  image:
    repository: localhost:5000/taxi/service
    tag: abc123  # written by CI
  replicas: 2
  healthTimeout: 45s
  probe:
    path: /
    timeout: 5s
  scaleDownDelay: 0s
";

    fn refused(text: &str) -> ManifestError {
        parse(text).expect_err("the manifest should be refused")
    }

    #[test]
    fn parses_a_full_manifest() {
        let d = parse(GOOD).unwrap();
        assert_eq!(d.image(), "localhost:5000/taxi/service:abc123");
        assert_eq!(d.replicas, 2);
        assert_eq!(d.health_timeout, Duration::from_secs(45));
        assert_eq!(d.scale_down_delay, Duration::ZERO);
        assert_eq!(
            d.probe,
            Probe { path: "/".into(), predict: true, timeout: Duration::from_secs(5) }
        );
    }

    #[test]
    fn fills_defaults() {
        let text = "apiVersion: deploy.taxi-fare.io/v1\nkind: Rollout\nmetadata: {name: x}\n\
                    spec:\n  image: {repository: r/s, tag: t}\n";
        let d = parse(text).unwrap();
        assert_eq!((d.replicas, d.health_timeout.as_secs()), (1, 60));
        assert_eq!(d.scale_down_delay, Duration::from_secs(10));
    }

    #[test]
    fn refusals_name_the_field_and_line() {
        let e = refused(&GOOD.replace("replicas: 2", "replicas: 0"));
        assert_eq!((e.field.as_str(), e.line), ("spec.replicas", Some(10)));
        let e = refused(&GOOD.replace("tag: abc123", "tag: \"has space\""));
        assert_eq!((e.field.as_str(), e.line), ("spec.image.tag", Some(9)));
        let e = refused(&GOOD.replace("45s", "soon"));
        assert_eq!((e.field.as_str(), e.line), ("spec.healthTimeout", Some(11)));
        let e = refused(
            &GOOD.replace("repository: localhost:5000/taxi/service", "repository: Bad/Repo"),
        );
        assert_eq!(e.field, "spec.image.repository");
        let e = refused(&GOOD.replace("kind: Rollout", "kind: Deployment"));
        assert_eq!((e.field.as_str(), e.line), ("kind", Some(3)));
        let e = refused(&GOOD.replace("path: /", "path: health"));
        assert_eq!(e.field, "spec.probe.path");
    }

    #[test]
    fn refuses_unknown_fields_wrong_types_and_broken_yaml() {
        let e = refused(&GOOD.replace("replicas: 2", "replica: 2"));
        assert!(e.message.contains("replica"), "{e}");
        let e = refused(&GOOD.replace("replicas: 2", "replicas: two"));
        assert_eq!(e.field, "manifest");
        assert!(e.line.is_some(), "{e}");
        let e = refused("spec: [unclosed\n");
        assert_eq!(e.field, "manifest");
        assert!(refused("").message.len() > 3);
    }

    #[test]
    fn sets_the_tag_in_place() {
        let edited = set_tag(GOOD, "def456").unwrap();
        assert_eq!(parse(&edited).unwrap().tag, "def456");
        assert!(edited.contains("    tag: def456  # written by CI\n"), "{edited}");
        assert_eq!(edited.replace("def456", "abc123"), GOOD);
        let no_tag = GOOD.replace("    tag: abc123  # written by CI\n", "");
        assert_eq!(parse(&set_tag(&no_tag, "v1").unwrap()).unwrap().tag, "v1");
        assert!(set_tag(GOOD, "bad tag").is_err());
        assert!(set_tag("image: {tag: x}", "v2").is_err());
    }

    #[test]
    fn reads_the_gates() {
        let text =
            format!("{GOOD}  gates:\n    golden: false\n    maxRmseIncrease: 5%\n    minR2: 0.7\n");
        let g = parse(&text).unwrap().gates;
        assert_eq!((g.golden, g.max_rmse_increase, g.min_r2), (false, Some(0.05), Some(0.7)));
        assert_eq!(parse(GOOD).unwrap().gates, Gates::default());
        let e = refused(&text.replace("5%", "five"));
        assert_eq!((e.field.as_str(), e.line), ("spec.gates.maxRmseIncrease", Some(18)));
        let e = refused(&text.replace("0.7", "1.5"));
        assert_eq!(e.field, "spec.gates.minR2");
    }

    #[test]
    fn reads_the_resources() {
        let text =
            format!("{GOOD}  resources:\n    memory: 1Gi\n    pids: 100\n    cpus: \"1.5\"\n");
        let r = parse(&text).unwrap().resources;
        assert_eq!(
            r,
            Resources { memory_bytes: 1 << 30, pids: 100, nano_cpus: Some(1_500_000_000) }
        );
        assert_eq!(parse(GOOD).unwrap().resources, Resources::default());
        for (cpus, nano) in [("2", 2_000_000_000), ("0.5", 500_000_000), ("250m", 250_000_000)] {
            let r = parse(&text.replace("\"1.5\"", cpus)).unwrap().resources;
            assert_eq!(r.nano_cpus, Some(nano), "{cpus}");
        }
        for (memory, bytes) in [("256Mi", 256 << 20), ("100M", 100_000_000), ("67108864", 64 << 20)]
        {
            let r = parse(&text.replace("1Gi", memory)).unwrap().resources;
            assert_eq!(r.memory_bytes, bytes, "{memory}");
        }
        // A field left out keeps its default.
        let r = parse(&format!("{GOOD}  resources:\n    pids: 64\n")).unwrap().resources;
        assert_eq!((r.memory_bytes, r.pids, r.nano_cpus), (512 << 20, 64, None));
    }

    #[test]
    fn reads_the_analysis_queries_and_refuses_bad_ones() {
        let queries = "  analysis:\n    queries:\n      - name: errors\n        query: sum(rate(x{color=\"{{color}}\"}[1m]))\n        max: 0.01\n";
        let d = parse(&format!("{GOOD}{queries}")).unwrap();
        let q = &d.analysis.queries[0];
        assert_eq!((q.name.as_str(), q.min, q.max), ("errors", None, Some(0.01)));
        assert_eq!(q.render("green", "v2"), "sum(rate(x{color=\"green\"}[1m]))");
        assert!(q.check(0.02).unwrap_err().contains("above 0.01"));
        // Without queries the fingerprint is the one recorded before.
        assert!(!parse(GOOD).unwrap().fingerprint().contains("queries"));
        for (bad, why) in [
            (queries.replace("        max: 0.01\n", ""), "finite min or max"),
            (queries.replace("name: errors", "name: \"\""), "a name of its own"),
            (
                format!("{queries}      - name: errors\n        query: up\n        min: 1\n"),
                "a name of its own",
            ),
        ] {
            let e = parse(&format!("{GOOD}{bad}")).unwrap_err().to_string();
            assert!(e.contains("spec.analysis.queries[") && e.contains(why), "{e}");
        }
    }

    #[test]
    fn refuses_resources_out_of_bounds_naming_the_field() {
        let text = format!("{GOOD}  resources:\n    memory: 1Gi\n    pids: 100\n    cpus: 1\n");
        let e = refused(&text.replace("1Gi", "8Mi"));
        assert_eq!((e.field.as_str(), e.line), ("spec.resources.memory", Some(17)));
        assert!(e.message.contains("32Mi to 64Gi"), "{e}");
        let e = refused(&text.replace("1Gi", "512m"));
        assert_eq!(e.field, "spec.resources.memory");
        assert!(e.message.contains("not a size"), "{e}");
        let e = refused(&text.replace("1Gi", "lots"));
        assert_eq!(e.field, "spec.resources.memory");
        let e = refused(&text.replace("pids: 100", "pids: 1"));
        assert_eq!((e.field.as_str(), e.line), ("spec.resources.pids", Some(18)));
        let e = refused(&text.replace("cpus: 1", "cpus: 100"));
        assert_eq!((e.field.as_str(), e.line), ("spec.resources.cpus", Some(19)));
        let e = refused(&text.replace("cpus: 1", "cpus: 1m"));
        assert_eq!(e.field, "spec.resources.cpus");
        let e = refused(&text.replace("cpus: 1", "cpus: many"));
        assert!(e.message.contains("not a number of CPUs"), "{e}");
        let e = refused(&text.replace("pids: 100", "pid: 100"));
        assert!(e.message.contains("pid"), "{e}");
    }

    #[test]
    fn the_tracked_manifest_documents_the_default_resources() {
        let tracked = include_str!("../../manifests/rollout.yaml");
        assert_eq!(parse(tracked).unwrap().resources, Resources::default());
    }

    #[test]
    fn default_resources_keep_the_recorded_form() {
        // A desired state recorded before `resources` existed loads, with
        // the defaults, and keeps its fingerprint.
        let d = parse(GOOD).unwrap();
        let json = d.fingerprint();
        assert!(!json.contains("resources"), "{json}");
        let loaded: Desired = serde_json::from_str(&json).unwrap();
        assert_eq!(loaded, d);
        let mut limited = d.clone();
        limited.resources.pids = 64;
        assert_ne!(limited.fingerprint(), d.fingerprint());
        let loaded: Desired = serde_json::from_str(&limited.fingerprint()).unwrap();
        assert_eq!(loaded.resources.pids, 64);
    }

    #[test]
    fn finds_lines_by_path() {
        assert_eq!(line_of(GOOD, &["spec", "image", "tag"]), Some(9));
        assert_eq!(line_of(GOOD, &["spec", "probe", "path"]), Some(13));
        assert_eq!(line_of(GOOD, &["spec", "tag"]), None);
    }

    #[test]
    fn fingerprint_changes_with_any_knob() {
        let a = parse(GOOD).unwrap();
        let b = parse(&GOOD.replace("45s", "46s")).unwrap();
        assert_ne!(a.fingerprint(), b.fingerprint());
        assert_eq!(a.fingerprint(), parse(GOOD).unwrap().fingerprint());
    }
}
