//! Determinism guard: every workflow type replays against recorded histories.
//!
//! - `committed_histories_replay` replays the histories under `tests/histories/` (recorded from
//!   real runs). A change to workflow code that alters its commands fails here, before it can
//!   break the workflows running in production.
//! - `live_histories_replay_and_hold_no_secrets` records fresh histories (success and rollback)
//!   from a real run, replays them, checks they hold no secret, and with
//!   `SLIPWAY_RECORD_HISTORIES=1` rewrites the committed files.

use std::{path::PathBuf, time::Duration};

use base64::Engine;
use reqwest::Method;
use serde_json::json;
use slipway_proto::model::{AgentStatus, agent_workflow_id};
use slipway_tests::{SEAL_KEY, TestApp};
use slipway_workflows::AgentWorkflow;
use temporalio_client::{
    WorkflowExecutionInfo, WorkflowFetchHistoryOptions, WorkflowHandle, WorkflowHistory,
};
use temporalio_sdk::workflow_replayer::{WorkflowReplayer, WorkflowReplayerOptions};

fn histories_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("histories")
}

fn replayer() -> anyhow::Result<WorkflowReplayer> {
    Ok(WorkflowReplayer::new(slipway_workflows::register_all(WorkflowReplayerOptions::new())?.build())?)
}

/// Workflow type named by a history's first event.
fn workflow_type(json: &serde_json::Value) -> Option<String> {
    let first = &json["events"][0]["attributes"];
    let attrs = first.as_object()?.values().next()?;
    attrs["workflow_type"]["name"].as_str().map(str::to_owned)
}

#[tokio::test]
async fn committed_histories_replay() -> anyhow::Result<()> {
    slipway_tests::init_logging();
    let replayer = replayer()?;
    let mut types = Vec::new();
    let mut files: Vec<_> =
        std::fs::read_dir(histories_dir())?.filter_map(Result::ok).map(|e| e.path()).collect();
    files.sort();
    for path in files.iter().filter(|p| p.extension().is_some_and(|e| e == "json")) {
        let bytes = std::fs::read(path)?;
        let value: serde_json::Value = serde_json::from_slice(&bytes)?;
        types.extend(workflow_type(&value));
        replayer
            .replay_workflow(WorkflowHistory::from_json(&bytes)?)
            .await
            .map_err(|e| anyhow::anyhow!("{} no longer replays: {e}", path.display()))?;
    }
    for required in
        ["Agent", "ProvisionAgent", "Subscription", "ClientStack", "Job", "JobGate", "GitHubLinks"]
    {
        assert!(types.iter().any(|t| t == required), "no committed history of {required}: {types:?}");
    }
    Ok(())
}

async fn history(app: &TestApp, workflow_id: &str, run_id: Option<&str>) -> anyhow::Result<Vec<u8>> {
    let mut info = WorkflowExecutionInfo::builder().namespace("default").workflow_id(workflow_id).build();
    info.run_id = run_id.map(str::to_owned);
    let handle = WorkflowHandle::<_, AgentWorkflow>::new(app.client.clone(), info);
    Ok(handle.fetch_history(WorkflowFetchHistoryOptions::default()).to_json().await?)
}

/// The history as text with every payload decoded: history JSON carries payload bytes in
/// base64, so a plain substring search would never see a leaked secret.
fn readable(bytes: &[u8]) -> anyhow::Result<String> {
    fn walk(v: &serde_json::Value, out: &mut String) {
        match v {
            serde_json::Value::Object(map) => {
                if let Some(serde_json::Value::String(data)) = map.get("data")
                    && let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(data)
                {
                    out.push_str(&String::from_utf8_lossy(&raw));
                    out.push('\n');
                }
                map.values().for_each(|x| walk(x, out));
            }
            serde_json::Value::Array(items) => items.iter().for_each(|x| walk(x, out)),
            serde_json::Value::String(s) => {
                out.push_str(s);
                out.push('\n');
            }
            _ => {}
        }
    }
    let mut out = String::new();
    walk(&serde_json::from_slice(bytes)?, &mut out);
    Ok(out)
}

#[tokio::test]
async fn live_histories_replay_and_hold_no_secrets() -> anyhow::Result<()> {
    let app = TestApp::spawn().await?;
    let wait = Duration::from_secs(60);

    // One success and one rollback (for a second user, so both run).
    let (ok_user, ok_agent) = (app.id("okuser"), app.id("okagent"));
    let (event, _) = app.checkout_event(&ok_user, &ok_agent, "fsn1");
    assert_eq!(app.post_stripe(&event).await?.status(), 200);
    let ok = app.wait_for_status(&ok_agent, &[AgentStatus::Active, AgentStatus::Failed], wait).await?;
    assert_eq!(ok.status, AgentStatus::Active);

    app.fault(
        json!({"method": "POST", "path": "/github/repos/*/*/actions/workflows/*/dispatches", "status": 422}),
    )
    .await?;
    let (bad_user, bad_agent) = (app.id("baduser"), app.id("badagent"));
    let (event, _) = app.checkout_event(&bad_user, &bad_agent, "fsn1");
    assert_eq!(app.post_stripe(&event).await?.status(), 200);
    let bad = app.wait_for_status(&bad_agent, &[AgentStatus::Active, AgentStatus::Failed], wait).await?;
    assert_eq!(bad.status, AgentStatus::Failed);

    app.http.delete(format!("{}/_sandbox/faults", app.sandbox.base_url)).send().await?.error_for_status()?;

    // A customer's billing story: checkout, an agent provisioned through the API, stopped and
    // started, a failed renewal (suspends it), then paid (resumes it), then destroyed.
    let billing_user = app.id("billinguser");
    let token = app.token(&billing_user, None);
    let paid = app.subscribe(&billing_user, None).await?;
    let (_, created) = app
        .api(Method::POST, "/api/agents", Some(&token), Some(json!({"name": "replay", "region": "fsn1"})))
        .await?;
    let life_agent = created["agent_id"].as_str().unwrap().to_owned();
    for (op, status) in
        [("provision", AgentStatus::Active), ("stop", AgentStatus::Stopped), ("start", AgentStatus::Active)]
    {
        let (code, body) =
            app.api(Method::POST, &format!("/api/agents/{life_agent}/{op}"), Some(&token), None).await?;
        assert_eq!(code, 202, "{op}: {body}");
        app.wait_for_status(&life_agent, &[status], wait).await?;
    }
    let customer = paid["customer_id"].as_str().unwrap().to_owned();
    let sub = paid["subscription_id"].as_str().unwrap();
    let failed =
        app.sandbox_post(&format!("/_sandbox/stripe/subscriptions/{sub}/payment_failed"), json!({})).await?;
    let invoice = failed["invoice_id"].as_str().unwrap();
    app.wait_for_status(&life_agent, &[AgentStatus::Suspended], wait).await?;
    app.sandbox_post(&format!("/_sandbox/stripe/invoices/{invoice}/pay"), json!({})).await?;
    app.wait_for_status(&life_agent, &[AgentStatus::Active], wait).await?;
    app.api(Method::POST, &format!("/api/agents/{life_agent}/destroy"), Some(&token), None).await?;
    app.wait_for_status(&life_agent, &[AgentStatus::Destroyed], wait).await?;
    let deadline = tokio::time::Instant::now() + wait;
    while app.billing_state(&customer).await?.applied.len() < 7 {
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "billing events not applied");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A coding job: linked account, issue → PR (one review round) → merged.
    let account = app.id("replayorg");
    let repo = format!("{account}/app");
    let inst = app
        .sandbox_post("/_sandbox/github/installations", json!({"account": account, "repos": [repo]}))
        .await?;
    let installation = inst["installation_id"].as_u64().unwrap();
    let admin_token = app.token("ops", Some("admin"));
    let (code, body) = app
        .api(
            Method::POST,
            "/api/admin/github-links",
            Some(&admin_token),
            Some(json!({"account": account, "userId": billing_user, "customerId": customer})),
        )
        .await?;
    assert_eq!(code, 200, "{body}");
    app.sandbox_post("/_sandbox/openai/review", json!({"changes_first": 1})).await?;
    let issue = slipway_sandbox::github_events::issues(
        "opened",
        &repo,
        installation,
        1,
        "Replay me",
        "",
        &["slipway"],
        "dev",
    );
    app.sandbox_post(
        "/_sandbox/github/webhooks",
        json!({"event": "issues", "payload": issue, "delivery_id": "replay-1"}),
    )
    .await?;
    let job_id = slipway_proto::jobs::job_workflow_id(&repo, 1);
    let deadline = tokio::time::Instant::now() + wait;
    let pr = loop {
        if let Ok(s) = app.gateway().job_status(&job_id).await
            && s.billed.len() == 2
        {
            break s.pr_number.unwrap();
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "job did not open its PR");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    app.sandbox_post(&format!("/_sandbox/github/repos/{repo}/pulls/{pr}/close"), json!({"merged": true}))
        .await?;
    while app.gateway().job_status(&job_id).await?.pr_outcome.is_none() {
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "job did not see the merge");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A client stack that succeeds, and one that fails at n8n and rolls back.
    let admin = app.token("ops", Some("admin"));
    let stack_ok = app.id("stackok");
    let stack_bad = app.id("stackbad");
    for client in [&stack_ok, &stack_bad] {
        if client == &stack_bad {
            app.fault(json!({"method": "POST", "path": "/n8n/api/v1/workflows", "status": 400})).await?;
        }
        let body = json!({"clientId": client, "clientName": "Replay", "orgEmail": "ops@example.com", "tier": "starter"});
        let (code, resp) = app.api(Method::POST, "/api/provisioning", Some(&admin), Some(body)).await?;
        assert_eq!(code, 202, "{resp}");
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let (_, s) =
                app.api(Method::GET, &format!("/api/provisioning/{client}"), Some(&admin), None).await?;
            if matches!(s["state"].as_str(), Some("ready" | "rolled_back" | "needs_attention")) {
                break;
            }
            anyhow::ensure!(tokio::time::Instant::now() < deadline, "stack {client} did not settle: {s}");
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    }

    let recorded = [
        ("job-merged", history(&app, &job_id, None).await?),
        ("job-gate", history(&app, &slipway_proto::jobs::job_gate_workflow_id(&customer), None).await?),
        (
            "github-links",
            history(&app, &slipway_proto::jobs::github_links_workflow_id(&app.task_queue), None).await?,
        ),
        ("client-stack-success", history(&app, &format!("client-stack-{stack_ok}"), None).await?),
        ("client-stack-rollback", history(&app, &format!("client-stack-{stack_bad}"), None).await?),
        ("agent-lifecycle", history(&app, &agent_workflow_id(&life_agent), None).await?),
        (
            "subscription-billing",
            history(&app, &slipway_proto::billing::customer_workflow_id(&customer), None).await?,
        ),
        ("agent-active", history(&app, &agent_workflow_id(&ok_agent), None).await?),
        (
            "provisioning-success",
            history(&app, ok.provisioning_workflow_id.as_deref().unwrap(), ok.provisioning_run_id.as_deref())
                .await?,
        ),
        ("agent-failed", history(&app, &agent_workflow_id(&bad_agent), None).await?),
        (
            "provisioning-rollback",
            history(
                &app,
                bad.provisioning_workflow_id.as_deref().unwrap(),
                bad.provisioning_run_id.as_deref(),
            )
            .await?,
        ),
    ];

    let replayer = replayer()?;
    let secrets = [
        "tskey-auth-",
        "test-hetzner-token",
        "tskey-api-test",
        "ghp_test",
        SEAL_KEY,
        "whsec_",
        "sk_test_slipway",
        "sbp_test",
        "vercel_test",
        "n8n_test",
        "sk-llm-test",
        "ghs_",
        "BEGIN RSA PRIVATE KEY",
        "BEGIN PRIVATE KEY",
        "eyJhbGci", // JWT-shaped keys (Supabase anon/service_role) never enter a history
    ];
    for (name, bytes) in &recorded {
        replayer
            .replay_workflow(WorkflowHistory::from_json(bytes)?)
            .await
            .map_err(|e| anyhow::anyhow!("{name} does not replay: {e}"))?;
        let text = readable(bytes)?;
        assert!(
            text.contains("\"agent_id\"") || text.contains("\"client_id\"") || text.contains("customer"),
            "{name}: payloads were decoded"
        );
        for secret in secrets {
            assert!(!text.contains(secret), "{name} history contains {secret:?}");
        }
        if std::env::var_os("SLIPWAY_RECORD_HISTORIES").is_some() {
            let pretty = serde_json::to_vec_pretty(&serde_json::from_slice::<serde_json::Value>(bytes)?)?;
            std::fs::write(histories_dir().join(format!("{name}.json")), pretty)?;
        }
    }
    Ok(())
}
