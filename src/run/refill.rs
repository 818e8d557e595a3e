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
    // Other runs' pods limit nodes, zones and workloads, not this run's batch size.
    f.total = mine.len() as u32;
    f
}

/// What the planner needs of the cluster besides targets: PDB budgets, unready StatefulSets.
pub fn context(facts: &ClusterFacts) -> Context {
    let pdb_allowed = facts
        .pdbs
        .iter()
        .map(|p| p.status.as_ref().map_or(0, |s| s.disruptions_allowed))
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
    s.progress.skipped = sel.skipped_total();
    if !s.phase.is_terminal() || s.progress.total == 0 {
        s.progress.total = s.progress.refreshed
            + s.progress.without_profile
            + s.progress.failed
            + flying
            + pending;
    }
}

/// The gate is open: evict what the batch planned, close a settled batch, plan the next.
pub(super) fn advance(
    s: &mut ArmorRefreshRunStatus,
    cx: &mut Ctx,
    policy: &ValidPolicy,
    sel: &Selection,
) {
    let now = cx.now;
    if s.phase == Phase::Pending || s.started_at.is_none() {
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
    set_phase(s, Phase::Batching, "Refreshing", String::new());

    // Evict what the batch in flight planned, but not too close to the run's start.
    let soon = too_soon(s, now);
    if let Some(next) = soon {
        cx.wake_at(next);
    }
    if let Some(b) = s.current_batch.as_mut().filter(|_| soon.is_none()) {
        for p in b.pods.iter_mut().filter(|p| p.state == PodState::Planned) {
            p.state = PodState::Evicting;
            p.requested_at = Some(now);
            if p.uid.is_empty() {
                let (kind, name) = owner_parts(&p.owner);
                cx.actions.push(Action::Restart {
                    namespace: p.namespace.clone(),
                    kind: kind.to_string(),
                    name: name.to_string(),
                    token: b.started_at.to_rfc3339(),
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
    let settled = s
        .current_batch
        .as_ref()
        .is_some_and(|b| b.pods.iter().all(|p| p.state.is_settled()));
    if settled {
        finish_batch(s, cx);
        s.next_batch_at = Some(later(now, policy.interval));
    }
    if let Some(b) = &s.current_batch {
        let flying = b.pods.iter().filter(|p| !p.state.is_settled()).count();
        let deferred = b
            .pods
            .iter()
            .filter(|p| p.state == PodState::Deferred)
            .count();
        s.message = if deferred > 0 {
            format!(
                "batch {}: {flying} in flight, {deferred} deferred by PodDisruptionBudgets",
                b.index
            )
        } else {
            format!("batch {}: waiting for {flying} replacements", b.index)
        };
        return;
    }

    // Plan the next batch.
    if let Some(t) = s.next_batch_at.filter(|t| *t > now) {
        cx.wake_at(t);
        s.message = format!("next batch at {}", t.to_rfc3339());
        return;
    }
    let taken: BTreeSet<&str> = cx.obs.others.iter().map(|p| p.uid.as_str()).collect();
    let unhealthy: BTreeSet<&str> = s
        .unhealthy
        .iter()
        .map(|p| p.uid.as_str())
        .chain(s.given_up.iter().map(String::as_str))
        .collect();
    let mut remaining: Vec<Target> = sel
        .targets
        .iter()
        .filter(|t| in_scope(t, s.started_at))
        .filter(|t| !taken.contains(t.uid.as_str()) && !unhealthy.contains(t.uid.as_str()))
        .cloned()
        .collect();
    // Targets still starting are evicted once Ready, never before (that would only make
    // them start again); past the ready timeout they are skipped as broken.
    let starting = remaining.iter().filter(|t| !t.ready).count();
    remaining.retain(|t| t.ready);
    if remaining.is_empty() && starting > 0 {
        s.message = format!("waiting for {starting} targets still starting to become Ready");
        cx.wake_at(later(now, POLL));
        return;
    }
    if remaining.is_empty() {
        if !sel
            .targets
            .iter()
            .filter(|t| in_scope(t, s.started_at))
            .any(|t| taken.contains(t.uid.as_str()))
        {
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
        } else {
            s.message = "the remaining targets are in another run's batch".into();
            cx.wake_at(later(now, POLL));
        }
        return;
    }
    let limits = Limits::from_policy(policy, s.progress.total.max(sel.targets.len() as u32));
    let flight = in_flight(s, cx.obs.others, &sel.unready);
    let budget = limits.batch.saturating_sub(flight.total);
    plan::order(&mut remaining);
    let refs: Vec<&Target> = remaining.iter().collect();
    let ctx = context(cx.obs.facts);
    let workload = limits.by_workload;
    let (mut pods, capped) = fit_in_status(s, budget, |k| {
        plan::next_batch(&refs, &limits, &flight, &ctx, k)
            .iter()
            .map(|&i| batch_pod(refs[i], workload))
            .collect()
    });
    let readiness = Readiness::new(cx.obs.facts, &pods);
    for p in pods.iter_mut().filter(|p| !p.uid.is_empty()) {
        p.ready_before = Some(readiness.of(p));
        p.wanted_before = desired(cx.obs.facts, &p.namespace, &p.owner);
    }
    if pods.is_empty() {
        s.message = if capped {
            format!(
                "the run's status is at its size limit ({} KiB); waiting for {} failed replacements to recover",
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
        };
        cx.wake_at(later(now, POLL));
        return;
    }
    let index = s
        .history
        .last()
        .map_or(0, |h| h.index)
        .max(s.current_batch.as_ref().map_or(0, |b| b.index))
        .saturating_add(1);
    let names: Vec<String> = pods
        .iter()
        .map(|p| format!("{}/{}", p.namespace, p.name))
        .collect();
    cx.event(
        false,
        "BatchStarted",
        format!("batch {index}: {}", names.join(", ")),
    );
    s.message = if capped {
        format!(
            "batch {index}: {} planned (capped to keep the run's status under {} KiB)",
            pods.len(),
            STATUS_BUDGET / 1024
        )
    } else {
        format!("batch {index}: {} planned", pods.len())
    };
    s.current_batch = Some(BatchStatus {
        index,
        started_at: now,
        pods,
    });
    s.next_batch_at = None;
}
