//! The custom resources of ack-secret-manager (`alibabacloud.com/v1alpha1`, its commit 223ebff,
//! `pkg/apis/alibabacloud/v1alpha1`): [`ExternalSecret`] (what to sync into the Secret of its
//! name) and [`SecretStore`] (the credential to read with). The CRDs are generated from these
//! types ([`crds`]) and are a superset of ack-secret-manager's: every field of theirs with the
//! same type and the same required fields (`tests/ack_schema.rs` compares them), so every object
//! of theirs applies unchanged and what their schema refuses ours refuses at admission; our
//! additions are optional (`refreshInterval`, `deletionPolicy`, the status). What a schema
//! cannot see is a `Ready=False` condition naming the field (see [`crate::decide`]).

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

/// What an ExternalSecret syncs into the Secret of its own name: `data` entries (a whole remote
/// value, or what `jmesPath` selects from it) and `dataProcess` entries (every top-level key of a
/// JSON/YAML remote value, renamed by `replaceRule`). ack-secret-manager's fields and their
/// schema exactly (`provider`, `data`, `dataProcess`, `type`); ours are additive and optional
/// (`refreshInterval`, `deletionPolicy`, the status).
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "alibabacloud.com",
    version = "v1alpha1",
    kind = "ExternalSecret",
    namespaced,
    status = "ExternalSecretStatus",
    shortname = "es",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Last Sync","type":"date","jsonPath":".status.lastSyncTime"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ExternalSecretSpec {
    /// The service the entries are read from: `kms` (the default) or `oos` (not served by the lab).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// Entries: each puts one remote secret under `name`, or what each `jmesPath` selects under its alias.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub data: Vec<DataSource>,
    /// Entries whose JSON/YAML remote value is split into one Secret key per top-level key.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub data_process: Vec<DataProcess>,
    /// The Secret's type (default `Opaque`).
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "type")]
    pub type_: Option<String>,
    /// kms-secret-sync only: how often to read the remote secrets again, e.g. `30s`, `5m`
    /// (default: the controller's `--polling-interval`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(ms|s|m|h))+$"))]
    pub refresh_interval: Option<String>,
    /// kms-secret-sync only: what happens to the Secret when the ExternalSecret is deleted
    /// (`Delete`, the default, as ack-secret-manager does; or `Retain`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_policy: Option<DeletionPolicy>,
}

/// One remote secret (a version or stage of it) and where it goes in the Secret.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DataSource {
    /// The store to read with; without it, the controller's own credential
    /// (`ACCESS_KEY_ID`/`SECRET_ACCESS_KEY`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_store_ref: Option<SecretStoreRef>,
    /// The remote secret's name.
    pub key: String,
    /// The key in the Secret (a `data` entry without `jmesPath` needs it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The version stage to read (`ACSCurrent` when neither this nor `versionId` is given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_stage: Option<String>,
    /// The version to read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_id: Option<String>,
    /// JMESPath expressions into the JSON/YAML remote value, each put under its own Secret key.
    #[serde(default, rename = "jmesPath", skip_serializing_if = "Vec::is_empty")]
    pub jmes_path: Vec<JmesPathObject>,
}

/// A store, by name and namespace.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, JsonSchema)]
pub struct SecretStoreRef {
    /// The SecretStore's name.
    pub name: String,
    /// Its namespace (another namespace's store must allow this one: see [`ALLOW_NAMESPACES`]).
    pub namespace: String,
}

/// One JMESPath expression and the Secret key its result goes under.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JmesPathObject {
    /// The expression (<https://jmespath.org/specification.html>), e.g. `friends[0].name`.
    pub path: String,
    /// The key in the Secret.
    pub object_alias: String,
}

/// A remote secret split into one Secret key per top-level key of its JSON/YAML value.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct DataProcess {
    /// The remote secret to split.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extract: Option<DataSource>,
    /// Renames of the keys, applied in order.
    #[serde(default, rename = "replaceRule", skip_serializing_if = "Vec::is_empty")]
    pub replace_rule: Vec<ReplaceRule>,
}

/// A key rename: every match of `source` (a regular expression) is replaced by `target`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct ReplaceRule {
    /// The replacement (`$1`, `${name}` refer to groups).
    pub target: String,
    /// The regular expression.
    pub source: String,
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

/// What the controller last saw and did (kms-secret-sync only; ack-secret-manager's is empty).
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
    /// Why: one of [`crate::decide::Reason`]'s names.
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
    /// The entry (`spec.data[0]`, `spec.dataProcess[1].extract`).
    pub entry: String,
    /// The remote secret.
    pub key: String,
    /// The remote version.
    pub version_id: String,
}

/// The annotation by which a SecretStore lets ExternalSecrets of other namespaces use it: a
/// comma-separated list of namespaces, or `*`. (ack-secret-manager lets any ExternalSecret use
/// any namespace's store; kms-secret-sync asks the store's owner.)
pub const ALLOW_NAMESPACES: &str = "alibabacloud.com/allow-namespaces";

/// A store: the credential the remote secrets are read with (ack-secret-manager's schema exactly).
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[kube(group = "alibabacloud.com", version = "v1alpha1", kind = "SecretStore", namespaced, status = "SecretStoreStatus")]
pub struct SecretStoreSpec {
    /// Alibaba Cloud KMS's secrets manager.
    #[serde(default, rename = "KMS", skip_serializing_if = "Option::is_none")]
    pub kms: Option<KmsProvider>,
    /// Alibaba Cloud OOS encrypted parameters (not served by the lab).
    #[serde(default, rename = "OOS", skip_serializing_if = "Option::is_none")]
    pub oos: Option<OosProvider>,
}

/// A SecretStore's status (empty, as ack-secret-manager's).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct SecretStoreStatus {}

/// How KMS is reached: the shared gateway with RAM credentials, or a dedicated gateway.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct KmsProvider {
    /// Credentials for the shared gateway.
    #[serde(default, rename = "KMSAuth", skip_serializing_if = "Option::is_none")]
    pub auth: Option<RamAuth>,
    /// A dedicated KMS instance's gateway (not served by the lab).
    #[serde(default, rename = "dedicatedKMSAuth", skip_serializing_if = "Option::is_none")]
    pub dedicated: Option<DedicatedKmsAuth>,
}

/// How OOS is reached.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct OosProvider {
    /// Credentials for OOS.
    #[serde(default, rename = "OOSAuth", skip_serializing_if = "Option::is_none")]
    pub auth: Option<RamAuth>,
}

/// RAM credentials: an access key pair kept in Secrets, a RAM role (with OIDC: RRSA), or a
/// cross-account role on top. The lab serves access keys; roles need Alibaba's STS.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RamAuth {
    /// Where the AccessKey ID is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key: Option<SecretRef>,
    /// Where the AccessKey secret is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key_secret: Option<SecretRef>,
    /// A RAM role to assume.
    #[serde(default, rename = "ramRoleARN", skip_serializing_if = "Option::is_none")]
    pub ram_role_arn: Option<String>,
    /// The role session's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ram_role_session_name: Option<String>,
    /// The OIDC provider (RRSA).
    #[serde(default, rename = "oidcProviderARN", skip_serializing_if = "Option::is_none")]
    pub oidc_provider_arn: Option<String>,
    /// The OIDC token file (RRSA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oidc_token_file_path: Option<String>,
    /// How long a role session lasts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_session_expiration: Option<String>,
    /// A role of another account to assume on top.
    #[serde(default, rename = "remoteRamRoleARN", skip_serializing_if = "Option::is_none")]
    pub remote_ram_role_arn: Option<String>,
    /// That role session's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_ram_role_session_name: Option<String>,
}

/// A dedicated KMS instance's gateway and client key.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DedicatedKmsAuth {
    /// `https`.
    pub protocol: String,
    /// The gateway's host.
    pub endpoint: String,
    /// The gateway's CA certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<String>,
    /// Skip verifying the gateway's certificate.
    #[serde(default, rename = "ignoreSSL", skip_serializing_if = "Option::is_none")]
    pub ignore_ssl: Option<bool>,
    /// Where the client key is.
    pub client_key_content: SecretRef,
    /// Where the client key's password is.
    pub password: SecretRef,
}

/// A key of a Kubernetes Secret.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct SecretRef {
    /// The Secret's name.
    pub name: String,
    /// The Secret's namespace (kms-secret-sync reads credentials in the store's own namespace only).
    pub namespace: String,
    /// The key in the Secret.
    pub key: String,
}

/// The two CRDs, generated from the types. `spec` is optional in both, as in ack-secret-manager's
/// (kube-derive makes it required: dropped here so every object of theirs applies).
pub fn crds() -> Vec<CustomResourceDefinition> {
    let mut crds = vec![ExternalSecret::crd(), SecretStore::crd()];
    for crd in &mut crds {
        for version in &mut crd.spec.versions {
            let schema = version.schema.as_mut().and_then(|s| s.open_api_v3_schema.as_mut());
            if let Some(required) = schema.and_then(|s| s.required.as_mut()) {
                required.retain(|field| field != "spec");
            }
        }
    }
    crds
}

/// The two CRDs as one multi-document YAML (what `kms-secret-sync crd` prints).
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
    fn crds_are_named_as_the_seed_and_keep_their_spec_optional() {
        let crds = crds();
        let names: Vec<&str> = crds.iter().map(|c| c.metadata.name.as_deref().unwrap_or_default()).collect();
        assert_eq!(names, ["externalsecrets.alibabacloud.com", "secretstores.alibabacloud.com"]);
        for crd in &crds {
            let schema = serde_json::to_value(&crd.spec.versions[0].schema).unwrap();
            assert!(!schema["openAPIV3Schema"]["required"].as_array().is_some_and(|r| r.contains(&"spec".into())), "{schema}");
            assert!(crd.spec.versions[0].subresources.as_ref().unwrap().status.is_some(), "the status is a subresource");
        }
        let schema = serde_json::to_value(&crds[0].spec.versions[0].schema).unwrap();
        let spec = &schema["openAPIV3Schema"]["properties"]["spec"];
        assert_eq!(spec["properties"]["deletionPolicy"]["enum"], serde_json::json!(["Delete", "Retain"]));
        assert_eq!(spec["properties"]["data"]["items"]["required"], serde_json::json!(["key"]));
        assert!(crds_yaml().unwrap().contains("kind: CustomResourceDefinition"));
    }
}
