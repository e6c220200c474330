//! Activities of the agent provisioning saga, and of its compensations.
//!
//! Every activity is idempotent under Temporal's retries, because a retry may follow an attempt
//! whose request *did* reach the provider but whose answer was lost:
//! - resources are named deterministically from the agent id (`slipway-<agent_id>` server and
//!   hostname, `slipway agent <agent_id>` key description), so a retry finds what an earlier
//!   attempt created;
//! - the server is adopted when it already exists with our labels, never duplicated;
//! - compensations look resources up by those names, so they also remove what a failed attempt
//!   created without telling the workflow, and treat "already gone" (404) as success;
//! - the bootstrap job's `workflow_dispatch` carries a correlation id (from the saga run, see
//!   [`correlation_id`]) that the shipped workflow puts in its `run-name`: a retried dispatch
//!   first looks for a run whose title carries it and adopts that run instead of starting a
//!   second one, and [`ProvisioningActivities::find_provision_run`] finds the run when the
//!   dispatch's answer did not name it.

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, SystemTime},
};

use chrono::{DateTime, Utc};

use secrecy::{ExposeSecret, SecretString};
use slipway_proto::model::{
    AgentResources, CreateServerInput, DispatchInput, ServerRef, StopServerInput, TailscaleKeyCreated,
    TailscaleKeyInput, parse_job_id, server_name,
};
use temporalio_macros::activities;
use temporalio_sdk::{
    ApplicationFailure,
    activities::{ActivityContext, ActivityError},
};

use slipway_providers::{
    ClientError,
    github::GitHubClient,
    hetzner::{CreateServer, HetznerClient, PowerAction, Server},
    tailscale::{NewAuthKey, TailscaleClient},
};

use crate::{error::IntoActivityError, seal::Sealer};

/// Label carrying the agent id on Hetzner servers; ownership check before adopt or delete.
pub const AGENT_LABEL: &str = "slipway-agent";
/// Label carrying the (sanitised) owner id.
pub const USER_LABEL: &str = "slipway-user";
/// Label carrying the deployment's identity (`SLIPWAY_DEPLOYMENT`): deployments sharing a
/// Hetzner project never adopt, delete or sweep each other's servers.
pub const DEPLOYMENT_LABEL: &str = "slipway-deployment";

/// What the provisioning activities need: clients and the non-secret settings of each provider.
#[derive(Debug, Clone)]
pub struct ProvisioningConfig {
    /// Hetzner Cloud client.
    pub hetzner: HetznerClient,
    /// Server type, e.g. `cx22`.
    pub server_type: String,
    /// Image, e.g. `ubuntu-24.04`.
    pub image: String,
    /// Pause between two polls of a Hetzner action (mind the 3600/h budget).
    pub action_poll_interval: Duration,
    /// Tailscale client.
    pub tailscale: TailscaleClient,
    /// Tags for agent devices (`tag:…`).
    pub tailscale_tags: Vec<String>,
    /// GitHub client.
    pub github: GitHubClient,
    /// `owner/repo` holding the bootstrap workflow.
    pub actions_repo: String,
    /// Workflow file, `provision-agent.yml`.
    pub actions_workflow: String,
    /// Git ref to run it on.
    pub actions_ref: String,
    /// Public URL of `POST /callbacks/github-actions`.
    pub callback_url: String,
    /// Seals the auth key on its way through the history.
    pub sealer: Sealer,
    /// This deployment's identity (`SLIPWAY_DEPLOYMENT`), labelled on every server.
    pub deployment: String,
}

/// The provisioning activities (registered on the worker).
#[derive(Debug)]
pub struct ProvisioningActivities {
    cfg: ProvisioningConfig,
}

impl ProvisioningActivities {
    /// Build from configuration.
    pub fn new(cfg: ProvisioningConfig) -> Self {
        Self { cfg }
    }
}

/// The correlation id of a bootstrap job's dispatch: `slipway-<saga run id>`, deterministic (the
/// same for every attempt of the dispatch activity), unique per saga run, and no secret. It is
/// sent as the `correlation_id` input, which the shipped workflow's `run-name` shows, so the run
/// can be found again in the runs list (`display_title`).
pub fn correlation_id(job_id: &str) -> String {
    let run = parse_job_id(job_id).map_or(job_id, |(_, run)| run);
    format!("slipway-{run}")
}

/// How far before the dispatch activity was first scheduled a retry looks for runs (clock skew
/// between GitHub and the worker).
const DISPATCH_LOOKBACK: Duration = Duration::from_secs(10 * 60);
/// How far back [`ProvisioningActivities::find_provision_run`] looks: the dispatch it follows
/// may have been retried for up to the dispatch deadline.
const FIND_LOOKBACK: Duration = Duration::from_secs(24 * 60 * 60);
/// The runs list may lag a dispatch by a moment: a retry that sees no run looks once more after
/// this pause before dispatching again.
const RUN_LISTING_LAG: Duration = Duration::from_secs(3);
/// Failure type of "the dispatched run is not listed yet" (retried by the saga's policy).
pub const RUN_NOT_LISTED: &str = "ActionsRunNotListed";

fn key_description(agent_id: &str) -> String {
    format!("slipway agent {agent_id}")
}

/// Hetzner label values: up to 63 chars of `[a-zA-Z0-9._-]`, alphanumeric at both ends.
fn label_value(v: &str) -> String {
    let cleaned: String =
        v.chars().map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '_' }).collect();
    let trimmed: String = cleaned.chars().take(63).collect();
    trimmed.trim_matches(|c: char| !c.is_ascii_alphanumeric()).to_owned()
}

fn cloud_init(hostname: &str, auth_key: &SecretString, tags: &[String]) -> String {
    format!(
        "#cloud-config\nruncmd:\n  - ['sh', '-c', 'curl -fsSL https://tailscale.com/install.sh | sh']\n  \
         - ['tailscale', 'up', '--auth-key={key}', '--hostname={hostname}', '--advertise-tags={tags}']\n",
        key = auth_key.expose_secret(),
        tags = tags.join(","),
    )
}

/// The agent's server of this deployment (or of no deployment: made before servers were
/// labelled with one).
fn owns(server: &Server, agent_id: &str, deployment: &str) -> bool {
    server.labels.get(AGENT_LABEL).map(String::as_str) == Some(agent_id)
        && server.labels.get(DEPLOYMENT_LABEL).is_none_or(|d| d == deployment)
}

fn server_ref(server: &Server, create_action_id: Option<u64>) -> ServerRef {
    ServerRef { id: server.id, name: server.name.clone(), ipv4: server.ipv4(), create_action_id }
}

#[activities]
impl ProvisioningActivities {
    /// Step 1: a one-off, pre-authorized, tagged Tailscale auth key for the agent's VM.
    /// A retry first revokes keys an earlier attempt may have created, so none leak.
    #[activity]
    pub async fn create_tailscale_key(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: TailscaleKeyInput,
    ) -> Result<TailscaleKeyCreated, ActivityError> {
        self.tailscale_key(ctx.info().attempt, &input.agent_id)
            .await
            .map_err(ClientError::into_activity_error)
    }

    /// Step 2: the agent's Hetzner server, named `slipway-<agent_id>`. An existing server with
    /// that name and our agent label is adopted; one with another owner is a conflict.
    #[activity]
    pub async fn create_server(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: CreateServerInput,
    ) -> Result<ServerRef, ActivityError> {
        self.server(&input).await.map_err(ClientError::into_activity_error)
    }

    /// Step 2b: wait until the server is running, polling its `create_server` action every
    /// `action_poll_interval` (heartbeating, so a dead worker is noticed and cancellation lands).
    #[activity]
    pub async fn wait_server_ready(
        self: Arc<Self>,
        ctx: ActivityContext,
        server: ServerRef,
    ) -> Result<ServerRef, ActivityError> {
        loop {
            let progress = self.server_progress(&server).await.map_err(ClientError::into_activity_error)?;
            if let Some(ready) = progress.ready {
                return Ok(ready);
            }
            let _ = ctx.record_heartbeat(progress.percent).await;
            tokio::select! {
                _ = tokio::time::sleep(self.cfg.action_poll_interval) => {}
                _ = ctx.cancelled() => return Err(ActivityError::cancelled()),
            }
        }
    }

    /// Step 3: `workflow_dispatch` of the bootstrap job; returns the run id if GitHub gave one.
    ///
    /// `workflow_dispatch` is not idempotent, and an attempt may have started a run whose answer
    /// was lost (dropped connection, the client's timeout). So every retry first looks for the
    /// run by its correlation id (in the run's title) and adopts it; only when none is listed,
    /// after a second look, does it dispatch again.
    #[activity]
    pub async fn dispatch_provision_job(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: DispatchInput,
    ) -> Result<Option<String>, ActivityError> {
        let info = ctx.info();
        let work = async {
            if info.attempt > 1 {
                let since = info.scheduled_time.unwrap_or_else(SystemTime::now) - DISPATCH_LOOKBACK;
                for look in 0..2 {
                    if look > 0 {
                        tokio::select! {
                            _ = tokio::time::sleep(RUN_LISTING_LAG) => {}
                            _ = ctx.cancelled() => return Err(ActivityError::cancelled()),
                        }
                    }
                    if let Some(run) =
                        self.find_run(&input, since).await.map_err(ClientError::into_activity_error)?
                    {
                        tracing::info!(agent_id = %input.agent_id, job_id = %input.job_id, run_id = %run,
                            attempt = info.attempt, "adopting the run an earlier dispatch attempt started");
                        return Ok(Some(run));
                    }
                }
            }
            self.dispatch(&input).await.map_err(ClientError::into_activity_error)
        };
        // Alive while it works: the saga's heartbeat timeout tells a lost attempt from a slow one.
        tokio::pin!(work);
        let mut beat = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                done = &mut work => return done,
                _ = beat.tick() => {
                    let _ = ctx.record_heartbeat(info.attempt).await;
                }
            }
        }
    }

    /// Step 3b: the run of a dispatch whose answer did not name it (GitHub Enterprise Server
    /// without `return_run_details`): the `workflow_dispatch` run whose title carries the
    /// job's correlation id. Not listed yet is a retryable failure (`ActionsRunNotListed`).
    #[activity]
    pub async fn find_provision_run(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: DispatchInput,
    ) -> Result<String, ActivityError> {
        let since = ctx.info().scheduled_time.unwrap_or_else(SystemTime::now) - FIND_LOOKBACK;
        match self.find_run(&input, since).await.map_err(ClientError::into_activity_error)? {
            Some(run) => Ok(run),
            None => Err(ActivityError::application(
                ApplicationFailure::builder(format!(
                    "no workflow_dispatch run of {} in {} has `{}` in its title yet (its run-name must \
                     show inputs.correlation_id, as deploy/actions/provision-agent.yml does)",
                    self.cfg.actions_workflow,
                    self.cfg.actions_repo,
                    correlation_id(&input.job_id)
                ))
                .type_name(RUN_NOT_LISTED.to_owned())
                .build(),
            )),
        }
    }

    /// Step 4: the Tailscale device the VM registered as, if it has joined.
    #[activity]
    pub async fn find_tailscale_device(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: AgentResources,
    ) -> Result<Option<String>, ActivityError> {
        let hostname = server_name(&input.agent_id);
        let devices = self.cfg.tailscale.list_devices().await.map_err(ClientError::into_activity_error)?;
        Ok(devices.iter().find(|d| d.hostname == hostname).map(|d| d.api_id().to_owned()))
    }

    /// Compensation: remove every tailnet device of the agent. Returns how many were removed.
    #[activity]
    pub async fn remove_tailscale_devices(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: AgentResources,
    ) -> Result<u32, ActivityError> {
        self.remove_devices(&input.agent_id).await.map_err(ClientError::into_activity_error)
    }

    /// Compensation: delete the agent's server (found by name, checked by label). Returns
    /// whether a server was deleted.
    #[activity]
    pub async fn delete_agent_server(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: AgentResources,
    ) -> Result<bool, ActivityError> {
        self.delete_server(&input.agent_id).await.map_err(ClientError::into_activity_error)
    }

    /// Lifecycle: stop the agent's server. Graceful ACPI `shutdown` first, then, since Hetzner
    /// reports shutdown as *sent* rather than done, wait up to `graceful_wait_secs` for the server
    /// to be `off` and `poweroff` it if it is not.
    #[activity]
    pub async fn stop_server(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: StopServerInput,
    ) -> Result<(), ActivityError> {
        let server = self.owned_server(&input.agent_id).await.map_err(ClientError::into_activity_error)?;
        let hz = &self.cfg.hetzner;
        if server.status == "off" {
            return Ok(());
        }
        hz.power(server.id, PowerAction::Shutdown).await.map_err(ClientError::into_activity_error)?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(input.graceful_wait_secs);
        while tokio::time::Instant::now() < deadline {
            let _ = ctx.record_heartbeat(0u32).await;
            match hz.get_server(server.id).await.map_err(ClientError::into_activity_error)? {
                Some(s) if s.status == "off" => return Ok(()),
                Some(_) => {}
                None => {
                    return Err(ClientError::ActionFailed(format!("server {} disappeared", server.name))
                        .into_activity_error());
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(self.cfg.action_poll_interval) => {}
                _ = ctx.cancelled() => return Err(ActivityError::cancelled()),
            }
        }
        tracing::info!(agent_id = %input.agent_id, "graceful shutdown did not finish in time; powering off");
        let action =
            hz.power(server.id, PowerAction::Poweroff).await.map_err(ClientError::into_activity_error)?;
        self.wait_action(&ctx, action.id).await
    }

    /// Lifecycle: power the agent's server on and wait until it runs.
    #[activity]
    pub async fn start_server(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: AgentResources,
    ) -> Result<ServerRef, ActivityError> {
        let server = self.owned_server(&input.agent_id).await.map_err(ClientError::into_activity_error)?;
        if server.status != "running" {
            let action = self
                .cfg
                .hetzner
                .power(server.id, PowerAction::Poweron)
                .await
                .map_err(ClientError::into_activity_error)?;
            self.wait_action(&ctx, action.id).await?;
        }
        Ok(server_ref(&server, None))
    }

    /// Compensation: revoke every auth key created for the agent. Returns how many.
    #[activity]
    pub async fn revoke_tailscale_keys(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: AgentResources,
    ) -> Result<u32, ActivityError> {
        self.revoke_keys(&input.agent_id).await.map_err(ClientError::into_activity_error)
    }
}

/// One poll of a starting server.
struct ServerProgress {
    /// Set once the server runs.
    ready: Option<ServerRef>,
    /// Progress of the create action, for the heartbeat.
    percent: u32,
}

impl ProvisioningActivities {
    async fn tailscale_key(&self, attempt: u32, agent_id: &str) -> Result<TailscaleKeyCreated, ClientError> {
        let ts = &self.cfg.tailscale;
        let description = key_description(agent_id);
        if attempt > 1 {
            self.revoke_keys(agent_id).await?;
        }
        let key = ts
            .create_auth_key(&NewAuthKey {
                description,
                tags: self.cfg.tailscale_tags.clone(),
                expiry_seconds: 3600,
                reusable: false,
                preauthorized: true,
            })
            .await?;
        tracing::info!(agent_id, key_id = %key.id, "tailscale auth key created");
        Ok(TailscaleKeyCreated { key_id: key.id, sealed_key: self.cfg.sealer.seal(&key.key)? })
    }

    async fn server(&self, input: &CreateServerInput) -> Result<ServerRef, ClientError> {
        let hz = &self.cfg.hetzner;
        let name = server_name(&input.agent_id);
        if let Some(existing) = hz.find_server_by_name(&name).await? {
            return self.adopt(&existing, &input.agent_id);
        }
        let auth_key = self.cfg.sealer.open(&input.sealed_auth_key)?;
        let body = CreateServer {
            name: name.clone(),
            server_type: self.cfg.server_type.clone(),
            image: self.cfg.image.clone(),
            location: input.region.clone(),
            labels: BTreeMap::from([
                (AGENT_LABEL.to_owned(), label_value(&input.agent_id)),
                (USER_LABEL.to_owned(), label_value(&input.user_id)),
                (DEPLOYMENT_LABEL.to_owned(), self.cfg.deployment.clone()),
            ]),
            user_data: Some(cloud_init(&name, &auth_key, &self.cfg.tailscale_tags)),
            start_after_create: true,
        };
        match hz.create_server(&body).await {
            Ok((server, action)) => {
                tracing::info!(agent_id = %input.agent_id, server_id = server.id, "hetzner server created");
                Ok(server_ref(&server, Some(action.id)))
            }
            // Lost a race with an earlier attempt of ours (or someone else): look, then decide.
            Err(e) if e.status() == Some(409) => match hz.find_server_by_name(&name).await? {
                Some(existing) => self.adopt(&existing, &input.agent_id),
                None => Err(e),
            },
            Err(e) => Err(e),
        }
    }

    async fn server_progress(&self, server: &ServerRef) -> Result<ServerProgress, ClientError> {
        let hz = &self.cfg.hetzner;
        let gone = || ClientError::ActionFailed(format!("server {} disappeared while starting", server.name));
        let (done, percent) = match server.create_action_id {
            Some(action_id) => {
                let action = hz.get_action(action_id).await?;
                match action.status.as_str() {
                    "success" => (true, 100),
                    "error" => {
                        let why = action.error.map(|e| format!("{}: {}", e.code, e.message));
                        return Err(ClientError::ActionFailed(format!(
                            "hetzner could not create server {}: {}",
                            server.name,
                            why.unwrap_or_else(|| "unknown error".into())
                        )));
                    }
                    _ => (false, action.progress),
                }
            }
            // Adopted server: its create action is not ours to poll; watch the server itself.
            None => (hz.get_server(server.id).await?.ok_or_else(gone)?.status == "running", 0),
        };
        if !done {
            return Ok(ServerProgress { ready: None, percent });
        }
        let current = hz.get_server(server.id).await?.ok_or_else(gone)?;
        Ok(ServerProgress { ready: Some(server_ref(&current, server.create_action_id)), percent })
    }

    /// The `workflow_dispatch` run created since `since` whose title carries the job's
    /// correlation id (the first one, should there be several).
    async fn find_run(
        &self,
        input: &DispatchInput,
        since: SystemTime,
    ) -> Result<Option<String>, ClientError> {
        let cfg = &self.cfg;
        let correlation = correlation_id(&input.job_id);
        let runs = cfg
            .github
            .workflow_runs(
                &cfg.actions_repo,
                &cfg.actions_workflow,
                "workflow_dispatch",
                DateTime::<Utc>::from(since),
            )
            .await?;
        Ok(runs
            .iter()
            .filter(|r| r.event == "workflow_dispatch" && r.display_title.contains(&correlation))
            .min_by_key(|r| r.id)
            .map(|r| r.id.to_string()))
    }

    async fn dispatch(&self, input: &DispatchInput) -> Result<Option<String>, ClientError> {
        let inputs = BTreeMap::from([
            ("job_id".to_owned(), input.job_id.clone()),
            ("correlation_id".to_owned(), correlation_id(&input.job_id)),
            ("agent_id".to_owned(), input.agent_id.clone()),
            ("region".to_owned(), input.region.clone()),
            ("callback_url".to_owned(), self.cfg.callback_url.clone()),
        ]);
        let cfg = &self.cfg;
        let run = cfg
            .github
            .dispatch_workflow(&cfg.actions_repo, &cfg.actions_workflow, &cfg.actions_ref, &inputs)
            .await?;
        tracing::info!(agent_id = %input.agent_id, job_id = %input.job_id,
            run_id = run.as_ref().map(|r| r.workflow_run_id), "provision job dispatched");
        Ok(run.map(|r| r.workflow_run_id.to_string()))
    }

    async fn remove_devices(&self, agent_id: &str) -> Result<u32, ClientError> {
        let ts = &self.cfg.tailscale;
        let hostname = server_name(agent_id);
        let mut removed = 0;
        for device in ts.list_devices().await?.into_iter().filter(|d| d.hostname == hostname) {
            if ts.delete_device(device.api_id()).await? {
                removed += 1;
            }
        }
        Ok(removed)
    }

    async fn delete_server(&self, agent_id: &str) -> Result<bool, ClientError> {
        let hz = &self.cfg.hetzner;
        match hz.find_server_by_name(&server_name(agent_id)).await? {
            Some(server) if owns(&server, agent_id, &self.cfg.deployment) => {
                hz.delete_server(server.id).await
            }
            Some(server) => {
                tracing::warn!(
                    server_id = server.id,
                    agent_id,
                    "server with our name is not ours; left alone"
                );
                Ok(false)
            }
            None => Ok(false),
        }
    }

    async fn revoke_keys(&self, agent_id: &str) -> Result<u32, ClientError> {
        let ts = &self.cfg.tailscale;
        let description = key_description(agent_id);
        let mut revoked = 0;
        for key in ts.list_keys().await?.into_iter().filter(|k| k.description == description) {
            if ts.delete_key(&key.id).await? {
                revoked += 1;
            }
        }
        Ok(revoked)
    }

    /// The agent's server (by name, checked by label).
    async fn owned_server(&self, agent_id: &str) -> Result<Server, ClientError> {
        match self.cfg.hetzner.find_server_by_name(&server_name(agent_id)).await? {
            Some(server) if owns(&server, agent_id, &self.cfg.deployment) => Ok(server),
            _ => Err(ClientError::ActionFailed(format!(
                "agent {agent_id} has no server (it may have been deleted by hand)"
            ))),
        }
    }

    /// Poll a Hetzner action until it succeeds (heartbeating) or fails.
    async fn wait_action(&self, ctx: &ActivityContext, action_id: u64) -> Result<(), ActivityError> {
        loop {
            let action =
                self.cfg.hetzner.get_action(action_id).await.map_err(ClientError::into_activity_error)?;
            match action.status.as_str() {
                "success" => return Ok(()),
                "error" => {
                    let why = action.error.map(|e| format!("{}: {}", e.code, e.message)).unwrap_or_default();
                    return Err(ClientError::ActionFailed(format!(
                        "hetzner {} failed: {why}",
                        action.command
                    ))
                    .into_activity_error());
                }
                _ => {
                    let _ = ctx.record_heartbeat(action.progress).await;
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(self.cfg.action_poll_interval) => {}
                _ = ctx.cancelled() => return Err(ActivityError::cancelled()),
            }
        }
    }

    fn adopt(&self, existing: &Server, agent_id: &str) -> Result<ServerRef, ClientError> {
        if !owns(existing, agent_id, &self.cfg.deployment) {
            return Err(ClientError::Conflict(format!(
                "a server named {} exists but belongs to another agent or deployment (labels {:?}); rename or delete it",
                existing.name, existing.labels
            )));
        }
        tracing::info!(agent_id, server_id = existing.id, "adopting existing hetzner server");
        Ok(server_ref(existing, None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_hetzner_safe() {
        assert_eq!(label_value("user@example.com"), "user_example.com");
        assert_eq!(label_value("-abc-"), "abc");
        assert_eq!(label_value(&"x".repeat(80)).len(), 63);
    }

    #[test]
    fn a_server_is_the_agents_only_within_its_deployment() {
        let server = |labels: &[(&str, &str)]| Server {
            id: 1,
            name: "slipway-a1".into(),
            status: "running".into(),
            labels: labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
            public_net: None,
            created: None,
        };
        assert!(owns(&server(&[(AGENT_LABEL, "a1"), (DEPLOYMENT_LABEL, "prod")]), "a1", "prod"));
        assert!(owns(&server(&[(AGENT_LABEL, "a1")]), "a1", "prod"), "made before deployments were labelled");
        assert!(!owns(&server(&[(AGENT_LABEL, "a1"), (DEPLOYMENT_LABEL, "staging")]), "a1", "prod"));
        assert!(!owns(&server(&[(AGENT_LABEL, "a2"), (DEPLOYMENT_LABEL, "prod")]), "a1", "prod"));
    }

    #[test]
    fn the_correlation_id_names_the_saga_run_only() {
        assert_eq!(correlation_id("provisioning-u@example.com/0f1e-22"), "slipway-0f1e-22");
        assert_eq!(correlation_id("provisioning-u/0f1e-22"), correlation_id("provisioning-u/0f1e-22"));
        assert_ne!(correlation_id("provisioning-u/run-1"), correlation_id("provisioning-u/run-2"));
    }

    #[test]
    fn cloud_init_joins_with_the_agent_hostname() {
        let ci = cloud_init("slipway-a1", &SecretString::from("tskey-1"), &["tag:slipway-agent".into()]);
        assert!(ci.starts_with("#cloud-config\n"));
        assert!(ci.contains("--hostname=slipway-a1"));
        assert!(ci.contains("--advertise-tags=tag:slipway-agent"));
    }
}
