//! The operator on the local control plane: real API server, controllers, scheduler and
//! webhook chain; pods simulated by kwok (Ready 1 s after scheduling). Each test runs
//! `armor-refresh run` as a process and checks the run's invariants with an independent
//! witness of pod deletions and readiness. Tests run one at a time (one operator at once).

use std::time::{Duration, Instant};

use armor_refresh::api::{ArmorRefreshPolicy, Phase, PodState};
use armor_refresh_e2e::fixtures::{
    AGENT_NODE_LABEL, all_ready, deployment, merge_policy, policy, run, run_status, uids,
    wait_phase,
};
use armor_refresh_e2e::invariants::{Deletion, Witness};
use armor_refresh_e2e::process::{Process, run_args};
use armor_refresh_e2e::{
    Result, apply, clean, client, fresh_namespace, install_crds, kubectl, wait_for,
};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const WEBHOOK_CONFIG: &str = "armor-refresh-e2e";

async fn start_operator(name: &str, lease: &str) -> Result<Process> {
    Process::start(name, &run_args(name, WEBHOOK_CONFIG, lease)).await
}

#[tokio::test]
async fn a_run_refreshes_every_target_exactly_once_within_the_batch() -> Result<()> {
    let _serial = SERIAL.lock().await;
    let c = client().await?;
    install_crds(&c).await?;
    clean(&c, WEBHOOK_CONFIG).await?;
    for ns in ["e2e-shop", "e2e-data", "e2e-storage"] {
        fresh_namespace(&c, ns).await?;
    }
    // Workloads exist before the webhook: none of their pods carries a profile.
    let mut y = deployment("e2e-shop", "web", 6, &["app"]);
    y += &deployment("e2e-shop", "api", 4, &["app", "envoy"]);
    y += &deployment("e2e-shop", "cart", 1, &["app"]);
    y += &deployment("e2e-storage", "osd", 2, &["osd"]);
    y += "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: db, namespace: e2e-data}\nspec:\n  replicas: 3\n  serviceName: db\n  selector: {matchLabels: {app: db}}\n  template:\n    metadata: {labels: {app: db}}\n    spec: {nodeSelector: {e2e.armor.dev/kubearmor-agent: 'true'}, containers: [{name: postgres, image: example/pg:16}]}\n---\n";
    y += "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {name: db, namespace: e2e-data}\nspec: {maxUnavailable: 1, selector: {matchLabels: {app: db}}}\n---\n";
    y += "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: agent, namespace: e2e-data}\nspec:\n  selector: {matchLabels: {app: agent}}\n  template:\n    metadata: {labels: {app: agent}}\n    spec: {containers: [{name: agent, image: example/agent:1}]}\n---\n";
    y += "apiVersion: v1\nkind: Pod\nmetadata: {name: debug, namespace: e2e-shop, labels: {run: debug}}\nspec: {containers: [{name: shell, image: example/shell:1}]}\n";
    apply(&y).await?;
    let shop = all_ready(&c, "e2e-shop", 12).await?;
    let data = all_ready(&c, "e2e-data", 9).await?;
    let storage = all_ready(&c, "e2e-storage", 2).await?;
    // The DaemonSet runs on the whole mixed fleet: only its pods where a KubeArmor agent loads
    // profiles are targets; on BPF-LSM nodes and the AppArmor node without an agent they
    // would never start with a profile.
    let nodes: Api<Node> = Api::all(c.clone());
    let agent_nodes: std::collections::BTreeSet<String> = nodes
        .list(&ListParams::default().labels(&format!("{AGENT_NODE_LABEL}=true")))
        .await?
        .items
        .iter()
        .map(|n| n.name_any())
        .collect();
    let on_agent_node = |p: &&Pod| {
        p.spec
            .as_ref()
            .and_then(|s| s.node_name.as_ref())
            .is_some_and(|n| agent_nodes.contains(n))
    };
    let elsewhere: Vec<Pod> = data.iter().filter(|p| !on_agent_node(p)).cloned().collect();
    assert_eq!(elsewhere.len(), 3, "3 of the 6 nodes run no agent");
    let mut targets = uids(&shop);
    targets.extend(uids(
        &data
            .iter()
            .filter(on_agent_node)
            .cloned()
            .collect::<Vec<_>>(),
    ));
    let bare = shop
        .iter()
        .find(|p| p.name_any() == "debug")
        .unwrap()
        .uid()
        .unwrap();
    targets.remove(&bare);
    assert_eq!(targets.len(), 17);

    let witness = Witness::start(&c, &["e2e-shop", "e2e-data", "e2e-storage"]).await?;
    let mut op = start_operator("op-full", "armor-refresh-full").await?;
    apply(&policy(
        "full",
        &["e2e-shop", "e2e-data", "e2e-storage"],
        "{batchSize: 3, interval: 1s, readyTimeout: 60s}",
        "  exclude: {namespaces: [kube-system, e2e-storage]}\n",
    ))
    .await?;
    let start = Instant::now();
    apply(&run("full-1", "full", "")).await?;
    let s = wait_phase(
        &c,
        "full-1",
        Phase::Completed,
        Some("Done"),
        Duration::from_secs(240),
    )
    .await?;
    let took = start.elapsed();

    let deletions = witness.deletions();
    let deleted: std::collections::BTreeSet<String> =
        deletions.iter().map(|d| d.uid.clone()).collect();
    assert_eq!(deleted.len(), deletions.len(), "no pod deleted twice");
    // Names, not uids: a failure must say which pod was deleted and whose it was.
    let unexpected: Vec<&Deletion> = deletions
        .iter()
        .filter(|d| !targets.contains(&d.uid))
        .collect();
    let missed: Vec<&String> = targets.difference(&deleted).collect();
    assert!(
        unexpected.is_empty() && missed.is_empty(),
        "exactly the targets were refreshed: unexpected deletions {unexpected:#?}, targets not deleted {missed:?}"
    );
    assert!(
        deletions.iter().all(|d| !d.had_profile),
        "no replacement was evicted"
    );
    assert!(!deleted.contains(&bare), "the bare pod is untouched");
    assert!(
        uids(&storage).is_disjoint(&deleted),
        "the excluded namespace is untouched"
    );
    assert_eq!(s.progress.refreshed, 17, "{:?}", s.progress);
    assert!(
        uids(&elsewhere).is_disjoint(&deleted),
        "no pod refreshed where no agent loads its profile"
    );
    assert_eq!(s.progress.failed, 0);
    assert!(
        witness.stuck().is_empty(),
        "stuck on a profile: {:?}",
        witness.stuck()
    );
    let max = witness.max_disrupted();
    assert!(max <= 3, "max disrupted {max} > batch 3");
    // StatefulSet: one at a time, highest ordinal first.
    let db: Vec<String> = deletions
        .iter()
        .filter(|d| d.workload.contains("StatefulSet/db"))
        .map(|d| d.name.clone())
        .collect();
    assert_eq!(db, vec!["db-2", "db-1", "db-0"]);
    assert!(
        witness
            .max_per_workload()
            .get("e2e-data/StatefulSet/db")
            .copied()
            .unwrap_or(0)
            <= 1
    );
    // Every pod now carries its profile.
    let pods: Api<Pod> = Api::namespaced(c.clone(), "e2e-shop");
    for p in pods.list(&ListParams::default().labels("app")).await?.items {
        assert!(
            p.annotations()
                .keys()
                .any(|k| k.starts_with(armor_refresh::compliance::ANNOTATION_PREFIX)),
            "{} lacks its profile",
            p.name_any()
        );
    }
    // The policy's counts agree.
    let pol: Api<ArmorRefreshPolicy> = Api::all(c.clone());
    let pst = wait_for(
        "policy counts to show no pending pod",
        Duration::from_secs(30),
        || {
            let pol = pol.clone();
            async move {
                let s = pol.get("full").await?.status.unwrap_or_default();
                // The counts of the pass that saw the run end: during its last batch the
                // counts reach 0 already, before there is a last run to name.
                Ok(s.targets
                    .filter(|t| t.pending == 0 && s.last_run.is_some())
                    .map(|t| (t, s.last_run)))
            }
        },
    )
    .await?;
    assert_eq!(pst.0.total, 17);
    assert_eq!(pst.1.as_deref(), Some("full-1"));
    // Events on the run, and metrics.
    let (ok, out, _) = kubectl(
        &[
            "get",
            "events",
            "-A",
            "--field-selector",
            "involvedObject.name=full-1",
            "-o",
            "jsonpath={.items[*].reason}",
        ],
        None,
    )
    .await?;
    assert!(
        ok && out.contains("Started") && out.contains("Progress") && out.contains("Done"),
        "{out}"
    );
    // Each tenth of the run has its own progress event, with its own counts (not one
    // series repeating the first note).
    let (ok, out, _) = kubectl(
        &[
            "get",
            "events",
            "-A",
            "--field-selector",
            "involvedObject.name=full-1,reason=Progress",
            "-o",
            "jsonpath={range .items[*]}{.message}{\"\\n\"}{end}",
        ],
        None,
    )
    .await?;
    let notes: std::collections::BTreeSet<&str> = out.lines().collect();
    assert!(ok && notes.len() >= 3, "{out}");
    // An event on every evicted pod, and on the workloads, where `kubectl describe` finds
    // them (by the object's uid).
    let evicted_with_event = wait_for(
        "an Evicted event on every evicted pod",
        Duration::from_secs(30),
        || {
            let c = c.clone();
            let deleted = deleted.clone();
            async move {
                let mut seen = std::collections::BTreeSet::new();
                for ns in ["e2e-shop", "e2e-data"] {
                    let evs: Api<k8s_openapi::api::events::v1::Event> =
                        Api::namespaced(c.clone(), ns);
                    for e in evs.list(&ListParams::default()).await?.items {
                        let about = e.regarding.unwrap_or_default();
                        if e.reason.as_deref() == Some("Evicted")
                            && about.kind.as_deref() == Some("Pod")
                            && e.note
                                .unwrap_or_default()
                                .contains("run full-1 (policy full)")
                        {
                            seen.insert(about.uid.unwrap_or_default());
                        }
                    }
                }
                Ok((seen == deleted).then_some(seen))
            }
        },
    )
    .await?;
    assert_eq!(evicted_with_event.len(), 17);
    for (ns, workload) in [("e2e-shop", "deploy/web"), ("e2e-data", "statefulset/db")] {
        let (ok, out, err) = kubectl(&["describe", "-n", ns, workload], None).await?;
        assert!(ok, "{err}");
        assert!(
            out.contains("EvictingPods") && out.contains("armor-refresh run full-1"),
            "kubectl describe {workload} shows why its pods were recreated:\n{out}"
        );
    }
    let m = op.metrics().await?;
    assert!(m.contains("armor_refresh_pods_refreshed_total 17"), "{m}");
    // The window's minimum: 17 pods through 3 slots.
    let batches = 17u32.div_ceil(3);
    // kwok makes a pod Ready 1 s after it is scheduled; intervals are 1 s.
    let minimum = f64::from(batches) * 1.0 + f64::from(batches.saturating_sub(1)) * 1.0;
    println!(
        "FIGURES full-run: refreshed={} max_disrupted={max} batch=3 batches={batches} duration={:.1}s minimum={minimum:.1}s",
        s.progress.refreshed,
        took.as_secs_f64()
    );
    assert_eq!(
        op.terminate().await?,
        Some(0),
        "graceful shutdown on SIGTERM"
    );
    clean(&c, WEBHOOK_CONFIG).await?;
    Ok(())
}

#[tokio::test]
async fn zone_limit_and_percentage_batches() -> Result<()> {
    let _serial = SERIAL.lock().await;
    let c = client().await?;
    install_crds(&c).await?;
    clean(&c, WEBHOOK_CONFIG).await?;
    fresh_namespace(&c, "e2e-zones").await?;
    // One Deployment per zone: which zone a replacement restores is then known. (A
    // ReplicaSet names no pod it replaces; for a workload spread over zones the run counts
    // an eviction against its pod's zone until the replacement matched to it is Ready.)
    for z in ["a", "b", "c"] {
        apply(
            &deployment("e2e-zones", &format!("wide-{z}"), 4, &["app"]).replace(
                "nodeSelector: {",
                &format!("nodeSelector: {{topology.kubernetes.io/zone: zone-{z}, "),
            ),
        )
        .await?;
    }
    let pods = all_ready(&c, "e2e-zones", 12).await?;
    let witness = Witness::start(&c, &["e2e-zones"]).await?;
    let mut op = start_operator("op-zones", "armor-refresh-zones").await?;
    apply(&policy(
        "zones",
        &["e2e-zones"],
        "{batchSize: '50%', maxPerZone: 1, interval: 0s, readyTimeout: 60s}",
        "",
    ))
    .await?;
    apply(&run("zones-1", "zones", "")).await?;
    let s = wait_phase(
        &c,
        "zones-1",
        Phase::Completed,
        Some("Done"),
        Duration::from_secs(240),
    )
    .await?;
    assert_eq!(s.plan.as_ref().map(|p| p.batch_size), Some(6), "50% of 12");
    assert_eq!(s.progress.refreshed, 12);
    let per_zone = witness.max_per_zone();
    assert!(
        per_zone.values().all(|&n| n <= 1),
        "per-zone limit: {per_zone:?}"
    );
    assert!(
        witness.max_disrupted() <= 3,
        "three zones, one each: {}",
        witness.max_disrupted()
    );
    assert_eq!(witness.deletions().len(), 12);
    assert_eq!(
        witness
            .deletions()
            .iter()
            .map(|d| d.uid.clone())
            .collect::<std::collections::BTreeSet<_>>(),
        uids(&pods)
    );
    op.terminate().await?;
    clean(&c, WEBHOOK_CONFIG).await?;
    Ok(())
}

#[tokio::test]
async fn a_pdb_allowing_nothing_defers_visibly_and_never_forces() -> Result<()> {
    let _serial = SERIAL.lock().await;
    let c = client().await?;
    install_crds(&c).await?;
    clean(&c, WEBHOOK_CONFIG).await?;
    fresh_namespace(&c, "e2e-pdb").await?;
    apply(&(deployment("e2e-pdb", "tight", 2, &["app"]) + "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {name: tight, namespace: e2e-pdb}\nspec: {minAvailable: 2, selector: {matchLabels: {app: tight}}}\n")).await?;
    all_ready(&c, "e2e-pdb", 2).await?;
    let witness = Witness::start(&c, &["e2e-pdb"]).await?;
    let mut op = start_operator("op-pdb", "armor-refresh-pdb").await?;
    apply(&policy(
        "pdb",
        &["e2e-pdb"],
        "{batchSize: 1, interval: 0s}",
        "",
    ))
    .await?;
    apply(&run("pdb-1", "pdb", "")).await?;
    let s = wait_for("a deferred pod in status", Duration::from_secs(60), || {
        let c = c.clone();
        async move {
            let s = run_status(&c, "pdb-1").await?;
            let deferred = s.current_batch.as_ref().is_some_and(|b| {
                b.pods
                    .iter()
                    .any(|p| p.state == PodState::Deferred && p.attempts >= 1)
            });
            Ok(deferred.then_some(s))
        }
    })
    .await?;
    assert!(
        s.message.contains("deferred by PodDisruptionBudgets"),
        "{}",
        s.message
    );
    let (_, out, _) = kubectl(
        &[
            "get",
            "events",
            "-A",
            "--field-selector",
            "involvedObject.name=pdb-1",
            "-o",
            "jsonpath={.items[*].reason}",
        ],
        None,
    )
    .await?;
    assert!(out.contains("EvictionDeferred"), "{out}");
    assert!(witness.deletions().is_empty(), "the PDB was never bypassed");
    // Loosen the budget: the retries go through.
    apply("apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {name: tight, namespace: e2e-pdb}\nspec: {minAvailable: 1, selector: {matchLabels: {app: tight}}}\n").await?;
    wait_phase(
        &c,
        "pdb-1",
        Phase::Completed,
        Some("Done"),
        Duration::from_secs(180),
    )
    .await?;
    assert_eq!(witness.deletions().len(), 2);
    assert!(witness.max_disrupted() <= 1);
    op.terminate().await?;
    clean(&c, WEBHOOK_CONFIG).await?;
    Ok(())
}

#[tokio::test]
async fn the_breaker_opens_on_unready_replacements_and_resumes_declaratively() -> Result<()> {
    let _serial = SERIAL.lock().await;
    let c = client().await?;
    install_crds(&c).await?;
    clean(&c, WEBHOOK_CONFIG).await?;
    fresh_namespace(&c, "e2e-breaker").await?;
    // OnDelete: a template change reaches only pods that are recreated, i.e. the replacements.
    let sts = |label: &str| {
        format!(
            "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {{name: flaky, namespace: e2e-breaker}}\nspec:\n  replicas: 3\n  serviceName: flaky\n  updateStrategy: {{type: OnDelete}}\n  selector: {{matchLabels: {{app: flaky}}}}\n  template:\n    metadata: {{labels: {{app: flaky{label}}}}}\n    spec: {{nodeSelector: {{{AGENT_NODE_LABEL}: 'true'}}, containers: [{{name: app, image: example/app:1}}]}}\n"
        )
    };
    apply(&sts("")).await?;
    all_ready(&c, "e2e-breaker", 3).await?;
    apply(&sts(", e2e.armor.dev/never-ready: 'true'")).await?;
    let witness = Witness::start(&c, &["e2e-breaker"]).await?;
    let mut op = start_operator("op-breaker", "armor-refresh-breaker").await?;
    apply(&policy(
        "breaker",
        &["e2e-breaker"],
        "{batchSize: 1, interval: 0s, readyTimeout: 8s}",
        "  health: {maxFailures: 0}\n  stateful: {volumeReadyTimeout: 8s}\n",
    ))
    .await?;
    // The replacements' failing template is a staged OnDelete revision: opted in here, as
    // a user rolling it out on purpose would.
    merge_policy(
        "breaker",
        r#"{"selector": {"includeStagedRevisions": true}}"#,
    )
    .await?;
    apply(&run("breaker-1", "breaker", "")).await?;
    let s = wait_phase(
        &c,
        "breaker-1",
        Phase::Paused,
        Some("CircuitOpen"),
        Duration::from_secs(90),
    )
    .await?;
    assert_eq!(s.progress.failed, 1);
    assert!(s.message.contains("resumeToken"), "{}", s.message);
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(
        witness.deletions().len(),
        1,
        "nothing more is evicted while the breaker is open"
    );
    let (_, out, _) = kubectl(
        &[
            "get",
            "events",
            "-A",
            "--field-selector",
            "involvedObject.name=breaker-1",
            "-o",
            "jsonpath={.items[*].reason}",
        ],
        None,
    )
    .await?;
    assert!(
        out.contains("CircuitOpen") && out.contains("ReplacementNotReady"),
        "{out}"
    );
    // Fix the cause (the template), replace the stuck pod, then resume declaratively.
    apply(&sts("")).await?;
    let pods: Api<Pod> = Api::namespaced(c.clone(), "e2e-breaker");
    pods.delete("flaky-2", &DeleteParams::default()).await?;
    all_ready(&c, "e2e-breaker", 3).await?;
    // `armor-refresh reset-breaker` writes a new spec.resumeToken, as a GitOps change would.
    let out = tokio::process::Command::new(armor_refresh_e2e::process::binary())
        .args(["reset-breaker", "breaker-1"])
        .output()
        .await?;
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(said.trim(), "run breaker-1: circuit breaker reset");
    let s = wait_phase(
        &c,
        "breaker-1",
        Phase::Completed,
        Some("Done"),
        Duration::from_secs(120),
    )
    .await?;
    assert!(s.resume_token.starts_with("reset-"), "{}", s.resume_token);
    assert_eq!(s.progress.refreshed, 2, "{:?}", s.progress);
    op.terminate().await?;
    clean(&c, WEBHOOK_CONFIG).await?;
    Ok(())
}

#[tokio::test]
async fn a_closed_window_pauses_with_the_next_window_then_proceeds() -> Result<()> {
    let _serial = SERIAL.lock().await;
    let c = client().await?;
    install_crds(&c).await?;
    clean(&c, WEBHOOK_CONFIG).await?;
    fresh_namespace(&c, "e2e-window").await?;
    apply(&deployment("e2e-window", "night", 3, &["app"])).await?;
    all_ready(&c, "e2e-window", 3).await?;
    let witness = Witness::start(&c, &["e2e-window"]).await?;
    let mut op = start_operator("op-window", "armor-refresh-window").await?;
    let closed_hour = (chrono::Utc::now() + chrono::TimeDelta::hours(12))
        .format("%H")
        .to_string();
    let closed = format!(
        "  windows: [{{schedule: '0 {closed_hour} * * *', duration: 30m, timeZone: UTC}}]\n"
    );
    apply(&policy(
        "window",
        &["e2e-window"],
        "{batchSize: 2, interval: 0s}",
        &closed,
    ))
    .await?;
    apply(&run("window-1", "window", "")).await?;
    let s = wait_phase(
        &c,
        "window-1",
        Phase::Paused,
        Some("OutsideWindow"),
        Duration::from_secs(60),
    )
    .await?;
    let next = s.next_window_at.expect("nextWindowAt is set");
    assert!(
        next > chrono::Utc::now() + chrono::TimeDelta::hours(11),
        "{next}"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        witness.deletions().is_empty(),
        "nothing evicted outside the window"
    );
    // A window that is open now (every minute, for a minute: always): the run proceeds by itself.
    apply(&policy(
        "window",
        &["e2e-window"],
        "{batchSize: 2, interval: 0s}",
        "  windows: [{schedule: '* * * * *', duration: 1m}]\n",
    ))
    .await?;
    wait_phase(
        &c,
        "window-1",
        Phase::Completed,
        Some("Done"),
        Duration::from_secs(120),
    )
    .await?;
    assert_eq!(witness.deletions().len(), 3);
    op.terminate().await?;
    clean(&c, WEBHOOK_CONFIG).await?;
    Ok(())
}

#[tokio::test]
async fn kill_9_mid_batch_loses_nothing() -> Result<()> {
    let _serial = SERIAL.lock().await;
    let c = client().await?;
    install_crds(&c).await?;
    clean(&c, WEBHOOK_CONFIG).await?;
    fresh_namespace(&c, "e2e-crash").await?;
    apply(&deployment("e2e-crash", "victim", 10, &["app"])).await?;
    let pods = all_ready(&c, "e2e-crash", 10).await?;
    let witness = Witness::start(&c, &["e2e-crash"]).await?;
    let mut op = start_operator("op-crash", "armor-refresh-crash").await?;
    apply(&policy(
        "crash",
        &["e2e-crash"],
        "{batchSize: 3, interval: 2s, readyTimeout: 60s}",
        "",
    ))
    .await?;
    apply(&run("crash-1", "crash", "")).await?;
    let mut kills = 0;
    for _ in 0..3 {
        // Kill while a batch is in flight.
        let in_flight = wait_for("a batch in flight", Duration::from_secs(60), || {
            let c = c.clone();
            async move {
                let s = run_status(&c, "crash-1").await?;
                if s.phase == Phase::Completed {
                    return Ok(Some(false));
                }
                Ok(s.current_batch
                    .is_some_and(|b| b.pods.iter().any(|p| !p.state.is_settled()))
                    .then_some(true))
            }
        })
        .await?;
        if !in_flight {
            break;
        }
        op.kill9().await?;
        kills += 1;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        op.restart().await?;
    }
    let s = wait_phase(
        &c,
        "crash-1",
        Phase::Completed,
        Some("Done"),
        Duration::from_secs(240),
    )
    .await?;
    let deletions = witness.deletions();
    let deleted: std::collections::BTreeSet<String> =
        deletions.iter().map(|d| d.uid.clone()).collect();
    assert_eq!(deleted.len(), deletions.len(), "no pod evicted twice");
    assert_eq!(deleted, uids(&pods), "every target refreshed");
    assert!(
        witness.max_disrupted() <= 3,
        "max disrupted {}",
        witness.max_disrupted()
    );
    // The webhook died with the operator: replacements created meanwhile lack their
    // profile (failurePolicy Ignore let them through). They are the next run's.
    assert_eq!(
        s.progress.refreshed + s.progress.without_profile,
        10,
        "{:?}",
        s.progress
    );
    assert_eq!(s.progress.failed, 0, "{:?}", s.progress);
    println!(
        "FIGURES kill-9: kills={kills} refreshed={} without_profile={} max_disrupted={} batch=3",
        s.progress.refreshed,
        s.progress.without_profile,
        witness.max_disrupted()
    );
    assert!(
        kills >= 1,
        "the operator was killed mid-batch at least once"
    );
    if s.progress.without_profile > 0 {
        apply(&run("crash-2", "crash", "")).await?;
        let s2 = wait_phase(
            &c,
            "crash-2",
            Phase::Completed,
            Some("Done"),
            Duration::from_secs(180),
        )
        .await?;
        assert_eq!(
            s2.progress.refreshed, s.progress.without_profile,
            "{:?}",
            s2.progress
        );
    }
    let all: Api<Pod> = Api::namespaced(c.clone(), "e2e-crash");
    for p in all.list(&ListParams::default()).await?.items {
        let has = p
            .annotations()
            .keys()
            .any(|k| k.starts_with(armor_refresh::compliance::ANNOTATION_PREFIX));
        assert!(has, "{} lacks its profile", p.name_any());
    }
    op.terminate().await?;
    clean(&c, WEBHOOK_CONFIG).await?;
    Ok(())
}

#[tokio::test]
async fn only_the_leader_acts_and_a_killed_leader_hands_over() -> Result<()> {
    let _serial = SERIAL.lock().await;
    let c = client().await?;
    install_crds(&c).await?;
    clean(&c, WEBHOOK_CONFIG).await?;
    fresh_namespace(&c, "e2e-ha").await?;
    apply(&deployment("e2e-ha", "ha", 8, &["app"])).await?;
    let pods = all_ready(&c, "e2e-ha", 8).await?;
    let witness = Witness::start(&c, &["e2e-ha"]).await?;
    // One webhook process; two operator replicas competing for one Lease.
    let wport = armor_refresh_e2e::process::free_port();
    let webhook_args: Vec<String> = [
        "webhook",
        "--self-signed",
        "--webhook-addr",
        &format!("127.0.0.1:{wport}"),
        "--webhook-config",
        WEBHOOK_CONFIG,
        "--webhook-url",
        &format!("https://127.0.0.1:{wport}/mutate"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut webhook = Process::start("webhook-ha", &webhook_args).await?;
    let op_args = |id: &str| -> Vec<String> {
        [
            "run",
            "--no-webhook",
            "--identity",
            id,
            "--lease-namespace",
            "default",
            "--lease-name",
            "armor-refresh-ha",
            "--lease-duration",
            "6",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let mut a = Process::start("op-ha-a", &op_args("op-ha-a")).await?;
    let mut b = Process::start("op-ha-b", &op_args("op-ha-b")).await?;
    apply(&policy(
        "ha",
        &["e2e-ha"],
        "{batchSize: 2, interval: 3s, readyTimeout: 60s}",
        "",
    ))
    .await?;
    apply(&run("ha-1", "ha", "")).await?;
    // Wait for some progress, then kill whoever leads.
    wait_for("two pods refreshed", Duration::from_secs(90), || {
        let c = c.clone();
        async move { Ok((run_status(&c, "ha-1").await?.progress.refreshed >= 2).then_some(())) }
    })
    .await?;
    let (ea, eb) = (a.evictions(), b.evictions());
    assert!(
        (ea == 0) != (eb == 0),
        "exactly one replica acted: a={ea} b={eb}"
    );
    let (leader, follower) = if ea > 0 {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    leader.kill9().await?;
    let before = follower.evictions();
    let s = wait_phase(
        &c,
        "ha-1",
        Phase::Completed,
        Some("Done"),
        Duration::from_secs(180),
    )
    .await?;
    assert_eq!(s.progress.refreshed, 8, "{:?}", s.progress);
    assert!(follower.evictions() > before, "the follower took over");
    let deletions = witness.deletions();
    let deleted: std::collections::BTreeSet<String> =
        deletions.iter().map(|d| d.uid.clone()).collect();
    assert_eq!(
        deleted.len(),
        deletions.len(),
        "no pod evicted twice across the handover"
    );
    assert_eq!(deleted, uids(&pods));
    assert!(witness.max_disrupted() <= 2, "{}", witness.max_disrupted());
    follower.terminate().await?;
    webhook.terminate().await?;
    clean(&c, WEBHOOK_CONFIG).await?;
    Ok(())
}

#[tokio::test]
async fn a_dry_run_plans_evicts_nothing_and_kubectl_wait_works() -> Result<()> {
    let _serial = SERIAL.lock().await;
    let c = client().await?;
    install_crds(&c).await?;
    clean(&c, WEBHOOK_CONFIG).await?;
    fresh_namespace(&c, "e2e-dry").await?;
    apply(&deployment("e2e-dry", "plan", 5, &["app"])).await?;
    all_ready(&c, "e2e-dry", 5).await?;
    let witness = Witness::start(&c, &["e2e-dry"]).await?;
    let mut op = start_operator("op-dry", "armor-refresh-dry").await?;
    apply(&policy("dry", &["e2e-dry"], "{batchSize: 2}", "")).await?;
    apply(&run("dry-1", "dry", ", dryRun: true")).await?;
    let (ok, out, err) = kubectl(
        &[
            "wait",
            "--for=condition=Complete",
            "armorrefreshrun/dry-1",
            "--timeout=60s",
        ],
        None,
    )
    .await?;
    assert!(ok, "{out} {err}");
    let s = run_status(&c, "dry-1").await?;
    assert_eq!(s.reason, "DryRun");
    let plan = s.plan.expect("plan in status");
    assert_eq!((plan.targets, plan.batches, plan.batch_size), (5, 3, 2));
    assert!(plan.estimated_duration.is_some());
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(witness.deletions().is_empty());
    op.terminate().await?;
    clean(&c, WEBHOOK_CONFIG).await?;
    Ok(())
}
