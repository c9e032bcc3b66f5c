#!/usr/bin/env bash
# report rendering speed: `report render` on a synthetic 12-cell matrix run
# (4 sidecar CPU settings x 3 access-log modes, SECONDS per cell at 200 req/s, written by
# report/examples/gen_run.rs: run.json + one V2-deflate .hlog per cell). Goal: < 2 s.
#
#   bench/report.sh                 # 60 s per cell, 5 rounds
#   SECONDS_PER_CELL=300 ROUNDS=3 bench/report.sh
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_PER_CELL=${SECONDS_PER_CELL:-60}
ROUNDS=${ROUNDS:-5}

cargo build --release -p meshbench-report --bin report --example gen_run >&2
REPORT=target/release/report
GEN=target/release/examples/gen_run

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$GEN" "$work/run" 4 3 "$SECONDS_PER_CELL" >&2
echo "run: 12 cells x ${SECONDS_PER_CELL} s; run dir $(du -sh "$work/run" | cut -f1)"

best=""
for i in $(seq 1 "$ROUNDS"); do
  rm -rf "$work/run/plots" "$work/run/report.html" "$work/run/summary.md"
  start=$(date +%s%N)
  "$REPORT" render "$work/run" >/dev/null
  end=$(date +%s%N)
  ms=$(( (end - start) / 1000000 ))
  echo "round $i: ${ms} ms"
  if [[ -z "$best" || $ms -lt $best ]]; then best=$ms; fi
done
charts=$(ls "$work/run/plots" | wc -l)
html=$(du -k "$work/run/report.html" | cut -f1)
echo "best of $ROUNDS: ${best} ms for $charts chart files, report.html ${html} KiB (goal < 2000 ms)"
[[ $best -lt 2000 ]]
