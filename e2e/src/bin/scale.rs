//! `scale --size N --out FILE`: the scale scenario (see `armor_refresh_e2e::scale`) on the
//! cluster KUBECONFIG names, written as JSON. bench/scale.sh runs it per size and renders
//! docs/benchmarks.md from the results.

use std::time::Duration;

use armor_refresh_e2e::scale::{Config, run};

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: scale --size N --out FILE [--batch 50] [--per-deployment 50] [--pause-ms 5000] [--create-samples 200] [--batch-size 10%] [--ours-only] [--rss-only] [--timeout-s 1800]";
    let (Some(size), Some(out)) = (
        arg(&args, "--size").and_then(|s| s.parse::<usize>().ok()),
        arg(&args, "--out"),
    ) else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    let mut cfg = Config::new(size);
    let num = |name: &str| arg(&args, name).and_then(|s| s.parse::<u64>().ok());
    if let Some(b) = num("--batch") {
        cfg.batch = b as u32;
    }
    if let Some(p) = num("--per-deployment") {
        cfg.per_deployment = p as usize;
    }
    if let Some(p) = num("--pause-ms") {
        cfg.baseline_pause = Duration::from_millis(p);
    }
    if let Some(n) = num("--create-samples") {
        cfg.create_samples = n as usize;
    }
    if let Some(b) = arg(&args, "--batch-size") {
        cfg.batch_size = Some(b);
    }
    cfg.ours_only = args.iter().any(|a| a == "--ours-only");
    cfg.rss_only = args.iter().any(|a| a == "--rss-only");
    // Every wait's bound: settling 20,000 pods or refreshing them can outlast 30 minutes.
    if let Some(t) = num("--timeout-s") {
        cfg.timeout = Duration::from_secs(t);
    }
    let result = async {
        let c = armor_refresh_e2e::client().await?;
        let report = run(&c, &cfg).await?;
        std::fs::write(&out, serde_json::to_string_pretty(&report)?)?;
        armor_refresh_e2e::Result::<()>::Ok(())
    }
    .await;
    if let Err(e) = result {
        eprintln!("scale: {e}");
        std::process::exit(1);
    }
    eprintln!("scale: wrote {out}");
}
