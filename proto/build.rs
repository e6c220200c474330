//! Compiles `slipway/v1/*.proto` with the pure-Rust `protox` compiler, so building Slipway never
//! needs a `protoc` binary on the machine (the same choice as the Temporal SDK's `vendored-protox`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=slipway");
    let fds = protox::compile(["slipway/v1/control.proto"], ["."])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .skip_protoc_run()
        .compile_fds(fds)?;
    Ok(())
}
