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

use crate::api::{
    ArmorRefreshPolicySpec, ENFORCER_LABEL, InjectAt, ProfileFormat, ProfileSpec, Strategy,
};
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
                "must be a count from {min} to {MAX_COUNT} or a percentage such as \"10%\", got {}",
                show(v)
            ),
        )
    };
    match v {
        IntOrString::Int(n) => {
            let n = u32::try_from(*n).map_err(|_| bad())?;
            if n < min || i64::from(n) > MAX_COUNT {
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
                if n < min || i64::from(n) > MAX_COUNT {
                    Err(bad())
                } else {
                    Ok(Amount::Count(n))
                }
            }
        }
    }
}

/// The largest count a policy may give (batch size, per-node and per-zone limits, failures).
pub const MAX_COUNT: i64 = 1_000_000;

/// An optional per-node or per-zone limit: absent, or 1 to [`MAX_COUNT`].
fn parse_limit(field: &str, v: Option<i64>) -> Result<Option<u32>, SpecError> {
    match v {
        None => Ok(None),
        Some(n) if (1..=MAX_COUNT).contains(&n) => Ok(Some(n as u32)),
        Some(n) => Err(SpecError::new(
            field,
            format!("{n} is out of range: must be from 1 to {MAX_COUNT} (or absent for no limit)"),
        )),
    }
}

fn show(v: &IntOrString) -> String {
    match v {
        IntOrString::Int(n) => n.to_string(),
        IntOrString::String(s) => quote(s),
    }
}

/// The longest duration a policy may name: one year. Longer ones are mistakes (a window
/// that never closes, a batch that never ends), and every instant computed from a bounded
/// duration stays far inside chrono's range, so time arithmetic cannot overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// Why a Go duration string does not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DurationError {
    Syntax,
    Unit,
    TooLong,
}

/// Go's `time.ParseDuration` grammar (`[-+]?([0-9]*(\.[0-9]*)?[a-zµμ]+)+`, or `0`), in
/// integer nanoseconds with checked arithmetic: an overlong value is an error, never a
/// panic. (kube's `Duration` parser multiplies floats and panics past `u64` seconds.)
fn go_duration(s: &str) -> Result<(bool, u128), DurationError> {
    const MAX_NANOS: u128 = 1 << 100; // far past any bound we accept; keeps u128 exact
    let (neg, mut rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Ok((neg, 0));
    }
    if rest.is_empty() {
        return Err(DurationError::Syntax);
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (int, after) = rest.split_at(int_len);
        let (frac, after) = match after.strip_prefix('.') {
            Some(a) => {
                let n = a.bytes().take_while(u8::is_ascii_digit).count();
                a.split_at(n)
            }
            None => ("", after),
        };
        if int.is_empty() && frac.is_empty() {
            return Err(DurationError::Syntax);
        }
        let unit_len = after
            .char_indices()
            .find(|(_, c)| c.is_ascii_digit() || *c == '.')
            .map_or(after.len(), |(i, _)| i);
        let (unit, next) = after.split_at(unit_len);
        let scale: u128 = match unit {
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "" => return Err(DurationError::Syntax),
            _ => return Err(DurationError::Unit),
        };
        // Integer part: any digit count, but the value must stay below the cap.
        let mut v: u128 = 0;
        for d in int.bytes() {
            v = v * 10 + u128::from(d - b'0');
            if v.saturating_mul(scale) > MAX_NANOS {
                return Err(DurationError::TooLong);
            }
        }
        let mut nanos = v * scale;
        // Fraction: digits beyond the nanosecond are dropped, as Go does.
        let mut place = scale;
        for d in frac.bytes() {
            place /= 10;
            if place == 0 {
                break;
            }
            nanos += u128::from(d - b'0') * place;
        }
        total = total.saturating_add(nanos);
        if total > MAX_NANOS {
            return Err(DurationError::TooLong);
        }
        rest = next;
    }
    Ok((neg, total))
}

/// Parses a Go-style duration ("30s", "1h30m") of at most [`MAX_DURATION`].
pub fn parse_duration(field: &str, s: &str) -> Result<Duration, SpecError> {
    let too_long = || {
        SpecError::new(
            field,
            format!(
                "{} is longer than the maximum of 8760h (one year)",
                quote(s)
            ),
        )
    };
    match go_duration(s) {
        Ok((true, n)) if n > 0 => Err(SpecError::new(field, format!("{} is negative", quote(s)))),
        Ok((_, n)) => {
            let max = MAX_DURATION.as_nanos();
            if n > max {
                return Err(too_long());
            }
            Ok(Duration::from_nanos(n as u64))
        }
        Err(DurationError::TooLong) => Err(too_long()),
        Err(e) => Err(SpecError::new(
            field,
            format!(
                "{} is not a duration such as \"30s\", \"5m\" or \"1h30m\"{}",
                quote(s),
                if e == DurationError::Unit {
                    " (units: ns, us, ms, s, m, h)"
                } else {
                    ""
                }
            ),
        )),
    }
}

/// A user's string in a message: quoted, and cut so that a hostile value cannot make a
/// condition or a status message grow without bound.
pub fn quote(s: &str) -> String {
    const MAX: usize = 80;
    if s.len() <= MAX {
        return format!("{s:?}");
    }
    format!("{:?}... ({} bytes)", cut(s, MAX), s.len())
}

/// The longest prefix of `s` of at most `max` bytes that ends at a character boundary.
pub fn cut(s: &str, max: usize) -> &str {
    let mut end = max.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
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
    if let Some(name) = t.strip_prefix("localhost/")
        && (name.contains('/') || name.contains("..") || name.contains('\\'))
    {
        return Err(SpecError::new(
            field,
            format!(
                "a localhost/ profile name may not contain '/', '\\' or '..' (KubeArmor's agent stores each profile as a file): {}",
                quote(t)
            ),
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

/// Where the webhook may inject: the enforcing-node selector and whether an agent must run
/// there, resolved against `injectAt`. `Create` cannot know the node, so it cannot gate on it:
/// a replacement would never get its profile and be a target again, run after run.
fn check_injection(p: &ProfileSpec) -> Result<(Option<Selector>, bool), SpecError> {
    check_create_template(p, "spec.profile.template", &p.template)?;
    match p.inject_at {
        InjectAt::Binding => {
            if p.format != ProfileFormat::Annotation {
                return Err(SpecError::new(
                    "spec.profile.format",
                    "Field and Both need injectAt: Create (the default injectAt Binding can only write annotations: a Binding carries no pod spec)",
                ));
            }
            let default = LabelSelector {
                match_labels: Some([(ENFORCER_LABEL.to_string(), "apparmor".to_string())].into()),
                match_expressions: None,
            };
            let sel = p.enforcing_node_selector.clone().unwrap_or(default);
            let nodes = parse_selector("spec.profile.enforcingNodeSelector", &Some(sel))?;
            Ok((nodes, p.require_agent.unwrap_or(true)))
        }
        InjectAt::Create => {
            let gated = p.enforcing_node_selector.as_ref().is_some_and(|s| {
                s.match_labels.as_ref().is_some_and(|m| !m.is_empty())
                    || s.match_expressions.as_ref().is_some_and(|m| !m.is_empty())
            });
            if gated {
                return Err(SpecError::new(
                    "spec.profile.enforcingNodeSelector",
                    "with injectAt Create the node is unknown when the webhook injects, so replacements would never get their profile; use injectAt: Binding",
                ));
            }
            if p.require_agent == Some(true) {
                return Err(SpecError::new(
                    "spec.profile.requireAgent",
                    "with injectAt Create the node is unknown when the webhook injects; use injectAt: Binding",
                ));
            }
            Ok((None, false))
        }
    }
}

/// `{pod}` with `injectAt: Create`: controllers create pods with `generateName`, so the name
/// is unknown when the webhook injects and a replacement would never match.
fn check_create_template(p: &ProfileSpec, field: &str, t: &str) -> Result<(), SpecError> {
    if p.inject_at == InjectAt::Create && t.contains("{pod}") {
        return Err(SpecError::new(
            field,
            "{pod} needs injectAt: Binding: at creation a pod made by a controller has no name yet",
        ));
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
    /// Nodes that enforce AppArmor; `None`: every node (injectAt Create).
    pub enforcing_nodes: Option<Selector>,
    /// A Running KubeArmor agent must be on the node.
    pub require_agent: bool,
    pub overrides: Vec<Override>,
    pub batch_size: Amount,
    pub max_failures: Amount,
    pub interval: Duration,
    pub ready_timeout: Duration,
    pub volume_ready_timeout: Duration,
    pub max_per_node: Option<u32>,
    pub max_per_zone: Option<u32>,
    pub schedule: Schedule,
    pub retention: crate::retention::Retention,
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
    let (enforcing_nodes, require_agent) = check_injection(&spec.profile)?;
    let mut overrides = Vec::new();
    for (i, o) in spec.profile.overrides.iter().enumerate() {
        let f = format!("spec.profile.overrides[{i}]");
        check_template(&format!("{f}.profile"), &o.profile)?;
        check_create_template(&spec.profile, &format!("{f}.profile"), &o.profile)?;
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
    let max_per_node = parse_limit("spec.rollout.maxPerNode", r.max_per_node)?;
    let max_per_zone = parse_limit("spec.rollout.maxPerZone", r.max_per_zone)?;
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
    if volume_ready_timeout.is_zero() {
        return Err(SpecError::new(
            "spec.stateful.volumeReadyTimeout",
            "must be longer than 0s, e.g. \"15m\" (0s would fail every pod with volumes at once)",
        ));
    }
    let retention = crate::retention::Retention {
        completed: spec.retention.completed_runs as usize,
        failed: spec.retention.failed_runs as usize,
        ttl: match spec.retention.ttl_after_finished.as_str() {
            "" => None,
            ttl => Some(parse_duration("spec.retention.ttlAfterFinished", ttl)?),
        },
    };
    Ok(ValidPolicy {
        retention,
        name: name.to_string(),
        spec: spec.clone(),
        namespace_selector,
        pod_selector,
        exclude_pod_selector,
        enforcing_nodes,
        require_agent,
        overrides,
        batch_size,
        max_failures,
        interval,
        ready_timeout,
        volume_ready_timeout,
        max_per_node,
        max_per_zone,
        schedule: Schedule::new(windows),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Window;
    use std::collections::BTreeMap;

    fn spec() -> ArmorRefreshPolicySpec {
        serde_saphyr::from_str("{}").unwrap()
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
    fn durations_follow_go_and_never_panic() {
        let ok = |s: &str| parse_duration("f", s).unwrap();
        assert_eq!(ok("30s"), Duration::from_secs(30));
        assert_eq!(ok("1h30m"), Duration::from_secs(5400));
        assert_eq!(ok("1.5h"), Duration::from_secs(5400));
        assert_eq!(ok(".5s"), Duration::from_millis(500));
        assert_eq!(ok("1.s"), Duration::from_secs(1));
        assert_eq!(ok("0"), Duration::ZERO);
        assert_eq!(ok("-0"), Duration::ZERO);
        assert_eq!(ok("+5m"), Duration::from_secs(300));
        assert_eq!(ok("2\u{b5}s3\u{3bc}s4us"), Duration::from_micros(9));
        assert_eq!(ok("1.0000000001s"), Duration::from_secs(1)); // past ns: dropped, as Go does
        assert_eq!(ok("8760h"), MAX_DURATION);
        for bad in [
            "", "s", ".s", "5", "5x", "1h5", "-", "--5s", "5 s", "1e9s", "infh", "NaNs",
        ] {
            let e = parse_duration("spec.rollout.interval", bad).unwrap_err();
            assert_eq!(e.field, "spec.rollout.interval", "{bad}");
            assert!(e.message.contains("not a duration"), "{bad}: {e}");
        }
        for long in [
            "8760h1ns",
            "3000000000h",
            "99999999999999999999999999999999999999999999h",
            "0.00000000000000000000000000000000000001h9999999999999999999999h",
        ] {
            let e = parse_duration("f", long).unwrap_err();
            assert!(e.message.contains("8760h"), "{long}: {e}");
        }
        assert!(
            parse_duration("f", "-5s")
                .unwrap_err()
                .message
                .contains("negative")
        );
        // A hostile value is quoted short in the message.
        let e = parse_duration("f", &"9".repeat(10_000)).unwrap_err();
        assert!(e.message.len() < 200, "{}", e.message.len());
    }

    proptest::proptest! {
        /// Agrees with kube's parser (Go's grammar) wherever that one does not panic.
        #[test]
        fn durations_agree_with_kube(parts in proptest::collection::vec(
            (0u64..100_000, proptest::option::of(0u32..1_000_000),
             proptest::sample::select(vec!["ns", "us", "ms", "s", "m", "h"])), 1..4)) {
            let s: String = parts.iter().map(|(i, f, u)| match f {
                Some(f) => format!("{i}.{f:06}{u}"),
                None => format!("{i}{u}"),
            }).collect();
            let theirs: Duration = s.parse::<kube::core::Duration>().unwrap().into();
            match parse_duration("f", &s) {
                // kube multiplies floats: allow a microsecond of rounding per part.
                Ok(mine) => proptest::prop_assert!(mine.abs_diff(theirs).as_nanos() <= 1000 * parts.len() as u128, "{s}: {mine:?} vs {theirs:?}"),
                Err(e) => proptest::prop_assert!(theirs > MAX_DURATION, "{s}: {e}"),
            }
        }

        #[test]
        fn any_string_is_a_duration_or_an_error(s in "\\PC{0,40}") {
            let _ = parse_duration("f", &s);
        }
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

        // Field alone without an explicit injectAt: Create (Binding writes annotations only).
        let mut s = spec();
        s.profile.format = ProfileFormat::Field;
        assert_eq!(validate("p", &s).unwrap_err().field, "spec.profile.format");
        s.profile.inject_at = InjectAt::Create;
        assert!(validate("p", &s).is_ok());

        // Creation-time injection cannot gate on nodes: such replacements never converge.
        let mut s = spec();
        s.profile.inject_at = InjectAt::Create;
        s.profile.enforcing_node_selector = Some(LabelSelector {
            match_labels: Some([(ENFORCER_LABEL.to_string(), "apparmor".to_string())].into()),
            match_expressions: None,
        });
        assert_eq!(
            validate("p", &s).unwrap_err().field,
            "spec.profile.enforcingNodeSelector"
        );
        s.profile.enforcing_node_selector = Some(LabelSelector::default());
        let v = validate("p", &s).unwrap();
        assert!(v.enforcing_nodes.is_none() && !v.require_agent);
        s.profile.require_agent = Some(true);
        assert_eq!(
            validate("p", &s).unwrap_err().field,
            "spec.profile.requireAgent"
        );

        // {pod} is unknown at creation for pods made by controllers.
        let mut s = spec();
        s.profile.inject_at = InjectAt::Create;
        s.profile.template = "localhost/p-{pod}".into();
        assert_eq!(
            validate("p", &s).unwrap_err().field,
            "spec.profile.template"
        );
        s.profile.inject_at = InjectAt::Binding;
        assert!(validate("p", &s).is_ok());

        // The default: KubeArmor's rule, an AppArmor node with a Running agent.
        let v = validate("p", &spec()).unwrap();
        assert!(v.require_agent);
        let apparmor: BTreeMap<String, String> =
            [(ENFORCER_LABEL.to_string(), "apparmor".to_string())].into();
        let bpf: BTreeMap<String, String> =
            [(ENFORCER_LABEL.to_string(), "bpf".to_string())].into();
        assert!(crate::compliance::node_enforces(&v, Some(&apparmor), true));
        assert!(!crate::compliance::node_enforces(
            &v,
            Some(&apparmor),
            false
        ));
        assert!(!crate::compliance::node_enforces(&v, Some(&bpf), true));
        assert!(!crate::compliance::node_enforces(&v, None, true));

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
        let sel: LabelSelector = serde_saphyr::from_str("matchLabels: {\"bad key!\": x}").unwrap();
        let e = parse_selector("spec.exclude.podSelector", &Some(sel)).unwrap_err();
        assert_eq!(e.field, "spec.exclude.podSelector.matchLabels");
        let sel: LabelSelector = serde_saphyr::from_str(
            "matchExpressions: [{key: app, operator: In, values: [\"a b\"]}]",
        )
        .unwrap();
        let e = parse_selector("spec.selector.podSelector", &Some(sel)).unwrap_err();
        assert_eq!(e.field, "spec.selector.podSelector.matchExpressions[0]");
    }
}
