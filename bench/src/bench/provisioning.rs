//! Scenario 2, provisioning throughput: concurrent sagas started by signed checkout webhooks,
//! against bare workflows running as many no-op activities. Each checkout's answer is timed too:
//! what Stripe waits for in a burst (the target is every answer 2xx, in under 2 s).

use std::time::{Duration, Instant};

use futures::{StreamExt, stream};

use temporalio_client::WorkflowStartOptions;
use temporalio_common::search_attributes::SearchAttributes;

use super::Bench;
use crate::{
    baseline::{BaselineAgentWorkflow, BaselineCustomerWorkflow, SAGA_ACTIVITIES, STATUS, protocol_ids},
    load,
    report::{AckSpread, SagaRow, SagaSide},
    stack::BASELINE_TASK_QUEUE,
    stripe::checkout_completed,
};

/// Start options of a same-protocol workflow, with its status attribute.
fn start(id: &str, status: &str) -> WorkflowStartOptions {
    WorkflowStartOptions::new(BASELINE_TASK_QUEUE.to_owned(), id.to_owned())
        .search_attributes(SearchAttributes::new([STATUS.value_set(status.to_owned())]))
        .build()
}

/// Whose provisionings a run starts.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    /// Signed checkout webhooks through the starter.
    Slipway,
    /// The same workflows and messages written with the bare SDK ([`crate::baseline`]).
    SameProtocol,
    /// One bare workflow of as many no-op activities as the saga.
    Bare,
}

impl Side {
    /// The key of the `i`th provisioning of a round's burst (its ids derive from it).
    fn key(self, tag: &str, round: usize, i: usize) -> String {
        let prefix = match self {
            Side::Slipway => "p",
            Side::SameProtocol => "sp",
            Side::Bare => "b",
        };
        if round == 0 { format!("{prefix}-{tag}-{i}") } else { format!("{prefix}{round}-{tag}-{i}") }
    }
}

impl Bench {
    pub(crate) async fn provisioning(&self) -> anyhow::Result<SagaRow> {
        let n = self.plan.sagas;
        let mut rounds = Vec::new();
        for round in 0..self.plan.saga_rounds.max(1) {
            let mut order = [Side::Slipway, Side::SameProtocol, Side::Bare];
            if round % 2 == 1 {
                order.reverse();
            }
            let mut sides = Vec::new();
            for side in order {
                let what = match side {
                    Side::Slipway => "concurrent sagas through signed checkout webhooks".to_owned(),
                    Side::SameProtocol => "concurrent bare-SDK provisionings (3 workflows each)".to_owned(),
                    Side::Bare => format!("concurrent bare workflows of {SAGA_ACTIVITIES} no-op activities"),
                };
                say!("provisioning, round {}: {n} {what}", round + 1);
                sides.push((side, self.run_sagas(side, round).await?));
            }
            let take = |want: Side| sides.iter().find(|(s, _)| *s == want).map(|(_, r)| r.clone());
            let (Some(slipway), Some(same), Some(bare)) =
                (take(Side::Slipway), take(Side::SameProtocol), take(Side::Bare))
            else {
                anyhow::bail!("a provisioning burst is missing");
            };
            rounds.push((slipway, same, bare));
        }
        Ok(SagaRow::new(n, SAGA_ACTIVITIES, rounds))
    }

    /// The agents of a burst, created before it as the API creates a draft (the user creates
    /// the agent, then pays for it): not timed.
    async fn create_drafts(&self, side: Side, round: usize) -> anyhow::Result<()> {
        let n = self.plan.sagas;
        let created: Vec<Result<(), String>> = stream::iter(0..n)
            .map(|i| async move {
                let key = side.key(&self.tag, round, i);
                match side {
                    Side::Slipway => self.create_draft(&format!("ag-{key}"), &format!("u-{key}")).await,
                    Side::SameProtocol => {
                        let agent = protocol_ids(&key).1;
                        self.client
                            .start_workflow(BaselineAgentWorkflow::run, key.clone(), start(&agent, "draft"))
                            .await
                            .map(drop)
                            .map_err(|e| e.to_string())
                    }
                    Side::Bare => Ok(()),
                }
            })
            .buffer_unordered(32)
            .collect()
            .await;
        if let Some(e) = created.into_iter().find_map(Result::err) {
            anyhow::bail!("creating the burst's agents: {e}");
        }
        Ok(())
    }

    /// One same-protocol provisioning: the one signal-with-start the starter sends for a paid
    /// checkout (timed, as the checkout's answer is), then its provisioning's completion.
    async fn protocol_saga(&self, key: &str, acks: &std::sync::Mutex<Vec<f64>>) -> Result<(), String> {
        let (customer, _, provision) = protocol_ids(key);
        let sent = Instant::now();
        self.client
            .signal_with_start_workflow(
                BaselineCustomerWorkflow::run,
                customer.clone(),
                BaselineCustomerWorkflow::event,
                key.to_owned(),
                start(&customer, "none"),
            )
            .await
            .map_err(|e| e.to_string())?;
        acks.lock().expect("ack latencies").push(sent.elapsed().as_secs_f64() * 1000.0);
        self.workflow_done(provision).await
    }

    async fn run_sagas(&self, side: Side, round: usize) -> anyhow::Result<SagaSide> {
        self.create_drafts(side, round).await?;
        self.settle().await;
        let slipway = side == Side::Slipway;
        let n = self.plan.sagas;
        let retries = std::sync::atomic::AtomicUsize::new(0);
        let retries = &retries;
        let acks = std::sync::Mutex::new(Vec::with_capacity(n));
        let acks = &acks;
        let cpu_before = self.cpu_ticks();
        let start = Instant::now();
        let results: Vec<Result<Duration, String>> = stream::iter(0..n)
            .map(|i| async move {
                let key = side.key(&self.tag, round, i);
                let r = if slipway {
                    let user = format!("u-{key}");
                    let body = checkout_completed(
                        &format!("evt_{key}"),
                        &format!("ag-{key}"),
                        &user,
                        &format!("cus_{key}"),
                    );
                    // Stripe redelivers a webhook answered 503 (hours later; here after 1 s); the
                    // event id makes the redelivery apply once.
                    let mut attempt = 0;
                    loop {
                        attempt += 1;
                        let sent = Instant::now();
                        let answer = self.post_stripe(body.clone()).await;
                        acks.lock().expect("ack latencies").push(sent.elapsed().as_secs_f64() * 1000.0);
                        match answer {
                            Ok(answer) if answer["handled"] == true => {
                                break self.saga_result(&user).await;
                            }
                            Ok(answer) => break Err(format!("checkout not handled: {answer}")),
                            Err(e) if e.starts_with("503") && attempt < 5 => {
                                retries.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                tokio::time::sleep(Duration::from_secs(1)).await;
                            }
                            Err(e) => break Err(e),
                        }
                    }
                } else if side == Side::SameProtocol {
                    self.protocol_saga(&key, acks).await
                } else {
                    self.baseline_saga(&key).await
                };
                r.map(|()| start.elapsed())
            })
            .buffer_unordered(n)
            .collect()
            .await;
        let wall = start.elapsed();
        let mut lat: Vec<f64> =
            results.iter().filter_map(|r| r.as_ref().ok()).map(|d| d.as_secs_f64() * 1000.0).collect();
        lat.sort_by(f64::total_cmp);
        let last = lat.last().copied().unwrap_or(wall.as_secs_f64() * 1000.0);
        // What the burst left to do (the workers' last tasks) is its cost too.
        self.settle().await;
        let cpu_ms_per_saga = self.cpu_ms_per(&cpu_before, lat.len());
        let mut acks = std::mem::take(&mut *acks.lock().expect("ack latencies"));
        acks.sort_by(f64::total_cmp);
        Ok(SagaSide {
            checkout_ack: (!acks.is_empty()).then(|| AckSpread {
                p50_ms: load::percentile(&acks, 0.5),
                p99_ms: load::percentile(&acks, 0.99),
                max_ms: acks.last().copied().unwrap_or_default(),
            }),
            completed: lat.len(),
            failed: n - lat.len(),
            per_sec: lat.len() as f64 / (last / 1000.0).max(1e-9),
            p50_ms: load::percentile(&lat, 0.5),
            p99_ms: load::percentile(&lat, 0.99),
            webhook_retries: retries.load(std::sync::atomic::Ordering::Relaxed),
            first_error: results.into_iter().find_map(Result::err),
            cpu_ms_per_saga,
        })
    }
}
