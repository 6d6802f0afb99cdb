//! The plugin's health as `Status` reports it: healthy only after a real wrap/unwrap round trip
//! through the KEK succeeded recently.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::RngCore;
use tokio::sync::Mutex;

use crate::kek::{Claimed, Kek};
use kms_wire::proto::HEALTHZ_OK;

/// How long a failed probe is reused before the next Status call probes again.
const FAILED_PROBE_REUSE: Duration = Duration::from_secs(1);

/// What `Status` answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthReport {
    /// `"ok"`, or a short reason.
    pub healthz: String,
    /// The current key id; while unhealthy, the last one seen (empty if none yet).
    pub key_id: String,
}

impl HealthReport {
    /// Whether the report says healthy.
    pub fn is_ok(&self) -> bool {
        self.healthz == HEALTHZ_OK
    }
}

struct Probe {
    at: Instant,
    report: HealthReport,
}

/// Runs and caches KEK round-trip probes; concurrent callers share one probe.
pub struct Health {
    kek: Arc<Kek>,
    ttl: Duration,
    probe_timeout: Duration,
    last: Mutex<Option<Probe>>,
}

impl Health {
    /// Probes `kek`, keeping a success for `ttl`; one probe may take at most `probe_timeout`.
    pub fn new(kek: Arc<Kek>, ttl: Duration, probe_timeout: Duration) -> Self {
        Self { kek, ttl, probe_timeout, last: Mutex::new(None) }
    }

    /// The current report, probing the KEK if the last result is too old.
    pub async fn report(&self) -> HealthReport {
        let mut last = self.last.lock().await;
        if let Some(probe) = last.as_ref() {
            let reuse = if probe.report.is_ok() { self.ttl } else { FAILED_PROBE_REUSE.min(self.ttl) };
            if probe.at.elapsed() < reuse {
                return probe.report.clone();
            }
        }
        let previous_key_id = last.as_ref().map(|p| p.report.key_id.clone()).unwrap_or_default();
        let report =
            match tokio::time::timeout(self.probe_timeout, crate::kek::as_caller(crate::kek::Caller::HealthProbe, self.round_trip())).await
            {
                Ok(Ok(key_id)) => HealthReport { healthz: HEALTHZ_OK.to_owned(), key_id },
                Ok(Err(reason)) => HealthReport { healthz: reason, key_id: previous_key_id },
                Err(_) => HealthReport {
                    healthz: format!("KEK round trip did not finish within {:?}", self.probe_timeout),
                    key_id: previous_key_id,
                },
            };
        if !report.is_ok() {
            tracing::warn!(reason = %report.healthz, "KEK health probe failed");
        }
        *last = Some(Probe { at: Instant::now(), report: report.clone() });
        report
    }

    /// Wraps and unwraps random bytes; returns the key id, or why it failed.
    async fn round_trip(&self) -> Result<String, String> {
        let mut probe = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut probe);
        let wrapped = self.kek.wrap(&probe).await.map_err(|e| format!("KEK wrap failed: {e}"))?;
        let claimed = Claimed { key_id: Some(&wrapped.key_id), annotations: Some(&wrapped.annotations) };
        let unwrapped = self.kek.unwrap(&wrapped.ciphertext, claimed).await.map_err(|e| format!("KEK unwrap failed: {e}"))?;
        if unwrapped.as_slice() != probe {
            return Err("KEK round trip returned different bytes".to_owned());
        }
        Ok(wrapped.key_id)
    }
}
