//! `armor-refresh plan`: a dry run of a policy against a snapshot, without a cluster.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use serde::Serialize;

use crate::api::ArmorRefreshPolicy;
use crate::cluster::{ClusterFacts, SnapshotError};
use crate::plan::{self, Limits};
use crate::policy::{SpecError, validate};
use crate::run::estimate_end;
use crate::select::select;

/// Why `plan` could not run.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("{path}: {error}")]
    Read { path: String, error: String },
    #[error("{path}: not an ArmorRefreshPolicy: {error}")]
    Policy { path: String, error: String },
    #[error("{path}: invalid policy: {error}")]
    Invalid { path: String, error: SpecError },
    #[error("{path}: {error}")]
    Snapshot { path: String, error: SnapshotError },
}

/// One pod of a planned batch.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PlannedPod {
    pub pod: String,
    pub owner: String,
    pub node: String,
    pub zone: String,
}

/// The plan, as `-o json|yaml` prints it.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub policy: String,
    pub targets: u32,
    /// Pods not refreshed, by reason (pods the policy does not select are not counted).
    pub skipped: BTreeMap<String, u32>,
    pub batch_size: u32,
    /// Batches of `namespace/name`.
    pub batches: Vec<Vec<String>>,
    /// The same batches with owner, node and zone.
    pub batch_details: Vec<Vec<PlannedPod>>,
    /// Estimated duration, windows included (Go duration), assuming `assumedBatchDuration` per batch.
    pub estimated_duration: Option<String>,
    pub estimated_completion: Option<DateTime<Utc>>,
    pub assumed_batch_duration: String,
    pub windows: Vec<String>,
    pub planned_at: DateTime<Utc>,
}

/// Parses the first `ArmorRefreshPolicy` of a YAML file.
pub fn read_policy(path: &str, text: &str) -> Result<ArmorRefreshPolicy, PlanError> {
    let err = |error: String| PlanError::Policy {
        path: path.to_string(),
        error,
    };
    let docs = crate::yaml::documents(text).map_err(|e| {
        err(format!(
            "not valid YAML (document {}): {}",
            e.document, e.error
        ))
    })?;
    for json in docs {
        if json.get("kind").and_then(|k| k.as_str()) == Some("ArmorRefreshPolicy") {
            // What the API server would refuse is refused here too, with the same field.
            let spec = json.get("spec").cloned().unwrap_or(serde_json::json!({}));
            crate::crdcheck::check_policy_spec(&spec)
                .map_err(|error| err(format!("the API server would reject it: {error}")))?;
            return serde_json::from_value(json).map_err(|e| err(e.to_string()));
        }
    }
    Err(err("no document with kind: ArmorRefreshPolicy".into()))
}

/// Plans `policy` over `facts` at `now`.
pub fn plan_report(
    policy_path: &str,
    policy: &ArmorRefreshPolicy,
    facts: &ClusterFacts,
    now: DateTime<Utc>,
    per_batch: Duration,
) -> Result<Report, PlanError> {
    let name = policy
        .metadata
        .name
        .clone()
        .unwrap_or_else(|| "(unnamed)".into());
    let valid = validate(&name, &policy.spec).map_err(|error| PlanError::Invalid {
        path: policy_path.to_string(),
        error,
    })?;
    let sel = select(&valid, facts);
    let limits = Limits::from_policy(&valid, sel.targets.len() as u32);
    let ctx = crate::run::context(facts);
    let batches = plan::plan_all(&sel.targets, &limits, &ctx);
    let end = estimate_end(&valid, batches.len(), now, per_batch);
    Ok(Report {
        policy: name,
        targets: sel.targets.len() as u32,
        skipped: sel.skipped_counts(),
        batch_size: limits.batch,
        batches: batches
            .iter()
            .map(|b| b.iter().map(|&i| sel.targets[i].key()).collect())
            .collect(),
        batch_details: batches
            .iter()
            .map(|b| {
                b.iter()
                    .map(|&i| {
                        let t = &sel.targets[i];
                        PlannedPod {
                            pod: t.key(),
                            owner: t.owner.to_string(),
                            node: t.node.clone(),
                            zone: t.zone.clone(),
                        }
                    })
                    .collect()
            })
            .collect(),
        estimated_duration: end.map(|e| crate::run::fmt_duration(e - now)),
        estimated_completion: end,
        assumed_batch_duration: crate::run::fmt_duration(
            chrono::TimeDelta::from_std(per_batch).unwrap_or_default(),
        ),
        windows: policy
            .spec
            .windows
            .iter()
            .map(|w| format!("{} for {} ({})", w.schedule, w.duration, w.time_zone))
            .collect(),
        planned_at: now,
    })
}

/// The human-readable table.
pub fn render_table(r: &Report) -> String {
    let mut out = String::new();
    let windows = if r.windows.is_empty() {
        "always open".to_string()
    } else {
        r.windows.join("; ")
    };
    out.push_str(&format!(
        "Policy {}: {} targets in {} batches of up to {} (windows: {})\n",
        r.policy,
        r.targets,
        r.batches.len(),
        r.batch_size,
        windows
    ));
    out.push_str(&match (&r.estimated_duration, r.estimated_completion) {
        (Some(d), Some(end)) => format!(
            "Estimated duration: {d} (done by {}), assuming {} per batch\n",
            end.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            r.assumed_batch_duration
        ),
        _ => "Estimated duration: never (no window opens again)\n".to_string(),
    });
    if r.skipped.is_empty() {
        out.push_str("Skipped: none\n");
    } else {
        let s: Vec<String> = r.skipped.iter().map(|(k, v)| format!("{k}={v}")).collect();
        out.push_str(&format!("Skipped: {}\n", s.join(", ")));
    }
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    t.set_header(vec!["BATCH", "POD", "OWNER", "NODE", "ZONE"]);
    for (i, b) in r.batch_details.iter().enumerate() {
        for (j, p) in b.iter().enumerate() {
            let idx = if j == 0 {
                (i + 1).to_string()
            } else {
                String::new()
            };
            t.add_row(vec![
                idx,
                p.pod.clone(),
                p.owner.clone(),
                p.node.clone(),
                p.zone.clone(),
            ]);
        }
    }
    if !r.batch_details.is_empty() {
        out.push_str(&t.to_string());
        out.push('\n');
    }
    out
}

/// Runs `plan` on file contents.
pub fn plan_files(
    policy_path: &str,
    policy_text: &str,
    snapshot_path: &str,
    snapshot_text: &str,
    now: DateTime<Utc>,
    per_batch: Duration,
) -> Result<Report, PlanError> {
    plan_files_with(
        policy_path,
        policy_text,
        snapshot_path,
        snapshot_text,
        now,
        per_batch,
        &PlanEnv::default(),
    )
}

/// What the operator knows besides the snapshot: its `--agent-selector` and the namespaces
/// its webhook configuration skips (`--webhook-skip-namespaces`).
#[derive(Debug, Clone)]
pub struct PlanEnv {
    pub agent_selector: kube::core::Selector,
    pub unhooked_namespaces: Vec<String>,
}

impl Default for PlanEnv {
    fn default() -> Self {
        PlanEnv {
            agent_selector: crate::cluster::parse_agent_selector(
                crate::cluster::DEFAULT_AGENT_SELECTOR,
            )
            .expect("the default agent selector parses"),
            unhooked_namespaces: vec!["kube-system".into()],
        }
    }
}

/// [`plan_files`] as an operator run with other flags would plan.
pub fn plan_files_with(
    policy_path: &str,
    policy_text: &str,
    snapshot_path: &str,
    snapshot_text: &str,
    now: DateTime<Utc>,
    per_batch: Duration,
    env: &PlanEnv,
) -> Result<Report, PlanError> {
    let policy = read_policy(policy_path, policy_text)?;
    let mut facts =
        ClusterFacts::from_snapshot(snapshot_text).map_err(|error| PlanError::Snapshot {
            path: snapshot_path.to_string(),
            error,
        })?;
    facts.find_agents(&env.agent_selector);
    facts.unhooked_namespaces = env.unhooked_namespaces.iter().cloned().collect();
    facts.now = Some(now);
    plan_report(policy_path, &policy, &facts, now, per_batch)
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = "apiVersion: refresh.armor.dev/v1alpha1\nkind: ArmorRefreshPolicy\nmetadata: {name: p}\nspec: {rollout: {batchSize: 2}}\n";
    const SNAP: &str = r#"
kind: List
items:
- {kind: Node, metadata: {name: n1, labels: {topology.kubernetes.io/zone: zone-a, kubearmor.io/enforcer: apparmor}}}
- kind: Pod
  metadata: {name: kubearmor-1, namespace: kubearmor, uid: k1, labels: {kubearmor-app: kubearmor}}
  spec: {nodeName: n1, containers: [{name: agent}]}
  status: {phase: Running, conditions: [{type: Ready, status: "True"}]}
- kind: Pod
  metadata: {name: w-1, namespace: a, uid: u1, ownerReferences: [{apiVersion: apps/v1, kind: ReplicaSet, name: w-x, uid: r, controller: true}], labels: {pod-template-hash: x}}
  spec: {nodeName: n1, containers: [{name: c}]}
  status: {phase: Running, conditions: [{type: Ready, status: "True"}]}
- kind: Pod
  metadata: {name: w-2, namespace: a, uid: u2, ownerReferences: [{apiVersion: apps/v1, kind: ReplicaSet, name: w-x, uid: r, controller: true}], labels: {pod-template-hash: x}}
  spec: {nodeName: n1, containers: [{name: c}]}
  status: {phase: Running, conditions: [{type: Ready, status: "True"}]}
- kind: Pod
  metadata: {name: solo, namespace: a, uid: u3}
  spec: {nodeName: n1, containers: [{name: c}]}
"#;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-03-02T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn plans_a_snapshot() {
        let r = plan_files(
            "p.yaml",
            POLICY,
            "s.yaml",
            SNAP,
            now(),
            Duration::from_secs(60),
        )
        .unwrap();
        assert_eq!(r.targets, 2);
        assert_eq!(r.skipped["BarePod"], 1);
        assert_eq!(r.skipped["KubeArmorPod"], 1, "the agent itself");
        assert_eq!(
            r.batches,
            vec![vec!["a/w-1".to_string(), "a/w-2".to_string()]]
        );
        assert_eq!(r.estimated_duration.as_deref(), Some("1m"));
        let table = render_table(&r);
        assert!(
            table.contains("2 targets in 1 batches")
                && table.contains("BarePod=1")
                && table.contains("zone-a"),
            "{table}"
        );
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["targets"], 2);
        assert_eq!(json["skipped"]["BarePod"], 1);
        assert_eq!(json["batches"][0][0], "a/w-1");
        assert!(json["estimatedDuration"].is_string());
    }

    #[test]
    fn bad_inputs_are_one_line_errors() {
        let cases = [
            plan_files(
                "p.yaml",
                "kind: [",
                "s.yaml",
                SNAP,
                now(),
                Duration::from_secs(1),
            )
            .unwrap_err(),
            plan_files(
                "p.yaml",
                "kind: ConfigMap",
                "s.yaml",
                SNAP,
                now(),
                Duration::from_secs(1),
            )
            .unwrap_err(),
            plan_files(
                "p.yaml",
                &POLICY.replace("batchSize: 2", "batchSize: 0"),
                "s.yaml",
                SNAP,
                now(),
                Duration::from_secs(1),
            )
            .unwrap_err(),
            plan_files(
                "p.yaml",
                &POLICY.replace("batchSize: 2", "strategy: Sideways"),
                "s.yaml",
                SNAP,
                now(),
                Duration::from_secs(1),
            )
            .unwrap_err(),
            plan_files(
                "p.yaml",
                POLICY,
                "s.yaml",
                "items: [",
                now(),
                Duration::from_secs(1),
            )
            .unwrap_err(),
            plan_files(
                "p.yaml",
                POLICY,
                "s.yaml",
                "",
                now(),
                Duration::from_secs(1),
            )
            .unwrap_err(),
        ];
        for e in cases {
            let msg = e.to_string();
            assert!(!msg.contains('\n'), "one line: {msg}");
            assert!(
                msg.starts_with("p.yaml") || msg.starts_with("s.yaml"),
                "names the file: {msg}"
            );
        }
        let e = plan_files(
            "p.yaml",
            &POLICY.replace("batchSize: 2", "batchSize: 0"),
            "s.yaml",
            SNAP,
            now(),
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert!(e.to_string().contains("spec.rollout.batchSize"), "{e}");
    }
}
