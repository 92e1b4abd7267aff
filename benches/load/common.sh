# Shared by the load scripts in this folder; sourced, not run. Installs the tools,
# builds gatehouse, and gives a work folder whose processes stop on exit.
# Expects `root` to be the repository root.

need_apt=()
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need_apt+=(nginx)
command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || need_apt+=(haproxy)
command -v wrk >/dev/null || need_apt+=(wrk)
# Pingora's zlib binding builds zlib-ng with cmake.
command -v cmake >/dev/null || need_apt+=(cmake)
if [ ${#need_apt[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
if ! command -v oha >/dev/null; then
  cargo install --locked oha --version 1.12.0
fi
export PATH="/usr/sbin:$PATH"

cargo build --release --locked -p gatehouse
gatehouse_bin="$root/target/release/gatehouse"

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# Starts a command pinned to one CPU, in the background, output in the work folder.
start() { # cpu, command...
  local cpu=$1
  shift
  taskset -c "$cpu" "$@" >"$work/$(basename "$1").out" 2>&1 &
  pids+=($!)
}

wait_port() {
  for _ in $(seq 1 100); do
    if (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "nothing listens on port $1" >&2
  exit 1
}

# An nginx that answers every request with a static 200, cheap enough to never be the
# bottleneck.
start_upstream() { # cpu, port
  cat >"$work/upstream.conf" <<CONF
worker_processes 1;
daemon off;
pid $work/upstream.pid;
error_log $work/upstream.err warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$2;
    location / { return 200 "ok\n"; }
  }
}
CONF
  start "$1" nginx -c "$work/upstream.conf" -e "$work/upstream.err"
  wait_port "$2"
}
