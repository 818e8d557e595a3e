//! The run state machine: `(status, observations, now) -> (new status, actions)`.
//!
//! Pending → Batching ⇄ Paused → Completed, and Failed for what cannot proceed.
//!
//! Contract with the shell (the controller, or the simulator in the tests): persist the
//! returned status *before* executing the returned actions, then call [`step`] again with
//! their results. A batch is written into status (pods `Planned`) in one step and evicted
//! in the next, so after a crash at any instant the status says which pods this run may
//! have disrupted, and the cluster says what became of them: a pod still there and not
//! terminating was not evicted, so evicting it again cannot evict it twice.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;

use crate::api::{
    ArmorRefreshRunSpec, ArmorRefreshRunStatus, BatchPod, BatchRecord, BatchStatus, Condition,
    HISTORY_LIMIT, Phase, PlanSummary, PodState, set_condition,
};
use crate::cluster::ClusterFacts;
use crate::compliance::{self, Owner};
use crate::plan::{self, Context, InFlight, Limits};
use crate::policy::{SpecError, ValidPolicy};
use crate::select::{self, Selection, Target};

/// How long to wait before polling again while replacements come up.
pub const POLL: Duration = Duration::from_secs(5);
/// First retry after a PDB refused an eviction; doubles up to [`DEFERRAL_MAX`].
pub const DEFERRAL_BASE: Duration = Duration::from_secs(5);
pub const DEFERRAL_MAX: Duration = Duration::from_secs(300);
/// Batches shown in a dry run's plan summary.
const PLAN_PREVIEW: usize = 5;
/// Assumed time per batch for estimates until the run has measured its own.
pub const ASSUMED_BATCH: Duration = Duration::from_secs(60);

/// The policy as the run sees it.
#[derive(Debug, Clone, Copy)]
pub enum PolicyView<'a> {
    NotFound,
    Invalid(&'a SpecError),
    Valid(&'a ValidPolicy),
}

/// The outcome of an action of the previous step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The Eviction API accepted (or the workload patch was applied).
    Done,
    /// 429 from a PodDisruptionBudget: deferred, never forced.
    Refused(String),
    /// 404: the pod was already gone.
    NotFound,
    /// Anything else (transient): retried.
    Error(String),
}

/// What the run observes besides its own status.
#[derive(Debug, Clone)]
pub struct Observations<'a> {
    /// The policy's selection over `facts`, when the caller has it already (the controller
    /// selects once per pass for every run and the policy's status); computed here if not.
    pub selection: Option<&'a Selection>,
    pub generation: Option<i64>,
    pub spec: &'a ArmorRefreshRunSpec,
    pub policy: PolicyView<'a>,
    pub facts: &'a ClusterFacts,
    /// Pods in flight in other active runs: never taken by this run, and counted against
    /// the per-node and per-zone limits.
    pub others: &'a [BatchPod],
    /// Another run of the same policy is active; this one waits (Pending).
    pub blocked_by: Option<&'a str>,
    /// Outcomes of the previous step's actions, by pod UID (or `namespace/Kind/name` for a
    /// workload restart).
    pub results: &'a HashMap<String, Outcome>,
}

/// An action for the shell, as data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Evict this pod through the Eviction API (with its UID as precondition).
    Evict {
        namespace: String,
        name: String,
        uid: String,
        /// Its workload ("Kind/name"): evictions of one workload go one after another.
        owner: String,
    },
    /// Patch the workload's pod template annotation `refresh.armor.dev/restartedAt` to `token`.
    Restart {
        namespace: String,
        kind: String,
        name: String,
        token: String,
    },
    /// Record a Kubernetes Event on the run.
    Event {
        warning: bool,
        reason: String,
        note: String,
    },
}

/// The result of a step.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub status: ArmorRefreshRunStatus,
    pub actions: Vec<Action>,
    /// When to call [`step`] again at the latest (`Some(ZERO)`: right after executing the actions).
    pub requeue_after: Option<Duration>,
}

impl Step {
    /// Evictions and restarts in this step (events excluded).
    pub fn disruptions(&self) -> impl Iterator<Item = &Action> {
        self.actions
            .iter()
            .filter(|a| !matches!(a, Action::Event { .. }))
    }
}

/// The key of an action's outcome for a batch entry.
pub fn result_key(p: &BatchPod) -> String {
    if p.uid.is_empty() {
        format!("{}/{}", p.namespace, p.owner)
    } else {
        p.uid.clone()
    }
}

struct Ctx<'a> {
    obs: &'a Observations<'a>,
    now: DateTime<Utc>,
    actions: Vec<Action>,
    wake: Vec<DateTime<Utc>>,
}

impl Ctx<'_> {
    fn event(&mut self, warning: bool, reason: &str, note: impl Into<String>) {
        self.actions.push(Action::Event {
            warning,
            reason: reason.to_string(),
            note: note.into(),
        });
    }
    fn wake_at(&mut self, t: DateTime<Utc>) {
        self.wake.push(t);
    }
}

fn td(d: Duration) -> TimeDelta {
    TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX)
}

/// A duration as people read it: 45s, 3m, 2m30s, 1h, 1h20m.
pub fn fmt_duration(d: TimeDelta) -> String {
    let secs = d.num_seconds().max(0);
    let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
    match (h, m, s) {
        (0, 0, s) => format!("{s}s"),
        (0, m, 0) => format!("{m}m"),
        (0, m, s) => format!("{m}m{s}s"),
        (h, 0, 0) => format!("{h}h"),
        (h, m, _) => format!("{h}h{m}m"),
    }
}

/// One step of the state machine.
pub fn step(status: &ArmorRefreshRunStatus, obs: &Observations, now: DateTime<Utc>) -> Step {
    let mut s = status.clone();
    let mut cx = Ctx {
        obs,
        now,
        actions: vec![],
        wake: vec![],
    };
    if s.phase.is_terminal() {
        return Step {
            status: s,
            actions: vec![],
            requeue_after: None,
        };
    }
    let before = (s.phase, s.reason.clone());
    s.observed_generation = obs.generation;

    let policy = match obs.policy {
        PolicyView::Valid(p) => Some(p),
        _ => None,
    };
    let pods: HashMap<&str, &Pod> = obs
        .facts
        .pods
        .iter()
        .map(|p| (p.metadata.uid.as_deref().unwrap_or(""), p.as_ref()))
        .collect();
    let owned;
    let selection: Option<&Selection> = match (policy, obs.selection) {
        (Some(_), Some(sel)) => Some(sel),
        (Some(p), None) => {
            owned = select::select(p, obs.facts);
            Some(&owned)
        }
        (None, _) => None,
    };

    // 1. Whatever else holds, follow what is in flight.
    observe_batch(&mut s, &mut cx, policy, &pods, selection);
    observe_unhealthy(&mut s, &mut cx);

    // 2. What stops new evictions, in order of precedence.
    let gate = gate(&mut s, &mut cx, policy, selection);
    match gate {
        Gate::Wait(phase, reason, message) => {
            set_phase(&mut s, phase, &reason, message);
        }
        Gate::Finish(phase, reason, message) => {
            if s.current_batch
                .as_ref()
                .is_some_and(|b| b.pods.iter().any(|p| p.state.is_disrupting()))
            {
                set_phase(
                    &mut s,
                    Phase::Paused,
                    &reason,
                    format!("{message} (waiting for the batch in flight to settle)"),
                );
            } else {
                finish_batch(&mut s, &mut cx);
                set_phase(&mut s, phase, &reason, message);
                s.completed_at = Some(now);
                s.next_batch_at = None;
            }
        }
        Gate::Open => {
            let p = policy.expect("open gate means a valid policy");
            let sel = selection.expect("valid policy has a selection");
            advance(&mut s, &mut cx, p, sel);
        }
    }

    // 3. Counters, conditions, events for transitions.
    if let Some(sel) = selection {
        update_progress(&mut s, sel, obs.others);
    }
    s.progress.summary = format!("{}/{}", s.progress.refreshed, s.progress.total);
    let g = obs.generation;
    for (type_, on) in [
        ("Complete", s.phase == Phase::Completed),
        (
            "Progressing",
            matches!(s.phase, Phase::Batching | Phase::Pending),
        ),
        ("Paused", s.phase == Phase::Paused),
    ] {
        let c = Condition::new(type_, on, &s.reason, s.message.clone());
        set_condition(&mut s.conditions, c, now, g);
    }
    if (s.phase, s.reason.clone()) != before {
        let warning = matches!(
            s.reason.as_str(),
            "CircuitOpen" | "PolicyNotFound" | "PolicyInvalid"
        ) || s.phase == Phase::Failed;
        cx.event(warning, &s.reason, format!("{:?}: {}", s.phase, s.message));
    }

    let requeue_after = if s.phase.is_terminal() {
        None
    } else if cx
        .actions
        .iter()
        .any(|a| !matches!(a, Action::Event { .. }))
        || needs_immediate(&s, s.phase == Phase::Batching, now)
    {
        Some(Duration::ZERO)
    } else {
        let next = cx.wake.iter().min().copied();
        Some(
            next.map_or(POLL, |t| (t - now).to_std().unwrap_or(Duration::ZERO))
                .min(Duration::from_secs(300)),
        )
    };
    Step {
        status: s,
        actions: cx.actions,
        requeue_after,
    }
}

/// A batch was just written ahead: evict right after the status is persisted.
fn needs_immediate(s: &ArmorRefreshRunStatus, open: bool, now: DateTime<Utc>) -> bool {
    let same_second = s
        .started_at
        .is_some_and(|st| now.timestamp() <= st.timestamp());
    open && !same_second
        && s.current_batch
            .as_ref()
            .is_some_and(|b| b.pods.iter().any(|p| p.state == PodState::Planned))
}

enum Gate {
    /// No eviction starts; the run stays alive.
    Wait(Phase, String, String),
    /// The run ends once nothing it disrupted is in flight.
    Finish(Phase, String, String),
    /// Batches may start.
    Open,
}

fn set_phase(s: &mut ArmorRefreshRunStatus, phase: Phase, reason: &str, message: String) {
    s.phase = phase;
    s.reason = reason.to_string();
    s.message = message;
}

fn gate(
    s: &mut ArmorRefreshRunStatus,
    cx: &mut Ctx,
    policy: Option<&ValidPolicy>,
    selection: Option<&Selection>,
) -> Gate {
    let obs = cx.obs;
    let name = &obs.spec.policy_ref.name;
    let started = s.phase != Phase::Pending;
    match obs.policy {
        PolicyView::NotFound if !started => {
            return Gate::Wait(
                Phase::Pending,
                "PolicyNotFound".into(),
                format!("ArmorRefreshPolicy {name:?} does not exist; waiting for it"),
            );
        }
        PolicyView::NotFound => {
            return Gate::Finish(
                Phase::Failed,
                "PolicyNotFound".into(),
                format!(
                    "ArmorRefreshPolicy {name:?} was deleted mid-run; recreate it and create a new run to continue"
                ),
            );
        }
        PolicyView::Invalid(e) => {
            let phase = if started {
                Phase::Paused
            } else {
                Phase::Pending
            };
            return Gate::Wait(
                phase,
                "PolicyInvalid".into(),
                format!("ArmorRefreshPolicy {name:?} is invalid: {e}"),
            );
        }
        PolicyView::Valid(_) => {}
    }
    let policy = policy.expect("valid");
    let selection = selection.expect("valid");
    if !started {
        if let Some(other) = obs.blocked_by {
            return Gate::Wait(
                Phase::Pending,
                "AnotherRunActive".into(),
                format!("run {other:?} of policy {name:?} is active; this run starts when it ends"),
            );
        }
        if obs.spec.dry_run {
            s.plan = Some(summary(
                policy,
                selection,
                cx.obs.facts,
                cx.now,
                0,
                PLAN_PREVIEW,
            ));
            s.progress.total = selection.targets.len() as u32;
            s.progress.pending = s.progress.total;
            let p = s.plan.as_ref().expect("set");
            return Gate::Finish(
                Phase::Completed,
                "DryRun".into(),
                format!(
                    "dry run: {} targets in {} batches, estimated {}; nothing evicted",
                    p.targets,
                    p.batches,
                    p.estimated_duration.clone().unwrap_or_default()
                ),
            );
        }
    }
    // Circuit breaker: a new resumeToken closes it.
    let threshold = policy
        .max_failures
        .resolve_down(s.progress.total.max(selection.targets.len() as u32));
    if obs.spec.resume_token != s.resume_token {
        if s.progress.failed.saturating_sub(s.failure_baseline) > threshold {
            cx.event(
                false,
                "CircuitReset",
                format!(
                    "resumeToken {:?}: circuit breaker closed, continuing",
                    obs.spec.resume_token
                ),
            );
        }
        s.resume_token = obs.spec.resume_token.clone();
        s.failure_baseline = s.progress.failed;
    }
    let failures = s.progress.failed.saturating_sub(s.failure_baseline);
    if failures > threshold {
        return Gate::Wait(
            Phase::Paused,
            "CircuitOpen".into(),
            format!(
                "{failures} replacements failed to become Ready (tolerated: {threshold}); fix the cause, then set spec.resumeToken to a new value to continue"
            ),
        );
    }
    if obs.spec.paused {
        return Gate::Wait(
            Phase::Paused,
            "UserPaused".into(),
            "spec.paused is true; set it to false to continue".into(),
        );
    }
    if !policy.schedule.is_open(cx.now) {
        let next = policy.schedule.next_open(cx.now);
        s.next_window_at = next;
        if let Some(t) = next {
            cx.wake_at(t);
        }
        return Gate::Wait(
            Phase::Paused,
            "OutsideWindow".into(),
            match next {
                Some(t) => format!(
                    "outside every maintenance window; the next opens at {}",
                    t.to_rfc3339()
                ),
                None => "outside every maintenance window, and none opens again".into(),
            },
        );
    }
    s.next_window_at = None;
    if let Some(close) = policy.schedule.closes_at(cx.now) {
        cx.wake_at(close);
    }
    Gate::Open
}

/// The replacement of an evicted pod: the first pod of the same owner created at or after
/// its eviction was requested that no other eviction has taken (first come, first
/// matched, so one eviction never takes another's replacement). `None` while there is
/// none yet; otherwise the pod, whether it is Ready, and whether it has its profile (one
/// created while the webhook was down has not). A pod without its profile that existed
/// when the run started is a target, never a replacement.
fn find_replacement<'a>(
    p: &BatchPod,
    since: DateTime<Utc>,
    policy: Option<&ValidPolicy>,
    facts: &'a ClusterFacts,
    taken: &BTreeSet<String>,
    run_started: Option<DateTime<Utc>>,
) -> Option<(&'a Pod, bool, bool)> {
    // creationTimestamp has one-second resolution.
    let since = since.timestamp() - 1;
    let compliant = |cand: &Pod| match policy {
        Some(pol) => {
            let owner = compliance::owner_of(cand, Some(facts));
            compliance::check(pol, cand, &owner, &facts.namespace_labels(&p.namespace))
                .is_compliant()
        }
        None => true,
    };
    facts
        .pods
        .iter()
        .map(|p| p.as_ref())
        .filter_map(|cand| {
            let uid = cand.metadata.uid.as_deref().unwrap_or_default();
            let created = cand.metadata.creation_timestamp.as_ref()?.0.as_second();
            let eligible = uid != p.uid
                && !taken.contains(uid)
                && cand.namespace().as_deref() == Some(p.namespace.as_str())
                && !select::is_terminating(cand)
                && created >= since
                && compliance::owner_of(cand, Some(facts)).to_string() == p.owner;
            eligible.then_some((created, cand.name_any(), cand))
        })
        .filter_map(|(created, name, cand)| {
            let with_profile = compliant(cand);
            let older_target =
                !with_profile && run_started.is_some_and(|st| created <= st.timestamp());
            (!older_target).then_some((created, name, cand, with_profile))
        })
        .min_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)))
        .map(|(_, _, cand, with_profile)| (cand, select::is_ready(cand), with_profile))
}

fn ready_timeout(policy: Option<&ValidPolicy>, p: &BatchPod) -> Duration {
    match policy {
        Some(pol) if p.volumes => pol.volume_ready_timeout,
        Some(pol) => pol.ready_timeout,
        None => Duration::from_secs(300),
    }
}

/// A workload restarted by RolloutRestart is done when none of its pods is a target any
/// more and all of them are Ready.
fn workload_done(p: &BatchPod, facts: &ClusterFacts, selection: Option<&Selection>) -> bool {
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

/// Every other pod of the entry's workload is Ready and not being deleted.
fn workload_whole(p: &BatchPod, facts: &ClusterFacts) -> bool {
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

fn observe_batch(
    s: &mut ArmorRefreshRunStatus,
    cx: &mut Ctx,
    policy: Option<&ValidPolicy>,
    pods: &HashMap<&str, &Pod>,
    selection: Option<&Selection>,
) {
    let now = cx.now;
    let obs = cx.obs;
    let Some(mut batch) = s.current_batch.take() else {
        return;
    };
    let target_uids: Option<BTreeSet<&str>> =
        selection.map(|sel| sel.targets.iter().map(|t| t.uid.as_str()).collect());
    // A replacement stands for one eviction only, across this batch and the previous one
    // (whose replacements may have been created in the same second as these evictions).
    let mut claimed: BTreeSet<String> = batch
        .pods
        .iter()
        .map(|p| p.replacement.clone())
        .chain(s.recent_replacements.iter().cloned())
        .filter(|u| !u.is_empty())
        .collect();
    let mut newly_failed = Vec::new();
    // Match replacements in the order the evictions were requested: first come, first matched.
    let mut order: Vec<usize> = (0..batch.pods.len()).collect();
    order.sort_by_key(|&i| batch.pods[i].requested_at);
    for i in order {
        let p = &mut batch.pods[i];
        let workload = p.uid.is_empty();
        let live = pods.get(p.uid.as_str()).copied();
        let gone_or_terminating = !workload && live.is_none_or(select::is_terminating);
        let result = obs.results.get(&result_key(p));
        match p.state {
            PodState::Planned | PodState::Deferred => {
                if workload {
                    continue;
                }
                if gone_or_terminating {
                    p.state = PodState::Gone;
                    p.message = "went away without being evicted by this run".into();
                } else if target_uids
                    .as_ref()
                    .is_some_and(|t| !t.contains(p.uid.as_str()))
                {
                    p.state = PodState::Gone;
                    p.message = "no longer a target of the policy".into();
                } else if p.state == PodState::Deferred {
                    match p.retry_at {
                        Some(t) if t > now => cx.wake_at(t),
                        _ => p.state = PodState::Planned,
                    }
                }
            }
            PodState::Evicting => match result {
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
                    p.attempts += 1;
                    let backoff = DEFERRAL_BASE
                        .saturating_mul(1 << p.attempts.min(8))
                        .min(DEFERRAL_MAX);
                    p.state = PodState::Deferred;
                    p.retry_at = Some(now + td(backoff));
                    p.message = format!(
                        "eviction refused ({msg}); retry {} at {}",
                        p.attempts,
                        (now + td(backoff)).to_rfc3339()
                    );
                    cx.wake_at(now + td(backoff));
                    cx.event(true, "EvictionDeferred", format!("{}/{}: eviction refused by a PodDisruptionBudget ({msg}); retrying, never forcing", p.namespace, p.name));
                }
                Some(Outcome::NotFound) => {
                    p.state = PodState::Gone;
                    p.message = "already gone when evicted".into();
                }
                Some(Outcome::Error(msg)) => {
                    p.state = PodState::Planned;
                    p.message = format!("eviction failed, will retry: {msg}");
                    cx.event(
                        true,
                        "EvictionFailed",
                        format!("{}/{}: {msg}", p.namespace, p.name),
                    );
                }
                None if workload => {
                    // A crash lost the outcome; the restart patch is idempotent (same token): issue it again.
                    p.state = PodState::Planned;
                }
                None => {
                    // A crash lost the outcome: the cluster tells whether it happened.
                    if gone_or_terminating {
                        p.state = PodState::Evicted;
                        // Its replacement may be older than this restart: date the
                        // eviction from when it was requested (written ahead).
                        p.evicted_at = Some(p.requested_at.unwrap_or(now));
                        p.message = "evicted".into();
                    } else {
                        p.state = PodState::Planned;
                    }
                }
            },
            PodState::Evicted => {
                // Replacements are matched from when the eviction was requested: the pod may
                // be replaced before the Eviction API call even returns.
                let since = p.requested_at.or(p.evicted_at).unwrap_or(batch.started_at);
                let timeout_from = p.evicted_at.unwrap_or(since);
                if workload {
                    if workload_done(p, obs.facts, selection) {
                        p.state = PodState::Refreshed;
                        s.progress.refreshed += 1;
                        p.message = "every pod of the workload is Ready with its profile".into();
                    }
                } else if p.owner.starts_with("Pod/") {
                    if gone_or_terminating && live.is_none() {
                        p.state = PodState::Refreshed;
                        s.progress.refreshed += 1;
                        p.message = "bare pod removed (nothing recreates it)".into();
                    }
                } else if let Some((r, true, with_profile)) =
                    find_replacement(p, since, policy, obs.facts, &claimed, s.started_at).inspect(
                        |(r, _, _)| {
                            // Reserved for this eviction even before it is Ready.
                            claimed.insert(r.metadata.uid.clone().unwrap_or_default());
                        },
                    )
                {
                    let uid = r.metadata.uid.clone().unwrap_or_default();
                    p.state = PodState::Refreshed;
                    p.replacement = uid.clone();
                    if with_profile {
                        s.progress.refreshed += 1;
                        p.message = format!("replaced by {}", r.name_any());
                    } else {
                        // Capacity is back, but the webhook did not inject (down or
                        // misconfigured). Not a failure of the replacement: the next run
                        // refreshes it (this one never targets pods created after it started).
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
                    claimed.insert(uid);
                }
                if p.state == PodState::Evicted {
                    let deadline = timeout_from + td(ready_timeout(policy, p));
                    if now >= deadline {
                        p.state = PodState::Failed;
                        p.message = format!(
                            "no Ready replacement with its profile within {}",
                            fmt_duration(deadline - timeout_from)
                        );
                        s.progress.failed += 1;
                        cx.event(
                            true,
                            "ReplacementNotReady",
                            format!("{}/{}: {}", p.namespace, p.name, p.message),
                        );
                        newly_failed.push(p.clone());
                    } else {
                        cx.wake_at(deadline);
                        cx.wake_at(now + td(POLL));
                    }
                }
            }
            PodState::Refreshed | PodState::Failed | PodState::Gone => {}
        }
    }
    s.unhealthy.extend(newly_failed);
    s.current_batch = Some(batch);
}

/// Failed replacements still count as disrupted until their workload is whole again
/// (every pod Ready). Matching one replacement would be ambiguous here: by then later
/// batches may have created Ready pods of the same workload.
fn observe_unhealthy(s: &mut ArmorRefreshRunStatus, cx: &mut Ctx) {
    let facts = cx.obs.facts;
    let mut recovered = Vec::new();
    s.unhealthy.retain(|p| {
        let whole = workload_whole(p, facts);
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
        cx.wake_at(cx.now + td(POLL));
    }
}

/// Moves a settled batch to history.
fn finish_batch(s: &mut ArmorRefreshRunStatus, cx: &mut Ctx) {
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
fn owner_parts(owner: &str) -> (&str, &str) {
    owner.split_once('/').unwrap_or(("Pod", owner))
}

fn in_flight(s: &ArmorRefreshRunStatus, others: &[BatchPod]) -> InFlight {
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

fn batch_pod(t: &Target, workload: bool) -> BatchPod {
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
        first_batches: batches
            .iter()
            .take(preview)
            .map(|b| b.iter().map(|&i| sel.targets[i].key()).collect())
            .collect(),
    }
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
        t += td(per_batch);
        if i + 1 < batches {
            t += td(policy.interval);
        }
    }
    Some(t)
}

/// A run refreshes the pods that existed when it started; pods created later (e.g. while
/// the webhook was down) are the next run's, so a run always ends.
fn in_scope(t: &Target, started: Option<DateTime<Utc>>) -> bool {
    match (t.created, started) {
        (Some(c), Some(s)) => c <= s.timestamp(),
        _ => true,
    }
}

fn update_progress(s: &mut ArmorRefreshRunStatus, sel: &Selection, others: &[BatchPod]) {
    let in_batch: BTreeSet<&str> = s
        .current_batch
        .iter()
        .flat_map(|b| &b.pods)
        .filter(|p| !p.state.is_settled())
        .map(|p| p.uid.as_str())
        .collect();
    let taken: BTreeSet<&str> = others.iter().map(|p| p.uid.as_str()).collect();
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
fn advance(s: &mut ArmorRefreshRunStatus, cx: &mut Ctx, policy: &ValidPolicy, sel: &Selection) {
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

    // Evict what the batch in flight planned, but never within the second the run started:
    // creation times have one-second resolution, and a pod created in that second must be
    // known to predate every eviction (a target, never a replacement).
    let same_second = s
        .started_at
        .is_some_and(|st| now.timestamp() <= st.timestamp());
    if same_second {
        let next = DateTime::from_timestamp(now.timestamp() + 1, 0).unwrap_or(now);
        cx.wake_at(next);
    }
    if let Some(b) = s.current_batch.as_mut().filter(|_| !same_second) {
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
        s.next_batch_at = Some(now + td(policy.interval));
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
    let unhealthy: BTreeSet<&str> = s.unhealthy.iter().map(|p| p.uid.as_str()).collect();
    let mut remaining: Vec<Target> = sel
        .targets
        .iter()
        .filter(|t| in_scope(t, s.started_at))
        .filter(|t| !taken.contains(t.uid.as_str()) && !unhealthy.contains(t.uid.as_str()))
        .cloned()
        .collect();
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
            cx.wake_at(now + td(POLL));
        }
        return;
    }
    let limits = Limits::from_policy(policy, s.progress.total.max(sel.targets.len() as u32));
    let flight = in_flight(s, cx.obs.others);
    let budget = limits.batch.saturating_sub(flight.total);
    plan::order(&mut remaining);
    let refs: Vec<&Target> = remaining.iter().collect();
    let picked = plan::next_batch(&refs, &limits, &flight, &context(cx.obs.facts), budget);
    if picked.is_empty() {
        s.message = if budget == 0 {
            format!(
                "{} failed replacements still count as disrupted; waiting for them to recover",
                s.unhealthy.len()
            )
        } else {
            "no target may start now (StatefulSet not Ready, node or zone limit, or leader waiting)"
                .into()
        };
        cx.wake_at(now + td(POLL));
        return;
    }
    let workload = limits.by_workload;
    let index = s
        .history
        .last()
        .map_or(0, |h| h.index)
        .max(s.current_batch.as_ref().map_or(0, |b| b.index))
        + 1;
    let pods: Vec<BatchPod> = picked
        .iter()
        .map(|&i| batch_pod(refs[i], workload))
        .collect();
    let names: Vec<String> = pods
        .iter()
        .map(|p| format!("{}/{}", p.namespace, p.name))
        .collect();
    cx.event(
        false,
        "BatchStarted",
        format!("batch {index}: {}", names.join(", ")),
    );
    s.message = format!("batch {index}: {} planned", pods.len());
    s.current_batch = Some(BatchStatus {
        index,
        started_at: now,
        pods,
    });
    s.next_batch_at = None;
}

#[cfg(test)]
mod tests;
