//! A KubeArmor stand-in for the e2e fleet, written here from KubeArmor's documented and source
//! behaviour (kubearmor/KubeArmor: `KubeArmor/core/kubeUpdate.go`, `enforcer/appArmorEnforcer.go`,
//! `pkg/KubeArmorController/handlers/pod_mutation.go`, `.../common/common.go`). kwok's kubelets
//! ignore AppArmor; this makes a profile that no agent loaded visible, as a real node would.
//!
//! - **The agent**: when a pod appears on an AppArmor node (`kubearmor.io/enforcer=apparmor`)
//!   that runs a Running agent pod (`kubearmor-app=kubearmor`), every `localhost/` profile named
//!   in the pod's AppArmor annotations is loaded there, except names over 255 bytes or with
//!   `/`, `\` or `..`. Profiles named only in `securityContext.appArmorProfile` are never loaded
//!   (the agent reads annotations only), nor anything on BPF-LSM nodes or nodes without an agent.
//! - **The kubelet**: a container whose `localhost/` profile (annotation or field) is not loaded
//!   on its node never becomes Ready: the pod's status says `CreateContainerError` and names
//!   the profile.
//! - **KubeArmor's webhook** (optional): on a binding to, or a creation or update on, an active
//!   AppArmor node, existing AppArmor annotations are kept when `unconfined` and otherwise rewritten to
//!   `localhost/<part after '/'>` (so `runtime/default` becomes `localhost/default`), and each
//!   regular container without one gets `localhost/kubearmor-<ns>-<owner>-<container>`;
//!   `objectSelector: kubearmor-app DoesNotExist`.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use armor_refresh::compliance::ANNOTATION_PREFIX;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

use crate::Result;

/// The MutatingWebhookConfiguration of KubeArmor's webhook stand-in.
pub const WEBHOOK_CONFIG: &str = "kubearmor-standin";

/// A pod stuck on a profile its node never loaded.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Stuck {
    /// `namespace/name`.
    pub pod: String,
    pub node: String,
    pub profile: String,
}

#[derive(Default)]
struct State {
    /// Node → profiles loaded there.
    loaded: HashMap<String, HashSet<String>>,
    /// Pod uids whose profiles an agent has loaded on their node.
    seen: HashSet<String>,
    /// Pod uid → what it is stuck on.
    stuck: BTreeMap<String, Stuck>,
}

/// The running stand-in; stopped on drop.
pub struct Standin {
    state: Arc<Mutex<State>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    client: Client,
    webhook: bool,
}

impl Drop for Standin {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Is the node an AppArmor node with an agent pod on it (any phase for the webhook, as
/// KubeArmor's `CheckKubearmorStatus`; Running for the agent that loads profiles)?
fn active_nodes(nodes: &[Node], pods: &[Pod], running_only: bool) -> BTreeSet<String> {
    let agents: BTreeSet<String> = pods
        .iter()
        .filter(|p| p.labels().get("kubearmor-app").map(String::as_str) == Some("kubearmor"))
        .filter(|p| {
            !running_only
                || (p.metadata.deletion_timestamp.is_none()
                    && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
                    && crate::is_ready(p))
        })
        .filter_map(|p| p.spec.as_ref()?.node_name.clone())
        .collect();
    nodes
        .iter()
        .filter(|n| n.labels().get("kubearmor.io/enforcer").map(String::as_str) == Some("apparmor"))
        .map(|n| n.name_any())
        .filter(|n| agents.contains(n))
        .collect()
}

fn loadable(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.contains('/')
        && !name.contains('\\')
        && !name.contains("..")
}

/// Profiles named in the pod's AppArmor annotations (what the agent reads).
fn annotated_profiles(pod: &Pod) -> Vec<String> {
    pod.annotations()
        .iter()
        .filter(|(k, _)| k.starts_with(ANNOTATION_PREFIX))
        .filter_map(|(_, v)| v.strip_prefix("localhost/").map(String::from))
        .collect()
}

/// The `localhost/` profile each container starts with: annotation, else its field, else the
/// pod's field (the kubelet's order).
fn container_profiles(pod: &Pod) -> Vec<(String, String)> {
    let Some(spec) = pod.spec.as_ref() else {
        return vec![];
    };
    let pod_field = spec
        .security_context
        .as_ref()
        .and_then(|s| s.app_armor_profile.as_ref());
    spec.init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter())
        .filter_map(|c| {
            let ann = pod
                .annotations()
                .get(&format!("{ANNOTATION_PREFIX}{}", c.name))
                .and_then(|v| v.strip_prefix("localhost/").map(String::from));
            let field = c
                .security_context
                .as_ref()
                .and_then(|s| s.app_armor_profile.as_ref())
                .or(pod_field)
                .filter(|f| f.type_ == "Localhost")
                .and_then(|f| f.localhost_profile.clone());
            ann.or(field).map(|p| (c.name.clone(), p))
        })
        .collect()
}

impl Standin {
    /// Starts the agent and the kubelet, and with `webhook` KubeArmor's webhook too.
    pub async fn start(c: &Client, webhook: bool) -> Result<Standin> {
        let state = Arc::new(Mutex::new(State::default()));
        let mut tasks = vec![];
        {
            let (c, state) = (c.clone(), state.clone());
            tasks.push(tokio::spawn(async move {
                loop {
                    // An API server down (the chaos suite does that) is retried quietly.
                    let _ = pass(&c, &state).await;
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
            }));
        }
        if webhook {
            tasks.push(start_webhook(c).await?);
        }
        Ok(Standin {
            state,
            tasks,
            client: c.clone(),
            webhook,
        })
    }

    /// Pods stuck on an unloaded profile so far (each once, by uid).
    pub fn stuck(&self) -> Vec<Stuck> {
        self.state
            .lock()
            .map(|s| s.stuck.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Pods of these namespaces stuck on an unloaded profile so far.
    pub fn stuck_in(&self, namespaces: &[&str]) -> Vec<Stuck> {
        self.stuck()
            .into_iter()
            .filter(|s| {
                s.pod
                    .split('/')
                    .next()
                    .is_some_and(|ns| namespaces.contains(&ns))
            })
            .collect()
    }

    /// Profiles loaded on a node.
    pub fn loaded(&self, node: &str) -> BTreeSet<String> {
        self.state
            .lock()
            .ok()
            .and_then(|s| s.loaded.get(node).map(|l| l.iter().cloned().collect()))
            .unwrap_or_default()
    }

    /// Stops, and removes KubeArmor's webhook configuration.
    pub async fn stop(mut self) -> Result<()> {
        for t in self.tasks.drain(..) {
            t.abort();
        }
        if self.webhook {
            let api: Api<MutatingWebhookConfiguration> = Api::all(self.client.clone());
            let _ = api.delete(WEBHOOK_CONFIG, &DeleteParams::default()).await;
        }
        Ok(())
    }
}

/// One pass of the agent and the kubelet over every pod.
async fn pass(c: &Client, state: &Mutex<State>) -> Result<()> {
    let nodes = Api::<Node>::all(c.clone())
        .list(&ListParams::default())
        .await?
        .items;
    let pods = Api::<Pod>::all(c.clone())
        .list(&ListParams::default())
        .await?
        .items;
    let active = active_nodes(&nodes, &pods, true);
    let mut to_block = vec![];
    {
        let mut s = state.lock().map_err(|_| "stand-in state poisoned")?;
        for p in &pods {
            let (Some(node), Some(uid)) =
                (p.spec.as_ref().and_then(|s| s.node_name.clone()), p.uid())
            else {
                continue;
            };
            if p.metadata.deletion_timestamp.is_some() {
                continue;
            }
            // The agent: it loads a pod's profiles when it sees the pod on its node, including
            // the pods already there when it starts.
            if active.contains(&node) && s.seen.insert(uid.clone()) {
                let names: Vec<String> = annotated_profiles(p)
                    .into_iter()
                    .filter(|n| loadable(n))
                    .collect();
                s.loaded.entry(node.clone()).or_default().extend(names);
            }
            // The kubelet: a profile not loaded there keeps the container from starting.
            let missing = container_profiles(p)
                .into_iter()
                .find(|(_, prof)| !s.loaded.get(&node).is_some_and(|l| l.contains(prof)));
            if let Some((container, profile)) = missing {
                s.stuck.entry(uid).or_insert_with(|| Stuck {
                    pod: format!("{}/{}", p.namespace().unwrap_or_default(), p.name_any()),
                    node: node.clone(),
                    profile: profile.clone(),
                });
                let has_ip = p.status.as_ref().and_then(|s| s.pod_ip.as_ref()).is_some();
                if has_ip && crate::is_ready(p) {
                    to_block.push((p.clone(), container, profile));
                }
            }
        }
    }
    for (p, container, profile) in to_block {
        block(c, &p, &container, &profile).await?;
    }
    Ok(())
}

/// Marks the pod as the kubelet would: its container cannot be created.
async fn block(c: &Client, p: &Pod, container: &str, profile: &str) -> Result<()> {
    let api: Api<Pod> = Api::namespaced(c.clone(), &p.namespace().unwrap_or_default());
    let reason = "CreateContainerError";
    let message = format!("apparmor profile not found {profile} (container {container})");
    let names: Vec<String> = p
        .spec
        .as_ref()
        .map(|s| s.containers.iter().map(|c| c.name.clone()).collect())
        .unwrap_or_default();
    let statuses: Vec<Value> = names
        .iter()
        .map(|n| json!({"name": n, "image": "example/blocked", "imageID": "", "ready": false, "restartCount": 0, "started": false,
                        "state": {"waiting": {"reason": reason, "message": message}}}))
        .collect();
    let patch = json!({"status": {
        "conditions": [
            {"type": "Ready", "status": "False", "reason": "ContainersNotReady", "message": message},
            {"type": "ContainersReady", "status": "False", "reason": "ContainersNotReady", "message": message},
            {"type": "PodScheduled", "status": "True"},
            {"type": "Initialized", "status": "True"}
        ],
        "containerStatuses": statuses
    }});
    match api
        .patch_status(
            &p.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// KubeArmor's `AppArmorAnnotator`: the pod's AppArmor annotations after its webhook.
pub fn kubearmor_annotations(pod: &Pod, ns: &str) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    for (k, v) in pod.annotations() {
        let Some(container) = k.strip_prefix(ANNOTATION_PREFIX) else {
            continue;
        };
        if v == "unconfined" {
            out.insert(k.clone(), v.clone());
        } else if let Some((_, name)) = v.split_once('/') {
            // Split(v, "/")[1]: the part after the first '/', up to the next.
            let name = name.split('/').next().unwrap_or_default();
            out.insert(k.clone(), format!("localhost/{name}"));
        } else {
            // KubeArmor would index out of range here; leave it.
            out.insert(format!("{ANNOTATION_PREFIX}{container}"), v.clone());
        }
    }
    let owner = pod
        .owner_references()
        .iter()
        .find(|o| o.controller == Some(true))
        .map(|o| {
            if o.kind == "ReplicaSet"
                && let Some(hash) = pod.labels().get("pod-template-hash")
            {
                return o
                    .name
                    .strip_suffix(&format!("-{hash}"))
                    .unwrap_or(&o.name)
                    .to_string();
            }
            o.name.clone()
        })
        .unwrap_or_else(|| pod.name_any());
    for c in pod.spec.iter().flat_map(|s| s.containers.iter()) {
        out.entry(format!("{ANNOTATION_PREFIX}{}", c.name))
            .or_insert_with(|| format!("localhost/kubearmor-{ns}-{owner}-{}", c.name));
    }
    out
}

/// Answers one AdmissionReview as KubeArmor's webhook does.
async fn review(c: &Client, body: &[u8]) -> Value {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return json!({});
    };
    let req = &v["request"];
    let uid = req["uid"].clone();
    let allow = |patch: Option<Vec<Value>>| {
        let mut resp = json!({"uid": uid, "allowed": true});
        if let Some(p) = patch {
            let bytes = serde_json::to_vec(&p).unwrap_or_default();
            resp["patchType"] = json!("JSONPatch");
            resp["patch"] =
                serde_json::to_value(k8s_openapi::ByteString(bytes)).unwrap_or_default();
        }
        json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": resp})
    };
    let ns = req["namespace"].as_str().unwrap_or_default().to_string();
    let sub = req["subResource"].as_str().unwrap_or_default();
    let (pod, node, current): (Pod, String, Value) = if sub == "binding" {
        let name = req["name"].as_str().unwrap_or_default();
        let Ok(pod) = Api::<Pod>::namespaced(c.clone(), &ns).get(name).await else {
            return allow(None);
        };
        let node = req["object"]["target"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        (pod, node, req["object"]["metadata"]["annotations"].clone())
    } else {
        let Ok(pod) = serde_json::from_value::<Pod>(req["object"].clone()) else {
            return allow(None);
        };
        let node = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default();
        (pod, node, req["object"]["metadata"]["annotations"].clone())
    };
    if node.is_empty() {
        return allow(None);
    }
    let nodes = Api::<Node>::all(c.clone())
        .list(&ListParams::default())
        .await;
    let agents = Api::<Pod>::all(c.clone())
        .list(&ListParams::default().labels("kubearmor-app=kubearmor"))
        .await;
    let (Ok(nodes), Ok(agents)) = (nodes, agents) else {
        return allow(None);
    };
    if !active_nodes(&nodes.items, &agents.items, false).contains(&node) {
        return allow(None);
    }
    let mut merged: serde_json::Map<String, Value> =
        current.as_object().cloned().unwrap_or_default();
    for (k, v) in kubearmor_annotations(&pod, &ns) {
        merged.insert(k, Value::String(v));
    }
    merged
        .entry("kubearmor-policy")
        .or_insert_with(|| json!("enabled"));
    let op = if current.is_object() {
        "replace"
    } else {
        "add"
    };
    allow(Some(vec![
        json!({"op": op, "path": "/metadata/annotations", "value": merged}),
    ]))
}

/// Serves KubeArmor's webhook on 127.0.0.1 and registers it with the API server.
async fn start_webhook(c: &Client) -> Result<tokio::task::JoinHandle<()>> {
    let client = c.clone();
    let server = crate::admission::serve(move |_path, body| {
        let client = client.clone();
        async move { review(&client, &body).await }
    })
    .await?;
    let (port, ca) = (server.port, server.ca);
    let cfg: MutatingWebhookConfiguration = serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": WEBHOOK_CONFIG},
        "webhooks": [{
            "name": "annotation.kubearmor.standin",
            "clientConfig": {"url": format!("https://127.0.0.1:{port}/mutate-pods"),
                             "caBundle": k8s_openapi::ByteString(ca.into_bytes())},
            "rules": [{"operations": ["CREATE", "UPDATE"], "apiGroups": [""], "apiVersions": ["v1"],
                       "resources": ["pods", "pods/binding"], "scope": "Namespaced"}],
            "objectSelector": {"matchExpressions": [{"key": "kubearmor-app", "operator": "DoesNotExist"}]},
            "failurePolicy": "Ignore",
            "sideEffects": "None",
            "timeoutSeconds": 5,
            "admissionReviewVersions": ["v1"]
        }]
    }))?;
    let api: Api<MutatingWebhookConfiguration> = Api::all(c.clone());
    let _ = api.delete(WEBHOOK_CONFIG, &DeleteParams::default()).await;
    api.create(&PostParams::default(), &cfg).await?;
    Ok(server.task)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubearmors_annotator_as_read_from_its_source() {
        let pod: Pod = serde_saphyr::from_str(
            r#"
metadata:
  name: web-5d8f-x
  labels: {pod-template-hash: 5d8f}
  ownerReferences: [{apiVersion: apps/v1, kind: ReplicaSet, name: web-5d8f, uid: u, controller: true}]
  annotations:
    container.apparmor.security.beta.kubernetes.io/a: runtime/default
    container.apparmor.security.beta.kubernetes.io/b: unconfined
spec:
  initContainers: [{name: init}]
  containers: [{name: a}, {name: b}, {name: c}]
"#,
        )
        .unwrap();
        let a = kubearmor_annotations(&pod, "shop");
        let get = |c: &str| a.get(&format!("{ANNOTATION_PREFIX}{c}")).cloned();
        assert_eq!(get("a").as_deref(), Some("localhost/default"));
        assert_eq!(get("b").as_deref(), Some("unconfined"));
        assert_eq!(get("c").as_deref(), Some("localhost/kubearmor-shop-web-c"));
        assert_eq!(get("init"), None, "regular containers only");
    }
}
