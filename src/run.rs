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
/// replacement's UID, the attempt and error counts, the uncertain flag and a message of at
/// most [`POD_MESSAGE_MAX`].
pub const POD_GROWTH: usize = 440;
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

/// `t + d`, saturating: no duration, however long, makes a step panic.
fn later(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    crate::schedule::saturating_add(t, td(d))
}

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
fn is_plain(c: char) -> bool {
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
fn clip_messages(s: &mut ArmorRefreshRunStatus) {
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
            if s.current_batch.as_ref().is_some_and(|b| {
                b.pods
                    .iter()
                    .any(|p| p.state.is_disrupting() || (p.uncertain && !p.state.is_settled()))
            }) {
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
    clip_messages(&mut s);
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

/// A batch was just written ahead: evict right after the status is persisted.
fn needs_immediate(s: &ArmorRefreshRunStatus, open: bool, now: DateTime<Utc>) -> bool {
    open && too_soon(s, now).is_none()
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

/// Pods that may replace an evicted one, by (namespace, owner as `Kind/name`), oldest
/// first: built once per step, so matching a batch costs one pass over the pods instead
/// of one pass per evicted pod (10,000 × 100,000 at scale).
struct Candidates<'a> {
    by_owner: HashMap<(String, String), Vec<(i64, &'a Pod)>>,
}

impl<'a> Candidates<'a> {
    fn new(facts: &'a ClusterFacts, wanted: &BTreeSet<(String, String)>) -> Candidates<'a> {
        let mut by_owner: HashMap<(String, String), Vec<(i64, &'a Pod)>> = HashMap::new();
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
    fn find(
        &self,
        p: &BatchPod,
        since: DateTime<Utc>,
        policy: Option<&ValidPolicy>,
        facts: &ClusterFacts,
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
        let list = self.by_owner.get(&(p.namespace.clone(), p.owner.clone()))?;
        // A DaemonSet's replacement is the one on the evicted pod's node.
        let daemon = p.owner.starts_with("DaemonSet/");
        let on_node = |cand: &Pod| {
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
fn lands_unprofiled(policy: &ValidPolicy, facts: &ClusterFacts, pod: &Pod) -> bool {
    let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) else {
        return false;
    };
    !compliance::node_enforces(policy, facts.node_labels(node), facts.agents.contains(node))
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

/// Every other pod of the entry's workload is Ready and not being deleted (the rule for
/// entries written before `readyBefore` was recorded).
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

    fn of(&self, p: &BatchPod) -> u32 {
        self.ready
            .get(&(p.namespace.clone(), p.owner.clone()))
            .copied()
            .unwrap_or(0)
    }

    /// The entry's workload is whole again: as many Ready pods as when the pod was planned,
    /// or as many as it now wants if it was scaled down. Pods unready before the eviction
    /// (an unrelated crash loop) are not this run's to wait for.
    fn whole(&self, p: &BatchPod, facts: &ClusterFacts) -> bool {
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
    fn not_wanted(&self, p: &BatchPod, facts: &ClusterFacts) -> bool {
        let (Some(before), Some(want)) = (p.wanted_before, desired(facts, &p.namespace, &p.owner))
        else {
            return false;
        };
        want < before && self.of(p) >= want
    }
}

/// Replicas a workload wants now, from its own object (Some(0) once it is deleted); `None`
/// for kinds whose size the operator does not read (Jobs, other API groups, bare pods).
fn desired(facts: &ClusterFacts, ns: &str, owner: &str) -> Option<u32> {
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
    // Pods that may be Evicted by the time the loop reaches them (a lost outcome turns
    // Evicting into Evicted in the same pass, and is matched from the next step on).
    let wanted: BTreeSet<(String, String)> = batch
        .pods
        .iter()
        .filter(|p| p.state == PodState::Evicted && !p.uid.is_empty())
        .map(|p| (p.namespace.clone(), p.owner.clone()))
        .collect();
    let candidates = Candidates::new(obs.facts, &wanted);
    let readiness = Readiness::new(
        obs.facts,
        batch.pods.iter().filter(|p| !p.state.is_settled()),
    );
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
                if gone_or_terminating && p.uncertain {
                    // An earlier request got no answer, and the pod is gone: count it as ours.
                    mark_evicted(p, now, "evicted (the answer to its eviction was lost)");
                } else if gone_or_terminating {
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
            PodState::Evicting => {
                let failed = on_outcome(p, cx, result, workload, gone_or_terminating);
                if failed {
                    s.progress.failed += 1;
                    if !p.uid.is_empty() {
                        s.given_up.push(p.uid.clone());
                    }
                    // Its eviction may have happened: it counts as disrupted until whole.
                    if p.uncertain {
                        newly_failed.push(p.clone());
                    }
                }
            }
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
                } else if let Some((r, true, with_profile)) = candidates
                    .find(p, since, policy, obs.facts, &claimed, s.started_at)
                    .inspect(|(r, _, _)| {
                        // Reserved for this eviction even before it is Ready.
                        claimed.insert(r.metadata.uid.clone().unwrap_or_default());
                    })
                {
                    let uid = r.metadata.uid.clone().unwrap_or_default();
                    p.state = PodState::Refreshed;
                    p.replacement = uid.clone();
                    let elsewhere = policy.is_some_and(|pol| lands_unprofiled(pol, obs.facts, r));
                    if with_profile {
                        s.progress.refreshed += 1;
                        p.message = format!("replaced by {}", r.name_any());
                    } else if elsewhere {
                        // Scheduled where no agent loads profiles: rightly without one, and
                        // not a target there.
                        s.progress.refreshed += 1;
                        p.message = clip(
                            format!(
                                "replaced by {} on {}, where the policy injects nothing",
                                r.name_any(),
                                r.spec
                                    .as_ref()
                                    .and_then(|s| s.node_name.as_deref())
                                    .unwrap_or("?")
                            ),
                            POD_MESSAGE_MAX,
                        );
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
                if p.state == PodState::Evicted
                    && !p.owner.starts_with("Pod/")
                    && readiness.not_wanted(p, obs.facts)
                {
                    // A scale-down or a deleted workload: no replacement is coming, and none
                    // is missing.
                    p.state = PodState::Gone;
                    p.message =
                        "its workload was scaled down or deleted: nothing replaces it".into();
                }
                if p.state == PodState::Evicted {
                    let deadline = later(timeout_from, ready_timeout(policy, p));
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
                        cx.wake_at(later(now, POLL));
                    }
                }
            }
            PodState::Refreshed | PodState::Failed | PodState::Gone => {}
        }
    }
    s.unhealthy.extend(newly_failed);
    s.current_batch = Some(batch);
}

fn mark_evicted(p: &mut BatchPod, now: DateTime<Utc>, message: &str) {
    p.state = PodState::Evicted;
    // Its replacement may be older than this step: date the eviction from when it was
    // requested (written ahead).
    p.evicted_at = Some(p.requested_at.unwrap_or(now));
    p.message = message.into();
}

/// Applies the answer to an eviction (or restart) request. Returns whether the pod is now
/// Failed.
fn on_outcome(
    p: &mut BatchPod,
    cx: &mut Ctx,
    result: Option<&Outcome>,
    workload: bool,
    gone_or_terminating: bool,
) -> bool {
    let now = cx.now;
    let who = format!("{}/{}", p.namespace, p.name);
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
fn defer(p: &mut BatchPod, cx: &mut Ctx, wait: Duration, why: String) {
    let at = later(cx.now, wait);
    p.state = PodState::Deferred;
    p.retry_at = Some(at);
    p.message = format!("{why} at {}", at.to_rfc3339());
    cx.wake_at(at);
}

fn fail(p: &mut BatchPod, cx: &mut Ctx, message: String) -> bool {
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
fn backoff(base: Duration, attempts: u32, max: Duration) -> Duration {
    base.saturating_mul(1 << attempts.saturating_sub(1).min(16))
        .min(max)
}

/// Failed replacements still count as disrupted until their workload is whole again
/// (every pod Ready). Matching one replacement would be ambiguous here: by then later
/// batches may have created Ready pods of the same workload.
fn observe_unhealthy(s: &mut ArmorRefreshRunStatus, cx: &mut Ctx) {
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

fn in_flight(s: &ArmorRefreshRunStatus, others: &[BatchPod], unready: &[Target]) -> InFlight {
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
        first_batches: preview_batches(&batches, sel, preview),
    }
}

/// The first `count` batches by pod name, within [`PREVIEW_BUDGET`] bytes: a dry run of a
/// large cluster shows the start of its plan, not a status etcd refuses.
fn preview_batches(batches: &[Vec<usize>], sel: &Selection, count: usize) -> Vec<Vec<String>> {
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

/// The next batch, planned by `plan(k)` for at most `k` pods, within what the status can
/// hold: every pod of it at its largest, plus the status as it is, under [`STATUS_BUDGET`].
/// A smaller batch is planned again rather than cut, so every planner rule (StatefulSet
/// order, leader last) holds for it. Returns the batch and whether the budget capped it.
fn fit_in_status(
    s: &ArmorRefreshRunStatus,
    budget: u32,
    plan: impl Fn(u32) -> Vec<BatchPod>,
) -> (Vec<BatchPod>, bool) {
    // The batch record's own keys and index around its pods, and the run's message and
    // its three conditions, rewritten after this is measured.
    const BATCH_OVERHEAD: usize = 128 + 4 * (MESSAGE_MAX + 64);
    let room = STATUS_BUDGET.saturating_sub(json_len(s) + BATCH_OVERHEAD);
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

#[cfg(test)]
mod spec_fuzz;
#[cfg(test)]
mod tests;
