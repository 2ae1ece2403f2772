//! HTTP to the service, written once for every backend: a color's own
//! replicas at the endpoints the platform gives (the gates' evidence, the
//! warm-up bursts, the analysis' counters) and the front users reach (the
//! probe after a switch). Each call is one try, bounded in time by the
//! client's timeout and in bytes by a cap per kind of answer, and never
//! follows a redirect: a hostile image can neither exhaust the controller
//! nor aim its requests elsewhere. Waiting between tries is the state
//! machine's business.

use std::time::{Duration, Instant};

use bluegreen::Color;
use controller_core::analysis::{self, Own, Reading, Sample};
use controller_core::compare::Pair;
use controller_core::gates::{Evidence, KNOWN_TRIP, Known};
use controller_core::manifest::Probe;
use controller_core::shadow::{self, Answer};
use controller_core::traffic::Counters;
use model::{ModelArtifact, Trip};
use serde::Deserialize;

use crate::answer::{TIMEOUT, body_within, why};
use crate::platform::Workloads;

/// The most read of an artifact (the service refuses one over 1 MiB).
const MAX_MODEL: usize = 2 << 20;
/// The most read of a prediction, a liveness answer or an error.
const MAX_ANSWER: usize = 256 << 10;
/// The most read of a replica's /metrics.
const MAX_METRICS: usize = 1 << 20;
/// The most read of a replica's shadow answers (10,000 of them, each an
/// id and a fare or a few, are well under it).
const MAX_SHADOW: usize = 4 << 20;

/// A replica's `GET /shadow/answers`.
#[derive(Deserialize)]
struct Recorded {
    answers: Vec<Answer>,
}

/// An HTTP client that opens a connection per request (a probe must see
/// nginx's current workers, not an old worker's kept-alive connection)
/// and follows no redirect.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap_or_default()
}

#[derive(Deserialize)]
struct Liveness {
    color: Option<String>,
    version: Option<String>,
}

#[derive(Deserialize)]
struct Priced {
    predictions: Vec<f64>,
    model_version: String,
}

/// Why a request to the predict route is not answered as it should be.
enum Unknown {
    /// No answer at all: refused, reset, timed out.
    Unanswered(String),
    /// An answer that is not the known one, or cannot be read.
    Wrong(String),
}

impl Unknown {
    fn into_words(self) -> String {
        match self {
            Unknown::Unanswered(e) | Unknown::Wrong(e) => e,
        }
    }
}

/// An answer of the predict route, read.
fn priced(text: &str) -> Result<Priced, String> {
    serde_json::from_str(text).map_err(|e| format!("not a prediction: {e}"))
}

/// Text of an answer's first bytes, for a reason.
fn excerpt(text: &str) -> String {
    text.chars().take(200).collect()
}

#[derive(Clone)]
pub struct ColorHttp {
    http: reqwest::Client,
    /// Where the analysis' PromQL queries go, when configured.
    prometheus: Option<String>,
}

impl Default for ColorHttp {
    fn default() -> Self {
        ColorHttp { http: client(), prometheus: None }
    }
}

impl ColorHttp {
    /// The same, asking the analysis' queries of the Prometheus at `url`.
    pub fn with_prometheus(url: String) -> ColorHttp {
        ColorHttp { prometheus: Some(url), ..ColorHttp::default() }
    }

    async fn first_endpoint<W: Workloads>(&self, w: &W, color: Color) -> Result<String, String> {
        let endpoints = w.endpoints(color).await.map_err(|e| e.to_string())?;
        endpoints.into_iter().next().ok_or_else(|| format!("{color} has no running replica"))
    }

    /// The artifact a replica serves (`GET /model`).
    async fn artifact(&self, base: &str) -> Result<ModelArtifact, String> {
        let url = format!("{base}/model");
        let response =
            self.http.get(&url).send().await.map_err(|e| format!("GET {url}: {}", why(&e)))?;
        let status = response.status();
        let text = body_within(response, MAX_MODEL).await.map_err(|e| format!("GET {url}: {e}"))?;
        if !status.is_success() {
            return Err(format!("GET {url} answered {status}: {}", excerpt(&text)));
        }
        ModelArtifact::from_json(&text).map_err(|e| format!("GET {url}: {e}"))
    }

    /// Posts `trips` to the predict route at `base`: the answer's status
    /// and text, or why there is none.
    async fn post_trips(
        &self,
        base: &str,
        trips: &[Trip],
    ) -> Result<(reqwest::StatusCode, String), Unknown> {
        let url = format!("{base}/api/predict/");
        let body = serde_json::json!({ "data": trips });
        let response = self
            .http
            .post(&url)
            .json(&body)
            .send()
            .await
            .map_err(|e| Unknown::Unanswered(format!("POST {url}: {}", why(&e))))?;
        let status = response.status();
        let text = body_within(response, MAX_ANSWER)
            .await
            .map_err(|e| Unknown::Wrong(format!("POST {url}: {e}")))?;
        Ok((status, text))
    }

    /// Prices `trips` at `base` (a replica's own address): the fares and
    /// the model version that answered.
    pub async fn predict(&self, base: &str, trips: &[Trip]) -> Result<(Vec<f64>, String), String> {
        let (status, text) = self.post_trips(base, trips).await.map_err(Unknown::into_words)?;
        if !status.is_success() {
            return Err(format!("POST {base}/api/predict/ answered {status}: {}", excerpt(&text)));
        }
        let priced = priced(&text).map_err(|e| format!("POST {base}/api/predict/: {e}"))?;
        Ok((priced.predictions, priced.model_version))
    }

    /// What the gates judge: the new color's artifact and its fares for
    /// the golden trips; the live color's artifact and fares, if a color
    /// is live.
    pub async fn evidence<W: Workloads>(
        &self,
        w: &W,
        color: Color,
        live: Option<Color>,
        golden: bool,
    ) -> Result<Evidence, String> {
        let base = self.first_endpoint(w, color).await?;
        let new =
            self.artifact(&base).await.map_err(|e| format!("cannot read the new model: {e}"))?;
        let trips = Evidence::trips(&new);
        let new_fares = if golden || live.is_some() {
            let priced = self.predict(&base, &trips).await;
            Some(priced.map_err(|e| format!("golden trips: {e}"))?)
        } else {
            None
        };
        let (live_model, live_fares) = match live {
            Some(l) => {
                let read = async {
                    let base = self.first_endpoint(w, l).await?;
                    let artifact = self.artifact(&base).await?;
                    let (fares, _) = self.predict(&base, &trips).await?;
                    Ok::<_, String>((artifact, fares))
                };
                let (a, f) = read.await.map_err(|e| format!("cannot read the live model: {e}"))?;
                (Some(a), Some(f))
            }
            None => (None, None),
        };
        Ok(Evidence { new, new_fares, live: live_model, live_fares })
    }

    /// One warm-up burst: `requests` predictions of `trip`, one after the
    /// other, at the new color's first replica; their times. The address
    /// is found once, so only the predictions are timed.
    pub async fn burst<W: Workloads>(
        &self,
        w: &W,
        color: Color,
        trip: Trip,
        requests: usize,
    ) -> Result<Vec<Duration>, String> {
        let base = self.first_endpoint(w, color).await?;
        let mut took = Vec::with_capacity(requests);
        for _ in 0..requests {
            let sent = Instant::now();
            self.predict(&base, &[trip]).await?;
            took.push(sent.elapsed());
        }
        Ok(took)
    }

    /// One reading for the analysis: `own` known-answer requests sent to
    /// `color`'s replicas in turn, then their counters (which then count
    /// those requests too).
    pub async fn reading<W: Workloads>(
        &self,
        w: &W,
        color: Color,
        own: Option<&(Known, u32)>,
        queries: &[(String, String)],
    ) -> Result<Reading, String> {
        let mut met = Own::default();
        if let Some((known, count)) = own {
            let endpoints = w.endpoints(color).await.map_err(|e| e.to_string())?;
            for base in endpoints.iter().cycle().take(*count as usize) {
                met.sent += 1;
                match self.known_answer(base, known).await {
                    Ok(()) => {}
                    Err(Unknown::Unanswered(e)) => {
                        // One is enough to know; the rest would each wait
                        // for the timeout too.
                        tracing::warn!(error = %e, "a known-answer request got no answer");
                        met.failed += 1;
                        break;
                    }
                    Err(Unknown::Wrong(e)) => {
                        met.wrong = Some(e);
                        break;
                    }
                }
            }
        }
        let sample = self.sample(w, color).await?;
        let mut values = Vec::with_capacity(queries.len());
        for (name, query) in queries {
            let value = match &self.prometheus {
                Some(base) => crate::promql::value(&self.http, base, query).await,
                None => Err("no Prometheus is configured (--prometheus-url)".to_owned()),
            };
            values.push((name.clone(), value));
        }
        Ok(Reading { sample, own: met, queries: values })
    }

    /// One known-answer request. A 5xx is no verdict here: the color's
    /// counters have it, as a fault or as shed for capacity.
    async fn known_answer(&self, base: &str, known: &Known) -> Result<(), Unknown> {
        let wrong = |e: String| Unknown::Wrong(format!("a known-answer request: {e}"));
        let (status, text) = self.post_trips(base, &[known.trip]).await.map_err(|e| match e {
            Unknown::Wrong(e) => wrong(e),
            unanswered => unanswered,
        })?;
        if status.is_server_error() {
            return Ok(());
        }
        if !status.is_success() {
            return Err(Unknown::Wrong(format!(
                "a known-answer request was refused with {status}: {}",
                excerpt(&text)
            )));
        }
        let priced = priced(&text).map_err(wrong)?;
        match priced.predictions.as_slice() {
            [fare] => known.check(*fare, &priced.model_version).map_err(Unknown::Wrong),
            other => Err(Unknown::Wrong(format!(
                "a known-answer request of one trip got {} fares",
                other.len()
            ))),
        }
    }

    /// The predict routes' counters of every running replica of `color`,
    /// summed.
    async fn sample<W: Workloads>(&self, w: &W, color: Color) -> Result<Sample, String> {
        let mut sum = Sample::default();
        for base in w.endpoints(color).await.map_err(|e| e.to_string())? {
            sum.add(&self.counters_of(&base).await?);
        }
        Ok(sum)
    }

    /// Both colors' counters, read one right after the other (the
    /// canary's analysis compares them over the same interval).
    pub async fn pair<W: Workloads>(
        &self,
        w: &W,
        stable: Color,
        canary: Color,
    ) -> Result<Pair, String> {
        let stable = self.sample(w, stable).await?;
        let canary = self.sample(w, canary).await?;
        Ok(Pair { stable, canary })
    }

    /// What every running replica of `color` recorded it answered, by
    /// request id, during a shadow (`GET /shadow/answers`), at most
    /// [`shadow::MAX_ANSWERS`] in all: the newest of each replica's are
    /// kept when there are more.
    pub async fn answers_of<W: Workloads>(
        &self,
        w: &W,
        color: Color,
    ) -> Result<Vec<Answer>, String> {
        let mut all = Vec::new();
        for base in w.endpoints(color).await.map_err(|e| e.to_string())? {
            let url = format!("{base}/shadow/answers");
            let read = async {
                let response = self.http.get(&url).send().await.map_err(|e| why(&e))?;
                let status = response.status();
                let text = body_within(response, MAX_SHADOW).await?;
                if !status.is_success() {
                    return Err(format!("answered {status}: {}", excerpt(&text)));
                }
                serde_json::from_str::<Recorded>(&text).map_err(|e| format!("not answers: {e}"))
            };
            let mut got = read.await.map_err(|e: String| format!("GET {url}: {e}"))?.answers;
            let over = got.len().saturating_sub(shadow::MAX_ANSWERS);
            all.extend(got.drain(over..));
        }
        let over = all.len().saturating_sub(shadow::MAX_ANSWERS);
        Ok(all.split_off(over))
    }

    /// Each running replica of `color`'s counters, by its address; one
    /// that cannot be read is left out (and logged), so one slow replica
    /// leaves a gap in a chart, not an error.
    pub async fn counters<W: Workloads>(&self, w: &W, color: Color) -> Result<Counters, String> {
        let mut each = Counters::new();
        for base in w.endpoints(color).await.map_err(|e| e.to_string())? {
            match self.counters_of(&base).await {
                Ok(sample) => {
                    each.insert(base, sample);
                }
                Err(e) => tracing::debug!(error = %e, "a live replica's counters"),
            }
        }
        Ok(each)
    }

    /// One replica's predict counters, from its `/metrics`.
    async fn counters_of(&self, base: &str) -> Result<Sample, String> {
        let url = format!("{base}/metrics");
        let read = async {
            let response = self.http.get(&url).send().await.map_err(|e| why(&e))?;
            let status = response.status();
            let text = body_within(response, MAX_METRICS).await?;
            if !status.is_success() {
                return Err(format!("answered {status}"));
            }
            Ok(text)
        };
        let text = read.await.map_err(|e: String| format!("GET {url}: {e}"))?;
        Ok(analysis::parse(&text))
    }

    /// Whether the front can serve: a 2xx to `GET /ready`, which the
    /// live color answers only with a model loaded.
    pub async fn answers(&self, front: &str) -> Result<(), String> {
        let url = format!("{}/ready", front.trim_end_matches('/'));
        let response =
            self.http.get(&url).send().await.map_err(|e| format!("GET {url}: {}", why(&e)))?;
        let status = response.status();
        body_within(response, MAX_ANSWER).await.map_err(|e| format!("GET {url}: {e}"))?;
        if status.is_success() { Ok(()) } else { Err(format!("GET {url} answered {status}")) }
    }

    /// One try through the front: `color` and `tag` answer the probe
    /// path and, if asked, a known trip is priced.
    pub async fn probe(
        &self,
        front: &str,
        color: Color,
        tag: &str,
        probe: &Probe,
    ) -> Result<(), String> {
        let base = front.trim_end_matches('/');
        let url = format!("{base}{}", probe.path);
        let response =
            self.http.get(&url).send().await.map_err(|e| format!("GET {url}: {}", why(&e)))?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("GET {url} answered {status}"));
        }
        let text =
            body_within(response, MAX_ANSWER).await.map_err(|e| format!("GET {url}: {e}"))?;
        let body: Liveness = serde_json::from_str(&text)
            .map_err(|e| format!("GET {url}: not the service's JSON: {e}"))?;
        if body.color.as_deref() != Some(color.as_str()) || body.version.as_deref() != Some(tag) {
            return Err(format!(
                "GET {url} answered color {} version {}",
                body.color.as_deref().unwrap_or("?"),
                body.version.as_deref().unwrap_or("?")
            ));
        }
        if probe.predict {
            let (fares, _) = self.predict(base, &[KNOWN_TRIP]).await?;
            match fares.as_slice() {
                [fare] if fare.is_finite() && *fare > 0.0 => {}
                other => {
                    return Err(format!(
                        "POST {base}/api/predict/ priced {other:?} for a known trip"
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use axum::Router;
    use axum::response::Redirect;
    use axum::routing::get;

    use super::*;

    async fn serve(routes: Router) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, routes).await });
        base
    }

    #[tokio::test]
    async fn answers_are_capped_and_redirects_refused() {
        let big = "x".repeat(MAX_ANSWER + 1);
        let routes = Router::new()
            .route("/big", get(move || async move { big }))
            .route(
                "/streamed",
                get(|| async {
                    let chunks = (0..64).map(|_| Ok::<_, std::io::Error>(vec![b'y'; 8192]));
                    axum::body::Body::from_stream(futures_util::stream::iter(chunks))
                }),
            )
            .route("/away", get(|| async { Redirect::temporary("http://127.0.0.1:9/") }))
            .route("/small", get(|| async { "ok" }));
        let base = serve(routes).await;
        let http = client();
        let get = |path: &str| http.get(format!("{base}{path}")).send();
        let e = body_within(get("/big").await.unwrap(), MAX_ANSWER).await.unwrap_err();
        assert!(e.contains("larger than 256 KiB"), "{e}");
        // No length declared: refused as the bytes arrive.
        let e = body_within(get("/streamed").await.unwrap(), MAX_ANSWER).await.unwrap_err();
        assert!(e.contains("larger than"), "{e}");
        assert_eq!(body_within(get("/small").await.unwrap(), MAX_ANSWER).await.unwrap(), "ok");
        let moved = get("/away").await.unwrap();
        assert!(moved.status().is_redirection(), "the redirect was followed");
        let probe = Probe { path: "/away".into(), predict: false, timeout: Duration::from_secs(1) };
        let e = ColorHttp::default().probe(&base, Color::Blue, "v1", &probe).await.unwrap_err();
        assert!(e.contains("307"), "{e}");
    }
}
