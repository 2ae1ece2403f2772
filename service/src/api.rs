//! The HTTP API: handlers that read like the contract in DESIGN.md, and the
//! request/response types they document in OpenAPI.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Uri, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::admission::{self, Cost, Reservation};
use crate::error::{ApiError, MessageBody, ValidationErrorBody};
use crate::limits::SMALL_BODY_BYTES;
use crate::metrics;
use crate::state::{AppState, LoadedModel};
use crate::validate;

/// `GET /`: liveness and identity.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health<'a> {
    /// Always `ok` while the process runs.
    #[schema(example = "ok")]
    pub status: &'static str,
    pub model_loaded: bool,
    /// The loaded model's `model_version`, or null.
    pub model_version: Option<&'a str>,
    /// Deployment color (blue/green), or null when not deployed by the controller.
    pub color: Option<&'a str>,
    /// Release (image tag), or null.
    pub version: Option<&'a str>,
    /// Why no model is loaded; present only when `model_loaded` is false.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_error: Option<&'a str>,
}

/// `GET /ready` when a model is loaded.
#[derive(Debug, Serialize, ToSchema)]
pub struct Ready {
    #[schema(example = "ready")]
    pub status: &'static str,
    pub model_version: String,
}

/// One trip to price. Extra keys are ignored.
#[derive(Debug, ToSchema)]
#[allow(dead_code, reason = "documents the accepted body; parsing is in validate.rs")]
pub struct TripIn {
    #[schema(minimum = -90.0, maximum = 90.0, example = 40.7614)]
    pub pickup_latitude: f64,
    #[schema(minimum = -180.0, maximum = 180.0, example = -73.9776)]
    pub pickup_longitude: f64,
    #[schema(minimum = -90.0, maximum = 90.0, example = 40.6413)]
    pub dropoff_latitude: f64,
    #[schema(minimum = -180.0, maximum = 180.0, example = -73.7781)]
    pub dropoff_longitude: f64,
    /// A whole number; `2.0` is accepted as 2.
    #[schema(minimum = 0, maximum = 9, example = 1)]
    pub passenger_count: u8,
}

/// `POST /api/predict/` body: a batch of trips.
#[derive(Debug, ToSchema)]
#[schema(example = json!({"data": [{
    "pickup_latitude": 70.15, "pickup_longitude": -40.22,
    "dropoff_latitude": 70.83, "dropoff_longitude": -1.0, "passenger_count": 2
}]}))]
#[allow(dead_code, reason = "documents the accepted body; parsing is in validate.rs")]
pub struct PredictRequest {
    /// At least one trip and at most the configured batch limit
    /// (`--max-batch-rows`, 10,000 by default; `maxItems` below is this
    /// instance's).
    #[schema(min_items = 1, max_items = 10000)]
    pub data: Vec<TripIn>,
}

/// Predicted fares, one per trip, in request order.
#[derive(Debug, Serialize, ToSchema)]
pub struct PredictResponse {
    /// Fares in USD.
    pub predictions: Vec<f64>,
    /// The model that made them.
    pub model_version: String,
    /// Indices of trips with an end outside the area the model was trained
    /// on (New York City): predicted anyway, but an extrapolation.
    pub out_of_area: Vec<usize>,
}

/// `GET /model`: the served artifact (the `model` crate's `ModelArtifact`),
/// exactly as loaded; keys this build does not read may also be present.
#[derive(Debug, ToSchema)]
#[schema(as = ModelArtifact)]
#[allow(dead_code, reason = "documents model::ModelArtifact, which is served as loaded")]
pub struct ArtifactDoc {
    #[schema(example = 1)]
    pub schema_version: u32,
    pub model_version: String,
    pub feature_set: String,
    /// How each feature is computed, in coefficient order.
    pub features: Vec<FeatureSpecDoc>,
    pub coefficients: Vec<f64>,
    pub intercept: f64,
    /// Where each feature lay over the training rows; `predict` clamps
    /// features into these ranges.
    pub feature_ranges: Vec<FeatureRangeDoc>,
    pub lineage: LineageDoc,
    /// Held-out trips with the fares this model predicts for them.
    #[schema(required = false)]
    pub golden: Vec<GoldenTripDoc>,
}

#[derive(Debug, ToSchema)]
#[schema(as = FeatureSpec)]
#[allow(dead_code, reason = "documentation only")]
pub struct FeatureSpecDoc {
    pub name: String,
    pub description: String,
}

#[derive(Debug, ToSchema)]
#[schema(as = FeatureRange)]
#[allow(dead_code, reason = "documentation only")]
pub struct FeatureRangeDoc {
    pub min: f64,
    pub max: f64,
}

/// Where a model came from and how good it was on held-out data.
#[derive(Debug, ToSchema)]
#[schema(as = Lineage)]
#[allow(dead_code, reason = "documentation only")]
pub struct LineageDoc {
    pub data_file: String,
    pub data_sha256: String,
    pub rows_read: u64,
    pub rows_used: u64,
    pub rows_train: u64,
    pub rows_test: u64,
    /// Rows dropped during cleaning, by reason.
    pub rows_dropped: std::collections::BTreeMap<String, u64>,
    pub split_seed: u64,
    pub test_fraction: f64,
    /// Held-out metrics of this model.
    pub metrics: ScoresDoc,
    /// Held-out metrics of predicting the training mean fare.
    pub baseline: ScoresDoc,
    pub trainer_version: String,
    pub git_commit: Option<String>,
    /// RFC 3339 UTC timestamp.
    pub created_at: String,
}

#[derive(Debug, ToSchema)]
#[schema(as = Scores)]
#[allow(dead_code, reason = "documentation only")]
pub struct ScoresDoc {
    pub rmse: f64,
    pub mae: f64,
    pub r2: f64,
}

#[derive(Debug, ToSchema)]
#[schema(as = GoldenTrip)]
#[allow(dead_code, reason = "documentation only")]
pub struct GoldenTripDoc {
    pub trip: TripIn,
    pub fare: f64,
}

/// Liveness: 200 whenever the process runs, model or not.
#[utoipa::path(get, path = "/", tag = "health",
    responses((status = 200, description = "The process is alive", body = Health)))]
pub async fn health(State(state): State<Arc<AppState>>) -> Response {
    let artifact = state.model.artifact();
    Json(Health {
        status: "ok",
        model_loaded: artifact.is_some(),
        model_version: artifact.map(|a| a.model_version.as_str()),
        color: state.deployment.color.map(bluegreen::Color::as_str),
        version: state.deployment.version.as_deref(),
        model_error: state.model.error(),
    })
    .into_response()
}

/// Readiness: 200 only when a valid model is loaded.
#[utoipa::path(get, path = "/ready", tag = "health", responses(
    (status = 200, description = "A model is loaded; predictions will be served", body = Ready),
    (status = 503, description = "No model is loaded, and why", body = MessageBody),
))]
pub async fn ready(State(state): State<Arc<AppState>>) -> Result<Json<Ready>, ApiError> {
    let artifact = model_or_503(&state)?;
    Ok(Json(Ready { status: "ready", model_version: artifact.model_version.clone() }))
}

/// The model artifact this instance serves, byte for byte as loaded: a
/// deployment reads a color's model here rather than from its container.
#[utoipa::path(get, path = "/model", tag = "model", operation_id = "model", responses(
    (status = 200, description = "The loaded artifact, exactly as loaded", body = ArtifactDoc,
        content_type = "application/json"),
    (status = 503, description = "No model is loaded, and why", body = MessageBody),
))]
pub async fn model_artifact(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let loaded = loaded_or_503(&state)?;
    Ok(([(header::CONTENT_TYPE, "application/json")], loaded.json().clone()).into_response())
}

/// Every answer of the predict routes, documented once for both paths.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code, reason = "documentation only: handlers answer through ApiError")]
pub enum PredictResponses {
    /// One fare per trip, in order
    #[response(status = 200)]
    Ok(PredictResponse),
    /// The body could not be read
    #[response(status = 400)]
    BadBody(MessageBody),
    /// The body did not arrive within the body timeout
    #[response(status = 408)]
    BodyTimeout(MessageBody),
    /// The body is over the size limit
    #[response(status = 413)]
    TooLarge(MessageBody),
    /// The content type is not JSON
    #[response(status = 415)]
    ContentType(MessageBody),
    /// Invalid JSON or invalid trips: every error with its path (at most
    /// 100, then one `too_many_errors` detail counting the rest)
    #[response(status = 422)]
    Invalid(ValidationErrorBody),
    /// No model is loaded, no room for the request in the prediction budget
    /// (`overloaded`, with `Retry-After: 1`), or pricing timed out
    #[response(status = 503)]
    Unavailable(MessageBody),
}

/// Predicts the fare of every trip in the batch, in order.
///
/// Cheap refusals come first, before a byte of the body is read: content
/// type (415), declared length (413, also under `Expect: 100-continue`,
/// which is then never answered with 100), no model (503), no room in the
/// budget for what the request will cost (503, shed, a large request after
/// waiting in line for room; see `admission`). The body is then read
/// within the body timeout (408) and priced within the request timeout
/// (503).
#[utoipa::path(post, path = "/api/predict/", tag = "predict", operation_id = "predict",
    request_body(content = PredictRequest, content_type = "application/json"),
    responses(PredictResponses))]
pub async fn predict(
    State(state): State<Arc<AppState>>,
    request: Request,
) -> Result<Response, ApiError> {
    let received = Instant::now();
    // The request whole rather than a `HeaderMap` extractor, which clones
    // the headers.
    let (parts, body) = request.into_parts();
    check_content_type(&parts.headers)?;
    let limits = state.limits;
    let declared = declared_length(&parts.headers);
    // Asked by the router only while a shadow runs (issue 19).
    let record = crate::answers::wanted(&parts.headers);
    drop(parts);
    if declared.is_some_and(|n| n > limits.max_body_bytes as u64) {
        return Err(ApiError::PayloadTooLarge { limit: limits.max_body_bytes });
    }
    model_or_503(&state)?;
    let cost = Cost::of(declared, &limits);
    let reservation = state.admission.admit(cost).await.map_err(|shed| {
        tracing::debug!(reason = %shed, cost = cost.bytes, "prediction shed");
        ApiError::Overloaded
    })?;
    let mut slot = Slot { reservation, _in_flight: state.metrics.prediction_started() };
    let read = read_body(body, limits.max_body_bytes, declared);
    let body = tokio::time::timeout(limits.body_timeout, read)
        .await
        .map_err(|_| ApiError::BodyTimeout(limits.body_timeout.as_secs_f64()))??;
    if declared.is_none() {
        // Charged at the size limit while its length was unknown.
        slot.reservation.shrink_to(admission::body_cost(body.held, limits.max_batch_rows));
    }
    let body = body.bytes;
    let timeout = limits.request_timeout;
    let (priced, slot) = match tokio::time::timeout(timeout, priced(&state, body, slot)).await {
        Ok(done) => done?,
        Err(_) => {
            tracing::warn!(timeout_s = timeout.as_secs_f64(), "prediction timed out");
            return Err(ApiError::Timeout(timeout.as_secs_f64()));
        }
    };
    // A 422's details count against the budget as much as fares do.
    let response = match priced {
        Ok(Priced { json, rows }) => {
            state.metrics.record_prediction(rows, received.elapsed().as_secs_f64());
            if let Some(id) = record {
                crate::answers::record(id, &json);
            }
            ([(header::CONTENT_TYPE, "application/json")], json).into_response()
        }
        Err(e) => e.into_response(),
    };
    Ok(held(response, slot))
}

/// Prices a body: a small one on this async worker, a big one on a
/// blocking thread once one of the cores' permits is free. The task holds
/// the slot and the permit, so work still running after its request is gone
/// (timed out) keeps counting against the budget and the cores, and
/// abandoned work cannot pile up; it also stops early, since the request's
/// drop sets its cancel flag.
async fn priced(
    state: &Arc<AppState>,
    body: Bytes,
    slot: Slot,
) -> Result<(Result<Priced, ApiError>, Slot), ApiError> {
    let cancel = CancelOnDrop::default();
    if body.len() <= SMALL_BODY_BYTES {
        return Ok((price(state, &body, &cancel.0), slot));
    }
    let Ok(core) = state.pricing.clone().acquire_owned().await else {
        tracing::error!("the pricing semaphore is closed");
        return Err(ApiError::Internal);
    };
    let (state, cancelled) = (state.clone(), cancel.0.clone());
    let task = tokio::task::spawn_blocking(move || {
        let _core = core;
        (price(&state, &body, &cancelled), slot)
    });
    task.await.map_err(|e| {
        tracing::error!(error = %e, "prediction task failed");
        ApiError::Internal
    })
}

/// A predict request's share of the budget, held from before its body is
/// read until hyper has taken the last byte of its answer: the body, the
/// trips and the answer all count against the budget.
struct Slot {
    reservation: Reservation,
    _in_flight: metrics::Counted,
}

/// A priced batch: the answer's JSON and how many rows it holds.
struct Priced {
    json: Bytes,
    rows: usize,
}

/// The response, holding its request's slot until its body is dropped.
fn held(response: Response, slot: Slot) -> Response {
    response.map(|body| Body::new(Held { body, _slot: slot }))
}

struct Held {
    body: Body,
    _slot: Slot,
}

impl http_body::Body for Held {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        std::pin::Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// A flag set when the request it belongs to is dropped (answered, timed
/// out, or its connection closed), telling its pricing to stop.
#[derive(Default)]
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// The declared `Content-Length`, if any (hyper has checked its syntax).
fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(header::CONTENT_LENGTH)?.to_str().ok()?.trim().parse().ok()
}

/// A body as read: its bytes, and the memory they hold (for the charge of
/// a chunked body, which is fixed only once it is read).
struct ReadBody {
    bytes: Bytes,
    held: usize,
}

/// Reads the whole body, refusing it as soon as it grows past `limit`
/// (chunked bodies). A body that arrives in one frame (a keep-alive
/// connection's read buffer grows to hold a 100-row batch with its head)
/// is kept as hyper handed it, a piece of the connection's read buffer,
/// with no copy; one of several frames is copied into one buffer sized by
/// the declared length.
async fn read_body(body: Body, limit: usize, declared: Option<u64>) -> Result<ReadBody, ApiError> {
    use http_body_util::BodyExt;
    /// The frames so far: none, one kept as it came, or several copied.
    enum Read {
        Empty,
        One(Bytes),
        Many(Vec<u8>),
    }
    /// Room for `needed` bytes, doubling but never past the limit: a
    /// chunked body costs at most `limit` bytes too.
    fn grow(out: &mut Vec<u8>, needed: usize, limit: usize) {
        if needed > out.capacity() {
            let target = (out.capacity() * 2).max(needed).min(limit);
            out.reserve_exact(target - out.len());
        }
    }
    let mut read = Read::Empty;
    let mut body = body;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ApiError::BadBody(e.to_string()))?;
        let Ok(data) = frame.into_data() else { continue };
        let so_far = match &read {
            Read::Empty => 0,
            Read::One(bytes) => bytes.len(),
            Read::Many(out) => out.len(),
        };
        let needed = so_far + data.len();
        if needed > limit {
            return Err(ApiError::PayloadTooLarge { limit });
        }
        read = match read {
            Read::Empty => Read::One(data),
            Read::One(earlier) => {
                let declared =
                    declared.map_or(0, |n| usize::try_from(n).unwrap_or(limit).min(limit));
                let mut out = Vec::with_capacity(declared);
                grow(&mut out, needed, limit);
                out.extend_from_slice(&earlier);
                out.extend_from_slice(&data);
                Read::Many(out)
            }
            Read::Many(mut out) => {
                grow(&mut out, needed, limit);
                out.extend_from_slice(&data);
                Read::Many(out)
            }
        };
    }
    Ok(match read {
        Read::Empty => ReadBody { bytes: Bytes::new(), held: 0 },
        Read::One(bytes) => ReadBody { held: bytes.len(), bytes },
        Read::Many(out) => ReadBody { held: out.capacity(), bytes: Bytes::from(out) },
    })
}

/// Validates a batch, predicts it with the loaded model and serialises the
/// answer. The error of a cancelled parse is never seen: its request is
/// already gone.
fn price(state: &AppState, body: &[u8], cancelled: &AtomicBool) -> Result<Priced, ApiError> {
    let loaded = loaded_or_503(state)?;
    let artifact = loaded.artifact();
    if cancelled.load(Ordering::Relaxed) {
        state.metrics.record_cancelled();
        return Err(ApiError::Timeout(state.limits.request_timeout.as_secs_f64()));
    }
    let trips = match validate::parse_batch_until(body, state.limits.max_batch_rows, cancelled) {
        Ok(parsed) => parsed.map_err(ApiError::Validation)?,
        Err(validate::Cancelled) => {
            state.metrics.record_cancelled();
            return Err(ApiError::Timeout(state.limits.request_timeout.as_secs_f64()));
        }
    };
    let predictions = loaded.linear().predict_batch(&trips);
    let out_of_area: Vec<usize> = trips
        .iter()
        .enumerate()
        .filter(|(_, trip)| !trip.in_service_area())
        .map(|(i, _)| i)
        .collect();
    state.metrics.record_predictions(trips.len(), out_of_area.len());
    let answer = Answer {
        predictions: &predictions,
        model_version: &artifact.model_version,
        out_of_area: &out_of_area,
    };
    match answer.to_json() {
        Ok(json) => Ok(Priced { json: Bytes::from(json), rows: trips.len() }),
        Err(e) => {
            tracing::error!(error = %e, "cannot serialise an answer");
            Err(ApiError::Internal)
        }
    }
}

/// [`PredictResponse`] as written: the same keys in the same order, on
/// borrowed values, so an answer copies no vector and no version string.
#[derive(Serialize)]
pub struct Answer<'a> {
    pub predictions: &'a [f64],
    pub model_version: &'a str,
    pub out_of_area: &'a [usize],
}

impl Answer<'_> {
    /// The most bytes one fare takes in JSON (`-1.2345678901234567e-300`
    /// and a comma), and one out-of-area index.
    const FARE_BYTES: usize = 26;
    const INDEX_BYTES: usize = 21;

    /// The answer's JSON, written into one buffer sized up front for the
    /// longest fares and indices, so that it does not grow (a version
    /// with many escaped characters may still make it grow once).
    ///
    /// Written by hand rather than through serde's serializer, whose state
    /// and writer calls were half of a 1-row answer's encoding: the numbers with
    /// the formatters serde_json uses (`zmij` for a finite `f64`, `null`
    /// for any other; `itoa` for an index) and the version through
    /// serde_json itself, so the bytes are `serde_json::to_vec`'s (tested).
    pub fn to_json(&self) -> serde_json::Result<Vec<u8>> {
        let size = 64
            + self.model_version.len()
            + self.predictions.len() * Self::FARE_BYTES
            + self.out_of_area.len() * Self::INDEX_BYTES;
        const HEAD: &[u8] = b"{\"predictions\":[";
        let mut json = Vec::with_capacity(size);
        json.extend_from_slice(HEAD);
        let mut fare = zmij::Buffer::new();
        for (i, &p) in self.predictions.iter().enumerate() {
            let text = if p.is_finite() { fare.format_finite(p).as_bytes() } else { b"null" };
            push_short(&mut json, i > 0, text);
        }
        json.extend_from_slice(b"],\"model_version\":");
        serde_json::to_writer(&mut json, self.model_version)?;
        json.extend_from_slice(b",\"out_of_area\":[");
        let mut index = itoa::Buffer::new();
        for (i, &n) in self.out_of_area.iter().enumerate() {
            if i > 0 {
                json.push(b',');
            }
            json.extend_from_slice(index.format(n).as_bytes());
        }
        json.extend_from_slice(b"]}");
        Ok(json)
    }
}

/// Appends `,` (if `comma`) and `text` (a formatted `f64`, at most 24
/// bytes, or `null`) to `json` by fixed-size copies into its spare
/// capacity, two that overlap, rather than `extend_from_slice`'s `memcpy`
/// call per fare.
#[inline(always)]
fn push_short(json: &mut Vec<u8>, comma: bool, text: &[u8]) {
    use std::mem::MaybeUninit;
    /// `N` bytes from `src` to `dst`.
    #[inline(always)]
    fn put<const N: usize>(dst: &mut [MaybeUninit<u8>], src: Option<&[u8; N]>) -> Option<()> {
        *dst.first_chunk_mut::<N>()? = src?.map(MaybeUninit::new);
        Some(())
    }
    /// The comma (`at` = 1, or none) and `text` at the start of `slot`:
    /// how many bytes were written, `None` if `slot` is too short or
    /// `text` of another length.
    #[inline(always)]
    fn copy(slot: &mut [MaybeUninit<u8>], at: usize, text: &[u8]) -> Option<usize> {
        *slot.first_mut()? = MaybeUninit::new(b',');
        let dst = slot.get_mut(at..)?;
        let n = text.len();
        match n {
            16..=24 => {
                put(dst, text.first_chunk::<16>())?;
                put(dst.get_mut(n - 16..)?, text.last_chunk::<16>())?;
            }
            8..=15 => {
                put(dst, text.first_chunk::<8>())?;
                put(dst.get_mut(n - 8..)?, text.last_chunk::<8>())?;
            }
            4..=7 => {
                put(dst, text.first_chunk::<4>())?;
                put(dst.get_mut(n - 4..)?, text.last_chunk::<4>())?;
            }
            _ => return None,
        }
        Some(at + n)
    }
    let len = json.len();
    let written = copy(json.spare_capacity_mut(), usize::from(comma), text);
    match written {
        // SAFETY: `copy` wrote the bytes `len..len + written` of the
        // buffer, within its capacity: the comma (or none) and every byte
        // of `text` (n of them), byte `k` in the first copy when `k` is
        // below its size, else in the second, which ends at `n`.
        Some(written) => unsafe { json.set_len(len + written) },
        // Short of room (never, as sized) or another length: the plain way.
        None => {
            if comma {
                json.push(b',');
            }
            json.extend_from_slice(text);
        }
    }
}

/// The same as `POST /api/predict/`, without the trailing slash.
#[utoipa::path(post, path = "/api/predict", tag = "predict", operation_id = "predict_no_slash",
    request_body(content = PredictRequest, content_type = "application/json"),
    responses(PredictResponses))]
pub async fn predict_no_slash(
    state: State<Arc<AppState>>,
    request: Request,
) -> Result<Response, ApiError> {
    predict(state, request).await
}

/// Prometheus metrics in the text exposition format.
#[utoipa::path(get, path = "/metrics", tag = "operations", responses(
    (status = 200, description = "Prometheus text format 0.0.4", body = String,
        content_type = "text/plain"),
))]
pub async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], state.metrics.render()).into_response()
}

/// Any path no route matches.
pub async fn not_found(uri: Uri) -> ApiError {
    ApiError::NotFound(uri.path().to_owned())
}

/// A known path with a method it does not support.
pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

fn model_or_503(state: &AppState) -> Result<&model::ModelArtifact, ApiError> {
    loaded_or_503(state).map(LoadedModel::artifact)
}

fn loaded_or_503(state: &AppState) -> Result<&LoadedModel, ApiError> {
    state.model.loaded().ok_or_else(|| {
        ApiError::ModelUnavailable(state.model.error().unwrap_or("unknown reason").to_owned())
    })
}

/// Admits JSON, `application/*+json`, or no content type at all (as
/// FastAPI does); anything else is 415, before the body is read.
fn check_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let text = value.to_str().unwrap_or("");
    // Compared without case, and without lowering a copy.
    let essence = text.split(';').next().unwrap_or("").trim().as_bytes();
    let starts =
        |prefix: &[u8]| essence.get(..prefix.len()).is_some_and(|p| p.eq_ignore_ascii_case(prefix));
    let ends = |suffix: &[u8]| {
        essence.len() >= suffix.len()
            && essence[essence.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
    };
    let json = essence.eq_ignore_ascii_case(b"application/json")
        || (starts(b"application/") && ends(b"+json"));
    if json { Ok(()) } else { Err(ApiError::UnsupportedMediaType(text.to_owned())) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hand-written answer is `serde_json::to_vec` of the documented
    /// response, byte for byte, over fares of every magnitude and kind.
    #[test]
    fn the_answer_is_serde_jsons_to_the_byte() {
        let mut x = 0x853c_49e6_748f_ea9bu64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let special = [
            0.0,
            -0.0,
            1.0,
            0.1,
            73.0,
            1e6,
            1e-7,
            5e-324,
            f64::MIN_POSITIVE,
            f64::MAX,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
        ];
        let versions = ["v1", "", "smoke \"stub\"\\ \u{7}\n", "ünïcödé-🚕", "a\u{1f}b"];
        for round in 0..300 {
            let n = (next() % 120) as usize;
            let predictions: Vec<f64> = (0..n)
                .map(|_| match next() % 4 {
                    0 => special[(next() % special.len() as u64) as usize],
                    1 => f64::from_bits(next()),
                    2 => (next() % 100_000) as f64 / 1000.0,
                    _ => (next() >> 11) as f64 / (1u64 << 53) as f64 * 200.0,
                })
                .collect();
            let out_of_area: Vec<usize> = (0..n)
                .filter(|_| next() % 5 == 0)
                .chain([usize::MAX].into_iter().take(round % 7 / 6))
                .collect();
            let version = versions[round % versions.len()];
            let ours = Answer {
                predictions: &predictions,
                model_version: version,
                out_of_area: &out_of_area,
            }
            .to_json()
            .unwrap();
            let serde = serde_json::to_vec(&PredictResponse {
                predictions,
                model_version: version.to_owned(),
                out_of_area,
            })
            .unwrap();
            assert_eq!(String::from_utf8_lossy(&ours), String::from_utf8_lossy(&serde));
        }
    }
}
