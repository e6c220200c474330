//! The bodies the REST API answers with, as types: the handlers build them and the OpenAPI
//! document ([`crate::openapi`]) describes them from the same definitions, so the two cannot
//! disagree. Request bodies live beside their handlers; the types of the workflows' state
//! (`AgentRecord`, `JobStatus`, `ClientStackStatus`, …) come from `slipway-proto`.

use serde::Serialize;
use slipway_proto::{
    jobs::GitHubLink,
    model::{AgentRecord, AgentStatus, AgentSummary, StepState, agent_workflow_id},
    stack::{ClientStackStatus, stack_workflow_id},
};
use utoipa::ToSchema;

/// The JSON body of every error answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// Stable, upper-case code to match on; each operation lists the codes it answers.
    #[schema(example = "AGENT_NOT_FOUND")]
    pub code: String,
    /// For people; may change.
    pub message: String,
    /// Field-by-field problems of invalid input (`INVALID_INPUT`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<std::collections::BTreeMap<String, String>>,
}

/// An agent, with the id of its Temporal workflow (open it in the Web UI).
#[derive(Debug, Serialize, ToSchema)]
pub struct AgentView {
    /// The agent's state.
    #[serde(flatten)]
    pub agent: AgentRecord,
    /// `agent-<agent_id>`.
    pub workflow_id: String,
}

impl From<AgentRecord> for AgentView {
    fn from(agent: AgentRecord) -> Self {
        Self { workflow_id: agent_workflow_id(&agent.agent_id), agent }
    }
}

/// `GET /api/agents`, `GET /api/admin/agents`.
#[derive(Debug, Serialize, ToSchema)]
pub struct AgentList {
    /// Sorted by id.
    pub agents: Vec<AgentSummary>,
}

/// `GET /api/admin/github-links`.
#[derive(Debug, Serialize, ToSchema)]
pub struct LinkList {
    /// Every link.
    pub links: Vec<GitHubLink>,
}

/// `POST /api/billing/checkout`.
#[derive(Debug, Serialize, ToSchema)]
pub struct CheckoutCreated {
    /// The Checkout Session (`cs_…`).
    #[schema(example = "cs_test_a1b2c3")]
    pub id: String,
    /// Where to send the customer: Stripe's hosted page.
    pub url: String,
}

/// `POST /api/provisioning`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StackAccepted {
    /// The client.
    pub client_id: String,
    /// Its `ClientStack` workflow.
    pub workflow_id: String,
    /// True when the client's stack already existed (it is returned, not started again).
    pub existing: bool,
}

/// `GET /api/provisioning/{client_id}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct StackView {
    /// The stack's state.
    #[serde(flatten)]
    pub stack: ClientStackStatus,
    /// `client-stack-<client_id>`.
    pub workflow_id: String,
}

impl From<ClientStackStatus> for StackView {
    fn from(stack: ClientStackStatus) -> Self {
        Self { workflow_id: stack_workflow_id(&stack.client_id), stack }
    }
}

/// `GET /healthz`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok`.
    #[schema(example = "ok")]
    pub status: String,
}

/// `GET /readyz`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    /// `ready` or `not_ready`.
    #[schema(example = "ready")]
    pub status: String,
    /// `ok` or `unreachable`.
    #[schema(example = "ok")]
    pub temporal: String,
}

/// `event: state` of an agent's event stream: one status change, as its audit trail records
/// it, with the agent as it is when the event is sent.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StateEvent {
    /// The agent.
    pub agent_id: String,
    /// Position of the change in the agent's audit trail, from 1.
    pub seq: u32,
    /// Status before.
    pub from: AgentStatus,
    /// Status after.
    pub to: AgentStatus,
    /// Who or what caused it (`user:…`, `stripe:evt_…`, `saga`, …).
    pub actor: String,
    /// Why, in words.
    pub reason: String,
    /// Workflow time of the change (RFC 3339).
    pub at: String,
}

/// `event: step` of an agent's event stream: one step of its provisioning saga changed.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StepEvent {
    /// The agent.
    pub agent_id: String,
    /// The saga's workflow id.
    pub provisioning_workflow_id: String,
    /// The saga's run id (a failed agent provisioned again is a new run).
    pub provisioning_run_id: String,
    /// Position of the change in the run, from 1.
    pub seq: u32,
    /// Step name (`tailscale_key`, `hetzner_server`, `server_ready`, `actions_dispatch`,
    /// `actions_callback`, `tailscale_device`).
    pub step: String,
    /// Its new state.
    pub state: StepState,
    /// Its new detail.
    pub detail: String,
    /// Workflow time of the change (RFC 3339, milliseconds).
    pub at: String,
}

/// `event: end`: the agent's workflow has closed (it was destroyed); the stream ends.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EndEvent {
    /// The agent.
    pub agent_id: String,
    /// Its last status.
    pub status: AgentStatus,
}

/// `event: heartbeat`, every `SLIPWAY_EVENTS_HEARTBEAT_SECS` (15 s) while nothing else is
/// sent: the stream is alive. It carries no id, so it never moves `Last-Event-ID`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct HeartbeatEvent {}

/// Every event of `GET /api/agents/{id}/events`, by its SSE `event:` name. Each but
/// `heartbeat` carries an `id:`; send the last one received as `Last-Event-ID` to resume.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(tag = "event", content = "data", rename_all = "snake_case")]
pub enum AgentEvent {
    /// A status change.
    State(StateEvent),
    /// A provisioning step change.
    Step(StepEvent),
    /// The agent's workflow closed.
    End(EndEvent),
    /// Keep-alive.
    Heartbeat(HeartbeatEvent),
}

impl AgentEvent {
    /// Its SSE `event:` name (the serde tag).
    pub fn name(&self) -> &'static str {
        match self {
            Self::State(_) => "state",
            Self::Step(_) => "step",
            Self::End(_) => "end",
            Self::Heartbeat(_) => "heartbeat",
        }
    }
}
