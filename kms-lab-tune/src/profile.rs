//! Mock KMS latency/error profiles (the mock KMS's `FaultProfile` YAML) that a sweep runs against.

use std::path::Path;

use mock_kms::FaultProfile;
use mock_kms::api::faults::LatencyDistribution;

use crate::error::TuneError;

/// The profiles shipped in `kms-lab-tune/profiles/`, by name.
pub const BUILTIN: &[(&str, &str)] = &[
    ("same-region", include_str!("../profiles/same-region.yaml")),
    ("cross-region", include_str!("../profiles/cross-region.yaml")),
    ("throttled", include_str!("../profiles/throttled.yaml")),
    ("flaky", include_str!("../profiles/flaky.yaml")),
];

/// One named profile.
#[derive(Debug, Clone)]
pub struct Profile {
    /// Its name (the file stem).
    pub name: String,
    /// The YAML as written (sent to the mock KMS on the real stack).
    pub yaml: String,
    /// The parsed profile.
    pub faults: FaultProfile,
}

impl Profile {
    /// Parses a profile.
    pub fn parse(name: &str, yaml: &str) -> Result<Self, TuneError> {
        let faults = FaultProfile::from_yaml(yaml).map_err(|e| TuneError::Profile { name: name.to_owned(), message: e.to_string() })?;
        Ok(Self { name: name.to_owned(), yaml: yaml.to_owned(), faults })
    }

    /// A built-in profile by name, or a YAML file by path.
    pub fn load(spec: &str) -> Result<Self, TuneError> {
        if let Some((name, yaml)) = BUILTIN.iter().find(|(name, _)| *name == spec) {
            return Self::parse(name, yaml);
        }
        let path = Path::new(spec);
        if !path.is_file() {
            let known: Vec<&str> = BUILTIN.iter().map(|(name, _)| *name).collect();
            return Err(TuneError::UnknownProfile { spec: spec.to_owned(), known: known.join(", ") });
        }
        let yaml = std::fs::read_to_string(path).map_err(|source| TuneError::Io { what: format!("read {}", path.display()), source })?;
        let name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| spec.to_owned());
        Self::parse(&name, &yaml)
    }

    /// Every built-in profile.
    pub fn builtin() -> Result<Vec<Self>, TuneError> {
        BUILTIN.iter().map(|(name, yaml)| Self::parse(name, yaml)).collect()
    }

    /// The profile without its throttle (what calibration measures: the quota is modelled).
    pub fn without_throttle(&self) -> FaultProfile {
        FaultProfile { throttle: None, ..self.faults.clone() }
    }

    /// Per-attempt probability of a 500 from the KMS for Encrypt/Decrypt.
    pub fn error_rate(&self) -> f64 {
        self.faults.error_rate.as_ref().map(|e| e.rate).unwrap_or(0.0)
    }

    /// The quota, `(per_second, burst)`.
    pub fn throttle(&self) -> Option<(f64, f64)> {
        self.faults.throttle.as_ref().map(|t| (t.per_second, t.burst.unwrap_or(t.per_second).max(1.0)))
    }

    /// The mean latency the profile adds, in ms (for an uncalibrated model).
    pub fn mean_added_ms(&self) -> f64 {
        let Some(latency) = &self.faults.latency else { return 0.0 };
        latency.fixed_ms
            + match &latency.distribution {
                Some(LatencyDistribution::Uniform { min_ms, max_ms }) => (min_ms + max_ms) / 2.0,
                Some(LatencyDistribution::Normal { mean_ms, .. }) => *mean_ms,
                Some(LatencyDistribution::Exponential { mean_ms }) => *mean_ms,
                None => 0.0,
            }
    }
}
