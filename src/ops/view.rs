//! `armor-refresh get`: policies and runs as tables, the columns kubectl users expect.

use chrono::{DateTime, Utc};
use comfy_table::Table;
use comfy_table::presets::NOTHING;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::api::{ArmorRefreshPolicy, ArmorRefreshRun, Condition};
use crate::run::fmt_duration;

/// "5m", "3h2m" since an object's creation; "<unknown>" without it, as kubectl prints.
pub fn age(meta: &ObjectMeta, now: DateTime<Utc>) -> String {
    meta.creation_timestamp
        .as_ref()
        .and_then(|t| DateTime::from_timestamp(t.0.as_second(), 0))
        .map_or("<unknown>".into(), |t| fmt_duration(now - t))
}

fn condition<'a>(cs: &'a [Condition], kind: &str) -> Option<&'a Condition> {
    cs.iter().find(|c| c.type_ == kind)
}

fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(NOTHING);
    t.set_header(header.to_vec());
    t
}

/// Trims a table's lines (comfy-table pads the last column).
fn text(t: Table) -> String {
    let mut out: String = t
        .to_string()
        .lines()
        .map(|l| format!("{}\n", l.trim().trim_end()))
        .collect();
    if out.is_empty() {
        out.push('\n');
    }
    out
}

pub fn policies_table(policies: &[ArmorRefreshPolicy], now: DateTime<Utc>) -> String {
    let mut t = table(&[
        "POLICY",
        "TRIGGER",
        "READY",
        "SELECTED",
        "COMPLIANT",
        "PENDING",
        "ACTIVE RUN",
        "LAST RUN",
        "AGE",
    ]);
    for p in policies {
        let s = p.status.clone().unwrap_or_default();
        let counts = s.targets.unwrap_or_default();
        let ready = condition(&s.conditions, "Ready").map_or("Unknown".to_string(), |c| {
            if c.status == "True" {
                "True".into()
            } else {
                format!("False ({})", c.reason)
            }
        });
        t.add_row(vec![
            p.metadata.name.clone().unwrap_or_default(),
            format!("{:?}", p.spec.trigger),
            ready,
            counts.total.to_string(),
            counts.compliant.to_string(),
            counts.pending.to_string(),
            s.active_run.unwrap_or_else(|| "-".into()),
            s.last_run.unwrap_or_else(|| "-".into()),
            age(&p.metadata, now),
        ]);
    }
    text(t)
}

/// The columns of the runs' table.
pub const RUN_COLUMNS: [&str; 8] = [
    "RUN",
    "POLICY",
    "PHASE",
    "PROGRESS",
    "DISRUPTED",
    "FAILED",
    "REASON",
    "AGE",
];

pub fn runs_table(runs: &[ArmorRefreshRun], now: DateTime<Utc>) -> String {
    let mut t = table(&RUN_COLUMNS);
    let mut runs: Vec<&ArmorRefreshRun> = runs.iter().collect();
    // Oldest first, as the operator handles them.
    runs.sort_by_key(|r| {
        r.metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.as_second())
    });
    for r in runs {
        let s = r.status.clone().unwrap_or_default();
        let mut reason = s.reason.clone();
        if r.spec.dry_run {
            reason = format!("{reason} (dry run)");
        }
        t.add_row(vec![
            r.metadata.name.clone().unwrap_or_default(),
            r.spec.policy_ref.name.clone(),
            format!("{:?}", s.phase),
            format!("{}/{}", s.progress.refreshed, s.progress.total),
            s.progress.disrupted.to_string(),
            s.progress.failed.to_string(),
            reason,
            age(&r.metadata, now),
        ]);
    }
    text(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{
        ArmorRefreshPolicyStatus, ArmorRefreshRunSpec, ArmorRefreshRunStatus, Phase, PolicyRef,
        Progress, TargetCounts,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn run(name: &str, created: &str, phase: Phase, refreshed: u32, total: u32) -> ArmorRefreshRun {
        let mut r = ArmorRefreshRun::new(
            name,
            ArmorRefreshRunSpec {
                policy_ref: PolicyRef { name: "web".into() },
                dry_run: false,
                paused: false,
                resume_token: String::new(),
            },
        );
        r.metadata.creation_timestamp = Some(Time(created.parse().unwrap()));
        r.status = Some(ArmorRefreshRunStatus {
            phase,
            reason: "Refreshing".into(),
            progress: Progress {
                refreshed,
                total,
                disrupted: 2,
                ..Default::default()
            },
            ..Default::default()
        });
        r
    }

    #[test]
    fn runs_oldest_first_with_progress_and_age() {
        let now = at("2026-11-28T12:00:00Z");
        let out = runs_table(
            &[
                run("b", "2026-11-28T11:55:00Z", Phase::Batching, 3, 10),
                run("a", "2026-11-28T09:30:00Z", Phase::Completed, 10, 10),
            ],
            now,
        );
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3, "{out}");
        let cells = |l: &str| l.split_whitespace().map(str::to_string).collect::<Vec<_>>();
        assert_eq!(cells(lines[0]), RUN_COLUMNS);
        assert_eq!(
            cells(lines[1]),
            [
                "a",
                "web",
                "Completed",
                "10/10",
                "2",
                "0",
                "Refreshing",
                "2h30m"
            ]
        );
        assert_eq!(
            cells(lines[2]),
            ["b", "web", "Batching", "3/10", "2", "0", "Refreshing", "5m"]
        );
    }

    #[test]
    fn policies_with_readiness_counts_and_runs() {
        let now = at("2026-11-28T12:00:00Z");
        let mut p: ArmorRefreshPolicy =
            serde_json::from_value(serde_json::json!({"apiVersion": "refresh.armor.dev/v1alpha1", "kind": "ArmorRefreshPolicy", "metadata": {"name": "web"}, "spec": {}})).unwrap();
        p.status = Some(ArmorRefreshPolicyStatus {
            conditions: vec![Condition::new("Ready", false, "InvalidSpec", "bad")],
            targets: Some(TargetCounts {
                total: 12,
                compliant: 9,
                pending: 3,
                ..Default::default()
            }),
            last_run: Some("web-1".into()),
            ..Default::default()
        });
        let out = policies_table(&[p], now);
        let row: Vec<&str> = out.lines().nth(1).unwrap().split_whitespace().collect();
        assert_eq!(
            row,
            [
                "web",
                "Manual",
                "False",
                "(InvalidSpec)",
                "12",
                "9",
                "3",
                "-",
                "web-1",
                "<unknown>"
            ]
        );
    }
}
