//! Asking Temporal about other workflows of this deployment from an activity: a workflow's
//! status, and a query by its registered name. The job lookups and the orphan sweep both ask
//! this way, because the workflows they ask live in a crate that depends on this one.

use serde::{Serialize, de::DeserializeOwned};
use temporalio_client::{
    Client, UntypedQuery, UntypedWorkflow, WorkflowDescribeOptions, WorkflowExecutionStatus,
    WorkflowQueryOptions,
    errors::{WorkflowInteractionError, WorkflowQueryError},
};
use temporalio_common::data_converters::{PayloadConverter, RawValue};
use temporalio_sdk::{ApplicationFailure, activities::ActivityError};

/// A payload of `v`, as the workflows' JSON converter writes it.
pub(crate) fn raw<T: Serialize + 'static>(v: &T) -> RawValue {
    RawValue::from_value(v, &PayloadConverter::serde_json())
}

/// A JSON answer; `null` travels as an empty `binary/null` payload.
pub(crate) fn value<T: DeserializeOwned>(raw: &RawValue) -> Result<T, ActivityError> {
    let data = raw.payloads.first().map(|p| p.data.as_slice()).unwrap_or_default();
    let data = if data.is_empty() { b"null".as_slice() } else { data };
    serde_json::from_slice(data).map_err(|e| permanent(format!("unreadable answer: {e}")))
}

/// A failure not worth another attempt.
pub(crate) fn permanent(message: String) -> ActivityError {
    ActivityError::application(ApplicationFailure::builder(message).non_retryable(true).build())
}

/// A failure worth another attempt (Temporal unreachable, no worker polling yet).
pub(crate) fn transient(message: String) -> ActivityError {
    ActivityError::application(ApplicationFailure::builder(message).build())
}

/// `workflow.query(arg)`, or `None` if the workflow does not exist.
pub(crate) async fn query<I: Serialize + 'static, O: DeserializeOwned>(
    client: &Client,
    workflow_id: &str,
    query: &str,
    arg: &I,
) -> Result<Option<O>, ActivityError> {
    let handle = client.get_workflow_handle::<UntypedWorkflow>(workflow_id.to_owned());
    match handle.query(UntypedQuery::new(query), raw(arg), WorkflowQueryOptions::default()).await {
        Ok(answer) => Ok(Some(value(&answer)?)),
        Err(WorkflowQueryError::NotFound(_)) => Ok(None),
        Err(e) => Err(transient(format!("query {query} of {workflow_id}: {e}"))),
    }
}

/// A workflow's status, or `None` if it does not exist.
pub(crate) async fn status(
    client: &Client,
    workflow_id: &str,
) -> Result<Option<WorkflowExecutionStatus>, ActivityError> {
    let handle = client.get_workflow_handle::<UntypedWorkflow>(workflow_id.to_owned());
    match handle.describe(WorkflowDescribeOptions::default()).await {
        Ok(d) => Ok(Some(d.status())),
        Err(WorkflowInteractionError::NotFound(_)) => Ok(None),
        Err(e) => Err(transient(format!("describe {workflow_id}: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use slipway_proto::jobs::GitHubLink;

    use super::*;

    #[test]
    fn a_null_answer_reads_as_none_and_a_value_as_itself() {
        let none: RawValue = raw(&Option::<GitHubLink>::None);
        assert_eq!(value::<Option<Option<GitHubLink>>>(&none).unwrap().flatten(), None);
        let link = GitHubLink { account: "acme".into(), user_id: "u1".into(), customer_id: "cus_1".into() };
        assert_eq!(value::<Option<GitHubLink>>(&raw(&Some(link.clone()))).unwrap(), Some(link));
    }
}
