//! Benchmarks of the pure core: planning at scale, compliance per pod, the admission handler.
//! Run with `cargo bench --bench core`; figures are reported in docs, never asserted.

use std::collections::BTreeMap;
use std::sync::Arc;

use armor_refresh::cluster::ClusterFacts;
use armor_refresh::compliance::{check, owner_of};
use armor_refresh::plan::{InFlight, Limits, next_batch, plan_all};
use armor_refresh::pod::LeanPod;
use armor_refresh::policy::validate;
use armor_refresh::select::select;
use armor_refresh::webhook::{Lookup, handle};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use serde_json::json;

/// A cluster of `n` pods: Deployments of 10 and StatefulSets of 3 across 20 namespaces,
/// 60 nodes in three zones, a PDB per Deployment.
fn cluster(n: usize) -> ClusterFacts {
    let mut f = ClusterFacts::default();
    for i in 0..60 {
        f.nodes.insert(
            format!("node-{i}"),
            [
                (
                    "topology.kubernetes.io/zone".to_string(),
                    format!("zone-{}", i % 3),
                ),
                ("kubearmor.io/enforcer".to_string(), "apparmor".to_string()),
            ]
            .into(),
        );
        // Every node runs a KubeArmor agent, so every pod is a candidate.
        f.agents.insert(format!("node-{i}"));
    }
    for i in 0..n {
        // A workload's pods share its namespace (owner references are namespaced).
        let (ns, kind, owner, name, labels) = if i % 13 < 3 {
            let set = i / 13;
            (
                format!("ns-{}", set % 20),
                "StatefulSet",
                format!("db-{set}"),
                format!("db-{set}-{}", i % 13),
                json!({"app": format!("db-{set}")}),
            )
        } else {
            let d = i / 10;
            (
                format!("ns-{}", d % 20),
                "ReplicaSet",
                format!("web-{d}-5d8f7c9b6d"),
                format!("web-{d}-5d8f7c9b6d-{i}"),
                json!({"app": format!("web-{d}"), "pod-template-hash": "5d8f7c9b6d"}),
            )
        };
        let pod: LeanPod = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": ns, "uid": format!("uid-{i}"), "labels": labels,
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": kind, "name": owner, "uid": "o", "controller": true}]},
            "spec": {"nodeName": format!("node-{}", i % 60), "containers": [{"name": "app"}, {"name": "sidecar"}]},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}
        }))
        .unwrap();
        f.pods.push(Arc::new(pod));
    }
    for d in 0..(n / 10) {
        let pdb = serde_json::from_value(json!({"metadata": {"name": format!("web-{d}"), "namespace": format!("ns-{}", d % 20)},
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app": format!("web-{d}")}}}, "status": {"disruptionsAllowed": 1}}))
        .unwrap();
        f.pdbs.push(Arc::new(pdb));
    }
    f
}

fn planning(c: &mut Criterion) {
    let policy = validate(
        "p",
        &serde_saphyr::from_str("rollout: {batchSize: 50, maxPerZone: 20}").unwrap(),
    )
    .unwrap();
    let mut g = c.benchmark_group("plan");
    g.sample_size(10);
    for n in [1_000usize, 10_000, 100_000] {
        let facts = cluster(n);
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::new("select", n), &facts, |b, f| {
            b.iter(|| select(&policy, f))
        });
        let sel = select(&policy, &facts);
        let limits = Limits::from_policy(&policy, sel.targets.len() as u32);
        let ctx = armor_refresh::run::context(&facts);
        // What the operator does per batch: order the targets, pick the next batch.
        g.bench_with_input(BenchmarkId::new("next_batch", n), &sel.targets, |b, t| {
            b.iter(|| {
                let idx = armor_refresh::plan::order_indices(t);
                let remaining: Vec<&_> = idx.iter().map(|&i| &t[i]).collect();
                next_batch(
                    &remaining,
                    &limits,
                    &InFlight::default(),
                    &ctx,
                    limits.batch,
                )
            })
        });
        // The whole plan by simulation (dry runs and the estimate).
        g.bench_with_input(BenchmarkId::new("plan_all", n), &sel.targets, |b, t| {
            b.iter(|| plan_all(t, &limits, &ctx))
        });
    }
    g.finish();
}

fn compliance(c: &mut Criterion) {
    let policy = validate("p", &serde_saphyr::from_str("{}").unwrap()).unwrap();
    let facts = cluster(100);
    let pod = facts.pods[5].clone();
    let owner = owner_of(&pod, Some(&facts));
    let labels = BTreeMap::new();
    c.bench_function("compliance/check_one_pod", |b| {
        b.iter(|| check(&policy, &pod, &owner, &labels))
    });
}

struct NoLookup;
impl Lookup for NoLookup {
    fn namespace_labels(&self, _: &str) -> BTreeMap<String, String> {
        BTreeMap::new()
    }
    fn node_labels(&self, _: &str) -> Option<BTreeMap<String, String>> {
        None
    }
    fn agent_on(&self, _: &str) -> bool {
        false
    }
    fn pod(&self, _: &str, _: &str) -> Option<LeanPod> {
        None
    }
}

/// A realistic AdmissionReview for a Deployment's pod.
pub fn review_body() -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "0b5d2c7e-1111-2222-3333-444455556666",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "shop", "operation": "CREATE", "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"generateName": "web-7d9f8b6c5d-", "labels": {"app": "web", "pod-template-hash": "7d9f8b6c5d"},
                             "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d9f8b6c5d", "uid": "u", "controller": true}]},
                "spec": {"initContainers": [{"name": "init", "image": "busybox"}],
                         "containers": [{"name": "app", "image": "nginx", "ports": [{"containerPort": 80}], "env": [{"name": "A", "value": "b"}]},
                                        {"name": "envoy", "image": "envoy"}]}}
        }
    }))
    .unwrap()
}

fn admission(c: &mut Criterion) {
    // Creation-time injection: the review below creates an unbound pod, which it patches.
    let policies = vec![
        validate(
            "p",
            &serde_saphyr::from_str("profile: {injectAt: Create}").unwrap(),
        )
        .unwrap(),
    ];
    let body = review_body();
    c.bench_function("webhook/handle_pod_create", |b| {
        b.iter(|| handle(&body, &policies, &NoLookup))
    });
}

criterion_group!(benches, planning, compliance, admission);
criterion_main!(benches);
