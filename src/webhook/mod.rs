//! The admission webhook: AppArmor profiles into every new pod.
//!
//! [`review`] is pure: an AdmissionReview in, an AdmissionReview out, with the policies,
//! namespace and node labels and (for `pods/binding`) the pod passed in. What to inject is
//! decided by [`crate::compliance`], the same code the controller uses to decide what to
//! refresh, so a pod the webhook admitted is never a target.
//!
//! Precedence when several policies select a pod: the first by name (alphabetical) that
//! selects it at this admission point wins; documented in the README.

pub mod server;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use kube::core::{DynamicObject, SelectorExt};
use serde_json::Value;

use crate::api::{InjectAt, ProfileFormat};
use crate::compliance::{self, ContainerVerdict, INJECTED_ANNOTATION, Owner};
use crate::policy::ValidPolicy;
use crate::select;

type Labels = BTreeMap<String, String>;

/// The policy that injects into this pod at `at`: the first by name that selects it.
pub fn governing<'a>(
    policies: &'a [ValidPolicy],
    pod: &Pod,
    owner: &Owner,
    ns: &str,
    ns_labels: &Labels,
    at: InjectAt,
) -> Option<&'a ValidPolicy> {
    let mut candidates: Vec<&ValidPolicy> = policies
        .iter()
        .filter(|p| p.spec.profile.inject_at == at)
        .collect();
    candidates.sort_by(|a, b| a.name.cmp(&b.name));
    candidates
        .into_iter()
        .find(|p| select::governs(p, pod, owner, ns, ns_labels).is_ok())
}

fn node_enforces(policy: &ValidPolicy, node_labels: Option<&Labels>) -> bool {
    match &policy.enforcing_nodes {
        None => true,
        Some(sel) => node_labels.is_some_and(|l| sel.matches(l)),
    }
}

/// Writes the missing profiles into a copy of `pod`; `None` when nothing changes.
pub fn mutate_pod(
    policies: &[ValidPolicy],
    pod: &Pod,
    ns: &str,
    ns_labels: &Labels,
    node_labels: Option<&Labels>,
) -> Option<(Pod, String)> {
    let owner = compliance::owner_of(pod, None);
    let policy = governing(policies, pod, &owner, ns, ns_labels, InjectAt::Create)?;
    if policy.enforcing_nodes.is_some() {
        // At creation the node is usually unknown; only a pod pinned to an enforcing node
        // may get a profile now (see injectAt: Binding).
        let pinned = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_ref())
            .is_some();
        if !pinned || !node_enforces(policy, node_labels) {
            return None;
        }
    }
    let mut pod_ns = pod.clone();
    pod_ns.metadata.namespace = Some(ns.to_string());
    let verdict = compliance::check(policy, &pod_ns, &owner, ns_labels);
    let desired = compliance::desired_profiles(policy, &pod_ns, &owner, ns_labels);
    let mut out = pod.clone();
    let mut written = compliance::injected_containers(pod);
    let format = policy.format();
    for (d, (_, v)) in desired.iter().zip(&verdict.containers) {
        if *v != ContainerVerdict::Missing {
            continue;
        }
        if matches!(format, ProfileFormat::Annotation | ProfileFormat::Both) {
            out.annotations_mut().insert(
                format!("{}{}", compliance::ANNOTATION_PREFIX, d.container),
                d.profile.annotation(),
            );
        }
        if matches!(format, ProfileFormat::Field | ProfileFormat::Both) {
            let spec = out.spec.get_or_insert_with(Default::default);
            let list = if d.init {
                spec.init_containers.get_or_insert_with(Vec::new)
            } else {
                &mut spec.containers
            };
            if let Some(c) = list.iter_mut().find(|c| c.name == d.container) {
                c.security_context
                    .get_or_insert_with(Default::default)
                    .app_armor_profile = Some(d.profile.field());
            }
        }
        if !written.contains(&d.container) {
            written.push(d.container.clone());
        }
    }
    if out == *pod {
        return None;
    }
    out.annotations_mut()
        .insert(INJECTED_ANNOTATION.to_string(), written.join(","));
    Some((out, policy.name.clone()))
}

/// Annotations to add to a `pods/binding` for `pod`; `None` when nothing is needed.
pub fn binding_annotations(
    policies: &[ValidPolicy],
    pod: &Pod,
    ns: &str,
    ns_labels: &Labels,
    node_labels: Option<&Labels>,
) -> Option<(BTreeMap<String, String>, String)> {
    let owner = compliance::owner_of(pod, None);
    let policy = governing(policies, pod, &owner, ns, ns_labels, InjectAt::Binding)?;
    if !node_enforces(policy, node_labels) {
        return None;
    }
    let verdict = compliance::check(policy, pod, &owner, ns_labels);
    let desired = compliance::desired_profiles(policy, pod, &owner, ns_labels);
    let mut ann = BTreeMap::new();
    let mut written = compliance::injected_containers(pod);
    for (d, (_, v)) in desired.iter().zip(&verdict.containers) {
        if *v == ContainerVerdict::Missing {
            ann.insert(
                format!("{}{}", compliance::ANNOTATION_PREFIX, d.container),
                d.profile.annotation(),
            );
            if !written.contains(&d.container) {
                written.push(d.container.clone());
            }
        }
    }
    if ann.is_empty() {
        return None;
    }
    ann.insert(INJECTED_ANNOTATION.to_string(), written.join(","));
    Some((ann, policy.name.clone()))
}

/// What [`review`] needs besides the request.
pub trait Lookup {
    fn namespace_labels(&self, ns: &str) -> Labels;
    fn node_labels(&self, node: &str) -> Option<Labels>;
    /// The pod a `pods/binding` request binds (from a cache, or the API).
    fn pod(&self, ns: &str, name: &str) -> Option<Pod>;
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
    let mut resp = resp;
    resp.warnings = Some(vec![warning]);
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
            let pod: Pod = match serde_json::from_value(raw.clone()) {
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
            match mutate_pod(policies, &pod, &ns, &ns_labels(), node_labels.as_ref()) {
                None => (resp, Verdict::Unchanged),
                // Diff against the pod as typed, so fields our types do not know are never touched.
                Some((mutated, _policy)) => {
                    match (serde_json::to_value(&pod), serde_json::to_value(&mutated)) {
                        (Ok(before), Ok(after)) => patch_response(resp, &before, &after),
                        (Err(e), _) | (_, Err(e)) => (
                            allow_with_warning(
                                resp,
                                format!("armor-refresh: {e}; allowed unchanged"),
                            ),
                            Verdict::Error,
                        ),
                    }
                }
            }
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
            match binding_annotations(policies, &pod, &ns, &ns_labels(), node_labels.as_ref()) {
                None => (resp, Verdict::Unchanged),
                Some((ann, _)) => {
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
                    patch_response(resp, &raw, &after)
                }
            }
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
