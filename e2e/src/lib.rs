//! Helpers for the end-to-end tests: a client for the local control plane, bounded waits,
//! kubectl, and fixtures. Tests run against the cluster that `KUBECONFIG` names, which
//! `make test` brings up with `e2e/cluster.sh up`.

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};

pub type Error = Box<dyn std::error::Error + Send + Sync>;
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The directory of the local control plane e2e/run-tests.sh started (its kubeconfigs,
/// audit log and settings).
/// Is the pod's Ready condition True? Read here, not through the operator's code, so the
/// tests' witnesses stay independent of what they check.
pub fn is_ready(p: &k8s_openapi::api::core::v1::Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

pub fn cluster_dir() -> Result<PathBuf> {
    std::env::var("ARMOR_REFRESH_CLUSTER_DIR")
        .map(PathBuf::from)
        .map_err(|_| "ARMOR_REFRESH_CLUSTER_DIR is not set: run with e2e/run-tests.sh".into())
}

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("e2e/ has a parent")
        .to_path_buf()
}

/// A client for the cluster `KUBECONFIG` names; a clear error when there is none.
pub async fn client() -> Result<Client> {
    if std::env::var_os("KUBECONFIG").is_none() {
        return Err("KUBECONFIG is not set: run the e2e tests with `make test` (or `eval \"$(e2e/cluster.sh env)\"` after `e2e/cluster.sh up`)".into());
    }
    let mut config = kube::Config::infer().await?;
    // kube's default client retries 429s with backoff up to ~15 times; a PDB refusing an
    // eviction is a 429 that must come back at once, as it does for the operator.
    config.default_retry = false;
    Ok(Client::try_from(config)?)
}

/// Polls `f` every 250 ms until it returns `Some`, for at most `timeout`; the error says
/// what was awaited.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let start = Instant::now();
    let mut last_err = String::new();
    loop {
        match f().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last_err = format!(" (last error: {e})"),
        }
        if start.elapsed() > timeout {
            return Err(format!("gave up after {timeout:?} waiting for {what}{last_err}").into());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Runs kubectl (from PATH, as `e2e/cluster.sh env` sets it) and returns (success, stdout, stderr).
pub async fn kubectl(args: &[&str], stdin: Option<&str>) -> Result<(bool, String, String)> {
    use tokio::io::AsyncWriteExt;
    let mut cmd = tokio::process::Command::new("kubectl");
    cmd.args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .stdin(std::process::Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("kubectl: {e} (is the cluster's bin directory on PATH?)"))?;
    let mut input = child.stdin.take().expect("piped");
    if let Some(s) = stdin {
        input.write_all(s.as_bytes()).await?;
    }
    drop(input);
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .map_err(|_| format!("kubectl {args:?} timed out"))??;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// Installs (or updates) the CRDs of `crds/` and waits until they are Established.
pub async fn install_crds(client: &Client) -> Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut names = vec![];
    for entry in std::fs::read_dir(root().join("crds"))? {
        let text = std::fs::read_to_string(entry?.path())?;
        let crd: CustomResourceDefinition = serde_saphyr::from_str(&text)?;
        let name = crd.name_any();
        api.patch(
            &name,
            &PatchParams::apply("armor-refresh-e2e").force(),
            &Patch::Apply(&crd),
        )
        .await?;
        names.push(name);
    }
    for name in names {
        let api = api.clone();
        wait_for(
            &format!("CRD {name} to be Established"),
            Duration::from_secs(30),
            || {
                let api = api.clone();
                let name = name.clone();
                async move {
                    let c = api.get(&name).await?;
                    let ok = c
                        .status
                        .and_then(|s| s.conditions)
                        .unwrap_or_default()
                        .iter()
                        .any(|c| c.type_ == "Established" && c.status == "True");
                    Ok(ok.then_some(()))
                }
            },
        )
        .await?;
    }
    // Established is not yet served discovery: wait until kubectl (with its discovery
    // cache) resolves both kinds, as a user's next command would.
    for kind in ["armorrefreshpolicies", "armorrefreshruns"] {
        wait_for(
            &format!("discovery to serve {kind}"),
            Duration::from_secs(30),
            || async move {
                let (ok, _, _) = kubectl(&["get", kind], None).await?;
                Ok(ok.then_some(()))
            },
        )
        .await?;
    }
    Ok(())
}

/// A fresh namespace for one test (deleted first if a previous run left it).
pub async fn fresh_namespace(client: &Client, name: &str) -> Result<()> {
    let api: Api<Namespace> = Api::all(client.clone());
    if api.get_opt(name).await?.is_some() {
        let _ = api.delete(name, &DeleteParams::default()).await;
        let a = api.clone();
        wait_for(
            &format!("namespace {name} to be deleted"),
            Duration::from_secs(60),
            || {
                let a = a.clone();
                async move { Ok(a.get_opt(name).await?.is_none().then_some(())) }
            },
        )
        .await?;
    }
    let ns: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": name}}))?;
    api.create(&PostParams::default(), &ns).await?;
    Ok(())
}

/// `kubectl apply -f -` of a YAML stream.
pub async fn apply(yaml: &str) -> Result<()> {
    let (ok, _, err) = kubectl(&["apply", "-f", "-"], Some(yaml)).await?;
    if ok {
        Ok(())
    } else {
        Err(format!("kubectl apply: {err}").into())
    }
}

/// Deletes every policy and run (cluster-scoped, so shared by all tests) and the named
/// webhook configuration.
pub async fn clean(c: &Client, webhook_config: &str) -> Result<()> {
    use armor_refresh::api::{ArmorRefreshPolicy, ArmorRefreshRun};
    use kube::api::ListParams;
    Api::<ArmorRefreshRun>::all(c.clone())
        .delete_collection(&DeleteParams::default(), &ListParams::default())
        .await?;
    Api::<ArmorRefreshPolicy>::all(c.clone())
        .delete_collection(&DeleteParams::default(), &ListParams::default())
        .await?;
    kubectl(
        &[
            "delete",
            "mutatingwebhookconfiguration",
            webhook_config,
            "--ignore-not-found",
        ],
        None,
    )
    .await?;
    Ok(())
}

pub mod admission;
pub mod chart;
pub mod faults;
pub mod fixtures;
pub mod invariants;
pub mod process;
pub mod scale;
pub mod standin;
