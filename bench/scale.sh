#!/usr/bin/env bash
# The scale report: the core benchmarks (criterion), then for each size a local control
# plane of its own with N pods, armor-refresh refreshing them against the two baselines
# users run today (e2e/src/scale.rs), and docs/benchmarks.md with its chart written from
# the results (bench/report.py). About 30 minutes for the default sizes on 2 cores.
#
# Usage: bench/scale.sh [SIZE[:heavy]...]     default: 1000 5000 1000:heavy
#   N        pods Ready 2 s after scheduling (kwok), N pods
#   N:heavy  ready delays drawn per pod from a heavy-tailed mix (mean 1.9 s, p99 6 s; see
#            e2e/cluster.sh --ready-delay heavy)
# Each size runs our run with pacing Window, then Waves, then the two baselines.
# Results: bench/results/scale-N[-heavy].json (git-ignored), docs/benchmarks.md, docs/benchmarks.png
# The operator logs to ${TMPDIR:-/tmp}/armor-refresh-e2e-logs/scale-*.log; with
# ARMOR_REFRESH_OPERATOR_LOG=info,armor_refresh::controller=debug, one line per acting pass
# says where its time went (prepare, step, status write, Lease read, evictions, policies).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
sizes=("$@"); ((${#sizes[@]})) || sizes=(1000 5000 1000:heavy)
CACHE="${ARMOR_REFRESH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/armor-refresh}"
log() { echo "[bench] $*" >&2; }

log "building (release) and the tools"
source bench/tools.sh
venv="$CACHE/venv-matplotlib"
if [[ ! -x "$venv/bin/python" ]] || ! "$venv/bin/python" -c 'import matplotlib' 2>/dev/null; then
  log "installing matplotlib into $venv (for the chart)"
  python3 -m venv "$venv" && "$venv/bin/pip" install -q matplotlib
fi

mkdir -p bench/results
if [[ "${SKIP_CORE_BENCH:-}" != 1 ]]; then
  log "core benchmarks (criterion)"
  cargo bench -q --bench core -- --warm-up-time 1 --measurement-time 3 >bench/results/core.txt 2>&1 || {
    tail -20 bench/results/core.txt; exit 1; }
fi

for size in "${sizes[@]}"; do
  [[ "$size" =~ ^([0-9]+)(:heavy)?$ ]] || { echo "sizes are numbers of pods, optionally :heavy, not $size" >&2; exit 2; }
  n="${BASH_REMATCH[1]}" delay=2s name="$n"
  [[ -n "${BASH_REMATCH[2]}" ]] && { delay=heavy name="$n-heavy"; }
  export ARMOR_REFRESH_CLUSTER_DIR="${TMPDIR:-/tmp}/armor-refresh-scale-$name"
  nodes=$(( n / 80 + 10 ))
  log "size $size: a control plane with $nodes nodes, ready delay $delay"
  e2e/cluster.sh up --nodes "$nodes" --ready-delay "$delay" --terminate-delay 1s
  (
    eval "$(e2e/cluster.sh env)"
    target/release/scale --size "$n" --out "bench/results/scale-$name.json"
  ) || { e2e/cluster.sh down; exit 1; }
  e2e/cluster.sh down
done

log "writing docs/benchmarks.md and docs/benchmarks.png"
"$venv/bin/python" bench/report.py bench/results docs "${sizes[@]/:/-}"
