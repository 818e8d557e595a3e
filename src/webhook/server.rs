//! The HTTPS admission server: rustls with certificates from files (reloaded when they
//! change) or self-signed at start-up (CA written into the MutatingWebhookConfiguration's
//! caBundle, renewed before expiry); policies, namespaces and nodes from reflectors.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use futures::StreamExt;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{Namespace, Node};

use crate::controller::PodSlot;
use crate::pod::LeanPod;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::core::DeserializeGuard;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use serde_json::json;
use tokio::sync::{Notify, watch};
use tokio_rustls::rustls;

use super::{Lookup, Verdict};
use crate::api::{ArmorRefreshPolicy, InjectAt};
use crate::metrics::{AdmissionLabel, METRICS};
use crate::policy::{ValidPolicy, validate};

/// Largest AdmissionReview body accepted (Kubernetes objects are at most ~1.5 MiB).
pub const MAX_BODY: usize = 3 * 1024 * 1024;

/// Why the webhook could not start or serve.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("TLS certificate: {0}")]
    Cert(String),
    #[error("listening on {0}: {1}")]
    Listen(SocketAddr, std::io::Error),
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
}

/// Where the serving certificate comes from.
#[derive(Debug, Clone)]
pub enum CertSource {
    /// PEM files, reloaded when they change.
    Files { cert: PathBuf, key: PathBuf },
    /// A CA and a serving certificate generated at start-up for these names.
    SelfSigned {
        dns: Vec<String>,
        ips: Vec<IpAddr>,
        validity: Duration,
    },
}

/// Webhook settings (flags of `armor-refresh webhook` / `run`).
#[derive(Debug, Clone)]
pub struct Config {
    pub addr: SocketAddr,
    pub certs: CertSource,
    /// The MutatingWebhookConfiguration whose caBundle to keep in step with a self-signed CA.
    pub webhook_config: Option<String>,
    /// With `webhook_config`: create or update that configuration to call this URL
    /// (local runs, where there is no Service); otherwise only its caBundle is written.
    pub url: Option<String>,
    /// Namespaces the webhook configuration skips (its own, and kube-system unless asked).
    pub skip_namespaces: Vec<String>,
    /// What a KubeArmor agent pod looks like.
    pub agent_selector: kube::core::Selector,
    /// The operator's pod cache, when it runs in this process (see [`PodSlot`]).
    pub pods: PodSlot,
}

/// Hot-swappable serving certificate.
#[derive(Debug)]
pub struct Certs {
    current: RwLock<Option<Arc<CertifiedKey>>>,
}

impl ResolvesServerCert for Certs {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok()?.clone()
    }
}

impl Certs {
    fn set(&self, k: CertifiedKey) {
        if let Ok(mut g) = self.current.write() {
            *g = Some(Arc::new(k));
        }
    }
    fn loaded(&self) -> bool {
        self.current.read().is_ok_and(|g| g.is_some())
    }
}

fn certified_key(cert_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, Error> {
    use rustls::pki_types::pem::{self, PemObject};
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<_> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| Error::Cert(format!("certificate PEM: {e}")))?;
    if certs.is_empty() {
        return Err(Error::Cert("no certificate in the PEM".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| match e {
        pem::Error::NoItemsFound => Error::Cert("no private key in the PEM".into()),
        e => Error::Cert(format!("key PEM: {e}")),
    })?;
    let provider = rustls::crypto::ring::default_provider();
    CertifiedKey::from_der(certs, key, &provider)
        .map_err(|e| Error::Cert(format!("certificate and key do not match: {e}")))
}

/// Reads a certificate and key from PEM files.
pub fn load_files(cert: &std::path::Path, key: &std::path::Path) -> Result<CertifiedKey, Error> {
    let c = std::fs::read(cert).map_err(|e| Error::Cert(format!("{}: {e}", cert.display())))?;
    let k = std::fs::read(key).map_err(|e| Error::Cert(format!("{}: {e}", key.display())))?;
    certified_key(&c, &k)
}

/// A fresh CA and a serving certificate signed by it: `(serving key, CA PEM)`.
pub fn self_signed(
    dns: &[String],
    ips: &[IpAddr],
    validity: Duration,
) -> Result<(CertifiedKey, String), Error> {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair,
        KeyUsagePurpose, SanType,
    };
    let err = |e: rcgen::Error| Error::Cert(e.to_string());
    let now = time::OffsetDateTime::now_utc();
    let until =
        now + time::Duration::seconds(i64::try_from(validity.as_secs()).unwrap_or(i64::MAX / 2));
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.distinguished_name
        .push(DnType::CommonName, "armor-refresh webhook CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.not_before = now - time::Duration::minutes(5);
    ca.not_after = until;
    let issuer =
        CertifiedIssuer::self_signed(ca, KeyPair::generate().map_err(err)?).map_err(err)?;
    let mut leaf = CertificateParams::new(dns.to_vec()).map_err(err)?;
    for ip in ips {
        leaf.subject_alt_names.push(SanType::IpAddress(*ip));
    }
    leaf.distinguished_name.push(
        DnType::CommonName,
        dns.first()
            .cloned()
            .unwrap_or_else(|| "armor-refresh-webhook".into()),
    );
    leaf.not_before = now - time::Duration::minutes(5);
    leaf.not_after = until;
    let leaf_key = KeyPair::generate().map_err(err)?;
    let cert = leaf.signed_by(&leaf_key, &issuer).map_err(err)?;
    let key = certified_key(cert.pem().as_bytes(), leaf_key.serialize_pem().as_bytes())?;
    Ok((key, issuer.pem()))
}

/// What the handler reads.
struct Shared {
    policies: RwLock<Arc<Vec<ValidPolicy>>>,
    namespaces: Store<Namespace>,
    nodes: Store<Node>,
    /// KubeArmor agent pods only (watched by label).
    agents: Store<LeanPod>,
    agent_selector: kube::core::Selector,
    pods: PodSlot,
    client: Client,
    certs: Arc<Certs>,
    synced: AtomicBool,
}

struct StoreLookup<'a> {
    shared: &'a Shared,
    pod: Option<LeanPod>,
}

impl Lookup for StoreLookup<'_> {
    fn namespace_labels(&self, ns: &str) -> BTreeMap<String, String> {
        self.shared
            .namespaces
            .get(&reflector::ObjectRef::new(ns))
            .map(|n| n.labels().clone())
            .unwrap_or_default()
    }
    fn node_labels(&self, node: &str) -> Option<BTreeMap<String, String>> {
        self.shared
            .nodes
            .get(&reflector::ObjectRef::new(node))
            .map(|n| n.labels().clone())
    }
    fn agent_on(&self, node: &str) -> bool {
        self.shared.agents.state().iter().any(|p| {
            p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node)
                && crate::cluster::is_running_agent(p, &self.shared.agent_selector)
        })
    }
    fn pod(&self, _ns: &str, _name: &str) -> Option<LeanPod> {
        self.pod.clone()
    }
}

/// The pod a binding binds, from the operator's cache: only the very pod the scheduler bound
/// (the binding carries its uid), so a StatefulSet pod recreated under its name is never
/// mistaken for the one before it, and not a copy that still has scheduling gates: the API
/// server binds no gated pod, so that copy is older than the one being bound (a queueing
/// controller may have changed its labels as it lifted the gates). `None` sends the webhook
/// to the API server: not cached yet (the watch is behind the scheduler), a binding without
/// a uid, or no operator in this process.
fn cached_pod(slot: &PodSlot, ns: &str, name: &str, uid: Option<&str>) -> Option<LeanPod> {
    let pod = slot
        .get()?
        .get(&reflector::ObjectRef::new(name).within(ns))?;
    let gated = pod
        .spec
        .as_ref()
        .and_then(|s| s.scheduling_gates.as_ref())
        .is_some_and(|g| !g.is_empty());
    (uid.is_some() && pod.metadata.uid.as_deref() == uid && !gated).then(|| (*pod).clone())
}

async fn mutate(State(shared): State<Arc<Shared>>, body: Bytes) -> impl IntoResponse {
    let start = Instant::now();
    let policies = shared
        .policies
        .read()
        .map(|p| p.clone())
        .unwrap_or_default();
    // A binding names its pod; fetch it only when a policy injects at binding.
    let mut pod = None;
    if policies
        .iter()
        .any(|p| p.spec.profile.inject_at == InjectAt::Binding)
    {
        if let Ok(req) = super::parse_review(&body) {
            if req.sub_resource.as_deref() == Some("binding") {
                let ns = req.namespace.clone().unwrap_or_default();
                let uid = req.object.as_ref().and_then(|b| b.metadata.uid.clone());
                pod = cached_pod(&shared.pods, &ns, &req.name, uid.as_deref());
                if pod.is_none() {
                    METRICS.webhook_pod_reads.inc();
                    let api: Api<LeanPod> = Api::namespaced(shared.client.clone(), &ns);
                    pod = tokio::time::timeout(Duration::from_secs(2), api.get_opt(&req.name))
                        .await
                        .ok()
                        .and_then(Result::ok)
                        .flatten();
                }
            }
        }
    }
    let lookup = StoreLookup {
        shared: &shared,
        pod,
    };
    let (code, out, verdict, op) = super::handle(&body, &policies, &lookup);
    METRICS
        .admission_requests
        .get_or_create(&AdmissionLabel {
            operation: op,
            result: verdict.as_str().into(),
        })
        .inc();
    METRICS
        .admission_latency
        .observe(start.elapsed().as_secs_f64());
    if verdict == Verdict::Error {
        // Say why (the warning the API server relays), not merely that: a pod not found at
        // its binding is not a request that was not understood.
        let why = serde_json::from_slice::<serde_json::Value>(&out)
            .ok()
            .and_then(|v| {
                let ws = v.pointer("/response/warnings")?.as_array()?.iter();
                Some(ws.filter_map(|w| w.as_str()).collect::<Vec<_>>().join("; "))
            })
            .unwrap_or_else(|| String::from_utf8_lossy(&out).chars().take(300).collect());
        tracing::warn!(code, why = %why, "admission request not handled; allowed unchanged or refused as malformed");
    }
    (
        StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST),
        [("content-type", "application/json")],
        out,
    )
}

/// The admission router: POST /mutate, GET /healthz and /readyz.
fn router(shared: Arc<Shared>) -> Router {
    let ready = shared.clone();
    Router::new()
        .route("/mutate", post(mutate))
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let s = ready.clone();
                async move {
                    if s.synced.load(Ordering::Relaxed) && s.certs.loaded() {
                        (StatusCode::OK, "ok")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
                    }
                }
            }),
        )
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(shared)
}

fn reflect_with<K>(
    api: Api<K>,
    cfg: watcher::Config,
    strip: impl FnMut(&mut K) + Send + 'static,
    wake: Option<Arc<Notify>>,
) -> Store<K>
where
    K: kube::Resource
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone + Send + Sync,
{
    let (store, writer) = reflector::store();
    let stream = watcher(api, cfg)
        .default_backoff()
        .modify(strip)
        .reflect(writer);
    tokio::spawn(async move {
        let mut s = std::pin::pin!(stream);
        while let Some(ev) = s.next().await {
            if let Err(e) = ev {
                tracing::warn!(error = %e, "webhook watch failed; retrying");
            }
            if let Some(w) = &wake {
                w.notify_one();
            }
        }
    });
    store
}

/// Writes `ca_pem` into every webhook of the named configuration; with `url`, creates or
/// updates the whole configuration first.
///
/// Several replicas each sign their own CA, so each adds its CA to the bundle instead of
/// replacing it: the API server trusts any CA of the bundle, and the oldest ones (of
/// replicas gone or renewed) fall off. That holds with `url` too, where replicas behind one
/// address (a load balancer in front of them) answer the same calls. The resourceVersion
/// precondition makes concurrent writers retry instead of dropping each other's CA.
pub async fn write_webhook_config(
    client: &Client,
    name: &str,
    url: Option<&str>,
    ca_pem: &str,
    skip_namespaces: &[String],
    registration: &serde_json::Value,
) -> Result<(), Error> {
    let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    for attempt in 0.. {
        let existing = api.get_opt(name).await?;
        let written = match (url, existing) {
            (Some(url), existing) => {
                let cfg = url_config(
                    name,
                    url,
                    ca_pem,
                    skip_namespaces,
                    registration,
                    existing.as_ref(),
                )?;
                METRICS.write("apply_webhook_config");
                match existing {
                    // Created, not applied: of two replicas starting at once, the second
                    // gets a 409 and merges into the first's bundle.
                    None => api.create(&field_manager(), &cfg).await,
                    // Replaced whole, at the version read: the configuration is all ours,
                    // and an apply would keep what the creation (an update, not an apply)
                    // wrote, such as a match condition the policies no longer need.
                    Some(_) => api.replace(name, &field_manager(), &cfg).await,
                }
            }
            (None, None) => {
                return Err(Error::Cert(format!(
                    "MutatingWebhookConfiguration {name:?} not found; create it (the Helm chart does) or pass --webhook-url"
                )));
            }
            (None, Some(existing)) => {
                let patch = ca_patch(&existing, ca_pem)?;
                METRICS.write("patch_webhook_config");
                api.patch(name, &PatchParams::default(), &Patch::<()>::Json(patch))
                    .await
            }
        };
        // A lost race: 409 for a stale resourceVersion or a creation beaten to it; 422 for
        // the JSON patch's failed test op (for a creation or replacement, a real error).
        let lost_race = |code: u16| code == 409 || (code == 422 && url.is_none());
        match written {
            Ok(_) => return Ok(()),
            // Someone wrote in between: read again.
            Err(kube::Error::Api(s)) if lost_race(s.code) && attempt < 5 => {
                tokio::time::sleep(Duration::from_millis(100 * (attempt + 1))).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
    unreachable!("the loop returns")
}

fn field_manager() -> PostParams {
    PostParams {
        field_manager: Some(crate::api::FIELD_MANAGER.into()),
        ..PostParams::default()
    }
}

/// The CA bundle of the configuration's first webhook, as PEM text.
fn current_bundle(existing: Option<&MutatingWebhookConfiguration>) -> String {
    existing
        .and_then(|e| e.webhooks.as_deref()?.first())
        .and_then(|w| w.client_config.ca_bundle.as_ref())
        .map(|b| String::from_utf8_lossy(&b.0).into_owned())
        .unwrap_or_default()
}

/// The bundle `existing` holds with `ca_pem` added, as the caBundle field's base64.
fn merged_bundle(
    existing: Option<&MutatingWebhookConfiguration>,
    ca_pem: &str,
) -> Result<serde_json::Value, Error> {
    let merged = merge_ca_bundle(&current_bundle(existing), ca_pem, MAX_BUNDLE_CAS);
    // ByteString serialises as the base64 the caBundle field holds.
    serde_json::to_value(k8s_openapi::ByteString(merged.into_bytes()))
        .map_err(|e| Error::Cert(e.to_string()))
}

/// The whole configuration calling `url`, with `existing`'s CAs kept beside ours and its
/// resourceVersion as the replacement's precondition.
fn url_config(
    name: &str,
    url: &str,
    ca_pem: &str,
    skip_namespaces: &[String],
    registration: &serde_json::Value,
    existing: Option<&MutatingWebhookConfiguration>,
) -> Result<MutatingWebhookConfiguration, Error> {
    let bundle = merged_bundle(existing, ca_pem)?;
    let mut metadata = json!({"name": name, "labels": {"app.kubernetes.io/name": "armor-refresh"}});
    if let Some(rv) = existing.and_then(|e| e.metadata.resource_version.as_ref()) {
        metadata["resourceVersion"] = json!(rv);
    }
    serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": metadata,
        "webhooks": [{
            "name": "pods.refresh.armor.dev",
            "clientConfig": {"url": url, "caBundle": bundle},
            "rules": registration["rules"],
            "matchConditions": registration["matchConditions"],
            "failurePolicy": "Ignore",
            "matchPolicy": "Equivalent",
            "sideEffects": "None",
            "timeoutSeconds": 5,
            "reinvocationPolicy": "IfNeeded",
            "admissionReviewVersions": ["v1"],
            "namespaceSelector": {"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": skip_namespaces}]},
            // KubeArmor's pods (as its own webhook does) and pods opted out.
            "objectSelector": {"matchExpressions": [
                {"key": crate::api::KUBEARMOR_APP_LABEL, "operator": "DoesNotExist"},
                {"key": crate::compliance::OPT_OUT_LABEL, "operator": "NotIn", "values": ["true"]}
            ]},
        }]
    }))
    .map_err(|e| Error::Cert(e.to_string()))
}

/// A JSON patch setting the merged bundle on every webhook of a configuration someone else
/// created (the chart), if it is still at the version read.
fn ca_patch(
    existing: &MutatingWebhookConfiguration,
    ca_pem: &str,
) -> Result<json_patch::Patch, Error> {
    let bundle = merged_bundle(Some(existing), ca_pem)?;
    let webhooks = existing.webhooks.as_deref().unwrap_or_default();
    let mut ops = vec![json!({"op": "test", "path": "/metadata/resourceVersion",
        "value": existing.metadata.resource_version})];
    ops.extend((0..webhooks.len()).map(|i| {
        json!({"op": "add", "path": format!("/webhooks/{i}/clientConfig/caBundle"), "value": bundle})
    }));
    serde_json::from_value(json!(ops)).map_err(|e| Error::Cert(e.to_string()))
}

/// How many CAs the caBundle keeps: this replica's and the newest of the others.
const MAX_BUNDLE_CAS: usize = 8;

/// `ours` appended to the PEM certificates of `current` (without it), keeping the newest
/// `max` in all. Certificates are compared as DER, so a bundle re-encoded by someone else
/// (other line length, CRLF) still holds ours once; sections that are not certificates or
/// do not decode are dropped, and the others kept.
pub fn merge_ca_bundle(current: &str, ours: &str, max: usize) -> String {
    let certs = |text: &str| -> Vec<Vec<u8>> {
        use rustls::pki_types::{CertificateDer, pem::PemObject};
        CertificateDer::pem_slice_iter(text.as_bytes())
            .filter_map(Result::ok)
            .map(|c| c.to_vec())
            .collect()
    };
    let ours = certs(ours);
    let mut kept: Vec<Vec<u8>> = certs(current)
        .into_iter()
        .filter(|c| !ours.contains(c))
        .collect();
    let keep = max.saturating_sub(ours.len());
    if kept.len() > keep {
        kept.drain(..kept.len() - keep);
    }
    kept.extend(ours);
    let blocks: Vec<_> = kept
        .into_iter()
        .map(|der| ::pem::Pem::new("CERTIFICATE", der))
        .collect();
    ::pem::encode_many_config(
        &blocks,
        ::pem::EncodeConfig::new().set_line_ending(::pem::LineEnding::LF),
    )
}

/// Resolves once `rx` turns true (or its sender is gone).
pub async fn until_stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await.is_ok();
}

pub async fn serve(
    client: Client,
    cfg: Config,
    ready: Arc<AtomicBool>,
    shutdown: watch::Receiver<bool>,
) -> Result<(), Error> {
    let certs = Arc::new(Certs {
        current: RwLock::new(None),
    });
    // Certificates first: a webhook without them is not ready.
    let mut renew_at: Option<Instant> = None;
    // The CA this process wrote into its configuration, and what it registered for.
    let ca_pem = Arc::new(RwLock::new(String::new()));
    let registration = Arc::new(RwLock::new(super::registration::for_policies(&[])));
    // One writer of the configuration at a time: a renewal and a registration change each
    // write both the CA and the rules, and must not undo each other.
    let config_lock = Arc::new(tokio::sync::Mutex::new(()));
    let mut file_stamp: Option<(SystemTime, SystemTime)> = None;
    match &cfg.certs {
        CertSource::Files { cert, key } => {
            certs.set(load_files(cert, key)?);
            file_stamp = stamps(cert, key);
        }
        CertSource::SelfSigned { dns, ips, validity } => {
            let (k, ca) = self_signed(dns, ips, *validity)?;
            certs.set(k);
            if let Some(name) = &cfg.webhook_config {
                let reg = registration.read().map(|r| r.clone()).unwrap_or_default();
                write_webhook_config(
                    &client,
                    name,
                    cfg.url.as_deref(),
                    &ca,
                    &cfg.skip_namespaces,
                    &reg,
                )
                .await?;
            }
            if let Ok(mut c) = ca_pem.write() {
                *c = ca;
            }
            renew_at = Some(Instant::now() + validity.mul_f64(2.0 / 3.0));
        }
    }
    let wake = Arc::new(Notify::new());
    let policies_store: Store<DeserializeGuard<ArmorRefreshPolicy>> = reflect_with(
        Api::all(client.clone()),
        watcher::Config::default(),
        |_| {},
        Some(wake.clone()),
    );
    let shared = Arc::new(Shared {
        policies: RwLock::new(Arc::new(vec![])),
        // Stripped as the operator's caches are: labels are all the webhook reads.
        namespaces: reflect_with(
            Api::all(client.clone()),
            watcher::Config::default(),
            crate::controller::strip_namespace,
            None,
        ),
        nodes: reflect_with(
            Api::all(client.clone()),
            watcher::Config::default(),
            crate::controller::strip_node,
            None,
        ),
        agents: reflect_with(
            Api::all(client.clone()),
            watcher::Config::default().labels(&cfg.agent_selector.to_string()),
            LeanPod::strip,
            None,
        ),
        agent_selector: cfg.agent_selector.clone(),
        pods: cfg.pods.clone(),
        client: client.clone(),
        certs: certs.clone(),
        synced: AtomicBool::new(false),
    });
    // Keep the validated policies current.
    {
        let shared = shared.clone();
        let store = policies_store.clone();
        let ready = ready.clone();
        let (ca_pem, registration) = (ca_pem.clone(), registration.clone());
        let config_lock = config_lock.clone();
        let (reg_cfg, reg_client) = (cfg.clone(), client.clone());
        tokio::spawn(async move {
            if store.wait_until_ready().await.is_err() {
                return;
            }
            let _ = shared.namespaces.wait_until_ready().await;
            let _ = shared.nodes.wait_until_ready().await;
            let _ = shared.agents.wait_until_ready().await;
            loop {
                let mut valid: Vec<ValidPolicy> = store
                    .state()
                    .iter()
                    .filter_map(|g| g.0.as_ref().ok())
                    .filter_map(|p| validate(&p.name_any(), &p.spec).ok())
                    .collect();
                valid.sort_by(|a, b| a.name.cmp(&b.name));
                // A configuration this process writes registers only what the policies
                // need, updated before the webhook counts as ready.
                let mut failed = false;
                if let (Some(name), Some(url)) = (&reg_cfg.webhook_config, &reg_cfg.url) {
                    let _one_writer = config_lock.lock().await;
                    let want = super::registration::for_policies(&valid);
                    let have = registration.read().map(|r| r.clone()).unwrap_or_default();
                    let ca = ca_pem.read().map(|c| c.clone()).unwrap_or_default();
                    if want != have && !ca.is_empty() {
                        match write_webhook_config(
                            &reg_client,
                            name,
                            Some(url),
                            &ca,
                            &reg_cfg.skip_namespaces,
                            &want,
                        )
                        .await
                        {
                            Ok(()) => {
                                tracing::info!(registration = %want, "webhook registration updated for the policies");
                                if let Ok(mut r) = registration.write() {
                                    *r = want;
                                }
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "updating the webhook registration failed; retrying in 5s");
                                failed = true;
                            }
                        }
                    }
                }
                if let Ok(mut g) = shared.policies.write() {
                    *g = Arc::new(valid);
                }
                shared.synced.store(true, Ordering::Relaxed);
                ready.store(shared.certs.loaded(), Ordering::Relaxed);
                if failed {
                    let _ = tokio::time::timeout(Duration::from_secs(5), wake.notified()).await;
                } else {
                    wake.notified().await;
                }
            }
        });
    }
    let tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| Error::Cert(e.to_string()))?
    .with_no_client_auth()
    .with_cert_resolver(certs.clone());
    // HTTP/2 when the API server offers it: one connection multiplexes its concurrent calls
    // instead of a pool of HTTP/1.1 connections, each with its own handshake.
    let mut tls = tls;
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let listener = tokio::net::TcpListener::bind(cfg.addr)
        .await
        .map_err(|e| Error::Listen(cfg.addr, e))?;
    tracing::info!(addr = %cfg.addr, "webhook listening (TLS)");
    let app = router(shared.clone());
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    let stop = until_stopped(shutdown.clone());
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = tick.tick() => {
                // Hot reload of certificate files, and renewal of a self-signed one.
                if let CertSource::Files { cert, key } = &cfg.certs {
                    reload_if_changed(&certs, cert, key, &mut file_stamp);
                }
                if let (Some(at), CertSource::SelfSigned { dns, ips, validity }) = (renew_at, &cfg.certs) {
                    if Instant::now() >= at {
                        match self_signed(dns, ips, *validity) {
                            Ok((k, ca)) => {
                                // The new CA goes into the configuration before the new certificate is served.
                                let _one_writer = config_lock.lock().await;
                                let wrote = match &cfg.webhook_config {
                                    Some(name) => {
                                        let reg = registration.read().map(|r| r.clone()).unwrap_or_default();
                                        write_webhook_config(&client, name, cfg.url.as_deref(), &ca, &cfg.skip_namespaces, &reg).await.map_err(|e| e.to_string())
                                    }
                                    None => Ok(()),
                                };
                                match wrote {
                                    Ok(()) => { if let Ok(mut c) = ca_pem.write() { c.clone_from(&ca); } certs.set(k); renew_at = Some(Instant::now() + validity.mul_f64(2.0 / 3.0)); tracing::info!("renewed the self-signed certificate"); }
                                    Err(e) => tracing::warn!(error = %e, "could not write the new CA bundle; keeping the old certificate"),
                                }
                            }
                            Err(e) => tracing::warn!(error = %e, "renewing the self-signed certificate failed"),
                        }
                    }
                }
            }
            conn = listener.accept() => {
                let Ok((stream, _peer)) = conn else { continue };
                let acceptor = acceptor.clone();
                let app = app.clone();
                tokio::spawn(async move {
                    let Ok(Ok(tls)) = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await else { return };
                    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    builder.http1().timer(TokioTimer::new()).header_read_timeout(Duration::from_secs(10));
                    builder.http2().timer(TokioTimer::new()).keep_alive_interval(Duration::from_secs(30));
                    let service = TowerToHyperService::new(app);
                    // Bound a connection's life, gracefully: requests in flight are answered
                    // (a cut one would be ignored by failurePolicy Ignore: a pod without its
                    // profile), then the client reconnects.
                    let conn = builder.serve_connection(TokioIo::new(tls), service);
                    tokio::pin!(conn);
                    tokio::select! {
                        _ = conn.as_mut() => {}
                        _ = tokio::time::sleep(Duration::from_secs(300)) => {
                            conn.as_mut().graceful_shutdown();
                            let _ = tokio::time::timeout(Duration::from_secs(15), conn).await;
                        }
                    }
                });
            }
        }
    }
    Ok(())
}

/// Loads the certificate files again when their modification times changed; keeps the
/// current certificate when the new files do not load (e.g. half-written). Returns whether
/// a new certificate is served.
fn reload_if_changed(
    certs: &Certs,
    cert: &std::path::Path,
    key: &std::path::Path,
    stamp: &mut Option<(SystemTime, SystemTime)>,
) -> bool {
    let now = stamps(cert, key);
    if now == *stamp {
        return false;
    }
    match load_files(cert, key) {
        Ok(k) => {
            certs.set(k);
            *stamp = now;
            tracing::info!("reloaded the serving certificate");
            true
        }
        Err(e) => {
            tracing::warn!(error = %e, "new certificate files do not load; keeping the old ones");
            false
        }
    }
}

fn stamps(cert: &std::path::Path, key: &std::path::Path) -> Option<(SystemTime, SystemTime)> {
    let m = |p: &std::path::Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    Some((m(cert)?, m(key)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    fn shared(policies: Vec<ValidPolicy>) -> Arc<Shared> {
        // A client that is never called: no request here binds a pod.
        let client =
            Client::try_from(kube::Config::new("https://127.0.0.1:9".parse().unwrap())).unwrap();
        let (certs_key, _) =
            self_signed(&["localhost".into()], &[], Duration::from_secs(600)).unwrap();
        let certs = Arc::new(Certs {
            current: RwLock::new(None),
        });
        certs.set(certs_key);
        Arc::new(Shared {
            policies: RwLock::new(Arc::new(policies)),
            namespaces: reflector::store().0,
            nodes: reflector::store().0,
            agents: reflector::store().0,
            agent_selector: Default::default(),
            pods: Default::default(),
            client,
            certs,
            synced: AtomicBool::new(false),
        })
    }

    /// Distinct self-signed CA certificates, as PEM.
    fn cas(n: usize) -> Vec<String> {
        (0..n)
            .map(|i| {
                let key = rcgen::KeyPair::generate().unwrap();
                rcgen::CertificateParams::new(vec![format!("ca-{i}")])
                    .unwrap()
                    .self_signed(&key)
                    .unwrap()
                    .pem()
            })
            .collect()
    }

    /// The certificates of a bundle, as DER, in order.
    fn ders(bundle: &str) -> Vec<Vec<u8>> {
        use rustls::pki_types::{CertificateDer, pem::PemObject};
        CertificateDer::pem_slice_iter(bundle.as_bytes())
            .map(|c| c.unwrap().to_vec())
            .collect()
    }

    #[test]
    fn ca_bundle_keeps_other_replicas_cas_and_drops_the_oldest() {
        let ca = cas(4);
        let der: Vec<_> = ca.iter().map(|c| ders(c).remove(0)).collect();
        // Empty bundle: just ours.
        assert_eq!(ders(&merge_ca_bundle("", &ca[0], 3)), vec![der[0].clone()]);
        // Another replica's CA stays; ours is not duplicated when written again.
        let two = merge_ca_bundle(&ca[0], &ca[1], 3);
        assert_eq!(ders(&two), vec![der[0].clone(), der[1].clone()]);
        assert_eq!(merge_ca_bundle(&two, &ca[1], 3), two);
        // Ours, re-encoded by someone else (CRLF line ends), is still recognised as ours.
        let crlf = two.replace('\n', "\r\n");
        assert_eq!(ders(&merge_ca_bundle(&crlf, &ca[1], 3)), ders(&two));
        // Beyond the cap the oldest falls off; text between certificates, a section that
        // is not a certificate and one that does not decode are dropped, the rest kept.
        let full = format!(
            "{}\njunk\n{}\n-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n\
             -----BEGIN CERTIFICATE-----\n!!not base64!!\n-----END CERTIFICATE-----\n{}",
            ca[0], ca[1], ca[2]
        );
        assert_eq!(
            ders(&merge_ca_bundle(&full, &ca[3], 3)),
            vec![der[1].clone(), der[2].clone(), der[3].clone()]
        );
    }

    async fn call(app: Router, method: &str, path: &str, body: Vec<u8>) -> (u16, Vec<u8>) {
        let req = axum::http::Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", "application/json")
            .body(axum::body::Body::from(body))
            .unwrap();
        let resp = app.oneshot(req).await.unwrap();
        let code = resp.status().as_u16();
        let bytes = http_body_util::BodyExt::collect(resp.into_body())
            .await
            .unwrap()
            .to_bytes()
            .to_vec();
        (code, bytes)
    }

    #[tokio::test]
    async fn the_router_answers_reviews_limits_bodies_and_reports_readiness() {
        let pol = crate::policy::validate(
            "p",
            &serde_saphyr::from_str("profile: {injectAt: Create}").unwrap(),
        )
        .unwrap();
        let s = shared(vec![pol]);
        let review = serde_json::json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": "u-1", "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "namespace": "shop", "operation": "CREATE", "userInfo": {},
                "object": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "solo-x", "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "solo", "uid": "x", "controller": true}]},
                           "spec": {"containers": [{"name": "c", "image": "i"}]}}
            }
        });
        let (code, body) = call(
            router(s.clone()),
            "POST",
            "/mutate",
            serde_json::to_vec(&review).unwrap(),
        )
        .await;
        assert_eq!(code, 200);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["response"]["uid"], "u-1");
        assert_eq!(v["response"]["allowed"], true);
        assert_eq!(v["response"]["patchType"], "JSONPatch");
        // Garbage: a 400 that says why.
        let (code, body) = call(router(s.clone()), "POST", "/mutate", b"{".to_vec()).await;
        assert_eq!(code, 400);
        assert!(String::from_utf8_lossy(&body).contains("not JSON"));
        // Too big: refused before it is parsed.
        let (code, _) = call(
            router(s.clone()),
            "POST",
            "/mutate",
            vec![b' '; MAX_BODY + 1],
        )
        .await;
        assert_eq!(code, 413);
        // Only POST.
        let (code, _) = call(router(s.clone()), "GET", "/mutate", vec![]).await;
        assert_eq!(code, 405);
        // Ready only once policies are synced (certificates are loaded here).
        assert_eq!(
            call(router(s.clone()), "GET", "/readyz", vec![]).await.0,
            503
        );
        s.synced.store(true, Ordering::Relaxed);
        assert_eq!(
            call(router(s.clone()), "GET", "/readyz", vec![]).await.0,
            200
        );
        assert_eq!(call(router(s), "GET", "/healthz", vec![]).await.0, 200);
    }

    /// A binding's pod comes from the operator's cache when it holds that very pod (same uid);
    /// otherwise from the API server (here unreachable: the pod is then "not found").
    #[tokio::test]
    async fn a_binding_reads_its_pod_from_the_operators_cache_by_uid() {
        let pol = crate::policy::validate(
            "p",
            &serde_saphyr::from_str("profile: {injectAt: Binding}").unwrap(),
        )
        .unwrap();
        let binding = serde_json::to_vec(&serde_json::json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": "u-2", "kind": {"group": "", "version": "v1", "kind": "Binding"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "subResource": "binding", "name": "db-0",
                "namespace": "shop", "operation": "CREATE", "userInfo": {},
                "object": {"apiVersion": "v1", "kind": "Binding",
                           "metadata": {"name": "db-0", "namespace": "shop", "uid": "uid-new"},
                           "target": {"kind": "Node", "name": "n1"}}
            }
        }))
        .unwrap();
        let pod = |uid: &str| -> LeanPod {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "db-0", "namespace": "shop", "uid": uid},
                "spec": {"containers": [{"name": "c"}]}
            }))
            .unwrap()
        };
        let not_found = |body: &[u8]| String::from_utf8_lossy(body).contains("not found");
        // No operator in the process: read from the API server.
        let s = shared(vec![pol.clone()]);
        let reads = METRICS.webhook_pod_reads.get();
        let (code, body) = call(router(s.clone()), "POST", "/mutate", binding.clone()).await;
        assert_eq!(code, 200);
        assert!(not_found(&body));
        assert!(METRICS.webhook_pod_reads.get() > reads);
        // The cache holds the pod before it under the same name (a StatefulSet's): not used.
        let (store, mut writer) = reflector::store();
        writer.apply_watcher_event(&watcher::Event::Apply(pod("uid-old")));
        let _ = s.pods.set(store);
        let (_, body) = call(router(s.clone()), "POST", "/mutate", binding.clone()).await;
        assert!(not_found(&body));
        // The very pod, but a copy from before its scheduling gates were lifted: older than
        // the pod bound, so not used.
        let mut gated = pod("uid-new");
        if let Some(spec) = gated.spec.as_mut() {
            spec.scheduling_gates = Some(vec![crate::pod::Present {}]);
        }
        writer.apply_watcher_event(&watcher::Event::Apply(gated));
        let (_, body) = call(router(s.clone()), "POST", "/mutate", binding.clone()).await;
        assert!(not_found(&body));
        // The very pod: found without the API server.
        writer.apply_watcher_event(&watcher::Event::Apply(pod("uid-new")));
        let (code, body) = call(router(s), "POST", "/mutate", binding).await;
        assert_eq!(code, 200);
        assert!(!not_found(&body), "{}", String::from_utf8_lossy(&body));
    }

    #[test]
    fn self_signed_certificates_load() {
        let (k, ca) = self_signed(
            &["armor-refresh.svc".into()],
            &["127.0.0.1".parse().unwrap()],
            Duration::from_secs(3600),
        )
        .unwrap();
        assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"));
        assert_eq!(k.cert.len(), 1);
    }

    fn write_pair(dir: &std::path::Path, name: &str) -> String {
        use rcgen::{CertificateParams, KeyPair};
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec![name.to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        std::fs::write(dir.join("tls.crt"), cert.pem()).unwrap();
        std::fs::write(dir.join("tls.key"), key.serialize_pem()).unwrap();
        cert.pem()
    }

    #[test]
    fn certificate_files_are_reloaded_when_they_change() {
        let dir = std::env::temp_dir().join(format!("ar-reload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (crt, key) = (dir.join("tls.crt"), dir.join("tls.key"));
        write_pair(&dir, "first.example");
        let certs = Certs {
            current: RwLock::new(None),
        };
        let mut stamp = None;
        assert!(
            reload_if_changed(&certs, &crt, &key, &mut stamp),
            "first load"
        );
        let first = certs.current.read().unwrap().clone().unwrap().cert[0].clone();
        assert!(
            !reload_if_changed(&certs, &crt, &key, &mut stamp),
            "unchanged files are not reloaded"
        );
        // Rotate: new files with a later modification time.
        std::thread::sleep(Duration::from_millis(20));
        write_pair(&dir, "second.example");
        let later = SystemTime::now() + Duration::from_secs(2);
        for f in [&crt, &key] {
            std::fs::File::options()
                .write(true)
                .open(f)
                .unwrap()
                .set_modified(later)
                .unwrap();
        }
        assert!(
            reload_if_changed(&certs, &crt, &key, &mut stamp),
            "rotated files are served"
        );
        let second = certs.current.read().unwrap().clone().unwrap().cert[0].clone();
        assert_ne!(first, second);
        // A broken rotation keeps serving the last good certificate.
        std::fs::write(&crt, "garbage").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&crt)
            .unwrap()
            .set_modified(later + Duration::from_secs(2))
            .unwrap();
        assert!(!reload_if_changed(&certs, &crt, &key, &mut stamp));
        assert_eq!(
            certs.current.read().unwrap().clone().unwrap().cert[0],
            second
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn bad_certificate_files_are_clear_errors() {
        let dir = std::env::temp_dir().join(format!("ar-certs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("c.pem"), "not a pem").unwrap();
        std::fs::write(dir.join("k.pem"), "not a pem").unwrap();
        let e = load_files(&dir.join("c.pem"), &dir.join("k.pem"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("no certificate"), "{e}");
        let e = load_files(&dir.join("missing.pem"), &dir.join("k.pem"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing.pem"), "{e}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
