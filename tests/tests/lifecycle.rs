//! The agent lifecycle through the REST API: create, provision (gated on payment), stop,
//! start, destroy — checked in the sandbox inventory — plus ownership, auth and wrong states.

use std::time::Duration;

use reqwest::Method;
use serde_json::json;
use slipway_proto::model::AgentStatus;
use slipway_tests::{Options, TestApp, server_status};

const WAIT: Duration = Duration::from_secs(60);

async fn create_agent(app: &TestApp, token: &str) -> anyhow::Result<String> {
    let (status, body) = app
        .api(Method::POST, "/api/agents", Some(token), Some(json!({"name": "build box", "region": "fsn1"})))
        .await?;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["status"], "draft");
    Ok(body["agent_id"].as_str().unwrap().to_owned())
}

#[tokio::test]
async fn stop_start_destroy_round_trip_through_the_api() -> anyhow::Result<()> {
    let app = TestApp::spawn().await?;
    let user = app.id("user");
    let token = app.token(&user, None);
    app.subscribe(&user, None).await?;
    let agent = create_agent(&app, &token).await?;

    // Provision.
    let (status, body) =
        app.api(Method::POST, &format!("/api/agents/{agent}/provision"), Some(&token), None).await?;
    assert_eq!(status, 202, "{body}");
    app.wait_for_status(&agent, &[AgentStatus::Active], WAIT).await?;
    assert_eq!(server_status(&app.sandbox_state().await?, &agent).as_deref(), Some("running"));

    // Stop: graceful shutdown, then off.
    let (status, body) =
        app.api(Method::POST, &format!("/api/agents/{agent}/stop"), Some(&token), None).await?;
    assert_eq!(status, 202, "{body}");
    app.wait_for_status(&agent, &[AgentStatus::Stopped], WAIT).await?;
    assert_eq!(server_status(&app.sandbox_state().await?, &agent).as_deref(), Some("off"));

    // Stop again: wrong state, refused, nothing changes.
    let before = app.agent(&agent).await?.unwrap();
    let (status, body) =
        app.api(Method::POST, &format!("/api/agents/{agent}/stop"), Some(&token), None).await?;
    assert_eq!((status, body["code"].as_str()), (409, Some("AGENT_NOT_RUNNING")), "{body}");
    assert_eq!(app.agent(&agent).await?.unwrap(), before);

    // Start.
    let (status, body) =
        app.api(Method::POST, &format!("/api/agents/{agent}/start"), Some(&token), None).await?;
    assert_eq!(status, 202, "{body}");
    app.wait_for_status(&agent, &[AgentStatus::Active], WAIT).await?;
    assert_eq!(server_status(&app.sandbox_state().await?, &agent).as_deref(), Some("running"));
    let (status, body) =
        app.api(Method::POST, &format!("/api/agents/{agent}/start"), Some(&token), None).await?;
    assert_eq!((status, body["code"].as_str()), (409, Some("AGENT_NOT_STOPPED")), "{body}");

    // Destroy: server, tailnet device and keys gone; the agent reads as destroyed.
    let (status, body) =
        app.api(Method::POST, &format!("/api/agents/{agent}/destroy"), Some(&token), None).await?;
    assert_eq!(status, 202, "{body}");
    let record = app.wait_for_status(&agent, &[AgentStatus::Destroyed], WAIT).await?;
    let state = app.sandbox_state().await?;
    assert_eq!(server_status(&state, &agent), None);
    assert_eq!(state["tailscale"]["devices"].as_array().map_or(0, Vec::len), 0);
    assert_eq!(state["tailscale"]["keys"].as_array().map_or(0, Vec::len), 0);
    let path: Vec<_> = record.audit.iter().map(|a| a.to.as_str()).collect();
    assert_eq!(path, ["provisioning", "active", "stopping", "stopped", "active", "destroying", "destroyed"]);
    assert!(record.audit.iter().skip(2).all(|a| a.actor == format!("user:{user}")));
    let (status, body) = app.api(Method::GET, &format!("/api/agents/{agent}"), Some(&token), None).await?;
    assert_eq!((status, body["status"].as_str()), (200, Some("destroyed")));
    let (status, body) =
        app.api(Method::POST, &format!("/api/agents/{agent}/start"), Some(&token), None).await?;
    assert_eq!(status, 404, "a destroyed agent's workflow is closed: {body}");
    Ok(())
}

#[tokio::test]
async fn provisioning_without_a_subscription_is_refused() -> anyhow::Result<()> {
    let app = TestApp::spawn().await?;
    let user = app.id("user");
    let token = app.token(&user, None);
    let agent = create_agent(&app, &token).await?;

    let (status, body) =
        app.api(Method::POST, &format!("/api/agents/{agent}/provision"), Some(&token), None).await?;
    assert_eq!((status, body["code"].as_str()), (403, Some("NO_ACTIVE_SUBSCRIPTION")), "{body}");
    assert_eq!(app.agent(&agent).await?.unwrap().status, AgentStatus::Draft);
    assert_eq!(app.sandbox_state().await?["github"]["dispatches"].as_array().map_or(0, Vec::len), 0);
    Ok(())
}

#[tokio::test]
async fn other_users_see_404_and_tokens_are_required() -> anyhow::Result<()> {
    let app = TestApp::spawn().await?;
    let (owner, other) = (app.id("owner"), app.id("other"));
    let owner_token = app.token(&owner, None);
    let other_token = app.token(&other, None);
    let agent = create_agent(&app, &owner_token).await?;

    for (method, path) in [
        (Method::GET, format!("/api/agents/{agent}")),
        (Method::POST, format!("/api/agents/{agent}/stop")),
        (Method::POST, format!("/api/agents/{agent}/destroy")),
        (Method::POST, format!("/api/agents/{agent}/provision")),
    ] {
        let (status, body) = app.api(method.clone(), &path, Some(&other_token), None).await?;
        assert_eq!((status, body["code"].as_str()), (404, Some("AGENT_NOT_FOUND")), "{path}: {body}");
        let (status, body) = app.api(method.clone(), &path, None, None).await?;
        assert_eq!((status, body["code"].as_str()), (401, Some("UNAUTHENTICATED")), "{path}: {body}");
        let (status, _) = app.api(method, &path, Some("not-a-jwt"), None).await?;
        assert_eq!(status, 401);
    }
    let (_, list) = app.api(Method::GET, "/api/agents", Some(&other_token), None).await?;
    assert_eq!(list["agents"], json!([]));
    let (_, list) = app.api(Method::GET, "/api/agents", Some(&owner_token), None).await?;
    assert_eq!(list["agents"][0]["agent_id"], json!(agent));
    assert_eq!(list["agents"][0]["name"], "build box");
    assert_eq!(list["agents"][0]["status"], "draft");

    let (status, body) = app.api(Method::GET, "/api/admin/agents", Some(&owner_token), None).await?;
    assert_eq!((status, body["code"].as_str()), (403, Some("FORBIDDEN")));
    let admin = app.token("ops", Some("admin"));
    let (status, body) = app.api(Method::GET, "/api/admin/agents", Some(&admin), None).await?;
    assert_eq!(status, 200);
    assert!(body["agents"].as_array().unwrap().iter().any(|a| a["agent_id"] == json!(agent)));
    Ok(())
}

#[tokio::test]
async fn invalid_input_is_explained_field_by_field() -> anyhow::Result<()> {
    let app = TestApp::spawn().await?;
    let token = app.token(&app.id("user"), None);
    let (status, body) = app
        .api(Method::POST, "/api/agents", Some(&token), Some(json!({"name": "", "region": "mars1"})))
        .await?;
    assert_eq!((status, body["code"].as_str()), (400, Some("INVALID_INPUT")), "{body}");
    assert!(body["details"]["name"].is_string() && body["details"]["region"].is_string(), "{body}");
    let (status, body) = app.api(Method::POST, "/api/agents", Some(&token), Some(json!({"nome": 1}))).await?;
    assert_eq!((status, body["code"].as_str()), (400, Some("MALFORMED_PAYLOAD")), "{body}");
    Ok(())
}

#[tokio::test]
async fn long_histories_continue_as_new_and_keep_the_agent() -> anyhow::Result<()> {
    let app = TestApp::spawn_with(Options { history_limit: 40, ..Options::default() }).await?;
    let user = app.id("user");
    let token = app.token(&user, None);
    app.subscribe(&user, None).await?;
    let agent = create_agent(&app, &token).await?;
    app.api(Method::POST, &format!("/api/agents/{agent}/provision"), Some(&token), None).await?;
    app.wait_for_status(&agent, &[AgentStatus::Active], WAIT).await?;
    for _ in 0..3 {
        let (s, b) = app.api(Method::POST, &format!("/api/agents/{agent}/stop"), Some(&token), None).await?;
        assert_eq!(s, 202, "{b}");
        app.wait_for_status(&agent, &[AgentStatus::Stopped], WAIT).await?;
        let (s, b) = app.api(Method::POST, &format!("/api/agents/{agent}/start"), Some(&token), None).await?;
        assert_eq!(s, 202, "{b}");
        app.wait_for_status(&agent, &[AgentStatus::Active], WAIT).await?;
    }
    let runs = app.runs(&format!("agent-{agent}")).await?;
    assert!(runs.history_length <= 60, "history stays bounded: {}", runs.history_length);
    assert_ne!(runs.current, runs.first, "continued as new at least once");
    let record = app.agent(&agent).await?.unwrap();
    // provisioning, active, then stopping, stopped, active per cycle.
    assert_eq!(record.audit.len(), 2 + 3 * 3, "audit carried across runs");
    Ok(())
}
