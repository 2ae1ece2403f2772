//! The reconcile loop: read the manifest, observe, decide, perform one
//! step, record it; wait for a trigger (manifest change, Docker event,
//! operator command), a deadline of the rollout, or the periodic resync.
//! One reconcile at a time: this loop is the only place steps run.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Mutex, mpsc, watch};
use tracing::{error, info, warn};

use bluegreen::Color;
use model::Trip;

use crate::analysis::{self, Sample};
use crate::clock::Timestamp;
use crate::error::{Error, Result};
use crate::gates::{self, Diff};
use crate::manifest::Gates;
use crate::manifest::{self, Desired};
use crate::metrics::Metrics;
use crate::observed::Observed;
use crate::platform::Platform;
use crate::reconcile::{Removal, Step, decide};
use crate::record::Watch;
use crate::record::{Record, Stage};
use crate::status::{self, ManifestState, Status};
use crate::store::Store;

/// Requests in one warm-up burst of the latency budget.
const WARM_UP: usize = 40;

/// How often the analysis after a switch reads the new color's metrics.
const ANALYSIS_EVERY: Duration = Duration::from_secs(1);

/// How long to wait before retrying a step that failed.
const BACKOFF: Duration = Duration::from_secs(2);

/// Why a reconcile runs; only logged — the reconcile assumes nothing.
#[derive(Debug, Clone)]
pub enum Trigger {
    Manifest,
    Docker(String),
    Command(&'static str),
}

/// What the loop shares with the API.
pub struct Shared {
    pub status: watch::Sender<Status>,
    pub metrics: Metrics,
    /// The manifest file the controller watches and edits.
    pub manifest: PathBuf,
    /// Held while the API edits the manifest.
    pub manifest_lock: Mutex<()>,
    pub triggers: mpsc::Sender<Trigger>,
    pub token: String,
    /// An operator's promote or abort, taken by the next reconcile.
    pub operator: std::sync::Mutex<Option<crate::record::Operator>>,
}

impl Shared {
    /// What the loop and the API share, with empty metrics and no
    /// operator's word yet.
    pub fn new(
        status: watch::Sender<Status>,
        manifest: PathBuf,
        triggers: mpsc::Sender<Trigger>,
        token: String,
    ) -> Arc<Shared> {
        Arc::new(Shared {
            status,
            metrics: Metrics::default(),
            manifest,
            manifest_lock: Mutex::new(()),
            triggers,
            token,
            operator: std::sync::Mutex::new(None),
        })
    }
}

pub struct Reconciler<P> {
    platform: P,
    shared: Arc<Shared>,
    store: Store,
    record: Record,
    desired: Option<Desired>,
    manifest_error: Option<String>,
    observed: Option<Observed>,
    last_error: Option<String>,
    resync: Duration,
}

enum Flow {
    /// Take the next step at once.
    Next,
    /// Wait for a trigger, or until this instant (or the resync).
    Wait(Option<Timestamp>),
}

impl<P: Platform> Reconciler<P> {
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
            info!(revision = r.revision, tag = %r.tag, step = r.stage.name(), "resuming the rollout in flight");
        }
        record.note_restart();
        store.save(&record)?;
        Ok(Reconciler {
            platform,
            shared,
            store,
            record,
            desired: None,
            manifest_error: None,
            observed: None,
            last_error: None,
            resync,
        })
    }

    /// Runs until `shutdown` turns true; a step under way is finished
    /// first, so the record never lags the world by more than one step.
    pub async fn run(
        mut self,
        mut triggers: mpsc::Receiver<Trigger>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        loop {
            if *shutdown.borrow() {
                return;
            }
            let until = match self.reconcile().await {
                Flow::Next => continue,
                Flow::Wait(until) => until,
            };
            let pause =
                until.map_or(self.resync, |t| t.remaining(Timestamp::now()).min(self.resync));
            tokio::select! {
                trigger = triggers.recv() => {
                    if let Some(t) = trigger {
                        tracing::debug!(trigger = ?t, "reconcile");
                    }
                    // Several triggers at once need one reconcile.
                    while triggers.try_recv().is_ok() {}
                }
                _ = tokio::time::sleep(pause) => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    async fn reconcile(&mut self) -> Flow {
        self.read_manifest().await;
        self.take_operator();
        let observed = match self.platform.observe().await {
            Ok(o) => o,
            Err(e) => return self.failed(e),
        };
        self.shared.metrics.active(observed.live_color());
        let now = Timestamp::now();
        let step = decide(self.desired.as_ref(), &observed, &self.record, now);
        self.observed = Some(observed);
        self.publish(now);
        if let Step::Wait { until } = step {
            return Flow::Wait(until);
        }
        self.shared.metrics.reconciled();
        match self.perform(step).await {
            Ok(()) => {
                self.last_error = None;
                match self.store.save(&self.record) {
                    Ok(()) => Flow::Next,
                    Err(e) => self.failed(e),
                }
            }
            Err(e) => {
                // What the step changed in the record is kept too.
                if let Err(save) = self.store.save(&self.record) {
                    error!(error = %save, "cannot save the state");
                }
                self.failed(e)
            }
        }
    }

    /// An operator's promote or abort, for a paused rollout.
    fn take_operator(&mut self) {
        let asked = self.shared.operator.lock().map(|mut o| o.take()).unwrap_or(None);
        if let Some(op) = asked {
            match self.record.rollout.as_mut().filter(|r| r.stage == Stage::Paused) {
                Some(r) => {
                    info!(operator = ?op, "operator's word on the paused rollout");
                    r.operator = Some(op);
                }
                None => warn!(operator = ?op, "no rollout is paused; ignored"),
            }
        }
    }

    fn failed(&mut self, e: Error) -> Flow {
        self.shared.metrics.reconcile_error(e.metric_label());
        warn!(error = %e, kind = e.metric_label(), "reconcile step failed; retrying");
        self.last_error = Some(e.to_string());
        self.publish(Timestamp::now());
        Flow::Wait(Some(Timestamp::now().plus(BACKOFF)))
    }

    /// Re-reads the whole manifest. A refused file keeps the last valid
    /// desired state in force.
    async fn read_manifest(&mut self) {
        let path = &self.shared.manifest;
        let result = match tokio::fs::read_to_string(path).await {
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
        let status = status::build(
            &manifest,
            self.observed.as_ref(),
            &self.record,
            self.last_error.as_deref(),
            now,
        );
        self.shared.status.send_replace(status);
    }

    fn rollout_desired(&self) -> Option<Desired> {
        self.record.rollout.as_ref().map(|r| r.desired.clone())
    }

    async fn perform(&mut self, step: Step) -> Result<()> {
        let stage = self.record.rollout.as_ref().map(|r| r.stage.clone());
        match step {
            Step::Wait { .. } => {}
            Step::Begin { color, from } => {
                let Some(desired) = self.desired.clone() else { return Ok(()) };
                self.record.begin(&desired, color, from, Timestamp::now());
                let revision = self.record.rollout.as_ref().map_or(0, |r| r.revision);
                info!(revision, tag = %desired.tag, %color, "rollout begins");
            }
            Step::Remove { color, why } => {
                info!(%color, why = ?why, "removing the color's containers");
                self.platform.remove_color(color, why == Removal::ScaleDown).await?;
            }
            Step::Start { color, image, tag, replicas } => {
                info!(%color, %image, replicas, "pulling and starting");
                let Some(desired) = self.rollout_desired() else { return Ok(()) };
                match self.platform.start_color(color, &image, &tag, replicas).await {
                    Ok(()) => {
                        crate::crash::point("after_start");
                        let now = Timestamp::now();
                        self.record.enter(
                            Stage::Health { deadline: now.plus(desired.health_timeout) },
                            now,
                        );
                    }
                    Err(e) => self.roll_back(1, e.to_string()),
                }
            }
            Step::Healthy => {
                info!("every new replica is healthy; running the model gates");
                self.record.enter(Stage::Gates, Timestamp::now());
            }
            Step::Gates { color, live } => {
                let Some(desired) = self.rollout_desired() else { return Ok(()) };
                match self.gates(color, live, &desired.gates).await {
                    Ok(diff) => {
                        if let Some(d) = &diff {
                            info!(
                                trips = d.trips,
                                mean_abs = d.mean_abs,
                                max_abs = d.max_abs,
                                "prediction diff"
                            );
                        }
                        if let Some(r) = self.record.rollout.as_mut() {
                            r.diff = diff;
                        }
                        let next = if desired.auto_promote { Stage::Switch } else { Stage::Paused };
                        info!(%color, next = next.name(), "the model gates passed");
                        self.record.enter(next, Timestamp::now());
                    }
                    Err(reason) => self.roll_back(1, reason),
                }
            }
            Step::Switch { to, replicas, backup } => {
                let forward = stage == Some(Stage::Switch);
                info!(to = ?to, backup = ?backup, forward, "switching nginx");
                let result = self.platform.switch_traffic(to, replicas, backup).await;
                if result.is_ok() {
                    self.record.last_reload_at = Some(Timestamp::now());
                }
                match result {
                    Ok(()) if forward => {
                        crate::crash::point("after_reload");
                        self.record.enter(Stage::Verify, Timestamp::now())
                    }
                    Ok(()) => {
                        if matches!(stage, Some(Stage::Rollback { .. })) {
                            self.record.restored(Timestamp::now());
                        }
                    }
                    // nginx kept its old configuration: traffic never moved.
                    Err(e @ (Error::NginxTest(_) | Error::NginxReload(_))) if forward => {
                        self.roll_back(1, e.to_string())
                    }
                    Err(e) => return Err(e),
                }
            }
            Step::Probe { color, tag } => {
                let Some(desired) = self.rollout_desired() else { return Ok(()) };
                match self.platform.probe(color, &tag, &desired.probe).await {
                    Ok(()) => {
                        let now = Timestamp::now();
                        info!(%color, %tag, "the new color answers through nginx");
                        // The old color stays through the analysis window, so
                        // a rollback in it is instant.
                        let window = desired.analysis.window;
                        let analyze = !window.is_zero()
                            && self.record.rollout.as_ref().is_some_and(|r| r.from.is_some());
                        let keep = if analyze {
                            desired.scale_down_delay.max(window)
                        } else {
                            desired.scale_down_delay
                        };
                        self.record.enter(Stage::ScaleDown { not_before: now.plus(keep) }, now);
                        if let Some(r) = self.record.rollout.as_mut().filter(|_| analyze) {
                            r.watch = Some(Watch {
                                until: now.plus(window),
                                next_at: now,
                                baseline: None,
                                figures: None,
                            });
                        }
                    }
                    Err(e) => self.roll_back(2, e.to_string()),
                }
            }
            Step::Analyze { color } => {
                let Some(desired) = self.rollout_desired() else { return Ok(()) };
                let mut now_sample = Sample::default();
                for text in self.platform.metrics(color).await? {
                    now_sample.add(&analysis::parse(&text));
                }
                let now = Timestamp::now();
                let Some(watch) = self.record.rollout.as_mut().and_then(|r| r.watch.as_mut())
                else {
                    return Ok(());
                };
                watch.next_at = now.plus(ANALYSIS_EVERY);
                let Some(baseline) = &watch.baseline else {
                    watch.baseline = Some(now_sample);
                    return Ok(());
                };
                let figures = analysis::figures(baseline, &now_sample);
                watch.figures = Some(figures);
                if let Err(reason) = analysis::judge(&desired.analysis, &figures) {
                    self.roll_back(3, reason);
                }
            }
            Step::Preview { to } => {
                info!(to = ?to, "preview port");
                self.platform.preview(to).await?;
            }
            Step::Promote => {
                info!("promoted by the operator; switching");
                self.record.enter(Stage::Switch, Timestamp::now());
            }
            Step::Fail { level, reason } => self.roll_back(level, reason),
            Step::Finish => {
                if let Some(f) = self.record.finish(Timestamp::now()) {
                    self.shared.metrics.finished(&f);
                    info!(
                        revision = f.revision,
                        tag = %f.tag,
                        color = %f.color,
                        result = ?f.result,
                        level = ?f.level,
                        reason = f.reason.as_deref().unwrap_or(""),
                        healthy_to_switched_ms = ?f.healthy_to_switched_ms,
                        "rollout finished"
                    );
                }
            }
        }
        Ok(())
    }

    /// The model gates on `color`, against `live`: the golden trips, the
    /// quality gate, and the diff users would see. Any failure to read or
    /// price is a refusal too: traffic has not moved.
    async fn gates(
        &self,
        color: Color,
        live: Option<Color>,
        gates: &Gates,
    ) -> std::result::Result<Option<Diff>, String> {
        let new = self
            .platform
            .artifact(color)
            .await
            .map_err(|e| format!("cannot read the new model: {e}"))?;
        let trips: Vec<Trip> = new.golden.iter().map(|g| g.trip).collect();
        let mut new_fares = None;
        if gates.golden {
            let (fares, version) = self
                .platform
                .predict(color, &trips)
                .await
                .map_err(|e| format!("golden trips: {e}"))?;
            gates::check_golden(&new, &fares, &version)?;
            new_fares = Some(fares);
        }
        let live_model = match live {
            Some(l) => Some(
                self.platform
                    .artifact(l)
                    .await
                    .map_err(|e| format!("cannot read the live model: {e}"))?,
            ),
            None => None,
        };
        gates::check_quality(
            gates,
            &new.lineage.metrics,
            live_model.as_ref().map(|a| &a.lineage.metrics),
        )?;
        if let Some(budget) = gates.latency_budget {
            self.warm_up(color, trips.first().copied(), budget).await?;
        }
        let (Some(l), false) = (live, trips.is_empty()) else { return Ok(None) };
        let (old, _) =
            self.platform.predict(l, &trips).await.map_err(|e| format!("prediction diff: {e}"))?;
        let new_fares = match new_fares {
            Some(f) => f,
            None => {
                self.platform
                    .predict(color, &trips)
                    .await
                    .map_err(|e| format!("prediction diff: {e}"))?
                    .0
            }
        };
        Ok(Some(gates::diff(&old, &new_fares)))
    }

    /// Warm-up bursts to the new color until the p99 of one is within
    /// `budget`, or the health timeout (counted from the gates' start)
    /// passes.
    async fn warm_up(
        &self,
        color: Color,
        trip: Option<Trip>,
        budget: Duration,
    ) -> std::result::Result<(), String> {
        let trip = match trip {
            Some(t) => t,
            None => Trip::from_values(model::DOCUMENTED_TRIP)
                .map_err(|v| format!("latency budget: {v:?}"))?,
        };
        let deadline = self
            .record
            .rollout
            .as_ref()
            .map(|r| r.stage_started_at.plus(r.desired.health_timeout))
            .unwrap_or_else(Timestamp::now);
        loop {
            let mut took = Vec::with_capacity(WARM_UP);
            for _ in 0..WARM_UP {
                let sent = std::time::Instant::now();
                self.platform
                    .predict(color, &[trip])
                    .await
                    .map_err(|e| format!("latency budget: {e}"))?;
                took.push(sent.elapsed());
            }
            match gates::check_latency(&mut took, budget) {
                Ok(p99) => {
                    info!(%color, p99_ms = p99.as_secs_f64() * 1e3, "within the latency budget");
                    return Ok(());
                }
                Err(reason) if Timestamp::now() >= deadline => {
                    return Err(format!("{reason} until the health timeout"));
                }
                Err(_) => {}
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    fn roll_back(&mut self, level: u8, reason: String) {
        warn!(level, %reason, "rolling back");
        self.record.enter(Stage::Rollback { level, reason }, Timestamp::now());
    }
}
