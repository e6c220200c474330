//! The deployment files agree with the code, without Docker: `docker-compose.yml` and
//! `deploy/compose/cloud.yml` are parsed and checked against the Dockerfile, `.env.example` and the
//! variables the worker, starter and sandbox actually read.
//!
//! - every service has an image, or a build whose context, Dockerfile and target exist;
//! - every `${VAR}` the files use, every `environment:` key of our own services, every variable of
//!   `deploy/compose/sandbox.env`, and every variable the settings code reads is in `.env.example`;
//! - every long-running service has a health check, and every `depends_on` waits on a condition
//!   (health, or successful completion of a one-shot service);
//! - named volumes are declared, bind-mounted paths exist, PostgreSQL keeps its data in a volume.
//!
//! - `deploy/kubernetes` validates as `kubectl apply -k` would send it (`validate.py`: the
//!   Kubernetes schemas and the Worker Controller's pinned CRDs), and a broken copy does not.
//!
//! Each check is a function returning the problems it found; the `*_reports_*` tests feed each
//! one a broken input, so a check that silently stopped finding anything would fail here too.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
};

use serde_yaml::{Mapping, Value};

/// Our images: their `environment:` keys must all be documented.
const OWN_SERVICES: [&str; 3] = ["worker", "starter", "sandbox"];
/// Settings code whose variables must all be documented.
const SETTINGS_SOURCES: [&str; 5] = [
    "worker/src/settings.rs",
    "starter/src/settings.rs",
    "sandbox/src/config.rs",
    "telemetry/src/lib.rs",
    "telemetry/src/trace.rs",
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
}

fn parse_compose(text: &str) -> Value {
    let mut doc: Value = serde_yaml::from_str(text).expect("valid YAML");
    doc.apply_merge().expect("merge keys resolve");
    doc
}

fn services(doc: &Value) -> Vec<(String, &Mapping)> {
    doc["services"]
        .as_mapping()
        .expect("a services mapping")
        .iter()
        .map(|(k, v)| {
            (k.as_str().expect("service name").to_owned(), v.as_mapping().expect("service mapping"))
        })
        .collect()
}

fn get<'a>(m: &'a Mapping, key: &str) -> Option<&'a Value> {
    m.get(Value::String(key.to_owned()))
}

/// Variable names documented in an env file: `NAME=...` and commented-out `# NAME=...` lines.
fn documented(env_example: &str) -> BTreeSet<String> {
    env_example
        .lines()
        .filter_map(|line| {
            let line = line.trim().trim_start_matches('#').trim_start();
            let (name, _) = line.split_once('=')?;
            is_var_name(name).then(|| name.to_owned())
        })
        .collect()
}

/// Variables set (uncommented) in an env file.
fn assigned(env_file: &str) -> BTreeSet<String> {
    env_file
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('=').map(|(k, _)| k.trim().to_owned()))
        .filter(|k| is_var_name(k))
        .collect()
}

fn is_var_name(s: &str) -> bool {
    s.len() > 1
        && s.starts_with(|c: char| c.is_ascii_uppercase())
        && s.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

/// `${NAME}`, `${NAME:-default}`, `${NAME-x}`, `${NAME:?msg}` … (not `$${NAME}`, an escape).
fn interpolated(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(off) = text[i..].find("${") {
        let at = i + off;
        let escaped = at > 0 && bytes[at - 1] == b'$';
        let name: String =
            text[at + 2..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        if !escaped && !name.is_empty() {
            out.insert(name);
        }
        i = at + 2;
    }
    out
}

/// Environment variable names the settings code reads: its string literals that are variable
/// names (lookups, defaults tables and the REQUIRED lists), tests excluded.
fn read_by_code(source: &str) -> BTreeSet<String> {
    let code = source.split("#[cfg(test)]").next().unwrap_or(source);
    code.split('"')
        .skip(1)
        .step_by(2)
        .filter(|s| is_var_name(s) && s.contains('_'))
        .map(str::to_owned)
        .collect()
}

fn check_documented(what: &str, names: &BTreeSet<String>, documented: &BTreeSet<String>) -> Vec<String> {
    names.difference(documented).map(|n| format!("{what}: {n} is not documented in .env.example")).collect()
}

/// Image or build (context, Dockerfile and target must exist) for every service.
fn check_images(doc: &Value, base: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    for (name, svc) in services(doc) {
        let Some(build) = get(svc, "build") else {
            if get(svc, "image").and_then(Value::as_str).is_none_or(str::is_empty) {
                problems.push(format!("service {name}: neither image nor build"));
            }
            continue;
        };
        let (context, dockerfile, target) = match build {
            Value::String(ctx) => (ctx.clone(), "Dockerfile".to_owned(), None),
            Value::Mapping(b) => (
                get(b, "context").and_then(Value::as_str).unwrap_or(".").to_owned(),
                get(b, "dockerfile").and_then(Value::as_str).unwrap_or("Dockerfile").to_owned(),
                get(b, "target").and_then(Value::as_str).map(str::to_owned),
            ),
            other => {
                problems.push(format!("service {name}: build is {other:?}"));
                continue;
            }
        };
        let context = base.join(context);
        if !context.is_dir() {
            problems.push(format!("service {name}: build context {} does not exist", context.display()));
            continue;
        }
        let file = context.join(&dockerfile);
        let Ok(text) = std::fs::read_to_string(&file) else {
            problems.push(format!("service {name}: Dockerfile {} does not exist", file.display()));
            continue;
        };
        let stages: BTreeSet<String> = text
            .lines()
            .filter_map(|l| {
                let words: Vec<&str> = l.split_whitespace().collect();
                match words.as_slice() {
                    [from, _, as_, stage, ..]
                        if from.eq_ignore_ascii_case("FROM") && as_.eq_ignore_ascii_case("AS") =>
                    {
                        Some(stage.to_lowercase())
                    }
                    _ => None,
                }
            })
            .collect();
        match target {
            Some(t) if !stages.contains(&t.to_lowercase()) => {
                problems
                    .push(format!("service {name}: target {t} is not a stage of {dockerfile} ({stages:?})"));
            }
            None if stages.len() > 1 => {
                problems.push(format!("service {name}: multi-stage {dockerfile} needs an explicit target"));
            }
            _ => {}
        }
    }
    problems
}

/// Services other services wait on to *complete*: one-shot jobs, exempt from health checks.
fn one_shot(doc: &Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (_, svc) in services(doc) {
        if let Some(Value::Mapping(deps)) = get(svc, "depends_on") {
            for (dep, cond) in deps {
                if cond["condition"].as_str() == Some("service_completed_successfully") {
                    out.insert(dep.as_str().unwrap_or_default().to_owned());
                }
            }
        }
    }
    out
}

/// Health checks on every long-running service; `depends_on` only with a condition that holds.
fn check_health(doc: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let all = services(doc);
    let names: BTreeSet<String> = all.iter().map(|(n, _)| n.clone()).collect();
    let jobs = one_shot(doc);
    let healthy: BTreeSet<String> = all
        .iter()
        .filter(|(_, svc)| {
            get(svc, "healthcheck").is_some_and(|h| {
                h["disable"].as_bool() != Some(true)
                    && match &h["test"] {
                        Value::String(s) => !s.trim().is_empty(),
                        Value::Sequence(seq) => {
                            seq.len() > 1 && seq.first().and_then(Value::as_str) != Some("NONE")
                        }
                        _ => false,
                    }
            })
        })
        .map(|(n, _)| n.clone())
        .collect();
    for (name, svc) in &all {
        if !jobs.contains(name) && !healthy.contains(name) {
            problems.push(format!("service {name}: no health check"));
        }
        match get(svc, "depends_on") {
            None => {}
            Some(Value::Mapping(deps)) => {
                for (dep, cond) in deps {
                    let dep = dep.as_str().unwrap_or_default();
                    let condition = cond["condition"].as_str().unwrap_or_default();
                    if !names.contains(dep) {
                        problems.push(format!("service {name}: depends on unknown service {dep}"));
                    }
                    match condition {
                        "service_healthy" if !healthy.contains(dep) => problems.push(format!(
                            "service {name}: waits for {dep} to be healthy, but it has no health check"
                        )),
                        "service_healthy" => {}
                        "service_completed_successfully" if jobs.contains(dep) => {}
                        other => problems.push(format!(
                            "service {name}: depends_on {dep} with condition {other:?} (want service_healthy)"
                        )),
                    }
                }
            }
            Some(_) => problems.push(format!("service {name}: depends_on without conditions")),
        }
    }
    problems
}

/// Named volumes declared; bind-mount sources exist; PostgreSQL's data directory is a volume.
fn check_volumes(doc: &Value, base: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    let declared: BTreeSet<String> = doc["volumes"]
        .as_mapping()
        .map(|m| m.keys().filter_map(Value::as_str).map(str::to_owned).collect())
        .unwrap_or_default();
    let mut used = BTreeSet::new();
    for (name, svc) in services(doc) {
        let mounts = get(svc, "volumes").and_then(Value::as_sequence).cloned().unwrap_or_default();
        let mut named_here = false;
        for m in mounts {
            // `source:target[:mode]`, or a bare `target` (an anonymous volume), or the long syntax.
            let (source, target) = match &m {
                Value::String(s) => match s.split_once(':') {
                    Some((source, rest)) => {
                        (source.to_owned(), rest.split(':').next().unwrap_or_default().to_owned())
                    }
                    None => (String::new(), s.clone()),
                },
                Value::Mapping(_) => (
                    m["source"].as_str().unwrap_or_default().to_owned(),
                    m["target"].as_str().unwrap_or_default().to_owned(),
                ),
                _ => continue,
            };
            if source.starts_with('.') || source.starts_with('/') {
                if !base.join(&source).exists() {
                    problems.push(format!("service {name}: bind mount {source} does not exist"));
                }
            } else if source.is_empty() {
                problems.push(format!("service {name}: anonymous volume at {target} is lost on re-creation"));
            } else {
                used.insert(source.clone());
                named_here = true;
                if !declared.contains(&source) {
                    problems.push(format!("service {name}: volume {source} is not declared under volumes:"));
                }
            }
        }
        if name == "postgres" && !named_here {
            problems
                .push("service postgres: no named volume, its data would be lost on re-creation".to_owned());
        }
    }
    for unused in declared.difference(&used) {
        problems.push(format!("volume {unused} is declared but no service mounts it"));
    }
    problems
}

/// `environment:` keys of our own services and every `${VAR}` of a compose file.
fn compose_variables(text: &str, doc: &Value) -> BTreeSet<String> {
    let mut vars = interpolated(text);
    for (name, svc) in services(doc) {
        if !OWN_SERVICES.contains(&name.as_str()) {
            continue;
        }
        match get(svc, "environment") {
            Some(Value::Mapping(env)) => vars.extend(env.keys().filter_map(Value::as_str).map(str::to_owned)),
            Some(Value::Sequence(env)) => vars.extend(
                env.iter().filter_map(Value::as_str).map(|kv| kv.split('=').next().unwrap_or(kv).to_owned()),
            ),
            _ => {}
        }
    }
    vars
}

fn assert_no_problems(what: &str, problems: Vec<String>) {
    assert!(problems.is_empty(), "{what}:\n  {}", problems.join("\n  "));
}

#[test]
fn compose_services_build_from_existing_dockerfile_targets_or_images() {
    for (file, base) in
        [("docker-compose.yml", root()), ("deploy/compose/cloud.yml", root().join("deploy/compose"))]
    {
        let doc = parse_compose(&read(file));
        assert_no_problems(file, check_images(&doc, &base));
    }
    // The stack has what the deployment needs.
    let doc = parse_compose(&read("docker-compose.yml"));
    let names: BTreeSet<String> = services(&doc).into_iter().map(|(n, _)| n).collect();
    for needed in ["postgres", "temporal", "temporal-ui", "temporal-admin", "worker", "starter", "sandbox"] {
        assert!(names.contains(needed), "docker-compose.yml has no {needed} service: {names:?}");
    }
    let sandbox = services(&doc).into_iter().find(|(n, _)| n == "sandbox").map(|(_, s)| s.clone()).unwrap();
    assert_eq!(
        sandbox["profiles"],
        serde_yaml::from_str::<Value>("[sandbox]").unwrap(),
        "sandbox behind a profile"
    );
}

#[test]
fn every_variable_of_the_deployment_and_the_settings_is_documented() {
    let docs = documented(&read(".env.example"));
    let mut problems = Vec::new();
    for file in ["docker-compose.yml", "deploy/compose/cloud.yml"] {
        let text = read(file);
        problems.extend(check_documented(file, &compose_variables(&text, &parse_compose(&text)), &docs));
    }
    problems.extend(check_documented(
        "deploy/compose/sandbox.env",
        &assigned(&read("deploy/compose/sandbox.env")),
        &docs,
    ));
    let mut read_total = 0;
    for source in SETTINGS_SOURCES {
        let vars = read_by_code(&read(source));
        read_total += vars.len();
        problems.extend(check_documented(source, &vars, &docs));
    }
    // The scan found the variables (the worker alone reads dozens).
    assert!(read_total > 50, "settings scan found only {read_total} variables");
    assert_no_problems("undocumented variables", problems);
}

#[test]
fn every_long_running_service_has_a_health_check_and_start_up_waits_on_them() {
    for file in ["docker-compose.yml", "deploy/compose/cloud.yml"] {
        assert_no_problems(file, check_health(&parse_compose(&read(file))));
    }
    let doc = parse_compose(&read("docker-compose.yml"));
    assert_eq!(one_shot(&doc), BTreeSet::from(["temporal-schema".to_owned()]));
    let starter = services(&doc).into_iter().find(|(n, _)| n == "starter").map(|(_, s)| s.clone()).unwrap();
    let test = serde_yaml::to_string(&starter["healthcheck"]["test"]).unwrap();
    assert!(test.contains("/readyz"), "starter health is readiness (Temporal answers): {test}");
}

#[test]
fn state_survives_restarts_in_named_volumes() {
    assert_no_problems(
        "docker-compose.yml",
        check_volumes(&parse_compose(&read("docker-compose.yml")), &root()),
    );
    let base = root().join("deploy/compose");
    assert_no_problems("cloud.yml", check_volumes(&parse_compose(&read("deploy/compose/cloud.yml")), &base));
}

// --- The checks find real mismatches --------------------------------------------------------

const BROKEN: &str = r#"
x-env: &env
  FROM_ANCHOR: ${UNDOCUMENTED_IN_ANCHOR:-x}
services:
  worker:
    build: { context: ., dockerfile: Dockerfile, target: no-such-stage }
    environment:
      <<: *env
      NOT_DOCUMENTED_KEY: "1"
      ESCAPED: "$${NOT_A_VARIABLE}"
    depends_on: [temporal]
  temporal:
    image: temporalio/server:1
    volumes: ["temporal-db:/data", "./no/such/dir:/etc/x"]
  lonely:
    build: { context: ./no-such-context }
    healthcheck: { test: ["NONE"] }
"#;

#[test]
fn the_image_check_reports_missing_targets_and_contexts() {
    let problems = check_images(&parse_compose(BROKEN), &root());
    assert!(problems.iter().any(|p| p.contains("target no-such-stage")), "{problems:#?}");
    assert!(problems.iter().any(|p| p.contains("no-such-context")), "{problems:#?}");
    assert_eq!(problems.len(), 2, "{problems:#?}");
}

#[test]
fn the_documentation_check_reports_undocumented_variables_and_keys() {
    let docs = documented("# Comment\nDOCUMENTED=1\n# COMMENTED_OUT=x\n");
    assert_eq!(docs, BTreeSet::from(["COMMENTED_OUT".to_owned(), "DOCUMENTED".to_owned()]));
    let vars = compose_variables(BROKEN, &parse_compose(BROKEN));
    assert!(!vars.contains("NOT_A_VARIABLE"), "$$ is an escape: {vars:?}");
    let problems = check_documented("x", &vars, &docs);
    for missing in ["UNDOCUMENTED_IN_ANCHOR", "NOT_DOCUMENTED_KEY", "FROM_ANCHOR", "ESCAPED"] {
        assert!(problems.iter().any(|p| p.contains(missing)), "{missing}: {problems:#?}");
    }
    let code = "fn f() { or(\"NEW_SETTING\", \"5\"); get(\"TEMPORAL_X\"); }\n#[cfg(test)]\nmod t { \"ONLY_IN_TESTS\" }";
    assert_eq!(read_by_code(code), BTreeSet::from(["NEW_SETTING".to_owned(), "TEMPORAL_X".to_owned()]));
}

#[test]
fn the_health_check_reports_unchecked_services_and_unconditional_dependencies() {
    let problems = check_health(&parse_compose(BROKEN));
    for expected in [
        "service worker: no health check",
        "service temporal: no health check",
        "service lonely: no health check",
    ] {
        assert!(problems.contains(&expected.to_owned()), "{expected}: {problems:#?}");
    }
    assert!(problems.iter().any(|p| p.contains("worker: depends_on without conditions")), "{problems:#?}");
}

#[test]
fn the_volume_check_reports_undeclared_volumes_and_missing_bind_sources() {
    let problems = check_volumes(&parse_compose(BROKEN), &root());
    assert!(problems.iter().any(|p| p.contains("volume temporal-db is not declared")), "{problems:#?}");
    assert!(problems.iter().any(|p| p.contains("./no/such/dir does not exist")), "{problems:#?}");
    let lost =
        "services:\n  postgres:\n    image: postgres:16\n    volumes: [\"/var/lib/postgresql/data\"]\n";
    let problems = check_volumes(&parse_compose(lost), &root());
    assert!(
        problems.iter().any(|p| p.contains("anonymous volume at /var/lib/postgresql/data")),
        "{problems:#?}"
    );
    assert!(problems.iter().any(|p| p.contains("postgres: no named volume")), "{problems:#?}");
}

#[test]
fn env_files_are_read_as_compose_reads_them() {
    for (name, ok) in [("A_B", true), ("a_b", false), ("A", false), ("X1_Y", true), ("_X", false)] {
        assert_eq!(is_var_name(name) && name.contains('_'), ok, "{name}");
    }
    assert_eq!(assigned("# X_Y=1\nA_B=2\n  C_D = 3\n"), BTreeSet::from(["A_B".to_owned(), "C_D".to_owned()]));
    assert_eq!(
        interpolated("a ${X_1:-d} $${Y_2} ${Z_3?e} ${W_4}"),
        BTreeSet::from(["W_4".to_owned(), "X_1".to_owned(), "Z_3".to_owned()])
    );
}

/// Runs `deploy/kubernetes/validate.py` on the manifests in `dir` with the project's Python
/// (scripts/test installs what it needs into .venv); its exit status and printed lines.
fn validate_kubernetes(dir: &Path) -> (bool, String) {
    let python = root().join(".venv/bin/python");
    assert!(python.is_file(), "no .venv/bin/python: scripts/test installs the validator there");
    let out = std::process::Command::new(python)
        .arg(root().join("deploy/kubernetes/validate.py"))
        .env("SLIPWAY_KUBERNETES_DIR", dir)
        .output()
        .expect("run validate.py");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[test]
fn kubernetes_manifests_validate_against_kubernetes_and_the_worker_controller_schemas() {
    let (ok, out) = validate_kubernetes(&root().join("deploy/kubernetes"));
    assert!(ok, "{out}");
    for object in [
        "ConfigMap/slipway-config",
        "Deployment/slipway-starter",
        "Service/slipway-starter",
        "Connection/slipway-temporal",
        "WorkerDeployment/slipway-worker",
        "WorkerResourceTemplate/slipway-worker-autoscaler",
    ] {
        assert!(
            out.lines().any(|l| l.starts_with("ok") && l.ends_with(object)),
            "{object} not validated:\n{out}"
        );
    }

    // A copy with one mistake per schema fails, naming each.
    let broken = std::env::temp_dir().join(format!("slipway-k8s-{}", std::process::id()));
    std::fs::create_dir_all(&broken).expect("temp dir");
    let src = root().join("deploy/kubernetes");
    for (file, from, to) in [
        ("kustomization.yaml", "", ""),
        ("config.yaml", "kind: ConfigMap", "kind: ConfigMap\nspec: {}"),
        ("starter.yaml", "terminationGracePeriodSeconds: 40", "terminationGracePeriodSeconds: forty"),
        (
            "worker.yaml",
            "temporalNamespace: default",
            "temporalNamespace: default\n    temporalNamspace: typo",
        ),
        ("worker-autoscaler.yaml", "minReplicas: 2", "minReplica: 2"),
    ] {
        let text = std::fs::read_to_string(src.join(file)).expect("read manifest");
        assert!(from.is_empty() || text.contains(from), "{file} no longer has `{from}`");
        std::fs::write(broken.join(file), if from.is_empty() { text } else { text.replacen(from, to, 1) })
            .expect("write manifest");
    }
    let (ok, out) = validate_kubernetes(&broken);
    let _ = std::fs::remove_dir_all(&broken);
    assert!(!ok, "a broken copy validated:\n{out}");
    for expected in [
        "FAIL config.yaml: ConfigMap/slipway-config",
        "'spec' was unexpected",
        "'forty' is not of type 'integer'",
        "'temporalNamspace' was unexpected",
        "'minReplica' was unexpected",
    ] {
        assert!(out.contains(expected), "{expected}:\n{out}");
    }
}
