//! Target selection: which pods a policy must refresh, and why every other pod is skipped.

use std::collections::{BTreeMap, HashMap, HashSet};

use kube::ResourceExt;
use kube::core::{Selector, SelectorExt};

use crate::api::{InjectAt, KUBEARMOR_APP_LABEL, Strategy};
use crate::cluster::{ClusterFacts, Labels};
use crate::compliance::{self, OPT_OUT_LABEL, Owner};
use crate::pod::LeanPod;
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
    /// A KubeArmor pod (label `kubearmor-app`): refreshing its agent would leave the node
    /// without the only process that loads profiles.
    KubeArmorPod,
    /// A Windows pod: no AppArmor there.
    WindowsPod,
    /// Another policy, earlier by name, selects it: that one decides its profile.
    OtherPolicy,
    /// The namespace's Pod Security level forbids its profile (`unconfined` under baseline
    /// or restricted): the API server would refuse the replacement.
    PodSecurity,
    /// The webhook would not give its replacement the profile (see the policy's
    /// `injectAt`): evicting it would only make another target.
    NotConvergent,
    /// Not Ready for longer than the policy's `readyTimeout`: already disrupted, and
    /// evicting it cannot make it better (it counts against the node and zone limits
    /// instead, and the next run refreshes it once Ready). A pod unready for less is still
    /// starting: a target, evicted once Ready.
    NotReady,
    /// A Job's or CronJob's pod (opt in with `selector.includeJobs`).
    JobPod,
    /// An `OnDelete` StatefulSet or DaemonSet pod older than its workload's template: its
    /// replacement would roll out that staged change (opt in with
    /// `selector.includeStagedRevisions`).
    StagedRevision,
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
            SkipReason::KubeArmorPod => "KubeArmorPod",
            SkipReason::WindowsPod => "WindowsPod",
            SkipReason::OtherPolicy => "OtherPolicy",
            SkipReason::PodSecurity => "PodSecurity",
            SkipReason::NotConvergent => "NotConvergent",
            SkipReason::NotReady => "NotReady",
            SkipReason::JobPod => "JobPod",
            SkipReason::StagedRevision => "StagedRevision",
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
    /// How many pods were skipped, by reason (counts only: a name per pod per pass would
    /// cost an allocation for each of tens of thousands of pods, and nothing reads them).
    pub skipped: BTreeMap<SkipReason, u32>,
    /// Targets but for their readiness (skipped as `NotReady`): disruption that exists
    /// already, counted against the node and zone limits.
    pub unready: Vec<Target>,
}

impl Selection {
    pub fn skipped_counts(&self) -> BTreeMap<String, u32> {
        self.skipped
            .iter()
            .map(|(r, n)| (r.to_string(), *n))
            .collect()
    }
    fn count(&self, r: SkipReason) -> u32 {
        self.skipped.get(&r).copied().unwrap_or(0)
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
            .map(|(_, n)| n)
            .sum()
    }
}

pub fn is_ready(pod: &LeanPod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

pub fn is_terminating(pod: &LeanPod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

fn phase(pod: &LeanPod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

pub fn is_mirror(pod: &LeanPod) -> bool {
    pod.annotations()
        .contains_key("kubernetes.io/config.mirror")
}

fn mounts_claims(pod: &LeanPod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .is_some_and(|vs| {
            vs.iter()
                .any(|v| v.persistent_volume_claim.is_some() || v.ephemeral.is_some())
        })
}

fn ordinal(pod: &LeanPod, owner: &Owner) -> Option<u32> {
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
    namespaces: HashMap<String, std::sync::Arc<Labels>>,
    /// Convergence by pod shape (see `shape`): the pods of one workload on alike nodes share
    /// the answer, so the webhook is simulated once for them, not once per pod.
    converges: HashMap<u64, bool>,
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
            converges: HashMap::new(),
        }
    }

    fn holds_lease(&self, ns: &str, pod: &str) -> bool {
        self.leaders.contains(&(ns, pod))
    }

    /// PDBs (indexes into `facts.pdbs`) that select this pod.
    fn pdbs_of(&self, ns: &str, pod: &LeanPod) -> Vec<usize> {
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

    fn namespace_labels(&mut self, facts: &ClusterFacts, ns: &str) -> std::sync::Arc<Labels> {
        self.namespaces
            .entry(ns.to_string())
            .or_insert_with(|| std::sync::Arc::new(facts.namespace_labels(ns)))
            .clone()
    }
}

/// Does the policy govern this pod at all (selectors and exclusions, before anything about
/// its state, node or profile)? The one answer for the controller and the webhook.
pub fn governs(
    policy: &ValidPolicy,
    pod: &LeanPod,
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
    if labels.contains_key(KUBEARMOR_APP_LABEL) {
        return Err(SkipReason::KubeArmorPod);
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
    pod: &LeanPod,
) -> Result<Target, SkipReason> {
    let all = with_others(policy, facts);
    classify_indexed(policy, facts, &all, &mut Index::new(facts), pod)
}

/// `policy` and every other valid policy: what the webhook chooses among.
fn with_others(policy: &ValidPolicy, facts: &ClusterFacts) -> Vec<ValidPolicy> {
    let mut all: Vec<ValidPolicy> = facts
        .policies
        .iter()
        .filter(|p| p.name != policy.name)
        .cloned()
        .collect();
    all.push(policy.clone());
    all
}

fn classify_indexed(
    policy: &ValidPolicy,
    facts: &ClusterFacts,
    all: &[ValidPolicy],
    index: &mut Index,
    pod: &LeanPod,
) -> Result<Target, SkipReason> {
    let ns = pod.namespace().unwrap_or_default();
    let spec = &policy.spec;
    let owner = compliance::owner_of(pod, Some(facts));
    let ns_labels = index.namespace_labels(facts, &ns);
    governs(policy, pod, &owner, &ns, &ns_labels)?;
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
    if compliance::is_windows(pod) {
        return Err(SkipReason::WindowsPod);
    }
    if facts.unhooked_namespaces.contains(&ns) {
        // The webhook is never called there: a replacement would lack its profile too.
        return Err(SkipReason::NotConvergent);
    }
    if !governs_first(policy, facts, pod, &ns, &ns_labels) {
        return Err(SkipReason::OtherPolicy);
    }
    let node_labels = facts.node_labels(&node);
    // An unknown node (not in the cache yet) is not assumed to enforce.
    if !compliance::node_enforces(policy, node_labels, facts.agents.contains(&node)) {
        return Err(SkipReason::NodeNotEnforcing);
    }
    let verdict = compliance::check(policy, pod, &owner, &ns_labels);
    if verdict.has_unloadable() {
        return Err(SkipReason::UnloadableProfile);
    }
    if verdict.has_forbidden() {
        return Err(SkipReason::PodSecurity);
    }
    if verdict.is_compliant() {
        return Err(if verdict.all_explicit() {
            SkipReason::ExplicitProfile
        } else {
            SkipReason::Compliant
        });
    }
    let key = shape(all, facts, pod, &owner, &ns, &node);
    let converges = match index.converges.get(&key) {
        Some(c) => *c,
        None => {
            let c = replacement_converges(policy, facts, all, pod, &owner, &ns, &ns_labels, &node);
            index.converges.insert(key, c);
            c
        }
    };
    if !converges {
        return Err(SkipReason::NotConvergent);
    }
    if owner.is_bare() && !spec.selector.include_bare_pods {
        return Err(SkipReason::BarePod);
    }
    if owner.kind == "Job" && !spec.selector.include_jobs {
        return Err(SkipReason::JobPod);
    }
    if !spec.selector.include_staged_revisions && staged_revision(facts, pod, &ns, &owner) {
        return Err(SkipReason::StagedRevision);
    }
    if policy.strategy() == Strategy::RolloutRestart && !restartable(facts, &ns, &owner) {
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

/// An unready pod that has been unready for longer than its policy's `readyTimeout` (since
/// its Ready condition last changed, or its creation) is broken, not starting: skipped
/// (`NotReady`). One still starting stays a target, evicted once Ready. Without a clock
/// (facts that carry no time) every unready pod is taken for broken.
fn broken(policy: &ValidPolicy, facts: &ClusterFacts, pod: &LeanPod) -> bool {
    let Some(now) = facts.now else { return true };
    let since = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .and_then(|c| c.last_transition_time.as_ref())
        .or(pod.metadata.creation_timestamp.as_ref())
        .map(|t| t.0.as_second());
    let limit = i64::try_from(policy.ready_timeout.as_secs()).unwrap_or(i64::MAX);
    since.is_none_or(|s| now.timestamp().saturating_sub(s) >= limit)
}

/// Does the pod run an older template of an `OnDelete` StatefulSet or DaemonSet? Recreating
/// it would roll out the new one. StatefulSets: the pod's `controller-revision-hash` against
/// `status.updateRevision`; DaemonSets: its `pod-template-generation` against the
/// `deprecated.daemonset.template.generation` annotation the API server keeps on the
/// DaemonSet (the DaemonSet controller labels pods with it).
fn staged_revision(facts: &ClusterFacts, pod: &LeanPod, ns: &str, owner: &Owner) -> bool {
    let key = (ns.to_string(), owner.name.clone());
    match owner.kind.as_str() {
        "StatefulSet" => facts.statefulsets.get(&key).is_some_and(|sts| {
            let on_delete = sts_on_delete(sts);
            let update = sts
                .status
                .as_ref()
                .and_then(|s| s.update_revision.as_deref());
            let mine = pod
                .labels()
                .get("controller-revision-hash")
                .map(String::as_str);
            on_delete && update.is_some() && mine != update
        }),
        "DaemonSet" => facts.daemonsets.get(&key).is_some_and(|ds| {
            let on_delete = ds_on_delete(ds);
            let current = ds
                .annotations()
                .get("deprecated.daemonset.template.generation")
                .map(String::as_str);
            let mine = pod
                .labels()
                .get("pod-template-generation")
                .map(String::as_str);
            on_delete && current.is_some() && mine != current
        }),
        _ => false,
    }
}

fn sts_on_delete(sts: &k8s_openapi::api::apps::v1::StatefulSet) -> bool {
    let strategy = sts.spec.as_ref().and_then(|s| s.update_strategy.as_ref());
    strategy.and_then(|u| u.type_.as_deref()) == Some("OnDelete")
}

fn ds_on_delete(ds: &k8s_openapi::api::apps::v1::DaemonSet) -> bool {
    let strategy = ds.spec.as_ref().and_then(|s| s.update_strategy.as_ref());
    strategy.and_then(|u| u.type_.as_deref()) == Some("OnDelete")
}

/// Can patching the workload's template restart its pods? Only for `apps/v1` Deployments,
/// StatefulSets and DaemonSets that roll out on their own: not a paused Deployment, not an
/// `OnDelete` or partitioned StatefulSet, not an `OnDelete` DaemonSet (the patch would do
/// nothing and the run would wait on it until its breaker opened).
fn restartable(facts: &ClusterFacts, ns: &str, owner: &Owner) -> bool {
    let key = (ns.to_string(), owner.name.clone());
    match owner.kind.as_str() {
        "Deployment" => facts
            .deployments
            .get(&key)
            .is_none_or(|d| d.spec.as_ref().and_then(|s| s.paused) != Some(true)),
        "StatefulSet" => facts.statefulsets.get(&key).is_none_or(|sts| {
            let partition = sts
                .spec
                .as_ref()
                .and_then(|s| s.update_strategy.as_ref())
                .and_then(|u| u.rolling_update.as_ref())
                .and_then(|r| r.partition)
                .unwrap_or(0);
            !sts_on_delete(sts) && partition <= 0
        }),
        "DaemonSet" => facts
            .daemonsets
            .get(&key)
            .is_none_or(|ds| !ds_on_delete(ds)),
        _ => false,
    }
}

/// Is `policy` the one that governs this pod: the first by name among every policy that
/// selects it (the webhook's rule)?
fn governs_first(
    policy: &ValidPolicy,
    facts: &ClusterFacts,
    pod: &LeanPod,
    ns: &str,
    ns_labels: &Labels,
) -> bool {
    let owner = compliance::owner_of(pod, None);
    !facts
        .policies
        .iter()
        .any(|p| p.name < policy.name && governs(p, pod, &owner, ns, ns_labels).is_ok())
}

/// Everything `replacement_converges` reads, hashed: namespace, owner, labels, containers with
/// their profiles, the AppArmor annotations, the name when a template uses `{pod}`, and
/// whether each policy would inject on the node.
fn shape(
    all: &[ValidPolicy],
    facts: &ClusterFacts,
    pod: &LeanPod,
    owner: &Owner,
    ns: &str,
    node: &str,
) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (ns, owner).hash(&mut h);
    pod.labels().hash(&mut h);
    pod.annotations()
        .iter()
        .filter(|(k, _)| {
            k.starts_with(compliance::ANNOTATION_PREFIX) || *k == compliance::INJECTED_ANNOTATION
        })
        .for_each(|kv| kv.hash(&mut h));
    if let Some(spec) = pod.spec.as_ref() {
        let profile = |c: &crate::pod::LeanContainer| {
            c.security_context
                .as_ref()
                .and_then(|s| s.app_armor_profile.as_ref())
                .map(|a| (a.type_.clone(), a.localhost_profile.clone()))
        };
        for c in spec.init_containers.iter().flatten() {
            (true, &c.name, profile(c)).hash(&mut h);
        }
        for c in &spec.containers {
            (false, &c.name, profile(c)).hash(&mut h);
        }
        spec.security_context
            .as_ref()
            .and_then(|s| s.app_armor_profile.as_ref())
            .map(|a| (&a.type_, &a.localhost_profile))
            .hash(&mut h);
    }
    let by_name = all.iter().any(|p| {
        p.spec.profile.template.contains("{pod}")
            || p.overrides.iter().any(|o| o.profile.contains("{pod}"))
    });
    if by_name || owner.is_bare() {
        pod.metadata.name.hash(&mut h);
    }
    let (labels, agent) = (facts.node_labels(node), facts.agents.contains(node));
    for p in all {
        compliance::node_enforces(p, labels, agent).hash(&mut h);
    }
    h.finish()
}

/// Would the webhook give this pod's replacement the profile `policy` wants? The replacement
/// is the pod without what we injected, unnamed unless its controller names pods (a
/// StatefulSet), created through the webhook and then bound to the same node.
#[allow(clippy::too_many_arguments)]
fn replacement_converges(
    policy: &ValidPolicy,
    facts: &ClusterFacts,
    policies: &[ValidPolicy],
    pod: &LeanPod,
    owner: &Owner,
    ns: &str,
    ns_labels: &Labels,
    node: &str,
) -> bool {
    let mut fresh = pod.clone();
    let injected = compliance::injected_containers(pod);
    if let Some(a) = fresh.metadata.annotations.as_mut() {
        a.remove(compliance::INJECTED_ANNOTATION);
        for c in &injected {
            a.remove(&format!("{}{c}", compliance::ANNOTATION_PREFIX));
        }
    }
    if let Some(spec) = fresh.spec.as_mut() {
        spec.node_name = None;
        for c in spec
            .containers
            .iter_mut()
            .chain(spec.init_containers.iter_mut().flatten())
        {
            if injected.contains(&c.name)
                && let Some(sc) = c.security_context.as_mut()
            {
                sc.app_armor_profile = None;
            }
        }
    }
    let name = fresh.metadata.name.take();
    // A StatefulSet names its pods; a bare pod is not replaced, only deleted.
    if owner.kind == "StatefulSet" || owner.is_bare() {
        fresh.metadata.name = name.clone();
    }
    if let Some(inj) =
        crate::webhook::injection(policies, &fresh, ns, ns_labels, InjectAt::Create, None)
    {
        fresh = crate::webhook::apply_injection(policies, &fresh, &inj);
    }
    // Bound: it has its name now.
    fresh.metadata.name = name;
    let view = crate::webhook::NodeView {
        labels: facts.node_labels(node),
        agent: facts.agents.contains(node),
    };
    if let Some(inj) = crate::webhook::injection(
        policies,
        &fresh,
        ns,
        ns_labels,
        InjectAt::Binding,
        Some(&view),
    ) {
        for (k, v) in crate::webhook::binding_annotations(&inj) {
            fresh.annotations_mut().insert(k, v);
        }
    }
    compliance::check(policy, &fresh, owner, ns_labels).is_compliant()
}

/// Would an automatic run only evict what the previous run already replaced? When every pod
/// that lacks its profile was created while the last run ran (from its creation, by the API
/// server's clock, to its completion plus a second of timestamp resolution), they are that
/// run's replacements: refreshing did not give them the profile, and another run would evict
/// the same workloads forever. Pods created after it (a webhook outage since, a node whose
/// agent started late) still get a run. The answer says why, for the policy's status.
pub fn stalled(targets: &[Target], last_run: Option<(i64, i64)>) -> Option<String> {
    let (from, to) = last_run?;
    let during = targets
        .iter()
        .filter(|t| {
            t.created
                .is_some_and(|c| c >= from && c <= to.saturating_add(1))
        })
        .count();
    (!targets.is_empty() && during == targets.len()).then(|| {
        let first = &targets[0];
        format!(
            "no automatic run: all {during} pods without their profile are replacements made during the last run, e.g. {} ({}); the webhook did not give them their profile (is it reachable, does its configuration skip their namespace?); a manual run still refreshes them",
            first.key(),
            first.owner
        )
    })
}

/// Classifies every pod of the cluster.
pub fn select(policy: &ValidPolicy, facts: &ClusterFacts) -> Selection {
    let mut sel = Selection::default();
    let mut index = Index::new(facts);
    let all = with_others(policy, facts);
    for pod in &facts.pods {
        match classify_indexed(policy, facts, &all, &mut index, pod) {
            Ok(t) if !t.ready && broken(policy, facts, pod) => {
                *sel.skipped.entry(SkipReason::NotReady).or_default() += 1;
                sel.unready.push(t);
            }
            Ok(t) => sel.targets.push(t),
            Err(r) => *sel.skipped.entry(r).or_default() += 1,
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
        // n-a and n-b run a KubeArmor agent; n-d enforces AppArmor but has none.
        f.nodes.insert(
            "n-d".into(),
            [("kubearmor.io/enforcer".to_string(), "apparmor".to_string())].into(),
        );
        f.agents = ["n-a".to_string(), "n-b".to_string()].into();
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
        assert_eq!(only("{}", &job), Err(SkipReason::JobPod));
        assert_eq!(
            only(
                "{selector: {includeJobs: true}, rollout: {strategy: RolloutRestart}}",
                &job
            ),
            Err(SkipReason::NotRestartable)
        );
        assert!(only("selector: {includeJobs: true}", &job).is_ok());
        // The default gates on KubeArmor's rule: an AppArmor node with a Running agent.
        assert!(only("{}", &p("", "")).is_ok());
        assert_eq!(
            only("{}", &p("", "").replace("n-a", "n-d")),
            Err(SkipReason::NodeNotEnforcing),
            "an AppArmor node without an agent loads nothing"
        );
        assert_eq!(
            only("{}", &p("", "").replace("n-a", "n-c")),
            Err(SkipReason::NodeNotEnforcing)
        );
        assert!(
            only(
                "profile: {requireAgent: false}",
                &p("", "").replace("n-a", "n-d")
            )
            .is_ok()
        );
        assert!(
            only(
                "profile: {injectAt: Create}",
                &p("", "").replace("n-a", "n-c")
            )
            .is_ok(),
            "creation-time injection is everywhere, by choice"
        );
        // KubeArmor's own pods, any value of the label.
        let agent = p("", "").replace("app: web", "app: web, kubearmor-app: kubearmor-relay");
        assert_eq!(only("{}", &agent), Err(SkipReason::KubeArmorPod));
        let windows = p("", ", os: {name: windows}");
        assert_eq!(only("{}", &windows), Err(SkipReason::WindowsPod));
        let restricted = p("", "");
        let mut f = facts(&[&restricted]);
        f.namespaces.insert(
            "shop".into(),
            [(
                compliance::PSA_ENFORCE_LABEL.to_string(),
                "baseline".to_string(),
            )]
            .into(),
        );
        assert_eq!(
            classify(&policy("profile: {template: unconfined}"), &f, &f.pods[0]),
            Err(SkipReason::PodSecurity)
        );
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
    fn an_automatic_trigger_stops_when_only_replacements_lack_their_profile() {
        let f = facts(&[&p(", creationTimestamp: '2026-01-01T00:10:00Z'", "")]);
        let t = select(&policy("{}"), &f).targets;
        assert_eq!(t.len(), 1);
        let at = |s: &str| chrono::DateTime::parse_from_rfc3339(s).unwrap().timestamp();
        let run = |from: &str, to: &str| Some((at(from), at(to)));
        // Never run before, or the pod predates the last run: refresh.
        assert_eq!(stalled(&t, None), None);
        assert_eq!(
            stalled(&t, run("2026-01-01T00:20:00Z", "2026-01-01T00:30:00Z")),
            None
        );
        // Created while the last run ran: that run's replacement still lacks its profile.
        let why = stalled(&t, run("2026-01-01T00:05:00Z", "2026-01-01T00:10:00Z")).unwrap();
        assert!(why.contains("shop/web-abc-1"), "{why}");
        // Created after the last run completed (a webhook outage since, an agent that came up
        // late): a new run refreshes it.
        assert_eq!(
            stalled(&t, run("2026-01-01T00:01:00Z", "2026-01-01T00:05:00Z")),
            None
        );
        assert_eq!(
            stalled(&[], run("2026-01-01T00:05:00Z", "2026-01-01T00:10:00Z")),
            None
        );
    }

    #[test]
    fn two_policies_never_fight_over_one_pod() {
        let mut f = facts(&[&p("", "")]);
        let mut a = policy("profile: {template: localhost/a}");
        a.name = "a".into();
        let mut b = policy("profile: {template: localhost/b}");
        b.name = "b".into();
        f.policies = vec![a.clone(), b.clone()];
        // The webhook gives the pod a's profile (first by name): b would evict it forever.
        assert!(classify(&a, &f, &f.pods[0]).is_ok());
        assert_eq!(classify(&b, &f, &f.pods[0]), Err(SkipReason::OtherPolicy));
        // When a does not select the pod, b governs it.
        let mut a2 = policy("selector: {podSelector: {matchLabels: {app: other}}}");
        a2.name = "a".into();
        f.policies = vec![a2, b.clone()];
        assert!(classify(&b, &f, &f.pods[0]).is_ok());
    }

    #[test]
    fn a_pod_whose_replacement_would_not_get_the_profile_is_not_a_target() {
        // A ReplicaSet that no Deployment owns: the controller names the owner after the
        // ReplicaSet, while the webhook (which sees only the pod) trims the hash as KubeArmor
        // does. The replacement would carry another name: evicting it would loop.
        let mut f = facts(&[&p("", "")]);
        f.replicasets.insert(
            ("shop".into(), "web-abc".into()),
            Arc::new(serde_saphyr::from_str("metadata: {name: web-abc, namespace: shop}").unwrap()),
        );
        assert_eq!(
            classify(&policy("{}"), &f, &f.pods[0]),
            Err(SkipReason::NotConvergent)
        );
        // A namespace the webhook configuration skips never converges either.
        let mut f2 = facts(&[&p("", "")]);
        f2.unhooked_namespaces.insert("shop".into());
        assert_eq!(
            classify(&policy("{}"), &f2, &f2.pods[0]),
            Err(SkipReason::NotConvergent)
        );
        // A template that does not name the owner converges.
        assert!(
            classify(
                &policy("profile: {template: runtime/default}"),
                &f,
                &f.pods[0]
            )
            .is_ok()
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
            f.pdbs.push(Arc::new(serde_saphyr::from_str(pdb).unwrap()));
        }
        let t = classify(&policy("{}"), &f, &f.pods[0]).unwrap();
        assert_eq!(t.pdbs, vec![0, 1, 3, 4]);
    }

    #[test]
    fn stateful_facts() {
        let sts = "metadata: {name: db-2, namespace: data, uid: u2, ownerReferences: [{apiVersion: apps/v1, kind: StatefulSet, name: db, uid: s, controller: true}]}\nspec: {nodeName: n-b, containers: [{name: c}], volumes: [{name: d, persistentVolumeClaim: {claimName: data-db-2}}]}";
        let mut f = facts(&[sts]);
        f.leases.push(Arc::new(
            serde_saphyr::from_str(
                "metadata: {name: db-leader, namespace: data}\nspec: {holderIdentity: db-2_4f1c}",
            )
            .unwrap(),
        ));
        f.pdbs.push(Arc::new(
            serde_saphyr::from_str(
                "metadata: {name: other, namespace: shop}\nspec: {selector: {}}",
            )
            .unwrap(),
        ));
        f.pdbs.push(Arc::new(
            serde_saphyr::from_str("metadata: {name: db, namespace: data}\nspec: {selector: {}}")
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

    fn sts_pod(revision: &str) -> String {
        format!(
            "metadata: {{name: db-0, namespace: shop, uid: uid-db0, labels: {{controller-revision-hash: {revision}}}, ownerReferences: [{{apiVersion: apps/v1, kind: StatefulSet, name: db, uid: s, controller: true}}]}}\nspec: {{nodeName: n-a, containers: [{{name: c}}]}}\nstatus: {{phase: Running, conditions: [{{type: Ready, status: 'True'}}]}}"
        )
    }

    fn with_sts(f: &mut ClusterFacts, strategy: &str) {
        let sts: k8s_openapi::api::apps::v1::StatefulSet = serde_saphyr::from_str(&format!(
            "metadata: {{name: db, namespace: shop}}\nspec: {{replicas: 1, selector: {{}}, serviceName: db, template: {{}}, updateStrategy: {strategy}}}\nstatus: {{replicas: 1, currentRevision: db-1, updateRevision: db-2}}"
        ))
        .unwrap();
        f.statefulsets
            .insert(("shop".into(), "db".into()), Arc::new(sts));
    }

    #[test]
    fn an_on_delete_statefulset_with_a_staged_template_is_left_alone() {
        let classify_with = |strategy: &str, revision: &str, policy_yaml: &str| {
            let pod = sts_pod(revision);
            let mut f = facts(&[pod.as_str()]);
            with_sts(&mut f, strategy);
            classify(&policy(policy_yaml), &f, &f.pods[0])
        };
        // Staged: the pod runs db-1, the template is db-2, and only deletion rolls it out.
        assert_eq!(
            classify_with("{type: OnDelete}", "db-1", "{}"),
            Err(SkipReason::StagedRevision)
        );
        assert!(
            classify_with(
                "{type: OnDelete}",
                "db-1",
                "selector: {includeStagedRevisions: true}"
            )
            .is_ok()
        );
        // Nothing staged, or a strategy that rolls out anyway: a target.
        assert!(classify_with("{type: OnDelete}", "db-2", "{}").is_ok());
        assert!(classify_with("{type: RollingUpdate}", "db-1", "{}").is_ok());
        // RolloutRestart cannot restart OnDelete or partitioned sets: the patch would do nothing.
        let restart = "rollout: {strategy: RolloutRestart}";
        assert_eq!(
            classify_with("{type: OnDelete}", "db-2", restart),
            Err(SkipReason::NotRestartable)
        );
        assert_eq!(
            classify_with(
                "{type: RollingUpdate, rollingUpdate: {partition: 1}}",
                "db-2",
                restart
            ),
            Err(SkipReason::NotRestartable)
        );
        assert!(classify_with("{type: RollingUpdate}", "db-2", restart).is_ok());
    }

    #[test]
    fn a_statefulset_of_another_api_group_is_not_taken_for_an_apps_one() {
        let pod =
            sts_pod("db-2").replace("apiVersion: apps/v1", "apiVersion: apps.kruise.io/v1beta1");
        let mut f = facts(&[pod.as_str()]);
        with_sts(&mut f, "{type: OnDelete}");
        let t = classify(&policy("{}"), &f, &f.pods[0]).unwrap();
        assert_eq!(t.owner.kind, "StatefulSet.apps.kruise.io");
        assert_eq!(t.ordinal, None, "no apps/v1 ordering rules");
        assert_eq!(
            classify(
                &policy("rollout: {strategy: RolloutRestart}"),
                &f,
                &f.pods[0]
            ),
            Err(SkipReason::NotRestartable),
            "a restart would patch apps/v1"
        );
    }

    #[test]
    fn an_unready_pod_is_awaited_while_starting_and_skipped_once_broken() {
        let unready = p(", creationTimestamp: '2026-03-02T10:00:00Z'", "")
            .replace("status: 'True'", "status: 'False'");
        let mut f = facts(&[unready.as_str()]);
        let pol = policy("rollout: {readyTimeout: 60s}");
        let at = |s: &str| {
            Some(
                chrono::DateTime::parse_from_rfc3339(s)
                    .unwrap()
                    .with_timezone(&chrono::Utc),
            )
        };
        f.now = at("2026-03-02T10:00:30Z");
        let sel = select(&pol, &f);
        assert_eq!(sel.targets.len(), 1, "still starting: a target");
        assert!(!sel.targets[0].ready);
        f.now = at("2026-03-02T10:01:00Z");
        let sel = select(&pol, &f);
        assert!(
            sel.targets.is_empty(),
            "unready for the whole readyTimeout: broken"
        );
        assert_eq!(sel.skipped_counts()["NotReady"], 1);
    }

    /// A pod long Running that turned unready a moment ago is starting again, not broken: the
    /// clock runs from its Ready condition's last transition, which the cache keeps.
    #[test]
    fn a_pod_that_just_turned_unready_is_not_broken_as_the_cache_keeps_it() {
        let unready = p(", creationTimestamp: '2026-03-02T09:00:00Z'", "").replace(
            "{type: Ready, status: 'True'}",
            "{type: Ready, status: 'False', lastTransitionTime: '2026-03-02T10:00:00Z'}",
        );
        let mut f = facts(&[unready.as_str()]);
        f.pods = f
            .pods
            .iter()
            .map(|p| {
                let mut p = (**p).clone();
                p.strip();
                std::sync::Arc::new(p)
            })
            .collect();
        f.now = Some(
            chrono::DateTime::parse_from_rfc3339("2026-03-02T10:00:30Z")
                .unwrap()
                .with_timezone(&chrono::Utc),
        );
        let sel = select(&policy("rollout: {readyTimeout: 60s}"), &f);
        assert_eq!(
            sel.targets.len(),
            1,
            "unready for 30 s of 60: still a target"
        );
        assert!(!sel.targets[0].ready);
    }

    #[test]
    fn an_unready_pod_is_skipped_and_remembered_for_the_limits() {
        let unready = p("", "").replace("status: 'True'", "status: 'False'");
        let f = facts(&[unready.as_str()]);
        let sel = select(&policy("{}"), &f);
        assert!(sel.targets.is_empty());
        assert_eq!(sel.skipped_counts()["NotReady"], 1);
        assert_eq!(sel.unready.len(), 1);
        assert_eq!(sel.unready[0].node, "n-a");
    }
}
