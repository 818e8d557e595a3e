//! Which finished runs of a policy are deleted: beyond the policy's history limits (the
//! newest completed and failed runs are kept, as a CronJob keeps its Jobs) or past their
//! time to live after finishing (as a Job's `ttlSecondsAfterFinished`). Pure: the
//! controller deletes what this returns and wakes at the time it names.
//!
//! The policy's last run is always kept, whatever the limits: it is `status.lastRun`, and
//! the Automatic trigger reads it to hold off after a failed run until someone looks (or
//! the policy changes). Were it deleted, `failedRuns: 0` or a short time to live would
//! have the trigger create a new run after each failure, forever.

use std::time::Duration;

use chrono::{DateTime, Utc};

/// A policy's retention, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Retention {
    pub completed: usize,
    pub failed: usize,
    pub ttl: Option<Duration>,
}

/// A finished run of the policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finished {
    pub name: String,
    pub failed: bool,
    /// When it finished (its creation time when the status does not say).
    pub at: DateTime<Utc>,
    pub created: DateTime<Utc>,
}

/// What to delete now, and the earliest time a kept run's time to live ends.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sweep {
    pub delete: Vec<String>,
    pub next: Option<DateTime<Utc>>,
}

pub fn sweep(runs: &[Finished], keep: &Retention, now: DateTime<Utc>) -> Sweep {
    let mut newest_first: Vec<&Finished> = runs.iter().collect();
    // By name too, so two runs finished in the same second are ordered the same every pass.
    newest_first.sort_by(|a, b| b.at.cmp(&a.at).then_with(|| b.name.cmp(&a.name)));
    // The last run by either clock: what lastRun names and what the trigger looks at.
    let last_finished = newest_first.first().map(|r| r.name.as_str());
    let last_created = runs
        .iter()
        .max_by(|a, b| a.created.cmp(&b.created).then_with(|| a.name.cmp(&b.name)))
        .map(|r| r.name.as_str());
    let mut kept = (0, 0);
    let mut out = Sweep::default();
    for r in newest_first {
        if [last_finished, last_created].contains(&Some(r.name.as_str())) {
            continue;
        }
        let (count, limit) = if r.failed {
            (&mut kept.1, keep.failed)
        } else {
            (&mut kept.0, keep.completed)
        };
        let expires = keep.ttl.map(|ttl| expiry(r.at, ttl));
        if *count >= limit || expires.is_some_and(|t| t <= now) {
            out.delete.push(r.name.clone());
            continue;
        }
        *count += 1;
        if let Some(t) = expires {
            out.next = Some(out.next.map_or(t, |n| n.min(t)));
        }
    }
    out
}

/// `at + ttl`, saturating at the end of time instead of overflowing.
fn expiry(at: DateTime<Utc>, ttl: Duration) -> DateTime<Utc> {
    chrono::TimeDelta::from_std(ttl)
        .ok()
        .and_then(|d| at.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }

    fn run(name: &str, failed: bool, at: i64) -> Finished {
        Finished {
            name: name.into(),
            failed,
            at: t(at),
            created: t(at - 5),
        }
    }

    fn keep(completed: usize, failed: usize, ttl: Option<u64>) -> Retention {
        Retention {
            completed,
            failed,
            ttl: ttl.map(Duration::from_secs),
        }
    }

    #[test]
    fn the_newest_of_each_kind_are_kept_and_the_rest_deleted_oldest_included() {
        let runs = [
            run("c1", false, 10),
            run("f1", true, 20),
            run("c2", false, 30),
            run("f2", true, 40),
            run("c3", false, 50),
        ];
        // c3 is the last run, kept and not counted.
        let s = sweep(&runs, &keep(1, 1, None), t(100));
        assert_eq!(s.delete, vec!["f1", "c1"]);
        assert_eq!(s.next, None);
        // Failed runs do not use up the completed runs' places, nor the other way round.
        let s = sweep(&runs, &keep(2, 2, None), t(100));
        assert!(s.delete.is_empty(), "{s:?}");
        // 0 keeps none of that kind, but the last run.
        let s = sweep(&runs, &keep(0, 2, None), t(100));
        assert_eq!(s.delete, vec!["c2", "c1"]);
    }

    #[test]
    fn the_last_run_stays_so_a_failure_holds_the_automatic_trigger() {
        // A failed last run with failedRuns 0 and a time to live long past: kept, so the
        // trigger still sees it and does not start another run of the same generation.
        let runs = [run("ok", false, 10), run("failed", true, 20)];
        let s = sweep(&runs, &keep(0, 0, Some(1)), t(1_000));
        assert_eq!(s.delete, vec!["ok"]);
        // The last created is kept too when it finished before an older one.
        let mut late = run("created-last", false, 30);
        late.created = t(100);
        let runs = [run("finished-last", false, 50), late];
        let s = sweep(&runs, &keep(0, 0, None), t(1_000));
        assert!(s.delete.is_empty(), "{s:?}");
    }

    #[test]
    fn a_time_to_live_deletes_runs_past_it_and_wakes_for_the_next() {
        let runs = [run("a", false, 0), run("b", true, 50), run("c", false, 90)];
        let s = sweep(&runs, &keep(10, 10, Some(60)), t(100));
        assert_eq!(s.delete, vec!["a"]);
        assert_eq!(s.next, Some(t(110)), "b expires at 50 + 60");
        // Exactly at its expiry it goes; c, the last run, stays and needs no wake.
        let s = sweep(&runs, &keep(10, 10, Some(60)), t(110));
        assert_eq!(s.delete, vec!["b", "a"]);
        assert_eq!(s.next, None);
    }

    #[test]
    fn order_is_stable_for_runs_finished_at_the_same_instant() {
        let runs = [
            run("w", false, 5),
            run("x", false, 5),
            run("y", false, 5),
            run("z", false, 5),
        ];
        let once = sweep(&runs, &keep(1, 0, None), t(9));
        let mut reversed = runs.clone();
        reversed.reverse();
        assert_eq!(sweep(&reversed, &keep(1, 0, None), t(9)), once);
        assert_eq!(
            once.delete,
            vec!["x", "w"],
            "z is the last run, y the one kept"
        );
    }

    #[test]
    fn a_ttl_past_the_end_of_time_saturates_instead_of_panicking() {
        let late = |name: &str| Finished {
            name: name.into(),
            failed: false,
            at: DateTime::<Utc>::MAX_UTC,
            created: t(0),
        };
        let s = sweep(&[late("a"), late("b")], &keep(2, 1, Some(u64::MAX)), t(0));
        assert!(s.delete.is_empty());
        assert_eq!(s.next, Some(DateTime::<Utc>::MAX_UTC));
    }
}
