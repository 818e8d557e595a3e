//! Maintenance windows: `{schedule (cron), duration, timeZone}`.
//!
//! A window opens at each cron occurrence, evaluated as wall-clock time in its IANA zone,
//! and stays open for `duration` of real elapsed time: across a daylight-saving change a
//! 4h window lasts 4h. An occurrence that falls into a spring-forward gap opens at the
//! first instant after the gap (cron's usual rule). No window at all means always open.

use std::str::FromStr;

use chrono::{DateTime, TimeDelta, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds};

use crate::policy::{SpecError, parse_duration};

/// One parsed window.
#[derive(Debug, Clone)]
pub struct WindowSpec {
    cron: Cron,
    duration: TimeDelta,
    tz: Tz,
}

impl WindowSpec {
    /// Parses a window; `field` prefixes error paths (e.g. `spec.windows[0]`).
    pub fn parse(
        field: &str,
        schedule: &str,
        duration: &str,
        time_zone: &str,
    ) -> Result<Self, SpecError> {
        let cron = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .build()
            .parse(schedule.trim())
            .map_err(|e| {
                SpecError::new(
                    format!("{field}.schedule"),
                    format!("{schedule:?} is not a five-field cron expression (minute hour day-of-month month day-of-week), e.g. \"0 1 * * *\": {e}"),
                )
            })?;
        let tz = Tz::from_str(time_zone.trim()).map_err(|_| {
            SpecError::new(
                format!("{field}.timeZone"),
                format!("{time_zone:?} is not an IANA time zone name such as \"UTC\" or \"Europe/Berlin\""),
            )
        })?;
        let d = parse_duration(&format!("{field}.duration"), duration)?;
        if d.is_zero() {
            return Err(SpecError::new(
                format!("{field}.duration"),
                "must be longer than 0s, e.g. \"4h\"",
            ));
        }
        // parse_duration caps durations at one year, well inside TimeDelta's range.
        let span = TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX);
        let w = WindowSpec {
            cron,
            duration: span,
            tz,
        };
        // A pattern such as "0 0 30 2 *" parses but never fires; say so instead of waiting forever.
        let probe = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .expect("constant")
            .with_timezone(&Utc);
        let Some(first) = w.next_start_after(probe) else {
            return Err(SpecError::new(
                format!("{field}.schedule"),
                format!("{} never matches a date", crate::policy::quote(schedule)),
            ));
        };
        // A window that is still open when it opens again never closes: always open by
        // accident. Its period is the shortest gap between two openings (over the next few).
        if let Some(gap) = w.shortest_gap_in_a_year(first)
            && span > gap
        {
            return Err(SpecError::new(
                format!("{field}.duration"),
                format!(
                    "{} is longer than the {} between two openings of {}; a window must close before it opens again",
                    crate::policy::quote(duration),
                    crate::run::fmt_duration(gap),
                    crate::policy::quote(schedule)
                ),
            ));
        }
        Ok(w)
    }

    /// The shortest gap between openings over the year after `from`: a few consecutive
    /// openings from every week, so a daylight-saving change (a 23 h day) is seen too.
    fn shortest_gap_in_a_year(&self, from: DateTime<Utc>) -> Option<TimeDelta> {
        (0..53)
            .filter_map(|week| {
                let start = self.next_start_after(from + TimeDelta::weeks(week))?;
                self.shortest_gap(start, PERIOD_PROBES)
            })
            .min()
    }

    /// The shortest gap between consecutive openings among the first `n` after `from`.
    fn shortest_gap(&self, from: DateTime<Utc>, n: usize) -> Option<TimeDelta> {
        let mut prev = from;
        let mut best: Option<TimeDelta> = None;
        for _ in 0..n {
            let Some(next) = self.next_start_after(prev) else {
                break;
            };
            let gap = next - prev;
            best = Some(best.map_or(gap, |b| b.min(gap)));
            prev = next;
        }
        best
    }

    /// The start of the window occurrence containing `now`, if any.
    fn open_start(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = now.with_timezone(&self.tz);
        let start = self
            .cron
            .find_previous_occurrence(&local, true)
            .ok()?
            .with_timezone(&Utc);
        (start <= now && now < saturating_add(start, self.duration)).then_some(start)
    }

    /// The first start strictly after `t`.
    fn next_start_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = t.with_timezone(&self.tz);
        self.cron
            .find_next_occurrence(&local, false)
            .ok()
            .map(|d| d.with_timezone(&Utc))
    }

    /// Is this window open at `now`?
    pub fn is_open(&self, now: DateTime<Utc>) -> bool {
        self.open_start(now).is_some()
    }

    /// When the occurrence containing `now` closes.
    pub fn closes_at(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.open_start(now)
            .map(|s| saturating_add(s, self.duration))
    }
}

/// Consecutive openings probed for a window's period, from each week of a year.
const PERIOD_PROBES: usize = 8;

/// `t + d`, or the last representable instant: time arithmetic never panics.
pub fn saturating_add(t: DateTime<Utc>, d: TimeDelta) -> DateTime<Utc> {
    t.checked_add_signed(d).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// All windows of a policy.
#[derive(Debug, Clone, Default)]
pub struct Schedule {
    windows: Vec<WindowSpec>,
}

/// Bound on chained overlapping windows followed by [`Schedule::closes_at`].
const MAX_CHAIN: usize = 1000;

impl Schedule {
    pub fn new(windows: Vec<WindowSpec>) -> Self {
        Schedule { windows }
    }

    /// No window configured: always open.
    pub fn is_always_open(&self) -> bool {
        self.windows.is_empty()
    }

    /// May a batch start at `now`?
    pub fn is_open(&self, now: DateTime<Utc>) -> bool {
        self.is_always_open() || self.windows.iter().any(|w| w.is_open(now))
    }

    /// `now` when open, else the next time any window opens; `None` if none ever does.
    pub fn next_open(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        if self.is_open(now) {
            return Some(now);
        }
        self.windows
            .iter()
            .filter_map(|w| w.next_start_after(now))
            .min()
    }

    /// When the schedule closes, if it is open at `now`: windows that overlap or touch are
    /// followed, so the answer is the end of the continuous open stretch. `None` when
    /// closed, or always open.
    pub fn closes_at(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        if self.is_always_open() {
            return None;
        }
        let mut end = self.windows.iter().filter_map(|w| w.closes_at(now)).max()?;
        for _ in 0..MAX_CHAIN {
            match self.windows.iter().filter_map(|w| w.closes_at(end)).max() {
                Some(later) if later > end => end = later,
                _ => break,
            }
        }
        Some(end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }
    fn w(s: &str, d: &str, tz: &str) -> WindowSpec {
        WindowSpec::parse("w", s, d, tz).unwrap()
    }

    #[test]
    fn no_window_is_always_open() {
        let s = Schedule::default();
        let now = t("2026-03-01T12:00:00Z");
        assert!(s.is_open(now));
        assert_eq!(s.next_open(now), Some(now));
        assert_eq!(s.closes_at(now), None);
    }

    #[test]
    fn simple_utc_window() {
        let s = Schedule::new(vec![w("0 1 * * *", "4h", "UTC")]);
        assert!(!s.is_open(t("2026-03-01T00:59:59Z")));
        assert!(s.is_open(t("2026-03-01T01:00:00Z")));
        assert!(s.is_open(t("2026-03-01T04:59:59Z")));
        assert!(!s.is_open(t("2026-03-01T05:00:00Z")));
        assert_eq!(
            s.next_open(t("2026-03-01T05:00:00Z")),
            Some(t("2026-03-02T01:00:00Z"))
        );
        assert_eq!(
            s.closes_at(t("2026-03-01T02:00:00Z")),
            Some(t("2026-03-01T05:00:00Z"))
        );
        assert_eq!(s.closes_at(t("2026-03-01T06:00:00Z")), None);
    }

    #[test]
    fn window_crossing_midnight() {
        let s = Schedule::new(vec![w("0 22 * * *", "4h", "UTC")]);
        assert!(s.is_open(t("2026-03-01T23:30:00Z")));
        assert!(s.is_open(t("2026-03-02T01:59:00Z")));
        assert!(!s.is_open(t("2026-03-02T02:00:00Z")));
        assert_eq!(
            s.closes_at(t("2026-03-02T00:30:00Z")),
            Some(t("2026-03-02T02:00:00Z"))
        );
        // Friday night only: open into Saturday morning, closed Saturday night.
        let fri = Schedule::new(vec![w("0 22 * * FRI", "6h", "UTC")]);
        assert!(fri.is_open(t("2026-03-07T03:00:00Z"))); // Saturday 03:00, opened Friday 22:00
        assert!(!fri.is_open(t("2026-03-07T23:00:00Z")));
        assert_eq!(
            fri.next_open(t("2026-03-07T23:00:00Z")),
            Some(t("2026-03-13T22:00:00Z"))
        );
    }

    #[test]
    fn berlin_window_in_winter_and_summer() {
        let s = Schedule::new(vec![w("0 1 * * *", "4h", "Europe/Berlin")]);
        // CET = UTC+1: 01:00 local is 00:00Z.
        assert!(s.is_open(t("2026-01-15T00:00:00Z")));
        assert!(!s.is_open(t("2026-01-14T23:59:59Z")));
        // CEST = UTC+2: 01:00 local is 23:00Z the day before.
        assert!(s.is_open(t("2026-07-14T23:00:00Z")));
        assert!(!s.is_open(t("2026-07-14T22:59:00Z")));
    }

    #[test]
    fn dst_spring_forward_gap() {
        // 2026-03-29: Berlin clocks jump 02:00 -> 03:00. A 02:30 window starts at the first
        // real instant after the gap (03:00 CEST = 01:00Z) and lasts its full hour.
        let s = Schedule::new(vec![w("30 2 * * *", "1h", "Europe/Berlin")]);
        let open = s.next_open(t("2026-03-28T23:00:00Z")).unwrap();
        assert_eq!(open, t("2026-03-29T01:00:00Z"));
        assert!(s.is_open(t("2026-03-29T01:30:00Z")));
        assert!(!s.is_open(t("2026-03-29T02:00:00Z")));
        // The 01:00 window on that night lasts exactly 4 real hours, though the wall clock
        // shows 01:00 -> 06:00.
        let s = Schedule::new(vec![w("0 1 * * *", "4h", "Europe/Berlin")]);
        let start = t("2026-03-29T00:00:00Z"); // 01:00 CET
        assert!(s.is_open(start));
        assert_eq!(s.closes_at(start), Some(t("2026-03-29T04:00:00Z")));
    }

    #[test]
    fn dst_fall_back_overlap() {
        // 2026-10-25: Berlin clocks go 03:00 CEST -> 02:00 CET; 02:30 happens twice.
        // The window opens once (not twice) and lasts 1 real hour.
        let s = Schedule::new(vec![w("30 2 * * *", "1h", "Europe/Berlin")]);
        let first = s.next_open(t("2026-10-24T23:00:00Z")).unwrap();
        assert_eq!(first, t("2026-10-25T00:30:00Z")); // 02:30 CEST
        assert_eq!(s.closes_at(first), Some(t("2026-10-25T01:30:00Z")));
        // After it closes, the next opening is the following day, not the repeated 02:30.
        let next = s.next_open(t("2026-10-25T01:30:00Z")).unwrap();
        assert!(
            next == t("2026-10-26T01:30:00Z") || next == t("2026-10-25T01:30:00Z"),
            "{next}"
        );
        // 4h window from 01:00 CEST across the fall back: still exactly 4h.
        let s = Schedule::new(vec![w("0 1 * * *", "4h", "Europe/Berlin")]);
        let start = t("2026-10-24T23:00:00Z"); // 01:00 CEST
        assert!(s.is_open(start));
        assert_eq!(s.closes_at(start), Some(t("2026-10-25T03:00:00Z")));
    }

    #[test]
    fn overlapping_windows_chain() {
        let s = Schedule::new(vec![
            w("0 1 * * *", "2h", "UTC"),
            w("0 2 * * *", "2h", "UTC"),
            w("0 10 * * *", "1h", "UTC"),
        ]);
        let now = t("2026-03-01T01:30:00Z");
        assert!(s.is_open(now));
        assert_eq!(s.closes_at(now), Some(t("2026-03-01T04:00:00Z")));
        assert!(s.is_open(t("2026-03-01T03:59:00Z")));
        assert!(!s.is_open(t("2026-03-01T04:00:00Z")));
        assert_eq!(
            s.next_open(t("2026-03-01T04:00:00Z")),
            Some(t("2026-03-01T10:00:00Z"))
        );
        // Touching windows chain too: [1,2) then [2,3).
        let s = Schedule::new(vec![
            w("0 1 * * *", "1h", "UTC"),
            w("0 2 * * *", "1h", "UTC"),
        ]);
        assert_eq!(
            s.closes_at(t("2026-03-01T01:10:00Z")),
            Some(t("2026-03-01T03:00:00Z"))
        );
    }

    #[test]
    fn a_window_always_open_by_overlap_terminates() {
        // Three windows that each close before they open again, but together never close.
        let s = Schedule::new(vec![
            w("0 * * * *", "25m", "UTC"),
            w("20 * * * *", "25m", "UTC"),
            w("40 * * * *", "25m", "UTC"),
        ]);
        let now = t("2026-03-01T01:30:00Z");
        assert!(s.is_open(now));
        let end = s.closes_at(now).unwrap();
        assert!(end > now);
    }

    #[test]
    fn bad_windows() {
        let e = WindowSpec::parse("spec.windows[1]", "61 * * * *", "1h", "UTC").unwrap_err();
        assert_eq!(e.field, "spec.windows[1].schedule");
        let e = WindowSpec::parse("spec.windows[1]", "0 1 * * * *", "1h", "UTC").unwrap_err();
        assert_eq!(e.field, "spec.windows[1].schedule");
        let e =
            WindowSpec::parse("spec.windows[1]", "0 1 * * *", "1h", "Europe/Atlantis").unwrap_err();
        assert_eq!(e.field, "spec.windows[1].timeZone");
        let e = WindowSpec::parse("spec.windows[1]", "0 1 * * *", "0s", "UTC").unwrap_err();
        assert_eq!(e.field, "spec.windows[1].duration");
        let e = WindowSpec::parse("spec.windows[1]", "0 1 * * *", "four hours", "UTC").unwrap_err();
        assert_eq!(e.field, "spec.windows[1].duration");
        let e = WindowSpec::parse("spec.windows[1]", "0 0 30 2 *", "1h", "UTC").unwrap_err();
        assert!(e.message.contains("never"), "{e}");
        // A window still open when it opens again would never close.
        let e = WindowSpec::parse("spec.windows[1]", "* * * * *", "2m", "UTC").unwrap_err();
        assert_eq!(e.field, "spec.windows[1].duration");
        assert!(e.message.contains("1m between two openings"), "{e}");
        let e = WindowSpec::parse("spec.windows[0]", "0 1 * * 1-5", "25h", "UTC").unwrap_err();
        assert!(e.message.contains("24h"), "{e}");
        assert!(WindowSpec::parse("w", "0 1 * * 1-5", "24h", "UTC").is_ok());
        // In Berlin the day of the spring change has 23 hours: a 24h daily window overlaps.
        let e = WindowSpec::parse("w", "0 1 * * *", "24h", "Europe/Berlin").unwrap_err();
        assert!(e.message.contains("23h"), "{e}");
        assert!(WindowSpec::parse("w", "0 1 * * *", "23h", "Europe/Berlin").is_ok());
        let e = WindowSpec::parse("spec.windows[0]", "0 1 * * *", "9000h", "UTC").unwrap_err();
        assert!(e.message.contains("8760h"), "{e}");
    }

    proptest! {
        // next_open is open (or nothing ever opens), closes_at is after now, and just before
        // next_open the schedule was closed.
        #[test]
        fn next_open_and_closes_at_agree(secs in 0i64..(400 * 86400), hour in 0u32..24, dur_m in 1u32..600, tz in prop::sample::select(vec!["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata"])) {
            let base = t("2026-01-01T00:00:00Z");
            let now = base + TimeDelta::seconds(secs);
            let s = Schedule::new(vec![w(&format!("15 {hour} * * *"), &format!("{dur_m}m"), tz)]);
            let open = s.next_open(now).unwrap();
            prop_assert!(open >= now);
            prop_assert!(s.is_open(open));
            if open > now {
                prop_assert!(!s.is_open(now));
                prop_assert!(!s.is_open(open - TimeDelta::seconds(1)));
            }
            let close = s.closes_at(open).unwrap();
            prop_assert!(close > open);
            prop_assert!(!s.is_open(close) || dur_m >= 24 * 60 - 60);
            prop_assert!(s.is_open(close - TimeDelta::seconds(1)));
        }
    }
}
