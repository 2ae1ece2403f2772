//! The HTTP API: handlers that read like the contract in DESIGN.md, and the
//! request/response types they document in OpenAPI.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::{ApiError, MessageBody, ValidationErrorBody};
use crate::metrics;
use crate::state::AppState;
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

/// Liveness: 200 whenever the process runs, model or not.
#[utoipa::path(get, path = "/", tag = "health",
    responses((status = 200, description = "The process is alive", body = Health)))]
pub async fn health(State(state): State<Arc<AppState>>) -> Response {
    let artifact = state.model.artifact();
    Json(Health {
        status: "ok",
        model_loaded: artifact.is_some(),
        model_version: artifact.map(|a| a.model_version.as_str()),
        color: state.deployment.color.as_deref(),
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
    /// The body is over the size limit
    #[response(status = 413)]
    TooLarge(MessageBody),
    /// The content type is not JSON
    #[response(status = 415)]
    ContentType(MessageBody),
    /// Invalid JSON or invalid trips: every error, with its path
    #[response(status = 422)]
    Invalid(ValidationErrorBody),
    /// No model is loaded, or the request timed out
    #[response(status = 503)]
    Unavailable(MessageBody),
}

/// Predicts the fare of every trip in the batch, in order.
#[utoipa::path(post, path = "/api/predict/", tag = "predict", operation_id = "predict",
    request_body(content = PredictRequest, content_type = "application/json"),
    responses(PredictResponses))]
pub async fn predict(
    State(state): State<Arc<AppState>>,
    _: JsonContentType,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<PredictResponse>, ApiError> {
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge { limit: state.limits.max_body_bytes }
        } else {
            ApiError::BadBody(rejection.body_text())
        }
    })?;
    model_or_503(&state)?;
    if body.len() <= INLINE_BODY_BYTES {
        return price(&state, &body).map(Json);
    }
    // A big batch is milliseconds of CPU: run it off the async workers so
    // it cannot stall liveness probes and small requests.
    let task = tokio::task::spawn_blocking(move || price(&state, &body));
    match task.await {
        Ok(result) => result.map(Json),
        Err(e) => {
            tracing::error!(error = %e, "prediction task failed");
            Err(ApiError::Internal)
        }
    }
}

/// Bodies up to this size (about 100 rows) are priced on the async worker.
const INLINE_BODY_BYTES: usize = 16 * 1024;

/// Validates a batch and predicts it with the loaded model.
fn price(state: &AppState, body: &[u8]) -> Result<PredictResponse, ApiError> {
    let artifact = model_or_503(state)?;
    let trips =
        validate::parse_batch(body, state.limits.max_batch_rows).map_err(ApiError::Validation)?;
    let predictions = artifact.predict_batch(&trips);
    let out_of_area: Vec<usize> = trips
        .iter()
        .enumerate()
        .filter(|(_, trip)| !trip.in_service_area())
        .map(|(i, _)| i)
        .collect();
    state.metrics.record_predictions(trips.len(), out_of_area.len());
    Ok(PredictResponse { predictions, model_version: artifact.model_version.clone(), out_of_area })
}

/// The same as `POST /api/predict/`, without the trailing slash.
#[utoipa::path(post, path = "/api/predict", tag = "predict", operation_id = "predict_no_slash",
    request_body(content = PredictRequest, content_type = "application/json"),
    responses(PredictResponses))]
pub async fn predict_no_slash(
    state: State<Arc<AppState>>,
    json: JsonContentType,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<PredictResponse>, ApiError> {
    predict(state, json, body).await
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
    state.model.artifact().ok_or_else(|| {
        ApiError::ModelUnavailable(state.model.error().unwrap_or("unknown reason").to_owned())
    })
}

/// Extractor that admits JSON, `application/*+json`, or no content type at
/// all (as FastAPI does); anything else is 415, before the body is read.
pub struct JsonContentType;

impl<S: Send + Sync> FromRequestParts<S> for JsonContentType {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        check_content_type(&parts.headers).map(|()| JsonContentType)
    }
}

fn check_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let text = value.to_str().unwrap_or("");
    let essence = text.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    let json = essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"));
    if json { Ok(()) } else { Err(ApiError::UnsupportedMediaType(text.to_owned())) }
}
