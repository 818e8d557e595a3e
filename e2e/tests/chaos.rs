//! Chaos on the local control plane: the operator killed at random instants, leaders killed
//! and cut off from the API server, the API server restarted and etcd paused mid-run, the
//! webhook killed, and policies and runs edited or deleted mid-run. Every trial ends with
//! the run's invariants checked by the independent witness (`INVARIANT trial=... pass`).
//!
//! The default test run is the short version. The long one (`make chaos`, CHAOS_LONG=1) runs
//! at least 100 SIGKILLs over runs whose operators' clocks are true, 30 s ahead, 30 s behind,
//! or two replicas 10 s apart sharing a Lease, and more leader kills.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use armor_refresh::api::Phase;
use armor_refresh_e2e::fixtures::{
    all_ready, deployment, policy, run, run_status, uids, wait_phase,
};
use armor_refresh_e2e::invariants::{Expect, Witness, report};
use armor_refresh_e2e::process::{Process, free_port, run_args};
use armor_refresh_e2e::{
    Result, apply, clean, client, fresh_namespace, install_crds, kubectl, wait_for,
};
use kube::Client;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
const WEBHOOK_CONFIG: &str = "armor-refresh-chaos";

fn long() -> bool {
    std::env::var("CHAOS_LONG").is_ok_and(|v| v == "1")
}

/// A small deterministic generator (seeded from the clock and printed, so a failing trial
/// can be replayed with CHAOS_SEED).
struct Rng(u64);
impl Rng {
    fn new() -> Rng {
        let seed = std::env::var("CHAOS_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| chrono::Utc::now().timestamp_nanos_opt().unwrap_or(1) as u64);
        println!("CHAOS_SEED={seed}");
        Rng(seed | 1)
    }
    fn ms(&mut self, lo: u64, hi: u64) -> Duration {
        // xorshift64
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        Duration::from_millis(lo + self.0 % (hi - lo + 1))
    }
}

async fn cluster(args: &[&str]) -> Result<()> {
    let out = tokio::process::Command::new(armor_refresh_e2e::root().join("e2e/cluster.sh"))
        .args(args)
        .output()
        .await?;
    if !out.status.success() {
        return Err(format!(
            "cluster.sh {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(())
}

/// A namespace with `replicas` pods in two Deployments, Ready; returns them.
async fn workload(
    c: &Client,
    ns: &str,
    replicas: u32,
) -> Result<Vec<k8s_openapi::api::core::v1::Pod>> {
    fresh_namespace(c, ns).await?;
    apply(&format!(
        "{}{}",
        deployment(ns, "front", replicas / 2, &["app"]),
        deployment(ns, "back", replicas - replicas / 2, &["app", "sidecar"])
    ))
    .await?;
    all_ready(c, ns, replicas as usize).await
}

async fn start(name: &str, lease: &str) -> Result<Process> {
    Process::start(name, &run_args(name, WEBHOOK_CONFIG, lease)).await
}

/// The environment of a replica whose clock is `offset` off (none for a true clock).
fn skewed(offset: &str) -> Result<Vec<(String, String)>> {
    if offset.is_empty() {
        return Ok(vec![]);
    }
    armor_refresh_e2e::process::faketime(offset)
}

/// The replicas of one SIGKILL trial: by turns one replica with a true clock, one 30 s
/// ahead or behind, and two replicas on one Lease whose clocks differ by 10 s (each kill
/// may hit the leader, and a handover decides on skewed clocks).
fn trial_replicas(trial: usize) -> Vec<(String, &'static str)> {
    match trial % 4 {
        0 => vec![("a".into(), "")],
        1 => vec![("a".into(), "+30s")],
        2 => vec![("a".into(), "-30s")],
        _ => vec![("a".into(), "+5s"), ("b".into(), "-5s")],
    }
}

#[tokio::test]
async fn sigkill_at_random_instants_loses_nothing() -> Result<()> {
    let _serial = SERIAL.lock().await;
    let c = client().await?;
    install_crds(&c).await?;
    clean(&c, WEBHOOK_CONFIG).await?;
    let mut rng = Rng::new();
    let want_kills = if long() { 100 } else { 3 };
    let mut kills = 0;
    let mut trial = 0;
    let mut per_kind: std::collections::BTreeMap<String, (usize, usize)> = Default::default();
    while kills < want_kills {
        trial += 1;
        let replicas = if long() {
            trial_replicas(trial)
        } else {
            vec![("a".into(), "")]
        };
        let kind = replicas
            .iter()
            .map(|(_, o)| if o.is_empty() { "0s" } else { o })
            .collect::<Vec<_>>()
            .join("/");
        let ns = format!("chaos-kill-{trial}");
        let pods = workload(&c, &ns, 12).await?;
        let witness = Witness::start(&c, &[&ns]).await?;
        let lease = format!("chaos-kill-{trial}");
        let mut ops = vec![];
        for (id, offset) in &replicas {
            let name = format!("chaos-kill-{trial}-{id}");
            ops.push(
                Process::start_with_env(
                    &name,
                    &run_args(&name, WEBHOOK_CONFIG, &lease),
                    &skewed(offset)?,
                )
                .await?,
            );
        }
        let pol = format!("kill-{trial}");
        apply(&policy(
            &pol,
            &[&ns],
            "{batchSize: 3, interval: 0s, readyTimeout: 60s}",
            "",
        ))
        .await?;
        let name = format!("kill-{trial}");
        apply(&run(&name, &pol, "")).await?;
        // Kill at random instants until the run is done.
        let deadline = Instant::now() + Duration::from_secs(240);
        let before = kills;
        loop {
            tokio::time::sleep(rng.ms(300, 2500)).await;
            if run_status(&c, &name).await?.phase.is_terminal() || Instant::now() > deadline {
                break;
            }
            let victim = rng.ms(0, ops.len() as u64 - 1).as_millis() as usize;
            ops[victim].kill9().await?;
            kills += 1;
            tokio::time::sleep(rng.ms(0, 2000)).await;
            ops[victim].restart().await?;
        }
        let s = wait_phase(&c, &name, Phase::Completed, None, Duration::from_secs(240)).await?;
        // Replacements created while the webhook (in the killed process) was down lack
        // their profile; they are not failures, and the next run takes them.
        assert_eq!(s.progress.failed, 0, "{kind}: {:?}", s.progress);
        report(
            &format!("sigkill-{trial} clocks {kind} ({kills} kills so far)"),
            &witness.check(&Expect {
                batch: 3,
                targets: uids(&pods),
                ..Expect::default()
            }),
        )?;
        let e = per_kind.entry(kind).or_default();
        e.0 += 1;
        e.1 += kills - before;
        for op in &mut ops {
            op.terminate().await?;
        }
    }
    for (kind, (trials, k)) in &per_kind {
        println!("FIGURES chaos sigkill clocks {kind}: {trials} runs, {k} kills, 0 violations");
    }
    println!("FIGURES chaos sigkill: {kills} kills over {trial} runs, 0 violations");
    clean(&c, WEBHOOK_CONFIG).await?;
    Ok(())
}

/// A TCP proxy to the API server that can be cut: the replica behind it loses the API
/// server as if the network were partitioned (connections dropped, new ones refused).
struct Proxy {
    port: u16,
    cut: Arc<AtomicBool>,
    conns: Arc<tokio::sync::Mutex<tokio::task::JoinSet<()>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(upstream: u16) -> Result<Proxy> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let cut = Arc::new(AtomicBool::new(false));
        let conns = Arc::new(tokio::sync::Mutex::new(tokio::task::JoinSet::new()));
        let (c2, k2) = (cut.clone(), conns.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if c2.load(Ordering::SeqCst) {
                    continue; // dropped: refused
                }
                k2.lock().await.spawn(async move {
                    if let Ok(mut out) =
                        tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                    {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    }
                });
            }
        });
        Ok(Proxy {
            port,
            cut,
            conns,
            task,
        })
    }

    async fn set_cut(&self, cut: bool) {
        self.cut.store(cut, Ordering::SeqCst);
        if cut {
            self.conns.lock().await.abort_all();
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A kubeconfig like the admin one, with the server behind the proxy.
async fn kubeconfig_via(port: u16) -> Result<std::path::PathBuf> {
    let (ok, view, err) =
        kubectl(&["config", "view", "--raw", "--minify", "-o", "json"], None).await?;
    assert!(ok, "{err}");
    let mut v: serde_json::Value = serde_json::from_str(&view)?;
    v["clusters"][0]["cluster"]["server"] = format!("https://127.0.0.1:{port}").into();
    let path = std::env::temp_dir().join(format!("armor-refresh-chaos-{port}.kubeconfig"));
    std::fs::write(&path, serde_json::to_string(&v)?)?;
    Ok(path)
}

fn api_port() -> Result<u16> {
    let dir = std::env::var("ARMOR_REFRESH_CLUSTER_DIR")?;
    Ok(
        std::fs::read_to_string(std::path::Path::new(&dir).join("apiserver.port"))?
            .trim()
            .parse()?,
    )
}

#[tokio::test]
async fn killed_and_isolated_leaders_hand_over_without_double_acting() -> Result<()> {
    let _serial = SERIAL.lock().await;
    let c = client().await?;
    install_crds(&c).await?;
    clean(&c, WEBHOOK_CONFIG).await?;
    let ns = "chaos-leader";
    let pods = workload(&c, ns, 24).await?;
    let witness = Witness::start(&c, &[ns]).await?;
    // Each replica reaches the API server through its own proxy, so it can be cut off alone.
    let upstream = api_port()?;
    let proxies = [Proxy::start(upstream).await?, Proxy::start(upstream).await?];
    let args = |id: &str| -> Vec<String> {
        [
            "run",
            "--no-webhook",
            "--identity",
            id,
            "--lease-namespace",
            "default",
            "--lease-name",
            "chaos-leader",
            "--lease-duration",
            "4",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let mut ops = vec![];
    for (i, p) in proxies.iter().enumerate() {
        let kc = kubeconfig_via(p.port).await?;
        ops.push(
            Process::start_with_env(
                &format!("chaos-leader-{i}"),
                &args(&format!("chaos-leader-{i}")),
                &[("KUBECONFIG".into(), kc.display().to_string())],
            )
            .await?,
        );
    }
    apply(&policy(
        "leader",
        &[ns],
        "{batchSize: 2, interval: 2s, readyTimeout: 60s}",
        "",
    ))
    .await?;
    apply(&run("leader", "leader", "")).await?;
    let holder = || async {
        let (_, out, _) = kubectl(
            &[
                "get",
                "lease",
                "-n",
                "default",
                "chaos-leader",
                "-o",
                "jsonpath={.spec.holderIdentity}",
            ],
            None,
        )
        .await?;
        Result::<Option<usize>>::Ok(
            out.strip_prefix("chaos-leader-")
                .and_then(|i| i.parse().ok()),
        )
    };
    let kills_wanted = if long() { 4 } else { 1 };
    let (mut kills, mut isolations, mut stale_acts) = (0, 0, 0);
    // No webhook runs here: replacements come without a profile and count as such.
    let refreshed = || async {
        let p = run_status(&c, "leader").await?.progress;
        Result::<u32>::Ok(p.refreshed + p.without_profile)
    };
    // Kill whoever leads after each couple of batches, then cut the leader off.
    for step in 0..=kills_wanted {
        let want = 2 * (step as u32 + 1);
        wait_for(
            &format!("{want} pods refreshed"),
            Duration::from_secs(90),
            || async { Ok((refreshed().await? >= want).then_some(())) },
        )
        .await?;
        let leader = wait_for("a leader", Duration::from_secs(30), holder).await?;
        if step < kills_wanted {
            ops[leader].kill9().await?;
            kills += 1;
            tokio::time::sleep(Duration::from_secs(1)).await;
            ops[leader].restart().await?;
            continue;
        }
        // Cut the leader off. It must stop acting once its Lease can no longer be renewed,
        // before the other replica acquires it (after the lease duration).
        proxies[leader].set_cut(true).await;
        let cut_at = Instant::now();
        let acted_before = ops[leader].evictions();
        let other = 1 - leader;
        wait_for(
            "the other replica to take the Lease",
            Duration::from_secs(30),
            || async { Ok((holder().await? == Some(other)).then_some(())) },
        )
        .await?;
        let took_over = cut_at.elapsed();
        tokio::time::sleep(Duration::from_secs(3)).await;
        proxies[leader].set_cut(false).await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        // Back on the network, the old leader must see it lost the Lease: no eviction of
        // its own since the cut (its attempts during the cut could not connect).
        stale_acts = ops[leader].evictions() - acted_before;
        isolations += 1;
        println!(
            "FIGURES chaos isolation: the other replica led {took_over:?} after the cut; evictions by the isolated leader since: {stale_acts}"
        );
    }
    let s = wait_phase(
        &c,
        "leader",
        Phase::Completed,
        None,
        Duration::from_secs(240),
    )
    .await?;
    assert_eq!(s.progress.failed, 0, "{:?}", s.progress);
    assert_eq!(
        stale_acts, 0,
        "the isolated leader acted after losing the Lease"
    );
    report(
        &format!("leader ({kills} leader kills, {isolations} isolation)"),
        &witness.check(&Expect {
            batch: 2,
            targets: uids(&pods),
            ..Expect::default()
        }),
    )?;
    assert!(
        isolations == 1 && kills >= 1,
        "kills {kills}, isolations {isolations}"
    );
    for mut o in ops {
        let _ = o.terminate().await;
    }
    clean(&c, WEBHOOK_CONFIG).await?;
    Ok(())
}

#[tokio::test]
async fn apiserver_restart_and_etcd_pause_mid_run() -> Result<()> {
    let _serial = SERIAL.lock().await;
    let c = client().await?;
    install_crds(&c).await?;
    clean(&c, WEBHOOK_CONFIG).await?;
    let ns = "chaos-cp";
    let pods = workload(&c, ns, 12).await?;
    let witness = Witness::start(&c, &[ns]).await?;
    let mut op = start("chaos-cp", "chaos-cp").await?;
    apply(&policy(
        "cp",
        &[ns],
        "{batchSize: 3, interval: 1s, readyTimeout: 90s}",
        "",
    ))
    .await?;
    apply(&run("cp", "cp", "")).await?;
    wait_for("a first batch", Duration::from_secs(60), || async {
        Ok((run_status(&c, "cp").await?.progress.refreshed >= 3).then_some(()))
    })
    .await?;
    cluster(&["restart", "kube-apiserver"]).await?;
    println!("FIGURES chaos: kube-apiserver restarted mid-run");
    wait_for(
        "progress after the restart",
        Duration::from_secs(90),
        || async { Ok((run_status(&c, "cp").await?.progress.refreshed >= 6).then_some(())) },
    )
    .await?;
    cluster(&["pause", "etcd"]).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    cluster(&["resume", "etcd"]).await?;
    println!("FIGURES chaos: etcd paused 3 s mid-run");
    let s = wait_phase(&c, "cp", Phase::Completed, None, Duration::from_secs(240)).await?;
    assert_eq!(s.progress.failed, 0, "{:?}", s.progress);
    // The witness's watch survives the restart (it re-lists); deletions while it was
    // reconnecting are still seen as gone pods.
    report(
        "apiserver-restart-etcd-pause",
        &witness.check(&Expect {
            batch: 3,
            targets: uids(&pods),
            ..Expect::default()
        }),
    )?;
    op.terminate().await?;
    clean(&c, WEBHOOK_CONFIG).await?;
    Ok(())
}

#[tokio::test]
async fn a_killed_webhook_lets_pods_through_and_a_later_run_fixes_them() -> Result<()> {
    let _serial = SERIAL.lock().await;
    let c = client().await?;
    install_crds(&c).await?;
    clean(&c, WEBHOOK_CONFIG).await?;
    let ns = "chaos-webhook";
    let pods = workload(&c, ns, 8).await?;
    let witness = Witness::start(&c, &[ns]).await?;
    // The webhook as a process of its own, and the operator without one.
    let port = free_port();
    let wargs: Vec<String> = [
        "webhook",
        "--self-signed",
        "--webhook-addr",
        &format!("127.0.0.1:{port}"),
        "--webhook-config",
        WEBHOOK_CONFIG,
        "--webhook-url",
        &format!("https://127.0.0.1:{port}/mutate"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut webhook = Process::start("chaos-webhook", &wargs).await?;
    let oargs: Vec<String> = [
        "run",
        "--no-webhook",
        "--identity",
        "chaos-wh-op",
        "--lease-namespace",
        "default",
        "--lease-name",
        "chaos-webhook",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut op = Process::start("chaos-wh-op", &oargs).await?;
    apply(&policy(
        "wh",
        &[ns],
        "{batchSize: 2, interval: 0s, readyTimeout: 60s}",
        "",
    ))
    .await?;
    webhook.kill9().await?;
    apply(&run("wh-1", "wh", "")).await?;
    let s = wait_phase(&c, "wh-1", Phase::Completed, None, Duration::from_secs(180)).await?;
    // Pods were still created (failurePolicy Ignore), without their profile.
    assert_eq!(s.progress.without_profile, 8, "{:?}", s.progress);
    assert_eq!(s.progress.failed, 0);
    webhook.restart().await?;
    apply(&run("wh-2", "wh", "")).await?;
    let s2 = wait_phase(&c, "wh-2", Phase::Completed, None, Duration::from_secs(180)).await?;
    assert_eq!(s2.progress.refreshed, 8, "{:?}", s2.progress);
    let (_, out, _) = kubectl(
        &[
            "get",
            "pods",
            "-n",
            ns,
            "-o",
            "jsonpath={range .items[*]}{.metadata.annotations}{\"\\n\"}{end}",
        ],
        None,
    )
    .await?;
    assert!(
        out.lines()
            .filter(|l| !l.is_empty())
            .all(|l| l.contains("container.apparmor.security.beta.kubernetes.io")),
        "{out}"
    );
    report(
        "webhook-killed",
        &witness.check(&Expect {
            batch: 2,
            targets: uids(&pods),
            ..Expect::default()
        }),
    )?;
    op.terminate().await?;
    webhook.terminate().await?;
    clean(&c, WEBHOOK_CONFIG).await?;
    Ok(())
}

#[tokio::test]
async fn policies_and_runs_edited_and_deleted_mid_run() -> Result<()> {
    let _serial = SERIAL.lock().await;
    let c = client().await?;
    install_crds(&c).await?;
    clean(&c, WEBHOOK_CONFIG).await?;
    let ns = "chaos-edit";
    let pods = workload(&c, ns, 16).await?;
    let witness = Witness::start(&c, &[ns]).await?;
    let mut op = start("chaos-edit", "chaos-edit").await?;
    let mut quiet = vec![];
    apply(&policy(
        "edit",
        &[ns],
        "{batchSize: 4, interval: 2s, readyTimeout: 60s}",
        "",
    ))
    .await?;
    apply(&run("edit-1", "edit", "")).await?;
    wait_for("a first batch", Duration::from_secs(60), || async {
        Ok((run_status(&c, "edit-1").await?.progress.refreshed >= 4).then_some(()))
    })
    .await?;
    // Batch size 4 → 1: from the next batch on, at most one pod at a time.
    apply(&policy(
        "edit",
        &[ns],
        "{batchSize: 1, interval: 1s, readyTimeout: 60s}",
        "",
    ))
    .await?;
    let after_edit = Witness::start(&c, &[ns]).await?;
    wait_for(
        "progress under the edited batch size",
        Duration::from_secs(90),
        || async {
            let s = run_status(&c, "edit-1").await?;
            Ok((s.progress.refreshed >= 9
                && s.current_batch.as_ref().is_none_or(|b| b.pods.len() <= 1))
            .then_some(()))
        },
    )
    .await?;
    // A window that is never open now: the run pauses OutsideWindow, nothing is evicted.
    let closed = "windows: [{schedule: \"0 0 1 1 *\", duration: 1m, timeZone: UTC}]\n";
    apply(&policy(
        "edit",
        &[ns],
        "{batchSize: 1, interval: 1s, readyTimeout: 60s}",
        &format!("  {closed}"),
    ))
    .await?;
    wait_phase(
        &c,
        "edit-1",
        Phase::Paused,
        Some("OutsideWindow"),
        Duration::from_secs(60),
    )
    .await?;
    let paused_at = Instant::now();
    tokio::time::sleep(Duration::from_secs(4)).await;
    quiet.push(("outside the window".to_string(), paused_at, Instant::now()));
    // The policy deleted mid-run: the run fails, nothing more is evicted.
    let (ok, _, err) = kubectl(&["delete", "arp", "edit"], None).await?;
    assert!(ok, "{err}");
    let s = wait_phase(
        &c,
        "edit-1",
        Phase::Failed,
        Some("PolicyNotFound"),
        Duration::from_secs(60),
    )
    .await?;
    let failed_at = Instant::now();
    // A failed run ends both waits a user would write: Failed at once, Complete never.
    let wait = |cond: &'static str, timeout: &'static str| async move {
        kubectl(&["wait", cond, "armorrefreshrun/edit-1", timeout], None).await
    };
    let (ok, out, err) = wait("--for=condition=Failed", "--timeout=10s").await?;
    assert!(ok, "kubectl wait --for=condition=Failed: {out} {err}");
    let (ok, _, _) = wait("--for=condition=Complete", "--timeout=1s").await?;
    assert!(!ok, "a failed run is not Complete");
    tokio::time::sleep(Duration::from_secs(2)).await;
    quiet.push(("the policy deleted".to_string(), failed_at, Instant::now()));
    let refreshed_first = s.progress.refreshed;
    // A new policy and run, deleted mid-batch: the operator stops acting on it.
    apply(&policy(
        "edit2",
        &[ns],
        "{batchSize: 2, interval: 3s, readyTimeout: 60s}",
        "",
    ))
    .await?;
    apply(&run("edit-2", "edit2", "")).await?;
    wait_for(
        "a batch of edit-2 in flight",
        Duration::from_secs(60),
        || async {
            let s = run_status(&c, "edit-2").await?;
            Ok(s.current_batch
                .is_some_and(|b| !b.pods.is_empty())
                .then_some(()))
        },
    )
    .await?;
    let (ok, _, err) = kubectl(&["delete", "arr", "edit-2"], None).await?;
    assert!(ok, "{err}");
    // Its batch may still be evicting as the delete lands; after that, quiet.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let deleted_at = Instant::now();
    tokio::time::sleep(Duration::from_secs(5)).await;
    quiet.push(("the run deleted".to_string(), deleted_at, Instant::now()));
    println!("FIGURES chaos edit: {refreshed_first} refreshed before the policy was deleted");
    let mut checks = witness.check(&Expect {
        batch: 4,
        quiet,
        ..Expect::default()
    });
    checks.extend(
        after_edit
            .check(&Expect {
                batch: 2,
                ..Expect::default()
            })
            .into_iter()
            .filter(|c| c.invariant == "disruption within the batch")
            .map(|mut c| {
                // One batch of 4 may still settle after the edit; the edited size is 1, and
                // the deleted-then-new run edit-2 has 2.
                c.invariant = "disruption within the edited batch";
                c
            }),
    );
    report("policy-edit-delete-run-delete", &checks)?;
    let targets: BTreeSet<String> = uids(&pods);
    assert!(!targets.is_empty());
    op.terminate().await?;
    clean(&c, WEBHOOK_CONFIG).await?;
    Ok(())
}
