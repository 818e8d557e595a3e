//! What the API server sends the webhook: only the operations some policy needs.
//!
//! Every pod is created once and bound once. A policy that injects at `Binding` needs each
//! `pods/binding`, and a pod's creation only when the pod comes already bound (its
//! `spec.nodeName` set: no binding follows); one that injects at `Create` needs every
//! creation and no binding. Registering both for everything cost two webhook calls per pod.
//! The creation of an unbound pod under Binding-only policies is skipped by a CEL
//! `matchCondition`, evaluated in the API server (GA since Kubernetes 1.30).

use serde_json::{Value, json};

use crate::api::InjectAt;
use crate::policy::ValidPolicy;

/// The name of the match condition of Binding-only registrations.
pub const BOUND_OR_BINDING: &str = "bound-at-creation-or-binding";
/// Its expression: a binding, or the creation of a pod that has its node already. For a
/// binding, `object` is the Binding, so the subresource is tested first. The request of a
/// plain pod creation has no `subResource` key at all (it is omitted when empty), and
/// reading a missing key is an error in CEL that `||` only forgives when the other side is
/// true: an unbound pod would make the condition fail, which `failurePolicy: Fail` turns
/// into a refused pod. Hence `has()` first.
pub const BOUND_OR_BINDING_EXPR: &str = "(has(request.subResource) && request.subResource == 'binding') || (has(object.spec.nodeName) && object.spec.nodeName != '')";

/// Which injection points `policies` use. Without any policy, Binding (the default a new
/// policy gets) is registered, so the first policy's pods are not missed.
pub fn needs(policies: &[ValidPolicy]) -> (bool, bool) {
    let at = |i: InjectAt| policies.iter().any(|p| p.spec.profile.inject_at == i);
    (
        at(InjectAt::Create),
        policies.is_empty() || at(InjectAt::Binding),
    )
}

/// The `rules` and `matchConditions` of the webhook for these injection points.
pub fn rules(create: bool, binding: bool) -> Value {
    let rule = |resources: &[&str]| {
        json!([{
            "operations": ["CREATE"],
            "apiGroups": [""],
            "apiVersions": ["v1"],
            "resources": resources,
            "scope": "Namespaced",
        }])
    };
    match (create, binding) {
        (true, true) => json!({"rules": rule(&["pods", "pods/binding"]), "matchConditions": []}),
        (true, false) => json!({"rules": rule(&["pods"]), "matchConditions": []}),
        (false, _) => json!({
            "rules": rule(&["pods", "pods/binding"]),
            "matchConditions": [{"name": BOUND_OR_BINDING, "expression": BOUND_OR_BINDING_EXPR}],
        }),
    }
}

/// [`rules`] for `policies`.
pub fn for_policies(policies: &[ValidPolicy]) -> Value {
    let (create, binding) = needs(policies);
    rules(create, binding)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ArmorRefreshPolicySpec;

    fn policy(name: &str, at: InjectAt) -> ValidPolicy {
        let mut spec: ArmorRefreshPolicySpec = serde_json::from_value(json!({})).unwrap();
        spec.profile.inject_at = at;
        if at == InjectAt::Create {
            // Create needs no node gating (the CRD refuses it at creation).
            spec.profile.enforcing_node_selector = None;
        }
        crate::policy::validate(name, &spec).unwrap()
    }

    fn resources(v: &Value) -> Vec<&str> {
        v["rules"][0]["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_str().unwrap())
            .collect()
    }

    #[test]
    fn only_what_the_policies_need_is_registered() {
        let b = policy("b", InjectAt::Binding);
        let c = policy("c", InjectAt::Create);
        // Binding only (and no policy at all): bindings, and creations of bound pods.
        for ps in [vec![], vec![b.clone()]] {
            let r = for_policies(&ps);
            assert_eq!(resources(&r), ["pods", "pods/binding"]);
            assert_eq!(r["matchConditions"][0]["expression"], BOUND_OR_BINDING_EXPR);
        }
        // Create only: every creation, no binding.
        let r = for_policies(std::slice::from_ref(&c));
        assert_eq!(resources(&r), ["pods"]);
        assert_eq!(r["matchConditions"], json!([]));
        // Both: everything, unconditionally (an empty list removes an earlier condition).
        let r = for_policies(&[b, c]);
        assert_eq!(resources(&r), ["pods", "pods/binding"]);
        assert_eq!(r["matchConditions"], json!([]));
    }
}
