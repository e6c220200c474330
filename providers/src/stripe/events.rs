//! Stripe's event log (`GET /v1/events`) and the one way a missed event reaches Slipway again:
//! re-signed and posted to Slipway's own Stripe webhook endpoint.
//!
//! Why the catch-up posts to the starter instead of calling Temporal itself: the webhook path
//! (signature, one parse, the same mapping, the same signal-with-starts, the same dedupe by
//! event id) is then *exactly* the path every live event takes; no second copy of it can drift. The worker holds the
//! endpoint's signing secret (`STRIPE_WEBHOOK_SECRET`) for that, as Stripe does.
//!
//! Facts relied on (Stripe API reference, "List all events"; guide "Process undelivered webhook
//! events"): events are kept 30 days; the list is newest first, paged with `starting_after`
//! and `has_more`, at most 100 per page; `delivery_success=false` lists the events still pending
//! or whose delivery to an endpoint failed; `types[]` (up to 20) and `created[gte|lte]` filter.
//!
//! Hand-written over the shared HTTP layer rather than async-stripe's typed `ListEvent`: the
//! catch-up needs each event's JSON as Stripe wrote it, to hand it on to the webhook endpoint
//! unchanged, and async-stripe's `Event` would re-serialize its own model of it.

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::Value;

use super::webhook::{SIGNATURE_HEADER, signature_header};
use crate::error::ClientError;
use crate::http::Http;

/// Stripe's list page size limit.
const PAGE: u32 = 100;
/// Stripe's cap on `types[]`.
const MAX_TYPES: usize = 20;

fn parse_error(v: &Value) -> (Option<String>, Option<String>) {
    let e = &v["error"];
    (e["code"].as_str().map(str::to_owned), e["message"].as_str().map(str::to_owned))
}

/// Stripe's event log.
#[derive(Debug, Clone)]
pub struct StripeEvents {
    http: Http,
    key: SecretString,
}

/// An event as listed.
#[derive(Debug, Clone, PartialEq)]
pub struct ListedEvent {
    /// `evt_…`.
    pub id: String,
    /// Its type.
    pub kind: String,
    /// Unix seconds.
    pub created: i64,
    /// The event object, as JSON text.
    pub json: String,
}

#[derive(Deserialize)]
struct Page {
    data: Vec<Value>,
    has_more: bool,
}

impl StripeEvents {
    /// A client for `base_url` (e.g. `https://api.stripe.com`).
    pub fn new(base_url: &str, secret_key: &SecretString) -> Result<Self, ClientError> {
        let http = Http::new("stripe", base_url, std::time::Duration::from_secs(30), parse_error)?;
        Ok(Self { http, key: secret_key.clone() })
    }

    /// Every event of `types` created in `[from, until]` whose delivery has not succeeded
    /// (`delivery_success=false`), oldest first.
    pub async fn undelivered(
        &self,
        types: &[&str],
        from: i64,
        until: i64,
    ) -> Result<Vec<ListedEvent>, ClientError> {
        let mut events = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let mut query: Vec<(String, String)> = vec![
                ("delivery_success".into(), "false".into()),
                ("created[gte]".into(), from.to_string()),
                ("created[lte]".into(), until.to_string()),
                ("limit".into(), PAGE.to_string()),
            ];
            query.extend(types.iter().take(MAX_TYPES).map(|t| ("types[]".to_owned(), (*t).to_owned())));
            if let Some(id) = &after {
                query.push(("starting_after".into(), id.clone()));
            }
            let req = self
                .http
                .request(reqwest::Method::GET, "/v1/events")
                .bearer_auth(self.key.expose_secret())
                .query(&query);
            let page: Page = self.http.json(req).await?;
            after = page.data.last().and_then(|e| e["id"].as_str()).map(str::to_owned);
            for event in page.data {
                let (Some(id), Some(kind), Some(created)) =
                    (event["id"].as_str(), event["type"].as_str(), event["created"].as_i64())
                else {
                    return Err(ClientError::Decode {
                        provider: "stripe",
                        message: "an event without id, type or created".into(),
                    });
                };
                events.push(ListedEvent {
                    id: id.to_owned(),
                    kind: kind.to_owned(),
                    created,
                    json: event.to_string(),
                });
            }
            if !page.has_more || after.is_none() {
                break;
            }
        }
        // Newest first as listed; Stripe's order inside one second is kept, reversed.
        events.reverse();
        events.sort_by_key(|e| e.created);
        Ok(events)
    }
}

/// Slipway's own Stripe webhook endpoint, as Stripe would call it.
#[derive(Debug, Clone)]
pub struct WebhookEndpoint {
    http: Http,
    secret: SecretString,
}

/// How the endpoint answered a redelivered event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redelivered {
    /// 2xx: accepted (applied now, or already applied before).
    Accepted,
    /// Refused for good (a 4xx that will not change): status and the body's `code`.
    Refused {
        /// HTTP status.
        status: u16,
        /// The error body's stable `code`.
        code: Option<String>,
    },
}

fn endpoint_error(v: &Value) -> (Option<String>, Option<String>) {
    (v["code"].as_str().map(str::to_owned), v["message"].as_str().map(str::to_owned))
}

impl WebhookEndpoint {
    /// The endpoint at `url` (e.g. `https://slipway.example.com/webhooks/stripe`), signing with
    /// its `STRIPE_WEBHOOK_SECRET`.
    pub fn new(url: &str, secret: SecretString) -> Result<Self, ClientError> {
        let http = Http::new("slipway-starter", url, std::time::Duration::from_secs(30), endpoint_error)?;
        Ok(Self { http, secret })
    }

    /// Posts `event_json` signed now, as Stripe posts a delivery. Transient answers (a 409
    /// conflict, which the starter answered while a paid checkout's user had a provisioning in
    /// flight and may answer again for a future conflict, 429, 5xx, no answer) are errors to
    /// retry.
    pub async fn redeliver(&self, event_json: &str, now: i64) -> Result<Redelivered, ClientError> {
        let signature = signature_header(event_json, self.secret.expose_secret(), now);
        let req = self
            .http
            .request(reqwest::Method::POST, "")
            .header("content-type", "application/json; charset=utf-8")
            .header(SIGNATURE_HEADER, signature)
            .body(event_json.to_owned());
        match self.http.send(req).await {
            Ok(_) => Ok(Redelivered::Accepted),
            Err(ClientError::Api(f))
                if f.status != 409
                    && crate::error::classify_status(f.status, None) == crate::error::Retry::Permanent =>
            {
                Ok(Redelivered::Refused { status: f.status, code: f.code.clone() })
            }
            Err(e) => Err(e),
        }
    }
}
