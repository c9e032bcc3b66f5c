#!/usr/bin/env bash
# loadgen engine vs wrk, side by side against one local nginx (worker_processes 1).
#
#   bench/engine.sh                 # all three parts, 5-minute RSS run
#   RSS_DURATION=60s bench/engine.sh   (RSS_DURATION=0 skips part 3)
#
# 1. closed loop, plain HTTP/1.1 keep-alive, one thread each, CONNS connections:
#    loadgen (mode=closed, threads=1) vs `wrk -t1 -cCONNS` -> requests/s and ratio.
# 2. latency at ~1000 req/s, CONNS connections: loadgen open loop at exactly 1000 req/s
#    (corrected and uncorrected p50/p99) vs wrk paced by a Lua delay() of CONNS ms per
#    request per connection (Debian's wrk has no -R), whose latency is from its own send.
# 3. peak RSS (VmHWM via /usr/bin/time -v) of loadgen open loop at 1000 req/s for RSS_DURATION.
#
# Needs nginx (nginx-light) and wrk; builds loadgen --release unless LOADGEN is set.
set -euo pipefail
cd "$(dirname "$0")/.."

CONNS=${CONNS:-4}
DURATION=${DURATION:-10s}
ROUNDS=${ROUNDS:-3}
RSS_DURATION=${RSS_DURATION:-300s}
PORT=${PORT:-18480}

if [[ -z "${LOADGEN:-}" ]]; then
  cargo build --release -p loadgen >&2
  LOADGEN=target/release/loadgen
fi
command -v wrk >/dev/null || { echo "wrk is not installed" >&2; exit 2; }
NGINX=${NGINX:-/usr/sbin/nginx}

WORK=$(mktemp -d)
NGINX_PID=
cleanup() {
  if [[ -n "$NGINX_PID" ]]; then kill "$NGINX_PID" 2>/dev/null || true; wait "$NGINX_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

mkdir -p "$WORK/html" "$WORK/logs"
printf 'ok\n' > "$WORK/html/index.html"
chmod 755 "$WORK" "$WORK/html"   # the nginx worker runs as nobody
cat > "$WORK/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $WORK/nginx.pid;
error_log $WORK/logs/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 100000000;
  keepalive_timeout 300s;
  client_body_temp_path $WORK/tmp;
  proxy_temp_path $WORK/tmp;
  fastcgi_temp_path $WORK/tmp;
  uwsgi_temp_path $WORK/tmp;
  scgi_temp_path $WORK/tmp;
  server {
    listen 127.0.0.1:$PORT;
    root $WORK/html;
    location / { index index.html; }
  }
}
CONF
mkdir -p "$WORK/tmp"
"$NGINX" -p "$WORK" -c "$WORK/nginx.conf" &
NGINX_PID=$!
URL="http://127.0.0.1:$PORT/"
for _ in $(seq 100); do
  curl -fsS "$URL" >/dev/null 2>&1 && break
  sleep 0.05
done
curl -fsS "$URL" >/dev/null || { echo "nginx does not answer 200 on $URL" >&2; exit 1; }

# Every figure below must come from successful responses only.
wrk_ok() { # wrk output
  if grep -q "Non-2xx" <<<"$1"; then echo "wrk got non-2xx responses:" >&2; echo "$1" >&2; exit 1; fi
}
lg_ok() { # summary json file
  python3 -c "import json,sys; d=json.load(open(sys.argv[1])); n=d['cells'][0]['errors_total']; sys.exit(f'loadgen counted {n} errors: {d[\"warnings\"]}' if n else 0)" "$1"
}

scenario() { # mode
  cat > "$WORK/s.toml" <<TOML
name = "engine-bench"
[target]
url = "$URL"
protocol = "http1"
timeout = "5s"
[load]
threads = 1
connections = $CONNS
warmup = "1s"
TOML
}
scenario

lg_json() { # extra --set args...
  "$LOADGEN" run "$WORK/s.toml" --no-report --json --out "$WORK/out-$RANDOM" "$@"
}
jq_py() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }

echo "# loadgen engine vs wrk — $(date -u +%FT%TZ), $(nproc) CPUs, nginx worker_processes 1, $CONNS connections"
echo
echo "## 1. closed loop, HTTP/1.1 keep-alive, one thread each, $DURATION per run"
echo
echo "| round | wrk req/s | loadgen req/s | ratio |"
echo "|---|---|---|---|"
for r in $(seq "$ROUNDS"); do
  out=$(wrk -t1 -c"$CONNS" -d"$DURATION" "$URL"); wrk_ok "$out"
  wrk_rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  lg_json --set load.mode=closed --set load.duration="$DURATION" > "$WORK/closed.json"
  lg_ok "$WORK/closed.json"
  lg_rps=$(jq_py 'round(d["cells"][0]["achieved_rate"])' < "$WORK/closed.json")
  ratio=$(python3 -c "print(f'{$lg_rps/$wrk_rps:.2f}')")
  echo "| $r | $wrk_rps | $lg_rps | $ratio |"
done
echo

echo "## 2. latency at ~1000 req/s over $CONNS connections, $DURATION"
echo
cat > "$WORK/pace.lua" <<LUA
-- pace each connection to one request per $CONNS ms: ~1000 req/s over $CONNS connections
function delay() return $CONNS end
LUA
echo "| tool | rate req/s | p50 | p99 | latency measured |"
echo "|---|---|---|---|---|"
for r in $(seq "$ROUNDS"); do
  out=$(wrk -t1 -c"$CONNS" -d"$DURATION" --latency -s "$WORK/pace.lua" "$URL"); wrk_ok "$out"
  wrk_rate=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  wrk_p50=$(awk '$1=="50%" {print $2}' <<<"$out")
  wrk_p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  echo "| wrk (delay() pacing) | $wrk_rate | $wrk_p50 | $wrk_p99 | from its own send |"
  lg_json --set load.mode=open --set load.rate=1000 --set load.duration="$DURATION" > "$WORK/open.json"
  lg_ok "$WORK/open.json"
  python3 - "$WORK/open.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))["cells"][0]
for view, note in (("corrected", "from intended send"), ("uncorrected", "from actual send")):
    l = c["latency_us"][view]
    print(f'| loadgen open loop, {view} | {c["achieved_rate"]:.1f} | {l["p50_us"]:.0f}us | {l["p99_us"]:.0f}us | {note}; errors {c["errors_total"]} |')
PY
done
echo

if [[ "$RSS_DURATION" == 0 ]]; then exit 0; fi
echo "## 3. peak RSS, open loop 1000 req/s for $RSS_DURATION"
echo
/usr/bin/time -v -o "$WORK/time.txt" "$LOADGEN" run "$WORK/s.toml" --no-report --json --out "$WORK/out-rss" \
  --set load.mode=open --set load.rate=1000 --set load.duration="$RSS_DURATION" > "$WORK/rss.json"
lg_ok "$WORK/rss.json"
rss_kb=$(awk -F: '/Maximum resident set size/ {gsub(/ /,"",$2); print $2}' "$WORK/time.txt")
reqs=$(jq_py 'd["cells"][0]["requests"]' < "$WORK/rss.json")
echo "| duration | requests | peak RSS |"
echo "|---|---|---|"
echo "| $RSS_DURATION | $reqs | $((rss_kb / 1024)) MB ($rss_kb kB) |"
