//! The typed model of a scenario file: the stack it needs and its steps, as a reviewer reads them
//! in YAML. Every struct refuses unknown fields, so a typo is an error with its line, not a
//! silently ignored step.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

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
    /// What happens, in order.
    pub steps: Vec<StepItem>,
}

fn default_seed() -> u64 {
    1
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
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Core => "core",
            Self::Incident => "incident",
            Self::Slow => "slow",
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
}

fn yes() -> bool {
    true
}

fn default_plugins() -> Vec<PluginDecl> {
    vec![PluginDecl { name: "plugin-0".into(), kek: None, args: Vec::new(), defects: Vec::new() }]
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
}

fn one() -> usize {
    1
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

/// KMS API version of a provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KmsApi {
    /// KMS v1.
    V1,
    /// KMS v2.
    V2,
}

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
        ProviderKind::ALL.into_iter().find(|k| k.name() == text).map(ProviderName).ok_or_else(|| {
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
}

/// One step of a scenario. In YAML each is a one-key map (`- create: {…}`) or a bare word
/// (`- rotate_kek`).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// Prints a line of narration.
    Note(String),
    /// Starts a component that is not running (after a stop or kill, or one not started yet);
    /// a running one is refused (use `restart`).
    Start(Component),
    /// Stops a component gracefully (SIGTERM).
    Stop(Component),
    /// Kills a component with SIGKILL, whatever its kind, as a crash would.
    Kill(Component),
    /// Stops and starts a component (an apiserver: waits until it is ready, `/readyz`).
    Restart(Component),
    /// Starts one more apiserver on the same etcd with its own EncryptionConfiguration.
    AddApiserver(AddApiserver),
    /// Writes an apiserver's EncryptionConfiguration and applies it.
    Encryption(EncryptionStep),
    /// Creates objects.
    Create(Objects),
    /// Updates objects with new values.
    Update(Objects),
    /// Reads objects and compares each with the value last written.
    Read(Objects),
    /// Deletes objects.
    Delete(Objects),
    /// Rewrites every object of a kind: `kubectl get <kind> -A -o json | kubectl replace -f -`.
    Rewrite(Rewrite),
    /// Writes objects from several writers (with retries) while nested steps run.
    Load(Load),
    /// Puts a mock KMS fault profile in force (mock-kms profile YAML).
    Faults(Faults),
    /// Clears every mock KMS fault on every node.
    ClearFaults,
    /// Rotates the KEK in the mock KMS (a new key version becomes current).
    RotateKek,
    /// Gives the sealed mock KMS this many more unseal shares (threshold 3 of 5); a restarted
    /// KMS is sealed again and counts from the first share.
    Unseal(usize),
    /// Disables, in the mock KMS, the key version a plugin reported at a mark (Decrypt with it fails).
    DisableKeyVersion(DisableKeyVersion),
    /// Replaces the mock KMS's accepted credential.
    SetCredentials(Credentials),
    /// Remembers this moment: the audit log position and each plugin's Status key id.
    Mark(String),
    /// Waits until a condition holds, at most `within`.
    WaitUntil(WaitUntil),
    /// Checks an apiserver health endpoint now.
    ExpectHealth(HealthCheck),
    /// Checks the raw values in etcd.
    ExpectEtcd(EtcdExpect),
    /// Checks that no generated plaintext appears anywhere in etcd.
    ExpectNoPlaintextInEtcd,
    /// Counts mock KMS calls in the audit log since a mark.
    ExpectAudit(AuditExpect),
    /// Checks an apiserver metric.
    ExpectMetric(MetricExpect),
    /// Checks a plugin's Status answer.
    ExpectPluginStatus(PluginStatusExpect),
    /// Lints an apiserver's current EncryptionConfiguration with `kms-lab lint` and checks the finding ids.
    Lint(LintStep),
    /// Checks whether a plugin's socket file exists (a crash leaves it behind; SIGTERM removes it).
    ExpectSocket(SocketExpect),
    /// Lists every object of a kind through the API, timed (a figure), and checks the answer.
    List(ListStep),
    /// Counts the distinct wrapped DEKs (v1) or DEK sources (v2) in etcd: a figure and bounds.
    CountDekSources(DekSources),
    /// Like `wait_until`, and records how long the condition took to hold as a named figure.
    TimeUntil(TimeUntil),
    /// Samples an apiserver health endpoint for a stated duration and counts its transitions.
    ObserveHealth(ObserveHealth),
    /// Restarts an apiserver and waits for `/livez` (a broken KMS keeps `/readyz` failing) or `/readyz`.
    RestartApiserver(RestartApiserver),
    /// Restarts an apiserver and times it until a LIST returns every object of a kind (a figure).
    ColdStart(ColdStart),
    /// Makes the mock KMS key version a plugin reported at a mark current again (a rollback A→B→A).
    SetCurrentKeyVersion(DisableKeyVersion),
    /// Counts mock KMS calls since a mark, per object and per second (figures and bounds).
    KmsCalls(KmsCalls),
}

/// A step as it appears in a list: a one-key map (`- create: {…}`) or a bare word (`- rotate_kek`).
#[derive(Debug, Clone, Deserialize)]
#[serde(transparent)]
pub struct StepItem(#[serde(with = "serde_yaml::with::singleton_map")] pub Step);

impl std::ops::Deref for StepItem {
    type Target = Step;

    fn deref(&self) -> &Step {
        &self.0
    }
}

/// `add_apiserver`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddApiserver {
    /// Its EncryptionConfiguration.
    #[serde(with = "serde_yaml::with::singleton_map_recursive")]
    pub encryption: EncryptionSpec,
}

/// How a new EncryptionConfiguration takes effect.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Apply {
    /// Automatic reload; the step waits until the apiserver reports it loaded the file.
    #[default]
    Reload,
    /// Restart the apiserver and wait until it is ready (`/readyz`).
    Restart,
    /// Restart the apiserver and wait only until it answers requests (`/livez/ping`): for
    /// configurations that leave it unready, which the next steps then show.
    RestartServing,
    /// Only write the file.
    WriteOnly,
}

/// `encryption`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncryptionStep {
    /// Which apiserver (default: every one).
    #[serde(default)]
    pub apiserver: Option<usize>,
    /// How it takes effect.
    #[serde(default)]
    pub apply: Apply,
    /// Providers per resource.
    #[serde(with = "serde_yaml::with::singleton_map_recursive")]
    pub resources: EncryptionSpec,
}

/// `create`, `update`, `read`, `delete`: a set of objects and what should happen.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Objects {
    /// Secret or configmap.
    #[serde(default)]
    pub kind: Kind,
    /// The namespace (default `default`).
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// Name prefix: objects are `<prefix>-000`, `<prefix>-001`, … (`create` needs it; elsewhere it
    /// selects the objects written so far whose names start with it; absent: all of them).
    #[serde(default)]
    pub prefix: Option<String>,
    /// How many (`create` needs it; elsewhere the first N selected).
    #[serde(default)]
    pub count: Option<usize>,
    /// The apiserver to call.
    #[serde(default)]
    pub apiserver: usize,
    /// Each call must fail with a message matching this (default: each must succeed).
    #[serde(default)]
    pub expect_error: Option<Pattern>,
    /// Each call must answer within this long.
    #[serde(default)]
    pub within: Option<Dur>,
}

/// The namespace objects go to unless a step says otherwise.
pub fn default_namespace() -> String {
    "default".to_owned()
}

/// `rewrite`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rewrite {
    /// Secret or configmap.
    #[serde(default)]
    pub kind: Kind,
    /// The apiserver to call.
    #[serde(default)]
    pub apiserver: usize,
    /// The rewrite must fail with output matching this (default: it must succeed).
    #[serde(default)]
    pub expect_error: Option<Pattern>,
}

/// `load`: writers create objects continuously, each write retried, while `during` runs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Load {
    /// Secret or configmap.
    #[serde(default)]
    pub kind: Kind,
    /// The namespace.
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// Name prefix of the written objects.
    pub prefix: String,
    /// Concurrent writers (default 2).
    #[serde(default = "two")]
    pub writers: usize,
    /// Retries of a failed write before it counts as lost (default 20: 250 ms, then 1 s apart).
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// The apiserver to call.
    #[serde(default)]
    pub apiserver: usize,
    /// Pause of each writer between two writes (default 100ms), so the load is steady, not a flood.
    #[serde(default)]
    pub pace: Option<Dur>,
    /// The steps that run under load.
    pub during: Vec<StepItem>,
    /// Writes that may fail even after every retry (default 0).
    #[serde(default)]
    pub max_lost: usize,
    /// At least this many attempts must fail (to show the disturbance was felt).
    #[serde(default)]
    pub min_failed_attempts: Option<usize>,
    /// At most this many attempts may fail.
    #[serde(default)]
    pub max_failed_attempts: Option<usize>,
}

fn two() -> usize {
    2
}

fn default_retries() -> u32 {
    20
}

/// `faults`: a mock KMS fault profile (see mock-kms/README.md) on one node or all.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Faults {
    /// The node (default: every node).
    #[serde(default)]
    pub node: Option<usize>,
    /// The profile, in mock-kms's fault profile format.
    pub profile: serde_yaml::Value,
}

/// `disable_key_version`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DisableKeyVersion {
    /// The mark at which the plugin reported the version's key id.
    pub mark: String,
    /// The plugin (default `plugin-0`).
    #[serde(default = "default_plugin")]
    pub plugin: String,
}

/// `set_credentials`: the one credential the mock KMS accepts from now on.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    /// The access key.
    pub access_key: String,
    /// The secret key (`original` restores the one the plugins were given).
    pub secret_key: String,
}

/// `wait_until`: exactly one condition, polled until it holds or `within` passes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitUntil {
    /// The deadline.
    pub within: Dur,
    /// An apiserver health endpoint answers as described.
    #[serde(default)]
    pub health: Option<HealthCheck>,
    /// A plugin's Status answers as described.
    #[serde(default)]
    pub plugin_status: Option<PluginStatusExpect>,
    /// An apiserver has seen a plugin's current Status key id (its key id hash metric).
    #[serde(default)]
    pub apiserver_key_id: Option<ApiserverKeyId>,
    /// A metric holds.
    #[serde(default)]
    pub metric: Option<MetricExpect>,
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

/// The plugin whose Status key id an apiserver must have seen.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiserverKeyId {
    /// The apiserver.
    #[serde(default)]
    pub apiserver: usize,
    /// The plugin.
    pub plugin: String,
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

fn default_plugin() -> String {
    "plugin-0".to_owned()
}

/// Counts of mock KMS audit records since a mark.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditExpect {
    /// The mark the window starts at.
    pub since: String,
    /// The KMS action (`Encrypt`, `Decrypt`, …).
    pub action: mock_kms::api::Action,
    /// Only records with this outcome (`Ok`, `Sealed`, …; default any).
    #[serde(default)]
    pub outcome: Option<mock_kms::api::admin::Outcome>,
    /// At least this many.
    #[serde(default)]
    pub at_least: Option<usize>,
    /// At most this many.
    #[serde(default)]
    pub at_most: Option<usize>,
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
}

/// A check on a plugin's Status answer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginStatusExpect {
    /// The plugin.
    pub plugin: String,
    /// `healthz` must be `ok` (true) or anything else (false).
    #[serde(default)]
    pub healthy: Option<bool>,
    /// The key id, compared with a mark.
    #[serde(default)]
    pub key_id: Option<KeyIdExpect>,
}

/// `lint`: runs `kms-lab lint` on an apiserver's EncryptionConfiguration as written now.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LintStep {
    /// The apiserver whose file is linted.
    #[serde(default)]
    pub apiserver: usize,
    /// The apiserver flags the linter is told about (`--feature-gates=KMSv1=true`, …; default: none known).
    #[serde(default)]
    pub flags: Option<Vec<String>>,
    /// The cluster's Secret count (`--secrets`).
    #[serde(default)]
    pub secrets: Option<u64>,
    /// The measured KMS p99 latency (`--kms-p99`).
    #[serde(default)]
    pub kms_p99: Option<Dur>,
    /// Other apiservers whose files are compared with this one (HA drift, `--against`).
    #[serde(default)]
    pub against: Vec<usize>,
    /// Finding ids that must be reported.
    #[serde(default)]
    pub expect: Vec<String>,
    /// Finding ids that must not be reported.
    #[serde(default)]
    pub absent: Vec<String>,
}

/// `expect_socket`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SocketExpect {
    /// The plugin.
    pub plugin: String,
    /// Whether its socket file must exist.
    pub exists: bool,
}

/// `list`: one LIST of a kind through the API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListStep {
    /// Secret or configmap.
    #[serde(default)]
    pub kind: Kind,
    /// The namespace.
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// The apiserver to call.
    #[serde(default)]
    pub apiserver: usize,
    /// The LIST must fail with a message matching this (default: it must succeed with every tracked object).
    #[serde(default)]
    pub expect_error: Option<Pattern>,
    /// It must answer within this long (a behavioural bound, not a performance judgement).
    #[serde(default)]
    pub within: Option<Dur>,
    /// The figure its time is recorded under (`<figure>.ms`; default `list.<kind>`).
    #[serde(default)]
    pub figure: Option<String>,
}

/// `count_dek_sources`: distinct wrapped DEKs / DEK sources among the stored values.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DekSources {
    /// Secret or configmap.
    #[serde(default)]
    pub kind: Kind,
    /// The namespace.
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// Objects whose names start with this (default: all of the kind in the namespace).
    #[serde(default)]
    pub prefix: Option<String>,
    /// The figure the count is recorded under.
    pub figure: String,
    /// At least this many distinct sources.
    #[serde(default)]
    pub at_least: Option<usize>,
    /// At most this many distinct sources.
    #[serde(default)]
    pub at_most: Option<usize>,
}

/// `time_until`: exactly one condition, polled until it holds or `within` passes; the time it
/// took is recorded as `<figure>` (seconds).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeUntil {
    /// The figure's name.
    pub figure: String,
    /// The deadline.
    pub within: Dur,
    /// An apiserver health endpoint answers as described.
    #[serde(default)]
    pub health: Option<HealthCheck>,
    /// A plugin's Status answers as described.
    #[serde(default)]
    pub plugin_status: Option<PluginStatusExpect>,
    /// A metric holds.
    #[serde(default)]
    pub metric: Option<MetricExpect>,
    /// A fresh write (one new object per probe) answers as described.
    #[serde(default)]
    pub write: Option<WriteProbe>,
    /// Whether the condition must hold within `within` (default true). With `false` the step
    /// is a measurement: if it never held, it passes, says so, and records `<figure>.held = 0`.
    #[serde(default = "yes")]
    pub must_happen: bool,
}

/// A write probe of `time_until`: each probe creates one new object `<prefix>-NNN`.
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

/// At least / at most bounds on a count.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bounds {
    /// At least this many.
    #[serde(default)]
    pub at_least: Option<usize>,
    /// At most this many.
    #[serde(default)]
    pub at_most: Option<usize>,
}

/// `observe_health`: a measurement over a stated duration, not a wait.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObserveHealth {
    /// The apiserver.
    #[serde(default)]
    pub apiserver: usize,
    /// The endpoint, e.g. `/healthz/kms-providers`.
    pub path: String,
    /// How long to sample.
    #[serde(rename = "for")]
    pub duration: Dur,
    /// How often (default 1s).
    #[serde(default)]
    pub interval: Option<Dur>,
    /// Bounds on the number of healthy↔failing transitions seen.
    #[serde(default)]
    pub flaps: Bounds,
    /// Figures are recorded as `<figure>.flaps` and `<figure>.failing_share` (default `health`).
    #[serde(default)]
    pub figure: Option<String>,
}

/// What a restarted apiserver must reach before the step ends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WaitFor {
    /// `/livez` (it serves, whatever its KMS providers say).
    #[default]
    Live,
    /// `/readyz`.
    Ready,
    /// `/livez/ping`: it answers requests, while post-start hooks that need the KMS still wait
    /// (`/livez` of an apiserver that cannot decrypt stored objects takes about a minute).
    Serving,
}

/// `restart_apiserver`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestartApiserver {
    /// The apiserver.
    #[serde(default)]
    pub apiserver: usize,
    /// What to wait for: `live`, `ready` or `serving` (default `live`).
    #[serde(default)]
    pub wait: WaitFor,
}

/// `cold_start`: restart, then LIST until every tracked object comes back.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColdStart {
    /// The apiserver.
    #[serde(default)]
    pub apiserver: usize,
    /// Secret or configmap.
    #[serde(default)]
    pub kind: Kind,
    /// The namespace.
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// The figure (seconds from the restart to the first complete LIST).
    pub figure: String,
    /// The deadline.
    pub within: Dur,
}

/// `kms_calls`: mock KMS calls of one action since a mark.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KmsCalls {
    /// The mark the window starts at.
    pub since: String,
    /// The KMS action (`Decrypt`, …).
    pub action: mock_kms::api::Action,
    /// Figures are recorded under `<figure>.*`.
    pub figure: String,
    /// The number of objects the calls are for (gives calls per object).
    #[serde(default)]
    pub objects: Option<usize>,
    /// At most this many calls (any outcome) per object.
    #[serde(default)]
    pub per_object_at_most: Option<f64>,
    /// At most this many successful calls in any one-second window.
    #[serde(default)]
    pub ok_per_second_at_most: Option<usize>,
    /// At most this many calls (any outcome) in any one-second window.
    #[serde(default)]
    pub peak_per_second_at_most: Option<usize>,
}
