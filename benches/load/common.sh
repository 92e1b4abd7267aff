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
# nginx workers run as an unprivileged user and must reach their cache folder here.
chmod 755 "$work"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ -n "${KEEP_WORK:-}" ] || rm -rf "$work"
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
# bottleneck: `ok` as text, or a small JSON object under /json/.
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
    location /json/ { default_type application/json; return 200 '{"ok": true}'; }
  }
}
CONF
  start "$1" nginx -c "$work/upstream.conf" -e "$work/upstream.err"
  wait_port "$2"
}

# Prints the config of nginx as a plain proxy on NGINX_PORT to the upstream on
# UPSTREAM_PORT, setting the forwarding headers gatehouse also sets.
nginx_proxy_config() {
  cat <<CONF
worker_processes 1;
daemon off;
pid $work/nginx.pid;
error_log $work/nginx.err warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  upstream backend { server 127.0.0.1:$UPSTREAM_PORT; keepalive 128; }
  server {
    listen 127.0.0.1:$NGINX_PORT;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_set_header X-Request-Id \$request_id;
    }
  }
}
CONF
}

# Prints a gatehouse config with the bench listener on GATEHOUSE_PORT and the upstream
# "backend" on UPSTREAM_PORT, followed by the TOML in the first argument.
gatehouse_config() { # extra TOML after the listener and upstreams
  cat <<CONF
[[listeners]]
name = "bench"
address = "127.0.0.1:$GATEHOUSE_PORT"

[upstreams.backend]
endpoints = [{ address = "127.0.0.1:$UPSTREAM_PORT" }]
$1
CONF
}

# Sums user and system CPU seconds of a process and its threads.
cpu_seconds() {
  awk -v ticks="$(getconf CLK_TCK)" '{ print ($14 + $15) / ticks }' "/proc/$1/stat"
}

# Converts wrk's latency text (850.00us, 1.20ms, 1.01s) to milliseconds.
to_ms() {
  awk -v v="$1" 'BEGIN {
    if (v ~ /us$/) { sub(/us$/, "", v); printf "%.3f", v / 1000 }
    else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.3f", v }
    else if (v ~ /s$/) { sub(/s$/, "", v); printf "%.3f", v * 1000 }
    else { print v }
  }'
}

# Saturates one port with wrk on LOAD_CPU: CONNECTIONS keep-alive connections, 2 s of
# warm-up, then DURATION seconds. Prints one tab-separated line: name, requests/s,
# p50 ms, p99 ms and the proxy's CPU µs per request ("-" when its PID is "-").
# Arguments after the path go to wrk, such as -H 'authorization: Bearer ...'.
saturate() { # name, port, proxy pid or -, path, wrk arguments...
  local name=$1 port=$2 pid=$3 path=$4
  shift 4
  wait_port "$port"
  taskset -c $LOAD_CPU wrk -t1 -c"$CONNECTIONS" -d2s "$@" "http://127.0.0.1:$port$path" >/dev/null
  local cpu_before=0 cpu_after=0
  [ "$pid" != "-" ] && cpu_before=$(cpu_seconds "$pid")
  taskset -c $LOAD_CPU wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency "$@" \
    "http://127.0.0.1:$port$path" >"$work/$name.wrk"
  [ "$pid" != "-" ] && cpu_after=$(cpu_seconds "$pid")
  if grep -q 'Non-2xx' "$work/$name.wrk"; then
    echo "$name: some responses were not 2xx:" >&2
    cat "$work/$name.wrk" >&2
    exit 1
  fi
  local rps requests p50 p99
  rps=$(awk '/^Requests\/sec/ { print $2 }' "$work/$name.wrk")
  requests=$(awk '/requests in/ { print $1 }' "$work/$name.wrk")
  p50=$(awk '$1 == "50%" { print $2 }' "$work/$name.wrk")
  p99=$(awk '$1 == "99%" { print $2 }' "$work/$name.wrk")
  local cpu_per_request="-"
  if [ "$pid" != "-" ]; then
    cpu_per_request=$(awk -v a="$cpu_before" -v b="$cpu_after" -v n="$requests" 'BEGIN { printf "%.1f", (b - a) / n * 1e6 }')
  fi
  printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$rps" "$(to_ms "$p50")" "$(to_ms "$p99")" "$cpu_per_request"
}
