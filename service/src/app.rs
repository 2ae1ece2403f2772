//! The router: routes, fallbacks and the middleware every request passes
//! through (metrics outermost, then panic catching and the body limit; the
//! predict routes also get the request timeout).

use std::any::Any;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tower_http::catch_panic::CatchPanicLayer;
use utoipa_swagger_ui::SwaggerUi;

use crate::api;
use crate::error::ApiError;
use crate::metrics;
use crate::openapi;
use crate::state::AppState;

/// Builds the whole application for the given state.
pub fn router(state: Arc<AppState>) -> Router {
    let docs = SwaggerUi::new("/docs").url("/openapi.json", openapi::document(&state.limits));
    // Only predict does real work; the other handlers answer from memory,
    // and skipping the timer keeps them as cheap as a liveness probe must be.
    let timeout = middleware::from_fn_with_state(state.clone(), timeout);
    Router::new()
        .route("/", get(api::health))
        .route("/ready", get(api::ready))
        .route("/api/predict/", post(api::predict).layer(timeout.clone()))
        .route("/api/predict", post(api::predict_no_slash).layer(timeout))
        .route("/metrics", get(api::metrics))
        .merge(docs)
        .fallback(api::not_found)
        .method_not_allowed_fallback(api::method_not_allowed)
        .layer(DefaultBodyLimit::max(state.limits.max_body_bytes))
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(middleware::from_fn_with_state(state.clone(), metrics::track))
        .with_state(state)
}

/// Answers 503 for a request still running after the configured timeout.
async fn timeout(
    State(state): State<Arc<AppState>>,
    request: Request<Body>,
    next: Next,
) -> Response {
    let limit = state.limits.request_timeout;
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            tracing::warn!(timeout_s = limit.as_secs_f64(), "request timed out");
            ApiError::Timeout(limit.as_secs_f64()).into_response()
        }
    }
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
