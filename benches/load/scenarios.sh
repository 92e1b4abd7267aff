#!/usr/bin/env bash
# Load scenarios beyond plain proxying, each in one run on this machine:
#
# - policies: a JWT (HS256, cache of verified tokens on) and a rate limit (process
#   memory) on every one of 1,000 routes, against gatehouse's own plain proxy, and
#   against nginx with 1,000 locations and `limit_req` (nginx has no JWT check of its
#   own, so it does less work).
# - cache hits: one cached URL through gatehouse's cache and nginx's `proxy_cache`.
# - aggregation: the latency of one request merging three upstream calls against three
#   proxied calls in a row, one connection at a time.
#
# Layout as in run.sh: wrk, oha and the upstream on CPU 0, each proxy alone on CPU 1
# with one worker. All traffic stays on 127.0.0.1.
#
# Usage: benches/load/scenarios.sh [--write]   (--write updates docs/benchmarks.md)
# Environment: DURATION (seconds per run, default 10), CONNECTIONS (default 64).
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)

DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-64}
ROUTES=1000
UPSTREAM_PORT=18101
GATEHOUSE_PORT=18102
NGINX_PORT=18103
LOAD_CPU=0
PROXY_CPU=1

source "$root/benches/load/common.sh"
start_upstream $LOAD_CPU $UPSTREAM_PORT

# An HS256 token for subject "bench" that expires in 2100, signed with BENCH_JWT_KEY.
export BENCH_JWT_KEY="load-test-signing-key-of-32-bytes!"
token=$(python3 - <<'PY'
import base64, hashlib, hmac, json, os
def part(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
header = part(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
claims = part(json.dumps({"sub": "bench", "exp": 4102444800}).encode())
signed = f"{header}.{claims}".encode()
key = os.environ["BENCH_JWT_KEY"].encode()
print(f"{header}.{claims}.{part(hmac.new(key, signed, hashlib.sha256).digest())}")
PY
)

last_route="/r/$((ROUTES - 1))"

# Runs gatehouse on CPU 1 with the config in $work/NAME.toml.
run_gatehouse() { # name
  RUST_LOG="warn" start $PROXY_CPU "$gatehouse_bin" run --workers 1 --config "$work/$1.toml"
  wait_port $GATEHOUSE_PORT
}

stop_last() {
  kill "${pids[-1]}"
  wait "${pids[-1]}" 2>/dev/null || true
  unset 'pids[-1]'
}

# Runs nginx on CPU 1 with the server block's contents in $work/NAME.locations.
run_nginx() { # name
  {
    cat <<CONF
worker_processes 1;
daemon off;
pid $work/$1.pid;
error_log $work/$1.err warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  upstream backend { server 127.0.0.1:$UPSTREAM_PORT; keepalive 128; }
  limit_req_zone \$http_authorization zone=clients:10m rate=1000000r/s;
  proxy_cache_path $work/$1-cache levels=1:2 keys_zone=pages:10m;
  server {
    listen 127.0.0.1:$NGINX_PORT;
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
CONF
    cat "$work/$1.locations"
    echo "  }"
    echo "}"
  } >"$work/$1.conf"
  start $PROXY_CPU nginx -c "$work/$1.conf" -e "$work/$1.err"
  wait_port $NGINX_PORT
}

results="$work/scenarios.tsv"
: >"$results"
record() { # scenario, line from saturate
  printf '%s\t%s\n' "$1" "$2" >>"$results"
}

# Plain proxying, the baseline of the policy scenario.
gatehouse_config '
[[routes]]
upstream = "backend"' >"$work/plain.toml"
run_gatehouse plain
record policies "$(saturate "gatehouse, one route, no policies" $GATEHOUSE_PORT "${pids[-1]}" /)"
stop_last

# JWT and a rate limit on each of 1,000 routes; the last one declared is requested.
{
  gatehouse_config '
[policies.users.jwt]
keys = [{ alg = "HS256", secret = "BENCH_JWT_KEY" }]

[policies.per-user.rate_limit]
algorithm = "gcra"
limit = 1000000
period = "1s"
key = ["subject"]'
  for i in $(seq 0 $((ROUTES - 1))); do
    printf '\n[[routes]]\nmatch.path = "/r/%d"\nupstream = "backend"\npolicies = ["users", "per-user"]\n' "$i"
  done
} >"$work/policies.toml"
run_gatehouse policies
record policies "$(saturate "gatehouse, $ROUTES routes, JWT and rate limit" $GATEHOUSE_PORT "${pids[-1]}" "$last_route" \
  -H "authorization: Bearer $token")"
stop_last

for i in $(seq 0 $((ROUTES - 1))); do
  printf '    location = /r/%d { limit_req zone=clients burst=1000000 nodelay; proxy_pass http://backend; }\n' "$i"
done >"$work/nginx-policies.locations"
run_nginx nginx-policies
record policies "$(saturate "nginx, $ROUTES locations, limit_req" $NGINX_PORT "$(pgrep -P "${pids[-1]}" | head -n1)" "$last_route" \
  -H "authorization: Bearer $token")"
stop_last

# Cache hits on one URL.
gatehouse_config '
[policies.pages.cache]
default_ttl = "10m"

[[routes]]
upstream = "backend"
policies = ["pages"]' >"$work/cache.toml"
run_gatehouse cache
record cache "$(saturate "gatehouse cache" $GATEHOUSE_PORT "${pids[-1]}" /cached)"
stop_last

echo '    location / { proxy_cache pages; proxy_cache_valid 200 10m; proxy_pass http://backend; }' \
  >"$work/nginx-cache.locations"
run_nginx nginx-cache
record cache "$(saturate "nginx proxy_cache" $NGINX_PORT "$(pgrep -P "${pids[-1]}" | head -n1)" /cached)"
stop_last

# Aggregation: median latency of sequential requests on one connection.
p50_one_connection() { # path
  taskset -c $LOAD_CPU oha --no-tui --output-format json -z "${DURATION}s" -c 1 \
    "http://127.0.0.1:$GATEHOUSE_PORT$1" >"$work/oha.json"
  python3 -c 'import json,sys; print("%.3f" % (json.load(open(sys.argv[1]))["latencyPercentiles"]["p50"] * 1000))' "$work/oha.json"
}
gatehouse_config '
[[routes]]
match.path = "/json/one"
upstream = "backend"

[[routes]]
match.path = "/three"
dispatch = "aggregate"
aggregate.calls = [
  { name = "a", upstream = "backend", path = "/json/a" },
  { name = "b", upstream = "backend", path = "/json/b" },
  { name = "c", upstream = "backend", path = "/json/c" },
]' >"$work/aggregate.toml"
run_gatehouse aggregate
one=$(p50_one_connection /json/one)
three=$(p50_one_connection /three)
stop_last

python3 - "$results" "$one" "$three" "$DURATION" "$CONNECTIONS" "$root/docs/benchmarks.md" ${1:+"$1"} <<'PY'
import csv, os, platform, sys
results, one, three, duration, connections, document = sys.argv[1:7]
write = "--write" in sys.argv[7:]
rows = [line for line in csv.reader(open(results), delimiter="\t")]

def cpu():
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"

def table(scenario, base_name):
    chosen = [row for row in rows if row[0] == scenario]
    base = next(float(row[2]) for row in chosen if row[1].startswith(base_name))
    out = ["| target | requests/s | ratio | p50 ms | p99 ms | CPU µs/request |", "|---|---|---|---|---|---|"]
    for _, name, rps, p50, p99, cpu_us in chosen:
        out.append(f"| {name} | {float(rps):,.0f} | {float(rps) / base:.2f} | {p50} | {p99} | {cpu_us} |")
    return out

lines = [
    f"Machine: {os.cpu_count()} cores ({cpu()}), Linux {platform.release()}. "
    "Command: `benches/load/scenarios.sh --write`.",
    f"Saturation: wrk, 1 thread, {connections} keep-alive connections, {duration} s per "
    "target; each proxy with one worker pinned to CPU 1; wrk and the nginx upstream on CPU 0.",
    "",
    "Policies (ratio against gatehouse without policies; nginx checks no JWT):",
    "",
    *table("policies", "gatehouse, one route"),
    "",
    "Cache hits on one URL (ratio against nginx's `proxy_cache`):",
    "",
    *table("cache", "nginx"),
    "",
    f"Aggregation, one connection, oha for {duration} s: a route merging three calls "
    f"answers in {three} ms at the median; one proxied call takes {one} ms, so three "
    f"in a row take about {3 * float(one):.3f} ms "
    f"(ratio {float(three) / (3 * float(one)):.2f}).",
]
text = "\n".join(lines)
print(text)
if write:
    begin, end = "<!-- scenarios:begin -->", "<!-- scenarios:end -->"
    current = open(document).read()
    if begin not in current:
        sys.exit(f"{document} has no {begin} marker")
    start = current.index(begin) + len(begin)
    current = current[:start] + "\n" + text + "\n" + current[current.index(end):]
    open(document, "w").write(current)
PY
