//! Actions callbacks must prove which run sent them: an Actions OIDC token of a dispatched run of
//! the workflow at the dispatched ref (the sandbox plays GitHub's issuer), or (only when enabled
//! next to OIDC) the HMAC fallback over a body signed with a recent `sent_at`. Every body names
//! its run, and the saga takes callbacks only from the run it dispatched.

use std::time::Duration;

use serde_json::{Value, json};
use slipway_proto::model::{AgentStatus, StepState};
use slipway_providers::signature::sign_hmac_sha256;
use slipway_tests::{ACTIONS_REPO, CALLBACK_SECRET, Options, TestApp, now};

async fn error_code(resp: reqwest::Response) -> (u16, String) {
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    (status, body["code"].as_str().unwrap_or_default().to_owned())
}

/// A token from the sandbox's issuer, as GitHub would issue it to `run_id` of `workflow` in
/// `repository`, dispatched at `main` (`extra` overrides: `audience`, `expires_in`, `ref`,
/// `event_name`).
async fn token(
    app: &TestApp,
    repository: &str,
    workflow: &str,
    run_id: u64,
    extra: Value,
) -> anyhow::Result<String> {
    let mut body = json!({"repository": repository, "workflow": workflow, "run_id": run_id});
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    let v = app.sandbox_post("/_sandbox/github/oidc-token", body).await?;
    Ok(v["value"].as_str().unwrap_or_default().to_owned())
}

async fn post(
    app: &TestApp,
    token: Option<&str>,
    signature: Option<String>,
    body: &Value,
) -> anyhow::Result<reqwest::Response> {
    let mut req = app.http.post(format!("{}/callbacks/github-actions", app.starter_url)).json(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(s) = signature {
        req = req.header("x-slipway-signature", s);
    }
    Ok(req.send().await?)
}

/// With OIDC configured and `SLIPWAY_CALLBACK_HMAC` unset, the shared secret proves nothing: a
/// well-signed, recent callback without a token is refused.
#[tokio::test]
async fn hmac_signed_callbacks_are_refused_while_oidc_is_configured() -> anyhow::Result<()> {
    let app = TestApp::spawn().await?;
    let body = json!({"job_id": "provisioning-nobody/run-x", "agent_id": "a1", "status": "succeeded",
        "run_id": "77", "sent_at": now()});
    let signature = Some(sign_hmac_sha256(body.to_string().as_bytes(), CALLBACK_SECRET.as_bytes()));
    assert_eq!(
        error_code(post(&app, None, signature, &body).await?).await,
        (401, "MISSING_SIGNATURE".into())
    );
    assert_eq!(error_code(post(&app, None, None, &body).await?).await, (401, "MISSING_SIGNATURE".into()));
    Ok(())
}

/// `SLIPWAY_CALLBACK_HMAC=true` keeps the HMAC fallback next to OIDC.
#[tokio::test]
async fn the_hmac_fallback_needs_a_valid_signature_over_a_recent_body() -> anyhow::Result<()> {
    let app = TestApp::spawn_with(Options { callback_hmac: Some(true), ..Options::default() }).await?;
    let sign = |b: &Value| Some(sign_hmac_sha256(b.to_string().as_bytes(), CALLBACK_SECRET.as_bytes()));
    let unknown_job = json!({"job_id": "provisioning-nobody/run-x", "agent_id": "a1", "status": "succeeded",
        "run_id": "77", "sent_at": now()});

    let forged = Some(sign_hmac_sha256(unknown_job.to_string().as_bytes(), b"wrong"));
    assert_eq!(
        error_code(post(&app, None, forged, &unknown_job).await?).await,
        (401, "INVALID_SIGNATURE".into())
    );
    assert_eq!(
        error_code(post(&app, None, None, &unknown_job).await?).await,
        (401, "MISSING_SIGNATURE".into())
    );
    let undated = json!({"job_id": "provisioning-nobody/run-x", "agent_id": "a1", "status": "succeeded", "run_id": "77"});
    assert_eq!(
        error_code(post(&app, None, sign(&undated), &undated).await?).await,
        (401, "STALE_TIMESTAMP".into())
    );
    let replayed = json!({"job_id": "provisioning-nobody/run-x", "agent_id": "a1", "status": "succeeded",
        "run_id": "77", "sent_at": now() - 301});
    assert_eq!(
        error_code(post(&app, None, sign(&replayed), &replayed).await?).await,
        (401, "STALE_TIMESTAMP".into())
    );

    assert_eq!(
        error_code(post(&app, None, sign(&unknown_job), &unknown_job).await?).await,
        (404, "JOB_NOT_FOUND".into())
    );
    // Every status names its run: the saga matches it against the run it dispatched.
    for status in ["running", "succeeded", "failed"] {
        let without_run =
            json!({"job_id": "provisioning-u/r", "agent_id": "a1", "status": status, "sent_at": now()});
        assert_eq!(
            error_code(post(&app, None, sign(&without_run), &without_run).await?).await,
            (400, "INVALID_CALLBACK".into()),
            "{status} without run_id"
        );
    }
    Ok(())
}

#[tokio::test]
async fn an_oidc_token_must_come_from_a_run_of_the_dispatched_workflow() -> anyhow::Result<()> {
    let app = TestApp::spawn().await?;
    let body = json!({"job_id": "provisioning-nobody/run-x", "agent_id": "a1", "status": "succeeded", "run_id": "77"});
    let wf = "provision-agent.yml";

    let good = token(&app, ACTIONS_REPO, wf, 77, json!({})).await?;
    assert_eq!(
        error_code(post(&app, Some(&good), None, &body).await?).await,
        (404, "JOB_NOT_FOUND".into()),
        "proven, but no such job"
    );

    for (why, t, expected) in [
        ("another repository", token(&app, "evil/agents", wf, 77, json!({})).await?, (403, "WRONG_RUN")),
        (
            "a pushed branch (a modified copy of the workflow)",
            token(&app, ACTIONS_REPO, wf, 77, json!({"ref": "refs/heads/evil"})).await?,
            (403, "WRONG_RUN"),
        ),
        (
            "a tag, not the dispatched branch",
            token(&app, ACTIONS_REPO, wf, 77, json!({"ref": "refs/tags/main"})).await?,
            (403, "WRONG_RUN"),
        ),
        (
            "a run started by a push, not workflow_dispatch",
            token(&app, ACTIONS_REPO, wf, 77, json!({"event_name": "push"})).await?,
            (403, "WRONG_RUN"),
        ),
        (
            "another workflow",
            token(&app, ACTIONS_REPO, "debug.yml", 77, json!({})).await?,
            (403, "WRONG_RUN"),
        ),
        (
            "another run than the body",
            token(&app, ACTIONS_REPO, wf, 78, json!({})).await?,
            (403, "WRONG_RUN"),
        ),
        (
            "another audience",
            token(&app, ACTIONS_REPO, wf, 77, json!({"audience": "sts.amazonaws.com"})).await?,
            (401, "INVALID_CALLBACK_TOKEN"),
        ),
        (
            "expired",
            token(&app, ACTIONS_REPO, wf, 77, json!({"expires_in": -120})).await?,
            (401, "INVALID_CALLBACK_TOKEN"),
        ),
        ("not a token", "not-a-jwt".to_owned(), (401, "INVALID_CALLBACK_TOKEN")),
    ] {
        let got = error_code(post(&app, Some(&t), None, &body).await?).await;
        assert_eq!(got, (expected.0, expected.1.to_owned()), "{why}");
    }
    // A valid token whose claims were edited no longer verifies against the issuer's keys.
    let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut claims: Value = serde_json::from_slice(&b64.decode(&parts[1])?)?;
    claims["repository"] = json!("evil/agents");
    parts[1] = b64.encode(claims.to_string());
    let tampered = parts.join(".");
    assert_eq!(
        error_code(post(&app, Some(&tampered), None, &body).await?).await,
        (401, "INVALID_CALLBACK_TOKEN".into())
    );

    // The token's run is not taken for the body's: a body must name its run.
    let unnamed = json!({"job_id": "provisioning-nobody/run-x", "agent_id": "a1", "status": "succeeded"});
    assert_eq!(
        error_code(post(&app, Some(&good), None, &unnamed).await?).await,
        (400, "INVALID_CALLBACK".into())
    );
    Ok(())
}

/// With the HMAC fallback off, provisioning completes on OIDC-proven callbacks alone; and a
/// proven callback of another run than the dispatched one is ignored by the saga.
#[tokio::test]
async fn the_saga_takes_callbacks_of_its_dispatched_run_only() -> anyhow::Result<()> {
    let app = TestApp::spawn_with(Options { callback_hmac: Some(false), ..Options::default() }).await?;
    let (user, agent) = (app.id("user"), app.id("agent"));
    let (event, _) = app.checkout_event(&user, &agent, "fsn1");
    assert_eq!(app.post_stripe(&event).await?.status(), 200);
    app.wait_for_status(&agent, &[AgentStatus::Active], Duration::from_secs(60)).await?;

    // Second agent: the runner stays silent, so only the test's callbacks reach the saga.
    app.runner("silent").await?;
    let other = format!("{agent}-2");
    let (event, _) = app.checkout_event(&user, &other, "fsn1");
    assert_eq!(app.post_stripe(&event).await?.status(), 200);
    let dispatch =
        slipway_tests::wait_for(&format!("a dispatch for {other}"), Duration::from_secs(30), || async {
            let state = app.sandbox_state().await?;
            Ok(state["github"]["dispatches"]
                .as_array()
                .and_then(|d| d.iter().find(|x| x["inputs"]["agent_id"] == json!(other)).cloned()))
        })
        .await?;
    let job_id = dispatch["inputs"]["job_id"].as_str().unwrap_or_default().to_owned();
    let run_id = dispatch["run_id"].as_u64().unwrap_or_default();
    // The saga has recorded the dispatch's answer (the run id it now expects).
    let (saga, saga_run) = job_id.split_once('/').unwrap_or_default();
    slipway_tests::wait_until("the saga recorded its dispatch", Duration::from_secs(30), || async {
        let progress = app.gateway().provisioning_progress(saga, saga_run).await?;
        Ok(progress.steps.iter().any(|s| s.name == "actions_dispatch" && s.state == StepState::Done))
    })
    .await?;

    // Proven, but by another run of the same workflow: accepted by the door, ignored by the saga.
    let stranger = run_id + 1;
    let t = token(&app, ACTIONS_REPO, "provision-agent.yml", stranger, json!({})).await?;
    let body =
        json!({"job_id": job_id, "agent_id": other, "status": "succeeded", "run_id": stranger.to_string()});
    assert_eq!(post(&app, Some(&t), None, &body).await?.status(), 202);
    // The saga has processed the callback (a task completed after its signal): only then does
    // "still provisioning" say anything.
    slipway_tests::wait_until("the saga processed the callback", Duration::from_secs(30), || async {
        Ok(app.runs(saga).await?.settled)
    })
    .await?;
    let status = app.agent(&other).await?.map(|a| a.status);
    assert_eq!(status, Some(AgentStatus::Provisioning), "another run's success is not this job's");

    // The dispatched run's own callback completes it.
    let t = token(&app, ACTIONS_REPO, "provision-agent.yml", run_id, json!({})).await?;
    let body =
        json!({"job_id": job_id, "agent_id": other, "status": "succeeded", "run_id": run_id.to_string()});
    assert_eq!(post(&app, Some(&t), None, &body).await?.status(), 202);
    app.wait_for_status(&other, &[AgentStatus::Active], Duration::from_secs(30)).await?;
    Ok(())
}

/// The shipped bootstrap workflow runs only when dispatched (so its tokens say
/// `workflow_dispatch`), takes exactly the inputs the saga dispatches, may request the OIDC token,
/// and sends both credentials with a signed `sent_at` and its run id in every body.
#[test]
fn the_shipped_provision_agent_workflow_matches_what_slipway_dispatches_and_accepts() -> anyhow::Result<()> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/actions/provision-agent.yml");
    let text = std::fs::read_to_string(path)?;
    let doc: serde_yaml::Value = serde_yaml::from_str(&text)?;
    let triggers: Vec<&str> =
        doc["on"].as_mapping().expect("on: a mapping").keys().filter_map(serde_yaml::Value::as_str).collect();
    assert_eq!(triggers, ["workflow_dispatch"], "Slipway accepts tokens of dispatched runs only");
    let inputs = doc["on"]["workflow_dispatch"]["inputs"].as_mapping().expect("workflow_dispatch inputs");
    let mut names: Vec<&str> = inputs.keys().filter_map(serde_yaml::Value::as_str).collect();
    names.sort_unstable();
    assert_eq!(names, ["agent_id", "callback_url", "correlation_id", "job_id", "region"]);
    for (name, input) in inputs {
        // The correlation id is optional, so a Slipway from before it can dispatch this file.
        let required = name.as_str() != Some("correlation_id");
        assert_eq!(input["required"].as_bool(), Some(required), "{name:?}");
    }
    // The run's title carries the correlation id: a retried dispatch finds its run by it.
    let run_name = doc["run-name"].as_str().expect("a run-name");
    let compact: String = run_name.chars().filter(|c| !c.is_whitespace()).collect();
    assert!(compact.contains("${{inputs.correlation_id}}"), "run-name `{run_name}` lacks the correlation id");
    assert_eq!(doc["permissions"]["id-token"].as_str(), Some("write"));
    for needle in [
        "ACTIONS_ID_TOKEN_REQUEST_URL&audience=",
        "Authorization: Bearer $token",
        "X-Slipway-Signature: sha256=",
        "sent_at: $sent_at",
        "run_id: $run",
    ] {
        assert!(text.contains(needle), "provision-agent.yml lacks `{needle}`");
    }
    Ok(())
}
