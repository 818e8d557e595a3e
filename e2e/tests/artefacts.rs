//! The release artefacts, checked by their own tools: the Helm chart (helm lint, helm template
//! with default and other values, the values schema, the RBAC rules, and the rendered
//! manifests accepted by the real API server with a server-side dry run), Argo CD's health
//! scripts (gopher-lua, the VM Argo CD runs them in), and every YAML of the README, docs/ and
//! examples/ (server-side dry run), so the docs cannot rot.
//!
//! helm and luahealth come from `e2e/tools/build.sh`; run-tests.sh exports their directory.

use std::collections::BTreeSet;

use armor_refresh_e2e::chart::documents as docs;
use armor_refresh_e2e::{Result, chart, client, install_crds, kubectl, root};
use serde_json::Value;

const CHART: &str = "charts/armor-refresh";
const NS: &str = "armor-refresh-system";

/// Runs a tool and returns (success, stdout, stderr).
fn run(name: &str, args: &[&str]) -> Result<(bool, String, String)> {
    let out = std::process::Command::new(chart::tool(name)?)
        .args(args)
        .current_dir(root())
        .output()
        .map_err(|e| format!("{name}: {e}"))?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// `helm template` with `--set`/`--set-string` style arguments; the documents rendered.
fn render(extra: &[&str]) -> Result<Vec<Value>> {
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
    ] {
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
    }
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
        let mut args = vec!["--include-crds"];
        if !set.is_empty() {
            args.extend(["--set", set]);
        }
        let rendered = render(&args)?;
        assert!(kinds(&rendered).contains("CustomResourceDefinition"));
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
