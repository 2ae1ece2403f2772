//! The controller's HTTP API: `/status`, `/metrics`, `/healthz`, the
//! status page (`/`, [`crate::page`]), and the authenticated mutations.
//! A mutation edits the manifest, never the world: the file stays the
//! truth and the loop carries it out.
//!
//! It is served by [`serve`], its own accept loop with a header, idle and
//! request timer and a connection cap, which refuses the peers [`peers`]
//! names (the app containers' network) before reading a byte.

pub mod peers;
pub mod serve;

pub use peers::Peers;
pub use serve::{Limits, serve};

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tracing::info;

use controller_core::record::{Operator, previous_good_tag};

use crate::reconciler::{Shared, Trigger};

pub const SET_IMAGE: &str = "/api/v1/image";
pub const ROLLBACK: &str = "/api/v1/rollback";
pub const PROMOTE: &str = "/api/v1/promote";
/// A canary promoted past every step left, at once.
pub const PROMOTE_FULL: &str = "/api/v1/promote-full";
pub const ABORT: &str = "/api/v1/abort";

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/status", get(status))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .route(SET_IMAGE, post(set_image))
        .route(ROLLBACK, post(rollback))
        .route(PROMOTE, post(promote))
        .route(PROMOTE_FULL, post(promote_full))
        .route(ABORT, post(abort))
        .merge(crate::page::routes())
        .with_state(shared)
}

#[derive(Debug, Serialize, Deserialize)]
pub struct SetImage {
    pub tag: String,
}

/// What a mutation answers.
#[derive(Debug, Serialize, Deserialize)]
pub struct Accepted {
    pub tag: String,
    pub manifest: String,
}

fn refuse(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

async fn status(State(shared): State<Arc<Shared>>) -> Response {
    Json(shared.status.borrow().clone()).into_response()
}

async fn metrics(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let (kind, body) = shared.metrics.exposition(accept);
    ([(header::CONTENT_TYPE, kind)], body).into_response()
}

fn unauthorized() -> Response {
    refuse(StatusCode::UNAUTHORIZED, "a valid `Authorization: Bearer <token>` is required")
}

/// Checks `Authorization: Bearer <token>` in constant time.
fn authorized(shared: &Shared, headers: &HeaderMap) -> bool {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let expected = shared.token.as_bytes();
    given.len() == expected.len()
        && given.bytes().zip(expected).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

/// Writes the tag through the one manifest writer, which serialises
/// writers across processes.
async fn write_tag(shared: &Shared, tag: String, why: &'static str) -> Response {
    let path = shared.manifest.clone();
    let written = {
        let (path, tag) = (path.clone(), tag.clone());
        tokio::task::spawn_blocking(move || manifest_file::write_tag(&path, &tag)).await
    };
    match written {
        Ok(Ok(())) => {
            info!(%tag, command = why, "manifest updated");
            let _ = shared.triggers.try_send(Trigger::Command(why));
            let body = Accepted { tag, manifest: path.display().to_string() };
            (StatusCode::ACCEPTED, Json(body)).into_response()
        }
        Ok(Err(manifest_file::Error::Manifest(e))) => {
            refuse(StatusCode::UNPROCESSABLE_ENTITY, e.to_string())
        }
        Ok(Err(e)) => refuse(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Err(e) => refuse(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// The most a mutation's body may hold: `{"tag": …}` is far smaller.
const MAX_BODY: usize = 4 << 10;

/// The token is checked before a byte of the body is read, and the body
/// is read only up to [`MAX_BODY`].
async fn set_image(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    if !authorized(&shared, &headers) {
        return unauthorized();
    }
    let Ok(body) = axum::body::to_bytes(body, MAX_BODY).await else {
        return refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body must be at most {MAX_BODY} bytes of JSON"),
        );
    };
    match serde_json::from_slice::<SetImage>(&body) {
        Ok(SetImage { tag }) => write_tag(&shared, tag, "set-image").await,
        Err(e) => refuse(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(r#"the body must be JSON {{"tag": "<image tag>"}}: {e}"#),
        ),
    }
}

async fn promote(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    operator(&shared, &headers, Operator::Promote).await
}

async fn promote_full(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    operator(&shared, &headers, Operator::PromoteFull).await
}

async fn abort(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    operator(&shared, &headers, Operator::Abort).await
}

/// Hands an operator's word to the loop, for the paused rollout; the
/// record holds it from then on.
async fn operator(shared: &Shared, headers: &HeaderMap, word: Operator) -> Response {
    if !authorized(shared, headers) {
        return unauthorized();
    }
    let paused = shared.status.borrow().paused_tag().map(str::to_owned);
    let Some(tag) = paused else {
        return refuse(StatusCode::CONFLICT, "no rollout is paused");
    };
    if shared.triggers.send(Trigger::Operator(word)).await.is_err() {
        return refuse(StatusCode::SERVICE_UNAVAILABLE, "the controller is stopping");
    }
    let body = Accepted { tag, manifest: shared.manifest.display().to_string() };
    (StatusCode::ACCEPTED, Json(body)).into_response()
}

/// Back to the newest tag that succeeded, other than the desired one.
async fn rollback(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if !authorized(&shared, &headers) {
        return unauthorized();
    }
    let target = {
        let status = shared.status.borrow();
        previous_good_tag(&status.history, status.desired.tag.as_deref()).map(str::to_owned)
    };
    match target {
        Some(tag) => write_tag(&shared, tag, "rollback").await,
        None => {
            refuse(StatusCode::CONFLICT, "no earlier tag has succeeded: nothing to roll back to")
        }
    }
}
