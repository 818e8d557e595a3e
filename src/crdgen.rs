//! The CustomResourceDefinitions, generated from the Rust types.

use kube::CustomResourceExt;

use crate::api::{ArmorRefreshPolicy, ArmorRefreshRun};

/// `(file name under crds/, YAML)` for each CRD.
pub fn crds() -> Vec<(&'static str, String)> {
    vec![
        (
            "refresh.armor.dev_armorrefreshpolicies.yaml",
            to_yaml(&ArmorRefreshPolicy::crd()),
        ),
        (
            "refresh.armor.dev_armorrefreshruns.yaml",
            to_yaml(&ArmorRefreshRun::crd()),
        ),
    ]
}

fn to_yaml<T: serde::Serialize>(v: &T) -> String {
    // Serialising a CRD built by kube-derive cannot fail: it is plain data.
    let mut v = serde_json::to_value(v).expect("CRD serialises");
    if let Some(schema) = v.pointer_mut("/spec/versions/0/schema/openAPIV3Schema") {
        // The kind's documentation is the spec type's; say it at the top, where `kubectl explain KIND` looks.
        if let Some(doc) = schema.pointer("/properties/spec/description").cloned() {
            schema["description"] = doc;
        }
        reflow(schema);
    }
    serde_saphyr::to_string(&v).expect("CRD serialises")
}

/// Joins the lines of each paragraph of every description, so `kubectl explain` wraps
/// the text itself instead of keeping our source line breaks.
fn reflow(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, val) in m.iter_mut() {
                if k == "description" {
                    if let serde_json::Value::String(s) = val {
                        *s = s
                            .split("\n\n")
                            .map(|p| p.split('\n').map(str::trim).collect::<Vec<_>>().join(" "))
                            .collect::<Vec<_>>()
                            .join("\n\n");
                    }
                } else {
                    reflow(val);
                }
            }
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(reflow),
        _ => {}
    }
}

/// Both CRDs as one multi-document YAML stream (what `armor-refresh crd` prints).
pub fn all_yaml() -> String {
    crds()
        .into_iter()
        .map(|(_, y)| format!("---\n{y}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// crds/ and the Helm chart's copy must be exactly what the types generate: run
    /// `make crds` after changing the API.
    #[test]
    fn crds_directories_match_the_types() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        for dir in ["crds", "charts/armor-refresh/files/crds"] {
            for (name, yaml) in crds() {
                let on_disk =
                    std::fs::read_to_string(root.join(dir).join(name)).unwrap_or_default();
                assert!(on_disk == yaml, "{dir}/{name} is stale: run `make crds`");
            }
            let files = std::fs::read_dir(root.join(dir)).unwrap().count();
            assert_eq!(
                files,
                crds().len(),
                "{dir}/ holds exactly the generated files"
            );
        }
    }

    #[test]
    fn crds_carry_names_columns_and_rules() {
        let p = serde_json::to_value(ArmorRefreshPolicy::crd()).unwrap();
        let r = serde_json::to_value(ArmorRefreshRun::crd()).unwrap();
        assert_eq!(p["spec"]["scope"], "Cluster");
        assert_eq!(p["spec"]["names"]["shortNames"][0], "arp");
        assert_eq!(r["spec"]["names"]["shortNames"][0], "arr");
        assert_eq!(p["spec"]["names"]["categories"][0], "armor");
        assert_eq!(r["spec"]["names"]["categories"][0], "armor");
        let cols = |v: &serde_json::Value| -> Vec<String> {
            v["spec"]["versions"][0]["additionalPrinterColumns"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["name"].as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(
            cols(&r),
            [
                "Policy",
                "Phase",
                "Progress",
                "Disrupted",
                "Batch",
                "Reason",
                "Next",
                "Age"
            ]
        );
        assert_eq!(
            cols(&p),
            [
                "Trigger",
                "Targets",
                "Pending",
                "Active run",
                "Ready",
                "Age"
            ]
        );
        assert!(r["spec"]["versions"][0]["subresources"]["status"].is_object());
        assert!(p["spec"]["versions"][0]["subresources"]["status"].is_object());
        let text = serde_json::to_string(&p).unwrap();
        for needle in [
            "x-kubernetes-validations",
            "spec.rollout.batchSize",
            "spec.health.maxFailures",
            "spec.profile: format Field or Both needs injectAt: Create",
            "spec.profile.enforcingNodeSelector: with injectAt Create",
            "kubearmor-{namespace}-{owner}-{container}",
        ] {
            assert!(text.contains(needle), "policy CRD lacks {needle}");
        }
        assert!(
            serde_json::to_string(&r)
                .unwrap()
                .contains("spec.policyRef is immutable")
        );
    }
}
