//! The API server's clock, as this process can know it.
//!
//! Every time the state machine compares lives on the API server's clock: creation and
//! deletion times of pods are stamped there, and a replacement is told from an older pod by
//! comparing its `creationTimestamp` with when the eviction was requested. An operator whose
//! clock runs 30 s ahead would otherwise match no replacement at all (every pod fails and
//! the breaker opens), and 30 s behind it would take older pods for replacements.
//!
//! So the shell asks the API server for the time (the `creationTimestamp` of a dry-run
//! create, which the server stamps with its own clock and does not persist) and keeps the
//! offset. A stamp has one-second resolution and was made somewhere between sending the
//! request and reading the answer, so each sample bounds the offset to an interval; the
//! intervals of recent samples are intersected, and the middle of what is left is used.

use chrono::{DateTime, TimeDelta, Utc};

/// Samples older than this are forgotten (clocks drift, and a clock can be set).
const KEEP: TimeDelta = TimeDelta::minutes(10);

#[derive(Debug, Clone, Default)]
pub struct ServerClock {
    /// Bounds of `server − local`, and when the newest sample was taken (local clock).
    bounds: Option<(TimeDelta, TimeDelta, DateTime<Utc>)>,
}

impl ServerClock {
    /// One sample: a request sent at `sent` and answered at `received` (both local), whose
    /// answer carries `stamp`, a server time truncated to the second.
    pub fn sample(&mut self, sent: DateTime<Utc>, received: DateTime<Utc>, stamp: DateTime<Utc>) {
        let (sent, received) = (sent.min(received), sent.max(received));
        // The server stamped at some local instant in [sent, received], and its true time
        // then was in [stamp, stamp + 1 s).
        let Some(next) = stamp.checked_add_signed(TimeDelta::seconds(1)) else {
            return;
        };
        let (lo, hi) = (stamp - received, next - sent);
        self.bounds = match self.bounds {
            Some((l, h, at))
                if received.signed_duration_since(at) <= KEEP && l.max(lo) <= h.min(hi) =>
            {
                Some((l.max(lo), h.min(hi), received))
            }
            // First sample, stale ones, or a clock that jumped: start again from this one.
            _ => Some((lo, hi, received)),
        };
    }

    /// `server − local`: zero until a sample was taken.
    pub fn offset(&self) -> TimeDelta {
        self.bounds
            .map_or(TimeDelta::zero(), |(lo, hi, _)| lo + (hi - lo) / 2)
    }

    /// The API server's time now, as well as this process knows it.
    pub fn now(&self, local: DateTime<Utc>) -> DateTime<Utc> {
        local.checked_add_signed(self.offset()).unwrap_or(local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    /// A server `skew_ms` ahead of this process; requests take `rtt_ms` and are stamped
    /// halfway.
    fn sample_at(c: &mut ServerClock, local: DateTime<Utc>, skew_ms: i64, rtt_ms: i64) {
        let stamped_local = local + TimeDelta::milliseconds(rtt_ms / 2);
        let server = stamped_local + TimeDelta::milliseconds(skew_ms);
        let stamp = DateTime::from_timestamp(server.timestamp(), 0).unwrap();
        c.sample(local, local + TimeDelta::milliseconds(rtt_ms), stamp);
    }

    #[test]
    fn no_sample_means_no_correction() {
        let c = ServerClock::default();
        let now = t("2026-11-28T10:00:00.250Z");
        assert_eq!(c.now(now), now);
    }

    #[test]
    fn a_skewed_clock_is_corrected_within_a_second_at_once_and_closely_after_samples() {
        for skew_ms in [30_000i64, -30_000, 1_500, -700, 0] {
            let mut c = ServerClock::default();
            let start = t("2026-11-28T10:00:00.000Z");
            sample_at(&mut c, start, skew_ms, 20);
            let err = (c.offset() - TimeDelta::milliseconds(skew_ms))
                .num_milliseconds()
                .abs();
            assert!(err <= 520, "skew {skew_ms}: one sample is off by {err} ms");
            // Samples at different fractions of a second narrow the interval.
            for i in 1..40 {
                sample_at(
                    &mut c,
                    start + TimeDelta::milliseconds(i * 1_037),
                    skew_ms,
                    20,
                );
            }
            let err = (c.offset() - TimeDelta::milliseconds(skew_ms))
                .num_milliseconds()
                .abs();
            assert!(err <= 40, "skew {skew_ms}: 40 samples are off by {err} ms");
        }
    }

    #[test]
    fn a_clock_that_jumps_is_followed() {
        let mut c = ServerClock::default();
        let start = t("2026-11-28T10:00:00.000Z");
        for i in 0..10 {
            sample_at(&mut c, start + TimeDelta::seconds(i), 0, 10);
        }
        // Someone sets this machine's clock back by a minute: the old bounds no longer
        // intersect the new sample, which wins.
        sample_at(&mut c, start + TimeDelta::seconds(11), 60_000, 10);
        assert!(
            (c.offset() - TimeDelta::seconds(60))
                .num_milliseconds()
                .abs()
                <= 1_000
        );
    }

    #[test]
    fn extreme_times_do_not_panic() {
        let mut c = ServerClock::default();
        c.sample(
            DateTime::<Utc>::MIN_UTC,
            DateTime::<Utc>::MAX_UTC,
            DateTime::<Utc>::MAX_UTC,
        );
        let _ = c.now(DateTime::<Utc>::MAX_UTC);
    }
}
