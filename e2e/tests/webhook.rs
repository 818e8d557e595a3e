//! The webhook as the real kube-apiserver calls it: over TLS, with the self-signed CA the
//! process wrote into the MutatingWebhookConfiguration.

use std::time::Duration;

use armor_refresh::api::{ArmorRefreshRun, Phase};
use armor_refresh_e2e::fixtures::AGENT_NODE_LABEL;
use armor_refresh_e2e::process::{Process, free_port, metric_value};
use armor_refresh_e2e::{Result, apply, clean, client, fresh_namespace, install_crds, wait_for};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
const CONFIG: &str = "armor-refresh-e2e-webhook";
const PREFIX: &str = "container.apparmor.security.beta.kubernetes.io/";

/// `armor-refresh webhook` on a free port, writing its configuration.
async fn webhook(name: &str, port: u16) -> Result<Process> {
    webhook_behind(name, port, port).await
}

/// `armor-refresh webhook` on `port`, registering the address `url_port` (a load balancer's,
/// in front of several replicas).
async fn webhook_behind(name: &str, port: u16, url_port: u16) -> Result<Process> {
    webhook_with(name, port, url_port, &[]).await
}

/// `armor-refresh webhook` as [`webhook_behind`], with more arguments.
async fn webhook_with(name: &str, port: u16, url_port: u16, extra: &[&str]) -> Result<Process> {
    let args: Vec<String> = [
        "webhook",
        "--self-signed",
        "--webhook-addr",
        &format!("127.0.0.1:{port}"),
        "--webhook-config",
        CONFIG,
        "--webhook-url",
        &format!("https://127.0.0.1:{url_port}/mutate"),
    ]
    .iter()
    .chain(extra)
    .map(|s| s.to_string())
    .collect();
    Process::start(name, &args).await
}

/// Admission requests the webhook answered for one operation (`pods`, `pods/binding`),
/// whatever the answer.
fn calls(metrics: &str, op: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| {
            l.starts_with("armor_refresh_admission_requests_total{")
                && l.contains(&format!("operation=\"{op}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

async fn pods_of(c: &Client, ns: &str, n: usize) -> Result<Vec<Pod>> {
    let api: Api<Pod> = Api::namespaced(c.clone(), ns);
    wait_for(
        &format!("{n} scheduled pods in {ns}"),
        Duration::from_secs(60),
        || {
            let api = api.clone();
            async move {
                let l: Vec<Pod> = api
                    .list(&ListParams::default())
                    .await?
                    .items
                    .into_iter()
                    .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some())
                    .collect();
                Ok((l.len() == n).then_some(l))
            }
        },
    )
    .await
}

/// A Deployment on the nodes where KubeArmor loads profiles.
fn deployment(ns: &str, name: &str, replicas: u32) -> String {
    spread(ns, name, replicas).replace(
        "    spec:\n",
        &format!("    spec:\n      nodeSelector: {{{AGENT_NODE_LABEL}: 'true'}}\n"),
    )
}

/// A Deployment over the whole mixed fleet.
fn spread(ns: &str, name: &str, replicas: u32) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  replicas: {replicas}\n  selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    metadata: {{labels: {{app: {name}}}}}\n    spec:\n      initContainers: [{{name: init, image: example/init:1}}]\n      containers: [{{name: app, image: example/app:1}}]\n"
    )
}

#[tokio::test]
async fn pods_come_out_compliant_in_annotation_and_field_form_and_exclusions_hold() -> Result<()> {
    let _s = SERIAL.lock().await;
    let c = client().await?;
    install_crds(&c).await?;
    clean(&c, CONFIG).await?;
    for ns in ["e2e-wh-a", "e2e-wh-f", "e2e-wh-x"] {
        fresh_namespace(&c, ns).await?;
    }
    apply("apiVersion: refresh.armor.dev/v1alpha1\nkind: ArmorRefreshPolicy\nmetadata: {name: wh-annotation}\nspec:\n  selector: {namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: e2e-wh-a}}}\n").await?;
    apply("apiVersion: refresh.armor.dev/v1alpha1\nkind: ArmorRefreshPolicy\nmetadata: {name: wh-field}\nspec:\n  selector: {namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: e2e-wh-f}}}\n  profile: {format: Both, injectAt: Create, includeInitContainers: true}\n").await?;
    apply("apiVersion: refresh.armor.dev/v1alpha1\nkind: ArmorRefreshPolicy\nmetadata: {name: wh-excluded}\nspec:\n  selector: {namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: e2e-wh-x}}}\n  exclude: {namespaces: [e2e-wh-x]}\n").await?;
    let mut wh = webhook("webhook-forms", free_port()).await?;
    // Give the webhook's policy cache a moment to see the policies (it is ready already).
    tokio::time::sleep(Duration::from_secs(1)).await;
    apply(
        &(deployment("e2e-wh-a", "a", 2)
            + "---\n"
            + &deployment("e2e-wh-f", "f", 2)
            + "---\n"
            + &deployment("e2e-wh-x", "x", 2)),
    )
    .await?;
    for p in pods_of(&c, "e2e-wh-a", 2).await? {
        let a = p.annotations();
        assert_eq!(
            a.get(&format!("{PREFIX}app")).map(String::as_str),
            Some("localhost/kubearmor-e2e-wh-a-a-app"),
            "{:?}",
            a
        );
        assert_eq!(
            a.get(&format!("{PREFIX}init")),
            None,
            "init containers are KubeArmor's to leave alone"
        );
    }
    for p in pods_of(&c, "e2e-wh-f", 2).await? {
        // The 1.34 API server accepted the field form; it also keeps annotation and field in step.
        let spec = p.spec.as_ref().unwrap();
        let f = spec.containers[0]
            .security_context
            .as_ref()
            .and_then(|s| s.app_armor_profile.as_ref())
            .expect("field form");
        assert_eq!(
            (f.type_.as_str(), f.localhost_profile.as_deref()),
            ("Localhost", Some("kubearmor-e2e-wh-f-f-app"))
        );
        let fi = spec.init_containers.as_ref().unwrap()[0]
            .security_context
            .as_ref()
            .and_then(|s| s.app_armor_profile.as_ref())
            .expect("init field");
        assert_eq!(
            fi.localhost_profile.as_deref(),
            Some("kubearmor-e2e-wh-f-f-init")
        );
        assert!(p.annotations().contains_key(&format!("{PREFIX}app")));
    }
    for p in pods_of(&c, "e2e-wh-x", 2).await? {
        assert!(
            !p.annotations().keys().any(|k| k.starts_with(PREFIX)),
            "excluded namespace untouched: {:?}",
            p.annotations()
        );
    }
    let m = wh.metrics().await?;
    // Every label starts at 0: the count must have moved.
    let patched = |op: &str| {
        metric_value(
            &m,
            &format!(
                "armor_refresh_admission_requests_total{{operation=\"{op}\",result=\"patched\"}}"
            ),
        )
        .unwrap_or(0.0)
    };
    assert!(patched("pods") >= 2.0, "{m}");
    wh.terminate().await?;
    clean(&c, CONFIG).await?;
    Ok(())
}

#[tokio::test]
async fn binding_time_injection_only_on_enforcing_nodes() -> Result<()> {
    let _s = SERIAL.lock().await;
    let c = client().await?;
    install_crds(&c).await?;
    clean(&c, CONFIG).await?;
    fresh_namespace(&c, "e2e-wh-b").await?;
    apply("apiVersion: refresh.armor.dev/v1alpha1\nkind: ArmorRefreshPolicy\nmetadata: {name: wh-binding}\nspec:\n  selector: {namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: e2e-wh-b}}}\n").await?;
    let mut wh = webhook("webhook-binding", free_port()).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Enough pods to land on both kinds of node.
    apply(&spread("e2e-wh-b", "spread", 12)).await?;
    let pods = pods_of(&c, "e2e-wh-b", 12).await?;
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(c.clone());
    let mut on_enforcing = 0;
    let mut on_other = 0;
    for p in &pods {
        let node = nodes
            .get(p.spec.as_ref().unwrap().node_name.as_ref().unwrap())
            .await?;
        // KubeArmor's rule, the default: an AppArmor node that runs an agent (not the BPF-LSM
        // nodes, not the AppArmor node without one).
        let enforcing = node
            .labels()
            .get(AGENT_NODE_LABEL)
            .is_some_and(|v| v == "true");
        let has = p.annotations().contains_key(&format!("{PREFIX}app"));
        assert_eq!(
            has,
            enforcing,
            "{} on {} (enforcing: {enforcing})",
            p.name_any(),
            node.name_any()
        );
        if enforcing {
            on_enforcing += 1
        } else {
            on_other += 1
        }
    }
    assert!(
        on_enforcing > 0 && on_other > 0,
        "pods landed on both kinds of node: {on_enforcing}/{on_other}"
    );
    let m = wh.metrics().await?;
    let patched = metric_value(
        &m,
        "armor_refresh_admission_requests_total{operation=\"pods/binding\",result=\"patched\"}",
    );
    assert!(patched.is_some_and(|n| n >= 1.0), "{m}");
    // Binding policies only: the API server skipped the creation of every unbound pod (the
    // registration's CEL condition), so each pod cost one webhook call, not two.
    assert_eq!(calls(&m, "pods"), 0, "{m}");
    assert!(calls(&m, "pods/binding") >= 12, "{m}");
    // A pod created already bound has no binding: its creation is sent, and profiled.
    let enforcing = nodes
        .list(&ListParams::default().labels(&format!("{AGENT_NODE_LABEL}=true")))
        .await?
        .items
        .into_iter()
        .next()
        .ok_or("no enforcing node")?
        .name_any();
    apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: prebound, namespace: e2e-wh-b}}\nspec: {{nodeName: {enforcing}, containers: [{{name: app, image: example/app:1}}]}}\n"
    ))
    .await?;
    let pods: Api<Pod> = Api::namespaced(c.clone(), "e2e-wh-b");
    let prebound = pods.get("prebound").await?;
    assert!(
        prebound.annotations().contains_key(&format!("{PREFIX}app")),
        "a pod created bound gets its profile at creation"
    );
    assert_eq!(calls(&wh.metrics().await?, "pods"), 1);
    // Under failurePolicy Fail, a condition that errors refuses the pod: an unbound pod's
    // creation (no subresource in the request) must evaluate cleanly to "not sent".
    let (ok, _, err) = armor_refresh_e2e::kubectl(
        &[
            "patch",
            "mutatingwebhookconfiguration",
            CONFIG,
            "--type",
            "json",
            "-p",
            r#"[{"op":"replace","path":"/webhooks/0/failurePolicy","value":"Fail"}]"#,
        ],
        None,
    )
    .await?;
    assert!(ok, "{err}");
    tokio::time::sleep(Duration::from_secs(2)).await; // the API server's informer
    apply("apiVersion: v1\nkind: Pod\nmetadata: {name: unbound-strict, namespace: e2e-wh-b}\nspec: {containers: [{name: app, image: example/app:1}]}\n").await?;
    assert_eq!(
        calls(&wh.metrics().await?, "pods"),
        1,
        "not sent at creation"
    );
    wh.terminate().await?;
    clean(&c, CONFIG).await?;
    Ok(())
}

/// The webhook alone reads each bound pod from the API server (a binding carries only the
/// pod's name); with `--pod-cache` it finds the pod in its own watch of the pods instead, as
/// the webhook of `run` does in the operator's.
#[tokio::test]
async fn the_webhook_alone_finds_bound_pods_in_its_pod_cache() -> Result<()> {
    let _s = SERIAL.lock().await;
    let c = client().await?;
    install_crds(&c).await?;
    clean(&c, CONFIG).await?;
    let ns = "e2e-wh-cache";
    fresh_namespace(&c, ns).await?;
    let mut scheduled = 0;
    for (name, extra) in [("plain", &[][..]), ("cached", &["--pod-cache"][..])] {
        apply(&format!("apiVersion: refresh.armor.dev/v1alpha1\nkind: ArmorRefreshPolicy\nmetadata: {{name: wh-cache}}\nspec:\n  selector: {{namespaceSelector: {{matchLabels: {{kubernetes.io/metadata.name: {ns}}}}}}}\n")).await?;
        let port = free_port();
        let mut wh = webhook_with(&format!("webhook-{name}"), port, port, extra).await?;
        // The configuration is written and the cache has its first list.
        tokio::time::sleep(Duration::from_secs(1)).await;
        apply(&deployment(ns, name, 6)).await?;
        scheduled += 6;
        let pods = pods_of(&c, ns, scheduled).await?;
        for p in pods.iter().filter(|p| p.name_any().starts_with(name)) {
            assert!(
                p.annotations().contains_key(&format!("{PREFIX}app")),
                "{} got its profile at binding",
                p.name_any()
            );
        }
        let m = wh.metrics().await?;
        let bindings = calls(&m, "pods/binding");
        let reads = metric_value(&m, "armor_refresh_webhook_pod_reads_total").unwrap_or(0.0) as u64;
        assert!(bindings >= 6, "{m}");
        eprintln!("{name}: {reads} of {bindings} bindings read their pod");
        if extra.is_empty() {
            assert_eq!(
                reads, bindings,
                "without a cache every binding reads its pod"
            );
        } else {
            // The scheduler binds a pod once its own watch saw it; the webhook's watch is as
            // fast, so only a pod its watch has not delivered yet is read.
            assert!(
                reads < bindings,
                "{reads} of {bindings} bindings read their pod"
            );
        }
        wh.terminate().await?;
        clean(&c, CONFIG).await?;
    }
    Ok(())
}

#[tokio::test]
async fn with_the_webhook_down_pods_are_still_created_and_a_run_fixes_them() -> Result<()> {
    let _s = SERIAL.lock().await;
    let c = client().await?;
    install_crds(&c).await?;
    clean(&c, CONFIG).await?;
    fresh_namespace(&c, "e2e-wh-down").await?;
    apply("apiVersion: refresh.armor.dev/v1alpha1\nkind: ArmorRefreshPolicy\nmetadata: {name: wh-down}\nspec:\n  selector: {namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: e2e-wh-down}}}\n  rollout: {batchSize: 2, interval: 0s}\n").await?;
    let port = free_port();
    let mut wh = webhook("webhook-down", port).await?;
    wh.kill9().await?; // the configuration now points at nothing
    apply(&deployment("e2e-wh-down", "blind", 3)).await?;
    let pods = pods_of(&c, "e2e-wh-down", 3).await?;
    assert!(
        pods.iter()
            .all(|p| !p.annotations().keys().any(|k| k.starts_with(PREFIX))),
        "created without profiles (failurePolicy Ignore)"
    );
    // The operator (with its webhook back on the same configuration) refreshes them.
    let args = armor_refresh_e2e::process::run_args("op-wh-down", CONFIG, "armor-refresh-wh-down");
    let mut op = Process::start("op-wh-down", &args).await?;
    apply("apiVersion: refresh.armor.dev/v1alpha1\nkind: ArmorRefreshRun\nmetadata: {name: wh-down-1}\nspec: {policyRef: {name: wh-down}}\n").await?;
    let runs: Api<ArmorRefreshRun> = Api::all(c.clone());
    let s = wait_for("the run to complete", Duration::from_secs(120), || {
        let runs = runs.clone();
        async move {
            let s = runs.get("wh-down-1").await?.status.unwrap_or_default();
            Ok((s.phase == Phase::Completed).then_some(s))
        }
    })
    .await?;
    assert_eq!(s.progress.refreshed, 3, "{:?}", s.progress);
    for p in pods_of(&c, "e2e-wh-down", 3).await? {
        assert!(
            p.annotations().contains_key(&format!("{PREFIX}app")),
            "{} lacks its profile",
            p.name_any()
        );
    }
    op.terminate().await?;
    clean(&c, CONFIG).await?;
    Ok(())
}

/// The certificates of the configuration's caBundle.
async fn bundle_certs(c: &Client) -> Result<usize> {
    use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
    let api: Api<MutatingWebhookConfiguration> = Api::all(c.clone());
    let Some(cfg) = api.get_opt(CONFIG).await? else {
        return Ok(0);
    };
    let bundle = cfg
        .webhooks
        .unwrap_or_default()
        .first()
        .and_then(|w| w.client_config.ca_bundle.clone())
        .unwrap_or_default();
    Ok(String::from_utf8_lossy(&bundle.0)
        .matches("-----BEGIN CERTIFICATE-----")
        .count())
}

#[tokio::test]
async fn replicas_behind_one_address_each_keep_their_ca_in_the_bundle() -> Result<()> {
    // Two replicas with their own self-signed CAs register the same URL (a load balancer in
    // front of both; here it sends every call to the first). The second one's write must not
    // drop the first one's CA, or every call the first answers fails TLS and, with
    // failurePolicy Ignore, pods come out without their profiles.
    let _s = SERIAL.lock().await;
    let c = client().await?;
    install_crds(&c).await?;
    clean(&c, CONFIG).await?;
    fresh_namespace(&c, "e2e-wh-lb").await?;
    apply("apiVersion: refresh.armor.dev/v1alpha1\nkind: ArmorRefreshPolicy\nmetadata: {name: wh-lb}\nspec:\n  selector: {namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: e2e-wh-lb}}}\n").await?;
    let front = free_port();
    // Two start at once: one creates the configuration, the other must merge into it.
    let (a, b) = tokio::join!(
        webhook_behind("webhook-lb-a", front, front),
        webhook_behind("webhook-lb-b", free_port(), front)
    );
    let (mut a, mut b) = (a?, b?);
    assert_eq!(bundle_certs(&c).await?, 2, "both replicas' CAs");
    // A third joins later: it updates the configuration and keeps the others' CAs.
    let mut third = webhook_behind("webhook-lb-c", free_port(), front).await?;
    assert_eq!(bundle_certs(&c).await?, 3, "the three replicas' CAs");
    // The first replica answers, with a certificate the bundle still vouches for.
    tokio::time::sleep(Duration::from_secs(1)).await;
    apply(&deployment("e2e-wh-lb", "lb", 2)).await?;
    for p in pods_of(&c, "e2e-wh-lb", 2).await? {
        assert_eq!(
            p.annotations()
                .get(&format!("{PREFIX}app"))
                .map(String::as_str),
            Some("localhost/kubearmor-e2e-wh-lb-lb-app"),
            "{} was admitted by the first replica: {:?}",
            p.name_any(),
            p.annotations()
        );
    }
    third.terminate().await?;
    b.terminate().await?;
    a.terminate().await?;
    clean(&c, CONFIG).await?;
    Ok(())
}

#[tokio::test]
async fn the_api_server_spares_the_call_for_pods_already_carrying_every_profile() -> Result<()> {
    // The match condition is evaluated by the real API server: a pod whose every container
    // has an AppArmor annotation it chose is admitted without calling the webhook; one
    // without is sent, and gets its profile.
    let _s = SERIAL.lock().await;
    let c = client().await?;
    install_crds(&c).await?;
    clean(&c, CONFIG).await?;
    fresh_namespace(&c, "e2e-wh-skip").await?;
    apply("apiVersion: refresh.armor.dev/v1alpha1\nkind: ArmorRefreshPolicy\nmetadata: {name: wh-skip}\nspec:\n  selector: {namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: e2e-wh-skip}}}\n  profile: {injectAt: Create}\n").await?;
    let mut wh = webhook("webhook-skip", free_port()).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = calls(&wh.metrics().await?, "pods");
    let pod = |name: &str, annotations: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: e2e-wh-skip, annotations: {{{annotations}}}}}\nspec: {{initContainers: [{{name: init, image: example/init:1}}], containers: [{{name: app, image: example/app:1}}]}}\n---\n"
        )
    };
    apply(&pod(
        "chosen",
        &format!("{PREFIX}app: localhost/theirs, {PREFIX}init: unconfined"),
    ))
    .await?;
    apply(&pod("half", &format!("{PREFIX}init: unconfined"))).await?;
    let pods: Api<Pod> = Api::namespaced(c.clone(), "e2e-wh-skip");
    let chosen = pods.get("chosen").await?;
    assert_eq!(
        chosen
            .annotations()
            .get(&format!("{PREFIX}app"))
            .map(String::as_str),
        Some("localhost/theirs")
    );
    let half = pods.get("half").await?;
    assert_eq!(
        half.annotations()
            .get(&format!("{PREFIX}app"))
            .map(String::as_str),
        Some("localhost/kubearmor-e2e-wh-skip-half-app"),
        "the pod lacking a profile was sent and got it: {:?}",
        half.annotations()
    );
    let after = calls(&wh.metrics().await?, "pods");
    assert_eq!(after - before, 1, "only the pod lacking a profile was sent");
    wh.terminate().await?;
    clean(&c, CONFIG).await?;
    Ok(())
}
