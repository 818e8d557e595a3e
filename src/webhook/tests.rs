use super::*;
use crate::compliance::tests::policy;
use crate::pod::LeanPod;
use proptest::prelude::{ProptestConfig, any, prop_assert, prop_assert_eq, proptest};
use proptest::strategy::Strategy as _;
use serde_json::json;

struct Fixed {
    ns: BTreeMap<String, Labels>,
    nodes: BTreeMap<String, Labels>,
    pods: Vec<LeanPod>,
    /// Nodes with a Running KubeArmor agent.
    agents: Vec<String>,
}

impl Lookup for Fixed {
    fn namespace_labels(&self, ns: &str) -> Labels {
        self.ns.get(ns).cloned().unwrap_or_default()
    }
    fn node_labels(&self, node: &str) -> Option<Labels> {
        self.nodes.get(node).cloned()
    }
    fn agent_on(&self, node: &str) -> bool {
        self.agents.iter().any(|n| n == node)
    }
    fn pod(&self, ns: &str, name: &str) -> Option<LeanPod> {
        self.pods
            .iter()
            .find(|p| p.namespace().as_deref() == Some(ns) && p.name_any() == name)
            .cloned()
    }
}

/// A policy that injects at creation (the explicit choice) into init containers too, for the
/// tests of the patch itself.
fn create(yaml: &str) -> ValidPolicy {
    let mut spec: serde_json::Value = serde_saphyr::from_str(yaml).unwrap();
    let profile = spec
        .as_object_mut()
        .unwrap()
        .entry("profile")
        .or_insert_with(|| json!({}));
    profile["injectAt"] = json!("Create");
    profile["includeInitContainers"] = json!(true);
    crate::policy::validate("p", &serde_json::from_value(spec).unwrap()).unwrap()
}

fn lookup() -> Fixed {
    Fixed {
        ns: BTreeMap::new(),
        nodes: [
            (
                "enf".to_string(),
                [("kubearmor.io/enforcer".to_string(), "apparmor".to_string())].into(),
            ),
            (
                "no-agent".to_string(),
                [("kubearmor.io/enforcer".to_string(), "apparmor".to_string())].into(),
            ),
            (
                "bpf".to_string(),
                [("kubearmor.io/enforcer".to_string(), "bpf".to_string())].into(),
            ),
            ("plain".to_string(), Labels::new()),
        ]
        .into(),
        pods: vec![],
        agents: vec!["enf".into(), "bpf".into()],
    }
}

fn review_json(resource: &str, sub: Option<&str>, ns: &str, name: &str, object: Value) -> Vec<u8> {
    let mut req = json!({
        "uid": "0b5d2c7e-1111-2222-3333-444455556666",
        "kind": {"group": "", "version": "v1", "kind": if sub.is_some() { "Binding" } else { "Pod" }},
        "resource": {"group": "", "version": "v1", "resource": resource},
        "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
        "requestResource": {"group": "", "version": "v1", "resource": resource},
        "name": name,
        "namespace": ns,
        "operation": "CREATE",
        "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
        "object": object,
        "oldObject": null,
        "dryRun": false,
        "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"}
    });
    if let Some(s) = sub {
        req["subResource"] = json!(s);
    }
    serde_json::to_vec(
        &json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": req}),
    )
    .unwrap()
}

fn deploy_pod() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"generateName": "web-7d9f8b6c5d-", "labels": {"app": "web", "pod-template-hash": "7d9f8b6c5d"},
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d9f8b6c5d", "uid": "u", "controller": true}]},
        "spec": {"initContainers": [{"name": "init", "image": "busybox"}], "containers": [{"name": "app", "image": "nginx", "ports": [{"containerPort": 80}]}]}
    })
}

/// Applies an AdmissionResponse's patch to the object.
fn apply(resp_body: &[u8], object: &Value) -> (Value, bool) {
    let v: Value = serde_json::from_slice(resp_body).unwrap();
    let r = &v["response"];
    assert_eq!(r["allowed"], true, "{v}");
    assert_eq!(v["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(r["uid"], "0b5d2c7e-1111-2222-3333-444455556666");
    let mut out = object.clone();
    // kube writes the patch bytes as a JSON array of numbers, which the API server's
    // decoder accepts for []byte as it does base64.
    let bytes: Option<Vec<u8>> = match r.get("patch") {
        None => None,
        Some(Value::String(b64)) => Some(
            serde_json::from_value::<k8s_openapi::ByteString>(json!(b64))
                .unwrap()
                .0,
        ),
        Some(v) => Some(serde_json::from_value(v.clone()).unwrap()),
    };
    match bytes {
        None => (out, false),
        Some(bytes) => {
            assert_eq!(r["patchType"], "JSONPatch");
            let patch: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
            json_patch::patch(&mut out, &patch).unwrap();
            (out, true)
        }
    }
}

#[test]
fn a_deployment_pod_gets_annotations_for_every_container() {
    let pols = vec![create("{}")];
    let obj = deploy_pod();
    let (code, body, verdict, op) = handle(
        &review_json("pods", None, "shop", "", obj.clone()),
        &pols,
        &lookup(),
    );
    assert_eq!(
        (code, verdict, op.as_str()),
        (200, Verdict::Patched, "pods")
    );
    let (patched, _) = apply(&body, &obj);
    let a = &patched["metadata"]["annotations"];
    assert_eq!(
        a["container.apparmor.security.beta.kubernetes.io/app"],
        "localhost/kubearmor-shop-web-app"
    );
    assert_eq!(
        a["container.apparmor.security.beta.kubernetes.io/init"],
        "localhost/kubearmor-shop-web-init"
    );
    assert_eq!(a["refresh.armor.dev/injected"], "init,app");
    // Untouched otherwise.
    assert_eq!(
        patched["spec"]["containers"][0]["ports"][0]["containerPort"],
        80
    );
    // Idempotent: a second pass adds nothing.
    let (code, body2, verdict, _) = handle(
        &review_json("pods", None, "shop", "", patched.clone()),
        &pols,
        &lookup(),
    );
    assert_eq!((code, verdict), (200, Verdict::Unchanged));
    assert!(!apply(&body2, &patched).1);
}

/// A pod without containers reaches a mutating webhook before validation, as
/// `"containers": null`: nothing to inject, and not an error of ours (the API server refuses
/// the pod next).
#[test]
fn a_pod_without_containers_is_unchanged_not_an_error() {
    let pols = vec![create("{}")];
    let mut obj = deploy_pod();
    obj["spec"]["containers"] = Value::Null;
    // Its init container is still injected, and the patch leaves `containers` alone.
    let (code, body, verdict, _) = handle(
        &review_json("pods", None, "shop", "", obj.clone()),
        &pols,
        &lookup(),
    );
    assert_eq!((code, verdict), (200, Verdict::Patched));
    let (patched, changed) = apply(&body, &obj);
    assert!(changed);
    assert_eq!(patched["spec"]["containers"], Value::Null);
    obj["spec"]["initContainers"] = Value::Null;
    let (code, _, verdict, _) = handle(
        &review_json("pods", None, "shop", "", obj),
        &pols,
        &lookup(),
    );
    assert_eq!((code, verdict), (200, Verdict::Unchanged));
}

#[test]
fn a_profile_name_no_agent_can_load_is_never_injected() {
    // The expanded name (250 x's, the owner and the container) is over 255 bytes: the container
    // could never start, so the pod is admitted as it is.
    let pols = vec![create(
        "profile: {template: 'localhost/xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx-{owner}-{container}'}",
    )];
    let obj = deploy_pod();
    let (code, _, verdict, _) = handle(
        &review_json("pods", None, "shop", "", obj.clone()),
        &pols,
        &lookup(),
    );
    assert_eq!((code, verdict), (200, Verdict::Unchanged));
}

#[test]
fn field_and_both_formats() {
    for (fmt, ann, field) in [("Field", false, true), ("Both", true, true)] {
        let pols = vec![create(&format!("profile: {{format: {fmt}}}"))];
        let obj = deploy_pod();
        let (_, body, _, _) = handle(
            &review_json("pods", None, "shop", "", obj.clone()),
            &pols,
            &lookup(),
        );
        let (p, _) = apply(&body, &obj);
        assert_eq!(
            p["spec"]["containers"][0]["securityContext"]["appArmorProfile"],
            json!({"type": "Localhost", "localhostProfile": "kubearmor-shop-web-app"})
        );
        assert_eq!(
            p["spec"]["initContainers"][0]["securityContext"]["appArmorProfile"]["localhostProfile"],
            "kubearmor-shop-web-init"
        );
        assert_eq!(
            p["metadata"]["annotations"]
                .get("container.apparmor.security.beta.kubernetes.io/app")
                .is_some(),
            ann
        );
        assert!(field);
        // The patched object is a valid Pod of the full type.
        let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(p).unwrap();
        let pod = LeanPod::from(&pod);
        let o = compliance::owner_of(&pod, None);
        let mut pod_ns = pod.clone();
        pod_ns.metadata.namespace = Some("shop".into());
        assert!(compliance::check(&pols[0], &pod_ns, &o, &Labels::new()).is_compliant());
    }
}

#[test]
fn explicit_profiles_overrides_exclusions_and_opt_out() {
    // A user-set profile is respected; the other container gets ours.
    let pols = vec![create(
        "profile: {overrides: [{podSelector: {matchLabels: {k8s-app: kube-proxy}}, profile: unconfined}]}",
    )];
    let mut obj = deploy_pod();
    obj["metadata"]["annotations"] =
        json!({"container.apparmor.security.beta.kubernetes.io/app": "runtime/default"});
    let (_, body, _, _) = handle(
        &review_json("pods", None, "shop", "", obj.clone()),
        &pols,
        &lookup(),
    );
    let (p, _) = apply(&body, &obj);
    assert_eq!(
        p["metadata"]["annotations"]["container.apparmor.security.beta.kubernetes.io/app"],
        "runtime/default"
    );
    assert_eq!(
        p["metadata"]["annotations"]["refresh.armor.dev/injected"],
        "init"
    );
    // Override.
    let mut proxy = deploy_pod();
    proxy["metadata"]["labels"]["k8s-app"] = json!("kube-proxy");
    let (_, body, _, _) = handle(
        &review_json("pods", None, "shop", "", proxy.clone()),
        &pols,
        &lookup(),
    );
    let (p, _) = apply(&body, &proxy);
    assert_eq!(
        p["metadata"]["annotations"]["container.apparmor.security.beta.kubernetes.io/app"],
        "unconfined"
    );
    // Excluded namespace (kube-system by default), opt-out label, excluded selector: untouched.
    for (ns, obj, pol) in [
        ("kube-system", deploy_pod(), "{}"),
        (
            "shop",
            {
                let mut o = deploy_pod();
                o["metadata"]["labels"]["refresh.armor.dev/exclude"] = json!("true");
                o
            },
            "{}",
        ),
        (
            "shop",
            deploy_pod(),
            "exclude: {podSelector: {matchLabels: {app: web}}}",
        ),
        (
            "shop",
            deploy_pod(),
            "selector: {podSelector: {matchLabels: {app: other}}}",
        ),
        ("shop", deploy_pod(), "exclude: {ownerKinds: [Deployment]}"),
    ] {
        let (code, _, verdict, _) = handle(
            &review_json("pods", None, ns, "", obj),
            &[create(pol)],
            &lookup(),
        );
        assert_eq!((code, verdict), (200, Verdict::Unchanged), "{ns} {pol}");
    }
}

#[test]
fn precedence_is_by_policy_name() {
    let mut a = create("profile: {template: 'localhost/from-a-{container}'}");
    a.name = "a".into();
    let mut b = create("profile: {template: 'localhost/from-b-{container}'}");
    b.name = "b".into();
    for pols in [vec![a.clone(), b.clone()], vec![b.clone(), a.clone()]] {
        let obj = deploy_pod();
        let (_, body, _, _) = handle(
            &review_json("pods", None, "shop", "", obj.clone()),
            &pols,
            &lookup(),
        );
        let (p, _) = apply(&body, &obj);
        assert_eq!(
            p["metadata"]["annotations"]["container.apparmor.security.beta.kubernetes.io/app"],
            "localhost/from-a-app"
        );
    }
}

#[test]
fn binding_injects_only_on_enforcing_nodes() {
    let pols = vec![policy(
        "profile: {injectAt: Binding, enforcingNodeSelector: {matchLabels: {kubearmor.io/enforcer: apparmor}}}",
    )];
    let mut l = lookup();
    let mut pod = deploy_pod();
    pod["metadata"]["name"] = json!("web-7d9f8b6c5d-abcde");
    pod["metadata"]["namespace"] = json!("shop");
    l.pods.push(serde_json::from_value(pod.clone()).unwrap());
    // Creation under a Binding policy: nothing.
    let (_, _, verdict, _) = handle(
        &review_json("pods", None, "shop", "", deploy_pod()),
        &pols,
        &l,
    );
    assert_eq!(verdict, Verdict::Unchanged);
    let binding = |node: &str| json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "web-7d9f8b6c5d-abcde", "namespace": "shop"}, "target": {"apiVersion": "v1", "kind": "Node", "name": node}});
    let b = binding("enf");
    let (code, body, verdict, op) = handle(
        &review_json(
            "pods",
            Some("binding"),
            "shop",
            "web-7d9f8b6c5d-abcde",
            b.clone(),
        ),
        &pols,
        &l,
    );
    assert_eq!(
        (code, verdict, op.as_str()),
        (200, Verdict::Patched, "pods/binding")
    );
    let (p, _) = apply(&body, &b);
    assert_eq!(
        p["metadata"]["annotations"]["container.apparmor.security.beta.kubernetes.io/app"],
        "localhost/kubearmor-shop-web-app"
    );
    assert_eq!(p["target"]["name"], "enf");
    let (_, _, verdict, _) = handle(
        &review_json(
            "pods",
            Some("binding"),
            "shop",
            "web-7d9f8b6c5d-abcde",
            binding("plain"),
        ),
        &pols,
        &l,
    );
    assert_eq!(verdict, Verdict::Unchanged);
    // An unknown pod: allowed unchanged with a warning.
    let (code, body, verdict, _) = handle(
        &review_json(
            "pods",
            Some("binding"),
            "shop",
            "ghost",
            json!({"metadata": {"name": "ghost"}, "target": {"name": "enf"}}),
        ),
        &pols,
        &l,
    );
    assert_eq!((code, verdict), (200, Verdict::Error));
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["response"]["allowed"], true);
    assert!(
        v["response"]["warnings"][0]
            .as_str()
            .unwrap()
            .contains("not found")
    );
}

#[test]
fn binding_policies_inject_a_pod_created_bound_only_where_an_agent_loads_it() {
    // KubeArmor's webhook also annotates a pod created with spec.nodeName (no binding follows).
    let pols = vec![policy("{}")];
    let (_, _, v, _) = handle(
        &review_json("pods", None, "shop", "", deploy_pod()),
        &pols,
        &lookup(),
    );
    assert_eq!(v, Verdict::Unchanged, "unbound: wait for the binding");
    for (node, want) in [
        ("enf", Verdict::Patched),
        ("no-agent", Verdict::Unchanged),
        ("bpf", Verdict::Unchanged),
        ("plain", Verdict::Unchanged),
        ("unknown", Verdict::Unchanged),
    ] {
        let mut pinned = deploy_pod();
        pinned["spec"]["nodeName"] = json!(node);
        let (_, body, v, _) = handle(
            &review_json("pods", None, "shop", "", pinned.clone()),
            &pols,
            &lookup(),
        );
        assert_eq!(v, want, "{node}");
        if want == Verdict::Patched {
            let (p, _) = apply(&body, &pinned);
            let a = &p["metadata"]["annotations"];
            assert!(
                a.get("container.apparmor.security.beta.kubernetes.io/init")
                    .is_none()
            );
            assert_eq!(a["refresh.armor.dev/injected"], "app");
        }
    }
}

#[test]
fn kubearmor_pods_windows_pods_and_pod_security_are_left_alone_with_a_warning() {
    let pols = vec![create("{}")];
    let mut agent = deploy_pod();
    agent["metadata"]["labels"]["kubearmor-app"] = json!("kubearmor");
    let (_, _, v, _) = handle(
        &review_json("pods", None, "kubearmor", "", agent),
        &pols,
        &lookup(),
    );
    assert_eq!(v, Verdict::Unchanged);
    let warning = |body: &[u8]| -> String {
        let v: Value = serde_json::from_slice(body).unwrap();
        v["response"]["warnings"][0]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let mut windows = deploy_pod();
    windows["spec"]["os"] = json!({"name": "windows"});
    let (_, body, v, _) = handle(
        &review_json("pods", None, "shop", "", windows),
        &pols,
        &lookup(),
    );
    assert_eq!(v, Verdict::Unchanged);
    assert!(warning(&body).contains("Windows"), "{}", warning(&body));
    // unconfined where Pod Security enforces baseline: that container is left alone.
    let pols = vec![create(
        "profile: {overrides: [{podSelector: {}, containers: [app], profile: unconfined}]}",
    )];
    let mut l = lookup();
    l.ns.insert(
        "locked".into(),
        [(
            compliance::PSA_ENFORCE_LABEL.to_string(),
            "baseline".to_string(),
        )]
        .into(),
    );
    let obj = deploy_pod();
    let (_, body, v, _) = handle(
        &review_json("pods", None, "locked", "", obj.clone()),
        &pols,
        &l,
    );
    assert_eq!(v, Verdict::Patched);
    assert!(
        warning(&body).contains("Pod Security"),
        "{}",
        warning(&body)
    );
    let (p, _) = apply(&body, &obj);
    let a = &p["metadata"]["annotations"];
    assert!(
        a.get("container.apparmor.security.beta.kubernetes.io/app")
            .is_none()
    );
    assert_eq!(
        a["container.apparmor.security.beta.kubernetes.io/init"],
        "localhost/kubearmor-locked-web-init"
    );
}

#[test]
fn a_bare_pod_named_by_generate_name_is_not_given_a_guessed_name() {
    let pols = vec![create("{}")];
    let bare = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"generateName": "solo-"}, "spec": {"containers": [{"name": "c"}]}});
    let (_, body, v, _) = handle(
        &review_json("pods", None, "shop", "", bare),
        &pols,
        &lookup(),
    );
    assert_eq!(v, Verdict::Unchanged);
    let r: Value = serde_json::from_slice(&body).unwrap();
    assert!(
        r["response"]["warnings"][0]
            .as_str()
            .unwrap()
            .contains("generateName")
    );
    // With a name, it is named after itself.
    let named = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "solo-x1"}, "spec": {"containers": [{"name": "c"}]}});
    let (_, body, v, _) = handle(
        &review_json("pods", None, "shop", "", named.clone()),
        &pols,
        &lookup(),
    );
    assert_eq!(v, Verdict::Patched);
    let (p, _) = apply(&body, &named);
    assert_eq!(
        p["metadata"]["annotations"]["container.apparmor.security.beta.kubernetes.io/c"],
        "localhost/kubearmor-shop-solo-x1-c"
    );
}

#[test]
fn beside_kubearmors_webhook_nothing_flips() {
    // KubeArmor rewrote our runtime/default into localhost/default: a reinvocation leaves it.
    let pols = vec![create("profile: {template: runtime/default}")];
    let mut obj = deploy_pod();
    obj["metadata"]["annotations"] = json!({
        "container.apparmor.security.beta.kubernetes.io/app": "localhost/default",
        "container.apparmor.security.beta.kubernetes.io/init": "runtime/default",
        "refresh.armor.dev/injected": "init,app"
    });
    let (_, _, v, _) = handle(
        &review_json("pods", None, "shop", "", obj),
        &pols,
        &lookup(),
    );
    assert_eq!(v, Verdict::Unchanged);
}

#[test]
fn bad_requests_get_clear_answers_and_never_panic() {
    let pols = vec![create("{}")];
    let cases: Vec<(Vec<u8>, u16, &str)> = vec![
        (b"not json".to_vec(), 400, "not JSON"),
        (b"".to_vec(), 400, "not JSON"),
        (
            br#"{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{}}"#
                .to_vec(),
            400,
            "send admission.k8s.io/v1",
        ),
        (
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"Pod"}"#.to_vec(),
            400,
            "not AdmissionReview",
        ),
        (
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#.to_vec(),
            400,
            "no request",
        ),
        (
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":1}}"#
                .to_vec(),
            400,
            "malformed",
        ),
        (br#"[1,2,3]"#.to_vec(), 400, "not supported"),
    ];
    for (body, code, msg) in cases {
        let (c, out, v, _) = handle(&body, &pols, &lookup());
        assert_eq!((c, v), (code, Verdict::Error));
        assert!(
            String::from_utf8_lossy(&out).contains(msg),
            "{} lacks {msg}",
            String::from_utf8_lossy(&out)
        );
    }
    // Wrong kind of object under pods, a non-create operation, another resource: allowed, unchanged.
    let (c, out, v, _) = handle(
        &review_json(
            "pods",
            None,
            "shop",
            "",
            json!({"kind": "Pod", "spec": {"containers": "nope"}}),
        ),
        &pols,
        &lookup(),
    );
    assert_eq!((c, v), (200, Verdict::Error));
    assert!(String::from_utf8_lossy(&out).contains("\"allowed\":true"));
    let mut upd: Value =
        serde_json::from_slice(&review_json("pods", None, "shop", "x", deploy_pod())).unwrap();
    upd["request"]["operation"] = json!("UPDATE");
    let (c, _, v, _) = handle(&serde_json::to_vec(&upd).unwrap(), &pols, &lookup());
    assert_eq!((c, v), (200, Verdict::Skipped));
    let (c, _, v, _) = handle(
        &review_json(
            "configmaps",
            None,
            "shop",
            "x",
            json!({"kind": "ConfigMap", "metadata": {"name": "x"}}),
        ),
        &pols,
        &lookup(),
    );
    assert_eq!((c, v), (200, Verdict::Skipped));
    // Bindings when no policy injects at binding: skipped without looking the pod up.
    let (c, _, v, _) = handle(
        &review_json(
            "pods",
            Some("binding"),
            "shop",
            "x",
            json!({"metadata": {"name": "x"}, "target": {"name": "enf"}}),
        ),
        &pols,
        &lookup(),
    );
    assert_eq!((c, v), (200, Verdict::Skipped));
}

#[test]
fn keys_with_slashes_and_tildes_are_escaped() {
    // A container name cannot contain '~' or '/', but annotation keys do contain '/':
    // applying the patch must land the key verbatim.
    let pols = vec![create("{}")];
    let mut obj = deploy_pod();
    obj["metadata"]["annotations"] = json!({"a~b/c": "kept"});
    let (_, body, _, _) = handle(
        &review_json("pods", None, "shop", "", obj.clone()),
        &pols,
        &lookup(),
    );
    let (p, _) = apply(&body, &obj);
    assert_eq!(p["metadata"]["annotations"]["a~b/c"], "kept");
    assert!(
        p["metadata"]["annotations"]["container.apparmor.security.beta.kubernetes.io/app"]
            .is_string()
    );
}

fn arb_pod() -> impl proptest::strategy::Strategy<Value = Value> {
    (
        proptest::collection::vec("[a-z][a-z0-9-]{0,8}", 1..4),
        proptest::collection::vec("[a-z][a-z0-9-]{0,8}", 0..3),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        proptest::option::of(0usize..3),
        any::<bool>(),
    )
        .prop_map(|(cs, inits, annotations_map, sc, pod_sc, user_set, owned)| {
            let mut names = std::collections::BTreeSet::new();
            let mk = |n: &String, names: &mut std::collections::BTreeSet<String>| {
                let n = if names.contains(n) { format!("{n}-{}", names.len()) } else { n.clone() };
                names.insert(n.clone());
                if sc { json!({"name": n, "image": "x", "securityContext": {"runAsUser": 1}}) } else { json!({"name": n, "image": "x"}) }
            };
            let containers: Vec<Value> = cs.iter().map(|n| mk(n, &mut names)).collect();
            let init: Vec<Value> = inits.iter().map(|n| mk(n, &mut names)).collect();
            let mut pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "labels": {"app": "x"}}, "spec": {"containers": containers}});
            if !init.is_empty() {
                pod["spec"]["initContainers"] = json!(init);
            }
            if annotations_map {
                pod["metadata"]["annotations"] = json!({"other": "1"});
            }
            if pod_sc {
                pod["spec"]["securityContext"] = json!({"runAsNonRoot": true});
            }
            if let Some(i) = user_set {
                if let Some(c) = pod["spec"]["containers"].get(i).and_then(|c| c["name"].as_str()).map(String::from) {
                    pod["metadata"]["annotations"] = json!({format!("container.apparmor.security.beta.kubernetes.io/{c}"): "runtime/default"});
                }
            }
            if owned {
                pod["metadata"]["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "db", "uid": "u", "controller": true}]);
            }
            pod
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]
    /// For every pod shape and format: the patch applies, the result is compliant, and a
    /// second pass changes nothing.
    #[test]
    fn patches_make_pods_compliant_and_are_idempotent(pod in arb_pod(), fmt in proptest::sample::select(vec!["Annotation", "Field", "Both"])) {
        let pols = vec![create(&format!("profile: {{format: {fmt}}}"))];
        let (code, body, _, _) = handle(&review_json("pods", None, "ns1", "", pod.clone()), &pols, &lookup());
        prop_assert_eq!(code, 200);
        let (patched, _) = apply(&body, &pod);
        let typed: k8s_openapi::api::core::v1::Pod = serde_json::from_value(patched.clone()).unwrap();
        let typed = LeanPod::from(&typed);
        let mut with_ns = typed.clone();
        with_ns.metadata.namespace = Some("ns1".into());
        let o = compliance::owner_of(&typed, None);
        prop_assert!(compliance::check(&pols[0], &with_ns, &o, &Labels::new()).is_compliant());
        let (_, body2, v, _) = handle(&review_json("pods", None, "ns1", "", patched.clone()), &pols, &lookup());
        prop_assert_eq!(v, Verdict::Unchanged);
        prop_assert!(!apply(&body2, &patched).1);
    }

    /// Arbitrary bytes never panic and always get an answer.
    #[test]
    fn arbitrary_bodies_never_panic(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        let (code, out, _, _) = handle(&body, &[policy("{}")], &lookup());
        prop_assert!(code == 200 || code == 400);
        prop_assert!(!out.is_empty());
    }
}

/// The pod with every AppArmor field and annotation (and the webhook's own marker) removed,
/// and the maps left empty by that removed too.
fn without_apparmor(mut v: Value) -> Value {
    let allowed =
        |k: &str| k.starts_with(compliance::ANNOTATION_PREFIX) || k == super::INJECTED_ANNOTATION;
    if let Some(m) = v["metadata"].as_object_mut() {
        if let Some(a) = m.get_mut("annotations").and_then(Value::as_object_mut) {
            a.retain(|k, _| !allowed(k));
        }
        if m.get("annotations")
            .and_then(Value::as_object)
            .is_some_and(|a| a.is_empty())
        {
            m.remove("annotations");
        }
    }
    let strip_sc = |holder: &mut Value| {
        if let Some(o) = holder.as_object_mut() {
            if let Some(sc) = o.get_mut("securityContext").and_then(Value::as_object_mut) {
                sc.remove("appArmorProfile");
            }
            if o.get("securityContext")
                .and_then(Value::as_object)
                .is_some_and(|s| s.is_empty())
            {
                o.remove("securityContext");
            }
        }
    };
    strip_sc(&mut v["spec"]);
    for list in ["containers", "initContainers", "ephemeralContainers"] {
        if let Some(cs) = v["spec"][list].as_array_mut() {
            cs.iter_mut().for_each(strip_sc);
        }
    }
    v
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]
    /// Security: whatever the pod and the format, the webhook's patch changes nothing but
    /// AppArmor profile annotations and fields (and its own marker annotation).
    #[test]
    fn patches_touch_only_apparmor_fields(pod in arb_pod(), fmt in proptest::sample::select(vec!["Annotation", "Field", "Both"]), tpl in proptest::sample::select(vec!["localhost/kubearmor-{namespace}-{owner}-{container}", "runtime/default", "unconfined"])) {
        let pols = vec![create(&format!("profile: {{format: {fmt}, template: \"{tpl}\"}}"))];
        let (code, body, _, _) = handle(&review_json("pods", None, "ns1", "", pod.clone()), &pols, &lookup());
        prop_assert_eq!(code, 200);
        let (patched, _) = apply(&body, &pod);
        prop_assert_eq!(without_apparmor(patched), without_apparmor(pod));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]
    /// The match condition that spares the API server a call never spares one that would
    /// have changed the pod: whenever it says skip, the webhook's answer is no patch.
    #[test]
    fn a_pod_the_match_condition_skips_would_get_no_patch(pod in arb_pod(), mask in proptest::collection::vec(any::<bool>(), 6), values in proptest::collection::vec(proptest::sample::select(vec!["localhost/theirs", "runtime/default", "unconfined", "localhost/default", "", "localhost/", "docker-default", "localhost/a/b"]), 6), ours in any::<bool>(), fmt in proptest::sample::select(vec!["Annotation", "Field", "Both"])) {
        let mut pod = pod;
        let names: Vec<String> = ["initContainers", "containers"]
            .iter()
            .flat_map(|l| pod["spec"][l].as_array().cloned().unwrap_or_default())
            .map(|c| c["name"].as_str().unwrap().to_string())
            .collect();
        for (i, n) in names.iter().enumerate() {
            if mask.get(i).copied().unwrap_or(true) {
                let v = values.get(i).copied().unwrap_or("localhost/theirs");
                pod["metadata"]["annotations"][format!("{}{n}", crate::compliance::ANNOTATION_PREFIX)] = json!(v);
            }
        }
        if ours && pod["metadata"].get("annotations").is_some() {
            pod["metadata"]["annotations"][crate::compliance::INJECTED_ANNOTATION] = json!(names[0]);
        }
        let skipped = !super::registration::matches(&super::registration::lacks_a_profile_expr(), pod.clone(), None);
        let pols = vec![create(&format!("profile: {{format: {fmt}}}"))];
        let (code, body, _, _) = handle(&review_json("pods", None, "ns1", "", pod.clone()), &pols, &lookup());
        prop_assert_eq!(code, 200);
        let (_, patched) = apply(&body, &pod);
        prop_assert!(!(skipped && patched), "skipped, yet the webhook would patch {}", pod);
    }
}
