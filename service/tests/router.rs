//! In-process tests of the whole router: statuses, bodies, metrics and the
//! OpenAPI document, without a socket.

mod common;

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use model::{ModelArtifact, Trip};
use serde_json::{Value, json};
use service::admission::{Class, Cost};
use service::{AppState, Deployment, Limits, LoadedModel, ModelSlot};

use common::{
    TempDir, artifact, artifact_with_golden, batch, documented_request, loaded_slot, nyc_row, send,
    write_file,
};

fn state_with(model: ModelSlot) -> Arc<AppState> {
    let deployment =
        Deployment { color: Some(bluegreen::Color::Blue), version: Some("abc123".into()) };
    AppState::new(model, deployment, Limits::default())
}

fn loaded() -> Arc<AppState> {
    state_with(loaded_slot())
}

fn get(path: &str) -> Request<Body> {
    Request::get(path).body(Body::empty()).unwrap()
}

fn post_json(path: &str, body: impl Into<Body>) -> Request<Body> {
    Request::post(path).header(header::CONTENT_TYPE, "application/json").body(body.into()).unwrap()
}

fn row_with(field: &str, value: Value) -> Value {
    let mut row = nyc_row(1);
    row[field] = value;
    json!({ "data": [nyc_row(0), row] })
}

fn row_without(field: &str) -> Value {
    let mut row = nyc_row(1);
    row.as_object_mut().unwrap().remove(field);
    json!({ "data": [nyc_row(0), row] })
}

#[tokio::test]
async fn documented_request_answers_200_with_the_models_prediction() {
    let state = loaded();
    for path in ["/api/predict/", "/api/predict"] {
        let answer = send(&state, post_json(path, documented_request().to_string())).await;
        assert_eq!(answer.status, StatusCode::OK, "{path}: {}", answer.text);
        let expected =
            artifact().predict(&Trip::from_values([70.15, -40.22, 70.83, -1.0, 2.0]).unwrap());
        assert_eq!(answer.body["predictions"], json!([expected]));
        assert_eq!(answer.body["model_version"], "test-model-7");
        // The documented trip is far outside New York: predicted, and flagged.
        assert_eq!(answer.body["out_of_area"], json!([0]));
    }
}

#[tokio::test]
async fn predictions_equal_model_predict_exactly_and_in_order() {
    let state = loaded();
    let request = batch(500);
    let answer = send(&state, post_json("/api/predict/", request.to_string())).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    let model = artifact();
    let expected: Vec<f64> = request["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            let values = model::Field::ALL.map(|f| row[f.name()].as_f64().unwrap());
            model.predict(&Trip::from_values(values).unwrap())
        })
        .collect();
    let got: Vec<f64> = answer.body["predictions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(got, expected);
    assert!(got.windows(2).any(|w| w[0] != w[1]), "rows should give different fares");
    assert_eq!(answer.body["out_of_area"], json!([]));
}

#[tokio::test]
async fn liveness_reports_model_and_deployment() {
    let answer = send(&loaded(), get("/")).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(
        answer.body,
        json!({"status": "ok", "model_loaded": true, "model_version": "test-model-7",
               "color": "blue", "version": "abc123"})
    );
    let ready = send(&loaded(), get("/ready")).await;
    assert_eq!(ready.status, StatusCode::OK);
    assert_eq!(ready.body["model_version"], "test-model-7");
}

#[tokio::test]
async fn without_a_model_only_liveness_and_metrics_answer_200() {
    let state = state_with(ModelSlot::load(None));
    let live = send(&state, get("/")).await;
    assert_eq!(live.status, StatusCode::OK);
    assert_eq!(live.body["model_loaded"], false);
    assert_eq!(live.body["model_version"], Value::Null);
    assert!(live.body["model_error"].as_str().unwrap().contains("MODEL_PATH"));

    let ready = send(&state, get("/ready")).await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(ready.body["detail"].as_str().unwrap().contains("no model"));

    let predict = send(&state, post_json("/api/predict/", documented_request().to_string())).await;
    assert_eq!(predict.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(predict.body["detail"].as_str().unwrap().contains("no model is loaded"));

    assert_eq!(send(&state, get("/metrics")).await.status, StatusCode::OK);
}

/// One bad-input case: the request, the expected status and, for 422,
/// the expected `(loc, type)` of every error.
struct Case {
    name: &'static str,
    request: Request<Body>,
    status: StatusCode,
    errors: Vec<(Value, &'static str)>,
}

fn case(name: &'static str, request: Request<Body>, status: u16) -> Case {
    Case { name, request, status: StatusCode::from_u16(status).unwrap(), errors: vec![] }
}

fn invalid(name: &'static str, body: impl Into<Body>, errors: Vec<(Value, &'static str)>) -> Case {
    Case {
        name,
        request: post_json("/api/predict/", body),
        status: StatusCode::UNPROCESSABLE_ENTITY,
        errors,
    }
}

fn loc_row(row: usize, field: &str) -> Value {
    json!(["body", "data", row, field])
}

#[tokio::test]
async fn bad_input_never_gets_a_5xx_and_names_every_error() {
    let state = loaded();
    let too_many = batch(Limits::default().max_batch_rows + 1).to_string();
    let too_big =
        format!(r#"{{"data":[],"pad":"{}"}}"#, "x".repeat(Limits::default().max_body_bytes));
    let cases = vec![
        invalid("malformed JSON", r#"{"data": [}"#, vec![(json!(["body"]), "json_invalid")]),
        invalid("empty body", "", vec![(json!(["body"]), "missing")]),
        invalid("not an object", "[1, 2]", vec![(json!(["body"]), "model_attributes_type")]),
        invalid("a bare number", "42", vec![(json!(["body"]), "model_attributes_type")]),
        invalid("missing data", r#"{"rows": []}"#, vec![(json!(["body", "data"]), "missing")]),
        invalid(
            "data not a list",
            r#"{"data": {"a": 1}}"#,
            vec![(json!(["body", "data"]), "list_type")],
        ),
        invalid("empty data", r#"{"data": []}"#, vec![(json!(["body", "data"]), "too_short")]),
        invalid(
            "row not an object",
            r#"{"data": [7]}"#,
            vec![(json!(["body", "data", 0]), "model_attributes_type")],
        ),
        invalid(
            "row missing a field",
            row_without("dropoff_longitude").to_string(),
            vec![(loc_row(1, "dropoff_longitude"), "missing")],
        ),
        invalid(
            "string for a number",
            row_with("pickup_latitude", json!("40.7")).to_string(),
            vec![(loc_row(1, "pickup_latitude"), "float_type")],
        ),
        invalid(
            "null for a number",
            row_with("dropoff_latitude", Value::Null).to_string(),
            vec![(loc_row(1, "dropoff_latitude"), "float_type")],
        ),
        invalid(
            "latitude above 90",
            row_with("pickup_latitude", json!(90.5)).to_string(),
            vec![(loc_row(1, "pickup_latitude"), "value_error.number.out_of_range")],
        ),
        invalid(
            "latitude below -90",
            row_with("dropoff_latitude", json!(-91)).to_string(),
            vec![(loc_row(1, "dropoff_latitude"), "value_error.number.out_of_range")],
        ),
        invalid(
            "longitude above 180",
            row_with("pickup_longitude", json!(180.01)).to_string(),
            vec![(loc_row(1, "pickup_longitude"), "value_error.number.out_of_range")],
        ),
        invalid(
            "longitude below -180",
            row_with("dropoff_longitude", json!(-500)).to_string(),
            vec![(loc_row(1, "dropoff_longitude"), "value_error.number.out_of_range")],
        ),
        invalid(
            "passenger_count negative",
            row_with("passenger_count", json!(-1)).to_string(),
            vec![(loc_row(1, "passenger_count"), "value_error.number.out_of_range")],
        ),
        invalid(
            "passenger_count fractional",
            row_with("passenger_count", json!(1.5)).to_string(),
            vec![(loc_row(1, "passenger_count"), "value_error.number.not_integer")],
        ),
        invalid(
            "passenger_count above 9",
            row_with("passenger_count", json!(10)).to_string(),
            vec![(loc_row(1, "passenger_count"), "value_error.number.out_of_range")],
        ),
        invalid(
            "passenger_count a string",
            row_with("passenger_count", json!("2")).to_string(),
            vec![(loc_row(1, "passenger_count"), "int_type")],
        ),
        invalid(
            "number too large for a float",
            r#"{"data":[{"pickup_latitude":1e999}]}"#,
            vec![(json!(["body"]), "json_invalid")],
        ),
        invalid("batch over the limit", too_many, vec![(json!(["body", "data"]), "too_long")]),
        case("body over the limit", post_json("/api/predict/", too_big), 413),
        case(
            "wrong content type",
            Request::post("/api/predict/")
                .header(header::CONTENT_TYPE, "text/plain")
                .body(Body::from(documented_request().to_string()))
                .unwrap(),
            415,
        ),
        case(
            "form content type",
            Request::post("/api/predict/")
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Body::from("data=1"))
                .unwrap(),
            415,
        ),
        case("unknown route", get("/api/predict/v2"), 404),
        case("unknown file of the docs", get("/docs/no-such-file.js"), 404),
        case("unknown route with POST", post_json("/predict", "{}"), 404),
        case("wrong method on predict", get("/api/predict/"), 405),
        case("wrong method on liveness", post_json("/", "{}"), 405),
    ];
    for c in cases {
        let answer = send(&state, c.request).await;
        assert_eq!(answer.status, c.status, "{}: {}", c.name, answer.text);
        assert!(
            answer.content_type.starts_with("application/json"),
            "{}: {}",
            c.name,
            answer.content_type
        );
        if c.status == StatusCode::UNPROCESSABLE_ENTITY {
            let got: Vec<(Value, String)> = answer.body["detail"]
                .as_array()
                .unwrap_or_else(|| panic!("{}: {}", c.name, answer.text))
                .iter()
                .map(|d| {
                    assert!(!d["msg"].as_str().unwrap().is_empty(), "{}: empty msg", c.name);
                    (d["loc"].clone(), d["type"].as_str().unwrap().to_owned())
                })
                .collect();
            let want: Vec<(Value, String)> =
                c.errors.into_iter().map(|(l, t)| (l, t.to_owned())).collect();
            assert_eq!(got, want, "{}", c.name);
        } else {
            assert!(answer.body["detail"].is_string(), "{}: {}", c.name, answer.text);
        }
    }
}

#[tokio::test]
async fn every_error_of_a_batch_is_reported() {
    let mut body = batch(4);
    body["data"][1]["pickup_latitude"] = json!(95);
    body["data"][3]["passenger_count"] = json!(12);
    body["data"][3]["dropoff_longitude"] = json!("west");
    let answer = send(&loaded(), post_json("/api/predict", body.to_string())).await;
    assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY);
    let locs: Vec<&Value> =
        answer.body["detail"].as_array().unwrap().iter().map(|d| &d["loc"]).collect();
    assert_eq!(
        locs,
        [
            &loc_row(1, "pickup_latitude"),
            &loc_row(3, "dropoff_longitude"),
            &loc_row(3, "passenger_count")
        ]
    );
    let msg = answer.body["detail"][0]["msg"].as_str().unwrap();
    assert!(msg.contains("-90") && msg.contains("90"), "{msg}");
}

#[tokio::test]
async fn missing_content_type_is_read_as_json_like_fastapi() {
    let request =
        Request::post("/api/predict/").body(Body::from(documented_request().to_string())).unwrap();
    assert_eq!(send(&loaded(), request).await.status, StatusCode::OK);
    let request = Request::post("/api/predict/")
        .header(header::CONTENT_TYPE, "application/json; charset=utf-8")
        .body(Body::from(documented_request().to_string()))
        .unwrap();
    assert_eq!(send(&loaded(), request).await.status, StatusCode::OK);
}

fn series_value(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series).and_then(|rest| rest.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no series {series} in:\n{metrics}"))
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_status_and_rows() {
    let state = loaded();
    send(&state, post_json("/api/predict/", batch(3).to_string())).await;
    send(&state, post_json("/api/predict/", documented_request().to_string())).await;
    send(&state, post_json("/api/predict/", "{")).await;
    send(&state, get("/no/such/page/123")).await;
    send(&state, get("/no/such/page/456")).await;
    let answer = send(&state, get("/metrics")).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(answer.content_type.starts_with("text/plain"), "{}", answer.content_type);
    let m = &answer.text;
    let ok = r#"{route="/api/predict/",method="POST",status="200"}"#;
    assert_eq!(series_value(m, &format!("http_requests_total{ok}")), 2.0);
    assert_eq!(
        series_value(m, r#"http_requests_total{route="/api/predict/",method="POST",status="422"}"#),
        1.0
    );
    // Unknown paths share one label value: no cardinality explosion.
    assert_eq!(
        series_value(m, r#"http_requests_total{route="unmatched",method="GET",status="404"}"#),
        2.0
    );
    assert!(!m.contains("/no/such/page"));
    assert_eq!(series_value(m, &format!("http_request_duration_seconds_count{ok}")), 2.0);
    // Both batch sizes are rendered from the start; only 200s are observed.
    let by_batch = |batch: &str| format!(r#"prediction_duration_seconds_count{{batch="{batch}"}}"#);
    assert_eq!(series_value(m, &by_batch("small")), 2.0);
    assert_eq!(series_value(m, &by_batch("large")), 0.0);
    assert!(m.contains(r#"prediction_duration_seconds_bucket{batch="small",le="0.0016"}"#), "{m}");
    assert!(m.contains("# HELP prediction_duration_seconds "), "{m}");
    assert_eq!(series_value(m, "prediction_budget_bytes"), (64u64 << 20) as f64);
    assert_eq!(series_value(m, "prediction_budget_used_bytes"), 0.0);
    assert_eq!(series_value(m, "predictions_waiting"), 0.0);
    assert_eq!(series_value(m, "predicted_rows_total"), 4.0);
    assert_eq!(series_value(m, "out_of_area_rows_total"), 1.0);
    assert_eq!(series_value(m, "model_loaded"), 1.0);
    assert!(
        m.contains(r#"model_info{model_version="test-model-7",feature_set="nyc-distance-v1""#),
        "{m}"
    );

    let empty = send(&state_with(ModelSlot::load(None)), get("/metrics")).await;
    assert_eq!(series_value(&empty.text, "model_loaded"), 0.0);
    assert!(!empty.text.contains("model_info{"));
}

#[tokio::test]
async fn docs_page_is_served_without_external_assets() {
    let state = loaded();
    let page = send(&state, get("/docs/")).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.content_type.starts_with("text/html"));
    assert!(!page.text.contains("http://") && !page.text.contains("https://"), "{}", page.text);
    for asset in
        ["/docs/swagger-ui-bundle.js", "/docs/swagger-ui.css", "/docs/swagger-initializer.js"]
    {
        let answer = send(&state, get(asset)).await;
        assert_eq!(answer.status, StatusCode::OK, "{asset}");
    }
    let init = send(&state, get("/docs/swagger-initializer.js")).await;
    assert!(init.text.contains("/openapi.json"), "{}", init.text);
}

#[tokio::test]
async fn every_route_gets_its_own_metrics_label() {
    let state = loaded();
    let routes =
        ["/", "/ready", "/model", "/metrics", "/openapi.json", "/docs", "/docs/", "/docs/{*rest}"];
    for path in [
        "/",
        "/ready",
        "/model",
        "/metrics",
        "/openapi.json",
        "/docs",
        "/docs/",
        "/docs/swagger-ui.css",
    ] {
        send(&state, get(path)).await;
    }
    send(&state, post_json("/api/predict", documented_request().to_string())).await;
    let m = send(&state, get("/metrics")).await.text;
    for route in routes.iter().chain(&["/api/predict"]) {
        assert!(m.contains(&format!(r#"http_requests_total{{route="{route}","#)), "{route}:\n{m}");
    }
    assert!(!m.contains(r#"route="other""#), "{m}");
}

/// A request body that never arrives, or that fails mid-way.
enum Stalled {
    Never,
    Broken,
}

impl http_body::Body for Stalled {
    type Data = axum::body::Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        match *self {
            Stalled::Never => std::task::Poll::Pending,
            Stalled::Broken => std::task::Poll::Ready(Some(Err(std::io::Error::other("reset")))),
        }
    }
}

#[tokio::test]
async fn a_body_past_the_body_timeout_gets_408_and_a_broken_body_400() {
    let limits = Limits { body_timeout: std::time::Duration::from_millis(50), ..Limits::default() };
    let state = AppState::new(loaded_slot(), Deployment::default(), limits);
    let answer = send(&state, post_json("/api/predict/", Body::new(Stalled::Never))).await;
    assert_eq!(answer.status, StatusCode::REQUEST_TIMEOUT, "{}", answer.text);
    assert!(answer.body["detail"].as_str().unwrap().contains("did not arrive"), "{}", answer.text);

    let answer = send(&state, post_json("/api/predict/", Body::new(Stalled::Broken))).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.text);
    assert!(answer.body["detail"].is_string());
}

#[tokio::test]
async fn a_batch_at_exactly_the_limit_is_predicted() {
    let rows = Limits::default().max_batch_rows;
    let state = loaded();
    let answer = send(&state, post_json("/api/predict/", batch(rows).to_string())).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", &answer.text[..200.min(answer.text.len())]);
    assert_eq!(answer.body["predictions"].as_array().unwrap().len(), rows);
    let m = send(&state, get("/metrics")).await.text;
    assert_eq!(series_value(&m, r#"prediction_duration_seconds_count{batch="large"}"#), 1.0);
    assert_eq!(series_value(&m, r#"prediction_duration_seconds_count{batch="small"}"#), 0.0);
    // A chunked body, charged at the size limit, gave everything back.
    assert_eq!(state.admission.used_bytes(), 0);
}

/// Mutated versions of valid bodies (bytes flipped, dropped, duplicated;
/// a fixed-seed generator, so failures reproduce) only ever get 200 or 422.
#[tokio::test]
async fn mutated_bodies_get_200_or_422_never_5xx() {
    let state = loaded();
    let seeds = [documented_request().to_string(), batch(3).to_string()];
    let mut rng: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move |n: usize| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        (rng % n as u64) as usize
    };
    let alphabet = b"{}[]\",:.-+eE0123456789 truefalsnl\\\x00\xff";
    for i in 0..600 {
        let mut body = seeds[i % seeds.len()].as_bytes().to_vec();
        for _ in 0..1 + next(4) {
            let at = next(body.len());
            match next(3) {
                0 => body[at] = alphabet[next(alphabet.len())],
                1 => {
                    body.remove(at);
                }
                _ => body.insert(at, body[at]),
            }
        }
        let answer = send(&state, post_json("/api/predict/", body.clone())).await;
        assert!(
            [StatusCode::OK, StatusCode::UNPROCESSABLE_ENTITY].contains(&answer.status),
            "{} for {:?}",
            answer.status,
            String::from_utf8_lossy(&body)
        );
        assert!(
            answer.body.is_object(),
            "non-JSON answer for {:?}",
            String::from_utf8_lossy(&body)
        );
    }
}

#[tokio::test]
async fn no_model_and_overload_are_different_503s_in_metrics() {
    let state = loaded();
    // The whole budget taken: the next predict request is shed, its body
    // unread (a small one never waits).
    let everything = Cost { bytes: state.admission.budget_bytes(), class: Class::Small };
    let held = state.admission.admit(everything).await.unwrap();
    let documented = documented_request().to_string();
    let request = Request::post("/api/predict/")
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_LENGTH, documented.len())
        .body(Body::from(documented))
        .unwrap();
    let shed = send(&state, request).await;
    assert_eq!(shed.status, StatusCode::SERVICE_UNAVAILABLE, "{}", shed.text);
    assert!(shed.body["detail"].as_str().unwrap().contains("too many"), "{}", shed.text);
    drop(held);
    let ok = send(&state, post_json("/api/predict/", documented_request().to_string())).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text);
    assert_only_503_kind(&state, "overloaded", "no_model").await;

    let empty = state_with(ModelSlot::load(None));
    send(&empty, post_json("/api/predict/", documented_request().to_string())).await;
    assert_only_503_kind(&empty, "no_model", "overloaded").await;
}

/// `/metrics` counts one predict 503 of `kind`, and none of `other`.
async fn assert_only_503_kind(state: &Arc<AppState>, kind: &str, other: &str) {
    let m = send(state, get("/metrics")).await.text;
    let series = |kind: &str| {
        format!(r#"http_request_errors_total{{route="/api/predict/",status="503",kind="{kind}"}}"#)
    };
    assert_eq!(series_value(&m, &series(kind)), 1.0);
    assert!(!m.contains(&series(other)), "{m}");
}

#[tokio::test]
async fn a_declared_length_over_the_limit_is_refused_before_the_body() {
    // The body never arrives: only the declared length can answer.
    let request = Request::post("/api/predict/")
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_LENGTH, (Limits::default().max_body_bytes + 1).to_string())
        .body(Body::new(Stalled::Never))
        .unwrap();
    let answer = send(&loaded(), request).await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", answer.text);
    assert!(answer.body["detail"].as_str().unwrap().contains("larger than the limit"));
}

#[tokio::test]
async fn model_route_serves_the_loaded_file_byte_for_byte() {
    let dir = TempDir::new("model-route");
    // Pretty JSON as the trainer writes it, with golden trips and a key this
    // build does not read: served as loaded, never rewritten.
    let text = artifact_with_golden().to_json().unwrap().replacen(
        '{',
        "{\n  \"x_note\": \"kept as loaded\",",
        1,
    );
    let path = write_file(&dir.0, "model.json", &text);
    let state = state_with(ModelSlot::load(Some(std::path::Path::new(&path))));
    let answer = send(&state, get("/model")).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    assert_eq!(answer.content_type, "application/json");
    assert_eq!(answer.text, text);
    let served = ModelArtifact::from_json(&answer.text).unwrap();
    let loaded = state.model.artifact().unwrap();
    assert_eq!(&served, loaded);
    assert_eq!(served.golden.len(), 12);
    assert_eq!(served.golden, loaded.golden);
}

/// What a deployment does with `/model`: read the artifact, send its golden
/// trips to predict, and require their fares back, exactly.
#[tokio::test]
async fn model_route_golden_trips_predict_their_fares() {
    let state = state_with(LoadedModel::from_artifact(&artifact_with_golden()).unwrap().into());
    let answer = send(&state, get("/model")).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    let served = ModelArtifact::from_json(&answer.text).unwrap();
    assert_eq!(&served, state.model.artifact().unwrap());
    assert_eq!(served.golden.len(), 12);
    let trips: Vec<Trip> = served.golden.iter().map(|g| g.trip).collect();
    let body = json!({ "data": trips });
    let predicted = send(&state, post_json("/api/predict/", body.to_string())).await;
    assert_eq!(predicted.status, StatusCode::OK, "{}", predicted.text);
    let fares: Vec<f64> = served.golden.iter().map(|g| g.fare).collect();
    assert_eq!(predicted.body["predictions"], json!(fares));
}

#[tokio::test]
async fn model_route_without_a_model_is_the_no_model_503() {
    let state = state_with(ModelSlot::load(None));
    let answer = send(&state, get("/model")).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE, "{}", answer.text);
    assert_eq!(answer.content_type, "application/json");
    let predict = send(&state, post_json("/api/predict/", documented_request().to_string())).await;
    assert_eq!(answer.body, predict.body);
    assert!(answer.body["detail"].as_str().unwrap().contains("no model is loaded"));
    let m = send(&state, get("/metrics")).await.text;
    let series = r#"http_request_errors_total{route="/model",status="503",kind="no_model"}"#;
    assert_eq!(series_value(&m, series), 1.0);
}
