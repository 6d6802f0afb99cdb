//! What etcd holds, read directly: the raw values of objects (provider, key name, KMS v2 key
//! id), plaintext in any revision, and `kms-lab inspect`'s counts. Conditions only.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use kms_wire::envelope::Envelope;
use serde::Deserialize;

use super::Scope;
use super::health::key_id_mismatch;
use crate::conditions::{ConditionKind, ObserveFuture, Seen};
use crate::model::{KeyIdExpect, Kind, ProviderName, default_namespace};
use crate::world::{ObjectRef, PLAINTEXT_MARKER, World};

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

impl ConditionKind for EtcdExpect {
    fn check(&self, scope: &Scope<'_>) -> Result<(), String> {
        self.key_id.as_ref().map_or(Ok(()), |k| scope.key_id(k))
    }

    fn label(&self) -> String {
        format!("etcd {}/{}/{}*", self.kind.resource(), self.namespace, self.prefix.as_deref().unwrap_or(""))
    }

    fn observe<'a>(&'a self, world: &'a mut World, _baseline: u64) -> ObserveFuture<'a> {
        Box::pin(async move {
            match etcd_report(world, self).await {
                Ok(text) => Seen::new(true, text),
                Err(text) => Seen::new(false, text),
            }
        })
    }
}

impl ConditionKind for NoPlaintext {
    fn check(&self, scope: &Scope<'_>) -> Result<(), String> {
        self.since.as_ref().map_or(Ok(()), |mark| scope.mark(mark))
    }

    fn label(&self) -> String {
        match &self.since {
            Some(mark) => format!("no plaintext anywhere in etcd, in any revision since `{mark}`"),
            None => "no plaintext anywhere in etcd, in any revision".into(),
        }
    }

    fn observe<'a>(&'a self, world: &'a mut World, _baseline: u64) -> ObserveFuture<'a> {
        Box::pin(observe_no_plaintext(world, self))
    }
}

impl ConditionKind for InspectExpect {
    fn check(&self, _scope: &Scope<'_>) -> Result<(), String> {
        kms_lab_ops::inspect::ProviderRef::parse(&self.all_under).map(drop).map_err(|e| format!("inspect: {e}"))
    }

    fn label(&self) -> String {
        format!(
            "kms-lab inspect: every {} under {}{}",
            self.kind.resource(),
            self.all_under,
            self.count.map(|c| format!(", {c} of them")).unwrap_or_default()
        )
    }

    fn observe<'a>(&'a self, world: &'a mut World, _baseline: u64) -> ObserveFuture<'a> {
        Box::pin(observe_inspect(world, self))
    }
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
