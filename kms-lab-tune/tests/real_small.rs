//! The real engine on a tiny sweep (three points, about 30 s): etcd, kube-apiserver, the plugin
//! and the mock KMS as processes. A v1 cache that holds every DEK hits more often than one that
//! holds a quarter of them, v2 needs fewer KMS calls than either, and nothing is left behind.

use std::collections::BTreeSet;

use kms_lab_tune::{Api, Profile, TuneOptions};

fn tune_dirs() -> BTreeSet<std::path::PathBuf> {
    std::fs::read_dir(std::env::temp_dir())
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("kms-lab-tune-")))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tiny_real_sweep_measures_the_cache_and_cleans_up() {
    let before = tune_dirs();
    let mut options = TuneOptions::new(vec![Profile::load("same-region").unwrap()], 20, 40, true);
    options.cachesizes = vec![5, 40];
    options.timeouts_ms = vec![3000.0];
    options.workload.restarts = 1;
    let outcome = kms_lab_tune::real::run_real(&options, 20, &indicatif::ProgressBar::hidden()).await.expect("the real sweep runs");
    let kms_lab_tune::real::RealOutcome::Complete(result) = outcome else { panic!("the sweep was interrupted: {outcome:?}") };

    assert_eq!(result.points.len(), 3, "{:?}", result.points);
    let v1 = |cachesize| result.points.iter().find(|p| p.setting.cachesize == Some(cachesize)).unwrap();
    let v2 = result.points.iter().find(|p| p.setting.api == Api::V2).unwrap();
    for point in &result.points {
        assert_eq!(point.metrics.failure_rate, 0.0, "{point:?}");
        assert!(point.metrics.hit_rate > 0.0 && point.metrics.ops > 40, "{point:?}");
    }
    assert!(v1(40).metrics.hit_rate > v1(5).metrics.hit_rate + 0.2, "{:?}\n{:?}", v1(40), v1(5));
    assert!(v2.metrics.kms_calls_per_min < v1(40).metrics.kms_calls_per_min, "{v2:?}");
    let measured = result.calibration.as_ref().expect("the run's own calibration");
    assert!(measured.profiles.contains_key("same-region"));

    let left: Vec<_> = tune_dirs().difference(&before).cloned().collect();
    assert!(left.is_empty(), "work directories left behind: {left:?}");
}
