//! GitHub Actions OIDC tokens: proof of *which run* sent a request.
//!
//! A job with `permissions: id-token: write` can ask GitHub for a short-lived JWT (RS256) whose
//! claims name the repository, the workflow file and ref, the run and the audience it asked for
//! (GitHub's "About security hardening with OpenID Connect"). Slipway's bootstrap job
//! (`provision-agent.yml`) sends one with every callback; [`OidcVerifier`] checks it against the
//! issuer's published keys (`{issuer}/.well-known/openid-configuration` → `jwks_uri`), its
//! issuer, audience, expiry and not-before (60 s leeway), and hands back the claims;
//! [`ActionsClaims::check_dispatched`] then matches them against what Slipway dispatches: the
//! repository, the workflow file, the `workflow_dispatch` event and the ref.
//!
//! Keys are cached and refetched when a token names an unknown `kid` (GitHub rotates keys), at
//! most once a minute so forged `kid`s cannot make Slipway hammer the issuer.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header, jwk::JwkSet};
use serde::Deserialize;
use tokio::sync::RwLock;

/// GitHub's issuer of Actions OIDC tokens.
pub const GITHUB_ISSUER: &str = "https://token.actions.githubusercontent.com";

/// Shortest interval between two key fetches.
const REFETCH_AFTER: Duration = Duration::from_secs(60);

/// The claims Slipway matches (names as GitHub issues them).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ActionsClaims {
    /// `owner/repo` the workflow ran in.
    pub repository: String,
    /// `owner/repo/.github/workflows/<file>@<ref>`.
    pub workflow_ref: String,
    /// The run's id (a decimal string).
    pub run_id: String,
    /// The event that started the run: `workflow_dispatch` for dispatched runs.
    #[serde(default)]
    pub event_name: Option<String>,
    /// The ref the run ran at, fully qualified (`refs/heads/main`).
    #[serde(default, rename = "ref")]
    pub git_ref: Option<String>,
}

/// Why a verified token is not one of the run Slipway dispatched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotDispatched {
    /// Another repository, or another workflow file.
    #[error("the token was issued to another repository or workflow")]
    OtherWorkflow,
    /// A run started by another event than `workflow_dispatch` (a push, a pull request…).
    #[error("the token was issued to a run started by {0}, not workflow_dispatch")]
    OtherEvent(String),
    /// A run of the workflow file at another ref (a branch with a modified copy of it).
    #[error("the token was issued to a run at {0}, not the ref Slipway dispatches")]
    OtherRef(String),
}

impl ActionsClaims {
    /// True when the token was issued to a run of `workflow` (a file name such as
    /// `provision-agent.yml`) in `repository`, at any ref.
    pub fn is_run_of(&self, repository: &str, workflow: &str) -> bool {
        let prefix = format!("{repository}/.github/workflows/{workflow}@");
        self.repository.eq_ignore_ascii_case(repository)
            && self.workflow_ref.len() > prefix.len()
            && self.workflow_ref[..prefix.len()].eq_ignore_ascii_case(&prefix)
    }

    /// Ok when the token was issued to a `workflow_dispatch` run of `workflow` in `repository`
    /// at `git_ref` (fully qualified, see [`qualified_ref`]): the ref is the `ref` claim and the
    /// one `workflow_ref` names, since a dispatched run takes its workflow file from that ref.
    /// Whoever can push a branch cannot then prove a run of a modified copy of the file.
    pub fn check_dispatched(
        &self,
        repository: &str,
        workflow: &str,
        git_ref: &str,
    ) -> Result<(), NotDispatched> {
        if !self.is_run_of(repository, workflow) {
            return Err(NotDispatched::OtherWorkflow);
        }
        let event = self.event_name.as_deref().unwrap_or_default();
        if event != "workflow_dispatch" {
            return Err(NotDispatched::OtherEvent(
                if event.is_empty() { "an unnamed event" } else { event }.to_owned(),
            ));
        }
        let claimed = self.git_ref.as_deref().unwrap_or_default();
        let file_ref = self.workflow_ref.rsplit_once('@').map_or("", |(_, r)| r);
        if claimed != git_ref || file_ref != git_ref {
            let shown = if claimed == git_ref { file_ref } else { claimed };
            return Err(NotDispatched::OtherRef(if shown.is_empty() { "no ref" } else { shown }.to_owned()));
        }
        Ok(())
    }
}

/// A ref as the `ref` claim spells it: a branch name (`main`) becomes `refs/heads/main`; a ref
/// already under `refs/` (`refs/tags/v1`) stays as it is.
pub fn qualified_ref(git_ref: &str) -> String {
    if git_ref.starts_with("refs/") { git_ref.to_owned() } else { format!("refs/heads/{git_ref}") }
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OidcError {
    /// Not a JWT, or not RS256 with a `kid`.
    #[error("not an Actions OIDC token: {0}")]
    Malformed(String),
    /// Signature, issuer, audience or lifetime check failed, or the key is unknown.
    #[error("Actions OIDC token rejected: {0}")]
    Rejected(String),
    /// The issuer's keys could not be fetched (retry later).
    #[error("Actions OIDC keys unavailable: {0}")]
    Unavailable(String),
}

#[derive(Default)]
struct Keys {
    by_kid: HashMap<String, DecodingKey>,
    fetched: Option<Instant>,
}

/// Verifies Actions OIDC tokens for one issuer and audience.
pub struct OidcVerifier {
    issuer: String,
    audience: String,
    http: reqwest::Client,
    keys: RwLock<Keys>,
}

impl std::fmt::Debug for OidcVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcVerifier")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish()
    }
}

#[derive(Deserialize)]
struct Discovery {
    jwks_uri: String,
}

impl OidcVerifier {
    /// For tokens of `issuer` (e.g. [`GITHUB_ISSUER`]) requested for `audience`.
    pub fn new(issuer: &str, audience: &str) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .user_agent(concat!("slipway/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("a client with a timeout and user agent always builds");
        Self {
            issuer: issuer.trim_end_matches('/').to_owned(),
            audience: audience.to_owned(),
            http,
            keys: RwLock::new(Keys::default()),
        }
    }

    /// Verifies `token` and returns its claims.
    pub async fn verify(&self, token: &str) -> Result<ActionsClaims, OidcError> {
        let header = decode_header(token).map_err(|e| OidcError::Malformed(e.to_string()))?;
        if header.alg != Algorithm::RS256 {
            return Err(OidcError::Malformed(format!("algorithm {:?}, expected RS256", header.alg)));
        }
        let kid = header.kid.ok_or_else(|| OidcError::Malformed("no kid".into()))?;
        let key = self.key(&kid).await?;
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.validate_nbf = true;
        validation.leeway = 60;
        decode::<ActionsClaims>(token, &key, &validation)
            .map(|data| data.claims)
            .map_err(|e| OidcError::Rejected(e.to_string()))
    }

    async fn key(&self, kid: &str) -> Result<DecodingKey, OidcError> {
        {
            let keys = self.keys.read().await;
            if let Some(k) = keys.by_kid.get(kid) {
                return Ok(k.clone());
            }
            if keys.fetched.is_some_and(|t| t.elapsed() < REFETCH_AFTER) {
                return Err(OidcError::Rejected(format!("unknown key {kid}")));
            }
        }
        let mut keys = self.keys.write().await;
        if !keys.by_kid.contains_key(kid) && keys.fetched.is_none_or(|t| t.elapsed() >= REFETCH_AFTER) {
            // Only a fetch that succeeded starts the quiet minute: after a failure the next
            // callback tries again (and is answered 503 meanwhile, so its sender retries).
            keys.by_kid = self.fetch().await?;
            keys.fetched = Some(Instant::now());
        }
        keys.by_kid.get(kid).cloned().ok_or_else(|| OidcError::Rejected(format!("unknown key {kid}")))
    }

    async fn fetch(&self) -> Result<HashMap<String, DecodingKey>, OidcError> {
        let discovery: Discovery =
            self.get_json(&format!("{}/.well-known/openid-configuration", self.issuer)).await?;
        let set: JwkSet = self.get_json(&discovery.jwks_uri).await?;
        Ok(set
            .keys
            .iter()
            .filter_map(|jwk| Some((jwk.common.key_id.clone()?, DecodingKey::from_jwk(jwk).ok()?)))
            .collect())
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T, OidcError> {
        let unavailable = |e: reqwest::Error| OidcError::Unavailable(e.without_url().to_string());
        let resp = self
            .http
            .get(url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(unavailable)?;
        resp.json().await.map_err(unavailable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(repo: &str, wf: &str) -> ActionsClaims {
        ActionsClaims {
            repository: repo.into(),
            workflow_ref: wf.into(),
            run_id: "1".into(),
            event_name: Some("workflow_dispatch".into()),
            git_ref: wf.rsplit_once('@').map(|(_, r)| r.to_owned()),
        }
    }

    #[test]
    fn a_run_of_the_workflow_in_the_repository() {
        let ok = claims("acme/agents", "acme/agents/.github/workflows/provision-agent.yml@refs/heads/main");
        assert!(ok.is_run_of("acme/agents", "provision-agent.yml"));
        assert!(ok.is_run_of("Acme/Agents", "provision-agent.yml"), "GitHub names are case-insensitive");
        assert!(!ok.is_run_of("acme/other", "provision-agent.yml"));
        assert!(!ok.is_run_of("acme/agents", "deploy.yml"));
        let other_wf =
            claims("acme/agents", "acme/agents/.github/workflows/provision-agent.yml.bak@refs/heads/x");
        assert!(!other_wf.is_run_of("acme/agents", "provision-agent.yml"));
        let elsewhere =
            claims("acme/agents", "evil/fork/.github/workflows/provision-agent.yml@refs/heads/main");
        assert!(!elsewhere.is_run_of("acme/agents", "provision-agent.yml"));
    }

    #[test]
    fn only_a_dispatched_run_at_the_configured_ref() {
        let (repo, wf, main) = ("acme/agents", "provision-agent.yml", "refs/heads/main");
        let ok = claims(repo, "acme/agents/.github/workflows/provision-agent.yml@refs/heads/main");
        assert_eq!(ok.check_dispatched(repo, wf, main), Ok(()));
        assert_eq!(ok.check_dispatched("acme/other", wf, main), Err(NotDispatched::OtherWorkflow));

        let pushed = ActionsClaims { event_name: Some("push".into()), ..ok.clone() };
        assert_eq!(pushed.check_dispatched(repo, wf, main), Err(NotDispatched::OtherEvent("push".into())));
        let unnamed = ActionsClaims { event_name: None, ..ok.clone() };
        assert!(matches!(unnamed.check_dispatched(repo, wf, main), Err(NotDispatched::OtherEvent(_))));

        let branch = claims(repo, "acme/agents/.github/workflows/provision-agent.yml@refs/heads/evil");
        assert_eq!(
            branch.check_dispatched(repo, wf, main),
            Err(NotDispatched::OtherRef("refs/heads/evil".into()))
        );
        // The ref claim and the workflow file's ref must both be the configured one.
        let mixed = ActionsClaims { git_ref: Some(main.into()), ..branch.clone() };
        assert_eq!(
            mixed.check_dispatched(repo, wf, main),
            Err(NotDispatched::OtherRef("refs/heads/evil".into()))
        );
        let no_ref = ActionsClaims { git_ref: None, ..ok.clone() };
        assert_eq!(no_ref.check_dispatched(repo, wf, main), Err(NotDispatched::OtherRef("no ref".into())));
        assert_eq!(
            ok.check_dispatched(repo, wf, "refs/heads/main-2"),
            Err(NotDispatched::OtherRef(main.into()))
        );
    }

    #[test]
    fn refs_are_qualified_like_the_claim() {
        assert_eq!(qualified_ref("main"), "refs/heads/main");
        assert_eq!(qualified_ref("release/v2"), "refs/heads/release/v2");
        assert_eq!(qualified_ref("refs/tags/v1"), "refs/tags/v1");
    }
}
