//! `armor-refresh watch RUN`: the live view of a run, redrawn as its status changes.

use std::fmt::Write;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use kube::Client;

use crate::api::{ArmorRefreshRun, BatchPod, Phase, PodState};
use crate::run::fmt_duration;

/// Pods listed per section at most; the rest are counted.
const LIST: usize = 8;
const BAR: usize = 30;

fn bar(done: u32, total: u32) -> String {
    let filled = if total == 0 {
        BAR
    } else {
        (u64::from(done.min(total)) * BAR as u64 / u64::from(total)) as usize
    };
    format!("[{}{}]", "#".repeat(filled), ".".repeat(BAR - filled))
}

fn since(t: Option<DateTime<Utc>>, now: DateTime<Utc>) -> String {
    t.map_or("-".into(), |t| fmt_duration(now - t))
}

fn until(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    if t <= now {
        "now".into()
    } else {
        format!("in {}", fmt_duration(t - now))
    }
}

fn pod_line(p: &BatchPod, now: DateTime<Utc>) -> String {
    let key = format!("{}/{}", p.namespace, p.name);
    let what = match p.state {
        PodState::Deferred => {
            let retry = p.retry_at.map(|t| format!(", retry {}", until(t, now)));
            format!("{}{}", p.message, retry.unwrap_or_default())
        }
        PodState::Evicting | PodState::Evicted => format!(
            "{:?} {} ago on {}",
            p.state,
            since(p.evicted_at.or(p.requested_at), now),
            p.node
        ),
        _ => p.message.clone(),
    };
    format!("  {key:<40} {what}")
}

fn section(out: &mut String, title: &str, lines: Vec<String>) {
    if lines.is_empty() {
        return;
    }
    let _ = writeln!(out, "{title} ({}):", lines.len());
    for l in lines.iter().take(LIST) {
        let _ = writeln!(out, "{l}");
    }
    if lines.len() > LIST {
        let _ = writeln!(out, "  ... and {} more", lines.len() - LIST);
    }
}

/// When the run should end at the pace it has kept, or as planned before it has one.
fn eta(run: &ArmorRefreshRun, now: DateTime<Utc>) -> Option<String> {
    let s = run.status.as_ref()?;
    if s.phase.is_terminal() {
        return None;
    }
    let p = &s.progress;
    let left = p
        .total
        .saturating_sub(p.refreshed.saturating_add(p.failed).saturating_add(p.gone));
    let elapsed = (now - s.started_at?).num_seconds();
    if p.refreshed > 0 && elapsed > 0 {
        let per_pod = elapsed as f64 / f64::from(p.refreshed);
        let secs = (per_pod * f64::from(left)).min(1e9) as i64;
        return Some(format!(
            "{} at {:.1} pods/min",
            fmt_duration(TimeDelta::seconds(secs)),
            60.0 / per_pod
        ));
    }
    let end = s.plan.as_ref()?.estimated_completion?;
    Some(format!("{} (planned)", until(end, now)))
}

/// One frame of the live view.
pub fn frame(run: &ArmorRefreshRun, now: DateTime<Utc>) -> String {
    let name = run.metadata.name.as_deref().unwrap_or_default();
    let s = run.status.clone().unwrap_or_default();
    let p = &s.progress;
    let mut out = String::new();
    let mut flags = vec![];
    if run.spec.dry_run {
        flags.push("dry run");
    }
    if run.spec.paused {
        flags.push("paused by spec");
    }
    let flags = if flags.is_empty() {
        String::new()
    } else {
        format!(" [{}]", flags.join(", "))
    };
    let _ = writeln!(
        out,
        "Run {name} (policy {}){flags}: {:?}, {}; started {} ago",
        run.spec.policy_ref.name,
        s.phase,
        if s.reason.is_empty() { "-" } else { &s.reason },
        since(s.started_at, now),
    );
    let _ = writeln!(
        out,
        "{} {}/{} refreshed  failed {}  gone {}  without profile {}  skipped {}",
        bar(p.refreshed, p.total),
        p.refreshed,
        p.total,
        p.failed,
        p.gone,
        p.without_profile,
        p.skipped
    );
    let size = s.plan.as_ref().map_or(0, |pl| pl.batch_size);
    let _ = writeln!(out, "Disrupted now: {} of {size}", p.disrupted);
    if !s.message.is_empty() {
        let _ = writeln!(out, "{}", s.message);
    }
    let pods: Vec<&BatchPod> = s.current_batch.iter().flat_map(|b| &b.pods).collect();
    let pick = |f: &dyn Fn(&BatchPod) -> bool| -> Vec<String> {
        pods.iter()
            .filter(|p| f(p))
            .map(|p| pod_line(p, now))
            .collect()
    };
    section(&mut out, "In flight", pick(&|p| p.is_disrupted()));
    section(
        &mut out,
        "Deferred",
        pick(&|p| p.state == PodState::Deferred && !p.is_disrupted()),
    );
    let mut failed: Vec<String> = s.unhealthy.iter().map(|p| pod_line(p, now)).collect();
    failed.extend(pick(&|p| p.state == PodState::Failed));
    section(&mut out, "Failed", failed);
    let resting: u32 = s.resting.iter().map(|r| r.slots).sum();
    // A finished run keeps its last resting slots in status; nothing will refill them.
    let resting_until = s.resting.iter().map(|r| r.until).min();
    if let Some(r) = resting_until.filter(|_| s.completed_at.is_none()) {
        let _ = writeln!(
            out,
            "Resting slots: {resting}, next refill {}",
            until(r, now)
        );
    }
    if let Some(t) = s.next_window_at {
        let _ = writeln!(out, "Next window: {} ({})", t.to_rfc3339(), until(t, now));
    }
    if let Some(t) = s.next_batch_at.filter(|t| *t > now) {
        let _ = writeln!(out, "Next batch: {}", until(t, now));
    }
    if let Some(e) = eta(run, now) {
        let _ = writeln!(out, "ETA: {e}");
    }
    if let Some(done) = s.completed_at {
        let took = s.started_at.map(|st| fmt_duration(done - st));
        let _ = writeln!(
            out,
            "Finished {} ago{}",
            since(Some(done), now),
            took.map(|t| format!(", took {t}")).unwrap_or_default()
        );
    }
    out
}

/// How `watch` ended: the run's final phase.
pub fn exit_ok(run: &ArmorRefreshRun) -> Option<bool> {
    let phase = run.status.as_ref()?.phase;
    phase.is_terminal().then_some(phase == Phase::Completed)
}

/// Writes to stdout; a closed pipe (`watch RUN | head`) ends the process quietly.
pub fn emit(text: &str) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush())
        && e.kind() == std::io::ErrorKind::BrokenPipe
    {
        std::process::exit(0);
    }
}

/// The terminal's alternate screen while a live view is drawn (as `watch(1)` and `top`
/// do): each frame clears it, however its lines wrap; leaving restores what was there.
struct Screen {
    tty: bool,
}

impl Screen {
    fn enter(tty: bool) -> Screen {
        if tty {
            emit("\x1b[?1049h");
        }
        Screen { tty }
    }
    fn draw(&self, frame: &str) {
        if self.tty {
            emit(&format!("\x1b[H\x1b[2J{frame}"));
        }
    }
    /// Back to the normal screen, with the last frame printed there to stay.
    fn leave(self, last: &str) {
        if self.tty {
            emit(&format!("\x1b[?1049l{last}"));
        }
    }
}

/// Errors worth another read: the API server or the network, not the request.
fn transient(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) => s.code == 429 || s.code >= 500,
        _ => true,
    }
}

/// Redraws `frame` until the run finishes (true if Completed, false if Failed) or `timeout`
/// passes (an error). On a terminal the frame is redrawn on the alternate screen and the
/// last one stays; otherwise each changed frame is printed after a separator line. Once the
/// run was read, errors of the API server or the network are retried (with a note on
/// stderr) until the timeout: a long run outlives an API server restart.
pub async fn watch(
    client: &Client,
    name: &str,
    every: Duration,
    timeout: Option<Duration>,
    now: impl Fn() -> DateTime<Utc>,
) -> Result<bool, String> {
    let api = kube::Api::<ArmorRefreshRun>::all(client.clone());
    let mut run = super::get_run(client, name).await?;
    let screen = Screen::enter(std::io::IsTerminal::is_terminal(&std::io::stdout()));
    let started = std::time::Instant::now();
    let mut last = String::new();
    let mut retry = every;
    loop {
        let f = frame(&run, now());
        if screen.tty {
            screen.draw(&f);
        } else if strip_times(&f) != strip_times(&last) {
            emit(&format!("---\n{f}"));
        }
        last = f;
        if let Some(ok) = exit_ok(&run) {
            screen.leave(&last);
            return Ok(ok);
        }
        loop {
            if let Some(t) = timeout
                && started.elapsed() >= t
            {
                screen.leave(&last);
                return Err(format!(
                    "run {name} did not finish within {}",
                    fmt_duration(TimeDelta::from_std(t).unwrap_or(TimeDelta::MAX))
                ));
            }
            tokio::select! {
                _ = tokio::time::sleep(retry) => {}
                _ = tokio::signal::ctrl_c() => {
                    screen.leave(&last);
                    return Err("interrupted".into());
                }
            }
            match api.get(name).await {
                Ok(r) => {
                    run = r;
                    retry = every;
                    break;
                }
                Err(e) if transient(&e) => {
                    eprintln!("reading run {name} failed ({e}); retrying");
                    retry = (retry * 2).min(Duration::from_secs(10));
                }
                Err(e) => {
                    screen.leave(&last);
                    return Err(format!("armorrefreshrun {name:?}: {e}"));
                }
            }
        }
    }
}

/// A frame without what changes every second (ages, countdowns, the ETA), to print only
/// real changes.
fn strip_times(f: &str) -> String {
    // "10s", "3h2m", "1m5s," and "(in 4s)": a number with units, punctuation around it.
    let duration = |w: &str| {
        let core = w.trim_start_matches('(').trim_end_matches([',', ')', ';']);
        core.starts_with(|c: char| c.is_ascii_digit())
            && core.ends_with(['h', 'm', 's'])
            && core.chars().any(|c| "hms".contains(c))
            && core
                .chars()
                .all(|c| c.is_ascii_digit() || "hms".contains(c))
    };
    f.lines()
        .filter(|l| !l.starts_with("ETA:"))
        .map(|l| {
            // "in 4s" becomes "now" with time: both go.
            l.split_whitespace()
                .filter(|w| !duration(w) && !matches!(*w, "in" | "now" | "(in" | "now)"))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{
        ArmorRefreshRunSpec, ArmorRefreshRunStatus, BatchStatus, PlanSummary, PolicyRef, Progress,
        RestingSlots,
    };

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn pod(name: &str, state: PodState, message: &str) -> BatchPod {
        BatchPod {
            namespace: "shop".into(),
            name: name.into(),
            node: "node-1".into(),
            state,
            message: message.into(),
            requested_at: Some(at("2026-11-28T11:59:50Z")),
            retry_at: Some(at("2026-11-28T12:00:04Z")),
            ..Default::default()
        }
    }

    fn run() -> ArmorRefreshRun {
        let mut r = ArmorRefreshRun::new(
            "web-1",
            ArmorRefreshRunSpec {
                policy_ref: PolicyRef { name: "web".into() },
                dry_run: false,
                paused: false,
                resume_token: String::new(),
            },
        );
        let mut pods = vec![
            pod("web-a", PodState::Evicting, ""),
            pod(
                "web-b",
                PodState::Deferred,
                "PodDisruptionBudget web allows no disruption",
            ),
        ];
        for i in 0..10 {
            pods.push(pod(&format!("web-x{i}"), PodState::Evicted, ""));
        }
        r.status = Some(ArmorRefreshRunStatus {
            phase: Phase::Batching,
            reason: "Refreshing".into(),
            started_at: Some(at("2026-11-28T11:50:00Z")),
            progress: Progress {
                total: 100,
                refreshed: 40,
                failed: 1,
                disrupted: 11,
                ..Default::default()
            },
            plan: Some(PlanSummary {
                batch_size: 12,
                ..Default::default()
            }),
            current_batch: Some(BatchStatus {
                index: 0,
                started_at: at("2026-11-28T11:50:00Z"),
                pods,
            }),
            unhealthy: vec![pod(
                "web-z",
                PodState::Failed,
                "replacement not Ready within 5m",
            )],
            resting: vec![RestingSlots {
                until: at("2026-11-28T12:00:03Z"),
                slots: 1,
            }],
            ..Default::default()
        });
        r
    }

    #[test]
    fn a_frame_shows_progress_flight_deferrals_failures_and_eta() {
        let now = at("2026-11-28T12:00:00Z");
        let f = frame(&run(), now);
        let want = [
            "Run web-1 (policy web): Batching, Refreshing; started 10m ago",
            "[############..................] 40/100 refreshed  failed 1",
            "Disrupted now: 11 of 12",
            "In flight (11):",
            "  shop/web-a                               Evicting 10s ago on node-1",
            "  ... and 3 more",
            "Deferred (1):",
            "  shop/web-b                               PodDisruptionBudget web allows no disruption, retry in 4s",
            "Failed (1):",
            "replacement not Ready within 5m",
            "Resting slots: 1, next refill in 3s",
            // 59 pods left at 15 s a pod.
            "ETA: 14m45s at 4.0 pods/min",
        ];
        for w in want {
            assert!(f.contains(w), "{w:?} missing from\n{f}");
        }
        assert_eq!(exit_ok(&run()), None);
    }

    #[test]
    fn a_finished_run_ends_the_watch_with_its_outcome() {
        let now = at("2026-11-28T12:00:00Z");
        let mut r = run();
        let s = r.status.as_mut().unwrap();
        s.phase = Phase::Completed;
        s.completed_at = Some(at("2026-11-28T11:58:00Z"));
        s.current_batch = None;
        let f = frame(&r, now);
        assert!(f.contains("Finished 2m ago, took 8m"), "{f}");
        assert!(!f.contains("ETA"), "{f}");
        assert!(!f.contains("Resting"), "{f}");
        assert_eq!(exit_ok(&r), Some(true));
        r.status.as_mut().unwrap().phase = Phase::Failed;
        assert_eq!(exit_ok(&r), Some(false));
        // A run the operator has not seen yet.
        let mut fresh = run();
        fresh.status = None;
        assert!(frame(&fresh, now).contains("Pending, -"));
        assert_eq!(exit_ok(&fresh), None);
    }

    #[test]
    fn only_real_changes_are_printed_again() {
        let t0 = at("2026-11-28T12:00:00Z");
        let later = at("2026-11-28T12:01:07Z");
        let r = run();
        // The clock alone changes ages, countdowns and the ETA: not a change.
        assert_eq!(strip_times(&frame(&r, t0)), strip_times(&frame(&r, later)));
        // A slot more resting, a pod more in flight, one more refreshed: changes.
        let mut more_resting = run();
        more_resting.status.as_mut().unwrap().resting[0].slots = 2;
        let mut refreshed = run();
        refreshed.status.as_mut().unwrap().progress.refreshed = 41;
        let mut deferred = run();
        deferred
            .status
            .as_mut()
            .unwrap()
            .current_batch
            .as_mut()
            .unwrap()
            .pods[0]
            .state = PodState::Deferred;
        for changed in [more_resting, refreshed, deferred] {
            assert_ne!(
                strip_times(&frame(&r, t0)),
                strip_times(&frame(&changed, later))
            );
        }
        let mut window = run();
        window.status.as_mut().unwrap().next_window_at = Some(at("2026-11-28T15:00:00Z"));
        assert_eq!(
            strip_times(&frame(&window, t0)),
            strip_times(&frame(&window, later)),
            "a countdown to the next window is not a change"
        );
    }

    #[test]
    fn the_eta_saturates() {
        let mut r = run();
        let p = &mut r.status.as_mut().unwrap().progress;
        (p.refreshed, p.failed, p.gone, p.total) = (u32::MAX, u32::MAX, u32::MAX, u32::MAX);
        let _ = frame(&r, at("2026-11-28T12:00:00Z"));
        // Started in the future (a skewed clock): no ETA from a negative pace, no panic.
        r.status.as_mut().unwrap().started_at = Some(at("2027-01-01T00:00:00Z"));
        let _ = frame(&r, at("2026-11-28T12:00:00Z"));
    }

    #[test]
    fn a_bar_never_overflows() {
        assert_eq!(bar(5, 0).len(), BAR + 2);
        assert_eq!(bar(50, 10), format!("[{}]", "#".repeat(BAR)));
        assert_eq!(bar(u32::MAX, u32::MAX).matches('#').count(), BAR);
    }
}
