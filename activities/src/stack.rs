//! Activities of the client-stack saga (Supabase, schema, GitHub, Vercel, n8n) and its
//! compensations.
//!
//! Every resource is named from the client id (`slipway-<id>` project and workflow,
//! `<org>/<id>` repository, `<id>` Vercel project, `clients/<id>` webhook), and every create
//! looks the name up first and adopts what an earlier attempt made. Compensations find by the
//! same names, so they also remove what a failed attempt created without reporting it, and a
//! resource that is already gone counts as removed.
//!
//! Supabase and n8n do not keep names unique, so a create an earlier attempt sent can still
//! land after a retry looked and made its own (the answer was lost, or the attempt timed out
//! while the provider was still working on it): a second, billed project or workflow. Every
//! attempt therefore adopts the *oldest* resource with the name (creation time, then id: the
//! same choice whoever looks), and the step deletes every other one once its own is up: the
//! health wait for the Supabase project, the n8n step after activating its workflow. The
//! compensations delete every resource with the name. A create landing after the step ended
//! is left to the orphan sweep: the stack's record names the one it kept.

use std::{path::PathBuf, sync::Arc, time::Duration};

use secrecy::SecretString;
use slipway_proto::stack::{DeploymentOut, N8nOut, RepositoryOut, StackTarget, SupabaseProject, VercelInput};
use temporalio_macros::activities;
use temporalio_sdk::activities::{ActivityContext, ActivityError};

use slipway_providers::{
    ClientError, github::GitHubClient, n8n::N8nClient, supabase::SupabaseClient, vercel::VercelClient,
};

use crate::error::IntoActivityError;

/// Configuration of the stack activities.
#[derive(Debug, Clone)]
pub struct StackConfig {
    /// Supabase Management API client.
    pub supabase: SupabaseClient,
    /// Organization new projects belong to.
    pub supabase_org_id: String,
    /// Region of new projects.
    pub supabase_region: String,
    /// Directory of `*.sql` migrations, applied in file-name order.
    pub migrations_dir: PathBuf,
    /// GitHub client.
    pub github: GitHubClient,
    /// Organization of client repositories.
    pub github_org: String,
    /// `owner/name` of the template repository.
    pub github_template: String,
    /// Vercel client.
    pub vercel: VercelClient,
    /// n8n client.
    pub n8n: N8nClient,
    /// Public base URL of the n8n instance (webhook URLs are built from it).
    pub n8n_public_url: String,
    /// Pause between polls (Supabase health, Vercel deployment).
    pub poll_interval: Duration,
    /// This deployment's identity (`SLIPWAY_DEPLOYMENT`), in every repository's description mark.
    pub deployment: String,
}

/// The stack activities.
#[derive(Debug)]
pub struct StackActivities {
    cfg: StackConfig,
}

impl StackActivities {
    /// Build from configuration.
    pub fn new(cfg: StackConfig) -> Self {
        Self { cfg }
    }
}

/// How a client's repository description ended before deployments were marked (the orphan
/// sweep still finds those by it, and judges them by the stack's record alone).
pub const REPOSITORY_MARK: &str = "(provisioned by Slipway)";

/// How a client's repository description ends: the mark the orphan sweep finds it by (its name
/// is the bare client id) and tells deployments sharing an organization apart by.
pub fn repository_mark(deployment: &str) -> String {
    format!("(provisioned by Slipway for {deployment})")
}

/// Supabase project (and n8n workflow) name of a client.
pub fn resource_name(client_id: &str) -> String {
    format!("slipway-{client_id}")
}

/// n8n webhook path of a client.
pub fn webhook_path(client_id: &str) -> String {
    format!("clients/{client_id}")
}

/// Tracking table of applied migrations (created in the client's database).
const MIGRATIONS_TABLE: &str = "public.slipway_schema_migrations";

/// Migration files (`<version>.sql`) sorted by name; the version is the file stem.
pub fn read_migrations(dir: &std::path::Path) -> Result<Vec<(String, String)>, ClientError> {
    let bad = |e: std::io::Error| {
        ClientError::Configuration(format!("migrations directory {}: {e}", dir.display()))
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(bad)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "sql"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let version = p.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            std::fs::read_to_string(&p).map(|sql| (version, sql)).map_err(bad)
        })
        .collect()
}

/// One migration and its bookkeeping in a single transaction, so it is applied exactly once
/// even if the activity is retried after the query ran.
pub fn migration_sql(version: &str, sql: &str) -> String {
    let version = version.replace('\'', "''");
    format!("BEGIN;\n{sql}\nINSERT INTO {MIGRATIONS_TABLE} (version) VALUES ('{version}');\nCOMMIT;")
}

#[activities]
impl StackActivities {
    /// Step 1: the client's Supabase project (adopted if it exists).
    #[activity]
    pub async fn create_supabase_project(
        self: Arc<Self>,
        _ctx: ActivityContext,
        target: StackTarget,
    ) -> Result<SupabaseProject, ActivityError> {
        self.supabase_project(&target).await.map_err(ClientError::into_activity_error)
    }

    /// Step 1b: wait until the project is healthy, polling within the 120/min budget; then
    /// delete the organization's other projects with its name (late creates of earlier attempts).
    #[activity]
    pub async fn wait_supabase_healthy(
        self: Arc<Self>,
        ctx: ActivityContext,
        project_ref: String,
    ) -> Result<(), ActivityError> {
        loop {
            if self.cfg.supabase.healthy(&project_ref).await.map_err(ClientError::into_activity_error)? {
                return self
                    .remove_supabase_duplicates(&project_ref)
                    .await
                    .map_err(ClientError::into_activity_error);
            }
            let _ = ctx.record_heartbeat(0u32).await;
            tokio::select! {
                _ = tokio::time::sleep(self.cfg.poll_interval) => {}
                _ = ctx.cancelled() => return Err(ActivityError::cancelled()),
            }
        }
    }

    /// Step 2: apply the configured migrations in order; returns every applied version.
    #[activity]
    pub async fn apply_migrations(
        self: Arc<Self>,
        _ctx: ActivityContext,
        project_ref: String,
    ) -> Result<Vec<String>, ActivityError> {
        self.migrate(&project_ref).await.map_err(ClientError::into_activity_error)
    }

    /// Step 3: the client's repository, generated from the template (adopted if it exists).
    #[activity]
    pub async fn create_repository(
        self: Arc<Self>,
        _ctx: ActivityContext,
        target: StackTarget,
    ) -> Result<RepositoryOut, ActivityError> {
        self.repository(&target).await.map_err(ClientError::into_activity_error)
    }

    /// Step 4: the Vercel project, linked to the repository, with the Supabase URL and anon key.
    #[activity]
    pub async fn create_vercel_project(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: VercelInput,
    ) -> Result<String, ActivityError> {
        self.vercel_project(&input).await.map_err(ClientError::into_activity_error)
    }

    /// Step 4b: the first production deployment; waits until it is ready.
    #[activity]
    pub async fn deploy_vercel(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: VercelInput,
    ) -> Result<DeploymentOut, ActivityError> {
        let vercel = &self.cfg.vercel;
        let (org, repo) = input.repository.split_once('/').unwrap_or(("", input.repository.as_str()));
        let mut d =
            vercel.deploy(&input.client_id, org, repo).await.map_err(ClientError::into_activity_error)?;
        loop {
            match d.ready_state.as_str() {
                "READY" => return Ok(DeploymentOut { url: format!("https://{}", d.url), id: d.id }),
                "ERROR" | "CANCELED" => {
                    return Err(ClientError::ActionFailed(format!(
                        "vercel deployment {} ended {}",
                        d.id, d.ready_state
                    ))
                    .into_activity_error());
                }
                _ => {}
            }
            let _ = ctx.record_heartbeat(0u32).await;
            tokio::select! {
                _ = tokio::time::sleep(self.cfg.poll_interval) => {}
                _ = ctx.cancelled() => return Err(ActivityError::cancelled()),
            }
            d = vercel.deployment(&d.id).await.map_err(ClientError::into_activity_error)?;
        }
    }

    /// Step 5: the client's n8n workflow (reused if one has the name), activated.
    #[activity]
    pub async fn create_n8n_workflow(
        self: Arc<Self>,
        _ctx: ActivityContext,
        target: StackTarget,
    ) -> Result<N8nOut, ActivityError> {
        self.n8n_workflow(&target).await.map_err(ClientError::into_activity_error)
    }

    /// Compensation of step 5: every workflow with the client's name.
    #[activity]
    pub async fn delete_n8n_workflow(
        self: Arc<Self>,
        _ctx: ActivityContext,
        client_id: String,
    ) -> Result<bool, ActivityError> {
        self.delete_n8n_workflows(&client_id).await.map_err(ClientError::into_activity_error)
    }

    /// Compensation of step 4 (deleting the project deletes its deployments).
    #[activity]
    pub async fn delete_vercel_project(
        self: Arc<Self>,
        _ctx: ActivityContext,
        client_id: String,
    ) -> Result<bool, ActivityError> {
        self.cfg.vercel.delete_project(&client_id).await.map_err(ClientError::into_activity_error)
    }

    /// Compensation of step 3: only a repository generated from our template is deleted.
    #[activity]
    pub async fn delete_repository(
        self: Arc<Self>,
        _ctx: ActivityContext,
        client_id: String,
    ) -> Result<bool, ActivityError> {
        self.delete_repo(&client_id).await.map_err(ClientError::into_activity_error)
    }

    /// Compensation of steps 1–2 (the schema lives in the project): every project with the
    /// client's name.
    #[activity]
    pub async fn delete_supabase_project(
        self: Arc<Self>,
        _ctx: ActivityContext,
        client_id: String,
    ) -> Result<bool, ActivityError> {
        self.delete_supabase_projects(&client_id).await.map_err(ClientError::into_activity_error)
    }
}

impl StackActivities {
    async fn supabase_project(&self, target: &StackTarget) -> Result<SupabaseProject, ClientError> {
        let sb = &self.cfg.supabase;
        let name = resource_name(&target.client_id);
        let project = match sb.find_project(&self.cfg.supabase_org_id, &name).await? {
            Some(p) => p,
            None => {
                // The database password is generated here and never leaves this activity: Slipway
                // talks to the database through the Management API, not with this password.
                let db_pass = SecretString::from(format!("{}{}", uuid_like(), uuid_like().to_uppercase()));
                match sb
                    .create_project(&self.cfg.supabase_org_id, &name, &self.cfg.supabase_region, &db_pass)
                    .await
                {
                    // An earlier attempt's create may have landed meanwhile: the oldest wins.
                    Ok(p) => sb.find_project(&self.cfg.supabase_org_id, &name).await?.unwrap_or(p),
                    Err(e) if e.status() == Some(409) => {
                        sb.find_project(&self.cfg.supabase_org_id, &name).await?.ok_or(e)?
                    }
                    Err(e) => return Err(e),
                }
            }
        };
        Ok(SupabaseProject {
            api_url: format!("https://{}.supabase.co", project.id),
            project_ref: project.id,
        })
    }

    /// Deletes the organization's projects named like `project_ref` (the one the saga adopted)
    /// other than it.
    async fn remove_supabase_duplicates(&self, project_ref: &str) -> Result<(), ClientError> {
        let sb = &self.cfg.supabase;
        let projects = sb.list_projects(&self.cfg.supabase_org_id).await?;
        let Some(name) = projects.iter().find(|p| p.id == project_ref).map(|p| p.name.clone()) else {
            return Ok(());
        };
        for p in projects.iter().filter(|p| p.name == name && p.id != project_ref) {
            tracing::warn!(project = %p.id, %name, kept = %project_ref, "deleting a duplicate Supabase project");
            sb.delete_project(&p.id).await?;
        }
        Ok(())
    }

    async fn delete_supabase_projects(&self, client_id: &str) -> Result<bool, ClientError> {
        let sb = &self.cfg.supabase;
        let mut removed = false;
        for p in sb.projects_named(&self.cfg.supabase_org_id, &resource_name(client_id)).await? {
            removed |= sb.delete_project(&p.id).await?;
        }
        Ok(removed)
    }

    async fn delete_n8n_workflows(&self, client_id: &str) -> Result<bool, ClientError> {
        let n8n = &self.cfg.n8n;
        let mut removed = false;
        for w in n8n.workflows_named(&resource_name(client_id)).await? {
            removed |= n8n.delete_workflow(&w.id).await?;
        }
        Ok(removed)
    }

    async fn migrate(&self, project_ref: &str) -> Result<Vec<String>, ClientError> {
        let sb = &self.cfg.supabase;
        let migrations = read_migrations(&self.cfg.migrations_dir)?;
        sb.query(
            project_ref,
            &format!(
                "CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} (version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            ),
        )
        .await?;
        let rows = sb
            .query(project_ref, &format!("SELECT version FROM {MIGRATIONS_TABLE} ORDER BY version"))
            .await?;
        let done: Vec<String> =
            rows.iter().filter_map(|r| r["version"].as_str().map(str::to_owned)).collect();
        let mut applied = Vec::new();
        for (version, sql) in migrations {
            if !done.contains(&version) {
                sb.query(project_ref, &migration_sql(&version, &sql)).await.map_err(|e| match e {
                    // A migration the database rejects will be rejected again: say which one.
                    ClientError::Api(f) if f.status == 400 => {
                        ClientError::ActionFailed(format!("migration {version} failed: {}", f.message))
                    }
                    other => other,
                })?;
            }
            applied.push(version);
        }
        Ok(applied)
    }

    async fn repository(&self, target: &StackTarget) -> Result<RepositoryOut, ClientError> {
        let gh = &self.cfg.github;
        let full_name = format!("{}/{}", self.cfg.github_org, target.client_id);
        let existing = gh.repository(&full_name).await?;
        let repo = match existing {
            Some(r) => self.check_ours(r)?,
            None => {
                let description = format!("{} {}", target.client_name, repository_mark(&self.cfg.deployment));
                match gh
                    .generate_from_template(
                        &self.cfg.github_template,
                        &self.cfg.github_org,
                        &target.client_id,
                        &description,
                    )
                    .await
                {
                    Ok(r) => r,
                    Err(e) if e.status() == Some(422) => match gh.repository(&full_name).await? {
                        Some(r) => self.check_ours(r)?,
                        None => return Err(e),
                    },
                    Err(e) => return Err(e),
                }
            }
        };
        Ok(RepositoryOut {
            full_name: repo.full_name.unwrap_or(full_name),
            html_url: repo.html_url.map(String::from).unwrap_or_default(),
        })
    }

    fn check_ours(
        &self,
        repo: slipway_providers::github::rest::Repository,
    ) -> Result<slipway_providers::github::rest::Repository, ClientError> {
        if template_of(&repo) == Some(self.cfg.github_template.as_str()) {
            Ok(repo)
        } else {
            Err(ClientError::Conflict(format!(
                "repository {} exists and was not generated from {}; choose another client id or remove it",
                repo.full_name.as_deref().unwrap_or(&repo.name),
                self.cfg.github_template
            )))
        }
    }

    async fn delete_repo(&self, client_id: &str) -> Result<bool, ClientError> {
        let gh = &self.cfg.github;
        let full_name = format!("{}/{}", self.cfg.github_org, client_id);
        match gh.repository(&full_name).await? {
            Some(r) if template_of(&r) == Some(self.cfg.github_template.as_str()) => {
                gh.delete_repository(&full_name).await
            }
            Some(_) => {
                tracing::warn!(repo = %full_name, "repository not generated from our template; left alone");
                Ok(false)
            }
            None => Ok(false),
        }
    }

    async fn vercel_project(&self, input: &VercelInput) -> Result<String, ClientError> {
        let vercel = &self.cfg.vercel;
        if let Some(p) = vercel.project(&input.client_id).await? {
            return Ok(p.id);
        }
        let url = SecretString::from(format!("https://{}.supabase.co", input.supabase_ref));
        let anon = self.cfg.supabase.anon_key(&input.supabase_ref).await?;
        let env = [("NEXT_PUBLIC_SUPABASE_URL", &url), ("NEXT_PUBLIC_SUPABASE_ANON_KEY", &anon)];
        match vercel.create_project(&input.client_id, &input.repository, &env).await {
            Ok(p) => Ok(p.id),
            Err(e) if e.status() == Some(409) => {
                vercel.project(&input.client_id).await?.map(|p| p.id).ok_or(e)
            }
            Err(e) => Err(e),
        }
    }

    async fn n8n_workflow(&self, target: &StackTarget) -> Result<N8nOut, ClientError> {
        let n8n = &self.cfg.n8n;
        let name = resource_name(&target.client_id);
        let path = webhook_path(&target.client_id);
        let workflow = match n8n.find_workflow(&name).await? {
            Some(w) => w,
            None => {
                let created = n8n.create_webhook_workflow(&name, &path).await?;
                // An earlier attempt's create may have landed meanwhile: the oldest wins.
                n8n.find_workflow(&name).await?.unwrap_or(created)
            }
        };
        if !workflow.active {
            n8n.activate(&workflow.id).await?;
        }
        for other in n8n.workflows_named(&name).await?.into_iter().filter(|w| w.id != workflow.id) {
            tracing::warn!(workflow = %other.id, %name, kept = %workflow.id, "deleting a duplicate n8n workflow");
            n8n.delete_workflow(&other.id).await?;
        }
        Ok(N8nOut {
            workflow_id: workflow.id,
            webhook_url: format!("{}/webhook/{path}", self.cfg.n8n_public_url.trim_end_matches('/')),
        })
    }
}

/// 32 random hex characters (activity code: randomness is fine here).
fn uuid_like() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// `owner/name` of the template a repository was generated from.
fn template_of(repo: &slipway_providers::github::rest::Repository) -> Option<&str> {
    repo.template_repository.as_ref().and_then(|t| t.full_name.as_deref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_transactional_and_tracked() {
        let sql = migration_sql("002_o'brien", "CREATE TABLE t (id int);");
        assert!(sql.starts_with("BEGIN;\nCREATE TABLE t (id int);\n"));
        assert!(
            sql.contains("INSERT INTO public.slipway_schema_migrations (version) VALUES ('002_o''brien');")
        );
        assert!(sql.ends_with("COMMIT;"));
    }

    #[test]
    fn migrations_are_read_in_name_order() {
        let dir = std::env::temp_dir().join(format!("slipway-migrations-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("002_b.sql"), "select 2;").unwrap();
        std::fs::write(dir.join("001_a.sql"), "select 1;").unwrap();
        std::fs::write(dir.join("notes.txt"), "ignored").unwrap();
        let m = read_migrations(&dir).unwrap();
        assert_eq!(m, vec![("001_a".into(), "select 1;".into()), ("002_b".into(), "select 2;".into())]);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
