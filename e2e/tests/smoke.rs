//! Smoke suite on the local control plane: the CRDs install and validate on the real API
//! server, kubectl reads them, and the parts of Kubernetes the operator relies on (the
//! scheduler, kwok's pod lifecycle, PDBs and the Eviction API, the ReplicaSet controller)
//! behave as they do in a real cluster.

use std::time::Duration;

use armor_refresh::api::{ArmorRefreshPolicy, ArmorRefreshRun};
use armor_refresh_e2e::{Result, client, fresh_namespace, install_crds, kubectl, root, wait_for};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, EvictParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

#[tokio::test]
async fn crds_install_and_kubectl_reads_them() -> Result<()> {
    let c = client().await?;
    install_crds(&c).await?;
    let (ok, _, err) = kubectl(&["get", "armorrefreshpolicies"], None).await?;
    assert!(ok, "{err}");
    let (ok, out, err) = kubectl(&["explain", "armorrefreshpolicy.spec"], None).await?;
    assert!(ok, "{err}");
    for field in [
        "selector", "exclude", "profile", "rollout", "windows", "health", "stateful", "trigger",
    ] {
        assert!(out.contains(field), "explain lacks {field}: {out}");
    }
    let (ok, out, _) = kubectl(
        &["explain", "armorrefreshpolicy.spec.rollout.batchSize"],
        None,
    )
    .await?;
    assert!(ok && out.contains("percentage"), "{out}");
    // Category and short names.
    let (ok, _, err) = kubectl(&["get", "armor"], None).await?;
    assert!(ok, "{err}");
    for short in ["arp", "arr"] {
        let (ok, _, err) = kubectl(&["get", short], None).await?;
        assert!(ok, "{short}: {err}");
    }
    Ok(())
}

#[tokio::test]
async fn examples_are_accepted_and_printed_with_their_columns() -> Result<()> {
    let c = client().await?;
    install_crds(&c).await?;
    for f in [
        "policy-default.yaml",
        "policy-zones-night.yaml",
        "run.yaml",
        "run-dry-run.yaml",
    ] {
        let path = root().join("examples").join(f);
        let (ok, out, err) = kubectl(
            &["apply", "--dry-run=server", "-f", path.to_str().unwrap()],
            None,
        )
        .await?;
        assert!(ok, "{f}: {err}");
        assert!(out.contains("(server dry run)"), "{out}");
    }
    // Apply one for real: defaults are filled in by the server.
    let policies: Api<ArmorRefreshPolicy> = Api::all(c.clone());
    let _ = policies
        .delete("smoke-defaults", &DeleteParams::default())
        .await;
    let p: ArmorRefreshPolicy = serde_json::from_value(json!({
        "apiVersion": "refresh.armor.dev/v1alpha1", "kind": "ArmorRefreshPolicy",
        "metadata": {"name": "smoke-defaults"}, "spec": {}
    }))?;
    let created = policies.create(&PostParams::default(), &p).await?;
    assert_eq!(created.spec.exclude.namespaces, vec!["kube-system"]);
    assert_eq!(
        created.spec.profile.template,
        "localhost/kubearmor-{namespace}-{owner}-{container}"
    );
    let (ok, out, _) = kubectl(&["get", "arp", "smoke-defaults"], None).await?;
    assert!(ok);
    let header = out.lines().next().unwrap_or_default();
    for col in ["TRIGGER", "TARGETS", "PENDING", "ACTIVE RUN", "AGE"] {
        assert!(header.contains(col), "{header}");
    }
    let runs: Api<ArmorRefreshRun> = Api::all(c.clone());
    let _ = runs.delete("smoke-run", &DeleteParams::default()).await;
    let r: ArmorRefreshRun = serde_json::from_value(json!({
        "apiVersion": "refresh.armor.dev/v1alpha1", "kind": "ArmorRefreshRun",
        "metadata": {"name": "smoke-run"}, "spec": {"policyRef": {"name": "smoke-defaults"}, "dryRun": true}
    }))?;
    runs.create(&PostParams::default(), &r).await?;
    let (ok, out, _) = kubectl(&["get", "arr", "smoke-run"], None).await?;
    assert!(ok);
    let header = out.lines().next().unwrap_or_default();
    for col in ["POLICY", "PHASE", "PROGRESS", "DISRUPTED", "REASON", "AGE"] {
        assert!(header.contains(col), "{header}");
    }
    // The wave in flight and the next wave's time are in the wide view.
    let (ok, out, _) = kubectl(&["get", "arr", "smoke-run", "-o", "wide"], None).await?;
    assert!(ok);
    let header = out.lines().next().unwrap_or_default();
    for col in ["DISRUPTED", "BATCH", "NEXT"] {
        assert!(header.contains(col), "{header}");
    }
    // policyRef is immutable (a CEL transition rule).
    let err = runs
        .patch(
            "smoke-run",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"policyRef": {"name": "other"}}})),
        )
        .await
        .expect_err("policyRef must be immutable");
    assert!(
        err.to_string().contains("spec.policyRef is immutable"),
        "{err}"
    );
    runs.delete("smoke-run", &DeleteParams::default()).await?;
    policies
        .delete("smoke-defaults", &DeleteParams::default())
        .await?;
    Ok(())
}

#[tokio::test]
async fn invalid_policies_are_rejected_with_their_messages() -> Result<()> {
    let c = client().await?;
    install_crds(&c).await?;
    let policies: Api<ArmorRefreshPolicy> = Api::all(c.clone());
    let cases = [
        (
            json!({"rollout": {"batchSize": 0}}),
            "spec.rollout.batchSize: must be a count from 1 to 1000000",
        ),
        (
            json!({"rollout": {"batchSize": "150%"}}),
            "spec.rollout.batchSize: must be a count from 1 to 1000000",
        ),
        (
            json!({"rollout": {"batchSize": "ten"}}),
            "spec.rollout.batchSize",
        ),
        (
            json!({"rollout": {"strategy": "Sideways"}}),
            "Unsupported value: \"Sideways\"",
        ),
        (
            json!({"rollout": {"strategy": "RolloutRestart", "maxPerZone": 1}}),
            "maxPerNode and maxPerZone only apply to strategy Evict",
        ),
        (
            json!({"rollout": {"maxPerNode": 0}}),
            "spec.rollout.maxPerNode",
        ),
        (
            json!({"rollout": {"interval": "soon"}}),
            "spec.rollout.interval",
        ),
        (
            json!({"profile": {"injectAt": "Binding", "format": "Field"}}),
            "injectAt Binding can only write annotations",
        ),
        (
            json!({"profile": {"template": "docker-default"}}),
            "spec.profile.template",
        ),
        (
            json!({"profile": {"format": "Sometimes"}}),
            "Unsupported value: \"Sometimes\"",
        ),
        (
            json!({"health": {"maxFailures": -1}}),
            "spec.health.maxFailures: must be a count from 0 to 1000000",
        ),
        (
            json!({"health": {"maxFailures": "101%"}}),
            "spec.health.maxFailures",
        ),
        (
            json!({"exclude": {"ownerKinds": ["daemonset"]}}),
            "spec.exclude.ownerKinds[0]",
        ),
        (
            json!({"exclude": {"namespaces": ["Not A Namespace"]}}),
            "spec.exclude.namespaces[0]",
        ),
        (
            json!({"windows": [{"schedule": "0 1 * * *", "duration": "forever"}]}),
            "spec.windows[0].duration",
        ),
        (
            json!({"trigger": "Sometimes"}),
            "Unsupported value: \"Sometimes\"",
        ),
    ];
    for (i, (spec, message)) in cases.iter().enumerate() {
        let obj: ArmorRefreshPolicy = match serde_json::from_value(json!({
            "apiVersion": "refresh.armor.dev/v1alpha1", "kind": "ArmorRefreshPolicy",
            "metadata": {"name": format!("smoke-invalid-{i}")}, "spec": spec
        })) {
            Ok(o) => o,
            // Values our own types refuse (unknown enum variants) go through kubectl instead.
            Err(_) => {
                let doc = json!({"apiVersion": "refresh.armor.dev/v1alpha1", "kind": "ArmorRefreshPolicy", "metadata": {"name": format!("smoke-invalid-{i}")}, "spec": spec});
                let (ok, _, err) = kubectl(&["create", "-f", "-"], Some(&doc.to_string())).await?;
                assert!(!ok, "case {i} {spec} was accepted");
                assert!(
                    err.contains(message),
                    "case {i} {spec}: expected {message:?} in {err}"
                );
                continue;
            }
        };
        let err = policies
            .create(&PostParams::default(), &obj)
            .await
            .expect_err(&format!("case {i} {spec} was accepted"));
        match &err {
            kube::Error::Api(s) => {
                assert_eq!(s.code, 422, "case {i}: {err}");
                assert!(
                    s.message.contains(message),
                    "case {i} {spec}: expected {message:?} in {}",
                    s.message
                );
            }
            other => panic!("case {i}: unexpected error {other}"),
        }
    }
    Ok(())
}

fn ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

#[tokio::test]
async fn pdbs_the_eviction_api_and_replicasets_behave_as_in_a_real_cluster() -> Result<()> {
    let c = client().await?;
    let ns = "smoke-evict";
    fresh_namespace(&c, ns).await?;
    let deploys: Api<Deployment> = Api::namespaced(c.clone(), ns);
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(c.clone(), ns);
    let pods: Api<Pod> = Api::namespaced(c.clone(), ns);
    deploys
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "web"},
                "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                         "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "app", "image": "example/web:1"}]}}}
            }))?,
        )
        .await?;
    pdbs.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "web"}, "spec": {"minAvailable": 3, "selector": {"matchLabels": {"app": "web"}}}}))?,
    )
    .await?;
    let lp = ListParams::default().labels("app=web");
    let running = wait_for(
        "3 Ready web pods on fake nodes",
        Duration::from_secs(60),
        || {
            let pods = pods.clone();
            let lp = lp.clone();
            async move {
                let l = pods.list(&lp).await?;
                let ok: Vec<Pod> = l
                    .items
                    .into_iter()
                    .filter(|p| {
                        ready(p) && p.spec.as_ref().and_then(|s| s.node_name.clone()).is_some()
                    })
                    .collect();
                Ok((ok.len() == 3).then_some(ok))
            }
        },
    )
    .await?;
    for p in &running {
        let node = p.spec.as_ref().unwrap().node_name.clone().unwrap();
        assert!(
            node.starts_with("node-"),
            "scheduled on a kwok node: {node}"
        );
    }
    // The disruption controller computes the budget: none allowed.
    wait_for(
        "the PDB to allow no disruption",
        Duration::from_secs(30),
        || {
            let pdbs = pdbs.clone();
            async move {
                let p = pdbs.get("web").await?;
                let s = p.status.unwrap_or_default();
                Ok((s.current_healthy == 3
                    && s.disruptions_allowed == 0
                    && s.observed_generation.is_some())
                .then_some(()))
            }
        },
    )
    .await?;
    let victim = running[0].name_any();
    let victim_uid = running[0].uid().unwrap();
    let err = pods
        .evict(&victim, &EvictParams::default())
        .await
        .expect_err("the PDB must refuse the eviction");
    match &err {
        kube::Error::Api(s) => assert_eq!(s.code, 429, "{err}"),
        other => panic!("unexpected {other}"),
    }
    // Loosen the budget: the eviction goes through and the ReplicaSet recreates the pod.
    pdbs.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"minAvailable": 2}})),
    )
    .await?;
    wait_for(
        "the PDB to allow one disruption",
        Duration::from_secs(30),
        || {
            let pdbs = pdbs.clone();
            async move {
                Ok((pdbs
                    .get("web")
                    .await?
                    .status
                    .unwrap_or_default()
                    .disruptions_allowed
                    == 1)
                    .then_some(()))
            }
        },
    )
    .await?;
    pods.evict(&victim, &EvictParams::default()).await?;
    wait_for(
        "a Ready replacement and the evicted pod gone",
        Duration::from_secs(60),
        || {
            let pods = pods.clone();
            let lp = lp.clone();
            let victim_uid = victim_uid.clone();
            async move {
                let l = pods.list(&lp).await?;
                let gone = l
                    .items
                    .iter()
                    .all(|p| p.uid().as_deref() != Some(victim_uid.as_str()));
                let ready_n = l.items.iter().filter(|p| ready(p)).count();
                Ok((gone && ready_n == 3).then_some(()))
            }
        },
    )
    .await?;
    Ok(())
}

/// The largest status the operator may write (every pod of a batch at its longest and
/// fully grown, up to the run's status budget) is accepted by the API server and etcd, and
/// read back whole.
#[tokio::test]
async fn the_largest_status_the_operator_can_write_is_accepted() -> Result<()> {
    use armor_refresh::api::{
        ArmorRefreshRunStatus, BatchPod, BatchStatus, Completion, Phase, PodState, RECENT_LIMIT,
        RestingSlots,
    };
    use armor_refresh::run::{POD_MESSAGE_MAX, STATUS_BUDGET, json_len, worst_bytes};
    let c = client().await?;
    install_crds(&c).await?;
    let runs: Api<ArmorRefreshRun> = Api::all(c.clone());
    let _ = runs
        .delete("largest-status", &DeleteParams::default())
        .await;
    let run: ArmorRefreshRun = serde_json::from_value(json!({
        "apiVersion": "refresh.armor.dev/v1alpha1", "kind": "ArmorRefreshRun",
        "metadata": {"name": "largest-status"},
        "spec": {"policyRef": {"name": "no-such-policy-for-the-size-test"}},
    }))?;
    runs.create(&PostParams::default(), &run).await?;
    let now = chrono::Utc::now();
    let pod = |i: usize| BatchPod {
        namespace: format!("{:0>63}", i),
        name: format!("{:x>253}", i),
        uid: format!("{i:08x}-0000-4000-8000-000000000000"),
        node: format!("{:n>253}", i),
        zone: "z".repeat(63),
        owner: format!("StatefulSet/{:o>253}", i),
        volumes: true,
        state: PodState::Evicted,
        requested_at: Some(now),
        evicted_at: Some(now),
        retry_at: Some(now),
        replacement: format!("{i:08x}-1111-4000-8000-000000000000"),
        attempts: u32::MAX,
        pdb_refused: true,
        errors: u32::MAX,
        uncertain: true,
        ready_before: Some(u32::MAX),
        wanted_before: Some(u32::MAX),
        message: "m".repeat(POD_MESSAGE_MAX),
    };
    let mut status = ArmorRefreshRunStatus {
        phase: Phase::Batching,
        reason: "Refreshing".into(),
        current_batch: Some(BatchStatus {
            index: 1,
            started_at: now,
            pods: vec![],
        }),
        // The window's short history and resting slots at their largest.
        recent: (0..RECENT_LIMIT)
            .map(|i| Completion {
                pod: format!("{:0>63}/{:x>253}", i, i),
                state: PodState::Refreshed,
                at: now,
                seconds: Some(u32::MAX),
            })
            .collect(),
        resting: (0..8)
            .map(|_| RestingSlots {
                until: now,
                slots: u32::MAX,
            })
            .collect(),
        ..Default::default()
    };
    let mut i = 0;
    loop {
        let p = pod(i);
        // The planner's own accounting: a pod is admitted at its worst size.
        if json_len(&status) + worst_bytes(&p) > STATUS_BUDGET {
            break;
        }
        status.current_batch.as_mut().unwrap().pods.push(p);
        i += 1;
    }
    let bytes = json_len(&status);
    assert!(bytes > STATUS_BUDGET * 9 / 10, "{bytes}");
    let patch = json!({"status": status});
    runs.patch_status(
        "largest-status",
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    let back = runs.get("largest-status").await?;
    let got = back.status.expect("status");
    assert_eq!(got.current_batch.map(|b| b.pods.len()), Some(i));
    println!(
        "FIGURES largest status: {bytes} bytes ({i} pods with every field at its longest) accepted by the API server"
    );
    // Past etcd's request limit the API server refuses it, and the operator recognises
    // that answer as "too large" (reason StatusTooLarge), not as a transient error.
    let pods = &mut status.current_batch.as_mut().unwrap().pods;
    let more: Vec<_> = pods.clone();
    pods.extend(more);
    let too_big = json_len(&status);
    let err = runs
        .patch_status(
            "largest-status",
            &PatchParams::default(),
            &Patch::Merge(&json!({"status": status})),
        )
        .await
        .expect_err(&format!("a status of {too_big} bytes is refused"));
    assert!(
        armor_refresh::controller::is_too_large(&err),
        "not recognised as too large: {err}"
    );
    println!("FIGURES a status of {too_big} bytes: refused with {err}");
    runs.delete("largest-status", &DeleteParams::default())
        .await?;
    Ok(())
}

#[tokio::test]
async fn kwok_deletes_a_pod_only_once_its_deletion_was_asked_for() -> Result<()> {
    // A kubelet deletes only a terminating pod, with its UID as a precondition; kwok deletes
    // by name, and once removed a StatefulSet's recreated pod. The cluster's admission policy
    // holds kwok to the kubelet's rule: its own delete of a live pod is refused, while its
    // delete of a pod whose deletion was asked for goes through.
    let c = client().await?;
    let ns = "smoke-kwok";
    fresh_namespace(&c, ns).await?;
    let pods: Api<Pod> = Api::namespaced(c.clone(), ns);
    pods.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "app", "image": "example/app:1"}]}}))?,
    )
    .await?;
    wait_for("pod p Ready", Duration::from_secs(60), || {
        let pods = pods.clone();
        async move { Ok(pods.get_opt("p").await?.filter(ready)) }
    })
    .await?;
    let kwok = format!(
        "--kubeconfig={}",
        armor_refresh_e2e::cluster_dir()?
            .join("kwok.kubeconfig")
            .display()
    );
    let (ok, _, err) = kubectl(
        &[
            &kwok,
            "delete",
            "pod",
            "p",
            "-n",
            ns,
            "--grace-period=0",
            "--force",
        ],
        None,
    )
    .await?;
    assert!(
        !ok && err.contains("kwok deletes only pods already terminating"),
        "kwok's delete of a live pod is refused: {err}"
    );
    assert!(pods.get_opt("p").await?.is_some(), "the pod is still there");
    // Asked to go (gracefully, as an eviction does): kwok's pod-delete stage removes it.
    pods.delete("p", &DeleteParams::default()).await?;
    wait_for("kwok to remove the pod", Duration::from_secs(30), || {
        let pods = pods.clone();
        async move { Ok(pods.get_opt("p").await?.is_none().then_some(())) }
    })
    .await?;
    Ok(())
}
