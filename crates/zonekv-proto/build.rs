//! Generates Rust code for every `.proto` under the workspace's `proto/` directory.
//!
//! protoc comes from `protoc-bin-vendored`, so building needs no system protobuf compiler.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let protos = [
        "zonekv/kv/v1/kv.proto",
        "zonekv/raft/v1/raft.proto",
        "zonekv/admin/v1/admin.proto",
    ]
    .map(|p| root.join(p));
    for p in &protos {
        println!("cargo:rerun-if-changed={}", p.display());
    }
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc);
    config.bytes(["."]);
    tonic_prost_build::configure()
        .emit_rerun_if_changed(false)
        .compile_with_config(config, &protos, std::slice::from_ref(&root))?;
    Ok(())
}
