//! What happened when in a scenario, for the report's timeline plot: the API calls its steps
//! and load writers made, and the calls the mock KMS served.

use std::sync::Arc;
use std::time::Instant;

/// An API call's verb, as the timeline records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verb {
    /// A create.
    Create,
    /// An update.
    Update,
    /// A read.
    Read,
    /// A delete.
    Delete,
}

/// One API call on the timeline: when it started (seconds since the scenario began), its verb
/// and whether it succeeded.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ApiEvent {
    /// Seconds since the scenario began.
    pub at_s: f64,
    /// The verb.
    pub verb: Verb,
    /// Whether it succeeded.
    pub ok: bool,
}

/// The API calls a scenario made, shared by every client (load writers run in their own tasks).
#[derive(Debug, Clone)]
pub struct Timeline {
    origin: Instant,
    origin_unix_ms: u64,
    api: Arc<std::sync::Mutex<Vec<ApiEvent>>>,
}

impl Timeline {
    /// An empty timeline starting now.
    pub fn new() -> Self {
        let origin_unix_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        Self { origin: Instant::now(), origin_unix_ms, api: Arc::default() }
    }

    /// When the timeline began.
    pub fn origin(&self) -> Instant {
        self.origin
    }

    /// Records an API call that started at `started`.
    pub(crate) fn api(&self, verb: Verb, started: Instant, ok: bool) {
        let at_s = (started.saturating_duration_since(self.origin).as_secs_f64() * 1000.0).round() / 1000.0;
        if let Ok(mut events) = self.api.lock() {
            events.push(ApiEvent { at_s, verb, ok });
        }
    }

    /// Seconds since the scenario began of a wall-clock time in Unix milliseconds (audit records).
    pub fn seconds_at(&self, unix_ms: u64) -> f64 {
        (unix_ms as f64 - self.origin_unix_ms as f64) / 1000.0
    }

    /// Every API call so far, in the order they started.
    pub fn api_events(&self) -> Vec<ApiEvent> {
        let mut events = self.api.lock().map(|e| e.clone()).unwrap_or_default();
        events.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
        events
    }
}

impl Default for Timeline {
    fn default() -> Self {
        Self::new()
    }
}

/// One mock KMS call on the timeline.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct KmsEvent {
    /// Seconds since the scenario began (when the call finished).
    pub at_s: f64,
    /// The action (`Encrypt`, `Decrypt`, …).
    pub action: String,
    /// Whether it succeeded.
    pub ok: bool,
    /// Why it was made (`request`, `health-probe`), when the client said.
    #[serde(default)]
    pub caller: Option<String>,
}

/// What a scenario's timeline plot shows: API calls and mock KMS calls over time (the steps,
/// faults among them, come from the step records).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct TimelineReport {
    /// API calls made by the scenario's steps and load writers.
    pub api: Vec<ApiEvent>,
    /// Calls the mock KMS served.
    pub kms: Vec<KmsEvent>,
}
