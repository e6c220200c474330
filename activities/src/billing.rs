//! Billing activities: the few Stripe reads the `Subscription` workflow's decisions need, and
//! expiring a draft agent's open Checkout Session (the `Agent` workflow, when the draft is
//! destroyed or provisioned another way) so it can no longer be paid.

use std::sync::Arc;

use temporalio_macros::activities;
use temporalio_sdk::activities::{ActivityContext, ActivityError};

use slipway_proto::billing::{CheckoutExpiry, FetchedSubscription, ListedSubscription};
use slipway_providers::{ClientError, stripe::StripeClient};

use crate::error::IntoActivityError;

/// Billing activities (registered on the worker).
#[derive(Debug)]
pub struct BillingActivities {
    stripe: StripeClient,
}

impl BillingActivities {
    /// Build from a Stripe client.
    pub fn new(stripe: StripeClient) -> Self {
        Self { stripe }
    }
}

#[activities]
impl BillingActivities {
    /// The subscription's current status and seats, straight from Stripe: used when two events
    /// about it carry the same `created` and disagree (status or quantity).
    #[activity]
    pub async fn fetch_subscription(
        self: Arc<Self>,
        _ctx: ActivityContext,
        subscription_id: String,
    ) -> Result<slipway_proto::billing::FetchedSubscription, ActivityError> {
        let (status, seats) = self
            .stripe
            .subscription_snapshot(&subscription_id)
            .await
            .map_err(ClientError::into_activity_error)?;
        Ok(slipway_proto::billing::FetchedSubscription { status, seats })
    }

    /// Every subscription of the customer as Stripe lists it now, whatever its status (canceled
    /// ones too), newest first, with status and seats: the `Subscription` workflow's re-read of
    /// its customer (on a `sync` signal, and periodically).
    #[activity]
    pub async fn list_customer_subscriptions(
        self: Arc<Self>,
        _ctx: ActivityContext,
        customer_id: String,
    ) -> Result<Vec<ListedSubscription>, ActivityError> {
        let listed = self
            .stripe
            .customer_subscriptions(&customer_id)
            .await
            .map_err(ClientError::into_activity_error)?;
        Ok(listed
            .into_iter()
            .map(|(id, status, seats)| ListedSubscription { id, now: FetchedSubscription { status, seats } })
            .collect())
    }

    /// The subscription's current status, straight from Stripe: used when two events about it
    /// carry the same `created` and disagree.
    #[activity]
    pub async fn fetch_subscription_status(
        self: Arc<Self>,
        _ctx: ActivityContext,
        subscription_id: String,
    ) -> Result<String, ActivityError> {
        self.stripe.subscription_status(&subscription_id).await.map_err(ClientError::into_activity_error)
    }

    /// Expire a Checkout Session so it can no longer be paid. Idempotent: a session already
    /// expired answers `expired`, and one paid before it could be expired answers `complete`
    /// with its customer and subscription (the caller decides what that payment means).
    #[activity]
    pub async fn expire_checkout_session(
        self: Arc<Self>,
        _ctx: ActivityContext,
        session_id: String,
    ) -> Result<CheckoutExpiry, ActivityError> {
        let expired = self
            .stripe
            .expire_checkout_session(&session_id)
            .await
            .map_err(ClientError::into_activity_error)?;
        Ok(CheckoutExpiry {
            session_id,
            status: expired.status,
            customer_id: expired.customer_id,
            subscription_id: expired.subscription_id,
        })
    }
}
