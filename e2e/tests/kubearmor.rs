//! Beside KubeArmor, on the mixed fleet (AppArmor nodes with agents, one AppArmor node without,
//! BPF-LSM nodes, three zones) with the KubeArmor stand-in of `armor_refresh_e2e::standin`: the
//! default policy injects and refreshes only where KubeArmor loads the profile, never touches
//! KubeArmor itself, converges, and produces nothing the API server refuses.

use std::collections::BTreeSet;
use std::time::Duration;

use armor_refresh::api::{ArmorRefreshPolicy, Phase};
use armor_refresh::compliance::{ANNOTATION_PREFIX, INJECTED_ANNOTATION};
use armor_refresh_e2e::fixtures::{AGENT_NODE_LABEL, policy, run, uids, wait_phase};
use armor_refresh_e2e::invariants::Witness;
use armor_refresh_e2e::process::{Process, run_args};
use armor_refresh_e2e::standin::Standin;
use armor_refresh_e2e::{
    Result, apply, clean, client, fresh_namespace, install_crds, kubectl, wait_for,
};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
const WEBHOOK_CONFIG: &str = "armor-refresh-e2e-kubearmor";

/// Workloads over the whole fleet: a Deployment with an init container and a sidecar, a
/// StatefulSet and a DaemonSet on every node.
fn workloads(ns: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web, namespace: {ns}}}\nspec:\n  replicas: 12\n  selector: {{matchLabels: {{app: web}}}}\n  template:\n    metadata: {{labels: {{app: web}}}}\n    spec:\n      initContainers: [{{name: init, image: example/init:1}}]\n      containers: [{{name: app, image: example/app:1}}, {{name: envoy, image: example/envoy:1}}]\n---\napiVersion: apps/v1\nkind: StatefulSet\nmetadata: {{name: db, namespace: {ns}}}\nspec:\n  replicas: 3\n  serviceName: db\n  selector: {{matchLabels: {{app: db}}}}\n  template:\n    metadata: {{labels: {{app: db}}}}\n    spec: {{containers: [{{name: pg, image: example/pg:16}}]}}\n---\napiVersion: apps/v1\nkind: DaemonSet\nmetadata: {{name: exporter, namespace: {ns}}}\nspec:\n  selector: {{matchLabels: {{app: exporter}}}}\n  template:\n    metadata: {{labels: {{app: exporter}}}}\n    spec: {{containers: [{{name: exporter, image: example/exporter:1}}]}}\n"
    )
}

async fn pods(c: &Client, ns: &str) -> Result<Vec<Pod>> {
    Ok(Api::<Pod>::namespaced(c.clone(), ns)
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect())
}

async fn running(c: &Client, ns: &str, n: usize) -> Result<Vec<Pod>> {
    wait_for(
        &format!("{n} Running pods in {ns}"),
        Duration::from_secs(120),
        || async move {
            let l = pods(c, ns).await?;
            let running: Vec<Pod> = l
                .into_iter()
                .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
                .collect();
            Ok((running.len() == n).then_some(running))
        },
    )
    .await
}

/// A client for a clean slate: CRDs installed, no policy, run or webhook configuration left.
async fn begin() -> Result<Client> {
    let c = client().await?;
    install_crds(&c).await?;
    clean(&c, WEBHOOK_CONFIG).await?;
    Ok(c)
}

/// Stops the operator and the stand-in, and cleans up.
async fn end(c: &Client, mut op: Process, standin: Standin) -> Result<()> {
    op.terminate().await?;
    standin.stop().await?;
    clean(c, WEBHOOK_CONFIG).await
}

/// The policy's condition of this type and status, once it is there.
async fn condition(
    c: &Client,
    policy: &str,
    type_: &str,
    status: &str,
) -> Result<armor_refresh::api::Condition> {
    wait_for(
        &format!("{policy}: {type_}={status}"),
        Duration::from_secs(60),
        || async move {
            let p = Api::<ArmorRefreshPolicy>::all(c.clone())
                .get(policy)
                .await?;
            Ok(p.status.and_then(|s| {
                s.conditions
                    .into_iter()
                    .find(|c| c.type_ == type_ && c.status == status)
            }))
        },
    )
    .await
}

async fn agent_nodes(c: &Client) -> Result<BTreeSet<String>> {
    Ok(Api::<Node>::all(c.clone())
        .list(&ListParams::default().labels(&format!("{AGENT_NODE_LABEL}=true")))
        .await?
        .items
        .iter()
        .map(|n| n.name_any())
        .collect())
}

fn node_of(p: &Pod) -> String {
    p.spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .unwrap_or_default()
}

fn profile(p: &Pod, container: &str) -> Option<String> {
    p.annotations()
        .get(&format!("{ANNOTATION_PREFIX}{container}"))
        .cloned()
}

/// KubeArmor's own pods, by uid, and whether any of them carries our marker.
async fn kubearmor_pods(c: &Client) -> Result<(BTreeSet<String>, bool)> {
    let l = pods(c, "kubearmor").await?;
    let touched = l
        .iter()
        .any(|p| p.annotations().contains_key(INJECTED_ANNOTATION));
    Ok((uids(&l), touched))
}

/// The default policy on the mixed fleet, with and without KubeArmor's webhook beside ours.
#[tokio::test]
async fn the_default_policy_converges_on_the_mixed_fleet_and_leaves_kubearmor_alone() -> Result<()>
{
    let _s = SERIAL.lock().await;
    let c = client().await?;
    install_crds(&c).await?;
    let agents = agent_nodes(&c).await?;
    assert!(!agents.is_empty(), "the fleet has agent nodes");
    let nodes = Api::<Node>::all(c.clone())
        .list(&ListParams::default())
        .await?
        .items;
    for (case, with_kubearmor_webhook) in [("ka-plain", false), ("ka-beside", true)] {
        clean(&c, WEBHOOK_CONFIG).await?;
        fresh_namespace(&c, case).await?;
        let (kubearmor_before, _) = kubearmor_pods(&c).await?;
        // Running before anything injects: no pod carries a profile.
        apply(&workloads(case)).await?;
        let before = running(&c, case, 12 + 3 + nodes.len()).await?;
        let standin = Standin::start(&c, with_kubearmor_webhook).await?;
        let witness = Witness::start(&c, &[case, "kubearmor"]).await?;
        let op = Process::start(case, &run_args(case, WEBHOOK_CONFIG, case)).await?;
        apply(&policy(
            case,
            &[case, "kubearmor"],
            "{batchSize: 4, interval: 1s, readyTimeout: 60s}",
            // KubeArmor's webhook turns runtime/default into localhost/default: no flip.
            "  profile: {overrides: [{podSelector: {matchLabels: {app: web}}, containers: [envoy], profile: runtime/default}]}\n",
        ))
        .await?;
        apply(&run(&format!("{case}-1"), case, "")).await?;
        let s = wait_phase(
            &c,
            &format!("{case}-1"),
            Phase::Completed,
            Some("Done"),
            Duration::from_secs(240),
        )
        .await?;
        let expected: BTreeSet<String> = uids(
            &before
                .iter()
                .filter(|p| agents.contains(&node_of(p)))
                .cloned()
                .collect::<Vec<_>>(),
        );
        let deleted: BTreeSet<String> = witness
            .deletions()
            .iter()
            .filter(|d| d.namespace == case)
            .map(|d| d.uid.clone())
            .collect();
        assert_eq!(deleted, expected, "{case}: exactly the pods on agent nodes");
        assert_eq!(s.progress.failed, 0, "{case}: {:?}", s.progress);
        // Every pod now: a profile on its regular containers where an agent runs, none
        // elsewhere, none on init containers.
        let after = pods(&c, case).await?;
        for p in &after {
            let on_agent = agents.contains(&node_of(p));
            for container in p.spec.iter().flat_map(|s| s.containers.iter()) {
                assert_eq!(
                    profile(p, &container.name).is_some(),
                    on_agent,
                    "{case}: {} on {} ({container:?})",
                    p.name_any(),
                    node_of(p),
                    container = container.name
                );
            }
            assert_eq!(
                profile(p, "init"),
                None,
                "{case}: init containers untouched"
            );
        }
        // A later update of a pod goes through KubeArmor's webhook too (it rewrites AppArmor
        // annotations on every update, which the API server refuses to change): it must pass.
        let profiled = after
            .iter()
            .find(|p| profile(p, "envoy").is_some())
            .expect("a web pod on an agent node");
        let (ok, _, err) = kubectl(
            &[
                "label",
                "pod",
                "-n",
                case,
                &profiled.name_any(),
                "e2e.armor.dev/touched=yes",
            ],
            None,
        )
        .await?;
        assert!(ok, "{case}: updating a refreshed pod: {err}");
        let stuck = standin.stuck_in(&[case, "kubearmor"]);
        let (kubearmor_after, touched) = kubearmor_pods(&c).await?;
        let kubearmor_evicted = witness
            .deletions()
            .iter()
            .filter(|d| d.namespace == "kubearmor")
            .count();
        // A second run after a complete first one has nothing to do.
        apply(&run(&format!("{case}-2"), case, "")).await?;
        let s2 = wait_phase(
            &c,
            &format!("{case}-2"),
            Phase::Completed,
            None,
            Duration::from_secs(60),
        )
        .await?;
        let pol = Api::<ArmorRefreshPolicy>::all(c.clone()).get(case).await?;
        let skipped = pol
            .status
            .and_then(|s| s.targets)
            .map(|t| t.skipped)
            .unwrap_or_default();
        println!(
            "FIGURES kubearmor {case}: refreshed={} stuck={} kubearmor_pods_mutated={} kubearmor_pods_evicted={kubearmor_evicted} second_run_targets={} skipped={skipped:?}",
            s.progress.refreshed,
            stuck.len(),
            usize::from(touched),
            s2.progress.total
        );
        assert!(
            stuck.is_empty(),
            "{case}: pods stuck on a profile: {stuck:?}"
        );
        assert!(!touched, "{case}: a KubeArmor pod was mutated");
        assert_eq!(kubearmor_evicted, 0, "{case}: a KubeArmor pod was evicted");
        assert_eq!(
            kubearmor_before, kubearmor_after,
            "{case}: KubeArmor's pods unchanged"
        );
        assert_eq!(s2.progress.total, 0, "{case}: the second run's targets");
        assert!(
            skipped.get("NodeNotEnforcing").copied().unwrap_or(0) > 0,
            "{skipped:?}"
        );
        assert!(
            skipped.get("KubeArmorPod").copied().unwrap_or(0) > 0,
            "{skipped:?}"
        );
        end(&c, op, standin).await?;
    }
    Ok(())
}

/// What a real API server refuses, and what the webhook must therefore never write.
#[tokio::test]
async fn patches_and_policies_the_api_server_would_refuse_are_never_produced() -> Result<()> {
    let _s = SERIAL.lock().await;
    let c = begin().await?;
    // Combinations that cannot converge, and Field alone, are refused with the field named.
    for (spec, want) in [
        (
            "profile: {format: Field}",
            "format Field or Both needs injectAt: Create",
        ),
        (
            "profile: {injectAt: Create, enforcingNodeSelector: {matchLabels: {kubearmor.io/enforcer: apparmor}}}",
            "spec.profile.enforcingNodeSelector",
        ),
        (
            "profile: {injectAt: Create, requireAgent: true}",
            "spec.profile.requireAgent",
        ),
        ("profile: {template: 'localhost/a\\\\b'}", "may not contain"),
    ] {
        let (ok, _, err) = kubectl(
            &["apply", "-f", "-"],
            Some(&format!(
                "apiVersion: refresh.armor.dev/v1alpha1\nkind: ArmorRefreshPolicy\nmetadata: {{name: ka-refused}}\nspec: {{{spec}}}\n"
            )),
        )
        .await?;
        assert!(!ok && err.contains(want), "{spec}: {err}");
    }
    // `{pod}` with injectAt Create is stored (CEL cannot see placeholders) but not Ready.
    let ns = "ka-refuse";
    fresh_namespace(&c, ns).await?;
    kubectl(
        &[
            "label",
            "namespace",
            ns,
            "pod-security.kubernetes.io/enforce=baseline",
        ],
        None,
    )
    .await?;
    let standin = Standin::start(&c, false).await?;
    let op = Process::start(
        "ka-refuse",
        &run_args("ka-refuse", WEBHOOK_CONFIG, "ka-refuse"),
    )
    .await?;
    apply(&policy(
        "ka-pod-create",
        &["nothing-here"],
        "{batchSize: 1}",
        "  profile: {injectAt: Create, template: 'localhost/p-{pod}'}\n",
    ))
    .await?;
    // Unconfined under Pod Security baseline; Windows pods under the field form.
    apply(&policy(
        "ka-refuse",
        &[ns],
        "{batchSize: 2, interval: 1s, readyTimeout: 30s}",
        "  profile:\n    injectAt: Create\n    format: Both\n    overrides: [{podSelector: {matchLabels: {app: proxy}}, profile: unconfined}]\n",
    ))
    .await?;
    let ready = condition(&c, "ka-pod-create", "Ready", "False").await?;
    assert!(
        ready.message.contains("{pod} needs injectAt: Binding"),
        "{}",
        ready.message
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (ok, out, err) = kubectl(
        &["apply", "-f", "-"],
        Some(&format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: proxy, namespace: {ns}}}\nspec:\n  replicas: 2\n  selector: {{matchLabels: {{app: proxy}}}}\n  template:\n    metadata: {{labels: {{app: proxy}}}}\n    spec: {{containers: [{{name: app, image: example/proxy:1}}]}}\n---\napiVersion: v1\nkind: Pod\nmetadata: {{name: win, namespace: {ns}}}\nspec: {{os: {{name: windows}}, containers: [{{name: app, image: example/win:1}}]}}\n"
        )),
    )
    .await?;
    assert!(ok, "the API server admits both: {out} {err}");
    let l = wait_for(
        "the proxy pods and the Windows pod",
        Duration::from_secs(60),
        || async {
            let l = pods(&c, ns).await?;
            Ok((l.len() == 3).then_some(l))
        },
    )
    .await?;
    for p in &l {
        assert_eq!(
            profile(p, "app"),
            None,
            "{}: no profile the API server refuses",
            p.name_any()
        );
        let field = p
            .spec
            .as_ref()
            .and_then(|s| s.containers[0].security_context.clone());
        assert!(
            field.and_then(|s| s.app_armor_profile).is_none(),
            "{}",
            p.name_any()
        );
    }
    // The policy's status says why they are not refreshed.
    let skipped = wait_for(
        "the skip reasons in the policy status",
        Duration::from_secs(30),
        || async {
            let p = Api::<ArmorRefreshPolicy>::all(c.clone())
                .get("ka-refuse")
                .await?;
            let s = p
                .status
                .and_then(|s| s.targets)
                .map(|t| t.skipped)
                .unwrap_or_default();
            // Both proxy pods: the counts of a pass that saw only the first are not the answer.
            Ok((s.get("PodSecurity") == Some(&2) && s.contains_key("WindowsPod")).then_some(s))
        },
    )
    .await?;
    assert_eq!(skipped.get("PodSecurity"), Some(&2), "{skipped:?}");
    assert!(standin.stuck_in(&[ns]).is_empty(), "{:?}", standin.stuck());
    end(&c, op, standin).await?;
    Ok(())
}

/// Bare pods named by the API server, two policies over one pod, and KubeArmor's own pods.
#[tokio::test]
async fn names_precedence_and_kubearmors_own_pods() -> Result<()> {
    let _s = SERIAL.lock().await;
    let c = begin().await?;
    let ns = "ka-names";
    fresh_namespace(&c, ns).await?;
    let standin = Standin::start(&c, false).await?;
    let op = Process::start(
        "ka-names",
        &run_args("ka-names", WEBHOOK_CONFIG, "ka-names"),
    )
    .await?;
    // Two policies select the same pods with different profiles: the first by name decides,
    // the other never targets them.
    apply(&format!(
        "apiVersion: refresh.armor.dev/v1alpha1\nkind: ArmorRefreshPolicy\nmetadata: {{name: ka-a}}\nspec:\n  selector: {{includeBarePods: true, namespaceSelector: {{matchLabels: {{kubernetes.io/metadata.name: {ns}}}}}}}\n"
    ))
    .await?;
    apply(&policy(
        "ka-b",
        &[ns],
        "{batchSize: 1}",
        "  profile: {template: 'localhost/other-{container}'}\n",
    ))
    .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (ok, out, err) = kubectl(
        &["create", "-f", "-"],
        Some(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{generateName: solo-, namespace: {ns}}}\nspec: {{nodeSelector: {{{AGENT_NODE_LABEL}: 'true'}}, containers: [{{name: c, image: example/solo:1}}]}}\n---\napiVersion: v1\nkind: Pod\nmetadata: {{name: relay-like, namespace: {ns}, labels: {{kubearmor-app: kubearmor-relay}}}}\nspec: {{nodeSelector: {{{AGENT_NODE_LABEL}: 'true'}}, containers: [{{name: relay, image: example/relay:1}}]}}\n"
        )),
    )
    .await?;
    assert!(ok, "{out} {err}");
    let l = running(&c, ns, 2).await?;
    let solo = l
        .iter()
        .find(|p| p.name_any().starts_with("solo-"))
        .unwrap();
    // Named after its final name (given at binding), not the generateName prefix.
    assert_eq!(
        profile(solo, "c"),
        Some(format!("localhost/kubearmor-{ns}-{}-c", solo.name_any()))
    );
    let relay = l.iter().find(|p| p.name_any() == "relay-like").unwrap();
    assert!(
        !relay
            .annotations()
            .keys()
            .any(|k| k.starts_with(ANNOTATION_PREFIX))
    );
    // Both policies agree the bare pod is done: compliant under ka-a, ka-b's to leave.
    let counts = |name: &'static str| {
        let c = c.clone();
        async move {
            let p = Api::<ArmorRefreshPolicy>::all(c).get(name).await?;
            Ok::<_, armor_refresh_e2e::Error>(p.status.and_then(|s| s.targets))
        }
    };
    let a = wait_for("ka-a's counts", Duration::from_secs(30), || async {
        Ok(counts("ka-a").await?.filter(|t| t.compliant == 1))
    })
    .await?;
    assert_eq!(a.pending, 0, "{a:?}");
    assert_eq!(a.skipped.get("KubeArmorPod"), Some(&1), "{a:?}");
    let b = wait_for("ka-b's counts", Duration::from_secs(30), || async {
        Ok(counts("ka-b")
            .await?
            .filter(|t| t.skipped.contains_key("OtherPolicy")))
    })
    .await?;
    assert_eq!(b.pending, 0, "{b:?}");
    assert!(standin.stuck_in(&[ns]).is_empty(), "{:?}", standin.stuck());
    end(&c, op, standin).await?;
    Ok(())
}

/// The stand-in sees what a real node would: creation-time injection (an explicit choice) on
/// the mixed fleet leaves the pods on nodes without an agent unable to start.
#[tokio::test]
async fn creation_time_injection_on_the_mixed_fleet_leaves_pods_stuck_as_on_a_real_node()
-> Result<()> {
    let _s = SERIAL.lock().await;
    let c = begin().await?;
    let ns = "ka-create";
    fresh_namespace(&c, ns).await?;
    let agents = agent_nodes(&c).await?;
    let standin = Standin::start(&c, false).await?;
    let op = Process::start(
        "ka-create",
        &run_args("ka-create", WEBHOOK_CONFIG, "ka-create"),
    )
    .await?;
    apply(&policy(
        "ka-create",
        &[ns],
        "{batchSize: 1}",
        "  profile: {injectAt: Create}\n",
    ))
    .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    apply(&workloads(ns)).await?;
    let nodes = Api::<Node>::all(c.clone())
        .list(&ListParams::default())
        .await?
        .items;
    let elsewhere = nodes.len() - agents.len();
    // Every pod on a node without an agent (at least the DaemonSet's) is stuck, and says so.
    let stuck = wait_for(
        "pods stuck on an unloaded profile",
        Duration::from_secs(60),
        || async {
            let s = standin.stuck_in(&[ns]);
            Ok((s.len() >= elsewhere).then_some(s))
        },
    )
    .await?;
    assert!(stuck.iter().all(|s| !agents.contains(&s.node)), "{stuck:?}");
    let blocked = wait_for("a stuck pod's status", Duration::from_secs(30), || async {
        let l = pods(&c, ns).await?;
        Ok(l.into_iter().find(|p| {
            !agents.contains(&node_of(p))
                && p.status
                    .as_ref()
                    .and_then(|s| s.container_statuses.as_ref())
                    .is_some_and(|cs| {
                        cs.iter().any(|c| {
                            c.state
                                .as_ref()
                                .and_then(|s| s.waiting.as_ref())
                                .and_then(|w| w.message.as_ref())
                                .is_some_and(|m| {
                                    m.contains("apparmor profile not found kubearmor-ka-create-")
                                })
                        })
                    })
        }))
    })
    .await?;
    assert!(!armor_refresh_e2e::is_ready(&blocked));
    println!(
        "FIGURES kubearmor ka-create (injectAt: Create, a user's explicit choice): stuck={}",
        standin.stuck_in(&[ns]).len()
    );
    end(&c, op, standin).await?;
    // Its stuck pods would only get in the way of the next test.
    kubectl(&["delete", "namespace", ns, "--wait=false"], None).await?;
    Ok(())
}

/// An Automatic policy whose replacements never get their profile (here no webhook answers at
/// all) runs once, then stops with a reason instead of evicting the same workload every minute.
#[tokio::test]
async fn an_automatic_policy_that_cannot_converge_stops_instead_of_looping() -> Result<()> {
    use armor_refresh::api::ArmorRefreshRun;
    let _s = SERIAL.lock().await;
    let c = begin().await?;
    let ns = "ka-auto";
    fresh_namespace(&c, ns).await?;
    apply(&armor_refresh_e2e::fixtures::deployment(
        ns,
        "loop",
        4,
        &["app"],
    ))
    .await?;
    running(&c, ns, 4).await?;
    // The operator without its webhook, and no webhook configuration: nothing injects.
    let args: Vec<String> = [
        "run",
        "--no-webhook",
        "--identity",
        "ka-auto",
        "--lease-namespace",
        "default",
        "--lease-name",
        "ka-auto",
        "--lease-duration",
        "6",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut op = Process::start("ka-auto", &args).await?;
    apply(&policy(
        "ka-auto",
        &[ns],
        "{batchSize: 2, interval: 1s, readyTimeout: 30s}",
        "  trigger: Automatic\n",
    ))
    .await?;
    let runs: Api<ArmorRefreshRun> = Api::all(c.clone());
    let mine = || async {
        Ok::<_, armor_refresh_e2e::Error>(
            runs.list(&ListParams::default())
                .await?
                .items
                .into_iter()
                .filter(|r| r.spec.policy_ref.name == "ka-auto")
                .collect::<Vec<_>>(),
        )
    };
    let first = wait_for("the automatic run", Duration::from_secs(60), || async {
        Ok(mine().await?.into_iter().next())
    })
    .await?;
    let s = wait_phase(
        &c,
        &first.name_any(),
        Phase::Completed,
        None,
        Duration::from_secs(120),
    )
    .await?;
    assert_eq!(s.progress.without_profile, 4, "{:?}", s.progress);
    let cond = condition(&c, "ka-auto", "Converging", "False").await?;
    assert_eq!(cond.reason, "ReplacementsLackProfile");
    // The operator creates at most one automatic run a minute: wait past that.
    tokio::time::sleep(Duration::from_secs(65)).await;
    let all = mine().await?;
    println!(
        "FIGURES kubearmor ka-auto: automatic runs={} (a loop would add one a minute); {}",
        all.len(),
        cond.message
    );
    assert_eq!(all.len(), 1, "no second run over the same replacements");
    op.terminate().await?;
    clean(&c, WEBHOOK_CONFIG).await?;
    Ok(())
}
