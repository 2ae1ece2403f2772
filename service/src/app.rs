//! The router: routes, fallbacks and the middleware every request passes
//! through (metrics outermost, then panic catching). Limits and timeouts
//! of the predict routes are stages of their handler (`api::predict`);
//! those of connections are in `server` and `conn`.

use std::any::Any;
use std::sync::Arc;

use axum::Router;
use axum::middleware;
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
    Router::new()
        .route("/", get(api::health))
        .route("/ready", get(api::ready))
        .route("/api/predict/", post(api::predict))
        .route("/api/predict", post(api::predict_no_slash))
        .route("/metrics", get(api::metrics))
        .merge(docs)
        .fallback(api::not_found)
        .method_not_allowed_fallback(api::method_not_allowed)
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(middleware::from_fn_with_state(state.clone(), metrics::track))
        .with_state(state)
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
