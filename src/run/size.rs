//! Keeping a run's status within what etcd accepts: bounded messages, measured sizes.

use super::*;

/// A message cut to `max` bytes (at a character boundary, marked with "..."), with control
/// characters, quotes and backslashes replaced, so its JSON form is at most `max` bytes
/// plus its quotes: messages carry API errors and users' strings, and must not grow the
/// status past its budget.
pub fn clip(msg: String, max: usize) -> String {
    if msg.len() <= max && msg.chars().all(is_plain) {
        return msg;
    }
    let mut out = String::with_capacity(max.min(msg.len()));
    for c in msg.chars() {
        let c = match c {
            c if is_plain(c) => c,
            '"' => '\'',
            '\\' => '/',
            '<' => '(',
            '>' => ')',
            '&' => '+',
            _ => ' ',
        };
        if out.len() + c.len_utf8() > max.saturating_sub(3) {
            out.push_str("...");
            return out;
        }
        out.push(c);
    }
    out
}

/// A character every JSON encoder writes as itself (serde_json escapes control characters,
/// quotes and backslashes; Go's encoder also `<`, `>`, `&`, U+2028 and U+2029).
pub(super) fn is_plain(c: char) -> bool {
    !c.is_control() && !matches!(c, '"' | '\\' | '<' | '>' | '&' | '\u{2028}' | '\u{2029}')
}

/// Bytes of a value as JSON.
pub fn json_len<T: serde::Serialize>(v: &T) -> usize {
    serde_json::to_vec(v).map_or(0, |b| b.len())
}

/// The most bytes a batch entry can take once everything about it is recorded.
pub fn worst_bytes(p: &BatchPod) -> usize {
    json_len(p) + POD_GROWTH + 1
}

/// Every message of the status within its bound (one place, at the end of a step).
pub(super) fn clip_messages(s: &mut ArmorRefreshRunStatus) {
    for p in s
        .current_batch
        .iter_mut()
        .flat_map(|b| b.pods.iter_mut())
        .chain(s.unhealthy.iter_mut())
    {
        // clip returns a message that is already within bounds as it is.
        p.message = clip(std::mem::take(&mut p.message), POD_MESSAGE_MAX);
    }
    s.message = clip(std::mem::take(&mut s.message), MESSAGE_MAX);
}

/// The next batch, planned by `plan(k)` for at most `k` pods, within what the status can
/// hold: every pod of it at its largest, plus the status as it is, under [`STATUS_BUDGET`].
/// A smaller batch is planned again rather than cut, so every planner rule (StatefulSet
/// order, leader last) holds for it. Returns the batch and whether the budget capped it.
pub(super) fn fit_in_status(
    s: &ArmorRefreshRunStatus,
    budget: u32,
    plan: impl Fn(u32) -> Vec<BatchPod>,
) -> (Vec<BatchPod>, bool) {
    // The batch record's own keys and index around its pods, the run's message and its
    // three conditions, rewritten after this is measured, and what `recent` and `resting`
    // may grow to (a pod's namespace/name is at most 317 bytes).
    const BATCH_OVERHEAD: usize =
        128 + 4 * (MESSAGE_MAX + 64) + RECENT_LIMIT * (317 + 100) + RESTING_GROUPS * 64;
    // Pods already in flight (a window's) may still grow to their largest as well.
    let growth: usize = s
        .current_batch
        .iter()
        .flat_map(|b| &b.pods)
        .filter(|p| !p.state.is_settled())
        .map(|p| (2 * worst_bytes(p) + p.uid.len() + 3).saturating_sub(json_len(p)))
        .sum();
    let room = STATUS_BUDGET.saturating_sub(json_len(s) + BATCH_OVERHEAD + growth);
    let mut k = budget;
    let mut capped = false;
    for _ in 0..16 {
        let pods = plan(k);
        let mut used = 0;
        let fit = pods
            .iter()
            .take_while(|p| {
                // Twice: a pod whose replacement fails is kept in the batch and, until its
                // workload is whole again, in `unhealthy` too; and its UID in `givenUp`.
                used += 2 * worst_bytes(p) + p.uid.len() + 3;
                used <= room
            })
            .count();
        if fit == pods.len() {
            return (pods, capped);
        }
        capped = true;
        // Names differ in length: shrink a little below what fitted this time.
        k = (fit as u32).min(k.saturating_sub(1)).min(k - k / 16);
        if k == 0 {
            break;
        }
    }
    (vec![], true)
}
