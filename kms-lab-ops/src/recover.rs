//! `kms-lab recover --unsafe-delete`: after a KEK (version) is lost, find the objects that can no
//! longer be decrypted — read from etcd and opened through the plugin, never printed — and
//! delete exactly those through the API with upstream's unsafe delete:
//! `DeleteOptions.ignoreStoreReadErrorWithClusterBreakingPotential: true` (KEP-3926, feature
//! `AllowUnsafeMalformedObjectDeletion`, beta and on by default in 1.37; the caller needs the
//! RBAC verb `unsafe-delete-ignore-read-errors` on the resource).
//!
//! The apiserver double-checks: its unsafe delete reads the object live from etcd and refuses to
//! delete one that still decodes (`storage.DeleteOptions{ExpectTransformOrDecodeError: true}`),
//! and a dry run (`dryRun: [All]`) answers whether the delete would go through without deleting.

use std::collections::BTreeMap;
use std::time::Instant;

use kms_lab_stack::etcd_client::EtcdClient;
use kms_wire::decode::{DecodeError, KeySource, open};
use kms_wire::envelope::{Envelope, ProviderKind};
use serde::Serialize;
use zeroize::Zeroizing;

use crate::error::OpsError;
use crate::resource::Resource;

/// The RBAC verb upstream's unsafe delete requires on the resource.
pub const UNSAFE_DELETE_VERB: &str = "unsafe-delete-ignore-read-errors";

/// The `DeleteOptions` field that asks for the unsafe delete.
pub const UNSAFE_DELETE_OPTION: &str = "ignoreStoreReadErrorWithClusterBreakingPotential";

/// One stored object, by where etcd holds it and how the API names it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct StoredObject {
    /// The resource (`secrets`, `widgets.example.com`).
    pub resource: String,
    /// Its namespace (`None`: cluster-scoped).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Its name.
    pub name: String,
}

impl StoredObject {
    /// The object stored at `key` under `resource`'s etcd prefix (`None` if the key is not under it).
    pub fn from_etcd_key(resource: &Resource, key: &[u8]) -> Option<Self> {
        let key = std::str::from_utf8(key).ok()?;
        let rest = key.strip_prefix(&resource.etcd_prefix())?;
        let (namespace, name) = match rest.split_once('/') {
            Some((namespace, name)) => (Some(namespace.to_owned()), name.to_owned()),
            None => (None, rest.to_owned()),
        };
        (!name.is_empty() && !name.contains('/')).then(|| Self { resource: resource.to_string(), namespace, name })
    }
}

impl std::fmt::Display for StoredObject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.namespace {
            Some(namespace) => write!(f, "{} {namespace}/{}", self.resource, self.name),
            None => write!(f, "{} {}", self.resource, self.name),
        }
    }
}

/// An object the plugin cannot decrypt.
#[derive(Debug, Clone, Serialize)]
pub struct Undecryptable {
    /// The object.
    pub object: StoredObject,
    /// The provider that wrote it (`kms-v2:lab-kms`).
    pub provider: String,
    /// The KMS v2 key id it was written under (v1 values carry none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// What the plugin (or the data) said: a gRPC code and message, never a value.
    pub reason: String,
}

/// What one resource's decryption check found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DecryptCheck {
    /// The resource.
    pub resource: String,
    /// KMS values opened through the plugin.
    pub checked: u64,
    /// Of them, how many opened.
    pub decryptable: u64,
    /// Values not checked: plaintext (identity), static-key providers, another KMS provider than
    /// the one asked for, malformed values.
    pub not_checked: u64,
    /// The objects that did not open, in etcd key order.
    pub undecryptable: Vec<Undecryptable>,
    /// Undecryptable objects per key id (`-` for KMS v1).
    pub undecryptable_by_key_id: BTreeMap<String, u64>,
}

/// Why the check itself could not be trusted: a failure that says nothing about a key.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// Reading etcd failed.
    #[error(transparent)]
    Ops(#[from] OpsError),
    /// The plugin did not answer in time or was unavailable: that is no proof a key is lost.
    #[error(
        "the plugin did not answer for {object} ({reason}): a transient failure is no proof the key is lost; \
         check the plugin and its KMS (kubectl get --raw /readyz/kms-providers) and run again"
    )]
    Transient {
        /// The object being opened.
        object: StoredObject,
        /// The gRPC code and message.
        reason: String,
    },
}

/// gRPC codes that say the plugin or KMS is unreachable or overloaded, not that a key is gone.
fn transient(code: tonic::Code) -> bool {
    matches!(code, tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::ResourceExhausted | tonic::Code::Cancelled)
}

/// Opens every KMS value of `resource` through `keys` (a plugin), optionally only those written
/// by the KMS provider named `provider`. Values are opened one at a time and dropped at once
/// (zeroized); nothing of them is kept or printed.
pub async fn check_decryption(
    etcd: &EtcdClient,
    resource: &Resource,
    keys: &(impl KeySource + Sync + ?Sized),
    provider: Option<&str>,
    page_size: u64,
) -> Result<DecryptCheck, CheckError> {
    let mut check = DecryptCheck { resource: resource.to_string(), ..DecryptCheck::default() };
    // Pages are read first, then opened: etcd's scan callback is synchronous.
    let mut pages = Vec::new();
    etcd.scan_prefix(resource.etcd_prefix().as_bytes(), page_size.max(1), |page, _, _| pages.push(page.to_vec()))
        .await
        .map_err(OpsError::from)?;
    for kv in pages.into_iter().flatten() {
        let value = Zeroizing::new(kv.value);
        let Ok(envelope) = Envelope::parse(&value) else {
            check.not_checked += 1;
            continue;
        };
        let is_kms = matches!(envelope.kind(), ProviderKind::KmsV1 | ProviderKind::KmsV2);
        if !is_kms || provider.is_some_and(|p| envelope.name() != Some(p)) {
            check.not_checked += 1;
            continue;
        }
        let Some(object) = StoredObject::from_etcd_key(resource, &kv.key) else {
            check.not_checked += 1;
            continue;
        };
        check.checked += 1;
        let key_id = match &envelope {
            Envelope::KmsV2 { object, .. } => Some(object.key_id.clone()),
            _ => None,
        };
        match open(&envelope, &kv.key, keys).await {
            Ok(plaintext) => {
                drop(Zeroizing::new(plaintext));
                check.decryptable += 1;
            }
            Err(DecodeError::Unwrap { code, message }) if transient(code) => {
                return Err(CheckError::Transient { object, reason: format!("{code:?}: {message}") });
            }
            Err(error) => {
                *check.undecryptable_by_key_id.entry(key_id.clone().unwrap_or_else(|| "-".into())).or_default() += 1;
                let provider = format!("{}:{}", envelope.kind().name(), envelope.name().unwrap_or_default());
                check.undecryptable.push(Undecryptable { object, provider, key_id, reason: error.to_string() });
            }
        }
    }
    Ok(check)
}

/// What happened to one object of an unsafe delete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "outcome", content = "detail")]
pub enum DeleteOutcome {
    /// Deleted.
    Deleted,
    /// Dry run: the apiserver says the delete would go through (the object is corrupt to it).
    WouldDelete,
    /// The caller lacks the RBAC verb (403): the apiserver's message.
    Refused(String),
    /// Gone already (404).
    NotFound,
    /// The apiserver can read it after all, so the unsafe delete refuses it: it is left alone.
    Readable(String),
    /// Any other failure: the status and message.
    Failed(String),
}

/// One object's result.
#[derive(Debug, Clone, Serialize)]
pub struct DeleteResult {
    /// The object.
    pub object: StoredObject,
    /// What happened.
    #[serde(flatten)]
    pub outcome: DeleteOutcome,
}

/// The unsafe delete of a list of objects.
#[derive(Debug, Clone, Serialize)]
pub struct RecoverReport {
    /// Whether it was a dry run (`dryRun: [All]`: nothing was deleted).
    pub dry_run: bool,
    /// The user impersonated (`None`: the kubeconfig's own).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub as_user: Option<String>,
    /// Per object, in the order given.
    pub results: Vec<DeleteResult>,
    /// Seconds the deletes took.
    pub seconds: f64,
}

impl RecoverReport {
    /// How many objects had `outcome`'s variant.
    pub fn count(&self, matches: impl Fn(&DeleteOutcome) -> bool) -> usize {
        self.results.iter().filter(|r| matches(&r.outcome)).count()
    }

    /// Objects deleted (or, in a dry run, that would be).
    pub fn deleted(&self) -> usize {
        self.count(|o| matches!(o, DeleteOutcome::Deleted | DeleteOutcome::WouldDelete))
    }

    /// Objects refused for want of the RBAC verb.
    pub fn refused(&self) -> usize {
        self.count(|o| matches!(o, DeleteOutcome::Refused(_)))
    }

    /// Whether every object was deleted (or would be).
    pub fn complete(&self) -> bool {
        self.deleted() == self.results.len()
    }
}

/// How to issue the unsafe deletes.
#[derive(Debug, Clone, Default)]
pub struct UnsafeDeleteOptions {
    /// `dryRun: [All]`: ask the apiserver whether each delete would go through, delete nothing.
    pub dry_run: bool,
    /// Impersonate this user (`Impersonate-User`), as `kubectl --as` does.
    pub as_user: Option<String>,
}

/// The API path of a resource's collection in `namespace` (`/api/v1/namespaces/NS/secrets`).
async fn collection_path(client: &kube::Client, resource: &str, namespace: Option<&str>) -> Result<String, OpsError> {
    let parsed = Resource::parse(resource).ok_or_else(|| OpsError::UnknownResource(resource.to_owned()))?;
    let api = parsed.api_resource(client).await?;
    let base = if api.group.is_empty() { format!("/api/{}", api.version) } else { format!("/apis/{}/{}", api.group, api.version) };
    Ok(match namespace {
        Some(namespace) => format!("{base}/namespaces/{namespace}/{}", api.plural),
        None => format!("{base}/{}", api.plural),
    })
}

/// Deletes each object with `ignoreStoreReadErrorWithClusterBreakingPotential: true` (one at a
/// time: this is a repair, not a bulk job), or asks whether it would go (`dry_run`).
pub async fn unsafe_delete(
    client: &kube::Client,
    objects: &[StoredObject],
    options: &UnsafeDeleteOptions,
) -> Result<RecoverReport, OpsError> {
    let started = Instant::now();
    let mut paths: BTreeMap<(String, Option<String>), String> = BTreeMap::new();
    let mut results = Vec::with_capacity(objects.len());
    let mut body = serde_json::json!({
        "apiVersion": "v1",
        "kind": "DeleteOptions",
        UNSAFE_DELETE_OPTION: true,
    });
    if options.dry_run {
        body["dryRun"] = serde_json::json!(["All"]);
    }
    let body = serde_json::to_vec(&body).expect("a JSON value serializes");
    for object in objects {
        let slot = (object.resource.clone(), object.namespace.clone());
        let collection = match paths.get(&slot) {
            Some(path) => path.clone(),
            None => {
                let path = collection_path(client, &object.resource, object.namespace.as_deref()).await?;
                paths.insert(slot, path.clone());
                path
            }
        };
        let mut request = http::Request::delete(format!("{collection}/{}", object.name)).header("Content-Type", "application/json");
        if let Some(user) = &options.as_user {
            request = request.header("Impersonate-User", user);
        }
        let request = request.body(body.clone()).map_err(|e| OpsError::Request(e.to_string()))?;
        let outcome = match client.request_text(request).await {
            Ok(_) if options.dry_run => DeleteOutcome::WouldDelete,
            Ok(_) => DeleteOutcome::Deleted,
            Err(kube::Error::Api(status)) => {
                let message = format!("{} {}: {}", status.code, status.reason, status.message);
                match status.code {
                    403 => DeleteOutcome::Refused(message),
                    404 => DeleteOutcome::NotFound,
                    // The unsafe deleter's live read decoded the object (storage's InvalidObjError,
                    // answered as a conflict; no preconditions were sent): it is not corrupt.
                    409 => DeleteOutcome::Readable(message),
                    _ => DeleteOutcome::Failed(message),
                }
            }
            Err(other) => DeleteOutcome::Failed(other.to_string()),
        };
        results.push(DeleteResult { object: object.clone(), outcome });
    }
    Ok(RecoverReport { dry_run: options.dry_run, as_user: options.as_user.clone(), results, seconds: started.elapsed().as_secs_f64() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_are_named_from_their_etcd_keys() {
        let secrets = Resource::secrets();
        let object = StoredObject::from_etcd_key(&secrets, b"/registry/secrets/lost/old-3").unwrap();
        assert_eq!((object.namespace.as_deref(), object.name.as_str()), (Some("lost"), "old-3"));
        assert_eq!(object.to_string(), "secrets lost/old-3");
        let widgets = Resource::parse("widgets.example.com").unwrap();
        let cluster = StoredObject::from_etcd_key(&widgets, b"/registry/example.com/widgets/w1").unwrap();
        assert_eq!((cluster.namespace, cluster.name.as_str()), (None, "w1"));
        assert_eq!(StoredObject::from_etcd_key(&secrets, b"/registry/configmaps/a/b"), None);
        assert_eq!(StoredObject::from_etcd_key(&secrets, b"/registry/secrets/a/"), None);
        assert_eq!(StoredObject::from_etcd_key(&secrets, b"/registry/secrets/a/b/c"), None);
    }

    #[test]
    fn only_unreachable_plugins_are_transient() {
        assert!(transient(tonic::Code::Unavailable));
        assert!(transient(tonic::Code::DeadlineExceeded));
        assert!(!transient(tonic::Code::FailedPrecondition));
        assert!(!transient(tonic::Code::Internal));
        assert!(!transient(tonic::Code::NotFound));
    }
}
