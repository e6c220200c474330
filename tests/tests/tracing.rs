//! OTLP trace export: one signed webhook is one trace, from the starter's HTTP request through
//! the Temporal start/update, the workflow run and each activity attempt in the worker process,
//! received by a loopback OTLP/HTTP collector.

use std::time::{Duration, Instant};

use slipway_proto::model::AgentStatus;
use slipway_telemetry::TraceExport;
use slipway_tests::{Options, TestApp, otlp::Collector};

#[tokio::test]
async fn one_webhook_is_one_trace_across_starter_workflow_and_activities() -> anyhow::Result<()> {
    // Arrange: this process (the starter) and the worker process export to the same collector.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let collector = Collector::start().await?;
    slipway_telemetry::start_trace_export(&TraceExport::to_collector(&collector.url, "slipway-starter"))
        .map_err(anyhow::Error::msg)?;
    let app = TestApp::spawn_with(Options {
        worker_process: true,
        worker_env: vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT", collector.url.clone()),
            ("OTEL_BSP_SCHEDULE_DELAY", "200".to_owned()),
        ],
        ..Options::default()
    })
    .await?;
    let (user, agent) = (app.id("user"), app.id("agent"));
    let (event, _) = app.checkout_event(&user, &agent, "fsn1");

    // Act
    let resp = app.post_stripe(&event).await?;
    assert_eq!(resp.status(), 200, "{}", resp.text().await?);
    let record = app
        .wait_for_status(&agent, &[AgentStatus::Active, AgentStatus::Failed], Duration::from_secs(60))
        .await?;
    assert_eq!(record.status, AgentStatus::Active, "{record:#?}");

    // Assert: the webhook's span is the root of a trace that reaches the worker's activities.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let spans = collector.spans();
        let webhook = spans.iter().find(|s| {
            s.service == "slipway-starter" && s.name == "POST /webhooks/stripe" && s.parent_span_id.is_empty()
        });
        let trace: Vec<_> =
            webhook.map(|w| spans.iter().filter(|s| s.trace_id == w.trace_id).collect()).unwrap_or_default();
        let names = |service: &str| -> Vec<&str> {
            trace.iter().filter(|s| s.service == service).map(|s| s.name.as_str()).collect()
        };
        let run_activity = trace.iter().find(|s| {
            s.service == "slipway-worker"
                && s.name.starts_with("RunActivity:")
                && s.name.ends_with("create_server")
        });
        let step = run_activity.and_then(|ra| {
            trace.iter().find(|s| s.name == "hetzner create_server" && s.parent_span_id == ra.span_id)
        });
        let workflow_run =
            trace.iter().any(|s| s.service == "slipway-worker" && s.name.starts_with("RunWorkflow:"));
        let client_call = names("slipway-starter").iter().any(|n| n.contains("WithStartWorkflow:"));
        if let (Some(_), Some(step), true, true) = (webhook, step, workflow_run, client_call) {
            // The step span carries the workflow it works for, as the log lines do.
            assert_eq!(
                step.attributes.get("workflow_id"),
                record.provisioning_workflow_id.as_ref(),
                "{step:?}"
            );
            assert!(step.attributes.contains_key("attempt"), "{step:?}");
            // Spans carry ids, never payloads: no configured secret reaches the collector.
            for span in &spans {
                for (name, secret) in slipway_tests::configured_secrets() {
                    let leaked =
                        span.name.contains(&secret) || span.attributes.values().any(|v| v.contains(&secret));
                    assert!(!leaked, "{name} in span {span:?}");
                }
            }
            return Ok(());
        }
        if Instant::now() > deadline {
            anyhow::bail!(
                "no complete trace for the webhook.\nstarter spans: {:?}\nworker spans: {:?}\nall received: {}",
                names("slipway-starter"),
                names("slipway-worker"),
                spans.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
