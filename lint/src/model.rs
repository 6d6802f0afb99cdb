//! A lenient serde model of `EncryptionConfiguration`: every field optional, unknown fields
//! kept (they become findings), so a user's real file is accepted as long as it is YAML of the
//! right shape. (`kms_lab_stack::encryption` is the strict model the lab writes.)

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use serde_yaml::Value;

use crate::error::LintError;

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RawConfig {
    /// Expected `apiserver.config.k8s.io/v1`.
    pub api_version: Option<String>,
    /// Expected `EncryptionConfiguration`.
    pub kind: Option<String>,
    /// The resource groups.
    pub resources: Option<Vec<RawResource>>,
    /// Fields the apiserver does not know.
    #[serde(flatten)]
    pub unknown: BTreeMap<String, Value>,
}

/// One resource group: resources and their providers (the first writes, all read).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RawResource {
    /// Resource names (`secrets`, `configmaps`, `*.apps`, …).
    pub resources: Option<Vec<String>>,
    /// Providers in order.
    pub providers: Option<Vec<RawProvider>>,
    /// Fields the apiserver does not know.
    #[serde(flatten)]
    pub unknown: BTreeMap<String, Value>,
}

/// One provider entry; exactly one of its fields should be set.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RawProvider {
    /// `identity: {}`.
    pub identity: Option<Value>,
    /// `aescbc: {keys: …}`.
    pub aescbc: Option<RawKeys>,
    /// `aesgcm: {keys: …}`.
    pub aesgcm: Option<RawKeys>,
    /// `secretbox: {keys: …}`.
    pub secretbox: Option<RawKeys>,
    /// `kms: {…}`.
    pub kms: Option<RawKms>,
    /// Fields the apiserver does not know (e.g. a misspelt provider type).
    #[serde(flatten)]
    pub unknown: BTreeMap<String, Value>,
}

/// The keys of a static-key provider.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RawKeys {
    /// The keys; the first one writes.
    pub keys: Option<Vec<RawKey>>,
    /// Fields the apiserver does not know.
    #[serde(flatten)]
    pub unknown: BTreeMap<String, Value>,
}

/// One static key.
#[derive(Clone, Default, Deserialize)]
pub struct RawKey {
    /// Its name.
    pub name: Option<String>,
    /// Base64 of the key bytes.
    pub secret: Option<String>,
    /// Fields the apiserver does not know.
    #[serde(flatten)]
    pub unknown: BTreeMap<String, Value>,
}

impl std::fmt::Debug for RawKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawKey").field("name", &self.name).field("secret", &"<redacted>").finish_non_exhaustive()
    }
}

/// A `kms:` provider.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RawKms {
    /// `v1` (the default when absent) or `v2`.
    pub api_version: Option<String>,
    /// The provider name (part of the etcd value prefix).
    pub name: Option<String>,
    /// The plugin socket, `unix:///…`.
    pub endpoint: Option<String>,
    /// KMS v1: size of the decrypted-DEK LRU cache (default 1000; negative disables it).
    pub cachesize: Option<i64>,
    /// Deadline of one plugin call (Go duration; default 3s).
    pub timeout: Option<String>,
    /// Fields the apiserver does not know.
    #[serde(flatten)]
    pub unknown: BTreeMap<String, Value>,
}

impl RawKms {
    /// The effective API version: `v1` when absent (the apiserver's default).
    pub fn effective_api_version(&self) -> &str {
        self.api_version.as_deref().filter(|v| !v.is_empty()).unwrap_or("v1")
    }
}

impl RawProvider {
    /// The provider types set in this entry, in a fixed order.
    pub fn kinds(&self) -> Vec<&'static str> {
        let mut kinds = Vec::new();
        if self.kms.is_some() {
            kinds.push("kms");
        }
        if self.aescbc.is_some() {
            kinds.push("aescbc");
        }
        if self.aesgcm.is_some() {
            kinds.push("aesgcm");
        }
        if self.secretbox.is_some() {
            kinds.push("secretbox");
        }
        if self.identity.is_some() {
            kinds.push("identity");
        }
        kinds
    }

    /// A one-line description: `kms v2 "lab-kms"`, `aescbc (keys key1)`, `identity`.
    pub fn describe(&self) -> String {
        if let Some(kms) = &self.kms {
            return format!("kms {} `{}`", kms.effective_api_version(), kms.name.as_deref().unwrap_or(""));
        }
        for (kind, keys) in [("aescbc", &self.aescbc), ("aesgcm", &self.aesgcm), ("secretbox", &self.secretbox)] {
            if let Some(keys) = keys {
                let names: Vec<&str> = keys.keys.iter().flatten().map(|k| k.name.as_deref().unwrap_or("")).collect();
                return format!("{kind} (keys {})", names.join(", "));
            }
        }
        if self.identity.is_some() { "identity".to_owned() } else { "nothing".to_owned() }
    }
}

/// Parses `text` (named `file` in errors) into the lenient model.
pub fn parse(text: &str, file: &str) -> Result<RawConfig, LintError> {
    let deserializer = serde_yaml::Deserializer::from_str(text);
    match serde_path_to_error::deserialize::<_, Option<RawConfig>>(deserializer) {
        Ok(config) => Ok(config.unwrap_or_default()),
        Err(error) => {
            let key = error.path().to_string();
            let inner = error.into_inner();
            let (line, column) = inner.location().map(|l| (l.line(), l.column())).unwrap_or((0, 0));
            Err(LintError::Yaml { file: file.to_owned(), line, column, key, message: expected(&inner.to_string()) })
        }
    }
}

/// serde_yaml's message without its own location suffix, plus what the file should look like.
fn expected(message: &str) -> String {
    let message = message.split(" at line ").next().unwrap_or(message).to_owned();
    format!(
        "{message}; expected an EncryptionConfiguration: `apiVersion: apiserver.config.k8s.io/v1`, `kind: EncryptionConfiguration`, `resources:` a list of {{resources: [..], providers: [..]}}"
    )
}

/// Reads and parses a file.
pub fn parse_file(path: &Path) -> Result<RawConfig, LintError> {
    let text = std::fs::read_to_string(path).map_err(|source| LintError::Read { path: path.to_owned(), source })?;
    parse(&text, &path.display().to_string())
}
