//! `POST /api/provisioning` and `GET /api/provisioning/{clientId}` (admins only): a new client's
//! whole stack, provisioned by the `ClientStack` workflow.

use axum::{
    Json,
    body::Bytes,
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde_json::Value;
use slipway_proto::stack::{ClientStackRequest, Tier};
use utoipa::ToSchema;

use crate::{
    AppState,
    error::ApiError,
    routes::api::User,
    service::{ServiceError, admin::AdminService},
    views::{StackAccepted, StackView},
};

/// Body of `POST /api/provisioning`, as the document describes it; [`validate`] checks it field
/// by field, so every problem is reported at once (`INVALID_INPUT` with `details`).
#[derive(Debug, ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
pub struct StackRequest {
    /// The client's id: 1-50 characters of a-z, 0-9 and '-'.
    #[schema(pattern = "^[a-z0-9-]{1,50}$", example = "acme")]
    client_id: String,
    /// Display name: 1-100 printable characters.
    #[schema(min_length = 1, max_length = 100, example = "Acme Inc.")]
    client_name: String,
    /// The client's organisation email.
    #[schema(format = Email, max_length = 254, example = "ops@acme.io")]
    org_email: String,
    /// Tier.
    tier: Tier,
}

/// Validates the request field by field. Pure: unit-tested below.
pub fn validate(body: &Value, requested_by: &str) -> Result<ClientStackRequest, Vec<(String, String)>> {
    let mut details = Vec::new();
    let text = |k: &str| body.get(k).and_then(Value::as_str).map(str::trim).unwrap_or_default().to_owned();
    let client_id = text("clientId");
    if client_id.is_empty()
        || client_id.len() > 50
        || !client_id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        details.push(("clientId".into(), "must be 1-50 characters of a-z, 0-9 and '-'".into()));
    }
    let client_name = text("clientName");
    if client_name.is_empty()
        || client_name.chars().count() > 100
        || client_name.chars().any(char::is_control)
    {
        details.push(("clientName".into(), "must be 1-100 printable characters".into()));
    }
    let org_email = text("orgEmail");
    if !valid_email(&org_email) {
        details.push(("orgEmail".into(), "must be a valid email address".into()));
    }
    let tier = match text("tier").as_str() {
        "starter" => Some(Tier::Starter),
        "professional" => Some(Tier::Professional),
        "enterprise" => Some(Tier::Enterprise),
        _ => {
            details.push(("tier".into(), "must be one of starter, professional, enterprise".into()));
            None
        }
    };
    match tier {
        Some(tier) if details.is_empty() => Ok(ClientStackRequest {
            client_id,
            client_name,
            org_email,
            tier,
            requested_by: requested_by.to_owned(),
        }),
        _ => Err(details),
    }
}

/// A practical address check: one `@`, a non-empty local part, a dotted domain, no spaces.
fn valid_email(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else { return false };
    !local.is_empty()
        && s.len() <= 254
        && !domain.contains('@')
        && domain.split('.').count() >= 2
        && domain
            .split('.')
            .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
        && !s.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// `POST /api/provisioning`.
#[utoipa::path(
    post,
    path = "/api/provisioning",
    tag = "admin",
    operation_id = "startClientStack",
    summary = "Provision a client's stack: Supabase, schema, GitHub repository, Vercel, n8n",
    description = "The same client id again returns the running or finished stack (`existing: true`).",
    request_body = StackRequest,
    responses((status = 202, description = "Started, or found", body = StackAccepted)),
    security(("bearer" = [])),
)]
pub async fn start(State(app): State<AppState>, User(user): User, body: Bytes) -> Result<Response, ApiError> {
    if !user.is_admin() {
        return Err(ApiError::admin_only());
    }
    let body: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request("MALFORMED_PAYLOAD", format!("not JSON: {e}")))?;
    let req = validate(&body, &format!("admin:{}", user.sub))
        .map_err(|details| ServiceError::invalid("the stack request is invalid", details))?;
    let client_id = req.client_id.clone();
    let (workflow_id, existing) = AdminService::new(app).start_stack(&user, req).await?;
    Ok((StatusCode::ACCEPTED, Json(StackAccepted { client_id, workflow_id, existing })).into_response())
}

/// `GET /api/provisioning/{clientId}`.
#[utoipa::path(
    get,
    path = "/api/provisioning/{client_id}",
    tag = "admin",
    operation_id = "getClientStack",
    summary = "A client stack's steps, resources and state",
    params(("client_id" = String, Path, description = "The client's id")),
    responses((status = 200, description = "The stack", body = StackView)),
    security(("bearer" = [])),
)]
pub async fn status(
    State(app): State<AppState>,
    User(user): User,
    Path(client_id): Path<String>,
) -> Result<Response, ApiError> {
    let stack = AdminService::new(app).stack(&user, &client_id).await?;
    Ok(Json(StackView::from(stack)).into_response())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn valid_requests_pass() {
        let req = validate(
            &json!({"clientId": "acme-1", "clientName": "Acme", "orgEmail": "ops@acme.io", "tier": "starter"}),
            "admin:ops",
        )
        .unwrap();
        assert_eq!(req.client_id, "acme-1");
        assert_eq!(req.tier, Tier::Starter);
    }

    #[test]
    fn every_field_gets_its_own_error() {
        let details = validate(
            &json!({"clientId": "Acme_1", "clientName": "", "orgEmail": "not-an-email", "tier": "gold"}),
            "admin:ops",
        )
        .unwrap_err();
        let fields: Vec<_> = details.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(fields, ["clientId", "clientName", "orgEmail", "tier"]);
        assert!(validate(&json!({}), "a").unwrap_err().len() == 4);
    }

    #[test]
    fn email_checks() {
        for ok in ["a@b.co", "first.last+tag@sub.example.com"] {
            assert!(valid_email(ok), "{ok}");
        }
        for bad in ["", "a@", "@b.co", "a@b", "a b@c.de", "a@b..co", "a@@b.co"] {
            assert!(!valid_email(bad), "{bad}");
        }
    }
}
