//! `ClientStack`: provisions a new client's whole stack in one durable saga
//! (`client-stack-<clientId>`): Supabase project (healthy) → schema migrations → GitHub
//! repository from the template → Vercel project and first deployment → n8n workflow (active).
//!
//! On a failure after retries the compensations run in reverse (n8n → Vercel → GitHub →
//! Supabase). Each is registered before its step runs (a step can create its resource and still
//! fail), runs once on a detached cancellation token, and is isolated: one that still fails is
//! recorded as a leftover and the others go on. The workflow then fails with the reason and the
//! exact list of leftovers; `SlipwayStatus = needs_attention` lets operators find every stack
//! whose rollback was incomplete.

use std::time::Duration;

use slipway_activities::{LookupActivities, StackActivities};
use slipway_proto::{
    model::{StepProgress, StepState},
    stack::{ClientStackRequest, ClientStackStatus, StackResources, StackState, StackTarget, VercelInput},
};
use temporalio_common::RetryPolicy;
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{
    ActivityExecutionError, ActivityOptions, ApplicationFailure, WorkflowCancellationToken, WorkflowContext,
    WorkflowContextView, WorkflowResult,
};

use crate::{
    saga::{self, Saga},
    search_attributes,
};

/// Patch: a stack that succeeded hands its status to its `StackRecord` before it completes, so
/// its resources keep a known owner after retention removes this workflow. Runs recorded before
/// it complete without.
pub const RECORD_PATCH: &str = "client-stack-keeps-a-record";

/// Step names, in order.
pub mod steps {
    /// Supabase project, created and healthy.
    pub const SUPABASE: &str = "supabase_project";
    /// Schema migrations.
    pub const SCHEMA: &str = "schema";
    /// GitHub repository from the template.
    pub const GITHUB: &str = "github_repository";
    /// Vercel project and first deployment.
    pub const VERCEL: &str = "vercel";
    /// n8n workflow, active.
    pub const N8N: &str = "n8n_workflow";
    /// All, in order.
    pub const ALL: [&str; 5] = [SUPABASE, SCHEMA, GITHUB, VERCEL, N8N];
}

/// Undo actions, in registration order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Undo {
    Supabase,
    GitHub,
    Vercel,
    N8n,
}

impl Undo {
    fn steps(self) -> &'static [&'static str] {
        match self {
            // The schema lives in the project: deleting the project undoes both.
            Self::Supabase => &[steps::SUPABASE, steps::SCHEMA],
            Self::GitHub => &[steps::GITHUB],
            Self::Vercel => &[steps::VERCEL],
            Self::N8n => &[steps::N8N],
        }
    }

    fn resource(self, client_id: &str) -> String {
        match self {
            Self::Supabase => format!("supabase project slipway-{client_id}"),
            Self::GitHub => format!("github repository of {client_id}"),
            Self::Vercel => format!("vercel project {client_id}"),
            Self::N8n => format!("n8n workflow slipway-{client_id}"),
        }
    }
}

/// The client-stack workflow.
#[workflow]
pub struct ClientStackWorkflow {
    req: ClientStackRequest,
    state: StackState,
    steps: Vec<StepProgress>,
    resources: StackResources,
    failure: Option<String>,
    leftovers: Vec<String>,
}

fn api_step(summary: &str, start_to_close: Duration) -> ActivityOptions {
    crate::options::retrying(summary, start_to_close, Some(Duration::from_secs(60)), 10)
}

#[workflow_methods]
impl ClientStackWorkflow {
    /// Initial state: every step pending.
    #[init]
    pub fn new(_ctx: &WorkflowContextView, req: ClientStackRequest) -> Self {
        let steps = saga::fresh_steps(&steps::ALL);
        Self {
            req,
            state: StackState::Running,
            steps,
            resources: StackResources::default(),
            failure: None,
            leftovers: Vec::new(),
        }
    }

    /// Runs the saga; returns the final status, or fails after compensating.
    #[run(name = "ClientStack")]
    pub async fn run(ctx: &mut WorkflowContext<Self>) -> WorkflowResult<ClientStackStatus> {
        Self::publish(ctx);
        let mut undo = Vec::new();
        match Self::provision(ctx, &mut undo).await {
            Ok(()) => {
                ctx.state_mut(|s| s.state = StackState::Succeeded);
                Self::publish(ctx);
                let status = ctx.state(Self::snapshot);
                if ctx.patched(RECORD_PATCH) {
                    // Retried until it holds: without the record the stack's resources would
                    // have no known owner once this workflow is removed.
                    let client = status.client_id.clone();
                    ctx.execute_activity(
                        LookupActivities::record_stack,
                        status.clone(),
                        crate::options::retrying(
                            &format!("Temporal: record what the stack of {client} holds"),
                            Duration::from_secs(30),
                            None,
                            0,
                        ),
                    )
                    .await
                    .map_err(|e| {
                        ApplicationFailure::builder(format!("recording the stack of {client}: {e}")).build()
                    })?;
                }
                Ok(status)
            }
            Err(reason) => {
                ctx.state_mut(|s| {
                    s.failure = Some(reason.clone());
                    s.state = StackState::RollingBack;
                });
                Self::publish(ctx);
                let leftovers = Self::compensate(ctx, &undo).await;
                let client = ctx.state(|s| s.req.client_id.clone());
                let (state, message) = if leftovers.is_empty() {
                    (
                        StackState::RolledBack,
                        format!("stack for {client} failed and was rolled back: {reason}"),
                    )
                } else {
                    (
                        StackState::RollbackIncomplete,
                        format!(
                            "stack for {client} failed: {reason}; rollback incomplete, left behind: {}",
                            leftovers.join("; ")
                        ),
                    )
                };
                ctx.state_mut(|s| {
                    s.state = state;
                    s.leftovers = leftovers;
                });
                Self::publish(ctx);
                Err(ApplicationFailure::builder(message)
                    .type_name("ClientStackFailed".to_owned())
                    .non_retryable(true)
                    .build()
                    .into())
            }
        }
    }

    /// Status, step by step, with resource ids and URLs.
    #[query]
    pub fn status(&self, _ctx: &WorkflowContextView) -> ClientStackStatus {
        self.snapshot()
    }
}

impl ClientStackWorkflow {
    fn snapshot(&self) -> ClientStackStatus {
        ClientStackStatus {
            client_id: self.req.client_id.clone(),
            state: self.state,
            steps: self.steps.clone(),
            resources: self.resources.clone(),
            failure: self.failure.clone(),
            leftovers: self.leftovers.clone(),
        }
    }

    fn publish(ctx: &WorkflowContext<Self>) {
        let state = ctx.state(|s| s.state);
        ctx.upsert_search_attributes([search_attributes::STATUS.value_set(state.as_str().to_owned())]);
    }

    async fn provision(ctx: &mut WorkflowContext<Self>, undo: &mut Vec<Undo>) -> Result<(), String> {
        let req = ctx.state(|s| s.req.clone());
        let target = StackTarget { client_id: req.client_id.clone(), client_name: req.client_name.clone() };
        let short = Duration::from_secs(60);

        // 1. Supabase project, healthy.
        Self::mark(ctx, steps::SUPABASE, StepState::Running, "");
        undo.push(Undo::Supabase);
        let project = ctx
            .execute_activity(
                StackActivities::create_supabase_project,
                target.clone(),
                api_step(&format!("Supabase: create project for {}", req.client_id), short),
            )
            .await
            .map_err(|e| Self::fail(ctx, steps::SUPABASE, &e))?;
        ctx.state_mut(|s| {
            s.resources.supabase_ref = Some(project.project_ref.clone());
            s.resources.supabase_url = Some(project.api_url.clone());
        });
        Self::mark(
            ctx,
            steps::SUPABASE,
            StepState::Running,
            format!("project {} coming up", project.project_ref),
        );
        ctx.execute_activity(
            StackActivities::wait_supabase_healthy,
            project.project_ref.clone(),
            api_step(
                &format!("Supabase: wait for project {} to be healthy", project.project_ref),
                Duration::from_secs(20 * 60),
            ),
        )
        .await
        .map_err(|e| Self::fail(ctx, steps::SUPABASE, &e))?;
        Self::mark(ctx, steps::SUPABASE, StepState::Done, format!("project {} healthy", project.project_ref));

        // 2. Schema.
        Self::mark(ctx, steps::SCHEMA, StepState::Running, "");
        let migrations = ctx
            .execute_activity(
                StackActivities::apply_migrations,
                project.project_ref.clone(),
                api_step(&format!("Supabase: apply migrations to {}", project.project_ref), short),
            )
            .await
            .map_err(|e| Self::fail(ctx, steps::SCHEMA, &e))?;
        let detail = format!("{} migration(s): {}", migrations.len(), migrations.join(", "));
        ctx.state_mut(|s| s.resources.migrations = migrations);
        Self::mark(ctx, steps::SCHEMA, StepState::Done, detail);

        // 3. GitHub repository.
        Self::mark(ctx, steps::GITHUB, StepState::Running, "");
        undo.push(Undo::GitHub);
        let repo = ctx
            .execute_activity(
                StackActivities::create_repository,
                target.clone(),
                api_step(&format!("GitHub: create repository for {} from template", req.client_id), short),
            )
            .await
            .map_err(|e| Self::fail(ctx, steps::GITHUB, &e))?;
        ctx.state_mut(|s| {
            s.resources.repository = Some(repo.full_name.clone());
            s.resources.repository_url = Some(repo.html_url.clone());
        });
        Self::mark(ctx, steps::GITHUB, StepState::Done, repo.html_url.clone());

        // 4. Vercel project and first deployment.
        Self::mark(ctx, steps::VERCEL, StepState::Running, "");
        undo.push(Undo::Vercel);
        let input = VercelInput {
            client_id: req.client_id.clone(),
            repository: repo.full_name.clone(),
            supabase_ref: project.project_ref.clone(),
        };
        let project_id = ctx
            .execute_activity(
                StackActivities::create_vercel_project,
                input.clone(),
                api_step(&format!("Vercel: create project for {}", req.client_id), short),
            )
            .await
            .map_err(|e| Self::fail(ctx, steps::VERCEL, &e))?;
        ctx.state_mut(|s| s.resources.vercel_project_id = Some(project_id.clone()));
        Self::mark(ctx, steps::VERCEL, StepState::Running, format!("project {project_id} deploying"));
        let deployment = ctx
            .execute_activity(
                StackActivities::deploy_vercel,
                input,
                api_step(
                    &format!("Vercel: first deployment of {}", req.client_id),
                    Duration::from_secs(30 * 60),
                ),
            )
            .await
            .map_err(|e| Self::fail(ctx, steps::VERCEL, &e))?;
        ctx.state_mut(|s| s.resources.deployment_url = Some(deployment.url.clone()));
        Self::mark(ctx, steps::VERCEL, StepState::Done, deployment.url);

        // 5. n8n workflow.
        Self::mark(ctx, steps::N8N, StepState::Running, "");
        undo.push(Undo::N8n);
        let n8n = ctx
            .execute_activity(
                StackActivities::create_n8n_workflow,
                target,
                api_step(&format!("n8n: create workflow for {}", req.client_id), short),
            )
            .await
            .map_err(|e| Self::fail(ctx, steps::N8N, &e))?;
        ctx.state_mut(|s| {
            s.resources.n8n_workflow_id = Some(n8n.workflow_id.clone());
            s.resources.webhook_url = Some(n8n.webhook_url.clone());
        });
        Self::mark(
            ctx,
            steps::N8N,
            StepState::Done,
            format!("workflow {} active at {}", n8n.workflow_id, n8n.webhook_url),
        );
        Ok(())
    }

    /// Runs each registered compensation once, in reverse; returns what could not be removed.
    async fn compensate(ctx: &mut WorkflowContext<Self>, undo: &[Undo]) -> Vec<String> {
        saga::compensate(ctx, undo).await
    }
}

/// Compensations outlive a cancelled workflow and retry for minutes.
fn compensation_step(summary: &str) -> ActivityOptions {
    ActivityOptions::with_start_to_close_timeout(Duration::from_secs(60))
        .retry_policy(
            RetryPolicy::builder()
                .initial_interval(Duration::from_secs(1))
                .maximum_interval(Duration::from_secs(30))
                .maximum_attempts(8)
                .build(),
        )
        .cancellation_token(WorkflowCancellationToken::new())
        .summary(summary.to_owned())
        .build()
}

impl Saga for ClientStackWorkflow {
    type Undo = Undo;

    fn steps_mut(&mut self) -> &mut Vec<StepProgress> {
        &mut self.steps
    }

    fn steps(&self) -> &[StepProgress] {
        &self.steps
    }

    fn details(&self) -> String {
        crate::details::saga(
            &format!(
                "Client stack {} ({}): {}",
                self.req.client_id,
                self.req.client_name,
                self.state.as_str()
            ),
            &self.steps,
        )
    }

    fn undoes(undo: Undo) -> &'static [&'static str] {
        undo.steps()
    }

    async fn undo(ctx: &mut WorkflowContext<Self>, undo: Undo) -> Result<String, ActivityExecutionError> {
        let client = ctx.state(|s| s.req.client_id.clone());
        let removed = match undo {
            Undo::N8n => {
                let opts = compensation_step(&format!("n8n: delete workflow of {client}"));
                ctx.execute_activity(StackActivities::delete_n8n_workflow, client, opts).await
            }
            Undo::Vercel => {
                let opts = compensation_step(&format!("Vercel: delete project of {client}"));
                ctx.execute_activity(StackActivities::delete_vercel_project, client, opts).await
            }
            Undo::GitHub => {
                let opts = compensation_step(&format!("GitHub: delete repository of {client}"));
                ctx.execute_activity(StackActivities::delete_repository, client, opts).await
            }
            Undo::Supabase => {
                let opts = compensation_step(&format!("Supabase: delete project of {client}"));
                ctx.execute_activity(StackActivities::delete_supabase_project, client, opts).await
            }
        }?;
        Ok(if removed { "removed" } else { "nothing to remove" }.to_owned())
    }

    fn leftover(&self, undo: Undo, error: &str) -> String {
        format!("{} ({error})", undo.resource(&self.req.client_id))
    }
}
