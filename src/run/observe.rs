//! Following what is in flight: eviction answers, replacements, timeouts, recoveries.

use super::*;

/// Pods that may replace an evicted one, by (namespace, owner as `Kind/name`), oldest
/// first: built once per step, so matching a batch costs one pass over the pods instead
/// of one pass per evicted pod (10,000 × 100,000 at scale).
pub(super) struct Candidates<'a> {
    by_owner: HashMap<(String, String), Vec<(i64, &'a LeanPod)>>,
}

impl<'a> Candidates<'a> {
    pub(super) fn new(
        facts: &'a ClusterFacts,
        wanted: &BTreeSet<(String, String)>,
    ) -> Candidates<'a> {
        let mut by_owner: HashMap<(String, String), Vec<(i64, &'a LeanPod)>> = HashMap::new();
        let namespaces: BTreeSet<&str> = wanted.iter().map(|(n, _)| n.as_str()).collect();
        for cand in facts.pods.iter().map(|p| p.as_ref()) {
            let Some(ns) = cand.metadata.namespace.as_deref() else {
                continue;
            };
            if !namespaces.contains(ns) || select::is_terminating(cand) {
                continue;
            }
            let Some(created) = cand.metadata.creation_timestamp.as_ref() else {
                continue;
            };
            let key = (
                ns.to_string(),
                compliance::owner_of(cand, Some(facts)).to_string(),
            );
            if wanted.contains(&key) {
                by_owner
                    .entry(key)
                    .or_default()
                    .push((created.0.as_second(), cand));
            }
        }
        for v in by_owner.values_mut() {
            v.sort_by(|a, b| {
                (a.0, a.1.metadata.name.as_deref()).cmp(&(b.0, b.1.metadata.name.as_deref()))
            });
        }
        Candidates { by_owner }
    }

    /// The replacement of an evicted pod: the first pod of the same owner created at or
    /// after its eviction was requested that no other eviction has taken (first come,
    /// first matched, so one eviction never takes another's replacement). `None` while
    /// there is none yet; otherwise the pod, whether it is Ready, and whether it has its
    /// profile (one created while the webhook was down has not). A pod without its profile
    /// that existed when the run started is a target, never a replacement.
    pub(super) fn find(
        &self,
        p: &BatchPod,
        since: DateTime<Utc>,
        policy: Option<&ValidPolicy>,
        facts: &ClusterFacts,
        taken: &BTreeSet<String>,
        run_started: Option<DateTime<Utc>>,
    ) -> Option<(&'a LeanPod, bool, bool)> {
        // creationTimestamp has one-second resolution.
        let since = since.timestamp() - 1;
        let compliant = |cand: &LeanPod| match policy {
            Some(pol) => {
                let owner = compliance::owner_of(cand, Some(facts));
                compliance::check(pol, cand, &owner, &facts.namespace_labels(&p.namespace))
                    .is_compliant()
            }
            None => true,
        };
        let list = self.by_owner.get(&(p.namespace.clone(), p.owner.clone()))?;
        // A DaemonSet's replacement is the one on the evicted pod's node.
        let daemon = p.owner.starts_with("DaemonSet/");
        let on_node = |cand: &LeanPod| {
            !daemon || cand.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(&p.node)
        };
        list.iter()
            .filter(|(created, cand)| {
                let uid = cand.metadata.uid.as_deref().unwrap_or_default();
                uid != p.uid && !taken.contains(uid) && *created >= since && on_node(cand)
            })
            .find_map(|&(created, cand)| {
                let with_profile = compliant(cand);
                let older_target =
                    !with_profile && run_started.is_some_and(|st| created <= st.timestamp());
                (!older_target).then_some((cand, select::is_ready(cand), with_profile))
            })
    }
}

/// A replacement bound to a node where the policy injects nothing (not an AppArmor node with
/// an agent): it carries no profile, and needs none.
pub(super) fn lands_unprofiled(policy: &ValidPolicy, facts: &ClusterFacts, pod: &LeanPod) -> bool {
    let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) else {
        return false;
    };
    !compliance::node_enforces(policy, facts.node_labels(node), facts.agents.contains(node))
}

pub(super) fn ready_timeout(policy: Option<&ValidPolicy>, p: &BatchPod) -> Duration {
    match policy {
        Some(pol) if p.volumes => pol.volume_ready_timeout,
        Some(pol) => pol.ready_timeout,
        None => Duration::from_secs(300),
    }
}

/// A workload restarted by RolloutRestart is done when none of its pods is a target any
/// more and all of them are Ready.
pub(super) fn workload_done(
    p: &BatchPod,
    facts: &ClusterFacts,
    selection: Option<&Selection>,
) -> bool {
    let Some(sel) = selection else { return false };
    if sel
        .targets
        .iter()
        .any(|t| t.namespace == p.namespace && t.owner.to_string() == p.owner)
    {
        return false;
    }
    workload_whole(p, facts)
}

/// Every other pod of the entry's workload is Ready and not being deleted (the rule for
/// entries written before `readyBefore` was recorded).
pub(super) fn workload_whole(p: &BatchPod, facts: &ClusterFacts) -> bool {
    facts
        .pods
        .iter()
        .filter(|pod| {
            pod.namespace().as_deref() == Some(p.namespace.as_str())
                && pod.metadata.uid.as_deref() != Some(p.uid.as_str())
        })
        .filter(|pod| compliance::owner_of(pod, Some(facts)).to_string() == p.owner)
        .all(|pod| select::is_ready(pod) && !select::is_terminating(pod))
}

/// Ready pods (not being deleted) of some workloads, by (namespace, `Kind/name`), counted
/// in one pass over the pods.
pub(crate) struct Readiness {
    ready: HashMap<(String, String), u32>,
}

impl Readiness {
    pub(crate) fn new<'p>(
        facts: &ClusterFacts,
        wanted: impl IntoIterator<Item = &'p BatchPod>,
    ) -> Readiness {
        let mut ready: HashMap<(String, String), u32> = wanted
            .into_iter()
            .filter(|p| !p.uid.is_empty())
            .map(|p| ((p.namespace.clone(), p.owner.clone()), 0))
            .collect();
        if ready.is_empty() {
            return Readiness { ready };
        }
        let namespaces: BTreeSet<String> = ready.keys().map(|(n, _)| n.clone()).collect();
        for pod in facts.pods.iter() {
            let Some(ns) = pod.metadata.namespace.as_deref() else {
                continue;
            };
            if !namespaces.contains(ns) || !select::is_ready(pod) || select::is_terminating(pod) {
                continue;
            }
            let key = (
                ns.to_string(),
                compliance::owner_of(pod, Some(facts)).to_string(),
            );
            if let Some(n) = ready.get_mut(&key) {
                *n += 1;
            }
        }
        Readiness { ready }
    }

    pub(super) fn of(&self, p: &BatchPod) -> u32 {
        self.ready
            .get(&(p.namespace.clone(), p.owner.clone()))
            .copied()
            .unwrap_or(0)
    }

    /// The entry's workload is whole again: as many Ready pods as when the pod was planned,
    /// or as many as it now wants if it was scaled down. Pods unready before the eviction
    /// (an unrelated crash loop) are not this run's to wait for.
    pub(super) fn whole(&self, p: &BatchPod, facts: &ClusterFacts) -> bool {
        match p.ready_before {
            Some(before) => {
                let want = desired(facts, &p.namespace, &p.owner).map_or(before, |d| d.min(before));
                self.of(p) >= want
            }
            None => workload_whole(p, facts),
        }
    }

    /// The entry's workload was scaled down below what it wanted when the pod was planned,
    /// or deleted, and has every pod it wants now: nothing will replace this one. (A rolling
    /// update's surge going away is no scale-down: the workload wants as many as before.)
    pub(super) fn not_wanted(&self, p: &BatchPod, facts: &ClusterFacts) -> bool {
        let (Some(before), Some(want)) = (p.wanted_before, desired(facts, &p.namespace, &p.owner))
        else {
            return false;
        };
        want < before && self.of(p) >= want
    }
}

/// Replicas a workload wants now, from its own object (Some(0) once it is deleted); `None`
/// for kinds whose size the operator does not read (Jobs, other API groups, bare pods).
pub(super) fn desired(facts: &ClusterFacts, ns: &str, owner: &str) -> Option<u32> {
    let (kind, name) = owner_parts(owner);
    let key = (ns.to_string(), name.to_string());
    let n = |r: Option<i32>| Some(r.unwrap_or(1).max(0) as u32);
    match kind {
        "Deployment" => facts
            .deployments
            .get(&key)
            .map_or(Some(0), |d| n(d.spec.as_ref().and_then(|s| s.replicas))),
        "ReplicaSet" => facts
            .replicasets
            .get(&key)
            .map_or(Some(0), |r| n(r.spec.as_ref().and_then(|s| s.replicas))),
        "StatefulSet" => facts
            .statefulsets
            .get(&key)
            .map_or(Some(0), |s| n(s.spec.as_ref().and_then(|s| s.replicas))),
        "DaemonSet" => facts.daemonsets.get(&key).map_or(Some(0), |d| {
            Some(
                d.status
                    .as_ref()
                    .map_or(0, |s| s.desired_number_scheduled)
                    .max(0) as u32,
            )
        }),
        _ => None,
    }
}

/// What a step knows while it follows the pods in flight, built once per step.
struct Follow<'a> {
    now: DateTime<Utc>,
    facts: &'a ClusterFacts,
    policy: Option<&'a ValidPolicy>,
    selection: Option<&'a Selection>,
    pods: &'a HashMap<&'a str, &'a LeanPod>,
    /// The policy's targets by UID (`None` without a valid policy).
    targets: Option<HashMap<&'a str, &'a Target>>,
    candidates: Candidates<'a>,
    readiness: Readiness,
    /// Replacements already matched: a replacement stands for one eviction only, across
    /// the pods in flight and those that just left (whose replacements may have been
    /// created in the same second as these evictions).
    claimed: BTreeSet<String>,
    started: Option<DateTime<Utc>>,
    fallback_since: DateTime<Utc>,
    /// Disruptions each PDB still allows in this step, for pods it refused: as many retry
    /// as it allows, not every one of them (the rest would only be refused again).
    pdb_left: HashMap<usize, i32>,
}

pub(super) fn observe_batch(
    s: &mut ArmorRefreshRunStatus,
    cx: &mut Ctx,
    policy: Option<&ValidPolicy>,
    pods: &HashMap<&str, &LeanPod>,
    selection: Option<&Selection>,
) {
    let Some(mut batch) = s.current_batch.take() else {
        return;
    };
    let facts = cx.obs.facts;
    // Pods that may be Evicted by the time the loop reaches them (a lost outcome turns
    // Evicting into Evicted in the same pass, and is matched from the next step on).
    let wanted: BTreeSet<(String, String)> = batch
        .pods
        .iter()
        .filter(|p| p.state == PodState::Evicted && !p.uid.is_empty())
        .map(|p| (p.namespace.clone(), p.owner.clone()))
        .collect();
    let mut f = Follow {
        now: cx.now,
        facts,
        policy,
        selection,
        pods,
        targets: selection.map(|sel| sel.targets.iter().map(|t| (t.uid.as_str(), t)).collect()),
        candidates: Candidates::new(facts, &wanted),
        readiness: Readiness::new(facts, batch.pods.iter().filter(|p| !p.state.is_settled())),
        claimed: batch
            .pods
            .iter()
            .map(|p| p.replacement.clone())
            .chain(s.recent_replacements.iter().cloned())
            .filter(|u| !u.is_empty())
            .collect(),
        started: s.started_at,
        fallback_since: batch.started_at,
        pdb_left: HashMap::new(),
    };
    // Match replacements in the order the evictions were requested: first come, first matched.
    let mut order: Vec<usize> = (0..batch.pods.len()).collect();
    order.sort_by_key(|&i| batch.pods[i].requested_at);
    for i in order {
        let p = &mut batch.pods[i];
        let was = p.state;
        match p.state {
            PodState::Planned | PodState::Deferred => follow_waiting(p, cx, &mut f),
            PodState::Evicting => follow_evicting(p, s, cx, &f),
            PodState::Evicted => follow_evicted(p, s, cx, &mut f),
            PodState::Refreshed | PodState::Failed | PodState::Gone => {}
        }
        if p.state == PodState::Gone && was != PodState::Gone {
            s.progress.gone += 1;
        }
    }
    s.current_batch = Some(batch);
}

/// The pod itself: `None` when it is gone or being deleted (never for a workload entry).
fn live<'a>(p: &BatchPod, f: &Follow<'a>) -> Option<Option<&'a LeanPod>> {
    if p.uid.is_empty() {
        return None;
    }
    let pod = f.pods.get(p.uid.as_str()).copied();
    Some(pod.filter(|pod| !select::is_terminating(pod)))
}

/// Planned or Deferred: not evicted (unless a lost answer says it may have been).
fn follow_waiting(p: &mut BatchPod, cx: &mut Ctx, f: &mut Follow) {
    let Some(pod) = live(p, f) else { return };
    if pod.is_none() && p.uncertain {
        // An earlier request got no answer, and the pod is gone: count it as ours.
        mark_evicted(p, f.now, "evicted (the answer to its eviction was lost)");
    } else if pod.is_none() {
        p.state = PodState::Gone;
        p.message = "went away without being evicted by this run".into();
    } else if f
        .targets
        .as_ref()
        .is_some_and(|t| !t.contains_key(p.uid.as_str()))
    {
        p.state = PodState::Gone;
        p.message = "no longer a target of the policy".into();
    } else if p.state == PodState::Deferred {
        match p.retry_at {
            Some(t) if t > f.now => match budgets_allow_at(p, f) {
                Some(at) if at <= f.now => {
                    take_budgets(p, f);
                    p.state = PodState::Planned;
                }
                Some(at) => cx.wake_at(at.min(t)),
                None => cx.wake_at(t),
            },
            _ => p.state = PodState::Planned,
        }
    }
}

/// For a pod a PodDisruptionBudget refused: when it may be tried again because every
/// budget of it allows a disruption now (their status lags the pods they count, so this is
/// usually well before its backoff ends), but not sooner than [`REFUSAL_GAP`] after the
/// refusal. `None` while some budget allows none, or for other deferrals.
fn budgets_allow_at(p: &BatchPod, f: &Follow) -> Option<DateTime<Utc>> {
    if !p.pdb_refused {
        return None;
    }
    let t = f.targets.as_ref()?.get(p.uid.as_str())?;
    let allowed = |i: &usize| {
        f.pdb_left
            .get(i)
            .copied()
            .unwrap_or_else(|| pdb_allows(f.facts, *i))
            > 0
    };
    (!t.pdbs.is_empty() && t.pdbs.iter().all(allowed))
        .then(|| later(p.requested_at.unwrap_or(f.now), REFUSAL_GAP))
}

/// Disruptions a PDB allows now by its status (none while its status predates its spec).
fn pdb_allows(facts: &ClusterFacts, i: usize) -> i32 {
    crate::run::context_allowed(facts.pdbs.get(i).map(|b| b.as_ref()))
}

/// The pod is retried: one disruption of each of its budgets is spoken for in this step.
fn take_budgets(p: &BatchPod, f: &mut Follow) {
    let Some(t) = f.targets.as_ref().and_then(|m| m.get(p.uid.as_str())) else {
        return;
    };
    for &i in &t.pdbs {
        let left = f
            .pdb_left
            .entry(i)
            .or_insert_with(|| pdb_allows(f.facts, i));
        *left -= 1;
    }
}

/// Evicting: the answer to the request, or what the cluster says after a lost one.
fn follow_evicting(p: &mut BatchPod, s: &mut ArmorRefreshRunStatus, cx: &mut Ctx, f: &Follow) {
    let workload = p.uid.is_empty();
    let gone = live(p, f).is_some_and(|pod| pod.is_none());
    let key = result_key(p);
    let result = cx.obs.results.get(&key);
    if result.is_none() && cx.obs.pending.contains(&key) {
        // Asked, not answered yet: the answer decides, not a guess from the cluster.
        return;
    }
    if on_outcome(p, cx, result, workload, gone) {
        s.progress.failed += 1;
        if !p.uid.is_empty() {
            s.given_up.push(p.uid.clone());
        }
        // Its eviction may have happened: it counts as disrupted until whole.
        if p.uncertain {
            s.unhealthy.push(p.clone());
        }
    }
}

/// Evicted: its replacement, a scale-down that means none is coming, or the ready timeout.
fn follow_evicted(p: &mut BatchPod, s: &mut ArmorRefreshRunStatus, cx: &mut Ctx, f: &mut Follow) {
    if p.uid.is_empty() {
        if workload_done(p, f.facts, f.selection) {
            p.state = PodState::Refreshed;
            s.progress.refreshed += 1;
            p.message = "every pod of the workload is Ready with its profile".into();
        }
    } else if p.owner.starts_with("Pod/") {
        if !f.pods.contains_key(p.uid.as_str()) {
            p.state = PodState::Refreshed;
            s.progress.refreshed += 1;
            p.message = "bare pod removed (nothing recreates it)".into();
        }
    } else {
        match_replacement(p, s, cx, f);
        if p.state == PodState::Evicted && f.readiness.not_wanted(p, f.facts) {
            // A scale-down or a deleted workload: no replacement is coming, and none
            // is missing.
            p.state = PodState::Gone;
            p.message = "its workload was scaled down or deleted: nothing replaces it".into();
        }
    }
    if p.state == PodState::Evicted {
        time_out(p, s, cx, f);
    }
}

/// A Ready replacement settles the pod: Refreshed (with its profile, or rightly without
/// one), or counted `withoutProfile`.
fn match_replacement(
    p: &mut BatchPod,
    s: &mut ArmorRefreshRunStatus,
    cx: &mut Ctx,
    f: &mut Follow,
) {
    // Replacements are matched from when the eviction was requested: the pod may be
    // replaced before the Eviction API call even returns.
    let since = p.requested_at.or(p.evicted_at).unwrap_or(f.fallback_since);
    let Some((r, ready, with_profile)) = f
        .candidates
        .find(p, since, f.policy, f.facts, &f.claimed, f.started)
    else {
        return;
    };
    // Reserved for this eviction even before it is Ready.
    let uid = r.metadata.uid.clone().unwrap_or_default();
    f.claimed.insert(uid.clone());
    if !ready {
        return;
    }
    p.state = PodState::Refreshed;
    p.replacement = uid;
    if with_profile {
        s.progress.refreshed += 1;
        p.message = format!("replaced by {}", r.name_any());
    } else if f
        .policy
        .is_some_and(|pol| lands_unprofiled(pol, f.facts, r))
    {
        // Scheduled where no agent loads profiles: rightly without one, and not a target
        // there.
        s.progress.refreshed += 1;
        let node = r.spec.as_ref().and_then(|s| s.node_name.as_deref());
        p.message = clip(
            format!(
                "replaced by {} on {}, where the policy injects nothing",
                r.name_any(),
                node.unwrap_or("?")
            ),
            POD_MESSAGE_MAX,
        );
    } else {
        // Capacity is back, but the webhook did not inject (down or misconfigured). Not a
        // failure of the replacement: the next run refreshes it (this one never targets
        // pods created after it started).
        s.progress.without_profile += 1;
        p.message = format!(
            "replaced by {} without its profile (was the webhook down?)",
            r.name_any()
        );
        cx.event(
            true,
            "ReplacementWithoutProfile",
            format!("{}/{}: {}", p.namespace, p.name, p.message),
        );
    }
}

/// No Ready replacement within the ready timeout: Failed, and disrupted until whole.
fn time_out(p: &mut BatchPod, s: &mut ArmorRefreshRunStatus, cx: &mut Ctx, f: &Follow) {
    let since = p.requested_at.or(p.evicted_at).unwrap_or(f.fallback_since);
    let from = p.evicted_at.unwrap_or(since);
    let deadline = later(from, ready_timeout(f.policy, p));
    if f.now < deadline {
        cx.wake_at(deadline);
        cx.wake_at(later(f.now, POLL));
        return;
    }
    p.state = PodState::Failed;
    p.message = format!(
        "no Ready replacement with its profile within {}",
        fmt_duration(deadline - from)
    );
    s.progress.failed += 1;
    cx.event(
        true,
        "ReplacementNotReady",
        format!("{}/{}: {}", p.namespace, p.name, p.message),
    );
    s.unhealthy.push(p.clone());
}

pub(super) fn mark_evicted(p: &mut BatchPod, now: DateTime<Utc>, message: &str) {
    p.state = PodState::Evicted;
    // Its replacement may be older than this step: date the eviction from when it was
    // requested (written ahead).
    p.evicted_at = Some(p.requested_at.unwrap_or(now));
    p.message = message.into();
}

/// Applies the answer to an eviction (or restart) request. Returns whether the pod is now
/// Failed.
pub(super) fn on_outcome(
    p: &mut BatchPod,
    cx: &mut Ctx,
    result: Option<&Outcome>,
    workload: bool,
    gone_or_terminating: bool,
) -> bool {
    let now = cx.now;
    let who = format!("{}/{}", p.namespace, p.name);
    p.pdb_refused = false;
    match result {
        Some(Outcome::Done) => {
            p.state = PodState::Evicted;
            p.evicted_at = Some(now);
            p.message = if workload {
                "workload restarted".into()
            } else {
                "evicted".into()
            };
        }
        Some(Outcome::Refused(msg)) => {
            p.pdb_refused = true;
            p.attempts = p.attempts.saturating_add(1);
            let (n, base, max) = (p.attempts, DEFERRAL_BASE, DEFERRAL_MAX);
            defer(
                p,
                cx,
                backoff(base, n, max),
                format!("eviction refused ({msg}); retry {n}"),
            );
            cx.event(true, "EvictionDeferred", format!("{who}: eviction refused by a PodDisruptionBudget ({msg}); retrying, never forcing"));
        }
        Some(Outcome::NotFound) if p.uncertain => {
            mark_evicted(p, now, "evicted (the answer to its eviction was lost)");
        }
        Some(Outcome::NotFound) => {
            p.state = PodState::Gone;
            p.message = "already gone when evicted".into();
        }
        Some(Outcome::Busy(msg)) => {
            p.attempts = p.attempts.saturating_add(1);
            let n = p.attempts;
            defer(
                p,
                cx,
                backoff(ERROR_BASE, n, ERROR_MAX),
                format!("eviction deferred ({msg}); retry {n}"),
            );
            cx.event(true, "EvictionDeferred", format!("{who}: {}", p.message));
        }
        Some(Outcome::Retry(msg) | Outcome::Unknown(msg)) => {
            p.uncertain |= matches!(result, Some(Outcome::Unknown(_)));
            p.errors = p.errors.saturating_add(1);
            if p.errors >= MAX_ERRORS {
                return fail(
                    p,
                    cx,
                    format!("eviction failed {} times, giving up: {msg}", p.errors),
                );
            }
            let n = p.errors;
            let why = format!("eviction failed ({msg}); retry {n} of {}", MAX_ERRORS - 1);
            defer(p, cx, backoff(ERROR_BASE, n, ERROR_MAX), why);
            cx.event(true, "EvictionFailed", format!("{who}: {}", p.message));
        }
        // What became of it, if anything, is seen next step as for any planned pod.
        Some(Outcome::NotSent) => p.state = PodState::Planned,
        Some(Outcome::Rejected(msg)) => {
            return fail(p, cx, format!("the Eviction API refused it: {msg}"));
        }
        None if workload => {
            // A crash lost the outcome; the restart patch is idempotent (same token): issue it again.
            p.state = PodState::Planned;
        }
        // A crash lost the outcome: the cluster tells whether it happened.
        None if gone_or_terminating => mark_evicted(p, now, "evicted"),
        None => p.state = PodState::Planned,
    }
    false
}

/// Deferred: retried after `wait`, the time said in its message.
pub(super) fn defer(p: &mut BatchPod, cx: &mut Ctx, wait: Duration, why: String) {
    let at = later(cx.now, wait);
    p.state = PodState::Deferred;
    p.retry_at = Some(at);
    p.message = format!("{why} at {}", at.to_rfc3339());
    cx.wake_at(at);
}

pub(super) fn fail(p: &mut BatchPod, cx: &mut Ctx, message: String) -> bool {
    p.state = PodState::Failed;
    p.retry_at = None;
    p.message = message;
    cx.event(
        true,
        "EvictionFailed",
        format!("{}/{}: {}", p.namespace, p.name, p.message),
    );
    true
}

/// `base` doubled per attempt, at most `max`.
pub(super) fn backoff(base: Duration, attempts: u32, max: Duration) -> Duration {
    base.saturating_mul(1 << attempts.saturating_sub(1).min(16))
        .min(max)
}

/// Failed replacements still count as disrupted until their workload is whole again
/// (every pod Ready). Matching one replacement would be ambiguous here: by then later
/// batches may have created Ready pods of the same workload.
pub(super) fn observe_unhealthy(s: &mut ArmorRefreshRunStatus, cx: &mut Ctx) {
    let facts = cx.obs.facts;
    let readiness = Readiness::new(facts, &s.unhealthy);
    let mut recovered = Vec::new();
    s.unhealthy.retain(|p| {
        let whole = readiness.whole(p, facts);
        if whole {
            recovered.push(format!("{}/{}", p.namespace, p.name));
        }
        !whole
    });
    for r in recovered {
        cx.event(
            false,
            "ReplacementRecovered",
            format!("{r}: its workload is Ready again"),
        );
    }
    if !s.unhealthy.is_empty() {
        cx.wake_at(later(cx.now, POLL));
    }
}
