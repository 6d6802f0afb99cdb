//! Secret sync: a controller keeps remote secrets of the mock KMS's secrets manager as Secrets.
//! It is `kms-secret-sync` (in the scenario's process) or the seed's own ack-secret-manager
//! (built from its source, run as a process with its chart's RBAC, calling the mock KMS's
//! `aliyun` dialect over HTTPS) — `secret_sync: {controller}` or `kms-lab scenarios
//! --secret-sync`. Either runs with its own ServiceAccount token (RBAC on the real apiserver) and
//! its own least-privilege credential in the mock KMS (a SecretStore); steps put remote secret
//! versions, apply ExternalSecrets, restart the controller, change its access policy; the
//! conditions `synced` and `external_secret` observe the result (ack-secret-manager writes no
//! status, so `external_secret` is not observable on it and its steps are reported as such). Every value put carries the plaintext marker, so `no_plaintext_in_etcd`
//! covers synced values too; values are never printed, only which version a Secret holds.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use kms_lab_provision::{GoRecipe, ProvisionOptions};
use kms_lab_stack::Stack;
use kms_lab_stack::process::Supervised;
use kms_secret_sync::ack;
use kms_secret_sync::crd::JmesPathObject;
use kms_secret_sync::decide::Reason;
use kms_secret_sync::lab::{self, RunningController};
use kms_secret_sync::{ControllerConfig, StoreClient, StoreCredential};
use mock_kms::api::Action;
use mock_kms::api::Credential;
use mock_kms::api::policy::AccessPolicy;
use mock_kms::dialects::Dialect;
use serde::{Deserialize, Deserializer};
use sha2::{Digest, Sha256};

use super::{Named, Scope, StepFuture, StepKind};
use crate::components::StackComponent;
use crate::conditions::{ConditionKind, ObserveFuture, Seen};
use crate::error::StepError;
use crate::model::Dur;
use crate::model::StackSpec;
use crate::runner::RunOptions;
use crate::world::{PLAINTEXT_MARKER, World};
use std::future::Future;

/// The namespace of the ExternalSecrets, their Secrets and the controller's Role.
pub const NAMESPACE: &str = "default";
/// The SecretStore every ExternalSecret of a scenario reads from (the stack's mock KMS).
const STORE: &str = "kms";
/// The controller's access key in the mock KMS.
pub const ACCESS_KEY: &str = "secret-sync";
/// What the controller may call by default: read secret values and decrypt them, nothing else.
const READER: [Action; 2] = [Action::GetSecretValue, Action::Decrypt];
/// Remote secrets, put by `put_remote_secret` and named by later steps.
const REMOTE_SECRET: Named = Named { what: "remote secret", verb: "put", by: "put_remote_secret" };
/// ExternalSecrets, applied by `external_secret` and named by later steps.
const EXTERNAL_SECRET: Named = Named { what: "ExternalSecret", verb: "applied", by: "external_secret" };
/// How soon a controller retries a failed ExternalSecret (its `--reconcile-period`), both alike.
const RECONCILE_PERIOD: Duration = Duration::from_millis(500);
/// How long ack-secret-manager may take to start watching.
const THEIRS_START: Duration = Duration::from_secs(60);
/// How long a scenario waits for another process's ack-secret-manager to give its port back.
const THEIRS_PORT_WAIT: Duration = Duration::from_secs(900);

/// The secret sync controller a scenario runs.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize, clap::ValueEnum, strum::IntoStaticStr, strum::Display,
)]
#[serde(rename_all = "kebab-case")]
#[strum(serialize_all = "kebab-case")]
pub enum SyncController {
    /// kms-lab's own `kms-secret-sync` (crate `kms-secret-sync/`), in the scenario's process.
    #[default]
    KmsSecretSync,
    /// The seed's ack-secret-manager, built from `../shared/thirdparty/ack-secret-manager`.
    AckSecretManager,
}

impl SyncController {
    /// The mock KMS dialect it calls (ack-secret-manager speaks Alibaba Cloud KMS over HTTPS).
    pub fn dialect(self) -> Dialect {
        match self {
            Self::KmsSecretSync => Dialect::Native,
            Self::AckSecretManager => Dialect::Aliyun,
        }
    }
}

/// `secret_sync:` under `stack:`: run the controller against the stack's mock KMS.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretSyncSpec {
    /// Which controller (default `kms-secret-sync`; `kms-lab scenarios --secret-sync` overrides it).
    #[serde(default)]
    pub controller: SyncController,
    /// `--polling-interval` (default 120s, as the seed's controller).
    #[serde(default = "default_interval")]
    pub polling_interval: Dur,
    /// `--disable-polling`: read remote secrets only when an ExternalSecret changes, or at start.
    #[serde(default)]
    pub disable_polling: bool,
    /// `--max-concurrent-kms-secret-pulls`: calls to the store per second over all ExternalSecrets (default 10).
    #[serde(default)]
    pub store_qps: Option<std::num::NonZeroU32>,
    /// `--store-burst`: calls allowed in a burst (default 1; kms-secret-sync only:
    /// ack-secret-manager's burst is always 1).
    #[serde(default)]
    pub store_burst: Option<std::num::NonZeroU32>,
}

impl SecretSyncSpec {
    /// The controller that runs: `--secret-sync` if given, else the one the spec names.
    pub fn running(&self, options: &RunOptions) -> SyncController {
        options.secret_sync.unwrap_or(self.controller)
    }
}

fn default_interval() -> Dur {
    Dur(Duration::from_secs(120))
}

/// ack-secret-manager located (built on first use: about a minute) and its source (for its
/// chart's RBAC), before the stack starts; and its turn on this host: it binds
/// [`ack::METRICS_PORT`] for its metrics (no flag moves it), so one runs at a time — one
/// scenario of this process at a time, and only once no other process holds the port.
pub enum PreparedController {
    /// kms-secret-sync: nothing to prepare.
    Ours,
    /// ack-secret-manager: its binary, its source folder, and this process's turn.
    Theirs {
        /// The built binary.
        binary: PathBuf,
        /// Its source (its chart's RBAC is read from there).
        source: PathBuf,
        /// Held while it may run.
        turn: tokio::sync::SemaphorePermit<'static>,
    },
}

/// One ack-secret-manager at a time in this process (see [`PreparedController`]).
static THEIRS_AT_ONCE: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);

impl PreparedController {
    /// Prepares `controller`; the error says what is missing and how to fix it.
    pub async fn prepare(controller: SyncController, progress: &dyn Fn(&str)) -> Result<Self, String> {
        if controller == SyncController::KmsSecretSync {
            return Ok(Self::Ours);
        }
        let (binary, source) = tokio::task::spawn_blocking(|| {
            let recipe = GoRecipe::ack_secret_manager();
            let binary = kms_lab_provision::locate_go_recipe(&recipe, &ProvisionOptions::default())?;
            Ok::<_, kms_lab_provision::ProvisionError>((binary, kms_lab_provision::go_recipe_source(&recipe)?))
        })
        .await
        .map_err(|e| format!("locating ack-secret-manager stopped unexpectedly: {e}"))?
        .map_err(|e| format!("ack-secret-manager cannot run: {e}"))?;
        let turn = match THEIRS_AT_ONCE.try_acquire() {
            Ok(permit) => permit,
            Err(_) => {
                progress("  waiting for the other scenario's ack-secret-manager to stop (it binds :8080 for metrics; one at a time)");
                THEIRS_AT_ONCE.acquire().await.map_err(|e| e.to_string())?
            }
        };
        Ok(Self::Theirs { binary, source, turn })
    }
}

/// The controller as it runs.
enum Controller {
    /// kms-secret-sync, in this process.
    Ours { client: kube::Client, config: ControllerConfig, running: Option<RunningController> },
    /// ack-secret-manager, a process of its own.
    Theirs { binary: PathBuf, flags: ack::Flags, envs: Vec<(String, String)>, log_dir: PathBuf, starts: usize, running: Option<Supervised> },
}

/// The running controller and what the scenario put into the store.
pub struct SecretSyncLab {
    admin: kube::Client,
    controller: Controller,
    /// Held while ack-secret-manager may run (see [`PreparedController`]).
    _turn: Option<tokio::sync::SemaphorePermit<'static>>,
    /// The store with the stack's own (unrestricted) credential, for putting remote secrets.
    store: StoreClient,
    key_id: String,
    /// Every value put per remote secret, oldest first (the value of the JSON property when the
    /// remote secret is a JSON document).
    puts: BTreeMap<String, Vec<String>>,
}

impl std::fmt::Debug for SecretSyncLab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretSyncLab")
            .field("controller", &self.kind())
            .field("remote_secrets", &self.puts.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

fn failed(what: &str) -> impl Fn(kms_secret_sync::LabError) -> StepError + '_ {
    move |error| StepError::Failed(format!("{what}: {error}"))
}

impl SecretSyncLab {
    /// Which controller runs.
    pub fn kind(&self) -> SyncController {
        match self.controller {
            Controller::Ours { .. } => SyncController::KmsSecretSync,
            Controller::Theirs { .. } => SyncController::AckSecretManager,
        }
    }

    /// Starts the controller (stopped or never started) with its current flags; ack-secret-manager
    /// counts as started once its log says it watches (bounded; its log tail if it exits first).
    async fn run_controller(&mut self, progress: impl Fn(&str)) -> Result<(), StepError> {
        match &mut self.controller {
            Controller::Ours { client, config, running } => {
                *running = Some(RunningController::start(client.clone(), config.clone()).await);
            }
            Controller::Theirs { binary, flags, envs, log_dir, starts, running } => {
                *starts += 1;
                // Another process's (a test's, another kms-lab's) may hold the port: checked at
                // the last moment, not before the stack started.
                let waiting = || {
                    progress(&format!("  waiting for port {} to be free: another ack-secret-manager runs on this host", ack::METRICS_PORT))
                };
                ack::wait_for_metrics_port(THEIRS_PORT_WAIT, waiting).await.map_err(failed("start ack-secret-manager"))?;
                let log = log_dir.join(format!("ack-secret-manager-{starts}.log"));
                let (program, args) = ack::in_pod_namespace(binary, NAMESPACE, flags.args());
                let mut process = Supervised::spawn("ack-secret-manager", &program, &args, &log, envs)?;
                let watching = || async { std::fs::read_to_string(&log).is_ok_and(|text| text.contains(ack::STARTED_LINE)) };
                let waited_for = format!("its log to say `{}` (its ExternalSecret controller watches)", ack::STARTED_LINE);
                process.wait_ready(&waited_for, THEIRS_START, watching).await?;
                *running = Some(process);
            }
        }
        Ok(())
    }

    /// Stops the controller (reconciles in flight finish, bounded; a process gets SIGTERM).
    async fn stop_controller(&mut self) {
        match &mut self.controller {
            Controller::Ours { running, .. } => {
                if let Some(controller) = running.take() {
                    controller.stop().await;
                }
            }
            Controller::Theirs { running, .. } => {
                if let Some(process) = running.take() {
                    process.stop(Duration::from_secs(10)).await;
                }
            }
        }
    }
}

impl StackComponent for SecretSyncLab {
    type Spec = SecretSyncSpec;
    type Prepared = PreparedController;
    const NAME: &'static str = "the secret sync controller";
    const HOW_TO_ADD: &'static str = "secret_sync: {polling_interval: 2s}";

    fn spec(stack: &StackSpec) -> Option<&SecretSyncSpec> {
        stack.secret_sync.as_ref()
    }

    fn check(_spec: &SecretSyncSpec, stack: &StackSpec) -> Result<(), String> {
        match stack.mock_kms {
            Some(_) => Ok(()),
            None => {
                Err("`secret_sync:` reads remote secrets from the mock KMS's secrets manager: add `mock_kms: {}` under `stack:`".into())
            }
        }
    }

    fn describe(spec: &SecretSyncSpec, options: &RunOptions) -> String {
        spec.running(options).to_string()
    }

    fn dialects(spec: &SecretSyncSpec, options: &RunOptions) -> Vec<Dialect> {
        vec![spec.running(options).dialect()]
    }

    fn prepare<'a>(
        spec: &'a SecretSyncSpec,
        options: &'a RunOptions,
        progress: &'a dyn Fn(&str),
    ) -> impl Future<Output = Result<PreparedController, String>> + 'a {
        PreparedController::prepare(spec.running(options), progress)
    }

    /// Sets the prepared controller up on `stack` and starts it: its credential and policy in the
    /// mock KMS, the CRDs, its ServiceAccount and RBAC, a token, the SecretStore `kms`.
    /// `progress` hears of a wait for another ack-secret-manager's port.
    async fn start(
        stack: &Stack,
        spec: &SecretSyncSpec,
        seed: u64,
        prepared: PreparedController,
        progress: &dyn Fn(&str),
    ) -> Result<(Self, String), StepError> {
        let kms = stack.mock_kms().ok_or_else(|| StepError::Failed("secret sync needs the mock KMS".into()))?;
        let url = kms.dialect_endpoint(Dialect::Native)?.url().to_owned();
        let secret_key = hex::encode(&Sha256::new().chain_update(seed.to_be_bytes()).chain_update(ACCESS_KEY).finalize()[..16]);
        let plugins = kms.options.credential.clone();
        let reader = Credential::new(ACCESS_KEY, secret_key.clone());
        kms.set_credentials(&[plugins, reader]).await?;
        kms.set_policy(ACCESS_KEY, &reader_policy(&kms.options.key_id, &READER)).await?;

        let admin = stack.kube_client(0).await?;
        lab::install_crds(&admin).await.map_err(failed("install the CRDs"))?;
        lab::create_store(&admin, NAMESPACE, STORE, &StoreCredential::new(ACCESS_KEY, secret_key))
            .await
            .map_err(failed("create the SecretStore"))?;
        let (controller, turn) = match prepared {
            PreparedController::Ours => {
                lab::grant_controller(&admin, NAMESPACE).await.map_err(failed("apply the controller's RBAC"))?;
                let token =
                    lab::service_account_token(&admin, NAMESPACE, kms_secret_sync::rbac::NAME).await.map_err(failed("get its token"))?;
                let client = lab::client_with_token(&stack.kubeconfig_path(0), &token).await.map_err(failed("build its client"))?;
                let config = ControllerConfig {
                    watch_namespaces: vec![NAMESPACE.into()],
                    polling_interval: spec.polling_interval.0,
                    disable_polling: spec.disable_polling,
                    reconcile_period: RECONCILE_PERIOD,
                    kms_endpoint: Some(url.clone()),
                    ..Default::default()
                };
                let config = ControllerConfig {
                    max_concurrent_kms_secret_pulls: spec.store_qps.unwrap_or(config.max_concurrent_kms_secret_pulls),
                    store_burst: spec.store_burst.unwrap_or(config.store_burst),
                    ..config
                };
                (Controller::Ours { client, config, running: None }, None)
            }
            PreparedController::Theirs { binary, source, turn } => {
                let token = ack::grant(&admin, &source, NAMESPACE).await.map_err(failed("apply ack-secret-manager's chart RBAC"))?;
                let log_dir = stack.run_dir().to_path_buf();
                let kubeconfig = log_dir.join("ack-secret-manager.kubeconfig");
                ack::kubeconfig_with_token(&stack.kubeconfig_path(0), &token, &kubeconfig).map_err(failed("write its kubeconfig"))?;
                let endpoint = kms.dialect_endpoint(Dialect::Aliyun)?;
                let ca_file =
                    endpoint.ca_file.clone().ok_or_else(|| StepError::Failed("the aliyun dialect is served without TLS".into()))?;
                let pod = ack::leader_pod(&admin, NAMESPACE).await.map_err(failed("create its Pod object for leader election"))?;
                let envs = vec![
                    ("KUBECONFIG".to_owned(), kubeconfig.display().to_string()),
                    ("SSL_CERT_FILE".to_owned(), ca_file.display().to_string()),
                    ("POD_NAME".to_owned(), pod),
                    ("POD_NAMESPACE".to_owned(), NAMESPACE.to_owned()),
                ];
                let flags = ack::Flags {
                    polling_interval: spec.polling_interval.0,
                    disable_polling: spec.disable_polling,
                    kms_endpoint: endpoint.url().trim_start_matches("https://").to_owned(),
                    watch_namespace: NAMESPACE.to_owned(),
                    reconcile_period: RECONCILE_PERIOD,
                    max_concurrent_kms_secret_pulls: spec.store_qps,
                };
                (Controller::Theirs { binary, flags, envs, log_dir, starts: 0, running: None }, Some(turn))
            }
        };
        let own = kms.options.credential.clone();
        let mut lab = Self {
            admin,
            controller,
            _turn: turn,
            store: StoreClient::new(reqwest::Client::new(), &url, own, Duration::from_secs(10)),
            key_id: kms.options.key_id.clone(),
            puts: BTreeMap::new(),
        };
        lab.run_controller(progress).await?;
        let every = humantime::format_duration(spec.polling_interval.0);
        let line = format!("secret sync controller {} running (polling every {every})", lab.kind());
        Ok((lab, line))
    }

    /// Stops the controller and gives up this host's turn for ack-secret-manager.
    async fn stop(mut self) {
        self.stop_controller().await;
    }
}

fn reader_policy(key_id: &str, actions: &[Action]) -> AccessPolicy {
    AccessPolicy::allow(actions.iter().copied(), ["secret/*".to_owned(), format!("key/{key_id}")])
}

fn sync(world: &mut World) -> Result<&mut SecretSyncLab, StepError> {
    world.components.secret_sync.as_mut().ok_or_else(|| StepError::Failed("the stack runs no secret sync".into()))
}

/// `put_remote_secret: {name, property}`: a new version of remote secret `name` in the mock KMS's
/// secrets manager (created on the first put); with `property`, the value is a JSON document
/// `{"PROPERTY": VALUE}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutRemoteSecret {
    /// The remote secret's name.
    pub name: String,
    /// Put a JSON document with the value under this property.
    #[serde(default)]
    pub property: Option<String>,
}

impl StepKind for PutRemoteSecret {
    fn check(&self, scope: &mut Scope<'_>) -> Result<(), String> {
        scope.runs::<SecretSyncLab>("put_remote_secret")?;
        scope.declare(&REMOTE_SECRET, &self.name);
        Ok(())
    }

    fn label(&self) -> String {
        match &self.property {
            Some(property) => format!("put a new version of remote secret `{}` (JSON, property `{property}`)", self.name),
            None => format!("put a new version of remote secret `{}`", self.name),
        }
    }

    fn run<'a>(&'a self, world: &'a mut World) -> StepFuture<'a> {
        Box::pin(async move {
            let seed = world.seed();
            let sync = sync(world)?;
            let version = sync.puts.get(&self.name).map_or(0, Vec::len) + 1;
            let digest =
                Sha256::new().chain_update(seed.to_be_bytes()).chain_update(&self.name).chain_update(version.to_be_bytes()).finalize();
            let value = format!("{PLAINTEXT_MARKER}{}:v{version}:{}", self.name, hex::encode(&digest[..8]));
            let body = match &self.property {
                Some(property) => serde_json::json!({ property: value }).to_string(),
                None => value.clone(),
            };
            let answer = if version == 1 {
                sync.store.create_secret(&self.name, &body, &sync.key_id).await
            } else {
                sync.store.put_secret_value(&self.name, &body).await
            };
            answer.map_err(|e| StepError::Failed(format!("the store refused the put of `{}`: {e}", self.name)))?;
            sync.puts.entry(self.name.clone()).or_default().push(value);
            Ok(format!("version {version} of `{}` put ({} bytes)", self.name, body.len()))
        })
    }
}

/// One entry of an ExternalSecret: Secret key `key` from remote secret `remote` (its current
/// version), or from one property of it when the remote value is JSON.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntrySpec {
    /// The key in the Secret.
    pub key: String,
    /// The remote secret's name.
    pub remote: String,
    /// The property to extract from a JSON remote value (the entry's `jmesPath`, e.g. `password`).
    #[serde(default)]
    pub property: Option<String>,
}

/// `external_secret: {name, entries, refresh}`: applies ExternalSecret `name` (its Secret has
/// the same name) reading from the stack's store.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExternalSecretStep {
    /// The ExternalSecret's (and its Secret's) name.
    pub name: String,
    /// Its entries.
    pub entries: Vec<EntrySpec>,
    /// Its own `refreshInterval` (default: the controller's polling interval).
    #[serde(default)]
    pub refresh: Option<Dur>,
    /// Apply this many alike, named `<name>-000`, `<name>-001`, … (default: one, named `name`).
    #[serde(default)]
    pub count: Option<usize>,
}

/// The names `count` ExternalSecrets of base name `name` get (one: `name` itself).
pub fn names(name: &str, count: Option<usize>) -> Vec<String> {
    match count {
        None => vec![name.to_owned()],
        Some(count) => (0..count).map(|i| format!("{name}-{i:03}")).collect(),
    }
}

impl StepKind for ExternalSecretStep {
    fn check(&self, scope: &mut Scope<'_>) -> Result<(), String> {
        scope.runs::<SecretSyncLab>("external_secret")?;
        if self.entries.is_empty() {
            return Err("`entries` is empty: give at least one `{key, remote}`".into());
        }
        if self.count == Some(0) {
            return Err("`count: 0` applies nothing: leave `count` out for one, or give at least 1".into());
        }
        for name in names(&self.name, self.count) {
            scope.declare(&EXTERNAL_SECRET, &name);
        }
        if self.count.is_some() {
            scope.declare(&EXTERNAL_SECRET, &self.name);
        }
        Ok(())
    }

    fn label(&self) -> String {
        let entries: Vec<String> = self
            .entries
            .iter()
            .map(|e| format!("{} ← {}{}", e.key, e.remote, e.property.as_deref().map(|p| format!(".{p}")).unwrap_or_default()))
            .collect();
        match self.count {
            Some(count) => format!("apply {count} ExternalSecrets `{}-NNN` [{}]", self.name, entries.join(", ")),
            None => format!("apply ExternalSecret `{}` [{}]", self.name, entries.join(", ")),
        }
    }

    fn run<'a>(&'a self, world: &'a mut World) -> StepFuture<'a> {
        Box::pin(async move {
            let sync = sync(world)?;
            let store = lab::store_ref(NAMESPACE, STORE);
            let entries: Vec<_> = self
                .entries
                .iter()
                .map(|e| {
                    let mut entry = lab::entry(&e.key, &e.remote, &store);
                    if let Some(path) = &e.property {
                        entry.name = None;
                        entry.jmes_path = vec![JmesPathObject { path: path.clone(), object_alias: e.key.clone() }];
                    }
                    entry
                })
                .collect();
            let names = names(&self.name, self.count);
            for name in &names {
                let mut es = lab::external_secret(name, entries.clone());
                es.spec.refresh_interval = self.refresh.map(|d| humantime::format_duration(d.0).to_string());
                lab::apply_external_secret(&sync.admin, NAMESPACE, &es).await.map_err(failed("apply the ExternalSecret"))?;
            }
            let ignored = match (self.refresh, sync.kind()) {
                (Some(_), SyncController::AckSecretManager) => {
                    " (ack-secret-manager ignores `refreshInterval`, an addition of ours: it polls every --polling-interval)"
                }
                _ => "",
            };
            Ok(match self.count {
                Some(count) => format!("{count} ExternalSecrets `{NAMESPACE}/{}-NNN` applied{ignored}", self.name),
                None => format!("ExternalSecret `{NAMESPACE}/{}` applied{ignored}", self.name),
            })
        })
    }
}

/// `restart_secret_sync: {disable_polling}`: stops the controller and starts it again, with
/// `--disable-polling` switched as given (default: unchanged).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestartSecretSync {
    /// Whether the restarted controller polls.
    #[serde(default)]
    pub disable_polling: Option<bool>,
}

impl StepKind for RestartSecretSync {
    fn check(&self, scope: &mut Scope<'_>) -> Result<(), String> {
        scope.runs::<SecretSyncLab>("restart_secret_sync")
    }

    fn label(&self) -> String {
        match self.disable_polling {
            Some(true) => "restart the secret sync controller with --disable-polling".into(),
            Some(false) => "restart the secret sync controller, polling".into(),
            None => "restart the secret sync controller".into(),
        }
    }

    fn run<'a>(&'a self, world: &'a mut World) -> StepFuture<'a> {
        Box::pin(async move {
            let sync = sync(world)?;
            sync.stop_controller().await;
            let disabled = match &mut sync.controller {
                Controller::Ours { config, .. } => {
                    config.disable_polling = self.disable_polling.unwrap_or(config.disable_polling);
                    config.disable_polling
                }
                Controller::Theirs { flags, .. } => {
                    flags.disable_polling = self.disable_polling.unwrap_or(flags.disable_polling);
                    flags.disable_polling
                }
            };
            sync.run_controller(|line: &str| tracing::warn!("{}", line.trim())).await?;
            Ok(format!("{} running again ({})", sync.kind(), if disabled { "polling disabled" } else { "polling" }))
        })
    }
}

/// `secret_sync_access: {allow}`: the controller's access policy in the mock KMS becomes an
/// allow-list of these actions on remote secrets and the key (it starts as GetSecretValue and
/// Decrypt); a call it does not allow answers `Forbidden` and is audited.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretSyncAccess {
    /// The actions it may call (e.g. `[Decrypt]` denies GetSecretValue).
    pub allow: Vec<Action>,
}

impl StepKind for SecretSyncAccess {
    fn check(&self, scope: &mut Scope<'_>) -> Result<(), String> {
        scope.runs::<SecretSyncLab>("secret_sync_access")
    }

    fn label(&self) -> String {
        let allow: Vec<&str> = self.allow.iter().map(|a| a.name()).collect();
        format!("the controller's access policy allows [{}]", allow.join(", "))
    }

    fn run<'a>(&'a self, world: &'a mut World) -> StepFuture<'a> {
        Box::pin(async move {
            let kms = world.stack.mock_kms().ok_or_else(|| StepError::Failed("the stack runs no mock KMS".into()))?;
            kms.set_policy(ACCESS_KEY, &reader_policy(&kms.options.key_id, &self.allow)).await?;
            Ok(format!("policy of `{ACCESS_KEY}` in force on every node"))
        })
    }
}

/// Which of the values put to a remote secret a Secret must hold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Holds {
    /// The value put last.
    #[default]
    Latest,
    /// The value put before the last (a Secret that kept its last good value, or did not poll).
    Previous,
}

/// Condition `synced: {secret, key, remote, holds}`: Secret `secret`'s `key` holds the value put
/// last (or before last) to remote secret `remote`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Synced {
    /// The Secret (the ExternalSecret's name).
    pub secret: String,
    /// The key in it.
    pub key: String,
    /// The remote secret its value comes from.
    pub remote: String,
    /// Which version (default: the latest).
    #[serde(default)]
    pub holds: Holds,
    /// `secret` names `count` Secrets `<secret>-000`, … (an `external_secret` with `count`): every
    /// one must hold it.
    #[serde(default)]
    pub count: Option<usize>,
}

impl ConditionKind for Synced {
    /// Load-time checks: the ExternalSecret was applied and the remote secret put before.
    fn check(&self, scope: &Scope<'_>) -> Result<(), String> {
        scope.runs::<SecretSyncLab>("synced")?;
        scope.declared(&EXTERNAL_SECRET, &self.secret)?;
        scope.declared(&REMOTE_SECRET, &self.remote)
    }

    /// `secret app key password holds the latest value of db`.
    fn label(&self) -> String {
        let which = match self.holds {
            Holds::Latest => "latest",
            Holds::Previous => "previous",
        };
        format!("Secret `{}` key `{}` holds the {which} value put to `{}`", self.secret, self.key, self.remote)
    }

    /// Reads the Secret(s) and names the version held (never the value).
    fn observe<'a>(&'a self, world: &'a mut World, _baseline: u64) -> ObserveFuture<'a> {
        Box::pin(self.look(world))
    }
}

impl Synced {
    async fn look(&self, world: &mut World) -> Seen {
        let Some(sync) = world.components.secret_sync.as_ref() else {
            return Seen::new(false, "the stack runs no secret sync");
        };
        let puts = sync.puts.get(&self.remote).map(Vec::as_slice).unwrap_or_default();
        let wanted = match self.holds {
            Holds::Latest => puts.len().checked_sub(1),
            Holds::Previous => puts.len().checked_sub(2),
        };
        let api: kube::Api<k8s_openapi::api::core::v1::Secret> = kube::Api::namespaced(sync.admin.clone(), NAMESPACE);
        let names = names(&self.secret, self.count);
        // Many Secrets are read with one LIST per observation, not one GET each.
        let mut listed = match self.count {
            Some(_) => match api.list(&kube::api::ListParams::default()).await {
                Ok(list) => {
                    Some(list.items.into_iter().map(|s| (s.metadata.name.clone().unwrap_or_default(), s)).collect::<BTreeMap<_, _>>())
                }
                Err(e) => return Seen::new(false, format!("listing Secrets in `{NAMESPACE}` failed: {e}")),
            },
            None => None,
        };
        let mut holding = 0;
        let mut first_miss = None;
        for name in &names {
            let secret = match listed.as_mut() {
                Some(listed) => listed.remove(name),
                None => match api.get_opt(name).await {
                    Ok(secret) => secret,
                    Err(e) => return Seen::new(false, format!("reading Secret `{name}` failed: {e}")),
                },
            };
            let value = secret.as_ref().and_then(|s| s.data.as_ref()).and_then(|d| d.get(&self.key)).map(|v| v.0.clone());
            let held = value.as_ref().and_then(|v| puts.iter().position(|p| p.as_bytes() == v.as_slice()));
            if wanted.is_some() && held == wanted {
                holding += 1;
                continue;
            }
            let seen = match (&secret, &value, held) {
                (None, _, _) => format!("no Secret `{name}`"),
                (Some(_), None, _) => format!("Secret `{name}` has no key `{}`", self.key),
                (Some(_), Some(v), None) => {
                    format!(
                        "`{name}` key `{}` holds {} bytes that are none of the {} value(s) put to `{}`",
                        self.key,
                        v.len(),
                        puts.len(),
                        self.remote
                    )
                }
                (Some(_), Some(_), Some(index)) => {
                    format!("`{name}` key `{}` holds version {} of {} put to `{}`", self.key, index + 1, puts.len(), self.remote)
                }
            };
            first_miss.get_or_insert(seen);
            if self.count.is_none() {
                break;
            }
        }
        let version = wanted.map_or("no version".to_owned(), |w| format!("version {} of {}", w + 1, puts.len()));
        let text = match (first_miss, self.count) {
            (None, None) => format!("key `{}` holds {version} put to `{}`", self.key, self.remote),
            (None, Some(count)) => format!("all {count} Secrets hold {version} put to `{}`", self.remote),
            (Some(miss), None) => miss,
            (Some(miss), Some(count)) => format!("{holding} of {count} Secrets hold {version}; e.g. {miss}"),
        };
        Seen::new(holding == names.len(), text)
    }
}

/// A `Ready` reason of an ExternalSecret, as the controller names it (`StoreUnavailable`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReasonName(pub Reason);

impl<'de> Deserialize<'de> for ReasonName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Reason::from_name(&text).map(ReasonName).ok_or_else(|| {
            let known: Vec<&str> = Reason::ALL.iter().map(|r| r.name()).collect();
            serde::de::Error::custom(format!("unknown reason `{text}`: expected one of {}", known.join(", ")))
        })
    }
}

/// Condition `external_secret: {name, ready, reason}`: ExternalSecret `name`'s `Ready` condition.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExternalSecretReady {
    /// The ExternalSecret.
    pub name: String,
    /// `Ready` must be `True` (true) or `False` (false).
    pub ready: bool,
    /// And its reason must be this.
    #[serde(default)]
    pub reason: Option<ReasonName>,
}

impl ConditionKind for ExternalSecretReady {
    /// Load-time checks: the ExternalSecret was applied before.
    fn check(&self, scope: &Scope<'_>) -> Result<(), String> {
        scope.runs::<SecretSyncLab>("external_secret")?;
        scope.declared(&EXTERNAL_SECRET, &self.name)
    }

    /// `ExternalSecret app Ready=False (StoreUnavailable)`.
    fn label(&self) -> String {
        let reason = self.reason.map(|r| format!(" ({})", r.0)).unwrap_or_default();
        format!("ExternalSecret `{}` Ready={}{reason}", self.name, if self.ready { "True" } else { "False" })
    }

    /// Reads the ExternalSecret's status.
    fn observe<'a>(&'a self, world: &'a mut World, _baseline: u64) -> ObserveFuture<'a> {
        Box::pin(self.look(world))
    }

    /// ack-secret-manager writes no status (its `ExternalSecretStatus` has no field) and no Event.
    fn unobservable(&self, world: &World) -> Option<String> {
        world.components.secret_sync.as_ref().filter(|sync| sync.kind() == SyncController::AckSecretManager).map(|_| {
            "ack-secret-manager writes no status and no Event on an ExternalSecret (its ExternalSecretStatus has no field): \
             whether it is Ready, and why not, cannot be seen"
                .to_owned()
        })
    }
}

impl ExternalSecretReady {
    async fn look(&self, world: &mut World) -> Seen {
        let Some(sync) = world.components.secret_sync.as_ref() else {
            return Seen::new(false, "the stack runs no secret sync");
        };
        let api: kube::Api<kms_secret_sync::crd::ExternalSecret> = kube::Api::namespaced(sync.admin.clone(), NAMESPACE);
        let status = match api.get_opt(&self.name).await {
            Ok(Some(es)) => es.status.unwrap_or_default(),
            Ok(None) => return Seen::new(false, format!("no ExternalSecret `{}`", self.name)),
            Err(e) => return Seen::new(false, format!("reading ExternalSecret `{}` failed: {e}", self.name)),
        };
        let Some(ready) = status.ready() else {
            return Seen::new(false, "no Ready condition yet");
        };
        let want = if self.ready { "True" } else { "False" };
        let ok = ready.status == want && self.reason.is_none_or(|r| ready.reason == r.0.name());
        Seen::new(ok, format!("Ready={} reason={}: {}", ready.status, ready.reason, ready.message))
    }
}
