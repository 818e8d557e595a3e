//! `ArmorRefreshRun`: one execution of a policy. Its status is the operator's write-ahead log.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Condition;

/// How many finished waves a run's status keeps.
pub const HISTORY_LIMIT: usize = 10;
/// How many recently settled pods a run's status keeps.
pub const RECENT_LIMIT: usize = 10;

/// An `ArmorRefreshRun` refreshes the running pods of one `ArmorRefreshPolicy` that lack
/// their AppArmor profile: batch by batch, inside the policy's windows, within its
/// disruption limits. The operator writes only its status; pause, resume and resume after
/// the circuit breaker opened are all done by editing this spec.
// kube-derive repeats `type_` per printer column, which clippy takes for a duplicate.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "refresh.armor.dev",
    version = "v1alpha1",
    kind = "ArmorRefreshRun",
    plural = "armorrefreshruns",
    shortname = "arr",
    category = "armor",
    status = "ArmorRefreshRunStatus",
    printcolumn(name = "Policy", type_ = "string", json_path = ".spec.policyRef.name"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Progress",
        type_ = "string",
        json_path = ".status.progress.summary",
        description = "refreshed/total"
    ),
    printcolumn(
        name = "Disrupted",
        type_ = "integer",
        json_path = ".status.progress.disrupted",
        description = "Pods this run disrupts now"
    ),
    printcolumn(
        name = "Batch",
        type_ = "integer",
        json_path = ".status.currentBatch.index",
        description = "The wave in flight (pacing Waves)",
        priority = 1
    ),
    printcolumn(name = "Reason", type_ = "string", json_path = ".status.reason"),
    printcolumn(
        name = "Next",
        type_ = "date",
        json_path = ".status.nextBatchAt",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ArmorRefreshRunSpec {
    /// The policy this run executes. Immutable: create a new run for another policy.
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.policyRef is immutable; create a new ArmorRefreshRun for another policy"))]
    pub policy_ref: PolicyRef,
    /// Plan only: compute targets, skips and batches into status, evict nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// Pause: no eviction starts while true; replacements already in flight are still watched.
    #[serde(default)]
    pub paused: bool,
    /// Set a new value (any string, e.g. a timestamp) to close an open circuit breaker and
    /// continue. The operator records the value it acted on in `status.resumeToken`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(max = 253))]
    pub resume_token: String,
}

/// Names an `ArmorRefreshPolicy`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct PolicyRef {
    /// Name of the (cluster-scoped) `ArmorRefreshPolicy`.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// Phase of a run.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum Phase {
    /// Not started: resolving the policy and planning, or waiting for another run of the policy.
    #[default]
    Pending,
    /// Refreshing: the disruption budget is being refilled (pacing Window), or a wave is in
    /// flight (pacing Waves).
    Batching,
    /// Not starting batches: see `reason` (UserPaused, OutsideWindow, CircuitOpen, ...).
    Paused,
    /// Every target is refreshed, failed or skipped (or the dry run has planned).
    Completed,
    /// Cannot proceed (e.g. its policy was deleted mid-run).
    Failed,
}

impl Phase {
    pub fn is_terminal(self) -> bool {
        matches!(self, Phase::Completed | Phase::Failed)
    }
}

/// Observed state of a run, written by the operator only.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ArmorRefreshRunStatus {
    /// Pending → Batching ⇄ Paused → Completed; Failed only for what cannot proceed.
    #[serde(default)]
    pub phase: Phase,
    /// Why the run is in its phase: Planning, Refreshing, OutsideWindow, UserPaused,
    /// CircuitOpen, PolicyNotFound, PolicyInvalid, AnotherRunActive, DryRun, Done, ...
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// A sentence for people.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// When the first batch started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    /// When the run reached Completed or Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<DateTime<Utc>>,
    /// Earliest time the next batch may start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_batch_at: Option<DateTime<Utc>>,
    /// When the next maintenance window opens (while outside every window).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_window_at: Option<DateTime<Utc>>,
    /// Counters.
    #[serde(default)]
    pub progress: Progress,
    /// The plan as computed when the run started (and refreshed at each batch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<PlanSummary>,
    /// The pods in flight, written before any of them is evicted: the window (pacing
    /// Window; settled pods leave it at once) or the wave (pacing Waves).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_batch: Option<BatchStatus>,
    /// Pods whose replacement missed its ready timeout and is not Ready yet: they still count
    /// as disrupted, so later batches shrink until they recover.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unhealthy: Vec<BatchPod>,
    /// The last finished waves, newest last (at most 10; pacing Waves).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<BatchRecord>,
    /// The pods that most recently left the window, newest last (at most 10; pacing Window).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recent: Vec<Completion>,
    /// Slots of the window resting for `interval` after their pod was refreshed (pacing
    /// Window): refilled once `until` passes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resting: Vec<RestingSlots>,
    /// `Complete`, `Progressing`, `Paused`.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// The `spec.resumeToken` the operator last acted on.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub resume_token: String,
    /// `progress.failed` when the circuit breaker was last reset; failures beyond it count.
    #[serde(default)]
    pub failure_baseline: u32,
    /// Pods this run gave up on without evicting them (UIDs): the Eviction API refused them
    /// for good, or failed too many times. Never planned again by this run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub given_up: Vec<String>,
    /// Replacement pods the last finished batch matched to its evictions (UIDs): never
    /// matched again to an eviction of the next batch.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recent_replacements: Vec<String>,
}

/// Run counters.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Progress {
    /// Targets of the run: refreshed + failed + in flight + pending.
    pub total: u32,
    /// Targets whose replacement is Ready with its profile.
    pub refreshed: u32,
    /// Targets not yet started.
    pub pending: u32,
    /// Pods this run disrupts now: evicted (or maybe evicted, the answer lost) and not back
    /// yet, or failed and not recovered. At most the policy's `batchSize`.
    #[serde(default)]
    pub disrupted: u32,
    /// Targets whose replacement missed its ready timeout.
    pub failed: u32,
    /// Targets replaced by a Ready pod that lacks its profile (created while the webhook
    /// was unavailable); the next run refreshes those.
    #[serde(default)]
    pub without_profile: u32,
    /// Targets that went away without being evicted by this run, or whose workload was
    /// scaled down or deleted so nothing replaced them.
    #[serde(default)]
    pub gone: u32,
    /// Selected pods that are not targets (see `plan.skipped` for reasons).
    pub skipped: u32,
    /// "refreshed/total", for the printer column.
    #[serde(default)]
    pub summary: String,
}

/// What the planner found.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlanSummary {
    /// Pods to refresh.
    pub targets: u32,
    /// Pods not refreshed, counted by reason.
    #[serde(default)]
    pub skipped: BTreeMap<String, u32>,
    /// Number of batches planned.
    pub batches: u32,
    /// Pods per batch.
    pub batch_size: u32,
    /// Estimated duration of the rest of the run, windows included (Go duration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimated_duration: Option<String>,
    /// Estimated completion time, windows included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimated_completion: Option<DateTime<Utc>>,
    /// The first batches (namespace/name), for a dry run to show.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub first_batches: Vec<Vec<String>>,
}

/// The batch in flight.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BatchStatus {
    /// 1-based wave number; 0 for the window (pacing Window).
    pub index: u32,
    /// When the wave was planned, or the window opened.
    pub started_at: DateTime<Utc>,
    /// Its pods and their states.
    pub pods: Vec<BatchPod>,
}

/// One pod of a batch.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BatchPod {
    /// Namespace of the pod.
    pub namespace: String,
    /// Name of the pod.
    pub name: String,
    /// UID of the pod: what is evicted, so a pod recreated under the same name is never evicted by mistake.
    pub uid: String,
    /// Node it ran on.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node: String,
    /// Its topology domain (zone).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub zone: String,
    /// The controlling workload as Kind/name (ReplicaSets resolved to their Deployment).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub owner: String,
    /// Whether the pod mounts PersistentVolumeClaims (longer ready timeout).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub volumes: bool,
    /// Planned, Evicting, Deferred, Evicted, Refreshed, Failed, Gone.
    pub state: PodState,
    /// When the eviction was requested (written before the request is sent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_at: Option<DateTime<Utc>>,
    /// When the eviction succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evicted_at: Option<DateTime<Utc>>,
    /// For a Deferred pod: when the eviction is retried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_at: Option<DateTime<Utc>>,
    /// UID of the pod that replaced it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub replacement: String,
    /// How many times the eviction was refused (PodDisruptionBudget).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attempts: u32,
    /// Its last eviction request was refused by a PodDisruptionBudget: retried as soon as
    /// every budget of the pod allows a disruption again (or at `retryAt`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pdb_refused: bool,
    /// How many eviction requests failed otherwise (overload, server errors, timeouts);
    /// at [`crate::run::MAX_ERRORS`] the pod is Failed.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub errors: u32,
    /// An eviction request of this pod got no answer (timeout, lost connection): it may
    /// have been evicted, so it counts as disrupted until the cluster says otherwise.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub uncertain: bool,
    /// Ready pods of its workload when it was planned: its workload is whole again once it
    /// has as many (or as many as it now wants, after a scale-down).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_before: Option<u32>,
    /// Replicas its workload wanted when it was planned (for kinds whose size the operator
    /// reads): wanting fewer later is a scale-down, not a rollout's surge going away.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wanted_before: Option<u32>,
    /// Last thing that happened to it, for people.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

impl BatchPod {
    /// Disrupted by this run now: evicted (or its eviction requested) and not back, or an
    /// unanswered request may have evicted it.
    pub fn is_disrupted(&self) -> bool {
        self.state.is_disrupting() || (self.uncertain && !self.state.is_settled())
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// The state of one pod of a batch.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum PodState {
    /// In the batch, not evicted yet (written before any eviction: the write-ahead record).
    #[default]
    Planned,
    /// Eviction requested.
    Evicting,
    /// The eviction was refused (PodDisruptionBudget) or failed for a transient reason;
    /// retried later with backoff, never forced.
    Deferred,
    /// Evicted; waiting for a Ready replacement with its profile.
    Evicted,
    /// A replacement with the profile is Ready.
    Refreshed,
    /// The replacement missed its ready timeout, or the Eviction API refused the pod for
    /// good (a 4xx other than a PodDisruptionBudget's 429, or too many errors).
    Failed,
    /// The pod went away or got its profile without being evicted by this run, or its
    /// workload was scaled down or deleted so nothing replaces it.
    Gone,
}

impl PodState {
    /// Evicted and not back yet: counts against the batch size.
    pub fn is_disrupting(self) -> bool {
        matches!(self, PodState::Evicting | PodState::Evicted)
    }
    /// Nothing more will happen to it in this batch.
    pub fn is_settled(self) -> bool {
        matches!(
            self,
            PodState::Refreshed | PodState::Failed | PodState::Gone
        )
    }
}

/// A finished batch.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BatchRecord {
    /// 1-based batch number.
    pub index: u32,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// When its last pod settled.
    pub finished_at: DateTime<Utc>,
    /// Pods in it.
    pub pods: u32,
    /// Of which refreshed.
    pub refreshed: u32,
    /// Of which failed.
    pub failed: u32,
    /// Of which gone without eviction.
    #[serde(default)]
    pub gone: u32,
}

/// A pod that left the window.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Completion {
    /// namespace/name.
    pub pod: String,
    /// Refreshed, Failed or Gone.
    pub state: PodState,
    /// When it settled.
    pub at: DateTime<Utc>,
    /// Seconds from its eviction request to its replacement being Ready (when evicted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds: Option<u32>,
}

/// Window slots resting until a time.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestingSlots {
    /// When they may be refilled.
    pub until: DateTime<Utc>,
    /// How many.
    pub slots: u32,
}
