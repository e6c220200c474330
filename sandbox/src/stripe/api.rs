//! `/stripe/v1/...`: the Stripe API calls the product makes, with Stripe's conventions.
//!
//! Middleware does what every Stripe endpoint does: a `Request-Id: req_...` on every answer,
//! a key in `Authorization` (Bearer, or Basic with the key as user), and `Idempotency-Key`
//! on POST (same key and parameters → the stored answer again, marked
//! `Idempotent-Replayed: true`, and no second effect; same key, other parameters →
//! `idempotency_error`). Handlers parse the form body, reject parameters Stripe does not
//! know for that call (`parameter_unknown`, which catches typos in the product), and answer
//! with the objects `objects` builds. Parameters Stripe knows but the sandbox does not model
//! are accepted and ignored.

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::{Next, from_fn, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, http};
use chrono::Utc;
use serde_json::{Map, Value, json};

use super::objects::{self, LineItem, NewCustomer, NewSession, Price};
use super::{Idempotent, Session, delivered, emit, form};
use crate::state::{Shared, credential, json_response, key_credential, random_alnum};

/// Largest request body read by the idempotency layer.
const BODY_LIMIT: usize = 1 << 20;
/// Meter event identifiers are unique within this window.
const IDENTIFIER_WINDOW_SECS: i64 = 24 * 3600;

/// The `req_...` id of the request being handled.
#[derive(Clone)]
struct RequestId(String);

pub(super) fn router(app: Shared) -> Router<Shared> {
    Router::new()
        .route("/v1/customers", post(create_customer))
        .route("/v1/customers/{id}", get(get_customer).post(update_customer))
        .route("/v1/checkout/sessions", post(create_session))
        .route("/v1/checkout/sessions/{id}", get(get_session))
        .route("/v1/checkout/sessions/{id}/expire", post(expire_session))
        .route("/v1/subscriptions", get(list_subscriptions))
        .route(
            "/v1/subscriptions/{id}",
            get(get_subscription).post(update_subscription).delete(cancel_subscription),
        )
        .route("/v1/invoices/{id}", get(get_invoice))
        .route("/v1/billing/meter_events", post(create_meter_event))
        .route("/v1/events", get(list_events))
        .route("/v1/events/{id}", get(get_event))
        .fallback(unrecognized)
        .method_not_allowed_fallback(unrecognized)
        .layer(from_fn_with_state(app.clone(), idempotency))
        .layer(from_fn_with_state(app.clone(), auth))
        .layer(from_fn(request_id))
}

// ---------------------------------------------------------------------------------------
// Errors and parameters

/// A Stripe error: `{"error": {"type", "message", "code"?, "param"?, "doc_url"?}}`.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    kind: &'static str,
    code: Option<&'static str>,
    param: Option<String>,
    message: String,
    /// Sends `Stripe-Should-Retry: false`, for errors a retry cannot fix.
    final_answer: bool,
}

type ApiResult<T = Response> = Result<T, ApiError>;

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({"type": self.kind, "message": self.message});
        if let Some(code) = self.code {
            body["code"] = json!(code);
            body["doc_url"] =
                json!(format!("https://stripe.com/docs/error-codes/{}", code.replace('_', "-")));
        }
        if let Some(param) = self.param {
            body["param"] = json!(param);
        }
        let mut response = json_response(self.status, json!({"error": body}));
        if self.final_answer {
            response.headers_mut().insert("stripe-should-retry", HeaderValue::from_static("false"));
        }
        response
    }
}

fn error(
    status: StatusCode,
    kind: &'static str,
    code: Option<&'static str>,
    param: Option<&str>,
    message: &str,
) -> ApiError {
    ApiError {
        status,
        kind,
        code,
        param: param.map(str::to_owned),
        message: message.to_owned(),
        final_answer: false,
    }
}

fn invalid(param: &str, message: &str) -> ApiError {
    error(StatusCode::BAD_REQUEST, "invalid_request_error", None, Some(param), message)
}

fn missing(param: &str) -> ApiError {
    error(
        StatusCode::BAD_REQUEST,
        "invalid_request_error",
        Some("parameter_missing"),
        Some(param),
        &format!("Missing required param: {param}."),
    )
}

/// `No such {kind}: '{id}'`: 404 for the object in the path, 400 for one named in a parameter.
fn no_such(kind: &str, id: &str, param: &str) -> ApiError {
    let status = if param == "id" { StatusCode::NOT_FOUND } else { StatusCode::BAD_REQUEST };
    error(
        status,
        "invalid_request_error",
        Some("resource_missing"),
        Some(param),
        &format!("No such {kind}: '{id}'"),
    )
}

async fn unrecognized(method: Method, uri: Uri) -> ApiError {
    error(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        None,
        None,
        &format!(
            "Unrecognized request URL ({method}: {}). Please see https://stripe.com/docs or we can help at https://support.stripe.com/.",
            uri.path()
        ),
    )
}

/// Rejects the first top-level parameter not in `known`, as Stripe does.
fn only_known(form: &Value, known: &[&str]) -> ApiResult<()> {
    let unknown = form.as_object().and_then(|m| m.keys().find(|k| !known.contains(&k.as_str())));
    match unknown {
        Some(name) => Err(error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            Some("parameter_unknown"),
            Some(name),
            &format!("Received unknown parameter: {name}"),
        )),
        None => Ok(()),
    }
}

/// A non-empty string parameter.
fn text<'a>(form: &'a Value, key: &str) -> Option<&'a str> {
    form.get(key).and_then(Value::as_str).filter(|s| !s.is_empty())
}

/// An integer parameter; anything else is Stripe's `parameter_invalid_integer`.
fn integer(value: Option<&Value>, param: &str) -> ApiResult<Option<i64>> {
    let not_integer = |shown: &str| {
        error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            Some("parameter_invalid_integer"),
            Some(param),
            &format!("Invalid integer: {shown}"),
        )
    };
    match value {
        None => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => s.parse().map(Some).map_err(|_| not_integer(s)),
        Some(other) => Err(not_integer(&other.to_string())),
    }
}

fn boolean(value: Option<&Value>, param: &str) -> ApiResult<Option<bool>> {
    match value.and_then(Value::as_str) {
        None | Some("") => Ok(None),
        Some("true") => Ok(Some(true)),
        Some("false") => Ok(Some(false)),
        Some(s) => Err(invalid(param, &format!("Invalid boolean: {s}"))),
    }
}

/// A hash of strings such as `metadata`: `None` when absent, an empty map for `metadata=`
/// (which clears it in updates); values of `""` stay, meaning "remove this key" in updates.
fn string_map(form: &Value, key: &str) -> ApiResult<Option<Map<String, Value>>> {
    match form.get(key) {
        None => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(Some(Map::new())),
        Some(Value::Object(map)) => {
            if let Some((k, _)) = map.iter().find(|(_, v)| !v.is_string()) {
                return Err(invalid(
                    &format!("{key}[{k}]"),
                    &format!("Invalid value for {key}[{k}]: must be a string"),
                ));
            }
            if key == "metadata" {
                if map.len() > 50 {
                    return Err(invalid(key, "Metadata can have a maximum of 50 keys."));
                }
                if let Some(k) = map.keys().find(|k| k.chars().count() > 40) {
                    return Err(invalid(
                        &format!("{key}[{k}]"),
                        "Metadata keys can be at most 40 characters long.",
                    ));
                }
                if let Some((k, _)) =
                    map.iter().find(|(_, v)| v.as_str().is_some_and(|v| v.chars().count() > 500))
                {
                    return Err(invalid(
                        &format!("{key}[{k}]"),
                        "Metadata values can be at most 500 characters long.",
                    ));
                }
            }
            Ok(Some(map.clone()))
        }
        Some(_) => Err(invalid(key, &format!("Invalid hash: {key} must be a hash of strings"))),
    }
}

/// Metadata as given at creation (keys with empty values are simply not set).
fn new_metadata(form: &Value, key: &str) -> ApiResult<Map<String, Value>> {
    Ok(string_map(form, key)?.unwrap_or_default().into_iter().filter(|(_, v)| v != "").collect())
}

/// Applies a metadata update (`""` removes a key, an empty hash clears all); returns the
/// previous values of the keys that changed (`null` for keys that were absent).
fn merge_metadata(target: &mut Value, update: Map<String, Value>) -> Map<String, Value> {
    let mut previous = Map::new();
    let current = target.as_object().cloned().unwrap_or_default();
    let next: Map<String, Value> = if update.is_empty() {
        Map::new()
    } else {
        let mut next = current.clone();
        for (k, v) in update {
            if v == "" {
                next.remove(&k);
            } else {
                next.insert(k, v);
            }
        }
        next
    };
    for key in current.keys().chain(next.keys()) {
        if current.get(key) != next.get(key) {
            previous.insert(key.clone(), current.get(key).cloned().unwrap_or(Value::Null));
        }
    }
    *target = Value::Object(next);
    previous
}

fn valid_url(form: &Value, key: &str) -> ApiResult<Option<String>> {
    match text(form, key) {
        None => Ok(None),
        Some(u) if url::Url::parse(u).is_ok_and(|p| p.scheme().starts_with("http")) => Ok(Some(u.to_owned())),
        Some(_) => Err(invalid(key, "Not a valid URL")),
    }
}

/// `(request id, idempotency key)` of the API request that causes an event.
fn origin(request: &RequestId, headers: &HeaderMap) -> (Option<String>, Option<String>) {
    let key = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).map(str::to_owned);
    (Some(request.0.clone()), key)
}

fn ok(object: Value) -> Response {
    json_response(StatusCode::OK, object)
}

// ---------------------------------------------------------------------------------------
// Middleware

async fn request_id(mut req: Request, next: Next) -> Response {
    let id = format!("req_{}", random_alnum(14));
    let version = req.headers().get("stripe-version").cloned();
    req.extensions_mut().insert(RequestId(id.clone()));
    let mut response = next.run(req).await;
    let headers = response.headers_mut();
    if !headers.contains_key("request-id") {
        headers.insert("request-id", HeaderValue::from_str(&id).expect("ids are ASCII"));
    }
    let version = version.unwrap_or_else(|| HeaderValue::from_static(objects::API_VERSION));
    headers.insert("stripe-version", version);
    response
}

async fn auth(State(app): State<Shared>, req: Request, next: Next) -> Response {
    match key_credential(req.headers()).as_deref() {
        Some(key) if key == app.config.stripe_api_key => next.run(req).await,
        // Stripe's answer to a key it does not know: the key masked but its last four characters.
        Some(key) => {
            let tail: String = key.chars().rev().take(4).collect::<Vec<_>>().into_iter().rev().collect();
            let prefix: String = key.chars().take(8).collect();
            error(
                StatusCode::UNAUTHORIZED,
                "invalid_request_error",
                None,
                None,
                &format!("Invalid API Key provided: {prefix}{}{tail}", "*".repeat(key.len().saturating_sub(12))),
            )
            .into_response()
        }
        None => error(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            None,
            None,
            "You did not provide an API key. You need to provide your API key in the Authorization header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY'). See https://stripe.com/docs/api#authentication for details, or we can help at https://support.stripe.com/.",
        )
        .into_response(),
    }
}

/// Stripe's idempotent requests for POST. Answers are kept unless the request was refused
/// before it ran (400, 401, 409, 429), as Stripe does.
async fn idempotency(State(app): State<Shared>, req: Request, next: Next) -> Response {
    let key = req.headers().get("idempotency-key").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let (Some(key), true) = (key, req.method() == Method::POST) else {
        return next.run(req).await;
    };
    let slot = (credential(req.headers()).unwrap_or_default().to_owned(), key.clone());
    let (parts, body) = req.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, BODY_LIMIT).await else {
        return invalid("body", "The request body could not be read.").into_response();
    };
    let fingerprint = json!({"path": parts.uri.path(), "params": form::parse(&bytes)});
    let request_id = parts.extensions.get::<RequestId>().map(|r| r.0.clone()).unwrap_or_default();
    let generation = {
        let mut state = app.lock();
        let existing = state.stripe.idempotency.get(&slot);
        let same = match existing {
            Some(Idempotent::InFlight { fingerprint: f } | Idempotent::Done { fingerprint: f, .. }) => {
                Some(*f == fingerprint)
            }
            None => None,
        };
        match (same, existing) {
            (Some(false), _) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "idempotency_error",
                    None,
                    None,
                    &format!(
                        "Keys for idempotent requests can only be used with the same parameters they were first used with. Try using a key other than '{key}' if you meant to execute a different request."
                    ),
                )
                .into_response();
            }
            (_, Some(Idempotent::InFlight { .. })) => {
                return error(
                    StatusCode::CONFLICT,
                    "idempotency_error",
                    Some("idempotency_key_in_use"),
                    None,
                    "There is currently another in-progress request using this Idempotent Key (that probably means you submitted twice, and the other request is still going through). Please try again later.",
                )
                .into_response();
            }
            (_, Some(Idempotent::Done { status, body, request_id, .. })) => {
                let mut response = Response::new(Body::from(body.clone()));
                *response.status_mut() = *status;
                let headers = response.headers_mut();
                headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
                headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
                if let Ok(v) = HeaderValue::from_str(request_id) {
                    headers.insert("request-id", v);
                }
                if let Ok(v) = HeaderValue::from_str(&key) {
                    headers.insert("idempotency-key", v);
                }
                return response;
            }
            (_, None) => {}
        }
        state
            .stripe
            .idempotency
            .insert(slot.clone(), Idempotent::InFlight { fingerprint: fingerprint.clone() });
        state.generation
    };
    let response = next.run(Request::from_parts(parts, Body::from(bytes))).await;
    let (mut parts, body) = response.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX).await.unwrap_or_default();
    let keep = !matches!(parts.status.as_u16(), 400 | 401 | 409 | 429);
    app.with_current(generation, |state| {
        if keep {
            let done = Idempotent::Done { fingerprint, status: parts.status, body: body.clone(), request_id };
            state.stripe.idempotency.insert(slot, done);
        } else {
            state.stripe.idempotency.remove(&slot);
        }
    });
    if let Ok(v) = HeaderValue::from_str(&key) {
        parts.headers.insert("idempotency-key", v);
    }
    Response::from_parts(parts, Body::from(body))
}

// ---------------------------------------------------------------------------------------
// Customers

#[rustfmt::skip]
const CUSTOMER_CREATE_PARAMS: &[&str] = &[
    "address", "balance", "business_name", "cash_balance", "description", "email", "expand",
    "individual_name", "invoice_prefix", "invoice_settings", "metadata", "name", "next_invoice_sequence",
    "payment_method", "phone", "preferred_locales", "shipping", "source", "tax", "tax_exempt", "tax_id_data",
    "test_clock", "validate",
];
#[rustfmt::skip]
const CUSTOMER_UPDATE_PARAMS: &[&str] = &[
    "address", "balance", "business_name", "cash_balance", "default_source", "description", "email", "expand",
    "individual_name", "invoice_prefix", "invoice_settings", "metadata", "name", "next_invoice_sequence",
    "phone", "preferred_locales", "shipping", "source", "tax", "tax_exempt", "validate",
];

fn check_email(form: &Value) -> ApiResult<Option<String>> {
    match text(form, "email") {
        Some(e) if !e.contains('@') || e.contains(' ') => {
            Err(invalid("email", &format!("Invalid email address: {e}")))
        }
        other => Ok(other.map(str::to_owned)),
    }
}

async fn create_customer(State(app): State<Shared>, body: Bytes) -> ApiResult {
    let form = form::parse(&body);
    only_known(&form, CUSTOMER_CREATE_PARAMS)?;
    let new = NewCustomer {
        email: check_email(&form)?,
        name: text(&form, "name").map(str::to_owned),
        description: text(&form, "description").map(str::to_owned),
        phone: text(&form, "phone").map(str::to_owned),
        metadata: new_metadata(&form, "metadata")?,
    };
    let customer = objects::customer(&objects::customer_id(), Utc::now().timestamp(), new);
    app.lock().stripe.customers.push(customer.clone());
    Ok(ok(customer))
}

async fn get_customer(State(app): State<Shared>, Path(id): Path<String>) -> ApiResult {
    let mut state = app.lock();
    let customer = state.stripe.customer_mut(&id).ok_or_else(|| no_such("customer", &id, "id"))?;
    Ok(ok(customer.clone()))
}

async fn update_customer(State(app): State<Shared>, Path(id): Path<String>, body: Bytes) -> ApiResult {
    let form = form::parse(&body);
    only_known(&form, CUSTOMER_UPDATE_PARAMS)?;
    let (email, metadata) = (check_email(&form)?, string_map(&form, "metadata")?);
    let mut state = app.lock();
    let customer = state.stripe.customer_mut(&id).ok_or_else(|| no_such("customer", &id, "id"))?;
    if let Some(email) = email {
        customer["email"] = json!(email);
    }
    for key in ["name", "description", "phone"] {
        if let Some(value) = form.get(key).and_then(Value::as_str) {
            customer[key] = if value.is_empty() { Value::Null } else { json!(value) };
        }
    }
    if let Some(update) = metadata {
        merge_metadata(&mut customer["metadata"], update);
    }
    Ok(ok(customer.clone()))
}

// ---------------------------------------------------------------------------------------
// Checkout sessions

#[rustfmt::skip]
const SESSION_CREATE_PARAMS: &[&str] = &[
    "adaptive_pricing", "after_expiration", "allow_promotion_codes", "allowed_payment_method_types",
    "automatic_tax", "billing_address_collection", "branding_settings", "cancel_url", "client_reference_id",
    "consent_collection", "currency", "custom_fields", "custom_text", "customer", "customer_account",
    "customer_creation", "customer_email", "customer_update", "discounts", "excluded_payment_method_types",
    "expand", "expires_at", "integration_identifier", "invoice_creation", "line_items", "locale",
    "managed_payments", "metadata", "mode", "name_collection", "optional_items", "origin_context",
    "payment_intent_data", "payment_method_collection", "payment_method_configuration", "payment_method_data",
    "payment_method_options", "payment_method_types", "permissions", "phone_number_collection",
    "redirect_on_completion", "return_url", "saved_payment_method_options", "setup_intent_data",
    "shipping_address_collection", "shipping_options", "submit_type", "subscription_data", "success_url",
    "tax_id_collection", "ui_mode", "wallet_options",
];

/// Reads `line_items[i]`, learning prices the sandbox has not seen yet.
fn line_items(form: &Value, known: &mut Vec<Price>, mode: &str) -> ApiResult<Vec<LineItem>> {
    let items = match form.get("line_items") {
        None => return Ok(Vec::new()),
        Some(Value::Array(items)) => items.clone(),
        Some(_) => return Err(invalid("line_items", "Invalid array")),
    };
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let param = |name: &str| format!("line_items[{i}][{name}]");
        let quantity = match integer(item.get("quantity"), &param("quantity"))? {
            Some(q) if q < 1 => {
                return Err(invalid(&param("quantity"), "This value must be greater than or equal to 1."));
            }
            q => q.map(|q| q.unsigned_abs()),
        };
        let price = if let Some(id) = text(item, "price") {
            match known.iter().find(|p| p.id == id) {
                Some(price) => price.clone(),
                None => {
                    let price = Price::assumed(id, quantity.is_none());
                    known.push(price.clone());
                    price
                }
            }
        } else if let Some(data) = item.get("price_data") {
            let p = |name: &str| format!("line_items[{i}][price_data][{name}]");
            let Some(currency) = text(data, "currency") else {
                return Err(missing(&p("currency")));
            };
            let unit_amount = integer(data.get("unit_amount"), &p("unit_amount"))?.unwrap_or(0);
            let product = text(data, "product").map_or_else(|| objects::new_id("prod_", 14), str::to_owned);
            let interval = data["recurring"]["interval"].as_str().unwrap_or("month");
            let price = Price {
                id: objects::new_id("price_", 24),
                product,
                currency: currency.to_lowercase(),
                unit_amount,
                interval: interval.to_owned(),
                usage_type: "licensed".to_owned(),
            };
            known.push(price.clone());
            price
        } else {
            return Err(missing(&param("price")));
        };
        if mode == "subscription" {
            match (price.usage_type.as_str(), quantity) {
                ("licensed", None) => {
                    return Err(error(
                        StatusCode::BAD_REQUEST,
                        "invalid_request_error",
                        Some("parameter_missing"),
                        Some(&param("quantity")),
                        &format!("Quantity is required. Add `quantity` to `line_items[{i}]`."),
                    ));
                }
                ("metered", Some(_)) => {
                    return Err(invalid(
                        &param("quantity"),
                        "Quantity should not be specified where usage_type is `metered`. Remove quantity from `line_items`.",
                    ));
                }
                _ => {}
            }
        }
        out.push(LineItem { price, quantity });
    }
    Ok(out)
}

async fn create_session(State(app): State<Shared>, body: Bytes) -> ApiResult {
    let form = form::parse(&body);
    only_known(&form, SESSION_CREATE_PARAMS)?;
    let mode = text(&form, "mode").ok_or_else(|| missing("mode"))?;
    if !["payment", "setup", "subscription"].contains(&mode) {
        return Err(invalid(
            "mode",
            &format!("Invalid mode: must be one of payment, setup, or subscription (got {mode})"),
        ));
    }
    let customer = text(&form, "customer").map(str::to_owned);
    let customer_email = text(&form, "customer_email").map(str::to_owned);
    if customer.is_some() && customer_email.is_some() {
        return Err(invalid(
            "customer_email",
            "You may only specify one of these parameters: customer, customer_email.",
        ));
    }
    let (success_url, cancel_url) = (valid_url(&form, "success_url")?, valid_url(&form, "cancel_url")?);
    let metadata = new_metadata(&form, "metadata")?;
    let subscription_metadata = match form.get("subscription_data") {
        Some(data) => new_metadata(data, "metadata")?,
        None => Map::new(),
    };
    let id = objects::session_id();
    let url = format!("{}/_sandbox/stripe/checkout/{id}", app.base_url);
    let mut state = app.lock();
    let s = &mut state.stripe;
    if let Some(customer) = &customer
        && !s.customers.iter().any(|c| c["id"] == customer.as_str())
    {
        return Err(no_such("customer", customer, "customer"));
    }
    let items = line_items(&form, &mut s.prices, mode)?;
    if items.is_empty() && mode != "setup" {
        return Err(missing("line_items"));
    }
    let new = NewSession {
        mode: mode.to_owned(),
        url,
        success_url,
        cancel_url,
        customer,
        customer_email,
        client_reference_id: text(&form, "client_reference_id").map(str::to_owned),
        metadata,
        line_items: items.clone(),
    };
    let object = objects::checkout_session(&id, Utc::now().timestamp(), new);
    s.checkout_sessions.push(Session { object: object.clone(), line_items: items, subscription_metadata });
    Ok(ok(object))
}

async fn get_session(State(app): State<Shared>, Path(id): Path<String>) -> ApiResult {
    let mut state = app.lock();
    let session = state.stripe.session_mut(&id).ok_or_else(|| no_such("checkout.session", &id, "id"))?;
    Ok(ok(session.object.clone()))
}

/// `POST /v1/checkout/sessions/{session}/expire` takes nothing but `expand` (Stripe's
/// description, operation `PostCheckoutSessionsSessionExpire`).
const SESSION_EXPIRE_PARAMS: &[&str] = &["expand"];

/// Stripe's refusal to expire a session that is not `open` (a 400 without a `code`; the wording
/// is Stripe's).
fn not_open(status: &str) -> ApiError {
    error(
        StatusCode::BAD_REQUEST,
        "invalid_request_error",
        None,
        None,
        &format!(
            "Only Checkout Sessions with a status in [\"open\"] can be expired. This Checkout Session has a status of `{status}`."
        ),
    )
}

/// `POST /v1/checkout/sessions/{id}/expire`: an `open` session becomes `expired` (its `url`
/// gone, so the hosted page can no longer be paid) and `checkout.session.expired` is emitted;
/// the answer is the session. Any other status is refused (400, the session unchanged); an
/// unknown session is `resource_missing` (404).
async fn expire_session(
    State(app): State<Shared>,
    Path(id): Path<String>,
    Extension(request): Extension<RequestId>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let form = form::parse(&body);
    only_known(&form, SESSION_EXPIRE_PARAMS)?;
    let now = Utc::now().timestamp();
    let mut state = app.lock();
    let session = state.stripe.session_mut(&id).ok_or_else(|| no_such("checkout.session", &id, "id"))?;
    let object = &mut session.object;
    if object["status"] != "open" {
        return Err(not_open(object["status"].as_str().unwrap_or_default()));
    }
    object["status"] = json!("expired");
    object["url"] = Value::Null;
    let expired = object.clone();
    let event = objects::event(
        "checkout.session.expired",
        expired.clone(),
        None,
        now,
        None,
        origin(&request, &headers),
    );
    emit(&app, &mut state, vec![event]);
    tracing::info!(session = %id, "stripe: checkout session expired");
    Ok(ok(expired))
}

// ---------------------------------------------------------------------------------------
// Subscriptions

#[rustfmt::skip]
const SUBSCRIPTION_UPDATE_PARAMS: &[&str] = &[
    "add_invoice_items", "application_fee_percent", "automatic_tax", "billing_cycle_anchor",
    "billing_schedules", "billing_thresholds", "cancel_at", "cancel_at_period_end", "cancellation_details",
    "collection_method", "days_until_due", "default_payment_method", "default_source", "default_tax_rates",
    "description", "discounts", "expand", "invoice_settings", "items", "metadata", "off_session",
    "on_behalf_of", "pause_collection", "payment_behavior", "payment_settings",
    "pending_invoice_item_interval", "proration_behavior", "proration_date", "transfer_data", "trial_end",
    "trial_from_plan", "trial_settings",
];
const SUBSCRIPTION_CANCEL_PARAMS: &[&str] = &["cancellation_details", "expand", "invoice_now", "prorate"];
#[rustfmt::skip]
const SUBSCRIPTION_LIST_PARAMS: &[&str] = &[
    "automatic_tax", "collection_method", "created", "current_period_end", "current_period_start", "customer",
    "customer_account", "ending_before", "expand", "limit", "price", "starting_after", "status", "test_clock",
];

async fn get_subscription(State(app): State<Shared>, Path(id): Path<String>) -> ApiResult {
    let mut state = app.lock();
    let sub = state.stripe.subscription_mut(&id).ok_or_else(|| no_such("subscription", &id, "id"))?;
    Ok(ok(sub.clone()))
}

/// A list request's query string, read as Stripe reads it (bracket nesting, as in bodies).
fn query_form(query: &[(String, String)]) -> Value {
    let encoded: String = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(query).finish();
    form::parse(encoded.as_bytes())
}

/// `status` values `GET /v1/subscriptions` takes (Stripe's description, operation
/// `GetSubscriptions`; `paused` is in Stripe's current reference, newer than the pinned file).
#[rustfmt::skip]
const SUBSCRIPTION_LIST_STATUSES: &[&str] = &[
    "active", "all", "canceled", "ended", "incomplete", "incomplete_expired", "past_due", "paused",
    "trialing", "unpaid",
];

/// `GET /v1/subscriptions`: see [`subscription_list`].
async fn list_subscriptions(
    State(app): State<Shared>,
    Query(query): Query<Vec<(String, String)>>,
) -> ApiResult {
    let form = query_form(&query);
    let state = app.lock();
    Ok(ok(subscription_list(&state.stripe.subscriptions, &form)?))
}

/// The list answer of `GET /v1/subscriptions` over `subscriptions` (recording order) for the
/// query `form`, as Stripe's description of `GetSubscriptions` says: newest first (`created`,
/// then the later recorded first); `customer`, `price` and `created` filter; without `status`
/// canceled subscriptions are left out, `status=all` keeps every one, `status=ended` the
/// canceled and `incomplete_expired` ones, any other value that status only; `limit` 1 to 100
/// (default 10); `starting_after` / `ending_before` (one of them) are ids of subscriptions that
/// mark a place in the whole list, even when the filters leave them out, and `has_more` says
/// whether more matching subscriptions lie beyond the page in the direction read. A customer
/// the sandbox does not know simply has none. Other known parameters are accepted and ignored.
fn subscription_list(subscriptions: &[Value], form: &Value) -> ApiResult<Value> {
    only_known(form, SUBSCRIPTION_LIST_PARAMS)?;
    let limit = integer(form.get("limit"), "limit")?.unwrap_or(10);
    if !(1..=100).contains(&limit) {
        let bound = if limit < 1 { "greater than or equal to 1" } else { "less than or equal to 100" };
        return Err(invalid("limit", &format!("This value must be {bound}.")));
    }
    let status = text(form, "status");
    if let Some(status) = status
        && !SUBSCRIPTION_LIST_STATUSES.contains(&status)
    {
        let (last, rest) = SUBSCRIPTION_LIST_STATUSES.split_last().unwrap_or((&"", &[]));
        return Err(invalid(
            "status",
            &format!("Invalid status: must be one of {}, or {last} (got {status})", rest.join(", ")),
        ));
    }
    let (customer, price) = (text(form, "customer"), text(form, "price"));
    let created = created_filter(form)?;
    let (after, before) = (text(form, "starting_after"), text(form, "ending_before"));
    if after.is_some() && before.is_some() {
        return Err(invalid(
            "ending_before",
            "You may only specify one of these parameters: ending_before, starting_after.",
        ));
    }
    // Newest first: `created` descending, then the later recorded first.
    let mut order: Vec<&Value> = subscriptions.iter().rev().collect();
    order.sort_by_key(|s| std::cmp::Reverse(s["created"].as_i64().unwrap_or(0)));
    let position = |param: &str, id: &str| {
        order.iter().position(|s| s["id"] == id).ok_or_else(|| no_such("subscription", id, param))
    };
    let cursor = match (after, before) {
        (Some(id), _) => Some((position("starting_after", id)?, true)),
        (_, Some(id)) => Some((position("ending_before", id)?, false)),
        _ => None,
    };
    let matching: Vec<&Value> = order
        .iter()
        .enumerate()
        .filter(|(at, _)| match cursor {
            Some((c, true)) => *at > c,
            Some((c, false)) => *at < c,
            None => true,
        })
        .map(|(_, s)| *s)
        .filter(|s| {
            let t = s["created"].as_i64().unwrap_or(0);
            let state = s["status"].as_str().unwrap_or_default();
            customer.is_none_or(|c| s["customer"] == c)
                && price.is_none_or(|p| {
                    s["items"]["data"]
                        .as_array()
                        .is_some_and(|items| items.iter().any(|i| i["price"]["id"] == p))
                })
                && in_range(&created, t)
                && match status {
                    None => state != "canceled",
                    Some("all") => true,
                    Some("ended") => matches!(state, "canceled" | "incomplete_expired"),
                    Some(wanted) => state == wanted,
                }
        })
        .collect();
    let take = usize::try_from(limit).unwrap_or(10);
    let has_more = matching.len() > take;
    // `ending_before` pages towards newer subscriptions: the `limit` just before the cursor.
    let page: Vec<&Value> = if matches!(cursor, Some((_, false))) {
        matching[matching.len().saturating_sub(take)..].to_vec()
    } else {
        matching.into_iter().take(take).collect()
    };
    Ok(json!({"object": "list", "url": "/v1/subscriptions", "has_more": has_more, "data": page}))
}

/// `POST /v1/subscriptions/{id}`: `cancel_at_period_end` and `metadata` take effect; other
/// known parameters are accepted and ignored. Emits `customer.subscription.updated` with
/// `previous_attributes` when something changed.
async fn update_subscription(
    State(app): State<Shared>,
    Path(id): Path<String>,
    Extension(request): Extension<RequestId>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let form = form::parse(&body);
    only_known(&form, SUBSCRIPTION_UPDATE_PARAMS)?;
    let cancel_at_period_end = boolean(form.get("cancel_at_period_end"), "cancel_at_period_end")?;
    let metadata = string_map(&form, "metadata")?;
    let now = Utc::now().timestamp();
    let mut state = app.lock();
    let sub = state.stripe.subscription_mut(&id).ok_or_else(|| no_such("subscription", &id, "id"))?;
    let allowed_when_canceled = ["metadata", "cancellation_details", "expand"];
    let touches_other =
        form.as_object().is_some_and(|m| m.keys().any(|k| !allowed_when_canceled.contains(&k.as_str())));
    if sub["status"] == "canceled" && touches_other {
        return Err(invalid(
            "id",
            "A canceled subscription can only update its cancellation_details and metadata.",
        ));
    }
    let mut previous = Map::new();
    if let Some(flag) = cancel_at_period_end
        && sub["cancel_at_period_end"] != flag
    {
        for key in ["cancel_at_period_end", "cancel_at", "canceled_at", "cancellation_details"] {
            previous.insert(key.to_owned(), sub[key].clone());
        }
        sub["cancel_at_period_end"] = json!(flag);
        if flag {
            sub["cancel_at"] = sub["current_period_end"].clone();
            sub["canceled_at"] = json!(now);
            sub["cancellation_details"]["reason"] = json!("cancellation_requested");
        } else {
            sub["cancel_at"] = Value::Null;
            sub["canceled_at"] = Value::Null;
            sub["cancellation_details"] = json!({"comment": null, "feedback": null, "reason": null});
        }
    }
    if let Some(update) = metadata {
        let changed = merge_metadata(&mut sub["metadata"], update);
        if !changed.is_empty() {
            previous.insert("metadata".to_owned(), Value::Object(changed));
        }
    }
    let sub = sub.clone();
    if !previous.is_empty() {
        let event = objects::event(
            "customer.subscription.updated",
            sub.clone(),
            Some(Value::Object(previous)),
            now,
            None,
            origin(&request, &headers),
        );
        emit(&app, &mut state, vec![event]);
    }
    Ok(ok(sub))
}

/// `DELETE /v1/subscriptions/{id}`: cancels now and emits `customer.subscription.deleted`.
async fn cancel_subscription(
    State(app): State<Shared>,
    Path(id): Path<String>,
    Extension(request): Extension<RequestId>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let form = form::parse(&body);
    only_known(&form, SUBSCRIPTION_CANCEL_PARAMS)?;
    let now = Utc::now().timestamp();
    let mut state = app.lock();
    let sub = state.stripe.subscription_mut(&id).ok_or_else(|| no_such("subscription", &id, "id"))?;
    if sub["status"] == "canceled" {
        return Err(invalid("id", &format!("This subscription has already been canceled: '{id}'")));
    }
    sub["status"] = json!("canceled");
    sub["canceled_at"] = json!(now);
    sub["ended_at"] = json!(now);
    sub["cancellation_details"]["reason"] = json!("cancellation_requested");
    for key in ["comment", "feedback"] {
        if let Some(value) = form["cancellation_details"][key].as_str().filter(|v| !v.is_empty()) {
            sub["cancellation_details"][key] = json!(value);
        }
    }
    let sub = sub.clone();
    let event = objects::event(
        "customer.subscription.deleted",
        sub.clone(),
        None,
        now,
        None,
        origin(&request, &headers),
    );
    emit(&app, &mut state, vec![event]);
    Ok(ok(sub))
}

// ---------------------------------------------------------------------------------------
// Invoices, events

async fn get_invoice(State(app): State<Shared>, Path(id): Path<String>) -> ApiResult {
    let mut state = app.lock();
    let invoice = state.stripe.invoice_mut(&id).ok_or_else(|| no_such("invoice", &id, "id"))?;
    Ok(ok(invoice.clone()))
}

const EVENT_LIST_PARAMS: &[&str] =
    &["created", "delivery_success", "ending_before", "expand", "limit", "starting_after", "type", "types"];
/// Stripe lists events of the last 30 days only.
const EVENT_LIST_WINDOW_SECS: i64 = 30 * 24 * 3600;
/// At most this many `types`.
const EVENT_TYPES_MAX: usize = 20;

/// `GET /v1/events`: the recorded events, newest first (`created`, then recording order), with
/// Stripe's filters and cursors.
async fn list_events(State(app): State<Shared>, Query(query): Query<Vec<(String, String)>>) -> ApiResult {
    let form = query_form(&query);
    let state = app.lock();
    Ok(ok(event_list(&state.stripe.events, &form, Utc::now().timestamp())?))
}

/// `*` in an event type pattern stands for any run of characters (`invoice.*`).
fn type_matches(pattern: &str, event_type: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = event_type.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// `created` as Stripe takes it: an exact time, or a range `created[gt|gte|lt|lte]`.
fn created_filter(form: &Value) -> ApiResult<Vec<(&'static str, i64)>> {
    match form.get("created") {
        None => Ok(Vec::new()),
        Some(Value::Object(range)) => {
            let mut bounds = Vec::new();
            for (key, value) in range {
                let op = match key.as_str() {
                    "gt" => "gt",
                    "gte" => "gte",
                    "lt" => "lt",
                    "lte" => "lte",
                    _ => {
                        let name = format!("created[{key}]");
                        return Err(error(
                            StatusCode::BAD_REQUEST,
                            "invalid_request_error",
                            Some("parameter_unknown"),
                            Some(&name),
                            &format!("Received unknown parameter: {name}"),
                        ));
                    }
                };
                if let Some(bound) = integer(Some(value), &format!("created[{key}]"))? {
                    bounds.push((op, bound));
                }
            }
            Ok(bounds)
        }
        Some(value) => Ok(integer(Some(value), "created")?.map(|t| ("eq", t)).into_iter().collect()),
    }
}

/// Whether the time `t` satisfies every bound `created_filter` read.
fn in_range(bounds: &[(&'static str, i64)], t: i64) -> bool {
    bounds.iter().all(|&(op, bound)| match op {
        "gt" => t > bound,
        "gte" => t >= bound,
        "lt" => t < bound,
        "lte" => t <= bound,
        _ => t == bound,
    })
}

/// The list answer of `GET /v1/events` over `events` (recording order, with their delivery
/// attempts) for the query `form`, at `now`.
fn event_list(events: &[(Value, Vec<Value>)], form: &Value, now: i64) -> ApiResult<Value> {
    only_known(form, EVENT_LIST_PARAMS)?;
    let limit = integer(form.get("limit"), "limit")?.unwrap_or(10);
    if !(1..=100).contains(&limit) {
        let bound = if limit < 1 { "greater than or equal to 1" } else { "less than or equal to 100" };
        return Err(invalid("limit", &format!("This value must be {bound}.")));
    }
    let created = created_filter(form)?;
    let delivery_success = boolean(form.get("delivery_success"), "delivery_success")?;
    let event_type = text(form, "type");
    let types: Option<Vec<&str>> = match form.get("types") {
        None => None,
        Some(Value::Array(list)) => Some(list.iter().filter_map(Value::as_str).collect()),
        Some(Value::String(s)) if s.is_empty() => None,
        Some(_) => return Err(invalid("types", "Invalid array")),
    };
    if event_type.is_some() && types.is_some() {
        return Err(invalid("types", "You may pass either `type` or `types`, but not both."));
    }
    if types.as_ref().is_some_and(|t| t.len() > EVENT_TYPES_MAX) {
        return Err(invalid("types", &format!("You may pass at most {EVENT_TYPES_MAX} `types`.")));
    }
    let (after, before) = (text(form, "starting_after"), text(form, "ending_before"));
    if after.is_some() && before.is_some() {
        return Err(invalid(
            "ending_before",
            "You may only specify one of these parameters: ending_before, starting_after.",
        ));
    }
    // Newest first: `created` descending, then the later recorded first.
    let mut order: Vec<usize> = (0..events.len()).rev().collect();
    order.sort_by_key(|&i| std::cmp::Reverse(events[i].0["created"].as_i64().unwrap_or(0)));
    let position = |param: &str, id: &str| {
        order.iter().position(|&i| events[i].0["id"] == id).ok_or_else(|| no_such("event", id, param))
    };
    let cursor = match (after, before) {
        (Some(id), _) => Some((position("starting_after", id)?, true)),
        (_, Some(id)) => Some((position("ending_before", id)?, false)),
        _ => None,
    };
    let matching: Vec<&Value> = order
        .iter()
        .enumerate()
        .filter(|(at, _)| match cursor {
            Some((c, true)) => *at > c,
            Some((c, false)) => *at < c,
            None => true,
        })
        .map(|(_, &i)| &events[i])
        .filter(|(event, deliveries)| {
            let t = event["created"].as_i64().unwrap_or(0);
            let event_name = event["type"].as_str().unwrap_or_default();
            t >= now - EVENT_LIST_WINDOW_SECS
                && in_range(&created, t)
                && event_type.is_none_or(|p| type_matches(p, event_name))
                && types.as_ref().is_none_or(|list| list.contains(&event_name))
                && delivery_success.is_none_or(|want| delivered(deliveries) == want)
        })
        .map(|(event, _)| event)
        .collect();
    let take = usize::try_from(limit).unwrap_or(10);
    let has_more = matching.len() > take;
    // `ending_before` pages towards newer events: the `limit` just before the cursor.
    let page: Vec<&Value> = if matches!(cursor, Some((_, false))) {
        matching[matching.len().saturating_sub(take)..].to_vec()
    } else {
        matching.into_iter().take(take).collect()
    };
    Ok(json!({"object": "list", "url": "/v1/events", "has_more": has_more, "data": page}))
}

async fn get_event(State(app): State<Shared>, Path(id): Path<String>) -> ApiResult {
    let state = app.lock();
    let (event, _) = state
        .stripe
        .events
        .iter()
        .find(|(e, _)| e["id"] == id.as_str())
        .ok_or_else(|| no_such("event", &id, "id"))?;
    Ok(ok(event.clone()))
}

// ---------------------------------------------------------------------------------------
// Billing meter events

const METER_EVENT_PARAMS: &[&str] = &["event_name", "expand", "identifier", "payload", "timestamp"];

/// `POST /v1/billing/meter_events`. Like Stripe, the customer in the payload is not checked
/// here (Stripe reports unknown customers later, asynchronously); identifiers are unique
/// for 24 hours.
async fn create_meter_event(State(app): State<Shared>, body: Bytes) -> ApiResult {
    let form = form::parse(&body);
    only_known(&form, METER_EVENT_PARAMS)?;
    let event_name = text(&form, "event_name").ok_or_else(|| missing("event_name"))?;
    let payload =
        string_map(&form, "payload")?.filter(|p| !p.is_empty()).ok_or_else(|| missing("payload"))?;
    for key in ["stripe_customer_id", "value"] {
        if payload.get(key).and_then(Value::as_str).is_none_or(str::is_empty) {
            return Err(missing(&format!("payload[{key}]")));
        }
    }
    if let Some(value) = payload["value"].as_str()
        && value.parse::<i64>().is_err()
    {
        return Err(invalid("payload[value]", &format!("Invalid integer: {value}")));
    }
    let now = Utc::now().timestamp();
    let timestamp = match integer(form.get("timestamp"), "timestamp")? {
        None => now,
        Some(t) if t >= now - 35 * 24 * 3600 && t <= now + 300 => t,
        Some(_) => {
            return Err(invalid(
                "timestamp",
                "Timestamp must be within the past 35 calendar days or up to 5 minutes in the future.",
            ));
        }
    };
    let identifier = text(&form, "identifier").map_or_else(|| objects::new_id("mtrevt_", 24), str::to_owned);
    let mut state = app.lock();
    let duplicate = state.stripe.meter_events.iter().any(|e| {
        e["identifier"] == identifier.as_str()
            && e["created"].as_i64().is_some_and(|c| now - c < IDENTIFIER_WINDOW_SECS)
    });
    if duplicate {
        let message = format!("An event already exists with identifier {identifier}.");
        return Err(ApiError { final_answer: true, ..invalid("identifier", &message) });
    }
    let event = objects::meter_event(event_name, &identifier, payload, now, timestamp);
    state.stripe.meter_events.push(event.clone());
    Ok(ok(event))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_merge_reports_previous_values() {
        let mut target = json!({"a": "1", "b": "2"});
        let update = json!({"a": "", "b": "3", "c": "4"}).as_object().cloned().unwrap();
        let previous = merge_metadata(&mut target, update);
        assert_eq!(target, json!({"b": "3", "c": "4"}));
        assert_eq!(Value::Object(previous), json!({"a": "1", "b": "2", "c": null}));
        let previous = merge_metadata(&mut target, Map::new());
        assert_eq!((target, previous.len()), (json!({}), 2));
    }

    /// A recorded event and its attempts (`None`: the receiver could not be reached).
    fn recorded(id: &str, event_type: &str, created: i64, attempts: &[Option<u16>]) -> (Value, Vec<Value>) {
        let event = json!({"id": id, "object": "event", "type": event_type, "created": created});
        (event, attempts.iter().map(|s| json!({"status": s, "at": "2026-01-01T00:00:00Z"})).collect())
    }

    const NOW: i64 = 1_800_000_000;

    fn list(events: &[(Value, Vec<Value>)], query: &str) -> ApiResult<Value> {
        event_list(events, &form::parse(query.as_bytes()), NOW)
    }

    fn ids(list: &Value) -> Vec<&str> {
        list["data"].as_array().unwrap().iter().map(|e| e["id"].as_str().unwrap()).collect()
    }

    fn refusal(result: ApiResult<Value>) -> (StatusCode, Option<&'static str>, Option<String>) {
        let error = result.unwrap_err();
        (error.status, error.code, error.param)
    }

    #[test]
    fn events_filter_by_delivery_success() {
        let events = [
            recorded("evt_ok", "invoice.paid", NOW - 40, &[Some(500), Some(200)]),
            recorded("evt_failed", "invoice.paid", NOW - 30, &[Some(500), Some(503)]),
            recorded("evt_pending", "invoice.paid", NOW - 20, &[]),
            recorded("evt_unreachable", "invoice.paid", NOW - 10, &[None]),
        ];
        let all = list(&events, "").unwrap();
        assert_eq!(ids(&all), ["evt_unreachable", "evt_pending", "evt_failed", "evt_ok"]);
        assert_eq!((all["object"].as_str(), all["url"].as_str()), (Some("list"), Some("/v1/events")));
        assert_eq!(all["has_more"], false);
        assert_eq!(ids(&list(&events, "delivery_success=true").unwrap()), ["evt_ok"]);
        assert_eq!(
            ids(&list(&events, "delivery_success=false").unwrap()),
            ["evt_unreachable", "evt_pending", "evt_failed"]
        );
        let (status, _, param) = refusal(list(&events, "delivery_success=maybe"));
        assert_eq!((status, param.as_deref()), (StatusCode::BAD_REQUEST, Some("delivery_success")));
    }

    #[test]
    fn events_filter_by_created() {
        let events: Vec<_> =
            (1..=5).map(|i| recorded(&format!("evt_{i}"), "invoice.paid", NOW - 100 + i, &[])).collect();
        assert_eq!(ids(&list(&events, &format!("created={}", NOW - 97)).unwrap()), ["evt_3"]);
        let range = format!("created[gt]={}&created[lte]={}", NOW - 99, NOW - 96);
        assert_eq!(ids(&list(&events, &range).unwrap()), ["evt_4", "evt_3", "evt_2"]);
        let range = format!("created%5Bgte%5D={}&created%5Blt%5D={}", NOW - 96, NOW);
        assert_eq!(ids(&list(&events, &range).unwrap()), ["evt_5", "evt_4"]);
        assert_eq!(
            refusal(list(&events, "created[gt]=yesterday")),
            (StatusCode::BAD_REQUEST, Some("parameter_invalid_integer"), Some("created[gt]".to_owned()))
        );
        assert_eq!(
            refusal(list(&events, "created=soon")),
            (StatusCode::BAD_REQUEST, Some("parameter_invalid_integer"), Some("created".to_owned()))
        );
        assert_eq!(
            refusal(list(&events, "created[after]=1")),
            (StatusCode::BAD_REQUEST, Some("parameter_unknown"), Some("created[after]".to_owned()))
        );
        // Stripe lists the last 30 days only.
        let old = [recorded("evt_old", "invoice.paid", NOW - 31 * 24 * 3600, &[])];
        assert_eq!(ids(&list(&old, "").unwrap()), Vec::<&str>::new());
    }

    #[test]
    fn events_filter_by_type_and_types() {
        let events = [
            recorded("evt_1", "checkout.session.completed", NOW - 4, &[]),
            recorded("evt_2", "invoice.paid", NOW - 3, &[]),
            recorded("evt_3", "invoice.payment_failed", NOW - 2, &[]),
            recorded("evt_4", "customer.subscription.updated", NOW - 1, &[]),
        ];
        assert_eq!(ids(&list(&events, "type=invoice.paid").unwrap()), ["evt_2"]);
        assert_eq!(ids(&list(&events, "type=invoice.*").unwrap()), ["evt_3", "evt_2"]);
        assert_eq!(ids(&list(&events, "type=*.completed").unwrap()), ["evt_1"]);
        assert_eq!(ids(&list(&events, "type=customer.*.updated").unwrap()), ["evt_4"]);
        assert_eq!(ids(&list(&events, "type=invoice").unwrap()), Vec::<&str>::new());
        let query = "types[]=invoice.paid&types[]=checkout.session.completed";
        assert_eq!(ids(&list(&events, query).unwrap()), ["evt_2", "evt_1"]);
        assert_eq!(ids(&list(&events, "types[0]=invoice.paid").unwrap()), ["evt_2"]);
        let (status, _, _) = refusal(list(&events, "type=invoice.*&types[]=invoice.paid"));
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let many: String = (0..21).map(|i| format!("types[]=t{i}&")).collect();
        assert_eq!(refusal(list(&events, &many)).2.as_deref(), Some("types"));
        assert_eq!(
            refusal(list(&events, "kind=invoice.paid")),
            (StatusCode::BAD_REQUEST, Some("parameter_unknown"), Some("kind".to_owned()))
        );
    }

    #[test]
    fn events_paginate_newest_first() {
        // evt_2 and evt_3 share a second: the later recorded comes first.
        let events = [
            recorded("evt_1", "invoice.paid", NOW - 30, &[]),
            recorded("evt_2", "invoice.paid", NOW - 20, &[]),
            recorded("evt_3", "invoice.paid", NOW - 20, &[]),
            recorded("evt_4", "invoice.paid", NOW - 10, &[]),
            recorded("evt_5", "invoice.paid", NOW - 5, &[]),
        ];
        let first = list(&events, "limit=2").unwrap();
        assert_eq!((ids(&first), first["has_more"].as_bool()), (vec!["evt_5", "evt_4"], Some(true)));
        let second = list(&events, "limit=2&starting_after=evt_4").unwrap();
        assert_eq!((ids(&second), second["has_more"].as_bool()), (vec!["evt_3", "evt_2"], Some(true)));
        let last = list(&events, "limit=2&starting_after=evt_2").unwrap();
        assert_eq!((ids(&last), last["has_more"].as_bool()), (vec!["evt_1"], Some(false)));
        let back = list(&events, "limit=2&ending_before=evt_2").unwrap();
        assert_eq!((ids(&back), back["has_more"].as_bool()), (vec!["evt_4", "evt_3"], Some(true)));
        let back = list(&events, "limit=2&ending_before=evt_4").unwrap();
        assert_eq!((ids(&back), back["has_more"].as_bool()), (vec!["evt_5"], Some(false)));
        assert_eq!(ids(&list(&events, "").unwrap()).len(), 5);
        // A cursor filtered out still marks its place.
        let filtered = list(&events, "limit=10&starting_after=evt_4&delivery_success=true").unwrap();
        assert_eq!(ids(&filtered), Vec::<&str>::new());
        assert_eq!(
            refusal(list(&events, "starting_after=evt_nope")),
            (StatusCode::BAD_REQUEST, Some("resource_missing"), Some("starting_after".to_owned()))
        );
        assert_eq!(refusal(list(&events, "ending_before=evt_nope")).2.as_deref(), Some("ending_before"));
        assert_eq!(
            refusal(list(&events, "starting_after=evt_1&ending_before=evt_5")).0,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(refusal(list(&events, "limit=0")).2.as_deref(), Some("limit"));
        assert_eq!(refusal(list(&events, "limit=101")).2.as_deref(), Some("limit"));
        assert_eq!(refusal(list(&events, "limit=ten")).1, Some("parameter_invalid_integer"));
    }

    /// A recorded subscription of `customer` (one item of `price`).
    fn sub(id: &str, customer: &str, status: &str, created: i64, price: &str) -> Value {
        json!({"id": id, "object": "subscription", "customer": customer, "status": status,
            "created": created, "items": {"object": "list", "data": [{"price": {"id": price}, "quantity": 1}]}})
    }

    fn subs(subscriptions: &[Value], query: &str) -> ApiResult<Value> {
        subscription_list(subscriptions, &form::parse(query.as_bytes()))
    }

    #[test]
    fn subscriptions_filter_by_customer_status_and_price() {
        let all = [
            sub("sub_1", "cus_a", "active", NOW - 50, "price_seat"),
            sub("sub_2", "cus_a", "canceled", NOW - 40, "price_seat"),
            sub("sub_3", "cus_b", "past_due", NOW - 30, "price_seat"),
            sub("sub_4", "cus_a", "incomplete_expired", NOW - 20, "price_other"),
            sub("sub_5", "cus_a", "trialing", NOW - 10, "price_other"),
        ];
        let listed = subs(&all, "customer=cus_a").unwrap();
        assert_eq!(
            (listed["object"].as_str(), listed["url"].as_str()),
            (Some("list"), Some("/v1/subscriptions"))
        );
        // Without `status`, canceled subscriptions are left out.
        assert_eq!(ids(&listed), ["sub_5", "sub_4", "sub_1"]);
        assert_eq!(
            ids(&subs(&all, "customer=cus_a&status=all").unwrap()),
            ["sub_5", "sub_4", "sub_2", "sub_1"]
        );
        assert_eq!(ids(&subs(&all, "customer=cus_a&status=canceled").unwrap()), ["sub_2"]);
        assert_eq!(ids(&subs(&all, "status=ended").unwrap()), ["sub_4", "sub_2"]);
        assert_eq!(ids(&subs(&all, "status=past_due").unwrap()), ["sub_3"]);
        assert_eq!(ids(&subs(&all, "status=all&price=price_other").unwrap()), ["sub_5", "sub_4"]);
        assert_eq!(ids(&subs(&all, &format!("status=all&created[gte]={}", NOW - 30)).unwrap()).len(), 3);
        // A customer with no subscriptions (or unknown here) has an empty list.
        let none = subs(&all, "customer=cus_nobody&status=all").unwrap();
        assert_eq!((ids(&none), none["has_more"].as_bool()), (Vec::<&str>::new(), Some(false)));
        assert_eq!(
            refusal(subs(&all, "status=gone")),
            (StatusCode::BAD_REQUEST, None, Some("status".to_owned()))
        );
        assert_eq!(
            refusal(subs(&all, "plan=price_seat")),
            (StatusCode::BAD_REQUEST, Some("parameter_unknown"), Some("plan".to_owned()))
        );
    }

    #[test]
    fn subscriptions_paginate_newest_first() {
        // sub_2 and sub_3 share a second: the later recorded comes first. sub_x is another
        // customer's, sub_c canceled.
        let all = [
            sub("sub_1", "cus_a", "active", NOW - 30, "price_seat"),
            sub("sub_2", "cus_a", "active", NOW - 20, "price_seat"),
            sub("sub_x", "cus_b", "active", NOW - 20, "price_seat"),
            sub("sub_3", "cus_a", "past_due", NOW - 20, "price_seat"),
            sub("sub_c", "cus_a", "canceled", NOW - 15, "price_seat"),
            sub("sub_4", "cus_a", "active", NOW - 10, "price_seat"),
            sub("sub_5", "cus_a", "unpaid", NOW - 5, "price_seat"),
        ];
        let page = |query: &str| {
            let list = subs(&all, &format!("customer=cus_a&{query}")).unwrap();
            (
                ids(&list).into_iter().map(str::to_owned).collect::<Vec<_>>(),
                list["has_more"].as_bool().unwrap(),
            )
        };
        assert_eq!(page("limit=2"), (vec!["sub_5".into(), "sub_4".into()], true));
        assert_eq!(page("limit=2&starting_after=sub_4"), (vec!["sub_3".into(), "sub_2".into()], true));
        assert_eq!(page("limit=2&starting_after=sub_2"), (vec!["sub_1".into()], false));
        assert_eq!(page("limit=3&starting_after=sub_2"), (vec!["sub_1".into()], false));
        // Exactly `limit` left: no more.
        assert_eq!(
            page("limit=3&starting_after=sub_4"),
            (vec!["sub_3".into(), "sub_2".into(), "sub_1".into()], false)
        );
        assert_eq!(
            page("status=all&limit=2&starting_after=sub_4"),
            (vec!["sub_c".into(), "sub_3".into()], true)
        );
        assert_eq!(page("status=all&limit=2&ending_before=sub_4"), (vec!["sub_5".into()], false));
        assert_eq!(
            page("status=all&limit=2&ending_before=sub_3"),
            (vec!["sub_4".into(), "sub_c".into()], true)
        );
        // Following `has_more` with the last id reads every matching subscription once.
        let (mut seen, mut after) = (Vec::new(), None::<String>);
        loop {
            let query = match &after {
                Some(last) => format!("status=all&limit=2&starting_after={last}"),
                None => "status=all&limit=2".to_owned(),
            };
            let (ids, more) = page(&query);
            after = ids.last().cloned();
            seen.extend(ids);
            if !more {
                break;
            }
        }
        assert_eq!(seen, ["sub_5", "sub_4", "sub_c", "sub_3", "sub_2", "sub_1"]);
        // A cursor the filters leave out still marks its place: another customer's, or a
        // canceled one without `status`.
        assert_eq!(page("starting_after=sub_x"), (vec!["sub_2".into(), "sub_1".into()], false));
        assert_eq!(
            page("starting_after=sub_c"),
            (vec!["sub_3".into(), "sub_2".into(), "sub_1".into()], false)
        );
        assert_eq!(
            refusal(subs(&all, "starting_after=sub_nope")),
            (StatusCode::BAD_REQUEST, Some("resource_missing"), Some("starting_after".to_owned()))
        );
        assert_eq!(refusal(subs(&all, "ending_before=sub_nope")).2.as_deref(), Some("ending_before"));
        assert_eq!(
            refusal(subs(&all, "starting_after=sub_1&ending_before=sub_5")).0,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(refusal(subs(&all, "limit=0")).2.as_deref(), Some("limit"));
        assert_eq!(refusal(subs(&all, "limit=101")).2.as_deref(), Some("limit"));
        assert_eq!(refusal(subs(&all, "limit=ten")).1, Some("parameter_invalid_integer"));
        // Default page size 10, at most 100.
        let many: Vec<Value> =
            (0..105).map(|i| sub(&format!("sub_{i:03}"), "cus_m", "active", NOW - 200 + i, "p")).collect();
        let first = subs(&many, "customer=cus_m").unwrap();
        assert_eq!((ids(&first).len(), first["has_more"].as_bool()), (10, Some(true)));
        let full = subs(&many, "customer=cus_m&limit=100").unwrap();
        assert_eq!(
            (ids(&full).len(), ids(&full)[0], full["has_more"].as_bool()),
            (100, "sub_104", Some(true))
        );
        let rest = subs(&many, "customer=cus_m&limit=100&starting_after=sub_005").unwrap();
        assert_eq!(
            (ids(&rest), rest["has_more"].as_bool()),
            (vec!["sub_004", "sub_003", "sub_002", "sub_001", "sub_000"], Some(false))
        );
    }

    #[test]
    fn unknown_parameters_are_named() {
        let form = form::parse(b"email=a@b.c&emial=x");
        let error = only_known(&form, CUSTOMER_CREATE_PARAMS).unwrap_err();
        assert_eq!(
            (error.status, error.code, error.param.as_deref()),
            (StatusCode::BAD_REQUEST, Some("parameter_unknown"), Some("emial"))
        );
    }
}
