//! Helpers for tests and scenario steps on the lab's real apiserver: install the CRDs, give the
//! controller its least-privilege ServiceAccount and a token, run it in process, create stores
//! and ExternalSecrets, and wait (bounded) for a Secret's value or a `Ready` condition. Remote
//! secrets are written with a [`StoreClient`] (create, put, rotate, move a stage, delete).
//!
//! ```no_run
//! # async fn demo(admin: kube::Client, kubeconfig: &std::path::Path) -> Result<(), kms_secret_sync::LabError> {
//! use std::time::Duration;
//! use kms_secret_sync::{lab, ControllerConfig, StoreCredential};
//! lab::install_crds(&admin).await?;
//! lab::grant_controller(&admin, "default").await?;
//! let token = lab::service_account_token(&admin, "default", kms_secret_sync::rbac::NAME).await?;
//! let as_controller = lab::client_with_token(kubeconfig, &token).await?;
//! let config = ControllerConfig {
//!     watch_namespaces: vec!["default".into()],
//!     kms_endpoint: Some("http://127.0.0.1:8200".into()),
//!     ..Default::default()
//! };
//! let controller = lab::RunningController::start(as_controller, config).await;
//! lab::create_store(&admin, "default", "kms", &StoreCredential::new("AK", "SK")).await?;
//! let store = lab::store_ref("default", "kms");
//! lab::apply_external_secret(&admin, "default", &lab::external_secret("app", vec![lab::entry("password", "db", &store)])).await?;
//! lab::wait_for_secret(&admin, "default", "app", "password", Duration::from_secs(30), |v| v == Some(&b"hunter2"[..])).await?;
//! controller.stop().await;
//! # Ok(()) }
//! ```

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::ByteString;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::controller::{ControllerConfig, MANAGER};
use crate::crd::{
    DataSource, ExternalSecret, ExternalSecretSpec, ExternalSecretStatus, KmsProvider, RamAuth, SecretRef, SecretStore, SecretStoreRef,
    SecretStoreSpec,
};
use crate::decide::Reason;
use crate::error::LabError;
use crate::metrics::Metrics;
use crate::store::StoreCredential;

/// How often the waits below look again.
const POLL: Duration = Duration::from_millis(100);

async fn apply<K>(api: &Api<K>, object: &K) -> Result<K, LabError>
where
    K: Resource + Clone + Serialize + DeserializeOwned + std::fmt::Debug,
    K::DynamicType: Default,
{
    let name = object.meta().name.clone().unwrap_or_default();
    api.patch(&name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(object))
        .await
        .map_err(LabError::kube(format!("apply {} `{name}`", K::kind(&Default::default()))))
}

/// Installs (or updates) the two CRDs and waits until the apiserver serves them.
pub async fn install_crds(client: &Client) -> Result<(), LabError> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in crate::crd::crds() {
        apply(&api, &crd).await?;
    }
    let deadline = Duration::from_secs(30);
    let started = Instant::now();
    for crd in crate::crd::crds() {
        let name = crd.name_any();
        loop {
            let established = api
                .get_opt(&name)
                .await
                .map_err(LabError::kube(format!("read CRD `{name}`")))?
                .and_then(|c| c.status)
                .and_then(|s| s.conditions)
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Established" && c.status == "True"));
            if established {
                break;
            }
            if started.elapsed() > deadline {
                return Err(LabError::Timeout {
                    what: format!("CRD `{name}` to be Established"),
                    waited: deadline,
                    last: "not established".into(),
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }
    Ok(())
}

/// Applies the controller's ServiceAccount, Role, ClusterRole and bindings ([`crate::rbac`]) in `namespace`.
pub async fn grant_controller(client: &Client, namespace: &str) -> Result<(), LabError> {
    let (account, role, binding, cluster_role, cluster_binding) = crate::rbac::objects(namespace);
    apply(&Api::namespaced(client.clone(), namespace), &account).await?;
    apply(&Api::namespaced(client.clone(), namespace), &role).await?;
    apply(&Api::namespaced(client.clone(), namespace), &binding).await?;
    apply(&Api::all(client.clone()), &cluster_role).await?;
    apply(&Api::all(client.clone()), &cluster_binding).await?;
    Ok(())
}

/// A token of ServiceAccount `name` in `namespace` (the TokenRequest API, one hour).
pub async fn service_account_token(client: &Client, namespace: &str, name: &str) -> Result<String, LabError> {
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let request =
        TokenRequest { spec: Some(TokenRequestSpec { expiration_seconds: Some(3600), ..Default::default() }), ..Default::default() };
    let answer = api
        .create_token_request(name, &PostParams::default(), &request)
        .await
        .map_err(LabError::kube(format!("request a token of ServiceAccount `{namespace}/{name}`")))?;
    answer.status.and_then(|s| s.token).ok_or_else(|| LabError::Timeout {
        what: format!("a token of ServiceAccount `{namespace}/{name}`"),
        waited: Duration::ZERO,
        last: "the TokenRequest answer has no status".into(),
    })
}

/// A client of the apiserver in `kubeconfig` (its server and CA) that authenticates with `token`.
pub async fn client_with_token(kubeconfig: &Path, token: &str) -> Result<Client, LabError> {
    let bad = |problem: String| LabError::Kubeconfig { path: kubeconfig.display().to_string(), problem };
    let mut config = kube::config::Kubeconfig::read_from(kubeconfig).map_err(|e| bad(e.to_string()))?;
    for user in &mut config.auth_infos {
        if let Some(auth) = user.auth_info.as_mut() {
            auth.token = Some(token.to_owned().into());
        }
    }
    let config = kube::Config::from_custom_kubeconfig(config, &Default::default()).await.map_err(|e| bad(e.to_string()))?;
    Client::try_from(config).map_err(|e| bad(e.to_string()))
}

/// The controller running in this process; [`RunningController::stop`] ends it.
pub struct RunningController {
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
    /// Its metrics.
    pub metrics: Arc<Metrics>,
}

impl std::fmt::Debug for RunningController {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningController").finish_non_exhaustive()
    }
}

impl RunningController {
    /// Starts the controller with `client` (give it the controller's own token: [`client_with_token`]).
    pub async fn start(client: Client, config: ControllerConfig) -> Self {
        let metrics = Arc::new(Metrics::default());
        let (shutdown, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(crate::controller::run(client, config, metrics.clone(), async move {
            let _ = stopped.await;
        }));
        Self { shutdown: Some(shutdown), task, metrics }
    }

    /// Stops it, waiting (at most 30 s) for reconciles in flight.
    pub async fn stop(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if tokio::time::timeout(Duration::from_secs(30), &mut self.task).await.is_err() {
            self.task.abort();
        }
    }
}

impl Drop for RunningController {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Creates (or updates) SecretStore `name` in `namespace` reading with `credential`, kept in a
/// Secret `<name>-credentials` beside it (keys `accessKey`, `accessKeySecret`).
pub async fn create_store(client: &Client, namespace: &str, name: &str, credential: &StoreCredential) -> Result<(), LabError> {
    let secret_name = format!("{name}-credentials");
    let secret = Secret {
        metadata: ObjectMeta { name: Some(secret_name.clone()), namespace: Some(namespace.to_owned()), ..Default::default() },
        data: Some(
            [
                ("accessKey".to_owned(), ByteString(credential.access_key.as_bytes().to_vec())),
                ("accessKeySecret".to_owned(), ByteString(credential.secret_key.as_bytes().to_vec())),
            ]
            .into(),
        ),
        ..Default::default()
    };
    apply(&Api::namespaced(client.clone(), namespace), &secret).await?;
    let reference = |key: &str| Some(SecretRef { name: secret_name.clone(), namespace: namespace.to_owned(), key: key.to_owned() });
    let auth = RamAuth { access_key: reference("accessKey"), access_key_secret: reference("accessKeySecret"), ..Default::default() };
    let mut store = SecretStore::new(name, SecretStoreSpec { kms: Some(KmsProvider { auth: Some(auth), dedicated: None }), oos: None });
    store.metadata.namespace = Some(namespace.to_owned());
    apply(&Api::namespaced(client.clone(), namespace), &store).await?;
    Ok(())
}

/// A reference to SecretStore `name` in `namespace`.
pub fn store_ref(namespace: &str, name: &str) -> SecretStoreRef {
    SecretStoreRef { name: name.to_owned(), namespace: namespace.to_owned() }
}

/// A `data` entry putting remote secret `key` (its current version, whole) under `name` in the
/// Secret, read with `store`.
pub fn entry(name: &str, key: &str, store: &SecretStoreRef) -> DataSource {
    DataSource { key: key.to_owned(), name: Some(name.to_owned()), secret_store_ref: Some(store.clone()), ..Default::default() }
}

/// An ExternalSecret `name` (and its Secret `name`) of `entries`.
pub fn external_secret(name: &str, entries: Vec<DataSource>) -> ExternalSecret {
    ExternalSecret::new(name, ExternalSecretSpec { data: entries, ..Default::default() })
}

/// Creates or updates `es` in `namespace`.
pub async fn apply_external_secret(client: &Client, namespace: &str, es: &ExternalSecret) -> Result<ExternalSecret, LabError> {
    let mut es = es.clone();
    es.metadata.namespace = Some(namespace.to_owned());
    apply(&Api::namespaced(client.clone(), namespace), &es).await
}

/// Waits until Secret `name`'s `key` satisfies `accept` (`None`: the Secret or key is absent);
/// returns how long it took. The error shows only whether the key was present, never its value.
pub async fn wait_for_secret(
    client: &Client,
    namespace: &str,
    name: &str,
    key: &str,
    deadline: Duration,
    accept: impl Fn(Option<&[u8]>) -> bool,
) -> Result<Duration, LabError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let started = Instant::now();
    loop {
        let secret = api.get_opt(name).await.map_err(LabError::kube(format!("read Secret `{namespace}/{name}`")))?;
        let value = secret.as_ref().and_then(|s| s.data.as_ref()).and_then(|d| d.get(key)).map(|v| v.0.clone());
        if accept(value.as_deref()) {
            return Ok(started.elapsed());
        }
        if started.elapsed() > deadline {
            let last = match (&secret, &value) {
                (None, _) => "no such Secret".to_owned(),
                (Some(_), None) => format!("the Secret has no key `{key}`"),
                (Some(_), Some(v)) => format!("key `{key}` holds {} bytes that were not accepted", v.len()),
            };
            return Err(LabError::Timeout { what: format!("Secret `{namespace}/{name}` key `{key}`"), waited: deadline, last });
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Waits until ExternalSecret `name` has `Ready` = `ready` (and, if given, `reason`); returns its status.
pub async fn wait_for_ready(
    client: &Client,
    namespace: &str,
    name: &str,
    ready: bool,
    reason: Option<Reason>,
    deadline: Duration,
) -> Result<ExternalSecretStatus, LabError> {
    let api: Api<ExternalSecret> = Api::namespaced(client.clone(), namespace);
    let want = if ready { "True" } else { "False" };
    let started = Instant::now();
    loop {
        let es = api.get_opt(name).await.map_err(LabError::kube(format!("read ExternalSecret `{namespace}/{name}`")))?;
        let status = es.and_then(|e| e.status).unwrap_or_default();
        let matches = status.ready().is_some_and(|c| c.status == want && reason.is_none_or(|r| c.reason == r.name()));
        if matches {
            return Ok(status);
        }
        if started.elapsed() > deadline {
            let last = status
                .ready()
                .map(|c| format!("Ready={} reason={} message={}", c.status, c.reason, c.message))
                .unwrap_or("no Ready condition".into());
            let what =
                format!("ExternalSecret `{namespace}/{name}` Ready={want}{}", reason.map(|r| format!(" reason={r}")).unwrap_or_default());
            return Err(LabError::Timeout { what, waited: deadline, last });
        }
        tokio::time::sleep(POLL).await;
    }
}
