#!/usr/bin/env bash
# Runs every check and test of the workspace. Installs what a fresh machine with only
# Rust lacks, and skips what is already installed, so a second run starts at once.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "installing the WebAssembly targets the core must build for"
installed_targets=$(rustup target list --installed)
for target in wasm32-unknown-unknown wasm32-wasip2; do
  if ! grep -qx "$target" <<<"$installed_targets"; then
    rustup target add "$target"
  fi
done

step "checking formatting"
cargo fmt --all --check

step "building the core for WebAssembly (no runtime may leak into it)"
cargo build --locked -p gatehouse-core --target wasm32-unknown-unknown
cargo build --locked -p gatehouse-core --target wasm32-wasip2

step "running clippy"
cargo clippy --locked --workspace --all-targets -- -D warnings

step "running clippy on the Spin component"
cargo clippy --locked -p gatehouse-edge --target wasm32-wasip2 -- -D warnings

step "building the Spin component and its test host"
scripts/build-spin.sh

# The host is its own workspace, so it has its own format, clippy and test runs. Its
# tests run in release mode to reuse the release build of wasmtime above.
step "checking the Spin test host"
cargo fmt --manifest-path tests/spin-host/Cargo.toml --check
cargo clippy --locked --manifest-path tests/spin-host/Cargo.toml --all-targets -- -D warnings
cargo test --locked --release --manifest-path tests/spin-host/Cargo.toml

# GATEHOUSE_REQUIRE_SPIN makes the Spin tests fail, not skip, when the component or
# the host is missing.
step "running the tests: unit, conformance in process, native binary and Spin component"
GATEHOUSE_REQUIRE_SPIN=1 cargo test --locked --workspace
