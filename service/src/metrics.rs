//! Prometheus metrics: what `/metrics` exposes and how requests are
//! counted. It knows nothing of the shared state (which owns a `Metrics`):
//! the middleware that feeds it every request lives with the router, in
//! `app`.
//!
//! Labels are bounded: `route` is the matched route template (never the raw
//! path), anything unrouted is `unmatched`, and unusual methods are `OTHER`.

use std::sync::OnceLock;

use axum::extract::MatchedPath;
use axum::http::Method;
use model::{FEATURE_SET, ModelArtifact, SCHEMA_VERSION};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::admission;
use crate::error::ErrorKind;
use crate::limits::SMALL_BATCH_ROWS;

/// The `Content-Type` of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// The route label of requests no route matched.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// Route templates the router defines (the docs' included); any other
/// matched template is labelled `other`, so the label set stays fixed and
/// recording a request allocates nothing.
const ROUTES: [&str; 10] = [
    "/",
    "/ready",
    "/api/predict/",
    "/api/predict",
    "/model",
    "/metrics",
    "/openapi.json",
    "/docs",
    "/docs/",
    "/docs/{*rest}",
];

/// The (route, method) whose 200s keep their series at hand.
const HOT: [(&str, &str); 3] = [("/api/predict/", "POST"), ("/api/predict", "POST"), ("/", "GET")];

/// The bounded `route` label of a request: its matched route template.
pub fn route_label(matched: Option<&MatchedPath>) -> &'static str {
    match matched {
        None => UNMATCHED_ROUTE,
        Some(path) => ROUTES.into_iter().find(|r| *r == path.as_str()).unwrap_or("other"),
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    route: &'static str,
    method: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    route: &'static str,
    status: u16,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BatchLabels {
    /// `small` (at most [`SMALL_BATCH_ROWS`] rows) or `large`.
    batch: &'static str,
}

impl BatchLabels {
    const SMALL: BatchLabels = BatchLabels { batch: "small" };
    const LARGE: BatchLabels = BatchLabels { batch: "large" };

    fn of(rows: usize) -> BatchLabels {
        if rows <= SMALL_BATCH_ROWS { BatchLabels::SMALL } else { BatchLabels::LARGE }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageLabels {
    stage: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelLabels {
    model_version: String,
    feature_set: String,
    schema_version: String,
    trainer_version: String,
}

type HistogramConstructor = fn() -> Histogram;

/// Latency buckets of every histogram: 50 µs … ~3.3 s, doubling.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_05, 2.0, 17))
}

/// Every metric this service exports, registered once.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<HttpLabels, Counter>,
    duration: Family<HttpLabels, Histogram, HistogramConstructor>,
    errors: Family<ErrorLabels, Counter>,
    /// `prediction_duration_seconds`' two series, looked up once.
    small_batches: Histogram,
    large_batches: Histogram,
    /// The series of the answers most requests get ([`HOT`]), looked up on
    /// first use: a `Family` lookup hashes its labels with SipHash under a
    /// lock, twice a request.
    hot: [OnceLock<(Counter, Histogram)>; HOT.len()],
    admission: admission::Gauges,
    predicted_rows: Counter,
    out_of_area_rows: Counter,
    predictions_in_flight: Gauge,
    predictions_cancelled: Counter,
    connections_open: Gauge,
    connection_timeouts: Family<StageLabels, Counter>,
    connections_evicted: Counter,
}

/// Keeps a gauge (predictions in flight, open connections) one higher
/// while it lives.
#[must_use]
pub struct Counted(Gauge);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Metrics {
    /// Registers the metrics and records which model (if any) is served.
    pub fn new(model: Option<&ModelArtifact>) -> Metrics {
        let mut registry = Registry::default();
        let requests = Family::<HttpLabels, Counter>::default();
        registry.register("http_requests", "HTTP requests answered", requests.clone());
        let duration = Family::<HttpLabels, Histogram, HistogramConstructor>::new_with_constructor(
            latency_histogram,
        );
        registry.register(
            "http_request_duration_seconds",
            "Time from request received to response head ready",
            duration.clone(),
        );
        let errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "http_request_errors",
            "Error answers by route, status and kind (no_model, overloaded, timeout, \
             body_timeout, validation, ...; bad_request, uri_too_long and \
             headers_too_large are answered below the router)",
            errors.clone(),
        );
        let prediction_duration =
            Family::<BatchLabels, Histogram, HistogramConstructor>::new_with_constructor(
                latency_histogram,
            );
        registry.register(
            "prediction_duration_seconds",
            format!(
                "Time from a predict request received to its 200 answer ready, by batch size \
                 (batch=small: at most {SMALL_BATCH_ROWS} rows; large: more)"
            ),
            prediction_duration.clone(),
        );
        // Both series from the start, so a reader sees zeros, not nothing.
        let small_batches = prediction_duration.get_or_create(&BatchLabels::SMALL).clone();
        let large_batches = prediction_duration.get_or_create(&BatchLabels::LARGE).clone();
        let predictions_in_flight = Gauge::default();
        registry.register(
            "predictions_in_flight",
            "Predict requests admitted and not yet answered (each holding its cost of \
             --prediction-budget-bytes)",
            predictions_in_flight.clone(),
        );
        let admission = admission::Gauges::default();
        registry.register(
            "prediction_budget_bytes",
            "Memory the predict requests in flight may cost together (--prediction-budget-bytes)",
            admission.budget_bytes.clone(),
        );
        registry.register(
            "prediction_budget_used_bytes",
            "Bytes of the prediction budget held by the requests in flight, each charged \
             from its declared length before its body is read",
            admission.used_bytes.clone(),
        );
        registry.register(
            "predictions_waiting",
            "Large predict requests waiting in line for budget (--max-waiting-predictions)",
            admission.waiting.clone(),
        );
        let predictions_cancelled = Counter::default();
        registry.register(
            "predictions_cancelled",
            "Pricing stopped early because its request timed out or its client left",
            predictions_cancelled.clone(),
        );
        let connections_open = Gauge::default();
        registry.register("connections_open", "Open client connections", connections_open.clone());
        let connection_timeouts = Family::<StageLabels, Counter>::default();
        registry.register(
            "connection_timeouts",
            "Connections closed by a timer, by stage (header: a request head too slow; \
             idle: no new request on a kept-alive connection; response: an answer not \
             taken by the client in time)",
            connection_timeouts.clone(),
        );
        let connections_evicted = Counter::default();
        registry.register(
            "connections_evicted",
            "Connections that never delivered a request, closed at the connection limit \
             to make room for a new one",
            connections_evicted.clone(),
        );
        let predicted_rows = Counter::default();
        registry.register(
            "predicted_rows",
            "Rows a fare was predicted for",
            predicted_rows.clone(),
        );
        let out_of_area_rows = Counter::default();
        registry.register(
            "out_of_area_rows",
            "Predicted rows with an end outside the area the model was trained on",
            out_of_area_rows.clone(),
        );
        let model_loaded = Gauge::<i64>::default();
        registry.register(
            "model_loaded",
            "1 when a valid model is loaded, else 0",
            model_loaded.clone(),
        );
        let model_info = Family::<ModelLabels, Gauge>::default();
        registry.register("model_info", "The served model (value is always 1)", model_info.clone());
        if let Some(artifact) = model {
            model_loaded.set(1);
            model_info
                .get_or_create(&ModelLabels {
                    model_version: artifact.model_version.clone(),
                    feature_set: FEATURE_SET.to_owned(),
                    schema_version: SCHEMA_VERSION.to_string(),
                    trainer_version: artifact.lineage.trainer_version.clone(),
                })
                .set(1);
        }
        Metrics {
            registry,
            requests,
            duration,
            errors,
            small_batches,
            large_batches,
            hot: Default::default(),
            admission,
            predicted_rows,
            out_of_area_rows,
            predictions_in_flight,
            predictions_cancelled,
            connections_open,
            connection_timeouts,
            connections_evicted,
        }
    }

    pub fn record_connection_evicted(&self) {
        self.connections_evicted.inc();
    }

    /// Counts a predict request in flight until the guard drops.
    pub fn prediction_started(&self) -> Counted {
        self.predictions_in_flight.inc();
        Counted(self.predictions_in_flight.clone())
    }

    /// The gauges the admission of predict requests keeps current.
    pub fn admission_gauges(&self) -> admission::Gauges {
        self.admission.clone()
    }

    /// One predict request answered 200: its rows and the seconds from
    /// its arrival to its answer ready.
    pub fn record_prediction(&self, rows: usize, seconds: f64) {
        let series = if BatchLabels::of(rows) == BatchLabels::SMALL {
            &self.small_batches
        } else {
            &self.large_batches
        };
        series.observe(seconds);
    }

    pub fn record_cancelled(&self) {
        self.predictions_cancelled.inc();
    }

    /// An error answered below the router (hyper's head parser).
    pub fn record_protocol_error(&self, status: u16, kind: &'static str) {
        self.errors.get_or_create(&ErrorLabels { route: UNMATCHED_ROUTE, status, kind }).inc();
    }

    pub fn record_connection_timeout(&self, stage: &'static str) {
        self.connection_timeouts.get_or_create(&StageLabels { stage }).inc();
    }

    /// Counts an open connection until the guard drops.
    pub fn connection_opened(&self) -> Counted {
        self.connections_open.inc();
        Counted(self.connections_open.clone())
    }

    pub fn record_predictions(&self, rows: usize, out_of_area: usize) {
        self.predicted_rows.inc_by(rows as u64);
        self.out_of_area_rows.inc_by(out_of_area as u64);
    }

    /// Counts one answered request and its latency (and its error kind).
    pub fn record_request(
        &self,
        route: &'static str,
        method: &Method,
        status: u16,
        error: Option<ErrorKind>,
        seconds: f64,
    ) {
        let method = method_label(method);
        let hot = (status == 200 && error.is_none())
            .then(|| HOT.iter().position(|&(r, m)| r == route && m == method))
            .flatten();
        if let Some(i) = hot {
            let (requests, duration) = self.hot[i].get_or_init(|| {
                let labels = HttpLabels { route, method, status };
                let requests = self.requests.get_or_create(&labels).clone();
                (requests, self.duration.get_or_create(&labels).clone())
            });
            duration.observe(seconds);
            requests.inc();
            return;
        }
        let labels = HttpLabels { route, method, status };
        self.duration.get_or_create(&labels).observe(seconds);
        self.requests.get_or_create(&labels).inc();
        if let Some(ErrorKind(kind)) = error {
            self.errors.get_or_create(&ErrorLabels { route, status, kind }).inc();
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry);
        out
    }
}

fn method_label(method: &Method) -> &'static str {
    const KNOWN: [&str; 7] = ["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH"];
    KNOWN.into_iter().find(|name| method.as_str() == *name).unwrap_or("OTHER")
}
