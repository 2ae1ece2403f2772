//! HTTP to the service: the check after a switch (through nginx, on fresh
//! connections, the new color and tag answer the probe path and a known
//! prediction succeeds) and pricing trips on one color directly (the
//! model gates).

use std::time::Duration;

use bluegreen::Color;
use serde::Deserialize;
use tokio::time::{Instant, sleep};

use crate::error::{Error, Result};
use crate::manifest::Probe;

/// A trip every model must price: Midtown to JFK.
const KNOWN_TRIP: [f64; 5] = [40.7614, -73.9776, 40.6413, -73.7781, 1.0];

#[derive(Deserialize)]
struct Liveness {
    color: Option<String>,
    version: Option<String>,
}

/// An HTTP client that opens a connection per request: a probe must see
/// nginx's current workers, not an old worker's kept-alive connection.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap_or_default()
}

/// Probes `base` (nginx's URL) until `color` and `tag` answer or the
/// probe's timeout passes; then, if asked, sends the known prediction.
pub async fn through_proxy(
    http: &reqwest::Client,
    base: &str,
    color: Color,
    tag: &str,
    probe: &Probe,
) -> Result<()> {
    let deadline = Instant::now() + probe.timeout;
    let url = format!("{}{}", base.trim_end_matches('/'), probe.path);
    loop {
        let last = match answered(http, &url).await {
            Ok((c, v)) if c.as_deref() == Some(color.as_str()) && v.as_deref() == Some(tag) => {
                break;
            }
            Ok((c, v)) => format!(
                "answered color {} version {}",
                c.as_deref().unwrap_or("?"),
                v.as_deref().unwrap_or("?")
            ),
            Err(e) => e,
        };
        if Instant::now() >= deadline {
            return Err(Error::Probe(format!(
                "GET {url} did not answer as {color} {tag} within {}: {last}",
                humantime::format_duration(probe.timeout)
            )));
        }
        sleep(Duration::from_millis(100)).await;
    }
    if probe.predict {
        predict(http, base).await.map_err(Error::Probe)?;
    }
    Ok(())
}

async fn answered(
    http: &reqwest::Client,
    url: &str,
) -> std::result::Result<(Option<String>, Option<String>), String> {
    let response = http.get(url).send().await.map_err(|e| format!("GET {url}: {e}"))?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!("GET {url} answered {status}"));
    }
    let body: Liveness =
        response.json().await.map_err(|e| format!("GET {url}: not the service's JSON: {e}"))?;
    Ok((body.color, body.version))
}

#[derive(Deserialize)]
struct Priced {
    predictions: Vec<f64>,
    model_version: String,
}

/// Prices `trips` at `base` (a color's own address): fares and the
/// answering model version.
pub async fn predict_direct(
    http: &reqwest::Client,
    base: &str,
    trips: &[model::Trip],
) -> std::result::Result<(Vec<f64>, String), String> {
    let url = format!("{base}/api/predict/");
    let body = serde_json::json!({ "data": trips });
    let response =
        http.post(&url).json(&body).send().await.map_err(|e| format!("POST {url}: {e}"))?;
    let status = response.status();
    if !status.is_success() {
        let text = response.text().await.unwrap_or_default();
        return Err(format!(
            "POST {url} answered {status}: {}",
            text.chars().take(200).collect::<String>()
        ));
    }
    let priced: Priced =
        response.json().await.map_err(|e| format!("POST {url}: not a prediction: {e}"))?;
    Ok((priced.predictions, priced.model_version))
}

async fn predict(http: &reqwest::Client, base: &str) -> std::result::Result<(), String> {
    let trip =
        model::Trip::from_values(KNOWN_TRIP).map_err(|v| format!("the known trip: {v:?}"))?;
    let (fares, _) = predict_direct(http, base.trim_end_matches('/'), &[trip]).await?;
    match fares.as_slice() {
        [fare] if fare.is_finite() && *fare > 0.0 => Ok(()),
        other => Err(format!("POST {base}/api/predict/ predicted {other:?} for one known trip")),
    }
}
