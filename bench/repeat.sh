#!/usr/bin/env bash
# The window's run time, repeated: COUNT runs of armor-refresh alone (pacing Window, no
# waves or baselines) at SIZE pods, each on a control plane of its own, with the fixed 2 s
# ready delay. The spread matters as much as the best run. Each result has the slot-cycle
# breakdown from the independent pod watch (where a slot's time goes: eviction, the
# ReplicaSet's replacement, scheduling, kwok's ready delay, the operator's refill).
# About 2 minutes per run at 1,000 pods and 10 at 5,000, on 2 cores.
#
# Usage: bench/repeat.sh SIZE [COUNT] [FIRST]   COUNT runs (default 3), numbered from FIRST
#        (default 1: resuming a series adds runs without overwriting the first ones)
# Results: bench/results/repeat-SIZE-I.json (git-ignored); bench/report.py puts them in
# docs/benchmarks.md; beside each, the operator's log (repeat-SIZE-I.operator.log) and the
# watch's timeline (repeat-SIZE-I.timeline.jsonl).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
n="${1:?usage: bench/repeat.sh SIZE [COUNT] [FIRST]}"; count="${2:-3}"; first="${3:-1}"
[[ "$n" =~ ^[0-9]+$ && "$count" =~ ^[0-9]+$ && "$first" =~ ^[0-9]+$ ]] || { echo "SIZE, COUNT and FIRST are numbers" >&2; exit 2; }
log() { echo "[bench] $*" >&2; }

log "building (release) and the tools"
source bench/tools.sh
export ARMOR_REFRESH_OPERATOR_LOG="${ARMOR_REFRESH_OPERATOR_LOG:-info,armor_refresh::controller=debug}"
export ARMOR_REFRESH_CLUSTER_DIR="${TMPDIR:-/tmp}/armor-refresh-repeat-$n"
mkdir -p bench/results
logs="${TMPDIR:-/tmp}/armor-refresh-e2e-logs"
# A run that fails or is stopped leaves no control plane behind.
trap 'e2e/cluster.sh down >/dev/null 2>&1 || true' EXIT
nodes=$(( n / 80 + 10 ))
for i in $(seq "$first" $((first + count - 1))); do
  log "size $n, run $i: a control plane with $nodes nodes"
  # The run writes its own; an older one must not pass for it.
  rm -f "$logs/timeline-Window.jsonl"
  e2e/cluster.sh up --nodes "$nodes" --ready-delay 2s --terminate-delay 1s
  env_lines="$(e2e/cluster.sh env)"
  (
    eval "$env_lines"
    target/release/scale --size "$n" --ours-only --out "bench/results/repeat-$n-$i.json"
  )
  e2e/cluster.sh down
  # Kept beside the result, for reading the run again (the next run overwrites them).
  cp "$logs/timeline-Window.jsonl" "bench/results/repeat-$n-$i.timeline.jsonl"
  cp "$(ls -t "$logs"/scale-*.log | head -1)" "bench/results/repeat-$n-$i.operator.log"
done
