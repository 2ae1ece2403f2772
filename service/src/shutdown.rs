//! The shutdown signal: SIGTERM (what Docker and the controller send) or
//! SIGINT (Ctrl-C), whichever comes first.

use tokio::signal::unix::{SignalKind, signal};

/// Resolves when the process is asked to stop. If a handler cannot be
/// installed (which only happens when the runtime is broken), the error is
/// logged and that signal is simply not listened for.
pub async fn requested() {
    let wait = |kind: SignalKind, name: &'static str| async move {
        match signal(kind) {
            Ok(mut stream) => {
                stream.recv().await;
                name
            }
            Err(e) => {
                tracing::error!(signal = name, error = %e, "cannot listen for signal");
                std::future::pending().await
            }
        }
    };
    let name = tokio::select! {
        name = wait(SignalKind::terminate(), "SIGTERM") => name,
        name = wait(SignalKind::interrupt(), "SIGINT") => name,
    };
    tracing::info!(
        signal = name,
        "shutdown requested: no new connections, finishing requests in flight"
    );
}
