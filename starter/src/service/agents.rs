//! The agent operations behind both the REST API and the gRPC service, so the two surfaces
//! cannot drift: same ownership rule (another user's agent is "not found"), same gating (no
//! provisioning without a free seat of a subscription in good standing), same stable codes.

use slipway_proto::model::{
    AgentCommand, AgentRecord, AgentStatus, AgentSummary, CommandOutcome, CommandRequest, ProvisionCommand,
    ProvisionOutcome, ProvisionSource,
};

use super::{Kind, ServiceError};
use crate::{AppState, auth::Claims, temporal::GatewayError, validate};

/// Result of an accepted operation.
#[derive(Debug, Clone)]
pub struct Accepted {
    /// The agent after acceptance.
    pub agent: AgentRecord,
    /// True if work goes on asynchronously (answer 202), false if nothing more happens (200).
    pub in_progress: bool,
}

/// The operations.
#[derive(Clone)]
pub struct AgentService {
    app: AppState,
}

impl AgentService {
    /// New service over the app state.
    pub fn new(app: AppState) -> Self {
        Self { app }
    }

    /// The app state (for the operations other modules add).
    pub(crate) fn app(&self) -> &AppState {
        &self.app
    }

    /// Create a draft agent.
    pub async fn create(&self, user: &Claims, name: &str, region: &str) -> Result<AgentRecord, ServiceError> {
        let mut details = Vec::new();
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
            details.push(("name".to_owned(), "must be 1-64 printable characters".to_owned()));
        }
        if let Err(m) = validate::region(region) {
            details.push(("region".to_owned(), m));
        }
        if !details.is_empty() {
            return Err(ServiceError {
                kind: Kind::Invalid,
                code: "INVALID_INPUT".to_owned(),
                message: "the agent could not be created".to_owned(),
                details,
            });
        }
        self.check_draft_cap(&user.sub).await?;
        let agent_id = format!("ag-{}", &uuid_simple()[..12]);
        let mut agent = AgentRecord::draft(&agent_id, &user.sub, region);
        agent.name = name.to_owned();
        self.app
            .gateway
            .create_agent(agent.clone(), self.app.settings.policy.clone(), self.app.lifecycle())
            .await?;
        Ok(agent)
    }

    /// Refuses a new draft when the user already has `SLIPWAY_MAX_DRAFT_AGENTS` of them: drafts
    /// cost nothing to make, and each one is a running workflow (and can hold a checkout open).
    pub async fn check_draft_cap(&self, user_id: &str) -> Result<(), ServiceError> {
        let cap = self.app.settings.max_draft_agents;
        if cap == 0 {
            return Ok(());
        }
        let query = format!(
            "WorkflowType = 'Agent' AND ExecutionStatus = 'Running' AND SlipwayUserId = '{}' AND SlipwayStatus = 'draft'",
            user_id.replace('\'', "")
        );
        let drafts = self.app.gateway.list_agents(&query, cap as usize).await?;
        if drafts.len() >= cap as usize {
            return Err(ServiceError::new(
                Kind::Conflict,
                "TOO_MANY_DRAFTS",
                format!("{cap} draft agents already; provision or destroy one first"),
            ));
        }
        Ok(())
    }

    /// The caller's agents (all agents for admins when `all` is set).
    pub async fn list(&self, user: &Claims, all: bool) -> Result<Vec<AgentSummary>, ServiceError> {
        let query = if all && user.is_admin() {
            "WorkflowType = 'Agent'".to_owned()
        } else {
            format!("WorkflowType = 'Agent' AND SlipwayUserId = '{}'", user.sub.replace('\'', ""))
        };
        let mut agents = self.app.gateway.list_agents(&query, 500).await?;
        agents.sort_by(|a, b| a.agent_id.cmp(&b.agent_id));
        Ok(agents)
    }

    /// One agent, if the caller owns it (or is an admin).
    pub async fn get(&self, user: &Claims, agent_id: &str) -> Result<AgentRecord, ServiceError> {
        if validate::agent_id(agent_id).is_err() {
            return Err(ServiceError::agent_not_found(agent_id));
        }
        let agent = self.app.gateway.agent(agent_id).await.map_err(|e| match e {
            GatewayError::NotFound | GatewayError::Closed => ServiceError::agent_not_found(agent_id),
            other => other.into(),
        })?;
        if agent.user_id != user.sub && !user.is_admin() {
            return Err(ServiceError::agent_not_found(agent_id));
        }
        Ok(agent)
    }

    /// Provision an agent: only with a free seat of a subscription in good standing. The
    /// entitlement query is a quick pre-check; the agent's seat claim at the customer's workflow
    /// decides.
    pub async fn provision(
        &self,
        user: &Claims,
        agent_id: &str,
        request_id: String,
    ) -> Result<Accepted, ServiceError> {
        let agent = self.get(user, agent_id).await?;
        let entitlement = self.app.gateway.entitlement_for_user(&agent.user_id).await?;
        let Some(entitlement) = entitlement.filter(|e| e.entitled) else {
            return Err(ServiceError::new(
                Kind::Forbidden,
                "NO_ACTIVE_SUBSCRIPTION",
                "provisioning needs an active subscription; start one with POST /api/billing/checkout",
            ));
        };

        let cmd = ProvisionCommand {
            source: ProvisionSource::Api {
                user_id: user.sub.clone(),
                customer_id: Some(entitlement.customer_id),
            },
        };
        let outcome =
            self.app.gateway.provision_existing(agent_id, cmd, request_id).await.map_err(|e| match e {
                GatewayError::NotFound | GatewayError::Closed => ServiceError::agent_not_found(agent_id),
                other => other.into(),
            })?;
        let conflict = |code: &str, message: String| Err(ServiceError::new(Kind::Conflict, code, message));
        match outcome {
            ProvisionOutcome::Started { .. } => {}
            ProvisionOutcome::AlreadyProvisioning => {
                return conflict(
                    "AGENT_ALREADY_PROVISIONING",
                    format!("agent {agent_id} is already being provisioned"),
                );
            }
            ProvisionOutcome::AlreadyActive => {
                return conflict("AGENT_ALREADY_ACTIVE", format!("agent {agent_id} is already provisioned"));
            }
            ProvisionOutcome::AwaitingPayment { .. } => {}
            ProvisionOutcome::Refused { code, reason } => {
                use slipway_workflows::billing::codes as seat;
                if code == slipway_workflows::agent::codes::PROVISIONING_IN_PROGRESS {
                    self.app.metrics.incr(crate::metrics::Metric::ProvisioningRefused);
                }
                let kind = match code.as_str() {
                    seat::NO_FREE_SEAT => Kind::PaymentRequired,
                    seat::NO_ACTIVE_SUBSCRIPTION | seat::SUBSCRIPTION_ENDED | seat::PAYER_NOT_OWNER => {
                        Kind::Forbidden
                    }
                    _ => Kind::Conflict,
                };
                return Err(ServiceError::new(kind, &code, reason));
            }
        }
        let agent = self.app.gateway.agent(agent_id).await?;
        Ok(Accepted { agent, in_progress: true })
    }

    /// Stop, start or destroy.
    pub async fn command(
        &self,
        user: &Claims,
        agent_id: &str,
        command: AgentCommand,
        request_id: String,
    ) -> Result<Accepted, ServiceError> {
        self.get(user, agent_id).await?;
        let request = CommandRequest {
            command,
            actor: format!("user:{}", user.sub),
            reason: format!("{} requested through the API", command.as_str()),
        };
        let outcome = self.app.gateway.command(agent_id, request, request_id).await.map_err(|e| match e {
            GatewayError::NotFound | GatewayError::Closed => ServiceError::agent_not_found(agent_id),
            other => other.into(),
        })?;
        match outcome {
            CommandOutcome::Accepted { status, target } => {
                let agent = match self.app.gateway.agent(agent_id).await {
                    Ok(a) => a,
                    // Destroyed agents close their workflow; report the outcome we know.
                    Err(_) if target == AgentStatus::Destroyed => {
                        let mut a = AgentRecord::draft(agent_id, &user.sub, "");
                        a.status = status;
                        a
                    }
                    Err(e) => return Err(e.into()),
                };
                Ok(Accepted { in_progress: agent.status != target, agent })
            }
            CommandOutcome::Refused { code, reason } => Err(ServiceError::new(Kind::Conflict, &code, reason)),
        }
    }
}

/// A random id fragment (the starter is not workflow code; randomness is fine here).
fn uuid_simple() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}
