//! What the model is calibrated with: per profile, the measured latency distribution of one
//! plugin call (as the apiserver sees it: gRPC over the socket, plugin, signed HTTP to the mock
//! KMS and back) and the share of calls that failed, from a short real run
//! (`kms-lab tune --calibrate FILE`). A calibration recorded on the lab machine is built in.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::TuneError;

/// The name under which the no-fault measurement (plugin + mock KMS overhead) is stored.
pub const LOCAL: &str = "local";

/// The plugin's retry policy, as `kms-plugin` implements it (`--kms-timeout`, `--kms-retries`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PluginPolicy {
    /// The plugin's deadline for one operation including retries (default 2 s).
    pub deadline_ms: f64,
    /// Retries of a retryable failure (default 3).
    pub retries: u32,
    /// Base of the jittered exponential backoff (50 ms).
    pub base_backoff_ms: f64,
    /// Cap of the backoff (1 s).
    pub max_backoff_ms: f64,
}

impl Default for PluginPolicy {
    fn default() -> Self {
        Self { deadline_ms: 2000.0, retries: 3, base_backoff_ms: 50.0, max_backoff_ms: 1000.0 }
    }
}

/// The measurement of one profile.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ProfileCalibration {
    /// Latency of one successful plugin call in ms, at quantiles 0, 1, …, 100 %.
    pub quantiles_ms: Vec<f64>,
    /// Share of calls that failed (after the plugin's own retries).
    pub failure_rate: f64,
    /// How many calls were measured.
    pub calls: u64,
}

impl ProfileCalibration {
    /// Builds the quantiles from raw latency samples.
    pub fn from_samples(mut samples_ms: Vec<f64>, failures: u64) -> Self {
        samples_ms.sort_by(f64::total_cmp);
        let calls = samples_ms.len() as u64 + failures;
        let quantiles_ms =
            if samples_ms.is_empty() { vec![0.0; 101] } else { (0..=100).map(|q| quantile(&samples_ms, q as f64 / 100.0)).collect() };
        Self { quantiles_ms, failure_rate: if calls == 0 { 0.0 } else { failures as f64 / calls as f64 }, calls }
    }

    /// The latency at quantile `q` (0..=1), interpolated.
    pub fn at(&self, q: f64) -> f64 {
        quantile(&self.quantiles_ms, q)
    }
}

/// The value at quantile `q` of sorted `values`, linearly interpolated.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let position = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let low = position.floor() as usize;
    let high = position.ceil() as usize;
    sorted[low] + (sorted[high] - sorted[low]) * (position - low as f64)
}

/// A calibration file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Calibration {
    /// Where and how it was measured (free text).
    pub source: String,
    /// The plugin's retry policy during the measurement.
    pub plugin: PluginPolicy,
    /// Per profile name (and [`LOCAL`] for no faults).
    pub profiles: BTreeMap<String, ProfileCalibration>,
}

impl Calibration {
    /// The calibration recorded on the lab machine (`kms-lab-tune/calibration/default.json`).
    pub fn builtin() -> Result<Self, TuneError> {
        serde_json::from_str(include_str!("../calibration/default.json"))
            .map_err(|e| TuneError::Calibration { path: "kms-lab-tune/calibration/default.json (built in)".into(), message: e.to_string() })
    }

    /// Reads a calibration file.
    pub fn read(path: &Path) -> Result<Self, TuneError> {
        let text = std::fs::read_to_string(path).map_err(|source| TuneError::Io { what: format!("read {}", path.display()), source })?;
        serde_json::from_str(&text).map_err(|e| TuneError::Calibration { path: path.display().to_string(), message: e.to_string() })
    }

    /// Writes it as pretty JSON.
    pub fn write(&self, path: &Path) -> Result<(), TuneError> {
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| TuneError::Calibration { path: path.display().to_string(), message: e.to_string() })?;
        let kind = kms_lab_cli_common::files::FileKind::public(
            "`kms-lab tune` calibration",
            kms_lab_cli_common::files::Recognise::By(|bytes| serde_json::from_slice::<Self>(bytes).is_ok()),
        );
        Ok(kms_lab_cli_common::files::replace(path, &kind, (text + "\n").as_bytes())?)
    }
}
