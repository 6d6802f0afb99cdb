//! The stack's components and configuration: the one verb family on named components (`start`,
//! `stop` = SIGTERM, `kill` = SIGKILL, `restart` with an explicit wait), a second apiserver, and
//! the EncryptionConfiguration.

use std::time::{Duration, Instant};

use kms_lab_stack::{Readiness, WaitFor};
use serde::Deserialize;

use super::{Scope, StepFuture, StepKind};
use crate::error::StepError;
use crate::model::{Component, EncryptionSpec, FigureName, KekKind, KmsApi, ProviderSpec};
use crate::world::World;

/// How long an apiserver may take to load a rewritten EncryptionConfiguration (its poll is a minute).
const RELOAD_DEADLINE: Duration = Duration::from_secs(120);
/// The counter of the apiserver's automatic reloads of its EncryptionConfiguration.
const RELOADS_METRIC: &str = "apiserver_encryption_config_controller_automatic_reloads_total";
/// The info metric whose `hash` label is the hash of the configuration in force (since 1.34).
const CONFIG_INFO_METRIC: &str = "apiserver_encryption_config_controller_last_config_info";

/// `start: COMPONENT`.
#[derive(Debug, Clone, Deserialize)]
#[serde(transparent)]
pub struct Start(pub Component);

impl StepKind for Start {
    fn check(&self, scope: &mut Scope<'_>) -> Result<(), String> {
        scope.component(&self.0)
    }

    fn label(&self) -> String {
        format!("start {}", self.0)
    }

    fn run<'a>(&'a self, world: &'a mut World) -> StepFuture<'a> {
        Box::pin(async move {
            let started = Instant::now();
            // A running component is refused with the fix (`restart`); `mock-kms` starts the nodes that are down.
            world.stack.start(&self.0, WaitFor::Ready).await?;
            Ok(format!("{} is up after {:.1} s", self.0, started.elapsed().as_secs_f64()))
        })
    }
}

/// `stop: COMPONENT` (SIGTERM, graceful).
#[derive(Debug, Clone, Deserialize)]
#[serde(transparent)]
pub struct Stop(pub Component);

impl StepKind for Stop {
    fn check(&self, scope: &mut Scope<'_>) -> Result<(), String> {
        scope.component(&self.0)
    }

    fn label(&self) -> String {
        format!("stop {} (SIGTERM)", self.0)
    }

    fn run<'a>(&'a self, world: &'a mut World) -> StepFuture<'a> {
        Box::pin(async move {
            world.stack.stop(&self.0).await?;
            Ok(format!("{} is stopped", self.0))
        })
    }
}

/// `kill: COMPONENT` (SIGKILL, always: a crash).
#[derive(Debug, Clone, Deserialize)]
#[serde(transparent)]
pub struct Kill(pub Component);

impl StepKind for Kill {
    fn check(&self, scope: &mut Scope<'_>) -> Result<(), String> {
        scope.component(&self.0)
    }

    fn label(&self) -> String {
        format!("kill -9 {}", self.0)
    }

    fn run<'a>(&'a self, world: &'a mut World) -> StepFuture<'a> {
        Box::pin(async move {
            world.stack.kill(&self.0).await?;
            Ok(format!("{} is killed (SIGKILL)", self.0))
        })
    }
}

/// `restart: {component, wait, figure}`: stop (SIGTERM), start, wait.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Restart {
    /// The component.
    pub component: Component,
    /// What to wait for: `ready` (default), `serving`, `live` or `none` (the last three: apiservers).
    #[serde(default)]
    pub wait: WaitFor,
    /// Record the seconds from the stop until the wait was met as this figure.
    #[serde(default)]
    pub figure: Option<FigureName>,
}

impl StepKind for Restart {
    fn check(&self, scope: &mut Scope<'_>) -> Result<(), String> {
        scope.component(&self.component)?;
        if !self.wait.applies_to(&self.component) {
            return Err(format!("`wait: {}` applies to apiservers only; a {} restart waits for `ready`", self.wait, self.component));
        }
        Ok(())
    }

    fn label(&self) -> String {
        let what = match self.wait {
            WaitFor::Ready if matches!(self.component, Component::Apiserver(_)) => " (wait for /readyz)",
            WaitFor::Ready => "",
            WaitFor::Serving => " (wait for /livez/ping)",
            WaitFor::Live => " (wait for /livez)",
            WaitFor::None => " (no wait)",
        };
        format!("restart {}{what}", self.component)
    }

    fn run<'a>(&'a self, world: &'a mut World) -> StepFuture<'a> {
        Box::pin(async move {
            let started = Instant::now();
            world.stack.restart(&self.component, self.wait).await?;
            let took = seconds(started.elapsed());
            if let Some(figure) = &self.figure {
                world.figure(figure.to_string(), took);
            }
            Ok(format!("{} restarted, {} after {took} s", self.component, self.wait))
        })
    }
}

/// `reload: PLUGIN`: SIGHUP to a plugin, which re-reads its KEK file (a local-KEK rotation).
#[derive(Debug, Clone, Deserialize)]
#[serde(transparent)]
pub struct Reload(pub String);

impl StepKind for Reload {
    fn needs(&self) -> super::Needs {
        super::Needs { own_plugin_only: Some("`reload` sends kms-plugin SIGHUP to re-read its KEK file"), ..Default::default() }
    }

    fn check(&self, scope: &mut Scope<'_>) -> Result<(), String> {
        scope.plugin(&self.0)
    }

    fn label(&self) -> String {
        format!("reload {} (SIGHUP: it re-reads its KEK file)", self.0)
    }

    fn run<'a>(&'a self, world: &'a mut World) -> StepFuture<'a> {
        Box::pin(async move {
            world.stack.reload_plugin(&self.0)?;
            Ok(format!("{} was sent SIGHUP", self.0))
        })
    }
}

/// Seconds rounded to a tenth, as figures record them.
pub fn seconds(elapsed: Duration) -> f64 {
    (elapsed.as_secs_f64() * 10.0).round() / 10.0
}

/// `add_apiserver: {encryption}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddApiserver {
    /// Its EncryptionConfiguration.
    #[serde(with = "serde_yaml::with::singleton_map_recursive")]
    pub encryption: EncryptionSpec,
}

impl StepKind for AddApiserver {
    fn needs(&self) -> super::Needs {
        super::Needs::of_encryption(&self.encryption)
    }

    fn check(&self, scope: &mut Scope<'_>) -> Result<(), String> {
        check_encryption(scope, &self.encryption)?;
        scope.add_apiserver();
        Ok(())
    }

    fn label(&self) -> String {
        format!("add an apiserver [{}]", encryption_label(&self.encryption))
    }

    fn run<'a>(&'a self, world: &'a mut World) -> StepFuture<'a> {
        Box::pin(async move {
            let config = world.encryption_config(&self.encryption)?;
            let index = world.stack.add_apiserver(&config, true, Readiness::Ready, Vec::new()).await?;
            Ok(format!("apiserver-{index} is ready on {}", world.stack.apiserver_url(index)?))
        })
    }
}

/// How a new EncryptionConfiguration takes effect (a restart is its own step: `restart`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Apply {
    /// Automatic reload; the step waits until the apiserver reports it loaded the file.
    #[default]
    Reload,
    /// Only write the file (a `restart` step then applies it).
    WriteOnly,
}

/// `encryption: {apiserver, apply, resources}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Encryption {
    /// Which apiserver (default: every one).
    #[serde(default)]
    pub apiserver: Option<usize>,
    /// How it takes effect.
    #[serde(default)]
    pub apply: Apply,
    /// Providers per resource.
    #[serde(with = "serde_yaml::with::singleton_map_recursive")]
    pub resources: EncryptionSpec,
    /// With `apply: reload`: record the reload as figures `<figure>.seconds` (from the write until
    /// the apiserver counts the successful reload) and `<figure>.successes` / `.failures` (its
    /// reload counters after it).
    #[serde(default)]
    pub figure: Option<FigureName>,
}

impl StepKind for Encryption {
    fn needs(&self) -> super::Needs {
        super::Needs::of_encryption(&self.resources)
    }

    fn check(&self, scope: &mut Scope<'_>) -> Result<(), String> {
        if let Some(index) = self.apiserver {
            scope.apiserver(index)?;
        }
        check_encryption(scope, &self.resources)
    }

    fn label(&self) -> String {
        let how = match self.apply {
            Apply::Reload => "reload",
            Apply::WriteOnly => "write only",
        };
        let on = self.apiserver.map(|i| format!(" on apiserver-{i}")).unwrap_or_default();
        format!("encryption [{}]{on} ({how})", encryption_label(&self.resources))
    }

    fn run<'a>(&'a self, world: &'a mut World) -> StepFuture<'a> {
        Box::pin(async move {
            let config = world.encryption_config(&self.resources)?;
            let targets: Vec<usize> = match self.apiserver {
                Some(index) => vec![index],
                None => (0..world.stack.apiserver_count()).collect(),
            };
            let mut seen = Vec::new();
            let text = config.to_yaml().map_err(kms_lab_stack::StackError::from)?;
            for index in targets {
                if world.stack.encryption_config_text(index)? == text && self.apply == Apply::Reload {
                    seen.push(format!("apiserver-{index}: unchanged"));
                    continue;
                }
                let before = reload_state(world, index).await;
                world.stack.write_encryption_config(index, &config)?;
                match self.apply {
                    Apply::WriteOnly => seen.push(format!("apiserver-{index}: written")),
                    Apply::Reload => {
                        let took = wait_for_reload(world, index, (before.successes, before.failures)).await?;
                        let after = reload_state(world, index).await;
                        if let Some(figure) = &self.figure {
                            world.figure(format!("{}.seconds", figure.0), (took.as_secs_f64() * 10.0).round() / 10.0);
                            world.figure(format!("{}.successes", figure.0), after.successes);
                            world.figure(format!("{}.failures", figure.0), after.failures);
                        }
                        seen.push(format!(
                            "apiserver-{index}: reloaded after {:.1} s (reloads ok/failed {}/{} → {}/{}, config hash {} → {})",
                            took.as_secs_f64(),
                            before.successes,
                            before.failures,
                            after.successes,
                            after.failures,
                            short_hash(before.hash.as_deref()),
                            short_hash(after.hash.as_deref())
                        ));
                    }
                }
            }
            Ok(seen.join("; "))
        })
    }
}

/// Load-time checks of an EncryptionConfiguration: resources, plugins, v1-only fields, KMS
/// provider names the apiserver would refuse.
pub fn check_encryption(scope: &Scope<'_>, spec: &EncryptionSpec) -> Result<(), String> {
    check_kms_names(spec)?;
    for (resource, providers) in spec {
        if !matches!(resource.as_str(), "secrets" | "configmaps") {
            return Err(format!("resource `{resource}`: scenarios encrypt `secrets` or `configmaps`"));
        }
        if providers.is_empty() {
            return Err(format!("resource `{resource}` has no providers; add at least `identity: {{}}`"));
        }
        for provider in providers {
            if let ProviderSpec::Kms(kms) = provider {
                scope.plugin(&kms.plugin)?;
                if kms.api == KmsApi::V2 && kms.cachesize.is_some() {
                    return Err(format!("kms provider `{}`: `cachesize` applies to `api: v1` only", kms.name));
                }
            }
        }
    }
    Ok(())
}

/// kube-apiserver's rules on KMS provider names (`validateKMSConfigName` in k8s.io/apiserver's
/// `validation_encryption.go`): a name is given; a v2 name has no `:`; one set of names across
/// every resource of the file: a v2 name already in it is refused always, a v1 name only under
/// automatic reload. The lab's apiservers
/// always run with `--encryption-provider-config-automatic-reload`, so any name used twice is refused.
fn check_kms_names(spec: &EncryptionSpec) -> Result<(), String> {
    let mut seen: Vec<(&str, &str)> = Vec::new();
    for (resource, providers) in spec {
        for provider in providers {
            let ProviderSpec::Kms(kms) = provider else { continue };
            if kms.name.is_empty() {
                return Err(format!(
                    "a kms provider under `{resource}` has an empty `name:`: kube-apiserver refuses the file (\"name is a mandatory field for a provider\"); give it one"
                ));
            }
            if kms.api == crate::model::KmsApi::V2 && kms.name.contains(':') {
                return Err(format!(
                    "kms provider name `{}` under `{resource}` contains `:`: kube-apiserver refuses the file (\"invalid KMS provider name {}, must not contain ':'\": \
                     a KMS v2 name is part of every stored value's prefix `k8s:enc:kms:v2:NAME:`); use a name without `:`",
                    kms.name, kms.name
                ));
            }
            if let Some((_, first)) = seen.iter().find(|(name, _)| *name == kms.name) {
                let place = if *first == resource.as_str() {
                    format!("twice under `{resource}`")
                } else {
                    format!("under `{first}` and again under `{resource}`")
                };
                return Err(format!(
                    "kms provider name `{}` is used {place}: kube-apiserver refuses the file (\"duplicate KMS provider name {}, names must be unique\": \
                     names are unique across all resources, for v2 always and for v1 under the automatic reload the lab runs with); \
                     give each kms provider its own `name:` (the name is in every stored value's prefix, so keep the one that has data)",
                    kms.name, kms.name
                ));
            }
            seen.push((&kms.name, resource));
        }
    }
    Ok(())
}

/// Load-time checks of the stack a scenario declares.
pub fn check_stack(scope: &Scope<'_>) -> Result<(), String> {
    let stack = &scope.scenario().stack;
    let mut names = std::collections::BTreeSet::new();
    for plugin in &stack.plugins {
        if !names.insert(&plugin.name) {
            return Err(format!("plugin `{}` is declared twice", plugin.name));
        }
        if plugin.kek == Some(KekKind::MockKms) && stack.mock_kms.is_none() {
            return Err(format!("plugin `{}` has `kek: mock-kms` but the stack has no `mock_kms:`", plugin.name));
        }
    }
    if let Some(kms) = &stack.mock_kms
        && let Some(vault) = &kms.vault
        && vault.plugin_node >= kms.nodes
    {
        return Err(format!(
            "`mock_kms.vault.plugin_node: {}` names no node: the mock KMS has {} node(s), numbered from 0",
            vault.plugin_node, kms.nodes
        ));
    }
    crate::components::check(stack)?;
    check_encryption(scope, &stack.encryption)
}

/// `secrets: kms-v2:lab → identity; configmaps: …`
fn encryption_label(spec: &EncryptionSpec) -> String {
    spec.iter()
        .map(|(resource, providers)| format!("{resource}: {}", providers.iter().map(provider_label).collect::<Vec<_>>().join(" → ")))
        .collect::<Vec<_>>()
        .join("; ")
}

fn provider_label(provider: &ProviderSpec) -> String {
    match provider {
        ProviderSpec::Identity(_) => "identity".into(),
        ProviderSpec::Aescbc(k) => format!("aescbc:{}", k.key),
        ProviderSpec::Aesgcm(k) => format!("aesgcm:{}", k.key),
        ProviderSpec::Secretbox(k) => format!("secretbox:{}", k.key),
        ProviderSpec::Kms(k) => format!("kms-{}:{}", if k.api == KmsApi::V1 { "v1" } else { "v2" }, k.name),
    }
}

/// `(successes, failures)` of the apiserver's automatic reloads so far.
async fn reload_counts(world: &World, index: usize) -> (f64, f64) {
    let state = reload_state(world, index).await;
    (state.successes, state.failures)
}

/// What the apiserver's `/metrics` say of its EncryptionConfiguration reloads.
#[derive(Debug, Clone, Default, PartialEq)]
struct ReloadState {
    successes: f64,
    failures: f64,
    /// The `hash` label of the config info metric: the configuration in force.
    hash: Option<String>,
}

async fn reload_state(world: &World, index: usize) -> ReloadState {
    let Ok(metrics) = world.stack.metrics(index).await else {
        return ReloadState::default();
    };
    let count = |status: &str| metrics.sum(RELOADS_METRIC, &[("status", status)]).unwrap_or(0.0);
    let hash = metrics.samples(CONFIG_INFO_METRIC).find(|s| s.value > 0.0).and_then(|s| s.labels.get("hash").cloned());
    ReloadState { successes: count("success"), failures: count("failure"), hash }
}

/// `sha256:0123456789ab…` → `0123456789ab` (enough to tell configurations apart in a line).
fn short_hash(hash: Option<&str>) -> String {
    match hash {
        Some(hash) => hash.trim_start_matches("sha256:").chars().take(12).collect(),
        None => "(none)".into(),
    }
}

/// `broken_encryption: {apiserver, text, figure}`: writes a file the apiserver cannot load; its
/// automatic reload must count a failure while the configuration in force (its hash) and the
/// success count stay as they were.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokenEncryption {
    /// Which apiserver (default 0).
    #[serde(default)]
    pub apiserver: usize,
    /// The file's text, written as it is.
    pub text: String,
    /// Record `<figure>.seconds` from the write until the failure is counted.
    #[serde(default)]
    pub figure: Option<FigureName>,
}

impl StepKind for BrokenEncryption {
    fn check(&self, scope: &mut Scope<'_>) -> Result<(), String> {
        scope.apiserver(self.apiserver)
    }

    fn label(&self) -> String {
        format!("write a broken EncryptionConfiguration to apiserver-{}: the reload must fail, the old one stay", self.apiserver)
    }

    fn run<'a>(&'a self, world: &'a mut World) -> StepFuture<'a> {
        Box::pin(async move {
            let index = self.apiserver;
            let before = reload_state(world, index).await;
            if before.hash.is_none() {
                return Err(StepError::Failed(format!(
                    "apiserver-{index} exposes no {CONFIG_INFO_METRIC} (older than 1.34?): the configuration in force cannot be told"
                )));
            }
            world.stack.write_encryption_config_text(index, &self.text)?;
            let started = Instant::now();
            let after = loop {
                let now = reload_state(world, index).await;
                if now.failures > before.failures {
                    break now;
                }
                if now.successes > before.successes {
                    return Err(StepError::Failed(format!(
                        "apiserver-{index} loaded the broken EncryptionConfiguration (a reload success was counted)"
                    )));
                }
                if started.elapsed() > RELOAD_DEADLINE {
                    return Err(StepError::Timeout {
                        seconds: RELOAD_DEADLINE.as_secs_f64(),
                        what: format!("apiserver-{index} to count a failed reload of the broken EncryptionConfiguration"),
                        last: format!("{RELOADS_METRIC}: {} successes, {} failures", now.successes, now.failures),
                    });
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            };
            let took = started.elapsed();
            if after.hash != before.hash || after.successes != before.successes {
                return Err(StepError::Failed(format!(
                    "after the failed reload the configuration in force changed: hash {} → {}, successes {} → {}",
                    short_hash(before.hash.as_deref()),
                    short_hash(after.hash.as_deref()),
                    before.successes,
                    after.successes
                )));
            }
            if let Some(figure) = &self.figure {
                world.figure(format!("{}.seconds", figure.0), (took.as_secs_f64() * 10.0).round() / 10.0);
                world.figure(format!("{}.failures", figure.0), after.failures);
            }
            Ok(format!(
                "reload failure counted after {:.1} s (failed {} → {}); config hash still {}",
                took.as_secs_f64(),
                before.failures,
                after.failures,
                short_hash(after.hash.as_deref())
            ))
        })
    }
}

/// How long a counted reload failure may still be followed by the success: after a broken file
/// the apiserver retries with backoff, and one retry may read the broken content just before the
/// new file is picked up.
const FAILURE_GRACE: Duration = Duration::from_secs(15);

/// Waits until the apiserver counts one more successful reload; a counted failure not followed
/// by a success within [`FAILURE_GRACE`] ends the wait with the apiserver's reason.
async fn wait_for_reload(world: &World, index: usize, (successes, failures): (f64, f64)) -> Result<Duration, StepError> {
    let started = Instant::now();
    let mut failed_at: Option<Instant> = None;
    loop {
        let (now_ok, now_failed) = reload_counts(world, index).await;
        if now_ok > successes {
            return Ok(started.elapsed());
        }
        if now_failed > failures && failed_at.is_none() {
            failed_at = Some(Instant::now());
        }
        if failed_at.is_some_and(|at| at.elapsed() > FAILURE_GRACE) {
            return Err(StepError::Failed(format!(
                "apiserver-{index} refused the new EncryptionConfiguration (reload failure counted in {RELOADS_METRIC}); see apiserver-{index}.log in the run directory"
            )));
        }
        if started.elapsed() > RELOAD_DEADLINE {
            return Err(StepError::Timeout {
                seconds: RELOAD_DEADLINE.as_secs_f64(),
                what: format!("apiserver-{index} to reload its EncryptionConfiguration"),
                last: format!("{RELOADS_METRIC}: {now_ok} successes, {now_failed} failures"),
            });
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
