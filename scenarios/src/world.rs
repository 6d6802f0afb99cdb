//! What a running scenario knows: its stack, every object it wrote (with the value it must read
//! back), its marks and the figures it measured. Values and static keys derive from the seed, so
//! the same seed writes the same bytes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kms_lab_stack::Stack;
use kms_lab_stack::encryption::{EncryptionConfiguration, KmsProvider, Provider, ResourceConfig, StaticKey, StaticKeys};
use kube::api::ListParams;
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};
use sha2::{Digest, Sha256};

use crate::error::StepError;
use crate::model::{EncryptionSpec, Kind, KmsApi, ProviderSpec};

/// Every generated plaintext starts with this, so a scan of etcd finds any that leaked.
pub const PLAINTEXT_MARKER: &str = "kms-lab-plaintext:";
/// The data key every generated object carries its value under.
const DATA_KEY: &str = "value";
/// The deadline of one API call made by a step.
pub const CALL_DEADLINE: Duration = Duration::from_secs(60);

/// An object a scenario wrote.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectRef {
    /// Secret or configmap.
    pub kind: Kind,
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
}

impl ObjectRef {
    /// Its etcd key.
    pub fn etcd_key(&self) -> String {
        format!("/registry/{}/{}/{}", self.kind.resource(), self.namespace, self.name)
    }
}

/// What a mark remembered.
#[derive(Debug, Clone)]
pub struct Mark {
    /// When it was set (`wait_until {since: MARK}` measures from here).
    pub at: Instant,
    /// etcd's revision at the mark.
    pub etcd_revision: i64,
    /// The highest audit sequence number at the mark.
    pub audit_seq: u64,
    /// Each reachable plugin's Status key id.
    pub key_ids: BTreeMap<String, String>,
    /// The mock KMS's current key version at the mark (when the stack runs one): the version a
    /// plugin whose key id names the key, not a version (aws-encryption-provider), encrypted with.
    pub kms_current_version: Option<String>,
}

/// The state of a running scenario.
pub struct World {
    /// The stack.
    pub stack: Stack,
    seed: u64,
    /// Objects written and not deleted, with the generation of their current value.
    pub objects: BTreeMap<ObjectRef, u32>,
    /// Marks by name.
    pub marks: BTreeMap<String, Mark>,
    /// Figures measured by steps (name → value), reported with the result.
    pub figures: BTreeMap<String, f64>,
    /// Writes stored by the running `load`, if any (its `writes` conditions count them).
    load_writes: Option<Arc<AtomicU64>>,
    /// The next number of each write probe prefix.
    probes: BTreeMap<(Kind, String), usize>,
    /// Every revision written to etcd since the stack started, scanned for plaintext.
    history: Option<kms_lab_stack::etcd_watch::Recorder>,
    /// API calls over time.
    timeline: Timeline,
    /// The secret sync controller and what was put into the store, when the stack runs it.
    pub secret_sync: Option<crate::steps::sync::SecretSyncLab>,
}

impl World {
    /// A world around a started stack; `history` scans every etcd revision from the start.
    pub fn new(stack: Stack, seed: u64, history: Option<kms_lab_stack::etcd_watch::Recorder>) -> Self {
        Self {
            stack,
            seed,
            objects: BTreeMap::new(),
            marks: BTreeMap::new(),
            figures: BTreeMap::new(),
            load_writes: None,
            probes: BTreeMap::new(),
            history,
            timeline: Timeline::new(),
            secret_sync: None,
        }
    }

    /// The etcd revision recorder, when one runs.
    pub fn history(&self) -> Option<&kms_lab_stack::etcd_watch::Recorder> {
        self.history.as_ref()
    }

    /// Stops the etcd revision recorder (before the stack goes down).
    pub fn stop_history(&mut self) {
        if let Some(recorder) = self.history.take() {
            recorder.stop();
        }
    }

    /// Writes stored so far by the running `load` (0 outside a load).
    pub fn load_writes(&self) -> u64 {
        self.load_writes.as_ref().map_or(0, |n| n.load(Ordering::Relaxed))
    }

    /// Makes `counter` the running load's write count (`None` when the load ends).
    pub fn set_load_writes(&mut self, counter: Option<Arc<AtomicU64>>) {
        self.load_writes = counter;
    }

    /// The name of the next write probe object under `prefix` (`<prefix>-NNN`): numbering goes
    /// on after the objects of that prefix written so far and every earlier probe, refused or not.
    pub fn next_probe_name(&mut self, kind: Kind, prefix: &str) -> String {
        let taken = self.objects.keys().filter(|o| o.kind == kind && o.name.starts_with(&format!("{prefix}-"))).count();
        let next = self.probes.entry((kind, prefix.to_owned())).or_insert(taken);
        let name = format!("{prefix}-{:03}", *next);
        *next += 1;
        name
    }

    /// The tracked objects of `kind` in `namespace` a LIST (`names`) did not return.
    pub fn missing_from(&self, kind: Kind, namespace: &str, names: &BTreeSet<String>) -> Vec<ObjectRef> {
        self.select(kind, namespace, None, None).into_iter().map(|(o, _)| o).filter(|o| !names.contains(&o.name)).collect()
    }

    /// The scenario's seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The EncryptionConfiguration for `spec`, with plugin names resolved to their sockets.
    pub fn encryption_config(&self, spec: &EncryptionSpec) -> Result<EncryptionConfiguration, StepError> {
        build_encryption(spec, self.seed, &|name| self.stack.plugin_socket(name).map(Path::to_owned))
    }

    /// The tracked objects of `kind` in `namespace` whose names start with `prefix`, in name order.
    pub fn select(&self, kind: Kind, namespace: &str, prefix: Option<&str>, count: Option<usize>) -> Vec<(ObjectRef, u32)> {
        let matching = self
            .objects
            .iter()
            .filter(|(o, _)| o.kind == kind && o.namespace == namespace && prefix.is_none_or(|p| o.name.starts_with(p)))
            .map(|(o, g)| (o.clone(), *g));
        match count {
            Some(n) => matching.take(n).collect(),
            None => matching.collect(),
        }
    }

    /// A client for apiserver `index` whose calls go on the scenario's timeline.
    pub async fn client(&self, index: usize) -> Result<ObjectClient, StepError> {
        Ok(ObjectClient { client: self.stack.kube_client(index).await?, timeline: self.timeline.clone() })
    }

    /// What happened when, for the report's timeline plot.
    pub fn timeline(&self) -> &Timeline {
        &self.timeline
    }

    /// Records a measured figure.
    pub fn figure(&mut self, name: impl Into<String>, value: f64) {
        self.figures.insert(name.into(), value);
    }
}

/// The bytes of static key `name` in a run with `seed` (never printed).
fn static_key(seed: u64, name: &str) -> String {
    let digest = Sha256::new().chain_update(b"kms-lab-static-key").chain_update(seed.to_be_bytes()).chain_update(name).finalize();
    base64::engine::general_purpose::STANDARD.encode(digest)
}

/// The EncryptionConfiguration for `spec` in a run with `seed`; `sockets` finds a plugin's socket.
pub fn build_encryption(
    spec: &EncryptionSpec,
    seed: u64,
    sockets: &dyn Fn(&str) -> Option<PathBuf>,
) -> Result<EncryptionConfiguration, StepError> {
    let keys = |name: &str| StaticKeys { keys: vec![StaticKey { name: name.to_owned(), secret: static_key(seed, name) }] };
    let provider = |spec: &ProviderSpec| -> Result<Provider, StepError> {
        Ok(match spec {
            ProviderSpec::Identity(_) => Provider::Identity(Default::default()),
            ProviderSpec::Aescbc(key) => Provider::Aescbc(keys(&key.key)),
            ProviderSpec::Aesgcm(key) => Provider::Aesgcm(keys(&key.key)),
            ProviderSpec::Secretbox(key) => Provider::Secretbox(keys(&key.key)),
            ProviderSpec::Kms(kms) => {
                let socket =
                    sockets(&kms.plugin).ok_or_else(|| StepError::Failed(format!("no plugin named `{}` in the stack", kms.plugin)))?;
                let timeout = kms.timeout.map_or(Duration::from_secs(3), |d| d.0);
                Provider::Kms(match kms.api {
                    KmsApi::V2 => KmsProvider::v2(&kms.name, &socket, timeout),
                    KmsApi::V1 => KmsProvider::v1(&kms.name, &socket, kms.cachesize.unwrap_or(1000), timeout),
                })
            }
        })
    };
    let mut config = EncryptionConfiguration::new(&[], Vec::new());
    config.resources.clear();
    for (resource, providers) in spec {
        let providers = providers.iter().map(provider).collect::<Result<Vec<_>, _>>()?;
        config.resources.push(ResourceConfig { resources: vec![resource.clone()], providers });
    }
    Ok(config)
}

/// The value `object` holds at `generation` in a run with `seed`.
pub fn value_for(seed: u64, object: &ObjectRef, generation: u32) -> String {
    let digest = Sha256::new()
        .chain_update(seed.to_be_bytes())
        .chain_update(object.etcd_key().as_bytes())
        .chain_update(generation.to_be_bytes())
        .finalize();
    format!("{PLAINTEXT_MARKER}{}:{generation}:{}", object.name, hex::encode(&digest[..8]))
}

/// One API call's outcome and how long it took.
pub struct Call {
    /// `Ok` or the error message the API answered.
    pub result: Result<(), String>,
    /// How long it took.
    pub elapsed: Duration,
}

/// Writes, reads and deletes generated objects through one apiserver.
#[derive(Clone)]
pub struct ObjectClient {
    client: kube::Client,
    timeline: Timeline,
}

/// How the API answered, as a user sees it (`500 InternalError: …`).
pub fn describe_kube_error(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) => format!("{} {}: {}", status.code, status.reason, status.message),
        other => other.to_string(),
    }
}

impl ObjectClient {
    async fn timed<F: std::future::Future<Output = Result<(), String>>>(&self, verb: Verb, call: F) -> Call {
        let started = Instant::now();
        let result = match tokio::time::timeout(CALL_DEADLINE, call).await {
            Ok(result) => result,
            Err(_) => Err(format!("no answer within {} s", CALL_DEADLINE.as_secs())),
        };
        self.timeline.api(verb, started, result.is_ok());
        Call { result, elapsed: started.elapsed() }
    }

    /// Creates `object` holding `value`.
    pub async fn create(&self, object: &ObjectRef, value: &str) -> Call {
        let meta = ObjectMeta { name: Some(object.name.clone()), namespace: Some(object.namespace.clone()), ..Default::default() };
        let client = self.client.clone();
        self.timed(Verb::Create, async move {
            let params = PostParams::default();
            match object.kind {
                Kind::Secret => {
                    let secret = Secret {
                        metadata: meta,
                        data: Some(BTreeMap::from([(DATA_KEY.to_owned(), ByteString(value.as_bytes().to_vec()))])),
                        ..Default::default()
                    };
                    Api::<Secret>::namespaced(client, &object.namespace).create(&params, &secret).await.map(drop)
                }
                Kind::Configmap => {
                    let map = ConfigMap {
                        metadata: meta,
                        data: Some(BTreeMap::from([(DATA_KEY.to_owned(), value.to_owned())])),
                        ..Default::default()
                    };
                    Api::<ConfigMap>::namespaced(client, &object.namespace).create(&params, &map).await.map(drop)
                }
            }
            .map_err(|e| describe_kube_error(&e))
        })
        .await
    }

    /// Replaces the value of `object` (read, change, write back).
    pub async fn update(&self, object: &ObjectRef, value: &str) -> Call {
        let client = self.client.clone();
        self.timed(Verb::Update, async move {
            let params = PostParams::default();
            match object.kind {
                Kind::Secret => {
                    let api = Api::<Secret>::namespaced(client, &object.namespace);
                    let mut secret = api.get(&object.name).await.map_err(|e| describe_kube_error(&e))?;
                    secret.data = Some(BTreeMap::from([(DATA_KEY.to_owned(), ByteString(value.as_bytes().to_vec()))]));
                    api.replace(&object.name, &params, &secret).await.map(drop)
                }
                Kind::Configmap => {
                    let api = Api::<ConfigMap>::namespaced(client, &object.namespace);
                    let mut map = api.get(&object.name).await.map_err(|e| describe_kube_error(&e))?;
                    map.data = Some(BTreeMap::from([(DATA_KEY.to_owned(), value.to_owned())]));
                    api.replace(&object.name, &params, &map).await.map(drop)
                }
            }
            .map_err(|e| describe_kube_error(&e))
        })
        .await
    }

    /// Reads `object` and checks it holds `expected`.
    pub async fn read(&self, object: &ObjectRef, expected: &str) -> Call {
        let client = self.client.clone();
        self.timed(Verb::Read, async move {
            let found: Option<Vec<u8>> = match object.kind {
                Kind::Secret => Api::<Secret>::namespaced(client, &object.namespace)
                    .get(&object.name)
                    .await
                    .map(|s| s.data.and_then(|mut d| d.remove(DATA_KEY)).map(|b| b.0)),
                Kind::Configmap => Api::<ConfigMap>::namespaced(client, &object.namespace)
                    .get(&object.name)
                    .await
                    .map(|c| c.data.and_then(|mut d| d.remove(DATA_KEY)).map(String::into_bytes)),
            }
            .map_err(|e| describe_kube_error(&e))?;
            match found {
                Some(bytes) if bytes == expected.as_bytes() => Ok(()),
                // Only the value's length is shown: values are the scenario's plaintext.
                Some(bytes) => {
                    Err(format!("WRONG VALUE: read {} bytes that differ from the {} bytes written", bytes.len(), expected.len()))
                }
                None => Err(format!("WRONG VALUE: `{DATA_KEY}` is missing")),
            }
        })
        .await
    }

    /// Deletes `object`.
    pub async fn delete(&self, object: &ObjectRef) -> Call {
        let client = self.client.clone();
        self.timed(Verb::Delete, async move {
            let params = DeleteParams::default();
            match object.kind {
                Kind::Secret => Api::<Secret>::namespaced(client, &object.namespace).delete(&object.name, &params).await.map(drop),
                Kind::Configmap => Api::<ConfigMap>::namespaced(client, &object.namespace).delete(&object.name, &params).await.map(drop),
            }
            .map_err(|e| describe_kube_error(&e))
        })
        .await
    }
}

/// One LIST through apiserver `apiserver`: the names it returned, or the API's error.
pub async fn list_names(world: &World, apiserver: usize, kind: Kind, namespace: &str) -> Result<BTreeSet<String>, String> {
    let client = world.stack.kube_client(apiserver).await.map_err(|e| e.to_string())?;
    let params = ListParams::default();
    let call = async {
        let names: Vec<Option<String>> = match kind {
            Kind::Secret => Api::<Secret>::namespaced(client, namespace)
                .list(&params)
                .await
                .map(|l| l.items.into_iter().map(|s| s.metadata.name).collect()),
            Kind::Configmap => Api::<ConfigMap>::namespaced(client, namespace)
                .list(&params)
                .await
                .map(|l| l.items.into_iter().map(|c| c.metadata.name).collect()),
        }
        .map_err(|e| describe_kube_error(&e))?;
        Ok(names.into_iter().flatten().collect())
    };
    tokio::time::timeout(CALL_DEADLINE, call).await.unwrap_or_else(|_| Err(format!("no answer within {} s", CALL_DEADLINE.as_secs())))
}

/// An API call's verb, as the timeline records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verb {
    /// A create.
    Create,
    /// An update.
    Update,
    /// A read.
    Read,
    /// A delete.
    Delete,
}

/// One API call on the timeline: when it started (seconds since the scenario began), its verb
/// and whether it succeeded.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ApiEvent {
    /// Seconds since the scenario began.
    pub at_s: f64,
    /// The verb.
    pub verb: Verb,
    /// Whether it succeeded.
    pub ok: bool,
}

/// The API calls a scenario made, shared by every client (load writers run in their own tasks).
#[derive(Debug, Clone)]
pub struct Timeline {
    origin: Instant,
    origin_unix_ms: u64,
    api: Arc<std::sync::Mutex<Vec<ApiEvent>>>,
}

impl Timeline {
    /// An empty timeline starting now.
    pub fn new() -> Self {
        let origin_unix_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        Self { origin: Instant::now(), origin_unix_ms, api: Arc::default() }
    }

    /// When the timeline began.
    pub fn origin(&self) -> Instant {
        self.origin
    }

    fn api(&self, verb: Verb, started: Instant, ok: bool) {
        let at_s = (started.saturating_duration_since(self.origin).as_secs_f64() * 1000.0).round() / 1000.0;
        if let Ok(mut events) = self.api.lock() {
            events.push(ApiEvent { at_s, verb, ok });
        }
    }

    /// Seconds since the scenario began of a wall-clock time in Unix milliseconds (audit records).
    pub fn seconds_at(&self, unix_ms: u64) -> f64 {
        (unix_ms as f64 - self.origin_unix_ms as f64) / 1000.0
    }

    /// Every API call so far, in the order they started.
    pub fn api_events(&self) -> Vec<ApiEvent> {
        let mut events = self.api.lock().map(|e| e.clone()).unwrap_or_default();
        events.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
        events
    }
}

impl Default for Timeline {
    fn default() -> Self {
        Self::new()
    }
}

/// One mock KMS call on the timeline.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct KmsEvent {
    /// Seconds since the scenario began (when the call finished).
    pub at_s: f64,
    /// The action (`Encrypt`, `Decrypt`, …).
    pub action: String,
    /// Whether it succeeded.
    pub ok: bool,
    /// Why it was made (`request`, `health-probe`), when the client said.
    #[serde(default)]
    pub caller: Option<String>,
}

/// What a scenario's timeline plot shows: API calls and mock KMS calls over time (the steps,
/// faults among them, come from the step records).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct TimelineReport {
    /// API calls made by the scenario's steps and load writers.
    pub api: Vec<ApiEvent>,
    /// Calls the mock KMS served.
    pub kms: Vec<KmsEvent>,
}
