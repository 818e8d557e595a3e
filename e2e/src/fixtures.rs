//! Small fixtures shared by the e2e suites: workloads, policies and runs as YAML, and waits
//! on pods and run phases.

use std::time::Duration;

use armor_refresh::api::{ArmorRefreshRun, Phase};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};

use crate::{Result, kubectl, wait_for};

pub async fn all_ready(c: &Client, ns: &str, n: usize) -> Result<Vec<Pod>> {
    let pods: Api<Pod> = Api::namespaced(c.clone(), ns);
    wait_for(
        &format!("{n} Ready pods in {ns}"),
        Duration::from_secs(120),
        || {
            let pods = pods.clone();
            async move {
                let l = pods.list(&ListParams::default()).await?.items;
                let ready: Vec<Pod> = l
                    .into_iter()
                    .filter(|p| p.metadata.deletion_timestamp.is_none())
                    .filter(crate::is_ready)
                    .collect();
                Ok((ready.len() == n).then_some(ready))
            }
        },
    )
    .await
}

pub async fn run_status(
    c: &Client,
    name: &str,
) -> Result<armor_refresh::api::ArmorRefreshRunStatus> {
    let runs: Api<ArmorRefreshRun> = Api::all(c.clone());
    Ok(runs.get(name).await?.status.unwrap_or_default())
}

pub async fn wait_phase(
    c: &Client,
    name: &str,
    phase: Phase,
    reason: Option<&str>,
    timeout: Duration,
) -> Result<armor_refresh::api::ArmorRefreshRunStatus> {
    let what = format!(
        "run {name} to reach {phase:?}{}",
        reason.map(|r| format!("/{r}")).unwrap_or_default()
    );
    let r = wait_for(&what, timeout, || async move {
        let s = run_status(c, name).await?;
        Ok((s.phase == phase && reason.is_none_or(|r| s.reason == r)).then_some(s))
    })
    .await;
    if r.is_err() {
        // Say where it stood, for the CI log.
        let (_, out, _) = kubectl(&["get", "armorrefreshrun", name, "-o", "yaml"], None).await?;
        eprintln!("{name} when giving up:\n{out}");
    }
    r
}

/// The node label of the e2e fleet's AppArmor nodes that run a KubeArmor agent (cluster.sh).
pub const AGENT_NODE_LABEL: &str = "e2e.armor.dev/kubearmor-agent";

/// A Deployment on the nodes where KubeArmor loads profiles (the suites about runs need every
/// pod to be a target; the KubeArmor suite spreads its own over the whole mixed fleet).
pub fn deployment(ns: &str, name: &str, replicas: u32, containers: &[&str]) -> String {
    let cs: Vec<String> = containers
        .iter()
        .map(|c| format!("{{name: {c}, image: example/{c}:1}}"))
        .collect();
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  replicas: {replicas}\n  selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    metadata: {{labels: {{app: {name}}}}}\n    spec: {{nodeSelector: {{{AGENT_NODE_LABEL}: 'true'}}, containers: [{}]}}\n---\n",
        cs.join(", ")
    )
}

pub fn policy(name: &str, namespaces: &[&str], rollout: &str, extra: &str) -> String {
    format!(
        "apiVersion: refresh.armor.dev/v1alpha1\nkind: ArmorRefreshPolicy\nmetadata: {{name: {name}}}\nspec:\n  selector:\n    namespaceSelector: {{matchExpressions: [{{key: kubernetes.io/metadata.name, operator: In, values: [{}]}}]}}\n  rollout: {rollout}\n{extra}",
        namespaces.join(", ")
    )
}

pub fn run(name: &str, policy: &str, extra: &str) -> String {
    format!(
        "apiVersion: refresh.armor.dev/v1alpha1\nkind: ArmorRefreshRun\nmetadata: {{name: {name}}}\nspec: {{policyRef: {{name: {policy}}}{extra}}}\n"
    )
}

pub fn uids(pods: &[Pod]) -> std::collections::BTreeSet<String> {
    pods.iter().map(|p| p.uid().unwrap_or_default()).collect()
}

/// Merge-patches a policy's spec (`patch` is the JSON of `spec`), as a user would with
/// `kubectl patch`.
pub async fn merge_policy(name: &str, spec: &str) -> Result<()> {
    let patch = format!("{{\"spec\": {spec}}}");
    let (ok, _, err) = kubectl(
        &[
            "patch",
            "armorrefreshpolicy",
            name,
            "--type",
            "merge",
            "-p",
            &patch,
        ],
        None,
    )
    .await?;
    if !ok {
        return Err(format!("kubectl patch armorrefreshpolicy {name}: {err}").into());
    }
    Ok(())
}
