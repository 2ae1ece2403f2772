//! The live color's traffic for the status page's chart: every few
//! seconds, each live replica's counters are read and folded into the
//! core's [`Series`]; /status carries the points. A task of its own, so a
//! replica slow to answer `/metrics` never holds a rollout up, and what it
//! reads is bounded like every answer of a color's.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use controller_core::traffic::{Point, Series};
use tokio::sync::watch;

use crate::clock;
use crate::color_http::ColorHttp;
use crate::platform::Workloads;
use crate::shared::Shared;

/// How often the live color is read.
pub const EVERY: Duration = Duration::from_secs(5);

/// The series, shared by the task that reads and the loop that publishes.
#[derive(Clone, Default)]
pub struct LiveTraffic {
    series: Arc<Mutex<Series>>,
}

impl LiveTraffic {
    /// The points so far, oldest first.
    pub fn points(&self) -> Vec<Point> {
        self.series.lock().map(|s| s.points()).unwrap_or_default()
    }

    /// Reads the live color (as the last /status says) every `every` until
    /// `shutdown` turns true, and puts the points on /status at once.
    pub async fn run<W: Workloads>(
        self,
        workloads: Arc<W>,
        http: ColorHttp,
        shared: Arc<Shared>,
        every: Duration,
        mut shutdown: watch::Receiver<bool>,
    ) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = shutdown.changed() => return,
            }
            if *shutdown.borrow() {
                return;
            }
            let live = shared.status.borrow().active.color;
            let Some(color) = live else {
                self.update(|s| s.idle());
                continue;
            };
            match http.counters(&*workloads, color).await {
                Ok(counters) if !counters.is_empty() => {
                    let at = clock::now();
                    self.update(|s| s.read(at, color, counters));
                    let points = self.points();
                    shared.status.send_modify(|s| s.live_traffic = points);
                }
                Ok(_) => self.update(|s| s.idle()),
                Err(e) => {
                    tracing::debug!(error = %e, "cannot list the live color's replicas");
                    self.update(|s| s.idle());
                }
            }
        }
    }

    fn update(&self, change: impl FnOnce(&mut Series)) {
        if let Ok(mut s) = self.series.lock() {
            change(&mut s);
        }
    }
}
