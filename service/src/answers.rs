//! What this replica answered, by request id, while a shadow runs: the
//! router asks for it (`X-Record-Answer: 1`, set only on mirrored
//! predictions and their live twins), so no other request pays anything.
//! The deployment controller reads the list (`GET /shadow/answers`) from
//! both colors and joins them by id. Bounded: the newest [`CAPACITY`]
//! answers are kept, the oldest dropped.

use std::collections::VecDeque;
use std::sync::{Mutex, OnceLock};

use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

/// The most answers kept (the controller judges at most as many).
pub const CAPACITY: usize = 10_000;
/// The longest request id kept (nginx's are 32 hex digits).
const MAX_ID: usize = 64;
/// The most fares kept of one answer: a shadow compares the common
/// small requests; a large batch is left out rather than held.
const MAX_FARES: usize = 100;

#[derive(Serialize)]
struct Answer<'a> {
    request_id: &'a str,
    fares: &'a [f64],
}

#[derive(Deserialize)]
struct Fares {
    predictions: Vec<f64>,
}

/// The kept answers, oldest first: (request id, fares).
type Ring = Mutex<VecDeque<(String, Vec<f64>)>>;

fn ring() -> &'static Ring {
    static RING: OnceLock<Ring> = OnceLock::new();
    RING.get_or_init(|| Mutex::new(VecDeque::new()))
}

/// The request id to record this request's answer under, when the router
/// asked for it.
pub fn wanted(headers: &HeaderMap) -> Option<String> {
    if headers.get("x-record-answer")?.as_bytes() != b"1" {
        return None;
    }
    let id = headers.get("x-request-id")?.to_str().ok()?;
    (!id.is_empty() && id.len() <= MAX_ID).then(|| id.to_owned())
}

/// Records the fares of `json` (this service's own answer) under `id`.
pub fn record(id: String, json: &[u8]) {
    let Ok(fares) = serde_json::from_slice::<Fares>(json) else { return };
    if fares.predictions.len() > MAX_FARES {
        return;
    }
    let Ok(mut ring) = ring().lock() else { return };
    if ring.len() >= CAPACITY {
        ring.pop_front();
    }
    ring.push_back((id, fares.predictions));
}

/// `GET /shadow/answers`: every answer kept, oldest first, as
/// `{"answers":[{"request_id":…,"fares":[…]}]}`.
pub async fn list() -> Response {
    let body = match ring().lock() {
        Ok(ring) => {
            let answers: Vec<Answer> =
                ring.iter().map(|(id, f)| Answer { request_id: id, fares: f }).collect();
            serde_json::to_vec(&serde_json::json!({ "answers": answers }))
        }
        Err(_) => serde_json::to_vec(&serde_json::json!({ "answers": [] })),
    };
    match body {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(_) => axum::http::StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_asked_for_answers_are_kept_and_the_ring_is_bounded() {
        let mut h = HeaderMap::new();
        h.insert("x-request-id", "abc".parse().unwrap());
        assert_eq!(wanted(&h), None);
        h.insert("x-record-answer", "1".parse().unwrap());
        assert_eq!(wanted(&h).as_deref(), Some("abc"));
        for i in 0..CAPACITY + 5 {
            record(format!("t{i}"), br#"{"predictions":[12.5],"model_version":"m"}"#);
        }
        let ring = ring().lock().unwrap();
        assert!(ring.len() <= CAPACITY);
        assert_eq!(
            ring.back().map(|(id, f)| (id.as_str(), f.clone())),
            Some(("t10004", vec![12.5]))
        );
    }
}
