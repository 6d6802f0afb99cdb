//! The API calls steps make on the objects a scenario writes: create, update, read back, delete
//! and list, through one apiserver, each bounded and put on the scenario's timeline. Secrets and
//! ConfigMaps go through one code path: a [`Kind`] knows its API resource and how its value is
//! carried (base64 in a Secret's `data`, text in a ConfigMap's).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, PostParams};
use serde_json::{Value, json};

use crate::model::Kind;
use crate::timeline::{Timeline, Verb};
use crate::world::{ObjectRef, World};

/// The data key every generated object carries its value under.
const DATA_KEY: &str = "value";
/// The deadline of one API call made by a step.
pub const CALL_DEADLINE: Duration = Duration::from_secs(60);

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

/// The core/v1 API resource of `kind`.
fn api_resource(kind: Kind) -> ApiResource {
    let (name, plural) = match kind {
        Kind::Secret => ("Secret", "secrets"),
        Kind::Configmap => ("ConfigMap", "configmaps"),
    };
    ApiResource { group: String::new(), version: "v1".into(), api_version: "v1".into(), kind: name.into(), plural: plural.into() }
}

/// `data` holding `value` as `kind` carries it.
fn data_with(kind: Kind, value: &str) -> Value {
    match kind {
        Kind::Secret => json!({ DATA_KEY: B64.encode(value) }),
        Kind::Configmap => json!({ DATA_KEY: value }),
    }
}

/// The value an object of `kind` carries (`None`: missing or not in its encoding).
fn value_of(kind: Kind, object: &DynamicObject) -> Option<Vec<u8>> {
    let field = object.data.get("data")?.get(DATA_KEY)?.as_str()?;
    match kind {
        Kind::Secret => B64.decode(field).ok(),
        Kind::Configmap => Some(field.as_bytes().to_vec()),
    }
}

/// The API of `kind` objects in `namespace`.
fn api(client: kube::Client, kind: Kind, namespace: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client, namespace, &api_resource(kind))
}

impl ObjectClient {
    /// A client whose calls go on `timeline`.
    pub fn new(client: kube::Client, timeline: Timeline) -> Self {
        Self { client, timeline }
    }

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
        let api = api(self.client.clone(), object.kind, &object.namespace);
        let created = DynamicObject::new(&object.name, &api_resource(object.kind))
            .within(&object.namespace)
            .data(json!({ "data": data_with(object.kind, value) }));
        self.timed(Verb::Create, async move {
            api.create(&PostParams::default(), &created).await.map(drop).map_err(|e| describe_kube_error(&e))
        })
        .await
    }

    /// Replaces the value of `object` (read, change, write back).
    pub async fn update(&self, object: &ObjectRef, value: &str) -> Call {
        let api = api(self.client.clone(), object.kind, &object.namespace);
        self.timed(Verb::Update, async move {
            let mut current = api.get(&object.name).await.map_err(|e| describe_kube_error(&e))?;
            current.data["data"] = data_with(object.kind, value);
            api.replace(&object.name, &PostParams::default(), &current).await.map(drop).map_err(|e| describe_kube_error(&e))
        })
        .await
    }

    /// Reads `object` and checks it holds `expected`.
    pub async fn read(&self, object: &ObjectRef, expected: &str) -> Call {
        let api = api(self.client.clone(), object.kind, &object.namespace);
        self.timed(Verb::Read, async move {
            let found = api.get(&object.name).await.map_err(|e| describe_kube_error(&e))?;
            match value_of(object.kind, &found) {
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
        let api = api(self.client.clone(), object.kind, &object.namespace);
        self.timed(Verb::Delete, async move {
            api.delete(&object.name, &DeleteParams::default()).await.map(drop).map_err(|e| describe_kube_error(&e))
        })
        .await
    }
}

/// One LIST through apiserver `apiserver`: the names it returned, or the API's error.
pub async fn list_names(world: &World, apiserver: usize, kind: Kind, namespace: &str) -> Result<BTreeSet<String>, String> {
    let client = world.stack.kube_client(apiserver).await.map_err(|e| e.to_string())?;
    let call = async {
        let listed = api(client, kind, namespace).list(&ListParams::default()).await.map_err(|e| describe_kube_error(&e))?;
        Ok(listed.items.into_iter().filter_map(|o| o.metadata.name).collect())
    };
    tokio::time::timeout(CALL_DEADLINE, call).await.unwrap_or_else(|_| Err(format!("no answer within {} s", CALL_DEADLINE.as_secs())))
}
