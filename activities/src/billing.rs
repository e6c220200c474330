//! Activities of the `Subscription` workflow: the few Stripe reads billing decisions need.

use std::sync::Arc;

use temporalio_macros::activities;
use temporalio_sdk::activities::{ActivityContext, ActivityError};

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
}
