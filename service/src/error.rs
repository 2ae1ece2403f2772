//! The one error type handlers return, and its FastAPI-shaped bodies:
//! `{"detail": "message"}` for request-level errors and
//! `{"detail": [{"loc": [...], "msg": ..., "type": ...}]}` for validation.

use axum::Json;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// One step of the path to an offending value: an object key or a list index.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(untagged)]
pub enum LocItem {
    Key(&'static str),
    Index(usize),
}

/// One validation error, as FastAPI reports it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Where the offending value is, from the body down:
    /// `["body", "data", 3, "pickup_latitude"]`.
    pub loc: Vec<LocItem>,
    /// What is wrong with it, for people.
    pub msg: String,
    /// A stable machine-readable error kind (`missing`, `float_type`,
    /// `too_long`, `value_error.number.out_of_range`, …).
    #[serde(rename = "type")]
    pub kind: String,
}

impl ErrorDetail {
    pub fn new(loc: Vec<LocItem>, msg: impl Into<String>, kind: impl Into<String>) -> Self {
        ErrorDetail { loc, msg: msg.into(), kind: kind.into() }
    }
}

/// 422 body: every problem found in the request.
#[derive(Debug, Serialize, ToSchema)]
pub struct ValidationErrorBody {
    pub detail: Vec<ErrorDetail>,
}

/// Body of every other error: one message.
#[derive(Debug, Serialize, ToSchema)]
pub struct MessageBody {
    pub detail: String,
}

/// Everything a request can fail with; each maps to one status.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("request validation failed ({} errors)", .0.len())]
    Validation(Vec<ErrorDetail>),
    #[error("unsupported content type {0:?}: send application/json")]
    UnsupportedMediaType(String),
    #[error("request body is larger than the limit of {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("cannot read the request body: {0}")]
    BadBody(String),
    #[error("no model is loaded, so no prediction can be made: {0}")]
    ModelUnavailable(String),
    #[error("no route for {0}")]
    NotFound(String),
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    #[error("request timed out after {0:.1} s")]
    Timeout(f64),
    #[error("the request body did not arrive within {0:.1} s")]
    BodyTimeout(f64),
    #[error("too many predictions in flight; retry shortly")]
    Overloaded,
    #[error("internal error")]
    Internal,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::BadBody(_) => StatusCode::BAD_REQUEST,
            ApiError::ModelUnavailable(_) | ApiError::Timeout(_) | ApiError::Overloaded => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The `kind` label of this error in `/metrics`: statuses alone do not
    /// tell a missing model from an overloaded instance.
    pub fn kind(&self) -> &'static str {
        match self {
            ApiError::Validation(_) => "validation",
            ApiError::UnsupportedMediaType(_) => "unsupported_media_type",
            ApiError::PayloadTooLarge { .. } => "payload_too_large",
            ApiError::BadBody(_) => "bad_body",
            ApiError::ModelUnavailable(_) => "no_model",
            ApiError::NotFound(_) => "not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::Timeout(_) => "timeout",
            ApiError::BodyTimeout(_) => "body_timeout",
            ApiError::Overloaded => "overloaded",
            ApiError::Internal => "internal",
        }
    }

    /// Errors answered before (all of) the body was read: the connection
    /// is closed after the answer, so unread bytes are never taken for the
    /// next request and hyper need not drain them.
    fn closes_connection(&self) -> bool {
        matches!(
            self,
            ApiError::PayloadTooLarge { .. }
                | ApiError::BodyTimeout(_)
                | ApiError::Overloaded
                | ApiError::BadBody(_)
        )
    }

    /// Seconds a client should wait before retrying, for the errors that
    /// pass with time.
    fn retry_after(&self) -> Option<&'static str> {
        match self {
            ApiError::ModelUnavailable(_) | ApiError::Timeout(_) => Some("5"),
            ApiError::Overloaded => Some("1"),
            _ => None,
        }
    }
}

/// The kind of error a response carries, for the metrics middleware.
#[derive(Debug, Clone, Copy)]
pub struct ErrorKind(pub &'static str);

/// The FastAPI-shaped body of an error made below the router (by hyper,
/// while parsing a request head), as complete response bytes.
pub fn protocol_error_response(status: StatusCode, detail: &str) -> Vec<u8> {
    let body = serde_json::to_vec(&MessageBody { detail: detail.to_owned() })
        .unwrap_or_else(|_| b"{}".to_vec());
    let mut out = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        status.as_str(),
        status.canonical_reason().unwrap_or(""),
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(&body);
    out
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let kind = ErrorKind(self.kind());
        let retry_after = self.retry_after();
        let close = self.closes_connection();
        let mut response = match self {
            ApiError::Validation(detail) => {
                (status, Json(ValidationErrorBody { detail })).into_response()
            }
            other => (status, Json(MessageBody { detail: other.to_string() })).into_response(),
        };
        let headers = response.headers_mut();
        if let Some(seconds) = retry_after {
            // Tell well-behaved clients not to hammer an instance that
            // cannot answer yet.
            headers.insert(header::RETRY_AFTER, header::HeaderValue::from_static(seconds));
        }
        if close {
            headers.insert(header::CONNECTION, header::HeaderValue::from_static("close"));
        }
        response.extensions_mut().insert(kind);
        response
    }
}
