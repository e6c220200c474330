//! The orphan sweep's activities: list what Slipway created at each provider (by its names and
//! labels), ask the owners' workflows what they hold, and delete an orphan.
//!
//! Ownership is decided from the owners' workflow state, never from a label alone: a server
//! labelled `slipway-agent=a1` belongs to `agent-a1` only while that workflow is live and either
//! busy (a saga in flight owns everything with its name) or naming that server in its record.
//! The owners are asked through the worker's Temporal client by their registered names
//! (`Agent.describe`, `ClientStack.status`, `StackRecord.status`), as the job lookups do,
//! because the workflows live in a crate that depends on this one. A stack that succeeded is
//! asked through its `StackRecord`, which outlives the saga's retention.
//!
//! Deployments sharing a provider account are told apart by the deployment's mark
//! (`SLIPWAY_DEPLOYMENT`) where Slipway can set one: the `slipway-deployment` label of a Hetzner
//! server and the mark ending a repository's description. Resources marked by another
//! deployment are not listed at all; resources of this deployment's mark are
//! [`Resource::marked`]. Tailscale devices and keys, Supabase projects and n8n workflows carry no
//! mark Slipway can set (a device's tags must be owned in the tailnet's policy, the others have
//! only names), so they are listed by name and proven Slipway's by their ids in the owners'
//! records (see `slipway_workflows::reconcile::orphans`).
//!
//! What is listed, by owner:
//! - agents (`slipway-<agent id>`): Hetzner servers labelled `slipway-agent`, Tailscale devices
//!   with that hostname and auth keys described `slipway agent <agent id>`;
//! - client stacks (`slipway-<client id>`): the Supabase organization's projects and the n8n
//!   instance's workflows with that name, and the client organization's repositories whose
//!   description carries Slipway's mark (a repository is named by the bare client id).
//!
//! Not swept: Vercel projects, which carry the bare client id and no mark Slipway could tell
//! from a project someone else made in the same team.

use std::sync::Arc;

use slipway_proto::{
    model::{AgentRecord, AgentStatus},
    reconcile::{Owner, OwnerState, Resource},
    stack::{ClientStackStatus, StackState, stack_record_workflow_id, stack_workflow_id},
};
use slipway_providers::{
    ClientError, github::GitHubClient, hetzner::HetznerClient, n8n::N8nClient, supabase::SupabaseClient,
    tailscale::TailscaleClient,
};
use temporalio_client::{Client, WorkflowExecutionStatus};
use temporalio_macros::activities;
use temporalio_sdk::activities::{ActivityContext, ActivityError};

use crate::{
    error::IntoActivityError,
    metrics::record_reconciled,
    provisioning::{AGENT_LABEL, DEPLOYMENT_LABEL},
    stack::{REPOSITORY_MARK, repository_mark},
    temporal_ask::{self, permanent, transient},
};

/// The prefix of every name Slipway gives a resource.
const PREFIX: &str = "slipway-";
/// The prefix of an agent's Tailscale auth key description.
const KEY_PREFIX: &str = "slipway agent ";

/// The sweep's clients.
pub struct SweepActivities {
    hetzner: HetznerClient,
    tailscale: TailscaleClient,
    supabase: SupabaseClient,
    supabase_org: String,
    n8n: N8nClient,
    github: GitHubClient,
    github_org: String,
    deployment: String,
    temporal: Client,
}

impl std::fmt::Debug for SweepActivities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SweepActivities").finish_non_exhaustive()
    }
}

/// Unix seconds of an RFC 3339 time.
fn unix(at: Option<&str>) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(at?).ok().map(|t| t.timestamp())
}

impl SweepActivities {
    /// Over the worker's clients (the provisioning saga's and the client stack's) and its
    /// Temporal client.
    pub fn new(
        provisioning: &crate::ProvisioningConfig,
        stack: &crate::StackConfig,
        temporal: Client,
    ) -> Self {
        Self {
            hetzner: provisioning.hetzner.clone(),
            tailscale: provisioning.tailscale.clone(),
            supabase: stack.supabase.clone(),
            supabase_org: stack.supabase_org_id.clone(),
            n8n: stack.n8n.clone(),
            github: stack.github.clone(),
            github_org: stack.github_org.clone(),
            deployment: provisioning.deployment.clone(),
            temporal,
        }
    }

    async fn agent_state(&self, agent_id: &str) -> Result<OwnerState, ActivityError> {
        let owner = Owner::Agent(agent_id.to_owned());
        let workflow_id = slipway_proto::model::agent_workflow_id(agent_id);
        // An agent's workflow closes only once it is destroyed; one Temporal does not know is
        // nobody's to delete. A closed one is still asked: what its record names is provably
        // Slipway's.
        let running = match temporal_ask::status(&self.temporal, &workflow_id).await? {
            None => return Ok(OwnerState::unknown(owner)),
            Some(status) => status == WorkflowExecutionStatus::Running,
        };
        let Some(record) =
            temporal_ask::query::<_, AgentRecord>(&self.temporal, &workflow_id, "describe", &()).await?
        else {
            return Ok(OwnerState::unknown(owner));
        };
        let busy = matches!(
            record.status,
            AgentStatus::Draft | AgentStatus::Provisioning | AgentStatus::Destroying | AgentStatus::Stopping
        ) || record.awaiting_payment.is_some();
        let mut holds = Vec::new();
        if let Some(server) = &record.server {
            holds.push(server.id.to_string());
        }
        if let Some(ts) = &record.tailscale {
            holds.push(ts.key_id.clone());
            holds.extend(ts.device_id.clone());
        }
        let live = running && record.status != AgentStatus::Destroyed && record.status != AgentStatus::Failed;
        // A live agent whose device id is not recorded keeps every device with its hostname.
        let keeps_devices = live && record.tailscale.as_ref().is_some_and(|t| t.device_id.is_none());
        if keeps_devices {
            holds.push(format!("hostname:{}", slipway_proto::model::server_name(agent_id)));
        }
        Ok(OwnerState { owner, live, busy: busy && live, holds, unknown: false })
    }

    async fn stack_state(&self, client_id: &str) -> Result<OwnerState, ActivityError> {
        let owner = Owner::ClientStack(client_id.to_owned());
        let workflow_id = stack_workflow_id(client_id);
        // A stack that succeeded closes its workflow, which retention removes later; its record
        // (`StackRecord`) stays. An owner Temporal knows neither of is kept, never read as gone.
        let saga = temporal_ask::status(&self.temporal, &workflow_id).await?;
        if saga == Some(WorkflowExecutionStatus::Running) {
            return Ok(OwnerState { owner, live: true, busy: true, holds: Vec::new(), unknown: false });
        }
        let status = |id: String| async move {
            temporal_ask::query::<_, ClientStackStatus>(&self.temporal, &id, "status", &()).await
        };
        // The record, once there is one, is the last word: it outlives the saga.
        let answer = match status(stack_record_workflow_id(client_id)).await? {
            Some(recorded) => Some(recorded),
            None if saga.is_some() => status(workflow_id).await?,
            None => None,
        };
        match answer {
            None => Ok(OwnerState::unknown(owner)),
            Some(status) => {
                let r = &status.resources;
                let holds = [&r.supabase_ref, &r.n8n_workflow_id, &r.repository, &r.vercel_project_id]
                    .into_iter()
                    .flatten()
                    .cloned()
                    .collect();
                Ok(OwnerState {
                    owner,
                    live: status.state == StackState::Succeeded,
                    busy: false,
                    holds,
                    unknown: false,
                })
            }
        }
    }
}

#[activities]
impl SweepActivities {
    /// Every resource carrying Slipway's names and labels.
    #[activity]
    pub async fn list_resources(
        self: Arc<Self>,
        _ctx: ActivityContext,
    ) -> Result<Vec<Resource>, ActivityError> {
        let mut out = Vec::new();
        for s in self.hetzner.list_servers(AGENT_LABEL).await.map_err(ClientError::into_activity_error)? {
            let Some(agent) = s.labels.get(AGENT_LABEL).filter(|a| !a.is_empty()).cloned() else {
                continue;
            };
            // Another deployment's server is not ours to judge; one without the label was made
            // before deployments were marked.
            let marked = match s.labels.get(DEPLOYMENT_LABEL) {
                Some(d) if *d != self.deployment => continue,
                d => d.is_some(),
            };
            out.push(Resource {
                provider: "hetzner".into(),
                kind: "server".into(),
                id: s.id.to_string(),
                name: s.name.clone(),
                owner: Owner::Agent(agent),
                created: unix(s.created.as_deref()),
                marked,
            });
        }
        for d in self.tailscale.list_devices().await.map_err(ClientError::into_activity_error)? {
            let Some(agent) = d.hostname.strip_prefix(PREFIX).filter(|a| !a.is_empty()) else { continue };
            out.push(Resource {
                provider: "tailscale".into(),
                kind: "device".into(),
                id: d.api_id().to_owned(),
                name: d.hostname.clone(),
                owner: Owner::Agent(agent.to_owned()),
                created: unix(d.created.as_deref()),
                marked: false,
            });
        }
        for k in self.tailscale.list_keys().await.map_err(ClientError::into_activity_error)? {
            let Some(agent) = k.description.strip_prefix(KEY_PREFIX).filter(|a| !a.is_empty()) else {
                continue;
            };
            out.push(Resource {
                provider: "tailscale".into(),
                kind: "auth_key".into(),
                id: k.id.clone(),
                name: k.description.clone(),
                owner: Owner::Agent(agent.to_owned()),
                created: unix(k.created.as_deref()),
                marked: false,
            });
        }
        for p in
            self.supabase.list_projects(&self.supabase_org).await.map_err(ClientError::into_activity_error)?
        {
            let Some(client) = p.name.strip_prefix(PREFIX).filter(|c| !c.is_empty()) else { continue };
            out.push(Resource {
                provider: "supabase".into(),
                kind: "project".into(),
                id: p.id.clone(),
                name: p.name.clone(),
                owner: Owner::ClientStack(client.to_owned()),
                created: unix(p.created_at.as_deref()),
                marked: false,
            });
        }
        for w in self.n8n.list_workflows().await.map_err(ClientError::into_activity_error)? {
            let Some(client) = w.name.strip_prefix(PREFIX).filter(|c| !c.is_empty()) else { continue };
            out.push(Resource {
                provider: "n8n".into(),
                kind: "workflow".into(),
                id: w.id.clone(),
                name: w.name.clone(),
                owner: Owner::ClientStack(client.to_owned()),
                created: unix(w.created_at.as_deref()),
                marked: false,
            });
        }
        let ours = repository_mark(&self.deployment);
        for r in
            self.github.org_repositories(&self.github_org).await.map_err(ClientError::into_activity_error)?
        {
            // This deployment's mark, or the one repositories had before deployments were
            // marked; another deployment's is not ours to judge.
            let description = r.description.as_deref().unwrap_or_default();
            let marked = description.ends_with(&ours);
            if !marked && !description.ends_with(REPOSITORY_MARK) {
                continue;
            }
            let full_name = r.full_name.clone().unwrap_or_else(|| format!("{}/{}", self.github_org, r.name));
            out.push(Resource {
                provider: "github".into(),
                kind: "repository".into(),
                id: full_name.clone(),
                name: full_name,
                owner: Owner::ClientStack(r.name.clone()),
                created: r.created_at.map(|t| t.timestamp()),
                marked,
            });
        }
        Ok(out)
    }

    /// What each owner's workflow holds.
    #[activity]
    pub async fn owner_states(
        self: Arc<Self>,
        ctx: ActivityContext,
        owners: Vec<Owner>,
    ) -> Result<Vec<OwnerState>, ActivityError> {
        let mut states = Vec::with_capacity(owners.len());
        for (i, owner) in owners.iter().enumerate() {
            let _ = ctx.record_heartbeat(i as u32).await;
            states.push(match owner {
                Owner::Agent(id) => self.agent_state(id).await?,
                Owner::ClientStack(id) => self.stack_state(id).await?,
            });
        }
        Ok(states)
    }

    /// Logs and counts the orphans a sweep found (`slipway_reconciled{outcome="found"}`).
    #[activity]
    pub async fn record_orphans(
        self: Arc<Self>,
        _ctx: ActivityContext,
        found: Vec<Resource>,
    ) -> Result<(), ActivityError> {
        for r in &found {
            tracing::warn!(provider = %r.provider, kind = %r.kind, id = %r.id, name = %r.name, owner = ?r.owner, "orphan found");
            record_reconciled("orphans", "found", Some(&r.provider), 1);
        }
        Ok(())
    }

    /// Deletes an orphan. `Ok(false)` if it was already gone.
    #[activity]
    pub async fn delete_orphan(
        self: Arc<Self>,
        _ctx: ActivityContext,
        r: Resource,
    ) -> Result<bool, ActivityError> {
        let gone = match (r.provider.as_str(), r.kind.as_str()) {
            ("hetzner", "server") => {
                let id = r.id.parse::<u64>().map_err(|e| transient(format!("server id {}: {e}", r.id)))?;
                self.hetzner.delete_server(id).await
            }
            ("tailscale", "device") => self.tailscale.delete_device(&r.id).await,
            ("tailscale", "auth_key") => self.tailscale.delete_key(&r.id).await,
            ("supabase", "project") => self.supabase.delete_project(&r.id).await,
            ("n8n", "workflow") => self.n8n.delete_workflow(&r.id).await,
            ("github", "repository") => self.github.delete_repository(&r.id).await,
            (p, k) => {
                return Err(permanent(format!("no way to delete a {p} {k}")));
            }
        }
        .map_err(ClientError::into_activity_error)?;
        tracing::warn!(provider = %r.provider, kind = %r.kind, id = %r.id, name = %r.name, "orphan deleted");
        record_reconciled("orphans", "deleted", Some(&r.provider), 1);
        Ok(gone)
    }
}
