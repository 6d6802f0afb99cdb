//! The Google Cloud KMS dialect: REST v1 (`/v1/projects/P/locations/L/keyRings/R/cryptoKeys/K…`)
//! as k8s-cloudkms-plugin and Google's client libraries call it, without auth (the plugin's
//! `--integration-test --fake-kms-port P` mode sends plain HTTP to `localhost:P`).
//!
//! Keys are the key store's keys: the CryptoKey id `K` of any project, location and key ring
//! names the key store's key `K` (key rings are implicit), as an AWS key id is the same key in
//! every region. Versions are numbered 1, 2, … in creation order (the key store's version ids,
//! oldest first). The ciphertext is the key store's blob, which names key and version, so a
//! Decrypt after rotation needs only the CryptoKey; `additionalAuthenticatedData` is bound as
//! associated data (the context `{"gcp:aad": base64(aad)}`, empty AAD = no context). Errors are
//! Google's JSON error model, `{"error": {"code", "message", "status", "errors"}}`, with
//! Google's HTTP codes.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{Method, Uri};
use axum::response::Response;
use base64::Engine;
use base64::alphabet;
use base64::engine::general_purpose::STANDARD as B64;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use serde::Deserialize;
use serde_json::{Value, json};
use zeroize::Zeroizing;

use super::Dialect;
use super::call::{Call, read_body};
use super::status::Status;
use crate::api::{Action, ErrorCode, KeyMetadata, KeySpec, KeyState};
use crate::blob;
use crate::error::KmsError;
use crate::keystore::KeyStore;
use crate::node::Node;

/// The largest plaintext Encrypt takes, as Cloud KMS for a SOFTWARE key: 64 KiB.
pub const MAX_PLAINTEXT: usize = 64 * 1024;
/// The largest `additionalAuthenticatedData`, as Cloud KMS for a SOFTWARE key: 64 KiB.
pub const MAX_AAD: usize = 64 * 1024;
/// The largest request body read: a 64 KiB plaintext and a 64 KiB AAD in base64 fit.
pub const MAX_BODY: usize = 256 * 1024;
/// The context key `additionalAuthenticatedData` is bound under in the key store's blob.
const AAD_CONTEXT_KEY: &str = "gcp:aad";
/// Every version's algorithm and protection level (AES-256-GCM in software).
const ALGORITHM: &str = "GOOGLE_SYMMETRIC_ENCRYPTION";
const PROTECTION_LEVEL: &str = "SOFTWARE";
/// The content type of every answer.
const CONTENT_TYPE: &str = "application/json; charset=UTF-8";
/// Cloud KMS's default for `destroyScheduledDuration` (30 days).
const DESTROY_SCHEDULED_DURATION: &str = "2592000s";

/// Base64 as Google's JSON mapping of `bytes` reads it: standard or URL-safe, padded or not.
const B64_LENIENT: GeneralPurpose =
    GeneralPurpose::new(&alphabet::STANDARD, GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent));
const B64_URL_LENIENT: GeneralPurpose =
    GeneralPurpose::new(&alphabet::URL_SAFE, GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent));

/// Any request under no `/v1/` path: Google's NOT_FOUND shape, not the router's empty 404.
pub(crate) async fn unrouted(method: Method, uri: Uri) -> Response {
    let message = super::call::unrouted_message(&method, &uri, "under /v1/projects/…");
    let error = GcpError::new(Status::NotFound, ErrorCode::InvalidParameter, message);
    super::call::unrouted_answer(error.status.http(), &error.body(), CONTENT_TYPE)
}

/// An error in Google's shape, with the native code the audit log records.
struct GcpError {
    status: Status,
    message: String,
    code: ErrorCode,
    /// Seconds until a throttled call would be admitted (a `google.rpc.RetryInfo` detail).
    retry_after_secs: Option<u64>,
}

impl GcpError {
    fn new(status: Status, code: ErrorCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into(), code, retry_after_secs: None }
    }

    fn invalid(message: impl Into<String>) -> Self {
        Self::new(Status::InvalidArgument, ErrorCode::InvalidParameter, message)
    }

    /// A ciphertext that is not one of this key's (altered, other AAD, garbage), in Google's words.
    fn bad_ciphertext() -> Self {
        Self::new(Status::InvalidArgument, ErrorCode::InvalidCiphertext, "Decryption failed: the ciphertext is invalid.")
    }

    fn key_not_found(key: &KeyName) -> Self {
        Self::new(Status::NotFound, ErrorCode::KeyNotFound, format!("CryptoKey {} not found.", key.path()))
    }

    fn version_not_found(key: &KeyName, number: u32) -> Self {
        Self::new(Status::NotFound, ErrorCode::KeyNotFound, format!("CryptoKeyVersion {} not found.", key.version_path(number)))
    }

    fn not_enabled(key: &KeyName, version: &VersionView) -> Self {
        Self::new(
            Status::FailedPrecondition,
            ErrorCode::KeyNotEnabled,
            format!("{} is not enabled, current state is: {}.", key.version_path(version.number), version.state.name()),
        )
    }

    fn body(&self) -> Value {
        let mut error = json!({
            "code": self.status.http(),
            "message": self.message,
            "status": self.status.name(),
            "errors": [{"message": self.message, "domain": "global", "reason": self.status.reason()}],
        });
        if let Some(secs) = self.retry_after_secs {
            error["details"] = json!([{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": format!("{secs}s")}]);
        }
        json!({ "error": error })
    }
}

impl From<KmsError> for GcpError {
    /// By the native code, so a new [`KmsError`] variant maps without an edit here; call sites
    /// that know the resource answer Google's own messages first.
    fn from(error: KmsError) -> Self {
        let code = error.code();
        let status = Status::of(code);
        let retry_after_secs = match &error {
            KmsError::Throttling { retry_after_secs } => Some(*retry_after_secs),
            _ => None,
        };
        let message = match &error {
            KmsError::Throttling { retry_after_secs } => format!(
                "Quota exceeded for quota metric 'Cryptographic requests' of service 'cloudkms.googleapis.com' \
                 (injected fault: throttle); retry after {retry_after_secs} s"
            ),
            KmsError::ServiceUnavailable(why) => format!("The service is currently unavailable: {why}"),
            other => other.to_string(),
        };
        Self { status, message, code, retry_after_secs }
    }
}

/// `projects/P/locations/L/keyRings/R/cryptoKeys/K`, split.
#[derive(Debug, Clone, PartialEq, Eq)]
struct KeyName {
    /// `projects/P/locations/L/keyRings/R`.
    ring: String,
    /// `K`, the key store's key id.
    key: String,
}

impl KeyName {
    fn path(&self) -> String {
        format!("{}/cryptoKeys/{}", self.ring, self.key)
    }

    fn version_path(&self, number: u32) -> String {
        format!("{}/cryptoKeys/{}/cryptoKeyVersions/{number}", self.ring, self.key)
    }
}

/// The Cloud KMS methods this dialect serves, by their RPC names (the audit log's `operation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    CreateKeyRing,
    CreateCryptoKey,
    GetCryptoKey,
    ListCryptoKeys,
    Encrypt,
    Decrypt,
    TestIamPermissions,
    UpdateCryptoKeyPrimaryVersion,
    CreateCryptoKeyVersion,
    GetCryptoKeyVersion,
    ListCryptoKeyVersions,
    UpdateCryptoKeyVersion,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Self::CreateKeyRing => "CreateKeyRing",
            Self::CreateCryptoKey => "CreateCryptoKey",
            Self::GetCryptoKey => "GetCryptoKey",
            Self::ListCryptoKeys => "ListCryptoKeys",
            Self::Encrypt => "Encrypt",
            Self::Decrypt => "Decrypt",
            Self::TestIamPermissions => "TestIamPermissions",
            Self::UpdateCryptoKeyPrimaryVersion => "UpdateCryptoKeyPrimaryVersion",
            Self::CreateCryptoKeyVersion => "CreateCryptoKeyVersion",
            Self::GetCryptoKeyVersion => "GetCryptoKeyVersion",
            Self::ListCryptoKeyVersions => "ListCryptoKeyVersions",
            Self::UpdateCryptoKeyVersion => "UpdateCryptoKeyVersion",
        }
    }

    /// The native action (faults and audit counters use it); a version update enabling a
    /// version is EnableKey, any other DisableKey.
    fn action(self, request: &GcpRequest) -> Action {
        match self {
            Self::CreateKeyRing | Self::CreateCryptoKey => Action::CreateKey,
            Self::GetCryptoKey | Self::TestIamPermissions | Self::GetCryptoKeyVersion | Self::ListCryptoKeyVersions => Action::DescribeKey,
            Self::ListCryptoKeys => Action::ListKeys,
            Self::Encrypt => Action::Encrypt,
            Self::Decrypt => Action::Decrypt,
            Self::UpdateCryptoKeyPrimaryVersion | Self::CreateCryptoKeyVersion => Action::RotateKey,
            Self::UpdateCryptoKeyVersion if request.state.as_deref() == Some("ENABLED") => Action::EnableKey,
            Self::UpdateCryptoKeyVersion => Action::DisableKey,
        }
    }

    /// The IAM permission Cloud KMS checks for the method (named in PERMISSION_DENIED).
    fn permission(self) -> &'static str {
        match self {
            Self::CreateKeyRing => "cloudkms.keyRings.create",
            Self::CreateCryptoKey => "cloudkms.cryptoKeys.create",
            Self::GetCryptoKey => "cloudkms.cryptoKeys.get",
            Self::ListCryptoKeys => "cloudkms.cryptoKeys.list",
            Self::Encrypt => "cloudkms.cryptoKeyVersions.useToEncrypt",
            Self::Decrypt => "cloudkms.cryptoKeyVersions.useToDecrypt",
            Self::TestIamPermissions => "cloudkms.cryptoKeys.getIamPolicy",
            Self::UpdateCryptoKeyPrimaryVersion => "cloudkms.cryptoKeys.update",
            Self::CreateCryptoKeyVersion => "cloudkms.cryptoKeyVersions.create",
            Self::GetCryptoKeyVersion => "cloudkms.cryptoKeyVersions.get",
            Self::ListCryptoKeyVersions => "cloudkms.cryptoKeyVersions.list",
            Self::UpdateCryptoKeyVersion => "cloudkms.cryptoKeyVersions.update",
        }
    }
}

/// The permissions TestIamPermissions knows, with the action a `deny` fault must not deny for
/// the permission to be granted.
const PERMISSIONS: &[(&str, Action)] = &[
    ("cloudkms.cryptoKeyVersions.useToEncrypt", Action::Encrypt),
    ("cloudkms.cryptoKeyVersions.useToDecrypt", Action::Decrypt),
    ("cloudkms.cryptoKeys.get", Action::DescribeKey),
    ("cloudkms.cryptoKeys.list", Action::ListKeys),
    ("cloudkms.cryptoKeys.create", Action::CreateKey),
    ("cloudkms.cryptoKeys.update", Action::RotateKey),
    ("cloudkms.cryptoKeyVersions.create", Action::RotateKey),
    ("cloudkms.cryptoKeyVersions.get", Action::DescribeKey),
    ("cloudkms.cryptoKeyVersions.list", Action::DescribeKey),
    ("cloudkms.cryptoKeyVersions.update", Action::DisableKey),
];

/// What a request's method and path ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Route {
    op: Op,
    /// The key (none for CreateKeyRing and ListCryptoKeys).
    key: Option<KeyName>,
    /// The version number in the path, for version methods (and Encrypt with a version name).
    version: Option<u32>,
    /// `projects/P/locations/L` (CreateKeyRing) or `…/keyRings/R` (CreateCryptoKey, ListCryptoKeys).
    parent: String,
}

/// The methods served, for the NOT_FOUND of any other URL.
const SERVED: &str = "POST …/keyRings?keyRingId=, POST …/cryptoKeys?cryptoKeyId=, GET …/cryptoKeys, GET …/cryptoKeys/K, \
                      POST …/cryptoKeys/K:encrypt|:decrypt|:testIamPermissions|:updatePrimaryVersion, \
                      GET|POST …/cryptoKeys/K/cryptoKeyVersions, GET|PATCH …/cryptoKeyVersions/N";

/// Whether `id` is a Cloud KMS resource id: 1 to 63 of `A-Z a-z 0-9 _ -`.
fn valid_id(id: &str) -> bool {
    (1..=63).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// `METHOD /v1/…` → the method and resource it names.
fn route(method: &Method, path: &str) -> Result<Route, GcpError> {
    let unknown = || {
        GcpError::new(
            Status::NotFound,
            ErrorCode::InvalidParameter,
            format!("Method not found: {method} {path} (this mock serves: {SERVED})"),
        )
    };
    let rest = path.strip_prefix("/v1/").ok_or_else(unknown)?;
    let (rest, verb) = match rest.rsplit_once(':') {
        Some((rest, verb)) if !verb.contains('/') => (rest, Some(verb)),
        _ => (rest, None),
    };
    let parts: Vec<&str> = rest.split('/').collect();
    if parts.len() < 5
        || parts[0] != "projects"
        || parts[2] != "locations"
        || parts[4] != "keyRings"
        || parts[1].is_empty()
        || parts[3].is_empty()
    {
        return Err(unknown());
    }
    let location = format!("projects/{}/locations/{}", parts[1], parts[3]);
    let name_of = |ring: &str, key: &str| -> Result<KeyName, GcpError> {
        for (what, id) in [("keyRing", ring), ("cryptoKey", key)] {
            if !valid_id(id) {
                return Err(GcpError::invalid(format!("the {what} id `{}` is not 1 to 63 of A-Z a-z 0-9 _ -", id.escape_debug())));
            }
        }
        Ok(KeyName { ring: format!("{location}/keyRings/{ring}"), key: key.to_owned() })
    };
    let at = |op: Op, key: Option<KeyName>, version: Option<u32>, parent: String| Ok(Route { op, key, version, parent });
    match (&parts[5..], verb, method) {
        ([], None, &Method::POST) => at(Op::CreateKeyRing, None, None, location),
        ([ring, "cryptoKeys"], None, m) if valid_id(ring) => {
            let parent = format!("{location}/keyRings/{ring}");
            match *m {
                Method::POST => at(Op::CreateCryptoKey, None, None, parent),
                Method::GET => at(Op::ListCryptoKeys, None, None, parent),
                _ => Err(unknown()),
            }
        }
        ([ring, "cryptoKeys", key], verb, m) => {
            let name = name_of(ring, key)?;
            let op = match (verb, m) {
                (None, &Method::GET) => Op::GetCryptoKey,
                (Some("encrypt"), &Method::POST) => Op::Encrypt,
                (Some("decrypt"), &Method::POST) => Op::Decrypt,
                (Some("testIamPermissions"), &Method::POST) => Op::TestIamPermissions,
                (Some("updatePrimaryVersion"), &Method::POST) => Op::UpdateCryptoKeyPrimaryVersion,
                _ => return Err(unknown()),
            };
            at(op, Some(name), None, String::new())
        }
        ([ring, "cryptoKeys", key, "cryptoKeyVersions"], None, m) => {
            let name = name_of(ring, key)?;
            match *m {
                Method::POST => at(Op::CreateCryptoKeyVersion, Some(name), None, String::new()),
                Method::GET => at(Op::ListCryptoKeyVersions, Some(name), None, String::new()),
                _ => Err(unknown()),
            }
        }
        ([ring, "cryptoKeys", key, "cryptoKeyVersions", version], verb, m) => {
            let name = name_of(ring, key)?;
            let number = version.parse::<u32>().ok().filter(|n| *n > 0).ok_or_else(|| {
                GcpError::invalid(format!("the cryptoKeyVersion id `{}` is not a positive number", version.escape_debug()))
            })?;
            let op = match (verb, m) {
                (None, &Method::GET) => Op::GetCryptoKeyVersion,
                (None, &Method::PATCH) => Op::UpdateCryptoKeyVersion,
                (Some("encrypt"), &Method::POST) => Op::Encrypt,
                _ => return Err(unknown()),
            };
            at(op, Some(name), Some(number), String::new())
        }
        _ => Err(unknown()),
    }
}

/// Every request body field any served method reads (camelCase, as Google's JSON mapping);
/// others, such as the CRC32C fields, are ignored. No `Debug`: it holds the plaintext.
#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct GcpRequest {
    plaintext: Option<String>,
    ciphertext: Option<String>,
    additional_authenticated_data: Option<String>,
    permissions: Vec<String>,
    crypto_key_version_id: Option<String>,
    state: Option<String>,
    purpose: Option<String>,
    version_template: Option<VersionTemplate>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct VersionTemplate {
    algorithm: Option<String>,
    protection_level: Option<String>,
}

fn parse_request(body: &[u8]) -> Result<GcpRequest, GcpError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(GcpRequest::default());
    }
    serde_json::from_slice(body)
        .map_err(|e| GcpError::invalid(format!("Invalid JSON payload received: {}", crate::persist::json_problem(&e))))
}

/// `/v1/…`: one Cloud KMS call.
pub(crate) async fn call(State(node): State<Arc<Node>>, method: Method, uri: Uri, body: Body) -> Response {
    let routed = route(&method, uri.path());
    let request =
        match read_body(body, MAX_BODY, "Cloud KMS takes at most 64 KiB of plaintext and 64 KiB of additionalAuthenticatedData").await {
            Ok(bytes) => parse_request(&bytes),
            Err(error) => Err(error.into()),
        };
    let (operation, action) = match (&routed, &request) {
        (Ok(route), Ok(request)) => (route.op.name(), Some(route.op.action(request))),
        (Ok(route), Err(_)) => (route.op.name(), Some(route.op.action(&GcpRequest::default()))),
        (Err(_), _) => ("unknown", None),
    };
    let mut call = Call::new(&node, Dialect::Gcp, operation, action);
    let result = match (routed, request) {
        (Ok(route), Ok(request)) => run(&mut call, &route, &request, &uri).await,
        (Err(error), _) | (_, Err(error)) => Err(error),
    };
    match result {
        Ok(body) => call.answer(200, None, &body, CONTENT_TYPE, crate::api::HEADER_REQUEST_ID),
        Err(error) => call.answer(error.status.http(), Some(error.code), &error.body(), CONTENT_TYPE, crate::api::HEADER_REQUEST_ID),
    }
}

async fn run(call: &mut Call, route: &Route, request: &GcpRequest, uri: &Uri) -> Result<Value, GcpError> {
    if let Some(key) = &route.key {
        // Named in the audit record also when a fault refuses the call.
        call.set_key(&key.key, None);
    }
    let store = call.enter().await?;
    let resource = route.key.as_ref().map_or_else(|| route.parent.clone(), KeyName::path);
    call.admit(route.op.name()).map_err(|error| match error {
        KmsError::Forbidden { .. } => GcpError::new(
            Status::PermissionDenied,
            ErrorCode::Forbidden,
            format!("Permission '{}' denied on resource '{resource}' (or it may not exist).", route.op.permission()),
        ),
        other => other.into(),
    })?;
    let query: BTreeMap<String, String> = Query::try_from_uri(uri).map(|Query(q)| q).unwrap_or_default();
    let mut ops = Ops { call, store: &store };
    match (route.op, route.key.as_ref()) {
        (Op::CreateKeyRing, _) => ops.create_key_ring(&route.parent, &query),
        (Op::CreateCryptoKey, _) => ops.create_crypto_key(&route.parent, &query, request).await,
        (Op::ListCryptoKeys, _) => Ok(ops.list_crypto_keys(&route.parent)),
        // `route` gives every other method its key.
        (op, None) => Err(KmsError::InternalFailure(format!("{} was routed without a key", op.name())).into()),
        (Op::GetCryptoKey, Some(key)) => {
            let metadata = ops.key(key)?;
            Ok(ops.key_json(key, &metadata))
        }
        (Op::Encrypt, Some(key)) => ops.encrypt(key, route.version, request),
        (Op::Decrypt, Some(key)) => ops.decrypt(key, request),
        (Op::TestIamPermissions, Some(key)) => ops.test_iam_permissions(key, request),
        (Op::UpdateCryptoKeyPrimaryVersion, Some(key)) => ops.update_primary(key, request).await,
        (Op::CreateCryptoKeyVersion, Some(key)) => ops.create_version(key).await,
        (Op::ListCryptoKeyVersions, Some(key)) => {
            let metadata = ops.key(key)?;
            let versions: Vec<Value> = ops.versions(&metadata).iter().map(|v| version_json(key, v)).collect();
            Ok(list("cryptoKeyVersions", versions))
        }
        (Op::GetCryptoKeyVersion, Some(key)) => {
            let metadata = ops.key(key)?;
            let version = ops.version(key, &metadata, route.version.unwrap_or_default())?;
            Ok(version_json(key, &version))
        }
        (Op::UpdateCryptoKeyVersion, Some(key)) => ops.update_version(key, route.version.unwrap_or_default(), request, &query).await,
    }
}

/// `{"<field>": items, "totalSize": n}`, the list answer (`{}` when empty: proto3 JSON leaves
/// out an empty list and a zero).
fn list(field: &str, items: Vec<Value>) -> Value {
    let total = items.len();
    if items.is_empty() { json!({}) } else { json!({ field: items, "totalSize": total }) }
}

/// A version's state as Cloud KMS names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum VersionState {
    Enabled,
    Disabled,
    DestroyScheduled,
}

impl VersionState {
    fn name(self) -> &'static str {
        match self {
            Self::Enabled => "ENABLED",
            Self::Disabled => "DISABLED",
            Self::DestroyScheduled => "DESTROY_SCHEDULED",
        }
    }
}

/// One version of a key as this dialect shows it.
#[derive(Debug, Clone)]
struct VersionView {
    /// 1, 2, … in creation order.
    number: u32,
    /// The key store's version id.
    id: String,
    state: VersionState,
}

fn version_json(key: &KeyName, version: &VersionView) -> Value {
    json!({
        "name": key.version_path(version.number),
        "state": version.state.name(),
        "protectionLevel": PROTECTION_LEVEL,
        "algorithm": ALGORITHM,
    })
}

/// `additionalAuthenticatedData` as the key store's encryption context.
fn aad_context(aad: &[u8]) -> BTreeMap<String, String> {
    if aad.is_empty() { BTreeMap::new() } else { BTreeMap::from([(AAD_CONTEXT_KEY.to_owned(), B64.encode(aad))]) }
}

/// A `bytes` field: `Ok(None)` when absent.
fn bytes_field(field: &str, value: Option<&str>) -> Result<Option<Zeroizing<Vec<u8>>>, GcpError> {
    let Some(value) = value else { return Ok(None) };
    B64_LENIENT
        .decode(value)
        .or_else(|_| B64_URL_LENIENT.decode(value))
        .map(|bytes| Some(Zeroizing::new(bytes)))
        .map_err(|_| GcpError::invalid(format!("Invalid value at '{field}' (TYPE_BYTES): Base64 decoding failed")))
}

fn limited(field: &str, bytes: &[u8], limit: usize) -> Result<(), GcpError> {
    if bytes.len() > limit {
        return Err(GcpError::invalid(format!(
            "The {field} is {} bytes; Cloud KMS takes at most {limit} bytes ({} KiB) for a SOFTWARE key",
            bytes.len(),
            limit / 1024
        )));
    }
    Ok(())
}

struct Ops<'a> {
    call: &'a mut Call,
    store: &'a Arc<KeyStore>,
}

impl Ops<'_> {
    async fn commit(&self) -> Result<(), GcpError> {
        Ok(self.call.node.commit().await?)
    }

    /// The key's metadata (NOT_FOUND in Google's words if it does not exist).
    fn key(&mut self, key: &KeyName) -> Result<KeyMetadata, GcpError> {
        self.call.set_key(&key.key, None);
        self.store.describe(&key.key).map_err(|error| match error {
            KmsError::KeyNotFound(_) => GcpError::key_not_found(key),
            other => other.into(),
        })
    }

    /// Every version, oldest first, in the state a `key_disabled` fault, the key's own state and
    /// the version's own state give it.
    fn versions(&self, metadata: &KeyMetadata) -> Vec<VersionView> {
        let faulted = self.call.disabled();
        let key_id = &metadata.key_id;
        let key_disabled = metadata.key_state == KeyState::Disabled || faulted.contains(key_id);
        metadata
            .key_version_ids
            .iter()
            .enumerate()
            .map(|(index, id)| {
                let number = index as u32 + 1;
                let state = if metadata.key_state == KeyState::PendingDeletion {
                    VersionState::DestroyScheduled
                } else if key_disabled
                    || metadata.disabled_key_version_ids.contains(id)
                    || faulted.contains(&format!("{key_id}/{id}"))
                    || faulted.contains(&format!("{key_id}/{number}"))
                {
                    VersionState::Disabled
                } else {
                    VersionState::Enabled
                };
                VersionView { number, id: id.clone(), state }
            })
            .collect()
    }

    fn version(&self, key: &KeyName, metadata: &KeyMetadata, number: u32) -> Result<VersionView, GcpError> {
        self.versions(metadata).into_iter().find(|v| v.number == number).ok_or_else(|| GcpError::version_not_found(key, number))
    }

    fn version_by_id(&self, metadata: &KeyMetadata, id: &str) -> Option<VersionView> {
        self.versions(metadata).into_iter().find(|v| v.id == id)
    }

    fn key_json(&self, key: &KeyName, metadata: &KeyMetadata) -> Value {
        let mut out = json!({
            "name": key.path(),
            "purpose": "ENCRYPT_DECRYPT",
            "createTime": metadata.creation_date,
            "versionTemplate": {"protectionLevel": PROTECTION_LEVEL, "algorithm": ALGORITHM},
            "destroyScheduledDuration": DESTROY_SCHEDULED_DURATION,
        });
        if let Some(primary) = self.version_by_id(metadata, &metadata.current_key_version_id) {
            out["primary"] = version_json(key, &primary);
        }
        out
    }

    fn create_key_ring(&self, parent: &str, query: &BTreeMap<String, String>) -> Result<Value, GcpError> {
        let id = query.get("keyRingId").map(String::as_str).unwrap_or_default();
        if !valid_id(id) {
            return Err(GcpError::invalid(format!("keyRingId `{}` must be 1 to 63 of A-Z a-z 0-9 _ -", id.escape_debug())));
        }
        Ok(json!({"name": format!("{parent}/keyRings/{id}"), "createTime": now_rfc3339()}))
    }

    async fn create_crypto_key(&mut self, ring: &str, query: &BTreeMap<String, String>, request: &GcpRequest) -> Result<Value, GcpError> {
        let id = query.get("cryptoKeyId").map(String::as_str).unwrap_or_default();
        if !valid_id(id) {
            return Err(GcpError::invalid(format!("cryptoKeyId `{}` must be 1 to 63 of A-Z a-z 0-9 _ -", id.escape_debug())));
        }
        match request.purpose.as_deref() {
            Some("ENCRYPT_DECRYPT") => {}
            None => return Err(GcpError::invalid("CryptoKey.purpose is required (this mock serves ENCRYPT_DECRYPT)")),
            Some(other) => {
                return Err(GcpError::invalid(format!(
                    "CryptoKey.purpose `{other}` is not served by this mock KMS (only ENCRYPT_DECRYPT)"
                )));
            }
        }
        if let Some(template) = &request.version_template {
            let algorithm_ok = template.algorithm.as_deref().is_none_or(|a| a == ALGORITHM);
            let level_ok = template.protection_level.as_deref().is_none_or(|p| p == PROTECTION_LEVEL);
            if !algorithm_ok || !level_ok {
                return Err(GcpError::invalid(format!(
                    "versionTemplate must be algorithm {ALGORITHM} with protectionLevel {PROTECTION_LEVEL} (the only kind this mock KMS serves)"
                )));
            }
        }
        let key = KeyName { ring: ring.to_owned(), key: id.to_owned() };
        self.call.set_key(id, None);
        let metadata = self.store.create_key(id, KeySpec::Aes256).map_err(|error| match error {
            KmsError::KeyAlreadyExists(_) => {
                GcpError::new(Status::AlreadyExists, ErrorCode::KeyAlreadyExists, format!("CryptoKey {} already exists.", key.path()))
            }
            other => other.into(),
        })?;
        self.commit().await?;
        Ok(self.key_json(&key, &metadata))
    }

    fn list_crypto_keys(&self, ring: &str) -> Value {
        let keys: Vec<Value> = self
            .store
            .list()
            .iter()
            .filter(|m| valid_id(&m.key_id))
            .map(|m| self.key_json(&KeyName { ring: ring.to_owned(), key: m.key_id.clone() }, m))
            .collect();
        list("cryptoKeys", keys)
    }

    fn encrypt(&mut self, key: &KeyName, version: Option<u32>, request: &GcpRequest) -> Result<Value, GcpError> {
        let plaintext = bytes_field("plaintext", request.plaintext.as_deref())?.unwrap_or_default();
        if plaintext.is_empty() {
            return Err(GcpError::invalid("plaintext is required and must not be empty"));
        }
        limited("plaintext", &plaintext, MAX_PLAINTEXT)?;
        let aad = bytes_field("additional_authenticated_data", request.additional_authenticated_data.as_deref())?.unwrap_or_default();
        limited("additionalAuthenticatedData", &aad, MAX_AAD)?;
        let metadata = self.key(key)?;
        let Some(primary) = self.version_by_id(&metadata, &metadata.current_key_version_id) else {
            return Err(KmsError::InternalFailure(format!("key `{}` lost its primary version", key.key)).into());
        };
        if let Some(number) = version {
            let asked = self.version(key, &metadata, number)?;
            if asked.number != primary.number {
                return Err(GcpError::new(
                    Status::Unimplemented,
                    ErrorCode::InvalidParameter,
                    format!(
                        "this mock KMS encrypts with the primary version only ({}); name the CryptoKey, or make version {number} primary first",
                        key.version_path(primary.number)
                    ),
                ));
            }
        }
        if primary.state != VersionState::Enabled {
            return Err(GcpError::not_enabled(key, &primary));
        }
        let sealed =
            self.store.encrypt_up_to(&key.key, &plaintext, &aad_context(&aad), MAX_PLAINTEXT).map_err(|e| self.store_error(key, e))?;
        self.call.set_key(&key.key, Some(&sealed.version_id));
        // The version used, numbered from a fresh view if a rotation came in between.
        let number = match self.version_by_id(&metadata, &sealed.version_id) {
            Some(v) => v.number,
            None => {
                let fresh = self.key(key)?;
                self.version_by_id(&fresh, &sealed.version_id).map_or(0, |v| v.number)
            }
        };
        let mut blob = sealed.blob;
        if let Some(pick) = self.call.corruption() {
            crate::faults::flip_byte(&mut blob, pick);
        }
        Ok(json!({"name": key.version_path(number), "ciphertext": B64.encode(blob), "protectionLevel": PROTECTION_LEVEL}))
    }

    fn decrypt(&mut self, key: &KeyName, request: &GcpRequest) -> Result<Value, GcpError> {
        let blob = bytes_field("ciphertext", request.ciphertext.as_deref())?.unwrap_or_default();
        if blob.is_empty() {
            return Err(GcpError::invalid("ciphertext is required and must not be empty"));
        }
        let aad = bytes_field("additional_authenticated_data", request.additional_authenticated_data.as_deref())?.unwrap_or_default();
        limited("additionalAuthenticatedData", &aad, MAX_AAD)?;
        let metadata = self.key(key)?;
        let parsed = blob::parse(&blob).map_err(|_| GcpError::bad_ciphertext())?;
        if parsed.key_id != key.key {
            return Err(GcpError::new(
                Status::InvalidArgument,
                ErrorCode::InvalidCiphertext,
                "Decryption failed: verify that 'name' refers to the correct CryptoKey.",
            ));
        }
        self.call.set_key(&key.key, Some(parsed.version_id));
        let version = self.version_by_id(&metadata, parsed.version_id).ok_or_else(GcpError::bad_ciphertext)?;
        if version.state != VersionState::Enabled {
            return Err(GcpError::not_enabled(key, &version));
        }
        let opened = self.store.decrypt(&blob, &aad_context(&aad)).map_err(|e| self.store_error(key, e))?;
        let mut plaintext = Zeroizing::new(opened.plaintext.to_vec());
        if let Some(pick) = self.call.corruption() {
            crate::faults::flip_byte(&mut plaintext, pick);
        }
        let mut out = json!({"plaintext": B64.encode(&*plaintext), "protectionLevel": PROTECTION_LEVEL});
        if opened.version_id == metadata.current_key_version_id {
            out["usedPrimary"] = json!(true);
        }
        Ok(out)
    }

    /// A key store error on `key`, in Google's words where Cloud KMS has its own.
    fn store_error(&self, key: &KeyName, error: KmsError) -> GcpError {
        let version_id = match &error {
            KmsError::KeyNotFound(_) => return GcpError::key_not_found(key),
            KmsError::InvalidCiphertext(_) | KmsError::KeyVersionNotFound { .. } => return GcpError::bad_ciphertext(),
            KmsError::KeyVersionNotEnabled { version_id, .. } => Some(version_id.clone()),
            KmsError::KeyNotEnabled { .. } => None,
            _ => return error.into(),
        };
        // Not enabled: named as the version Cloud KMS would name (the one asked for, or the primary).
        let Ok(metadata) = self.store.describe(&key.key) else { return error.into() };
        match self.version_by_id(&metadata, version_id.as_deref().unwrap_or(&metadata.current_key_version_id)) {
            Some(mut version) => {
                if version.state == VersionState::Enabled {
                    version.state = VersionState::Disabled;
                }
                GcpError::not_enabled(key, &version)
            }
            None => error.into(),
        }
    }

    fn test_iam_permissions(&mut self, key: &KeyName, request: &GcpRequest) -> Result<Value, GcpError> {
        self.key(key)?;
        if let Some(bad) = request.permissions.iter().find(|p| !p.starts_with("cloudkms.")) {
            return Err(GcpError::invalid(format!("Permission {bad} is not valid for this resource.")));
        }
        let deny = self.call.node.faults.profile().deny;
        let denied = |action: Action| deny.as_ref().is_some_and(|d| d.actions.as_ref().is_none_or(|a| a.contains(&action)));
        let granted: Vec<&String> =
            request.permissions.iter().filter(|p| PERMISSIONS.iter().any(|(name, action)| name == p && !denied(*action))).collect();
        Ok(if granted.is_empty() { json!({}) } else { json!({ "permissions": granted }) })
    }

    async fn update_primary(&mut self, key: &KeyName, request: &GcpRequest) -> Result<Value, GcpError> {
        let id = request.crypto_key_version_id.as_deref().unwrap_or_default();
        let number: u32 =
            id.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                GcpError::invalid(format!("cryptoKeyVersionId `{}` must be a version number (1, 2, …)", id.escape_debug()))
            })?;
        let metadata = self.key(key)?;
        let version = self.version(key, &metadata, number)?;
        if version.state != VersionState::Enabled {
            return Err(GcpError::not_enabled(key, &version));
        }
        let metadata = self.store.set_current(&key.key, &version.id).map_err(|e| self.store_error(key, e))?;
        self.call.set_key(&key.key, Some(&version.id));
        self.commit().await?;
        Ok(self.key_json(key, &metadata))
    }

    async fn create_version(&mut self, key: &KeyName) -> Result<Value, GcpError> {
        self.key(key)?;
        let (metadata, version_id) = self.store.add_version(&key.key).map_err(|e| self.store_error(key, e))?;
        self.call.set_key(&key.key, Some(&version_id));
        self.commit().await?;
        let version = self
            .version_by_id(&metadata, &version_id)
            .ok_or_else(|| GcpError::from(KmsError::InternalFailure("the new version is missing".into())))?;
        Ok(version_json(key, &version))
    }

    async fn update_version(
        &mut self,
        key: &KeyName,
        number: u32,
        request: &GcpRequest,
        query: &BTreeMap<String, String>,
    ) -> Result<Value, GcpError> {
        let mask = query.get("updateMask").map(String::as_str).unwrap_or_default();
        if mask.split(',').map(str::trim).collect::<Vec<_>>() != ["state"] {
            return Err(GcpError::invalid(format!(
                "updateMask `{}` must be `state` (the only field this mock KMS updates)",
                mask.escape_debug()
            )));
        }
        let enabled = match request.state.as_deref() {
            Some("ENABLED") => true,
            Some("DISABLED") => false,
            other => {
                return Err(GcpError::invalid(format!(
                    "CryptoKeyVersion.state `{}` cannot be set here: ENABLED or DISABLED (destroy with :destroy, which this mock does not serve)",
                    other.unwrap_or_default().escape_debug()
                )));
            }
        };
        let metadata = self.key(key)?;
        let version = self.version(key, &metadata, number)?;
        if version.state == VersionState::DestroyScheduled {
            return Err(GcpError::new(
                Status::FailedPrecondition,
                ErrorCode::KeyNotEnabled,
                format!(
                    "{} is in state DESTROY_SCHEDULED and cannot be {}.",
                    key.version_path(number),
                    if enabled { "enabled" } else { "disabled" }
                ),
            ));
        }
        self.call.set_key(&key.key, Some(&version.id));
        let metadata = self.store.set_version_enabled(&key.key, &version.id, enabled).map_err(|e| self.store_error(key, e))?;
        self.commit().await?;
        let version = self.version(key, &metadata, number)?;
        Ok(version_json(key, &version))
    }
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}
