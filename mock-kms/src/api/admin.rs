//! The admin API under `/admin/` as typed requests and answers: what `mock-kms`'s admin routes
//! serve and what a client (kms-lab's stack) sends and reads. Server-free, like the rest of
//! [`crate::api`].
//!
//! | Route | Request | Answer |
//! |---|---|---|
//! | `GET /admin/health` | — | [`Health`] (200 when serving, else 503) |
//! | `GET, PUT, DELETE /admin/faults` | [`crate::api::faults::FaultProfile`] (JSON, or YAML with a yaml content type) | [`crate::api::faults::FaultProfile`] in force |
//! | `GET /admin/audit?…` | [`crate::api::AuditQuery::to_query`] | JSON lines of [`crate::api::AuditRecord`] |
//! | `GET /admin/counters` | — | [`crate::api::Counters`] |
//! | `POST /admin/unseal` | [`UnsealRequest`] | [`SealStatus`] |
//! | `GET /admin/seal-status` | — | [`SealStatus`] |
//! | `PUT, GET /admin/credentials` | [`crate::api::Credential`] list (PUT) | [`AccessKeys`] |
//! | `GET /admin/keys` | — | [`Keys`] |
//! | `POST /admin/keys/{key}/rotate` | — | [`KeyMetadataAnswer`] |
//! | `POST /admin/keys/{key}/current` | [`SetCurrentRequest`] | [`KeyMetadataAnswer`] |
//! | `POST /admin/keys/{key}/versions/{version}/disable` | — | [`KeyMetadataAnswer`] |
//! | `POST /admin/keys/{key}/versions/{version}/destroy` | — | [`KeyMetadataAnswer`] |
//! | `POST /admin/keys/{key}/versions/{version}/enable` | — | [`KeyMetadataAnswer`] |
//! | `GET /admin/cluster` | — | [`ClusterStatus`] |
//! | `GET /admin/policies` | — | [`crate::api::policy::Policies`] |
//! | `PUT, DELETE /admin/policies/{access_key}` | [`crate::api::policy::AccessPolicy`] (PUT) | [`crate::api::policy::Policies`] |
//!
//! Errors are [`crate::api::ErrorBody`] with the status of their code. The paths are built by the
//! functions of [`path`].

use serde::{Deserialize, Serialize};

use super::KeyMetadata;

/// The admin paths.
pub mod path {
    /// `GET /admin/health`.
    pub const HEALTH: &str = "/admin/health";
    /// `GET, PUT, DELETE /admin/faults`.
    pub const FAULTS: &str = "/admin/faults";
    /// `GET /admin/audit` (with [`crate::api::AuditQuery::to_query`]).
    pub const AUDIT: &str = "/admin/audit";
    /// `GET /admin/counters`.
    pub const COUNTERS: &str = "/admin/counters";
    /// `POST /admin/unseal`.
    pub const UNSEAL: &str = "/admin/unseal";
    /// `GET /admin/seal-status`.
    pub const SEAL_STATUS: &str = "/admin/seal-status";
    /// `PUT, GET /admin/credentials`.
    pub const CREDENTIALS: &str = "/admin/credentials";
    /// `GET /admin/keys`.
    pub const KEYS: &str = "/admin/keys";
    /// `GET /admin/cluster`.
    pub const CLUSTER: &str = "/admin/cluster";

    /// `GET /admin/policies`.
    pub const POLICIES: &str = "/admin/policies";

    /// `PUT, DELETE /admin/policies/{access_key}`.
    pub fn policy(access_key: &str) -> String {
        format!("/admin/policies/{access_key}")
    }

    /// `POST /admin/keys/{key_id}/rotate`.
    pub fn rotate(key_id: &str) -> String {
        format!("/admin/keys/{key_id}/rotate")
    }

    /// `POST /admin/keys/{key_id}/current`.
    pub fn current(key_id: &str) -> String {
        format!("/admin/keys/{key_id}/current")
    }

    /// `POST /admin/keys/{key_id}/versions/{version_id}/disable`.
    pub fn disable_version(key_id: &str, version_id: &str) -> String {
        format!("/admin/keys/{key_id}/versions/{version_id}/disable")
    }

    /// `POST /admin/keys/{key_id}/versions/{version_id}/enable`.
    pub fn enable_version(key_id: &str, version_id: &str) -> String {
        format!("/admin/keys/{key_id}/versions/{version_id}/enable")
    }

    /// `POST /admin/keys/{key_id}/versions/{version_id}/destroy`.
    pub fn destroy_version(key_id: &str, version_id: &str) -> String {
        format!("/admin/keys/{key_id}/versions/{version_id}/destroy")
    }
}

/// Where an unseal stands (the `/admin/seal-status` and `/admin/unseal` answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SealStatus {
    /// Whether `/v1/*` calls are refused with 503 `Sealed`.
    pub sealed: bool,
    /// Distinct shares accepted in this attempt.
    pub progress: usize,
    /// Shares needed.
    pub threshold: usize,
    /// Shares made at init.
    pub shares: usize,
}

/// `POST /admin/unseal`: one share, or `Reset` to discard the shares given so far.
/// `Debug` never shows the share.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct UnsealRequest {
    /// Base64 of one unseal share.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share: Option<String>,
    /// Discard the shares given so far.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reset: bool,
}

impl std::fmt::Debug for UnsealRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnsealRequest").field("share", &self.share.as_ref().map(|_| "<redacted>")).field("reset", &self.reset).finish()
    }
}

/// `GET, PUT /admin/credentials` answer: the accepted access keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AccessKeys {
    /// The access keys, sorted.
    pub access_keys: Vec<String>,
}

/// `GET /admin/keys` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Keys {
    /// Every key.
    pub keys: Vec<KeyMetadata>,
}

/// The answer of every admin key change (rotate, set current, disable / enable a version).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct KeyMetadataAnswer {
    /// The key after the change.
    pub key_metadata: KeyMetadata,
}

/// `POST /admin/keys/{key_id}/current`: makes an existing version current again (A→B→A).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct SetCurrentRequest {
    /// The version to make current.
    pub version_id: String,
}

/// `GET /admin/health` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Health {
    /// `ok`, `sealed` or `starting`.
    pub status: String,
    /// The node.
    pub node_id: String,
    /// Whether it is sealed.
    pub sealed: bool,
    /// Whether it serves `/v1/*`.
    pub ready: bool,
    /// How many keys it holds.
    pub keys: usize,
    /// Its keystore's logical clock.
    pub clock: u64,
}

/// One node in [`ClusterStatus`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NodeStatus {
    /// The node.
    pub node_id: String,
    /// Its URL.
    pub url: String,
    /// Whether it serves `/v1/*`.
    pub ready: bool,
    /// Whether its listener is open (not in an outage).
    pub listening: bool,
    /// Calls it holds unanswered (the `hang` fault).
    pub hung_requests: usize,
    /// Its keystore's logical clock.
    pub clock: u64,
}

/// `GET /admin/cluster` answer: this node's peers and every node of its process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ClusterStatus {
    /// The node that answered.
    pub node_id: String,
    /// Its peers' URLs.
    pub peers: Vec<String>,
    /// Every node of its process.
    pub nodes: Vec<NodeStatus>,
}

/// `POST /admin/cluster/snapshot` answer (node to node).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SnapshotPushAnswer {
    /// Whether the pushed snapshot changed the receiver's state.
    pub changed: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_stay_out_of_debug() {
        let credential = crate::api::Credential::new("AK", "very-secret");
        assert_eq!(format!("{credential:?}"), r#"Credential { access_key: "AK", secret_key: "<redacted>" }"#);
        assert_eq!(serde_json::to_string(&credential).unwrap(), r#"{"AccessKey":"AK","SecretKey":"very-secret"}"#);
        let unseal = UnsealRequest { share: Some("c2hhcmU=".into()), reset: false };
        assert!(!format!("{unseal:?}").contains("c2hhcmU="));
        assert_eq!(serde_json::to_string(&unseal).unwrap(), r#"{"Share":"c2hhcmU="}"#);
    }
}
