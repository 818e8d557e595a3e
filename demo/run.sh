#!/usr/bin/env bash
# The main job, on an embedded default: a local control plane with a realistic mix of
# workloads whose pods run without AppArmor profiles, then armor-refresh (operator and
# webhook) refreshing them with the default policy, live, and a summary.
# Usage: demo/run.sh [--keep] [--helm]
#   --keep   leaves the cluster up; stop it with e2e/cluster.sh down
#   --helm   runs the operator as users do: its image (make image) on a real node beside the
#            kwok nodes, installed with `helm install` (needs root; the node is built from Go
#            modules the first time, ~15 minutes)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
keep=false helm=false
for a in "$@"; do
  case "$a" in
    --keep) keep=true ;;
    --helm) helm=true ;;
    *) echo "usage: demo/run.sh [--keep] [--helm]" >&2; exit 2 ;;
  esac
done
export ARMOR_REFRESH_CLUSTER_DIR="${ARMOR_REFRESH_CLUSTER_DIR:-${TMPDIR:-/tmp}/armor-refresh-demo}"
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

step "building armor-refresh"
cargo build -q --bin armor-refresh
AR="$PWD/target/debug/armor-refresh"
step "building the control plane from Go modules (first time: ~10 minutes; cached after)"
e2e/cluster/build.sh >/dev/null
if $helm; then
  step "building a real node (containerd, runc, CNI, kubelet, kube-proxy) and the operator's image"
  e2e/node/build.sh >/dev/null
  image="$(deploy/image/build.sh)"
  HELM="$(e2e/tools/build.sh)/helm"
fi
step "starting the local control plane (etcd, kube-apiserver, controller manager, scheduler, kwok)"
op_pid=""
cleanup() {
  [[ -n "$op_pid" ]] && kill "$op_pid" 2>/dev/null && wait "$op_pid" 2>/dev/null || true
  $keep || e2e/cluster.sh down
}
trap cleanup EXIT
if $helm; then
  e2e/cluster.sh up --nodes 12 --ready-delay 1s --real-node
  e2e/node/node.sh import "$ARMOR_REFRESH_CLUSTER_DIR" "$image" >/dev/null
else
  e2e/cluster.sh up --nodes 12 --ready-delay 1s
fi
eval "$(e2e/cluster.sh env)"

if $helm; then
  step "helm install armor-refresh: two replicas on the real node, CRDs from the chart"
  start=$SECONDS
  # The demo's policy comes below; the node is tainted, so the operator tolerates it.
  "$HELM" install armor-refresh charts/armor-refresh -n armor-refresh --create-namespace \
    --set defaultPolicy.enabled=false --set image.pullPolicy=Never \
    --set-string 'nodeSelector.armor\.dev/real-node=true' \
    --set 'tolerations[0].key=armor.dev/real-node,tolerations[0].operator=Exists,tolerations[0].effect=NoSchedule' \
    --wait --timeout 5m >/dev/null
  echo "  Ready in $((SECONDS - start))s:"
  kubectl -n armor-refresh get pods -o wide | sed 's/^/  /'
fi
step "creating workloads (their pods carry no AppArmor profile yet)"
if ! $helm; then
  $AR crd | kubectl apply -f - >/dev/null
  kubectl wait --for=condition=Established crd/armorrefreshpolicies.refresh.armor.dev crd/armorrefreshruns.refresh.armor.dev --timeout=30s >/dev/null
fi
kubectl apply -f demo/workloads.yaml >/dev/null
deadline=$((SECONDS + 180))
# 270 pods (12 of them the DaemonSet's, one per node): wait until they exist, then until
# they are Ready (both bounded).
until [[ "$(kubectl get pods -A --no-headers 2>/dev/null | wc -l)" -ge 270 ]]; do
  ((SECONDS < deadline)) || { echo "pods were not created within 180s:"; kubectl get pods -A | tail; exit 1; }
  sleep 1
done
kubectl wait --for=condition=Ready pods --all -A --timeout=180s >/dev/null
kubectl get pods -A --no-headers | awk '{print $1}' | sort | uniq -c | sed 's/^/  pods in namespace/'

BATCH=20
# The demo takes bigger batches and shorter pauses than examples/policy-default.yaml so that
# it finishes in about a minute; PDBs (web: 10% unavailable, checkout: 90% available) hold.
policy="$(mktemp)"
sed -e 's/interval: 30s/interval: 2s/' -e "s/batchSize: 5/batchSize: $BATCH/" examples/policy-default.yaml >"$policy"
step "planning the default policy against the live cluster (armor-refresh plan --live: nothing is evicted)"
$AR plan --live --policy "$policy" --batch-duration 2s | head -8

if ! $helm; then
step "starting armor-refresh: the operator, and its webhook called by the API server over TLS"
wport="$(free_port)"; mport="$(free_port)"
log="${TMPDIR:-/tmp}/armor-refresh-demo-operator.log"
$AR run --self-signed --webhook-addr "127.0.0.1:$wport" --webhook-config armor-refresh-demo \
  --webhook-url "https://127.0.0.1:$wport/mutate" --metrics-addr "127.0.0.1:$mport" --lease-namespace default >"$log" 2>&1 &
op_pid=$!
deadline=$((SECONDS + 60))
until curl -sf "http://127.0.0.1:$mport/readyz" >/dev/null 2>&1; do
  ((SECONDS < deadline)) || { echo "the operator did not become ready; its log:"; tail -20 "$log"; exit 1; }
  kill -0 "$op_pid" 2>/dev/null || { echo "the operator exited; its log:"; tail -20 "$log"; exit 1; }
  sleep 0.5
done
echo "  operator ready (metrics on 127.0.0.1:$mport, log in $log)"
fi

step "applying the default policy (batches of $BATCH, 2s apart) and a run"
kubectl apply -f "$policy"; rm -f "$policy"
kubectl apply -f examples/run.yaml
start=$SECONDS
namespaces="shop payments search data monitoring"
expected="$(kubectl get pods -A --no-headers | awk -v ns="$namespaces" 'BEGIN{split(ns,a," ");for(i in a)m[a[i]]=1} ($1 in m)' | wc -l)"
# An independent witness beside the operator's own view: pods not Ready, sampled each second.
witness="$(mktemp)"; echo 0 >"$witness"
(
  max=0
  while [[ -f "$witness" ]]; do
    ready="$(kubectl get pods -A --no-headers 2>/dev/null | awk -v ns="$namespaces" 'BEGIN{split(ns,a," ");for(i in a)m[a[i]]=1} ($1 in m) {split($3, r, "/"); if (r[1] == r[2] && $4 == "Running") n++} END{print n+0}')"
    d=$((expected > ready ? expected - ready : 0))
    ((d > max)) && { max=$d; echo "$max" >"$witness"; }
    sleep 1
  done
) &
sampler=$!
step "following the run: armor-refresh watch default-first (kubectl armor watch, as a kubectl plugin)"
status=0
$AR watch default-first --timeout 600s || status=$?
kill "$sampler" 2>/dev/null; wait "$sampler" 2>/dev/null || true
max_disrupted="$(cat "$witness")"; rm -f "$witness"
((status == 0)) || { echo "the run did not complete"; kubectl describe arr default-first | tail -20; exit 1; }
took=$((SECONDS - start))

step "summary"
$AR get
refreshed="$(kubectl get arr default-first -o jsonpath='{.status.progress.refreshed}')"
failed="$(kubectl get arr default-first -o jsonpath='{.status.progress.failed}')"
skipped="$(kubectl get arr default-first -o jsonpath='{.status.plan.skipped}')"
unprofiled="$(kubectl get pods -A -o json | python3 -c '
import json,sys
ns={"shop","payments","search","data","monitoring"}
pods=[p for p in json.load(sys.stdin)["items"] if p["metadata"]["namespace"] in ns and p["metadata"].get("ownerReferences")]
print(sum(1 for p in pods if not any(k.startswith("container.apparmor.security.beta.kubernetes.io/") for k in (p["metadata"].get("annotations") or {}))))')"
echo "  pods refreshed:                 $refreshed (failed: $failed), at most $BATCH at once"
echo "  max concurrently disrupted:     $max_disrupted (batch size $BATCH; PDBs: web 6, checkout 4, db 1)"
echo "  time taken:                     ${took}s"
echo "  skipped by reason:              $skipped"
echo "  controlled pods without profile: $unprofiled"
kubectl describe arr default-first | sed -n '/^Events:/,$p' | head -8

step "next"
echo "  the plan as JSON:  $AR plan --policy examples/policy-default.yaml --snapshot FILE -o json"
echo "  pause / resume:    $AR pause RUN; $AR resume RUN; after a breaker trip: $AR reset-breaker RUN"
echo "  as kubectl plugin: ln -s $AR ~/.local/bin/kubectl-armor; kubectl armor get"
echo "  completions:       source <($AR completion bash)"
echo "  explore the API:   kubectl explain armorrefreshpolicy.spec.rollout"
if $keep; then echo "  the cluster is still up: eval \"\$(ARMOR_REFRESH_CLUSTER_DIR=$ARMOR_REFRESH_CLUSTER_DIR e2e/cluster.sh env)\"; stop it with ARMOR_REFRESH_CLUSTER_DIR=$ARMOR_REFRESH_CLUSTER_DIR e2e/cluster.sh down"; fi
