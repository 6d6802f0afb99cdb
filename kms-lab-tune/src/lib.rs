//! `kms-lab tune`: sweeps KMS v1 `cachesize` and the `timeout` of both KMS APIs against mock
//! KMS latency/error profiles and a workload, on the real stack or on a fast simulation
//! calibrated from a real run ([`model`]), and recommends values with the reasoning (hit rate,
//! KMS calls per minute, p99 write latency, failure rate at each timeout). Writes `tune.md`,
//! `tune.csv` and `tune.svg`.

pub mod calibration;
pub mod cli;
mod error;
mod lru;
pub mod model;
pub mod profile;
pub mod real;
pub mod recommend;
pub mod report;

use indicatif::ProgressBar;
use serde::Serialize;

pub use calibration::Calibration;
pub use error::TuneError;
pub use lru::Lru;
pub use model::{Api, KmsModel, Metrics, Setting, Workload};
pub use profile::Profile;
pub use recommend::{Point, Recommendation};

/// The apiserver's default KMS v1 cache size (used when a setting has none).
pub const DEFAULT_CACHESIZE: i64 = 1000;

/// What to sweep.
#[derive(Debug, Clone)]
pub struct TuneOptions {
    /// The KMS profiles.
    pub profiles: Vec<Profile>,
    /// The workload.
    pub workload: Workload,
    /// KMS v1 cache sizes.
    pub cachesizes: Vec<i64>,
    /// Timeouts (both APIs), ms.
    pub timeouts_ms: Vec<f64>,
    /// Seed of every random choice.
    pub seed: u64,
    /// The command line, for the report.
    pub command: String,
}

impl TuneOptions {
    /// The sweep for `secrets` Secrets and `ops` operations: cachesizes around the Secret count,
    /// timeouts from 100 ms to 10 s (`quick`: fewer of each).
    pub fn new(profiles: Vec<Profile>, secrets: u64, ops: u64, quick: bool) -> Self {
        let n = secrets.max(4) as i64;
        let cachesizes = if quick { vec![n / 4, n / 2, n, 2 * n] } else { vec![n / 10, n / 4, n / 2, 3 * n / 4, n, 2 * n] };
        let timeouts_ms =
            if quick { vec![100.0, 500.0, 1000.0, 3000.0] } else { vec![100.0, 250.0, 500.0, 1000.0, 2000.0, 3000.0, 5000.0, 10_000.0] };
        Self { profiles, workload: Workload::new(secrets, ops), cachesizes, timeouts_ms, seed: 42, command: "kms-lab tune".into() }
    }

    /// Every setting of the sweep: v1 cachesize × timeout, then v2 timeouts.
    pub fn settings(&self) -> Vec<Setting> {
        let v1 = self
            .cachesizes
            .iter()
            .flat_map(|c| self.timeouts_ms.iter().map(|t| Setting { api: Api::V1, cachesize: Some(*c), timeout_ms: *t }));
        let v2 = self.timeouts_ms.iter().map(|t| Setting { api: Api::V2, cachesize: None, timeout_ms: *t });
        v1.chain(v2).collect()
    }
}

/// What a run produced.
#[derive(Debug, Clone, Serialize)]
pub struct TuneResult {
    /// The command line.
    pub command: String,
    /// Which engine, and its calibration or binaries.
    pub engine: String,
    /// The seed.
    pub seed: u64,
    /// The workload.
    pub workload: Workload,
    /// Profile names, in order.
    pub profiles: Vec<String>,
    /// Every point.
    pub points: Vec<Point>,
    /// One per profile and API.
    pub recommendations: Vec<Recommendation>,
    /// The real run's own measurement of one KMS call per profile (written as
    /// `calibration.json`, so `--model --calibration` can replay the sweep on the same numbers).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub calibration: Option<Calibration>,
}

/// Adds the recommendations to a result from its points; `call_p99_ms(profile)` is one KMS call's p99.
pub fn finish(mut result: TuneResult, call_p99_ms: impl Fn(&str) -> f64) -> TuneResult {
    let refs: Vec<&Point> = result.points.iter().collect();
    result.recommendations = result
        .profiles
        .iter()
        .flat_map(|profile| [Api::V1, Api::V2].map(|api| recommend::recommend(&refs, profile, api, call_p99_ms(profile))))
        .flatten()
        .collect();
    result
}

/// Runs the sweep on the model.
pub fn run_model(options: &TuneOptions, calibration: &Calibration, progress: &ProgressBar) -> TuneResult {
    run_model_until(options, calibration, progress, &std::sync::atomic::AtomicBool::new(false))
}

/// [`run_model`], stopping as soon as `stop` is set (Ctrl-C): the result then holds the points
/// that finished, and its engine says it is partial.
pub fn run_model_until(
    options: &TuneOptions,
    calibration: &Calibration,
    progress: &ProgressBar,
    stop: &std::sync::atomic::AtomicBool,
) -> TuneResult {
    let settings = options.settings();
    let total = settings.len() * options.profiles.len();
    progress.set_length(total as u64);
    let mut points = Vec::new();
    let mut p99 = std::collections::BTreeMap::new();
    'profiles: for profile in &options.profiles {
        let model = KmsModel::new(profile, calibration);
        p99.insert(profile.name.clone(), model.p99_ms());
        for setting in &settings {
            if stop.load(std::sync::atomic::Ordering::Relaxed) {
                break 'profiles;
            }
            progress.set_message(format!(
                "{} {} cachesize {:?} timeout {}",
                profile.name,
                setting.api.as_str(),
                setting.cachesize,
                recommend::show_ms(setting.timeout_ms)
            ));
            let Some(metrics) = model::simulate_until(&model, *setting, &options.workload, options.seed, stop) else {
                break 'profiles;
            };
            points.push(Point { profile: profile.name.clone(), setting: *setting, metrics });
            progress.inc(1);
        }
    }
    let partial = if points.len() < total { format!("; interrupted: partial, {} of {total} points", points.len()) } else { String::new() };
    let result = TuneResult {
        command: options.command.clone(),
        engine: format!("model, calibrated from {}{partial}", calibration.source),
        seed: options.seed,
        workload: options.workload.clone(),
        profiles: options.profiles.iter().map(|p| p.name.clone()).collect(),
        points,
        recommendations: Vec::new(),
        calibration: None,
    };
    finish(result, |profile| p99.get(profile).copied().unwrap_or_default())
}
