//! Embeds the git revision the worker is built from (`SLIPWAY_GIT_REVISION`): with the crate
//! version it is the worker's default build id (`versioning::DEFAULT_BUILD_ID`). A build without
//! git (a container built from a source archive) passes `SLIPWAY_GIT_REVISION` or gets `unknown`.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok().filter(|o| o.status.success())?;
    let text = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (!text.is_empty()).then_some(text)
}

fn main() {
    println!("cargo:rerun-if-env-changed=SLIPWAY_GIT_REVISION");
    let revision = std::env::var("SLIPWAY_GIT_REVISION")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=SLIPWAY_GIT_REVISION={revision}");
    // Build again when HEAD moves (a commit, a checkout).
    if let Some(dir) = git(&["rev-parse", "--absolute-git-dir"]) {
        println!("cargo:rerun-if-changed={dir}/HEAD");
        if let Some(head) = git(&["symbolic-ref", "-q", "HEAD"]) {
            println!("cargo:rerun-if-changed={dir}/{head}");
        }
    }
}
