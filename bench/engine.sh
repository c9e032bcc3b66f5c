#!/usr/bin/env bash
# loadgen's engine against the tools users compare it with, side by side, against one local
# nginx (worker_processes 1): wrk, oha, h2load; and its send accuracy as the kernel sees it.
#
#   bench/engine.sh                              # every part, 5 rounds
#   PARTS="accuracy" ROUNDS=5 bench/engine.sh    # one part
#   PARTS="memory" RSS_DURATION=300s bench/engine.sh
#
# Parts (each round runs every tool once, the order alternating between rounds):
#   throughput  closed loop, one thread each, CONNS keep-alive connections, DURATION:
#               plain HTTP/1.1 (loadgen, wrk, oha), mTLS HTTP/1.1 over TLS 1.3 with client
#               certificates (loadgen, oha), HTTP/2 over TLS 1.3 (loadgen, h2load, which has
#               no client certificates; CONNS connections x STREAMS streams) -> requests/s
#               and ratios
#   accuracy    open loop at 1000 and 10000 req/s over CONNS HTTP/1.1 connections: the time
#               between each request's intended send time (t0 + i/rate) and its packet on
#               the loopback interface (tcpdump, nanosecond stamps, put on CLOCK_MONOTONIC
#               with bench/tools/clockwatch so a stepped realtime clock is not read as
#               lateness), for loadgen with idle = spin, hybrid, sleep and for oha -q with
#               --latency-correction; beside loadgen's own report of the same (run.json),
#               and the floor: bench/tools/spinfloor, a C loop spinning on the clock with
#               nothing to send (how late any thread that never sleeps sees its due times)
#   latency     corrected / uncorrected p50, p99 at 1000 req/s (loadgen) and wrk's own
#   memory      peak RSS (VmHWM) of loadgen, open loop 10000 req/s over 64 connections for
#               RSS_DURATION, and 1000 connections at 1000 req/s for RSS_SHORT
#
# Host steal (% of the round, from /proc/stat) is printed per round. Needs nginx
# (nginx-light), wrk, tcpdump, h2load (nghttp2-client), oha (`cargo install oha --locked`),
# cc; builds loadgen --release unless LOADGEN is set. Run as root (tcpdump).
set -euo pipefail
cd "$(dirname "$0")/.."

CONNS=${CONNS:-16}
STREAMS=${STREAMS:-8}
DURATION=${DURATION:-10s}
ROUNDS=${ROUNDS:-5}
PARTS=${PARTS:-throughput accuracy latency memory}
RSS_DURATION=${RSS_DURATION:-300s}
RSS_SHORT=${RSS_SHORT:-60s}
PORT=${PORT:-18480}
TLS_PORT=${TLS_PORT:-18481}
H2_PORT=${H2_PORT:-18482}
# accuracy: the loadgen idle strategies (and oha) compared, the rates, and a prefix for the
# loadgen command (e.g. LG_WRAP="chrt -f 1" or "taskset -c 1")
TOOLS=${TOOLS:-floor spin hybrid sleep oha}
RATES=${RATES:-1000 10000}
LG_WRAP=${LG_WRAP:-}
# PIN=1: nginx, tcpdump and clockwatch on CPU 0, loadgen's engine worker on CPU 1
# ([load] cpus = [1]; its other threads are not pinned)
PIN=${PIN:-}
ON0=()
LG_PIN=()
if [[ -n $PIN ]]; then ON0=(taskset -c 0); LG_PIN=(--set "load.cpus=[1]"); fi
OHA=${OHA:-$(command -v oha || echo "$HOME/.cargo/bin/oha")}

if [[ -z "${LOADGEN:-}" ]]; then
  cargo build --release -p loadgen >&2
  LOADGEN=target/release/loadgen
fi
LOADGEN=$(realpath "$LOADGEN")
need() { command -v "$1" >/dev/null || [[ -x "$1" ]] || { echo "$1 is not installed" >&2; exit 2; }; }
NGINX=${NGINX:-/usr/sbin/nginx}
need "$NGINX"; need wrk

WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  if [[ -n "${KEEP:-}" ]]; then echo "kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
mkdir -p "$WORK/html" "$WORK/logs" "$WORK/tmp"
printf 'ok\n' > "$WORK/html/index.html"
chmod 755 "$WORK" "$WORK/html"   # the nginx worker runs as nobody

# PKI for the TLS listener: a CA, the server (localhost) and a client certificate
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=bench-ca \
  -keyout "$WORK/ca.key" -out "$WORK/ca.pem" 2>/dev/null
for who in server client; do
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$who" \
    -keyout "$WORK/$who.key" -out "$WORK/$who.csr" 2>/dev/null
  printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n' > "$WORK/$who.ext"
  openssl x509 -req -in "$WORK/$who.csr" -CA "$WORK/ca.pem" -CAkey "$WORK/ca.key" -CAcreateserial \
    -days 2 -extfile "$WORK/$who.ext" -out "$WORK/$who.pem" 2>/dev/null
done

cat > "$WORK/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $WORK/nginx.pid;
error_log $WORK/logs/error.log warn;
events { worker_connections 8192; }
worker_rlimit_nofile 16384;
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
    listen 127.0.0.1:$PORT backlog=4096;
    root $WORK/html;
    location / { index index.html; }
  }
  server {
    listen 127.0.0.1:$TLS_PORT ssl http2 backlog=4096;
    ssl_protocols TLSv1.3;
    ssl_certificate $WORK/server.pem;
    ssl_certificate_key $WORK/server.key;
    ssl_client_certificate $WORK/ca.pem;
    ssl_verify_client on;
    root $WORK/html;
    location / { index index.html; }
  }
  server {
    listen 127.0.0.1:$H2_PORT ssl http2 backlog=4096;
    ssl_protocols TLSv1.3;
    ssl_certificate $WORK/server.pem;
    ssl_certificate_key $WORK/server.key;
    http2_max_concurrent_streams 128;
    root $WORK/html;
    location / { index index.html; }
  }
}
CONF
ulimit -n 16384 || true
"${ON0[@]}" "$NGINX" -p "$WORK" -c "$WORK/nginx.conf" &
PIDS+=($!)
URL="http://127.0.0.1:$PORT/"
TLS_URL="https://localhost:$TLS_PORT/"
H2_URL="https://localhost:$H2_PORT/"
for _ in $(seq 100); do curl -fsS "$URL" >/dev/null 2>&1 && break; sleep 0.05; done
curl -fsS "$URL" >/dev/null || { echo "nginx does not answer 200 on $URL" >&2; exit 1; }

# Every figure must come from successful responses only.
wrk_ok() { if grep -q "Non-2xx" <<<"$1"; then echo "wrk got non-2xx responses:" >&2; echo "$1" >&2; exit 1; fi; }
lg_ok() { python3 -c '
import json, sys
d = json.load(open(sys.argv[1])); n = d["cells"][0]["errors_total"]
sys.exit("loadgen counted %d errors: %s" % (n, d.get("warnings", [])[:3]) if n else 0)' "$1"; }
jq_py() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }
# cellq 'format' 'path' 'path'...: fields of the first cell of a run.json on stdin
cellq() { python3 -c '
import json, sys
c = json.load(sys.stdin)["cells"][0]
def get(p):
    v = c
    for k in p.split("."):
        v = v[k]
    return v
print(sys.argv[1] % tuple(get(p) for p in sys.argv[2:]))' "$@"; }

cat > "$WORK/plain.toml" <<TOML
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
cat > "$WORK/tls.toml" <<TOML
name = "engine-bench-tls"
[target]
url = "$TLS_URL"
protocol = "http1"
timeout = "5s"
[target.tls]
ca = "$WORK/ca.pem"
cert = "$WORK/client.pem"
key = "$WORK/client.key"
[load]
threads = 1
connections = $CONNS
max_in_flight = $STREAMS
warmup = "1s"
TOML
cat > "$WORK/h2.toml" <<TOML
name = "engine-bench-h2"
[target]
url = "$H2_URL"
protocol = "http2"
timeout = "5s"
[target.tls]
ca = "$WORK/ca.pem"
[load]
threads = 1
connections = $CONNS
max_in_flight = $STREAMS
warmup = "1s"
TOML
lg() { # scenario, extra --set args...
  local s=$1; shift
  "$LOADGEN" run "$WORK/$s.toml" --no-report --json --out "$WORK/out-$RANDOM$RANDOM" "$@"
}

steal_jiffies() { awk '/^cpu / {print $9}' /proc/stat; }
total_jiffies() { awk '/^cpu / {s=0; for (i=2;i<=NF;i++) s+=$i; print s}' /proc/stat; }
round_start() { S0=$(steal_jiffies); T0=$(total_jiffies); }
round_steal() { python3 -c "print(f'{100*($(steal_jiffies)-$S0)/max(1,$(total_jiffies)-$T0):.2f}')"; }
has() { [[ " $PARTS " == *" $1 "* ]]; }

echo "# loadgen engine benchmark — $(date -u +%FT%TZ), $(nproc) CPUs, nginx worker_processes 1"
echo
echo "loadgen $("$LOADGEN" --version), $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2), $("$OHA" --version 2>/dev/null || echo 'oha missing'), $(h2load --version 2>/dev/null | head -1 || echo 'h2load missing')"
echo

if has throughput; then
  echo "## throughput: closed loop, one thread each, $CONNS connections, $DURATION per run"
  echo
  echo "| round | steal % | wrk | loadgen | oha | loadgen/wrk | loadgen/oha | mTLS loadgen | mTLS oha | mTLS ratio | h2 loadgen | h2load | h2 ratio |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
  for r in $(seq "$ROUNDS"); do
    round_start
    run_wrk() { out=$(wrk -t1 -c"$CONNS" -d"$DURATION" "$URL"); wrk_ok "$out"; wrk_rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out"); }
    run_lg() { lg plain --set load.mode=closed --set load.duration="$DURATION" > "$WORK/c.json"; lg_ok "$WORK/c.json"; lg_rps=$(jq_py 'round(d["cells"][0]["achieved_rate"])' < "$WORK/c.json"); }
    run_oha() { oha_rps=$("$OHA" -c "$CONNS" -z "$DURATION" --no-tui --output-format json "$URL" 2>/dev/null | jq_py 'round(d["summary"]["requestsPerSec"])'); }
    if (( r % 2 )); then run_wrk; run_lg; run_oha; else run_oha; run_lg; run_wrk; fi
    run_lg_tls() { lg tls --set load.mode=closed --set load.duration="$DURATION" > "$WORK/t.json"; lg_ok "$WORK/t.json"; tls_lg=$(jq_py 'round(d["cells"][0]["achieved_rate"])' < "$WORK/t.json"); }
    run_oha_tls() { tls_oha=$("$OHA" -c "$CONNS" -z "$DURATION" --no-tui --output-format json --cacert "$WORK/ca.pem" --cert "$WORK/client.pem" --key "$WORK/client.key" "$TLS_URL" 2>/dev/null | jq_py 'round(d["summary"]["requestsPerSec"])'); }
    if (( r % 2 )); then run_lg_tls; run_oha_tls; else run_oha_tls; run_lg_tls; fi
    run_lg_h2() { lg h2 --set load.mode=closed --set load.duration="$DURATION" > "$WORK/h.json"; lg_ok "$WORK/h.json"; h2_lg=$(jq_py 'round(d["cells"][0]["achieved_rate"])' < "$WORK/h.json"); }
    run_h2load() { out=$(h2load -c "$CONNS" -m "$STREAMS" -t 1 -D "${DURATION%s}" --warm-up-time=1 "$H2_URL" 2>&1 </dev/null || true); h2_ref=$(awk '/^finished in/ {print $4}' <<<"$out"); h2_ref=${h2_ref:-0}; }
    if (( r % 2 )); then run_lg_h2; run_h2load; else run_h2load; run_lg_h2; fi
    ratio() { python3 -c "print(f'{$1/max($2,1e-9):.2f}')"; }
    echo "| $r | $(round_steal) | $wrk_rps | $lg_rps | $oha_rps | $(ratio "$lg_rps" "$wrk_rps") | $(ratio "$lg_rps" "$oha_rps") | $tls_lg | $tls_oha | $(ratio "$tls_lg" "$tls_oha") | $h2_lg | $h2_ref | $(ratio "$h2_lg" "$h2_ref") |"
  done
  echo
fi

if has accuracy; then
  need tcpdump; need cc
  cc -O2 -o "$WORK/clockwatch" bench/tools/clockwatch.c
  cc -O2 -o "$WORK/spinfloor" bench/tools/spinfloor.c
  echo "## accuracy: send lateness, open loop over $CONNS HTTP/1.1 connections, $DURATION per run"
  echo
  echo "Kernel: packet timestamps of each request's first packet against t0 + i/rate (the first"
  echo "second left out). schedule = packet − intended; free = packet − max(intended, previous"
  echo "response on the same connection), the part the generator could have avoided (bench/tools/"
  echo "lateness.py). Self: what loadgen's run.json reports for the same run. µs."
  echo
  echo "| round | steal % | rate | tool | schedule p50 | p90 | p99 | p99.9 | max | free p50 | p90 | p99 | p99.9 | max | self p99 | self max | generator CPU (cores) | clock steps / packets dropped |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
  capture() { # name, rate, command...
    local name=$1 rate=$2; shift 2
    "${ON0[@]}" "$WORK/clockwatch" > "$WORK/$name.clock" & local cw=$!
    "${ON0[@]}" tcpdump -i lo -nn -s 96 -B 32768 --time-stamp-precision nano -w "$WORK/$name.pcap" \
      "(tcp dst port $PORT and tcp[((tcp[12:1] & 0xf0) >> 2):4] = 0x47455420) or (tcp src port $PORT and tcp[((tcp[12:1] & 0xf0) >> 2):4] = 0x48545450)" \
      2>"$WORK/$name.tcpdump" & local td=$!
    sleep 1
    "$@" > "$WORK/$name.out" 2>/dev/null || true
    sleep 0.5
    kill "$td"; wait "$td" 2>/dev/null || true
    kill "$cw"; wait "$cw" 2>/dev/null || true
    # a packet the capture dropped would shift every later one by a slot: say so
    local drops
    drops=$(awk '/dropped by kernel/ {print $1}' "$WORK/$name.tcpdump")
    echo "$(python3 bench/tools/lateness.py "$WORK/$name.pcap" "$rate" "$WORK/$name.clock" "${rate%.*}") drops=${drops:-?}"
  }
  for r in $(seq "$ROUNDS"); do
    round_start
    rows=()
    read -ra tools <<<"$TOOLS"
    if (( r % 2 == 0 )); then rev=(); for ((i=${#tools[@]}-1; i>=0; i--)); do rev+=("${tools[i]}"); done; tools=("${rev[@]}"); fi
    for rate in $RATES; do
      for t in "${tools[@]}"; do
        name="r$r-$rate-$t"
        if [[ $t == floor ]]; then
          read -r _n s50 s90 s99 s999 smax <<<"$("$WORK/spinfloor" "$rate" "${DURATION%s}")"
          rows+=("| $r | STEAL | $rate | floor: C spin loop, no traffic | $s50 | $s90 | $s99 | $s999 | $smax | | | | | | - | - | 1.00 | - / - |")
          continue
        elif [[ $t == oha ]]; then
          k=$(capture "$name" "$rate" "$OHA" -c "$CONNS" -q "$rate" -z "$DURATION" --latency-correction --no-tui "$URL")
          self="- | -"; cpu="-"
        else
          # shellcheck disable=SC2086 # LG_WRAP is a command prefix, split on purpose
          k=$(capture "$name" "$rate" $LG_WRAP "$LOADGEN" run "$WORK/plain.toml" --no-report --json --out "$WORK/out-$name" \
                --set load.mode=open --set load.rate="$rate" --set load.duration="$DURATION" --set load.idle="\"$t\"" "${LG_PIN[@]}")
          self=$(cellq '%.0f | %.0f' generator.send_lag.p99_us generator.send_lag.max_us < "$WORK/$name.out")
          cpu=$(cellq '%.2f' generator.cpu_cores < "$WORK/$name.out")
          t="loadgen $t"
        fi
        read -r _n s50 s90 s99 s999 smax f50 f90 f99 f999 fmax steps drops <<<"$k"
        rows+=("| $r | STEAL | $rate | $t | $s50 | $s90 | $s99 | $s999 | $smax | $f50 | $f90 | $f99 | $f999 | $fmax | $self | $cpu | ${steps#steps=} / ${drops#drops=} |")
      done
    done
    s=$(round_steal)
    for row in "${rows[@]}"; do echo "${row/STEAL/$s}"; done
  done
  echo
fi

if has latency; then
  echo "## latency and send lag by protocol, open loop over $CONNS connections, $DURATION (loadgen, idle = hybrid${PIN:+, worker pinned to CPU 1})"
  echo
  echo "Send lag is loadgen's own report (kernel packet stamps cannot see requests inside TLS)."
  echo
  echo "| round | steal % | protocol | rate | corrected p50 | corrected p99 | uncorrected p50 | uncorrected p99 | send lag p50 | send lag p99 | send lag p99.9 |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|"
  for r in $(seq "$ROUNDS"); do
    round_start
    rows=()
    kinds=(plain tls h2)
    (( r % 2 )) || kinds=(h2 tls plain)
    for rate in $RATES; do
      for k in "${kinds[@]}"; do
        lg "$k" --set load.mode=open --set load.rate="$rate" --set load.duration="$DURATION" "${LG_PIN[@]}" > "$WORK/o.json"
        lg_ok "$WORK/o.json"
        line=$(cellq '%.0f | %.0f | %.0f | %.0f | %.0f | %.0f | %.0f' latency_us.corrected.p50_us latency_us.corrected.p99_us \
          latency_us.uncorrected.p50_us latency_us.uncorrected.p99_us generator.send_lag.p50_us \
          generator.send_lag.p99_us generator.send_lag.p999_us < "$WORK/o.json")
        case $k in plain) name="HTTP/1.1";; tls) name="HTTP/1.1 mTLS";; h2) name="HTTP/2 TLS";; esac
        rows+=("| $r | STEAL | $name | $rate | $line |")
      done
    done
    s=$(round_steal)
    for row in "${rows[@]}"; do echo "${row/STEAL/$s}"; done
  done
  echo
fi

if has memory; then
  echo "## memory: peak RSS (VmHWM) of loadgen"
  echo
  echo "| load | duration | requests | peak RSS |"
  echo "|---|---|---|---|"
  rss_run() { # rate, connections, duration
    "$LOADGEN" run "$WORK/plain.toml" --no-report --json --out "$WORK/out-rss-$RANDOM" \
      --set load.mode=open --set load.rate="$1" --set load.connections="$2" --set load.duration="$3" > "$WORK/rss.json" &
    local pid=$! peak=0
    while kill -0 "$pid" 2>/dev/null; do
      v=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
      (( ${v:-0} > peak )) && peak=$v
      sleep 0.2
    done
    wait "$pid" || true
    reqs=$(jq_py 'd["cells"][0]["requests"]' < "$WORK/rss.json")
    echo "| $1 req/s over $2 connections | $3 | $reqs | $((peak / 1024)) MB |"
  }
  rss_run 10000 64 "$RSS_DURATION"
  rss_run 1000 1000 "$RSS_SHORT"
  echo
fi
