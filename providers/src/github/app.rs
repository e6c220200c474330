//! GitHub as a GitHub App: the calls a coding job makes on a customer's repository.
//!
//! Authentication follows GitHub's App flow: an RS256 JWT (`iss` = app id, at most 10 minutes)
//! authenticates the app; it is exchanged for an installation access token
//! (`POST /app/installations/{id}/access_tokens`, valid one hour). Tokens are cached in this
//! process until five minutes before the `expires_at` GitHub gives them; they never enter
//! workflow state. Each token is asked for one repository and the permissions a job needs
//! ([`JOB_PERMISSIONS`]), never the whole installation: a token cannot read a repository the
//! job is not about, whatever URL a bug or a model's plan makes of a path. The cache is keyed
//! by installation *and* repository for the same reason.
//!
//! Every value put into a URL path (repository, file path, branch, sha, login) is
//! percent-encoded segment by segment ([`url_path`]): a path such as `a/%2e%2e/b` stays a file
//! name under `contents/`, and a segment a URL parser would resolve (`.`, `..`, empty) is
//! refused before any request is sent.
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
    /// Installation tokens by installation id and repository (`owner/name`, lowercase).
    tokens: Mutex<HashMap<(u64, String), (SecretString, SystemTime)>>,
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

/// What a job's installation token may do: edit files and branches, open pull requests,
/// comment on issues, and read the repository and its collaborators' permissions (`metadata`,
/// which GitHub grants every token anyway).
pub const JOB_PERMISSIONS: [(&str, &str); 4] =
    [("contents", "write"), ("pull_requests", "write"), ("issues", "write"), ("metadata", "read")];

/// The body of `POST /app/installations/{id}/access_tokens` for a token of `repo` (`owner/name`)
/// only: GitHub takes the repository's name without its owner (the installation fixes the owner).
fn token_request(repo: &str) -> Value {
    let name = repo.split_once('/').map_or(repo, |(_, name)| name);
    let permissions: serde_json::Map<String, Value> =
        JOB_PERMISSIONS.iter().map(|(k, v)| ((*k).to_owned(), json!(v))).collect();
    json!({"repositories": [name], "permissions": permissions})
}

/// Characters kept as they are in a URL path segment: RFC 3986's unreserved set. Everything
/// else, `%`, `/`, `?`, `#`, `\` and every non-ASCII byte included, is percent-encoded.
fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// `value` as one URL path segment, or an error when a URL parser would resolve it (`.`, `..`,
/// which no encoding hides: WHATWG URL parsers read `%2e` as `.`) or it is empty.
pub(crate) fn url_segment(what: &str, value: &str) -> Result<String, ClientError> {
    if value.is_empty() || value == "." || value == ".." {
        return Err(ClientError::InvalidRequest(format!(
            "{what} `{value}` would change the request's URL (an empty, `.` or `..` segment)"
        )));
    }
    Ok(value
        .bytes()
        .map(|b| if unreserved(b) { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect())
}

/// `value` (`/`-separated: a file path, a branch name) as URL path segments: each segment
/// encoded by [`url_segment`], the `/` between them kept.
pub(crate) fn url_path(what: &str, value: &str) -> Result<String, ClientError> {
    let segments: Vec<String> =
        value.split('/').map(|s| url_segment(what, s)).collect::<Result<_, _>>().map_err(|_| {
            ClientError::InvalidRequest(format!(
                "{what} `{value}` would change the request's URL (an empty, `.` or `..` segment)"
            ))
        })?;
    Ok(segments.join("/"))
}

/// `/repos/{owner}/{repo}` for `repo` (`owner/name`, exactly two segments), encoded.
pub(crate) fn repo_url(repo: &str) -> Result<String, ClientError> {
    match repo.split_once('/') {
        Some((owner, name)) if !name.contains('/') => {
            Ok(format!("/repos/{}/{}", url_segment("owner", owner)?, url_segment("repository", name)?))
        }
        _ => Err(ClientError::InvalidRequest(format!("repository `{repo}` is not owner/name"))),
    }
}

/// `/contents/{path}` (under a repository's URL) for a file path, each segment encoded.
fn contents_url(path: &str) -> Result<String, ClientError> {
    Ok(format!("/contents/{}", url_path("file path", path)?))
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

    /// An installation token for `repo` (`owner/name`) alone, with [`JOB_PERMISSIONS`]; from the
    /// cache while it has more than five minutes left.
    async fn token(&self, installation_id: u64, repo: &str) -> Result<SecretString, ClientError> {
        let fresh = |exp: &SystemTime| *exp > SystemTime::now() + Duration::from_secs(300);
        // GitHub compares repository names without case.
        let key = (installation_id, repo.to_ascii_lowercase());
        if let Some((token, exp)) = self.tokens.lock().expect("token cache").get(&key)
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
            .header("X-GitHub-Api-Version", "2022-11-28")
            .json(&token_request(repo));
        let t: InstallationToken = self.http.json(req).await.map_err(rate_limited)?;
        let exp = expiry(&t);
        let token = SecretString::from(t.token);
        self.tokens.lock().expect("token cache").insert(key, (token.clone(), exp));
        Ok(token)
    }

    /// A request to `/repos/{owner}/{repo}{rest}` with a token of that repository alone; `rest`
    /// is empty or starts with `/`, its variable parts already encoded.
    async fn req(
        &self,
        installation_id: u64,
        repo: &str,
        method: Method,
        rest: &str,
    ) -> Result<reqwest::RequestBuilder, ClientError> {
        let path = format!("{}{rest}", repo_url(repo)?);
        let token = self.token(installation_id, repo).await?;
        Ok(self
            .http
            .request(method, &path)
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
        let req = self.req(inst, repo, Method::POST, &format!("/issues/{issue}/comments")).await?;
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
        let req = self.req(inst, repo, Method::PATCH, &format!("/issues/comments/{comment_id}")).await?;
        let _: Comment = self.http.json(req.json(&json!({"body": body}))).await.map_err(rate_limited)?;
        Ok(())
    }

    /// A user's permission on the repository (`admin`, `write`, `read`, `none`).
    pub async fn permission(&self, inst: u64, repo: &str, login: &str) -> Result<String, ClientError> {
        let login = url_segment("login", login)?;
        let req = self.req(inst, repo, Method::GET, &format!("/collaborators/{login}/permission")).await?;
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
            .req(inst, repo, Method::GET, &format!("/git/trees/{}", url_segment("tree", git_ref)?))
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
        let req = self.req(inst, repo, Method::GET, &contents_url(path)?).await?.query(&[("ref", git_ref)]);
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
            .req(inst, repo, Method::GET, "/pulls")
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
            .json(
                self.req(inst, repo, Method::GET, &format!("/git/ref/heads/{}", url_path("branch", base)?))
                    .await?,
            )
            .await
            .map_err(rate_limited)?;
        let base_sha = ref_sha(&head).to_owned();
        let commit: GitCommitObject = self
            .http
            .json(
                self.req(
                    inst,
                    repo,
                    Method::GET,
                    &format!("/git/commits/{}", url_segment("commit", &base_sha)?),
                )
                .await?,
            )
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
                self.req(inst, repo, Method::POST, "/git/trees")
                    .await?
                    .json(&json!({"base_tree": base_tree, "tree": entries})),
            )
            .await
            .map_err(rate_limited)?;
        let new: GitCommitObject = self
            .http
            .json(
                self.req(inst, repo, Method::POST, "/git/commits")
                    .await?
                    .json(&json!({"message": message, "tree": tree.sha, "parents": [base_sha]})),
            )
            .await
            .map_err(rate_limited)?;
        let sha = new.sha;
        let create = self
            .req(inst, repo, Method::POST, "/git/refs")
            .await?
            .json(&json!({"ref": format!("refs/heads/{branch}"), "sha": sha}));
        match self.http.json::<Ref>(create).await.map_err(rate_limited) {
            Ok(_) => {}
            Err(ClientError::Api(f)) if f.status == 422 => {
                let update = self
                    .req(
                        inst,
                        repo,
                        Method::PATCH,
                        &format!("/git/refs/heads/{}", url_path("branch", branch)?),
                    )
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
            .req(inst, repo, Method::POST, "/pulls")
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
        let r: octocrab::models::Repository =
            self.http.json(self.req(inst, repo, Method::GET, "").await?).await.map_err(rate_limited)?;
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

    /// The URL a request for `path` in `acme/shop` goes to, as the URL library resolves it.
    fn contents_request_url(path: &str) -> Result<reqwest::Url, ClientError> {
        let url = format!("https://api.github.com{}{}", repo_url("acme/shop")?, contents_url(path)?);
        Ok(reqwest::Url::parse(&url).expect("a URL"))
    }

    #[test]
    fn an_encoded_escape_stays_a_file_name_under_the_repositorys_contents() {
        let url = contents_request_url("a/%2e%2e/b").expect("sent, encoded");
        assert_eq!(url.path(), "/repos/acme/shop/contents/a/%252e%252e/b");
        let url = contents_request_url("x/%2e%2e/%2e%2e/other-repo/contents/secret.yml").expect("encoded");
        assert!(url.path().starts_with("/repos/acme/shop/contents/x/"), "{url}");
        assert!(!url.path().contains("/repos/acme/other-repo"), "{url}");
        for (path, encoded) in [
            ("src/lib.rs?ref=main#x", "/repos/acme/shop/contents/src/lib.rs%3Fref%3Dmain%23x"),
            ("a\\..\\b", "/repos/acme/shop/contents/a%5C..%5Cb"),
            (
                "docs/caf\u{e9} \u{2024}\u{2024}.md",
                "/repos/acme/shop/contents/docs/caf%C3%A9%20%E2%80%A4%E2%80%A4.md",
            ),
        ] {
            let url = contents_request_url(path).expect("encoded");
            assert_eq!(url.path(), encoded);
            assert!(url.query().is_none() && url.fragment().is_none(), "{url}");
        }
    }

    #[test]
    fn a_segment_a_url_parser_would_resolve_is_never_sent() {
        for path in ["a/../b", "../other-repo/contents/x", "a/./b", "a//b", "/etc/passwd", "a/", "..", ""] {
            let err = contents_request_url(path).expect_err(path);
            assert!(matches!(err, ClientError::InvalidRequest(_)), "{path}: {err}");
            assert_eq!(err.retry(), crate::error::Retry::Permanent);
        }
        assert!(repo_url("acme/shop/contents").is_err() && repo_url("acme").is_err());
        assert!(repo_url("acme/..").is_err());
        assert_eq!(url_path("branch", "slipway/issue-4").unwrap(), "slipway/issue-4");
    }

    #[test]
    fn a_token_is_asked_for_the_one_repository_with_the_jobs_permissions() {
        assert_eq!(
            token_request("acme/shop"),
            json!({"repositories": ["shop"], "permissions": {"contents": "write",
                "pull_requests": "write", "issues": "write", "metadata": "read"}})
        );
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
