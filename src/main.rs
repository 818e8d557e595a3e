//! The `armor-refresh` binary: subcommands over the library.

use std::process::ExitCode;
use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

use armor_refresh::ops::watch::emit;
use armor_refresh::{crdgen, report};

mod ops_cli;

#[derive(Parser)]
#[command(
    name = "armor-refresh",
    version,
    about = "Roll AppArmor/KubeArmor profiles out to running pods gradually and safely",
    after_help = "Installed as `kubectl-armor` on PATH (a copy or a symlink), it is the kubectl plugin `kubectl armor`."
)]
struct Cli {
    /// The kubeconfig file (default: KUBECONFIG, ~/.kube/config, or the in-cluster config).
    #[arg(long, global = true, value_name = "FILE")]
    kubeconfig: Option<std::path::PathBuf>,
    /// The kubeconfig context (default: the current one).
    #[arg(long, global = true)]
    context: Option<String>,
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
    /// e.g. https://127.0.0.1:8443/mutate on the local control plane). Needs --self-signed:
    /// the configuration must hold the CA that signed the served certificate, and only a
    /// self-signed one is known to the operator.
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
        if self.webhook_url.is_some() && !self.self_signed {
            return Err("--webhook-url needs --self-signed: the configuration it creates must hold the CA of the served certificate, and the operator knows only the one it signs".into());
        }
        Ok(Config {
            addr: self.webhook_addr,
            certs,
            webhook_config: self.webhook_config.clone(),
            url: self.webhook_url.clone(),
            skip_namespaces: self.webhook_skip_namespaces.clone(),
            agent_selector: armor_refresh::cluster::parse_agent_selector(&self.agent_selector)
                .map_err(|e| format!("--agent-selector: {e}"))?,
            pods: Default::default(),
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

#[derive(Clone, Copy, ValueEnum)]
enum GetWhat {
    Policies,
    Runs,
}

#[derive(Subcommand)]
enum Command {
    /// Run the operator (and, unless --no-webhook, the admission webhook) against the
    /// cluster KUBECONFIG or the in-cluster config names.
    #[command(
        after_help = "Examples:\n  armor-refresh run --self-signed --webhook-config armor-refresh \\\n    --webhook-url https://127.0.0.1:8443/mutate --lease-namespace default"
    )]
    Run(RunArgs),
    /// List policies (selected, compliant and pending pods) and runs (phase, progress).
    #[command(
        after_help = "Examples:\n  armor-refresh get\n  armor-refresh get runs -o json\n  kubectl armor get policies --context prod"
    )]
    Get {
        /// Only policies, or only runs.
        what: Option<GetWhat>,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Follow a run live until it finishes: phase, progress, pods in flight, deferrals and
    /// failures with their reasons, ETA. Exits 0 when it completes, 3 when it fails, 1 on
    /// an error or at --timeout (API errors after the first read are retried).
    #[command(
        after_help = "Examples:\n  armor-refresh watch default-first\n  armor-refresh watch default-first --timeout 2h"
    )]
    Watch {
        run: String,
        /// How often to read the run (Go duration).
        #[arg(long, default_value = "1s")]
        interval: String,
        /// Give up (exit 1) after this long (Go duration); default: until the run finishes.
        #[arg(long)]
        timeout: Option<String>,
    },
    /// Pause a run: no eviction starts; pods in flight are still followed.
    #[command(after_help = "Examples:\n  armor-refresh pause default-first")]
    Pause { run: String },
    /// Resume a paused run.
    #[command(after_help = "Examples:\n  armor-refresh resume default-first")]
    Resume { run: String },
    /// Close a run's open circuit breaker (a new spec.resumeToken) once the cause is fixed.
    #[command(after_help = "Examples:\n  armor-refresh reset-breaker default-first")]
    ResetBreaker { run: String },
    /// Print a shell completion script.
    #[command(
        after_help = "Examples:\n  armor-refresh completion bash > /etc/bash_completion.d/armor-refresh\n  armor-refresh completion zsh > \"${fpath[1]}/_armor-refresh\""
    )]
    Completion { shell: clap_complete::Shell },
    /// Run the admission webhook alone.
    Webhook {
        #[command(flatten)]
        webhook: WebhookArgs,
        /// Where /metrics, /healthz and /readyz are served.
        #[arg(long, default_value = "127.0.0.1:8081")]
        metrics_addr: std::net::SocketAddr,
        #[arg(long, value_enum, default_value = "text")]
        log_format: LogFormat,
        /// Watch every pod, as the operator does, so a binding (a policy with
        /// `injectAt: Binding`) finds its pod in memory instead of reading it from the API
        /// server. Costs the memory of the pods' lean copies; `run` always shares the
        /// operator's.
        #[arg(long)]
        pod_cache: bool,
    },
    /// Print both CustomResourceDefinitions as YAML (or write them into a directory).
    #[command(after_help = "Examples:\n  armor-refresh crd | kubectl apply --server-side -f -")]
    Crd {
        /// Write one file per CRD into this directory instead of printing.
        #[arg(long, value_name = "DIR")]
        write: Option<std::path::PathBuf>,
    },
    /// Plan a policy against a snapshot of a cluster, or the cluster itself (--live): targets,
    /// skips by reason, batches and the estimated duration. Nothing is evicted. Create a
    /// snapshot with
    /// `kubectl get pods,nodes,namespaces,pdb,leases,statefulsets,replicasets,deployments,daemonsets -A -o yaml`.
    #[command(
        after_help = "Examples:\n  armor-refresh plan --policy examples/policy-default.yaml --snapshot cluster.yaml\n  armor-refresh plan --live --policy examples/policy-default.yaml\n  armor-refresh plan --live --policy-name default -o json"
    )]
    Plan {
        /// A YAML file with an ArmorRefreshPolicy.
        #[arg(long, value_name = "FILE", required_unless_present = "policy_name")]
        policy: Option<String>,
        /// The ArmorRefreshPolicy of this name in the cluster (with --live).
        #[arg(long, value_name = "NAME", conflicts_with_all = ["policy", "snapshot"])]
        policy_name: Option<String>,
        /// A YAML/JSON snapshot (a List, as kubectl prints it).
        #[arg(
            long,
            value_name = "FILE",
            required_unless_present = "live",
            conflicts_with = "live"
        )]
        snapshot: Option<String>,
        /// Read the cluster of the kubeconfig instead of a snapshot.
        #[arg(long)]
        live: bool,
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

/// The CLI as invoked: as `kubectl armor` when the binary is the plugin `kubectl-armor`.
fn parse() -> Cli {
    let argv0 = std::env::args_os().next().unwrap_or_default();
    let plugin = std::path::Path::new(&argv0)
        .file_name()
        .is_some_and(|n| n == "kubectl-armor");
    let mut cmd = Cli::command();
    if plugin {
        cmd = cmd.bin_name("kubectl armor");
    }
    let matches = cmd.get_matches();
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

fn main() -> ExitCode {
    let cli = parse();
    let result = match cli.command {
        Command::Run(args) => operate(
            args,
            Mode::Operator,
            &cli_kube(&cli.kubeconfig, &cli.context),
        ),
        Command::Webhook {
            webhook,
            metrics_addr,
            log_format,
            pod_cache,
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
            if pod_cache {
                Mode::WebhookCached
            } else {
                Mode::Webhook
            },
            &cli_kube(&cli.kubeconfig, &cli.context),
        ),
        other => {
            let cli = Cli {
                command: other,
                ..cli
            };
            let result = if ops_cli::handles(&cli.command) {
                ops_cli::run(&cli)
            } else {
                run(cli).map(|()| true)
            };
            return match result {
                Ok(true) => ExitCode::SUCCESS,
                // `watch` of a run that failed: said on the screen already; apart from
                // errors (1) and usage errors (2).
                Ok(false) => ExitCode::from(3),
                Err(e) => {
                    eprintln!("error: {}", one_line(&e));
                    ExitCode::FAILURE
                }
            };
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// An error on one line (parsers' messages may span several, with a caret under the column).
fn one_line(e: &str) -> String {
    e.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

fn read(path: &str) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))
}

/// What `operate` serves.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// The operator, and its webhook unless `--no-webhook`.
    Operator,
    /// The webhook alone.
    Webhook,
    /// The webhook alone, with its own pod cache.
    WebhookCached,
}

fn operate(args: RunArgs, mode: Mode, kube: &ops_cli::Kube) -> Result<(), String> {
    let with_operator = mode == Mode::Operator;
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
    // Arguments first: a wrong combination is refused before any connection is tried.
    let webhook_cfg = if args.no_webhook {
        None
    } else {
        Some(args.webhook.config()?)
    };
    rt.block_on(async move {
        let mut config = armor_refresh::ops::kube_config(
            kube.kubeconfig.as_deref(),
            kube.context.as_deref(),
        )
        .await?;
        // 429s are ours to handle: a PDB refusal must come back at once, overload slows us down.
        config.default_retry = false;
        let client =
            kube::Client::try_from(config).map_err(|e| format!("Kubernetes client: {e}"))?;
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
        // The webhook in this process reads bound pods from the operator's cache, or its own.
        let pod_slot = webhook_cfg.as_ref().map(|wc| wc.pods.clone());
        if mode == Mode::WebhookCached {
            let store = armor_refresh::controller::pod_store(&client, Default::default());
            if let Some(slot) = &pod_slot {
                let _ = slot.set(store.clone());
            }
            tokio::spawn(async move {
                // Unsynced, the cache only sends more bindings to the API server.
                if store.wait_until_ready().await.is_ok() {
                    tracing::info!(pods = store.len(), "pod cache synced");
                    // The initial list's pages left holes in the heap, as the operator's do:
                    // give them back now (the first tick), and keep doing so.
                    let _trimmer = armor_refresh::memory::spawn_trimmer();
                    std::future::pending::<()>().await;
                }
            });
        }
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
            share_pods: pod_slot,
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

fn cli_kube(kubeconfig: &Option<std::path::PathBuf>, context: &Option<String>) -> ops_cli::Kube {
    ops_cli::Kube {
        kubeconfig: kubeconfig.clone(),
        context: context.clone(),
    }
}

fn run(cli: Cli) -> Result<(), String> {
    let (cli_kubeconfig, cli_context) = (cli.kubeconfig, cli.context);
    match cli.command {
        Command::Run(_) | Command::Webhook { .. } => Err("internal: served by main".into()),
        Command::Completion { shell } => {
            let mut cmd = Cli::command();
            clap_complete::generate(shell, &mut cmd, "armor-refresh", &mut std::io::stdout());
            Ok(())
        }
        Command::Get { .. }
        | Command::Watch { .. }
        | Command::Pause { .. }
        | Command::Resume { .. }
        | Command::ResetBreaker { .. } => Err("internal: served by ops_cli".into()),
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
            policy_name,
            snapshot,
            live,
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
            let r = if live {
                ops_cli::plan_live(
                    &cli_kube(&cli_kubeconfig, &cli_context),
                    policy.as_deref(),
                    policy_name.as_deref(),
                    now,
                    per_batch,
                    &env,
                )?
            } else {
                let (policy, snapshot) = (
                    policy.ok_or("--policy FILE is required")?,
                    snapshot.ok_or("--snapshot FILE or --live is required")?,
                );
                report::plan_files_with(
                    &policy,
                    &read(&policy)?,
                    &snapshot,
                    &read(&snapshot)?,
                    now,
                    per_batch,
                    &env,
                )
                .map_err(|e| e.to_string())?
            };
            match output {
                Output::Table => emit(&report::render_table(&r)),
                Output::Json => emit(&format!(
                    "{}\n",
                    serde_json::to_string_pretty(&r).map_err(|e| e.to_string())?
                )),
                Output::Yaml => emit(&serde_saphyr::to_string(&r).map_err(|e| e.to_string())?),
            }
            Ok(())
        }
    }
}
