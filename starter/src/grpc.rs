//! The gRPC control API (`slipway.v1.AgentControl`): the REST operations over the same
//! [`AgentService`], so auth, ownership (another user's agent is `NOT_FOUND`), gating and codes
//! are identical. Refusals carry the stable code as the status message prefix (`CODE: reason`).

use secrecy::ExposeSecret;
use slipway_proto::{
    control::{
        Agent, AgentCommandRequest, ClientStack, ClientStackAccepted, CreateAgentRequest, GetAgentRequest,
        GetClientStackRequest, ListAgentsRequest, ListAgentsResponse, ProvisionClientStackRequest,
        ProvisioningStep, agent_control_server::AgentControl,
    },
    model::{AgentCommand, AgentRecord, agent_workflow_id},
};
use tonic::{Request, Response, Status};

use crate::{
    AppState, auth,
    auth::Claims,
    service::{AgentService, Kind, ServiceError},
    temporal::GatewayError,
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
        if claims.is_admin() {
            Ok(claims)
        } else {
            Err(Status::permission_denied("FORBIDDEN: admin role required"))
        }
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
                Status::unauthenticated(e.to_string())
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

fn status(e: ServiceError) -> Status {
    let message = format!("{}: {}", e.code, e.message);
    match e.kind {
        Kind::Invalid | Kind::Unprocessable => Status::invalid_argument(message),
        Kind::Forbidden => Status::permission_denied(message),
        Kind::PaymentRequired => Status::failed_precondition(message),
        Kind::NotFound => Status::not_found(message),
        Kind::Conflict => Status::failed_precondition(message),
        Kind::Upstream | Kind::Unavailable => Status::unavailable(message),
    }
}

fn request_id(req: &AgentCommandRequest, op: &str) -> String {
    if req.idempotency_key.is_empty() || req.idempotency_key.len() > 255 {
        format!("grpc-{op}-{}-{}", req.agent_id, uuid::Uuid::new_v4().simple())
    } else {
        format!("api-{op}-{}-{}", req.agent_id, req.idempotency_key)
    }
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
        let claims = self.claims(&request)?;
        let summaries = AgentService::new(self.app.clone()).list(&claims, false).await.map_err(status)?;
        let agents = summaries
            .into_iter()
            .map(|s| Agent {
                workflow_id: agent_workflow_id(&s.agent_id),
                agent_id: s.agent_id,
                user_id: s.user_id,
                region: s.region,
                status: s.status,
                name: s.name,
                ..Agent::default()
            })
            .collect();
        Ok(Response::new(ListAgentsResponse { agents }))
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
            steps: s
                .steps
                .into_iter()
                .map(|x| ProvisioningStep {
                    name: x.name,
                    state: x.state.as_str().to_owned(),
                    detail: x.detail,
                })
                .collect(),
            resources,
            failure: s.failure.unwrap_or_default(),
            leftovers: s.leftovers,
        }))
    }
}
