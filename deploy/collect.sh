#!/usr/bin/env bash
# Collect a distributed run whose workers printed their results to their logs
# (deploy/render.sh --results logs): read every load pod's log, write the run directories
# back (report unpack), merge them (report merge) and render the merged run.
#
#   deploy/collect.sh --namespace shop [--name meshbench] --out DIR [--kubectl kubectl]
#
# DIR/logs/<pod>.log  each pod's log as kubectl gave it
# DIR/workers/worker-<I>/  each worker's run directory, byte for byte
# DIR/merged/         the merged run (report.html, summary.md, plots/)
# Exit 0 when every worker's results came back whole and merged; 1 when some are missing
# or cut short (what came back is still merged and marked); 2 on usage errors.
# The pods must still exist (an Indexed Job keeps its completed pods until the Job is
# deleted). kubelet rotates a container's log at 10 MiB by default (containerLogMaxSize):
# a run whose interval logs are larger needs the volume mode.
set -euo pipefail

die() { echo "collect.sh: $*" >&2; exit 2; }

ns="" name="meshbench" out="" kubectl="kubectl"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --namespace) ns="${2:?--namespace needs a name}"; shift 2 ;;
    --name) name="${2:?--name needs a name}"; shift 2 ;;
    --out) out="${2:?--out needs a directory}"; shift 2 ;;
    --kubectl) kubectl="${2:?--kubectl needs a command}"; shift 2 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) die "unknown argument \`$1\` (see --help)" ;;
  esac
done
[[ -n "$ns" ]] || die "--namespace is required"
[[ -n "$out" ]] || die "--out is required"
[[ "$name" =~ ^[a-z0-9]([-a-z0-9]{0,40}[a-z0-9])?$ ]] || die "--name \`$name\`: lowercase letters, digits and '-', at most 42"
command -v report >/dev/null || die "report is not on PATH (cargo install --path report, or the image's /usr/local/bin)"
[[ ! -e "$out" ]] || die "--out $out already exists"

mkdir -p "$out/logs"
selector="app.kubernetes.io/instance=$name,app.kubernetes.io/component=load"
pods=$("$kubectl" -n "$ns" get pods -l "$selector" \
  -o jsonpath='{range .items[*]}{.metadata.name}{"\n"}{end}')
[[ -n "$pods" ]] || die "no pods with labels $selector in namespace $ns"
for pod in $pods; do
  [[ "$pod" =~ ^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$ ]] || die "unexpected pod name \`$pod\`"
  "$kubectl" -n "$ns" logs "$pod" -c loadgen > "$out/logs/$pod.log"
  echo "collect.sh: $pod: $(wc -c < "$out/logs/$pod.log") bytes of log" >&2
done

status=0
report unpack "$out"/logs/*.log --out "$out/workers" || status=$?
[[ $status -le 1 ]] || exit "$status"
shopt -s nullglob
workers=("$out"/workers/*)
[[ ${#workers[@]} -gt 0 ]] || { echo "collect.sh: no worker's results came back" >&2; exit 1; }
merge_status=0
report merge "${workers[@]}" --out "$out/merged" || merge_status=$?
[[ $merge_status -le 1 ]] || exit "$merge_status"
report render "$out/merged"
exit $(( status > merge_status ? status : merge_status ))
