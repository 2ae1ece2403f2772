//! The front as users reach it (`GET /ready` through it), checked once a second by a task of its
//! own, so /status never says Healthy while the front cannot answer and a
//! hung front never holds the loop. A change of the answer wakes the loop.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, mpsc};

use crate::color_http::ColorHttp;

/// Between two checks.
const EVERY: Duration = Duration::from_secs(1);

#[derive(Clone, Default)]
pub struct FrontWatch {
    last: Arc<Mutex<Option<Result<(), String>>>>,
    poke: Arc<Notify>,
}

impl FrontWatch {
    /// The last answer; `None` before the first check since the last
    /// [`FrontWatch::recheck`].
    pub fn last(&self) -> Option<Result<(), String>> {
        self.last.lock().map(|l| l.clone()).unwrap_or(None)
    }

    /// Forgets the last answer and checks again now (after a rollout: the
    /// front answers another color).
    pub fn recheck(&self) {
        if let Ok(mut l) = self.last.lock() {
            *l = None;
        }
        self.poke.notify_one();
    }

    /// Checks `front` until the process ends, sending a hint whenever the
    /// answer changes.
    pub async fn run(self, front: String, hints: mpsc::Sender<String>) {
        let http = ColorHttp::default();
        loop {
            let answer = http.answers(&front).await;
            let changed = match self.last.lock() {
                Ok(mut l) => {
                    let changed = l.as_ref() != Some(&answer);
                    *l = Some(answer);
                    changed
                }
                Err(_) => false,
            };
            if changed {
                let _ = hints.try_send("front".into());
            }
            tokio::select! {
                _ = tokio::time::sleep(EVERY) => {}
                _ = self.poke.notified() => {}
            }
        }
    }
}
