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

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use kube::ResourceExt;

use crate::api::{
    ArmorRefreshRunSpec, ArmorRefreshRunStatus, BatchPod, BatchRecord, BatchStatus, Completion,
    Condition, HISTORY_LIMIT, Pacing, Phase, PlanSummary, PodState, RECENT_LIMIT, RestingSlots,
    set_condition,
};
use crate::cluster::ClusterFacts;
use crate::compliance::{self, Owner};
use crate::plan::{self, Context, InFlight, Limits};
use crate::pod::LeanPod;
use crate::policy::{SpecError, ValidPolicy};
use crate::select::{self, Selection, Target};

/// How long to wait before polling again while replacements come up.
pub const POLL: Duration = Duration::from_secs(5);
/// Retry after a PDB refused an eviction, when its status does not say sooner that it
/// allows a disruption again (it lags the pods it counts); doubles up to [`DEFERRAL_MAX`].
pub const DEFERRAL_BASE: Duration = Duration::from_secs(5);
pub const DEFERRAL_MAX: Duration = Duration::from_secs(60);
/// Least time between two eviction requests of one pod, however soon its PDB allows.
pub const REFUSAL_GAP: Duration = Duration::from_secs(1);
/// First retry after an eviction failed otherwise (overload, server error, timeout);
/// doubles up to [`ERROR_MAX`].
pub const ERROR_BASE: Duration = Duration::from_secs(2);
pub const ERROR_MAX: Duration = Duration::from_secs(60);
/// Eviction requests of one pod that may fail (not counting PDB refusals) before it is Failed.
pub const MAX_ERRORS: u32 = 8;
/// Batches shown in a dry run's plan summary.
const PLAN_PREVIEW: usize = 5;
/// Assumed time per batch for estimates until the run has measured its own.
pub const ASSUMED_BATCH: Duration = Duration::from_secs(60);
/// Bytes a run's status may take as JSON. etcd refuses requests over 1.5 MiB, and the
/// object also carries its metadata, managed fields and spec: a batch is capped so that
/// the status, with every pod of the batch grown to its largest, stays under this.
pub const STATUS_BUDGET: usize = 1024 * 1024;
/// Bytes a batch entry may grow by after it is planned: three timestamps, the
/// replacement's UID, the attempt and error counts, the uncertain and PDB-refused flags,
/// its workload's ready and wanted counts (set once planning fitted it) and a message of
/// at most [`POD_MESSAGE_MAX`].
pub const POD_GROWTH: usize = 512;
/// Longest message of one pod of a batch.
pub const POD_MESSAGE_MAX: usize = 160;
/// Longest message of the run (and of its conditions).
pub const MESSAGE_MAX: usize = 1024;
/// Bytes of pod names in a plan's preview of its first batches.
pub const PREVIEW_BUDGET: usize = 16 * 1024;

/// The policy as the run sees it.
#[derive(Debug, Clone, Copy)]
pub enum PolicyView<'a> {
    NotFound,
    Invalid(&'a SpecError),
    Valid(&'a ValidPolicy),
}

/// The outcome of an action of the previous step, as the shell classified the API's answer
/// (see `controller::classify_eviction`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The Eviction API accepted (or the workload patch was applied).
    Done,
    /// 429 from a PodDisruptionBudget: deferred, never forced.
    Refused(String),
    /// 404, or a UID precondition that no longer holds: the pod is not there any more.
    NotFound,
    /// Not carried out, for an error that may pass (a pod under two budgets, a webhook's
    /// 500, a conflict): retried with capped backoff, at most [`MAX_ERRORS`] requests.
    Retry(String),
    /// Not carried out because something is busy (a 429 not from a PodDisruptionBudget: API
    /// priority and fairness, an eviction webhook such as KubeVirt's while a VM migrates; a
    /// namespace being deleted): retried with capped backoff and no cap, as a PDB's refusal.
    Busy(String),
    /// No answer (timeout, lost connection): it may have happened. Retried like `Retry`,
    /// and the pod counts as disrupted until the cluster says what became of it.
    Unknown(String),
    /// Refused for good (a 4xx other than 404, 409 and 429): the pod is Failed.
    Rejected(String),
    /// Not sent after all (the shell's term ended, or the run was paused first): nothing
    /// happened, and the pod is planned again.
    NotSent,
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
    /// Requests sent and not answered yet (same keys as `results`): their pods stay
    /// Evicting. The shell evicts beside its passes, so an answer may come steps later.
    pub pending: &'a HashSet<String>,
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
    /// The status must be written before the actions are executed: it records evictions
    /// about to happen (write-ahead), a new phase or reason, a failure, a deferral or a new
    /// generation.
    /// Otherwise the shell may keep it in memory for a while and write it with a later
    /// status: what it says (answers, replacements, counters) the cluster says again
    /// after a crash, so writes per refreshed pod stay low.
    pub persist: bool,
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

/// `t + d`, saturating: no duration, however long, makes a step panic.
fn later(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    crate::schedule::saturating_add(t, td(d))
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
            persist: false,
        };
    }
    let before = (s.phase, s.reason.clone());
    s.observed_generation = obs.generation;

    let policy = match obs.policy {
        PolicyView::Valid(p) => Some(p),
        _ => None,
    };
    let pods: HashMap<&str, &LeanPod> = obs
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

    // 2. What stops new evictions, in order of precedence; or the next evictions.
    match gate(&mut s, &mut cx, policy, selection) {
        Gate::Wait(phase, reason, message) => set_phase(&mut s, phase, &reason, message),
        Gate::Finish(phase, reason, message) => finish(&mut s, &mut cx, phase, &reason, message),
        Gate::Open => {
            let p = policy.expect("open gate means a valid policy");
            let sel = selection.expect("valid policy has a selection");
            advance(&mut s, &mut cx, p, sel, &pods);
        }
    }

    // 3. Counters, conditions, events for transitions.
    if let Some(sel) = selection {
        update_progress(&mut s, sel, obs.others);
    }
    conclude(status, &mut s, &mut cx, policy, &before);
    let requeue_after = requeue(&s, &cx);
    let persist = must_persist(status, &s, &cx, &before);
    Step {
        status: s,
        actions: cx.actions,
        requeue_after,
        persist,
    }
}

/// The run ends, once nothing it disrupted is in flight (until then it is Paused).
fn finish(
    s: &mut ArmorRefreshRunStatus,
    cx: &mut Ctx,
    phase: Phase,
    reason: &str,
    message: String,
) {
    let in_flight = s
        .current_batch
        .as_ref()
        .is_some_and(|b| b.pods.iter().any(|p| p.is_disrupted()));
    if in_flight {
        let message = format!("{message} (waiting for the batch in flight to settle)");
        set_phase(s, Phase::Paused, reason, message);
        return;
    }
    finish_batch(s, cx);
    set_phase(s, phase, reason, message);
    s.completed_at = Some(cx.now);
    s.next_batch_at = None;
}

/// Messages within bounds, the summary, conditions, and events for what changed.
fn conclude(
    old: &ArmorRefreshRunStatus,
    s: &mut ArmorRefreshRunStatus,
    cx: &mut Ctx,
    policy: Option<&ValidPolicy>,
    before: &(Phase, String),
) {
    clip_messages(s);
    s.progress.summary = format!("{}/{}", s.progress.refreshed, s.progress.total);
    let g = cx.obs.generation;
    for (type_, on) in [
        ("Complete", s.phase == Phase::Completed),
        // So `kubectl wait --for=condition=Failed` ends, and a wait for Complete can be
        // paired with it instead of running into its timeout.
        ("Failed", s.phase == Phase::Failed),
        (
            "Progressing",
            matches!(s.phase, Phase::Batching | Phase::Pending),
        ),
        ("Paused", s.phase == Phase::Paused),
    ] {
        let c = Condition::new(type_, on, &s.reason, s.message.clone());
        set_condition(&mut s.conditions, c, cx.now, g);
    }
    if policy.is_some_and(|p| p.spec.rollout.pacing == Pacing::Window) {
        milestone(old, s, cx);
    }
    if (s.phase, s.reason.clone()) != *before {
        let warning = matches!(
            s.reason.as_str(),
            "CircuitOpen" | "PolicyNotFound" | "PolicyInvalid"
        ) || s.phase == Phase::Failed;
        cx.event(warning, &s.reason, format!("{:?}: {}", s.phase, s.message));
    }
}

fn acts(cx: &Ctx) -> bool {
    cx.actions
        .iter()
        .any(|a| !matches!(a, Action::Event { .. }))
}

/// At once after acting; else at the earliest time something is due (at most 5 min).
fn requeue(s: &ArmorRefreshRunStatus, cx: &Ctx) -> Option<Duration> {
    if s.phase.is_terminal() {
        return None;
    }
    if acts(cx) {
        return Some(Duration::ZERO);
    }
    let next = cx.wake.iter().min().copied();
    Some(
        next.map_or(POLL, |t| (t - cx.now).to_std().unwrap_or(Duration::ZERO))
            .min(Duration::from_secs(300)),
    )
}

/// See [`Step::persist`].
fn must_persist(
    old: &ArmorRefreshRunStatus,
    s: &ArmorRefreshRunStatus,
    cx: &Ctx,
    before: &(Phase, String),
) -> bool {
    acts(cx)
        || (s.phase, s.reason.clone()) != *before
        || s.progress.failed != old.progress.failed
        || s.observed_generation != old.observed_generation
        || deferrals(s) > deferrals(old)
}

/// Refusals and errors behind the deferred pods: a new deferral is written at once, so
/// status shows why a pod waits and until when.
fn deferrals(s: &ArmorRefreshRunStatus) -> u64 {
    s.current_batch
        .iter()
        .flat_map(|b| &b.pods)
        .filter(|p| p.state == PodState::Deferred)
        .map(|p| u64::from(p.attempts) + u64::from(p.errors))
        .sum()
}

/// Pacing Window has no waves to announce: an event at each tenth of the run refreshed.
fn milestone(old: &ArmorRefreshRunStatus, s: &ArmorRefreshRunStatus, cx: &mut Ctx) {
    let total = u64::from(s.progress.total.max(1));
    let tenth = |n: u32| u64::from(n) * 10 / total;
    if tenth(s.progress.refreshed) > tenth(old.progress.refreshed) && !s.phase.is_terminal() {
        cx.event(
            false,
            "Progress",
            format!(
                "{} of {} refreshed, {} in flight",
                s.progress.refreshed, s.progress.total, s.progress.disrupted
            ),
        );
    }
}

/// Whole seconds after the second a run started before its first eviction. Creation times
/// have one-second resolution, and a pod created in the second the run started must be
/// known to predate every eviction (a target, never a replacement); `now` is the API
/// server's clock as the shell knows it, within a second, so the first eviction waits until
/// the server's clock is surely past that second.
const START_GUARD: i64 = 3;

/// Still too close to the run's start to evict; and the first instant it no longer is.
fn too_soon(s: &ArmorRefreshRunStatus, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let st = s.started_at?.timestamp();
    (now.timestamp() < st.saturating_add(START_GUARD))
        .then(|| DateTime::from_timestamp(st.saturating_add(START_GUARD), 0).unwrap_or(now))
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
    let (Some(policy), Some(selection)) = (policy, selection) else {
        return policy_gate(s, cx);
    };
    if let Some(g) = start_gate(s, cx, policy, selection) {
        return g;
    }
    if let Some(g) = breaker_gate(s, cx, policy, selection) {
        return g;
    }
    time_gate(s, cx, policy)
}

/// No valid policy: wait for one, or end a run whose policy was deleted.
fn policy_gate(s: &ArmorRefreshRunStatus, cx: &Ctx) -> Gate {
    let obs = cx.obs;
    let name = &obs.spec.policy_ref.name;
    let started = s.phase != Phase::Pending;
    match obs.policy {
        PolicyView::NotFound if !started => Gate::Wait(
            Phase::Pending,
            "PolicyNotFound".into(),
            format!("ArmorRefreshPolicy {name:?} does not exist; waiting for it"),
        ),
        PolicyView::NotFound => Gate::Finish(
            Phase::Failed,
            "PolicyNotFound".into(),
            format!(
                "ArmorRefreshPolicy {name:?} was deleted mid-run; recreate it and create a new run to continue"
            ),
        ),
        PolicyView::Invalid(e) => {
            let phase = if started {
                Phase::Paused
            } else {
                Phase::Pending
            };
            Gate::Wait(
                phase,
                "PolicyInvalid".into(),
                format!("ArmorRefreshPolicy {name:?} is invalid: {e}"),
            )
        }
        // A valid policy comes with its selection: not gated here.
        PolicyView::Valid(_) => Gate::Open,
    }
}

/// Before the start: another run of the policy goes first; a dry run plans and ends.
fn start_gate(
    s: &mut ArmorRefreshRunStatus,
    cx: &mut Ctx,
    policy: &ValidPolicy,
    selection: &Selection,
) -> Option<Gate> {
    let obs = cx.obs;
    let name = &obs.spec.policy_ref.name;
    if s.phase != Phase::Pending {
        return None;
    }
    if let Some(other) = obs.blocked_by {
        return Some(Gate::Wait(
            Phase::Pending,
            "AnotherRunActive".into(),
            format!("run {other:?} of policy {name:?} is active; this run starts when it ends"),
        ));
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
        return Some(Gate::Finish(
            Phase::Completed,
            "DryRun".into(),
            format!(
                "dry run: {} targets in {} batches, estimated {}; nothing evicted",
                p.targets,
                p.batches,
                p.estimated_duration.clone().unwrap_or_default()
            ),
        ));
    }
    None
}

/// The circuit breaker: open past `health.maxFailures`; a new resumeToken closes it.
fn breaker_gate(
    s: &mut ArmorRefreshRunStatus,
    cx: &mut Ctx,
    policy: &ValidPolicy,
    selection: &Selection,
) -> Option<Gate> {
    let obs = cx.obs;
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
        return Some(Gate::Wait(
            Phase::Paused,
            "CircuitOpen".into(),
            format!(
                "{failures} replacements failed to become Ready (tolerated: {threshold}); fix the cause, then set spec.resumeToken to a new value to continue"
            ),
        ));
    }
    None
}

/// A user's pause, and the maintenance windows.
fn time_gate(s: &mut ArmorRefreshRunStatus, cx: &mut Ctx, policy: &ValidPolicy) -> Gate {
    let obs = cx.obs;
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

mod observe;
mod refill;
mod size;

use observe::*;
use refill::*;
pub use refill::{context, context_allowed, estimate_end, summary};
use size::*;
pub use size::{clip, json_len, worst_bytes};

#[cfg(test)]
mod spec_fuzz;
#[cfg(test)]
mod tests;
