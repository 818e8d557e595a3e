//! `ArmorRefreshPolicy`: what must carry which AppArmor profile, and how fast running pods may be refreshed.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Condition;

/// The default profile template: KubeArmor's naming.
pub const DEFAULT_TEMPLATE: &str = "localhost/kubearmor-{namespace}-{owner}-{container}";
/// The default key for zones.
pub const DEFAULT_TOPOLOGY_KEY: &str = "topology.kubernetes.io/zone";
/// The node label KubeArmor's snitch sets to the enforcer it detected (`apparmor`, `bpf`,
/// `selinux` or `none`); KubeArmor's webhook annotates only nodes labelled `apparmor`.
pub const ENFORCER_LABEL: &str = "kubearmor.io/enforcer";
/// The label of every KubeArmor pod (agent, relay, controller, snitch): never touched.
pub const KUBEARMOR_APP_LABEL: &str = "kubearmor-app";

// CEL rule shared by the count-or-percentage fields. The upper bound keeps counts in the
// 32 bits of an IntOrString: a larger one would be stored, then unreadable by every client.
// string() reads either form: 5, "5" and "10%" (Helm renders counts as strings too).
const COUNT_OR_PERCENT_MIN1: &str = "string(self).matches('^([1-9][0-9]{0,5}|1000000)$') || string(self).matches('^([1-9][0-9]?|100)%$')";
// Durations: Go syntax (each field's pattern), at most 20 characters and no run of 7 digits (so
// CEL's own parser cannot overflow: at most 3 × 999999h), and at most one year.
const DURATION_RULE: &str = "!self.matches('[0-9]{7}') && duration(self) <= duration('8760h')";
// Profile names are file names for KubeArmor's agent (appArmorEnforcer.go refuses '/', '\\'
// and '..'): none of them after `localhost/`.
const PROFILE_RULE: &str = "!self.startsWith('localhost/') || (!self.substring(10).contains('/') && !self.contains('..') && !self.contains('\\\\'))";
const COUNT_OR_PERCENT_MIN0: &str = "string(self).matches('^([0-9]|[1-9][0-9]{1,5}|1000000)$') || string(self).matches('^([0-9]|[1-9][0-9]|100)%$')";

/// An `ArmorRefreshPolicy` selects pods, names the AppArmor profile each of their containers
/// must carry, and bounds how fast pods that run without it may be recreated (batches,
/// maintenance windows, per-node and per-zone limits, a health circuit breaker).
/// New pods get the profile from the admission webhook; running pods are refreshed by
/// `ArmorRefreshRun`s of this policy.
// kube-derive repeats `type_` per printer column, which clippy takes for a duplicate.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "refresh.armor.dev",
    version = "v1alpha1",
    kind = "ArmorRefreshPolicy",
    plural = "armorrefreshpolicies",
    shortname = "arp",
    category = "armor",
    status = "ArmorRefreshPolicyStatus",
    printcolumn(
        name = "Trigger",
        type_ = "string",
        json_path = ".spec.trigger",
        description = "Manual or Automatic"
    ),
    printcolumn(
        name = "Targets",
        type_ = "integer",
        json_path = ".status.targets.total",
        description = "Pods this policy selects"
    ),
    printcolumn(
        name = "Pending",
        type_ = "integer",
        json_path = ".status.targets.pending",
        description = "Selected pods that still lack their profile"
    ),
    printcolumn(
        name = "Active run",
        type_ = "string",
        json_path = ".status.activeRun",
        description = "The run refreshing pods now"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ArmorRefreshPolicySpec {
    /// Which pods the policy covers. Empty selects every pod in every namespace (minus `exclude`).
    #[serde(default)]
    pub selector: TargetSelector,
    /// Pods the policy never touches, even when `selector` matches them. Mirror/static pods,
    /// completed pods and pods being deleted are never targets either.
    #[serde(default)]
    pub exclude: Exclusions,
    /// The profile each container must carry and how it is written.
    #[serde(default)]
    pub profile: ProfileSpec,
    /// How running pods are refreshed: strategy, batch size, pace and spread.
    #[serde(default)]
    pub rollout: RolloutSpec,
    /// Maintenance windows. No batch starts outside every window; a batch in flight when a
    /// window closes finishes. Empty means always open.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub windows: Vec<Window>,
    /// The circuit breaker: how many replacements may fail before a run pauses.
    #[serde(default)]
    pub health: HealthSpec,
    /// Ordering and pacing for stateful workloads.
    #[serde(default)]
    pub stateful: StatefulSpec,
    /// `Manual`: runs are created by people or GitOps. `Automatic`: the operator creates a run
    /// whenever selected pods lack their profile and no run of this policy is active.
    #[serde(default)]
    pub trigger: Trigger,
    /// How many finished runs of this policy are kept, and for how long. Runs are deleted
    /// oldest first; a run that has not finished is never deleted, nor is the policy's last
    /// run (the Automatic trigger reads it to hold off after a failure).
    #[serde(default)]
    pub retention: RetentionSpec,
}

/// Finished runs kept per policy (as a CronJob's history limits), and an optional time to
/// live after finishing (as a Job's `ttlSecondsAfterFinished`). Manual and Automatic runs
/// count alike.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetentionSpec {
    /// Completed runs kept besides the last run, the newest; older ones are deleted.
    #[serde(default = "default_completed_runs")]
    #[schemars(range(min = 0, max = 1000))]
    pub completed_runs: u32,
    /// Failed runs kept besides the last run, the newest; older ones are deleted.
    #[serde(default = "default_failed_runs")]
    #[schemars(range(min = 0, max = 1000))]
    pub failed_runs: u32,
    /// Delete a finished run this long after it finished, however many are kept (at most
    /// 8760h). Empty: runs stay until the counts above remove them.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(
        length(max = 20),
        regex(pattern = r"^(([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+)?$")
    )]
    #[x_kube(validation = Rule::new("self == '' || (!self.matches('[0-9]{7}') && duration(self) <= duration('8760h'))").message("spec.retention.ttlAfterFinished: must be empty or a duration of at most 8760h (one year), such as \"168h\""))]
    pub ttl_after_finished: String,
}

fn default_completed_runs() -> u32 {
    10
}
fn default_failed_runs() -> u32 {
    3
}

impl Default for RetentionSpec {
    fn default() -> Self {
        RetentionSpec {
            completed_runs: default_completed_runs(),
            failed_runs: default_failed_runs(),
            ttl_after_finished: String::new(),
        }
    }
}

/// Which pods a policy covers.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetSelector {
    /// Label selector over namespaces. Empty or absent selects every namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
    /// Label selector over pods. Empty or absent selects every pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_selector: Option<LabelSelector>,
    /// Also refresh bare pods (no controlling owner). Off by default: an evicted bare pod is
    /// gone for good, since nothing recreates it.
    #[serde(default)]
    pub include_bare_pods: bool,
    /// Also refresh pods of Jobs and CronJobs. Off by default: evicting a Job's pod uses up
    /// its `backoffLimit` (a Job with `backoffLimit: 0` fails), and a Job's pods end by
    /// themselves; the next ones get their profile at creation.
    #[serde(default)]
    pub include_jobs: bool,
    /// Also refresh pods of `OnDelete` StatefulSets and DaemonSets that run an older revision
    /// than their workload's template. Off by default: the replacement would run the staged
    /// template, rolling out a change someone chose to roll out by hand.
    #[serde(default)]
    pub include_staged_revisions: bool,
}

fn default_excluded_namespaces() -> Vec<String> {
    vec!["kube-system".to_string()]
}

/// Pods a policy never touches.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Exclusions {
    /// Namespaces whose pods are never injected or refreshed. Defaults to `[kube-system]`;
    /// setting the list replaces the default, so name kube-system again to keep it excluded.
    #[serde(default = "default_excluded_namespaces")]
    #[schemars(
        length(max = 256),
        inner(regex(pattern = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"))
    )]
    pub namespaces: Vec<String>,
    /// Pods matching this label selector are never injected or refreshed,
    /// e.g. `matchLabels: {refresh.armor.dev/exclude: "true"}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_selector: Option<LabelSelector>,
    /// Kinds of controlling owner whose pods are never refreshed, e.g. `[DaemonSet, Job]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(regex(pattern = r"^[A-Z][A-Za-z0-9]{0,62}$")))]
    pub owner_kinds: Vec<String>,
}

impl Default for Exclusions {
    fn default() -> Self {
        Exclusions {
            namespaces: default_excluded_namespaces(),
            pod_selector: None,
            owner_kinds: vec![],
        }
    }
}

fn default_template() -> String {
    DEFAULT_TEMPLATE.to_string()
}

/// The desired profile and how it is written onto pods.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.format) || self.format == 'Annotation' || (has(self.injectAt) && self.injectAt == 'Create')").message("spec.profile: format Field or Both needs injectAt: Create (the default injectAt Binding can only write annotations: a Binding carries no pod spec)"))]
#[x_kube(validation = Rule::new("!has(self.injectAt) || self.injectAt != 'Create' || !has(self.enforcingNodeSelector) || ((!has(self.enforcingNodeSelector.matchLabels) || size(self.enforcingNodeSelector.matchLabels) == 0) && (!has(self.enforcingNodeSelector.matchExpressions) || size(self.enforcingNodeSelector.matchExpressions) == 0))").message("spec.profile.enforcingNodeSelector: with injectAt Create the node is unknown when the webhook injects, so replacements would never get their profile; use injectAt: Binding"))]
#[x_kube(validation = Rule::new("!has(self.injectAt) || self.injectAt != 'Create' || !has(self.requireAgent) || !self.requireAgent").message("spec.profile.requireAgent: with injectAt Create the node is unknown when the webhook injects; use injectAt: Binding"))]
pub struct ProfileSpec {
    /// The profile of each container, with placeholders `{namespace}`, `{owner}` (the
    /// controlling workload: a ReplicaSet's pod-template-hash suffix is trimmed to its
    /// Deployment's name; a bare pod's own name), `{ownerKind}` (lower case), `{pod}` and
    /// `{container}`. `localhost/<name>` names a profile loaded on the node; `runtime/default`
    /// and `unconfined` are the runtime's. Default: KubeArmor's naming.
    #[serde(default = "default_template")]
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^(localhost/[^\s]+|runtime/default|unconfined)$")
    )]
    #[x_kube(validation = Rule::new(PROFILE_RULE).message("spec.profile.template: a localhost/ profile name may not contain '/' or '..' (KubeArmor's agent stores each profile as a file)"))]
    pub template: String,
    /// Where the profile is written: `Annotation`
    /// (`container.apparmor.security.beta.kubernetes.io/<container>`, the default), `Field`
    /// (`securityContext.appArmorProfile`) or `Both`. KubeArmor's agent loads only profiles
    /// named in annotations, and from Kubernetes 1.34 the API server no longer copies the field
    /// into the annotation: `Field` alone suits profiles loaded by other means. `Field` and
    /// `Both` need `injectAt: Create`.
    #[serde(default)]
    pub format: ProfileFormat,
    /// When the webhook injects. `Binding` (default, KubeArmor's own rule): when the scheduler
    /// binds the pod, and only onto a node that enforces AppArmor (`enforcingNodeSelector`,
    /// `requireAgent`); annotations only. `Create`: at pod creation on every node, whether or
    /// not it loads the profile — a node that does not leaves the container unable to start.
    #[serde(default)]
    pub inject_at: InjectAt,
    /// Nodes that enforce AppArmor. Absent: `{matchLabels: {kubearmor.io/enforcer: apparmor}}`
    /// with `injectAt: Binding` (KubeArmor's label), every node with `injectAt: Create` (which
    /// cannot know the node, so takes no other value). Pods on other nodes are not targets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enforcing_node_selector: Option<LabelSelector>,
    /// Inject and refresh only on nodes where a KubeArmor agent pod runs (a Running pod
    /// matching the operator's `--agent-selector`, default `kubearmor-app=kubearmor`): only
    /// the agent loads the profile. Absent: true with `injectAt: Binding`, false with `Create`
    /// (which cannot know the node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_agent: Option<bool>,
    /// Also give init containers a profile. Off by default, as KubeArmor does: its agent loads
    /// profiles when it sees the pod, which races an init container's start.
    #[serde(default)]
    pub include_init_containers: bool,
    /// Per-selector exceptions, first match wins, e.g. `unconfined` for kube-proxy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub overrides: Vec<ProfileOverride>,
}

impl Default for ProfileSpec {
    fn default() -> Self {
        ProfileSpec {
            template: default_template(),
            format: ProfileFormat::default(),
            inject_at: InjectAt::default(),
            enforcing_node_selector: None,
            require_agent: None,
            include_init_containers: false,
            overrides: vec![],
        }
    }
}

/// Where the profile is written on a pod.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ProfileFormat {
    /// The annotation `container.apparmor.security.beta.kubernetes.io/<container>`.
    #[default]
    Annotation,
    /// The field `securityContext.appArmorProfile` of each container.
    Field,
    /// Both the annotation and the field.
    Both,
}

/// When the webhook injects the profile.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum InjectAt {
    /// On pod creation, before the node is known.
    Create,
    /// On `pods/binding`, once the node is known (and on creation of a pod already bound).
    #[default]
    Binding,
}

/// A profile for the pods (and optionally containers) a selector matches.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProfileOverride {
    /// Pods this override applies to.
    pub pod_selector: LabelSelector,
    /// Only in namespaces matching this selector; absent means every namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
    /// Only these containers; empty means every container of the pod.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 63)))]
    pub containers: Vec<String>,
    /// The profile: `unconfined`, `runtime/default`, or `localhost/<name>` (placeholders as in `template`).
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^(localhost/[^\s]+|runtime/default|unconfined)$")
    )]
    #[x_kube(validation = Rule::new(PROFILE_RULE).message("spec.profile.overrides[].profile: a localhost/ profile name may not contain '/' or '..' (KubeArmor's agent stores each profile as a file)"))]
    pub profile: String,
}

fn default_batch_size() -> IntOrString {
    IntOrString::Int(1)
}

// The generated schema marks optional int-or-string fields nullable; read an explicit null
// as the default instead of failing the whole object.
fn batch_size_or_default<'de, D: serde::Deserializer<'de>>(d: D) -> Result<IntOrString, D::Error> {
    Ok(Option::<IntOrString>::deserialize(d)?.unwrap_or_else(default_batch_size))
}
fn max_failures_or_default<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<IntOrString, D::Error> {
    Ok(Option::<IntOrString>::deserialize(d)?.unwrap_or_else(default_max_failures))
}
fn default_interval() -> String {
    "30s".to_string()
}
fn default_ready_timeout() -> String {
    "5m".to_string()
}
fn default_topology_key() -> String {
    DEFAULT_TOPOLOGY_KEY.to_string()
}

/// How running pods are refreshed.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.strategy) || self.strategy == 'Evict' || (!has(self.maxPerNode) && !has(self.maxPerZone))").message("spec.rollout: maxPerNode and maxPerZone only apply to strategy Evict (RolloutRestart leaves pod placement to the workload's controller); remove them or use strategy: Evict"))]
pub struct RolloutSpec {
    /// `Evict`: pod by pod through the Eviction API, so PodDisruptionBudgets hold.
    /// `RolloutRestart`: patch the owning workload's pod template, so its own
    /// maxSurge/maxUnavailable keep capacity; batches then count workloads.
    #[serde(default)]
    pub strategy: Strategy,
    /// Pods disrupted at once: a count (at least 1) or a percentage of the run's targets such
    /// as "10%" (rounded up, at least 1 pod).
    #[serde(
        default = "default_batch_size",
        deserialize_with = "batch_size_or_default"
    )]
    #[schemars(extend("maxLength" = 4))]
    #[x_kube(validation = Rule::new(COUNT_OR_PERCENT_MIN1).message("spec.rollout.batchSize: must be a count from 1 to 1000000 or a percentage from 1% to 100%, such as 5 or \"10%\""))]
    pub batch_size: IntOrString,
    /// `Window` (the default): keep up to `batchSize` pods disrupted at all times, refilling
    /// a slot as soon as its pod's replacement is Ready. `Waves`: disrupt `batchSize` pods,
    /// wait until every one is back, pause for `interval`, then the next wave.
    #[serde(default)]
    pub pacing: Pacing,
    /// `Window`: how long a slot rests after its pod is refreshed before it is refilled.
    /// `Waves`: the pause between the end of one wave and the start of the next. A Go
    /// duration, e.g. "30s"; at most 8760h.
    #[serde(default = "default_interval")]
    #[schemars(
        length(max = 20),
        regex(pattern = r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$")
    )]
    #[x_kube(validation = Rule::new(DURATION_RULE).message("spec.rollout.interval: must be a duration of at most 8760h (one year), such as \"30s\""))]
    pub interval: String,
    /// At most this many pods disrupted at once on one node (1 to 1000000).
    // i64, not u32: a value the API server stores must always decode, so that the operator
    // can say what is wrong with it instead of losing the whole policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000000))]
    pub max_per_node: Option<i64>,
    /// At most this many pods disrupted at once in one topology domain (`topologyKey`; 1 to 1000000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000000))]
    pub max_per_zone: Option<i64>,
    /// The node label that names a pod's zone for `maxPerZone`.
    #[serde(default = "default_topology_key")]
    #[schemars(length(min = 1, max = 317))]
    pub topology_key: String,
    /// How long a replacement may take to become Ready before it counts as a failure
    /// (more than 0s, at most 8760h).
    #[serde(default = "default_ready_timeout")]
    #[schemars(
        length(max = 20),
        regex(pattern = r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$")
    )]
    #[x_kube(validation = Rule::new(DURATION_RULE).message("spec.rollout.readyTimeout: must be a duration of at most 8760h (one year), such as \"5m\""))]
    pub ready_timeout: String,
}

impl Default for RolloutSpec {
    fn default() -> Self {
        RolloutSpec {
            strategy: Strategy::default(),
            pacing: Pacing::default(),
            batch_size: default_batch_size(),
            interval: default_interval(),
            max_per_node: None,
            max_per_zone: None,
            topology_key: default_topology_key(),
            ready_timeout: default_ready_timeout(),
        }
    }
}

/// How disruptions are paced.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum Pacing {
    /// A sliding window: a slot is refilled as soon as its pod is back (after `interval`),
    /// so one slow replacement never idles the other slots.
    #[default]
    Window,
    /// Discrete waves: each waits for its slowest pod, then `interval`.
    Waves,
}

/// How a pod is taken down.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum Strategy {
    /// Through the Eviction API, pod by pod; PodDisruptionBudgets are honoured.
    #[default]
    Evict,
    /// By patching the owning workload's pod template (like `kubectl rollout restart`).
    RolloutRestart,
}

fn default_time_zone() -> String {
    "UTC".to_string()
}

/// A recurring maintenance window.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Window {
    /// When the window opens: a five-field cron expression (minute hour day-of-month month
    /// day-of-week), evaluated in `timeZone`, e.g. "0 1 * * *" for 01:00 every day.
    #[schemars(length(min = 9, max = 128))]
    pub schedule: String,
    /// How long the window stays open (Go duration, e.g. "4h"); real elapsed time, so a window
    /// across a daylight-saving change lasts exactly this long. At most the time between two
    /// openings (a window must close before it opens again).
    #[schemars(
        length(max = 20),
        regex(pattern = r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$")
    )]
    #[x_kube(validation = Rule::new(DURATION_RULE).message("spec.windows[].duration: must be a duration of at most 8760h (one year), such as \"4h\""))]
    pub duration: String,
    /// IANA time zone of `schedule`, e.g. "Europe/Berlin". Default "UTC".
    #[serde(default = "default_time_zone")]
    #[schemars(length(min = 1, max = 64))]
    pub time_zone: String,
}

fn default_max_failures() -> IntOrString {
    IntOrString::Int(0)
}

/// The health circuit breaker.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthSpec {
    /// How many replacements may fail (miss the ready timeout) before the run pauses with
    /// reason CircuitOpen: a count or a percentage of the run's targets (rounded down). The
    /// breaker opens on the first failure beyond this number; default 0 (the first failure).
    #[serde(
        default = "default_max_failures",
        deserialize_with = "max_failures_or_default"
    )]
    #[schemars(extend("maxLength" = 4))]
    #[x_kube(validation = Rule::new(COUNT_OR_PERCENT_MIN0).message("spec.health.maxFailures: must be a count from 0 to 1000000 or a percentage from 0% to 100%, such as 3 or \"5%\""))]
    pub max_failures: IntOrString,
}

impl Default for HealthSpec {
    fn default() -> Self {
        HealthSpec {
            max_failures: default_max_failures(),
        }
    }
}

fn default_true() -> bool {
    true
}
fn default_pvc_timeout() -> String {
    "15m".to_string()
}

/// Ordering and pacing for stateful workloads.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatefulSpec {
    /// Refresh a StatefulSet's pods one at a time, highest ordinal first, and only while every
    /// pod of the set is Ready.
    #[serde(default = "default_true")]
    pub stateful_set_one_at_a_time: bool,
    /// Refresh at most one pod that mounts PersistentVolumeClaims (its own, or generic
    /// ephemeral volumes, which are claims too) per workload at a time.
    #[serde(default = "default_true")]
    pub serialize_volume_pods: bool,
    /// Ready timeout for pods that mount PersistentVolumeClaims (volumes take longer to
    /// attach; more than 0s, at most 8760h).
    #[serde(default = "default_pvc_timeout")]
    #[schemars(
        length(max = 20),
        regex(pattern = r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$")
    )]
    #[x_kube(validation = Rule::new(DURATION_RULE).message("spec.stateful.volumeReadyTimeout: must be a duration of at most 8760h (one year), such as \"15m\""))]
    pub volume_ready_timeout: String,
    /// Refresh the pod holding a leader Lease (coordination.k8s.io, holderIdentity naming the
    /// pod) last in its workload.
    #[serde(default = "default_true")]
    pub leader_last: bool,
}

impl Default for StatefulSpec {
    fn default() -> Self {
        StatefulSpec {
            stateful_set_one_at_a_time: true,
            serialize_volume_pods: true,
            volume_ready_timeout: default_pvc_timeout(),
            leader_last: true,
        }
    }
}

/// Who creates runs.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum Trigger {
    /// Runs are created by people or GitOps.
    #[default]
    Manual,
    /// The operator creates a run when selected pods lack their profile and no run is active.
    Automatic,
}

/// Observed state of a policy, written by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ArmorRefreshPolicyStatus {
    /// `Ready`: True when the spec is valid; False with the field and the fix otherwise.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Counts of the pods this policy selects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub targets: Option<TargetCounts>,
    /// The run refreshing this policy's pods now, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_run: Option<String>,
    /// The most recent run that finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<String>,
    /// When the counts were taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_evaluated: Option<DateTime<Utc>>,
}

/// Counts of selected pods.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetCounts {
    /// Pods the policy selects (after exclusions).
    pub total: u32,
    /// Of those, pods that carry their profile.
    pub compliant: u32,
    /// Of those, pods that still lack it.
    pub pending: u32,
    /// Selected pods that are not refreshed, by reason (e.g. `NodeNotEnforcing`,
    /// `PodSecurity`, `KubeArmorPod`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub skipped: BTreeMap<String, u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn null_counts_read_as_defaults() {
        let s: ArmorRefreshPolicySpec =
            serde_saphyr::from_str("{rollout: {batchSize: null}, health: {maxFailures: null}}")
                .unwrap();
        assert_eq!(s.rollout.batch_size, IntOrString::Int(1));
        assert_eq!(s.health.max_failures, IntOrString::Int(0));
        let s: ArmorRefreshPolicySpec =
            serde_saphyr::from_str("{rollout: {batchSize: '10%'}}").unwrap();
        assert_eq!(s.rollout.batch_size, IntOrString::String("10%".into()));
    }
}
