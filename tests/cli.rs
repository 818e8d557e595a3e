//! The binary as users run it: `crd` and `plan` on the shipped examples.

use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_armor-refresh"))
}

fn root(p: &str) -> String {
    format!("{}/{p}", env!("CARGO_MANIFEST_DIR"))
}

fn plan(policy: &str, snapshot: &str, output: &str) -> std::process::Output {
    bin()
        .args([
            "plan",
            "--policy",
            &root(policy),
            "--snapshot",
            &root(snapshot),
            "-o",
            output,
            "--now",
            "2026-11-26T12:00:00Z",
        ])
        .output()
        .unwrap()
}

#[test]
fn crd_prints_exactly_the_crds_directory() {
    let out = bin().arg("crd").output().unwrap();
    assert!(out.status.success());
    let printed = String::from_utf8(out.stdout).unwrap();
    let mut expected = String::new();
    let mut files: Vec<_> = std::fs::read_dir(root("crds"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for f in files {
        expected.push_str("---\n");
        expected.push_str(&std::fs::read_to_string(f).unwrap());
    }
    assert_eq!(printed, expected);
}

#[test]
fn plan_on_the_example_snapshot_in_every_format() {
    let json = plan(
        "examples/policy-default.yaml",
        "examples/snapshot.yaml",
        "json",
    );
    assert!(
        json.status.success(),
        "{}",
        String::from_utf8_lossy(&json.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["targets"], 11);
    assert_eq!(v["batchSize"], 5);
    assert_eq!(
        v["skipped"]["ExcludedNamespace"], 7,
        "kube-system and storage-system"
    );
    assert_eq!(v["skipped"]["BarePod"], 1);
    assert_eq!(v["skipped"]["Compliant"], 1);
    assert_eq!(v["skipped"]["Completed"], 1);
    // KubeArmor's agents and relay, and the pods on nodes without an agent or on BPF-LSM.
    assert_eq!(v["skipped"]["KubeArmorPod"], 4);
    assert_eq!(v["skipped"]["NodeNotEnforcing"], 4);
    let batches = v["batches"].as_array().unwrap();
    assert_eq!(batches.len(), 3);
    let all: Vec<&str> = batches
        .iter()
        .flat_map(|b| b.as_array().unwrap())
        .map(|p| p.as_str().unwrap())
        .collect();
    assert_eq!(all.len(), 11);
    // The StatefulSet goes one pod per batch, the leader (db-2) last.
    let db: Vec<usize> = ["data/db-1", "data/db-0", "data/db-2"]
        .iter()
        .map(|p| {
            batches
                .iter()
                .position(|b| b.as_array().unwrap().iter().any(|x| x == p))
                .unwrap()
        })
        .collect();
    assert_eq!(db, vec![0, 1, 2]);
    assert!(v["estimatedDuration"].is_string());

    let yaml = plan(
        "examples/policy-default.yaml",
        "examples/snapshot.yaml",
        "yaml",
    );
    assert!(yaml.status.success());
    let y: serde_json::Value = serde_saphyr::from_slice(&yaml.stdout).unwrap();
    assert_eq!(y["targets"], 11);

    let table = plan(
        "examples/policy-zones-night.yaml",
        "examples/snapshot.yaml",
        "table",
    );
    assert!(table.status.success());
    let t = String::from_utf8(table.stdout).unwrap();
    assert!(t.contains("Policy zones-night: 11 targets"), "{t}");
    assert!(t.contains("NodeNotEnforcing=4"), "{t}");
    assert!(t.contains("Europe/Berlin"), "{t}");
    assert!(
        t.contains("done by 2026-11-27T00:11:00Z"),
        "the night window delays the start: {t}"
    );
}

#[test]
fn plan_takes_the_operators_agent_selector_and_skipped_namespaces() {
    let run = |extra: &[&str]| -> serde_json::Value {
        let mut args = vec![
            "plan".to_string(),
            "--policy".into(),
            root("examples/policy-default.yaml"),
            "--snapshot".into(),
            root("examples/snapshot.yaml"),
            "-o".into(),
            "json".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let out = bin().args(&args).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    assert_eq!(run(&[])["targets"], 11);
    // No pod looks like an agent: no node loads profiles.
    let v = run(&["--agent-selector", "app=no-such-agent"]);
    assert_eq!(v["targets"], 0);
    assert_eq!(v["skipped"]["NodeNotEnforcing"], 17, "{v}");
    // The webhook skips shop: its pods would never get their profile.
    let v = run(&["--webhook-skip-namespaces", "kube-system,shop"]);
    assert!(v["skipped"]["NotConvergent"].as_u64().unwrap() > 0, "{v}");
    assert!(v["targets"].as_u64().unwrap() < 11);
    let bad = bin()
        .args([
            "plan",
            "--policy",
            &root("examples/policy-default.yaml"),
            "--snapshot",
            &root("examples/snapshot.yaml"),
            "--agent-selector",
            "a=b/c",
        ])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--agent-selector"));
}

#[test]
fn broken_inputs_give_a_one_line_error_and_non_zero_exit() {
    let dir = std::env::temp_dir().join(format!("armor-refresh-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let broken = dir.join("broken.yaml");
    std::fs::write(
        &broken,
        "kind: List\nitems: [ {kind: Pod, metadata: {name: x}, spec: {containers: 3}} ]\n",
    )
    .unwrap();
    let garbage = dir.join("garbage.yaml");
    std::fs::write(&garbage, [0xff, 0xfe, 0x00, 0x01]).unwrap();
    let cases: Vec<Vec<String>> = vec![
        vec![
            "--policy".into(),
            root("examples/policy-default.yaml"),
            "--snapshot".into(),
            broken.display().to_string(),
        ],
        vec![
            "--policy".into(),
            root("examples/policy-default.yaml"),
            "--snapshot".into(),
            garbage.display().to_string(),
        ],
        vec![
            "--policy".into(),
            root("examples/policy-default.yaml"),
            "--snapshot".into(),
            "/nonexistent/snap.yaml".into(),
        ],
        vec![
            "--policy".into(),
            root("examples/snapshot.yaml"),
            "--snapshot".into(),
            root("examples/snapshot.yaml"),
        ],
        vec![
            "--policy".into(),
            root("examples/policy-default.yaml"),
            "--snapshot".into(),
            root("examples/snapshot.yaml"),
            "--batch-duration".into(),
            "soon".into(),
        ],
    ];
    for args in cases {
        let out = bin().arg("plan").args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
        assert!(err.starts_with("error: "), "{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

const OPERATING: [&str; 9] = [
    "run",
    "get",
    "watch",
    "pause",
    "resume",
    "reset-breaker",
    "plan",
    "crd",
    "completion",
];

#[test]
fn every_command_shows_an_example_in_its_help() {
    for cmd in OPERATING {
        let out = bin().args([cmd, "--help"]).output().unwrap();
        assert!(out.status.success(), "{cmd} --help");
        let help = String::from_utf8(out.stdout).unwrap();
        let examples = help
            .split_once("Examples:")
            .unwrap_or_else(|| panic!("{cmd} --help has no Examples:\n{help}"))
            .1;
        assert!(
            examples.contains(&format!("armor {cmd}"))
                || examples.contains(&format!("armor-refresh {cmd}")),
            "{cmd}'s example does not run it:\n{help}"
        );
    }
}

#[test]
fn completions_cover_every_command_for_each_shell() {
    for shell in ["bash", "zsh", "fish"] {
        let out = bin().args(["completion", shell]).output().unwrap();
        assert!(out.status.success(), "{shell}");
        let script = String::from_utf8(out.stdout).unwrap();
        for cmd in OPERATING {
            assert!(script.contains(cmd), "{shell} completion lacks {cmd}");
        }
    }
    let out = bin().args(["completion", "tcsh"]).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "an unknown shell is a usage error"
    );
}

#[test]
fn as_kubectl_armor_it_calls_itself_kubectl_armor() {
    let dir = std::env::temp_dir().join(format!("armor-plugin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let plugin = dir.join("kubectl-armor");
    let _ = std::fs::remove_file(&plugin);
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_armor-refresh"), &plugin).unwrap();
    let out = Command::new(&plugin).arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    assert!(help.contains("Usage: kubectl armor"), "{help}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn cluster_commands_fail_in_one_line_without_a_cluster() {
    let dir = std::env::temp_dir().join(format!("armor-nocluster-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // An API server that is not there (a loopback port nothing listens on).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters: [{{name: c, cluster: {{server: 'http://127.0.0.1:{port}'}}}}]\nusers: [{{name: u, user: {{}}}}]\ncontexts: [{{name: x, context: {{cluster: c, user: u}}}}]\ncurrent-context: x\n"
        ),
    )
    .unwrap();
    let k = kubeconfig.display().to_string();
    let garbage = dir.join("garbage");
    std::fs::write(&garbage, "{ not: [yaml").unwrap();
    let g = garbage.display().to_string();
    let cases: Vec<Vec<&str>> = vec![
        vec!["get", "--kubeconfig", &k],
        vec!["watch", "r1", "--kubeconfig", &k, "--timeout", "5s"],
        vec!["pause", "r1", "--kubeconfig", &k],
        vec!["resume", "r1", "--kubeconfig", &k],
        vec!["reset-breaker", "r1", "--kubeconfig", &k],
        vec!["plan", "--live", "--policy-name", "p", "--kubeconfig", &k],
        vec!["get", "--kubeconfig", "/nonexistent/kubeconfig"],
        vec!["get", "--kubeconfig", &g],
        vec!["get", "--kubeconfig", &k, "--context", "nope"],
        vec!["watch", "r1", "--kubeconfig", &k, "--interval", "soon"],
        // The operator honours them too: never the default cluster instead of the named.
        vec![
            "run",
            "--no-webhook",
            "--kubeconfig",
            "/nonexistent/kubeconfig",
        ],
        vec![
            "run",
            "--no-webhook",
            "--kubeconfig",
            &k,
            "--context",
            "nope",
        ],
        vec![
            "webhook",
            "--self-signed",
            "--kubeconfig",
            "/nonexistent/kubeconfig",
        ],
    ];
    for args in cases {
        let out = bin().args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(
            err.trim_end().lines().count(),
            1,
            "{args:?}: one line: {err}"
        );
        assert!(err.starts_with("error: "), "{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    // Usage errors: a snapshot and --live, or neither.
    for args in [
        vec!["plan", "--policy", "p.yaml"],
        vec![
            "plan",
            "--policy",
            "p.yaml",
            "--snapshot",
            "s.yaml",
            "--live",
        ],
        vec!["plan", "--policy-name", "p", "--snapshot", "s.yaml"],
    ] {
        let out = bin().args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_webhook_url_without_the_ca_to_register_is_refused_at_start() {
    // With certificate files the operator does not know the CA that signed them, so it
    // could not create a configuration the API server trusts: refused before any connection.
    for cmd in ["run", "webhook"] {
        let out = bin()
            .args([
                cmd,
                "--tls-cert",
                "tls.crt",
                "--tls-key",
                "tls.key",
                "--webhook-config",
                "wh",
                "--webhook-url",
                "https://127.0.0.1:8443/mutate",
            ])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{cmd}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.starts_with("error: --webhook-url needs --self-signed"),
            "{cmd}: {err}"
        );
    }
}
