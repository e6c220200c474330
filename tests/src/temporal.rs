//! The Temporal dev server a test runs against, and clients to it. Nothing about Temporal is
//! faked: a test uses the server `scripts/test` shares (`SLIPWAY_TEST_TEMPORAL_ADDRESS`) or, run
//! alone, starts its own, with the search attributes the workflows need.

use std::str::FromStr;

use anyhow::Context;
use temporalio_client::{Client, ClientOptions, Connection, ConnectionOptions, Url};
use temporalio_sdk::testing::{EphemeralExe, LocalWorkflowEnvironmentOptions, WorkflowEnvironment};

/// Keyword search attributes to register on a dev server the harness starts itself.
pub const SEARCH_ATTRIBUTES: [&str; 5] = slipway_workflows::search_attributes::ALL;

/// A Temporal dev server to use: shared (scripts/test) or owned by this test.
pub(crate) enum TemporalServer {
    Shared(String),
    Owned { address: String, _env: Box<WorkflowEnvironment<temporalio_sdk::testing::LocalServer>> },
}

fn find_temporal_cli() -> Option<String> {
    if let Ok(p) = std::env::var("SLIPWAY_TEST_TEMPORAL_CLI") {
        return Some(p);
    }
    let venv = concat!(env!("CARGO_MANIFEST_DIR"), "/../.venv/bin/temporal");
    if std::path::Path::new(venv).is_file() {
        return Some(venv.to_owned());
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("temporal"))
            .find(|p| p.is_file())
            .map(|p| p.to_string_lossy().into_owned())
    })
}

/// Dynamic config for Worker Deployment drainage (the server's defaults are minutes).
const DRAINAGE_CONFIG: [(&str, &str); 2] = [
    ("matching.wv.VersionDrainageStatusRefreshInterval", "\"2s\""),
    ("matching.wv.VersionDrainageStatusVisibilityGracePeriod", "\"2s\""),
];

pub(crate) async fn temporal_server() -> anyhow::Result<TemporalServer> {
    if let Ok(addr) = std::env::var("SLIPWAY_TEST_TEMPORAL_ADDRESS") {
        return Ok(TemporalServer::Shared(addr));
    }
    let exe =
        find_temporal_cli().context("no Temporal CLI: run scripts/test once, or put `temporal` on PATH")?;
    let mut extra = Vec::new();
    for sa in SEARCH_ATTRIBUTES {
        extra.push("--search-attribute".to_owned());
        extra.push(format!("{sa}=Keyword"));
    }
    // As scripts/common.sh: a retired version reports "drained" within seconds.
    for (key, value) in DRAINAGE_CONFIG {
        extra.push("--dynamic-config-value".to_owned());
        extra.push(format!("{key}={value}"));
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let env = WorkflowEnvironment::start_local(
        LocalWorkflowEnvironmentOptions::builder()
            .server_executable(EphemeralExe::ExistingPath(exe))
            .port(port)
            .extra_args(extra)
            .build(),
    )
    .await?;
    Ok(TemporalServer::Owned { address: format!("127.0.0.1:{port}"), _env: Box::new(env) })
}

impl TemporalServer {
    pub(crate) fn address(&self) -> String {
        match self {
            Self::Shared(a) => a.clone(),
            Self::Owned { address, .. } => address.clone(),
        }
    }
}

/// A client to the test server at `address` (`host:port`) with the test processes' keys.
pub async fn connect(address: &str) -> anyhow::Result<Client> {
    connect_with(address, &crate::encryption()).await
}

/// A client to the test server at `address` with `encryption` (e.g. only an old key).
pub async fn connect_with(address: &str, encryption: &slipway_codec::Encryption) -> anyhow::Result<Client> {
    let url = Url::from_str(&format!("http://{address}"))?;
    let conn =
        Connection::connect(ConnectionOptions::new(url).identity("slipway-tests".to_owned()).build()).await?;
    let options = ClientOptions::new("default").data_converter(encryption.data_converter()).build();
    Ok(Client::new(conn, options)?)
}
