//! Serving: load the model, bind, answer until a shutdown signal, then
//! drain requests in flight within a deadline.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::app;
use crate::config::{ServeArgs, seconds};
use crate::shutdown;
use crate::state::{AppState, Deployment, Limits, ModelSlot};

/// Runs the service until it is told to stop. Returns an error if it
/// cannot start, or if requests were still running at the drain deadline.
pub async fn run(args: &ServeArgs) -> Result<()> {
    let limits = Limits {
        max_batch_rows: args.max_batch_rows,
        max_body_bytes: args.max_body_bytes,
        request_timeout: seconds("request-timeout-secs", args.request_timeout_secs)?,
    };
    let drain_deadline = seconds("shutdown-timeout-secs", args.shutdown_timeout_secs)?;
    if limits.max_batch_rows == 0 {
        bail!("--max-batch-rows must be at least 1");
    }

    let stop = shutdown::install();
    tracing::info!(
        service_version = env!("CARGO_PKG_VERSION"),
        color = args.color.as_deref().unwrap_or("-"),
        release = args.release.as_deref().unwrap_or("-"),
        max_batch_rows = limits.max_batch_rows,
        max_body_bytes = limits.max_body_bytes,
        "starting"
    );
    let model = ModelSlot::load(args.model.as_deref());
    match &model {
        ModelSlot::Loaded(a) => tracing::info!(
            path = %args.model.as_deref().map(|p| p.display().to_string()).unwrap_or_default(),
            model_version = %a.model_version,
            feature_set = %a.feature_set,
            "model loaded"
        ),
        ModelSlot::Unavailable(reason) => tracing::error!(
            reason = %reason,
            "no model loaded: serving / and /metrics only; /ready and predict answer 503"
        ),
    }
    let deployment = Deployment { color: args.color.clone(), version: args.release.clone() };
    let state = AppState::new(model, deployment, limits);

    let addr = SocketAddr::new(args.host, args.port);
    let listener =
        TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
    let local = listener.local_addr().context("cannot read the bound address")?;
    tracing::info!(addr = %local, "listening");

    serve(listener, app::router(state), stop, drain_deadline).await
}

/// Serves `app` on `listener` until `stop` resolves, then waits at most
/// `drain_deadline` for connections to finish.
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    stop: impl Future<Output = ()> + Send + 'static,
    drain_deadline: Duration,
) -> Result<()> {
    let (stopping_tx, mut stopping) = watch::channel(false);
    let mut graceful = stopping.clone();
    tokio::spawn(async move {
        stop.await;
        let _ = stopping_tx.send(true);
    });
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
    });
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        let _ = graceful.wait_for(|stop| *stop).await;
    });
    let deadline = async move {
        let _ = stopping.wait_for(|stop| *stop).await;
        tokio::time::sleep(drain_deadline).await;
    };
    tokio::select! {
        result = server => {
            result.context("server failed")?;
            tracing::info!("all requests finished; exiting");
            Ok(())
        }
        () = deadline => bail!(
            "requests still running {:.1} s after the shutdown signal; exiting anyway",
            drain_deadline.as_secs_f64()
        ),
    }
}
