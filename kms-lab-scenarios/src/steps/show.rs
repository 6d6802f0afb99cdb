//! `show`: what the demo shows a person (raw etcd bytes, a Secret as read back, health,
//! metrics, the mock KMS audit); asserts nothing.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use kms_wire::envelope::Envelope;
use serde::Deserialize;

use super::{Scope, StepFuture, StepKind};
use crate::error::StepError;
use crate::model::{Kind, default_namespace};
use crate::world::{ObjectRef, World};

/// `show: {WHAT: …}`: shows a person what the stack holds (the demo's chapters); asserts nothing.
#[derive(Debug, Clone, Deserialize)]
#[serde(transparent)]
pub struct Show(#[serde(with = "serde_yaml::with::singleton_map_recursive")] pub ShowWhat);

/// What `show` shows.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShowWhat {
    /// An object's raw value in etcd: hexdump and envelope header.
    Etcd(ObjectName),
    /// An object's value as read back through the API.
    Object(ObjectName),
    /// An apiserver health endpoint's answer.
    Health(ShowHealth),
    /// Apiserver metrics whose names start with one of these.
    Metrics(ShowMetrics),
    /// The mock KMS audit log: counts per action and the last records.
    Audit(ShowAudit),
}

/// An object by kind and name.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectName {
    /// Secret or configmap.
    #[serde(default)]
    pub kind: Kind,
    /// The namespace.
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// The name.
    pub name: String,
}

/// `show: {health: …}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShowHealth {
    /// The apiserver.
    #[serde(default)]
    pub apiserver: usize,
    /// The path.
    pub path: String,
}

/// `show: {metrics: …}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShowMetrics {
    /// The apiserver.
    #[serde(default)]
    pub apiserver: usize,
    /// Metric name prefixes.
    pub names: Vec<String>,
}

/// `show: {audit: …}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShowAudit {
    /// How many of the last records to print.
    #[serde(default = "four")]
    pub last: usize,
}

fn four() -> usize {
    4
}

impl StepKind for Show {
    fn check(&self, scope: &mut Scope<'_>) -> Result<(), String> {
        match &self.0 {
            ShowWhat::Etcd(_) | ShowWhat::Object(_) => Ok(()),
            ShowWhat::Health(h) => scope.apiserver(h.apiserver),
            ShowWhat::Metrics(m) => scope.apiserver(m.apiserver),
            ShowWhat::Audit(_) => scope.mock_kms("show: audit"),
        }
    }

    fn label(&self) -> String {
        match &self.0 {
            ShowWhat::Etcd(o) => {
                format!("$ etcdctl get /registry/{}/{}/{} --print-value-only | hexdump -C", o.kind.resource(), o.namespace, o.name)
            }
            ShowWhat::Object(o) => {
                format!("$ kubectl get {} {} -n {} (the value as the API returns it)", o.kind.resource(), o.name, o.namespace)
            }
            ShowWhat::Health(h) => format!("$ kubectl get --raw {} (apiserver-{})", h.path, h.apiserver),
            ShowWhat::Metrics(m) => format!("$ kubectl get --raw /metrics | grep {}", m.names.join(" -e ")),
            ShowWhat::Audit(_) => "the mock KMS audit log".into(),
        }
    }

    fn run<'a>(&'a self, world: &'a mut World) -> StepFuture<'a> {
        Box::pin(async move {
            match &self.0 {
                ShowWhat::Etcd(o) => {
                    let key = format!("/registry/{}/{}/{}", o.kind.resource(), o.namespace, o.name);
                    let raw = world.stack.etcd_get(&key).await?.ok_or_else(|| StepError::Failed(format!("{key} is not in etcd")))?;
                    let header = match Envelope::parse(&raw) {
                        Ok(Envelope::KmsV2 { provider: name, object }) => {
                            format!("k8s:enc:kms:v2:{name}: then a protobuf EncryptedObject; key id `{}`", object.key_id)
                        }
                        Ok(envelope) => format!("stored by {}", envelope.kind()),
                        Err(e) => format!("does not parse as a stored object: {e}"),
                    };
                    Ok(format!("{} bytes, {header}\n{}", raw.len(), hexdump(&raw, 160)))
                }
                ShowWhat::Object(o) => {
                    let object = ObjectRef { kind: o.kind, namespace: o.namespace.clone(), name: o.name.clone() };
                    let generation = world.objects.get(&object).copied().ok_or_else(|| {
                        StepError::Failed(format!("{} was not written by this scenario: `show: object` shows generated values", o.name))
                    })?;
                    let expected = crate::world::value_for(world.seed(), &object, generation);
                    let client = world.client(0).await?;
                    let call = client.read(&object, &expected).await;
                    call.result.map_err(StepError::Failed)?;
                    // A generated demo value, not a secret: it shows the round trip.
                    Ok(format!("`{}` reads back as `{expected}`", o.name))
                }
                ShowWhat::Health(h) => {
                    let (status, body) = world.stack.apiserver_get(h.apiserver, &h.path).await?;
                    Ok(format!("{status} {}", body.trim()))
                }
                ShowWhat::Metrics(m) => {
                    let metrics = world.stack.metrics(m.apiserver).await?;
                    let lines: Vec<String> = metrics
                        .samples_matching(|name| m.names.iter().any(|n| name.starts_with(n.as_str())))
                        .map(|sample| sample.to_string())
                        .collect();
                    Ok(lines.join("\n"))
                }
                ShowWhat::Audit(a) => {
                    let kms = world.stack.mock_kms().ok_or_else(|| StepError::Failed("the stack runs no mock KMS".into()))?;
                    let records = kms.audit_records(0).await?;
                    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
                    for record in &records {
                        *counts.entry(record.action.name()).or_default() += 1;
                    }
                    let mut text = format!(
                        "{} calls ({}); the last {}:",
                        records.len(),
                        counts.iter().map(|(a, n)| format!("{n} {a}")).collect::<Vec<_>>().join(", "),
                        a.last.min(records.len())
                    );
                    for r in records.iter().rev().take(a.last).rev() {
                        let _ = write!(
                            text,
                            "\n#{} {} key {} version {} → {} in {:.1} ms from {}",
                            r.seq,
                            r.action.name(),
                            r.key_id.as_deref().unwrap_or("-"),
                            r.key_version_id.as_deref().unwrap_or("-"),
                            r.outcome,
                            r.latency_ms,
                            r.caller.map_or("an unnamed caller", |c| c.name())
                        );
                    }
                    Ok(text)
                }
            }
        })
    }
}

/// `hexdump -C` of the first `limit` bytes.
pub fn hexdump(bytes: &[u8], limit: usize) -> String {
    let mut out = String::new();
    for (row, chunk) in bytes[..bytes.len().min(limit)].chunks(16).enumerate() {
        let hex: Vec<String> = chunk.iter().map(|b| format!("{b:02x}")).collect();
        let ascii: String = chunk.iter().map(|b| if b.is_ascii_graphic() || *b == b' ' { *b as char } else { '.' }).collect();
        let _ = writeln!(out, "{:08x}  {:<48}  |{ascii}|", row * 16, hex.join(" "));
    }
    if bytes.len() > limit {
        let _ = writeln!(out, "… {} more bytes", bytes.len() - limit);
    }
    out.trim_end().to_owned()
}
