//! `slipway dev`: the local stack and the demo, what `scripts/dev` runs once it has installed
//! the Temporal CLI and built the binaries.
//!
//! Starts, in order and each only once the previous one answers: the Temporal dev server (Web
//! UI, SQLite state in `.state/dev/temporal.db`), the sandbox, the worker and the starter, all
//! with the defaults of `scripts/dev.env` (variables already set win). Then it runs
//! `slipway-demo` (or the program given with `--then`, with the stack's settings in its
//! environment) and keeps the stack up until Ctrl-C / SIGTERM, or stops after it with `--once`
//! (exit code = its own). However it ends, every process it started is stopped:
//! SIGTERM first (the worker and starter drain, the dev server closes its database), SIGKILL
//! only for one that does not exit in time. Children run in their own process groups, so a
//! Ctrl-C on the terminal reaches only `slipway`, which then stops them in reverse order.

use std::{
    collections::BTreeMap,
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use nix::{sys::signal::Signal, unistd::Pid};
use tokio::process::{Child, Command};

use crate::{
    env,
    progress::{Progress, log},
};

/// Exit code after Ctrl-C / SIGTERM (128 + SIGINT, as shells report it).
const INTERRUPTED: i32 = 130;
/// How long a stopped process may take before it is killed (the worker gives in-flight
/// activities `SLIPWAY_WORKER_SHUTDOWN_SECS`, 30 by default).
const STOP_GRACE: Duration = Duration::from_secs(40);

/// Options of `slipway dev`.
#[derive(Debug, clap::Args)]
pub(crate) struct DevArgs {
    /// Stop after the demo; the exit code is the demo's.
    #[arg(long)]
    pub(crate) once: bool,
    /// Start the stack but skip the demo.
    #[arg(long, conflicts_with = "once")]
    pub(crate) no_demo: bool,
    /// Run this program instead of the demo, with the stack's settings in its environment
    /// (`SLIPWAY_URL`, `SLIPWAY_JWT_SECRET`, …): e.g. `--once --then node
    /// clients/typescript/dist/examples/agent-lifecycle.js`.
    #[arg(long, num_args = 1.., allow_hyphen_values = true, value_name = "PROGRAM [ARGS]")]
    pub(crate) then: Vec<String>,
}

/// The project checkout: the nearest directory up from here holding `scripts/dev.env`
/// (relative defaults such as `GITHUB_APP_PRIVATE_KEY_PATH` are relative to it).
fn project_root() -> anyhow::Result<PathBuf> {
    let cwd = std::env::current_dir()?;
    cwd.ancestors().find(|d| d.join("scripts/dev.env").is_file()).map(Path::to_path_buf).with_context(|| {
        format!(
            "{} is not inside a Slipway checkout (no scripts/dev.env above it); run `slipway dev` from the project",
            cwd.display()
        )
    })
}

/// A binary shipped next to `slipway` itself (cargo builds them into one directory).
fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the slipway executable")?;
    let path = exe.with_file_name(name);
    anyhow::ensure!(
        path.is_file(),
        "{name} not found next to {} (build it: cargo build --bin {name}, or run scripts/dev)",
        exe.display()
    );
    Ok(path)
}

/// The Temporal CLI: `SLIPWAY_TEMPORAL_CLI`, else the project's `.venv/bin/temporal`, else
/// `temporal` on `PATH`.
fn temporal_cli(root: &Path) -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("SLIPWAY_TEMPORAL_CLI").filter(|p| !p.is_empty()) {
        return Ok(p.into());
    }
    let venv = root.join(".venv/bin/temporal");
    if venv.is_file() {
        return Ok(venv);
    }
    std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).map(|d| d.join("temporal")).find(|p| p.is_file()))
        .context(
            "no Temporal CLI: run scripts/dev once (it installs one into .venv), or set SLIPWAY_TEMPORAL_CLI",
        )
}

fn port_of(addr: &str) -> anyhow::Result<u16> {
    addr.rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .with_context(|| format!("{addr:?} is not a host:port address"))
}

/// True when something already listens on `127.0.0.1:port`.
fn port_in_use(port: u16) -> bool {
    TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], port)), Duration::from_millis(300)).is_ok()
}

/// The processes started so far, in start order.
#[derive(Default)]
struct Stack {
    /// Name shown to people, name of its log file, the process.
    children: Vec<(String, String, Child)>,
}

impl Stack {
    fn spawn(&mut self, name: &str, log: &str, mut cmd: Command) -> anyhow::Result<()> {
        // Own process group: the terminal's Ctrl-C reaches `slipway` only, which stops the
        // children in order. kill_on_drop is the last resort if `slipway` itself fails.
        cmd.process_group(0).kill_on_drop(true);
        let child = cmd.spawn().with_context(|| format!("starting {name}"))?;
        self.children.push((name.to_owned(), log.to_owned(), child));
        Ok(())
    }

    fn last(&mut self) -> &mut Child {
        &mut self.children.last_mut().expect("a started process").2
    }

    /// Resolves when any process exits, with its name and status.
    async fn any_exit(&mut self) -> (String, std::io::Result<std::process::ExitStatus>) {
        if self.children.is_empty() {
            return std::future::pending().await;
        }
        let waits = self.children.iter_mut().map(|(name, _, child)| {
            Box::pin(async move {
                let status = child.wait().await;
                (name.clone(), status)
            })
        });
        futures::future::select_all(waits).await.0
    }

    /// SIGTERM to every process (last started first), then wait; SIGKILL after [`STOP_GRACE`].
    async fn stop(&mut self) {
        let running =
            self.children.iter_mut().map(|(_, _, c)| c.try_wait()).filter(|s| matches!(s, Ok(None))).count();
        if running == 0 {
            return;
        }
        log(&format!("stopping: {running} processes"));
        for (name, _, child) in self.children.iter_mut().rev() {
            if let Some(pid) = child.id() {
                let _ = nix::sys::signal::kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
            }
            if tokio::time::timeout(STOP_GRACE, child.wait()).await.is_err() {
                log(&format!("{name} did not stop within {}s; killing it", STOP_GRACE.as_secs()));
                let _ = child.kill().await;
            }
        }
        self.children.clear();
    }
}

/// Last lines of a log file, for a process that died while starting.
fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Settings of one `slipway dev` run.
struct Plan {
    root: PathBuf,
    state: PathBuf,
    vars: BTreeMap<String, String>,
    ui_port: u16,
    temporal: PathBuf,
    bins: BTreeMap<&'static str, PathBuf>,
}

impl Plan {
    fn new() -> anyhow::Result<Self> {
        let root = project_root()?;
        // `SLIPWAY_DEV_STATE`: another state directory, for a second stack beside a running one
        // (scripts/test runs the client example on its own ports and state).
        let state = match std::env::var("SLIPWAY_DEV_STATE") {
            Ok(dir) if !dir.is_empty() => root.join(dir),
            _ => root.join(".state/dev"),
        };
        std::fs::create_dir_all(&state).with_context(|| format!("creating {}", state.display()))?;
        let mut vars = env::resolved();
        let ui_port: u16 = match std::env::var("SLIPWAY_UI_PORT") {
            Ok(p) if !p.is_empty() => p.parse().context("SLIPWAY_UI_PORT must be a port number")?,
            _ => 8233,
        };
        vars.insert("SLIPWAY_UI_URL".to_owned(), format!("http://localhost:{ui_port}"));
        // This stack's Web UI may ask the codec server without a token (a local stack only).
        if std::env::var_os("SLIPWAY_CODEC_TRUSTED_ORIGINS").is_none() {
            let origins = format!("http://localhost:{ui_port},http://127.0.0.1:{ui_port}");
            vars.insert("SLIPWAY_CODEC_TRUSTED_ORIGINS".to_owned(), origins);
        }
        let mut bins = BTreeMap::new();
        for name in ["slipway-sandbox", "slipway-worker", "slipway-starter", "slipway-demo"] {
            bins.insert(name, sibling(name)?);
        }
        let temporal = temporal_cli(&root)?;
        Ok(Self { root, state, vars, ui_port, temporal, bins })
    }

    /// The state directory, as the project names it (`.state/dev`).
    fn state_dir(&self) -> String {
        self.state.strip_prefix(&self.root).unwrap_or(&self.state).display().to_string()
    }

    fn var(&self, name: &str) -> &str {
        self.vars.get(name).map_or("", String::as_str)
    }

    /// `.state/dev/<name>.log`, truncated, as stdout and stderr (one file offset, like `>f 2>&1`).
    fn log_file(&self, name: &str) -> anyhow::Result<(Stdio, Stdio)> {
        let path = self.state.join(format!("{name}.log"));
        let file = std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok((file.try_clone()?.into(), file.into()))
    }

    /// A command run from the project root with the stack's environment.
    fn command(&self, program: &Path) -> Command {
        let mut cmd = Command::new(program);
        cmd.current_dir(&self.root).envs(&self.vars);
        cmd
    }

    /// A stack process (`slipway-<name>`) with its output in `.state/dev/<name>.log`.
    fn service(&self, name: &str) -> anyhow::Result<Command> {
        let mut cmd = self.command(&self.bins[format!("slipway-{name}").as_str()]);
        let (out, err) = self.log_file(name)?;
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        Ok(cmd)
    }
}

/// `slipway dev`.
pub(crate) async fn run(args: DevArgs) -> anyhow::Result<i32> {
    let plan = Plan::new()?;
    let mut stack = Stack::default();
    let outcome = tokio::select! {
        r = run_stack(&plan, &mut stack, &args) => r,
        () = shutdown_signal() => Ok(INTERRUPTED),
    };
    stack.stop().await;
    outcome
}

async fn run_stack(plan: &Plan, stack: &mut Stack, args: &DevArgs) -> anyhow::Result<i32> {
    let temporal_addr = plan.var("TEMPORAL_ADDRESS").to_owned();
    let temporal_port = port_of(&temporal_addr)?;
    let progress = Progress::new();

    progress.step("checking ports");
    let mut ports = vec![("Temporal Web UI", plan.ui_port, "SLIPWAY_UI_PORT")];
    for (what, var) in [
        ("Temporal", "TEMPORAL_ADDRESS"),
        ("starter HTTP", "SLIPWAY_HTTP_ADDR"),
        ("starter gRPC", "SLIPWAY_GRPC_ADDR"),
        ("sandbox", "SLIPWAY_SANDBOX_ADDR"),
    ] {
        ports.push((what, port_of(plan.var(var))?, var));
    }
    for (what, port, knob) in ports {
        if port_in_use(port) {
            bail!(
                "port {port} ({what}) is in use: stop whatever listens there (another `slipway dev`?), \
                 or set {knob} to a free one"
            );
        }
    }

    progress.step(&format!("starting the Temporal dev server on {temporal_addr}"));
    let db = plan.state.join("temporal.db");
    let mut cmd = plan.command(&plan.temporal);
    cmd.args(["server", "start-dev", "--ip", "127.0.0.1", "--port", &temporal_port.to_string()])
        .args(["--ui-port", &plan.ui_port.to_string(), "--log-level", "warn", "--db-filename"])
        .arg(&db)
        // Payloads are encrypted: the Web UI asks the starter's codec server to show them.
        .args(["--ui-codec-endpoint", &format!("http://{}/codec", plan.var("SLIPWAY_HTTP_ADDR"))]);
    for sa in slipway_workflows::search_attributes::ALL {
        cmd.args(["--search-attribute", &format!("{sa}=Keyword")]);
    }
    let (out, err) = plan.log_file("temporal")?;
    cmd.stdin(Stdio::null()).stdout(out).stderr(err);
    stack.spawn("the Temporal dev server", "temporal", cmd)?;
    wait_temporal(plan, stack, &temporal_addr).await?;
    progress.done(&format!(
        "Temporal dev server on {temporal_addr}, Web UI on {} (state in {}/temporal.db)",
        plan.var("SLIPWAY_UI_URL"),
        plan.state_dir()
    ));

    let sandbox = plan.var("SLIPWAY_SANDBOX_ADDR");
    progress.step("starting the sandbox");
    stack.spawn("the sandbox", "sandbox", plan.service("sandbox")?)?;
    wait_http(plan, stack, &format!("http://{sandbox}/_sandbox/health"), "the sandbox").await?;
    progress.done(&format!("sandbox on http://{sandbox}"));

    progress.step("starting the worker");
    stack.spawn("the worker", "worker", plan.service("worker")?)?;
    progress.step("starting the starter");
    stack.spawn("the starter", "starter", plan.service("starter")?)?;
    let http = plan.var("SLIPWAY_HTTP_ADDR");
    wait_http(plan, stack, &format!("http://{http}/readyz"), "the starter").await?;
    progress.done(&format!(
        "worker on task queue {}; starter on http://{http} (gRPC {})",
        plan.var("SLIPWAY_TASK_QUEUE"),
        plan.var("SLIPWAY_GRPC_ADDR")
    ));
    progress.finish();
    log(&format!("logs in {}/", plan.state_dir()));

    if !args.no_demo {
        let (mut demo, what) = match args.then.split_first() {
            Some((program, rest)) => {
                let mut cmd = plan.command(Path::new(program));
                cmd.args(rest).env("SLIPWAY_URL", format!("http://{http}"));
                (cmd, program.as_str())
            }
            None => (plan.command(&plan.bins["slipway-demo"]), "slipway-demo"),
        };
        demo.stdin(Stdio::null()).process_group(0).kill_on_drop(true);
        let mut demo = demo.spawn().with_context(|| format!("starting {what}"))?;
        let code = tokio::select! {
            status = demo.wait() => status?.code().unwrap_or(1),
            (name, status) = stack.any_exit() => {
                let _ = demo.kill().await;
                return Err(exited(plan, &name, status));
            }
        };
        if args.once {
            return Ok(code);
        }
    }
    log(&format!(
        "stack is up: Web UI {} · sandbox inventory http://{sandbox}/_sandbox/state · Ctrl-C stops everything",
        plan.var("SLIPWAY_UI_URL")
    ));
    let (name, status) = stack.any_exit().await;
    Err(exited(plan, &name, status))
}

fn exited(plan: &Plan, name: &str, status: std::io::Result<std::process::ExitStatus>) -> anyhow::Error {
    let status = status.map_or_else(|e| e.to_string(), |s| s.to_string());
    anyhow::anyhow!("{name} exited unexpectedly ({status}); see {}/*.log", plan.state.display())
}

/// Wait until the dev server answers `temporal operator cluster health`.
async fn wait_temporal(plan: &Plan, stack: &mut Stack, address: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let health = Command::new(&plan.temporal)
            .args(["operator", "cluster", "health", "--address", address])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await;
        if health.is_ok_and(|s| s.success()) {
            return Ok(());
        }
        if let Ok(Some(status)) = stack.last().try_wait() {
            bail!(
                "the Temporal dev server exited ({status}):\n{}",
                tail(&plan.state.join("temporal.log"), 20)
            );
        }
        if Instant::now() > deadline {
            bail!(
                "the Temporal dev server did not become healthy on {address} (see {}/temporal.log)",
                plan.state_dir()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Wait until `url` (of `what`) answers 2xx; fail with its log's tail if a process exits.
async fn wait_http(plan: &Plan, stack: &mut Stack, url: &str, what: &str) -> anyhow::Result<()> {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if http.get(url).send().await.is_ok_and(|r| r.status().is_success()) {
            return Ok(());
        }
        for (name, log, child) in &mut stack.children {
            if let Ok(Some(status)) = child.try_wait() {
                bail!("{name} exited ({status}):\n{}", tail(&plan.state.join(format!("{log}.log")), 20));
            }
        }
        if Instant::now() > deadline {
            bail!("{what} did not become ready ({url}); see {}/*.log", plan.state_dir());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
}
