//! Evictions beside the passes. A step's evictions are written ahead (its pods Evicting in
//! the run's status), then sent here and the pass goes on: a pass that waited for its
//! evictions (1.7 s each on a control plane busy with 20,000 pods) left every slot freed
//! meanwhile idle until it ended. Each answer comes back through a channel as soon as it
//! is there, wakes the loop, and is read by the run's next step; until then its pod is
//! `pending` for the step (`Observations::pending`), so nothing guesses its outcome or asks
//! again.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use governor::DefaultDirectRateLimiter;
use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use kube::Client;
use kube::api::{Api, DeleteParams, EvictParams, Preconditions};
use tokio::sync::{Mutex, Notify, Semaphore, mpsc, watch};

use crate::metrics::METRICS;
use crate::run::Action;

/// Workloads evicted from at once (each workload's pods one after another). An eviction
/// waits on its budget's status update and the pod's deletion: 1.7 s on average on a
/// control plane busy with 20,000 pods, where 16 at a time capped a window at 6 pods a second.
pub const CONCURRENCY: usize = 64;

/// The answer to one eviction.
pub struct Answered {
    /// The leadership term it was sent in: the outcome of an older term's eviction is
    /// dropped (the new term read every run afresh); its pod stops being pending.
    pub term: u64,
    pub run_uid: String,
    pub run_ref: Arc<ObjectReference>,
    pub policy: Arc<str>,
    /// The eviction, as the step asked for it (for the pod's and workload's events).
    pub action: Action,
    /// The API server's answer, or `None` when it was not sent: the term the Lease vouched
    /// for ended first, or the run was paused, finished or deleted.
    pub result: Option<Result<(), kube::Error>>,
}

/// What the eviction tasks share with the operator.
pub struct Evictor {
    client: Client,
    limiter: Arc<DefaultDirectRateLimiter>,
    timeout: Duration,
    /// The current leadership term: a task sent in another one sends nothing more.
    term: Arc<AtomicU64>,
    /// Until when the last read of the Lease vouches for this term (`None` before the first
    /// read); checked before each request when leader election is on.
    fence: watch::Sender<Option<Instant>>,
    fenced: bool,
    /// Runs whose evictions may still be sent (present, not paused, not finished).
    acting: Arc<RwLock<HashSet<String>>>,
    slots: Arc<Semaphore>,
    /// One lock per workload, so its pods go one after another across steps too: evictions
    /// under one budget conflict on its status.
    turns: HashMap<(String, String), Arc<Mutex<()>>>,
    tx: mpsc::UnboundedSender<Answered>,
    rx: mpsc::UnboundedReceiver<Answered>,
    wake: Arc<Notify>,
    /// Run UID → pods (UIDs) whose eviction was sent and not answered yet, whatever term
    /// sent it: a new term must not evict them again before the answer.
    in_flight: HashMap<String, HashSet<String>>,
}

/// Whose evictions a step sends.
pub struct Sender<'a> {
    pub run_uid: &'a str,
    pub run_ref: ObjectReference,
    pub policy: &'a str,
    /// The extra pause after the API server's own 429 (see `note_overload`).
    pub overload: Duration,
}

impl Evictor {
    pub fn new(
        client: Client,
        limiter: Arc<DefaultDirectRateLimiter>,
        timeout: Duration,
        fenced: bool,
        wake: Arc<Notify>,
    ) -> Evictor {
        let (tx, rx) = mpsc::unbounded_channel();
        Evictor {
            client,
            limiter,
            timeout,
            term: Arc::new(AtomicU64::new(0)),
            fence: watch::Sender::new(None),
            fenced,
            acting: Arc::default(),
            slots: Arc::new(Semaphore::new(CONCURRENCY)),
            turns: HashMap::new(),
            tx,
            rx,
            wake,
            in_flight: HashMap::new(),
        }
    }

    pub fn term(&self) -> u64 {
        self.term.load(Ordering::SeqCst)
    }

    /// Until when the last read of the Lease vouches for this term.
    pub fn fenced_until(&self) -> Option<Instant> {
        *self.fence.borrow()
    }

    pub fn vouch_until(&self, until: Instant) {
        self.fence.send_replace(Some(until));
    }

    /// The Lease must be read again before anything more is sent.
    pub fn expire(&self) {
        self.fence.send_replace(Some(Instant::now()));
    }

    /// A new term (or the end of the last one): the tasks of the old one send nothing more.
    /// What they had in flight stays pending until answered.
    pub fn new_term(&mut self) {
        self.term.fetch_add(1, Ordering::SeqCst);
        self.expire();
    }

    /// The runs whose evictions may still be sent; the others' queued evictions are not.
    pub fn acting(&self, runs: HashSet<String>) {
        *self.acting.write().unwrap_or_else(|e| e.into_inner()) = runs;
    }

    /// Pods of this run whose eviction was sent and not answered yet.
    pub fn pending(&self, run_uid: &str) -> HashSet<String> {
        self.in_flight.get(run_uid).cloned().unwrap_or_default()
    }

    /// Answers that came back since the last call. An answer sent in an earlier term is
    /// still a fact about its pod, but the run was read afresh since: the caller takes it
    /// as uncertain.
    pub fn answered(&mut self) -> Vec<Answered> {
        let mut out = vec![];
        while let Ok(a) = self.rx.try_recv() {
            if let (Some(keys), Action::Evict { uid, .. }) =
                (self.in_flight.get_mut(&a.run_uid), &a.action)
            {
                keys.remove(uid);
                if keys.is_empty() {
                    self.in_flight.remove(&a.run_uid);
                }
            }
            out.push(a);
        }
        out
    }

    /// Waits (at most `limit`) for the requests being sent to be answered: at shutdown,
    /// before the Lease is released, so the next leader does not send them again.
    pub async fn drain(&self, limit: Duration) {
        let all = u32::try_from(CONCURRENCY).unwrap_or(u32::MAX);
        let _ = tokio::time::timeout(limit, self.slots.acquire_many(all)).await;
    }

    /// Sends the step's evictions, one task per workload; returns how many.
    pub fn send(&mut self, who: Sender, actions: &[Action]) -> usize {
        let mut groups: BTreeMap<(String, String), VecDeque<Action>> = BTreeMap::new();
        for a in actions {
            if let Action::Evict {
                namespace, owner, ..
            } = a
            {
                groups
                    .entry((namespace.clone(), owner.clone()))
                    .or_default()
                    .push_back(a.clone());
            }
        }
        if groups.is_empty() {
            return 0;
        }
        self.acting
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(who.run_uid.to_string());
        // Locks no task holds or waits for.
        self.turns.retain(|_, t| Arc::strong_count(t) > 1);
        let (run_ref, policy): (Arc<ObjectReference>, Arc<str>) =
            (Arc::new(who.run_ref), who.policy.into());
        let term = self.term();
        let mut sent = 0;
        for (key, mut group) in groups {
            let keys = self.in_flight.entry(who.run_uid.to_string()).or_default();
            // A pod still in flight (sent in an earlier term, say) is not sent again: the
            // answer to that request is its answer.
            group.retain(|a| matches!(a, Action::Evict { uid, .. } if keys.insert(uid.clone())));
            if group.is_empty() {
                continue;
            }
            sent += group.len();
            let task = Task {
                client: self.client.clone(),
                limiter: self.limiter.clone(),
                overload: who.overload,
                timeout: self.timeout,
                term: self.term.clone(),
                fence: self.fenced.then(|| self.fence.subscribe()),
                acting: self.acting.clone(),
                slots: self.slots.clone(),
                turn: self.turns.entry(key).or_default().clone(),
                unanswered: Unanswered {
                    left: group,
                    current: None,
                    term,
                    run_uid: who.run_uid.to_string(),
                    run_ref: run_ref.clone(),
                    policy: policy.clone(),
                    tx: self.tx.clone(),
                    wake: self.wake.clone(),
                },
            };
            tokio::spawn(task.run());
        }
        sent
    }
}

/// A workload's evictions not answered yet. Each is answered as it is done; whatever is
/// left when this is dropped (the task ended early, or panicked) is answered "not sent", so
/// no pod stays pending for ever.
struct Unanswered {
    left: VecDeque<Action>,
    /// The eviction being sent: if the task ends before its answer, it may have happened.
    current: Option<Action>,
    term: u64,
    run_uid: String,
    run_ref: Arc<ObjectReference>,
    policy: Arc<str>,
    tx: mpsc::UnboundedSender<Answered>,
    wake: Arc<Notify>,
}

impl Unanswered {
    fn answer(&mut self, action: Action, result: Option<Result<(), kube::Error>>) {
        // The receiver is gone only when the operator is.
        let _ = self.tx.send(Answered {
            term: self.term,
            run_uid: self.run_uid.clone(),
            run_ref: self.run_ref.clone(),
            policy: self.policy.clone(),
            action,
            result,
        });
        self.wake.notify_one();
    }
}

impl Drop for Unanswered {
    fn drop(&mut self) {
        if let Some(a) = self.current.take() {
            let lost = kube::Error::Service("the eviction task ended before its answer".into());
            self.answer(a, Some(Err(lost)));
        }
        while let Some(a) = self.left.pop_front() {
            self.answer(a, None);
        }
    }
}

/// Logged and counted when the answer comes, not when a pass reads it: a log of evictions
/// is a log of when they happened.
/// `queued`: from the step's send until this request's turn (its workload's earlier
/// evictions go first); `took`: the request, with the write limiter's wait.
fn log_answer(
    namespace: &str,
    name: &str,
    r: &Result<(), kube::Error>,
    queued: Duration,
    took: Duration,
) {
    let label = super::eviction_label(&super::classify_eviction(r));
    tracing::info!(
        pod = %format!("{namespace}/{name}"),
        result = label,
        queued_ms = queued.as_millis() as u64,
        took_ms = took.as_millis() as u64,
        "eviction"
    );
    METRICS
        .evictions
        .get_or_create(&crate::metrics::ResultLabel {
            result: label.into(),
        })
        .inc();
}

struct Task {
    client: Client,
    limiter: Arc<DefaultDirectRateLimiter>,
    overload: Duration,
    timeout: Duration,
    term: Arc<AtomicU64>,
    fence: Option<watch::Receiver<Option<Instant>>>,
    acting: Arc<RwLock<HashSet<String>>>,
    slots: Arc<Semaphore>,
    turn: Arc<Mutex<()>>,
    unanswered: Unanswered,
}

impl Task {
    /// Still allowed to act: the term it was sent in goes on, the Lease vouches for it, and
    /// its run is neither paused, finished nor deleted.
    fn may_act(&self) -> bool {
        let u = &self.unanswered;
        let vouched = self
            .fence
            .as_ref()
            .is_none_or(|f| f.borrow().is_some_and(|t| Instant::now() < t));
        let acting = self
            .acting
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&u.run_uid);
        self.term.load(Ordering::SeqCst) == u.term && vouched && acting
    }

    async fn run(mut self) {
        let sent = Instant::now();
        // The workload's turn first: a task waiting for it holds no slot.
        let _turn = self.turn.clone().lock_owned().await;
        let _slot = self.slots.clone().acquire_owned().await;
        while let Some(a) = self.unanswered.left.pop_front() {
            self.unanswered.current = Some(a.clone());
            let asked = Instant::now();
            let result = match &a {
                Action::Evict {
                    namespace,
                    name,
                    uid,
                    ..
                } => self.evict(namespace, name, uid).await,
                _ => None,
            };
            self.unanswered.current = None;
            if let (
                Some(r),
                Action::Evict {
                    namespace, name, ..
                },
            ) = (&result, &a)
            {
                log_answer(namespace, name, r, asked - sent, asked.elapsed());
            }
            self.unanswered.answer(a, result);
        }
    }

    /// `None` when it may no longer act, checked after the waits for the write limiter and
    /// an overloaded API server (up to 30 s), right before the request.
    async fn evict(
        &self,
        namespace: &str,
        name: &str,
        uid: &str,
    ) -> Option<Result<(), kube::Error>> {
        if !self.may_act() {
            return None;
        }
        self.limiter.until_ready().await;
        if !self.overload.is_zero() {
            tokio::time::sleep(self.overload).await;
        }
        if !self.may_act() {
            return None;
        }
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let ep = EvictParams {
            delete_options: Some(DeleteParams {
                preconditions: Some(Preconditions {
                    uid: Some(uid.to_string()),
                    resource_version: None,
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        METRICS.write("evict");
        Some(
            match tokio::time::timeout(self.timeout, api.evict(name, &ep)).await {
                Ok(r) => r.map(|_| ()),
                // Dropped unanswered: classified as unknown, like any lost answer.
                Err(_) => Err(kube::Error::Service(
                    format!("no answer within {}s", self.timeout.as_secs()).into(),
                )),
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::{Quota, RateLimiter};

    fn evict(uid: &str) -> Action {
        Action::Evict {
            namespace: "ns".into(),
            name: format!("pod-{uid}"),
            uid: uid.into(),
            owner: "Deployment/web".into(),
        }
    }

    /// An evictor whose API server refuses connections (a closed port on loopback): every
    /// request sent is answered with an error at once.
    fn evictor() -> Evictor {
        let url = "http://127.0.0.1:1".parse().expect("a URL");
        let client = Client::try_from(kube::Config::new(url)).expect("a client");
        let quota = Quota::per_second(std::num::NonZeroU32::new(100).expect("not zero"));
        Evictor::new(
            client,
            Arc::new(RateLimiter::direct(quota)),
            Duration::from_secs(2),
            false,
            Arc::new(Notify::new()),
        )
    }

    fn sender(run_uid: &str) -> Sender<'_> {
        Sender {
            run_uid,
            run_ref: ObjectReference::default(),
            policy: "pol",
            overload: Duration::ZERO,
        }
    }

    async fn answers(e: &mut Evictor, n: usize) -> Vec<Answered> {
        let mut out = vec![];
        for _ in 0..200 {
            out.extend(e.answered());
            if out.len() >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        out
    }

    #[tokio::test]
    async fn a_pod_in_flight_is_not_sent_again_even_in_a_new_term() {
        let mut e = evictor();
        assert_eq!(e.send(sender("run"), &[evict("a"), evict("b")]), 2);
        assert_eq!(e.pending("run"), ["a".to_string(), "b".to_string()].into());
        // Leadership lost and regained before the answers: the new term plans "a" again.
        e.new_term();
        assert_eq!(e.send(sender("run"), &[evict("a")]), 0, "sent twice");
        let got = answers(&mut e, 2).await;
        assert_eq!(got.len(), 2);
        assert!(e.pending("run").is_empty());
        // Sent in the first term (the caller takes such answers as uncertain).
        assert!(got.iter().all(|a| a.term == 0 && e.term() == 1));
    }

    #[tokio::test]
    async fn a_paused_runs_queued_evictions_are_not_sent() {
        let mut e = evictor();
        // The run is no longer acting (paused) before its task gets to the request.
        e.acting(HashSet::new());
        let turn = e
            .turns
            .entry(("ns".into(), "Deployment/web".into()))
            .or_default()
            .clone();
        let held = turn.lock().await;
        e.send(sender("run"), &[evict("a")]);
        e.acting(HashSet::new());
        drop(held);
        let got = answers(&mut e, 1).await;
        assert_eq!(got.len(), 1);
        assert!(got[0].result.is_none(), "sent for a paused run");
        assert!(e.pending("run").is_empty());
    }
}
