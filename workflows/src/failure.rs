//! Turning Temporal failures into one sentence a person can act on.

use temporalio_common::protos::temporal::api::failure::v1::Failure;
use temporalio_sdk::{ActivityExecutionError, ChildWorkflowExecutionError};

/// The deepest message of a failure chain: the provider's own words, not "Activity task failed".
fn deepest(failure: &Failure) -> String {
    let mut f = failure;
    while let Some(cause) = f.cause.as_deref() {
        f = cause;
    }
    f.message.clone()
}

/// Reason for a failed activity.
pub(crate) fn activity(err: &ActivityExecutionError) -> String {
    match err.failure() {
        Some(f) => deepest(f),
        None => err.to_string(),
    }
}

/// Reason for a failed child workflow.
pub(crate) fn child(err: &ChildWorkflowExecutionError) -> String {
    match err.failure() {
        Some(f) => deepest(f),
        None => err.to_string(),
    }
}
