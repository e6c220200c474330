//! A failure at each saga step rolls back everything created before it: the sandbox inventory
//! ends empty and the agent ends `failed` with a reason a person can act on.

use std::time::Duration;

use serde_json::{Value, json};
use slipway_proto::model::{AgentStatus, ProvisioningPolicy};
use slipway_tests::{Options, TestApp};

const WAIT: Duration = Duration::from_secs(90);

fn inventory(state: &Value) -> (usize, usize, usize) {
    let n = |p: &str, k: &str| state[p][k].as_array().map_or(0, Vec::len);
    (n("hetzner", "servers"), n("tailscale", "keys"), n("tailscale", "devices"))
}

/// Provision with `setup` applied to the sandbox; expect failure whose reason contains
/// `reason_part`; expect an empty inventory.
async fn fails_and_rolls_back(app: &TestApp, reason_part: &str) -> anyhow::Result<()> {
    let (user, agent) = (app.id("user"), app.id("agent"));
    let (event, _) = app.checkout_event(&user, &agent, "fsn1");
    let resp = app.post_stripe(&event).await?;
    assert_eq!(resp.status(), 200, "{}", resp.text().await?);

    let record = app.wait_for_status(&agent, &[AgentStatus::Active, AgentStatus::Failed], WAIT).await?;
    assert_eq!(record.status, AgentStatus::Failed, "{record:#?}");
    let reason = record.failure_reason.clone().unwrap_or_default();
    assert!(reason.contains(reason_part), "reason {reason:?} should mention {reason_part:?}");
    assert!(reason.contains("rolled back"), "reason {reason:?}");
    assert_eq!(inventory(&app.sandbox_state().await?), (0, 0, 0), "everything rolled back");
    Ok(())
}

#[tokio::test]
async fn tailscale_key_failure_rolls_back() -> anyhow::Result<()> {
    let app = TestApp::spawn().await?;
    app.fault(json!({"method": "POST", "path": "/tailscale/api/v2/tailnet/*/keys", "status": 403})).await?;
    fails_and_rolls_back(&app, "tailscale_key").await
}

#[tokio::test]
async fn hetzner_create_failure_rolls_back() -> anyhow::Result<()> {
    let app = TestApp::spawn().await?;
    app.fault(json!({"method": "POST", "path": "/hetzner/v1/servers", "status": 422})).await?;
    fails_and_rolls_back(&app, "hetzner_server").await
}

#[tokio::test]
async fn server_never_ready_rolls_back() -> anyhow::Result<()> {
    let app = TestApp::spawn().await?;
    app.fault(json!({"method": "GET", "path": "/hetzner/v1/actions/*", "status": 403})).await?;
    fails_and_rolls_back(&app, "server_ready").await
}

#[tokio::test]
async fn dispatch_rejection_rolls_back() -> anyhow::Result<()> {
    let app = TestApp::spawn().await?;
    app.fault(
        json!({"method": "POST", "path": "/github/repos/*/*/actions/workflows/*/dispatches", "status": 422}),
    )
    .await?;
    fails_and_rolls_back(&app, "actions_dispatch").await
}

#[tokio::test]
async fn failed_actions_job_rolls_back() -> anyhow::Result<()> {
    let app = TestApp::spawn().await?;
    app.runner("fail").await?;
    fails_and_rolls_back(&app, "bootstrap script exited with 1").await
}

#[tokio::test]
async fn missing_callback_rolls_back_at_the_deadline() -> anyhow::Result<()> {
    let app = TestApp::spawn_with(Options {
        policy: ProvisioningPolicy { callback_deadline_secs: 3, dispatch_deadline_secs: 60 },
        ..Options::default()
    })
    .await?;
    app.runner("silent").await?;
    fails_and_rolls_back(&app, "no final callback").await
}

#[tokio::test]
async fn a_failing_compensation_does_not_skip_the_others() -> anyhow::Result<()> {
    let app = TestApp::spawn().await?;
    app.fault(
        json!({"method": "POST", "path": "/github/repos/*/*/actions/workflows/*/dispatches", "status": 422}),
    )
    .await?;
    app.fault(json!({"method": "DELETE", "path": "/hetzner/v1/servers/*", "status": 403})).await?;
    let (user, agent) = (app.id("user"), app.id("agent"));
    let (event, _) = app.checkout_event(&user, &agent, "fsn1");
    assert_eq!(app.post_stripe(&event).await?.status(), 200);

    let record = app.wait_for_status(&agent, &[AgentStatus::Active, AgentStatus::Failed], WAIT).await?;
    let reason = record.failure_reason.unwrap_or_default();
    assert!(reason.contains("rollback incomplete"), "{reason}");
    assert!(reason.contains("hetzner_server compensation failed"), "{reason}");
    // The server could not be deleted, but the keys (compensated after it) were still revoked.
    let (servers, keys, devices) = inventory(&app.sandbox_state().await?);
    assert_eq!((servers, keys, devices), (1, 0, 0));
    Ok(())
}
