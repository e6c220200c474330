//! GitHub as a GitHub App: the calls a coding job makes on a customer's repository.
//!
//! Authentication follows GitHub's App flow: an RS256 JWT (`iss` = app id, at most 10 minutes)
//! authenticates the app; it is exchanged for an installation access token
//! (`POST /app/installations/{id}/access_tokens`, valid one hour). Tokens are cached in this
//! process and refreshed five minutes before they expire; they never enter workflow state.
//!
//! Hand-written over `reqwest` for the same reason as [`super::github`]: the Git Data calls
//! below (tree + commit + ref, so several files change in one commit) and the rate-limit
//! headers are used as GitHub documents them.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use base64::{Engine, engine::general_purpose::STANDARD};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::Method;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::ClientError;
use crate::http::Http;

/// GitHub App client.
pub struct GitHubApp {
    http: Http,
    app_id: String,
    key: EncodingKey,
    tokens: Mutex<HashMap<u64, (SecretString, SystemTime)>>,
}

impl std::fmt::Debug for GitHubApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitHubApp").field("app_id", &self.app_id).finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct AccessToken {
    token: String,
}

fn parse_error(v: &Value) -> (Option<String>, Option<String>) {
    (None, v["message"].as_str().map(str::to_owned))
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A pull request (fields used).
#[derive(Debug, Clone, Deserialize)]
pub struct PullRequest {
    /// Number.
    pub number: u64,
    /// URL.
    pub html_url: String,
}

impl GitHubApp {
    /// A client for `base_url` as app `app_id` with its PEM private key.
    pub fn new(base_url: &str, app_id: &str, private_key_pem: &SecretString) -> Result<Self, ClientError> {
        let key = EncodingKey::from_rsa_pem(private_key_pem.expose_secret().as_bytes()).map_err(|e| {
            ClientError::Configuration(format!("GITHUB_APP_PRIVATE_KEY is not an RSA PEM key: {e}"))
        })?;
        Ok(Self {
            http: Http::new("github-app", base_url, Duration::from_secs(30), parse_error)?,
            app_id: app_id.to_owned(),
            key,
            tokens: Mutex::new(HashMap::new()),
        })
    }

    fn app_jwt(&self) -> Result<String, ClientError> {
        // Backdated a minute for clock drift, as GitHub recommends; 9 minutes of validity.
        let now = unix(SystemTime::now());
        let claims = json!({"iat": now - 60, "exp": now + 540, "iss": self.app_id});
        jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &self.key)
            .map_err(|e| ClientError::Configuration(format!("signing the app JWT: {e}")))
    }

    /// An installation token, from the cache while it has more than five minutes left.
    async fn token(&self, installation_id: u64) -> Result<SecretString, ClientError> {
        let fresh = |exp: &SystemTime| *exp > SystemTime::now() + Duration::from_secs(300);
        if let Some((token, exp)) = self.tokens.lock().expect("token cache").get(&installation_id)
            && fresh(exp)
        {
            return Ok(token.clone());
        }
        let path = format!("/app/installations/{installation_id}/access_tokens");
        let req = self
            .http
            .request(Method::POST, &path)
            .bearer_auth(self.app_jwt()?)
            .header("Accept", "application/vnd.github+json")
            .header("X-GitHub-Api-Version", "2022-11-28");
        let t: AccessToken = self.http.json(req).await?;
        let token = SecretString::from(t.token);
        // GitHub tokens last one hour; cache for a little less.
        let exp = SystemTime::now() + Duration::from_secs(55 * 60);
        self.tokens.lock().expect("token cache").insert(installation_id, (token.clone(), exp));
        Ok(token)
    }

    async fn req(
        &self,
        installation_id: u64,
        method: Method,
        path: &str,
    ) -> Result<reqwest::RequestBuilder, ClientError> {
        let token = self.token(installation_id).await?;
        Ok(self
            .http
            .request(method, path)
            .bearer_auth(token.expose_secret())
            .header("Accept", "application/vnd.github+json")
            .header("X-GitHub-Api-Version", "2022-11-28"))
    }

    /// Comment on an issue; returns the comment id.
    pub async fn create_comment(
        &self,
        inst: u64,
        repo: &str,
        issue: u64,
        body: &str,
    ) -> Result<u64, ClientError> {
        let req = self.req(inst, Method::POST, &format!("/repos/{repo}/issues/{issue}/comments")).await?;
        let v: Value = self.http.json(req.json(&json!({"body": body}))).await?;
        v["id"]
            .as_u64()
            .ok_or_else(|| ClientError::Decode { provider: "github", message: "comment without id".into() })
    }

    /// Edit a comment.
    pub async fn update_comment(
        &self,
        inst: u64,
        repo: &str,
        comment_id: u64,
        body: &str,
    ) -> Result<(), ClientError> {
        let req =
            self.req(inst, Method::PATCH, &format!("/repos/{repo}/issues/comments/{comment_id}")).await?;
        self.http.send(req.json(&json!({"body": body}))).await.map(|_| ())
    }

    /// A user's permission on the repository (`admin`, `write`, `read`, `none`).
    pub async fn permission(&self, inst: u64, repo: &str, login: &str) -> Result<String, ClientError> {
        let req =
            self.req(inst, Method::GET, &format!("/repos/{repo}/collaborators/{login}/permission")).await?;
        let v: Value = self.http.json(req).await?;
        Ok(v["permission"].as_str().unwrap_or("none").to_owned())
    }

    /// A file's text at `git_ref`, or `None`.
    pub async fn file(
        &self,
        inst: u64,
        repo: &str,
        path: &str,
        git_ref: &str,
    ) -> Result<Option<String>, ClientError> {
        let req = self
            .req(inst, Method::GET, &format!("/repos/{repo}/contents/{path}"))
            .await?
            .query(&[("ref", git_ref)]);
        match self.http.json::<Value>(req).await {
            Ok(v) => {
                let b64: String = v["content"]
                    .as_str()
                    .unwrap_or_default()
                    .chars()
                    .filter(|c| !c.is_whitespace())
                    .collect();
                Ok(STANDARD.decode(b64).ok().map(|b| String::from_utf8_lossy(&b).into_owned()))
            }
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The open pull request from `branch`, if any.
    pub async fn open_pull(
        &self,
        inst: u64,
        repo: &str,
        branch: &str,
    ) -> Result<Option<PullRequest>, ClientError> {
        let owner = repo.split('/').next().unwrap_or_default();
        let req = self
            .req(inst, Method::GET, &format!("/repos/{repo}/pulls"))
            .await?
            .query(&[("head", format!("{owner}:{branch}")), ("state", "open".to_owned())]);
        let pulls: Vec<PullRequest> = self.http.json(req).await?;
        Ok(pulls.into_iter().next())
    }

    /// Commit `files` (content `None` deletes) on top of `base` into `branch` (created, or moved
    /// with force: a retry replaces the commit of an interrupted attempt), in one commit.
    pub async fn commit_files(
        &self,
        inst: u64,
        repo: &str,
        base: &str,
        branch: &str,
        message: &str,
        files: &[(String, Option<String>)],
    ) -> Result<String, ClientError> {
        let head: Value = self
            .http
            .json(self.req(inst, Method::GET, &format!("/repos/{repo}/git/ref/heads/{base}")).await?)
            .await?;
        let base_sha = head["object"]["sha"].as_str().unwrap_or_default().to_owned();
        let commit: Value = self
            .http
            .json(self.req(inst, Method::GET, &format!("/repos/{repo}/git/commits/{base_sha}")).await?)
            .await?;
        let base_tree = commit["tree"]["sha"].as_str().unwrap_or_default().to_owned();
        let entries: Vec<Value> = files
            .iter()
            .map(|(path, content)| match content {
                Some(c) => json!({"path": path, "mode": "100644", "type": "blob", "content": c}),
                None => json!({"path": path, "mode": "100644", "type": "blob", "sha": null}),
            })
            .collect();
        let tree: Value = self
            .http
            .json(
                self.req(inst, Method::POST, &format!("/repos/{repo}/git/trees"))
                    .await?
                    .json(&json!({"base_tree": base_tree, "tree": entries})),
            )
            .await?;
        let new: Value = self
            .http
            .json(
                self.req(inst, Method::POST, &format!("/repos/{repo}/git/commits"))
                    .await?
                    .json(&json!({"message": message, "tree": tree["sha"], "parents": [base_sha]})),
            )
            .await?;
        let sha = new["sha"].as_str().unwrap_or_default().to_owned();
        let create = self
            .req(inst, Method::POST, &format!("/repos/{repo}/git/refs"))
            .await?
            .json(&json!({"ref": format!("refs/heads/{branch}"), "sha": sha}));
        match self.http.send(create).await {
            Ok(_) => {}
            Err(ClientError::Api(f)) if f.status == 422 => {
                let update = self
                    .req(inst, Method::PATCH, &format!("/repos/{repo}/git/refs/heads/{branch}"))
                    .await?
                    .json(&json!({"sha": sha, "force": true}));
                self.http.send(update).await?;
            }
            Err(e) => return Err(e),
        }
        Ok(sha)
    }

    /// Open a pull request (or return the one already open from `branch`).
    pub async fn open_pull_request(
        &self,
        inst: u64,
        repo: &str,
        branch: &str,
        base: &str,
        title: &str,
        body: &str,
    ) -> Result<PullRequest, ClientError> {
        let req = self
            .req(inst, Method::POST, &format!("/repos/{repo}/pulls"))
            .await?
            .json(&json!({"title": title, "head": branch, "base": base, "body": body}));
        match self.http.json::<PullRequest>(req).await {
            Ok(pr) => Ok(pr),
            Err(ClientError::Api(f)) if f.status == 422 => match self.open_pull(inst, repo, branch).await? {
                Some(pr) => Ok(pr),
                None => Err(ClientError::Api(f)),
            },
            Err(e) => Err(e),
        }
    }

    /// The repository's default branch.
    pub async fn default_branch(&self, inst: u64, repo: &str) -> Result<String, ClientError> {
        let v: Value = self.http.json(self.req(inst, Method::GET, &format!("/repos/{repo}")).await?).await?;
        Ok(v["default_branch"].as_str().unwrap_or("main").to_owned())
    }
}
