#!/usr/bin/env bash
# The main job, on an embedded default: a local control plane with a realistic mix of
# workloads, and armor-refresh planning the default policy against it.
# Usage: demo/run.sh [--keep]    (--keep leaves the cluster up; stop it with e2e/cluster.sh down)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
keep=false
[[ "${1:-}" == "--keep" ]] && keep=true
export ARMOR_REFRESH_CLUSTER_DIR="${ARMOR_REFRESH_CLUSTER_DIR:-${TMPDIR:-/tmp}/armor-refresh-demo}"
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "building armor-refresh"
cargo build -q --bin armor-refresh
AR=target/debug/armor-refresh
step "building the control plane from Go modules (first time: ~10 minutes; cached after)"
e2e/cluster/build.sh >/dev/null
step "starting the local control plane (etcd, kube-apiserver, controller manager, scheduler, kwok)"
$keep || trap 'e2e/cluster.sh down' EXIT
e2e/cluster.sh up --nodes 6 --ready-delay 1s
eval "$(e2e/cluster.sh env)"
step "installing the CRDs and creating workloads"
$AR crd | kubectl apply -f - >/dev/null
kubectl wait --for=condition=Established crd/armorrefreshpolicies.refresh.armor.dev crd/armorrefreshruns.refresh.armor.dev --timeout=30s >/dev/null
kubectl apply -f demo/workloads.yaml >/dev/null
kubectl apply -f examples/policy-default.yaml
deadline=$((SECONDS + 120))
# 34 pods: wait until they exist, then until they are Ready (both bounded).
until [[ "$(kubectl get pods -A --no-headers 2>/dev/null | wc -l)" -ge 34 ]]; do
  ((SECONDS < deadline)) || { echo "pods were not created within 120s:"; kubectl get pods -A; exit 1; }
  sleep 1
done
kubectl wait --for=condition=Ready pods --all -A --timeout=120s >/dev/null
kubectl get pods -A -o wide --no-headers | awk '{print $1}' | sort | uniq -c | sed 's/^/  pods in namespace/'
step "planning the default policy against the live cluster (nothing is evicted)"
snap="$(mktemp)"
kubectl get pods,nodes,namespaces,pdb,leases,statefulsets,replicasets,deployments -A -o yaml >"$snap"
$AR plan --policy examples/policy-default.yaml --snapshot "$snap"
rm -f "$snap"
step "next"
echo "  the same as JSON:     $AR plan --policy examples/policy-default.yaml --snapshot FILE -o json"
echo "  explore the API:      kubectl explain armorrefreshpolicy.spec.rollout"
if $keep; then echo "  the cluster is still up: eval \"\$(ARMOR_REFRESH_CLUSTER_DIR=$ARMOR_REFRESH_CLUSTER_DIR e2e/cluster.sh env)\"; stop it with ARMOR_REFRESH_CLUSTER_DIR=$ARMOR_REFRESH_CLUSTER_DIR e2e/cluster.sh down"; fi
