//! The admin API under `/admin/` as typed requests and answers: what `mock-kms`'s admin routes
//! serve and what a client (kms-lab's stack) sends and reads. Server-free, like the rest of
//! [`crate::api`].
//!
//! | Route | Request | Answer |
//! |---|---|---|
//! | `GET /admin/health` | — | [`Health`] (200 when serving, else 503) |
//! | `GET, PUT, DELETE /admin/faults` | [`FaultProfile`] (JSON, or YAML with a yaml content type) | [`FaultProfile`] in force |
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
//! | `GET /admin/policies` | — | [`Policies`] |
//! | `PUT, DELETE /admin/policies/{access_key}` | [`AccessPolicy`] (PUT) | [`Policies`] |
//!
//! Errors are [`crate::api::ErrorBody`] with the status of their code. The paths are built by the
//! functions of [`path`].

use serde::{Deserialize, Serialize};

use super::{Action, KeyMetadata};

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

// ---- Fault profiles (`/admin/faults`); their validation and YAML parsing live in
// `crate::faults` (server side).

/// Which faults are active. Every field is optional; an empty profile means "no faults".
///
/// Each fault except `outage` takes `actions`: the actions it applies to (all when absent).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FaultProfile {
    /// Seed for this profile's random draws (overrides `--seed`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Added latency.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency: Option<LatencyFault>,
    /// A share of calls fails with 500 InternalFailure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_rate: Option<ErrorRateFault>,
    /// A token-bucket quota; calls over it get 429 Throttling with `Retry-After`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub throttle: Option<ThrottleFault>,
    /// The node stops accepting connections (connection refused) until cleared.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outage: Option<OutageFault>,
    /// Calls are read and never answered until cleared.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hang: Option<HangFault>,
    /// Returned `Plaintext` / `CiphertextBlob` get a flipped byte.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub corrupt: Option<CorruptFault>,
    /// Keys treated as disabled (409 KeyNotEnabled; DescribeKey shows Disabled).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_disabled: Option<KeyDisabledFault>,
    /// Actions refused with 403 Forbidden.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deny: Option<DenyFault>,
}

impl FaultProfile {
    /// Every action one of its faults applies to; `None` when some fault applies to every call
    /// (an `outage`, or a fault without `actions`). An empty profile touches no action.
    pub fn actions(&self) -> Option<Vec<Action>> {
        if self.outage.is_some() {
            return None;
        }
        let lists = [
            self.latency.as_ref().map(|f| &f.actions),
            self.error_rate.as_ref().map(|f| &f.actions),
            self.throttle.as_ref().map(|f| &f.actions),
            self.hang.as_ref().map(|f| &f.actions),
            self.corrupt.as_ref().map(|f| &f.actions),
            self.key_disabled.as_ref().map(|f| &f.actions),
            self.deny.as_ref().map(|f| &f.actions),
        ];
        let mut actions = Vec::new();
        for list in lists.into_iter().flatten() {
            actions.extend(list.as_ref()?.iter().copied());
        }
        actions.sort();
        actions.dedup();
        Some(actions)
    }
}

/// Added latency: `fixed_ms` plus a sample of `distribution` (clamped at 0).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatencyFault {
    /// Milliseconds added to every call.
    #[serde(default)]
    pub fixed_ms: f64,
    /// A random part added on top.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distribution: Option<LatencyDistribution>,
    /// The actions it applies to (all when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actions: Option<Vec<Action>>,
}

/// A latency distribution, tagged by `kind`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum LatencyDistribution {
    /// Uniform in `[min_ms, max_ms]`.
    Uniform {
        /// Lower bound.
        min_ms: f64,
        /// Upper bound.
        max_ms: f64,
    },
    /// Normal (Gaussian), clamped at 0.
    Normal {
        /// Mean.
        mean_ms: f64,
        /// Standard deviation.
        stddev_ms: f64,
    },
    /// Exponential with the given mean.
    Exponential {
        /// Mean.
        mean_ms: f64,
    },
}

/// A share of calls fails with 500 InternalFailure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorRateFault {
    /// Probability of failure per call, 0 to 1.
    pub rate: f64,
    /// The actions it applies to (all when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actions: Option<Vec<Action>>,
}

/// A token bucket: `per_second` tokens per second, up to `burst` saved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThrottleFault {
    /// The quota, calls per second (may be fractional).
    pub per_second: f64,
    /// The bucket size (defaults to `per_second`, at least 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<f64>,
    /// The actions it applies to (all when absent); they share one bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actions: Option<Vec<Action>>,
}

/// The node closes its listener and drops its connections: clients get "connection refused".
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutageFault {
    /// Clear the outage by itself after this long (the admin API is down too during an outage).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
}

/// Calls are accepted and read, then not answered until the fault is cleared.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HangFault {
    /// Clear the hang by itself after this long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// The actions it applies to (all when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actions: Option<Vec<Action>>,
}

/// Returned `Plaintext` / `CiphertextBlob` get one byte flipped (all 8 bits).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorruptFault {
    /// Probability per call, 0 to 1 (default 1).
    #[serde(default = "one")]
    pub rate: f64,
    /// The actions it applies to (all when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actions: Option<Vec<Action>>,
}

fn one() -> f64 {
    1.0
}

/// Keys treated as disabled.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyDisabledFault {
    /// The keys; an entry `key/version` disables only that version (for Decrypt).
    pub key_ids: Vec<String>,
    /// The actions it applies to (all when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actions: Option<Vec<Action>>,
}

/// Actions refused with 403 Forbidden.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DenyFault {
    /// The denied actions (all when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actions: Option<Vec<Action>>,
}

// ---- Access policies (`/admin/policies`): an allow-list per access key.

/// An action as a policy names it: `kms:<Action>` (e.g. `kms:GetSecretValue`), or `kms:*` for all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum PolicyAction {
    /// `kms:*`: every action.
    All,
    /// `kms:<Action>`.
    Action(Action),
}

impl PolicyAction {
    /// Whether this entry allows `action`.
    pub fn allows(self, action: Action) -> bool {
        match self {
            Self::All => true,
            Self::Action(allowed) => allowed == action,
        }
    }
}

impl std::fmt::Display for PolicyAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::All => f.write_str("kms:*"),
            Self::Action(action) => write!(f, "kms:{action}"),
        }
    }
}

impl std::str::FromStr for PolicyAction {
    type Err = String;

    /// Parses `kms:*` or `kms:<Action>`; the error lists every valid name.
    fn from_str(name: &str) -> Result<Self, String> {
        let unknown = || {
            let known: Vec<String> = std::iter::once("kms:*".to_owned()).chain(Action::ALL.iter().map(|a| format!("kms:{a}"))).collect();
            format!("unknown policy action `{}` (known: {})", name.escape_debug(), known.join(", "))
        };
        match name.strip_prefix("kms:") {
            Some("*") => Ok(Self::All),
            Some(action) => Action::from_name(action).map(Self::Action).ok_or_else(unknown),
            None => Err(unknown()),
        }
    }
}

impl TryFrom<String> for PolicyAction {
    type Error = String;

    fn try_from(name: String) -> Result<Self, String> {
        name.parse()
    }
}

impl From<PolicyAction> for String {
    fn from(action: PolicyAction) -> String {
        action.to_string()
    }
}

/// The resource a call acts on, as policies match it: `key/<KeyId>`, `secret/<SecretName>`, or
/// `key/*` and `secret/*` for the list actions.
pub fn resource_kind(action: Action) -> &'static str {
    if action.is_secret_action() { "secret" } else { "key" }
}

/// Whether resource pattern `pattern` (`*` matches any run of characters) matches `resource`.
pub fn resource_matches(pattern: &str, resource: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == resource;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !resource.starts_with(first) || resource.len() < first.len() + last.len() || !resource.ends_with(last) {
        return false;
    }
    let mut rest = &resource[first.len()..resource.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(at) => rest = &rest[at + middle.len()..],
            None => return false,
        }
    }
    true
}

/// One allow statement: the actions it allows on the resources it names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct PolicyStatement {
    /// The actions allowed (`kms:GetSecretValue`, `kms:Decrypt`, `kms:*`).
    pub actions: Vec<PolicyAction>,
    /// The resources, as patterns: `secret/db-*`, `key/lab-key`, `*`.
    pub resources: Vec<String>,
}

/// An access key's policy: an allow-list. A call is allowed when a statement allows its action
/// on its resource; an access key without a policy may call everything (the lab default).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct AccessPolicy {
    /// The allow statements.
    pub statements: Vec<PolicyStatement>,
}

impl AccessPolicy {
    /// A policy of one statement: `actions` on `resources`.
    pub fn allow(actions: impl IntoIterator<Item = Action>, resources: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self {
            statements: vec![PolicyStatement {
                actions: actions.into_iter().map(PolicyAction::Action).collect(),
                resources: resources.into_iter().map(Into::into).collect(),
            }],
        }
    }

    /// Whether the policy allows `action` on `resource`.
    pub fn allows(&self, action: Action, resource: &str) -> bool {
        self.statements
            .iter()
            .any(|s| s.actions.iter().any(|a| a.allows(action)) && s.resources.iter().any(|p| resource_matches(p, resource)))
    }

    /// Checks each resource pattern: `*`, or `key/…` / `secret/…`.
    pub fn validate(&self) -> Result<(), String> {
        for (index, statement) in self.statements.iter().enumerate() {
            for resource in &statement.resources {
                if resource != "*" && !resource.starts_with("key/") && !resource.starts_with("secret/") {
                    return Err(format!(
                        "Statements[{index}].Resources: `{}` is not a resource pattern: use `*`, `key/<KeyId>` or `secret/<SecretName>` (`*` matches any characters)",
                        resource.escape_debug()
                    ));
                }
            }
        }
        Ok(())
    }
}

/// `GET /admin/policies` answer (and of `PUT`, `DELETE /admin/policies/{access_key}`): every
/// access key's policy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Policies {
    /// The policies by access key.
    pub policies: std::collections::BTreeMap<String, AccessPolicy>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Caller;

    #[test]
    fn callers_and_actions_are_named_as_on_the_wire() {
        let error = "Decrpyt".parse::<Action>().unwrap_err().to_string();
        assert!(error.starts_with("unknown action `Decrpyt` (known: CreateKey, DescribeKey,"), "{error}");
        assert_eq!(serde_json::from_str::<Action>("\"Decrypt\"").unwrap(), Action::Decrypt);
        // The name is what serde writes, for every action.
        for &action in Action::ALL {
            assert_eq!(serde_json::to_value(action).unwrap(), serde_json::json!(action.name()));
            assert_eq!(action.name().parse::<Action>(), Ok(action));
        }
        assert_eq!(Action::ALL.len(), 19);
        assert_eq!(Action::UpdateSecretVersionStage.path(), "/v1/UpdateSecretVersionStage");
        assert_eq!(Caller::HealthProbe.name(), "health-probe");
        for &caller in Caller::ALL {
            assert_eq!(serde_json::to_string(&caller).unwrap(), format!("\"{}\"", caller.name()));
            assert_eq!(caller.name().parse::<Caller>(), Ok(caller));
        }
        assert!("probe".parse::<Caller>().unwrap_err().to_string().contains("(known: health-probe, request)"));
    }

    #[test]
    fn policies_parse_typed_and_match_resource_patterns() {
        let policy: AccessPolicy = serde_json::from_str(
            r#"{"Statements":[{"Actions":["kms:GetSecretValue","kms:Decrypt"],"Resources":["secret/db-*","key/lab-key"]}]}"#,
        )
        .unwrap();
        assert!(policy.allows(Action::GetSecretValue, "secret/db-main"));
        assert!(policy.allows(Action::Decrypt, "key/lab-key"));
        assert!(!policy.allows(Action::GetSecretValue, "secret/web"));
        assert!(!policy.allows(Action::PutSecretValue, "secret/db-main"));
        let typo = serde_json::from_str::<AccessPolicy>(r#"{"Statements":[{"Actions":["kms:GetSecretVal"],"Resources":["*"]}]}"#)
            .unwrap_err()
            .to_string();
        assert!(typo.contains("unknown policy action `kms:GetSecretVal`") && typo.contains("kms:GetSecretValue"), "{typo}");
        assert!(AccessPolicy::allow([Action::Encrypt], ["lab-key"]).validate().unwrap_err().contains("key/<KeyId>"));
        for (pattern, resource, expected) in
            [("*", "key/k", true), ("secret/a*c", "secret/abc", true), ("secret/a*c", "secret/ab", false), ("a*b*c", "aXbYc", true)]
        {
            assert_eq!(resource_matches(pattern, resource), expected, "{pattern} {resource}");
        }
    }

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
