//! Reading an HTTP answer from something the controller does not trust (a
//! color, Prometheus): its body within a cap on its bytes, and why a
//! request failed, in words.

use std::time::Duration;

/// How long one request to a color may take, answer included.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// Why a request failed, in words: reqwest's own text leaves out the
/// cause (a timeout, a refused connection), which is the point.
pub fn why(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return format!("no answer within {} s (timed out)", TIMEOUT.as_secs());
    }
    let mut out = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}

/// The answer's body, refused once it passes `cap` bytes (declared or
/// sent): only so much is ever held.
pub async fn body_within(mut response: reqwest::Response, cap: usize) -> Result<String, String> {
    let too_big = || format!("the answer is larger than {} KiB", cap >> 10);
    if response.content_length().is_some_and(|n| n > cap as u64) {
        return Err(too_big());
    }
    let mut bytes = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| why(&e))? {
        if bytes.len() + chunk.len() > cap {
            return Err(too_big());
        }
        bytes.extend_from_slice(&chunk);
    }
    String::from_utf8(bytes).map_err(|e| format!("the answer is not text: {e}"))
}
