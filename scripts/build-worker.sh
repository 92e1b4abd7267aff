#!/usr/bin/env bash
# Builds the Cloudflare Worker into edge-worker/build/: the WebAssembly module and its
# wasm-bindgen JavaScript bindings, which edge-worker/worker.mjs loads and wrangler
# bundles. Installs the tools it needs and skips those already present:
#   - the Rust target wasm32-unknown-unknown,
#   - wasm-bindgen-cli of exactly the wasm-bindgen version in Cargo.lock (the CLI and
#     the library must match), into ~/.cargo/bin,
#   - Node 22 and wrangler from edge-worker/package-lock.json, with `npm ci`.
# wrangler.toml runs this script as its build command.
#
# Set GATEHOUSE_CONFIG to embed a config other than examples/gatehouse.toml.
set -euo pipefail
source "$(dirname "$0")/worker-env.sh"
cd "$repo_root"

step() { printf '\n==> %s\n' "$*" >&2; }

# Size budget of the gzipped module, checked on every build. A smaller module loads
# and instantiates faster when an isolate starts.
max_gzip_bytes=$((1024 * 1024))

if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
  step "installing the Rust target wasm32-unknown-unknown"
  rustup target add wasm32-unknown-unknown
fi

bindgen_version=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)
if [[ -z "$bindgen_version" ]]; then
  echo "error: Cargo.lock lists no wasm-bindgen package" >&2
  exit 1
fi
if [[ "$(wasm-bindgen --version 2>/dev/null || true)" != "wasm-bindgen $bindgen_version" ]]; then
  step "installing wasm-bindgen-cli $bindgen_version (takes about 7 minutes on 2 cores)"
  # Without --locked: the CLI's own lock file names a dependency version that the
  # registry no longer serves.
  cargo install wasm-bindgen-cli --version "$bindgen_version"
fi

lock_stamp=$edge_dir/node_modules/.gatehouse-package-lock
if ! cmp -s "$edge_dir/package-lock.json" "$lock_stamp"; then
  step "installing Node 22 and wrangler with npm ci"
  # npm runs no install scripts here; workerd and esbuild ship their binaries as
  # platform packages, which need none.
  (cd "$edge_dir" && npm ci --no-audit --no-fund)
  cp "$edge_dir/package-lock.json" "$lock_stamp"
fi

step "building the Worker's WebAssembly module"
cargo build --locked -p gatehouse-edge --target wasm32-unknown-unknown --profile worker
target_dir=${CARGO_TARGET_DIR:-$repo_root/target}
module=$target_dir/wasm32-unknown-unknown/worker/gatehouse_edge.wasm

step "generating the JavaScript bindings"
# --remove-name-section drops the function names (1.1 MB raw and about 215 KB
# gzipped in this module), which only make stack traces readable; Rust panic messages
# keep their text.
wasm-bindgen "$module" --target web --no-typescript --remove-name-section \
  --out-dir "$worker_build_dir" --out-name gatehouse_edge

wasm=$worker_build_dir/gatehouse_edge_bg.wasm
raw_bytes=$(wc -c <"$wasm")
gzip_bytes=$(gzip -9 -c "$wasm" | wc -c)
printf 'Worker module: %s bytes, %s bytes gzipped (budget %s)\n' \
  "$raw_bytes" "$gzip_bytes" "$max_gzip_bytes" | tee "$worker_build_dir/size.txt" >&2
if ((gzip_bytes > max_gzip_bytes)); then
  echo "error: the Worker module is above its gzipped size budget" >&2
  exit 1
fi
