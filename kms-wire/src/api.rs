//! The two KMS plugin APIs kube-apiserver speaks, as one typed value for every tool that names
//! one (the conformance suite's `--api`, a plugin manifest's `apis:`, reports).

use std::fmt;

/// A KMS plugin API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Api {
    /// `v2.KeyManagementService` (KMS v2, GA since Kubernetes 1.29).
    V2,
    /// `v1beta1.KeyManagementService` (KMS v1, deprecated).
    V1beta1,
}

impl Api {
    /// Its name (`v2`, `v1beta1`): the prefix of its conformance check ids, and how manifests and
    /// reports spell it.
    pub fn name(self) -> &'static str {
        match self {
            Self::V2 => "v2",
            Self::V1beta1 => "v1beta1",
        }
    }
}

impl fmt::Display for Api {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
