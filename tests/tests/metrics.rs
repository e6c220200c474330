//! The metrics an operator scrapes: the starter's `/metrics` (requests by route and status, ack
//! latency, signature failures) and the worker's Prometheus endpoint (the SDK's worker metrics and
//! Slipway's step durations by provider, retries and compensations), after real traffic.

use std::time::Duration;

use serde_json::json;
use slipway_proto::model::AgentStatus;
use slipway_tests::{Options, TestApp};

const WAIT: Duration = Duration::from_secs(60);

async fn scrape(http: &reqwest::Client, url: &str) -> anyhow::Result<String> {
    let resp = http.get(url).send().await?;
    anyhow::ensure!(resp.status() == 200, "GET {url}: {}", resp.status());
    Ok(resp.text().await?)
}

/// The value of the first sample whose line starts with `name{` and contains every label.
fn sample(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .find(|l| labels.iter().all(|label| l.contains(label)))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[tokio::test]
async fn starter_and_worker_expose_the_named_series_after_real_traffic() -> anyhow::Result<()> {
    let app = TestApp::spawn_with(Options { worker_metrics: true, ..Options::default() }).await?;

    // A provisioning whose Hetzner create fails once (retried), then succeeds.
    app.fault(json!({"method": "POST", "path": "/hetzner/v1/servers", "status": 500, "count": 1})).await?;
    let (ok_user, ok_agent) = (app.id("user"), app.id("agent"));
    let (event, _) = app.checkout_event(&ok_user, &ok_agent, "fsn1");
    assert_eq!(app.post_stripe(&event).await?.status(), 200);
    let record = app.wait_for_status(&ok_agent, &[AgentStatus::Active, AgentStatus::Failed], WAIT).await?;
    assert_eq!(record.status, AgentStatus::Active);

    // A provisioning refused by Hetzner (422, not retried): the saga compensates.
    app.fault(json!({"method": "POST", "path": "/hetzner/v1/servers", "status": 422})).await?;
    let (bad_user, bad_agent) = (app.id("user2"), app.id("agent2"));
    let (event, _) = app.checkout_event(&bad_user, &bad_agent, "fsn1");
    assert_eq!(app.post_stripe(&event).await?.status(), 200);
    let record = app.wait_for_status(&bad_agent, &[AgentStatus::Active, AgentStatus::Failed], WAIT).await?;
    assert_eq!(record.status, AgentStatus::Failed);

    // A forged webhook.
    let forged = app.post_stripe_signed(&event, "t=1,v1=deadbeef").await?;
    assert_eq!(forged.status(), 400);

    let starter = scrape(&app.http, &format!("{}/metrics", app.starter_url)).await?;
    let stripe = r#"route="/webhooks/stripe""#;
    assert!(
        sample(&starter, "slipway_http_requests_total", &[stripe, r#"status="200""#]).unwrap_or(0.0) >= 2.0,
        "{starter}"
    );
    assert!(
        sample(&starter, "slipway_http_requests_total", &[stripe, r#"status="400""#]) == Some(1.0),
        "{starter}"
    );
    assert!(
        sample(&starter, "slipway_webhook_ack_seconds_count", &[stripe]).unwrap_or(0.0) >= 2.0,
        "{starter}"
    );
    assert!(sample(&starter, "slipway_webhook_ack_seconds_bucket", &[stripe, r#"le="+Inf""#]).is_some());
    assert_eq!(
        sample(&starter, "slipway_signature_failures_total", &[stripe, r#"code="STALE_TIMESTAMP""#]).or_else(
            || sample(&starter, "slipway_signature_failures_total", &[stripe, r#"code="INVALID_SIGNATURE""#])
        ),
        Some(1.0),
        "{starter}"
    );
    assert!(starter.contains("# TYPE slipway_temporal_errors_total counter"), "{starter}");

    // An orphan sweep (deleting on) finds a server made by hand under a destroyed agent's names
    // and this deployment's label (the key beside it, a name alone, is kept).
    app.http.delete(format!("{}/_sandbox/faults", app.sandbox.base_url)).send().await?.error_for_status()?;
    app.ghost_resources(&app.destroyed_agent("gone").await?).await?;
    app.reconciler_schedules(true).await?;
    app.reconcile("orphans", true).await?;
    app.reconcile("orphans", true).await?;

    let addr = app.worker_metrics.expect("worker metrics requested");
    let worker = scrape(&app.http, &format!("http://{addr}/metrics")).await?;
    let orphans = r#"reconciler="orphans""#;
    for (outcome, provider) in [("found", "hetzner"), ("deleted", "hetzner")] {
        let labels = [orphans, &format!(r#"outcome="{outcome}""#), &format!(r#"provider="{provider}""#)];
        assert_eq!(
            sample(&worker, "slipway_reconciled_total", &labels),
            Some(1.0),
            "{outcome} {provider}: {worker}"
        );
    }
    let hetzner = r#"provider="hetzner""#;
    let create = r#"step="create_server""#;
    assert!(
        sample(&worker, "slipway_step_duration_seconds_count", &[hetzner, create, r#"outcome="ok""#])
            .unwrap_or(0.0)
            >= 1.0,
        "step durations by provider"
    );
    assert!(
        sample(&worker, "slipway_step_duration_seconds_count", &[hetzner, create, r#"outcome="error""#])
            .unwrap_or(0.0)
            >= 2.0,
        "the 500 and the 422 are failed attempts"
    );
    assert!(
        sample(&worker, "slipway_step_retries_total", &[hetzner, create]).unwrap_or(0.0) >= 1.0,
        "retry counted"
    );
    assert!(
        sample(&worker, "slipway_compensations_run_total", &[r#"provider="tailscale""#]).unwrap_or(0.0)
            >= 1.0,
        "the rollback revoked the Tailscale key"
    );
    // Both task queues' backlog, as Temporal describes them, for an autoscaler (read every 10 s).
    let sagas = slipway_proto::model::saga_task_queue(&app.task_queue);
    let worker = slipway_tests::wait_for("the backlog gauges of both task queues", WAIT, || async {
        let text = scrape(&app.http, &format!("http://{addr}/metrics")).await?;
        let present = [app.task_queue.as_str(), sagas.as_str()].iter().all(|queue| {
            ["workflow", "activity"].iter().all(|kind| {
                let labels = [format!(r#"task_queue="{queue}""#), format!(r#"task_type="{kind}""#)];
                let labels = [labels[0].as_str(), labels[1].as_str()];
                sample(&text, "slipway_task_queue_backlog", &labels).is_some_and(|n| n >= 0.0)
                    && sample(&text, "slipway_task_queue_backlog_age_seconds", &labels)
                        .is_some_and(|s| s >= 0.0)
            })
        });
        Ok(present.then_some(text))
    })
    .await?;
    // The SDK's own worker metrics share the endpoint.
    assert!(worker.contains("temporal_workflow_completed"), "SDK metrics");
    assert!(worker.contains("temporal_activity_execution_latency"), "SDK metrics");
    Ok(())
}

#[tokio::test]
async fn metrics_can_live_on_an_internal_address_only() -> anyhow::Result<()> {
    let app = TestApp::spawn_with(Options { internal_metrics: true, ..Options::default() }).await?;
    let (event, _) = app.checkout_event(&app.id("user"), &app.id("agent"), "fsn1");
    assert_eq!(app.post_stripe(&event).await?.status(), 200);

    let public = app.http.get(format!("{}/metrics", app.starter_url)).send().await?;
    assert_eq!(public.status(), 404, "not on the public listener");
    let internal = app.starter_metrics_url.as_deref().expect("an internal metrics address");
    let text = scrape(&app.http, internal).await?;
    assert_eq!(
        sample(&text, "slipway_http_requests_total", &[r#"route="/webhooks/stripe""#, r#"status="200""#]),
        Some(1.0),
        "{text}"
    );
    Ok(())
}
