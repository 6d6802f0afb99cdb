//! The custom resources, in the shape of ack-secret-manager's `alibabacloud.com/v1alpha1`:
//! [`ExternalSecret`] (what to sync into which Secret), [`SecretStore`] (a store in one
//! namespace) and [`ClusterSecretStore`] (a store for every namespace). The CRDs are generated
//! from these types ([`crds`]); their OpenAPI schema refuses malformed specs at admission, and
//! what a schema cannot see is a `Ready=False` condition naming the field (see [`crate::decide`]).

use std::collections::BTreeMap;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{CustomResource, CustomResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The API group of the CRDs.
pub const GROUP: &str = "alibabacloud.com";
/// The finalizer the controller puts on every ExternalSecret it syncs.
pub const FINALIZER: &str = "alibabacloud.com/secret-sync";
/// The condition type the controller sets.
pub const CONDITION_READY: &str = "Ready";

/// What an ExternalSecret syncs: entries of remote secrets into one Kubernetes Secret.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "alibabacloud.com",
    version = "v1alpha1",
    kind = "ExternalSecret",
    namespaced,
    status = "ExternalSecretStatus",
    shortname = "es",
    printcolumn = r#"{"name":"Store","type":"string","jsonPath":".spec.secretStoreRef.name"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Last Sync","type":"date","jsonPath":".status.lastSyncTime"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ExternalSecretSpec {
    /// The store the remote secrets are read from.
    pub secret_store_ref: StoreRef,
    /// The entries: each puts one remote secret (or one property of it) under one key of the Secret.
    #[schemars(length(min = 1))]
    pub data: Vec<DataEntry>,
    /// The Secret to write (default: a Secret named like the ExternalSecret, type Opaque).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<Target>,
    /// How often to read the remote secrets again, e.g. `30s`, `5m` (default: the controller's
    /// `--polling-interval`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(ms|s|m|h))+$"))]
    pub refresh_interval: Option<String>,
    /// What happens to the Secret when the ExternalSecret is deleted.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

/// Which store an ExternalSecret reads from.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StoreRef {
    /// The store's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// `SecretStore` (in the ExternalSecret's namespace, the default) or `ClusterSecretStore`.
    #[serde(default)]
    pub kind: StoreKind,
}

/// The kinds of store.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum StoreKind {
    /// A [`SecretStore`] in the ExternalSecret's namespace.
    #[default]
    SecretStore,
    /// A [`ClusterSecretStore`].
    ClusterSecretStore,
}

impl std::fmt::Display for StoreKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::SecretStore => "SecretStore",
            Self::ClusterSecretStore => "ClusterSecretStore",
        })
    }
}

/// One entry: a remote secret (a version of it, a property of it) under one key of the Secret.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DataEntry {
    /// The remote secret's name in the store.
    #[schemars(length(min = 1, max = 192), regex(pattern = r"^[A-Za-z0-9_./-]+$"))]
    pub key: String,
    /// The key in the Kubernetes Secret.
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub name: String,
    /// The version stage to read (`ACSCurrent` when neither this nor `versionId` is given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_stage: Option<String>,
    /// The version to read (pins the entry to one version).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_id: Option<String>,
    /// A JSON path into the remote value (`$.password`, or just `password`): the remote value
    /// must be JSON, and the Secret gets the one value the path selects (a string as is, other
    /// JSON as JSON text). Without it the Secret gets the whole remote value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub property: Option<String>,
}

/// The Secret an ExternalSecret writes.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Target {
    /// The Secret's name (default: the ExternalSecret's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"))]
    pub name: Option<String>,
    /// The Secret's type (default `Opaque`).
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "type")]
    pub type_: Option<String>,
    /// Labels to put on the Secret.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations to put on the Secret.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// What happens to the Secret when its ExternalSecret is deleted.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum DeletionPolicy {
    /// The Secret is deleted with the ExternalSecret.
    #[default]
    Delete,
    /// The Secret stays (the controller drops its owner reference).
    Retain,
}

/// What the controller last saw and did.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExternalSecretStatus {
    /// The `Ready` condition.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// When the remote secrets were last read and the Secret confirmed, RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_time: Option<String>,
    /// The remote version each entry holds in the Secret (from the last successful sync).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub synced_versions: Vec<SyncedVersion>,
    /// The generation of the spec the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

impl ExternalSecretStatus {
    /// The `Ready` condition, if set.
    pub fn ready(&self) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == CONDITION_READY)
    }
}

/// A status condition (the shape of `metav1.Condition`).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// The condition type (`Ready`).
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// Why: `Synced`, `InvalidSpec`, `StoreNotFound`, `StoreMisconfigured`, `StoreUnavailable`,
    /// `Throttled`, `AccessDenied`, `RemoteSecretDeleted`, `PropertyNotFound`, `SecretConflict`, `StoreError`.
    pub reason: String,
    /// What happened and what to do; never a secret value.
    pub message: String,
    /// When the status last changed, RFC 3339.
    pub last_transition_time: String,
}

/// The remote version an entry holds in the Secret.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SyncedVersion {
    /// The key in the Secret.
    pub name: String,
    /// The remote secret.
    pub key: String,
    /// The remote version.
    pub version_id: String,
}

/// A store: where the mock KMS's secrets manager is and which credential reads it.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[kube(group = "alibabacloud.com", version = "v1alpha1", kind = "SecretStore", namespaced, shortname = "ss")]
#[serde(rename_all = "camelCase")]
pub struct SecretStoreSpec {
    /// The KMS provider.
    #[serde(rename = "KMS")]
    pub kms: KmsProvider,
}

/// A store every namespace may use (credential references name their namespace).
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[kube(group = "alibabacloud.com", version = "v1alpha1", kind = "ClusterSecretStore", shortname = "css")]
#[serde(rename_all = "camelCase")]
pub struct ClusterSecretStoreSpec {
    /// The KMS provider.
    #[serde(rename = "KMS")]
    pub kms: KmsProvider,
}

/// The KMS a store reads from.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KmsProvider {
    /// The KMS endpoint, `http://host:port` (default: the controller's `--store-endpoint`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^https?://[^/\s]+/?$"))]
    pub endpoint: Option<String>,
    /// The credential (default: the controller's `--access-key` / `KMS_SECRET_SYNC_SECRET_KEY`).
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "KMSAuth")]
    pub auth: Option<KmsAuth>,
}

/// An access key pair kept in a Kubernetes Secret.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KmsAuth {
    /// Where the access key is.
    pub access_key: SecretKeyRef,
    /// Where the access key's secret is.
    pub access_key_secret: SecretKeyRef,
}

/// A key of a Kubernetes Secret.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// The Secret's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The key in the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
    /// The Secret's namespace (a ClusterSecretStore must name it; a SecretStore's is its own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// The three CRDs, generated from the types.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![ExternalSecret::crd(), SecretStore::crd(), ClusterSecretStore::crd()]
}

/// The three CRDs as one multi-document YAML (what `kms-secret-sync crd` prints).
pub fn crds_yaml() -> Result<String, serde_yaml::Error> {
    let mut out = String::new();
    for crd in crds() {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&crd)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crds_are_structural_and_named_as_the_seed() {
        let names: Vec<String> = crds().into_iter().map(|c| c.metadata.name.unwrap_or_default()).collect();
        assert_eq!(names, ["externalsecrets.alibabacloud.com", "secretstores.alibabacloud.com", "clustersecretstores.alibabacloud.com"]);
        let es = ExternalSecret::crd();
        let schema = serde_json::to_value(&es.spec.versions[0].schema).unwrap();
        let spec = &schema["openAPIV3Schema"]["properties"]["spec"];
        assert_eq!(spec["properties"]["data"]["minItems"], 1);
        assert_eq!(spec["properties"]["deletionPolicy"]["enum"], serde_json::json!(["Delete", "Retain"]));
        assert!(spec["required"].as_array().unwrap().contains(&"secretStoreRef".into()));
        assert!(es.spec.versions[0].subresources.as_ref().unwrap().status.is_some(), "the status is a subresource");
        assert!(crds_yaml().unwrap().contains("kind: CustomResourceDefinition"));
    }
}
