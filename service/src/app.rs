//! The router: routes, fallbacks and the middleware every request passes
//! through (metrics outermost, then panic catching, then the FastAPI shape
//! for error answers made by code that is not ours). Limits and timeouts
//! of the predict routes are stages of their handler (`api::predict`);
//! those of connections are in `server` and `conn`.

use std::any::Any;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use tower_http::catch_panic::CatchPanicLayer;
use utoipa_swagger_ui::SwaggerUi;

use crate::api;
use crate::error::{ApiError, ErrorKind, MessageBody};
use crate::metrics;
use crate::openapi;
use crate::state::AppState;

/// Builds the whole application for the given state.
pub fn router(state: Arc<AppState>) -> Router {
    let docs = SwaggerUi::new("/docs").url("/openapi.json", openapi::document(&state.limits));
    Router::new()
        .route("/", get(api::health))
        .route("/ready", get(api::ready))
        .route("/api/predict/", post(api::predict))
        .route("/api/predict", post(api::predict_no_slash))
        .route("/model", get(api::model_artifact))
        .route("/metrics", get(api::metrics))
        .merge(docs)
        .fallback(api::not_found)
        .method_not_allowed_fallback(api::method_not_allowed)
        .layer(middleware::from_fn(fastapi_shaped))
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(middleware::from_fn_with_state(state.clone(), track))
        .with_state(state)
}

/// Records the count and latency of every request, by route and status.
async fn track(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = metrics::route_label(request.extensions().get::<MatchedPath>());
    let method = request.method().clone();
    let response = next.run(request).await;
    let status = response.status().as_u16();
    let seconds = started.elapsed().as_secs_f64();
    let error = response.extensions().get::<ErrorKind>().copied();
    state.metrics.record_request(route, &method, status, error, seconds);
    tracing::debug!(route, method = %method, status, ms = seconds * 1e3, "request");
    response
}

/// Error answers made by code that is not ours (the Swagger UI's file
/// server answers an unknown file with an empty 404) get the FastAPI shape
/// and a metrics kind too, like every other error the service sends.
async fn fastapi_shaped(request: Request, next: Next) -> Response {
    let uri = request.uri().clone();
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error())
        || response.extensions().get::<ErrorKind>().is_some()
    {
        return response;
    }
    if status == StatusCode::NOT_FOUND {
        return ApiError::NotFound(uri.path().to_owned()).into_response();
    }
    let detail = status.canonical_reason().unwrap_or("error").to_owned();
    let mut shaped = (status, Json(MessageBody { detail })).into_response();
    shaped.extensions_mut().insert(ErrorKind("other"));
    shaped
}

/// A panic in a handler is a bug: log it and answer 500, keep serving.
fn panic_response(panic: Box<dyn Any + Send + 'static>) -> Response {
    let message = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("non-string panic payload");
    tracing::error!(panic = message, "handler panicked");
    ApiError::Internal.into_response()
}
