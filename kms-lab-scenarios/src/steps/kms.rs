//! The mock remote KMS, through its typed admin API: faults, KEK rotation, key version state
//! (disable, enable, make current), unsealing, credentials; and the `kms_key` condition.

use serde::Deserialize;

use super::{Bounds, Scope, StepFuture, StepKind};
use crate::conditions::{ConditionKind, ObserveFuture, Seen};
use crate::error::StepError;
use crate::model::{FigureName, default_plugin};
use crate::world::World;

fn kms(world: &World) -> Result<&kms_lab_stack::MockKmsCluster, StepError> {
    world.stack.mock_kms().ok_or_else(|| StepError::Failed("the stack runs no mock KMS".into()))
}

/// `faults: {node, profile}`: a mock KMS fault profile (mock-kms/README.md) on one node or all.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Faults {
    /// The node (default: every node).
    #[serde(default)]
    pub node: Option<usize>,
    /// The profile, in mock-kms's fault profile format (checked by the mock KMS's own parser at load).
    pub profile: mock_kms::api::faults::FaultProfile,
}

impl StepKind for Faults {
    /// A profile whose every fault names only secrets-store actions leaves the plugin's KMS
    /// alone: any plugin can take it. Anything else perturbs the remote KMS the plugin uses.
    fn needs(&self) -> super::Needs {
        match self.profile.actions() {
            Some(actions) if actions.iter().all(|a| a.is_secret_action()) => super::Needs::default(),
            _ => super::Needs { capabilities: vec![kms_lab_catalog::Capability::RemoteKms], own_plugin_only: None },
        }
    }

    fn check(&self, scope: &mut Scope<'_>) -> Result<(), String> {
        scope.mock_kms("faults")?;
        if let Some(node) = self.node {
            scope.component(&crate::model::Component::MockKmsNode(node))?;
        }
        // The mock KMS's own validation (rates in range, …), as it will apply the profile.
        let yaml = serde_yaml::to_string(&self.profile).map_err(|e| format!("fault profile: {e}"))?;
        mock_kms::FaultProfile::from_yaml(&yaml).map(drop).map_err(|e| format!("fault profile: {e}"))
    }

    fn label(&self) -> String {
        format!(
            "mock KMS faults{}: {}",
            self.node.map(|n| format!(" on node {n}")).unwrap_or_default(),
            serde_json::to_string(&self.profile).unwrap_or_default()
        )
    }

    fn run<'a>(&'a self, world: &'a mut World) -> StepFuture<'a> {
        Box::pin(async move {
            kms(world)?.set_faults(self.node, &self.profile).await?;
            Ok(match self.node {
                Some(node) => format!("in force on mock-kms-{node}"),
                None => "in force on every node".into(),
            })
        })
    }
}

/// `clear_faults: {}`: every fault off on every node; key version states stay.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClearFaults {}

impl StepKind for ClearFaults {
    fn needs(&self) -> super::Needs {
        super::Needs { capabilities: vec![kms_lab_catalog::Capability::RemoteKms], own_plugin_only: None }
    }

    fn check(&self, scope: &mut Scope<'_>) -> Result<(), String> {
        scope.mock_kms("clear_faults")
    }

    fn label(&self) -> String {
        "clear mock KMS faults".into()
    }

    fn run<'a>(&'a self, world: &'a mut World) -> StepFuture<'a> {
        Box::pin(async move {
            kms(world)?.clear_faults(None).await?;
            Ok("no faults".into())
        })
    }
}

/// `rotate_kek: {}`: a new key version becomes current.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotateKek {}

impl StepKind for RotateKek {
    fn needs(&self) -> super::Needs {
        super::Needs {
            capabilities: vec![kms_lab_catalog::Capability::Rotation, kms_lab_catalog::Capability::RemoteKms],
            own_plugin_only: None,
        }
    }

    fn check(&self, scope: &mut Scope<'_>) -> Result<(), String> {
        scope.mock_kms("rotate_kek")
    }

    fn label(&self) -> String {
        "rotate the KEK in the mock KMS".into()
    }

    fn run<'a>(&'a self, world: &'a mut World) -> StepFuture<'a> {
        Box::pin(async move {
            let key = kms(world)?.rotate_key().await?;
            Ok(format!("current key version is now {}", key.current_key_version_id))
        })
    }
}

/// A key version named by the key id a plugin reported at a mark (`<key>/<version>`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyVersionAt {
    /// The mark at which the plugin reported the version's key id.
    pub mark: String,
    /// The plugin (default `plugin-0`).
    #[serde(default = "default_plugin")]
    pub plugin: String,
}

impl KeyVersionAt {
    fn check(&self, scope: &Scope<'_>, what: &str) -> Result<(), String> {
        scope.mock_kms(what)?;
        scope.plugin(&self.plugin)?;
        scope.mark(&self.mark)
    }

    /// The mock KMS version id of the key id the plugin reported at the mark: the last segment
    /// of `<key>/<version>` (kms-plugin), or the N of Cloud KMS's `…/cryptoKeyVersions/N` or of a
    /// bare `N` (vault-kubernetes-kms reports Transit's `latest_version`): the N-th version in
    /// creation order, as the mock KMS's GCP and Vault dialects number them.
    async fn version(&self, world: &World) -> Result<String, StepError> {
        let key_id = world
            .marks
            .get(&self.mark)
            .and_then(|m| m.key_ids.get(&self.plugin))
            .cloned()
            .ok_or_else(|| StepError::Failed(format!("{} reported no key id at mark `{}`", self.plugin, self.mark)))?;
        let version = key_id.rsplit_once('/').map_or(key_id.as_str(), |(_, version)| version);
        let key = kms(world)?.describe_key().await?;
        if key.key_version_ids.iter().any(|id| id == version) {
            return Ok(version.to_owned());
        }
        let numbered = version.parse::<usize>().ok().filter(|n| *n >= 1).and_then(|n| key.key_version_ids.get(n - 1));
        // A key id that names the key, not a version (aws-encryption-provider's ARN): the version
        // the mock KMS had current at the mark is the one the plugin encrypted with.
        let current_at_mark = || {
            let names_the_key = key_id.ends_with(&format!("key/{}", key.key_id)) || key_id == key.key_id;
            names_the_key.then(|| world.marks.get(&self.mark).and_then(|m| m.kms_current_version.clone())).flatten()
        };
        numbered.cloned().or_else(current_at_mark).ok_or_else(|| {
            StepError::Failed(format!(
                "{}'s key id `{key_id}` at `{}` names version `{version}`, which is none of the key's versions ({}) nor a version number 1..={}",
                self.plugin,
                self.mark,
                key.key_version_ids.join(", "),
                key.key_version_ids.len()
            ))
        })
    }
}

/// `disable_key_version: {mark, plugin}`: KMS state (replicated; `clear_faults` does not undo it).
#[derive(Debug, Clone, Deserialize)]
#[serde(transparent)]
pub struct DisableKeyVersion(pub KeyVersionAt);

impl StepKind for DisableKeyVersion {
    fn needs(&self) -> super::Needs {
        super::Needs { capabilities: vec![kms_lab_catalog::Capability::RemoteKms], own_plugin_only: None }
    }

    fn check(&self, scope: &mut Scope<'_>) -> Result<(), String> {
        self.0.check(scope, "disable_key_version")
    }

    fn label(&self) -> String {
        format!("disable the key version {} used at `{}`", self.0.plugin, self.0.mark)
    }

    fn run<'a>(&'a self, world: &'a mut World) -> StepFuture<'a> {
        Box::pin(async move {
            let version = self.0.version(world).await?;
            kms(world)?.disable_version(&version).await?;
            Ok(format!("key version `{version}` disabled"))
        })
    }
}

/// `enable_key_version: {mark, plugin}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(transparent)]
pub struct EnableKeyVersion(pub KeyVersionAt);

impl StepKind for EnableKeyVersion {
    fn needs(&self) -> super::Needs {
        super::Needs { capabilities: vec![kms_lab_catalog::Capability::RemoteKms], own_plugin_only: None }
    }

    fn check(&self, scope: &mut Scope<'_>) -> Result<(), String> {
        self.0.check(scope, "enable_key_version")
    }

    fn label(&self) -> String {
        format!("enable the key version {} used at `{}`", self.0.plugin, self.0.mark)
    }

    fn run<'a>(&'a self, world: &'a mut World) -> StepFuture<'a> {
        Box::pin(async move {
            let version = self.0.version(world).await?;
            kms(world)?.enable_version(&version).await?;
            Ok(format!("key version `{version}` enabled"))
        })
    }
}

/// `destroy_key_version: {mark, plugin}`: the version's material is wiped in the mock KMS (a
/// completed scheduled deletion): nothing it wrapped can be unwrapped again, and it cannot be enabled.
#[derive(Debug, Clone, Deserialize)]
#[serde(transparent)]
pub struct DestroyKeyVersion(pub KeyVersionAt);

impl StepKind for DestroyKeyVersion {
    fn needs(&self) -> super::Needs {
        super::Needs { capabilities: vec![kms_lab_catalog::Capability::RemoteKms], own_plugin_only: None }
    }

    fn check(&self, scope: &mut Scope<'_>) -> Result<(), String> {
        self.0.check(scope, "destroy_key_version")
    }

    fn label(&self) -> String {
        format!("destroy the key version {} used at `{}`", self.0.plugin, self.0.mark)
    }

    fn run<'a>(&'a self, world: &'a mut World) -> StepFuture<'a> {
        Box::pin(async move {
            let version = self.0.version(world).await?;
            kms(world)?.destroy_version(&version).await?;
            Ok(format!("key version `{version}` destroyed (material wiped)"))
        })
    }
}

/// `set_current_key_version: {mark, plugin}`: a rollback A→B→A.
#[derive(Debug, Clone, Deserialize)]
#[serde(transparent)]
pub struct SetCurrentKeyVersion(pub KeyVersionAt);

impl StepKind for SetCurrentKeyVersion {
    fn needs(&self) -> super::Needs {
        super::Needs {
            capabilities: vec![kms_lab_catalog::Capability::Rotation, kms_lab_catalog::Capability::RemoteKms],
            own_plugin_only: None,
        }
    }

    fn check(&self, scope: &mut Scope<'_>) -> Result<(), String> {
        self.0.check(scope, "set_current_key_version")
    }

    fn label(&self) -> String {
        format!("make the key version {} used at `{}` current again", self.0.plugin, self.0.mark)
    }

    fn run<'a>(&'a self, world: &'a mut World) -> StepFuture<'a> {
        Box::pin(async move {
            let version = self.0.version(world).await?;
            kms(world)?.set_current(&version).await?;
            Ok(format!("key version `{version}` is current again"))
        })
    }
}

/// `unseal: N` (or `unseal: {shares: N, through: admin|vault}`): N more unseal shares
/// (threshold 3 of 5) to every running node; a restarted KMS is sealed again and counts from the
/// first share. `through: vault` gives them as an operator unseals a Vault node,
/// `PUT /v1/sys/unseal {"key": …}` on each node's Vault listener; `admin` (the default) through
/// the mock KMS's admin API.
#[derive(Debug, Clone)]
pub struct Unseal {
    /// How many shares.
    pub shares: usize,
    /// Which API they are given through.
    pub through: UnsealThrough,
}

/// The API `unseal` gives shares through.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnsealThrough {
    /// The mock KMS's admin API (`POST /admin/unseal`), whatever dialect the plugin speaks.
    #[default]
    Admin,
    /// Vault's `PUT /v1/sys/unseal`, on each node (the plugin must call Vault).
    Vault,
}

impl<'de> Deserialize<'de> for Unseal {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        /// The long form.
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Full {
            shares: usize,
            #[serde(default)]
            through: UnsealThrough,
        }
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Unseal;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a number of shares (`unseal: 3`) or `{shares: 3, through: vault}`")
            }

            fn visit_u64<E: serde::de::Error>(self, shares: u64) -> Result<Unseal, E> {
                let shares = usize::try_from(shares).map_err(|_| E::custom("too many shares"))?;
                Ok(Unseal { shares, through: UnsealThrough::Admin })
            }

            fn visit_i64<E: serde::de::Error>(self, shares: i64) -> Result<Unseal, E> {
                let shares = u64::try_from(shares).map_err(|_| E::custom(format!("`unseal: {shares}`: give 1 to 5 shares")))?;
                self.visit_u64(shares)
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Unseal, A::Error> {
                let full = Full::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(Unseal { shares: full.shares, through: full.through })
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

impl StepKind for Unseal {
    fn needs(&self) -> super::Needs {
        let mut capabilities = vec![kms_lab_catalog::Capability::RemoteKms];
        if self.through == UnsealThrough::Vault {
            capabilities.push(kms_lab_catalog::Capability::Vault);
        }
        super::Needs { capabilities, own_plugin_only: None }
    }

    fn check(&self, scope: &mut Scope<'_>) -> Result<(), String> {
        if !scope.scenario().stack.mock_kms.as_ref().is_some_and(|k| k.sealed) {
            return Err("`unseal` needs a sealed mock KMS: `mock_kms: {sealed: true}`".into());
        }
        if !(1..=5).contains(&self.shares) {
            return Err(format!("`unseal: {}`: the mock KMS has 5 shares; give 1 to 5", self.shares));
        }
        if self.through == UnsealThrough::Vault {
            scope.vault("unseal: {through: vault}")?;
        }
        Ok(())
    }

    fn label(&self) -> String {
        match self.through {
            UnsealThrough::Admin => format!("give the mock KMS {} more unseal share(s)", self.shares),
            UnsealThrough::Vault => format!("give each Vault node {} more unseal share(s) through PUT /v1/sys/unseal", self.shares),
        }
    }

    fn run<'a>(&'a self, world: &'a mut World) -> StepFuture<'a> {
        Box::pin(async move {
            let kms = kms(world)?;
            let given = kms.seal_status().await?.progress;
            match self.through {
                UnsealThrough::Admin => {
                    let status = kms.unseal(given..given + self.shares).await?;
                    Ok(format!("seal status: sealed={} progress={}/{}", status.sealed, status.progress, status.threshold))
                }
                UnsealThrough::Vault => {
                    let answers = kms.vault_unseal(given..given + self.shares).await?;
                    let each: Vec<String> = answers
                        .iter()
                        .map(|(node, s)| format!("mock-kms-{node} sealed={} progress={}/{}", s.sealed, s.progress, s.threshold))
                        .collect();
                    Ok(format!("sys/unseal answered: {}", each.join(", ")))
                }
            }
        })
    }
}

/// `vault_health: {node, status}`: what `GET /v1/sys/health` on one node's Vault listener
/// answers (200 active, 429 standby, 503 sealed, as Vault; `none`: the node does not answer).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaultHealth {
    /// The node (`mock-kms-N`'s N).
    pub node: usize,
    /// The status code expected, or `none` for no answer (a node that is down).
    pub status: VaultHealthStatus,
}

/// The answer `vault_health` expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum VaultHealthStatus {
    /// This HTTP status.
    Code(u16),
    /// No answer (`none`).
    Named(NoAnswer),
}

/// `none`: the node does not answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoAnswer {
    /// No answer.
    None,
}

impl VaultHealthStatus {
    fn describe(self) -> String {
        match self {
            Self::Code(200) => "200 (active)".into(),
            Self::Code(429) => "429 (standby)".into(),
            Self::Code(503) => "503 (sealed)".into(),
            Self::Code(501) => "501 (not initialised)".into(),
            Self::Code(code) => code.to_string(),
            Self::Named(NoAnswer::None) => "no answer".into(),
        }
    }
}

impl ConditionKind for VaultHealth {
    fn check(&self, scope: &Scope<'_>) -> Result<(), String> {
        scope.component(&crate::model::Component::MockKmsNode(self.node))?;
        scope.vault("vault_health")
    }

    fn label(&self) -> String {
        format!("mock-kms-{} sys/health answers {}", self.node, self.status.describe())
    }

    fn needs(&self) -> super::Needs {
        super::Needs { capabilities: vec![kms_lab_catalog::Capability::Vault], own_plugin_only: None }
    }

    fn observe<'a>(&'a self, world: &'a mut World, _baseline: u64) -> ObserveFuture<'a> {
        Box::pin(async move {
            let kms = match world.stack.mock_kms() {
                Some(kms) => kms,
                None => return Seen::new(false, "the stack runs no mock KMS"),
            };
            let seen = match kms.vault_health(self.node).await {
                Ok(Some(code)) => VaultHealthStatus::Code(code),
                Ok(None) => VaultHealthStatus::Named(NoAnswer::None),
                Err(error) => return Seen::new(false, error.to_string()),
            };
            Seen::new(seen == self.status, format!("mock-kms-{} sys/health answered {}", self.node, seen.describe()))
        })
    }
}

/// `kms_key: {current, versions, disabled_versions}`: the mock KMS key as it describes itself
/// (the admin API's key listing): whether its current version changed since a mark, how many
/// versions it has and how many of them are disabled. What the KMS holds, not what a plugin says.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KmsKey {
    /// The current version against the one current at a mark.
    #[serde(default)]
    pub current: Option<CurrentVersion>,
    /// How many versions the key has.
    #[serde(default)]
    pub versions: Option<Bounds>,
    /// How many of its versions are disabled (on their own, by `disable_key_version`).
    #[serde(default)]
    pub disabled_versions: Option<Bounds>,
}

/// `current: {same_as: MARK}` (not rotated since, or set back to it) or `{differs_from: MARK}`
/// (rotated since): exactly one.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CurrentVersion {
    /// The mark whose current version it must be.
    #[serde(default)]
    pub same_as: Option<String>,
    /// The mark whose current version it must not be.
    #[serde(default)]
    pub differs_from: Option<String>,
}

impl CurrentVersion {
    /// The mark, and whether the current version must be the one current at it; `None` unless
    /// exactly one of `same_as` and `differs_from` is given.
    fn expectation(&self) -> Option<(&str, bool)> {
        match (&self.same_as, &self.differs_from) {
            (Some(mark), None) => Some((mark, true)),
            (None, Some(mark)) => Some((mark, false)),
            _ => None,
        }
    }
}

impl KmsKey {
    /// Judges `key`; `current_at` gives the version current at a mark (`None`: none recorded).
    fn judge(&self, key: &mock_kms::api::KeyMetadata, current_at: impl Fn(&str) -> Option<String>) -> Seen {
        let now = &key.current_key_version_id;
        let mut ok = true;
        let mut seen = Vec::new();
        if let Some((mark, same)) = self.current.as_ref().and_then(CurrentVersion::expectation) {
            match current_at(mark) {
                Some(then) => {
                    ok &= (then == *now) == same;
                    seen.push(format!("current version `{now}`, `{then}` at `{mark}`"));
                }
                None => {
                    ok = false;
                    seen.push(format!("current version `{now}`; the mock KMS did not describe its key at `{mark}` (sealed or down?)"));
                }
            }
        }
        for (bounds, what, count) in [
            (&self.versions, "versions", key.key_version_ids.len()),
            (&self.disabled_versions, "disabled versions", key.disabled_key_version_ids.len()),
        ] {
            if let Some(bounds) = bounds {
                ok &= bounds.holds(count as f64);
                seen.push(format!("{count} {what} ({})", bounds.describe()));
            }
        }
        Seen::new(ok, format!("key `{}`: {}", key.key_id, seen.join(", ")))
    }
}

impl ConditionKind for KmsKey {
    fn check(&self, scope: &Scope<'_>) -> Result<(), String> {
        scope.mock_kms("kms_key")?;
        if self.current.is_none() && self.versions.is_none() && self.disabled_versions.is_none() {
            return Err("`kms_key` needs `current`, `versions` or `disabled_versions` (without one it checks nothing)".into());
        }
        if let Some(current) = &self.current {
            let (mark, _) =
                current.expectation().ok_or("`kms_key: {current}` needs exactly one of `same_as: MARK` or `differs_from: MARK`")?;
            scope.mark(mark)?;
        }
        for (bounds, what) in [(&self.versions, "kms_key: versions"), (&self.disabled_versions, "kms_key: disabled_versions")] {
            bounds.map_or(Ok(()), |b| b.check(what, true))?;
        }
        Ok(())
    }

    fn label(&self) -> String {
        let mut parts = Vec::new();
        match self.current.as_ref().and_then(CurrentVersion::expectation) {
            Some((mark, true)) => parts.push(format!("current version as at `{mark}`")),
            Some((mark, false)) => parts.push(format!("current version other than at `{mark}`")),
            None => {}
        }
        for (bounds, what) in [(&self.versions, "versions"), (&self.disabled_versions, "disabled versions")] {
            if let Some(bounds) = bounds {
                parts.push(format!("{what} {}", bounds.describe()));
            }
        }
        format!("mock KMS key: {}", parts.join(", "))
    }

    /// The key's versions mean nothing for a plugin that calls no remote KMS.
    fn needs(&self) -> super::Needs {
        super::Needs { capabilities: vec![kms_lab_catalog::Capability::RemoteKms], own_plugin_only: None }
    }

    fn observe<'a>(&'a self, world: &'a mut World, _baseline: u64) -> ObserveFuture<'a> {
        Box::pin(async move {
            let key = match kms(world) {
                Ok(kms) => kms.describe_key().await.map_err(|e| e.to_string()),
                Err(error) => Err(error.to_string()),
            };
            match key {
                Ok(key) => self.judge(&key, |mark| world.marks.get(mark).and_then(|m| m.kms_current_version.clone())),
                Err(error) => Seen::new(false, error),
            }
        })
    }
}

/// `set_credentials: {access_key, secret_key}`: the one credential the mock KMS accepts from now on.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetCredentials {
    /// The access key.
    pub access_key: String,
    /// The secret key (`original` restores the one the plugins were given).
    pub secret_key: String,
}

impl StepKind for SetCredentials {
    fn needs(&self) -> super::Needs {
        super::Needs {
            capabilities: vec![kms_lab_catalog::Capability::AccessKeyCredentials, kms_lab_catalog::Capability::RemoteKms],
            own_plugin_only: None,
        }
    }

    fn check(&self, scope: &mut Scope<'_>) -> Result<(), String> {
        scope.mock_kms("set_credentials")
    }

    fn label(&self) -> String {
        format!("mock KMS accepts only access key `{}`", self.access_key)
    }

    fn run<'a>(&'a self, world: &'a mut World) -> StepFuture<'a> {
        Box::pin(async move {
            let kms = kms(world)?;
            let secret =
                if self.secret_key == "original" { kms.options.credential.secret_key.to_string() } else { self.secret_key.clone() };
            kms.set_credentials(&[mock_kms::api::Credential::new(self.access_key.clone(), secret)]).await?;
            Ok(format!("only access key `{}` is accepted now", self.access_key))
        })
    }
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
    pub outcome: Option<mock_kms::api::Outcome>,
    /// Only calls made for this reason (`request`: the apiserver's calls, and every call of a
    /// plugin that does not say why it calls; `health-probe`: the plugin's own; default any).
    #[serde(default)]
    pub caller: Option<mock_kms::api::Caller>,
    /// Only calls of this operation, as the dialect names it in the audit record (e.g. Vault's
    /// `auth/token/renew-self`, which the native action `DescribeKey` does not tell apart).
    #[serde(default)]
    pub operation: Option<String>,
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

impl ConditionKind for AuditCount {
    fn check(&self, scope: &Scope<'_>) -> Result<(), String> {
        scope.mock_kms("audit")?;
        scope.mark(&self.since)?;
        self.bounds().check("audit", true)
    }

    fn label(&self) -> String {
        format!(
            "mock KMS {}{}{}{} calls since `{}` ({})",
            self.action.name(),
            self.operation.as_ref().map(|op| format!(" ({op})")).unwrap_or_default(),
            self.outcome.map(|o| format!(" {}", o.name())).unwrap_or_default(),
            self.caller.map(|c| format!(" from {}", c.name())).unwrap_or_default(),
            self.since,
            self.bounds().describe()
        )
    }

    /// Counting mock KMS calls means nothing for a plugin that calls no remote KMS.
    fn needs(&self) -> super::Needs {
        super::Needs { capabilities: vec![kms_lab_catalog::Capability::RemoteKms], own_plugin_only: None }
    }

    fn observe<'a>(&'a self, world: &'a mut World, _baseline: u64) -> ObserveFuture<'a> {
        Box::pin(async move {
            let records = match audit_window(world, &self.since, self.action, self.outcome, self.caller).await {
                Ok(records) => records,
                Err(error) => return Seen::new(false, error),
            };
            let records: Vec<_> = records.into_iter().filter(|r| self.operation.as_ref().is_none_or(|op| r.operation == *op)).collect();
            let count = records.len() as f64;
            let bounds = self.bounds();
            let text = format!(
                "{count} {}{}{}{} calls since `{}` ({})",
                self.action.name(),
                self.operation.as_ref().map(|op| format!(" ({op})")).unwrap_or_default(),
                self.outcome.map(|o| format!(" with outcome {}", o.name())).unwrap_or_default(),
                self.caller.map(|c| format!(" from {}", c.name())).unwrap_or_default(),
                self.since,
                bounds.describe()
            );
            Seen::new(bounds.holds(count), text).counted(self.figure.as_ref(), count)
        })
    }
}

/// The audit records of one action since a mark, filtered by outcome and caller: the one
/// counting rule `audit` conditions and `kms_calls` share.
pub async fn audit_window(
    world: &World,
    since: &str,
    action: mock_kms::api::Action,
    outcome: Option<mock_kms::api::Outcome>,
    caller: Option<mock_kms::api::Caller>,
) -> Result<Vec<mock_kms::api::AuditRecord>, String> {
    let since_seq = world.marks.get(since).map(|m| m.audit_seq).unwrap_or(0);
    let kms = world.stack.mock_kms().ok_or("the stack runs no mock KMS")?;
    let query = mock_kms::api::AuditQuery { action: Some(action), outcome, caller, since_seq: Some(since_seq), ..Default::default() };
    kms.audit_query(&query).await.map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(current: &str, versions: &[&str], disabled: &[&str]) -> mock_kms::api::KeyMetadata {
        mock_kms::api::KeyMetadata {
            key_id: "lab-key".into(),
            key_state: mock_kms::api::KeyState::Enabled,
            key_spec: mock_kms::api::KeySpec::Aes256,
            current_key_version_id: current.into(),
            key_version_ids: versions.iter().map(|v| (*v).to_owned()).collect(),
            disabled_key_version_ids: disabled.iter().map(|v| (*v).to_owned()).collect(),
            creation_date: "2026-01-01T00:00:00Z".into(),
        }
    }

    fn condition(yaml: &str) -> KmsKey {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn kms_key_holds_only_when_the_key_is_as_described() {
        let at = |mark: &str| (mark == "before").then(|| "v1".to_owned());
        let rotated = key("v2", &["v1", "v2"], &["v1"]);
        let after_rotation =
            condition("{current: {differs_from: before}, versions: {at_least: 2, at_most: 2}, disabled_versions: {at_most: 1}}");
        let seen = after_rotation.judge(&rotated, at);
        assert!(seen.ok, "{}", seen.text);
        assert_eq!(
            seen.text,
            "key `lab-key`: current version `v2`, `v1` at `before`, 2 versions (expected 2 to 2), 1 disabled versions (expected at most 1)"
        );
        // Not rotated: the same version is current.
        let seen = after_rotation.judge(&key("v1", &["v1", "v2"], &[]), at);
        assert!(!seen.ok, "{}", seen.text);
        // One version too many, or one disabled too many.
        assert!(!after_rotation.judge(&key("v3", &["v1", "v2", "v3"], &[]), at).ok);
        assert!(!after_rotation.judge(&key("v2", &["v1", "v2"], &["v1", "v2"]), at).ok);
        assert!(condition("{current: {same_as: before}}").judge(&key("v1", &["v1", "v2"], &[]), at).ok);
        // A mark at which the key was not described never holds.
        let seen = condition("{current: {same_as: sealed}}").judge(&rotated, at);
        assert!(!seen.ok && seen.text.contains("did not describe its key at `sealed`"), "{}", seen.text);
    }
}
