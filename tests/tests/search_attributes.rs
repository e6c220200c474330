//! The worker registers Slipway's search attributes on a namespace that lacks them, so every
//! workflow is filterable in the Web UI against any server, not only the dev command's.

use temporalio_sdk::testing::{EphemeralExe, LocalWorkflowEnvironmentOptions, WorkflowEnvironment};

#[tokio::test]
async fn the_worker_registers_missing_search_attributes_once() -> anyhow::Result<()> {
    slipway_tests::init_logging();
    let exe = std::env::var("SLIPWAY_TEST_TEMPORAL_CLI")
        .ok()
        .or_else(|| {
            let venv = concat!(env!("CARGO_MANIFEST_DIR"), "/../.venv/bin/temporal");
            std::path::Path::new(venv).is_file().then(|| venv.to_owned())
        })
        .ok_or_else(|| anyhow::anyhow!("no Temporal CLI: run scripts/test once"))?;
    // A server started without any --search-attribute flag.
    let env = WorkflowEnvironment::start_local(
        LocalWorkflowEnvironmentOptions::builder().server_executable(EphemeralExe::ExistingPath(exe)).build(),
    )
    .await?;
    let client = env.client().clone();

    let added = slipway_worker::ensure_search_attributes(&client).await?;
    assert_eq!(
        added,
        ["SlipwayAgentId", "SlipwayBilling", "SlipwayCustomerId", "SlipwayStatus", "SlipwayUserId"]
    );
    let again = slipway_worker::ensure_search_attributes(&client).await?;
    assert!(again.is_empty(), "idempotent: {again:?}");
    // They are usable in visibility queries at once.
    let count = client.count_workflows("SlipwayStatus = 'active'", Default::default()).await?;
    assert_eq!(count.count(), 0);
    env.shutdown().await?;
    Ok(())
}
