#!/usr/bin/env bash
# What a two-sidecar data path costs: the embedded mesh's `both` topology against the same
# topology built from nginx, side by side, over a no-mesh baseline.
#
#   bench/mesh-cost.sh                 # 5 rounds of 10 s slices at 1000 req/s, 16 connections
#   ROUNDS=7 SLICE=15s bench/mesh-cost.sh
#
# Two `loadgen serve` apps (v1, v2; 1 KiB responses, no service time), and in front of them
#   direct   nothing: loadgen -> app v1 (plaintext), the baseline
#   mesh     loadgen -> client sidecar (`loadgen mesh-sidecar`, outbound: 90/10 by weight,
#            mTLS with the client's SPIFFE identity, the server's URI SAN verified) ->
#            server sidecar v1 / v2 (inbound, STRICT) -> app; concurrency 1, no CPU limit,
#            access log off
#   nginx    loadgen -> client nginx (plaintext listener, upstream weight=9/1, proxy_ssl with
#            the client certificate, server certificate verified by name) -> server nginx v1
#            / v2 (ssl_verify_client on) -> app; one nginx instance per proxy, one worker
#            each, access log off, HTTP/1.1 keep-alive on every hop
# loadgen drives each entry at RATE req/s over CONNS HTTP/1.1 connections (open loop,
# corrected latency). A round measures the three in one of the six orders in turn. Per
# round: p90 / p99 of each, added p90 / p99 (= topology - direct), and the proxies' CPU per
# 1000 req/s (all three proxies' CPU time over the slice, from /proc, / requests x 1000).
# The verdict is the median over rounds of mesh / nginx for added p99 and for CPU.
# Needs nginx (nginx-light); builds loadgen --release unless LOADGEN is set.
set -euo pipefail
cd "$(dirname "$0")/.."

RATE=${RATE:-1000}
CONNS=${CONNS:-16}
SLICE=${SLICE:-10s}
WARMUP=${WARMUP:-2s}
ROUNDS=${ROUNDS:-5}
NGINX=${NGINX:-/usr/sbin/nginx}

if [[ -z "${LOADGEN:-}" ]]; then
  cargo build --release -p loadgen >&2
  LOADGEN=target/release/loadgen
fi
LOADGEN=$(realpath "$LOADGEN")
[[ -x "$NGINX" ]] || { echo "nginx is not installed ($NGINX)" >&2; exit 2; }

WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  if [[ -n "${KEEP:-}" ]]; then echo "kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
mkdir -p "$WORK/tmp"
chmod 755 "$WORK"

# Start a child that prints `listening on ADDR` first; sets ADDR and LAST_PID.
start() {
  local name=$1; shift
  "$@" > "$WORK/$name.out" 2> "$WORK/$name.err" &
  LAST_PID=$!
  PIDS+=("$LAST_PID")
  for _ in $(seq 1 200); do
    if [[ -s $WORK/$name.out ]] && read -r line < "$WORK/$name.out" && [[ $line == listening\ on\ * ]]; then
      ADDR=${line#listening on }; return 0
    fi
    sleep 0.05
  done
  echo "$name did not start: $(cat "$WORK/$name.err")" >&2; exit 1
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# 1. The mesh PKI (CA, server identity, client identity), from a one-second embedded-mesh run.
cat > "$WORK/pki.toml" <<TOML
[mesh]
[[mesh.subset]]
name = "v1"
weight = 100
[checks]
strict_mtls = false
[load]
rate = 10
duration = "1s"
TOML
"$LOADGEN" run "$WORK/pki.toml" --no-report --no-cpu-limits --out "$WORK/pki-run" > /dev/null 2>&1
PKI=$WORK/pki-run/mesh
[[ -f $PKI/ca.pem ]] || { echo "no PKI in $PKI" >&2; exit 1; }
NAME=checkout.default.svc.cluster.local
ID=spiffe://cluster.local/ns/default/sa/checkout

# 2. The apps.
start app-v1 "$LOADGEN" serve --listen 127.0.0.1:0 --header 'x-version: v1' --body-bytes 1024; V1=$ADDR
start app-v2 "$LOADGEN" serve --listen 127.0.0.1:0 --header 'x-version: v2' --body-bytes 1024; V2=$ADDR

# 3. The embedded mesh's sidecars: one inbound per subset, one outbound.
inbound() { # subset app
  cat > "$WORK/server-$1.json" <<JSON
{"direction": "inbound", "listen": "127.0.0.1:0", "cert": "$PKI/sidecar.pem", "key": "$PKI/sidecar-key.pem",
 "ca": "$PKI/ca.pem", "concurrency": 1, "access_log": "off",
 "routes": [{"subset": "$1", "weight": 1, "upstream": "$2"}]}
JSON
  start "server-$1" "$LOADGEN" mesh-sidecar --config "$WORK/server-$1.json"
}
inbound v1 "$V1"; S1=$ADDR; MESH_PIDS=("$LAST_PID")
inbound v2 "$V2"; S2=$ADDR; MESH_PIDS+=("$LAST_PID")
cat > "$WORK/client.json" <<JSON
{"direction": "outbound", "listen": "127.0.0.1:0", "cert": "$PKI/client.pem", "key": "$PKI/client-key.pem",
 "ca": "$PKI/ca.pem", "concurrency": 1, "access_log": "off",
 "routes": [{"subset": "v1", "weight": 90, "upstream": "$S1", "tls": {"server_name": "$NAME", "identity": "$ID"}},
            {"subset": "v2", "weight": 10, "upstream": "$S2", "tls": {"server_name": "$NAME", "identity": "$ID"}}]}
JSON
start client "$LOADGEN" mesh-sidecar --config "$WORK/client.json"; MESH_ENTRY=$ADDR; MESH_PIDS+=("$LAST_PID")

# 4. The same topology from nginx: three instances, one worker each.
nginx_conf() { # name, http block body
  cat > "$WORK/nginx-$1.conf" <<CONF
worker_processes 1;
daemon off;
pid $WORK/nginx-$1.pid;
error_log $WORK/nginx-$1.err warn;
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
$2
}
CONF
  "$NGINX" -c "$WORK/nginx-$1.conf" -p "$WORK" 2>> "$WORK/nginx-$1.err" &
  PIDS+=($!)
  for _ in $(seq 1 100); do [[ -s $WORK/nginx-$1.pid ]] && break; sleep 0.05; done
  local master; master=$(cat "$WORK/nginx-$1.pid")
  NGINX_PIDS+=("$master" $(pgrep -P "$master"))
}
NGINX_PIDS=()
NS1=$(free_port); NS2=$(free_port); NC=$(free_port)
for s in v1:$NS1:$V1 v2:$NS2:$V2; do
  IFS=: read -r sub port app_host app_port <<<"$s"
  nginx_conf "server-$sub" "
  upstream app { server $app_host:$app_port; keepalive 64; }
  server {
    listen 127.0.0.1:$port ssl;
    ssl_certificate $PKI/sidecar.pem;
    ssl_certificate_key $PKI/sidecar-key.pem;
    ssl_client_certificate $PKI/ca.pem;
    ssl_verify_client on;
    ssl_protocols TLSv1.2 TLSv1.3;
    location / { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection \"\"; }
  }"
done
nginx_conf client "
  upstream servers { server 127.0.0.1:$NS1 weight=9; server 127.0.0.1:$NS2 weight=1; keepalive 64; }
  server {
    listen 127.0.0.1:$NC;
    location / {
      proxy_pass https://servers;
      proxy_http_version 1.1;
      proxy_set_header Connection \"\";
      proxy_ssl_certificate $PKI/client.pem;
      proxy_ssl_certificate_key $PKI/client-key.pem;
      proxy_ssl_trusted_certificate $PKI/ca.pem;
      proxy_ssl_verify on;
      proxy_ssl_name $NAME;
      proxy_ssl_server_name on;
      proxy_ssl_session_reuse on;
      proxy_ssl_protocols TLSv1.3;
    }
  }"
NGINX_ENTRY=127.0.0.1:$NC
for e in "$MESH_ENTRY" "$NGINX_ENTRY"; do
  for _ in $(seq 100); do curl -fsS -H "host: $NAME" "http://$e/" >/dev/null 2>&1 && break; sleep 0.05; done
  curl -fsS -H "host: $NAME" "http://$e/" >/dev/null || { echo "$e does not answer" >&2; cat "$WORK"/*.err >&2; exit 1; }
done

scenario() { # name url
  cat > "$WORK/$1.toml" <<TOML
name = "$1"
[target]
url = "$2"
protocol = "http1"
headers = { host = "$NAME" }
subset_header = "x-version"
[load]
mode = "open"
rate = $RATE
connections = $CONNS
warmup = "$WARMUP"
duration = "$SLICE"
TOML
  echo "$WORK/$1.toml"
}
S_direct=$(scenario direct "http://$V1/")
S_mesh=$(scenario mesh "http://$MESH_ENTRY/")
S_nginx=$(scenario nginx "http://$NGINX_ENTRY/")

ticks() { local t=0 p; for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo $t; }
host_ticks() { awk '/^cpu / {print $9, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat; }
HZ=$(getconf CLK_TCK)
ORDERS=("direct mesh nginx" "mesh nginx direct" "nginx direct mesh"
        "direct nginx mesh" "nginx mesh direct" "mesh direct nginx")

echo "# mesh cost: both sidecars vs nginx — $(date -u +%FT%TZ), $(nproc) CPUs, $RATE req/s over $CONNS connections, 1 KiB, $SLICE slices"
echo
echo "| round | steal % | direct p90 | direct p99 | mesh p90 | mesh p99 | nginx p90 | nginx p99 | mesh added p99 | nginx added p99 | mesh vCPU/1k | nginx vCPU/1k | errors |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
: > "$WORK/rows"
for r in $(seq "$ROUNDS"); do
  read -r st0 tt0 < <(host_ticks)
  declare -A P90 P99 CPU ERR
  for t in ${ORDERS[$(( (r - 1) % 6 ))]}; do
    case $t in
      mesh) pids=("${MESH_PIDS[@]}") ;;
      nginx) pids=("${NGINX_PIDS[@]}") ;;
      *) pids=() ;;
    esac
    c0=$(ticks "${pids[@]}")
    s=S_$t
    "$LOADGEN" run "${!s}" --no-report --json --out "$WORK/run-$t-$r" > "$WORK/$t-$r.json" 2> "$WORK/$t-$r.err" || true
    c1=$(ticks "${pids[@]}")
    read -r p90 p99 reqs errs < <(python3 -c '
import json, sys
c = json.load(open(sys.argv[1]))["cells"][0]
l = c["latency_us"]["corrected"]
print(round(l["p90_us"]), round(l["p99_us"]), c["requests"], c["errors_total"])' "$WORK/$t-$r.json")
    P90[$t]=$p90; P99[$t]=$p99; ERR[$t]=$errs
    # CPU over warmup + slice; requests counted over the slice: scale by their ratio
    CPU[$t]=$(python3 -c "
import re, sys
def s(d):
    v, u = re.fullmatch(r'([0-9.]+)(ms|s|m)', d).groups(); return float(v) * {'ms': .001, 's': 1, 'm': 60}[u]
cpu = ($c1 - $c0) / $HZ
reqs = $reqs * (s('$SLICE') + s('$WARMUP')) / s('$SLICE')
print(f'{cpu / max(reqs, 1) * 1000:.3f}')")
  done
  read -r st1 tt1 < <(host_ticks)
  steal=$(python3 -c "print(f'{100 * ($st1 - $st0) / max(1, $tt1 - $tt0):.2f}')")
  am=$((P99[mesh] - P99[direct])); an=$((P99[nginx] - P99[direct]))
  echo "| $r | $steal | ${P90[direct]} | ${P99[direct]} | ${P90[mesh]} | ${P99[mesh]} | ${P90[nginx]} | ${P99[nginx]} | $am | $an | ${CPU[mesh]} | ${CPU[nginx]} | ${ERR[direct]}/${ERR[mesh]}/${ERR[nginx]} |"
  echo "$am $an ${CPU[mesh]} ${CPU[nginx]} $((P90[mesh] - P90[direct])) $((P90[nginx] - P90[direct]))" >> "$WORK/rows"
done
echo
python3 - "$WORK/rows" <<'PY'
import statistics, sys
rows = [list(map(float, l.split())) for l in open(sys.argv[1])]
col = lambda i: [r[i] for r in rows]
med = statistics.median
am, an, cm, cn, pm, pn = (med(col(i)) for i in range(6))
print(f"median over {len(rows)} rounds (µs; vCPU per 1000 req/s of all three proxies):")
print(f"  added p90: mesh {pm:.0f}, nginx {pn:.0f}")
print(f"  added p99: mesh {am:.0f}, nginx {an:.0f}  -> mesh / nginx = {am / an if an > 0 else float('nan'):.2f} (goal <= 1.2)")
print(f"  CPU:       mesh {cm:.3f}, nginx {cn:.3f} -> mesh / nginx = {cm / cn if cn > 0 else float('nan'):.2f} (goal <= 1.2)")
ratios = [r[0] / r[1] for r in rows if r[1] > 0]
print("  added p99 ratio per round: " + ", ".join(f"{x:.2f}" for x in ratios))
PY
