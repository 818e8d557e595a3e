//! The state machine driven through a small simulated cluster: every transition and
//! reason, and a property test with random crashes that checks the run's invariants
//! (ARCHITECTURE.md lists them).

use super::*;
use crate::api::{ArmorRefreshRunSpec, ENFORCER_LABEL, PolicyRef};
use crate::policy::validate;
use proptest::prelude::{Just, ProptestConfig, any, prop_assert, prop_oneof, proptest};
use proptest::strategy::Strategy as _;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;

/// No request unanswered: these tests' shell answers every eviction within its step.
static NONE_PENDING: std::sync::LazyLock<HashSet<String>> = std::sync::LazyLock::new(HashSet::new);

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-03-02T10:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

fn policy(yaml: &str) -> ValidPolicy {
    validate("pol", &serde_saphyr::from_str(yaml).unwrap()).unwrap()
}

/// A cluster where evicted pods are replaced by their workload with the profile injected
/// (as the webhook does), Ready after `ready_delay` unless their workload is broken.
pub(crate) struct World {
    pub(crate) now: DateTime<Utc>,
    pub(crate) facts: ClusterFacts,
    next_uid: u32,
    ready_delay: i64,
    /// Deployment name → its replacements' ready delay, instead of `ready_delay`.
    slow: BTreeMap<String, i64>,
    broken: BTreeSet<String>,
    /// Deployment name → minAvailable (a PDB).
    min_available: BTreeMap<String, usize>,
    ready_at: Vec<(String, DateTime<Utc>)>,
    /// Evicted uid → its replacement's uid.
    replaced: BTreeMap<String, String>,
    evictions: Vec<String>,
    /// Workload of each eviction, in order.
    evicted_apps: Vec<String>,
    /// Replacements come without their profile (the webhook is down).
    webhook_down: bool,
    /// The next this-many replacements come without their profile.
    unprofiled_next: usize,
    max_disrupted: usize,
    /// Scripted answers of the Eviction API, first to last; then `always`, then the real one.
    answers: std::collections::VecDeque<Answer>,
    always: Option<Answer>,
}

/// How the simulated Eviction API answers one request.
#[derive(Debug, Clone)]
pub(crate) enum Answer {
    /// Not carried out; this outcome comes back.
    Refuse(Outcome),
    /// Carried out, but the answer is lost (a timeout).
    Lose,
}

impl World {
    pub(crate) fn new(deployments: &[(&str, usize)]) -> World {
        let mut w = World {
            now: t0(),
            facts: ClusterFacts::default(),
            next_uid: 0,
            ready_delay: 3,
            slow: BTreeMap::new(),
            broken: BTreeSet::new(),
            min_available: BTreeMap::new(),
            ready_at: vec![],
            replaced: BTreeMap::new(),
            evictions: vec![],
            evicted_apps: vec![],
            webhook_down: false,
            unprofiled_next: 0,
            max_disrupted: 0,
            answers: Default::default(),
            always: None,
        };
        for z in ["a", "b", "c"] {
            w.facts.nodes.insert(
                format!("node-{z}"),
                [
                    (
                        "topology.kubernetes.io/zone".to_string(),
                        format!("zone-{z}"),
                    ),
                    (ENFORCER_LABEL.to_string(), "apparmor".to_string()),
                ]
                .into(),
            );
            // Every node runs a KubeArmor agent: these tests are about runs, not fleets.
            w.facts.agents.insert(format!("node-{z}"));
        }
        for (d, n) in deployments {
            w.set_replicas(d, *n);
            for _ in 0..*n {
                w.add_pod(d, false, true);
            }
        }
        w
    }

    /// The Deployment object of `deploy`, wanting `n` pods.
    pub(crate) fn set_replicas(&mut self, deploy: &str, n: usize) {
        let d: k8s_openapi::api::apps::v1::Deployment = serde_json::from_value(json!({
            "metadata": {"name": deploy, "namespace": "shop"},
            "spec": {"replicas": n, "selector": {}, "template": {}},
        }))
        .unwrap();
        self.facts
            .deployments
            .insert(("shop".into(), deploy.into()), Arc::new(d));
    }

    fn add_pod(&mut self, deploy: &str, compliant: bool, ready: bool) -> String {
        self.next_uid += 1;
        let uid = format!("uid-{}", self.next_uid);
        let node = ["node-a", "node-b", "node-c"][self.next_uid as usize % 3];
        let mut annotations = serde_json::Map::new();
        // The webhook injects only where an agent runs.
        if compliant && self.facts.agents.contains(node) {
            annotations.insert(
                "container.apparmor.security.beta.kubernetes.io/app".to_string(),
                json!(format!("localhost/kubearmor-shop-{deploy}-app")),
            );
            annotations.insert("refresh.armor.dev/injected".into(), json!("app"));
        }
        let pod: LeanPod = serde_json::from_value(json!({
            "metadata": {
                "name": format!("{deploy}-h{}-{}", deploy.len(), self.next_uid),
                "namespace": "shop",
                "uid": uid,
                "creationTimestamp": self.now.to_rfc3339(),
                "labels": {"app": deploy, "pod-template-hash": format!("h{}", deploy.len())},
                "annotations": annotations,
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": format!("{deploy}-h{}", deploy.len()), "uid": "rs", "controller": true}],
            },
            "spec": {"nodeName": node, "containers": [{"name": "app"}]},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]},
        }))
        .unwrap();
        self.facts.pods.push(Arc::new(pod));
        uid
    }

    fn pod(&self, uid: &str) -> Option<&LeanPod> {
        self.facts
            .pods
            .iter()
            .find(|p| p.metadata.uid.as_deref() == Some(uid))
            .map(|p| p.as_ref())
    }

    fn ready_of(&self, deploy: &str) -> usize {
        self.facts
            .pods
            .iter()
            .filter(|p| {
                p.labels().get("app").map(String::as_str) == Some(deploy) && select::is_ready(p)
            })
            .count()
    }

    fn disrupted(&self) -> usize {
        self.replaced
            .values()
            .filter(|r| self.pod(r).is_some_and(|p| !select::is_ready(p)))
            .count()
    }

    pub(crate) fn evict(&mut self, uid: &str) -> Outcome {
        if self.pod(uid).is_none() {
            return Outcome::NotFound;
        }
        match self.answers.pop_front().or_else(|| self.always.clone()) {
            Some(Answer::Refuse(o)) => return o,
            Some(Answer::Lose) => {
                let real = self.evict_really(uid);
                return match real {
                    Outcome::Done => Outcome::Unknown("timeout".into()),
                    o => o,
                };
            }
            None => {}
        }
        self.evict_really(uid)
    }

    fn evict_really(&mut self, uid: &str) -> Outcome {
        let Some(p) = self.pod(uid) else {
            return Outcome::NotFound;
        };
        let deploy = p.labels()["app"].clone();
        if let Some(&min) = self.min_available.get(&deploy) {
            if self.ready_of(&deploy) <= min {
                return Outcome::Refused(
                    "Cannot evict pod as it would violate the pod's disruption budget.".into(),
                );
            }
        }
        self.facts
            .pods
            .retain(|p| p.metadata.uid.as_deref() != Some(uid));
        self.evictions.push(uid.to_string());
        self.evicted_apps.push(deploy.clone());
        let unprofiled = self.webhook_down || self.unprofiled_next > 0;
        self.unprofiled_next = self.unprofiled_next.saturating_sub(1);
        let r = self.add_pod(&deploy, !unprofiled, false);
        if !self.broken.contains(&deploy) {
            let delay = self.slow.get(&deploy).copied().unwrap_or(self.ready_delay);
            self.ready_at
                .push((r.clone(), self.now + TimeDelta::seconds(delay)));
        }
        self.replaced.insert(uid.to_string(), r);
        self.max_disrupted = self.max_disrupted.max(self.disrupted());
        Outcome::Done
    }

    pub(crate) fn advance(&mut self, d: Duration) {
        self.now += TimeDelta::from_std(d).unwrap();
        let now = self.now;
        let due: Vec<String> = self
            .ready_at
            .iter()
            .filter(|(_, t)| *t <= now)
            .map(|(u, _)| u.clone())
            .collect();
        self.ready_at.retain(|(_, t)| *t > now);
        for p in self.facts.pods.iter_mut() {
            if due.iter().any(|u| p.metadata.uid.as_deref() == Some(u)) {
                let mut q = (**p).clone();
                q.status.as_mut().unwrap().conditions.as_mut().unwrap()[0].status = "True".into();
                *p = Arc::new(q);
            }
        }
    }
}

struct Run {
    spec: ArmorRefreshRunSpec,
    status: ArmorRefreshRunStatus,
}

fn run_spec() -> ArmorRefreshRunSpec {
    ArmorRefreshRunSpec {
        policy_ref: PolicyRef { name: "pol".into() },
        dry_run: false,
        paused: false,
        resume_token: String::new(),
    }
}

impl Run {
    fn new() -> Run {
        Run {
            spec: run_spec(),
            status: ArmorRefreshRunStatus::default(),
        }
    }
}

/// What a run of `spec` observes of `facts` under `policy` (no other runs).
pub(crate) fn observe<'a>(
    spec: &'a ArmorRefreshRunSpec,
    policy: PolicyView<'a>,
    facts: &'a ClusterFacts,
    results: &'a HashMap<String, Outcome>,
    selection: Option<&'a Selection>,
) -> Observations<'a> {
    Observations {
        selection,
        generation: Some(1),
        spec,
        policy,
        facts,
        others: &[],
        blocked_by: None,
        results,
        pending: &NONE_PENDING,
    }
}

/// What a shell does: step, persist, act, feed the outcomes back.
fn shell_step(
    w: &mut World,
    r: &mut Run,
    p: PolicyView,
    results: &HashMap<String, Outcome>,
) -> (Step, HashMap<String, Outcome>) {
    let obs = observe(&r.spec, p, &w.facts, results, None);
    let st = step(&r.status, &obs, w.now);
    r.status = st.status.clone();
    let mut out = HashMap::new();
    for a in &st.actions {
        if let Action::Evict { uid, .. } = a {
            assert!(!r.spec.paused, "evicted while paused");
            out.insert(uid.clone(), w.evict(uid));
        }
    }
    (st, out)
}

/// Drives until the run is terminal or `limit` steps; returns the steps.
fn drive(w: &mut World, r: &mut Run, p: PolicyView, limit: usize) -> Vec<Step> {
    let mut results = HashMap::new();
    let mut steps = vec![];
    for _ in 0..limit {
        let (st, out) = shell_step(w, r, p, &results);
        let wait = st.requeue_after;
        steps.push(st);
        if r.status.phase.is_terminal() {
            break;
        }
        results = out;
        if results.is_empty() {
            w.advance(
                wait.unwrap_or(POLL)
                    .clamp(Duration::from_secs(1), Duration::from_secs(60)),
            );
        }
    }
    steps
}

fn events(steps: &[Step]) -> Vec<String> {
    steps
        .iter()
        .flat_map(|s| &s.actions)
        .filter_map(|a| match a {
            Action::Event { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn waves_refresh_everything_once_within_the_batch() {
    let mut w = World::new(&[("web", 5), ("api", 4)]);
    let pol = policy("rollout: {pacing: Waves, batchSize: 3, interval: 10s}");
    let mut r = Run::new();
    let steps = drive(&mut w, &mut r, PolicyView::Valid(&pol), 500);
    assert_eq!(r.status.phase, Phase::Completed, "{:?}", r.status);
    assert_eq!(r.status.reason, "Done");
    assert_eq!(r.status.progress.refreshed, 9);
    assert_eq!(r.status.progress.total, 9);
    assert_eq!(r.status.progress.summary, "9/9");
    assert_eq!(w.evictions.len(), 9);
    let unique: BTreeSet<_> = w.evictions.iter().collect();
    assert_eq!(unique.len(), 9, "no pod evicted twice");
    assert!(w.max_disrupted <= 3, "max disrupted {}", w.max_disrupted);
    assert_eq!(w.max_disrupted, 3);
    assert_eq!(r.status.history.len(), 3);
    assert!(
        condition(&r.status.conditions, "Complete")
            .unwrap()
            .is_true()
    );
    assert!(!condition(&r.status.conditions, "Failed").unwrap().is_true());
    assert!(
        !condition(&r.status.conditions, "Progressing")
            .unwrap()
            .is_true()
    );
    let ev = events(&steps);
    assert!(
        ev.contains(&"Started".to_string())
            && ev.contains(&"BatchStarted".to_string())
            && ev.contains(&"Done".to_string()),
        "{ev:?}"
    );
    assert!(r.status.completed_at.is_some() && r.status.started_at.is_some());
}

use crate::api::condition;

#[test]
fn a_batch_is_written_before_it_is_evicted() {
    let mut w = World::new(&[("web", 2)]);
    let pol = policy("rollout: {batchSize: 2}");
    let mut r = Run::new();
    let (st, _) = shell_step(&mut w, &mut r, PolicyView::Valid(&pol), &HashMap::new());
    assert_eq!(st.disruptions().count(), 0, "the first step only plans");
    // Not until the API server's clock is surely past the second the run started (creation
    // times have one-second resolution; the shell knows that clock within a second).
    assert_eq!(
        st.requeue_after,
        Some(Duration::from_secs(START_GUARD as u64))
    );
    let b = r.status.current_batch.as_ref().unwrap();
    assert!(b.pods.iter().all(|p| p.state == PodState::Planned));
    let (st, _) = shell_step(&mut w, &mut r, PolicyView::Valid(&pol), &HashMap::new());
    assert_eq!(st.disruptions().count(), 0, "still the start second");
    w.advance(Duration::from_secs(START_GUARD as u64 - 1));
    let (st, _) = shell_step(&mut w, &mut r, PolicyView::Valid(&pol), &HashMap::new());
    assert_eq!(st.disruptions().count(), 0, "within a second of it");
    w.advance(Duration::from_secs(1));
    let (st, out) = shell_step(&mut w, &mut r, PolicyView::Valid(&pol), &HashMap::new());
    assert_eq!(st.disruptions().count(), 2);
    assert!(
        r.status
            .current_batch
            .as_ref()
            .unwrap()
            .pods
            .iter()
            .all(|p| p.state == PodState::Evicting)
    );
    shell_step(&mut w, &mut r, PolicyView::Valid(&pol), &out);
    assert!(
        r.status
            .current_batch
            .as_ref()
            .unwrap()
            .pods
            .iter()
            .all(|p| p.state == PodState::Evicted)
    );
}

#[test]
fn dry_run_plans_and_evicts_nothing() {
    let mut w = World::new(&[("web", 5)]);
    let pol = policy("rollout: {batchSize: 2}");
    let mut r = Run::new();
    r.spec.dry_run = true;
    let steps = drive(&mut w, &mut r, PolicyView::Valid(&pol), 10);
    assert_eq!(steps.len(), 1);
    assert_eq!(r.status.phase, Phase::Completed);
    assert_eq!(r.status.reason, "DryRun");
    let plan = r.status.plan.as_ref().unwrap();
    assert_eq!((plan.targets, plan.batches, plan.batch_size), (5, 3, 2));
    assert_eq!(plan.first_batches.len(), 3);
    assert!(w.evictions.is_empty());
    assert!(
        condition(&r.status.conditions, "Complete")
            .unwrap()
            .is_true()
    );
}

#[test]
fn policy_not_found_waits_before_start_and_fails_mid_run() {
    let mut w = World::new(&[("web", 4)]);
    w.ready_delay = 60;
    let mut r = Run::new();
    drive(&mut w, &mut r, PolicyView::NotFound, 3);
    assert_eq!(
        (r.status.phase, r.status.reason.as_str()),
        (Phase::Pending, "PolicyNotFound")
    );
    assert!(w.evictions.is_empty());
    // Start, get a batch in flight, then lose the policy.
    let pol = policy("rollout: {batchSize: 2}");
    drive(&mut w, &mut r, PolicyView::Valid(&pol), 3);
    assert_eq!(r.status.phase, Phase::Batching);
    assert_eq!(w.evictions.len(), 2);
    shell_step(&mut w, &mut r, PolicyView::NotFound, &HashMap::new());
    assert_eq!(
        (r.status.phase, r.status.reason.as_str()),
        (Phase::Paused, "PolicyNotFound"),
        "waits for the batch in flight"
    );
    w.advance(Duration::from_secs(60));
    drive(&mut w, &mut r, PolicyView::NotFound, 5);
    assert_eq!(
        (r.status.phase, r.status.reason.as_str()),
        (Phase::Failed, "PolicyNotFound")
    );
    assert_eq!(w.evictions.len(), 2);
    let failed = condition(&r.status.conditions, "Failed").expect("a Failed condition");
    assert!(failed.is_true());
    assert_eq!(failed.reason, "PolicyNotFound");
    assert!(
        !condition(&r.status.conditions, "Complete")
            .unwrap()
            .is_true()
    );
    assert!(
        !condition(&r.status.conditions, "Progressing")
            .unwrap()
            .is_true()
    );
}

#[test]
fn invalid_policy_pauses_and_resumes_when_fixed() {
    let mut w = World::new(&[("web", 4)]);
    let mut r = Run::new();
    let err = SpecError::new(
        "spec.windows[0].timeZone",
        "\"Mars\" is not an IANA time zone",
    );
    drive(&mut w, &mut r, PolicyView::Invalid(&err), 2);
    assert_eq!(
        (r.status.phase, r.status.reason.as_str()),
        (Phase::Pending, "PolicyInvalid")
    );
    assert!(r.status.message.contains("spec.windows[0].timeZone"));
    let pol = policy("rollout: {batchSize: 1}");
    drive(&mut w, &mut r, PolicyView::Valid(&pol), 2);
    assert_eq!(r.status.phase, Phase::Batching);
    drive(&mut w, &mut r, PolicyView::Invalid(&err), 2);
    assert_eq!(
        (r.status.phase, r.status.reason.as_str()),
        (Phase::Paused, "PolicyInvalid")
    );
    let n = w.evictions.len();
    drive(&mut w, &mut r, PolicyView::Invalid(&err), 20);
    assert_eq!(
        w.evictions.len(),
        n,
        "nothing evicted while the policy is invalid"
    );
    drive(&mut w, &mut r, PolicyView::Valid(&pol), 500);
    assert_eq!(r.status.phase, Phase::Completed);
}

#[test]
fn user_pause_stops_evictions_and_resume_continues() {
    let mut w = World::new(&[("web", 6)]);
    let pol = policy("rollout: {batchSize: 2, interval: 0s}");
    let mut r = Run::new();
    drive(&mut w, &mut r, PolicyView::Valid(&pol), 3);
    assert_eq!(w.evictions.len(), 2);
    r.spec.paused = true;
    let steps = drive(&mut w, &mut r, PolicyView::Valid(&pol), 50);
    assert_eq!(
        (r.status.phase, r.status.reason.as_str()),
        (Phase::Paused, "UserPaused")
    );
    assert_eq!(w.evictions.len(), 2);
    assert!(condition(&r.status.conditions, "Paused").unwrap().is_true());
    assert!(events(&steps).contains(&"UserPaused".to_string()));
    // The batch in flight was still followed while paused.
    assert_eq!(r.status.progress.refreshed, 2);
    r.spec.paused = false;
    drive(&mut w, &mut r, PolicyView::Valid(&pol), 500);
    assert_eq!(r.status.phase, Phase::Completed);
    assert_eq!(w.evictions.len(), 6);
}

#[test]
fn outside_window_waits_with_the_next_window_then_proceeds() {
    let mut w = World::new(&[("web", 4)]);
    // 10:00Z now; the window opens at 11:00 UTC for 30 minutes.
    let pol = policy(
        "rollout: {batchSize: 2, interval: 0s}\nwindows: [{schedule: '0 11 * * *', duration: 30m, timeZone: UTC}]",
    );
    let mut r = Run::new();
    let (st, _) = shell_step(&mut w, &mut r, PolicyView::Valid(&pol), &HashMap::new());
    assert_eq!(
        (r.status.phase, r.status.reason.as_str()),
        (Phase::Paused, "OutsideWindow")
    );
    let next = DateTime::parse_from_rfc3339("2026-03-02T11:00:00Z")
        .unwrap()
        .with_timezone(&Utc);
    assert_eq!(r.status.next_window_at, Some(next));
    assert_eq!(
        st.requeue_after,
        Some(Duration::from_secs(300)),
        "requeue capped, the window is an hour away"
    );
    assert!(w.evictions.is_empty());
    w.now = next;
    drive(&mut w, &mut r, PolicyView::Valid(&pol), 500);
    assert_eq!(r.status.phase, Phase::Completed);
    assert_eq!(r.status.next_window_at, None);
}

#[test]
fn a_window_closing_mid_batch_lets_it_finish_but_starts_nothing() {
    let mut w = World::new(&[("web", 4)]);
    w.ready_delay = 120;
    let pol = policy(
        "rollout: {batchSize: 2, interval: 0s}\nwindows: [{schedule: '0 10 * * *', duration: 1m, timeZone: UTC}]",
    );
    let mut r = Run::new();
    drive(&mut w, &mut r, PolicyView::Valid(&pol), 3);
    assert_eq!(w.evictions.len(), 2);
    // The window closes at 10:01 while the replacements need until 10:02.
    drive(&mut w, &mut r, PolicyView::Valid(&pol), 100);
    assert_eq!(
        (r.status.phase, r.status.reason.as_str()),
        (Phase::Paused, "OutsideWindow")
    );
    assert_eq!(
        r.status.progress.refreshed, 2,
        "the batch in flight finished"
    );
    assert_eq!(w.evictions.len(), 2, "no new batch outside the window");
}

#[test]
fn circuit_breaker_opens_at_threshold_and_resume_token_closes_it() {
    let mut w = World::new(&[("web", 3), ("bad", 4)]);
    w.broken.insert("bad".into());
    let pol = policy(
        "rollout: {batchSize: 2, interval: 0s, readyTimeout: 30s}\nhealth: {maxFailures: 1}",
    );
    let mut r = Run::new();
    let steps = drive(&mut w, &mut r, PolicyView::Valid(&pol), 300);
    assert_eq!(
        (r.status.phase, r.status.reason.as_str()),
        (Phase::Paused, "CircuitOpen"),
        "{:?}",
        r.status.message
    );
    assert_eq!(
        r.status.progress.failed, 2,
        "opens on the first failure beyond maxFailures"
    );
    assert!(events(&steps).contains(&"ReplacementNotReady".to_string()));
    let n = w.evictions.len();
    drive(&mut w, &mut r, PolicyView::Valid(&pol), 100);
    assert_eq!(
        w.evictions.len(),
        n,
        "nothing evicted while the breaker is open"
    );
    // The failed replacements keep counting as disrupted.
    assert_eq!(r.status.unhealthy.len(), 2);
    // Fix the workload; the pods recover; resume declaratively.
    w.broken.clear();
    for (_, rep) in w.replaced.clone() {
        w.ready_at.push((rep, w.now));
    }
    r.spec.resume_token = "fixed-1".into();
    let steps = drive(&mut w, &mut r, PolicyView::Valid(&pol), 500);
    assert!(events(&steps).contains(&"CircuitReset".to_string()));
    assert_eq!(r.status.phase, Phase::Completed, "{:?}", r.status);
    assert_eq!(r.status.resume_token, "fixed-1");
    assert!(r.status.unhealthy.is_empty());
}

#[test]
fn pdb_refusal_defers_and_retries_without_forcing() {
    let mut w = World::new(&[("web", 3)]);
    w.min_available.insert("web".into(), 3);
    let pol = policy("rollout: {batchSize: 1, interval: 0s}");
    let mut r = Run::new();
    let steps = drive(&mut w, &mut r, PolicyView::Valid(&pol), 5);
    let b = r.status.current_batch.as_ref().unwrap();
    assert_eq!(b.pods[0].state, PodState::Deferred);
    assert!(b.pods[0].attempts >= 1);
    assert!(
        r.status.message.contains("deferred"),
        "{}",
        r.status.message
    );
    assert!(events(&steps).contains(&"EvictionDeferred".to_string()));
    assert!(w.evictions.is_empty());
    // The budget loosens: the retry goes through.
    w.min_available.insert("web".into(), 2);
    drive(&mut w, &mut r, PolicyView::Valid(&pol), 500);
    assert_eq!(r.status.phase, Phase::Completed);
    assert_eq!(w.evictions.len(), 3);
}

// ---- Disruption accounting under the Eviction API's real answers ----

fn pod_of<'a>(r: &'a Run, uid: &str) -> &'a BatchPod {
    r.status
        .current_batch
        .iter()
        .flat_map(|b| &b.pods)
        .chain(&r.status.unhealthy)
        .find(|p| p.uid == uid)
        .unwrap()
}

#[test]
fn a_server_error_is_retried_with_growing_backoff_never_in_a_hot_loop() {
    // A pod under two PDBs: the API server answers 500 until one of them goes.
    let mut w = World::new(&[("web", 2)]);
    for _ in 0..3 {
        w.answers.push_back(Answer::Refuse(Outcome::Retry(
            "500 This pod has more than one PodDisruptionBudget".into(),
        )));
    }
    let pol = policy("rollout: {batchSize: 1, interval: 0s}");
    let mut r = Run::new();
    let steps = drive(&mut w, &mut r, PolicyView::Valid(&pol), 6);
    let p = &r.status.current_batch.as_ref().unwrap().pods[0];
    assert!(p.errors >= 1 && p.attempts == 0, "{p:?}");
    assert!(
        p.message.contains("more than one PodDisruptionBudget"),
        "{}",
        p.message
    );
    assert!(events(&steps).contains(&"EvictionFailed".to_string()));
    // No hot loop: every step after a failure waits for its retry time.
    let gaps: Vec<_> = steps
        .iter()
        .filter(|s| {
            s.actions
                .iter()
                .any(|a| matches!(a, Action::Event { reason, .. } if reason == "EvictionFailed"))
        })
        .map(|s| s.requeue_after.unwrap())
        .collect();
    assert!(gaps.iter().all(|g| *g >= ERROR_BASE), "{gaps:?}");
    drive(&mut w, &mut r, PolicyView::Valid(&pol), 300);
    assert_eq!(r.status.phase, Phase::Completed, "{}", r.status.message);
    assert_eq!(
        (r.status.progress.refreshed, r.status.progress.failed),
        (2, 0)
    );
    assert_eq!(backoff(ERROR_BASE, 1, ERROR_MAX), ERROR_BASE);
    assert_eq!(backoff(ERROR_BASE, 3, ERROR_MAX), ERROR_BASE * 4);
    assert_eq!(backoff(ERROR_BASE, 30, ERROR_MAX), ERROR_MAX);
}

#[test]
fn an_eviction_that_always_fails_ends_failed_after_the_attempt_cap() {
    let mut w = World::new(&[("web", 2)]);
    w.always = Some(Answer::Refuse(Outcome::Retry("500 internal error".into())));
    let pol = policy("rollout: {batchSize: 1, interval: 0s}\nhealth: {maxFailures: 5}");
    let mut r = Run::new();
    let steps = drive(&mut w, &mut r, PolicyView::Valid(&pol), 2000);
    assert_eq!(r.status.phase, Phase::Completed, "{}", r.status.message);
    assert_eq!(r.status.progress.failed, 2);
    assert!(
        r.status.unhealthy.is_empty(),
        "never evicted: not disrupted"
    );
    let sent = steps.iter().flat_map(|s| s.disruptions()).count();
    assert_eq!(
        sent,
        2 * MAX_ERRORS as usize,
        "a bounded number of requests"
    );
    let failed = r
        .status
        .recent
        .iter()
        .filter(|c| c.state == PodState::Failed);
    assert_eq!(failed.count(), 2, "{:?}", r.status.recent);
}

#[test]
fn a_rejected_eviction_fails_the_pod_with_the_apis_message() {
    let mut w = World::new(&[("web", 2)]);
    w.answers.push_back(Answer::Refuse(Outcome::Rejected(
        "403 admission webhook \"deny-evictions\" denied the request".into(),
    )));
    let pol = policy("rollout: {batchSize: 1, interval: 0s}\nhealth: {maxFailures: 5}");
    let mut r = Run::new();
    drive(&mut w, &mut r, PolicyView::Valid(&pol), 300);
    assert_eq!(r.status.phase, Phase::Completed);
    assert_eq!(
        (r.status.progress.refreshed, r.status.progress.failed),
        (1, 1)
    );
    assert_eq!(w.evictions.len(), 1, "the refused pod is not tried again");
}

#[test]
fn a_lost_answer_counts_as_a_disruption_not_as_gone() {
    // The eviction happens, the answer is lost; the retry finds the pod gone (404).
    let mut w = World::new(&[("web", 3)]);
    w.answers.push_back(Answer::Lose);
    let pol = policy("rollout: {batchSize: 1, interval: 0s}");
    let mut r = Run::new();
    drive(&mut w, &mut r, PolicyView::Valid(&pol), 3);
    let uid = w.evictions[0].clone();
    let p = pod_of(&r, &uid);
    assert!(p.uncertain, "{p:?}");
    assert_ne!(p.state, PodState::Gone);
    drive(&mut w, &mut r, PolicyView::Valid(&pol), 300);
    assert_eq!(r.status.phase, Phase::Completed, "{}", r.status.message);
    assert_eq!(r.status.progress.refreshed, 3, "matched to its replacement");
    assert_eq!(r.status.history.iter().map(|h| h.gone).sum::<u32>(), 0);
    assert!(w.max_disrupted <= 1);
}

#[test]
fn a_scale_down_or_a_deleted_workload_is_not_a_failure() {
    let mut w = World::new(&[("web", 4), ("api", 2)]);
    w.ready_delay = 1000; // replacements come, but slowly
    let pol = policy("rollout: {batchSize: 2, interval: 0s, readyTimeout: 60s}");
    let mut r = Run::new();
    drive(&mut w, &mut r, PolicyView::Valid(&pol), 3);
    assert_eq!(w.evictions.len(), 2);
    // web is scaled down by half and api deleted: their controllers remove the pods
    // still starting.
    w.set_replicas("web", 2);
    w.facts
        .deployments
        .remove(&("shop".to_string(), "api".to_string()));
    let fresh: BTreeSet<String> = w.replaced.values().cloned().collect();
    w.facts.pods.retain(|p| {
        let app = p.labels()["app"].as_str();
        app != "api" && !fresh.contains(p.metadata.uid.as_deref().unwrap())
    });
    w.ready_delay = 1;
    drive(&mut w, &mut r, PolicyView::Valid(&pol), 300);
    assert_eq!(r.status.phase, Phase::Completed, "{}", r.status.message);
    assert_eq!(r.status.progress.failed, 0, "{:?}", r.status.history);
    assert!(r.status.unhealthy.is_empty());
}

#[test]
fn a_rolling_updates_surge_going_away_is_not_a_scale_down() {
    // Mid-rollout, web has 4 Ready pods for 3 replicas (maxSurge 1): after one eviction the
    // ReplicaSet still owes a replacement, which must be awaited, not taken for gone.
    let mut w = World::new(&[("web", 4)]);
    w.set_replicas("web", 3);
    w.ready_delay = 20;
    let pol = policy("rollout: {batchSize: 1, interval: 0s, readyTimeout: 60s}");
    let mut r = Run::new();
    drive(&mut w, &mut r, PolicyView::Valid(&pol), 4);
    let first = w.evictions[0].clone();
    let p = pod_of(&r, &first);
    assert_eq!(p.state, PodState::Evicted, "{p:?}");
    assert_eq!((p.ready_before, p.wanted_before), (Some(4), Some(3)));
    drive(&mut w, &mut r, PolicyView::Valid(&pol), 500);
    assert_eq!(r.status.phase, Phase::Completed, "{}", r.status.message);
    assert_eq!(r.status.progress.refreshed, 4);
    assert_eq!(r.status.history.iter().map(|h| h.gone).sum::<u32>(), 0);
    assert!(w.max_disrupted <= 1);
}

#[test]
fn a_daemonsets_replacement_is_the_one_on_its_node() {
    // Two DaemonSet pods were replaced at once: each eviction takes the new pod on its own
    // node, whichever was created first.
    let mut facts = ClusterFacts::default();
    let mk = |name: &str,
              uid: &str,
              node: &str,
              created: &str,
              ready: bool,
              profiled: bool|
     -> Arc<LeanPod> {
        let mut annotations = serde_json::Map::new();
        if profiled {
            annotations.insert(
                "container.apparmor.security.beta.kubernetes.io/app".into(),
                json!("localhost/kubearmor-shop-agent-app"),
            );
        }
        Arc::new(serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "shop", "uid": uid, "creationTimestamp": created,
                         "annotations": annotations,
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "agent", "uid": "ds", "controller": true}]},
            "spec": {"nodeName": node, "containers": [{"name": "app"}]},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]},
        })).unwrap())
    };
    for z in ["a", "b"] {
        facts.nodes.insert(
            format!("node-{z}"),
            [(ENFORCER_LABEL.to_string(), "apparmor".to_string())].into(),
        );
        facts.agents.insert(format!("node-{z}"));
    }
    // node-b's new pod was created first, and is Ready; node-a's is not Ready yet.
    facts.pods = vec![
        mk(
            "agent-new-b",
            "new-b",
            "node-b",
            "2026-03-02T10:00:02Z",
            true,
            true,
        ),
        mk(
            "agent-new-a",
            "new-a",
            "node-a",
            "2026-03-02T10:00:03Z",
            false,
            true,
        ),
    ];
    let ds: k8s_openapi::api::apps::v1::DaemonSet = serde_json::from_value(json!({
        "metadata": {"name": "agent", "namespace": "shop"},
        "spec": {"selector": {}, "template": {}},
        "status": {"currentNumberScheduled": 2, "desiredNumberScheduled": 2, "numberMisscheduled": 0, "numberReady": 1},
    })).unwrap();
    facts
        .daemonsets
        .insert(("shop".into(), "agent".into()), Arc::new(ds));
    let evicted = |uid: &str, node: &str| BatchPod {
        namespace: "shop".into(),
        name: format!("agent-old-{uid}"),
        uid: uid.into(),
        node: node.into(),
        owner: "DaemonSet/agent".into(),
        state: PodState::Evicted,
        requested_at: Some(t0()),
        evicted_at: Some(t0()),
        ready_before: Some(2),
        wanted_before: Some(2),
        ..Default::default()
    };
    let status = ArmorRefreshRunStatus {
        phase: Phase::Batching,
        started_at: Some(t0() - TimeDelta::seconds(10)),
        current_batch: Some(BatchStatus {
            index: 1,
            started_at: t0(),
            pods: vec![evicted("old-a", "node-a"), evicted("old-b", "node-b")],
        }),
        ..Default::default()
    };
    let pol = policy("rollout: {pacing: Waves, batchSize: 2}");
    let spec = run_spec();
    let results = HashMap::new();
    let obs = observe(&spec, PolicyView::Valid(&pol), &facts, &results, None);
    let st = step(&status, &obs, t0() + TimeDelta::seconds(5));
    let pods = &st.status.current_batch.as_ref().unwrap().pods;
    let a = pods.iter().find(|p| p.uid == "old-a").unwrap();
    let b = pods.iter().find(|p| p.uid == "old-b").unwrap();
    assert_eq!(
        (b.state, b.replacement.as_str()),
        (PodState::Refreshed, "new-b")
    );
    assert_eq!(
        a.state,
        PodState::Evicted,
        "node-a's replacement is not Ready: {a:?}"
    );
}

#[test]
fn a_crash_looping_pod_is_not_evicted_and_does_not_hold_a_failed_slot() {
    // web has a pod that never gets Ready (not a target), and one replacement that misses
    // its timeout and recovers later: with batch size 1 the run must still finish.
    let mut w = World::new(&[("web", 3)]);
    let looping = w.add_pod("web", false, false);
    w.set_replicas("web", 4);
    w.answers.clear();
    let pol = policy(
        "rollout: {batchSize: 1, interval: 0s, readyTimeout: 10s}\nhealth: {maxFailures: 5}",
    );
    w.ready_delay = 30; // the first replacement misses its 10 s
    let mut r = Run::new();
    drive(&mut w, &mut r, PolicyView::Valid(&pol), 6);
    w.ready_delay = 2;
    drive(&mut w, &mut r, PolicyView::Valid(&pol), 500);
    assert_eq!(r.status.phase, Phase::Completed, "{}", r.status.message);
    assert!(
        !w.evictions.contains(&looping),
        "an unready pod is never evicted"
    );
    assert_eq!(r.status.progress.failed, 1);
    assert_eq!(r.status.progress.refreshed, 2);
    assert!(
        r.status.unhealthy.is_empty(),
        "released once its own workload recovered"
    );
    let sel = select::select(&pol, &w.facts);
    assert_eq!(sel.skipped[&select::SkipReason::NotReady], 1);
}

#[test]
fn a_failed_pod_keeps_its_slot_while_no_replacement_exists() {
    // The replacement is refused at admission: nothing is created, the workload is short.
    let mut w = World::new(&[("web", 3)]);
    let pol = policy(
        "rollout: {batchSize: 1, interval: 0s, readyTimeout: 10s}\nhealth: {maxFailures: 5}",
    );
    let mut r = Run::new();
    drive(&mut w, &mut r, PolicyView::Valid(&pol), 3);
    let first = w.evictions[0].clone();
    let replacement = w.replaced[&first].clone();
    w.facts
        .pods
        .retain(|p| p.metadata.uid.as_deref() != Some(replacement.as_str()));
    w.ready_at.clear();
    drive(&mut w, &mut r, PolicyView::Valid(&pol), 100);
    assert_eq!(r.status.progress.failed, 1);
    assert_eq!(r.status.unhealthy.len(), 1, "still down: still counted");
    assert_eq!(
        w.evictions.len(),
        1,
        "batch size 1 is used up by the missing pod"
    );
    // The ReplicaSet manages at last: the slot frees and the run goes on.
    w.add_pod("web", true, true);
    drive(&mut w, &mut r, PolicyView::Valid(&pol), 300);
    assert_eq!(r.status.phase, Phase::Completed, "{}", r.status.message);
    assert!(r.status.unhealthy.is_empty());
}

/// Steps a run of `pol` over `w` as a shell whose answers are `res` and requests in flight
/// `pending`.
fn step_with(
    w: &World,
    pol: &ValidPolicy,
    status: &ArmorRefreshRunStatus,
    res: &HashMap<String, Outcome>,
    pending: &HashSet<String>,
) -> Step {
    let spec = run_spec();
    let obs = Observations {
        pending,
        ..observe(&spec, PolicyView::Valid(pol), &w.facts, res, None)
    };
    step(status, &obs, w.now)
}

/// Steps (letting time pass) until the first eviction is asked for: the status that asked
/// and the pod's UID.
fn first_eviction(w: &mut World, pol: &ValidPolicy) -> (ArmorRefreshRunStatus, String) {
    let mut status = ArmorRefreshRunStatus::default();
    for _ in 0..50 {
        let st = step_with(w, pol, &status, &HashMap::new(), &NONE_PENDING);
        status = st.status.clone();
        if let Some(Action::Evict { uid, .. }) = st.disruptions().next() {
            return (status, uid.clone());
        }
        w.advance(st.requeue_after.unwrap_or(POLL).max(Duration::from_secs(1)));
    }
    panic!("no eviction within 50 steps: {}", status.message);
}

fn state_of(s: &ArmorRefreshRunStatus, uid: &str) -> Option<PodState> {
    let b = s.current_batch.as_ref()?;
    b.pods.iter().find(|p| p.uid == uid).map(|p| p.state)
}

#[test]
fn an_unanswered_eviction_keeps_its_pod_evicting_until_the_answer_comes() {
    let mut w = World::new(&[("web", 3)]);
    let pol = policy("rollout: {batchSize: 1}");
    let (mut status, uid) = first_eviction(&mut w, &pol);
    // The request is out, its pod still there (the API server has not got to it): steps
    // meanwhile, even much later, neither guess its outcome nor ask again.
    let pending: HashSet<String> = [uid.clone()].into();
    for _ in 0..3 {
        let st = step_with(&w, &pol, &status, &HashMap::new(), &pending);
        status = st.status.clone();
        assert_eq!(st.disruptions().count(), 0, "asked again before the answer");
        assert_eq!(state_of(&status, &uid), Some(PodState::Evicting));
        w.advance(Duration::from_secs(30));
    }
    // The answer: a PodDisruptionBudget refused it. The pod waits out its backoff, and its
    // slot goes to another pod.
    let refused: HashMap<String, Outcome> =
        [(uid.clone(), Outcome::Refused("budget".into()))].into();
    let st = step_with(&w, &pol, &status, &refused, &NONE_PENDING);
    assert_eq!(state_of(&st.status, &uid), Some(PodState::Deferred));
    let again = st
        .disruptions()
        .any(|a| matches!(a, Action::Evict { uid: u, .. } if *u == uid));
    assert!(!again, "evicted again within its backoff");
}

#[test]
fn a_pod_gone_before_its_eviction_is_answered_waits_for_the_answer() {
    let mut w = World::new(&[("web", 3)]);
    let pol = policy("rollout: {batchSize: 1}");
    let (mut status, uid) = first_eviction(&mut w, &pol);
    let pending: HashSet<String> = [uid.clone()].into();
    // Evicted by the API server, answer still on its way: not yet counted as evicted.
    w.evict(&uid);
    let st = step_with(&w, &pol, &status, &HashMap::new(), &pending);
    status = st.status.clone();
    assert_eq!(state_of(&status, &uid), Some(PodState::Evicting));
    assert_eq!(st.disruptions().count(), 0, "its slot is still taken");
    // Not sent after all would say nothing happened: here the answer is that it was done.
    let done: HashMap<String, Outcome> = [(uid.clone(), Outcome::Done)].into();
    let st = step_with(&w, &pol, &status, &done, &NONE_PENDING);
    assert_eq!(state_of(&st.status, &uid), Some(PodState::Evicted));
    assert_eq!(st.status.progress.gone, 0);
}

#[test]
fn an_eviction_not_sent_is_planned_again() {
    let mut w = World::new(&[("web", 3)]);
    let pol = policy("rollout: {batchSize: 1}");
    let (status, uid) = first_eviction(&mut w, &pol);
    let not_sent: HashMap<String, Outcome> = [(uid.clone(), Outcome::NotSent)].into();
    let st = step_with(&w, &pol, &status, &not_sent, &NONE_PENDING);
    assert_ne!(state_of(&st.status, &uid), Some(PodState::Failed));
    // Planned again and, the slot being free, asked for again.
    let asked = st
        .disruptions()
        .any(|a| matches!(a, Action::Evict { uid: u, .. } if *u == uid))
        || step_with(&w, &pol, &st.status, &HashMap::new(), &NONE_PENDING)
            .disruptions()
            .any(|a| matches!(a, Action::Evict { uid: u, .. } if *u == uid));
    assert!(asked, "{:?}", st.status.current_batch);
    assert_eq!((st.status.progress.failed, st.status.progress.gone), (0, 0));
}

#[test]
fn another_active_run_of_the_policy_keeps_it_pending() {
    let w = World::new(&[("web", 2)]);
    let pol = policy("{}");
    let spec = run_spec();
    let res = HashMap::new();
    let obs = Observations {
        selection: None,
        generation: Some(1),
        spec: &spec,
        policy: PolicyView::Valid(&pol),
        facts: &w.facts,
        others: &[],
        blocked_by: Some("first"),
        results: &res,
        pending: &NONE_PENDING,
    };
    let st = step(&ArmorRefreshRunStatus::default(), &obs, w.now);
    assert_eq!(
        (st.status.phase, st.status.reason.as_str()),
        (Phase::Pending, "AnotherRunActive")
    );
    assert_eq!(st.disruptions().count(), 0);
}

#[test]
fn pods_in_another_runs_batch_are_not_taken_and_limit_zones() {
    let w = World::new(&[("web", 3)]);
    let pol = policy("rollout: {batchSize: 3, maxPerZone: 1}");
    let spec = run_spec();
    let res = HashMap::new();
    let first = &w.facts.pods[0];
    let other = BatchPod {
        namespace: "shop".into(),
        name: first.name_any(),
        uid: first.metadata.uid.clone().unwrap(),
        node: first.spec.as_ref().unwrap().node_name.clone().unwrap(),
        zone: "zone-b".into(),
        owner: "Deployment/web".into(),
        state: PodState::Evicted,
        ..Default::default()
    };
    let others = [other.clone()];
    let obs = Observations {
        selection: None,
        generation: Some(1),
        spec: &spec,
        policy: PolicyView::Valid(&pol),
        facts: &w.facts,
        others: &others,
        blocked_by: None,
        results: &res,
        pending: &NONE_PENDING,
    };
    let st = step(&ArmorRefreshRunStatus::default(), &obs, w.now);
    let b = st.status.current_batch.unwrap();
    assert!(b.pods.iter().all(|p| p.uid != other.uid));
    assert!(
        b.pods.iter().all(|p| p.zone != "zone-b"),
        "zone-b is at its limit because of the other run"
    );
    assert_eq!(b.pods.len(), 2);
}

#[test]
fn policy_edit_mid_run_takes_effect_at_the_next_batch() {
    let mut w = World::new(&[("web", 6), ("api", 2)]);
    let mut r = Run::new();
    let pol = policy("rollout: {batchSize: 1, interval: 0s}");
    drive(&mut w, &mut r, PolicyView::Valid(&pol), 3);
    assert_eq!(r.status.current_batch.as_ref().unwrap().pods.len(), 1);
    let before = w.evictions.len();
    // Bigger batches, and api excluded.
    let pol = policy(
        "rollout: {batchSize: 4, interval: 0s}\nexclude: {podSelector: {matchLabels: {app: api}}}",
    );
    drive(&mut w, &mut r, PolicyView::Valid(&pol), 500);
    assert_eq!(r.status.phase, Phase::Completed);
    assert_eq!(w.max_disrupted, 4, "the larger budget took effect");
    assert!(
        w.evicted_apps[before..].iter().all(|a| a == "web"),
        "api was excluded mid-run: {:?}",
        w.evicted_apps
    );
    assert_eq!(w.evicted_apps.iter().filter(|a| *a == "web").count(), 6);
    assert!(w.max_disrupted <= 4);
}

#[test]
fn a_planned_pod_that_stops_being_a_target_is_dropped() {
    let mut w = World::new(&[("web", 2), ("api", 1)]);
    let mut r = Run::new();
    let pol = policy("rollout: {batchSize: 3}");
    shell_step(&mut w, &mut r, PolicyView::Valid(&pol), &HashMap::new());
    assert_eq!(r.status.current_batch.as_ref().unwrap().pods.len(), 3);
    let pol = policy("rollout: {batchSize: 3}\nexclude: {podSelector: {matchLabels: {app: api}}}");
    w.advance(Duration::from_secs(START_GUARD as u64));
    let (st, _) = shell_step(&mut w, &mut r, PolicyView::Valid(&pol), &HashMap::new());
    assert_eq!(st.disruptions().count(), 2);
    // It left the window at once, its slot free (never evicted, it never rests).
    assert_eq!(r.status.progress.gone, 1);
    let gone: Vec<_> = r
        .status
        .recent
        .iter()
        .filter(|c| c.state == PodState::Gone)
        .collect();
    assert_eq!(gone.len(), 1);
    assert!(gone[0].pod.contains("/api"), "{gone:?}");
    assert!(r.status.current_batch.as_ref().unwrap().pods.len() == 2);
}

#[test]
fn replacements_without_profile_are_not_failures_and_not_retargeted() {
    let mut w = World::new(&[("web", 4)]);
    w.now += TimeDelta::seconds(5); // the originals predate the run
    w.webhook_down = true;
    let pol = policy("rollout: {batchSize: 2, interval: 0s}");
    let mut r = Run::new();
    let steps = drive(&mut w, &mut r, PolicyView::Valid(&pol), 200);
    assert_eq!(
        (r.status.phase, r.status.reason.as_str()),
        (Phase::Completed, "Done"),
        "{:?}",
        r.status
    );
    assert_eq!(
        w.evictions.len(),
        4,
        "the replacements (new targets) are the next run's"
    );
    assert_eq!(r.status.progress.without_profile, 4);
    assert_eq!(
        (r.status.progress.refreshed, r.status.progress.failed),
        (0, 0)
    );
    assert!(events(&steps).contains(&"ReplacementWithoutProfile".to_string()));
    // The next run refreshes them once the webhook is back.
    w.webhook_down = false;
    w.advance(Duration::from_secs(2));
    let mut next = Run::new();
    drive(&mut w, &mut next, PolicyView::Valid(&pol), 200);
    assert_eq!(next.status.phase, Phase::Completed);
    assert_eq!(next.status.progress.refreshed, 4);
    assert_eq!(w.evictions.len(), 8);
}

#[test]
fn a_replacement_scheduled_where_no_agent_runs_is_done_not_a_webhook_failure() {
    let mut w = World::new(&[("web", 6)]);
    w.now += TimeDelta::seconds(5);
    // node-c has no KubeArmor agent: its pods are not targets, and a replacement scheduled
    // there rightly gets no profile.
    w.facts.agents.remove("node-c");
    let pol = policy("rollout: {batchSize: 2, interval: 0s, readyTimeout: 30s}");
    let mut r = Run::new();
    let steps = drive(&mut w, &mut r, PolicyView::Valid(&pol), 200);
    assert_eq!(
        (r.status.phase, r.status.reason.as_str()),
        (Phase::Completed, "Done"),
        "{:?}",
        r.status
    );
    assert_eq!(w.evictions.len(), 4, "the pods on node-a and node-b");
    assert_eq!(
        (
            r.status.progress.refreshed,
            r.status.progress.without_profile,
            r.status.progress.failed
        ),
        (4, 0, 0)
    );
    assert!(!events(&steps).contains(&"ReplacementWithoutProfile".to_string()));
}

#[test]
fn one_eviction_never_takes_anothers_replacement() {
    // The first replacement misses the webhook; the later ones have their profile. Each
    // eviction is matched to its own (first-created) replacement, so none waits forever.
    let mut w = World::new(&[("web", 3)]);
    w.now += TimeDelta::seconds(5);
    w.unprofiled_next = 1;
    let pol = policy("rollout: {batchSize: 3, interval: 0s, readyTimeout: 30s}");
    let mut r = Run::new();
    drive(&mut w, &mut r, PolicyView::Valid(&pol), 200);
    assert_eq!(
        (r.status.phase, r.status.reason.as_str()),
        (Phase::Completed, "Done"),
        "{:?}",
        r.status
    );
    assert_eq!(
        (
            r.status.progress.refreshed,
            r.status.progress.without_profile,
            r.status.progress.failed
        ),
        (2, 1, 0)
    );
}

#[test]
fn replacements_are_matched_first_come_first_served_across_time() {
    // Evictions A, B, C requested at t, t+5s, t+10s (a crash in between); A's replacement
    // missed the webhook. Preferring replacements with a profile would give A B's, B C's,
    // and leave C none: it would fail. First created, first matched gives each its own.
    let mut w = World::new(&[]);
    let pol = policy("rollout: {batchSize: 3, readyTimeout: 60s}");
    let start = w.now;
    let mut evicted = vec![];
    for (i, profiled) in [false, true, true].into_iter().enumerate() {
        w.now = start + TimeDelta::seconds(5 * i as i64 + 2);
        w.add_pod("web", profiled, true);
        evicted.push(BatchPod {
            namespace: "shop".into(),
            name: format!("orig-{i}"),
            uid: format!("gone-{i}"),
            owner: "Deployment/web".into(),
            state: PodState::Evicted,
            requested_at: Some(w.now - TimeDelta::milliseconds(500)),
            evicted_at: Some(w.now - TimeDelta::milliseconds(400)),
            ..Default::default()
        });
    }
    let status = ArmorRefreshRunStatus {
        phase: Phase::Batching,
        started_at: Some(start),
        current_batch: Some(BatchStatus {
            index: 1,
            started_at: start,
            pods: evicted,
        }),
        ..Default::default()
    };
    let spec = run_spec();
    let res = HashMap::new();
    let obs = Observations {
        selection: None,
        generation: Some(1),
        spec: &spec,
        policy: PolicyView::Valid(&pol),
        facts: &w.facts,
        others: &[],
        blocked_by: None,
        results: &res,
        pending: &NONE_PENDING,
    };
    let st = step(&status, &obs, w.now);
    let p = &st.status.progress;
    assert_eq!(
        (p.refreshed, p.without_profile, p.failed),
        (2, 1, 0),
        "{:?}",
        st.status
    );
}

#[test]
fn completed_runs_do_nothing_more() {
    let mut w = World::new(&[("web", 1)]);
    let pol = policy("{}");
    let mut r = Run::new();
    drive(&mut w, &mut r, PolicyView::Valid(&pol), 100);
    assert_eq!(r.status.phase, Phase::Completed);
    w.add_pod("web", false, true);
    let (st, _) = shell_step(&mut w, &mut r, PolicyView::Valid(&pol), &HashMap::new());
    assert!(st.actions.is_empty());
    assert_eq!(st.requeue_after, None);
}

#[test]
fn nothing_to_do_completes_at_once() {
    let mut w = World::new(&[]);
    w.add_pod("web", true, true);
    let pol = policy("{}");
    let mut r = Run::new();
    drive(&mut w, &mut r, PolicyView::Valid(&pol), 5);
    assert_eq!(
        (r.status.phase, r.status.reason.as_str()),
        (Phase::Completed, "Done")
    );
    assert_eq!(r.status.progress.total, 0);
}

#[test]
fn estimates_respect_windows() {
    let pol = policy("rollout: {interval: 30s}");
    assert_eq!(
        estimate_end(&pol, 3, t0(), Duration::from_secs(60)),
        Some(t0() + TimeDelta::seconds(240))
    );
    // One-minute nightly window: each batch waits for the next night.
    let pol = policy("rollout: {interval: 0s}\nwindows: [{schedule: '0 1 * * *', duration: 1m}]");
    let end = estimate_end(&pol, 2, t0(), Duration::from_secs(60)).unwrap();
    assert_eq!(
        end,
        DateTime::parse_from_rfc3339("2026-03-04T01:01:00Z")
            .unwrap()
            .with_timezone(&Utc)
    );
}

// ---- Pacing Window ----

/// Drives `pacing` over web×8, api×8 and two pods whose replacements take 60 s (the others
/// 3 s); returns the run's duration in seconds and the status writes it needed.
fn slow_tail(pacing: &str) -> (i64, usize, u32) {
    let mut w = World::new(&[("web", 8), ("api", 8), ("slow", 2)]);
    w.slow.insert("slow".into(), 60);
    let pol = policy(&format!(
        "rollout: {{pacing: {pacing}, batchSize: 3, interval: 0s}}"
    ));
    let mut r = Run::new();
    let start = w.now;
    let steps = drive(&mut w, &mut r, PolicyView::Valid(&pol), 5000);
    assert_eq!(r.status.phase, Phase::Completed, "{pacing}: {:?}", r.status);
    assert_eq!(r.status.progress.refreshed, 18, "{pacing}");
    assert_eq!(w.evictions.len(), 18, "{pacing}: each pod once");
    assert_eq!(w.max_disrupted, 3, "{pacing}: the budget, never more");
    let writes = steps.iter().filter(|s| s.persist).count();
    (
        (w.now - start).num_seconds(),
        writes,
        r.status.progress.refreshed,
    )
}

#[test]
fn the_window_refills_a_slot_as_soon_as_its_pod_is_back() {
    let (window, _, _) = slow_tail("Window");
    let (waves, _, _) = slow_tail("Waves");
    println!("two slow pods among 18: window {window} s, waves {waves} s");
    // Each wave with a slow pod waits 60 s for it while its other slots idle; the window
    // keeps them busy. Simulated time: a property of the plan, not a timing.
    assert!(window * 3 < waves * 2, "window {window} s, waves {waves} s");
}

#[test]
fn the_window_writes_its_status_at_most_once_per_refreshed_pod() {
    // Each refill is written ahead (one write); answers, replacements and counters ride
    // along with the next one.
    let (_, writes, refreshed) = slow_tail("Window");
    println!("window: {writes} status writes for {refreshed} refreshed pods");
    assert!(
        writes as f64 <= 1.5 * f64::from(refreshed),
        "{writes} writes for {refreshed} pods"
    );
}

#[test]
fn a_slot_rests_for_the_interval_before_it_is_refilled() {
    let mut w = World::new(&[("web", 4)]);
    let pol = policy("rollout: {batchSize: 1, interval: 30s}");
    let mut r = Run::new();
    let mut results = HashMap::new();
    let mut evicted_at = vec![];
    for _ in 0..500 {
        let (st, out) = shell_step(&mut w, &mut r, PolicyView::Valid(&pol), &results);
        if st.disruptions().count() > 0 {
            evicted_at.push(w.now);
        }
        if r.status.phase.is_terminal() {
            break;
        }
        results = out;
        if results.is_empty() {
            w.advance(
                st.requeue_after
                    .unwrap_or(POLL)
                    .clamp(Duration::from_secs(1), Duration::from_secs(60)),
            );
        }
    }
    assert_eq!(r.status.phase, Phase::Completed);
    assert_eq!(evicted_at.len(), 4);
    for pair in evicted_at.windows(2) {
        // 3 s to Ready, then 30 s of rest.
        let gap = (pair[1] - pair[0]).num_seconds();
        assert!((33..=40).contains(&gap), "{gap} s between evictions");
    }
}

/// A PodDisruptionBudget over `app` allowing `allowed` disruptions.
fn pdb(app: &str, allowed: i32) -> Arc<k8s_openapi::api::policy::v1::PodDisruptionBudget> {
    Arc::new(
        serde_json::from_value(json!({
            "metadata": {"name": app, "namespace": "shop"},
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app": app}}},
            "status": {"disruptionsAllowed": allowed, "currentHealthy": 3, "desiredHealthy": 2, "expectedPods": 3},
        }))
        .unwrap(),
    )
}

/// web×3 under a PDB whose status says 1 while the API server refuses the first eviction
/// (its status lags): the run with that refusal just applied, and the step that applied it.
/// Waves, so no other pod takes the slot the refused one leaves.
fn refused_once() -> (World, Run, ValidPolicy, Step) {
    let mut w = World::new(&[("web", 3)]);
    w.facts.pdbs = vec![pdb("web", 1)];
    let pol = policy("rollout: {pacing: Waves, batchSize: 1, interval: 0s}");
    let mut r = Run::new();
    shell_step(&mut w, &mut r, PolicyView::Valid(&pol), &HashMap::new());
    w.advance(Duration::from_secs(START_GUARD as u64));
    w.answers
        .push_back(Answer::Refuse(Outcome::Refused("would violate".into())));
    let (st, out) = shell_step(&mut w, &mut r, PolicyView::Valid(&pol), &HashMap::new());
    assert_eq!(st.disruptions().count(), 1);
    let (st, _) = shell_step(&mut w, &mut r, PolicyView::Valid(&pol), &out);
    (w, r, pol, st)
}

#[test]
fn a_pdb_refusal_is_retried_as_soon_as_the_budget_allows_again() {
    let (mut w, mut r, pol, st) = refused_once();
    let p = &r.status.current_batch.as_ref().unwrap().pods[0];
    assert_eq!((p.state, p.pdb_refused), (PodState::Deferred, true));
    let backoff = p.retry_at.unwrap() - w.now;
    assert_eq!(backoff, TimeDelta::seconds(5), "the fallback");
    assert!(st.requeue_after.unwrap() <= Duration::from_secs(5));
    // Its status says 0 now: wait.
    w.facts.pdbs = vec![pdb("web", 0)];
    w.advance(Duration::from_secs(2));
    let (st, _) = shell_step(&mut w, &mut r, PolicyView::Valid(&pol), &HashMap::new());
    assert_eq!(st.disruptions().count(), 0, "the budget allows none");
    // It allows one again, well before the fallback: retried at once.
    w.facts.pdbs = vec![pdb("web", 1)];
    w.advance(Duration::from_secs(1));
    let (st, _) = shell_step(&mut w, &mut r, PolicyView::Valid(&pol), &HashMap::new());
    assert_eq!(st.disruptions().count(), 1, "{:?}", r.status.current_batch);
}

#[test]
fn a_pdb_refusal_is_not_retried_within_a_second_and_a_busy_api_never_early() {
    let (mut w, mut r, pol, _) = refused_once();
    // The budget reads 1, but the refusal was this very second.
    let (st, _) = shell_step(&mut w, &mut r, PolicyView::Valid(&pol), &HashMap::new());
    assert_eq!(st.disruptions().count(), 0, "not within {REFUSAL_GAP:?}");
    assert_eq!(st.requeue_after, Some(REFUSAL_GAP));
    w.advance(REFUSAL_GAP);
    // A busy API server (a 429 not from a PDB) is retried on its own backoff only.
    w.answers
        .push_back(Answer::Refuse(Outcome::Busy("Too many requests".into())));
    let (st, out) = shell_step(&mut w, &mut r, PolicyView::Valid(&pol), &HashMap::new());
    assert_eq!(st.disruptions().count(), 1);
    shell_step(&mut w, &mut r, PolicyView::Valid(&pol), &out);
    let p = &r.status.current_batch.as_ref().unwrap().pods[0];
    assert_eq!((p.state, p.pdb_refused), (PodState::Deferred, false));
    w.advance(Duration::from_secs(1));
    let (st, _) = shell_step(&mut w, &mut r, PolicyView::Valid(&pol), &HashMap::new());
    assert_eq!(
        st.disruptions().count(),
        0,
        "its budget allows, but it was not refused by it"
    );
}

#[test]
fn a_deferred_pod_does_not_idle_the_other_slots() {
    // web's PDB refuses every eviction; api flows through the other slot meanwhile.
    let mut w = World::new(&[("web", 2), ("api", 6)]);
    w.min_available.insert("web".into(), 2);
    let pol = policy("rollout: {batchSize: 2, interval: 0s}");
    let mut r = Run::new();
    drive(&mut w, &mut r, PolicyView::Valid(&pol), 400);
    assert_eq!(
        w.evicted_apps.iter().filter(|a| *a == "api").count(),
        6,
        "{:?}",
        r.status.message
    );
    assert!(w.evicted_apps.iter().all(|a| a == "api"));
    let b = r
        .status
        .current_batch
        .as_ref()
        .expect("web is still deferred");
    assert!(
        b.pods
            .iter()
            .all(|p| p.owner == "Deployment/web" && p.attempts >= 1),
        "{b:?}"
    );
}

#[test]
fn a_pod_planned_while_its_workload_is_short_waits_for_the_whole_workload() {
    // web-1's replacement takes 20 s; web-2 is planned meanwhile (the budget grew), and its
    // replacement never comes. web-2 must stay disrupted until web has 3 Ready pods again,
    // not 2 (those it had when web-2 was planned, web-1 being away).
    let mut w = World::new(&[("web", 3)]);
    w.slow.insert("web".into(), 20);
    let one = policy("rollout: {batchSize: 1, interval: 0s, readyTimeout: 10s}");
    let two = policy("rollout: {batchSize: 2, interval: 0s, readyTimeout: 10s}");
    let mut r = Run::new();
    let mut results = HashMap::new();
    for _ in 0..20 {
        let (_, out) = shell_step(&mut w, &mut r, PolicyView::Valid(&one), &results);
        results = out;
        if w.evictions.len() == 1 && results.is_empty() {
            break;
        }
        w.advance(Duration::from_secs(1));
    }
    assert_eq!(w.evictions.len(), 1);
    let (_, out) = shell_step(&mut w, &mut r, PolicyView::Valid(&two), &HashMap::new());
    let second = r
        .status
        .current_batch
        .as_ref()
        .unwrap()
        .pods
        .iter()
        .find(|p| p.state == PodState::Evicting)
        .cloned()
        .expect("web-2 planned");
    assert_eq!(second.ready_before, Some(3), "web-1, away, counts");
    shell_step(&mut w, &mut r, PolicyView::Valid(&two), &out);
    // web-2's replacement never becomes Ready.
    let r2 = w.replaced[&second.uid].clone();
    w.ready_at.retain(|(u, _)| *u != r2);
    drive(&mut w, &mut r, PolicyView::Valid(&two), 300);
    assert!(
        r.status.unhealthy.iter().any(|p| p.uid == second.uid),
        "still disrupted: {:?}",
        r.status.unhealthy
    );
    assert!(w.max_disrupted <= 2, "{} disrupted", w.max_disrupted);
}

#[test]
fn a_failed_replacement_holds_its_slot_and_the_window_goes_on_with_the_rest() {
    let mut w = World::new(&[("bad", 1), ("web", 6)]);
    w.broken.insert("bad".into());
    let pol = policy(
        "rollout: {batchSize: 2, interval: 0s, readyTimeout: 10s}\nhealth: {maxFailures: 5}",
    );
    let mut r = Run::new();
    drive(&mut w, &mut r, PolicyView::Valid(&pol), 600);
    assert_eq!(r.status.phase, Phase::Completed, "{}", r.status.message);
    assert_eq!(
        (r.status.progress.refreshed, r.status.progress.failed),
        (6, 1)
    );
    assert_eq!(r.status.unhealthy.len(), 1, "bad is still down");
    assert!(w.max_disrupted <= 2, "{} disrupted", w.max_disrupted);
}

#[test]
fn a_window_switched_to_waves_keeps_its_replacements_claimed() {
    let mut w = World::new(&[("web", 3)]);
    w.ready_delay = 1;
    let window = policy("rollout: {batchSize: 1, interval: 0s}");
    let waves = policy("rollout: {pacing: Waves, batchSize: 1, interval: 0s}");
    let mut r = Run::new();
    let mut results = HashMap::new();
    while w.evictions.is_empty() {
        let (_, out) = shell_step(&mut w, &mut r, PolicyView::Valid(&window), &results);
        results = out;
        if results.is_empty() {
            w.advance(Duration::from_secs(1));
        }
    }
    let (_, out) = shell_step(&mut w, &mut r, PolicyView::Valid(&window), &results);
    assert!(out.is_empty());
    w.advance(Duration::from_secs(1));
    // web-1's replacement is Ready: the switch closes the window, and the first wave's
    // eviction comes within the second that replacement was created.
    drive(&mut w, &mut r, PolicyView::Valid(&waves), 200);
    assert_eq!(r.status.phase, Phase::Completed, "{}", r.status.message);
    assert_eq!(r.status.progress.refreshed, 3);
    assert_eq!(w.evictions.len(), 3);
    assert!(w.max_disrupted <= 1, "{} disrupted", w.max_disrupted);
}

#[test]
fn refills_within_one_pass_do_not_spend_a_pdbs_budget_twice() {
    // The shell's facts are fixed for a pass (several steps): a PDB's status there does not
    // show the evictions of the pass's earlier steps.
    let mut w = World::new(&[("web", 8)]);
    w.min_available.insert("web".into(), 7);
    let pol = policy("rollout: {batchSize: 3, interval: 0s}");
    let mut r = Run::new();
    let mut results = HashMap::new();
    let mut requests = 0;
    for _ in 0..300 {
        let allowed = (w.ready_of("web") as i32 - 7).max(0);
        let mut facts = w.facts.clone();
        facts.pdbs = vec![pdb("web", allowed)];
        for _ in 0..8 {
            let obs = observe(&r.spec, PolicyView::Valid(&pol), &facts, &results, None);
            let st = step(&r.status, &obs, w.now);
            r.status = st.status.clone();
            results = HashMap::new();
            for a in st.disruptions() {
                if let Action::Evict { uid, .. } = a {
                    requests += 1;
                    let o = w.evict(uid);
                    results.insert(uid.clone(), o);
                }
            }
            if results.is_empty() {
                break;
            }
        }
        if r.status.phase.is_terminal() {
            break;
        }
        w.advance(Duration::from_secs(1));
    }
    assert_eq!(r.status.phase, Phase::Completed, "{}", r.status.message);
    assert_eq!(w.evictions.len(), 8);
    assert!(
        requests <= 2 * w.evictions.len(),
        "{requests} eviction requests for {} evictions",
        w.evictions.len()
    );
}

#[test]
fn a_window_of_replacements_that_never_come_stays_under_the_status_budget() {
    // Window refills must reserve what the pods already in flight may still grow by: here
    // every replacement is stuck, so every pod fails and is also kept in `unhealthy`.
    let mut w = BigWorld::new(5_000);
    w.stuck = true;
    let pol = policy(
        "{rollout: {batchSize: '100%', interval: 0s, readyTimeout: 20s}, health: {maxFailures: '100%'}}",
    );
    let mut r = Run::new();
    let mut results = HashMap::new();
    let mut largest = 0;
    let mut after_failures = 0;
    for _ in 0..300 {
        if r.status.progress.failed > 0 {
            after_failures += 1;
            if after_failures > 5 {
                break;
            }
        }
        let st = w.step(&r, &pol, &results);
        // What the status may still grow to: every pod in flight at its largest, from its
        // size as planned (the fields that grow cleared).
        let reserved: usize = st
            .status
            .current_batch
            .iter()
            .flat_map(|b| &b.pods)
            .filter(|p| !p.state.is_settled())
            .map(|p| {
                let planned = BatchPod {
                    state: PodState::Planned,
                    requested_at: None,
                    evicted_at: None,
                    retry_at: None,
                    ready_before: None,
                    wanted_before: None,
                    message: String::new(),
                    ..p.clone()
                };
                (2 * worst_bytes(&planned) + p.uid.len() + 3).saturating_sub(json_len(p))
            })
            .sum();
        largest = largest.max(json_len(&st.status) + reserved);
        r.status = st.status;
        results = w.evict(&st.actions);
        if results.is_empty() {
            w.now += TimeDelta::seconds(1);
        }
    }
    println!(
        "stuck window: largest status with its growth reserved {largest} bytes, {} failed",
        r.status.progress.failed
    );
    assert!(r.status.progress.failed > 0, "the timeouts passed");
    assert!(largest <= STATUS_BUDGET, "{largest} bytes");
}

// ---- Invariants under random events and crashes ----

#[derive(Debug, Clone)]
enum Ev {
    /// Let time pass (seconds).
    Tick(u8),
    /// Run one shell step; `crash` decides what is lost.
    Step(Crash),
    Pause(bool),
    /// Break or heal a workload.
    Break(bool),
}

#[derive(Debug, Clone, Copy)]
enum Crash {
    None,
    /// The step's new status was never persisted (nothing acted on).
    BeforePersist,
    /// Persisted, but the process died before acting.
    BeforeActing,
    /// Acted, but the outcomes were lost.
    AfterActing,
    /// Acted, but the API server's answers were lost (timeouts): outcomes unknown.
    LostAnswers,
    /// The API server failed every request of the step (5xx): nothing done.
    ServerErrors,
    /// Evicted, but the answers come back only after the next step (the shell evicts
    /// beside its passes): meanwhile the pods are pending.
    Late,
    /// The step's evictions were not sent after all (the term ended or the run was paused
    /// before their turn came).
    NotSent,
}

fn arb_events() -> impl proptest::strategy::Strategy<Value = Vec<Ev>> {
    let crash = prop_oneof![
        6 => Just(Crash::None),
        1 => Just(Crash::BeforePersist),
        1 => Just(Crash::BeforeActing),
        1 => Just(Crash::AfterActing),
        1 => Just(Crash::LostAnswers),
        1 => Just(Crash::ServerErrors),
        2 => Just(Crash::Late),
        1 => Just(Crash::NotSent),
    ];
    let ev = prop_oneof![
        4 => (1u8..20).prop_map(Ev::Tick),
        8 => crash.prop_map(Ev::Step),
        1 => any::<bool>().prop_map(Ev::Pause),
        1 => any::<bool>().prop_map(Ev::Break),
    ];
    proptest::collection::vec(ev, 1..300)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]
    #[test]
    fn invariants_hold_through_crashes(events in arb_events(), batch in 1u32..4, windowed in any::<bool>(), waves in any::<bool>()) {
        let mut w = World::new(&[("web", 4), ("api", 3), ("bad", 2)]);
        w.ready_delay = 7;
        let window = if windowed { "\nwindows: [{schedule: '*/2 * * * *', duration: 1m}]" } else { "" };
        let pacing = if waves { "Waves" } else { "Window" };
        let pol = policy(&format!("rollout: {{pacing: {pacing}, batchSize: {batch}, interval: 3s, readyTimeout: 40s}}\nhealth: {{maxFailures: 100}}{window}"));
        let mut r = Run::new();
        // What the API server has; `r.status` is the shell's memory, ahead of it by the
        // steps that needed no write (`Step::persist`), flushed every few steps.
        let mut written = ArmorRefreshRunStatus::default();
        let mut lazy = 0;
        let mut results: HashMap<String, Outcome> = HashMap::new();
        // Evictions of a `Late` step: sent, reaching the API server only after the next step.
        let mut late: Vec<String> = vec![];
        for ev in events {
            let pending: HashSet<String> = late.iter().cloned().collect();
            match ev {
                Ev::Tick(s) => { w.advance(Duration::from_secs(s.into())); results.clear(); }
                Ev::Pause(p) => r.spec.paused = p,
                Ev::Break(b) => { if b { w.broken.insert("bad".into()); } else { w.broken.clear(); } }
                Ev::Step(crash) => {
                    let obs = Observations { selection: None, generation: Some(1), spec: &r.spec, policy: PolicyView::Valid(&pol), facts: &w.facts, others: &[], blocked_by: None, results: &results, pending: &pending };
                    let st = step(&r.status, &obs, w.now);
                    // The requests in flight reach the API server now, whatever this process
                    // does next: their answers come with this step's, or are lost with it.
                    let mut answered = HashMap::new();
                    for uid in std::mem::take(&mut late) {
                        let o = w.evict(&uid);
                        answered.insert(uid, o);
                        prop_assert!(w.disrupted() as u32 <= batch, "{} disrupted > batch {} (late)", w.disrupted(), batch);
                    }
                    if matches!(crash, Crash::BeforePersist) {
                        // The process dies: a new one starts from what was written, and
                        // knows of no request in flight.
                        r.status = written.clone();
                        results.clear();
                        continue;
                    }
                    lazy += 1;
                    if st.persist || lazy >= 3 {
                        written = st.status.clone();
                        lazy = 0;
                    }
                    r.status = st.status.clone();
                    if matches!(crash, Crash::BeforeActing) {
                        r.status = written.clone();
                        results.clear();
                        continue;
                    }
                    let mut out = HashMap::new();
                    for a in st.disruptions() {
                        let Action::Evict { uid, .. } = a else { continue };
                        prop_assert!(!r.spec.paused, "evicted while paused");
                        prop_assert!(pol.schedule.is_open(w.now), "evicted outside the window at {}", w.now);
                        prop_assert!(!w.evictions.contains(uid), "{} evicted twice", uid);
                        prop_assert!(!pending.contains(uid), "{} evicted again before its eviction was answered", uid);
                        // Write-ahead: the pod is Evicting in the written status before it is evicted.
                        prop_assert!(written.current_batch.iter().flat_map(|b| &b.pods).any(|p| &p.uid == uid && p.state == PodState::Evicting));
                        let o = match crash {
                            Crash::Late => {
                                late.push(uid.clone());
                                continue;
                            }
                            Crash::ServerErrors => Outcome::Retry("503".into()),
                            Crash::NotSent => Outcome::NotSent,
                            Crash::LostAnswers => match w.evict(uid) {
                                Outcome::Done => Outcome::Unknown("timeout".into()),
                                o => o,
                            },
                            _ => w.evict(uid),
                        };
                        out.insert(uid.clone(), o);
                        // Disrupted = evicted and not Ready again; failed ones included.
                        prop_assert!(w.disrupted() as u32 <= batch, "{} disrupted > batch {}", w.disrupted(), batch);
                    }
                    if matches!(crash, Crash::AfterActing) {
                        r.status = written.clone();
                        results = HashMap::new();
                        late.clear();
                    } else {
                        results = out;
                        results.extend(answered);
                    }
                }
            }
        }
        prop_assert!(w.max_disrupted as u32 <= batch);
        // Counters add up.
        let p = &r.status.progress;
        prop_assert!(p.refreshed + p.failed <= p.total.max(p.refreshed + p.failed));
        prop_assert!(p.refreshed as usize <= w.evictions.len());
        prop_assert!(p.disrupted <= batch, "{} disrupted in status > batch {}: {:?} {:?}", p.disrupted, batch, r.status.current_batch, r.status.unhealthy);
    }
}

// ---- Hostile values and scale: the status stays bounded, nothing panics ----

/// A large cluster for status sizes: `n` pods in Deployments of 50 over 20 namespaces, 500
/// nodes in three zones, names and UIDs as long as real ones. Evicted pods are replaced at
/// once by a Ready pod with its profile.
struct BigWorld {
    now: DateTime<Utc>,
    facts: ClusterFacts,
    next: u64,
    /// Replacements never become Ready (an image that cannot be pulled).
    stuck: bool,
}

impl BigWorld {
    fn new(n: usize) -> BigWorld {
        let mut w = BigWorld {
            now: t0(),
            facts: ClusterFacts::default(),
            next: 0,
            stuck: false,
        };
        for i in 0..500 {
            w.facts.nodes.insert(
                format!(
                    "ip-10-0-{}-{}.eu-central-1.compute.internal",
                    i / 250,
                    i % 250
                ),
                [
                    (
                        "topology.kubernetes.io/zone".to_string(),
                        format!("eu-central-1{}", ["a", "b", "c"][i % 3]),
                    ),
                    (ENFORCER_LABEL.to_string(), "apparmor".to_string()),
                ]
                .into(),
            );
        }
        w.facts.agents = w.facts.nodes.keys().cloned().collect();
        for i in 0..n {
            let pod = w.pod(i / 50, false);
            w.facts.pods.push(Arc::new(pod));
        }
        w
    }

    fn pod(&mut self, deploy: usize, compliant: bool) -> LeanPod {
        self.next += 1;
        let i = self.next;
        let ns = format!("team-{:02}", deploy % 20);
        let app = format!("checkout-service-{deploy}");
        let mut annotations = serde_json::Map::new();
        if compliant {
            annotations.insert(
                "container.apparmor.security.beta.kubernetes.io/app".into(),
                json!(format!("localhost/kubearmor-{ns}-{app}-app")),
            );
        }
        serde_json::from_value(json!({
            "metadata": {
                "name": format!("{app}-7d9f8c6b5-{i:05x}"),
                "namespace": ns,
                "uid": format!("{i:08x}-1d2e-4f5a-8b9c-0123456789ab"),
                "creationTimestamp": self.now.to_rfc3339(),
                "labels": {"app": app, "pod-template-hash": "7d9f8c6b5"},
                "annotations": annotations,
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": format!("{app}-7d9f8c6b5"), "uid": "rs", "controller": true}],
            },
            "spec": {"nodeName": format!("ip-10-0-{}-{}.eu-central-1.compute.internal", (i % 500) / 250, i % 250), "containers": [{"name": "app"}]},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": if compliant && self.stuck { "False" } else { "True" }}]},
        }))
        .unwrap()
    }

    /// One step of `r` under `pol`, selecting over this cluster as the controller does.
    fn step(&self, r: &Run, pol: &ValidPolicy, results: &HashMap<String, Outcome>) -> Step {
        let sel = select::select(pol, &self.facts);
        let obs = observe(
            &r.spec,
            PolicyView::Valid(pol),
            &self.facts,
            results,
            Some(&sel),
        );
        step(&r.status, &obs, self.now)
    }

    /// Evicts the pods of `actions` and replaces each with a compliant pod, Ready unless
    /// `stuck`.
    fn evict(&mut self, actions: &[Action]) -> HashMap<String, Outcome> {
        let uids: BTreeSet<&str> = actions
            .iter()
            .filter_map(|a| match a {
                Action::Evict { uid, .. } => Some(uid.as_str()),
                _ => None,
            })
            .collect();
        let mut deploys = vec![];
        self.facts.pods.retain(|p| {
            let hit = uids.contains(p.metadata.uid.as_deref().unwrap_or(""));
            if hit {
                let app = &p.labels()["app"];
                deploys.push(app.rsplit('-').next().unwrap().parse::<usize>().unwrap());
            }
            !hit
        });
        for d in deploys {
            let pod = self.pod(d, true);
            self.facts.pods.push(Arc::new(pod));
        }
        uids.iter()
            .map(|u| (u.to_string(), Outcome::Done))
            .collect()
    }
}

/// Drives a run of `policy` over `n` pods to its end; returns (largest status in bytes,
/// waves (1 for a window), most pods in flight at once, refreshed).
fn status_bytes_at(n: usize, policy_yaml: &str) -> (usize, usize, usize, u32) {
    let mut w = BigWorld::new(n);
    let pol = policy(policy_yaml);
    let mut r = Run::new();
    let mut results = HashMap::new();
    let (mut largest, mut batches, mut widest) = (0, 0, 0);
    for _ in 0..20_000 {
        let st = w.step(&r, &pol, &results);
        largest = largest.max(json_len(&st.status));
        if st.status.current_batch.as_ref().map(|b| b.index)
            != r.status.current_batch.as_ref().map(|b| b.index)
            && st.status.current_batch.is_some()
        {
            batches += 1;
        }
        widest = widest.max(st.status.current_batch.as_ref().map_or(0, |b| b.pods.len()));
        r.status = st.status;
        if r.status.phase.is_terminal() {
            return (largest, batches, widest, r.status.progress.refreshed);
        }
        results = w.evict(&st.actions);
        if results.is_empty() {
            w.now += TimeDelta::seconds(1);
        }
    }
    panic!("the run of {n} pods did not end: {:?}", r.status.message);
}

#[test]
fn status_stays_bounded_at_ten_thousand_pods() {
    // 5% of 10,000 is 500 pods per batch: within the budget, not capped.
    for pacing in ["Waves", "Window"] {
        let (largest, batches, widest, refreshed) = status_bytes_at(
            10_000,
            &format!("{{rollout: {{pacing: {pacing}, batchSize: '5%', interval: 0s}}}}"),
        );
        println!(
            "10000 pods, {pacing}: largest status {largest} bytes, {batches} waves, widest {widest}"
        );
        assert_eq!(refreshed, 10_000);
        assert!(largest <= STATUS_BUDGET, "{largest}");
        let waves = if pacing == "Waves" { 20 } else { 1 };
        assert_eq!((widest, batches), (500, waves), "{pacing}");
        // 10,000 at once (100%) is capped by the status budget, not by the policy.
        let (largest, batches, widest, refreshed) = status_bytes_at(
            10_000,
            &format!("{{rollout: {{pacing: {pacing}, batchSize: '100%', interval: 0s}}}}"),
        );
        println!(
            "10000 pods at 100%, {pacing}: largest status {largest} bytes, {batches} waves, widest {widest}"
        );
        assert_eq!(refreshed, 10_000);
        assert!(largest <= STATUS_BUDGET, "{largest}");
        assert!(widest < 10_000, "capped: {widest} in {batches}");
    }
}

/// The scale figures of the report: `make fuzz` runs these in release.
#[test]
#[ignore = "minutes in a debug build; `make fuzz` runs it in release"]
fn status_bytes_at_fifty_and_a_hundred_thousand_pods() {
    for n in [10_000, 50_000, 100_000] {
        let start = std::time::Instant::now();
        let (largest, batches, widest, refreshed) =
            status_bytes_at(n, "{rollout: {batchSize: '10%', interval: 0s}}");
        println!(
            "FIGURES status bytes: {n} pods at batchSize 10%: largest status {largest} bytes ({:.0}% of the {} KiB budget), {batches} batches of at most {widest} pods, {refreshed} refreshed, {:.1} s",
            100.0 * largest as f64 / STATUS_BUDGET as f64,
            STATUS_BUDGET / 1024,
            start.elapsed().as_secs_f64()
        );
        assert_eq!(refreshed as usize, n);
        assert!(largest <= STATUS_BUDGET, "{largest}");
    }
}

#[test]
fn a_fully_grown_pod_stays_within_its_growth_bound() {
    let planned = BatchPod {
        namespace: "n".repeat(63),
        name: "p".repeat(253),
        uid: "u".repeat(36),
        node: "x".repeat(253),
        zone: "z".repeat(63),
        owner: format!("StatefulSet/{}", "o".repeat(253)),
        volumes: true,
        ready_before: Some(u32::MAX),
        wanted_before: Some(u32::MAX),
        ..Default::default()
    };
    let t = DateTime::parse_from_rfc3339("2026-03-02T10:00:00.123456789Z")
        .unwrap()
        .with_timezone(&Utc);
    let mut grown = planned.clone();
    grown.state = PodState::Refreshed;
    grown.requested_at = Some(t);
    grown.evicted_at = Some(t);
    grown.retry_at = Some(t);
    grown.replacement = "r".repeat(36);
    grown.attempts = u32::MAX;
    grown.errors = u32::MAX;
    grown.uncertain = true;
    grown.message = clip("\"\\\u{1}é".repeat(200), POD_MESSAGE_MAX);
    assert!(grown.message.len() <= POD_MESSAGE_MAX);
    assert!(
        json_len(&grown) <= worst_bytes(&planned),
        "{} > {}",
        json_len(&grown),
        worst_bytes(&planned)
    );
}

#[test]
fn clip_bounds_messages_and_keeps_short_ones() {
    assert_eq!(clip("evicted".into(), 10), "evicted");
    let c = clip("é".repeat(100), 11);
    assert!(c.len() <= 11 && c.ends_with("..."), "{c}");
    assert_eq!(clip("a\"b\\c\nd".into(), 100), "a'b/c d");
}

#[test]
fn the_longest_durations_run_to_the_end_without_panicking() {
    let mut w = World::new(&[("web", 3)]);
    let pol = policy(
        "{rollout: {batchSize: 1, interval: 8760h, readyTimeout: 8760h}, stateful: {volumeReadyTimeout: 8760h}, windows: [{schedule: '0 0 1 1 *', duration: 8760h}]}",
    );
    let mut r = Run::new();
    drive(&mut w, &mut r, PolicyView::Valid(&pol), 40);
    // One pod was refreshed; its slot rests a year.
    assert_eq!(w.evictions.len(), 1);
    let next = r.status.resting.first().expect("a resting slot").until;
    assert!(next - w.now > TimeDelta::days(364), "{next}");
    // Waves: one wave ran, the next waits a year.
    let waves = policy(
        "{rollout: {pacing: Waves, batchSize: 1, interval: 8760h, readyTimeout: 8760h}, stateful: {volumeReadyTimeout: 8760h}, windows: [{schedule: '0 0 1 1 *', duration: 8760h}]}",
    );
    let mut w = World::new(&[("web", 3)]);
    let mut r = Run::new();
    drive(&mut w, &mut r, PolicyView::Valid(&waves), 40);
    assert_eq!(w.evictions.len(), 1);
    let next = r.status.next_batch_at.expect("next batch");
    assert!(next - w.now > TimeDelta::days(364), "{next}");
    // At the end of time, every instant saturates instead of overflowing.
    let mut r = Run::new();
    let end = DateTime::<Utc>::MAX_UTC - TimeDelta::seconds(30);
    w.now = end;
    let results = HashMap::new();
    let obs = observe(&r.spec, PolicyView::Valid(&pol), &w.facts, &results, None);
    for _ in 0..4 {
        r.status = step(&r.status, &obs, end).status;
    }
}

#[test]
fn a_dry_run_preview_of_a_huge_plan_is_capped() {
    let w = BigWorld::new(5_000);
    let pol = policy("{rollout: {batchSize: '20%'}}");
    let sel = select::select(&pol, &w.facts);
    let s = summary(&pol, &sel, &w.facts, t0(), 0, PLAN_PREVIEW);
    assert_eq!(s.targets, 5_000);
    let names: usize = s.first_batches.iter().map(|b| b.len()).sum();
    assert!(names > 100 && names < 1_000, "{names}");
    assert!(json_len(&s) < PREVIEW_BUDGET + 2_000, "{}", json_len(&s));
}

#[test]
fn failed_pods_that_fill_the_status_stop_new_batches_without_breaking_it() {
    let mut w = World::new(&[("web", 4)]);
    let pol = policy("{rollout: {batchSize: 1000000}, health: {maxFailures: '100%'}}");
    let mut r = Run::new();
    r.status.phase = Phase::Batching;
    r.status.started_at = Some(w.now);
    w.advance(Duration::from_secs(2));
    // A status already at its budget with failed pods (as after many failed batches).
    let filler = BatchPod {
        namespace: "shop".into(),
        name: "x".repeat(200),
        uid: "gone".into(),
        owner: "Deployment/broken".into(),
        state: PodState::Failed,
        message: "m".repeat(POD_MESSAGE_MAX),
        ..Default::default()
    };
    let count = STATUS_BUDGET / json_len(&filler) + 1;
    r.status.unhealthy = vec![filler.clone(); count];
    w.broken.insert("broken".into());
    w.add_pod("broken", false, false);
    let steps = drive(&mut w, &mut r, PolicyView::Valid(&pol), 5);
    assert!(
        w.evictions.is_empty(),
        "nothing evicted past the status budget"
    );
    assert!(
        steps.last().unwrap().status.message.contains("size limit"),
        "{}",
        steps.last().unwrap().status.message
    );
}
