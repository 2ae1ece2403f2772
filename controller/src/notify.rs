//! Rollout events for a webhook: started, paused, promoted, succeeded,
//! rolled back. The loop hands an event over and goes on; a task of its
//! own delivers them in order, each retried with backoff a bounded number
//! of times, so a receiver that is down or slow never holds a rollout up.
//! What it managed is on /status (`notifications`) and /metrics
//! (`controller_notifications_total{kind}`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use controller_core::machine::{Applied, Step};
use controller_core::record::{Finished, Record, Rollout, Stage, Verdict};
use controller_core::status::Notifications;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tracing::warn;

use crate::shared::Shared;

/// Events waiting for delivery; more are dropped (and counted).
const QUEUE: usize = 256;
/// Tries of one event, the wait between them doubling from the first.
const TRIES: u32 = 5;
const FIRST_WAIT: Duration = Duration::from_secs(1);
/// One try, answer included.
const TIMEOUT: Duration = Duration::from_secs(5);

/// The shape of the webhook's body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// `{"event": …}` with the fields of the history.
    Json,
    /// Slack's incoming webhook: `{"text": …}`.
    Slack,
}

/// One event: its name and the rollout's fields.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub name: &'static str,
    pub fields: Value,
    /// One line for people.
    pub text: String,
}

/// The event a reconcile step made, if any: `before` is the stage before
/// the step, `record` the record after it.
pub fn event(
    before: Option<&Stage>,
    step: &Step,
    applied: &Applied,
    record: &Record,
) -> Option<Event> {
    if let Applied::Finished(f) = applied {
        return Some(finished(f));
    }
    let r = record.rollout.as_ref()?;
    let (name, verb) = match step {
        Step::Begin { .. } => ("started", "started"),
        Step::Promote => ("promoted", "was promoted"),
        _ if r.stage == Stage::Paused && before != Some(&Stage::Paused) => {
            ("paused", "passed its gates and waits for `controller promote`")
        }
        _ => return None,
    };
    Some(of_rollout(name, verb, r))
}

fn of_rollout(name: &'static str, verb: &str, r: &Rollout) -> Event {
    let mut fields = serde_json::to_value(&r.summary).unwrap_or_else(|_| json!({}));
    if let Value::Object(map) = &mut fields {
        map.insert("event".into(), json!(name));
        map.insert("tag".into(), json!(r.desired.tag));
    }
    let text = format!(
        "rollout #{} of {} into {} {verb}",
        r.summary.revision, r.desired.tag, r.summary.color
    );
    Event { name, fields, text }
}

fn finished(f: &Finished) -> Event {
    let name = match f.result {
        Verdict::Succeeded => "succeeded",
        Verdict::RolledBack => "rolled_back",
    };
    let mut fields = serde_json::to_value(f).unwrap_or_else(|_| json!({}));
    if let Value::Object(map) = &mut fields {
        map.insert("event".into(), json!(name));
    }
    let outcome = match (f.level, &f.reason) {
        (Some(level), Some(reason)) => format!("was rolled back (level {level}): {reason}"),
        _ => "succeeded".to_owned(),
    };
    let text =
        format!("rollout #{} of {} into {} {outcome}", f.summary.revision, f.tag, f.summary.color);
    Event { name, fields, text }
}

/// The body of `event` in `format`.
pub fn body(event: &Event, format: Format) -> Value {
    match format {
        Format::Json => event.fields.clone(),
        Format::Slack => json!({ "text": format!("taxi-fare: {}", event.text) }),
    }
}

/// Where events go: nowhere, or a webhook's delivery task.
#[derive(Clone, Default)]
pub struct Notifier {
    queue: Option<mpsc::Sender<Event>>,
    state: Arc<Mutex<Notifications>>,
    shared: Option<Arc<Shared>>,
}

impl Notifier {
    /// Delivers to `url` from a task of its own.
    pub fn webhook(url: String, format: Format, shared: Arc<Shared>) -> Notifier {
        let (queue, events) = mpsc::channel(QUEUE);
        let state = Arc::new(Mutex::new(Notifications::default()));
        let client = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        let delivery =
            Delivery { url, format, client, state: state.clone(), shared: shared.clone() };
        tokio::spawn(delivery.run(events));
        Notifier { queue: Some(queue), state, shared: Some(shared) }
    }

    /// Hands `event` over without waiting.
    pub fn send(&self, event: Event) {
        let Some(queue) = &self.queue else { return };
        if queue.try_send(event).is_err() {
            if let Ok(mut s) = self.state.lock() {
                s.dropped += 1;
            }
            if let Some(shared) = &self.shared {
                shared.metrics.notification("dropped");
            }
            warn!("too many rollout events wait for the webhook; one was dropped");
        }
    }

    /// How deliveries went, for /status; `None` without a webhook.
    pub fn view(&self) -> Option<Notifications> {
        self.queue.as_ref()?;
        self.state.lock().ok().map(|s| s.clone())
    }
}

struct Delivery {
    url: String,
    format: Format,
    client: reqwest::Client,
    state: Arc<Mutex<Notifications>>,
    shared: Arc<Shared>,
}

impl Delivery {
    async fn run(self, mut events: mpsc::Receiver<Event>) {
        while let Some(event) = events.recv().await {
            self.deliver(&event).await;
        }
    }

    /// One event, tried until it is taken or the tries run out.
    async fn deliver(&self, event: &Event) {
        let body = body(event, self.format);
        let mut wait = FIRST_WAIT;
        for attempt in 1..=TRIES {
            let error = match self.client.post(&self.url).json(&body).send().await {
                Ok(r) if r.status().is_success() => {
                    self.note(|s| {
                        s.sent += 1;
                        s.error = None;
                    });
                    self.shared.metrics.notification("sent");
                    return;
                }
                Ok(r) => format!("the webhook answered {}", r.status()),
                Err(e) if e.is_timeout() => "the webhook did not answer in time".to_owned(),
                Err(e) => format!("the webhook cannot be reached: {e}"),
            };
            warn!(event = event.name, attempt, error = %error, "rollout event not delivered");
            self.note(|s| s.error = Some(error.clone()));
            if attempt == TRIES {
                break;
            }
            self.shared.metrics.notification("retried");
            tokio::time::sleep(wait).await;
            wait *= 2;
        }
        self.note(|s| s.failed += 1);
        self.shared.metrics.notification("failed");
    }

    fn note(&self, change: impl FnOnce(&mut Notifications)) {
        if let Ok(mut s) = self.state.lock() {
            change(&mut s);
        }
        // The status document carries the figures: refresh them now.
        self.shared.status.send_modify(|status| {
            status.notifications = self.state.lock().ok().map(|s| s.clone());
        });
    }
}

#[cfg(test)]
mod tests {
    use bluegreen::Color;
    use controller_core::clock::Timestamp;
    use controller_core::manifest::Desired;
    use controller_core::record::Level;

    use super::*;

    fn desired(tag: &str) -> Desired {
        Desired { tag: tag.to_owned(), ..crate::fixtures::desired() }
    }

    #[test]
    fn steps_make_the_events_of_a_rollout() {
        let mut r = Record::default();
        r.begin(&desired("v2"), Color::Green, None, Timestamp(0));
        let begin = Step::Begin {
            desired: Box::new(desired("v2")),
            color: Color::Green,
            from: None,
            digest: None,
        };
        let started = event(None, &begin, &Applied::Moved, &r).expect("started");
        assert_eq!((started.name, &started.fields["tag"]), ("started", &json!("v2")));
        assert_eq!(started.fields["revision"], 1);
        r.enter(Stage::Paused, Timestamp(1));
        let gates = Step::Gates { color: Color::Green, live: None, golden: true };
        assert_eq!(event(Some(&Stage::Gates), &gates, &Applied::Moved, &r).unwrap().name, "paused");
        assert_eq!(event(Some(&Stage::Paused), &gates, &Applied::Moved, &r), None);
        r.enter(
            Stage::Rollback { level: Level::BeforeSwitch, reason: "aborted".into() },
            Timestamp(2),
        );
        let done = r.finish(Timestamp(3)).unwrap();
        let rolled = event(None, &Step::Finish, &Applied::Finished(Box::new(done)), &r).unwrap();
        assert_eq!(rolled.name, "rolled_back");
        assert_eq!(
            (&rolled.fields["level"], &rolled.fields["reason"]),
            (&json!(1), &json!("aborted"))
        );
        assert_eq!(
            body(&rolled, Format::Slack)["text"],
            "taxi-fare: rollout #1 of v2 into green was rolled back (level 1): aborted"
        );
        assert_eq!(body(&rolled, Format::Json)["event"], "rolled_back");
    }
}
