//! The read-the-body ceiling of `cargo xtask bench serve`: the hello-world
//! server's runtime and socket settings, whose predict route reads the
//! whole body into one buffer sized by its declared length, as the service
//! does, and answers a reply fixed in advance — the service's own answer to
//! that body, chosen by the body's length — without parsing a byte. What
//! the service spends beyond this server is the price of pricing.
//!
//! `cargo run --release -p service --example body_ceiling -- PORT [LENGTH=FILE]...`

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use http_body_util::BodyExt;

/// Replies by body length; a length with none gets `{"predictions":[0.0]}`.
type Replies = Arc<HashMap<usize, Bytes>>;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let port: u16 = match args.next() {
        Some(p) => p.parse()?,
        None => anyhow::bail!("usage: body_ceiling PORT [LENGTH=FILE]..."),
    };
    let mut replies = HashMap::new();
    for pair in args {
        let Some((length, file)) = pair.split_once('=') else {
            anyhow::bail!("expected LENGTH=FILE, got {pair:?}");
        };
        replies.insert(length.parse::<usize>()?, Bytes::from(std::fs::read(file)?));
    }
    let replies: Replies = Arc::new(replies);
    let workers = std::thread::available_parallelism().map(usize::from).unwrap_or(1);
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(workers).enable_all().build()?;
    runtime.block_on(async move {
        let predict = move |headers: HeaderMap, body: Body| {
            let replies = replies.clone();
            async move { answer(&replies, &headers, body).await }
        };
        let app = Router::new()
            .route("/", get(|| async { "Hello, World!" }))
            .route("/ready", get(|| async { "ready" }))
            .route("/api/predict/", post(predict));
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        axum::serve(listener, app).await?;
        Ok(())
    })
}

/// Reads the body as the service does (one buffer of the declared length),
/// then answers the reply fixed for its length.
async fn answer(replies: &Replies, headers: &HeaderMap, body: Body) -> axum::response::Response {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(0);
    let mut read = Vec::with_capacity(declared.min(4 << 20));
    let mut body = body;
    while let Some(Ok(frame)) = body.frame().await {
        if let Ok(data) = frame.into_data() {
            read.extend_from_slice(&data);
        }
    }
    let reply = replies
        .get(&std::hint::black_box(read).len())
        .cloned()
        .unwrap_or_else(|| Bytes::from_static(br#"{"predictions":[0.0]}"#));
    ([(header::CONTENT_TYPE, "application/json")], reply).into_response()
}
