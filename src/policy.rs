//! Validation of a policy into the parsed form the core works with.
//!
//! The API server checks what a schema can (enums, minimums, patterns, CEL rules); this
//! checks the rest (cron expressions, time zones, durations, selector syntax, template
//! placeholders), and every error names the field and the fix. Controller and `plan`
//! both start here.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::core::Selector;

use crate::api::{ArmorRefreshPolicySpec, ProfileFormat, Strategy};
use crate::schedule::{Schedule, WindowSpec};

/// A spec error: the field path and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct SpecError {
    pub field: String,
    pub message: String,
}

impl SpecError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        SpecError {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// A count or a percentage of some total.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Amount {
    Count(u32),
    Percent(u32),
}

impl Amount {
    /// Resolves against `total`, rounding up and never below `min`.
    pub fn resolve_up(self, total: u32, min: u32) -> u32 {
        match self {
            Amount::Count(n) => n.max(min),
            Amount::Percent(p) => ((u64::from(total) * u64::from(p)).div_ceil(100) as u32).max(min),
        }
    }
    /// Resolves against `total`, rounding down.
    pub fn resolve_down(self, total: u32) -> u32 {
        match self {
            Amount::Count(n) => n,
            Amount::Percent(p) => (u64::from(total) * u64::from(p) / 100) as u32,
        }
    }
}

/// Parses a count or a percentage such as `5` or `"10%"`.
pub fn parse_amount(field: &str, v: &IntOrString, min: u32) -> Result<Amount, SpecError> {
    let bad = || {
        SpecError::new(
            field,
            format!(
                "must be a count of at least {min} or a percentage such as \"10%\", got {}",
                show(v)
            ),
        )
    };
    match v {
        IntOrString::Int(n) => {
            let n = u32::try_from(*n).map_err(|_| bad())?;
            if n < min {
                Err(bad())
            } else {
                Ok(Amount::Count(n))
            }
        }
        IntOrString::String(s) => {
            let s = s.trim();
            if let Some(p) = s.strip_suffix('%') {
                let p: u32 = p.parse().map_err(|_| bad())?;
                if p > 100 || p < min.min(1) {
                    return Err(bad());
                }
                Ok(Amount::Percent(p))
            } else {
                // "5" as a string is what Helm sometimes renders; accept it as a count.
                let n: u32 = s.parse().map_err(|_| bad())?;
                if n < min {
                    Err(bad())
                } else {
                    Ok(Amount::Count(n))
                }
            }
        }
    }
}

fn show(v: &IntOrString) -> String {
    match v {
        IntOrString::Int(n) => n.to_string(),
        IntOrString::String(s) => format!("{s:?}"),
    }
}

/// Parses a Go-style duration ("30s", "1h30m").
pub fn parse_duration(field: &str, s: &str) -> Result<Duration, SpecError> {
    let d: kube::core::Duration = s.parse().map_err(|e| {
        SpecError::new(
            field,
            format!("{s:?} is not a duration such as \"30s\", \"5m\" or \"1h30m\": {e}"),
        )
    })?;
    if d.is_negative() {
        return Err(SpecError::new(field, format!("{s:?} is negative")));
    }
    Ok(d.into())
}

/// A label name: at most 63 characters, alphanumeric at both ends, `-_.` inside.
fn label_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// A label key: `[prefix/]name`, the prefix a DNS subdomain.
fn label_key(k: &str) -> Result<(), String> {
    let (prefix, name) = match k.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    let prefix_ok = prefix.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 253
            && p.split('.').all(|part| {
                !part.is_empty()
                    && part.len() <= 63
                    && part.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                    && part.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                    && part
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            })
    });
    if prefix_ok && label_name(name) {
        Ok(())
    } else {
        Err("not a label key (an optional DNS prefix and '/', then up to 63 characters: alphanumerics, '-', '_', '.')".into())
    }
}

fn label_value(v: &str) -> Result<(), String> {
    if v.is_empty() || label_name(v) {
        Ok(())
    } else {
        Err(format!(
            "{v:?} is not a label value (up to 63 characters: alphanumerics, '-', '_', '.')"
        ))
    }
}

/// Parses a label selector, naming the field on error.
pub fn parse_selector(
    field: &str,
    sel: &Option<LabelSelector>,
) -> Result<Option<Selector>, SpecError> {
    match sel {
        None => Ok(None),
        Some(s) => {
            // Kubernetes rejects such selectors on its own objects; here they would silently
            // match nothing (an exclusion that excludes nothing).
            for (k, v) in s.match_labels.iter().flatten() {
                if let Err(why) = label_key(k).and_then(|_| label_value(v)) {
                    return Err(SpecError::new(
                        format!("{field}.matchLabels"),
                        format!("{k:?}: {v:?}: {why}"),
                    ));
                }
            }
            for (i, e) in s.match_expressions.iter().flatten().enumerate() {
                if let Err(why) = label_key(&e.key)
                    .and_then(|_| e.values.iter().flatten().try_for_each(|v| label_value(v)))
                {
                    return Err(SpecError::new(
                        format!("{field}.matchExpressions[{i}]"),
                        format!("{:?}: {why}", e.key),
                    ));
                }
                let values = e.values.as_ref().map_or(0, |v| v.len());
                let ok = match e.operator.as_str() {
                    "In" | "NotIn" => values > 0,
                    "Exists" | "DoesNotExist" => values == 0,
                    _ => false,
                };
                if !ok {
                    return Err(SpecError::new(
                        format!("{field}.matchExpressions[{i}]"),
                        format!(
                            "operator {:?} with {values} values is invalid: use In/NotIn with values, or Exists/DoesNotExist without",
                            e.operator
                        ),
                    ));
                }
            }
            Selector::try_from(s.clone())
                .map(Some)
                .map_err(|e| SpecError::new(field, format!("invalid label selector: {e}")))
        }
    }
}

const PLACEHOLDERS: [&str; 5] = ["namespace", "owner", "ownerKind", "pod", "container"];

/// Checks a profile template: a known kind of profile and only known placeholders.
pub fn check_template(field: &str, t: &str) -> Result<(), SpecError> {
    if !(t == "unconfined"
        || t == "runtime/default"
        || t.strip_prefix("localhost/").is_some_and(|r| !r.is_empty()))
    {
        return Err(SpecError::new(
            field,
            format!("{t:?} must be `unconfined`, `runtime/default` or `localhost/<profile name>`"),
        ));
    }
    let mut rest = t;
    while let Some(open) = rest.find('{') {
        let Some(close) = rest[open..].find('}') else {
            return Err(SpecError::new(field, format!("unclosed '{{' in {t:?}")));
        };
        let name = &rest[open + 1..open + close];
        if !PLACEHOLDERS.contains(&name) {
            return Err(SpecError::new(
                field,
                format!(
                    "unknown placeholder {{{name}}} in {t:?}; known: {{namespace}}, {{owner}}, {{ownerKind}}, {{pod}}, {{container}}"
                ),
            ));
        }
        rest = &rest[open + close + 1..];
    }
    if rest.contains('}') {
        return Err(SpecError::new(field, format!("unmatched '}}' in {t:?}")));
    }
    Ok(())
}

/// A profile override, parsed.
#[derive(Debug, Clone)]
pub struct Override {
    pub pod_selector: Selector,
    pub namespace_selector: Option<Selector>,
    pub containers: Vec<String>,
    pub profile: String,
}

/// A policy whose spec passed every check, with its values parsed.
#[derive(Debug, Clone)]
pub struct ValidPolicy {
    pub name: String,
    pub spec: ArmorRefreshPolicySpec,
    pub namespace_selector: Option<Selector>,
    pub pod_selector: Option<Selector>,
    pub exclude_pod_selector: Option<Selector>,
    pub enforcing_nodes: Option<Selector>,
    pub overrides: Vec<Override>,
    pub batch_size: Amount,
    pub max_failures: Amount,
    pub interval: Duration,
    pub ready_timeout: Duration,
    pub volume_ready_timeout: Duration,
    pub schedule: Schedule,
}

impl ValidPolicy {
    pub fn format(&self) -> ProfileFormat {
        self.spec.profile.format
    }
    pub fn strategy(&self) -> Strategy {
        self.spec.rollout.strategy
    }
}

/// Validates a policy spec; the first error found is returned (fix one thing at a time,
/// in the order of the spec).
pub fn validate(name: &str, spec: &ArmorRefreshPolicySpec) -> Result<ValidPolicy, SpecError> {
    let namespace_selector = parse_selector(
        "spec.selector.namespaceSelector",
        &spec.selector.namespace_selector,
    )?;
    let pod_selector = parse_selector("spec.selector.podSelector", &spec.selector.pod_selector)?;
    let exclude_pod_selector =
        parse_selector("spec.exclude.podSelector", &spec.exclude.pod_selector)?;
    for (i, ns) in spec.exclude.namespaces.iter().enumerate() {
        if ns.is_empty()
            || ns.len() > 63
            || !ns
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return Err(SpecError::new(
                format!("spec.exclude.namespaces[{i}]"),
                format!("{ns:?} is not a namespace name"),
            ));
        }
    }
    check_template("spec.profile.template", &spec.profile.template)?;
    if spec.profile.inject_at == crate::api::InjectAt::Binding
        && spec.profile.format != ProfileFormat::Annotation
    {
        return Err(SpecError::new(
            "spec.profile.injectAt",
            "Binding can only write annotations (a Binding carries no pod spec); set format: Annotation or injectAt: Create",
        ));
    }
    let enforcing_nodes = parse_selector(
        "spec.profile.enforcingNodeSelector",
        &spec.profile.enforcing_node_selector,
    )?;
    let mut overrides = Vec::new();
    for (i, o) in spec.profile.overrides.iter().enumerate() {
        let f = format!("spec.profile.overrides[{i}]");
        check_template(&format!("{f}.profile"), &o.profile)?;
        overrides.push(Override {
            pod_selector: parse_selector(
                &format!("{f}.podSelector"),
                &Some(o.pod_selector.clone()),
            )?
            .unwrap_or_default(),
            namespace_selector: parse_selector(
                &format!("{f}.namespaceSelector"),
                &o.namespace_selector,
            )?,
            containers: o.containers.clone(),
            profile: o.profile.clone(),
        });
    }
    let r = &spec.rollout;
    let batch_size = parse_amount("spec.rollout.batchSize", &r.batch_size, 1)?;
    let interval = parse_duration("spec.rollout.interval", &r.interval)?;
    let ready_timeout = parse_duration("spec.rollout.readyTimeout", &r.ready_timeout)?;
    if ready_timeout.is_zero() {
        return Err(SpecError::new(
            "spec.rollout.readyTimeout",
            "must be longer than 0s, e.g. \"5m\"",
        ));
    }
    if r.strategy == Strategy::RolloutRestart
        && (r.max_per_node.is_some() || r.max_per_zone.is_some())
    {
        return Err(SpecError::new(
            "spec.rollout",
            "maxPerNode and maxPerZone only apply to strategy Evict; remove them or use strategy: Evict",
        ));
    }
    if r.max_per_node == Some(0) {
        return Err(SpecError::new(
            "spec.rollout.maxPerNode",
            "must be at least 1 (or absent for no limit)",
        ));
    }
    if r.max_per_zone == Some(0) {
        return Err(SpecError::new(
            "spec.rollout.maxPerZone",
            "must be at least 1 (or absent for no limit)",
        ));
    }
    if r.topology_key.is_empty() {
        return Err(SpecError::new(
            "spec.rollout.topologyKey",
            "must name a node label such as topology.kubernetes.io/zone",
        ));
    }
    let mut windows = Vec::new();
    for (i, w) in spec.windows.iter().enumerate() {
        windows.push(WindowSpec::parse(
            &format!("spec.windows[{i}]"),
            &w.schedule,
            &w.duration,
            &w.time_zone,
        )?);
    }
    let max_failures = parse_amount("spec.health.maxFailures", &spec.health.max_failures, 0)?;
    let volume_ready_timeout = parse_duration(
        "spec.stateful.volumeReadyTimeout",
        &spec.stateful.volume_ready_timeout,
    )?;
    Ok(ValidPolicy {
        name: name.to_string(),
        spec: spec.clone(),
        namespace_selector,
        pod_selector,
        exclude_pod_selector,
        enforcing_nodes,
        overrides,
        batch_size,
        max_failures,
        interval,
        ready_timeout,
        volume_ready_timeout,
        schedule: Schedule::new(windows),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Window;

    fn spec() -> ArmorRefreshPolicySpec {
        serde_yaml::from_str("{}").unwrap()
    }

    #[test]
    fn defaults_are_valid() {
        let p = validate("p", &spec()).unwrap();
        assert_eq!(p.batch_size, Amount::Count(1));
        assert_eq!(p.interval, Duration::from_secs(30));
        assert_eq!(p.ready_timeout, Duration::from_secs(300));
        assert_eq!(p.spec.exclude.namespaces, vec!["kube-system"]);
        assert!(p.schedule.is_always_open());
    }

    #[test]
    fn amounts() {
        assert_eq!(
            parse_amount("f", &IntOrString::Int(5), 1),
            Ok(Amount::Count(5))
        );
        assert_eq!(
            parse_amount("f", &IntOrString::String("10%".into()), 1),
            Ok(Amount::Percent(10))
        );
        assert_eq!(
            parse_amount("f", &IntOrString::String("7".into()), 1),
            Ok(Amount::Count(7))
        );
        assert!(parse_amount("f", &IntOrString::Int(0), 1).is_err());
        assert!(parse_amount("f", &IntOrString::Int(-1), 0).is_err());
        assert!(parse_amount("f", &IntOrString::String("0%".into()), 1).is_err());
        assert_eq!(
            parse_amount("f", &IntOrString::String("0%".into()), 0),
            Ok(Amount::Percent(0))
        );
        assert!(parse_amount("f", &IntOrString::String("101%".into()), 1).is_err());
        assert!(parse_amount("f", &IntOrString::String("ten".into()), 1).is_err());
        let e = parse_amount(
            "spec.rollout.batchSize",
            &IntOrString::String("x%".into()),
            1,
        )
        .unwrap_err();
        assert_eq!(e.field, "spec.rollout.batchSize");
        assert_eq!(Amount::Percent(10).resolve_up(95, 1), 10);
        assert_eq!(Amount::Percent(1).resolve_up(5, 1), 1);
        assert_eq!(Amount::Percent(50).resolve_up(0, 1), 1);
        assert_eq!(Amount::Percent(10).resolve_down(95), 9);
        assert_eq!(Amount::Count(3).resolve_down(95), 3);
    }

    #[test]
    fn errors_name_the_field() {
        let mut s = spec();
        s.rollout.interval = "soon".into();
        assert_eq!(
            validate("p", &s).unwrap_err().field,
            "spec.rollout.interval"
        );

        let mut s = spec();
        s.windows = vec![Window {
            schedule: "0 25 * * *".into(),
            duration: "1h".into(),
            time_zone: "UTC".into(),
        }];
        assert_eq!(
            validate("p", &s).unwrap_err().field,
            "spec.windows[0].schedule"
        );

        let mut s = spec();
        s.windows = vec![Window {
            schedule: "0 1 * * *".into(),
            duration: "1h".into(),
            time_zone: "Mars/Olympus".into(),
        }];
        let e = validate("p", &s).unwrap_err();
        assert_eq!(e.field, "spec.windows[0].timeZone");
        assert!(e.message.contains("Mars/Olympus"), "{e}");

        let mut s = spec();
        s.profile.template = "localhost/kubearmor-{namespace}-{workload}".into();
        let e = validate("p", &s).unwrap_err();
        assert_eq!(e.field, "spec.profile.template");
        assert!(e.message.contains("{workload}"));

        let mut s = spec();
        s.selector.pod_selector = Some(LabelSelector {
            match_expressions: Some(vec![
                k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement {
                    key: "app".into(),
                    operator: "Equals".into(),
                    values: Some(vec!["x".into()]),
                },
            ]),
            ..Default::default()
        });
        assert_eq!(
            validate("p", &s).unwrap_err().field,
            "spec.selector.podSelector.matchExpressions[0]"
        );

        let mut s = spec();
        s.rollout.strategy = Strategy::RolloutRestart;
        s.rollout.max_per_zone = Some(1);
        assert_eq!(validate("p", &s).unwrap_err().field, "spec.rollout");

        let mut s = spec();
        s.profile.inject_at = crate::api::InjectAt::Binding;
        s.profile.format = ProfileFormat::Field;
        assert_eq!(
            validate("p", &s).unwrap_err().field,
            "spec.profile.injectAt"
        );

        let mut s = spec();
        s.exclude.namespaces = vec!["Kube System".into()];
        assert_eq!(
            validate("p", &s).unwrap_err().field,
            "spec.exclude.namespaces[0]"
        );
    }

    #[test]
    fn templates() {
        assert!(check_template("f", "unconfined").is_ok());
        assert!(check_template("f", "runtime/default").is_ok());
        assert!(check_template("f", "localhost/x-{ownerKind}-{pod}").is_ok());
        assert!(check_template("f", "localhost/").is_err());
        assert!(check_template("f", "docker-default").is_err());
        assert!(check_template("f", "localhost/{namespace").is_err());
        assert!(check_template("f", "localhost/namespace}").is_err());
    }
}

#[cfg(test)]
mod label_tests {
    use super::*;

    #[test]
    fn label_keys_and_values_follow_kubernetes() {
        for k in [
            "app",
            "app.kubernetes.io/name",
            "refresh.armor.dev/exclude",
            "a_b.c-d",
            "x/y",
        ] {
            assert!(label_key(k).is_ok(), "{k}");
        }
        for k in [
            "",
            "bad key!",
            "-app",
            "app-",
            "/app",
            "Upper.Case/x",
            "a/b/c",
            &"x".repeat(64),
        ] {
            assert!(label_key(k).is_err(), "{k}");
        }
        assert!(label_value("").is_ok() && label_value("v1.2_3").is_ok());
        assert!(label_value("has space").is_err() && label_value(&"v".repeat(64)).is_err());
        let sel: LabelSelector = serde_yaml::from_str("matchLabels: {\"bad key!\": x}").unwrap();
        let e = parse_selector("spec.exclude.podSelector", &Some(sel)).unwrap_err();
        assert_eq!(e.field, "spec.exclude.podSelector.matchLabels");
        let sel: LabelSelector =
            serde_yaml::from_str("matchExpressions: [{key: app, operator: In, values: [\"a b\"]}]")
                .unwrap();
        let e = parse_selector("spec.selector.podSelector", &Some(sel)).unwrap_err();
        assert_eq!(e.field, "spec.selector.podSelector.matchExpressions[0]");
    }
}
