//! The commands an on-call engineer runs against a cluster: `get`, `watch`, `pause`,
//! `resume`, `reset-breaker` and `plan --live`. What they show is rendered by pure functions
//! (tested without a cluster); the rest is a few API calls.

pub mod view;
pub mod watch;

use std::path::Path;

use chrono::{DateTime, Utc};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Node};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::api::{ArmorRefreshPolicy, ArmorRefreshRun};
use crate::cluster::ClusterFacts;
use crate::pod::LeanPod;

/// The configuration for `--kubeconfig` (else KUBECONFIG, ~/.kube/config or the in-cluster
/// config) and `--context` (else the current one), as kubectl picks them.
pub async fn kube_config(
    kubeconfig: Option<&Path>,
    context: Option<&str>,
) -> Result<kube::Config, String> {
    let options = KubeConfigOptions {
        context: context.map(str::to_string),
        ..Default::default()
    };
    let none =
        |e: String| format!("no Kubernetes configuration (set KUBECONFIG or --kubeconfig): {e}");
    Ok(match kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path)
                .map_err(|e| format!("--kubeconfig {}: {e}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &options)
                .await
                .map_err(|e| none(e.to_string()))?
        }
        None if context.is_some() => kube::Config::from_kubeconfig(&options)
            .await
            .map_err(|e| none(e.to_string()))?,
        None => kube::Config::infer()
            .await
            .map_err(|e| none(e.to_string()))?,
    })
}

/// A client for [`kube_config`].
pub async fn client(kubeconfig: Option<&Path>, context: Option<&str>) -> Result<Client, String> {
    let config = kube_config(kubeconfig, context).await?;
    Client::try_from(config).map_err(|e| format!("Kubernetes client: {e}"))
}

/// An API error as a sentence that names the object and what to do.
fn api_error(what: &str, e: kube::Error) -> String {
    match e {
        kube::Error::Api(s) if s.code == 404 => format!("{what} not found"),
        kube::Error::Api(s) if s.code == 403 => format!("{what}: forbidden ({})", s.message),
        e => format!("{what}: {e}"),
    }
}

pub async fn list_all(
    client: &Client,
) -> Result<(Vec<ArmorRefreshPolicy>, Vec<ArmorRefreshRun>), String> {
    let policies = Api::<ArmorRefreshPolicy>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map_err(|e| api_error("armorrefreshpolicies", e))?
        .items;
    let runs = Api::<ArmorRefreshRun>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map_err(|e| api_error("armorrefreshruns", e))?
        .items;
    Ok((policies, runs))
}

pub async fn get_run(client: &Client, name: &str) -> Result<ArmorRefreshRun, String> {
    Api::<ArmorRefreshRun>::all(client.clone())
        .get(name)
        .await
        .map_err(|e| api_error(&format!("armorrefreshrun {name:?}"), e))
}

/// What `pause`, `resume` and `reset-breaker` change in a run's spec.
#[derive(Debug, Clone, PartialEq)]
pub enum Steer {
    Pause,
    Resume,
    /// A new `spec.resumeToken`: closes an open circuit breaker.
    ResetBreaker {
        token: String,
    },
}

impl Steer {
    /// The merge patch of the run's spec.
    pub fn patch(&self) -> serde_json::Value {
        match self {
            Steer::Pause => serde_json::json!({"spec": {"paused": true}}),
            Steer::Resume => serde_json::json!({"spec": {"paused": false}}),
            Steer::ResetBreaker { token } => serde_json::json!({"spec": {"resumeToken": token}}),
        }
    }

    /// What to tell the user about the run as it was before the patch.
    pub fn outcome(&self, run: &ArmorRefreshRun) -> String {
        let name = run.metadata.name.as_deref().unwrap_or_default();
        let status = run.status.clone().unwrap_or_default();
        if status.phase.is_terminal() {
            return format!(
                "run {name} is {:?} already: nothing more will happen to it",
                status.phase
            );
        }
        match self {
            Steer::Pause if run.spec.paused => format!("run {name} was paused already"),
            Steer::Pause => {
                format!("run {name} paused: no eviction starts; pods in flight are still followed")
            }
            Steer::Resume if status.reason == "CircuitOpen" => format!(
                "run {name} unpaused, but its circuit breaker holds it: fix the cause, then \
                 `armor-refresh reset-breaker {name}`"
            ),
            Steer::Resume if !run.spec.paused => format!("run {name} was not paused"),
            Steer::Resume => format!("run {name} resumed"),
            Steer::ResetBreaker { .. } if status.reason != "CircuitOpen" => format!(
                "run {name}: its breaker is not open ({}); the new resume token resets the \
                 failure count the breaker compares",
                status.reason
            ),
            Steer::ResetBreaker { .. } => format!("run {name}: circuit breaker reset"),
        }
    }
}

/// Reads before a steer gives up on a run the operator keeps writing (its status moves
/// the resourceVersion the patch is conditioned on).
const STEER_TRIES: u32 = 3;

/// Applies `steer` to run `name` and says what it did. A run changed between the read and
/// the patch is read again, a few times: the operator writes its status often.
pub async fn steer(client: &Client, name: &str, steer: &Steer) -> Result<String, String> {
    let mut tries = 0;
    loop {
        tries += 1;
        match steer_once(client, name, steer).await {
            Err(Conflict) if tries < STEER_TRIES => continue,
            Err(Conflict) => {
                return Err(format!(
                    "armorrefreshrun {name:?} changed meanwhile, {STEER_TRIES} times; run the command again"
                ));
            }
            Ok(r) => return r,
        }
    }
}

/// The run changed since it was read.
struct Conflict;

async fn steer_once(
    client: &Client,
    name: &str,
    steer: &Steer,
) -> Result<Result<String, String>, Conflict> {
    let api = Api::<ArmorRefreshRun>::all(client.clone());
    let before = match get_run(client, name).await {
        Ok(r) => r,
        Err(e) => return Ok(Err(e)),
    };
    let message = steer.outcome(&before);
    if before
        .status
        .as_ref()
        .is_some_and(|s| s.phase.is_terminal())
    {
        return Ok(Err(message));
    }
    // Only if the run is still as read, so the message describes what was changed.
    let mut patch = steer.patch();
    patch["metadata"] = serde_json::json!({"resourceVersion": before.metadata.resource_version});
    match api
        .patch(name, &PatchParams::default(), &Patch::Merge(patch))
        .await
    {
        Ok(_) => Ok(Ok(message)),
        Err(kube::Error::Api(s)) if s.code == 409 => Err(Conflict),
        Err(e) => Ok(Err(api_error(&format!("armorrefreshrun {name:?}"), e))),
    }
}

async fn list<K>(client: &Client, facts: &mut ClusterFacts) -> Result<(), String>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
{
    let api = Api::<K>::all(client.clone());
    let kind = K::kind(&());
    // Pages, so a large cluster does not come back as one huge answer.
    let mut params = ListParams::default().limit(500);
    loop {
        let page = api
            .list(&params)
            .await
            .map_err(|e| api_error(&format!("listing {kind}"), e))?;
        for o in page.items {
            let mut v = serde_json::to_value(&o).map_err(|e| e.to_string())?;
            v["kind"] = kind.as_ref().into();
            facts.insert_value(v).map_err(|e| e.to_string())?;
        }
        match page.metadata.continue_ {
            Some(c) if !c.is_empty() => params = params.continue_token(&c),
            _ => return Ok(()),
        }
    }
}

/// What `plan` reads from a snapshot, read from the cluster instead.
pub async fn live_facts(client: &Client, now: DateTime<Utc>) -> Result<ClusterFacts, String> {
    let mut facts = ClusterFacts::default();
    list::<LeanPod>(client, &mut facts).await?;
    list::<Node>(client, &mut facts).await?;
    list::<Namespace>(client, &mut facts).await?;
    list::<PodDisruptionBudget>(client, &mut facts).await?;
    list::<Lease>(client, &mut facts).await?;
    list::<StatefulSet>(client, &mut facts).await?;
    list::<ReplicaSet>(client, &mut facts).await?;
    list::<Deployment>(client, &mut facts).await?;
    list::<DaemonSet>(client, &mut facts).await?;
    // Which policy governs a pod is decided among every valid one, as the operator does.
    let (policies, _) = list_all(client).await?;
    facts.policies = policies
        .iter()
        .filter_map(|p| crate::policy::validate(p.metadata.name.as_deref()?, &p.spec).ok())
        .collect();
    facts.now = Some(now);
    Ok(facts)
}

/// A policy by name from the cluster.
pub async fn get_policy(client: &Client, name: &str) -> Result<ArmorRefreshPolicy, String> {
    Api::<ArmorRefreshPolicy>::all(client.clone())
        .get(name)
        .await
        .map_err(|e| api_error(&format!("armorrefreshpolicy {name:?}"), e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ArmorRefreshRunSpec, ArmorRefreshRunStatus, Phase, PolicyRef};

    fn run(paused: bool, phase: Phase, reason: &str) -> ArmorRefreshRun {
        let mut r = ArmorRefreshRun::new(
            "r1",
            ArmorRefreshRunSpec {
                policy_ref: PolicyRef { name: "p".into() },
                dry_run: false,
                paused,
                resume_token: String::new(),
            },
        );
        r.status = Some(ArmorRefreshRunStatus {
            phase,
            reason: reason.into(),
            ..Default::default()
        });
        r
    }

    #[test]
    fn steering_patches_the_spec_and_says_what_happened() {
        assert_eq!(Steer::Pause.patch()["spec"]["paused"], true);
        assert_eq!(Steer::Resume.patch()["spec"]["paused"], false);
        let reset = Steer::ResetBreaker { token: "t1".into() };
        assert_eq!(reset.patch()["spec"]["resumeToken"], "t1");
        let batching = run(false, Phase::Batching, "Refreshing");
        assert!(Steer::Pause.outcome(&batching).contains("r1 paused"));
        assert!(Steer::Resume.outcome(&batching).contains("was not paused"));
        let open = run(false, Phase::Paused, "CircuitOpen");
        assert!(Steer::Resume.outcome(&open).contains("reset-breaker r1"));
        assert!(reset.outcome(&open).contains("circuit breaker reset"));
        assert!(reset.outcome(&batching).contains("not open (Refreshing)"));
        let paused = run(true, Phase::Paused, "UserPaused");
        assert_eq!(Steer::Resume.outcome(&paused), "run r1 resumed");
        let done = run(false, Phase::Completed, "Done");
        assert!(Steer::Pause.outcome(&done).contains("Completed already"));
    }
}
