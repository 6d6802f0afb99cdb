//! The mock KMS's HTTP/JSON API, in the style of a cloud KMS (Alibaba KMS / JD Cloud KMS):
//! request and response bodies, error codes, and request signing. This module is the "SDK":
//! it has no server dependencies, and the reference plugin builds its client on it.
//!
//! Every call is `POST /v1/<Action>` with a JSON body and four headers:
//! `X-Kms-Access-Key`, `X-Kms-Timestamp` (Unix milliseconds), `X-Kms-Nonce` (unique per
//! request) and `X-Kms-Signature` = hex HMAC-SHA256(secret key, [`canonical_request`]).
//! Errors come back as [`ErrorBody`] with an HTTP status that fits the [`ErrorCode`].

use std::collections::BTreeMap;

pub mod admin;
pub mod audit;
#[cfg(feature = "client")]
pub mod client;
pub mod faults;
pub mod policy;
pub mod secrets;
pub mod sign;
pub mod status;

#[cfg(feature = "client")]
pub use client::{CallError, Client, Decrypted, Encrypted};

pub use audit::{AuditAction, AuditQuery, AuditRecord, Counter, Counters, Outcome, parse_audit_lines};

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Header carrying the access key.
pub const HEADER_ACCESS_KEY: &str = "x-kms-access-key";
/// Header carrying the request time, Unix milliseconds.
pub const HEADER_TIMESTAMP: &str = "x-kms-timestamp";
/// Header carrying a value unique to this request (replay protection).
pub const HEADER_NONCE: &str = "x-kms-nonce";
/// Header carrying the signature.
pub const HEADER_SIGNATURE: &str = "x-kms-signature";
/// Header on every response naming the request in the audit log.
pub const HEADER_REQUEST_ID: &str = "x-kms-request-id";
/// Header saying why a KMS call was made ([`Caller`] by name); the mock KMS records it in the
/// audit log (a request without it is recorded with no caller).
pub const HEADER_CALLER: &str = "x-kms-caller";
/// How far a request's timestamp may be from the server's clock.
pub const MAX_CLOCK_SKEW_MS: u64 = 5 * 60 * 1000;

/// The actions of the API, each served at `POST /v1/<Action>`; [`Action::ALL`] and
/// [`Action::name`] (the variant's name) follow from the variants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, strum::IntoStaticStr, strum::VariantArray)]
pub enum Action {
    /// Create a key.
    CreateKey,
    /// Describe one key.
    DescribeKey,
    /// List all keys.
    ListKeys,
    /// Encrypt up to 6 KiB with a key's current version.
    Encrypt,
    /// Decrypt a ciphertext blob (it names its key and version).
    Decrypt,
    /// Generate a random data key, returned in plaintext and encrypted.
    GenerateDataKey,
    /// Add a new key version and make it current; old versions still decrypt.
    RotateKey,
    /// Disable a key: it neither encrypts nor decrypts.
    DisableKey,
    /// Enable a disabled key.
    EnableKey,
    /// Schedule a key for deletion: it stops working at once.
    ScheduleKeyDeletion,
    /// Create a secret with its first version ([`secrets`]).
    CreateSecret,
    /// Add a version to a secret, by default made current.
    PutSecretValue,
    /// Read a secret's value by version id or stage.
    GetSecretValue,
    /// List every secret (no values).
    ListSecrets,
    /// Describe one secret: versions and stages (no values).
    DescribeSecret,
    /// Move a version stage to another version, or remove it.
    UpdateSecretVersionStage,
    /// Add a new current version (given or generated value).
    RotateSecret,
    /// Schedule a secret for deletion after a recovery window (or delete it at once).
    DeleteSecret,
    /// Cancel a secret's scheduled deletion.
    RestoreSecret,
}

impl Action {
    /// Every action, in declaration order.
    pub const ALL: &'static [Action] = <Self as strum::VariantArray>::VARIANTS;

    /// The action's name, as in its path.
    pub fn name(self) -> &'static str {
        self.into()
    }

    /// The request path, `/v1/<Action>`.
    pub fn path(self) -> String {
        format!("/v1/{}", self.name())
    }

    /// Whether the action is one of the secrets manager's ([`secrets`]).
    pub fn is_secret_action(self) -> bool {
        matches!(
            self,
            Self::CreateSecret
                | Self::PutSecretValue
                | Self::GetSecretValue
                | Self::ListSecrets
                | Self::DescribeSecret
                | Self::UpdateSecretVersionStage
                | Self::RotateSecret
                | Self::DeleteSecret
                | Self::RestoreSecret
        )
    }

    /// Parses an action name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|a| a.name() == name)
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Action {
    type Err = UnknownName;

    /// Parses an action name; the error lists every action.
    fn from_str(name: &str) -> Result<Self, UnknownName> {
        Self::from_name(name).ok_or_else(|| UnknownName::new("action", name, Self::ALL.iter().map(|a| a.name())))
    }
}

/// A name that is not one of an enum's names, e.g. ``unknown outcome `KeyNotEnabeld` (known: Ok, …)``.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownName {
    /// What was being named (`action`, `outcome`, `caller`).
    pub kind: &'static str,
    /// The name given.
    pub name: String,
    /// Every valid name.
    pub known: Vec<&'static str>,
}

impl UnknownName {
    /// The error for `name`, an unknown `kind`, listing `known`.
    pub fn new(kind: &'static str, name: &str, known: impl IntoIterator<Item = &'static str>) -> Self {
        Self { kind, name: name.to_owned(), known: known.into_iter().collect() }
    }
}

impl std::fmt::Display for UnknownName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "unknown {} `{}` (known: {})", self.kind, self.name.escape_debug(), self.known.join(", "))
    }
}

impl std::error::Error for UnknownName {}

/// Why a KMS call was made, as the client knows it: sent in [`HEADER_CALLER`] and recorded in the
/// audit log, so an expectation can count exactly the calls it means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, strum::IntoStaticStr, strum::VariantArray)]
#[serde(rename_all = "kebab-case")]
#[strum(serialize_all = "kebab-case")]
pub enum Caller {
    /// The plugin's own health probe (the wrap/unwrap round trip behind `Status`).
    HealthProbe,
    /// Serving a KMS API call from the plugin's client (the apiserver's Encrypt or Decrypt).
    Request,
}

impl Caller {
    /// Every caller.
    pub const ALL: &'static [Caller] = <Self as strum::VariantArray>::VARIANTS;

    /// The caller's name, as sent in [`HEADER_CALLER`] (`health-probe`, `request`).
    pub fn name(self) -> &'static str {
        self.into()
    }

    /// Parses a caller name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|c| c.name() == name)
    }
}

impl std::fmt::Display for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Caller {
    type Err = UnknownName;

    /// Parses a caller name; the error lists every caller.
    fn from_str(name: &str) -> Result<Self, UnknownName> {
        Self::from_name(name).ok_or_else(|| UnknownName::new("caller", name, Self::ALL.iter().map(|c| c.name())))
    }
}

/// An access key and its secret key: what a client signs with, what the mock KMS accepts
/// (`--access-key`, `PUT /admin/credentials` takes a list of them as `{"AccessKey", "SecretKey"}`),
/// and what the plugin and secret sync are configured with. `Debug` never shows the secret key.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Credential {
    /// The access key (an identifier, not secret).
    pub access_key: String,
    /// The secret key (never logged; wiped when dropped).
    pub secret_key: zeroize::Zeroizing<String>,
}

impl Credential {
    /// A credential from an access key and its secret key.
    pub fn new(access_key: impl Into<String>, secret_key: impl Into<String>) -> Self {
        Self { access_key: access_key.into(), secret_key: zeroize::Zeroizing::new(secret_key.into()) }
    }
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential").field("access_key", &self.access_key).field("secret_key", &"<redacted>").finish()
    }
}

/// The string a request signature covers: method, path, timestamp, nonce and the body's SHA-256.
pub fn canonical_request(method: &str, path: &str, timestamp_ms: u64, nonce: &str, body: &[u8]) -> String {
    format!("{method}\n{path}\n{timestamp_ms}\n{nonce}\n{}", hex::encode(Sha256::digest(body)))
}

/// The hex HMAC-SHA256 signature of `canonical` under `secret_key`.
pub fn sign(secret_key: &[u8], canonical: &str) -> String {
    // HMAC accepts keys of any length.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret_key).expect("HMAC takes any key length");
    mac.update(canonical.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// The four authentication headers of a signed `POST path` with `body` (access key, timestamp,
/// nonce, signature), for a client of the API; `nonce` must be unique per request.
pub fn auth_headers(
    access_key: &str,
    secret_key: &[u8],
    path: &str,
    body: &[u8],
    timestamp_ms: u64,
    nonce: &str,
) -> [(&'static str, String); 4] {
    let signature = sign(secret_key, &canonical_request("POST", path, timestamp_ms, nonce, body));
    [
        (HEADER_ACCESS_KEY, access_key.to_owned()),
        (HEADER_TIMESTAMP, timestamp_ms.to_string()),
        (HEADER_NONCE, nonce.to_owned()),
        (HEADER_SIGNATURE, signature),
    ]
}

/// Whether `signature` (hex) is the signature of `canonical` under `secret_key`, in constant time.
pub fn verify(secret_key: &[u8], canonical: &str, signature: &str) -> bool {
    let Ok(given) = hex::decode(signature) else { return false };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret_key).expect("HMAC takes any key length");
    mac.update(canonical.as_bytes());
    mac.verify_slice(&given).is_ok()
}

/// The wait a `429 Throttling` answer asks for: its `Retry-After` header, whole seconds as the
/// service sends it (`None` when absent or not a number).
pub fn retry_after(header: Option<&str>) -> Option<std::time::Duration> {
    header?.trim().parse().ok().map(std::time::Duration::from_secs)
}

/// The error codes the service answers with, and their HTTP statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, strum::IntoStaticStr, strum::VariantArray)]
pub enum ErrorCode {
    /// 400: a field is missing or malformed.
    InvalidParameter,
    /// 400: the ciphertext blob is malformed, altered, or not from this KMS.
    InvalidCiphertext,
    /// 401: no such access key.
    InvalidAccessKeyId,
    /// 401: the signature does not match (wrong secret key, or an altered request).
    SignatureDoesNotMatch,
    /// 401: the timestamp is too far from the server's clock.
    RequestTimeTooSkewed,
    /// 401: this nonce was seen before (a replayed request).
    RequestReplayed,
    /// 403: the credential may not perform this operation.
    Forbidden,
    /// 404: no such key (or key version).
    KeyNotFound,
    /// 409: the key exists already.
    KeyAlreadyExists,
    /// 409: the key is disabled or pending deletion.
    KeyNotEnabled,
    /// 429: over the request quota; retry after `Retry-After` seconds.
    Throttling,
    /// 500: an internal failure (also injected as a fault).
    InternalFailure,
    /// 503: the service is sealed and needs unseal shares.
    Sealed,
    /// 503: the service cannot serve now.
    ServiceUnavailable,
}

impl ErrorCode {
    /// The code's name, as in error bodies and the audit log (`KeyNotFound`).
    pub fn name(self) -> &'static str {
        self.into()
    }

    /// The HTTP status that carries this code.
    pub fn http_status(self) -> u16 {
        match self {
            Self::InvalidParameter | Self::InvalidCiphertext => 400,
            Self::InvalidAccessKeyId | Self::SignatureDoesNotMatch | Self::RequestTimeTooSkewed | Self::RequestReplayed => 401,
            Self::Forbidden => 403,
            Self::KeyNotFound => 404,
            Self::KeyAlreadyExists | Self::KeyNotEnabled => 409,
            Self::Throttling => 429,
            Self::InternalFailure => 500,
            Self::Sealed | Self::ServiceUnavailable => 503,
        }
    }

    /// Whether a client should retry a request that failed with this code.
    pub fn retryable(self) -> bool {
        matches!(self, Self::Throttling | Self::InternalFailure | Self::ServiceUnavailable)
    }
}

/// The body of every error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ErrorBody {
    /// The error code.
    pub code: ErrorCode,
    /// A message for people; never contains key material or plaintext.
    pub message: String,
    /// The request's id in the audit log.
    pub request_id: String,
}

/// The state of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyState {
    /// Usable.
    Enabled,
    /// Disabled: no encrypt, no decrypt.
    Disabled,
    /// Scheduled for deletion: no encrypt, no decrypt.
    PendingDeletion,
}

/// The key specs the service offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum KeySpec {
    /// AES-256-GCM, 96-bit random nonce.
    #[default]
    #[serde(rename = "Aliyun_AES_256", alias = "AES_256")]
    Aes256,
    /// SM4-GCM (国密), 96-bit random nonce.
    #[serde(rename = "Aliyun_SM4", alias = "SM4")]
    Sm4,
}

/// What DescribeKey and CreateKey return.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct KeyMetadata {
    /// The key's id.
    pub key_id: String,
    /// Its state.
    pub key_state: KeyState,
    /// Its spec.
    pub key_spec: KeySpec,
    /// The version new encryptions use.
    pub current_key_version_id: String,
    /// Every version, oldest first.
    pub key_version_ids: Vec<String>,
    /// The versions disabled on their own (they neither encrypt nor decrypt), oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disabled_key_version_ids: Vec<String>,
    /// Creation time, RFC 3339.
    pub creation_date: String,
}

/// `CreateKey` request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreateKeyRequest {
    /// The id to give the key.
    pub key_id: String,
    /// The spec (AES-256 when absent).
    #[serde(default)]
    pub key_spec: KeySpec,
}

/// A request naming one key (`DescribeKey`, `RotateKey`, `DisableKey`, `EnableKey`, `ScheduleKeyDeletion`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct KeyRequest {
    /// The key's id.
    pub key_id: String,
}

/// `DescribeKey`, `CreateKey`, `RotateKey`, `DisableKey`, `EnableKey`, `ScheduleKeyDeletion` response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct KeyResponse {
    /// The key after the call.
    pub key_metadata: KeyMetadata,
    /// The request's id in the audit log.
    pub request_id: String,
}

/// `ListKeys` response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListKeysResponse {
    /// Every key.
    pub keys: Vec<KeyMetadata>,
    /// The request's id in the audit log.
    pub request_id: String,
}

/// `Encrypt` request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EncryptRequest {
    /// The key to encrypt with (its current version).
    pub key_id: String,
    /// Base64 of the plaintext (at most 6 KiB decoded).
    pub plaintext: String,
    /// Extra authenticated data; the same map must be given to Decrypt.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub encryption_context: BTreeMap<String, String>,
}

/// `Encrypt` response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EncryptResponse {
    /// The key used.
    pub key_id: String,
    /// The version used.
    pub key_version_id: String,
    /// Base64 of the ciphertext blob; it names key and version itself.
    pub ciphertext_blob: String,
    /// The request's id in the audit log.
    pub request_id: String,
}

/// `Decrypt` request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DecryptRequest {
    /// Base64 of a ciphertext blob from Encrypt or GenerateDataKey.
    pub ciphertext_blob: String,
    /// The encryption context given to Encrypt.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub encryption_context: BTreeMap<String, String>,
}

/// `Decrypt` response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DecryptResponse {
    /// The key that had encrypted it.
    pub key_id: String,
    /// The version that had encrypted it.
    pub key_version_id: String,
    /// Base64 of the plaintext.
    pub plaintext: String,
    /// The request's id in the audit log.
    pub request_id: String,
}

/// `GenerateDataKey` request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GenerateDataKeyRequest {
    /// The key to encrypt the data key with.
    pub key_id: String,
    /// Data key length in bytes (1 to 1024; 32 when absent).
    #[serde(default)]
    pub number_of_bytes: Option<u32>,
}

/// `GenerateDataKey` response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GenerateDataKeyResponse {
    /// The key used.
    pub key_id: String,
    /// The version used.
    pub key_version_id: String,
    /// Base64 of the data key.
    pub plaintext: String,
    /// Base64 of the data key encrypted (decryptable with Decrypt).
    pub ciphertext_blob: String,
    /// The request's id in the audit log.
    pub request_id: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_only_with_the_same_key_and_request() {
        let canonical = canonical_request("POST", "/v1/Encrypt", 1_700_000_000_000, "n-1", br#"{"KeyId":"k"}"#);
        let signature = sign(b"SK", &canonical);
        assert!(verify(b"SK", &canonical, &signature));
        assert!(!verify(b"sk", &canonical, &signature));
        let altered = canonical_request("POST", "/v1/Encrypt", 1_700_000_000_000, "n-1", br#"{"KeyId":"x"}"#);
        assert!(!verify(b"SK", &altered, &signature));
        assert!(!verify(b"SK", &canonical, "not hex"));
    }

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
    fn wire_names_are_pascal_case() {
        let body = serde_json::to_string(&ErrorBody { code: ErrorCode::Throttling, message: "slow down".into(), request_id: "r1".into() })
            .unwrap();
        assert_eq!(body, r#"{"Code":"Throttling","Message":"slow down","RequestId":"r1"}"#);
        assert_eq!(Action::from_name("RotateKey"), Some(Action::RotateKey));
        assert_eq!(ErrorCode::Sealed.http_status(), 503);
    }
}
