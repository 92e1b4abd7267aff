#!/usr/bin/env bash
# Builds the Spin component (target/wasm32-wasip2/spin-release/gatehouse_edge.wasm,
# the `source` of spin.toml) and gatehouse-spin-host, the wasmtime-based host that the
# conformance tests serve it with. Installs the wasm32-wasip2 target when it is
# missing. Cargo rebuilds only what changed, so a second run takes seconds; the first
# build of the host compiles wasmtime, which takes several minutes.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

if ! rustup target list --installed | grep -qx wasm32-wasip2; then
  step "installing the wasm32-wasip2 target"
  rustup target add wasm32-wasip2
fi

step "building the Spin component"
cargo build --locked -p gatehouse-edge --target wasm32-wasip2 --profile spin-release

step "building the Spin test host (its own workspace: tests/spin-host)"
cargo build --locked --release --manifest-path tests/spin-host/Cargo.toml

component=target/wasm32-wasip2/spin-release/gatehouse_edge.wasm
size=$(wc -c <"$component")
gzipped=$(gzip -9c "$component" | wc -c)
printf '\ncomponent %s: %d bytes, %d bytes gzipped\n' "$component" "$size" "$gzipped"
printf 'host tests/spin-host/target/release/gatehouse-spin-host\n'
