#!/usr/bin/env bash
# Runs the end-to-end suite on a fresh local control plane of its own, and stops it after.
# Usage: e2e/run-tests.sh [cargo test filters/args...]
# E2E_REAL_NODE=1 adds a real node and builds the operator's image (make e2e-node).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# A cluster of its own, so a demo cluster left running is not touched.
export ARMOR_REFRESH_CLUSTER_DIR="${ARMOR_REFRESH_E2E_CLUSTER_DIR:-${TMPDIR:-/tmp}/armor-refresh-e2e-$$}"
trap 'e2e/cluster.sh down || true' EXIT
# What a real node may change on this machine, to check that `down` put it all back.
host_state() {
  local k t
  for k in net.ipv4.ip_forward vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops \
    kernel.keys.root_maxkeys kernel.keys.root_maxbytes net.ipv4.conf.all.route_localnet \
    net.netfilter.nf_conntrack_max net.netfilter.nf_conntrack_tcp_timeout_established \
    net.netfilter.nf_conntrack_tcp_timeout_close_wait; do
    echo "$k=$(sysctl -n "$k" 2>/dev/null)"
  done
  for t in filter nat mangle raw; do iptables -t "$t" -S 2>/dev/null; ip6tables -t "$t" -S 2>/dev/null; done
  ip -o link show | awk -F': ' '{print "link " $2}' | sed 's/@.*//'
  ls -d /run/containerd /var/lib/cni /var/lib/kubelet /var/log/containers /var/log/pods /run/netns /etc/cni /opt/cni 2>/dev/null || true
  echo "mounts $(findmnt -rn -o TARGET | grep -c "^${TMPDIR:-/tmp}/armor-refresh-e2e-" || true)"
}
if [[ "${E2E_REAL_NODE:-}" == 1 ]]; then
  before="$(host_state)"
  trap 'rc=$?; e2e/cluster.sh down || true
    if ! diff <(echo "$before") <(host_state) >&2; then
      echo "[e2e] the real node left this machine changed (above: < before, > after)" >&2; exit 1
    fi
    exit $rc' EXIT
  # The operator's image and a real node to run it (make e2e-node): built before the
  # cluster starts, so its clock does not run while Go and cargo compile.
  e2e/node/build.sh >/dev/null
  ARMOR_REFRESH_IMAGE_TAR="$PWD/$(deploy/image/build.sh)"
  export ARMOR_REFRESH_IMAGE_TAR
  e2e/cluster.sh up --ready-delay "${E2E_READY_DELAY:-1s}" --real-node
  e2e/node/node.sh import "$ARMOR_REFRESH_CLUSTER_DIR" "$ARMOR_REFRESH_IMAGE_TAR"
else
  e2e/cluster.sh up --ready-delay "${E2E_READY_DELAY:-1s}"
fi
eval "$(e2e/cluster.sh env)"
# helm and luahealth check the chart and the Argo CD health scripts with their own engines.
ARMOR_REFRESH_TOOLS="$(e2e/tools/build.sh)"
export ARMOR_REFRESH_TOOLS
# The e2e tests run the operator as users do: the binary.
cargo build --bin armor-refresh
cargo test -p armor-refresh-e2e "$@"
