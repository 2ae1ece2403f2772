//! Black-box tests of the real binary on a real socket: model loading
//! outcomes, `service healthcheck`, and graceful shutdown.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use model::Trip;
use serde_json::{Value, json};

use common::{Service, TempDir, artifact, batch, free_port, healthcheck, request_head, write_file};

#[test]
fn without_a_model_it_is_alive_but_not_ready() {
    let service = Service::start_with_env(&[], &[("COLOR", "green"), ("VERSION", "sha-42")]);
    let (status, body) = service.get("/");
    assert_eq!(status, 200);
    assert_eq!(body["model_loaded"], false);
    assert_eq!(body["color"], "green");
    assert_eq!(body["version"], "sha-42");
    assert!(body["model_error"].as_str().unwrap().contains("no model configured"));
    assert_eq!(service.get("/ready").0, 503);
    assert_eq!(service.post("/api/predict/", &common::documented_request()).0, 503);
    assert!(!healthcheck(service.port));
}

#[test]
fn with_a_model_file_it_predicts_like_the_model_crate() {
    let dir = TempDir::new("model");
    let path = write_file(&dir.0, "model.json", &artifact().to_json().unwrap());
    let service = Service::start(&["--model", &path]);
    let (status, body) = service.get("/");
    assert_eq!(status, 200);
    assert_eq!(body["model_loaded"], true);
    assert_eq!(body["model_version"], "test-model-7");
    assert!(body.get("model_error").is_none());
    assert_eq!(service.get("/ready").0, 200);
    assert!(healthcheck(service.port));

    let (status, body) = service.post("/api/predict/", &common::documented_request());
    assert_eq!(status, 200, "{body}");
    let trip = Trip::from_values([70.15, -40.22, 70.83, -1.0, 2.0]).unwrap();
    assert_eq!(body["predictions"], json!([artifact().predict(&trip)]));

    let (status, body) = service.post("/api/predict", &batch(50));
    assert_eq!(status, 200);
    assert_eq!(body["predictions"].as_array().unwrap().len(), 50);
}

/// `GET /model` over a real socket: the file, byte for byte; 503 without one.
#[test]
fn model_route_serves_the_model_file_over_a_socket() {
    let dir = TempDir::new("model-route");
    let text = common::artifact_with_golden().to_json().unwrap();
    let path = write_file(&dir.0, "model.json", &text);
    let service = Service::start(&["--model", &path]);
    let (status, body) = service.try_request("GET", "/model", None).unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, text);

    let without = Service::start(&[]);
    let (status, body) = without.get("/model");
    assert_eq!(status, 503, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("no model is loaded"), "{body}");
}

#[test]
fn model_path_can_come_from_the_environment() {
    let dir = TempDir::new("env");
    let path = write_file(&dir.0, "m.json", &artifact().to_json().unwrap());
    let service = Service::start_with_env(&[], &[("MODEL_PATH", &path)]);
    assert_eq!(service.get("/ready").0, 200);
}

#[test]
fn unusable_model_files_are_reported_on_liveness() {
    let dir = TempDir::new("bad");
    let good = artifact().to_json().unwrap();
    let cases = [
        ("missing", format!("{}/nope.json", dir.0.display()), "cannot read model file"),
        (
            "corrupt",
            write_file(&dir.0, "corrupt.json", "{\"schema_version\": 1, \"coeff"),
            "not valid JSON",
        ),
        (
            "wrong schema",
            write_file(
                &dir.0,
                "v9.json",
                &good.replacen("\"schema_version\": 1", "\"schema_version\": 9", 1),
            ),
            "schema version 9",
        ),
        ("a directory", dir.0.display().to_string(), "cannot read model file"),
    ];
    for (name, path, reason) in cases {
        let service = Service::start(&["--model", &path]);
        let (status, body) = service.get("/");
        assert_eq!(status, 200, "{name}");
        assert_eq!(body["model_loaded"], false, "{name}");
        let error = body["model_error"].as_str().unwrap();
        assert!(error.contains(reason), "{name}: {error}");
        assert!(error.contains(&path), "{name}: the error names the file: {error}");
        let (status, ready) = service.get("/ready");
        assert_eq!(status, 503, "{name}");
        assert!(ready["detail"].as_str().unwrap().contains(reason), "{name}: {ready}");
        assert!(!healthcheck(service.port), "{name}");
    }
}

#[test]
fn healthcheck_fails_when_nothing_listens() {
    assert!(!healthcheck(free_port()));
}

/// Opens a predict request and sends all of it but the last bytes, so the
/// request is certainly in flight until [`finish`] sends them.
fn start_request(port: u16, body: &str) -> TcpStream {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let head = request_head("POST", "/api/predict/", Some(body.len()));
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(&body.as_bytes()[..body.len() - 10]).unwrap();
    stream
}

fn finish(mut stream: TcpStream, body: &str) -> (u16, Value) {
    stream.write_all(&body.as_bytes()[body.len() - 10..]).unwrap();
    let (status, text) = common::read_response(&mut stream).unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

#[test]
fn sigterm_finishes_requests_in_flight_then_exits_zero() {
    let dir = TempDir::new("sigterm");
    let path = write_file(&dir.0, "model.json", &artifact().to_json().unwrap());
    let mut service = Service::start(&["--model", &path, "--shutdown-timeout-secs", "10"]);
    let port = service.port;
    let body = Arc::new(batch(2_000).to_string());
    let clients = 8;
    let opened = Arc::new(Barrier::new(clients + 1));
    let signalled = Arc::new(Barrier::new(clients + 1));
    let handles: Vec<_> = (0..clients)
        .map(|_| {
            let (body, opened, signalled) = (body.clone(), opened.clone(), signalled.clone());
            thread::spawn(move || {
                let stream = start_request(port, &body);
                opened.wait();
                signalled.wait();
                finish(stream, &body)
            })
        })
        .collect();
    opened.wait();
    // Every request is in the application (waiting for its last bytes)
    // before the signal.
    service.wait_for_metric("predictions_in_flight", clients as f64);
    service.signal("TERM");
    // It soon stops accepting connections…
    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(("127.0.0.1", port)).is_ok() {
        assert!(Instant::now() < deadline, "still accepting connections 5 s after SIGTERM");
        thread::sleep(Duration::from_millis(20));
    }
    // …and still finishes what it started.
    signalled.wait();
    for handle in handles {
        let (status, body) = handle.join().unwrap();
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["predictions"].as_array().unwrap().len(), 2_000);
    }
    let status = service.wait_exit(Duration::from_secs(10)).expect("did not exit after SIGTERM");
    assert!(status.success(), "exit status {status}");
}

#[test]
fn sigterm_exits_within_the_deadline_even_if_a_request_never_completes() {
    let dir = TempDir::new("stuck");
    let path = write_file(&dir.0, "model.json", &artifact().to_json().unwrap());
    let mut service = Service::start(&["--model", &path, "--shutdown-timeout-secs", "1"]);
    let body = batch(10).to_string();
    // A client that never sends the end of its body (the body timer, 10 s,
    // is far past the drain deadline).
    let mut stuck = start_request(service.port, &body);
    service.wait_for_metric("predictions_in_flight", 1.0);
    service.signal("TERM");
    let status = service.wait_exit(Duration::from_secs(5)).expect("did not exit by the deadline");
    assert!(!status.success(), "a forced exit is reported: {status}");
    // The deadline cut the request: it was never answered.
    let answer = common::read_response(&mut stuck);
    assert!(answer.is_err(), "the stuck request was answered: {answer:?}");
}

#[test]
fn sigint_also_stops_it_cleanly() {
    let mut service = Service::start(&[]);
    service.signal("INT");
    let status = service.wait_exit(Duration::from_secs(5)).expect("did not exit after SIGINT");
    assert!(status.success(), "exit status {status}");
}
