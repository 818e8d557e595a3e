//! Generated policy specs through the whole pipeline: the API server's checks (schema and
//! CEL, as `crdcheck` applies them), decoding, validation, planning over a small cluster and
//! many state-machine steps with windows opening and closing and the clock jumping (also
//! backwards). Nothing may panic; every rejection names a field under `spec`.
//!
//! `SPEC_CASES` sets the number of specs (the test command runs a thousand; `make fuzz`
//! a million, in release). Failures are kept in `proptest-regressions/` and replayed first.

use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence};
use serde_json::{Value, json};

use super::tests::{World, observe};
use super::*;
use crate::api::{ArmorRefreshPolicySpec, ArmorRefreshRunSpec, PolicyRef};
use crate::policy::validate;

fn duration() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => prop::sample::select(vec!["1s", "30s", "5m", "1h30m", ".5s", "1.s", "8760h", "2h", "0.1ms"])
            .prop_map(String::from),
        1 => "([0-9]{1,3}(\\.[0-9]{1,2})?(ms|s|m|h)){1,2}",
        1 => prop::sample::select(vec![
            "0s", "1s", "30s", "5m", "1h30m", ".5s", "1.s", "8760h", "8760h1ns", "2562047h",
            "9999999h", "3000000000h", "0", "-5s", "1e9s", "",
        ])
        .prop_map(String::from),
        1 => "([0-9]{1,8}(\\.[0-9]{1,4})?(ns|us|µs|ms|s|m|h)){1,3}",
        1 => "\\PC{0,12}",
    ]
}

fn amount() -> impl Strategy<Value = Value> {
    prop_oneof![
        6 => (1i64..200).prop_map(|n| json!(n)),
        3 => (1u32..=100).prop_map(|p| json!(format!("{p}%"))),
        1 => prop::sample::select(vec![
            -1i64,
            0,
            1,
            2,
            3,
            50,
            999_999,
            1_000_000,
            1_000_001,
            i64::from(i32::MAX),
            5_000_000_000
        ])
        .prop_map(|n| json!(n)),
        1 => (0u32..130).prop_map(|p| json!(format!("{p}%"))),
        1 => "[0-9%a-z ]{0,5}".prop_map(|s| json!(s)),
    ]
}

fn cron() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => prop::sample::select(vec!["0 1 * * *", "0 1 * * 1-5", "*/30 * * * *", "0 */6 * * *"])
            .prop_map(String::from),
        2 => prop::sample::select(vec![
            "0 1 * * *",
            "0 1 * * 1-5",
            "* * * * *",
            "*/5 * * * *",
            "0 0 30 2 *",
            "0 0 29 2 *",
            "0 0 1 1 *",
            "30 2 * 3 0",
            "every night",
            "0 25 * * *",
        ])
        .prop_map(String::from),
        1 => "([0-9*/,-]{1,4} ){4}[0-9*/,-]{1,4}",
    ]
}

fn window() -> impl Strategy<Value = Value> {
    (
        cron(),
        duration(),
        prop::sample::select(vec![
            "UTC",
            "UTC",
            "Europe/Berlin",
            "Europe/Berlin",
            "America/New_York",
            "Australia/Lord_Howe",
            "Asia/Kathmandu",
            "../../../etc/localtime",
            "Mars/Olympus",
            "",
        ]),
    )
        .prop_map(|(s, d, tz)| json!({"schedule": s, "duration": d, "timeZone": tz}))
}

fn template() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => prop::sample::select(vec![
            "localhost/kubearmor-{namespace}-{owner}-{container}",
            "localhost/kubearmor-shop-web-app",
            "unconfined",
        ])
        .prop_map(String::from),
        1 => prop::sample::select(vec![
            "localhost/kubearmor-{namespace}-{owner}-{container}",
            "localhost/kubearmor-shop-web-app",
            "unconfined",
            "runtime/default",
            "localhost/{pod}",
            "localhost/../etc/{pod}",
            "localhost/a/b",
            "localhost/{cluster}",
            "localhost/{pod",
        ])
        .prop_map(String::from),
        1 => "localhost/[a-z{}.-]{0,300}",
    ]
}

/// A spec as a user (or a hostile one) might write it: mostly within the schema, with
/// values at and past every bound.
fn spec() -> impl Strategy<Value = Value> {
    let rollout = (
        amount(),
        duration(),
        prop::option::weighted(
            0.3,
            prop::sample::select(vec![-1i64, 0, 1, 2, 2, 1_000_000, 1_000_001, 5_000_000_000]),
        ),
        prop::option::weighted(
            0.3,
            prop::sample::select(vec![0i64, 1, 1, 3, 4_294_967_296]),
        ),
        duration(),
        prop::sample::select(vec!["Evict", "Evict", "Evict", "RolloutRestart", "Reboot"]),
    )
        .prop_map(|(b, i, node, zone, rt, strat)| {
            let mut r =
                json!({"batchSize": b, "interval": i, "readyTimeout": rt, "strategy": strat});
            if let Some(n) = node {
                r["maxPerNode"] = json!(n);
            }
            if let Some(z) = zone {
                r["maxPerZone"] = json!(z);
            }
            r
        });
    let profile = (
        template(),
        prop::sample::select(vec!["Annotation", "Field", "Both"]),
        prop::sample::select(vec!["Create", "Binding"]),
        prop::collection::vec(template(), 0..2),
        any::<bool>(),
    )
        .prop_map(|(t, f, at, overrides, plain)| {
            // Binding writes annotations only: half the specs keep to the common case.
            let (f, at) = if plain {
                ("Annotation", "Create")
            } else {
                (f, at)
            };
            let o: Vec<Value> = overrides
                .into_iter()
                .map(|p| json!({"podSelector": {"matchLabels": {"app": "web"}}, "profile": p}))
                .collect();
            json!({"template": t, "format": f, "injectAt": at, "overrides": o})
        });
    (
        rollout,
        profile,
        prop::collection::vec(window(), 0..2),
        amount(),
        duration(),
        any::<(bool, bool)>(),
        prop::sample::select(vec!["Manual", "Automatic"]),
    )
        .prop_map(|(rollout, profile, windows, failures, vol, (one, leader), trig)| {
            json!({
                "rollout": rollout,
                "profile": profile,
                "windows": windows,
                "health": {"maxFailures": failures},
                "stateful": {"statefulSetOneAtATime": one, "leaderLast": leader, "volumeReadyTimeout": vol},
                "trigger": trig,
            })
        })
}

/// Clock moves between steps, in seconds: small steps, a day, a year, and backwards.
fn jumps() -> impl Strategy<Value = Vec<i64>> {
    prop::collection::vec(
        prop_oneof![
            4 => 0i64..5,
            1 => Just(3_600),
            1 => Just(86_400),
            1 => Just(366 * 86_400),
            1 => -100_000i64..0,
        ],
        1..30,
    )
}

#[derive(Default, Debug)]
struct Tally {
    rejected_by_schema: u64,
    undecodable: u64,
    not_ready: u64,
    valid: u64,
    steps: u64,
}

/// One spec through everything; panics on a broken promise.
fn pipeline(spec: &Value, jumps: &[i64], tally: &mut Tally) {
    let checked = crate::crdcheck::check_policy_spec(spec);
    if let Err(e) = &checked {
        assert!(e.field.starts_with("spec"), "schema: no field: {e}");
        tally.rejected_by_schema += 1;
    }
    let typed: ArmorRefreshPolicySpec = match serde_json::from_value(spec.clone()) {
        Ok(t) => t,
        Err(e) => {
            // What the API server stores must decode: the operator has to read it.
            assert!(
                checked.is_err(),
                "accepted by the schema but undecodable: {e}\n{spec}"
            );
            tally.undecodable += 1;
            return;
        }
    };
    let valid = match validate("fuzz", &typed) {
        Ok(v) => v,
        Err(e) => {
            assert!(e.field.starts_with("spec"), "validate: no field: {e}");
            assert!(!e.message.is_empty() && e.message.len() < 2_000, "{e}");
            tally.not_ready += 1;
            return;
        }
    };
    tally.valid += 1;
    let mut w = World::new(&[("web", 4), ("db", 2)]);
    let sel = select::select(&valid, &w.facts);
    let _ = summary(&valid, &sel, &w.facts, w.now, 0, PLAN_PREVIEW);
    let spec = ArmorRefreshRunSpec {
        policy_ref: PolicyRef {
            name: "fuzz".into(),
        },
        dry_run: false,
        paused: false,
        resume_token: String::new(),
    };
    let mut status = ArmorRefreshRunStatus::default();
    let mut results = HashMap::new();
    for &j in jumps {
        let obs = observe(&spec, PolicyView::Valid(&valid), &w.facts, &results, None);
        let st = step(&status, &obs, w.now);
        assert!(json_len(&st.status) <= STATUS_BUDGET);
        tally.steps += 1;
        status = st.status;
        results = st
            .actions
            .iter()
            .filter_map(|a| match a {
                Action::Evict { uid, .. } => Some((uid.clone(), w.evict(uid))),
                _ => None,
            })
            .collect();
        w.now = crate::schedule::saturating_add(w.now, TimeDelta::seconds(j));
        w.advance(Duration::ZERO);
        if status.phase.is_terminal() {
            break;
        }
    }
}

fn cases() -> u32 {
    std::env::var("SPEC_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000)
}

#[test]
fn generated_specs_never_panic_and_every_rejection_names_a_field() {
    let mut runner = proptest::test_runner::TestRunner::new(Config {
        cases: cases(),
        failure_persistence: Some(Box::new(FileFailurePersistence::SourceParallel(
            "proptest-regressions",
        ))),
        source_file: Some(file!()),
        ..Config::default()
    });
    let tally = std::cell::RefCell::new(Tally::default());
    let start = std::time::Instant::now();
    runner
        .run(&(spec(), jumps()), |(s, j)| {
            pipeline(&s, &j, &mut tally.borrow_mut());
            Ok(())
        })
        .unwrap();
    let t = tally.into_inner();
    println!(
        "FIGURES specs: {} generated in {:.1} s: {} rejected by the schema or CEL, {} undecodable, {} Ready=False, {} valid through {} steps",
        cases(),
        start.elapsed().as_secs_f64(),
        t.rejected_by_schema,
        t.undecodable,
        t.not_ready,
        t.valid,
        t.steps
    );
    assert!(
        t.valid > 0 && t.not_ready > 0 && t.rejected_by_schema > 0,
        "{t:?}"
    );
}
