//! The chart's CRD lifecycle with real helm on the real API server: chart 0.1.0 (CRDs in its
//! crds/ folder, not owned by its release) upgraded to this chart after the README's
//! migration block, a CRD change rolled out by `helm upgrade`, CRDs and policies left by
//! `helm uninstall`; the upgrade refused without the migration; a first install without CRDs.
//!
//! The operator's pods land on kwok nodes and never run: only the CRDs matter here. The
//! webhook is off so the API server calls no webhook that cannot answer.

use std::path::{Path, PathBuf};
use std::time::Duration;

use armor_refresh::api::ArmorRefreshPolicy;
use armor_refresh_e2e::chart::documents as docs;
use armor_refresh_e2e::chart::helm;
use armor_refresh_e2e::{Result, chart, client, fresh_namespace, kubectl, root, wait_for};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams};
use kube::{Client, ResourceExt};
use serde_json::Value;

/// The commit whose chart is version 0.1.0, the last with CRDs in crds/.
const PREVIOUS: &str = "931b163";
const CHART: &str = "charts/armor-refresh";
const CRDS: [&str; 2] = [
    "armorrefreshpolicies.refresh.armor.dev",
    "armorrefreshruns.refresh.armor.dev",
];

/// The CRDs are cluster-wide: one test at a time in this binary.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// `helm install RELEASE CHART -n NS --set SET`; returns what helm printed (its NOTES).
fn install(release: &str, chart: &str, ns: &str, set: &str) -> Result<String> {
    helm(&["install", release, chart, "-n", ns, "--set", set])
}

fn tempdir(what: &str) -> Result<PathBuf> {
    let d = std::env::temp_dir().join(format!(
        "armor-refresh-{what}-{}-{}",
        std::process::id(),
        chrono::Utc::now().timestamp_millis()
    ));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}

/// Chart 0.1.0 from git history, extracted into a temporary directory; its path.
fn previous_chart() -> Result<PathBuf> {
    let have = std::process::Command::new("git")
        .args(["cat-file", "-e", &format!("{PREVIOUS}^{{commit}}")])
        .current_dir(root())
        .status()?;
    if !have.success() {
        return Err(format!(
            "commit {PREVIOUS} (chart 0.1.0) is not in this checkout's git history: the upgrade test needs it \
             (a shallow clone? `git fetch --unshallow`)"
        )
        .into());
    }
    let dir = tempdir("chart-0.1.0")?;
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "git archive {PREVIOUS} {CHART} | tar -x -C '{}'",
            dir.display()
        ))
        .current_dir(root())
        .output()?;
    if !out.status.success() {
        return Err(format!(
            "git archive {PREVIOUS}: {}",
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    let chart = dir.join(CHART);
    let meta = &docs(&std::fs::read_to_string(chart.join("Chart.yaml"))?)?[0];
    assert_eq!(meta["version"], "0.1.0", "{PREVIOUS} holds chart 0.1.0");
    assert!(chart.join("crds").is_dir(), "0.1.0 ships its CRDs in crds/");
    Ok(chart)
}

fn path(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 temporary path")
}

/// Deletes both CRDs (and with them every policy and run) and waits until they are gone:
/// each test starts from a cluster that never had them.
async fn no_crds(c: &Client) -> Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(c.clone());
    for name in CRDS {
        match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(format!("deleting CRD {name}: {e}").into()),
        }
    }
    for name in CRDS {
        let api = api.clone();
        let waited = wait_for(
            &format!("CRD {name} to be deleted"),
            Duration::from_secs(120),
            || {
                let api = api.clone();
                async move { Ok(api.get_opt(name).await?.is_none().then_some(())) }
            },
        )
        .await;
        if let Err(e) = waited {
            let left = api
                .get_opt(name)
                .await?
                .map(|c| (c.metadata.finalizers, c.status));
            return Err(format!("{e}: {left:?}").into());
        }
    }
    // Cluster-scoped objects of a release named armor-refresh that other suites apply
    // without Helm (chart::install_rbac_and_webhook): Helm would refuse to adopt them.
    kubectl(
        &[
            "delete",
            "clusterrole,clusterrolebinding,mutatingwebhookconfiguration",
            chart::RELEASE,
            "--ignore-not-found",
        ],
        None,
    )
    .await?;
    Ok(())
}

async fn crd(c: &Client, name: &str) -> Result<CustomResourceDefinition> {
    Ok(Api::<CustomResourceDefinition>::all(c.clone())
        .get(name)
        .await?)
}

/// Waits until kubectl resolves the policies' kind, as the next command of a user would.
async fn served() -> Result<()> {
    wait_for(
        "discovery to serve armorrefreshpolicies",
        Duration::from_secs(30),
        || async {
            let (ok, _, _) = kubectl(&["get", "armorrefreshpolicies"], None).await?;
            Ok(ok.then_some(()))
        },
    )
    .await
}

/// The CRD's Helm ownership, as Helm's checkOwnership reads it.
fn owner(c: &CustomResourceDefinition) -> (Option<&str>, Option<&str>, Option<&str>) {
    (
        c.labels()
            .get("app.kubernetes.io/managed-by")
            .map(String::as_str),
        c.annotations()
            .get("meta.helm.sh/release-name")
            .map(String::as_str),
        c.annotations()
            .get("meta.helm.sh/release-namespace")
            .map(String::as_str),
    )
}

fn keep(c: &CustomResourceDefinition) -> Option<&str> {
    c.annotations()
        .get("helm.sh/resource-policy")
        .map(String::as_str)
}

/// The live CRD's versions (schema, columns, subresources) equal those of `dir`/files/crds.
async fn assert_schema_of(c: &Client, chart_dir: &Path) -> Result<()> {
    for e in std::fs::read_dir(chart_dir.join("files/crds"))? {
        let want = &docs(&std::fs::read_to_string(e?.path())?)?[0];
        let name = want["metadata"]["name"]
            .as_str()
            .ok_or("a CRD without name")?;
        let live = serde_json::to_value(crd(c, name).await?)?;
        assert!(
            chart::numbers_as_floats(&live["spec"]["versions"])
                == chart::numbers_as_floats(&want["spec"]["versions"]),
            "{name}: the live schema is not the chart's"
        );
        // listKind is the API server's default, not generated.
        let mut names = live["spec"]["names"].clone();
        names.as_object_mut().map(|n| n.remove("listKind"));
        assert_eq!(names, want["spec"]["names"], "{name}");
    }
    Ok(())
}

async fn policy_uid(c: &Client, name: &str) -> Result<Option<String>> {
    Ok(Api::<ArmorRefreshPolicy>::all(c.clone())
        .get_opt(name)
        .await?
        .and_then(|p| p.uid()))
}

/// The ```sh block of the README that holds `what`, run as written (helm from the tools).
fn run_readme_block(what: &str) -> Result<String> {
    let readme = std::fs::read_to_string(root().join("README.md"))?;
    let block = readme
        .split("```sh\n")
        .skip(1)
        .filter_map(|b| b.split_once("\n```").map(|(b, _)| b))
        .find(|b| b.contains(what))
        .ok_or(format!("README.md has no sh block with {what}"))?;
    let tools = chart::tool("helm")?;
    let tools = tools.parent().ok_or("helm has no directory")?;
    let out = std::process::Command::new("bash")
        .args(["-euo", "pipefail", "-c", block])
        .env(
            "PATH",
            format!(
                "{}:{}",
                tools.display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .current_dir(root())
        .output()?;
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success(),
        "the README's block failed:\n{block}\n{stdout}{stderr}"
    );
    Ok(format!("{stdout}{stderr}"))
}

/// 0.1.0 installed; the README's migration block (its label and annotations, then
/// `helm upgrade`); the CRDs owned, kept and of the chart's schema, updated in place; a CRD
/// change rolled out by an upgrade; `helm uninstall` leaves CRDs and policies.
#[tokio::test]
async fn upgrade_from_0_1_0_after_the_migration_owns_upgrades_and_keeps_the_crds() -> Result<()> {
    let _serial = SERIAL.lock().await;
    let c = client().await?;
    let previous = previous_chart()?;
    no_crds(&c).await?;
    // The README's block names release armor-refresh in namespace armor-refresh.
    let (release, ns) = ("armor-refresh", "armor-refresh");
    fresh_namespace(&c, ns).await?;
    install(release, path(&previous), ns, "webhook.enabled=false")?;
    served().await?;
    let before: Vec<CustomResourceDefinition> = {
        let mut v = vec![];
        for name in CRDS {
            v.push(crd(&c, name).await?);
        }
        v
    };
    for b in &before {
        assert_eq!(
            owner(b),
            (None, None, None),
            "0.1.0's CRDs are not its release's"
        );
        assert_eq!(keep(b), None);
    }
    // A user's policy, beside the chart's default one.
    let example = std::fs::read_to_string(root().join("examples/policy-zones-night.yaml"))?;
    armor_refresh_e2e::apply(&example).await?;
    let policy = docs(&example)?[0]["metadata"]["name"]
        .as_str()
        .ok_or("the example has no name")?
        .to_string();
    let user_uid = policy_uid(&c, &policy).await?.ok_or("policy not created")?;
    let default_uid = policy_uid_of_default(&c).await?;

    let out = run_readme_block("meta.helm.sh/release-name")?;
    eprintln!("README migration block:\n{out}");

    for (name, b) in CRDS.iter().zip(&before) {
        let now = crd(&c, name).await?;
        assert_eq!(
            owner(&now),
            (Some("Helm"), Some(release), Some(ns)),
            "{name} is not the release's"
        );
        assert_eq!(keep(&now), Some("keep"), "{name}");
        assert_eq!(
            now.labels().get("helm.sh/chart").map(String::as_str),
            Some("armor-refresh-0.2.0"),
            "{name} carries the new chart's labels"
        );
        assert_eq!(now.uid(), b.uid(), "{name} was recreated, not updated");
    }
    assert_schema_of(&c, &root().join(CHART)).await?;
    assert_eq!(policy_uid(&c, &policy).await?, Some(user_uid.clone()));
    assert_eq!(
        policy_uid_of_default(&c).await?,
        default_uid,
        "the default policy was recreated"
    );
    // --reset-then-reuse-values kept the install's values: still no webhook.
    let (_, hooks, _) = kubectl(
        &["get", "mutatingwebhookconfigurations", "-o", "name"],
        None,
    )
    .await?;
    assert!(!hooks.contains("armor-refresh"), "{hooks}");

    // A CRD change (a new printer column) is rolled out by helm upgrade.
    let changed = tempdir("chart-changed")?;
    let status = std::process::Command::new("cp")
        .args(["-r", CHART])
        .arg(&changed)
        .current_dir(root())
        .status()?;
    assert!(status.success());
    let changed = changed.join("armor-refresh");
    let file = changed.join(format!(
        "files/crds/refresh.armor.dev_{}.yaml",
        "armorrefreshpolicies"
    ));
    let mut doc = docs(&std::fs::read_to_string(&file)?)?.remove(0);
    doc["spec"]["versions"][0]["additionalPrinterColumns"]
        .as_array_mut()
        .ok_or("no printer columns")?
        .push(serde_json::json!({"name": "Upgraded", "type": "string", "jsonPath": ".metadata.name", "priority": 1}));
    std::fs::write(&file, serde_saphyr::to_string(&doc)?)?;
    let column = |c: &CustomResourceDefinition| {
        c.spec.versions[0]
            .additional_printer_columns
            .iter()
            .flatten()
            .any(|col| col.name == "Upgraded")
    };
    let gen0 = crd(&c, CRDS[0]).await?.metadata.generation;
    helm(&[
        "upgrade",
        release,
        path(&changed),
        "-n",
        ns,
        "--reset-then-reuse-values",
    ])?;
    let after = crd(&c, CRDS[0]).await?;
    assert!(column(&after), "the new column was not applied");
    assert!(
        after.metadata.generation > gen0,
        "generation {:?} after {gen0:?}",
        after.metadata.generation
    );
    assert_schema_of(&c, &changed).await?;
    // And back: what the previous revision added and this one lacks is removed.
    let gen1 = after.metadata.generation;
    helm(&[
        "upgrade",
        release,
        CHART,
        "-n",
        ns,
        "--reset-then-reuse-values",
    ])?;
    let back = crd(&c, CRDS[0]).await?;
    assert!(!column(&back), "the column outlived its chart");
    assert!(back.metadata.generation > gen1);
    assert_schema_of(&c, &root().join(CHART)).await?;

    // helm uninstall: the CRDs and the user's policy stay, the chart's default policy goes.
    let out = helm(&["uninstall", release, "-n", ns])?;
    eprintln!("helm uninstall: {out}");
    for (name, b) in CRDS.iter().zip(&before) {
        let now = crd(&c, name).await?;
        assert_eq!(now.uid(), b.uid(), "{name} was deleted by helm uninstall");
        assert!(
            now.metadata.deletion_timestamp.is_none(),
            "{name} is being deleted"
        );
    }
    assert_eq!(policy_uid(&c, &policy).await?, Some(user_uid));
    let (ok, _, err) = kubectl(&["get", "armorrefreshpolicy", &policy], None).await?;
    assert!(ok, "the policy is not served after uninstall: {err}");
    assert_eq!(
        policy_uid_of_default(&c).await?,
        None,
        "the release's default policy"
    );

    let _ = std::fs::remove_dir_all(changed.parent().unwrap_or(&changed));
    let _ = std::fs::remove_dir_all(previous.ancestors().nth(2).unwrap_or(&previous));
    let _ = Api::<ArmorRefreshPolicy>::all(c.clone())
        .delete(&policy, &DeleteParams::default())
        .await;
    Ok(())
}

async fn policy_uid_of_default(c: &Client) -> Result<Option<String>> {
    policy_uid(c, "default").await
}

/// Without the migration Helm refuses the upgrade with its ownership error (what the README
/// quotes) and changes nothing; `--take-ownership` is the other way through.
#[tokio::test]
async fn upgrade_from_0_1_0_without_the_migration_is_refused_by_helm() -> Result<()> {
    let _serial = SERIAL.lock().await;
    let c = client().await?;
    let previous = previous_chart()?;
    no_crds(&c).await?;
    let (release, ns) = ("unmigrated", "chart-upgrade-unmigrated");
    fresh_namespace(&c, ns).await?;
    install(
        release,
        path(&previous),
        ns,
        "webhook.enabled=false,defaultPolicy.enabled=false",
    )?;
    served().await?;
    let (ok, _, err) = chart::run(
        "helm",
        &[
            "upgrade",
            release,
            CHART,
            "-n",
            ns,
            "--reset-then-reuse-values",
        ],
    )?;
    assert!(!ok, "helm upgrade adopted CRDs it does not own");
    for part in [
        "CustomResourceDefinition \"armorrefreshpolicies.refresh.armor.dev\" in namespace \"\" exists and cannot be imported into the current release: invalid ownership metadata",
        "missing key \"app.kubernetes.io/managed-by\": must be set to \"Helm\"",
        "missing key \"meta.helm.sh/release-name\": must be set to \"unmigrated\"",
        "missing key \"meta.helm.sh/release-namespace\": must be set to \"chart-upgrade-unmigrated\"",
    ] {
        assert!(err.contains(part), "not in Helm's error: {part}\n{err}");
    }
    // The README quotes this error.
    let readme = std::fs::read_to_string(root().join("README.md"))?;
    assert!(
        readme
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .contains(
                "exists and cannot be imported into the current release: invalid ownership metadata"
            )
    );
    for name in CRDS {
        let now = crd(&c, name).await?;
        assert_eq!(
            owner(&now),
            (None, None, None),
            "{name} changed by a refused upgrade"
        );
        assert_eq!(keep(&now), None);
    }
    // Refused before a revision was recorded: 0.1.0 stays deployed.
    let history: Value =
        serde_json::from_str(&helm(&["history", release, "-n", ns, "-o", "json"])?)?;
    let revisions = history.as_array().ok_or("helm history is not a list")?;
    assert_eq!(revisions.len(), 1, "{history}");
    assert_eq!(revisions[0]["chart"], "armor-refresh-0.1.0");
    assert_eq!(revisions[0]["status"], "deployed");

    // Helm 3.17+: adopt without labelling by hand.
    helm(&[
        "upgrade",
        release,
        CHART,
        "-n",
        ns,
        "--reset-then-reuse-values",
        "--take-ownership",
    ])?;
    for name in CRDS {
        let now = crd(&c, name).await?;
        assert_eq!(
            owner(&now),
            (Some("Helm"), Some(release), Some(ns)),
            "{name}"
        );
        assert_eq!(keep(&now), Some("keep"));
    }
    helm(&["uninstall", release, "-n", ns])?;
    for name in CRDS {
        assert!(crd(&c, name).await?.metadata.deletion_timestamp.is_none());
    }
    let _ = std::fs::remove_dir_all(previous.ancestors().nth(2).unwrap_or(&previous));
    Ok(())
}

/// A first install on a cluster without the CRDs: they are created and owned, the default
/// policy waits for the next upgrade (and the notes say so); crds.enabled=false leaves CRDs
/// alone and creates the policy at once.
#[tokio::test]
async fn first_install_creates_the_crds_and_the_next_upgrade_the_default_policy() -> Result<()> {
    let _serial = SERIAL.lock().await;
    let c = client().await?;
    no_crds(&c).await?;
    let (release, ns) = ("fresh", "chart-upgrade-fresh");
    fresh_namespace(&c, ns).await?;
    let notes = install(release, CHART, ns, "webhook.enabled=false")?;
    assert!(
        notes.contains("is not created yet") && notes.contains("--reset-then-reuse-values"),
        "{notes}"
    );
    served().await?;
    for name in CRDS {
        let now = crd(&c, name).await?;
        assert_eq!(
            owner(&now),
            (Some("Helm"), Some(release), Some(ns)),
            "{name}"
        );
        assert_eq!(keep(&now), Some("keep"));
    }
    assert_schema_of(&c, &root().join(CHART)).await?;
    assert_eq!(policy_uid_of_default(&c).await?, None);
    helm(&[
        "upgrade",
        release,
        CHART,
        "-n",
        ns,
        "--reset-then-reuse-values",
    ])?;
    assert!(
        policy_uid_of_default(&c).await?.is_some(),
        "the upgrade did not create the default policy"
    );
    helm(&["uninstall", release, "-n", ns])?;
    assert_eq!(policy_uid_of_default(&c).await?, None);

    // CRDs managed by someone else (still annotated for the release above): untouched.
    let before: Vec<CustomResourceDefinition> = {
        let mut v = vec![];
        for name in CRDS {
            v.push(crd(&c, name).await?);
        }
        v
    };
    let (release, ns) = ("own-crds", "chart-upgrade-own-crds");
    fresh_namespace(&c, ns).await?;
    install(
        release,
        CHART,
        ns,
        "webhook.enabled=false,crds.enabled=false",
    )?;
    let manifest = helm(&["get", "manifest", release, "-n", ns])?;
    assert!(!manifest.contains("kind: CustomResourceDefinition"));
    assert!(
        policy_uid_of_default(&c).await?.is_some(),
        "the policy, at once"
    );
    for b in &before {
        let now = crd(&c, &b.name_any()).await?;
        assert_eq!(now.metadata.resource_version, b.metadata.resource_version);
    }
    helm(&["uninstall", release, "-n", ns])?;
    Ok(())
}
