//! Scenario 2, provisioning throughput: concurrent sagas started by signed checkout webhooks,
//! against bare workflows running as many no-op activities. Each checkout's answer is timed too:
//! what Stripe waits for in a burst (the target is every answer 2xx, in under 2 s).

use std::time::{Duration, Instant};

use futures::{StreamExt, stream};

use super::Bench;
use crate::{
    baseline::SAGA_ACTIVITIES,
    load,
    report::{AckSpread, SagaRow, SagaSide},
    stripe::checkout_completed,
};

impl Bench {
    pub(crate) async fn provisioning(&self) -> anyhow::Result<SagaRow> {
        let n = self.plan.sagas;
        say!("provisioning: {n} concurrent sagas through signed checkout webhooks");
        let slipway = self.run_sagas(true).await;
        self.settle().await;
        say!("provisioning baseline: {n} concurrent bare workflows of {SAGA_ACTIVITIES} no-op activities");
        let baseline = self.run_sagas(false).await;
        self.settle().await;
        Ok(SagaRow {
            concurrent: n,
            activities_per_saga: SAGA_ACTIVITIES,
            throughput_ratio: slipway.per_sec / baseline.per_sec,
            slipway,
            baseline,
        })
    }

    async fn run_sagas(&self, slipway: bool) -> SagaSide {
        let n = self.plan.sagas;
        let retries = std::sync::atomic::AtomicUsize::new(0);
        let retries = &retries;
        let acks = std::sync::Mutex::new(Vec::with_capacity(n));
        let acks = &acks;
        let start = Instant::now();
        let results: Vec<Result<Duration, String>> = stream::iter(0..n)
            .map(|i| async move {
                let key = format!("{}-{}-{i}", if slipway { "p" } else { "b" }, self.tag);
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
        let mut acks = std::mem::take(&mut *acks.lock().expect("ack latencies"));
        acks.sort_by(f64::total_cmp);
        SagaSide {
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
        }
    }
}
