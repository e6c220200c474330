//! The gRPC control API (`slipway.v1.AgentControl`): the REST operations over the same
//! [`AgentService`], so auth, ownership (another user's agent is `NOT_FOUND`), gating and codes
//! are identical. Refusals carry the stable code as the status message prefix (`CODE: reason`).

use secrecy::ExposeSecret;
use std::pin::Pin;

use futures::{Stream, StreamExt};
use slipway_proto::{
    control::{
        self, Agent, AgentCommandRequest, BillJobAgainRequest, CheckoutSession, ClientStack,
        ClientStackAccepted, CreateAgentRequest, CreateCheckoutSessionRequest, GetAgentRequest,
        GetClientStackRequest, JobRef, ListAgentsRequest, ListAgentsResponse, ListGitHubLinksRequest,
        ListGitHubLinksResponse, ProvisionClientStackRequest, ProvisioningStep, WatchAgentEventsRequest,
        agent_control_server::AgentControl,
    },
    jobs::{GitHubLink, JobStatus},
    model::{AgentCommand, AgentRecord, AgentSummary, StepProgress, agent_workflow_id},
};
use tonic::{Request, Response, Status};

use crate::{
    AppState, auth,
    auth::Claims,
    service::{
        AgentService, Kind, ServiceError,
        admin::AdminService,
        checkout::{CheckoutRequest, CheckoutService},
    },
    temporal::GatewayError,
    views,
};

/// Service implementation.
#[derive(Clone)]
pub struct AgentControlService {
    app: AppState,
}

impl AgentControlService {
    /// New service.
    pub fn new(app: AppState) -> Self {
        Self { app }
    }

    fn admin<T>(&self, request: &Request<T>) -> Result<Claims, Status> {
        let claims = self.claims(request)?;
        if claims.is_admin() { Ok(claims) } else { Err(status(ServiceError::admin_only())) }
    }

    /// `ListAgents` and `AdminListAgents`: the caller's agents, or every user's (`all`).
    async fn list(&self, claims: &Claims, all: bool) -> Result<Response<ListAgentsResponse>, Status> {
        let summaries = AgentService::new(self.app.clone()).list(claims, all).await.map_err(status)?;
        Ok(Response::new(ListAgentsResponse { agents: summaries.into_iter().map(summary).collect() }))
    }

    /// The caller, under the same budgets as the REST API: a failed authentication counts
    /// against the client's address, an authenticated call against its user (both answer
    /// `RESOURCE_EXHAUSTED` past the budget).
    fn claims<T>(&self, request: &Request<T>) -> Result<Claims, Status> {
        let header = request.metadata().get("authorization").and_then(|v| v.to_str().ok());
        let claims = auth::verify_bearer_pinned(
            header,
            self.app.settings.jwt_secret.expose_secret().as_bytes(),
            &self.app.settings.jwt_pins,
        )
        .map_err(|e| {
            let over = request
                .remote_addr()
                .is_some_and(|addr| self.app.limits.auth_failures.check(&addr.ip().to_string()).is_err());
            if over {
                Status::resource_exhausted("RATE_LIMITED: too many failed authentications from this address")
            } else {
                Status::unauthenticated(format!("{}: {e}", e.code()))
            }
        })?;
        self.app
            .limits
            .api
            .check(&claims.sub)
            .map_err(|_| Status::resource_exhausted("RATE_LIMITED: too many requests; retry later"))?;
        Ok(claims)
    }

    async fn view(&self, record: AgentRecord) -> Result<Agent, Status> {
        let steps = match (&record.provisioning_workflow_id, &record.provisioning_run_id) {
            (Some(wf), Some(run)) => match self.app.gateway.provisioning_progress(wf, run).await {
                Ok(p) => p.steps,
                Err(GatewayError::NotFound) => Vec::new(),
                Err(e) => return Err(status(e.into())),
            },
            _ => Vec::new(),
        };
        Ok(Agent {
            workflow_id: agent_workflow_id(&record.agent_id),
            agent_id: record.agent_id,
            user_id: record.user_id,
            region: record.region,
            status: record.status.as_str().to_owned(),
            server_id: record.server.as_ref().map(|s| s.id.to_string()).unwrap_or_default(),
            server_ipv4: record.server.as_ref().and_then(|s| s.ipv4.clone()).unwrap_or_default(),
            tailscale_device_id: record
                .tailscale
                .as_ref()
                .and_then(|t| t.device_id.clone())
                .unwrap_or_default(),
            failure_reason: record.failure_reason.unwrap_or_default(),
            provisioning_workflow_id: record.provisioning_workflow_id.unwrap_or_default(),
            steps: steps
                .into_iter()
                .map(|s| ProvisioningStep {
                    name: s.name,
                    state: s.state.as_str().to_owned(),
                    detail: s.detail,
                })
                .collect(),
            name: record.name,
        })
    }

    async fn command(
        &self,
        request: Request<AgentCommandRequest>,
        command: AgentCommand,
    ) -> Result<Response<Agent>, Status> {
        let claims = self.claims(&request)?;
        let req = request.into_inner();
        let rid = request_id(&req, command.as_str());
        let accepted = AgentService::new(self.app.clone())
            .command(&claims, &req.agent_id, command, rid)
            .await
            .map_err(status)?;
        Ok(Response::new(self.view(accepted.agent).await?))
    }
}

/// The list view of an agent.
fn summary(s: AgentSummary) -> Agent {
    Agent {
        workflow_id: agent_workflow_id(&s.agent_id),
        agent_id: s.agent_id,
        user_id: s.user_id,
        region: s.region,
        status: s.status,
        name: s.name,
        ..Agent::default()
    }
}

fn steps(steps: Vec<StepProgress>) -> Vec<ProvisioningStep> {
    steps
        .into_iter()
        .map(|s| ProvisioningStep { name: s.name, state: s.state.as_str().to_owned(), detail: s.detail })
        .collect()
}

fn link(l: GitHubLink) -> control::GitHubLink {
    control::GitHubLink { account: l.account, user_id: l.user_id, customer_id: l.customer_id }
}

fn job(s: JobStatus) -> control::JobStatus {
    control::JobStatus {
        repo: s.repo,
        issue_number: s.issue_number,
        state: s.state.as_str().to_owned(),
        history: s.history.iter().map(|h| h.as_str().to_owned()).collect(),
        steps: steps(s.steps),
        pr_number: s.pr_number.unwrap_or_default(),
        pr_url: s.pr_url.unwrap_or_default(),
        pr_outcome: s.pr_outcome.unwrap_or_default(),
        tokens: s.tokens,
        tokens_estimated: s.tokens_estimated,
        billed: s.billed,
        unbilled: s
            .unbilled
            .into_iter()
            .map(|u| control::UnbilledUsage {
                event_name: u.event_name,
                value: u.value,
                identifier: u.identifier,
                reason: u.reason,
            })
            .collect(),
        failure: s.failure.unwrap_or_default(),
        attempt: s.attempt,
    }
}

/// An event of [`AgentEvent`](views::AgentEvent) as the gRPC message, with its id.
fn event(id: String, e: views::AgentEvent) -> Option<control::AgentEvent> {
    use control::agent_event::Event;
    let event = match e {
        views::AgentEvent::State(s) => Event::State(control::StateEvent {
            agent_id: s.agent_id,
            seq: s.seq,
            from: s.from.as_str().to_owned(),
            to: s.to.as_str().to_owned(),
            actor: s.actor,
            reason: s.reason,
            at: s.at,
        }),
        views::AgentEvent::Step(s) => Event::Step(control::StepEvent {
            agent_id: s.agent_id,
            provisioning_workflow_id: s.provisioning_workflow_id,
            provisioning_run_id: s.provisioning_run_id,
            seq: s.seq,
            step: s.step,
            state: s.state.as_str().to_owned(),
            detail: s.detail,
            at: s.at,
        }),
        views::AgentEvent::End(e) => {
            Event::End(control::EndEvent { agent_id: e.agent_id, status: e.status.as_str().to_owned() })
        }
        views::AgentEvent::Heartbeat(_) => return None,
    };
    Some(control::AgentEvent { id, event: Some(event) })
}

fn optional(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

fn status(e: ServiceError) -> Status {
    let message = format!("{}: {}", e.code, e.message);
    match e.kind {
        Kind::Invalid | Kind::Unprocessable => Status::invalid_argument(message),
        Kind::Forbidden => Status::permission_denied(message),
        Kind::PaymentRequired => Status::failed_precondition(message),
        Kind::NotFound => Status::not_found(message),
        Kind::Conflict => Status::failed_precondition(message),
        Kind::Upstream | Kind::Unavailable => Status::unavailable(message),
        Kind::Exhausted => Status::resource_exhausted(message),
    }
}

fn request_id(req: &AgentCommandRequest, op: &str) -> String {
    crate::service::request_id(Some(&req.idempotency_key), op, &req.agent_id, "grpc")
}

#[tonic::async_trait]
impl AgentControl for AgentControlService {
    async fn get_agent(&self, request: Request<GetAgentRequest>) -> Result<Response<Agent>, Status> {
        let claims = self.claims(&request)?;
        let id = request.into_inner().agent_id;
        let record = AgentService::new(self.app.clone()).get(&claims, &id).await.map_err(status)?;
        Ok(Response::new(self.view(record).await?))
    }

    async fn list_agents(
        &self,
        request: Request<ListAgentsRequest>,
    ) -> Result<Response<ListAgentsResponse>, Status> {
        self.list(&self.claims(&request)?, false).await
    }

    async fn create_agent(&self, request: Request<CreateAgentRequest>) -> Result<Response<Agent>, Status> {
        let claims = self.claims(&request)?;
        let req = request.into_inner();
        let record = AgentService::new(self.app.clone())
            .create(&claims, &req.name, &req.region)
            .await
            .map_err(status)?;
        Ok(Response::new(self.view(record).await?))
    }

    async fn provision_agent(
        &self,
        request: Request<AgentCommandRequest>,
    ) -> Result<Response<Agent>, Status> {
        let claims = self.claims(&request)?;
        let req = request.into_inner();
        let rid = request_id(&req, "provision");
        let accepted = AgentService::new(self.app.clone())
            .provision(&claims, &req.agent_id, rid)
            .await
            .map_err(status)?;
        Ok(Response::new(self.view(accepted.agent).await?))
    }

    async fn stop_agent(&self, request: Request<AgentCommandRequest>) -> Result<Response<Agent>, Status> {
        self.command(request, AgentCommand::Stop).await
    }

    async fn start_agent(&self, request: Request<AgentCommandRequest>) -> Result<Response<Agent>, Status> {
        self.command(request, AgentCommand::Start).await
    }

    async fn destroy_agent(&self, request: Request<AgentCommandRequest>) -> Result<Response<Agent>, Status> {
        self.command(request, AgentCommand::Destroy).await
    }

    async fn provision_client_stack(
        &self,
        request: Request<ProvisionClientStackRequest>,
    ) -> Result<Response<ClientStackAccepted>, Status> {
        let claims = self.admin(&request)?;
        let r = request.into_inner();
        let body = serde_json::json!({"clientId": r.client_id, "clientName": r.client_name,
                                      "orgEmail": r.org_email, "tier": r.tier});
        let req =
            crate::routes::stack::validate(&body, &format!("admin:{}", claims.sub)).map_err(|details| {
                let fields: Vec<String> = details.iter().map(|(k, v)| format!("{k}: {v}")).collect();
                Status::invalid_argument(format!("INVALID_INPUT: {}", fields.join("; ")))
            })?;
        let client_id = req.client_id.clone();
        let (workflow_id, existing) =
            self.app.gateway.start_stack(req).await.map_err(|e| status(e.into()))?;
        Ok(Response::new(ClientStackAccepted { client_id, workflow_id, existing }))
    }

    async fn get_client_stack(
        &self,
        request: Request<GetClientStackRequest>,
    ) -> Result<Response<ClientStack>, Status> {
        self.admin(&request)?;
        let client_id = request.into_inner().client_id;
        let s = self.app.gateway.stack_status(&client_id).await.map_err(|e| match e {
            GatewayError::NotFound | GatewayError::Closed => {
                Status::not_found(format!("STACK_NOT_FOUND: {client_id}"))
            }
            other => status(other.into()),
        })?;
        let r = &s.resources;
        let resources = [
            ("supabase_ref", &r.supabase_ref),
            ("supabase_url", &r.supabase_url),
            ("repository", &r.repository),
            ("repository_url", &r.repository_url),
            ("vercel_project_id", &r.vercel_project_id),
            ("deployment_url", &r.deployment_url),
            ("n8n_workflow_id", &r.n8n_workflow_id),
            ("webhook_url", &r.webhook_url),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.clone().map(|v| (k.to_owned(), v)))
        .collect();
        Ok(Response::new(ClientStack {
            client_id: s.client_id,
            state: s.state.as_str().to_owned(),
            steps: steps(s.steps),
            resources,
            failure: s.failure.unwrap_or_default(),
            leftovers: s.leftovers,
        }))
    }

    async fn admin_list_agents(
        &self,
        request: Request<ListAgentsRequest>,
    ) -> Result<Response<ListAgentsResponse>, Status> {
        self.list(&self.admin(&request)?, true).await
    }

    async fn create_checkout_session(
        &self,
        request: Request<CreateCheckoutSessionRequest>,
    ) -> Result<Response<CheckoutSession>, Status> {
        let claims = self.claims(&request)?;
        let r = request.into_inner();
        let req = CheckoutRequest { agent_id: optional(r.agent_id), region: optional(r.region) };
        let key = optional(r.idempotency_key);
        let created = CheckoutService::new(self.app.clone())
            .open(&claims, req, key.as_deref())
            .await
            .map_err(status)?;
        Ok(Response::new(CheckoutSession { id: created.id, url: created.url }))
    }

    type WatchAgentEventsStream = Pin<Box<dyn Stream<Item = Result<control::AgentEvent, Status>> + Send>>;

    async fn watch_agent_events(
        &self,
        request: Request<WatchAgentEventsRequest>,
    ) -> Result<Response<Self::WatchAgentEventsStream>, Status> {
        let claims = self.claims(&request)?;
        let r = request.into_inner();
        let events = AgentService::new(self.app.clone())
            .watch(&claims, &r.agent_id, Some(r.last_event_id.as_str()))
            .await
            .map_err(status)?;
        let events = events.filter_map(|(id, e)| async move { event(id.to_string(), e).map(Ok) });
        Ok(Response::new(Box::pin(events)))
    }

    async fn link_git_hub_account(
        &self,
        request: Request<control::GitHubLink>,
    ) -> Result<Response<control::GitHubLink>, Status> {
        let claims = self.claims(&request)?;
        let l = request.into_inner();
        let wanted = GitHubLink { account: l.account, user_id: l.user_id, customer_id: l.customer_id };
        let linked =
            AdminService::new(self.app.clone()).link_github(&claims, wanted).await.map_err(status)?;
        Ok(Response::new(link(linked)))
    }

    async fn list_git_hub_links(
        &self,
        request: Request<ListGitHubLinksRequest>,
    ) -> Result<Response<ListGitHubLinksResponse>, Status> {
        let claims = self.claims(&request)?;
        let links = AdminService::new(self.app.clone()).github_links(&claims).await.map_err(status)?;
        Ok(Response::new(ListGitHubLinksResponse { links: links.into_iter().map(link).collect() }))
    }

    async fn get_job_status(&self, request: Request<JobRef>) -> Result<Response<control::JobStatus>, Status> {
        let claims = self.claims(&request)?;
        let j = request.into_inner();
        let s = AdminService::new(self.app.clone())
            .job_status(&claims, &j.owner, &j.repo, j.issue)
            .await
            .map_err(status)?;
        Ok(Response::new(job(s)))
    }

    async fn bill_job_again(
        &self,
        request: Request<BillJobAgainRequest>,
    ) -> Result<Response<control::JobStatus>, Status> {
        let claims = self.claims(&request)?;
        let r = request.into_inner();
        let j = r.job.unwrap_or_default();
        let id = format!("{}/{}#{}", j.owner, j.repo, j.issue);
        let rid = crate::service::request_id(Some(&r.idempotency_key), "bill", &id, "grpc");
        let s = AdminService::new(self.app.clone())
            .bill_job(&claims, &j.owner, &j.repo, j.issue, rid)
            .await
            .map_err(status)?;
        Ok(Response::new(job(s)))
    }
}
