//! Operators find an agent in the Temporal Web UI by its search attributes, and read its
//! encrypted payloads there through the starter's codec server.
//!
//! The test starts its own Temporal dev server *with* the Web UI (the suite's shared server is
//! headless), provisions two agents through signed checkout webhooks, then drives headless
//! Chromium (Playwright, `tests/browser/webui.mjs`) to the workflow list filtered by
//! `SlipwayAgentId` and asserts what the table shows: the agent's workflow running, its
//! provisioning saga completed, and nothing of the other agent. It writes a screenshot to
//! `$CARGO_TARGET_TMPDIR/web-ui-agent.png` (or `SLIPWAY_WEBUI_SCREENSHOT`).
//!
//! Needs Chromium (`CHROMIUM`, default `/usr/bin/chromium`), Node.js ≥ 20 and
//! `tests/browser/node_modules` (`scripts/test` installs all three). Missing pieces fail the test
//! with what to install: it never skips.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use anyhow::{Context, bail, ensure};
use serde_json::Value;
use slipway_proto::model::AgentStatus;
use slipway_tests::{Options, SEARCH_ATTRIBUTES, TestApp};
use tokio::process::{Child, Command};

const WAIT: Duration = Duration::from_secs(60);
const BROWSER_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/browser");

fn temporal_cli() -> anyhow::Result<String> {
    if let Ok(p) = std::env::var("SLIPWAY_TEST_TEMPORAL_CLI") {
        return Ok(p);
    }
    let venv = concat!(env!("CARGO_MANIFEST_DIR"), "/../.venv/bin/temporal");
    ensure!(Path::new(venv).is_file(), "no Temporal CLI: run scripts/test once (it installs .venv)");
    Ok(venv.to_owned())
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// What the browser test needs, or one error naming everything that is missing.
fn browser_prerequisites() -> anyhow::Result<(String, PathBuf)> {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned());
    let mut missing = Vec::new();
    if !Path::new(&chromium).is_file() {
        missing.push(format!("Chromium at {chromium} (apt-get install chromium)"));
    }
    let node = std::process::Command::new("node").arg("--version").output();
    match node {
        Ok(out) if out.status.success() => {
            let version = String::from_utf8_lossy(&out.stdout);
            let major: u32 =
                version.trim().trim_start_matches('v').split('.').next().unwrap_or("0").parse().unwrap_or(0);
            if major < 20 {
                missing.push(format!("Node.js >= 20 (found {})", version.trim()));
            }
        }
        _ => missing.push("Node.js >= 20 (node on PATH)".to_owned()),
    }
    let script = Path::new(BROWSER_DIR).join("webui.mjs");
    if !Path::new(BROWSER_DIR).join("node_modules/playwright-core").is_dir() {
        missing.push("tests/browser/node_modules (cd tests/browser && npm ci)".to_owned());
    }
    if !missing.is_empty() {
        bail!("the Web UI test needs: {} (scripts/test installs them)", missing.join("; "));
    }
    Ok((chromium, script))
}

/// A dev server with its Web UI, stopped when dropped.
struct DevServerWithUi {
    address: String,
    ui_url: String,
    _child: Child,
}

async fn start_dev_server_with_ui(cli: &str, codec_endpoint: &str) -> anyhow::Result<DevServerWithUi> {
    let (port, ui_port) = (free_port()?, free_port()?);
    let mut cmd = Command::new(cli);
    cmd.args(["server", "start-dev", "--ip", "127.0.0.1", "--log-level", "warn"]).args([
        "--port",
        &port.to_string(),
        "--ui-port",
        &ui_port.to_string(),
        "--ui-codec-endpoint",
        codec_endpoint,
    ]);
    for sa in SEARCH_ATTRIBUTES {
        cmd.args(["--search-attribute", &format!("{sa}=Keyword")]);
    }
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("start dev server")?;
    let address = format!("127.0.0.1:{port}");
    let ui_url = format!("http://127.0.0.1:{ui_port}");
    let http = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let healthy = Command::new(cli)
            .args(["operator", "cluster", "health", "--address", &address])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .is_ok_and(|s| s.success());
        let ui = http.get(&ui_url).send().await.is_ok_and(|r| r.status().is_success());
        if healthy && ui {
            return Ok(DevServerWithUi { address, ui_url, _child: child });
        }
        if let Some(status) = child.try_wait()? {
            bail!("Temporal dev server exited: {status}");
        }
        ensure!(tokio::time::Instant::now() < deadline, "dev server with UI not up on {address} / {ui_url}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The starter's codec server (its whole router, offline: only `/codec/*` is asked) on
/// `listener`, trusting the UI's origin as `slipway dev` does.
fn serve_codec(listener: std::net::TcpListener, ui_url: &str) -> anyhow::Result<()> {
    let origins = format!("{ui_url},{}", ui_url.replace("127.0.0.1", "localhost"));
    let vars = [
        ("SLIPWAY_PAYLOAD_KEYS", slipway_tests::PAYLOAD_KEYS.to_owned()),
        ("SLIPWAY_CODEC_TRUSTED_ORIGINS", origins),
        ("SLIPWAY_JWT_SECRET", slipway_tests::JWT_SECRET.to_owned()),
    ];
    let settings = slipway_starter::StarterSettings::from_lookup(|k| {
        vars.iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| v.clone())
            .or_else(|| slipway_starter::settings::REQUIRED.contains(&k).then(|| "x".repeat(32)))
    })?;
    let router = slipway_starter::app(slipway_starter::AppState::offline(settings));
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let service = router.into_make_service_with_connect_info::<std::net::SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, service).await });
    Ok(())
}

#[tokio::test]
async fn the_web_ui_lists_an_agents_workflows_filtered_by_slipway_agent_id() -> anyhow::Result<()> {
    // Arrange: everything the browser needs first, so a missing install fails in a second.
    slipway_tests::init_logging();
    let (chromium, script) = browser_prerequisites()?;
    // Payloads are encrypted: the UI asks a codec server, the starter's, for what it shows.
    let codec = std::net::TcpListener::bind("127.0.0.1:0")?;
    let codec_url = format!("http://{}/codec", codec.local_addr()?);
    let server = start_dev_server_with_ui(&temporal_cli()?, &codec_url).await?;
    let app =
        TestApp::spawn_with(Options { temporal_address: Some(server.address.clone()), ..Options::default() })
            .await?;
    serve_codec(codec, &server.ui_url)?;
    let (user, agent) = (app.id("ui-user"), app.id("ui-agent"));
    let (other_user, other_agent) = (app.id("ui-other-user"), app.id("ui-other-agent"));

    // Act: two paid checkouts, both provisioned for real.
    for (u, a) in [(&user, &agent), (&other_user, &other_agent)] {
        let (event, _) = app.checkout_event(u, a, "fsn1");
        let resp = app.post_stripe(&event).await?;
        assert_eq!(resp.status(), 200, "{}", resp.text().await?);
    }
    for a in [&agent, &other_agent] {
        let record = app.wait_for_status(a, &[AgentStatus::Active, AgentStatus::Failed], WAIT).await?;
        assert_eq!(record.status, AgentStatus::Active, "{record:#?}");
    }

    // The operator's view: the workflow list filtered by SlipwayAgentId.
    let screenshot = std::env::var("SLIPWAY_WEBUI_SCREENSHOT")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_TARGET_TMPDIR")).join("web-ui-agent.png"));
    let _ = std::fs::remove_file(&screenshot);
    let (agent_wf, saga_wf) = (format!("agent-{agent}"), format!("provisioning-{user}"));
    let query = format!("SlipwayAgentId=\"{agent}\"");
    let run = Command::new("node")
        .arg(&script)
        .current_dir(BROWSER_DIR)
        .env("WEBUI_URL", &server.ui_url)
        .env("WEBUI_QUERY", &query)
        .env("WEBUI_EXPECT", format!("{agent_wf},{saga_wf}"))
        .env("WEBUI_SCREENSHOT", &screenshot)
        .env("WEBUI_TIMEOUT_MS", "60000")
        // The saga's input, as only its decoded payload says it (the policy's field names).
        .env("WEBUI_DECODED_WORKFLOW", &saga_wf)
        .env("WEBUI_DECODED_TEXT", "callback_deadline_secs")
        .env("CHROMIUM", &chromium)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(150), run).await.context("browser timed out")??;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(out.status.success(), "webui.mjs failed ({}): {stderr}", out.status);
    let page: Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("webui.mjs output: {}", String::from_utf8_lossy(&out.stdout)))?;

    // Assert: the UI applied the filter, and the table shows exactly this agent's workflows.
    assert_eq!(page["filter"], format!("SlipwayAgentId = \"{agent}\""), "{page:#}");
    let rows: Vec<(String, String, String)> = page["rows"]
        .as_array()
        .context("rows")?
        .iter()
        .map(|r| {
            let s = |k: &str| r[k].as_str().unwrap_or_default().to_owned();
            (s("workflowId"), s("type"), s("status"))
        })
        .collect();
    let row = |id: &str| rows.iter().find(|(w, _, _)| w == id).cloned();
    assert_eq!(
        row(&agent_wf),
        Some((agent_wf.clone(), "Agent".to_owned(), "RUNNING".to_owned())),
        "{page:#}"
    );
    assert_eq!(
        row(&saga_wf),
        Some((saga_wf.clone(), "ProvisionAgent".to_owned(), "COMPLETED".to_owned())),
        "{page:#}"
    );
    assert_eq!(rows.len(), 2, "only the filtered agent's workflows: {page:#}");
    assert!(
        !rows.iter().any(|(w, _, _)| w.contains(&other_agent) || w.contains(&other_user)),
        "the other agent is filtered out: {page:#}"
    );
    assert_eq!(page["heading"], "2 Workflows", "{page:#}");
    // The saga's page shows its payloads decoded, through the codec server.
    assert_eq!(page["decoded"], true, "the saga's input is shown decoded: {page:#}");
    assert!(page["codecRequests"].as_u64().unwrap_or(0) > 0, "the UI asked the codec server: {page:#}");
    let png = std::fs::read(&screenshot).with_context(|| format!("screenshot {}", screenshot.display()))?;
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "a real screenshot: {} bytes", png.len());
    Ok(())
}
