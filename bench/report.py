#!/usr/bin/env python3
"""Writes docs/benchmarks.md and docs/benchmarks.png from bench/results (scale-N.json from
e2e/src/scale.rs, criterion's estimates under target/criterion). Run by bench/scale.sh.

Usage: bench/report.py RESULTS_DIR DOCS_DIR SIZE...
"""
import datetime
import json
import os
import pathlib
import platform
import subprocess
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

results, docs, sizes = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), sys.argv[3:]
root = pathlib.Path(__file__).resolve().parent.parent
runs = {n: json.loads((results / f"scale-{n}.json").read_text()) for n in sizes}
fixed = {n: r for n, r in runs.items() if r.get("ready_profile", "fixed") == "fixed"}
heavy = {n: r for n, r in runs.items() if r.get("ready_profile") == "heavy"}
# The operator idle with N pods in the cluster (bench/rss.sh), when measured.
idle = sorted((json.loads(p.read_text()) for p in results.glob("rss-*.json")), key=lambda r: r["pods"])
def refill_split(prefix):
    """The refill of a repeated run split by the operator's log: Ready (seen by the watch) until the
    step sends the eviction, its wait for the workload's earlier evictions, and the Eviction API call.
    Pairs the k-th Ready with the (batch + k)-th eviction, as the cycle breakdown does."""
    log, tl = pathlib.Path(f"{prefix}.operator.log"), pathlib.Path(f"{prefix}.timeline.jsonl")
    if not (log.exists() and tl.exists()):
        return None
    rows = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    # Only evictions done: a refused or failed attempt frees no slot and would shift the pairing.
    ev = [r for r in rows if r.get("fields", {}).get("message") == "eviction" and "took_ms" in r["fields"]
          and r["fields"].get("result") == "ok"]
    if not ev:
        return None
    at = lambda r: datetime.datetime.fromisoformat(r["timestamp"].replace("Z", "+00:00")).timestamp()
    sent = sorted((at(r) - (r["fields"]["took_ms"] + r["fields"]["queued_ms"]) / 1e3, r["fields"]["queued_ms"], r["fields"]["took_ms"]) for r in ev)
    ready = sorted(x["wall"] for x in map(json.loads, tl.read_text().splitlines()) if x["step"] == "Ready")
    batch = json.loads(pathlib.Path(f"{prefix}.json").read_text())["batch"]
    def q(v):
        v = sorted(v)
        return (v[len(v) // 2], v[int((len(v) - 1) * 0.9)]) if v else (0, 0)
    return {"to_send": q([(s[0] - r) * 1e3 for r, s in zip(ready, sent[batch:])]),
            "queued": q([s[1] for s in sent]), "call": q([s[2] for s in sent])}


# The window alone, repeated on fresh control planes (bench/repeat.sh), by size.
repeats = {}
def repeat_index(p):
    """(SIZE, I) of bench/results/repeat-SIZE-I.json."""
    size, i = p.stem.split("-")[1:3]
    return int(size), int(i)


for p in sorted(results.glob("repeat-*-*.json"), key=repeat_index):
    r = json.loads(p.read_text())
    r["refill_split"] = refill_split(p.with_suffix(""))
    r["run"] = repeat_index(p)[1]
    repeats.setdefault(r["size"], []).append(r)
# Pod creation and binding with N pods in the cluster (bench/webhook.sh ... N).
hooks = sorted((json.loads(p.read_text()) for p in results.glob("webhook-*-*.json")),
               key=lambda r: (r.get("background_pods", 0), r.get("process") != "run"))
PROCESS = {"run": "operator and webhook in one process (as the chart runs them)", "webhook": "the webhook alone",
           "webhook-cache": "the webhook alone with --pod-cache"}
APPROACHES = (("ours", "tab:green"), ("ours_waves", "tab:blue"), ("annotate_existing", "tab:orange"), ("restart_all", "tab:red"))


def delays(r):
    if r.get("ready_profile") == "heavy":
        return "ready delays heavy-tailed (mean 1.9 s, p99 6 s)"
    return f'pods Ready {r["ready_delay_s"]:.0f} s after scheduling'



def terminate_text(runs):
    ts = sorted({r.get("terminate_delay_s", 0.0) for r in runs.values()})
    if ts == [0.0]:
        return "A deleted pod goes at once."
    return (f"A deleted pod takes {'/'.join(f'{t:g}' for t in ts)} s to go, as a kubelet stopping its containers: "
            "with none, a StatefulSet's pod is mostly recreated under its name before the disruption controller sees "
            "the old one terminating, and its PDB then counts the new pod as disrupted for two minutes "
            "(`buildDisruptedPodMap` in Kubernetes' `pkg/controller/disruption/disruption.go`); with it, that happens "
            "only while the controller is busy (see the notes below).")


def sh(*cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=root).stdout.strip()
    except Exception:
        return "?"


def cpu():
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def mem_gib():
    for line in open("/proc/meminfo"):
        if line.startswith("MemTotal"):
            return int(line.split()[1]) / 1024 / 1024
    return 0


def criterion(group, name, n):
    f = root / "target" / "criterion" / group / name / str(n) / "new" / "estimates.json"
    if not f.exists():
        return None
    return json.loads(f.read_text())["median"]["point_estimate"] / 1e6  # ms


def crit_single(path):
    f = root / "target" / "criterion" / path / "new" / "estimates.json"
    return json.loads(f.read_text())["median"]["point_estimate"] / 1e3 if f.exists() else None  # µs


def refresh_writes(r):
    """Writes per refreshed pod but the Events on evicted pods and their workloads."""
    n = sum(v for k, v in r["writes_by_kind"].items() if not k.startswith("events.k8s.io/"))
    return n / max(r["refreshed"], 1)


def ok(b):
    return "met" if b else "**missed**"


# The chart: disruption over time, ours against the baselines, one panel per size.
fig, axes = plt.subplots(1, len(sizes), figsize=(6.5 * len(sizes), 4.2), squeeze=False)
for ax, n in zip(axes[0], sizes):
    r = runs[n]
    for key, color in APPROACHES:
        s = r.get(key)
        if s and s["curve"]:
            t, d = zip(*s["curve"])
            ax.plot(t, d, label=f'{s["name"]} — {s["duration_s"]:.0f}s, peak {s["peak_disrupted"]}', color=color, lw=1.2)
    ax.axhline(r["batch"], color="tab:green", ls=":", lw=1, label=f'batch size {r["batch"]}')
    ax.set_title(f'{r["pods"]} pods, {delays(r)}', fontsize=10)
    ax.set_xlabel("seconds since start")
    ax.set_ylabel("pods disrupted (not Ready or terminating)")
    ax.legend(fontsize=8, loc="upper right")
    ax.grid(alpha=0.3)
fig.tight_layout()
docs.mkdir(parents=True, exist_ok=True)
fig.savefig(docs / "benchmarks.png", dpi=110)

small, large = (list(fixed.values()) or list(runs.values()))[0], (list(fixed.values()) or list(runs.values()))[-1]
plan100k = criterion("plan", "next_batch", 100000)
select100k = criterion("plan", "select", 100000)
planall100k = criterion("plan", "plan_all", 100000)
handler = crit_single("webhook_handle_pod_create")
waves_ok = [r for r in runs.values() if r.get("ours_waves", {}).get("duration_s")]
goal_rows = [
    ("Window run time against the policy's minimum (batch 50, interval 0, fixed ready delay 2 s)", "≤ 1.10×",
     "; ".join([f'{r["overhead_ratio"]:.2f}× at {r["pods"]} ({r["ours"]["duration_s"]:.1f} s against {r["minimum_s"]:.0f} s)' for r in fixed.values()]
               + [f'repeated at {rs[0]["pods"]}: ' + ", ".join(f'{r["overhead_ratio"]:.2f}×' for r in rs) for rs in repeats.values()]),
     all(r["overhead_ratio"] <= 1.10 for r in list(fixed.values()) + [r for rs in repeats.values() for r in rs])),
    ("Heavy-tailed ready delays: the window against the waves, same run", "≥ 2× faster",
     ", ".join(f'{r["ours_waves"]["duration_s"] / r["ours"]["duration_s"]:.2f}× at {r["pods"]} ({r["ours"]["duration_s"]:.1f} s against {r["ours_waves"]["duration_s"]:.1f} s)' for r in heavy.values() if r in waves_ok) or "not run",
     bool(heavy) and all(r in waves_ok and r["ours_waves"]["duration_s"] >= 2 * r["ours"]["duration_s"] for r in heavy.values())),
    ("Peak disruption ≤ batch size, always (independent witness; window and waves)", "≤ batch",
     ", ".join([f'{r["ours"]["peak_disrupted"]}/{r.get("ours_waves", {}).get("peak_disrupted", "-")} of {r["batch"]} at {n}' for n, r in runs.items()]
               + [f'repeated at {rs[0]["pods"]}: ' + ", ".join(str(r["ours"]["peak_disrupted"]) for r in rs) + f' of {rs[0]["batch"]}' for rs in repeats.values()]),
     all(max(r["ours"]["peak_disrupted"], r.get("ours_waves", {}).get("peak_disrupted", 0)) <= r["batch"]
         for r in list(runs.values()) + [r for rs in repeats.values() for r in rs])),
    ("API writes per refreshed pod, all included (window)", "≤ 1.5",
     ", ".join(f'{r["writes_per_pod"]:.2f} at {n} (without the Events on each evicted pod: {refresh_writes(r):.2f}; '
               f'status {r.get("status_writes_per_pod", 0):.2f}; waves {r.get("waves_status_writes_per_pod", 0):.2f})' for n, r in runs.items()),
     all(r["writes_per_pod"] <= 1.5 for r in runs.values())),
]
if idle:
    big = idle[-1]
    goal_rows.append((f"Operator RSS with {big['pods']} pods in the cluster, idle (`bench/rss.sh`)", "≤ 64 MiB",
                      ", ".join(f'{r["operator_rss_mib"]:.1f} (peak {r["operator_peak_rss_mib"]:.1f}) MiB at {r["pods"]}' for r in idle),
                      big["operator_peak_rss_mib"] <= 64))
goal_rows += [
    (f"Operator peak RSS during the runs, {large['pods']} pods", "≤ 64 MiB",
     f'{large["operator_peak_rss_mib"]:.1f} MiB', large["operator_peak_rss_mib"] <= 64),
    ("Webhook handler p99 (the operator's own histogram, in process)", "≤ 1 ms",
     f'≤ {large["webhook_handler_p99_ms"]:.2f} ms (bucket bound)' + (f"; criterion median {handler:.0f} µs" if handler else ""),
     large["webhook_handler_p99_ms"] <= 1.0),
    ("Pod-creation latency with the webhook against without (p50)", "≤ 1.15×",
     f'{large["create_ratio_p50"]:.2f}× ({large["create_with_p50_ms"]:.1f} ms against {large["create_without_p50_ms"]:.1f} ms)',
     large["create_ratio_p50"] <= 1.15),
]
for h in hooks:
    b = h["create_and_bind_by_registration"]
    goal_rows.append((f"Pod creation plus binding with the webhook against without, {h['background_pods']} pods in the cluster, "
                      f"{PROCESS.get(h.get('process'), h.get('process'))} (p50)", "≤ 1.3×",
                      f'{b["new"]["bound_p50_ratio"]:.2f}× ({b["new"]["bound_p50_ms"]:.1f} ms against {b["off"]["bound_p50_ms"]:.1f} ms; '
                      f'both operations for every pod, as before: {b["old"]["bound_p50_ratio"]:.2f}×)',
                      b["new"]["bound_p50_ratio"] <= 1.3))
if plan100k is not None:
    goal_rows.append(("Plan of 100,000 pods (the next batch from 100k ordered targets)", "≤ 200 ms",
                      f"{plan100k:.0f} ms (select 100k: {select100k:.0f} ms; the whole plan by simulation: {planall100k:.0f} ms)",
                      plan100k <= 200))

out = []
w = out.append
w("# Benchmarks")
w("")
w(f"Generated by `bench/scale.sh {' '.join(map(str, sizes))}` on {datetime.date.today().isoformat()} at commit "
  f"`{sh('git', 'rev-parse', '--short', 'HEAD')}`: {os.cpu_count()} cores ({cpu()}), {mem_gib():.0f} GiB, "
  "the local control plane of `e2e/cluster.sh` (etcd, kube-apiserver, controller manager and scheduler of "
  "Kubernetes 1.34.4, kwok) on the same machine as the operator and the measuring client. Figures from one run, but for the repeated ones; "
  "the cores are shared by everything, so expect a few percent of noise.")
w("")
w("![disruption over time](benchmarks.png)")
w("")
w("## Goals")
w("")
w("| goal | target | measured | |")
w("| --- | --- | --- | --- |")
for g, t, m, b in goal_rows:
    w(f"| {g} | {t} | {m} | {ok(b)} |")
w("")
w("## Refresh against the mass restarts it replaces")
w("")
w("Same cluster, same pods (Deployments of 50 with a PDB of `maxUnavailable: 10%` each, a 5-pod StatefulSet "
  "with a PDB, ten namespaces, three zones). *Disrupted* is measured by an independent watch of the pods: pods "
  "expected minus pods Ready and not terminating, every 100 ms. *annotateExisting* re-enacts KubeArmor's: a "
  "rollout restart of each workload (`kubearmor.kubernetes.io/restartedAt` on the pod template), 5 s apart. "
  "*rollout restart* patches every workload at once. Writes are requests with verb create, update, patch or delete.")
w("")
w("Sizes marked `-heavy` draw each pod's ready delay from a heavy-tailed mix (89% 1–2 s, 10% 3–6 s, 1% 10–20 s), "
  "as image pulls and warm-ups do; the others make every pod Ready 2 s after scheduling. "
  + terminate_text(runs) +
  " *Window* keeps up to "
  "`batchSize` pods disrupted, refilling a slot the moment its pod is back; *Waves* disrupts `batchSize` pods and "
  "waits for the last of them before the next wave.")
w("")
w("| pods | approach | duration | peak disrupted | writes by the tool | writes served by the API server (all clients) | API server latency p50 / p99 |")
w("| --- | --- | --- | --- | --- | --- | --- |")
for n, r in runs.items():
    for key, _ in APPROACHES:
        s = r.get(key)
        if not s or not s.get("name"):
            continue
        w(f'| {n} | {s["name"]} | {s["duration_s"]:.1f} s | {s["peak_disrupted"]} | {s["tool_writes"]} | '
          f'{s["apiserver_writes"]} | ≤ {s["apiserver_p50_ms"]:.0f} / ≤ {s["apiserver_p99_ms"]:.0f} ms |')
w("")
for n, r in runs.items():
    o, a, b = r["ours"], r["annotate_existing"], r["restart_all"]
    if r.get("ours_waves", {}).get("duration_s"):
        v = r["ours_waves"]
        w(f'At {n}, the window took {o["duration_s"]:.0f} s and the waves {v["duration_s"]:.0f} s '
          f'({v["duration_s"] / o["duration_s"]:.2f}× as long), each with at most {o["peak_disrupted"]} and '
          f'{v["peak_disrupted"]} pods disrupted.')
    w(f'At {r["pods"]} pods, armor-refresh took {o["duration_s"]:.0f} s with at most {o["peak_disrupted"]} pods '
      f'disrupted (its batch size: a knob, bounded always); annotateExisting took {a["duration_s"]:.0f} s '
      f'({a["duration_s"] / o["duration_s"]:.1f}× as long) with a peak of {a["peak_disrupted"]} set by each '
      f"Deployment's own rolling-update settings and the 5 s pause; the all-at-once restart took "
      f'{b["duration_s"]:.0f} s with {b["peak_disrupted"]} pods disrupted at once '
      f'({100 * b["peak_disrupted"] / r["pods"]:.0f}% of the pods).')
    w("")
w("Neither baseline consults PDBs (a rollout is not an eviction), zones, StatefulSet order or leaders, and "
  "both restart pods that already carry their profile; armor-refresh evicts only the pods that lack it. Its "
  "write count is dominated by one eviction per pod; the API server's total writes (all clients: the "
  "ReplicaSet controller's creates, the scheduler's bindings, kwok's status updates) are of the same order "
  "for all three, since every approach replaces every pod.")
w("")
w("## armor-refresh in detail")
w("")
w("| pods | targets | refreshed | failed | duration | minimum (batches × ready delay) | ratio | time with pods disrupted / with none | disrupted stretches |")
w("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for n, r in runs.items():
    w(f'| {r["pods"]} | {r["targets"]} | {r["refreshed"]} | {r["failed"]} | {r["ours"]["duration_s"]:.1f} s | '
      f'{r["minimum_s"]:.0f} s | {r["overhead_ratio"]:.2f} | {r["busy_s"]:.1f} s / {r["idle_s"]:.1f} s | {r["batches_seen"]} |')
w("")
cycled = [(f'{r["pods"]}', r) for r in runs.values() if r.get("ready_profile", "fixed") == "fixed"]
cycled += [(f'{r["pods"]}, repeat {r["run"]}', r) for rs in repeats.values() for r in rs]
cycled = [(k, r) for k, r in cycled if r.get("cycle", {}).get("evictions")]
if repeats:
    w("The window alone, repeated, each run on a control plane of its own (`bench/repeat.sh`, fixed ready delay 2 s):")
    w("")
    w("| pods | run | duration | minimum | ratio | peak disrupted | writes per pod (without the Events) | peak RSS |")
    w("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for n, rs in repeats.items():
        for r in rs:
            w(f'| {r["pods"]} | {r["run"]} | {r["ours"]["duration_s"]:.1f} s | {r["minimum_s"]:.0f} s | {r["overhead_ratio"]:.2f} | '
              f'{r["ours"]["peak_disrupted"]} of {r["batch"]} | {r["writes_per_pod"]:.2f} ({refresh_writes(r):.2f}) | {r["operator_peak_rss_mib"]:.1f} MiB |')
    w("")
if cycled:
    w("Where a slot's time goes, at the fixed ready delay: each step of a slot's cycle as the independent pod "
      "watch saw it, p50 / p90 in milliseconds. A replacement is matched to its controller's evictions in "
      "order; the k-th replacement to turn Ready frees the slot of the (batch + k)-th eviction, so their gap is "
      "the refill (the operator noticing, planning, writing the eviction ahead, and the Eviction API call, "
      "which the API server retries 500 ms later if the PDB's status changed between its read and its write). "
      "The pairing is by order, not by cause: a slot that idles shifts it. The minimum counts only the ready delay.")
    w("")
    w("| run | evicted → replacement created | created → bound | bound → Ready | Ready → refill's eviction | slot cycle |")
    w("| --- | --- | --- | --- | --- | --- |")
    for k, r in cycled:
        c = r["cycle"]
        f = lambda v: f"{v[0]:.0f} / {v[1]:.0f}"
        w(f'| {k} | {f(c["evicted_to_created_ms"])} | {f(c["created_to_bound_ms"])} | {f(c["bound_to_ready_ms"])} | '
          f'{f(c["ready_to_refill_ms"])} | {f(c["slot_cycle_ms"])} |')
    w("")
    split = [(f'{r["pods"]}, repeat {r["run"]}', r["refill_split"]) for rs in repeats.values() for r in rs if r.get("refill_split")]
    if split:
        w("The refill split by the operator's log (its eviction lines say how long each request waited for "
          "its workload's earlier evictions, and how long the call took), p50 / p90 in milliseconds:")
        w("")
        w("| run | Ready → the operator's step sends the eviction | waiting for the workload's turn | the request (the API server's eviction, and the operator's write limiter) |")
        w("| --- | --- | --- | --- |")
        for k, x in split:
            f = lambda v: f"{v[0]:.0f} / {v[1]:.0f}"
            w(f'| {k} | {f(x["to_send"])} | {f(x["queued"])} | {f(x["call"])} |')
        w("")
w("Requests of the operator, from the API server's audit log (it runs as the Helm chart's ServiceAccount):")
w("")
w("| pods | writes per refreshed pod | writes by kind | reads (lists and watches) |")
w("| --- | --- | --- | --- |")
for n, r in runs.items():
    kinds = ", ".join(f"{k}: {v}" for k, v in sorted(r["writes_by_kind"].items(), key=lambda kv: -kv[1]))
    reads = sum(r["reads_by_kind"].values())
    w(f'| {r["pods"]} | {r["writes_per_pod"]:.2f} | {kinds} | {reads} |')
w("")
if idle:
    w("The operator idle, its caches synced, with N pods in the cluster (`bench/rss.sh`: 15 s after it is "
      "ready, no run):")
    w("")
    w("| pods | operator RSS / peak |")
    w("| --- | --- |")
    for r in idle:
        w(f'| {r["pods"]} | {r["operator_rss_mib"]:.1f} / {r["operator_peak_rss_mib"]:.1f} MiB |')
    w("")
    w("During the runs above:")
    w("")
w("| pods | operator RSS now / peak | peak RSS per pod in the cluster |")
w("| --- | --- | --- |")
for n, r in runs.items():
    w(f'| {r["pods"]} | {r["operator_rss_mib"]:.1f} / {r["operator_peak_rss_mib"]:.1f} MiB | {r["rss_kib_per_pod"]:.1f} KiB |')
w("")
w("## Webhook")
w("")
w("Pods created one after another through the API server, alternating rounds of 25 with the webhook "
  "configuration covering their namespace and without (the first round of each is a warm-up).")
w("")
w("| pods in cluster | create p50 / p99 without | with | ratio p50 | the API server's webhook call p50 / p99 | handler p99 |")
w("| --- | --- | --- | --- | --- | --- |")
for n, r in runs.items():
    w(f'| {r["pods"]} | {r["create_without_p50_ms"]:.1f} / {r["create_without_p99_ms"]:.1f} ms | '
      f'{r["create_with_p50_ms"]:.1f} / {r["create_with_p99_ms"]:.1f} ms | {r["create_ratio_p50"]:.2f} | '
      f'≤ {r["apiserver_webhook_p50_ms"]:.0f} / ≤ {r["apiserver_webhook_p99_ms"]:.0f} ms | ≤ {r["webhook_handler_p99_ms"]:.2f} ms |')
w("")
if hooks:
    w("Pod creation and binding with pods already in the cluster (`bench/webhook.sh 10 200 N PROCESS`): pods "
      "created one after another, each timed from the create call until a watch sees it bound, in alternating "
      "rounds under the registration the operator makes (bindings, and creations of pods already bound, through "
      "a CEL matchCondition), the former one (both operations for every pod) and none. The webhook alone reads "
      "each bound pod from the API server; run with the operator, it takes it from the operator's pod cache.")
    w("")
    w("| pods in cluster | process | registration | create p50 / p99 | created to bound p50 / p99 | ratio (bound p50) |")
    w("| --- | --- | --- | --- | --- | --- |")
    for h in hooks:
        b = h["create_and_bind_by_registration"]
        for m, label in (("new", "the operator's"), ("old", "both operations"), ("off", "none")):
            x = b[m]
            ratio = f'{x["bound_p50_ratio"]:.2f}' if "bound_p50_ratio" in x else "1"
            w(f'| {h["background_pods"]} | {h.get("process", "webhook")} | {label} | {x["create_p50_ms"]} / {x["create_p99_ms"]} ms | '
              f'{x["bound_p50_ms"]} / {x["bound_p99_ms"]} ms | {ratio} |')
    w("")
w("## The pure core (criterion, median)")
w("")
rows = []
for n in (1000, 10000, 100000):
    vals = [criterion("plan", k, n) for k in ("select", "next_batch", "plan_all")]
    if all(v is not None for v in vals):
        rows.append(f"| {n:,} | {vals[0]:.1f} ms | {vals[1]:.1f} ms | {vals[2]:.1f} ms |")
if rows:
    w("| pods | select | next batch | whole plan |")
    w("| --- | --- | --- | --- |")
    for r in rows:
        w(r)
else:
    w("Not run with this report (`SKIP_CORE_BENCH=1`); `cargo bench --bench core` runs it.")
if handler:
    w("")
    w(f"One admission review through the handler: {handler:.0f} µs. One compliance check: "
      f"{crit_single('compliance_check_one_pod') or 0:.1f} µs.")
w("")
w("## Notes on the goals missed")
w("")
notes = (docs / "benchmarks-notes.md")
if notes.exists():
    w(notes.read_text().strip())
else:
    w("(none recorded)")
w("")
w("## Reproduce")
w("")
w("```sh")
w(f"bench/scale.sh {' '.join(s.replace('-heavy', ':heavy') for s in sizes)}   # writes bench/results/ and this page")
for n in repeats:
    w(f"bench/repeat.sh {n} {len(repeats[n])}              # the window alone, repeated")
for h in hooks:
    w(f"bench/webhook.sh 10 200 {h['background_pods']} {h.get('process', 'webhook')}   # creation and binding with pods in the cluster")
w("```")
w("")
w("Each size gets a control plane of its own (`N/80 + 10` kwok nodes in three zones, pods Ready 2 s after "
  "scheduling, or the heavy-tailed mix; `--terminate-delay 1s`). The operator is the release build, run with `--write-qps 200 --write-burst 400` as the chart's "
  "ServiceAccount. The e2e suite runs the same scenario at 42 pods (`e2e/tests/scale.rs`).")
(docs / "benchmarks.md").write_text("\n".join(out) + "\n")
print(f"wrote {docs / 'benchmarks.md'} and {docs / 'benchmarks.png'}")
