#!/usr/bin/env bash
# Runs the end-to-end suite on a fresh local control plane of its own, and stops it after.
# Usage: e2e/run-tests.sh [cargo test filters/args...]
# E2E_REAL_NODE=1 adds a real node and builds the operator's image (make e2e-node).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# A cluster of its own, so a demo cluster left running is not touched.
export ARMOR_REFRESH_CLUSTER_DIR="${ARMOR_REFRESH_E2E_CLUSTER_DIR:-${TMPDIR:-/tmp}/armor-refresh-e2e-$$}"
trap 'e2e/cluster.sh down || true' EXIT
if [[ "${E2E_REAL_NODE:-}" == 1 ]]; then
  # What a real node may change on this machine: `down` must put it all back.
  before="$(e2e/node/node.sh host-state)"
  trap 'rc=$?; e2e/cluster.sh down || true
    if ! diff <(echo "$before") <(e2e/node/node.sh host-state) >&2; then
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
