//! What the API server checks of a policy before it stores it, done offline: the CRD's
//! OpenAPI schema (types, enums, patterns, lengths, ranges, list sizes, unknown fields)
//! and its CEL rules (evaluated by kube-cel). `armor-refresh plan` runs this first, so a
//! policy it plans is one `kubectl apply` accepts, and one it rejects is rejected with the
//! same field named.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

use kube::CustomResourceExt;
use regex::Regex;
use serde_json::{Value, json};

use crate::api::ArmorRefreshPolicy;
use crate::policy::{SpecError, quote};

/// The schema of `spec`, wrapped as an object with one property `spec`.
static POLICY_SCHEMA: LazyLock<Value> = LazyLock::new(|| {
    let crd = serde_json::to_value(ArmorRefreshPolicy::crd()).expect("the CRD serialises");
    let spec =
        crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"].clone();
    json!({"type": "object", "properties": {"spec": spec}})
});

static COMPILED: LazyLock<kube_cel::CompiledSchema> =
    LazyLock::new(|| kube_cel::compile_schema(&POLICY_SCHEMA));

/// Compiled `pattern`s of the schema (a handful, each compiled once).
static PATTERNS: LazyLock<Mutex<HashMap<String, Option<Regex>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// Checks a policy's `spec` (as JSON) as the API server would; the first error found.
pub fn check_policy_spec(spec: &Value) -> Result<(), SpecError> {
    let schema = &POLICY_SCHEMA["properties"]["spec"];
    // The API server drops nulls of fields that are not nullable (the default applies) and
    // evaluates no rule on them; cel-go reads µs where the cel crate reads only us.
    let spec = &normalise(spec.clone());
    let mut errors = vec![];
    structural(schema, spec, "spec", &mut errors);
    if let Some(e) = errors.into_iter().next() {
        return Err(e);
    }
    let obj = json!({ "spec": spec });
    // A validator registers every Kubernetes CEL function: one per thread, not per call.
    thread_local! {
        static VALIDATOR: kube_cel::Validator = kube_cel::Validator::new();
    }
    let result = VALIDATOR.with(|v| v.validate_compiled(&COMPILED, &obj, None));
    if let Err(errs) = result {
        if let Some(e) = errs.as_slice().first() {
            let field = if e.field_path.is_empty() {
                "spec".to_string()
            } else {
                e.field_path.clone()
            };
            // Our rules' messages start with their field already.
            let message = e
                .message
                .strip_prefix(&format!("{field}: "))
                .unwrap_or(&e.message)
                .to_string();
            return Err(SpecError::new(field, message));
        }
    }
    Ok(())
}

fn normalise(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, normalise(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(normalise).collect()),
        Value::String(s) if s.contains(['\u{b5}', '\u{3bc}']) => {
            Value::String(s.replace("\u{b5}s", "us").replace("\u{3bc}s", "us"))
        }
        other => other,
    }
}

fn err(errors: &mut Vec<SpecError>, path: &str, message: String) {
    errors.push(SpecError::new(path, message));
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// The OpenAPI v3 subset that structural CRD schemas use.
fn structural(schema: &Value, v: &Value, path: &str, errors: &mut Vec<SpecError>) {
    if v.is_null() {
        if schema["nullable"] != json!(true) {
            err(errors, path, "must not be null".into());
        }
        return;
    }
    if schema["x-kubernetes-int-or-string"] == json!(true) {
        if !matches!(type_name(v), "integer" | "string") {
            err(
                errors,
                path,
                format!("must be an integer or a string, got {}", type_name(v)),
            );
            return;
        }
    } else if let Some(t) = schema["type"].as_str() {
        let got = type_name(v);
        let ok = got == t || (t == "number" && got == "integer");
        if !ok {
            err(errors, path, format!("must be of type {t}, got {got}"));
            return;
        }
    }
    if let Some(allowed) = schema["enum"].as_array()
        && !allowed.contains(v)
    {
        let list: Vec<String> = allowed.iter().map(|a| a.to_string()).collect();
        err(
            errors,
            path,
            format!("must be one of {}, got {v}", list.join(", ")),
        );
        return;
    }
    match v {
        Value::String(s) => string(schema, s, path, errors),
        Value::Number(n) => {
            // Out-of-range integers stored as floats by JSON parsers are out of range anyway.
            let x = n.as_f64().unwrap_or(f64::MAX);
            if let Some(min) = schema["minimum"].as_f64()
                && x < min
            {
                err(errors, path, format!("must be at least {min}, got {n}"));
            }
            if let Some(max) = schema["maximum"].as_f64()
                && x > max
            {
                err(errors, path, format!("must be at most {max}, got {n}"));
            }
        }
        Value::Array(items) => {
            if let Some(max) = schema["maxItems"].as_u64()
                && items.len() as u64 > max
            {
                err(
                    errors,
                    path,
                    format!("must have at most {max} items, has {}", items.len()),
                );
                return;
            }
            for (i, item) in items.iter().enumerate() {
                structural(&schema["items"], item, &format!("{path}[{i}]"), errors);
            }
        }
        Value::Object(map) => {
            for req in schema["required"].as_array().into_iter().flatten() {
                if let Some(k) = req.as_str()
                    && !map.contains_key(k)
                {
                    err(errors, &format!("{path}.{k}"), "is required".into());
                }
            }
            let props = schema["properties"].as_object();
            for (k, item) in map {
                let child = format!("{path}.{k}");
                match props.and_then(|p| p.get(k)) {
                    Some(s) => structural(s, item, &child, errors),
                    None if schema["additionalProperties"].is_object() => {
                        structural(&schema["additionalProperties"], item, &child, errors)
                    }
                    None if schema["x-kubernetes-preserve-unknown-fields"] == json!(true) => {}
                    // kubectl's default field validation (Strict) refuses unknown fields.
                    None => err(errors, &child, "unknown field".into()),
                }
            }
        }
        Value::Bool(_) | Value::Null => {}
    }
}

fn string(schema: &Value, s: &str, path: &str, errors: &mut Vec<SpecError>) {
    let chars = s.chars().count() as u64;
    if let Some(max) = schema["maxLength"].as_u64()
        && chars > max
    {
        err(
            errors,
            path,
            format!("may not be longer than {max} characters, has {chars}"),
        );
        return;
    }
    if let Some(min) = schema["minLength"].as_u64()
        && chars < min
    {
        err(
            errors,
            path,
            format!("must be at least {min} characters long"),
        );
        return;
    }
    if let Some(p) = schema["pattern"].as_str() {
        let mut cache = PATTERNS.lock().unwrap_or_else(|e| e.into_inner());
        let re = cache
            .entry(p.to_string())
            // Go's RE2 \s is ASCII whitespace only; Rust's is Unicode.
            .or_insert_with(|| Regex::new(&p.replace("\\s", "[\\t\\n\\f\\r ]")).ok());
        if let Some(re) = re
            && !re.is_match(s)
        {
            err(
                errors,
                path,
                format!("{} does not match the pattern {p}", quote(s)),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(yaml: &str) -> Result<(), SpecError> {
        let v: Value = serde_saphyr::from_str(yaml).unwrap();
        check_policy_spec(&v)
    }

    #[test]
    fn retention_is_optional_and_its_ttl_may_be_empty() {
        for ok in [
            "{}",
            "{retention: {}}",
            "{retention: {ttlAfterFinished: ''}}",
            "{retention: {completedRuns: 0, failedRuns: 0, ttlAfterFinished: 168h}}",
        ] {
            check(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
    }

    #[test]
    fn the_examples_pass() {
        check("{}").unwrap();
        // What the API server also accepts: nulls (defaults apply), µs, non-ASCII space.
        check("{rollout: {interval: null, batchSize: null}, windows: null}").unwrap();
        check("{rollout: {interval: 500µs, readyTimeout: 1h5μs}}").unwrap();
        check("{profile: {template: \"localhost/a\u{a0}b\"}}").unwrap();
        check("{rollout: {batchSize: '10%', interval: 1m, maxPerZone: 2}, windows: [{schedule: '0 1 * * *', duration: 4h, timeZone: Europe/Berlin}], health: {maxFailures: 3}}").unwrap();
    }

    #[test]
    fn schema_and_cel_rejections_name_the_field() {
        for (yaml, field, words) in [
            (
                "{rollout: {batchSize: 0}}",
                "spec.rollout.batchSize",
                "count from 1",
            ),
            (
                "{rollout: {batchSize: '101%'}}",
                "spec.rollout.batchSize",
                "percentage",
            ),
            (
                "{rollout: {maxPerNode: 5000000000}}",
                "spec.rollout.maxPerNode",
                "at most",
            ),
            (
                "{rollout: {maxPerZone: 0}}",
                "spec.rollout.maxPerZone",
                "at least",
            ),
            (
                "{rollout: {interval: 3000000000h}}",
                "spec.rollout.interval",
                "8760h",
            ),
            (
                "{rollout: {interval: 9000h}}",
                "spec.rollout.interval",
                "8760h",
            ),
            (
                "{rollout: {interval: soon}}",
                "spec.rollout.interval",
                "pattern",
            ),
            (
                "{rollout: {strategy: Delete}}",
                "spec.rollout.strategy",
                "one of",
            ),
            (
                "{rollout: {stratgey: Evict}}",
                "spec.rollout.stratgey",
                "unknown field",
            ),
            (
                "{windows: [{schedule: '0 1 * * *', duration: 99999999999h}]}",
                "spec.windows[0].duration",
                "",
            ),
            (
                "{stateful: {volumeReadyTimeout: 100000h}}",
                "spec.stateful.volumeReadyTimeout",
                "8760h",
            ),
            (
                "{profile: {template: 'localhost/a/../b'}}",
                "spec.profile.template",
                "",
            ),
            (
                "{profile: {injectAt: Binding, format: Field}}",
                "spec.profile",
                "Binding",
            ),
            (
                "{health: {maxFailures: -1}}",
                "spec.health.maxFailures",
                "count from 0",
            ),
            (
                "{retention: {ttlAfterFinished: 3000000000h}}",
                "spec.retention.ttlAfterFinished",
                "",
            ),
            (
                "{retention: {ttlAfterFinished: 9000h}}",
                "spec.retention.ttlAfterFinished",
                "8760h",
            ),
            (
                "{retention: {completedRuns: 1001}}",
                "spec.retention.completedRuns",
                "at most",
            ),
            (
                "{retention: {failedRuns: -1}}",
                "spec.retention.failedRuns",
                "at least",
            ),
        ] {
            let e = check(yaml).expect_err(yaml);
            assert!(e.field.starts_with(field), "{yaml}: {e}");
            assert!(e.message.contains(words), "{yaml}: {e}");
        }
    }
}
