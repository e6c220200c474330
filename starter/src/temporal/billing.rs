//! The `Subscription` workflow (`customer-<cus_…>`): one per Stripe customer, fed by
//! signal-with-start, queried for entitlement.

use futures::StreamExt;
use slipway_proto::billing::{
    BillingEvent, BillingPolicy, BillingState, CustomerBilling, Entitlement, SubscriptionInput,
    customer_workflow_id,
};
use slipway_workflows::{SubscriptionWorkflow, search_attributes};
use temporalio_client::{
    WorkflowListOptions, WorkflowQueryOptions, WorkflowStartOptions, errors::ClientError,
};
use temporalio_common::search_attributes::SearchAttributes;

use super::{Gateway, GatewayError, absent};

impl Gateway {
    /// Deliver a billing event to the customer's subscription workflow, creating it if needed
    /// (signal-with-start: durable once this returns).
    pub async fn billing_event(
        &self,
        customer_id: &str,
        user_id: Option<&str>,
        event: BillingEvent,
        policy: BillingPolicy,
    ) -> Result<(), GatewayError> {
        let client = self.client().await?;
        let mut attrs = vec![search_attributes::CUSTOMER_ID.value_set(customer_id.to_owned())];
        if let Some(u) = user_id {
            attrs.push(search_attributes::USER_ID.value_set(u.to_owned()));
        }
        let options = WorkflowStartOptions::new(self.task_queue.clone(), customer_workflow_id(customer_id))
            .search_attributes(SearchAttributes::new(attrs))
            // Summaries are user metadata, outside the payload codec's reach: the customer's id is
            // the workflow id's, not repeated here.
            .static_summary("billing of one Stripe customer".to_owned())
            .build();
        let input = SubscriptionInput {
            customer_id: customer_id.to_owned(),
            state: BillingState::default(),
            billing: Some(CustomerBilling {
                user_id: user_id.map(str::to_owned),
                ..CustomerBilling::default()
            }),
            policy,
            inbox: Vec::new(),
            claims: Vec::new(),
            releases: Vec::new(),
            attaches: Vec::new(),
            next_reassert: None,
            upgrade_attempted: false,
            protocol: self.protocol,
        };
        let call = client.signal_with_start_workflow(
            SubscriptionWorkflow::run,
            input,
            SubscriptionWorkflow::stripe_event,
            event,
            options,
        );
        // Any failure here, "already started" included, means the signal was not persisted.
        match self.bounded(call).await? {
            Ok(_) => Ok(()),
            Err(e) => Err(GatewayError::Unavailable(e.to_string())),
        }
    }

    /// The user's entitling subscription, if any (found through visibility, then queried).
    pub async fn entitlement_for_user(&self, user_id: &str) -> Result<Option<Entitlement>, GatewayError> {
        let client = self.client().await?;
        let query = format!(
            "WorkflowType = 'Subscription' AND SlipwayUserId = '{}' AND ExecutionStatus = 'Running'",
            user_id.replace('\'', "")
        );
        let ids: Vec<String> = self
            .call(async {
                let mut stream =
                    client.list_workflows(query, WorkflowListOptions::builder().limit(20).build());
                let mut ids = Vec::new();
                while let Some(exec) = stream.next().await {
                    ids.push(exec?.id().to_owned());
                }
                Ok::<_, ClientError>(ids)
            })
            .await?;
        let mut best = None;
        for id in ids {
            let handle = client.get_workflow_handle::<SubscriptionWorkflow>(id);
            let query = handle.query(SubscriptionWorkflow::entitlement, (), WorkflowQueryOptions::default());
            match absent(self.call(query).await)? {
                Some(e) if e.entitled => return Ok(Some(e)),
                Some(e) => best = Some(e),
                None => {}
            }
        }
        Ok(best)
    }

    /// A customer's entitlement (query on its subscription workflow); `None` for a customer
    /// Slipway never heard of.
    pub async fn customer_entitlement(&self, customer_id: &str) -> Result<Option<Entitlement>, GatewayError> {
        let client = self.client().await?;
        let handle = client.get_workflow_handle::<SubscriptionWorkflow>(customer_workflow_id(customer_id));
        absent(
            self.call(handle.query(SubscriptionWorkflow::entitlement, (), WorkflowQueryOptions::default()))
                .await,
        )
    }
}
