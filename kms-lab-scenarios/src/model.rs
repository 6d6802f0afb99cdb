//! The typed model of a scenario file: the stack it needs and its steps, as a reviewer reads them
//! in YAML. Every struct refuses unknown fields, so a typo is an error with its line, not a
//! silently ignored step.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

pub use crate::steps::{Step, StepItem};

/// One scenario file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// The file's stem (`startup-ordering`), which names the scenario in reports.
    #[serde(skip)]
    pub name: String,
    /// The file it was read from.
    #[serde(skip)]
    pub path: PathBuf,
    /// A one-line title.
    pub title: String,
    /// What the scenario shows and why it matters.
    #[serde(default)]
    pub description: String,
    /// Which suite it belongs to.
    #[serde(default)]
    pub tier: Tier,
    /// Upstream issues or documents the scenario reproduces.
    #[serde(default)]
    pub references: Vec<String>,
    /// Seed of every generated value (Secret contents, static keys, mock KMS faults).
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// The stack the scenario starts on.
    pub stack: StackSpec,
    /// Runs alone, never beside other scenarios (`--jobs`): say why in a comment.
    #[serde(default)]
    pub exclusive: bool,
    /// What a plugin under test (`--plugin`) must be able to do for this scenario to mean
    /// anything; a plugin whose manifest lacks one is reported as skipped, with the reason.
    #[serde(default)]
    pub requires: Vec<kms_lab_catalog::Capability>,
    /// The oldest Kubernetes minor the scenario means anything on; below it the scenario is
    /// skipped with `why` (judged by the version the provisioned kube-apiserver reports).
    #[serde(default)]
    pub min_kubernetes: Option<MinKubernetes>,
    /// What happens, in order.
    pub steps: Vec<StepItem>,
}

fn default_seed() -> u64 {
    1
}

/// `min_kubernetes: {version: v1.37, why: …}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MinKubernetes {
    /// The oldest minor, `v1.37`.
    #[serde(deserialize_with = "kube_minor")]
    pub version: kms_lab_provision::KubeMinor,
    /// What the scenario needs from that version on (the skip reason says it).
    pub why: String,
}

impl MinKubernetes {
    /// Why the scenario cannot run on a kube-apiserver reporting `version`, if it cannot (an
    /// unstamped build, `v0.0.0-master…`, counts as older; a text without a minor is let through).
    pub fn why_not(&self, version: &str) -> Option<String> {
        let found = kms_lab_provision::KubeMinor::parse(version)?;
        (found < self.version)
            .then(|| format!("needs Kubernetes {} or later ({}); the kube-apiserver is {version}", self.version, self.why))
    }
}

fn kube_minor<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<kms_lab_provision::KubeMinor, D::Error> {
    let text = String::deserialize(deserializer)?;
    let bare = text.strip_prefix('v').unwrap_or(&text);
    // `v1.37` or `v1.37.2`: digits and one or two dots, nothing else.
    let well_formed =
        matches!(bare.split('.').count(), 2 | 3) && bare.split('.').all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    well_formed
        .then(|| kms_lab_provision::KubeMinor::parse(bare))
        .flatten()
        .filter(|m| m.0 == 1)
        .ok_or_else(|| serde::de::Error::custom(format!("`{text}` is not a Kubernetes minor version: write it as v1.MINOR, e.g. v1.37")))
}

/// Which suite a scenario belongs to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Deserialize, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    /// The core suite CI gates on.
    #[default]
    Core,
    /// Field incidents reproduced on the real stack.
    Incident,
    /// Scenarios that take many minutes (nightly).
    Slow,
    /// The narrated lab demo (`kms-lab lab`).
    Demo,
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Core => "core",
            Self::Incident => "incident",
            Self::Slow => "slow",
            Self::Demo => "demo",
        })
    }
}

/// The stack a scenario starts on.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StackSpec {
    /// Run the mock remote KMS (the plugins' KEK lives there unless a plugin says `kek: local`).
    #[serde(default)]
    pub mock_kms: Option<MockKmsSpec>,
    /// The plugins (default: one, `plugin-0`).
    #[serde(default = "default_plugins")]
    pub plugins: Vec<PluginDecl>,
    /// Whether the plugins or the apiserver start first.
    #[serde(default)]
    pub start: StartOrder,
    /// The EncryptionConfiguration of apiserver-0: providers per resource.
    #[serde(with = "serde_yaml::with::singleton_map_recursive")]
    pub encryption: EncryptionSpec,
    /// Pass `--feature-gates=KMSv1=true` (default true; KMS v1 is off by default since 1.29).
    #[serde(default = "yes")]
    pub kms_v1_gate: bool,
    /// Extra kube-apiserver flags for apiserver-0.
    #[serde(default)]
    pub apiserver_args: Vec<String>,
    /// Run kube-controller-manager (the StorageVersionMigration controller and the garbage
    /// collector) beside apiserver-0, as `migrate: {via: svm}` needs; built on first use.
    #[serde(default)]
    pub controller_manager: bool,
    /// Run the secret sync controller (`kms-secret-sync`) against the mock KMS's secrets manager.
    #[serde(default)]
    pub secret_sync: Option<crate::steps::sync::SecretSyncSpec>,
}

fn yes() -> bool {
    true
}

fn default_plugins() -> Vec<PluginDecl> {
    vec![PluginDecl { name: "plugin-0".into(), kek: None, args: Vec::new(), defects: Vec::new(), uses: None, manifest: None }]
}

/// The mock KMS of a scenario.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MockKmsSpec {
    /// Replicating nodes, one process each (default 1).
    #[serde(default = "one")]
    pub nodes: usize,
    /// Start sealed (Shamir 5 shares, threshold 3).
    #[serde(default)]
    pub sealed: bool,
    /// The mock KMS is a HashiCorp Vault (cluster) and the scenario is about it: only a plugin
    /// that calls Vault (capability `vault`) can take it, and with several nodes it needs no
    /// `several-endpoints`: a Vault client is given one node, whose standby redirects it.
    #[serde(default)]
    pub vault: Option<VaultSpec>,
}

fn one() -> usize {
    1
}

/// `mock_kms: {vault: {token_ttl, plugin_node}}`: the mock KMS as a Vault.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaultSpec {
    /// The token's lease (`--vault-token-ttl`): it runs down unless the plugin renews it
    /// (default: it never runs down).
    #[serde(default)]
    pub token_ttl: Option<Dur>,
    /// The node whose Vault address a plugin is given (`{kms_endpoint}`; default 0). Give a
    /// node other than the one a scenario kills, so the plugin keeps an address that answers.
    #[serde(default)]
    pub plugin_node: usize,
}

/// One plugin of the stack.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginDecl {
    /// Its name (`plugin-0`), used by steps and in `kms:` providers.
    pub name: String,
    /// Where its KEK lives (default: the mock KMS when the stack runs one, else local).
    #[serde(default)]
    pub kek: Option<KekKind>,
    /// Extra `kms-plugin` flags.
    #[serde(default)]
    pub args: Vec<String>,
    /// Defects of `kms-faulty-plugin` to switch on (a deliberately broken plugin).
    #[serde(default)]
    pub defects: Vec<DefectName>,
    /// Run a plugin from a manifest instead of `kms-plugin`: a catalog name
    /// (`kms-lab plugins list`) or a manifest file, relative to the scenario file.
    #[serde(default, rename = "use")]
    pub uses: Option<String>,
    /// The manifest `uses` names, resolved when the file was loaded.
    #[serde(skip)]
    pub manifest: Option<kms_lab_catalog::Manifest>,
}

/// Where a plugin's KEK lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KekKind {
    /// A key file next to the plugin.
    Local,
    /// The stack's mock KMS.
    MockKms,
}

/// Whether the plugins or the apiserver start first.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StartOrder {
    /// Plugins, then the apiserver (which waits for `/readyz`).
    #[default]
    PluginsFirst,
    /// The apiserver first (waits for `/livez` only), plugins not started: a `start` step starts them.
    ApiserverFirst,
}

/// Providers per resource (`secrets`, `configmaps`), in order: the first writes, all read.
pub type EncryptionSpec = BTreeMap<String, Vec<ProviderSpec>>;

/// One provider of an EncryptionConfiguration, naming plugins instead of sockets.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderSpec {
    /// No encryption (`identity: {}`).
    Identity(Empty),
    /// AES-CBC with a static key derived from the seed and the key's name.
    Aescbc(StaticKeySpec),
    /// AES-GCM with a static key derived from the seed and the key's name.
    Aesgcm(StaticKeySpec),
    /// secretbox with a static key derived from the seed and the key's name.
    Secretbox(StaticKeySpec),
    /// A KMS plugin of the stack.
    Kms(KmsSpec),
}

/// The empty body of `identity: {}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

/// A static key, by name (its bytes come from the scenario's seed and are never printed).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticKeySpec {
    /// The key's name (it appears in the stored prefix).
    pub key: String,
}

/// A `kms:` provider on one of the stack's plugins.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KmsSpec {
    /// The provider's name (it appears in the stored prefix).
    pub name: String,
    /// KMS API version.
    pub api: KmsApi,
    /// The plugin it calls.
    pub plugin: String,
    /// Deadline of each plugin call (default 3s).
    #[serde(default)]
    pub timeout: Option<Dur>,
    /// KMS v1 only: how many DEKs the apiserver caches (default 1000).
    #[serde(default)]
    pub cachesize: Option<u32>,
}

/// KMS API version of a provider (`v1`, `v2`): the stack's EncryptionConfiguration type.
pub use kms_lab_stack::encryption::KmsApiVersion as KmsApi;

/// A duration written the human way (`3s`, `500ms`, `2m`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        humantime::parse_duration(&text)
            .map(Dur)
            .map_err(|e| serde::de::Error::custom(format!("`{text}` is not a duration ({e}); write e.g. `500ms`, `3s`, `2m`")))
    }
}

/// A `kms-faulty-plugin` defect by its flag name (`status-always-ok`); a misspelt one is a load
/// error listing every defect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DefectName(pub kms_faulty_plugin::Defect);

impl DefectName {
    /// The flag name (`status-always-ok`), as `kms-faulty-plugin --defect` takes it.
    pub fn name(self) -> String {
        use clap::ValueEnum;
        self.0.to_possible_value().map(|v| v.get_name().to_owned()).unwrap_or_default()
    }
}

impl<'de> Deserialize<'de> for DefectName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use clap::ValueEnum;
        let text = String::deserialize(deserializer)?;
        kms_faulty_plugin::Defect::from_str(&text, false).map(DefectName).map_err(|_| {
            let known: Vec<String> = kms_faulty_plugin::Defect::value_variants().iter().map(|d| DefectName(*d).name()).collect();
            serde::de::Error::custom(format!("unknown defect `{text}` (known: {})", known.join(", ")))
        })
    }
}

/// A storage provider kind by name (`kms-v2`); a misspelt one is a load error listing every kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProviderName(pub kms_wire::envelope::ProviderKind);

impl<'de> Deserialize<'de> for ProviderName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use kms_wire::envelope::ProviderKind;
        let text = String::deserialize(deserializer)?;
        ProviderKind::ALL.iter().copied().find(|k| k.name() == text).map(ProviderName).ok_or_else(|| {
            let known: Vec<&str> = ProviderKind::ALL.iter().map(|k| k.name()).collect();
            serde::de::Error::custom(format!("unknown provider `{text}` (known: {})", known.join(", ")))
        })
    }
}

/// A regular expression an error message must match.
#[derive(Debug, Clone)]
pub struct Pattern(pub regex::Regex);

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        regex::Regex::new(&text).map(Pattern).map_err(|e| serde::de::Error::custom(format!("`{text}` is not a regular expression: {e}")))
    }
}

/// A component of the stack a step acts on (`etcd`, `apiserver-N`, `mock-kms`, `mock-kms-N`, a plugin).
pub use kms_lab_stack::Component;

/// The kind of object a step writes or reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Secrets (`secrets`).
    #[default]
    Secret,
    /// ConfigMaps (`configmaps`).
    Configmap,
}

impl Kind {
    /// The resource name (`secrets`), as in etcd keys and EncryptionConfiguration.
    pub fn resource(self) -> &'static str {
        match self {
            Self::Secret => "secrets",
            Self::Configmap => "configmaps",
        }
    }

    /// The resource as `kms-lab inspect` and `migrate` (crate ops) name it.
    pub fn ops_resource(self) -> kms_lab_ops::resource::Resource {
        match self {
            Self::Secret => kms_lab_ops::resource::Resource::secrets(),
            Self::Configmap => kms_lab_ops::resource::Resource::configmaps(),
        }
    }
}

/// A key id compared with a plugin's Status key id remembered at a mark.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyIdExpect {
    /// The plugin whose key id was remembered (default `plugin-0`).
    #[serde(default = "default_plugin")]
    pub plugin: String,
    /// Must equal the key id at this mark.
    #[serde(default)]
    pub same_as: Option<String>,
    /// Must differ from the key id at this mark.
    #[serde(default)]
    pub differs_from: Option<String>,
}

/// The plugin a step means when it names none.
pub fn default_plugin() -> String {
    "plugin-0".to_owned()
}

/// The namespace objects go to unless a step says otherwise.
pub fn default_namespace() -> String {
    "default".to_owned()
}

/// A figure's name, chosen by the scenario's author (`rotation_seen_s`): letters, digits, `_`,
/// `.` and `-`, so reports and JSON keys stay readable.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct FigureName(pub String);

impl<'de> Deserialize<'de> for FigureName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        if text.is_empty() || !text.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')) {
            return Err(serde::de::Error::custom(format!(
                "`{text}` is not a figure name: use letters, digits, `_`, `.` and `-` (e.g. `rotation_seen_s`)"
            )));
        }
        Ok(Self(text))
    }
}

impl fmt::Display for FigureName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minimum_kubernetes_minor_skips_older_apiservers_only() {
        let min: MinKubernetes = serde_yaml::from_str("{version: v1.37, why: the unsafe delete}").unwrap();
        let reason = min.why_not("v1.36.3").expect("1.36 is below 1.37");
        assert!(reason.contains("needs Kubernetes v1.37 or later (the unsafe delete)") && reason.contains("v1.36.3"), "{reason}");
        assert_eq!(min.why_not("v1.37.2"), None);
        assert_eq!(min.why_not("v1.38.0-beta.0"), None);
        assert_eq!(
            min.why_not("v0.0.0-master+$Format:%H$"),
            Some("needs Kubernetes v1.37 or later (the unsafe delete); the kube-apiserver is v0.0.0-master+$Format:%H$".to_owned())
        );
        for bad in ["1.37-ish", "v2.1", "v1", "latest"] {
            assert!(serde_yaml::from_str::<MinKubernetes>(&format!("{{version: {bad}, why: x}}")).is_err(), "{bad}");
        }
    }
}
