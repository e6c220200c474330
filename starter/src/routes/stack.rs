//! `POST /api/provisioning` and `GET /api/provisioning/{clientId}` (admins only): a new client's
//! whole stack, provisioned by the `ClientStack` workflow.

use axum::{
    Json,
    body::Bytes,
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};
use slipway_proto::stack::{ClientStackRequest, Tier};

use crate::{
    AppState,
    error::ApiError,
    routes::api::User,
    service::{ServiceError, admin::AdminService},
};

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
    let body = json!({"clientId": client_id, "workflowId": workflow_id, "existing": existing});
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

/// `GET /api/provisioning/{clientId}`.
pub async fn status(
    State(app): State<AppState>,
    User(user): User,
    Path(client_id): Path<String>,
) -> Result<Response, ApiError> {
    let stack = AdminService::new(app).stack(&user, &client_id).await?;
    let mut v = serde_json::to_value(&stack).unwrap_or(Value::Null);
    v["workflow_id"] = Value::String(slipway_proto::stack::stack_workflow_id(&client_id));
    Ok(Json(v).into_response())
}

#[cfg(test)]
mod tests {
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
