//! Worker Versioning: which Worker Deployment version this worker is, and how its workflows
//! move between versions.
//!
//! Why: `Agent` and `Subscription` live for months, the sagas for minutes to hours. With
//! versioning on (a deployment name configured, as Temporal's Worker Controller does), Temporal
//! routes each workflow task to the version its workflow belongs to:
//! - the sagas (`ProvisionAgent`, `ClientStack`) are **pinned**: a saga finishes on the code that
//!   started it, so a release may change a saga step without a patch, and the old version's
//!   workers stay until its sagas drained;
//! - everything else **auto-upgrades** to the current version at its next task, so a changed
//!   long-lived workflow still needs `patched` (and the replay corpus of the previous release).
//!
//! The Rust SDK (1.1.1) declares a versioning behaviour per worker, not per workflow type (every
//! workflow completion carries `Unspecified`, which Core replaces with the worker's default), so
//! the process runs two workers: one on the task queue (auto-upgrade) and one on its saga queue
//! ([`saga_task_queue`], pinned). Without a deployment name both run unversioned, as before.

use std::time::Duration;

use temporalio_client::{Client, NamespacedClient};
use temporalio_common::{
    protos::temporal::api::{
        deployment::v1::WorkerDeploymentVersion as ProtoVersion,
        workflowservice::v1::{
            DescribeWorkerDeploymentRequest, DescribeWorkerDeploymentVersionRequest,
            SetWorkerDeploymentCurrentVersionRequest,
        },
    },
    worker::{VersioningBehavior, WorkerDeploymentOptions, WorkerDeploymentVersion},
};
use tonic::{Code, IntoRequest};

pub use slipway_proto::model::saga_task_queue;

use crate::ConfigError;

/// The build id when none is configured: the crate version and the git revision it was built
/// from (`SLIPWAY_GIT_REVISION` at build time, else `git rev-parse`; see `build.rs`).
pub const DEFAULT_BUILD_ID: &str = concat!(env!("CARGO_PKG_VERSION"), "-", env!("SLIPWAY_GIT_REVISION"));

/// This worker's version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerVersion {
    /// The Worker Deployment (`TEMPORAL_DEPLOYMENT_NAME`, set by the Worker Controller); versioning
    /// is on when set.
    pub deployment_name: Option<String>,
    /// The build (`TEMPORAL_WORKER_BUILD_ID`, default [`DEFAULT_BUILD_ID`]).
    pub build_id: String,
}

impl Default for WorkerVersion {
    fn default() -> Self {
        Self { deployment_name: None, build_id: DEFAULT_BUILD_ID.to_owned() }
    }
}

impl WorkerVersion {
    /// From the Worker Controller's variables; unset ones keep the defaults.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let set = |k: &str| get(k).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        let deployment_name = set("TEMPORAL_DEPLOYMENT_NAME");
        // Temporal's rules: the name may not contain '.', a build id may not be the reserved
        // `__unversioned__`, and neither exceeds 255 bytes.
        if let Some(name) = &deployment_name
            && (name.contains('.') || name.len() > 255)
        {
            return Err(ConfigError::Invalid(format!(
                "TEMPORAL_DEPLOYMENT_NAME `{name}` must be at most 255 bytes without '.'"
            )));
        }
        let build_id = set("TEMPORAL_WORKER_BUILD_ID").unwrap_or_else(|| DEFAULT_BUILD_ID.to_owned());
        if build_id == "__unversioned__" || build_id.len() > 255 {
            return Err(ConfigError::Invalid(format!(
                "TEMPORAL_WORKER_BUILD_ID `{build_id}` is reserved or longer than 255 bytes"
            )));
        }
        Ok(Self { deployment_name, build_id })
    }

    /// Whether this worker takes part in Worker Versioning.
    pub fn versioned(&self) -> bool {
        self.deployment_name.is_some()
    }

    /// The SDK's deployment options for a worker whose workflows behave as `behavior`.
    pub fn options(&self, behavior: VersioningBehavior) -> WorkerDeploymentOptions {
        match &self.deployment_name {
            Some(name) => WorkerDeploymentOptions::new(
                WorkerDeploymentVersion::builder()
                    .deployment_name(name.clone())
                    .build_id(self.build_id.clone())
                    .build(),
            )
            .use_worker_versioning(true)
            .default_versioning_behavior(behavior)
            .build(),
            None => WorkerDeploymentOptions::from_build_id(self.build_id.clone()),
        }
    }

    /// `deployment:build` as Temporal's CLI and Web UI show it, or the build alone.
    pub fn label(&self) -> String {
        match &self.deployment_name {
            Some(name) => format!("{name}:{}", self.build_id),
            None => format!("{} (unversioned)", self.build_id),
        }
    }
}

/// What [`adopt_if_unset`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Adoption {
    /// Unversioned worker: nothing to do.
    Unversioned,
    /// The deployment already had a current version (a rollout is someone's decision).
    AlreadyCurrent(String),
    /// This version became the current one (the deployment's first).
    Adopted,
}

/// The first version of a deployment becomes current by itself: until a deployment has a
/// current version, Temporal sends new workflows to unversioned workers only, so a fresh cluster
/// would start nothing. Once one is current, moving to another is a rollout step
/// (`temporal worker deployment set-current-version`, or the Worker Controller), never this.
/// Waits (up to `patience`) for Temporal to have seen this version's pollers.
pub async fn adopt_if_unset(
    client: &Client,
    version: &WorkerVersion,
    patience: Duration,
) -> anyhow::Result<Adoption> {
    let Some(name) = version.deployment_name.clone() else {
        return Ok(Adoption::Unversioned);
    };
    let namespace = client.namespace().to_owned();
    let mut service = client.connection().workflow_service();
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        let described = service
            .describe_worker_deployment(
                DescribeWorkerDeploymentRequest {
                    namespace: namespace.clone(),
                    deployment_name: name.clone(),
                }
                .into_request(),
            )
            .await;
        match described {
            Ok(answer) => {
                let answer = answer.into_inner();
                let current = answer
                    .worker_deployment_info
                    .and_then(|info| info.routing_config)
                    .and_then(|routing| routing.current_deployment_version)
                    .filter(|v| !v.build_id.is_empty());
                if let Some(current) = current {
                    return Ok(Adoption::AlreadyCurrent(current.build_id));
                }
                let identity = format!("slipway-worker {}", version.build_id);
                match set_current_version(client, &name, &version.build_id, answer.conflict_token, &identity)
                    .await
                {
                    Ok(_) => return Ok(Adoption::Adopted),
                    // Not every task queue of the version registered yet, or another worker won
                    // the race (the conflict token moved): look again.
                    Err(status) if retryable(status.code()) && tokio::time::Instant::now() < deadline => {}
                    Err(status) => return Err(status.into()),
                }
            }
            // The deployment appears with its first poller.
            Err(status) if retryable(status.code()) && tokio::time::Instant::now() < deadline => {}
            Err(status) => return Err(status.into()),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// [`adopt_if_unset`] in the background, logging what became of it (the worker's start-up;
/// nothing for an unversioned worker).
pub fn spawn_adoption(client: Client, version: WorkerVersion) {
    if !version.versioned() {
        return;
    }
    tokio::spawn(async move {
        match adopt_if_unset(&client, &version, Duration::from_secs(60)).await {
            Ok(Adoption::Adopted) => {
                tracing::info!(version = %version.label(), "first version of the deployment: made current")
            }
            Ok(Adoption::AlreadyCurrent(build)) => tracing::info!(
                version = %version.label(), current = %build,
                "the deployment has a current version; this one receives work once a rollout makes it current or ramps it"
            ),
            Ok(Adoption::Unversioned) => {}
            Err(e) => tracing::warn!(
                version = %version.label(), error = %e,
                "could not read or set the deployment's current version"
            ),
        }
    });
}

fn retryable(code: Code) -> bool {
    matches!(code, Code::NotFound | Code::FailedPrecondition | Code::Aborted | Code::Unavailable)
}

/// Make `build_id` the current version of `deployment` (a rollout's last step; what
/// `temporal worker deployment set-current-version` does).
pub async fn set_current(client: &Client, deployment: &str, build_id: &str) -> anyhow::Result<()> {
    set_current_version(client, deployment, build_id, Vec::new(), "slipway").await?;
    Ok(())
}

/// `SetWorkerDeploymentCurrentVersion`, guarded by `conflict_token` when not empty.
async fn set_current_version(
    client: &Client,
    deployment: &str,
    build_id: &str,
    conflict_token: Vec<u8>,
    identity: &str,
) -> Result<(), tonic::Status> {
    let set = SetWorkerDeploymentCurrentVersionRequest {
        namespace: client.namespace().to_owned(),
        deployment_name: deployment.to_owned(),
        build_id: build_id.to_owned(),
        conflict_token,
        identity: identity.to_owned(),
        ..Default::default()
    };
    client.connection().workflow_service().set_worker_deployment_current_version(set.into_request()).await?;
    Ok(())
}

/// The drainage status of a version (`Draining`, `Drained`, or `Unspecified` while current or
/// ramping): whether its workers may stop.
pub async fn drainage(client: &Client, deployment: &str, build_id: &str) -> anyhow::Result<String> {
    use temporalio_common::protos::temporal::api::enums::v1::VersionDrainageStatus;
    let namespace = client.namespace().to_owned();
    let mut service = client.connection().workflow_service();
    let described = service
        .describe_worker_deployment_version(
            DescribeWorkerDeploymentVersionRequest {
                namespace,
                deployment_version: Some(ProtoVersion {
                    deployment_name: deployment.to_owned(),
                    build_id: build_id.to_owned(),
                }),
                ..Default::default()
            }
            .into_request(),
        )
        .await?
        .into_inner();
    let status = described
        .worker_deployment_version_info
        .and_then(|info| info.drainage_info)
        .map_or(VersionDrainageStatus::Unspecified, |d| d.status());
    Ok(status.as_str_name().trim_start_matches("VERSION_DRAINAGE_STATUS_").to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::settings::tests::lookup;

    #[test]
    fn unversioned_unless_a_deployment_is_named() {
        let v = WorkerVersion::from_lookup(lookup(&[])).unwrap();
        assert!(!v.versioned());
        assert_eq!(v.build_id, DEFAULT_BUILD_ID);
        assert!(DEFAULT_BUILD_ID.starts_with(env!("CARGO_PKG_VERSION")));
        let v = WorkerVersion::from_lookup(lookup(&[
            ("TEMPORAL_DEPLOYMENT_NAME", "slipway"),
            ("TEMPORAL_WORKER_BUILD_ID", "b-42"),
        ]))
        .unwrap();
        assert!(v.versioned());
        assert_eq!(v.label(), "slipway:b-42");
        let pinned = v.options(VersioningBehavior::Pinned);
        assert!(pinned.use_worker_versioning);
        assert_eq!(pinned.default_versioning_behavior, Some(VersioningBehavior::Pinned));
        assert_eq!(pinned.version.build_id, "b-42");
    }

    #[test]
    fn names_temporal_refuses_are_refused_at_start() {
        for bad in [
            vec![("TEMPORAL_DEPLOYMENT_NAME", "slip.way")],
            vec![("TEMPORAL_DEPLOYMENT_NAME", "slipway"), ("TEMPORAL_WORKER_BUILD_ID", "__unversioned__")],
        ] {
            let err = WorkerVersion::from_lookup(lookup(&bad)).unwrap_err();
            assert!(matches!(err, ConfigError::Invalid(_)), "{bad:?}: {err}");
        }
    }
}
