#!/usr/bin/env bash
# Side-by-side proxy load test: the same keep-alive GET workload against the upstream
# directly, gatehouse, nginx, HAProxy and a minimal Pingora proxy
# (benches/pingora-proxy), in one run on this machine.
#
# Layout on a 2-core machine: the load generator and the upstream share CPU 0, and
# each proxy runs alone on CPU 1 with one worker, so the proxy is the bottleneck and
# requests/s compare the proxies per core. All traffic stays on 127.0.0.1.
#
# Usage: benches/load/run.sh [--write]   (--write updates docs/benchmarks.md)
# Environment: DURATION (seconds per run, default 10), CONNECTIONS (default 64).
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)

DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-64}
UPSTREAM_PORT=18081
NGINX_PORT=18082
HAPROXY_PORT=18083
GATEHOUSE_PORT=18084
PINGORA_PORT=18085
LOAD_CPU=0
PROXY_CPU=1

source "$root/benches/load/common.sh"

cargo build --release --locked --manifest-path benches/pingora-proxy/Cargo.toml
pingora_bin="$root/benches/pingora-proxy/target/release/pingora-proxy-bench"

nginx_proxy_config >"$work/nginx.conf"

cat >"$work/haproxy.cfg" <<CONF
global
  nbthread 1
  maxconn 4096
defaults
  mode http
  timeout connect 2s
  timeout client 30s
  timeout server 30s
  option forwardfor
  http-reuse always
frontend public
  bind 127.0.0.1:$HAPROXY_PORT
  default_backend backend
backend backend
  server upstream 127.0.0.1:$UPSTREAM_PORT
CONF

gatehouse_config '
[[routes]]
upstream = "backend"' >"$work/gatehouse.toml"

start_upstream $LOAD_CPU $UPSTREAM_PORT

results="$work/results.tsv"
printf 'target\trps\tp50_ms\tp99_ms\tcpu_us_per_req\thalf_p99_ms\n' >"$results"

# Runs the workload against one port; the third argument is the proxy PID or "-".
measure() {
  saturate "$1" "$2" "$3" / >>"$work/saturation.tsv"
}

# p99 at a fixed request rate, from oha's JSON summary.
half_load_p99() {
  local port=$1 rate=$2
  taskset -c $LOAD_CPU oha --no-tui --output-format json -z "${DURATION}s" -c 16 -q "$rate" "http://127.0.0.1:$port/" >"$work/oha.json"
  python3 -c 'import json,sys; print("%.3f" % (json.load(open(sys.argv[1]))["latencyPercentiles"]["p99"] * 1000))' "$work/oha.json"
}

: >"$work/saturation.tsv"
measure direct $UPSTREAM_PORT -

RUST_LOG="warn" start $PROXY_CPU "$gatehouse_bin" run --workers 1 --config "$work/gatehouse.toml"
gatehouse_pid=${pids[-1]}
measure gatehouse $GATEHOUSE_PORT "$gatehouse_pid"

start $PROXY_CPU nginx -c "$work/nginx.conf" -e "$work/nginx.err"
wait_port $NGINX_PORT
nginx_worker=$(pgrep -P "${pids[-1]}" | head -n1)
measure nginx $NGINX_PORT "$nginx_worker"

start $PROXY_CPU haproxy -db -f "$work/haproxy.cfg"
measure haproxy $HAPROXY_PORT "${pids[-1]}"

RUST_LOG="warn" start $PROXY_CPU "$pingora_bin" "127.0.0.1:$PINGORA_PORT" "127.0.0.1:$UPSTREAM_PORT"
measure pingora $PINGORA_PORT "${pids[-1]}"

# Half of nginx's saturation rate, applied to every target, for added latency.
nginx_rps=$(awk -F'\t' '$1 == "nginx" { print $2 }' "$work/saturation.tsv")
half_rate=$(awk -v r="$nginx_rps" 'BEGIN { printf "%d", r / 2 }')
declare -A ports=([direct]=$UPSTREAM_PORT [gatehouse]=$GATEHOUSE_PORT [nginx]=$NGINX_PORT [haproxy]=$HAPROXY_PORT [pingora]=$PINGORA_PORT)
while IFS=$'\t' read -r name rps p50 p99 cpu; do
  half=$(half_load_p99 "${ports[$name]}" "$half_rate")
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$rps" "$p50" "$p99" "$cpu" "$half" >>"$results"
done <"$work/saturation.tsv"

python3 "$root/benches/load/report.py" "$results" "$half_rate" "$DURATION" "$CONNECTIONS" ${1:+"$1"}
