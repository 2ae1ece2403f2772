//! The rollout state machine, whole: [`decide`] picks the one next step
//! from the desired state, the observed world and the record; the shell
//! carries the step out and hands its [`Outcome`] to [`apply`], which
//! folds it into the record. No IO, no clock: `now` is given.
//!
//! Reconciler rules, which every branch below keeps:
//! - Assume nothing about why a reconcile started: a manifest edit, a
//!   platform event, a resync and an operator command all lead here alike.
//! - Assume the last reconcile died at any point: every step is safe to
//!   repeat, and the record's stage says only what to do next, never
//!   what the world is.
//! - Never remember what you can observe: replicas, their tags and
//!   health, and the router's state are read fresh each time.
//! - Check each property of the world on its own, and change one thing per
//!   step; the shell observes again before the next.
//! - Never wait inside a step: a wait is a stage with a deadline, so a new
//!   tag, an operator's word or a shutdown is seen at the next reconcile.
//!
//! A desired tag that changes during a rollout: before the switch the
//! rollout is abandoned (level 1, "superseded") and the new tag rolls on
//! from a clean idle color; after the switch the rollout runs to its end,
//! skipping the scale-down delay, and the new tag rolls on after it. So
//! there is never more than one rollout, nor more than two colors.
//!
//! A canary (`spec.strategy.canary`) replaces the one switch with its
//! steps, each a stage: `setWeight` asks the router for a split (the
//! stable color keeps the rest), `pause` waits for its deadline or the
//! operator, `analysis` reads both colors every second and compares them
//! ([`crate::compare`]); past the last step (or at `setWeight: 100`, or on
//! `promote --full`) the switch, the probe and the scale-down follow as in
//! blue-green. A failed comparison, an abort or a refused step gives the
//! canary's share back to the stable color (level 4), and so does a new
//! tag mid-canary (superseded) before the new tag rolls on. A shadow
//! (`spec.shadow`) runs after the gates, before the switch or the first
//! step: the router mirrors live predictions to the new color, and both
//! colors' answers are compared ([`crate::shadow`]); a refusal is level 1.
//! The split and the mirror are undone first whenever the rollout leaves
//! the stage that needs them.

use std::time::Duration;

use bluegreen::Color;
use model::Trip;

use crate::analysis::{self, Reading};
use crate::clock::Timestamp;
use crate::compare::{self, Decision, Pair};
use crate::gates::{self, Evidence, Known};
use crate::manifest::strategy::CanaryStep;
use crate::manifest::{Desired, Probe};
use crate::observed::{Health, Observed};
use crate::record::{
    CanaryAt, Finished, Level, Operator, Origin, Record, Rollout, Stage, StepName, Watch,
};
use crate::shadow::{self, Answers};

/// Requests in one warm-up burst of the latency budget.
pub const WARM_UP_REQUESTS: usize = 40;
/// Between two warm-up bursts that missed the budget.
const WARM_UP_EVERY: Duration = Duration::from_millis(500);
/// Between two tries of the check through the front.
const PROBE_EVERY: Duration = Duration::from_millis(100);
/// How often the analysis after a switch reads the new color's counters.
const ANALYSIS_EVERY: Duration = Duration::from_secs(1);
/// Transient failures of one stage before the switch that fail the
/// rollout; between them the wait doubles from [`RETRY_FIRST`].
pub const MAX_FAILURES: u32 = 5;
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MOST: Duration = Duration::from_secs(16);

/// What to do next.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Nothing, until a trigger or `until`.
    Wait { until: Option<Timestamp> },
    /// Record a new rollout of `desired` into `color`, of the image the
    /// tag names now (`digest`, where the registry said).
    Begin { desired: Box<Desired>, color: Color, from: Option<Origin>, digest: Option<String> },
    /// Remove every replica of a color.
    Remove { color: Color, why: Removal },
    /// Pull the image and start the color's replicas (idempotent), at
    /// `digest` where it is known.
    Start { color: Color, image: String, tag: String, replicas: u32, digest: Option<String> },
    /// Every replica is healthy: record it, and the digest they run.
    Healthy { digest: Option<String> },
    /// Gather the gates' evidence from `color` and the live color, if any.
    Gates { color: Color, live: Option<Color>, golden: bool },
    /// Send one warm-up burst of `requests` predictions of `trip`.
    WarmUp { color: Color, trip: Trip, requests: usize },
    /// Send traffic to `to` (`None`: to no color), with `fallback` taking
    /// what `to` refuses.
    Route { to: Option<Color>, replicas: u32, fallback: Option<(Color, u32)> },
    /// Ask once, through the front, whether `color` and `tag` answer.
    Probe { color: Color, tag: String, probe: Probe },
    /// Show `to` on the preview entry point (`None`: nothing).
    Preview { to: Option<(Color, u32)> },
    /// An operator promoted the paused rollout: record it.
    Promote,
    /// Read the new color's counters for the analysis after the switch,
    /// after sending it `own` known-answer requests (traffic being low).
    /// `queries` (name, PromQL) are asked of Prometheus too.
    Analyze { color: Color, own: Option<(Known, u32)>, queries: Vec<(String, String)> },
    /// Give the rollout up.
    Fail { level: Level, reason: String },
    /// Give the rollout up for another desired state, before the switch:
    /// no verdict on the release, which may be asked for again.
    Supersede { reason: String },
    /// Put the rollout in the history.
    Finish,
    /// Bring back the parts of the traffic tier that are down.
    Heal { down: Vec<String> },
    /// Split live traffic by a sticky key: `weight` percent to `canary`'s
    /// replicas, the rest to `stable`'s (a canary's `setWeight`).
    Split { stable: (Color, u32), canary: (Color, u32), weight: u8 },
    /// Mirror live predictions to `to`'s replicas, their answers
    /// discarded (`None`: mirror nothing).
    Mirror { to: Option<(Color, u32)> },
    /// Collect what each color answered, by request id, since the mirror
    /// was turned on: `stable` to the requests themselves, `canary` to
    /// their mirrored copies. Answered by [`Outcome::Answered`].
    Answers { stable: Color, canary: Color },
    /// Read both colors' counters, one right after the other, for a
    /// canary's analysis step. Answered by [`Outcome::Compared`].
    Compare { stable: Color, canary: Color },
    /// Record that canary step `from` is over (its pause or analysis
    /// ended, or the operator promoted); `full`: skip every step left.
    CanaryNext { from: usize, full: bool },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    /// Leftovers of an idle color.
    Stale,
    /// The old color, after a switch: gracefully.
    ScaleDown,
    /// The new color of a failed rollout.
    Failed,
}

/// What carrying a step out gave. A failure the platform may recover
/// from (it could not be reached) is no outcome: the shell retries the
/// step later and the record does not change.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Carried out, or a step of the record alone.
    Done,
    /// The platform refused it for good: an image that cannot be had, a
    /// router configuration refused.
    Refused(String),
    /// The platform could not be reached, or failed in a way that may
    /// pass (a registry down, an engine timing out): retried with backoff,
    /// a bounded number of times before the switch.
    Unavailable(String),
    /// What the gates gathered, or why it could not be gathered.
    Evidence(Result<Box<Evidence>, String>),
    /// The request times of a warm-up burst.
    Burst(Result<Vec<Duration>, String>),
    /// One try through the front.
    Probed(Result<(), String>),
    /// The new color's counters, and what the controller's own requests
    /// met.
    Sampled(Result<Reading, String>),
    /// Both colors' counters of a [`Step::Compare`].
    Compared(Result<Pair, String>),
    /// Both colors' answers of a [`Step::Answers`].
    Answered(Result<Box<Answers>, String>),
}

/// What [`apply`] did with an outcome.
#[derive(Debug, Clone, PartialEq)]
pub enum Applied {
    /// The record moved on (or had nothing to note).
    Moved,
    /// The rollout ended.
    Finished(Box<Finished>),
    /// Nothing changed: the step is to be tried again later.
    Retry(String),
}

pub fn decide(
    desired: Option<&Desired>,
    observed: &Observed,
    record: &Record,
    now: Timestamp,
) -> Step {
    // Nothing reaches any color while the traffic tier is down: first.
    if !observed.traffic.down.is_empty() {
        return Step::Heal { down: observed.traffic.down.clone() };
    }
    if let Some(rollout) = &record.rollout {
        return decide_rollout(rollout, desired, observed, now);
    }
    let Some(desired) = desired else { return Step::Wait { until: None } };
    let traffic = &observed.traffic;
    // An unreadable router: nothing can be decided about traffic.
    let Ok(live) = traffic.live.clone() else { return Step::Wait { until: None } };
    if traffic.preview.is_some() && traffic.capabilities.preview {
        return Step::Preview { to: None };
    }
    let digest = observed.digest_of(&desired.image());
    if let Some(live) = live {
        let of = observed.of(live);
        if !of.is_empty() && of.iter().all(|c| c.runs(&desired.repository, &desired.tag, digest)) {
            if !observed.of(live.other()).is_empty() {
                return Step::Remove { color: live.other(), why: Removal::Stale };
            }
            return reconcile_live(live, desired, observed);
        }
    }
    let same_release = |f: &crate::record::Failure| match (f.digest.as_deref(), digest) {
        (Some(then), Some(now)) => then == now,
        _ => true,
    };
    if record
        .failed
        .as_ref()
        .is_some_and(|f| f.fingerprint == desired.fingerprint() && same_release(f))
    {
        return Step::Wait { until: None };
    }
    let from = live.and_then(|color| {
        let tag = observed.live_tag()?.to_owned();
        Some(Origin { color, tag, replicas: observed.of(color).len() as u32 })
    });
    Step::Begin {
        desired: Box::new(desired.clone()),
        color: live.map_or(Color::Blue, Color::other),
        from,
        digest: digest.map(str::to_owned),
    }
}

/// The live color runs the desired tag: it is kept whole in place, as a
/// ReplicaSet would, without a rollout. A replica stopped, killed or
/// removed is started again; a change of `replicas` alone scales; the
/// router names fewer servers before replicas go, and more only once
/// they serve.
fn reconcile_live(live: Color, desired: &Desired, observed: &Observed) -> Step {
    let of = observed.of(live);
    let want = desired.replicas;
    let route = Step::Route { to: Some(live), replicas: want, fallback: None };
    if observed.traffic.servers > want {
        return route;
    }
    if of.len() != want as usize || of.iter().any(|c| c.is_down()) {
        // The same release: the digest the live color runs.
        let digest = observed.live_digest().or(observed.digest_of(&desired.image()));
        return Step::Start {
            color: live,
            image: desired.image(),
            tag: desired.tag.clone(),
            replicas: want,
            digest: digest.map(str::to_owned),
        };
    }
    let serving = of.iter().all(|c| c.is_ready());
    if (observed.traffic.servers < want && serving) || observed.traffic.stale {
        return route;
    }
    Step::Wait { until: None }
}

fn decide_rollout(r: &Rollout, desired: Option<&Desired>, o: &Observed, now: Timestamp) -> Step {
    let superseded = desired
        .filter(|d| {
            d.tag != r.desired.tag
                || d.replicas != r.desired.replicas
                || d.repository != r.desired.repository
        })
        .map(|d| format!("superseded by tag {} before the switch", d.tag));
    let fail = |reason: String| Step::Fail { level: Level::BeforeSwitch, reason };
    let color = r.summary.color;
    let new = o.of(color);
    let replicas = r.desired.replicas;
    // The previous color, while it still has replicas.
    let old = r.old_color().filter(|c| !o.of(*c).is_empty());
    let traffic = &o.traffic;
    match &r.stage {
        Stage::Prepare
        | Stage::Start
        | Stage::Health { .. }
        | Stage::Gates
        | Stage::WarmUp { .. }
        | Stage::Paused
        | Stage::Shadow { .. }
        | Stage::Canary { .. }
            if superseded.is_some() =>
        {
            Step::Supersede { reason: superseded.unwrap_or_default() }
        }
        // A rollback whose way back fails is overtaken by a new tag: the
        // new rollout starts from what serves now (once no split or
        // mirror of this one is left behind).
        Stage::Rollback { .. } if superseded.is_some() && r.split.is_none() && !r.mirroring => {
            Step::Finish
        }
        // Backing off after a transient failure.
        _ if r.attempt.is_some_and(|a| now < a.next_at) => {
            Step::Wait { until: r.attempt.map(|a| a.next_at) }
        }
        // The shadow is over (or given up): the mirror goes first.
        _ if r.mirroring && !matches!(r.stage, Stage::Shadow { .. }) => Step::Mirror { to: None },
        Stage::Prepare if !new.is_empty() => Step::Remove { color, why: Removal::Stale },
        Stage::Prepare | Stage::Start => Step::Start {
            color,
            image: r.desired.image(),
            tag: r.desired.tag.clone(),
            replicas,
            digest: r.summary.digest.clone(),
        },
        Stage::Health { deadline } => {
            if new.len() < replicas as usize {
                return fail(format!(
                    "{} of {replicas} replicas of {} exist: a replica was removed",
                    new.len(),
                    color.service()
                ));
            }
            for c in &new {
                let (repository, tag) = (&r.desired.repository, &r.desired.tag);
                if !c.runs(repository, tag, r.summary.digest.as_deref()) {
                    return fail(format!(
                        "{} runs {}:{} {}, not {}",
                        c.name,
                        c.image.as_deref().unwrap_or("?"),
                        c.tag,
                        c.digest.as_deref().unwrap_or(""),
                        r.desired.image()
                    ));
                }
                if !c.is_running() {
                    let code = c.exit_code.map(|x| format!(" with code {x}")).unwrap_or_default();
                    return fail(format!("{} is {}{code} instead of healthy", c.name, c.state));
                }
                if c.health == Health::Unhealthy {
                    return fail(format!("{} is unhealthy", c.name));
                }
            }
            if new.iter().all(|c| c.health == Health::Healthy) {
                let digest = new.iter().find_map(|c| c.digest.clone());
                return Step::Healthy { digest };
            }
            if now >= *deadline {
                return fail(format!(
                    "{} not healthy within {}",
                    color.service(),
                    humantime::format_duration(r.desired.health_timeout)
                ));
            }
            Step::Wait { until: Some(*deadline) }
        }
        Stage::Paused => match r.operator {
            Some(Operator::Promote | Operator::PromoteFull) => Step::Promote,
            Some(Operator::Abort) => fail("aborted by the operator".to_owned()),
            None if traffic.capabilities.preview && traffic.preview != Some(color) => {
                Step::Preview { to: Some((color, replicas)) }
            }
            None => Step::Wait { until: None },
        },
        // The preview names replicas that may go: it is cleared first.
        _ if traffic.preview.is_some() && traffic.capabilities.preview => {
            Step::Preview { to: None }
        }
        Stage::Gates => Step::Gates { color, live: old, golden: r.desired.gates.golden },
        Stage::Shadow { .. } if r.operator == Some(Operator::Abort) => {
            fail("aborted by the operator during the shadow comparison".to_owned())
        }
        Stage::Shadow { until: None } => Step::Mirror { to: Some((color, replicas)) },
        Stage::Shadow { until: Some(until) } if now < *until => Step::Wait { until: Some(*until) },
        Stage::Shadow { .. } => match old {
            Some(stable) => Step::Answers { stable, canary: color },
            None => fail("shadow: the live color is gone, nothing to compare with".to_owned()),
        },
        Stage::Canary { index, weight, at } => canary(r, o, *index, *weight, at, now),
        Stage::WarmUp { next_at, .. } if now < *next_at => Step::Wait { until: Some(*next_at) },
        Stage::WarmUp { trip, .. } => {
            Step::WarmUp { color, trip: *trip, requests: WARM_UP_REQUESTS }
        }
        // The previous color stays in reserve until the new one is
        // proven: a new color that refuses connections costs no request.
        Stage::Switch => Step::Route {
            to: Some(color),
            replicas,
            fallback: old
                .filter(|_| traffic.capabilities.fallback)
                .map(|c| (c, r.from_replicas.max(1))),
        },
        Stage::Verify { next_at, .. } if now < *next_at => Step::Wait { until: Some(*next_at) },
        Stage::Verify { .. } => {
            Step::Probe { color, tag: r.desired.tag.clone(), probe: r.desired.probe.clone() }
        }
        Stage::ScaleDown { .. }
            if r.watch.as_ref().is_some_and(|w| now < w.until) && superseded.is_none() =>
        {
            match &r.watch {
                Some(w) if now < w.next_at => Step::Wait { until: Some(w.next_at) },
                Some(w) => {
                    Step::Analyze { color, own: own_requests(r, w, now), queries: queries(r) }
                }
                None => Step::Analyze { color, own: None, queries: queries(r) },
            }
        }
        // An analysis that could not read its figures, or saw too few
        // predictions to judge, never passes.
        Stage::ScaleDown { .. } if r.watch.is_some() && superseded.is_none() => {
            let unread = "analysis: the new color's figures could not be read during the window";
            let refused = match &r.summary.analysis {
                None => Err(unread.to_owned()),
                Some(f) => analysis::enough(&r.desired.analysis, f),
            }
            .and_then(|()| unanswered(r));
            match refused {
                Err(reason) => Step::Fail { level: Level::AfterAnalysis, reason },
                Ok(()) => scale_down(r, o, superseded.is_some(), now),
            }
        }
        Stage::ScaleDown { .. } => scale_down(r, o, superseded.is_some(), now),
        // A canary's split is undone first: all traffic back to the stable
        // color while it runs, else to the new one, which then serves.
        Stage::Rollback { .. } if r.split.is_some() => {
            match old.filter(|c| o.of(*c).iter().any(|x| x.is_running())) {
                Some(old) => {
                    Step::Route { to: Some(old), replicas: r.from_replicas.max(1), fallback: None }
                }
                None => Step::Route { to: Some(color), replicas, fallback: None },
            }
        }
        Stage::Rollback { .. } => {
            let back = old.filter(|c| o.of(*c).iter().any(|x| x.is_running()));
            if o.live_color() == Some(color) {
                match back {
                    // Back to the previous color while it can serve.
                    Some(old) => Step::Route {
                        to: Some(old),
                        replicas: r.from_replicas.max(1),
                        fallback: None,
                    },
                    // A first deploy: there was no color to go back to.
                    None if r.summary.from_color.is_none() => {
                        Step::Route { to: None, replicas: 1, fallback: None }
                    }
                    // The previous color is gone: the new one, which
                    // serves best, keeps serving, and the rollout ends
                    // rolled back (/status says so).
                    None => Step::Finish,
                }
            } else if !new.is_empty() {
                Step::Remove { color, why: Removal::Failed }
            } else {
                Step::Finish
            }
        }
    }
}

/// A canary step: its split set, its pause or its analysis run, both
/// colors watched throughout (a stable color gone, or a new replica
/// down, gives the traffic back).
fn canary(
    r: &Rollout,
    o: &Observed,
    index: usize,
    weight: u8,
    at: &CanaryAt,
    now: Timestamp,
) -> Step {
    let color = r.summary.color;
    let replicas = r.desired.replicas;
    let level = if weight == 0 { Level::BeforeSwitch } else { Level::Canary };
    let fail = |reason: String| Step::Fail { level, reason };
    let here = format!("canary step {index} ({weight}% of traffic)");
    let next = |full: bool| Step::CanaryNext { from: index, full };
    match r.operator {
        Some(Operator::Abort) => return fail(format!("aborted by the operator at {here}")),
        Some(Operator::PromoteFull) => return next(true),
        _ => {}
    }
    // Never entered without a previous color: the guard is for a record
    // that says otherwise.
    let Some(stable) = r.old_color() else { return next(true) };
    if !o.of(stable).iter().any(|c| c.is_running()) {
        return fail(format!("{here}: the stable color {stable} has no running replica"));
    }
    let new = o.of(color);
    if new.len() < replicas as usize {
        return fail(format!("{here}: {} of {replicas} replicas of {color} exist", new.len()));
    }
    if let Some(c) = new.iter().find(|c| !c.is_running() || c.health == Health::Unhealthy) {
        return fail(format!("{here}: {} is {} ({})", c.name, c.state, c.health));
    }
    let promoted = r.operator == Some(Operator::Promote);
    match at {
        CanaryAt::SetWeight { to } => Step::Split {
            stable: (stable, r.from_replicas.max(1)),
            canary: (color, replicas),
            weight: *to,
        },
        _ if promoted => next(false),
        CanaryAt::Pause { until: Some(until) } if now >= *until => next(false),
        CanaryAt::Pause { until } => Step::Wait { until: *until },
        CanaryAt::Analysis { until, next_at, .. } if now < *until && now < *next_at => {
            Step::Wait { until: Some(*next_at) }
        }
        CanaryAt::Analysis { until, .. } if now < *until => Step::Compare { stable, canary: color },
        // The interval is over: only a passing comparison passes.
        CanaryAt::Analysis { .. } => match r.summary.comparisons.iter().find(|c| c.step == index) {
            Some(c) if c.passed() => next(false),
            Some(c) => fail(c.reason.clone().unwrap_or_else(|| format!("{here}: not passed"))),
            None => fail(format!(
                "canary analysis ({here}): the two colors' figures could not be read during \
                 the interval"
            )),
        },
    }
}

/// Where a proven rollout (its gates and warm-up passed) goes: the shadow
/// when one is asked for and a color is live to compare with, else what
/// follows it.
fn proven(d: &Desired, has_old: bool, now: Timestamp) -> Stage {
    if d.shadow.is_some() && has_old {
        return Stage::Shadow { until: None };
    }
    shadowed(d, has_old, now)
}

/// Where a rollout goes once its shadow passed (or none was asked for):
/// the pause for the operator, the first canary step (a first deploy has
/// no stable color to share traffic with: it switches), or the switch.
fn shadowed(d: &Desired, has_old: bool, now: Timestamp) -> Stage {
    if !d.auto_promote {
        Stage::Paused
    } else if has_old && !d.strategy.is_blue_green() {
        canary_step(d, 0, 0, now)
    } else {
        Stage::Switch
    }
}

/// The stage of canary step `index`, the new color having `weight`
/// percent so far; past the last step, or at `setWeight: 100`, the switch.
fn canary_step(d: &Desired, index: usize, weight: u8, now: Timestamp) -> Stage {
    let at = match d.strategy.steps().get(index) {
        None | Some(CanaryStep::SetWeight(100..)) => return Stage::Switch,
        Some(CanaryStep::SetWeight(to)) => CanaryAt::SetWeight { to: *to },
        Some(CanaryStep::Pause { duration }) => {
            CanaryAt::Pause { until: duration.map(|d| now.plus(d)) }
        }
        Some(CanaryStep::Analysis(c)) => {
            CanaryAt::Analysis { until: now.plus(c.duration), next_at: now, baseline: None }
        }
    };
    Stage::Canary { index, weight, at }
}

/// After the switch (and its analysis): the old color is unlisted, then
/// removed once the delay is over, then the rollout is finished.
fn scale_down(r: &Rollout, o: &Observed, superseded: bool, now: Timestamp) -> Step {
    let Stage::ScaleDown { not_before } = r.stage else { return Step::Wait { until: None } };
    let color = r.summary.color;
    let replicas = r.desired.replicas;
    let route = Step::Route { to: Some(color), replicas, fallback: None };
    match r.old_color().filter(|c| !o.of(*c).is_empty()) {
        Some(_) if now < not_before && !superseded => Step::Wait { until: Some(not_before) },
        // The router stops naming the old color before it goes.
        Some(_) if o.traffic.fallback.is_some() => route,
        Some(old) => Step::Remove { color: old, why: Removal::ScaleDown },
        None if o.traffic.fallback.is_some() && o.live_color() == Some(color) => route,
        None => Step::Finish,
    }
}

/// The manifest's queries, rendered for the new color.
fn queries(r: &Rollout) -> Vec<(String, String)> {
    let color = r.summary.color.as_str();
    let q = &r.desired.analysis.queries;
    q.iter().map(|q| (q.name.clone(), q.render(color, &r.desired.tag))).collect()
}

/// A query that never gave a value during the window is inconclusive,
/// and an inconclusive analysis never passes.
fn unanswered(r: &Rollout) -> Result<(), String> {
    let w = r.watch.as_ref();
    let Some(q) = r
        .desired
        .analysis
        .queries
        .iter()
        .find(|q| !w.is_some_and(|w| w.conclusive.contains(&q.name)))
    else {
        return Ok(());
    };
    let why = w.and_then(|w| w.inconclusive.clone()).unwrap_or_else(|| "never asked".into());
    Err(format!("analysis: query {} was inconclusive during the window ({why})", q.name))
}

/// The known-answer requests to send with the next reading of the
/// analysis: none before the baseline (they would be in it), nor once
/// live traffic brought enough.
fn own_requests(r: &Rollout, w: &Watch, now: Timestamp) -> Option<(Known, u32)> {
    w.baseline.as_ref()?;
    let left = w.until.millis_since(now) / ANALYSIS_EVERY.as_millis() as u64;
    let n = analysis::own_requests(
        &r.desired.analysis,
        r.summary.analysis.as_ref(),
        u32::try_from(left).unwrap_or(u32::MAX),
    );
    let known = r.known.clone().unwrap_or_else(Known::unchecked);
    (n > 0).then_some((known, n))
}

/// Folds the outcome of `step`, carried out at `now`, into the record.
pub fn apply(record: &mut Record, step: &Step, outcome: Outcome, now: Timestamp) -> Applied {
    if let Step::Begin { desired, color, from, digest } = step {
        record.begin(desired, *color, from.clone(), now);
        if let Some(r) = record.rollout.as_mut() {
            r.summary.digest = digest.clone();
        }
        return Applied::Moved;
    }
    if *step == Step::Finish {
        return match record.finish(now) {
            Some(f) => Applied::Finished(Box::new(f)),
            None => Applied::Moved,
        };
    }
    let Some(r) = record.rollout.as_ref() else {
        // Steady state: removing leftovers, clearing a preview, refreshing
        // the router. Only a failure to note.
        return match outcome {
            Outcome::Refused(reason) | Outcome::Unavailable(reason) => Applied::Retry(reason),
            _ => Applied::Moved,
        };
    };
    let desired = r.desired.clone();
    let stage = r.stage.clone();
    let stage_started_at = r.stage_started_at;
    let back = |record: &mut Record, level: Level, reason: String| {
        record.enter(Stage::Rollback { level, reason }, now);
        Applied::Moved
    };
    let has_old = r.old_color().is_some();
    // Traffic that moved by a canary's split goes back at level 4.
    let split_level = if r.split.is_some() { Level::Canary } else { Level::BeforeSwitch };
    // Where a rollout goes once its gates (and warm-up) passed.
    let proven = proven(&desired, has_old, now);
    match (step, outcome) {
        (Step::Start { .. }, Outcome::Done) => {
            record.enter(Stage::Health { deadline: now.plus(desired.health_timeout) }, now);
            Applied::Moved
        }
        (Step::Start { .. }, Outcome::Refused(reason)) => back(record, Level::BeforeSwitch, reason),
        (Step::Healthy { digest }, _) => {
            if let Some(r) = record.rollout.as_mut() {
                r.summary.digest = r.summary.digest.clone().or(digest.clone());
            }
            record.enter(Stage::Gates, now);
            Applied::Moved
        }
        (Step::Gates { .. }, Outcome::Evidence(gathered)) => {
            let judged = gathered.and_then(|e| {
                let judged = gates::judge(&desired.gates, &e);
                if let Some(r) = record.rollout.as_mut() {
                    r.summary.gates = judged.readings;
                }
                judged.verdict.map(|d| (e, d))
            });
            match judged {
                Err(reason) => back(record, Level::BeforeSwitch, reason),
                Ok((evidence, diff)) => {
                    let started = stage_started_at;
                    if let Some(r) = record.rollout.as_mut() {
                        r.summary.diff = diff;
                        r.known = Some(evidence.known());
                    }
                    let next = match desired.gates.latency_budget {
                        Some(_) => Stage::WarmUp {
                            deadline: started.plus(desired.health_timeout),
                            next_at: now,
                            trip: evidence.warm_up_trip(),
                        },
                        None => proven,
                    };
                    record.enter(next, now);
                    Applied::Moved
                }
            }
        }
        (Step::WarmUp { .. }, Outcome::Burst(Err(e))) => {
            back(record, Level::BeforeSwitch, format!("latency budget: {e}"))
        }
        (Step::WarmUp { .. }, Outcome::Burst(Ok(mut times))) => {
            let budget = desired.gates.latency_budget.unwrap_or(Duration::MAX);
            let Stage::WarmUp { deadline, .. } = stage else { return Applied::Moved };
            let verdict = gates::check_latency(&mut times, budget);
            if let (Some(p99), Some(r)) = (gates::p99(&mut times), record.rollout.as_mut()) {
                let reading = gates::Reading::new(
                    gates::Gate::LatencyBudget,
                    p99.as_secs_f64(),
                    budget.as_secs_f64(),
                    verdict.is_ok(),
                );
                r.summary.gates.retain(|g| g.gate != gates::Gate::LatencyBudget);
                r.summary.gates.push(reading);
            }
            match verdict {
                Ok(_) => {
                    record.enter(proven, now);
                    Applied::Moved
                }
                Err(reason) if now >= deadline => {
                    back(record, Level::BeforeSwitch, format!("{reason} until the health timeout"))
                }
                Err(_) => {
                    if let Some(Stage::WarmUp { next_at, .. }) =
                        record.rollout.as_mut().map(|r| &mut r.stage)
                    {
                        *next_at = now.plus(WARM_UP_EVERY);
                    }
                    Applied::Moved
                }
            }
        }
        (Step::Promote, _) => {
            record.enter(Stage::Switch, now);
            Applied::Moved
        }
        (Step::Route { .. }, Outcome::Done) => {
            // A plain route replaces any split.
            if let Some(r) = record.rollout.as_mut() {
                r.split = None;
            }
            match stage {
                Stage::Switch => {
                    let deadline = now.plus(desired.probe.timeout);
                    record.enter(Stage::Verify { deadline, next_at: now }, now);
                }
                Stage::Rollback { .. } => {
                    if let Some(r) = record.rollout.as_mut() {
                        r.restored_at = r.restored_at.or(Some(now));
                    }
                }
                _ => {}
            }
            Applied::Moved
        }
        // The router kept its old configuration: traffic never moved.
        (Step::Route { .. }, Outcome::Refused(reason)) if stage == Stage::Switch => {
            back(record, split_level, reason)
        }
        (Step::Split { weight, .. }, Outcome::Done) => {
            let Stage::Canary { index, at: CanaryAt::SetWeight { .. }, .. } = stage else {
                return Applied::Moved;
            };
            if let Some(r) = record.rollout.as_mut() {
                r.split = Some(*weight);
            }
            record.enter(canary_step(&desired, index + 1, *weight, now), now);
            Applied::Moved
        }
        (Step::Split { weight, .. }, Outcome::Refused(reason)) => {
            let why = format!("canary: the router refused {weight}% to the new color: {reason}");
            back(record, split_level, why)
        }
        (Step::CanaryNext { from, full }, _) => {
            let Stage::Canary { index, weight, .. } = stage else { return Applied::Moved };
            if index != *from {
                return Applied::Moved;
            }
            if let Some(r) = record.rollout.as_mut() {
                r.operator = None;
            }
            let next = if *full { usize::MAX } else { index + 1 };
            record.enter(canary_step(&desired, next, weight, now), now);
            Applied::Moved
        }
        (Step::Compare { .. }, Outcome::Compared(Err(e))) => {
            Applied::Retry(format!("canary analysis: {e}"))
        }
        (Step::Compare { .. }, Outcome::Refused(reason)) => {
            back(record, Level::Canary, format!("canary analysis: {reason}"))
        }
        (Step::Compare { .. }, Outcome::Compared(Ok(pair))) => {
            let Stage::Canary { index, weight, at: CanaryAt::Analysis { until, baseline, .. } } =
                stage
            else {
                return Applied::Moved;
            };
            let Some(CanaryStep::Analysis(limits)) = desired.strategy.steps().get(index) else {
                return Applied::Moved;
            };
            let Some(r) = record.rollout.as_mut() else { return Applied::Moved };
            let next_at = now.plus(ANALYSIS_EVERY);
            let Some(baseline) = baseline else {
                let baseline = Some(pair);
                r.stage = Stage::Canary {
                    index,
                    weight,
                    at: CanaryAt::Analysis { until, next_at, baseline },
                };
                return Applied::Moved;
            };
            let compared = compare::judge(limits, index, weight, &baseline, &pair);
            let failed = (compared.decision == Decision::Failed).then(|| compared.reason.clone());
            r.summary.comparisons.retain(|c| c.step != index);
            r.summary.comparisons.push(compared);
            r.summary.comparisons.sort_by_key(|c| c.step);
            if let Some(reason) = failed {
                let reason = reason.unwrap_or_else(|| "canary analysis failed".to_owned());
                return back(record, Level::Canary, reason);
            }
            let baseline = Some(baseline);
            r.stage = Stage::Canary {
                index,
                weight,
                at: CanaryAt::Analysis { until, next_at, baseline },
            };
            Applied::Moved
        }
        (Step::Mirror { to: Some(_) }, Outcome::Done) => {
            let Some(r) = record.rollout.as_mut() else { return Applied::Moved };
            r.mirroring = true;
            if let (Stage::Shadow { until: until @ None }, Some(s)) =
                (&mut r.stage, &desired.shadow)
            {
                *until = Some(now.plus(s.duration));
            }
            Applied::Moved
        }
        (Step::Mirror { to: Some(_) }, Outcome::Refused(reason)) => {
            back(record, Level::BeforeSwitch, format!("shadow: the router cannot mirror: {reason}"))
        }
        (Step::Mirror { to: None }, Outcome::Done) => {
            if let Some(r) = record.rollout.as_mut() {
                r.mirroring = false;
            }
            Applied::Moved
        }
        (Step::Answers { .. }, Outcome::Answered(Ok(answers))) => {
            let Some(limits) = &desired.shadow else { return Applied::Moved };
            let judged = shadow::judge(limits, &answers);
            let reason = judged.reason.clone();
            if let Some(r) = record.rollout.as_mut() {
                r.summary.shadow = Some(judged);
            }
            match reason {
                Some(reason) => back(record, Level::BeforeSwitch, reason),
                None => {
                    record.enter(shadowed(&desired, has_old, now), now);
                    Applied::Moved
                }
            }
        }
        (Step::Answers { .. }, Outcome::Answered(Err(e)) | Outcome::Refused(e)) => back(
            record,
            Level::BeforeSwitch,
            format!("shadow: the answers could not be collected: {e}"),
        ),
        (Step::Probe { .. }, Outcome::Probed(Ok(()))) => {
            // The old color stays through the analysis window, so a
            // rollback in it is instant.
            let window = desired.analysis.window;
            let analyze = !window.is_zero() && r.summary.from_color.is_some();
            let keep = if analyze {
                desired.scale_down_delay.max(window)
            } else {
                desired.scale_down_delay
            };
            record.enter(Stage::ScaleDown { not_before: now.plus(keep) }, now);
            if let Some(r) = record.rollout.as_mut().filter(|_| analyze) {
                r.watch = Some(Watch::opening(now.plus(window), now));
            }
            Applied::Moved
        }
        (Step::Probe { color, tag, probe }, Outcome::Probed(Err(last))) => {
            let Stage::Verify { deadline, .. } = stage else { return Applied::Moved };
            if now >= deadline {
                let within = humantime::format_duration(probe.timeout);
                let reason = format!(
                    "probe through the front: {color} {tag} did not answer within {within}: {last}"
                );
                return back(record, Level::AfterProbe, reason);
            }
            if let Some(Stage::Verify { next_at, .. }) =
                record.rollout.as_mut().map(|r| &mut r.stage)
            {
                *next_at = now.plus(PROBE_EVERY);
            }
            Applied::Moved
        }
        (Step::Analyze { .. }, Outcome::Sampled(sampled)) => {
            let reading = match sampled {
                Ok(reading) => reading,
                Err(e) => return Applied::Retry(format!("analysis: {e}")),
            };
            if let Some(wrong) = reading.own.wrong {
                return back(record, Level::AfterAnalysis, format!("analysis: {wrong}"));
            }
            let Some(r) = record.rollout.as_mut() else { return Applied::Moved };
            let Some(watch) = r.watch.as_mut() else { return Applied::Moved };
            watch.next_at = now.plus(ANALYSIS_EVERY);
            watch.own += reading.own.sent;
            watch.own_failed += reading.own.failed;
            for (name, value) in &reading.queries {
                let query = desired.analysis.queries.iter().find(|q| &q.name == name);
                match (query, value) {
                    (Some(q), Ok(v)) => {
                        if let Err(reason) = q.check(*v) {
                            return back(record, Level::AfterAnalysis, reason);
                        }
                        if !watch.conclusive.contains(name) {
                            watch.conclusive.push(name.clone());
                        }
                    }
                    (_, Err(why)) => watch.inconclusive = Some(format!("{name}: {why}")),
                    (None, Ok(_)) => {}
                }
            }
            let Some(baseline) = &watch.baseline else {
                watch.baseline = Some(reading.sample);
                return Applied::Moved;
            };
            let figures = analysis::figures(baseline, &reading.sample, watch.own, watch.own_failed);
            r.summary.analysis = Some(figures);
            match analysis::judge(&desired.analysis, &figures) {
                Ok(()) => Applied::Moved,
                Err(reason) => back(record, Level::AfterAnalysis, reason),
            }
        }
        (Step::Fail { level, reason }, _) => back(record, *level, reason.clone()),
        (Step::Supersede { reason }, _) => {
            if let Some(r) = record.rollout.as_mut() {
                r.superseded = true;
            }
            back(record, split_level, reason.clone())
        }
        (_, Outcome::Unavailable(error)) => {
            let failures =
                record.rollout.as_ref().and_then(|r| r.attempt).map_or(0, |a| a.failures);
            let wait = RETRY_FIRST.saturating_mul(1 << failures.min(8)).min(RETRY_MOST);
            // A start is its own step in the prepare stage too.
            let name =
                if matches!(step, Step::Start { .. }) { StepName::Start } else { stage.name() };
            let failures = record.note_failure(name, &error, now.plus(wait));
            if stage.before_switch() && failures >= MAX_FAILURES {
                let reason = format!("{name} failed {failures} times: {error}");
                return back(record, Level::BeforeSwitch, reason);
            }
            Applied::Moved
        }
        (_, Outcome::Refused(reason)) => Applied::Retry(reason),
        _ => Applied::Moved,
    }
}

/// Takes an operator's word for the paused rollout, or for a canary at
/// any step (promote skips the step under way, `PromoteFull` every step
/// left, abort gives the traffic back); a shadow comparison can only be
/// aborted. Refused otherwise.
pub fn command(record: &mut Record, word: Operator) -> Result<(), &'static str> {
    let Some(r) = record.rollout.as_mut() else { return Err("no rollout is paused") };
    match (&r.stage, word) {
        (Stage::Paused | Stage::Canary { .. }, _) | (Stage::Shadow { .. }, Operator::Abort) => {
            r.operator = Some(word);
            Ok(())
        }
        (Stage::Shadow { .. }, _) => {
            Err("the shadow comparison cannot be skipped; `controller abort` ends the rollout")
        }
        _ => Err("no rollout is paused"),
    }
}

#[cfg(test)]
mod tests;
