//! The emulated Stripe API through the client the product uses (`async-stripe` 1.0.0-rc.10):
//! every answer must parse into the client's typed objects, and every webhook into the
//! typed events of `async-stripe-webhook`. If a field is missing or mistyped, the sandbox's
//! objects are wrong, not this test.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};
use slipway_sandbox::{RunningSandbox, SandboxConfig, spawn};
use stripe::{Client, ClientBuilder, IdempotencyKey, RequestStrategy, StripeError, StripeRequest};
use stripe_billing::billing_meter_event::CreateBillingMeterEvent;
use stripe_billing::subscription::{CancelSubscription, RetrieveSubscription, UpdateSubscription};
use stripe_billing::{InvoiceStatus, SubscriptionStatus};
use stripe_checkout::checkout_session::{
    CreateCheckoutSession, CreateCheckoutSessionLineItems, CreateCheckoutSessionSubscriptionData,
    ExpireCheckoutSession, RetrieveCheckoutSession,
};
use stripe_checkout::{CheckoutSessionMode, CheckoutSessionPaymentStatus, CheckoutSessionStatus};
use stripe_core::customer::{CreateCustomer, RetrieveCustomer, RetrieveCustomerReturned};
use stripe_webhook::{EventObject, Webhook};
use tokio::sync::mpsc;

const SECRET: &str = "whsec_client_test";

/// A webhook receiver answering 200, forwarding `(Stripe-Signature, body)`.
async fn receiver() -> (String, mpsc::UnboundedReceiver<(String, String)>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let tx = Arc::new(Mutex::new(tx));
    let app = axum::Router::new().fallback(move |headers: HeaderMap, body: Bytes| {
        let tx = tx.clone();
        async move {
            let signature = headers["stripe-signature"].to_str().unwrap().to_owned();
            tx.lock().unwrap().send((signature, String::from_utf8(body.to_vec()).unwrap())).unwrap();
            StatusCode::OK
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/webhooks/stripe", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, rx)
}

async fn start() -> (RunningSandbox, Client, mpsc::UnboundedReceiver<(String, String)>) {
    let (webhook_url, rx) = receiver().await;
    let config = SandboxConfig {
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        stripe_webhook_secret: SECRET.into(),
        stripe_webhook_url: webhook_url,
        stripe_api_key: "sk_test_x".into(),
        ..SandboxConfig::default()
    };
    let sandbox = spawn(config).await.expect("sandbox binds");
    // The client requests `{api_base}v1{path}`: the base must end with a slash.
    let client =
        ClientBuilder::new("sk_test_x").url(format!("{}/stripe/", sandbox.base_url)).build().unwrap();
    (sandbox, client, rx)
}

/// The next webhook, verified and parsed the way the product does it.
async fn next_event(rx: &mut mpsc::UnboundedReceiver<(String, String)>) -> stripe_webhook::Event {
    let (signature, body) =
        tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.expect("webhook arrives").unwrap();
    Webhook::construct_event(&body, &signature, SECRET).unwrap_or_else(|e| panic!("{e:?}: {body}"))
}

fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

async fn control(sandbox: &RunningSandbox, path: &str, body: Value) -> Value {
    let res = reqwest::Client::new()
        .post(format!("{}/_sandbox/stripe{path}", sandbox.base_url))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "{path}: {}", res.status());
    res.json().await.unwrap()
}

fn stripe_error(result: Result<impl std::fmt::Debug, StripeError>) -> (stripe::ApiErrors, u16) {
    match result {
        Err(StripeError::Stripe(error, status)) => (*error, status),
        other => panic!("expected a Stripe error, got {other:?}"),
    }
}

#[tokio::test]
async fn subscription_checkout_through_async_stripe() {
    let (sandbox, client, mut webhooks) = start().await;

    let customer = CreateCustomer::new()
        .email("ada@example.com")
        .name("Ada")
        .metadata(map(&[("userId", "u1")]))
        .send(&client)
        .await
        .unwrap();
    assert!(customer.id.as_str().starts_with("cus_"));
    assert_eq!(customer.email.as_deref(), Some("ada@example.com"));
    let RetrieveCustomerReturned::Customer(fetched) =
        RetrieveCustomer::new(customer.id.clone()).send(&client).await.unwrap()
    else {
        panic!("customer is not deleted");
    };
    assert_eq!(fetched.metadata.unwrap()["userId"], "u1");

    let item = CreateCheckoutSessionLineItems {
        price: Some("price_agent_monthly".into()),
        quantity: Some(1),
        ..Default::default()
    };
    let subscription_data = CreateCheckoutSessionSubscriptionData {
        metadata: Some(map(&[("agentId", "a1")])),
        ..Default::default()
    };
    let session = CreateCheckoutSession::new()
        .mode(CheckoutSessionMode::Subscription)
        .customer(customer.id.as_str())
        .line_items(vec![item])
        .success_url("https://app.example.com/done?session={CHECKOUT_SESSION_ID}")
        .cancel_url("https://app.example.com/cancel")
        .client_reference_id("u1")
        .metadata(map(&[("userId", "u1"), ("agentId", "a1"), ("region", "eu")]))
        .subscription_data(subscription_data)
        .send(&client)
        .await
        .unwrap();
    assert!(session.id.as_str().starts_with("cs_test_"));
    assert_eq!(session.status, Some(CheckoutSessionStatus::Open));
    assert_eq!(session.payment_status, CheckoutSessionPaymentStatus::Unpaid);
    assert_eq!(session.url, Some(format!("{}/_sandbox/stripe/checkout/{}", sandbox.base_url, session.id)));
    assert!(session.subscription.is_none());

    let fetched = RetrieveCheckoutSession::new(session.id.clone()).send(&client).await.unwrap();
    assert_eq!(fetched.metadata.unwrap()["agentId"], "a1");
    assert_eq!(fetched.client_reference_id.as_deref(), Some("u1"));

    let done = control(&sandbox, &format!("/checkout/{}/complete", session.id), json!({})).await;
    assert_eq!(done["checkout_session_id"], session.id.as_str());
    assert_eq!(done["customer_id"], customer.id.as_str());
    assert_eq!(done["event_ids"].as_array().unwrap().len(), 3);
    let sub_id = done["subscription_id"].as_str().unwrap().to_owned();

    let completed = RetrieveCheckoutSession::new(session.id.clone()).send(&client).await.unwrap();
    assert_eq!(completed.status, Some(CheckoutSessionStatus::Complete));
    assert_eq!(completed.payment_status, CheckoutSessionPaymentStatus::Paid);
    assert_eq!(completed.subscription.as_ref().map(|s| s.id().as_str().to_owned()), Some(sub_id.clone()));

    let sub = RetrieveSubscription::new(sub_id.as_str()).send(&client).await.unwrap();
    assert_eq!(sub.status, SubscriptionStatus::Active);
    assert_eq!(sub.customer.id().as_str(), customer.id.as_str());
    assert_eq!(sub.metadata["agentId"], "a1");
    let item = &sub.items.data[0];
    assert_eq!(item.price.id.as_str(), "price_agent_monthly");
    assert_eq!(item.current_period_end - item.current_period_start, 30 * 24 * 3600);

    // Webhooks, in order, each parsed into its typed object.
    let event = next_event(&mut webhooks).await;
    let EventObject::CustomerSubscriptionCreated(created) = event.data.object else {
        panic!("subscription.created")
    };
    assert_eq!(created.id.as_str(), sub_id);
    let event = next_event(&mut webhooks).await;
    let EventObject::InvoicePaid(invoice) = event.data.object else { panic!("invoice.paid") };
    assert_eq!(invoice.status, Some(InvoiceStatus::Paid));
    let parent = invoice.parent.unwrap().subscription_details.unwrap();
    assert_eq!(parent.subscription.id().as_str(), sub_id);
    let event = next_event(&mut webhooks).await;
    let EventObject::CheckoutSessionCompleted(completed) = event.data.object else {
        panic!("session.completed")
    };
    assert_eq!(completed.metadata.unwrap()["userId"], "u1");

    // Usage, with Stripe's identifier dedupe.
    let payload = map(&[("stripe_customer_id", customer.id.as_str()), ("value", "25")]);
    let meter = CreateBillingMeterEvent::new("agent_minutes", payload.clone())
        .identifier("usage-1")
        .send(&client)
        .await
        .unwrap();
    assert_eq!((meter.event_name.as_str(), meter.identifier.as_str()), ("agent_minutes", "usage-1"));
    assert_eq!(meter.payload["value"], "25");
    let (error, status) = stripe_error(
        CreateBillingMeterEvent::new("agent_minutes", payload).identifier("usage-1").send(&client).await,
    );
    assert_eq!(status, 400);
    assert_eq!(error.message.as_deref(), Some("An event already exists with identifier usage-1."));

    // Changes through the API emit events carrying previous_attributes.
    let updated = UpdateSubscription::new(sub_id.as_str())
        .cancel_at_period_end(true)
        .metadata(map(&[("note", "leaving")]))
        .send(&client)
        .await
        .unwrap();
    assert!(updated.cancel_at_period_end);
    assert_eq!(updated.cancel_at, Some(item.current_period_end));
    let event = next_event(&mut webhooks).await;
    assert!(matches!(event.data.object, EventObject::CustomerSubscriptionUpdated(_)));
    assert!(event.data.previous_attributes.is_some());
    let canceled = CancelSubscription::new(sub_id.as_str()).send(&client).await.unwrap();
    assert_eq!(canceled.status, SubscriptionStatus::Canceled);
    assert!(canceled.ended_at.is_some());
    let event = next_event(&mut webhooks).await;
    assert!(matches!(event.data.object, EventObject::CustomerSubscriptionDeleted(_)));

    // Errors map onto the client's error type.
    let (error, status) = stripe_error(RetrieveSubscription::new("sub_missing").send(&client).await);
    assert_eq!(status, 404);
    assert_eq!(error.message.as_deref(), Some("No such subscription: 'sub_missing'"));
    assert_eq!(error.param.as_deref(), Some("id"));

    // An idempotent retry gets the same customer back.
    let key = IdempotencyKey::new("create-u2").unwrap();
    let create = || {
        CreateCustomer::new()
            .email("u2@example.com")
            .customize()
            .request_strategy(RequestStrategy::Idempotent(key.clone()))
    };
    let first = create().send(&client).await.unwrap();
    let second = create().send(&client).await.unwrap();
    assert_eq!(first.id, second.id);
    sandbox.shutdown().await;
}

/// An open subscription Checkout Session for `u1`.
async fn open_session(client: &Client) -> stripe_checkout::CheckoutSession {
    let item = CreateCheckoutSessionLineItems {
        price: Some("price_agent_monthly".into()),
        quantity: Some(1),
        ..Default::default()
    };
    CreateCheckoutSession::new()
        .mode(CheckoutSessionMode::Subscription)
        .line_items(vec![item])
        .success_url("https://app.example.com/done")
        .cancel_url("https://app.example.com/cancel")
        .client_reference_id("u1")
        .metadata(map(&[("userId", "u1"), ("agentId", "a1"), ("region", "eu")]))
        .send(client)
        .await
        .unwrap()
}

#[tokio::test]
async fn an_expired_checkout_session_cannot_be_paid() {
    let (sandbox, client, mut webhooks) = start().await;
    let session = open_session(&client).await;

    let key = IdempotencyKey::new("expire-1").unwrap();
    let expire = || {
        ExpireCheckoutSession::new(session.id.clone())
            .customize()
            .request_strategy(RequestStrategy::Idempotent(key.clone()))
    };
    let expired = expire().send(&client).await.unwrap();
    assert_eq!(expired.id, session.id);
    assert_eq!(expired.status, Some(CheckoutSessionStatus::Expired));
    assert_eq!(expired.payment_status, CheckoutSessionPaymentStatus::Unpaid);
    assert_eq!(expired.url, None);
    let event = next_event(&mut webhooks).await;
    let EventObject::CheckoutSessionExpired(announced) = event.data.object else {
        panic!("checkout.session.expired")
    };
    assert_eq!(
        (announced.id.as_str(), announced.status),
        (session.id.as_str(), Some(CheckoutSessionStatus::Expired))
    );
    // The same key replays the answer; a new request is refused: only `open` sessions expire.
    assert_eq!(expire().send(&client).await.unwrap().id, session.id);
    let (error, status) = stripe_error(ExpireCheckoutSession::new(session.id.clone()).send(&client).await);
    assert_eq!((status, error.type_.as_str(), error.code.is_none()), (400, "invalid_request_error", true));
    assert!(error.message.as_deref().unwrap().contains("has a status of `expired`"), "{error:?}");
    let (error, status) = stripe_error(ExpireCheckoutSession::new("cs_test_missing").send(&client).await);
    assert_eq!(
        (status, error.message.as_deref()),
        (404, Some("No such checkout.session: 'cs_test_missing'"))
    );

    // The customer can no longer pay it: refused, nothing changes, nothing is announced.
    let res = reqwest::Client::new()
        .post(format!("{}/_sandbox/stripe/checkout/{}/complete", sandbox.base_url, session.id))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 409);
    let page = reqwest::get(format!("{}/_sandbox/stripe/checkout/{}", sandbox.base_url, session.id))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("This checkout session is expired.") && !page.contains("<form"), "{page}");
    let fetched = RetrieveCheckoutSession::new(session.id.clone()).send(&client).await.unwrap();
    assert_eq!(fetched.status, Some(CheckoutSessionStatus::Expired));
    assert!(fetched.subscription.is_none());
    let state: Value =
        reqwest::get(format!("{}/_sandbox/state", sandbox.base_url)).await.unwrap().json().await.unwrap();
    let types: Vec<&str> =
        state["stripe"]["events"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["checkout.session.expired"]);
    assert!(state["stripe"]["subscriptions"].as_array().unwrap().is_empty());
    sandbox.shutdown().await;
}

/// The product's client: expiring answers the session's status, whether it expires now, had
/// expired before or was paid first.
#[tokio::test]
async fn the_products_client_reports_what_became_of_the_session() {
    let (sandbox, client, _webhooks) = start().await;
    let product = slipway_providers::stripe::StripeClient::new(
        &format!("{}/stripe", sandbox.base_url),
        &secrecy::SecretString::from("sk_test_x"),
    )
    .unwrap();
    let open = open_session(&client).await;
    let expired = product.expire_checkout_session(open.id.as_str()).await.unwrap();
    assert_eq!((expired.status.as_str(), expired.subscription_id), ("expired", None));
    let again = product.expire_checkout_session(open.id.as_str()).await.unwrap();
    assert_eq!(again.status, "expired");

    let paid = open_session(&client).await;
    let done = control(&sandbox, &format!("/checkout/{}/complete", paid.id), json!({})).await;
    let outcome = product.expire_checkout_session(paid.id.as_str()).await.unwrap();
    assert_eq!(outcome.status, "complete");
    assert_eq!(outcome.customer_id.as_deref(), done["customer_id"].as_str());
    assert_eq!(outcome.subscription_id.as_deref(), done["subscription_id"].as_str());

    let missing = product.expire_checkout_session("cs_test_missing").await.unwrap_err();
    assert!(matches!(&missing, slipway_providers::ClientError::Api(f) if f.status == 404), "{missing}");
    sandbox.shutdown().await;
}

/// The product's client lists every subscription of a customer, whatever its status, across
/// pages (100 a page, `starting_after` the last id of the page before), with the seats of its
/// licensed items only.
#[tokio::test]
async fn the_products_client_lists_a_customers_subscriptions_across_pages() {
    let (sandbox, client, _webhooks) = start().await;
    let product = slipway_providers::stripe::StripeClient::new(
        &format!("{}/stripe", sandbox.base_url),
        &secrecy::SecretString::from("sk_test_x"),
    )
    .unwrap();
    let customer = CreateCustomer::new().email("many@example.com").send(&client).await.unwrap();
    let customer = customer.id.as_str().to_owned();
    assert!(product.customer_subscriptions(&customer).await.unwrap().is_empty());

    // Three seats and a metered item (which carries no quantity, so no seat).
    let items = vec![
        CreateCheckoutSessionLineItems {
            price: Some("price_agent_monthly".into()),
            quantity: Some(3),
            ..Default::default()
        },
        CreateCheckoutSessionLineItems { price: Some("price_usage_metered".into()), ..Default::default() },
    ];
    let session = CreateCheckoutSession::new()
        .mode(CheckoutSessionMode::Subscription)
        .customer(customer.as_str())
        .line_items(items)
        .success_url("https://app.example.com/done")
        .send(&client)
        .await
        .unwrap();
    let done = control(&sandbox, &format!("/checkout/{}/complete", session.id), json!({})).await;
    let seated = done["subscription_id"].as_str().unwrap().to_owned();
    // 101 more (so more than one page of 100), one of them canceled; another customer's.
    for i in 0..101 {
        let body = json!({"userId": "u1", "agentId": format!("a{i}"), "region": "eu", "customer": customer});
        control(&sandbox, "/checkout/complete", body).await;
    }
    let other =
        control(&sandbox, "/checkout/complete", json!({"userId": "u2", "agentId": "b", "region": "eu"}))
            .await;
    let state: Value =
        reqwest::get(format!("{}/_sandbox/state", sandbox.base_url)).await.unwrap().json().await.unwrap();
    let mine: Vec<String> = state["stripe"]["subscriptions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["customer"] == customer.as_str())
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(mine.len(), 102);
    let canceled = mine[50].clone();
    control(&sandbox, &format!("/subscriptions/{canceled}/status"), json!({"status": "canceled"})).await;

    let listed = product.customer_subscriptions(&customer).await.unwrap();
    // Newest first (all created within a second or two: the later recorded first), each once.
    let ids: Vec<&str> = listed.iter().map(|(id, _, _)| id.as_str()).collect();
    let newest_first: Vec<&str> = mine.iter().rev().map(String::as_str).collect();
    assert_eq!(ids, newest_first);
    assert!(!ids.contains(&other["subscription_id"].as_str().unwrap()));
    let find = |id: &str| listed.iter().find(|(i, _, _)| i == id).cloned().unwrap();
    assert_eq!(find(&seated), (seated.clone(), "active".to_owned(), 3));
    assert_eq!(find(&canceled), (canceled.clone(), "canceled".to_owned(), 1));
    assert!(
        listed
            .iter()
            .filter(|(id, _, _)| *id != seated && *id != canceled)
            .all(|(_, s, n)| s == "active" && *n == 1)
    );
    sandbox.shutdown().await;
}

#[tokio::test]
async fn billing_events_parse_as_typed_webhooks() {
    let (sandbox, client, mut webhooks) = start().await;
    let done =
        control(&sandbox, "/checkout/complete", json!({"userId": "u1", "agentId": "a1", "region": "eu"}))
            .await;
    let sub_id = done["subscription_id"].as_str().unwrap().to_owned();
    let event = next_event(&mut webhooks).await;
    let EventObject::CheckoutSessionCompleted(session) = event.data.object else {
        panic!("session.completed")
    };
    assert_eq!(session.subscription.unwrap().id().as_str(), sub_id);
    let sub = RetrieveSubscription::new(sub_id.as_str()).send(&client).await.unwrap();
    assert_eq!(sub.metadata["agentId"], "a1");

    let failed = control(&sandbox, &format!("/subscriptions/{sub_id}/payment_failed"), json!({})).await;
    let event = next_event(&mut webhooks).await;
    let EventObject::InvoicePaymentFailed(invoice) = event.data.object else {
        panic!("invoice.payment_failed")
    };
    assert_eq!(invoice.id.as_ref().map(|i| i.as_str()), failed["invoice_id"].as_str());
    assert_eq!(invoice.attempt_count, 1);
    assert!(invoice.next_payment_attempt.is_some());
    let event = next_event(&mut webhooks).await;
    let EventObject::CustomerSubscriptionUpdated(updated) = event.data.object else {
        panic!("subscription.updated")
    };
    assert_eq!(updated.status, SubscriptionStatus::PastDue);

    control(&sandbox, &format!("/invoices/{}/pay", failed["invoice_id"].as_str().unwrap()), json!({})).await;
    let event = next_event(&mut webhooks).await;
    assert!(matches!(event.data.object, EventObject::InvoicePaid(_)));
    let event = next_event(&mut webhooks).await;
    let EventObject::CustomerSubscriptionUpdated(updated) = event.data.object else {
        panic!("subscription.updated")
    };
    assert_eq!(updated.status, SubscriptionStatus::Active);

    control(&sandbox, &format!("/subscriptions/{sub_id}/status"), json!({"status": "canceled"})).await;
    let event = next_event(&mut webhooks).await;
    let EventObject::CustomerSubscriptionDeleted(deleted) = event.data.object else {
        panic!("subscription.deleted")
    };
    assert_eq!(deleted.status, SubscriptionStatus::Canceled);

    // The public helpers build events the typed parser accepts too.
    let now = chrono_now();
    let crafted = [
        slipway_sandbox::stripe::event(
            "invoice.payment_failed",
            slipway_sandbox::stripe::invoice_object("in_x", "cus_x", "sub_x", "open", now),
            now,
            None,
        ),
        slipway_sandbox::stripe::event(
            "customer.subscription.updated",
            slipway_sandbox::stripe::subscription_object("sub_x", "cus_x", "unpaid", now),
            now,
            None,
        ),
    ];
    for event in crafted {
        let payload = event.to_string();
        let signature = slipway_sandbox::stripe::signature_header(&payload, SECRET, now);
        let parsed = Webhook::construct_event(&payload, &signature, SECRET).unwrap();
        assert!(!matches!(parsed.data.object, EventObject::Unknown(_)));
    }
    sandbox.shutdown().await;
}

fn chrono_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs().try_into().unwrap()
}
