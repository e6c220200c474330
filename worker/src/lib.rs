//! The Slipway worker: one process that polls the task queue and runs every workflow and
//! activity. Scale out by running more of them against the same Temporal cluster; they share
//! nothing but Temporal.
//!
//! - [`settings`]: configuration from the environment (all-missing-at-once errors).
//! - [`build_worker`]: registers workflows and activities; used by `main` and by the tests, so
//!   the tests run exactly the worker that ships.
//! - [`schedules`]: the reconcilers' Temporal Schedules, created or updated at start.
//! - [`versioning`]: the Worker Deployment version, and why the process runs two workers.
//! - [`backlog`]: the task queues' backlog as metrics, for autoscalers.

pub mod backlog;
pub mod schedules;
pub mod settings;
pub mod versioning;

use slipway_activities::{BillingActivities, ProvisioningActivities, StackActivities};
use std::sync::Arc;
use temporalio_client::{Client, ClientOptions, Connection, envconfig::LoadClientConfigProfileOptions};

use temporalio_common::telemetry::{
    PrometheusExporterOptions, TelemetryOptions, metrics::CoreMeter, start_prometheus_metric_exporter,
};
use temporalio_sdk::{Runtime, Worker, WorkerOptions, runtime::RuntimeOptions};
use tonic::IntoRequest;

pub use schedules::ensure_schedules;
pub use settings::{ConfigError, ReconcileSettings, WorkerSettings, WorkerTuning};
pub use versioning::WorkerVersion;

/// Connect to Temporal using Temporal's own env config (`TEMPORAL_ADDRESS`,
/// `TEMPORAL_NAMESPACE`, `temporal.toml`), with `encryption`'s data converter: every payload
/// this client and the workers built on it send is sealed.
pub async fn connect_temporal(encryption: &slipway_codec::Encryption) -> anyhow::Result<Client> {
    let (conn_opts, mut client_opts) =
        ClientOptions::load_from_config(LoadClientConfigProfileOptions::default())
            .map_err(|e| anyhow::anyhow!("Temporal client configuration: {e}"))?;
    client_opts.data_converter = encryption.data_converter();
    let connection = Connection::connect(conn_opts).await?;
    Ok(Client::new(connection, slipway_telemetry::client_options(client_opts))?)
}

/// Checks that the configured keys open what this namespace already holds: the histories of
/// the most recent workflows, read through `client`, which opens every payload as it reads (a
/// key id they name that is not configured, or a key that does not open them, fails here).
/// A worker with the wrong keys would fail every task it took; this stops it at start-up with
/// the reason. Histories from before encryption pass. Returns how many histories were read.
pub async fn verify_payload_keys(
    client: &Client,
    encryption: &slipway_codec::Encryption,
) -> anyhow::Result<usize> {
    use futures::StreamExt;
    use temporalio_client::{WorkflowFetchHistoryOptions, WorkflowListOptions};
    if encryption.keys().is_none() {
        return Ok(0);
    }
    let read = async {
        let mut read = 0;
        let mut runs = client.list_workflows("", WorkflowListOptions::builder().limit(5).build());
        while let Some(run) = runs.next().await {
            let handle =
                client.get_workflow_handle::<temporalio_client::UntypedWorkflow>(run?.id().to_owned());
            handle.fetch_history(WorkflowFetchHistoryOptions::default()).into_events().await?;
            read += 1;
        }
        anyhow::Ok(read)
    };
    read.await.map_err(|e| {
        anyhow::anyhow!("SLIPWAY_PAYLOAD_KEYS cannot open what this namespace holds: {}", e.root_cause())
    })
}

/// Register Slipway's keyword search attributes on the namespace if they are missing, so every
/// workflow can be filtered by user, customer, agent and status in the Web UI. Temporal Cloud
/// refuses this call (attributes are managed with `tcld` or the Cloud UI there): the worker then
/// logs what to register and carries on. Returns the attributes it added.
pub async fn ensure_search_attributes(client: &Client) -> anyhow::Result<Vec<String>> {
    use std::collections::HashMap;
    use temporalio_client::NamespacedClient;
    use temporalio_common::protos::temporal::api::{
        enums::v1::IndexedValueType,
        operatorservice::v1::{AddSearchAttributesRequest, ListSearchAttributesRequest},
    };
    let namespace = client.namespace().to_owned();
    let mut ops = client.connection().operator_service();
    let existing = ops
        .list_search_attributes(ListSearchAttributesRequest { namespace: namespace.clone() }.into_request())
        .await?
        .into_inner();
    let missing: HashMap<String, i32> = slipway_workflows::search_attributes::ALL
        .iter()
        .filter(|name| !existing.custom_attributes.contains_key(**name))
        .map(|name| ((*name).to_owned(), IndexedValueType::Keyword as i32))
        .collect();
    if missing.is_empty() {
        return Ok(Vec::new());
    }
    let mut added: Vec<String> = missing.keys().cloned().collect();
    added.sort();
    ops.add_search_attributes(
        AddSearchAttributesRequest { search_attributes: missing, namespace }.into_request(),
    )
    .await?;
    Ok(added)
}

/// Start the Prometheus endpoint on `addr` and return the runtime telemetry that feeds it: the
/// SDK's worker metrics (task slots, latencies, sticky cache, failures) and Slipway's own (step
/// durations by provider, retries, compensations; see `slipway_activities::metrics`).
/// Returns the bound address (port 0 picks a free one).
pub fn start_metrics(addr: std::net::SocketAddr) -> anyhow::Result<(TelemetryOptions, std::net::SocketAddr)> {
    let prom = start_prometheus_metric_exporter(
        PrometheusExporterOptions::builder()
            .socket_addr(addr)
            // Prometheus conventions: seconds, `_seconds` and `_total` suffixes.
            .use_seconds_for_durations(true)
            .unit_suffix(true)
            .counters_total_suffix(true)
            .build(),
    )?;
    let meter: Arc<dyn CoreMeter> = prom.meter;
    slipway_activities::metrics::install(meter.clone());
    Ok((TelemetryOptions::builder().metrics(meter).build(), prom.bound_addr))
}

/// A Temporal runtime on the current Tokio runtime, exporting metrics when `metrics_addr` is set.
pub fn runtime(settings: &WorkerSettings) -> anyhow::Result<Runtime> {
    let mut telemetry = None;
    if let Some(addr) = settings.metrics_addr {
        // Metrics are for operators, not for correctness: a taken port is logged, not fatal.
        match start_metrics(addr) {
            Ok((options, bound)) => {
                tracing::info!(%bound, "Prometheus metrics on http://{bound}/metrics");
                telemetry = Some(options);
            }
            Err(e) => {
                tracing::error!(%addr, error = %e, "could not start the metrics endpoint; running without it")
            }
        }
    }
    let options = RuntimeOptions::builder().maybe_telemetry_options(telemetry);
    let options = options.build().map_err(|e| anyhow::anyhow!("runtime options: {e}"))?;
    Ok(Runtime::from_current_tokio(options)?)
}

/// How often the worker counts the agents billing has not converged yet.
const CONVERGENCE_POLL: std::time::Duration = std::time::Duration::from_secs(15);

/// Keeps the `slipway_agents_unconverged` gauge current: every [`CONVERGENCE_POLL`], counts
/// through Temporal's visibility the running agents on `task_queue` whose billing command waits
/// to be tried again (`SlipwayBilling = 'converging'`). Visibility is the one place that sees
/// every agent, whichever worker runs it; every worker reports the same count.
fn spawn_convergence_gauge(client: Client, task_queue: String) {
    let query = format!(
        "WorkflowType = 'Agent' AND ExecutionStatus = 'Running' AND TaskQueue = '{task_queue}' \
         AND SlipwayBilling = 'converging'"
    );
    tokio::spawn(async move {
        loop {
            match client.count_workflows(&query, Default::default()).await {
                Ok(count) => slipway_activities::metrics::set_agents_unconverged(count.count() as u64),
                Err(e) => tracing::debug!(error = %e, "could not count unconverged agents"),
            }
            tokio::time::sleep(CONVERGENCE_POLL).await;
        }
    });
}

/// The process's Temporal workers, one per versioning behaviour ([`versioning`]): `main` on
/// `settings.task_queue` (workflows that auto-upgrade to the current version) and `sagas` on its
/// saga queue (sagas pinned to the version that started them). Each registers every workflow and
/// activity: a saga started on the main queue by a release before the saga queue existed
/// finishes there.
pub struct Workers {
    /// The task queue's worker.
    pub main: Worker,
    /// The saga queue's worker.
    pub sagas: Worker,
}

impl Workers {
    /// Stops both (in-flight activities get the shutdown grace period).
    pub fn shutdown_handle(&self) -> impl Fn() + Send + Sync + 'static {
        let (main, sagas) = (self.main.shutdown_handle(), self.sagas.shutdown_handle());
        move || {
            main();
            sagas();
        }
    }

    /// Polls both until shut down. If one stops with an error (e.g. it cannot validate the
    /// namespace), the other is shut down too, so the process exits instead of running half.
    pub async fn run(&mut self) -> anyhow::Result<()> {
        let Workers { main, sagas } = self;
        let (stop_main, stop_sagas) = (main.shutdown_handle(), sagas.shutdown_handle());
        let main = async {
            let ran = main.run().await;
            if ran.is_err() {
                stop_sagas();
            }
            ran
        };
        let sagas = async {
            let ran = sagas.run().await;
            if ran.is_err() {
                stop_main();
            }
            ran
        };
        let (main, sagas) = tokio::join!(main, sagas);
        main?;
        sagas?;
        Ok(())
    }
}

/// The workers on `settings.task_queue` and its saga queue with every Slipway workflow and
/// activity registered.
pub fn build_worker(runtime: &Runtime, client: Client, settings: &WorkerSettings) -> anyhow::Result<Workers> {
    build_worker_with(runtime, client, settings, |_| {})
}

/// [`build_worker`], with a last look at each worker's options (tests hold a workflow change
/// back with a patch activation callback, as a rolling deployment would).
pub fn build_worker_with(
    runtime: &Runtime,
    client: Client,
    settings: &WorkerSettings,
    customize: impl Fn(&mut WorkerOptions),
) -> anyhow::Result<Workers> {
    use temporalio_common::worker::VersioningBehavior;
    let deployment = settings.deployment(&temporalio_client::NamespacedClient::namespace(&client));
    tracing::info!(%deployment, version = %settings.version.label(), "deployment identity (SLIPWAY_DEPLOYMENT) and worker version");
    if settings.metrics_addr.is_some() {
        spawn_convergence_gauge(client.clone(), settings.task_queue.clone());
        backlog::spawn_gauges(
            client.clone(),
            [settings.task_queue.clone(), versioning::saga_task_queue(&settings.task_queue)],
            settings.version.clone(),
        );
    }
    let worker = |task_queue: String, behavior: VersioningBehavior| -> anyhow::Result<Worker> {
        let (provisioning, stack) = (settings.provisioning(&deployment)?, settings.stack(&deployment)?);
        // The sweep lists and deletes with the very clients the sagas create with.
        let sweep = slipway_activities::SweepActivities::new(&provisioning, &stack, client.clone());
        let lookups = slipway_activities::LookupActivities::new(
            client.clone(),
            settings.task_queue.clone(),
            settings.job_gate_check,
        );
        let options = WorkerOptions::new(task_queue)
            .register_activities(ProvisioningActivities::new(provisioning))
            .register_activities(BillingActivities::new(settings.stripe()?))
            .register_activities(StackActivities::new(stack))
            .register_activities(settings.jobs()?)
            .register_activities(lookups)
            .register_activities(settings.reconcile()?)
            .register_activities(sweep)
            // Step durations, retries, compensations and the `activity` span of every attempt.
            .worker_plugin(slipway_activities::metrics::step_plugin());
        let options = slipway_workflows::register_all(options)?
            // On shutdown, in-flight activities get this long to finish before they are handed back.
            .graceful_shutdown_period(settings.shutdown_grace)
            .deployment_options(settings.version.options(behavior))
            .build();
        let mut options = settings.tuning.apply(options);
        customize(&mut options);
        Ok(Worker::new(runtime, client.clone(), options)?)
    };
    Ok(Workers {
        main: worker(settings.task_queue.clone(), VersioningBehavior::AutoUpgrade)?,
        sagas: worker(versioning::saga_task_queue(&settings.task_queue), VersioningBehavior::Pinned)?,
    })
}

impl settings::WorkerTuning {
    /// Apply the knobs that are set to `options`; the others keep the SDK's defaults.
    pub fn apply(&self, mut options: WorkerOptions) -> WorkerOptions {
        use temporalio_sdk::runtime::{
            PollerBehavior,
            worker_tuner::{FixedSizeSlotSupplier, TunerHolder},
        };
        if let Some(n) = self.max_cached_workflows {
            options.max_cached_workflows = n;
        }
        if self.workflow_slots.is_some() || self.activity_slots.is_some() {
            let slots = |n: Option<usize>| FixedSizeSlotSupplier::new(n.unwrap_or(100));
            options.tuner = TunerHolder::builder()
                .workflow_task_slot_supplier(slots(self.workflow_slots))
                .activity_task_slot_supplier(slots(self.activity_slots))
                .local_activity_task_slot_supplier(slots(None))
                .nexus_task_slot_supplier(slots(None))
                .build()
                .into();
        }
        if let Some(n) = self.workflow_pollers {
            options.workflow_task_poller_behavior = Some(PollerBehavior::SimpleMaximum(n));
        }
        if let Some(n) = self.activity_pollers {
            options.activity_task_poller_behavior = Some(PollerBehavior::SimpleMaximum(n));
        }
        options
    }
}
