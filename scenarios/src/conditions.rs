//! One condition type for waits and expectations: `wait_until` polls a [`Condition`] until it
//! holds, `expect` requires it now. Each condition observes the running [`World`] and says what
//! it saw ([`Seen`]), so a failure shows the last observation.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use kms_wire::envelope::Envelope;
use kms_wire::proto::v2;
use serde::Deserialize;

use crate::model::{FigureName, KeyIdExpect, Kind, Pattern, ProviderName, default_namespace, default_plugin};
use crate::steps::{Bounds, Scope};
use crate::world::{Mark, ObjectRef, PLAINTEXT_MARKER, World, value_for};

/// The deadline of one Status call made by a condition.
const STATUS_DEADLINE: Duration = Duration::from_secs(5);
/// How often a wait looks again (a write probe: once a second, since each probe writes an object).
const POLL_INTERVAL: Duration = Duration::from_millis(250);
const WRITE_PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// Something about the running stack that holds or not.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    /// An apiserver health endpoint answers as described.
    Health(HealthCheck),
    /// A plugin's Status answers as described.
    PluginStatus(PluginStatusExpect),
    /// An apiserver has seen a plugin's current Status key id (its key id hash metric).
    ApiserverKeyId(ApiserverKeyId),
    /// The sum of an apiserver metric's samples is within bounds.
    Metric(MetricExpect),
    /// A fresh write (one new object per probe) answers as described.
    Write(WriteProbe),
    /// Mock KMS audit records since a mark are within bounds.
    Audit(AuditCount),
    /// The raw values in etcd are as described.
    Etcd(EtcdExpect),
    /// No generated plaintext is in etcd now, nor in any revision written since the stack started
    /// (or since a mark).
    NoPlaintextInEtcd(NoPlaintext),
    /// A plugin's socket file exists or not (a crash leaves it behind; SIGTERM removes it).
    Socket(SocketExpect),
    /// A LIST of a kind returns every object the scenario wrote.
    Listed(Listed),
    /// The surrounding `load` stored at least this many writes since this step began.
    Writes(WritesCount),
    /// A synced Secret holds the latest (or previous) value put to a remote secret.
    Synced(crate::steps::sync::Synced),
    /// An ExternalSecret's `Ready` condition.
    ExternalSecret(crate::steps::sync::ExternalSecretReady),
    /// What `kms-lab inspect` (reading etcd directly, headers only) counts for a kind.
    Inspect(InspectExpect),
}

/// One observation: whether the condition holds, and what was seen.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Whether it holds.
    pub ok: bool,
    /// What was seen, for the progress line or the failure.
    pub text: String,
}

impl Seen {
    fn new(ok: bool, text: impl Into<String>) -> Self {
        Self { ok, text: text.into() }
    }
}

impl Condition {
    /// Load-time checks of the references the condition makes.
    pub fn check(&self, scope: &Scope<'_>) -> Result<(), String> {
        match self {
            Self::Health(h) => scope.apiserver(h.apiserver),
            Self::PluginStatus(p) => {
                scope.plugin(&p.plugin)?;
                p.key_id.as_ref().map_or(Ok(()), |k| scope.key_id(k))
            }
            Self::ApiserverKeyId(k) => {
                scope.apiserver(k.apiserver)?;
                scope.plugin(&k.plugin)
            }
            Self::Metric(m) => {
                scope.apiserver(m.apiserver)?;
                m.bounds().check("metric", true)
            }
            Self::Write(w) => scope.apiserver(w.apiserver),
            Self::Audit(a) => {
                scope.mock_kms("audit")?;
                scope.mark(&a.since)?;
                a.bounds().check("audit", true)
            }
            Self::Etcd(e) => e.key_id.as_ref().map_or(Ok(()), |k| scope.key_id(k)),
            Self::NoPlaintextInEtcd(n) => n.since.as_ref().map_or(Ok(()), |mark| scope.mark(mark)),
            Self::Socket(s) => scope.plugin(&s.plugin),
            Self::Listed(l) => scope.apiserver(l.apiserver),
            Self::Writes(_) if !scope.in_load() => {
                Err("`writes` counts the writes of a running `load`: use it inside a `load`'s `during`".into())
            }
            Self::Writes(_) => Ok(()),
            Self::Synced(s) => s.check(scope),
            Self::ExternalSecret(e) => e.check(scope),
            Self::Inspect(i) => kms_lab_ops::inspect::ProviderRef::parse(&i.all_under).map(drop).map_err(|e| format!("inspect: {e}")),
        }
    }

    /// A short label (`apiserver-0 /readyz is healthy`).
    pub fn label(&self) -> String {
        match self {
            Self::Health(h) => format!("apiserver-{} {} is {}", h.apiserver, h.path, if h.healthy { "healthy" } else { "failing" }),
            Self::PluginStatus(p) => {
                let health = p.healthy.map_or("answers", |h| if h { "is healthy" } else { "is unhealthy" });
                let key_id = match &p.key_id {
                    Some(KeyIdExpect { same_as: Some(mark), .. }) => format!(" with the key id of `{mark}`"),
                    Some(KeyIdExpect { differs_from: Some(mark), .. }) => format!(" with a key id other than at `{mark}`"),
                    _ => String::new(),
                };
                format!("{} Status {health}{key_id}", p.plugin)
            }
            Self::ApiserverKeyId(k) => format!("apiserver-{} sees {}'s current key id", k.apiserver, k.plugin),
            Self::Metric(m) => format!("metric {} on apiserver-{} ({})", m.name, m.apiserver, m.bounds().describe()),
            Self::Write(w) => format!(
                "a new {} write on apiserver-{} {}",
                w.kind.resource(),
                w.apiserver,
                w.expect_error.as_ref().map_or("succeeds".to_owned(), |p| format!("fails with /{}/", p.0.as_str()))
            ),
            Self::Audit(a) => format!(
                "mock KMS {}{}{} calls since `{}` ({})",
                a.action.name(),
                a.outcome.map(|o| format!(" {}", o.name())).unwrap_or_default(),
                a.caller.map(|c| format!(" from {}", c.name())).unwrap_or_default(),
                a.since,
                a.bounds().describe()
            ),
            Self::Etcd(e) => format!("etcd {}/{}/{}*", e.kind.resource(), e.namespace, e.prefix.as_deref().unwrap_or("")),
            Self::NoPlaintextInEtcd(n) => match &n.since {
                Some(mark) => format!("no plaintext anywhere in etcd, in any revision since `{mark}`"),
                None => "no plaintext anywhere in etcd, in any revision".into(),
            },
            Self::Socket(s) => format!("{}'s socket file {}", s.plugin, if s.exists { "present" } else { "absent" }),
            Self::Listed(l) => format!("a LIST of {} on apiserver-{} returns every object written", l.kind.resource(), l.apiserver),
            Self::Writes(w) => format!("the load stored {} more writes", w.at_least),
            Self::Synced(s) => s.label(),
            Self::ExternalSecret(e) => e.label(),
            Self::Inspect(i) => format!(
                "kms-lab inspect: every {} under {}{}",
                i.kind.resource(),
                i.all_under,
                i.count.map(|c| format!(", {c} of them")).unwrap_or_default()
            ),
        }
    }

    /// What it needs of a plugin under test: counting mock KMS calls means nothing for a plugin
    /// that calls no remote KMS.
    pub fn needs(&self) -> crate::steps::Needs {
        match self {
            Self::Audit(_) => crate::steps::Needs { capabilities: vec![kms_lab_plugins::Capability::RemoteKms], own_plugin_only: None },
            _ => crate::steps::Needs::default(),
        }
    }

    /// How long a wait pauses between two observations.
    pub fn poll_interval(&self) -> Duration {
        match self {
            Self::Write(_) => WRITE_PROBE_INTERVAL,
            _ => POLL_INTERVAL,
        }
    }

    /// The figure a counting condition records its value under, if the author named one.
    fn figure(&self) -> Option<&FigureName> {
        match self {
            Self::Metric(m) => m.figure.as_ref(),
            Self::Audit(a) => a.figure.as_ref(),
            _ => None,
        }
    }

    /// Looks at the world once. `baseline` is what the condition saw when its step began (the
    /// write count of a surrounding load), so relative conditions can count from there.
    pub async fn observe(&self, world: &mut World, baseline: u64) -> Seen {
        let (seen, value) = match self {
            Self::Health(h) => (observe_health(world, h).await, None),
            Self::PluginStatus(p) => (observe_plugin_status(world, p).await, None),
            Self::ApiserverKeyId(k) => (observe_apiserver_key_id(world, k).await, None),
            Self::Metric(m) => observe_metric(world, m).await,
            Self::Write(w) => (observe_write(world, w).await, None),
            Self::Audit(a) => observe_audit(world, a).await,
            Self::Etcd(e) => (observe_etcd(world, e).await, None),
            Self::NoPlaintextInEtcd(n) => (observe_no_plaintext(world, n).await, None),
            Self::Socket(s) => (observe_socket(world, s), None),
            Self::Listed(l) => (observe_listed(world, l).await, None),
            Self::Synced(s) => (s.observe(world).await, None),
            Self::ExternalSecret(e) => (e.observe(world).await, None),
            Self::Inspect(i) => (observe_inspect(world, i).await, None),
            Self::Writes(w) => {
                let now = world.load_writes();
                let more = now.saturating_sub(baseline);
                (Seen::new(more >= w.at_least, format!("the load stored {more} writes since this step began")), None)
            }
        };
        // The figure is the value that was judged, not a second observation.
        if let (true, Some(name), Some(value)) = (seen.ok, self.figure(), value) {
            world.figure(name.to_string(), value);
        }
        seen
    }

    /// What relative conditions count from when their step begins.
    pub fn baseline(&self, world: &World) -> u64 {
        match self {
            Self::Writes(_) => world.load_writes(),
            _ => 0,
        }
    }
}

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

/// A write probe: each observation creates one new object `<prefix>-NNN`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WriteProbe {
    /// Secret or configmap.
    #[serde(default)]
    pub kind: Kind,
    /// The apiserver to call.
    #[serde(default)]
    pub apiserver: usize,
    /// Name prefix of the probe objects.
    pub prefix: String,
    /// The condition holds when a write fails with a message matching this (default: when one succeeds).
    #[serde(default)]
    pub expect_error: Option<Pattern>,
}

/// Mock KMS audit records since a mark, counted.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditCount {
    /// The mark the window starts at.
    pub since: String,
    /// The KMS action (`Encrypt`, `Decrypt`, …).
    pub action: mock_kms::api::Action,
    /// Only records with this outcome (`Ok`, `Sealed`, …; default any).
    #[serde(default)]
    pub outcome: Option<mock_kms::api::admin::Outcome>,
    /// Only calls made for this reason (`request`: the apiserver's calls, and every call of a
    /// plugin that does not say why it calls; `health-probe`: the plugin's own; default any).
    #[serde(default)]
    pub caller: Option<mock_kms::api::Caller>,
    /// At least this many.
    #[serde(default)]
    pub at_least: Option<f64>,
    /// At most this many.
    #[serde(default)]
    pub at_most: Option<f64>,
    /// Record the count as this figure.
    #[serde(default)]
    pub figure: Option<FigureName>,
}

impl AuditCount {
    fn bounds(&self) -> Bounds {
        Bounds { at_least: self.at_least, at_most: self.at_most }
    }
}

/// Expectations on the raw etcd values of objects.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdExpect {
    /// Secret or configmap.
    #[serde(default)]
    pub kind: Kind,
    /// The namespace.
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// Objects whose names start with this (default: every one of the kind in the namespace).
    #[serde(default)]
    pub prefix: Option<String>,
    /// No object under the prefix may exist in etcd.
    #[serde(default)]
    pub absent: bool,
    /// Exactly this many objects under the prefix.
    #[serde(default)]
    pub count: Option<usize>,
    /// The provider kind every value was written by: identity, aescbc, aesgcm, secretbox, kms-v1, kms-v2.
    #[serde(default)]
    pub provider: Option<ProviderName>,
    /// The key name (static) or provider name (kms) in every value's prefix.
    #[serde(default)]
    pub name: Option<String>,
    /// KMS v2: the key id in every value, compared with a mark.
    #[serde(default)]
    pub key_id: Option<KeyIdExpect>,
}

/// `no_plaintext_in_etcd: {since}`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoPlaintext {
    /// Only revisions written after this mark (default: every revision since the stack started;
    /// a scenario that stores plaintext on purpose, e.g. under `identity`, checks from a later mark).
    #[serde(default)]
    pub since: Option<String>,
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

/// `listed`: a LIST returns every object of the kind the scenario wrote.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listed {
    /// Secret or configmap.
    #[serde(default)]
    pub kind: Kind,
    /// The namespace.
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// The apiserver to call.
    #[serde(default)]
    pub apiserver: usize,
}

/// `writes`: the surrounding load stored this many more writes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WritesCount {
    /// At least this many since the step began.
    pub at_least: u64,
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

/// The metric's sum as judged (`None` when /metrics did not answer), with the observation.
async fn observe_metric(world: &World, expect: &MetricExpect) -> (Seen, Option<f64>) {
    let metrics = match world.stack.metrics(expect.apiserver).await {
        Ok(metrics) => metrics,
        Err(error) => return (Seen::new(false, format!("apiserver-{} /metrics: {error}", expect.apiserver)), None),
    };
    let labels: Vec<(&str, &str)> = expect.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let sum = metrics.sum(&expect.name, &labels).unwrap_or(0.0);
    let bounds = expect.bounds();
    (Seen::new(bounds.holds(sum), format!("{}{:?} = {sum} ({})", expect.name, expect.labels, bounds.describe())), Some(sum))
}

/// A plugin's Status answer now.
pub async fn plugin_status_now(world: &World, plugin: &str) -> Result<v2::StatusResponse, String> {
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

/// Whether the apiserver's key id hash metric shows the plugin's current Status key id.
async fn observe_apiserver_key_id(world: &World, seen: &ApiserverKeyId) -> Seen {
    let status = match plugin_status_now(world, &seen.plugin).await {
        Ok(status) => status,
        Err(error) => return Seen::new(false, error),
    };
    let found = match world.stack.metrics(seen.apiserver).await {
        Ok(metrics) => metrics.key_id_hash_seen(&status.key_id),
        Err(error) => return Seen::new(false, format!("apiserver-{} /metrics: {error}", seen.apiserver)),
    };
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

async fn observe_write(world: &mut World, write: &WriteProbe) -> Seen {
    let client = match world.client(write.apiserver).await {
        Ok(client) => client,
        Err(error) => return Seen::new(false, error.to_string()),
    };
    let object = ObjectRef { kind: write.kind, namespace: default_namespace(), name: world.next_probe_name(write.kind, &write.prefix) };
    let call = client.create(&object, &value_for(world.seed(), &object, 0)).await;
    if call.result.is_ok() {
        world.objects.insert(object.clone(), 0);
    }
    let holds = match (&call.result, &write.expect_error) {
        (Ok(()), None) => true,
        (Err(message), Some(pattern)) => pattern.0.is_match(message),
        _ => false,
    };
    let text = match &call.result {
        Ok(()) => format!("{} written ({:.0} ms)", object.name, call.elapsed.as_secs_f64() * 1e3),
        Err(message) => format!("{} refused: {message}", object.name),
    };
    Seen::new(holds, text)
}

/// The audit records of one action since a mark, filtered by outcome and caller: the one
/// counting rule `audit` conditions and `kms_calls` share.
pub async fn audit_window(
    world: &World,
    since: &str,
    action: mock_kms::api::Action,
    outcome: Option<mock_kms::api::admin::Outcome>,
    caller: Option<mock_kms::api::Caller>,
) -> Result<Vec<mock_kms::api::admin::AuditRecord>, String> {
    let since_seq = world.marks.get(since).map(|m| m.audit_seq).unwrap_or(0);
    let kms = world.stack.mock_kms().ok_or("the stack runs no mock KMS")?;
    let query =
        mock_kms::api::admin::AuditQuery { action: Some(action), outcome, caller, since_seq: Some(since_seq), ..Default::default() };
    kms.audit_query(&query).await.map_err(|e| e.to_string())
}

async fn observe_audit(world: &World, expect: &AuditCount) -> (Seen, Option<f64>) {
    let records = match audit_window(world, &expect.since, expect.action, expect.outcome, expect.caller).await {
        Ok(records) => records,
        Err(error) => return (Seen::new(false, error), None),
    };
    let count = records.len() as f64;
    let bounds = expect.bounds();
    let text = format!(
        "{count} {}{}{} calls since `{}` ({})",
        expect.action.name(),
        expect.outcome.map(|o| format!(" with outcome {}", o.name())).unwrap_or_default(),
        expect.caller.map(|c| format!(" from {}", c.name())).unwrap_or_default(),
        expect.since,
        bounds.describe()
    );
    (Seen::new(bounds.holds(count), text), Some(count))
}

/// `inspect: {kind, all_under, count}`: `kms-lab inspect`'s count of one kind.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InspectExpect {
    /// Secret or configmap.
    #[serde(default)]
    pub kind: Kind,
    /// Every object of the kind must be under this provider: `identity`, `aescbc:key1`,
    /// `kms-v2:lab-kms`, or a kind alone (`kms-v2`) for any name.
    pub all_under: String,
    /// And there must be exactly this many.
    #[serde(default)]
    pub count: Option<u64>,
}

async fn observe_inspect(world: &World, expect: &InspectExpect) -> Seen {
    use kms_lab_ops::inspect::{InspectOptions, ProviderRef, inspect};
    let resource = expect.kind.ops_resource();
    let Ok(pattern) = ProviderRef::parse(&expect.all_under) else {
        return Seen::new(false, format!("`{}` is not a provider", expect.all_under));
    };
    let etcd = match world.stack.etcd_client() {
        Ok(etcd) => etcd,
        Err(e) => return Seen::new(false, format!("no etcd client: {e}")),
    };
    let options = InspectOptions { resources: vec![resource.clone()], config: None, ..InspectOptions::default() };
    let report = match inspect(&etcd, &options, &mut |_, _, _| {}).await {
        Ok(report) => report,
        Err(e) => return Seen::new(false, format!("kms-lab inspect failed: {e}")),
    };
    let Some(summary) = report.resource(&resource) else {
        return Seen::new(false, format!("kms-lab inspect reported nothing for {resource}"));
    };
    let under = summary.objects_under(&pattern);
    let providers: Vec<String> = summary.providers.iter().map(|p| format!("{} × {}", p.objects, p.provider)).collect();
    let text = format!(
        "{} {resource} at revision {}: {}; {} DEK source(s), {} malformed",
        summary.objects,
        report.revision,
        if providers.is_empty() { "none".to_owned() } else { providers.join(", ") },
        summary.dek_sources,
        summary.malformed.len()
    );
    let ok = under == summary.objects && summary.malformed.is_empty() && expect.count.is_none_or(|c| c == summary.objects);
    Seen::new(ok, text)
}

async fn observe_etcd(world: &World, expect: &EtcdExpect) -> Seen {
    match etcd_report(world, expect).await {
        Ok(text) => Seen::new(true, text),
        Err(text) => Seen::new(false, text),
    }
}

async fn etcd_report(world: &World, expect: &EtcdExpect) -> Result<String, String> {
    let prefix = expect.prefix.clone().unwrap_or_default();
    let key_prefix = format!("/registry/{}/{}/{prefix}", expect.kind.resource(), expect.namespace);
    let values = world.stack.etcd_list(&key_prefix).await.map_err(|e| e.to_string())?;
    if expect.absent {
        return match values.first() {
            None => Ok(format!("nothing stored under {key_prefix}")),
            Some((key, value)) => Err(format!(
                "{} value(s) stored under {key_prefix}, e.g. {key} ({}…)",
                values.len(),
                String::from_utf8_lossy(&value[..value.len().min(24)])
            )),
        };
    }
    if let Some(count) = expect.count
        && values.len() != count
    {
        return Err(format!("{} values under {key_prefix}, expected {count}", values.len()));
    }
    // Nothing the scenario wrote may be missing: that would be a lost object.
    let stored: BTreeSet<&str> = values.iter().map(|(k, _)| k.as_str()).collect();
    let written = world.select(expect.kind, &expect.namespace, expect.prefix.as_deref(), None);
    let lost: Vec<&ObjectRef> = written.iter().map(|(o, _)| o).filter(|o| !stored.contains(o.etcd_key().as_str())).collect();
    if let Some(first) = lost.first() {
        return Err(format!("{} object(s) written by the scenario are not in etcd, e.g. {}", lost.len(), first.etcd_key()));
    }
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    let mut key_ids: BTreeMap<String, usize> = BTreeMap::new();
    for (key, raw) in &values {
        let envelope = Envelope::parse(raw).map_err(|e| format!("{key}: the stored value does not parse: {e}"))?;
        let label = format!("{}{}", envelope.kind(), envelope.name().map(|n| format!(":{n}")).unwrap_or_default());
        *kinds.entry(label.clone()).or_default() += 1;
        if let Some(provider) = &expect.provider
            && envelope.kind() != provider.0
        {
            return Err(format!("{key} is stored as {label}, expected {}", provider.0.name()));
        }
        if let Some(name) = &expect.name
            && envelope.name() != Some(name.as_str())
        {
            return Err(format!("{key} is stored as {label}, expected the name `{name}`"));
        }
        if let Envelope::KmsV2 { object, .. } = &envelope {
            *key_ids.entry(object.key_id.clone()).or_default() += 1;
        }
        if let Some(key_id) = &expect.key_id {
            let Envelope::KmsV2 { object, .. } = &envelope else {
                return Err(format!("{key} is stored as {label}, which carries no key id"));
            };
            if let Some(mismatch) = key_id_mismatch(world, &object.key_id, key_id) {
                return Err(format!("{key}: {mismatch}"));
            }
        }
    }
    if values.is_empty() && expect.count != Some(0) {
        return Err(format!("nothing stored under {key_prefix}"));
    }
    let kinds = kinds.iter().map(|(k, n)| format!("{n} × {k}")).collect::<Vec<_>>().join(", ");
    let ids = if key_ids.is_empty() {
        String::new()
    } else {
        format!("; key ids: {}", key_ids.iter().map(|(k, n)| format!("{n} × `{k}`")).collect::<Vec<_>>().join(", "))
    };
    Ok(format!("{} values under {key_prefix}: {kinds}{ids}", values.len()))
}

async fn observe_no_plaintext(world: &World, expect: &NoPlaintext) -> Seen {
    let values = match world.stack.etcd_list("/registry/").await {
        Ok(values) => values,
        Err(error) => return Seen::new(false, error.to_string()),
    };
    let marker = PLAINTEXT_MARKER.as_bytes();
    let leaked: Vec<&String> = values.iter().filter(|(_, v)| v.windows(marker.len()).any(|w| w == marker)).map(|(k, _)| k).collect();
    if let Some(first) = leaked.first() {
        return Seen::new(false, format!("plaintext found in {} etcd value(s) now, e.g. {first}", leaked.len()));
    }
    let after = expect.since.as_ref().and_then(|mark| world.marks.get(mark)).map_or(0, |m| m.etcd_revision);
    let history = match world.history() {
        Some(recorder) => {
            // The watch streams behind the writes: read the history through the current revision first.
            let now = match world.stack.etcd_revision().await {
                Ok(now) => now,
                Err(error) => return Seen::new(false, error.to_string()),
            };
            if !recorder.caught_up(now, Duration::from_secs(15)).await {
                return Seen::new(false, format!("the etcd revision recorder did not reach revision {now} within 15 s"));
            }
            recorder.summary_after(after)
        }
        None => return Seen::new(true, format!("{} etcd values scanned, no plaintext (no revision recorder running)", values.len())),
    };
    match history.first_leak {
        Some((key, revision)) => Seen::new(
            false,
            format!(
                "plaintext was written to etcd and later overwritten: {} of {} revisions since {} hold it, first {key} at revision {revision}",
                history.leaked,
                history.revisions,
                expect.since.as_ref().map_or("the start".to_owned(), |m| format!("`{m}`"))
            ),
        ),
        None => Seen::new(
            true,
            format!("{} etcd values now and {} revisions written since the start scanned, no plaintext", values.len(), history.revisions),
        ),
    }
}

fn observe_socket(world: &World, expect: &SocketExpect) -> Seen {
    let Some(path) = world.stack.plugin_socket(&expect.plugin) else {
        return Seen::new(false, format!("no plugin named `{}`", expect.plugin));
    };
    let exists = path.exists();
    Seen::new(exists == expect.exists, format!("{} {}", path.display(), if exists { "exists" } else { "does not exist" }))
}

async fn observe_listed(world: &World, listed: &Listed) -> Seen {
    match crate::world::list_names(world, listed.apiserver, listed.kind, &listed.namespace).await {
        Ok(names) => {
            let missing = world.missing_from(listed.kind, &listed.namespace, &names);
            let expected = world.select(listed.kind, &listed.namespace, None, None).len();
            match missing.first() {
                None => Seen::new(true, format!("a LIST returned all {expected} {}", listed.kind.resource())),
                Some(first) => Seen::new(false, format!("a LIST returned {} of {expected}; missing e.g. {}", names.len(), first.name)),
            }
        }
        Err(message) => Seen::new(false, format!("the LIST failed: {message}")),
    }
}
