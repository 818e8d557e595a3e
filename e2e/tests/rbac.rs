//! Least privilege, shown on the real API server: the chart's ServiceAccount, Roles and
//! bindings are installed, the operator runs with that ServiceAccount's token through a
//! scenario that exercises every feature that needs a permission (evictions, RolloutRestart
//! of a Deployment, a StatefulSet and a DaemonSet, Automatic runs, injection at binding,
//! self-signed CAs written into the chart's webhook configuration, leader election, repeated
//! events), and the API server's audit log then says which requests it made. The test fails
//! on any request denied (a rule missing) and on any granted verb never used (a rule too many).

use std::collections::BTreeSet;
use std::time::Duration;

use armor_refresh::api::ArmorRefreshRun;
use armor_refresh_e2e::process::{Process, free_port};
use armor_refresh_e2e::{
    Result, apply, chart, clean, client, fresh_namespace, install_crds, kubectl, wait_for,
};
use kube::Client;
use kube::api::{Api, ListParams};

const NS: &str = chart::AUDITED_NS;
const MWC: &str = chart::RELEASE;

/// The granted rules as "group/resource verb" (scope and names dropped, as the audit log
/// has them).
fn granted(yaml: &str) -> Result<BTreeSet<String>> {
    Ok(chart::grants(&chart::documents(yaml)?)
        .into_iter()
        .map(|g| g.key)
        .collect())
}

async fn wait_completed(c: &Client, policy: &str, timeout: Duration) -> Result<()> {
    let api: Api<ArmorRefreshRun> = Api::all(c.clone());
    wait_for(&format!("a run of {policy} to complete"), timeout, || {
        let api = api.clone();
        async move {
            let runs = api.list(&ListParams::default()).await?;
            Ok(runs
                .items
                .iter()
                .any(|r| {
                    r.spec.policy_ref.name == policy
                        && r.status.as_ref().is_some_and(|s| {
                            s.phase == armor_refresh::api::Phase::Completed
                                && s.progress.refreshed > 0
                        })
                })
                .then_some(()))
        }
    })
    .await
}

async fn run_phase(name: &str) -> Result<(String, String)> {
    let (_, out, _) = kubectl(
        &[
            "get",
            "arr",
            name,
            "-o",
            "jsonpath={.status.phase} {.status.reason}",
        ],
        None,
    )
    .await?;
    let (p, r) = out.split_once(' ').unwrap_or((&out, ""));
    Ok((p.to_string(), r.to_string()))
}

/// Runs of a policy with no targets finish at once: with `completedRuns: 0` only the last
/// run stays; then, with a time to live, a run goes once it expires and is no longer last.
async fn retention_deletes_finished_runs() -> Result<()> {
    let policy = |retention: &str| {
        format!(
            "apiVersion: refresh.armor.dev/v1alpha1\nkind: ArmorRefreshPolicy\nmetadata: {{name: c-retain}}\n\
             spec: {{selector: {{namespaceSelector: {{matchLabels: {{kubernetes.io/metadata.name: rbac-retain}}}}}}, \
             retention: {retention}}}\n"
        )
    };
    let run = |name: &str| {
        format!(
            "apiVersion: refresh.armor.dev/v1alpha1\nkind: ArmorRefreshRun\nmetadata: {{name: {name}}}\n\
             spec: {{policyRef: {{name: c-retain}}}}\n"
        )
    };
    let exists = |name: &'static str| async move {
        let (ok, _, err) = kubectl(&["get", "arr", name], None).await?;
        Result::<bool>::Ok(ok || !err.contains("NotFound"))
    };
    let completed = |name: &'static str| async move {
        Result::<bool>::Ok(run_phase(name).await?.0 == "Completed")
    };
    apply(&policy("{completedRuns: 0}")).await?;
    apply(&run("retain-1")).await?;
    wait_for("retain-1 to finish", Duration::from_secs(60), || async {
        Ok(completed("retain-1").await?.then_some(()))
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        exists("retain-1").await?,
        "the last run is kept, even with completedRuns: 0"
    );
    apply(&run("retain-2")).await?;
    wait_for(
        "retain-1 deleted, retain-2 kept",
        Duration::from_secs(60),
        || async {
            let done = !exists("retain-1").await? && completed("retain-2").await?;
            Ok(done.then_some(()))
        },
    )
    .await?;
    apply(&policy("{completedRuns: 5, ttlAfterFinished: 2s}")).await?;
    apply(&run("retain-3")).await?;
    wait_for(
        "retain-2 deleted after its time to live",
        Duration::from_secs(60),
        || async {
            let done = !exists("retain-2").await? && completed("retain-3").await?;
            Ok(done.then_some(()))
        },
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        exists("retain-3").await?,
        "the last run outlives its time to live"
    );
    Ok(())
}

#[tokio::test]
async fn the_operator_needs_every_granted_verb_and_no_other() -> Result<()> {
    let c = client().await?;
    install_crds(&c).await?;
    clean(&c, MWC).await?;
    for ns in [NS, "rbac-restart", "rbac-evict", "rbac-retain"] {
        fresh_namespace(&c, ns).await?;
    }
    // The chart's configuration calls the in-cluster Service; here the webhook runs on
    // loopback, so it points there. The caBundle is the operator's to write.
    let port = free_port();
    let rbac = chart::install_rbac_and_webhook(port).await?;

    // Workloads that exist before the policies, so none carries a profile yet.
    apply(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: rbac-restart}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {nodeSelector: {e2e.armor.dev/kubearmor-agent: 'true'}, containers: [{name: web, image: nginx}]}
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db, namespace: rbac-restart}
spec:
  replicas: 1
  serviceName: db
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec: {nodeSelector: {e2e.armor.dev/kubearmor-agent: 'true'}, containers: [{name: db, image: postgres}]}
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent, namespace: rbac-restart}
spec:
  selector: {matchLabels: {app: agent}}
  template:
    metadata: {labels: {app: agent}}
    spec: {nodeSelector: {e2e.armor.dev/kubearmor-agent: 'true'}, containers: [{name: agent, image: busybox}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: api, namespace: rbac-evict}
spec:
  replicas: 3
  selector: {matchLabels: {app: api}}
  template:
    metadata: {labels: {app: api}}
    spec: {nodeSelector: {e2e.armor.dev/kubearmor-agent: 'true'}, containers: [{name: api, image: nginx}]}
"#,
    )
    .await?;
    wait_for("workloads Ready", Duration::from_secs(60), || async {
        let (_, out, _) = kubectl(
            &[
                "get",
                "pods",
                "-A",
                "-l",
                "app in (web,db,agent,api)",
                "-o",
                "jsonpath={range .items[*]}{.metadata.namespace}={.status.conditions[?(@.type==\"Ready\")].status} {end}",
            ],
            None,
        )
        .await?;
        // Only this test's namespaces: other suites have pods labelled app=web too.
        let ready = out
            .split_whitespace()
            .filter(|s| matches!(*s, "rbac-restart=True" | "rbac-evict=True"))
            .count();
        // The DaemonSet runs on the 3 agent nodes of the 6.
        Ok((ready == 2 + 1 + 3 + 3).then_some(()))
    })
    .await?;

    let kubeconfig = chart::service_account_kubeconfig().await?;
    let args: Vec<String> = [
        "run",
        "--identity",
        "rbac-0",
        "--lease-namespace",
        NS,
        "--lease-name",
        "armor-refresh",
        "--lease-duration",
        "6",
        "--self-signed",
        "--webhook-addr",
        &format!("127.0.0.1:{port}"),
        "--webhook-config",
        MWC,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let env = [("KUBECONFIG".to_string(), kubeconfig.display().to_string())];
    let mut op = Process::start_with_env("rbac", &args, &env).await?;

    let result = async {
        apply(
            r#"
apiVersion: refresh.armor.dev/v1alpha1
kind: ArmorRefreshPolicy
metadata: {name: a-restart}
spec:
  selector: {namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: rbac-restart}}}
  rollout: {strategy: RolloutRestart, batchSize: 1, interval: 2s}
  trigger: Manual
---
apiVersion: refresh.armor.dev/v1alpha1
kind: ArmorRefreshPolicy
metadata: {name: b-evict}
spec:
  selector: {namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: rbac-evict}}}
  profile: {injectAt: Binding}
  rollout: {strategy: Evict, batchSize: 1, interval: 0s}
  trigger: Automatic
---
apiVersion: refresh.armor.dev/v1alpha1
kind: ArmorRefreshRun
metadata: {name: rbac-restart}
spec: {policyRef: {name: a-restart}, paused: true}
"#,
        )
        .await?;
        // Paused, resumed, paused again: the same event twice, which kube's recorder sends
        // as a patch of the first.
        for paused in [false, true, false] {
            wait_for("the pause to settle", Duration::from_secs(60), || async {
                let (phase, reason) = run_phase("rbac-restart").await?;
                let settled = if paused {
                    phase == "Batching"
                } else {
                    phase == "Paused" && reason == "UserPaused"
                };
                Ok(settled.then_some(()))
            })
            .await?;
            let (ok, _, err) = kubectl(
                &[
                    "patch",
                    "arr",
                    "rbac-restart",
                    "--type=merge",
                    "-p",
                    &format!(r#"{{"spec":{{"paused":{paused}}}}}"#),
                ],
                None,
            )
            .await?;
            assert!(ok, "{err}");
        }
        wait_completed(&c, "a-restart", Duration::from_secs(120)).await?;
        wait_completed(&c, "b-evict", Duration::from_secs(120)).await?;
        // A binding without the pod's uid (a binder other than kube-scheduler's): the
        // webhook cannot trust its cache and reads the pod (the `get pods` rule).
        apply("apiVersion: v1\nkind: Pod\nmetadata: {name: hand-bound, namespace: rbac-evict}\nspec: {schedulerName: none, containers: [{name: c, image: i}]}\n").await?;
        let node = kubectl(&["get", "nodes", "-o", "jsonpath={.items[0].metadata.name}"], None).await?.1;
        let binding = format!(r#"{{"apiVersion":"v1","kind":"Binding","metadata":{{"name":"hand-bound","namespace":"rbac-evict"}},"target":{{"kind":"Node","name":"{node}"}}}}"#);
        let (ok, _, err) = kubectl(
            &["create", "--raw", "/api/v1/namespaces/rbac-evict/pods/hand-bound/binding", "-f", "-"],
            Some(&binding),
        )
        .await?;
        assert!(ok, "{err}");
        // Not a replacement of the run: out of the profile check below.
        let (ok, _, err) = kubectl(&["delete", "pod", "hand-bound", "-n", "rbac-evict", "--grace-period=0", "--force", "--wait=true"], None).await?;
        assert!(ok, "{err}");
        retention_deletes_finished_runs().await?;
        Result::<()>::Ok(())
    }
    .await;
    let _ = op.terminate().await;
    let log = op.log_text();
    clean(&c, MWC).await?;
    result.map_err(|e| format!("{e}\noperator log (tail):\n{}", tail(&log)))?;
    // No credential in the log: neither the ServiceAccount token it ran with nor a key.
    let token = std::fs::read_to_string(&kubeconfig)?
        .lines()
        .find_map(|l| l.trim().strip_prefix("token: ").map(str::to_string))
        .ok_or("no token in the kubeconfig")?;
    assert!(
        token.len() > 20 && !log.contains(&token),
        "the token appears in the operator's log"
    );
    assert!(
        !log.contains("PRIVATE KEY"),
        "key material in the operator's log"
    );

    // Every replacement of the binding policy carries its profile: the webhook read the pod.
    let (_, out, _) = kubectl(
        &[
            "get",
            "pods",
            "-n",
            "rbac-evict",
            "-o",
            "jsonpath={range .items[*]}{.metadata.annotations}{\"\\n\"}{end}",
        ],
        None,
    )
    .await?;
    assert!(
        out.lines()
            .filter(|l| !l.is_empty())
            .all(|l| l.contains("kubearmor-rbac-evict-api-api")),
        "pods of rbac-evict lack their profile:\n{out}"
    );

    let calls = chart::audited_calls()?;
    assert!(
        !calls.is_empty(),
        "the audit log has no request of the ServiceAccount"
    );
    let denied: BTreeSet<&String> = calls
        .iter()
        .filter(|c| c.code == 403)
        .map(|c| &c.key)
        .collect();
    assert!(
        denied.is_empty(),
        "requests denied (a rule is missing): {denied:?}"
    );
    let used: BTreeSet<String> = calls.iter().map(|c| c.key.clone()).collect();
    let granted = granted(&rbac)?;
    let unused: Vec<&String> = granted.difference(&used).collect();
    assert!(
        unused.is_empty(),
        "granted but never used (a rule too many): {unused:?}\nused: {used:?}"
    );
    eprintln!(
        "{} requests audited; {} distinct verbs used, all granted, none denied",
        calls.len(),
        used.len()
    );
    Ok(())
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}
