//! `/_sandbox/stripe/...` (no auth): what happens at Stripe outside the product's API calls.
//!
//! - A customer paying on the hosted Checkout page: `GET checkout/{id}` is that page (a form),
//!   `POST checkout/{id}/complete` is paying. Checkout then creates the customer (unless the
//!   session named one), the subscription (`subscription_data[metadata]` becomes its
//!   metadata) and its paid first invoice, completes the session, and announces
//!   `customer.subscription.created`, `invoice.paid`, `checkout.session.completed`. Only an
//!   `open` session can be paid: one expired (`POST /v1/checkout/sessions/{id}/expire`) or
//!   already complete shows its status on the page, and paying it is refused (409, the page's
//!   form post gets the page's message) with nothing changed and no event, as on Stripe, where
//!   an expired session can no longer be completed.
//! - `POST checkout/complete` (`{userId, agentId, region, customer?}`): the same outcome for a
//!   session the product never created, announcing only `checkout.session.completed`.
//! - Billing over time: `subscriptions/{id}/status`, `subscriptions/{id}/payment_failed` (a
//!   renewal invoice fails, the subscription goes `past_due`) and `invoices/{id}/pay`.
//! - The webhook endpoint: `webhook_endpoint` reads or moves the URL events are delivered to,
//!   as an operator updating the endpoint in the Dashboard (or its `url` by API) does.
//!
//! Real Stripe sends more events around these (`customer.created`, `invoice.created`,
//! `invoice.finalized`, `payment_intent.*`, ...); only the ones a subscriber acts on are
//! emitted, so tests can expect an exact sequence.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use chrono::Utc;
use serde_json::{Map, Value, json};

use super::objects::{self, LineItem, NewCustomer, NewInvoice, NewSubscription};
use super::{CheckoutArgs, Session, StripeState, checkout_session_completed_event, default_line_item, emit};
use crate::state::{Shared, json_response, parse_body};

/// Email of customers Checkout creates when the session named none.
const DEFAULT_EMAIL: &str = "example@example.com";
/// When Stripe retries a failed renewal payment (Smart Retries spread over days).
const RETRY_AFTER_SECS: i64 = 3 * 24 * 3600;

fn control_error(status: StatusCode, message: &str) -> Response {
    json_response(status, json!({"error": message}))
}

/// Returns the id and email of `customer`, creating it (with that id, or a fresh one) when
/// the sandbox does not know it.
fn ensure_customer(
    s: &mut StripeState,
    customer: Option<&str>,
    email: Option<&str>,
    metadata: Map<String, Value>,
    now: i64,
) -> (String, String) {
    if let Some(existing) = customer.and_then(|id| s.customers.iter().find(|c| c["id"] == id)) {
        let email = existing["email"].as_str().or(email).unwrap_or(DEFAULT_EMAIL).to_owned();
        return (existing["id"].as_str().unwrap_or_default().to_owned(), email);
    }
    let id = customer.map_or_else(objects::customer_id, str::to_owned);
    let email = email.unwrap_or(DEFAULT_EMAIL).to_owned();
    let new = NewCustomer { email: Some(email.clone()), metadata, ..NewCustomer::default() };
    s.customers.push(objects::customer(&id, now, new));
    (id, email)
}

/// The customer's next invoice number (`{invoice_prefix}-{sequence:04}`).
fn next_invoice_number(s: &mut StripeState, customer: &str) -> Option<String> {
    let customer = s.customer_mut(customer)?;
    let sequence = customer["next_invoice_sequence"].as_u64().unwrap_or(1);
    customer["next_invoice_sequence"] = json!(sequence + 1);
    Some(format!("{}-{sequence:04}", customer["invoice_prefix"].as_str().unwrap_or("SANDBOX")))
}

/// Creates an active subscription with its paid `subscription_create` invoice; returns both.
fn start_subscription(
    s: &mut StripeState,
    id: Option<String>,
    customer: &str,
    email: &str,
    items: &[LineItem],
    metadata: Map<String, Value>,
    now: i64,
) -> (Value, Value) {
    let sub_id = id.unwrap_or_else(objects::subscription_id);
    let invoice_id = objects::invoice_id();
    let sub = objects::subscription(NewSubscription {
        id: &sub_id,
        customer,
        status: "active",
        created: now,
        items,
        metadata,
        latest_invoice: Some(&invoice_id),
    });
    let number = next_invoice_number(s, customer);
    let invoice = objects::invoice(NewInvoice {
        id: &invoice_id,
        customer,
        customer_email: Some(email),
        subscription: Some(&sub),
        status: "paid",
        created: now,
        billing_reason: "subscription_create",
        number,
    });
    if let Some(c) = s.customer_mut(customer)
        && c["currency"].is_null()
    {
        c["currency"] = sub["currency"].clone();
    }
    s.subscriptions.push(sub.clone());
    s.invoices.push(invoice.clone());
    (sub, invoice)
}

/// `GET /_sandbox/stripe/checkout/{id}`: the "hosted" Checkout page, a form that pays.
pub(super) async fn hosted_page(State(app): State<Shared>, Path(id): Path<String>) -> Response {
    let mut state = app.lock();
    let Some(session) = state.stripe.session_mut(&id) else {
        return (
            StatusCode::NOT_FOUND,
            Html("<!doctype html><title>Not found</title><p>No such checkout session.</p>"),
        )
            .into_response();
    };
    let o = &session.object;
    let items: String = session
        .line_items
        .iter()
        .map(|i| {
            let quantity = i.quantity.map_or_else(|| "metered".to_owned(), |q| format!("× {q}"));
            format!("<li>{} {}</li>", escape(&i.price.id), escape(&quantity))
        })
        .collect();
    let action = if o["status"] == "open" {
        format!(
            "<form method=\"post\" action=\"/_sandbox/stripe/checkout/{}/complete\"><button type=\"submit\">Pay and subscribe</button></form>",
            escape(&id)
        )
    } else {
        format!("<p>This checkout session is {}.</p>", escape(o["status"].as_str().unwrap_or("closed")))
    };
    let cancel = o["cancel_url"]
        .as_str()
        .map(|u| format!("<p><a href=\"{}\">Cancel</a></p>", escape(u)))
        .unwrap_or_default();
    Html(format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Sandbox Checkout</title></head><body>\
         <h1>Sandbox Checkout</h1><p>Session <code>{}</code> ({})</p><ul>{items}</ul>{action}{cancel}</body></html>",
        escape(&id),
        escape(o["mode"].as_str().unwrap_or_default()),
    ))
    .into_response()
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// Whether a request is the hosted page's form post (rather than a test's JSON call).
fn from_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"))
}

/// `POST /_sandbox/stripe/checkout/{id}/complete`: the customer pays. Answers
/// `{"checkout_session_id","customer_id","subscription_id","invoice_id","event_ids"}`, or,
/// for the hosted page's form post, redirects to the session's `success_url`.
pub(super) async fn complete_session(
    State(app): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let now = Utc::now().timestamp();
    let mut state = app.lock();
    let s = &mut state.stripe;
    let Some(session) = s.session_mut(&id) else {
        return control_error(StatusCode::NOT_FOUND, &format!("no checkout session {id}"));
    };
    if session.object["status"] != "open" {
        let status = session.object["status"].as_str().unwrap_or_default().to_owned();
        if from_form(&headers) {
            let page = format!(
                "<!doctype html><title>Checkout</title><p>This checkout session is {}.</p>",
                escape(&status)
            );
            return (StatusCode::CONFLICT, Html(page)).into_response();
        }
        return control_error(StatusCode::CONFLICT, &format!("checkout session {id} is {status}, not open"));
    }
    let (items, sub_metadata) = (session.line_items.clone(), session.subscription_metadata.clone());
    let object = session.object.clone();
    let (customer, email) =
        ensure_customer(s, object["customer"].as_str(), object["customer_email"].as_str(), Map::new(), now);
    let mut events = Vec::new();
    let (mut sub_id, mut invoice_id) = (None, None);
    if object["mode"] == "subscription" {
        let (sub, invoice) = start_subscription(s, None, &customer, &email, &items, sub_metadata, now);
        sub_id = sub["id"].as_str().map(str::to_owned);
        invoice_id = invoice["id"].as_str().map(str::to_owned);
        events.push(objects::event("customer.subscription.created", sub, None, now, None, (None, None)));
        events.push(objects::event("invoice.paid", invoice, None, now, None, (None, None)));
    }
    let Some(session) = s.session_mut(&id) else {
        return control_error(StatusCode::NOT_FOUND, &format!("no checkout session {id}"));
    };
    objects::complete_session(
        &mut session.object,
        &customer,
        &email,
        sub_id.as_deref(),
        invoice_id.as_deref(),
    );
    let completed = session.object.clone();
    events.push(objects::event(
        "checkout.session.completed",
        completed.clone(),
        None,
        now,
        None,
        (None, None),
    ));
    let event_ids = emit(&app, &mut state, events);
    drop(state);
    tracing::info!(session = %id, %customer, "stripe: checkout completed");
    if from_form(&headers) {
        return match completed["success_url"].as_str() {
            Some(url) => Redirect::to(&url.replace("{CHECKOUT_SESSION_ID}", &id)).into_response(),
            None => Html("<!doctype html><title>Paid</title><p>Payment complete.</p>").into_response(),
        };
    }
    json_response(
        StatusCode::OK,
        json!({"checkout_session_id": id, "customer_id": customer, "subscription_id": sub_id,
            "invoice_id": invoice_id, "event_ids": event_ids}),
    )
}

/// `POST /_sandbox/stripe/checkout/complete` `{"userId","agentId","region","customer"?}`: a
/// completed subscription checkout the product did not create through the API. The customer
/// (unless known), an active subscription with that metadata and its paid invoice are
/// created; only `checkout.session.completed` is delivered. Answers 202
/// `{"event_id","checkout_session_id","customer_id","subscription_id"}`.
pub(crate) async fn complete_checkout(State(app): State<Shared>, body: Bytes) -> Response {
    let body = parse_body(&body).unwrap_or(Value::Null);
    let field = |k: &str| body.get(k).and_then(Value::as_str).filter(|v| !v.is_empty()).map(str::to_owned);
    use slipway_providers::stripe::metadata::{AGENT_ID, REGION, USER_ID};
    let (Some(user_id), Some(agent_id), Some(region)) = (field(USER_ID), field(AGENT_ID), field(REGION))
    else {
        return control_error(StatusCode::BAD_REQUEST, "userId, agentId and region are required");
    };
    let args = CheckoutArgs { user_id, agent_id, region, customer_id: field("customer"), event_id: None };
    let mut event = checkout_session_completed_event(&args);
    let now = event["created"].as_i64().unwrap_or_else(|| Utc::now().timestamp());
    let session = &event["data"]["object"];
    let (event_id, session_id) = (event["id"].clone(), session["id"].clone());
    let metadata = session["metadata"].as_object().cloned().unwrap_or_default();
    let sub_id = session["subscription"].as_str().map(str::to_owned);
    let mut state = app.lock();
    let s = &mut state.stripe;
    let customer_metadata = Map::from_iter([(USER_ID.to_owned(), json!(args.user_id))]);
    let (customer, email) = ensure_customer(s, session["customer"].as_str(), None, customer_metadata, now);
    let items = [default_line_item()];
    let (sub, invoice) = start_subscription(s, sub_id, &customer, &email, &items, metadata, now);
    let session = &mut event["data"]["object"];
    session["customer"] = json!(customer);
    session["invoice"] = invoice["id"].clone();
    session["customer_details"]["email"] = json!(email);
    s.checkout_sessions.push(Session {
        object: session.clone(),
        line_items: items.to_vec(),
        subscription_metadata: Map::new(),
    });
    emit(&app, &mut state, vec![event]);
    json_response(
        StatusCode::ACCEPTED,
        json!({"event_id": event_id, "checkout_session_id": session_id, "customer_id": customer,
            "subscription_id": sub["id"]}),
    )
}

const STATUSES: &[&str] = &["active", "past_due", "unpaid", "trialing", "canceled"];

/// `POST /_sandbox/stripe/subscriptions/{id}/status` `{"status": ...}`: moves the subscription
/// and emits `customer.subscription.updated` (`customer.subscription.deleted` for
/// `canceled`). Setting the status it already has changes nothing and emits nothing.
pub(super) async fn set_subscription_status(
    State(app): State<Shared>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let body = parse_body(&body).unwrap_or(Value::Null);
    let Some(status) = body.get("status").and_then(Value::as_str).filter(|s| STATUSES.contains(s)) else {
        return control_error(
            StatusCode::BAD_REQUEST,
            &format!("status must be one of {}", STATUSES.join(", ")),
        );
    };
    let now = Utc::now().timestamp();
    let mut state = app.lock();
    let Some(sub) = state.stripe.subscription_mut(&id) else {
        return control_error(StatusCode::NOT_FOUND, &format!("no subscription {id}"));
    };
    let old = sub["status"].as_str().unwrap_or_default().to_owned();
    if old == "canceled" && status != "canceled" {
        return control_error(
            StatusCode::CONFLICT,
            &format!("subscription {id} is canceled; Stripe cannot revive it"),
        );
    }
    let mut events = Vec::new();
    if old != status {
        sub["status"] = json!(status);
        let mut previous = json!({"status": old});
        match status {
            "canceled" => {
                sub["canceled_at"] = json!(now);
                sub["ended_at"] = json!(now);
                let reason = if matches!(old.as_str(), "past_due" | "unpaid") {
                    "payment_failed"
                } else {
                    "cancellation_requested"
                };
                sub["cancellation_details"]["reason"] = json!(reason);
            }
            "trialing" if sub["trial_end"].is_null() => {
                previous["trial_start"] = Value::Null;
                previous["trial_end"] = Value::Null;
                sub["trial_start"] = sub["current_period_start"].clone();
                sub["trial_end"] = sub["current_period_end"].clone();
            }
            _ => {}
        }
        let sub = sub.clone();
        events.push(if status == "canceled" {
            objects::event("customer.subscription.deleted", sub, None, now, None, (None, None))
        } else {
            objects::event("customer.subscription.updated", sub, Some(previous), now, None, (None, None))
        });
    }
    let event_ids = emit(&app, &mut state, events);
    json_response(StatusCode::OK, json!({"event_ids": event_ids, "subscription_id": id, "status": status}))
}

/// `POST /_sandbox/stripe/subscriptions/{id}/quantity` `{"quantity": n}`: the customer changes
/// the number of seats (Dashboard, Billing Portal or `POST /v1/subscriptions/{id}` with
/// `items[0][quantity]`): the first item's quantity changes and Stripe emits
/// `customer.subscription.updated` with the previous items.
pub(super) async fn set_subscription_quantity(
    State(app): State<Shared>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let body = parse_body(&body).unwrap_or(Value::Null);
    let Some(quantity) = body.get("quantity").and_then(Value::as_u64).filter(|q| *q >= 1) else {
        return control_error(StatusCode::BAD_REQUEST, "quantity must be a positive integer");
    };
    let now = Utc::now().timestamp();
    let mut state = app.lock();
    let Some(sub) = state.stripe.subscription_mut(&id) else {
        return control_error(StatusCode::NOT_FOUND, &format!("no subscription {id}"));
    };
    if sub["status"] == "canceled" {
        return control_error(StatusCode::CONFLICT, &format!("subscription {id} is canceled"));
    }
    let previous = json!({"items": sub["items"].clone()});
    if sub["items"]["data"][0]["quantity"] == json!(quantity) {
        return json_response(
            StatusCode::OK,
            json!({"event_ids": [], "subscription_id": id, "quantity": quantity}),
        );
    }
    sub["items"]["data"][0]["quantity"] = json!(quantity);
    if sub.get("quantity").is_some_and(|q| !q.is_null()) {
        sub["quantity"] = json!(quantity);
    }
    let event =
        objects::event("customer.subscription.updated", sub.clone(), Some(previous), now, None, (None, None));
    let event_ids = emit(&app, &mut state, vec![event]);
    json_response(
        StatusCode::OK,
        json!({"event_ids": event_ids, "subscription_id": id, "quantity": quantity}),
    )
}

/// `POST /_sandbox/stripe/subscriptions/{id}/payment_failed`: a renewal invoice is created and
/// its payment fails (`open`, `attempt_count` 1, `next_payment_attempt` set); the subscription
/// goes `past_due`. Emits `invoice.payment_failed`, then `customer.subscription.updated`.
pub(super) async fn payment_failed(State(app): State<Shared>, Path(id): Path<String>) -> Response {
    let now = Utc::now().timestamp();
    let mut state = app.lock();
    let s = &mut state.stripe;
    let Some(sub) = s.subscriptions.iter().find(|x| x["id"] == id.as_str()).cloned() else {
        return control_error(StatusCode::NOT_FOUND, &format!("no subscription {id}"));
    };
    if sub["status"] == "canceled" {
        return control_error(StatusCode::CONFLICT, &format!("subscription {id} is canceled"));
    }
    let customer = sub["customer"].as_str().unwrap_or_default().to_owned();
    let email = s
        .customers
        .iter()
        .find(|c| c["id"] == customer.as_str())
        .and_then(|c| c["email"].as_str().map(str::to_owned));
    let invoice_id = objects::invoice_id();
    let number = next_invoice_number(s, &customer);
    let mut invoice = objects::invoice(NewInvoice {
        id: &invoice_id,
        customer: &customer,
        customer_email: email.as_deref(),
        subscription: Some(&sub),
        status: "open",
        created: now,
        billing_reason: "subscription_cycle",
        number,
    });
    invoice["attempted"] = json!(true);
    invoice["attempt_count"] = json!(1);
    invoice["next_payment_attempt"] = json!(now + RETRY_AFTER_SECS);
    s.invoices.push(invoice.clone());
    if let Some(c) = s.customer_mut(&customer) {
        c["delinquent"] = json!(true);
    }
    let Some(sub) = s.subscription_mut(&id) else {
        return control_error(StatusCode::NOT_FOUND, &format!("no subscription {id}"));
    };
    let mut previous = Map::new();
    if sub["status"] != "past_due" {
        previous.insert("status".to_owned(), sub["status"].clone());
    }
    previous.insert("latest_invoice".to_owned(), sub["latest_invoice"].clone());
    sub["status"] = json!("past_due");
    sub["latest_invoice"] = json!(invoice_id);
    let sub = sub.clone();
    let events = vec![
        objects::event("invoice.payment_failed", invoice, None, now, None, (None, None)),
        objects::event(
            "customer.subscription.updated",
            sub,
            Some(Value::Object(previous)),
            now,
            None,
            (None, None),
        ),
    ];
    let event_ids = emit(&app, &mut state, events);
    json_response(
        StatusCode::OK,
        json!({"event_ids": event_ids, "invoice_id": invoice_id, "subscription_id": id}),
    )
}

/// `POST /_sandbox/stripe/invoices/{id}/pay`: the invoice is paid (e.g. a retry succeeded);
/// its subscription, if `past_due` or `unpaid`, becomes `active`. Emits `invoice.paid`, then
/// `customer.subscription.updated` when the subscription changed.
pub(super) async fn pay_invoice(State(app): State<Shared>, Path(id): Path<String>) -> Response {
    let now = Utc::now().timestamp();
    let mut state = app.lock();
    let s = &mut state.stripe;
    let Some(invoice) = s.invoice_mut(&id) else {
        return control_error(StatusCode::NOT_FOUND, &format!("no invoice {id}"));
    };
    let status = invoice["status"].as_str().unwrap_or_default().to_owned();
    if !matches!(status.as_str(), "open" | "draft") {
        return control_error(
            StatusCode::CONFLICT,
            &format!("invoice {id} is {status}; only open invoices can be paid"),
        );
    }
    invoice["attempt_count"] = json!(invoice["attempt_count"].as_u64().unwrap_or(0) + 1);
    objects::set_invoice_status(invoice, "paid", now);
    let invoice = invoice.clone();
    let customer = invoice["customer"].as_str().unwrap_or_default().to_owned();
    if let Some(c) = s.customer_mut(&customer) {
        c["delinquent"] = json!(false);
    }
    let sub_id = invoice["parent"]["subscription_details"]["subscription"]
        .as_str()
        .or(invoice["subscription"].as_str())
        .map(str::to_owned);
    let mut events = vec![objects::event("invoice.paid", invoice, None, now, None, (None, None))];
    if let Some(sub) = sub_id.as_deref().and_then(|sid| s.subscription_mut(sid))
        && matches!(sub["status"].as_str(), Some("past_due" | "unpaid" | "incomplete"))
    {
        let previous = json!({"status": sub["status"]});
        sub["status"] = json!("active");
        let sub = sub.clone();
        events.push(objects::event(
            "customer.subscription.updated",
            sub,
            Some(previous),
            now,
            None,
            (None, None),
        ));
    }
    let event_ids = emit(&app, &mut state, events);
    json_response(
        StatusCode::OK,
        json!({"event_ids": event_ids, "invoice_id": id, "subscription_id": sub_id}),
    )
}

/// `POST /_sandbox/stripe/webhook_endpoint` `{"url"}`: later delivery attempts, retries of
/// events already recorded included, go to `url` (until the next change or a reset, which goes
/// back to `stripe_webhook_url`). Answers `{"url"}`.
pub(super) async fn set_webhook_endpoint(State(app): State<Shared>, body: Bytes) -> Response {
    let body = parse_body(&body).unwrap_or(Value::Null);
    let Some(url) = body.get("url").and_then(Value::as_str).map(str::trim).filter(|u| !u.is_empty()) else {
        return control_error(StatusCode::BAD_REQUEST, "url must be a non-empty string");
    };
    app.lock().stripe.webhook_url = Some(url.to_owned());
    tracing::info!(url, "stripe: webhook endpoint moved");
    json_response(StatusCode::OK, json!({"url": url}))
}

/// `GET /_sandbox/stripe/webhook_endpoint`: `{"url"}` events are delivered to now.
pub(super) async fn get_webhook_endpoint(State(app): State<Shared>) -> Response {
    let url = app.lock().stripe.webhook_url.clone().unwrap_or_else(|| app.config.stripe_webhook_url.clone());
    json_response(StatusCode::OK, json!({"url": url}))
}
