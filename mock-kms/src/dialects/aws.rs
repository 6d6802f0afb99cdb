//! The AWS KMS dialect: the JSON 1.1 protocol (`POST /`, `X-Amz-Target: TrentService.<Op>`,
//! `Content-Type: application/x-amz-json-1.1`), requests signed with SigV4.
//!
//! SigV4 is verified with the `aws-sigv4` crate, never by hand: the server re-signs the request
//! as received (the headers the client listed in `SignedHeaders`, its `X-Amz-Date`, region and
//! service from the credential scope) with the access key's secret and compares signatures.
//!
//! Keys are the key store's keys: a key id `K` has the ARN `arn:aws:kms:REGION:123456789012:key/K`
//! (REGION from the request's credential scope); `alias/NAME` and alias ARNs resolve through
//! CreateAlias. The CiphertextBlob is the key store's blob, which names key and version, so
//! Decrypt needs no KeyId; `EncryptionContext` is bound as associated data. Errors are AWS's
//! shapes: `{"__type": "DisabledException", "message": "…"}` with AWS's status codes.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri};
use axum::response::Response;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Deserialize;
use serde_json::{Value, json};

use super::Dialect;
use super::call::{Call, constant_time_eq, read_body};
use super::sign::{Authorization, AuthorizationProblem, parse_authorization, parse_compact_time, skew_beyond};
use crate::api::{Action, ErrorCode, KeyMetadata, KeySpec, KeyState};
use crate::blob;
use crate::error::KmsError;
use crate::keystore::KeyStore;
use crate::node::Node;

/// The account id in every ARN (moto's default account, so ARNs compare equal in differential tests).
pub const ACCOUNT_ID: &str = "123456789012";
/// The largest plaintext Encrypt takes, as AWS KMS: 4096 bytes.
pub const MAX_PLAINTEXT: usize = 4096;
/// The largest request body read (a 4 KiB plaintext in base64 with context fits easily).
pub const MAX_BODY: usize = 64 * 1024;
/// How far `X-Amz-Date` may be from the server's clock (AWS: 5 minutes).
pub const MAX_SKEW: Duration = Duration::from_secs(5 * 60);
const TARGET_PREFIX: &str = "TrentService.";
const CONTENT_TYPE: &str = "application/x-amz-json-1.1";

/// AWS-only state of a process: aliases and the automatic-rotation flag (in memory, not
/// replicated or persisted; see the README).
#[derive(Debug, Default)]
pub(crate) struct AwsState {
    aliases: Mutex<BTreeMap<String, String>>,
    rotation: Mutex<BTreeSet<String>>,
}

/// An error as AWS shapes it.
struct AwsError {
    kind: &'static str,
    status: u16,
    message: String,
    /// The native code the audit log records.
    code: ErrorCode,
}

impl AwsError {
    fn new(kind: &'static str, code: ErrorCode, message: impl Into<String>) -> Self {
        Self { kind, status: 400, message: message.into(), code }
    }

    fn validation(message: impl Into<String>) -> Self {
        Self::new("ValidationException", ErrorCode::InvalidParameter, message)
    }

    fn body(&self) -> Value {
        json!({"__type": self.kind, "message": self.message})
    }
}

impl From<KmsError> for AwsError {
    fn from(error: KmsError) -> Self {
        let code = error.code();
        let message = error.to_string();
        // By the native code, so a new KmsError variant maps without an edit here.
        let (kind, status) = match code {
            ErrorCode::InvalidParameter => ("ValidationException", 400),
            ErrorCode::InvalidCiphertext => ("InvalidCiphertextException", 400),
            ErrorCode::InvalidAccessKeyId => ("UnrecognizedClientException", 400),
            ErrorCode::SignatureDoesNotMatch | ErrorCode::RequestTimeTooSkewed | ErrorCode::RequestReplayed => {
                ("InvalidSignatureException", 400)
            }
            ErrorCode::Forbidden => ("AccessDeniedException", 400),
            ErrorCode::KeyNotFound => ("NotFoundException", 400),
            ErrorCode::KeyAlreadyExists => ("AlreadyExistsException", 400),
            ErrorCode::KeyNotEnabled if matches!(error, KmsError::KeyNotEnabled { state: KeyState::PendingDeletion, .. }) => {
                ("KMSInvalidStateException", 400)
            }
            ErrorCode::KeyNotEnabled => ("DisabledException", 400),
            ErrorCode::Throttling => ("ThrottlingException", 400),
            ErrorCode::InternalFailure | ErrorCode::Sealed | ErrorCode::ServiceUnavailable => ("KMSInternalException", 500),
        };
        Self { kind, status, message, code }
    }
}

/// `POST /`: one AWS KMS call.
pub(crate) async fn call(State(node): State<Arc<Node>>, method: Method, uri: Uri, headers: HeaderMap, body: Body) -> Response {
    let target = headers.get("x-amz-target").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let operation = target.strip_prefix(TARGET_PREFIX).unwrap_or(&target).to_owned();
    let mut call = Call::new(&node, Dialect::Aws, &operation, action_of(&operation));
    let result = run(&mut call, &operation, &method, &uri, &headers, body).await;
    match result {
        Ok(body) => call.answer(200, None, &body, CONTENT_TYPE, "x-amzn-requestid"),
        Err(error) => call.answer(error.status, Some(error.code), &error.body(), CONTENT_TYPE, "x-amzn-requestid"),
    }
}

/// Any request the AWS route does not take (another path or method): AWS's error shape, not
/// the router's empty 404/405 an SDK cannot read.
pub(crate) async fn unrouted(method: Method, uri: Uri) -> Response {
    let message = super::call::unrouted_message(&method, &uri, "POST / with X-Amz-Target: TrentService.<Operation>");
    let error = AwsError::new("UnknownOperationException", ErrorCode::InvalidParameter, message);
    super::call::unrouted_answer(error.status, &error.body(), CONTENT_TYPE)
}

/// The native action an AWS operation maps to (faults and audit counters use it).
fn action_of(operation: &str) -> Option<Action> {
    Some(match operation {
        "CreateKey" => Action::CreateKey,
        "DescribeKey" | "GetKeyRotationStatus" => Action::DescribeKey,
        "ListKeys" | "ListAliases" => Action::ListKeys,
        "Encrypt" => Action::Encrypt,
        "Decrypt" => Action::Decrypt,
        "GenerateDataKey" | "GenerateDataKeyWithoutPlaintext" => Action::GenerateDataKey,
        "RotateKeyOnDemand" => Action::RotateKey,
        "DisableKey" => Action::DisableKey,
        "EnableKey" => Action::EnableKey,
        "ScheduleKeyDeletion" => Action::ScheduleKeyDeletion,
        _ => return None,
    })
}

async fn run(call: &mut Call, operation: &str, method: &Method, uri: &Uri, headers: &HeaderMap, body: Body) -> Result<Value, AwsError> {
    let body = read_body(body, MAX_BODY, "AWS KMS takes at most 4096 bytes of plaintext").await?;
    let store = call.enter().await?;
    let scope = verify(call, method, uri, headers, &body)?;
    call.admit(operation)?;
    let region = scope.region;
    let Some(action) = call.action.or_else(|| KNOWN_EXTRA.contains(&operation).then_some(Action::DescribeKey)) else {
        return Err(AwsError::new("UnknownOperationException", ErrorCode::InvalidParameter, format!("unknown operation `{operation}`")));
    };
    let request: Value = if body.is_empty() {
        json!({})
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            AwsError::new(
                "SerializationException",
                ErrorCode::InvalidParameter,
                format!("the body is not JSON: {}", crate::persist::json_problem(&e)),
            )
        })?
    };
    let ops = Ops { call, store: &store, region: &region };
    ops.run(operation, action, &request).await
}

/// Operations that map to no native action of their own (audited as DescribeKey-like reads or changes).
const KNOWN_EXTRA: [&str; 4] = ["CreateAlias", "EnableKeyRotation", "DisableKeyRotation", "DeleteAlias"];

/// The credential scope of a verified request.
struct Scope {
    region: String,
}

/// Verifies the SigV4 `Authorization` header with `aws-sigv4`.
fn verify(call: &mut Call, method: &Method, uri: &Uri, headers: &HeaderMap, body: &[u8]) -> Result<Scope, AwsError> {
    let missing = || AwsError::new("MissingAuthenticationTokenException", ErrorCode::InvalidAccessKeyId, "Missing Authentication Token");
    let authorization = headers.get("authorization").and_then(|v| v.to_str().ok()).ok_or_else(missing)?;
    let incomplete = |what: &str| {
        AwsError::new("IncompleteSignatureException", ErrorCode::SignatureDoesNotMatch, format!("the Authorization header lacks {what}"))
    };
    let Authorization { credential, signed_headers, signature } =
        parse_authorization(authorization, "AWS4-HMAC-SHA256").map_err(|problem| match problem {
            AuthorizationProblem::Algorithm => AwsError::new(
                "IncompleteSignatureException",
                ErrorCode::SignatureDoesNotMatch,
                "only AWS4-HMAC-SHA256 signatures are accepted",
            ),
            AuthorizationProblem::Missing(field) => incomplete(field),
        })?;
    let scope: Vec<&str> = credential.split('/').collect();
    let [access_key, _date, region, service, "aws4_request"] = scope[..] else {
        return Err(incomplete("a Credential of the form AK/DATE/REGION/SERVICE/aws4_request"));
    };
    call.set_access_key(Some(access_key));
    let secret = call.node.shared.auth.secret(access_key).ok_or_else(|| {
        AwsError::new(
            "UnrecognizedClientException",
            ErrorCode::InvalidAccessKeyId,
            format!("The security token included in the request is invalid (access key `{access_key}` is not known to this KMS)"),
        )
    })?;
    let amz_date = headers.get("x-amz-date").and_then(|v| v.to_str().ok()).ok_or_else(|| incomplete("an X-Amz-Date header"))?;
    let time = parse_compact_time(amz_date).ok_or_else(|| incomplete("an X-Amz-Date of the form YYYYMMDDTHHMMSSZ"))?;
    if let Some(skew) = skew_beyond(time, MAX_SKEW) {
        return Err(AwsError::new(
            "InvalidSignatureException",
            ErrorCode::RequestTimeTooSkewed,
            format!("Signature expired: {amz_date} is {} s away from the server's clock (limit {} s)", skew.as_secs(), MAX_SKEW.as_secs()),
        ));
    }

    let mut signed: Vec<(&str, &str)> = Vec::new();
    for name in signed_headers.split(';') {
        for value in headers.get_all(name) {
            signed.push((name, value.to_str().map_err(|_| incomplete("signed headers that are ASCII"))?));
        }
    }
    let host = headers.get("host").and_then(|v| v.to_str().ok()).unwrap_or("localhost");
    let url = format!("http://{host}{}", uri.path_and_query().map_or("/", |p| p.as_str()));
    let identity = aws_credential_types::Credentials::new(access_key, secret.as_str(), None, None, "mock-kms").into();
    let mut settings = aws_sigv4::http_request::SigningSettings::default();
    // Re-sign exactly what the client signed: only the signature header itself is left out.
    settings.excluded_headers = Some(vec![Cow::Borrowed("authorization")]);
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(time)
        .settings(settings)
        .build()
        .map_err(|e| AwsError::from(KmsError::InternalFailure(format!("cannot build SigV4 parameters: {e}"))))?
        .into();
    let request = aws_sigv4::http_request::SignableRequest::new(
        method.as_str(),
        url,
        signed.into_iter(),
        aws_sigv4::http_request::SignableBody::Bytes(body),
    )
    .map_err(|e| incomplete(&format!("a request that can be signed ({e})")))?;
    let expected = aws_sigv4::http_request::sign(request, &params)
        .map_err(|e| incomplete(&format!("a request that can be signed ({e})")))?
        .signature()
        .to_owned();
    if !constant_time_eq(expected.as_bytes(), signature.as_bytes()) {
        return Err(AwsError::new(
            "InvalidSignatureException",
            ErrorCode::SignatureDoesNotMatch,
            format!(
                "The request signature we calculated does not match the signature you provided (access key `{access_key}`): \
                 check the secret key and that the request was sent as signed"
            ),
        ));
    }
    Ok(Scope { region: region.to_owned() })
}

fn epoch_seconds(rfc3339: &str) -> f64 {
    humantime::parse_rfc3339_weak(rfc3339).ok().and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map_or(0.0, |d| d.as_secs() as f64)
}

fn now_seconds() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs() as f64)
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct CryptoRequest {
    key_id: Option<String>,
    plaintext: Option<String>,
    ciphertext_blob: Option<String>,
    #[serde(default)]
    encryption_context: BTreeMap<String, String>,
    encryption_algorithm: Option<String>,
    key_spec: Option<String>,
    number_of_bytes: Option<u32>,
    pending_window_in_days: Option<u32>,
    alias_name: Option<String>,
    target_key_id: Option<String>,
}

struct Ops<'a> {
    call: &'a mut Call,
    store: &'a Arc<KeyStore>,
    region: &'a str,
}

impl Ops<'_> {
    fn arn(&self, key_id: &str) -> String {
        format!("arn:aws:kms:{}:{ACCOUNT_ID}:key/{key_id}", self.region)
    }

    fn aws(&self) -> &AwsState {
        &self.call.node.shared.aws
    }

    /// A key id, key ARN, alias name or alias ARN → the key store's key id.
    fn resolve(&self, reference: Option<&str>) -> Result<String, AwsError> {
        let reference = reference.filter(|r| !r.is_empty()).ok_or_else(|| AwsError::validation("KeyId is required"))?;
        let alias = if let Some(rest) = reference.strip_prefix("arn:aws:kms:") {
            let resource = rest.splitn(3, ':').nth(2).unwrap_or_default();
            if let Some(key_id) = resource.strip_prefix("key/") {
                return Ok(key_id.to_owned());
            }
            if !resource.starts_with("alias/") {
                return Err(AwsError::new("NotFoundException", ErrorCode::KeyNotFound, format!("Invalid arn `{reference}`")));
            }
            resource.to_owned()
        } else if reference.starts_with("alias/") {
            reference.to_owned()
        } else {
            return Ok(reference.to_owned());
        };
        self.aws().aliases.lock().unwrap_or_else(|p| p.into_inner()).get(&alias).cloned().ok_or_else(|| {
            AwsError::new("NotFoundException", ErrorCode::KeyNotFound, format!("Alias {} is not found.", self.alias_arn(&alias)))
        })
    }

    fn alias_arn(&self, alias: &str) -> String {
        format!("arn:aws:kms:{}:{ACCOUNT_ID}:{alias}", self.region)
    }

    fn metadata(&self, metadata: &KeyMetadata) -> Value {
        let metadata = self.call.shown(metadata.clone());
        let state = match metadata.key_state {
            KeyState::Enabled => "Enabled",
            KeyState::Disabled => "Disabled",
            KeyState::PendingDeletion => "PendingDeletion",
        };
        let mut out = json!({
            "AWSAccountId": ACCOUNT_ID,
            "KeyId": metadata.key_id,
            "Arn": self.arn(&metadata.key_id),
            "CreationDate": epoch_seconds(&metadata.creation_date),
            "Enabled": metadata.key_state == KeyState::Enabled,
            "Description": "",
            "KeyUsage": "ENCRYPT_DECRYPT",
            "KeyState": state,
            "Origin": "AWS_KMS",
            "KeyManager": "CUSTOMER",
            "CustomerMasterKeySpec": "SYMMETRIC_DEFAULT",
            "KeySpec": "SYMMETRIC_DEFAULT",
            "EncryptionAlgorithms": ["SYMMETRIC_DEFAULT"],
            "MultiRegion": false,
        });
        if metadata.key_state == KeyState::PendingDeletion {
            out["DeletionDate"] = json!(now_seconds() + 30.0 * 86_400.0);
        }
        out
    }

    fn algorithm(request: &CryptoRequest) -> Result<(), AwsError> {
        match request.encryption_algorithm.as_deref() {
            None | Some("SYMMETRIC_DEFAULT") => Ok(()),
            Some(other) => Err(AwsError::validation(format!(
                "1 validation error detected: Value '{other}' at 'encryptionAlgorithm' failed to satisfy constraint: \
                 Member must satisfy enum value set: [SYMMETRIC_DEFAULT]"
            ))),
        }
    }

    fn encrypt(&mut self, key_id: &str, plaintext: &[u8], context: &BTreeMap<String, String>) -> Result<(String, Vec<u8>), AwsError> {
        Ok(self.call.encrypt(self.store, key_id, plaintext, context)?)
    }

    async fn commit(&self) -> Result<(), AwsError> {
        Ok(self.call.node.commit().await?)
    }

    async fn run(mut self, operation: &str, action: Action, body: &Value) -> Result<Value, AwsError> {
        let request: CryptoRequest = serde_json::from_value(body.clone())
            .map_err(|e| AwsError::new("SerializationException", ErrorCode::InvalidParameter, format!("the body does not parse: {e}")))?;
        match operation {
            "CreateKey" => {
                let key_id = crate::crypto::random_uuid();
                self.call.set_key(&key_id, None);
                let metadata = self.store.create_key(&key_id, KeySpec::Aes256)?;
                self.commit().await?;
                Ok(json!({"KeyMetadata": self.metadata(&metadata)}))
            }
            "DescribeKey" => {
                let key_id = self.resolve(request.key_id.as_deref())?;
                self.call.set_key(&key_id, None);
                Ok(json!({"KeyMetadata": self.metadata(&self.store.describe(&key_id)?)}))
            }
            "ListKeys" => {
                let keys: Vec<Value> =
                    self.store.list().iter().map(|m| json!({"KeyId": m.key_id, "KeyArn": self.arn(&m.key_id)})).collect();
                Ok(json!({"Keys": keys, "Truncated": false}))
            }
            "ListAliases" => {
                let aliases = self.aws().aliases.lock().unwrap_or_else(|p| p.into_inner()).clone();
                let list: Vec<Value> = aliases
                    .iter()
                    .map(|(name, key)| json!({"AliasName": name, "AliasArn": self.alias_arn(name), "TargetKeyId": key}))
                    .collect();
                Ok(json!({"Aliases": list, "Truncated": false}))
            }
            "CreateAlias" => {
                let name = request.alias_name.clone().unwrap_or_default();
                if !name.starts_with("alias/") || name.starts_with("alias/aws/") || name.len() > 256 {
                    return Err(AwsError::validation(format!("AliasName `{name}` must begin with `alias/` (and not `alias/aws/`)")));
                }
                let key_id = self.resolve(request.target_key_id.as_deref())?;
                self.store.describe(&key_id)?;
                let mut aliases = self.aws().aliases.lock().unwrap_or_else(|p| p.into_inner());
                if aliases.contains_key(&name) {
                    return Err(AwsError::new(
                        "AlreadyExistsException",
                        ErrorCode::KeyAlreadyExists,
                        format!("An alias with the name {} already exists", self.alias_arn(&name)),
                    ));
                }
                aliases.insert(name, key_id);
                Ok(json!({}))
            }
            "DeleteAlias" => {
                let name = request.alias_name.clone().unwrap_or_default();
                match self.aws().aliases.lock().unwrap_or_else(|p| p.into_inner()).remove(&name) {
                    Some(_) => Ok(json!({})),
                    None => Err(AwsError::new("NotFoundException", ErrorCode::KeyNotFound, format!("Alias {name} is not found."))),
                }
            }
            "EnableKey" | "DisableKey" => {
                let key_id = self.resolve(request.key_id.as_deref())?;
                self.call.set_key(&key_id, None);
                let target = if action == Action::EnableKey { KeyState::Enabled } else { KeyState::Disabled };
                self.store.set_state(&key_id, target)?;
                self.commit().await?;
                Ok(json!({}))
            }
            "ScheduleKeyDeletion" => {
                let key_id = self.resolve(request.key_id.as_deref())?;
                self.call.set_key(&key_id, None);
                let days = request.pending_window_in_days.unwrap_or(30);
                if !(7..=30).contains(&days) {
                    return Err(AwsError::validation(format!("PendingWindowInDays is {days}; it must be 7 to 30")));
                }
                self.store.set_state(&key_id, KeyState::PendingDeletion)?;
                self.commit().await?;
                Ok(json!({
                    "KeyId": self.arn(&key_id),
                    "DeletionDate": now_seconds() + f64::from(days) * 86_400.0,
                    "KeyState": "PendingDeletion",
                    "PendingWindowInDays": days,
                }))
            }
            "EnableKeyRotation" | "DisableKeyRotation" | "GetKeyRotationStatus" => {
                let key_id = self.resolve(request.key_id.as_deref())?;
                self.call.set_key(&key_id, None);
                let metadata = self.call.shown(self.store.describe(&key_id)?);
                if operation != "GetKeyRotationStatus" && metadata.key_state != KeyState::Enabled {
                    return Err(KmsError::KeyNotEnabled { key_id, state: metadata.key_state }.into());
                }
                let mut rotation = self.aws().rotation.lock().unwrap_or_else(|p| p.into_inner());
                match operation {
                    "EnableKeyRotation" => {
                        rotation.insert(key_id);
                        Ok(json!({}))
                    }
                    "DisableKeyRotation" => {
                        rotation.remove(&key_id);
                        Ok(json!({}))
                    }
                    _ => Ok(json!({"KeyRotationEnabled": rotation.contains(&key_id), "KeyId": self.arn(&key_id)})),
                }
            }
            "RotateKeyOnDemand" => {
                let key_id = self.resolve(request.key_id.as_deref())?;
                self.call.set_key(&key_id, None);
                self.call.check_fault_disabled(&key_id, None)?;
                let metadata = self.store.rotate(&key_id)?;
                self.call.set_key(&key_id, Some(&metadata.current_key_version_id));
                self.commit().await?;
                Ok(json!({"KeyId": key_id}))
            }
            "Encrypt" => {
                let key_id = self.resolve(request.key_id.as_deref())?;
                Self::algorithm(&request)?;
                let plaintext = decode("Plaintext", request.plaintext.as_deref())?;
                if plaintext.is_empty() || plaintext.len() > MAX_PLAINTEXT {
                    return Err(AwsError::validation(format!(
                        "1 validation error detected: Value at 'plaintext' failed to satisfy constraint: \
                         Member must have length between 1 and {MAX_PLAINTEXT} (it has {} bytes)",
                        plaintext.len()
                    )));
                }
                let (_, blob) = self.encrypt(&key_id, &plaintext, &request.encryption_context)?;
                Ok(json!({"CiphertextBlob": B64.encode(blob), "KeyId": self.arn(&key_id), "EncryptionAlgorithm": "SYMMETRIC_DEFAULT"}))
            }
            "GenerateDataKey" | "GenerateDataKeyWithoutPlaintext" => {
                let key_id = self.resolve(request.key_id.as_deref())?;
                let length = match (request.key_spec.as_deref(), request.number_of_bytes) {
                    (Some(_), Some(_)) => return Err(AwsError::validation("Please specify either number of bytes or key spec, not both.")),
                    (Some("AES_256"), None) => 32,
                    (Some("AES_128"), None) => 16,
                    (Some(other), None) => {
                        return Err(AwsError::validation(format!(
                            "1 validation error detected: Value '{other}' at 'keySpec' failed to satisfy constraint: \
                             Member must satisfy enum value set: [AES_256, AES_128]"
                        )));
                    }
                    (None, Some(n)) if (1..=1024).contains(&n) => n as usize,
                    (None, Some(n)) => return Err(AwsError::validation(format!("NumberOfBytes is {n}; it must be 1 to 1024"))),
                    (None, None) => return Err(AwsError::validation("Please specify either number of bytes or key spec.")),
                };
                let data_key = crate::crypto::random_bytes(length);
                let (_, blob) = self.encrypt(&key_id, &data_key, &request.encryption_context)?;
                let mut out = json!({"CiphertextBlob": B64.encode(blob), "KeyId": self.arn(&key_id)});
                if operation == "GenerateDataKey" {
                    out["Plaintext"] = json!(B64.encode(&*data_key));
                }
                Ok(out)
            }
            "Decrypt" => {
                Self::algorithm(&request)?;
                let blob = decode("CiphertextBlob", request.ciphertext_blob.as_deref())?;
                let invalid = || AwsError::new("InvalidCiphertextException", ErrorCode::InvalidCiphertext, "");
                let parsed = blob::parse(&blob).map_err(|_| invalid())?;
                let (key_id, version_id) = (parsed.key_id.to_owned(), parsed.version_id.to_owned());
                self.call.set_key(&key_id, Some(&version_id));
                if let Some(reference) = request.key_id.as_deref() {
                    let given = self.resolve(Some(reference))?;
                    if given != key_id {
                        return Err(AwsError::new(
                            "IncorrectKeyException",
                            ErrorCode::InvalidCiphertext,
                            "The key ID in the request does not identify a CMK that can perform this operation.",
                        ));
                    }
                }
                self.call.check_fault_disabled(&key_id, Some(&version_id))?;
                let opened = self.store.decrypt(&blob, &request.encryption_context).map_err(|error| match error {
                    KmsError::InvalidCiphertext(_) | KmsError::KeyNotFound(_) | KmsError::KeyVersionNotFound { .. } => invalid(),
                    other => other.into(),
                })?;
                let mut plaintext = opened.plaintext.to_vec();
                if let Some(pick) = self.call.corruption() {
                    crate::faults::flip_byte(&mut plaintext, pick);
                }
                Ok(json!({"KeyId": self.arn(&key_id), "Plaintext": B64.encode(&plaintext), "EncryptionAlgorithm": "SYMMETRIC_DEFAULT"}))
            }
            other => Err(AwsError::new("UnknownOperationException", ErrorCode::InvalidParameter, format!("unknown operation `{other}`"))),
        }
    }
}

fn decode(field: &str, value: Option<&str>) -> Result<zeroize::Zeroizing<Vec<u8>>, AwsError> {
    let value = value.ok_or_else(|| AwsError::validation(format!("{field} is required")))?;
    B64.decode(value)
        .map(zeroize::Zeroizing::new)
        .map_err(|_| AwsError::new("SerializationException", ErrorCode::InvalidParameter, format!("{field} is not valid base64")))
}
