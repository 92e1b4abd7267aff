#!/usr/bin/env bash
# Resident memory of gatehouse with many routes and many rate-limit keys: a config of
# ROUTES exact-path routes, each behind a GCRA limit keyed on the x-client header, and
# wrk sending requests that walk every route and KEYS client values.
#
# Each key allows 100 requests per hour, so a key lives about 36 s after its last
# request: every key is still held when the memory is read, and no request is denied.
#
# Usage: benches/load/memory.sh [--write]   (--write updates docs/benchmarks.md)
# Environment: ROUTES (default 10000), KEYS (default 100000), DURATION (seconds of
# load, default 10; at least KEYS requests must fit in it).
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)

ROUTES=${ROUTES:-10000}
KEYS=${KEYS:-100000}
DURATION=${DURATION:-10}
UPSTREAM_PORT=18091
GATEHOUSE_PORT=18094
LOAD_CPU=0
PROXY_CPU=1

source "$root/benches/load/common.sh"
start_upstream $LOAD_CPU $UPSTREAM_PORT

{
  gatehouse_config '
[policies.per-client.rate_limit]
algorithm = "gcra"
limit = 100
period = "1h"
key = [{ header = "x-client" }]'
  for i in $(seq 0 $((ROUTES - 1))); do
    printf '\n[[routes]]\nmatch.path = "/r/%d"\nupstream = "backend"\npolicies = ["per-client"]\n' "$i"
  done
} >"$work/gatehouse.toml"

cat >"$work/walk.lua" <<LUA
local counter = 0
request = function()
  counter = counter + 1
  local path = "/r/" .. (counter % $ROUTES)
  return wrk.format("GET", path, { ["x-client"] = "client-" .. (counter % $KEYS) })
end
LUA

# Resident and peak resident memory of a process, in MiB.
rss_mib() { # pid, field (VmRSS or VmHWM)
  awk -v field="$2:" '$1 == field { printf "%.1f", $2 / 1024 }' "/proc/$1/status"
}

RUST_LOG="warn" start $PROXY_CPU "$gatehouse_bin" run --workers 1 --config "$work/gatehouse.toml"
gatehouse_pid=${pids[-1]}
wait_port $GATEHOUSE_PORT
idle=$(rss_mib "$gatehouse_pid" VmRSS)

taskset -c $LOAD_CPU wrk -t1 -c64 -d"${DURATION}s" -s "$work/walk.lua" \
  "http://127.0.0.1:$GATEHOUSE_PORT/" >"$work/walk.wrk"
requests=$(awk '/requests in/ { print $1 }' "$work/walk.wrk")
non_2xx=$(awk '/Non-2xx/ { print $NF }' "$work/walk.wrk")
if [ "$requests" -lt "$KEYS" ]; then
  echo "only $requests requests in ${DURATION}s, fewer than the $KEYS keys; raise DURATION" >&2
  exit 1
fi
loaded=$(rss_mib "$gatehouse_pid" VmRSS)
peak=$(rss_mib "$gatehouse_pid" VmHWM)

machine="$(nproc) cores ($(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)), Linux $(uname -r)"
table=$(cat <<MD
Machine: $machine. Command: \`benches/load/memory.sh\`.
Config: $ROUTES exact-path routes, each behind a GCRA limit keyed on a header, in the
process-local store. Load: wrk, 64 connections, ${DURATION} s, $requests requests walking
every route and $KEYS header values (${non_2xx:-0} answers other than 2xx).

| state | resident memory |
|---|---|
| started, no requests | $idle MiB |
| after the load, every key held | $loaded MiB |
| peak | $peak MiB |
MD
)
echo "$table"

if [ "${1:-}" = "--write" ]; then
  python3 - "$root/docs/benchmarks.md" "$table" <<'PY'
import re, sys
path, table = sys.argv[1], sys.argv[2]
text = open(path).read()
begin, end = "<!-- memory:begin -->", "<!-- memory:end -->"
if begin not in text:
    sys.exit(f"{path} has no {begin} marker")
start = text.index(begin) + len(begin)
text = text[:start] + "\n" + table + "\n" + text[text.index(end):]
open(path, "w").write(text)
PY
fi
