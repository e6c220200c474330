//! Vercel REST API client (`https://api.vercel.com`).
//!
//! Facts relied on (Vercel REST API reference): projects are created with `POST /v11/projects`
//! (name, `gitRepository: {type, repo}`, `environmentVariables`), read and deleted under
//! `/v9/projects/{idOrName}`; deployments are created with `POST /v13/deployments` and move
//! `QUEUED → BUILDING → READY | ERROR | CANCELED` (`GET /v13/deployments/{id}`). Every call
//! may carry `?teamId=`. Error bodies are `{"error": {"code", "message"}}`.

use std::time::Duration;

use reqwest::Method;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::ClientError;
use crate::http::Http;

/// Vercel client.
#[derive(Debug, Clone)]
pub struct VercelClient {
    http: Http,
    token: SecretString,
    team_id: Option<String>,
}

/// A project (fields Slipway uses).
#[derive(Debug, Clone, Deserialize)]
pub struct VercelProject {
    /// `prj_…`.
    pub id: String,
    /// Name.
    pub name: String,
}

/// A deployment.
#[derive(Debug, Clone, Deserialize)]
pub struct Deployment {
    /// `dpl_…`.
    pub id: String,
    /// Host name (without scheme).
    pub url: String,
    /// `QUEUED`, `BUILDING`, `READY`, `ERROR`, `CANCELED`.
    #[serde(rename = "readyState", default)]
    pub ready_state: String,
}

fn parse_error(v: &Value) -> (Option<String>, Option<String>) {
    let e = &v["error"];
    (e["code"].as_str().map(str::to_owned), e["message"].as_str().map(str::to_owned))
}

impl VercelClient {
    /// A client for `base_url` (e.g. `https://api.vercel.com`), optionally scoped to a team.
    pub fn new(base_url: &str, token: SecretString, team_id: Option<String>) -> Result<Self, ClientError> {
        Ok(Self {
            http: Http::new("vercel", base_url, Duration::from_secs(30), parse_error)?,
            token,
            team_id,
        })
    }

    fn req(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let req = self.http.request(method, path).bearer_auth(self.token.expose_secret());
        match &self.team_id {
            Some(team) => req.query(&[("teamId", team)]),
            None => req,
        }
    }

    /// A project by name or id; `None` if absent.
    pub async fn project(&self, name: &str) -> Result<Option<VercelProject>, ClientError> {
        match self.http.json(self.req(Method::GET, &format!("/v9/projects/{name}"))).await {
            Ok(p) => Ok(Some(p)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Create a project linked to a GitHub repository, with environment variables.
    pub async fn create_project(
        &self,
        name: &str,
        repo: &str,
        env: &[(&str, &SecretString)],
    ) -> Result<VercelProject, ClientError> {
        let vars: Vec<Value> = env
            .iter()
            .map(|(k, v)| json!({"key": k, "value": v.expose_secret(), "target": ["production", "preview"], "type": "encrypted"}))
            .collect();
        let body = json!({"name": name, "framework": "nextjs",
                          "gitRepository": {"type": "github", "repo": repo}, "environmentVariables": vars});
        self.http.json(self.req(Method::POST, "/v11/projects").json(&body)).await
    }

    /// Start a production deployment of the repository's default branch.
    pub async fn deploy(&self, project: &str, org: &str, repo: &str) -> Result<Deployment, ClientError> {
        let body = json!({"name": project, "project": project, "target": "production",
                          "gitSource": {"type": "github", "org": org, "repo": repo, "ref": "main"}});
        self.http.json(self.req(Method::POST, "/v13/deployments").json(&body)).await
    }

    /// A deployment's current state.
    pub async fn deployment(&self, id: &str) -> Result<Deployment, ClientError> {
        self.http.json(self.req(Method::GET, &format!("/v13/deployments/{id}"))).await
    }

    /// Delete a project (and its deployments). `Ok(false)` if it was already gone.
    pub async fn delete_project(&self, name: &str) -> Result<bool, ClientError> {
        match self.http.send(self.req(Method::DELETE, &format!("/v9/projects/{name}"))).await {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }
}
