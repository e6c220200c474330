//! The providers' own contracts are the judge: a run of every flow Slipway has (paid checkout →
//! provisioning, stop / start / destroy, a customer's subscriptions re-read from Stripe on an
//! operator's `sync`, a destroyed draft's checkout expired, a client stack, a coding job billed
//! to Stripe meters), with the sandbox recording every exchange, then each request Slipway sent
//! and each answer the sandbox gave checked against the pinned description of that provider
//! (`contracts/<provider>/openapi.json`; see `tests/src/conformance.rs`).
//!
//! The operations exercised must all be listed in the coverage table of `docs/testing.md`, so a
//! new call cannot slip in unchecked.

use std::{collections::BTreeMap, time::Duration};

use reqwest::Method;
use serde_json::{Value, json};
use slipway_proto::{billing::customer_workflow_id, model::AgentStatus};
use slipway_sandbox::github_events;
use slipway_tests::{
    Options, TestApp,
    conformance::{Contract, Violation, check_all, operations_called},
};
use slipway_workflows::SubscriptionWorkflow;

/// Every provider Slipway calls (`contracts/README.md` names each description's source).
const PINNED: [&str; 8] = ["github", "hetzner", "n8n", "openai", "stripe", "supabase", "tailscale", "vercel"];

fn contracts() -> anyhow::Result<BTreeMap<String, Contract>> {
    PINNED.iter().map(|p| Ok(((*p).to_owned(), Contract::load(p)?))).collect()
}

/// `(provider, operation)` rows of the coverage table in `docs/testing.md`.
fn coverage_table() -> anyhow::Result<Vec<(String, String)>> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/testing.md");
    let text = std::fs::read_to_string(path)?;
    Ok(text
        .lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let op = cells.get(2)?.strip_prefix('`')?.strip_suffix('`')?;
            Some((cells.get(1)?.to_string(), op.to_owned()))
        })
        .collect())
}

async fn settle<F: Fn(&Value) -> bool>(
    app: &TestApp,
    path: &str,
    token: &str,
    done: F,
) -> anyhow::Result<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let (status, body) = app.api(Method::GET, path, Some(token), None).await?;
        if status == 200 && done(&body) {
            return Ok(body);
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "{path} did not settle: {status} {body}");
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

/// Every flow once, against one recording sandbox.
async fn run_every_flow(app: &TestApp) -> anyhow::Result<()> {
    // A paid checkout provisions an agent (Stripe Checkout, Hetzner, Tailscale, Actions).
    let user = app.id("user");
    let agent = app.id("agent");
    let paid = app.subscribe(&user, Some((&agent, "fsn1"))).await?;
    app.wait_for_status(&agent, &[AgentStatus::Active], Duration::from_secs(90)).await?;
    // Stop, start, destroy (Hetzner actions, Tailscale device and key removal). The server's
    // operating system ignores the ACPI shutdown, so the stop ends with a power-off.
    app.sandbox_post(
        "/_sandbox/hetzner/acpi",
        json!({"server": slipway_proto::model::server_name(&agent), "ignored": true}),
    )
    .await?;
    let token = app.token(&user, None);
    for (op, target) in [("stop", "stopped"), ("start", "active"), ("destroy", "destroyed")] {
        let (status, body) =
            app.api(Method::POST, &format!("/api/agents/{agent}/{op}"), Some(&token), None).await?;
        anyhow::ensure!((200..300).contains(&status), "{op}: {status} {body}");
        if target != "destroyed" {
            settle(app, &format!("/api/agents/{agent}"), &token, |b| b["status"] == target).await?;
        }
    }
    // Two updates of one subscription created in the same second: the customer's workflow asks
    // Stripe which is current (the subscription lookup).
    let (customer, sub) = (
        paid["customer_id"].as_str().unwrap_or_default(),
        paid["subscription_id"].as_str().unwrap_or_default(),
    );
    let created = slipway_tests::now() + 5;
    for status in ["active", "past_due"] {
        let object = slipway_sandbox::stripe::subscription_object(sub, customer, status, created);
        let event = slipway_sandbox::stripe::event("customer.subscription.updated", object, created, None);
        anyhow::ensure!(
            app.post_stripe(&event.to_string()).await?.status() == 200,
            "{status} update refused"
        );
    }
    let lookup = format!("/stripe/v1/subscriptions/{sub}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !app.sandbox_requests().await?.iter().any(|r| r["method"] == "GET" && r["path"] == json!(lookup)) {
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "the tie never made the workflow ask Stripe");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // An operator's `sync`: the customer's workflow re-reads all its subscriptions from Stripe
    // (the subscriptions list, `status=all`).
    app.client
        .get_workflow_handle::<SubscriptionWorkflow>(customer_workflow_id(customer))
        .signal(SubscriptionWorkflow::sync, (), temporalio_client::WorkflowSignalOptions::default())
        .await?;
    let listed = |e: &Value| {
        e["request"]["method"] == "GET"
            && e["request"]["path"] == "/stripe/v1/subscriptions"
            && e["request"]["query"].as_str().is_some_and(|q| q.contains(&format!("customer={customer}")))
            && e["response"]["status"] == 200
    };
    slipway_tests::wait_until(
        "`sync` listing the customer's subscriptions",
        Duration::from_secs(30),
        || async { Ok(app.sandbox_exchanges().await?.iter().any(listed)) },
    )
    .await?;
    // A draft with an open checkout is destroyed: its checkout is expired, so it can no longer
    // be paid (the Checkout Session expiry).
    let buyer = app.id("user");
    let buyer_token = app.token(&buyer, None);
    let (status, created) = app
        .api(
            Method::POST,
            "/api/agents",
            Some(&buyer_token),
            Some(json!({"name": "draft", "region": "fsn1"})),
        )
        .await?;
    anyhow::ensure!(status == 201, "create draft: {status} {created}");
    let draft = created["agent_id"].as_str().unwrap_or_default().to_owned();
    let body = json!({"agentId": draft, "region": "fsn1"});
    let (status, checkout) =
        app.api(Method::POST, "/api/billing/checkout", Some(&buyer_token), Some(body)).await?;
    anyhow::ensure!(status == 201, "checkout: {status} {checkout}");
    let session = checkout["id"].as_str().unwrap_or_default().to_owned();
    let (status, body) =
        app.api(Method::POST, &format!("/api/agents/{draft}/destroy"), Some(&buyer_token), None).await?;
    anyhow::ensure!((200..300).contains(&status), "destroy draft: {status} {body}");
    slipway_tests::wait_until(
        "destroying the draft expiring its checkout",
        Duration::from_secs(30),
        || async {
            let state = app.sandbox_state().await?;
            Ok(state["stripe"]["checkout_sessions"].as_array().is_some_and(|all| {
                all.iter().any(|s| s["id"] == session.as_str() && s["status"] == "expired")
            }))
        },
    )
    .await?;
    // A client stack (Supabase, GitHub from a template, Vercel, n8n).
    let admin = app.token("ops", Some("admin"));
    let client = app.id("client");
    let req =
        json!({"clientId": client, "clientName": "Acme", "orgEmail": "ops@acme.example", "tier": "starter"});
    let (status, body) = app.api(Method::POST, "/api/provisioning", Some(&admin), Some(req)).await?;
    anyhow::ensure!(status == 202, "{body}");
    settle(app, &format!("/api/provisioning/{client}"), &admin, |b| b["state"] == "ready").await?;
    // A client stack that fails at its last step and rolls back (every compensation's delete).
    app.fault(json!({"method": "POST", "path": "/n8n/api/v1/workflows/*/activate", "status": 400})).await?;
    let failing = format!("{client}-b");
    let req = json!({"clientId": failing, "clientName": "Acme B", "orgEmail": "ops@acme.example", "tier": "starter"});
    let (status, body) = app.api(Method::POST, "/api/provisioning", Some(&admin), Some(req)).await?;
    anyhow::ensure!(status == 202, "{body}");
    settle(app, &format!("/api/provisioning/{failing}"), &admin, |b| b["state"] == "rolled_back").await?;
    app.http.delete(format!("{}/_sandbox/faults", app.sandbox.base_url)).send().await?.error_for_status()?;
    // A coding job (GitHub App, the model, Stripe meter events). Its first attempt fails at the
    // pull request after pushing its branch; a writer's `/slipway retry` (the permission lookup)
    // runs it again onto the existing branch (moving the ref).
    let s = app.github_account(true).await?;
    app.fault(json!({"method": "POST", "path": "/github/repos/*/*/pulls", "status": 422, "count": 1}))
        .await?;
    let issue = github_events::issues(
        "opened",
        &s.repo,
        s.installation,
        1,
        "Add it",
        "Please.",
        &["slipway"],
        "maintainer",
    );
    app.sandbox_post(
        "/_sandbox/github/webhooks",
        json!({"event": "issues", "payload": issue, "delivery_id": "c-1"}),
    )
    .await?;
    let (owner, repo) = s.repo.split_once('/').unwrap_or_default();
    let job = format!("/api/jobs/{owner}/{repo}/1");
    settle(app, &job, &admin, |b| b["state"] == "failed").await?;
    let retry =
        github_events::issue_comment_created(&s.repo, s.installation, 1, "/slipway retry", "maintainer");
    app.sandbox_post(
        "/_sandbox/github/webhooks",
        json!({"event": "issue_comment", "payload": retry, "delivery_id": "c-2"}),
    )
    .await?;
    settle(app, &job, &admin, |b| {
        b["state"] == "pr_opened" && b["attempt"] == 2 && b["billed"].as_array().is_some_and(|a| a.len() >= 2)
    })
    .await?;
    // The reconcilers: a delivery the starter answered 503 (its Temporal unreachable) is asked
    // for again (the App's deliveries, a redelivery); the Stripe catch-up lists Stripe's
    // undelivered events. The App owner moving its webhook URL is the test's own call.
    app.reconciler_schedules(false).await?;
    let offline = app.offline_starter().await?;
    app.set_hook_url(&format!("{offline}/webhooks/github")).await?;
    let cancel =
        github_events::issue_comment_created(&s.repo, s.installation, 1, "/slipway cancel", "maintainer");
    let sent = app
        .sandbox_post("/_sandbox/github/webhooks", json!({"event": "issue_comment", "payload": cancel}))
        .await?;
    anyhow::ensure!(sent["status"] == 503, "{sent}");
    app.set_hook_url(&format!("{}/webhooks/github", app.starter_url)).await?;
    let (_, report) = app.reconcile("github", true).await?;
    anyhow::ensure!(report["redelivered"].as_array().is_some_and(|r| r.len() == 1), "{report:#}");
    app.reconcile("stripe", true).await?;
    // The orphan sweep lists every provider's resources with Slipway's names, twice (an orphan
    // must be seen twice), with a hand-made server to report and delete: made under the names
    // of the agent destroyed above, an owner known to be gone, and this deployment's label (one
    // Temporal does not know is never swept, nor a key no record names).
    app.wait_for_status(&agent, &[AgentStatus::Destroyed], Duration::from_secs(90)).await?;
    app.ghost_resources(&agent).await?;
    app.reconciler_schedules(true).await?;
    app.reconcile("orphans", true).await?;
    let (_, swept) = app.reconcile("orphans", true).await?;
    anyhow::ensure!(swept["deleted"].as_array().is_some_and(|d| d.len() == 1), "{swept:#}");
    Ok(())
}

#[tokio::test]
async fn what_slipway_sends_and_what_the_sandbox_answers_follow_the_providers_contracts() -> anyhow::Result<()>
{
    let app = TestApp::spawn_with(Options { record_exchanges: true, ..Options::default() }).await?;
    run_every_flow(&app).await?;
    let exchanges = app.sandbox_exchanges().await?;
    let contracts = contracts()?;
    let called = operations_called(&contracts, &exchanges);
    let violations: Vec<Violation> = check_all(&contracts, &exchanges)
        .into_iter()
        .filter(|v| PINNED.contains(&v.provider.as_str()))
        .collect();
    let table = coverage_table()?;
    let missing: Vec<String> = called
        .iter()
        .flat_map(|(p, ops)| ops.iter().map(move |op| (p.clone(), op.clone())))
        .filter(|row| !table.contains(row))
        .map(|(p, op)| format!("{p} {op}"))
        .collect();
    assert!(missing.is_empty(), "called but not in the coverage table of docs/testing.md: {missing:#?}");
    let unexercised: Vec<String> = table
        .iter()
        .filter(|(p, op)| !called.get(p).is_some_and(|ops| ops.contains(op)))
        .map(|(p, op)| format!("{p} {op}"))
        .collect();
    assert!(unexercised.is_empty(), "in the coverage table but never called by the flows: {unexercised:#?}");
    let report: Vec<String> = violations.iter().map(ToString::to_string).collect();
    println!("operations called: {called:#?}");
    println!("{} violation(s):\n{}", report.len(), report.join("\n"));
    assert!(report.is_empty(), "{} violation(s):\n{}", report.len(), report.join("\n"));

    // The judge is not blind: one broken field in an answer, and one in a request, are caught.
    let find = |method: &str, suffix: &str| {
        exchanges
            .iter()
            .find(|e| {
                e["request"]["method"] == method
                    && e["request"]["path"].as_str().is_some_and(|p| p.ends_with(suffix))
            })
            .cloned()
    };
    let mut answer = find("GET", "/github/repos/slipway/agents")
        .or_else(|| find("POST", "/generate"))
        .expect("a repository answer");
    answer["response"]["body"]["full_name"] = json!(42);
    let caught = check_all(&contracts, &[answer]);
    assert!(caught.iter().any(|v| v.side == "response" && v.message.contains("full_name")), "{caught:?}");
    let mut request = find("POST", "/dispatches").expect("a workflow dispatch");
    request["request"]["body"].as_object_mut().expect("a JSON body").remove("ref");
    let caught = check_all(&contracts, &[request]);
    assert!(caught.iter().any(|v| v.side == "request" && v.message.contains("ref")), "{caught:?}");
    // Nor blind to query values: Supabase's `services` array, sent as one comma-separated value
    // instead of the repeated parameters its description's style form, explode true means.
    let mut health = find("GET", "/health").expect("a Supabase health call");
    assert_eq!(health["request"]["query"], "services=db&services=rest&services=auth");
    health["request"]["query"] = json!("services=db,rest,auth");
    let caught = check_all(&contracts, &[health]);
    assert!(
        caught.len() == 1 && caught[0].message.contains("item `db,rest,auth`") && caught[0].side == "request",
        "{caught:?}"
    );
    Ok(())
}

/// A refused credential fails at once, never retried, and says which variable to fix.
#[tokio::test]
async fn a_refused_provider_credential_fails_once_and_names_the_variable_to_fix() -> anyhow::Result<()> {
    let app = TestApp::spawn_with(Options {
        sandbox_hetzner_token: Some("a-token-the-worker-does-not-have".into()),
        ..Options::default()
    })
    .await?;
    let (user, agent) = (app.id("user"), app.id("agent"));
    let (event, _) = app.checkout_event(&user, &agent, "fsn1");
    assert_eq!(app.post_stripe(&event).await?.status(), 200);
    let record = app.wait_for_status(&agent, &[AgentStatus::Failed], Duration::from_secs(60)).await?;
    let reason = record.failure_reason.unwrap_or_default();
    assert!(reason.contains("answered 401") && reason.contains("check HETZNER_API_TOKEN"), "{reason}");
    let hetzner: Vec<Value> = app
        .sandbox_requests()
        .await?
        .into_iter()
        .filter(|r| {
            r["path"].as_str().is_some_and(|p| p.starts_with("/hetzner/v1/servers")) && r["status"] == 401
        })
        .collect();
    // One refused call for the step, one for its compensation (which looks the server up to delete
    // it): neither retried.
    assert_eq!(hetzner.len(), 2, "one refused call each, no retry: {hetzner:#?}");
    assert!(reason.contains("hetzner_server compensation failed"), "the rollback says so too: {reason}");
    Ok(())
}
