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
use slipway_proto::{
    jobs::{GitHubLink, JobStatus},
    model::AgentCommand,
};
use utoipa::ToSchema;

use crate::{
    AppState,
    auth::{self, Claims},
    error::{ApiError, json_rejection},
    service::{AgentService, admin::AdminService},
    views::{AgentList, AgentView, LinkList},
};

/// The authenticated caller.
pub struct User(pub Claims);

impl FromRequestParts<AppState> for User {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, Self::Rejection> {
        let header = parts.headers.get("authorization").and_then(|v| v.to_str().ok());
        let secret = app.settings.jwt_secret.expose_secret().as_bytes();
        let claims = auth::verify_bearer_pinned(header, secret, &app.settings.jwt_pins)
            .map_err(|e| ApiError::unauthorized(e.code(), e.to_string()).into_response())?;
        // Each user's own budget: one user cannot starve the others or flood Temporal.
        app.limits.api.check(&claims.sub).map_err(|wait| crate::limits::too_many(wait, "requests"))?;
        Ok(User(claims))
    }
}

type ApiResult = Result<Response, ApiError>;

fn json_body<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    body.map(|Json(b)| b).map_err(json_rejection)
}

/// The command's request id, from `Idempotency-Key` if the client sent one
/// ([`crate::service::request_id`]).
fn request_id(headers: &HeaderMap, subject: &str, op: &str) -> String {
    let key = headers.get("idempotency-key").and_then(|v| v.to_str().ok());
    crate::service::request_id(key, op, subject, "api")
}

/// Body of `POST /api/agents`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateAgent {
    /// Display name: 1-64 printable characters (trimmed).
    #[schema(min_length = 1, max_length = 64, example = "build-box")]
    name: String,
    /// Hetzner location (checked by the service, so a wrong one is `INVALID_INPUT` naming it).
    #[schema(value_type = Region, example = "fsn1")]
    region: String,
}

/// Hetzner locations an agent can live in ([`crate::validate::REGIONS`]; a test holds the two
/// together).
#[derive(Debug, ToSchema)]
#[serde(rename_all = "lowercase")]
#[allow(missing_docs)]
pub enum Region {
    Fsn1,
    Nbg1,
    Hel1,
    Ash,
    Hil,
    Sin,
}

/// `POST /api/agents`.
#[utoipa::path(
    post,
    path = "/api/agents",
    tag = "agents",
    operation_id = "createAgent",
    summary = "Create a draft agent (nothing is paid or provisioned yet)",
    request_body = CreateAgent,
    responses((status = 201, description = "Created", body = AgentView)),
    security(("bearer" = [])),
)]
pub async fn create_agent(
    State(app): State<AppState>,
    User(user): User,
    body: Result<Json<CreateAgent>, JsonRejection>,
) -> ApiResult {
    let body = json_body(body)?;
    let agent = AgentService::new(app).create(&user, &body.name, &body.region).await?;
    Ok((StatusCode::CREATED, Json(AgentView::from(agent))).into_response())
}

/// `GET /api/agents`.
#[utoipa::path(
    get,
    path = "/api/agents",
    tag = "agents",
    operation_id = "listAgents",
    summary = "The caller's agents",
    responses((status = 200, description = "Sorted by id", body = AgentList)),
    security(("bearer" = [])),
)]
pub async fn list_agents(State(app): State<AppState>, User(user): User) -> ApiResult {
    let agents = AgentService::new(app).list(&user, false).await?;
    Ok(Json(AgentList { agents }).into_response())
}

/// `GET /api/admin/agents`: every agent (admins only).
#[utoipa::path(
    get,
    path = "/api/admin/agents",
    tag = "admin",
    operation_id = "adminListAgents",
    summary = "Every user's agents",
    responses((status = 200, description = "Sorted by id", body = AgentList)),
    security(("bearer" = [])),
)]
pub async fn admin_list_agents(State(app): State<AppState>, User(user): User) -> ApiResult {
    if !user.is_admin() {
        return Err(ApiError::admin_only());
    }
    let agents = AgentService::new(app).list(&user, true).await?;
    Ok(Json(AgentList { agents }).into_response())
}

/// `GET /api/agents/{id}`.
#[utoipa::path(
    get,
    path = "/api/agents/{id}",
    tag = "agents",
    operation_id = "getAgent",
    summary = "One agent: status, server, tailnet device, audit trail",
    params(("id" = String, Path, description = "Agent id")),
    responses((status = 200, description = "The agent", body = AgentView)),
    security(("bearer" = [])),
)]
pub async fn get_agent(State(app): State<AppState>, User(user): User, Path(id): Path<String>) -> ApiResult {
    let agent = AgentService::new(app).get(&user, &id).await?;
    Ok(Json(AgentView::from(agent)).into_response())
}

/// Body of `POST /api/admin/github-links`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LinkRequest {
    /// GitHub login of the App installation's account.
    #[schema(example = "acme")]
    account: String,
    /// Slipway user the jobs belong to.
    user_id: String,
    /// Stripe customer billed for them.
    #[schema(example = "cus_123")]
    customer_id: String,
}

/// `POST /api/admin/github-links`: bill a GitHub account's jobs to a customer (admins only).
#[utoipa::path(
    post,
    path = "/api/admin/github-links",
    tag = "admin",
    operation_id = "linkGitHubAccount",
    summary = "Bill a GitHub account's coding jobs to a Stripe customer",
    request_body = LinkRequest,
    responses((status = 200, description = "The link", body = GitHubLink)),
    security(("bearer" = [])),
)]
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
    Ok(Json(link).into_response())
}

/// `GET /api/admin/github-links` (admins only).
#[utoipa::path(
    get,
    path = "/api/admin/github-links",
    tag = "admin",
    operation_id = "listGitHubLinks",
    summary = "Every GitHub account link",
    responses((status = 200, description = "The links", body = LinkList)),
    security(("bearer" = [])),
)]
pub async fn list_github_links(State(app): State<AppState>, User(user): User) -> ApiResult {
    let links = AdminService::new(app).github_links(&user).await?;
    Ok(Json(LinkList { links }).into_response())
}

/// The issue number of a job path, or 400 `INVALID_PATH` (axum's own rejection is plain text).
fn issue_number(issue: &str) -> Result<u64, ApiError> {
    issue
        .parse()
        .map_err(|_| ApiError::bad_request("INVALID_PATH", format!("{issue:?} is not an issue number")))
}

/// `GET /api/jobs/{owner}/{repo}/{issue}`: a coding job's status (admins, or the linked user).
#[utoipa::path(
    get,
    path = "/api/jobs/{owner}/{repo}/{issue}",
    tag = "admin",
    operation_id = "getJobStatus",
    summary = "A coding job's status (admins, or the user its account is linked to)",
    params(
        ("owner" = String, Path, description = "Repository owner"),
        ("repo" = String, Path, description = "Repository name"),
        ("issue" = u64, Path, description = "Issue number"),
    ),
    responses((status = 200, description = "The job", body = JobStatus)),
    security(("bearer" = [])),
)]
pub async fn job_status(
    State(app): State<AppState>,
    User(user): User,
    Path((owner, repo, issue)): Path<(String, String, String)>,
) -> ApiResult {
    let issue = issue_number(&issue)?;
    let status = AdminService::new(app).job_status(&user, &owner, &repo, issue).await?;
    Ok(Json(status).into_response())
}

/// `POST /api/admin/jobs/{owner}/{repo}/{issue}/bill`: report a job's unbilled usage again
/// (202 with the status as it was; the job bills each usage once).
#[utoipa::path(
    post,
    path = "/api/admin/jobs/{owner}/{repo}/{issue}/bill",
    tag = "admin",
    operation_id = "billJobAgain",
    summary = "Report a job's usage Stripe refused again (each usage is billed once)",
    params(
        ("owner" = String, Path, description = "Repository owner"),
        ("repo" = String, Path, description = "Repository name"),
        ("issue" = u64, Path, description = "Issue number"),
        ("Idempotency-Key" = Option<String>, Header, description = "Retries with the same key apply once"),
    ),
    responses((status = 202, description = "Accepted; the status as it was", body = JobStatus)),
    security(("bearer" = [])),
)]
pub async fn bill_job(
    State(app): State<AppState>,
    User(user): User,
    Path((owner, repo, issue)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> ApiResult {
    let issue = issue_number(&issue)?;
    let id = format!("{owner}/{repo}#{issue}");
    let status = AdminService::new(app)
        .bill_job(&user, &owner, &repo, issue, request_id(&headers, &id, "bill"))
        .await?;
    Ok((StatusCode::ACCEPTED, Json(status)).into_response())
}

/// `POST /api/agents/{id}/provision`.
#[utoipa::path(
    post,
    path = "/api/agents/{id}/provision",
    tag = "agents",
    operation_id = "provisionAgent",
    summary = "Provision a draft or failed agent on a free seat of the caller's subscription",
    params(
        ("id" = String, Path, description = "Agent id"),
        ("Idempotency-Key" = Option<String>, Header, description = "Retries with the same key apply once"),
    ),
    responses((status = 202, description = "Provisioning started (follow it with the events stream)", body = AgentView)),
    security(("bearer" = [])),
)]
pub async fn provision_agent(
    State(app): State<AppState>,
    User(user): User,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    let accepted =
        AgentService::new(app).provision(&user, &id, request_id(&headers, &id, "provision")).await?;
    Ok((StatusCode::ACCEPTED, Json(AgentView::from(accepted.agent))).into_response())
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
    Ok((status, Json(AgentView::from(accepted.agent))).into_response())
}

/// `POST /api/agents/{id}/stop`.
#[utoipa::path(
    post,
    path = "/api/agents/{id}/stop",
    tag = "agents",
    operation_id = "stopAgent",
    summary = "Shut the agent down gracefully, then power it off (active agents)",
    params(
        ("id" = String, Path, description = "Agent id"),
        ("Idempotency-Key" = Option<String>, Header, description = "Retries with the same key apply once"),
    ),
    responses(
        (status = 200, description = "Already done: nothing more happens", body = AgentView),
        (status = 202, description = "Accepted; the agent gets there asynchronously", body = AgentView),
    ),
    security(("bearer" = [])),
)]
pub async fn stop_agent(
    State(app): State<AppState>,
    User(user): User,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    command(app, user, id, headers, AgentCommand::Stop).await
}

/// `POST /api/agents/{id}/start`.
#[utoipa::path(
    post,
    path = "/api/agents/{id}/start",
    tag = "agents",
    operation_id = "startAgent",
    summary = "Power a stopped agent on",
    params(
        ("id" = String, Path, description = "Agent id"),
        ("Idempotency-Key" = Option<String>, Header, description = "Retries with the same key apply once"),
    ),
    responses(
        (status = 200, description = "Already done: nothing more happens", body = AgentView),
        (status = 202, description = "Accepted; the agent gets there asynchronously", body = AgentView),
    ),
    security(("bearer" = [])),
)]
pub async fn start_agent(
    State(app): State<AppState>,
    User(user): User,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    command(app, user, id, headers, AgentCommand::Start).await
}

/// `POST /api/agents/{id}/destroy`.
#[utoipa::path(
    post,
    path = "/api/agents/{id}/destroy",
    tag = "agents",
    operation_id = "destroyAgent",
    summary = "Delete the agent's server, tailnet device and keys; its workflow closes",
    params(
        ("id" = String, Path, description = "Agent id"),
        ("Idempotency-Key" = Option<String>, Header, description = "Retries with the same key apply once"),
    ),
    responses(
        (status = 200, description = "Already done: nothing more happens", body = AgentView),
        (status = 202, description = "Accepted; the agent gets there asynchronously", body = AgentView),
    ),
    security(("bearer" = [])),
)]
pub async fn destroy_agent(
    State(app): State<AppState>,
    User(user): User,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    command(app, user, id, headers, AgentCommand::Destroy).await
}
