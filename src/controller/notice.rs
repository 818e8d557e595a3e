//! Events on the objects users look at: each pod a run evicted, and the workload it belongs
//! to, so `kubectl describe pod` and `kubectl describe deploy` say why pods were recreated
//! (descheduler and Karpenter record an event on each pod they disrupt).
//!
//! Best effort and rate-limited: they go through a bounded queue to a task of their own
//! (at most 10 a second, within the operator's write limit, only while it leads), so the
//! reconcile loop never waits for them, and the run's status keeps the facts. A workload
//! gets at most one event a minute; the recorder folds repeats into its event's series.

use std::collections::{BTreeSet, HashMap};
use std::num::NonZeroU32;
use std::time::Duration;

use std::sync::Arc;

use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder};
use tokio::sync::{mpsc, watch};

use crate::metrics::{METRICS, ResultLabel};
use crate::run::{Action, Outcome};

/// Object events published per second at most (the kube-scheduler writes one per pod it
/// binds; this is the same order of cost).
const PER_SECOND: u32 = 10;
/// Object events waiting to be published at most; beyond, they are dropped and counted.
const QUEUE: usize = 1024;
/// One event per workload per this period at most.
const WORKLOAD_PERIOD: Duration = Duration::from_secs(60);

/// An event and the object it is about.
pub struct Notice {
    pub regarding: ObjectReference,
    pub event: Event,
}

/// The apiVersion of a workload kind the operator evicts pods of, and reads the uid of
/// (`kubectl describe` finds events by the object's uid).
fn api_version(kind: &str) -> Option<&'static str> {
    match kind {
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" => Some("apps/v1"),
        _ => None,
    }
}

/// The recorder names an event `{object name}.{16 hex digits}`, and the API server refuses
/// names over 253 characters: an object with a longer name gets no event.
const MAX_NAME: usize = 253 - 17;

/// An event about an object, related to the run that caused it (the run is part of the
/// recorder's series key: a second run's events on a workload are not counted as the
/// first's).
fn normal(reason: &str, note: String, run: &ObjectReference) -> Event {
    Event {
        type_: EventType::Normal,
        reason: reason.into(),
        note: Some(note),
        action: "Evict".into(),
        secondary: Some(run.clone()),
    }
}

/// The events of what a step's actions did: one on each pod the Eviction API accepted,
/// one on each workload that had pods evicted or was restarted. `uid_of(kind, namespace,
/// name)` is the workload's uid if known; a workload without one gets no event.
pub fn notices(
    run_ref: &ObjectReference,
    policy: &str,
    actions: &[Action],
    outcomes: &HashMap<String, Outcome>,
    uid_of: impl Fn(&str, &str, &str) -> Option<String>,
) -> Vec<Notice> {
    let run = run_ref.name.as_deref().unwrap_or_default();
    let mut out = vec![];
    let mut workloads = BTreeSet::new();
    let workload = |kind: &str, namespace: &str, name: &str| {
        if name.len() > MAX_NAME {
            return None;
        }
        Some(ObjectReference {
            api_version: Some(api_version(kind)?.into()),
            kind: Some(kind.into()),
            namespace: Some(namespace.into()),
            name: Some(name.into()),
            uid: Some(uid_of(kind, namespace, name)?),
            ..Default::default()
        })
    };
    for a in actions {
        match a {
            Action::Evict {
                namespace,
                name,
                uid,
                owner,
            } if outcomes.get(uid) == Some(&Outcome::Done) => {
                workloads.insert((namespace.as_str(), owner.as_str()));
                if name.len() > MAX_NAME {
                    continue;
                }
                out.push(Notice {
                    regarding: ObjectReference {
                        api_version: Some("v1".into()),
                        kind: Some("Pod".into()),
                        namespace: Some(namespace.clone()),
                        name: Some(name.clone()),
                        uid: Some(uid.clone()),
                        ..Default::default()
                    },
                    event: normal(
                        "Evicted",
                        format!(
                            "Evicted by armor-refresh run {run} (policy {policy}) so that its \
                             replacement starts with its AppArmor profile"
                        ),
                        run_ref,
                    ),
                });
            }
            Action::Restart {
                namespace,
                kind,
                name,
                ..
            } if outcomes.get(&format!("{namespace}/{kind}/{name}")) == Some(&Outcome::Done) => {
                if let Some(regarding) = workload(kind, namespace, name) {
                    let note = format!(
                        "Restarted by armor-refresh run {run} (policy {policy}) so that its \
                         pods start with their AppArmor profiles"
                    );
                    out.push(Notice {
                        regarding,
                        event: Event {
                            action: "Restart".into(),
                            ..normal("Restarted", note, run_ref)
                        },
                    });
                }
            }
            _ => {}
        }
    }
    for (namespace, owner) in workloads {
        let Some((kind, name)) = owner.split_once('/') else {
            continue;
        };
        if let Some(regarding) = workload(kind, namespace, name) {
            // No count or pod names: the recorder keeps the first note of a series.
            let note = format!(
                "armor-refresh run {run} (policy {policy}) is evicting pods of this {kind} so \
                 that their replacements start with their AppArmor profiles; each pod has an \
                 event"
            );
            out.push(Notice {
                regarding,
                event: normal("EvictingPods", note, run_ref),
            });
        }
    }
    out
}

/// At most one event per workload per [`WORKLOAD_PERIOD`]; pods pass (each is evicted once).
pub struct Throttle {
    workloads: DefaultKeyedRateLimiter<String>,
}

impl Default for Throttle {
    fn default() -> Self {
        let quota = Quota::with_period(WORKLOAD_PERIOD)
            .expect("non-zero period")
            .allow_burst(NonZeroU32::MIN);
        Throttle {
            workloads: RateLimiter::keyed(quota),
        }
    }
}

impl Throttle {
    pub fn admit(&self, n: &Notice) -> bool {
        if n.regarding.kind.as_deref() == Some("Pod") {
            return true;
        }
        if self.workloads.len() > 4096 {
            self.workloads.retain_recent();
        }
        let key = n.regarding.uid.clone().unwrap_or_default();
        self.workloads.check_key(&key).is_ok()
    }
}

/// Publishes notices from a task of its own, at [`PER_SECOND`] at most.
pub struct Notifier {
    tx: mpsc::Sender<Notice>,
    throttle: Throttle,
}

fn count(result: &str) {
    METRICS
        .object_events
        .get_or_create(&ResultLabel {
            result: result.into(),
        })
        .inc();
}

impl Notifier {
    /// Publishes through `writes`, the operator's own write limit, and only while `leader`.
    pub fn start(
        recorder: Recorder,
        writes: Arc<DefaultDirectRateLimiter>,
        leader: watch::Receiver<bool>,
    ) -> Notifier {
        let (tx, mut rx) = mpsc::channel::<Notice>(QUEUE);
        let rate = RateLimiter::direct(Quota::per_second(
            NonZeroU32::new(PER_SECOND).expect("non-zero"),
        ));
        tokio::spawn(async move {
            while let Some(n) = rx.recv().await {
                rate.until_ready().await;
                writes.until_ready().await;
                if !*leader.borrow() {
                    // A former leader's queue: the next leader speaks for the cluster.
                    count("dropped");
                    continue;
                }
                METRICS.write("event");
                match recorder.publish(&n.event, &n.regarding).await {
                    Ok(()) => count("published"),
                    Err(e) => {
                        // A pod deleted in the meantime still takes events; anything else
                        // is logged: status has the facts.
                        tracing::debug!(error = %e, "publishing an event on an object failed");
                        count("failed");
                    }
                }
            }
        });
        Notifier {
            tx,
            throttle: Throttle::default(),
        }
    }

    /// Queues what may be published; what the throttle or a full queue refuses is counted.
    pub fn send(&self, notices: Vec<Notice>) {
        for n in notices {
            if !self.throttle.admit(&n) {
                count("throttled");
            } else if self.tx.try_send(n).is_err() {
                count("dropped");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn evict(ns: &str, name: &str, uid: &str, owner: &str) -> Action {
        Action::Evict {
            namespace: ns.into(),
            name: name.into(),
            uid: uid.into(),
            owner: owner.into(),
        }
    }

    fn run_ref(name: &str) -> ObjectReference {
        ObjectReference {
            kind: Some("ArmorRefreshRun".into()),
            name: Some(name.into()),
            uid: Some(format!("uid-{name}")),
            ..Default::default()
        }
    }

    fn uid_of(kind: &str, ns: &str, name: &str) -> Option<String> {
        (name != "unknown").then(|| format!("uid-{kind}-{ns}-{name}"))
    }

    #[test]
    fn only_accepted_evictions_and_applied_restarts_get_events() {
        let actions = vec![
            evict("a", "web-1", "u1", "Deployment/web"),
            evict("a", "web-2", "u2", "Deployment/web"),
            evict("a", "db-0", "u3", "StatefulSet/db"),
            evict("b", "bare", "u4", "Pod/bare"),
            evict("a", "x-1", "u5", "Deployment/unknown"),
            Action::Restart {
                namespace: "a".into(),
                kind: "DaemonSet".into(),
                name: "agent".into(),
                token: "t".into(),
            },
            Action::Restart {
                namespace: "a".into(),
                kind: "Deployment".into(),
                name: "api".into(),
                token: "t".into(),
            },
            Action::Event {
                warning: false,
                reason: "BatchStarted".into(),
                note: "n".into(),
            },
        ];
        let outcomes: HashMap<String, Outcome> = [
            ("u1", Outcome::Done),
            ("u2", Outcome::Done),
            ("u3", Outcome::Refused("pdb".into())),
            ("u4", Outcome::Done),
            ("u5", Outcome::Done),
            ("a/DaemonSet/agent", Outcome::Done),
            ("a/Deployment/api", Outcome::Retry("409".into())),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let got = notices(&run_ref("r1"), "p1", &actions, &outcomes, uid_of);
        let seen: Vec<(String, String, String, String)> = got
            .iter()
            .map(|n| {
                (
                    n.regarding.kind.clone().unwrap(),
                    n.regarding.name.clone().unwrap(),
                    n.regarding.uid.clone().unwrap(),
                    n.event.reason.clone(),
                )
            })
            .collect();
        let s = |a: &str, b: &str, c: &str, d: &str| (a.into(), b.into(), c.into(), d.into());
        assert_eq!(
            seen,
            vec![
                s("Pod", "web-1", "u1", "Evicted"),
                s("Pod", "web-2", "u2", "Evicted"),
                s("Pod", "bare", "u4", "Evicted"),
                s("Pod", "x-1", "u5", "Evicted"),
                s("DaemonSet", "agent", "uid-DaemonSet-a-agent", "Restarted"),
                // One per workload however many of its pods, none for a bare pod or a
                // workload whose uid is unknown.
                s("Deployment", "web", "uid-Deployment-a-web", "EvictingPods"),
            ]
        );
        let pod = &got[0];
        assert_eq!(pod.regarding.namespace.as_deref(), Some("a"));
        assert_eq!(pod.regarding.api_version.as_deref(), Some("v1"));
        let note = pod.event.note.as_deref().unwrap();
        assert!(
            note.contains("run r1") && note.contains("policy p1"),
            "{note}"
        );
        assert_eq!(got[5].regarding.api_version.as_deref(), Some("apps/v1"));
        // Every event names the run as its related object (and the recorder's series key).
        assert!(
            got.iter()
                .all(|n| n.event.secondary.as_ref().and_then(|r| r.name.as_deref()) == Some("r1"))
        );
        // Notes stay far below the API server's 1 kB.
        assert!(
            got.iter()
                .all(|n| n.event.note.as_ref().unwrap().len() < 400)
        );
    }

    #[test]
    fn an_object_whose_event_name_would_be_refused_gets_none() {
        let long = "p".repeat(240);
        let outcomes: HashMap<String, Outcome> = [("u1".to_string(), Outcome::Done)].into();
        let got = notices(
            &run_ref("r"),
            "p",
            &[evict("a", &long, "u1", "Deployment/web")],
            &outcomes,
            uid_of,
        );
        let kinds: Vec<_> = got
            .iter()
            .map(|n| n.regarding.kind.clone().unwrap())
            .collect();
        assert_eq!(kinds, ["Deployment"], "the workload still gets its event");
    }

    #[test]
    fn a_workload_gets_one_event_a_period_and_pods_are_not_throttled() {
        let t = Throttle::default();
        let outcomes: HashMap<String, Outcome> = [("u1".to_string(), Outcome::Done)].into();
        let ns = notices(
            &run_ref("r"),
            "p",
            &[evict("a", "web-1", "u1", "Deployment/web")],
            &outcomes,
            uid_of,
        );
        let (pod, deploy) = (&ns[0], &ns[1]);
        assert!(t.admit(deploy));
        assert!(!t.admit(deploy), "a second event within the period");
        for _ in 0..100 {
            assert!(t.admit(pod));
        }
        let other = Notice {
            regarding: ObjectReference {
                uid: Some("another".into()),
                ..deploy.regarding.clone()
            },
            event: normal("EvictingPods", String::new(), &run_ref("r")),
        };
        assert!(t.admit(&other), "workloads are throttled one by one");
    }
}
