//! The service layer: what the starter decides, between a verified request (an API call, a
//! webhook's intent) and Temporal. Both the REST API and the gRPC service call it, so ownership,
//! entitlement and caps are decided once; handlers only extract, call and answer.
//!
//! - [`agents`]: create, list, read, provision, stop / start / destroy agents.
//! - [`checkout`]: Checkout Sessions for a caller's draft agent (hold, Stripe, record).
//! - [`webhooks`]: applying a Stripe or GitHub intent (billing events, paid checkouts, coding
//!   jobs and the entitlement they need).
//! - [`admin`]: GitHub account links, job status, client stacks.
//! - [`events`]: an agent's live progress (status and saga step changes) for event streams.
//!
//! Errors are [`ServiceError`]: a [`Kind`] the surfaces map to an HTTP status or gRPC code, a
//! stable code and a message.

pub mod admin;
pub mod agents;
pub mod checkout;
pub mod events;
pub mod webhooks;

pub use agents::{Accepted, AgentService};

use crate::temporal::GatewayError;

/// The id Temporal dedupes a command by (`op` on `subject`): built from the client's
/// idempotency key when it sent a usable one (1–255 bytes), the same on REST and gRPC, so a
/// retry on either surface applies once; else a fresh id, prefixed by the `surface` it came in on.
pub fn request_id(key: Option<&str>, op: &str, subject: &str, surface: &str) -> String {
    match key.filter(|k| !k.is_empty() && k.len() <= 255) {
        Some(key) => format!("api-{op}-{subject}-{key}"),
        None => format!("{surface}-{op}-{subject}-{}", uuid::Uuid::new_v4().simple()),
    }
}

/// Kinds of failure, mapped to HTTP statuses and gRPC codes by the two surfaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// 400 / INVALID_ARGUMENT.
    Invalid,
    /// 422 / INVALID_ARGUMENT: well-formed, but unusable (a signed checkout's metadata).
    Unprocessable,
    /// 402 / FAILED_PRECONDITION: paying more (a seat, an unpaid invoice) would allow it.
    PaymentRequired,
    /// 403 / PERMISSION_DENIED.
    Forbidden,
    /// 404 / NOT_FOUND.
    NotFound,
    /// 409 / FAILED_PRECONDITION.
    Conflict,
    /// 502 / UNAVAILABLE: a provider (Stripe) failed.
    Upstream,
    /// 503 / UNAVAILABLE: Temporal did not accept.
    Unavailable,
    /// 429 / RESOURCE_EXHAUSTED: the caller holds too much already (open event streams);
    /// releasing some allows it again.
    Exhausted,
}

/// A refused or failed operation, with a stable code.
#[derive(Debug, Clone)]
pub struct ServiceError {
    /// Kind.
    pub kind: Kind,
    /// Stable code.
    pub code: String,
    /// Message for people.
    pub message: String,
    /// Field-by-field problems for `Invalid`.
    pub details: Vec<(String, String)>,
}

impl ServiceError {
    /// A failure of `kind`.
    pub fn new(kind: Kind, code: &str, message: impl Into<String>) -> Self {
        Self { kind, code: code.to_owned(), message: message.into(), details: Vec::new() }
    }

    /// Invalid input, field by field.
    pub fn invalid(message: &str, details: Vec<(String, String)>) -> Self {
        Self { details, ..Self::new(Kind::Invalid, "INVALID_INPUT", message) }
    }

    /// Another user's agent, or none: the same answer.
    pub fn agent_not_found(agent_id: &str) -> Self {
        Self::new(Kind::NotFound, "AGENT_NOT_FOUND", format!("no agent {agent_id}"))
    }

    /// For non-admins on admin operations.
    pub fn admin_only() -> Self {
        Self::new(Kind::Forbidden, "FORBIDDEN", "admin role required")
    }
}

impl From<GatewayError> for ServiceError {
    fn from(e: GatewayError) -> Self {
        match e {
            GatewayError::NotFound | GatewayError::Closed => {
                Self::new(Kind::NotFound, "NOT_FOUND", "not found")
            }
            GatewayError::Unavailable(m) => {
                tracing::error!(detail = %m, "Temporal did not accept the request");
                Self::new(Kind::Unavailable, "TEMPORAL_UNAVAILABLE", crate::error::UNAVAILABLE_MESSAGE)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::request_id;

    #[test]
    fn a_keyed_request_has_one_id_on_both_surfaces_an_unkeyed_one_a_fresh_id_each_time() {
        let rest = request_id(Some("k-1"), "stop", "ag-1", "api");
        assert_eq!(rest, "api-stop-ag-1-k-1");
        assert_eq!(request_id(Some("k-1"), "stop", "ag-1", "grpc"), rest);
        let long = "k".repeat(256);
        for unusable in [None, Some(""), Some(long.as_str())] {
            let (a, b) =
                (request_id(unusable, "stop", "ag-1", "grpc"), request_id(unusable, "stop", "ag-1", "grpc"));
            assert!(a.starts_with("grpc-stop-ag-1-") && a != b, "{a} {b}");
        }
    }
}
