#!/usr/bin/env bash
# Benchmark of probe (see BENCHMARKS.md, "probe vs fio").
#
#   bench/probe.sh            # ROUNDS=3 by default; BENCH_DIR=/path to choose the directory
#
# 1. Run time of the full default run (goal <= 15 s) and of --quick (goal <= 3 s), with
#    hyperfine (probe's exit status 1 on a failed check is ignored: the time is what counts).
# 2. Agreement with fio, side by side on the same directory, ROUNDS interleaved rounds of:
#      probe --only disk.io --path DIR --json   (with a profile giving it fio's workload:
#                                                all 10029 writes, 2 s of random reads)
#      fio --name=etcd --rw=write --ioengine=sync --fdatasync=1 --size=22m --bs=2300
#      fio --name=randread --rw=randread --bs=4k --direct=1 --ioengine=libaio --iodepth=32
#          --size=128m --runtime=2 --time_based
#    comparing probe's fdatasync p99 and 4k random-read IOPS with fio's (goal: within 10 %).
#    DEFAULTS=1: probe on its default settings (no profile: at most 3 s of etcd-style
#    writes, 1.5 s of random reads), the fio jobs as above, and fio run a second time in
#    every round (the control: how much the disk itself moves between two fio runs).
#    SKIP_TIME=1 leaves out part 1.
# Needs: cargo, fio, hyperfine, jq.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
DIR=${BENCH_DIR:-}
if [ -z "$DIR" ]; then
  DIR=$(mktemp -d /var/tmp/probe-bench.XXXXXX)
  trap 'rm -rf "$DIR" "$OUT"' EXIT
fi
OUT=$(mktemp -d /tmp/probe-bench-out.XXXXXX)
for tool in fio hyperfine jq; do
  command -v "$tool" >/dev/null || { echo "bench/probe.sh: $tool is not installed" >&2; exit 2; }
done

cargo build --release -p probe >&2
PROBE=$PWD/target/release/probe
echo "# probe benchmark on $(uname -r), $(nproc) vCPUs, directory $DIR ($(df --output=source "$DIR" | tail -1))"
echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ), load average $(cut -d' ' -f1-3 /proc/loadavg)"

if [ "${SKIP_TIME:-0}" != 1 ]; then
echo
echo "## Run time"
hyperfine --runs 3 --ignore-failure --export-json "$OUT/time.json" \
  -n default "$PROBE --path $DIR --color never" \
  -n quick "$PROBE --quick --path $DIR --color never" >&2
jq -r '.results[] | "- \(.command): mean \(.mean*100|round/100) s, min \(.min*100|round/100) s, max \(.max*100|round/100) s"' "$OUT/time.json"
fi

echo
echo "## probe vs fio on $DIR ($ROUNDS interleaved rounds)"
echo
DEFAULTS=${DEFAULTS:-0}
if [ "$DEFAULTS" = 1 ]; then
  echo "probe on its default settings; fio twice per round (the second run is the control)"
  echo
  echo "| round | probe fdatasync p99 (ms) | fio fdatasync p99 (ms) | ratio | fio again (ms) | fio/fio | probe randread IOPS | fio randread IOPS | ratio | fio again | fio/fio |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|"
else
echo "| round | probe fdatasync p99 (ms) | fio fdatasync p99 (ms) | ratio | probe randread IOPS | fio randread IOPS | ratio |"
echo "|---|---|---|---|---|---|---|"
fi
# Same workload on both sides: probe does all 10029 etcd-style writes (no time cut) and
# random-reads for 2 s, like the fio jobs. Order alternates between rounds to cancel drift.
cat > "$OUT/same-as-fio.toml" <<'EOF'
[io]
size_mib = 128
fsync_max_writes = 10029
fsync_seconds = 600
phase_seconds = 2.0
queue_depth = 32
EOF
run_probe() {
  if [ "$DEFAULTS" = 1 ]; then
    "$PROBE" --only disk.io --path "$DIR" --json > "$OUT/probe-$1.json" || true
  else
    "$PROBE" --only disk.io --path "$DIR" --profile "$OUT/same-as-fio.toml" --json > "$OUT/probe-$1.json" || true
  fi
}
run_fio() {
  rm -f "$DIR"/etcd.* "$DIR"/randread.*
  fio --name=etcd --rw=write --ioengine=sync --fdatasync=1 --size=22m --bs=2300 \
      --directory="$DIR" --output-format=json > "$OUT/fio-etcd-$1.json"
  rm -f "$DIR"/etcd.*
  fio --name=randread --rw=randread --bs=4k --direct=1 --ioengine=libaio --iodepth=32 \
      --size=128m --runtime=2 --time_based --directory="$DIR" --output-format=json \
      > "$OUT/fio-rr-$1.json"
  rm -f "$DIR"/randread.*
}
if [ "$DEFAULTS" = 1 ]; then
  for r in $(seq 1 "$ROUNDS"); do
    # order rotates: probe, fio, fio' / fio, probe, fio' / fio, fio', probe ...
    case $((r % 3)) in
      1) run_probe "$r"; run_fio "$r"; run_fio "$r-again" ;;
      2) run_fio "$r"; run_probe "$r"; run_fio "$r-again" ;;
      0) run_fio "$r"; run_fio "$r-again"; run_probe "$r" ;;
    esac
    pf=$(jq '[.findings[].measurements[] | select(.name=="fdatasync_p99_ms") | .value][0]' "$OUT/probe-$r.json")
    pr=$(jq '[.findings[].measurements[] | select(.name=="randread_iops") | .value][0]' "$OUT/probe-$r.json")
    ff=$(jq '.jobs[0].sync.lat_ns.percentile["99.000000"] / 1e6' "$OUT/fio-etcd-$r.json")
    fr=$(jq '.jobs[0].read.iops' "$OUT/fio-rr-$r.json")
    ff2=$(jq '.jobs[0].sync.lat_ns.percentile["99.000000"] / 1e6' "$OUT/fio-etcd-$r-again.json")
    fr2=$(jq '.jobs[0].read.iops' "$OUT/fio-rr-$r-again.json")
    jq -rn --argjson r "$r" --argjson pf "$pf" --argjson ff "$ff" --argjson pr "$pr" --argjson fr "$fr" --argjson ff2 "$ff2" --argjson fr2 "$fr2" \
      '"| \($r) | \($pf*100|round/100) | \($ff*100|round/100) | \($pf/$ff*100|round/100) | \($ff2*100|round/100) | \($ff2/$ff*100|round/100) | \($pr|round) | \($fr|round) | \($pr/$fr*100|round/100) | \($fr2|round) | \($fr2/$fr*100|round/100) |"'
    echo "$pf $ff $pr $fr $ff2 $fr2" >> "$OUT/rows"
  done
  jq -rRn '[inputs | split(" ") | map(tonumber)] as $rows
    | def med(a): (a | sort) as $s | $s[($s|length)/2|floor];
      "medians over the rounds: fdatasync p99 probe \(med($rows|map(.[0]))*100|round/100) ms, fio \(med($rows|map(.[1]))*100|round/100) ms, fio again \(med($rows|map(.[4]))*100|round/100) ms; randread IOPS probe \(med($rows|map(.[2]))|round), fio \(med($rows|map(.[3]))|round), fio again \(med($rows|map(.[5]))|round)",
      "probe / median of all fio runs: fdatasync p99 \((med($rows|map(.[0])) / med($rows|map(.[1],.[4])))*100|round/100), randread IOPS \((med($rows|map(.[2])) / med($rows|map(.[3],.[5])))*100|round/100)",
      "median per-round ratios: probe/fio fdatasync \(med($rows|map(.[0]/.[1]))*100|round/100), fio/fio fdatasync \(med($rows|map(.[4]/.[1]))*100|round/100); probe/fio randread \(med($rows|map(.[2]/.[3]))*100|round/100), fio/fio randread \(med($rows|map(.[5]/.[3]))*100|round/100)"' "$OUT/rows"
  echo
  left=$(find "$DIR" -name '.probe-io-*' | wc -l)
  echo "temporary files left by probe in $DIR: $left"
  exit 0
fi
for r in $(seq 1 "$ROUNDS"); do
  if [ $((r % 2)) -eq 1 ]; then run_probe "$r"; run_fio "$r"; else run_fio "$r"; run_probe "$r"; fi
  pf=$(jq '[.findings[].measurements[] | select(.name=="fdatasync_p99_ms") | .value][0]' "$OUT/probe-$r.json")
  pr=$(jq '[.findings[].measurements[] | select(.name=="randread_iops") | .value][0]' "$OUT/probe-$r.json")
  ff=$(jq '.jobs[0].sync.lat_ns.percentile["99.000000"] / 1e6' "$OUT/fio-etcd-$r.json")
  fr=$(jq '.jobs[0].read.iops' "$OUT/fio-rr-$r.json")
  jq -rn --argjson r "$r" --argjson pf "$pf" --argjson ff "$ff" --argjson pr "$pr" --argjson fr "$fr" \
    '"| \($r) | \($pf*100|round/100) | \($ff*100|round/100) | \($pf/$ff*100|round/100) | \($pr|round) | \($fr|round) | \($pr/$fr*100|round/100) |"'
  echo "$pf $ff $pr $fr" >> "$OUT/rows"
done
# medians over the rounds
jq -rRn '[inputs | split(" ") | map(tonumber)] as $rows
  | def med(i): ($rows | map(.[i]) | sort) as $s | $s[($s|length)/2|floor];
    ($rows | map(.[0]/.[1]) | sort) as $fr | ($rows | map(.[2]/.[3]) | sort) as $rr
  | "| median | \(med(0)*100|round/100) | \(med(1)*100|round/100) | \(med(0)/med(1)*100|round/100) | \(med(2)|round) | \(med(3)|round) | \(med(2)/med(3)*100|round/100) |",
    "",
    "median of the per-round ratios: fdatasync p99 \($fr[($fr|length)/2|floor]*100|round/100), randread IOPS \($rr[($rr|length)/2|floor]*100|round/100)"' "$OUT/rows"
echo
left=$(find "$DIR" -name '.probe-io-*' | wc -l)
echo "temporary files left by probe in $DIR: $left"
