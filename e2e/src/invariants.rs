//! An independent witness: watches pods (not the operator's status) and records every
//! deletion and readiness change, so tests can assert the run's invariants over a run.
//!
//! Disruption is counted per workload as Kubernetes sees it: a Ready pod that is deleted
//! opens a gap; the next pod of that workload that becomes Ready closes the oldest gap. The
//! number of open gaps at any instant is the number of pods disrupted then; a gap keeps the
//! zone of the pod that was taken down.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, ResourceExt};

use crate::is_ready;
use armor_refresh::compliance::owner_of;

/// One pod deletion as witnessed.
#[derive(Debug, Clone)]
pub struct Deletion {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub workload: String,
    pub zone: String,
    pub at: Instant,
    /// Whether the pod carried an AppArmor annotation when it was deleted.
    pub had_profile: bool,
}

#[derive(Debug, Default)]
struct State {
    pods: HashMap<String, (String, bool, bool)>, // uid -> (workload, ready, deleting)
    gaps: HashMap<String, VecDeque<String>>,     // workload -> zones of open gaps
    deletions: Vec<Deletion>,
    max_total: usize,
    max_zone: BTreeMap<String, usize>,
    max_workload: BTreeMap<String, usize>,
}

impl State {
    fn open(&self) -> usize {
        self.gaps.values().map(VecDeque::len).sum()
    }
    fn zone_counts(&self) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for q in self.gaps.values() {
            for z in q {
                *m.entry(z.clone()).or_default() += 1;
            }
        }
        m
    }
    fn track_max(&mut self) {
        self.max_total = self.max_total.max(self.open());
        for (z, c) in self.zone_counts() {
            let e = self.max_zone.entry(z).or_default();
            *e = (*e).max(c);
        }
        for (w, q) in &self.gaps {
            let e = self.max_workload.entry(w.clone()).or_default();
            *e = (*e).max(q.len());
        }
    }
}

/// The witness; cheap to clone.
#[derive(Clone)]
pub struct Witness {
    state: Arc<Mutex<State>>,
    task: Arc<tokio::task::JoinHandle<()>>,
    /// KubeArmor's agent and kubelet, so that a pod given a profile its node never loads is
    /// seen stuck, as on a real node.
    standin: Arc<crate::standin::Standin>,
    namespaces: BTreeSet<String>,
}

fn has_profile(p: &Pod) -> bool {
    p.annotations()
        .keys()
        .any(|k| k.starts_with(armor_refresh::compliance::ANNOTATION_PREFIX))
}

impl Witness {
    /// Starts watching the pods of `namespaces`; returns once the initial list is in.
    pub async fn start(client: &Client, namespaces: &[&str]) -> crate::Result<Witness> {
        let nodes: Api<Node> = Api::all(client.clone());
        let zones: HashMap<String, String> = nodes
            .list(&Default::default())
            .await?
            .items
            .into_iter()
            .map(|n| {
                (
                    n.name_any(),
                    n.labels()
                        .get("topology.kubernetes.io/zone")
                        .cloned()
                        .unwrap_or_default(),
                )
            })
            .collect();
        let state = Arc::new(Mutex::new(State::default()));
        let namespaces: BTreeSet<String> = namespaces.iter().map(|s| s.to_string()).collect();
        let standin = Arc::new(crate::standin::Standin::start(client, false).await?);
        let watched = namespaces.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let st = state.clone();
        let pods: Api<Pod> = Api::all(client.clone());
        let task = tokio::spawn(async move {
            let mut tx = Some(tx);
            let mut stream = std::pin::pin!(watcher::watcher(pods, watcher::Config::default()));
            while let Some(ev) = stream.next().await {
                let Ok(ev) = ev else { continue };
                let mut s = st.lock().unwrap_or_else(|e| e.into_inner());
                let on_pod = |s: &mut State, p: &Pod, deleted: bool| {
                    if !p.namespace().is_some_and(|n| namespaces.contains(&n)) {
                        return;
                    }
                    let uid = p.uid().unwrap_or_default();
                    let workload = format!(
                        "{}/{}",
                        p.namespace().unwrap_or_default(),
                        owner_of(&armor_refresh::pod::LeanPod::from(p), None)
                    );
                    let zone = p
                        .spec
                        .as_ref()
                        .and_then(|s| s.node_name.as_ref())
                        .and_then(|n| zones.get(n))
                        .cloned()
                        .unwrap_or_default();
                    let is_ready =
                        is_ready(p) && !deleted && p.metadata.deletion_timestamp.is_none();
                    let deleting = deleted || p.metadata.deletion_timestamp.is_some();
                    let prev = s.pods.get(&uid).cloned();
                    let (was_ready, was_deleting) =
                        prev.as_ref().map_or((false, false), |(_, r, d)| (*r, *d));
                    if deleting && !was_deleting {
                        s.deletions.push(Deletion {
                            namespace: p.namespace().unwrap_or_default(),
                            name: p.name_any(),
                            uid: uid.clone(),
                            workload: workload.clone(),
                            zone: zone.clone(),
                            at: Instant::now(),
                            had_profile: has_profile(p),
                        });
                        if was_ready {
                            s.gaps
                                .entry(workload.clone())
                                .or_default()
                                .push_back(zone.clone());
                        }
                    } else if is_ready
                        && !was_ready
                        && let Some(q) = s.gaps.get_mut(&workload)
                    {
                        q.pop_front();
                    }
                    s.pods.insert(uid, (workload, is_ready, deleting));
                    s.track_max();
                };
                match ev {
                    Event::Apply(p) | Event::InitApply(p) => on_pod(&mut s, &p, false),
                    Event::Delete(p) => on_pod(&mut s, &p, true),
                    Event::Init => {}
                    Event::InitDone => {
                        if let Some(t) = tx.take() {
                            let _ = t.send(());
                        }
                    }
                }
            }
        });
        tokio::time::timeout(std::time::Duration::from_secs(30), rx)
            .await
            .map_err(|_| "the witness did not sync within 30s")??;
        Ok(Witness {
            state,
            task: Arc::new(task),
            standin,
            namespaces: watched,
        })
    }

    pub fn deletions(&self) -> Vec<Deletion> {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .deletions
            .clone()
    }
    /// The most pods disrupted at once.
    pub fn max_disrupted(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .max_total
    }
    pub fn max_per_zone(&self) -> BTreeMap<String, usize> {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .max_zone
            .clone()
    }
    pub fn max_per_workload(&self) -> BTreeMap<String, usize> {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .max_workload
            .clone()
    }
    pub fn disrupted_now(&self) -> usize {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).open()
    }
}

impl Drop for Witness {
    fn drop(&mut self) {
        if Arc::strong_count(&self.task) == 1 {
            self.task.abort();
        }
    }
}

/// What a trial promised, checked against what the witness saw.
#[derive(Debug, Clone, Default)]
pub struct Expect {
    /// Pods disrupted at once, at most (the batch size).
    pub batch: usize,
    /// Per zone, at most.
    pub per_zone: Option<usize>,
    /// Per workload, at most (a PDB's maxUnavailable on every workload).
    pub per_workload: Option<usize>,
    /// UIDs that must all be evicted by the end (the run's targets).
    pub targets: BTreeSet<String>,
    /// Intervals in which no pod may be deleted (paused, outside a window, after the run
    /// or the policy was deleted and its batch settled).
    pub quiet: Vec<(String, Instant, Instant)>,
}

/// One invariant of one trial: its name, whether it held, and the evidence.
#[derive(Debug, Clone)]
pub struct Check {
    pub invariant: &'static str,
    pub pass: bool,
    pub detail: String,
}

/// A witnessed deletion may reach us a little after it happened; a deletion within this of
/// a quiet interval's start was decided before it.
const DELIVERY_GRACE: std::time::Duration = std::time::Duration::from_millis(300);

impl Witness {
    /// the run's invariants over everything witnessed so far.
    /// Pods of the watched namespaces stuck on a profile their node never loaded.
    pub fn stuck(&self) -> Vec<crate::standin::Stuck> {
        self.standin
            .stuck()
            .into_iter()
            .filter(|s| {
                s.pod
                    .split('/')
                    .next()
                    .is_some_and(|ns| self.namespaces.contains(ns))
            })
            .collect()
    }

    pub fn check(&self, e: &Expect) -> Vec<Check> {
        let deletions = self.deletions();
        let mut out = vec![];
        let stuck = self.stuck();
        out.push(Check {
            invariant: "no pod stuck on a profile its node never loaded",
            pass: stuck.is_empty(),
            detail: format!("{} stuck: {stuck:?}", stuck.len()),
        });
        let max = self.max_disrupted();
        out.push(Check {
            invariant: "disruption within the batch",
            pass: max <= e.batch,
            detail: format!("max {max} of {}", e.batch),
        });
        if let Some(z) = e.per_zone {
            let worst = self.max_per_zone().into_values().max().unwrap_or(0);
            out.push(Check {
                invariant: "disruption within the zone limit",
                pass: worst <= z,
                detail: format!("max {worst} of {z} in a zone"),
            });
        }
        if let Some(w) = e.per_workload {
            let worst = self.max_per_workload().into_values().max().unwrap_or(0);
            out.push(Check {
                invariant: "no PDB bypassed",
                pass: worst <= w,
                detail: format!("max {worst} of {w} disrupted in a workload"),
            });
        }
        let mut seen = BTreeSet::new();
        let twice: Vec<&str> = deletions
            .iter()
            .filter(|d| !seen.insert(d.uid.clone()))
            .map(|d| d.name.as_str())
            .collect();
        out.push(Check {
            invariant: "no pod evicted twice",
            pass: twice.is_empty(),
            detail: format!("{} deletions, twice: {twice:?}", deletions.len()),
        });
        let loud: Vec<String> = e
            .quiet
            .iter()
            .flat_map(|(why, from, to)| {
                deletions
                    .iter()
                    .filter(move |d| d.at > *from + DELIVERY_GRACE && d.at < *to)
                    .map(move |d| format!("{} during {why}", d.name))
            })
            .collect();
        if !e.quiet.is_empty() {
            out.push(Check {
                invariant: "no eviction while paused, outside a window or after deletion",
                pass: loud.is_empty(),
                detail: if loud.is_empty() {
                    format!("{} quiet intervals", e.quiet.len())
                } else {
                    loud.join(", ")
                },
            });
        }
        if !e.targets.is_empty() {
            let missing = e.targets.difference(&seen).count();
            out.push(Check {
                invariant: "every target refreshed",
                pass: missing == 0,
                detail: format!(
                    "{} of {} refreshed",
                    e.targets.len() - missing,
                    e.targets.len()
                ),
            });
        }
        out
    }
}

/// Prints a trial's checks (`INVARIANT trial=... pass|FAIL`) and fails on any violation.
pub fn report(trial: &str, checks: &[Check]) -> crate::Result<()> {
    for c in checks {
        println!(
            "INVARIANT trial={trial} {:<60} {} ({})",
            c.invariant,
            if c.pass { "pass" } else { "FAIL" },
            c.detail
        );
    }
    let failed: Vec<&Check> = checks.iter().filter(|c| !c.pass).collect();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!("trial {trial}: invariants violated: {failed:?}").into())
    }
}
