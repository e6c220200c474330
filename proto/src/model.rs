//! Payload types of the Slipway workflows and activities.
//!
//! Conventions:
//! - Field names are `snake_case` JSON; enums are lower-case strings, so histories read well in
//!   the Web UI and stay stable across refactors (renaming a Rust variant must not change a
//!   recorded history).
//! - Every type is `Default`-free unless a default is meaningful: a missing field in a payload is
//!   a bug we want to see, not a silently zeroed value.
//! - Timestamps are RFC 3339 strings taken from `ctx.workflow_time()` inside workflows, never from
//!   the wall clock.

use serde::{Deserialize, Serialize};

/// Lifecycle states of an agent. `as_str` is the value of the `SlipwayStatus` search attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum AgentStatus {
    /// Known, not paid for or not provisioned yet.
    Draft,
    /// The provisioning saga is running.
    Provisioning,
    /// VM up, joined the tailnet, bootstrap job succeeded.
    Active,
    /// Being powered off.
    Stopping,
    /// Powered off by its owner.
    Stopped,
    /// Powered off because a payment failed; data kept.
    Suspended,
    /// Resources being deleted.
    Destroying,
    /// Every resource deleted; terminal.
    Destroyed,
    /// Provisioning failed and was rolled back; `failure_reason` says why.
    Failed,
}

impl AgentStatus {
    /// The lower-case name used in search attributes, APIs and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Draft => "draft",
            Self::Provisioning => "provisioning",
            Self::Active => "active",
            Self::Stopping => "stopping",
            Self::Stopped => "stopped",
            Self::Suspended => "suspended",
            Self::Destroying => "destroying",
            Self::Destroyed => "destroyed",
            Self::Failed => "failed",
        }
    }
}

impl std::fmt::Display for AgentStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Knobs of the provisioning saga that are workflow inputs (not worker configuration) because
/// they shape the workflow's own timers, which must replay identically.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProvisioningPolicy {
    /// How long to wait for the GitHub Actions job's final callback once dispatched.
    pub callback_deadline_secs: u64,
    /// How long transient dispatch failures are retried before the saga gives up.
    pub dispatch_deadline_secs: u64,
}

impl Default for ProvisioningPolicy {
    fn default() -> Self {
        Self { callback_deadline_secs: 30 * 60, dispatch_deadline_secs: 60 * 60 }
    }
}

/// Knobs of the agent lifecycle (workflow inputs, because they shape timers and history).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LifecyclePolicy {
    /// How long a graceful `shutdown` may take before the VM is powered off.
    pub shutdown_wait_secs: u64,
    /// Continue-as-new once the history has this many events (Temporal also suggests it).
    pub history_limit: u32,
    /// Attempts of one lifecycle command's activity (power on/off, teardown) before the command
    /// counts as failed; a billing command is then retried later, until it holds.
    #[serde(default = "default_command_attempts")]
    pub command_attempts: u32,
    /// How long a paid checkout waits before it is tried again while its user's other
    /// provisioning is in flight (one saga per user at a time).
    #[serde(default = "default_checkout_retry_secs")]
    pub checkout_retry_secs: u64,
}

fn default_command_attempts() -> u32 {
    10
}

fn default_checkout_retry_secs() -> u64 {
    30
}

impl Default for LifecyclePolicy {
    fn default() -> Self {
        Self {
            shutdown_wait_secs: 60,
            history_limit: 5_000,
            command_attempts: default_command_attempts(),
            checkout_retry_secs: default_checkout_retry_secs(),
        }
    }
}

/// The protocol of the workflow runs this release starts, carried in their inputs
/// (`protocol`). A run of protocol 1 or later takes every change made before protocol 1 as
/// given: it calls no `patched` for them (each call records a marker and upserts
/// `TemporalChangeVersion`: two history events and two billable actions per run and change)
/// and upserts only the search attributes whose value changed. Runs started before (0, the field
/// absent from their input) keep doing both, so their histories replay as recorded; a run that
/// continues as new starts on this protocol. A change made after protocol 1 is guarded by a
/// patch again (or by the next protocol).
pub const PROTOCOL: u32 = 1;

/// `serde`'s `skip_serializing_if` for a `protocol` of 0 (inputs of earlier runs stay as they were).
pub fn is_protocol_zero(p: &u32) -> bool {
    *p == 0
}

/// Input of the long-lived agent workflow (and what it carries across continue-as-new).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AgentWorkflowInput {
    /// The agent's full record.
    pub agent: AgentRecord,
    /// Saga knobs used when this agent is provisioned.
    pub policy: ProvisioningPolicy,
    /// Lifecycle knobs.
    #[serde(default)]
    pub lifecycle: LifecyclePolicy,
    /// Commands accepted but not yet run (carried across continue-as-new).
    #[serde(default)]
    pub queue: Vec<QueuedCommand>,
    /// Paid checkouts signalled and not yet run, the event ids of the latest ones (a
    /// redelivery is dropped), and when a checkout waiting for the user's other provisioning is
    /// tried again (carried across continue-as-new).
    #[serde(default, skip_serializing_if = "Checkouts::is_empty")]
    pub checkouts: Checkouts,
    /// The run's [`PROTOCOL`] (0: started before protocols existed).
    #[serde(default, skip_serializing_if = "is_protocol_zero")]
    pub protocol: u32,
}

impl AgentWorkflowInput {
    /// The input of a new agent's first run: nothing queued, no checkout heard yet.
    pub fn new(
        agent: AgentRecord,
        policy: ProvisioningPolicy,
        lifecycle: LifecyclePolicy,
        protocol: u32,
    ) -> Self {
        Self { agent, policy, lifecycle, queue: Vec::new(), checkouts: Checkouts::default(), protocol }
    }
}

/// Paid checkouts an agent heard by signal (`checkout`): durable as soon as the starter's
/// signal-with-start returns, run in turn by the agent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Checkouts {
    /// Waiting to run, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub waiting: Vec<ProvisionCommand>,
    /// Event ids of the latest checkouts heard (at most [`Checkouts::REMEMBERED`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub seen: Vec<String>,
    /// When the first waiting one is tried again (Unix seconds, workflow time), while the
    /// user's other provisioning is in flight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_at: Option<i64>,
}

impl Checkouts {
    /// Event ids remembered to drop redeliveries (Stripe and the catch-up send an event again
    /// until it is acknowledged; an agent sees few checkouts).
    pub const REMEMBERED: usize = 32;

    /// Nothing waiting, remembered or scheduled.
    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty() && self.seen.is_empty() && self.retry_at.is_none()
    }

    /// Takes `cmd` unless its event was heard already (`false`: a redelivery, dropped).
    pub fn hear(&mut self, cmd: ProvisionCommand) -> bool {
        let Some(event) = cmd.source.event_id() else { return false };
        if self.seen.iter().any(|e| e == event) {
            return false;
        }
        self.seen.push(event.to_owned());
        if self.seen.len() > Self::REMEMBERED {
            self.seen.remove(0);
        }
        self.waiting.push(cmd);
        true
    }

    /// The checkout to run now, if one waits and is not scheduled for later.
    pub fn take_due(&mut self) -> Option<ProvisionCommand> {
        (self.retry_at.is_none() && !self.waiting.is_empty()).then(|| self.waiting.remove(0))
    }
}

/// What became of a paid checkout that did not start a provisioning: Stripe was answered when
/// the checkout was durable, so the agent's record is where its refusal is read (the API's
/// agent, the Web UI's query), with the same stable codes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CheckoutRefusal {
    /// The Stripe event (`evt_…`).
    pub event_id: String,
    /// Stable code, e.g. `PROVISIONING_IN_PROGRESS`, `PAYER_NOT_OWNER`, `SUBSCRIPTION_ENDED`.
    pub code: String,
    /// Human-readable reason.
    pub reason: String,
    /// When it is tried again (Unix seconds); `None`: it will not be.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_at: Option<i64>,
}

/// Operations on a provisioned agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum AgentCommand {
    /// Graceful shutdown, then power off (user).
    Stop,
    /// Power on (user).
    Start,
    /// Delete the server, the tailnet device and keys; terminal (user or billing).
    Destroy,
    /// Power off for non-payment, keep data (billing).
    Suspend,
    /// Undo a suspension once paid (billing).
    Resume,
}

impl AgentCommand {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::Start => "start",
            Self::Destroy => "destroy",
            Self::Suspend => "suspend",
            Self::Resume => "resume",
        }
    }
}

/// A command with who asked and why (for the audit trail).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CommandRequest {
    /// The operation.
    pub command: AgentCommand,
    /// `user:<id>`, `billing:<customer>`, …
    pub actor: String,
    /// Why, in words.
    pub reason: String,
}

/// A command waiting in an agent's queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct QueuedCommand {
    /// Sequence number within the agent (answers are matched on it).
    pub seq: u64,
    /// The request.
    pub request: CommandRequest,
}

/// Answer to a command: accepted (running now, or done) or refused with a stable code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum CommandOutcome {
    /// The command runs; `status` is the state now, `target` the state it leads to.
    Accepted {
        /// State when accepted.
        status: AgentStatus,
        /// State once done.
        target: AgentStatus,
    },
    /// Refused; nothing changed.
    Refused {
        /// Stable code, e.g. `AGENT_NOT_RUNNING`.
        code: String,
        /// Human-readable reason.
        reason: String,
    },
}

/// Everything Slipway knows about one agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AgentRecord {
    /// Stable id chosen by the client (`[a-z0-9-]`, 1–40 chars).
    pub agent_id: String,
    /// Owner (JWT `sub`, Stripe metadata `userId`).
    pub user_id: String,
    /// Hetzner location (`fsn1`, `nbg1`, `hel1`, `ash`, `hil`, `sin`).
    pub region: String,
    /// Current lifecycle state.
    pub status: AgentStatus,
    /// The Hetzner server, once created.
    pub server: Option<ServerRef>,
    /// Tailscale key and device, once known.
    pub tailscale: Option<TailscaleRef>,
    /// Why the agent is `failed`.
    pub failure_reason: Option<String>,
    /// Workflow id of the latest provisioning saga.
    pub provisioning_workflow_id: Option<String>,
    /// Run id of the latest provisioning saga (its workflow id is per user and reused).
    pub provisioning_run_id: Option<String>,
    /// Every state change: who or what caused it, when and why.
    pub audit: Vec<AuditEntry>,
    /// Display name given at creation.
    #[serde(default)]
    pub name: String,
    /// Stripe customer paying for the agent, once known.
    #[serde(default)]
    pub customer_id: Option<String>,
    /// State to return to when a suspension is lifted.
    #[serde(default)]
    pub suspended_from: Option<AgentStatus>,
    /// The subscription whose good standing this agent waits for before it is provisioned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub awaiting_payment: Option<String>,
    /// The Stripe Checkout Session open to buy this agent's seat (one at a time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_checkout: Option<OpenCheckout>,
    /// A billing command (suspend, resume, destroy) that failed and is tried again until it
    /// holds: billing is desired state, and a failed command is never final for money.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub billing_retry: Option<BillingRetry>,
    /// The latest paid checkout that did not start a provisioning, and why (cleared when one
    /// does).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkout_refusal: Option<CheckoutRefusal>,
}

/// A billing command that did not hold, and when it is tried again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BillingRetry {
    /// The command, as the customer's workflow sent it.
    pub request: CommandRequest,
    /// Attempts that failed so far.
    pub attempt: u32,
    /// When it runs again (Unix seconds, workflow time).
    pub next_at: i64,
    /// Why the last attempt failed.
    pub last_error: String,
}

impl BillingRetry {
    /// Wait before attempt `attempt + 1`: 30 s doubling per failure, at most an hour.
    pub fn backoff_secs(attempt: u32) -> i64 {
        (30_i64 << attempt.saturating_sub(1).min(7)).min(3600)
    }
}

/// A Checkout Session being opened, or open, for an agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OpenCheckout {
    /// `cs_…`, once Stripe created it (`None` while the starter is creating it).
    pub session_id: Option<String>,
    /// Until when it holds the agent (Unix seconds): the session's `expires_at`, or a short
    /// hold while it is being created.
    pub expires_at: i64,
}

/// Update input: hold the agent for a Checkout Session about to be created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CheckoutHold {
    /// The caller (must own the agent).
    pub user_id: String,
    /// The starter's clock (Unix seconds), against which open sessions are compared.
    pub now: i64,
    /// Until when the hold lasts if the session is never recorded.
    pub hold_until: i64,
}

impl AgentRecord {
    /// A new agent in `draft`.
    pub fn draft(agent_id: &str, user_id: &str, region: &str) -> Self {
        Self {
            agent_id: agent_id.to_owned(),
            user_id: user_id.to_owned(),
            region: region.to_owned(),
            status: AgentStatus::Draft,
            server: None,
            tailscale: None,
            failure_reason: None,
            provisioning_workflow_id: None,
            provisioning_run_id: None,
            audit: Vec::new(),
            name: String::new(),
            customer_id: None,
            suspended_from: None,
            awaiting_payment: None,
            billing_retry: None,
            open_checkout: None,
            checkout_refusal: None,
        }
    }
}

/// An agent as listed (from Temporal visibility: search attributes and memo, no query).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AgentSummary {
    /// Agent id.
    pub agent_id: String,
    /// Owner.
    pub user_id: String,
    /// Display name.
    pub name: String,
    /// Hetzner location.
    pub region: String,
    /// Current status.
    pub status: String,
}

/// One line of an agent's audit trail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditEntry {
    /// Workflow time of the change (RFC 3339).
    pub at: String,
    /// Who or what caused it: `stripe:evt_…`, `user:…`, `saga`, …
    pub actor: String,
    /// State before.
    pub from: AgentStatus,
    /// State after.
    pub to: AgentStatus,
    /// Why, in words.
    pub reason: String,
}

/// A Hetzner Cloud server as Slipway tracks it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ServerRef {
    /// Hetzner's numeric id.
    pub id: u64,
    /// Deterministic name, `slipway-<agent_id>`.
    pub name: String,
    /// Public IPv4, if assigned.
    pub ipv4: Option<String>,
    /// The `create_server` action to wait for; `None` when an existing server was adopted.
    pub create_action_id: Option<u64>,
}

/// Tailscale resources of an agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TailscaleRef {
    /// Id of the one-off auth key (never the key itself).
    pub key_id: String,
    /// Device id once the VM has joined the tailnet.
    pub device_id: Option<String>,
}

/// Who asked for a provisioning.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ProvisionSource {
    /// A paid Stripe Checkout (`checkout.session.completed`).
    Checkout {
        /// Stripe event id (`evt_…`).
        event_id: String,
        /// Checkout Session id (`cs_…`).
        session_id: String,
        /// Stripe customer id (`cus_…`), if the session has one.
        customer_id: Option<String>,
        /// The subscription the session created (`sub_…`); its seat is the agent's.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        subscription_id: Option<String>,
        /// The payer (`metadata.userId`): must own the agent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user_id: Option<String>,
    },
    /// A call to the REST or gRPC API.
    Api {
        /// The calling user.
        user_id: String,
        /// The user's paying customer (checked by the caller: provisioning is gated).
        #[serde(default)]
        customer_id: Option<String>,
    },
    /// The customer's subscription came back in good standing and granted the seat this agent
    /// was waiting for.
    Billing {
        /// `cus_…`.
        customer_id: String,
        /// `sub_…`.
        subscription_id: String,
    },
}

impl ProvisionSource {
    /// The Stripe customer the request names, if any.
    pub fn customer_id(&self) -> Option<&str> {
        match self {
            Self::Checkout { customer_id, .. } | Self::Api { customer_id, .. } => customer_id.as_deref(),
            Self::Billing { customer_id, .. } => Some(customer_id),
        }
    }

    /// Short actor label for audit entries.
    pub fn actor(&self) -> String {
        match self {
            Self::Checkout { event_id, .. } => format!("stripe:{event_id}"),
            Self::Api { user_id, .. } => format!("user:{user_id}"),
            Self::Billing { customer_id, .. } => format!("billing:{customer_id}"),
        }
    }

    /// The Stripe event of a paid checkout.
    pub fn event_id(&self) -> Option<&str> {
        match self {
            Self::Checkout { event_id, .. } => Some(event_id),
            Self::Api { .. } | Self::Billing { .. } => None,
        }
    }

    /// The subscription whose seat the request is for, if it names one.
    pub fn subscription_id(&self) -> Option<&str> {
        match self {
            Self::Checkout { subscription_id, .. } => subscription_id.as_deref(),
            Self::Billing { subscription_id, .. } => Some(subscription_id),
            Self::Api { .. } => None,
        }
    }
}

/// Update input: provision this agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProvisionCommand {
    /// Origin of the request.
    pub source: ProvisionSource,
}

/// Update result: what became of a provisioning request. Refusals are values, not errors, so
/// callers can map them to stable API codes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum ProvisionOutcome {
    /// A new provisioning saga started.
    Started {
        /// Saga workflow id.
        workflow_id: String,
        /// Saga run id.
        run_id: String,
    },
    /// This agent is already being provisioned (duplicate request).
    AlreadyProvisioning,
    /// This agent is already provisioned (duplicate or late request).
    AlreadyActive,
    /// Refused; nothing changed.
    Refused {
        /// Stable machine-readable code, e.g. `PROVISIONING_IN_PROGRESS`.
        code: String,
        /// Human-readable reason.
        reason: String,
    },
    /// The agent holds a seat of a subscription that is not in good standing (e.g. a checkout
    /// paid while an older invoice is unpaid): it is provisioned once the subscription is.
    AwaitingPayment {
        /// `sub_…`.
        subscription_id: String,
        /// Human-readable reason.
        reason: String,
    },
}

/// Input of the provisioning saga.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProvisionRequest {
    /// Agent being provisioned.
    pub agent_id: String,
    /// Its owner.
    pub user_id: String,
    /// Hetzner location.
    pub region: String,
    /// Saga knobs.
    pub policy: ProvisioningPolicy,
    /// The saga's [`PROTOCOL`]: its agent's (0: a saga of an agent run started before protocols).
    #[serde(default, skip_serializing_if = "is_protocol_zero")]
    pub protocol: u32,
}

impl ProvisionRequest {
    /// Deterministic Hetzner server name (and Tailscale hostname) of the agent.
    pub fn server_name(&self) -> String {
        server_name(&self.agent_id)
    }
}

/// The task queue of the short sagas (`ProvisionAgent`, `ClientStack`) next to `task_queue`, the
/// queue of everything else. Why two: the Rust SDK declares a versioning behaviour per worker,
/// not per workflow type, and the sagas are pinned to the Worker Deployment version that started
/// them while the long-lived workflows upgrade to the current one; each queue has its worker.
pub fn saga_task_queue(task_queue: &str) -> String {
    format!("{task_queue}-sagas")
}

/// Deterministic Hetzner server name (and Tailscale hostname) for an agent id.
pub fn server_name(agent_id: &str) -> String {
    format!("slipway-{agent_id}")
}

/// Workflow id of an agent's long-lived workflow.
pub fn agent_workflow_id(agent_id: &str) -> String {
    format!("agent-{agent_id}")
}

/// Workflow id of a user's provisioning saga. One id per user is how Temporal itself enforces
/// "one provisioning in flight per user": a second start with the same id fails while one runs.
pub fn provisioning_workflow_id(user_id: &str) -> String {
    format!("provisioning-{user_id}")
}

/// What the saga returns when the agent is up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProvisionResult {
    /// The server.
    pub server: ServerRef,
    /// The Tailscale key and device.
    pub tailscale: TailscaleRef,
    /// GitHub Actions run id of the bootstrap job, if it reported one.
    pub actions_run_id: Option<String>,
}

/// Status reported by the `provision-agent.yml` job to `POST /callbacks/github-actions`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum CallbackStatus {
    /// The job started; `run_id` is set.
    Running,
    /// The job finished and the agent is bootstrapped.
    Succeeded,
    /// The job failed; `reason` says why.
    Failed,
}

/// A verified GitHub Actions callback, as signalled to the saga.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ActionsCallback {
    /// Job id the saga passed to the dispatch (`<saga workflow id>/<saga run id>`).
    pub job_id: String,
    /// Agent the job provisions.
    pub agent_id: String,
    /// Reported status.
    pub status: CallbackStatus,
    /// GitHub Actions run id.
    #[serde(default)]
    pub run_id: Option<String>,
    /// Failure reason for `failed`.
    #[serde(default)]
    pub reason: Option<String>,
}

/// Job ids are `<workflow id>/<run id>` so a callback reaches exactly the saga run that
/// dispatched it, and a late callback of an older run cannot disturb a newer one.
pub fn job_id(workflow_id: &str, run_id: &str) -> String {
    format!("{workflow_id}/{run_id}")
}

/// Split a job id into `(workflow id, run id)`.
pub fn parse_job_id(job_id: &str) -> Option<(&str, &str)> {
    let (wf, run) = job_id.rsplit_once('/')?;
    (!wf.is_empty() && !run.is_empty()).then_some((wf, run))
}

/// State of one saga step, as shown by the `progress` query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum StepState {
    /// Not reached yet.
    Pending,
    /// In progress (including retries).
    Running,
    /// Finished.
    Done,
    /// Failed after retries.
    Failed,
    /// Undone by a compensation.
    Compensated,
}

impl StepState {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Done => "done",
            Self::Failed => "failed",
            Self::Compensated => "compensated",
        }
    }
}

/// One saga step in the `progress` query.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StepProgress {
    /// Step name (`tailscale_key`, `hetzner_server`, `server_ready`, `actions_dispatch`,
    /// `actions_callback`, `tailscale_device`).
    pub name: String,
    /// Its state.
    pub state: StepState,
    /// Detail for a person: ids, errors, compensation results.
    pub detail: String,
}

/// Result of the saga's `progress` query.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProvisioningProgress {
    /// Agent being provisioned.
    pub agent_id: String,
    /// Steps in order.
    pub steps: Vec<StepProgress>,
    /// Failure reason, once failed.
    pub failure: Option<String>,
    /// Every change of a step, in order (runs from before this field answer none): what the
    /// API's event stream (`GET /api/agents/{id}/events`) sends, each change once.
    #[serde(default)]
    pub changes: Vec<StepChange>,
}

/// One change of one saga step: its state or detail as it became.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StepChange {
    /// Position in the run's changes, from 1.
    pub seq: u32,
    /// Step name.
    pub step: String,
    /// Its new state.
    pub state: StepState,
    /// Its new detail.
    pub detail: String,
    /// Workflow time of the change (RFC 3339, milliseconds).
    pub at: String,
}

/// Appends a [`StepChange`] for every step whose state or detail differs from its latest
/// change (or, for a step with none yet, from `pending` without detail). Pure: called by the
/// saga after any change of its steps, however it came (a step run, a signal, a rollback).
pub fn record_step_changes(changes: &mut Vec<StepChange>, steps: &[StepProgress], at: &str) {
    /// A saga makes a few dozen changes; the cap only guards against a loop.
    const MAX_CHANGES: usize = 500;
    for step in steps {
        let last = changes.iter().rev().find(|c| c.step == step.name);
        let unchanged = match last {
            Some(c) => c.state == step.state && c.detail == step.detail,
            None => step.state == StepState::Pending && step.detail.is_empty(),
        };
        if unchanged || changes.len() >= MAX_CHANGES {
            continue;
        }
        let seq = changes.last().map_or(1, |c| c.seq + 1);
        changes.push(StepChange {
            seq,
            step: step.name.clone(),
            state: step.state,
            detail: step.detail.clone(),
            at: at.to_owned(),
        });
    }
}

/// A secret that must cross a workflow boundary, sealed (ChaCha20-Poly1305) with a key only
/// workers hold. Histories show the ciphertext, never the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(transparent)]
pub struct SealedSecret(pub String);

/// Input of the Tailscale key activity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TailscaleKeyInput {
    /// Agent the key is for.
    pub agent_id: String,
}

/// Output of the Tailscale key activity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TailscaleKeyCreated {
    /// Key id (safe to log).
    pub key_id: String,
    /// The key itself, sealed for the VM's cloud-init.
    pub sealed_key: SealedSecret,
}

/// Input of the create-server activity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateServerInput {
    /// Agent id (becomes label `slipway-agent`).
    pub agent_id: String,
    /// Owner (becomes label `slipway-user`).
    pub user_id: String,
    /// Hetzner location.
    pub region: String,
    /// Sealed Tailscale auth key for cloud-init.
    pub sealed_auth_key: SealedSecret,
}

/// Input of the dispatch activity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DispatchInput {
    /// Opaque job id echoed by the callbacks.
    pub job_id: String,
    /// Agent id.
    pub agent_id: String,
    /// Hetzner location.
    pub region: String,
}

/// Input of the stop activity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StopServerInput {
    /// Agent whose server to stop.
    pub agent_id: String,
    /// Graceful shutdown budget before powering off.
    pub graceful_wait_secs: u64,
}

/// Input of the compensations and lookups keyed by agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AgentResources {
    /// Agent id; the device hostname is derived from it.
    pub agent_id: String,
}

#[cfg(test)]
mod tests {
    #[test]
    fn step_changes_are_logged_once_each() {
        use super::{StepProgress, StepState, record_step_changes};
        let mut steps = vec![
            StepProgress { name: "a".into(), state: StepState::Pending, detail: String::new() },
            StepProgress { name: "b".into(), state: StepState::Pending, detail: String::new() },
        ];
        let mut log = Vec::new();
        record_step_changes(&mut log, &steps, "t0");
        assert!(log.is_empty(), "pending steps without detail are not changes");
        steps[0].state = StepState::Running;
        record_step_changes(&mut log, &steps, "t1");
        record_step_changes(&mut log, &steps, "t1");
        steps[0].state = StepState::Done;
        steps[0].detail = "ok".into();
        steps[1].state = StepState::Running;
        record_step_changes(&mut log, &steps, "t2");
        let seen: Vec<_> = log.iter().map(|c| (c.seq, c.step.as_str(), c.state, c.at.as_str())).collect();
        assert_eq!(
            seen,
            [
                (1, "a", StepState::Running, "t1"),
                (2, "a", StepState::Done, "t2"),
                (3, "b", StepState::Running, "t2")
            ]
        );
    }

    use super::*;
    use serde_json::json;

    #[test]
    fn callback_wire_format_is_flat_json() {
        let cb: ActionsCallback = serde_json::from_value(json!({
            "job_id": "provisioning-u1/run-1", "agent_id": "a1", "status": "running", "run_id": "42"
        }))
        .unwrap();
        assert_eq!(cb.status, CallbackStatus::Running);
        assert_eq!(cb.run_id.as_deref(), Some("42"));
        assert_eq!(cb.reason, None);
    }

    #[test]
    fn a_checkout_is_heard_once_and_waits_while_it_is_scheduled_for_later() {
        let paid = |event: &str| ProvisionCommand {
            source: ProvisionSource::Checkout {
                event_id: event.into(),
                session_id: "cs_1".into(),
                customer_id: Some("cus_1".into()),
                subscription_id: None,
                user_id: Some("u1".into()),
            },
        };
        let mut c = Checkouts::default();
        assert!(c.hear(paid("evt_1")) && !c.hear(paid("evt_1")), "a redelivery is dropped");
        assert!(!c.hear(ProvisionCommand {
            source: ProvisionSource::Api { user_id: "u1".into(), customer_id: None }
        }));
        c.retry_at = Some(10);
        assert_eq!(c.take_due(), None, "scheduled for later");
        c.retry_at = None;
        assert_eq!(c.take_due(), Some(paid("evt_1")));
        for i in 0..40 {
            c.hear(paid(&format!("evt_n{i}")));
        }
        assert_eq!(c.seen.len(), Checkouts::REMEMBERED);
        // An input from before checkouts were signalled reads as none, and writes as before.
        let input: AgentWorkflowInput = serde_json::from_value(json!({
            "agent": AgentRecord::draft("a1", "u1", "fsn1"), "policy": ProvisioningPolicy::default()
        }))
        .unwrap();
        assert!(input.checkouts.is_empty());
        assert!(!serde_json::to_string(&input).unwrap().contains("checkouts"));
    }

    #[test]
    fn job_ids_round_trip() {
        let id = job_id("provisioning-u1", "3f2a");
        assert_eq!(parse_job_id(&id), Some(("provisioning-u1", "3f2a")));
        assert_eq!(parse_job_id("nope"), None);
        assert_eq!(parse_job_id("/x"), None);
    }

    #[test]
    fn outcomes_are_tagged() {
        let v = serde_json::to_value(ProvisionOutcome::Refused {
            code: "PROVISIONING_IN_PROGRESS".into(),
            reason: "r".into(),
        })
        .unwrap();
        assert_eq!(v["outcome"], "refused");
        assert_eq!(v["code"], "PROVISIONING_IN_PROGRESS");
    }

    #[test]
    fn statuses_serialize_lower_case() {
        assert_eq!(serde_json::to_value(AgentStatus::Provisioning).unwrap(), "provisioning");
        assert_eq!(AgentStatus::Active.as_str(), "active");
    }
}
