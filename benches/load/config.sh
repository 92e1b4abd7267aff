#!/usr/bin/env bash
# Load-tests one gatehouse config on this machine. It starts the release binary on the
# config (as `gatehouse run`, or as the edge simulator with --dev) and sends load with
# oha to one URL on loopback. It prints requests/s, latency percentiles, status codes
# and the gateway's CPU time per request.
#
# Usage: benches/load/config.sh [--dev] [--demo] CONFIG URL [-- OHA ARGUMENTS...]
#   --dev    run the config as `gatehouse dev` (the simulated edge locations) and print
#            the simulator's report after the load
#   --demo   start the demo upstreams of the config's loopback endpoints
#   URL      on 127.0.0.1, [::1] or localhost; the load never leaves this machine
#   after -- extra oha arguments, such as -H 'authorization: Bearer ...' or -m POST
# Environment: DURATION (seconds, default 10), CONNECTIONS (default 50), RATE
# (requests/s; unset sends as fast as the gateway answers), WORKERS (default: one per
# CPU).
#
# Example:
#   benches/load/config.sh --demo examples/gatehouse.toml http://127.0.0.1:8080/users/42
set -euo pipefail

mode=run
demo=()
while [ $# -gt 0 ]; do
  case $1 in
    --dev) mode=dev; shift ;;
    --demo) demo=(--demo); shift ;;
    *) break ;;
  esac
done
if [ $# -lt 2 ]; then
  sed -n "2,18p" "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi
config=$(realpath "$1")
url=$2
shift 2
[ "${1:-}" = "--" ] && shift

# The URL must be on loopback: the script sends load to no other host.
authority=${url#*://}
authority=${authority%%/*}
case $authority in
  \[*\]:*) host=${authority%%]*}; host=${host#[}; port=${authority##*]:} ;;
  \[*\]) host=${authority#[}; host=${host%]}; port="" ;;
  *:*) host=${authority%:*}; port=${authority##*:} ;;
  *) host=$authority; port="" ;;
esac
case $host in
  127.0.0.1 | ::1 | localhost) ;;
  *)
    echo "invalid URL host $host: use 127.0.0.1, [::1] or localhost, because the load stays on this machine" >&2
    exit 2
    ;;
esac
if [ -z "$port" ]; then
  case $url in https://*) port=443 ;; *) port=80 ;; esac
fi
[ "$host" = localhost ] && host=127.0.0.1

DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-50}

cd "$(dirname "$0")/../.."
root=$(pwd)
source "$root/benches/load/common.sh"

# `gatehouse demo` is `run` with the demo upstreams, while `dev` takes --demo itself.
command=("$mode" "${demo[@]}")
[ "$mode" = run ] && [ ${#demo[@]} -gt 0 ] && command=(demo)
workers=()
[ -n "${WORKERS:-}" ] && workers=(--workers "$WORKERS")
RUST_LOG=${RUST_LOG:-warn} "$gatehouse_bin" "${command[@]}" --config "$config" "${workers[@]}" \
  >"$work/gatehouse.out" 2>&1 &
gatehouse_pid=$!
pids+=("$gatehouse_pid")
for _ in $(seq 1 100); do
  if (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; then break; fi
  if ! kill -0 "$gatehouse_pid" 2>/dev/null; then
    echo "gatehouse exited before listening on $host:$port, with this output:" >&2
    cat "$work/gatehouse.out" >&2
    exit 1
  fi
  sleep 0.1
done

rate=()
[ -n "${RATE:-}" ] && rate=(-q "$RATE")
cpu_before=$(cpu_seconds "$gatehouse_pid")
oha --no-tui --output-format json -z "${DURATION}s" -c "$CONNECTIONS" "${rate[@]}" "$@" "$url" \
  >"$work/oha.json"
cpu_after=$(cpu_seconds "$gatehouse_pid")

python3 - "$work/oha.json" "$cpu_before" "$cpu_after" "${command[*]}" "$config" "$url" <<'PY'
import json, sys
path, cpu_before, cpu_after, command, config, url = sys.argv[1:7]
report = json.load(open(path))
summary = report["summary"]
latency = report["latencyPercentiles"]
codes = report.get("statusCodeDistribution", {})
# Requests still in flight when the duration ends are cut off, which is not an error.
errors = {
    error: count
    for error, count in report.get("errorDistribution", {}).items()
    if "deadline" not in error
}
answered = sum(codes.values())
print(f"gatehouse {command} --config {config}")
print(f"load: {url}, {summary['total']:.1f} s")
print(f"requests/s: {summary['requestsPerSec']:,.0f} ({answered:,} answered)")
def milliseconds(key):
    value = latency.get(key)
    return "-" if value is None else f"{value * 1000:.3f} ms"
print(
    f"latency: p50 {milliseconds('p50')}, p90 {milliseconds('p90')}, "
    f"p99 {milliseconds('p99')}, p99.9 {milliseconds('p99.9')}"
)
print("status codes: " + (", ".join(f"{code}: {count:,}" for code, count in sorted(codes.items())) or "none"))
if errors:
    print("errors: " + ", ".join(f"{error}: {count:,}" for error, count in errors.items()))
if answered:
    cpu_micros = (float(cpu_after) - float(cpu_before)) / answered * 1e6
    print(f"gatehouse CPU per request: {cpu_micros:.1f} µs (user and system, all threads)")
PY

if [ "$mode" = dev ]; then
  admin=$(python3 -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb")).get("admin", {}).get("address", ""))' "$config")
  if [ -n "$admin" ]; then
    echo
    echo "simulator report (GET http://$admin/simulator):"
    python3 - "$admin" <<'PY'
import json, sys, urllib.request
with urllib.request.urlopen(f"http://{sys.argv[1]}/simulator", timeout=5) as response:
    print(json.dumps(json.load(response), indent=2))
PY
  else
    echo "the config has no [admin] address, so the simulator's report is printed on exit:"
    kill -INT "$gatehouse_pid"
    wait "$gatehouse_pid" 2>/dev/null || true
    cat "$work/gatehouse.out"
  fi
fi
