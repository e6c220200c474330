//! What the starter answers to bad, unknown and undeliverable input, and that nothing starts.

use serde_json::{Value, json};
use slipway_proto::{
    control::{GetAgentRequest, agent_control_client::AgentControlClient},
    model::AgentStatus,
};
use slipway_tests::{Options, STRIPE_SECRET, TestApp, now};
use std::time::Duration;

async fn error_code(resp: reqwest::Response) -> (u16, String) {
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    (status, body["code"].as_str().unwrap_or_default().to_owned())
}

#[tokio::test]
async fn bad_input_is_refused_with_a_code_and_starts_nothing() -> anyhow::Result<()> {
    let app = TestApp::spawn().await?;
    let (user, agent) = (app.id("user"), app.id("agent"));
    let (event, _) = app.checkout_event(&user, &agent, "fsn1");
    let sign = |body: &str, t: i64| slipway_sandbox::stripe::signature_header(body, STRIPE_SECRET, t);

    // Wrong secret.
    let forged = slipway_sandbox::stripe::signature_header(&event, "whsec_attacker", now());
    assert_eq!(
        error_code(app.post_stripe_signed(&event, &forged).await?).await,
        (400, "INVALID_SIGNATURE".into())
    );
    // Valid signature over another body.
    let tampered = event.replace("fsn1", "hel1");
    assert_eq!(
        error_code(app.post_stripe_signed(&tampered, &sign(&event, now())).await?).await,
        (400, "INVALID_SIGNATURE".into())
    );
    // Replayed ten minutes later.
    assert_eq!(
        error_code(app.post_stripe_signed(&event, &sign(&event, now() - 600)).await?).await,
        (400, "STALE_TIMESTAMP".into())
    );
    // No signature at all.
    let unsigned =
        app.http.post(format!("{}/webhooks/stripe", app.starter_url)).body(event.clone()).send().await?;
    assert_eq!(error_code(unsigned).await, (400, "MISSING_SIGNATURE".into()));
    // Signed, but not JSON.
    let garbage = "{not json";
    assert_eq!(error_code(app.post_stripe(garbage).await?).await, (400, "MALFORMED_PAYLOAD".into()));
    // Over 1 MiB.
    let huge = format!("{{\"pad\":\"{}\"}}", "x".repeat(1024 * 1024 + 10));
    assert_eq!(error_code(app.post_stripe(&huge).await?).await, (413, "PAYLOAD_TOO_LARGE".into()));
    // Signed checkout with unusable metadata.
    let (bad_region, _) = app.checkout_event(&user, &agent, "mars1");
    assert_eq!(
        error_code(app.post_stripe(&bad_region).await?).await,
        (422, "INVALID_CHECKOUT_METADATA".into())
    );

    // Nothing started, nothing created.
    assert!(app.agent(&agent).await?.is_none(), "no agent workflow");
    let state = app.sandbox_state().await?;
    assert_eq!(state["hetzner"]["servers"].as_array().map_or(0, Vec::len), 0);
    Ok(())
}

#[tokio::test]
async fn unknown_event_types_are_acknowledged() -> anyhow::Result<()> {
    let app = TestApp::spawn().await?;
    let body = json!({"id": "evt_unknown_1", "object": "event", "type": "charge.refunded", "created": now(),
                      "livemode": false, "pending_webhooks": 1, "api_version": null, "request": null,
                      "data": {"object": {"id": "ch_1", "object": "charge"}}})
    .to_string();
    let resp = app.post_stripe(&body).await?;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.json::<Value>().await?["handled"], false);
    Ok(())
}

#[tokio::test]
async fn temporal_down_answers_503_so_stripe_retries() -> anyhow::Result<()> {
    let dead = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.to_string(); // closed on drop
    let app =
        TestApp::spawn_with(Options { starter_temporal_address: Some(dead), ..Options::default() }).await?;
    let (event, _) = app.checkout_event(&app.id("user"), &app.id("agent"), "fsn1");
    let resp = app.post_stripe(&event).await?;
    assert_eq!(
        resp.headers().get("retry-after").map(|v| v.to_str().unwrap_or_default().to_owned()),
        Some("5".into())
    );
    assert_eq!(error_code(resp).await, (503, "TEMPORAL_UNAVAILABLE".into()));
    // The API answers the same way, with the same hint to retry.
    let api = app
        .http
        .get(format!("{}/api/agents", app.starter_url))
        .bearer_auth(app.token(&app.id("user"), None))
        .send()
        .await?;
    assert_eq!(api.headers().get("retry-after").and_then(|v| v.to_str().ok()), Some("5"));
    assert_eq!(api.status(), 503);
    let body: Value = api.json().await?;
    assert_eq!(body["code"], "TEMPORAL_UNAVAILABLE");
    // Temporal's own error text (addresses, gRPC details) stays in the log.
    assert_eq!(body["message"], slipway_starter::error::UNAVAILABLE_MESSAGE, "{body}");
    let ready = app.http.get(format!("{}/readyz", app.starter_url)).send().await?;
    assert_eq!(ready.status(), 503);
    let health = app.http.get(format!("{}/healthz", app.starter_url)).send().await?;
    assert_eq!(health.status(), 200);
    Ok(())
}

#[tokio::test]
async fn grpc_get_agent_shows_progress_to_its_owner_only() -> anyhow::Result<()> {
    let app = TestApp::spawn().await?;
    let (user, agent) = (app.id("user"), app.id("agent"));
    let (event, _) = app.checkout_event(&user, &agent, "fsn1");
    assert_eq!(app.post_stripe(&event).await?.status(), 200);
    app.wait_for_status(&agent, &[AgentStatus::Active], Duration::from_secs(60)).await?;

    let mut grpc = AgentControlClient::connect(format!("http://{}", app.grpc_addr)).await?;
    let request = |token: Option<String>| {
        let mut r = tonic::Request::new(GetAgentRequest { agent_id: agent.clone() });
        if let Some(t) = token {
            r.metadata_mut().insert("authorization", format!("Bearer {t}").parse().unwrap());
        }
        r
    };
    let got = grpc.get_agent(request(Some(app.token(&user, None)))).await?.into_inner();
    assert_eq!(got.status, "active");
    assert_eq!(got.workflow_id, format!("agent-{agent}"));
    assert_eq!(got.steps.len(), 6);
    assert!(got.steps.iter().all(|s| s.state == "done"), "{:?}", got.steps);

    let other = grpc.get_agent(request(Some(app.token("someone-else", None)))).await.unwrap_err();
    assert_eq!(other.code(), tonic::Code::NotFound);
    let anonymous = grpc.get_agent(request(None)).await.unwrap_err();
    assert_eq!(anonymous.code(), tonic::Code::Unauthenticated);
    let admin = grpc.get_agent(request(Some(app.token("ops", Some("admin"))))).await?;
    assert_eq!(admin.into_inner().agent_id, agent);
    Ok(())
}

#[tokio::test]
async fn the_door_rate_limits_users_and_failed_authentication_but_never_signed_webhooks() -> anyhow::Result<()>
{
    let app = TestApp::spawn_with(Options { rate_limits: (5, 3), ..Options::default() }).await?;
    let agents = format!("{}/api/agents", app.starter_url);

    // Failed authentication, per client IP: three answered as such, then 429 with Retry-After.
    for _ in 0..3 {
        let r = app.http.get(&agents).bearer_auth("not-a-token").send().await?;
        assert_eq!(r.status(), 401);
    }
    let r = app.http.get(&agents).bearer_auth("not-a-token").send().await?;
    let wait: u64 = r.headers().get("retry-after").and_then(|v| v.to_str().ok()?.parse().ok()).unwrap_or(0);
    assert!((1..=60).contains(&wait), "Retry-After {wait}");
    assert_eq!(error_code(r).await, (429, "RATE_LIMITED".into()));
    let (event, _) = app.checkout_event(&app.id("user"), &app.id("agent"), "fsn1");
    let bad = app.post_stripe_signed(&event, "t=1,v1=00").await?;
    assert_eq!(error_code(bad).await, (429, "RATE_LIMITED".into()), "bad signatures count too");

    // Validly signed webhooks from the same address are never refused: a provider's burst passes.
    let events: Vec<String> = (0..40)
        .map(|i| {
            let customer = app.id(&format!("cus_burst{i}"));
            let invoice = slipway_sandbox::stripe::invoice_object(
                &format!("in_{i}"),
                &customer,
                "sub_burst",
                "paid",
                now(),
            );
            slipway_sandbox::stripe::event("invoice.paid", invoice, now(), None).to_string()
        })
        .collect();
    for resp in futures::future::join_all(events.iter().map(|e| app.post_stripe(e))).await {
        assert_eq!(resp?.status(), 200, "a signed webhook was refused");
    }

    // A valid token is not refused by the failure budget; its own budget is per user.
    let alice = app.token(&app.id("alice"), None);
    for _ in 0..5 {
        assert_eq!(app.http.get(&agents).bearer_auth(&alice).send().await?.status(), 200);
    }
    let r = app.http.get(&agents).bearer_auth(&alice).send().await?;
    assert_eq!(error_code(r).await, (429, "RATE_LIMITED".into()));
    let bob = app.token(&app.id("bob"), None);
    assert_eq!(
        app.http.get(&agents).bearer_auth(&bob).send().await?.status(),
        200,
        "another user is unaffected"
    );
    Ok(())
}
