#!/usr/bin/env bash
# Render the Kubernetes manifests of a distributed meshbench run: a ConfigMap with the
# scenario, an Indexed Job of N load workers that share one start time, the results
# volume, and the merge Job. Nothing is applied; pipe the output to `kubectl apply -f -`.
#
#   deploy/render.sh --scenario scenarios/real-mesh.toml --workers 3 \
#     [--start-in 120s | --start-at 2026-12-01T10:00:00Z] [--namespace shop] \
#     [--image meshbench/loadgen:latest] [--name meshbench] [--storage-class nfs] \
#     [--cpu 1] [--set KEY=VALUE]... > run.yaml
#   kubectl apply -f run.yaml
#   kubectl -n shop wait --for=condition=complete job/meshbench-load --timeout=1h
#   deploy/render.sh ... --merge | kubectl apply -f -     # the merge Job (same flags)
#
# --results volume (default): every worker writes its run directory to a ReadWriteMany
# claim and the merge Job merges them there. --results logs: no claim; every worker
# prints its results to its log (loadgen run --log-results) and deploy/collect.sh reads
# the pods' logs, unpacks and merges them where you run it (no merge Job).
#
# --start-in is relative to now (the moment of rendering): leave the scheduler and image
# pulls time to start every pod before it; a worker that is late starts late on the same
# schedule and the merged result says by how much.
set -euo pipefail

die() { echo "render.sh: $*" >&2; exit 2; }

scenario="" workers="" start_at="" start_in="" ns="default" image="meshbench/loadgen:latest"
name="meshbench" storage_class="" cpu="1" merge=0 sets=() results="volume"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --scenario) scenario="${2:?--scenario needs a file}"; shift 2 ;;
    --workers) workers="${2:?--workers needs a number}"; shift 2 ;;
    --start-at) start_at="${2:?--start-at needs an RFC 3339 time}"; shift 2 ;;
    --start-in) start_in="${2:?--start-in needs a duration like 120s}"; shift 2 ;;
    --namespace) ns="${2:?}"; shift 2 ;;
    --image) image="${2:?}"; shift 2 ;;
    --name) name="${2:?}"; shift 2 ;;
    --storage-class) storage_class="${2:?}"; shift 2 ;;
    --cpu) cpu="${2:?}"; shift 2 ;;
    --set) sets+=("${2:?--set needs KEY=VALUE}"); shift 2 ;;
    --merge) merge=1; shift ;;
    --results) results="${2:?--results needs volume or logs}"; shift 2 ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    *) die "unknown argument \`$1\` (see --help)" ;;
  esac
done
[[ -n "$scenario" ]] || die "--scenario is required"
[[ -f "$scenario" ]] || die "--scenario $scenario: no such file"
[[ "$workers" =~ ^[1-9][0-9]{0,2}$ ]] || die "--workers \`$workers\`: a whole number 1..999"
[[ "$ns" =~ ^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$ ]] || die "--namespace \`$ns\` is not a Kubernetes namespace name"
[[ "$name" =~ ^[a-z0-9]([-a-z0-9]{0,40}[a-z0-9])?$ ]] || die "--name \`$name\`: lowercase letters, digits and '-', at most 42"
[[ "$cpu" =~ ^[0-9]+(\.[0-9]+)?m?$ ]] || die "--cpu \`$cpu\` is not a CPU quantity"
[[ "$results" == volume || "$results" == logs ]] || die "--results \`$results\`: volume or logs"
[[ -z "$storage_class" || "$results" == volume ]] || die "--storage-class: only with --results volume (logs mode has no claim)"
[[ $merge -eq 0 || "$results" == volume ]] || die "--merge: with --results logs there is no merge Job; collect and merge the logs with deploy/collect.sh"
if [[ -n "$start_in" ]]; then
  [[ -z "$start_at" ]] || die "give --start-at or --start-in, not both"
  [[ "$start_in" =~ ^([0-9]+)s$ ]] || die "--start-in \`$start_in\`: seconds, like 120s"
  start_at=$(date -u -d "@$(( $(date +%s) + ${BASH_REMATCH[1]} ))" +%Y-%m-%dT%H:%M:%SZ)
fi
if [[ $merge -eq 0 ]]; then
  [[ -n "$start_at" ]] || die "give --start-at or --start-in: the workers need one shared start"
  [[ "$start_at" =~ ^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?Z$ ]] \
    || die "--start-at \`$start_at\`: an RFC 3339 UTC time like 2026-12-01T10:00:00Z"
fi
file=$(basename "$scenario")
[[ "$file" =~ ^[A-Za-z0-9._-]+$ ]] || die "--scenario: the file name \`$file\` must be [A-Za-z0-9._-]"

set_args=""
for s in "${sets[@]+"${sets[@]}"}"; do
  set_args+=$(printf ', "--set", %s' "$(printf '%s' "$s" | python3 -c 'import json,sys; print(json.dumps(sys.stdin.read()))')")
done
# the labels of every object, indented by $1 spaces
labels() { printf '%*sapp.kubernetes.io/name: meshbench\n%*sapp.kubernetes.io/instance: %s' "$1" '' "$1" '' "$name"; }

if [[ $merge -eq 1 ]]; then
  args=""
  for ((i = 0; i < workers; i++)); do args+=" /results/worker-$i"; done
  cat <<YAML
# The merge step: every worker's run directory on the results volume merged into one
# (report merge), then rendered; copy it out with
#   kubectl -n $ns cp <merge pod>:/results/merged ./merged
apiVersion: batch/v1
kind: Job
metadata:
  name: $name-merge
  namespace: $ns
  labels:
$(labels 4)
spec:
  backoffLimit: 0
  template:
    metadata:
      labels:
$(labels 8)
        app.kubernetes.io/component: merge
      annotations:
        sidecar.istio.io/inject: "false"
    spec:
      restartPolicy: Never
      containers:
        - name: merge
          image: $image
          command: ["sh", "-c", "report merge$args --out /results/merged; s=\$?; report render /results/merged; exit \$s"]
          resources:
            requests: { cpu: 500m, memory: 256Mi }
            limits: { cpu: "1", memory: 1Gi }
          volumeMounts:
            - { name: results, mountPath: /results }
      volumes:
        - name: results
          persistentVolumeClaim:
            claimName: $name-results
YAML
  exit 0
fi

cat <<YAML
# meshbench: $workers load workers of $file, sharing the start $start_at
apiVersion: v1
kind: ConfigMap
metadata:
  name: $name-scenario
  namespace: $ns
  labels:
$(labels 4)
data:
  $file: |
$(sed 's/^/    /' "$scenario")
YAML
if [[ "$results" == volume ]]; then
  out_arg="/results/worker-\$(JOB_COMPLETION_INDEX)" log_arg="" results_volume="persistentVolumeClaim:
            claimName: $name-results"
  cat <<YAML
---
# Every worker writes its own run directory here (/results/worker-<index>); the merge Job
# reads them all, so the claim must be ReadWriteMany (NFS, CephFS, EFS, Filestore, ...).
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: $name-results
  namespace: $ns
  labels:
$(labels 4)
spec:
  accessModes: ["ReadWriteMany"]
$( [[ -n "$storage_class" ]] && echo "  storageClassName: $storage_class" )
  resources:
    requests:
      storage: 1Gi
YAML
else
  # the results leave through the pod's log: collect them with deploy/collect.sh
  out_arg="/results/run" log_arg=', "--log-results"' results_volume="emptyDir: {}"
fi
cat <<YAML
---
apiVersion: batch/v1
kind: Job
metadata:
  name: $name-load
  namespace: $ns
  labels:
$(labels 4)
spec:
  completionMode: Indexed
  completions: $workers
  parallelism: $workers
  backoffLimit: 0
  template:
    metadata:
      labels:
$(labels 8)
        app.kubernetes.io/component: load
    spec:
      restartPolicy: Never
      # one worker per node, so that the workers do not share CPUs
      affinity:
        podAntiAffinity:
          preferredDuringSchedulingIgnoredDuringExecution:
            - weight: 100
              podAffinityTerm:
                topologyKey: kubernetes.io/hostname
                labelSelector:
                  matchLabels:
                    app.kubernetes.io/instance: $name
                    app.kubernetes.io/component: load
      containers:
        - name: loadgen
          image: $image
          # JOB_COMPLETION_INDEX (0-based) is set by Kubernetes for an Indexed Job
          command: ["loadgen", "run", "/scenario/$file", "--no-report", "--out", "$out_arg"$log_arg$set_args]
          env:
            - { name: MESHBENCH_WORKERS, value: "$workers" }
            - { name: MESHBENCH_START_AT, value: "$start_at" }
          resources:
            requests: { cpu: "$cpu", memory: 128Mi }
            limits: { cpu: "$cpu", memory: 512Mi }
          volumeMounts:
            - { name: scenario, mountPath: /scenario, readOnly: true }
            - { name: results, mountPath: /results }
      volumes:
        - name: scenario
          configMap:
            name: $name-scenario
        - name: results
          $results_volume
YAML
