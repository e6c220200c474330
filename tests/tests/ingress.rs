//! What the starter answers to bad, unknown and undeliverable input, and that nothing starts.

use serde_json::{Value, json};
use slipway_proto::{
    control::{self, GetAgentRequest, agent_control_client::AgentControlClient},
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

/// One refusal asked of both surfaces: what, the REST call (method, path, body, token), and
/// what gRPC answered.
struct Case(&'static str, reqwest::Method, String, Option<Value>, Option<String>, Result<(), tonic::Status>);

/// A gRPC answer, its message dropped.
fn refusal<T>(r: Result<tonic::Response<T>, tonic::Status>) -> Result<(), tonic::Status> {
    r.map(|_| ())
}

/// Each REST operation under `/api/` and its gRPC method (`slipway.v1.AgentControl`).
const REST_TO_GRPC: [(&str, &str); 16] = [
    ("listAgents", "ListAgents"),
    ("createAgent", "CreateAgent"),
    ("getAgent", "GetAgent"),
    ("streamAgentEvents", "WatchAgentEvents"),
    ("provisionAgent", "ProvisionAgent"),
    ("stopAgent", "StopAgent"),
    ("startAgent", "StartAgent"),
    ("destroyAgent", "DestroyAgent"),
    ("createCheckoutSession", "CreateCheckoutSession"),
    ("adminListAgents", "AdminListAgents"),
    ("linkGitHubAccount", "LinkGitHubAccount"),
    ("listGitHubLinks", "ListGitHubLinks"),
    ("getJobStatus", "GetJobStatus"),
    ("billJobAgain", "BillJobAgain"),
    ("startClientStack", "ProvisionClientStack"),
    ("getClientStack", "GetClientStack"),
];

/// The gRPC control API stays in step with the REST API: the same operations (every REST
/// operation of the OpenAPI document has its method, every method its operation), and, over
/// the same refusals on both surfaces, the same stable code with the matching status.
#[tokio::test]
async fn grpc_and_rest_offer_the_same_operations_with_the_same_codes() -> anyhow::Result<()> {
    let doc = slipway_starter::openapi::document();
    let mut rest: Vec<String> = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for op in item.as_object().unwrap().values() {
            let id = op["operationId"].as_str().unwrap();
            if path.starts_with("/api/") && id != "getOpenApiDocument" {
                rest.push(id.to_owned());
            }
        }
    }
    rest.sort();
    let mut mapped: Vec<String> = REST_TO_GRPC.iter().map(|(r, _)| (*r).to_owned()).collect();
    mapped.sort();
    assert_eq!(rest, mapped, "every REST operation has a gRPC method");
    let proto =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../proto/slipway/v1/control.proto"))?;
    let mut rpcs: Vec<&str> = proto
        .lines()
        .filter_map(|l| l.trim().strip_prefix("rpc "))
        .filter_map(|l| l.split('(').next())
        .collect();
    rpcs.sort_unstable();
    let mut methods: Vec<&str> = REST_TO_GRPC.iter().map(|(_, g)| *g).collect();
    methods.sort_unstable();
    assert_eq!(rpcs, methods, "every gRPC method has a REST operation");

    let app = TestApp::spawn().await?;
    let (user, other) = (app.id("user"), app.id("other"));
    let (token, other_token, admin) =
        (app.token(&user, None), app.token(&other, None), app.token("ops", Some("admin")));
    let (_, created) = app
        .api(reqwest::Method::POST, "/api/agents", Some(&token), Some(json!({"name": "n", "region": "fsn1"})))
        .await?;
    let agent = created["agent_id"].as_str().unwrap().to_owned();
    let mut grpc = AgentControlClient::connect(format!("http://{}", app.grpc_addr)).await?;
    fn with<T>(message: T, token: Option<&str>) -> tonic::Request<T> {
        let mut r = tonic::Request::new(message);
        if let Some(t) = token {
            r.metadata_mut().insert("authorization", format!("Bearer {t}").parse().unwrap());
        }
        r
    }
    let cmd =
        |id: &str| control::AgentCommandRequest { agent_id: id.to_owned(), idempotency_key: String::new() };
    let job = control::JobRef { owner: "acme".into(), repo: "nothing".into(), issue: 7 };
    let get = |id: &str| GetAgentRequest { agent_id: id.to_owned() };

    // (operation, REST method and path, body, token) and the same refusal over gRPC.
    let mut cases: Vec<Case> = Vec::new();
    cases.push(Case(
        "getAgent (another user's)",
        reqwest::Method::GET,
        format!("/api/agents/{agent}"),
        None,
        Some(other_token.clone()),
        refusal(grpc.get_agent(with(get(&agent), Some(&other_token))).await),
    ));
    cases.push(Case(
        "getAgent (no token)",
        reqwest::Method::GET,
        format!("/api/agents/{agent}"),
        None,
        None,
        refusal(grpc.get_agent(with(get(&agent), None)).await),
    ));
    cases.push(Case(
        "getAgent (bad token)",
        reqwest::Method::GET,
        format!("/api/agents/{agent}"),
        None,
        Some("not-a-jwt".into()),
        refusal(grpc.get_agent(with(get(&agent), Some("not-a-jwt"))).await),
    ));
    cases.push(Case(
        "createAgent (invalid)",
        reqwest::Method::POST,
        "/api/agents".into(),
        Some(json!({"name": "", "region": "mars1"})),
        Some(token.clone()),
        refusal(
            grpc.create_agent(with(
                control::CreateAgentRequest { name: String::new(), region: "mars1".into() },
                Some(&token),
            ))
            .await,
        ),
    ));
    cases.push(Case(
        "provisionAgent (no subscription)",
        reqwest::Method::POST,
        format!("/api/agents/{agent}/provision"),
        None,
        Some(token.clone()),
        refusal(grpc.provision_agent(with(cmd(&agent), Some(&token))).await),
    ));
    cases.push(Case(
        "stopAgent (a draft)",
        reqwest::Method::POST,
        format!("/api/agents/{agent}/stop"),
        None,
        Some(token.clone()),
        refusal(grpc.stop_agent(with(cmd(&agent), Some(&token))).await),
    ));
    cases.push(Case(
        "startAgent (a draft)",
        reqwest::Method::POST,
        format!("/api/agents/{agent}/start"),
        None,
        Some(token.clone()),
        refusal(grpc.start_agent(with(cmd(&agent), Some(&token))).await),
    ));
    cases.push(Case(
        "destroyAgent (another user's)",
        reqwest::Method::POST,
        format!("/api/agents/{agent}/destroy"),
        None,
        Some(other_token.clone()),
        refusal(grpc.destroy_agent(with(cmd(&agent), Some(&other_token))).await),
    ));
    cases.push(Case(
        "createCheckoutSession (another user's agent)",
        reqwest::Method::POST,
        "/api/billing/checkout".into(),
        Some(json!({"agentId": agent})),
        Some(other_token.clone()),
        refusal(
            grpc.create_checkout_session(with(
                control::CreateCheckoutSessionRequest { agent_id: agent.clone(), ..Default::default() },
                Some(&other_token),
            ))
            .await,
        ),
    ));
    cases.push(Case(
        "adminListAgents (not an admin)",
        reqwest::Method::GET,
        "/api/admin/agents".into(),
        None,
        Some(token.clone()),
        refusal(grpc.admin_list_agents(with(control::ListAgentsRequest {}, Some(&token))).await),
    ));
    cases.push(Case(
        "linkGitHubAccount (not an admin)",
        reqwest::Method::POST,
        "/api/admin/github-links".into(),
        Some(json!({"account": "a", "userId": "u", "customerId": "cus_1"})),
        Some(token.clone()),
        refusal(
            grpc.link_git_hub_account(with(
                control::GitHubLink { account: "a".into(), user_id: "u".into(), customer_id: "cus_1".into() },
                Some(&token),
            ))
            .await,
        ),
    ));
    cases.push(Case(
        "listGitHubLinks (not an admin)",
        reqwest::Method::GET,
        "/api/admin/github-links".into(),
        None,
        Some(token.clone()),
        refusal(grpc.list_git_hub_links(with(control::ListGitHubLinksRequest {}, Some(&token))).await),
    ));
    cases.push(Case(
        "getJobStatus (no such job)",
        reqwest::Method::GET,
        "/api/jobs/acme/nothing/7".into(),
        None,
        Some(admin.clone()),
        refusal(grpc.get_job_status(with(job.clone(), Some(&admin))).await),
    ));
    cases.push(Case(
        "billJobAgain (no such job)",
        reqwest::Method::POST,
        "/api/admin/jobs/acme/nothing/7/bill".into(),
        None,
        Some(admin.clone()),
        refusal(
            grpc.bill_job_again(with(
                control::BillJobAgainRequest { job: Some(job.clone()), idempotency_key: String::new() },
                Some(&admin),
            ))
            .await,
        ),
    ));
    cases.push(Case(
        "startClientStack (invalid)",
        reqwest::Method::POST,
        "/api/provisioning".into(),
        Some(json!({"clientId": "Bad Id", "clientName": "", "orgEmail": "x", "tier": "gold"})),
        Some(admin.clone()),
        refusal(
            grpc.provision_client_stack(with(
                control::ProvisionClientStackRequest {
                    client_id: "Bad Id".into(),
                    client_name: String::new(),
                    org_email: "x".into(),
                    tier: "gold".into(),
                },
                Some(&admin),
            ))
            .await,
        ),
    ));
    cases.push(Case(
        "getClientStack (no such client)",
        reqwest::Method::GET,
        "/api/provisioning/nobody".into(),
        None,
        Some(admin.clone()),
        refusal(
            grpc.get_client_stack(with(
                control::GetClientStackRequest { client_id: "nobody".into() },
                Some(&admin),
            ))
            .await,
        ),
    ));
    let watch = grpc
        .watch_agent_events(with(
            control::WatchAgentEventsRequest { agent_id: agent.clone(), last_event_id: "not-an-id".into() },
            Some(&token),
        ))
        .await;
    let watch_code =
        watch.err().map(|s| (s.code(), s.message().split(':').next().unwrap_or_default().to_owned()));
    let events = app.agent_events(&agent, &token, Some("not-an-id")).await?.err().expect("refused");
    assert_eq!(
        watch_code,
        Some((tonic::Code::InvalidArgument, events.1["code"].as_str().unwrap().to_owned()))
    );
    // A user's streams are counted across both surfaces: at the cap (16) over REST, gRPC
    // refuses the next one with the same code.
    let mut held = Vec::new();
    for _ in 0..16 {
        held.push(app.agent_events(&agent, &token, None).await?.expect("under the cap"));
    }
    let watch = grpc
        .watch_agent_events(with(
            control::WatchAgentEventsRequest { agent_id: agent.clone(), last_event_id: String::new() },
            Some(&token),
        ))
        .await;
    let watch_code =
        watch.err().map(|s| (s.code(), s.message().split(':').next().unwrap_or_default().to_owned()));
    let events = app.agent_events(&agent, &token, None).await?.err().expect("over the cap");
    assert_eq!((events.0, events.1["code"].as_str()), (429, Some("TOO_MANY_STREAMS")));
    assert_eq!(watch_code, Some((tonic::Code::ResourceExhausted, "TOO_MANY_STREAMS".to_owned())));
    drop(held);

    for Case(what, method, path, body, bearer, over_grpc) in cases {
        let (status, answer) = app.api(method, &path, bearer.as_deref(), body).await?;
        let code =
            answer["code"].as_str().unwrap_or_else(|| panic!("{what}: REST answered {status} {answer}"));
        let refused = over_grpc.expect_err(what);
        let grpc_code = refused.message().split(':').next().unwrap_or_default();
        assert_eq!(grpc_code, code, "{what}: gRPC said {:?}", refused.message());
        let expected = match status {
            400 | 422 => tonic::Code::InvalidArgument,
            401 => tonic::Code::Unauthenticated,
            402 | 409 => tonic::Code::FailedPrecondition,
            403 => tonic::Code::PermissionDenied,
            404 => tonic::Code::NotFound,
            429 => tonic::Code::ResourceExhausted,
            _ => tonic::Code::Unavailable,
        };
        assert_eq!(refused.code(), expected, "{what}: REST {status}, gRPC {:?}", refused.code());
    }

    // And the same answers when it works: the caller's agents.
    let listed = grpc.list_agents(with(control::ListAgentsRequest {}, Some(&token))).await?.into_inner();
    let (_, rest_list) = app.api(reqwest::Method::GET, "/api/agents", Some(&token), None).await?;
    let ids: Vec<&str> = listed.agents.iter().map(|a| a.agent_id.as_str()).collect();
    let rest_ids: Vec<&str> =
        rest_list["agents"].as_array().unwrap().iter().map(|a| a["agent_id"].as_str().unwrap()).collect();
    assert_eq!(ids, rest_ids);
    Ok(())
}
