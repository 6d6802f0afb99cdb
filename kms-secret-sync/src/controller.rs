//! The controller on `kube::runtime::Controller`: watches ExternalSecrets (spec changes and
//! deletions, not status writes) and the Secrets it manages, reads the remote secrets through a
//! rate-limited [`StoreClient`], carries out [`crate::decide`]'s decisions, and reports in the
//! status, in Events and in [`Metrics`]. A finalizer deletes (or, with `deletionPolicy: Retain`,
//! releases) the Secret when its ExternalSecret goes, so no garbage collector is needed.

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{self, Event as FinalizerEvent};
use kube::runtime::{Controller, PredicateConfig, WatchStreamExt, reflector, watcher};
use kube::{Client, Resource, ResourceExt};
use rand::Rng;

use crate::crd::{
    ALLOW_NAMESPACES, CONDITION_READY, Condition, DeletionPolicy, ExternalSecret, ExternalSecretStatus, FINALIZER, SecretRef, SecretStore,
    SecretStoreRef, SyncedVersion,
};
use crate::decide::{self, CurrentSecret, Decision, Failure, Fetched, PlannedSource, Reason, Retry, SecretShape};
use crate::error::{Error, StoreError};
use crate::metrics::Metrics;
use crate::store::{StoreClient, StoreCredential};

/// The field manager of the controller's writes, and its name in Events.
pub const MANAGER: &str = "kms-secret-sync";
/// The label on every Secret the controller writes (and the selector of its Secret watch).
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "kms-secret-sync");

/// How the controller runs; [`ControllerConfig::default`] is the binary's defaults, which are
/// ack-secret-manager's (its `cmd/manager/main.go` flags).
#[derive(Clone, Debug)]
pub struct ControllerConfig {
    /// `--watch-namespaces`: ExternalSecrets in these namespaces only; all when empty (one
    /// namespace: a Role there suffices).
    pub watch_namespaces: Vec<String>,
    /// `--exclude-namespaces`: never these namespaces.
    pub exclude_namespaces: Vec<String>,
    /// `--polling-interval`: how often an ExternalSecret without `refreshInterval` is read again (120 s).
    pub polling_interval: Duration,
    /// `--disable-polling`: read remote secrets only when an ExternalSecret (or its Secret) changes, or at start.
    pub disable_polling: bool,
    /// `--reconcile-period`: the first retry after a failed sync (5 s); doubled per failure,
    /// jittered, capped at the polling interval.
    pub reconcile_period: Duration,
    /// `--reconcile-count`: reconciles running at once (1).
    pub reconcile_count: u16,
    /// `--kms-endpoint`: the store every SecretStore reads from (`http://host:port`; a bare host
    /// means `https://`, as Alibaba's SDK takes it).
    pub kms_endpoint: Option<String>,
    /// The controller's own credential, for entries without `secretStoreRef` (`ACCESS_KEY_ID`,
    /// `SECRET_ACCESS_KEY`).
    pub credential: Option<StoreCredential>,
    /// `--max-concurrent-kms-secret-pulls`: calls to the store per second, over all ExternalSecrets (10).
    pub max_concurrent_kms_secret_pulls: NonZeroU32,
    /// `--store-burst` (ours): calls to the store allowed in a burst (1, as ack-secret-manager's limiter).
    pub store_burst: NonZeroU32,
    /// `--store-timeout` (ours): the deadline of one store call (5 s).
    pub store_timeout: Duration,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        Self {
            watch_namespaces: Vec::new(),
            exclude_namespaces: Vec::new(),
            polling_interval: Duration::from_secs(120),
            disable_polling: false,
            reconcile_period: Duration::from_secs(5),
            reconcile_count: 1,
            kms_endpoint: None,
            credential: None,
            max_concurrent_kms_secret_pulls: NonZeroU32::new(10).unwrap_or(NonZeroU32::MIN),
            store_burst: NonZeroU32::MIN,
            store_timeout: Duration::from_secs(5),
        }
    }
}

impl ControllerConfig {
    /// Whether ExternalSecrets in `namespace` are this controller's.
    pub fn watches(&self, namespace: &str) -> bool {
        (self.watch_namespaces.is_empty() || self.watch_namespaces.iter().any(|n| n == namespace))
            && !self.exclude_namespaces.iter().any(|n| n == namespace)
    }

    /// The one namespace watched, when there is exactly one (so namespaced watches suffice).
    fn single_namespace(&self) -> Option<&str> {
        match self.watch_namespaces.as_slice() {
            [one] => Some(one),
            _ => None,
        }
    }
}

/// Changes to one object within this time are coalesced into one reconcile.
const DEBOUNCE: Duration = Duration::from_millis(200);

/// The store URL for `--kms-endpoint` (a bare host, as Alibaba's SDK takes it, means `https://`).
fn endpoint_url(endpoint: &str) -> String {
    if endpoint.contains("://") { endpoint.to_owned() } else { format!("https://{endpoint}") }
}

/// The jittered exponential backoff after `failures` consecutive store errors: `base · 2^(n-1)`
/// capped at `cap`, times a random factor in [0.5, 1).
pub fn backoff(failures: u32, base: Duration, cap: Duration, jitter: f64) -> Duration {
    let exponent = failures.saturating_sub(1).min(20);
    let raw = base.saturating_mul(1u32 << exponent).min(cap);
    raw.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
}

/// What every reconcile shares.
struct Context {
    client: Client,
    config: ControllerConfig,
    metrics: Arc<Metrics>,
    limiter: DefaultDirectRateLimiter,
    http: reqwest::Client,
    recorder: Recorder,
    /// Consecutive store failures per ExternalSecret (`namespace/name`), for the backoff.
    failures: Mutex<HashMap<String, u32>>,
    /// The last successful sync per ExternalSecret, so that the reconcile its own Secret write
    /// triggers does not read the store again.
    synced: Mutex<HashMap<String, LastSync>>,
    /// `--reconcile-count` permits: reconciles running at once. (kube-runtime's own
    /// `concurrency(1)` left objects queued behind a finished reconcile until the next watch
    /// event — 11 of 12 new ExternalSecrets waited in `tests/real_stack.rs` — so the limit is kept here.)
    permits: tokio::sync::Semaphore,
}

/// What a successful sync left behind.
#[derive(Debug, Clone, Copy)]
struct LastSync {
    /// The ExternalSecret's spec generation it synced.
    generation: Option<i64>,
    /// When.
    at: Instant,
    /// A fingerprint of the Secret's data after it (in memory only; never logged).
    data: u64,
}

fn fingerprint(data: &BTreeMap<String, Vec<u8>>) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    data.hash(&mut hasher);
    hasher.finish()
}

/// When the reconcile is only the echo of the controller's own last sync (same spec generation,
/// the Secret's data as it left it, nothing due yet: always so with `--disable-polling`), the
/// action that waits for the next due time — without a store call. Any other change (spec,
/// Secret data, a deleted Secret, a restart) reads the store.
fn echo_of_last_sync(es: &ExternalSecret, ctx: &Context, current: Option<&CurrentSecret>, refresh: Duration) -> Option<Action> {
    let last = *ctx.synced.lock().unwrap_or_else(|p| p.into_inner()).get(&key_of(es))?;
    let current = current?;
    if last.generation != es.meta().generation || last.data != fingerprint(&current.data) {
        return None;
    }
    if ctx.config.disable_polling {
        return Some(Action::await_change());
    }
    let due_in = refresh.checked_sub(last.at.elapsed()).filter(|left| *left > Duration::from_millis(50))?;
    Some(Action::requeue(due_in))
}

fn key_of(es: &ExternalSecret) -> String {
    format!("{}/{}", es.namespace().unwrap_or_default(), es.name_any())
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// The Secret an ExternalSecret writes: its own name, `spec.type` (default `Opaque`), [`MANAGED_BY`].
pub fn shape_of(es: &ExternalSecret) -> SecretShape {
    SecretShape {
        name: es.name_any(),
        type_: es.spec.type_.clone().filter(|t| !t.is_empty()).unwrap_or_else(|| "Opaque".to_owned()),
        labels: [(MANAGED_BY.0.to_owned(), MANAGED_BY.1.to_owned())].into(),
    }
}

fn current_of(secret: &Secret, es: &ExternalSecret) -> CurrentSecret {
    let uid = es.uid();
    CurrentSecret {
        owned: secret.owner_references().iter().any(|o| Some(&o.uid) == uid.as_ref()),
        data: secret.data.clone().unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)).collect(),
        type_: secret.type_.clone().unwrap_or_else(|| "Opaque".to_owned()),
        labels: secret.labels().clone(),
    }
}

/// Runs the controller until `shutdown` completes.
pub async fn run(
    client: Client,
    config: ControllerConfig,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let (es_api, secret_api): (Api<ExternalSecret>, Api<Secret>) = match config.single_namespace() {
        Some(ns) => (Api::namespaced(client.clone(), ns), Api::namespaced(client.clone(), ns)),
        None => (Api::all(client.clone()), Api::all(client.clone())),
    };
    let burst = config.store_burst;
    let context = Arc::new(Context {
        limiter: RateLimiter::direct(Quota::per_second(config.max_concurrent_kms_secret_pulls).allow_burst(burst)),
        http: reqwest::Client::builder().build().unwrap_or_default(),
        recorder: Recorder::new(client.clone(), Reporter { controller: MANAGER.to_owned(), instance: std::env::var("POD_NAME").ok() }),
        failures: Mutex::default(),
        synced: Mutex::default(),
        permits: tokio::sync::Semaphore::new(usize::from(config.reconcile_count.max(1))),
        client,
        metrics,
        config: config.clone(),
    });
    let (reader, writer) = reflector::store();
    // Spec changes, deletions and finalizer changes trigger a reconcile; the controller's own
    // status writes do not.
    let relevant = |es: &ExternalSecret| {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        (es.meta().generation, es.meta().deletion_timestamp.is_some(), es.finalizers()).hash(&mut hasher);
        Some(hasher.finish())
    };
    let trigger = watcher(es_api, watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .applied_objects()
        .predicate_filter(relevant, PredicateConfig::default());
    let selector = format!("{}={}", MANAGED_BY.0, MANAGED_BY.1);
    let controller_config = kube::runtime::controller::Config::default().debounce(DEBOUNCE);
    Controller::for_stream(trigger, reader)
        .owns(secret_api, watcher::Config::default().labels(&selector))
        .with_config(controller_config)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, context)
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::warn!(%error, "reconcile failed");
            }
        })
        .await;
}

async fn reconcile(es: Arc<ExternalSecret>, ctx: Arc<Context>) -> Result<Action, Error> {
    let namespace = es.namespace().ok_or_else(|| Error::Invalid(format!("ExternalSecret `{}` has no namespace", es.name_any())))?;
    if !ctx.config.watches(&namespace) {
        return Ok(Action::await_change());
    }
    let _permit = ctx.permits.acquire().await.map_err(|_| Error::Invalid("the controller is shutting down".into()))?;
    let api: Api<ExternalSecret> = Api::namespaced(ctx.client.clone(), &namespace);
    finalizer::finalizer(&api, FINALIZER, es, |event| async {
        match event {
            FinalizerEvent::Apply(es) => apply(&es, &ctx).await,
            FinalizerEvent::Cleanup(es) => cleanup(&es, &ctx).await,
        }
    })
    .await
    .map_err(|error| Error::Invalid(format!("finalizer `{FINALIZER}`: {error}")))
}

/// Counts one more consecutive failure of `es`; the count.
fn failed_once(ctx: &Context, es: &ExternalSecret) -> u32 {
    let mut map = ctx.failures.lock().unwrap_or_else(|p| p.into_inner());
    let count = map.entry(key_of(es)).or_default();
    *count += 1;
    *count
}

fn error_policy(es: Arc<ExternalSecret>, error: &Error, ctx: Arc<Context>) -> Action {
    let delay = backoff(failed_once(&ctx, &es), ctx.config.reconcile_period, ctx.config.polling_interval, rand::thread_rng().r#gen());
    tracing::warn!(external_secret = %key_of(&es), %error, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// How often `es` is read again.
fn refresh_interval(es: &ExternalSecret, config: &ControllerConfig) -> Duration {
    es.spec.refresh_interval.as_deref().and_then(|text| humantime::parse_duration(text).ok()).unwrap_or(config.polling_interval)
}

async fn apply(es: &ExternalSecret, ctx: &Context) -> Result<Action, Error> {
    let started = Instant::now();
    let namespace = es.namespace().unwrap_or_default();
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let shape = shape_of(es);
    let current = secrets.get_opt(&shape.name).await.map_err(Error::kube(format!("read Secret `{namespace}/{}`", shape.name)))?;
    let current = current.as_ref().map(|s| current_of(s, es));
    let refresh = refresh_interval(es, &ctx.config);
    if let Some(action) = echo_of_last_sync(es, ctx, current.as_ref(), refresh) {
        ctx.metrics.sync("unchanged", started.elapsed());
        return Ok(action);
    }

    let decision = match decide_for(es, ctx, &namespace, current.as_ref(), &shape).await? {
        Ok(decision) => decision,
        Err(failure) => Decision::Keep(failure),
    };
    let action = match decision {
        Decision::Write { data, versions } => {
            let written = fingerprint(&data);
            write_secret(&secrets, es, &shape, data, decide::needs_recreate(current.as_ref(), &shape)).await?;
            remember_sync(ctx, es, written);
            let message = format!("{} sources synced into Secret `{}`", versions.len(), shape.name);
            publish(ctx, es, EventType::Normal, Reason::Synced, &message).await;
            set_status(ctx, es, true, Reason::Synced, &message, Some(versions)).await?;
            ctx.metrics.sync("written", started.elapsed());
            succeeded(ctx, es, refresh)
        }
        Decision::UpToDate { versions } => {
            if let Some(current) = &current {
                remember_sync(ctx, es, fingerprint(&current.data));
            }
            let message = format!("{} sources synced into Secret `{}`", versions.len(), shape.name);
            set_status(ctx, es, true, Reason::Synced, &message, Some(versions)).await?;
            ctx.metrics.sync("unchanged", started.elapsed());
            succeeded(ctx, es, refresh)
        }
        Decision::Keep(failure) => {
            ctx.synced.lock().unwrap_or_else(|p| p.into_inner()).remove(&key_of(es));
            publish(ctx, es, EventType::Warning, failure.reason, &failure.message).await;
            set_status(ctx, es, false, failure.reason, &failure.message, None).await?;
            ctx.metrics.sync("failed", started.elapsed());
            ctx.metrics.error(failure.reason.name());
            let failures = failed_once(ctx, es);
            let delay = match failure.reason.retry() {
                Retry::Backoff => backoff(failures, ctx.config.reconcile_period, refresh, rand::thread_rng().r#gen()),
                Retry::Poll => refresh,
            };
            tracing::info!(external_secret = %key_of(es), reason = %failure.reason, retry_in = ?delay, "sync failed; the Secret is kept");
            Action::requeue(delay)
        }
    };
    Ok(action)
}

fn remember_sync(ctx: &Context, es: &ExternalSecret, data: u64) {
    let last = LastSync { generation: es.meta().generation, at: Instant::now(), data };
    ctx.synced.lock().unwrap_or_else(|p| p.into_inner()).insert(key_of(es), last);
}

fn succeeded(ctx: &Context, es: &ExternalSecret, refresh: Duration) -> Action {
    ctx.failures.lock().unwrap_or_else(|p| p.into_inner()).remove(&key_of(es));
    if ctx.config.disable_polling { Action::await_change() } else { Action::requeue(refresh) }
}

/// Plans, resolves each store and reads every source; `Ok(Err(failure))` when the spec or a
/// store is unusable (no store call was made then).
async fn decide_for(
    es: &ExternalSecret,
    ctx: &Context,
    namespace: &str,
    current: Option<&CurrentSecret>,
    shape: &SecretShape,
) -> Result<Result<Decision, Failure>, Error> {
    let sources = match decide::plan(&es.spec) {
        Ok(sources) => sources,
        Err(failure) => return Ok(Err(failure)),
    };
    if let Some(failure) = decide::conflict(current, shape) {
        return Ok(Err(failure));
    }
    let mut stores: BTreeMap<Option<SecretStoreRef>, StoreClient> = BTreeMap::new();
    for source in &sources {
        if !stores.contains_key(&source.store) {
            match store_client(source, ctx, namespace).await? {
                Ok(store) => stores.insert(source.store.clone(), store),
                Err(failure) => return Ok(Err(failure)),
            };
        }
    }
    let mut answers = Vec::with_capacity(sources.len());
    for source in &sources {
        let store = &stores[&source.store];
        ctx.limiter.until_ready().await;
        let answer = store.get_secret_value(&source.key, source.version_id.as_deref(), source.stage.clone()).await;
        ctx.metrics.store_call("GetSecretValue", answer.as_ref().map(|_| "Ok").unwrap_or_else(StoreError::outcome));
        answers.push(answer.map(|r| Fetched { version_id: r.version_id, value: zeroize::Zeroizing::new(r.secret_data) }));
    }
    Ok(Ok(decide::decide(&sources, &answers, current, shape)))
}

/// The store client `source` reads with — its SecretStore's access key, or the controller's own
/// credential when it names no store —, or why there is none.
async fn store_client(source: &PlannedSource, ctx: &Context, namespace: &str) -> Result<Result<StoreClient, Failure>, Error> {
    let misconfigured = |message: String| Ok(Err(Failure::new(Reason::StoreMisconfigured, message)));
    let Some(endpoint) = ctx.config.kms_endpoint.as_deref().filter(|e| !e.is_empty()).map(endpoint_url) else {
        return misconfigured(format!(
            "{}: the controller has no --kms-endpoint (Alibaba's public endpoints are not reachable from the lab): start it with --kms-endpoint",
            source.field
        ));
    };
    let http = ctx.http.clone();
    let Some(reference) = &source.store else {
        return match &ctx.config.credential {
            Some(credential) => Ok(Ok(StoreClient::new(http, &endpoint, credential.clone(), ctx.config.store_timeout))),
            None => misconfigured(format!(
                "{}.secretStoreRef: none given and the controller has no credential of its own (ACCESS_KEY_ID and SECRET_ACCESS_KEY; a worker role needs ECS metadata, which the lab does not serve): name a SecretStore",
                source.field
            )),
        };
    };
    let store = Api::<SecretStore>::namespaced(ctx.client.clone(), &reference.namespace)
        .get_opt(&reference.name)
        .await
        .map_err(Error::kube(format!("read SecretStore `{}/{}`", reference.namespace, reference.name)))?;
    let Some(store) = store else {
        return Ok(Err(Failure::new(
            Reason::StoreNotFound,
            format!(
                "{}.secretStoreRef: there is no SecretStore `{}` in namespace `{}`: create it, or fix the name and namespace",
                source.field, reference.name, reference.namespace
            ),
        )));
    };
    if reference.namespace != namespace && !allows(&store, namespace) {
        return Ok(Err(Failure::new(
            Reason::StoreNotAllowed,
            format!(
                "{}.secretStoreRef: SecretStore `{}/{}` does not allow ExternalSecrets of namespace `{namespace}`: its owner may annotate it {ALLOW_NAMESPACES}: \"{namespace}\" (or \"*\")",
                source.field, reference.namespace, reference.name
            ),
        )));
    }
    let what = format!("SecretStore `{}/{}`", reference.namespace, reference.name);
    let Some(kms) = &store.spec.kms else {
        return misconfigured(format!("{what} has no spec.KMS (spec.OOS is not served by the lab): give spec.KMS.KMSAuth"));
    };
    if kms.dedicated.is_some() {
        return misconfigured(format!(
            "{what} spec.KMS.dedicatedKMSAuth: a dedicated KMS gateway is not served by the lab: use spec.KMS.KMSAuth with an access key"
        ));
    }
    let auth = kms.auth.clone().unwrap_or_default();
    let (Some(access_key), Some(access_key_secret)) = (&auth.access_key, &auth.access_key_secret) else {
        let role = auth.ram_role_arn.is_some() || auth.oidc_provider_arn.is_some() || auth.remote_ram_role_arn.is_some();
        let why = if role { "RAM roles (and RRSA) need Alibaba's STS, which the lab does not serve" } else { "no access key is given" };
        return misconfigured(format!("{what} spec.KMS.KMSAuth: {why}: give accessKey and accessKeySecret"));
    };
    let store_namespace = &reference.namespace;
    let access_key = read_secret_key(ctx, access_key, store_namespace).await?;
    let secret_key = read_secret_key(ctx, access_key_secret, store_namespace).await?;
    match (access_key, secret_key) {
        (Ok(access_key), Ok(secret_key)) => {
            Ok(Ok(StoreClient::new(http, &endpoint, StoreCredential::new(access_key, secret_key), ctx.config.store_timeout)))
        }
        (Err(problem), _) | (_, Err(problem)) => misconfigured(format!("{what} spec.KMS.KMSAuth: {problem}")),
    }
}

/// Whether `store` lets ExternalSecrets of `namespace` use it (its [`ALLOW_NAMESPACES`] annotation).
fn allows(store: &SecretStore, namespace: &str) -> bool {
    store.annotations().get(ALLOW_NAMESPACES).is_some_and(|list| list.split(',').map(str::trim).any(|n| n == "*" || n == namespace))
}

/// One key of a credential Secret, or what is wrong with the reference. Credentials are read in
/// the store's own namespace only (ack-secret-manager reads any namespace's Secrets).
async fn read_secret_key(ctx: &Context, reference: &SecretRef, store_namespace: &str) -> Result<Result<String, String>, Error> {
    if reference.namespace != store_namespace {
        return Ok(Err(format!(
            "credential Secret `{}/{}` is outside the store's namespace `{store_namespace}`: keep the credential beside the SecretStore",
            reference.namespace, reference.name
        )));
    }
    let secret = match Api::<Secret>::namespaced(ctx.client.clone(), store_namespace).get_opt(&reference.name).await {
        Ok(secret) => secret,
        Err(kube::Error::Api(status)) if status.code == 403 => {
            return Ok(Err(format!(
                "the controller may not read Secrets in namespace `{store_namespace}`: grant it (kms-secret-sync rbac --namespace {store_namespace})"
            )));
        }
        Err(error) => return Err(Error::kube(format!("read credential Secret `{store_namespace}/{}`", reference.name))(error)),
    };
    let Some(secret) = secret else {
        return Ok(Err(format!("credential Secret `{store_namespace}/{}` does not exist", reference.name)));
    };
    let value = secret.data.as_ref().and_then(|d| d.get(&reference.key)).map(|v| String::from_utf8_lossy(&v.0).trim().to_owned());
    Ok(value.ok_or_else(|| format!("credential Secret `{store_namespace}/{}` has no key `{}`", reference.name, reference.key)))
}

async fn write_secret(
    secrets: &Api<Secret>,
    es: &ExternalSecret,
    shape: &SecretShape,
    data: BTreeMap<String, Vec<u8>>,
    recreate: bool,
) -> Result<(), Error> {
    let what = format!("write Secret `{}/{}`", es.namespace().unwrap_or_default(), shape.name);
    if recreate {
        secrets
            .delete(&shape.name, &DeleteParams::default())
            .await
            .map_err(Error::kube(format!("delete Secret `{}` to change its type", shape.name)))?;
    }
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(shape.name.clone()),
            namespace: es.namespace(),
            labels: Some(shape.labels.clone()),
            owner_references: es.controller_owner_ref(&()).map(|o| vec![o]),
            ..Default::default()
        },
        data: Some(data.into_iter().map(|(k, v)| (k, ByteString(v))).collect()),
        type_: Some(shape.type_.clone()),
        ..Default::default()
    };
    secrets.patch(&shape.name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&secret)).await.map_err(Error::kube(what))?;
    Ok(())
}

async fn set_status(
    ctx: &Context,
    es: &ExternalSecret,
    ready: bool,
    reason: Reason,
    message: &str,
    versions: Option<Vec<SyncedVersion>>,
) -> Result<(), Error> {
    let old = es.status.clone().unwrap_or_default();
    let status_text = if ready { "True" } else { "False" };
    let transition = match old.ready() {
        Some(c) if c.status == status_text && c.reason == reason.name() => c.last_transition_time.clone(),
        _ => now_rfc3339(),
    };
    let status = ExternalSecretStatus {
        conditions: vec![Condition {
            type_: CONDITION_READY.to_owned(),
            status: status_text.to_owned(),
            reason: reason.name().to_owned(),
            message: message.to_owned(),
            last_transition_time: transition,
        }],
        last_sync_time: if ready { Some(now_rfc3339()) } else { old.last_sync_time.clone() },
        synced_versions: versions.unwrap_or(old.synced_versions),
        observed_generation: es.meta().generation,
    };
    let api: Api<ExternalSecret> = Api::namespaced(ctx.client.clone(), &es.namespace().unwrap_or_default());
    let patch = serde_json::json!({ "status": status });
    api.patch_status(&es.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(Error::kube(format!("update the status of ExternalSecret `{}`", key_of(es))))?;
    Ok(())
}

async fn publish(ctx: &Context, es: &ExternalSecret, type_: EventType, reason: Reason, message: &str) {
    let event = Event {
        type_,
        reason: reason.name().to_owned(),
        note: Some(message.chars().take(1000).collect()),
        action: "Sync".to_owned(),
        secondary: None,
    };
    if let Err(error) = ctx.recorder.publish(&event, &es.object_ref(&())).await {
        tracing::warn!(external_secret = %key_of(es), %error, "cannot publish an event");
    }
}

/// The finalizer's cleanup: `Delete` deletes the Secret if it is this ExternalSecret's;
/// `Retain` drops the owner reference so nothing deletes it later.
async fn cleanup(es: &ExternalSecret, ctx: &Context) -> Result<Action, Error> {
    let namespace = es.namespace().unwrap_or_default();
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let shape = shape_of(es);
    ctx.failures.lock().unwrap_or_else(|p| p.into_inner()).remove(&key_of(es));
    let Some(secret) = secrets.get_opt(&shape.name).await.map_err(Error::kube(format!("read Secret `{namespace}/{}`", shape.name)))? else {
        return Ok(Action::await_change());
    };
    if !current_of(&secret, es).owned {
        return Ok(Action::await_change());
    }
    match es.spec.deletion_policy.unwrap_or_default() {
        DeletionPolicy::Delete => {
            secrets
                .delete(&shape.name, &DeleteParams::default())
                .await
                .map_err(Error::kube(format!("delete Secret `{namespace}/{}`", shape.name)))?;
            tracing::info!(external_secret = %key_of(es), secret = %shape.name, "deleted the Secret with its ExternalSecret");
        }
        DeletionPolicy::Retain => {
            let uid = es.uid();
            let kept: Vec<_> = secret.owner_references().iter().filter(|o| Some(&o.uid) != uid.as_ref()).cloned().collect();
            let patch = serde_json::json!({ "metadata": { "ownerReferences": kept } });
            secrets
                .patch(&shape.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(Error::kube(format!("release Secret `{namespace}/{}`", shape.name)))?;
            tracing::info!(external_secret = %key_of(es), secret = %shape.name, "kept the Secret (deletionPolicy: Retain)");
        }
    }
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_is_jittered_and_capped() {
        let base = Duration::from_secs(1);
        let cap = Duration::from_secs(30);
        assert_eq!(backoff(1, base, cap, 1.0), Duration::from_secs(1));
        assert_eq!(backoff(1, base, cap, 0.0), Duration::from_millis(500));
        assert_eq!(backoff(4, base, cap, 1.0), Duration::from_secs(8));
        assert_eq!(backoff(40, base, cap, 1.0), cap);
        assert!(backoff(3, base, cap, 0.3) < backoff(3, base, cap, 0.9));
    }
}
