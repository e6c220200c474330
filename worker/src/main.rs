//! `slipway-worker`: load configuration, connect, run until Ctrl-C / SIGTERM.

use slipway_telemetry::shutdown_signal;
use slipway_worker::{WorkerSettings, build_worker, connect_temporal, ensure_search_attributes};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let _telemetry = slipway_telemetry::init("slipway-worker");
    let settings = match WorkerSettings::from_env() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("slipway-worker: {e}");
            std::process::exit(2);
        }
    };
    let client = connect_temporal(&settings.encryption).await?;
    // Wrong keys stop the worker here, with the reason, not at every task it would take.
    match slipway_worker::verify_payload_keys(&client, &settings.encryption).await {
        Ok(n) => {
            let current_key = settings.encryption.keys().map(|k| k.current().to_owned());
            tracing::info!(histories_opened = n, ?current_key, "payload keys open what the namespace holds")
        }
        Err(e) => {
            eprintln!("slipway-worker: {e:#}");
            std::process::exit(2);
        }
    }
    match ensure_search_attributes(&client).await {
        Ok(added) if added.is_empty() => {}
        Ok(added) => tracing::info!(?added, "registered search attributes"),
        Err(e) => tracing::warn!(
            error = %e,
            "could not register the search attributes SlipwayUserId, SlipwayCustomerId, SlipwayAgentId, \
             SlipwayStatus, SlipwayBilling (Keyword); register them on the namespace before starting workflows"
        ),
    }
    if settings.reconcile.enabled {
        match slipway_worker::ensure_schedules(&client, &settings.task_queue, &settings.reconcile).await {
            Ok(ids) => tracing::info!(?ids, "reconciler schedules in place"),
            Err(e) => {
                tracing::warn!(error = %e, "could not create the reconciler schedules; retried at the next start")
            }
        }
    }
    let runtime = slipway_worker::runtime(&settings)?;
    let mut worker = build_worker(&runtime, client.clone(), &settings)?;
    // A deployment's first version becomes current by itself; later ones by a rollout.
    slipway_worker::versioning::spawn_adoption(client, settings.version.clone());
    let shutdown = worker.shutdown_handle();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down: finishing in-flight tasks");
        shutdown();
    });
    tracing::info!(
        task_queue = %settings.task_queue,
        saga_task_queue = %slipway_worker::versioning::saga_task_queue(&settings.task_queue),
        version = %settings.version.label(),
        "slipway worker running"
    );
    worker.run().await?;
    Ok(())
}
