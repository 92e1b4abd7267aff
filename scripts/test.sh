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

step "installing redis-server for the shared rate-limit tests"
if ! command -v redis-server >/dev/null; then
  as_root=()
  if [ "$(id -u)" -ne 0 ]; then
    as_root=(sudo)
  fi
  # The package lists of a fresh image may be empty, so they are refreshed first.
  "${as_root[@]}" apt-get update
  "${as_root[@]}" apt-get install -y redis-server
fi

step "checking formatting"
cargo fmt --all --check

step "building the core for WebAssembly (no runtime may leak into it)"
cargo build --locked -p gatehouse-core --target wasm32-unknown-unknown
cargo build --locked -p gatehouse-core --target wasm32-wasip2

step "running clippy"
cargo clippy --locked --workspace --all-targets -- -D warnings
cargo clippy --locked -p gatehouse-edge --target wasm32-unknown-unknown --all-targets -- -D warnings

step "building the Cloudflare Worker (installs wasm-bindgen-cli, Node 22 and wrangler if missing)"
scripts/build-worker.sh

step "running the wasm-bindgen tests under Node: core functions and the Worker adapter"
(
  source scripts/worker-env.sh
  CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner \
    cargo test --locked -p gatehouse-edge --target wasm32-unknown-unknown
)

step "running clippy on the Spin component"
cargo clippy --locked -p gatehouse-edge --target wasm32-wasip2 -- -D warnings

step "building the Spin component and its test host"
scripts/build-spin.sh

# The host is its own workspace, so it has its own format check and tests. Its tests
# run in release mode to reuse the release build of wasmtime above. Clippy on the host
# would compile wasmtime a second time, so it is left to development.
step "checking the Spin test host"
cargo fmt --manifest-path tests/spin-host/Cargo.toml --check
cargo test --locked --release --manifest-path tests/spin-host/Cargo.toml

# The Worker and Spin conformance tests skip themselves when their artefacts are
# missing; here both were just built, so a missing one is a failure.
step "running the tests: unit, conformance in process, native binary, Redis, Worker and Spin"
GATEHOUSE_REQUIRE_WORKER=1 GATEHOUSE_REQUIRE_SPIN=1 GATEHOUSE_REQUIRE_REDIS=1 \
  cargo test --locked --workspace
