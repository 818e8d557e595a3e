//! The pod as the core reads it: only the fields compliance, selection and planning use,
//! decoded straight from the API server's JSON.
//!
//! A `k8s_openapi` `Pod` costs about 2.2 KB before any of its strings, and each container
//! another 2.1 KB, even when nearly every field is `None`; a cache of tens of thousands of
//! them was most of the operator's memory. [`LeanPod`] keeps the same field names and JSON
//! shape (so fixtures and `Api<LeanPod>` read the same documents), and nothing else: a list
//! or watch of pods decodes into it directly, the fields it lacks skipped by serde. The
//! webhook decodes the pod it admits into it too: every object on a path it patches keeps
//! its presence (annotations whole, every container in order, a security context without a
//! profile), so its diff before and after injection is the full type's.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{AppArmorProfile, PersistentVolumeClaimVolumeSource, Pod, PodOS};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use serde::{Deserialize, Serialize};

use crate::compliance::{ANNOTATION_PREFIX, INJECTED_ANNOTATION, OS_LABEL};

/// A pod, with only what the operator reads.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LeanPod {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<LeanPodSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<LeanPodStatus>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeanPodSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// Windows pods get no AppArmor profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os: Option<PodOS>,
    /// Only `kubernetes.io/os` is kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,
    #[serde(default, deserialize_with = "null_default")]
    pub containers: Vec<LeanContainer>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_containers: Option<Vec<LeanContainer>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<LeanSecurityContext>,
    /// Only claims (persistent or ephemeral) are kept: they tie a pod to its storage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volumes: Option<Vec<LeanVolume>>,
    /// Whether gates hold the pod back from scheduling; their names are not kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduling_gates: Option<Vec<Present>>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeanContainer {
    #[serde(default, deserialize_with = "null_default")]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<LeanSecurityContext>,
}

/// A container's or the pod's security context: its AppArmor profile only.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeanSecurityContext {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_armor_profile: Option<AppArmorProfile>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeanVolume {
    #[serde(default, deserialize_with = "null_default")]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent_volume_claim: Option<PersistentVolumeClaimVolumeSource>,
    /// Whether the volume is an ephemeral claim; its template is not kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ephemeral: Option<Present>,
}

/// An object whose presence is all that is read.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Present {}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeanPodStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// Only `Ready` is kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Vec<LeanCondition>>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeanCondition {
    #[serde(rename = "type", default, deserialize_with = "null_default")]
    pub type_: String,
    #[serde(default, deserialize_with = "null_default")]
    pub status: String,
    /// When a pod turned unready: it is broken only after the policy's `readyTimeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,
}

/// `null` or missing reads as empty, as k8s_openapi reads its required fields: a pod created
/// without containers reaches a mutating webhook, before validation, as `"containers": null`.
fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

impl k8s_openapi::Resource for LeanPod {
    const API_VERSION: &'static str = "v1";
    const GROUP: &'static str = "";
    const KIND: &'static str = "Pod";
    const VERSION: &'static str = "v1";
    const URL_PATH_SEGMENT: &'static str = "pods";
    type Scope = k8s_openapi::NamespaceResourceScope;
}

impl k8s_openapi::Metadata for LeanPod {
    type Ty = ObjectMeta;
    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

impl LeanPod {
    /// Drops what serde decoded but the operator never reads: managed fields, annotations
    /// other than AppArmor's and ours, node selectors other than the OS, volumes that are
    /// not claims, conditions other than Ready.
    pub fn strip(&mut self) {
        let m = &mut self.metadata;
        m.managed_fields = None;
        if let Some(a) = m.annotations.as_mut() {
            a.retain(|k, _| {
                k.starts_with(ANNOTATION_PREFIX)
                    || k == INJECTED_ANNOTATION
                    || k == "kubernetes.io/config.mirror"
            });
        }
        if let Some(s) = self.spec.as_mut() {
            if let Some(sel) = s.node_selector.as_mut() {
                sel.retain(|k, _| k == OS_LABEL);
            }
            if let Some(vs) = s.volumes.as_mut() {
                vs.retain(|v| v.persistent_volume_claim.is_some() || v.ephemeral.is_some());
            }
        }
        if let Some(cs) = self.status.as_mut().and_then(|s| s.conditions.as_mut()) {
            cs.retain(|c| c.type_ == "Ready");
        }
    }
}

fn lean_sc(profile: Option<&AppArmorProfile>) -> LeanSecurityContext {
    LeanSecurityContext {
        app_armor_profile: profile.cloned(),
    }
}

/// The lean view of a full pod (an e2e check's pod, tests). The tests check it against
/// decoding the same JSON, so the two cannot drift apart.
impl From<&Pod> for LeanPod {
    fn from(p: &Pod) -> LeanPod {
        let container = |c: &k8s_openapi::api::core::v1::Container| LeanContainer {
            name: c.name.clone(),
            security_context: c
                .security_context
                .as_ref()
                .map(|s| lean_sc(s.app_armor_profile.as_ref())),
        };
        let spec = p.spec.as_ref().map(|s| LeanPodSpec {
            node_name: s.node_name.clone(),
            os: s.os.clone(),
            node_selector: s.node_selector.clone(),
            containers: s.containers.iter().map(container).collect(),
            init_containers: s
                .init_containers
                .as_ref()
                .map(|cs| cs.iter().map(container).collect()),
            security_context: s
                .security_context
                .as_ref()
                .map(|sc| lean_sc(sc.app_armor_profile.as_ref())),
            volumes: s.volumes.as_ref().map(|vs| {
                vs.iter()
                    .map(|v| LeanVolume {
                        name: v.name.clone(),
                        persistent_volume_claim: v.persistent_volume_claim.clone(),
                        ephemeral: v.ephemeral.as_ref().map(|_| Present {}),
                    })
                    .collect()
            }),
            scheduling_gates: s
                .scheduling_gates
                .as_ref()
                .map(|gs| gs.iter().map(|_| Present {}).collect()),
        });
        let status = p.status.as_ref().map(|s| LeanPodStatus {
            phase: s.phase.clone(),
            conditions: s.conditions.as_ref().map(|cs| {
                cs.iter()
                    .map(|c| LeanCondition {
                        type_: c.type_.clone(),
                        status: c.status.clone(),
                        last_transition_time: c.last_transition_time.clone(),
                    })
                    .collect()
            }),
        });
        let mut meta = p.metadata.clone();
        meta.managed_fields = None;
        LeanPod {
            metadata: meta,
            spec,
            status,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"{
      "apiVersion": "v1", "kind": "Pod",
      "metadata": {"name": "web-1", "namespace": "shop", "uid": "u1",
        "annotations": {"container.apparmor.security.beta.kubernetes.io/c": "localhost/x",
                        "refresh.armor.dev/injected": "c", "note": "dropped",
                        "kubectl.kubernetes.io/last-applied-configuration": "{}"},
        "managedFields": [{"manager": "kubectl", "operation": "Apply"}]},
      "spec": {"nodeName": "n-a", "nodeSelector": {"kubernetes.io/os": "linux", "disk": "ssd"},
        "schedulingGates": [{"name": "example.com/queue"}],
        "securityContext": {"runAsUser": 1000, "appArmorProfile": {"type": "RuntimeDefault"}},
        "containers": [{"name": "c", "image": "nginx", "securityContext": {"runAsNonRoot": true}},
                       {"name": "d", "image": "x", "securityContext": {"appArmorProfile": {"type": "Localhost", "localhostProfile": "p"}}}],
        "initContainers": [{"name": "i", "image": "busybox"}],
        "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data-web-1"}},
                    {"name": "scratch", "ephemeral": {"volumeClaimTemplate": {"spec": {}}}},
                    {"name": "cfg", "configMap": {"name": "cfg"}}]},
      "status": {"phase": "Running", "podIP": "10.0.0.1",
        "conditions": [{"type": "PodScheduled", "status": "True"},
                       {"type": "Ready", "status": "False", "lastTransitionTime": "2026-11-29T10:00:00Z"}]}
    }"#;

    /// Decoding the API server's JSON and converting a full `Pod` give the same lean pod,
    /// and stripping keeps every field the core reads.
    #[test]
    fn decoded_and_converted_agree_and_strip_keeps_what_the_core_reads() {
        let mut decoded: LeanPod = serde_json::from_str(FULL).unwrap();
        let full: Pod = serde_json::from_str(FULL).unwrap();
        let mut converted = LeanPod::from(&full);
        decoded.strip();
        converted.strip();
        assert_eq!(decoded, converted);
        let p = decoded;
        let ann = p.metadata.annotations.as_ref().unwrap();
        assert_eq!(
            ann.keys().collect::<Vec<_>>(),
            [
                "container.apparmor.security.beta.kubernetes.io/c",
                "refresh.armor.dev/injected"
            ]
        );
        assert!(p.metadata.managed_fields.is_none());
        let spec = p.spec.as_ref().unwrap();
        assert_eq!(spec.node_name.as_deref(), Some("n-a"));
        assert_eq!(
            spec.node_selector
                .as_ref()
                .unwrap()
                .keys()
                .collect::<Vec<_>>(),
            ["kubernetes.io/os"]
        );
        assert_eq!(
            spec.containers
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>(),
            ["c", "d"]
        );
        // A security context without a profile stays present, so a patch adds to it.
        assert_eq!(
            spec.containers[0].security_context,
            Some(LeanSecurityContext::default())
        );
        assert_eq!(
            spec.containers[1]
                .security_context
                .as_ref()
                .and_then(|s| s.app_armor_profile.as_ref())
                .and_then(|a| a.localhost_profile.as_deref()),
            Some("p")
        );
        assert_eq!(spec.init_containers.as_ref().unwrap()[0].name, "i");
        assert_eq!(spec.scheduling_gates.as_ref().map(Vec::len), Some(1));
        assert_eq!(
            spec.security_context
                .as_ref()
                .unwrap()
                .app_armor_profile
                .as_ref()
                .unwrap()
                .type_,
            "RuntimeDefault"
        );
        let vols: Vec<_> = spec
            .volumes
            .iter()
            .flatten()
            .map(|v| v.name.as_str())
            .collect();
        assert_eq!(vols, ["data", "scratch"]);
        let status = p.status.as_ref().unwrap();
        assert_eq!(status.phase.as_deref(), Some("Running"));
        let conds = status.conditions.as_ref().unwrap();
        assert_eq!(conds.len(), 1);
        assert_eq!(
            (conds[0].type_.as_str(), conds[0].status.as_str()),
            ("Ready", "False")
        );
        assert!(conds[0].last_transition_time.is_some());
    }

    /// What the API server accepts is decoded without a panic; what it never sends is an
    /// error, not a crash.
    #[test]
    fn odd_documents_decode_or_fail_cleanly() {
        for doc in [
            r#"{}"#,
            r#"{"metadata": {}}"#,
            r#"{"spec": {}}"#,
            r#"{"spec": {"containers": []}, "status": {}}"#,
            // Before validation, a pod without containers reaches a mutating webhook so.
            r#"{"spec": {"containers": null, "initContainers": null, "volumes": null}}"#,
            r#"{"spec": {"containers": [{"name": null}]}, "status": {"conditions": [{"type": "Ready"}]}}"#,
        ] {
            let p = serde_json::from_str::<LeanPod>(doc).unwrap();
            // Decoded as the full type decodes it.
            let full: Pod = serde_json::from_str(doc).unwrap();
            assert_eq!(p, LeanPod::from(&full), "{doc}");
        }
        for doc in [
            r#"{"spec": {"containers": 7}}"#,
            r#"{"spec": {"containers": [{"name": 7}]}}"#,
            r#""pod""#,
        ] {
            assert!(serde_json::from_str::<LeanPod>(doc).is_err(), "{doc}");
        }
    }

    #[test]
    fn smaller_than_the_full_type() {
        assert!(std::mem::size_of::<LeanPod>() * 3 < std::mem::size_of::<Pod>());
        assert!(
            std::mem::size_of::<LeanContainer>() * 10
                < std::mem::size_of::<k8s_openapi::api::core::v1::Container>()
        );
    }
}
