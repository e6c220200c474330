//! The report for people: the table printed at the end of a run, and the Markdown tables
//! (`results.md`) that BENCHMARKS.md quotes.

use crate::report::Report;

pub(crate) fn print_table(r: &Report) {
    let m = &r.machine;
    println!();
    println!(
        "Slipway benchmarks{}  ({} CPUs, {}, {} GiB; run took {:.0} s)",
        if r.quick { " (QUICK: small sizes, not for publication)" } else { "" },
        m.cpus,
        m.cpu_model,
        m.memory_gib,
        r.run_secs
    );
    println!(
        "worker tuning (both workers): {}",
        r.worker_tuning.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ")
    );
    println!("\n1. Webhook ack latency, {} (baseline: the same RPC sent straight to Temporal)", r.ack_event);
    println!(
        "{:<14} | {:>8} {:>8} {:>8} {:>8} {:>6} | {:>8} {:>8} {:>8} {:>8} {:>6} | {:>6} {:>6}",
        "load",
        "ok/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "errors",
        "ok/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "errors",
        "p50 x",
        "p99 x"
    );
    println!(
        "{:<14} | {:^45} | {:^45} |",
        "", "Slipway (signed webhook → starter)", "baseline (raw signal-with-start)"
    );
    for row in &r.ack {
        let load = row
            .offered_per_sec
            .map_or(format!("saturation/{}", r.plan.saturation_concurrency), |x| format!("{x:.0}/s open"));
        let (s, b) = (&row.slipway, &row.baseline);
        println!(
            "{:<14} | {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>6} | {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>6} | {:>6.2} {:>6.2}",
            load,
            s.achieved_per_sec,
            s.p50_ms,
            s.p99_ms,
            s.max_ms,
            s.errors,
            b.achieved_per_sec,
            b.p50_ms,
            b.p99_ms,
            b.max_ms,
            b.errors,
            row.p50_ratio,
            row.p99_ratio
        );
        if row.rounds.len() > 1 {
            println!("{:<14}   p99 ratio 90% interval: {}", "", row.spread());
        }
    }
    let p = &r.provisioning;
    println!(
        "\n2. Provisioning, {} concurrent sagas ({} activities each), zero-latency sandbox providers",
        p.concurrent, p.activities_per_saga
    );
    println!(
        "{:<44} | {:>9} {:>7} {:>9} {:>9} {:>8}",
        "", "sagas/s", "failed", "p50 ms", "p99 ms", "retries"
    );
    for (name, s) in [
        ("Slipway (checkout webhook → saga completed)", &p.slipway),
        ("same protocol, bare SDK (no-op activities)", &p.same_protocol),
        ("baseline (bare workflow, no-op activities)", &p.baseline),
    ] {
        println!(
            "{:<44} | {:>9.1} {:>7} {:>9.0} {:>9.0} {:>8}",
            name, s.per_sec, s.failed, s.p50_ms, s.p99_ms, s.webhook_retries
        );
    }
    println!(
        "throughput ratio Slipway/same protocol: {:.2} ({}); Slipway/bare workflow: {:.2}",
        p.same_protocol_ratio,
        p.spread(),
        p.throughput_ratio
    );
    for (name, s) in [("Slipway", &p.slipway), ("same protocol", &p.same_protocol), ("bare", &p.baseline)] {
        println!("CPU per provisioning, {name}: {}", s.cpu_split());
    }
    if let Some(a) = &p.same_protocol.checkout_ack {
        println!(
            "same protocol, the checkout's signal-with-start: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
            a.p50_ms, a.p99_ms, a.max_ms
        );
    }
    if let Some(a) = &p.slipway.checkout_ack {
        println!(
            "checkout webhook answers: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms; answered 503 (and sent again): {}",
            a.p50_ms, a.p99_ms, a.max_ms, p.slipway.webhook_retries
        );
    }
    if let Some(e) = p
        .slipway
        .first_error
        .as_ref()
        .or(p.same_protocol.first_error.as_ref())
        .or(p.baseline.first_error.as_ref())
    {
        println!("first saga error: {e}");
    }
    let s = &r.scale;
    println!(
        "\n3. Scale: {} Agent workflows (created at {:.0}/s, {} errors), sticky cache {}",
        s.agents, s.create_per_sec, s.create_errors, s.sticky_cache
    );
    println!(
        "worker RSS: {:.1} MiB idle → {:.1} MiB after creating → {:.1} MiB after the commands",
        s.worker_rss_mib_before, s.worker_rss_mib_after_create, s.worker_rss_mib_after_commands
    );
    println!(
        "worker idle {:.0} s after the last creation{}",
        s.idle_after_create_secs,
        if s.idle_after_create { "" } else { " (NOT idle: the cached phase met the backlog)" }
    );
    for (name, c) in [
        ("stop command, during creation backlog", &s.command_during_backlog),
        ("stop command, agent in sticky cache", &s.command_in_cache),
        ("stop command, agent NOT in cache", &s.command_not_in_cache),
    ] {
        println!(
            "{:<38} | n={:<4} p50 {:>7.1} ms  p99 {:>7.1} ms  max {:>7.1} ms  errors {}",
            name, c.sent, c.p50_ms, c.p99_ms, c.max_ms, c.errors
        );
    }
    println!("\nProtocol cost of one provisioning (from its histories):");
    println!(
        "{:<16} | {:>5} {:>5} {:>5} {:>5} {:>6} {:>5} {:>6} {:>5} {:>7} | {:>7}",
        "workflow",
        "tasks",
        "acts",
        "sigs",
        "upds",
        "upsert",
        "memo",
        "timers",
        "child",
        "markers",
        "actions"
    );
    let total = ("all", &r.protocol.total);
    let same = ("same protocol", &r.protocol.same_protocol);
    for (name, c) in r.protocol.per_workflow.iter().map(|(n, c)| (n.as_str(), c)).chain([total, same]) {
        let [t, a, s, u, up, m, ti, ch, mk, all] = c.cells();
        println!(
            "{name:<16} | {t:>5} {a:>5} {s:>5} {u:>5} {up:>6} {m:>5} {ti:>6} {ch:>5} {mk:>7} | {all:>7}"
        );
    }
    let h = &r.history;
    println!(
        "\n4. History: {} stop commands on one agent in {:.0} s ({} errors): current run {} events, longest run {} (limit {}), {} runs in all: {}",
        h.commands,
        h.secs,
        h.errors,
        h.current_run_history_length,
        h.longest_run_history_length,
        h.history_limit,
        h.total_runs,
        if h.bounded {
            "BOUNDED by continue-as-new"
        } else {
            "NOT BOUNDED: the current run grew past the limit"
        }
    );
    println!("\n5. Events: {}", events_line(r));
}

/// Scenario 5's line.
fn events_line(r: &Report) -> String {
    let e = &r.events;
    format!(
        "{} step events of {} provisionings followed live ({} failed): change → event on the wire p50 {:.0} ms, p95 {:.0} ms, p99 {:.0} ms, max {:.0} ms (reads every {} ms; target p95 ≤ {:.0} ms: {})",
        e.events,
        e.agents,
        e.errors,
        e.p50_ms,
        e.p95_ms,
        e.p99_ms,
        e.max_ms,
        e.poll_ms,
        e.target_p95_ms,
        if e.p95_ms <= e.target_p95_ms { "met" } else { "NOT MET" }
    )
}

/// The results as Markdown tables, ready for BENCHMARKS.md.
pub(crate) fn markdown(r: &Report) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let f = |v: f64| if v.is_finite() { format!("{v:.1}") } else { "n/a".to_owned() };
    let _ = writeln!(o, "**1. Webhook ack latency** ({}; ms)\n", r.ack_event);
    let _ = writeln!(
        o,
        "| load | Slipway ok/s | p50 | p99 | max | errors | baseline ok/s | p50 | p99 | max | errors | p50 ratio | p99 ratio | p99 ratio, 90% interval |"
    );
    let _ = writeln!(o, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    for row in &r.ack {
        let load = row
            .offered_per_sec
            .map_or(format!("saturation ({} senders)", r.plan.saturation_concurrency), |x| {
                format!("{x:.0}/s")
            });
        let (s, b) = (&row.slipway, &row.baseline);
        let _ = writeln!(
            o,
            "| {load} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.2} | {:.2} | {} |",
            f(s.achieved_per_sec),
            f(s.p50_ms),
            f(s.p99_ms),
            f(s.max_ms),
            s.errors,
            f(b.achieved_per_sec),
            f(b.p50_ms),
            f(b.p99_ms),
            f(b.max_ms),
            b.errors,
            row.p50_ratio,
            row.p99_ratio,
            row.spread()
        );
    }
    let p = &r.provisioning;
    let _ = writeln!(
        o,
        "\n**2. Provisioning**, {} concurrent sagas, {} activities each, zero-latency providers\n",
        p.concurrent, p.activities_per_saga
    );
    let _ = writeln!(
        o,
        "| | sagas/s | completed | failed | p50 ms | p99 ms | webhook retries |\n|---|---:|---:|---:|---:|---:|---:|"
    );
    for (name, s) in [
        ("Slipway (checkout webhook → saga done)", &p.slipway),
        ("same protocol, bare SDK (no-op activities)", &p.same_protocol),
        ("baseline (bare workflow, no-op activities)", &p.baseline),
    ] {
        let _ = writeln!(
            o,
            "| {name} | {} | {} | {} | {:.0} | {:.0} | {} |",
            f(s.per_sec),
            s.completed,
            s.failed,
            s.p50_ms,
            s.p99_ms,
            s.webhook_retries
        );
    }
    let _ = writeln!(
        o,
        "\nThroughput ratio Slipway / same protocol: **{:.2}** ({}); Slipway / bare workflow: **{:.2}** (medians over the rounds; the table shows the median round)",
        p.same_protocol_ratio,
        p.spread(),
        p.throughput_ratio
    );
    let _ = writeln!(o);
    for (name, s) in [("Slipway", &p.slipway), ("same protocol", &p.same_protocol), ("bare", &p.baseline)] {
        let _ = writeln!(o, "- CPU per provisioning, {name} (ms, by process): {}", s.cpu_split());
    }
    if let Some(a) = &p.same_protocol.checkout_ack {
        let _ = writeln!(
            o,
            "\nSame protocol, the checkout's signal-with-start: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
            a.p50_ms, a.p99_ms, a.max_ms
        );
    }
    if let Some(a) = &p.slipway.checkout_ack {
        let _ = writeln!(
            o,
            "\nCheckout webhook answers: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms; answered 503: {}",
            a.p50_ms, a.p99_ms, a.max_ms, p.slipway.webhook_retries
        );
    }
    let s = &r.scale;
    let _ = writeln!(
        o,
        "\n**3. Scale**: {} `Agent` workflows created at {:.0}/s ({} errors); sticky cache {}\n",
        s.agents, s.create_per_sec, s.create_errors, s.sticky_cache
    );
    let _ = writeln!(
        o,
        "| worker RSS idle | after creating | after the commands |\n|---:|---:|---:|\n| {} MiB | {} MiB | {} MiB |\n",
        f(s.worker_rss_mib_before),
        f(s.worker_rss_mib_after_create),
        f(s.worker_rss_mib_after_commands)
    );
    let _ = writeln!(
        o,
        "Worker idle {:.0} s after the last creation{}.\n",
        s.idle_after_create_secs,
        if s.idle_after_create { "" } else { " (NOT idle: the cached phase met the backlog)" }
    );
    let _ = writeln!(
        o,
        "| `stop` command ({}/s, open loop) | n | p50 ms | p99 ms | max ms | errors |\n|---|---:|---:|---:|---:|---:|",
        r.plan.command_rate
    );
    for (name, c) in [
        ("just created, worker still starting them (backlog)", &s.command_during_backlog),
        ("agent in the sticky cache", &s.command_in_cache),
        ("agent NOT in the sticky cache", &s.command_not_in_cache),
    ] {
        let _ = writeln!(
            o,
            "| {name} | {} | {} | {} | {} | {} |",
            c.sent,
            f(c.p50_ms),
            f(c.p99_ms),
            f(c.max_ms),
            c.errors
        );
    }
    let _ = writeln!(
        o,
        "\n**Protocol cost of one provisioning** (from its histories)\n\n| workflow | workflow tasks | activities | signals | updates | upserts | memo changes | timers | child workflows | markers | actions (all but tasks) |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    let total = ("all", &r.protocol.total);
    let same = ("same protocol, bare SDK (all three)", &r.protocol.same_protocol);
    for (name, c) in r.protocol.per_workflow.iter().map(|(n, c)| (n.as_str(), c)).chain([total, same]) {
        let cells: Vec<String> = c.cells().iter().map(u32::to_string).collect();
        let _ = writeln!(o, "| {name} | {} |", cells.join(" | "));
    }
    let h = &r.history;
    let _ = writeln!(
        o,
        "\n**4. History**: {} `stop` commands on one agent ({} failed) → current run **{}** events, longest run {}, {} run(s) in all (limit {}): **{}**",
        h.commands,
        h.errors,
        h.current_run_history_length,
        h.longest_run_history_length,
        h.total_runs,
        h.history_limit,
        if h.bounded { "bounded" } else { "not bounded" }
    );
    if let Some(e) = &h.first_error {
        let _ = writeln!(o, "\nFirst failed command: {e}");
    }
    let _ = writeln!(o, "\n**5. Events**: {}", events_line(r));
    if let Some(e) = &r.events.first_error {
        let _ = writeln!(o, "\nFirst failed stream: {e}");
    }
    o
}
