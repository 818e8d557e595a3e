//! The release artefacts, checked by their own tools: the Helm chart (helm lint, helm template
//! with default and other values, the values schema, the RBAC rules, and the rendered
//! manifests accepted by the real API server with a server-side dry run), Argo CD's health
//! scripts (gopher-lua, the VM Argo CD runs them in), and every YAML of the README, docs/ and
//! examples/ (server-side dry run), so the docs cannot rot; the chart's `helm test` hook and
//! KubeArmor gating values; the GitHub workflows (actionlint with shellcheck) and the release's
//! version check.
//!
//! helm, luahealth and actionlint come from `e2e/tools/build.sh`; run-tests.sh exports their
//! directory.

use std::collections::BTreeSet;

use armor_refresh_e2e::chart::documents as docs;
use armor_refresh_e2e::{Result, chart, client, install_crds, kubectl, root};
use serde_json::Value;

const CHART: &str = "charts/armor-refresh";
const NS: &str = "armor-refresh-system";

use chart::run;

/// What `helm upgrade` sees once the chart's CRDs are served; without it a first install
/// renders no default policy (templates/_helpers.tpl, renderDefaultPolicy).
const POLICY_SERVED: &str = "refresh.armor.dev/v1alpha1/ArmorRefreshPolicy";

/// `helm template` with `--set`/`--set-string` style arguments, on an API server that serves
/// the CRDs; the documents rendered.
fn render(extra: &[&str]) -> Result<Vec<Value>> {
    let mut args = vec!["--api-versions", POLICY_SERVED];
    args.extend_from_slice(extra);
    render_raw(&args)
}

/// `helm template` as on a cluster without the CRDs.
fn render_raw(extra: &[&str]) -> Result<Vec<Value>> {
    let mut args = vec![
        "template",
        "armor-refresh",
        CHART,
        "--namespace",
        NS,
        "--kube-version",
        "1.34.4",
    ];
    args.extend_from_slice(extra);
    let (ok, out, err) = run("helm", &args)?;
    if !ok {
        return Err(format!("helm template {extra:?}: {err}").into());
    }
    docs(&out)
}

fn kinds(docs: &[Value]) -> BTreeSet<String> {
    docs.iter()
        .filter_map(|d| d["kind"].as_str().map(str::to_string))
        .collect()
}

fn find<'a>(docs: &'a [Value], kind: &str) -> Option<&'a Value> {
    docs.iter().find(|d| d["kind"].as_str() == Some(kind))
}

fn args_of(docs: &[Value]) -> Vec<String> {
    let d = find(docs, "Deployment").expect("a Deployment");
    d["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().unwrap_or_default().to_string())
        .collect()
}

/// (apiGroup, resource, verb, resourceNames) for every rule of every Role and ClusterRole.
/// The granted verbs as "Scope group/resource verb [names]".
fn rbac(docs: &[Value]) -> BTreeSet<String> {
    chart::grants(docs)
        .into_iter()
        .map(|g| {
            let names = if g.names.is_empty() {
                String::new()
            } else {
                format!(" [{}]", g.names)
            };
            format!("{} {}{names}", g.scope, g.key)
        })
        .collect()
}

#[test]
fn helm_lint_is_clean_with_default_and_other_values() -> Result<()> {
    for set in [
        "",
        "webhook.certManager.enabled=true,metrics.serviceMonitor.enabled=true,networkPolicy.enabled=true",
        "webhook.enabled=false,defaultPolicy.enabled=false,replicaCount=1",
    ] {
        let mut args = vec!["lint", "--strict", CHART, "--kube-version", "1.34.4"];
        if !set.is_empty() {
            args.extend(["--set", set]);
        }
        let (ok, out, err) = run("helm", &args)?;
        assert!(ok, "helm lint --set {set}: {out}{err}");
        assert!(out.contains("0 chart(s) failed"), "{out}");
    }
    Ok(())
}

#[test]
fn default_values_render_a_hardened_leader_elected_operator_with_its_webhook() -> Result<()> {
    let d = render(&[])?;
    for k in [
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Service",
        "Deployment",
        "PodDisruptionBudget",
        "MutatingWebhookConfiguration",
        "ArmorRefreshPolicy",
    ] {
        assert!(kinds(&d).contains(k), "{k} missing from {:?}", kinds(&d));
    }
    for k in ["ServiceMonitor", "NetworkPolicy", "Certificate", "Issuer"] {
        assert!(!kinds(&d).contains(k), "{k} is optional and off by default");
    }
    let dep = find(&d, "Deployment").unwrap();
    assert_eq!(dep["spec"]["replicas"].as_u64(), Some(2));
    let pod = &dep["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"].as_bool(), Some(true));
    let c = &pod["containers"][0];
    let sc = &c["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"].as_bool(), Some(true));
    assert_eq!(sc["allowPrivilegeEscalation"].as_bool(), Some(false));
    assert_eq!(sc["capabilities"]["drop"][0].as_str(), Some("ALL"));
    assert!(c["resources"]["requests"]["memory"].is_string());
    assert_eq!(
        c["livenessProbe"]["httpGet"]["path"].as_str(),
        Some("/healthz")
    );
    assert_eq!(
        c["readinessProbe"]["httpGet"]["path"].as_str(),
        Some("/readyz")
    );
    let args = args_of(&d);
    for a in [
        "run",
        "--lease-name=armor-refresh",
        "--self-signed",
        "--webhook-config=armor-refresh",
        "--cert-dns=armor-refresh-webhook.armor-refresh-system.svc,armor-refresh-webhook.armor-refresh-system.svc.cluster.local",
    ] {
        assert!(args.iter().any(|x| x == a), "{a} missing from {args:?}");
    }
    // The leader's identity and Lease namespace come from the downward API.
    let env: Vec<&str> = c["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["name"].as_str())
        .collect();
    assert_eq!(env, ["POD_NAME", "POD_NAMESPACE"]);
    let pdb = find(&d, "PodDisruptionBudget").unwrap();
    assert_eq!(pdb["spec"]["minAvailable"].as_u64(), Some(1));
    let wh = &find(&d, "MutatingWebhookConfiguration").unwrap()["webhooks"][0];
    assert_eq!(wh["failurePolicy"].as_str(), Some("Ignore"));
    assert_eq!(wh["sideEffects"].as_str(), Some("None"));
    assert_eq!(
        wh["clientConfig"]["service"]["name"].as_str(),
        Some("armor-refresh-webhook")
    );
    let skipped: Vec<&str> = wh["namespaceSelector"]["matchExpressions"][0]["values"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(skipped, ["kube-system", "storage-system", NS]);
    // Every namespace the webhook skips is excluded by the default policy: a pod there would
    // never get its profile, so refreshing it would only make another target.
    let policy = find(&d, "ArmorRefreshPolicy").expect("the default policy");
    let excluded: Vec<&str> = policy["spec"]["exclude"]["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for ns in &skipped {
        assert!(
            excluded.contains(ns),
            "{ns} skipped by the webhook, not excluded"
        );
    }
    // KubeArmor's pods and the operator's own are skipped by label, which the code reads.
    let objects = serde_json::to_string(&wh["objectSelector"]["matchExpressions"]).unwrap();
    assert!(
        objects.contains("kubearmor-app") && objects.contains("DoesNotExist"),
        "{objects}"
    );
    assert!(objects.contains("refresh.armor.dev/exclude"), "{objects}");
    let dep = find(&d, "Deployment").unwrap();
    assert_eq!(
        dep["spec"]["template"]["metadata"]["labels"]["refresh.armor.dev/exclude"].as_str(),
        Some("true"),
        "a label, as the policies and the webhook read it"
    );
    assert_eq!(
        policy["spec"]["profile"]["injectAt"].as_str(),
        Some("Binding"),
        "KubeArmor's rule by default"
    );
    Ok(())
}

#[test]
fn seed_style_values_render_the_default_policy() -> Result<()> {
    let d = render(&[
        "--set",
        "controller.podRefresher.batchSize=10%,controller.podRefresher.interval=1m",
        "--set",
        "controller.podRefresher.excludeNamespaces={kube-system,rook-ceph}",
        "--set",
        "defaultPolicy.trigger=Automatic,defaultPolicy.profile.format=Both,defaultPolicy.profile.injectAt=Create",
    ])?;
    let p = find(&d, "ArmorRefreshPolicy").expect("the default policy");
    assert_eq!(p["metadata"]["name"].as_str(), Some("default"));
    let spec = &p["spec"];
    assert_eq!(spec["rollout"]["batchSize"].as_str(), Some("10%"));
    assert_eq!(spec["rollout"]["interval"].as_str(), Some("1m"));
    assert_eq!(spec["trigger"].as_str(), Some("Automatic"));
    assert_eq!(spec["profile"]["format"].as_str(), Some("Both"));
    let ex: Vec<&str> = spec["exclude"]["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        ex,
        ["kube-system", "rook-ceph", NS],
        "the operator's own namespace too"
    );
    // The number form stays a number (IntOrString).
    let d = render(&["--set", "controller.podRefresher.batchSize=7"])?;
    let p = find(&d, "ArmorRefreshPolicy").unwrap();
    assert_eq!(p["spec"]["rollout"]["batchSize"].as_u64(), Some(7));
    let d = render(&["--set", "defaultPolicy.enabled=false"])?;
    assert!(find(&d, "ArmorRefreshPolicy").is_none());
    Ok(())
}

#[test]
fn cert_manager_and_optional_objects_render_when_enabled() -> Result<()> {
    let d = render(&[
        "--set",
        "webhook.certManager.enabled=true,metrics.serviceMonitor.enabled=true,networkPolicy.enabled=true",
    ])?;
    for k in ["Certificate", "Issuer", "ServiceMonitor", "NetworkPolicy"] {
        assert!(kinds(&d).contains(k), "{k} missing");
    }
    let mwc = find(&d, "MutatingWebhookConfiguration").unwrap();
    assert_eq!(
        mwc["metadata"]["annotations"]["cert-manager.io/inject-ca-from"].as_str(),
        Some("armor-refresh-system/armor-refresh-webhook")
    );
    let args = args_of(&d);
    assert!(args.contains(&"--tls-cert=/tls/tls.crt".to_string()));
    assert!(!args.contains(&"--self-signed".to_string()));
    // cert-manager injects the CA: no write access to webhook configurations.
    assert!(
        !rbac(&d)
            .iter()
            .any(|r| r.contains("mutatingwebhookconfigurations"))
    );
    // An existing issuer is used as is.
    let d = render(&[
        "--set",
        "webhook.certManager.enabled=true,webhook.certManager.issuerRef.name=corp-ca,webhook.certManager.issuerRef.kind=ClusterIssuer",
    ])?;
    assert!(!kinds(&d).contains("Issuer"));
    let cert = find(&d, "Certificate").unwrap();
    assert_eq!(
        cert["spec"]["issuerRef"]["kind"].as_str(),
        Some("ClusterIssuer")
    );
    // Without the webhook: no configuration, no pod reads, --no-webhook.
    let d = render(&["--set", "webhook.enabled=false"])?;
    assert!(!kinds(&d).contains("MutatingWebhookConfiguration"));
    assert!(args_of(&d).contains(&"--no-webhook".to_string()));
    assert!(!rbac(&d).contains("ClusterRole core/pods get"));
    Ok(())
}

/// The CRDs are templates made of files/crds/ (what `make crds` writes), unchanged but for
/// the chart's labels and the keep annotation; off with crds.enabled=false.
#[test]
fn crds_render_from_files_with_the_chart_labels_and_the_keep_annotation() -> Result<()> {
    let crds = |d: &[Value]| -> Vec<Value> {
        d.iter()
            .filter(|d| d["kind"] == "CustomResourceDefinition")
            .cloned()
            .collect()
    };
    let files = root().join(CHART).join("files/crds");
    let mut names = vec![];
    for e in std::fs::read_dir(&files)? {
        names.push(e?.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    assert_eq!(
        names,
        [
            "refresh.armor.dev_armorrefreshpolicies.yaml",
            "refresh.armor.dev_armorrefreshruns.yaml"
        ]
    );
    // A crds/ folder would be installed by Helm besides the templates, and never upgraded.
    assert!(
        !root().join(CHART).join("crds").exists(),
        "{CHART}/crds/ is back"
    );
    let d = render(&[])?;
    let rendered = crds(&d);
    assert_eq!(rendered.len(), 2);
    for name in &names {
        let file = &docs(&std::fs::read_to_string(files.join(name))?)?[0];
        let r = rendered
            .iter()
            .find(|r| r["metadata"]["name"] == file["metadata"]["name"])
            .ok_or(format!("{name} not rendered"))?;
        let meta = &r["metadata"];
        assert_eq!(
            meta["annotations"]["helm.sh/resource-policy"], "keep",
            "{name}"
        );
        assert_eq!(
            meta["labels"]["app.kubernetes.io/managed-by"], "Helm",
            "{name}"
        );
        assert_eq!(
            meta["labels"]["app.kubernetes.io/instance"],
            "armor-refresh"
        );
        assert!(meta["labels"]["helm.sh/chart"].is_string());
        // Everything else as generated: the CEL rules were not read as templates, no value
        // changed through fromYaml/toYaml (only `0.0` is written `0`).
        let mut stripped = r.clone();
        let m = stripped["metadata"].as_object_mut().ok_or("no metadata")?;
        m.remove("labels");
        m.remove("annotations");
        assert!(
            chart::numbers_as_floats(&stripped) == chart::numbers_as_floats(file),
            "{name} differs from what the chart renders"
        );
        let text = serde_json::to_string(file)?;
        assert!(
            text.contains("x-kubernetes-validations"),
            "{name} has CEL rules"
        );
    }
    let d = render(&["--set", "crds.keep=false"])?;
    for c in crds(&d) {
        assert!(c["metadata"]["annotations"]["helm.sh/resource-policy"].is_null());
    }
    // The CRDs are yours: none rendered, and the default policy needs no served kind.
    let d = render_raw(&["--set", "crds.enabled=false"])?;
    assert!(crds(&d).is_empty());
    assert!(find(&d, "ArmorRefreshPolicy").is_some());
    // A first install with the CRDs cannot create a policy in the same release.
    let d = render_raw(&[])?;
    assert_eq!(crds(&d).len(), 2);
    assert!(find(&d, "ArmorRefreshPolicy").is_none());
    Ok(())
}

#[test]
fn values_schema_rejects_bad_values_with_the_key_named() -> Result<()> {
    for (set, key) in [
        ("controller.podRefresher.batchSize=0", "batchSize"),
        ("controller.podRefresher.batchSize=ten", "batchSize"),
        ("controller.podRefresher.interval=soon", "interval"),
        ("controller.logFormat=xml", "logFormat"),
        ("defaultPolicy.trigger=Sometimes", "trigger"),
        ("webhook.failurePolicy=Maybe", "failurePolicy"),
        ("replicaCount=0", "replicaCount"),
        ("controller.podRefreshr.batchSize=5", "podRefreshr"),
        ("crds.enabled=maybe", "/crds/enabled"),
        ("crds.kep=false", "kep"),
    ] {
        schema_rejects(set, key)?;
    }
    Ok(())
}

/// `helm template --set SET` fails on the values schema, naming `key`.
fn schema_rejects(set: &str, key: &str) -> Result<()> {
    let args = [
        "template",
        "x",
        CHART,
        "--kube-version",
        "1.34.4",
        "--set",
        set,
    ];
    let (ok, _, err) = run("helm", &args)?;
    assert!(!ok, "--set {set} was accepted");
    assert!(
        err.contains("values don't meet the specifications of the schema") && err.contains(key),
        "--set {set}: {err}"
    );
    Ok(())
}

/// The rules the operator needs, and nothing else. e2e/tests/rbac.rs shows each is used by
/// running the operator as this ServiceAccount; docs/security.md says why each is needed.
#[test]
fn rbac_grants_exactly_the_listed_verbs() -> Result<()> {
    let expected: BTreeSet<String> = [
        "ClusterRole core/pods list",
        "ClusterRole core/pods watch",
        "ClusterRole core/pods get",
        "ClusterRole core/nodes list",
        "ClusterRole core/nodes watch",
        "ClusterRole core/namespaces list",
        "ClusterRole core/namespaces watch",
        "ClusterRole policy/poddisruptionbudgets list",
        "ClusterRole policy/poddisruptionbudgets watch",
        "ClusterRole apps/replicasets list",
        "ClusterRole apps/replicasets watch",
        "ClusterRole apps/statefulsets list",
        "ClusterRole apps/statefulsets watch",
        "ClusterRole apps/deployments list",
        "ClusterRole apps/deployments watch",
        "ClusterRole apps/daemonsets list",
        "ClusterRole apps/daemonsets watch",
        "ClusterRole coordination.k8s.io/leases list",
        "ClusterRole coordination.k8s.io/leases watch",
        "ClusterRole core/pods/eviction create",
        "ClusterRole apps/deployments patch",
        "ClusterRole apps/statefulsets patch",
        "ClusterRole apps/daemonsets patch",
        "ClusterRole refresh.armor.dev/armorrefreshpolicies list",
        "ClusterRole refresh.armor.dev/armorrefreshpolicies watch",
        "ClusterRole refresh.armor.dev/armorrefreshruns list",
        "ClusterRole refresh.armor.dev/armorrefreshruns watch",
        "ClusterRole refresh.armor.dev/armorrefreshruns create",
        "ClusterRole refresh.armor.dev/armorrefreshruns delete",
        "ClusterRole refresh.armor.dev/armorrefreshpolicies/status patch",
        "ClusterRole refresh.armor.dev/armorrefreshruns/status patch",
        "ClusterRole events.k8s.io/events create",
        "ClusterRole events.k8s.io/events patch",
        "ClusterRole admissionregistration.k8s.io/mutatingwebhookconfigurations get [armor-refresh]",
        "ClusterRole admissionregistration.k8s.io/mutatingwebhookconfigurations patch [armor-refresh]",
        "Role coordination.k8s.io/leases create",
        "Role coordination.k8s.io/leases get [armor-refresh]",
        "Role coordination.k8s.io/leases patch [armor-refresh]",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    let got = rbac(&render(&[])?);
    let extra: Vec<_> = got.difference(&expected).collect();
    let missing: Vec<_> = expected.difference(&got).collect();
    assert!(
        extra.is_empty() && missing.is_empty(),
        "RBAC drifted.\n  granted but not needed: {extra:?}\n  needed but not granted: {missing:?}"
    );
    for r in &got {
        assert!(!r.contains('*'), "wildcard in {r}");
    }
    // Secrets are never readable.
    assert!(!got.iter().any(|r| r.contains("secrets")));
    Ok(())
}

/// `kubectl apply --dry-run=server` of a YAML stream: the API server runs admission, schema
/// and CEL validation without persisting anything.
async fn server_dry_run(what: &str, yaml: &str) -> Result<()> {
    let (ok, out, err) = kubectl(&["apply", "--dry-run=server", "-f", "-"], Some(yaml)).await?;
    assert!(ok, "{what} rejected by the API server: {err}");
    assert!(out.contains("(server dry run)"), "{what}: {out}");
    Ok(())
}

#[tokio::test]
async fn rendered_chart_passes_a_server_side_dry_run() -> Result<()> {
    let c = client().await?;
    install_crds(&c).await?;
    // Namespaced objects of the release need their namespace to exist for a dry run.
    armor_refresh_e2e::apply(&format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {NS}}}\n"
    ))
    .await?;
    for set in [
        "",
        "webhook.enabled=false,defaultPolicy.enabled=false,networkPolicy.enabled=true",
        "controller.podRefresher.batchSize=10%,defaultPolicy.windows[0].schedule=0 1 * * *,defaultPolicy.windows[0].duration=4h,defaultPolicy.windows[0].timeZone=Europe/Berlin",
    ] {
        // The `helm test` pod is left out: a dry run creates no ServiceAccount for it to run
        // as (helm_test_command_succeeds_with_the_charts_rbac_and_its_pod_is_accepted checks it).
        let mut args = vec!["--skip-tests"];
        if !set.is_empty() {
            args.extend(["--set", set]);
        }
        let rendered = render(&args)?;
        // Both CRDs are templates now, checked by the API server with the rest.
        let crds = rendered
            .iter()
            .filter(|d| d["kind"] == "CustomResourceDefinition")
            .count();
        assert_eq!(crds, 2, "--set {set}: the CRDs");
        let yaml = rendered
            .iter()
            .map(|d| Ok(format!("---\n{}", serde_saphyr::to_string(d)?)))
            .collect::<Result<String>>()?;
        server_dry_run(&format!("helm template --set {set}"), &yaml).await?;
    }
    Ok(())
}

#[test]
fn argocd_health_checks_pass_their_testdata_in_gopher_lua() -> Result<()> {
    let (ok, out, err) = run("luahealth", &["deploy/argocd/resource_customizations"])?;
    assert!(ok, "{out}{err}");
    // Both kinds, every state the README names.
    assert!(out.contains("16 of 16 health checks passed"), "{out}");
    assert!(
        out.contains("testdata/window.yaml: Progressing"),
        "a window in flight: {out}"
    );
    Ok(())
}

#[test]
fn argocd_cm_carries_exactly_the_health_scripts() -> Result<()> {
    let base = root().join("deploy/argocd");
    let cm = &docs(&std::fs::read_to_string(base.join("argocd-cm.yaml"))?)?[0];
    let data = cm["data"].as_object().ok_or("argocd-cm.yaml has no data")?;
    let mut n = 0;
    for kind in ["ArmorRefreshPolicy", "ArmorRefreshRun"] {
        let lua = std::fs::read_to_string(base.join(format!(
            "resource_customizations/refresh.armor.dev/{kind}/health.lua"
        )))?;
        let key = format!("resource.customizations.health.refresh.armor.dev_{kind}");
        assert_eq!(
            data.get(key.as_str()).and_then(Value::as_str),
            Some(lua.as_str()),
            "{key} differs from health.lua: run deploy/argocd/render-cm.py"
        );
        n += 1;
    }
    assert_eq!(data.len(), n, "argocd-cm.yaml holds only the health checks");
    Ok(())
}

/// Every ```yaml block of the README and docs/, and every file of examples/, is accepted by
/// the API server. The snapshot is the `plan` command's input (a kubectl List of live
/// objects, tested by tests/cli.rs), not something to apply.
#[tokio::test]
async fn every_yaml_in_the_docs_and_examples_passes_a_server_side_dry_run() -> Result<()> {
    let c = client().await?;
    install_crds(&c).await?;
    let mut sources = vec![];
    let mut md = vec![root().join("README.md")];
    if let Ok(dir) = std::fs::read_dir(root().join("docs")) {
        md.extend(
            dir.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "md")),
        );
    }
    for path in md {
        let text = std::fs::read_to_string(&path)?;
        let mut block: Option<String> = None;
        for line in text.lines() {
            match (&mut block, line.trim_start()) {
                (None, "```yaml") => block = Some(String::new()),
                (Some(b), "```") => {
                    sources.push((format!("{} block", path.display()), b.clone()));
                    block = None;
                }
                (Some(b), _) => {
                    b.push_str(line);
                    b.push('\n');
                }
                _ => {}
            }
        }
    }
    let mut files = 0;
    for e in std::fs::read_dir(root().join("examples"))? {
        let path = e?.path();
        if path.file_name().is_some_and(|n| n == "snapshot.yaml") {
            continue;
        }
        files += 1;
        sources.push((path.display().to_string(), std::fs::read_to_string(&path)?));
    }
    assert!(files >= 4, "examples/ has its policies and runs");
    let cm = root().join("deploy/argocd/argocd-cm.yaml");
    sources.push((cm.display().to_string(), std::fs::read_to_string(&cm)?));
    // The examples Artifact Hub shows for the chart's CRDs (a YAML list in an annotation).
    let chart = docs(&std::fs::read_to_string(
        root().join(CHART).join("Chart.yaml"),
    )?)?;
    let examples = chart[0]["annotations"]["artifacthub.io/crdsExamples"]
        .as_str()
        .ok_or("Chart.yaml has no artifacthub.io/crdsExamples")?;
    let listed = docs(examples)?;
    assert_eq!(listed.len(), 1, "one YAML list");
    for (i, o) in listed[0].as_array().ok_or("not a list")?.iter().enumerate() {
        sources.push((
            format!("Chart.yaml artifacthub.io/crdsExamples[{i}]"),
            serde_json::to_string(o)?,
        ));
    }
    // Objects of the docs live in namespaces a real install has (argocd, the operator's).
    let mut namespaces = BTreeSet::new();
    for (_, yaml) in &sources {
        for d in docs(yaml)? {
            if let Some(ns) = d["metadata"]["namespace"].as_str() {
                namespaces.insert(ns.to_string());
            }
        }
    }
    for ns in namespaces {
        armor_refresh_e2e::apply(&format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}}}\n"
        ))
        .await?;
    }
    for (what, yaml) in &sources {
        // Each must be a real manifest, not an empty block.
        assert!(
            docs(yaml)?.iter().all(|d| d["kind"].is_string()),
            "{what} has a document without a kind"
        );
        server_dry_run(what, yaml).await?;
    }
    eprintln!("{} YAML sources accepted by the API server", sources.len());
    Ok(())
}

#[test]
fn the_webhook_registers_only_what_its_injection_point_needs() -> Result<()> {
    use armor_refresh::webhook::registration;
    let webhook = |set: &str| -> Result<Value> {
        let d = render(&["--set", set])?;
        let mwc = find(&d, "MutatingWebhookConfiguration").ok_or("no webhook configuration")?;
        Ok(mwc["webhooks"][0].clone())
    };
    // The chart says what the operator registers when it manages the configuration itself.
    for (set, create, binding) in [
        ("webhook.injectAt=", false, true),
        ("defaultPolicy.profile.injectAt=Create", true, false),
        ("webhook.injectAt=Create", true, false),
        ("webhook.injectAt=Both", true, true),
    ] {
        let w = webhook(set)?;
        let want = registration::rules(create, binding);
        assert_eq!(w["rules"], want["rules"], "{set}");
        let conditions = w["matchConditions"].clone();
        let conditions = if conditions.is_null() {
            serde_json::json!([])
        } else {
            conditions
        };
        assert_eq!(conditions, want["matchConditions"], "{set}");
    }
    Ok(())
}

/// The chart's `helm test` Pod: a hook, so `helm template` prints it after the manifest.
fn helm_test_pod(docs: &[Value]) -> Option<&Value> {
    docs.iter().find(|d| {
        d["kind"] == "Pod" && d["metadata"]["annotations"]["helm.sh/hook"].as_str() == Some("test")
    })
}

/// Does a `matchLabels`-style map (or a Service's selector) select these labels?
fn selects(selector: &Value, labels: &Value) -> bool {
    selector
        .as_object()
        .is_some_and(|m| !m.is_empty() && m.iter().all(|(k, v)| &labels[k] == v))
}

/// `helm test` runs the operator's own read-only `get` with the operator's image,
/// ServiceAccount, hardening and scheduling; nothing of the operator's selects the pod.
#[test]
fn helm_test_hook_runs_the_operators_get_hardened_where_the_operator_runs() -> Result<()> {
    let d = render(&[])?;
    let pod = helm_test_pod(&d).ok_or(
        "no `helm test` Pod rendered (templates/tests/test-operator.yaml; not in .helmignore?)",
    )?;
    assert_eq!(
        pod["metadata"]["annotations"]["helm.sh/hook-delete-policy"].as_str(),
        Some("before-hook-creation"),
        "replaced by the next `helm test`, kept for `helm test --logs`"
    );
    let spec = &pod["spec"];
    let dep = find(&d, "Deployment").unwrap();
    let op = &dep["spec"]["template"]["spec"];
    assert_eq!(spec["restartPolicy"].as_str(), Some("Never"));
    assert_eq!(spec["serviceAccountName"], op["serviceAccountName"]);
    assert_eq!(spec["serviceAccountName"].as_str(), Some("armor-refresh"));
    assert_eq!(spec["containers"].as_array().map(Vec::len), Some(1));
    let c = &spec["containers"][0];
    let chart = &docs(&std::fs::read_to_string(
        root().join(CHART).join("Chart.yaml"),
    )?)?[0];
    let app_version = chart["appVersion"]
        .as_str()
        .ok_or("Chart.yaml: appVersion")?;
    assert_eq!(
        c["image"].as_str(),
        Some(format!("armor-refresh:{app_version}").as_str())
    );
    assert_eq!(c["image"], op["containers"][0]["image"]);
    assert_eq!(c["imagePullPolicy"], op["containers"][0]["imagePullPolicy"]);
    // The image's entrypoint is the binary; `get` lists policies and runs and writes nothing.
    // No kubeconfig: the in-cluster config of the ServiceAccount.
    assert!(c["command"].is_null(), "the image's entrypoint runs");
    assert_eq!(c["args"], serde_json::json!(["get"]));
    assert!(c["env"].is_null() && c["volumeMounts"].is_null(), "{c}");
    // Hardened as the operator is.
    assert_eq!(
        spec["securityContext"]["runAsNonRoot"].as_bool(),
        Some(true)
    );
    assert_eq!(
        spec["securityContext"]["seccompProfile"]["type"].as_str(),
        Some("RuntimeDefault")
    );
    let sc = &c["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"].as_bool(), Some(true));
    assert_eq!(sc["allowPrivilegeEscalation"].as_bool(), Some(false));
    assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert_eq!(spec["securityContext"], op["securityContext"]);
    assert_eq!(*sc, op["containers"][0]["securityContext"]);
    assert!(c["resources"]["limits"]["memory"].is_string());
    // What `get` reads, the operator's ClusterRole grants (e2e/tests/rbac.rs covers the rest).
    let grants = rbac(&d);
    for g in [
        "ClusterRole refresh.armor.dev/armorrefreshpolicies list",
        "ClusterRole refresh.armor.dev/armorrefreshruns list",
    ] {
        assert!(grants.contains(g), "{g} not granted: `get` would fail");
    }
    // Not the operator's pod: its ReplicaSet would adopt it, its Service route to it, its PDB
    // count it. Never injected nor refreshed, as the operator is not.
    let labels = &pod["metadata"]["labels"];
    assert!(!selects(&dep["spec"]["selector"]["matchLabels"], labels));
    for s in d.iter().filter(|d| d["kind"] == "Service") {
        assert!(!selects(&s["spec"]["selector"], labels), "{s}");
    }
    let pdb = find(&d, "PodDisruptionBudget").unwrap();
    assert!(!selects(&pdb["spec"]["selector"]["matchLabels"], labels));
    assert_eq!(labels["refresh.armor.dev/exclude"].as_str(), Some("true"));
    // Default scheduling: anywhere (the operator's default affinity only spreads its replicas).
    for k in ["nodeSelector", "tolerations", "affinity"] {
        assert!(spec[k].is_null(), "{k}: {}", spec[k]);
    }

    // Where the operator is placed, the test goes, with the same image and pull secrets.
    let d = render(&[
        "--set",
        "image.repository=team/armor-refresh,image.tag=1.2.3,imagePullSecrets[0].name=pull",
        "--set",
        "nodeSelector.kubernetes\\.io/os=linux,nodeSelector.pool=system",
        "--set-json",
        r#"tolerations=[{"key":"dedicated","operator":"Equal","value":"system","effect":"NoSchedule"}]"#,
        "--set-json",
        r#"affinity={"nodeAffinity":{"requiredDuringSchedulingIgnoredDuringExecution":{"nodeSelectorTerms":[{"matchExpressions":[{"key":"topology.kubernetes.io/zone","operator":"In","values":["zone-a"]}]}]}}}"#,
    ])?;
    let spec = &helm_test_pod(&d).ok_or("no helm test Pod")?["spec"];
    let op = &find(&d, "Deployment").unwrap()["spec"]["template"]["spec"];
    for k in [
        "nodeSelector",
        "tolerations",
        "affinity",
        "imagePullSecrets",
    ] {
        assert!(!spec[k].is_null(), "{k} missing from the test pod");
        assert_eq!(spec[k], op[k], "{k}: the test pod and the operator differ");
    }
    assert_eq!(
        spec["containers"][0]["image"].as_str(),
        Some("team/armor-refresh:1.2.3")
    );

    let d = render(&["--set", "tests.enabled=false"])?;
    assert!(
        helm_test_pod(&d).is_none(),
        "tests.enabled=false renders no test"
    );
    assert!(!kinds(&d).contains("Pod"));
    Ok(())
}

/// The test pod's command, run as the chart's ServiceAccount with exactly the chart's RBAC
/// (a token instead of the in-cluster config), succeeds and shows both kinds; the pod itself
/// passes a server-side dry run. The real `helm test` runs on real nodes elsewhere.
#[tokio::test]
async fn helm_test_command_succeeds_with_the_charts_rbac_and_its_pod_is_accepted() -> Result<()> {
    use armor_refresh_e2e::chart::{AUDITED_NS, RELEASE};
    let c = client().await?;
    install_crds(&c).await?;
    let rendered = chart::template(&[
        "templates/serviceaccount.yaml",
        "templates/rbac.yaml",
        "templates/tests/test-operator.yaml",
    ])?;
    let all = docs(&rendered)?;
    let pod = helm_test_pod(&all).ok_or("no helm test Pod")?.clone();
    let rbac_yaml = all
        .iter()
        .filter(|d| d["kind"] != "Pod")
        .map(|d| Ok(format!("---\n{}", serde_saphyr::to_string(d)?)))
        .collect::<Result<String>>()?;
    armor_refresh_e2e::apply(&format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {AUDITED_NS}}}\n{rbac_yaml}"
    ))
    .await?;
    assert_eq!(pod["spec"]["serviceAccountName"].as_str(), Some(RELEASE));
    server_dry_run("the helm test Pod", &serde_json::to_string(&pod)?).await?;

    let args: Vec<&str> = pod["spec"]["containers"][0]["args"]
        .as_array()
        .ok_or("args")?
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let kubeconfig = chart::service_account_kubeconfig().await?;
    let out = tokio::process::Command::new(armor_refresh_e2e::process::binary())
        .args(&args)
        .env("KUBECONFIG", &kubeconfig)
        .output()
        .await?;
    let _ = std::fs::remove_file(&kubeconfig);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success(),
        "`armor-refresh {}` as {RELEASE}: {stdout}{stderr}",
        args.join(" ")
    );
    assert!(stderr.trim().is_empty(), "{stderr}");
    eprintln!(
        "`armor-refresh {}` as the chart's ServiceAccount:\n{stdout}",
        args.join(" ")
    );
    Ok(())
}

/// The node gating of KubeArmor's rule, as chart values: the agents' labels are the
/// operator's `--agent-selector` (with or without the webhook: the runs gate on it too), the
/// enforcing nodes, the agent requirement and init containers are the default policy's fields,
/// absent unless set so the operator's defaults apply. Read back by the operator's own code.
#[test]
fn kubearmor_node_gating_values_render_into_the_flag_and_the_policy() -> Result<()> {
    use armor_refresh::cluster::{DEFAULT_AGENT_SELECTOR, parse_agent_selector};
    use kube::core::SelectorExt;
    use std::collections::BTreeMap;
    const SERVED: &str = "refresh.armor.dev/v1alpha1/ArmorRefreshPolicy";
    let labels = |l: &[(&str, &str)]| -> BTreeMap<String, String> {
        l.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let valid = |d: &[Value]| -> Result<armor_refresh::policy::ValidPolicy> {
        let p = find(d, "ArmorRefreshPolicy").ok_or("no default policy rendered")?;
        let p: armor_refresh::api::ArmorRefreshPolicy = serde_json::from_value(p.clone())?;
        armor_refresh::policy::validate("default", &p.spec).map_err(|e| e.to_string().into())
    };
    let agent_flag = |d: &[Value]| -> Vec<String> {
        args_of(d)
            .into_iter()
            .filter_map(|a| a.strip_prefix("--agent-selector=").map(str::to_string))
            .collect()
    };
    let kubearmor_node = labels(&[("kubearmor.io/enforcer", "apparmor")]);

    // Defaults: the operator's own agent selector; KubeArmor's rule left to the operator.
    let d = render(&["--api-versions", SERVED])?;
    assert_eq!(agent_flag(&d), [DEFAULT_AGENT_SELECTOR]);
    let profile = &find(&d, "ArmorRefreshPolicy").ok_or("no policy")?["spec"]["profile"];
    assert!(
        profile.get("enforcingNodeSelector").is_none() && profile.get("requireAgent").is_none(),
        "{profile}"
    );
    let v = valid(&d)?;
    assert!(v.require_agent);
    let nodes = v
        .enforcing_nodes
        .as_ref()
        .ok_or("no enforcing-node selector")?;
    assert!(nodes.matches(&kubearmor_node) && !nodes.matches(&labels(&[])));
    assert!(!v.spec.profile.include_init_containers);

    // Every value set: into the flag and the fields, read as the operator reads them.
    let selector = "app.kubernetes.io/name=kubearmor-agent,app.kubernetes.io/part-of=kubearmor";
    let d = render(&[
        "--api-versions",
        SERVED,
        "--set-json",
        &format!("kubearmor.agentSelector={selector:?}"),
        "--set",
        "defaultPolicy.profile.enforcingNodeSelector.matchLabels.apparmor-enforcing=yes",
        "--set",
        "defaultPolicy.profile.requireAgent=false,defaultPolicy.profile.includeInitContainers=true",
    ])?;
    assert_eq!(agent_flag(&d), [selector]);
    let agents = parse_agent_selector(selector)?;
    assert!(agents.matches(&labels(&[
        ("app.kubernetes.io/name", "kubearmor-agent"),
        ("app.kubernetes.io/part-of", "kubearmor")
    ])));
    assert!(!agents.matches(&labels(&[("kubearmor-app", "kubearmor")])));
    let v = valid(&d)?;
    assert!(!v.require_agent);
    let nodes = v
        .enforcing_nodes
        .as_ref()
        .ok_or("no enforcing-node selector")?;
    assert!(nodes.matches(&labels(&[("apparmor-enforcing", "yes")])));
    assert!(!nodes.matches(&kubearmor_node));
    assert!(v.spec.profile.include_init_containers);
    // Without the webhook the runs still gate on the agents.
    let d = render(&[
        "--set",
        "webhook.enabled=false,kubearmor.agentSelector=kubearmor-app",
    ])?;
    assert_eq!(agent_flag(&d), ["kubearmor-app"]);
    // An explicit {} is every node (as in the policy), unlike the default.
    let d = render(&[
        "--api-versions",
        SERVED,
        "--set-json",
        "defaultPolicy.profile.enforcingNodeSelector={}",
    ])?;
    let v = valid(&d)?;
    assert!(
        v.enforcing_nodes
            .as_ref()
            .is_none_or(|s| s.matches(&labels(&[]))),
        "{:?}",
        v.enforcing_nodes
    );

    // The schema names the key of what the operator or the API server would refuse.
    for (set, key) in [
        (
            "kubearmor.agentSelector=kubearmor-app==kubearmor",
            "agentSelector",
        ),
        ("kubearmor.agentSelector=", "agentSelector"),
        (
            "defaultPolicy.profile.injectAt=Create,defaultPolicy.profile.requireAgent=true",
            "requireAgent",
        ),
        (
            "defaultPolicy.profile.injectAt=Create,defaultPolicy.profile.enforcingNodeSelector.matchLabels.a=b",
            "enforcingNodeSelector",
        ),
        (
            "defaultPolicy.profile.requireAgent=sometimes",
            "requireAgent",
        ),
        ("tests.enabled=maybe", "tests"),
    ] {
        schema_rejects(set, key)?;
    }
    Ok(())
}

/// The policy with every gating value set passes the API server's schema and CEL rules.
#[tokio::test]
async fn kubearmor_node_gating_values_pass_a_server_side_dry_run() -> Result<()> {
    let c = client().await?;
    install_crds(&c).await?;
    for set in [
        "defaultPolicy.profile.enforcingNodeSelector.matchLabels.apparmor-enforcing=yes,defaultPolicy.profile.requireAgent=false,defaultPolicy.profile.includeInitContainers=true",
        "defaultPolicy.profile.injectAt=Create,defaultPolicy.profile.requireAgent=false",
    ] {
        let d = render(&[
            "--api-versions",
            "refresh.armor.dev/v1alpha1/ArmorRefreshPolicy",
            "--set",
            set,
        ])?;
        let p = find(&d, "ArmorRefreshPolicy").ok_or("no default policy")?;
        server_dry_run(
            &format!("the default policy with {set}"),
            &serde_json::to_string(p)?,
        )
        .await?;
    }
    Ok(())
}

/// actionlint (e2e/tools/build.sh) on every workflow: syntax, expressions, the inputs of the
/// actions it knows, runner labels, permissions, and each `run:` script through shellcheck.
#[test]
fn github_workflows_pass_actionlint_and_shellcheck() -> Result<()> {
    // actionlint silently skips the scripts when shellcheck is missing.
    let sc = std::process::Command::new("shellcheck")
        .arg("--version")
        .output();
    assert!(
        sc.is_ok_and(|o| o.status.success()),
        "shellcheck is not on PATH (.ci/run installs it: apt-get install shellcheck)"
    );
    let mut files: Vec<String> = std::fs::read_dir(root().join(".github/workflows"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yml" || x == "yaml"))
        .map(|p| p.strip_prefix(root()).unwrap_or(&p).display().to_string())
        .collect();
    files.sort();
    assert_eq!(
        files,
        [".github/workflows/ci.yml", ".github/workflows/release.yml"]
    );
    let mut args = vec!["-no-color", "-shellcheck=shellcheck"];
    args.extend(files.iter().map(String::as_str));
    let (ok, out, err) = run("actionlint", &args)?;
    assert!(
        ok && out.trim().is_empty(),
        "actionlint findings:\n{out}{err}"
    );
    Ok(())
}

/// The release's version check reads the files the repository keeps its version in (the
/// `[package]` of Cargo.toml, the chart's version and appVersion), runs as GitHub runs it
/// (bash -e -o pipefail), passes when they and the tag agree and names each disagreement.
#[test]
fn release_workflow_checks_the_tag_against_cargo_toml_and_chart_yaml() -> Result<()> {
    let wf = &docs(&std::fs::read_to_string(
        root().join(".github/workflows/release.yml"),
    )?)?[0];
    assert_eq!(wf["on"]["push"]["tags"], serde_json::json!(["v*"]));
    let script = wf["jobs"]["versions"]["steps"]
        .as_array()
        .ok_or("release.yml: jobs.versions.steps")?
        .iter()
        .find(|s| s["id"] == "check")
        .and_then(|s| s["run"].as_str())
        .ok_or("release.yml: no step `check` in job `versions`")?
        .to_string();
    let chart_yaml = format!("{CHART}/Chart.yaml");
    for f in ["Cargo.toml", chart_yaml.as_str()] {
        assert!(script.contains(f), "the check does not read {f}");
        assert!(root().join(f).is_file(), "{f} is not the repository's");
    }
    // Nothing is published before the check passed.
    for job in ["image", "chart", "binaries", "release"] {
        let needs = &wf["jobs"][job]["needs"];
        let listed = needs == "versions"
            || needs
                .as_array()
                .is_some_and(|n| n.iter().any(|x| x == "versions"));
        assert!(listed, "job {job} does not wait for the version check");
    }

    let cargo_toml = std::fs::read_to_string(root().join("Cargo.toml"))?;
    let chart_text = std::fs::read_to_string(root().join(&chart_yaml))?;
    let mut in_package = false;
    let mut cargo = None;
    for line in cargo_toml.lines() {
        if line.starts_with('[') {
            in_package = line == "[package]";
        } else if in_package && cargo.is_none() {
            cargo = line
                .strip_prefix("version = \"")
                .and_then(|v| v.strip_suffix('"'));
        }
    }
    let cargo = cargo.ok_or("Cargo.toml: no [package] version")?;
    let chart = &docs(&chart_text)?[0];
    let scratch =
        std::env::temp_dir().join(format!("armor-refresh-release-{}", std::process::id()));
    std::fs::create_dir_all(scratch.join(CHART))?;
    let check = |dir: &std::path::Path, tag: &str| -> Result<(bool, String, String)> {
        let output = scratch.join("github-output");
        let _ = std::fs::remove_file(&output);
        let out = std::process::Command::new("bash")
            .args(["-e", "-o", "pipefail", "-c", &script])
            .current_dir(dir)
            .env("GITHUB_REF_NAME", tag)
            .env("GITHUB_OUTPUT", &output)
            .output()?;
        Ok((
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
            std::fs::read_to_string(&output).unwrap_or_default(),
        ))
    };

    // The repository as it is: a tag of its crate's version passes exactly when the chart
    // says the same.
    let agree =
        chart["version"].as_str() == Some(cargo) && chart["appVersion"].as_str() == Some(cargo);
    let (ok, out, _) = check(&root(), &format!("v{cargo}"))?;
    assert_eq!(ok, agree, "Cargo.toml {cargo}, Chart.yaml {chart}: {out}");

    // A copy of both files with one version: passes, and hands the version to the other jobs.
    let set_chart = |version: &str, app: &str| -> String {
        chart_text
            .lines()
            .map(|l| {
                if l.starts_with("version:") {
                    format!("version: {version}")
                } else if l.starts_with("appVersion:") {
                    format!("appVersion: \"{app}\"")
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    std::fs::write(scratch.join("Cargo.toml"), &cargo_toml)?;
    let chart_copy = scratch.join(&chart_yaml);
    std::fs::write(&chart_copy, set_chart(cargo, cargo))?;
    let (ok, out, output) = check(&scratch, &format!("v{cargo}"))?;
    assert!(ok, "{out}");
    assert_eq!(output.trim(), format!("version={cargo}"));
    // Each disagreement fails and is named.
    let (ok, out, _) = check(&scratch, "v99.0.0")?;
    assert!(!ok && out.contains("Cargo.toml version is"), "{out}");
    std::fs::write(&chart_copy, set_chart(cargo, "99.0.0"))?;
    let (ok, out, _) = check(&scratch, &format!("v{cargo}"))?;
    assert!(
        !ok && out.contains("Chart.yaml appVersion is '99.0.0'"),
        "{out}"
    );
    assert!(!out.contains("Cargo.toml version is"), "{out}");
    std::fs::write(&chart_copy, set_chart("99.0.0", cargo))?;
    let (ok, out, _) = check(&scratch, &format!("v{cargo}"))?;
    assert!(
        !ok && out.contains("Chart.yaml version is '99.0.0'"),
        "{out}"
    );
    // Only the [package] version counts (TOML tables come in any order), and a tag must be
    // vMAJOR.MINOR.PATCH.
    std::fs::write(&chart_copy, set_chart(cargo, cargo))?;
    std::fs::write(
        scratch.join("Cargo.toml"),
        format!("[dependencies.other]\nversion = \"99.0.0\"\n\n{cargo_toml}"),
    )?;
    let (ok, out, _) = check(&scratch, &format!("v{cargo}"))?;
    assert!(ok, "a dependency's version taken for the crate's: {out}");
    std::fs::write(
        scratch.join("Cargo.toml"),
        cargo_toml.replacen(&format!("version = \"{cargo}\""), "version = \"99.0.0\"", 1),
    )?;
    let (ok, out, _) = check(&scratch, &format!("v{cargo}"))?;
    assert!(
        !ok && out.contains("Cargo.toml version is '99.0.0'"),
        "{out}"
    );
    let (ok, out, _) = check(&scratch, cargo)?;
    assert!(!ok && out.contains("is not vMAJOR.MINOR.PATCH"), "{out}");
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(())
}
