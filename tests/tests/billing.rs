//! Billing drives agents: payment failure suspends, payment resumes, the grace period running
//! out or the subscription being deleted destroys; Stripe's duplicated, out-of-order deliveries
//! converge to the in-order outcome.

use std::time::Duration;

use futures::future::join_all;
use reqwest::Method;
use serde_json::{Value, json};
use slipway_proto::{billing::BillingState, model::AgentStatus};
use slipway_sandbox::stripe::{event, invoice_object, subscription_object};
use slipway_tests::{Options, TestApp, server_status};

const WAIT: Duration = Duration::from_secs(60);

/// A user who paid for one agent through Checkout; waits until the agent is active.
async fn paying_user_with_agent(app: &TestApp) -> anyhow::Result<(String, String, Value)> {
    let (user, agent) = (app.id("user"), app.id("agent"));
    let paid = app.subscribe(&user, Some((&agent, "fsn1"))).await?;
    let record = app.wait_for_status(&agent, &[AgentStatus::Active, AgentStatus::Failed], WAIT).await?;
    assert_eq!(record.status, AgentStatus::Active, "{record:#?}");
    assert_eq!(record.customer_id.as_deref(), paid["customer_id"].as_str());
    Ok((user, agent, paid))
}

#[tokio::test]
async fn completing_checkout_provisions_the_agent_it_was_for() -> anyhow::Result<()> {
    let app = TestApp::spawn().await?;
    let (_, agent, paid) = paying_user_with_agent(&app).await?;
    assert_eq!(server_status(&app.sandbox_state().await?, &agent).as_deref(), Some("running"));
    let customer = paid["customer_id"].as_str().unwrap();
    let billing = app.billing_state(customer).await?;
    assert!(billing.entitled(), "{billing:#?}");
    assert!(billing.agents.contains(&agent));
    Ok(())
}

#[tokio::test]
async fn payment_failure_suspends_and_payment_resumes() -> anyhow::Result<()> {
    let app = TestApp::spawn().await?;
    let (_, agent, paid) = paying_user_with_agent(&app).await?;
    let sub = paid["subscription_id"].as_str().unwrap();

    let failed =
        app.sandbox_post(&format!("/_sandbox/stripe/subscriptions/{sub}/payment_failed"), json!({})).await?;
    let record = app.wait_for_status(&agent, &[AgentStatus::Suspended], WAIT).await?;
    assert_eq!(
        server_status(&app.sandbox_state().await?, &agent).as_deref(),
        Some("off"),
        "powered off, kept"
    );
    assert!(record.audit.last().unwrap().actor.starts_with("billing:cus_"));
    let token = app.token(&record.user_id, None);
    let (status, body) =
        app.api(Method::POST, &format!("/api/agents/{agent}/start"), Some(&token), None).await?;
    assert_eq!((status, body["code"].as_str()), (409, Some("AGENT_SUSPENDED")), "{body}");

    let invoice = failed["invoice_id"].as_str().expect("invoice id");
    app.sandbox_post(&format!("/_sandbox/stripe/invoices/{invoice}/pay"), json!({})).await?;
    app.wait_for_status(&agent, &[AgentStatus::Active], WAIT).await?;
    assert_eq!(server_status(&app.sandbox_state().await?, &agent).as_deref(), Some("running"));
    Ok(())
}

#[tokio::test]
async fn unpaid_past_the_grace_period_destroys() -> anyhow::Result<()> {
    let app = TestApp::spawn_with(Options { grace_period_secs: 3, ..Options::default() }).await?;
    let (_, agent, paid) = paying_user_with_agent(&app).await?;
    let sub = paid["subscription_id"].as_str().unwrap();

    app.sandbox_post(&format!("/_sandbox/stripe/subscriptions/{sub}/payment_failed"), json!({})).await?;
    app.wait_for_status(&agent, &[AgentStatus::Suspended], WAIT).await?;
    let record = app.wait_for_status(&agent, &[AgentStatus::Destroyed], WAIT).await?;
    assert!(record.audit.last().unwrap().reason.contains("grace period"), "{:?}", record.audit.last());
    let state = app.sandbox_state().await?;
    assert_eq!(server_status(&state, &agent), None);
    assert_eq!(state["tailscale"]["devices"].as_array().map_or(0, Vec::len), 0);
    Ok(())
}

#[tokio::test]
async fn deleted_subscription_destroys_every_agent() -> anyhow::Result<()> {
    let app = TestApp::spawn().await?;
    let (user, first, paid) = paying_user_with_agent(&app).await?;
    // A second agent, provisioned through the API on the same subscription.
    let token = app.token(&user, None);
    let (status, created) = app
        .api(Method::POST, "/api/agents", Some(&token), Some(json!({"name": "second", "region": "hel1"})))
        .await?;
    assert_eq!(status, 201);
    let second = created["agent_id"].as_str().unwrap().to_owned();
    let (status, body) =
        app.api(Method::POST, &format!("/api/agents/{second}/provision"), Some(&token), None).await?;
    assert_eq!(status, 202, "{body}");
    app.wait_for_status(&second, &[AgentStatus::Active], WAIT).await?;

    // The customer cancels (Stripe API), Stripe sends customer.subscription.deleted.
    let sub = paid["subscription_id"].as_str().unwrap();
    let resp = app
        .http
        .delete(format!("{}/stripe/v1/subscriptions/{sub}", app.sandbox.base_url))
        .bearer_auth("sk_test_slipway")
        .send()
        .await?;
    assert!(resp.status().is_success());
    for agent in [&first, &second] {
        app.wait_for_status(agent, &[AgentStatus::Destroyed], WAIT).await?;
    }
    let state = app.sandbox_state().await?;
    assert_eq!(state["hetzner"]["servers"].as_array().map_or(0, Vec::len), 0);
    assert_eq!(state["tailscale"]["devices"].as_array().map_or(0, Vec::len), 0);
    assert_eq!(state["tailscale"]["keys"].as_array().map_or(0, Vec::len), 0);
    // No more provisioning on that subscription.
    let (status, body) = app
        .api(Method::POST, "/api/agents", Some(&token), Some(json!({"name": "third", "region": "hel1"})))
        .await?;
    assert_eq!(status, 201);
    let third = body["agent_id"].as_str().unwrap();
    let (status, body) =
        app.api(Method::POST, &format!("/api/agents/{third}/provision"), Some(&token), None).await?;
    assert_eq!((status, body["code"].as_str()), (403, Some("NO_ACTIVE_SUBSCRIPTION")), "{body}");
    Ok(())
}

/// Five events of one customer's billing story, in the order Stripe created them.
fn story(customer: &str, n: usize, tag: &str) -> Vec<Value> {
    let sub = format!("sub_{tag}_{n}");
    let id = |k: &str| format!("evt_{tag}_{n}_{k}");
    let t = 1_800_000_000;
    let mut events = vec![
        event(
            "customer.subscription.created",
            subscription_object(&sub, customer, "active", t),
            t,
            Some(id("a")),
        ),
        event(
            "invoice.paid",
            invoice_object(&format!("in_{tag}_{n}_1"), customer, &sub, "paid", t + 1),
            t + 1,
            Some(id("b")),
        ),
        event(
            "invoice.payment_failed",
            invoice_object(&format!("in_{tag}_{n}_2"), customer, &sub, "open", t + 10),
            t + 10,
            Some(id("c")),
        ),
        event(
            "customer.subscription.updated",
            subscription_object(&sub, customer, "past_due", t + 11),
            t + 11,
            Some(id("d")),
        ),
    ];
    events.push(match n % 3 {
        // Paid late: back to active.
        0 => event(
            "invoice.paid",
            invoice_object(&format!("in_{tag}_{n}_2"), customer, &sub, "paid", t + 20),
            t + 20,
            Some(id("e")),
        ),
        // Gave up: cancelled.
        1 => event(
            "customer.subscription.deleted",
            subscription_object(&sub, customer, "canceled", t + 30),
            t + 30,
            Some(id("e")),
        ),
        // Stripe marks it unpaid.
        _ => event(
            "customer.subscription.updated",
            subscription_object(&sub, customer, "unpaid", t + 40),
            t + 40,
            Some(id("e")),
        ),
    });
    events
}

/// The parts of the state that must not depend on delivery order.
fn outcome(s: &BillingState) -> Value {
    json!({
        "status": s.subscription.as_ref().map(|x| x.status.clone()),
        "ended": s.ended,
        "invoices": s.invoices.values().collect::<Vec<_>>(),
        "delinquent_invoices": s.delinquency.as_ref().map(|d| d.failed_invoices.len()),
        "applied": s.applied.len(),
        "entitled": s.entitled(),
    })
}

#[tokio::test]
async fn shuffled_duplicated_events_converge_to_the_in_order_outcome() -> anyhow::Result<()> {
    let app = TestApp::spawn().await?;
    const CUSTOMERS: usize = 20;
    let ordered: Vec<String> = (0..CUSTOMERS).map(|n| app.id(&format!("cusord{n}"))).collect();
    let shuffled: Vec<String> = (0..CUSTOMERS).map(|n| app.id(&format!("cusshf{n}"))).collect();

    // In order, one at a time.
    for (n, customer) in ordered.iter().enumerate() {
        for e in story(customer, n, &format!("o{}", app.unique)) {
            assert_eq!(app.post_stripe(&e.to_string()).await?.status(), 200);
        }
    }
    // Every event twice, shuffled (a fixed-seed LCG keeps the test reproducible), concurrently.
    let mut deliveries: Vec<Value> = shuffled
        .iter()
        .enumerate()
        .flat_map(|(n, c)| story(c, n, &format!("s{}", app.unique)))
        .flat_map(|e| [e.clone(), e])
        .collect();
    assert_eq!(deliveries.len(), 200);
    let mut seed: u64 = 0x5eed;
    for i in (1..deliveries.len()).rev() {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        deliveries.swap(i, (seed >> 33) as usize % (i + 1));
    }
    let bodies: Vec<String> = deliveries.iter().map(Value::to_string).collect();
    for chunk in bodies.chunks(10) {
        for resp in join_all(chunk.iter().map(|e| app.post_stripe(e))).await {
            assert_eq!(resp?.status(), 200);
        }
    }

    for (o, s) in ordered.iter().zip(&shuffled) {
        let deadline = tokio::time::Instant::now() + WAIT;
        let (a, b) = loop {
            let (a, b) = (app.billing_state(o).await?, app.billing_state(s).await?);
            if a.applied.len() == 5 && b.applied.len() == 5 {
                break (a, b);
            }
            anyhow::ensure!(tokio::time::Instant::now() < deadline, "events not all applied: {a:#?} {b:#?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(outcome(&a), outcome(&b), "customer {o} vs {s}");
    }
    Ok(())
}
