//! Reflectors over what the operator reads, stripped to what the core uses so memory stays
//! small at tens of thousands of pods. Every change wakes the reconcile loop.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Node};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::core::DeserializeGuard;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;

use crate::api::{ArmorRefreshPolicy, ArmorRefreshRun};
use crate::cluster::{ClusterFacts, object_key};
use crate::pod::LeanPod;

/// Where the operator hands its pod store to the webhook of the same process, once started:
/// one pod cache for both, so a binding needs no read of its pod from the API server.
pub type PodSlot = Arc<std::sync::OnceLock<Store<LeanPod>>>;

/// The stores the operator reconciles from.
#[derive(Clone)]
pub struct Caches {
    pub pods: Store<LeanPod>,
    pub nodes: Store<Node>,
    pub namespaces: Store<Namespace>,
    pub pdbs: Store<PodDisruptionBudget>,
    pub leases: Store<Lease>,
    pub statefulsets: Store<StatefulSet>,
    pub replicasets: Store<ReplicaSet>,
    pub deployments: Store<Deployment>,
    pub daemonsets: Store<DaemonSet>,
    pub policies: Store<DeserializeGuard<ArmorRefreshPolicy>>,
    pub runs: Store<DeserializeGuard<ArmorRefreshRun>>,
}

fn strip_meta<K: Resource>(o: &mut K) {
    let m = o.meta_mut();
    m.managed_fields = None;
    if let Some(a) = m.annotations.as_mut() {
        a.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
}

/// Labels and name: all the operator and the webhook read of a node (its status, with the
/// images it holds, is most of it).
pub fn strip_node(n: &mut Node) {
    strip_meta(n);
    n.metadata.annotations = None;
    n.spec = None;
    n.status = None;
}

/// Labels and annotations: all the operator and the webhook read of a namespace.
pub fn strip_namespace(n: &mut Namespace) {
    strip_meta(n);
    n.spec = None;
    n.status = None;
}

fn strip_sts(s: &mut StatefulSet) {
    strip_meta(s);
    if let Some(spec) = s.spec.as_mut() {
        spec.template = Default::default();
        spec.volume_claim_templates = None;
    }
}

/// Owner and size only: a Deployment's size is its ReplicaSets' when it is not cached.
fn strip_rs(r: &mut ReplicaSet) {
    strip_meta(r);
    if let Some(spec) = r.spec.as_mut() {
        spec.template = None;
        spec.selector = Default::default();
    }
    r.status = None;
}

/// Size, pause and strategy: how many pods it wants, and whether a template patch restarts it.
fn strip_deployment(d: &mut Deployment) {
    strip_meta(d);
    if let Some(spec) = d.spec.as_mut() {
        spec.template = Default::default();
        spec.selector = Default::default();
    }
}

/// Strategy, size and the template generation its pods are labelled with (an annotation).
fn strip_ds(d: &mut DaemonSet) {
    strip_meta(d);
    if let Some(spec) = d.spec.as_mut() {
        spec.template = Default::default();
        spec.selector = Default::default();
    }
}

/// Starts a reflector task; every event notifies `wake`.
fn reflect<K, F>(api: Api<K>, cfg: watcher::Config, strip: F, wake: Arc<Notify>) -> Store<K>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone + Send + Sync,
    F: FnMut(&mut K) + Send + Sync + 'static,
{
    let (store, writer) = reflector::store();
    let stream = watcher(api, cfg)
        .default_backoff()
        .modify(strip)
        .reflect(writer);
    tokio::spawn(drain(stream, wake, std::any::type_name::<K>()));
    store
}

async fn drain<S, T>(stream: S, wake: Arc<Notify>, kind: &'static str)
where
    S: Stream<Item = Result<T, watcher::Error>> + Send,
{
    let mut stream = std::pin::pin!(stream);
    while let Some(ev) = stream.next().await {
        if let Err(e) = ev {
            // The backoff retries; say why a cache may be stale.
            tracing::warn!(kind, error = %e, "watch failed; retrying with backoff");
            crate::metrics::METRICS.reconcile_error("watch");
        }
        wake.notify_one();
    }
}

/// Every pod, stripped to what the core reads: the operator's cache, and the webhook's
/// when it runs alone with `--pod-cache`.
pub fn pod_store(client: &Client, wake: Arc<Notify>) -> Store<LeanPod> {
    // Pages of 100: a page is decoded whole, and a page of 500 pods is megabytes.
    let cfg = watcher::Config::default().page_size(100);
    reflect(Api::all(client.clone()), cfg, LeanPod::strip, wake)
}

impl Caches {
    /// Starts every reflector.
    pub fn start(client: &Client, wake: Arc<Notify>) -> Caches {
        let c = client.clone();
        let all = watcher::Config::default();
        Caches {
            pods: pod_store(&c, wake.clone()),
            nodes: reflect(Api::all(c.clone()), all.clone(), strip_node, wake.clone()),
            namespaces: reflect(
                Api::all(c.clone()),
                all.clone(),
                strip_namespace,
                wake.clone(),
            ),
            pdbs: reflect(
                Api::all(c.clone()),
                all.clone(),
                |p: &mut PodDisruptionBudget| strip_meta(p),
                wake.clone(),
            ),
            // Node heartbeats live in kube-node-lease; they are many and never leaders of pods.
            leases: reflect(
                Api::all(c.clone()),
                watcher::Config::default().fields("metadata.namespace!=kube-node-lease"),
                |l: &mut Lease| strip_meta(l),
                wake.clone(),
            ),
            statefulsets: reflect(Api::all(c.clone()), all.clone(), strip_sts, wake.clone()),
            replicasets: reflect(Api::all(c.clone()), all.clone(), strip_rs, wake.clone()),
            deployments: reflect(
                Api::all(c.clone()),
                all.clone(),
                strip_deployment,
                wake.clone(),
            ),
            daemonsets: reflect(Api::all(c.clone()), all.clone(), strip_ds, wake.clone()),
            policies: reflect(
                Api::all(c.clone()),
                all.clone(),
                |_: &mut DeserializeGuard<ArmorRefreshPolicy>| {},
                wake.clone(),
            ),
            runs: reflect(
                Api::all(c.clone()),
                all,
                |_: &mut DeserializeGuard<ArmorRefreshRun>| {},
                wake,
            ),
        }
    }

    /// Waits until every store has its initial list.
    pub async fn ready(&self) -> Result<(), reflector::store::WriterDropped> {
        self.pods.wait_until_ready().await?;
        self.nodes.wait_until_ready().await?;
        self.namespaces.wait_until_ready().await?;
        self.pdbs.wait_until_ready().await?;
        self.leases.wait_until_ready().await?;
        self.statefulsets.wait_until_ready().await?;
        self.replicasets.wait_until_ready().await?;
        self.deployments.wait_until_ready().await?;
        self.daemonsets.wait_until_ready().await?;
        self.policies.wait_until_ready().await?;
        self.runs.wait_until_ready().await?;
        Ok(())
    }

    /// A snapshot of the cluster for the core.
    pub fn facts(&self, agent_selector: &kube::core::Selector) -> ClusterFacts {
        let mut facts = ClusterFacts {
            pods: self.pods.state(),
            nodes: self
                .nodes
                .state()
                .iter()
                .map(|n| (n.name_any(), n.labels().clone()))
                .collect(),
            namespaces: self
                .namespaces
                .state()
                .iter()
                .map(|n| (n.name_any(), n.labels().clone()))
                .collect::<BTreeMap<_, _>>(),
            pdbs: self.pdbs.state(),
            leases: self.leases.state(),
            statefulsets: self
                .statefulsets
                .state()
                .into_iter()
                .map(|s| (object_key(s.as_ref()), s))
                .collect(),
            replicasets: self
                .replicasets
                .state()
                .into_iter()
                .map(|s| (object_key(s.as_ref()), s))
                .collect(),
            deployments: self
                .deployments
                .state()
                .into_iter()
                .map(|s| (object_key(s.as_ref()), s))
                .collect(),
            daemonsets: self
                .daemonsets
                .state()
                .into_iter()
                .map(|s| (object_key(s.as_ref()), s))
                .collect(),
            ..Default::default()
        };
        facts.find_agents(agent_selector);
        facts
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compliance::tests::policy;
    use crate::compliance::{check, owner_of};

    #[test]
    fn stripping_keeps_what_the_core_reads() {
        let full: k8s_openapi::api::core::v1::Pod = serde_saphyr::from_str(
            r#"
metadata:
  name: web-abc-1
  namespace: shop
  uid: u1
  labels: {app: web, pod-template-hash: abc}
  annotations:
    container.apparmor.security.beta.kubernetes.io/app: localhost/kubearmor-shop-web-app
    refresh.armor.dev/injected: app
    kubectl.kubernetes.io/last-applied-configuration: "{...huge...}"
    other: x
  ownerReferences: [{apiVersion: apps/v1, kind: ReplicaSet, name: web-abc, uid: r, controller: true}]
  managedFields: [{manager: kubectl}]
spec:
  nodeName: n1
  initContainers: [{name: init, image: busybox, command: [sh]}]
  containers:
  - name: app
    image: registry.example/team/nginx:1.27.3@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
    command: [nginx, -g, daemon off;]
    env: [{name: A, value: b}, {name: LOG_LEVEL, value: info}, {name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}]
    resources: {requests: {cpu: 100m, memory: 128Mi}, limits: {memory: 256Mi}}
    readinessProbe: {httpGet: {path: /healthz, port: 8080}, periodSeconds: 5}
    livenessProbe: {httpGet: {path: /healthz, port: 8080}, periodSeconds: 10}
    volumeMounts: [{name: cfg, mountPath: /etc/nginx}, {name: data, mountPath: /data}]
    securityContext: {runAsUser: 1000, appArmorProfile: {type: Localhost, localhostProfile: x}}
  volumes:
  - {name: cfg, configMap: {name: c}}
  - {name: data, persistentVolumeClaim: {claimName: d}}
status:
  phase: Running
  conditions: [{type: Ready, status: "True"}, {type: PodScheduled, status: "True"}]
  containerStatuses: [{name: app, image: nginx, imageID: x, ready: true, restartCount: 0}]
"#,
        )
        .unwrap();
        let mut slim: LeanPod =
            serde_json::from_value(serde_json::to_value(&full).unwrap()).unwrap();
        slim.strip();
        fn size(p: &impl serde::Serialize) -> usize {
            serde_json::to_string(p).unwrap().len()
        }
        assert!(
            size(&slim) * 2 < size(&full),
            "{} vs {}",
            size(&slim),
            size(&full)
        );
        assert!(slim.metadata.managed_fields.is_none());
        assert_eq!(slim.annotations().len(), 2);
        assert_eq!(
            slim.spec.as_ref().unwrap().volumes.as_ref().unwrap().len(),
            1
        );
        assert!(crate::select::is_ready(&slim));
        // The core answers the same on both.
        let full = LeanPod::from(&full);
        let pol = policy("{}");
        let l = BTreeMap::new();
        assert_eq!(
            check(&pol, &full, &owner_of(&full, None), &l),
            check(&pol, &slim, &owner_of(&slim, None), &l)
        );
        let pol = policy("profile: {format: Field, injectAt: Create}");
        assert_eq!(
            check(&pol, &full, &owner_of(&full, None), &l),
            check(&pol, &slim, &owner_of(&slim, None), &l)
        );
    }
}
