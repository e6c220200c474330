//! GitHub Actions' OIDC issuer (`token.actions.githubusercontent.com`), as a runner sees it.
//!
//! - `GET /github-oidc/.well-known/openid-configuration` and `GET /github-oidc/.well-known/jwks`:
//!   the issuer's discovery document and signing keys, shaped like GitHub's (RS256, `kid`).
//! - The runner of a dispatched `provision-agent.yml` asks for a token the way the job does
//!   (`ACTIONS_ID_TOKEN_REQUEST_URL&audience=…`), with GitHub's claims for that run:
//!   `repository`, `workflow_ref`, `run_id`, `event_name`, `sub`, … and the requested `aud`.
//! - `POST /_sandbox/github/oidc-token` mints one for any run (tests use it to forge tokens of
//!   other repositories or workflows, or expired ones).
//!
//! The signing key is a committed test key (`fixtures/github/actions-oidc-test-key.pem`) whose
//! public half is `fixtures/github/actions-oidc-test-jwks.json`.

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::StatusCode,
    response::Response,
    routing::{get, post},
};
use chrono::Utc;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};

use crate::state::{Shared, json_response, parse_body, random_hex};

const SIGNING_KEY: &str = include_str!("../../fixtures/github/actions-oidc-test-key.pem");
const JWKS: &str = include_str!("../../fixtures/github/actions-oidc-test-jwks.json");
const KID: &str = "sandbox-actions-oidc-1";

/// The issuer URL of this sandbox (what `iss` says and where the keys are).
pub(crate) fn issuer(app: &Shared) -> String {
    app.config.actions_oidc_issuer.clone().unwrap_or_else(|| format!("{}/github-oidc", app.base_url))
}

/// What a token is issued for.
pub(crate) struct Run<'a> {
    /// `owner/repo`.
    pub repository: &'a str,
    /// The workflow file, e.g. `provision-agent.yml`.
    pub workflow: &'a str,
    /// The ref it ran at, e.g. `main` or `refs/heads/main`.
    pub git_ref: &'a str,
    /// The run id.
    pub run_id: u64,
    /// The audience the job asked for.
    pub audience: &'a str,
}

/// A token as GitHub issues it to a job of `run` (a dispatched one), valid from `now - skew` for
/// `lifetime_secs`.
pub(crate) fn mint(app: &Shared, run: &Run<'_>, lifetime_secs: i64) -> String {
    mint_for_event(app, run, "workflow_dispatch", lifetime_secs)
}

/// [`mint`] for a run started by `event_name` (`push`, `pull_request`, …).
fn mint_for_event(app: &Shared, run: &Run<'_>, event_name: &str, lifetime_secs: i64) -> String {
    let now = Utc::now().timestamp();
    let git_ref = if run.git_ref.starts_with("refs/") {
        run.git_ref.to_owned()
    } else {
        format!("refs/heads/{}", run.git_ref)
    };
    let owner = run.repository.split('/').next().unwrap_or_default();
    let workflow_ref = format!("{}/.github/workflows/{}@{git_ref}", run.repository, run.workflow);
    let claims = json!({
        "jti": random_hex(32),
        "sub": format!("repo:{}:ref:{git_ref}", run.repository),
        "aud": run.audience,
        "ref": git_ref,
        "sha": random_hex(40),
        "repository": run.repository,
        "repository_owner": owner,
        "run_id": run.run_id.to_string(),
        "run_number": "1",
        "run_attempt": "1",
        "actor": "slipway-bot",
        "workflow": run.workflow,
        "workflow_ref": workflow_ref,
        "job_workflow_ref": workflow_ref,
        "event_name": event_name,
        "ref_type": "branch",
        "runner_environment": "github-hosted",
        "iss": issuer(app),
        "nbf": now - 5,
        "iat": now - 5,
        "exp": now + lifetime_secs,
    });
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(KID.to_owned());
    header.typ = Some("JWT".to_owned());
    let key = EncodingKey::from_rsa_pem(SIGNING_KEY.as_bytes()).expect("the committed test key parses");
    encode(&header, &claims, &key).expect("RS256 signing with a valid key")
}

pub(crate) fn router() -> Router<Shared> {
    Router::new()
        .route("/github-oidc/.well-known/openid-configuration", get(discovery))
        .route("/github-oidc/.well-known/jwks", get(jwks))
        .route("/_sandbox/github/oidc-token", post(control_mint))
}

async fn discovery(State(app): State<Shared>) -> Response {
    let iss = issuer(&app);
    json_response(
        StatusCode::OK,
        json!({
            "issuer": iss,
            "jwks_uri": format!("{iss}/.well-known/jwks"),
            "subject_types_supported": ["public", "pairwise"],
            "response_types_supported": ["id_token"],
            "claims_supported": ["sub", "aud", "exp", "iat", "iss", "jti", "nbf", "ref", "repository",
                "repository_owner", "run_id", "run_number", "run_attempt", "actor", "workflow",
                "workflow_ref", "job_workflow_ref", "event_name", "ref_type", "sha"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "scopes_supported": ["openid"]
        }),
    )
}

async fn jwks() -> Response {
    json_response(StatusCode::OK, serde_json::from_str(JWKS).expect("the committed JWKS parses"))
}

/// `{repository, workflow, ref?, event_name?, run_id, audience?, expires_in?}` →
/// `{"value": <token>}`, the shape of GitHub's token endpoint answer (`ref` defaults to `main`,
/// `event_name` to `workflow_dispatch`).
async fn control_mint(State(app): State<Shared>, body: Bytes) -> Response {
    let body: Value = parse_body(&body).unwrap_or(Value::Null);
    let text = |k: &str| body.get(k).and_then(Value::as_str);
    let (Some(repository), Some(workflow), Some(run_id)) =
        (text("repository"), text("workflow"), body.get("run_id").and_then(Value::as_u64))
    else {
        return json_response(
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({"message": "repository, workflow and run_id are required"}),
        );
    };
    let audience = text("audience").map_or_else(|| app.config.actions_oidc_audience.clone(), str::to_owned);
    let run =
        Run { repository, workflow, git_ref: text("ref").unwrap_or("main"), run_id, audience: &audience };
    let lifetime = body.get("expires_in").and_then(Value::as_i64).unwrap_or(300);
    let event_name = text("event_name").unwrap_or("workflow_dispatch");
    json_response(StatusCode::OK, json!({"value": mint_for_event(&app, &run, event_name, lifetime)}))
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{DecodingKey, Validation, decode, jwk::JwkSet};

    use super::*;

    /// The committed JWKS is the public half of the committed signing key.
    #[test]
    fn the_published_keys_verify_the_signatures() {
        let set: JwkSet = serde_json::from_str(JWKS).unwrap();
        let jwk = set.find(KID).expect("the kid is published");
        let key = EncodingKey::from_rsa_pem(SIGNING_KEY.as_bytes()).unwrap();
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(KID.to_owned());
        let token = encode(&header, &json!({"sub": "x", "exp": Utc::now().timestamp() + 60}), &key).unwrap();
        let mut v = Validation::new(Algorithm::RS256);
        v.validate_aud = false;
        v.set_required_spec_claims(&["exp"]);
        assert!(decode::<Value>(&token, &DecodingKey::from_jwk(jwk).unwrap(), &v).is_ok());
    }
}
