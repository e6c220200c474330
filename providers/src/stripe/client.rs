//! Stripe API client, through the ecosystem's `async-stripe` crates.
//!
//! Facts relied on (Stripe API reference):
//! - Mutating requests take an `Idempotency-Key` (≤ 255 chars, kept ≥ 24 h): Slipway derives it
//!   from what it is doing (e.g. the workflow and step), so a retried activity never creates
//!   twice.
//! - Errors: 429 (rate limit: 100 req/s live, 25 req/s test) and 5xx are transient; other 4xx
//!   are permanent. async-stripe reports the status with the decoded error body.
//! - `api_base` is configuration: `https://api.stripe.com/` in production, the sandbox in dev.
//! - Only an `open` Checkout Session can be expired (`POST /v1/checkout/sessions/{id}/expire`);
//!   any other is refused with a 400 `invalid_request_error` whose message is prose, not a code,
//!   so the session's status is read back rather than the message parsed.
//! - `GET /v1/subscriptions` lists newest first, at most 100 a page (`limit`), with `has_more`
//!   when another page follows, read with `starting_after=<last id of this page>`. Without
//!   `status` it leaves canceled subscriptions out; `status=all` lists every status.

use std::collections::HashMap;

use secrecy::{ExposeSecret, SecretString};
use stripe::{IdempotencyKey, RequestStrategy, StripeError, StripeRequest};
use stripe_billing::{
    billing_meter_event::CreateBillingMeterEvent,
    subscription::{ListSubscription, ListSubscriptionStatus, RetrieveSubscription},
};
use stripe_checkout::checkout_session::{
    CreateCheckoutSession, CreateCheckoutSessionLineItems, CreateCheckoutSessionSubscriptionData,
    ExpireCheckoutSession, RetrieveCheckoutSession,
};
use stripe_shared::{ApiErrorsType, CheckoutSession, Subscription};

use crate::error::{ApiFailure, ClientError};

const PROVIDER: &str = "stripe";

/// Stripe client.
#[derive(Clone)]
pub struct StripeClient {
    client: stripe::Client,
}

impl std::fmt::Debug for StripeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StripeClient(..)")
    }
}

/// What a subscription Checkout Session is for.
#[derive(Debug, Clone)]
pub struct NewCheckout {
    /// Slipway user (also `client_reference_id`).
    pub user_id: String,
    /// Existing customer to attach, if the user already has one.
    pub customer_id: Option<String>,
    /// Price of the subscription.
    pub price_id: String,
    /// Metadata (`userId`, `agentId`, `region`): echoed in `checkout.session.completed`.
    pub metadata: HashMap<String, String>,
    /// Return URLs.
    pub success_url: String,
    /// Return URL when abandoned.
    pub cancel_url: String,
    /// Idempotency key.
    pub idempotency_key: Option<String>,
}

/// A created Checkout Session.
#[derive(Debug, Clone)]
pub struct CreatedCheckout {
    /// `cs_…`.
    pub id: String,
    /// Hosted page the customer pays on.
    pub url: String,
    /// When the session expires unpaid (Unix seconds).
    pub expires_at: i64,
}

/// A Checkout Session after Slipway asked Stripe to expire it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpiredCheckout {
    /// `expired` (by this call or before it), or `complete` when the customer paid before the
    /// session could be expired.
    pub status: String,
    /// The paying customer, when Stripe knows one.
    pub customer_id: Option<String>,
    /// The subscription the session created, if any (subscription mode, once complete).
    pub subscription_id: Option<String>,
}

impl ExpiredCheckout {
    fn from_session(session: &CheckoutSession) -> Self {
        Self {
            status: session.status.as_ref().map(|s| s.as_str().to_owned()).unwrap_or_default(),
            customer_id: session.customer.as_ref().map(|c| c.id().as_str().to_owned()),
            subscription_id: session.subscription.as_ref().map(|s| s.id().as_str().to_owned()),
        }
    }
}

fn map_err(e: StripeError) -> ClientError {
    match e {
        StripeError::Stripe(body, status) => ClientError::Api(Box::new(ApiFailure {
            provider: PROVIDER,
            method: "-".into(),
            path: "-".into(),
            status,
            code: body.code.as_ref().map(|c| format!("{c:?}")),
            message: body.message.clone().unwrap_or_else(|| "Stripe error".into()),
            retry_after: None,
        })),
        StripeError::JSONDeserialize(message) => ClientError::Decode { provider: PROVIDER, message },
        StripeError::ConfigError(m) => ClientError::Configuration(m),
        StripeError::ClientError(message) => ClientError::Unreachable { provider: PROVIDER, message },
        StripeError::Timeout => ClientError::Unreachable { provider: PROVIDER, message: "timed out".into() },
    }
}

/// A subscription's status and seats: the summed `quantity` of its licensed items (metered
/// items carry none).
fn status_and_seats(sub: &Subscription) -> (String, u32) {
    let seats: u64 = sub
        .items
        .data
        .iter()
        .filter(|i| i.price.recurring.as_ref().is_none_or(|r| r.usage_type.as_str() != "metered"))
        .filter_map(|i| i.quantity)
        .sum();
    (sub.status.as_str().to_owned(), u32::try_from(seats).unwrap_or(u32::MAX))
}

impl StripeClient {
    /// A client for `base_url` (e.g. `https://api.stripe.com`).
    pub fn new(base_url: &str, secret_key: &SecretString) -> Result<Self, ClientError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        // async-stripe appends `v1/<path>` to the base, which must end with a slash.
        let base = format!("{}/", base_url.trim_end_matches('/'));
        let client = stripe::ClientBuilder::new(secret_key.expose_secret())
            .url(base)
            .build()
            .map_err(|e| ClientError::Configuration(format!("Stripe client: {e}")))?;
        Ok(Self { client })
    }

    /// Current status of a subscription (`active`, `past_due`, `canceled`, …).
    pub async fn subscription_status(&self, subscription_id: &str) -> Result<String, ClientError> {
        let sub = RetrieveSubscription::new(subscription_id).send(&self.client).await.map_err(map_err)?;
        Ok(sub.status.as_str().to_owned())
    }

    /// Current status and seats of a subscription: the seats are the summed `quantity` of its
    /// licensed items (metered items carry none), as the webhook reading counts them.
    pub async fn subscription_snapshot(&self, subscription_id: &str) -> Result<(String, u32), ClientError> {
        let sub = RetrieveSubscription::new(subscription_id).send(&self.client).await.map_err(map_err)?;
        Ok(status_and_seats(&sub))
    }

    /// Every subscription of a customer, whatever its status (`status=all`, so canceled ones
    /// too), as `(id, status, seats)`, newest first: the pages of `GET /v1/subscriptions`, 100
    /// at a time, followed until Stripe says there are no more. Seats are counted as
    /// [`Self::subscription_snapshot`] counts them.
    pub async fn customer_subscriptions(
        &self,
        customer_id: &str,
    ) -> Result<Vec<(String, String, u32)>, ClientError> {
        const PAGE: i64 = 100;
        let mut listed = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let mut request =
                ListSubscription::new().customer(customer_id).status(ListSubscriptionStatus::All).limit(PAGE);
            if let Some(last) = after.take() {
                request = request.starting_after(last);
            }
            let page = request.send(&self.client).await.map_err(map_err)?;
            for sub in &page.data {
                let (status, seats) = status_and_seats(sub);
                listed.push((sub.id.as_str().to_owned(), status, seats));
            }
            // `has_more` with an empty page would ask for the same page again: stop instead.
            match page.data.last() {
                Some(last) if page.has_more => after = Some(last.id.as_str().to_owned()),
                _ => return Ok(listed),
            }
        }
    }

    /// Report usage as a Billing meter event. `identifier` makes Stripe drop a repeat within
    /// 24 h; a repeat it rejects as a duplicate counts as reported.
    pub async fn meter_event(
        &self,
        event_name: &str,
        customer_id: &str,
        value: u64,
        identifier: &str,
    ) -> Result<(), ClientError> {
        let payload = HashMap::from([
            ("stripe_customer_id".to_owned(), customer_id.to_owned()),
            ("value".to_owned(), value.to_string()),
        ]);
        let result =
            CreateBillingMeterEvent::new(event_name, payload).identifier(identifier).send(&self.client).await;
        match result {
            Ok(_) => Ok(()),
            Err(StripeError::Stripe(body, 400))
                if body.message.as_deref().is_some_and(|m| m.contains("already exists with identifier")) =>
            {
                Ok(())
            }
            Err(e) => Err(map_err(e)),
        }
    }

    /// Create a subscription-mode Checkout Session.
    pub async fn create_checkout(&self, req: &NewCheckout) -> Result<CreatedCheckout, ClientError> {
        let mut item = CreateCheckoutSessionLineItems::new();
        item.price = Some(req.price_id.clone());
        item.quantity = Some(1);
        let mut sub_data = CreateCheckoutSessionSubscriptionData::new();
        sub_data.metadata = Some(req.metadata.clone());
        let mut create = CreateCheckoutSession::new()
            .mode(stripe_shared::CheckoutSessionMode::Subscription)
            .line_items(vec![item])
            .client_reference_id(req.user_id.clone())
            .metadata(req.metadata.clone())
            .subscription_data(sub_data)
            .success_url(req.success_url.clone())
            .cancel_url(req.cancel_url.clone());
        if let Some(c) = &req.customer_id {
            create = create.customer(c.clone());
        }
        let mut call = create.customize();
        if let Some(key) = &req.idempotency_key {
            let key = IdempotencyKey::new(key).map_err(|e| ClientError::Configuration(e.to_string()))?;
            call = call.request_strategy(RequestStrategy::Idempotent(key));
        }
        let session = call.send(&self.client).await.map_err(map_err)?;
        Ok(CreatedCheckout {
            id: session.id.as_str().to_owned(),
            url: session.url.unwrap_or_default(),
            expires_at: session.expires_at,
        })
    }

    /// Expire an open Checkout Session, so its customer can no longer pay it. A session that is
    /// not open any more (already expired, or completed) is not an error: Stripe refuses the call
    /// (400 `invalid_request_error`) and its actual status is read and returned instead. The
    /// idempotency key is derived from the session, so a retried call replays Stripe's answer.
    pub async fn expire_checkout_session(&self, session_id: &str) -> Result<ExpiredCheckout, ClientError> {
        let key = IdempotencyKey::new(format!("slipway-expire-{session_id}"))
            .map_err(|e| ClientError::Configuration(e.to_string()))?;
        let result = ExpireCheckoutSession::new(session_id)
            .customize()
            .request_strategy(RequestStrategy::Idempotent(key))
            .send(&self.client)
            .await;
        match result {
            Ok(session) => Ok(ExpiredCheckout::from_session(&session)),
            Err(StripeError::Stripe(body, 400)) if body.type_ == ApiErrorsType::InvalidRequestError => {
                let session =
                    RetrieveCheckoutSession::new(session_id).send(&self.client).await.map_err(map_err)?;
                let current = ExpiredCheckout::from_session(&session);
                // Still open (or unknown): the refusal was about something else; report it.
                if current.status.is_empty() || current.status == "open" {
                    return Err(map_err(StripeError::Stripe(body, 400)));
                }
                Ok(current)
            }
            Err(e) => Err(map_err(e)),
        }
    }
}
