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
            ApiError::ModelUnavailable(_) | ApiError::Timeout(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        match self {
            ApiError::Validation(detail) => {
                (status, Json(ValidationErrorBody { detail })).into_response()
            }
            other => {
                let mut response =
                    (status, Json(MessageBody { detail: other.to_string() })).into_response();
                if matches!(other, ApiError::ModelUnavailable(_) | ApiError::Timeout(_)) {
                    // Tell well-behaved clients not to hammer an instance
                    // that cannot answer yet.
                    response
                        .headers_mut()
                        .insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
                }
                response
            }
        }
    }
}
