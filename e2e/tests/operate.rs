//! The operating commands as the on-call engineer runs them against the local control plane:
//! `get`, `pause`, `resume`, `watch`, `plan --live`, `reset-breaker` on a finished run, and
//! the same binary as the kubectl plugin `kubectl armor`.

use std::time::Duration;

use armor_refresh::api::{ArmorRefreshRun, Phase};
use armor_refresh_e2e::fixtures::{all_ready, deployment, policy, run, wait_phase};
use armor_refresh_e2e::process::{Process, binary, run_args};
use armor_refresh_e2e::{Result, apply, clean, client, fresh_namespace, install_crds};
use kube::api::Api;

const WEBHOOK_CONFIG: &str = "armor-refresh-e2e-operate";

/// Runs `armor-refresh ARGS` (at most two minutes); (exit code, stdout, stderr).
async fn cli(args: &[&str]) -> Result<(i32, String, String)> {
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new(binary()).args(args).output(),
    )
    .await??;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

#[tokio::test]
async fn an_on_call_engineer_follows_and_steers_a_run_from_the_terminal() -> Result<()> {
    let c = client().await?;
    install_crds(&c).await?;
    clean(&c, WEBHOOK_CONFIG).await?;
    fresh_namespace(&c, "e2e-operate").await?;
    apply(&deployment("e2e-operate", "shop", 4, &["app"])).await?;
    all_ready(&c, "e2e-operate", 4).await?;

    // Planned live against the cluster before anything runs, from a file and by name.
    let p = policy(
        "operate",
        &["e2e-operate"],
        "{batchSize: 1, interval: 1s}",
        "",
    );
    let dir = std::env::temp_dir().join(format!("armor-operate-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("policy.yaml");
    std::fs::write(&file, &p)?;
    let (code, out, err) = cli(&[
        "plan",
        "--live",
        "--policy",
        file.to_str().unwrap(),
        "-o",
        "json",
    ])
    .await?;
    assert_eq!(code, 0, "{err}");
    let plan: serde_json::Value = serde_json::from_str(&out)?;
    assert_eq!(plan["targets"], 4, "{out}");
    assert_eq!(plan["batches"].as_array().map(Vec::len), Some(4), "{out}");
    apply(&p).await?;
    let (code, out, err) = cli(&["plan", "--live", "--policy-name", "operate"]).await?;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("Policy operate: 4 targets in 4 batches"),
        "{out}"
    );
    let (code, _, err) = cli(&["plan", "--live", "--policy-name", "absent"]).await?;
    assert_eq!(code, 1);
    assert!(
        err.contains("armorrefreshpolicy \"absent\" not found"),
        "{err}"
    );

    let mut op = Process::start(
        "op-operate",
        &run_args("op-operate", WEBHOOK_CONFIG, "armor-refresh-operate"),
    )
    .await?;
    // Paused from the CLI as soon as it starts (4 pods one at a time take 8 s at least).
    apply(&run("operate-1", "operate", "")).await?;
    let (code, out, err) = cli(&["pause", "operate-1"]).await?;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("run operate-1 paused"), "{out}");
    let runs: Api<ArmorRefreshRun> = Api::all(c.clone());
    assert!(runs.get("operate-1").await?.spec.paused);
    wait_phase(
        &c,
        "operate-1",
        Phase::Paused,
        Some("UserPaused"),
        Duration::from_secs(60),
    )
    .await?;
    let (code, out, err) = cli(&["get"]).await?;
    assert_eq!(code, 0, "{err}");
    let row = |table: &str, name: &str| {
        table
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
    };
    let r = row(&out, "operate-1").ok_or(format!("no run row:\n{out}"))?;
    assert_eq!(r[1..3], ["operate", "Paused"], "{out}");
    assert!(r[3].ends_with("/4") && r[6] == "UserPaused", "{out}");
    let pol = row(&out, "operate").ok_or(format!("no policy row:\n{out}"))?;
    assert_eq!(pol[1..3], ["Manual", "True"], "{out}");
    let (code, out, _) = cli(&["pause", "operate-1"]).await?;
    assert_eq!((code, out.trim()), (0, "run operate-1 was paused already"));

    // Resumed from the CLI, followed with watch until it completes (exit 0).
    let (code, out, err) = cli(&["resume", "operate-1"]).await?;
    assert_eq!((code, out.trim()), (0, "run operate-1 resumed"), "{err}");
    let (code, out, err) = cli(&["watch", "operate-1", "--timeout", "110s"]).await?;
    assert_eq!(code, 0, "watch:\n{out}{err}");
    assert!(
        out.contains("Run operate-1 (policy operate): Batching"),
        "{out}"
    );
    assert!(out.contains("Completed, Done"), "{out}");
    assert!(out.contains("4/4 refreshed"), "{out}");
    assert!(out.contains("Finished"), "{out}");
    // Not a terminal: one frame per change of the run, never the same frame twice in a row.
    let frames: Vec<&str> = out.split("---\n").filter(|f| !f.is_empty()).collect();
    assert!(frames.len() >= 2, "{out}");
    for pair in frames.windows(2) {
        assert_ne!(pair[0], pair[1], "a frame repeated:\n{out}");
    }

    // A finished run is not steered; runs as a JSON list; kubectl's plugin.
    let (code, out, err) = cli(&["pause", "operate-1"]).await?;
    assert_eq!(code, 1, "a finished run cannot be paused: {out}");
    assert!(err.contains("Completed already"), "{err}");
    let (code, _, err) = cli(&["reset-breaker", "operate-1"]).await?;
    assert_eq!(code, 1);
    assert!(err.contains("Completed already"), "{err}");
    assert!(!runs.get("operate-1").await?.spec.paused);
    let (code, out, err) = cli(&["get", "runs", "-o", "json"]).await?;
    assert_eq!(code, 0, "{err}");
    let list: serde_json::Value = serde_json::from_str(&out)?;
    let names: Vec<&str> = list["items"]
        .as_array()
        .ok_or("no items")?
        .iter()
        .filter_map(|i| i["metadata"]["name"].as_str())
        .collect();
    assert_eq!(names, ["operate-1"]);
    std::os::unix::fs::symlink(binary(), dir.join("kubectl-armor"))?;
    let path = format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = tokio::process::Command::new("kubectl")
        .args(["armor", "get", "runs"])
        .env("PATH", &path)
        .output()
        .await?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(row(&text, "operate-1").is_some(), "{text}");
    let out = tokio::process::Command::new("kubectl")
        .args(["plugin", "list"])
        .env("PATH", &path)
        .output()
        .await?;
    assert!(String::from_utf8_lossy(&out.stdout).contains("kubectl-armor"));

    let (code, _, err) = cli(&["pause", "nope"]).await?;
    assert_eq!(code, 1);
    assert!(err.contains("armorrefreshrun \"nope\" not found"), "{err}");
    op.terminate().await?;
    clean(&c, WEBHOOK_CONFIG).await?;
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}
