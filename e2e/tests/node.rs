//! The operator as users run it: its image (deploy/image/build.sh), imported into the
//! containerd of a real node beside the kwok nodes (e2e/node/), and `helm install` of the
//! chart. Needs that node, so every test here is ignored by the default suite and run by
//! `make e2e-node` (e2e/run-tests.sh with E2E_REAL_NODE=1).
//!
//! What is shown: the image is what the Dockerfile describes; two operator pods become Ready
//! on the real node (probes served by the real binary, one leader); the API server calls
//! the webhook through its Service (kube-proxy) and a new pod gets its profile; a run of
//! the chart's default policy refreshes kwok pods and completes; `helm test` passes.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use armor_refresh::api::Phase;
use armor_refresh_e2e::chart::helm;
use armor_refresh_e2e::{
    Result, apply, chart, client, fixtures, fresh_namespace, kubectl, root, wait_for,
};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use serde_json::Value;

const NODE: &str = "armor-real-node";
const RELEASE_NS: &str = "armor-refresh";
const APP_NS: &str = "node-e2e";
const PROFILE_KEY: &str = "container.apparmor.security.beta.kubernetes.io/";

fn image_tar() -> Result<String> {
    std::env::var("ARMOR_REFRESH_IMAGE_TAR").map_err(|_| {
        "ARMOR_REFRESH_IMAGE_TAR is not set: run this suite with `make e2e-node`".into()
    })
}

/// One file of the image tarball (`docker save` layout, as go-containerregistry writes it).
fn tar_member(tar: &str, member: &str) -> Result<Vec<u8>> {
    let out = std::process::Command::new("tar")
        .args(["-xOf", tar, member])
        .output()?;
    if !out.status.success() {
        return Err(format!(
            "{member} in {tar}: {}",
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(out.stdout)
}

/// The final stage of the Dockerfile: its USER, ENTRYPOINT and LABEL keys.
fn dockerfile_final_stage() -> Result<(String, Vec<String>, BTreeSet<String>)> {
    let text = std::fs::read_to_string(root().join("Dockerfile"))?.replace("\\\n", " ");
    let last = text
        .rsplit_once("\nFROM ")
        .ok_or("the Dockerfile has no second stage")?
        .1;
    if !last.starts_with("scratch") {
        return Err(format!(
            "the final stage is FROM {}",
            last.lines().next().unwrap_or("")
        )
        .into());
    }
    let mut user = String::new();
    let mut entrypoint = vec![];
    let mut labels = BTreeSet::new();
    for line in last.lines() {
        if let Some(u) = line.strip_prefix("USER ") {
            user = u.trim().to_string();
        } else if let Some(e) = line.strip_prefix("ENTRYPOINT ") {
            entrypoint = serde_json::from_str(e.trim())?;
        } else if let Some(l) = line.strip_prefix("LABEL ") {
            for word in l.split_whitespace() {
                if let Some((k, _)) = word.split_once('=') {
                    labels.insert(k.to_string());
                }
            }
        }
    }
    Ok((user, entrypoint, labels))
}

#[test]
#[ignore = "needs the image and the real node: make e2e-node"]
fn the_image_built_here_is_the_one_the_dockerfile_describes() -> Result<()> {
    let tar = image_tar()?;
    let manifest: Value = serde_json::from_slice(&tar_member(&tar, "manifest.json")?)?;
    let m = &manifest[0];
    let config: Value = serde_json::from_slice(&tar_member(
        &tar,
        m["Config"].as_str().ok_or("manifest.json has no Config")?,
    )?)?;
    let (user, entrypoint, label_keys) = dockerfile_final_stage()?;
    let c = &config["config"];
    assert_eq!(c["User"], user, "USER");
    assert_eq!(c["Entrypoint"], serde_json::json!(entrypoint), "ENTRYPOINT");
    let got: BTreeSet<String> = c["Labels"]
        .as_object()
        .ok_or("the image has no labels")?
        .keys()
        .cloned()
        .collect();
    assert_eq!(got, label_keys, "OCI labels");
    let version = c["Labels"]["org.opencontainers.image.version"]
        .as_str()
        .unwrap_or("");
    // The Dockerfile's own default, for a build by hand, is the same version.
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile"))?;
    assert!(
        dockerfile.contains(&format!("ARG VERSION={version}\n")),
        "the Dockerfile's ARG VERSION is not {version}"
    );
    let chart = std::fs::read_to_string(root().join("charts/armor-refresh/Chart.yaml"))?;
    assert!(
        chart.contains(&format!("appVersion: \"{version}\"")),
        "the image's version {version} is not the chart's appVersion"
    );
    // One layer: the binary and the non-root user's passwd and group entries, nothing else.
    let layers = m["Layers"].as_array().ok_or("no Layers")?;
    assert_eq!(layers.len(), 1, "layers: {layers:?}");
    let layer = tar_member(&tar, layers[0].as_str().unwrap_or(""))?;
    let files: BTreeSet<String> = String::from_utf8(list_tar_gz(&layer)?)?
        .lines()
        .filter(|l| !l.ends_with('/'))
        .map(String::from)
        .collect();
    let want: BTreeSet<String> = ["armor-refresh", "etc/group", "etc/passwd"]
        .map(String::from)
        .into();
    assert_eq!(files, want);
    let size = std::fs::metadata(&tar)?.len();
    println!(
        "MEASURE image {tar}: {} KiB ({} KiB compressed layer)",
        size / 1024,
        layer.len() / 1024
    );
    Ok(())
}

/// `tar -tz` of a gzipped tarball given on stdin: its member names, one per line.
fn list_tar_gz(bytes: &[u8]) -> Result<Vec<u8>> {
    use std::io::Write;
    let mut child = std::process::Command::new("tar")
        .arg("-tz")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    child.stdin.take().ok_or("tar's stdin")?.write_all(bytes)?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        return Err("tar -tz could not read the image's layer".into());
    }
    Ok(out.stdout)
}

async fn pods_on(c: &kube::Client, ns: &str, selector: &str) -> Result<Vec<Pod>> {
    let api: Api<Pod> = Api::namespaced(c.clone(), ns);
    Ok(api
        .list(&ListParams::default().labels(selector))
        .await?
        .items)
}

fn has_profile(p: &Pod) -> bool {
    p.annotations().keys().any(|k| k.starts_with(PROFILE_KEY))
}

#[tokio::test]
#[ignore = "needs the image and the real node: make e2e-node"]
async fn helm_install_runs_the_operator_on_the_real_node_and_a_run_completes() -> Result<()> {
    let c = client().await?;
    let _ = image_tar()?;
    // Pods the run will refresh, on kwok nodes, before the webhook exists: none has a profile.
    fresh_namespace(&c, APP_NS).await?;
    apply(&fixtures::deployment(APP_NS, "web", 6, &["app"])).await?;
    let before = fixtures::all_ready(&c, APP_NS, 6).await?;
    assert!(before.iter().all(|p| !has_profile(p)));

    let start = Instant::now();
    helm(&[
        "install",
        chart::RELEASE,
        "charts/armor-refresh",
        "--namespace",
        RELEASE_NS,
        "--create-namespace",
        "--set",
        &format!("nodeSelector.kubernetes\\.io/hostname={NODE}"),
        "--set",
        "tolerations[0].key=armor.dev/real-node,tolerations[0].operator=Exists,tolerations[0].effect=NoSchedule",
        "--set",
        "image.pullPolicy=Never",
        "--wait",
        "--timeout",
        "5m",
    ])?;
    let ready_after = start.elapsed();
    println!(
        "MEASURE helm install to Ready: {:.1} s",
        ready_after.as_secs_f64()
    );
    // A first install brings the CRDs, so the default policy comes with the next upgrade, as
    // NOTES.txt says (Helm maps every object before it creates any).
    let notes = helm(&["get", "notes", chart::RELEASE, "--namespace", RELEASE_NS])?;
    assert!(
        notes.contains("--reset-then-reuse-values"),
        "NOTES: {notes}"
    );
    helm(&[
        "upgrade",
        chart::RELEASE,
        "charts/armor-refresh",
        "--namespace",
        RELEASE_NS,
        "--reset-then-reuse-values",
        "--wait",
        "--timeout",
        "5m",
    ])?;
    let (ok, _, err) = kubectl(&["get", "armorrefreshpolicy", "default"], None).await?;
    assert!(ok, "the default policy after the upgrade: {err}");

    // Two replicas, Ready, on the real node: the probes are served by the real binary.
    let ops = pods_on(&c, RELEASE_NS, "app.kubernetes.io/name=armor-refresh").await?;
    let running: Vec<&Pod> = ops
        .iter()
        .filter(|p| armor_refresh_e2e::is_ready(p))
        .collect();
    assert_eq!(
        running.len(),
        2,
        "operator pods: {:?}",
        ops.iter().map(|p| p.name_any()).collect::<Vec<_>>()
    );
    for p in &running {
        let spec = p.spec.as_ref().ok_or("a pod without spec")?;
        assert_eq!(
            spec.node_name.as_deref(),
            Some(NODE),
            "{} is not on the real node",
            p.name_any()
        );
        let ip = p
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.clone())
            .unwrap_or_default();
        assert!(ip.starts_with("198.18.0."), "{} has IP {ip}", p.name_any());
    }
    let names: BTreeSet<String> = running.iter().map(|p| p.name_any()).collect();
    let leases: Api<Lease> = Api::namespaced(c.clone(), RELEASE_NS);
    let holder = wait_for(
        "a leader among the operator pods",
        Duration::from_secs(60),
        || {
            let leases = leases.clone();
            let names = names.clone();
            async move {
                let l = leases.get_opt(chart::RELEASE).await?;
                let h = l
                    .and_then(|l| l.spec)
                    .and_then(|s| s.holder_identity)
                    .unwrap_or_default();
                Ok(names.contains(&h).then_some(h))
            }
        },
    )
    .await?;
    println!("leader: {holder}");

    // The API server calls the webhook through its Service: a pod bound to an AppArmor node
    // with an agent gets its profile at binding.
    let (ok, _, err) = kubectl(
        &["-n", APP_NS, "scale", "deploy/web", "--replicas", "7"],
        None,
    )
    .await?;
    assert!(ok, "{err}");
    let injected = wait_for(
        "the seventh pod, with its profile",
        Duration::from_secs(60),
        || {
            let c = c.clone();
            let old = fixtures::uids(&before);
            async move {
                let pods = pods_on(&c, APP_NS, "app=web").await?;
                Ok(pods.into_iter().find(|p| {
                    !old.contains(&p.uid().unwrap_or_default())
                        && p.spec.as_ref().and_then(|s| s.node_name.clone()).is_some()
                }))
            }
        },
    )
    .await?;
    assert!(
        has_profile(&injected),
        "no profile on {}: {:?}",
        injected.name_any(),
        injected.annotations()
    );

    // A run of the chart's default policy refreshes the six older pods and completes.
    apply(&fixtures::run("node-e2e", "default", "")).await?;
    let status = fixtures::wait_phase(
        &c,
        "node-e2e",
        Phase::Completed,
        None,
        Duration::from_secs(300),
    )
    .await?;
    println!("run: {status:?}");
    let after = fixtures::all_ready(&c, APP_NS, 7).await?;
    let missing: Vec<String> = after
        .iter()
        .filter(|p| !has_profile(p))
        .map(|p| p.name_any())
        .collect();
    assert!(
        missing.is_empty(),
        "pods still without a profile: {missing:?}"
    );
    let old = fixtures::uids(&before);
    assert!(
        after
            .iter()
            .all(|p| !old.contains(&p.uid().unwrap_or_default())),
        "an old pod survived the run"
    );
    // The operator never refreshed itself: its pods are the ones that became Ready above.
    let ops_now: BTreeSet<String> = pods_on(&c, RELEASE_NS, "app.kubernetes.io/name=armor-refresh")
        .await?
        .iter()
        .map(|p| p.name_any())
        .collect();
    assert_eq!(ops_now, names);

    // `helm test` runs the chart's test hook on the real node with the same image.
    let out = helm(&[
        "test",
        chart::RELEASE,
        "--namespace",
        RELEASE_NS,
        "--timeout",
        "3m",
        "--logs",
    ])?;
    println!("{out}");
    assert!(
        out.contains("Phase:          Succeeded") || out.contains("Phase: Succeeded"),
        "helm test: {out}"
    );

    // The restart counts of the operator's containers: a crash-looping binary would show here.
    let restarts: BTreeMap<String, i32> =
        pods_on(&c, RELEASE_NS, "app.kubernetes.io/name=armor-refresh")
            .await?
            .iter()
            .map(|p| {
                let n = p
                    .status
                    .as_ref()
                    .and_then(|s| s.container_statuses.as_ref())
                    .map_or(0, |cs| cs.iter().map(|c| c.restart_count).sum());
                (p.name_any(), n)
            })
            .collect();
    assert!(restarts.values().all(|n| *n == 0), "restarts: {restarts:?}");
    Ok(())
}

/// The drop counter of the real node's isolation rule for traffic leaving the bridge.
fn isolation_drops() -> Result<u64> {
    let out = std::process::Command::new("iptables")
        .args([
            "-t",
            "mangle",
            "-L",
            "ARMOR-REFRESH-ISOLATE",
            "-v",
            "-x",
            "-n",
        ])
        .output()?;
    let text = String::from_utf8(out.stdout)?;
    // The first rule: -i armor0 ! -o armor0 -j DROP.
    let line = text
        .lines()
        .find(|l| l.contains("DROP") && l.contains("armor0"))
        .ok_or(format!("no isolation rule in:\n{text}"))?;
    Ok(line.split_whitespace().next().unwrap_or("").parse()?)
}

/// Runs the sandbox image's probe on the real node and returns what it printed.
async fn probe(c: &kube::Client, name: &str, address: &str, port: u16) -> Result<String> {
    apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {APP_NS}}}\nspec:\n  restartPolicy: Never\n  nodeSelector: {{kubernetes.io/hostname: {NODE}}}\n  tolerations: [{{key: armor.dev/real-node, operator: Exists}}]\n  containers: [{{name: probe, image: 'localhost/armor-refresh-pause:1', imagePullPolicy: Never, command: [/probe, '{address}', '{port}']}}]\n"
    ))
    .await?;
    let pods: Api<Pod> = Api::namespaced(c.clone(), APP_NS);
    wait_for(
        &format!("probe {name} to finish"),
        Duration::from_secs(60),
        || {
            let pods = pods.clone();
            async move {
                let p = pods.get(name).await?;
                let phase = p.status.and_then(|s| s.phase).unwrap_or_default();
                Ok((phase == "Succeeded" || phase == "Failed").then_some(()))
            }
        },
    )
    .await?;
    let (ok, out, err) = kubectl(&["-n", APP_NS, "logs", name], None).await?;
    if !ok {
        return Err(format!("kubectl logs {name}: {err}").into());
    }
    Ok(out.trim().to_string())
}

#[tokio::test]
#[ignore = "needs the real node: make e2e-node"]
async fn pod_traffic_to_another_network_is_dropped_on_this_machine() -> Result<()> {
    let c = client().await?;
    fresh_namespace(&c, APP_NS).await?;
    // The probe works: the API server on the bridge answers it.
    let cluster = std::env::var("ARMOR_REFRESH_CLUSTER_DIR")?;
    let port: u16 = std::fs::read_to_string(format!("{cluster}/apiserver.port"))?
        .trim()
        .parse()?;
    let host = std::fs::read_to_string(format!("{cluster}/apiserver.host"))?;
    assert_eq!(
        probe(&c, "probe-bridge", host.trim(), port).await?,
        "connected"
    );
    // TEST-NET-1 (RFC 5737) is routed off this machine by its default route: the isolation
    // rule drops it on the way out.
    let before = isolation_drops()?;
    let out = probe(&c, "probe-away", "192.0.2.1", 80).await?;
    let after = isolation_drops()?;
    assert_eq!(out, "timeout", "a pod reached another network");
    assert!(
        after > before,
        "the isolation rule dropped nothing ({before} -> {after})"
    );
    Ok(())
}
