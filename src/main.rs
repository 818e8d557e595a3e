//! The `armor-refresh` binary: subcommands over the library.

use std::process::ExitCode;
use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand, ValueEnum};

use armor_refresh::{crdgen, report};

#[derive(Parser)]
#[command(
    name = "armor-refresh",
    version,
    about = "Roll AppArmor/KubeArmor profiles out to running pods gradually and safely"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum Output {
    Table,
    Json,
    Yaml,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(clap::Args)]
struct RunArgs {
    /// Run the operator without the admission webhook.
    #[arg(long)]
    no_webhook: bool,
    /// This replica's identity for the leader Lease and events (the pod name in a cluster).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Turn leader election off (only with a single replica).
    #[arg(long)]
    no_leader_elect: bool,
    /// Namespace of the leader Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    #[arg(long, default_value = "armor-refresh")]
    lease_name: String,
    /// Seconds a leader Lease stays valid without renewal.
    #[arg(long, default_value_t = 15)]
    lease_duration: u64,
    /// Client-side limit on writes to the API server, per second.
    #[arg(long, default_value_t = 20)]
    write_qps: u32,
    #[arg(long, default_value_t = 40)]
    write_burst: u32,
    /// Where /metrics, /healthz and /readyz are served.
    #[arg(long, default_value = "127.0.0.1:8080")]
    metrics_addr: std::net::SocketAddr,
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
}

#[derive(Subcommand)]
enum Command {
    /// Run the operator (and, unless --no-webhook, the admission webhook) against the
    /// cluster KUBECONFIG or the in-cluster config names.
    Run(RunArgs),
    /// Print both CustomResourceDefinitions as YAML (or write them into a directory).
    Crd {
        /// Write one file per CRD into this directory instead of printing.
        #[arg(long, value_name = "DIR")]
        write: Option<std::path::PathBuf>,
    },
    /// Plan a policy against a snapshot of a cluster, without a cluster: targets, skips by
    /// reason, batches and the estimated duration. Create the snapshot with
    /// `kubectl get pods,nodes,pdb,leases,statefulsets,replicasets,deployments -A -o yaml`.
    Plan {
        /// A YAML file with an ArmorRefreshPolicy.
        #[arg(long, value_name = "FILE")]
        policy: String,
        /// A YAML/JSON snapshot (a List, as kubectl prints it).
        #[arg(long, value_name = "FILE")]
        snapshot: String,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
        /// Assumed time per batch for the estimate (Go duration).
        #[arg(long, default_value = "60s")]
        batch_duration: String,
        /// Plan as of this instant (RFC 3339) instead of now, e.g. to check a window.
        #[arg(long)]
        now: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Run(args) = cli.command {
        return match operate(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        };
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn read(path: &str) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))
}

fn operate(args: RunArgs) -> Result<(), String> {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,kube_lease_manager=warn"));
    match args.log_format {
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init(),
        LogFormat::Text => tracing_subscriber::fmt().with_env_filter(filter).init(),
    }
    let rt = tokio::runtime::Runtime::new().map_err(|e| format!("tokio runtime: {e}"))?;
    rt.block_on(async move {
        let mut config = kube::Config::infer().await.map_err(|e| {
            format!("no Kubernetes configuration (set KUBECONFIG or run in a cluster): {e}")
        })?;
        // 429s are ours to handle: a PDB refusal must come back at once, overload slows us down.
        config.default_retry = false;
        let client =
            kube::Client::try_from(config).map_err(|e| format!("Kubernetes client: {e}"))?;
        if !args.no_webhook {
            return Err(
                "the admission webhook is not part of this build yet; run with --no-webhook"
                    .to_string(),
            );
        }
        let identity = args
            .identity
            .clone()
            .unwrap_or_else(|| format!("armor-refresh-{}", std::process::id()));
        let health = armor_refresh::metrics::Health::default();
        let listener = tokio::net::TcpListener::bind(args.metrics_addr)
            .await
            .map_err(|e| format!("--metrics-addr {}: {e}", args.metrics_addr))?;
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let app = armor_refresh::metrics::router(health.clone());
        let mut stop_http = stop_rx.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stop_http.wait_for(|s| *s).await;
                })
                .await;
        });
        tokio::spawn(async move {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot listen for SIGTERM");
                        return;
                    }
                };
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM"),
                _ = tokio::signal::ctrl_c() => tracing::info!("interrupted"),
            }
            let _ = stop_tx.send(true);
        });
        let cfg = armor_refresh::controller::Config {
            identity,
            leader_election: !args.no_leader_elect,
            lease_namespace: args.lease_namespace,
            lease_name: args.lease_name,
            lease_duration: args.lease_duration.max(3),
            write_qps: args.write_qps,
            write_burst: args.write_burst,
        };
        armor_refresh::controller::run(client, cfg, health, stop_rx)
            .await
            .map_err(|e| e.to_string())
    })
}

fn run(cli: Cli) -> Result<(), String> {
    match cli.command {
        Command::Run(_) => unreachable!("handled in main"),
        Command::Crd { write: None } => {
            print!("{}", crdgen::all_yaml());
            Ok(())
        }
        Command::Crd { write: Some(dir) } => {
            std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            for (name, yaml) in crdgen::crds() {
                let p = dir.join(name);
                std::fs::write(&p, yaml).map_err(|e| format!("{}: {e}", p.display()))?;
            }
            Ok(())
        }
        Command::Plan {
            policy,
            snapshot,
            output,
            batch_duration,
            now,
        } => {
            let per_batch: Duration =
                armor_refresh::policy::parse_duration("--batch-duration", &batch_duration)
                    .map_err(|e| e.to_string())?;
            let now: DateTime<Utc> = match now {
                None => Utc::now(),
                Some(s) => DateTime::parse_from_rfc3339(&s)
                    .map_err(|e| format!("--now {s:?}: {e}"))?
                    .with_timezone(&Utc),
            };
            let r = report::plan_files(
                &policy,
                &read(&policy)?,
                &snapshot,
                &read(&snapshot)?,
                now,
                per_batch,
            )
            .map_err(|e| e.to_string())?;
            match output {
                Output::Table => print!("{}", report::render_table(&r)),
                Output::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(&r).map_err(|e| e.to_string())?
                ),
                Output::Yaml => print!("{}", serde_yaml::to_string(&r).map_err(|e| e.to_string())?),
            }
            Ok(())
        }
    }
}
