//! `/openapi.json` tells the truth: every answer the service really gives
//! is documented for its route and status, and its body validates against
//! the documented schema.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, header};
use serde_json::{Value, json};
use service::{AppState, Deployment, Limits, LoadedModel, ModelSlot};

use common::{Answer, artifact_with_golden, batch, documented_request, loaded_slot, send};

fn post(path: &str, content_type: &str, body: String) -> Request<Body> {
    Request::post(path).header(header::CONTENT_TYPE, content_type).body(Body::from(body)).unwrap()
}

/// Checks one real answer against the document: the status is documented
/// for the operation, the content type matches, and a JSON body validates
/// against the schema.
fn check(doc: &Value, method: &str, path: &str, real: &Answer) {
    let what = format!("{method} {path} → {}", real.status);
    let operation = &doc["paths"][path][method];
    assert!(operation.is_object(), "{what}: operation not documented");
    let response = &operation["responses"][real.status.as_str()];
    assert!(response.is_object(), "{what}: status not documented");
    let content = response["content"].as_object().unwrap_or_else(|| panic!("{what}: no content"));
    let media = real.content_type.split(';').next().unwrap().trim();
    let documented = &content
        .get(media)
        .unwrap_or_else(|| panic!("{what}: {media} not documented, only {:?}", content.keys()))["schema"];
    let instance: Value = if media == "application/json" {
        serde_json::from_str(&real.text).unwrap()
    } else {
        Value::String(real.text.clone())
    };
    let mut schema = documented.clone();
    schema["components"] = doc["components"].clone();
    let validator = jsonschema::draft202012::new(&schema).unwrap();
    let errors: Vec<String> = validator.iter_errors(&instance).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{what}: {errors:?}\n{}", real.text);
}

fn document(state: &Arc<AppState>) -> Value {
    serde_json::to_value(service::openapi::document(&state.limits)).unwrap()
}

#[tokio::test]
async fn served_document_is_the_generated_one_and_lists_every_route() {
    let limits = Limits { max_batch_rows: 1234, ..Limits::default() };
    let state = AppState::new(loaded_slot(), Deployment::default(), limits);
    let served = send(&state, Request::get("/openapi.json").body(Body::empty()).unwrap()).await;
    assert_eq!(served.status, 200);
    let served: Value = serde_json::from_str(&served.text).unwrap();
    assert_eq!(served, document(&state));
    let paths: BTreeSet<&str> =
        served["paths"].as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        paths,
        BTreeSet::from(["/", "/ready", "/api/predict/", "/api/predict", "/model", "/metrics"])
    );
    // The configured batch limit is the documented one.
    let data = &served["components"]["schemas"]["PredictRequest"]["properties"]["data"];
    assert_eq!(data["maxItems"], 1234);
    assert_eq!(data["minItems"], 1);
}

#[tokio::test]
async fn every_real_answer_matches_the_document() {
    let with_model = AppState::new(
        loaded_slot(),
        Deployment { color: Some(bluegreen::Color::Green), version: Some("v1".into()) },
        Limits { max_body_bytes: 64 * 1024, max_batch_rows: 100, ..Limits::default() },
    );
    let without = AppState::new(ModelSlot::load(None), Deployment::default(), Limits::default());
    let doc = document(&with_model);
    let get = |path: &str| Request::get(path).body(Body::empty()).unwrap();

    let mut seen: BTreeSet<(String, String, u16)> = BTreeSet::new();
    let mut record = |method: &str, path: &str, real: Answer| {
        check(&doc, method, path, &real);
        seen.insert((method.to_owned(), path.to_owned(), real.status.as_u16()));
    };
    for state in [&with_model, &without] {
        record("get", "/", send(state, get("/")).await);
        record("get", "/ready", send(state, get("/ready")).await);
        record("get", "/model", send(state, get("/model")).await);
        record("get", "/metrics", send(state, get("/metrics")).await);
    }
    for path in ["/api/predict/", "/api/predict"] {
        let json = "application/json";
        for body in [documented_request(), batch(100)] {
            record("post", path, send(&with_model, post(path, json, body.to_string())).await);
        }
        for bad in ["{", "[]", r#"{"data":[]}"#, r#"{"data":[{"pickup_latitude":"x"}]}"#] {
            record("post", path, send(&with_model, post(path, json, bad.to_owned())).await);
        }
        record("post", path, send(&with_model, post(path, json, batch(101).to_string())).await);
        let huge = format!(r#"{{"data":[],"pad":"{}"}}"#, "x".repeat(70_000));
        record("post", path, send(&with_model, post(path, json, huge)).await);
        record("post", path, send(&with_model, post(path, "text/csv", "a,b".into())).await);
        let documented = documented_request().to_string();
        record("post", path, send(&without, post(path, json, documented)).await);
    }
    let expected: BTreeSet<(String, String, u16)> = [
        ("get", "/", 200),
        ("get", "/ready", 200),
        ("get", "/ready", 503),
        ("get", "/model", 200),
        ("get", "/model", 503),
        ("get", "/metrics", 200),
    ]
    .into_iter()
    .chain(
        ["/api/predict/", "/api/predict"]
            .into_iter()
            .flat_map(|p| [200, 413, 415, 422, 503].map(|s| ("post", p, s))),
    )
    .map(|(m, p, s)| (m.to_owned(), p.to_owned(), s))
    .collect();
    assert_eq!(seen, expected);
}

#[tokio::test]
async fn not_found_and_method_not_allowed_bodies_are_the_documented_message_body() {
    let state = AppState::new(ModelSlot::load(None), Deployment::default(), Limits::default());
    let doc = document(&state);
    let mut schema = json!({"$ref": "#/components/schemas/MessageBody"});
    schema["components"] = doc["components"].clone();
    let validator = jsonschema::draft202012::new(&schema).unwrap();
    for request in [
        Request::get("/nowhere").body(Body::empty()).unwrap(),
        Request::delete("/api/predict/").body(Body::empty()).unwrap(),
    ] {
        let real = send(&state, request).await;
        assert!([404, 405].contains(&real.status.as_u16()), "{}", real.status);
        let body: Value = serde_json::from_str(&real.text).unwrap();
        assert!(validator.is_valid(&body), "{}", real.text);
    }
}

#[tokio::test]
async fn the_schema_check_rejects_a_body_the_document_does_not_allow() {
    let state = AppState::new(ModelSlot::load(None), Deployment::default(), Limits::default());
    let doc = document(&state);
    let mut schema = json!({"$ref": "#/components/schemas/PredictResponse"});
    schema["components"] = doc["components"].clone();
    let validator = jsonschema::draft202012::new(&schema).unwrap();
    let good = json!({"predictions": [1.5], "model_version": "m", "out_of_area": []});
    assert!(validator.is_valid(&good));
    for bad in [
        json!({"predictions": "1.5", "model_version": "m", "out_of_area": []}),
        json!({"predictions": [1.5], "out_of_area": []}),
        json!({"predictions": [1.5], "model_version": "m", "out_of_area": [-1]}),
    ] {
        assert!(!validator.is_valid(&bad), "{bad}");
    }
}

/// Every key of a served artifact is a property its schema documents, at
/// every level (the schema mirrors `model::ModelArtifact`, so this catches
/// a field added to the artifact and not to the document), and the answer
/// validates against it.
#[tokio::test]
async fn the_model_schema_documents_every_key_of_the_artifact() {
    let slot = LoadedModel::from_artifact(&artifact_with_golden()).unwrap().into();
    let state = AppState::new(slot, Deployment::default(), Limits::default());
    let doc = document(&state);
    let real = send(&state, Request::get("/model").body(Body::empty()).unwrap()).await;
    check(&doc, "get", "/model", &real);
    let schema =
        &doc["paths"]["/model"]["get"]["responses"]["200"]["content"]["application/json"]["schema"];
    let mut undocumented = Vec::new();
    undocumented_keys(&doc, schema, &real.body, "$", &mut undocumented);
    assert!(undocumented.is_empty(), "undocumented: {undocumented:?}");
    assert!(!real.body["golden"].as_array().unwrap().is_empty());
    // The check bites.
    let mut extra = real.body.clone();
    extra["lineage"]["new_field"] = json!(1);
    extra["golden"][0]["trip"]["new_field"] = json!(1);
    undocumented_keys(&doc, schema, &extra, "$", &mut undocumented);
    undocumented.sort();
    assert_eq!(undocumented, ["$.golden[0].trip.new_field", "$.lineage.new_field"]);
}

/// Collects the paths of object keys in `value` that `schema` (resolving
/// `$ref`s into `doc`'s components, and any `oneOf` branch) does not name.
fn undocumented_keys(doc: &Value, schema: &Value, value: &Value, at: &str, out: &mut Vec<String>) {
    if let Some(name) =
        schema["$ref"].as_str().and_then(|r| r.strip_prefix("#/components/schemas/"))
    {
        return undocumented_keys(doc, &doc["components"]["schemas"][name], value, at, out);
    }
    for branch in ["oneOf", "anyOf", "allOf"] {
        for sub in schema[branch].as_array().into_iter().flatten() {
            undocumented_keys(doc, sub, value, at, out);
        }
    }
    match value {
        Value::Object(map) => {
            let Some(properties) = schema["properties"].as_object() else { return };
            for (key, item) in map {
                match properties.get(key) {
                    Some(sub) => undocumented_keys(doc, sub, item, &format!("{at}.{key}"), out),
                    None => out.push(format!("{at}.{key}")),
                }
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                undocumented_keys(doc, &schema["items"], item, &format!("{at}[{i}]"), out);
            }
        }
        _ => {}
    }
}
