//! Target selection: which pods a policy must refresh, and why every other pod is skipped.

use std::collections::{BTreeMap, HashMap, HashSet};

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::core::{Selector, SelectorExt};

use crate::api::Strategy;
use crate::cluster::{ClusterFacts, Labels};
use crate::compliance::{self, OPT_OUT_LABEL, Owner};
use crate::policy::ValidPolicy;

/// Why a pod is not a target. The names are stable: they appear in status, metrics and `plan -o json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SkipReason {
    /// The policy's selectors do not match it.
    NotSelected,
    /// Its namespace is in `exclude.namespaces`.
    ExcludedNamespace,
    /// It matches `exclude.podSelector` or carries `refresh.armor.dev/exclude=true`.
    ExcludedBySelector,
    /// Its owner's kind is in `exclude.ownerKinds`.
    ExcludedOwnerKind,
    /// A mirror (static) pod: the kubelet owns it, the API cannot recreate it.
    MirrorPod,
    /// Succeeded or Failed.
    Completed,
    /// Being deleted already.
    Terminating,
    /// Not scheduled yet: it will get its profile on creation or binding.
    Unscheduled,
    /// On a node that does not enforce AppArmor.
    NodeNotEnforcing,
    /// No controller would recreate it (opt in with `selector.includeBarePods`).
    BarePod,
    /// Its owner cannot be restarted by patching a template (RolloutRestart only).
    NotRestartable,
    /// Already carries its profile.
    Compliant,
    /// Carries profiles the user set explicitly: respected.
    ExplicitProfile,
    /// Its profile's name cannot be loaded by KubeArmor's agent (over 255 bytes once the
    /// template is expanded): refreshing it would give a container that never starts.
    UnloadableProfile,
}

impl SkipReason {
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::NotSelected => "NotSelected",
            SkipReason::ExcludedNamespace => "ExcludedNamespace",
            SkipReason::ExcludedBySelector => "ExcludedBySelector",
            SkipReason::ExcludedOwnerKind => "ExcludedOwnerKind",
            SkipReason::MirrorPod => "MirrorPod",
            SkipReason::Completed => "Completed",
            SkipReason::Terminating => "Terminating",
            SkipReason::Unscheduled => "Unscheduled",
            SkipReason::NodeNotEnforcing => "NodeNotEnforcing",
            SkipReason::BarePod => "BarePod",
            SkipReason::NotRestartable => "NotRestartable",
            SkipReason::Compliant => "Compliant",
            SkipReason::ExplicitProfile => "ExplicitProfile",
            SkipReason::UnloadableProfile => "UnloadableProfile",
        }
    }
}

impl std::fmt::Display for SkipReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A pod to refresh, with the facts the planner needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub node: String,
    /// Value of the policy's topology key on the node ("" when unknown).
    pub zone: String,
    pub owner: Owner,
    /// StatefulSet ordinal.
    pub ordinal: Option<u32>,
    /// Mounts PersistentVolumeClaims.
    pub volumes: bool,
    /// Holds a leader Lease.
    pub leader: bool,
    /// Indexes into `ClusterFacts::pdbs` of the budgets covering it.
    pub pdbs: Vec<usize>,
    pub ready: bool,
    /// Creation time (Unix seconds), when known.
    pub created: Option<i64>,
}

impl Target {
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
    /// (namespace, owner): the workload it belongs to.
    pub fn workload(&self) -> (String, Owner) {
        (self.namespace.clone(), self.owner.clone())
    }
}

/// Where each pod stands under a policy.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub targets: Vec<Target>,
    /// Skipped pods as `namespace/name`, by reason.
    pub skipped: BTreeMap<SkipReason, Vec<String>>,
}

impl Selection {
    pub fn skipped_counts(&self) -> BTreeMap<String, u32> {
        self.skipped
            .iter()
            .map(|(r, v)| (r.to_string(), v.len() as u32))
            .collect()
    }
    fn count(&self, r: SkipReason) -> u32 {
        self.skipped.get(&r).map_or(0, |v| v.len() as u32)
    }
    /// Pods the policy governs: targets plus those already carrying a profile.
    pub fn governed(&self) -> u32 {
        self.targets.len() as u32 + self.compliant()
    }
    pub fn compliant(&self) -> u32 {
        self.count(SkipReason::Compliant) + self.count(SkipReason::ExplicitProfile)
    }
    /// Skipped for any reason but "the policy does not select it".
    pub fn skipped_total(&self) -> u32 {
        self.skipped
            .iter()
            .filter(|(r, _)| **r != SkipReason::NotSelected)
            .map(|(_, v)| v.len() as u32)
            .sum()
    }
}

pub fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

pub fn is_terminating(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

pub fn is_mirror(pod: &Pod) -> bool {
    pod.annotations()
        .contains_key("kubernetes.io/config.mirror")
}

fn mounts_claims(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .is_some_and(|vs| {
            vs.iter()
                .any(|v| v.persistent_volume_claim.is_some() || v.ephemeral.is_some())
        })
}

fn ordinal(pod: &Pod, owner: &Owner) -> Option<u32> {
    if owner.kind != "StatefulSet" {
        return None;
    }
    if let Some(i) = pod
        .labels()
        .get("apps.kubernetes.io/pod-index")
        .and_then(|v| v.parse().ok())
    {
        return Some(i);
    }
    pod.name_any()
        .strip_prefix(&format!("{}-", owner.name))?
        .parse()
        .ok()
}

/// A PDB's index in `ClusterFacts::pdbs` and its parsed selector.
type IndexedPdb = (usize, Selector);

/// What classifying a pod looks up besides the pod, computed once per selection instead of
/// once per pod: PDB selectors parsed and grouped by namespace, the pods named by leader
/// Leases, and namespace labels.
pub struct Index<'a> {
    /// PDBs by (namespace, one of their matchLabels pairs): a pod only tries the PDBs keyed
    /// by one of its own labels.
    pdbs_by_label: HashMap<(&'a str, &'a str, &'a str), Vec<IndexedPdb>>,
    /// PDBs without matchLabels (expressions only, or empty: every pod of the namespace).
    pdbs: HashMap<&'a str, Vec<IndexedPdb>>,
    leaders: HashSet<(&'a str, &'a str)>,
    namespaces: HashMap<String, Labels>,
}

impl<'a> Index<'a> {
    pub fn new(facts: &'a ClusterFacts) -> Index<'a> {
        let mut pdbs: HashMap<&str, Vec<IndexedPdb>> = HashMap::new();
        let mut pdbs_by_label: HashMap<_, Vec<_>> = HashMap::new();
        for (i, p) in facts.pdbs.iter().enumerate() {
            let Some(label_selector) = p.spec.as_ref().and_then(|s| s.selector.as_ref()) else {
                continue; // no selector: selects nothing
            };
            // An empty PDB selector (policy/v1) selects every pod of the namespace.
            let Ok(sel) = Selector::try_from(label_selector.clone()) else {
                continue;
            };
            let ns = p.metadata.namespace.as_deref().unwrap_or_default();
            match label_selector
                .match_labels
                .as_ref()
                .and_then(|m| m.iter().next())
            {
                Some((k, v)) => pdbs_by_label
                    .entry((ns, k.as_str(), v.as_str()))
                    .or_default()
                    .push((i, sel)),
                None => pdbs.entry(ns).or_default().push((i, sel)),
            }
        }
        let leaders = facts
            .leases
            .iter()
            .filter_map(|l| {
                let ns = l.metadata.namespace.as_deref()?;
                let holder = l.spec.as_ref()?.holder_identity.as_deref()?;
                // client-go leader election writes "<pod>_<uuid>"; others write the pod name.
                // Pod names never contain '_'.
                Some((ns, holder.split('_').next().unwrap_or(holder)))
            })
            .collect();
        Index {
            pdbs_by_label,
            pdbs,
            leaders,
            namespaces: HashMap::new(),
        }
    }

    fn holds_lease(&self, ns: &str, pod: &str) -> bool {
        self.leaders.contains(&(ns, pod))
    }

    /// PDBs (indexes into `facts.pdbs`) that select this pod.
    fn pdbs_of(&self, ns: &str, pod: &Pod) -> Vec<usize> {
        let labels = pod.labels();
        let keyed = labels
            .iter()
            .filter_map(|(k, v)| self.pdbs_by_label.get(&(ns, k.as_str(), v.as_str())))
            .flatten();
        let mut out: Vec<usize> = keyed
            .chain(self.pdbs.get(ns).into_iter().flatten())
            .filter(|(_, s)| s.matches(labels))
            .map(|(i, _)| *i)
            .collect();
        out.sort_unstable();
        out
    }

    fn namespace_labels(&mut self, facts: &ClusterFacts, ns: &str) -> &Labels {
        if !self.namespaces.contains_key(ns) {
            self.namespaces
                .insert(ns.to_string(), facts.namespace_labels(ns));
        }
        &self.namespaces[ns]
    }
}

/// Does the policy govern this pod at all (selectors and exclusions, before anything about
/// its state, node or profile)? The one answer for the controller and the webhook.
pub fn governs(
    policy: &ValidPolicy,
    pod: &Pod,
    owner: &Owner,
    ns: &str,
    ns_labels: &BTreeMap<String, String>,
) -> Result<(), SkipReason> {
    let labels = pod.labels();
    if policy
        .namespace_selector
        .as_ref()
        .is_some_and(|s| !s.matches(ns_labels))
        || policy
            .pod_selector
            .as_ref()
            .is_some_and(|s| !s.matches(labels))
    {
        return Err(SkipReason::NotSelected);
    }
    if policy.spec.exclude.namespaces.iter().any(|n| n == ns) {
        return Err(SkipReason::ExcludedNamespace);
    }
    if labels.get(OPT_OUT_LABEL).is_some_and(|v| v == "true")
        || policy
            .exclude_pod_selector
            .as_ref()
            .is_some_and(|s| s.matches(labels))
    {
        return Err(SkipReason::ExcludedBySelector);
    }
    if policy.spec.exclude.owner_kinds.contains(&owner.kind) {
        return Err(SkipReason::ExcludedOwnerKind);
    }
    if is_mirror(pod) {
        return Err(SkipReason::MirrorPod);
    }
    Ok(())
}

/// Classifies one pod; `Ok` means it is a target.
pub fn classify(
    policy: &ValidPolicy,
    facts: &ClusterFacts,
    pod: &Pod,
) -> Result<Target, SkipReason> {
    classify_indexed(policy, facts, &mut Index::new(facts), pod)
}

fn classify_indexed(
    policy: &ValidPolicy,
    facts: &ClusterFacts,
    index: &mut Index,
    pod: &Pod,
) -> Result<Target, SkipReason> {
    let ns = pod.namespace().unwrap_or_default();
    let spec = &policy.spec;
    let owner = compliance::owner_of(pod, Some(facts));
    governs(policy, pod, &owner, &ns, index.namespace_labels(facts, &ns))?;
    if matches!(phase(pod), "Succeeded" | "Failed") {
        return Err(SkipReason::Completed);
    }
    if is_terminating(pod) {
        return Err(SkipReason::Terminating);
    }
    let node = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .unwrap_or_default();
    if node.is_empty() {
        return Err(SkipReason::Unscheduled);
    }
    let node_labels = facts.node_labels(&node);
    if let Some(sel) = &policy.enforcing_nodes {
        // An unknown node (not in the cache yet) is not assumed to enforce.
        if !node_labels.is_some_and(|l| sel.matches(l)) {
            return Err(SkipReason::NodeNotEnforcing);
        }
    }
    let verdict = compliance::check(policy, pod, &owner, index.namespace_labels(facts, &ns));
    if verdict.has_unloadable() {
        return Err(SkipReason::UnloadableProfile);
    }
    if verdict.is_compliant() {
        return Err(if verdict.all_explicit() {
            SkipReason::ExplicitProfile
        } else {
            SkipReason::Compliant
        });
    }
    if owner.is_bare() && !spec.selector.include_bare_pods {
        return Err(SkipReason::BarePod);
    }
    if policy.strategy() == Strategy::RolloutRestart
        && !matches!(
            owner.kind.as_str(),
            "Deployment" | "StatefulSet" | "DaemonSet"
        )
    {
        return Err(SkipReason::NotRestartable);
    }
    let zone = node_labels
        .and_then(|l| l.get(&spec.rollout.topology_key))
        .cloned()
        .unwrap_or_default();
    Ok(Target {
        ordinal: ordinal(pod, &owner),
        volumes: mounts_claims(pod),
        leader: index.holds_lease(&ns, &pod.name_any()),
        pdbs: index.pdbs_of(&ns, pod),
        ready: is_ready(pod),
        created: pod
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.as_second()),
        namespace: ns,
        name: pod.name_any(),
        uid: pod.uid().unwrap_or_default(),
        node,
        zone,
        owner,
    })
}

/// Classifies every pod of the cluster.
pub fn select(policy: &ValidPolicy, facts: &ClusterFacts) -> Selection {
    let mut sel = Selection::default();
    let mut index = Index::new(facts);
    for pod in &facts.pods {
        match classify_indexed(policy, facts, &mut index, pod) {
            Ok(t) => sel.targets.push(t),
            Err(r) => sel.skipped.entry(r).or_default().push(format!(
                "{}/{}",
                pod.namespace().unwrap_or_default(),
                pod.name_any()
            )),
        }
    }
    sel.targets
        .sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    sel
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compliance::tests::{pod, policy};
    use std::sync::Arc;

    fn facts(pods: &[&str]) -> ClusterFacts {
        let mut f = ClusterFacts::default();
        for (i, n) in ["n-a", "n-b", "n-c"].iter().enumerate() {
            let zone = ["zone-a", "zone-b", "zone-c"][i];
            let mut l =
                BTreeMap::from([("topology.kubernetes.io/zone".to_string(), zone.to_string())]);
            if i != 2 {
                l.insert("kubearmor.io/enforcer".into(), "apparmor".into());
            }
            f.nodes.insert(n.to_string(), l);
        }
        f.pods = pods.iter().map(|p| Arc::new(pod(p))).collect();
        f
    }

    fn only(policy_yaml: &str, pod_yaml: &str) -> Result<Target, SkipReason> {
        let f = facts(&[pod_yaml]);
        classify(&policy(policy_yaml), &f, &f.pods[0])
    }

    const RS: &str = "ownerReferences: [{apiVersion: apps/v1, kind: ReplicaSet, name: web-abc, uid: u, controller: true}]";

    fn p(extra_meta: &str, spec_extra: &str) -> String {
        format!(
            "metadata: {{name: web-abc-1, namespace: shop, uid: uid-1, labels: {{app: web, pod-template-hash: abc}}, {RS} {extra_meta}}}\nspec: {{nodeName: n-a, containers: [{{name: c}}] {spec_extra}}}\nstatus: {{phase: Running, conditions: [{{type: Ready, status: 'True'}}]}}"
        )
    }

    #[test]
    fn a_plain_deployment_pod_is_a_target() {
        let t = only("{}", &p("", "")).unwrap();
        assert_eq!(t.owner.to_string(), "Deployment/web");
        assert_eq!(t.zone, "zone-a");
        assert_eq!(t.uid, "uid-1");
        assert!(t.ready && !t.volumes && !t.leader && t.ordinal.is_none());
    }

    #[test]
    fn a_profile_name_no_agent_can_load_is_skipped() {
        // 250 + '-' + the pod's name: past the 255 bytes of a file name.
        let long = "profile: {template: 'localhost/xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx-{pod}'}";
        assert_eq!(only(long, &p("", "")), Err(SkipReason::UnloadableProfile));
        // A shorter expansion of the same kind is a target.
        let short = "profile: {template: 'localhost/xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx-{pod}'}";
        assert!(only(short, &p("", "")).is_ok());
    }

    #[test]
    fn every_skip_reason() {
        assert_eq!(
            only(
                "selector: {podSelector: {matchLabels: {app: other}}}",
                &p("", "")
            ),
            Err(SkipReason::NotSelected)
        );
        assert_eq!(
            only(
                "selector: {namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: x}}}",
                &p("", "")
            ),
            Err(SkipReason::NotSelected)
        );
        assert_eq!(
            only("exclude: {namespaces: [shop]}", &p("", "")),
            Err(SkipReason::ExcludedNamespace)
        );
        assert_eq!(
            only(
                "exclude: {podSelector: {matchLabels: {app: web}}}",
                &p("", "")
            ),
            Err(SkipReason::ExcludedBySelector)
        );
        let opted_out =
            p("", "").replace("app: web", "app: web, refresh.armor.dev/exclude: 'true'");
        assert_eq!(only("{}", &opted_out), Err(SkipReason::ExcludedBySelector));
        assert_eq!(
            only("exclude: {ownerKinds: [Deployment]}", &p("", "")),
            Err(SkipReason::ExcludedOwnerKind)
        );
        assert_eq!(
            only(
                "{}",
                &p(", annotations: {kubernetes.io/config.mirror: x}", "")
            ),
            Err(SkipReason::MirrorPod)
        );
        assert_eq!(
            only(
                "{}",
                &p("", "").replace("phase: Running", "phase: Succeeded")
            ),
            Err(SkipReason::Completed)
        );
        assert_eq!(
            only("{}", &p(", deletionTimestamp: '2026-01-01T00:00:00Z'", "")),
            Err(SkipReason::Terminating)
        );
        assert_eq!(
            only("{}", &p("", "").replace("nodeName: n-a, ", "")),
            Err(SkipReason::Unscheduled)
        );
        let enforcing =
            "profile: {enforcingNodeSelector: {matchLabels: {kubearmor.io/enforcer: apparmor}}}";
        assert!(only(enforcing, &p("", "")).is_ok());
        assert_eq!(
            only(enforcing, &p("", "").replace("n-a", "n-c")),
            Err(SkipReason::NodeNotEnforcing)
        );
        assert_eq!(
            only(enforcing, &p("", "").replace("n-a", "n-unknown")),
            Err(SkipReason::NodeNotEnforcing)
        );
        let compliant = p(
            ", annotations: {container.apparmor.security.beta.kubernetes.io/c: localhost/kubearmor-shop-web-c}",
            "",
        );
        assert_eq!(only("{}", &compliant), Err(SkipReason::Compliant));
        let explicit = p(
            ", annotations: {container.apparmor.security.beta.kubernetes.io/c: unconfined}",
            "",
        );
        assert_eq!(only("{}", &explicit), Err(SkipReason::ExplicitProfile));
        let bare = p("", "").replace(RS, "");
        assert_eq!(only("{}", &bare), Err(SkipReason::BarePod));
        assert!(only("selector: {includeBarePods: true}", &bare).is_ok());
        let job = p("", "").replace("kind: ReplicaSet, name: web-abc", "kind: Job, name: j");
        assert_eq!(
            only("rollout: {strategy: RolloutRestart}", &job),
            Err(SkipReason::NotRestartable)
        );
        assert!(only("{}", &job).is_ok());
        // kube-system is excluded by default.
        assert_eq!(
            only(
                "{}",
                &p("", "").replace("namespace: shop", "namespace: kube-system")
            ),
            Err(SkipReason::ExcludedNamespace)
        );
    }

    #[test]
    fn pdb_index_matches_like_a_scan() {
        let pod = "metadata: {name: web-1, namespace: shop, labels: {app: web, tier: front}, ownerReferences: [{apiVersion: apps/v1, kind: ReplicaSet, name: web-1a, uid: r, controller: true}]}\nspec: {nodeName: n-a, containers: [{name: c}]}";
        let mut f = facts(&[pod]);
        for pdb in [
            "metadata: {name: by-label, namespace: shop}\nspec: {selector: {matchLabels: {app: web}}}",
            "metadata: {name: both-labels, namespace: shop}\nspec: {selector: {matchLabels: {tier: front, app: web}}}",
            "metadata: {name: second-label-differs, namespace: shop}\nspec: {selector: {matchLabels: {app: web, tier: back}}}",
            "metadata: {name: expression, namespace: shop}\nspec: {selector: {matchExpressions: [{key: tier, operator: In, values: [front]}]}}",
            "metadata: {name: whole-namespace, namespace: shop}\nspec: {selector: {}}",
            "metadata: {name: no-selector, namespace: shop}\nspec: {}",
            "metadata: {name: other-namespace, namespace: data}\nspec: {selector: {matchLabels: {app: web}}}",
            "metadata: {name: other-app, namespace: shop}\nspec: {selector: {matchLabels: {app: api}}}",
        ] {
            f.pdbs.push(Arc::new(serde_yaml::from_str(pdb).unwrap()));
        }
        let t = classify(&policy("{}"), &f, &f.pods[0]).unwrap();
        assert_eq!(t.pdbs, vec![0, 1, 3, 4]);
    }

    #[test]
    fn stateful_facts() {
        let sts = "metadata: {name: db-2, namespace: data, uid: u2, ownerReferences: [{apiVersion: apps/v1, kind: StatefulSet, name: db, uid: s, controller: true}]}\nspec: {nodeName: n-b, containers: [{name: c}], volumes: [{name: d, persistentVolumeClaim: {claimName: data-db-2}}]}";
        let mut f = facts(&[sts]);
        f.leases.push(Arc::new(
            serde_yaml::from_str(
                "metadata: {name: db-leader, namespace: data}\nspec: {holderIdentity: db-2_4f1c}",
            )
            .unwrap(),
        ));
        f.pdbs.push(Arc::new(
            serde_yaml::from_str("metadata: {name: other, namespace: shop}\nspec: {selector: {}}")
                .unwrap(),
        ));
        f.pdbs.push(Arc::new(
            serde_yaml::from_str("metadata: {name: db, namespace: data}\nspec: {selector: {}}")
                .unwrap(),
        ));
        let t = classify(&policy("{}"), &f, &f.pods[0]).unwrap();
        assert_eq!(t.ordinal, Some(2));
        assert!(t.volumes);
        assert!(t.leader);
        assert_eq!(t.pdbs, vec![1]);
        assert_eq!(t.zone, "zone-b");
        assert!(!t.ready);
    }

    #[test]
    fn selection_counts() {
        let f = facts(&[
            &p("", ""),
            &p("", "")
                .replace("web-abc-1", "web-abc-2")
                .replace("namespace: shop", "namespace: kube-system"),
        ]);
        let s = select(&policy("{}"), &f);
        assert_eq!(s.targets.len(), 1);
        assert_eq!(s.skipped_counts()["ExcludedNamespace"], 1);
        assert_eq!(s.governed(), 1);
        assert_eq!(s.skipped_total(), 1);
    }
}
