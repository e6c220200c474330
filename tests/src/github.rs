//! GitHub as tests set it up: the App installed on an account in the sandbox, and a paying user
//! linked to that account, which is what a coding job needs before an issue webhook can start it.

use anyhow::Context;
use serde_json::{Value, json};

use crate::TestApp;

/// What [`TestApp::github_account`] set up.
#[derive(Debug, Clone)]
pub struct GitHubAccount {
    /// The paying user.
    pub user: String,
    /// Their Stripe customer.
    pub customer: String,
    /// The GitHub account (organisation) with the App installed.
    pub account: String,
    /// `account/shop`, the one repository of the installation.
    pub repo: String,
    /// The installation id.
    pub installation: u64,
}

impl TestApp {
    /// Install the GitHub App on `account` with one repository (in the sandbox); returns the
    /// installation id.
    pub async fn install_github_app(&self, account: &str, repo: &str) -> anyhow::Result<u64> {
        self.install_github_app_with(account, repo, None).await
    }

    /// [`TestApp::install_github_app`], the repository starting with `files` (path → text)
    /// instead of the sandbox's seed.
    async fn install_github_app_with(
        &self,
        account: &str,
        repo: &str,
        files: Option<Value>,
    ) -> anyhow::Result<u64> {
        let mut body = json!({"account": account, "repos": [repo]});
        if let Some(files) = files {
            body["files"] = files;
        }
        let inst = self.sandbox_post("/_sandbox/github/installations", body).await?;
        inst["installation_id"].as_u64().context("installation id")
    }

    /// A paying user whose GitHub account has the App installed on one repository
    /// (`<acme-…>/shop`, with `maintainer` as a writer), linked to the user through the admin API
    /// when `link` is set: what a coding job needs before an issue webhook can start it.
    pub async fn github_account(&self, link: bool) -> anyhow::Result<GitHubAccount> {
        self.github_account_with(link, None).await
    }

    /// [`TestApp::github_account`], linked, its repository starting with `files` (path → text).
    pub async fn github_account_with_files(&self, files: Value) -> anyhow::Result<GitHubAccount> {
        self.github_account_with(true, Some(files)).await
    }

    async fn github_account_with(&self, link: bool, files: Option<Value>) -> anyhow::Result<GitHubAccount> {
        let user = self.id("user");
        let paid = self.subscribe(&user, None).await?;
        let customer = paid["customer_id"].as_str().context("customer id")?.to_owned();
        let account = self.id("acme");
        let repo = format!("{account}/shop");
        let installation = self.install_github_app_with(&account, &repo, files).await?;
        self.sandbox_post(
            &format!("/_sandbox/github/repos/{repo}/collaborators/maintainer"),
            json!({"permission": "write"}),
        )
        .await?;
        let s = GitHubAccount { user, customer, account, repo, installation };
        if link {
            self.link_github(&s).await?;
        }
        Ok(s)
    }

    /// Link the account to its user and customer through the admin API, as an operator does.
    pub async fn link_github(&self, s: &GitHubAccount) -> anyhow::Result<()> {
        let admin = self.token("ops", Some("admin"));
        let link = json!({"account": s.account, "userId": s.user, "customerId": s.customer});
        let (code, body) =
            self.api(reqwest::Method::POST, "/api/admin/github-links", Some(&admin), Some(link)).await?;
        anyhow::ensure!(code == 200, "linking {}: {code} {body}", s.account);
        Ok(())
    }
}

/// An App JWT signed with the test App's key: what GitHub's `/app/...` endpoints (deliveries,
/// webhook configuration) take.
pub(crate) fn app_jwt() -> anyhow::Result<String> {
    let now = crate::now();
    let claims = json!({"iat": now - 60, "exp": now + 540, "iss": "424242"});
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(crate::GITHUB_APP_PRIVATE_KEY.as_bytes())?;
    Ok(jsonwebtoken::encode(&jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256), &claims, &key)?)
}

impl TestApp {
    /// Point the App's webhook at `url` (`PATCH /app/hook/config`), as an App owner does in its
    /// settings; later deliveries and redeliveries go there.
    pub async fn set_hook_url(&self, url: &str) -> anyhow::Result<()> {
        let resp = self
            .http
            .patch(format!("{}/github/app/hook/config", self.sandbox.base_url))
            .bearer_auth(app_jwt()?)
            .header("accept", "application/vnd.github+json")
            .json(&json!({"url": url}))
            .send()
            .await?;
        anyhow::ensure!(resp.status() == 200, "hook config: {}", resp.status());
        Ok(())
    }

    /// Every recorded delivery attempt of a Stripe event (`/_sandbox/state`), once each has been
    /// attempted at least `attempts` times.
    pub async fn stripe_events_attempted(&self, attempts: usize) -> anyhow::Result<Vec<Value>> {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(90);
        loop {
            let state = self.sandbox_state().await?;
            let events = state["stripe"]["events"].as_array().cloned().unwrap_or_default();
            let tried = |e: &Value| e["deliveries"].as_array().is_some_and(|d| d.len() >= attempts);
            if !events.is_empty() && events.iter().all(tried) {
                return Ok(events);
            }
            anyhow::ensure!(tokio::time::Instant::now() < deadline, "events not attempted: {events:#?}");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}
