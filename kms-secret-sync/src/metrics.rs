//! Prometheus metrics of the controller, served at `/metrics` on `--metrics-addr`:
//!
//! | metric | labels | what |
//! |---|---|---|
//! | `kms_secret_sync_syncs_total` | `result` (`written`, `unchanged`, `failed`) | reconciles of an ExternalSecret |
//! | `kms_secret_sync_sync_errors_total` | `reason` (a [`crate::decide::Reason`]) | failed syncs |
//! | `kms_secret_sync_store_calls_total` | `action`, `outcome` (`Ok`, `Unavailable`, `Throttled`, `Denied`, `NotFound`, `Failed`, `Protocol`) | calls to the store |
//! | `kms_secret_sync_sync_duration_seconds` | — | time of one sync (store calls and writes) |

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    action: &'static str,
    outcome: &'static str,
}

/// The controller's metrics registry.
pub struct Metrics {
    registry: Registry,
    syncs: Family<ResultLabels, Counter>,
    errors: Family<ReasonLabels, Counter>,
    store_calls: Family<CallLabels, Counter>,
    duration: Histogram,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("kms_secret_sync");
        let syncs = Family::<ResultLabels, Counter>::default();
        let errors = Family::<ReasonLabels, Counter>::default();
        let store_calls = Family::<CallLabels, Counter>::default();
        // 1 ms … ~32 s.
        let duration = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        registry.register("syncs", "reconciles of an ExternalSecret, by result (written, unchanged, failed)", syncs.clone());
        registry.register("sync_errors", "failed syncs, by reason", errors.clone());
        registry.register("store_calls", "calls to the secrets store, by action and outcome", store_calls.clone());
        registry.register("sync_duration_seconds", "time of one sync: store calls and Kubernetes writes", duration.clone());
        Self { registry, syncs, errors, store_calls, duration }
    }
}

impl Metrics {
    /// Counts a sync with `result` (`written`, `unchanged`, `failed`) that took `took`.
    pub fn sync(&self, result: &'static str, took: Duration) {
        self.syncs.get_or_create(&ResultLabels { result }).inc();
        self.duration.observe(took.as_secs_f64());
    }

    /// Counts a failed sync by reason.
    pub fn error(&self, reason: &'static str) {
        self.errors.get_or_create(&ReasonLabels { reason }).inc();
    }

    /// Counts a store call.
    pub fn store_call(&self, action: &'static str, outcome: &'static str) {
        self.store_calls.get_or_create(&CallLabels { action, outcome }).inc();
    }

    /// The metrics in Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Serves `/metrics` on `addr` until the task is dropped; returns the bound address.
pub async fn serve(metrics: Arc<Metrics>, addr: SocketAddr) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let metrics = metrics.clone();
            async move { ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], metrics.encode()) }
        }),
    );
    let task = tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::error!(%error, "the metrics server stopped");
        }
    });
    Ok((bound, task))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn metrics_are_served_in_prometheus_text() {
        let metrics = Arc::new(Metrics::default());
        metrics.store_call("GetSecretValue", "Denied");
        metrics.sync("failed", Duration::from_millis(3));
        metrics.error("AccessDenied");
        let (addr, task) = serve(metrics, "127.0.0.1:0".parse().unwrap()).await.unwrap();
        let text = reqwest::get(format!("http://{addr}/metrics")).await.unwrap().text().await.unwrap();
        task.abort();
        for line in [
            r#"kms_secret_sync_store_calls_total{action="GetSecretValue",outcome="Denied"} 1"#,
            r#"kms_secret_sync_syncs_total{result="failed"} 1"#,
            r#"kms_secret_sync_sync_errors_total{reason="AccessDenied"} 1"#,
            "kms_secret_sync_sync_duration_seconds_count 1",
        ] {
            assert!(text.contains(line), "missing {line} in:\n{text}");
        }
    }
}
