//! The operator: the imperative shell around [`crate::run::step`] and [`crate::select`].
//!
//! One loop, woken by any watch event or the earliest requeue: each pass reconciles every
//! run (oldest first, so overlapping runs see each other's batches) and then every policy.
//! Only the Lease holder passes. A run's status is written (server-side apply, status
//! subresource) *before* the actions of the same step are executed, and the in-memory copy
//! of what was written is authoritative while this process leads.

mod cache;
mod evict;
mod notice;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tokio::sync::{Notify, watch};

pub use cache::{Caches, PodSlot, pod_store, strip_namespace, strip_node};

use crate::api::{
    ArmorRefreshPolicy, ArmorRefreshPolicyStatus, ArmorRefreshRun, ArmorRefreshRunStatus, BatchPod,
    Condition, FIELD_MANAGER, Phase, TargetCounts, Trigger, set_condition,
};
use crate::clock::ServerClock;
use crate::metrics::{Health, METRICS};
use crate::policy::{SpecError, ValidPolicy, validate};
use crate::run::{self, Action, Observations, Outcome, PolicyView};
use crate::select::{self, Selection};

/// Why the operator stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("leader election: {0}")]
    Lease(String),
    #[error("a cache stopped before it synced")]
    CacheStopped,
}

/// Operator settings (flags of `armor-refresh run`).
#[derive(Debug, Clone)]
pub struct Config {
    /// Who this replica is (pod name); used for the Lease and events.
    pub identity: String,
    pub leader_election: bool,
    pub lease_namespace: String,
    pub lease_name: String,
    /// Seconds a Lease is valid without renewal.
    pub lease_duration: u64,
    /// Client-side limit on writes (status, evictions, events, patches).
    pub write_qps: u32,
    pub write_burst: u32,
    /// How long to wait for the answer to one eviction (`--eviction-timeout`).
    pub eviction_timeout: Duration,
    /// What a KubeArmor agent pod looks like (`--agent-selector`).
    pub agent_selector: kube::core::Selector,
    /// Namespaces the webhook configuration skips (`--webhook-skip-namespaces`).
    pub webhook_skip_namespaces: Vec<String>,
    /// Filled with the pod cache for the webhook in the same process.
    pub share_pods: Option<cache::PodSlot>,
}

/// Longest note of an Event in bytes (events.k8s.io refuses notes over 1 KiB).
const EVENT_NOTE_MAX: usize = 1000;
/// Longest a run's status stays ahead of what is written (see `Step::persist`), and how
/// often a policy's counts alone are written (see `policy_write_due`).
const LAZY_WRITE: Duration = Duration::from_secs(5);

/// Finished runs deleted per policy per pass (retention).
const RETIRE_PER_PASS: usize = 20;

pub(super) fn eviction_label(o: &Outcome) -> &'static str {
    match o {
        Outcome::Done => "ok",
        Outcome::Refused(_) => "refused",
        Outcome::NotFound => "not_found",
        Outcome::Retry(_) => "retry",
        Outcome::Busy(_) => "busy",
        Outcome::Unknown(_) => "unknown",
        Outcome::Rejected(_) => "rejected",
        Outcome::NotSent => "not_sent",
    }
}

/// What an answer of the Eviction API means for a run. From Kubernetes'
/// `pkg/registry/core/pod/storage/eviction.go`: a PodDisruptionBudget's refusal carries a
/// cause of type `DisruptionBudget` (429, or 403 when a budget is exceeded or too busy);
/// a UID precondition that no longer holds is a 409 naming the UID (the pod of that UID is
/// gone), while any other 409 is a conflict (the budget's own update, retried); a pod under
/// two budgets is a 500, and a webhook's denial names the webhook: neither was carried
/// out. Any other 5xx (an etcd timeout, a proxy's 502) may come after the eviction was
/// committed, like no answer at all: unknown. A 429 without a budget's cause comes from API
/// priority and fairness or from a webhook on `pods/eviction` (KubeVirt migrating a VM):
/// busy, it passes. A 403 for a namespace being deleted passes too (its pods go anyway).
pub fn classify_eviction<T>(r: &Result<T, kube::Error>) -> Outcome {
    let s = match r {
        Ok(_) => return Outcome::Done,
        Err(kube::Error::Api(s)) => s,
        Err(e) => return Outcome::Unknown(e.to_string()),
    };
    let cause = |c: &str| {
        s.details
            .as_ref()
            .is_some_and(|d| d.causes.iter().any(|x| x.reason == c))
    };
    let lower = s.message.to_lowercase();
    let budget = cause("DisruptionBudget")
        || (matches!(s.code, 429 | 403) && lower.contains("disruption budget"));
    let not_done =
        lower.contains("admission webhook") || lower.contains("more than one poddisruptionbudget");
    let msg = format!("{} {}", s.code, s.message);
    match s.code {
        _ if budget => Outcome::Refused(s.message.clone()),
        404 => Outcome::NotFound,
        409 if lower.contains("uid") => Outcome::NotFound,
        409 => Outcome::Retry(msg),
        429 => Outcome::Busy(msg),
        403 if cause("NamespaceTerminating") || lower.contains("being terminated") => {
            Outcome::Busy(msg)
        }
        500..=599 if not_done => Outcome::Retry(msg),
        500..=599 => Outcome::Unknown(msg),
        400..=499 => Outcome::Rejected(msg),
        _ => Outcome::Unknown(msg),
    }
}

/// A 429 from API priority and fairness (the API server's own "Too many requests"), not
/// from a PodDisruptionBudget or a webhook: only that one slows every write.
pub fn is_overload(s: &kube::core::Status) -> bool {
    s.code == 429
        && s.message
            .to_lowercase()
            .starts_with("too many requests, please try again later")
}

struct Operator {
    client: Client,
    cfg: Config,
    caches: Caches,
    limiter: Arc<DefaultDirectRateLimiter>,
    recorder: Recorder,
    reporter: Reporter,
    /// Events on evicted pods and their workloads, published in the background.
    notifier: notice::Notifier,
    leader: watch::Receiver<bool>,
    /// Run UID → the status this process last wrote, or stepped to and keeps in memory
    /// (see `unwritten`).
    statuses: HashMap<String, ArmorRefreshRunStatus>,
    /// Run UID → since when its status in `statuses` is ahead of what was written: steps
    /// that need no write-ahead are written with the next one that does, or after
    /// [`LAZY_WRITE`].
    unwritten: HashMap<String, Instant>,
    /// Run UID → outcomes of the actions of its last step.
    results: HashMap<String, HashMap<String, Outcome>>,
    /// Policy name → when this process last created a run for it.
    auto_created: HashMap<String, Instant>,
    /// Extra pause after the API server answered 429 for overload (not a PDB).
    overload: Duration,
    /// Policy name → its validation, for the (uid, generation) it was made from: checking
    /// windows (a year of cron openings each) is not redone on every pass.
    validated: HashMap<String, PolicyKey>,
    /// Policy name → when this process last wrote its status (counts wait for LAZY_WRITE).
    policy_written: HashMap<String, Instant>,
    /// Policy name → the status this process last wrote for a policy it cannot decode
    /// (the cache has none for it): without it, every pass would write it again.
    undecodable_statuses: HashMap<String, ArmorRefreshPolicyStatus>,
    /// Run UID → the resourceVersion of the run as this process last read or wrote it: the
    /// precondition of the next status write, so a write from a stale view (another leader
    /// wrote since, or this one lost its term) fails instead of overwriting.
    versions: HashMap<String, String>,
    /// The runs were read from the API server (not the cache) in this term.
    fresh: bool,
    /// The API server's clock: the clock of every decision.
    clock: ServerClock,
    /// When the API server's clock was last asked (whatever the answer): once a minute.
    clock_asked: Option<Instant>,
    /// Evictions sent beside the passes, and until when the last read of the Lease vouches
    /// for this replica's term (no step reads it again before then, less a third of the
    /// Lease's duration: see `Operator::fenced_recently`).
    evictor: evict::Evictor,
}

/// Where a pass spent its time, logged at debug level (`RUST_LOG=armor_refresh=debug`) for
/// the passes that wrote or evicted: what a window's refill waits for.
#[derive(Debug, Default)]
struct PassTimes {
    /// Reading the runs afresh in a new term, asking the API server's clock, reading the
    /// caches and selecting each policy's targets.
    prepare: Duration,
    step: Duration,
    write: Duration,
    /// Reading the Lease before a write or an eviction.
    fence: Duration,
    evict: Duration,
    /// Policy statuses, retention and automatic runs.
    policies: Duration,
    /// Disruptions the steps planned (evictions and workload restarts).
    evictions: usize,
}

impl PassTimes {
    fn acted(&self) -> bool {
        self.evictions > 0 || !self.write.is_zero()
    }
}

/// Whether a policy's new status (different from `old`) is written now (`Ok`), or how long
/// it may wait: counts alone change with every pod a run refreshes, and are written at most
/// once per [`LAZY_WRITE`] (`since` the last write by this process), so a run's passes are
/// not slowed by a policy write each. Anything else (conditions, the active or last run,
/// the generation observed) is written at once, counts with it.
fn policy_write_due(
    old: &ArmorRefreshPolicyStatus,
    new: &ArmorRefreshPolicyStatus,
    since: Option<Duration>,
) -> Result<(), Duration> {
    let counts_only = ArmorRefreshPolicyStatus {
        targets: old.targets.clone(),
        ..new.clone()
    } == *old;
    match since {
        Some(since) if counts_only && since < LAZY_WRITE => Err(LAZY_WRITE - since),
        _ => Ok(()),
    }
}

/// The field of the error of a policy that does not decode (validation always names a
/// field below `spec`).
const UNDECODABLE: &str = "spec";

/// The validation of a policy and the (uid, generation) of the spec it was made from.
type PolicyKey = (
    (Option<String>, Option<i64>),
    Result<ValidPolicy, SpecError>,
);

/// The API server (or etcd behind it) refused a request for its size.
pub fn is_too_large(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) => {
            let m = s.message.to_lowercase();
            s.code == 413
                || m.contains("too large")
                || m.contains("too long")
                || m.contains("larger than max")
        }
        _ => false,
    }
}

/// A valid or invalid policy, by name.
type Policies = BTreeMap<String, (Arc<ArmorRefreshPolicy>, Result<ValidPolicy, SpecError>)>;

/// Runs the operator until `shutdown` turns true.
pub async fn run(
    client: Client,
    cfg: Config,
    health: Health,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), Error> {
    let wake = Arc::new(Notify::new());
    let caches = Caches::start(&client, wake.clone());
    if let Some(slot) = &cfg.share_pods {
        // Unsynced at first: the webhook reads the API server for a pod it does not find.
        let _ = slot.set(caches.pods.clone());
    }
    tokio::select! {
        r = caches.ready() => r.map_err(|_| Error::CacheStopped)?,
        _ = shutdown.wait_for(|s| *s) => return Ok(()),
    }
    health.caches_synced.store(true, Ordering::Relaxed);
    tracing::info!("caches synced");
    // The initial lists left their pages' holes in the heap: give them back, and keep doing so.
    let _trimmer = crate::memory::spawn_trimmer();

    let (leader, lease_task) = if cfg.leader_election {
        let manager =
            kube_lease_manager::LeaseManagerBuilder::new(client.clone(), cfg.lease_name.clone())
                .with_namespace(cfg.lease_namespace.clone())
                .with_identity(cfg.identity.clone())
                .with_duration(cfg.lease_duration)
                .with_grace(cfg.lease_duration.div_ceil(3).max(1))
                .build()
                .await
                .map_err(|e| Error::Lease(e.to_string()))?;
        let (rx, task) = manager.watch().await;
        (rx, Some(task))
    } else {
        let (tx, rx) = watch::channel(true);
        std::mem::forget(tx); // always the leader
        (rx, None)
    };
    let quota = Quota::per_second(std::num::NonZeroU32::new(cfg.write_qps.max(1)).expect("max(1)"))
        .allow_burst(std::num::NonZeroU32::new(cfg.write_burst.max(1)).expect("max(1)"));
    let reporter = Reporter {
        controller: "armor-refresh".into(),
        instance: Some(cfg.identity.clone()),
    };
    let limiter = Arc::new(RateLimiter::direct(quota));
    let evictor = evict::Evictor::new(
        client.clone(),
        limiter.clone(),
        cfg.eviction_timeout,
        cfg.leader_election,
        wake.clone(),
    );
    let mut op = Operator {
        notifier: notice::Notifier::start(
            Recorder::new(client.clone(), reporter.clone()),
            limiter.clone(),
            leader.clone(),
        ),
        recorder: Recorder::new(client.clone(), reporter.clone()),
        reporter,
        client,
        cfg,
        caches,
        limiter,
        leader,
        statuses: HashMap::new(),
        unwritten: HashMap::new(),
        results: HashMap::new(),
        auto_created: HashMap::new(),
        overload: Duration::ZERO,
        validated: HashMap::new(),
        undecodable_statuses: HashMap::new(),
        policy_written: HashMap::new(),
        versions: HashMap::new(),
        fresh: false,
        clock: ServerClock::default(),
        clock_asked: None,
        evictor,
    };
    let mut was_leader = false;
    // Set when the loop saw the leadership flag change (`changed()` marks it seen).
    let mut flagged = false;
    loop {
        // A loss and a regain between two looks is a new term too.
        let changed = op.leader.has_changed().unwrap_or(true) || std::mem::take(&mut flagged);
        let is_leader = *op.leader.borrow_and_update();
        if is_leader != was_leader || changed {
            tracing::info!(leader = is_leader, identity = %op.cfg.identity, "leadership changed");
            // A new term starts from what the API server has, never from memory.
            op.statuses.clear();
            op.unwritten.clear();
            op.results.clear();
            op.undecodable_statuses.clear();
            op.versions.clear();
            op.fresh = false;
            op.evictor.new_term();
            was_leader = is_leader;
            if !is_leader {
                // Only the leader says what runs and policies are doing: a former leader's
                // last values would keep alerts firing (rules take the max over replicas).
                METRICS.forget_missing(&Default::default(), &Default::default());
            }
        }
        let next = if is_leader {
            op.pass().await
        } else {
            Duration::from_secs(3600)
        };
        tokio::select! {
            _ = wake.notified() => {
                // Coalesce bursts of watch events into one pass.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            _ = tokio::time::sleep(next) => {}
            r = op.leader.changed() => {
                if r.is_err() {
                    return Err(Error::Lease("the lease task ended".into()));
                }
                flagged = true;
            }
            _ = shutdown.wait_for(|s| *s) => break,
        }
    }
    tracing::info!("shutting down");
    // Evictions still queued are not sent; those being sent are answered before the
    // Lease goes.
    op.evictor.new_term();
    op.evictor.drain(op.cfg.eviction_timeout).await;
    drop(op); // closes the lease channel: the manager releases the Lease
    if let Some(t) = lease_task {
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }
    Ok(())
}

impl Operator {
    /// Still the leader of the term this pass started in.
    fn leading(&self) -> bool {
        *self.leader.borrow() && !self.leader.has_changed().unwrap_or(true)
    }

    /// The API server's time now.
    fn now(&self) -> chrono::DateTime<Utc> {
        self.clock.now(Utc::now())
    }

    /// Takes a sample of the API server's clock once a minute: the `creationTimestamp` the
    /// server stamps on a dry-run create of a run (nothing is stored).
    async fn calibrate(&mut self) {
        if self
            .clock_asked
            .is_some_and(|t| t.elapsed() < Duration::from_secs(60))
        {
            return;
        }
        self.clock_asked = Some(Instant::now());
        let probe: ArmorRefreshRun = match serde_json::from_value(json!({
            "apiVersion": "refresh.armor.dev/v1alpha1",
            "kind": "ArmorRefreshRun",
            "metadata": {"generateName": "armor-refresh-clock-"},
            "spec": {"policyRef": {"name": "clock-probe"}},
        })) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "building the clock probe");
                return;
            }
        };
        self.throttle().await;
        METRICS.write("dry_run");
        let api: Api<ArmorRefreshRun> = Api::all(self.client.clone());
        let sent = Utc::now();
        let r = api
            .create(
                &PostParams {
                    dry_run: true,
                    ..Default::default()
                },
                &probe,
            )
            .await;
        let received = Utc::now();
        match r.map(|o| o.metadata.creation_timestamp) {
            Ok(Some(t)) => {
                let stamp = chrono::DateTime::from_timestamp(t.0.as_second(), 0);
                if let Some(stamp) = stamp {
                    let before = self.clock.offset();
                    self.clock.sample(sent, received, stamp);
                    let after = self.clock.offset();
                    if (after - before).num_milliseconds().abs() >= 1000 {
                        tracing::warn!(
                            offset_ms = after.num_milliseconds(),
                            "the API server's clock differs from this machine's; deciding on the API server's"
                        );
                    }
                }
            }
            Ok(None) => tracing::warn!("a dry-run create came back without a creation time"),
            Err(e) => {
                tracing::warn!(error = %e, "could not read the API server's clock");
                METRICS.reconcile_error("clock");
            }
        }
    }

    /// Is the Lease held by this replica with a renewal that is still fresh, read from the
    /// API server now? kube-lease-manager keeps reporting leadership while its renewals
    /// fail, so a step that acts needs a read that vouches for now (see
    /// [`Operator::fenced_recently`]): a replica whose renewals fail stops acting before its
    /// Lease expires and another may take it.
    async fn fenced(&mut self) -> bool {
        if !self.cfg.leader_election {
            return true;
        }
        let api: Api<k8s_openapi::api::coordination::v1::Lease> =
            Api::namespaced(self.client.clone(), &self.cfg.lease_namespace);
        let lease = match api.get(&self.cfg.lease_name).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "cannot confirm the Lease: not acting");
                self.evictor.expire();
                return false;
            }
        };
        let spec = lease.spec.unwrap_or_default();
        let holder = spec.holder_identity.as_deref() == Some(self.cfg.identity.as_str());
        // The holder writes renewTime with its own clock: compare with the same clock.
        let renewed = spec.renew_time.map(|t| t.0.as_millisecond());
        let duration = i64::from(spec.lease_duration_seconds.unwrap_or(0)) * 1000;
        let margin = (duration / 6).max(1000);
        let left = renewed.map_or(i64::MIN, |r| {
            r.saturating_add(duration)
                .saturating_sub(Utc::now().timestamp_millis())
        });
        if holder && left > margin {
            let until = u64::try_from(left - margin).unwrap_or(0);
            self.evictor
                .vouch_until(Instant::now() + Duration::from_millis(until));
            return true;
        }
        self.evictor.expire();
        tracing::warn!(holder = ?spec.holder_identity, valid_for_ms = left, "the Lease is not held with a fresh renewal: not acting");
        METRICS.reconcile_error("fence");
        false
    }

    /// [`Operator::fenced`], without a new read while the last one still vouches for a
    /// third of the Lease's duration or more. Every eviction task checks the vouch again
    /// right before its request, so a step need not read the Lease itself; reading ahead of
    /// the vouch's end keeps queued evictions from finding it expired.
    async fn fenced_recently(&mut self) -> bool {
        let ahead = self.cfg.lease_duration.div_ceil(3).max(1);
        if self
            .evictor
            .fenced_until()
            .is_some_and(|t| Instant::now() + Duration::from_secs(ahead) < t)
        {
            return true;
        }
        self.fenced().await
    }

    /// A new term reads every run from the API server, not from the cache, which may not
    /// have seen the last leader's writes yet.
    async fn read_fresh(&mut self) -> bool {
        // Untyped per item, as the cache is: one run that does not decode must not stop all.
        let api: Api<kube::core::DeserializeGuard<ArmorRefreshRun>> = Api::all(self.client.clone());
        match api.list(&Default::default()).await {
            Ok(list) => {
                for r in list.items.into_iter().filter_map(|g| g.0.ok()) {
                    let uid = r.uid().unwrap_or_default();
                    if let Some(v) = r.resource_version() {
                        self.versions.insert(uid.clone(), v);
                    }
                    self.statuses.insert(uid, r.status.unwrap_or_default());
                }
                self.fresh = true;
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the runs at the start of a term");
                METRICS.reconcile_error("fresh_read");
                false
            }
        }
    }

    async fn throttle(&self) {
        self.limiter.until_ready().await;
        if !self.overload.is_zero() {
            tokio::time::sleep(self.overload).await;
        }
    }

    fn policies(&mut self) -> Policies {
        let mut out = BTreeMap::new();
        for g in self.caches.policies.state() {
            match &g.0 {
                Ok(p) => {
                    let name = p.name_any();
                    let key = (p.uid(), p.metadata.generation);
                    let valid = match self.validated.get(&name) {
                        Some((k, v)) if *k == key => v.clone(),
                        _ => {
                            let v = validate(&name, &p.spec);
                            self.validated.insert(name.clone(), (key, v.clone()));
                            v
                        }
                    };
                    out.insert(name, (Arc::new(p.clone()), valid));
                }
                Err(bad) => {
                    // Stored, but not readable as a policy (a value past what this version
                    // decodes): say so on the policy and pause its runs, never take it for
                    // deleted (that would fail its runs).
                    let Some(name) = bad.metadata.name.clone() else {
                        continue;
                    };
                    tracing::warn!(%name, error = %bad.error, "a policy does not decode");
                    METRICS.reconcile_error("invalid_object");
                    let placeholder = ArmorRefreshPolicy {
                        metadata: bad.metadata.clone(),
                        spec: serde_json::from_value(json!({})).expect("an empty spec decodes"),
                        status: self.undecodable_statuses.get(&name).cloned(),
                    };
                    let err = SpecError::new(
                        UNDECODABLE,
                        crate::run::clip(
                            format!("the object cannot be read: {}", bad.error),
                            crate::run::MESSAGE_MAX / 2,
                        ),
                    );
                    out.insert(name, (Arc::new(placeholder), Err(err)));
                }
            }
        }
        self.validated.retain(|name, _| out.contains_key(name));
        self.undecodable_statuses
            .retain(|name, _| out.contains_key(name));
        self.policy_written.retain(|name, _| out.contains_key(name));
        out
    }

    /// Reconciles everything once; returns when to come back at the latest.
    async fn pass(&mut self) -> Duration {
        let started = Instant::now();
        let mut times = PassTimes::default();
        let next = self.pass_timed(&mut times).await;
        if times.acted() {
            tracing::debug!(
                total_ms = started.elapsed().as_millis() as u64,
                prepare_ms = times.prepare.as_millis() as u64,
                step_ms = times.step.as_millis() as u64,
                write_ms = times.write.as_millis() as u64,
                fence_ms = times.fence.as_millis() as u64,
                evict_ms = times.evict.as_millis() as u64,
                policies_ms = times.policies.as_millis() as u64,
                evictions = times.evictions,
                "pass"
            );
        }
        next
    }

    async fn pass_timed(&mut self, times: &mut PassTimes) -> Duration {
        let started = Instant::now();
        if !self.fresh && !self.read_fresh().await {
            return Duration::from_secs(1);
        }
        self.take_answers();
        self.calibrate().await;
        let mut facts = self.caches.facts(&self.cfg.agent_selector);
        facts.unhooked_namespaces = self.cfg.webhook_skip_namespaces.iter().cloned().collect();
        facts.now = Some(self.now());
        let policies = self.policies();
        facts.policies = policies
            .values()
            .filter_map(|(_, v)| v.as_ref().ok().cloned())
            .collect();
        let mut runs: Vec<ArmorRefreshRun> = self
            .caches
            .runs
            .state()
            .iter()
            .filter_map(|g| g.0.as_ref().ok().cloned())
            .collect();
        runs.sort_by(|a, b| {
            (a.creation_timestamp(), a.name_any()).cmp(&(b.creation_timestamp(), b.name_any()))
        });
        METRICS.forget_missing(
            &runs
                .iter()
                .map(|r| r.metadata.name.as_deref().unwrap_or(""))
                .collect(),
            &policies.keys().map(String::as_str).collect(),
        );
        // Evictions queued for a run paused, finished or deleted since are not sent.
        let acting = runs
            .iter()
            .filter(|r| {
                let phase = self.status_of(r).phase;
                !r.spec.paused && !phase.is_terminal() && phase != Phase::Paused
            })
            .filter_map(|r| r.uid())
            .collect();
        self.evictor.acting(acting);
        let mut next = Duration::from_secs(30);
        // Facts are fixed for the pass: select once per policy, for its runs and its status.
        let selections: HashMap<&str, Selection> = policies
            .iter()
            .filter_map(|(name, (_, v))| {
                Some((name.as_str(), select::select(v.as_ref().ok()?, &facts)))
            })
            .collect();
        times.prepare = started.elapsed();

        // The run of each policy that may act: one already started, else the oldest.
        let mut active: HashMap<String, String> = HashMap::new();
        for started in [true, false] {
            for r in &runs {
                let s = self.status_of(r);
                if !s.phase.is_terminal() && (s.phase != Phase::Pending) == started {
                    active
                        .entry(r.spec.policy_ref.name.clone())
                        .or_insert_with(|| r.name_any());
                }
            }
        }

        for r in &runs {
            if !self.leading() {
                return Duration::from_secs(1);
            }
            let uid = r.uid().unwrap_or_default();
            let name = r.name_any();
            let mut status = self.status_of(r);
            self.export_run(&name, &status);
            if status.phase.is_terminal() {
                continue;
            }
            let pol = policies.get(&r.spec.policy_ref.name);
            let view = match pol {
                None => PolicyView::NotFound,
                Some((_, Err(e))) => PolicyView::Invalid(e),
                Some((_, Ok(v))) => PolicyView::Valid(v),
            };
            let blocked_by = active
                .get(&r.spec.policy_ref.name)
                .filter(|a| **a != name)
                .cloned();
            // Pods in flight in the other active runs (their statuses as last written; they do
            // not change while this run steps).
            let others: Vec<BatchPod> = runs
                .iter()
                .filter(|o| o.uid() != r.uid())
                .map(|o| self.status_of(o))
                .filter(|s| !s.phase.is_terminal())
                .flat_map(|s| {
                    s.current_batch
                        .map(|b| b.pods)
                        .unwrap_or_default()
                        .into_iter()
                        .chain(s.unhealthy)
                })
                .collect();
            let selection = selections.get(r.spec.policy_ref.name.as_str());
            for _ in 0..8 {
                let results = self.results.remove(&uid).unwrap_or_default();
                let pending = self.evictor.pending(&uid);
                let obs = Observations {
                    selection,
                    generation: r.metadata.generation,
                    spec: &r.spec,
                    policy: view,
                    facts: &facts,
                    others: &others,
                    blocked_by: if status.phase == Phase::Pending {
                        blocked_by.as_deref()
                    } else {
                        None
                    },
                    results: &results,
                    pending: &pending,
                };
                let at = Instant::now();
                let st = run::step(&status, &obs, self.now());
                times.step += at.elapsed();
                let changed = st.status != status;
                let behind = self.unwritten.get(&uid).map(Instant::elapsed);
                let due = st.persist || behind.is_some_and(|d| d >= LAZY_WRITE);
                if (changed || behind.is_some()) && due {
                    // A status write acts too (it records intent): only within a vouched term.
                    let at = Instant::now();
                    if !self.leading() || !self.fenced_recently().await {
                        self.results.insert(uid.clone(), results);
                        return Duration::from_secs(1);
                    }
                    times.fence += at.elapsed();
                    let at = Instant::now();
                    let written = self.write_run_status(&uid, r, &st.status).await;
                    times.write += at.elapsed();
                    if let Err(e) = written {
                        // Nothing of this step is acted upon: intent first, or not at all.
                        // The outcomes of the last step's actions are kept for the next try.
                        self.results.insert(uid.clone(), results);
                        METRICS.reconcile_error("status_write");
                        if matches!(&e, kube::Error::Api(s) if s.code == 409) {
                            // Written by someone else since this process read it: read again.
                            tracing::warn!(run = %name, "the run changed since this process last read it; reading it again before acting");
                            self.statuses.remove(&uid);
                            self.unwritten.remove(&uid);
                            self.versions.remove(&uid);
                            // Maybe another leader: ask the Lease again before any write.
                            self.evictor.expire();
                            next = next.min(Duration::from_secs(1));
                        } else if is_too_large(&e) {
                            // Retrying the same write cannot succeed: say so where users look.
                            tracing::error!(run = %name, bytes = run::json_len(&st.status), error = %e, "the API server refused the run's status for its size");
                            self.report_too_large(r, &e).await;
                            next = next.min(Duration::from_secs(60));
                        } else {
                            tracing::warn!(run = %name, error = %e, "writing run status failed; retrying");
                            next = next.min(Duration::from_secs(2));
                        }
                        break;
                    }
                    self.unwritten.remove(&uid);
                    self.record_metrics(&status, &st.status);
                    self.statuses.insert(uid.clone(), st.status.clone());
                } else if changed {
                    // Nothing about to happen depends on it: written with a later step.
                    self.unwritten
                        .entry(uid.clone())
                        .or_insert_with(Instant::now);
                    self.record_metrics(&status, &st.status);
                    self.statuses.insert(uid.clone(), st.status.clone());
                }
                if let Some(since) = self.unwritten.get(&uid) {
                    next = next.min(LAZY_WRITE.saturating_sub(since.elapsed()));
                }
                status = st.status.clone();
                self.export_run(&name, &status);
                let mut outcomes = HashMap::new();
                if !self.leading() {
                    return Duration::from_secs(1);
                }
                let at = Instant::now();
                if st.disruptions().next().is_some() && !self.fenced_recently().await {
                    // Written ahead, not done: whoever leads next finds them Evicting, with
                    // their pods still there, and evicts them then.
                    return Duration::from_secs(1);
                }
                times.fence += at.elapsed();
                let at = Instant::now();
                let sender = evict::Sender {
                    run_uid: &uid,
                    run_ref: r.object_ref(&()),
                    policy: &r.spec.policy_ref.name,
                    overload: self.overload,
                };
                self.evictor.send(sender, &st.actions);
                times.evict += at.elapsed();
                times.evictions += st.disruptions().count();
                for a in st
                    .actions
                    .iter()
                    .filter(|a| !matches!(a, Action::Evict { .. }))
                {
                    if !self.leading() {
                        return Duration::from_secs(1);
                    }
                    self.execute(r, a, &mut outcomes).await;
                    if matches!(a, Action::Restart { .. }) {
                        let policy = &r.spec.policy_ref.name;
                        self.notify_objects(
                            &r.object_ref(&()),
                            policy,
                            std::slice::from_ref(a),
                            &outcomes,
                        );
                    }
                }
                let acted = st.disruptions().count() > 0;
                if !outcomes.is_empty() {
                    self.results.insert(uid.clone(), outcomes);
                }
                match st.requeue_after {
                    Some(d) if d.is_zero() && (acted || !status.phase.is_terminal()) => continue,
                    Some(d) => {
                        next = next.min(d);
                        break;
                    }
                    None => break,
                }
            }
        }
        let at = Instant::now();
        if let Some(wake) = self.reconcile_policies(&policies, &selections, &runs).await {
            next = next.min(wake);
        }
        times.policies = at.elapsed();
        if !self.overload.is_zero() {
            self.overload = (self.overload / 2).max(Duration::from_millis(1));
            if self.overload <= Duration::from_millis(1) {
                self.overload = Duration::ZERO;
            }
        }
        next.max(Duration::from_millis(200))
    }

    /// A run's status: what this process last wrote in its term, else what the cache has.
    fn status_of(&self, r: &ArmorRefreshRun) -> ArmorRefreshRunStatus {
        self.statuses
            .get(&r.uid().unwrap_or_default())
            .cloned()
            .or_else(|| r.status.clone())
            .unwrap_or_default()
    }

    fn export_run(&self, run: &str, s: &ArmorRefreshRunStatus) {
        let breaker_open = s.phase == Phase::Paused && s.reason == "CircuitOpen";
        // Waiting out `interval` (a wave's pause, a slot's rest) is not being stuck.
        let next = s
            .next_batch_at
            .into_iter()
            .chain(s.resting.iter().map(|r| r.until))
            .max()
            .map_or(0, |t| t.timestamp());
        METRICS.set_run(
            run,
            &format!("{:?}", s.phase),
            breaker_open,
            s.progress.refreshed,
            next,
        );
    }

    fn record_metrics(&self, old: &ArmorRefreshRunStatus, new: &ArmorRefreshRunStatus) {
        let refreshed = new
            .progress
            .refreshed
            .saturating_sub(old.progress.refreshed);
        METRICS.pods_refreshed.inc_by(u64::from(refreshed));
        if new.reason == "CircuitOpen" && old.reason != "CircuitOpen" {
            METRICS.breaker_trips.inc();
        }
        let last_old = old.history.last().map(|h| h.index);
        for h in new.history.iter().filter(|h| Some(h.index) > last_old) {
            METRICS
                .batch_duration
                .observe((h.finished_at - h.started_at).num_milliseconds() as f64 / 1000.0);
        }
    }

    /// Writes a run's status with the resourceVersion this process last saw as the
    /// precondition (the API server answers 409 if anyone wrote since).
    async fn write_run_status(
        &mut self,
        uid: &str,
        run: &ArmorRefreshRun,
        status: &ArmorRefreshRunStatus,
    ) -> Result<(), kube::Error> {
        let name = run.name_any();
        let name = name.as_str();
        self.throttle().await;
        let api: Api<ArmorRefreshRun> = Api::all(self.client.clone());
        let mut patch = json!({"apiVersion": "refresh.armor.dev/v1alpha1", "kind": "ArmorRefreshRun", "status": status});
        // What this process wrote last in its term, else what it read.
        if let Some(v) = self
            .versions
            .get(uid)
            .cloned()
            .or_else(|| run.resource_version())
        {
            patch["metadata"] = json!({"resourceVersion": v});
        }
        METRICS.write("patch_status");
        let r = api
            .patch_status(
                name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await;
        self.note_overload(&r);
        let written = r?;
        match written.resource_version() {
            Some(v) => self.versions.insert(uid.to_string(), v),
            None => self.versions.remove(uid),
        };
        Ok(())
    }

    /// The run's status could not be written for its size: the last written status stays
    /// (it is the write-ahead record), and only its reason and message say why nothing
    /// moves. A merge patch, so the fields this manager applied before stay as they are.
    async fn report_too_large(&mut self, r: &ArmorRefreshRun, e: &kube::Error) {
        let name = r.name_any();
        let message = run::clip(
            format!(
                "the API server refused this run's status as too large; nothing is evicted until it fits. Lower spec.rollout.batchSize of the policy ({e})"
            ),
            run::MESSAGE_MAX,
        );
        self.throttle().await;
        let api: Api<ArmorRefreshRun> = Api::all(self.client.clone());
        let patch = json!({"status": {"reason": "StatusTooLarge", "message": message}});
        METRICS.write("patch_status");
        let res = api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await;
        if let Err(err) = res {
            tracing::warn!(run = %name, error = %err, "could not record StatusTooLarge");
        }
        // The in-memory copy must not claim a status that was never written.
        self.statuses.remove(&r.uid().unwrap_or_default());
        self.unwritten.remove(&r.uid().unwrap_or_default());
        self.versions.remove(&r.uid().unwrap_or_default());
        let ev = Action::Event {
            warning: true,
            reason: "StatusTooLarge".into(),
            note: message,
        };
        self.execute(r, &ev, &mut HashMap::new()).await;
    }

    /// A 429 that is not a PodDisruptionBudget refusal is API priority and fairness
    /// pushing back: every write slows down (halved again at each pass).
    fn note_overload<T>(&mut self, r: &Result<T, kube::Error>) {
        if let Err(kube::Error::Api(s)) = r
            && is_overload(s)
        {
            self.overload =
                (self.overload * 2).clamp(Duration::from_millis(500), Duration::from_secs(30));
            METRICS.reconcile_error("overloaded");
        }
    }

    /// The answers to evictions sent since the last pass, as outcomes for the runs' next
    /// steps, with their events (one workload event per run and workload for all of them).
    fn take_answers(&mut self) {
        type Answers = (
            Arc<ObjectReference>,
            Arc<str>,
            Vec<Action>,
            HashMap<String, Outcome>,
        );
        let mut by_run: BTreeMap<String, Answers> = BTreeMap::new();
        let term = self.evictor.term();
        for a in self.evictor.answered() {
            let Action::Evict {
                namespace,
                name,
                uid,
                ..
            } = &a.action
            else {
                continue;
            };
            let outcome = match &a.result {
                // Sent in an earlier term: it may or may not have happened by now as far as
                // the run read afresh knows; the cluster tells (uncertain, retried).
                Some(_) if a.term != term => {
                    Outcome::Unknown("answered after this replica's term changed".into())
                }
                // Logged and counted by the task as it came.
                Some(r) => {
                    self.note_overload(r);
                    classify_eviction(r)
                }
                None => {
                    tracing::debug!(pod = %format!("{namespace}/{name}"), "eviction not sent: the term or the run stopped first");
                    Outcome::NotSent
                }
            };
            let entry = by_run
                .entry(a.run_uid)
                .or_insert_with(|| (a.run_ref, a.policy, vec![], HashMap::new()));
            entry.3.insert(uid.clone(), outcome);
            entry.2.push(a.action);
        }
        for (run_uid, (run_ref, policy, actions, outcomes)) in by_run {
            self.notify_objects(&run_ref, &policy, &actions, &outcomes);
            self.results.entry(run_uid).or_default().extend(outcomes);
        }
    }

    /// Events on the pods evicted and the workloads evicted from or restarted.
    fn notify_objects(
        &self,
        run_ref: &ObjectReference,
        policy: &str,
        actions: &[Action],
        outcomes: &HashMap<String, Outcome>,
    ) {
        use kube::runtime::reflector::{ObjectRef, Store};
        fn uid<K>(s: &Store<K>, namespace: &str, name: &str) -> Option<String>
        where
            K: Resource<DynamicType = ()> + Clone + 'static,
        {
            s.get(&ObjectRef::new(name).within(namespace))?.uid()
        }
        let c = &self.caches;
        let uid_of = |kind: &str, namespace: &str, name: &str| match kind {
            "Deployment" => uid(&c.deployments, namespace, name),
            "StatefulSet" => uid(&c.statefulsets, namespace, name),
            "DaemonSet" => uid(&c.daemonsets, namespace, name),
            "ReplicaSet" => uid(&c.replicasets, namespace, name),
            _ => None,
        };
        let notices = notice::notices(run_ref, policy, actions, outcomes, uid_of);
        self.notifier.send(notices);
    }

    async fn execute(
        &mut self,
        run: &ArmorRefreshRun,
        a: &Action,
        outcomes: &mut HashMap<String, Outcome>,
    ) {
        match a {
            Action::Event {
                warning,
                reason,
                note,
            } => {
                self.throttle().await;
                let ev = Event {
                    type_: if *warning {
                        EventType::Warning
                    } else {
                        EventType::Normal
                    },
                    reason: crate::policy::cut(reason, 128).to_string(),
                    note: Some(crate::policy::cut(note, EVENT_NOTE_MAX).to_string()),
                    action: "Refresh".into(),
                    secondary: None,
                };
                METRICS.write("event");
                // The recorder folds events of one reason into a series that keeps its
                // first note: progress events ("40 of 136 refreshed") are each their own.
                let fresh;
                let recorder = if reason == "Progress" {
                    fresh = Recorder::new(self.client.clone(), self.reporter.clone());
                    &fresh
                } else {
                    &self.recorder
                };
                if let Err(e) = recorder.publish(&ev, &run.object_ref(&())).await {
                    // Events are best effort; status has the facts.
                    tracing::debug!(error = %e, "publishing an event failed");
                    METRICS.reconcile_error("event");
                }
            }
            // Executed together by `evict_all`.
            Action::Evict { .. } => {}
            Action::Restart {
                namespace,
                kind,
                name,
                token,
            } => {
                self.throttle().await;
                let gvk = GroupVersionKind::gvk("apps", "v1", kind);
                let api: Api<DynamicObject> = Api::namespaced_with(
                    self.client.clone(),
                    namespace,
                    &ApiResource::from_gvk(&gvk),
                );
                let patch = json!({"spec": {"template": {"metadata": {"annotations": {"refresh.armor.dev/restartedAt": token}}}}});
                METRICS.write("patch_workload");
                let r = api
                    .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await;
                self.note_overload(&r);
                let outcome = match classify_eviction(&r) {
                    // A 409 on a patch is a conflict, not a pod gone: try again.
                    Outcome::NotFound if matches!(&r, Err(kube::Error::Api(s)) if s.code == 409) => {
                        Outcome::Retry("409 conflict".into())
                    }
                    Outcome::Refused(m) => Outcome::Retry(m),
                    o => o,
                };
                outcomes.insert(format!("{namespace}/{kind}/{name}"), outcome);
            }
        }
    }

    async fn reconcile_policies(
        &mut self,
        policies: &Policies,
        selections: &HashMap<&str, Selection>,
        runs: &[ArmorRefreshRun],
    ) -> Option<Duration> {
        let now = self.now();
        let mut wake: Option<Duration> = None;
        for (name, (obj, valid)) in policies {
            if !self.leading() {
                return wake;
            }
            let mine: Vec<(&ArmorRefreshRun, ArmorRefreshRunStatus)> = runs
                .iter()
                .filter(|r| r.spec.policy_ref.name == *name)
                .map(|r| (r, self.status_of(r)))
                .collect();
            if let Ok(v) = valid
                && let Some(at) = self.retire(v, &mine, now).await
            {
                let d = (at - now).to_std().unwrap_or_default();
                wake = Some(wake.map_or(d, |w| w.min(d)));
            }
            let active = mine
                .iter()
                .find(|(_, s)| !s.phase.is_terminal())
                .map(|(r, _)| r.name_any());
            let last = mine
                .iter()
                .filter(|(_, s)| s.phase.is_terminal())
                .max_by_key(|(_, s)| s.completed_at.unwrap_or_default())
                .map(|(r, _)| r.name_any());
            let old = obj.status.clone().unwrap_or_default();
            let mut st = ArmorRefreshPolicyStatus {
                conditions: old.conditions.clone(),
                observed_generation: obj.metadata.generation,
                targets: old.targets.clone(),
                active_run: active.clone(),
                last_run: last,
                last_evaluated: old.last_evaluated,
            };
            match valid {
                Ok(v) => {
                    let Some(sel) = selections.get(name.as_str()) else {
                        continue;
                    };
                    let mut skipped = sel.skipped_counts();
                    for r in ["NotSelected", "Compliant", "ExplicitProfile"] {
                        skipped.remove(r);
                    }
                    let counts = TargetCounts {
                        total: sel.governed(),
                        compliant: sel.compliant(),
                        pending: sel.targets.len() as u32,
                        skipped,
                    };
                    METRICS.set_noncompliant(name, counts.pending);
                    st.targets = Some(counts.clone());
                    set_condition(
                        &mut st.conditions,
                        Condition::new("Ready", true, "Valid", "the spec is valid"),
                        now,
                        obj.metadata.generation,
                    );
                    if v.spec.trigger == Trigger::Automatic
                        && counts.pending > 0
                        && active.is_none()
                    {
                        let last_run = mine
                            .iter()
                            .filter(|(_, s)| s.phase.is_terminal())
                            .filter_map(|(r, s)| {
                                Some((
                                    r.metadata.creation_timestamp.as_ref()?.0.as_second(),
                                    s.completed_at?.timestamp(),
                                ))
                            })
                            .max();
                        match crate::select::stalled(&sel.targets, last_run) {
                            Some(msg) => set_condition(
                                &mut st.conditions,
                                Condition::new("Converging", false, "ReplacementsLackProfile", msg),
                                now,
                                obj.metadata.generation,
                            ),
                            None => {
                                st.conditions.retain(|c| c.type_ != "Converging");
                                self.auto_create(obj, &mine).await;
                            }
                        }
                    }
                }
                Err(e) => {
                    set_condition(
                        &mut st.conditions,
                        Condition::new("Ready", false, "InvalidSpec", e.to_string()),
                        now,
                        obj.metadata.generation,
                    );
                }
            }
            if st != old {
                let since = self.policy_written.get(name).map(Instant::elapsed);
                if let Err(d) = policy_write_due(&old, &st, since) {
                    wake = Some(wake.map_or(d, |w| w.min(d)));
                    continue;
                }
                st.last_evaluated = Some(now);
                self.throttle().await;
                // Untyped: the answer carries the spec, which this version may not decode
                // (a policy of a newer CRD), and a write that succeeded must count as one.
                let api: Api<DynamicObject> = Api::all_with(
                    self.client.clone(),
                    &ApiResource::erase::<ArmorRefreshPolicy>(&()),
                );
                let patch = json!({"apiVersion": "refresh.armor.dev/v1alpha1", "kind": "ArmorRefreshPolicy", "status": st});
                METRICS.write("patch_status");
                let r = api
                    .patch_status(
                        name,
                        &PatchParams::apply(FIELD_MANAGER).force(),
                        &Patch::Apply(&patch),
                    )
                    .await;
                self.note_overload(&r);
                if r.is_ok() {
                    self.policy_written.insert(name.clone(), Instant::now());
                }
                match r {
                    Err(e) => {
                        tracing::warn!(policy = %name, error = %e, "writing policy status failed");
                        METRICS.reconcile_error("status_write");
                    }
                    // A policy the cache cannot decode has no status there: remember it.
                    Ok(_) if valid.as_ref().is_err_and(|e| e.field == UNDECODABLE) => {
                        self.undecodable_statuses.insert(name.clone(), st);
                    }
                    Ok(_) => {}
                }
            }
        }
        wake
    }

    /// Deletes the finished runs of `policy` that its retention no longer keeps (at most
    /// `RETIRE_PER_PASS`); the time the next kept run's time to live ends.
    async fn retire(
        &mut self,
        policy: &ValidPolicy,
        runs: &[(&ArmorRefreshRun, ArmorRefreshRunStatus)],
        now: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        let finished: Vec<_> = runs
            .iter()
            .filter(|(r, s)| s.phase.is_terminal() && r.metadata.deletion_timestamp.is_none())
            .filter_map(|(r, s)| {
                let created = r
                    .metadata
                    .creation_timestamp
                    .as_ref()
                    .and_then(|t| DateTime::<Utc>::from_timestamp(t.0.as_second(), 0));
                Some(crate::retention::Finished {
                    name: r.name_any(),
                    failed: s.phase == Phase::Failed,
                    at: s.completed_at.or(created)?,
                    created: created?,
                })
            })
            .collect();
        let sweep = crate::retention::sweep(&finished, &policy.retention, now);
        // A backlog (runs piled up before retention existed) goes a slice per pass, so the
        // runs in flight keep stepping; the rest a second later.
        let more = sweep.delete.len() > RETIRE_PER_PASS;
        for name in sweep.delete.into_iter().take(RETIRE_PER_PASS) {
            if !self.leading() {
                return None;
            }
            let uid = runs
                .iter()
                .find(|(r, _)| r.name_any() == name)
                .and_then(|(r, _)| r.uid());
            self.throttle().await;
            METRICS.write("delete");
            // Preconditioned on the uid: a run recreated under the same name is not ours to delete.
            let dp = DeleteParams {
                preconditions: uid.map(|uid| kube::api::Preconditions {
                    uid: Some(uid),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            match Api::<ArmorRefreshRun>::all(self.client.clone())
                .delete(&name, &dp)
                .await
            {
                Ok(_) => {
                    tracing::info!(policy = %policy.name, run = %name, "deleted a finished run (retention)")
                }
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
                Err(e) => {
                    tracing::warn!(policy = %policy.name, run = %name, error = %e, "deleting a finished run failed");
                    METRICS.reconcile_error("delete_run");
                }
            }
        }
        if more {
            return Some(now + chrono::TimeDelta::seconds(1));
        }
        sweep.next
    }

    /// `trigger: Automatic`: a run owned by the policy, unless one was created a moment
    /// ago or the last one ended with failures (a person should look first).
    async fn auto_create(
        &mut self,
        policy: &ArmorRefreshPolicy,
        runs: &[(&ArmorRefreshRun, ArmorRefreshRunStatus)],
    ) {
        let name = policy.name_any();
        if self
            .auto_created
            .get(&name)
            .is_some_and(|t| t.elapsed() < Duration::from_secs(60))
        {
            return;
        }
        let last = runs.iter().max_by_key(|(r, _)| r.creation_timestamp());
        if let Some((last, s)) = last {
            let recent = s
                .completed_at
                .is_some_and(|t| self.now() - t < chrono::TimeDelta::seconds(60));
            let failed = s.progress.failed > 0 || s.phase == Phase::Failed;
            let same_generation = last
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get("refresh.armor.dev/policy-generation"))
                .cloned()
                == policy.metadata.generation.map(|g| g.to_string());
            if recent || (failed && same_generation) {
                return;
            }
        }
        let run_name = format!(
            "{}-{}",
            name.chars().take(40).collect::<String>(),
            Utc::now().format("%Y%m%d%H%M%S")
        );
        let owner = policy.controller_owner_ref(&()).map(|mut o| {
            o.block_owner_deletion = Some(false);
            o
        });
        let obj: ArmorRefreshRun = match serde_json::from_value(json!({
            "apiVersion": "refresh.armor.dev/v1alpha1",
            "kind": "ArmorRefreshRun",
            "metadata": {
                "name": run_name,
                "ownerReferences": owner.into_iter().collect::<Vec<_>>(),
                "annotations": {"refresh.armor.dev/policy-generation": policy.metadata.generation.unwrap_or_default().to_string(),
                                "refresh.armor.dev/created-by": "trigger-automatic"},
            },
            "spec": {"policyRef": {"name": name}},
        })) {
            Ok(o) => o,
            Err(e) => {
                tracing::error!(error = %e, "building an automatic run");
                return;
            }
        };
        self.throttle().await;
        METRICS.write("create");
        match Api::<ArmorRefreshRun>::all(self.client.clone())
            .create(&PostParams::default(), &obj)
            .await
        {
            Ok(_) => {
                tracing::info!(policy = %name, run = %obj.name_any(), "created a run (trigger: Automatic)");
                self.auto_created.insert(name, Instant::now());
            }
            Err(e) => {
                tracing::warn!(policy = %name, error = %e, "creating an automatic run failed");
                METRICS.reconcile_error("create_run");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::Status;

    #[test]
    fn policy_counts_alone_wait_and_anything_else_is_written_at_once() {
        let counts = |pending: u32| {
            Some(TargetCounts {
                total: 10,
                compliant: 10 - pending,
                pending,
                skipped: Default::default(),
            })
        };
        let old = ArmorRefreshPolicyStatus {
            targets: counts(5),
            active_run: Some("r1".into()),
            ..Default::default()
        };
        let fewer = ArmorRefreshPolicyStatus {
            targets: counts(4),
            ..old.clone()
        };
        let second = Duration::from_secs(1);
        // Counts alone, written a second ago: wait for the rest of LAZY_WRITE.
        assert_eq!(
            policy_write_due(&old, &fewer, Some(second)),
            Err(LAZY_WRITE - second)
        );
        // ... and once LAZY_WRITE has passed, or when this process never wrote it.
        assert_eq!(policy_write_due(&old, &fewer, Some(LAZY_WRITE)), Ok(()));
        assert_eq!(policy_write_due(&old, &fewer, None), Ok(()));
        // The run finished: the last run and the counts go out together, at once.
        let finished = ArmorRefreshPolicyStatus {
            active_run: None,
            last_run: Some("r1".into()),
            targets: counts(0),
            ..old.clone()
        };
        assert_eq!(policy_write_due(&old, &finished, Some(second)), Ok(()));
        // A condition changed with the counts (a spec made invalid): at once.
        let mut invalid = fewer.clone();
        invalid
            .conditions
            .push(Condition::new("Ready", false, "InvalidSpec", "spec.x: bad"));
        assert_eq!(policy_write_due(&old, &invalid, Some(second)), Ok(()));
        // A new generation observed: at once.
        let observed = ArmorRefreshPolicyStatus {
            observed_generation: Some(2),
            ..fewer
        };
        assert_eq!(policy_write_due(&old, &observed, Some(second)), Ok(()));
    }

    /// An error as the API server sends it.
    fn api(code: u16, message: &str, cause: Option<&str>) -> Result<(), kube::Error> {
        let mut s = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code, "message": message, "reason": "TooManyRequests"});
        if let Some(c) = cause {
            s["details"] = json!({"causes": [{"reason": c, "message": "The disruption budget web needs 2 healthy pods and has 2 currently"}]});
        }
        let s: Status = serde_json::from_value(s).unwrap();
        Err(kube::Error::Api(s.boxed()))
    }

    /// Every answer of the Eviction API in Kubernetes' eviction.go, and what a run does with it.
    #[test]
    fn every_eviction_answer_has_an_outcome() {
        let pdb = "Cannot evict pod as it would violate the pod's disruption budget.";
        assert_eq!(classify_eviction(&Ok::<(), kube::Error>(())), Outcome::Done);
        assert!(matches!(
            classify_eviction(&api(429, pdb, Some("DisruptionBudget"))),
            Outcome::Refused(_)
        ));
        // A budget still being processed, or already exceeded (403): a budget's answer too.
        assert!(matches!(
            classify_eviction(&api(
                429,
                "pdb is still being processed by the server",
                Some("DisruptionBudget")
            )),
            Outcome::Refused(_)
        ));
        assert!(matches!(
            classify_eviction(&api(
                403,
                "pdb disruptions allowed is negative",
                Some("DisruptionBudget")
            )),
            Outcome::Refused(_)
        ));
        // A webhook on pods/eviction answering 429 (KubeVirt does): busy, not a budget.
        let webhook = classify_eviction(&api(
            429,
            "admission webhook \"virt\" denied the request: VMI is migrating",
            None,
        ));
        assert!(
            matches!(&webhook, Outcome::Busy(m) if m.contains("virt")),
            "{webhook:?}"
        );
        assert!(matches!(
            classify_eviction(&api(
                429,
                "Too many requests, please try again later.",
                None
            )),
            Outcome::Busy(_)
        ));
        // A namespace being deleted: its pods go anyway.
        assert!(matches!(
            classify_eviction(&api(
                403,
                "pods \"web-1\" is forbidden: unable to create new content in namespace shop because it is being terminated",
                Some("NamespaceTerminating")
            )),
            Outcome::Busy(_)
        ));
        // Two budgets over one pod, a webhook's 500, a conflict on the budget: not done, retried.
        assert!(matches!(
            classify_eviction(&api(
                500,
                "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
                None
            )),
            Outcome::Retry(_)
        ));
        assert!(matches!(
            classify_eviction(&api(
                500,
                "admission webhook \"x\" denied the request: boom",
                None
            )),
            Outcome::Retry(_)
        ));
        assert!(matches!(
            classify_eviction(&api(
                409,
                "Operation cannot be fulfilled on poddisruptionbudgets.policy \"web\": the object has been modified",
                None
            )),
            Outcome::Retry(_)
        ));
        // Any other 5xx may come after the eviction was committed; so may a timeout.
        for code in [500, 502, 503, 504] {
            assert!(
                matches!(
                    classify_eviction(&api(code, "etcdserver: request timed out", None)),
                    Outcome::Unknown(_)
                ),
                "{code}"
            );
        }
        assert!(matches!(
            classify_eviction::<()>(&Err(kube::Error::LinesCodecMaxLineLengthExceeded)),
            Outcome::Unknown(_)
        ));
        // Gone, or a pod of the same name with another UID: not there any more.
        assert_eq!(
            classify_eviction(&api(404, "pods \"web-1\" not found", None)),
            Outcome::NotFound
        );
        assert_eq!(
            classify_eviction(&api(
                409,
                "Precondition failed: UID in precondition: a, UID in object meta: b",
                None
            )),
            Outcome::NotFound
        );
        // Other 4xx: failed for good, with the API's message.
        for code in [400, 403, 422] {
            assert!(
                matches!(classify_eviction(&api(code, "denied", None)), Outcome::Rejected(m) if m.contains("denied"))
            );
        }
    }

    #[test]
    fn only_the_api_servers_own_429_slows_every_write() {
        let s = |code: u16, m: &str| Status::failure(m, "TooManyRequests").with_code(code);
        assert!(is_overload(&s(
            429,
            "Too many requests, please try again later."
        )));
        assert!(!is_overload(&s(
            429,
            "Cannot evict pod as it would violate the pod's disruption budget."
        )));
        assert!(!is_overload(&s(
            429,
            "admission webhook \"virt\" denied the request: try later"
        )));
        assert!(!is_overload(&s(
            500,
            "Too many requests, please try again later."
        )));
    }
}
