//! Prometheus metrics (prometheus-client), served on `/metrics` with `/healthz` and `/readyz`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: String,
}
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyLabel {
    pub policy: String,
}
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RunPhaseLabel {
    pub run: String,
    pub phase: String,
}
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RunLabel {
    pub run: String,
}
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabel {
    pub verb: String,
}
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AdmissionLabel {
    pub operation: String,
    pub result: String,
}

/// Every metric of the process.
pub struct Metrics {
    pub registry: Mutex<Registry>,
    pub pods_refreshed: Counter,
    pub evictions: Family<ResultLabel, Counter>,
    pub breaker_trips: Counter,
    pub run_phase: Family<RunPhaseLabel, Gauge>,
    pub run_breaker_open: Family<RunLabel, Gauge>,
    pub run_pods_refreshed: Family<RunLabel, Gauge>,
    pub run_next_batch: Family<RunLabel, Gauge>,
    pub batch_duration: Histogram,
    pub noncompliant: Family<PolicyLabel, Gauge>,
    pub reconcile_errors: Family<ReasonLabel, Counter>,
    pub api_writes: Family<WriteLabel, Counter>,
    pub admission_requests: Family<AdmissionLabel, Counter>,
    pub admission_latency: Histogram,
    /// Bindings whose pod the webhook read from the API server, not the operator's cache.
    pub webhook_pod_reads: Counter,
    pub object_events: Family<ResultLabel, Counter>,
    /// Runs and policies that have series, so those of deleted ones can be removed
    /// (a Family cannot list its labels).
    exported: Mutex<Exported>,
}

#[derive(Default)]
struct Exported {
    runs: std::collections::BTreeSet<String>,
    policies: std::collections::BTreeSet<String>,
}

/// Every `reason` of `reconcile_errors` and `verb` of `api_writes`, and every `result` of
/// `evictions` and `object_events`: each series exists from the start at 0, so `rate()` and
/// alerts see the first error (Prometheus's advice on missing metrics).
pub const RECONCILE_ERRORS: [&str; 10] = [
    "clock",
    "create_run",
    "delete_run",
    "event",
    "fence",
    "fresh_read",
    "invalid_object",
    "overloaded",
    "status_write",
    "watch",
];
pub const WRITE_VERBS: [&str; 9] = [
    "apply_webhook_config",
    "create",
    "delete",
    "dry_run",
    "event",
    "evict",
    "patch_status",
    "patch_webhook_config",
    "patch_workload",
];
pub const EVICTION_RESULTS: [&str; 7] = [
    "ok",
    "refused",
    "not_found",
    "retry",
    "busy",
    "unknown",
    "rejected",
];
pub const OBJECT_EVENT_RESULTS: [&str; 4] = ["published", "failed", "throttled", "dropped"];
/// The `operation` (resource/subresource) and `result` of `admission_requests`.
pub const ADMISSION_OPERATIONS: [&str; 2] = ["pods", "pods/binding"];
pub const ADMISSION_RESULTS: [&str; 4] = ["patched", "unchanged", "skipped", "error"];

/// The phases `run_phase` has a series for, per run.
const PHASES: [&str; 5] = ["Pending", "Batching", "Paused", "Completed", "Failed"];

pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

impl Metrics {
    fn new() -> Metrics {
        let m = Metrics {
            registry: Mutex::new(Registry::with_prefix("armor_refresh")),
            pods_refreshed: Counter::default(),
            evictions: Family::default(),
            breaker_trips: Counter::default(),
            run_phase: Family::default(),
            run_breaker_open: Family::default(),
            run_pods_refreshed: Family::default(),
            run_next_batch: Family::default(),
            batch_duration: Histogram::new(exponential_buckets(1.0, 2.0, 14)),
            noncompliant: Family::default(),
            reconcile_errors: Family::default(),
            api_writes: Family::default(),
            admission_requests: Family::default(),
            admission_latency: Histogram::new(exponential_buckets(0.00005, 2.0, 16)),
            webhook_pod_reads: Counter::default(),
            object_events: Family::default(),
            exported: Mutex::new(Exported::default()),
        };
        let result = |r: &str| ResultLabel { result: r.into() };
        for r in EVICTION_RESULTS {
            let _ = m.evictions.get_or_create(&result(r));
        }
        for r in OBJECT_EVENT_RESULTS {
            let _ = m.object_events.get_or_create(&result(r));
        }
        for reason in RECONCILE_ERRORS {
            let _ = m.reconcile_errors.get_or_create(&ReasonLabel {
                reason: reason.into(),
            });
        }
        for operation in ADMISSION_OPERATIONS {
            for result in ADMISSION_RESULTS {
                let _ = m.admission_requests.get_or_create(&AdmissionLabel {
                    operation: operation.into(),
                    result: result.into(),
                });
            }
        }
        for verb in WRITE_VERBS {
            let _ = m
                .api_writes
                .get_or_create(&WriteLabel { verb: verb.into() });
        }
        {
            let mut r = m.registry.lock().expect("fresh mutex");
            r.register(
                "pods_refreshed",
                "Target pods whose replacement is Ready with its profile",
                m.pods_refreshed.clone(),
            );
            r.register(
                "evictions",
                "Eviction API calls by result (ok, refused, not_found, retry, unknown, rejected)",
                m.evictions.clone(),
            );
            r.register(
                "breaker_trips",
                "Times a run's circuit breaker opened",
                m.breaker_trips.clone(),
            );
            r.register(
                "run_phase",
                "1 for the phase each run is in",
                m.run_phase.clone(),
            );
            r.register(
                "run_breaker_open",
                "1 while a run's circuit breaker holds it paused",
                m.run_breaker_open.clone(),
            );
            r.register(
                "run_pods_refreshed",
                "Target pods a run has refreshed so far",
                m.run_pods_refreshed.clone(),
            );
            r.register(
                "run_next_batch_timestamp_seconds",
                "When a run's next wave or slot refill may start (Unix time; 0 when not waiting)",
                m.run_next_batch.clone(),
            );
            r.register(
                "batch_duration_seconds",
                "From a batch's start to its last pod settling",
                m.batch_duration.clone(),
            );
            r.register(
                "noncompliant_pods",
                "Selected pods still lacking their profile, per policy",
                m.noncompliant.clone(),
            );
            r.register(
                "reconcile_errors",
                "Reconcile errors by reason",
                m.reconcile_errors.clone(),
            );
            r.register(
                "api_writes",
                "Writes to the API server by verb",
                m.api_writes.clone(),
            );
            r.register(
                "admission_requests",
                "Admission requests by operation and result",
                m.admission_requests.clone(),
            );
            r.register(
                "admission_duration_seconds",
                "Time to answer an admission request",
                m.admission_latency.clone(),
            );
            r.register(
                "webhook_pod_reads",
                "Bindings whose pod the webhook read from the API server, not found in the operator's cache",
                m.webhook_pod_reads.clone(),
            );
            r.register(
                "object_events",
                "Events on evicted pods and their workloads by result (published, failed, throttled, dropped)",
                m.object_events.clone(),
            );
        }
        m
    }

    pub fn reconcile_error(&self, reason: &str) {
        self.reconcile_errors
            .get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            })
            .inc();
    }

    /// 1 for `run`'s phase, 0 for the others; whether its breaker is open; its progress;
    /// when it may next start a wave or refill a slot (Unix seconds, 0 if not waiting).
    pub fn set_run(
        &self,
        run: &str,
        phase: &str,
        breaker_open: bool,
        refreshed: u32,
        next_batch: i64,
    ) {
        let label = RunLabel { run: run.into() };
        self.run_next_batch.get_or_create(&label).set(next_batch);
        self.run_breaker_open
            .get_or_create(&label)
            .set(i64::from(breaker_open));
        self.run_pods_refreshed
            .get_or_create(&label)
            .set(i64::from(refreshed));
        for p in PHASES {
            self.run_phase
                .get_or_create(&RunPhaseLabel {
                    run: run.to_string(),
                    phase: p.to_string(),
                })
                .set(i64::from(p == phase));
        }
        self.exported().runs.insert(run.to_string());
    }

    pub fn set_noncompliant(&self, policy: &str, pods: u32) {
        self.noncompliant
            .get_or_create(&PolicyLabel {
                policy: policy.to_string(),
            })
            .set(i64::from(pods));
        self.exported().policies.insert(policy.to_string());
    }

    /// Removes the series of runs and policies that no longer exist, so a deleted run does
    /// not report its last phase forever.
    pub fn forget_missing(
        &self,
        runs: &std::collections::HashSet<&str>,
        policies: &std::collections::HashSet<&str>,
    ) {
        let mut e = self.exported();
        e.runs.retain(|run| {
            let keep = runs.contains(run.as_str());
            if !keep {
                let label = RunLabel { run: run.clone() };
                self.run_breaker_open.remove(&label);
                self.run_pods_refreshed.remove(&label);
                self.run_next_batch.remove(&label);
                for p in PHASES {
                    self.run_phase.remove(&RunPhaseLabel {
                        run: run.clone(),
                        phase: p.to_string(),
                    });
                }
            }
            keep
        });
        e.policies.retain(|policy| {
            let keep = policies.contains(policy.as_str());
            if !keep {
                self.noncompliant.remove(&PolicyLabel {
                    policy: policy.clone(),
                });
            }
            keep
        });
    }

    fn exported(&self) -> std::sync::MutexGuard<'_, Exported> {
        self.exported.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn write(&self, verb: &str) {
        self.api_writes
            .get_or_create(&WriteLabel {
                verb: verb.to_string(),
            })
            .inc();
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        let r = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        // Encoding into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &r);
        out
    }
}

/// Readiness as the process sees it: each part sets its flag.
#[derive(Clone, Default)]
pub struct Health {
    pub caches_synced: Arc<AtomicBool>,
    pub webhook_ready: Arc<AtomicBool>,
    pub webhook_enabled: bool,
}

impl Health {
    pub fn ready(&self) -> bool {
        self.caches_synced.load(Ordering::Relaxed)
            && (!self.webhook_enabled || self.webhook_ready.load(Ordering::Relaxed))
    }
}

/// `/metrics`, `/healthz`, `/readyz`.
pub fn router(health: Health) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(|| async {
                // What prometheus-client's text encoder writes: OpenMetrics (`_total`
                // counters, `# EOF`), so that is what the answer says it is.
                (
                    [(
                        "content-type",
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    METRICS.encode(),
                )
            }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let h = health.clone();
                async move {
                    if h.ready() {
                        (StatusCode::OK, "ok")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
                    }
                }
            }),
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn series_of_deleted_runs_and_policies_are_removed() {
        let m = Metrics::new();
        m.set_run("kept", "Batching", false, 4, 0);
        m.set_run("gone", "Completed", true, 9, 1_800_000_000);
        m.set_noncompliant("pol-kept", 3);
        m.set_noncompliant("pol-gone", 7);
        let text = m.encode();
        assert!(text.contains(r#"run="gone""#) && text.contains(r#"policy="pol-gone""#));
        m.forget_missing(&HashSet::from(["kept"]), &HashSet::from(["pol-kept"]));
        let text = m.encode();
        assert!(!text.contains(r#"run="gone""#), "{text}");
        assert!(!text.contains(r#"policy="pol-gone""#), "{text}");
        assert!(text.contains(r#"armor_refresh_run_phase{run="kept",phase="Batching"} 1"#));
        assert!(text.contains(r#"armor_refresh_run_pods_refreshed{run="kept"} 4"#));
        assert!(text.contains(r#"armor_refresh_run_breaker_open{run="kept"} 0"#));
        assert!(text.contains(r#"armor_refresh_noncompliant_pods{policy="pol-kept"} 3"#));
        // A run that comes back gets its series again.
        m.set_run("gone", "Pending", false, 0, 0);
        assert!(
            m.encode()
                .contains(r#"armor_refresh_run_phase{run="gone",phase="Pending"} 1"#)
        );
    }

    /// The first string literal after each occurrence of `call` in the sources.
    fn literals(call: &str) -> std::collections::BTreeSet<String> {
        let mut found = std::collections::BTreeSet::new();
        let mut dirs = vec![std::path::PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/src"
        ))];
        while let Some(d) = dirs.pop() {
            for e in std::fs::read_dir(d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    dirs.push(p);
                } else if p.extension().is_some_and(|x| x == "rs") {
                    let text = std::fs::read_to_string(&p).unwrap();
                    for part in text.split(call).skip(1) {
                        found.insert(part.split('"').next().unwrap().to_string());
                    }
                }
            }
        }
        found
    }

    #[test]
    fn every_label_the_code_uses_is_exported_from_the_start() {
        let reasons = literals("reconcile_error(\"");
        assert!(reasons.len() >= 5, "{reasons:?}");
        assert_eq!(
            reasons,
            RECONCILE_ERRORS.iter().map(|s| s.to_string()).collect()
        );
        let verbs = literals("METRICS.write(\"");
        assert_eq!(verbs, WRITE_VERBS.iter().map(|s| s.to_string()).collect());
        let results = literals("count(\"");
        assert_eq!(
            results,
            OBJECT_EVENT_RESULTS.iter().map(|s| s.to_string()).collect()
        );
        let text = Metrics::new().encode();
        assert!(text.contains(r#"armor_refresh_reconcile_errors_total{reason="watch"} 0"#));
        assert!(text.contains(r#"armor_refresh_evictions_total{result="busy"} 0"#));
        assert!(text.contains(r#"armor_refresh_object_events_total{result="dropped"} 0"#));
        assert!(text.contains(r#"armor_refresh_api_writes_total{verb="evict"} 0"#));
        assert!(text.contains(
            r#"armor_refresh_admission_requests_total{operation="pods/binding",result="error"} 0"#
        ));
    }

    #[test]
    fn counters_end_in_total_and_the_exposition_is_openmetrics() {
        let m = Metrics::new();
        m.write("patch");
        m.pods_refreshed.inc();
        let text = m.encode();
        for name in [
            "armor_refresh_api_writes_total{verb=\"patch\"} 1",
            "armor_refresh_pods_refreshed_total 1",
            "# TYPE armor_refresh_breaker_trips counter",
            "# TYPE armor_refresh_admission_duration_seconds histogram",
        ] {
            assert!(text.contains(name), "{name} missing from\n{text}");
        }
        assert!(text.ends_with("# EOF\n"), "OpenMetrics ends with # EOF");
    }
}
