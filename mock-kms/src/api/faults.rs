//! Fault profiles as typed values: the [`FaultProfile`] that `PUT /admin/faults` takes and
//! `GET /admin/faults` answers, and its faults ([`LatencyFault`], [`ErrorRateFault`],
//! [`ThrottleFault`], [`OutageFault`], [`HangFault`], [`CorruptFault`], [`KeyDisabledFault`],
//! [`DenyFault`]). Server-free, like the rest of [`crate::api`]: validating a profile, parsing it
//! from YAML and applying it to calls is the server's `faults` module.

use serde::{Deserialize, Serialize};

use super::Action;

/// Which faults are active. Every field is optional; an empty profile means "no faults".
///
/// Each fault except `outage` takes `actions`: the actions it applies to (all when absent).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FaultProfile {
    /// Seed for this profile's random draws (overrides `--seed`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Added latency.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency: Option<LatencyFault>,
    /// A share of calls fails with 500 InternalFailure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_rate: Option<ErrorRateFault>,
    /// A token-bucket quota; calls over it get 429 Throttling with `Retry-After`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub throttle: Option<ThrottleFault>,
    /// The node stops accepting connections (connection refused) until cleared.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outage: Option<OutageFault>,
    /// Calls are read and never answered until cleared.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hang: Option<HangFault>,
    /// Returned `Plaintext` / `CiphertextBlob` get a flipped byte.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub corrupt: Option<CorruptFault>,
    /// Keys treated as disabled (409 KeyNotEnabled; DescribeKey shows Disabled).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_disabled: Option<KeyDisabledFault>,
    /// Actions refused with 403 Forbidden.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deny: Option<DenyFault>,
}

impl FaultProfile {
    /// Every action one of its faults applies to; `None` when some fault applies to every call
    /// (an `outage`, or a fault without `actions`). An empty profile touches no action.
    pub fn actions(&self) -> Option<Vec<Action>> {
        if self.outage.is_some() {
            return None;
        }
        let lists = [
            self.latency.as_ref().map(|f| &f.actions),
            self.error_rate.as_ref().map(|f| &f.actions),
            self.throttle.as_ref().map(|f| &f.actions),
            self.hang.as_ref().map(|f| &f.actions),
            self.corrupt.as_ref().map(|f| &f.actions),
            self.key_disabled.as_ref().map(|f| &f.actions),
            self.deny.as_ref().map(|f| &f.actions),
        ];
        let mut actions = Vec::new();
        for list in lists.into_iter().flatten() {
            actions.extend(list.as_ref()?.iter().copied());
        }
        actions.sort();
        actions.dedup();
        Some(actions)
    }
}

/// Added latency: `fixed_ms` plus a sample of `distribution` (clamped at 0).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatencyFault {
    /// Milliseconds added to every call.
    #[serde(default)]
    pub fixed_ms: f64,
    /// A random part added on top.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distribution: Option<LatencyDistribution>,
    /// The actions it applies to (all when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actions: Option<Vec<Action>>,
}

/// A latency distribution, tagged by `kind`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum LatencyDistribution {
    /// Uniform in `[min_ms, max_ms]`.
    Uniform {
        /// Lower bound.
        min_ms: f64,
        /// Upper bound.
        max_ms: f64,
    },
    /// Normal (Gaussian), clamped at 0.
    Normal {
        /// Mean.
        mean_ms: f64,
        /// Standard deviation.
        stddev_ms: f64,
    },
    /// Exponential with the given mean.
    Exponential {
        /// Mean.
        mean_ms: f64,
    },
}

/// A share of calls fails with 500 InternalFailure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorRateFault {
    /// Probability of failure per call, 0 to 1.
    pub rate: f64,
    /// The actions it applies to (all when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actions: Option<Vec<Action>>,
}

/// A token bucket: `per_second` tokens per second, up to `burst` saved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThrottleFault {
    /// The quota, calls per second (may be fractional).
    pub per_second: f64,
    /// The bucket size (defaults to `per_second`, at least 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<f64>,
    /// The actions it applies to (all when absent); they share one bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actions: Option<Vec<Action>>,
}

/// The node closes its listener and drops its connections: clients get "connection refused".
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutageFault {
    /// Clear the outage by itself after this long (the admin API is down too during an outage).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
}

/// Calls are accepted and read, then not answered until the fault is cleared.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HangFault {
    /// Clear the hang by itself after this long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// The actions it applies to (all when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actions: Option<Vec<Action>>,
}

/// Returned `Plaintext` / `CiphertextBlob` get one byte flipped (all 8 bits).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorruptFault {
    /// Probability per call, 0 to 1 (default 1).
    #[serde(default = "one")]
    pub rate: f64,
    /// The actions it applies to (all when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actions: Option<Vec<Action>>,
}

fn one() -> f64 {
    1.0
}

/// Keys treated as disabled.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyDisabledFault {
    /// The keys; an entry `key/version` disables only that version (for Decrypt).
    pub key_ids: Vec<String>,
    /// The actions it applies to (all when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actions: Option<Vec<Action>>,
}

/// Actions refused with 403 Forbidden.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DenyFault {
    /// The denied actions (all when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actions: Option<Vec<Action>>,
}
