//! A hello-world axum server on the same runtime settings as the service:
//! the ceiling `cargo xtask bench serve` measures the service against.
//!
//! `cargo run --release -p service --example hello -- PORT`

use axum::Router;
use axum::body::Bytes;
use axum::routing::{get, post};
use axum::serve::ListenerExt;

fn main() -> anyhow::Result<()> {
    let port: u16 = match std::env::args().nth(1) {
        Some(p) => p.parse()?,
        None => anyhow::bail!("usage: hello PORT"),
    };
    let workers = std::thread::available_parallelism().map(usize::from).unwrap_or(1);
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(workers).enable_all().build()?;
    runtime.block_on(async move {
        let app = Router::new()
            .route("/", get(|| async { "Hello, World!" }))
            .route("/ready", get(|| async { "ready" }))
            // Reads the body like the service does, answers a constant.
            .route(
                "/api/predict/",
                post(|_body: Bytes| async {
                    ([("content-type", "application/json")], r#"{"predictions":[0.0]}"#)
                }),
            );
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        // As the service does.
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        axum::serve(listener, app).await?;
        Ok(())
    })
}
