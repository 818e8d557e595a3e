//! The crate, the chart's `version` and its `appVersion` move together (CHANGELOG.md): the
//! image tag defaults to the appVersion, and a release is one version of all three.

#[test]
fn chart_version_app_version_and_crate_version_agree() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("charts/armor-refresh/Chart.yaml");
    let text = std::fs::read_to_string(&path).expect("Chart.yaml");
    let chart = &armor_refresh::yaml::documents(&text).expect("Chart.yaml is YAML")[0];
    let crate_version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        chart["version"].as_str(),
        Some(crate_version),
        "Chart.yaml version vs Cargo.toml"
    );
    // A string in Chart.yaml (quoted), as Helm's lint wants it.
    assert_eq!(
        chart["appVersion"].as_str(),
        Some(crate_version),
        "Chart.yaml appVersion vs Cargo.toml"
    );
    let changelog = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("CHANGELOG.md"),
    )
    .expect("CHANGELOG.md");
    assert!(
        changelog.contains(&format!("\n## {crate_version}")),
        "CHANGELOG.md has no entry for {crate_version}"
    );
}
