//! The router: routes, fallbacks and the middleware every request passes
//! through, in one layer (metrics outermost, then panic catching, then the
//! FastAPI shape for error answers made by code that is not ours). Limits
//! and timeouts of the predict routes are stages of their handler
//! (`api::predict`); those of connections are in `server` and `conn`.

use std::any::Any;
use std::convert::Infallible;
use std::panic::{self, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{MatchedPath, Request};
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use tower::{Layer, Service};
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
        .route("/shadow/answers", get(crate::answers::list))
        .merge(docs)
        .fallback(api::not_found)
        .method_not_allowed_fallback(api::method_not_allowed)
        .layer(Edge { inner: (), state: state.clone() })
        .with_state(state)
}

/// The request tracking, the panic catching and the FastAPI shape of
/// foreign error answers, in that order from the outside, as one
/// hand-written layer: two `from_fn` layers and tower-http's panic layer
/// cost about a fifth of a 1-row request's instructions in the process (each
/// `from_fn` clones the boxed service it wraps and boxes a future, the
/// panic layer boxes the body again).
#[derive(Clone)]
struct Edge<S> {
    inner: S,
    state: Arc<AppState>,
}

impl<S> Layer<S> for Edge<()> {
    type Service = Edge<S>;

    fn layer(&self, inner: S) -> Edge<S> {
        Edge { inner, state: self.state.clone() }
    }
}

impl<S, B> Service<Request> for Edge<S>
where
    S: Service<Request, Response = Response<B>, Error = Infallible>,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let started = Instant::now();
        let route = metrics::route_label(request.extensions().get::<MatchedPath>());
        let method = request.method().clone();
        let uri = request.uri().clone();
        let state = self.state.clone();
        let answer = panic::catch_unwind(AssertUnwindSafe(|| self.inner.call(request)));
        Box::pin(async move {
            let response = match answer {
                Ok(answer) => match CatchUnwind(Box::pin(answer)).await {
                    Ok(Ok(response)) => fastapi_shaped(&uri, response.map(Body::new)),
                    Err(panic) => panic_response(panic),
                },
                Err(panic) => panic_response(panic),
            };
            track(&state, route, &method, started, &response);
            Ok(response)
        })
    }
}

/// A future whose panics, at any poll, are its output's `Err` (as
/// `std::panic::catch_unwind` is for a call), so a panicking handler
/// answers 500 and its connection keeps serving.
struct CatchUnwind<F>(Pin<Box<F>>);

impl<F: Future> Future for CatchUnwind<F> {
    type Output = std::thread::Result<F::Output>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.0.as_mut();
        match panic::catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
            Err(panic) => Poll::Ready(Err(panic)),
        }
    }
}

/// Records the count and latency of every request, by route and status.
fn track(
    state: &AppState,
    route: &'static str,
    method: &Method,
    started: Instant,
    response: &Response,
) {
    let status = response.status().as_u16();
    let seconds = started.elapsed().as_secs_f64();
    let error = response.extensions().get::<ErrorKind>().copied();
    state.metrics.record_request(route, method, status, error, seconds);
    tracing::debug!(route, method = %method, status, ms = seconds * 1e3, "request");
}

/// Error answers made by code that is not ours (the Swagger UI's file
/// server answers an unknown file with an empty 404) get the FastAPI shape
/// and a metrics kind too, like every other error the service sends.
fn fastapi_shaped(uri: &Uri, response: Response) -> Response {
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

#[cfg(test)]
mod tests {
    use axum::routing::get;
    use tower::ServiceExt;

    use super::*;
    use crate::limits::Limits;
    use crate::state::{Deployment, ModelSlot};

    /// A handler that panics, when called or when polled, is answered 500
    /// in the FastAPI shape and counted as `internal`, as under
    /// tower-http's panic layer; the foreign 404 keeps its shape.
    #[tokio::test]
    async fn panics_answer_500_and_foreign_errors_keep_the_shape() {
        let state = AppState::new(
            ModelSlot::Unavailable("none".to_owned()),
            Deployment::default(),
            Limits::default(),
        );
        let app = Router::new()
            .route(
                "/boom",
                get(|| async {
                    let fail = std::hint::black_box(true);
                    if fail {
                        panic!("boom");
                    }
                    "never"
                }),
            )
            .route("/empty404", get(|| async { StatusCode::NOT_FOUND }))
            .layer(Edge { inner: (), state: state.clone() })
            .with_state(state.clone());
        let get = |path: &str| Request::builder().uri(path).body(Body::empty()).unwrap();
        let response = app.clone().oneshot(get("/boom")).await.unwrap();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = axum::body::to_bytes(response.into_body(), 1 << 16).await.unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert!(body["detail"].is_string(), "{body}");
        let response = app.oneshot(get("/empty404")).await.unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        let body = axum::body::to_bytes(response.into_body(), 1 << 16).await.unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert!(body["detail"].is_string(), "{body}");
        let metrics = state.metrics.render();
        assert!(
            metrics.lines().any(|l| l.starts_with("http_request_errors_total{")
                && l.contains("status=\"500\"")
                && l.contains("kind=\"internal\"")),
            "{metrics}"
        );
    }
}
