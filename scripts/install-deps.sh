#!/usr/bin/env bash
# Installs what building ZoneKV needs on Debian: a C++ compiler and libclang (the RocksDB
# bindings run bindgen), protoc (the etcd-client crate of the benchmark harness generates its
# code with the system protoc; ZoneKV's own protos use a vendored one), and a Rust toolchain
# new enough for edition 2024 if none is present.
set -euo pipefail

need_apt=()
command -v g++ >/dev/null 2>&1 || need_apt+=(g++)
command -v make >/dev/null 2>&1 || need_apt+=(make)
# libclang-cpp (pulled in by other packages) is not libclang: ask dpkg for the real one.
dpkg -s libclang-dev >/dev/null 2>&1 || ls /usr/lib/llvm-*/lib/libclang.so* >/dev/null 2>&1 || need_apt+=(libclang-dev)
command -v protoc >/dev/null 2>&1 || need_apt+=(protobuf-compiler)
command -v curl >/dev/null 2>&1 || need_apt+=(curl ca-certificates)
# libfaketime: the process nemesis runs a node under a clock that runs fast or slow.
dpkg -s faketime >/dev/null 2>&1 || need_apt+=(faketime)
if ((${#need_apt[@]})); then
    echo "installing ${need_apt[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
fi
if ! command -v cargo >/dev/null 2>&1; then
    echo "installing the Rust toolchain with rustup" >&2
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal -c rustfmt,clippy
    export PATH="$HOME/.cargo/bin:$PATH"
fi
version=$(rustc --version | awk '{print $2}')
if [ "$(printf '%s\n1.88.0\n' "$version" | sort -V | head -n1)" != "1.88.0" ]; then
    echo "error: rustc $version is too old; ZoneKV needs 1.88 or newer (rustup update stable)" >&2
    exit 1
fi
