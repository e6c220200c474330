//! Billing drives agents: payment failure suspends, payment resumes, the grace period running
//! out or the subscription being deleted destroys; Stripe's duplicated, out-of-order deliveries
//! converge to the in-order outcome.

use std::time::Duration;

use futures::future::join_all;
use reqwest::Method;
use serde_json::{Value, json};
use slipway_proto::{
    billing::{CustomerBilling, customer_workflow_id},
    model::{AgentStatus, agent_workflow_id},
};
use slipway_sandbox::stripe::{event, invoice_object, subscription_object};
use slipway_tests::{Options, TestApp, server_status, wait_until};

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
    let sub = paid["subscription_id"].as_str().unwrap();
    assert_eq!(billing.seat_of(&agent), Some(sub), "{billing:#?}");
    // One Temporal call answered Stripe: the customer's workflow handed the checkout to the
    // agent the API had created (its signal, not the starter's).
    let events = app.events(&agent_workflow_id(&agent)).await?;
    let checkout = events
        .iter()
        .find(|(kind, a)| kind == "WorkflowExecutionSignaled" && a["signal_name"] == "checkout")
        .map(|(_, a)| a["external_workflow_execution"]["workflowId"].clone());
    assert_eq!(checkout, Some(json!(customer_workflow_id(customer))), "{events:#?}");
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

    // A delinquent customer (status still `active`) provisions nothing new.
    let extra = create_agent(&app, &token, "extra").await?;
    let (status, body) =
        app.api(Method::POST, &format!("/api/agents/{extra}/provision"), Some(&token), None).await?;
    assert_eq!((status, body["code"].as_str()), (403, Some("NO_ACTIVE_SUBSCRIPTION")), "{body}");

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

/// Cancel a subscription through Stripe's API (Stripe then sends `customer.subscription.deleted`).
async fn cancel(app: &TestApp, sub: &str) -> anyhow::Result<()> {
    let resp = app
        .http
        .delete(format!("{}/stripe/v1/subscriptions/{sub}", app.sandbox.base_url))
        .bearer_auth("sk_test_slipway")
        .send()
        .await?;
    anyhow::ensure!(resp.status().is_success(), "cancel {sub}: {}", resp.status());
    Ok(())
}

async fn create_agent(app: &TestApp, token: &str, name: &str) -> anyhow::Result<String> {
    let (status, created) = app
        .api(Method::POST, "/api/agents", Some(token), Some(json!({"name": name, "region": "hel1"})))
        .await?;
    anyhow::ensure!(status == 201, "create agent: {status} {created}");
    Ok(created["agent_id"].as_str().unwrap_or_default().to_owned())
}

#[tokio::test]
async fn seats_follow_the_subscriptions_quantity_and_deletion_destroys_its_agents() -> anyhow::Result<()> {
    let app = TestApp::spawn().await?;
    let (user, first, paid) = paying_user_with_agent(&app).await?;
    let (sub, customer) = (paid["subscription_id"].as_str().unwrap(), paid["customer_id"].as_str().unwrap());
    let token = app.token(&user, None);

    // Quantity 1, and its seat holds the checkout's agent: no second agent through the API.
    let second = create_agent(&app, &token, "second").await?;
    let (status, body) =
        app.api(Method::POST, &format!("/api/agents/{second}/provision"), Some(&token), None).await?;
    assert_eq!((status, body["code"].as_str()), (402, Some("NO_FREE_SEAT")), "{body}");
    assert_eq!(app.agent(&second).await?.unwrap().status, AgentStatus::Draft, "a refusal changes nothing");

    // The customer raises the quantity to 2: the second agent gets the new seat.
    app.set_seats(customer, sub, 2).await?;
    let (status, body) =
        app.api(Method::POST, &format!("/api/agents/{second}/provision"), Some(&token), None).await?;
    assert_eq!(status, 202, "{body}");
    app.wait_for_status(&second, &[AgentStatus::Active], WAIT).await?;
    let billing = app.billing_state(customer).await?;
    assert_eq!((billing.seat_of(&first), billing.seat_of(&second)), (Some(sub), Some(sub)), "{billing:#?}");

    // The customer cancels: Stripe sends customer.subscription.deleted; both agents go.
    cancel(&app, sub).await?;
    for agent in [&first, &second] {
        app.wait_for_status(agent, &[AgentStatus::Destroyed], WAIT).await?;
    }
    let state = app.sandbox_state().await?;
    assert_eq!(state["hetzner"]["servers"].as_array().map_or(0, Vec::len), 0);
    assert_eq!(state["tailscale"]["devices"].as_array().map_or(0, Vec::len), 0);
    assert_eq!(state["tailscale"]["keys"].as_array().map_or(0, Vec::len), 0);
    // No more provisioning on that subscription.
    let third = create_agent(&app, &token, "third").await?;
    let (status, body) =
        app.api(Method::POST, &format!("/api/agents/{third}/provision"), Some(&token), None).await?;
    assert_eq!((status, body["code"].as_str()), (403, Some("NO_ACTIVE_SUBSCRIPTION")), "{body}");
    Ok(())
}

#[tokio::test]
async fn a_returning_customer_is_served_by_its_new_subscription() -> anyhow::Result<()> {
    let app = TestApp::spawn().await?;
    let (user, first, paid_a) = paying_user_with_agent(&app).await?;
    cancel(&app, paid_a["subscription_id"].as_str().unwrap()).await?;
    app.wait_for_status(&first, &[AgentStatus::Destroyed], WAIT).await?;

    // The same user comes back: same Stripe customer, new subscription, new agent.
    let second = app.id("second");
    let paid_b = app.subscribe(&user, Some((&second, "fsn1"))).await?;
    assert_eq!(paid_b["customer_id"], paid_a["customer_id"], "Stripe's customer is reused");
    let record = app.wait_for_status(&second, &[AgentStatus::Active, AgentStatus::Failed], WAIT).await?;
    assert_eq!(record.status, AgentStatus::Active, "{record:#?}");
    assert_eq!(server_status(&app.sandbox_state().await?, &second).as_deref(), Some("running"));

    // Entitled again: the API answers about seats, not about a missing subscription.
    let token = app.token(&user, None);
    let third = create_agent(&app, &token, "third").await?;
    let (status, body) =
        app.api(Method::POST, &format!("/api/agents/{third}/provision"), Some(&token), None).await?;
    assert_eq!((status, body["code"].as_str()), (402, Some("NO_FREE_SEAT")), "{body}");

    // And the new subscription's billing applies: a failed renewal suspends its agent.
    let sub_b = paid_b["subscription_id"].as_str().unwrap();
    app.sandbox_post(&format!("/_sandbox/stripe/subscriptions/{sub_b}/payment_failed"), json!({})).await?;
    app.wait_for_status(&second, &[AgentStatus::Suspended], WAIT).await?;
    assert_eq!(server_status(&app.sandbox_state().await?, &second).as_deref(), Some("off"));
    Ok(())
}

#[tokio::test]
async fn deleting_one_of_two_subscriptions_spares_the_others_agent() -> anyhow::Result<()> {
    let app = TestApp::spawn().await?;
    let (user, first, paid_a) = paying_user_with_agent(&app).await?;
    let second = app.id("second");
    let paid_b = app.subscribe(&user, Some((&second, "hel1"))).await?;
    assert_eq!(paid_b["customer_id"], paid_a["customer_id"], "one customer, two subscriptions");
    app.wait_for_status(&second, &[AgentStatus::Active], WAIT).await?;

    cancel(&app, paid_a["subscription_id"].as_str().unwrap()).await?;
    app.wait_for_status(&first, &[AgentStatus::Destroyed], WAIT).await?;

    let customer = paid_a["customer_id"].as_str().unwrap();
    let billing = app.billing_state(customer).await?;
    let sub_b = paid_b["subscription_id"].as_str().unwrap();
    assert!(billing.entitled(), "{billing:#?}");
    assert_eq!(billing.seat_of(&second), Some(sub_b));
    // The deletion was fully enforced (the first agent is gone), and the other one still runs.
    assert_eq!(app.agent(&second).await?.unwrap().status, AgentStatus::Active);
    let state = app.sandbox_state().await?;
    assert_eq!(server_status(&state, &first), None);
    assert_eq!(server_status(&state, &second).as_deref(), Some("running"));
    Ok(())
}

#[tokio::test]
async fn a_checkout_processed_after_its_subscriptions_deletion_provisions_nothing() -> anyhow::Result<()> {
    let app = TestApp::spawn().await?;
    let (user, agent) = (app.id("user"), app.id("agent"));
    let (customer, sub) = (app.id("cus_late"), app.id("sub_late"));
    let t = slipway_tests::now();
    let mut created = subscription_object(&sub, &customer, "active", t);
    created["metadata"] = json!({"agentId": agent, "userId": user, "region": "fsn1"});
    let mut deleted = subscription_object(&sub, &customer, "canceled", t + 5);
    deleted["metadata"] = created["metadata"].clone();
    let mut checkout: Value = serde_json::from_str(&app.checkout_event(&user, &agent, "fsn1").0)?;
    checkout["data"]["object"]["customer"] = json!(customer);
    checkout["data"]["object"]["subscription"] = json!(sub);

    // Stripe's deliveries arrive out of order: the checkout's (retried) comes last.
    for e in [
        event("customer.subscription.created", created, t, None),
        event("customer.subscription.deleted", deleted, t + 5, None),
    ] {
        assert_eq!(app.post_stripe(&e.to_string()).await?.status(), 200);
    }
    slipway_tests::wait_until("the deletion applied", WAIT, || async {
        Ok(app
            .billing_state(&customer)
            .await
            .is_ok_and(|b| b.subscriptions.get(&sub).is_some_and(|s| s.ended)))
    })
    .await?;
    let resp = app.post_stripe(&checkout.to_string()).await?;
    assert_eq!(resp.status(), 200, "acknowledged: Stripe must not retry a checkout that cannot be served");
    let refusal = app.wait_for_checkout_refusal(&agent, "SUBSCRIPTION_ENDED").await?;
    assert_eq!(refusal.retry_at, None, "final: {refusal:?}");

    let record = app.agent(&agent).await?.expect("agent known");
    assert_eq!(record.status, AgentStatus::Draft, "{record:#?}");
    let state = app.sandbox_state().await?;
    assert_eq!(server_status(&state, &agent), None, "no server for an ended subscription");
    assert_eq!(state["tailscale"]["keys"].as_array().map_or(0, Vec::len), 0);
    // A redelivery changes nothing.
    assert_eq!(app.post_stripe(&checkout.to_string()).await?.status(), 200);
    assert_eq!(app.agent(&agent).await?.unwrap().status, AgentStatus::Draft);
    Ok(())
}

#[tokio::test]
async fn a_subscription_deleted_while_its_agent_provisions_leaves_no_server() -> anyhow::Result<()> {
    // Slow callbacks keep the saga running long enough to cancel in the middle of it.
    let app = TestApp::spawn_with(Options { runner_step_ms: 1_500, ..Options::default() }).await?;
    let (user, agent) = (app.id("user"), app.id("agent"));
    let paid = app.subscribe(&user, Some((&agent, "fsn1"))).await?;
    app.wait_for_status(&agent, &[AgentStatus::Provisioning], WAIT).await?;
    cancel(&app, paid["subscription_id"].as_str().unwrap()).await?;

    let record = app.wait_for_status(&agent, &[AgentStatus::Destroyed], WAIT).await?;
    assert!(record.audit.iter().any(|e| e.reason.contains("cancelled")), "{:#?}", record.audit);
    let state = app.sandbox_state().await?;
    assert_eq!(state["hetzner"]["servers"].as_array().map_or(0, Vec::len), 0, "{state:#}");
    assert_eq!(state["tailscale"]["devices"].as_array().map_or(0, Vec::len), 0);
    assert_eq!(state["tailscale"]["keys"].as_array().map_or(0, Vec::len), 0);
    Ok(())
}

#[tokio::test]
async fn a_stripe_failure_at_checkout_answers_502_and_lifts_the_agents_hold() -> anyhow::Result<()> {
    let app = TestApp::spawn().await?;
    let user = app.id("user");
    let token = app.token(&user, None);
    let agent = create_agent(&app, &token, "mine").await?;
    app.fault(json!({"method": "POST", "path": "/stripe/v1/checkout/sessions", "status": 500, "count": 20}))
        .await?;
    let body = json!({"agentId": agent, "region": "fsn1"});
    let (status, answer) =
        app.api(Method::POST, "/api/billing/checkout", Some(&token), Some(body.clone())).await?;
    assert_eq!((status, answer["code"].as_str()), (502, Some("STRIPE_ERROR")), "{answer}");
    assert_eq!(app.agent(&agent).await?.unwrap().open_checkout, None, "the hold is lifted");

    app.http.delete(format!("{}/_sandbox/faults", app.sandbox.base_url)).send().await?.error_for_status()?;
    let (status, answer) = app.api(Method::POST, "/api/billing/checkout", Some(&token), Some(body)).await?;
    assert_eq!(status, 201, "{answer}");
    Ok(())
}

#[tokio::test]
async fn a_checkout_paid_by_someone_else_does_not_provision_the_agent() -> anyhow::Result<()> {
    let app = TestApp::spawn().await?;
    let (owner, payer) = (app.id("owner"), app.id("payer"));
    let agent = create_agent(&app, &app.token(&owner, None), "mine").await?;
    // A paid checkout whose metadata names the owner's agent but another user.
    let (event, _) = app.checkout_event(&payer, &agent, "fsn1");
    let resp = app.post_stripe(&event).await?;
    assert_eq!(resp.status(), 200);
    app.wait_for_checkout_refusal(&agent, "PAYER_NOT_OWNER").await?;
    assert_eq!(app.agent(&agent).await?.unwrap().status, AgentStatus::Draft);
    assert_eq!(server_status(&app.sandbox_state().await?, &agent), None);
    Ok(())
}

#[tokio::test]
async fn checkout_is_only_for_the_callers_draft_agents_one_session_at_a_time() -> anyhow::Result<()> {
    let app = TestApp::spawn().await?;
    let (user, other) = (app.id("user"), app.id("other"));
    let token = app.token(&user, None);
    let agent = create_agent(&app, &token, "mine").await?;
    let checkout = |token: String, agent: String| {
        let app = &app;
        async move {
            app.api(
                Method::POST,
                "/api/billing/checkout",
                Some(&token),
                Some(json!({"agentId": agent, "region": "fsn1"})),
            )
            .await
        }
    };
    let (status, first) = checkout(token.clone(), agent.clone()).await?;
    assert_eq!(status, 201, "{first}");
    let (status, body) = checkout(token.clone(), agent.clone()).await?;
    assert_eq!((status, body["code"].as_str()), (409, Some("CHECKOUT_ALREADY_OPEN")), "{body}");
    let (status, body) = checkout(app.token(&other, None), agent.clone()).await?;
    assert_eq!((status, body["code"].as_str()), (404, Some("AGENT_NOT_FOUND")), "{body}");
    let record = app.agent(&agent).await?.unwrap();
    assert_eq!(record.open_checkout.and_then(|c| c.session_id).as_deref(), first["id"].as_str());

    // An existing draft keeps its region: its checkout needs none. A new agent does.
    let second = create_agent(&app, &token, "second").await?;
    let (status, body) = app
        .api(Method::POST, "/api/billing/checkout", Some(&token), Some(json!({"agentId": second})))
        .await?;
    assert_eq!(status, 201, "{body}");
    let fresh = json!({"agentId": app.id("new")});
    let (status, body) = app.api(Method::POST, "/api/billing/checkout", Some(&token), Some(fresh)).await?;
    assert_eq!((status, body["code"].as_str()), (400, Some("INVALID_INPUT")), "{body}");
    assert!(body["details"]["region"].is_string(), "{body}");

    // An active agent cannot be bought again (the customer would pay and get nothing).
    let (owner, active, _) = paying_user_with_agent(&app).await?;
    let (status, body) = checkout(app.token(&owner, None), active).await?;
    assert_eq!((status, body["code"].as_str()), (409, Some("AGENT_NOT_DRAFT")), "{body}");
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
fn outcome(s: &CustomerBilling) -> Value {
    let subs: Vec<Value> = s
        .subscriptions
        .values()
        .map(|x| {
            json!({
                "status": x.status,
                "ended": x.ended,
                "standing": x.standing(),
                "invoices": x.invoices.values().collect::<Vec<_>>(),
                "unpaid_invoices": x.failed_invoices.len(),
            })
        })
        .collect();
    json!({"subscriptions": subs, "applied": s.applied.len(), "entitled": s.entitled()})
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

#[tokio::test]
async fn a_user_holds_a_bounded_number_of_drafts_and_so_of_open_checkouts() -> anyhow::Result<()> {
    let app = TestApp::spawn_with(Options { max_draft_agents: 2, ..Options::default() }).await?;
    let user = app.id("user");
    let token = app.token(&user, None);
    let first = create_agent(&app, &token, "one").await?;
    create_agent(&app, &token, "two").await?;
    // The cap counts drafts through visibility, which trails a start by a moment.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (_, listed) = app.api(Method::GET, "/api/agents", Some(&token), None).await?;
        if listed["agents"].as_array().map_or(0, Vec::len) == 2 {
            break;
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "drafts never listed: {listed}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, body) = app
        .api(Method::POST, "/api/agents", Some(&token), Some(json!({"name": "three", "region": "hel1"})))
        .await?;
    assert_eq!((status, body["code"].as_str()), (409, Some("TOO_MANY_DRAFTS")), "{body}");
    // A checkout for a new agent id would create a third draft: refused the same way.
    let body = json!({"agentId": app.id("fresh"), "region": "fsn1"});
    let (status, answer) = app.api(Method::POST, "/api/billing/checkout", Some(&token), Some(body)).await?;
    assert_eq!((status, answer["code"].as_str()), (409, Some("TOO_MANY_DRAFTS")), "{answer}");
    // Another user is not affected; destroying a draft makes room.
    create_agent(&app, &app.token(&app.id("other"), None), "theirs").await?;
    let (status, body) =
        app.api(Method::POST, &format!("/api/agents/{first}/destroy"), Some(&token), None).await?;
    assert!(status == 200 || status == 202, "{status} {body}");
    app.wait_for_status(&first, &[AgentStatus::Destroyed], WAIT).await?;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (status, body) = app
            .api(Method::POST, "/api/agents", Some(&token), Some(json!({"name": "three", "region": "hel1"})))
            .await?;
        if status == 201 {
            break;
        }
        assert_eq!(body["code"], "TOO_MANY_DRAFTS", "{body}");
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "the destroyed draft still counts");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

/// A Stripe-signed event about subscription `sub`, created `dt` seconds from now.
async fn send_subscription_event(
    app: &TestApp,
    kind: &str,
    sub: &str,
    customer: &str,
    status: &str,
    dt: i64,
) -> anyhow::Result<()> {
    let created = slipway_tests::now() + dt;
    let object = subscription_object(sub, customer, status, created);
    let resp = app.post_stripe(&event(kind, object, created, None).to_string()).await?;
    anyhow::ensure!(resp.status() == 200, "{kind}: {}", resp.status());
    Ok(())
}

#[tokio::test]
async fn a_downgrade_powers_off_the_newest_agent_until_a_seat_is_paid_again() -> anyhow::Result<()> {
    let app = TestApp::spawn().await?;
    let (user, first, paid) = paying_user_with_agent(&app).await?;
    let (sub, customer) = (paid["subscription_id"].as_str().unwrap(), paid["customer_id"].as_str().unwrap());
    let token = app.token(&user, None);
    app.set_seats(customer, sub, 2).await?;
    let second = create_agent(&app, &token, "second").await?;
    let (status, body) =
        app.api(Method::POST, &format!("/api/agents/{second}/provision"), Some(&token), None).await?;
    assert_eq!(status, 202, "{body}");
    app.wait_for_status(&second, &[AgentStatus::Active], WAIT).await?;

    // Quantity 2 → 1: the newest agent loses its server's power, the first keeps running.
    app.set_seats(customer, sub, 1).await?;
    let record = app.wait_for_status(&second, &[AgentStatus::Suspended], WAIT).await?;
    assert!(record.audit.last().unwrap().reason.contains("seat"), "{:?}", record.audit.last());
    let state = app.sandbox_state().await?;
    assert_eq!(server_status(&state, &second).as_deref(), Some("off"));
    assert_eq!(server_status(&state, &first).as_deref(), Some("running"));
    assert_eq!(app.agent(&first).await?.unwrap().status, AgentStatus::Active);
    // Its owner cannot switch it back on while it has no paid seat.
    let (status, body) =
        app.api(Method::POST, &format!("/api/agents/{second}/start"), Some(&token), None).await?;
    assert_eq!((status, body["code"].as_str()), (409, Some("AGENT_SUSPENDED")), "{body}");

    // Quantity back to 2: it runs again.
    app.set_seats(customer, sub, 2).await?;
    app.wait_for_status(&second, &[AgentStatus::Active], WAIT).await?;
    assert_eq!(server_status(&app.sandbox_state().await?, &second).as_deref(), Some("running"));
    Ok(())
}

#[tokio::test]
async fn a_voided_invoice_ends_the_suspension_it_caused() -> anyhow::Result<()> {
    let app = TestApp::spawn().await?;
    let (_, agent, paid) = paying_user_with_agent(&app).await?;
    let (sub, customer) = (paid["subscription_id"].as_str().unwrap(), paid["customer_id"].as_str().unwrap());
    let failed =
        app.sandbox_post(&format!("/_sandbox/stripe/subscriptions/{sub}/payment_failed"), json!({})).await?;
    app.wait_for_status(&agent, &[AgentStatus::Suspended], WAIT).await?;

    // The subscription is active again (the customer keeps paying), yet the failed invoice is
    // still unpaid: the agent stays off.
    send_subscription_event(&app, "customer.subscription.updated", sub, customer, "active", 1).await?;
    wait_until("the subscription active again", WAIT, || async {
        Ok(app.billing_state(customer).await?.subscriptions[sub].status == "active")
    })
    .await?;
    assert_eq!(app.agent(&agent).await?.unwrap().status, AgentStatus::Suspended);

    // The merchant voids the failed invoice: nothing is owed, the agent runs again.
    let invoice = failed["invoice_id"].as_str().expect("invoice id");
    let created = slipway_tests::now() + 2;
    let voided =
        event("invoice.voided", invoice_object(invoice, customer, sub, "void", created), created, None);
    assert_eq!(app.post_stripe(&voided.to_string()).await?.status(), 200);
    app.wait_for_status(&agent, &[AgentStatus::Active], WAIT).await?;
    assert_eq!(server_status(&app.sandbox_state().await?, &agent).as_deref(), Some("running"));
    let billing = app.billing_state(customer).await?;
    assert_eq!(billing.subscriptions[sub].grace_deadline, None, "no grace period left running: {billing:#?}");
    // A late redelivery of the failure changes nothing: the invoice is settled.
    let late = event(
        "invoice.payment_failed",
        invoice_object(invoice, customer, sub, "open", created - 1),
        created - 1,
        None,
    );
    assert_eq!(app.post_stripe(&late.to_string()).await?.status(), 200);
    wait_until("the late failure applied", WAIT, || async {
        Ok(app.billing_state(customer).await?.applied.len() > billing.applied.len())
    })
    .await?;
    assert_eq!(app.agent(&agent).await?.unwrap().status, AgentStatus::Active);
    Ok(())
}

#[tokio::test]
async fn a_seat_paid_for_a_destroyed_draft_serves_the_customers_next_agent() -> anyhow::Result<()> {
    let app = TestApp::spawn().await?;
    let user = app.id("user");
    let token = app.token(&user, None);
    let draft = create_agent(&app, &token, "draft").await?;
    let (status, session) = app
        .api(
            Method::POST,
            "/api/billing/checkout",
            Some(&token),
            Some(json!({"agentId": draft, "region": "fsn1"})),
        )
        .await?;
    assert_eq!(status, 201, "{session}");
    let session_id = session["id"].as_str().unwrap().to_owned();

    // The user destroys the draft: its open session is expired at Stripe.
    let (status, body) =
        app.api(Method::POST, &format!("/api/agents/{draft}/destroy"), Some(&token), None).await?;
    assert_eq!(status, 202, "{body}");
    app.wait_for_status(&draft, &[AgentStatus::Destroyed], WAIT).await?;
    let sessions = |state: &Value| state["stripe"]["checkout_sessions"].clone();
    wait_until("the session expired", WAIT, || async {
        let state = app.sandbox_state().await?;
        Ok(sessions(&state)
            .as_array()
            .into_iter()
            .flatten()
            .any(|s| s["id"] == session_id.as_str() && s["status"] == "expired"))
    })
    .await?;

    // A checkout for the draft that was paid anyway (before it expired) arrives late: its seat is
    // the customer's, not the closed agent's.
    let (customer, sub) = (app.id("cus_draft"), app.id("sub_draft"));
    let t = slipway_tests::now();
    let mut checkout: Value = serde_json::from_str(&app.checkout_event(&user, &draft, "fsn1").0)?;
    checkout["data"]["object"]["customer"] = json!(customer);
    checkout["data"]["object"]["subscription"] = json!(sub);
    let created =
        event("customer.subscription.created", subscription_object(&sub, &customer, "active", t), t, None);
    for e in [created, checkout] {
        assert_eq!(app.post_stripe(&e.to_string()).await?.status(), 200);
    }
    wait_until("the checkout applied", WAIT, || async {
        Ok(app.billing_state(&customer).await.is_ok_and(|b| b.subscriptions.contains_key(&sub)))
    })
    .await?;
    // Handing the checkout over found the draft's workflow closed (never started again): the seat
    // the event reserved for it is released at once, before any agent needs it.
    wait_until("the closed draft's seat released", WAIT, || async {
        Ok(app.billing_state(&customer).await.is_ok_and(|b| b.released.contains_key(&draft)))
    })
    .await?;
    assert_eq!(app.agent(&draft).await?.map(|a| a.status), Some(AgentStatus::Destroyed));

    // The customer's next agent gets that seat (it used to answer 402 NO_FREE_SEAT).
    let next = create_agent(&app, &token, "next").await?;
    let (status, body) =
        app.api(Method::POST, &format!("/api/agents/{next}/provision"), Some(&token), None).await?;
    assert_eq!(status, 202, "{body}");
    app.wait_for_status(&next, &[AgentStatus::Active], WAIT).await?;
    let billing = app.billing_state(&customer).await?;
    assert_eq!((billing.seat_of(&next), billing.seat_of(&draft)), (Some(sub.as_str()), None), "{billing:#?}");
    Ok(())
}

#[tokio::test]
async fn a_paused_subscription_powers_its_agents_off_until_it_resumes() -> anyhow::Result<()> {
    let app = TestApp::spawn().await?;
    let (_, agent, paid) = paying_user_with_agent(&app).await?;
    let (sub, customer) = (paid["subscription_id"].as_str().unwrap(), paid["customer_id"].as_str().unwrap());

    // A trial ended without a payment method and the subscription paused (Stripe sends
    // customer.subscription.paused with status `paused`).
    send_subscription_event(&app, "customer.subscription.paused", sub, customer, "paused", 1).await?;
    app.wait_for_status(&agent, &[AgentStatus::Suspended], WAIT).await?;
    assert_eq!(server_status(&app.sandbox_state().await?, &agent).as_deref(), Some("off"));
    let billing = app.billing_state(customer).await?;
    assert!(
        billing.subscriptions[sub].grace_deadline.is_some(),
        "a suspension by status alone ends: {billing:#?}"
    );

    send_subscription_event(&app, "customer.subscription.resumed", sub, customer, "active", 2).await?;
    app.wait_for_status(&agent, &[AgentStatus::Active], WAIT).await?;
    assert_eq!(server_status(&app.sandbox_state().await?, &agent).as_deref(), Some("running"));
    assert_eq!(app.billing_state(customer).await?.subscriptions[sub].grace_deadline, None);
    Ok(())
}

#[tokio::test]
async fn a_resume_failing_at_hetzner_beyond_its_retry_budget_converges_once_hetzner_recovers()
-> anyhow::Result<()> {
    // Two attempts per command: Hetzner failing three times outlasts a whole command.
    let app =
        TestApp::spawn_with(Options { command_attempts: 2, worker_metrics: true, ..Options::default() })
            .await?;
    let unconverged = || async {
        let url = format!("http://{}/metrics", app.worker_metrics.expect("metrics"));
        let body = app.http.get(url).send().await?.text().await?;
        Ok::<_, anyhow::Error>(
            body.lines()
                .find(|l| l.starts_with("slipway_agents_unconverged"))
                .and_then(|l| l.split_whitespace().last()?.parse::<f64>().ok()),
        )
    };
    let (user, agent, paid) = paying_user_with_agent(&app).await?;
    let sub = paid["subscription_id"].as_str().unwrap();
    let failed =
        app.sandbox_post(&format!("/_sandbox/stripe/subscriptions/{sub}/payment_failed"), json!({})).await?;
    app.wait_for_status(&agent, &[AgentStatus::Suspended], WAIT).await?;

    app.fault(
        json!({"method": "POST", "path": "/hetzner/v1/servers/*/actions/poweron", "status": 503, "count": 3}),
    )
    .await?;
    let invoice = failed["invoice_id"].as_str().expect("invoice id");
    app.sandbox_post(&format!("/_sandbox/stripe/invoices/{invoice}/pay"), json!({})).await?;

    // The resume fails for good as a command: the agent records it and tries again later.
    wait_until("the failed resume recorded for another try", WAIT, || async {
        Ok(app.agent(&agent).await?.and_then(|a| a.billing_retry).is_some_and(|r| r.attempt >= 1))
    })
    .await?;
    let record = app.agent(&agent).await?.unwrap();
    assert_eq!(record.status, AgentStatus::Suspended, "{record:#?}");
    // Operators find it (Web UI filter, and the worker's gauge).
    let query = format!("WorkflowId = 'agent-{agent}' AND SlipwayBilling = 'converging'");
    wait_until("the agent listed as converging", WAIT, || async {
        Ok(app.client.count_workflows(&query, Default::default()).await?.count() == 1)
    })
    .await?;
    wait_until("the gauge counts it", WAIT, || async { Ok(unconverged().await?.is_some_and(|n| n >= 1.0)) })
        .await?;
    // Its owner sees why, and is still refused a start (billing decides, not the owner).
    let token = app.token(&user, None);
    let (status, body) = app.api(Method::GET, &format!("/api/agents/{agent}"), Some(&token), None).await?;
    assert_eq!(status, 200, "{body}");

    // Hetzner recovered (the fault ran out): the next attempt powers it on.
    let record = app.wait_for_status(&agent, &[AgentStatus::Active], Duration::from_secs(120)).await?;
    assert_eq!(record.billing_retry, None, "{record:#?}");
    wait_until("the gauge back to zero", WAIT, || async { Ok(unconverged().await? == Some(0.0)) }).await?;
    assert_eq!(server_status(&app.sandbox_state().await?, &agent).as_deref(), Some("running"));
    Ok(())
}
