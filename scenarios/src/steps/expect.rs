//! Expectations and waits: apiserver health and metrics, raw etcd values, the mock KMS audit
//! log, plugin Status, and marks to compare against. Each check is an observation (`Seen`)
//! that an `expect_*` step requires now and a `wait_until` step polls until it holds.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use kms_wire::envelope::Envelope;
use kms_wire::proto::v2;

use super::StepResult;
use crate::error::StepError;
use crate::model::{ApiserverKeyId, AuditExpect, EtcdExpect, HealthCheck, KeyIdExpect, MetricExpect, PluginStatusExpect, WaitUntil};
use crate::world::{Mark, ObjectRef, PLAINTEXT_MARKER, World};

/// How often `wait_until` looks again.
const POLL_INTERVAL: Duration = Duration::from_millis(250);
/// The deadline of one Status call made by a check.
const STATUS_DEADLINE: Duration = Duration::from_secs(5);

/// One observation: whether the expectation holds, and what was seen.
struct Seen {
    ok: bool,
    text: String,
}

impl Seen {
    fn new(ok: bool, text: impl Into<String>) -> Self {
        Self { ok, text: text.into() }
    }

    fn require(self) -> StepResult {
        if self.ok { Ok(self.text) } else { Err(StepError::Failed(self.text)) }
    }
}

/// The sum of the samples of metric `name` whose labels include every `(label, value)` pair.
pub fn metric_sum(metrics: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    metrics
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, label_text) = series.split_once('{').unwrap_or((series, ""));
            (metric == name && labels.iter().all(|(k, v)| label_text.contains(&format!("{k}=\"{v}\""))))
                .then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

async fn observe_health(world: &World, check: &HealthCheck) -> Seen {
    match world.stack.apiserver_get(check.apiserver, &check.path).await {
        Ok((status, body)) => {
            let healthy = status == 200;
            let contains = check.body_contains.as_ref().is_none_or(|needle| body.contains(needle.as_str()));
            let first_lines: String =
                body.lines().filter(|l| l.contains("[-]") || !l.starts_with('[')).take(3).collect::<Vec<_>>().join(" | ");
            Seen::new(
                healthy == check.healthy && contains,
                format!("apiserver-{} {} answered {status}: {}", check.apiserver, check.path, first_lines),
            )
        }
        Err(error) => Seen::new(false, format!("apiserver-{} {}: {error}", check.apiserver, check.path)),
    }
}

pub(super) async fn health(world: &mut World, check: &HealthCheck) -> StepResult {
    observe_health(world, check).await.require()
}

/// The metric's sum as judged (`None` when /metrics did not answer), with the observation.
async fn observe_metric(world: &World, expect: &MetricExpect) -> (Seen, Option<f64>) {
    let metrics = match world.stack.apiserver_get(expect.apiserver, "/metrics").await {
        Ok((200, body)) => body,
        Ok((status, _)) => return (Seen::new(false, format!("apiserver-{} /metrics answered {status}", expect.apiserver)), None),
        Err(error) => return (Seen::new(false, format!("apiserver-{} /metrics: {error}", expect.apiserver)), None),
    };
    let labels: Vec<(&str, &str)> = expect.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let sum = metric_sum(&metrics, &expect.name, &labels);
    let ok = expect.at_least.is_none_or(|min| sum >= min) && expect.at_most.is_none_or(|max| sum <= max);
    let bounds = match (expect.at_least, expect.at_most) {
        (Some(min), Some(max)) => format!("expected {min} to {max}"),
        (Some(min), None) => format!("expected at least {min}"),
        (None, Some(max)) => format!("expected at most {max}"),
        (None, None) => "no bound".into(),
    };
    (Seen::new(ok, format!("{}{:?} = {sum} ({bounds})", expect.name, expect.labels)), Some(sum))
}

pub(super) async fn metric(world: &mut World, expect: &MetricExpect) -> StepResult {
    let (seen, sum) = observe_metric(world, expect).await;
    // The figure is the value that was judged, not a second scrape.
    if let (true, Some(sum)) = (seen.ok, sum) {
        world.figure(format!("metric.{}", expect.name), sum);
    }
    seen.require()
}

async fn plugin_status_now(world: &World, plugin: &str) -> Result<v2::StatusResponse, String> {
    let endpoint = world.stack.plugin_endpoint(plugin).ok_or_else(|| format!("no plugin named `{plugin}`"))?;
    let call = async {
        let client = kms_wire::PluginClient::connect(&endpoint, STATUS_DEADLINE).await.map_err(|e| format!("{plugin}: {e}"))?;
        client
            .v2()
            .status(v2::StatusRequest {})
            .await
            .map(|r| r.into_inner())
            .map_err(|s| format!("{plugin} Status: {:?}: {}", s.code(), s.message()))
    };
    tokio::time::timeout(STATUS_DEADLINE, call).await.unwrap_or_else(|_| Err(format!("{plugin} Status: no answer within 5 s")))
}

/// Compares `key_id` with the key id `expect` names; `None` when it matches.
fn key_id_mismatch(world: &World, key_id: &str, expect: &KeyIdExpect) -> Option<String> {
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

async fn observe_plugin_status(world: &World, expect: &PluginStatusExpect) -> Seen {
    let status = match plugin_status_now(world, &expect.plugin).await {
        Ok(status) => status,
        Err(error) => return Seen::new(false, error),
    };
    let text = format!("{} Status: version {}, healthz `{}`, key id `{}`", expect.plugin, status.version, status.healthz, status.key_id);
    if let Some(healthy) = expect.healthy
        && (status.healthz == "ok") != healthy
    {
        return Seen::new(false, format!("{text} (expected {})", if healthy { "healthy" } else { "unhealthy" }));
    }
    if let Some(key_id) = &expect.key_id
        && let Some(mismatch) = key_id_mismatch(world, &status.key_id, key_id)
    {
        return Seen::new(false, format!("{text}: {mismatch}"));
    }
    Seen::new(true, text)
}

pub(super) async fn plugin_status(world: &mut World, expect: &PluginStatusExpect) -> StepResult {
    observe_plugin_status(world, expect).await.require()
}

/// Whether the apiserver's key id hash metric shows the plugin's current Status key id.
async fn observe_apiserver_key_id(world: &World, seen: &ApiserverKeyId) -> Seen {
    let status = match plugin_status_now(world, &seen.plugin).await {
        Ok(status) => status,
        Err(error) => return Seen::new(false, error),
    };
    let hash = format!("sha256:{}", hex::encode(<sha2::Sha256 as sha2::Digest>::digest(status.key_id.as_bytes())));
    let metrics = world.stack.apiserver_get(seen.apiserver, "/metrics").await.map(|(_, body)| body).unwrap_or_default();
    let found = metrics
        .lines()
        .any(|l| l.starts_with("apiserver_envelope_encryption_key_id_hash_status_last_timestamp_seconds") && l.contains(&hash));
    Seen::new(
        found,
        format!(
            "apiserver-{} {} key id `{}` from {}",
            seen.apiserver,
            if found { "has seen" } else { "has not yet seen" },
            status.key_id,
            seen.plugin
        ),
    )
}

/// A short label for a `wait_until` condition.
pub fn condition_label(wait: &WaitUntil) -> String {
    if let Some(h) = &wait.health {
        format!("apiserver-{} {} is {}", h.apiserver, h.path, if h.healthy { "healthy" } else { "failing" })
    } else if let Some(p) = &wait.plugin_status {
        let health = p.healthy.map_or("answers", |h| if h { "is healthy" } else { "is unhealthy" });
        let key_id = match &p.key_id {
            Some(KeyIdExpect { same_as: Some(mark), .. }) => format!(" with the key id of `{mark}`"),
            Some(KeyIdExpect { differs_from: Some(mark), .. }) => format!(" with a key id other than at `{mark}`"),
            _ => String::new(),
        };
        format!("{} Status {health}{key_id}", p.plugin)
    } else if let Some(k) = &wait.apiserver_key_id {
        format!("apiserver-{} sees {}'s current key id", k.apiserver, k.plugin)
    } else if let Some(m) = &wait.metric {
        format!("metric {} holds", m.name)
    } else {
        "nothing".into()
    }
}

pub(super) async fn wait_until(world: &mut World, wait: &WaitUntil) -> StepResult {
    let started = Instant::now();
    loop {
        let seen = if let Some(check) = &wait.health {
            observe_health(world, check).await
        } else if let Some(expect) = &wait.plugin_status {
            observe_plugin_status(world, expect).await
        } else if let Some(seen) = &wait.apiserver_key_id {
            observe_apiserver_key_id(world, seen).await
        } else if let Some(expect) = &wait.metric {
            observe_metric(world, expect).await.0
        } else {
            Seen::new(true, "nothing to wait for")
        };
        let elapsed = started.elapsed();
        if seen.ok {
            let key = format!("wait.{}.seconds", condition_label(wait).replace(' ', "_"));
            world.figure(key, (elapsed.as_secs_f64() * 10.0).round() / 10.0);
            return Ok(format!("after {:.1} s: {}", elapsed.as_secs_f64(), seen.text));
        }
        if elapsed > wait.within.0 {
            return Err(StepError::Timeout { seconds: wait.within.0.as_secs_f64(), what: condition_label(wait), last: seen.text });
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

pub(super) async fn mark(world: &mut World, name: &str) -> StepResult {
    let audit_seq = match world.stack.mock_kms() {
        Some(kms) => {
            let since = world.marks.values().map(|m| m.audit_seq).max().unwrap_or(0);
            kms.audit(since).await?.iter().filter_map(|r| r["seq"].as_u64()).max().unwrap_or(since)
        }
        None => 0,
    };
    let mut key_ids = BTreeMap::new();
    for plugin in world.stack.plugin_names() {
        if let Ok(status) = plugin_status_now(world, &plugin).await {
            key_ids.insert(plugin, status.key_id);
        }
    }
    let text = format!(
        "audit position {audit_seq}; key ids: {}",
        key_ids.iter().map(|(p, k)| format!("{p} `{k}`")).collect::<Vec<_>>().join(", ")
    );
    world.marks.insert(name.to_owned(), Mark { audit_seq, key_ids });
    Ok(text)
}

pub(super) async fn audit(world: &mut World, expect: &AuditExpect) -> StepResult {
    let since = world.marks.get(&expect.since).map(|m| m.audit_seq).unwrap_or(0);
    let kms = world.stack.mock_kms().ok_or_else(|| StepError::Failed("the stack runs no mock KMS".into()))?;
    let records = kms.audit(since).await?;
    let count = records
        .iter()
        .filter(|r| r["action"] == expect.action.name())
        .filter(|r| expect.outcome.is_none_or(|o| r["outcome"] == o.name()))
        .count();
    let action = expect.action.name();
    let outcome = expect.outcome.map(|o| format!(" with outcome {}", o.name())).unwrap_or_default();
    world.figure(
        format!("audit.{action}{}.since_{}", expect.outcome.map(|o| format!(".{}", o.name())).unwrap_or_default(), expect.since),
        count as f64,
    );
    let text = format!("{count} {action} calls{outcome} since `{}`", expect.since);
    let ok = expect.at_least.is_none_or(|min| count >= min) && expect.at_most.is_none_or(|max| count <= max);
    let bounds = format!(
        "{}{}",
        expect.at_least.map(|m| format!(" at least {m}")).unwrap_or_default(),
        expect.at_most.map(|m| format!(" at most {m}")).unwrap_or_default()
    );
    Seen::new(ok, if ok { text } else { format!("{text}; expected{bounds}") }).require()
}

pub(super) async fn etcd(world: &mut World, expect: &EtcdExpect) -> StepResult {
    let prefix = expect.prefix.clone().unwrap_or_default();
    let key_prefix = format!("/registry/{}/{}/{prefix}", expect.kind.resource(), expect.namespace);
    let values = world.stack.etcd_list(&key_prefix).await?;
    if expect.absent {
        return match values.first() {
            None => Ok(format!("nothing stored under {key_prefix}")),
            Some((key, value)) => Err(StepError::Failed(format!(
                "{} value(s) stored under {key_prefix}, e.g. {key} ({}…)",
                values.len(),
                String::from_utf8_lossy(&value[..value.len().min(24)])
            ))),
        };
    }
    if let Some(count) = expect.count
        && values.len() != count
    {
        return Err(StepError::Failed(format!("{} values under {key_prefix}, expected {count}", values.len())));
    }
    // Nothing the scenario wrote may be missing: that would be a lost object.
    let stored: std::collections::BTreeSet<&str> = values.iter().map(|(k, _)| k.as_str()).collect();
    let written = world.select(expect.kind, &expect.namespace, expect.prefix.as_deref(), None);
    let lost: Vec<&ObjectRef> = written.iter().map(|(o, _)| o).filter(|o| !stored.contains(o.etcd_key().as_str())).collect();
    if let Some(first) = lost.first() {
        return Err(StepError::Failed(format!(
            "{} object(s) written by the scenario are not in etcd, e.g. {}",
            lost.len(),
            first.etcd_key()
        )));
    }
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    let mut key_ids: BTreeMap<String, usize> = BTreeMap::new();
    for (key, raw) in &values {
        let envelope = Envelope::parse(raw).map_err(|e| StepError::Failed(format!("{key}: the stored value does not parse: {e}")))?;
        let label = format!("{}{}", envelope.kind(), envelope.name().map(|n| format!(":{n}")).unwrap_or_default());
        *kinds.entry(label.clone()).or_default() += 1;
        if let Some(provider) = &expect.provider
            && envelope.kind() != provider.0
        {
            return Err(StepError::Failed(format!("{key} is stored as {label}, expected {}", provider.0.name())));
        }
        if let Some(name) = &expect.name
            && envelope.name() != Some(name.as_str())
        {
            return Err(StepError::Failed(format!("{key} is stored as {label}, expected the name `{name}`")));
        }
        if let Envelope::KmsV2 { object, .. } = &envelope {
            *key_ids.entry(object.key_id.clone()).or_default() += 1;
        }
        if let Some(key_id) = &expect.key_id {
            let Envelope::KmsV2 { object, .. } = &envelope else {
                return Err(StepError::Failed(format!("{key} is stored as {label}, which carries no key id")));
            };
            if let Some(mismatch) = key_id_mismatch(world, &object.key_id, key_id) {
                return Err(StepError::Failed(format!("{key}: {mismatch}")));
            }
        }
    }
    if values.is_empty() && expect.count != Some(0) {
        return Err(StepError::Failed(format!("nothing stored under {key_prefix}")));
    }
    let kinds = kinds.iter().map(|(k, n)| format!("{n} × {k}")).collect::<Vec<_>>().join(", ");
    let ids = if key_ids.is_empty() {
        String::new()
    } else {
        format!("; key ids: {}", key_ids.iter().map(|(k, n)| format!("{n} × `{k}`")).collect::<Vec<_>>().join(", "))
    };
    Ok(format!("{} values under {key_prefix}: {kinds}{ids}", values.len()))
}

pub(super) async fn no_plaintext(world: &mut World) -> StepResult {
    let values = world.stack.etcd_list("/registry/").await?;
    let marker = PLAINTEXT_MARKER.as_bytes();
    let leaked: Vec<&String> = values.iter().filter(|(_, v)| v.windows(marker.len()).any(|w| w == marker)).map(|(k, _)| k).collect();
    match leaked.first() {
        None => Ok(format!("{} etcd values scanned, no plaintext", values.len())),
        Some(first) => Err(StepError::Failed(format!("plaintext found in {} etcd value(s), e.g. {first}", leaked.len()))),
    }
}
