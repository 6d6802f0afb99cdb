//! `kms-lab inspect`: what etcd holds under each encryption provider, read directly from etcd
//! (paged, read-only). Only the prefix and envelope header of each value are read (through
//! kms-wire's codecs); no value, plaintext or wrapped key is ever printed.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use kms_lab_stack::encryption::{EncryptionConfiguration, KmsApiVersion, Provider};
use kms_lab_stack::etcd_client::EtcdClient;
use kms_wire::envelope::{Envelope, ProviderKind};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::OpsError;
use crate::resource::Resource;

/// A provider as stored values name it: its kind and (except identity) its provider or key name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProviderRef {
    /// The kind (`ProviderKind::name`, e.g. `kms-v2`).
    pub kind: &'static str,
    /// The KMS provider name or static key name (`None`: identity, or any name when matching).
    pub name: Option<String>,
}

impl ProviderRef {
    /// Parses `KIND` or `KIND:NAME` (`identity`, `aescbc:key1`, `kms-v2:lab-kms`, …).
    pub fn parse(text: &str) -> Result<Self, OpsError> {
        let (kind, name) = text.split_once(':').map_or((text, None), |(k, n)| (k, Some(n.to_owned())));
        let kind =
            ProviderKind::ALL.iter().copied().find(|k| k.name() == kind).ok_or_else(|| OpsError::UnknownProvider(text.to_owned()))?;
        Ok(Self { kind: kind.name(), name: name.filter(|n| !n.is_empty()) })
    }

    /// Whether `self` (a pattern: a missing name matches any) covers `stored`.
    pub fn covers(&self, stored: &ProviderRef) -> bool {
        self.kind == stored.kind && (self.name.is_none() || self.name == stored.name)
    }

    fn identity() -> Self {
        Self { kind: ProviderKind::Identity.name(), name: None }
    }

    /// The providers a configuration entry can read (a static-key provider: one per key).
    fn from_config(provider: &Provider) -> Vec<Self> {
        let keyed = |kind: ProviderKind, keys: &kms_lab_stack::encryption::StaticKeys| {
            keys.keys.iter().map(|k| Self { kind: kind.name(), name: Some(k.name.clone()) }).collect()
        };
        match provider {
            Provider::Identity(_) => vec![Self::identity()],
            Provider::Aescbc(keys) => keyed(ProviderKind::AesCbc, keys),
            Provider::Aesgcm(keys) => keyed(ProviderKind::AesGcm, keys),
            Provider::Secretbox(keys) => keyed(ProviderKind::Secretbox, keys),
            Provider::Kms(kms) => {
                let kind = if kms.api_version == KmsApiVersion::V1 { ProviderKind::KmsV1 } else { ProviderKind::KmsV2 };
                vec![Self { kind: kind.name(), name: Some(kms.name.clone()) }]
            }
        }
    }
}

impl fmt::Display for ProviderRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(name) => write!(f, "{}:{name}", self.kind),
            None => f.write_str(self.kind),
        }
    }
}

impl Serialize for ProviderRef {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// What to inspect.
#[derive(Debug, Clone)]
pub struct InspectOptions {
    /// The resources (default: secrets and configmaps, plus every resource `config` names).
    pub resources: Vec<Resource>,
    /// The EncryptionConfiguration the apiservers run (or are about to run).
    pub config: Option<EncryptionConfiguration>,
    /// Keys per range request.
    pub page_size: u64,
}

impl Default for InspectOptions {
    fn default() -> Self {
        Self { resources: vec![Resource::secrets(), Resource::configmaps()], config: None, page_size: 500 }
    }
}

impl InspectOptions {
    /// Reads `--config`, adding the resources it names (wildcards are skipped: they name no prefix).
    pub fn with_config_file(mut self, path: &Path) -> Result<Self, OpsError> {
        let text = std::fs::read_to_string(path).map_err(OpsError::io("read", path))?;
        let config: EncryptionConfiguration =
            serde_yaml::from_str(&text).map_err(|e| OpsError::Config { path: path.to_owned(), reason: e.to_string() })?;
        for resource in config.resources.iter().flat_map(|r| &r.resources).filter_map(|r| Resource::parse(r)) {
            if !self.resources.contains(&resource) {
                self.resources.push(resource);
            }
        }
        self.config = Some(config);
        Ok(self)
    }
}

/// Objects under one provider.
#[derive(Debug, Clone, Serialize)]
pub struct ProviderCount {
    /// The provider, e.g. `kms-v2:lab-kms`.
    pub provider: ProviderRef,
    /// Objects it wrote.
    pub objects: u64,
    /// With a configuration: whether it still lists this provider (false: after a restart the
    /// apiserver cannot read these objects).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub configured: Option<bool>,
}

/// One provider of the configuration, judged against what etcd holds.
#[derive(Debug, Clone, Serialize)]
pub struct ProviderVerdict {
    /// The provider.
    pub provider: ProviderRef,
    /// Whether it is the first (writing) provider.
    pub writes: bool,
    /// Objects still under it.
    pub objects: u64,
    /// Whether removing it from the configuration now loses nothing (no object needs it to read).
    pub safe_to_drop: bool,
}

/// What etcd holds for one resource.
#[derive(Debug, Clone, Serialize)]
pub struct ResourceSummary {
    /// The resource.
    pub resource: String,
    /// Its etcd prefix.
    pub etcd_prefix: String,
    /// Objects read.
    pub objects: u64,
    /// Objects per provider (identity = stored in plaintext).
    pub providers: Vec<ProviderCount>,
    /// Objects stored in plaintext (identity).
    pub plaintext: u64,
    /// KMS objects per key id (v2: the plugin's key id; v1 has none).
    pub key_ids: BTreeMap<String, u64>,
    /// Distinct DEKs (v1) and DEK sources (v2) among the KMS objects (the upstream issue of DEK
    /// sources piling up: each apiserver restart or key rotation starts a new one).
    pub dek_sources: u64,
    /// The most objects under one DEK source.
    pub max_objects_per_dek_source: u64,
    /// With a configuration: objects under a provider it no longer lists.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unreadable_after_restart: Option<u64>,
    /// Keys whose value starts `k8s:enc:` but does not parse as an envelope (key and reason),
    /// the first 50 of them.
    pub malformed: Vec<(String, String)>,
    /// How many values do not parse as an envelope (all of them, listed or not).
    pub malformed_objects: u64,
    /// With a configuration: the provider a rewrite encrypts with, and how many objects it changes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rewrite: Option<RewritePlan>,
    /// With a configuration: each configured provider, and whether it is safe to drop now.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub verdicts: Vec<ProviderVerdict>,
}

/// What `kms-lab migrate` would change for one resource.
#[derive(Debug, Clone, Serialize)]
pub struct RewritePlan {
    /// The first provider: what every object is written with.
    pub target: ProviderRef,
    /// Objects not yet under it (a rewrite changes these).
    pub would_change: u64,
    /// Objects already under it (a KMS v2 rewrite still gives them the current DEK source).
    pub already_there: u64,
}

/// Everything inspect found.
#[derive(Debug, Clone, Serialize)]
pub struct InspectReport {
    /// The etcd revision the first resource was read at.
    pub revision: i64,
    /// Per resource.
    pub resources: Vec<ResourceSummary>,
}

impl InspectReport {
    /// The summary of `resource`, if it was inspected.
    pub fn resource(&self, resource: &Resource) -> Option<&ResourceSummary> {
        let name = resource.to_string();
        self.resources.iter().find(|r| r.resource == name)
    }

    /// Objects (over all resources) whose provider `pattern` does not cover: the `--expect-all` gate.
    pub fn objects_not_under(&self, pattern: &ProviderRef) -> u64 {
        self.resources.iter().flat_map(|r| &r.providers).filter(|p| !pattern.covers(&p.provider)).map(|p| p.objects).sum()
    }

    /// Whether anything is wrong whatever the gate: malformed values, or objects the given
    /// configuration cannot read.
    pub fn has_problems(&self) -> bool {
        self.resources.iter().any(|r| !r.malformed.is_empty() || r.unreadable_after_restart.unwrap_or(0) > 0)
    }
}

impl ResourceSummary {
    /// Objects under providers that `pattern` covers.
    pub fn objects_under(&self, pattern: &ProviderRef) -> u64 {
        self.providers.iter().filter(|p| pattern.covers(&p.provider)).map(|p| p.objects).sum()
    }
}

/// Counts one resource's values; fed page by page.
#[derive(Debug, Default)]
pub struct Tally {
    objects: u64,
    providers: BTreeMap<ProviderRef, u64>,
    key_ids: BTreeMap<String, u64>,
    dek_sources: BTreeMap<[u8; 32], u64>,
    malformed: Vec<(String, String)>,
    malformed_objects: u64,
}

/// How many malformed keys are listed by name (the count, `malformed_objects`, is exact).
const MALFORMED_LISTED: usize = 50;

impl Tally {
    /// Counts one stored value (read for its header only).
    pub fn add(&mut self, key: &[u8], value: &[u8]) {
        self.objects += 1;
        let envelope = match Envelope::parse(value) {
            Ok(envelope) => envelope,
            Err(error) => {
                self.malformed_objects += 1;
                if self.malformed.len() < MALFORMED_LISTED {
                    self.malformed.push((String::from_utf8_lossy(key).into_owned(), error.to_string()));
                }
                return;
            }
        };
        let provider = ProviderRef { kind: envelope.kind().name(), name: envelope.name().map(str::to_owned) };
        *self.providers.entry(provider).or_default() += 1;
        let source: Option<&[u8]> = match &envelope {
            Envelope::KmsV1 { encrypted_dek, .. } => Some(encrypted_dek),
            Envelope::KmsV2 { object, .. } => {
                *self.key_ids.entry(object.key_id.clone()).or_default() += 1;
                Some(&object.encrypted_dek_source)
            }
            _ => None,
        };
        // A digest, not the wrapped key itself, is what the report keeps.
        if let Some(source) = source {
            *self.dek_sources.entry(Sha256::digest(source).into()).or_default() += 1;
        }
    }

    /// The summary, judged against `config` when given.
    pub fn summary(self, resource: &Resource, config: Option<&EncryptionConfiguration>) -> ResourceSummary {
        let name = resource.to_string();
        let configured: Option<Vec<ProviderRef>> = config.map(|config| {
            config
                .resources
                .iter()
                .find(|r| r.resources.iter().any(|n| *n == name || n == "*.*" || (resource.group.is_empty() && n == "*.")))
                .map(|r| r.providers.iter().flat_map(ProviderRef::from_config).collect())
                // A resource the configuration does not name is stored in plaintext.
                .unwrap_or_else(|| vec![ProviderRef::identity()])
        });
        let providers: Vec<ProviderCount> = self
            .providers
            .iter()
            .map(|(provider, objects)| ProviderCount {
                provider: provider.clone(),
                objects: *objects,
                configured: configured.as_ref().map(|c| c.contains(provider)),
            })
            .collect();
        let plaintext = self.providers.get(&ProviderRef::identity()).copied().unwrap_or(0);
        let unreadable_after_restart =
            configured.as_ref().map(|_| providers.iter().filter(|p| p.configured == Some(false)).map(|p| p.objects).sum());
        let (rewrite, verdicts) = match &configured {
            Some(list) if !list.is_empty() => {
                let under = |p: &ProviderRef| self.providers.get(p).copied().unwrap_or(0);
                let target = list[0].clone();
                let already_there = under(&target);
                let verdicts = list
                    .iter()
                    .enumerate()
                    .map(|(i, p)| ProviderVerdict {
                        provider: p.clone(),
                        writes: i == 0,
                        objects: under(p),
                        safe_to_drop: i > 0 && under(p) == 0,
                    })
                    .collect();
                let rewrite = RewritePlan { target, would_change: self.objects - already_there - self.malformed_objects, already_there };
                (Some(rewrite), verdicts)
            }
            _ => (None, Vec::new()),
        };
        ResourceSummary {
            resource: name,
            etcd_prefix: resource.etcd_prefix(),
            objects: self.objects,
            providers,
            plaintext,
            key_ids: self.key_ids,
            dek_sources: self.dek_sources.len() as u64,
            max_objects_per_dek_source: self.dek_sources.values().copied().max().unwrap_or(0),
            unreadable_after_restart,
            malformed: self.malformed,
            malformed_objects: self.malformed_objects,
            rewrite,
            verdicts,
        }
    }
}

/// Progress of a scan: the resource, keys read so far, and the range's total.
pub type Progress<'a> = &'a mut (dyn FnMut(&Resource, u64, u64) + Send);

/// Reads every selected resource's values from etcd in pages and counts them.
pub async fn inspect(etcd: &EtcdClient, options: &InspectOptions, progress: Progress<'_>) -> Result<InspectReport, OpsError> {
    let mut report = InspectReport { revision: 0, resources: Vec::new() };
    for resource in &options.resources {
        let mut tally = Tally::default();
        let revision = etcd
            .scan_prefix(resource.etcd_prefix().as_bytes(), options.page_size, |page, seen, total| {
                for kv in page {
                    tally.add(&kv.key, &kv.value);
                }
                progress(resource, seen, total);
            })
            .await?;
        if report.revision == 0 {
            report.revision = revision;
        }
        report.resources.push(tally.summary(resource, options.config.as_ref()));
    }
    Ok(report)
}

/// The report as a table for people.
pub fn render_table(report: &InspectReport) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    for r in &report.resources {
        let _ = writeln!(out, "{} ({}): {} object(s), {} in plaintext", r.resource, r.etcd_prefix, r.objects, r.plaintext);
        let _ = writeln!(out, "  {:<40} {:>10}", "PROVIDER", "OBJECTS");
        for p in &r.providers {
            let note = match p.configured {
                Some(false) => "not in the configuration: unreadable after a restart",
                _ => "",
            };
            let _ = writeln!(out, "  {:<40} {:>10}  {note}", p.provider.to_string(), p.objects);
        }
        if !r.key_ids.is_empty() {
            let _ = writeln!(out, "  {:<40} {:>10}", "KMS KEY ID", "OBJECTS");
            for (key_id, objects) in &r.key_ids {
                // Key ids come from etcd: control characters are shown escaped, not sent to the terminal.
                let _ = writeln!(out, "  {:<40} {:>10}", key_id.escape_debug().to_string(), objects);
            }
        }
        if r.dek_sources > 0 {
            let _ =
                writeln!(out, "  DEK sources: {} distinct (at most {} object(s) under one)", r.dek_sources, r.max_objects_per_dek_source);
        }
        for (key, reason) in &r.malformed {
            let _ = writeln!(out, "  malformed: {}: {}", key.escape_debug(), reason.escape_debug());
        }
        let unlisted = r.malformed_objects.saturating_sub(r.malformed.len() as u64);
        if unlisted > 0 {
            let _ = writeln!(out, "  malformed: {unlisted} more value(s) not listed ({} malformed in all)", r.malformed_objects);
        }
        if let Some(plan) = &r.rewrite {
            let _ = writeln!(
                out,
                "  a rewrite (kms-lab migrate) writes with {}: {} object(s) change, {} already there",
                plan.target, plan.would_change, plan.already_there
            );
        }
        for v in r.verdicts.iter().filter(|v| !v.writes) {
            let verdict =
                if v.safe_to_drop { "safe to drop now".to_owned() } else { format!("keep: {} object(s) still need it", v.objects) };
            let _ = writeln!(out, "  provider {}: {verdict}", v.provider);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use kms_lab_stack::encryption::{Empty, KmsProvider};
    use kms_wire::envelope::StaticCipher;
    use proptest::prelude::*;

    use super::*;

    fn config(providers: Vec<Provider>) -> EncryptionConfiguration {
        EncryptionConfiguration::new(&["secrets"], providers)
    }

    #[test]
    fn counts_by_provider_and_judges_against_the_configuration() {
        let mut tally = Tally::default();
        tally.add(b"/registry/secrets/a/1", b"k8s\0plain object");
        tally.add(b"/registry/secrets/a/2", b"k8s\0plain object");
        let sealed = Envelope::seal_static(StaticCipher::AesGcm, "old", &[7; 32], b"object", b"/registry/secrets/a/3").unwrap();
        tally.add(b"/registry/secrets/a/3", &sealed.to_bytes().unwrap());
        tally.add(b"/registry/secrets/a/4", b"k8s:enc:nope:v1:x:");
        let kms = Provider::Kms(KmsProvider::v2("lab-kms", Path::new("/tmp/p.sock"), std::time::Duration::from_secs(3)));
        let summary = tally.summary(&Resource::secrets(), Some(&config(vec![kms, Provider::Identity(Empty {})])));
        assert_eq!(summary.objects, 4);
        assert_eq!(summary.plaintext, 2);
        assert_eq!(summary.objects_under(&ProviderRef::parse("aesgcm:old").unwrap()), 1);
        assert_eq!(summary.unreadable_after_restart, Some(1), "aesgcm:old is not configured");
        assert_eq!(summary.malformed.len(), 1);
        let plan = summary.rewrite.as_ref().unwrap();
        assert_eq!((plan.target.to_string().as_str(), plan.would_change, plan.already_there), ("kms-v2:lab-kms", 3, 0));
        let identity = summary.verdicts.iter().find(|v| v.provider.kind == "identity").unwrap();
        assert!(!identity.safe_to_drop, "two objects are still plaintext");
    }

    /// Issue 28: with more malformed values than are listed (50), a rewrite plan counted the
    /// unlisted ones as objects a rewrite changes, and the report said 50 were malformed.
    #[test]
    fn every_malformed_value_is_counted_though_only_fifty_are_listed() {
        let mut tally = Tally::default();
        for i in 0..60 {
            tally.add(format!("/registry/secrets/a/{i}").as_bytes(), b"k8s:enc:nope:v1:x:");
        }
        tally.add(b"/registry/secrets/a/plain", b"k8s\0plain object");
        let summary = tally.summary(&Resource::secrets(), Some(&config(vec![Provider::Identity(Empty {})])));
        assert_eq!((summary.objects, summary.malformed.len(), summary.malformed_objects), (61, MALFORMED_LISTED, 60));
        let plan = summary.rewrite.as_ref().unwrap();
        assert_eq!((plan.would_change, plan.already_there), (0, 1), "malformed values are not rewritten");
        let table = render_table(&InspectReport { revision: 1, resources: vec![summary] });
        assert!(table.contains("10 more value(s) not listed (60 malformed in all)"), "{table}");
    }

    /// A stored value: any bytes, or any bytes after a real envelope prefix.
    fn stored_value() -> impl Strategy<Value = Vec<u8>> {
        let prefixes: Vec<&'static [u8]> =
            vec![b"", b"k8s:enc:kms:v2:lab-kms:", b"k8s:enc:kms:v1:lab-kms:", b"k8s:enc:aesgcm:v1:", b"k8s:enc:"];
        (prop::sample::select(prefixes), prop::collection::vec(any::<u8>(), 0..80))
            .prop_map(|(prefix, tail)| [prefix, tail.as_slice()].concat())
    }

    proptest! {
        /// Whatever etcd holds: every value is counted once (under a provider or as malformed),
        /// the plan adds up, and the table renders.
        #[test]
        fn any_stored_values_are_counted_and_rendered(values in prop::collection::vec((prop::collection::vec(any::<u8>(), 0..40), stored_value()), 0..80)) {
            let mut tally = Tally::default();
            for (key, value) in &values {
                tally.add(key, value);
            }
            let kms = Provider::Kms(KmsProvider::v2("lab-kms", Path::new("/tmp/p.sock"), std::time::Duration::from_secs(3)));
            let summary = tally.summary(&Resource::secrets(), Some(&config(vec![kms, Provider::Identity(Empty {})])));
            let under: u64 = summary.providers.iter().map(|p| p.objects).sum();
            prop_assert_eq!(under + summary.malformed_objects, values.len() as u64);
            let plan = summary.rewrite.as_ref().expect("a configuration gives a plan");
            prop_assert_eq!(plan.would_change + plan.already_there + summary.malformed_objects, values.len() as u64);
            let _ = render_table(&InspectReport { revision: 1, resources: vec![summary] });
        }
    }

    #[test]
    fn provider_patterns_parse_and_unknown_kinds_list_the_choices() {
        assert!(ProviderRef::parse("kms-v2").unwrap().covers(&ProviderRef::parse("kms-v2:a").unwrap()));
        assert!(!ProviderRef::parse("kms-v2:b").unwrap().covers(&ProviderRef::parse("kms-v2:a").unwrap()));
        let error = ProviderRef::parse("kms2").unwrap_err().to_string();
        assert!(error.contains("kms-v2") && error.contains("identity"), "{error}");
    }
}
