//! GitHub REST client for the calls the provisioning saga makes: `workflow_dispatch`, and the
//! workflow's runs list to find a dispatched run again.
//!
//! Requests are written over the shared HTTP layer rather than through octocrab's client on
//! purpose: octocrab's error type does not carry the `Retry-After` / `x-ratelimit-reset` headers
//! that GitHub's rate-limit guidance says to honour, and its dispatch builder has no
//! `return_run_details`. Answers are read into octocrab's typed models (`Repository`). Everything else follows the REST docs:
//! - `POST /repos/{owner}/{repo}/actions/workflows/{workflow}/dispatches` answers 204, or 200 with
//!   `{workflow_run_id, run_url, html_url}` when `return_run_details: true` is sent (github.com
//!   since 2026-02; older GHES answers 400 to the unknown field, so the client falls back once).
//! - `GET /repos/{owner}/{repo}/actions/workflows/{workflow}/runs` lists runs newest first and
//!   filters by `event`, `created` (search syntax, `>=2026-03-01T10:00:00Z`), `branch`,
//!   `status`, `head_sha`, …; each run's `display_title` is the workflow's `run-name` as
//!   evaluated for that run, which is how a dispatch's input can be found again.
//! - Rate limits: 429, or 403 with `x-ratelimit-remaining: 0` / "secondary rate limit"; wait for
//!   `retry-after` or `x-ratelimit-reset`, which the shared classification honours.
//! - Every name put into a URL path is percent-encoded segment by segment (see
//!   [`super::app`]); a name that would change the URL's structure is never sent.
//! - Error bodies are `{"message": "...", "documentation_url": "..."}`.

use std::{collections::BTreeMap, time::Duration};

use chrono::{DateTime, SecondsFormat, Utc};
use reqwest::Method;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::json;

use super::app::{repo_url, url_segment};
use crate::error::ClientError;
use crate::http::Http;

/// GitHub REST client.
#[derive(Debug, Clone)]
pub struct GitHubClient {
    http: Http,
    token: SecretString,
}

/// Run details returned by a dispatch (github.com only).
#[derive(Debug, Clone, Deserialize)]
pub struct DispatchedRun {
    /// Run id.
    pub workflow_run_id: u64,
    /// HTML URL of the run.
    #[serde(default)]
    pub html_url: Option<String>,
}

/// One run of the runs list (the fields Slipway reads of GitHub's `workflow-run`).
#[derive(Debug, Clone, Deserialize)]
pub struct WorkflowRun {
    /// Run id.
    pub id: u64,
    /// The run's title: the evaluated `run-name`, or else the workflow's name.
    #[serde(default)]
    pub display_title: String,
    /// The event that started it (`workflow_dispatch`, `push`, …).
    #[serde(default)]
    pub event: String,
    /// `queued`, `in_progress`, `completed`, ….
    #[serde(default)]
    pub status: Option<String>,
    /// When GitHub created the run.
    #[serde(default)]
    pub created_at: Option<String>,
}

#[derive(Deserialize)]
struct WorkflowRuns {
    workflow_runs: Vec<WorkflowRun>,
}

fn parse_error(v: &serde_json::Value) -> (Option<String>, Option<String>) {
    (None, v["message"].as_str().map(str::to_owned))
}

impl GitHubClient {
    /// A client for `base_url` (e.g. `https://api.github.com`).
    pub fn new(base_url: &str, token: SecretString) -> Result<Self, ClientError> {
        Ok(Self { http: Http::new("github", base_url, Duration::from_secs(20), parse_error)?, token })
    }

    fn req(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, path)
            .bearer_auth(self.token.expose_secret())
            .header("Accept", "application/vnd.github+json")
            .header("X-GitHub-Api-Version", "2022-11-28")
    }

    /// Trigger `workflow` (a file name such as `provision-agent.yml`) in `repo` (`owner/name`).
    /// Returns the run if GitHub reported it.
    pub async fn dispatch_workflow(
        &self,
        repo: &str,
        workflow: &str,
        git_ref: &str,
        inputs: &BTreeMap<String, String>,
    ) -> Result<Option<DispatchedRun>, ClientError> {
        let path = format!(
            "{}/actions/workflows/{}/dispatches",
            repo_url(repo)?,
            url_segment("workflow", workflow)?
        );
        let body = json!({"ref": git_ref, "inputs": inputs, "return_run_details": true});
        let result = self.http.send(self.req(Method::POST, &path).json(&body)).await.map_err(rate_limited);
        let resp = match result {
            Ok(resp) => resp,
            // Older GHES rejects the unknown field; dispatch without it.
            Err(ClientError::Api(f)) if f.status == 400 && f.message.contains("return_run_details") => {
                let body = json!({"ref": git_ref, "inputs": inputs});
                self.http.send(self.req(Method::POST, &path).json(&body)).await.map_err(rate_limited)?
            }
            Err(e) => return Err(e),
        };
        if resp.status().as_u16() == 204 {
            return Ok(None);
        }
        Ok(resp.json::<DispatchedRun>().await.ok())
    }

    /// Runs of `workflow` in `repo` started by `event` and created at or after `created_since`,
    /// newest first (up to [`MAX_RUN_PAGES`] pages of 100).
    pub async fn workflow_runs(
        &self,
        repo: &str,
        workflow: &str,
        event: &str,
        created_since: DateTime<Utc>,
    ) -> Result<Vec<WorkflowRun>, ClientError> {
        const PER_PAGE: usize = 100;
        let path =
            format!("{}/actions/workflows/{}/runs", repo_url(repo)?, url_segment("workflow", workflow)?);
        let created = format!(">={}", created_since.to_rfc3339_opts(SecondsFormat::Secs, true));
        let mut all = Vec::new();
        for page in 1..=MAX_RUN_PAGES {
            let query = [
                ("event", event.to_owned()),
                ("created", created.clone()),
                ("exclude_pull_requests", "true".to_owned()),
                ("per_page", PER_PAGE.to_string()),
                ("page", page.to_string()),
            ];
            let runs: WorkflowRuns =
                self.http.json(self.req(Method::GET, &path).query(&query)).await.map_err(rate_limited)?;
            let last = runs.workflow_runs.len() < PER_PAGE;
            all.extend(runs.workflow_runs);
            if last {
                break;
            }
        }
        Ok(all)
    }
}

/// Pages of the runs list read at most (GitHub returns up to 1,000 filtered results).
pub const MAX_RUN_PAGES: usize = 10;

/// A repository, as octocrab models GitHub's repository object.
pub use octocrab::models::Repository;

impl GitHubClient {
    /// A repository, or `None` if absent.
    pub async fn repository(&self, full_name: &str) -> Result<Option<Repository>, ClientError> {
        match self.http.json(self.req(Method::GET, &repo_url(full_name)?)).await.map_err(rate_limited) {
            Ok(r) => Ok(Some(r)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every repository of organization `org` (`GET /orgs/{org}/repos`, all pages).
    pub async fn org_repositories(&self, org: &str) -> Result<Vec<Repository>, ClientError> {
        const PER_PAGE: usize = 100;
        let path = format!("/orgs/{}/repos", url_segment("organization", org)?);
        let mut all = Vec::new();
        for page in 1.. {
            let query = [("per_page", PER_PAGE.to_string()), ("page", page.to_string())];
            let repos: Vec<Repository> =
                self.http.json(self.req(Method::GET, &path).query(&query)).await.map_err(rate_limited)?;
            let last = repos.len() < PER_PAGE;
            all.extend(repos);
            if last {
                break;
            }
        }
        Ok(all)
    }

    /// Create `owner/name` from the template repository `template` (`owner/name`), private.
    pub async fn generate_from_template(
        &self,
        template: &str,
        owner: &str,
        name: &str,
        description: &str,
    ) -> Result<Repository, ClientError> {
        let body = json!({"owner": owner, "name": name, "description": description, "private": true,
                          "include_all_branches": false});
        self.http
            .json(self.req(Method::POST, &format!("{}/generate", repo_url(template)?)).json(&body))
            .await
            .map_err(rate_limited)
    }

    /// Delete a repository. `Ok(false)` if it was already gone.
    pub async fn delete_repository(&self, full_name: &str) -> Result<bool, ClientError> {
        match self.http.send(self.req(Method::DELETE, &repo_url(full_name)?)).await.map_err(rate_limited) {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// GitHub signals rate limiting with 403 as well as 429; make both transient.
pub(crate) fn rate_limited(err: ClientError) -> ClientError {
    match err {
        ClientError::Api(mut f)
            if f.status == 403
                && (f.retry_after.is_some() || f.message.to_ascii_lowercase().contains("rate limit")) =>
        {
            f.status = 429;
            ClientError::Api(f)
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{ApiFailure, Retry};

    #[test]
    fn secondary_rate_limit_403_is_transient() {
        let err = rate_limited(ClientError::Api(Box::new(ApiFailure {
            provider: "github",
            method: "POST".into(),
            path: "/x".into(),
            status: 403,
            code: None,
            message: "You have exceeded a secondary rate limit".into(),
            retry_after: Some(Duration::from_secs(60)),
        })));
        assert_eq!(err.retry(), Retry::Transient(Some(Duration::from_secs(60))));
    }

    #[test]
    fn plain_403_stays_permanent() {
        let err = rate_limited(ClientError::Api(Box::new(ApiFailure {
            provider: "github",
            method: "POST".into(),
            path: "/x".into(),
            status: 403,
            code: None,
            message: "Resource not accessible by integration".into(),
            retry_after: None,
        })));
        assert_eq!(err.retry(), Retry::Permanent);
    }
}
