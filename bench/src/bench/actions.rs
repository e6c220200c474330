//! What one provisioning costs in Temporal's protocol, read from the histories it left: per
//! workflow (the agent's, its saga, its customer's), the workflow tasks, activities, signals,
//! updates, search-attribute upserts, memo changes, timers, child workflows and markers. Each
//! workflow task is a round trip to a worker; Temporal Cloud bills most of the others as actions.

use serde::Serialize;
use serde_json::Value;
use temporalio_client::{UntypedWorkflow, WorkflowFetchHistoryOptions};

use super::Bench;

/// Counts of one workflow's history (or their sum).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub(crate) struct ProtocolCounts {
    pub(crate) workflow_tasks: u32,
    pub(crate) activities: u32,
    pub(crate) signals: u32,
    pub(crate) updates: u32,
    pub(crate) upserts: u32,
    pub(crate) memo_changes: u32,
    pub(crate) timers: u32,
    pub(crate) children: u32,
    pub(crate) markers: u32,
}

impl ProtocolCounts {
    /// Counts the events of a history as `fetch_history(..).to_json()` writes it.
    pub(crate) fn of(history: &Value) -> Self {
        let mut c = Self::default();
        for e in history["events"].as_array().into_iter().flatten() {
            let Some(kind) = e["attributes"].as_object().and_then(|a| a.keys().next()) else { continue };
            let slot = match kind.trim_end_matches("EventAttributes") {
                "WorkflowTaskCompleted" => &mut c.workflow_tasks,
                "ActivityTaskScheduled" => &mut c.activities,
                "WorkflowExecutionSignaled" => &mut c.signals,
                "WorkflowExecutionUpdateAccepted" => &mut c.updates,
                "UpsertWorkflowSearchAttributes" => &mut c.upserts,
                "WorkflowPropertiesModified" => &mut c.memo_changes,
                "TimerStarted" => &mut c.timers,
                "StartChildWorkflowExecutionInitiated" => &mut c.children,
                "MarkerRecorded" => &mut c.markers,
                _ => continue,
            };
            *slot += 1;
        }
        c
    }

    fn add(&mut self, o: &Self) {
        self.workflow_tasks += o.workflow_tasks;
        self.activities += o.activities;
        self.signals += o.signals;
        self.updates += o.updates;
        self.upserts += o.upserts;
        self.memo_changes += o.memo_changes;
        self.timers += o.timers;
        self.children += o.children;
        self.markers += o.markers;
    }

    /// The counts in the order the bench's tables show them (the last: [`Self::actions`]).
    pub(crate) fn cells(&self) -> [u32; 10] {
        [
            self.workflow_tasks,
            self.activities,
            self.signals,
            self.updates,
            self.upserts,
            self.memo_changes,
            self.timers,
            self.children,
            self.markers,
            self.actions(),
        ]
    }

    /// Everything counted but workflow tasks: the messages and commands a provisioning costs
    /// (on Temporal Cloud most are billed actions; its price list is the judge of which).
    pub(crate) fn actions(&self) -> u32 {
        self.activities
            + self.signals
            + self.updates
            + self.upserts
            + self.memo_changes
            + self.timers
            + self.children
            + self.markers
    }
}

/// One provisioning's protocol cost.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ProtocolRow {
    /// `(workflow type, counts)`, in the order the provisioning touches them.
    pub(crate) per_workflow: Vec<(String, ProtocolCounts)>,
    pub(crate) total: ProtocolCounts,
    /// The same-protocol baseline's provisioning, counted the same way (all three workflows).
    pub(crate) same_protocol: ProtocolCounts,
}

impl Bench {
    /// The protocol cost of the provisioning of `agent` for `user` paid by `customer`.
    pub(crate) async fn protocol_cost(
        &self,
        agent: &str,
        user: &str,
        customer: &str,
        same_protocol_key: &str,
    ) -> anyhow::Result<ProtocolRow> {
        let slipway = [
            ("Agent", slipway_proto::model::agent_workflow_id(agent)),
            ("ProvisionAgent", slipway_proto::model::provisioning_workflow_id(user)),
            ("Subscription", slipway_proto::billing::customer_workflow_id(customer)),
        ];
        let (per_workflow, total) = self.count_histories(slipway).await?;
        let (b_customer, b_agent, b_provision) = crate::baseline::protocol_ids(same_protocol_key);
        let baseline = [
            ("BaselineAgent", b_agent),
            ("BaselineProvision", b_provision),
            ("BaselineCustomer", b_customer),
        ];
        let (_, same_protocol) = self.count_histories(baseline).await?;
        Ok(ProtocolRow { per_workflow, total, same_protocol })
    }

    async fn count_histories(
        &self,
        workflows: [(&str, String); 3],
    ) -> anyhow::Result<(Vec<(String, ProtocolCounts)>, ProtocolCounts)> {
        let mut per_workflow = Vec::new();
        let mut total = ProtocolCounts::default();
        let dir = self.out.join("protocol");
        std::fs::create_dir_all(&dir)?;
        for (kind, id) in workflows {
            let handle = self.client.get_workflow_handle::<UntypedWorkflow>(id);
            let json = handle.fetch_history(WorkflowFetchHistoryOptions::default()).to_json().await?;
            // Kept for reading what the counts are made of (`<out>/protocol/<Workflow>.json`).
            std::fs::write(dir.join(format!("{kind}.json")), &json)?;
            let counts = ProtocolCounts::of(&serde_json::from_slice(&json)?);
            total.add(&counts);
            per_workflow.push((kind.to_owned(), counts));
        }
        Ok((per_workflow, total))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn events_are_counted_by_their_attributes() {
        let history = json!({"events": [
            {"attributes": {"WorkflowExecutionStartedEventAttributes": {}}},
            {"attributes": {"WorkflowTaskCompletedEventAttributes": {}}},
            {"attributes": {"ActivityTaskScheduledEventAttributes": {}}},
            {"attributes": {"UpsertWorkflowSearchAttributesEventAttributes": {}}},
            {"attributes": {"WorkflowTaskCompletedEventAttributes": {}}},
            {"attributes": {"WorkflowExecutionSignaledEventAttributes": {}}}
        ]});
        let c = ProtocolCounts::of(&history);
        assert_eq!((c.workflow_tasks, c.activities, c.upserts, c.signals), (2, 1, 1, 1));
        assert_eq!(c.actions(), 3);
    }
}
