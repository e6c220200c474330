//! `slipway-bench`: Slipway measured side by side with bare-Temporal baselines, on a local
//! Temporal dev server it starts itself. Run it through `scripts/bench` (which builds it and the
//! binaries under test); BENCHMARKS.md explains the method and the figures.
//!
//! ```text
//! slipway-bench [--quick | --smoke] [--out DIR] [--bin-dir DIR] [--temporal PATH] [--temporal-port PORT]
//! slipway-bench baseline-worker      # internal: the baseline's worker process
//! ```

/// `[bench  12.3s] message` on stderr: the time since start shows where a run spends its minutes.
macro_rules! say {
    ($($arg:tt)*) => {
        eprintln!("[bench {:>6.1}s] {}", crate::started().elapsed().as_secs_f64(), format_args!($($arg)*))
    };
}

mod baseline;
mod bench;
mod load;
mod machine;
mod plan;
mod plot;
mod render;
mod report;
mod stack;
mod stripe;

use std::{path::PathBuf, str::FromStr, time::Instant};

use anyhow::{Context, bail};
use temporalio_client::{Client, ClientOptions, Connection, ConnectionOptions, Url};

use crate::{
    bench::Bench,
    load::Stats,
    plan::Plan,
    render::{markdown, print_table},
    report::{AckRow, Report},
    stack::{Bins, Stack},
};

/// A client to the dev server at `address` (`host:port`).
pub async fn connect(address: &str) -> anyhow::Result<Client> {
    let url = Url::from_str(&format!("http://{address}"))?;
    let conn =
        Connection::connect(ConnectionOptions::new(url).identity("slipway-bench".to_owned()).build()).await?;
    let options = ClientOptions::new("default").data_converter(stack::encryption().data_converter()).build();
    Ok(Client::new(conn, options)?)
}

/// When the bench started (first call).
fn started() -> Instant {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *START.get_or_init(Instant::now)
}

struct Args {
    quick: bool,
    smoke: bool,
    out: PathBuf,
    bins: PathBuf,
    temporal: PathBuf,
    temporal_port: Option<u16>,
}

fn parse_args() -> anyhow::Result<Args> {
    let exe = std::env::current_exe()?;
    let mut args = Args {
        quick: false,
        smoke: false,
        out: PathBuf::from(".state/bench"),
        bins: exe.parent().context("binary directory")?.to_path_buf(),
        temporal: PathBuf::from(".venv/bin/temporal"),
        temporal_port: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--quick" => args.quick = true,
            "--smoke" => args.smoke = true,
            "--out" => args.out = value()?.into(),
            "--bin-dir" => args.bins = value()?.into(),
            "--temporal" => args.temporal = value()?.into(),
            "--temporal-port" => args.temporal_port = Some(value()?.parse()?),
            "-h" | "--help" => {
                println!(
                    "slipway-bench [--quick | --smoke] [--out DIR] [--bin-dir DIR] [--temporal PATH] [--temporal-port PORT]"
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?} (try --help)"),
        }
    }
    Ok(args)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if std::env::args().nth(1).as_deref() == Some("baseline-worker") {
        return baseline::run_worker().await;
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = parse_args()?;
    let plan = match (args.smoke, args.quick) {
        (true, _) => Plan::smoke(),
        (false, true) => Plan::quick(),
        (false, false) => Plan::full(),
    };
    std::fs::create_dir_all(&args.out)?;
    let began = started();
    let port = match args.temporal_port {
        Some(p) => p,
        None => stack::free_port()?,
    };
    let bins = Bins { dir: args.bins.clone(), temporal: args.temporal.clone() };
    say!("starting Temporal (in-memory dev server), sandbox, starter, worker, baseline worker");
    let mut stack = Stack::start(&bins, &args.out, port).await?;
    let bench = Bench::new(&stack, plan.clone(), &args.out).await?;
    // Ctrl-C / SIGTERM end the run with every process stopped (the stack stops them on drop).
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let report = tokio::select! {
        r = bench.run(&mut stack) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
        _ = term.recv() => Err(anyhow::anyhow!("terminated")),
    };
    let report = match report {
        Ok(r) => r,
        Err(e) => {
            say!("failed: {e:#}; process logs are in {}", args.out.display());
            return Err(e);
        }
    };
    let report =
        Report { run_secs: began.elapsed().as_secs_f64(), quick: args.quick || args.smoke, ..report };
    let json_path = args.out.join("results.json");
    std::fs::write(&json_path, serde_json::to_string_pretty(&report)?)?;
    let png = args.out.join("ack-latency.png");
    let point = |load: f64, s: &Stats| plot::Point { load, p50: s.p50_ms, p99: s.p99_ms };
    let open: Vec<&AckRow> = report.ack.iter().filter(|r| r.offered_per_sec.is_some()).collect();
    let saturation = report.ack.iter().find(|r| r.offered_per_sec.is_none()).map(|r| {
        (point(r.slipway.achieved_per_sec, &r.slipway), point(r.baseline.achieved_per_sec, &r.baseline))
    });
    let plot = plot::ack_latency(
        &png,
        "Stripe webhook ack latency: Slipway starter vs raw signal-with-start",
        &open.iter().map(|r| point(r.offered_per_sec.unwrap_or_default(), &r.slipway)).collect::<Vec<_>>(),
        &open.iter().map(|r| point(r.offered_per_sec.unwrap_or_default(), &r.baseline)).collect::<Vec<_>>(),
        saturation,
    );
    print_table(&report);
    let md_path = args.out.join("results.md");
    std::fs::write(&md_path, markdown(&report))?;
    println!("\nresults: {} (and {}, the tables for BENCHMARKS.md)", json_path.display(), md_path.display());
    match plot {
        Ok(()) => println!("plot:    {}", png.display()),
        Err(e) => println!("plot:    not drawn: {e:#}"),
    }
    let failures = report.failures();
    for f in &failures {
        println!("FAILED   {f}");
    }
    if !failures.is_empty() && (args.smoke || args.quick) {
        bail!("{} phase(s) failed (see above); process logs are in {}", failures.len(), args.out.display());
    }
    Ok(())
}
