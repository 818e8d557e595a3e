//! Bad input, table-driven, on the real API server and the operator: every schema and CEL
//! rule, bad cron expressions and time zones, selector syntax errors and absurd sizes. Each
//! case must end in its documented answer — rejected by the API server with a message that
//! names the field, or accepted and marked `Ready=False` by the operator with the field and
//! the fix — and nothing else may change: the valid policies next to them stay Ready.

use std::time::Duration;

use armor_refresh_e2e::process::Process;
use armor_refresh_e2e::{Result, clean, client, install_crds, kubectl, wait_for};

/// Where a bad input is stopped, and a piece of the message the user sees.
enum Answer {
    /// `kubectl apply` fails; stderr contains this.
    Rejected(&'static str),
    /// Accepted, then the operator sets Ready=False with a message containing this.
    NotReady(&'static str),
    /// Accepted and valid (an extreme the operator must handle): Ready=True.
    Valid,
}
use Answer::*;

/// (case, spec of an ArmorRefreshPolicy, answer)
const POLICIES: &[(&str, &str, Answer)] = &[
    (
        "batch size zero",
        "rollout: {batchSize: 0}",
        Rejected("spec.rollout.batchSize: must be a count from 1 to 1000000"),
    ),
    (
        "batch size 0%",
        "rollout: {batchSize: \"0%\"}",
        Rejected("spec.rollout.batchSize"),
    ),
    (
        "batch size 150%",
        "rollout: {batchSize: \"150%\"}",
        Rejected("spec.rollout.batchSize"),
    ),
    (
        "batch size words",
        "rollout: {batchSize: \"many\"}",
        Rejected("spec.rollout.batchSize"),
    ),
    (
        "batch size absurd",
        "rollout: {batchSize: 99999999999}",
        Rejected("spec.rollout.batchSize"),
    ),
    (
        "negative failures",
        "health: {maxFailures: -1}",
        Rejected("spec.health.maxFailures"),
    ),
    (
        "interval not a duration",
        "rollout: {interval: soon}",
        Rejected("spec.rollout.interval"),
    ),
    (
        "ready timeout zero",
        "rollout: {readyTimeout: 0s}",
        NotReady("spec.rollout.readyTimeout: must be longer than 0s"),
    ),
    (
        "unknown strategy",
        "rollout: {strategy: Reboot}",
        Rejected("spec.rollout.strategy"),
    ),
    (
        "zone limit with RolloutRestart",
        "rollout: {strategy: RolloutRestart, maxPerZone: 1}",
        Rejected("maxPerNode and maxPerZone only apply to strategy Evict"),
    ),
    (
        "node limit zero",
        "rollout: {maxPerNode: 0}",
        Rejected("spec.rollout.maxPerNode"),
    ),
    (
        "empty topology key",
        "rollout: {topologyKey: \"\"}",
        Rejected("spec.rollout.topologyKey"),
    ),
    (
        "unknown format",
        "profile: {format: Sticker}",
        Rejected("spec.profile.format"),
    ),
    (
        "binding with field form",
        "profile: {injectAt: Binding, format: Field}",
        Rejected("injectAt Binding can only write annotations"),
    ),
    (
        "profile not a profile",
        "profile: {template: \"kubearmor-{pod}\"}",
        Rejected("spec.profile.template"),
    ),
    (
        "unknown placeholder",
        "profile: {template: \"localhost/{cluster}-{pod}\"}",
        NotReady("unknown placeholder {cluster}"),
    ),
    (
        "unclosed placeholder",
        "profile: {template: \"localhost/{pod\"}",
        NotReady("unclosed '{'"),
    ),
    (
        "override profile invalid",
        "profile: {overrides: [{podSelector: {}, profile: \"apparmor:strict\"}]}",
        Rejected("profile"),
    ),
    (
        "bad cron",
        "windows: [{schedule: \"every night\", duration: 4h}]",
        NotReady("spec.windows[0].schedule"),
    ),
    (
        "cron out of range",
        "windows: [{schedule: \"0 25 * * *\", duration: 4h}]",
        NotReady("spec.windows[0].schedule"),
    ),
    (
        "unknown time zone",
        "windows: [{schedule: \"0 1 * * *\", duration: 4h, timeZone: Mars/Olympus}]",
        NotReady("spec.windows[0].timeZone"),
    ),
    (
        "window without duration",
        "windows: [{schedule: \"0 1 * * *\"}]",
        Rejected("duration"),
    ),
    (
        "window duration not a duration",
        "windows: [{schedule: \"0 1 * * *\", duration: all-night}]",
        Rejected("duration"),
    ),
    (
        "selector operator unknown",
        "selector: {podSelector: {matchExpressions: [{key: app, operator: Inside, values: [a]}]}}",
        NotReady("spec.selector.podSelector"),
    ),
    (
        "selector In without values",
        "selector: {namespaceSelector: {matchExpressions: [{key: team, operator: In}]}}",
        NotReady("spec.selector.namespaceSelector"),
    ),
    (
        "selector bad label key",
        "exclude: {podSelector: {matchLabels: {\"bad key!\": x}}}",
        NotReady("spec.exclude.podSelector"),
    ),
    (
        "excluded namespace not a name",
        "exclude: {namespaces: [\"Kube_System\"]}",
        Rejected("spec.exclude.namespaces"),
    ),
    (
        "owner kind lowercase",
        "exclude: {ownerKinds: [job]}",
        Rejected("spec.exclude.ownerKinds"),
    ),
    (
        "unknown trigger",
        "trigger: Sometimes",
        Rejected("spec.trigger"),
    ),
    (
        "unknown field",
        "rollout: {batchSize: 1, speed: fast}",
        Rejected("unknown field"),
    ),
    // Hostile values: overflowing durations and counts, windows that never fire or never
    // close, path-like time zones, profile names KubeArmor's agent cannot store.
    (
        "interval overflowing",
        "rollout: {interval: 3000000000h}",
        Rejected("spec.rollout.interval: must be a duration of at most 8760h"),
    ),
    (
        "interval past a year",
        "rollout: {interval: 9000h}",
        Rejected("spec.rollout.interval: must be a duration of at most 8760h"),
    ),
    (
        "interval of 21 characters",
        "rollout: {interval: 99999999999999999999h}",
        Rejected("spec.rollout.interval"),
    ),
    (
        "ready timeout past Go's range",
        "rollout: {readyTimeout: 2562048h}",
        Rejected("spec.rollout.readyTimeout: must be a duration of at most 8760h"),
    ),
    (
        "every duration at its maximum",
        "rollout: {interval: 8760h, readyTimeout: 8760h}\nstateful: {volumeReadyTimeout: 8760h}\nwindows: [{schedule: \"0 0 1 1 *\", duration: 8760h}]",
        Valid,
    ),
    (
        "volume ready timeout zero",
        "stateful: {volumeReadyTimeout: 0s}",
        NotReady("spec.stateful.volumeReadyTimeout: must be longer than 0s"),
    ),
    (
        "node limit past 32 bits",
        "rollout: {maxPerNode: 5000000000}",
        Rejected("spec.rollout.maxPerNode"),
    ),
    (
        "zone limit past a million",
        "rollout: {maxPerZone: 1000001}",
        Rejected("spec.rollout.maxPerZone"),
    ),
    (
        "failures past 32 bits",
        "health: {maxFailures: 2147483648}",
        Rejected("spec.health.maxFailures"),
    ),
    (
        "window on 30 February",
        "windows: [{schedule: \"0 0 30 2 *\", duration: 1h}]",
        NotReady("never matches a date"),
    ),
    (
        "window longer than its period",
        "windows: [{schedule: \"0 * * * *\", duration: 2h}]",
        NotReady("a window must close before it opens again"),
    ),
    (
        "window duration past a year",
        "windows: [{schedule: \"0 1 * * *\", duration: 9000h}]",
        Rejected("must be a duration of at most 8760h"),
    ),
    (
        "path-like time zone",
        "windows: [{schedule: \"0 1 * * *\", duration: 1h, timeZone: \"../../../etc/localtime\"}]",
        NotReady("spec.windows[0].timeZone"),
    ),
    (
        "profile name with ..",
        "profile: {template: \"localhost/../../etc/{pod}\"}",
        Rejected("may not contain '/' or '..'"),
    ),
    (
        "profile name with a slash",
        "profile: {template: \"localhost/kubearmor/{pod}\"}",
        Rejected("may not contain '/' or '..'"),
    ),
    (
        "override profile with ..",
        "profile: {overrides: [{podSelector: {}, profile: \"localhost/a..b\"}]}",
        Rejected("may not contain '/' or '..'"),
    ),
    (
        // Valid as written; each pod whose expanded name passes 255 bytes is skipped
        // (UnloadableProfile) and never injected (unit tests of select and the webhook).
        "template that expands past 255 bytes",
        "profile: {template: \"localhost/xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx-{namespace}-{owner}-{container}\"}",
        Valid,
    ),
    (
        "template longer than a profile name",
        "profile: {template: \"localhost/xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"}",
        Rejected("spec.profile.template"),
    ),
];

/// (case, spec of an ArmorRefreshRun, answer); the operator's answer for runs is a phase
/// and reason, checked separately below.
const RUNS: &[(&str, &str, &str)] = &[
    ("no policy reference", "{}", "spec.policyRef"),
    (
        "policy reference without a name",
        "{policyRef: {}}",
        "spec.policyRef.name",
    ),
    (
        "dry run not a boolean",
        "{policyRef: {name: p}, dryRun: sometimes}",
        "spec.dryRun",
    ),
    (
        "unknown field",
        "{policyRef: {name: p}, force: true}",
        "unknown field",
    ),
];

fn policy_yaml(name: &str, spec: &str) -> String {
    let indented: String = spec.lines().map(|l| format!("  {l}\n")).collect();
    format!(
        "apiVersion: refresh.armor.dev/v1alpha1\nkind: ArmorRefreshPolicy\nmetadata: {{name: {name}}}\nspec:\n{indented}"
    )
}

async fn ready_condition(name: &str) -> Result<(String, String)> {
    let (_, out, _) = kubectl(
        &["get", "arp", name, "-o", "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}|{.status.conditions[?(@.type==\"Ready\")].message}"],
        None,
    )
    .await?;
    let (s, m) = out.split_once('|').unwrap_or(("", ""));
    Ok((s.to_string(), m.to_string()))
}

#[tokio::test]
async fn every_bad_input_gets_its_documented_answer_and_loses_nothing() -> Result<()> {
    let c = client().await?;
    install_crds(&c).await?;
    clean(&c, "armor-refresh-bad-input").await?;
    let args: Vec<String> = [
        "run",
        "--no-webhook",
        "--identity",
        "bad-input",
        "--lease-namespace",
        "default",
        "--lease-name",
        "bad-input",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut op = Process::start("bad-input", &args).await?;
    let result = async {
        // A valid policy before and after the bad ones: it must stay Ready throughout.
        kubectl(&["apply", "-f", "-"], Some(&policy_yaml("good", "rollout: {batchSize: 2}"))).await?;
        let mut pending = vec![];
        let mut valid = vec![];
        let (mut rejected, mut not_ready, mut accepted) = (0, 0, 0);
        let pid = op.pid();
        // Every mismatch is collected, so one run shows them all.
        let mut wrong: Vec<String> = vec![];
        for (i, (case, spec, answer)) in POLICIES.iter().enumerate() {
            let name = format!("bad-{i}");
            let (ok, _, err) = kubectl(&["apply", "-f", "-"], Some(&policy_yaml(&name, spec))).await?;
            match answer {
                Rejected(msg) => {
                    if ok {
                        wrong.push(format!("{case}: accepted, expected a rejection mentioning {msg:?}"));
                        pending.push((case, name, &""));
                    } else if !err.contains(msg) {
                        wrong.push(format!("{case}: rejected with {err:?}, expected {msg:?}"));
                    } else {
                        rejected += 1;
                    }
                }
                NotReady(msg) => {
                    if ok {
                        pending.push((case, name, msg));
                    } else {
                        wrong.push(format!("{case}: rejected by the API server ({}), expected Ready=False with {msg:?}", err.trim()));
                    }
                }
                Valid => {
                    if ok {
                        valid.push((case, name));
                    } else {
                        wrong.push(format!("{case}: rejected by the API server ({}), expected Ready=True", err.trim()));
                    }
                }
            }
            // The operator must survive every input: the same process, still running.
            if !op.alive() || op.pid() != pid {
                wrong.push(format!("{case}: the operator process {pid:?} is gone"));
                break;
            }
        }
        for (case, name) in valid {
            let ok = wait_for(&format!("{case}: Ready=True"), Duration::from_secs(20), || async {
                Ok((ready_condition(&name).await?.0 == "True").then_some(()))
            })
            .await;
            if ok.is_err() {
                wrong.push(format!("{case}: never Ready=True ({:?})", ready_condition(&name).await?));
            } else {
                accepted += 1;
            }
        }
        for (case, name, msg) in pending {
            let Ok((status, message)) = wait_for(&format!("{case}: Ready=False"), Duration::from_secs(20), || async {
                let (s, m) = ready_condition(&name).await?;
                Ok((s == "False").then_some((s, m)))
            })
            .await
            else {
                wrong.push(format!("{case}: accepted and never Ready=False ({:?})", ready_condition(&name).await?));
                continue;
            };
            assert_eq!(status, "False");
            if msg.is_empty() || !message.contains(msg) {
                wrong.push(format!("{case}: Ready=False with {message:?}, expected {msg:?}"));
            } else {
                not_ready += 1;
            }
        }
        for (case, spec, msg) in RUNS {
            let yaml = format!("apiVersion: refresh.armor.dev/v1alpha1\nkind: ArmorRefreshRun\nmetadata: {{name: bad-run}}\nspec: {spec}\n");
            let (ok, _, err) = kubectl(&["apply", "-f", "-"], Some(&yaml)).await?;
            if !ok && err.contains(msg) {
                rejected += 1;
            } else {
                wrong.push(format!("run {case}: {err:?}, expected {msg:?}"));
            }
        }
        assert!(wrong.is_empty(), "{} cases got another answer:\n{}", wrong.len(), wrong.join("\n"));
        // A run of a policy that does not exist, or of an invalid one, waits, saying why.
        kubectl(&["apply", "-f", "-"], Some("apiVersion: refresh.armor.dev/v1alpha1\nkind: ArmorRefreshRun\nmetadata: {name: orphan}\nspec: {policyRef: {name: no-such-policy}}\n")).await?;
        let invalid = POLICIES.iter().position(|p| matches!(p.2, NotReady(_))).expect("a NotReady case");
        kubectl(&["apply", "-f", "-"], Some(&format!("apiVersion: refresh.armor.dev/v1alpha1\nkind: ArmorRefreshRun\nmetadata: {{name: of-invalid}}\nspec: {{policyRef: {{name: bad-{invalid}}}}}\n"))).await?;
        for (run, phase, reason) in [("orphan", "Pending", "PolicyNotFound"), ("of-invalid", "Pending", "PolicyInvalid")] {
            let got = wait_for(&format!("run {run}: {phase}/{reason}"), Duration::from_secs(30), || async move {
                let (_, out, _) = kubectl(&["get", "arr", run, "-o", "jsonpath={.status.phase}/{.status.reason}"], None).await?;
                Ok((out == format!("{phase}/{reason}")).then_some(()))
            })
            .await;
            if got.is_err() {
                let (_, out, _) = kubectl(&["get", "arr", run, "-o", "yaml"], None).await?;
                panic!("run {run} is not {phase}/{reason}:\n{out}");
            }
        }
        // A policy from a newer CRD (installed before the operator is upgraded): a strategy
        // this operator does not know. It cannot decode it, so it says so on the policy,
        // once, and the policy's runs wait: the policy is not taken for deleted.
        let enum_path = "/spec/versions/0/schema/openAPIV3Schema/properties/spec/properties/rollout/properties/strategy/enum/-";
        let (ok, _, err) = kubectl(
            &["patch", "crd", "armorrefreshpolicies.refresh.armor.dev", "--type", "json", "-p",
              &format!(r#"[{{"op": "add", "path": "{enum_path}", "value": "Surge"}}]"#)],
            None,
        )
        .await?;
        assert!(ok, "{err}");
        let future = "apiVersion: refresh.armor.dev/v1alpha1\nkind: ArmorRefreshPolicy\nmetadata: {name: from-the-future}\nspec: {rollout: {strategy: Surge}}\n";
        wait_for("a policy of the newer CRD to be accepted", Duration::from_secs(20), || async {
            Ok(kubectl(&["apply", "-f", "-"], Some(future)).await?.0.then_some(()))
        })
        .await?;
        kubectl(&["apply", "-f", "-"], Some("apiVersion: refresh.armor.dev/v1alpha1\nkind: ArmorRefreshRun\nmetadata: {name: of-the-future}\nspec: {policyRef: {name: from-the-future}}\n")).await?;
        let message = wait_for("the undecodable policy: Ready=False", Duration::from_secs(30), || async {
            let (s, m) = ready_condition("from-the-future").await?;
            Ok((s == "False").then_some(m))
        })
        .await?;
        assert!(message.contains("cannot be read") && message.contains("Surge"), "{message}");
        wait_for("its run: Pending/PolicyInvalid", Duration::from_secs(30), || async {
            let (_, out, _) = kubectl(&["get", "arr", "of-the-future", "-o", "jsonpath={.status.phase}/{.status.reason}"], None).await?;
            Ok((out == "Pending/PolicyInvalid").then_some(()))
        })
        .await?;
        // Written once, not on every pass (the runs and policies around it keep waking the operator).
        let version = || async {
            let (_, out, _) = kubectl(&["get", "arp", "from-the-future", "-o", "jsonpath={.metadata.resourceVersion}"], None).await?;
            Result::<String>::Ok(out)
        };
        let before = version().await?;
        kubectl(&["annotate", "arp", "good", "touched=1", "--overwrite"], None).await?;
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert_eq!(version().await?, before, "the undecodable policy's status was written again");
        kubectl(&["delete", "arr", "of-the-future"], None).await?;
        kubectl(&["delete", "arp", "from-the-future"], None).await?;
        install_crds(&c).await?;

        let (status, _) = ready_condition("good").await?;
        assert_eq!(status, "True", "the valid policy stayed Ready");
        assert!(op.alive() && op.pid() == pid, "the operator process survived every input");
        println!("FIGURES bad input: {} policy cases, {} run cases: {rejected} rejected by the API server, {not_ready} Ready=False by the operator, {accepted} extremes accepted and Ready, 2 runs waiting with their reason, 1 policy of a newer CRD reported as unreadable; operator pid {pid:?} up throughout", POLICIES.len(), RUNS.len());
        Result::<()>::Ok(())
    }
    .await;
    let log = op.log_text();
    let _ = op.terminate().await;
    clean(&c, "armor-refresh-bad-input").await?;
    assert!(!log.contains("panicked"), "the operator panicked:\n{log}");
    result
}
