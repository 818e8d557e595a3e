//! The operator as the Helm chart installs it: the chart's ServiceAccount, RBAC and webhook
//! configuration rendered by helm, a token of that ServiceAccount, and what the API server's
//! audit log says it did (e2e/cluster.sh audits ServiceAccounts of [`AUDITED_NS`] only).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::Value;

use crate::{Result, kubectl, root};

/// The namespace whose ServiceAccounts the local control plane audits.
pub const AUDITED_NS: &str = "armor-refresh-rbac";
/// The chart's release name here, so its objects are named `armor-refresh`.
pub const RELEASE: &str = "armor-refresh";

/// A tool built by e2e/tools/build.sh (helm, luahealth).
pub fn tool(name: &str) -> Result<PathBuf> {
    let dir = std::env::var_os("ARMOR_REFRESH_TOOLS").ok_or(
        "ARMOR_REFRESH_TOOLS is not set: run the e2e tests with `make test` (or e2e/run-tests.sh)",
    )?;
    Ok(PathBuf::from(dir).join(name))
}

/// Runs a tool of [`tool`] from the repository root: (success, stdout, stderr).
pub fn run(name: &str, args: &[&str]) -> Result<(bool, String, String)> {
    let out = std::process::Command::new(tool(name)?)
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

/// `helm ARGS` from the repository root; its stdout, or an error with everything it printed.
pub fn helm(args: &[&str]) -> Result<String> {
    let (ok, out, err) = run("helm", args)?;
    if !ok {
        return Err(format!("helm {args:?}: {out}{err}").into());
    }
    Ok(out)
}

/// `helm template` of the chart for a release in [`AUDITED_NS`], only the given templates.
pub fn template(show_only: &[&str]) -> Result<String> {
    let mut args = vec![
        "template",
        RELEASE,
        "charts/armor-refresh",
        "--namespace",
        AUDITED_NS,
        "--kube-version",
        "1.34.4",
    ];
    for t in show_only {
        args.extend(["--show-only", t]);
    }
    let out = std::process::Command::new(tool("helm")?)
        .args(&args)
        .current_dir(root())
        .output()?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned().into());
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// The chart's ServiceAccount, RBAC and MutatingWebhookConfiguration, applied, with the
/// configuration pointed at a webhook on loopback (`https://127.0.0.1:PORT/mutate`) instead
/// of the in-cluster Service. Returns the YAML applied.
pub async fn install_rbac_and_webhook(webhook_port: u16) -> Result<String> {
    let yaml = template(&[
        "templates/serviceaccount.yaml",
        "templates/rbac.yaml",
        "templates/webhook.yaml",
    ])?;
    crate::apply(&format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {AUDITED_NS}}}\n---\n{yaml}"
    ))
    .await?;
    let (ok, _, err) = kubectl(
        &[
            "patch",
            "mutatingwebhookconfiguration",
            RELEASE,
            "--type=json",
            "-p",
            &format!(
                r#"[{{"op":"remove","path":"/webhooks/0/clientConfig/service"}},{{"op":"add","path":"/webhooks/0/clientConfig/url","value":"https://127.0.0.1:{webhook_port}/mutate"}}]"#
            ),
        ],
        None,
    )
    .await?;
    if !ok {
        return Err(format!("pointing the webhook configuration at loopback: {err}").into());
    }
    Ok(yaml)
}

/// A kubeconfig with a token of the chart's ServiceAccount, for the same API server.
pub async fn service_account_kubeconfig() -> Result<PathBuf> {
    let (ok, token, err) = kubectl(
        &[
            "create",
            "token",
            RELEASE,
            "-n",
            AUDITED_NS,
            "--duration=2h",
        ],
        None,
    )
    .await?;
    if !ok {
        return Err(format!("kubectl create token: {err}").into());
    }
    let (ok, view, err) =
        kubectl(&["config", "view", "--raw", "--minify", "-o", "json"], None).await?;
    if !ok {
        return Err(err.into());
    }
    let view: Value = serde_json::from_str(&view)?;
    let cluster = &view["clusters"][0]["cluster"];
    let ca = match cluster["certificate-authority-data"].as_str() {
        Some(data) => format!("certificate-authority-data: {data}"),
        None => format!(
            "certificate-authority: {}",
            cluster["certificate-authority"]
                .as_str()
                .unwrap_or_default()
        ),
    };
    let path = std::env::temp_dir().join(format!(
        "armor-refresh-sa-{}-{}.kubeconfig",
        std::process::id(),
        chrono::Utc::now().timestamp_millis()
    ));
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: local\n  cluster:\n    server: {}\n    {ca}\nusers:\n- name: sa\n  user:\n    token: {}\ncontexts:\n- name: sa\n  context: {{cluster: local, user: sa}}\ncurrent-context: sa\n",
            cluster["server"].as_str().unwrap_or_default(),
            token.trim()
        ),
    )?;
    Ok(path)
}

/// One request of the chart's ServiceAccount, from the audit log.
#[derive(Debug, Clone)]
pub struct Call {
    /// `group/resource[/subresource] verb`, e.g. `core/pods/eviction create`.
    pub key: String,
    pub verb: String,
    pub code: u16,
}

impl Call {
    pub fn is_write(&self) -> bool {
        matches!(
            self.verb.as_str(),
            "create" | "update" | "patch" | "delete" | "deletecollection"
        )
    }
}

/// Every resource request the chart's ServiceAccount made, from the audit log.
pub fn audited_calls() -> Result<Vec<Call>> {
    let user = format!("system:serviceaccount:{AUDITED_NS}:{RELEASE}");
    let text = std::fs::read_to_string(crate::cluster_dir()?.join("audit.log"))?;
    let mut out = vec![];
    for line in text.lines() {
        let Ok(e) = serde_json::from_str::<Value>(line) else {
            continue; // a line being written
        };
        if e["user"]["username"].as_str() != Some(user.as_str()) {
            continue;
        }
        let o = &e["objectRef"];
        let Some(resource) = o["resource"].as_str() else {
            continue; // discovery and other non-resource URLs
        };
        let group = o["apiGroup"]
            .as_str()
            .filter(|g| !g.is_empty())
            .unwrap_or("core");
        let sub = o["subresource"]
            .as_str()
            .map(|s| format!("/{s}"))
            .unwrap_or_default();
        let verb = e["verb"].as_str().unwrap_or_default().to_string();
        out.push(Call {
            key: format!("{group}/{resource}{sub} {verb}"),
            code: e["responseStatus"]["code"].as_u64().unwrap_or(0) as u16,
            verb,
        });
    }
    Ok(out)
}

/// Writes by `group/resource[/subresource] verb`.
pub fn writes_by_kind(calls: &[Call]) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for c in calls.iter().filter(|c| c.is_write()) {
        *m.entry(c.key.clone()).or_default() += 1;
    }
    m
}

/// The documents of a YAML stream (empty ones skipped).
pub fn documents(yaml: &str) -> Result<Vec<Value>> {
    armor_refresh::yaml::documents(yaml)
        .map_err(|e| format!("YAML document {}: {}", e.document, e.error).into())
}

/// One verb on one resource granted by a Role or ClusterRole.
#[derive(Debug, Clone)]
pub struct Grant {
    /// `ClusterRole` or `Role`.
    pub scope: String,
    /// `group/resource verb`, as [`Call::key`] has it (the core group as `core`).
    pub key: String,
    /// resourceNames, comma-separated (empty: any).
    pub names: String,
}

/// Every verb granted by the Roles and ClusterRoles among `docs`.
pub fn grants(docs: &[Value]) -> Vec<Grant> {
    let mut out = vec![];
    for d in docs
        .iter()
        .filter(|d| matches!(d["kind"].as_str(), Some("ClusterRole" | "Role")))
    {
        let scope = d["kind"].as_str().unwrap_or_default();
        for rule in d["rules"].as_array().into_iter().flatten() {
            let list = |k: &str| -> Vec<String> {
                rule[k]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|v| v.as_str().unwrap_or("?").to_string())
                    .collect()
            };
            let names = list("resourceNames").join(",");
            for g in list("apiGroups") {
                let g = if g.is_empty() { "core".to_string() } else { g };
                for r in list("resources") {
                    for v in list("verbs") {
                        out.push(Grant {
                            scope: scope.to_string(),
                            key: format!("{g}/{r} {v}"),
                            names: names.clone(),
                        });
                    }
                }
            }
        }
    }
    out
}

/// `v` with every number as a float: YAML's `0.0` (the generated CRDs), Helm's `toYaml` and
/// the API server's `0` are one JSON number, as the API server reads it.
pub fn numbers_as_floats(v: &Value) -> Value {
    match v {
        Value::Number(n) => n.as_f64().map(Value::from).unwrap_or(Value::Null),
        Value::Array(a) => Value::Array(a.iter().map(numbers_as_floats).collect()),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, v)| (k.clone(), numbers_as_floats(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}
