//! The shutdown signal: SIGTERM (what Docker and the controller send) or
//! SIGINT (Ctrl-C), whichever comes first.

use std::future::Future;

use tokio::signal::unix::{Signal, SignalKind, signal};

/// Installs the SIGTERM and SIGINT handlers now and returns a future that
/// resolves when either arrives. Call it before the socket is bound: a
/// signal that lands between "listening" and the first poll of a lazily
/// installed handler would otherwise meet the default action and kill the
/// process mid-request. If a handler cannot be installed (which only
/// happens when the runtime is broken), the error is logged and that
/// signal is simply not listened for.
pub fn install() -> impl Future<Output = ()> + Send + 'static {
    let term = listen(SignalKind::terminate(), "SIGTERM");
    let int = listen(SignalKind::interrupt(), "SIGINT");
    async move {
        let name = tokio::select! {
            name = wait(term, "SIGTERM") => name,
            name = wait(int, "SIGINT") => name,
        };
        tracing::info!(
            signal = name,
            "shutdown requested: no new connections, finishing requests in flight"
        );
    }
}

fn listen(kind: SignalKind, name: &'static str) -> Option<Signal> {
    signal(kind)
        .inspect_err(|e| tracing::error!(signal = name, error = %e, "cannot listen for signal"))
        .ok()
}

async fn wait(stream: Option<Signal>, name: &'static str) -> &'static str {
    match stream {
        Some(mut stream) => {
            stream.recv().await;
            name
        }
        None => std::future::pending().await,
    }
}
