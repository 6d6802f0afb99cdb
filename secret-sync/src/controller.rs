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
    CONDITION_READY, ClusterSecretStore, Condition, DeletionPolicy, ExternalSecret, ExternalSecretStatus, FINALIZER, KmsProvider,
    SecretKeyRef, SecretStore, StoreKind, SyncedVersion,
};
use crate::decide::{self, CurrentSecret, Decision, Failure, Fetched, Reason, Retry, SecretShape};
use crate::error::{Error, StoreError};
use crate::metrics::Metrics;
use crate::store::{StoreClient, StoreCredential};

/// The field manager of the controller's writes, and its name in Events.
pub const MANAGER: &str = "kms-secret-sync";
/// The label on every Secret the controller writes (and the selector of its Secret watch).
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "kms-secret-sync");

/// How the controller runs; [`ControllerConfig::default`] is the binary's defaults.
#[derive(Clone, Debug)]
pub struct ControllerConfig {
    /// Watch ExternalSecrets in this namespace only (a Role suffices); all namespaces when `None`.
    pub namespace: Option<String>,
    /// How often an ExternalSecret without `refreshInterval` is read again (120 s).
    pub polling_interval: Duration,
    /// Read remote secrets only when an ExternalSecret (or its Secret) changes, or at start.
    pub disable_polling: bool,
    /// At most one reconcile of an object per period: changes within it are coalesced (1 s).
    pub reconcile_period: Duration,
    /// Reconciles running at once (4).
    pub max_concurrent_reconciles: u16,
    /// The store endpoint for stores that name none.
    pub store_endpoint: Option<String>,
    /// The credential for stores that name none.
    pub credential: Option<StoreCredential>,
    /// Calls to the store per second, over all ExternalSecrets (10).
    pub store_qps: NonZeroU32,
    /// Calls to the store allowed in a burst (20).
    pub store_burst: NonZeroU32,
    /// The deadline of one store call (5 s).
    pub store_timeout: Duration,
    /// The first retry delay after a store error (1 s); doubled per failure, jittered, capped at
    /// the polling interval.
    pub backoff_base: Duration,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        Self {
            namespace: None,
            polling_interval: Duration::from_secs(120),
            disable_polling: false,
            reconcile_period: Duration::from_secs(1),
            max_concurrent_reconciles: 4,
            store_endpoint: None,
            credential: None,
            store_qps: NonZeroU32::new(10).unwrap_or(NonZeroU32::MIN),
            store_burst: NonZeroU32::new(20).unwrap_or(NonZeroU32::MIN),
            store_timeout: Duration::from_secs(5),
            backoff_base: Duration::from_secs(1),
        }
    }
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

/// The Secret an ExternalSecret writes: name, type, labels (with [`MANAGED_BY`]) and annotations.
pub fn shape_of(es: &ExternalSecret) -> SecretShape {
    let target = es.spec.target.clone().unwrap_or_default();
    let mut labels = target.labels;
    labels.insert(MANAGED_BY.0.to_owned(), MANAGED_BY.1.to_owned());
    SecretShape {
        name: target.name.unwrap_or_else(|| es.name_any()),
        type_: target.type_.unwrap_or_else(|| "Opaque".to_owned()),
        labels,
        annotations: target.annotations,
    }
}

fn current_of(secret: &Secret, es: &ExternalSecret) -> CurrentSecret {
    let uid = es.uid();
    CurrentSecret {
        owned: secret.owner_references().iter().any(|o| Some(&o.uid) == uid.as_ref()),
        data: secret.data.clone().unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)).collect(),
        type_: secret.type_.clone().unwrap_or_else(|| "Opaque".to_owned()),
        labels: secret.labels().clone(),
        annotations: secret.annotations().clone(),
    }
}

/// Runs the controller until `shutdown` completes.
pub async fn run(
    client: Client,
    config: ControllerConfig,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let (es_api, secret_api): (Api<ExternalSecret>, Api<Secret>) = match &config.namespace {
        Some(ns) => (Api::namespaced(client.clone(), ns), Api::namespaced(client.clone(), ns)),
        None => (Api::all(client.clone()), Api::all(client.clone())),
    };
    let burst = config.store_burst;
    let context = Arc::new(Context {
        limiter: RateLimiter::direct(Quota::per_second(config.store_qps).allow_burst(burst)),
        http: reqwest::Client::builder().build().unwrap_or_default(),
        recorder: Recorder::new(client.clone(), Reporter { controller: MANAGER.to_owned(), instance: std::env::var("POD_NAME").ok() }),
        failures: Mutex::default(),
        synced: Mutex::default(),
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
    let controller_config =
        kube::runtime::controller::Config::default().debounce(config.reconcile_period).concurrency(config.max_concurrent_reconciles);
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

fn error_policy(es: Arc<ExternalSecret>, error: &Error, ctx: Arc<Context>) -> Action {
    let failures = {
        let mut map = ctx.failures.lock().unwrap_or_else(|p| p.into_inner());
        let count = map.entry(key_of(&es)).or_default();
        *count += 1;
        *count
    };
    let delay = backoff(failures, ctx.config.backoff_base, ctx.config.polling_interval, rand::thread_rng().r#gen());
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
            let message = format!("{} entries synced into Secret `{}`", versions.len(), shape.name);
            publish(ctx, es, EventType::Normal, Reason::Synced, &message).await;
            set_status(ctx, es, true, Reason::Synced, &message, Some(versions)).await?;
            ctx.metrics.sync("written", started.elapsed());
            succeeded(ctx, es, refresh)
        }
        Decision::UpToDate { versions } => {
            if let Some(current) = &current {
                remember_sync(ctx, es, fingerprint(&current.data));
            }
            let message = format!("{} entries synced into Secret `{}`", versions.len(), shape.name);
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
            let failures = {
                let mut map = ctx.failures.lock().unwrap_or_else(|p| p.into_inner());
                let count = map.entry(key_of(es)).or_default();
                *count += 1;
                *count
            };
            let delay = match failure.reason.retry() {
                Retry::Backoff => backoff(failures, ctx.config.backoff_base, refresh, rand::thread_rng().r#gen()),
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

/// Plans, resolves the store and reads every entry; `Ok(Err(failure))` when the spec or the
/// store is unusable (no store call was made then).
async fn decide_for(
    es: &ExternalSecret,
    ctx: &Context,
    namespace: &str,
    current: Option<&CurrentSecret>,
    shape: &SecretShape,
) -> Result<Result<Decision, Failure>, Error> {
    let entries = match decide::plan(&es.spec) {
        Ok(entries) => entries,
        Err(failure) => return Ok(Err(failure)),
    };
    if let Some(failure) = decide::conflict(current, shape) {
        return Ok(Err(failure));
    }
    let store = match store_client(es, ctx, namespace).await? {
        Ok(store) => store,
        Err(failure) => return Ok(Err(failure)),
    };
    let mut answers = Vec::with_capacity(entries.len());
    for entry in &entries {
        ctx.limiter.until_ready().await;
        let answer = store.get_secret_value(&entry.key, entry.version_id.as_deref(), entry.stage.clone()).await;
        ctx.metrics.store_call("GetSecretValue", answer.as_ref().map(|_| "Ok").unwrap_or_else(StoreError::outcome));
        answers.push(answer.map(|r| Fetched { version_id: r.version_id, value: zeroize::Zeroizing::new(r.secret_data) }));
    }
    Ok(Ok(decide::decide(&entries, &answers, current, shape)))
}

/// The store client for `es`'s store, or why there is none.
async fn store_client(es: &ExternalSecret, ctx: &Context, namespace: &str) -> Result<Result<StoreClient, Failure>, Error> {
    let reference = &es.spec.secret_store_ref;
    let provider: Option<KmsProvider> = match reference.kind {
        StoreKind::SecretStore => Api::<SecretStore>::namespaced(ctx.client.clone(), namespace)
            .get_opt(&reference.name)
            .await
            .map_err(Error::kube(format!("read SecretStore `{namespace}/{}`", reference.name)))?
            .map(|s| s.spec.kms),
        StoreKind::ClusterSecretStore => Api::<ClusterSecretStore>::all(ctx.client.clone())
            .get_opt(&reference.name)
            .await
            .map_err(Error::kube(format!("read ClusterSecretStore `{}`", reference.name)))?
            .map(|s| s.spec.kms),
    };
    let Some(provider) = provider else {
        let place = if reference.kind == StoreKind::SecretStore { format!(" in namespace `{namespace}`") } else { String::new() };
        return Ok(Err(Failure::new(
            Reason::StoreNotFound,
            format!(
                "spec.secretStoreRef.name: there is no {} `{}`{place}: create it, or fix the name (spec.secretStoreRef.kind is SecretStore or ClusterSecretStore)",
                reference.kind, reference.name
            ),
        )));
    };
    let misconfigured = |message: String| Ok(Err(Failure::new(Reason::StoreMisconfigured, message)));
    let Some(endpoint) = provider.endpoint.clone().or_else(|| ctx.config.store_endpoint.clone()) else {
        return misconfigured(format!(
            "{} `{}` has no spec.KMS.endpoint and the controller has no --store-endpoint: set one of them",
            reference.kind, reference.name
        ));
    };
    let credential = match &provider.auth {
        Some(auth) => {
            let access_key = read_secret_key(ctx, &auth.access_key, namespace, reference.kind).await?;
            let secret_key = read_secret_key(ctx, &auth.access_key_secret, namespace, reference.kind).await?;
            match (access_key, secret_key) {
                (Ok(access_key), Ok(secret_key)) => StoreCredential::new(access_key, secret_key),
                (Err(problem), _) | (_, Err(problem)) => {
                    return misconfigured(format!("{} `{}` spec.KMS.KMSAuth: {problem}", reference.kind, reference.name));
                }
            }
        }
        None => match &ctx.config.credential {
            Some(credential) => credential.clone(),
            None => {
                return misconfigured(format!(
                    "{} `{}` has no spec.KMS.KMSAuth and the controller has no --access-key: set one of them",
                    reference.kind, reference.name
                ));
            }
        },
    };
    Ok(Ok(StoreClient::new(ctx.http.clone(), &endpoint, credential, ctx.config.store_timeout)))
}

/// One key of a credential Secret, or what is wrong with the reference.
async fn read_secret_key(
    ctx: &Context,
    reference: &SecretKeyRef,
    namespace: &str,
    kind: StoreKind,
) -> Result<Result<String, String>, Error> {
    let namespace = match (kind, &reference.namespace) {
        (StoreKind::SecretStore, _) => namespace.to_owned(),
        (StoreKind::ClusterSecretStore, Some(ns)) => ns.clone(),
        (StoreKind::ClusterSecretStore, None) => {
            return Ok(Err(format!("the reference to Secret `{}` must name its namespace", reference.name)));
        }
    };
    let secret = Api::<Secret>::namespaced(ctx.client.clone(), &namespace)
        .get_opt(&reference.name)
        .await
        .map_err(Error::kube(format!("read credential Secret `{namespace}/{}`", reference.name)))?;
    let Some(secret) = secret else {
        return Ok(Err(format!("credential Secret `{namespace}/{}` does not exist", reference.name)));
    };
    let value = secret.data.as_ref().and_then(|d| d.get(&reference.key)).map(|v| String::from_utf8_lossy(&v.0).trim().to_owned());
    Ok(value.ok_or_else(|| format!("credential Secret `{namespace}/{}` has no key `{}`", reference.name, reference.key)))
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
            annotations: (!shape.annotations.is_empty()).then(|| shape.annotations.clone()),
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
    match es.spec.deletion_policy {
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
