//! The scale scenario (bench/scale.sh) at a tiny size, so it keeps working: every figure the
//! report needs is measured, our run stays within its batch, and the baselines finish.

use std::time::Duration;

use armor_refresh_e2e::scale::{Config, run};
use armor_refresh_e2e::{Result, client};

#[tokio::test]
async fn the_scale_scenario_measures_every_figure_at_a_tiny_size() -> Result<()> {
    let c = client().await?;
    let mut cfg = Config::new(40);
    cfg.per_deployment = 10;
    cfg.sts_replicas = 2;
    cfg.batch = 8;
    cfg.baseline_pause = Duration::from_millis(500);
    cfg.create_samples = 20;
    cfg.timeout = Duration::from_secs(180);
    let r = run(&c, &cfg).await?;
    eprintln!(
        "tiny scale: {} refreshed in {:.1}s (waves {:.1}s; minimum {:.1}s, ratio {:.2}), peak {} of batch {}, {:.2} writes/pod ({:.2} status); baselines {:.1}s peak {} and {:.1}s peak {}",
        r.refreshed,
        r.ours.duration_s,
        r.ours_waves.duration_s,
        r.minimum_s,
        r.overhead_ratio,
        r.ours.peak_disrupted,
        r.batch,
        r.writes_per_pod,
        r.status_writes_per_pod,
        r.annotate_existing.duration_s,
        r.annotate_existing.peak_disrupted,
        r.restart_all.duration_s,
        r.restart_all.peak_disrupted
    );
    assert_eq!(r.pods, 42);
    assert_eq!(r.targets, 42, "every bench pod is a target");
    assert_eq!(r.refreshed, r.targets);
    assert_eq!(r.failed, 0);
    // The invariant: never more disrupted than the batch (the witness is independent).
    assert!(
        r.ours.peak_disrupted <= r.batch,
        "peak {} > batch {}",
        r.ours.peak_disrupted,
        r.batch
    );
    assert!(r.ours.peak_disrupted > 0, "the witness saw the refresh");
    // The same pods by waves, in the same run.
    assert!(
        r.ours_waves.duration_s > 0.0 && r.ours_waves.peak_disrupted > 0,
        "{:?}",
        r.ours_waves.name
    );
    assert!(
        r.ours_waves.peak_disrupted <= r.batch,
        "waves: peak {} > batch {}",
        r.ours_waves.peak_disrupted,
        r.batch
    );
    assert!(r.status_writes_per_pod > 0.0 && r.waves_status_writes_per_pod > 0.0);
    // Every figure is measured, not defaulted.
    assert!(r.minimum_s > 0.0 && r.ours.duration_s >= r.minimum_s);
    assert!(
        r.writes_per_pod >= 1.0,
        "at least the eviction per pod: {:?}",
        r.writes_by_kind
    );
    assert!(r.writes_by_kind.contains_key("core/pods/eviction create"));
    // The slot cycle, from the witness's timeline: every eviction seen, and every step of a
    // slot timed (kwok's ready delay is the floor of binding to Ready).
    let c = &r.cycle;
    assert_eq!(c.evictions as u32, r.refreshed, "{c:?}");
    assert!(
        c.bound_to_ready_ms[0] >= 1000.0 * r.ready_delay_s * 0.9
            && c.slot_cycle_ms[0] >= c.bound_to_ready_ms[0]
            && c.evicted_to_created_ms[0] > 0.0
            && c.created_to_bound_ms[0] > 0.0,
        "{c:?}"
    );
    assert!(r.operator_peak_rss_mib > 1.0);
    assert!(r.create_with_p50_ms > 0.0 && r.create_without_p50_ms > 0.0);
    assert!(
        r.apiserver_webhook_p50_ms > 0.0,
        "the API server called the webhook"
    );
    assert!(r.ours.apiserver_writes > 0 && r.ours.apiserver_p99_ms > 0.0);
    for b in [&r.annotate_existing, &r.restart_all] {
        assert!(
            b.duration_s > 0.0 && b.peak_disrupted > 0 && !b.curve.is_empty(),
            "{}",
            b.name
        );
        assert_eq!(
            b.tool_writes, 5,
            "{}: four Deployments and the StatefulSet",
            b.name
        );
    }
    Ok(())
}
