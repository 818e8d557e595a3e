//! The scale scenario: N pods in Deployments (each with a PDB) and a StatefulSet across ten
//! namespaces, refreshed by armor-refresh (running as the chart's ServiceAccount, so the API
//! server's audit log counts its requests), then the same pods restarted the two ways users
//! do today on the same cluster: KubeArmor's `annotateExisting` re-enacted (a rollout restart
//! of each workload, 5 s apart) and a plain `kubectl rollout restart` of everything at once.
//! Each is measured the same way: duration, the disruption curve from an independent pod
//! watch, and the API server's request counts and latency. Also: the operator's memory, and
//! pod-creation latency with the webhook against without it.
//!
//! `bench/scale.sh` runs it at 1,000 and 5,000 pods and writes docs/benchmarks.md; the e2e
//! suite runs it at a tiny size (e2e/tests/scale.rs).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::is_ready;
use armor_refresh::api::{ArmorRefreshRun, Phase};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Client, ResourceExt};
use serde::Serialize;
use serde_json::json;

use crate::fixtures::AGENT_NODE_LABEL;
use crate::process::{Process, free_port};
use crate::{Result, apply, chart, kubectl, wait_for};

const POD_LABEL: &str = "bench.armor.dev/pod";
const NS_LABEL: &str = "bench.armor.dev/ns";
const NAMESPACES: usize = 10;
const WEBHOOK_NS: &str = "bench-webhook";

#[derive(Debug, Clone)]
pub struct Config {
    /// Pods in Deployments (the StatefulSet adds `sts_replicas`).
    pub size: usize,
    pub per_deployment: usize,
    pub sts_replicas: usize,
    pub batch: u32,
    /// `batchSize` as the policy says it, when not the count `batch` (e.g. "10%").
    pub batch_size: Option<String>,
    /// Only our run: no pod-creation latency rounds, no baselines (the large-scale check).
    pub ours_only: bool,
    /// Only the operator's memory with the pods in the cluster and no run: started, caches
    /// synced, idle for a few seconds (the lean-cache measurement at 1k, 5k and 10k pods).
    pub rss_only: bool,
    /// The pause of the annotateExisting baseline between workloads (KubeArmor: 5 s).
    pub baseline_pause: Duration,
    /// Pods created per mode for the pod-creation latency, in rounds of 25 alternating modes.
    pub create_samples: usize,
    pub write_qps: u32,
    /// kwok's ready delay on this cluster (from e2e/cluster.sh's state).
    pub ready_delay: Duration,
    /// Upper bound for every wait.
    pub timeout: Duration,
}

impl Config {
    pub fn new(size: usize) -> Config {
        Config {
            size,
            per_deployment: 50,
            sts_replicas: 5,
            batch: 50,
            batch_size: None,
            ours_only: false,
            rss_only: false,
            baseline_pause: Duration::from_secs(5),
            create_samples: 200,
            write_qps: 200,
            ready_delay: cluster_ready_delay(),
            timeout: Duration::from_secs(1800),
        }
    }
}

/// kwok's ready-delay profile of the cluster e2e/cluster.sh started: fixed or heavy.
pub fn cluster_ready_profile() -> String {
    crate::cluster_dir()
        .ok()
        .and_then(|d| std::fs::read_to_string(d.join("ready-delay-profile")).ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| "fixed".into())
}

/// kwok's ready delay of the cluster e2e/cluster.sh started.
pub fn cluster_ready_delay() -> Duration {
    cluster_ms("ready-delay-ms").unwrap_or(Duration::from_secs(1))
}

/// How long a pod being deleted takes to go in the cluster e2e/cluster.sh started.
pub fn cluster_terminate_delay() -> Duration {
    cluster_ms("terminate-delay-ms").unwrap_or_default()
}

fn cluster_ms(file: &str) -> Option<Duration> {
    std::env::var("ARMOR_REFRESH_CLUSTER_DIR")
        .ok()
        .and_then(|d| std::fs::read_to_string(PathBuf::from(d).join(file)).ok())
        .and_then(|s| s.trim().parse().ok())
        .map(Duration::from_millis)
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct Scenario {
    pub name: String,
    pub duration_s: f64,
    pub peak_disrupted: u32,
    /// (seconds since start, pods disrupted), sampled every 100 ms.
    pub curve: Vec<(f64, u32)>,
    /// Write requests the tool itself sent.
    pub tool_writes: u64,
    /// Write requests the API server served from every client during the scenario.
    pub apiserver_writes: u64,
    pub apiserver_p50_ms: f64,
    pub apiserver_p99_ms: f64,
}

impl Scenario {
    /// A scenario from what was measured around it: its duration, the witness's curve and
    /// peak, the tool's writes and the API server's metrics before and after.
    fn measured(
        name: String,
        took: f64,
        (curve, peak): (Vec<(f64, u32)>, u32),
        writes: u64,
        before: &ApiMetrics,
        after: &ApiMetrics,
    ) -> Scenario {
        Scenario {
            name,
            duration_s: took,
            peak_disrupted: peak,
            curve,
            tool_writes: writes,
            apiserver_writes: (after.writes - before.writes) as u64,
            apiserver_p50_ms: quantile(&before.latency, &after.latency, 0.5),
            apiserver_p99_ms: quantile(&before.latency, &after.latency, 0.99),
        }
    }
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct Report {
    pub size: usize,
    pub pods: usize,
    pub batch: u32,
    /// The largest run status seen while polling (bytes of its JSON).
    pub largest_status_bytes: usize,
    pub ready_delay_s: f64,
    pub targets: u32,
    pub refreshed: u32,
    pub failed: u32,
    /// batches × ready delay (interval 0): the fastest the policy allows.
    pub minimum_s: f64,
    pub overhead_ratio: f64,
    /// Of our run: time with pods disrupted (the cluster replacing them: eviction, pod
    /// deletion, ReplicaSet, scheduler, kwok's ready delay) and time with none (the operator
    /// between batches: noticing Ready, writing the next batch ahead, evicting).
    pub busy_s: f64,
    pub idle_s: f64,
    pub batches_seen: u32,
    /// Where a slot's time went in our window run.
    pub cycle: CycleBreakdown,
    /// Our run, pacing Window (the default).
    pub ours: Scenario,
    /// The same pods again with pacing Waves (not with `--ours-only`).
    pub ours_waves: Scenario,
    pub annotate_existing: Scenario,
    pub restart_all: Scenario,
    pub writes_per_pod: f64,
    /// Run status writes per refreshed pod (window, waves).
    pub status_writes_per_pod: f64,
    pub waves_status_writes_per_pod: f64,
    /// kwok's ready delays: "fixed" or "heavy" (e2e/cluster.sh --ready-delay).
    pub ready_profile: String,
    /// How long a deleted pod took to go (kwok's stand-in for a kubelet stopping it).
    pub terminate_delay_s: f64,
    pub writes_by_kind: BTreeMap<String, u64>,
    pub reads_by_kind: BTreeMap<String, u64>,
    pub operator_peak_rss_mib: f64,
    pub operator_rss_mib: f64,
    pub rss_kib_per_pod: f64,
    pub create_without_p50_ms: f64,
    pub create_without_p99_ms: f64,
    pub create_with_p50_ms: f64,
    pub create_with_p99_ms: f64,
    pub create_ratio_p50: f64,
    /// The API server's own timing of its calls to the webhook.
    pub apiserver_webhook_p50_ms: f64,
    pub apiserver_webhook_p99_ms: f64,
    pub webhook_handler_p99_ms: f64,
}

/// Pods Ready and not terminating, by a watch of the bench pods.
struct Witness {
    store: reflector::Store<Pod>,
    task: tokio::task::JoinHandle<()>,
    /// Every pod's transitions as this watch saw them, for the slot-cycle breakdown.
    timeline: Arc<Mutex<Vec<Transition>>>,
}

/// A pod's step through a slot's cycle, timed by the witness's own clock (so the watch lag
/// is common to all the steps and cancels out of the gaps between them).
#[derive(Debug, Clone)]
struct Transition {
    at: Instant,
    /// The same moment by the wall clock, to line the timeline up with the operator's log.
    wall: f64,
    step: Step,
    /// The pod's controller (ReplicaSet or StatefulSet): replacements are matched to the
    /// evictions of the same controller, in order.
    owner: String,
    uid: String,
    name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Created,
    Bound,
    Ready,
    Deleting,
}

/// Where a slot's time goes, from the witness's timeline of one run: p50 and p90 in
/// milliseconds of each step of a slot's cycle. A replacement is matched to its
/// controller's evictions in order; the k-th replacement to turn Ready frees the slot the
/// (batch + k)-th eviction takes, so their gap is the operator's share.
#[derive(Debug, Clone, Serialize, Default)]
pub struct CycleBreakdown {
    pub evictions: usize,
    /// Eviction seen (deletionTimestamp) until the controller's replacement is seen.
    pub evicted_to_created_ms: [f64; 2],
    /// Replacement created until bound to a node (scheduler, binding webhook).
    pub created_to_bound_ms: [f64; 2],
    /// Bound until Ready (kwok's ready delay and its reaction).
    pub bound_to_ready_ms: [f64; 2],
    /// A replacement Ready until the eviction that refills its slot is seen (the operator:
    /// noticing, planning, the write ahead, the eviction call).
    pub ready_to_refill_ms: [f64; 2],
    /// One eviction until the next one in the same slot.
    pub slot_cycle_ms: [f64; 2],
}

/// The run's timeline as JSON lines beside the operator's log (wall clock, step, pod), to
/// read against the operator's own timings.
fn dump_timeline(timeline: &[Transition], from: Instant, pacing: &str) {
    let dir = crate::process::log_dir();
    let path = dir.join(format!("timeline-{pacing}.jsonl"));
    let lines: String = timeline
        .iter()
        .filter(|t| t.at >= from)
        .map(|t| {
            let row = json!({"wall": t.wall, "step": format!("{:?}", t.step), "owner": t.owner, "pod": t.name, "uid": t.uid});
            format!("{row}\n")
        })
        .collect();
    match std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, lines)) {
        Ok(()) => log(&format!("timeline: {}", path.display())),
        Err(e) => log(&format!("timeline not written ({}): {e}", path.display())),
    }
}

fn p50_p90(mut v: Vec<f64>) -> [f64; 2] {
    if v.is_empty() {
        return [0.0; 2];
    }
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    [at(0.5), at(0.9)]
}

fn breakdown(timeline: &[Transition], from: Instant, batch: usize) -> CycleBreakdown {
    let ms = |a: Instant, b: Instant| b.saturating_duration_since(a).as_secs_f64() * 1e3;
    let mut t: Vec<&Transition> = timeline.iter().filter(|t| t.at >= from).collect();
    t.sort_by_key(|t| t.at);
    let of = |step| t.iter().filter(move |t| t.step == step).copied();
    let evictions: Vec<&Transition> = of(Step::Deleting).collect();
    let created: std::collections::HashMap<&str, Instant> =
        of(Step::Created).map(|t| (t.uid.as_str(), t.at)).collect();
    let bound: std::collections::HashMap<&str, Instant> =
        of(Step::Bound).map(|t| (t.uid.as_str(), t.at)).collect();
    let mut by_owner: BTreeMap<&str, (Vec<Instant>, Vec<Instant>)> = BTreeMap::new();
    for e in &evictions {
        by_owner.entry(&e.owner).or_default().0.push(e.at);
    }
    for c in of(Step::Created) {
        by_owner.entry(&c.owner).or_default().1.push(c.at);
    }
    let evicted_to_created = by_owner
        .values()
        .flat_map(|(e, c)| e.iter().zip(c).map(|(e, c)| ms(*e, *c)))
        .collect();
    let created_to_bound = bound
        .iter()
        .filter_map(|(uid, b)| created.get(uid).map(|c| ms(*c, *b)))
        .collect();
    let readies: Vec<Instant> = of(Step::Ready)
        .filter(|r| created.contains_key(r.uid.as_str()))
        .map(|r| r.at)
        .collect();
    let bound_to_ready = of(Step::Ready)
        .filter_map(|r| bound.get(r.uid.as_str()).map(|b| ms(*b, r.at)))
        .collect();
    let ready_to_refill = readies
        .iter()
        .zip(evictions.iter().skip(batch))
        .map(|(r, e)| ms(*r, e.at))
        .collect();
    let slot_cycle = evictions
        .iter()
        .zip(evictions.iter().skip(batch))
        .map(|(a, b)| ms(a.at, b.at))
        .collect();
    CycleBreakdown {
        evictions: evictions.len(),
        evicted_to_created_ms: p50_p90(evicted_to_created),
        created_to_bound_ms: p50_p90(created_to_bound),
        bound_to_ready_ms: p50_p90(bound_to_ready),
        ready_to_refill_ms: p50_p90(ready_to_refill),
        slot_cycle_ms: p50_p90(slot_cycle),
    }
}

/// What the witness last knew of one pod: the steps it has seen.
#[derive(Default)]
struct Seen {
    bound: bool,
    ready: bool,
    deleting: bool,
}

fn transitions(
    seen: &mut std::collections::HashMap<String, Seen>,
    p: &Pod,
    at: Instant,
) -> Vec<Transition> {
    let uid = p.metadata.uid.clone().unwrap_or_default();
    let owner = p
        .metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
        .map(|o| o.name.clone())
        .unwrap_or_default();
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let name = p.metadata.name.clone().unwrap_or_default();
    let mut out = Vec::new();
    let mut push = |step| {
        out.push(Transition {
            at,
            wall,
            step,
            owner: owner.clone(),
            uid: uid.clone(),
            name: name.clone(),
        })
    };
    let s = seen.entry(uid.clone()).or_insert_with(|| {
        push(Step::Created);
        Seen::default()
    });
    let bound = p.spec.as_ref().is_some_and(|s| s.node_name.is_some());
    let deleting = p.metadata.deletion_timestamp.is_some();
    let ready = !deleting && is_ready(p);
    if bound && !s.bound {
        s.bound = true;
        push(Step::Bound);
    }
    if ready && !s.ready {
        s.ready = true;
        push(Step::Ready);
    }
    if deleting && !s.deleting {
        s.deleting = true;
        push(Step::Deleting);
    }
    out
}

impl Witness {
    async fn start(c: &Client) -> Result<Witness> {
        let (store, writer) = reflector::store();
        let api: Api<Pod> = Api::all(c.clone());
        // A streaming list (WatchList, on in 1.34): the initial state arrives over the
        // watch, not as 40 pages that a busy API server serves slowly while it creates
        // 20,000 pods.
        let cfg = watcher::Config::default()
            .labels(POD_LABEL)
            .streaming_lists();
        let stream = watcher(api, cfg).default_backoff().reflect(writer);
        let timeline = Arc::new(Mutex::new(Vec::new()));
        let out = timeline.clone();
        let task = tokio::spawn(async move {
            futures::pin_mut!(stream);
            let mut seen = std::collections::HashMap::new();
            while let Some(e) = stream.next().await {
                let t = match e {
                    Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) => {
                        transitions(&mut seen, &p, Instant::now())
                    }
                    // A pod gone without an update showing it terminating (deleted while
                    // the watch was re-listing, or with no grace): its deletion still counts.
                    Ok(watcher::Event::Delete(mut p)) => {
                        p.metadata.deletion_timestamp.get_or_insert_with(|| {
                            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                                k8s_openapi::jiff::Timestamp::now(),
                            )
                        });
                        transitions(&mut seen, &p, Instant::now())
                    }
                    _ => continue,
                };
                out.lock().expect("not poisoned").extend(t);
            }
        });
        tokio::time::timeout(Duration::from_secs(300), store.wait_until_ready())
            .await
            .map_err(|_| "the pod witness did not sync in 300s")??;
        Ok(Witness {
            store,
            task,
            timeline,
        })
    }

    fn ready(&self) -> usize {
        ready_count(&self.store)
    }

    /// Samples `expected - ready` every 100 ms until the returned guard is finished.
    fn record(&self, expected: usize) -> Recording {
        let store = self.store.clone();
        let points = Arc::new(Mutex::new(Vec::new()));
        let out = points.clone();
        let start = Instant::now();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tick.tick().await;
                let d = expected.saturating_sub(ready_count(&store)) as u32;
                out.lock()
                    .expect("not poisoned")
                    .push((start.elapsed().as_secs_f64(), d));
            }
        });
        Recording { points, task }
    }
}

impl Drop for Witness {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Recording {
    points: Arc<Mutex<Vec<(f64, u32)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Recording {
    fn finish(self) -> (Vec<(f64, u32)>, u32) {
        self.task.abort();
        let pts = self.points.lock().expect("not poisoned").clone();
        let peak = pts.iter().map(|p| p.1).max().unwrap_or(0);
        (pts, peak)
    }
}

/// Pods Ready and not terminating: the ones not disrupted.
fn ready_count(store: &reflector::Store<Pod>) -> usize {
    store
        .state()
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none() && is_ready(p))
        .count()
}

/// The API server's request counters and latency histogram, from its /metrics.
#[derive(Debug, Clone, Default)]
struct ApiMetrics {
    writes: f64,
    /// le → cumulative count, requests other than WATCH and CONNECT.
    latency: BTreeMap<u64, f64>,
    /// le → cumulative count of admission webhook calls.
    webhook: BTreeMap<u64, f64>,
}

fn label<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let start = line.find(&format!("{name}=\""))? + name.len() + 2;
    let end = line[start..].find('"')? + start;
    Some(&line[start..end])
}

/// `le` in microseconds (+Inf as u64::MAX), so buckets sort numerically.
fn le_us(line: &str) -> Option<u64> {
    let le = label(line, "le")?;
    if le == "+Inf" {
        return Some(u64::MAX);
    }
    le.parse::<f64>().ok().map(|s| (s * 1e6).round() as u64)
}

async fn api_metrics() -> Result<ApiMetrics> {
    let (ok, text, err) = kubectl(&["get", "--raw", "/metrics"], None).await?;
    if !ok {
        return Err(format!("API server metrics: {err}").into());
    }
    let mut m = ApiMetrics::default();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some(value) = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) else {
            continue;
        };
        if line.starts_with("apiserver_request_total{") {
            if matches!(
                label(line, "verb"),
                Some("POST" | "PUT" | "PATCH" | "DELETE")
            ) {
                m.writes += value;
            }
        } else if line.starts_with("apiserver_request_duration_seconds_bucket{")
            && !matches!(label(line, "verb"), Some("WATCH" | "CONNECT"))
            && let Some(le) = le_us(line)
        {
            *m.latency.entry(le).or_default() += value;
        } else if line.starts_with("apiserver_admission_webhook_admission_duration_seconds_bucket{")
            && let Some(le) = le_us(line)
        {
            *m.webhook.entry(le).or_default() += value;
        }
    }
    Ok(m)
}

/// A quantile (ms, the bucket's upper bound) of the requests between two snapshots.
fn quantile(before: &BTreeMap<u64, f64>, after: &BTreeMap<u64, f64>, q: f64) -> f64 {
    let delta: Vec<(u64, f64)> = after
        .iter()
        .map(|(le, v)| (*le, v - before.get(le).copied().unwrap_or(0.0)))
        .collect();
    let total = delta.last().map_or(0.0, |d| d.1);
    if total <= 0.0 {
        return 0.0;
    }
    let want = q * total;
    let mut prev = 0u64;
    for (le, cum) in &delta {
        if *cum >= want {
            return if *le == u64::MAX {
                prev as f64 / 1e3
            } else {
                *le as f64 / 1e3
            };
        }
        prev = *le;
    }
    prev as f64 / 1e3
}

fn ns(i: usize) -> String {
    format!("bench-{i}")
}

fn workloads_yaml(cfg: &Config) -> String {
    let mut y = String::new();
    for i in 0..NAMESPACES {
        y.push_str(&format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {}, labels: {{{NS_LABEL}: \"true\"}}}}\n---\n",
            ns(i)
        ));
    }
    y.push_str(&format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {WEBHOOK_NS}, labels: {{{NS_LABEL}: \"true\"}}}}\n---\n"
    ));
    for d in 0..cfg.size.div_ceil(cfg.per_deployment) {
        let n = ns(d % NAMESPACES);
        y.push_str(&format!(
            r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: app-{d}, namespace: {n}}}
spec:
  replicas: 0
  selector: {{matchLabels: {{app: app-{d}}}}}
  template:
    metadata: {{labels: {{app: app-{d}, {POD_LABEL}: "true"}}}}
    spec: {{nodeSelector: {{{AGENT_NODE_LABEL}: "true"}}, containers: [{{name: app, image: example/app:1}}, {{name: sidecar, image: example/sidecar:1}}]}}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {{name: app-{d}, namespace: {n}}}
spec: {{maxUnavailable: 10%, selector: {{matchLabels: {{app: app-{d}}}}}}}
---
"#
        ));
    }
    y.push_str(&format!(
        r#"apiVersion: apps/v1
kind: StatefulSet
metadata: {{name: db, namespace: {n}}}
spec:
  replicas: {r}
  serviceName: db
  selector: {{matchLabels: {{app: db}}}}
  template:
    metadata: {{labels: {{app: db, {POD_LABEL}: "true"}}}}
    spec: {{nodeSelector: {{{AGENT_NODE_LABEL}: "true"}}, containers: [{{name: db, image: example/db:1}}]}}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {{name: db, namespace: {n}}}
spec: {{maxUnavailable: 1, selector: {{matchLabels: {{app: db}}}}}}
"#,
        n = ns(0),
        r = cfg.sts_replicas
    ));
    y
}

/// Scales every Deployment of `workloads_yaml` (created empty) to its pods. Apart from
/// the apply: with 20,000 pods, applying workloads that already have pods competes with
/// the controllers creating them, and the apply timed out.
async fn scale_up(c: &Client, cfg: &Config) -> Result<()> {
    let patches = (0..cfg.size.div_ceil(cfg.per_deployment)).map(|d| {
        let replicas = cfg.per_deployment.min(cfg.size - d * cfg.per_deployment);
        let api: Api<Deployment> = Api::namespaced(c.clone(), &ns(d % NAMESPACES));
        async move {
            let patch = json!({"spec": {"replicas": replicas}});
            api.patch(
                &format!("app-{d}"),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
            .map(|_| ())
        }
    });
    let results: Vec<_> = futures::stream::iter(patches)
        .buffer_unordered(8)
        .collect()
        .await;
    results
        .into_iter()
        .collect::<std::result::Result<(), _>>()?;
    Ok(())
}

/// Pods per workload, to restart them the baselines' way: (namespace, kind, name).
fn workloads(cfg: &Config) -> Vec<(String, &'static str, String)> {
    let mut w: Vec<_> = (0..cfg.size.div_ceil(cfg.per_deployment))
        .map(|d| (ns(d % NAMESPACES), "Deployment", format!("app-{d}")))
        .collect();
    w.push((ns(0), "StatefulSet", "db".into()));
    w
}

async fn all_rolled_out(c: &Client) -> Result<bool> {
    let ls = ListParams::default();
    for d in Api::<Deployment>::all(c.clone()).list(&ls).await?.items {
        if !d.namespace().is_some_and(|n| n.starts_with("bench-")) {
            continue;
        }
        let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let st = d.status.clone().unwrap_or_default();
        let done = st.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0)
            && st.updated_replicas.unwrap_or(0) == want
            && st.ready_replicas.unwrap_or(0) == want
            && st.replicas.unwrap_or(0) == want;
        if !done {
            return Ok(false);
        }
    }
    for s in Api::<StatefulSet>::all(c.clone()).list(&ls).await?.items {
        if !s.namespace().is_some_and(|n| n.starts_with("bench-")) {
            continue;
        }
        let want = s.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let st = s.status.clone().unwrap_or_default();
        let done = st.observed_generation.unwrap_or(0) >= s.metadata.generation.unwrap_or(0)
            && st.update_revision == st.current_revision
            && st.ready_replicas.unwrap_or(0) == want
            && st.updated_replicas.unwrap_or(0) == want;
        if !done {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Waits until every workload is rolled out and every pod Ready (and no pod terminating).
async fn settle(c: &Client, w: &Witness, expected: usize, timeout: Duration) -> Result<()> {
    // A line a minute, so a slow settle at 20,000 pods shows where it stands.
    let last_log = Mutex::new(Instant::now());
    wait_for("the bench workloads to settle", timeout, || async {
        let pods = w.store.state();
        let alive = pods
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .count();
        if let Ok(mut at) = last_log.lock()
            && at.elapsed() >= Duration::from_secs(60)
        {
            *at = Instant::now();
            log(&format!(
                "settling: {alive} pods of {expected}, {} Ready",
                w.ready()
            ));
        }
        Ok((w.ready() == expected && alive == expected && all_rolled_out(c).await?).then_some(()))
    })
    .await
}

/// The operator's RSS now and at its peak, into the report.
fn record_rss(report: &mut Report, pid: u32, pods: usize) {
    let (rss, hwm) = rss_kib(pid);
    report.operator_rss_mib = rss as f64 / 1024.0;
    report.operator_peak_rss_mib = hwm as f64 / 1024.0;
    report.rss_kib_per_pod = hwm as f64 / pods as f64;
}

fn rss_kib(pid: u32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Creates `n` bare pods one after another; the create call's latency in ms.
async fn create_pods(c: &Client, n: usize, tag: &str) -> Result<Vec<f64>> {
    let api: Api<Pod> = Api::namespaced(c.clone(), WEBHOOK_NS);
    let mut out = vec![];
    for _ in 0..n {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"generateName": format!("latency-{tag}-"), "labels": {"app": "latency"}},
            "spec": {"containers": [{"name": "app", "image": "example/app:1"}, {"name": "side", "image": "example/side:1"}]}
        }))?;
        let t = Instant::now();
        api.create(&PostParams::default(), &pod).await?;
        out.push(t.elapsed().as_secs_f64() * 1e3);
    }
    Ok(out)
}

fn pct(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[((q * v.len() as f64) as usize).min(v.len() - 1)]
}

/// Sets whether the webhook configuration covers the latency namespace.
async fn webhook_covers_latency_ns(on: bool) -> Result<()> {
    let values = if on {
        r#"["kube-system"]"#
    } else {
        r#"["kube-system","bench-webhook"]"#
    };
    let (ok, _, err) = kubectl(
        &[
            "patch",
            "mutatingwebhookconfiguration",
            chart::RELEASE,
            "--type=json",
            "-p",
            &format!(r#"[{{"op":"replace","path":"/webhooks/0/namespaceSelector/matchExpressions/0/values","value":{values}}}]"#),
        ],
        None,
    )
    .await?;
    if !ok {
        return Err(err.into());
    }
    // The API server's webhook configuration informer takes a moment.
    tokio::time::sleep(Duration::from_secs(2)).await;
    Ok(())
}

fn log(msg: &str) {
    eprintln!("[scale {}] {msg}", chrono::Utc::now().format("%H:%M:%S"));
}

fn downsample(curve: Vec<(f64, u32)>, max: usize) -> Vec<(f64, u32)> {
    if curve.len() <= max {
        return curve;
    }
    // Keep each window's peak, so the reported curve never hides a spike.
    let step = curve.len().div_ceil(max);
    curve
        .chunks(step)
        .map(|c| {
            let peak = c.iter().map(|p| p.1).max().unwrap_or(0);
            (c[0].0, peak)
        })
        .collect()
}

/// The batch the policy's `batchSize` gives for `total` targets.
fn effective_batch(cfg: &Config, total: u32) -> u32 {
    let Some(b) = cfg.batch_size.as_deref() else {
        return cfg.batch;
    };
    match b.strip_suffix('%') {
        Some(pct) => {
            let pct: f64 = pct.parse().unwrap_or(100.0);
            (total as f64 * pct / 100.0).ceil() as u32
        }
        None => b.parse().unwrap_or(cfg.batch),
    }
}

/// Runs the whole scenario on the cluster KUBECONFIG names.
pub async fn run(c: &Client, cfg: &Config) -> Result<Report> {
    let expected = cfg.size + cfg.sts_replicas;
    let mut report = Report {
        size: cfg.size,
        pods: expected,
        batch: cfg.batch,
        ready_delay_s: cfg.ready_delay.as_secs_f64(),
        ready_profile: cluster_ready_profile(),
        terminate_delay_s: cluster_terminate_delay().as_secs_f64(),
        ..Report::default()
    };
    crate::install_crds(c).await?;
    crate::clean(c, chart::RELEASE).await?;
    let port = free_port();
    chart::install_rbac_and_webhook(port).await?;

    log(&format!("creating {expected} pods"));
    // In chunks: one kubectl apply of every workload of 20,000 pods outlasts its timeout
    // while the controllers already create the first pods.
    let yaml = workloads_yaml(cfg);
    let docs: Vec<&str> = yaml
        .split("---\n")
        .filter(|d| !d.trim().is_empty())
        .collect();
    for chunk in docs.chunks(50) {
        // Idempotent, so a chunk that timed out on a saturated API server is applied again.
        let yaml = chunk.join("---\n");
        let mut tries = 0;
        while let Err(e) = apply(&yaml).await {
            tries += 1;
            if tries == 5 {
                return Err(e);
            }
            log(&format!("applying workloads again ({e})"));
        }
    }
    scale_up(c, cfg).await?;
    let witness = Witness::start(c).await?;
    settle(c, &witness, expected, cfg.timeout).await?;

    // The operator as the chart runs it, with the chart's ServiceAccount.
    let kubeconfig = chart::service_account_kubeconfig().await?;
    let args: Vec<String> = [
        "run",
        "--identity",
        "bench-0",
        "--lease-namespace",
        chart::AUDITED_NS,
        "--lease-name",
        chart::RELEASE,
        "--self-signed",
        "--webhook-addr",
        &format!("127.0.0.1:{port}"),
        "--webhook-config",
        chart::RELEASE,
        "--write-qps",
        &cfg.write_qps.to_string(),
        "--write-burst",
        &(cfg.write_qps * 2).to_string(),
        "--log-format",
        "json",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let calls_before = chart::audited_calls()?.len();
    let mut op = Process::start_with_env(
        "scale",
        &args,
        &[("KUBECONFIG".into(), kubeconfig.display().to_string())],
    )
    .await?;
    let pid = op.child.id().unwrap_or(0);
    if cfg.rss_only {
        // Started means caches synced (/readyz); a few idle passes later the heap is steady.
        tokio::time::sleep(Duration::from_secs(15)).await;
        record_rss(&mut report, pid, expected);
        log(&format!(
            "operator with {expected} pods, idle: RSS {:.1} MiB, peak {:.1} MiB",
            report.operator_rss_mib, report.operator_peak_rss_mib
        ));
        let _ = op.terminate().await;
        crate::clean(c, chart::RELEASE).await?;
        return Ok(report);
    }

    let result = async {
        // Our run: the window, then (besides the large-scale check) the same pods by waves.
        let window = ours(c, cfg, &witness, expected, "bench", "Window", calls_before).await?;
        let status = &window.status;
        report.targets = status.progress.total;
        report.refreshed = status.progress.refreshed;
        report.failed = status.progress.failed;
        report.batch = effective_batch(cfg, status.progress.total);
        report.cycle = window.cycle.clone();
        report.largest_status_bytes = window.largest;
        let batches = (status.progress.total as f64 / report.batch.max(1) as f64).ceil();
        report.minimum_s = batches * cfg.ready_delay.as_secs_f64();
        report.overhead_ratio = window.scenario.duration_s / report.minimum_s.max(0.001);
        let (busy, idle, segments) = split_busy(&window.scenario.curve);
        report.busy_s = busy;
        report.idle_s = idle;
        report.batches_seen = segments;
        report.writes_by_kind = chart::writes_by_kind(&window.calls);
        for call in window.calls.iter().filter(|c| !c.is_write()) {
            *report.reads_by_kind.entry(call.key.clone()).or_default() += 1;
        }
        let writes: u64 = report.writes_by_kind.values().sum();
        report.writes_per_pod = writes as f64 / status.progress.refreshed.max(1) as f64;
        report.status_writes_per_pod =
            status_writes(&window.calls) as f64 / status.progress.refreshed.max(1) as f64;
        let took = window.scenario.duration_s;
        let peak = window.scenario.peak_disrupted;
        report.ours = window.scenario;
        record_rss(&mut report, pid, expected);
        log(&format!(
            "our run: {} refreshed in {took:.1}s (minimum {:.1}s), peak disrupted {peak}",
            report.refreshed, report.minimum_s
        ));

        if cfg.ours_only {
            return Result::<()>::Ok(());
        }
        // The same pods again, by waves: another policy (another profile name, so every
        // pod is a target again) with pacing Waves.
        let (ok, _, err) = kubectl(&["delete", "arr,arp", "bench", "--wait=true"], None).await?;
        if !ok {
            return Err(err.into());
        }
        settle(c, &witness, expected, cfg.timeout).await?;
        let calls_before = chart::audited_calls()?.len();
        let waves = ours(
            c,
            cfg,
            &witness,
            expected,
            "bench-waves",
            "Waves",
            calls_before,
        )
        .await?;
        report.waves_status_writes_per_pod =
            status_writes(&waves.calls) as f64 / waves.status.progress.refreshed.max(1) as f64;
        log(&format!(
            "waves: {} refreshed in {:.1}s, peak disrupted {}",
            waves.status.progress.refreshed,
            waves.scenario.duration_s,
            waves.scenario.peak_disrupted
        ));
        report.ours_waves = waves.scenario;
        // Pod creation with the webhook against without, alternating in rounds.
        settle(c, &witness, expected, cfg.timeout).await?;
        let wb = api_metrics().await?;
        let (mut with, mut without) = (vec![], vec![]);
        let round = 25.min(cfg.create_samples.max(1));
        for i in 0..cfg.create_samples.div_ceil(round) {
            webhook_covers_latency_ns(true).await?;
            let mut w = create_pods(c, round, "with").await?;
            webhook_covers_latency_ns(false).await?;
            let mut wo = create_pods(c, round, "without").await?;
            if i > 0 || cfg.create_samples <= round {
                with.append(&mut w);
                without.append(&mut wo);
            } // the first round warms connections up
        }
        let wa = api_metrics().await?;
        report.create_with_p50_ms = pct(&mut with, 0.5);
        report.create_with_p99_ms = pct(&mut with, 0.99);
        report.create_without_p50_ms = pct(&mut without, 0.5);
        report.create_without_p99_ms = pct(&mut without, 0.99);
        report.create_ratio_p50 =
            report.create_with_p50_ms / report.create_without_p50_ms.max(0.001);
        report.apiserver_webhook_p50_ms = quantile(&wb.webhook, &wa.webhook, 0.5);
        report.apiserver_webhook_p99_ms = quantile(&wb.webhook, &wa.webhook, 0.99);
        let metrics = op.metrics().await.unwrap_or_default();
        report.webhook_handler_p99_ms = handler_p99_ms(&metrics);
        let (_, hwm) = rss_kib(pid);
        report.operator_peak_rss_mib = report.operator_peak_rss_mib.max(hwm as f64 / 1024.0);
        log(&format!(
            "pod creation p50 {:.1} ms with the webhook, {:.1} ms without",
            report.create_with_p50_ms, report.create_without_p50_ms
        ));
        Result::<()>::Ok(())
    }
    .await;
    let _ = op.terminate().await;
    if let Err(e) = result {
        let log = op.log_text();
        let tail: Vec<&str> = log
            .lines()
            .rev()
            .take(30)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        return Err(format!("{e}\noperator log (tail):\n{}", tail.join("\n")).into());
    }
    if cfg.ours_only {
        crate::clean(c, chart::RELEASE).await?;
        return Ok(report);
    }
    // The baselines run without the operator (nothing of ours on the CPU).
    let (ok, _, err) = kubectl(
        &["delete", "pods", "-n", WEBHOOK_NS, "--all", "--wait=false"],
        None,
    )
    .await?;
    if !ok {
        return Err(err.into());
    }
    settle(c, &witness, expected, cfg.timeout).await?;
    report.annotate_existing = baseline(
        c,
        cfg,
        &witness,
        expected,
        "annotateExisting (5 s apart)",
        Some(cfg.baseline_pause),
    )
    .await?;
    settle(c, &witness, expected, cfg.timeout).await?;
    report.restart_all = baseline(
        c,
        cfg,
        &witness,
        expected,
        "rollout restart, all at once",
        None,
    )
    .await?;
    crate::clean(c, chart::RELEASE).await?;
    for d in &mut [
        &mut report.ours,
        &mut report.ours_waves,
        &mut report.annotate_existing,
        &mut report.restart_all,
    ] {
        d.curve = downsample(std::mem::take(&mut d.curve), 1500);
    }
    Ok(report)
}

/// One run of ours, measured.
struct Ours {
    cycle: CycleBreakdown,
    status: armor_refresh::api::ArmorRefreshRunStatus,
    scenario: Scenario,
    largest: usize,
    calls: Vec<chart::Call>,
}

/// Status writes of runs among `calls`.
fn status_writes(calls: &[chart::Call]) -> usize {
    calls
        .iter()
        .filter(|c| {
            c.is_write()
                && c.key
                    .starts_with("refresh.armor.dev/armorrefreshruns/status")
        })
        .count()
}

/// A policy `name` over the bench pods with `pacing` (its profile names carry `name`, so
/// every pod is a target of a new policy), and a run of it to its end.
async fn ours(
    c: &Client,
    cfg: &Config,
    witness: &Witness,
    expected: usize,
    name: &str,
    pacing: &str,
    calls_before: usize,
) -> Result<Ours> {
    apply(&format!(
        r#"apiVersion: refresh.armor.dev/v1alpha1
kind: ArmorRefreshPolicy
metadata: {{name: {name}}}
spec:
  selector:
    namespaceSelector: {{matchLabels: {{{NS_LABEL}: "true"}}}}
  profile: {{template: "localhost/{name}-{{namespace}}-{{owner}}-{{container}}"}}
  rollout: {{pacing: {pacing}, batchSize: "{batch}", interval: 0s, readyTimeout: 5m}}
  trigger: Manual
"#,
        batch = cfg.batch_size.clone().unwrap_or(cfg.batch.to_string())
    ))
    .await?;
    // The policy is accepted before the run starts, so the clock measures the refresh.
    wait_for(
        "the bench policy to be Ready",
        Duration::from_secs(30),
        || async {
            let (_, out, _) = kubectl(
                &[
                    "get",
                    "arp",
                    name,
                    "-o",
                    "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
                ],
                None,
            )
            .await?;
            Ok((out == "True").then_some(()))
        },
    )
    .await?;
    let before = api_metrics().await?;
    log(&format!("our run ({pacing}) starts"));
    let rec = witness.record(expected);
    let start = Instant::now();
    apply(&format!("apiVersion: refresh.armor.dev/v1alpha1\nkind: ArmorRefreshRun\nmetadata: {{name: {name}}}\nspec: {{policyRef: {{name: {name}}}}}\n")).await?;
    let runs: Api<ArmorRefreshRun> = Api::all(c.clone());
    let largest = std::sync::atomic::AtomicUsize::new(0);
    let status = wait_for("the bench run to complete", cfg.timeout, || {
        let runs = runs.clone();
        let largest = &largest;
        async move {
            let r = runs.get(name).await?;
            if let Some(s) = &r.status {
                let bytes = serde_json::to_vec(s).map_or(0, |b| b.len());
                largest.fetch_max(bytes, std::sync::atomic::Ordering::Relaxed);
            }
            Ok(r.status.filter(|s| s.phase.is_terminal()))
        }
    })
    .await?;
    let took = start.elapsed().as_secs_f64();
    let (curve, peak) = rec.finish();
    let after = api_metrics().await?;
    let calls = chart::audited_calls()?.split_off(calls_before);
    if status.phase != Phase::Completed {
        return Err(format!("the bench run ended {:?}: {}", status.phase, status.message).into());
    }
    let writes = calls.iter().filter(|c| c.is_write()).count() as u64;
    let name = format!(
        "armor-refresh, {pacing} of {}",
        cfg.batch_size.clone().unwrap_or(cfg.batch.to_string())
    );
    let scenario = Scenario::measured(name, took, (curve, peak), writes, &before, &after);
    let batch = effective_batch(cfg, status.progress.total) as usize;
    let timeline = witness.timeline.lock().expect("not poisoned").clone();
    let cycle = breakdown(&timeline, start, batch);
    log(&format!("slot cycle ({pacing}), p50/p90 ms: {cycle:?}"));
    dump_timeline(&timeline, start, pacing);
    Ok(Ours {
        cycle,
        status,
        scenario,
        largest: largest.load(std::sync::atomic::Ordering::Relaxed),
        calls,
    })
}

/// (time with pods disrupted, time with none, disrupted stretches) of a curve.
fn split_busy(curve: &[(f64, u32)]) -> (f64, f64, u32) {
    let (mut busy, mut idle, mut segments) = (0.0, 0.0, 0);
    for w in curve.windows(2) {
        let dt = w[1].0 - w[0].0;
        if w[0].1 > 0 {
            busy += dt;
        } else {
            idle += dt;
        }
        if w[0].1 == 0 && w[1].1 > 0 {
            segments += 1;
        }
    }
    if curve.first().is_some_and(|p| p.1 > 0) {
        segments += 1;
    }
    (busy, idle, segments)
}

/// The p99 of the operator's admission handler, from its histogram.
fn handler_p99_ms(metrics: &str) -> f64 {
    let mut buckets: BTreeMap<u64, f64> = BTreeMap::new();
    for line in metrics
        .lines()
        .filter(|l| l.starts_with("armor_refresh_admission_duration_seconds_bucket"))
    {
        if let (Some(le), Some(v)) = (
            le_us(line),
            line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()),
        ) {
            *buckets.entry(le).or_default() += v;
        }
    }
    quantile(&BTreeMap::new(), &buckets, 0.99)
}

/// Restarts every workload by patching its pod template, as KubeArmor's annotateExisting
/// (with a pause between workloads) or `kubectl rollout restart` of everything (no pause).
async fn baseline(
    c: &Client,
    cfg: &Config,
    witness: &Witness,
    expected: usize,
    name: &str,
    pause: Option<Duration>,
) -> Result<Scenario> {
    log(&format!("baseline: {name}"));
    let before = api_metrics().await?;
    let rec = witness.record(expected);
    let start = Instant::now();
    let stamp = chrono::Utc::now().to_rfc3339();
    let patch = json!({"spec": {"template": {"metadata": {"annotations": {"kubearmor.kubernetes.io/restartedAt": stamp}}}}});
    let mut writes = 0;
    let patches = workloads(cfg).into_iter().map(|(n, kind, w)| {
        let c = c.clone();
        let patch = patch.clone();
        async move {
            let pp = PatchParams::default();
            match kind {
                "Deployment" => Api::<Deployment>::namespaced(c, &n)
                    .patch(&w, &pp, &Patch::Merge(&patch))
                    .await
                    .map(|_| ()),
                _ => Api::<StatefulSet>::namespaced(c, &n)
                    .patch(&w, &pp, &Patch::Merge(&patch))
                    .await
                    .map(|_| ()),
            }
        }
    });
    match pause {
        Some(p) => {
            for f in patches {
                f.await?;
                writes += 1;
                tokio::time::sleep(p).await;
            }
        }
        None => {
            for r in futures::future::join_all(patches).await {
                r?;
                writes += 1;
            }
        }
    }
    // Rolled out: new pods everywhere, all Ready, the old ones gone.
    tokio::time::sleep(Duration::from_millis(500)).await;
    settle(c, witness, expected, cfg.timeout).await?;
    let took = start.elapsed().as_secs_f64();
    let (curve, peak) = rec.finish();
    let after = api_metrics().await?;
    log(&format!(
        "baseline {name}: {took:.1}s, peak disrupted {peak}"
    ));
    Ok(Scenario::measured(
        name.to_string(),
        took,
        (curve, peak),
        writes,
        &before,
        &after,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t0: Instant, ms: u64, step: Step, owner: &str, uid: &str) -> Transition {
        Transition {
            at: t0 + Duration::from_millis(ms),
            wall: 0.0,
            step,
            owner: owner.into(),
            uid: uid.into(),
            name: uid.into(),
        }
    }

    /// Two slots, two evictions each: every step's gap comes out of the timeline, and the
    /// refill pairs the k-th Ready replacement with the (batch + k)-th eviction.
    #[test]
    fn the_slot_cycle_is_broken_down_from_the_timeline() {
        let t0 = Instant::now();
        let a = "rs-a";
        let tl = vec![
            // Before the run: not counted.
            at(t0, 0, Step::Created, a, "old"),
            // Slot 1: evict p1 at 100, replacement r1 created 200, bound 250, Ready 2250;
            // the refill evicts p3 at 2550.
            at(t0, 100, Step::Deleting, a, "p1"),
            at(t0, 200, Step::Created, a, "r1"),
            at(t0, 250, Step::Bound, a, "r1"),
            at(t0, 2250, Step::Ready, a, "r1"),
            // Slot 2: evict p2 at 110 (another owner), r2 created 150, bound 190, Ready 2190.
            at(t0, 110, Step::Deleting, "rs-b", "p2"),
            at(t0, 150, Step::Created, "rs-b", "r2"),
            at(t0, 190, Step::Bound, "rs-b", "r2"),
            at(t0, 2190, Step::Ready, "rs-b", "r2"),
            // Refills: r2 (the first Ready) frees the slot of the third eviction, r1 the
            // fourth's.
            at(t0, 2490, Step::Deleting, "rs-b", "p4"),
            at(t0, 2550, Step::Deleting, a, "p3"),
        ];
        let c = breakdown(&tl, t0 + Duration::from_millis(50), 2);
        assert_eq!(c.evictions, 4);
        let close = |got: [f64; 2], want: [f64; 2]| {
            assert!(
                (got[0] - want[0]).abs() < 1.0 && (got[1] - want[1]).abs() < 1.0,
                "{got:?} != {want:?}"
            )
        };
        // Matched per owner, in order: p1 → r1 (100 ms), p2 → r2 (40 ms).
        close(c.evicted_to_created_ms, [100.0, 100.0]);
        close(c.created_to_bound_ms, [50.0, 50.0]);
        close(c.bound_to_ready_ms, [2000.0, 2000.0]);
        // r2 Ready 2190 → third eviction 2490 (300); r1 Ready 2250 → fourth 2550 (300).
        close(c.ready_to_refill_ms, [300.0, 300.0]);
        // 100 → 2490 and 110 → 2550.
        close(c.slot_cycle_ms, [2440.0, 2440.0]);
    }

    #[test]
    fn a_pod_seen_again_adds_only_its_new_steps() {
        let mut seen = std::collections::HashMap::new();
        let mut p: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "uid": "u", "ownerReferences": [
                {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "x", "controller": true}]},
            "spec": {"containers": []}
        }))
        .expect("a pod");
        let steps = |t: Vec<Transition>| t.into_iter().map(|t| t.step).collect::<Vec<_>>();
        assert_eq!(
            steps(transitions(&mut seen, &p, Instant::now())),
            [Step::Created]
        );
        p.spec.as_mut().expect("spec").node_name = Some("n".into());
        assert_eq!(
            steps(transitions(&mut seen, &p, Instant::now())),
            [Step::Bound]
        );
        assert!(transitions(&mut seen, &p, Instant::now()).is_empty());
        p.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::now(),
        ));
        let t = transitions(&mut seen, &p, Instant::now());
        assert_eq!(steps(t.clone()), [Step::Deleting]);
        assert_eq!(t[0].owner, "rs");
    }
}
