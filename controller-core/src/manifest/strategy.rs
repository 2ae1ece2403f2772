//! How traffic moves to a new color, in Argo Rollouts' words:
//! `spec.strategy.blueGreen` (one switch, the default) or
//! `spec.strategy.canary.steps` (`setWeight`, `pause`, `analysis`), and
//! `spec.shadow`, live predictions mirrored to the new color and the two
//! colors' answers compared before any traffic moves.
//!
//! The manifest's raw form is validated here into [`Strategy`] and
//! [`Shadow`]; a malformed step is refused with its field path
//! (`spec.strategy.canary.steps[2].setWeight`) and its line, and traffic
//! stays where it is.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{ManifestError, line_of, millis, millis_opt, percent};

/// The most steps a canary may have.
pub const MAX_STEPS: usize = 32;
/// The longest timed pause, analysis step or shadow.
const MAX_WAIT: Duration = Duration::from_secs(60 * 60);
/// The most predictions a comparison may ask for.
const MAX_MIN_REQUESTS: u32 = 1_000_000;
/// The largest latency floor of a comparison.
const MAX_P99_FLOOR: Duration = Duration::from_secs(60);

/// How a rollout moves traffic. Left out of the desired state's JSON
/// while blue-green, so records made before strategies existed keep
/// their fingerprints.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// All traffic at once, once the new color is proven.
    #[default]
    BlueGreen,
    /// Traffic moved in steps; past the last one the canary is promoted.
    Canary { steps: Vec<CanaryStep> },
}

impl Eq for Strategy {}

impl Strategy {
    pub fn is_blue_green(&self) -> bool {
        *self == Strategy::BlueGreen
    }

    /// The canary's steps (none for blue-green).
    pub fn steps(&self) -> &[CanaryStep] {
        match self {
            Strategy::BlueGreen => &[],
            Strategy::Canary { steps } => steps,
        }
    }
}

/// One step of a canary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CanaryStep {
    /// The share of live traffic, in percent (1 to 100), the new color
    /// takes from here on; 100 promotes it.
    SetWeight(u8),
    /// Wait this long, or (`None`) until `controller promote`.
    Pause {
        #[serde(with = "millis_opt")]
        duration: Option<Duration>,
    },
    /// Compare the two colors on the same traffic over an interval.
    Analysis(Comparison),
}

/// The thresholds of a canary's analysis step: the new color's figures
/// against the stable color's over the same interval, each with an
/// absolute floor so that a stable color with no faults at all does not
/// make one fault a failure (Kayenta's way).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    /// How long the interval lasts.
    #[serde(with = "millis")]
    pub duration: Duration,
    /// Judged predictions each color must have answered in the interval:
    /// fewer never passes.
    pub min_requests: u32,
    /// The new color's fault rate may be at most this many times the
    /// stable color's…
    pub max_error_ratio: f64,
    /// …or this share, whichever is larger.
    pub error_rate_floor: f64,
    /// The new color's p99 (small batches) may be at most this many times
    /// the stable color's…
    pub max_p99_ratio: f64,
    /// …or this, whichever is larger.
    #[serde(with = "millis")]
    pub p99_floor: Duration,
}

impl Comparison {
    /// The thresholds a step gets for what it leaves out.
    pub fn defaults(duration: Duration) -> Comparison {
        Comparison {
            duration,
            min_requests: 50,
            max_error_ratio: 2.0,
            error_rate_floor: 0.01,
            max_p99_ratio: 1.5,
            p99_floor: Duration::from_millis(50),
        }
    }
}

/// `spec.shadow`: live predictions mirrored to the new color for
/// `duration` before any traffic moves; both colors' answers to the same
/// requests are compared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Shadow {
    #[serde(with = "millis")]
    pub duration: Duration,
    /// Requests both colors must have answered: fewer never passes.
    pub min_requests: u32,
    /// A fare that moves by more than this, in dollars, has changed.
    pub tolerance: f64,
    /// Most share of compared requests whose answer may change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_changed: Option<f64>,
    /// Most population stability index of the fare distribution.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_psi: Option<f64>,
    /// Most mean absolute change of a fare, in dollars.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_mean_change: Option<f64>,
}

impl Eq for Comparison {}
impl Eq for CanaryStep {}
impl Eq for Shadow {}

/// `spec.strategy` as written: exactly one of the two.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct RawStrategy {
    blue_green: Option<RawBlueGreen>,
    canary: Option<RawCanary>,
}

/// Blue-green's knobs stay where they were (`spec.autoPromote`,
/// `spec.scaleDownDelay`): the block is empty.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBlueGreen {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCanary {
    /// Read as plain values, so that each step is refused with its own
    /// path and line rather than the parser's "unknown variant".
    steps: Vec<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPause {
    duration: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawComparison {
    duration: String,
    min_requests: Option<Value>,
    max_error_ratio: Option<Value>,
    error_rate_floor: Option<Value>,
    max_p99_ratio: Option<Value>,
    p99_floor: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct RawShadow {
    duration: Option<String>,
    min_requests: Option<u32>,
    tolerance: Option<f64>,
    max_changed: Option<String>,
    max_psi: Option<f64>,
    max_mean_change: Option<f64>,
}

const STEPS: &str = "spec.strategy.canary.steps";

/// Where a step's fields are found in the text, for error lines.
struct At<'a> {
    text: &'a str,
    index: usize,
}

impl At<'_> {
    fn field(&self, key: Option<&str>) -> String {
        match key {
            Some(key) => format!("{STEPS}[{}].{key}", self.index),
            None => format!("{STEPS}[{}]", self.index),
        }
    }

    /// Refuses the step, or one of its fields, at its line.
    fn refuse(&self, key: Option<&str>, message: impl Into<String>) -> ManifestError {
        let path: Vec<&str> = STEPS.split('.').collect();
        let last = key.and_then(|k| k.rsplit('.').next());
        ManifestError {
            field: self.field(key),
            message: message.into(),
            line: item_line(self.text, &path, self.index, last),
        }
    }
}

/// Validates `spec.strategy`. `auto_promote` is `spec.autoPromote`: a
/// canary pauses with a `pause: {}` step instead.
pub(crate) fn strategy(
    text: &str,
    raw: RawStrategy,
    auto_promote: bool,
) -> Result<Strategy, ManifestError> {
    let at = |field: &str, message: &str| ManifestError::at(text, field, message);
    match (raw.blue_green, raw.canary) {
        (Some(_), Some(_)) => {
            Err(at("spec.strategy", "names both blueGreen and canary: choose one"))
        }
        (None, None) => Err(at(
            "spec.strategy",
            "names no strategy: write `blueGreen: {}` or `canary: {steps: [...]}`",
        )),
        (Some(RawBlueGreen {}), None) => Ok(Strategy::BlueGreen),
        (None, Some(canary)) => {
            if !auto_promote {
                return Err(at(
                    "spec.autoPromote",
                    "is false, which a canary does not read: add a `pause: {}` step where it \
                     should wait for `controller promote`",
                ));
            }
            Ok(Strategy::Canary { steps: steps(text, canary.steps)? })
        }
    }
}

fn steps(text: &str, raw: Vec<Value>) -> Result<Vec<CanaryStep>, ManifestError> {
    if raw.is_empty() {
        return Err(ManifestError::at(text, STEPS, "has no step: a canary needs a setWeight"));
    }
    if raw.len() > MAX_STEPS {
        let why = format!("has {} steps, at most {MAX_STEPS}", raw.len());
        return Err(ManifestError::at(text, STEPS, why));
    }
    let mut out = Vec::with_capacity(raw.len());
    let mut weight = 0u8;
    for (index, value) in raw.into_iter().enumerate() {
        let at = At { text, index };
        let step = step(&at, value)?;
        match &step {
            _ if weight == 100 => {
                return Err(at.refuse(
                    None,
                    "follows setWeight: 100, which promotes the canary: it must be the last step",
                ));
            }
            CanaryStep::SetWeight(w) if *w <= weight => {
                return Err(at.refuse(
                    Some("setWeight"),
                    format!("is {w}, not above the step before's {weight}: weights only grow"),
                ));
            }
            CanaryStep::SetWeight(w) => weight = *w,
            CanaryStep::Analysis(_) if weight == 0 => {
                return Err(at.refuse(
                    Some("analysis"),
                    "comes before any setWeight: with no traffic on the new color there is \
                     nothing to compare",
                ));
            }
            _ => {}
        }
        out.push(step);
    }
    if weight == 0 {
        return Err(ManifestError::at(text, STEPS, "has no setWeight step"));
    }
    Ok(out)
}

fn step(at: &At<'_>, value: Value) -> Result<CanaryStep, ManifestError> {
    const KINDS: &str = "a step is one of setWeight, pause, analysis";
    let Value::Object(map) = value else {
        return Err(at.refuse(None, format!("is {value}, not a mapping: {KINDS}")));
    };
    if map.len() != 1 {
        let keys: Vec<&str> = map.keys().map(String::as_str).collect();
        return Err(at.refuse(None, format!("has {keys:?}: one key per step, {KINDS}")));
    }
    let Some((kind, body)) = map.into_iter().next() else {
        return Err(at.refuse(None, KINDS));
    };
    match kind.as_str() {
        "setWeight" => {
            let weight = body.as_f64().filter(|w| w.fract() == 0.0);
            match weight {
                Some(w) if (1.0..=100.0).contains(&w) => Ok(CanaryStep::SetWeight(w as u8)),
                Some(w) => Err(at.refuse(
                    Some("setWeight"),
                    format!("is {w}, must be a percentage of traffic from 1 to 100"),
                )),
                None => Err(at.refuse(
                    Some("setWeight"),
                    format!("is {body}, not a whole percentage from 1 to 100"),
                )),
            }
        }
        "pause" => {
            let body = if body.is_null() { Value::Object(Default::default()) } else { body };
            let raw: RawPause = serde_json::from_value(body)
                .map_err(|e| at.refuse(Some("pause"), e.to_string()))?;
            let duration = match raw.duration {
                None => None,
                Some(d) => Some(wait(at, "pause.duration", &d, Duration::from_secs(1))?),
            };
            Ok(CanaryStep::Pause { duration })
        }
        "analysis" => {
            let raw: RawComparison = serde_json::from_value(body)
                .map_err(|e| at.refuse(Some("analysis"), e.to_string()))?;
            comparison(at, raw).map(CanaryStep::Analysis)
        }
        other => Err(at.refuse(None, format!("has an unknown kind `{other}`: {KINDS}"))),
    }
}

/// A duration of a step, from `min` to an hour.
fn wait(at: &At<'_>, key: &str, value: &str, min: Duration) -> Result<Duration, ManifestError> {
    let d = humantime::parse_duration(value.trim()).map_err(|e| {
        at.refuse(Some(key), format!("{value:?} is not a duration like 30s or 5m: {e}"))
    })?;
    if d < min || d > MAX_WAIT {
        return Err(at.refuse(
            Some(key),
            format!("is {value}, must be from {} to 1h", humantime::format_duration(min)),
        ));
    }
    Ok(d)
}

fn comparison(at: &At<'_>, raw: RawComparison) -> Result<Comparison, ManifestError> {
    let duration = wait(at, "analysis.duration", &raw.duration, Duration::from_secs(1))?;
    let defaults = Comparison::defaults(duration);
    let number = |key: &str, value: &Option<Value>, default: f64, min: f64, max: f64| {
        let Some(value) = value else { return Ok(default) };
        let field = format!("analysis.{key}");
        let n = value.as_f64().ok_or_else(|| {
            at.refuse(Some(&field), format!("is {value}, not a number from {min} to {max}"))
        })?;
        if !(min..=max).contains(&n) {
            return Err(at.refuse(Some(&field), format!("is {n}, must be from {min} to {max}")));
        }
        Ok(n)
    };
    let min_requests = number(
        "minRequests",
        &raw.min_requests,
        defaults.min_requests.into(),
        1.0,
        MAX_MIN_REQUESTS.into(),
    )?;
    if min_requests.fract() != 0.0 {
        return Err(at.refuse(Some("analysis.minRequests"), "must be a whole number"));
    }
    let error_rate_floor = match &raw.error_rate_floor {
        None => defaults.error_rate_floor,
        Some(Value::String(text)) => percent(text).filter(|p| *p <= 1.0).ok_or_else(|| {
            at.refuse(
                Some("analysis.errorRateFloor"),
                format!("{text:?} is not a percentage from 0% to 100% such as 1%"),
            )
        })?,
        Some(other) => {
            return Err(at.refuse(
                Some("analysis.errorRateFloor"),
                format!("is {other}, not a percentage such as 1%"),
            ));
        }
    };
    let p99_floor = match &raw.p99_floor {
        None => defaults.p99_floor,
        Some(d) => {
            let d = wait(at, "analysis.p99Floor", d, Duration::from_millis(1))?;
            if d > MAX_P99_FLOOR {
                return Err(at.refuse(Some("analysis.p99Floor"), "must be at most 1m"));
            }
            d
        }
    };
    Ok(Comparison {
        duration,
        min_requests: min_requests as u32,
        max_error_ratio: number(
            "maxErrorRatio",
            &raw.max_error_ratio,
            defaults.max_error_ratio,
            1.0,
            1000.0,
        )?,
        error_rate_floor,
        max_p99_ratio: number(
            "maxP99Ratio",
            &raw.max_p99_ratio,
            defaults.max_p99_ratio,
            1.0,
            1000.0,
        )?,
        p99_floor,
    })
}

/// Validates `spec.shadow`: a duration and at least one threshold.
pub(crate) fn shadow(text: &str, raw: RawShadow) -> Result<Shadow, ManifestError> {
    let at = |field: &str, message: String| ManifestError::at(text, field, message);
    let duration = match raw.duration {
        None => return Err(at("spec.shadow", "needs a duration such as 30s".to_owned())),
        Some(value) => {
            let d = humantime::parse_duration(value.trim()).map_err(|e| {
                at("spec.shadow.duration", format!("{value:?} is not a duration like 30s: {e}"))
            })?;
            if d < Duration::from_secs(1) || d > MAX_WAIT {
                return Err(at("spec.shadow.duration", format!("is {value}, must be 1s to 1h")));
            }
            d
        }
    };
    let min_requests = raw.min_requests.unwrap_or(100);
    if !(1..=MAX_MIN_REQUESTS).contains(&min_requests) {
        return Err(at(
            "spec.shadow.minRequests",
            format!("is {min_requests}, must be 1 to {MAX_MIN_REQUESTS}"),
        ));
    }
    let tolerance = raw.tolerance.unwrap_or(0.5);
    if !(tolerance.is_finite() && (0.0..=1000.0).contains(&tolerance)) {
        return Err(at(
            "spec.shadow.tolerance",
            format!("is {tolerance}, must be a number of dollars from 0 to 1000"),
        ));
    }
    let max_changed = match raw.max_changed {
        None => None,
        Some(text) => Some(percent(&text).filter(|p| *p <= 1.0).ok_or_else(|| {
            at(
                "spec.shadow.maxChanged",
                format!("{text:?} is not a percentage from 0% to 100% such as 1%"),
            )
        })?),
    };
    let bounded = |field: &str, value: Option<f64>, max: f64| match value {
        Some(v) if !(v.is_finite() && (0.0..=max).contains(&v)) => {
            Err(at(field, format!("is {v}, must be a number from 0 to {max}")))
        }
        v => Ok(v),
    };
    let max_psi = bounded("spec.shadow.maxPsi", raw.max_psi, 10.0)?;
    let max_mean_change = bounded("spec.shadow.maxMeanChange", raw.max_mean_change, 1000.0)?;
    if max_changed.is_none() && max_psi.is_none() && max_mean_change.is_none() {
        return Err(at(
            "spec.shadow",
            "has no threshold: give maxChanged, maxPsi or maxMeanChange".to_owned(),
        ));
    }
    Ok(Shadow { duration, min_requests, tolerance, max_changed, max_psi, max_mean_change })
}

/// The 1-based line of item `index` of the block sequence at `path`, or
/// of the key `key` within that item when it has one. Enough for error
/// messages; flow style (`steps: [...]`) gives `None`.
pub(crate) fn item_line(
    text: &str,
    path: &[&str],
    index: usize,
    key: Option<&str>,
) -> Option<usize> {
    let start = line_of(text, path)?;
    let lines: Vec<&str> = text.lines().collect();
    let indent_of = |line: &str| line.len() - line.trim_start().len();
    let key_indent = indent_of(lines.get(start - 1)?);
    let mut item_indent = None;
    let mut seen = 0;
    let mut found: Option<usize> = None;
    for (i, line) in lines.iter().enumerate().skip(start) {
        let content = line.trim_start();
        if content.is_empty() || content.starts_with('#') {
            continue;
        }
        let indent = indent_of(line);
        let is_item = content.starts_with('-');
        if indent < key_indent || (indent == key_indent && !is_item) {
            break;
        }
        if is_item && item_indent.is_none_or(|d| d == indent) {
            item_indent = Some(indent);
            if found.is_some() {
                break;
            }
            if seen == index {
                found = Some(i + 1);
            }
            seen += 1;
        }
        if let (Some(_), Some(key)) = (found, key) {
            let bare = content.trim_start_matches('-').trim_start();
            if bare.strip_prefix(key).is_some_and(|r| r.trim_start().starts_with(':')) {
                return Some(i + 1);
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::parse;

    const HEAD: &str = "\
apiVersion: deploy.taxi-fare.io/v1
kind: Rollout
metadata:
  name: taxi-fare
spec:
  image:
    repository: localhost:5000/taxi/service
    tag: abc123
";

    const CANARY: &str = "  strategy:
    canary:
      steps:
        - setWeight: 10
        - pause: {duration: 30s}
        - analysis:
            duration: 30s
            minRequests: 50
            maxErrorRatio: 2
            errorRateFloor: 1%
            maxP99Ratio: 1.5
            p99Floor: 50ms
        - setWeight: 50
        - pause: {}
        - setWeight: 100
";

    fn with(spec: &str) -> Result<crate::manifest::Desired, ManifestError> {
        parse(&format!("{HEAD}{spec}"))
    }

    fn refused(spec: &str) -> ManifestError {
        with(spec).expect_err("the strategy should be refused")
    }

    #[test]
    fn reads_a_canary_in_argos_words() {
        let d = with(CANARY).unwrap();
        let s = Duration::from_secs;
        assert_eq!(
            d.strategy.steps(),
            [
                CanaryStep::SetWeight(10),
                CanaryStep::Pause { duration: Some(s(30)) },
                CanaryStep::Analysis(Comparison {
                    duration: s(30),
                    min_requests: 50,
                    max_error_ratio: 2.0,
                    error_rate_floor: 0.01,
                    max_p99_ratio: 1.5,
                    p99_floor: Duration::from_millis(50),
                }),
                CanaryStep::SetWeight(50),
                CanaryStep::Pause { duration: None },
                CanaryStep::SetWeight(100),
            ]
        );
        // Thresholds left out take the defaults; `pause:` alone waits.
        let short = "  strategy:\n    canary:\n      steps:\n        - setWeight: 5\n        - analysis: {duration: 1m}\n        - pause:\n";
        let d = with(short).unwrap();
        assert_eq!(
            d.strategy.steps()[1],
            CanaryStep::Analysis(Comparison::defaults(Duration::from_secs(60)))
        );
        assert_eq!(d.strategy.steps()[2], CanaryStep::Pause { duration: None });
    }

    #[test]
    fn blue_green_is_the_default_and_keeps_the_recorded_form() {
        let plain = with("").unwrap();
        assert_eq!(plain.strategy, Strategy::BlueGreen);
        assert_eq!(plain.shadow, None);
        let named = with("  strategy:\n    blueGreen: {}\n").unwrap();
        assert_eq!(named, plain);
        let json = plain.fingerprint();
        assert!(!json.contains("strategy") && !json.contains("shadow"), "{json}");
        let canary = with(CANARY).unwrap();
        assert_ne!(canary.fingerprint(), plain.fingerprint());
        let loaded: crate::manifest::Desired = serde_json::from_str(&canary.fingerprint()).unwrap();
        assert_eq!(loaded, canary);
    }

    /// Every refusal names the field and the line it is on.
    #[test]
    fn refuses_a_malformed_strategy_with_field_and_line() {
        let steps = "  strategy:\n    canary:\n      steps:\n";
        // Lines: HEAD has 8, the strategy block 3, so the first step is 12.
        for (body, field, line, why) in [
            ("        - setWeight: 0\n", "steps[0].setWeight", 12, "from 1 to 100"),
            ("        - setWeight: -5\n", "steps[0].setWeight", 12, "from 1 to 100"),
            ("        - setWeight: 101\n", "steps[0].setWeight", 12, "from 1 to 100"),
            ("        - setWeight: 12.5\n", "steps[0].setWeight", 12, "whole percentage"),
            ("        - setWeight: ten\n", "steps[0].setWeight", 12, "whole percentage"),
            (
                "        - setWeight: 20\n        - setWeight: 20\n",
                "steps[1].setWeight",
                13,
                "weights only grow",
            ),
            (
                "        - setWeight: 50\n        - pause: {}\n        - setWeight: 10\n",
                "steps[2].setWeight",
                14,
                "weights only grow",
            ),
            ("        - setWeight: 10\n        - rollback: {}\n", "steps[1]", 13, "unknown kind"),
            (
                "        - setWeight: 10\n        - pause: {duration: soon}\n",
                "steps[1].pause.duration",
                13,
                "not a duration",
            ),
            (
                "        - setWeight: 10\n        - pause: {duration: 0s}\n",
                "steps[1].pause.duration",
                13,
                "from 1s to 1h",
            ),
            (
                "        - setWeight: 10\n        - pause: {duration: 2h}\n",
                "steps[1].pause.duration",
                13,
                "from 1s to 1h",
            ),
            (
                "        - setWeight: 10\n        - pause: {until: later}\n",
                "steps[1].pause",
                13,
                "unknown field",
            ),
            (
                "        - analysis: {duration: 30s}\n        - setWeight: 10\n",
                "steps[0].analysis",
                12,
                "before any setWeight",
            ),
            (
                "        - setWeight: 10\n        - analysis:\n            duration: 30s\n            maxErrorRatio: 0.5\n",
                "steps[1].analysis.maxErrorRatio",
                15,
                "from 1 to 1000",
            ),
            (
                "        - setWeight: 10\n        - analysis:\n            minRequests: 10\n",
                "steps[1].analysis",
                13,
                "missing field `duration`",
            ),
            (
                "        - setWeight: 10\n        - analysis:\n            duration: 30s\n            minRequests: 0\n",
                "steps[1].analysis.minRequests",
                15,
                "from 1 to",
            ),
            (
                "        - setWeight: 10\n        - analysis:\n            duration: 30s\n            errorRateFloor: lots\n",
                "steps[1].analysis.errorRateFloor",
                15,
                "not a percentage",
            ),
            (
                "        - setWeight: 10\n        - analysis:\n            duration: 30s\n            p99Floor: fast\n",
                "steps[1].analysis.p99Floor",
                15,
                "not a duration",
            ),
            (
                "        - setWeight: 10\n        - analysis:\n            duration: 30s\n            maxP99: 1s\n",
                "steps[1].analysis",
                13,
                "unknown field `maxP99`",
            ),
            (
                "        - setWeight: 100\n        - pause: {}\n",
                "steps[1]",
                13,
                "must be the last step",
            ),
            ("        - setWeight: 10\n          pause: {}\n", "steps[0]", 12, "one key per step"),
            ("        - 10\n", "steps[0]", 12, "not a mapping"),
        ] {
            let e = refused(&format!("{steps}{body}"));
            assert_eq!(e.field, format!("spec.strategy.canary.{field}"), "{body}: {e}");
            assert_eq!(e.line, Some(line), "{body}: {e}");
            assert!(e.message.contains(why), "{body}: {e}");
        }
    }

    #[test]
    fn refuses_a_strategy_that_is_not_one_of_the_two() {
        let e = refused("  strategy:\n    blueGreen: {}\n    canary: {steps: [{setWeight: 5}]}\n");
        assert_eq!((e.field.as_str(), e.line), ("spec.strategy", Some(9)));
        assert!(e.message.contains("both"), "{e}");
        let e = refused("  strategy: {}\n");
        assert!(e.message.contains("names no strategy"), "{e}");
        let e = refused("  strategy:\n    canary:\n      steps: []\n");
        assert_eq!((e.field.as_str(), e.line), ("spec.strategy.canary.steps", Some(11)));
        let e = refused("  strategy:\n    canary:\n      steps:\n        - pause: {}\n");
        assert!(e.message.contains("no setWeight"), "{e}");
        // Unknown keys of the strategy are the parser's, with a line.
        let e = refused("  strategy:\n    rolling: {}\n");
        assert!(e.message.contains("rolling") && e.line.is_some(), "{e}");
        let e =
            refused("  strategy:\n    canary:\n      steps: [{setWeight: 5}]\n      maxSurge: 1\n");
        assert!(e.message.contains("maxSurge"), "{e}");
        // A canary waits with a pause step, not autoPromote.
        let e = refused(&format!("  autoPromote: false\n{CANARY}"));
        assert_eq!((e.field.as_str(), e.line), ("spec.autoPromote", Some(9)));
        // Too many steps.
        let many: String = (1..=33).map(|w| format!("        - setWeight: {w}\n")).collect();
        let e = refused(&format!("  strategy:\n    canary:\n      steps:\n{many}"));
        assert!(e.message.contains("at most 32"), "{e}");
        // Flow style: the field, if not the line.
        let e = refused("  strategy: {canary: {steps: [{setWeight: 0}]}}\n");
        assert_eq!(e.field, "spec.strategy.canary.steps[0].setWeight");
    }

    #[test]
    fn reads_the_shadow_and_refuses_one_without_thresholds() {
        let shadow = "  shadow:\n    duration: 30s\n    minRequests: 200\n    tolerance: 0.50\n    maxChanged: 1%\n";
        let s = with(shadow).unwrap().shadow.unwrap();
        assert_eq!(
            s,
            Shadow {
                duration: Duration::from_secs(30),
                min_requests: 200,
                tolerance: 0.5,
                max_changed: Some(0.01),
                max_psi: None,
                max_mean_change: None,
            }
        );
        let s = with("  shadow: {duration: 1m, maxPsi: 0.1, maxMeanChange: 0.25}\n").unwrap();
        let s = s.shadow.unwrap();
        assert_eq!((s.min_requests, s.tolerance, s.max_psi), (100, 0.5, Some(0.1)));
        for (body, field, line, why) in [
            ("  shadow:\n    duration: 30s\n", "spec.shadow", Some(9), "no threshold"),
            (
                "  shadow:\n    duration: 30s\n    tolerance: 1\n",
                "spec.shadow",
                Some(9),
                "no threshold",
            ),
            ("  shadow:\n    maxChanged: 1%\n", "spec.shadow", Some(9), "needs a duration"),
            (
                "  shadow:\n    duration: later\n    maxChanged: 1%\n",
                "spec.shadow.duration",
                Some(10),
                "not a duration",
            ),
            (
                "  shadow:\n    duration: 30s\n    maxChanged: many\n",
                "spec.shadow.maxChanged",
                Some(11),
                "not a percentage",
            ),
            (
                "  shadow:\n    duration: 30s\n    maxChanged: 101%\n",
                "spec.shadow.maxChanged",
                Some(11),
                "not a percentage",
            ),
            (
                "  shadow:\n    duration: 30s\n    tolerance: -1\n    maxChanged: 1%\n",
                "spec.shadow.tolerance",
                Some(11),
                "dollars",
            ),
            (
                "  shadow:\n    duration: 30s\n    minRequests: 0\n    maxChanged: 1%\n",
                "spec.shadow.minRequests",
                Some(11),
                "must be 1",
            ),
            (
                "  shadow:\n    duration: 30s\n    maxPsi: -0.1\n",
                "spec.shadow.maxPsi",
                Some(11),
                "from 0 to 10",
            ),
        ] {
            let e = refused(body);
            assert_eq!((e.field.as_str(), e.line), (field, line), "{body}: {e}");
            assert!(e.message.contains(why), "{body}: {e}");
        }
        let e = refused("  shadow:\n    duration: 30s\n    maxChanged: 1%\n    compare: all\n");
        assert!(e.message.contains("compare") && e.line.is_some(), "{e}");
    }

    #[test]
    fn finds_the_lines_of_items() {
        let text = format!("{HEAD}{CANARY}");
        let path = ["spec", "strategy", "canary", "steps"];
        assert_eq!(item_line(&text, &path, 0, None), Some(12));
        assert_eq!(item_line(&text, &path, 2, None), Some(14));
        assert_eq!(item_line(&text, &path, 2, Some("p99Floor")), Some(20));
        assert_eq!(item_line(&text, &path, 5, None), Some(23));
        assert_eq!(item_line(&text, &path, 6, None), None);
        // A key another item has is not this one's.
        assert_eq!(item_line(&text, &path, 0, Some("duration")), Some(12));
    }

    #[test]
    fn the_tracked_manifests_commented_examples_parse() {
        let tracked = include_str!("../../../manifests/rollout.yaml");
        let mut blocks: Vec<String> = Vec::new();
        let mut inside = false;
        for line in tracked.lines() {
            match line.strip_prefix("  #   ") {
                Some(code) => {
                    if !inside {
                        blocks.push(String::new());
                    }
                    inside = true;
                    let last = blocks.last_mut().unwrap();
                    last.push_str("  ");
                    last.push_str(code);
                    last.push('\n');
                }
                None => inside = false,
            }
        }
        assert_eq!(blocks.len(), 3, "{blocks:?}");
        assert!(parse(&format!("{tracked}{}", blocks[0])).unwrap().strategy.is_blue_green());
        let d = parse(&format!("{tracked}{}{}", blocks[1], blocks[2])).unwrap();
        assert_eq!(d.strategy.steps().len(), 6);
        assert_eq!(d.shadow.unwrap().max_changed, Some(0.01));
        // What runs is blue-green.
        assert!(parse(tracked).unwrap().strategy.is_blue_green());
    }
}
