//! Planning what to disrupt next, and the run's counters and plan summary.

use super::*;

/// Moves a settled batch to history.
pub(super) fn finish_batch(s: &mut ArmorRefreshRunStatus, cx: &mut Ctx) {
    let Some(b) = s.current_batch.take_if(|b| {
        b.pods
            .iter()
            .all(|p| p.state.is_settled() || p.state == PodState::Planned)
    }) else {
        return;
    };
    if b.index == 0 {
        // The window (its settled pods left it already, their replacements kept): those
        // that settled since stay claimed too.
        s.recent_replacements.extend(
            b.pods
                .iter()
                .map(|p| p.replacement.clone())
                .filter(|u| !u.is_empty()),
        );
        return;
    }
    let count = |st: PodState| b.pods.iter().filter(|p| p.state == st).count() as u32;
    s.recent_replacements = b
        .pods
        .iter()
        .map(|p| p.replacement.clone())
        .filter(|u| !u.is_empty())
        .collect();
    let rec = BatchRecord {
        index: b.index,
        started_at: b.started_at,
        finished_at: cx.now,
        pods: b.pods.len() as u32,
        refreshed: count(PodState::Refreshed),
        failed: count(PodState::Failed),
        gone: count(PodState::Gone),
    };
    cx.event(
        rec.failed > 0,
        "BatchFinished",
        format!(
            "batch {}: {} refreshed, {} failed, {} gone, in {}",
            rec.index,
            rec.refreshed,
            rec.failed,
            rec.gone,
            fmt_duration(cx.now - b.started_at)
        ),
    );
    s.history.push(rec);
    if s.history.len() > HISTORY_LIMIT {
        let drop = s.history.len() - HISTORY_LIMIT;
        s.history.drain(..drop);
    }
}

/// `Kind/name` of a batch entry's owner, as written by [`batch_pod`].
pub(super) fn owner_parts(owner: &str) -> (&str, &str) {
    owner.split_once('/').unwrap_or(("Pod", owner))
}

pub(super) fn in_flight(
    s: &ArmorRefreshRunStatus,
    others: &[BatchPod],
    unready: &[Target],
) -> InFlight {
    let mut f = InFlight::default();
    let mine: Vec<&BatchPod> = s
        .current_batch
        .iter()
        .flat_map(|b| &b.pods)
        .filter(|p| !p.state.is_settled())
        .chain(&s.unhealthy)
        .collect();
    for p in mine
        .iter()
        .copied()
        .chain(others.iter().filter(|p| !p.state.is_settled()))
    {
        let (kind, name) = owner_parts(&p.owner);
        let w = (
            p.namespace.clone(),
            Owner {
                kind: kind.into(),
                name: name.into(),
            },
        );
        f.add(&p.node, &p.zone, w, p.volumes);
    }
    // Unready targets are disrupted already: they limit their node and zone (never made
    // worse there), not this run's batch size (one crash loop must not stall a run).
    for t in unready {
        *f.per_node.entry(t.node.clone()).or_default() += 1;
        if !t.zone.is_empty() {
            *f.per_zone.entry(t.zone.clone()).or_default() += 1;
        }
    }
    // Other runs' pods limit nodes, zones and workloads, not this run's batch size. Failed
    // replacements (settled, in `unhealthy`) hold their slot until their workload is whole.
    f.total = mine.iter().filter(|p| holds_slot(p)).count() as u32 + s.unhealthy.len() as u32;
    f.refused = mine
        .iter()
        .filter(|p| p.state == PodState::Deferred && p.pdb_refused)
        .count() as u32;
    f
}

/// A pod of the run takes one of its `batchSize` slots: disrupted, about to be, or
/// deferred after an error. A pod a PodDisruptionBudget refused does not (it was not
/// evicted, and its budget is no reason to idle a slot another workload could use) unless
/// an unanswered request may have evicted it; it still counts against its node, zone and
/// workload, and takes a slot again when it is retried. Other deferrals keep their slot: a
/// server that fails one eviction likely fails the next, and the window must not walk
/// through every target meanwhile.
pub(super) fn holds_slot(p: &BatchPod) -> bool {
    !p.state.is_settled() && (p.state != PodState::Deferred || !p.pdb_refused || p.uncertain)
}

/// Disruptions a PDB allows by its status. A budget whose status predates its spec allows
/// none: the Eviction API refuses until the disruption controller has caught up
/// (eviction.go checks observedGeneration first).
pub fn context_allowed(pdb: Option<&k8s_openapi::api::policy::v1::PodDisruptionBudget>) -> i32 {
    let Some(p) = pdb else { return 0 };
    match p.status.as_ref() {
        Some(s) if s.observed_generation.unwrap_or(0) >= p.metadata.generation.unwrap_or(0) => {
            s.disruptions_allowed
        }
        _ => 0,
    }
}

/// What the planner needs of the cluster besides targets: PDB budgets, unready StatefulSets.
pub fn context(facts: &ClusterFacts) -> Context {
    let pdb_allowed = facts
        .pdbs
        .iter()
        .map(|p| context_allowed(Some(p)))
        .collect();
    let unready_sets = facts
        .statefulsets
        .iter()
        .filter(|(_, sts)| {
            let want = sts.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
            let ready = sts
                .status
                .as_ref()
                .and_then(|s| s.ready_replicas)
                .unwrap_or(0);
            ready < want
        })
        .map(|(k, _)| k.clone())
        .collect();
    Context {
        pdb_allowed,
        unready_sets,
    }
}

pub(super) fn batch_pod(t: &Target, workload: bool) -> BatchPod {
    BatchPod {
        namespace: t.namespace.clone(),
        name: if workload {
            t.owner.name.clone()
        } else {
            t.name.clone()
        },
        uid: if workload {
            String::new()
        } else {
            t.uid.clone()
        },
        node: if workload {
            String::new()
        } else {
            t.node.clone()
        },
        zone: if workload {
            String::new()
        } else {
            t.zone.clone()
        },
        owner: t.owner.to_string(),
        volumes: !workload && t.volumes,
        state: PodState::Planned,
        ..Default::default()
    }
}

/// The plan summary of the rest of the run.
pub fn summary(
    policy: &ValidPolicy,
    sel: &Selection,
    facts: &ClusterFacts,
    now: DateTime<Utc>,
    total: u32,
    preview: usize,
) -> PlanSummary {
    let limits = Limits::from_policy(policy, total.max(sel.targets.len() as u32));
    let batches = plan::plan_all(&sel.targets, &limits, &context(facts));
    let end = estimate_end(policy, batches.len(), now, ASSUMED_BATCH);
    PlanSummary {
        targets: sel.targets.len() as u32,
        skipped: sel.skipped_counts(),
        batches: batches.len() as u32,
        batch_size: limits.batch,
        estimated_duration: end.map(|e| fmt_duration(e - now)),
        estimated_completion: end,
        first_batches: preview_batches(&batches, sel, preview),
    }
}

/// The first `count` batches by pod name, within [`PREVIEW_BUDGET`] bytes: a dry run of a
/// large cluster shows the start of its plan, not a status etcd refuses.
pub(super) fn preview_batches(
    batches: &[Vec<usize>],
    sel: &Selection,
    count: usize,
) -> Vec<Vec<String>> {
    let mut bytes = 0;
    let mut out: Vec<Vec<String>> = vec![];
    'batches: for b in batches.iter().take(count) {
        let mut names = vec![];
        for &i in b {
            let key = sel.targets[i].key();
            bytes += key.len() + 3;
            if bytes > PREVIEW_BUDGET {
                if !names.is_empty() {
                    out.push(names);
                }
                break 'batches;
            }
            names.push(key);
        }
        out.push(names);
    }
    out
}

/// When `batches` batches of `per_batch` each, `interval` apart, finish given the windows.
/// `None` if windows never open again.
pub fn estimate_end(
    policy: &ValidPolicy,
    batches: usize,
    now: DateTime<Utc>,
    per_batch: Duration,
) -> Option<DateTime<Utc>> {
    let mut t = now;
    for i in 0..batches {
        t = policy.schedule.next_open(t)?;
        t = later(t, per_batch);
        if i + 1 < batches {
            t = later(t, policy.interval);
        }
    }
    Some(t)
}

/// A run refreshes the pods that existed when it started; pods created later (e.g. while
/// the webhook was down) are the next run's, so a run always ends.
pub(super) fn in_scope(t: &Target, started: Option<DateTime<Utc>>) -> bool {
    match (t.created, started) {
        (Some(c), Some(s)) => c <= s.timestamp(),
        _ => true,
    }
}

pub(super) fn update_progress(s: &mut ArmorRefreshRunStatus, sel: &Selection, others: &[BatchPod]) {
    let in_batch: BTreeSet<&str> = s
        .current_batch
        .iter()
        .flat_map(|b| &b.pods)
        .filter(|p| !p.state.is_settled())
        .map(|p| p.uid.as_str())
        .collect();
    let taken: BTreeSet<&str> = others
        .iter()
        .map(|p| p.uid.as_str())
        .chain(s.given_up.iter().map(String::as_str))
        .collect();
    let pending = sel
        .targets
        .iter()
        .filter(|t| in_scope(t, s.started_at))
        .filter(|t| !in_batch.contains(t.uid.as_str()) && !taken.contains(t.uid.as_str()))
        .count() as u32;
    let flying = s
        .current_batch
        .iter()
        .flat_map(|b| &b.pods)
        .filter(|p| !p.state.is_settled())
        .count() as u32;
    s.progress.pending = pending;
    s.progress.disrupted = s
        .current_batch
        .iter()
        .flat_map(|b| &b.pods)
        .filter(|p| p.is_disrupted())
        .count() as u32
        + s.unhealthy.len() as u32;
    s.progress.skipped = sel.skipped_total();
    if !s.phase.is_terminal() || s.progress.total == 0 {
        s.progress.total = s.progress.refreshed
            + s.progress.without_profile
            + s.progress.failed
            + flying
            + pending;
    }
}

/// The gate is open: plan what the budget allows, evict it, say what the run waits for.
pub(super) fn advance(
    s: &mut ArmorRefreshRunStatus,
    cx: &mut Ctx,
    policy: &ValidPolicy,
    sel: &Selection,
    pods: &HashMap<&str, &LeanPod>,
) {
    start(s, cx, policy, sel);
    set_phase(s, Phase::Batching, "Refreshing", String::new());
    let window = policy.spec.rollout.pacing == Pacing::Window;
    let refill = if window {
        leave_window(s, cx, policy, pods);
        refill(s, cx, policy, sel, pods, true)
    } else {
        s.resting.clear();
        match wave_wait(s, cx, policy) {
            Some(wait) => Refill::Wait(wait),
            None => refill(s, cx, policy, sel, pods, false),
        }
    };
    let limit = Limits::from_policy(policy, s.progress.total.max(sel.targets.len() as u32)).batch;
    evict_planned(s, cx, limit);
    describe(s, cx, refill);
}

/// The first step of a run: its start time and the plan of the whole run.
fn start(s: &mut ArmorRefreshRunStatus, cx: &mut Ctx, policy: &ValidPolicy, sel: &Selection) {
    if s.phase != Phase::Pending && s.started_at.is_some() {
        return;
    }
    let now = cx.now;
    s.started_at.get_or_insert(now);
    s.plan = Some(summary(policy, sel, cx.obs.facts, now, 0, PLAN_PREVIEW));
    s.progress.total = sel.targets.len() as u32;
    cx.event(
        false,
        "Started",
        format!(
            "{} targets, {} batches planned",
            sel.targets.len(),
            s.plan.as_ref().map_or(0, |p| p.batches)
        ),
    );
}

/// Waves: a wave in flight, or the interval after one, holds the next. Closes a settled
/// wave. Returns what the run waits for, if anything.
fn wave_wait(s: &mut ArmorRefreshRunStatus, cx: &mut Ctx, policy: &ValidPolicy) -> Option<String> {
    let now = cx.now;
    if s.current_batch
        .as_ref()
        .is_some_and(|b| b.pods.iter().all(|p| p.state.is_settled()))
    {
        finish_batch(s, cx);
        s.next_batch_at = Some(later(now, policy.interval));
    }
    if let Some(b) = &s.current_batch {
        let flying = b.pods.iter().filter(|p| !p.state.is_settled()).count();
        let deferred = b
            .pods
            .iter()
            .filter(|p| p.state == PodState::Deferred && p.pdb_refused)
            .count();
        return Some(if deferred > 0 {
            format!(
                "batch {}: {flying} in flight, {deferred} deferred by PodDisruptionBudgets",
                b.index
            )
        } else {
            format!("batch {}: waiting for {flying} replacements", b.index)
        });
    }
    if let Some(t) = s.next_batch_at.filter(|t| *t > now) {
        cx.wake_at(t);
        return Some(format!("next batch at {}", t.to_rfc3339()));
    }
    None
}

/// Window: settled pods leave it. Each keeps a line in `recent`; a slot whose pod was
/// evicted rests for `interval`; its replacement stays claimed while a later eviction of
/// its workload could still take it for its own.
fn leave_window(
    s: &mut ArmorRefreshRunStatus,
    cx: &mut Ctx,
    policy: &ValidPolicy,
    pods: &HashMap<&str, &LeanPod>,
) {
    let now = cx.now;
    s.next_batch_at = None;
    let Some(b) = s.current_batch.as_mut() else {
        rest(s, cx, policy.interval, 0);
        return;
    };
    // A wave of a run whose policy switched to the window joins it.
    b.index = 0;
    let (left, stay): (Vec<BatchPod>, Vec<BatchPod>) = std::mem::take(&mut b.pods)
        .into_iter()
        .partition(|p| p.state.is_settled());
    b.pods = stay;
    let mut released = 0;
    for p in left {
        let evicted = p.evicted_at.is_some() || p.uncertain;
        released += u32::from(evicted);
        s.recent.push(Completion {
            pod: format!("{}/{}", p.namespace, p.name),
            state: p.state,
            at: now,
            seconds: p
                .requested_at
                .filter(|_| evicted)
                .map(|t| (now - t).num_seconds().clamp(0, i64::from(u32::MAX)) as u32),
        });
        if !p.replacement.is_empty() {
            s.recent_replacements.push(p.replacement);
        }
    }
    if s.recent.len() > RECENT_LIMIT {
        let drop = s.recent.len() - RECENT_LIMIT;
        s.recent.drain(..drop);
    }
    if s.current_batch.as_ref().is_some_and(|b| b.pods.is_empty()) {
        s.current_batch = None;
    }
    // A replacement created before the earliest eviction still matching (less the second
    // creation times are rounded to) can be nobody else's.
    let earliest = s
        .current_batch
        .iter()
        .flat_map(|b| &b.pods)
        .filter(|p| p.state == PodState::Evicted)
        .filter_map(|p| p.requested_at.or(p.evicted_at))
        .chain([now])
        .min()
        .unwrap_or(now)
        .timestamp()
        - 2;
    s.recent_replacements.retain(|uid| {
        pods.get(uid.as_str())
            .and_then(|p| p.metadata.creation_timestamp.as_ref())
            .is_some_and(|c| c.0.as_second() >= earliest)
    });
    rest(s, cx, policy.interval, released);
}

/// Rest `released` slots for `interval`; forget the rested. Resting slots are kept in
/// at most [`RESTING_GROUPS`] groups: a slot released soon after a group's may join it and
/// rest a little longer, never shorter.
fn rest(s: &mut ArmorRefreshRunStatus, cx: &mut Ctx, interval: Duration, released: u32) {
    let now = cx.now;
    // A shorter interval (a policy edit) shortens the rest of slots resting already.
    let longest = later(now, interval);
    s.resting.retain(|r| r.until > now);
    for r in &mut s.resting {
        r.until = r.until.min(longest);
    }
    if released > 0 && !interval.is_zero() {
        let until = later(now, interval);
        let join = td(interval / RESTING_GROUPS as u32);
        let full = s.resting.len() >= RESTING_GROUPS;
        match s.resting.last_mut() {
            Some(last) if until - last.until <= join || full => {
                last.until = last.until.max(until);
                last.slots = last.slots.saturating_add(released);
            }
            _ => s.resting.push(RestingSlots {
                until,
                slots: released,
            }),
        }
    }
    if let Some(first) = s.resting.first() {
        cx.wake_at(first.until);
    }
}

/// Groups of resting slots a window keeps.
pub(super) const RESTING_GROUPS: usize = 8;

/// What planning found.
pub(super) enum Refill {
    /// Pods were added (`capped`: fewer than the budget allowed, for the status's size).
    Planned { count: usize, capped: bool },
    /// The budget is in use: nothing may be added now.
    Full,
    /// Nothing may be added now, for the reason given.
    Blocked(String),
    /// No target is left to plan.
    Exhausted,
    /// Waves: the wave in flight, or the interval after it, holds the next.
    Wait(String),
}

/// Plans as many targets as the budget allows (less what is in flight, and resting
/// slots), within every planner rule, into the window or a new wave.
fn refill(
    s: &mut ArmorRefreshRunStatus,
    cx: &mut Ctx,
    policy: &ValidPolicy,
    sel: &Selection,
    pods: &HashMap<&str, &LeanPod>,
    window: bool,
) -> Refill {
    let now = cx.now;
    let remaining = match remaining(s, cx, sel) {
        Ok(r) => r,
        Err(refill) => return refill,
    };
    let limits = Limits::from_policy(policy, s.progress.total.max(sel.targets.len() as u32));
    let flight = in_flight(s, cx.obs.others, &sel.unready);
    let resting: u32 = s.resting.iter().map(|r| r.slots).sum();
    let budget = limits
        .batch
        .saturating_sub(flight.total)
        .saturating_sub(resting);
    if budget == 0 && s.unhealthy.is_empty() {
        return Refill::Full;
    }
    let mut refs: Vec<&Target> = plan::order_indices(&remaining)
        .into_iter()
        .map(|i| remaining[i])
        .collect();
    if window {
        plan::spread_zones(&mut refs, &flight);
    }
    let mut ctx = context(cx.obs.facts);
    unseen_evictions(s, sel, pods, &mut ctx);
    let workload = limits.by_workload;
    let (mut pods, capped) = fit_in_status(s, budget, |k| {
        plan::next_batch(&refs, &limits, &flight, &ctx, k)
            .iter()
            .map(|&i| batch_pod(refs[i], workload))
            .collect()
    });
    if pods.is_empty() {
        return Refill::Blocked(blocked_message(s, sel, capped, budget));
    }
    let readiness = Readiness::new(cx.obs.facts, &pods);
    // Pods of the same workload this run took down and that are not back count as Ready
    // before: their replacements are part of what makes the workload whole again.
    let mut away: HashMap<(&str, &str), u32> = HashMap::new();
    for q in s
        .current_batch
        .iter()
        .flat_map(|b| &b.pods)
        .filter(|q| q.is_disrupted())
        .chain(&s.unhealthy)
    {
        *away.entry((&q.namespace, &q.owner)).or_default() += 1;
    }
    for p in pods.iter_mut().filter(|p| !p.uid.is_empty()) {
        let away = away
            .get(&(p.namespace.as_str(), p.owner.as_str()))
            .copied()
            .unwrap_or(0);
        p.ready_before = Some(readiness.of(p).saturating_add(away));
        p.wanted_before = desired(cx.obs.facts, &p.namespace, &p.owner);
    }
    let count = pods.len();
    match s.current_batch.as_mut() {
        Some(b) if window => b.pods.extend(pods),
        _ => {
            let index = if window { 0 } else { next_index(s) };
            if !window {
                let names: Vec<String> = pods
                    .iter()
                    .map(|p| format!("{}/{}", p.namespace, p.name))
                    .collect();
                cx.event(
                    false,
                    "BatchStarted",
                    format!("batch {index}: {}", names.join(", ")),
                );
            }
            s.current_batch = Some(BatchStatus {
                index,
                started_at: now,
                pods,
            });
        }
    }
    s.next_batch_at = None;
    Refill::Planned { count, capped }
}

/// Evictions of this run that the facts do not show yet (the pod still there, not
/// terminating: the facts of a pass predate its later steps), and pods about to be evicted,
/// are not in their PDBs' status either: the planner must not spend that budget again.
fn unseen_evictions(
    s: &ArmorRefreshRunStatus,
    sel: &Selection,
    pods: &HashMap<&str, &LeanPod>,
    ctx: &mut Context,
) {
    let unseen: BTreeSet<&str> = s
        .current_batch
        .iter()
        .flat_map(|b| &b.pods)
        .filter(|p| p.state.is_disrupting() || p.state == PodState::Planned)
        .filter(|p| {
            pods.get(p.uid.as_str())
                .is_some_and(|pod| !select::is_terminating(pod))
        })
        .map(|p| p.uid.as_str())
        .collect();
    if unseen.is_empty() {
        return;
    }
    for t in sel
        .targets
        .iter()
        .filter(|t| unseen.contains(t.uid.as_str()))
    {
        for &i in &t.pdbs {
            if let Some(a) = ctx.pdb_allowed.get_mut(i) {
                *a -= 1;
            }
        }
    }
}

fn next_index(s: &ArmorRefreshRunStatus) -> u32 {
    s.history
        .last()
        .map_or(0, |h| h.index)
        .max(s.current_batch.as_ref().map_or(0, |b| b.index))
        .saturating_add(1)
}

/// Targets that may be planned: in the run's scope, Ready, and not in flight here or in
/// another run, nor given up. `Err` says why there are none.
fn remaining<'s>(
    s: &ArmorRefreshRunStatus,
    cx: &mut Ctx,
    sel: &'s Selection,
) -> Result<Vec<&'s Target>, Refill> {
    let taken: BTreeSet<&str> = cx.obs.others.iter().map(|p| p.uid.as_str()).collect();
    let mine: BTreeSet<&str> = s
        .unhealthy
        .iter()
        .map(|p| p.uid.as_str())
        .chain(s.given_up.iter().map(String::as_str))
        .chain(
            s.current_batch
                .iter()
                .flat_map(|b| &b.pods)
                .map(|p| p.uid.as_str()),
        )
        .collect();
    let mut remaining: Vec<&Target> = sel
        .targets
        .iter()
        .filter(|t| in_scope(t, s.started_at))
        .filter(|t| !taken.contains(t.uid.as_str()) && !mine.contains(t.uid.as_str()))
        .collect();
    // Targets still starting are evicted once Ready, never before (that would only make
    // them start again); past the ready timeout they are skipped as broken.
    let starting = remaining.iter().filter(|t| !t.ready).count();
    remaining.retain(|t| t.ready);
    // A workload being deleted or scaled down removes pods itself: evicting one of its
    // pods now could only take a pod it keeps.
    let settling = settling(cx.obs.facts);
    let before = remaining.len();
    if !settling.is_empty() {
        remaining.retain(|t| {
            !settling.contains(&(
                t.namespace.as_str(),
                t.owner.kind.as_str(),
                t.owner.name.as_str(),
            ))
        });
    }
    let held = before - remaining.len();
    if !remaining.is_empty() {
        return Ok(remaining);
    }
    let mut waits = vec![];
    if starting > 0 {
        waits.push(format!("{starting} targets still starting to become Ready"));
    }
    if held > 0 {
        waits.push(format!(
            "{held} targets of workloads being scaled down or deleted"
        ));
    }
    if !waits.is_empty() {
        return Err(Refill::Blocked(format!(
            "waiting for {}",
            waits.join(" and ")
        )));
    }
    let elsewhere = sel
        .targets
        .iter()
        .filter(|t| in_scope(t, s.started_at))
        .any(|t| taken.contains(t.uid.as_str()));
    Err(if elsewhere {
        Refill::Blocked("the remaining targets are in another run's batch".into())
    } else {
        Refill::Exhausted
    })
}

/// Deployments and StatefulSets being deleted, or with more pods than they want (scaling
/// down, or a rollout's surge), as (namespace, kind, name).
fn settling(facts: &ClusterFacts) -> BTreeSet<(&str, &str, &str)> {
    let busy = |deleting: bool, want: Option<i32>, have: Option<i32>| {
        deleting || have.unwrap_or(0) > want.unwrap_or(1)
    };
    let deployments = facts.deployments.iter().filter(|(_, d)| {
        busy(
            d.metadata.deletion_timestamp.is_some(),
            d.spec.as_ref().and_then(|s| s.replicas),
            d.status.as_ref().and_then(|s| s.replicas),
        )
    });
    let sets = facts.statefulsets.iter().filter(|(_, d)| {
        busy(
            d.metadata.deletion_timestamp.is_some(),
            d.spec.as_ref().and_then(|s| s.replicas),
            d.status.as_ref().map(|s| s.replicas),
        )
    });
    deployments
        .map(|((ns, name), _)| (ns.as_str(), "Deployment", name.as_str()))
        .chain(sets.map(|((ns, name), _)| (ns.as_str(), "StatefulSet", name.as_str())))
        .collect()
}

fn blocked_message(
    s: &ArmorRefreshRunStatus,
    sel: &Selection,
    capped: bool,
    budget: u32,
) -> String {
    if capped {
        let flying = s
            .current_batch
            .iter()
            .flat_map(|b| &b.pods)
            .filter(|p| !p.state.is_settled())
            .count();
        format!(
            "the run's status is at its size limit ({} KiB); waiting for {flying} pods in flight to settle and {} failed replacements to recover",
            STATUS_BUDGET / 1024,
            s.unhealthy.len()
        )
    } else if budget == 0 {
        format!(
            "{} failed replacements still count as disrupted; waiting for them to recover",
            s.unhealthy.len()
        )
    } else if sel.unready.is_empty() {
        "no target may start now (StatefulSet not Ready, node or zone limit, or leader waiting)"
            .into()
    } else {
        // Unready pods hold their node's and zone's limits: say which, so a person can
        // fix or exclude them (the run waits rather than disrupt those places more).
        let names: Vec<String> = sel.unready.iter().take(3).map(Target::key).collect();
        format!(
            "no target may start now (StatefulSet not Ready, node or zone limit, or leader waiting); {} unready pods count against the node and zone limits: {}",
            sel.unready.len(),
            names.join(", ")
        )
    }
}

/// Evicts every Planned pod (written ahead in this same step: the shell persists the status
/// before it acts) while a slot is free, but not too close to the run's start.
fn evict_planned(s: &mut ArmorRefreshRunStatus, cx: &mut Ctx, limit: u32) {
    if let Some(next) = too_soon(s, cx.now) {
        cx.wake_at(next);
        return;
    }
    let Some(b) = s.current_batch.as_mut() else {
        return;
    };
    let token = b.started_at.to_rfc3339();
    // Planning leaves room for every Planned pod; this holds if the budget shrank since.
    let mut holding = b
        .pods
        .iter()
        .filter(|p| p.state != PodState::Planned && holds_slot(p))
        .count()
        + s.unhealthy.len();
    for p in b.pods.iter_mut().filter(|p| p.state == PodState::Planned) {
        if holding >= limit as usize {
            // Stays Planned, holding its place: evicted once a slot frees.
            p.message = "waiting for a free slot".into();
            cx.wake_at(later(cx.now, POLL));
            continue;
        }
        holding += 1;
        p.state = PodState::Evicting;
        p.requested_at = Some(cx.now);
        if p.uid.is_empty() {
            let (kind, name) = owner_parts(&p.owner);
            cx.actions.push(Action::Restart {
                namespace: p.namespace.clone(),
                kind: kind.to_string(),
                name: name.to_string(),
                token: token.clone(),
            });
        } else {
            cx.actions.push(Action::Evict {
                namespace: p.namespace.clone(),
                name: p.name.clone(),
                uid: p.uid.clone(),
                owner: p.owner.clone(),
            });
        }
    }
}

/// The run's message, and its end once nothing is left.
fn describe(s: &mut ArmorRefreshRunStatus, cx: &mut Ctx, refill: Refill) {
    let now = cx.now;
    let set = s.current_batch.as_ref();
    let flying = set.map_or(0, |b| {
        b.pods.iter().filter(|p| !p.state.is_settled()).count()
    });
    let deferred = set.map_or(0, |b| {
        b.pods
            .iter()
            .filter(|p| p.state == PodState::Deferred && p.pdb_refused)
            .count()
    });
    let retrying = set.map_or(0, |b| {
        b.pods
            .iter()
            .filter(|p| p.state == PodState::Deferred && !p.pdb_refused)
            .count()
    });
    let window = set.is_none_or(|b| b.index == 0);
    let mut msg = match &refill {
        Refill::Exhausted if set.is_none() => {
            set_phase(
                s,
                Phase::Completed,
                "Done",
                format!(
                    "{} refreshed, {} failed; no target left",
                    s.progress.refreshed, s.progress.failed
                ),
            );
            s.completed_at = Some(now);
            s.next_batch_at = None;
            return;
        }
        Refill::Wait(why) => {
            s.message = why.clone();
            return;
        }
        Refill::Blocked(why) if !window || flying == 0 => {
            cx.wake_at(later(now, POLL));
            s.message = why.clone();
            return;
        }
        Refill::Planned { count, capped } if !window => {
            let index = set.map_or(0, |b| b.index);
            s.message = if *capped {
                format!(
                    "batch {index}: {count} planned (capped to keep the run's status under {} KiB)",
                    STATUS_BUDGET / 1024
                )
            } else {
                format!("batch {index}: {count} planned")
            };
            return;
        }
        _ => format!("{flying} in flight"),
    };
    if deferred > 0 {
        msg.push_str(&format!(", {deferred} deferred by PodDisruptionBudgets"));
    }
    if retrying > 0 {
        msg.push_str(&format!(", {retrying} to retry after an error"));
    }
    let resting: u32 = s.resting.iter().map(|r| r.slots).sum();
    if resting > 0 {
        msg.push_str(&format!(", {resting} slots resting"));
    }
    match refill {
        Refill::Exhausted => msg.push_str("; no target left to start"),
        Refill::Blocked(why) => {
            cx.wake_at(later(now, POLL));
            msg.push_str(&format!("; {why}"));
        }
        Refill::Planned { capped: true, .. } => msg.push_str(&format!(
            "; capped to keep the run's status under {} KiB",
            STATUS_BUDGET / 1024
        )),
        _ => {}
    }
    s.message = msg;
}
