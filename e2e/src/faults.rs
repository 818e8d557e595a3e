//! Faults as a real cluster produces them, injected where the API server itself calls out: a
//! validating webhook (TLS on 127.0.0.1) on
//! - `pods/eviction`: answers a queue of scripted refusals (a 429 as KubeVirt's eviction
//!   webhook sends, a 500) or hangs past the operator's patience, so the eviction happens
//!   while its answer is lost (`failurePolicy: Ignore` lets it through after the webhook's
//!   timeout);
//! - pod creation: refuses the pods of chosen workloads (a replacement rejected at admission);
//! - Lease updates: refuses the renewals of one holder, while its reads and watches work.

use std::collections::{BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use kube::Client;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::{Value, json};

use crate::Result;

const CONFIG: &str = "armor-refresh-e2e-faults";

/// How the eviction webhook answers one request.
#[derive(Debug, Clone)]
pub enum Answer {
    /// Refuses with this HTTP code and message.
    Deny(u16, String),
    /// Answers nothing for this long (past the webhook's timeout, the API server goes on).
    Hang(Duration),
}

/// What the webhook does now; change it at any time.
#[derive(Debug, Default)]
pub struct Rules {
    /// Answers to eviction requests, first to last; allowed once empty.
    pub evictions: VecDeque<Answer>,
    /// Eviction requests seen, by pod name, in order.
    pub seen_evictions: Vec<String>,
    /// Pods labelled `app` with one of these are refused at creation.
    pub deny_create: BTreeSet<String>,
    /// Updates of the Lease named `.0` that keep `.1` as holder are refused.
    pub deny_renewals: Option<(String, String)>,
}

/// The faults webhook, registered with the API server; unregistered by [`Faults::stop`].
pub struct Faults {
    pub rules: Arc<Mutex<Rules>>,
    task: tokio::task::JoinHandle<()>,
    client: Client,
}

impl Faults {
    /// Serves the webhook for pods in `namespace` and Leases in `lease_namespace`;
    /// `timeout` is the API server's timeout for each call (1–30 s).
    pub async fn start(
        c: &Client,
        namespace: &str,
        lease_namespace: &str,
        timeout: u32,
    ) -> Result<Faults> {
        let rules = Arc::new(Mutex::new(Rules::default()));
        let shared = rules.clone();
        let server = crate::admission::serve(move |path, body| {
            let rules = shared.clone();
            async move { answer(&rules, &path, &body).await }
        })
        .await?;
        let (port, ca, task) = (server.port, server.ca, server.task);
        let ns_selector = |ns: &str| json!({"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "In", "values": [ns]}]});
        let hook = |name: &str, path: &str, rule: Value, ns: &str| {
            json!({
                "name": format!("{name}.faults.e2e.armor.dev"),
                "clientConfig": {"url": format!("https://127.0.0.1:{port}/{path}"),
                                 "caBundle": k8s_openapi::ByteString(ca.clone().into_bytes())},
                "rules": [rule],
                "namespaceSelector": ns_selector(ns),
                "failurePolicy": "Ignore",
                "sideEffects": "None",
                "timeoutSeconds": timeout.clamp(1, 30),
                "admissionReviewVersions": ["v1"]
            })
        };
        let cfg: ValidatingWebhookConfiguration = serde_json::from_value(json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": CONFIG},
            "webhooks": [
                hook("evictions", "evictions", json!({"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods/eviction"], "scope": "Namespaced"}), namespace),
                hook("pods", "pods", json!({"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"], "scope": "Namespaced"}), namespace),
                hook("leases", "leases", json!({"operations": ["UPDATE"], "apiGroups": ["coordination.k8s.io"], "apiVersions": ["v1"], "resources": ["leases"], "scope": "Namespaced"}), lease_namespace),
            ]
        }))?;
        let api: Api<ValidatingWebhookConfiguration> = Api::all(c.clone());
        let _ = api.delete(CONFIG, &DeleteParams::default()).await;
        api.create(&PostParams::default(), &cfg).await?;
        Ok(Faults {
            rules,
            task,
            client: c.clone(),
        })
    }

    /// Changes the rules.
    pub fn set(&self, f: impl FnOnce(&mut Rules)) {
        f(&mut self.rules.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// Eviction requests the API server passed to the webhook so far.
    pub fn evictions_seen(&self) -> Vec<String> {
        self.rules
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .seen_evictions
            .clone()
    }

    /// Unregisters and stops the webhook.
    pub async fn stop(self) -> Result<()> {
        let api: Api<ValidatingWebhookConfiguration> = Api::all(self.client.clone());
        let _ = api.delete(CONFIG, &DeleteParams::default()).await;
        self.task.abort();
        Ok(())
    }
}

/// Answers one AdmissionReview by the rules.
async fn answer(rules: &Mutex<Rules>, path: &str, body: &[u8]) -> Value {
    let review: Value = serde_json::from_slice(body).unwrap_or_default();
    let req = &review["request"];
    let uid = req["uid"].clone();
    let respond = |denied: Option<(u16, String)>| {
        let response = match denied {
            None => json!({"uid": uid, "allowed": true}),
            Some((code, message)) => {
                json!({"uid": uid, "allowed": false, "status": {"code": code, "message": message}})
            }
        };
        json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response})
    };
    let obj = &req["object"];
    let verdict = {
        let mut r = rules.lock().unwrap_or_else(|e| e.into_inner());
        match path {
            "evictions" => {
                let pod = req["name"].as_str().unwrap_or_default().to_string();
                r.seen_evictions.push(pod);
                r.evictions.pop_front()
            }
            "pods" => {
                let app = obj["metadata"]["labels"]["app"]
                    .as_str()
                    .unwrap_or_default();
                r.deny_create.contains(app).then(|| {
                    Answer::Deny(
                        403,
                        format!("e2e faults: pods of {app} are refused at creation"),
                    )
                })
            }
            "leases" => {
                let name = obj["metadata"]["name"].as_str().unwrap_or_default();
                let holder = obj["spec"]["holderIdentity"].as_str().unwrap_or_default();
                r.deny_renewals
                    .as_ref()
                    .filter(|(l, h)| l == name && h == holder)
                    .map(|_| Answer::Deny(503, "e2e faults: this renewal is lost".into()))
            }
            _ => None,
        }
    };
    match verdict {
        None => respond(None),
        Some(Answer::Deny(code, message)) => respond(Some((code, message))),
        Some(Answer::Hang(d)) => {
            tokio::time::sleep(d).await;
            respond(None)
        }
    }
}
