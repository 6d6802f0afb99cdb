//! A typed model of kube-apiserver's `EncryptionConfiguration` (`apiserver.config.k8s.io/v1`),
//! written as the YAML file `--encryption-provider-config` reads.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The whole configuration file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EncryptionConfiguration {
    /// Always `apiserver.config.k8s.io/v1`.
    pub api_version: String,
    /// Always `EncryptionConfiguration`.
    pub kind: String,
    /// Which providers apply to which resources.
    pub resources: Vec<ResourceConfig>,
}

/// Providers for a set of resources: the first one writes, all of them read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceConfig {
    /// Resource names, e.g. `secrets`, `configmaps`.
    pub resources: Vec<String>,
    /// Providers, in order (each a one-key map such as `kms: {…}`).
    #[serde(with = "serde_yaml::with::singleton_map_recursive")]
    pub providers: Vec<Provider>,
}

/// One provider entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    /// No encryption.
    Identity(Empty),
    /// AES-CBC with static keys.
    Aescbc(StaticKeys),
    /// AES-GCM with static keys.
    Aesgcm(StaticKeys),
    /// secretbox with static keys.
    Secretbox(StaticKeys),
    /// A KMS plugin.
    Kms(KmsProvider),
}

/// The empty body of `identity: {}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Empty {}

/// The keys of a static-key provider; the first one writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StaticKeys {
    /// The keys.
    pub keys: Vec<StaticKey>,
}

/// One static key.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StaticKey {
    /// Its name (appears in the stored prefix).
    pub name: String,
    /// Base64 of the key bytes.
    pub secret: String,
}

impl std::fmt::Debug for StaticKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaticKey").field("name", &self.name).field("secret", &"<redacted>").finish()
    }
}

/// KMS plugin API version of a provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KmsApiVersion {
    /// KMS v1 (needs `--feature-gates=KMSv1=true` since 1.29).
    #[serde(rename = "v1")]
    V1,
    /// KMS v2.
    #[serde(rename = "v2")]
    V2,
}

/// A `kms:` provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KmsProvider {
    /// `v1` or `v2`.
    pub api_version: KmsApiVersion,
    /// The provider's name (appears in the stored prefix).
    pub name: String,
    /// `unix:///path/to/plugin.sock`.
    pub endpoint: String,
    /// KMS v1 only: how many decrypted DEKs the apiserver caches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cachesize: Option<u32>,
    /// Deadline of each plugin call, e.g. `3s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
}

impl KmsProvider {
    /// A KMS v2 provider for the plugin listening on `socket`.
    pub fn v2(name: &str, socket: &std::path::Path, timeout: Duration) -> Self {
        Self {
            api_version: KmsApiVersion::V2,
            name: name.to_owned(),
            endpoint: format!("unix://{}", socket.display()),
            cachesize: None,
            timeout: Some(format_duration(timeout)),
        }
    }

    /// A KMS v1 provider for the plugin listening on `socket`.
    pub fn v1(name: &str, socket: &std::path::Path, cachesize: u32, timeout: Duration) -> Self {
        Self { api_version: KmsApiVersion::V1, cachesize: Some(cachesize), ..Self::v2(name, socket, timeout) }
    }
}

/// Formats a duration the way Go's `time.ParseDuration` reads it.
pub fn format_duration(duration: Duration) -> String {
    if duration.subsec_millis() == 0 { format!("{}s", duration.as_secs()) } else { format!("{}ms", duration.as_millis()) }
}

impl EncryptionConfiguration {
    /// A configuration with one resource group.
    pub fn new(resources: &[&str], providers: Vec<Provider>) -> Self {
        Self {
            api_version: "apiserver.config.k8s.io/v1".to_owned(),
            kind: "EncryptionConfiguration".to_owned(),
            resources: vec![ResourceConfig { resources: resources.iter().map(|r| (*r).to_owned()).collect(), providers }],
        }
    }

    /// The YAML text.
    pub fn to_yaml(&self) -> Result<String, serde_yaml::Error> {
        serde_yaml::to_string(self)
    }

    /// Whether any provider is a KMS v1 provider (which needs the `KMSv1` feature gate).
    pub fn uses_kms_v1(&self) -> bool {
        self.resources.iter().flat_map(|r| &r.providers).any(|p| matches!(p, Provider::Kms(k) if k.api_version == KmsApiVersion::V1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_the_yaml_kube_apiserver_reads() {
        let config = EncryptionConfiguration::new(
            &["secrets"],
            vec![
                Provider::Kms(KmsProvider::v2("lab-kms", std::path::Path::new("/tmp/p.sock"), Duration::from_secs(3))),
                Provider::Identity(Empty {}),
            ],
        );
        let yaml = config.to_yaml().unwrap();
        assert_eq!(
            yaml,
            "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources:\n  - secrets\n  providers:\n  - kms:\n      apiVersion: v2\n      name: lab-kms\n      endpoint: unix:///tmp/p.sock\n      timeout: 3s\n  - identity: {}\n"
        );
        let back: EncryptionConfiguration = serde_yaml::from_str(&yaml).unwrap();
        assert_eq!(back, config);
        assert!(!config.uses_kms_v1());
    }

    #[test]
    fn durations_are_go_durations() {
        assert_eq!(format_duration(Duration::from_secs(3)), "3s");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
    }
}
