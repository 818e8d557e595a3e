//! What the API server sends the webhook: only the operations some policy needs.
//!
//! Every pod is created once and bound once. A policy that injects at `Binding` needs each
//! `pods/binding`, and a pod's creation only when the pod comes already bound (its
//! `spec.nodeName` set: no binding follows); one that injects at `Create` needs every
//! creation and no binding. Registering both for everything cost two webhook calls per pod.
//! The creation of an unbound pod under Binding-only policies is skipped by a CEL
//! `matchCondition`, evaluated in the API server (GA since Kubernetes 1.30).
//!
//! So is the creation of a pod whose every container already carries an AppArmor
//! annotation that we did not write: the webhook would leave it unchanged (a profile the
//! user or KubeArmor's own webhook set is respected, see [`crate::compliance::check`]), so
//! the call is saved. A binding is never skipped by it: there `object` is the Binding.

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

/// The name of the match condition that skips pods already carrying every profile (in the
/// configuration the operator writes with `--webhook-url`, and in the chart's).
pub const LACKS_A_PROFILE: &str = "lacks-an-apparmor-annotation";

/// Its expression: a binding, or a pod with a container (or init container) without an
/// AppArmor annotation that parses as a profile (`runtime/default`, `unconfined`,
/// `localhost/<name>`: [`crate::compliance::Profile::parse`]; any other value the webhook
/// replaces), or with annotations we wrote (under an older policy they may be due for a
/// change). `has()` guards every optional field, as in [`BOUND_OR_BINDING_EXPR`].
pub fn lacks_a_profile_expr() -> String {
    let key = format!("'{}' + c.name", crate::compliance::ANNOTATION_PREFIX);
    let v = format!("object.metadata.annotations[{key}]");
    let unprofiled = |list: &str| {
        format!(
            "object.spec.{list}.exists(c, !(({key}) in object.metadata.annotations) || !({v} == 'runtime/default' || {v} == 'unconfined' || ({v}.startsWith('localhost/') && size({v}) > {len})))",
            len = "localhost/".len(),
        )
    };
    format!(
        "(has(request.subResource) && request.subResource == 'binding') || !has(object.metadata.annotations) || '{injected}' in object.metadata.annotations || {containers} || (has(object.spec.initContainers) && {init})",
        injected = crate::compliance::INJECTED_ANNOTATION,
        containers = unprofiled("containers"),
        init = unprofiled("initContainers"),
    )
}

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
    let lacks = json!({"name": LACKS_A_PROFILE, "expression": lacks_a_profile_expr()});
    match (create, binding) {
        (true, true) => {
            json!({"rules": rule(&["pods", "pods/binding"]), "matchConditions": [lacks]})
        }
        (true, false) => json!({"rules": rule(&["pods"]), "matchConditions": [lacks]}),
        (false, _) => json!({
            "rules": rule(&["pods", "pods/binding"]),
            "matchConditions": [{"name": BOUND_OR_BINDING, "expression": BOUND_OR_BINDING_EXPR}, lacks],
        }),
    }
}

/// [`rules`] for `policies`.
pub fn for_policies(policies: &[ValidPolicy]) -> Value {
    let (create, binding) = needs(policies);
    rules(create, binding)
}

#[cfg(test)]
/// Evaluates a match condition as the API server does: `object` and `request` bound,
/// `request.subResource` absent on a plain creation.
pub(crate) fn matches(expr: &str, object: Value, sub_resource: Option<&str>) -> bool {
    use kube_cel::cel::{Context, Program, Value as Cel};
    let mut request = json!({"operation": "CREATE", "resource": {"resource": "pods"}});
    if let Some(s) = sub_resource {
        request["subResource"] = json!(s);
    }
    let mut ctx = Context::default();
    ctx.add_variable("object", object).unwrap();
    ctx.add_variable("request", request).unwrap();
    match Program::compile(expr).unwrap().execute(&ctx) {
        Ok(Cel::Bool(b)) => b,
        other => panic!("{expr} gave {other:?}"),
    }
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
        let names = |r: &Value| -> Vec<String> {
            r["matchConditions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["name"].as_str().unwrap().to_string())
                .collect()
        };
        // Binding only (and no policy at all): bindings, and creations of bound pods.
        for ps in [vec![], vec![b.clone()]] {
            let r = for_policies(&ps);
            assert_eq!(resources(&r), ["pods", "pods/binding"]);
            assert_eq!(r["matchConditions"][0]["expression"], BOUND_OR_BINDING_EXPR);
            assert_eq!(names(&r), [BOUND_OR_BINDING, LACKS_A_PROFILE]);
        }
        // Create only: every creation that lacks a profile, no binding.
        let r = for_policies(std::slice::from_ref(&c));
        assert_eq!(resources(&r), ["pods"]);
        assert_eq!(names(&r), [LACKS_A_PROFILE]);
        // Both: everything that lacks a profile (the list replaces an earlier one whole).
        let r = for_policies(&[b, c]);
        assert_eq!(resources(&r), ["pods", "pods/binding"]);
        assert_eq!(names(&r), [LACKS_A_PROFILE]);
    }

    #[test]
    fn pods_already_carrying_every_profile_are_not_sent() {
        let expr = lacks_a_profile_expr();
        let prefix = crate::compliance::ANNOTATION_PREFIX;
        let pod = |annotations: Value| {
            json!({"metadata": {"name": "p", "annotations": annotations},
                   "spec": {"initContainers": [{"name": "init"}], "containers": [{"name": "app"}, {"name": "side"}]}})
        };
        let all = json!({format!("{prefix}app"): "localhost/x", format!("{prefix}side"): "runtime/default", format!("{prefix}init"): "unconfined"});
        assert!(
            !matches(&expr, pod(all.clone()), None),
            "every container annotated: skipped"
        );
        // Sent: one container or one init container without, none at all, or ours.
        for missing in ["side", "init"] {
            let mut v = all.clone();
            v.as_object_mut()
                .unwrap()
                .remove(&format!("{prefix}{missing}"));
            assert!(matches(&expr, pod(v), None), "{missing} unannotated");
        }
        assert!(matches(&expr, pod(json!({})), None));
        let bare = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "app"}]}});
        assert!(matches(&expr, bare, None), "no annotations at all");
        let mut ours = all.clone();
        ours[crate::compliance::INJECTED_ANNOTATION] = json!("app");
        assert!(
            matches(&expr, pod(ours), None),
            "written by us: maybe due a change"
        );
        // Values that are no profile (the webhook writes ours over them) are sent.
        for bad in [
            "",
            "localhost/",
            "docker-default",
            "Localhost/x",
            "runtime/default ",
        ] {
            let mut v = all.clone();
            v[format!("{prefix}side")] = json!(bad);
            assert!(matches(&expr, pod(v), None), "{bad:?} is no profile");
        }
        // A binding is always sent: its object is the Binding, with no containers.
        let binding = json!({"metadata": {"name": "p", "annotations": all}, "target": {"kind": "Node", "name": "n"}});
        assert!(matches(&expr, binding.clone(), Some("binding")));
        // The binding condition beside it: a binding is sent, an unbound creation is not.
        assert!(matches(BOUND_OR_BINDING_EXPR, binding, Some("binding")));
        let unbound = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "app"}]}});
        assert!(!matches(BOUND_OR_BINDING_EXPR, unbound, None));
    }
}
