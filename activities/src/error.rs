//! The single place where a provider client failure becomes a Temporal activity failure.
//!
//! The classification itself (transport errors, timeouts, 5xx and 429 transient, honouring
//! `Retry-After`; any other 4xx permanent) lives with the clients in `slipway-providers`; this
//! turns it into an `ApplicationFailure`: retried with the provider's delay, or non-retryable so
//! the saga compensates at once instead of burning its retry budget.

use slipway_providers::error::{ClientError, Retry};
use temporalio_sdk::{ApplicationFailure, activities::ActivityError};

pub use slipway_providers::error::failure_types;

/// Converts a provider failure into the activity failure Temporal retries (or not).
pub trait IntoActivityError {
    /// The Temporal activity failure for this error. (A `From` impl is impossible: the SDK has a
    /// blanket `From<E: Into<anyhow::Error>>` that would erase the classification.)
    fn into_activity_error(self) -> ActivityError;
}

impl IntoActivityError for ClientError {
    fn into_activity_error(self) -> ActivityError {
        let type_name = self.failure_type().to_owned();
        let retry = self.retry();
        let message = self.to_string();
        let failure = match retry {
            Retry::Transient(delay) => ApplicationFailure::builder(message)
                .type_name(type_name)
                .maybe_next_retry_delay(delay)
                .build(),
            Retry::Permanent => {
                ApplicationFailure::builder(message).type_name(type_name).non_retryable(true).build()
            }
        };
        ActivityError::application(failure)
    }
}
