//! The gRPC control API (`slipway.v1.AgentControl`), same auth and ownership rules as REST:
//! another user's agent is `NOT_FOUND`, indistinguishable from an agent that does not exist.

use secrecy::{ExposeSecret, SecretString};
use slipway_proto::control::{Agent, GetAgentRequest, ProvisioningStep, agent_control_server::AgentControl};
use tonic::{Request, Response, Status};

use crate::{
    auth,
    temporal::{Gateway, GatewayError},
};

/// Service implementation.
#[derive(Clone)]
pub struct AgentControlService {
    gateway: Gateway,
    jwt_secret: SecretString,
}

impl AgentControlService {
    /// New service.
    pub fn new(gateway: Gateway, jwt_secret: SecretString) -> Self {
        Self { gateway, jwt_secret }
    }
}

fn gateway_status(e: GatewayError) -> Status {
    match e {
        GatewayError::NotFound | GatewayError::Closed => Status::not_found("agent not found"),
        GatewayError::Unavailable(m) => Status::unavailable(m),
    }
}

#[tonic::async_trait]
impl AgentControl for AgentControlService {
    async fn get_agent(&self, request: Request<GetAgentRequest>) -> Result<Response<Agent>, Status> {
        let header = request.metadata().get("authorization").and_then(|v| v.to_str().ok());
        let claims = auth::verify_bearer(header, self.jwt_secret.expose_secret().as_bytes())
            .map_err(|e| Status::unauthenticated(e.to_string()))?;
        let agent_id = request.into_inner().agent_id;
        let record = self.gateway.agent(&agent_id).await.map_err(gateway_status)?;
        if record.user_id != claims.sub && !claims.is_admin() {
            return Err(Status::not_found("agent not found"));
        }
        let steps = match (&record.provisioning_workflow_id, &record.provisioning_run_id) {
            (Some(wf), Some(run)) => match self.gateway.provisioning_progress(wf, run).await {
                Ok(p) => p.steps,
                Err(GatewayError::NotFound) => Vec::new(),
                Err(e) => return Err(gateway_status(e)),
            },
            _ => Vec::new(),
        };
        Ok(Response::new(Agent {
            workflow_id: slipway_proto::model::agent_workflow_id(&record.agent_id),
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
        }))
    }
}
