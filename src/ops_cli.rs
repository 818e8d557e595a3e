//! The operating commands of the binary (`get`, `watch`, `pause`, `resume`, `reset-breaker`,
//! `plan --live`): flags to [`armor_refresh::ops`] calls on a runtime of their own.

use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};

use armor_refresh::ops::watch::emit;
use armor_refresh::ops::{self, Steer, view, watch};
use armor_refresh::report::{self, PlanEnv, Report};

use crate::{Cli, Command, GetWhat, Output};

/// Which cluster: the global `--kubeconfig` and `--context`.
pub struct Kube {
    pub kubeconfig: Option<PathBuf>,
    pub context: Option<String>,
}

impl Kube {
    async fn client(&self) -> Result<kube::Client, String> {
        ops::client(self.kubeconfig.as_deref(), self.context.as_deref()).await
    }
}

pub fn handles(c: &Command) -> bool {
    matches!(
        c,
        Command::Get { .. }
            | Command::Watch { .. }
            | Command::Pause { .. }
            | Command::Resume { .. }
            | Command::ResetBreaker { .. }
    )
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))
}

fn duration(flag: &str, v: &str) -> Result<Duration, String> {
    armor_refresh::policy::parse_duration(flag, v).map_err(|e| e.to_string())
}

fn print_as<T: serde::Serialize>(output: Output, v: &T) -> Result<(), String> {
    match output {
        Output::Json => emit(&format!(
            "{}\n",
            serde_json::to_string_pretty(v).map_err(|e| e.to_string())?
        )),
        Output::Yaml | Output::Table => {
            emit(&serde_saphyr::to_string(v).map_err(|e| e.to_string())?)
        }
    }
    Ok(())
}

/// Runs an operating command; `Ok(false)` when `watch` saw its run fail.
pub fn run(cli: &Cli) -> Result<bool, String> {
    let kube = Kube {
        kubeconfig: cli.kubeconfig.clone(),
        context: cli.context.clone(),
    };
    runtime()?.block_on(async {
        let client = kube.client().await?;
        match &cli.command {
            Command::Get { what, output } => {
                let (policies, runs) = ops::list_all(&client).await?;
                let now = Utc::now();
                let (p, r) = match what {
                    None => (true, true),
                    Some(GetWhat::Policies) => (true, false),
                    Some(GetWhat::Runs) => (false, true),
                };
                match output {
                    Output::Table => {
                        if p {
                            emit(&view::policies_table(&policies, now));
                        }
                        if p && r {
                            emit("\n");
                        }
                        if r {
                            emit(&view::runs_table(&runs, now));
                        }
                    }
                    o => {
                        let mut items = vec![];
                        if p {
                            items.extend(policies.iter().map(serde_json::to_value));
                        }
                        if r {
                            items.extend(runs.iter().map(serde_json::to_value));
                        }
                        let items = items
                            .into_iter()
                            .collect::<Result<Vec<_>, _>>()
                            .map_err(|e| e.to_string())?;
                        print_as(
                            *o,
                            &serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items}),
                        )?;
                    }
                }
                Ok(true)
            }
            Command::Watch {
                run,
                interval,
                timeout,
            } => {
                let every = duration("--interval", interval)?.max(Duration::from_millis(100));
                let timeout = timeout
                    .as_deref()
                    .map(|t| duration("--timeout", t))
                    .transpose()?;
                watch::watch(&client, run, every, timeout, Utc::now).await
            }
            Command::Pause { run } => steer(&client, run, Steer::Pause).await,
            Command::Resume { run } => steer(&client, run, Steer::Resume).await,
            Command::ResetBreaker { run } => {
                let token = format!("reset-{}", Utc::now().format("%Y%m%dT%H%M%S%.3fZ"));
                steer(&client, run, Steer::ResetBreaker { token }).await
            }
            _ => Err("internal: not an operating command".into()),
        }
    })
}

async fn steer(client: &kube::Client, run: &str, s: Steer) -> Result<bool, String> {
    emit(&format!("{}\n", ops::steer(client, run, &s).await?));
    Ok(true)
}

/// `plan --live`: the policy from a file or the cluster, the facts from the cluster.
pub fn plan_live(
    kube: &Kube,
    policy_file: Option<&str>,
    policy_name: Option<&str>,
    now: DateTime<Utc>,
    per_batch: Duration,
    env: &PlanEnv,
) -> Result<Report, String> {
    runtime()?.block_on(async {
        let client = kube.client().await?;
        let (path, policy) = match (policy_file, policy_name) {
            (Some(f), _) => {
                let text = std::fs::read_to_string(f).map_err(|e| format!("{f}: {e}"))?;
                (
                    f.to_string(),
                    report::read_policy(f, &text).map_err(|e| e.to_string())?,
                )
            }
            (None, Some(n)) => (
                format!("armorrefreshpolicy/{n}"),
                ops::get_policy(&client, n).await?,
            ),
            (None, None) => return Err("--policy FILE or --policy-name NAME is required".into()),
        };
        let mut facts = ops::live_facts(&client, now).await?;
        facts.find_agents(&env.agent_selector);
        facts.unhooked_namespaces = env.unhooked_namespaces.iter().cloned().collect();
        report::plan_report(&path, &policy, &facts, now, per_batch).map_err(|e| e.to_string())
    })
}
