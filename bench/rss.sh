#!/usr/bin/env bash
# The operator's memory with N pods in the cluster and no run: for each size, a local
# control plane of its own with N pods, then the release operator started as the chart runs
# it, its caches synced, 15 s idle, and its RSS and peak RSS (VmRSS, VmHWM) read.
#
# Usage: bench/rss.sh [SIZE...]     default: 1000 5000 10000
# Results: bench/results/rss-N.json (git-ignored); one line per size on stderr.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
sizes=("$@"); ((${#sizes[@]})) || sizes=(1000 5000 10000)
log() { echo "[rss] $*" >&2; }

source bench/tools.sh
mkdir -p bench/results
for n in "${sizes[@]}"; do
  [[ "$n" =~ ^[0-9]+$ ]] || { echo "sizes are numbers of pods, not $n" >&2; exit 2; }
  export ARMOR_REFRESH_CLUSTER_DIR="${TMPDIR:-/tmp}/armor-refresh-rss-$n"
  e2e/cluster.sh up --nodes $(( n / 80 + 10 )) --ready-delay 2s --terminate-delay 1s
  (
    eval "$(e2e/cluster.sh env)"
    target/release/scale --size "$n" --rss-only --timeout-s 3600 --out "bench/results/rss-$n.json"
  ) || { e2e/cluster.sh down; exit 1; }
  e2e/cluster.sh down
  python3 - "bench/results/rss-$n.json" >&2 <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
print("[rss] %d pods: RSS %.1f MiB, peak %.1f MiB" % (d["pods"], d["operator_rss_mib"], d["operator_peak_rss_mib"]))
PY
done
