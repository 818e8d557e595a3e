#!/usr/bin/env bash
# Measures the admission webhook: throughput and p50/p99 latency under load on loopback
# (wrk, installed from Debian's packages if missing), pod-creation latency on the local
# control plane with the webhook against without it, and creation-to-bound latency under the
# registration by injection point, the former one (both operations) and none
# (bench/bindlatency.py). Writes bench/results/webhook.json (webhook-BACKGROUND.json with
# pods in the cluster).
# Usage: bench/webhook.sh [DURATION_SECONDS] [PODS] [BACKGROUND] [PROCESS]
#   BACKGROUND: pods already running in the cluster while measuring (a Deployment in the
#   namespace bench-bg, on nodes enough for it), e.g. 5000; default 0.
#   PROCESS: `webhook` (default: the webhook alone, which reads each bound pod from the API
#   server), `webhook-cache` (the webhook alone with --pod-cache: a binding's pod comes from
#   its own watch of the pods) or `run` (the operator and its webhook in one process, as the
#   chart deploys them: a binding's pod comes from the operator's pod cache).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
secs="${1:-10}"; pods="${2:-200}"; background="${3:-0}"; process="${4:-webhook}"
[[ "$secs" =~ ^[0-9]+$ && "$pods" =~ ^[0-9]+$ && "$background" =~ ^[0-9]+$ && "$process" =~ ^(webhook|webhook-cache|run)$ ]] ||
  { echo "usage: bench/webhook.sh [DURATION_SECONDS] [PODS] [BACKGROUND] [webhook|webhook-cache|run], numbers but the last" >&2; exit 2; }
result=bench/results/webhook.json
[[ "$background" == 0 && "$process" == webhook ]] || result="bench/results/webhook-$background-$process.json"
command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk; }
cargo build -q --release --bin armor-refresh
AR="$PWD/target/release/armor-refresh"
export ARMOR_REFRESH_CLUSTER_DIR="${TMPDIR:-/tmp}/armor-refresh-bench-$$"
wh_pid=""
cleanup() { [[ -n "$wh_pid" ]] && kill "$wh_pid" 2>/dev/null; wait 2>/dev/null || true; e2e/cluster.sh down >/dev/null 2>&1 || true; }
trap cleanup EXIT
e2e/cluster.sh up --nodes $((3 + background / 80)) --ready-delay 1s
eval "$(e2e/cluster.sh env)"
if ((background > 0)); then
  echo "== $background pods in the cluster first"
  kubectl create namespace bench-bg >/dev/null
  kubectl -n bench-bg create deployment bg --image example/app:1 --replicas "$background" >/dev/null
  deadline=$((SECONDS + 900))
  until [[ "$(kubectl -n bench-bg get deploy bg -o jsonpath='{.status.readyReplicas}')" == "$background" ]]; do
    ((SECONDS < deadline)) || { echo "the $background background pods were not Ready in 900 s"; exit 1; }
    sleep 5
  done
fi
$AR crd | kubectl apply -f - >/dev/null
kubectl wait --for=condition=Established crd/armorrefreshpolicies.refresh.armor.dev --timeout=30s >/dev/null
kubectl apply -f examples/policy-default.yaml >/dev/null
kubectl create namespace bench >/dev/null
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
mport="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"

echo "== pod creation without the webhook ($pods pods)"
without="$(python3 bench/podcreate.py "$ARMOR_REFRESH_CLUSTER_DIR" bench "$pods")"
echo "   $without"
kubectl -n bench delete pods --all --wait=false >/dev/null

# `run` also leads: the Lease in the default namespace (the bench policy is Manual, so it
# refreshes nothing).
command=(run --identity bench-0 --lease-namespace default)
[[ "$process" == webhook ]] && command=(webhook)
[[ "$process" == webhook-cache ]] && command=(webhook --pod-cache)
$AR "${command[@]}" --self-signed --webhook-addr "127.0.0.1:$port" --metrics-addr "127.0.0.1:$mport" \
  --webhook-config armor-refresh-bench --webhook-url "https://127.0.0.1:$port/mutate" >"${TMPDIR:-/tmp}/armor-refresh-bench-webhook.log" 2>&1 &
wh_pid=$!
deadline=$((SECONDS + 60))
until curl -sf "http://127.0.0.1:$mport/readyz" >/dev/null; do
  ((SECONDS < deadline)) || { echo "webhook not ready"; exit 1; }
  sleep 0.5
done

echo "== pod creation with the webhook ($pods pods)"
with="$(python3 bench/podcreate.py "$ARMOR_REFRESH_CLUSTER_DIR" bench "$pods")"
echo "   $with"
patched="$(kubectl -n bench get pods -o json | python3 -c 'import json,sys; print(sum(1 for p in json.load(sys.stdin)["items"] if "refresh.armor.dev/injected" in (p["metadata"].get("annotations") or {})))')"
echo "   pods carrying the injected profile: $patched"

echo "== pod creation and binding: registration by injection point, both operations (before), none"
kubectl get mutatingwebhookconfiguration armor-refresh-bench -o json | python3 -c '
import copy, json, sys
d = json.load(sys.stdin)
for k in ("resourceVersion", "uid", "creationTimestamp", "generation", "managedFields"):
    d["metadata"].pop(k, None)
json.dump(d, open(sys.argv[1], "w"))
d["webhooks"][0].pop("matchConditions", None)
d["webhooks"][0]["rules"][0]["resources"] = ["pods", "pods/binding"]
json.dump(d, open(sys.argv[2], "w"))' "$ARMOR_REFRESH_CLUSTER_DIR/hook-new.json" "$ARMOR_REFRESH_CLUSTER_DIR/hook-old.json"
binding="$(python3 bench/bindlatency.py "$ARMOR_REFRESH_CLUSTER_DIR" bench "$ARMOR_REFRESH_CLUSTER_DIR/hook-new.json" "$ARMOR_REFRESH_CLUSTER_DIR/hook-old.json" 6 25)"
echo "   $binding"
# The webhook's own configuration back, for the load test.
kubectl delete mutatingwebhookconfiguration armor-refresh-bench --ignore-not-found >/dev/null
kubectl create -f "$ARMOR_REFRESH_CLUSTER_DIR/hook-new.json" >/dev/null

echo "== webhook under load on loopback (wrk, 2 threads, 8 connections, ${secs}s)"
out="$(wrk -t2 -c8 -d"${secs}s" --latency -s bench/review.lua "https://127.0.0.1:$port/mutate")"
echo "$out" | sed 's/^/   /'
rps="$(echo "$out" | awk '/Requests\/sec/ {print $2}')"
p50="$(echo "$out" | awk '$1=="50%" {print $2}')"
p99="$(echo "$out" | awk '$1=="99%" {print $2}')"
mkdir -p bench/results
python3 - "$without" "$with" "$rps" "$p50" "$p99" "$patched" "$binding" "$background" "$process" <<'PY' | tee "$result"
import json, sys
wo, w = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(json.dumps({
    "pod_create_without_webhook": wo, "pod_create_with_webhook": w,
    "pod_create_p50_ratio": round(w["p50_ms"] / wo["p50_ms"], 3),
    "webhook_requests_per_second": float(sys.argv[3]), "webhook_p50": sys.argv[4], "webhook_p99": sys.argv[5],
    "pods_injected": int(sys.argv[6]), "background_pods": int(sys.argv[8]), "process": sys.argv[9],
    "create_and_bind_by_registration": json.loads(sys.argv[7]),
}, indent=2))
PY
