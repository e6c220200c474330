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
use slipway_proto::{
    jobs::GitHubLink,
    model::{AgentCommand, AgentRecord, agent_workflow_id},
};

use crate::{
    AppState,
    auth::{self, Claims},
    error::{ApiError, json_rejection},
    service::{AgentService, admin::AdminService},
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

type ApiResult = Result<Response, ApiError>;

fn agent_json(agent: &AgentRecord) -> Value {
    let mut v = serde_json::to_value(agent).unwrap_or(Value::Null);
    v["workflow_id"] = Value::String(agent_workflow_id(&agent.agent_id));
    v
}

fn json_body<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    body.map(|Json(b)| b).map_err(json_rejection)
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
        return Err(ApiError::admin_only());
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
        return Err(ApiError::admin_only());
    }
    let body = json_body(body)?;
    let link = GitHubLink { account: body.account, user_id: body.user_id, customer_id: body.customer_id };
    let link = AdminService::new(app).link_github(&user, link).await?;
    Ok(Json(json!(link)).into_response())
}

/// `GET /api/admin/github-links` (admins only).
pub async fn list_github_links(State(app): State<AppState>, User(user): User) -> ApiResult {
    let links = AdminService::new(app).github_links(&user).await?;
    Ok(Json(json!({"links": links})).into_response())
}

/// `GET /api/jobs/{owner}/{repo}/{issue}`: a coding job's status (admins, or the linked user).
pub async fn job_status(
    State(app): State<AppState>,
    User(user): User,
    Path((owner, repo, issue)): Path<(String, String, u64)>,
) -> ApiResult {
    let status = AdminService::new(app).job_status(&user, &owner, &repo, issue).await?;
    Ok(Json(json!(status)).into_response())
}

/// `POST /api/admin/jobs/{owner}/{repo}/{issue}/bill`: report a job's unbilled usage again
/// (202 with the status as it was; the job bills each usage once).
pub async fn bill_job(
    State(app): State<AppState>,
    User(user): User,
    Path((owner, repo, issue)): Path<(String, String, u64)>,
    headers: HeaderMap,
) -> ApiResult {
    let id = format!("{owner}/{repo}#{issue}");
    let status = AdminService::new(app)
        .bill_job(&user, &owner, &repo, issue, request_id(&headers, &id, "bill"))
        .await?;
    Ok((StatusCode::ACCEPTED, Json(json!(status))).into_response())
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
