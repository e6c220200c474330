//! The REST API under `/api/`: JWT bearer auth, owner-only access (another user's agent is
//! 404), thin handlers over [`crate::service::AgentService`].

use axum::{
    Json,
    extract::{FromRequestParts, Path, State, rejection::JsonRejection},
    http::{HeaderMap, StatusCode, request::Parts},
    response::{IntoResponse, Response},
};
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::{Value, json};
use slipway_proto::model::{AgentCommand, AgentRecord, agent_workflow_id};

use crate::{
    AppState,
    auth::{self, Claims},
    error::ApiError,
    service::{AgentService, Kind, ServiceError},
};

/// The authenticated caller.
pub struct User(pub Claims);

impl FromRequestParts<AppState> for User {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, Self::Rejection> {
        let header = parts.headers.get("authorization").and_then(|v| v.to_str().ok());
        let secret = app.settings.jwt_secret.expose_secret().as_bytes();
        let claims = auth::verify_bearer_pinned(header, secret, &app.settings.jwt_pins).map_err(|e| {
            match e {
                auth::AuthError::Missing => ApiError::unauthorized("UNAUTHENTICATED", e.to_string()),
                auth::AuthError::Invalid => ApiError::unauthorized("INVALID_TOKEN", e.to_string()),
            }
            .into_response()
        })?;
        // Each user's own budget: one user cannot starve the others or flood Temporal.
        app.limits.api.check(&claims.sub).map_err(|wait| crate::limits::too_many(wait, "requests"))?;
        Ok(User(claims))
    }
}

/// A failed API request as an HTTP answer: a refusal of the service layer (mapped by its kind),
/// or an error the HTTP layer already decided (answered as it is, status included: a Stripe
/// failure stays 502, never becomes a 400).
pub enum ApiFailure {
    /// From [`AgentService`] and the routes' own checks.
    Service(ServiceError),
    /// From the HTTP layer (`ApiError`), answered unchanged.
    Http(ApiError),
}

impl From<ServiceError> for ApiFailure {
    fn from(e: ServiceError) -> Self {
        Self::Service(e)
    }
}

impl From<ApiError> for ApiFailure {
    fn from(e: ApiError) -> Self {
        Self::Http(e)
    }
}

impl IntoResponse for ApiFailure {
    fn into_response(self) -> Response {
        let e = match self {
            Self::Http(e) => return e.into_response(),
            Self::Service(e) => e,
        };
        let status = match e.kind {
            Kind::Invalid => StatusCode::BAD_REQUEST,
            Kind::Forbidden => StatusCode::FORBIDDEN,
            Kind::PaymentRequired => StatusCode::PAYMENT_REQUIRED,
            Kind::NotFound => StatusCode::NOT_FOUND,
            Kind::Conflict => StatusCode::CONFLICT,
            Kind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        };
        tracing::warn!(code = %e.code, status = status.as_u16(), reason = %e.message, "api request refused");
        let mut body = json!({"code": e.code, "message": e.message});
        if !e.details.is_empty() {
            body["details"] = e.details.into_iter().map(|(k, v)| (k, Value::String(v))).collect();
        }
        let mut resp = (status, Json(body)).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            resp.extensions_mut().insert(crate::metrics::ErrorCode("TEMPORAL_UNAVAILABLE"));
            resp.headers_mut().insert("retry-after", axum::http::HeaderValue::from_static("5"));
        }
        resp
    }
}

type ApiResult = Result<Response, ApiFailure>;

fn agent_json(agent: &AgentRecord) -> Value {
    let mut v = serde_json::to_value(agent).unwrap_or(Value::Null);
    v["workflow_id"] = Value::String(agent_workflow_id(&agent.agent_id));
    v
}

fn json_body<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, ApiFailure> {
    body.map(|Json(b)| b).map_err(|e| {
        let code = if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            "PAYLOAD_TOO_LARGE"
        } else {
            "MALFORMED_PAYLOAD"
        };
        ApiFailure::Service(ServiceError {
            kind: Kind::Invalid,
            code: code.to_owned(),
            message: e.body_text(),
            details: Vec::new(),
        })
    })
}

/// `Idempotency-Key` if the client sent one (retries then dedupe in Temporal), else a fresh id.
fn request_id(headers: &HeaderMap, agent_id: &str, op: &str) -> String {
    match headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .filter(|k| !k.is_empty() && k.len() <= 255)
    {
        Some(key) => format!("api-{op}-{agent_id}-{key}"),
        None => format!("api-{op}-{agent_id}-{}", uuid::Uuid::new_v4().simple()),
    }
}

/// Body of `POST /api/agents`.
#[derive(Debug, Deserialize)]
pub struct CreateAgent {
    name: String,
    region: String,
}

/// `POST /api/agents`.
pub async fn create_agent(
    State(app): State<AppState>,
    User(user): User,
    body: Result<Json<CreateAgent>, JsonRejection>,
) -> ApiResult {
    let body = json_body(body)?;
    let agent = AgentService::new(app).create(&user, &body.name, &body.region).await?;
    Ok((StatusCode::CREATED, Json(agent_json(&agent))).into_response())
}

/// `GET /api/agents`.
pub async fn list_agents(State(app): State<AppState>, User(user): User) -> ApiResult {
    let agents = AgentService::new(app).list(&user, false).await?;
    Ok(Json(json!({"agents": agents})).into_response())
}

/// `GET /api/admin/agents`: every agent (admins only).
pub async fn admin_list_agents(State(app): State<AppState>, User(user): User) -> ApiResult {
    if !user.is_admin() {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "FORBIDDEN", "admin role required").into());
    }
    let agents = AgentService::new(app).list(&user, true).await?;
    Ok(Json(json!({"agents": agents})).into_response())
}

/// `GET /api/agents/{id}`.
pub async fn get_agent(State(app): State<AppState>, User(user): User, Path(id): Path<String>) -> ApiResult {
    let agent = AgentService::new(app).get(&user, &id).await?;
    Ok(Json(agent_json(&agent)).into_response())
}

/// Body of `POST /api/admin/github-links`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LinkRequest {
    account: String,
    user_id: String,
    customer_id: String,
}

/// `POST /api/admin/github-links`: bill a GitHub account's jobs to a customer (admins only).
pub async fn link_github(
    State(app): State<AppState>,
    User(user): User,
    body: Result<Json<LinkRequest>, JsonRejection>,
) -> ApiResult {
    if !user.is_admin() {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "FORBIDDEN", "admin role required").into());
    }
    let body = json_body(body)?;
    let mut details = Vec::new();
    if body.account.is_empty()
        || body.account.len() > 39
        || !body.account.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    {
        details.push(("account".to_owned(), "must be a GitHub login".to_owned()));
    }
    if crate::validate::user_id(&body.user_id).is_err() {
        details.push(("userId".to_owned(), "must be a user id".to_owned()));
    }
    if !body.customer_id.starts_with("cus_") {
        details.push(("customerId".to_owned(), "must be a Stripe customer id (cus_…)".to_owned()));
    }
    if !details.is_empty() {
        return Err(ApiFailure::Service(ServiceError {
            kind: Kind::Invalid,
            code: "INVALID_INPUT".to_owned(),
            message: "the link is invalid".to_owned(),
            details,
        }));
    }
    let link = slipway_proto::jobs::GitHubLink {
        account: body.account,
        user_id: body.user_id,
        customer_id: body.customer_id,
    };
    let link = app
        .gateway
        .link_github(link)
        .await
        .map_err(|e| ApiFailure::from(ApiError::unavailable(e.to_string())))?;
    Ok(Json(json!(link)).into_response())
}

/// `GET /api/admin/github-links` (admins only).
pub async fn list_github_links(State(app): State<AppState>, User(user): User) -> ApiResult {
    if !user.is_admin() {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "FORBIDDEN", "admin role required").into());
    }
    let links = app
        .gateway
        .github_links()
        .await
        .map_err(|e| ApiFailure::from(ApiError::unavailable(e.to_string())))?;
    Ok(Json(json!({"links": links})).into_response())
}

/// `GET /api/jobs/{owner}/{repo}/{issue}`: a coding job's status (admins, or the linked user).
pub async fn job_status(
    State(app): State<AppState>,
    User(user): User,
    Path((owner, repo, issue)): Path<(String, String, u64)>,
) -> ApiResult {
    let repo = format!("{owner}/{repo}");
    let id = slipway_proto::jobs::job_workflow_id(&repo, issue);
    let not_found =
        || ApiFailure::from(ApiError::not_found("JOB_NOT_FOUND", format!("no job for {repo}#{issue}")));
    let status = match app.gateway.job_status(&id).await {
        Ok(s) => s,
        Err(crate::temporal::GatewayError::NotFound | crate::temporal::GatewayError::Closed) => {
            return Err(not_found());
        }
        Err(e) => return Err(ApiError::unavailable(e.to_string()).into()),
    };
    if !user.is_admin() {
        let link = app
            .gateway
            .github_link(&owner)
            .await
            .map_err(|e| ApiFailure::from(ApiError::unavailable(e.to_string())))?;
        if link.is_none_or(|l| l.user_id != user.sub) {
            return Err(not_found());
        }
    }
    Ok(Json(json!(status)).into_response())
}

/// `POST /api/agents/{id}/provision`.
pub async fn provision_agent(
    State(app): State<AppState>,
    User(user): User,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    let accepted =
        AgentService::new(app).provision(&user, &id, request_id(&headers, &id, "provision")).await?;
    Ok((StatusCode::ACCEPTED, Json(agent_json(&accepted.agent))).into_response())
}

async fn command(
    app: AppState,
    user: Claims,
    id: String,
    headers: HeaderMap,
    command: AgentCommand,
) -> ApiResult {
    let rid = request_id(&headers, &id, command.as_str());
    let accepted = AgentService::new(app).command(&user, &id, command, rid).await?;
    let status = if accepted.in_progress { StatusCode::ACCEPTED } else { StatusCode::OK };
    Ok((status, Json(agent_json(&accepted.agent))).into_response())
}

/// `POST /api/agents/{id}/stop`.
pub async fn stop_agent(
    State(app): State<AppState>,
    User(user): User,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    command(app, user, id, headers, AgentCommand::Stop).await
}

/// `POST /api/agents/{id}/start`.
pub async fn start_agent(
    State(app): State<AppState>,
    User(user): User,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    command(app, user, id, headers, AgentCommand::Start).await
}

/// `POST /api/agents/{id}/destroy`.
pub async fn destroy_agent(
    State(app): State<AppState>,
    User(user): User,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    command(app, user, id, headers, AgentCommand::Destroy).await
}
