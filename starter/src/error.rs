//! The one error type of the HTTP layer. Every error answer is JSON
//! `{"code": "...", "message": "..."}` with a stable, upper-case `code` that clients may match
//! on; messages are for people and may change. Internal details never reach the body.

use axum::{
    Json,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde_json::json;

/// The body of every 503: nothing about Temporal's internals reaches the caller.
pub const UNAVAILABLE_MESSAGE: &str = "the service is temporarily unavailable; retry later";

/// An error answer.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code.
    pub code: &'static str,
    /// Human-readable message.
    pub message: String,
}

impl ApiError {
    /// Any status and code.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into() }
    }

    /// 400.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 401.
    pub fn unauthorized(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, code, message)
    }

    /// 404.
    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }

    /// 409.
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    /// 422.
    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }

    /// 413, for bodies over the limit.
    pub fn too_large() -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE", "request body exceeds 1 MiB")
    }

    /// 503: Temporal did not accept the request; the sender should retry. `detail` (Temporal's
    /// own error text) goes to the log, never to the caller.
    pub fn unavailable(detail: impl std::fmt::Display) -> Self {
        tracing::error!(detail = %detail, "Temporal did not accept the request");
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "TEMPORAL_UNAVAILABLE", UNAVAILABLE_MESSAGE)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(code = self.code, reason = %self.message, "request failed");
        } else {
            tracing::warn!(code = self.code, reason = %self.message, status = self.status.as_u16(), "request refused");
        }
        let mut resp =
            (self.status, Json(json!({"code": self.code, "message": self.message}))).into_response();
        resp.extensions_mut().insert(crate::metrics::ErrorCode(self.code));
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            resp.headers_mut().insert("retry-after", axum::http::HeaderValue::from_static("5"));
        }
        resp
    }
}

/// Maps a raw-body extraction failure: over the limit → 413, anything else → 400.
pub fn body_rejection(rejection: axum::extract::rejection::BytesRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::too_large()
    } else {
        ApiError::bad_request("MALFORMED_PAYLOAD", "could not read the request body")
    }
}
