//! What the operator exposes and the chart ships for monitoring, read with Prometheus's own
//! code (e2e/tools/prometheus): `/metrics` of a running operator parsed by the parser a
//! Prometheus scrape picks for the Content-Type it declares, every metric the README lists
//! found there, the dashboard's and alert rules' queries selecting only exported metrics, and
//! the alert rules unit-tested by `promtool test rules`.

use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use armor_refresh::api::Phase;
use armor_refresh_e2e::chart::{documents, tool};
use armor_refresh_e2e::fixtures::{all_ready, deployment, policy, run, wait_phase};
use armor_refresh_e2e::process::{Process, http_get_with_headers, run_args};
use armor_refresh_e2e::{Result, apply, clean, client, fresh_namespace, install_crds, root};
use serde_json::Value;

const WEBHOOK_CONFIG: &str = "armor-refresh-e2e-monitoring";
const DASHBOARD: &str = "charts/armor-refresh/dashboards/armor-refresh.json";

/// Runs a tool from e2e/tools/build.sh with `stdin`; its stdout, or an error with stderr.
fn tool_out(name: &str, args: &[&str], stdin: &str) -> Result<String> {
    let mut child = Command::new(tool(name)?)
        .args(args)
        .current_dir(root())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{name}: {e}"))?;
    child
        .stdin
        .take()
        .ok_or("no stdin")?
        .write_all(stdin.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        return Err(format!(
            "{name} {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// `helm template` of the chart with `--set SET`, the documents of one template.
fn render(set: &str, template: &str) -> Result<Vec<Value>> {
    let out = tool_out(
        "helm",
        &[
            "template",
            "armor-refresh",
            "charts/armor-refresh",
            "--namespace",
            "monitoring-test",
            "--kube-version",
            "1.34.4",
            "--set",
            set,
            "--show-only",
            template,
        ],
        "",
    )?;
    documents(&out)
}

/// The alert rules as the chart renders them, as a Prometheus rule file (`groups:`).
fn rendered_rules(set: &str) -> Result<Value> {
    let docs = render(set, "templates/prometheusrule.yaml")?;
    let rule = docs.first().ok_or("no PrometheusRule rendered")?;
    assert_eq!(rule["kind"], "PrometheusRule");
    Ok(serde_json::json!({ "groups": rule["spec"]["groups"] }))
}

fn alert_names(rules: &Value) -> BTreeSet<String> {
    rules["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|g| g["rules"].as_array().into_iter().flatten())
        .filter_map(|r| r["alert"].as_str().map(str::to_string))
        .collect()
}

fn scratch(name: &str) -> Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("armor-refresh-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

#[test]
fn alert_rules_pass_promtool_check_and_their_unit_tests() -> Result<()> {
    let rules = rendered_rules("metrics.prometheusRule.enabled=true")?;
    let dir = scratch("alerts")?;
    std::fs::write(
        dir.join("rules.yaml"),
        serde_json::to_string_pretty(&rules)?,
    )?;
    let tests = std::fs::read_to_string(root().join("e2e/monitoring/alerts.test.yaml"))?;
    std::fs::write(dir.join("alerts.test.yaml"), &tests)?;
    let rules_path = dir.join("rules.yaml");
    let out = tool_out(
        "promtool",
        &["check", "rules", rules_path.to_str().unwrap()],
        "",
    )?;
    assert!(out.contains("SUCCESS: 5 rules found"), "{out}");
    let test_path = dir.join("alerts.test.yaml");
    let out = tool_out(
        "promtool",
        &["test", "rules", test_path.to_str().unwrap()],
        "",
    )?;
    assert!(out.contains("SUCCESS"), "{out}");
    // Every alert the chart ships has a unit test that expects it to fire.
    let tested: BTreeSet<String> = documents(&tests)?
        .first()
        .and_then(|t| t["tests"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .flat_map(|t| t["alert_rule_test"].as_array().cloned().unwrap_or_default())
        .filter(|t| t["exp_alerts"].as_array().is_some_and(|a| !a.is_empty()))
        .filter_map(|t| t["alertname"].as_str().map(str::to_string))
        .collect();
    assert_eq!(tested, alert_names(&rules));
    // Thresholds come from values, and a changed one still passes promtool's checks.
    let tuned = rendered_rules(
        "metrics.prometheusRule.enabled=true,metrics.prometheusRule.stuckFor=2h,metrics.prometheusRule.labels.release=kps",
    )?;
    let text = serde_json::to_string(&tuned)?;
    assert!(
        text.contains("armor_refresh_run_pods_refreshed[2h]"),
        "{text}"
    );
    std::fs::write(&rules_path, serde_json::to_string_pretty(&tuned)?)?;
    tool_out(
        "promtool",
        &["check", "rules", rules_path.to_str().unwrap()],
        "",
    )?;
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}

#[test]
fn the_dashboard_ships_in_a_configmap_for_grafanas_sidecar() -> Result<()> {
    assert!(
        render(
            "metrics.dashboard.enabled=false",
            "templates/dashboard.yaml"
        )
        .is_err(),
        "off by default"
    );
    let docs = render(
        "metrics.dashboard.enabled=true,metrics.dashboard.namespace=grafana",
        "templates/dashboard.yaml",
    )?;
    let cm = &docs[0];
    assert_eq!(cm["kind"], "ConfigMap");
    assert_eq!(cm["metadata"]["namespace"], "grafana");
    assert_eq!(cm["metadata"]["labels"]["grafana_dashboard"], "1");
    let shipped: Value = serde_json::from_str(
        cm["data"]["armor-refresh.json"]
            .as_str()
            .ok_or("no armor-refresh.json")?,
    )?;
    let source: Value = serde_json::from_str(&std::fs::read_to_string(root().join(DASHBOARD))?)?;
    assert_eq!(shipped, source, "the ConfigMap carries the dashboard as is");
    assert_eq!(source["uid"], "armor-refresh");
    Ok(())
}

/// The sample names a family of this OpenMetrics type exposes.
fn samples_of(family: &str, kind: &str) -> Vec<String> {
    match kind {
        "counter" => vec![format!("{family}_total"), format!("{family}_created")],
        "histogram" => ["_bucket", "_sum", "_count", "_created"]
            .iter()
            .map(|s| format!("{family}{s}"))
            .collect(),
        _ => vec![family.to_string()],
    }
}

/// The metric names the README lists (in backquotes, labels in braces dropped).
fn readme_metrics() -> Result<BTreeSet<String>> {
    let readme = std::fs::read_to_string(root().join("README.md"))?;
    Ok(readme
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|s| s.starts_with("armor_refresh_"))
        .map(|s| s.split('{').next().unwrap_or(s).to_string())
        .collect())
}

#[tokio::test]
async fn metrics_parse_as_a_scrape_does_and_match_the_readme_dashboard_and_alerts() -> Result<()> {
    let c = client().await?;
    install_crds(&c).await?;
    clean(&c, WEBHOOK_CONFIG).await?;
    fresh_namespace(&c, "e2e-metrics").await?;
    apply(&deployment("e2e-metrics", "web", 2, &["app"])).await?;
    all_ready(&c, "e2e-metrics", 2).await?;
    let mut op = Process::start(
        "op-metrics",
        &run_args("op-metrics", WEBHOOK_CONFIG, "armor-refresh-metrics"),
    )
    .await?;
    apply(&policy(
        "metrics",
        &["e2e-metrics"],
        "{batchSize: 1, interval: 0s}",
        "",
    ))
    .await?;
    apply(&run("metrics-1", "metrics", "")).await?;
    wait_phase(
        &c,
        "metrics-1",
        Phase::Completed,
        Some("Done"),
        Duration::from_secs(120),
    )
    .await?;

    let (code, headers, body) = http_get_with_headers(op.metrics_port, "/metrics").await?;
    assert_eq!(code, 200);
    let content_type = headers
        .iter()
        .find(|(k, _)| k == "content-type")
        .map(|(_, v)| v.clone())
        .ok_or("no Content-Type")?;
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    // Prometheus's scrape parser for that Content-Type; it fails on any line it would drop.
    let parsed = tool_out("promcheck", &["exposition", &content_type], &body)?;
    let mut families = BTreeSet::new();
    let mut samples = BTreeSet::new();
    let mut with_samples = BTreeSet::new();
    for line in parsed.lines() {
        match line.split_whitespace().collect::<Vec<_>>()[..] {
            ["family", name, kind] => {
                families.insert(name.to_string());
                samples.extend(samples_of(name, kind));
            }
            ["series", name] => {
                with_samples.insert(name.to_string());
            }
            _ => return Err(format!("promcheck printed {line:?}").into()),
        }
    }
    assert!(
        with_samples.is_subset(&samples),
        "samples outside their family: {:?}",
        with_samples.difference(&samples).collect::<Vec<_>>()
    );
    // After a run and its webhook calls, these have values.
    for name in [
        "armor_refresh_pods_refreshed_total",
        "armor_refresh_evictions_total",
        "armor_refresh_run_phase",
        "armor_refresh_run_pods_refreshed",
        "armor_refresh_admission_requests_total",
        "armor_refresh_admission_duration_seconds_bucket",
        "armor_refresh_api_writes_total",
    ] {
        assert!(with_samples.contains(name), "{name} has no sample:\n{body}");
    }
    // The README lists every family, by a name a query uses, and nothing else.
    let listed = readme_metrics()?;
    let unknown: Vec<_> = listed
        .iter()
        .filter(|n| !samples.contains(*n) && !families.contains(*n))
        .collect();
    assert!(
        unknown.is_empty(),
        "the README lists unexported {unknown:?}"
    );
    let undocumented: Vec<_> = families
        .iter()
        .filter(|f| {
            !listed.contains(*f)
                && !samples_of(f, "counter")
                    .iter()
                    .chain(&samples_of(f, "histogram"))
                    .any(|s| listed.contains(s))
        })
        .collect();
    assert!(
        undocumented.is_empty(),
        "exported but not in the README: {undocumented:?}"
    );
    // The dashboard and the alert rules select only exported names.
    let dir = scratch("queries")?;
    let rules_json = dir.join("rules.json");
    std::fs::write(
        &rules_json,
        serde_json::to_string(&rendered_rules("metrics.prometheusRule.enabled=true")?)?,
    )?;
    for file in [root().join(DASHBOARD), rules_json] {
        let used = tool_out("promcheck", &["queries", file.to_str().unwrap()], "")?;
        let used: BTreeSet<&str> = used.lines().collect();
        assert!(used.len() >= 3, "{file:?} selects {used:?}");
        let missing: Vec<_> = used.iter().filter(|n| !samples.contains(**n)).collect();
        assert!(
            missing.is_empty(),
            "{file:?} queries metrics the operator does not export: {missing:?}"
        );
    }
    let _ = std::fs::remove_dir_all(dir);
    op.terminate().await?;
    clean(&c, WEBHOOK_CONFIG).await?;
    Ok(())
}
