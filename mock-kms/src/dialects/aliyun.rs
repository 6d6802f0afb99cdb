//! The Alibaba Cloud KMS dialect: the RPC API `Version=2016-01-20` on `/` (GET or POST,
//! parameters in the query and/or a form body) as `github.com/aliyun/alibaba-cloud-sdk-go`
//! v1.61.18 and `github.com/alibabacloud-go/kms-20160120/v3` (darabonba-openapi v2) call it:
//! Encrypt, Decrypt, GenerateDataKey, GenerateDataKeyWithoutPlaintext, DescribeKey, ListKeys
//! (paged, no `Filters`), ListKeyVersions, DescribeKeyVersion, CreateKeyVersion (rotation),
//! UpdateRotationPolicy, EnableKey, DisableKey and ScheduleKeyDeletion; and the secrets manager ([`secrets`]):
//! GetSecretValue, CreateSecret, PutSecretValue, UpdateSecretVersionStage, DescribeSecret,
//! ListSecrets, DeleteSecret and RestoreSecret.
//!
//! Two signatures, each verified as its SDK computes it:
//! - **v1** (alibaba-cloud-sdk-go): `Signature` = base64 HMAC-SHA1, keyed `SECRET&`, of
//!   `METHOD&%2F&` + the RFC 3986-encoded, key-sorted `k=v&…` of every parameter but
//!   `Signature`; `Timestamp` (ISO 8601 UTC) within [`MAX_SKEW`], `SignatureNonce` not replayed.
//! - **ACS3-HMAC-SHA256** (darabonba-openapi's default): `Authorization: ACS3-HMAC-SHA256
//!   Credential=AK,SignedHeaders=…,Signature=…` over `METHOD\nPATH\nQUERY\nHEADERS\n\nSIGNED\nSHA256(body)`
//!   with the operation in `x-acs-action`, `x-acs-date` within [`MAX_SKEW`] and
//!   `x-acs-signature-nonce` not replayed.
//!
//! Keys are the key store's keys and key versions its version ids. `Plaintext` is a string (its
//! UTF-8 bytes are sealed; GenerateDataKey's is the base64 of the data key, as Alibaba's);
//! `CiphertextBlob` is base64 of the key store's blob; `EncryptionContext` (a JSON object) is
//! bound as associated data. Errors are `{"Code", "Message", "RequestId", "HostId"}` with
//! Alibaba's codes and statuses ([`AliyunError`]'s table); the request id is also in
//! `x-acs-request-id`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri};
use axum::response::Response;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};

use super::Dialect;
use super::call::{Call, constant_time_eq, read_body};
use super::sign::{Authorization, hmac_sha256, parse_authorization, parse_form, percent_encode, sha256_hex, skew_beyond};
use crate::api::sign::aliyun_v1_signature;
use crate::api::status::{ALIYUN_PENDING_DELETION, aliyun_error, aliyun_secret_error};
use crate::api::{Action, ErrorCode, KeyMetadata, KeyState};
use crate::error::KmsError;
use crate::keystore::KeyStore;
use crate::node::Node;

/// The API version served.
pub const VERSION: &str = "2016-01-20";
/// How far a request's time may be from the server's clock (Alibaba: 15 minutes).
pub const MAX_SKEW: Duration = Duration::from_secs(15 * 60);
/// The largest request body read.
pub const MAX_BODY: usize = 64 * 1024;
/// The ACS3 signature algorithm served.
pub const ACS3: &str = "ACS3-HMAC-SHA256";
/// The header the request id is answered in.
pub const REQUEST_ID_HEADER: &str = "x-acs-request-id";
const CONTENT_TYPE: &str = "application/json;charset=utf-8";
const HOST_ID: &str = "kms.mock-kms.local";
/// The region and account in the ARNs answered (`acs:kms:REGION:ACCOUNT:key/…`, `…:secret/…`).
const ARN_PREFIX: &str = "acs:kms:cn-hangzhou:123456789012";

mod secrets;

/// The ARN of secret `name`.
fn arn(name: &str) -> String {
    format!("{ARN_PREFIX}:secret/{name}")
}

/// An error in Alibaba's shape, with the native code the audit log records.
struct AliyunError {
    status: u16,
    kind: &'static str,
    message: String,
    code: ErrorCode,
}

impl AliyunError {
    fn new(status: u16, kind: &'static str, code: ErrorCode, message: impl Into<String>) -> Self {
        Self { status, kind, message: message.into(), code }
    }

    fn invalid(message: impl Into<String>) -> Self {
        Self::new(400, "InvalidParameter", ErrorCode::InvalidParameter, message)
    }

    fn missing(name: &str) -> Self {
        Self::new(
            400,
            "MissingParameter",
            ErrorCode::InvalidParameter,
            format!("The input parameter \"{name}\" that is mandatory for processing this request is not supplied."),
        )
    }
}

impl From<KmsError> for AliyunError {
    /// By the native code ([`crate::api::status::ALIYUN_CODES`]), so a new [`KmsError`] variant maps without an edit here.
    fn from(error: KmsError) -> Self {
        let code = error.code();
        let (status, kind) = match &error {
            KmsError::KeyNotEnabled { state: KeyState::PendingDeletion, .. } => (400, ALIYUN_PENDING_DELETION),
            // The secrets manager's own codes (`ALIYUN_SECRET_CODES`).
            KmsError::SecretNotFound(_) => aliyun_secret_error("Forbidden.ResourceNotFound"),
            KmsError::SecretAlreadyExists(_) => aliyun_secret_error("Rejected.ResourceExist"),
            KmsError::SecretPendingDeletion { .. } => aliyun_secret_error("Rejected.ResourceInDeleteWindow"),
            _ => aliyun_error(code),
        };
        Self { status, kind, message: error.to_string(), code }
    }
}

/// The key operations served, by the API's action names, with the native action each maps to
/// (the secrets manager's are [`secrets::OPERATIONS`]).
const OPERATIONS: [(&str, Action); 13] = [
    ("Encrypt", Action::Encrypt),
    ("Decrypt", Action::Decrypt),
    ("GenerateDataKey", Action::GenerateDataKey),
    ("GenerateDataKeyWithoutPlaintext", Action::GenerateDataKey),
    ("DescribeKey", Action::DescribeKey),
    ("ListKeys", Action::ListKeys),
    ("ListKeyVersions", Action::DescribeKey),
    ("DescribeKeyVersion", Action::DescribeKey),
    ("CreateKeyVersion", Action::RotateKey),
    ("UpdateRotationPolicy", Action::RotateKey),
    ("EnableKey", Action::EnableKey),
    ("DisableKey", Action::DisableKey),
    ("ScheduleKeyDeletion", Action::ScheduleKeyDeletion),
];

/// The request's parameters: query and form body merged (the body wins), decoded.
struct Params(BTreeMap<String, String>);

impl Params {
    fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str).filter(|v| !v.is_empty())
    }

    fn require(&self, name: &str) -> Result<&str, AliyunError> {
        self.get(name).ok_or_else(|| AliyunError::missing(name))
    }
}

/// `/` (any method): one Alibaba Cloud KMS call.
pub(crate) async fn call(State(node): State<Arc<Node>>, method: Method, uri: Uri, headers: HeaderMap, body: Body) -> Response {
    let body = read_body(body, MAX_BODY, "Alibaba Cloud KMS takes at most 6144 bytes of plaintext").await;
    let query = uri.query().unwrap_or_default();
    let form = body.as_ref().ok().and_then(|b| std::str::from_utf8(b).ok()).filter(|_| is_form(&headers)).unwrap_or_default();
    let params = [query, form]
        .iter()
        .map(|raw| parse_form(raw))
        .collect::<Option<Vec<_>>>()
        .map(|parts| Params(parts.into_iter().flatten().collect()));
    let header_action = headers.get("x-acs-action").and_then(|v| v.to_str().ok());
    let operation: String =
        header_action.or_else(|| params.as_ref().and_then(|p| p.get("Action"))).unwrap_or_default().chars().take(64).collect();
    let action = OPERATIONS.iter().chain(&secrets::OPERATIONS).find(|(name, _)| *name == operation).map(|(_, action)| *action);
    let secrets_call = action.is_some_and(Action::is_secret_action);
    let mut call = Call::new(&node, Dialect::Aliyun, &operation, action);
    call.set_caller(&headers);
    // The secret is in the audit record of a refused call too (a bad signature, a throttled call).
    if let Some(name) = params.as_ref().and_then(|p| p.get("SecretName")).filter(|_| secrets_call) {
        call.set_secret(name);
    }
    let result = match (body, params) {
        (Err(error), _) => Err(error.into()),
        (_, None) => Err(AliyunError::invalid("the query or form body is not URL-encoded UTF-8")),
        (Ok(body), Some(params)) => run(&mut call, &operation, params, &method, &uri, &headers, &body).await,
    };
    let request_id = call.request_id.clone();
    match result {
        Ok(mut answer) => {
            answer["RequestId"] = json!(request_id);
            call.answer(200, None, &answer, CONTENT_TYPE, REQUEST_ID_HEADER)
        }
        Err(error) => {
            let error = if secrets_call { secrets::refine(error) } else { error };
            let body = json!({"Code": error.kind, "Message": error.message, "RequestId": request_id, "HostId": HOST_ID});
            call.answer(error.status, Some(error.code), &body, CONTENT_TYPE, REQUEST_ID_HEADER)
        }
    }
}

fn is_form(headers: &HeaderMap) -> bool {
    headers.get("content-type").and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"))
}

async fn run(
    call: &mut Call,
    operation: &str,
    params: Params,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Value, AliyunError> {
    let store = call.enter().await?;
    let access_key = match headers.get("authorization").and_then(|v| v.to_str().ok()) {
        Some(authorization) => verify_acs3(call, authorization, method, uri, headers, body)?,
        None => verify_v1(call, &params, method)?,
    };
    call.admit(operation)?;
    if call.action.is_none() {
        let known: Vec<&str> = OPERATIONS.iter().chain(&secrets::OPERATIONS).map(|(name, _)| *name).collect();
        return Err(AliyunError::new(
            404,
            "InvalidAction.NotFound",
            ErrorCode::InvalidParameter,
            format!("Specified api `{operation}` is not found (this mock serves {})", known.join(", ")),
        ));
    }
    if let Some(version) = params.get("Version").or_else(|| headers.get("x-acs-version").and_then(|v| v.to_str().ok()))
        && version != VERSION
    {
        return Err(AliyunError::new(
            400,
            "InvalidVersion",
            ErrorCode::InvalidParameter,
            format!("Specified parameter Version `{version}` is not valid: use {VERSION}"),
        ));
    }
    if let Some(action) = call.action.filter(|a| a.is_secret_action()) {
        return secrets::run(call, &store, &params, &access_key, action).await;
    }
    let key_id = match operation {
        "Decrypt" | "ListKeys" => None,
        _ => Some(params.require("KeyId")?.to_owned()),
    };
    if let Some(key_id) = &key_id {
        call.set_key(key_id, None);
    }
    // Decrypt names no key: the policy resource is the blob's key, as on the native API.
    let blob_key = (operation == "Decrypt")
        .then(|| params.get("CiphertextBlob").and_then(|b| B64.decode(b).ok()))
        .flatten()
        .and_then(|blob| crate::blob::parse(&blob).ok().map(|parsed| parsed.key_id.to_owned()));
    call.authorize(&access_key, key_id.as_deref().or(blob_key.as_deref()))?;
    let mut ops = Ops { call, store: &store, params: &params };
    ops.run(operation, key_id.as_deref().unwrap_or_default()).await
}

/// The time of an ISO 8601 UTC timestamp (`2026-01-02T03:04:05Z`).
fn parse_time(value: &str) -> Option<std::time::SystemTime> {
    humantime::parse_rfc3339(value).ok()
}

/// The checks both signatures share once their MAC verified: time, then nonce.
fn check_time_and_nonce(call: &Call, access_key: &str, time: &str, time_name: &str, nonce: &str) -> Result<(), AliyunError> {
    let parsed = parse_time(time).ok_or_else(|| {
        AliyunError::new(
            400,
            "InvalidTimeStamp.Format",
            ErrorCode::InvalidParameter,
            format!("Specified {time_name} `{time}` is not in the format yyyy-MM-ddTHH:mm:ssZ"),
        )
    })?;
    if let Some(skew) = skew_beyond(parsed, MAX_SKEW) {
        return Err(AliyunError::new(
            400,
            "InvalidTimeStamp.Expired",
            ErrorCode::RequestTimeTooSkewed,
            format!(
                "Specified time stamp or date value is expired: {time_name} {time} is {} s from the server's clock (limit {} s); sync the client's clock",
                skew.as_secs(),
                MAX_SKEW.as_secs()
            ),
        ));
    }
    call.node.shared.auth.remember_nonce(access_key, nonce, crate::auth::now_ms(), MAX_SKEW.as_millis() as u64).map_err(|_| {
        AliyunError::new(
            400,
            "SignatureNonceUsed",
            ErrorCode::RequestReplayed,
            format!("Specified signature nonce `{nonce}` was used already: every request needs a fresh nonce"),
        )
    })
}

fn secret(call: &mut Call, access_key: &str) -> Result<zeroize::Zeroizing<String>, AliyunError> {
    call.set_access_key(Some(access_key));
    call.node.shared.auth.secret(access_key).ok_or_else(|| {
        AliyunError::new(
            404,
            "InvalidAccessKeyId.NotFound",
            ErrorCode::InvalidAccessKeyId,
            format!("Specified access key `{access_key}` is not found."),
        )
    })
}

fn mismatch(access_key: &str) -> AliyunError {
    AliyunError::new(
        400,
        "SignatureDoesNotMatch",
        ErrorCode::SignatureDoesNotMatch,
        format!(
            "Specified signature is not matched with our calculation (access key `{access_key}`): check the AccessKeySecret, and that the request was sent as signed"
        ),
    )
}

/// Signature v1 (HMAC-SHA1 over the canonicalised parameters); returns the access key.
fn verify_v1(call: &mut Call, params: &Params, method: &Method) -> Result<String, AliyunError> {
    let access_key = params.require("AccessKeyId")?;
    let signature = params.require("Signature")?;
    if let Some(other) = params.get("SignatureMethod").filter(|m| *m != "HMAC-SHA1") {
        return Err(AliyunError::new(
            400,
            "InvalidSignatureMethod",
            ErrorCode::SignatureDoesNotMatch,
            format!("Specified signature method `{other}` is not supported: use HMAC-SHA1"),
        ));
    }
    let timestamp = params.require("Timestamp")?;
    let nonce = params.require("SignatureNonce")?;
    let secret = secret(call, access_key)?;
    let signed = params.0.iter().filter(|(k, _)| *k != "Signature").map(|(k, v)| (k.as_str(), v.as_str()));
    let expected = aliyun_v1_signature(secret.as_str(), method.as_str(), signed);
    if !constant_time_eq(expected.as_bytes(), signature.as_bytes()) {
        return Err(mismatch(access_key));
    }
    check_time_and_nonce(call, access_key, timestamp, "Timestamp", nonce)?;
    Ok(access_key.to_owned())
}

/// `ACS3-HMAC-SHA256` in `Authorization`; returns the access key.
fn verify_acs3(
    call: &mut Call,
    authorization: &str,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<String, AliyunError> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).filter(|v| !v.is_empty());
    let Authorization { credential: access_key, signed_headers, signature } =
        parse_authorization(authorization, ACS3).map_err(|problem| {
            AliyunError::new(
                400,
                "IncompleteSignature",
                ErrorCode::SignatureDoesNotMatch,
                format!("{problem}: send {ACS3} Credential=AK,SignedHeaders=…,Signature=…"),
            )
        })?;
    let secret = secret(call, access_key)?;
    let date = header("x-acs-date").ok_or_else(|| AliyunError::missing("x-acs-date"))?;
    let nonce = header("x-acs-signature-nonce").ok_or_else(|| AliyunError::missing("x-acs-signature-nonce"))?;

    let query = uri.query().and_then(parse_form).unwrap_or_default();
    let mut query: Vec<String> = query.iter().map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v))).collect();
    query.sort();
    let mut canonical_headers = String::new();
    for name in signed_headers.split(';') {
        let mut values: Vec<&str> = headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).map(str::trim).collect();
        if values.is_empty() {
            return Err(AliyunError::missing(name));
        }
        values.sort_unstable();
        canonical_headers.push_str(&format!("{name}:{}\n", values.join(",")));
    }
    let canonical = [method.as_str(), uri.path(), &query.join("&"), &canonical_headers, signed_headers, &sha256_hex(body)].join("\n");
    let string_to_sign = format!("{ACS3}\n{}", sha256_hex(canonical.as_bytes()));
    let expected = hex::encode(hmac_sha256(secret.as_bytes(), string_to_sign.as_bytes()));
    if !constant_time_eq(expected.as_bytes(), signature.as_bytes()) {
        return Err(mismatch(access_key));
    }
    check_time_and_nonce(call, access_key, date, "x-acs-date", nonce)?;
    Ok(access_key.to_owned())
}

struct Ops<'a> {
    call: &'a mut Call,
    store: &'a Arc<KeyStore>,
    params: &'a Params,
}

impl Ops<'_> {
    fn context(&self) -> Result<BTreeMap<String, String>, AliyunError> {
        let Some(raw) = self.params.get("EncryptionContext") else { return Ok(BTreeMap::new()) };
        serde_json::from_str(raw).map_err(|_| AliyunError::invalid("EncryptionContext must be a JSON object of string values"))
    }

    fn describe(&self, key_id: &str) -> Result<KeyMetadata, AliyunError> {
        Ok(self.call.shown(self.store.describe(key_id)?))
    }

    fn version_json(metadata: &KeyMetadata, version: &str) -> Value {
        json!({"KeyId": metadata.key_id, "KeyVersionId": version, "CreationDate": metadata.creation_date})
    }

    async fn commit(&self) -> Result<(), AliyunError> {
        Ok(self.call.node.commit().await?)
    }

    fn seal(&mut self, key_id: &str, plaintext: &[u8]) -> Result<(String, String), AliyunError> {
        let context = self.context()?;
        let (version, blob) = self.call.encrypt(self.store, key_id, plaintext, &context)?;
        Ok((version, B64.encode(blob)))
    }

    async fn run(&mut self, operation: &str, key_id: &str) -> Result<Value, AliyunError> {
        match operation {
            "Encrypt" => {
                let plaintext = self.params.require("Plaintext")?;
                let (version, blob) = self.seal(key_id, plaintext.as_bytes())?;
                Ok(json!({"KeyId": key_id, "KeyVersionId": version, "CiphertextBlob": blob}))
            }
            "GenerateDataKey" | "GenerateDataKeyWithoutPlaintext" => {
                let bytes = match (self.params.get("KeySpec"), self.params.get("NumberOfBytes")) {
                    (_, Some(n)) => n
                        .parse::<usize>()
                        .ok()
                        .filter(|n| (1..=1024).contains(n))
                        .ok_or_else(|| AliyunError::invalid(format!("NumberOfBytes `{n}` must be 1 to 1024")))?,
                    (None | Some("AES_256"), None) => 32,
                    (Some("AES_128"), None) => 16,
                    (Some(other), None) => return Err(AliyunError::invalid(format!("KeySpec `{other}` is not AES_256 or AES_128"))),
                };
                let data_key = zeroize::Zeroizing::new(B64.encode(&*crate::crypto::random_bytes(bytes)));
                let (version, blob) = self.seal(key_id, data_key.as_bytes())?;
                let mut out = json!({"KeyId": key_id, "KeyVersionId": version, "CiphertextBlob": blob});
                if operation == "GenerateDataKey" {
                    out["Plaintext"] = json!(data_key.as_str());
                }
                Ok(out)
            }
            "Decrypt" => {
                let blob = self.params.require("CiphertextBlob")?;
                let blob = B64.decode(blob).map_err(|_| AliyunError::invalid("CiphertextBlob is not valid base64"))?;
                let context = self.context()?;
                let opened = self.call.decrypt(self.store, &blob, &context)?;
                let plaintext = std::str::from_utf8(&opened.plaintext)
                    .map_err(|_| AliyunError::from(KmsError::InvalidCiphertext("the plaintext is not text".into())))?;
                Ok(json!({"KeyId": opened.key_id, "KeyVersionId": opened.version_id, "Plaintext": plaintext}))
            }
            "DescribeKey" => {
                let m = self.describe(key_id)?;
                let state = match m.key_state {
                    KeyState::Enabled => "Enabled",
                    KeyState::Disabled => "Disabled",
                    KeyState::PendingDeletion => "PendingDeletion",
                };
                Ok(json!({"KeyMetadata": {
                    "KeyId": m.key_id,
                    "Arn": format!("{ARN_PREFIX}:key/{}", m.key_id),
                    "KeyState": state,
                    "CreationDate": m.creation_date,
                    "Creator": "123456789012",
                    "Description": "",
                    "KeyUsage": "ENCRYPT/DECRYPT",
                    "KeySpec": "Aliyun_AES_256",
                    "Origin": "Aliyun_KMS",
                    "ProtectionLevel": "SOFTWARE",
                    "PrimaryKeyVersion": m.current_key_version_id,
                    "AutomaticRotation": "Disabled",
                    "DeleteDate": "",
                }}))
            }
            "ListKeys" => {
                if self.params.get("Filters").is_some_and(|f| !matches!(f.trim(), "[]" | "")) {
                    return Err(AliyunError::invalid("Filters are not served by this mock: list every key and page through them"));
                }
                let (number, size) = secrets::page(self.params)?;
                let keys = self.store.list();
                let page: Vec<Value> = secrets::on_page(&keys, (number, size))
                    .map(|m| json!({"KeyId": m.key_id, "KeyArn": format!("{ARN_PREFIX}:key/{}", m.key_id)}))
                    .collect();
                Ok(json!({"Keys": {"Key": page}, "TotalCount": keys.len(), "PageNumber": number, "PageSize": size}))
            }
            "ListKeyVersions" => {
                let m = self.describe(key_id)?;
                let versions: Vec<Value> = m.key_version_ids.iter().map(|v| Self::version_json(&m, v)).collect();
                Ok(
                    json!({"KeyVersions": {"KeyVersion": versions}, "TotalCount": versions.len(), "PageNumber": 1, "PageSize": versions.len()}),
                )
            }
            "DescribeKeyVersion" => {
                let version = self.params.require("KeyVersionId")?;
                let m = self.describe(key_id)?;
                if !m.key_version_ids.iter().any(|v| v == version) {
                    return Err(AliyunError::new(
                        404,
                        "Forbidden.ResourceNotFound",
                        ErrorCode::KeyNotFound,
                        format!("version `{version}` of key `{key_id}` is not found"),
                    ));
                }
                Ok(json!({"KeyVersion": Self::version_json(&m, version)}))
            }
            "CreateKeyVersion" => {
                self.call.check_fault_disabled(key_id, None)?;
                let m = self.store.rotate(key_id)?;
                self.call.set_key(key_id, Some(&m.current_key_version_id));
                self.commit().await?;
                Ok(json!({"KeyVersion": Self::version_json(&m, &m.current_key_version_id)}))
            }
            "UpdateRotationPolicy" => {
                // Automatic rotation is not scheduled by the mock: the policy is validated and accepted.
                self.params.require("EnableAutomaticRotation")?;
                self.describe(key_id)?;
                Ok(json!({}))
            }
            "EnableKey" | "DisableKey" => {
                let target = if operation == "EnableKey" { KeyState::Enabled } else { KeyState::Disabled };
                self.store.set_state(key_id, target)?;
                self.commit().await?;
                Ok(json!({}))
            }
            "ScheduleKeyDeletion" => {
                let days = self.params.require("PendingWindowInDays")?;
                days.parse::<u32>()
                    .ok()
                    .filter(|d| (7..=366).contains(d))
                    .ok_or_else(|| AliyunError::invalid(format!("PendingWindowInDays `{days}` must be 7 to 366")))?;
                self.store.set_state(key_id, KeyState::PendingDeletion)?;
                self.commit().await?;
                Ok(json!({}))
            }
            other => Err(AliyunError::invalid(format!("operation `{other}` is not served"))),
        }
    }
}
