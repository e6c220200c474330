//! Payloads of the `ClientStack` workflow: one client's Supabase project and schema, GitHub
//! repository, Vercel project and deployment, and n8n workflow.

use serde::{Deserialize, Serialize};

use crate::model::StepProgress;

/// Workflow id of a client's stack provisioning (one per client id).
pub fn stack_workflow_id(client_id: &str) -> String {
    format!("client-stack-{client_id}")
}

/// Workflow id of a client's stack record (`StackRecord`): the long-lived owner of what a stack
/// that succeeded holds. The saga's own workflow closes when it succeeds and Temporal's retention
/// removes it later; the record stays, so the orphan sweep can still ask who holds what.
pub fn stack_record_workflow_id(client_id: &str) -> String {
    format!("stack-record-{client_id}")
}

/// Service tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    /// Starter.
    Starter,
    /// Professional.
    Professional,
    /// Enterprise.
    Enterprise,
}

/// Input of the workflow (validated by the API).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ClientStackRequest {
    /// `[a-z0-9-]`, 1–50: every resource name derives from it.
    pub client_id: String,
    /// Display name.
    pub client_name: String,
    /// Contact address.
    pub org_email: String,
    /// Tier.
    pub tier: Tier,
    /// Operator who asked (`admin:<sub>`).
    pub requested_by: String,
}

/// What the activities need to name and find a client's resources.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StackTarget {
    /// Client id.
    pub client_id: String,
    /// Display name.
    pub client_name: String,
}

/// Everything created, as far as known.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StackResources {
    /// Supabase project ref.
    pub supabase_ref: Option<String>,
    /// Supabase API URL.
    pub supabase_url: Option<String>,
    /// Migrations applied (in order), including ones already present.
    pub migrations: Vec<String>,
    /// `owner/name` of the GitHub repository.
    pub repository: Option<String>,
    /// Its web URL.
    pub repository_url: Option<String>,
    /// Vercel project id.
    pub vercel_project_id: Option<String>,
    /// URL of the first production deployment.
    pub deployment_url: Option<String>,
    /// n8n workflow id.
    pub n8n_workflow_id: Option<String>,
    /// The client's n8n webhook URL.
    pub webhook_url: Option<String>,
}

/// Where the provisioning stands (serialized as its `SlipwayStatus` value).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum StackState {
    /// Steps running.
    #[serde(rename = "provisioning")]
    Running,
    /// Every resource created.
    #[serde(rename = "ready")]
    Succeeded,
    /// A step failed; rollback running.
    RollingBack,
    /// A step failed; everything was removed.
    RolledBack,
    /// A step failed and some resources could not be removed: see `leftovers`.
    #[serde(rename = "needs_attention")]
    RollbackIncomplete,
}

impl StackState {
    /// Value of the `SlipwayStatus` search attribute.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "provisioning",
            Self::Succeeded => "ready",
            Self::RollingBack => "rolling_back",
            Self::RolledBack => "rolled_back",
            Self::RollbackIncomplete => "needs_attention",
        }
    }
}

/// Result of the `status` query (and of `GET /api/provisioning/{clientId}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ClientStackStatus {
    /// Client id.
    pub client_id: String,
    /// Overall state.
    pub state: StackState,
    /// Steps in order.
    pub steps: Vec<StepProgress>,
    /// Resources created.
    pub resources: StackResources,
    /// Why it failed.
    pub failure: Option<String>,
    /// Resources that could not be removed by the rollback.
    pub leftovers: Vec<String>,
}

/// Output of the Supabase project activity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SupabaseProject {
    /// Project ref.
    pub project_ref: String,
    /// API URL.
    pub api_url: String,
}

/// Output of the repository activity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RepositoryOut {
    /// `owner/name`.
    pub full_name: String,
    /// Web URL.
    pub html_url: String,
}

/// Input of the Vercel activities.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VercelInput {
    /// Client id (the project name).
    pub client_id: String,
    /// `owner/name` of the repository to link.
    pub repository: String,
    /// Supabase project whose URL and anon key become environment variables.
    pub supabase_ref: String,
}

/// Output of the deployment activity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeploymentOut {
    /// `dpl_…`.
    pub id: String,
    /// `https://…`.
    pub url: String,
}

/// Output of the n8n activity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct N8nOut {
    /// Workflow id.
    pub workflow_id: String,
    /// Production webhook URL.
    pub webhook_url: String,
}
