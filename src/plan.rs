//! Batch planning: from targets and cluster facts to the next batch, or to every batch.
//!
//! The run re-plans before each batch from what it observes (so a policy edit, a pod that
//! went away or a PDB that tightened take effect at once); `plan` simulates the whole run by
//! calling the same [`next_batch`] until no target is left. Every decision about which pod
//! goes when is made here.

use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use crate::api::Strategy;
use crate::compliance::Owner;
use crate::policy::ValidPolicy;
use crate::select::Target;

/// The limits a batch must respect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Units (pods, or workloads under RolloutRestart) disrupted at once.
    pub batch: u32,
    pub max_per_node: Option<u32>,
    pub max_per_zone: Option<u32>,
    pub sts_one_at_a_time: bool,
    pub serialize_volume_pods: bool,
    pub leader_last: bool,
    /// RolloutRestart: a unit is a workload.
    pub by_workload: bool,
}

impl Limits {
    /// The limits of `policy` for a run of `total` targets (percentages resolve against it).
    pub fn from_policy(policy: &ValidPolicy, total: u32) -> Limits {
        let r = &policy.spec.rollout;
        let s = &policy.spec.stateful;
        Limits {
            batch: policy.batch_size.resolve_up(total, 1),
            max_per_node: policy.max_per_node,
            max_per_zone: policy.max_per_zone,
            sts_one_at_a_time: s.stateful_set_one_at_a_time,
            serialize_volume_pods: s.serialize_volume_pods,
            leader_last: s.leader_last,
            by_workload: r.strategy == Strategy::RolloutRestart,
        }
    }
}

type Workload = (String, Owner);

/// Disruption already in flight, from this run and from other runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InFlight {
    pub total: u32,
    /// Pods deferred by a PodDisruptionBudget (not in `total`): their refusal shows already.
    pub refused: u32,
    pub per_node: BTreeMap<String, u32>,
    pub per_zone: BTreeMap<String, u32>,
    /// Workloads with a pod in flight.
    pub workloads: BTreeSet<Workload>,
    /// Workloads with a volume-mounting pod in flight.
    pub volume_workloads: BTreeSet<Workload>,
}

impl InFlight {
    /// Counts one disrupted pod.
    pub fn add(&mut self, node: &str, zone: &str, workload: Workload, volumes: bool) {
        self.total += 1;
        *self.per_node.entry(node.to_string()).or_default() += 1;
        if !zone.is_empty() {
            *self.per_zone.entry(zone.to_string()).or_default() += 1;
        }
        if volumes {
            self.volume_workloads.insert(workload.clone());
        }
        self.workloads.insert(workload);
    }

    pub fn add_target(&mut self, t: &Target) {
        self.add(&t.node, &t.zone, t.workload(), t.volumes);
    }
}

/// What the planner knows besides the targets.
#[derive(Debug, Clone, Default)]
pub struct Context {
    /// `status.disruptionsAllowed` of each PDB (indexes as in `Target::pdbs`).
    pub pdb_allowed: Vec<i32>,
    /// StatefulSets (namespace, name) not fully Ready now: none of their pods may start.
    pub unready_sets: BTreeSet<(String, String)>,
}

/// The order targets are planned in, as a permutation of indexes (of targets or references
/// to them), so batches spread over workloads: the first pod of every workload, then the
/// second, ...; within a StatefulSet the highest ordinal first; deterministic.
pub fn order_indices<T: Borrow<Target>>(targets: &[T]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..targets.len()).collect();
    // Borrowed keys: this sorts every remaining target on every refill.
    let key = |i: usize| {
        let t = targets[i].borrow();
        (
            t.namespace.as_str(),
            &t.owner,
            std::cmp::Reverse(t.ordinal),
            t.leader,
            t.name.as_str(),
        )
    };
    idx.sort_unstable_by(|&a, &b| key(a).cmp(&key(b)).then(a.cmp(&b)));
    // Sorted by workload first, so a workload's pods are adjacent: each one's rank is its
    // place in that run.
    let mut pos: Vec<(u32, usize)> = Vec::with_capacity(idx.len());
    for (k, &i) in idx.iter().enumerate() {
        let same = k > 0
            && workload_ref(targets[idx[k - 1]].borrow()) == workload_ref(targets[i].borrow());
        let rank = if same { pos[k - 1].0 + 1 } else { 1 };
        pos.push((rank, i));
    }
    // Stable: within a rank, workloads keep their sorted order.
    pos.sort_by_key(|(r, _)| *r);
    pos.into_iter().map(|(_, i)| i).collect()
}

/// A window's refill order: zones take turns, the zones with the fewest pods in flight
/// first, so one zone whose pods come first in [`order_indices`] does not take every freed slot.
/// Within a zone the order is kept, and within a StatefulSet too (highest ordinal first):
/// each position the interleaving gives a StatefulSet's pod goes to that set's next pod
/// in the original order.
pub fn spread_zones(targets: &mut Vec<&Target>, flight: &InFlight) {
    let mut turn: HashMap<&str, u32> = HashMap::new();
    let keys: Vec<u32> = targets
        .iter()
        .map(|t| {
            let n = turn
                .entry(t.zone.as_str())
                .or_insert_with(|| flight.per_zone.get(&t.zone).copied().unwrap_or(0));
            *n += 1;
            *n
        })
        .collect();
    let mut idx: Vec<usize> = (0..targets.len()).collect();
    // Stable: within a turn, the original order.
    idx.sort_by_key(|&i| keys[i]);
    let sts = |t: &Target| t.owner.kind == "StatefulSet";
    let mut queues: HashMap<WorkloadRef, std::collections::VecDeque<&Target>> = HashMap::new();
    for t in targets.iter().filter(|t| sts(t)) {
        queues.entry(workload_ref(t)).or_default().push_back(t);
    }
    let spread: Vec<&Target> = idx
        .into_iter()
        .map(|i| {
            let t = targets[i];
            if !sts(t) {
                return t;
            }
            queues
                .get_mut(&workload_ref(t))
                .and_then(|q| q.pop_front())
                .expect("one pod per position of its StatefulSet")
        })
        .collect();
    *targets = spread;
}

/// Why a target could not join the batch (first reason found).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Blocked {
    BatchFull,
    NodeLimit,
    ZoneLimit,
    StatefulSetBusy,
    StatefulSetNotReady,
    VolumeWorkloadBusy,
    LeaderWaits,
    Budget,
}

/// Picks the next batch (indexes into `remaining`, which should be in [`order_indices`]'s order).
/// `budget` is how many more units may be disrupted now (the batch size minus what is
/// still disrupted). When PodDisruptionBudgets alone block every candidate and nothing is
/// in flight or deferred, one pod per budget is still planned, so the eviction's refusal
/// shows in status instead of the run waiting silently.
pub fn next_batch(
    remaining: &[&Target],
    limits: &Limits,
    in_flight: &InFlight,
    ctx: &Context,
    budget: u32,
) -> Vec<usize> {
    if limits.by_workload {
        return next_workloads(remaining, in_flight, budget);
    }
    let mut flight = in_flight.clone();
    let mut chosen: Vec<usize> = Vec::new();
    let mut pdb_used: BTreeMap<usize, i32> = BTreeMap::new();
    let mut pdb_blocked: Vec<usize> = Vec::new();
    // Remaining non-leader targets per workload that has a leader, for leader-last (keys
    // borrowed: this runs over every remaining target on every batch).
    let mut left: HashMap<WorkloadRef, u32> = remaining
        .iter()
        .filter(|t| t.leader)
        .map(|t| (workload_ref(t), 0))
        .collect();
    if !left.is_empty() {
        for t in remaining.iter().filter(|t| !t.leader) {
            if let Some(n) = left.get_mut(&workload_ref(t)) {
                *n += 1;
            }
        }
    }
    // Sets whose highest-ordinal remaining pod was considered: no lower ordinal may overtake it.
    let mut sets_seen: HashSet<WorkloadRef> = HashSet::new();
    for (i, t) in remaining.iter().enumerate() {
        if chosen.len() as u32 >= budget {
            break;
        }
        if limits.sts_one_at_a_time
            && t.owner.kind == "StatefulSet"
            && !t.leader
            && !sets_seen.insert(workload_ref(t))
        {
            continue;
        }
        if eligible(t, limits, &flight, ctx, &left).is_err() {
            continue;
        }
        if t.pdbs.iter().any(|p| {
            pdb_used.get(p).copied().unwrap_or(0) >= ctx.pdb_allowed.get(*p).copied().unwrap_or(0)
        }) {
            pdb_blocked.push(i);
            continue;
        }
        for p in &t.pdbs {
            *pdb_used.entry(*p).or_default() += 1;
        }
        flight.add_target(t);
        if let Some(n) = left.get_mut(&workload_ref(t)).filter(|_| !t.leader) {
            *n -= 1;
        }
        chosen.push(i);
    }
    if chosen.is_empty() && in_flight.total == 0 && in_flight.refused == 0 && budget > 0 {
        // Surface PDB refusals: one pod per distinct budget, within the other limits.
        let mut seen: BTreeSet<Vec<usize>> = BTreeSet::new();
        for i in pdb_blocked {
            if chosen.len() as u32 >= budget {
                break;
            }
            let t = remaining[i];
            if seen.insert(t.pdbs.clone()) && eligible(t, limits, &flight, ctx, &left).is_ok() {
                flight.add_target(t);
                chosen.push(i);
            }
        }
    }
    chosen
}

/// A workload by reference, for lookups that must not allocate.
type WorkloadRef<'a> = (&'a str, &'a Owner);

fn workload_ref(t: &Target) -> WorkloadRef<'_> {
    (&t.namespace, &t.owner)
}

fn eligible(
    t: &Target,
    limits: &Limits,
    flight: &InFlight,
    ctx: &Context,
    left: &HashMap<WorkloadRef, u32>,
) -> Result<(), Blocked> {
    if limits
        .max_per_node
        .is_some_and(|m| flight.per_node.get(&t.node).copied().unwrap_or(0) >= m)
    {
        return Err(Blocked::NodeLimit);
    }
    if !t.zone.is_empty()
        && limits
            .max_per_zone
            .is_some_and(|m| flight.per_zone.get(&t.zone).copied().unwrap_or(0) >= m)
    {
        return Err(Blocked::ZoneLimit);
    }
    // The owned key only for the pods whose checks need it (most need none).
    let needs_key = t.owner.kind == "StatefulSet" || t.volumes || t.leader;
    if !needs_key {
        return Ok(());
    }
    let w = t.workload();
    if limits.sts_one_at_a_time && t.owner.kind == "StatefulSet" {
        if flight.workloads.contains(&w) {
            return Err(Blocked::StatefulSetBusy);
        }
        if ctx
            .unready_sets
            .contains(&(t.namespace.clone(), t.owner.name.clone()))
        {
            return Err(Blocked::StatefulSetNotReady);
        }
    }
    if limits.serialize_volume_pods && t.volumes && flight.volume_workloads.contains(&w) {
        return Err(Blocked::VolumeWorkloadBusy);
    }
    // A leader waits until no other target of its workload is left or in flight.
    if limits.leader_last
        && t.leader
        && (left.get(&workload_ref(t)).copied().unwrap_or(0) > 0 || flight.workloads.contains(&w))
    {
        return Err(Blocked::LeaderWaits);
    }
    Ok(())
}

/// RolloutRestart: one unit per workload not already restarting.
fn next_workloads(remaining: &[&Target], in_flight: &InFlight, budget: u32) -> Vec<usize> {
    let mut seen = BTreeSet::new();
    let mut chosen = Vec::new();
    for (i, t) in remaining.iter().enumerate() {
        if chosen.len() as u32 >= budget {
            break;
        }
        let w = t.workload();
        if in_flight.workloads.contains(&w) || !seen.insert(w) {
            continue;
        }
        chosen.push(i);
    }
    chosen
}

/// The whole plan: batches of targets (as indexes into `targets`), assuming each batch
/// completes before the next starts and PDBs recover in between.
pub fn plan_all(targets: &[Target], limits: &Limits, ctx: &Context) -> Vec<Vec<usize>> {
    let mut idx = order_indices(targets);
    // The simulation assumes every set is Ready again between batches.
    let sim_ctx = Context {
        pdb_allowed: ctx.pdb_allowed.clone(),
        unready_sets: BTreeSet::new(),
    };
    let mut batches = Vec::new();
    while !idx.is_empty() {
        let remaining: Vec<&Target> = idx.iter().map(|&i| &targets[i]).collect();
        let picked = next_batch(
            &remaining,
            limits,
            &InFlight::default(),
            &sim_ctx,
            limits.batch,
        );
        if picked.is_empty() {
            // Cannot happen with nothing in flight (see next_batch), but never loop forever.
            batches.push(idx.clone());
            break;
        }
        let mut in_batch = vec![false; idx.len()];
        if limits.by_workload {
            // A unit stands for every target pod of its workload.
            let ws: BTreeSet<Workload> = picked.iter().map(|&p| remaining[p].workload()).collect();
            for (k, &i) in idx.iter().enumerate() {
                in_batch[k] = ws.contains(&targets[i].workload());
            }
        } else {
            for &p in &picked {
                in_batch[p] = true;
            }
        }
        let batch: Vec<usize> = idx
            .iter()
            .zip(&in_batch)
            .filter(|(_, b)| **b)
            .map(|(&i, _)| i)
            .collect();
        let mut k = 0;
        idx.retain(|_| {
            k += 1;
            !in_batch[k - 1]
        });
        batches.push(batch);
    }
    batches
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::{any, prop_assert, prop_assert_eq, proptest};
    use proptest::strategy::Strategy as _;

    fn t(ns: &str, kind: &str, owner: &str, name: &str, node: &str, zone: &str) -> Target {
        Target {
            namespace: ns.into(),
            name: name.into(),
            uid: format!("uid-{ns}-{name}"),
            node: node.into(),
            zone: zone.into(),
            owner: Owner {
                kind: kind.into(),
                name: owner.into(),
            },
            ordinal: None,
            volumes: false,
            leader: false,
            pdbs: vec![],
            ready: true,
            created: None,
        }
    }

    #[test]
    fn window_refills_take_zones_in_turn_and_keep_statefulset_order() {
        // Zone a's pods come first in order and two of its pods are in flight already.
        let mut all = vec![
            t("ns", "Deployment", "a", "a1", "n1", "a"),
            t("ns", "Deployment", "a", "a2", "n1", "a"),
            t("ns", "Deployment", "a", "a3", "n1", "a"),
            t("ns", "Deployment", "b", "b1", "n2", "b"),
            t("ns", "Deployment", "c", "c1", "n3", "c"),
        ];
        let mut set = sts(3);
        // pg-2 in zone b, pg-1 and pg-0 in zone c: the highest ordinal still goes first.
        set[2].zone = "b".into();
        all.extend(set);
        order(&mut all);
        let mut flight = InFlight::default();
        for _ in 0..2 {
            flight.add("n1", "a", ("ns".into(), all[0].owner.clone()), false);
        }
        let mut refs: Vec<&Target> = all.iter().collect();
        spread_zones(&mut refs, &flight);
        let got: Vec<&str> = refs.iter().map(|t| t.name.as_str()).collect();
        let pos = |n: &str| got.iter().position(|g| *g == n).unwrap();
        assert!(pos("b1") < pos("a1") && pos("c1") < pos("a1"), "{got:?}");
        assert!(
            pos("pg-2") < pos("pg-1") && pos("pg-1") < pos("pg-0"),
            "{got:?}"
        );
        assert!(pos("a1") < pos("a2") && pos("a2") < pos("a3"), "{got:?}");
        assert_eq!(got.len(), all.len());
        // Within one Deployment spread over zones too.
        let wd: Vec<Target> = [("w1", "a"), ("w2", "a"), ("w3", "a"), ("w4", "b")]
            .iter()
            .map(|(n, z)| t("ns", "Deployment", "w", n, "n", z))
            .collect();
        let mut refs2: Vec<&Target> = wd.iter().collect();
        spread_zones(&mut refs2, &flight);
        assert_eq!(refs2[0].name, "w4", "zone b first");
        // A refill of two takes b and c, not a's first pods.
        let next = next_batch(&refs, &limits(2), &flight, &Context::default(), 2);
        let zones: Vec<&str> = next.iter().map(|&i| refs[i].zone.as_str()).collect();
        assert!(!zones.contains(&"a"), "{zones:?}");
    }

    fn limits(batch: u32) -> Limits {
        Limits {
            batch,
            max_per_node: None,
            max_per_zone: None,
            sts_one_at_a_time: true,
            serialize_volume_pods: true,
            leader_last: true,
            by_workload: false,
        }
    }

    fn names(targets: &[Target], batches: &[Vec<usize>]) -> Vec<Vec<String>> {
        batches
            .iter()
            .map(|b| b.iter().map(|&i| targets[i].name.clone()).collect())
            .collect()
    }

    fn sts(n: u32) -> Vec<Target> {
        (0..n)
            .map(|i| {
                let mut x = t(
                    "db",
                    "StatefulSet",
                    "pg",
                    &format!("pg-{i}"),
                    &format!("n{i}"),
                    "z",
                );
                x.ordinal = Some(i);
                x
            })
            .collect()
    }

    #[test]
    fn batches_respect_size_and_spread_over_workloads() {
        let mut ts = vec![];
        for i in 0..4 {
            ts.push(t("a", "Deployment", "web", &format!("web-{i}"), "n1", "z1"));
            ts.push(t("a", "Deployment", "api", &format!("api-{i}"), "n2", "z2"));
        }
        let b = plan_all(&ts, &limits(2), &Context::default());
        assert_eq!(b.len(), 4);
        for batch in &b {
            let ws: BTreeSet<_> = batch.iter().map(|&i| ts[i].owner.name.clone()).collect();
            assert_eq!(ws.len(), 2, "each batch takes one pod of each workload");
        }
    }

    #[test]
    fn statefulset_one_at_a_time_highest_ordinal_first() {
        let ts = sts(3);
        let b = plan_all(&ts, &limits(5), &Context::default());
        assert_eq!(
            names(&ts, &b),
            vec![vec!["pg-2"], vec!["pg-1"], vec!["pg-0"]]
        );
        // Live: an unready set starts nothing; a set with a pod in flight neither.
        let mut ordered = ts.clone();
        order(&mut ordered);
        let ordered: Vec<&Target> = ordered.iter().collect();
        let ctx = Context {
            unready_sets: [("db".to_string(), "pg".to_string())].into(),
            ..Default::default()
        };
        assert!(next_batch(&ordered, &limits(5), &InFlight::default(), &ctx, 5).is_empty());
        let mut f = InFlight::default();
        f.add_target(ordered[0]);
        assert!(next_batch(&ordered[1..], &limits(5), &f, &Context::default(), 4).is_empty());
        // Off: the set is treated like any other workload.
        let mut l = limits(5);
        l.sts_one_at_a_time = false;
        assert_eq!(plan_all(&ts, &l, &Context::default()).len(), 1);
    }

    #[test]
    fn leader_goes_last_in_its_workload() {
        let mut ts: Vec<Target> = (0..3)
            .map(|i| t("a", "Deployment", "ctl", &format!("ctl-{i}"), "n", "z"))
            .collect();
        ts[0].leader = true;
        let b = plan_all(&ts, &limits(3), &Context::default());
        assert_eq!(names(&ts, &b), vec![vec!["ctl-1", "ctl-2"], vec!["ctl-0"]]);
        let mut l = limits(3);
        l.leader_last = false;
        assert_eq!(plan_all(&ts, &l, &Context::default()).len(), 1);
    }

    #[test]
    fn volume_pods_serialised_per_workload() {
        let mut ts: Vec<Target> = (0..3)
            .map(|i| t("a", "Deployment", "cache", &format!("c-{i}"), "n", "z"))
            .collect();
        ts[0].volumes = true;
        ts[1].volumes = true;
        let b = plan_all(&ts, &limits(3), &Context::default());
        for batch in &b {
            assert!(batch.iter().filter(|&&i| ts[i].volumes).count() <= 1);
        }
        assert_eq!(b.len(), 2);
    }

    #[test]
    fn node_and_zone_limits() {
        let mut ts = vec![];
        for i in 0..6 {
            ts.push(t(
                "a",
                "Deployment",
                &format!("w{i}"),
                &format!("p{i}"),
                &format!("n{}", i % 2),
                &format!("z{}", i % 3),
            ));
        }
        let mut l = limits(6);
        l.max_per_zone = Some(1);
        let b = plan_all(&ts, &l, &Context::default());
        for batch in &b {
            let zones: BTreeSet<_> = batch.iter().map(|&i| ts[i].zone.clone()).collect();
            assert_eq!(zones.len(), batch.len());
        }
        assert_eq!(b.len(), 2);
        let mut l = limits(6);
        l.max_per_node = Some(2);
        let b = plan_all(&ts, &l, &Context::default());
        assert_eq!(b.iter().map(Vec::len).collect::<Vec<_>>(), vec![4, 2]);
        // In-flight disruption counts against the limits.
        let mut f = InFlight::default();
        f.add(
            "n0",
            "z0",
            (
                "x".into(),
                Owner {
                    kind: "Deployment".into(),
                    name: "x".into(),
                },
            ),
            false,
        );
        f.add(
            "n0",
            "z0",
            (
                "x".into(),
                Owner {
                    kind: "Deployment".into(),
                    name: "x".into(),
                },
            ),
            false,
        );
        let mut ordered = ts.clone();
        order(&mut ordered);
        let ordered: Vec<&Target> = ordered.iter().collect();
        let picked = next_batch(&ordered, &l, &f, &Context::default(), 4);
        assert!(picked.iter().all(|&i| ordered[i].node == "n1"));
    }

    #[test]
    fn pdbs_cap_a_batch_and_zero_budget_still_surfaces() {
        let mut ts: Vec<Target> = (0..4)
            .map(|i| t("a", "Deployment", "web", &format!("w-{i}"), "n", "z"))
            .collect();
        for x in &mut ts {
            x.pdbs = vec![0];
        }
        let ctx = Context {
            pdb_allowed: vec![1],
            ..Default::default()
        };
        let b = plan_all(&ts, &limits(4), &ctx);
        assert_eq!(b.len(), 4);
        let ctx0 = Context {
            pdb_allowed: vec![0],
            ..Default::default()
        };
        let mut ordered = ts.clone();
        order(&mut ordered);
        let ordered: Vec<&Target> = ordered.iter().collect();
        assert_eq!(
            next_batch(&ordered, &limits(4), &InFlight::default(), &ctx0, 4).len(),
            1
        );
        let mut f = InFlight::default();
        f.add(
            "n",
            "z",
            (
                "o".into(),
                Owner {
                    kind: "Deployment".into(),
                    name: "o".into(),
                },
            ),
            false,
        );
        assert!(next_batch(&ordered, &limits(4), &f, &ctx0, 3).is_empty());
    }

    #[test]
    fn rollout_restart_plans_workloads() {
        let mut ts = vec![];
        for w in ["a", "b", "c"] {
            for i in 0..2 {
                ts.push(t("ns", "Deployment", w, &format!("{w}-{i}"), "n", "z"));
            }
        }
        let mut l = limits(2);
        l.by_workload = true;
        let b = plan_all(&ts, &l, &Context::default());
        assert_eq!(b.iter().map(Vec::len).collect::<Vec<_>>(), vec![4, 2]);
    }

    #[test]
    fn percentages_round_up() {
        let p = crate::compliance::tests::policy("rollout: {batchSize: '10%'}");
        assert_eq!(Limits::from_policy(&p, 95).batch, 10);
        assert_eq!(Limits::from_policy(&p, 3).batch, 1);
        assert_eq!(Limits::from_policy(&p, 0).batch, 1);
    }

    fn arb_targets() -> impl proptest::strategy::Strategy<Value = Vec<Target>> {
        proptest::collection::vec(
            (
                0u8..3,
                0u8..4,
                0u8..5,
                0u8..3,
                any::<bool>(),
                any::<bool>(),
                0u8..3,
            ),
            0..40,
        )
        .prop_map(|v| {
            v.into_iter()
                .enumerate()
                .map(|(i, (ns, w, node, zone, vol, leader, kind))| {
                    let kind = ["Deployment", "StatefulSet", "DaemonSet"][kind as usize];
                    let mut x = t(
                        &format!("ns{ns}"),
                        kind,
                        &format!("w{w}{kind}"),
                        &format!("p{i}"),
                        &format!("n{node}"),
                        &format!("z{zone}"),
                    );
                    x.volumes = vol;
                    x.leader = leader;
                    x.ordinal = (kind == "StatefulSet").then_some(i as u32);
                    x.pdbs = if w == 0 { vec![ns as usize] } else { vec![] };
                    x
                })
                .collect()
        })
    }

    /// Targets in [`order_indices`]'s order.
    fn order(targets: &mut Vec<Target>) {
        let idx = order_indices(targets);
        let mut taken: Vec<Option<Target>> =
            std::mem::take(targets).into_iter().map(Some).collect();
        *targets = idx
            .into_iter()
            .map(|i| taken[i].take().expect("a permutation"))
            .collect();
    }

    /// The order by its definition, plainly: workloads sorted, each workload's pods sorted
    /// (highest ordinal first, the leader last), then round by round one pod per workload.
    fn order_by_definition(ts: &[Target]) -> Vec<usize> {
        let mut idx: Vec<usize> = (0..ts.len()).collect();
        idx.sort_by_key(|&i| {
            let t = &ts[i];
            (
                t.namespace.clone(),
                t.owner.clone(),
                std::cmp::Reverse(t.ordinal),
                t.leader,
                t.name.clone(),
            )
        });
        let mut seen: BTreeMap<(String, Owner), u32> = BTreeMap::new();
        let mut ranked: Vec<(u32, usize)> = idx
            .into_iter()
            .map(|i| {
                let r = seen
                    .entry((ts[i].namespace.clone(), ts[i].owner.clone()))
                    .or_default();
                *r += 1;
                (*r, i)
            })
            .collect();
        ranked.sort_by_key(|(r, _)| *r);
        ranked.into_iter().map(|(_, i)| i).collect()
    }

    proptest! {
        #[test]
        fn the_order_is_its_definition(mut ts in arb_targets(), dup in proptest::collection::vec(any::<bool>(), 40)) {
            // Some pods share a name (another namespace's, or a copy): ties keep their order.
            for (i, d) in dup.iter().enumerate().take(ts.len()) {
                if *d && i > 0 {
                    ts[i].name = ts[i - 1].name.clone();
                }
            }
            prop_assert_eq!(order_indices(&ts), order_by_definition(&ts));
            let refs: Vec<&Target> = ts.iter().collect();
            prop_assert_eq!(order_indices(&refs), order_by_definition(&ts));
        }

        #[test]
        fn plan_invariants(ts in arb_targets(), batch in 1u32..8, per_node in proptest::option::of(1u32..3), per_zone in proptest::option::of(1u32..3), allowed in proptest::collection::vec(0i32..3, 3)) {
            let mut l = limits(batch);
            l.max_per_node = per_node;
            l.max_per_zone = per_zone;
            let ctx = Context { pdb_allowed: allowed.clone(), ..Default::default() };
            let b = plan_all(&ts, &l, &ctx);
            // Every target exactly once.
            let mut all: Vec<usize> = b.iter().flatten().copied().collect();
            all.sort();
            prop_assert_eq!(all, (0..ts.len()).collect::<Vec<_>>());
            // Deterministic.
            prop_assert_eq!(&b, &plan_all(&ts, &l, &ctx));
            let mut sts_done: BTreeMap<Workload, u32> = BTreeMap::new();
            for batch_ in &b {
                prop_assert!(!batch_.is_empty());
                prop_assert!(batch_.len() as u32 <= batch);
                let mut node: BTreeMap<&str, u32> = BTreeMap::new();
                let mut zone: BTreeMap<&str, u32> = BTreeMap::new();
                let mut sets: BTreeMap<Workload, u32> = BTreeMap::new();
                let mut vols: BTreeMap<Workload, u32> = BTreeMap::new();
                let mut pdb: BTreeMap<usize, i32> = BTreeMap::new();
                for &i in batch_ {
                    let x = &ts[i];
                    *node.entry(&x.node).or_default() += 1;
                    *zone.entry(&x.zone).or_default() += 1;
                    if x.owner.kind == "StatefulSet" { *sets.entry(x.workload()).or_default() += 1; }
                    if x.volumes { *vols.entry(x.workload()).or_default() += 1; }
                    for p in &x.pdbs { *pdb.entry(*p).or_default() += 1; }
                    // Leader last: nothing of its workload comes after it.
                    if x.leader {
                        let later = b.iter().skip_while(|bb| !bb.contains(&i)).skip(1).flatten().any(|&j| ts[j].workload() == x.workload() && !ts[j].leader);
                        prop_assert!(!later, "leader {} not last", x.name);
                    }
                    // Highest ordinal first (a leader excepted: it goes last).
                    if let Some(o) = x.ordinal.filter(|_| !x.leader) {
                        let prev = sts_done.entry(x.workload()).or_insert(u32::MAX);
                        prop_assert!(o < *prev);
                        *prev = o;
                    }
                }
                if let Some(m) = per_node { prop_assert!(node.values().all(|&c| c <= m)); }
                if let Some(m) = per_zone { prop_assert!(zone.values().all(|&c| c <= m)); }
                prop_assert!(sets.values().all(|&c| c == 1));
                prop_assert!(vols.values().all(|&c| c == 1));
                // A PDB is exceeded only by the single pod that surfaces a zero budget.
                for (p, c) in pdb {
                    prop_assert!(c <= allowed[p].max(1));
                }
            }
        }
    }
}
