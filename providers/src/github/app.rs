//! GitHub as a GitHub App: the calls a coding job makes on a customer's repository.
//!
//! Authentication follows GitHub's App flow: an RS256 JWT (`iss` = app id, at most 10 minutes)
//! authenticates the app; it is exchanged for an installation access token
//! (`POST /app/installations/{id}/access_tokens`, valid one hour). Tokens are cached in this
//! process until five minutes before the `expires_at` GitHub gives them; they never enter
//! workflow state.
//!
//! Requests are written over the shared HTTP layer for the same reason as [`super::rest`]: the
//! Git Data calls below (tree + commit + ref, so several files change in one commit) and the
//! rate-limit headers are used as GitHub documents them, with one retry classification for
//! every provider. Answers are read into octocrab's typed models (`octocrab::models`), so a
//! change of GitHub's shapes fails a test rather than a customer's job.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use base64::{Engine, engine::general_purpose::STANDARD};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use octocrab::models::{
    InstallationToken, commits::GitCommitObject, git::GitTree, issues::Comment, repos::Content,
    repos::Object, repos::Ref,
};
use reqwest::Method;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use super::rest::rate_limited;
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

fn parse_error(v: &Value) -> (Option<String>, Option<String>) {
    (None, v["message"].as_str().map(str::to_owned))
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// `GET /repos/{owner}/{repo}/collaborators/{username}/permission`. Hand-written: octocrab's
/// `RepoPermission` types `permission` as a team permission (`pull`, `push`, ...), while GitHub
/// answers the legacy base role (`admin`, `write`, `read`, `none`), which it cannot read.
#[derive(serde::Deserialize)]
struct CollaboratorPermission {
    permission: String,
}

/// A pull request (octocrab's model of GitHub's pull request object).
pub use octocrab::models::pulls::PullRequest;

/// One attempt of a webhook delivery (octocrab's model of GitHub's `hook-delivery-item`).
pub use octocrab::models::hooks::Delivery as HookDelivery;

/// The `cursor` of a `Link` header's `rel="next"` URL.
fn next_cursor(link: &str) -> Option<String> {
    link.split(',').find(|part| part.contains("rel=\"next\"")).and_then(|part| {
        let url = part.split(';').next()?.trim().trim_start_matches('<').trim_end_matches('>');
        let query = url.split_once('?')?.1;
        query.split('&').find_map(|kv| kv.strip_prefix("cursor=")).map(str::to_owned)
    })
}

/// The sha a ref points at (a branch points at a commit).
fn ref_sha(r: &Ref) -> &str {
    match &r.object {
        Object::Commit { sha, .. }
        | Object::Tag { sha, .. }
        | Object::Tree { sha, .. }
        | Object::Blob { sha, .. } => sha,
        _ => "",
    }
}

/// When an installation token expires (`expires_at`, RFC 3339); an hour from now if GitHub did
/// not say.
fn expiry(t: &InstallationToken) -> SystemTime {
    t.expires_at
        .as_deref()
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
        .and_then(|d| u64::try_from(d.timestamp()).ok())
        .map_or_else(
            || SystemTime::now() + Duration::from_secs(3600),
            |s| UNIX_EPOCH + Duration::from_secs(s),
        )
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
        let t: InstallationToken = self.http.json(req).await.map_err(rate_limited)?;
        let exp = expiry(&t);
        let token = SecretString::from(t.token);
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

    /// A request authenticated as the app itself (its JWT), for the `/app/...` endpoints.
    fn app_req(&self, method: Method, path: &str) -> Result<reqwest::RequestBuilder, ClientError> {
        Ok(self
            .http
            .request(method, path)
            .bearer_auth(self.app_jwt()?)
            .header("Accept", "application/vnd.github+json")
            .header("X-GitHub-Api-Version", "2022-11-28"))
    }

    /// One page of the app's webhook deliveries (`GET /app/hook/deliveries`), newest first, one
    /// item per attempt, and the cursor of the next page (from the `Link` header's `rel="next"`,
    /// as GitHub paginates this list by cursor rather than by page number).
    pub async fn hook_deliveries(
        &self,
        cursor: Option<&str>,
        per_page: u8,
    ) -> Result<(Vec<HookDelivery>, Option<String>), ClientError> {
        let mut query = vec![("per_page", per_page.to_string())];
        if let Some(c) = cursor {
            query.push(("cursor", c.to_owned()));
        }
        let req = self.app_req(Method::GET, "/app/hook/deliveries")?.query(&query);
        let resp = self.http.send(req).await.map_err(rate_limited)?;
        let next = resp.headers().get("link").and_then(|v| v.to_str().ok()).and_then(next_cursor);
        let bytes = resp.bytes().await.map_err(|e| ClientError::Transport {
            provider: self.http.provider(),
            source: e.without_url(),
        })?;
        let page: Vec<HookDelivery> = serde_json::from_slice(&bytes)
            .map_err(|e| ClientError::Decode { provider: self.http.provider(), message: e.to_string() })?;
        Ok((page, next))
    }

    /// Asks GitHub to deliver an attempt again (`POST /app/hook/deliveries/{id}/attempts`,
    /// 202): same event, same payload, same `X-GitHub-Delivery` GUID.
    pub async fn redeliver(&self, delivery_id: u64) -> Result<(), ClientError> {
        let path = format!("/app/hook/deliveries/{delivery_id}/attempts");
        self.http.send(self.app_req(Method::POST, &path)?).await.map_err(rate_limited)?;
        Ok(())
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
        let comment: Comment =
            self.http.json(req.json(&json!({"body": body}))).await.map_err(rate_limited)?;
        Ok(comment.id.into_inner())
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
        let _: Comment = self.http.json(req.json(&json!({"body": body}))).await.map_err(rate_limited)?;
        Ok(())
    }

    /// A user's permission on the repository (`admin`, `write`, `read`, `none`).
    pub async fn permission(&self, inst: u64, repo: &str, login: &str) -> Result<String, ClientError> {
        let req =
            self.req(inst, Method::GET, &format!("/repos/{repo}/collaborators/{login}/permission")).await?;
        let p: CollaboratorPermission = self.http.json(req).await.map_err(rate_limited)?;
        Ok(p.permission)
    }

    /// The paths of the repository's files at `git_ref` (a branch name or a tree sha), from the
    /// recursive tree; `true` when GitHub cut the listing short (very large repositories).
    pub async fn tree(
        &self,
        inst: u64,
        repo: &str,
        git_ref: &str,
    ) -> Result<(Vec<String>, bool), ClientError> {
        let req = self
            .req(inst, Method::GET, &format!("/repos/{repo}/git/trees/{git_ref}"))
            .await?
            .query(&[("recursive", "1")]);
        let tree: GitTree = self.http.json(req).await.map_err(rate_limited)?;
        let paths = tree.tree.into_iter().filter(|e| e.r#type == "blob").map(|e| e.path).collect();
        Ok((paths, tree.truncated))
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
        match self.http.json::<Content>(req).await.map_err(rate_limited) {
            Ok(c) => {
                let b64: String =
                    c.content.unwrap_or_default().chars().filter(|c| !c.is_whitespace()).collect();
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
        let pulls: Vec<PullRequest> = self.http.json(req).await.map_err(rate_limited)?;
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
        let head: Ref = self
            .http
            .json(self.req(inst, Method::GET, &format!("/repos/{repo}/git/ref/heads/{base}")).await?)
            .await
            .map_err(rate_limited)?;
        let base_sha = ref_sha(&head).to_owned();
        let commit: GitCommitObject = self
            .http
            .json(self.req(inst, Method::GET, &format!("/repos/{repo}/git/commits/{base_sha}")).await?)
            .await
            .map_err(rate_limited)?;
        let base_tree = commit.tree.sha;
        let entries: Vec<Value> = files
            .iter()
            .map(|(path, content)| match content {
                Some(c) => json!({"path": path, "mode": "100644", "type": "blob", "content": c}),
                None => json!({"path": path, "mode": "100644", "type": "blob", "sha": null}),
            })
            .collect();
        let tree: GitTree = self
            .http
            .json(
                self.req(inst, Method::POST, &format!("/repos/{repo}/git/trees"))
                    .await?
                    .json(&json!({"base_tree": base_tree, "tree": entries})),
            )
            .await
            .map_err(rate_limited)?;
        let new: GitCommitObject = self
            .http
            .json(
                self.req(inst, Method::POST, &format!("/repos/{repo}/git/commits"))
                    .await?
                    .json(&json!({"message": message, "tree": tree.sha, "parents": [base_sha]})),
            )
            .await
            .map_err(rate_limited)?;
        let sha = new.sha;
        let create = self
            .req(inst, Method::POST, &format!("/repos/{repo}/git/refs"))
            .await?
            .json(&json!({"ref": format!("refs/heads/{branch}"), "sha": sha}));
        match self.http.json::<Ref>(create).await.map_err(rate_limited) {
            Ok(_) => {}
            Err(ClientError::Api(f)) if f.status == 422 => {
                let update = self
                    .req(inst, Method::PATCH, &format!("/repos/{repo}/git/refs/heads/{branch}"))
                    .await?
                    .json(&json!({"sha": sha, "force": true}));
                let _: Ref = self.http.json(update).await.map_err(rate_limited)?;
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
        match self.http.json::<PullRequest>(req).await.map_err(rate_limited) {
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
        let r: octocrab::models::Repository = self
            .http
            .json(self.req(inst, Method::GET, &format!("/repos/{repo}")).await?)
            .await
            .map_err(rate_limited)?;
        r.default_branch.ok_or_else(|| ClientError::Decode {
            provider: "github",
            message: format!("repository {repo} has no default_branch"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(expires_at: Option<&str>) -> InstallationToken {
        serde_json::from_value(json!({"token": "ghs_x", "expires_at": expires_at, "permissions": {}}))
            .expect("GitHub's access token answer")
    }

    #[test]
    fn the_next_cursor_comes_from_the_link_header() {
        let link = "<https://api.github.com/app/hook/deliveries?per_page=2&cursor=v1_17>; rel=\"next\"";
        assert_eq!(next_cursor(link).as_deref(), Some("v1_17"));
        assert_eq!(next_cursor("<https://api.github.com/x?cursor=a>; rel=\"prev\""), None);
    }

    #[test]
    fn an_installation_token_is_cached_until_the_expiry_github_gives() {
        let at = expiry(&token(Some("2026-12-06T19:00:00Z")));
        assert_eq!(at.duration_since(UNIX_EPOCH).unwrap().as_secs(), 1_796_583_600);
        let unknown = expiry(&token(None)).duration_since(SystemTime::now()).unwrap();
        assert!(unknown > Duration::from_secs(3590), "an hour when GitHub does not say");
    }
}
