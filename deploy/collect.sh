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
# or cut short (what came back is still merged and marked); 2 on usage errors, when the
# pods cannot be listed, or when report cannot merge what came back.
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
  -o jsonpath='{range .items[*]}{.metadata.name}{"\n"}{end}') \
  || die "$kubectl could not list the pods with labels $selector in namespace $ns"
[[ -n "$pods" ]] || die "no pods with labels $selector in namespace $ns"
status=0
for pod in $pods; do
  [[ "$pod" =~ ^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$ ]] || die "unexpected pod name \`$pod\`"
  # a pod whose log cannot be read (pending, evicted, its node gone) is missing from
  # the merge, which says so; the others are still collected
  if "$kubectl" -n "$ns" logs "$pod" -c loadgen > "$out/logs/$pod.log"; then
    echo "collect.sh: $pod: $(wc -c < "$out/logs/$pod.log") bytes of log" >&2
  else
    echo "collect.sh: warning: $pod: its log could not be read" >&2
    rm -f "$out/logs/$pod.log"
    status=1
  fi
done

shopt -s nullglob
logs=("$out"/logs/*.log)
[[ ${#logs[@]} -gt 0 ]] || { echo "collect.sh: no pod's log could be read" >&2; exit 1; }
unpack_status=0
report unpack "${logs[@]}" --out "$out/workers" || unpack_status=$?
[[ $unpack_status -le 1 ]] || exit "$unpack_status"
(( unpack_status == 0 )) || status=1
# a worker directory without its run.json (the log was cut inside it) cannot be merged
workers=()
for w in "$out"/workers/*; do
  if [[ -f "$w/run.json" ]]; then
    workers+=("$w")
  else
    echo "collect.sh: warning: $w: its run.json did not come back; left out of the merge" >&2
    status=1
  fi
done
[[ ${#workers[@]} -gt 0 ]] || { echo "collect.sh: no worker's results came back" >&2; exit 1; }
merge_status=0
report merge "${workers[@]}" --out "$out/merged" || merge_status=$?
[[ $merge_status -le 1 ]] || exit "$merge_status"
report render "$out/merged"
exit $(( status > merge_status ? status : merge_status ))
