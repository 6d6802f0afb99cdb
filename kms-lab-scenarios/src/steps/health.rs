//! What the components answer: an apiserver's health endpoints and metrics, a plugin's Status
//! and its socket file. Conditions only; the steps that start and stop components are in
//! [`super::process`].

use std::collections::BTreeMap;
use std::time::Duration;

use kms_wire::proto::v2;
use serde::Deserialize;

use super::{Bounds, Scope};
use crate::conditions::{ConditionKind, ObserveFuture, Seen};
use crate::model::{FigureName, KeyIdExpect, default_plugin};
use crate::world::{Mark, World};

/// The deadline of one Status call made by a condition.
const STATUS_DEADLINE: Duration = Duration::from_secs(5);

/// An apiserver health endpoint and the answer expected.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    /// The apiserver.
    #[serde(default)]
    pub apiserver: usize,
    /// The path, e.g. `/healthz/kms-providers`, `/readyz`, `/livez`.
    pub path: String,
    /// Whether it must answer 200 (true) or anything else (false).
    pub healthy: bool,
    /// The body must contain this.
    #[serde(default)]
    pub body_contains: Option<String>,
}

/// A check on a plugin's Status answer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginStatusExpect {
    /// The plugin.
    #[serde(default = "default_plugin")]
    pub plugin: String,
    /// `healthz` must be `ok` (true) or anything else (false).
    #[serde(default)]
    pub healthy: Option<bool>,
    /// The key id, compared with a mark.
    #[serde(default)]
    pub key_id: Option<KeyIdExpect>,
}

/// The plugin whose Status key id an apiserver must have seen.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiserverKeyId {
    /// The apiserver.
    #[serde(default)]
    pub apiserver: usize,
    /// The plugin.
    #[serde(default = "default_plugin")]
    pub plugin: String,
}

/// A check on the sum of an apiserver metric's samples.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricExpect {
    /// The apiserver.
    #[serde(default)]
    pub apiserver: usize,
    /// The metric name.
    pub name: String,
    /// Only samples with these label values.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The sum must be at least this.
    #[serde(default)]
    pub at_least: Option<f64>,
    /// The sum must be at most this.
    #[serde(default)]
    pub at_most: Option<f64>,
    /// Record the sum as this figure when the condition holds.
    #[serde(default)]
    pub figure: Option<FigureName>,
}

impl MetricExpect {
    fn bounds(&self) -> Bounds {
        Bounds { at_least: self.at_least, at_most: self.at_most }
    }
}

impl ConditionKind for HealthCheck {
    fn check(&self, scope: &Scope<'_>) -> Result<(), String> {
        scope.apiserver(self.apiserver)
    }

    fn label(&self) -> String {
        format!("apiserver-{} {} is {}", self.apiserver, self.path, if self.healthy { "healthy" } else { "failing" })
    }

    fn observe<'a>(&'a self, world: &'a mut World, _baseline: u64) -> ObserveFuture<'a> {
        Box::pin(async move {
            match world.stack.apiserver_get(self.apiserver, &self.path).await {
                Ok((status, body)) => {
                    let healthy = status == 200;
                    let contains = self.body_contains.as_ref().is_none_or(|needle| body.contains(needle.as_str()));
                    let first_lines: String =
                        body.lines().filter(|l| l.contains("[-]") || !l.starts_with('[')).take(3).collect::<Vec<_>>().join(" | ");
                    Seen::new(
                        healthy == self.healthy && contains,
                        format!("apiserver-{} {} answered {status}: {}", self.apiserver, self.path, first_lines),
                    )
                }
                Err(error) => Seen::new(false, format!("apiserver-{} {}: {error}", self.apiserver, self.path)),
            }
        })
    }
}

impl ConditionKind for PluginStatusExpect {
    fn check(&self, scope: &Scope<'_>) -> Result<(), String> {
        scope.plugin(&self.plugin)?;
        self.key_id.as_ref().map_or(Ok(()), |k| scope.key_id(k))
    }

    fn label(&self) -> String {
        let health = self.healthy.map_or("answers", |h| if h { "is healthy" } else { "is unhealthy" });
        let key_id = match &self.key_id {
            Some(KeyIdExpect { same_as: Some(mark), .. }) => format!(" with the key id of `{mark}`"),
            Some(KeyIdExpect { differs_from: Some(mark), .. }) => format!(" with a key id other than at `{mark}`"),
            _ => String::new(),
        };
        format!("{} Status {health}{key_id}", self.plugin)
    }

    /// A Status that answers with a gRPC error is unhealthy, as the apiserver's KMS v2 health
    /// check counts it (`kmsv2PluginProbe.check`: a Status error fails the probe); a plugin that
    /// does not answer at all is neither.
    fn observe<'a>(&'a self, world: &'a mut World, _baseline: u64) -> ObserveFuture<'a> {
        Box::pin(async move {
            let status = match plugin_status_call(world, &self.plugin).await {
                Ok(StatusAnswer::Answered(status)) => status,
                Ok(StatusAnswer::Refused(message)) => {
                    let unhealthy = self.healthy == Some(false) && self.key_id.is_none();
                    return Seen::new(unhealthy, format!("{message} (a Status error: unhealthy to the apiserver)"));
                }
                Err(error) => return Seen::new(false, error),
            };
            let text =
                format!("{} Status: version {}, healthz `{}`, key id `{}`", self.plugin, status.version, status.healthz, status.key_id);
            if let Some(healthy) = self.healthy
                && (status.healthz == "ok") != healthy
            {
                return Seen::new(false, format!("{text} (expected {})", if healthy { "healthy" } else { "unhealthy" }));
            }
            if let Some(key_id) = &self.key_id
                && let Some(mismatch) = key_id_mismatch(world, &status.key_id, key_id)
            {
                return Seen::new(false, format!("{text}: {mismatch}"));
            }
            Seen::new(true, text)
        })
    }
}

impl ConditionKind for ApiserverKeyId {
    fn check(&self, scope: &Scope<'_>) -> Result<(), String> {
        scope.apiserver(self.apiserver)?;
        scope.plugin(&self.plugin)
    }

    fn label(&self) -> String {
        format!("apiserver-{} sees {}'s current key id", self.apiserver, self.plugin)
    }

    /// Whether the apiserver's key id hash metric shows the plugin's current Status key id.
    fn observe<'a>(&'a self, world: &'a mut World, _baseline: u64) -> ObserveFuture<'a> {
        Box::pin(async move {
            let status = match plugin_status_now(world, &self.plugin).await {
                Ok(status) => status,
                Err(error) => return Seen::new(false, error),
            };
            let found = match world.stack.metrics(self.apiserver).await {
                Ok(metrics) => metrics.key_id_hash_seen(&status.key_id),
                Err(error) => return Seen::new(false, format!("apiserver-{} /metrics: {error}", self.apiserver)),
            };
            Seen::new(
                found,
                format!(
                    "apiserver-{} {} key id `{}` from {}",
                    self.apiserver,
                    if found { "has seen" } else { "has not yet seen" },
                    status.key_id,
                    self.plugin
                ),
            )
        })
    }
}

impl ConditionKind for MetricExpect {
    fn check(&self, scope: &Scope<'_>) -> Result<(), String> {
        scope.apiserver(self.apiserver)?;
        self.bounds().check("metric", true)
    }

    fn label(&self) -> String {
        format!("metric {} on apiserver-{} ({})", self.name, self.apiserver, self.bounds().describe())
    }

    /// The metric's sum, judged and recorded as the author's figure.
    fn observe<'a>(&'a self, world: &'a mut World, _baseline: u64) -> ObserveFuture<'a> {
        Box::pin(async move {
            let metrics = match world.stack.metrics(self.apiserver).await {
                Ok(metrics) => metrics,
                Err(error) => return Seen::new(false, format!("apiserver-{} /metrics: {error}", self.apiserver)),
            };
            let labels: Vec<(&str, &str)> = self.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let sum = metrics.sum(&self.name, &labels).unwrap_or(0.0);
            let bounds = self.bounds();
            Seen::new(bounds.holds(sum), format!("{}{:?} = {sum} ({})", self.name, self.labels, bounds.describe()))
                .counted(self.figure.as_ref(), sum)
        })
    }
}

/// `socket`: whether a plugin's socket file exists.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SocketExpect {
    /// The plugin.
    #[serde(default = "default_plugin")]
    pub plugin: String,
    /// Whether its socket file must exist.
    pub exists: bool,
}

impl ConditionKind for SocketExpect {
    fn check(&self, scope: &Scope<'_>) -> Result<(), String> {
        scope.plugin(&self.plugin)
    }

    fn label(&self) -> String {
        format!("{}'s socket file {}", self.plugin, if self.exists { "present" } else { "absent" })
    }

    fn observe<'a>(&'a self, world: &'a mut World, _baseline: u64) -> ObserveFuture<'a> {
        Box::pin(async move {
            let Some(path) = world.stack.plugin_socket(&self.plugin) else {
                return Seen::new(false, format!("no plugin named `{}`", self.plugin));
            };
            let exists = path.exists();
            Seen::new(exists == self.exists, format!("{} {}", path.display(), if exists { "exists" } else { "does not exist" }))
        })
    }
}

/// A plugin's Status answer now.
pub async fn plugin_status_now(world: &World, plugin: &str) -> Result<v2::StatusResponse, String> {
    match plugin_status_call(world, plugin).await? {
        StatusAnswer::Answered(status) => Ok(status),
        StatusAnswer::Refused(message) => Err(message),
    }
}

/// What a plugin's Status call came back with.
enum StatusAnswer {
    /// A StatusResponse.
    Answered(v2::StatusResponse),
    /// A gRPC error (e.g. the plugin's KMS is sealed and it says so with an error, not with a
    /// `healthz` other than `ok`): the apiserver's KMS v2 health check counts it as unhealthy.
    Refused(String),
}

/// Calls a plugin's Status once; `Err` when nothing answered (no connection, no answer in time).
async fn plugin_status_call(world: &World, plugin: &str) -> Result<StatusAnswer, String> {
    let endpoint = world.stack.plugin_endpoint(plugin).ok_or_else(|| format!("no plugin named `{plugin}`"))?;
    let call = async {
        let client = kms_wire::PluginClient::connect(&endpoint, STATUS_DEADLINE).await.map_err(|e| format!("{plugin}: {e}"))?;
        Ok(match client.v2().status(v2::StatusRequest {}).await {
            Ok(answer) => StatusAnswer::Answered(answer.into_inner()),
            Err(status) => StatusAnswer::Refused(format!("{plugin} Status: {:?}: {}", status.code(), status.message())),
        })
    };
    tokio::time::timeout(STATUS_DEADLINE, call).await.unwrap_or_else(|_| Err(format!("{plugin} Status: no answer within 5 s")))
}

/// Compares `key_id` with the key id `expect` names; `None` when it matches.
pub fn key_id_mismatch(world: &World, key_id: &str, expect: &KeyIdExpect) -> Option<String> {
    let remembered = |mark: &str| world.marks.get(mark).and_then(|m: &Mark| m.key_ids.get(&expect.plugin)).cloned();
    if let Some(mark) = &expect.same_as {
        return match remembered(mark) {
            Some(old) if old == key_id => None,
            Some(old) => Some(format!("key id `{key_id}` differs from `{old}` ({} at mark `{mark}`)", expect.plugin)),
            None => Some(format!("{} had no key id at mark `{mark}` (was it down?)", expect.plugin)),
        };
    }
    if let Some(mark) = &expect.differs_from {
        return match remembered(mark) {
            Some(old) if old != key_id => None,
            Some(old) => Some(format!("key id is still `{old}` ({} at mark `{mark}`)", expect.plugin)),
            None => Some(format!("{} had no key id at mark `{mark}` (was it down?)", expect.plugin)),
        };
    }
    None
}
