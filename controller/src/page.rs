//! The status page at `GET /`: one HTML file and its script
//! (`/page.js`), both embedded in the binary, so the page works offline.
//! The script polls `/status` every second and draws it; promote and
//! abort send the bearer token the operator pastes, kept in the tab's
//! sessionStorage only.
//!
//! The page gives no other origin a way in: no CORS header is sent (a
//! cross-origin script cannot read `/status` or send the token's header),
//! the Content-Security-Policy allows scripts, requests and images from
//! the controller alone and no framing, and every value from `/status` is
//! inserted as text, never as markup.

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

pub const INDEX: &str = include_str!("page/index.html");
pub const SCRIPT: &str = include_str!("page/page.js");
pub const SCRIPT_PATH: &str = "/page.js";

/// Inline styles only; the script is `/page.js`.
pub const CSP: &str = "default-src 'none'; script-src 'self'; connect-src 'self'; \
                       style-src 'self' 'unsafe-inline'; img-src 'self'; base-uri 'none'; \
                       form-action 'none'; frame-ancestors 'none'";

/// `/` and `/page.js`, for any router state.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|| async { served("text/html; charset=utf-8", INDEX) }))
        .route(SCRIPT_PATH, get(|| async { served("text/javascript; charset=utf-8", SCRIPT) }))
}

fn served(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}
