//! Slipway's Temporal workflows.
//!
//! # Rules (workflow code is replayed, so it must be deterministic)
//! - No I/O here: every call to the outside world is an activity (`slipway-activities`).
//!   That is a compile-time fact, not a convention: the provider clients live in
//!   `slipway-providers`, which this crate does not depend on and `slipway-activities` does not
//!   re-export, so workflow code cannot name a client or an HTTP type
//!   (`tests/tests/layering.rs` checks the dependency graph). Neither compiles here:
//!
//!   ```compile_fail
//!   use slipway_providers::stripe::StripeClient; // not a dependency of workflows
//!   ```
//!
//!   ```compile_fail
//!   let _ = reqwest::Client::new(); // nor is any HTTP library
//!   ```
//! - No clocks, randomness, threads or tokio: use `ctx.workflow_time()`, `ctx.timer(..)`,
//!   `ctx.wait_condition(..)`, and `temporalio_sdk::workflows::select!` (biased, so polling order
//!   is part of the code).
//! - Iterate in a stable order (`Vec`, `BTreeMap`), never over a `HashMap`.
//! - Changing a workflow's commands breaks replay of histories already recorded; every workflow
//!   type has a replay test against a committed history (`tests/histories/`), run in CI.
//!
//! # Layout
//! - [`agent`]: `Agent`, one long-lived workflow per agent; the single writer of its state
//!   (provision, stop, start, destroy, suspend, resume, one at a time).
//! - [`provisioning`]: `ProvisionAgent`, the saga that creates an agent's resources and
//!   compensates in reverse on failure. Its workflow id is per *user*, which is how Temporal's
//!   id uniqueness enforces one provisioning in flight per user.
//! - [`subscription`]: `Subscription`, one long-lived workflow per Stripe customer; applies
//!   Stripe events once and in a sane order, gates provisioning, suspends/resumes/destroys agents.
//! - [`client_stack`]: `ClientStack`, the saga that provisions a client's Supabase, schema,
//!   GitHub repository, Vercel project and n8n workflow, compensating in reverse on failure;
//!   [`stack_record`]: `StackRecord`, what a stack that succeeded holds, for as long as it lives
//!   (the saga's own workflow is removed by retention).
//! - [`job`]: `Job`, one GitHub issue's coding job (plan, code, review, PR, metered billing);
//!   [`job_gate`]: `JobGate`, a customer's concurrency cap; [`github_links`]: `GitHubLinks`,
//!   which GitHub account bills which customer.
//! - [`reconcile`]: `StripeCatchUp`, `GitHubRedelivery` and `OrphanSweep`, which Temporal
//!   Schedules run to recover what webhooks missed and find what no agent or stack owns.
//! - [`billing`]: the pure, unit-tested billing rules the subscription workflow applies.
//! - `saga` (crate-private): the kit `ProvisionAgent`, `ClientStack`, `Job` and the `Agent`'s
//!   destroy share: step tracking with the Web UI's current details, compensations run once each
//!   in reverse, and the one teardown order of an agent's resources.
//! - [`search_attributes`]: the keyword search attributes operators filter on in the Web UI.
//! - [`register_all`]: the one list of workflow types, used by the worker, the replay test and
//!   `slipway replay`, so a new workflow cannot be run without also being replayed.

pub mod agent;
pub mod billing;
pub mod client_stack;
pub mod github_links;
pub mod job;
pub mod job_gate;
pub(crate) mod protocol;
pub mod provisioning;
pub mod reconcile;
pub(crate) mod saga;
pub mod stack_record;
pub use slipway_activities::{
    lookups::{agent_closed, agent_start_options},
    search_attributes,
};
pub mod subscription;

mod details;
mod failure;
mod options;

pub use agent::AgentWorkflow;
pub use client_stack::ClientStackWorkflow;
pub use github_links::GitHubLinksWorkflow;
pub use job::JobWorkflow;
pub use job_gate::JobGateWorkflow;
pub use provisioning::ProvisionAgentWorkflow;
pub use reconcile::{GitHubRedeliveryWorkflow, OrphanSweepWorkflow, StripeCatchUpWorkflow};
pub use stack_record::StackRecordWorkflow;
pub use subscription::SubscriptionWorkflow;

use temporalio_common::WorkflowDefinition;
use temporalio_sdk::{
    WorkerOptionsBuilder, WorkflowRegistrationError, worker_options_builder,
    workflow_replayer::{WorkflowReplayerOptionsBuilder, workflow_replayer_options_builder},
};
use temporalio_workflow::workflows::WorkflowImplementation;

/// Something workflow types are registered on: the worker's options and the replayer's options
/// (two builder types of the SDK with the same `register_workflow`, but no common trait).
pub trait WorkflowRegistry: Sized {
    /// Register the workflow type `W`.
    fn register<W>(self) -> Result<Self, WorkflowRegistrationError>
    where
        W: WorkflowImplementation,
        <W::Run as WorkflowDefinition>::Input: Send;
}

impl<S: worker_options_builder::State> WorkflowRegistry for WorkerOptionsBuilder<S> {
    fn register<W>(self) -> Result<Self, WorkflowRegistrationError>
    where
        W: WorkflowImplementation,
        <W::Run as WorkflowDefinition>::Input: Send,
    {
        self.register_workflow::<W>()
    }
}

impl<S: workflow_replayer_options_builder::State> WorkflowRegistry for WorkflowReplayerOptionsBuilder<S> {
    fn register<W>(self) -> Result<Self, WorkflowRegistrationError>
    where
        W: WorkflowImplementation,
        <W::Run as WorkflowDefinition>::Input: Send,
    {
        self.register_workflow::<W>()
    }
}

/// The workflow's clock, in Unix seconds (0 before the first activation).
pub(crate) fn unix<W>(ctx: &temporalio_sdk::WorkflowContext<W>) -> i64 {
    ctx.workflow_time()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs() as i64)
}

/// The workflow's clock as RFC 3339 with milliseconds (the epoch before the first activation).
pub(crate) fn rfc3339_millis(time: Option<std::time::SystemTime>) -> String {
    let ms = time.and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map_or(0, |d| d.as_millis());
    let secs = agent::format_rfc3339((ms / 1000) as u64);
    format!("{}.{:03}Z", secs.trim_end_matches('Z'), ms % 1000)
}

/// Register every Slipway workflow type.
pub fn register_all<R: WorkflowRegistry>(registry: R) -> Result<R, WorkflowRegistrationError> {
    registry
        .register::<AgentWorkflow>()?
        .register::<ProvisionAgentWorkflow>()?
        .register::<SubscriptionWorkflow>()?
        .register::<ClientStackWorkflow>()?
        .register::<StackRecordWorkflow>()?
        .register::<JobWorkflow>()?
        .register::<JobGateWorkflow>()?
        .register::<GitHubLinksWorkflow>()?
        .register::<StripeCatchUpWorkflow>()?
        .register::<GitHubRedeliveryWorkflow>()?
        .register::<OrphanSweepWorkflow>()
}
