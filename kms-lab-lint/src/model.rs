//! A lenient serde model of `EncryptionConfiguration`: every field optional, unknown fields
//! kept (they become findings), so a user's real file is accepted as long as it is YAML of the
//! right shape. (`kms_lab_stack::encryption` is the strict model the lab writes.)

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use serde_yaml::Value;

use crate::error::LintError;
use crate::input::{clip, read_text, render_serde_message};

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

/// Parses `text` (named `file` in errors) into the lenient model. An empty file and a file of
/// several YAML documents are errors that say so (with the line of the second document); type
/// errors name the key and the expected shape, never the value (it may be a key's secret).
pub fn parse(text: &str, file: &str) -> Result<RawConfig, LintError> {
    if !has_content(text) {
        return Err(LintError::Empty { file: file.to_owned() });
    }
    let deserializer = serde_yaml::Deserializer::from_str(text);
    match serde_path_to_error::deserialize::<_, Option<RawConfig>>(deserializer) {
        Ok(config) => Ok(config.unwrap_or_default()),
        Err(error) => {
            let key = error.path().to_string();
            let inner = error.into_inner();
            let message = inner.to_string();
            let message = message.split(" at line ").next().unwrap_or(&message);
            if message.contains("more than one document") {
                return Err(multiple_documents(text, file));
            }
            let (line, column) = inner.location().map(|l| (l.line(), l.column())).unwrap_or((1, 1));
            Err(LintError::Yaml { file: file.to_owned(), line, column, key, message: expected(&render_serde_message("", message)) })
        }
    }
}

/// Whether `text` holds anything but blank lines, comments and document markers.
fn has_content(text: &str) -> bool {
    text.lines().map(str::trim).any(|line| !line.is_empty() && !line.starts_with('#') && !is_marker(line) && line != "...")
}

/// A `---` document start line.
fn is_marker(line: &str) -> bool {
    line == "---" || line.starts_with("--- ") || line.starts_with("---\t")
}

/// The error for a file of several documents: the line of the `---` that starts the second
/// non-empty one, and how many non-empty documents there are.
fn multiple_documents(text: &str, file: &str) -> LintError {
    let mut documents: Vec<(usize, bool)> = vec![(1, false)];
    for (index, line) in text.lines().enumerate() {
        let trimmed = line.trim_end();
        if is_marker(trimmed) && !line.starts_with(' ') {
            documents.push((index + 1, trimmed.len() > 3 && !trimmed[3..].trim().is_empty() && !trimmed[3..].trim().starts_with('#')));
        } else if let Some(last) = documents.last_mut() {
            let content = trimmed.trim();
            last.1 |= !content.is_empty() && !content.starts_with('#') && content != "...";
        }
    }
    let non_empty: Vec<usize> = documents.iter().filter(|(_, content)| *content).map(|(line, _)| *line).collect();
    LintError::MultipleDocuments { file: file.to_owned(), line: non_empty.get(1).copied().unwrap_or(1), count: non_empty.len().max(2) }
}

/// serde_yaml's message (re-rendered without values), plus what the file should look like.
fn expected(message: &str) -> String {
    format!(
        "{message}; expected an EncryptionConfiguration: `apiVersion: apiserver.config.k8s.io/v1`, `kind: EncryptionConfiguration`, `resources:` a list of {{resources: [..], providers: [..]}}"
    )
}

/// Reads and parses a file (at most [`crate::input::MAX_FILE_BYTES`]).
pub fn parse_file(path: &Path) -> Result<RawConfig, LintError> {
    let text = read_text(path, "the EncryptionConfiguration")?;
    parse(&text, &path.display().to_string())
}

impl RawConfig {
    /// What this file looks like, when it is clearly not an EncryptionConfiguration (another
    /// kind, or neither `kind` nor `resources`); `None` when it may be one.
    pub fn not_an_encryption_configuration(&self) -> Option<String> {
        match self.kind.as_deref() {
            Some("EncryptionConfiguration") => None,
            Some(kind) => Some(format!("a `{}`", clip(kind))),
            None if self.resources.is_none() => {
                Some("a YAML file with neither `kind: EncryptionConfiguration` nor `resources:`".to_owned())
            }
            None => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_and_multi_document_files_say_so_with_a_line() {
        for text in ["", "\n\n", "# only a comment\n---\n"] {
            assert!(matches!(parse(text, "e.yaml"), Err(LintError::Empty { .. })), "{text:?}");
        }
        let text = "---\napiVersion: v1\nkind: EncryptionConfiguration\n---\n# second\nkind: Deployment\n";
        let error = parse(text, "m.yaml").unwrap_err();
        assert!(matches!(error, LintError::MultipleDocuments { line: 4, count: 2, .. }), "{error:?}");
        assert!(error.to_string().starts_with("m.yaml:4:1: a second YAML document"), "{error}");
    }

    #[test]
    fn a_secret_of_the_wrong_shape_is_not_echoed() {
        let text = "kind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers:\n  - aescbc:\n      keys:\n      - c2VjcmV0LXZhbHVlLW5ldmVyLXByaW50ZWQ=\n";
        let message = parse(text, "k.yaml").unwrap_err().to_string();
        assert!(!message.contains("c2VjcmV0") && !message.contains("RawKey"), "{message}");
        assert!(message.contains("k.yaml:7:") && message.contains("keys[0]") && message.contains("`name` and `secret`"), "{message}");
    }
}
