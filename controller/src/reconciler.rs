//! The reconcile loop, an effect dispatcher: read the manifest, observe,
//! let the core decide, carry the one step out on the platform, let the
//! core apply its outcome, save the record; then wait for a trigger
//! (manifest change, platform event, operator command), the next instant
//! the record names, or the periodic resync. One reconcile at a time:
//! this loop is the only place steps run, and no step waits.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use controller_core::clock::Timestamp;
use controller_core::machine::{self, Applied, Outcome, Removal, Step};
use controller_core::manifest::{self, Desired};
use controller_core::observed::{Observed, Resolved};
use controller_core::record::{Operator, Record, Stage};
use controller_core::shadow::Answers;
use controller_core::status::{self, ManifestState};
use tokio::sync::{mpsc, watch};
use tracing::{debug, error, info, warn};

use crate::clock;
use crate::color_http::ColorHttp;
use crate::crash;
use crate::error::Result;
use crate::front::FrontWatch;
use crate::live_traffic::LiveTraffic;
use crate::local_file;
use crate::notify::{self, Notifier};
use crate::platform::{self, Platform, PlatformError};
use crate::scrape_targets::ScrapeTargets;
use crate::store::Store;

/// How long to wait before retrying a step that failed.
const BACKOFF: Duration = Duration::from_secs(2);

pub use crate::shared::{Shared, Trigger};

pub struct Reconciler<P> {
    platform: Arc<P>,
    http: ColorHttp,
    shared: Arc<Shared>,
    store: Store,
    record: Record,
    desired: Option<Desired>,
    manifest_error: Option<String>,
    observed: Option<Observed>,
    last_error: Option<String>,
    resync: Duration,
    front: FrontWatch,
    /// What the desired tag named in the registry when last asked.
    resolution: Option<Resolution>,
    /// Where rollout events go.
    notifier: Notifier,
    /// The file Prometheus finds the replicas in, when one is kept.
    targets: Option<ScrapeTargets>,
    /// The live color's traffic, and how often it is read, unless never.
    live: Option<(LiveTraffic, Duration)>,
}

/// A tag's digest as the registry said, and when it was asked.
struct Resolution {
    image: String,
    digest: Option<String>,
    at: Timestamp,
}

/// How often the registry is asked what the desired tag names: a tag
/// pushed again is deployed within this (and a reconcile).
const RESOLVE_EVERY: Duration = Duration::from_secs(10);

enum Flow {
    /// Take the next step at once.
    Next,
    /// Shut down.
    Stop,
    /// Wait for a trigger, or until this instant (or the resync).
    Wait(Option<Timestamp>),
}

impl<P: Platform + 'static> Reconciler<P> {
    /// Loads the record and notes a restart in the rollout it holds.
    pub fn new(
        platform: P,
        shared: Arc<Shared>,
        store: Store,
        resync: Duration,
    ) -> Result<Reconciler<P>> {
        let (mut record, warning) = store.load()?;
        if let Some(w) = warning {
            warn!(problem = %w, "the state file was corrupt; starting from what is observed");
        }
        if let Some(r) = &record.rollout {
            info!(revision = r.summary.revision, tag = %r.tag(), step = %r.stage.name(), "resuming the rollout in flight");
        }
        record.note_restart();
        store.save(&record)?;
        Ok(Reconciler {
            platform: Arc::new(platform),
            http: ColorHttp::default(),
            shared,
            store,
            record,
            desired: None,
            manifest_error: None,
            observed: None,
            last_error: None,
            resync,
            front: FrontWatch::default(),
            resolution: None,
            notifier: Notifier::default(),
            targets: None,
            live: Some((LiveTraffic::default(), crate::live_traffic::EVERY)),
        })
    }

    /// Asks the analysis' PromQL queries of the Prometheus at `url`.
    pub fn prometheus(mut self, url: String) -> Reconciler<P> {
        self.http = ColorHttp::with_prometheus(url);
        self
    }

    /// Hands rollout events to `notifier` (a webhook).
    pub fn notify(mut self, notifier: Notifier) -> Reconciler<P> {
        self.notifier = notifier;
        self
    }

    /// Reads the live color's traffic every `every` (by default
    /// [`crate::live_traffic::EVERY`]) for /status, in a task of its own;
    /// `None`: never.
    pub fn live_traffic(mut self, every: Option<Duration>) -> Reconciler<P> {
        self.live = every.map(|every| (LiveTraffic::default(), every));
        self
    }

    /// Keeps Prometheus' file of scrape targets after each observation.
    pub fn scrape_targets(mut self, targets: ScrapeTargets) -> Reconciler<P> {
        self.targets = Some(targets);
        self
    }

    /// Runs until `shutdown` turns true. A step under way is given up
    /// then, or when an operator speaks or the desired state changes:
    /// every step is safe to repeat, as after a crash, so nothing waits
    /// for a pull or a slow answer to see a new tag, promote, abort or
    /// SIGTERM.
    pub async fn run(mut self, triggers: mpsc::Receiver<Trigger>, shutdown: watch::Receiver<bool>) {
        let (hints, mut hint_rx) = mpsc::channel(64);
        let events = tokio::spawn(self.platform.events(hints.clone()));
        let front = tokio::spawn(self.front.clone().run(self.platform.front().to_owned(), hints));
        let live = self.live.as_ref().map(|(traffic, every)| {
            let (w, http, shared) = (self.platform.clone(), self.http.clone(), self.shared.clone());
            tokio::spawn(traffic.clone().run(w, http, shared, *every, shutdown.clone()))
        });
        let mut hints_closed = false;
        let mut inbox = Inbox { triggers, shutdown, words: Vec::new() };
        loop {
            if *inbox.shutdown.borrow() {
                break;
            }
            let flow = self.reconcile(&mut inbox).await;
            for word in std::mem::take(&mut inbox.words) {
                self.take(Trigger::Operator(word));
            }
            let until = match flow {
                Flow::Next => continue,
                Flow::Stop => break,
                Flow::Wait(until) => until,
            };
            let pause = until.map_or(self.resync, |t| t.remaining(clock::now()).min(self.resync));
            tokio::select! {
                trigger = inbox.triggers.recv() => {
                    if let Some(t) = trigger {
                        self.take(t);
                    }
                    // Several triggers at once need one reconcile.
                    while let Ok(t) = inbox.triggers.try_recv() {
                        self.take(t);
                    }
                }
                hint = hint_rx.recv(), if !hints_closed => match hint {
                    Some(what) => {
                        tracing::debug!(event = %what, "reconcile");
                        while hint_rx.try_recv().is_ok() {}
                    }
                    // The event stream ended for good: the resync remains.
                    None => hints_closed = true,
                },
                _ = tokio::time::sleep(pause) => {}
                _ = inbox.shutdown.changed() => break,
            }
        }
        events.abort();
        front.abort();
        if let Some(task) = live {
            task.abort();
        }
    }

    fn take(&mut self, trigger: Trigger) {
        tracing::debug!(trigger = ?trigger, "reconcile");
        let Trigger::Operator(word) = trigger else { return };
        match machine::command(&mut self.record, word) {
            Ok(()) => {
                info!(operator = ?word, "operator's word on the paused rollout");
                if let Err(e) = self.store.save(&self.record) {
                    error!(error = %e, "cannot save the state");
                }
            }
            Err(why) => warn!(operator = ?word, "{why}; ignored"),
        }
    }

    async fn reconcile(&mut self, inbox: &mut Inbox) -> Flow {
        self.read_manifest().await;
        let mut observed = match platform::observe(&*self.platform).await {
            Ok(o) => o,
            Err(e) => return self.failed(e.metric_label(), e.to_string()),
        };
        observed.front = self.front.last();
        if self.record.rollout.is_none() {
            let resolving = self.resolve();
            let interrupted = inbox.interruption(&self.shared.manifest, self.desired.as_ref());
            tokio::select! {
                resolved = resolving => {
                    if let Some(r) = resolved {
                        self.resolution = Some(r);
                    }
                }
                why = interrupted => {
                    return if why == Interruption::Shutdown { Flow::Stop } else { Flow::Next };
                }
            }
        }
        observed.resolved = self.resolution.as_ref().and_then(|r| {
            let digest = r.digest.clone()?;
            Some(Resolved { image: r.image.clone(), digest })
        });
        self.shared.metrics.active(observed.live_color());
        self.shared.metrics.observed(&observed, self.desired.as_ref().map(|d| d.replicas));
        if let Some(targets) = &mut self.targets {
            targets.observed(&observed);
        }
        let now = clock::now();
        let step = machine::decide(self.desired.as_ref(), &observed, &self.record, now);
        self.observed = Some(observed);
        self.publish(now);
        if let Step::Wait { until } = step {
            return Flow::Wait(until);
        }
        self.shared.metrics.reconciled();
        let performed = tokio::select! {
            performed = self.perform(&step) => performed,
            why = inbox.interruption(&self.shared.manifest, self.desired.as_ref()) => {
                info!(step = ?step, why = why.as_str(), "the step under way is given up");
                return if why == Interruption::Shutdown { Flow::Stop } else { Flow::Next };
            }
        };
        let outcome = match performed {
            Ok(o) => o,
            Err(e) => return self.failed(e.metric_label(), e.to_string()),
        };
        let before = self.record.rollout.as_ref().map(|r| r.stage.clone());
        let applied = machine::apply(&mut self.record, &step, outcome, clock::now());
        if let Some(event) = notify::event(before.as_ref(), &step, &applied, &self.record) {
            self.notifier.send(event);
        }
        self.log_change(before, &applied);
        let saved = self.store.save(&self.record);
        match (applied, saved) {
            (_, Err(e)) => self.failed(e.metric_label(), e.to_string()),
            (Applied::Retry(reason), Ok(())) => self.failed("step", reason),
            (Applied::Finished(f), Ok(())) => {
                self.shared.metrics.finished(&f);
                self.front.recheck();
                self.last_error = None;
                Flow::Next
            }
            (Applied::Moved, Ok(())) => {
                self.last_error = None;
                Flow::Next
            }
        }
    }

    fn log_change(&self, before: Option<Stage>, applied: &Applied) {
        if let Applied::Finished(f) = applied {
            info!(
                revision = f.summary.revision,
                tag = %f.tag,
                color = %f.summary.color,
                result = ?f.result,
                level = ?f.level.map(|l| l.number()),
                reason = f.reason.as_deref().unwrap_or(""),
                healthy_to_switched_ms = ?f.healthy_to_switched_ms,
                "rollout finished"
            );
            return;
        }
        let Some(r) = &self.record.rollout else { return };
        if before.as_ref().map(Stage::name) == Some(r.stage.name()) {
            return;
        }
        match &r.stage {
            Stage::Rollback { level, reason } => {
                warn!(level = level.number(), %reason, "rolling back")
            }
            Stage::Prepare => {
                info!(revision = r.summary.revision, tag = %r.tag(), color = %r.summary.color, "rollout begins")
            }
            s => info!(revision = r.summary.revision, step = %s.name(), "next step"),
        }
    }

    /// Asks the registry what the desired tag names, when the answer is
    /// missing or old. A registry that cannot say leaves the digest
    /// unknown: the tag alone then identifies the release.
    async fn resolve(&self) -> Option<Resolution> {
        let image = self.desired.as_ref().map(Desired::image)?;
        let now = clock::now();
        let fresh = self.resolution.as_ref().is_some_and(|r| {
            r.image == image && now.millis_since(r.at) < RESOLVE_EVERY.as_millis() as u64
        });
        if fresh {
            return None;
        }
        let digest = match self.platform.resolve(&image).await {
            Ok(digest) => Some(digest),
            Err(PlatformError::Unsupported(_)) => None,
            Err(e) => {
                debug!(%image, error = %e, "cannot resolve the desired tag to a digest");
                None
            }
        };
        if let Some(d) = &digest
            && self
                .resolution
                .as_ref()
                .is_some_and(|r| r.image == image && r.digest.as_ref() != Some(d))
        {
            info!(%image, digest = %d, "the desired tag names another image now");
        }
        Some(Resolution { image, digest, at: now })
    }

    /// Carries a step out. An error is a failure the platform may recover
    /// from; everything the core must judge comes back as an outcome.
    async fn perform(&self, step: &Step) -> std::result::Result<Outcome, PlatformError> {
        let p = &*self.platform;
        let forward = self.record.rollout.as_ref().is_some_and(|r| r.stage == Stage::Switch);
        Ok(match step {
            Step::Wait { .. }
            | Step::Begin { .. }
            | Step::Healthy { .. }
            | Step::Promote
            | Step::Fail { .. }
            | Step::Supersede { .. }
            | Step::Finish => Outcome::Done,
            Step::Heal { down } => {
                warn!(down = ?down, "bringing the traffic tier back");
                p.heal().await?;
                Outcome::Done
            }
            Step::Remove { color, why } => {
                info!(%color, why = ?why, "removing the color's replicas");
                p.remove(*color, *why == Removal::ScaleDown).await?;
                Outcome::Done
            }
            Step::Start { color, image, tag, replicas, digest } => {
                info!(%color, %image, replicas, "pulling and starting");
                // The limits of the desired state the step carries out: the
                // rollout's, else the manifest's (the live color kept whole).
                let of = self.record.rollout.as_ref().map(|r| &r.desired).or(self.desired.as_ref());
                let resources = of.map(|d| d.resources).unwrap_or_default();
                let spec = platform::Spec {
                    image: image.clone(),
                    tag: tag.clone(),
                    replicas: *replicas,
                    resources,
                    digest: digest.clone(),
                };
                match p.start(*color, spec).await {
                    Ok(()) => {
                        crash::point("after_start");
                        Outcome::Done
                    }
                    // The registry or the engine may come back: retried.
                    Err(e @ PlatformError::Unavailable { .. }) => {
                        Outcome::Unavailable(e.to_string())
                    }
                    // An image that cannot be had: a refusal for good.
                    Err(e) => Outcome::Refused(e.to_string()),
                }
            }
            Step::Gates { color, live, golden } => {
                Outcome::Evidence(self.http.evidence(p, *color, *live, *golden).await.map(Box::new))
            }
            Step::WarmUp { color, trip, requests } => {
                Outcome::Burst(self.http.burst(p, *color, *trip, *requests).await)
            }
            Step::Route { to, replicas, fallback } => {
                info!(to = ?to, fallback = ?fallback, forward, "routing traffic");
                match p.route(*to, *replicas, *fallback).await {
                    Ok(()) => {
                        if forward {
                            crash::point("after_reload");
                        }
                        Outcome::Done
                    }
                    Err(PlatformError::Refused(why)) => Outcome::Refused(why),
                    Err(e @ PlatformError::Unavailable { .. }) => {
                        Outcome::Unavailable(e.to_string())
                    }
                    Err(e) => return Err(e),
                }
            }
            Step::Probe { color, tag, probe } => {
                Outcome::Probed(self.http.probe(p.front(), *color, tag, probe).await)
            }
            Step::Preview { to } => {
                info!(to = ?to, "preview entry point");
                p.preview(*to).await?;
                Outcome::Done
            }
            Step::Analyze { color, own, queries } => {
                Outcome::Sampled(self.http.reading(p, *color, own.as_ref(), queries).await)
            }
            Step::CanaryNext { from, full } => {
                info!(from, full, "canary: on to the next step");
                Outcome::Done
            }
            Step::Split { stable, canary, weight } => {
                info!(stable = ?stable, canary = ?canary, weight, "canary: splitting traffic");
                changed(p.split(*stable, *canary, *weight).await)
            }
            Step::Mirror { to } => {
                info!(to = ?to, "shadow: mirroring predictions");
                changed(p.mirror(*to).await)
            }
            Step::Answers { stable, canary } => {
                let both = async {
                    let stable = self.http.answers_of(p, *stable).await?;
                    let canary = self.http.answers_of(p, *canary).await?;
                    Ok(Box::new(Answers { stable, canary }))
                };
                Outcome::Answered(both.await)
            }
            Step::Compare { stable, canary } => {
                Outcome::Compared(self.http.pair(p, *stable, *canary).await)
            }
        })
    }

    fn failed(&mut self, kind: &'static str, message: String) -> Flow {
        self.shared.metrics.reconcile_error(kind);
        warn!(error = %message, kind, "reconcile step failed; retrying");
        self.last_error = Some(message);
        self.publish(clock::now());
        Flow::Wait(Some(clock::now().plus(BACKOFF)))
    }

    /// Re-reads the whole manifest. A refused file keeps the last valid
    /// desired state in force.
    async fn read_manifest(&mut self) {
        let path = &self.shared.manifest;
        let result = match local_file::read(path).await {
            Ok(text) => manifest::parse(&text).map_err(|e| e.to_string()),
            Err(e) => Err(format!("cannot read {}: {e}", path.display())),
        };
        match result {
            Ok(desired) => {
                if self.manifest_error.take().is_some() {
                    info!(manifest = %path.display(), "the manifest is valid again");
                }
                if self.desired.as_ref() != Some(&desired) {
                    info!(tag = %desired.tag, replicas = desired.replicas, "desired state");
                }
                self.desired = Some(desired);
            }
            Err(message) => {
                if self.manifest_error.as_deref() != Some(&message) {
                    self.shared.metrics.manifest_error();
                    warn!(manifest = %path.display(), error = %message, "manifest refused; the last valid desired state stays");
                }
                self.manifest_error = Some(message);
            }
        }
    }

    fn publish(&self, now: Timestamp) {
        let source = self.shared.manifest.display().to_string();
        let manifest = ManifestState {
            desired: self.desired.as_ref(),
            error: self.manifest_error.as_deref(),
            source: &source,
        };
        let mut status = status::build(
            &manifest,
            self.observed.as_ref(),
            &self.record,
            self.last_error.as_deref(),
            now,
        );
        status.notifications = self.notifier.view();
        status.live_traffic = self.live.as_ref().map(|(t, _)| t.points()).unwrap_or_default();
        self.shared.metrics.phase(status.phase);
        self.shared.status.send_replace(status);
    }
}

/// What reaches the loop from outside while a step is under way.
struct Inbox {
    triggers: mpsc::Receiver<Trigger>,
    shutdown: watch::Receiver<bool>,
    /// Operators' words taken while a step was under way, for the record.
    words: Vec<Operator>,
}

/// Why a step under way was given up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Interruption {
    Shutdown,
    Operator,
    Desired,
}

impl Interruption {
    fn as_str(self) -> &'static str {
        match self {
            Interruption::Shutdown => "shutdown",
            Interruption::Operator => "an operator's word",
            Interruption::Desired => "a new desired state",
        }
    }
}

impl Inbox {
    /// Resolves when the step under way must be given up: a shutdown, an
    /// operator's word, or a manifest whose valid desired state is no
    /// longer `current`. Other triggers are only consumed: the reconcile
    /// after the step reads everything afresh anyway.
    async fn interruption(&mut self, manifest: &Path, current: Option<&Desired>) -> Interruption {
        loop {
            tokio::select! {
                changed = self.shutdown.changed() => {
                    if changed.is_err() || *self.shutdown.borrow() {
                        return Interruption::Shutdown;
                    }
                }
                trigger = self.triggers.recv() => match trigger {
                    Some(Trigger::Operator(word)) => {
                        self.words.push(word);
                        return Interruption::Operator;
                    }
                    Some(_) => {
                        let text = local_file::read(manifest).await;
                        let now = text.ok().and_then(|t| manifest::parse(&t).ok());
                        if now.is_some() && now.as_ref() != current {
                            return Interruption::Desired;
                        }
                    }
                    // The API is gone; only a shutdown can interrupt now.
                    None => {
                        let _ = self.shutdown.wait_for(|stop| *stop).await;
                        return Interruption::Shutdown;
                    }
                },
            }
        }
    }
}

/// What a change of the router's files gave, as the core reads it: a
/// refusal (nginx refused it, or the platform cannot do it) is for good,
/// anything else may pass.
fn changed(result: platform::Result<()>) -> Outcome {
    match result {
        Ok(()) => Outcome::Done,
        Err(PlatformError::Refused(why)) => Outcome::Refused(why),
        Err(e @ PlatformError::Unsupported(_)) => Outcome::Refused(e.to_string()),
        Err(e) => Outcome::Unavailable(e.to_string()),
    }
}
