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

#[derive(Subcommand)]
enum Command {
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

fn run(cli: Cli) -> Result<(), String> {
    match cli.command {
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
