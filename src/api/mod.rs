//! The two custom resources of `refresh.armor.dev/v1alpha1`: the API contract.
//!
//! Field paths follow the README's examples. Values the API server cannot check by
//! schema (cron expressions, time zones, duration strings, selector syntax) are kept
//! as strings here, so one bad object never breaks a watch; [`crate::policy`] parses
//! them and the operator reports `Ready=False` with a message naming the field.

mod policy;
mod run;

pub use policy::*;
pub use run::*;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// API group of both kinds.
pub const GROUP: &str = "refresh.armor.dev";
/// The field manager the operator writes status with (server-side apply).
pub const FIELD_MANAGER: &str = "armor-refresh";

/// A condition in the shape Kubernetes tools (kubectl wait, Argo CD) understand.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Type of the condition: `Ready` on policies; `Complete`, `Progressing` or `Paused` on runs.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// One CamelCase word saying why the condition has its status.
    #[serde(default)]
    pub reason: String,
    /// What a person needs to know, including how to fix a problem.
    #[serde(default)]
    pub message: String,
    /// When the status last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<DateTime<Utc>>,
    /// The `metadata.generation` the condition was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

impl Condition {
    pub fn new(type_: &str, status: bool, reason: &str, message: impl Into<String>) -> Self {
        Condition {
            type_: type_.to_string(),
            status: if status { "True" } else { "False" }.to_string(),
            reason: reason.to_string(),
            message: message.into(),
            last_transition_time: None,
            observed_generation: None,
        }
    }

    pub fn is_true(&self) -> bool {
        self.status == "True"
    }
}

/// Sets `new` in `conditions`, keeping `lastTransitionTime` when the status did not change.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    mut new: Condition,
    now: DateTime<Utc>,
    generation: Option<i64>,
) {
    new.observed_generation = generation;
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        Some(old) => {
            new.last_transition_time = if old.status == new.status {
                old.last_transition_time.or(Some(now))
            } else {
                Some(now)
            };
            *old = new;
        }
        None => {
            new.last_transition_time = Some(now);
            conditions.push(new);
        }
    }
}

/// Finds a condition by type.
pub fn condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}
