//! The KMS API, `POST /v1/<Action>`: the per-call pipeline (faults, seal, auth, the action,
//! audit) and the actions themselves on a node's [`KeyStore`].

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::api::{self, Action, ErrorBody, KeyMetadata, KeyState};
use crate::api::{AuditRecord, Outcome};
use crate::auth::{self, AuthHeaders};
use crate::blob;
use crate::error::KmsError;
use crate::faults;
use crate::keystore::KeyStore;
use crate::node::Node;
use crate::persist::json_problem;

/// The largest data key GenerateDataKey makes.
pub const MAX_DATA_KEY_BYTES: u32 = 1024;
/// The longest action name kept in the audit log.
const MAX_ACTION_NAME: usize = 64;

/// Records the call in the audit log exactly once, as `Abandoned` if the call is dropped unanswered.
struct AuditGuard {
    node: Arc<Node>,
    record: Option<AuditRecord>,
    started: Instant,
}

impl AuditGuard {
    fn finish(&mut self, outcome: Outcome) {
        if let Some(mut record) = self.record.take() {
            record.outcome = outcome;
            record.latency_ms = self.started.elapsed().as_secs_f64() * 1000.0;
            tracing::debug!(
                node = %record.node, request_id = %record.request_id, action = %record.action, key_id = ?record.key_id,
                outcome = %record.outcome, latency_ms = record.latency_ms, "call"
            );
            self.node.shared.audit.record(record);
        }
    }

    fn set_key(&mut self, key_id: &str, version_id: Option<&str>) {
        if let Some(record) = &mut self.record {
            record.key_id = Some(key_id.to_owned());
            if let Some(version_id) = version_id {
                record.key_version_id = Some(version_id.to_owned());
            }
        }
    }
}

impl Drop for AuditGuard {
    fn drop(&mut self) {
        self.finish(Outcome::Abandoned);
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The key (and version) a request names, read leniently for the audit log of refused calls.
fn peek(action: Option<Action>, body: &[u8]) -> (Option<String>, Option<String>) {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else {
        return (None, None);
    };
    if action == Some(Action::Decrypt) {
        let blob = value.get("CiphertextBlob").and_then(|b| b.as_str()).and_then(|b| B64.decode(b).ok());
        return match blob.as_deref().map(blob::parse) {
            Some(Ok(parsed)) => (Some(parsed.key_id.to_owned()), Some(parsed.version_id.to_owned())),
            _ => (None, None),
        };
    }
    (value.get("KeyId").and_then(|k| k.as_str()).map(|k| k.chars().take(blob::MAX_ID_LEN).collect()), None)
}

/// The secret a secrets-manager request names, read leniently for the audit log and policies.
fn peek_secret_name(body: &[u8]) -> Option<String> {
    let value = serde_json::from_slice::<serde_json::Value>(body).ok()?;
    value.get("SecretName").and_then(|n| n.as_str()).map(|n| n.chars().take(crate::secrets::MAX_SECRET_NAME_LEN).collect())
}

/// `POST /v1/{action}`.
pub(crate) async fn call(
    State(node): State<Arc<Node>>,
    action_name: Result<Path<String>, axum::extract::rejection::PathRejection>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    // An action that is not UTF-8 once decoded (`/v1/Encrypt%80`) is an unknown action, refused
    // and audited like any other, not axum's plain-text rejection.
    let action_name = match action_name {
        Ok(Path(name)) => name,
        Err(_) => uri.path().strip_prefix("/v1/").unwrap_or_default().to_owned(),
    };
    let started = Instant::now();
    // An oversized body is answered as a structured InvalidParameter naming the limit, never as
    // a bare HTTP 413 (which a client can only read as an outage).
    let limit = "a Plaintext may be at most 6144 bytes";
    let (body, too_large) = match crate::dialects::call::read_body(body, crate::server::MAX_BODY, limit).await {
        Ok(body) => (body, None),
        Err(error) => (Bytes::new(), Some(error)),
    };
    let request_id = crate::crypto::random_uuid();
    let action_name: String = action_name.chars().take(MAX_ACTION_NAME).collect();
    let action = Action::from_name(&action_name);
    let (key_id, key_version_id) = peek(action, &body);
    let secret_name = action.filter(|a| a.is_secret_action()).and_then(|_| peek_secret_name(&body));
    let record = AuditRecord {
        secret_name,
        access_key: header(&headers, api::HEADER_ACCESS_KEY).map(|a| a.chars().take(128).collect()),
        key_id,
        key_version_id,
        caller: header(&headers, api::HEADER_CALLER).and_then(api::Caller::from_name),
        ..AuditRecord::started(&request_id, &node.id, crate::dialects::Dialect::Native, &action_name, action)
    };
    let mut audit = AuditGuard { node: node.clone(), record: Some(record), started };
    let result = match too_large {
        Some(error) => Err(error),
        None => run(&node, action, &action_name, &headers, &body, &request_id, &mut audit).await,
    };
    let mut response = match result {
        Ok(response) => {
            audit.finish(Outcome::Ok);
            response
        }
        Err(error) => {
            audit.finish(Outcome::Refused(error.code()));
            error_response(&error, &request_id)
        }
    };
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(api::HEADER_REQUEST_ID, value);
    }
    response
}

/// Any request the native route does not take (another path or method): an `InvalidParameter`
/// error body like every refusal, not the router's empty 404/405.
pub(crate) async fn unrouted(method: axum::http::Method, uri: axum::http::Uri) -> Response {
    let message = crate::dialects::call::unrouted_message(&method, &uri, "POST /v1/<Action>, signed");
    error_response(&KmsError::InvalidParameter(message), &crate::crypto::random_uuid())
}

/// The JSON error response for `error` (with `Retry-After` for throttling).
pub(crate) fn error_response(error: &KmsError, request_id: &str) -> Response {
    let code = error.code();
    let status = StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = ErrorBody { code, message: error.to_string(), request_id: request_id.to_owned() };
    let mut response = (status, axum::Json(body)).into_response();
    if let KmsError::Throttling { retry_after_secs } = error {
        response.headers_mut().insert(axum::http::header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
    }
    response
}

#[allow(clippy::too_many_arguments)]
async fn run(
    node: &Arc<Node>,
    action: Option<Action>,
    action_name: &str,
    headers: &HeaderMap,
    body: &[u8],
    request_id: &str,
    audit: &mut AuditGuard,
) -> Result<Response, KmsError> {
    let mut shutdown = node.shared.shutdown.subscribe();
    node.faults.hang(action, &mut shutdown).await?;
    if let Some(latency) = node.faults.latency(action) {
        tokio::time::sleep(latency).await;
    }
    let store = node.serving_keystore()?.clone();
    let auth_headers = AuthHeaders {
        access_key: header(headers, api::HEADER_ACCESS_KEY),
        timestamp: header(headers, api::HEADER_TIMESTAMP),
        nonce: header(headers, api::HEADER_NONCE),
        signature: header(headers, api::HEADER_SIGNATURE),
    };
    let access_key = node.shared.auth.verify("POST", &format!("/v1/{action_name}"), body, auth_headers, auth::now_ms())?;
    node.faults.admit(action, action_name)?;
    let action = action.ok_or_else(|| {
        let known: Vec<&str> = Action::ALL.iter().map(|a| a.name()).collect();
        KmsError::InvalidParameter(format!("unknown action `{}`; the actions are {}", action_name.escape_debug(), known.join(", ")))
    })?;
    let (key_id, secret_name) = audit.record.as_ref().map(|r| (r.key_id.clone(), r.secret_name.clone())).unwrap_or_default();
    let policies = &node.shared.policies;
    policies.check(&access_key, action, &crate::policy::resource(action, key_id.as_deref(), secret_name.as_deref()))?;
    let disabled = node.faults.disabled_keys(Some(action));
    if action.is_secret_action() {
        let authorize = |needs: Action, resource: &str| policies.check(&access_key, needs, resource);
        let call = crate::secrets::execute(&store, action, body, &disabled, &authorize)?;
        if let Some((key_id, version_id)) = &call.key {
            audit.set_key(key_id, Some(version_id));
        }
        if !matches!(action, Action::GetSecretValue | Action::ListSecrets | Action::DescribeSecret) {
            node.commit().await?;
        }
        return Ok(call.reply.with_request_id(request_id).into_response());
    }
    let mut reply = execute(node, &store, action, body, &disabled, request_id, audit).await?;
    if let Some(pick) = node.faults.corruption(Some(action)) {
        reply.corrupt(pick);
    }
    Ok(reply.into_response())
}

fn parse<T: DeserializeOwned>(action: Action, body: &[u8]) -> Result<T, KmsError> {
    serde_json::from_slice(body)
        .map_err(|e| KmsError::InvalidParameter(format!("the body is not a valid {action} request: {}", json_problem(&e))))
}

fn decode_b64(field: &str, value: &str) -> Result<zeroize::Zeroizing<Vec<u8>>, KmsError> {
    B64.decode(value).map(zeroize::Zeroizing::new).map_err(|_| KmsError::InvalidParameter(format!("{field} is not valid base64")))
}

fn fault_disabled(disabled: &BTreeSet<String>, key_id: &str) -> Result<(), KmsError> {
    if disabled.contains(key_id) {
        return Err(KmsError::KeyNotEnabled { key_id: key_id.to_owned(), state: KeyState::Disabled });
    }
    Ok(())
}

fn shown(mut metadata: KeyMetadata, disabled: &BTreeSet<String>) -> KeyMetadata {
    if metadata.key_state == KeyState::Enabled && disabled.contains(&metadata.key_id) {
        metadata.key_state = KeyState::Disabled;
    }
    metadata
}

/// A successful action's response body.
enum Reply {
    Key(api::KeyResponse),
    List(api::ListKeysResponse),
    Encrypt(api::EncryptResponse),
    Decrypt(api::DecryptResponse),
    DataKey(api::GenerateDataKeyResponse),
}

fn flip_b64(value: &mut String, pick: u64) {
    if let Ok(mut bytes) = B64.decode(value.as_bytes())
        && faults::flip_byte(&mut bytes, pick)
    {
        *value = B64.encode(&bytes);
    }
}

impl Reply {
    /// Flips a byte in the returned Plaintext / CiphertextBlob (the `corrupt` fault).
    fn corrupt(&mut self, pick: u64) {
        match self {
            Self::Encrypt(r) => flip_b64(&mut r.ciphertext_blob, pick),
            Self::Decrypt(r) => flip_b64(&mut r.plaintext, pick),
            Self::DataKey(r) => {
                flip_b64(&mut r.plaintext, pick);
                flip_b64(&mut r.ciphertext_blob, pick);
            }
            Self::Key(_) | Self::List(_) => {}
        }
    }

    fn into_response(self) -> Response {
        fn json(body: impl Serialize) -> Response {
            axum::Json(body).into_response()
        }
        match self {
            Self::Key(r) => json(r),
            Self::List(r) => json(r),
            Self::Encrypt(r) => json(r),
            Self::Decrypt(r) => json(r),
            Self::DataKey(r) => json(r),
        }
    }
}

async fn execute(
    node: &Arc<Node>,
    store: &KeyStore,
    action: Action,
    body: &[u8],
    disabled: &BTreeSet<String>,
    request_id: &str,
    audit: &mut AuditGuard,
) -> Result<Reply, KmsError> {
    let request_id = request_id.to_owned();
    let key_reply = |key_metadata: KeyMetadata, request_id: String| {
        Reply::Key(api::KeyResponse { key_metadata: shown(key_metadata, disabled), request_id })
    };
    match action {
        Action::CreateKey => {
            let request: api::CreateKeyRequest = parse(action, body)?;
            audit.set_key(&request.key_id, None);
            let metadata = store.create_key(&request.key_id, request.key_spec)?;
            audit.set_key(&request.key_id, Some(&metadata.current_key_version_id));
            node.commit().await?;
            Ok(key_reply(metadata, request_id))
        }
        Action::DescribeKey => {
            let request: api::KeyRequest = parse(action, body)?;
            Ok(key_reply(store.describe(&request.key_id)?, request_id))
        }
        Action::ListKeys => {
            Ok(Reply::List(api::ListKeysResponse { keys: store.list().into_iter().map(|m| shown(m, disabled)).collect(), request_id }))
        }
        Action::RotateKey | Action::DisableKey | Action::EnableKey | Action::ScheduleKeyDeletion => {
            let request: api::KeyRequest = parse(action, body)?;
            let metadata = match action {
                Action::RotateKey => {
                    fault_disabled(disabled, &request.key_id)?;
                    store.rotate(&request.key_id)?
                }
                Action::DisableKey => store.set_state(&request.key_id, KeyState::Disabled)?,
                Action::EnableKey => store.set_state(&request.key_id, KeyState::Enabled)?,
                _ => store.set_state(&request.key_id, KeyState::PendingDeletion)?,
            };
            audit.set_key(&request.key_id, Some(&metadata.current_key_version_id));
            node.commit().await?;
            Ok(key_reply(metadata, request_id))
        }
        Action::Encrypt => {
            let request: api::EncryptRequest = parse(action, body)?;
            fault_disabled(disabled, &request.key_id)?;
            let plaintext = decode_b64("Plaintext", &request.plaintext)?;
            let sealed = store.encrypt(&request.key_id, &plaintext, &request.encryption_context)?;
            audit.set_key(&request.key_id, Some(&sealed.version_id));
            Ok(Reply::Encrypt(api::EncryptResponse {
                key_id: request.key_id,
                key_version_id: sealed.version_id,
                ciphertext_blob: B64.encode(&sealed.blob),
                request_id,
            }))
        }
        Action::Decrypt => {
            let request: api::DecryptRequest = parse(action, body)?;
            let blob = decode_b64("CiphertextBlob", &request.ciphertext_blob)
                .map_err(|_| KmsError::InvalidCiphertext("CiphertextBlob is not valid base64".into()))?;
            if let Ok(parsed) = blob::parse(&blob) {
                fault_disabled(disabled, parsed.key_id)?;
                // A `key/version` entry disables just that version (it can no longer decrypt).
                fault_disabled(disabled, &format!("{}/{}", parsed.key_id, parsed.version_id))?;
            }
            let opened = store.decrypt(&blob, &request.encryption_context)?;
            audit.set_key(&opened.key_id, Some(&opened.version_id));
            Ok(Reply::Decrypt(api::DecryptResponse {
                key_id: opened.key_id,
                key_version_id: opened.version_id,
                plaintext: B64.encode(&*opened.plaintext),
                request_id,
            }))
        }
        Action::CreateSecret
        | Action::PutSecretValue
        | Action::GetSecretValue
        | Action::ListSecrets
        | Action::DescribeSecret
        | Action::UpdateSecretVersionStage
        | Action::RotateSecret
        | Action::DeleteSecret
        | Action::RestoreSecret => Err(KmsError::InternalFailure(format!("{action} is served by the secrets manager"))),
        Action::GenerateDataKey => {
            let request: api::GenerateDataKeyRequest = parse(action, body)?;
            fault_disabled(disabled, &request.key_id)?;
            let length = request.number_of_bytes.unwrap_or(32);
            if !(1..=MAX_DATA_KEY_BYTES).contains(&length) {
                return Err(KmsError::InvalidParameter(format!("NumberOfBytes is {length}; it must be 1 to {MAX_DATA_KEY_BYTES}")));
            }
            let data_key = crate::crypto::random_bytes(length as usize);
            let sealed = store.encrypt(&request.key_id, &data_key, &Default::default())?;
            audit.set_key(&request.key_id, Some(&sealed.version_id));
            Ok(Reply::DataKey(api::GenerateDataKeyResponse {
                key_id: request.key_id,
                key_version_id: sealed.version_id,
                plaintext: B64.encode(&*data_key),
                ciphertext_blob: B64.encode(&sealed.blob),
                request_id,
            }))
        }
    }
}
