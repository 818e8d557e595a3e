//! What the core knows about the cluster: pods, nodes, namespaces, PDBs, Leases and the
//! owning workloads, as plain data. The controller fills it from its reflectors; `plan`
//! from a snapshot file (`kubectl get ... -o yaml`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Node};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::ResourceExt;
use kube::core::{Expression, Selector, SelectorExt};
use serde::de::DeserializeOwned;

use crate::pod::LeanPod;
use crate::policy::ValidPolicy;

pub type Labels = BTreeMap<String, String>;

/// The `(namespace, name)` key of the workload maps below.
pub fn object_key<K: ResourceExt>(o: &K) -> (String, String) {
    (o.namespace().unwrap_or_default(), o.name_any())
}

/// Everything the pure core reads about the cluster.
#[derive(Debug, Clone, Default)]
pub struct ClusterFacts {
    pub pods: Vec<Arc<LeanPod>>,
    /// Node name → labels.
    pub nodes: BTreeMap<String, Labels>,
    /// Namespace name → labels. Namespaces not listed get the label Kubernetes always sets
    /// (`kubernetes.io/metadata.name`).
    pub namespaces: BTreeMap<String, Labels>,
    pub pdbs: Vec<Arc<PodDisruptionBudget>>,
    pub leases: Vec<Arc<Lease>>,
    /// (namespace, name) → StatefulSet.
    pub statefulsets: BTreeMap<(String, String), Arc<StatefulSet>>,
    /// (namespace, name) → ReplicaSet, to resolve Deployments exactly.
    pub replicasets: BTreeMap<(String, String), Arc<ReplicaSet>>,
    /// (namespace, name) → Deployment.
    pub deployments: BTreeMap<(String, String), Arc<Deployment>>,
    /// (namespace, name) → DaemonSet.
    pub daemonsets: BTreeMap<(String, String), Arc<DaemonSet>>,
    /// Nodes where a KubeArmor agent runs (see [`ClusterFacts::find_agents`]).
    pub agents: BTreeSet<String>,
    /// Every valid policy: which one governs a pod is decided among all of them.
    pub policies: Vec<ValidPolicy>,
    /// Namespaces the webhook configuration skips: no pod there gets a profile.
    pub unhooked_namespaces: BTreeSet<String>,
    /// The API server's time when these facts were read, if known: a pod unready for less
    /// than its policy's `readyTimeout` is still starting (awaited), longer is broken (skipped).
    pub now: Option<chrono::DateTime<chrono::Utc>>,
}

/// What a KubeArmor agent pod looks like: KubeArmor's controller looks for
/// `kubearmor-app=kubearmor` on the node (`CheckKubearmorStatus`).
pub const DEFAULT_AGENT_SELECTOR: &str = "kubearmor-app=kubearmor";

/// Parses a label selector in its simplest text form: `key=value` and `key` (exists),
/// comma-separated.
pub fn parse_agent_selector(s: &str) -> Result<Selector, String> {
    let mut exprs = vec![];
    for part in s.split(',').map(str::trim) {
        let (k, v) = match part.split_once('=') {
            Some((k, v)) => (k.trim(), Some(v.trim())),
            None => (part, None),
        };
        if !is_label_part(k, true) || v.is_some_and(|v| !is_label_part(v, false)) {
            return Err(format!(
                "{part:?} is not `key=value` or `key` (e.g. kubearmor-app=kubearmor)"
            ));
        }
        exprs.push(match v {
            Some(v) => Expression::Equal(k.to_string(), v.to_string()),
            None => Expression::Exists(k.to_string()),
        });
    }
    Ok(exprs.into_iter().collect())
}

/// Is this pod a live KubeArmor agent: matching `selector`, Running and Ready, not being
/// deleted? (KubeArmor's controller accepts any matching pod; a Pending or crash-looping agent
/// loads nothing.)
pub fn is_running_agent(pod: &LeanPod, selector: &Selector) -> bool {
    selector.matches(pod.labels())
        && pod.metadata.deletion_timestamp.is_none()
        && pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
        && crate::select::is_ready(pod)
        && pod.spec.as_ref().is_some_and(|s| s.node_name.is_some())
}

/// A label key (optional DNS-subdomain prefix and '/', then a name) or value, as the API
/// server accepts them.
fn is_label_part(t: &str, key: bool) -> bool {
    let name_ok = |n: &str| {
        n.len() <= 63
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            && n.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
            && n.chars().last().is_some_and(|c| c.is_ascii_alphanumeric())
    };
    match (key, t.split_once('/')) {
        (true, Some((prefix, name))) => {
            !prefix.is_empty()
                && prefix.len() <= 253
                && prefix.split('.').all(|l| {
                    !l.is_empty()
                        && l.chars()
                            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                        && !l.starts_with('-')
                        && !l.ends_with('-')
                })
                && name_ok(name)
        }
        (true, None) => name_ok(t),
        (false, _) => t.is_empty() || name_ok(t),
    }
}

impl ClusterFacts {
    /// Labels of a namespace, including the one Kubernetes always sets.
    pub fn namespace_labels(&self, ns: &str) -> Labels {
        let mut l = self.namespaces.get(ns).cloned().unwrap_or_default();
        l.entry("kubernetes.io/metadata.name".to_string())
            .or_insert_with(|| ns.to_string());
        l
    }

    /// Records the nodes where an agent matching `selector` runs.
    pub fn find_agents(&mut self, selector: &Selector) {
        self.agents = self
            .pods
            .iter()
            .filter(|p| is_running_agent(p, selector))
            .filter_map(|p| p.spec.as_ref()?.node_name.clone())
            .collect();
    }

    /// Labels of a node, if the node is known.
    pub fn node_labels(&self, node: &str) -> Option<&Labels> {
        self.nodes.get(node)
    }

    /// Adds any object of a kind the core uses; other kinds are ignored (returns false).
    pub fn insert_value(&mut self, v: serde_json::Value) -> Result<bool, SnapshotError> {
        let kind = v
            .get("kind")
            .and_then(|k| k.as_str())
            .unwrap_or_default()
            .to_string();
        fn parse<K: DeserializeOwned>(
            kind: &str,
            v: serde_json::Value,
        ) -> Result<K, SnapshotError> {
            let name = v
                .pointer("/metadata/name")
                .and_then(|n| n.as_str())
                .unwrap_or("<unnamed>")
                .to_string();
            serde_json::from_value(v).map_err(|e| SnapshotError::Object {
                kind: kind.to_string(),
                name,
                error: e.to_string(),
            })
        }
        match kind.as_str() {
            "Pod" => self.pods.push(Arc::new(parse(&kind, v)?)),
            "Node" => {
                let n: Node = parse(&kind, v)?;
                self.nodes.insert(n.name_any(), n.labels().clone());
            }
            "Namespace" => {
                let n: Namespace = parse(&kind, v)?;
                self.namespaces.insert(n.name_any(), n.labels().clone());
            }
            "PodDisruptionBudget" => self.pdbs.push(Arc::new(parse(&kind, v)?)),
            "Lease" => self.leases.push(Arc::new(parse(&kind, v)?)),
            "StatefulSet" => {
                let o: StatefulSet = parse(&kind, v)?;
                self.statefulsets.insert(object_key(&o), Arc::new(o));
            }
            "ReplicaSet" => {
                let o: ReplicaSet = parse(&kind, v)?;
                self.replicasets.insert(object_key(&o), Arc::new(o));
            }
            "Deployment" => {
                let o: Deployment = parse(&kind, v)?;
                self.deployments.insert(object_key(&o), Arc::new(o));
            }
            "DaemonSet" => {
                let o: DaemonSet = parse(&kind, v)?;
                self.daemonsets.insert(object_key(&o), Arc::new(o));
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Reads a snapshot: a `List` (what `kubectl get pods,nodes,... -A -o yaml` prints), a
    /// single object, or several YAML documents of either; YAML or JSON.
    pub fn from_snapshot(text: &str) -> Result<ClusterFacts, SnapshotError> {
        let mut facts = ClusterFacts::default();
        let mut docs = 0;
        let values = crate::yaml::documents(text).map_err(|e| SnapshotError::Yaml {
            document: e.document,
            error: e.error,
        })?;
        for (i, value) in values.into_iter().enumerate() {
            docs += 1;
            if !value.is_object() {
                return Err(SnapshotError::NotAnObject { document: i + 1 });
            }
            match value.get("items") {
                Some(serde_json::Value::Array(items)) => {
                    for item in items.clone() {
                        facts.insert_value(item)?;
                    }
                }
                Some(_) => return Err(SnapshotError::NotAnObject { document: i + 1 }),
                None => {
                    if value.get("kind").is_none() {
                        return Err(SnapshotError::NotAnObject { document: i + 1 });
                    }
                    facts.insert_value(value)?;
                }
            }
        }
        if docs == 0 {
            return Err(SnapshotError::Empty);
        }
        Ok(facts)
    }
}

/// Why a snapshot could not be read.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SnapshotError {
    #[error("document {document} is not valid YAML: {error}")]
    Yaml { document: usize, error: String },
    #[error("document {document} is not a Kubernetes object or List")]
    NotAnObject { document: usize },
    #[error("{kind} {name}: {error}")]
    Object {
        kind: String,
        name: String,
        error: String,
    },
    #[error(
        "the snapshot is empty; create one with `kubectl get pods,nodes,pdb,leases,statefulsets,replicasets,deployments -A -o yaml`"
    )]
    Empty,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_list_and_loose_documents() {
        let text = r#"
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Node
  metadata: {name: n1, labels: {topology.kubernetes.io/zone: zone-a}}
- apiVersion: v1
  kind: Pod
  metadata: {name: p1, namespace: default}
  spec: {containers: [{name: c}]}
- apiVersion: v1
  kind: ConfigMap
  metadata: {name: ignored}
---
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {team: a}}
"#;
        let f = ClusterFacts::from_snapshot(text).unwrap();
        assert_eq!(f.pods.len(), 1);
        assert_eq!(f.nodes["n1"]["topology.kubernetes.io/zone"], "zone-a");
        assert_eq!(f.namespace_labels("shop")["team"], "a");
        assert_eq!(
            f.namespace_labels("other")["kubernetes.io/metadata.name"],
            "other"
        );
    }

    #[test]
    fn agent_selectors_parse_as_the_api_server_reads_labels() {
        for ok in [
            "kubearmor-app=kubearmor",
            "kubearmor-app",
            "app.kubernetes.io/name=kubearmor,tier=agent",
            "a=",
        ] {
            assert!(parse_agent_selector(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "-x=y",
            "a=b/c",
            "/x",
            "Foo.Bar/x=y",
            "a=-b",
            "a b=c",
            ",",
            "x=y,",
        ] {
            assert!(parse_agent_selector(bad).is_err(), "{bad:?}");
        }
        let sel = parse_agent_selector(DEFAULT_AGENT_SELECTOR).unwrap();
        let agent = |ready: &str, phase: &str| -> LeanPod {
            serde_saphyr::from_str(&format!(
                "metadata: {{name: a, labels: {{kubearmor-app: kubearmor}}}}\nspec: {{nodeName: n, containers: [{{name: c}}]}}\nstatus: {{phase: {phase}, conditions: [{{type: Ready, status: '{ready}'}}]}}"
            ))
            .unwrap()
        };
        assert!(is_running_agent(&agent("True", "Running"), &sel));
        // Crash-looping (Running, not Ready) or Pending: it loads nothing.
        assert!(!is_running_agent(&agent("False", "Running"), &sel));
        assert!(!is_running_agent(&agent("False", "Pending"), &sel));
    }

    #[test]
    fn bad_snapshots_give_errors() {
        assert!(matches!(
            ClusterFacts::from_snapshot(""),
            Err(SnapshotError::Empty)
        ));
        assert!(matches!(
            ClusterFacts::from_snapshot("---\n"),
            Err(SnapshotError::Empty)
        ));
        assert!(matches!(
            ClusterFacts::from_snapshot("a: [b"),
            Err(SnapshotError::Yaml { .. })
        ));
        assert!(matches!(
            ClusterFacts::from_snapshot("- 1\n- 2"),
            Err(SnapshotError::NotAnObject { .. })
        ));
        assert!(matches!(
            ClusterFacts::from_snapshot("items: 3"),
            Err(SnapshotError::NotAnObject { .. })
        ));
        let e =
            ClusterFacts::from_snapshot("kind: Pod\nmetadata: {name: x}\nspec: {containers: 7}")
                .unwrap_err();
        assert!(
            matches!(&e, SnapshotError::Object { kind, name, .. } if kind == "Pod" && name == "x"),
            "{e}"
        );
    }
}

/// Fuzzing of the snapshot reader (what `armor-refresh plan --snapshot` parses): the seed
/// corpus in tests/corpus/snapshot/, mutations of it, and arbitrary text and JSON. Every
/// input must give facts or an error with a message — never a panic, a hang or an
/// expansion bomb — and facts must plan. Failures are kept by proptest under
/// proptest-regressions/ and replayed first.
#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    fn corpus() -> Vec<(String, String)> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/snapshot");
        let mut out: Vec<(String, String)> = std::fs::read_dir(&dir)
            .expect("the corpus directory")
            .map(|e| {
                let p = e.expect("an entry").path();
                let bytes = std::fs::read(&p).expect("a corpus file");
                (
                    p.display().to_string(),
                    String::from_utf8_lossy(&bytes).into_owned(),
                )
            })
            .collect();
        let example =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/snapshot.yaml");
        out.push((
            example.display().to_string(),
            std::fs::read_to_string(example).expect("the example snapshot"),
        ));
        out.sort();
        out
    }

    /// Parses, and when that works, selects and plans with the default policy.
    fn exercise(text: &str) -> Result<usize, String> {
        let facts = ClusterFacts::from_snapshot(text).map_err(|e| e.to_string())?;
        let spec = serde_saphyr::from_str("rollout: {batchSize: 5}").expect("a policy spec");
        let policy = crate::policy::validate("fuzz", &spec).expect("the default policy");
        let mut facts = facts;
        facts.find_agents(&parse_agent_selector(DEFAULT_AGENT_SELECTOR).unwrap());
        let sel = crate::select::select(&policy, &facts);
        let limits = crate::plan::Limits::from_policy(&policy, sel.targets.len() as u32);
        let batches = crate::plan::plan_all(&sel.targets, &limits, &crate::run::context(&facts));
        Ok(batches.len())
    }

    #[test]
    fn the_seed_corpus_reads_or_fails_with_a_message() {
        let corpus = corpus();
        assert!(corpus.len() >= 9, "the corpus is there");
        for (name, text) in corpus {
            let started = std::time::Instant::now();
            match exercise(&text) {
                Ok(_) => {}
                Err(e) => assert!(!e.is_empty(), "{name}: an empty error"),
            }
            // Not a timing assertion on speed: a bound that only an expansion bomb or a
            // hang would break.
            assert!(
                started.elapsed() < std::time::Duration::from_secs(20),
                "{name} took {:?}",
                started.elapsed()
            );
        }
        // The specific answers users rely on.
        let read = |f: &str| {
            let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/corpus/snapshot")
                .join(f);
            exercise(&String::from_utf8_lossy(&std::fs::read(p).unwrap()))
        };
        for (file, want) in [
            ("alias-bomb.yaml", "budget breached"),
            ("deep-nesting.yaml", "not valid YAML"),
            ("scalar.yaml", "not a Kubernetes object"),
            ("items-not-a-list.yaml", "not a Kubernetes object"),
            ("wrong-types.yaml", "Pod p: invalid type"),
        ] {
            let got = read(file);
            assert!(
                got.as_ref().is_err_and(|e| e.contains(want)),
                "{file}: {got:?}"
            );
        }
        // Readable: one target (in one batch), or none (a bare pod is skipped).
        for (file, batches) in [
            ("unknown-kinds-and-nulls.yaml", 1),
            ("pod-without-name.yaml", 0),
            ("json.yaml", 0),
        ] {
            let got = read(file);
            assert!(got.as_ref().is_ok_and(|b| *b == batches), "{file}: {got:?}");
        }
    }

    /// YAML-significant fragments that mutations splice in.
    const SPLICES: &[&str] = &[
        ":",
        "- ",
        "{",
        "}",
        "[",
        "]",
        "\n",
        "\n  ",
        "&a ",
        "*a",
        "!!binary ",
        "'",
        "\"",
        "#",
        "---\n",
        "~",
        "null",
        "-1",
        "1e999",
        "\t",
        "? ",
        "|\n",
        ">\n",
        "\u{feff}",
        "\0",
    ];

    proptest! {
        #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

        #[test]
        fn mutated_seeds_never_panic(seed in 0usize..64, at in any::<prop::sample::Index>(),
                                     cut in any::<prop::sample::Index>(), splice in 0usize..25,
                                     truncate in any::<bool>()) {
            let corpus = corpus();
            let (_, text) = &corpus[seed % corpus.len()];
            let chars: Vec<char> = text.chars().collect();
            let i = at.index(chars.len() + 1);
            let mut s: String = chars[..i].iter().collect();
            s.push_str(SPLICES[splice]);
            if !truncate {
                let j = i + cut.index(chars.len() - i + 1);
                s.extend(&chars[j.min(chars.len())..]);
            }
            if let Err(e) = exercise(&s) {
                prop_assert!(!e.is_empty());
            }
        }

        #[test]
        fn arbitrary_text_never_panics(s in "\\PC{0,400}") {
            if let Err(e) = exercise(&s) {
                prop_assert!(!e.is_empty());
            }
        }

        #[test]
        fn arbitrary_objects_never_panic(kind in prop::sample::select(vec!["Pod", "Node", "PodDisruptionBudget", "Lease", "StatefulSet", "ReplicaSet", "Deployment", "DaemonSet", "Namespace", "List"]),
                                         v in arb_json()) {
            let mut doc = serde_json::json!({"apiVersion": "v1", "kind": kind, "metadata": {"name": "x", "namespace": "n"}});
            if let serde_json::Value::Object(m) = v {
                for (k, val) in m {
                    doc[k] = val;
                }
            }
            if let Err(e) = exercise(&doc.to_string()) {
                prop_assert!(!e.is_empty());
            }
        }
    }

    /// JSON values shaped like objects, with the keys Kubernetes objects use.
    fn arb_json() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            "[a-zA-Z0-9/._-]{0,12}".prop_map(serde_json::Value::from),
        ];
        let keys = prop::sample::select(vec![
            "metadata",
            "spec",
            "status",
            "items",
            "name",
            "namespace",
            "labels",
            "ownerReferences",
            "kind",
            "controller",
            "nodeName",
            "containers",
            "conditions",
            "type",
            "selector",
            "matchLabels",
            "holderIdentity",
            "replicas",
            "annotations",
            "volumes",
            "phase",
        ]);
        leaf.prop_recursive(4, 48, 6, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
                prop::collection::btree_map(keys.clone(), inner, 0..5).prop_map(|m| {
                    serde_json::Value::Object(
                        m.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
                    )
                }),
            ]
        })
    }
}
