//! GitHub as tests set it up: the App installed on an account in the sandbox, and a paying user
//! linked to that account, which is what a coding job needs before an issue webhook can start it.

use anyhow::Context;
use serde_json::json;

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
        let inst = self
            .sandbox_post("/_sandbox/github/installations", json!({"account": account, "repos": [repo]}))
            .await?;
        inst["installation_id"].as_u64().context("installation id")
    }

    /// A paying user whose GitHub account has the App installed on one repository
    /// (`<acme-…>/shop`, with `maintainer` as a writer), linked to the user through the admin API
    /// when `link` is set: what a coding job needs before an issue webhook can start it.
    pub async fn github_account(&self, link: bool) -> anyhow::Result<GitHubAccount> {
        let user = self.id("user");
        let paid = self.subscribe(&user, None).await?;
        let customer = paid["customer_id"].as_str().context("customer id")?.to_owned();
        let account = self.id("acme");
        let repo = format!("{account}/shop");
        let installation = self.install_github_app(&account, &repo).await?;
        self.sandbox_post(
            &format!("/_sandbox/github/repos/{repo}/collaborators/maintainer"),
            json!({"permission": "write"}),
        )
        .await?;
        if link {
            let admin = self.token("ops", Some("admin"));
            let link = json!({"account": account, "userId": user, "customerId": customer});
            let (code, body) =
                self.api(reqwest::Method::POST, "/api/admin/github-links", Some(&admin), Some(link)).await?;
            anyhow::ensure!(code == 200, "linking {account}: {code} {body}");
        }
        Ok(GitHubAccount { user, customer, account, repo, installation })
    }
}
