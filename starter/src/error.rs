//! The one error type of the HTTP layer. Every error answer is JSON
//! `{"code": "...", "message": "...", "details"?: {field: problem}}` with a stable, upper-case
//! `code` that clients may match on; messages are for people and may change. Internal details
//! never reach the body.
//!
//! Lower layers keep their own typed errors ([`crate::service::ServiceError`],
//! [`crate::temporal::GatewayError`]); each converts into [`ApiError`] in exactly one place here,
//! so a status decided below (a 502 for a provider failure, a 503 for Temporal) is never lost on
//! the way up.

use std::borrow::Cow;

use axum::{
    Json,
    http::{HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};

use crate::{
    service::{Kind, ServiceError},
    temporal::GatewayError,
};

/// The body of every 503: nothing about Temporal's internals reaches the caller.
pub const UNAVAILABLE_MESSAGE: &str = "the service is temporarily unavailable; retry later";

/// Seconds a 503 asks the sender to wait.
const RETRY_AFTER_SECS: &str = "5";

/// An error answer.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code.
    pub code: Cow<'static, str>,
    /// Human-readable message.
    pub message: String,
    /// Field-by-field problems (invalid input).
    pub details: Vec<(String, String)>,
}

impl ApiError {
    /// Any status and code.
    pub fn new(status: StatusCode, code: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Self {
        Self { status, code: code.into(), message: message.into(), details: Vec::new() }
    }

    /// 400.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 401.
    pub fn unauthorized(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, code, message)
    }

    /// 403 for non-admins on admin routes.
    pub fn admin_only() -> Self {
        Self::new(StatusCode::FORBIDDEN, "FORBIDDEN", "admin role required")
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

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        let status = match e.kind {
            Kind::Invalid => StatusCode::BAD_REQUEST,
            Kind::Unprocessable => StatusCode::UNPROCESSABLE_ENTITY,
            Kind::PaymentRequired => StatusCode::PAYMENT_REQUIRED,
            Kind::Forbidden => StatusCode::FORBIDDEN,
            Kind::NotFound => StatusCode::NOT_FOUND,
            Kind::Conflict => StatusCode::CONFLICT,
            Kind::Upstream => StatusCode::BAD_GATEWAY,
            Kind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Kind::Exhausted => StatusCode::TOO_MANY_REQUESTS,
        };
        Self { status, code: e.code.into(), message: e.message, details: e.details }
    }
}

impl From<GatewayError> for ApiError {
    fn from(e: GatewayError) -> Self {
        ServiceError::from(e).into()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(code = %self.code, reason = %self.message, "request failed");
        } else {
            tracing::warn!(code = %self.code, reason = %self.message, status = self.status.as_u16(), "request refused");
        }
        let mut body = json!({"code": self.code, "message": self.message});
        if !self.details.is_empty() {
            body["details"] = self.details.into_iter().map(|(k, v)| (k, Value::String(v))).collect();
        }
        let mut resp = (self.status, Json(body)).into_response();
        resp.extensions_mut().insert(crate::metrics::ErrorCode(self.code));
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            resp.headers_mut().insert("retry-after", HeaderValue::from_static(RETRY_AFTER_SECS));
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

/// Maps a JSON-body extraction failure: over the limit → 413, anything else → 400.
pub fn json_rejection(rejection: axum::extract::rejection::JsonRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::too_large()
    } else {
        ApiError::bad_request("MALFORMED_PAYLOAD", rejection.body_text())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_decided_below_survives_the_conversion() {
        let upstream = ServiceError::new(Kind::Upstream, "STRIPE_ERROR", "Stripe failed");
        assert_eq!(ApiError::from(upstream).status, StatusCode::BAD_GATEWAY);
        let unavailable = ApiError::from(GatewayError::Unavailable("connection refused".into()));
        assert_eq!(unavailable.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(unavailable.message, UNAVAILABLE_MESSAGE, "Temporal's text stays in the log");
        let resp = unavailable.into_response();
        assert_eq!(resp.headers().get("retry-after").unwrap(), RETRY_AFTER_SECS);
    }
}
