//! The admission webhook: AppArmor profiles into every new pod.
//!
//! [`review`] is pure: an AdmissionReview in, an AdmissionReview out, with the policies,
//! namespace and node labels and (for `pods/binding`) the pod passed in. What to inject is
//! decided by [`crate::compliance`], the same code the controller uses to decide what to
//! refresh, so a pod the webhook admitted is never a target.
//!
//! Precedence when several policies select a pod: the first by name (alphabetical) that
//! selects it at this admission point wins; documented in the README.

pub mod registration;
pub mod server;

use std::collections::BTreeMap;

use kube::ResourceExt;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use serde_json::Value;

use crate::api::{InjectAt, ProfileFormat};
use crate::compliance::{self, ContainerVerdict, INJECTED_ANNOTATION, Owner};
use crate::pod::LeanPod;
use crate::policy::ValidPolicy;
use crate::select;

type Labels = BTreeMap<String, String>;

/// The policy that governs this pod: the first by name that selects it. Only that policy
/// injects, and only at its own `injectAt`; the controller asks the same question, so two
/// policies never fight over one pod.
pub fn governing<'a>(
    policies: &'a [ValidPolicy],
    pod: &LeanPod,
    owner: &Owner,
    ns: &str,
    ns_labels: &Labels,
) -> Option<&'a ValidPolicy> {
    let mut candidates: Vec<&ValidPolicy> = policies.iter().collect();
    candidates.sort_by(|a, b| a.name.cmp(&b.name));
    candidates
        .into_iter()
        .find(|p| select::governs(p, pod, owner, ns, ns_labels).is_ok())
}

/// What the webhook does to one pod.
#[derive(Debug, Clone, PartialEq)]
pub struct Injection {
    /// The policy that governs the pod.
    pub policy: String,
    /// Profiles to write: container → profile.
    pub profiles: BTreeMap<String, compliance::Profile>,
    /// Containers now injected (the value of `refresh.armor.dev/injected`).
    pub injected: Vec<String>,
    /// Why some profile was not written although the policy wants it.
    pub warnings: Vec<String>,
}

/// The node a pod is bound to, as the webhook sees it.
pub struct NodeView<'a> {
    pub labels: Option<&'a Labels>,
    /// A Running KubeArmor agent is on it.
    pub agent: bool,
}

/// The one decision of what to inject into `pod` at `at`, for the webhook and for the
/// controller's convergence check. `node`: the node at a binding, or the node a pod was
/// created on (`spec.nodeName`); `None` at creation of an unbound pod.
pub fn injection(
    policies: &[ValidPolicy],
    pod: &LeanPod,
    ns: &str,
    ns_labels: &Labels,
    at: InjectAt,
    node: Option<&NodeView>,
) -> Option<Injection> {
    let owner = compliance::owner_of(pod, None);
    let policy = governing(policies, pod, &owner, ns, ns_labels)?;
    let mut warnings = vec![];
    let gated = match (policy.spec.profile.inject_at, at, node) {
        (InjectAt::Create, InjectAt::Create, _) => false,
        // Binding policies also inject into a pod created already bound: it has no binding.
        (InjectAt::Binding, _, Some(n)) => !compliance::node_enforces(policy, n.labels, n.agent),
        _ => true,
    };
    if gated {
        return None;
    }
    let unchanged = |why: &str| Injection {
        policy: policy.name.clone(),
        profiles: BTreeMap::new(),
        injected: compliance::injected_containers(pod),
        warnings: vec![format!(
            "armor-refresh: policy {} {why}; allowed unchanged",
            policy.name
        )],
    };
    if compliance::is_windows(pod) {
        return Some(unchanged("selects this Windows pod, which has no AppArmor"));
    }
    let mut pod_ns = pod.clone();
    pod_ns.metadata.namespace = Some(ns.to_string());
    let nameless = pod.metadata.name.as_deref().unwrap_or_default().is_empty();
    if nameless && names_depend_on_pod(policy, owner.is_bare()) {
        return Some(unchanged(
            "names this pod's profile after the pod, whose name is not known before creation (generateName)",
        ));
    }
    let desired = compliance::desired_profiles(policy, &pod_ns, &owner, ns_labels);
    let verdict = compliance::check_desired(policy, &pod_ns, &desired, ns_labels);
    let mut profiles = BTreeMap::new();
    let mut injected = compliance::injected_containers(pod);
    for (d, (_, v)) in desired.iter().zip(&verdict.containers) {
        match v {
            ContainerVerdict::Missing => {
                // Where KubeArmor runs, its webhook turns runtime/default into
                // localhost/default, and the API server refuses any later change of an AppArmor
                // annotation: every update of the pod would fail. Write what it would.
                let profile = if policy.require_agent && d.profile == compliance::Profile::RuntimeDefault {
                    compliance::Profile::Localhost("default".into())
                } else {
                    d.profile.clone()
                };
                profiles.insert(d.container.clone(), profile);
                if !injected.contains(&d.container) {
                    injected.push(d.container.clone());
                }
            }
            ContainerVerdict::Forbidden => warnings.push(format!(
                "armor-refresh: policy {} wants {} for container {}, which the namespace's Pod Security level ({}) forbids; that container is left unchanged",
                policy.name,
                d.profile,
                d.container,
                ns_labels.get(compliance::PSA_ENFORCE_LABEL).map(String::as_str).unwrap_or_default()
            )),
            _ => {}
        }
    }
    Some(Injection {
        policy: policy.name.clone(),
        profiles,
        injected,
        warnings,
    })
}

/// Does the policy name a profile after the pod itself (`{pod}`, or `{owner}` of a bare pod)?
/// Before the API server generates the name, such a profile cannot be written.
fn names_depend_on_pod(policy: &ValidPolicy, bare: bool) -> bool {
    let uses = |t: &str| t.contains("{pod}") || (bare && t.contains("{owner}"));
    uses(&policy.spec.profile.template) || policy.overrides.iter().any(|o| uses(&o.profile))
}

/// Writes the profiles of `inj` into a copy of `pod` in the policy's format.
pub fn apply_injection(policies: &[ValidPolicy], pod: &LeanPod, inj: &Injection) -> LeanPod {
    let format = policies
        .iter()
        .find(|p| p.name == inj.policy)
        .map_or(ProfileFormat::Annotation, ValidPolicy::format);
    let mut out = pod.clone();
    for (container, profile) in &inj.profiles {
        if matches!(format, ProfileFormat::Annotation | ProfileFormat::Both) {
            out.annotations_mut().insert(
                format!("{}{container}", compliance::ANNOTATION_PREFIX),
                profile.annotation(),
            );
        }
        if matches!(format, ProfileFormat::Field | ProfileFormat::Both)
            && let Some(spec) = out.spec.as_mut()
        {
            let all = spec
                .init_containers
                .iter_mut()
                .flatten()
                .chain(spec.containers.iter_mut());
            for c in all.filter(|c| &c.name == container) {
                c.security_context
                    .get_or_insert_with(Default::default)
                    .app_armor_profile = Some(profile.field());
            }
        }
    }
    if !inj.profiles.is_empty() {
        out.annotations_mut()
            .insert(INJECTED_ANNOTATION.to_string(), inj.injected.join(","));
    }
    out
}

/// The annotations a `pods/binding` adds for `inj`.
pub fn binding_annotations(inj: &Injection) -> BTreeMap<String, String> {
    let mut ann: BTreeMap<String, String> = inj
        .profiles
        .iter()
        .map(|(c, p)| {
            (
                format!("{}{c}", compliance::ANNOTATION_PREFIX),
                p.annotation(),
            )
        })
        .collect();
    if !ann.is_empty() {
        ann.insert(INJECTED_ANNOTATION.to_string(), inj.injected.join(","));
    }
    ann
}

/// What [`review`] needs besides the request.
pub trait Lookup {
    fn namespace_labels(&self, ns: &str) -> Labels;
    fn node_labels(&self, node: &str) -> Option<Labels>;
    /// Does a Running KubeArmor agent pod run on the node?
    fn agent_on(&self, node: &str) -> bool;
    /// The pod a `pods/binding` request binds (from a cache, or the API).
    fn pod(&self, ns: &str, name: &str) -> Option<LeanPod>;
}

/// The outcome, for metrics: `patched`, `unchanged`, `skipped` or `error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Patched,
    Unchanged,
    Skipped,
    Error,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Patched => "patched",
            Verdict::Unchanged => "unchanged",
            Verdict::Skipped => "skipped",
            Verdict::Error => "error",
        }
    }
}

fn allow_with_warning(resp: AdmissionResponse, warning: String) -> AdmissionResponse {
    with_warnings(resp, vec![warning])
}

fn with_warnings(mut resp: AdmissionResponse, warnings: Vec<String>) -> AdmissionResponse {
    if !warnings.is_empty() {
        resp.warnings.get_or_insert_with(Vec::new).extend(warnings);
    }
    resp
}

/// Answers one request. Never denies a pod: anything unexpected is allowed unchanged with a
/// warning (a down or confused webhook must not stop pods; the next refresh catches up).
pub fn review(
    req: &AdmissionRequest<DynamicObject>,
    policies: &[ValidPolicy],
    lookup: &dyn Lookup,
) -> (AdmissionResponse, Verdict) {
    let resp = AdmissionResponse::from(req);
    if req.operation != Operation::Create {
        return (resp, Verdict::Skipped);
    }
    let ns = req.namespace.clone().unwrap_or_default();
    let ns_labels = || {
        let mut l = lookup.namespace_labels(&ns);
        l.entry("kubernetes.io/metadata.name".into())
            .or_insert_with(|| ns.clone());
        l
    };
    let Some(obj) = req.object.as_ref() else {
        return (
            allow_with_warning(
                resp,
                "armor-refresh: request without an object; allowed unchanged".into(),
            ),
            Verdict::Error,
        );
    };
    let raw = match serde_json::to_value(obj) {
        Ok(v) => v,
        Err(e) => {
            return (
                allow_with_warning(
                    resp,
                    format!("armor-refresh: unreadable object ({e}); allowed unchanged"),
                ),
                Verdict::Error,
            );
        }
    };
    match (req.resource.resource.as_str(), req.sub_resource.as_deref()) {
        ("pods", None) => {
            let pod: LeanPod = match serde_json::from_value(raw.clone()) {
                Ok(p) => p,
                Err(e) => {
                    return (
                        allow_with_warning(
                            resp,
                            format!("armor-refresh: not a Pod ({e}); allowed unchanged"),
                        ),
                        Verdict::Error,
                    );
                }
            };
            let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
            let node_labels = node.as_deref().and_then(|n| lookup.node_labels(n));
            let view = node.as_deref().map(|n| NodeView {
                labels: node_labels.as_ref(),
                agent: lookup.agent_on(n),
            });
            let Some(inj) = injection(
                policies,
                &pod,
                &ns,
                &ns_labels(),
                InjectAt::Create,
                view.as_ref(),
            ) else {
                return (resp, Verdict::Unchanged);
            };
            let mutated = apply_injection(policies, &pod, &inj);
            // Diff against the pod as typed, so fields our types do not know are never touched.
            let (resp, verdict) = match (serde_json::to_value(&pod), serde_json::to_value(&mutated))
            {
                (Ok(before), Ok(after)) => patch_response(resp, &before, &after),
                (Err(e), _) | (_, Err(e)) => (
                    allow_with_warning(resp, format!("armor-refresh: {e}; allowed unchanged")),
                    Verdict::Error,
                ),
            };
            (with_warnings(resp, inj.warnings), verdict)
        }
        ("pods", Some("binding")) => {
            if !policies
                .iter()
                .any(|p| p.spec.profile.inject_at == InjectAt::Binding)
            {
                return (resp, Verdict::Skipped);
            }
            let target = raw
                .pointer("/target/name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let pod_name = raw
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .map(String::from)
                .unwrap_or_else(|| req.name.clone());
            if target.is_empty() || pod_name.is_empty() {
                return (
                    allow_with_warning(
                        resp,
                        "armor-refresh: binding without a pod or node name; allowed unchanged"
                            .into(),
                    ),
                    Verdict::Error,
                );
            }
            let Some(pod) = lookup.pod(&ns, &pod_name) else {
                return (
                    allow_with_warning(
                        resp,
                        format!(
                            "armor-refresh: pod {ns}/{pod_name} not found; binding allowed unchanged"
                        ),
                    ),
                    Verdict::Error,
                );
            };
            let node_labels = lookup.node_labels(&target);
            let view = NodeView {
                labels: node_labels.as_ref(),
                agent: lookup.agent_on(&target),
            };
            let Some(inj) = injection(
                policies,
                &pod,
                &ns,
                &ns_labels(),
                InjectAt::Binding,
                Some(&view),
            ) else {
                return (resp, Verdict::Unchanged);
            };
            let ann = binding_annotations(&inj);
            let mut after = raw.clone();
            let meta = after.as_object_mut().map(|o| {
                o.entry("metadata")
                    .or_insert_with(|| Value::Object(Default::default()))
            });
            if let Some(Value::Object(m)) = meta {
                let a = m
                    .entry("annotations")
                    .or_insert_with(|| Value::Object(Default::default()));
                if let Value::Object(a) = a {
                    for (k, v) in ann {
                        a.insert(k, Value::String(v));
                    }
                }
            }
            let (resp, verdict) = patch_response(resp, &raw, &after);
            (with_warnings(resp, inj.warnings), verdict)
        }
        _ => (resp, Verdict::Skipped),
    }
}

fn patch_response(
    resp: AdmissionResponse,
    before: &Value,
    after: &Value,
) -> (AdmissionResponse, Verdict) {
    let patch = json_patch::diff(before, after);
    if patch.0.is_empty() {
        return (resp, Verdict::Unchanged);
    }
    match resp.clone().with_patch(patch) {
        Ok(r) => (r, Verdict::Patched),
        Err(e) => (
            allow_with_warning(resp, format!("armor-refresh: {e}; allowed unchanged")),
            Verdict::Error,
        ),
    }
}

/// Why a request body is not an AdmissionReview we can answer.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum BadReview {
    #[error("the body is not JSON: {0}")]
    NotJson(String),
    #[error("apiVersion {0:?} is not supported; send admission.k8s.io/v1")]
    Version(String),
    #[error("kind {0:?} is not AdmissionReview")]
    Kind(String),
    #[error("the AdmissionReview has no request")]
    NoRequest,
    #[error("the AdmissionReview request is malformed: {0}")]
    Malformed(String),
}

/// Parses a request body into an AdmissionRequest, with a precise error.
pub fn parse_review(body: &[u8]) -> Result<AdmissionRequest<DynamicObject>, BadReview> {
    let v: Value = serde_json::from_slice(body).map_err(|e| BadReview::NotJson(e.to_string()))?;
    let version = v
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if version != "admission.k8s.io/v1" {
        return Err(BadReview::Version(version.to_string()));
    }
    let kind = v.get("kind").and_then(Value::as_str).unwrap_or_default();
    if kind != "AdmissionReview" {
        return Err(BadReview::Kind(kind.to_string()));
    }
    if v.get("request").is_none_or(Value::is_null) {
        return Err(BadReview::NoRequest);
    }
    let review: AdmissionReview<DynamicObject> =
        serde_json::from_value(v).map_err(|e| BadReview::Malformed(e.to_string()))?;
    review.try_into().map_err(|_| BadReview::NoRequest)
}

/// Handles a raw body: `(HTTP status, JSON body, verdict, operation label)`.
pub fn handle(
    body: &[u8],
    policies: &[ValidPolicy],
    lookup: &dyn Lookup,
) -> (u16, Vec<u8>, Verdict, String) {
    match parse_review(body) {
        Err(e) => {
            let msg = serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": e.to_string(), "code": 400});
            (
                400,
                msg.to_string().into_bytes(),
                Verdict::Error,
                "invalid".into(),
            )
        }
        Ok(req) => {
            let op = format!(
                "{}{}",
                req.resource.resource,
                req.sub_resource
                    .as_deref()
                    .map(|s| format!("/{s}"))
                    .unwrap_or_default()
            );
            let (resp, verdict) = review(&req, policies, lookup);
            let out = serde_json::to_vec(&resp.into_review()).unwrap_or_else(|_| b"{}".to_vec());
            (200, out, verdict, op)
        }
    }
}

#[cfg(test)]
mod tests;
