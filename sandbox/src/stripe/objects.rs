//! Stripe objects, each built from Stripe's own example of it (vendored in `fixtures/stripe/`).
//!
//! Every builder starts from the full example object, so responses and events carry every
//! field Stripe's clients expect, then sets the fields that carry meaning (ids, links,
//! amounts, statuses, times) and resets example values that would be nonsense here (the
//! examples fill optional sub-objects with placeholder data) to what a plain test-mode
//! object has. Shapes follow current API versions: billing periods live on subscription
//! items (and, for older readers, also at the top level of the subscription), and an
//! invoice names its subscription under `parent.subscription_details`.

use serde_json::{Map, Value, json};

use crate::state::{random_alnum, random_hex};

const EVENT: &str = include_str!("../../fixtures/stripe/event.json");
const CHECKOUT_SESSION: &str = include_str!("../../fixtures/stripe/checkout_session.json");
const CUSTOMER: &str = include_str!("../../fixtures/stripe/customer.json");
const SUBSCRIPTION: &str = include_str!("../../fixtures/stripe/subscription.json");
const INVOICE: &str = include_str!("../../fixtures/stripe/invoice.json");
const METER_EVENT: &str = include_str!("../../fixtures/stripe/billing_meter_event.json");

/// The API version events are stamped with: the one `async-stripe` 1.0.0-rc.10 is generated
/// for, so the product's webhook parser sees no version mismatch.
pub(crate) const API_VERSION: &str = "2026-09-30.endive";
/// The example objects' price, used when a caller names no price.
pub(crate) const DEFAULT_PRICE: &str = "price_1PgafmB7WZ01zgkW6dKueIc5";
/// The example objects' product.
pub(crate) const DEFAULT_PRODUCT: &str = "prod_QXg1hqf4jFNsqG";
/// Unit amount (cents) of prices the sandbox has to make up.
pub(crate) const DEFAULT_UNIT_AMOUNT: i64 = 2000;
/// Length of a billing period: a month of 30 days.
pub(crate) const PERIOD_SECS: i64 = 30 * 24 * 3600;

fn fixture(text: &str) -> Value {
    serde_json::from_str(text).expect("vendored fixture is JSON")
}

fn set(object: &mut Value, fields: Vec<(&str, Value)>) {
    for (key, value) in fields {
        object[key] = value;
    }
}

/// `{prefix}{n random alphanumerics}`, the shape of Stripe ids.
pub(crate) fn new_id(prefix: &str, n: usize) -> String {
    format!("{prefix}{}", random_alnum(n))
}

pub(crate) fn customer_id() -> String {
    new_id("cus_", 14)
}
pub(crate) fn subscription_id() -> String {
    new_id("sub_", 24)
}
pub(crate) fn invoice_id() -> String {
    new_id("in_", 24)
}
pub(crate) fn event_id() -> String {
    new_id("evt_", 24)
}
pub(crate) fn session_id() -> String {
    new_id("cs_test_a1", 56)
}

/// A full Event: `data.object` is `object`, `previous_attributes` is added when given, and
/// `request` names the API request (and idempotency key) that caused it, if any.
pub(crate) fn event(
    event_type: &str,
    object: Value,
    previous_attributes: Option<Value>,
    created: i64,
    id: Option<String>,
    request: (Option<String>, Option<String>),
) -> Value {
    let mut data = json!({"object": object});
    if let Some(previous) = previous_attributes {
        data["previous_attributes"] = previous;
    }
    let mut event = fixture(EVENT);
    set(
        &mut event,
        vec![
            ("id", json!(id.unwrap_or_else(event_id))),
            ("type", json!(event_type)),
            ("created", json!(created)),
            ("api_version", json!(API_VERSION)),
            ("livemode", json!(false)),
            ("pending_webhooks", json!(1)),
            ("request", json!({"id": request.0, "idempotency_key": request.1})),
            ("data", data),
        ],
    );
    event
}

/// What a customer is created with.
#[derive(Default)]
pub(crate) struct NewCustomer {
    pub(crate) email: Option<String>,
    pub(crate) name: Option<String>,
    pub(crate) description: Option<String>,
    pub(crate) phone: Option<String>,
    pub(crate) metadata: Map<String, Value>,
}

pub(crate) fn customer(id: &str, created: i64, new: NewCustomer) -> Value {
    let mut customer = fixture(CUSTOMER);
    set(
        &mut customer,
        vec![
            ("id", json!(id)),
            ("created", json!(created)),
            ("livemode", json!(false)),
            ("email", json!(new.email)),
            ("name", json!(new.name)),
            ("description", json!(new.description)),
            ("phone", json!(new.phone)),
            ("metadata", Value::Object(new.metadata)),
            ("invoice_prefix", json!(random_hex(8).to_uppercase())),
            ("next_invoice_sequence", json!(1)),
            // No currency until the first subscription, no discount, address or shipping.
            ("currency", Value::Null),
            ("discount", Value::Null),
            ("address", Value::Null),
            ("shipping", Value::Null),
            ("balance", json!(0)),
            ("delinquent", json!(false)),
        ],
    );
    customer["invoice_settings"]["rendering_options"] = Value::Null;
    customer
}

/// A recurring price as far as the sandbox knows it.
#[derive(Clone, Debug)]
pub(crate) struct Price {
    pub(crate) id: String,
    pub(crate) product: String,
    pub(crate) currency: String,
    pub(crate) unit_amount: i64,
    pub(crate) interval: String,
    /// `licensed` (a quantity is bought) or `metered` (usage is reported).
    pub(crate) usage_type: String,
}

impl Price {
    /// The price a caller named only by id: the example's amount, monthly.
    pub(crate) fn assumed(id: &str, metered: bool) -> Price {
        Price {
            id: id.to_owned(),
            product: if id == DEFAULT_PRICE { DEFAULT_PRODUCT.to_owned() } else { new_id("prod_", 14) },
            currency: "usd".to_owned(),
            unit_amount: DEFAULT_UNIT_AMOUNT,
            interval: "month".to_owned(),
            usage_type: if metered { "metered" } else { "licensed" }.to_owned(),
        }
    }

    /// The price and its legacy plan twin, in the shapes subscription items carry.
    fn objects(&self, created: i64) -> (Value, Value) {
        let example = fixture(SUBSCRIPTION);
        let item = &example["items"]["data"][0];
        let (mut price, mut plan) = (item["price"].clone(), item["plan"].clone());
        let shared = [
            ("id", json!(self.id)),
            ("product", json!(self.product)),
            ("currency", json!(self.currency)),
            ("created", json!(created)),
            ("active", json!(true)),
            ("livemode", json!(false)),
            ("metadata", json!({})),
            ("nickname", Value::Null),
            ("billing_scheme", json!("per_unit")),
            ("tiers_mode", Value::Null),
        ];
        for (key, value) in shared {
            price[key] = value.clone();
            plan[key] = value;
        }
        set(
            &mut price,
            vec![
                ("unit_amount", json!(self.unit_amount)),
                ("unit_amount_decimal", json!(self.unit_amount.to_string())),
                ("type", json!("recurring")),
                ("transform_quantity", Value::Null),
                ("custom_unit_amount", Value::Null),
                ("lookup_key", Value::Null),
                ("tax_behavior", json!("unspecified")),
                (
                    "recurring",
                    json!({"interval": self.interval, "interval_count": 1, "meter": null,
                        "usage_type": self.usage_type, "trial_period_days": null}),
                ),
            ],
        );
        set(
            &mut plan,
            vec![
                ("amount", json!(self.unit_amount)),
                ("amount_decimal", json!(self.unit_amount.to_string())),
                ("interval", json!(self.interval)),
                ("interval_count", json!(1)),
                ("usage_type", json!(self.usage_type)),
                ("transform_usage", Value::Null),
                ("trial_period_days", Value::Null),
                ("meter", Value::Null),
            ],
        );
        (price, plan)
    }
}

/// One line of a checkout session or subscription: a price and, if licensed, a quantity.
#[derive(Clone, Debug)]
pub(crate) struct LineItem {
    pub(crate) price: Price,
    pub(crate) quantity: Option<u64>,
}

impl LineItem {
    pub(crate) fn amount(&self) -> i64 {
        self.price.unit_amount * self.quantity.map_or(0, |q| i64::try_from(q).unwrap_or(i64::MAX))
    }
}

/// What a checkout session is created with.
pub(crate) struct NewSession {
    pub(crate) mode: String,
    pub(crate) url: String,
    pub(crate) success_url: Option<String>,
    pub(crate) cancel_url: Option<String>,
    pub(crate) customer: Option<String>,
    pub(crate) customer_email: Option<String>,
    pub(crate) client_reference_id: Option<String>,
    pub(crate) metadata: Map<String, Value>,
    pub(crate) line_items: Vec<LineItem>,
}

/// An `open`, `unpaid` session as `POST /v1/checkout/sessions` returns it.
pub(crate) fn checkout_session(id: &str, created: i64, new: NewSession) -> Value {
    let subtotal: i64 = new.line_items.iter().map(LineItem::amount).sum();
    let currency = new.line_items.first().map(|i| i.price.currency.clone());
    let payment = new.mode == "payment";
    let mut session = fixture(CHECKOUT_SESSION);
    set(
        &mut session,
        vec![
            ("id", json!(id)),
            ("created", json!(created)),
            ("expires_at", json!(created + 24 * 3600)),
            ("livemode", json!(false)),
            ("mode", json!(new.mode)),
            ("status", json!("open")),
            ("payment_status", json!("unpaid")),
            ("url", json!(new.url)),
            ("success_url", json!(new.success_url)),
            ("cancel_url", json!(new.cancel_url)),
            ("customer", json!(new.customer)),
            ("customer_email", json!(new.customer_email)),
            ("client_reference_id", json!(new.client_reference_id)),
            ("metadata", Value::Object(new.metadata)),
            ("currency", json!(currency)),
            ("amount_subtotal", json!(subtotal)),
            ("amount_total", json!(subtotal)),
            ("total_details", json!({"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0})),
            ("subscription", Value::Null),
            ("invoice", Value::Null),
            ("payment_intent", Value::Null),
            ("setup_intent", Value::Null),
            ("customer_details", Value::Null),
            ("collected_information", Value::Null),
            (
                "customer_creation",
                if payment && new.customer.is_none() { json!("if_required") } else { Value::Null },
            ),
            (
                "payment_method_collection",
                if new.mode == "subscription" { json!("always") } else { Value::Null },
            ),
            ("after_expiration", Value::Null),
            ("automatic_tax", json!({"enabled": false, "liability": null, "status": null, "provider": null})),
            ("consent", Value::Null),
            ("consent_collection", Value::Null),
            (
                "custom_text",
                json!({"after_submit": null, "shipping_address": null, "submit": null,
                    "terms_of_service_acceptance": null}),
            ),
            ("payment_method_configuration_details", Value::Null),
            ("shipping_address_collection", Value::Null),
            ("shipping_cost", Value::Null),
            ("adaptive_pricing", json!({"enabled": false})),
            ("currency_conversion", Value::Null),
            ("managed_payments", Value::Null),
            ("permissions", Value::Null),
            ("wallet_options", Value::Null),
            ("discounts", json!([])),
            ("ui_mode", json!("hosted")),
        ],
    );
    if payment {
        session["invoice_creation"]["enabled"] = json!(false);
        session["invoice_creation"]["invoice_data"]["issuer"] = Value::Null;
    } else {
        session["invoice_creation"] = Value::Null;
    }
    session["saved_payment_method_options"] = json!({"allow_redisplay_filters": ["always"], "payment_method_remove": null, "payment_method_save": null});
    session
}

/// Marks `session` completed and paid by `customer`, as Checkout does after payment.
pub(crate) fn complete_session(
    session: &mut Value,
    customer: &str,
    email: &str,
    subscription: Option<&str>,
    invoice: Option<&str>,
) {
    let paid = if session["mode"] == "setup" { "no_payment_required" } else { "paid" };
    let mut details = fixture(CHECKOUT_SESSION)["customer_details"].clone();
    details["email"] = json!(email);
    set(
        session,
        vec![
            ("status", json!("complete")),
            ("payment_status", json!(paid)),
            ("customer", json!(customer)),
            ("subscription", json!(subscription)),
            ("invoice", json!(invoice)),
            ("customer_details", details),
            (
                "collected_information",
                json!({"shipping_details": null, "business_name": null, "individual_name": null}),
            ),
            ("url", Value::Null),
        ],
    );
}

/// What a subscription is created with.
pub(crate) struct NewSubscription<'a> {
    pub(crate) id: &'a str,
    pub(crate) customer: &'a str,
    pub(crate) status: &'a str,
    pub(crate) created: i64,
    pub(crate) items: &'a [LineItem],
    pub(crate) metadata: Map<String, Value>,
    pub(crate) latest_invoice: Option<&'a str>,
}

pub(crate) fn subscription(new: NewSubscription<'_>) -> Value {
    let (start, end) = (new.created, new.created + PERIOD_SECS);
    let mut sub = fixture(SUBSCRIPTION);
    let example_item = sub["items"]["data"][0].clone();
    let items: Vec<Value> = new
        .items
        .iter()
        .map(|line| {
            let (price, plan) = line.price.objects(new.created);
            let mut item = example_item.clone();
            set(
                &mut item,
                vec![
                    ("id", json!(new_id("si_", 14))),
                    ("created", json!(new.created)),
                    ("subscription", json!(new.id)),
                    ("price", price),
                    ("plan", plan),
                    ("quantity", json!(line.quantity)),
                    ("metadata", json!({})),
                    ("current_period_start", json!(start)),
                    ("current_period_end", json!(end)),
                    ("billing_thresholds", Value::Null),
                ],
            );
            item
        })
        .collect();
    let currency = new.items.first().map_or_else(|| "usd".to_owned(), |i| i.price.currency.clone());
    set(
        &mut sub,
        vec![
            ("id", json!(new.id)),
            ("customer", json!(new.customer)),
            ("status", json!(new.status)),
            ("created", json!(new.created)),
            ("start_date", json!(new.created)),
            ("billing_cycle_anchor", json!(new.created)),
            ("billing_cycle_anchor_config", Value::Null),
            ("current_period_start", json!(start)),
            ("current_period_end", json!(end)),
            ("currency", json!(currency)),
            ("livemode", json!(false)),
            ("metadata", Value::Object(new.metadata)),
            ("latest_invoice", json!(new.latest_invoice)),
            ("cancel_at", Value::Null),
            ("cancel_at_period_end", json!(false)),
            ("canceled_at", Value::Null),
            ("ended_at", Value::Null),
            ("cancellation_details", json!({"comment": null, "feedback": null, "reason": null})),
            ("trial_start", Value::Null),
            ("trial_end", Value::Null),
            ("next_pending_invoice_item_invoice", Value::Null),
            ("pause_collection", Value::Null),
            ("pending_update", Value::Null),
            ("pending_invoice_item_interval", Value::Null),
            ("transfer_data", Value::Null),
            ("billing_thresholds", Value::Null),
            ("billing_schedules", json!([])),
            ("billing_mode", json!({"type": "classic", "flexible": null})),
            ("managed_payments", Value::Null),
            ("automatic_tax", json!({"enabled": false, "liability": null, "disabled_reason": null})),
            (
                "payment_settings",
                json!({"payment_method_options": null, "payment_method_types": null,
                    "save_default_payment_method": "off"}),
            ),
            (
                "items",
                json!({"object": "list", "data": items, "has_more": false,
                    "url": format!("/v1/subscription_items?subscription={}", new.id)}),
            ),
        ],
    );
    match new.status {
        "canceled" => {
            sub["canceled_at"] = json!(new.created);
            sub["ended_at"] = json!(new.created);
        }
        "trialing" => {
            sub["trial_start"] = json!(start);
            sub["trial_end"] = json!(end);
        }
        _ => {}
    }
    sub
}

/// The subscription's items as line items again (for invoicing it).
pub(crate) fn subscription_lines(sub: &Value) -> Vec<(String, LineItem)> {
    let items = sub["items"]["data"].as_array().map(Vec::as_slice).unwrap_or_default();
    items
        .iter()
        .map(|item| {
            let price = &item["price"];
            let text = |v: &Value, default: &str| v.as_str().unwrap_or(default).to_owned();
            let line = LineItem {
                price: Price {
                    id: text(&price["id"], DEFAULT_PRICE),
                    product: text(&price["product"], DEFAULT_PRODUCT),
                    currency: text(&price["currency"], "usd"),
                    unit_amount: price["unit_amount"].as_i64().unwrap_or(DEFAULT_UNIT_AMOUNT),
                    interval: text(&price["recurring"]["interval"], "month"),
                    usage_type: text(&price["recurring"]["usage_type"], "licensed"),
                },
                quantity: item["quantity"].as_u64(),
            };
            (text(&item["id"], ""), line)
        })
        .collect()
}

/// What an invoice is created with.
pub(crate) struct NewInvoice<'a> {
    pub(crate) id: &'a str,
    pub(crate) customer: &'a str,
    pub(crate) customer_email: Option<&'a str>,
    /// The subscription it bills, with that subscription's object.
    pub(crate) subscription: Option<&'a Value>,
    /// `draft`, `open`, `paid`, `void` or `uncollectible`.
    pub(crate) status: &'a str,
    pub(crate) created: i64,
    /// `subscription_create`, `subscription_cycle`, `manual`, ...
    pub(crate) billing_reason: &'a str,
    pub(crate) number: Option<String>,
}

pub(crate) fn invoice(new: NewInvoice<'_>) -> Value {
    let mut invoice = fixture(INVOICE);
    let example_line = invoice["lines"]["data"][0].clone();
    let sub_id = new.subscription.and_then(|s| s["id"].as_str());
    let (period_start, period_end) = match new.subscription {
        Some(sub) if new.billing_reason == "subscription_create" => {
            (new.created, new.created.max(sub["current_period_start"].as_i64().unwrap_or(new.created)))
        }
        Some(sub) => {
            let start = sub["current_period_start"].as_i64().unwrap_or(new.created);
            (start, sub["current_period_end"].as_i64().unwrap_or(start + PERIOD_SECS))
        }
        None => (new.created, new.created),
    };
    let lines: Vec<Value> = new
        .subscription
        .map(subscription_lines)
        .unwrap_or_default()
        .into_iter()
        .map(|(item_id, line)| {
            let amount = line.amount();
            let quantity = line.quantity.unwrap_or(0);
            let mut out = example_line.clone();
            set(
                &mut out,
                vec![
                    ("id", json!(new_id("il_", 24))),
                    ("invoice", json!(new.id)),
                    ("livemode", json!(false)),
                    ("amount", json!(amount)),
                    ("subtotal", json!(amount)),
                    ("currency", json!(line.price.currency)),
                    ("description", json!(format!("{quantity} × {} (per {})", line.price.product, line.price.interval))),
                    ("period", json!({"start": period_start, "end": period_end})),
                    ("quantity", json!(line.quantity)),
                    ("quantity_decimal", line.quantity.map_or(Value::Null, |q| json!(q.to_string()))),
                    ("subscription", json!(sub_id)),
                    ("metadata", json!({})),
                    ("discountable", json!(true)),
                    ("discount_amounts", json!([])),
                    ("discounts", json!([])),
                    ("pretax_credit_amounts", json!([])),
                    ("taxes", json!([])),
                    (
                        "parent",
                        json!({"type": "subscription_item_details", "invoice_item_details": null,
                            "subscription_item_details": {"invoice_item": null, "proration": false,
                                "proration_details": {"credited_items": null},
                                "subscription": sub_id, "subscription_item": item_id}}),
                    ),
                    (
                        "pricing",
                        json!({"type": "price_details", "unit_amount_decimal": line.price.unit_amount.to_string(),
                            "price_details": {"price": line.price.id, "product": line.price.product}}),
                    ),
                ],
            );
            out
        })
        .collect();
    let total: i64 = lines.iter().filter_map(|l| l["amount"].as_i64()).sum();
    let currency = lines.first().map_or(json!("usd"), |l| l["currency"].clone());
    let parent = match new.subscription {
        Some(sub) => json!({"type": "subscription_details", "quote_details": null,
            "subscription_details": {"metadata": sub["metadata"], "subscription": sub_id}}),
        None => Value::Null,
    };
    set(
        &mut invoice,
        vec![
            ("id", json!(new.id)),
            ("customer", json!(new.customer)),
            ("customer_email", json!(new.customer_email)),
            ("customer_address", Value::Null),
            ("customer_shipping", Value::Null),
            ("shipping_details", Value::Null),
            ("shipping_cost", Value::Null),
            ("created", json!(new.created)),
            ("livemode", json!(false)),
            ("billing_reason", json!(new.billing_reason)),
            ("subscription", json!(sub_id)),
            ("parent", parent),
            ("currency", currency),
            ("subtotal", json!(total)),
            ("subtotal_excluding_tax", json!(total)),
            ("total", json!(total)),
            ("total_excluding_tax", json!(total)),
            ("amount_due", json!(total)),
            ("amount_overpaid", json!(0)),
            ("period_start", json!(period_start)),
            ("period_end", json!(period_end)),
            ("due_date", Value::Null),
            ("from_invoice", Value::Null),
            ("last_finalization_error", Value::Null),
            ("webhooks_delivered_at", json!(new.created)),
            ("starting_balance", json!(0)),
            ("ending_balance", json!(0)),
            ("total_taxes", json!([])),
            ("total_pretax_credit_amounts", json!([])),
            ("issuer", json!({"type": "self"})),
            (
                "automatic_tax",
                json!({"enabled": false, "liability": null, "status": null,
                "disabled_reason": null, "provider": null}),
            ),
            (
                "payment_settings",
                json!({"default_mandate": null, "payment_method_options": null, "payment_method_types": null}),
            ),
            ("number", json!(new.number)),
        ],
    );
    invoice["lines"]["data"] = Value::Array(lines);
    invoice["lines"]["url"] = json!(format!("/v1/invoices/{}/lines", new.id));
    set_invoice_status(&mut invoice, new.status, new.created);
    invoice
}

/// Moves `invoice` to `status` at time `at`, with the fields Stripe keeps consistent with it.
pub(crate) fn set_invoice_status(invoice: &mut Value, status: &str, at: i64) {
    let due = invoice["amount_due"].as_i64().unwrap_or(0);
    let finalized = invoice["status_transitions"]["finalized_at"].as_i64().unwrap_or(at);
    let (paid, finalized_at) = match status {
        "paid" => (due, Some(finalized)),
        "draft" => (0, None),
        _ => (0, Some(finalized)),
    };
    invoice["status"] = json!(status);
    invoice["amount_paid"] = json!(paid);
    invoice["amount_remaining"] = json!(due - paid);
    invoice["effective_at"] = json!(finalized_at);
    invoice["auto_advance"] = json!(matches!(status, "draft" | "open"));
    let transitions = &mut invoice["status_transitions"];
    transitions["finalized_at"] = json!(finalized_at);
    transitions["paid_at"] = if status == "paid" { json!(at) } else { Value::Null };
    transitions["voided_at"] = if status == "void" { json!(at) } else { Value::Null };
    transitions["marked_uncollectible_at"] = if status == "uncollectible" { json!(at) } else { Value::Null };
    match status {
        "paid" => {
            invoice["attempted"] = json!(true);
            invoice["attempt_count"] = json!(invoice["attempt_count"].as_u64().unwrap_or(0).max(1));
            invoice["next_payment_attempt"] = Value::Null;
        }
        "draft" => {
            invoice["attempted"] = json!(false);
            invoice["attempt_count"] = json!(0);
            invoice["number"] = Value::Null;
            invoice["next_payment_attempt"] = json!(at + 3600);
        }
        "open" => {
            invoice["next_payment_attempt"] = json!(at + 3600);
        }
        _ => invoice["next_payment_attempt"] = Value::Null,
    }
    if status != "draft" && invoice["number"].is_null() {
        invoice["number"] = json!(format!("{}-0001", random_hex(8).to_uppercase()));
    }
}

/// A `billing.meter_event` as `POST /v1/billing/meter_events` returns it.
pub(crate) fn meter_event(
    event_name: &str,
    identifier: &str,
    payload: Map<String, Value>,
    created: i64,
    timestamp: i64,
) -> Value {
    let mut event = fixture(METER_EVENT);
    set(
        &mut event,
        vec![
            ("created", json!(created)),
            ("event_name", json!(event_name)),
            ("identifier", json!(identifier)),
            ("livemode", json!(false)),
            ("payload", Value::Object(payload)),
            ("timestamp", json!(timestamp)),
        ],
    );
    event
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every key of `example` (recursively through objects) is still in `built`.
    fn keeps_keys(example: &Value, built: &Value, path: &str) {
        if let (Value::Object(example), Value::Object(built)) = (example, built) {
            for (key, value) in example {
                let child = format!("{path}.{key}");
                assert!(built.contains_key(key), "{child} dropped");
                keeps_keys(value, &built[key], &child);
            }
        }
    }

    #[test]
    fn built_objects_keep_every_fixture_field() {
        let items = [LineItem { price: Price::assumed("price_x", false), quantity: Some(2) }];
        let sub = subscription(NewSubscription {
            id: "sub_1",
            customer: "cus_1",
            status: "active",
            created: 1_700_000_000,
            items: &items,
            metadata: Map::new(),
            latest_invoice: None,
        });
        keeps_keys(&fixture(SUBSCRIPTION), &sub, "subscription");
        let inv = invoice(NewInvoice {
            id: "in_1",
            customer: "cus_1",
            customer_email: None,
            subscription: Some(&sub),
            status: "paid",
            created: 1_700_000_000,
            billing_reason: "subscription_create",
            number: None,
        });
        keeps_keys(&fixture(INVOICE), &inv, "invoice");
        assert_eq!(inv["amount_paid"], 4000);
        assert_eq!(inv["lines"]["data"][0]["parent"]["subscription_item_details"]["subscription"], "sub_1");
        keeps_keys(&fixture(CUSTOMER), &customer("cus_1", 1, NewCustomer::default()), "customer");
        // An event's `data.object` is whatever object it announces.
        let mut example_event = fixture(EVENT);
        example_event["data"]["object"] = json!({});
        keeps_keys(&example_event, &event("x", json!({}), None, 1, None, (None, None)), "event");
        let payload = json!({"stripe_customer_id": "cus_1", "value": "1"}).as_object().cloned().unwrap();
        keeps_keys(&fixture(METER_EVENT), &meter_event("e", "i", payload, 1, 1), "meter_event");
    }
}
