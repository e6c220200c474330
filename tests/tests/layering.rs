//! The layering, checked over `cargo metadata` rather than trusted to review: only the provider
//! home (`slipway-providers`) talks HTTP to providers, and workflow code cannot reach a client.
//!
//! - No product crate but `slipway-providers` depends directly on an HTTP client or a provider
//!   SDK (`reqwest`, `async-stripe*`, `octocrab`).
//! - `slipway-workflows` does not depend on `slipway-providers` (and `slipway-activities` does not
//!   re-export it), so a call to a client from workflow code does not compile.
//! - Nothing depends back up on the binaries' crates (`slipway-starter`, `slipway-worker`) but
//!   the tools (tests, CLI, bench).

use std::collections::BTreeMap;

use serde_json::Value;

const PRODUCT: [&str; 6] = [
    "slipway-proto",
    "slipway-telemetry",
    "slipway-workflows",
    "slipway-activities",
    "slipway-worker",
    "slipway-starter",
];
const HTTP_OR_SDK: [&str; 7] = [
    "reqwest",
    "async-stripe",
    "async-stripe-billing",
    "async-stripe-checkout",
    "async-stripe-shared",
    "async-stripe-webhook",
    "octocrab",
];

/// Each workspace package's normal (non-dev, non-build) dependencies.
fn dependencies() -> anyhow::Result<BTreeMap<String, Vec<String>>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let out = std::process::Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--no-deps", "--offline"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()?;
    anyhow::ensure!(out.status.success(), "cargo metadata: {}", String::from_utf8_lossy(&out.stderr));
    let meta: Value = serde_json::from_slice(&out.stdout)?;
    let mut deps = BTreeMap::new();
    for p in meta["packages"].as_array().into_iter().flatten() {
        let names = p["dependencies"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|d| d["kind"].is_null())
            .filter_map(|d| d["name"].as_str().map(str::to_owned))
            .collect();
        deps.insert(p["name"].as_str().unwrap_or_default().to_owned(), names);
    }
    Ok(deps)
}

#[test]
fn only_the_provider_home_talks_to_providers() -> anyhow::Result<()> {
    let deps = dependencies()?;
    for krate in PRODUCT {
        let direct = deps.get(krate).unwrap_or_else(|| panic!("{krate} is not in the workspace"));
        let bad: Vec<&String> = direct.iter().filter(|d| HTTP_OR_SDK.contains(&d.as_str())).collect();
        assert!(bad.is_empty(), "{krate} depends directly on {bad:?}: go through slipway-providers");
    }
    assert!(
        deps["slipway-providers"].iter().any(|d| d == "reqwest"),
        "the provider home is where HTTP lives"
    );
    Ok(())
}

#[test]
fn workflow_code_cannot_reach_a_client() -> anyhow::Result<()> {
    let deps = dependencies()?;
    let workflows = &deps["slipway-workflows"];
    assert!(
        !workflows.iter().any(|d| d == "slipway-providers"),
        "slipway-workflows must not depend on the clients"
    );
    // Activities use the clients without re-exporting them.
    let lib = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../activities/src/lib.rs"))?;
    assert!(!lib.contains("pub use slipway_providers"), "slipway-activities re-exports the provider home");
    for krate in PRODUCT {
        for binary in ["slipway-starter", "slipway-worker"] {
            assert!(
                krate == binary || !deps[krate].iter().any(|d| d == binary),
                "{krate} depends on the binary crate {binary}"
            );
        }
    }
    Ok(())
}
