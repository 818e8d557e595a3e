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

#[derive(clap::Args, Clone)]
struct WebhookArgs {
    /// Where the admission webhook listens (HTTPS only).
    #[arg(long, default_value = "127.0.0.1:8443")]
    webhook_addr: std::net::SocketAddr,
    /// Serving certificate (PEM); reloaded when the file changes.
    #[arg(long, requires = "tls_key", conflicts_with = "self_signed")]
    tls_cert: Option<std::path::PathBuf>,
    /// Private key of the serving certificate (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
    /// Generate a CA and a serving certificate at start-up (renewed before expiry) and write
    /// the CA into --webhook-config's caBundle.
    #[arg(long)]
    self_signed: bool,
    /// DNS names of the self-signed certificate (e.g. the Service's name.namespace.svc).
    #[arg(long, value_delimiter = ',', default_value = "localhost")]
    cert_dns: Vec<String>,
    /// IP addresses of the self-signed certificate.
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1")]
    cert_ip: Vec<std::net::IpAddr>,
    /// Validity of the self-signed certificate (Go duration); renewed at two thirds of it.
    #[arg(long, default_value = "720h")]
    cert_validity: String,
    /// The MutatingWebhookConfiguration to keep the caBundle of.
    #[arg(long)]
    webhook_config: Option<String>,
    /// Create or update --webhook-config to call this URL (for a webhook outside the cluster,
    /// e.g. https://127.0.0.1:8443/mutate on the local control plane).
    #[arg(long, requires = "webhook_config")]
    webhook_url: Option<String>,
    /// Namespaces the created webhook configuration skips.
    #[arg(long, value_delimiter = ',', default_value = "kube-system")]
    webhook_skip_namespaces: Vec<String>,
    /// Labels of a KubeArmor agent pod (`key=value,...`): with `requireAgent`, profiles are
    /// injected and refreshed only on nodes where such a pod is Running.
    #[arg(long, default_value = armor_refresh::cluster::DEFAULT_AGENT_SELECTOR)]
    agent_selector: String,
}

impl WebhookArgs {
    fn config(&self) -> Result<armor_refresh::webhook::server::Config, String> {
        use armor_refresh::webhook::server::{CertSource, Config};
        let certs = match (&self.tls_cert, &self.tls_key, self.self_signed) {
            (Some(c), Some(k), false) => CertSource::Files {
                cert: c.clone(),
                key: k.clone(),
            },
            (None, None, true) => CertSource::SelfSigned {
                dns: self.cert_dns.clone(),
                ips: self.cert_ip.clone(),
                validity: armor_refresh::policy::parse_duration(
                    "--cert-validity",
                    &self.cert_validity,
                )
                .map_err(|e| e.to_string())?,
            },
            _ => return Err("the webhook needs --tls-cert and --tls-key, or --self-signed".into()),
        };
        Ok(Config {
            addr: self.webhook_addr,
            certs,
            webhook_config: self.webhook_config.clone(),
            url: self.webhook_url.clone(),
            skip_namespaces: self.webhook_skip_namespaces.clone(),
            agent_selector: armor_refresh::cluster::parse_agent_selector(&self.agent_selector)
                .map_err(|e| format!("--agent-selector: {e}"))?,
        })
    }
}

#[derive(clap::Args)]
struct RunArgs {
    /// Run the operator without the admission webhook.
    #[arg(long)]
    no_webhook: bool,
    #[command(flatten)]
    webhook: WebhookArgs,
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
    /// Seconds to wait for the answer to one eviction. Without an answer the eviction may
    /// have happened: the pod counts as disrupted until the cluster shows what became of it.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    eviction_timeout: u64,
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
    /// Run the admission webhook alone.
    Webhook {
        #[command(flatten)]
        webhook: WebhookArgs,
        /// Where /metrics, /healthz and /readyz are served.
        #[arg(long, default_value = "127.0.0.1:8081")]
        metrics_addr: std::net::SocketAddr,
        #[arg(long, value_enum, default_value = "text")]
        log_format: LogFormat,
    },
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
        /// Labels of a KubeArmor agent pod, as the operator's flag.
        #[arg(long, default_value = armor_refresh::cluster::DEFAULT_AGENT_SELECTOR)]
        agent_selector: String,
        /// Namespaces the webhook configuration skips, as the operator's flag: their pods are
        /// never targets.
        #[arg(long, value_delimiter = ',', default_value = "kube-system")]
        webhook_skip_namespaces: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => operate(args, true),
        Command::Webhook {
            webhook,
            metrics_addr,
            log_format,
        } => operate(
            RunArgs {
                no_webhook: false,
                webhook,
                identity: None,
                no_leader_elect: true,
                lease_namespace: String::new(),
                lease_name: String::new(),
                lease_duration: 15,
                write_qps: 20,
                write_burst: 40,
                eviction_timeout: 30,
                metrics_addr,
                log_format,
            },
            false,
        ),
        other => {
            return match run(Cli { command: other }) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            };
        }
    };
    match result {
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

fn operate(args: RunArgs, with_operator: bool) -> Result<(), String> {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,kube_lease_manager=warn"));
    match args.log_format {
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init(),
        // Colours only for a terminal: logs in files and collectors stay plain text.
        LogFormat::Text => tracing_subscriber::fmt()
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
            .with_env_filter(filter)
            .init(),
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
        let webhook_cfg = if args.no_webhook {
            None
        } else {
            Some(args.webhook.config()?)
        };
        let identity = args
            .identity
            .clone()
            .unwrap_or_else(|| format!("armor-refresh-{}", std::process::id()));
        let health = armor_refresh::metrics::Health {
            webhook_enabled: webhook_cfg.is_some(),
            ..Default::default()
        };
        if !with_operator {
            health
                .caches_synced
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
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
        let webhook_task = webhook_cfg.map(|wc| {
            let (client, ready, stop) = (
                client.clone(),
                health.webhook_ready.clone(),
                stop_rx.clone(),
            );
            tokio::spawn(async move {
                armor_refresh::webhook::server::serve(client, wc, ready, stop).await
            })
        });
        if !with_operator {
            return match webhook_task {
                Some(t) => t
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| e.to_string()),
                None => Ok(()),
            };
        }
        let cfg = armor_refresh::controller::Config {
            identity,
            leader_election: !args.no_leader_elect,
            lease_namespace: args.lease_namespace,
            lease_name: args.lease_name,
            lease_duration: args.lease_duration.max(3),
            write_qps: args.write_qps,
            write_burst: args.write_burst,
            eviction_timeout: Duration::from_secs(args.eviction_timeout),
            agent_selector: armor_refresh::cluster::parse_agent_selector(
                &args.webhook.agent_selector,
            )
            .map_err(|e| format!("--agent-selector: {e}"))?,
            webhook_skip_namespaces: args.webhook.webhook_skip_namespaces.clone(),
        };
        let stopping = stop_rx.clone();
        let operator = armor_refresh::controller::run(client, cfg, health.clone(), stop_rx);
        let Some(webhook) = webhook_task else {
            return operator.await.map_err(|e| e.to_string());
        };
        // The webhook and the operator live and die together: an operator that evicts while
        // no webhook injects makes replacements without their profile.
        tokio::select! {
            r = operator => r.map_err(|e| e.to_string()),
            w = webhook => {
                health.webhook_ready.store(false, std::sync::atomic::Ordering::Relaxed);
                let why = match w {
                    Ok(Ok(())) if *stopping.borrow() => return Ok(()),
                    Ok(Ok(())) => "the webhook stopped".to_string(),
                    Ok(Err(e)) => format!("the webhook failed: {e}"),
                    Err(e) => format!("the webhook task ended: {e}"),
                };
                tracing::error!(error = %why, "the webhook cannot serve: the operator stops acting and the process exits");
                Err(format!("{why}; the operator stopped acting without its webhook"))
            }
        }
    })
}

fn run(cli: Cli) -> Result<(), String> {
    match cli.command {
        Command::Run(_) | Command::Webhook { .. } => Err("internal: served by main".into()),
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
            agent_selector,
            webhook_skip_namespaces,
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
            let env = report::PlanEnv {
                agent_selector: armor_refresh::cluster::parse_agent_selector(&agent_selector)
                    .map_err(|e| format!("--agent-selector: {e}"))?,
                unhooked_namespaces: webhook_skip_namespaces,
            };
            let r = report::plan_files_with(
                &policy,
                &read(&policy)?,
                &snapshot,
                &read(&snapshot)?,
                now,
                per_batch,
                &env,
            )
            .map_err(|e| e.to_string())?;
            match output {
                Output::Table => print!("{}", report::render_table(&r)),
                Output::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(&r).map_err(|e| e.to_string())?
                ),
                Output::Yaml => print!(
                    "{}",
                    serde_saphyr::to_string(&r).map_err(|e| e.to_string())?
                ),
            }
            Ok(())
        }
    }
}
