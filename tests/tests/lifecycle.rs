//! The agent lifecycle through the REST API: create, provision (gated on payment), stop,
//! start, destroy — checked in the sandbox inventory — plus ownership, auth and wrong states.

use std::time::Duration;

use reqwest::Method;
use serde_json::json;
use slipway_proto::model::AgentStatus;
use slipway_tests::{Options, TestApp, server_status, wait_for};

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

/// What an app's progress view sees: `GET /api/agents/{id}/events` from before provisioning
/// to the end, every status change and saga step once, in order; a reconnect with
/// `Last-Event-ID` continues exactly after the last event received.
#[tokio::test]
async fn an_app_follows_an_agent_live_and_resumes_without_gaps_or_repeats() -> anyhow::Result<()> {
    const EVENT: Duration = Duration::from_secs(30);
    let app = TestApp::spawn().await?;
    let user = app.id("user");
    let token = app.token(&user, None);
    app.subscribe(&user, None).await?;
    let agent = create_agent(&app, &token).await?;
    let mut live = app.agent_events(&agent, &token, None).await?.expect("the owner may watch");
    // Idle: a heartbeat, without an id.
    let beat = live.next(EVENT).await?.expect("open");
    assert_eq!((beat.event.as_str(), beat.id.as_str()), ("heartbeat", ""));

    let (status, body) =
        app.api(Method::POST, &format!("/api/agents/{agent}/provision"), Some(&token), None).await?;
    assert_eq!(status, 202, "{body}");
    let mut seen = Vec::new();
    while seen.last().is_none_or(|e: &slipway_tests::SseEvent| e.data["to"] != "active") {
        seen.push(live.next_change(EVENT).await?.expect("the stream stays open while the agent lives"));
    }
    let names: Vec<String> = seen
        .iter()
        .map(|e| match e.event.as_str() {
            "state" => format!("state:{}", e.data["to"].as_str().unwrap()),
            _ => format!(
                "{}:{}:{}",
                e.event,
                e.data["step"].as_str().unwrap_or(""),
                e.data["state"].as_str().unwrap_or("")
            ),
        })
        .collect();
    assert_eq!(names.first().map(String::as_str), Some("state:provisioning"), "{names:?}");
    for step in [
        "tailscale_key",
        "hetzner_server",
        "server_ready",
        "actions_dispatch",
        "actions_callback",
        "tailscale_device",
    ] {
        let mine: Vec<&String> = names.iter().filter(|n| n.starts_with(&format!("step:{step}:"))).collect();
        assert_eq!(mine.last().map(|s| s.as_str()), Some(format!("step:{step}:done").as_str()), "{names:?}");
        assert!(mine.len() >= 2, "{step} went through running to done: {names:?}");
    }
    let ids: Vec<&str> = seen.iter().map(|e| e.id.as_str()).collect();
    let unique: std::collections::BTreeSet<_> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "every event has its own id: {ids:?}");
    let seqs: Vec<u64> =
        seen.iter().filter(|e| e.event == "step").map(|e| e.data["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "no step change missed or repeated");

    // A reconnect after any event gets exactly the rest, from the workflow's state, whoever
    // serves it: the first event, the middle one, the last one.
    for k in [0, seen.len() / 2, seen.len() - 1] {
        let mut resumed = app.agent_events(&agent, &token, Some(&seen[k].id)).await?.expect("resumable");
        for expected in &seen[k + 1..] {
            assert_eq!(
                &resumed.next_change(EVENT).await?.expect("open"),
                expected,
                "resumed after {}",
                seen[k].id
            );
        }
        // Nothing repeated: the next thing on an idle stream is a heartbeat.
        assert_eq!(resumed.next(EVENT).await?.expect("open").event, "heartbeat");
    }

    // The same stream follows the rest of the agent's life, then ends with it.
    app.api(Method::POST, &format!("/api/agents/{agent}/destroy"), Some(&token), None).await?;
    let mut rest = Vec::new();
    while let Some(e) = live.next_change(EVENT).await? {
        rest.push(format!(
            "{}:{}",
            e.event,
            e.data["to"].as_str().or(e.data["status"].as_str()).unwrap_or("")
        ));
    }
    assert_eq!(rest, ["state:destroying", "state:destroyed", "end:destroyed"]);

    // Refusals are the API's: another user's agent is 404, a foreign event id 400.
    let other = app.token(&app.id("other"), None);
    let refused = app.agent_events(&agent, &other, None).await?.err().expect("refused");
    assert_eq!((refused.0, refused.1["code"].as_str()), (404, Some("AGENT_NOT_FOUND")));
    let refused = app.agent_events(&agent, &token, Some("not-an-id")).await?.err().expect("refused");
    assert_eq!((refused.0, refused.1["code"].as_str()), (400, Some("INVALID_EVENT_ID")));
    Ok(())
}

#[tokio::test]
async fn a_user_holds_a_bounded_number_of_event_streams_and_a_closed_one_frees_its_place()
-> anyhow::Result<()> {
    const EVENT: Duration = Duration::from_secs(30);
    const CAP: usize = 16; // `SLIPWAY_EVENTS_MAX_STREAMS`' default
    let app = TestApp::spawn().await?;
    let (user, other) = (app.id("user"), app.id("other"));
    let (token, other_token) = (app.token(&user, None), app.token(&other, None));
    let agent = create_agent(&app, &token).await?;
    let mut open = Vec::new();
    for _ in 0..CAP {
        // A 200 is an admitted stream (the place is taken before the answer).
        open.push(app.agent_events(&agent, &token, None).await?.expect("under the cap"));
    }
    let refused = app.agent_events(&agent, &token, None).await?.err().expect("one over the cap");
    assert_eq!((refused.0, refused.1["code"].as_str()), (429, Some("TOO_MANY_STREAMS")), "{}", refused.1);
    // Counted per user: someone else's streams are not refused for this one's.
    let theirs = create_agent(&app, &other_token).await?;
    let _theirs = app.agent_events(&theirs, &other_token, None).await?.expect("another user");
    // The streams held still work.
    assert_eq!(open[0].next(EVENT).await?.expect("open").event, "heartbeat");

    // A client that goes away gives its place back (once the starter sees the connection gone).
    drop(open.pop());
    let _again = wait_for("a place after closing a stream", EVENT, || async {
        Ok(app.agent_events(&agent, &token, None).await?.ok())
    })
    .await?;
    let refused = app.agent_events(&agent, &token, None).await?.err().expect("at the cap again");
    assert_eq!(refused.1["code"].as_str(), Some("TOO_MANY_STREAMS"));
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
