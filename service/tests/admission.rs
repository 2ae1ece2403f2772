//! Admission by cost, on the real binary over loopback sockets: small
//! requests are answered while large ones hold the budget, large ones wait
//! in line and are shed past its bounds, and every byte of the budget
//! comes back however a request ends. Every wait is bounded; no assertion
//! is on a time.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::thread;

use service::Limits;
use service::admission::{Cost, body_cost};
use service::limits::SMALL_BODY_BYTES;

use common::{
    RawResponse, Service, TempDir, artifact, batch, documented_request, read_one, write_file,
};

const USED: &str = "prediction_budget_used_bytes";
const WAITING: &str = "predictions_waiting";
const IN_FLIGHT: &str = "predictions_in_flight";
const SHED: &str =
    r#"http_request_errors_total{route="/api/predict/",status="503",kind="overloaded"}"#;
const ROWS: usize = Limits::DEFAULT.max_batch_rows;

fn with_model(tag: &str, extra: &[String]) -> (Service, TempDir) {
    let dir = TempDir::new(tag);
    let path = write_file(&dir.0, "model.json", &artifact().to_json().unwrap());
    let mut args = vec!["--model", path.as_str()];
    args.extend(extra.iter().map(String::as_str));
    (Service::start(&args), dir)
}

fn flags(pairs: &[(&str, String)]) -> Vec<String> {
    pairs.iter().flat_map(|(name, value)| [format!("--{name}"), value.clone()]).collect()
}

fn post_head(len: usize) -> String {
    format!(
        "POST /api/predict/ HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: {len}\r\n\r\n"
    )
}

/// A request whose head and first bytes are sent: admitted (or in line)
/// until the rest comes.
fn open_request(service: &Service, body: &str) -> TcpStream {
    let mut stream = service.connect();
    stream.write_all(post_head(body.len()).as_bytes()).unwrap();
    stream.write_all(&body.as_bytes()[..100]).unwrap();
    stream
}

/// Sends the rest of an [`open_request`] and reads its answer, on a thread
/// (a request in line is not read until admitted).
fn finish(mut stream: TcpStream, body: &str) -> thread::JoinHandle<RawResponse> {
    let rest = body.as_bytes()[100..].to_vec();
    thread::spawn(move || {
        stream.write_all(&rest).unwrap();
        read_one(&mut stream).unwrap()
    })
}

fn assert_shed(response: &RawResponse) {
    assert_eq!(response.status, 503, "{response:?}");
    assert!(
        response.json()["detail"].as_str().is_some_and(|d| d.contains("retry")),
        "{response:?}"
    );
    assert_eq!(response.header("retry-after"), Some("1"));
    assert_eq!(response.header("connection"), Some("close"));
}

#[test]
fn small_requests_are_answered_while_large_ones_hold_the_budget() {
    let large = batch(3_000).to_string();
    let cost = body_cost(large.len(), ROWS);
    let reserve = 1_000_000;
    // Room for two large requests; a third waits in line.
    let (service, _dir) = with_model(
        "small-first",
        &flags(&[
            ("max-body-bytes", large.len().to_string()),
            ("prediction-budget-bytes", (2 * cost + reserve).to_string()),
            ("small-reserve-bytes", reserve.to_string()),
            ("admission-wait-secs", "120".to_owned()),
        ]),
    );
    let open: Vec<TcpStream> = (0..3).map(|_| open_request(&service, &large)).collect();
    service.wait_for_metric(WAITING, 1.0);
    service.wait_for_metric(USED, (2 * cost) as f64);

    let small = batch(100);
    assert!(small.to_string().len() <= SMALL_BODY_BYTES);
    for _ in 0..20 {
        let (status, body) = service.post("/api/predict/", &documented_request());
        assert_eq!(status, 200, "{body}");
        let (status, body) = service.post("/api/predict/", &small);
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["predictions"].as_array().unwrap().len(), 100);
    }
    assert_eq!(service.metric(WAITING), 1.0, "the large one still waits");

    let answers: Vec<_> = open.into_iter().map(|stream| finish(stream, &large)).collect();
    for answer in answers {
        let response = answer.join().unwrap();
        assert_eq!(response.status, 200, "{response:?}");
        assert_eq!(response.json()["predictions"].as_array().unwrap().len(), 3_000);
    }
    service.wait_for_metric(USED, 0.0);
    service.wait_for_metric(IN_FLIGHT, 0.0);
    assert_eq!(service.metric(WAITING), 0.0);
    assert_eq!(service.metric(SHED), 0.0);
    // Every 200 is in the latency histogram, under its batch size.
    assert_eq!(service.metric(r#"prediction_duration_seconds_count{batch="small"}"#), 40.0);
    assert_eq!(service.metric(r#"prediction_duration_seconds_count{batch="large"}"#), 3.0);
    let (_, text) = service.try_request("GET", "/metrics", None).unwrap();
    for batch in ["small", "large"] {
        let bucket = format!(r#"prediction_duration_seconds_bucket{{batch="{batch}",le="+Inf"}}"#);
        assert!(text.contains(&bucket), "{bucket} not in:\n{text}");
    }
}

#[test]
fn large_requests_past_the_wait_or_the_line_are_shed_with_retry_after() {
    let large = batch(3_000).to_string();
    let cost = body_cost(large.len(), ROWS);
    // Room for one large request, one place in line, a short wait.
    let (service, _dir) = with_model(
        "shed",
        &flags(&[
            ("max-body-bytes", large.len().to_string()),
            ("prediction-budget-bytes", cost.to_string()),
            ("small-reserve-bytes", "0".to_owned()),
            ("max-waiting-predictions", "1".to_owned()),
            ("admission-wait-secs", "2".to_owned()),
        ]),
    );
    let holder = open_request(&service, &large);
    service.wait_for_metric(USED, cost as f64);
    let waiter = {
        let mut stream = service.connect();
        stream.write_all(post_head(large.len()).as_bytes()).unwrap();
        thread::spawn(move || read_one(&mut stream).unwrap())
    };
    service.wait_for_metric(WAITING, 1.0);
    // The line is full: shed at once, its body unread.
    let mut stream = service.connect();
    stream.write_all(post_head(large.len()).as_bytes()).unwrap();
    assert_shed(&read_one(&mut stream).unwrap());
    // The one in line is shed when its wait is over.
    assert_shed(&waiter.join().unwrap());
    assert_eq!(service.metric(WAITING), 0.0);
    assert_eq!(service.metric(SHED), 2.0);
    // Liveness is not a prediction: it answers whatever the load.
    assert_eq!(service.get("/").0, 200);

    let response = finish(holder, &large).join().unwrap();
    assert_eq!(response.status, 200, "{response:?}");
    service.wait_for_metric(USED, 0.0);
}

#[test]
fn the_budget_comes_back_when_clients_leave_mid_body_or_in_line() {
    let (service, _dir) = with_model("leave", &flags(&[("admission-wait-secs", "3".to_owned())]));
    let limits = Limits::DEFAULT;

    // A declared body, half sent, then the client goes.
    let body = batch(3_000).to_string();
    let stream = open_request(&service, &body);
    service.wait_for_metric(USED, body_cost(body.len(), ROWS) as f64);
    drop(stream);
    service.wait_for_metric(USED, 0.0);

    // A chunked body is charged as one at the size limit while it arrives.
    let mut chunked = service.connect();
    let head = "POST /api/predict/ HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
                Transfer-Encoding: chunked\r\n\r\n";
    chunked.write_all(head.as_bytes()).unwrap();
    chunked.write_all(b"5\r\n{\"dat\r\n").unwrap();
    service.wait_for_metric(USED, Cost::largest(&limits).bytes as f64);
    drop(chunked);
    service.wait_for_metric(USED, 0.0);

    // Large requests at the size limit fill the large share; one more
    // waits in line, and its client leaves. Nothing reads a connection
    // whose body is not wanted yet, so the request keeps its place until
    // its wait is over (shed, to nobody), holding no budget meanwhile.
    let fit = limits.large_budget_bytes() / Cost::largest(&limits).bytes;
    let max = limits.max_body_bytes;
    let mut holders: Vec<TcpStream> = Vec::new();
    for _ in 0..fit {
        let mut stream = service.connect();
        stream.write_all(post_head(max).as_bytes()).unwrap();
        holders.push(stream);
    }
    service.wait_for_metric(USED, (fit * Cost::largest(&limits).bytes) as f64);
    let mut waiter = service.connect();
    waiter.write_all(post_head(max).as_bytes()).unwrap();
    service.wait_for_metric(WAITING, 1.0);
    drop(waiter);
    service.wait_for_metric(WAITING, 0.0);
    assert_eq!(service.metric(SHED), 1.0);
    drop(holders);
    service.wait_for_metric(USED, 0.0);
    service.wait_for_metric(IN_FLIGHT, 0.0);
}

#[test]
fn the_budget_comes_back_when_requests_time_out() {
    // A timeout far shorter than pricing 10,000 rows takes.
    let (service, _dir) =
        with_model("timeout", &flags(&[("request-timeout-secs", "0.001".to_owned())]));
    let body = batch(10_000).to_string();
    let request = format!("{}{body}", post_head(body.len()));
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let (request, addr) = (request.clone(), service.addr());
            thread::spawn(move || {
                let mut stream = common::connect(addr);
                stream.write_all(request.as_bytes()).unwrap();
                read_one(&mut stream).unwrap()
            })
        })
        .collect();
    for handle in handles {
        let response = handle.join().unwrap();
        assert_eq!(response.status, 503, "{response:?}");
        assert!(response.json()["detail"].as_str().unwrap().contains("timed out"));
    }
    // Abandoned work keeps its share until it stops, then gives all back.
    service.wait_for_metric(IN_FLIGHT, 0.0);
    service.wait_for_metric(USED, 0.0);
    let timeouts =
        r#"http_request_errors_total{route="/api/predict/",status="503",kind="timeout"}"#;
    assert_eq!(service.metric(timeouts), 4.0);
    assert_eq!(service.metric(r#"prediction_duration_seconds_count{batch="large"}"#), 0.0);
}
