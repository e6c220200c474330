//! Scenario 1, webhook ack latency: signed `invoice.paid` deliveries to the starter against the
//! same signal-with-start sent straight to Temporal, at fixed open-loop rates and at saturation.
//! At each fixed rate the pair runs in interleaved rounds (the order alternating) and the row
//! reports the median ratio with its spread, flagged when it is too noisy to quote: one phase
//! per rate gave ratios that did not hold still from run to run.

use std::time::Duration;

use slipway_proto::billing::{
    BillingEvent, BillingEventKind, BillingPolicy, BillingState, SubscriptionInput, customer_workflow_id,
};
use slipway_workflows::{SubscriptionWorkflow, search_attributes};
use temporalio_client::WorkflowStartOptions;
use temporalio_common::search_attributes::SearchAttributes;

use super::Bench;
use crate::{
    load,
    report::AckRow,
    stack,
    stripe::{invoice_paid, now_secs, post_stripe},
};

impl Bench {
    pub(crate) async fn ack_latency(&self) -> anyhow::Result<Vec<AckRow>> {
        let secs = Duration::from_secs(self.plan.ack_phase_secs);
        let mut rows = Vec::new();
        for (n, &rate) in self.plan.ack_rates.iter().enumerate() {
            let rounds = self.plan.ack_rounds.max(1);
            say!("ack latency at {rate}/s for {secs:?}: {rounds} interleaved rounds of Slipway and baseline");
            let mut pairs = Vec::with_capacity(rounds);
            for round in 0..rounds {
                // The order alternates, so neither side always runs on a server the other warmed.
                let phase = format!("r{n}x{round}");
                let (slipway, baseline) = if round % 2 == 0 {
                    let s = load::open_loop(rate, secs, self.slipway_ack(phase.clone())).await;
                    self.settle().await;
                    (s, load::open_loop(rate, secs, self.baseline_ack(phase)).await)
                } else {
                    let b = load::open_loop(rate, secs, self.baseline_ack(phase.clone())).await;
                    self.settle().await;
                    (load::open_loop(rate, secs, self.slipway_ack(phase)).await, b)
                };
                self.settle().await;
                pairs.push((slipway, baseline));
            }
            rows.push(AckRow::new(Some(rate), pairs));
        }
        let c = self.plan.saturation_concurrency;
        say!("ack latency at saturation: {c} concurrent senders for {secs:?}");
        let slipway = load::closed_loop(c, secs, self.slipway_ack("sat".to_owned())).await;
        self.settle().await;
        let baseline = load::closed_loop(c, secs, self.baseline_ack("sat".to_owned())).await;
        self.settle().await;
        rows.push(AckRow::new(None, vec![(slipway, baseline)]));
        Ok(rows)
    }

    /// Requests of the Slipway side: a signed `invoice.paid` to the starter.
    fn slipway_ack(
        &self,
        phase: String,
    ) -> impl Fn(u64) -> std::pin::Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync + 'static
    {
        let (http, url, tag) = (self.http.clone(), self.starter_url.clone(), self.tag.clone());
        move |i| {
            let key = format!("{tag}_s{phase}_{i}");
            let body = invoice_paid(&format!("evt_{key}"), &format!("cus_{key}"), &format!("in_{key}"));
            let (http, url) = (http.clone(), url.clone());
            Box::pin(async move { post_stripe(&http, &url, body).await.map(|_| ()) })
        }
    }

    /// Requests of the baseline: the same signal-with-start the starter sends for that event,
    /// straight to Temporal.
    fn baseline_ack(
        &self,
        phase: String,
    ) -> impl Fn(u64) -> std::pin::Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync + 'static
    {
        let (client, tag) = (self.client.clone(), self.tag.clone());
        move |i| {
            let key = format!("{tag}_b{phase}_{i}");
            let client = client.clone();
            Box::pin(async move {
                let customer = format!("cus_{key}");
                let options =
                    WorkflowStartOptions::new(stack::TASK_QUEUE.to_owned(), customer_workflow_id(&customer))
                        .search_attributes(SearchAttributes::new(vec![
                            search_attributes::CUSTOMER_ID.value_set(customer.clone()),
                        ]))
                        .static_summary(format!("Stripe customer {customer}"))
                        .build();
                let input = SubscriptionInput {
                    customer_id: customer.clone(),
                    state: BillingState::default(),
                    billing: None,
                    policy: BillingPolicy::default(),
                    inbox: Vec::new(),
                    claims: Vec::new(),
                    releases: Vec::new(),
                    attaches: Vec::new(),
                    next_reassert: None,
                    upgrade_attempted: false,
                    protocol: slipway_proto::model::PROTOCOL,
                };
                let event = BillingEvent {
                    event_id: format!("evt_{key}"),
                    created: now_secs(),
                    kind: BillingEventKind::InvoicePaid {
                        invoice_id: format!("in_{key}"),
                        subscription_id: None,
                    },
                    handoff: None,
                };
                client
                    .signal_with_start_workflow(
                        SubscriptionWorkflow::run,
                        input,
                        SubscriptionWorkflow::stripe_event,
                        event,
                        options,
                    )
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            })
        }
    }
}
