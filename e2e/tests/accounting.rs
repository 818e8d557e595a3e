//! Disruption accounting against what real clusters do, each scenario checked by the
//! independent witness (pod deletions and readiness as the API server reports them):
//! two PodDisruptionBudgets over one pod, a webhook on `pods/eviction` answering 429 and
//! 500, an eviction whose answer is lost, the operator's clock 30 s off, a leader whose Lease
//! renewals fail while its watches work, scale-downs (by half, to 0) and a deleted workload mid-run, Jobs
//! and a staged OnDelete StatefulSet, a crash-looping pod with batch size 1, and a webhook
//! that cannot start.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use armor_refresh::api::{ArmorRefreshRunStatus, Phase, PodState};
use armor_refresh_e2e::faults::{Answer, Faults};
use armor_refresh_e2e::fixtures::{
    AGENT_NODE_LABEL, all_ready, deployment, merge_policy, policy, run, run_status, uids,
    wait_phase,
};
use armor_refresh_e2e::invariants::{Expect, Witness, report};
use armor_refresh_e2e::process::{Process, faketime, free_port, metric_value, run_args};
use armor_refresh_e2e::{
    Result, apply, clean, client, fresh_namespace, install_crds, kubectl, wait_for,
};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
const WEBHOOK_CONFIG: &str = "armor-refresh-e2e-accounting";

async fn begin(ns: &str) -> Result<Client> {
    let c = client().await?;
    install_crds(&c).await?;
    clean(&c, WEBHOOK_CONFIG).await?;
    fresh_namespace(&c, ns).await?;
    Ok(c)
}

/// `armor-refresh run` for this suite, with extra flags and environment.
async fn operator(name: &str, extra: &[&str], env: &[(String, String)]) -> Result<Process> {
    let mut args = run_args(name, WEBHOOK_CONFIG, name);
    args.extend(extra.iter().map(|s| s.to_string()));
    Process::start_with_env(name, &args, env).await
}

/// The invariants over what the witness saw, for a run of `batch` over `targets`.
fn witnessed(trial: &str, w: &Witness, batch: usize, targets: BTreeSet<String>) -> Result<()> {
    report(
        trial,
        &w.check(&Expect {
            batch,
            targets,
            ..Default::default()
        }),
    )
}

fn batch_pods(s: &ArmorRefreshRunStatus) -> Vec<armor_refresh::api::BatchPod> {
    s.current_batch
        .iter()
        .flat_map(|b| b.pods.clone())
        .chain(s.unhealthy.clone())
        .collect()
}

/// Waits until a pod of the run's batch has a message containing `text`; returns it.
async fn pod_message(
    c: &Client,
    run_name: &str,
    text: &str,
) -> Result<armor_refresh::api::BatchPod> {
    wait_for(
        &format!("a pod of {run_name} saying {text:?}"),
        Duration::from_secs(90),
        || async move {
            let s = run_status(c, run_name).await?;
            Ok(batch_pods(&s)
                .into_iter()
                .find(|p| p.message.contains(text)))
        },
    )
    .await
}

/// Waits until `who` holds the Lease `name`.
async fn holds(leases: &Api<Lease>, name: &str, who: &str, timeout: Duration) -> Result<()> {
    wait_for(&format!("{who} to hold {name}"), timeout, || async move {
        let l = leases.get_opt(name).await?;
        Ok(l.and_then(|l| l.spec?.holder_identity)
            .filter(|h| h == who)
            .map(|_| ()))
    })
    .await
}

fn log_count(op: &Process, needle: &str) -> usize {
    op.log_text().lines().filter(|l| l.contains(needle)).count()
}

#[tokio::test]
async fn a_pod_under_two_pdbs_is_retried_with_backoff_until_one_goes() -> Result<()> {
    let _s = SERIAL.lock().await;
    let ns = "acct-pdbs";
    let c = begin(ns).await?;
    apply(&deployment(ns, "web", 3, &["app"])).await?;
    let before = all_ready(&c, ns, 3).await?;
    for pdb in ["web-a", "web-b"] {
        apply(&format!("apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {{name: {pdb}, namespace: {ns}}}\nspec: {{maxUnavailable: 1, selector: {{matchLabels: {{app: web}}}}}}\n")).await?;
    }
    let witness = Witness::start(&c, &[ns]).await?;
    let mut op = operator(ns, &[], &[]).await?;
    apply(&policy(
        ns,
        &[ns],
        "{batchSize: 1, interval: 0s, readyTimeout: 60s}",
        "",
    ))
    .await?;
    apply(&run("pdbs-1", ns, "")).await?;
    // The API server answers 500 for a pod under two budgets: retried, with backoff.
    let p = pod_message(&c, "pdbs-1", "more than one PodDisruptionBudget").await?;
    assert_eq!(p.state, PodState::Deferred, "{p:?}");
    let first = Instant::now();
    tokio::time::sleep(Duration::from_secs(14)).await;
    let tries = log_count(&op, "result=\"retry\"");
    // 2 s, 4 s, 8 s: four requests in 14 s at most; an unthrottled retry makes hundreds.
    assert!(
        (1..=5).contains(&tries),
        "{tries} requests in {:?}",
        first.elapsed()
    );
    let p = &batch_pods(&run_status(&c, "pdbs-1").await?)[0];
    assert!(p.errors >= 2 && p.errors < 8, "{p:?}");
    assert!(p.message.contains("retry"), "{}", p.message);
    // One budget goes: the run goes on and ends.
    kubectl(&["-n", ns, "delete", "pdb", "web-b"], None).await?;
    let s = wait_phase(
        &c,
        "pdbs-1",
        Phase::Completed,
        Some("Done"),
        Duration::from_secs(120),
    )
    .await?;
    assert_eq!(
        (s.progress.refreshed, s.progress.failed),
        (3, 0),
        "{:?}",
        s.progress
    );
    witnessed("two-pdbs", &witness, 1, uids(&before))?;
    op.terminate().await?;
    clean(&c, WEBHOOK_CONFIG).await
}

#[tokio::test]
async fn an_eviction_webhook_answering_429_then_500_is_retried_and_slows_nothing_else() -> Result<()>
{
    let _s = SERIAL.lock().await;
    let ns = "acct-hook";
    let c = begin(ns).await?;
    apply(&deployment(ns, "web", 3, &["app"])).await?;
    let before = all_ready(&c, ns, 3).await?;
    let faults = Faults::start(&c, ns, "default", 5).await?;
    faults.set(|r| {
        r.evictions.push_back(Answer::Deny(
            429,
            "VirtualMachineInstance is migrating, try again later".into(),
        ));
        r.evictions
            .push_back(Answer::Deny(500, "the eviction webhook failed".into()));
    });
    let witness = Witness::start(&c, &[ns]).await?;
    let mut op = operator(ns, &[], &[]).await?;
    apply(&policy(
        ns,
        &[ns],
        "{batchSize: 1, interval: 0s, readyTimeout: 60s}",
        "",
    ))
    .await?;
    apply(&run("hook-1", ns, "")).await?;
    let s = wait_phase(
        &c,
        "hook-1",
        Phase::Completed,
        Some("Done"),
        Duration::from_secs(120),
    )
    .await?;
    assert_eq!(
        (s.progress.refreshed, s.progress.failed),
        (3, 0),
        "{:?}",
        s.progress
    );
    // The webhook's 429 is busy (it passes), its 500 an error (at most 8): one each.
    assert_eq!(
        (
            log_count(&op, "result=\"busy\""),
            log_count(&op, "result=\"retry\"")
        ),
        (1, 1),
        "the 429 and the 500, each retried once"
    );
    assert_eq!(
        log_count(&op, "result=\"refused\""),
        0,
        "not taken for a PodDisruptionBudget"
    );
    // A webhook's 429 is not the API server's overload: no write of the operator slowed.
    let m = op.metrics().await?;
    assert_eq!(
        metric_value(
            &m,
            "armor_refresh_reconcile_errors_total{reason=\"overloaded\"}"
        ),
        Some(0.0),
        "{m}"
    );
    assert!(faults.evictions_seen().len() >= 5);
    witnessed("eviction-webhook", &witness, 1, uids(&before))?;
    op.terminate().await?;
    faults.stop().await?;
    clean(&c, WEBHOOK_CONFIG).await
}

#[tokio::test]
async fn an_eviction_whose_answer_is_lost_counts_as_the_disruption_it_was() -> Result<()> {
    let _s = SERIAL.lock().await;
    let ns = "acct-lost";
    let c = begin(ns).await?;
    apply(&deployment(ns, "web", 3, &["app"])).await?;
    let before = all_ready(&c, ns, 3).await?;
    // The webhook holds the first two evictions for 6 s; the API server gives up on it after
    // 3 s and evicts (failurePolicy Ignore); the operator stops waiting after 2 s. So the pod
    // goes while its eviction's answer is lost, and a second request would find it gone (404).
    let faults = Faults::start(&c, ns, "default", 3).await?;
    faults.set(|r| {
        r.evictions.push_back(Answer::Hang(Duration::from_secs(6)));
        r.evictions.push_back(Answer::Hang(Duration::from_secs(6)));
    });
    let witness = Witness::start(&c, &[ns]).await?;
    let mut op = operator(ns, &["--eviction-timeout", "2"], &[]).await?;
    apply(&policy(
        ns,
        &[ns],
        "{batchSize: 1, interval: 0s, readyTimeout: 60s}",
        "",
    ))
    .await?;
    apply(&run("lost-1", ns, "")).await?;
    let s = wait_phase(
        &c,
        "lost-1",
        Phase::Completed,
        Some("Done"),
        Duration::from_secs(120),
    )
    .await?;
    assert!(
        log_count(&op, "result=\"unknown\"") >= 1,
        "an answer was lost"
    );
    assert_eq!(
        (s.progress.refreshed, s.progress.failed),
        (3, 0),
        "the lost one is matched to its replacement: {:?}",
        s.progress
    );
    assert_eq!(
        s.progress.gone, 0,
        "not taken for a pod that went by itself: {:?}",
        s.recent
    );
    witnessed("lost-answer", &witness, 1, uids(&before))?;
    op.terminate().await?;
    faults.stop().await?;
    clean(&c, WEBHOOK_CONFIG).await
}

/// The cluster's certificates are made when it starts: a client 30 s behind must not see
/// them as not valid yet.
async fn certificates_older_than(d: Duration) {
    let dir = std::env::var("ARMOR_REFRESH_CLUSTER_DIR").unwrap_or_default();
    let made = std::fs::metadata(format!("{dir}/pki/ca.crt")).and_then(|m| m.modified());
    if let Ok(age) = made.map(|t| t.elapsed().unwrap_or_default())
        && age < d
    {
        tokio::time::sleep(d - age).await;
    }
}

#[tokio::test]
async fn an_operator_clock_thirty_seconds_off_decides_on_the_api_servers() -> Result<()> {
    let _s = SERIAL.lock().await;
    certificates_older_than(Duration::from_secs(40)).await;
    for (case, offset) in [("acct-ahead", "+30s"), ("acct-behind", "-30s")] {
        let c = begin(case).await?;
        apply(&deployment(case, "web", 6, &["app"])).await?;
        let before = all_ready(&c, case, 6).await?;
        let witness = Witness::start(&c, &[case]).await?;
        let mut op = operator(case, &[], &faketime(offset)?).await?;
        apply(&policy(
            case,
            &[case],
            "{batchSize: 2, interval: 0s, readyTimeout: 40s}",
            "",
        ))
        .await?;
        apply(&run(&format!("{case}-1"), case, "")).await?;
        let s = wait_phase(
            &c,
            &format!("{case}-1"),
            Phase::Completed,
            Some("Done"),
            Duration::from_secs(150),
        )
        .await?;
        assert_eq!(
            (s.progress.refreshed, s.progress.failed),
            (6, 0),
            "{case}: {:?}",
            s.progress
        );
        assert!(
            op.log_text().contains("the API server's clock differs"),
            "{case}: the skew was measured"
        );
        // A slot was refilled only once its pod's replacement was Ready: never more than
        // two disrupted, as the witness saw it.
        witnessed(case, &witness, 2, uids(&before))?;
        assert!(
            s.recent.iter().all(|c| c.state == PodState::Refreshed),
            "{case}: {:?}",
            s.recent
        );
        op.terminate().await?;
        clean(&c, WEBHOOK_CONFIG).await?;
    }
    Ok(())
}

#[tokio::test]
async fn a_leader_whose_renewals_fail_stops_acting_before_another_takes_over() -> Result<()> {
    let _s = SERIAL.lock().await;
    let ns = "acct-fence";
    let lease = "acct-fence";
    let c = begin(ns).await?;
    apply(&deployment(ns, "web", 8, &["app"])).await?;
    let before = all_ready(&c, ns, 8).await?;
    let faults = Faults::start(&c, "no-pods-here", "default", 5).await?;
    let witness = Witness::start(&c, &[ns]).await?;
    let leases: Api<Lease> = Api::namespaced(c.clone(), "default");
    let _ = leases.delete(lease, &DeleteParams::default()).await;
    let args = |id: &str| {
        let mut a = run_args(id, WEBHOOK_CONFIG, lease);
        a.extend(["--no-webhook".to_string()]);
        a
    };
    let mut a = Process::start("fence-a", &args("fence-a")).await?;
    holds(&leases, lease, "fence-a", Duration::from_secs(30)).await?;
    let mut b = Process::start("fence-b", &args("fence-b")).await?;
    apply(&policy(
        ns,
        &[ns],
        "{batchSize: 1, interval: 2s, readyTimeout: 60s}",
        "",
    ))
    .await?;
    apply(&run("fence-1", ns, "")).await?;
    wait_for("a first eviction", Duration::from_secs(60), || {
        let w = witness.clone();
        async move { Ok((!w.deletions().is_empty()).then_some(())) }
    })
    .await?;
    // From now on fence-a's renewals are refused; its reads and watches still work, and
    // its lease library goes on saying it leads.
    faults.set(|r| r.deny_renewals = Some((lease.into(), "fence-a".into())));
    let cut = Instant::now();
    holds(&leases, lease, "fence-b", Duration::from_secs(60)).await?;
    let taken_over = Instant::now();
    let s = wait_phase(
        &c,
        "fence-1",
        Phase::Completed,
        Some("Done"),
        Duration::from_secs(180),
    )
    .await?;
    // No webhook runs here: replacements come without a profile and count as such.
    assert_eq!(
        (
            s.progress.refreshed + s.progress.without_profile,
            s.progress.failed
        ),
        (8, 0),
        "{:?}",
        s.progress
    );
    // fence-a evicted nothing once fence-b led: its evictions all fall before the takeover
    // (whether its fence or its lease library noticed first depends on timing; both logs
    // are printed).
    println!(
        "fence-a: fence refused {} steps; lease library gave up: {}",
        log_count(&a, "not acting"),
        a.log_text().contains("leader=false")
    );
    let by_a = a.evictions();
    let by_b = b.evictions();
    let before_takeover = witness
        .deletions()
        .iter()
        .filter(|d| d.at <= taken_over)
        .count();
    assert!(
        by_a <= before_takeover,
        "fence-a evicted {by_a}, only {before_takeover} happened before fence-b led"
    );
    assert_eq!(by_a + by_b, 8, "a: {by_a}, b: {by_b}");
    assert!(by_b >= 1, "fence-b finished the run");
    eprintln!(
        "fence: renewals cut at +0s, fence-b led after {:?}",
        taken_over - cut
    );
    witnessed("fenced-leader", &witness, 1, uids(&before))?;
    a.terminate().await.ok();
    b.terminate().await?;
    faults.stop().await?;
    let _ = leases.delete(lease, &DeleteParams::default()).await;
    clean(&c, WEBHOOK_CONFIG).await
}

#[tokio::test]
async fn scale_downs_and_a_deleted_workload_mid_run_are_not_failures() -> Result<()> {
    let _s = SERIAL.lock().await;
    let ns = "acct-scale";
    let c = begin(ns).await?;
    apply(&format!(
        "{}{}{}",
        deployment(ns, "shrink", 4, &["app"]),
        deployment(ns, "zero", 2, &["app"]),
        deployment(ns, "gone", 2, &["app"])
    ))
    .await?;
    all_ready(&c, ns, 8).await?;
    // Replacements are refused at admission until the workloads change.
    let faults = Faults::start(&c, ns, "default", 5).await?;
    faults.set(|r| r.deny_create = ["shrink", "zero", "gone"].map(String::from).into());
    let witness = Witness::start(&c, &[ns]).await?;
    let mut op = operator(ns, &[], &[]).await?;
    apply(&policy(
        ns,
        &[ns],
        "{batchSize: 3, interval: 0s, readyTimeout: 40s}",
        "  health: {maxFailures: 0}\n",
    ))
    .await?;
    apply(&run("scale-1", ns, "")).await?;
    wait_for("three evictions", Duration::from_secs(60), || {
        let w = witness.clone();
        async move { Ok((w.deletions().len() >= 3).then_some(())) }
    })
    .await?;
    // One of each evicted (the planner spreads over workloads); now scale shrink to half
    // (as an HPA would) and zero to 0, and delete gone. Paused meanwhile: the first change
    // frees a slot (its evicted pod is Gone) and the window would refill it at once, with
    // a pod of a workload the next change removes, before the controllers have acted.
    let runs: Api<armor_refresh::api::ArmorRefreshRun> = Api::all(c.clone());
    let pause = |on: bool| {
        let runs = runs.clone();
        async move {
            runs.patch(
                "scale-1",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"paused": on}})),
            )
            .await
        }
    };
    pause(true).await?;
    wait_phase(
        &c,
        "scale-1",
        Phase::Paused,
        Some("UserPaused"),
        Duration::from_secs(30),
    )
    .await?;
    let deploys: Api<Deployment> = Api::namespaced(c.clone(), ns);
    deploys
        .patch(
            "shrink",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 2}})),
        )
        .await?;
    deploys
        .patch(
            "zero",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 0}})),
        )
        .await?;
    deploys.delete("gone", &DeleteParams::foreground()).await?;
    let pods: Api<Pod> = Api::namespaced(c.clone(), ns);
    wait_for(
        "the scale-downs and the deletion",
        Duration::from_secs(60),
        || {
            let pods = pods.clone();
            async move {
                let live: Vec<String> = pods
                    .list(&ListParams::default())
                    .await?
                    .items
                    .iter()
                    .filter(|p| p.metadata.deletion_timestamp.is_none())
                    .map(|p| p.name_any())
                    .collect();
                let done = live.len() == 2 && live.iter().all(|n| n.starts_with("shrink-"));
                Ok(done.then_some(()))
            }
        },
    )
    .await?;
    faults.set(|r| r.deny_create.clear());
    pause(false).await?;
    let s = wait_phase(
        &c,
        "scale-1",
        Phase::Completed,
        Some("Done"),
        Duration::from_secs(120),
    )
    .await?;
    assert_eq!(s.progress.failed, 0, "{:?} {:?}", s.progress, s.recent);
    assert!(s.unhealthy.is_empty());
    assert!(
        s.progress.gone >= 3,
        "the three evicted pods nothing replaces: {:?}",
        s.recent
    );
    // The scale-down and the deletion take Ready pods away for good, which the witness
    // counts as open gaps: what the operator did is checked by its own evictions instead.
    let mut checks = witness.check(&Expect {
        batch: 3,
        ..Default::default()
    });
    checks.retain(|c| c.invariant != "disruption within the batch");
    report("scale-down", &checks)?;
    let evicted = op.evictions();
    let lines: Vec<String> = op
        .log_text()
        .lines()
        .filter(|l| l.contains("eviction"))
        .map(String::from)
        .collect();
    assert!(
        evicted <= 5,
        "{evicted} evictions: 3 before the change, shrink's 2 pods left after:\n{}",
        lines.join("\n")
    );
    op.terminate().await?;
    faults.stop().await?;
    clean(&c, WEBHOOK_CONFIG).await
}

#[tokio::test]
async fn jobs_and_a_staged_on_delete_statefulset_are_left_alone() -> Result<()> {
    let _s = SERIAL.lock().await;
    let ns = "acct-jobs";
    let c = begin(ns).await?;
    let pin = format!("nodeSelector: {{{AGENT_NODE_LABEL}: 'true'}}");
    apply(&format!(
        "apiVersion: batch/v1\nkind: Job\nmetadata: {{name: migrate, namespace: {ns}}}\nspec:\n  backoffLimit: 0\n  template:\n    metadata: {{labels: {{app: migrate}}}}\n    spec: {{restartPolicy: Never, {pin}, containers: [{{name: app, image: example/app:1}}]}}\n---\napiVersion: batch/v1\nkind: CronJob\nmetadata: {{name: nightly, namespace: {ns}}}\nspec:\n  schedule: '0 3 * * *'\n  suspend: true\n  jobTemplate:\n    spec:\n      template:\n        metadata: {{labels: {{app: nightly}}}}\n        spec: {{restartPolicy: Never, {pin}, containers: [{{name: app, image: example/app:1}}]}}\n---\napiVersion: apps/v1\nkind: StatefulSet\nmetadata: {{name: db, namespace: {ns}}}\nspec:\n  replicas: 2\n  serviceName: db\n  updateStrategy: {{type: OnDelete}}\n  selector: {{matchLabels: {{app: db}}}}\n  template:\n    metadata: {{labels: {{app: db}}}}\n    spec: {{{pin}, containers: [{{name: pg, image: example/pg:16}}]}}\n"
    ))
    .await?;
    // The CronJob's job, as its controller would make it.
    let (ok, _, err) = kubectl(
        &[
            "-n",
            ns,
            "create",
            "job",
            "nightly-manual",
            "--from=cronjob/nightly",
        ],
        None,
    )
    .await?;
    assert!(ok, "{err}");
    all_ready(&c, ns, 4).await?;
    // A staged upgrade of the database: a new template the owner rolls out pod by pod.
    let sets: Api<StatefulSet> = Api::namespaced(c.clone(), ns);
    sets.patch(
        "db",
        &PatchParams::default(),
        &Patch::Merge(
            json!({"spec": {"template": {"metadata": {"annotations": {"upgrade": "pg-17"}}}}}),
        ),
    )
    .await?;
    wait_for("db's staged revision", Duration::from_secs(30), || {
        let sets = sets.clone();
        async move {
            let s = sets.get("db").await?.status.unwrap_or_default();
            Ok(
                (s.update_revision.is_some() && s.update_revision != s.current_revision)
                    .then_some(()),
            )
        }
    })
    .await?;
    let before: Vec<Pod> = Api::<Pod>::namespaced(c.clone(), ns)
        .list(&ListParams::default())
        .await?
        .items;
    let witness = Witness::start(&c, &[ns]).await?;
    let mut op = operator(ns, &[], &[]).await?;
    apply(&policy(ns, &[ns], "{batchSize: 2, interval: 0s}", "")).await?;
    apply(&run("jobs-1", ns, "")).await?;
    let s = wait_phase(
        &c,
        "jobs-1",
        Phase::Completed,
        Some("Done"),
        Duration::from_secs(60),
    )
    .await?;
    let plan = s.plan.clone().unwrap_or_default();
    assert_eq!(plan.targets, 0, "{plan:?}");
    assert_eq!(plan.skipped.get("JobPod"), Some(&2), "{plan:?}");
    assert_eq!(plan.skipped.get("StagedRevision"), Some(&2), "{plan:?}");
    assert!(witness.deletions().is_empty(), "{:?}", witness.deletions());
    let jobs: Api<Job> = Api::namespaced(c.clone(), ns);
    let failed = jobs
        .get("migrate")
        .await?
        .status
        .and_then(|s| s.failed)
        .unwrap_or(0);
    assert_eq!(failed, 0, "the Job kept its backoffLimit");
    // Opted in, the staged revision is rolled out by the refresh, as asked.
    merge_policy(ns, r#"{"selector": {"includeStagedRevisions": true}}"#).await?;
    apply(&run("jobs-2", ns, "")).await?;
    let s = wait_phase(
        &c,
        "jobs-2",
        Phase::Completed,
        Some("Done"),
        Duration::from_secs(120),
    )
    .await?;
    assert_eq!(s.progress.refreshed, 2, "{:?}", s.progress);
    let db: BTreeSet<String> = before
        .iter()
        .filter(|p| p.labels().get("app").map(String::as_str) == Some("db"))
        .filter_map(|p| p.uid())
        .collect();
    let deleted: BTreeSet<String> = witness.deletions().iter().map(|d| d.uid.clone()).collect();
    assert_eq!(
        deleted,
        db,
        "only the database's pods; deleted: {:?}",
        witness
            .deletions()
            .iter()
            .map(|d| format!("{} ({}, {})", d.name, d.workload, d.uid))
            .collect::<Vec<_>>()
    );
    op.terminate().await?;
    clean(&c, WEBHOOK_CONFIG).await
}

#[tokio::test]
async fn a_crash_looping_pod_is_neither_evicted_nor_blocking_batch_size_one() -> Result<()> {
    let _s = SERIAL.lock().await;
    let ns = "acct-crash";
    let c = begin(ns).await?;
    let crash = deployment(ns, "crash", 1, &["app"]).replace(
        "metadata: {labels: {app: crash}}",
        "metadata: {labels: {app: crash, e2e.armor.dev/never-ready: 'true'}}",
    );
    apply(&format!("{}{crash}", deployment(ns, "web", 3, &["app"]))).await?;
    let web = all_ready(&c, ns, 3).await?;
    let pods: Api<Pod> = Api::namespaced(c.clone(), ns);
    let looping = wait_for("the crash-looping pod", Duration::from_secs(60), || {
        let pods = pods.clone();
        async move {
            let l = pods
                .list(&ListParams::default().labels("app=crash"))
                .await?
                .items;
            Ok(l.into_iter()
                .find(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")))
        }
    })
    .await?;
    // Unready for longer than the policy's readyTimeout: broken, not starting.
    let age = looping
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0.as_second())
        .unwrap_or_default();
    let wait = (age + 22 - chrono::Utc::now().timestamp()).clamp(0, 30);
    tokio::time::sleep(Duration::from_secs(wait as u64)).await;
    let witness = Witness::start(&c, &[ns]).await?;
    let mut op = operator(ns, &[], &[]).await?;
    apply(&policy(
        ns,
        &[ns],
        "{batchSize: 1, interval: 0s, readyTimeout: 20s}",
        "",
    ))
    .await?;
    apply(&run("crash-1", ns, "")).await?;
    let s = wait_phase(
        &c,
        "crash-1",
        Phase::Completed,
        Some("Done"),
        Duration::from_secs(120),
    )
    .await?;
    assert_eq!(
        (s.progress.refreshed, s.progress.failed),
        (3, 0),
        "{:?}",
        s.progress
    );
    assert_eq!(s.plan.unwrap_or_default().skipped.get("NotReady"), Some(&1));
    let deleted: BTreeSet<String> = witness.deletions().iter().map(|d| d.uid.clone()).collect();
    assert!(
        !deleted.contains(&looping.uid().unwrap_or_default()),
        "the unready pod stays"
    );
    witnessed("crash-loop", &witness, 1, uids(&web))?;
    op.terminate().await?;
    clean(&c, WEBHOOK_CONFIG).await
}

#[tokio::test]
async fn an_operator_whose_webhook_cannot_start_exits_with_a_clear_error() -> Result<()> {
    let _s = SERIAL.lock().await;
    let c = begin("acct-nohook").await?;
    // Something else holds the webhook's port.
    let port = free_port();
    let _taken = std::net::TcpListener::bind(("127.0.0.1", port))?;
    let mut args = run_args("nohook", WEBHOOK_CONFIG, "nohook");
    let at = args
        .iter()
        .position(|a| a == "--webhook-addr")
        .expect("flag")
        + 1;
    args[at] = format!("127.0.0.1:{port}");
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(armor_refresh_e2e::process::binary())
            .args(&args)
            .args(["--metrics-addr", &format!("127.0.0.1:{}", free_port())])
            .output(),
    )
    .await??;
    let err =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("webhook"), "{err}");
    assert!(
        err.contains("stopped acting")
            || err.contains("Address already in use")
            || err.contains("address"),
        "{err}"
    );
    clean(&c, WEBHOOK_CONFIG).await
}
