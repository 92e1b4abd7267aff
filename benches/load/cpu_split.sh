#!/usr/bin/env bash
# Splits the CPU each proxy spends per request into user and kernel (system) time. The
# workload is run.sh's plain proxying: gatehouse and nginx each run one worker pinned to
# CPU 1, and wrk and the nginx upstream share CPU 0, all on 127.0.0.1. The kernel share
# is a floor that no user-space work of the proxy can lower.
#
# Usage: benches/load/cpu_split.sh
# Environment: DURATION (seconds per run, default 5), CONNECTIONS (default 64),
# ROUNDS (runs per proxy, alternating, default 2).
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)

DURATION=${DURATION:-5}
CONNECTIONS=${CONNECTIONS:-64}
ROUNDS=${ROUNDS:-2}
UPSTREAM_PORT=18081
NGINX_PORT=18082
GATEHOUSE_PORT=18084
LOAD_CPU=0
PROXY_CPU=1

source "$root/benches/load/common.sh"

nginx_proxy_config >"$work/nginx.conf"

gatehouse_config '
[[routes]]
upstream = "backend"' >"$work/gatehouse.toml"

start_upstream $LOAD_CPU $UPSTREAM_PORT
RUST_LOG="warn" start $PROXY_CPU "$gatehouse_bin" run --workers 1 --config "$work/gatehouse.toml"
gatehouse_pid=${pids[-1]}
start $PROXY_CPU nginx -c "$work/nginx.conf" -e "$work/nginx.err"
wait_port $NGINX_PORT
wait_port $GATEHOUSE_PORT
nginx_pid=$(pgrep -P "${pids[-1]}" | head -n1)

ticks=$(getconf CLK_TCK)
# Prints user and system clock ticks of a process, from /proc/PID/stat.
ticks_of() { awk '{ print $14, $15 }' "/proc/$1/stat"; }

printf 'proxy\trequests/s\tuser µs/request\tkernel µs/request\ttotal µs/request\n'
for _ in $(seq 1 "$ROUNDS"); do
  for target in "gatehouse $GATEHOUSE_PORT $gatehouse_pid" "nginx $NGINX_PORT $nginx_pid"; do
    read -r name port pid <<<"$target"
    taskset -c $LOAD_CPU wrk -t1 -c"$CONNECTIONS" -d2s "http://127.0.0.1:$port/" >/dev/null
    read -r user_before system_before < <(ticks_of "$pid")
    taskset -c $LOAD_CPU wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" "http://127.0.0.1:$port/" >"$work/$name.wrk"
    read -r user_after system_after < <(ticks_of "$pid")
    requests=$(awk '/requests in/ { print $1 }' "$work/$name.wrk")
    awk -v name="$name" -v n="$requests" -v d="$DURATION" -v t="$ticks" \
      -v u=$((user_after - user_before)) -v s=$((system_after - system_before)) 'BEGIN {
        printf "%s\t%.0f\t%.1f\t%.1f\t%.1f\n", name, n / d, u / t / n * 1e6, s / t / n * 1e6, (u + s) / t / n * 1e6
      }'
  done
done
