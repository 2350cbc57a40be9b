//! Generates Rust code for every `.proto` under the workspace's `proto/` directory.
//!
//! protoc comes from `protoc-bin-vendored`, so building needs no system protobuf compiler.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["zonekv/kv/v1/kv.proto", "zonekv/raft/v1/raft.proto", "zonekv/admin/v1/admin.proto"];
    // Relative to this package: the build directory is shared between checkouts (see
    // scripts/env.sh), and cargo hashes path packages relative to the workspace, so an absolute
    // path here would make one checkout watch another checkout's files.
    println!("cargo:rerun-if-changed=build.rs");
    for f in files {
        println!("cargo:rerun-if-changed=../../proto/{f}");
    }
    // Read at run time, not with `env!`: the compiled build script is shared between checkouts
    // too, and a path baked in at compile time would point into whichever checkout built it.
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let protos = files.map(|p| root.join(p));
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc);
    config.bytes(["."]);
    // Service stubs only with the `grpc` feature: the storage layers use the messages alone.
    let grpc = std::env::var_os("CARGO_FEATURE_GRPC").is_some();
    tonic_prost_build::configure()
        .build_client(grpc)
        .build_server(grpc)
        .emit_rerun_if_changed(false)
        .compile_with_config(config, &protos, std::slice::from_ref(&root))?;
    Ok(())
}
