//! The one answer to "which profile must this container carry, and does it?", shared by
//! the webhook (what to inject) and the controller (what to refresh).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::AppArmorProfile;
use kube::ResourceExt;
use kube::core::SelectorExt;

use crate::api::ProfileFormat;
use crate::cluster::ClusterFacts;
use crate::pod::{LeanContainer, LeanPod};
use crate::policy::ValidPolicy;

/// Annotation prefix of the (beta, still honoured) annotation form.
pub const ANNOTATION_PREFIX: &str = "container.apparmor.security.beta.kubernetes.io/";
/// Set by the webhook on pods it injected: the containers whose profile it wrote
/// (comma-separated). A profile on a container not listed here was set by the user and is respected.
pub const INJECTED_ANNOTATION: &str = "refresh.armor.dev/injected";
/// The label that opts a pod out of every policy, whatever the policy's own exclusions.
pub const OPT_OUT_LABEL: &str = "refresh.armor.dev/exclude";

type Labels = BTreeMap<String, String>;

/// An AppArmor profile.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Profile {
    RuntimeDefault,
    Unconfined,
    Localhost(String),
}

impl Profile {
    /// Parses the annotation form (`runtime/default`, `unconfined`, `localhost/<name>`).
    pub fn parse(s: &str) -> Option<Profile> {
        match s {
            "runtime/default" => Some(Profile::RuntimeDefault),
            "unconfined" => Some(Profile::Unconfined),
            _ => s
                .strip_prefix("localhost/")
                .filter(|n| !n.is_empty())
                .map(|n| Profile::Localhost(n.to_string())),
        }
    }

    /// From the field form.
    pub fn from_field(f: &AppArmorProfile) -> Option<Profile> {
        match f.type_.as_str() {
            "RuntimeDefault" => Some(Profile::RuntimeDefault),
            "Unconfined" => Some(Profile::Unconfined),
            "Localhost" => f
                .localhost_profile
                .clone()
                .filter(|n| !n.is_empty())
                .map(Profile::Localhost),
            _ => None,
        }
    }

    /// Can KubeArmor's agent load it? It stores each `localhost/` profile as a file named
    /// after it (`RegisterAppArmorProfile` refuses `/`, `\\` and `..`; a file name has at most
    /// 255 bytes). The runtime's own always load.
    pub fn is_loadable(&self) -> bool {
        match self {
            Profile::Localhost(n) => {
                n.len() <= 255 && !n.contains('/') && !n.contains('\\') && !n.contains("..")
            }
            Profile::RuntimeDefault | Profile::Unconfined => true,
        }
    }

    /// The annotation value.
    pub fn annotation(&self) -> String {
        match self {
            Profile::RuntimeDefault => "runtime/default".to_string(),
            Profile::Unconfined => "unconfined".to_string(),
            Profile::Localhost(n) => format!("localhost/{n}"),
        }
    }

    /// The field value.
    pub fn field(&self) -> AppArmorProfile {
        match self {
            Profile::RuntimeDefault => AppArmorProfile {
                type_: "RuntimeDefault".into(),
                localhost_profile: None,
            },
            Profile::Unconfined => AppArmorProfile {
                type_: "Unconfined".into(),
                localhost_profile: None,
            },
            Profile::Localhost(n) => AppArmorProfile {
                type_: "Localhost".into(),
                localhost_profile: Some(n.clone()),
            },
        }
    }
}

impl std::fmt::Display for Profile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.annotation())
    }
}

/// The workload that owns a pod.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Owner {
    /// `Deployment`, `StatefulSet`, `DaemonSet`, `ReplicaSet`, `Job`, ... or `Pod` for a bare pod.
    pub kind: String,
    pub name: String,
}

impl Owner {
    pub fn is_bare(&self) -> bool {
        self.kind == "Pod"
    }
}

impl std::fmt::Display for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.kind, self.name)
    }
}

/// The controlling workload of a pod. A ReplicaSet is resolved to its Deployment: through
/// the ReplicaSet object when `facts` has it, else by trimming the `pod-template-hash`
/// suffix (what KubeArmor does). A pod without a controller owns itself.
pub fn owner_of(pod: &LeanPod, facts: Option<&ClusterFacts>) -> Owner {
    let ctrl = pod
        .owner_references()
        .iter()
        .find(|o| o.controller == Some(true));
    let Some(ctrl) = ctrl else {
        let name = if pod.metadata.name.as_deref().unwrap_or_default().is_empty() {
            // At admission a bare pod may only have generateName.
            pod.metadata
                .generate_name
                .clone()
                .unwrap_or_default()
                .trim_end_matches('-')
                .to_string()
        } else {
            pod.name_any()
        };
        return Owner {
            kind: "Pod".into(),
            name,
        };
    };
    // A kind is only what it says within its API group: an OpenKruise StatefulSet
    // (apps.kruise.io) neither orders nor restarts like an apps/v1 one, so its group stays
    // in its kind.
    let group = ctrl.api_version.split_once('/').map_or("", |(g, _)| g);
    if !matches!(group, "" | "apps" | "batch") {
        return Owner {
            kind: format!("{}.{group}", ctrl.kind),
            name: ctrl.name.clone(),
        };
    }
    if ctrl.kind == "ReplicaSet" {
        let ns = pod.namespace().unwrap_or_default();
        if let Some(rs) = facts.and_then(|f| f.replicasets.get(&(ns, ctrl.name.clone()))) {
            if let Some(d) = rs
                .owner_references()
                .iter()
                .find(|o| o.controller == Some(true) && o.kind == "Deployment")
            {
                return Owner {
                    kind: "Deployment".into(),
                    name: d.name.clone(),
                };
            }
            return Owner {
                kind: "ReplicaSet".into(),
                name: ctrl.name.clone(),
            };
        }
        if let Some(hash) = pod.labels().get("pod-template-hash") {
            if let Some(dep) = ctrl.name.strip_suffix(&format!("-{hash}")) {
                return Owner {
                    kind: "Deployment".into(),
                    name: dep.to_string(),
                };
            }
        }
    }
    Owner {
        kind: ctrl.kind.clone(),
        name: ctrl.name.clone(),
    }
}

/// Fills a template's placeholders: each in turn, `{namespace}` first. It runs for every
/// container of every pod on every pass, so it scans once when that gives the same: when
/// every `{` opens a known placeholder (validation makes it so) and no value holds a brace
/// (Kubernetes names never do, but an owner reference's kind and name are not checked).
fn expand(template: &str, ns: &str, owner: &Owner, pod: &str, container: &str) -> String {
    let in_turn = || expand_in_turn(template, ns, owner, pod, container);
    if [ns, &owner.kind, &owner.name, pod, container]
        .iter()
        .any(|v| v.contains('{'))
    {
        return in_turn();
    }
    let mut out = String::with_capacity(template.len() + 64);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let tail = &rest[open..];
        let Some(close) = tail.find('}') else {
            return in_turn();
        };
        match &tail[1..close] {
            "namespace" => out.push_str(ns),
            "ownerKind" => out.push_str(&owner.kind.to_lowercase()),
            "owner" => out.push_str(&owner.name),
            "pod" => out.push_str(pod),
            "container" => out.push_str(container),
            _ => return in_turn(),
        }
        rest = &tail[close + 1..];
    }
    out.push_str(rest);
    out
}

/// The definition of [`expand`]: each placeholder replaced in turn.
fn expand_in_turn(template: &str, ns: &str, owner: &Owner, pod: &str, container: &str) -> String {
    template
        .replace("{namespace}", ns)
        .replace("{ownerKind}", &owner.kind.to_lowercase())
        .replace("{owner}", &owner.name)
        .replace("{pod}", pod)
        .replace("{container}", container)
}

/// A container and the profile it must carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    pub container: String,
    pub init: bool,
    pub profile: Profile,
}

fn all_containers(pod: &LeanPod) -> impl Iterator<Item = (&LeanContainer, bool)> {
    let spec = pod.spec.as_ref();
    let init = spec
        .and_then(|s| s.init_containers.as_ref())
        .into_iter()
        .flatten()
        .map(|c| (c, true));
    let main = spec
        .map(|s| s.containers.iter())
        .into_iter()
        .flatten()
        .map(|c| (c, false));
    init.chain(main)
}

/// The profile each container must carry under `policy`: regular containers, and init
/// containers when the policy includes them.
pub fn desired_profiles(
    policy: &ValidPolicy,
    pod: &LeanPod,
    owner: &Owner,
    ns_labels: &Labels,
) -> Vec<Desired> {
    let ns = pod.namespace().unwrap_or_default();
    let pod_name = pod.metadata.name.clone().unwrap_or_default();
    let labels = pod.labels();
    all_containers(pod)
        .filter(|(_, init)| !init || policy.spec.profile.include_init_containers)
        .map(|(c, init)| {
            let template = policy
                .overrides
                .iter()
                .find(|o| {
                    o.pod_selector.matches(labels)
                        && o.namespace_selector
                            .as_ref()
                            .is_none_or(|s| s.matches(ns_labels))
                        && (o.containers.is_empty() || o.containers.contains(&c.name))
                })
                .map_or(policy.spec.profile.template.as_str(), |o| {
                    o.profile.as_str()
                });
            let text = expand(template, &ns, owner, &pod_name, &c.name);
            // Templates are validated, so this only falls back on a value that cannot occur.
            let profile = Profile::parse(&text).unwrap_or(Profile::Localhost(text));
            Desired {
                container: c.name.clone(),
                init,
                profile,
            }
        })
        .collect()
}

/// The profiles a container carries now.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Current {
    pub annotation: Option<Profile>,
    pub field: Option<Profile>,
}

/// Reads a container's current profile: the annotation, and the field (the container's own,
/// else the pod's).
pub fn current_profile(pod: &LeanPod, container: &str) -> Current {
    let annotation = pod
        .annotations()
        .get(&format!("{ANNOTATION_PREFIX}{container}"))
        .and_then(|v| Profile::parse(v));
    let field = all_containers(pod)
        .find(|(c, _)| c.name == container)
        .and_then(|(c, _)| {
            c.security_context
                .as_ref()
                .and_then(|s| s.app_armor_profile.as_ref())
        })
        .or_else(|| {
            pod.spec
                .as_ref()?
                .security_context
                .as_ref()?
                .app_armor_profile
                .as_ref()
        })
        .and_then(Profile::from_field);
    Current { annotation, field }
}

/// One container's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContainerVerdict {
    /// Carries the desired profile in the policy's format.
    Compliant,
    /// Carries a profile the user set (not by us): respected.
    Explicit,
    /// Lacks the desired profile (or carries one we injected under an older policy).
    Missing,
    /// Lacks it, and its name cannot be loaded (a template expanded past 255 bytes): never
    /// injected, since the container could never start; its pod is not a target.
    Unloadable,
    /// Lacks it, and the namespace's Pod Security level forbids it (`unconfined` under
    /// baseline or restricted): the API server would refuse the pod. Never injected.
    Forbidden,
}

/// The verdict for a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compliance {
    pub containers: Vec<(String, ContainerVerdict)>,
}

impl Compliance {
    /// Every container carries its profile or one the user chose.
    pub fn is_compliant(&self) -> bool {
        self.containers
            .iter()
            .all(|(_, v)| matches!(v, ContainerVerdict::Compliant | ContainerVerdict::Explicit))
    }
    /// Some container would need a profile no agent can load.
    pub fn has_unloadable(&self) -> bool {
        self.containers
            .iter()
            .any(|(_, v)| *v == ContainerVerdict::Unloadable)
    }
    /// Some container would need a profile the namespace's Pod Security level forbids.
    pub fn has_forbidden(&self) -> bool {
        self.containers
            .iter()
            .any(|(_, v)| *v == ContainerVerdict::Forbidden)
    }
    /// Every container carries a profile the user chose (none of ours).
    pub fn all_explicit(&self) -> bool {
        !self.containers.is_empty()
            && self
                .containers
                .iter()
                .all(|(_, v)| *v == ContainerVerdict::Explicit)
    }
}

/// Which containers the webhook wrote profiles for.
pub fn injected_containers(pod: &LeanPod) -> Vec<String> {
    pod.annotations()
        .get(INJECTED_ANNOTATION)
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

/// Does `current` satisfy `desired` in `format`? KubeArmor's webhook rewrites an annotation
/// `runtime/default` to `localhost/default` (`AppArmorAnnotator` keeps the part after '/'), and
/// its agent then loads a profile named `default`: both count as `runtime/default`, or the two
/// webhooks would undo each other on every pod.
pub fn satisfies(current: &Current, desired: &Profile, format: ProfileFormat) -> bool {
    let a = current.annotation.as_ref() == Some(desired)
        || (*desired == Profile::RuntimeDefault
            && current.annotation == Some(Profile::Localhost("default".into())));
    let f = current.field.as_ref() == Some(desired);
    match format {
        ProfileFormat::Annotation => a,
        ProfileFormat::Field => f,
        ProfileFormat::Both => a && f,
    }
}

/// The Pod Security Admission label that sets a namespace's enforced level.
pub const PSA_ENFORCE_LABEL: &str = "pod-security.kubernetes.io/enforce";

/// Does the namespace's enforced Pod Security level refuse an `unconfined` AppArmor profile?
/// Baseline allows only the runtime's default and `localhost/` profiles, and restricted
/// includes baseline.
pub fn forbids_unconfined(ns_labels: &Labels) -> bool {
    ns_labels
        .get(PSA_ENFORCE_LABEL)
        .is_some_and(|l| l == "baseline" || l == "restricted")
}

/// A pod for Windows (`spec.os.name: windows`): AppArmor does not exist there, and the API
/// server refuses an AppArmor field on it.
pub fn is_windows(pod: &LeanPod) -> bool {
    let Some(spec) = pod.spec.as_ref() else {
        return false;
    };
    spec.os.as_ref().is_some_and(|os| os.name == "windows")
        || spec
            .node_selector
            .as_ref()
            .and_then(|s| s.get(OS_LABEL))
            .is_some_and(|os| os == "windows")
}

/// The node label of the operating system.
pub const OS_LABEL: &str = "kubernetes.io/os";

/// Does a node load this policy's profiles? It must match the policy's enforcing-node
/// selector (unknown nodes do not) and, when the policy requires it, run a KubeArmor agent.
/// A policy that injects at creation gates on nothing.
pub fn node_enforces(policy: &ValidPolicy, node_labels: Option<&Labels>, agent: bool) -> bool {
    let labelled = match &policy.enforcing_nodes {
        None => true,
        Some(sel) => node_labels.is_some_and(|l| sel.matches(l)),
    };
    // A Windows node has no AppArmor, whatever else it is labelled.
    let linux = node_labels
        .and_then(|l| l.get(OS_LABEL))
        .is_none_or(|os| os == "linux");
    labelled && linux && (agent || !policy.require_agent)
}

/// Is this pod compliant with `policy`? The single source of truth for webhook and controller.
pub fn check(policy: &ValidPolicy, pod: &LeanPod, owner: &Owner, ns_labels: &Labels) -> Compliance {
    check_desired(
        policy,
        pod,
        &desired_profiles(policy, pod, owner, ns_labels),
        ns_labels,
    )
}

/// [`check`] against profiles already computed with [`desired_profiles`] (the webhook needs
/// both, and computes them once).
pub fn check_desired(
    policy: &ValidPolicy,
    pod: &LeanPod,
    desired: &[Desired],
    ns_labels: &Labels,
) -> Compliance {
    let injected = injected_containers(pod);
    let containers = desired
        .iter()
        .map(|d| {
            let cur = current_profile(pod, &d.container);
            let verdict = if satisfies(&cur, &d.profile, policy.format()) {
                ContainerVerdict::Compliant
            } else if (cur.annotation.is_some() || cur.field.is_some())
                && !injected.contains(&d.container)
            {
                ContainerVerdict::Explicit
            } else if !d.profile.is_loadable() {
                ContainerVerdict::Unloadable
            } else if d.profile == Profile::Unconfined && forbids_unconfined(ns_labels) {
                ContainerVerdict::Forbidden
            } else {
                ContainerVerdict::Missing
            };
            (d.container.clone(), verdict)
        })
        .collect();
    Compliance { containers }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::policy::validate;

    pub fn pod(yaml: &str) -> LeanPod {
        serde_saphyr::from_str(yaml).unwrap()
    }

    pub fn policy(yaml: &str) -> ValidPolicy {
        validate("p", &serde_saphyr::from_str(yaml).unwrap()).unwrap()
    }

    const DEPLOY_POD: &str = r#"
metadata:
  name: web-7d9f8b6c5d-x2x4q
  namespace: shop
  labels: {app: web, pod-template-hash: 7d9f8b6c5d}
  ownerReferences: [{apiVersion: apps/v1, kind: ReplicaSet, name: web-7d9f8b6c5d, uid: u1, controller: true}]
spec:
  initContainers: [{name: init}]
  containers: [{name: app}, {name: sidecar}]
"#;

    #[test]
    fn owner_resolution() {
        let p = pod(DEPLOY_POD);
        assert_eq!(
            owner_of(&p, None),
            Owner {
                kind: "Deployment".into(),
                name: "web".into()
            }
        );
        let sts = pod(
            "metadata: {name: db-2, namespace: x, ownerReferences: [{apiVersion: apps/v1, kind: StatefulSet, name: db, uid: u, controller: true}]}",
        );
        assert_eq!(
            owner_of(&sts, None),
            Owner {
                kind: "StatefulSet".into(),
                name: "db".into()
            }
        );
        let bare = pod("metadata: {name: solo, namespace: x}");
        assert_eq!(
            owner_of(&bare, None),
            Owner {
                kind: "Pod".into(),
                name: "solo".into()
            }
        );
        let generated = pod("metadata: {generateName: solo-, namespace: x}");
        assert_eq!(owner_of(&generated, None).name, "solo");
        // A ReplicaSet of no Deployment, known from facts, stays a ReplicaSet.
        let mut facts = ClusterFacts::default();
        facts.replicasets.insert(
            ("shop".into(), "web-7d9f8b6c5d".into()),
            std::sync::Arc::new(
                serde_saphyr::from_str("metadata: {name: web-7d9f8b6c5d, namespace: shop}")
                    .unwrap(),
            ),
        );
        assert_eq!(owner_of(&p, Some(&facts)).kind, "ReplicaSet");
        // A non-controller owner reference does not count.
        let p2 = pod(
            "metadata: {name: a, namespace: x, ownerReferences: [{apiVersion: v1, kind: Foo, name: f, uid: u}]}",
        );
        assert!(owner_of(&p2, None).is_bare());
    }

    #[test]
    fn kubearmor_naming_skips_init_containers_unless_asked() {
        let p = pod(DEPLOY_POD);
        let o = owner_of(&p, None);
        let names = |pol: &ValidPolicy| -> Vec<(String, bool, String)> {
            desired_profiles(pol, &p, &o, &Labels::new())
                .iter()
                .map(|d| (d.container.clone(), d.init, d.profile.annotation()))
                .collect()
        };
        let regular = vec![
            (
                "app".into(),
                false,
                "localhost/kubearmor-shop-web-app".into(),
            ),
            (
                "sidecar".into(),
                false,
                "localhost/kubearmor-shop-web-sidecar".into(),
            ),
        ];
        // KubeArmor annotates regular containers only (AppArmorAnnotator walks Spec.Containers).
        assert_eq!(names(&policy("{}")), regular);
        let mut all = vec![(
            "init".to_string(),
            true,
            "localhost/kubearmor-shop-web-init".to_string(),
        )];
        all.extend(regular);
        assert_eq!(
            names(&policy("profile: {includeInitContainers: true}")),
            all
        );
        // An init container without its profile does not make the pod a target by default.
        let annotated = pod(r#"
metadata:
  name: web-1
  namespace: shop
  annotations:
    container.apparmor.security.beta.kubernetes.io/app: localhost/kubearmor-shop-web-app
    container.apparmor.security.beta.kubernetes.io/sidecar: localhost/kubearmor-shop-web-sidecar
  labels: {app: web, pod-template-hash: 7d9f8b6c5d}
  ownerReferences: [{apiVersion: apps/v1, kind: ReplicaSet, name: web-7d9f8b6c5d, uid: u1, controller: true}]
spec:
  initContainers: [{name: init}]
  containers: [{name: app}, {name: sidecar}]
"#);
        assert!(check(&policy("{}"), &annotated, &o, &Labels::new()).is_compliant());
        assert!(
            !check(
                &policy("profile: {includeInitContainers: true}"),
                &annotated,
                &o,
                &Labels::new()
            )
            .is_compliant()
        );
    }

    #[test]
    fn kubearmors_localhost_default_counts_as_runtime_default() {
        // KubeArmor's webhook rewrites `runtime/default` to `localhost/default`.
        let pol = policy("profile: {template: runtime/default}");
        let p = pod(r#"
metadata:
  name: a
  namespace: ns
  annotations:
    container.apparmor.security.beta.kubernetes.io/c: localhost/default
    refresh.armor.dev/injected: c
spec: {containers: [{name: c}]}
"#);
        let o = owner_of(&p, None);
        assert!(check(&pol, &p, &o, &Labels::new()).is_compliant());
        // Not the other way round: a policy that wants localhost/other is not satisfied.
        let pol = policy("profile: {template: localhost/other}");
        assert!(!check(&pol, &p, &o, &Labels::new()).is_compliant());
    }

    #[test]
    fn unconfined_under_baseline_or_restricted_is_forbidden() {
        let pol = policy("profile: {template: unconfined}");
        let p = pod("metadata: {name: a, namespace: ns}\nspec: {containers: [{name: c}]}");
        let o = owner_of(&p, None);
        for (level, forbidden) in [
            ("privileged", false),
            ("baseline", true),
            ("restricted", true),
        ] {
            let ns: Labels = [(PSA_ENFORCE_LABEL.to_string(), level.to_string())].into();
            let v = check(&pol, &p, &o, &ns);
            assert_eq!(v.has_forbidden(), forbidden, "{level}");
            assert!(!v.is_compliant());
        }
        // A localhost profile is allowed at every level.
        let ns: Labels = [(PSA_ENFORCE_LABEL.to_string(), "restricted".to_string())].into();
        assert!(!check(&policy("{}"), &p, &o, &ns).has_forbidden());
    }

    #[test]
    fn overrides_first_match_wins() {
        let pol = policy(
            r#"
profile:
  overrides:
  - {podSelector: {matchLabels: {app: web}}, containers: [sidecar], profile: unconfined}
  - {podSelector: {matchLabels: {app: web}}, profile: runtime/default}
  - {podSelector: {}, profile: "localhost/never"}
"#,
        );
        let p = pod(DEPLOY_POD);
        let d = desired_profiles(&pol, &p, &owner_of(&p, None), &Labels::new());
        assert_eq!(d[0].profile, Profile::RuntimeDefault);
        assert_eq!(d[1].profile, Profile::Unconfined);
        // Namespace-scoped override.
        let pol = policy(
            "profile: {overrides: [{podSelector: {}, namespaceSelector: {matchLabels: {tier: infra}}, profile: unconfined}]}",
        );
        let infra: Labels = [("tier".to_string(), "infra".to_string())].into();
        assert_eq!(
            desired_profiles(&pol, &p, &owner_of(&p, None), &infra)[0].profile,
            Profile::Unconfined
        );
        assert_ne!(
            desired_profiles(&pol, &p, &owner_of(&p, None), &Labels::new())[0].profile,
            Profile::Unconfined
        );
    }

    #[test]
    fn compliance_by_format() {
        let annotated = pod(r#"
metadata:
  name: a
  namespace: ns
  annotations:
    container.apparmor.security.beta.kubernetes.io/c: localhost/kubearmor-ns-a-c
    refresh.armor.dev/injected: c
spec: {containers: [{name: c}]}
"#);
        let fielded = pod(r#"
metadata: {name: a, namespace: ns, annotations: {refresh.armor.dev/injected: c}}
spec: {containers: [{name: c, securityContext: {appArmorProfile: {type: Localhost, localhostProfile: kubearmor-ns-a-c}}}]}
"#);
        let pod_level = pod(r#"
metadata: {name: a, namespace: ns, annotations: {refresh.armor.dev/injected: c}}
spec: {securityContext: {appArmorProfile: {type: Localhost, localhostProfile: kubearmor-ns-a-c}}, containers: [{name: c}]}
"#);
        let o = Owner {
            kind: "Pod".into(),
            name: "a".into(),
        };
        let ann = policy("profile: {format: Annotation}");
        let fld = policy("profile: {format: Field, injectAt: Create}");
        let both = policy("profile: {format: Both, injectAt: Create}");
        let l = Labels::new();
        assert!(check(&ann, &annotated, &o, &l).is_compliant());
        assert!(!check(&fld, &annotated, &o, &l).is_compliant());
        assert!(check(&fld, &fielded, &o, &l).is_compliant());
        assert!(check(&fld, &pod_level, &o, &l).is_compliant());
        assert!(!check(&ann, &fielded, &o, &l).is_compliant());
        assert!(!check(&both, &annotated, &o, &l).is_compliant());
    }

    #[test]
    fn explicit_profiles_are_respected_stale_ones_are_not() {
        let user_set = pod(r#"
metadata: {name: a, namespace: ns, annotations: {container.apparmor.security.beta.kubernetes.io/c: runtime/default}}
spec: {containers: [{name: c}, {name: d}]}
"#);
        let o = Owner {
            kind: "Pod".into(),
            name: "a".into(),
        };
        let pol = policy("{}");
        let v = check(&pol, &user_set, &o, &Labels::new());
        assert_eq!(v.containers[0].1, ContainerVerdict::Explicit);
        assert_eq!(v.containers[1].1, ContainerVerdict::Missing);
        assert!(!v.is_compliant());
        // The same annotation written by us under an older template is stale.
        let stale = pod(r#"
metadata: {name: a, namespace: ns, annotations: {container.apparmor.security.beta.kubernetes.io/c: localhost/old, refresh.armor.dev/injected: "c"}}
spec: {containers: [{name: c}]}
"#);
        assert!(!check(&pol, &stale, &o, &Labels::new()).is_compliant());
    }

    #[test]
    fn profile_round_trips() {
        for p in [
            Profile::RuntimeDefault,
            Profile::Unconfined,
            Profile::Localhost("x".into()),
        ] {
            assert_eq!(Profile::parse(&p.annotation()), Some(p.clone()));
            assert_eq!(Profile::from_field(&p.field()), Some(p.clone()));
        }
        assert_eq!(Profile::parse("localhost/"), None);
        assert_eq!(Profile::parse("docker-default"), None);
    }

    #[test]
    fn templates_and_owners_past_validation_expand_as_before() {
        let deploy = |kind: &str, name: &str| Owner {
            kind: kind.into(),
            name: name.into(),
        };
        let cases = [
            // An unclosed brace, alone and after a placeholder.
            ("localhost/a{b", deploy("Deployment", "web")),
            ("localhost/{pod}-x{y", deploy("Deployment", "web")),
            // An unknown placeholder, and one nested in another.
            ("localhost/{x}-{pod}", deploy("Deployment", "web")),
            ("localhost/{{namespace}od}", deploy("Deployment", "web")),
            // An owner reference's kind and name are not validated: braces that a later
            // replacement expands.
            ("localhost/p-{owner}", deploy("Deployment", "x{pod}")),
            ("localhost/{ownerKind}", deploy("{Container}", "web")),
        ];
        for (t, owner) in cases {
            assert_eq!(
                expand(t, "p", &owner, "db-0", "app"),
                expand_in_turn(t, "p", &owner, "db-0", "app"),
                "{t} with {owner}"
            );
        }
        assert_eq!(
            expand("localhost/a{b", "p", &deploy("D", "w"), "x", "c"),
            "localhost/a{b"
        );
        assert_eq!(
            expand(
                "localhost/p-{owner}",
                "p",
                &deploy("D", "x{pod}"),
                "db-0",
                "c"
            ),
            "localhost/p-xdb-0"
        );
    }

    proptest::proptest! {
        /// One pass gives what replacing each placeholder in turn gives, for any template and
        /// any values: validated templates with Kubernetes names take the one pass, and
        /// anything else (braces anywhere) must still come out as before.
        #[test]
        fn expanding_in_one_pass_is_replacing_in_turn(
            parts in proptest::collection::vec((0usize..6, "[a-z0-9./_{}-]{0,6}"), 0..8),
            ns in "[a-z0-9-]{0,12}",
            kind in "[A-Z{][a-zA-Z{}]{0,8}(\\.[a-z.]{1,8})?",
            owner in "[a-z0-9.{}-]{0,12}",
            pod in "[a-z0-9.-]{0,12}",
            container in "[a-z0-9-]{1,12}",
            valid_only in proptest::prelude::any::<bool>(),
        ) {
            let names = ["", "{namespace}", "{ownerKind}", "{owner}", "{pod}", "{container}"];
            let template = format!(
                "localhost/p{}",
                parts.iter().map(|(i, lit)| format!("{}{lit}", names[*i])).collect::<String>()
            );
            // Half the cases only what validation accepts, so the one pass is exercised.
            let brace_free = !owner.contains(['{', '}']) && !kind.contains(['{', '}']);
            proptest::prop_assume!(
                !valid_only || (crate::policy::check_template("t", &template).is_ok() && brace_free)
            );
            let owner = Owner { kind, name: owner };
            proptest::prop_assert_eq!(
                expand(&template, &ns, &owner, &pod, &container),
                expand_in_turn(&template, &ns, &owner, &pod, &container)
            );
        }
    }
}
